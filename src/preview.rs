//! `--preview`: the plan on stdout (summary, API-call and time estimate, tables) and in
//! `reports/plan-<timestamp>.json`; with `--check-live`, every pair re-checked read-only.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::Instrument;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::config::Config;
use crate::detect::{Contact, Pair, Plan, ReviewGroup, ReviewReason};
use crate::devrev::{ApiError, DevRevClient};
use crate::error::AppError;
use crate::options::{BackupScope, Keep};
pub use crate::planfile::{Estimate, LiveOutcome, LiveResult, LiveSummary};
use crate::validate::{self, LiveCheck, LiveProblem};

/// Rows shown per table on a terminal; the plan file always has everything.
pub const TERMINAL_ROWS: usize = 20;

/// Pairs checked at once by `--check-live` (the client's pacer still bounds the rate; a few in
/// flight keep the budget busy while one waits for an answer).
const LIVE_CONCURRENCY: usize = 4;

// ---- the estimate -----------------------------------------------------------------------

/// `ceil(n / page)`, at least one call (an empty list is still one request).
fn pages(n: u64, page: u64) -> u64 {
    n.div_ceil(page.max(1)).max(1)
}

/// API calls one pair's saga makes (DESIGN §6), from the CSV's ticket counts. The formula is
/// documented in docs/api.md ("Estimating a run from the CSV"); keep the two in step.
/// The same for every `--keep`: `--keep auto`'s turn check reads contacts in the run's
/// batched lists ([`batched_reads`]), so the direction costs nothing per pair.
pub fn calls_for_pair(pair: &Pair, scope: BackupScope, page: u64) -> u64 {
    let tp = pair.primary.ticket_count.unwrap_or(0);
    let ts = pair.secondary.ticket_count.unwrap_or(0);
    // Validate reads both contacts from the run's batched rev-users.list: counted once per
    // run by [`batched_reads`], not per pair.
    let validate = 0;
    let timelines = match scope {
        BackupScope::Secondary => ts,
        BackupScope::Both => tp + ts,
    };
    // works.list (both contacts) + one timeline-entries.list per ticket + conversations.list
    let backup = pages(tp + ts, page) + timelines + 1;
    let request_merge = 1; // rev-users.merge
    // Looks at the secondary until the merge shows (each one rev-users.list by both contacts'
    // refs, which also reads the survivor for the carry-over): about 2 with DevRev's ~2 s
    // merge delay and the saga's 1 s first backoff (measured on the merge branch).
    let await_merge = 2;
    // works.list (primary) + conversations.list
    let reconcile = pages(tp + ts, page) + 1;
    // The primary's display name is checked once: in the answer of the adoption's
    // rev-users.update under --keep revu, by a rev-users.get under --keep user.
    let last = 1;
    validate + backup + request_merge + await_merge + reconcile + last
}

/// The run's batched contact reads (issue 29): one `rev-users.list` per
/// [`validate::WINDOW`] contacts for Validate, and as many again under `--keep auto` for the
/// turn check before the saga.
pub fn batched_reads(pairs: u64, keep: Keep) -> u64 {
    let lists = (2 * pairs).div_ceil(validate::WINDOW as u64);
    if keep == Keep::Auto { 2 * lists } else { lists }
}

/// Pairs whose merges may be in flight, and so share their reads after the merge, together
/// (`merge/scheduler/ahead.rs`: the pair in hand and `DEPTH` ahead), and
/// about how many pairs one shared list covers at most.
const SHARED_BY: u64 = 10;

/// The lists a run shares between pairs, at fewest: per ten pairs one `works.list` and one
/// `conversations.list` for the backups, as many for the Reconciles (issue 29; the survivor
/// is read by the look that finds its merge applied). Only reached when no pair meets
/// another (no shared ticket), so that all their merges fly together.
pub fn shared_reads_low(pairs: u64) -> u64 {
    4 * pairs.div_ceil(SHARED_BY)
}

/// Attachments per backed-up ticket or conversation, at most: each costs one
/// `artifacts.locate`, plus one `artifacts.get` when DevRev's summary omits the size. A prior
/// (docs/api.md, "Estimating a run from the CSV"): the CSV does not say, and reading every timeline to count
/// them would cost what it estimates.
pub const PRIOR_ATTACHMENTS_PER_OBJECT: u64 = 2;
/// Conversations a secondary is a member of, at most: each is backed up with one
/// `timeline-entries.list`.
pub const PRIOR_CONVERSATIONS_PER_CONTACT: u64 = 2;
/// Looks at the secondary until the merge shows (one `rev-users.list` each, a
/// `rev-users.get` when that proves nothing): one when the first comes after DevRev applied
/// it, up to four when DevRev is slow.
const POLLS: (u64, u64) = (1, 4);

