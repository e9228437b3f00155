//! Crash safety of the restore: SIGKILL at many request counts, resuming each time. The
//! final state must equal an uninterrupted restore's, with every contact created exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::merge::{World, behaviour, spec};
use crate::merge_crash::signal_at;
use crate::restore::view;
use devrev_fake::fake::{Fault, MoveMode, SecondaryAfter};

fn merged_world() -> World {
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Gone);
    b.renames_primary = true;
    let w = World::new(spec(8, 1, 61), b);
    let out = w.std_cmd(&w.run_args()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.fake.apply_pending_merges();
    w
}

fn restore_args(w: &World) -> Vec<String> {
    let report = w.reports().pop().expect("a merge report");
    let rel = report
        .strip_prefix(w.dir.path())
        .unwrap()
        .display()
        .to_string();
    vec!["--restore".into(), rel, "--yes".into()]
}

/// Progress recorded in the restore savepoint (a restart that only re-reads adds nothing).
fn progress(w: &World) -> usize {
    let Ok(bytes) = std::fs::read(w.path("restore-savepoint.json")) else {
        return 0;
    };
    let sp: Value = serde_json::from_slice(&bytes).expect("always valid JSON");
    assert_eq!(sp["version"], 1);
    let steps = [
        "check",
        "primary_ref",
        "create",
        "tickets",
        "conversations",
        "verify",
        "done",
    ];
    sp["pairs"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            let step = p["last_step"].as_str().unwrap_or_default();
            steps.iter().position(|s| *s == step).map_or(0, |i| i + 1)
                + p["creates"].as_array().map_or(0, Vec::len)
                + p["tickets"].as_array().map_or(0, Vec::len)
                + p["conversations"].as_array().map_or(0, Vec::len)
                + usize::from(!p["primary_ref"].is_null())
        })
        .sum()
}

