//! The plan file (`reports/plan-<ts>.json`, and `--json`): its document and its layout.
//!
//! The document is exactly what serde makes of [`PlanReport`]; the layout is for people and
//! `grep`: one top-level key per line, one array element (a pair, a group, a contact) per
//! line. A million-row export gives a 100 MB plan, so the big arrays are encoded in chunks on
//! two helper threads while the calling thread writes.
//!
//! Each element is encoded by `serde_json`. A hand-written encoder was measured against it on
//! the 1,000,000-row benchmark (`benches/detect.sh`, release build, 104 MB plan, 2 shared
//! cores, two runs each, `/usr/bin/time`): hand-written 2.04 s / 0.92 s wall, 166 / 170 MB peak
//! RSS, 1.07 / 0.98 s CPU; serde_json 1.44 s / 0.82 s wall, 168 / 171 MB, 1.15 / 1.04 s CPU.
//! About 7% less CPU and no wall time gained (the encoding runs beside the writing), so the
//! hand-written encoder and its escaping rules were dropped.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::detect::{Plan, ReviewReason};
use crate::options::{BackupScope, Keep};
use crate::validate::{LiveProblem, LiveTickets};

#[cfg(test)]
impl Estimate {
    /// A small estimate for unit tests of what renders or writes one.
    pub fn sample() -> Self {
        Estimate {
            pairs: 1,
            api_calls: 2,
            calls_per_pair: 2.0,
            seconds: 3.0,
            api_calls_low: 1,
            api_calls_high: 4,
            seconds_low: 1.5,
            seconds_high: 6.0,
            live_ticket_counts: 0,
            rate_limit_calls: 45,
            rate_limit_period_s: 60.0,
            keep: Keep::Revu,
            backup_scope: BackupScope::Secondary,
            unknown_ticket_counts: 0,
            merge_wait_s: 2.0,
        }
    }
}

/// What the merge run will cost in API calls and time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub pairs: u64,
    /// The typical count: the per-pair formula of docs/api.md over the ticket counts.
    pub api_calls: u64,
    pub calls_per_pair: f64,
    /// At the configured pacing, `api_calls × period / calls`, plus the wait for the last
    /// merge to apply (the others are spent preparing the next pairs). `seconds_low` counts
    /// the same way; `seconds_high` counts one wait per pair (none hidden).
    pub seconds: f64,
    /// The honest range around `api_calls`: the saga's floor (no attachment, no conversation,
    /// one look after the merge) up to the priors of docs/api.md for what the CSV does not say.
    pub api_calls_low: u64,
    pub api_calls_high: u64,
    pub seconds_low: f64,
    pub seconds_high: f64,
    /// Pairs whose ticket counts were read live (`--check-live`) instead of taken from the CSV.
    pub live_ticket_counts: u64,
    pub rate_limit_calls: u32,
    pub rate_limit_period_s: f64,
    pub keep: Keep,
    pub backup_scope: BackupScope,
    /// Contacts of pairs whose TICKET_COUNT is empty (counted as 0 tickets).
    pub unknown_ticket_counts: u64,
    /// The wait after each merge request before the first look at the secondary, in seconds.
    pub merge_wait_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveOutcome {
    /// The pair still holds.
    Passed,
    /// DevRev's state refuses the pair; moved to needs-review.
    Refused,
    /// The check could not be made (API error after retries); moved to needs-review.
    Error,
}

