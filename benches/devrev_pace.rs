//! Merge-run benchmark at DevRev's pace (issue 19): how much of the rate budget a whole run
//! uses, and whether the preview's estimate holds it.
//!
//! Run: `cargo bench --profile dev --bench devrev_pace` (optionally `-- PAIRS APPLY_DELAY_S
//! [apart|bare]`, default 10 pairs and 2 s; `apart`: no ticket names a contact of another pair;
//! `bare`: no contact has a ticket or a conversation; `DEVREV_MERGE_BIN=path` runs another build of the binary, e.g.
//! one of `main`; `DEVREV_PACE_GAPS=1` lists where the budget went unused; `DEVREV_PACE_DUMP=file` writes
//! every call the fake saw, with its body; `DEVREV_PACE_KEEP=1` keeps the run's folder, logs
//! included). Not a test and
//! not in CI: one run takes minutes, as a real one does.
//!
//! It starts the fake DevRev enforcing 45 calls per 60 s (what DevRev allows) with merges
//! applied `APPLY_DELAY_S` after they are accepted, runs `devrev-merge --csv contacts.csv
//! --preview --json` for the estimate, then `devrev-merge --csv contacts.csv --yes` at the
//! tool's defaults (45 calls per 60 s, 1 s backoff), and prints the API calls the fake saw
//! (downloads from pre-signed URLs are not API calls and not counted), the run's wall time, the budget use (calls per minute ÷ 45), the 429s the fake answered (all
//! self-caused: nothing else calls it), the time the budget went unused (gaps between calls
//! longer than 1.5 calls' share of the limit) and where the real calls and time fall in the
//! estimate's ranges. Targets (docs/benchmarks.md): budget use ≥ 0.95 at 2 s, ≥ 0.9 at 10 s,
//! no 429, wall ≤ 1.1 × calls ÷ rate + one apply delay.

use std::process::Command;
use std::time::{Duration, Instant};

use devrev_fake::fake::{FakeOptions, FakeServer, MergeBehaviour, RateLimit};
use devrev_fake::seed::{GenSpec, Seed};