/// What is known of one pair's tickets: the CSV's counts (`shared` unknown, so the distinct
/// tickets lie between the larger count and the sum), or the live counts of `--check-live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownTickets {
    pub primary: u64,
    pub secondary: u64,
    /// Tickets naming both; `None` when not read (from the CSV).
    pub shared: Option<u64>,
}

impl KnownTickets {
    fn from_csv(pair: &Pair) -> Self {
        Self {
            primary: pair.primary.ticket_count.unwrap_or(0),
            secondary: pair.secondary.ticket_count.unwrap_or(0),
            shared: None,
        }
    }

    /// Distinct tickets of the pair: (fewest, most).
    fn distinct(self) -> (u64, u64) {
        let sum = self.primary + self.secondary;
        match self.shared {
            Some(s) => (sum - s.min(sum), sum - s.min(sum)),
            None => (self.primary.max(self.secondary), sum),
        }
    }
}

/// One pair's API calls, lowest and highest (see [`PRIOR_ATTACHMENTS_PER_OBJECT`]).
pub fn call_range(t: KnownTickets, keep: Keep, scope: BackupScope, page: u64) -> (u64, u64) {
    let (_, d_hi) = t.distinct();
    let list_hi = pages(d_hi, page);
    let backed_hi = match scope {
        BackupScope::Secondary => t.secondary,
        BackupScope::Both => d_hi,
    };
    // The adoption's rev-users.update (--keep revu) or the primary's re-read (--keep user):
    // one or the other (docs/api.md, "API calls per pair").
    let last = 1;
    // merge + one look + adopt or re-read. No timeline: each of the pair's tickets may have
    // been read by an earlier pair of the run (threads naming several customers are read once
    // per run), and the export's TICKET_COUNT may count tickets DevRev no longer lists (it is
    // older than DevRev: a warehouse lags). The lists (the backup's, Reconcile's) may all be
    // shared with other pairs' (issue 29: merges applied together are reconciled together),
    // and the survivor is read by the look: [`shared_reads_low`], run-wide.
    let low = 1 + POLLS.0 + last;
    let convs = PRIOR_CONVERSATIONS_PER_CONTACT;
    let attachments = PRIOR_ATTACHMENTS_PER_OBJECT * (backed_hi + convs);
    // --keep auto may read both contacts once more to decide the direction, each a
    // rev-users.get when the batched list left it out.
    let turn = if keep == Keep::Auto { 2 } else { 0 };
    // + both contacts read alone (a list that ignores its filter, or left them out), a
    // conversation timeline each, two calls per attachment.
    let high = turn
        + 2
        + list_hi
        + backed_hi
        + 1
        + convs
        + 2 * attachments
        + 1
        + POLLS.1
        + list_hi
        + 1
        + last;
    (low, high)
}

