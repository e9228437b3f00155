//! The run's one scheduler: a single loop over the scheduled pairs, each in an explicit
//! [`Stage`] (`board.rs`), that takes the next turn, starts pairs ahead of their turn while
//! the pair in hand waits (`ahead.rs`), polls the turn of the pair in hand (`hand.rs`) beside
//! them, and comes back to parked pairs (`parked.rs`). Cargo's `JobQueue` is the model: one
//! loop, one table of states, every transition made in one place ([`board::Board::set`]),
//! and what each pair's saga does inside a stage journaled step by step as before.
//!
//! The turns: `--max-merges` and Ctrl-C are checked at each one, a decided group stops at a
//! member that did not end merged, and every savepoint change is written as it is made, so
//! stopping at any point leaves the journal as consistent as after a crash.

mod ahead;
mod board;
mod hand;
mod meter;
mod parked;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use board::Stage;

use super::footprint::Footprint;
use super::report::RunOutcome;
use super::saga::{PairResult, PairRun, Prepared, SagaCtx};
use super::schedule::{self, Item};
use super::shared::SharedSavepoint;
use crate::error::AppError;
use crate::options::Keep;
use ahead::{Ready, Running};
use board::Board;
use hand::{Env, TurnEnd, email_of, result_words};
use meter::CallMeter;
use parked::{Due, Visit, absorb, revisit};

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
/// schedule's order except where a pair held by one in flight is passed over.
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
    let mut s = Scheduler {
        ctx,
        sp,
        work,
        keep,
        max_merges,
        span: span.clone(),
        board: Rc::new(RefCell::new(Board::new(work.len()))),
        cursor: 0,
        running: Vec::new(),
        ready: BTreeMap::new(),
        visits: Vec::new(),
        due: HashMap::new(),
        parkings: HashMap::new(),
        fatal: None,
        stop_after_turn: None,
        fresh_for: crate::backup::fresh_for(),
        hand: Hand::Free,
        ran: Vec::new(),
        merges_sent: 0,
        meter: CallMeter::new(ctx.client),
        eta: String::new(),
        group_waits: Vec::new(),
        turns: 0,
        stopped_groups,
    };
    let stop = s.run().await;
    let stop = s.finish(stop).await;
    drop(span);
    let (outcome, fatal) = match stop {
        None => (RunOutcome::Completed, None),
        Some(Stop::Outcome(o)) => (o, None),
        Some(Stop::Fatal(e)) => (RunOutcome::Aborted, Some(e)),
    };
    Executed {
        ran: s.ran,
        outcome,
        fatal,
        group_waits: s.group_waits,
    }
}

/// The pair in hand.
enum Hand<'a> {
    /// None: the next turn is taken.
    Free,
    /// Pair `i`'s turn has come while its start ahead still runs, or while a parked pair it
    /// meets is being visited.
    Awaiting(usize),
    /// Pair `i`'s turn is under way.
    Turn(usize, LocalBoxFuture<'a, TurnEnd>),
}

/// What the loop waits for.
enum Event {
    /// The turn of the pair in hand ended.
    TurnEnded(TurnEnd),
    /// A start ahead ended (its place in `running`).
    Started(usize, Box<Result<Prepared, AppError>>),
    /// A pair asked for its merge: another may be started ahead now.
    MergeRequested,
    /// A visit of a parked pair ended (its place in `visits`).
    Visited(usize, Box<(Option<PairRun>, Option<Stop>)>),
    /// A parked pair is due for a visit.
    Due,
    /// A second Ctrl-C while the pair in hand still waits for its start.
    HardStop,
}

