//! `--test-api` end to end, and the client's pacing and retry behaviour against the fake.

use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

use crate::common::{mode, scrubbed_assert_cmd, scrubbed_cmd, with_fake};
use devrev_fake::fake::{FakeOptions, FakeServer, Fault, RateLimit, ScriptedFault};
use devrev_fake::seed::{GenSpec, Seed};

fn small_fake(opts: impl FnOnce(&mut FakeOptions)) -> FakeServer {
    let mut o = FakeOptions {
        seed: Seed::generate(&GenSpec {
            pairs: 2,
            ..GenSpec::default()
        }),
        ..FakeOptions::default()
    };
    opts(&mut o);
    FakeServer::start(o)
}

/// The binary with a scrubbed environment, in a temp folder, pointed at `base_url`.
fn cmd(dir: &tempfile::TempDir, base_url: &str, token: Option<&str>) -> Command {
    let mut c = scrubbed_assert_cmd(dir.path());
    c.env("DEVREV_BASE_URL", base_url);
    if let Some(t) = token {
        c.env("DEVREV_API_TOKEN", t);
    }
    c
}

/// Every file under `dir`, concatenated (logs, reports): for "the token is nowhere" checks.
fn all_files_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(s) = std::fs::read_to_string(&p) {
                out.push_str(&s);
            }
        }
    }
    out
}