/// The merge run's estimate. `live` (from `--check-live`) replaces the CSV's ticket counts of
/// the pairs it read.
/// `pairs` are the merges a run would make: the plan's clean pairs, or what the decisions and
/// the savepoint leave of them with the decided groups' merges.
pub fn estimate(
    pairs: &[crate::detect::Pair],
    cfg: &Config,
    live: Option<&LiveSummary>,
) -> Estimate {
    let page = u64::from(cfg.page_size);
    let live_counts: std::collections::HashMap<(&str, &str), KnownTickets> = live
        .into_iter()
        .flat_map(|l| &l.results)
        .filter_map(|r| {
            let t = r.live_tickets?;
            let known = KnownTickets {
                primary: t.primary,
                secondary: t.secondary,
                shared: Some(t.shared),
            };
            Some(((r.primary.as_str(), r.secondary.as_str()), known))
        })
        .collect();
    let batched = batched_reads(pairs.len() as u64, cfg.keep);
    let shared_low = shared_reads_low(pairs.len() as u64);
    let (mut calls, mut low, mut high, mut refined) = (batched, batched + shared_low, batched, 0);
    for p in pairs {
        calls += calls_for_pair(p, cfg.backup_scope, page);
        let known = live_counts
            .get(&(
                p.primary.rev_user_id.as_str(),
                p.secondary.rev_user_id.as_str(),
            ))
            .copied();
        refined += u64::from(known.is_some());
        let t = known.unwrap_or_else(|| KnownTickets::from_csv(p));
        let (lo, hi) = call_range(t, cfg.keep, cfg.backup_scope, page);
        low += lo;
        high += hi;
    }
    let unknown = pairs
        .iter()
        .flat_map(|p| [&p.primary, &p.secondary])
        .filter(|c| c.ticket_count.is_none())
        .count() as u64;
    let n = pairs.len() as u64;
    Estimate {
        pairs: n,
        api_calls: calls,
        calls_per_pair: if n == 0 { 0.0 } else { calls as f64 / n as f64 },
        seconds: run_seconds(calls, n, cfg, Waits::Hidden),
        api_calls_low: low,
        api_calls_high: high,
        seconds_low: run_seconds(low, n, cfg, Waits::Overlapped),
        seconds_high: run_seconds(high, n, cfg, Waits::Exposed),
        live_ticket_counts: refined,
        rate_limit_calls: cfg.rate_limit_calls,
        rate_limit_period_s: cfg.rate_limit_period.as_secs_f64(),
        keep: cfg.keep,
        backup_scope: cfg.backup_scope,
        unknown_ticket_counts: unknown,
        merge_wait_s: merge_wait(cfg),
    }
}

/// How much of the merge waits a run's length shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waits {
    /// Each wait is spent preparing the next pair (`merge/scheduler/ahead.rs`): only the last
    /// pair's wait adds to the calls' time.
    Hidden,
    /// No wait is hidden (every pair meets the one before it): one wait per pair.
    Exposed,
    /// Every wait overlaps other pairs' calls, the last one's too (pairs that meet nothing
    /// have their merges in flight together): the calls alone.
    Overlapped,
}

/// A merge run's length: its calls at the configured pacing plus the waits for merges to
/// apply that no other call fills. Each wait is the first look's initial delay (twice the
/// poll loop's first delay: 2 s at the default 1 s, DevRev's usual apply delay).
fn run_seconds(calls: u64, pairs: u64, cfg: &Config, waits: Waits) -> f64 {
    let wait = merge_wait(cfg);
    let exposed = match waits {
        _ if pairs == 0 => 0,
        Waits::Overlapped => 0,
        Waits::Hidden => 1,
        Waits::Exposed => pairs,
    };
    seconds_for(calls, cfg) + exposed as f64 * wait
}

/// The wait before the first look after a merge request, in seconds (`saga/watch.rs`).
pub fn merge_wait(cfg: &Config) -> f64 {
    2.0 * cfg.min_backoff.as_secs_f64()
}

fn seconds_for(calls: u64, cfg: &Config) -> f64 {
    calls as f64 * cfg.rate_limit_period.as_secs_f64() / f64::from(cfg.rate_limit_calls.max(1))
}

// ---- the live check ---------------------------------------------------------------------

/// Errors that end the whole check: nothing more can be learned by going on.
fn is_fatal(e: &ApiError) -> bool {
    e.scope() == crate::devrev::Scope::Run
}

