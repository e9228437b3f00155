//! Parked pairs left at the end of the run: their merge is accepted but DevRev was not seen
//! to apply it within the watch. They are visited again, one look each per round, spaced
//! like any poll loop, until each settles or its `--merge-timeout` in this run is over (a
//! parked pair that meets a later pair, or a decided group's member, is settled in place
//! instead: `hand.rs`).

use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::Stop;
use super::hand::run_one;
use crate::merge::report::RunOutcome;
use crate::merge::saga::{self, PairResult, PairRun, SagaCtx};
use crate::merge::schedule::Item;
use crate::merge::shared::SharedSavepoint;

/// Comes back to the parked pairs left at the end of the run, one look each per round, until
/// each is settled or its `--merge-timeout` in this run is over (the saga then leaves it
/// unconfirmed, or with its outcome unknown and when to re-run).
pub(super) async fn revisit(
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
pub(super) fn absorb(ran: &mut [(String, Option<PairRun>)], key: &str, run: Option<PairRun>) {
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
