//! The review file `--preview` writes and the decisions a person types into it
//! (`--preview --decisions FILE`): every group in one spreadsheet, refusals with their line.

use std::path::{Path, PathBuf};

use devrev_fake::seed::{GenSpec, Seed};

use crate::common::{mode, scrubbed_cmd};

fn world(dir: &Path) -> Seed {
    let seed = Seed::generate(&GenSpec {
        pairs: 3,
        review_groups: 4,
        singles: 2,
        ..GenSpec::default()
    });
    std::fs::write(dir.join("contacts.csv"), seed.contacts_csv()).unwrap();
    seed
}

fn preview(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = scrubbed_cmd(dir)
        .args(["--csv", "contacts.csv", "--preview"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn review_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("reports"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("review-")
        })
        .collect();
    v.sort();
    v
}

/// The review file as records (header first).
pub fn records(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.strip_prefix('\u{feff}').expect("a BOM for Excel");
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Writes `rows` as Excel in a `;` locale saves them: BOM, `;`, CRLF, every field quoted.
pub fn save_like_excel(path: &Path, rows: &[Vec<String>]) {
    let mut out = String::from("\u{feff}");
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
            .collect();
        out.push_str(&cells.join(";"));
        out.push_str("\r\n");
    }
    std::fs::write(path, out).unwrap();
}

pub fn col(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap()
}

#[test]
fn preview_writes_one_row_per_contact_of_every_group_with_a_proposal() {
    let dir = tempfile::tempdir().unwrap();
    world(dir.path());
    let (code, out, err) = preview(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    let files = review_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0]), 0o600);
    assert!(out.contains("Review file (decide every group"), "{out}");
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    assert!(raw.contains("\r\n"), "CRLF for spreadsheets");
    let rows = records(&files[0]);
    assert_eq!(
        rows[0],
        [
            "group",
            "kind",
            "email",
            "rev_user_id",
            "display_id",
            "external_ref",
            "ref_kind",
            "display_name",
            "created_at",
            "updated_at",
            "ticket_count",
            "proposed",
            "why",
            "decision",
            "adopt_ref",
            "note",
            "recorded",
            "verified",
            "state",
            "account"
        ]
    );
    let h = &rows[0];
    let kinds: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r[col(h, "kind")].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "clean pair").count(),
        6,
        "3 pairs, 2 rows each"
    );
    assert!(
        kinds.iter().any(|k| *k != "clean pair"),
        "needs-review groups too"
    );
    // Every group with a proposal has exactly one keep, and its why names the rule.
    let mut by_group = std::collections::BTreeMap::<&str, Vec<&Vec<String>>>::new();
    for r in &rows[1..] {
        by_group.entry(&r[0]).or_default().push(r);
    }
    for (g, members) in &by_group {
        let keeps: Vec<_> = members
            .iter()
            .filter(|r| r[col(h, "proposed")] == "keep")
            .collect();
        assert!(keeps.len() <= 1, "{g}");
        if let Some(k) = keeps.first() {
            assert!(
                !k[col(h, "why")].is_empty(),
                "{g}: a keep says which rule decided"
            );
        }
    }
    // The same export gives the same group ids.
    let (code, _, _) = preview(dir.path(), &[]);
    assert_eq!(code, 0);
    let again = records(&review_files(dir.path())[1]);
    let ids = |rs: &[Vec<String>]| rs.iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&rows), ids(&again));
}

