//! Crash safety of the merge run: SIGKILL at many request counts, a kill while a merge is in
//! flight, and Ctrl-C (once: finish the step; twice: stop at once). Every run must end in the
//! same DevRev state as an uninterrupted run, with each pair merged exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::read_savepoint;
use crate::merge::{World, behaviour, check_final_state, merges_handled, snapshot, spec};
use devrev_fake::fake::{Fault, MoveMode, ScriptedFault, SecondaryAfter};

/// A trip wire that signals whatever child is running when it fires (never pid 0, which
/// would signal the test's own process group).
pub(crate) fn signal_at(w: &World, n: usize, pid: &Arc<AtomicI32>, sig: Signal) {
    let pid = Arc::clone(pid);
    w.fake.on_request(
        n,
        Box::new(move || {
            let p = pid.load(Ordering::SeqCst);
            if p > 0 {
                let _ = kill(Pid::from_raw(p), sig);
            }
        }),
    );
}

/// Real progress recorded in the savepoint (re-validation after a restart does not count).
fn progress(w: &World) -> usize {
    let Some(sp) = read_savepoint(&w.path("savepoint.json")) else {
        return 0;
    };
    assert_eq!(sp["version"], 3);
    sp["pairs"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            let step = p["last_step"].as_str().unwrap_or_default();
            usize::from(!p["backup"].is_null())
                + usize::from(!p["merge"].is_null())
                + usize::from(!p["merge"]["outcome"].is_null())
                + usize::from(!p["merged"].is_null())
                + p["repairs"]["tickets"].as_array().map_or(0, Vec::len)
                + p["repairs"]["conversations"].as_array().map_or(0, Vec::len)
                + usize::from(matches!(step, "reconcile" | "adopt_external_ref" | "done"))
                + usize::from(matches!(step, "adopt_external_ref" | "done"))
                + usize::from(step == "done")
        })
        .sum()
}

#[test]
fn sigkill_at_many_points_resumes_to_the_uninterrupted_state() {
    let sp = spec(20, 4, 31);
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Gone);
    b.renames_primary = true;
    b.ref_release_delay = Duration::from_millis(40);

    let reference = World::new(sp.clone(), b.clone());
    let a = reference.run(&[]).get_output().clone();
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    let want = snapshot(&reference.fake);
    let uninterrupted_requests = reference.fake.requests().len();

    let w = World::new(sp, b);
    let pid = Arc::new(AtomicI32::new(0));
    // Gaps between kill points: small and varied, doubled while a restart makes no real
    // progress (a long backup needs more requests than a small gap allows).
    let base = [1usize, 2, 3, 5, 8, 13, 4, 7, 11, 6, 9, 17, 3, 10];
    let mut gap_i = 0;
    let mut gap = base[0];
    let mut kills: Vec<usize> = Vec::new();
    let mut last_progress = 0;
    let args = w.run_args();
    for round in 0.. {
        assert!(round < 600, "the run never finished under repeated kills");
        let seen = w.fake.requests().len();
        let k = seen + gap;
        signal_at(&w, k, &pid, Signal::SIGKILL);
        let child = w.std_cmd(&args).spawn().unwrap();
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
        let p = progress(&w);
        if p > last_progress {
            last_progress = p;
            gap_i = (gap_i + 1) % base.len();
            gap = base[gap_i];
        } else {
            gap = (gap * 2).min(512);
        }
    }

    let log = w.fake.requests();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for k in &kills {
        let r = log.iter().find(|r| r.seq == *k).unwrap();
        *at.entry(r.path.clone()).or_default() += 1;
    }
    eprintln!(
        "crash test: {} SIGKILLs over {} requests ({} without kills), {} pairs; killed at {at:?}",
        kills.len(),
        log.len(),
        uninterrupted_requests,
        w.pairs().len()
    );
    assert!(kills.len() >= 30, "only {} kill points", kills.len());
    assert!(at.len() >= 5, "kills spread over too few endpoints: {at:?}");
    assert!(
        [
            "/works.update",
            "/rev-users.update",
            "/rev-users.merge",
            "/rev-users.get"
        ]
        .iter()
        .filter(|p| at.contains_key(**p))
        .count()
            >= 2,
        "kills must hit the merge phase too: {at:?}"
    );
    assert_eq!(
        snapshot(&w.fake),
        want,
        "same final state as the uninterrupted run"
    );
    check_final_state(&w);
}

