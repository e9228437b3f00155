//! Parked pairs: their merge is accepted but DevRev was not seen to apply it within the
//! watch. While the run goes on, each is looked at again in the background once DevRev has
//! usually applied a merge (the run's learned first-look wait after it parked), so that its
//! repairs are done and it stops holding back the pairs it meets long before the end of the
//! run. A visit runs beside the pair in hand only if the two do not meet (every other pair in
//! flight was checked against it when it started); a pair whose turn comes while a parked
//! pair it meets is being visited waits for that visit, and one that meets a parked pair
//! settles it in place first (`hand.rs`). Those still parked at the end are visited again,
//! one look each per round, spaced like any poll loop, until each settles or its
//! `--merge-timeout` in this run is over.

use std::time::Instant;

use futures_util::future::LocalBoxFuture;

use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::board::Stage;
use super::hand::{Drive, email_of, run_one};
use super::{Scheduler, Stop};
use crate::merge::footprint::Footprint;
use crate::merge::report::RunOutcome;
use crate::merge::saga::{self, PairResult, PairRun, SagaCtx};
use crate::merge::schedule::Item;
use crate::merge::shared::SharedSavepoint;

/// The longest a parked pair waits for its next visit during the run: each visit costs a few
/// looks, so a merge DevRev is slow to apply does not take the budget the other pairs need.
const MAX_VISIT_GAP: std::time::Duration = std::time::Duration::from_secs(60);

/// A parked pair's visit under way in the background.
pub(super) struct Visit<'a> {
    pub index: usize,
    /// What the pair writes (read from its backup when it parked: a visit never takes a
    /// new one).
    pub footprint: Footprint,
    pub fut: LocalBoxFuture<'a, (Option<PairRun>, Option<Stop>)>,
}

/// A parked pair's next visit.
pub(super) struct Due {
    at: Instant,
    footprint: Footprint,
}

impl<'a, 'p: 'a> Scheduler<'a, 'p> {
    /// Pair `i`'s turn (or visit) ended with its merge not seen applied: it is looked at again
    /// once DevRev has usually applied a merge (the run's first-look wait), twice as late
    /// after each visit that still did not see it, at most [`MAX_VISIT_GAP`] later.
    pub(super) fn park(&mut self, i: usize) {
        self.board.borrow_mut().set(i, Stage::Parked);
        let times = self.parkings.entry(i).or_insert(0);
        let wait = saga::first_look_wait(self.ctx) * 2u32.saturating_pow((*times).min(16));
        *times += 1;
        let footprint = self
            .sp
            .get(&self.work[i].key)
            .map(|r| Footprint::of_record(&r))
            .unwrap_or_default();
        let at = Instant::now() + wait.min(MAX_VISIT_GAP);
        self.due.insert(i, Due { at, footprint });
    }

    /// When the next parked pair is due for a visit that may start then.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.stopping() {
            return None;
        }
        self.due
            .iter()
            .filter(|&(&p, due)| self.may_visit(p, due))
            .map(|(_, due)| due.at)
            .min()
    }

    /// Starts the visits that are due.
    pub(super) fn start_due_visits(&mut self) {
        if self.stopping() {
            return;
        }
        // Settled in place meanwhile: no visit is due.
        let board = self.board.borrow();
        self.due.retain(|&p, _| board.stage[p] == Stage::Parked);
        drop(board);
        let now = Instant::now();
        let due: Vec<usize> = self
            .due
            .iter()
            .filter(|&(&p, due)| due.at <= now && self.may_visit(p, due))
            .map(|(&p, _)| p)
            .collect();
        for p in due {
            let Some(Due { footprint, .. }) = self.due.remove(&p) else {
                continue;
            };
            self.board.borrow_mut().set(p, Stage::Visiting);
            let (ctx, sp, item) = (self.ctx, self.sp, &self.work[p]);
            let email = email_of(item, sp);
            tracing::debug!(pair = %email, "looking at a parked pair again");
            self.visits.push(Visit {
                index: p,
                footprint,
                fut: Box::pin(async move { run_one(ctx, sp, item, &email, Drive::Visit).await }),
            });
        }
    }

    /// A parked pair may be visited now: still parked (not settled in place meanwhile), and
    /// it does not meet the pair in hand (whose turn settles it in place instead).
    fn may_visit(&self, p: usize, due: &Due) -> bool {
        let board = self.board.borrow();
        board.stage[p] == Stage::Parked
            && board
                .in_hand()
                .is_none_or(|h| !self.meets(&due.footprint, h))
    }

    /// Pair `p`'s visit ended with `run` (`None`: cut off before its saga returned).
    pub(super) fn visited(&mut self, p: usize, run: Option<PairRun>) {
        // Stopped by Ctrl-C while watching: still parked, as the end of the run would
        // have left it.
        let run = run.map(|mut r| {
            if r.result == PairResult::Interrupted {
                r.result = PairResult::Parked;
            }
            r
        });
        let again = run.as_ref().is_none_or(|r| r.result == PairResult::Parked);
        absorb(&mut self.ran, &self.work[p].key, run);
        if again {
            self.park(p);
        } else {
            self.board.borrow_mut().set(p, Stage::Done);
            self.span.pb_inc(1);
        }
    }
}

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
            let (run, stopped) = run_one(ctx, sp, item, &email, Drive::Turn(None)).await;
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