const LIMIT: u32 = 45;
const WINDOW_S: u64 = 60;

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    // `apart`: no ticket names a contact of another pair (as in a large org, where a ticket's
    // other reporters are seldom another duplicate pair); by default a ticket has up to two
    // other reporters drawn from the whole small world, so neighbouring pairs often share one
    // and must run one after the other.
    let apart = std::env::args().any(|a| a == "apart");
    // `bare`: no contact has a ticket or a conversation (issue 29's "pair without tickets").
    let bare = std::env::args().any(|a| a == "bare");
    let pairs = args.first().copied().unwrap_or(10.0) as usize;
    let delay = Duration::from_secs_f64(args.get(1).copied().unwrap_or(2.0));
    let bin = std::env::var("DEVREV_MERGE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_devrev-merge").to_string());

    let fake = FakeServer::start(FakeOptions {
        seed: Seed::generate(&GenSpec {
            pairs,
            review_groups: 0,
            singles: 3,
            tickets_per_contact: if bare { (0, 0) } else { (0, 3) },
            shared_ticket_pct: 40,
            other_reporters: if apart { (0, 0) } else { (0, 2) },
            timeline_entries: (1, 2),
            attachments_pct: 20,
            attachment_size_max: 2048,
            conversations_per_secondary: if bare { (0, 0) } else { (0, 2) },
            unverified_secondary_pct: 0,
            shaped_groups: Vec::new(),
            rng_seed: 19,
        }),
        rate_limit: Some(RateLimit {
            limit: LIMIT,
            window: Duration::from_secs(WINDOW_S),
        }),
        merge: MergeBehaviour {
            delay,
            ..MergeBehaviour::default()
        },
        ..FakeOptions::default()
    });
    let dir = std::env::temp_dir().join(format!("devrev-pace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    std::fs::write(dir.join("contacts.csv"), fake.contacts_csv()).expect("csv");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env("DEVREV_BASE_URL", fake.base_url())
            .env("DEVREV_API_TOKEN", fake.token())
            .env("RATE_LIMIT_CALLS", LIMIT.to_string())
            .env("RATE_LIMIT_PERIOD", WINDOW_S.to_string())
            .args(args);
        c
    };

    let preview = cmd(&["--csv", "contacts.csv", "--preview", "--json"])
        .output()
        .expect("preview");
    assert!(preview.status.success(), "preview failed: {preview:?}");
    let plan: serde_json::Value = serde_json::from_slice(&preview.stdout).expect("plan JSON");
    let est = find(&plan, "api_calls_low").expect("the plan's estimate");
    let f = |k: &str| est[k].as_f64().unwrap_or(f64::NAN);

    let before = fake.requests().len();
    let t0 = Instant::now();
    let run = cmd(&["--csv", "contacts.csv", "--yes"])
        .output()
        .expect("merge run");
    let wall = t0.elapsed().as_secs_f64();
    let all = &fake.requests()[before..];
    // Downloads go to pre-signed URLs: not API calls, not paced, not counted by the limit.
    let reqs: Vec<_> = all
        .iter()
        .filter(|r| !r.path.starts_with("/download/"))
        .collect();
    let calls = reqs.len();
    let too_many = reqs.iter().filter(|r| r.status == 429).count();
    let merged = reqs.iter().filter(|r| r.path == "/rev-users.merge").count();
    let per_call = WINDOW_S as f64 / f64::from(LIMIT);
    let use_ = calls as f64 / (wall / 60.0) / f64::from(LIMIT);
    // Where the budget went unused: gaps between consecutive calls longer than one and a
    // half call's share of the limit (nothing was asked of DevRev then).
    let share = Duration::from_secs_f64(WINDOW_S as f64 / f64::from(LIMIT));
    let (mut gaps, mut idle) = (0usize, Duration::ZERO);
    for w in reqs.windows(2) {
        let gap = w[1].at.saturating_sub(w[0].at);
        if gap > share.mul_f64(1.5) {
            gaps += 1;
            idle += gap - share;
            if std::env::var_os("DEVREV_PACE_GAPS").is_some() {
                println!(
                    "  gap {:6.1} s at {:6.1} s: {} {} -> {} {}",
                    gap.as_secs_f64(),
                    w[0].at.as_secs_f64(),
                    w[0].path,
                    w[0].body.get("id").map_or(String::new(), |v| v.to_string()),
                    w[1].path,
                    w[1].body.get("id").map_or(String::new(), |v| v.to_string()),
                );
            }
        }
    }
    let floor = calls as f64 * per_call;
    let bound = 1.1 * floor + delay.as_secs_f64();
    println!(
        "devrev pace benchmark: {pairs} pairs{}, {LIMIT} calls per {WINDOW_S} s, merges applied {:.1} s after acceptance",
        if apart {
            " (apart: no shared tickets)"
        } else {
            ""
        },
        delay.as_secs_f64()
    );
    println!(
        "  run exit status            : {}",
        run.status.code().unwrap_or(-1)
    );
    println!("  merge requests             : {merged}");
    println!(
        "  API calls (seen by the fake): {calls} ({:.1} per pair), plus {} download(s)",
        calls as f64 / pairs.max(1) as f64,
        all.len() - calls
    );
    println!("  wall time                  : {wall:.1} s");
    println!("  calls / rate (the floor)   : {floor:.1} s");
    println!(
        "  wall <= 1.1 x floor + delay: {} ({bound:.1} s)",
        if wall <= bound { "yes" } else { "NO" }
    );
    println!("  budget use                 : {use_:.3} (calls per minute / {LIMIT})");
    println!(
        "  budget left unused         : {:.1} s in {gaps} gap(s) longer than 1.5 calls' share",
        idle.as_secs_f64()
    );
    println!("  429 answers (self-caused)  : {too_many}");
    println!(
        "  preview estimate           : {:.0} calls ({:.0} to {:.0}), {:.0} s ({:.0} to {:.0} s)",
        f("api_calls"),
        f("api_calls_low"),
        f("api_calls_high"),
        f("seconds"),
        f("seconds_low"),
        f("seconds_high")
    );
    println!(
        "  calls in the range         : {}",
        yes((f("api_calls_low")..=f("api_calls_high")).contains(&(calls as f64)))
    );
    println!(
        "  wall in the range          : {}",
        yes((f("seconds_low")..=f("seconds_high")).contains(&wall))
    );
    // Per endpoint, the figures the issues compare (e.g. each shared timeline read once).
    let mut per: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in &reqs {
        *per.entry(r.path.as_str()).or_default() += 1;
    }
    println!("  calls per endpoint         : {per:?}");
    // What the reads asked for: a thing read twice shows as more calls than distinct things.
    let mut distinct: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for r in &reqs {
        let key = ["id", "object", "artifact"]
            .iter()
            .find_map(|k| r.body.get(*k))
            .map(|v| v.to_string());
        if let Some(key) = key {
            distinct.entry(r.path.as_str()).or_default().insert(key);
        }
    }
    let distinct: std::collections::BTreeMap<&str, usize> =
        distinct.into_iter().map(|(k, v)| (k, v.len())).collect();
    println!("  distinct things read       : {distinct:?}");
    if let Some(path) = std::env::var_os("DEVREV_PACE_DUMP") {
        let lines: Vec<String> = reqs
            .iter()
            .map(|r| {
                format!(
                    "{:7.2} {} {} {}",
                    r.at.as_secs_f64(),
                    r.status,
                    r.path,
                    r.body
                )
            })
            .collect();
        let _ = std::fs::write(path, lines.join("\n"));
    }
    if !run.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    }
    if std::env::var_os("DEVREV_PACE_KEEP").is_some() {
        println!("  work dir kept              : {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

/// The object holding `key`, anywhere in `v`.
fn find<'v>(v: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    match v {
        serde_json::Value::Object(m) if m.contains_key(key) => Some(v),
        serde_json::Value::Object(m) => m.values().find_map(|x| find(x, key)),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}
