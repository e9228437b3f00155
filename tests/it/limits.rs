//! Hostile input end to end (issue 10): a server that never ends a listing, trickles or never
//! ends an answer, or streams a bigger file than it declared; a full disk; symbolic links
//! where customer data goes; proxies; numbers that do not fit; CSVs built to exhaust memory;
//! escape sequences in names. Each must end in a clear error, never a hang, a panic or a leak.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{mode, scrubbed_cmd, with_fake};
use devrev_fake::fake::{FakeOptions, FakeServer};
use devrev_fake::seed::{GenSpec, Seed};
use devrev_fake::{BodyQuirk, Hostile};

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(c: &mut std::process::Command) -> Outcome {
    let out = c.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A fake with `pairs` clean pairs (every ticket with attachments) shaped by `hostile`, and a
/// folder holding its contacts CSV.
fn world(pairs: usize, opts: impl FnOnce(&mut FakeOptions)) -> (FakeServer, tempfile::TempDir) {
    let mut o = FakeOptions {
        seed: Seed::generate(&GenSpec {
            pairs,
            review_groups: 0,
            singles: 0,
            tickets_per_contact: (3, 3),
            timeline_entries: (2, 3),
            attachments_pct: 100,
            attachment_size_max: 200 * 1024,
            conversations_per_secondary: (1, 1),
            ..GenSpec::default()
        }),
        ..FakeOptions::default()
    };
    opts(&mut o);
    let fake = FakeServer::start(o);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("contacts.csv"), fake.contacts_csv()).unwrap();
    (fake, tmp)
}

fn backup_only(fake: &FakeServer, dir: &Path) -> std::process::Command {
    let mut c = scrubbed_cmd(dir);
    c.env("RATE_LIMIT_CALLS", "60000")
        .args(["--csv", "contacts.csv", "--backup-only"]);
    with_fake(&mut c, fake);
    c
}

fn hostile(h: Hostile) -> impl FnOnce(&mut FakeOptions) {
    move |o| o.hostile = h
}

/// Every file under `dir` (recursively), for "nothing half-written" checks.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---- 1. listings end -------------------------------------------------------------------

#[test]
fn a_repeating_cursor_stops_the_listing_with_an_error_naming_the_endpoint() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            repeat_cursor: true,
            ..Hostile::default()
        }),
    );
    let out = run(&mut backup_only(&fake, tmp.path()));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("works.list"), "{all}");
    assert!(all.contains("repeats a cursor"), "{all}");
    // The first page and the one that repeats its cursor: nothing more.
    assert_eq!(fake.count("/works.list"), 2);
    assert!(
        files(&tmp.path().join("backups"))
            .iter()
            .all(|p| !p.ends_with("manifest.json"))
    );
}

#[test]
fn a_cursor_that_never_ends_stops_the_listing_after_empty_pages() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            endless_cursor: true,
            ..Hostile::default()
        }),
    );
    let out = run(&mut backup_only(&fake, tmp.path()));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("works.list"), "{all}");
    assert!(all.contains("20 empty pages in a row"), "{all}");
    // The page with the tickets and twenty empty ones: nothing more.
    assert_eq!(fake.count("/works.list"), 21);
    assert!(
        files(&tmp.path().join("backups"))
            .iter()
            .all(|p| !p.ends_with("manifest.json"))
    );
}

#[test]
fn a_listing_longer_than_the_page_cap_is_an_error() {
    let (fake, tmp) = world(1, |o| o.max_page = 1);
    let out = run(backup_only(&fake, tmp.path()).args(["--max-pages", "2"]));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("more than 2 pages"), "{}", out.stdout);
    assert!(fake.count("/works.list") <= 2);
    let bad = run(backup_only(&fake, tmp.path()).env("DEVREV_MAX_PAGES", "0"));
    assert_eq!(bad.code, 78, "{}", bad.stderr);
    assert!(bad.stderr.contains("DEVREV_MAX_PAGES"), "{}", bad.stderr);
}

#[test]
fn a_list_answer_without_its_list_is_an_error_not_an_empty_backup() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            omit_list_key: true,
            ..Hostile::default()
        }),
    );
    let out = run(&mut backup_only(&fake, tmp.path()));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no `works` list"), "{}", out.stdout);
    assert!(
        files(&tmp.path().join("backups"))
            .iter()
            .all(|p| !p.ends_with("manifest.json"))
    );
}

// ---- 2. deadlines and size caps --------------------------------------------------------