async fn check_one(
    client: &DevRevClient,
    reads: &validate::ContactReads,
    pair: &Pair,
    keep: Keep,
    carry: bool,
) -> Result<LiveResult, ApiError> {
    let mut r = LiveResult {
        email: pair.email.clone(),
        primary: pair.primary.rev_user_id.clone(),
        secondary: pair.secondary.rev_user_id.clone(),
        outcome: LiveOutcome::Passed,
        problems: vec![],
        error: None,
        live_tickets: None,
        csv_tickets_primary: pair.primary.ticket_count,
        csv_tickets_secondary: pair.secondary.ticket_count,
        warnings: vec![],
        turned: None,
        would_carry: None,
    };
    let fail = |mut r: LiveResult, e: ApiError| {
        if is_fatal(&e) {
            return Err(e);
        }
        r.outcome = LiveOutcome::Error;
        r.error = Some(e.to_string());
        Ok(r)
    };
    let checked = validate::validate_pair(client, pair, reads).await;
    let turned = match (&checked, keep) {
        (Ok(c), Keep::Auto) => validate::turned(pair, c),
        _ => None,
    };
    let live = match checked {
        _ if turned.is_some() => {
            let (swapped, live) = turned.expect("checked above");
            r.primary = swapped.primary.rev_user_id;
            r.secondary = swapped.secondary.rev_user_id;
            std::mem::swap(&mut r.csv_tickets_primary, &mut r.csv_tickets_secondary);
            r.turned = Some(validate::TURNED_BECAUSE.to_string());
            live
        }
        Ok(LiveCheck::Passed(live)) => live,
        Ok(LiveCheck::Refused { problems, .. }) => {
            r.outcome = LiveOutcome::Refused;
            r.problems = problems;
            return Ok(r);
        }
        Err(e) => return fail(r, e),
    };
    r.warnings = live.warnings;
    if carry {
        r.would_carry = Some(crate::merge::carry::plan(&live.secondary, &live.primary));
    }
    match validate::live_ticket_counts(client, &live.primary.id, &live.secondary.id).await {
        Ok(t) => {
            for (role, csv, now) in [
                ("primary", r.csv_tickets_primary, t.primary),
                ("secondary", r.csv_tickets_secondary, t.secondary),
            ] {
                if let Some(csv) = csv.filter(|c| *c != now) {
                    r.warnings.push(format!(
                        "{role}: TICKET_COUNT says {csv}, DevRev lists {now} ticket(s)"
                    ));
                }
            }
            r.live_tickets = Some(t);
            Ok(r)
        }
        Err(e) => fail(r, e),
    }
}

/// Checks every pair of `plan` live and moves the ones that fail to needs-review.
pub async fn check_live(cfg: &Config, plan: &mut Plan) -> Result<LiveSummary, AppError> {
    let client = DevRevClient::new(cfg.client_config()?)?;
    let n = plan.pairs.len();
    // Contacts are read a window at a time (one rev-users.list per ten pairs, a get for any
    // it leaves out); a preview reads each once, so the run's freshness window does not apply.
    let reads = validate::ContactReads::new(&plan.pairs, Duration::from_secs(24 * 3600));
    if n > 0 {
        // One list per window of contacts and one works.list page per pair, at least.
        let calls = (2 * n).div_ceil(validate::WINDOW) + n;
        let secs = seconds_for(calls as u64, cfg);
        tracing::info!(
            "checking {n} pair(s) live: at least {calls} API calls, about {}",
            human_duration(secs)
        );
    }
    let span = crate::progress_span!("check-live", n);
    let bar = span.clone();
    let pairs = &plan.pairs;
    let client_ref = &client;
    let reads_ref = &reads;
    let results = async move {
        let mut out = Vec::with_capacity(n);
        let mut stream = futures_util::stream::iter(pairs.iter())
            .map(|p| check_one(client_ref, reads_ref, p, cfg.keep, cfg.carry))
            .buffered(LIVE_CONCURRENCY);
        while let Some(r) = stream.next().await {
            bar.pb_inc(1);
            out.push(r?);
        }
        Ok::<_, ApiError>(out)
    }
    .instrument(span.clone())
    .await;
    let results = results.map_err(|e| {
        tracing::error!("the live check stopped: {e}");
        AppError::Api(e)
    })?;
    drop(span);

    let mut summary = LiveSummary {
        base_url: cfg.base_url.to_string(),
        checked: results.len() as u64,
        passed: 0,
        refused: 0,
        errors: 0,
        ticket_count_differences: 0,
        api_calls: client.totals().calls,
        turned: 0,
        would_carry: Default::default(),
        results: vec![],
    };
    for (i, r) in results.iter().enumerate().rev() {
        if r.turned.is_some() {
            summary.turned += 1;
            plan.pairs[i] = plan.pairs[i].swapped();
        }
        match r.outcome {
            LiveOutcome::Passed => summary.passed += 1,
            LiveOutcome::Refused => {
                summary.refused += 1;
                let reason = r
                    .problems
                    .first()
                    .map_or(ReviewReason::LiveCheckFailed, LiveProblem::reason);
                let detail = r
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                plan.move_pair_to_review(i, reason, detail);
            }
            LiveOutcome::Error => {
                summary.errors += 1;
                let detail = r.error.clone().unwrap_or_default();
                plan.move_pair_to_review(i, ReviewReason::LiveCheckFailed, detail);
            }
        }
        if let Some(c) = r
            .would_carry
            .as_ref()
            .filter(|_| r.outcome == LiveOutcome::Passed)
        {
            summary.would_carry.add_plan(c);
        }
        if r.warnings.iter().any(|w| w.contains("TICKET_COUNT")) {
            summary.ticket_count_differences += 1;
        }
    }
    summary.results = results;
    Ok(summary)
}

