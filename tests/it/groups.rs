//! Decided groups in the merge run (`--csv ... --decisions FILE`): each `merge` contact of a
//! group merged into its `keep` one at a time, each its own journaled saga; clean pairs
//! following the decisions; a group stopped at its first failure; the report's groups.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use devrev_fake::seed::{GenSpec, GroupKind, GroupShape};
use serde_json::Value;

use crate::merge::{World, behaviour, merges_handled, spec};
use crate::review::{col, records, review_files, save_like_excel};
use devrev_fake::fake::{MoveMode, SecondaryAfter};

/// Clean pairs and needs-review groups of the given shapes (one `REVU-` contact first, then
/// `user_` contacts).
fn world(pairs: usize, shapes: Vec<GroupShape>) -> World {
    let spec = GenSpec {
        shaped_groups: shapes,
        ..spec(pairs, 0, 17)
    };
    World::new(spec, behaviour(MoveMode::All, SecondaryAfter::Deactivated))
}

fn shape(size: usize) -> GroupShape {
    GroupShape {
        size,
        unverified: 0,
        other_account: 0,
    }
}

/// `--preview`, then the review file's header and rows.
fn review(w: &World) -> (Vec<String>, Vec<Vec<String>>) {
    w.cmd()
        .args(["--csv", "contacts.csv", "--preview"])
        .assert()
        .success();
    let rows = records(review_files(w.dir.path()).last().unwrap());
    (rows[0].clone(), rows[1..].to_vec())
}

/// The seed's shaped groups, members in order (the `REVU-` contact first).
fn shaped(w: &World) -> Vec<Vec<String>> {
    w.seed
        .groups
        .iter()
        .filter(|g| g.kind == GroupKind::Shaped)
        .map(|g| g.members.clone())
        .collect()
}

/// Sets `decision` (and `adopt_ref`) of the row of `id`.
fn decide(h: &[String], rows: &mut [Vec<String>], id: &str, decision: &str, adopt: bool) {
    let r = rows
        .iter_mut()
        .find(|r| r[col(h, "rev_user_id")] == id)
        .unwrap_or_else(|| panic!("{id} in the review file"));
    r[col(h, "decision")] = decision.into();
    if adopt {
        r[col(h, "adopt_ref")] = "yes".into();
    }
}

/// Saves the rows re-sorted by email (a spreadsheet's sort), as Excel does: BOM, `;`, CRLF.
fn save(w: &World, name: &str, h: &[String], rows: &[Vec<String>]) {
    let mut body = rows.to_vec();
    body.sort_by(|a, b| {
        a[col(h, "email")]
            .cmp(&b[col(h, "email")])
            .then(b[col(h, "rev_user_id")].cmp(&a[col(h, "rev_user_id")]))
    });
    let mut file = vec![h.to_vec()];
    file.extend(body);
    save_like_excel(&w.path(name), &file);
}

fn group_of<'r>(report: &'r Value, keep: &str) -> &'r Value {
    report["groups"]
        .as_array()
        .expect("groups in the report")
        .iter()
        .find(|g| g["survivor"] == keep)
        .unwrap_or_else(|| panic!("a group kept as {keep}: {report:#}"))
}

fn ext_ref(w: &World, id: &str) -> String {
    w.fake.with_state(|s| {
        s.rev_user(id)
            .and_then(|u| u.external_ref())
            .unwrap_or_default()
    })
}

