//! Detection end to end: `--preview` (text, `--json`, the plan file), malformed CSVs,
//! `--create-test-sample`, and `--check-live` against the fake DevRev.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value, json};

use crate::common::{mode, scrubbed_cmd};
use devrev_fake::fake::{FakeOptions, FakeServer};
use devrev_fake::seed::{GenSpec, GroupKind, Seed};

/// The binary with a scrubbed environment in `dir`; no token and no DevRev unless given.
fn cmd(dir: &Path) -> Command {
    let mut c = scrubbed_cmd(dir);
    // Pacing is tested elsewhere; here it would only slow the live checks down.
    c.env("RATE_LIMIT_CALLS", "6000");
    Command::from_std(c)
}

fn seed(pairs: usize) -> Seed {
    Seed::generate(&GenSpec {
        pairs,
        review_groups: 4,
        singles: 6,
        ..GenSpec::default()
    })
}

fn plan_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("reports"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            // The JSON reports, not the HTML pages next to them.
            n.starts_with("plan-") && n.ends_with(".json")
        })
    });
    v.sort();
    v
}

fn only_plan(dir: &Path) -> (PathBuf, Value) {
    let files = plan_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let v = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    (files[0].clone(), v)
}

#[test]
fn preview_summarizes_lists_and_saves_the_plan_offline() {
    let s = seed(12);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), s.contacts_csv()).unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "contacts.csv", "--preview"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let rows = s.rev_users.len();
    assert!(
        text.contains("Plan for contacts.csv: the REVU- contact survives (--keep revu)"),
        "{text}"
    );
    let summary_line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| l[l.find(label).unwrap() + label.len()..].trim().to_string())
            .unwrap_or_else(|| panic!("no {label:?} line in\n{text}"))
    };
    assert_eq!(summary_line("rows read"), rows.to_string());
    assert_eq!(summary_line("clean pairs"), "12");
    assert_eq!(
        summary_line("needs review"),
        format!(
            "4 group(s), {} row(s)",
            s.groups
                .iter()
                .filter(|g| g.kind != GroupKind::CleanPair)
                .map(|g| g.members.len())
                .sum::<usize>()
        )
    );
    assert!(
        text.contains("clean pairs") && text.contains("Clean pairs (12):"),
        "{text}"
    );
    assert!(
        text.contains("Estimated merge run:") && text.contains("at 6000 calls per 60 s"),
        "{text}"
    );
    for g in &s.groups {
        assert!(text.contains(&g.email), "{} missing from\n{text}", g.email);
    }
    assert!(text.contains("several user_ rows, no REVU-"), "{text}");
    assert!(text.contains("one REVU- and several user_ rows"), "{text}");
    assert!(text.contains("a -drop- ref"), "{text}");

    let (path, plan) = only_plan(tmp.path());
    assert!(text.contains(&format!(
        "Plan written to reports/{}",
        path.file_name().unwrap().to_string_lossy()
    )));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&tmp.path().join("reports")), 0o700);
    assert_eq!(plan["rows_read"], json!(rows));
    // Exactly the generator's clean pairs, REVU- primary, user_ secondary.
    let got: BTreeSet<(String, String)> = plan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["primary"]["rev_user_id"].as_str().unwrap().to_string(),
                p["secondary"]["rev_user_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = s.pairs().into_iter().collect();
    assert_eq!(got, want);
    // Every generated review group, with its reason.
    for g in s.groups.iter().filter(|g| g.kind != GroupKind::CleanPair) {
        let group = plan["needs_review"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["email"] == json!(g.email))
            .unwrap_or_else(|| panic!("{} not in needs_review", g.email));
        let reason = match g.kind {
            GroupKind::TwoUser | GroupKind::ThreeUser => "several_user",
            GroupKind::RevuTwoUser | GroupKind::Shaped => "revu_with_several_user",
            GroupKind::DropRef => "drop_ref",
            GroupKind::CleanPair => unreachable!(),
        };
        assert_eq!(group["reason"], json!(reason), "{group}");
        let members: BTreeSet<String> = group["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["rev_user_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(members, g.members.iter().cloned().collect::<BTreeSet<_>>());
    }
    let pairs = plan["pairs"].as_array().unwrap().len() as u64;
    let review_rows: u64 = plan["needs_review"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["contacts"].as_array().unwrap().len() as u64)
        .sum();
    let singles = &plan["singles"];
    let single_rows: u64 = ["revu", "user", "drop", "other"]
        .iter()
        .map(|k| singles[*k].as_u64().unwrap())
        .sum();
    let no_email = plan["no_email"].as_array().unwrap().len() as u64;
    assert_eq!(
        2 * pairs + review_rows + single_rows + no_email,
        rows as u64
    );
    assert_eq!(plan["estimate"]["pairs"], json!(12));
    // The README's formula, from the CSV's ticket counts (default --keep revu, scope secondary).
    let expected: u64 = plan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let t = |c: &Value| c["ticket_count"].as_u64().unwrap_or(0);
            let (tp, ts) = (t(&p["primary"]), t(&p["secondary"]));
            6 + 2 * (tp + ts).div_ceil(100).max(1) + ts
        })
        .sum::<u64>()
        // Validate's batched reads: one rev-users.list per 20 contacts, per run.
        + (2 * 12u64).div_ceil(20);
    assert_eq!(plan["estimate"]["api_calls"], json!(expected));
    // Its calls at the configured pace, plus the wait for the last merge to apply: twice
    // the tests' 10 ms backoff (the others are spent preparing the next pairs).
    let wait = plan["estimate"]["merge_wait_s"].as_f64().unwrap();
    assert!((wait - 0.02).abs() < 1e-9, "{wait}");
    let seconds = plan["estimate"]["seconds"].as_f64().unwrap();
    let want = expected as f64 * 60.0 / 6000.0 + wait;
    assert!((seconds - want).abs() < 1e-9, "{seconds} vs {want}");
    // The top of the range hides no wait: one per pair.
    let high = plan["estimate"]["seconds_high"].as_f64().unwrap();
    let calls_high = plan["estimate"]["api_calls_high"].as_f64().unwrap();
    let want_high = calls_high * 60.0 / 6000.0 + 12.0 * wait;
    assert!((high - want_high).abs() < 1e-9, "{high} vs {want_high}");
}

