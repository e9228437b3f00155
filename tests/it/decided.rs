//! What a person decided holds (issue 26): in every command that comes after the one that read
//! the decisions, across runs and re-sorted files, through a spreadsheet's saving, and a veto
//! that comes after the merge is reported, never silent.

use serde_json::Value;

use crate::groups::{decide, ext_ref, review, seed_ref, shape, shaped, world};
use crate::merge::{World, merges_handled};
use crate::review::{col, save_like_excel};

fn out_err(a: &assert_cmd::assert::Assert) -> (String, String) {
    let o = a.get_output();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The rows of `h`/`rows` saved as they are (no re-sorting), the way Excel saves them.
fn save_rows(w: &World, name: &str, h: &[String], rows: &[Vec<String>]) {
    let mut file = vec![h.to_vec()];
    file.extend(rows.iter().cloned());
    save_like_excel(&w.path(name), &file);
}

/// `--csv contacts.csv --preview --decisions FILE`, which must succeed; its stdout and stderr.
fn preview_with(w: &World, file: &str) -> (String, String) {
    out_err(
        &w.cmd()
            .args(["--csv", "contacts.csv", "--preview", "--decisions", file])
            .assert()
            .success(),
    )
}

fn run_csv(w: &World, csv: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    w.cmd()
        .args(["--csv", csv, "--yes", "--merge-timeout", "2"])
        .args(extra)
        .assert()
}

fn savepoint_decisions(w: &World) -> Value {
    crate::common::read_savepoint(&w.path("savepoint.json"))
        .map(|s| s["decisions"].clone())
        .unwrap_or(Value::Null)
}

/// A `not-dup` read by `--preview --decisions` holds in the README's next steps: the test sample
/// leaves that pair out (and says so), its run merges nothing of it, and the full review file
/// given with the smaller sample is read (rows of contacts outside it ignored), not refused.
#[test]
fn a_veto_read_by_the_preview_holds_in_the_sample_and_every_later_run() {
    let w = world(3, vec![shape(3)]);
    // The pair the sample would pick first, before any decision.
    let first = w
        .cmd()
        .args(["--json", "--create-test-sample", "--input", "contacts.csv"])
        .args(["--output", "probe.csv", "--size", "2"])
        .assert()
        .success();
    let probe: Value = serde_json::from_slice(&first.get_output().stdout).unwrap();
    let vetoed = probe["pairs"][0]["email"].as_str().unwrap().to_string();
    let (h, mut rows) = review(&w);
    let row = rows
        .iter()
        .position(|r| r[col(&h, "email")] == vetoed)
        .unwrap();
    rows[row][col(&h, "decision")] = "not-dup".into();
    save_rows(&w, "decided.csv", &h, &rows);

    preview_with(&w, "decided.csv");
    let decisions = savepoint_decisions(&w);
    assert_eq!(
        decisions.as_object().map(|d| d.len()),
        Some(1),
        "the preview recorded the veto: {decisions:#}"
    );

    let sample = w
        .cmd()
        .args(["--create-test-sample", "--input", "contacts.csv"])
        .args(["--output", "test.csv", "--size", "4"])
        .assert()
        .success();
    let (out, _) = out_err(&sample);
    assert!(out.contains("Left out 1 clean pair"), "{out}");
    assert!(out.contains(&vetoed) && out.contains("not-dup"), "{out}");
    let test_csv = std::fs::read_to_string(w.path("test.csv")).unwrap();
    assert!(!test_csv.contains(&vetoed), "{test_csv}");

    // The sample's run, with and without the full review file.
    run_csv(&w, "test.csv", &["--decisions", "decided.csv"]).success();
    run_csv(&w, "test.csv", &[]).success();
    // The whole export, without the file: the veto still holds.
    run_csv(&w, "contacts.csv", &[]).success();
    let pair = w
        .seed
        .pairs()
        .into_iter()
        .find(|(p, _)| {
            w.seed.rev_user(p).unwrap()["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(&vetoed))
        })
        .unwrap();
    let handled = merges_handled(&w.fake.requests());
    assert!(
        !handled
            .keys()
            .any(|(p, s)| { [p, s].contains(&&pair.0) || [p, s].contains(&&pair.1) }),
        "the vetoed pair was never merged: {handled:?}"
    );
    assert_eq!(handled.len(), 2, "the other two pairs merged once each");
}

/// A group merged over two runs, the decisions file re-sorted in between: the survivor still
/// takes the chosen ref after the last merge, and the report says what the journal says.
#[test]
fn a_group_adopts_its_ref_whatever_the_row_order_in_each_run() {
    let w = world(0, vec![shape(4)]);
    let g = shaped(&w)[0].clone();
    let (h, mut rows) = review(&w);
    decide(&h, &mut rows, &g[0], "keep", false);
    decide(&h, &mut rows, &g[1], "merge", true);
    decide(&h, &mut rows, &g[2], "merge", false);
    decide(&h, &mut rows, &g[3], "merge", false);
    let mine: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| g.contains(&r[col(&h, "rev_user_id")]))
        .cloned()
        .collect();
    save_rows(&w, "first.csv", &h, &mine);
    let mut reversed = mine.clone();
    reversed.reverse();
    save_rows(&w, "second.csv", &h, &reversed);

    // A canary of one merge, then the rest with the rows the other way round.
    w.run(&["--decisions", "first.csv", "--max-merges", "1"])
        .success();
    w.run(&["--decisions", "second.csv"]).success();

    assert_eq!(
        ext_ref(&w, &g[0]),
        seed_ref(&w, &g[1]),
        "the survivor took the chosen ref"
    );
    let handled = merges_handled(&w.fake.requests());
    assert_eq!(handled.len(), 3, "{handled:?}");
    assert!(handled.values().all(|n| *n == 1), "{handled:?}");
    let report = w.last_report();
    let grp = crate::groups::group_of(&report, &g[0]);
    assert_eq!(grp["outcome"], "merged", "{grp:#}");
    assert_eq!(grp["ref_adoption"], "adopted", "{grp:#}");
    assert_eq!(grp["adopts_ref"], seed_ref(&w, &g[1]));
}

/// `keep` on one row of a clean pair turns it round (the other merges into it) and records
/// nothing lasting; `skip` on one row of a group with the others blank is no skip of the whole
/// group (a later file merges it); `revoke` with `skip` in one file keeps the pair skipped.
#[test]
fn each_word_does_what_the_docs_say_row_by_row() {
    let w = world(2, vec![shape(3)]);
    let pairs = w.seed.pairs();
    let g = shaped(&w)[0].clone();
    let (h, rows) = review(&w);

    // keep on the user_ row of pair 0, the REVU- row blank: turned round.
    let mut one = rows.clone();
    decide(&h, &mut one, &pairs[0].1, "keep", false);
    // skip on one row of the group, the others blank: nothing merges, nothing lasting.
    decide(&h, &mut one, &g[2], "skip", false);
    // skip on pair 1: a lasting skip.
    decide(&h, &mut one, &pairs[1].0, "skip", false);
    save_rows(&w, "one.csv", &h, &one);
    w.run(&["--decisions", "one.csv"]).success();
    let handled = merges_handled(&w.fake.requests());
    assert_eq!(
        handled.keys().cloned().collect::<Vec<_>>(),
        [(pairs[0].1.clone(), pairs[0].0.clone())],
        "pair 0 merged into its user_ contact, nothing else"
    );
    let recorded = savepoint_decisions(&w);
    let recorded = recorded.as_object().expect("decisions recorded");
    assert_eq!(recorded.len(), 1, "only pair 1's skip lasts: {recorded:#?}");
    assert_eq!(
        recorded.values().next().unwrap()["decision"],
        "skip",
        "{recorded:#?}"
    );

    // A later file decides the group: not refused by a recorded skip.
    let mut two = rows.clone();
    decide(&h, &mut two, &g[0], "keep", false);
    decide(&h, &mut two, &g[1], "merge", false);
    decide(&h, &mut two, &g[2], "skip", false);
    // revoke and skip in one file: the pair is skipped anew, not released.
    decide(&h, &mut two, &pairs[1].0, "revoke", false);
    decide(&h, &mut two, &pairs[1].1, "skip", false);
    save_rows(&w, "two.csv", &h, &two);
    w.run(&["--decisions", "two.csv"]).success();
    let handled = merges_handled(&w.fake.requests());
    assert_eq!(handled.get(&(g[0].clone(), g[1].clone())), Some(&1));
    assert!(!handled.contains_key(&(g[0].clone(), g[2].clone())));

    // The next run without a file leaves pair 1 alone.
    w.run(&[]).success();
    let handled = merges_handled(&w.fake.requests());
    assert!(
        !handled.keys().any(|(p, s)| [p, s].contains(&&pairs[1].0)),
        "pair 1 stays skipped: {handled:?}"
    );
}

/// The review file comes back from Excel with every date in the user's locale (US and
/// European), `;`, a BOM and CRLF: no row is stale, the decisions merge. Every cell the tool
/// wrote that a spreadsheet would run as a formula carries the `'` escape.
#[test]
fn a_file_a_spreadsheet_saved_in_any_locale_keeps_its_decisions() {
    let w = world(2, vec![]);
    let pairs = w.seed.pairs();
    let (h, rows) = review(&w);
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "an unescaped cell in the review file: {cell:?}"
            );
        }
    }
    assert!(
        rows.iter()
            .any(|r| r[col(&h, "why")].starts_with("'--keep")),
        "the why column is escaped"
    );
    let reformat = |rows: &[Vec<String>], european: bool| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                for c in ["created_at", "updated_at"] {
                    let v = &r[col(&h, c)];
                    let t = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f")
                        .unwrap_or_else(|e| panic!("{v}: {e}"));
                    r[col(&h, c)] = if european {
                        t.format("%d.%m.%Y %H:%M").to_string()
                    } else {
                        t.format("%-m/%-d/%Y %-H:%M").to_string()
                    };
                }
                r[col(&h, "ticket_count")] = match r[col(&h, "ticket_count")].as_str() {
                    "" => String::new(),
                    n => format!("{n}.0"),
                };
                r
            })
            .collect()
    };
    // Pair 0 turned round in a US file, pair 1 left to the rule in a European one.
    let mut us = reformat(&rows, false);
    decide(&h, &mut us, &pairs[0].1, "keep", false);
    save_rows(&w, "us.csv", &h, &us);
    let (out, err) = preview_with(&w, "us.csv");
    assert!(out.contains("0 stale"), "{out}{err}");
    assert!(!out.contains("stale, left alone"), "{out}");

    let eu = reformat(&rows, true);
    save_rows(&w, "eu.csv", &h, &eu);
    w.run(&["--decisions", "us.csv", "--max-merges", "1"])
        .success();
    w.run(&["--decisions", "eu.csv"]).success();
    let handled = merges_handled(&w.fake.requests());
    assert_eq!(
        handled.get(&(pairs[0].1.clone(), pairs[0].0.clone())),
        Some(&1)
    );
    assert_eq!(
        handled.get(&(pairs[1].0.clone(), pairs[1].1.clone())),
        Some(&1)
    );
}