struct Scheduler<'a, 'p> {
    ctx: &'a SagaCtx<'a>,
    sp: &'a SharedSavepoint,
    work: &'a [Item<'p>],
    keep: Keep,
    max_merges: Option<usize>,
    span: tracing::Span,
    /// Every pair's stage, shared with the starts ahead (each decides whether it may merge
    /// ahead against the pairs in flight then).
    board: Rc<RefCell<Board>>,
    /// Every pair before this index is no longer [`Stage::Waiting`].
    cursor: usize,
    /// Pairs started ahead whose start still runs.
    running: Vec<Running<'a>>,
    /// Pairs started ahead whose start ended, waiting for their turn.
    ready: BTreeMap<usize, Ready>,
    /// Parked pairs looked at again in the background (`parked.rs`).
    visits: Vec<Visit<'a>>,
    /// When each parked pair is next looked at, and what it writes.
    due: HashMap<usize, Due>,
    /// How many times each pair parked in this run (its visits back off).
    parkings: HashMap<usize, u32>,
    /// A run-wide error met while starting a pair ahead: the run stops at the next turn.
    fatal: Option<AppError>,
    /// Why a visit says the run must stop (Ctrl-C, a run-wide error): it stops once the turn
    /// of the pair in hand has ended, never cutting that turn off.
    stop_after_turn: Option<Stop>,
    fresh_for: Duration,
    hand: Hand<'a>,
    ran: Vec<(String, Option<PairRun>)>,
    /// The merges sent by the turns ended so far (for `--max-merges`).
    merges_sent: usize,
    meter: CallMeter,
    eta: String,
    group_waits: Vec<(String, String)>,
    turns: usize,
    stopped_groups: HashMap<String, String>,
}