#[test]
fn decisions_saved_by_a_spreadsheet_give_the_plan_they_say() {
    let dir = tempfile::tempdir().unwrap();
    world(dir.path());
    assert_eq!(preview(dir.path(), &[]).0, 0);
    let rows = records(&review_files(dir.path())[0]);
    let h = rows[0].clone();
    let mut body: Vec<Vec<String>> = rows[1..].to_vec();
    // A needs-review group with three contacts: keep the second, merge the others.
    let g = body
        .iter()
        .map(|r| r[0].clone())
        .find(|g| body.iter().filter(|r| &r[0] == g).count() == 3)
        .expect("a group of three");
    let members: Vec<usize> = (0..body.len()).filter(|i| body[*i][0] == g).collect();
    body[members[1]][col(&h, "decision")] = "keep".into();
    body[members[0]][col(&h, "decision")] = "Merge".into();
    body[members[2]][col(&h, "decision")] = "merge".into();
    // The first clean pair: not a duplicate after all.
    body[0][col(&h, "decision")] = "not-dup".into();
    // Re-sorted by email, one unrelated row deleted.
    body.sort_by(|a, b| a[col(&h, "email")].cmp(&b[col(&h, "email")]));
    let kept_id = body
        .iter()
        .find(|r| r[0] == g && r[col(&h, "decision")] == "keep")
        .unwrap()[col(&h, "display_id")]
    .clone();
    let mut file = vec![h.clone()];
    file.extend(body);
    save_like_excel(&dir.path().join("decided.csv"), &file);

    let (code, out, err) = preview(dir.path(), &["--decisions", "decided.csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Decisions from decided.csv:"), "{out}");
    assert!(out.contains("1 not duplicates"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&g))
        .unwrap_or_else(|| panic!("{g}: {out}"));
    assert!(line.contains(&format!("keep {kept_id} <- ")), "{line}");
    assert!(line.contains("[decided]"), "{line}");
    // Two clean pairs still merge by the --keep rule.
    assert_eq!(out.matches("[clean pair, --keep rule]").count(), 2, "{out}");
}

#[test]
fn bad_decisions_are_refused_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    world(dir.path());
    assert_eq!(preview(dir.path(), &[]).0, 0);
    let rows = records(&review_files(dir.path())[0]);
    let h = rows[0].clone();
    let d = col(&h, "decision");
    let mut body: Vec<Vec<String>> = rows[1..].to_vec();
    // Line 2 and 3: the first clean pair, both keep. Line 4: an unknown word.
    body[0][d] = "keep".into();
    body[1][d] = "keep".into();
    body[2][d] = "delete".into();
    // An id that is in no group (ignored, not a problem); adopt_ref on a row that is not
    // merged (the first pair's primary).
    let mut stranger = body[4].clone();
    stranger[col(&h, "rev_user_id")] = "don:identity:dvrv-us-1:devo/x:revu/nobody".into();
    body.push(stranger);
    body[0][col(&h, "adopt_ref")] = "yes".into();
    let mut file = vec![h.clone()];
    file.extend(body);
    save_like_excel(&dir.path().join("bad.csv"), &file);
    let reports = || {
        std::fs::read_dir(dir.path().join("reports"))
            .unwrap()
            .count()
    };
    let before = reports();
    let (code, out, err) = preview(dir.path(), &["--decisions", "bad.csv"]);
    assert_eq!(code, 65, "{out}{err}");
    assert_eq!(
        reports(),
        before,
        "a refused preview writes no plan or review file"
    );
    for want in [
        "bad.csv: ",
        "lines 2, 3: two keep in group",
        "line 4: \"delete\" is not a decision",
        "line 2: adopt_ref on",
    ] {
        assert!(err.contains(want), "lacks {want:?}: {err}");
    }
    assert!(out.is_empty() || !out.contains("Decisions from"), "{out}");
}

#[test]
fn a_row_whose_contact_changed_since_the_export_leaves_its_group_alone() {
    let dir = tempfile::tempdir().unwrap();
    world(dir.path());
    assert_eq!(preview(dir.path(), &[]).0, 0);
    let rows = records(&review_files(dir.path())[0]);
    let h = rows[0].clone();
    let mut body: Vec<Vec<String>> = rows[1..].to_vec();
    body[0][col(&h, "decision")] = "keep".into();
    body[1][col(&h, "decision")] = "merge".into();
    // The export says the secondary was updated after the file was written.
    body[1][col(&h, "updated_at")] = "2020-01-01 00:00:00.000".into();
    let group = body[0][0].clone();
    let mut file = vec![h];
    file.extend(body);
    save_like_excel(&dir.path().join("old.csv"), &file);
    let (code, out, err) = preview(dir.path(), &["--decisions", "old.csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 stale"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&group) && l.contains("stale"))
        .unwrap();
    assert!(line.contains("updated_at was"), "{line}");
}
