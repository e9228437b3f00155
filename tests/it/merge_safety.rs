//! Merge safety under every way DevRev might behave (issue 9): each test switches on one
//! behaviour of the fake that no public source rules out and drives the built binary.

use std::time::{Duration, Instant};

use devrev_fake::fake::{Fault, MoveMode, Quirks, ScriptedFault, SecondaryAfter};
use serde_json::Value;

use crate::common::{phones, read_savepoint};
use crate::merge::{World, behaviour, check_final_state, spec};

fn code(a: &assert_cmd::assert::Assert) -> i32 {
    a.get_output().status.code().unwrap_or(-1)
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

fn on_merge(nth: usize, fault: Fault) -> ScriptedFault {
    ScriptedFault {
        path: Some("/rev-users.merge".into()),
        nth,
        fault,
    }
}

fn pairs_of(r: &Value) -> Vec<Value> {
    r["pairs"].as_array().cloned().unwrap_or_default()
}

/// Points 1 and 3: DevRev applies merges later than `--merge-timeout` and the answers of the
/// first merges are lost. The lost ones are watched, never re-sent; the run does not wait
/// for them (they are reported with when to re-run), and the re-run finishes every pair with
/// its ref adopted: exactly one merge request per pair.
#[test]
fn late_merges_with_lost_answers_are_sent_once_and_finished_by_a_rerun() {
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Deactivated);
    b.delay = Duration::from_secs(4);
    let w = World::with(spec(4, 0, 31), b, |o| {
        o.faults.push(on_merge(1, Fault::ApplyThenDrop));
        o.faults.push(on_merge(2, Fault::ApplyThenDrop));
    });
    let t0 = Instant::now();
    let a = w
        .cmd()
        .env("DEVREV_MERGE_TEST_WATCH_MS", "20000")
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "1"])
        .assert();
    let took = t0.elapsed();
    assert_eq!(code(&a), 1, "{}", stderr(&a));
    assert_eq!(w.fake.count("/rev-users.merge"), 4);
    let r = w.last_report();
    assert_eq!(r["summary"]["unconfirmed"], 4, "{}", r["summary"]);
    assert_eq!(r["summary"]["outcome_unknown"], 2, "{}", r["summary"]);
    assert!(r["summary"]["rerun_after"].is_string(), "{}", r["summary"]);
    assert!(stderr(&a).contains("outcome unknown"), "{}", stderr(&a));
    assert!(
        took < Duration::from_secs(20),
        "parked pairs do not hold the run up: {took:?}"
    );
    // DevRev catches up; the re-run only watches, then reconciles and adopts.
    w.fake.apply_pending_merges();
    let a = w
        .cmd()
        .env("DEVREV_MERGE_TEST_WATCH_MS", "20000")
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "2"])
        .assert();
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(w.fake.count("/rev-users.merge"), 4, "exactly one per pair");
    check_final_state(&w);
    let r = w.last_report();
    assert_eq!(r["summary"]["external_refs_adopted"], 4);
}

/// Point 3: a merge this tool requested, recorded as not applied, that DevRev applied late is
/// found by Validate and resumed at Reconcile and AdoptExternalRef (not closed as "already
/// merged" with the ref never adopted).
#[test]
fn a_merge_applied_late_resumes_at_reconcile() {
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Deactivated);
    b.delay = Duration::from_secs(60);
    let w = World::with(spec(1, 0, 32), b, |o| {
        o.faults.push(on_merge(1, Fault::ApplyThenDrop));
    });
    let a = w
        .cmd()
        .env("DEVREV_MERGE_TEST_WATCH_MS", "600000")
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "1"])
        .assert();
    assert_eq!(code(&a), 1, "{}", stderr(&a));
    // As an older build (or an expired window) would have left it: "not applied".
    let sp_path = w.path("savepoint.json");
    let mut sp: Value = read_savepoint(&sp_path).unwrap();
    for rec in sp["pairs"].as_object_mut().unwrap().values_mut() {
        rec["merge"]["outcome"] =
            serde_json::json!({"kind": "not_applied", "checked_at": "2026-01-01T00:00:00Z"});
    }
    // Written back as one version-1 document, which every build reads.
    sp["version"] = 1.into();
    sp["updated_at"] = sp["created_at"].clone();
    std::fs::write(&sp_path, serde_json::to_vec(&sp).unwrap()).unwrap();
    w.fake.apply_pending_merges();
    let a = w.run(&[]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(w.fake.count("/rev-users.merge"), 1, "never sent again");
    check_final_state(&w);
    let r = w.last_report();
    let p = &pairs_of(&r)[0];
    assert_eq!(p["status"], "merged", "{p}");
    assert!(p["external_ref_adopted"].is_string(), "{p}");
}

