//! The scheduled pairs one by one through their sagas, with the `--max-merges` gate, Ctrl-C
//! and the progress bar. Every savepoint change is written as it is made, so stopping at any
//! point leaves the journal as consistent as after a crash.

use std::collections::HashMap;

use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::footprint::Footprint;
use super::pipeline::Pipeline;
use super::report::RunOutcome;
use super::saga::{self, PairResult, PairRun, SagaCtx};
use super::schedule::{self, Item};
use super::shared::SharedSavepoint;
use crate::devrev::DevRevClient;
use crate::error::AppError;
use crate::options::Keep;

/// How the pairs went.
pub struct Executed {
    /// Every pair started in this run, in order; `None` when it was cut off (a run-wide
    /// error or a second Ctrl-C) before its saga returned.
    pub ran: Vec<(String, Option<PairRun>)>,
    pub outcome: RunOutcome,
    /// The run-wide error that stopped the run, if any.
    pub fatal: Option<AppError>,
    /// Merges of decided groups not started because a merge before them in their group did
    /// not end merged: key -> why.
    pub group_waits: Vec<(String, String)>,
}

/// Why the loop stopped early.
enum Stop {
    Outcome(RunOutcome),
    Fatal(AppError),
}

/// Runs `work` until it is done, Ctrl-C, `--max-merges` or a run-wide error, in the
/// schedule's order except where a pair held by the one in flight is passed over, the next
/// pairs prepared while the one in hand waits for its merge (`pipeline.rs`).
pub async fn execute(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    work: &[Item<'_>],
    max_merges: Option<usize>,
    keep: Keep,
    stopped_groups: HashMap<String, String>,
) -> Executed {
    // Entered once to show the bar, then updated from outside: log lines written during the
    // run stay free of the span's name, and the bar is cleared when the span is dropped.
    let span = crate::progress_span!("merging", work.len());
    span.pb_set_style(&crate::logging::measured_progress_style());
    span.in_scope(|| {});
    let mut turns = Turns {
        ctx,
        sp,
        work,
        keep,
        max_merges,
        span: span.clone(),
        ran: Vec::new(),
        merges_sent: 0,
        meter: CallMeter::new(ctx.client),
        eta: String::new(),
        pipe: Pipeline::new(ctx, sp, work, keep, max_merges),
        group_waits: Vec::new(),
        turns: 0,
        stopped_groups,
    };
    let mut stop = None;
    while let Some(i) = turns.pipe.next_turn() {
        if let Err(s) = turns.turn(i).await {
            stop = Some(s);
            break;
        }
    }
    let parked: Vec<(&Item<'_>, String)> = turns
        .pipe
        .parked()
        .into_iter()
        .map(|i| (&work[i], email_of(&work[i], sp)))
        .collect();
    let Turns {
        pipe,
        mut ran,
        group_waits,
        ..
    } = turns;
    wind_down(pipe, work, &mut ran, matches!(stop, Some(Stop::Fatal(_)))).await;
    // Pairs whose merge was sent are finished also when --max-merges stopped the run: "pairs
    // already in flight are still finished" (a canary must not end with its last merge
    // unconfirmed and unrepaired).
    let finish_parked = matches!(
        stop,
        None | Some(Stop::Outcome(RunOutcome::MaxMergesReached))
    );
    if finish_parked
        && !parked.is_empty()
        && let Some(s) = revisit(ctx, sp, parked, &mut ran, &span).await
    {
        stop = Some(s);
    }
    drop(span);
    let (outcome, fatal) = match stop {
        None => (RunOutcome::Completed, None),
        Some(Stop::Outcome(o)) => (o, None),
        Some(Stop::Fatal(e)) => (RunOutcome::Aborted, Some(e)),
    };
    Executed {
        ran,
        outcome,
        fatal,
        group_waits,
    }
}

/// The run loop's state between two turns: what ran, which groups stopped, the merges sent
/// (for `--max-merges`) and the progress shown; where each pair stands (ahead, in hand,
/// parked) is the pipeline's.
struct Turns<'a, 'p> {
    ctx: &'a SagaCtx<'a>,
    sp: &'a SharedSavepoint,
    work: &'a [Item<'p>],
    keep: Keep,
    max_merges: Option<usize>,
    span: tracing::Span,
    ran: Vec<(String, Option<PairRun>)>,
    merges_sent: usize,
    meter: CallMeter,
    eta: String,
    pipe: Pipeline<'a, 'p>,
    group_waits: Vec<(String, String)>,
    turns: usize,
    stopped_groups: HashMap<String, String>,
}

impl<'a, 'p> Turns<'a, 'p> {
    /// Pair `i`'s turn: `Err` stops the run.
    async fn turn(&mut self, i: usize) -> Result<(), Stop> {
        let (ctx, sp) = (self.ctx, self.sp);
        let item = &self.work[i];
        self.turns += 1;
        if let Some(e) = self.pipe.take_fatal() {
            return Err(Stop::Fatal(e));
        }
        if let Some(g) = &item.group
            && let Some(why) = self.stopped_groups.get(&g.id)
        {
            self.group_waits.push((item.key.clone(), why.clone()));
            return Ok(());
        }
        if ctx.stop.requested() {
            return Err(Stop::Outcome(RunOutcome::Interrupted));
        }
        if schedule::held_back(item, self.merges_sent, self.max_merges) {
            tracing::info!(
                "--max-merges {} reached: stopping; re-run to continue with the rest",
                self.max_merges.unwrap_or_default()
            );
            return Err(Stop::Outcome(RunOutcome::MaxMergesReached));
        }
        let email = email_of(item, sp);
        // The estimate first: on a narrow terminal the end of the line is what gets cut.
        self.span.pb_set_message(&format!("{}{email}", self.eta));
        sp.journal_new_pair(item, self.keep).map_err(Stop::Fatal)?;
        self.pipe.set_merges_sent(self.merges_sent);
        // Its preparation may still be under way: a second Ctrl-C stops at once here too.
        let prepared = tokio::select! {
            biased;
            _ = ctx.stop.hard() => return Err(Stop::Outcome(RunOutcome::Interrupted)),
            t = self.pipe.take(i) => t.map_err(Stop::Fatal)?,
        };
        // A parked pair whose merge DevRev may still apply is settled first when it meets
        // this one: otherwise this pair's repairs could write a ticket naming its
        // secondary just as DevRev removes it.
        if let Some(s) =
            settle_parked_meeting(ctx, sp, &mut self.pipe, item, &mut self.ran, &self.span).await
        {
            return Err(s);
        }
        let (mut run, mut stopped) = self
            .pipe
            .alongside(run_one(ctx, sp, item, &email, prepared))
            .await;
        if item.group.is_some() && stopped.is_none() {
            // The next member of a group starts only once this one is merged and reconciled:
            // a parked member is watched in place, not left for the end of the run.
            (run, stopped) = self
                .pipe
                .alongside(settle_in_place(ctx, sp, item, &email, run))
                .await;
        }
        self.ended(i, item, run);
        stopped.map_or(Ok(()), Err)
    }

    /// Pair `i`'s turn ended with `run` (`None`: cut off before its saga returned).
    fn ended(&mut self, i: usize, item: &'a Item<'p>, run: Option<PairRun>) {
        if let (Some(g), Some(run)) = (&item.group, &run)
            && !matches!(
                run.result,
                PairResult::Merged | PairResult::AlreadyMerged | PairResult::RefPending
            )
        {
            let who = self
                .sp
                .get(&item.key)
                .map(|r| crate::detect::display_id(&r.secondary))
                .unwrap_or_default();
            self.stopped_groups.insert(
                g.id.clone(),
                format!(
                    "the group stopped at {who} (merge {} of {}): {}; re-run to resume after fixing it",
                    g.index + 1,
                    g.len,
                    result_words(&run.result)
                ),
            );
        }
        if let Some(run) = &run {
            self.merges_sent += usize::from(run.merge_sent);
            if run.result == PairResult::Parked {
                self.pipe.park(i);
            } else {
                self.span.pb_inc(1);
            }
            self.eta = self.meter.pair_done(self.ctx, self.work.len() - self.turns);
        }
        self.ran.push((item.key.clone(), run));
    }
}

/// Prepared pairs that never had their turn are not started as far as DevRev goes (no merge
/// intent): reported as not started, from their records, and checked again by the next run.
/// Those that preparing settled (skipped, failed) are reported as such.
async fn wind_down(
    pipe: Pipeline<'_, '_>,
    work: &[Item<'_>],
    ran: &mut Vec<(String, Option<PairRun>)>,
    drop_running: bool,
) {
    for (i, prepared) in pipe.wind_down(drop_running).await {
        // One that went on to its merge ahead of its turn is reported whatever stopped it.
        let merge_sent = prepared.merge_sent();
        let Some(result) = prepared
            .ended()
            .filter(|r| merge_sent || **r != PairResult::Interrupted)
            .cloned()
        else {
            continue;
        };
        let run = PairRun {
            steps: prepared.steps,
            result,
            merge_sent,
        };
        ran.push((work[i].key.clone(), Some(run)));
    }
}

/// A group member's result in words, for the members after it.
fn result_words(r: &PairResult) -> String {
    match r {
        PairResult::Skipped(reason) => format!("skipped: {reason}"),
        PairResult::Failed(error) => format!("failed: {error}"),
        PairResult::Unconfirmed => "its merge is not confirmed yet".into(),
        PairResult::MergedElsewhere(reason) => format!("merged elsewhere: {reason}"),
        PairResult::Interrupted => "interrupted".into(),
        PairResult::Parked => "its merge is not seen applied yet".into(),
        PairResult::Merged | PairResult::AlreadyMerged | PairResult::RefPending => "merged".into(),
    }
}

/// Visits a parked group member again, spaced like any poll loop, until it settles (merged,
/// or its `--merge-timeout` in this run is over and the saga leaves it unconfirmed).
async fn settle_in_place(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    item: &Item<'_>,
    email: &str,
    mut run: Option<PairRun>,
) -> (Option<PairRun>, Option<Stop>) {
    let mut delays = saga::poll_delays(ctx.min_backoff);
    loop {
        if !run.as_ref().is_some_and(|r| r.result == PairResult::Parked) {
            return (run, None);
        }
        tokio::select! {
            _ = tokio::time::sleep(saga::next_delay(&mut delays)) => {}
            _ = ctx.stop.soft() => return (run, Some(Stop::Outcome(RunOutcome::Interrupted))),
        }
        let (now, stopped) = run_one(ctx, sp, item, email, None).await;
        let (Some(before), Some(now)) = (run.as_mut(), now) else {
            return (run, stopped);
        };
        before.steps.extend(now.steps);
        before.result = now.result;
        before.merge_sent |= now.merge_sent;
        if stopped.is_some() {
            return (run, stopped);
        }
    }
}

/// The run's ETA from what it measures: the API calls per pair so far times the pairs left, at
/// the client's pacing, plus the wait for the last merge to apply; or the time per pair so
/// far, when that is longer (waits that preparing the next pair did not fill). A run is bound
/// by its rate limit, so its calls are most of its length; the preview's estimate only
/// guesses attachments and conversations, the run counts them.
struct CallMeter {
    calls_at_start: u64,
    started: std::time::Instant,
    pairs: u64,
    /// Seconds one call takes at the configured pacing.
    per_call_s: f64,
}

impl CallMeter {
    fn new(client: &DevRevClient) -> Self {
        let cfg = client.config();
        Self {
            calls_at_start: client.totals().calls,
            started: std::time::Instant::now(),
            pairs: 0,
            per_call_s: cfg.rate_limit_period.as_secs_f64()
                / f64::from(cfg.rate_limit_calls.max(1)),
        }
    }

    /// Counts a finished pair; returns the text shown after the next pair's email.
    fn pair_done(&mut self, ctx: &SagaCtx<'_>, left: usize) -> String {
        self.pairs += 1;
        let calls = ctx
            .client
            .totals()
            .calls
            .saturating_sub(self.calls_at_start);
        let m = Measured {
            calls,
            pairs: self.pairs,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        let wait_s = saga::first_look_wait(ctx).as_secs_f64();
        let (per_pair, secs) = time_left(m, left, self.per_call_s, wait_s);
        tracing::debug!(
            pairs = self.pairs,
            calls,
            per_pair,
            left,
            secs,
            "measured calls per pair"
        );
        format!(
            "~{} left ({per_pair:.1} calls/pair) ",
            crate::preview::human_duration(secs)
        )
    }
}

/// What the run has measured so far.
#[derive(Debug, Clone, Copy)]
struct Measured {
    calls: u64,
    pairs: u64,
    elapsed_s: f64,
}

/// Calls per pair measured so far, and the seconds the `left` pairs take: their calls at one
/// every `per_call_s` plus one merge wait of `wait_s` (the last pair's), or the time per pair
/// measured so far if that is longer.
fn time_left(m: Measured, left: usize, per_call_s: f64, wait_s: f64) -> (f64, f64) {
    if left == 0 {
        return (m.calls as f64 / m.pairs.max(1) as f64, 0.0);
    }
    let per_pair = m.calls as f64 / m.pairs.max(1) as f64;
    let by_calls = per_pair * left as f64 * per_call_s + wait_s;
    let by_time = m.elapsed_s / m.pairs.max(1) as f64 * left as f64;
    (per_pair, by_calls.max(by_time))
}

/// Comes back to the parked pairs, one look each per round, until each is settled or its
/// `--merge-timeout` in this run is over (the saga then leaves it unconfirmed, or with its
/// outcome unknown and when to re-run). Rounds are spaced like any poll loop.
async fn revisit(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    mut parked: Vec<(&Item<'_>, String)>,
    ran: &mut [(String, Option<PairRun>)],
    span: &tracing::Span,
) -> Option<Stop> {
    ctx.watch.start_revisiting();
    tracing::info!(
        "{} pair(s) parked: watching them until they settle",
        parked.len()
    );
    let mut delays = saga::poll_delays(ctx.min_backoff);
    while !parked.is_empty() {
        let nap = saga::next_delay(&mut delays);
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = ctx.stop.soft() => return Some(Stop::Outcome(RunOutcome::Interrupted)),
        }
        let mut still = Vec::new();
        for (item, email) in parked {
            let (run, stopped) = run_one(ctx, sp, item, &email, None).await;
            let again = run.as_ref().is_some_and(|r| r.result == PairResult::Parked);
            absorb(ran, &item.key, run);
            if stopped.is_some() {
                return stopped;
            }
            if again {
                still.push((item, email));
            } else {
                span.pb_inc(1);
            }
        }
        parked = still;
    }
    None
}

/// A later visit's run of a pair added to what its earlier visits of this run did.
fn absorb(ran: &mut [(String, Option<PairRun>)], key: &str, run: Option<PairRun>) {
    let Some((_, entry)) = ran.iter_mut().find(|(k, _)| k == key) else {
        return;
    };
    *entry = match (entry.take(), run) {
        (Some(mut before), Some(now)) => {
            before.steps.extend(now.steps);
            before.result = now.result;
            before.merge_sent |= now.merge_sent;
            Some(before)
        }
        (_, now) => now,
    };
}

/// Settles, in place, every parked pair that meets `item` (`footprint.rs`: its writes name
/// one of `item`'s contacts, or they share one): watched until merged and repaired, or until
/// its `--merge-timeout` in this run is over. Returns why the run must stop, if it must.
async fn settle_parked_meeting(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    pipe: &mut Pipeline<'_, '_>,
    item: &Item<'_>,
    ran: &mut [(String, Option<PairRun>)],
    span: &tracing::Span,
) -> Option<Stop> {
    let work = pipe.work();
    let mine = sp
        .get(&item.key)
        .map(|r| Footprint::of_contacts([r.primary, r.secondary]))?;
    // Each parked pair once: one that stays parked (stopped) is left for the end of the run.
    let meeting: Vec<usize> = pipe
        .parked()
        .into_iter()
        .filter(|&b| {
            sp.get(&work[b].key)
                .is_some_and(|r| Footprint::of_record(&r).meets(&mine))
        })
        .collect();
    for b in meeting {
        let (p, email) = (&work[b], email_of(&work[b], sp));
        tracing::info!(pair = %email, "parked pair met by the next one: watching it until it settles");
        let parked_run = Some(PairRun {
            steps: Vec::new(),
            result: PairResult::Parked,
            merge_sent: false,
        });
        let (run, stopped) = pipe
            .alongside(settle_in_place(ctx, sp, p, &email, parked_run))
            .await;
        if run.as_ref().is_some_and(|r| r.result == PairResult::Parked) {
            // Stopped while still parked: the end of the run comes back to it.
        } else if let Some(now) = run {
            pipe.settled(b);
            span.pb_inc(1);
            absorb(ran, &p.key, Some(now));
        }
        if stopped.is_some() {
            return stopped;
        }
    }
    None
}

/// One pair's saga, dropped at a second Ctrl-C. Returns its run (if it returned) and why
/// the whole run must stop after it (if it must).
async fn run_one(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    item: &Item<'_>,
    email: &str,
    prepared: Option<saga::Prepared>,
) -> (Option<PairRun>, Option<Stop>) {
    let res = tokio::select! {
        biased;
        _ = ctx.stop.hard() => None,
        r = saga::run_pair(ctx, sp, &item.key, item.pair, prepared) => Some(r),
    };
    match res {
        // Dropped mid-step: every savepoint change is written as it is made, so the journal
        // is as consistent as after a crash.
        None => (None, Some(Stop::Outcome(RunOutcome::Interrupted))),
        Some(Err(e)) => {
            tracing::error!(pair = %email, error = %e, "stopping the run");
            (None, Some(Stop::Fatal(e)))
        }
        Some(Ok(run)) => {
            log_result(email, &run.result);
            let stop = (run.result == PairResult::Interrupted)
                .then_some(Stop::Outcome(RunOutcome::Interrupted));
            (Some(run), stop)
        }
    }
}

fn log_result(email: &str, r: &PairResult) {
    match r {
        PairResult::Merged => tracing::info!(pair = %email, "merged"),
        PairResult::AlreadyMerged => tracing::info!(pair = %email, "already merged"),
        PairResult::Skipped(reason) => tracing::warn!(pair = %email, %reason, "skipped"),
        PairResult::Failed(error) => tracing::warn!(pair = %email, %error, "failed"),
        PairResult::Unconfirmed => tracing::warn!(pair = %email, "merge not confirmed yet"),
        PairResult::RefPending => tracing::warn!(pair = %email, "merged; ref adoption pending"),
        PairResult::Parked => {
            tracing::info!(pair = %email, "merge not seen applied yet; coming back to it")
        }
        PairResult::Interrupted => {
            tracing::info!(pair = %email, "interrupted; resumes on the next run")
        }
        PairResult::MergedElsewhere(reason) => {
            tracing::warn!(pair = %email, %reason, "merged elsewhere")
        }
    }
}

/// The pair's email, for the log and the progress bar: the CSV's, or (a pair that left the
/// CSV) its record's.
fn email_of(item: &Item<'_>, sp: &SharedSavepoint) -> String {
    item.pair
        .map(|p| p.email.clone())
        .or_else(|| sp.get(&item.key).map(|r| r.email))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{Measured, time_left};

    #[test]
    fn the_eta_follows_the_measured_calls_per_pair_and_counts_the_last_wait() {
        let m = |calls, pairs, elapsed_s| Measured {
            calls,
            pairs,
            elapsed_s,
        };
        // 3 pairs took 52 calls in 60 s: 17.3 a pair; 17 pairs left at 45 calls a minute,
        // and the last merge's 2 s wait.
        let (per_pair, secs) = time_left(m(52, 3, 60.0), 17, 60.0 / 45.0, 2.0);
        assert!((per_pair - 17.333).abs() < 0.01, "{per_pair}");
        assert!(
            (secs - (52.0 / 3.0 * 17.0 * 60.0 / 45.0 + 2.0)).abs() < 1e-6,
            "{secs}"
        );
        // A pair that cost more (attachments) raises the estimate for the rest.
        let (_, later) = time_left(m(52 + 40, 4, 120.0), 16, 60.0 / 45.0, 2.0);
        assert!(later / 16.0 > secs / 17.0);
        // Waits nothing filled (pairs that had to run one after the other): the time per
        // pair measured so far is the better guide.
        let (_, slow) = time_left(m(52, 3, 3.0 * 40.0), 17, 60.0 / 45.0, 2.0);
        assert!((slow - 40.0 * 17.0).abs() < 1e-6, "{slow}");
        assert_eq!(time_left(m(0, 0, 0.0), 5, 1.0, 0.0), (0.0, 0.0));
        assert_eq!(time_left(m(10, 1, 5.0), 0, 1.0, 2.0).1, 0.0, "nothing left");
    }
}
