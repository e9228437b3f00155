//! `--keep auto`: pairs DevRev refuses as planned (a verified REVU- contact, an unverified
//! user_ one) are turned round, said so by `--check-live`, and merged by the run.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::merge::{World, behaviour, spec};
use devrev_fake::fake::{MoveMode, SecondaryAfter};

/// A world where some clean pairs can only be merged into the user_ contact.
fn world() -> (World, BTreeSet<(String, String)>) {
    let mut sp = spec(12, 2, 31);
    sp.unverified_secondary_pct = 40;
    let w = World::new(sp, behaviour(MoveMode::All, SecondaryAfter::Gone));
    let mergeable: BTreeSet<_> = w.mergeable().into_iter().collect();
    let refused: BTreeSet<(String, String)> = w
        .pairs()
        .into_iter()
        .filter(|p| !mergeable.contains(p))
        .collect();
    assert!(
        refused.len() >= 2 && refused.len() < w.pairs().len(),
        "the seed must mix both kinds of pairs: {} refused",
        refused.len()
    );
    (w, refused)
}

#[test]
fn check_live_says_which_pairs_are_turned_and_why() {
    let (w, refused) = world();
    let out = w
        .cmd()
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .args(["--keep", "auto", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = &plan["live_check"];
    assert_eq!(live["turned"], refused.len());
    assert_eq!(live["refused"], 0, "no pair refused under --keep auto");
    let turned: BTreeSet<(String, String)> = live["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["turned"].is_string())
        .map(|r| {
            assert!(r["turned"].as_str().unwrap().contains("verified"));
            // Now the user_ contact is the primary.
            (
                r["secondary"].as_str().unwrap().to_string(),
                r["primary"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(turned, refused);
    // The plan's pairs carry the turned roles.
    let user_primaries = plan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["primary"]["external_ref"]
                .as_str()
                .unwrap()
                .starts_with("user_")
        })
        .count();
    assert_eq!(user_primaries, refused.len());

    let human = w
        .cmd()
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .args(["--keep", "auto"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!(
            "Turned by --keep auto: {} pair(s) keep the user_ contact",
            refused.len()
        )),
        "{text}"
    );
    assert!(text.contains("--keep auto"), "{text}");
}

#[test]
fn every_pair_is_merged_none_refused() {
    let (w, refused) = world();
    let out = w
        .cmd()
        .args(w.run_args())
        .args(["--keep", "auto"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = w.last_report();
    assert_eq!(r["summary"]["merged"], w.pairs().len());
    assert_eq!(r["summary"]["skipped"], 0);
    let reqs = w.fake.requests();
    let merges: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/rev-users.merge")
        .collect();
    assert_eq!(merges.len(), w.pairs().len(), "one request per pair");
    assert!(
        merges.iter().all(|r| r.status == 200),
        "DevRev refused none"
    );
    let done: BTreeSet<(String, String)> = w.fake.with_state(|s| {
        s.merges
            .iter()
            .filter(|m| m.applied)
            .map(|m| (m.primary.clone(), m.secondary.clone()))
            .collect()
    });
    for (revu, user) in w.pairs() {
        let want = if refused.contains(&(revu.clone(), user.clone())) {
            (user, revu)
        } else {
            (revu, user)
        };
        assert!(done.contains(&want), "{want:?} merged that way: {done:?}");
    }
    // A second run finds everything finished and sends nothing.
    let before = w.fake.count("/rev-users.merge");
    w.cmd()
        .args(w.run_args())
        .args(["--keep", "auto"])
        .assert()
        .success();
    assert_eq!(w.fake.count("/rev-users.merge"), before);
}

#[test]
fn pairs_a_keep_revu_run_skipped_are_turned_by_keep_auto() {
    let (w, refused) = world();
    let out = w.cmd().args(w.run_args()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "--keep revu skips the refused pairs"
    );
    assert_eq!(w.last_report()["summary"]["skipped"], refused.len());
    let out = w
        .cmd()
        .args(w.run_args())
        .args(["--keep", "auto"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: BTreeSet<(String, String)> = w.fake.with_state(|s| {
        s.merges
            .iter()
            .filter(|m| m.applied)
            .map(|m| (m.secondary.clone(), m.primary.clone()))
            .collect()
    });
    for pair in &refused {
        assert!(merged.contains(pair), "{pair:?} turned and merged");
    }
    assert_eq!(merged.len(), w.pairs().len());
}