/// One pair's live check, as written to the plan file.
#[derive(Debug, Clone, Serialize)]
pub struct LiveResult {
    pub email: String,
    pub primary: String,
    pub secondary: String,
    pub outcome: LiveOutcome,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<LiveProblem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tickets DevRev lists now (only for pairs that passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_tickets: Option<LiveTickets>,
    pub csv_tickets_primary: Option<u64>,
    pub csv_tickets_secondary: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `--keep auto` turned the pair round (the user_ contact kept): why. `primary` and
    /// `secondary` above are then the turned roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turned: Option<String>,
    /// What the merge's carry-over would write onto the survivor, as the two contacts stand
    /// now (absent with `--no-carry` and for pairs that did not pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_carry: Option<crate::merge::carry::CarryPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    pub base_url: String,
    pub checked: u64,
    pub passed: u64,
    pub refused: u64,
    pub errors: u64,
    /// Pairs whose live ticket counts differ from TICKET_COUNT (a warning: the warehouse
    /// counts owned/created/reported tickets, DevRev lists reported ones).
    pub ticket_count_differences: u64,
    pub api_calls: u64,
    /// Pairs `--keep auto` turned round (counted in `passed` too).
    #[serde(skip_serializing_if = "is_zero")]
    pub turned: u64,
    /// The carry-over's would-be writes over the pairs that passed.
    pub would_carry: crate::merge::carry::CarryCounts,
    pub results: Vec<LiveResult>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The plan file (`reports/plan-<ts>.json`) and `--json` output.
#[derive(Debug, Serialize)]
pub struct PlanReport<'a> {
    pub kind: &'static str,
    pub format_version: u32,
    pub tool_version: &'static str,
    pub generated_at: String,
    #[serde(flatten)]
    pub plan: &'a Plan,
    pub review_counts: BTreeMap<ReviewReason, u64>,
    pub estimate: &'a Estimate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_check: Option<&'a LiveSummary>,
    /// Clean pairs the savepoint keeps a merge run from starting (restored, or sharing a
    /// contact with another record): a run would skip each with this reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by_savepoint: Vec<HeldPair>,
}

/// A clean pair the savepoint holds, as the plan file lists it.
#[derive(Debug, Clone, Serialize)]
pub struct HeldPair {
    pub email: String,
    pub primary: String,
    pub secondary: String,
    /// Decided "do not merge" by a `--restore` (not a failure).
    pub do_not_merge: bool,
    pub reason: String,
}

/// Writes `report` (see the module documentation for the layout).
pub fn write(w: &mut dyn Write, r: &PlanReport) -> io::Result<()> {
    fn key(w: &mut dyn Write, first: &mut bool, k: &str) -> io::Result<()> {
        w.write_all(if *first { b"{\n  " } else { b",\n  " })?;
        *first = false;
        serde_json::to_writer(&mut *w, k)?;
        w.write_all(b": ")
    }
    fn value<T: Serialize + ?Sized>(w: &mut dyn Write, v: &T) -> io::Result<()> {
        serde_json::to_writer(w, v).map_err(io::Error::other)
    }
    let mut first = true;
    let f = &mut first;
    key(w, f, "kind")?;
    value(w, r.kind)?;
    key(w, f, "format_version")?;
    value(w, &r.format_version)?;
    key(w, f, "tool_version")?;
    value(w, r.tool_version)?;
    key(w, f, "generated_at")?;
    value(w, &r.generated_at)?;
    let p = r.plan;
    key(w, f, "source")?;
    value(w, &p.source)?;
    key(w, f, "keep")?;
    value(w, &p.keep)?;
    key(w, f, "email_domain")?;
    value(w, &p.email_domain)?;
    key(w, f, "rows_read")?;
    value(w, &p.rows_read)?;
    key(w, f, "emails")?;
    value(w, &p.emails)?;
    key(w, f, "outside_domain")?;
    value(w, &p.outside_domain)?;
    key(w, f, "singles")?;
    value(w, &p.singles)?;
    key(w, f, "pairs")?;
    write_array(w, &p.pairs, "  ")?;
    key(w, f, "needs_review")?;
    write_array(w, &p.needs_review, "  ")?;
    key(w, f, "no_email")?;
    write_array(w, &p.no_email, "  ")?;
    key(w, f, "review_counts")?;
    value(w, &r.review_counts)?;
    key(w, f, "estimate")?;
    value(w, r.estimate)?;
    if !r.held_by_savepoint.is_empty() {
        key(w, f, "held_by_savepoint")?;
        write_array(w, &r.held_by_savepoint, "  ")?;
    }
    if let Some(l) = r.live_check {
        key(w, f, "live_check")?;
        let mut inner = serde_json::to_value(l).map_err(io::Error::other)?;
        if let Some(obj) = inner.as_object_mut() {
            obj.remove("results");
        }
        // The summary without its closing `}`, then the results one per line.
        let head = serde_json::to_vec(&inner).map_err(io::Error::other)?;
        w.write_all(&head[..head.len() - 1])?;
        w.write_all(if head.len() > 2 {
            b",\"results\": "
        } else {
            b"\"results\": "
        })?;
        write_array(w, &l.results, "  ")?;
        w.write_all(b"}")?;
    }
    w.write_all(b"\n}\n")
}

/// A JSON array with one element per line, indented under `indent`.
fn write_array<T: Serialize + Sync>(
    w: &mut dyn Write,
    items: &[T],
    indent: &str,
) -> io::Result<()> {
    const CHUNK: usize = 1024;
    const WORKERS: usize = 2;
    if items.is_empty() {
        return w.write_all(b"[]");
    }
    let encode = |chunk: &[T], first: bool| -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(chunk.len() * 512);
        for (i, item) in chunk.iter().enumerate() {
            buf.extend_from_slice(if first && i == 0 { b"\n" } else { b",\n" });
            buf.extend_from_slice(indent.as_bytes());
            buf.extend_from_slice(b"  ");
            serde_json::to_writer(&mut buf, item).map_err(io::Error::other)?;
        }
        Ok(buf)
    };
    w.write_all(b"[")?;
    let chunks: Vec<&[T]> = items.chunks(CHUNK).collect();
    if chunks.len() == 1 {
        w.write_all(&encode(chunks[0], true)?)?;
    } else {
        std::thread::scope(|s| -> io::Result<()> {
            let mut receivers = Vec::with_capacity(WORKERS);
            for k in 0..WORKERS {
                // Two chunks in flight per worker bound the memory to a few megabytes.
                let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(2);
                receivers.push(rx);
                let chunks = &chunks;
                s.spawn(move || {
                    for (i, c) in chunks.iter().enumerate().skip(k).step_by(WORKERS) {
                        if tx.send(encode(c, i == 0)).is_err() {
                            return; // the writer gave up
                        }
                    }
                });
            }
            for i in 0..chunks.len() {
                let buf = receivers[i % WORKERS]
                    .recv()
                    .map_err(|_| io::Error::other("a plan encoder thread stopped"))??;
                w.write_all(&buf)?;
            }
            Ok(())
        })?;
    }
    w.write_all(b"\n")?;
    w.write_all(indent.as_bytes())?;
    w.write_all(b"]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{self, DetectOptions};

    #[test]
    fn the_plan_file_is_the_serde_document_one_element_per_line() {
        let mut csv = String::from("REV_USER_ID,EMAIL,EXTERNAL_REF,TICKET_COUNT\n");
        for i in 0..2500 {
            csv.push_str(&format!(
                "r{i},p{i}@x.com,REVU-r{i},1\nu{i},p{i}@x.com,user_{i},\n"
            ));
        }
        csv.push_str("a,dup@x.com,user_a,\nb,dup@x.com,user_b,2\nc,,\"REVU-c \"\"\\\\\u{1}\n\",\n");
        let opts = DetectOptions {
            keep: Keep::Revu,
            email_domain: None,
        };
        let mut plan =
            detect::plan_from_reader("c.csv", std::io::Cursor::new(csv.into_bytes()), &opts)
                .unwrap();
        plan.move_pair_to_review(0, ReviewReason::LiveNotFound, "gone".into());
        let est = Estimate::sample();
        let live = LiveSummary {
            base_url: "http://127.0.0.1:1/".into(),
            checked: 1,
            passed: 0,
            refused: 1,
            errors: 0,
            ticket_count_differences: 0,
            api_calls: 2,
            turned: 0,
            would_carry: Default::default(),
            results: vec![],
        };
        for live in [None, Some(&live)] {
            let report = PlanReport {
                kind: "devrev-merge plan",
                format_version: 1,
                tool_version: "0",
                generated_at: "now".into(),
                plan: &plan,
                review_counts: plan.review_counts(),
                estimate: &est,
                live_check: live,
                held_by_savepoint: vec![HeldPair {
                    email: "a@example.com".into(),
                    primary: "P".into(),
                    secondary: "S2".into(),
                    do_not_merge: true,
                    reason: "merged earlier and undone by --restore".into(),
                }],
            };
            let mut out = Vec::new();
            write(&mut out, &report).unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed, serde_json::to_value(&report).unwrap());
            let text = String::from_utf8(out).unwrap();
            // One pair per line, in order, across the helper threads' chunks.
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("    {\"email\":\"p"))
                .collect();
            assert_eq!(lines.len(), 2499 + 1, "pairs and the moved group");
        }
        assert_eq!(plan.pairs.len(), 2499);
    }
}