fn seed_ref(w: &World, id: &str) -> String {
    w.seed.rev_user(id).unwrap()["external_ref"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_decided_group_merges_one_contact_at_a_time_and_clean_pairs_follow_the_file() {
    let w = world(3, vec![shape(4)]);
    let (h, mut rows) = review(&w);
    let g = &shaped(&w)[0];
    let pairs = w.seed.pairs();
    // Keep the group's second contact (a user_ one); merge the REVU- contact and two user_
    // ones into it; the survivor takes the fourth one's ref.
    decide(&h, &mut rows, &g[1], "keep", false);
    decide(&h, &mut rows, &g[0], "merge", false);
    decide(&h, &mut rows, &g[2], "MERGE", false);
    decide(&h, &mut rows, &g[3], "merge", true);
    // Clean pairs: one is not a duplicate, one keeps its user_ contact, one is left blank
    // (the --keep rule).
    decide(&h, &mut rows, &pairs[0].0, "Not dup", false);
    decide(&h, &mut rows, &pairs[1].1, "keep", false);
    decide(&h, &mut rows, &pairs[1].0, "merge", false);
    save(&w, "decided.csv", &h, &rows);

    let out = w.run(&["--decisions", "decided.csv"]).success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("Decided groups:"), "{stdout}\n{stderr}");

    let handled = merges_handled(&w.fake.requests());
    let want: BTreeMap<(String, String), usize> = [
        (g[1].clone(), g[0].clone()),
        (g[1].clone(), g[2].clone()),
        (g[1].clone(), g[3].clone()),
        (pairs[1].1.clone(), pairs[1].0.clone()),
        (pairs[2].0.clone(), pairs[2].1.clone()),
    ]
    .into_iter()
    .map(|k| (k, 1))
    .collect();
    assert_eq!(
        handled, want,
        "exactly one merge per decided contact, none for not-dup"
    );

    // One at a time: each merge of the group was requested only after the one before it
    // was applied.
    let merges = w.fake.with_state(|s| s.merges.clone());
    let of = |sec: &str| merges.iter().find(|m| m.secondary == sec).unwrap().clone();
    let delay = Duration::from_millis(30);
    let mut order = decided_order(&w, "decided.csv");
    order.retain(|m| g.contains(m));
    assert_eq!(order.len(), 3);
    for two in order.windows(2) {
        let (before, next) = (of(&two[0]), of(&two[1]));
        assert!(before.requested_seq < next.requested_seq);
        let applied = before.applied_at.expect("applied");
        assert!(
            applied <= next.due - delay,
            "the next member's merge was sent before the previous one was applied"
        );
    }

    // The survivor took the chosen ref after the last merge; the other user_ ref merged is
    // left without a contact, and the report says so.
    assert_eq!(ext_ref(&w, &g[1]), seed_ref(&w, &g[3]));
    let report = w.last_report();
    let grp = group_of(&report, &g[1]);
    assert_eq!(grp["outcome"], "merged", "{grp:#}");
    assert_eq!(grp["decided_by"], "typed");
    assert_eq!(grp["adopts_ref"], seed_ref(&w, &g[3]));
    assert_eq!(grp["refs_left"], serde_json::json!([seed_ref(&w, &g[2])]));
    let statuses: Vec<&str> = grp["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["merged"; 3]);
    let not_dup = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["outcome"] == "not_dup")
        .expect("the not-dup pair is reported");
    assert!(
        not_dup["reason"]
            .as_str()
            .unwrap()
            .contains("not-dup on line")
    );
    // Every ticket of the merged members now names the survivor.
    for m in [&g[0], &g[2], &g[3]] {
        assert!(
            w.fake.with_state(|s| s.tickets_reported_by(m).is_empty()),
            "{m} still reports tickets"
        );
    }

    // A re-run with the same file sends nothing more.
    let before = w.fake.count("/rev-users.merge");
    w.run(&["--decisions", "decided.csv"]).success();
    assert_eq!(w.fake.count("/rev-users.merge"), before);
}

/// The savepoint's records by key (the last line of each wins).
fn savepoint(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("savepoint.json")).unwrap();
    let mut recs = BTreeMap::new();
    for line in text.lines().skip(1) {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(p) = v.get("pair") {
            recs.insert(
                format!(
                    "{} <- {}",
                    p["primary"].as_str().unwrap(),
                    p["secondary"].as_str().unwrap()
                ),
                p.clone(),
            );
        }
    }
    serde_json::to_value(recs).unwrap()
}

#[test]
fn a_group_stops_at_its_first_failure_and_the_rest_is_untouched() {
    // Four contacts: the REVU- one verified, the last user_ one unverified. Merging the
    // unverified one into the verified survivor is refused by DevRev (and the live check).
    let w = world(
        1,
        vec![GroupShape {
            size: 4,
            unverified: 1,
            other_account: 0,
        }],
    );
    let (h, mut rows) = review(&w);
    let g = &shaped(&w)[0];
    decide(&h, &mut rows, &g[0], "keep", false);
    // The unverified contact second in line: the third never starts.
    decide(&h, &mut rows, &g[1], "merge", false);
    decide(&h, &mut rows, &g[3], "merge", false);
    decide(&h, &mut rows, &g[2], "merge", false);
    save(&w, "decided.csv", &h, &rows);
    let order = decided_order(&w, "decided.csv");
    assert_eq!(order.len(), 3);
    let failing = order.iter().position(|m| *m == g[3]).unwrap();

    let out = w.run(&["--decisions", "decided.csv"]).failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(
        out.get_output().status.code(),
        Some(1),
        "some pairs did not merge: {stderr}"
    );
    let handled = merges_handled(&w.fake.requests());
    for (i, m) in order.iter().enumerate() {
        let sent = handled
            .get(&(g[0].clone(), m.clone()))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            sent,
            usize::from(i < failing),
            "merge {i} of the group ({m})"
        );
    }
    let report = w.last_report();
    let grp = group_of(&report, &g[0]);
    assert_eq!(grp["outcome"], "stopped", "{grp:#}");
    assert_eq!(grp["stopped_at"]["rev_user_id"], g[3].as_str());
    assert!(
        grp["stopped_at"]["reason"]
            .as_str()
            .unwrap()
            .contains("unverified"),
        "{grp:#}"
    );
    let statuses: Vec<&str> = grp["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    let mut want = vec!["merged"; failing];
    want.push("skipped");
    want.resize(order.len(), "not_started");
    assert_eq!(statuses, want);
    // The contacts after the failure were not touched: not even a record.
    let sp = savepoint(w.dir.path());
    for m in &order[failing + 1..] {
        assert!(sp.get(format!("{} <- {m}", g[0])).is_none(), "{m}");
    }
    assert!(stderr.contains("stopped at"), "{stderr}\n{grp:#}");
}

/// The `merge` rows of a saved decisions file, in the file's order (the order they merge in).
fn decided_order(w: &World, file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(w.path(file)).unwrap();
    let text = text.trim_start_matches('\u{feff}');
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(text.as_bytes());
    let h: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    rdr.records()
        .map(|r| r.unwrap())
        .filter(|r| r[col(&h, "decision")].eq_ignore_ascii_case("merge"))
        .map(|r| r[col(&h, "rev_user_id")].to_string())
        .collect()
}