#[test]
fn preview_json_prints_exactly_the_plan_file_and_touches_nothing() {
    let s = seed(3);
    // A fake with a token configured: the preview must still make no call at all.
    let fake = FakeServer::start(FakeOptions {
        seed: s.clone(),
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), s.contacts_csv()).unwrap();
    let out = cmd(tmp.path())
        .env("DEVREV_BASE_URL", fake.base_url())
        .env("DEVREV_API_TOKEN", fake.token())
        .args([
            "--csv",
            "contacts.csv",
            "--preview",
            "--json",
            "--report-dir",
            "out/plans",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let mut files: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("out/plans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // The history page and its journal, kept across commands in the report folder.
    let history: Vec<PathBuf> = files
        .iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("history.")
        })
        .cloned()
        .collect();
    assert_eq!(history.len(), 2, "{files:?}");
    files.retain(|p| !history.contains(p));
    // The plan's page, the plan, and the review file beside them.
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(
        files[0],
        files[1].with_extension("html"),
        "the page beside the plan"
    );
    assert!(
        files[2]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("review-")
    );
    assert_eq!(
        out.stdout,
        std::fs::read(&files[1]).unwrap(),
        "stdout is the plan file"
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["kind"], json!("devrev-merge plan"));
    assert_eq!(plan["pairs"].as_array().unwrap().len(), 3);
    assert!(plan.get("live_check").is_none());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Plan written to out/plans/plan-"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTML report: out/plans/plan-"));
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[test]
fn keep_user_and_email_domain_shape_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = "REV_USER_ID,EMAIL,EXTERNAL_REF,TICKET_COUNT\n\
               r1,a@keep.com,REVU-r1,1\nu1,A@Keep.com ,user_1,2\n\
               r2,b@other.com,REVU-r2,1\nu2,b@other.com,user_2,2\n";
    std::fs::write(tmp.path().join("c.csv"), csv).unwrap();
    let out = cmd(tmp.path())
        .args([
            "--csv",
            "c.csv",
            "--preview",
            "--json",
            "--keep",
            "user",
            "--email-domain",
            "@KEEP.com",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(plan["email_domain"], json!("keep.com"));
    assert_eq!(plan["outside_domain"], json!(2));
    assert_eq!(plan["pairs"].as_array().unwrap().len(), 1);
    assert_eq!(plan["pairs"][0]["email"], json!("a@keep.com"));
    assert_eq!(plan["pairs"][0]["primary"]["external_ref"], json!("user_1"));
    assert_eq!(
        plan["pairs"][0]["secondary"]["external_ref"],
        json!("REVU-r1")
    );
    assert_eq!(plan["estimate"]["keep"], json!("user"));
}

#[test]
fn exports_with_odd_but_valid_formatting_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    // BOM, CRLF, lower-case headers in another order, an extra column, quoted commas, quotes
    // and a newline, an empty TICKET_COUNT, and the same id on two rows.
    let csv = "\u{feff}ticket_count,Notes,external_ref,Email,Display_Name,rev_user_id\r\n\
               ,\"says \"\"hi\"\", twice\r\nand more\",REVU-r1,x@y.com,\"Doe, Jane\",r1\r\n\
               4,,user_1,X@Y.COM,Jane,u1\r\n\
               1,,user_9,dup@y.com,D,d1\r\n\
               1,,REVU-d1,dup@y.com,D,d1\r\n";
    std::fs::write(tmp.path().join("c.csv"), csv).unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "c.csv", "--preview", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan: Value = serde_json::from_slice(&out).unwrap();
    let pair = &plan["pairs"][0];
    assert_eq!(pair["primary"]["display_name"], json!("Doe, Jane"));
    assert_eq!(pair["primary"]["ticket_count"], Value::Null);
    assert_eq!(pair["primary"]["line"], json!(2));
    assert_eq!(
        pair["secondary"]["line"],
        json!(4),
        "the quoted newline spans line 3"
    );
    assert_eq!(pair["secondary"]["ticket_count"], json!(4));
    assert_eq!(plan["needs_review"][0]["reason"], json!("duplicate_id"));
    assert_eq!(
        plan["needs_review"][0]["contacts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Malformed exports: exit 65, a message naming the file, the line and the column, and no
/// plan written.
#[test]
fn malformed_csvs_stop_with_exit_65_and_say_where() {
    const H: &str = "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT\n";
    let ok = "r1,Jane,j@x.com,REVU-r1,,2024-12-03 15:16:07.123,2024-12-03 15:16:07.123,1\n";
    let many_bad: String = (0..25)
        .map(|i| format!("r{i},J,j{i}@x.com,REVU-{i},,,,lots\n"))
        .collect();
    let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        ("empty file", vec![], vec!["bad.csv: no contacts: the file is empty".into()]),
        ("header only", H.as_bytes().to_vec(), vec!["bad.csv: no contacts: the file has a header but no rows".into()]),
        (
            "missing columns",
            b"REV_USER_ID,DISPLAY_NAME,FULL_NAME\nr1,J,\n".to_vec(),
            vec!["bad.csv: line 1: missing required columns EMAIL, EXTERNAL_REF".into()],
        ),
        (
            "a column twice",
            b"REV_USER_ID,EMAIL,EXTERNAL_REF,email\nr1,a,b,c\n".to_vec(),
            vec!["bad.csv: line 1: column EMAIL appears twice (columns 2 and 4)".into()],
        ),
        (
            "too few fields",
            format!("{H}{ok}r2,J,j2@x.com\n").into_bytes(),
            vec!["bad.csv: 1 problem".into(), "line 3, 3 fields but the header has 8".into()],
        ),
        (
            "too many fields",
            format!("{H}{ok}{}", ok.replace("\n", ",extra\n")).into_bytes(),
            vec!["line 3, 9 fields but the header has 8".into()],
        ),
        (
            "ticket count not a number",
            format!("{H}{}", ok.replace(",1\n", ",1.5\n")).into_bytes(),
            vec!["line 2, column 8 (TICKET_COUNT): \"1.5\" is not a whole number".into()],
        ),
        (
            "negative ticket count",
            format!("{H}{}", ok.replace(",1\n", ",-1\n")).into_bytes(),
            vec!["line 2, column 8 (TICKET_COUNT): \"-1\" is not a whole number".into()],
        ),
        (
            "not UTF-8",
            [H.as_bytes(), b"r1,J\xE9r\xF4me,j@x.com,REVU-r1,,,,1\n"].concat(),
            vec!["line 2, column 2 (DISPLAY_NAME): not valid UTF-8".into()],
        ),
        (
            "empty id",
            format!("{H},J,j@x.com,REVU-r1,,,,1\n").into_bytes(),
            vec!["line 2, column 1 (REV_USER_ID): empty".into()],
        ),
        (
            "lines counted in a CRLF file after a quoted newline and a blank line",
            format!("{H}{ok}r2,\"two\r\nlines\",j2@x.com,REVU-r2,,,,1\r\n\r\nr3,J,j3@x.com,REVU-r3,,,,x\r\n")
                .into_bytes(),
            vec!["line 6, column 8 (TICKET_COUNT): \"x\" is not a whole number".into()],
        ),
        (
            "more than twenty problems",
            format!("{H}{many_bad}").into_bytes(),
            vec![
                "bad.csv: 25 problems in the CSV; nothing was done".into(),
                "line 21, column 8 (TICKET_COUNT)".into(),
                "... and 5 more (only the first 20 are listed)".into(),
            ],
        ),
    ];
    for (what, bytes, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("bad.csv"), &bytes).unwrap();
        let out = cmd(tmp.path())
            .args(["--csv", "bad.csv", "--preview"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{what}: {stderr}");
        for e in &expected {
            assert!(
                stderr.contains(e.as_str()),
                "{what}: expected {e:?} in\n{stderr}"
            );
        }
        if what == "more than twenty problems" {
            assert!(!stderr.contains("line 22,"), "{stderr}");
        }
        assert!(out.stdout.is_empty(), "{what}");
        assert!(
            plan_files(tmp.path()).is_empty(),
            "{what}: no plan for a bad file"
        );
    }
    // A pipe cannot be read twice.
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "/dev/stdin", "--preview"])
        .write_stdin(format!("{H}{ok}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/stdin: cannot be read twice"));
    // A file that is not there.
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "nope.csv", "--preview"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the contacts CSV nope.csv"));
}

// ---- --create-test-sample -----------------------------------------------------------------

const SAMPLE_INPUT: &str = "\
EMAIL,REV_USER_ID,EXTERNAL_REF,TICKET_COUNT,Comment
a@x.com,ra,REVU-ra,5,\"big, \"\"busy\"\"\"
A@x.com,ua,user_a,9,
b@x.com,rb,REVU-rb,0,\"two
lines\"
b@x.com,ub,user_b,1,
c@x.com,rc,REVU-rc,0,
c@x.com,uc,user_c,0,
d@x.com,rd,REVU-rd,,
d@x.com,ud,user_d,0,
e@x.com,u1,user_e1,0,
e@x.com,u2,user_e2,0,
single@x.com,rs,REVU-rs,0,
";

fn records(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn sample_holds_the_original_rows_of_the_quietest_whole_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), SAMPLE_INPUT).unwrap();
    let out = cmd(tmp.path())
        .args([
            "--create-test-sample",
            "--input",
            "contacts.csv",
            "--output",
            "test.csv",
            "--size",
            "4",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(
            "Wrote 4 rows (2 clean pair(s), the fewest tickets of 4; seed 42) to test.csv"
        ),
        "{text}"
    );
    assert!(
        text.contains("c@x.com") && text.contains("b@x.com"),
        "{text}"
    );
    let sample_path = tmp.path().join("test.csv");
    assert_eq!(mode(&sample_path), 0o600);
    let sample = std::fs::read_to_string(&sample_path).unwrap();
    let input = records(SAMPLE_INPUT);
    let got = records(&sample);
    assert_eq!(got[0], input[0], "same header, same columns, same order");
    // c (0 tickets) and b (1 ticket): d has an unknown count, a has 14, e is not a pair.
    let want: Vec<Vec<String>> = input
        .iter()
        .filter(|r| r[0] == "b@x.com" || r[0] == "c@x.com")
        .cloned()
        .collect();
    assert_eq!(
        &got[1..],
        &want[..],
        "the original rows, every field, in file order"
    );
    assert!(got.iter().any(|r| r[4] == "two\nlines"));

    // The sample previews as exactly those two pairs.
    let out = cmd(tmp.path())
        .args(["--csv", "test.csv", "--preview", "--json"])
        .assert()
        .success();
    let plan: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let emails: Vec<&str> = plan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["b@x.com", "c@x.com"]);
    assert!(plan["needs_review"].as_array().unwrap().is_empty());

    // Deterministic: the same seed gives the same bytes (overwriting needs --force).
    let first = std::fs::read(&sample_path).unwrap();
    cmd(tmp.path())
        .args([
            "--create-test-sample",
            "--input",
            "contacts.csv",
            "--output",
            "test.csv",
            "--size",
            "4",
            "--force",
        ])
        .assert()
        .success();
    assert_eq!(std::fs::read(&sample_path).unwrap(), first);
}