#[test]
fn a_trickling_answer_hits_the_request_deadline() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            body: Some((
                "/works.list".into(),
                BodyQuirk::Trickle(Duration::from_millis(20)),
            )),
            ..Hostile::default()
        }),
    );
    let t0 = std::time::Instant::now();
    let out = run(backup_only(&fake, tmp.path())
        .env("DEVREV_REQUEST_DEADLINE", "1")
        .env("DEVREV_MAX_RETRIES", "1"));
    assert_eq!(out.code, 69, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("request deadline"), "{}", out.stderr);
    // Retried once (a read), then given up: two attempts.
    assert_eq!(fake.count("/works.list"), 2);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn an_endless_answer_hits_the_size_cap() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            body: Some(("/works.list".into(), BodyQuirk::Endless)),
            ..Hostile::default()
        }),
    );
    let out = run(backup_only(&fake, tmp.path())
        .env("DEVREV_MAX_ANSWER_BYTES", "2000000")
        .env("DEVREV_MAX_RETRIES", "0"));
    assert_eq!(out.code, 69, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("larger than 2000000 bytes"),
        "{}",
        out.stderr
    );
}

/// Peak memory of `--backup-only` against an endless answer with the default 64 MiB cap:
/// bounded by the cap, not by how long the server keeps sending. Measured with
/// `/usr/bin/time -v` where it exists, else with the children's `getrusage` peak (an upper
/// bound: it covers every child this test process has run).
#[test]
fn an_endless_answer_is_read_in_bounded_memory() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            body: Some(("/works.list".into(), BodyQuirk::Endless)),
            ..Hostile::default()
        }),
    );
    let timer = Path::new("/usr/bin/time");
    let mut c = backup_only(&fake, tmp.path());
    c.env("DEVREV_MAX_RETRIES", "0");
    let mut c = if timer.exists() {
        let mut t = std::process::Command::new(timer);
        t.arg("-v").arg(c.get_program()).args(c.get_args());
        t.env_clear().current_dir(tmp.path());
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                t.env(k, v);
            }
        }
        t
    } else {
        c
    };
    let out = run(&mut c);
    assert_eq!(out.code, 69, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("larger than 67108864 bytes"),
        "{}",
        out.stderr
    );
    let peak_kib: u64 = match out.stderr.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Maximum resident set size (kbytes): ")
    }) {
        Some(n) => n.trim().parse().unwrap(),
        None => {
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            assert_eq!(
                unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
                0
            );
            ru.ru_maxrss as u64
        }
    };
    eprintln!("peak RSS of --backup-only against an endless body: {peak_kib} KiB");
    assert!(peak_kib < 300 * 1024, "{peak_kib} KiB");
}

#[test]
fn a_trickling_download_hits_the_deadline_and_leaves_nothing() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            body: Some((
                "/download/".into(),
                BodyQuirk::Trickle(Duration::from_millis(20)),
            )),
            ..Hostile::default()
        }),
    );
    let out = run(backup_only(&fake, tmp.path())
        .env("DEVREV_REQUEST_DEADLINE", "1")
        .env("DEVREV_MAX_RETRIES", "1"));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("no complete download within"),
        "{}",
        out.stdout
    );
    let left = files(&tmp.path().join("backups"));
    assert!(
        left.iter().all(|p| p.to_string_lossy().ends_with(".lock")),
        "{left:?}"
    );
}

// ---- 3. downloads and a full disk ------------------------------------------------------

#[test]
fn a_download_longer_than_declared_is_cut_and_fails_the_pair() {
    let (fake, tmp) = world(
        1,
        hostile(Hostile {
            download_extra_bytes: 50 << 20,
            ..Hostile::default()
        }),
    );
    let out = run(&mut backup_only(&fake, tmp.path()));
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("more than the declared"),
        "{}",
        out.stdout
    );
    let left = files(&tmp.path().join("backups"));
    assert!(
        left.iter().all(|p| p.to_string_lossy().ends_with(".lock")),
        "nothing but the lock may stay: {left:?}"
    );
}

/// A disk that fills up during a download: the child may write at most 64 KiB per file
/// (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored so the write fails with `EFBIG` the way a full
/// disk fails it with `ENOSPC`). Manifests and the savepoint stay under that; attachments up
/// to 200 KiB do not.
#[test]
fn a_declared_size_near_u64_max_is_no_space_not_a_wrap() {
    let (fake, tmp) = world(1, |_| {});
    fake.with_state(|s| {
        let huge = serde_json::json!(u64::MAX);
        for a in s.artifacts.values_mut() {
            a.json["file"]["size"] = huge.clone();
        }
        for entry in s.timelines.values_mut().flatten() {
            if let Some(arts) = entry.get_mut("artifacts").and_then(|v| v.as_array_mut()) {
                for a in arts.iter_mut().filter(|a| a.get("file").is_some()) {
                    a["file"]["size"] = huge.clone();
                }
            }
        }
    });
    let out = run(&mut backup_only(&fake, tmp.path()));
    assert_eq!(out.code, 73, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("not enough free space"),
        "{}",
        out.stderr
    );
}