#[test]
fn test_api_passes_and_reports_org_identity_and_rate_headers() {
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(&dir, &fake.base_url(), Some(&fake.token()))
        .arg("--test-api")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("organization:"), "{text}");
    assert!(text.contains("rev-users.list"), "{text}");
    assert!(text.contains("works.list"), "{text}");
    assert!(text.contains("conversations.list"), "{text}");
    assert!(text.contains("rate-limit headers: limit"), "{text}");
    assert!(text.contains("All checks passed."), "{text}");
    // Exactly the four probes, each with limit 1 where it lists.
    let reqs = fake.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/auth-tokens.info",
            "/rev-users.list",
            "/works.list",
            "/conversations.list"
        ]
    );
    for r in &reqs[1..] {
        assert_eq!(r.body["limit"], 1, "{:?}", r.body);
    }
    assert_eq!(reqs[2].body["type"], serde_json::json!(["ticket"]));
    assert!(reqs.iter().all(|r| r.had_auth_header && r.authorized));

    // A private, timestamped log file was written.
    let logs = dir.path().join("logs");
    assert_eq!(mode(&logs), 0o700);
    let files: Vec<_> = std::fs::read_dir(&logs).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().into_string().unwrap();
    assert!(
        name.starts_with("test-api-") && name.ends_with(".log"),
        "named for the command: {name}"
    );
    assert_eq!(mode(&files[0].path()), 0o600);
    // It says which build ran which command line.
    let log = std::fs::read_to_string(files[0].path()).unwrap();
    let mut first = log.lines();
    assert_eq!(
        first.next(),
        Some(format!("devrev-merge {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(first.next(), Some("command line: devrev-merge --test-api"));
    assert!(!log.contains(&fake.token()), "no token in the log");
}

#[test]
fn test_api_into_a_closed_pipe_exits_with_its_own_code() {
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--test-api"][..], &["--test-api", "--json"][..]] {
        let mut c = scrubbed_cmd(dir.path());
        with_fake(&mut c, &fake).args(args);
        let out = crate::closed_pipe::run(c, false);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn test_api_json_is_one_object_on_stdout() {
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let v = test_api_json(&dir, &fake);
    assert_eq!(v["ok"], true);
    assert_eq!(v["probes"].as_array().unwrap().len(), 4);
    assert!(
        v["organization"]["id"]
            .as_str()
            .unwrap()
            .starts_with("don:identity:")
    );
    assert!(v["token_expires_at"].is_string());
    assert!(v["rate_limit_headers"]["limit"].is_u64());
}

#[test]
fn probe_latency_leaves_out_the_wait_for_the_local_rate_limit() {
    // 2 calls per second, one every 500 ms: each probe after the first waits ~500 ms for the
    // pacer, while the local fake answers in a few ms. The bound sits between the two with a
    // wide margin, so a loaded machine's slow answers do not read as the pacer's wait.
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let out = cmd(&dir, &fake.base_url(), Some(&fake.token()))
        .args(["--test-api", "--json"])
        .env("RATE_LIMIT_CALLS", "2")
        .env("RATE_LIMIT_PERIOD", "1")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        t0.elapsed() >= Duration::from_millis(1200),
        "the pacer did not slow the probes down, so this test proves nothing"
    );
    let v: serde_json::Value = serde_json::from_slice(&out).expect("stdout is JSON");
    for p in v["probes"].as_array().unwrap() {
        let ms = p["latency_ms"].as_u64().unwrap();
        assert!(
            ms < 400,
            "{} latency {ms} ms includes the pacer's wait",
            p["name"]
        );
    }
}

#[test]
fn a_failed_token_check_reports_its_real_latency() {
    // auth-tokens.info answers 401 after 300 ms: the probe used to say 0 ms because the
    // clock started after the call had already failed.
    let fake = small_fake(|o| {
        o.faults = vec![ScriptedFault {
            path: Some("/auth-tokens.info".into()),
            nth: 1,
            fault: Fault::Slow(Duration::from_millis(300)),
        }];
    });
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(&dir, &fake.base_url(), Some("not-the-token"))
        .args(["--test-api", "--json"])
        .assert()
        .code(77)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("stdout is JSON");
    let token = &v["probes"][0];
    assert_eq!(token["endpoint"], "auth-tokens.info");
    assert_eq!(token["ok"], false);
    assert_eq!(token["status"], 401);
    let ms = token["latency_ms"].as_u64().unwrap();
    assert!((300..10_000).contains(&ms), "latency {ms} ms");
}

#[test]
fn wrong_token_exits_77_and_never_prints_the_token() {
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let secret = "wrong-but-secret-token-XYZ123";
    let assert = cmd(&dir, &fake.base_url(), Some(secret))
        .args(["--test-api", "-vv"])
        .assert()
        .code(77);
    let o = assert.get_output();
    let all = format!(
        "{}{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        all_files_text(dir.path())
    );
    assert!(all.contains("401"), "{all}");
    assert!(!all.contains(secret), "the token leaked: {all}");
    // 401 is never retried.
    assert_eq!(fake.count("/auth-tokens.info"), 1);
}

#[test]
fn forbidden_names_the_missing_permission() {
    let fake = small_fake(|o| o.forbidden = true);
    let dir = tempfile::tempdir().unwrap();
    cmd(&dir, &fake.base_url(), Some(&fake.token()))
        .arg("--test-api")
        .assert()
        .code(77)
        .stdout(predicate::str::contains("lacks permission"));
}

#[test]
fn unreachable_server_exits_69_after_the_retry_budget() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    cmd(&dir, &format!("http://127.0.0.1:{port}"), Some("t"))
        .args(["--test-api", "--max-retries", "2"])
        .assert()
        .code(69)
        .stderr(predicate::str::contains("after 3 attempt(s)"));
    assert!(t0.elapsed() < Duration::from_secs(20));
}

#[test]
fn retry_after_is_honoured_on_429() {
    let fake = small_fake(|o| {
        o.faults = vec![ScriptedFault {
            path: Some("/auth-tokens.info".into()),
            nth: 1,
            fault: Fault::Spurious429 { retry_after_s: 2 },
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    cmd(&dir, &fake.base_url(), Some(&fake.token()))
        .arg("--test-api")
        .assert()
        .success();
    let reqs: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/auth-tokens.info")
        .collect();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].status, 429);
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after only {gap:?}");
}

/// A `Retry-After` of a day is not slept through (the run would look hung): the call gives
/// up at once with exit 69, and the run can be resumed later.
#[test]
fn absurd_retry_after_gives_up_instead_of_hanging() {
    let fake = small_fake(|o| {
        o.faults = vec![ScriptedFault {
            path: Some("/auth-tokens.info".into()),
            nth: 1,
            fault: Fault::Spurious429 {
                retry_after_s: 86_400,
            },
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    cmd(&dir, &fake.base_url(), Some(&fake.token()))
        .arg("--test-api")
        .timeout(Duration::from_secs(30))
        .assert()
        .code(69)
        .stderr(predicate::str::contains("429"));
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(fake.count("/auth-tokens.info"), 1);
}

#[test]
fn two_503s_then_success() {
    let fake = small_fake(|o| {
        o.faults = (1..=2)
            .map(|nth| ScriptedFault {
                path: Some("/works.list".into()),
                nth,
                fault: Fault::Status503,
            })
            .collect()
    });
    let dir = tempfile::tempdir().unwrap();
    cmd(&dir, &fake.base_url(), Some(&fake.token()))
        .arg("--test-api")
        .assert()
        .success();
    assert_eq!(fake.count("/works.list"), 3);
}

#[test]
fn route_not_found_body_without_type_is_parsed() {
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    cmd(
        &dir,
        &format!("{}/no-such-prefix", fake.base_url()),
        Some(&fake.token()),
    )
    .arg("--test-api")
    .assert()
    .code(1)
    .stdout(predicate::str::contains("HTTP 404: route not found"));
}

#[test]
fn missing_token_exits_78_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    cmd(&dir, "http://127.0.0.1:9", None)
        .arg("--test-api")
        .assert()
        .code(78)
        .stderr(predicate::str::contains("DEVREV_API_TOKEN"))
        .stderr(predicate::str::contains(".env.example"));
}

#[test]
fn token_from_dotenv_in_current_folder_is_used() {
    let fake = small_fake(|_| {});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("DEVREV_API_TOKEN={}\n", fake.token()),
    )
    .unwrap();
    cmd(&dir, &fake.base_url(), None)
        .arg("--test-api")
        .assert()
        .success();
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    cmd(&dir, "http://api.devrev.ai", Some("t"))
        .arg("--test-api")
        .assert()
        .code(78)
        .stderr(predicate::str::contains("refusing plain http://"));
}

#[test]
fn bad_rate_limit_values_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["abc", "0", "-5"] {
        cmd(&dir, "http://127.0.0.1:9", Some("t"))
            .env("RATE_LIMIT_CALLS", bad)
            .arg("--test-api")
            .assert()
            .code(78)
            .stderr(predicate::str::contains("RATE_LIMIT_CALLS"));
    }
}

#[test]
fn help_never_shows_the_token() {
    let dir = tempfile::tempdir().unwrap();
    cmd(&dir, "http://127.0.0.1:9", Some("help-secret-123"))
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("help-secret-123").not());
}

/// With the same limit on both sides, the fake never sees more than N requests in any
/// window and never has to answer 429.
#[test]
fn pacing_keeps_every_window_within_the_limit() {
    let limit = 10u32;
    let window = Duration::from_secs(1);
    let fake = small_fake(|o| o.rate_limit = Some(RateLimit { limit, window }));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = std::sync::Arc::new(library_client(&fake, limit, window));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..9 {
                    c.auth_tokens_info().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 27);
    assert!(
        reqs.iter().all(|r| r.status != 429),
        "the client provoked a 429"
    );
    for (i, r) in reqs.iter().enumerate() {
        let in_window = reqs[i..]
            .iter()
            .take_while(|u| u.at < r.at + window)
            .count();
        assert!(
            in_window <= limit as usize,
            "{in_window} requests within one window"
        );
    }
}

#[test]
fn a_token_expiring_within_seven_days_is_warned_about() {
    let fake = small_fake(|o| o.token_expires_in = Duration::from_secs(3 * 86_400));
    let dir = tempfile::tempdir().unwrap();
    let v = test_api_json(&dir, &fake);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("expires in 3.0 days"),
        "{v}"
    );

    // A token with 90 days left gets no warning.
    let fresh = small_fake(|_| {});
    let v = test_api_json(&dir, &fresh);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

/// The crate's client pointed at `fake`, pacing itself to `calls` per `period`.
fn library_client(
    fake: &FakeServer,
    calls: u32,
    period: Duration,
) -> devrev_merge::devrev::DevRevClient {
    devrev_merge::devrev::DevRevClient::new(devrev_merge::devrev::ClientConfig {
        base_url: devrev_merge::config::parse_base_url(&fake.base_url()).unwrap(),
        token: fake.token().into(),
        rate_limit_calls: calls,
        rate_limit_period: period,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        max_retries: 3,
        page_size: 100,
        min_backoff: Duration::from_millis(10),
        limits: Default::default(),
    })
    .unwrap()
}

/// When DevRev's budget is smaller than the configured pace, `X-Ratelimit-Remaining: 0`
/// makes the client wait for `X-Ratelimit-Reset` instead of provoking a 429.
#[test]
fn remaining_zero_waits_for_the_reset_instead_of_a_429() {
    let window = Duration::from_secs(2);
    let fake = small_fake(|o| o.rate_limit = Some(RateLimit { limit: 4, window }));
    // The client alone would allow far more than the server does.
    let client = library_client(&fake, 1000, Duration::from_secs(60));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for _ in 0..6 {
            client.auth_tokens_info().await.unwrap();
        }
    });
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 6, "no request was repeated");
    assert!(reqs.iter().all(|r| r.status == 200), "a 429 was provoked");
    // The fifth call waited for the server's window to reset.
    let gap = reqs[4].at - reqs[0].at;
    assert!(gap >= window, "the fifth call went out after only {gap:?}");
}

/// Runs `--test-api --json` against `fake`, expects success, and parses stdout as one object.
fn test_api_json(dir: &tempfile::TempDir, fake: &FakeServer) -> serde_json::Value {
    let out = cmd(dir, &fake.base_url(), Some(&fake.token()))
        .args(["--test-api", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("stdout is one JSON object")
}
