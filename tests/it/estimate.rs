//! The preview's call estimate against what a merge run really costs: on the fake's worlds the
//! range the preview gives (from the CSV, and refined by `--check-live`) holds the number of
//! API calls the merge run then makes, counted by the fake.

use serde_json::Value;

use devrev_fake::fake::{MoveMode, SecondaryAfter};

use crate::merge::{World, behaviour, spec};

/// API calls in the fake's log from index `from` on (downloads are not API calls).
fn api_calls_since(w: &World, from: usize) -> u64 {
    w.fake.requests()[from..]
        .iter()
        .filter(|r| !r.path.starts_with("/download/"))
        .count() as u64
}

/// The plan file `--preview --json` prints, with `extra` flags.
fn preview(w: &World, extra: &[&str]) -> Value {
    let mut args = vec!["--csv", "contacts.csv", "--preview", "--json"];
    args.extend(extra);
    let out = w.cmd().args(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn range(plan: &Value) -> (u64, u64, u64) {
    let e = &plan["estimate"];
    (
        e["api_calls_low"].as_u64().unwrap(),
        e["api_calls"].as_u64().unwrap(),
        e["api_calls_high"].as_u64().unwrap(),
    )
}

/// Previews (plain and live), merges everything, and checks the real count against both ranges.
fn check_world(pairs: usize, attachments_pct: u8, rng_seed: u64) {
    let mut sp = spec(pairs, 1, rng_seed);
    sp.attachments_pct = attachments_pct;
    sp.tickets_per_contact = (0, 4);
    let w = World::new(sp, behaviour(MoveMode::All, SecondaryAfter::Gone));
    let csv = preview(&w, &[]);
    assert_eq!(api_calls_since(&w, 0), 0, "a plain preview calls nothing");
    let before_live = w.fake.requests().len();
    let live = preview(&w, &["--check-live"]);
    assert!(api_calls_since(&w, before_live) > 0);
    assert_eq!(live["estimate"]["live_ticket_counts"], pairs as u64);
    assert_eq!(csv["estimate"]["live_ticket_counts"], 0);

    let start = w.fake.requests().len();
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0));
    let real = api_calls_since(&w, start);
    let r = w.last_report();
    assert_eq!(
        r["summary"]["merged_this_run"], pairs as u64,
        "every pair merged"
    );

    let (lo, typical, hi) = range(&csv);
    let (llo, _, lhi) = range(&live);
    eprintln!(
        "world pairs={pairs} attachments={attachments_pct}%: real {real} calls; \
         CSV range {lo}..{hi} (typical {typical}); live range {llo}..{lhi}"
    );
    assert!(lo <= real && real <= hi, "CSV range {lo}..{hi} vs {real}");
    assert!(
        llo <= real && real <= lhi,
        "live range {llo}..{lhi} vs {real}"
    );
    assert!(
        lhi - llo <= hi - lo,
        "the live check narrows the range: {llo}..{lhi} vs {lo}..{hi}"
    );
}

#[test]
fn the_preview_range_holds_the_real_call_count() {
    check_world(6, 20, 41);
}

#[test]
fn the_range_holds_with_many_attachments() {
    check_world(6, 80, 42);
}