#[test]
fn sample_refuses_odd_sizes_too_few_pairs_and_overwriting() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), SAMPLE_INPUT).unwrap();
    let run = |args: &[&str]| {
        let mut full = vec!["--create-test-sample", "--input", "contacts.csv"];
        full.extend_from_slice(args);
        cmd(tmp.path()).args(full).output().unwrap()
    };
    let out = run(&["--output", "t.csv", "--size", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size must be an even number"));
    let out = run(&["--output", "t.csv", "--size", "10"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "contacts.csv has only 4 clean pair(s), but --size 10 needs 5; use --size 8 or less"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !tmp.path().join("t.csv").exists(),
        "nothing written on an error"
    );
    std::fs::write(tmp.path().join("t.csv"), "precious").unwrap();
    let out = run(&["--output", "t.csv", "--size", "2"]);
    assert_eq!(out.status.code(), Some(73));
    assert!(String::from_utf8_lossy(&out.stderr).contains("t.csv already exists; add --force"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("t.csv")).unwrap(),
        "precious"
    );
    let out = run(&["--output", "contacts.csv", "--size", "2", "--force"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the input file itself"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("contacts.csv")).unwrap(),
        SAMPLE_INPUT
    );
}

// ---- --check-live -------------------------------------------------------------------------

#[test]
fn check_live_moves_pairs_devrev_would_refuse_to_needs_review() {
    let s = seed(8);
    let pairs = s.pairs();
    let fake = FakeServer::start(FakeOptions {
        seed: s.clone(),
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), s.contacts_csv()).unwrap();
    // DevRev's state drifts after the export, one way per pair.
    let set = |id: &str, f: &dyn Fn(&mut Value)| {
        fake.with_state(|st| f(&mut st.rev_users.get_mut(id).unwrap().json))
    };
    fake.with_state(|st| {
        st.rev_users.remove(&pairs[0].1);
    });
    set(&pairs[1].1, &|u| u["state"] = json!("deactivated"));
    set(&pairs[2].0, &|u| {
        u["email"] = json!("someone.else@example.com")
    });
    let drop_ref = format!(
        "{}-drop-{}",
        s.rev_user(&pairs[3].1).unwrap()["external_ref"]
            .as_str()
            .unwrap(),
        pairs[3].1
    );
    set(&pairs[3].1, &|u| u["external_ref"] = json!(drop_ref));
    set(&pairs[4].1, &|u| u["external_ref"] = json!("user_changed"));
    set(&pairs[5].0, &|u| u["is_verified"] = json!(true));
    set(&pairs[5].1, &|u| u["is_verified"] = json!(false));
    let expected = [
        (0, "live_not_found"),
        (1, "live_not_active"),
        (2, "live_email_changed"),
        (3, "live_already_merged"),
        (4, "live_ref_changed"),
        (5, "live_unverified_into_verified"),
    ];

    let out = cmd(tmp.path())
        .env("DEVREV_BASE_URL", fake.base_url())
        .env("DEVREV_API_TOKEN", fake.token())
        .args([
            "--csv",
            "contacts.csv",
            "--preview",
            "--check-live",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan: Value = serde_json::from_slice(&out).unwrap();
    let kept: BTreeSet<String> = plan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["secondary"]["rev_user_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kept,
        [pairs[6].1.clone(), pairs[7].1.clone()]
            .into_iter()
            .collect()
    );
    for (i, reason) in expected {
        let group = plan["needs_review"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| {
                g["contacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["rev_user_id"] == json!(pairs[i].1))
            })
            .unwrap_or_else(|| panic!("pair {i} not moved"));
        assert_eq!(group["reason"], json!(reason), "pair {i}: {group}");
        assert!(!group["detail"].as_str().unwrap().is_empty());
    }
    let live = &plan["live_check"];
    assert_eq!(live["checked"], json!(8));
    assert_eq!(live["passed"], json!(2));
    assert_eq!(live["refused"], json!(6));
    assert_eq!(live["errors"], json!(0));
    // Live ticket counts are what DevRev lists now.
    let passed: Vec<&Value> = live["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == json!("passed"))
        .collect();
    assert_eq!(passed.len(), 2, "{live}");
    for r in passed {
        let p = r["primary"].as_str().unwrap();
        let sec = r["secondary"].as_str().unwrap();
        let (tp, ts) = fake.with_state(|st| {
            (
                st.tickets_reported_by(p).len(),
                st.tickets_reported_by(sec).len(),
            )
        });
        assert_eq!(r["live_tickets"]["primary"], json!(tp));
        assert_eq!(r["live_tickets"]["secondary"], json!(ts));
    }
    // Read-only: nothing but reads reached DevRev.
    let paths: BTreeSet<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains("/rev-users.list") && paths.contains("/works.list"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .all(|p| p == "/rev-users.get" || p == "/rev-users.list" || p == "/works.list"),
        "{paths:?}"
    );
    assert!(fake.with_state(|st| st.merges.is_empty()));
}

#[test]
fn check_live_needs_a_token_and_stops_when_refused_access() {
    let s = seed(2);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), s.contacts_csv()).unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DevRev API token"));
    assert!(plan_files(tmp.path()).is_empty());

    let fake = FakeServer::start(FakeOptions {
        seed: s,
        forbidden: true,
        ..FakeOptions::default()
    });
    let out = cmd(tmp.path())
        .env("DEVREV_BASE_URL", fake.base_url())
        .env("DEVREV_API_TOKEN", fake.token())
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(plan_files(tmp.path()).is_empty());
    let everything = std::fs::read_dir(tmp.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(!everything.contains(&fake.token()), "the token leaked");
}

#[test]
fn check_live_files_pairs_it_cannot_check_and_exits_1() {
    let s = seed(2);
    let fake = FakeServer::start(FakeOptions {
        seed: s.clone(),
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    // A pair whose ids DevRev rejects (400 invalid_id): the check fails for that pair only.
    let csv = format!(
        "{}not-a-don-1,X,bad@x.com,REVU-bad1,,,,0\nnot-a-don-2,X,bad@x.com,user_bad2,,,,0\n",
        s.contacts_csv()
    );
    std::fs::write(tmp.path().join("contacts.csv"), csv).unwrap();
    let out = cmd(tmp.path())
        .env("DEVREV_BASE_URL", fake.base_url())
        .env("DEVREV_API_TOKEN", fake.token())
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 pair(s) could not be checked live"),
        "{stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 still hold, 0 refused, 1 could not be checked"),
        "{text}"
    );
    let (_, plan) = only_plan(tmp.path());
    assert_eq!(plan["pairs"].as_array().unwrap().len(), 2);
    let group = plan["needs_review"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["email"] == json!("bad@x.com"))
        .unwrap();
    assert_eq!(group["reason"], json!("live_check_failed"));
    assert!(group["detail"].as_str().unwrap().contains("400"), "{group}");
}

#[test]
fn exports_from_excel_and_missing_files_get_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // Excel in a `;` locale: BOM, CRLF, semicolons. Nothing is written.
    std::fs::write(
        dir.path().join("excel.csv"),
        "\u{feff}REV_USER_ID;DISPLAY_NAME;EMAIL;EXTERNAL_REF\r\nid1;A;a@x.com;REVU-1\r\n",
    )
    .unwrap();
    let out = cmd(dir.path())
        .args(["--csv", "excel.csv", "--preview"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("excel.csv: line 1"), "{err}");
    assert!(err.contains("separated by semicolons"), "{err}");
    assert!(
        !dir.path().join("reports").exists(),
        "no plan from a refused file"
    );

    // Headers as a spreadsheet writes them are read.
    std::fs::write(
        dir.path().join("titled.csv"),
        "Rev User Id,Email,External Ref\r\nid1,a@x.com,REVU-1\r\nid2,a@x.com,user_1\r\n",
    )
    .unwrap();
    let out = cmd(dir.path())
        .args(["--csv", "titled.csv", "--preview", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["pairs"].as_array().map(Vec::len), Some(1), "{plan}");

    // A missing CSV points at the command that builds one.
    let out = cmd(dir.path())
        .args(["--csv", "contacts.csv", "--preview"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("devrev-merge --export-contacts contacts.csv"),
        "{err}"
    );
}
