//! One merge per contact (issue 16): the savepoint is a ledger indexed by contact id, so no
//! contact is merged away twice whatever a refreshed export pairs it with, and a restore stays
//! restored.

use std::collections::BTreeMap;

use devrev_fake::fake::{Fault, MoveMode, ScriptedFault, SecondaryAfter};
use serde_json::json;

use crate::common::read_savepoint;
use crate::merge::{World, behaviour, spec};

/// `rev-users.merge` requests per secondary in the fake's log.
fn merges_per_secondary(w: &World) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for r in w.fake.requests() {
        if r.path == "/rev-users.merge"
            && let Some(s) = r.body["secondary_user"].as_str()
        {
            *n.entry(s.to_string()).or_insert(0) += 1;
        }
    }
    n
}

fn set_email(w: &World, id: &str, email: &str) {
    w.fake.with_state(|st| {
        st.rev_users.get_mut(id).unwrap().json["email"] = json!(email);
    });
}

/// Point 1: a merge whose answer was lost, then a refreshed export where its secondary `S` now
/// pairs with another contact: the re-run does not send a second merge for `S`; the new pair
/// is skipped naming the record that holds `S`.
#[test]
fn a_secondary_with_a_lost_merge_is_not_merged_into_a_new_primary() {
    let w = World::with(
        spec(2, 0, 61),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| {
            o.faults.push(ScriptedFault {
                path: Some("/rev-users.merge".into()),
                nth: 1,
                fault: Fault::Status500,
            });
        },
    );
    // The first merge's answer is a 500 (unknown outcome, not applied): watched, not re-sent.
    let a = w
        .cmd()
        .env("DEVREV_MERGE_TEST_WATCH_MS", "600000")
        .args(w.run_args())
        .args(["--max-merges", "1"])
        .assert();
    assert_eq!(a.get_output().status.code(), Some(1));
    let sp = read_savepoint(&w.path("savepoint.json")).unwrap();
    let (p, s) = sp["pairs"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["merge"].is_object())
        .map(|r| {
            (
                r["primary"].as_str().unwrap().to_string(),
                r["secondary"].as_str().unwrap().to_string(),
            )
        })
        .expect("the lost merge is journaled");
    let (p2, s2) = w
        .pairs()
        .into_iter()
        .find(|(q, _)| *q != p)
        .expect("the other pair");
    // A refreshed export: P left the group, the other pair's primary P2 now shares S's email.
    let email = w
        .fake
        .with_state(|st| st.rev_users[&s].json["email"].clone());
    set_email(&w, &p, "moved-away@example.com");
    set_email(&w, &s2, "someone-else@example.com");
    set_email(&w, &p2, email.as_str().unwrap());
    std::fs::write(w.path("contacts.csv"), w.fake.contacts_csv()).unwrap();

    let a = w
        .cmd()
        .env("DEVREV_MERGE_TEST_WATCH_MS", "600000")
        .args(w.run_args())
        .assert();
    assert_eq!(a.get_output().status.code(), Some(1));
    let per = merges_per_secondary(&w);
    assert_eq!(per.get(&s), Some(&1), "one merge request for {s}: {per:?}");
    assert!(per.values().all(|n| *n <= 1), "{per:?}");
    let r = w.last_report();
    let held = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["primary"] == json!(p2) && e["secondary"] == json!(s))
        .expect("the new pair is reported");
    assert_eq!(held["status"], "skipped", "{held}");
    assert_eq!(held["skip_reason"]["kind"], "held_by_ledger", "{held}");
    assert_eq!(held["skip_reason"]["hold"], "in_flight", "{held}");
    let msg = held["skip_message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{p} <- {s}")),
        "names the other record: {msg}"
    );
    assert_eq!(
        r["summary"]["skipped_by_reason"]["held_by_another_record"], 1,
        "{}",
        r["summary"]
    );
}
