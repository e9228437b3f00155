//! Nothing a contact holds is lost (issue 27): the carry-over and its undo read the fields
//! they need in the API's own scope and start from the survivor's live values; an answer for
//! another contact is never taken for the one asked; odd but spec-valid values cost only
//! their own object.

use serde_json::{Value, json};

use crate::carry::{check_carried, issue_world, live, run_ok};
use crate::merge::World;
use crate::restore::last_restore_report;
use devrev_merge::devrev::types::RevUser;

/// `--restore` of the world's last report; the restore report.
pub(crate) fn restore_last(w: &World) -> (Value, String) {
    let report = w.reports().pop().expect("a merge report");
    let rel = report
        .strip_prefix(w.dir.path())
        .unwrap()
        .display()
        .to_string();
    let out = w.std_cmd(&["--restore", &rel, "--yes"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    (last_restore_report(w), err)
}

/// The live contact (not the merged-away one) holding `email` and `external_ref`.
fn recreated(w: &World, old: &str) -> RevUser {
    let old = crate::carry::user(w.seed.rev_user(old).unwrap());
    w.fake.with_state(|st| {
        let u = st
            .rev_users
            .values()
            .find(|u| u.id() != old.id && u.email() == old.email && u.state() == "active")
            .expect("the recreated contact");
        serde_json::from_value(u.json.clone()).unwrap()
    })
}

/// Point 1: an API that answers rev users by the public schema outside the beta scope (no
/// `is_verified`, `custom_fields`, `tags`) still gives the carry-over every value: the tool
/// reads contacts in the beta scope. (Before: the plan saw no custom fields nor tags, and
/// they were lost with the secondary.)
#[test]
fn a_public_shape_api_is_read_in_the_beta_scope_and_nothing_is_lost() {
    let w = issue_world(false, |o| o.quirks.public_shape = true);
    let err = run_ok(&w, &[]);
    check_carried(&w, &err);
}

/// Point 1: where even the beta scope brings no beta fields (an org without the beta API),
/// those fields are unknown, not empty: no pair is merged, each is skipped with the reason
/// naming the fields, and the next run checks again. (Before: merged on an empty plan, the
/// secondaries' custom fields and tags gone.)
#[test]
fn fields_no_answer_carries_are_unknown_and_the_pair_is_not_merged() {
    let w = issue_world(false, |o| {
        o.quirks.public_shape = true;
        o.quirks.no_beta = true;
    });
    let out = w.run(&[]).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let merges = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.path == "/rev-users.merge")
        .count();
    assert_eq!(merges, 0, "{err}");
    let r = w.last_report();
    for e in r["pairs"].as_array().unwrap() {
        assert_eq!(e["skip_reason"]["kind"], "fields_unknown", "{e}");
    }
    assert!(
        err.contains("custom_fields, tags") && err.contains("unknown, not empty"),
        "{err}"
    );
}

/// Point 2: the restore's create goes in the beta scope with the secondary's custom fields
/// and tags (the public create request has neither), so a strict API recreates them all.
/// (Before: `custom_fields` was refused in the public scope and dropped, tags never sent.)
#[test]
fn the_restore_recreates_custom_fields_and_tags_in_the_beta_scope() {
    let w = issue_world(false, |o| o.quirks.public_shape = true);
    run_ok(&w, &[]);
    w.fake.apply_pending_merges();
    let (rr, _) = restore_last(&w);
    let (_, s0) = w.pairs()[0].clone();
    let old = w.seed.rev_user(&s0).unwrap().clone();
    let new = recreated(&w, &s0);
    assert_eq!(new.extra["custom_fields"], old["custom_fields"], "{rr}");
    let ids = |v: &Value| -> Vec<(Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| (t["tag"]["id"].clone(), t["value"].clone()))
            .collect()
    };
    assert_eq!(ids(&new.extra["tags"]), ids(&old["tags"]), "{rr}");
    let creates: Vec<Value> = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.path == "/rev-users.create" && r.status == 201)
        .map(|r| r.body.clone())
        .collect();
    assert!(
        creates.iter().any(|b| b["tags"].is_array()),
        "{}",
        json!(creates)
    );
    let _ = live(&w, &new.id);
}

/// Point 6: `rev-users.get` of one contact answered with another's record is never backed up
/// as the one asked: `--backup-only` fails that pair, naming both ids, and says so in its
/// count. (Before: the other contact was backed up under the asked id, and it said OK.)
#[test]
fn an_answer_for_another_contact_is_never_backed_up_as_the_one_asked() {
    let probe = issue_world(false, |_| {});
    let (p0, s0) = probe.pairs()[0].clone();
    drop(probe);
    let w = issue_world(false, |o| {
        o.quirks.get_answers = vec![(s0.clone(), p0.clone())];
    });
    let out = w
        .cmd()
        .args(["--csv", "contacts.csv", "--backup-only"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("FAILED")
            && l.contains(&s0)
            && l.contains(&p0)
            && l.contains("answered another contact")),
        "{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}

/// Point 6: a DevRev that answers a merged-away id with its survivor's record (`id` the
/// primary's) shows the merge: every pair is merged and confirmed. (Before: the primary's
/// record was read as the secondary's, "active, unmerged", and the merge never confirmed.)
#[test]
fn a_merged_away_id_answering_its_primary_is_evidence_of_the_merge() {
    use devrev_fake::fake::SecondaryAfter;
    let w = issue_world(false, |o| {
        o.merge.secondary_after = SecondaryAfter::AnswersPrimary;
    });
    let err = run_ok(&w, &[]);
    let r = w.last_report();
    for e in r["pairs"].as_array().unwrap() {
        assert_eq!(e["status"], "merged", "{e}\n{err}");
    }
    check_carried(&w, &err);
}
