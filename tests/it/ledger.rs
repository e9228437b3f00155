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

/// Point 5: someone merges the secondary into a third contact just before our merge request
/// arrives (which DevRev then refuses), and the answer is lost. The 404 that follows is not taken for our merge: the
/// secondary's backed-up tickets now name the third contact, so the pair is "merged
/// elsewhere", naming it; no ticket gets our primary, the ref is not adopted, exit 1, and the
/// next run leaves it alone.
#[test]
fn a_secondary_merged_into_a_third_contact_is_not_reconciled_into_ours() {
    // Gone (404) and deactivated name no destination: the tickets do. primary_identity
    // names the third contact itself.
    for after in [
        SecondaryAfter::Gone,
        SecondaryAfter::Deactivated,
        SecondaryAfter::PrimaryIdentity,
    ] {
        merged_into_a_third_contact(after);
    }
}

fn merged_into_a_third_contact(after: SecondaryAfter) {
    let mut sp = spec(1, 0, 67);
    sp.tickets_per_contact = (2, 3);
    sp.shared_ticket_pct = 0;
    let seed = devrev_fake::seed::Seed::generate(&sp);
    let (p, s) = seed.pairs()[0].clone();
    let third = seed
        .rev_users
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .find(|id| *id != p && *id != s)
        .expect("a single contact");
    let (s2, third2) = (s.clone(), third.clone());
    let w = World::with(sp, behaviour(MoveMode::All, after), |o| {
        o.merge.side_merges.push((s2, third2));
        o.faults.push(ScriptedFault {
            path: Some("/rev-users.merge".into()),
            nth: 1,
            fault: Fault::ApplyThenDrop,
        });
    });
    let s_ref = w.seed.rev_user(&s).unwrap()["external_ref"].clone();
    let with_p_before: Vec<String> = w.fake.with_state(|st| {
        st.tickets_reported_by(&p)
            .iter()
            .map(|t| t.display_id())
            .collect()
    });
    let a = w.run(&[]);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert_eq!(a.get_output().status.code(), Some(1), "{after:?}: {err}");
    assert!(err.contains("merged elsewhere"), "{after:?}: {err}");
    let r = w.last_report();
    let e = &r["pairs"][0];
    assert_eq!(e["status"], "merged_elsewhere", "{e}");
    let msg = e["skip_message"].as_str().unwrap_or_default();
    assert!(msg.contains(&third), "names the contact it went to: {msg}");
    assert_eq!(r["summary"]["merged_elsewhere"], 1, "{}", r["summary"]);
    assert_eq!(e["tickets_repaired"], 0, "{e}");
    w.fake.with_state(|st| {
        for t in st.tickets_reported_by(&third) {
            assert!(
                !t.reported_by_ids().contains(&p) || with_p_before.contains(&t.display_id()),
                "our primary was not added to the third contact's ticket {}",
                t.display_id()
            );
        }
        assert_ne!(
            st.rev_users[&p].json["external_ref"], s_ref,
            "the ref is not adopted"
        );
    });
    // A re-run changes nothing and sends no merge.
    let before = w.fake.count("/rev-users.merge");
    let writes = w.fake.count("/works.update") + w.fake.count("/rev-users.update");
    w.run(&[]);
    assert_eq!(w.fake.count("/rev-users.merge"), before);
    assert_eq!(
        w.fake.count("/works.update") + w.fake.count("/rev-users.update"),
        writes
    );
}

/// Point 11: DevRev accepts a merge (200) and never applies it. Once the secondary was seen
/// plainly unmerged for a whole watch window, the run says so plainly ("accepted, never
/// applied", what to do) and sends nothing again; `--resend-unapplied` sends it again (after
/// Validate and the backup check), and that one is applied.
#[test]
fn an_accepted_merge_never_applied_is_settled_by_the_user() {
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    b.delay = std::time::Duration::from_secs(3600);
    let w = World::new(spec(1, 0, 75), b);
    let run = |extra: &[&str]| {
        w.cmd()
            .env("DEVREV_MERGE_TEST_WATCH_MS", "300")
            .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "1"])
            .args(extra)
            .assert()
    };
    let a = run(&[]);
    assert_eq!(a.get_output().status.code(), Some(1));
    // A second run: the window is long over, the pair is reported for the user to decide.
    let a = run(&[]);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert_eq!(a.get_output().status.code(), Some(1), "{err}");
    assert_eq!(
        w.fake.count("/rev-users.merge"),
        1,
        "never re-sent on its own"
    );
    let r = w.last_report();
    let steps = r["pairs"][0]["steps"].to_string();
    assert!(steps.contains("accepted, never applied"), "{steps}");
    assert!(steps.contains("--resend-unapplied"), "{steps}");
    // The user decides to send it again; DevRev applies this one at once.
    w.fake
        .set_options(|o| o.merge.delay = std::time::Duration::ZERO);
    let a = run(&["--resend-unapplied"]);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert_eq!(a.get_output().status.code(), Some(0), "{err}");
    assert_eq!(w.fake.count("/rev-users.merge"), 2);
    assert_eq!(w.last_report()["pairs"][0]["status"], "merged");
}