#[test]
fn sigkill_at_many_points_resumes_to_the_uninterrupted_restore() {
    let reference = merged_world();
    let args = restore_args(&reference);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let n0 = reference.fake.requests().len();
    let out = reference.std_cmd(&a).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = reference.fake.with_state(|s| view(s));
    let uninterrupted = reference.fake.requests().len() - n0;

    let w = merged_world();
    let start = w.fake.requests().len();
    let args = restore_args(&w);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = Arc::new(AtomicI32::new(0));
    let base = [1usize, 2, 3, 1, 5, 2, 4, 1, 3, 2, 6, 1];
    let (mut gap_i, mut gap, mut last) = (0, base[0], 0);
    let mut kills: Vec<usize> = Vec::new();
    for round in 0.. {
        assert!(
            round < 600,
            "the restore never finished under repeated kills"
        );
        let k = w.fake.requests().len() + gap;
        signal_at(&w, k, &pid, Signal::SIGKILL);
        let child = w.std_cmd(&a).spawn().unwrap();
        pid.store(child.id() as i32, Ordering::SeqCst);
        let out = child.wait_with_output().unwrap();
        pid.store(0, Ordering::SeqCst);
        match out.status.code() {
            Some(0) => break,
            None => kills.push(k),
            Some(c) => panic!(
                "exit {c} after a kill: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        let now = progress(&w);
        if now > last {
            last = now;
            gap_i = (gap_i + 1) % base.len();
            gap = base[gap_i];
        } else {
            gap = (gap * 2).min(256);
        }
    }

    let log = w.fake.requests();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for k in &kills {
        let r = log.iter().find(|r| r.seq == *k).unwrap();
        *at.entry(r.path.clone()).or_default() += 1;
    }
    eprintln!(
        "restore crash test: {} SIGKILLs, {} restore runs, {} requests ({} without kills), {} \
         pairs; killed at {at:?}",
        kills.len(),
        kills.len() + 1,
        log.len() - start,
        uninterrupted,
        w.pairs().len()
    );
    assert!(kills.len() >= 30, "only {} kill points", kills.len());
    assert!(at.len() >= 5, "kills spread over too few endpoints: {at:?}");
    assert!(
        [
            "/works.update",
            "/conversations.update",
            "/rev-users.update",
            "/rev-users.create"
        ]
        .iter()
        .any(|p| at.contains_key(*p)),
        "kills must hit writes too: {at:?}"
    );
    assert_eq!(
        w.fake.with_state(|s| view(s)),
        want,
        "same state as the uninterrupted restore"
    );
    // Created exactly once per pair: DevRev's ref uniqueness never had to refuse a second one.
    let created = w
        .fake
        .with_state(|s| s.rev_users.keys().filter(|k| k.contains(":revu/C")).count());
    assert_eq!(created, w.pairs().len());
    assert!(
        log.iter()
            .all(|r| r.path != "/rev-users.create" || r.status != 409),
        "a create was sent again after its contact existed"
    );
}

/// The dangerous instant, made certain: the process dies while `rev-users.create` is in
/// flight (DevRev creates the contact, nobody hears the answer), and once more with the answer
/// lost on the wire. Each resume must find the contact instead of creating it again.
#[test]
fn a_kill_during_the_create_and_a_lost_create_answer_never_create_twice() {
    let w = merged_world();
    let args = restore_args(&w);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    w.fake.fault_next(
        Some("/rev-users.create"),
        1,
        Fault::Slow(Duration::from_millis(1500)),
    );
    let mut child = w.std_cmd(&a).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !w
        .fake
        .requests()
        .iter()
        .any(|r| r.path == "/rev-users.create")
    {
        assert!(Instant::now() < deadline, "no create request seen");
        std::thread::sleep(Duration::from_millis(2));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().code(), None, "killed");
    // DevRev finishes the create the dead process asked for.
    assert!(w.fake.wait_for(
        |s| s.rev_users.keys().any(|k| k.contains(":revu/C")),
        Duration::from_secs(10)
    ));
    let sp: Value =
        serde_json::from_slice(&std::fs::read(w.path("restore-savepoint.json")).unwrap()).unwrap();
    let in_doubt = sp["pairs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p["creates"].as_array().is_some_and(|c| !c.is_empty()))
        .collect::<Vec<_>>();
    assert_eq!(in_doubt.len(), 1);
    assert!(
        in_doubt[0]["creates"][0]["outcome"].is_null(),
        "intent on disk, outcome unknown"
    );

    // The next create applies but its answer is lost.
    w.fake
        .fault_next(Some("/rev-users.create"), 2, Fault::ApplyThenDrop);
    let out = w.std_cmd(&a).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let log = w.fake.requests();
    let creates: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/rev-users.create")
        .collect();
    assert_eq!(
        creates.len(),
        w.pairs().len(),
        "one create per pair, none repeated"
    );
    assert!(creates.iter().all(|r| r.status != 409));
    let created = w
        .fake
        .with_state(|s| s.rev_users.keys().filter(|k| k.contains(":revu/C")).count());
    assert_eq!(created, w.pairs().len());
    let sp: Value =
        serde_json::from_slice(&std::fs::read(w.path("restore-savepoint.json")).unwrap()).unwrap();
    let found = sp["pairs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p["creates"][0]["outcome"]["found_by_lookup"] == true)
        .count();
    assert_eq!(found, 2, "both lost answers were resolved by a lookup");
}

#[test]
fn ctrl_c_finishes_the_pair_in_hand_then_exits_75_and_the_rerun_completes() {
    let w = World::new(
        spec(4, 0, 62),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let before = w.fake.with_state(|s| view(s));
    let out = w.std_cmd(&w.run_args()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.fake.apply_pending_merges();
    let args = restore_args(&w);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = Arc::new(AtomicI32::new(0));
    // A few requests into the first pair (after auth-tokens.info and its first reads).
    signal_at(&w, w.fake.requests().len() + 4, &pid, Signal::SIGINT);
    let child = w.std_cmd(&a).spawn().unwrap();
    pid.store(child.id() as i32, Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    pid.store(0, Ordering::SeqCst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("re-run the same command to resume"), "{err}");
    let sp: Value =
        serde_json::from_slice(&std::fs::read(w.path("restore-savepoint.json")).unwrap()).unwrap();
    let done = sp["pairs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|p| p["status"] == "restored")
        .count();
    assert_eq!(done, 1, "the pair in hand was finished, no other started");
    let out = w.std_cmd(&a).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.fake.with_state(|s| view(s)), before);
}