#[test]
fn a_kill_while_the_merge_is_in_flight_is_finished_even_after_the_pair_leaves_the_csv() {
    let w = World::with(
        spec(4, 1, 32),
        behaviour(MoveMode::Partial, SecondaryAfter::Gone),
        |o| {
            // The first merge answers slowly (and applies after that), so the process can die
            // while DevRev is still working on it.
            o.faults.push(ScriptedFault {
                path: Some("/rev-users.merge".into()),
                nth: 1,
                // Long enough that a loaded machine still kills before the answer.
                fault: Fault::Slow(Duration::from_millis(2000)),
            });
        },
    );
    let mut child = w.std_cmd(&w.run_args()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let in_flight = loop {
        assert!(Instant::now() < deadline, "no merge request seen");
        if let Some(r) = w
            .fake
            .requests()
            .into_iter()
            .find(|r| r.path == "/rev-users.merge")
        {
            break r;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed");
    assert_eq!(in_flight.status, 0, "killed before the answer");
    // The request body is logged once the slow request is handled.
    assert!(
        w.fake
            .wait_for(|s| !s.merges.is_empty(), Duration::from_secs(10))
    );
    let (primary, secondary) = w
        .fake
        .with_state(|s| (s.merges[0].primary.clone(), s.merges[0].secondary.clone()));
    let sp: Value = read_savepoint(&w.path("savepoint.json")).unwrap();
    let rec = &sp["pairs"][format!("{primary} <- {secondary}")];
    assert!(
        rec["merge"]["requested_at"].is_string(),
        "intent written before the request"
    );
    assert!(
        rec["merge"]["outcome"].is_null(),
        "outcome unknown at the kill"
    );

    // Meanwhile someone takes both contacts off one of the pair's tickets: no listing finds it
    // any more, yet it is in the backup, so Reconcile fetches it and puts the primary back
    // where the secondary was.
    assert!(
        w.fake
            .wait_for(|s| s.merges[0].applied, Duration::from_secs(10))
    );
    let orphan = w.fake.with_state(|st| {
        let (id, t) = st
            .works
            .iter_mut()
            .find(|(_, t)| t.reported_by_ids().contains(&secondary))
            .expect("the secondary reports a ticket");
        let list: Vec<Value> = t.json["reported_by"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["id"] != secondary.as_str() && u["id"] != primary.as_str())
            .cloned()
            .collect();
        t.json["reported_by"] = Value::Array(list);
        id.clone()
    });

    // The pair leaves the CSV; its merge was requested, so the journal finishes it anyway.
    let text = std::fs::read_to_string(w.path("contacts.csv")).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let id = l.split(',').next().unwrap_or_default();
            id != primary && id != secondary
        })
        .collect();
    std::fs::write(w.path("contacts.csv"), kept.join("\n") + "\n").unwrap();
    let out = w.std_cmd(&w.run_args()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(&w);
    assert_eq!(
        merges_handled(&w.fake.requests())[&(primary.clone(), secondary.clone())],
        1
    );
    assert!(
        w.fake
            .requests()
            .iter()
            .any(|r| r.path == "/works.get" && r.body["id"] == orphan.as_str()),
        "the orphaned ticket was fetched by id"
    );
    let r = w.last_report();
    let e = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["secondary"] == secondary.as_str())
        .unwrap();
    assert_eq!(e["status"], "merged");
    assert_eq!(e["in_csv"], false);
    assert_eq!(
        e["steps"][0]["step"], "request_merge",
        "resumed by resolving the intent"
    );
    assert!(
        e["steps"][0]["detail"].as_str().unwrap().contains("merged"),
        "{e}"
    );
}

#[test]
fn ctrl_c_once_finishes_the_step_twice_stops_at_once_and_both_resume_cleanly() {
    let w = World::new(
        spec(8, 1, 33),
        behaviour(MoveMode::Partial, SecondaryAfter::Gone),
    );
    let pid = Arc::new(AtomicI32::new(0));
    let args = w.run_args();

    // Once: the step in hand finishes, no new step starts (so no merge after the signal).
    let k = 40;
    signal_at(&w, k, &pid, Signal::SIGINT);
    let child = w.std_cmd(&args).spawn().unwrap();
    pid.store(child.id() as i32, Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    pid.store(0, Ordering::SeqCst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("re-run the same command to resume"), "{err}");
    let log = w.fake.requests();
    assert!(
        log.iter()
            .all(|r| r.path != "/rev-users.merge" || r.seq < k),
        "no merge was started after Ctrl-C"
    );
    assert_eq!(w.last_report()["outcome"], "interrupted");

    // Twice, in the middle of a slow request: the run stops without waiting for it.
    w.fake
        .fault_next(Some("/works.list"), 1, Fault::Slow(Duration::from_secs(8)));
    let mut child = w.std_cmd(&args).spawn().unwrap();
    let child_pid = Pid::from_raw(child.id() as i32);
    // stderr is read as it comes, so the test can wait for the first Ctrl-C to be seen.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the slow request never came");
        let log = w.fake.requests();
        if log
            .iter()
            .any(|r| matches!(r.fault, Some(Fault::Slow(_))) && r.status == 0)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    kill(child_pid, Signal::SIGINT).unwrap();
    // Two signals sent back to back can merge into one: wait until the run says it saw the
    // first (not a fixed sleep, which a loaded machine can outlast).
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("Ctrl-C: finishing the current step") => break,
            Ok(_) => {}
            Err(e) => panic!("the first Ctrl-C was never acknowledged: {e}"),
        }
    }
    let t = Instant::now();
    kill(child_pid, Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    let stopped_after = t.elapsed();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(
        stopped_after < Duration::from_secs(5),
        "the second Ctrl-C stops at once, not after the slow request: {stopped_after:?}"
    );
    let _: Value = read_savepoint(&w.path("savepoint.json")).unwrap();

    let out = w.std_cmd(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(&w);
}

/// Ctrl-C while a merge request is on the wire: the pair's merge is DevRev's now, so the
/// summary reports it unconfirmed (watched by the next run, never sent again), not "not
/// finished", and the next run confirms it without a second merge request.
#[test]
fn ctrl_c_after_a_merge_was_sent_counts_the_pair_unconfirmed_not_unfinished() {
    let world = || {
        World::new(
            spec(3, 0, 41),
            behaviour(MoveMode::Partial, SecondaryAfter::Gone),
        )
    };
    // The same world, run once to learn which request is its first merge.
    let probe = world();
    probe.run(&[]).success();
    let first_merge = probe
        .fake
        .requests()
        .iter()
        .find(|r| r.path == "/rev-users.merge")
        .unwrap()
        .seq;

    let w = world();
    let pid = Arc::new(AtomicI32::new(0));
    signal_at(&w, first_merge, &pid, Signal::SIGINT);
    let args = w.run_args();
    let child = w.std_cmd(&args).spawn().unwrap();
    pid.store(child.id() as i32, Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    pid.store(0, Ordering::SeqCst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert_eq!(w.fake.count("/rev-users.merge"), 1, "{err}");
    let summary = &w.last_report()["summary"];
    assert_eq!(summary["unconfirmed"], 1, "{summary}");
    assert_eq!(summary["interrupted"], 0, "{summary}");
    assert_eq!(summary["not_started"], 2, "{summary}");
    assert!(err.contains("  unconfirmed:     1 (1 accepted"), "{err}");
    assert!(
        err.contains("  not started:     2 (re-run the same command to continue)"),
        "{err}"
    );
    assert!(!err.contains("not finished"), "{err}");

    let out = w.std_cmd(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.fake.count("/rev-users.merge"),
        3,
        "the first merge was never sent again"
    );
    assert_eq!(w.last_report()["summary"]["merged"], 3);
}
