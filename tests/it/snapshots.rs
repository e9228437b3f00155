//! Snapshot tests (insta) of what users read: the preview's text, the merge run's summary, the
//! `--test-api` text and the main error messages. Each snapshot holds the exit code, stdout and
//! stderr together, with temp folders, ports, times, timestamps and durations masked, so a
//! wording change shows up as one reviewable diff (`cargo insta review`, or
//! `INSTA_UPDATE=always cargo test` then `git diff tests/it/snapshots/`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{scrubbed_cmd, with_fake};
use devrev_fake::fake::{FakeOptions, FakeServer, MergeBehaviour};
use devrev_fake::seed::{GenSpec, Seed};

/// A small fixed world: same seed, same contacts, same CSV.
fn world() -> Seed {
    Seed::generate(&GenSpec {
        pairs: 3,
        review_groups: 2,
        singles: 2,
        rng_seed: 7,
        ..GenSpec::default()
    })
}

/// The binary in `dir`, scrubbed, with pacing fast enough that it never waits.
fn cmd(dir: &Path) -> Command {
    let mut c = scrubbed_cmd(dir);
    c.env("RATE_LIMIT_CALLS", "60000")
        .env("RATE_LIMIT_PERIOD", "60");
    c
}

/// Exit code, stdout and stderr in one text (uv's layout).
fn render(out: &Output) -> String {
    format!(
        "exit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
        out.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Masks what changes from run to run; `dir` is the run's temp folder.
fn filters(dir: &Path) -> Vec<(String, String)> {
    let dir = dir.to_string_lossy().to_string();
    let canonical = std::fs::canonicalize(&dir)
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_else(|_| dir.clone());
    let mut f = vec![];
    for d in [canonical, dir] {
        f.push((regex_escape(&d), "[TEMP]".to_string()));
    }
    f.extend(
        [
            (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
            // 2026-11-30T07:27:03.123456Z, 2026-11-30 07:27:03, 2026-11-30T07:27:03+00:00
            (
                r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?( UTC)?",
                "[TIMESTAMP]",
            ),
            // Report names; a second report in the same second gets a `-2` suffix.
            (r"-report-\d{8}_\d{6}(-\d+)?\.", "-report-[STAMP]."),
            // Run ids (20261130_072703-47528a) and file-name stamps (plan-20261130_072703)
            (r"\b\d{8}_\d{6}-[0-9a-f]+\b", "[RUN_ID]"),
            (r"\d{8}[T_-]?\d{6}(\d{3})?Z?", "[STAMP]"),
            // The rate-limit window's reset (epoch seconds) and the token's remaining days
            (
                r"reset \d{2}:\d{2}:\d{2} UTC \(in [^)]*\)",
                "reset [TIME] UTC (in [DURATION])",
            ),
            (r"\(\d+ days left\)", "([N] days left)"),
            // A run's call count: survivor reads that meet in time are gathered into one
            // list, so the count moves by one or two with the machine's load. `calls.rs`
            // pins each endpoint's count against the world instead.
            (r"\b\d+ call\(s\) in\b", "[N] call(s) in"),
            (r"\b\d{2}:\d{2}:\d{2}\b", "[TIME]"),
            // 1.2s, 340ms, 12 ms, 0.5 s, 3m 2s, 1h 02m; the spaces before go too, as
            // right-aligned columns (`{:>5} ms`) pad by the number's width.
            (
                r" *\b\d+(\.\d+)?\s?(ns|µs|us|ms|s|m|h|min|sec|secs|seconds?)\b",
                " [DURATION]",
            ),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
    );
    f
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Asserts the rendered output against the named snapshot, with `dir`'s filters.
fn check(name: &str, dir: &Path, out: &Output) {
    let filters = filters(dir);
    let mut settings = insta::Settings::clone_current();
    for (re, with) in &filters {
        settings.add_filter(re, with.as_str());
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, render(out)));
}

#[test]
fn preview_text() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), world().contacts_csv()).unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "contacts.csv", "--preview"])
        .output()
        .unwrap();
    check("preview_text", tmp.path(), &out);
}

#[test]
fn merge_run_summary() {
    // Merges apply during the call, so the run never polls.
    let fake = FakeServer::start(FakeOptions {
        seed: world(),
        merge: MergeBehaviour {
            delay: Duration::ZERO,
            ..MergeBehaviour::default()
        },
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), fake.contacts_csv()).unwrap();
    let mut c = cmd(tmp.path());
    with_fake(&mut c, &fake).args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "5"]);
    let out = c.output().unwrap();
    check("merge_run_summary", tmp.path(), &out);
}

/// A canary of one merge, then the full run: the second summary says what this run did and
/// what earlier runs did, and every count adds up.
#[test]
fn merge_run_summary_after_a_canary() {
    let fake = FakeServer::start(FakeOptions {
        seed: world(),
        merge: MergeBehaviour {
            delay: Duration::ZERO,
            ..MergeBehaviour::default()
        },
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), fake.contacts_csv()).unwrap();
    let run = |extra: &[&str]| {
        let mut c = cmd(tmp.path());
        with_fake(&mut c, &fake)
            .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "5"])
            .args(extra);
        c.output().unwrap()
    };
    assert!(run(&["--max-merges", "1"]).status.success());
    let out = run(&[]);
    check("merge_run_summary_after_a_canary", tmp.path(), &out);
}

#[test]
fn test_api_text() {
    let fake = FakeServer::start(FakeOptions {
        seed: world(),
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cmd(tmp.path());
    let out = with_fake(&mut c, &fake).arg("--test-api").output().unwrap();
    check("test_api_text", tmp.path(), &out);
}

#[test]
fn error_missing_token() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd(tmp.path())
        .env("DEVREV_BASE_URL", "http://127.0.0.1:9")
        .arg("--test-api")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    check("error_missing_token", tmp.path(), &out);
}

#[test]
fn error_malformed_csv() {
    const H: &str = "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT\n";
    let tmp = tempfile::tempdir().unwrap();
    let csv = format!(
        "{H}r1,Jane,j@x.com,REVU-r1,,2024-12-03 15:16:07.123,2024-12-03 15:16:07.123,1.5\n\
         r2,J,j2@x.com\n"
    );
    std::fs::write(tmp.path().join("bad.csv"), csv).unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "bad.csv", "--preview"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    check("error_malformed_csv", tmp.path(), &out);
}

#[test]
fn error_missing_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd(tmp.path())
        .args(["--csv", "nope.csv", "--preview"])
        .output()
        .unwrap();
    check("error_missing_csv", tmp.path(), &out);
}

#[test]
fn error_bad_rate_limit_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd(tmp.path())
        .env("DEVREV_BASE_URL", "http://127.0.0.1:9")
        .env("DEVREV_API_TOKEN", "t")
        .env("RATE_LIMIT_CALLS", "abc")
        .arg("--test-api")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    check("error_bad_rate_limit_calls", tmp.path(), &out);
}