/// Point 2: `primary_identity` naming the contact itself, a typeless 404 and a 301 elsewhere
/// are not evidence of a merge, whether a look by `rev-users.list` or the `rev-users.get` it
/// falls back to meets them; the pair is merged only once DevRev really applied it.
#[test]
fn only_exact_evidence_counts_as_merged() {
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::PrimaryIdentity);
    b.delay = Duration::from_millis(600);
    let w = World::with(spec(1, 0, 33), b, |o| {
        o.quirks.self_identity = true;
        // rev-users.list #1 is Validate's; #2 and #3 the first looks after the merge, each
        // falling back to a rev-users.get (#1, #2) that meets a false sign too.
        let moved = Fault::Moved {
            location: "https://elsewhere.example/rev-users.get?id=someone-else".into(),
        };
        for (path, nth, fault) in [
            ("/rev-users.list", 2, Fault::TypelessNotFound),
            ("/rev-users.get", 1, Fault::TypelessNotFound),
            ("/rev-users.list", 3, moved.clone()),
            ("/rev-users.get", 2, moved),
        ] {
            o.faults.push(ScriptedFault {
                path: Some(path.into()),
                nth,
                fault,
            });
        }
    });
    let a = w.run(&[]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    check_final_state(&w);
    let r = w.last_report();
    let p = &pairs_of(&r)[0];
    assert_eq!(p["merged_sign"]["kind"], "primary_identity", "{p}");
    assert_eq!(w.fake.count("/rev-users.merge"), 1);
    let log = w.fake.requests();
    let merge_seq = log
        .iter()
        .find(|r| r.path == "/rev-users.merge")
        .unwrap()
        .seq;
    let faulted = |path: &str| {
        log.iter()
            .filter(|r| r.path == path && r.seq > merge_seq && r.fault.is_some())
            .count()
    };
    assert_eq!(
        (faulted("/rev-users.list"), faulted("/rev-users.get")),
        (2, 2),
        "every false sign was met"
    );
    let looks = log
        .iter()
        .filter(|r| r.path.starts_with("/rev-users.") && r.seq > merge_seq)
        .filter(|r| r.path != "/rev-users.update" && r.fault.is_none())
        .count();
    assert!(looks >= 1, "kept looking past the false signs");
}