impl<'a, 'p: 'a> Scheduler<'a, 'p> {
    /// The loop: `None` when every pair had its turn, else why it stopped.
    async fn run(&mut self) -> Option<Stop> {
        loop {
            if matches!(self.hand, Hand::Free) {
                if let Some(stop) = self.stop_after_turn.take() {
                    return Some(stop);
                }
                let i = self.next_turn()?;
                if let Err(stop) = self.begin_turn(i) {
                    return Some(stop);
                }
                continue;
            }
            self.refill();
            self.start_due_visits();
            match self.next_event().await {
                Event::Started(at, res) => {
                    let index = self.running.remove(at).index;
                    self.started(index, *res);
                }
                Event::Visited(at, ended) => {
                    let index = self.visits.remove(at).index;
                    let (run, stopped) = *ended;
                    self.visited(index, run);
                    if let Some(stop) = stopped {
                        self.stop_after_turn = Some(worse(self.stop_after_turn.take(), stop));
                    }
                }
                Event::MergeRequested | Event::Due => {}
                Event::HardStop => return Some(Stop::Outcome(RunOutcome::Interrupted)),
                Event::TurnEnded(end) => {
                    let Hand::Turn(i, _) = std::mem::replace(&mut self.hand, Hand::Free) else {
                        unreachable!("a turn ended with no turn under way");
                    };
                    for (b, run) in end.settled {
                        absorb(&mut self.ran, &self.work[b].key, Some(run));
                    }
                    if let Some(run) = end.run {
                        self.ended(i, run);
                    }
                    if let Some(stop) = end.stopped {
                        return Some(worse(self.stop_after_turn.take(), stop));
                    }
                }
            }
            if let Hand::Awaiting(i) = self.hand {
                // No turn under way to let end: a visit's stop stops the run now.
                if let Some(stop) = self.stop_after_turn.take() {
                    return Some(stop);
                }
                if self.may_take_turn(i)
                    && let Err(stop) = self.turn_starts(i)
                {
                    return Some(stop);
                }
            }
        }
    }

    /// Waits for the turn of the pair in hand to end, a start ahead to end, or a merge to be
    /// requested (a pair may be started ahead then).
    async fn next_event(&mut self) -> Event {
        let due = self.next_due();
        let running = &mut self.running;
        let visits = &mut self.visits;
        let (watch, stop) = (self.ctx.watch, self.ctx.stop);
        let starting = first_of(running.iter_mut().map(|r| &mut r.fut).collect());
        let visiting = first_of(visits.iter_mut().map(|v| &mut v.fut).collect());
        let due = async move {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let hand = &mut self.hand;
        let hand = async move {
            match hand {
                Hand::Turn(_, turn) => Event::TurnEnded(turn.await),
                Hand::Awaiting(_) => {
                    stop.hard().await;
                    Event::HardStop
                }
                Hand::Free => unreachable!("no pair in hand"),
            }
        };
        tokio::select! {
            biased;
            ev = hand => ev,
            (at, res) = starting => Event::Started(at, Box::new(res)),
            (at, ended) = visiting => Event::Visited(at, Box::new(ended)),
            _ = watch.merge_requested() => Event::MergeRequested,
            _ = due => Event::Due,
        }
    }

    /// Whether pair `i`, in hand, may have its turn now: its start ahead has ended, and no
    /// parked pair it meets is being visited.
    fn may_take_turn(&self, i: usize) -> bool {
        !self.running.iter().any(|r| r.index == i)
            && !self.visits.iter().any(|v| self.meets(&v.footprint, i))
    }

    /// Whether a parked pair's writes (`footprint`, its backup's) meet pair `i`'s contacts.
    fn meets(&self, footprint: &Footprint, i: usize) -> bool {
        self.sp
            .get(&self.work[i].key)
            .is_none_or(|r| footprint.meets(&Footprint::of_contacts([r.primary, r.secondary])))
    }

    /// The pair whose turn comes next, now in hand: the first one started ahead, or else
    /// the schedule's first one not started. `None` when every pair had its turn.
    fn next_turn(&mut self) -> Option<usize> {
        let ahead = self.board.borrow().ahead.front().copied();
        let i = match ahead {
            Some(i) => i,
            None => self.first_waiting()?,
        };
        self.board.borrow_mut().set(i, Stage::InHand);
        Some(i)
    }

    fn first_waiting(&mut self) -> Option<usize> {
        let board = self.board.borrow();
        while board
            .stage
            .get(self.cursor)
            .is_some_and(|s| *s != Stage::Waiting)
        {
            self.cursor += 1;
        }
        (self.cursor < self.work.len()).then_some(self.cursor)
    }

    /// Pair `i` is in hand: the checks before its turn, then its turn (or, while its start
    /// ahead still runs, the wait for it). `Err` stops the run; a decided group's member
    /// after one that stopped is passed (the hand is free again).
    fn begin_turn(&mut self, i: usize) -> Result<(), Stop> {
        let item = &self.work[i];
        self.turns += 1;
        if let Some(e) = self.fatal.take() {
            return Err(Stop::Fatal(e));
        }
        if let Some(g) = &item.group
            && let Some(why) = self.stopped_groups.get(&g.id)
        {
            self.group_waits.push((item.key.clone(), why.clone()));
            self.board.borrow_mut().set(i, Stage::Done);
            return Ok(());
        }
        if self.ctx.stop.requested() {
            return Err(Stop::Outcome(RunOutcome::Interrupted));
        }
        if schedule::held_back(item, self.merges_sent, self.max_merges) {
            tracing::info!(
                "--max-merges {} reached: stopping; re-run to continue with the rest",
                self.max_merges.unwrap_or_default()
            );
            return Err(Stop::Outcome(RunOutcome::MaxMergesReached));
        }
        let email = email_of(item, self.sp);
        // The estimate first: on a narrow terminal the end of the line is what gets cut.
        self.span.pb_set_message(&format!("{}{email}", self.eta));
        self.sp
            .journal_new_pair(item, self.keep)
            .map_err(Stop::Fatal)?;
        if !self.may_take_turn(i) {
            self.hand = Hand::Awaiting(i);
            return Ok(());
        }
        self.turn_starts(i)
    }

    /// Pair `i`'s turn starts, with what was read for it ahead, if anything.
    fn turn_starts(&mut self, i: usize) -> Result<(), Stop> {
        if let Some(e) = self.fatal.take() {
            return Err(Stop::Fatal(e));
        }
        let prepared = self.take_ready(i);
        let env = Env {
            ctx: self.ctx,
            sp: self.sp,
            work: self.work,
            board: Rc::clone(&self.board),
            span: self.span.clone(),
        };
        self.hand = Hand::Turn(i, hand::turn(env, i, prepared));
        Ok(())
    }

    /// Pair `i`'s turn ended with `run` (`None`: cut off before its saga returned).
    fn ended(&mut self, i: usize, run: Option<PairRun>) {
        let item = &self.work[i];
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
        let parked = run.as_ref().is_some_and(|r| r.result == PairResult::Parked);
        if parked {
            self.park(i);
        } else {
            self.board.borrow_mut().set(i, Stage::Done);
        }
        if let Some(run) = &run {
            self.merges_sent += usize::from(run.merge_sent);
            if !parked {
                self.span.pb_inc(1);
            }
            self.eta = self.meter.pair_done(self.ctx, self.work.len() - self.turns);
        }
        self.ran.push((item.key.clone(), run));
    }

    /// No new start ahead nor visit: Ctrl-C, or a run-wide error met beside the pair in hand.
    fn stopping(&self) -> bool {
        self.fatal.is_some() || self.stop_after_turn.is_some() || self.ctx.stop.requested()
    }

    /// The run stops: lets the starts ahead and the visits under way end, together (they
    /// share the rate limiter and the gathered reads, so one left unpolled could hold up the
    /// others), each stopping before its next step once Ctrl-C was pressed; dropped at a
    /// second Ctrl-C or after a run-wide error. Hands back every pair started ahead that
    /// never had its turn, and why a visit says the run must stop, if one does.
    async fn wind_down(&mut self, drop_running: bool) -> (Vec<(usize, Prepared)>, Option<Stop>) {
        let (starts, start_futs): (Vec<usize>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .map(|r| (r.index, r.fut))
            .unzip();
        let (visits, visit_futs): (Vec<usize>, Vec<_>) = std::mem::take(&mut self.visits)
            .into_iter()
            .map(|v| (v.index, v.fut))
            .unzip();
        let all = if drop_running || (starts.is_empty() && visits.is_empty()) {
            None
        } else {
            let both = futures_util::future::join(
                futures_util::future::join_all(start_futs),
                futures_util::future::join_all(visit_futs),
            );
            tokio::select! {
                biased;
                _ = self.ctx.stop.hard() => None,
                all = both => Some(all),
            }
        };
        let mut stop = None;
        match all {
            Some((started, visited)) => {
                for (i, res) in starts.into_iter().zip(started) {
                    self.started(i, res);
                }
                for (p, (run, stopped)) in visits.into_iter().zip(visited) {
                    self.visited(p, run);
                    if let Some(s) = stopped {
                        stop = Some(worse(stop, s));
                    }
                }
            }
            // Cut off: the visited pairs stay parked (the journal says where each stands).
            None => {
                for p in visits {
                    self.board.borrow_mut().set(p, Stage::Parked);
                }
            }
        }
        let ready = std::mem::take(&mut self.ready)
            .into_iter()
            .map(|(i, r)| (i, r.prepared))
            .collect();
        (ready, stop)
    }

    /// The loop stopped (`stop`): pairs started ahead that never had their turn are
    /// reported, and the parked ones watched until they settle (also when --max-merges
    /// stopped the run: "pairs already in flight are still finished"; a canary must not end
    /// with its last merge unconfirmed and unrepaired). Returns why the run stopped.
    async fn finish(&mut self, mut stop: Option<Stop>) -> Option<Stop> {
        let drop_running = matches!(stop, Some(Stop::Fatal(_)));
        let (ready, visit_stop) = self.wind_down(drop_running).await;
        if let Some(s) = visit_stop {
            stop = Some(worse(stop, s));
        }
        let parked: Vec<(&Item<'_>, String)> = self
            .board
            .borrow()
            .parked
            .iter()
            .map(|&i| (&self.work[i], email_of(&self.work[i], self.sp)))
            .collect();
        // Started ahead and never in hand: not started as far as DevRev goes (no merge
        // intent), reported as not started from their records and checked again by the next
        // run; those whose start settled them (skipped, failed) or merged ahead are reported
        // as such.
        for (i, prepared) in ready {
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
            self.ran.push((self.work[i].key.clone(), Some(run)));
        }
        let finish_parked = matches!(
            stop,
            None | Some(Stop::Outcome(RunOutcome::MaxMergesReached))
        );
        if finish_parked
            && !parked.is_empty()
            && let Some(s) = revisit(self.ctx, self.sp, parked, &mut self.ran, &self.span).await
        {
            stop = Some(s);
        }
        stop
    }
}

/// The first of `futs` to finish, and its place among them; never, when there are none.
async fn first_of<T>(futs: Vec<&mut LocalBoxFuture<'_, T>>) -> (usize, T) {
    if futs.is_empty() {
        return std::future::pending().await;
    }
    let (res, at, _) = futures_util::future::select_all(futs).await;
    (at, res)
}

/// Of two reasons to stop, the one the report must give: a run-wide error over Ctrl-C.
fn worse(a: Option<Stop>, b: Stop) -> Stop {
    match (a, b) {
        (Some(a @ Stop::Fatal(_)), _) => a,
        (_, b) => b,
    }
}