fn small_disk(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_write_failing_mid_download_stops_the_run_with_73_and_leaves_no_partial_file() {
    let (fake, tmp) = world(2, |_| {});
    let mut c = backup_only(&fake, tmp.path());
    small_disk(&mut c);
    let out = run(&mut c);
    assert_eq!(out.code, 73, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("cannot write"), "{}", out.stderr);
    let left = files(&tmp.path().join("backups"));
    assert!(
        left.iter().all(|p| p.to_string_lossy().ends_with(".lock")),
        "nothing half-written may stay: {left:?}"
    );
    // The same disk under a merge run: it stops with 73 and nothing is merged.
    let mut c = scrubbed_cmd(tmp.path());
    with_fake(&mut c, &fake);
    c.env("RATE_LIMIT_CALLS", "60000")
        .args(["--csv", "contacts.csv", "--yes"]);
    small_disk(&mut c);
    let out = run(&mut c);
    assert_eq!(out.code, 73, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("cannot write"), "{}", out.stderr);
    assert!(
        fake.with_state(|s| s.merges.is_empty()),
        "merged without a backup"
    );
}

// ---- 4. symbolic links and loose folders -----------------------------------------------

#[test]
fn symlinked_data_folders_and_files_are_refused() {
    let (fake, tmp) = world(1, |_| {});
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, args) in [
        ("backups", vec!["--backup-only"]),
        ("logs", vec!["--backup-only"]),
    ] {
        let link = dir.join(name);
        let _ = std::fs::remove_dir_all(&link);
        symlink(elsewhere.path(), &link).unwrap();
        let mut c = scrubbed_cmd(dir);
        with_fake(&mut c, &fake);
        let out = run(c.args(["--csv", "contacts.csv"]).args(args));
        assert_eq!(out.code, 73, "{name}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
        std::fs::remove_file(&link).unwrap();
    }
    // The savepoint (and its lock) of a merge run.
    symlink(elsewhere.path().join("sp.json"), dir.join("savepoint.json")).unwrap();
    let mut c = scrubbed_cmd(dir);
    with_fake(&mut c, &fake);
    let out = run(c.args(["--csv", "contacts.csv", "--yes"]));
    assert_eq!(out.code, 73, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    std::fs::remove_file(dir.join("savepoint.json")).unwrap();
    symlink(elsewhere.path().join("lk"), dir.join("savepoint.json.lock")).unwrap();
    let mut c = scrubbed_cmd(dir);
    with_fake(&mut c, &fake);
    let out = run(c.args(["--csv", "contacts.csv", "--yes"]));
    assert_eq!(out.code, 73, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing may land at a link's target"
    );
    assert!(fake.with_state(|s| s.merges.is_empty()));
}

#[test]
fn loose_data_folders_are_tightened_with_a_warning() {
    let (fake, tmp) = world(1, |_| {});
    for name in ["backups", "logs"] {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = run(&mut backup_only(&fake, tmp.path()));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("was open to others"), "{}", out.stderr);
    assert_eq!(mode(&tmp.path().join("backups")), 0o700);
    assert_eq!(mode(&tmp.path().join("logs")), 0o700);
}

// ---- 5. proxies ------------------------------------------------------------------------

#[test]
fn no_proxy_ever_sees_a_request_to_a_loopback_base_url() {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = proxy.local_addr().unwrap();
    let contacted = Arc::new(AtomicUsize::new(0));
    {
        let contacted = contacted.clone();
        std::thread::spawn(move || {
            for s in proxy.incoming().flatten() {
                contacted.fetch_add(1, Ordering::SeqCst);
                let mut s = s;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
            }
        });
    }
    let fake = FakeServer::start(FakeOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = scrubbed_cmd(tmp.path());
    with_fake(&mut c, &fake);
    let url = format!("http://{addr}");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env(var, &url);
    }
    let out = run(c.arg("--test-api"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the proxy was contacted"
    );
    assert!(fake.count("/auth-tokens.info") >= 1);
}

// ---- 6. numbers ------------------------------------------------------------------------

#[test]
fn numbers_that_do_not_fit_are_clear_errors_naming_the_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let huge = "99999999999999999999";
    std::fs::write(
        dir.join("c.csv"),
        format!(
            "REV_USER_ID,EMAIL,EXTERNAL_REF,TICKET_COUNT\nREVU-1,a@x.com,REVU-1,{huge}\n\
             REVU-2,a@x.com,user_2,18446744073709551615\n"
        ),
    )
    .unwrap();
    let out = run(scrubbed_cmd(dir).args(["--csv", "c.csv", "--preview"]));
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains("line 2") && out.stderr.contains(huge),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("line 3"), "{}", out.stderr);
    let cases: [(&str, &str, &[&str]); 5] = [
        ("RATE_LIMIT_PERIOD", "1e300", &[]),
        ("RATE_LIMIT_PERIOD", huge, &[]),
        ("DEVREV_READ_TIMEOUT", huge, &[]),
        ("DEVREV_REQUEST_DEADLINE", "inf", &[]),
        ("X", "", &["--merge-timeout", huge]),
    ];
    for (var, value, args) in cases {
        let mut c = scrubbed_cmd(dir);
        c.env("DEVREV_API_TOKEN", "t")
            .env("DEVREV_BASE_URL", "http://127.0.0.1:9")
            .env(var, value)
            .args(["--csv", "c.csv"])
            .args(args);
        let out = run(&mut c);
        assert_eq!(out.code, 78, "{var}={value} {args:?}: {}", out.stderr);
        let named = if args.is_empty() {
            var
        } else {
            "--merge-timeout"
        };
        assert!(out.stderr.contains(named), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let out = run(scrubbed_cmd(dir).args(["--csv", "c.csv", "--read-timeout", huge]));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(out.stderr.contains("--read-timeout"), "{}", out.stderr);
}

// ---- 7. CSV limits ---------------------------------------------------------------------

#[test]
fn hostile_csvs_are_exit_65_with_the_line_and_a_short_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let head = "REV_USER_ID,EMAIL,EXTERNAL_REF\nREVU-1,a@x.com,REVU-1\n";
    // An unterminated quote on line 3, then 8 MiB more.
    let mut open = format!("{head}REVU-2,\"b@x.com,user_2\n");
    open.push_str(&"REVU-9,c@x.com,user_9\n".repeat(8 << 20 >> 5));
    let nul = format!("{head}REVU-2,b@x.com,us\0er_2\n");
    let mut utf8 = head.as_bytes().to_vec();
    utf8.extend_from_slice(b"REVU-2,b\xff@x.com,user_2\n");
    for (name, bytes, needle) in [
        ("open.csv", open.into_bytes(), "line 3"),
        ("nul.csv", nul.into_bytes(), "NUL"),
        ("utf8.csv", utf8, "UTF-8"),
    ] {
        std::fs::write(dir.join(name), &bytes).unwrap();
        let out = run(scrubbed_cmd(dir).args(["--csv", name, "--preview"]));
        assert_eq!(out.code, 65, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{name}: {}", out.stderr);
        assert!(out.stderr.contains("line 3"), "{name}: {}", out.stderr);
        assert!(
            out.stderr.len() < 2000,
            "{name}: {} bytes",
            out.stderr.len()
        );
    }
}

// ---- 8. the terminal -------------------------------------------------------------------

#[test]
fn escape_sequences_in_names_reach_the_terminal_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}Eve\u{9b}1m";
    std::fs::write(
        dir.join("c.csv"),
        format!(
            "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,TICKET_COUNT\n\
             REVU-1,{evil},a@x.com,user_1,1\nREVU-2,{evil},a@x.com,user_2,1\n\
             REVU-3,x,b@x.com,REVU-3,\u{1b}[31m\n"
        ),
    )
    .unwrap();
    let out = run(scrubbed_cmd(dir).args(["--csv", "c.csv", "--preview"]));
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(out.stderr.contains("\\u{1b}[31m"), "{}", out.stderr);
    std::fs::write(
        dir.join("c.csv"),
        format!(
            "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,TICKET_COUNT\n\
             REVU-1,{evil},a@x.com,user_1{evil},1\nREVU-2,{evil},a@x.com,user_2{evil},1\n"
        ),
    )
    .unwrap();
    let out = run(scrubbed_cmd(dir).args(["--csv", "c.csv", "--preview"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\\u{1b}[2J"), "{}", out.stdout);
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
    }
}