/// Point 4: merged-away secondaries that stay deactivated and keep their `user_` ref: the ref
/// is released from the secondary (journaled) and adopted, in seconds per pair; when DevRev
/// refuses the release the pair is merged with the adoption pending, and a re-run retries
/// only that.
#[test]
fn a_kept_ref_is_released_or_left_pending_without_stalling() {
    let n = 6;
    let w = World::with(
        spec(n, 0, 34),
        behaviour(MoveMode::All, SecondaryAfter::Deactivated),
        |o| o.quirks.merged_keeps_ref = true,
    );
    let t0 = Instant::now();
    let a = w
        .cmd()
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "60"])
        .assert();
    let took = t0.elapsed();
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    check_final_state(&w);
    let r = w.last_report();
    assert_eq!(r["summary"]["external_refs_adopted"], n);
    let calls = w.fake.requests().len();
    eprintln!("kept-ref world: {n} pairs, {took:?}, {calls} calls");
    assert!(
        took < Duration::from_secs(30),
        "seconds per pair, not --merge-timeout: {took:?}"
    );

    // DevRev refuses to release the ref: merged, adoption pending, the run moves on.
    let w = World::with(
        spec(3, 0, 35),
        behaviour(MoveMode::All, SecondaryAfter::Deactivated),
        |o| {
            o.quirks.merged_keeps_ref = true;
            o.quirks.refuse_merged_update = true;
        },
    );
    let t0 = Instant::now();
    let a = w
        .cmd()
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "60"])
        .assert();
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(code(&a), 1, "{}", stderr(&a));
    let r = w.last_report();
    assert_eq!(r["summary"]["merged"], 3, "{}", r["summary"]);
    assert_eq!(r["summary"]["ref_adoptions_pending"], 3, "{}", r["summary"]);
    assert!(
        stderr(&a).contains("ref adoption pending"),
        "{}",
        stderr(&a)
    );
    let sp: Value = read_savepoint(&w.path("savepoint.json")).unwrap();
    for rec in sp["pairs"].as_object().unwrap().values() {
        assert_eq!(rec["status"], "ref_adoption_pending");
        assert!(rec["ref_release"]["outcome"]["Err"].is_string(), "{rec}");
    }
    // The values that were to ride with the ref went on their own: a ref that stays pending
    // does not keep the secondary's data off the survivor.
    let mut carried = 0;
    for (p, s) in w.pairs() {
        let now = w.fake.with_state(|st| phones(&st.rev_users[&p].json));
        for n in phones(w.seed.rev_user(&s).unwrap()) {
            assert!(
                now.contains(&n),
                "{n} on {p} while its ref is pending: {now:?}"
            );
            carried += 1;
        }
    }
    assert!(
        carried > 0,
        "the seed's user_ contacts have phone numbers to carry"
    );
    // The re-run retries only the adoptions.
    w.fake
        .set_options(|o| o.quirks.refuse_merged_update = false);
    let before = w.fake.requests().len();
    let a = w.run(&[]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(w.fake.count("/rev-users.merge"), 3);
    let rerun: Vec<String> = w.fake.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        rerun.iter().all(|p| matches!(
            p.as_str(),
            "/auth-tokens.info" | "/rev-users.get" | "/rev-users.update"
        )),
        "{rerun:?}"
    );
    check_final_state(&w);
    assert_eq!(w.last_report()["summary"]["external_refs_adopted"], 3);
}

/// Point 5: `reported_by` and `members` are sets: answers in another order, with a member
/// DevRev added, are successes.
#[test]
fn set_writes_answered_in_another_order_succeed() {
    let sp = spec(6, 0, 36);
    let w = World::with(
        sp,
        behaviour(MoveMode::Nothing, SecondaryAfter::Gone),
        |o| {
            // A contact in no group: DevRev "adds" it to every list it stores.
            let grouped: Vec<&String> = o
                .seed
                .groups
                .iter()
                .flat_map(|g| g.members.iter())
                .collect();
            let extra = o
                .seed
                .rev_users
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_string())
                .find(|id| !grouped.contains(&id));
            o.quirks = Quirks {
                reorder_sets: true,
                extra_member: extra,
                ..Quirks::default()
            };
        },
    );
    let a = w.run(&[]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    let r = w.last_report();
    assert_eq!(r["summary"]["merged"], 6);
    assert_eq!(r["summary"]["failed"], 0);
    assert!(r["summary"]["tickets_repaired"].as_u64().unwrap() > 0);
}