/// A `not-dup` given after the pair was merged: the preview, `--status` and the run name the
/// merged contact and the `--restore` command that undoes it; the run exits 1.
#[test]
fn a_veto_after_the_merge_is_reported_with_the_command_that_undoes_it() {
    let w = world(2, vec![]);
    let pairs = w.seed.pairs();
    let (h, mut rows) = review(&w);
    w.run(&[]).success();
    decide(&h, &mut rows, &pairs[0].0, "not-dup", false);
    save_rows(&w, "late.csv", &h, &rows);

    let (out, err) = preview_with(&w, "late.csv");
    let secondary = devrev_merge::detect::display_id(&pairs[0].1);
    assert!(out.contains("after the merge"), "{out}{err}");
    assert!(out.contains(&secondary), "{out}");
    assert!(out.contains("devrev-merge --restore backups"), "{out}");

    let status = w.cmd().args(["--status"]).assert().success();
    let (out, _) = out_err(&status);
    assert!(
        out.contains("after the merge") && out.contains(&secondary),
        "{out}"
    );

    let run = w.run(&[]).code(1);
    let (out, err) = out_err(&run);
    assert!(err.contains("devrev-merge --restore backups"), "{out}{err}");
    let report = w.last_report();
    assert_eq!(
        report["late_vetoes"][0]["merged"][0]["secondary"],
        pairs[0].1.as_str()
    );
}

/// A canary with decisions says which decided groups it reached; groups it never started are
/// "not started", not "in progress"; clean pairs are not counted among the groups.
#[test]
fn a_canary_with_decisions_counts_what_it_did() {
    let w = world(2, vec![shape(3), shape(3)]);
    let (h, mut rows) = review(&w);
    for g in shaped(&w) {
        decide(&h, &mut rows, &g[0], "keep", false);
        decide(&h, &mut rows, &g[1], "merge", false);
        decide(&h, &mut rows, &g[2], "merge", false);
    }
    save_rows(&w, "decided.csv", &h, &rows);
    let run = w.run(&["--decisions", "decided.csv", "--max-merges", "2"]);
    let (out, err) = out_err(&run.success());
    assert!(
        err.contains("Canary (--max-merges 2): 0 of 2 decided groups reached"),
        "{out}{err}"
    );
    assert!(err.contains("Decided groups:  2 not started"), "{err}");
    let report = w.last_report();
    let outcomes: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["clean_pair"] != true)
        .map(|g| g["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["not_started", "not_started"], "{report:#}");
}
