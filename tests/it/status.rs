//! `--status`: what the savepoint holds, offline, without the CSV and without writing.

use std::time::Duration;

use devrev_fake::fake::{Fault, MoveMode, ScriptedFault, SecondaryAfter};
use serde_json::Value;

use crate::merge::{World, behaviour, spec};

#[test]
fn status_shows_counts_watched_merges_and_the_last_report_without_the_csv() {
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    b.delay = Duration::from_millis(50);
    // The first merge's answer is lost (a 500): its outcome is unknown and watched.
    let w = World::with(spec(3, 1, 7), b, |o| {
        o.faults.push(ScriptedFault {
            path: Some("/rev-users.merge".into()),
            nth: 1,
            fault: Fault::Status500,
        });
    });
    let run = w
        .cmd()
        .env("DEVREV_MERGE_TEST_WATCH_MS", "600000")
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let calls = w.fake.requests().len();
    std::fs::remove_file(w.path("contacts.csv")).unwrap();
    let logs_before = std::fs::read_dir(w.path("logs")).unwrap().count();

    let out = w.cmd().arg("--status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("savepoint.json: 3 records"), "{text}");
    assert!(text.contains("Waiting on a watch window: 1"), "{text}");
    assert!(text.contains("merge answer lost"), "{text}");
    assert!(
        text.contains(" until "),
        "names when the window ends: {text}"
    );
    assert!(
        text.contains("Last merge report: reports/merge-report-"),
        "{text}"
    );

    let out = w.cmd().args(["--status", "--json"]).output().unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["records"], 3, "{s}");
    let counted: u64 = s["by_status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 3, "every record counted once: {s}");
    assert_eq!(s["watching"].as_array().unwrap().len(), 1, "{s}");
    assert!(s["watching"][0]["until"].is_string(), "{s}");
    // Offline and read-only: no call, no new log.
    assert_eq!(w.fake.requests().len(), calls);
    assert_eq!(
        std::fs::read_dir(w.path("logs")).unwrap().count(),
        logs_before
    );
}

#[test]
fn status_without_a_savepoint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::scrubbed_assert_cmd(dir.path())
        .arg("--status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No savepoint at savepoint.json"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "writes nothing"
    );
}