/// Point 7: a savepoint belongs to one org at one base URL.
#[test]
fn a_savepoint_is_not_resumed_against_another_devrev() {
    let w = World::new(
        spec(2, 0, 37),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let a = w.run(&["--max-merges", "1"]);
    assert_ne!(code(&a), 78, "{}", stderr(&a));
    let other = devrev_fake::fake::FakeServer::start(devrev_fake::fake::FakeOptions {
        seed: w.seed.clone(),
        ..Default::default()
    });
    let a = w
        .cmd()
        .env("DEVREV_BASE_URL", other.base_url())
        .env("DEVREV_API_TOKEN", other.token())
        .args(["--csv", "contacts.csv", "--yes"])
        .assert();
    assert_eq!(code(&a), 78, "{}", stderr(&a));
    assert!(stderr(&a).contains("belongs to org"), "{}", stderr(&a));
    let paths: Vec<String> = other.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/auth-tokens.info"], "nothing else was called");
}

/// Point 1: `--merge-watch` has a floor users cannot go below.
#[test]
fn merge_watch_below_its_floor_is_refused() {
    let w = World::new(
        spec(1, 0, 38),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let a = w.run(&["--merge-watch", "60"]);
    assert_eq!(code(&a), 78, "{}", stderr(&a));
    assert!(stderr(&a).contains("--merge-watch"), "{}", stderr(&a));
    assert_eq!(w.fake.count("/rev-users.merge"), 0);
}

/// Point 9: one rule decides what stops a command and what fails one pair, whatever the
/// command. Table: fault on every `works.list` × command; "stops" means the command went no
/// further than the pairs in hand, "per pair" that it tried every pair.
#[test]
fn one_rule_decides_what_stops_the_run_status_by_command() {
    let cases: [(&str, Fault, bool); 5] = [
        ("401", Fault::Unauthenticated, true),
        ("403", Fault::Forbidden, true),
        ("429", Fault::Spurious429 { retry_after_s: 0 }, true),
        ("typeless 404", Fault::TypelessNotFound, true),
        ("500", Fault::Status500, false),
    ];
    let commands: [(&str, &[&str]); 4] = [
        (
            "preview --check-live",
            &["--csv", "contacts.csv", "--preview", "--check-live"],
        ),
        (
            "backup-only",
            &["--csv", "contacts.csv", "--backup-only", "--yes"],
        ),
        (
            "verify-backups --against-api",
            &["--verify-backups", "backups", "--against-api"],
        ),
        (
            "merge",
            &["--csv", "contacts.csv", "--yes", "--merge-timeout", "2"],
        ),
    ];
    // Enough pairs that a command working a few pairs at once still shows whether it
    // stopped or went on.
    let n = 10;
    let mut table = Vec::new();
    for (name, fault, stops) in &cases {
        for (cmd, args) in &commands {
            let mut sp = spec(n, 0, 39);
            sp.tickets_per_contact = (1, 2);
            let w = World::new(sp, behaviour(MoveMode::All, SecondaryAfter::Gone));
            if cmd.starts_with("verify") {
                let a = w
                    .cmd()
                    .args(["--csv", "contacts.csv", "--backup-only", "--yes"])
                    .assert();
                assert_eq!(code(&a), 0, "{}", stderr(&a));
            }
            w.fake.set_options(|o| {
                o.faults.push(ScriptedFault {
                    path: Some("/works.list".into()),
                    nth: 0,
                    fault: fault.clone(),
                });
            });
            let before = w.fake.count("/works.list");
            let a = w.cmd().env("DEVREV_MAX_RETRIES", "0").args(*args).assert();
            let calls = w.fake.count("/works.list") - before;
            // Every pair lists its tickets once (no retries): fewer calls than pairs = stopped.
            let stopped = calls < n;
            table.push(format!(
                "{name:>12} x {cmd:<30} -> {calls} works.list call(s), exit {}",
                code(&a)
            ));
            assert_eq!(
                stopped,
                *stops,
                "{name} on {cmd}: {calls} works.list calls, exit {}: {}",
                code(&a),
                stderr(&a)
            );
            assert_ne!(code(&a), 0, "{name} on {cmd} is not a success");
        }
    }
    eprintln!("{}", table.join("\n"));
}

/// A one-pair world whose first run took the backup and then had its merge turned away (a
/// 429, not retried here): the backup is on record and the merge certainly not applied. (A 5xx
/// would be an unknown outcome, watched and settled within the run.) Returns the world and
/// the recorded backup folder.
fn backed_up_by_a_run_whose_merge_was_turned_away() -> (World, Value) {
    let w = World::with(
        spec(1, 0, 40),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| {
            o.faults
                .push(on_merge(1, Fault::Spurious429 { retry_after_s: 1 }))
        },
    );
    let a = w
        .cmd()
        .env("DEVREV_MAX_RETRIES", "0")
        .args(w.run_args())
        .assert();
    // A 429 that outlives the retries stops the run (one rule: it would refuse every pair).
    assert_eq!(code(&a), 69, "{}", stderr(&a));
    assert_eq!(w.fake.count("/rev-users.merge"), 1);
    let first = pairs_of(&w.last_report())[0]["backup_dir"].clone();
    assert!(first.is_string(), "a backup was taken");
    (w, first)
}

/// Point 6: a backup taken by an earlier run is checked against DevRev's current lists
/// before the merge; when the secondary's tickets changed, a new one is taken first.
#[test]
fn a_stale_backup_from_an_earlier_run_is_taken_again() {
    let (w, first) = backed_up_by_a_run_whose_merge_was_turned_away();
    // Someone files a ticket naming the secondary between the runs.
    let (_, s) = w.pairs()[0].clone();
    w.fake.with_state(|st| {
        let u = st.rev_users[&s].json.clone();
        let t = st
            .works
            .values_mut()
            .find(|t| !devrev_fake::seed::summary_ids(&t.json["reported_by"]).contains(&s))
            .expect("a ticket not naming the secondary");
        t.json["reported_by"]
            .as_array_mut()
            .unwrap()
            .push(devrev_fake::seed::user_summary(&u));
    });
    let a = w.run(&[]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    let r = w.last_report();
    let p = &pairs_of(&r)[0];
    assert_ne!(p["backup_dir"], first, "a new backup: {p}");
    let steps: Vec<&str> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"backup"), "{steps:?}");
    assert_eq!(w.fake.count("/rev-users.merge"), 2);
}

/// The carry-over writes the survivor's phone list whole, planned from its backed-up copy: a
/// phone number someone gave the survivor after an earlier run's backup must survive the
/// merge, so that backup is taken again first (review finding: it used to be dropped).
#[test]
fn a_survivor_changed_since_an_earlier_runs_backup_keeps_what_was_added() {
    let (w, first) = backed_up_by_a_run_whose_merge_was_turned_away();
    let (p, s) = w.pairs()[0].clone();
    let added = "+14155550142";
    w.fake.with_state(|st| {
        let u = &mut st.rev_users.get_mut(&p).unwrap().json;
        let mut list = u["phone_numbers"].as_array().cloned().unwrap_or_default();
        list.push(serde_json::json!(added));
        u["phone_numbers"] = serde_json::Value::Array(list);
    });
    let secondary_phones = phones(w.seed.rev_user(&s).unwrap());
    let a = w.run(&[]);
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    let r = w.last_report();
    assert_ne!(pairs_of(&r)[0]["backup_dir"], first, "a new backup");
    let now = w.fake.with_state(|st| phones(&st.rev_users[&p].json));
    assert!(now.contains(&added.to_string()), "{now:?}");
    for n in &secondary_phones {
        assert!(now.contains(n), "{n} carried: {now:?}");
    }
}

/// Point 2: a merge DevRev turned away (here a 429 that outlived the retries) is no merge of
/// this tool's. When the operator then deactivates the duplicate by hand, the re-run must not
/// read the inactive state as "our merge landed late": the pair is skipped, nothing is moved,
/// and no second merge is sent.
#[test]
fn a_turned_away_merge_never_counts_as_applied() {
    let mut sp = spec(1, 0, 42);
    sp.tickets_per_contact = (1, 2);
    let w = World::with(sp, behaviour(MoveMode::All, SecondaryAfter::Gone), |o| {
        o.faults
            .push(on_merge(1, Fault::Spurious429 { retry_after_s: 1 }))
    });
    let a = w
        .cmd()
        .env("DEVREV_MAX_RETRIES", "0")
        .args(w.run_args())
        .assert();
    assert_eq!(code(&a), 69, "{}", stderr(&a));
    let (_, s) = w.pairs()[0].clone();
    let before = w.fake.with_state(|st| st.tickets_reported_by(&s).len());
    assert!(before > 0, "the secondary has tickets to (not) move");
    w.fake.with_state(|st| {
        st.rev_users.get_mut(&s).unwrap().json["state"] = serde_json::json!("deactivated");
    });
    let a = w.run(&[]);
    assert_eq!(code(&a), 1, "{}", stderr(&a));
    let r = w.last_report();
    let p = &pairs_of(&r)[0];
    assert_eq!(p["status"], "skipped", "{p}");
    assert_eq!(w.fake.count("/rev-users.merge"), 1, "never sent again");
    let after = w.fake.with_state(|st| st.tickets_reported_by(&s).len());
    assert_eq!(after, before, "nothing was moved off the secondary");
    assert_eq!(w.fake.count("/works.update"), 0);
}

/// The soak figure (not run in CI: `cargo test --test it soak -- --ignored --nocapture`): one
/// world of 36 pairs at an unlimited rate with DevRev's ~2 s apply delay, once clean and once
/// with faults (5 % 500s, 2 % 503s, 3 % 429s, 2 % dropped connections, 1 % requests applied
/// then dropped; partial merges). Every pair must end right both times, with one merge
/// request reaching DevRev per pair; pairs still unknown are re-run until done.
#[test]
#[ignore = "soak: about two minutes; run by hand for the figures"]
fn soak_36_pairs_clean_vs_faults() {
    let run_world = |faults: bool| {
        let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Mixed);
        b.delay = Duration::from_secs(2);
        let w = World::with(spec(36, 0, 41), b, |o| {
            if faults {
                let mut kinds = Vec::new();
                kinds.extend(std::iter::repeat_n(Fault::Status500, 5));
                kinds.extend(std::iter::repeat_n(Fault::Status503, 2));
                kinds.extend(std::iter::repeat_n(
                    Fault::Spurious429 { retry_after_s: 1 },
                    3,
                ));
                kinds.extend(std::iter::repeat_n(Fault::Drop, 2));
                kinds.push(Fault::ApplyThenDrop);
                o.random_faults = Some(devrev_fake::fake::RandomFaults {
                    seed: 7,
                    probability: 0.13,
                    kinds,
                });
            }
        });
        let t0 = Instant::now();
        let mut reruns = 0;
        loop {
            let a = w
                .cmd()
                .env("DEVREV_MERGE_MIN_BACKOFF_MS", "1000")
                .env("DEVREV_MERGE_TEST_WATCH_MS", "30000")
                .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "120"])
                .assert();
            if code(&a) == 0 {
                break;
            }
            reruns += 1;
            assert!(reruns <= 5, "{}", stderr(&a));
        }
        let took = t0.elapsed();
        check_final_state(&w);
        let calls = w.fake.requests().len();
        (took, reruns, calls)
    };
    let (clean, clean_reruns, clean_calls) = run_world(false);
    let (faulty, reruns, calls) = run_world(true);
    eprintln!(
        "soak, 36 pairs: clean {clean:?} ({clean_reruns} re-runs, {clean_calls} calls); \
         faults {faulty:?} ({reruns} re-runs, {calls} calls)"
    );
}
