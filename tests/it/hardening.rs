//! Issue 16, hardening: a savepoint without an owner is not adopted by another org (point 2),
//! server text never carries the token out (point 8), settings that round to nothing are
//! refused (point 9) and a damaged journal is never silently rolled back (point 10).

use std::path::Path;

use devrev_fake::fake::{
    FakeOptions, FakeServer, Fault, Hostile, MoveMode, ScriptedFault, SecondaryAfter,
};
use devrev_fake::seed::Seed;

use crate::common::scrubbed_cmd;
use crate::merge::{World, behaviour, spec};

fn code(a: &assert_cmd::assert::Assert) -> i32 {
    a.get_output().status.code().unwrap_or(-1)
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).to_string()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).to_string()
}

/// The endpoints that change something in DevRev.
const WRITES: [&str; 5] = [
    "/rev-users.merge",
    "/rev-users.update",
    "/rev-users.create",
    "/works.update",
    "/conversations.update",
];

fn writes(fake: &FakeServer) -> Vec<String> {
    fake.requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| WRITES.contains(&p.as_str()))
        .collect()
}

/// Rewrites the savepoint's header line without its `owner`, as an older build wrote it.
fn strip_owner(savepoint: &Path) {
    let text = std::fs::read_to_string(savepoint).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_str(head).unwrap();
    assert!(
        header.get("owner").is_some(),
        "the first run recorded its owner"
    );
    header.as_object_mut().unwrap().remove("owner");
    std::fs::write(savepoint, format!("{header}\n{rest}")).unwrap();
}

// ---- point 2 ---------------------------------------------------------------------------

