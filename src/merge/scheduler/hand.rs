//! The turn of the pair in hand, as one future the scheduler polls beside the pairs started
//! ahead: first every parked pair that meets it is settled in place (otherwise its repairs
//! could write a ticket naming that pair's secondary just as DevRev removes it), then its
//! saga runs from where its start ahead left it, and a decided group's member is watched in
//! place until it settles (the next member starts only once this one is merged and
//! reconciled).

use std::cell::RefCell;
use std::rc::Rc;

use futures_util::future::LocalBoxFuture;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::Stop;
use super::board::{Board, Stage};
use crate::merge::footprint::Footprint;
use crate::merge::report::RunOutcome;
use crate::merge::saga::{self, PairResult, PairRun, Prepared, SagaCtx};
use crate::merge::schedule::Item;
use crate::merge::shared::SharedSavepoint;

/// How the turn of the pair in hand ended.
pub(super) struct TurnEnd {
    /// Parked pairs that met it and settled in place first: (pair, that visit's run).
    pub settled: Vec<(usize, PairRun)>,
    /// Its own saga's run (`None`: cut off before it returned); `None` outside when settling
    /// a parked pair stopped the run before its saga began.
    pub run: Option<Option<PairRun>>,
    /// Why the whole run stops after it, if it does.
    pub stopped: Option<Stop>,
}

/// What a turn needs besides the pair.
pub(super) struct Env<'a, 'p> {
    pub ctx: &'a SagaCtx<'a>,
    pub sp: &'a SharedSavepoint,
    pub work: &'a [Item<'p>],
    pub board: Rc<RefCell<Board>>,
    pub span: tracing::Span,
}

/// Pair `i`'s turn, with what was read for it ahead of its turn, if anything.
pub(super) fn turn<'a, 'p: 'a>(
    env: Env<'a, 'p>,
    i: usize,
    prepared: Option<Prepared>,
) -> LocalBoxFuture<'a, TurnEnd> {
    Box::pin(async move {
        let item = &env.work[i];
        let email = email_of(item, env.sp);
        let (settled, stopped) = settle_parked_meeting(&env, item).await;
        if stopped.is_some() {
            return TurnEnd {
                settled,
                run: None,
                stopped,
            };
        }
        let (ctx, sp) = (env.ctx, env.sp);
        let (mut run, mut stopped) =
            run_one(ctx, sp, item, &email, Drive::Turn(prepared.map(Box::new))).await;
        if item.group.is_some() && stopped.is_none() {
            (run, stopped) = settle_in_place(ctx, sp, item, &email, run).await;
        }
        TurnEnd {
            settled,
            run: Some(run),
            stopped,
        }
    })
}

/// Settles, in place, every parked pair that meets `item` (`footprint.rs`: its writes name
/// one of `item`'s contacts, or they share one): watched until merged and repaired, or until
/// its `--merge-timeout` in this run is over. Each parked pair once: one that stays parked
/// (stopped) is left for the end of the run.
async fn settle_parked_meeting(
    env: &Env<'_, '_>,
    item: &Item<'_>,
) -> (Vec<(usize, PairRun)>, Option<Stop>) {
    let (ctx, sp, work) = (env.ctx, env.sp, env.work);
    let mut settled = Vec::new();
    let Some(mine) = sp
        .get(&item.key)
        .map(|r| Footprint::of_contacts([r.primary, r.secondary]))
    else {
        return (settled, None);
    };
    let meeting: Vec<usize> = env
        .board
        .borrow()
        .parked
        .iter()
        .copied()
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
        let (run, stopped) = settle_in_place(ctx, sp, p, &email, parked_run).await;
        if run.as_ref().is_some_and(|r| r.result == PairResult::Parked) {
            // Stopped while still parked: the end of the run comes back to it.
        } else if let Some(now) = run {
            env.board.borrow_mut().set(b, Stage::Done);
            env.span.pb_inc(1);
            settled.push((b, now));
        }
        if stopped.is_some() {
            return (settled, stopped);
        }
    }
    (settled, None)
}

/// Visits a parked pair again until it settles (merged, or its `--merge-timeout` in this
/// run is over and the saga leaves it unconfirmed).
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
        let (now, stopped) = run_one(ctx, sp, item, email, Drive::Turn(None)).await;
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

/// How far a pair's saga may go.
pub(super) enum Drive {
    /// Its turn (or a visit in place): to the end, from what was read ahead, if anything.
    Turn(Option<Box<Prepared>>),
    /// A parked pair's visit beside other pairs: to the end of the merge in flight only
    /// (`saga::visit_parked`).
    Visit,
}

/// One pair's saga, dropped at a second Ctrl-C. Returns its run (if it returned) and why
/// the whole run must stop after it (if it must).
pub(super) async fn run_one(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    item: &Item<'_>,
    email: &str,
    drive: Drive,
) -> (Option<PairRun>, Option<Stop>) {
    let saga = async {
        match drive {
            Drive::Turn(prepared) => {
                saga::run_pair(ctx, sp, &item.key, item.pair, prepared.map(|p| *p)).await
            }
            Drive::Visit => saga::visit_parked(ctx, sp, &item.key, item.pair).await,
        }
    };
    let res = tokio::select! {
        biased;
        _ = ctx.stop.hard() => None,
        r = saga => Some(r),
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

/// A group member's result in words, for the members after it.
pub(super) fn result_words(r: &PairResult) -> String {
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

/// The pair's email, for the log and the progress bar: the CSV's, or (a pair that left the
/// CSV) its record's.
pub(super) fn email_of(item: &Item<'_>, sp: &SharedSavepoint) -> String {
    item.pair
        .map(|p| p.email.clone())
        .or_else(|| sp.get(&item.key).map(|r| r.email))
        .unwrap_or_default()
}
