//! `--demo` end to end from the built binary: its exit code, its output's key lines, and that
//! it writes nothing outside its own folder (nor lets the caller's token or `.env` in).

use std::path::Path;

use crate::common::scrubbed_cmd;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn demo_runs_the_whole_flow_inside_its_own_folder() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The caller's own settings must not reach the demo's steps.
    std::fs::write(
        cwd.path().join(".env"),
        "DEVREV_BASE_URL=https://leak.invalid\n",
    )
    .unwrap();
    let out = scrubbed_cmd(cwd.path())
        .env("TMPDIR", tmp.path())
        .env("DEVREV_API_TOKEN", "callers-secret-token")
        .arg("--demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "$ devrev-merge --test-api",
        "All checks passed.",
        "$ devrev-merge --export-contacts contacts.csv",
        "$ devrev-merge --csv contacts.csv --preview",
        "$ devrev-merge --csv contacts.csv --preview --check-live",
        "$ devrev-merge --status",
        "decided.csv (the columns that decide",
        "$ devrev-merge --create-test-sample --input contacts.csv --output sample.csv",
        "$ devrev-merge --csv sample.csv",
        "$ devrev-merge --csv contacts.csv --max-merges 2",
        "(stopped at --max-merges)",
        "$ devrev-merge --csv contacts.csv --preview --decisions decided.csv",
        "Decided groups:      1 from decided.csv",
        "$ devrev-merge --csv contacts.csv --decisions decided.csv",
        "Decided groups:  1 merged",
        "$ devrev-merge --verify-backups backups",
        "0 FAILED",
        "$ devrev-merge --restore backups/",
        "Restore: 1 restored, 0 restored earlier, 0 skipped, 0 failed",
        "Demo finished in",
        "Next, against your org:",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("leak.invalid"), "{stdout}");

    // Nothing in the working folder but the .env, one folder in TMPDIR: the demo's.
    assert_eq!(entries(cwd.path()), [".env"]);
    let made = entries(tmp.path());
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].starts_with("devrev-merge-demo-"));
    let demo = tmp.path().join(&made[0]).canonicalize().unwrap();
    assert!(
        stdout.contains(&format!("Its files are in {}", demo.display())),
        "{stdout}"
    );
    let inside = entries(&demo);
    for f in [
        "contacts.csv",
        "sample.csv",
        "decided.csv",
        "savepoint.json",
        "restore-savepoint.json",
        "backups",
        "reports",
        "logs",
    ] {
        assert!(inside.contains(&f.to_string()), "{f} in {inside:?}");
    }
    for f in files(&demo) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("callers-secret-token"),
            "{}",
            f.display()
        );
    }
}

#[test]
fn demo_dir_must_be_new_or_empty() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("keep.txt"), "mine").unwrap();
    let out = scrubbed_cmd(cwd.path())
        .args(["--demo", "--demo-dir", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73));
    assert_eq!(entries(cwd.path()), ["keep.txt"]);
}

#[test]
fn the_demo_shows_the_preview_tables_cut_to_their_first_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::scrubbed_cmd(dir.path())
        .args(["--demo", "--demo-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let preview = text
        .split("$ devrev-merge --csv contacts.csv --preview\n")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for heading in ["Clean pairs (", "Needs review (", "EMAIL", "PRIMARY [REF]"] {
        assert!(
            preview.contains(heading),
            "the preview step lacks {heading:?}:\n{preview}"
        );
    }
    assert!(
        preview.contains("more rows)"),
        "tables are cut, not the output's middle:\n{preview}"
    );
}