/// Point 2: a journal of org A without an owner (an older build's) is refused, exit 78, by a
/// run whose token is for org B, before any write; in org A it is adopted and gets its owner.
#[test]
fn a_savepoint_without_an_owner_is_not_adopted_by_another_org() {
    let a = World::new(
        spec(2, 0, 161),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let first = a.run(&["--max-merges", "1"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let savepoint = a.path("savepoint.json");
    strip_owner(&savepoint);
    let before = std::fs::read(&savepoint).unwrap();

    // Org B: another world, another org, its own CSV; the old journal named by --savepoint.
    let b = World::new(
        spec(2, 0, 162),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    assert_ne!(a.seed.org, b.seed.org);
    let sp_arg = savepoint.to_str().unwrap();
    let refused = b.run(&["--savepoint", sp_arg]);
    assert_eq!(code(&refused), 78, "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains("names no org") && err.contains(&format!("devo/{}", a.seed.org)),
        "{err}"
    );
    assert_eq!(writes(&b.fake), Vec::<String>::new(), "no write in org B");
    let paths: Vec<String> = b.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/auth-tokens.info"], "nothing but the token check");
    assert_eq!(
        std::fs::read(&savepoint).unwrap(),
        before,
        "journal untouched"
    );

    // In its own org the journal is resumed, and its owner recorded.
    let resumed = a.run(&[]);
    assert_eq!(code(&resumed), 0, "{}", stderr(&resumed));
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&savepoint)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        header["owner"]["org"]
            .as_str()
            .is_some_and(|o| o.ends_with(&format!("devo/{}", a.seed.org))),
        "{header}"
    );
}

// ---- point 8 ---------------------------------------------------------------------------

/// Every file under `dir`, recursively, with its bytes.
fn all_files(dir: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Point 8: a gateway that echoes the `Authorization` header (as sent, `Bearer <token>`, and
/// the bare token) in its error messages. The echoed text reaches the console, the log, the
/// savepoint and the report, scrubbed: the token is nowhere in stdout, stderr or any file.
#[test]
fn server_text_never_carries_the_token_out() {
    let w = World::with(
        spec(2, 0, 163),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| {
            o.hostile = Hostile {
                echo_auth: true,
                ..Hostile::default()
            };
            // Every backup listing fails: each pair fails with DevRev's (echoing) message.
            o.faults.push(ScriptedFault {
                path: Some("/works.list".into()),
                nth: 0,
                fault: Fault::Status500,
            });
        },
    );
    let token = w.fake.token();
    let mut outputs = Vec::new();
    let failed = w
        .cmd()
        .env("DEVREV_MAX_RETRIES", "1")
        .args(w.run_args())
        .assert();
    assert_eq!(code(&failed), 1, "{}", stderr(&failed));
    outputs.push(stdout(&failed) + &stderr(&failed));
    // A run-wide error: the token check itself answers 401, printed on stderr.
    w.fake.set_options(|o| {
        o.faults.push(ScriptedFault {
            path: Some("/auth-tokens.info".into()),
            nth: 0,
            fault: Fault::Unauthenticated,
        })
    });
    for args in [w.run_args(), vec!["--test-api"]] {
        let denied = w.cmd().args(&args).assert();
        assert_eq!(code(&denied), 77, "{args:?}: {}", stderr(&denied));
        outputs.push(stdout(&denied) + &stderr(&denied));
    }
    for (i, out) in outputs.iter().enumerate() {
        assert!(!out.contains(&token), "output {i} holds the token:\n{out}");
    }
    assert!(
        outputs[2].contains("gateway saw Authorization: Bearer [redacted]"),
        "the echo was shown, scrubbed:\n{}",
        outputs[2]
    );
    let mut files = Vec::new();
    all_files(w.dir.path(), &mut files);
    let leaks: Vec<_> = files
        .iter()
        .filter(|(_, b)| contains(b, &token))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(leaks.is_empty(), "the token is in {leaks:?}");
    // The echoed text did reach the savepoint, the report and the log (so the check above
    // looked at real server text).
    for (what, rel) in [
        ("savepoint", "savepoint.json"),
        ("report", "reports/"),
        ("log", "logs/"),
    ] {
        let hit = files.iter().any(|(p, b)| {
            p.strip_prefix(w.dir.path())
                .is_ok_and(|r| r.to_string_lossy().starts_with(rel))
                && contains(b, "token [redacted] rejected upstream")
        });
        assert!(hit, "the {what} quotes DevRev's scrubbed message");
    }
}

// ---- point 9 ---------------------------------------------------------------------------

/// Point 9: numbers that round to nothing are exit 78 naming the setting and its floor, before
/// any call; the floors themselves are accepted.
#[test]
fn settings_that_round_to_nothing_are_refused_with_their_floor() {
    let fake = FakeServer::start(FakeOptions {
        seed: Seed::generate(&spec(1, 0, 164)),
        ..FakeOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.csv"), fake.contacts_csv()).unwrap();
    let cases: [(&str, &str, &str); 10] = [
        ("RATE_LIMIT_PERIOD", "1e-300", "floor of 1 s"),
        ("RATE_LIMIT_PERIOD", "0.5", "floor of 1 s"),
        ("RATE_LIMIT_CALLS", "4294967295", "1 ms per call"),
        ("RATE_LIMIT_CALLS", "60001", "at most 60000 calls"),
        ("DEVREV_READ_TIMEOUT", "1e-300", "floor of 1 s"),
        ("DEVREV_CONNECT_TIMEOUT", "0.001", "floor of 1 s"),
        ("DEVREV_REQUEST_DEADLINE", "1e-300", "floor of 1 s"),
        ("DEVREV_MERGE_MIN_BACKOFF_MS", "0", "from 1 to 60000"),
        (
            "DEVREV_MERGE_MIN_BACKOFF_MS",
            "18446744073709551615",
            "from 1 to 60000",
        ),
        ("DEVREV_MERGE_MIN_BACKOFF_MS", "soon", "from 1 to 60000"),
    ];
    for (var, value, floor) in cases {
        let mut c = scrubbed_cmd(tmp.path());
        crate::common::with_fake(&mut c, &fake)
            .env(var, value)
            .args(["--csv", "c.csv", "--yes"]);
        let a = assert_cmd::Command::from_std(c).assert();
        let err = stderr(&a);
        assert_eq!(code(&a), 78, "{var}={value}: {err}");
        assert!(
            err.contains(var) && err.contains(floor),
            "{var}={value}: {err}"
        );
    }
    let a = assert_cmd::Command::from_std({
        let mut c = scrubbed_cmd(tmp.path());
        c.args(["--csv", "c.csv", "--preview", "--read-timeout", "0.5"]);
        c
    })
    .assert();
    assert_eq!(code(&a), 78, "{}", stderr(&a));
    assert!(stderr(&a).contains("--read-timeout"), "{}", stderr(&a));
    assert!(fake.requests().is_empty(), "refused before any call");
    // The floors are allowed.
    let mut c = scrubbed_cmd(tmp.path());
    crate::common::with_fake(&mut c, &fake)
        .env("RATE_LIMIT_PERIOD", "1")
        .env("RATE_LIMIT_CALLS", "1000")
        .env("DEVREV_READ_TIMEOUT", "1")
        .env("DEVREV_CONNECT_TIMEOUT", "1")
        .env("DEVREV_REQUEST_DEADLINE", "1")
        .arg("--test-api");
    let a = assert_cmd::Command::from_std(c).assert();
    assert_eq!(code(&a), 0, "{}", stderr(&a));
}

// ---- point 10 --------------------------------------------------------------------------

/// Point 10: a savepoint whose last line ends in a line break but is not an entry is damage,
/// not a torn append: exit 65 naming the line, the file byte for byte as it was, nothing sent.
/// The same bytes without the line break are a torn append, dropped, and the run resumes.
#[test]
fn a_whole_damaged_last_line_is_exit_65_and_the_file_is_left_as_it_is() {
    let w = World::new(
        spec(2, 0, 165),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let first = w.run(&["--max-merges", "1"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let savepoint = w.path("savepoint.json");
    let good = std::fs::read(&savepoint).unwrap();
    let line = good.iter().filter(|b| **b == b'\n').count() + 1;
    let damaged = [&good[..], b"{\"pair\": {\"email\": \"x\"}}\n"].concat();
    std::fs::write(&savepoint, &damaged).unwrap();
    let calls = w.fake.requests().len();

    let refused = w.run(&[]);
    assert_eq!(code(&refused), 65, "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(err.contains(&format!("line {line}")), "{err}");
    assert!(err.contains("left unchanged"), "{err}");
    assert_eq!(
        std::fs::read(&savepoint).unwrap(),
        damaged,
        "byte-identical"
    );
    assert_eq!(w.fake.requests().len(), calls, "nothing was sent");

    // Without its line break the same line is a torn append: dropped, and the run resumes.
    std::fs::write(&savepoint, &damaged[..damaged.len() - 1]).unwrap();
    let resumed = w.run(&[]);
    assert_eq!(code(&resumed), 0, "{}", stderr(&resumed));
    let sp = crate::common::read_savepoint(&savepoint).unwrap();
    assert_eq!(sp["pairs"].as_object().unwrap().len(), 2);
}