// ---- human output -------------------------------------------------------------------------

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds → `2 h 05 m`, `3 m 20 s`, `45 s`.
pub fn human_duration(secs: f64) -> String {
    // Anything that takes time takes at least "1 s": "about 0 s" reads as a bug.
    let rounded = if secs > 0.0 {
        secs.round().max(1.0)
    } else {
        0.0
    };
    let d = Duration::from_secs_f64(rounded);
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} m", s / 3600, s % 3600 / 60),
    }
}

/// Shortens `s` to `max` characters with a trailing `…`.
/// `s` made terminal-safe ([`crate::output::safe`]) and cut to `max` characters.
fn cut(s: &str, max: usize) -> String {
    let s = crate::output::safe(s);
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn tickets(c: &Contact) -> String {
    c.ticket_count
        .map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// A plain left-aligned table; `right` marks right-aligned columns.
fn table<W: Write, T>(
    w: &mut W,
    head: &[&str],
    right: &[bool],
    items: &[T],
    cells: impl Fn(&T) -> Vec<String>,
) -> io::Result<()> {
    // Two passes over the items (widths, then lines) so a table of a hundred thousand pairs
    // never sits in memory as text.
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for item in items {
        for (i, cell) in cells(item).iter().enumerate() {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |w: &mut W, cells: &[String]| -> io::Result<()> {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            s.push(' ');
            if right[i] {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push(' ');
        }
        writeln!(w, "{}", s.trim_end())
    };
    line(w, &head.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    for item in items {
        line(w, &cells(item))?;
    }
    Ok(())
}

/// The heading of a table: the count, and where the rest is when the table is shortened.
fn heading<W: Write>(
    w: &mut W,
    title: &str,
    total: usize,
    limit: Option<usize>,
    path: &Path,
) -> io::Result<()> {
    match limit {
        Some(l) if total > l => writeln!(
            w,
            "\n{title} ({}; showing the first {l}, the full list is in {}):",
            thousands(total as u64),
            path.display()
        ),
        _ => writeln!(w, "\n{title} ({}):", thousands(total as u64)),
    }
}

fn member(c: &Contact) -> String {
    let id = c.display_id();
    if c.external_ref == id {
        crate::output::safe(&id).into_owned()
    } else {
        format!(
            "{} [{}]",
            crate::output::safe(&id),
            cut(&c.external_ref, 40)
        )
    }
}

/// The whole human preview. `limit` shortens each table (on a terminal).
pub fn print_human<W: Write>(
    w: &mut W,
    plan: &Plan,
    est: &Estimate,
    live: Option<&LiveSummary>,
    plan_path: &Path,
    limit: Option<usize>,
) -> io::Result<()> {
    print_summary(w, plan)?;
    if let Some(l) = live {
        print_live(w, l)?;
    }
    print_estimate(w, est)?;
    print_tables(w, plan, plan_path, limit)?;
    writeln!(w, "\nPlan written to {}", plan_path.display())
}

/// The counts: one labelled line per bucket of the plan.
fn print_summary<W: Write>(w: &mut W, plan: &Plan) -> io::Result<()> {
    let keep = match plan.keep {
        Keep::Revu => "the REVU- contact survives (--keep revu)",
        Keep::User => "the user_ contact survives (--keep user)",
        Keep::Auto => {
            "the REVU- contact survives, or the user_ one where DevRev refuses that direction \
             (--keep auto: decided live, by --check-live and by the merge run)"
        }
    };
    writeln!(w, "Plan for {}: {keep}", plan.source)?;
    let n = |v: u64| thousands(v);
    let mut summary: Vec<(String, String)> = vec![
        ("rows read".into(), n(plan.rows_read)),
        ("emails".into(), n(plan.emails)),
        ("clean pairs".into(), n(plan.pairs.len() as u64)),
        (
            "needs review".into(),
            format!(
                "{} group(s), {} row(s)",
                n(plan.needs_review.len() as u64),
                n(plan.review_rows())
            ),
        ),
    ];
    for (reason, count) in plan.review_counts() {
        summary.push((format!("  {}", reason.describe()), n(count)));
    }
    summary.push(("rows without email".into(), n(plan.no_email.len() as u64)));
    let s = plan.singles;
    summary.push((
        "single rows (nothing to merge)".into(),
        format!(
            "{} (REVU- {}, user_ {}, -drop- {}, other {})",
            n(s.total()),
            n(s.revu),
            n(s.user),
            n(s.drop),
            n(s.other)
        ),
    ));
    if let Some(d) = &plan.email_domain {
        summary.push((
            format!("outside --email-domain {d}"),
            n(plan.outside_domain),
        ));
    }
    let label_w = summary
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for (label, value) in &summary {
        writeln!(w, "  {label:<label_w$}  {value}")?;
    }
    Ok(())
}

/// What `--live` found.
fn print_live<W: Write>(w: &mut W, l: &LiveSummary) -> io::Result<()> {
    let n = |v: u64| thousands(v);
    writeln!(
        w,
        "\nLive check against {}: {} pair(s) checked, {} still hold, {} refused, {} could not be checked \
         ({} API calls); {} pair(s) with ticket counts that differ from the export (see the plan file).",
        l.base_url,
        n(l.checked),
        n(l.passed),
        n(l.refused),
        n(l.errors),
        n(l.api_calls),
        n(l.ticket_count_differences)
    )?;
    if l.would_carry != crate::merge::carry::CarryCounts::default() {
        writeln!(
            w,
            "  The secondaries' own data the survivors lack (carried over after each merge; --no-carry: left to the backup): {}",
            l.would_carry.line_with("would carry")
        )?;
    }
    if l.turned > 0 {
        writeln!(
            w,
            "  Turned by --keep auto: {} pair(s) keep the user_ contact, because {}:",
            n(l.turned),
            validate::TURNED_BECAUSE
                .split_once(':')
                .map_or(validate::TURNED_BECAUSE, |(why, _)| why)
        )?;
        for r in l.results.iter().filter(|r| r.turned.is_some()) {
            writeln!(
                w,
                "    {}  keep {}, merge {} into it",
                r.email, r.primary, r.secondary
            )?;
        }
    }
    Ok(())
}

/// The merge run's estimated calls and time, and how they are counted.
fn print_estimate<W: Write>(w: &mut W, est: &Estimate) -> io::Result<()> {
    let n = |v: u64| thousands(v);
    writeln!(
        w,
        "\nEstimated merge run: {} API calls ({:.1} per pair), about {} at {} calls per {} s.",
        n(est.api_calls),
        est.calls_per_pair,
        human_duration(est.seconds),
        est.rate_limit_calls,
        est.rate_limit_period_s
    )?;
    if est.pairs > 0 {
        writeln!(
            w,
            "  Merge waits: about {} after each merge, spent preparing the next pair; the \
             time includes the last one, the bottom of the range none, the top one per pair.",
            human_duration(est.merge_wait_s)
        )?;
    }
    writeln!(
        w,
        "  Range: {} to {} API calls, {} to {}{}.",
        n(est.api_calls_low),
        n(est.api_calls_high),
        human_duration(est.seconds_low),
        human_duration(est.seconds_high),
        if est.live_ticket_counts > 0 {
            format!(
                "; ticket counts of {} pair(s) read live",
                n(est.live_ticket_counts)
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        w,
        "  Per pair: 6 + 2 x pages(both contacts' tickets) + one timeline per ticket{}{}, plus one \
         rev-users.list per 20 contacts; ticket counts \
         from TICKET_COUNT{}. The range allows up to {PRIOR_CONVERSATIONS_PER_CONTACT} conversations \
         per secondary and {PRIOR_ATTACHMENTS_PER_OBJECT} attachments per ticket or conversation \
         (docs/api.md, \"Estimating a run from the CSV\").",
        match est.backup_scope {
            BackupScope::Secondary => " (secondary's tickets)",
            BackupScope::Both => " (both contacts' tickets)",
        },
        match est.keep {
            Keep::Revu | Keep::User => "",
            Keep::Auto => " (the live turn check: lists once more)",
        },
        if est.unknown_ticket_counts > 0 {
            format!(
                ", {} empty count(s) taken as 0",
                n(est.unknown_ticket_counts)
            )
        } else {
            String::new()
        }
    )
}

/// The clean pairs, the groups that need review and the rows without email, each table cut
/// to `limit` rows.
fn print_tables<W: Write>(
    w: &mut W,
    plan: &Plan,
    plan_path: &Path,
    limit: Option<usize>,
) -> io::Result<()> {
    let take = |total: usize| limit.map_or(total, |l| l.min(total));
    heading(w, "Clean pairs", plan.pairs.len(), limit, plan_path)?;
    if !plan.pairs.is_empty() {
        let pair_cells = |p: &Pair| {
            // A `REVU-` contact's ref is its display id: one cell, the ref in brackets only
            // where it says something more (two columns always repeated each other).
            vec![
                cut(&p.email, 40),
                member(&p.primary),
                tickets(&p.primary),
                member(&p.secondary),
                tickets(&p.secondary),
            ]
        };
        table(
            w,
            &[
                "EMAIL",
                "PRIMARY [REF]",
                "TICKETS",
                "SECONDARY [REF]",
                "TICKETS",
            ],
            &[false, false, true, false, true],
            &plan.pairs[..take(plan.pairs.len())],
            pair_cells,
        )?;
    }

    heading(w, "Needs review", plan.needs_review.len(), limit, plan_path)?;
    if !plan.needs_review.is_empty() {
        let group_cells = |g: &ReviewGroup| {
            let mut members: Vec<String> = g.contacts.iter().take(3).map(member).collect();
            if g.contacts.len() > 3 {
                members.push(format!("... {} more", g.contacts.len() - 3));
            }
            vec![
                cut(&g.email, 40),
                g.reason.describe().to_string(),
                g.contacts.len().to_string(),
                members.join(", "),
            ]
        };
        table(
            w,
            &["EMAIL", "REASON", "ROWS", "CONTACTS (display id [ref])"],
            &[false, false, true, false],
            &plan.needs_review[..take(plan.needs_review.len())],
            group_cells,
        )?;
    }

    if !plan.no_email.is_empty() {
        heading(
            w,
            "Rows without email",
            plan.no_email.len(),
            limit,
            plan_path,
        )?;
        table(
            w,
            &["LINE", "CONTACT (display id [ref])", "DISPLAY NAME"],
            &[true, false, false],
            &plan.no_email[..take(plan.no_email.len())],
            |c: &Contact| vec![c.line.to_string(), member(c), cut(&c.display_name, 40)],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{self, Contact, DetectOptions};

    fn contact(id: &str, r: &str, t: Option<u64>) -> Contact {
        Contact {
            line: 2,
            rev_user_id: format!("don:identity:dvrv-us-1:devo/o:revu/{id}"),
            display_name: "J".into(),
            email: "j@x.com".into(),
            external_ref: r.into(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: t,
        }
    }

    #[test]
    fn calls_per_pair_follow_the_saga() {
        let p = Pair {
            email: "j@x.com".into(),
            primary: contact("P", "REVU-P", Some(3)),
            secondary: contact("S", "user_s", Some(2)),
        };
        // (1 list + 2 timelines + 1 conversations) + 1 merge + 2 polls + (1 list + 1
        // conversations) + 1 adopt (whose answer carries the primary's name); Validate's
        // reads are the run's batched lists, whatever --keep.
        assert_eq!(calls_for_pair(&p, BackupScope::Secondary, 100), 10);
        assert_eq!(calls_for_pair(&p, BackupScope::Both, 100), 13);
        // One rev-users.list per 20 contacts, twice with --keep auto's turn check.
        assert_eq!(batched_reads(10, Keep::Revu), 1);
        assert_eq!(batched_reads(11, Keep::User), 2);
        assert_eq!(batched_reads(10, Keep::Auto), 2);
        assert_eq!(batched_reads(0, Keep::Revu), 0);
        let big = Pair {
            email: "j@x.com".into(),
            primary: contact("P", "REVU-P", Some(150)),
            secondary: contact("S", "user_s", None),
        };
        // 150 tickets: 2 pages per listing; the unknown count is taken as 0.
        // 6 fixed (adopt included) + 2 pages twice + no timelines (0 tickets).
        assert_eq!(calls_for_pair(&big, BackupScope::Secondary, 100), 6 + 2 * 2);
    }

    #[test]
    fn the_range_brackets_the_typical_count_and_narrows_with_live_counts() {
        let p = Pair {
            email: "j@x.com".into(),
            primary: contact("P", "REVU-P", Some(3)),
            secondary: contact("S", "user_s", Some(2)),
        };
        for (keep, scope) in [
            (Keep::Revu, BackupScope::Secondary),
            (Keep::User, BackupScope::Both),
        ] {
            let (lo, hi) = call_range(KnownTickets::from_csv(&p), keep, scope, 100);
            let typical = calls_for_pair(&p, scope, 100);
            assert!(lo < typical && typical < hi, "{lo} {typical} {hi}");
        }
        // Secondary scope, keep revu: 1 merge + 1 poll + 1 adopt = 3 at least (its timelines
        // read by an earlier pair, or gone since the export; the backup's and Reconcile's
        // lists shared with other pairs': run-wide); at
        // most its own lists (2), both contacts read alone (2), 2 conversations and 2
        // attachments per ticket or conversation (2 x 2 x 4 = 16 calls) and 4 polls; no
        // re-read of the primary (the adoption's answer carries it).
        let csv = call_range(
            KnownTickets::from_csv(&p),
            Keep::Revu,
            BackupScope::Secondary,
            100,
        );
        assert_eq!(csv, (3, 9 + 2 + 2 + 16 + 3));
        assert_eq!(shared_reads_low(10), 4);
        assert_eq!(shared_reads_low(11), 8);
        // --keep user: the re-read instead of the adoption, the same count.
        let user = call_range(
            KnownTickets::from_csv(&p),
            Keep::User,
            BackupScope::Secondary,
            100,
        );
        assert_eq!(user, csv);
        // Both scope: the CSV cannot tell shared tickets, the live check can.
        let (lo, hi) = call_range(KnownTickets::from_csv(&p), Keep::Revu, BackupScope::Both, 2);
        let live = KnownTickets {
            primary: 3,
            secondary: 2,
            shared: Some(1),
        };
        let (llo, lhi) = call_range(live, Keep::Revu, BackupScope::Both, 2);
        assert!(
            lo <= llo && lhi <= hi && lhi - llo < hi - lo,
            "{lo}..{hi} vs {llo}..{lhi}"
        );
        // The low end never counts the export's tickets: they may be shared with an earlier
        // pair or gone since the export.
        let none = KnownTickets {
            primary: 0,
            secondary: 0,
            shared: None,
        };
        assert_eq!(
            call_range(none, Keep::Revu, BackupScope::Secondary, 100).0,
            csv.0
        );
    }

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_duration(45.2), "45 s");
        assert_eq!(
            human_duration(0.2),
            "1 s",
            "never 'about 0 s' for work to do"
        );
        assert_eq!(human_duration(0.0), "0 s");
        assert_eq!(human_duration(200.0), "3 m 20 s");
        assert_eq!(human_duration(7500.0), "2 h 05 m");
        assert_eq!(cut("abcdef", 4), "abc…");
    }

    #[test]
    fn tables_are_shortened_with_a_pointer_to_the_plan_file() {
        let csv = {
            let mut s = String::from("REV_USER_ID,EMAIL,EXTERNAL_REF,TICKET_COUNT\n");
            for i in 0..30 {
                s.push_str(&format!(
                    "r{i},p{i:02}@x.com,REVU-r{i},1\nu{i},p{i:02}@x.com,user_{i},\n"
                ));
            }
            s
        };
        let opts = DetectOptions {
            keep: Keep::Revu,
            email_domain: None,
        };
        let plan = detect::plan_from_reader("c.csv", std::io::Cursor::new(csv.into_bytes()), &opts)
            .unwrap();
        let est = Estimate {
            pairs: 30,
            api_calls: 330,
            calls_per_pair: 11.0,
            seconds: 440.0,
            api_calls_low: 300,
            api_calls_high: 900,
            seconds_low: 400.0,
            seconds_high: 1200.0,
            live_ticket_counts: 0,
            rate_limit_calls: 45,
            rate_limit_period_s: 60.0,
            keep: Keep::Revu,
            backup_scope: BackupScope::Secondary,
            unknown_ticket_counts: 30,
            merge_wait_s: 2.0,
        };
        let mut out = Vec::new();
        print_human(
            &mut out,
            &plan,
            &est,
            None,
            Path::new("reports/plan-x.json"),
            Some(20),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "Clean pairs (30; showing the first 20, the full list is in reports/plan-x.json)"
            ),
            "{text}"
        );
        assert!(
            text.contains("p19@x.com") && !text.contains("p20@x.com"),
            "{text}"
        );
        assert!(text.contains("30 empty count(s) taken as 0"), "{text}");
        let mut out = Vec::new();
        print_human(
            &mut out,
            &plan,
            &est,
            None,
            Path::new("reports/plan-x.json"),
            None,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Clean pairs (30):") && text.contains("p29@x.com"),
            "{text}"
        );
    }
}
