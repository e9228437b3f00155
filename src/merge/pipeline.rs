//! Never idle: while the pair in hand waits for DevRev to apply its merge, the next pairs are
//! prepared (Validate, Backup, VerifyBackup: `saga/prepare.rs`) with the rate budget the wait
//! leaves unused, and a prepared pair whose backup meets nothing in flight goes on to its own
//! merge (issue 29: several merges in flight, their apply waits overlapping). One client, so
//! one rate limiter, paces every call of all of them, the most urgent first
//! (`devrev/line.rs`).
//!
//! What stays strictly in order: two pairs that meet never write to DevRev at the same time.
//! A pair is prepared only once the pair in hand has sent its merge, one preparation reads at
//! a time (the next starts once every one under way has sent its merge or stopped before it),
//! at most [`DEPTH`] pairs ahead and at most [`PREPARED`] of them waiting for their turn
//! unmerged. A pair is not prepared while a pair whose writes come before its turn (the pair
//! in hand, the ones ahead of it) meets it: shares a contact, or rewrites a ticket or
//! conversation that names one of its contacts (`footprint.rs`), nor while a parked pair (its
//! merge accepted, not seen applied yet) meets it: that one is settled in place before the
//! turn of a pair it meets. A prepared pair goes on to its merge only if, once its own backup
//! is known, it meets none of the pairs in flight then, either way; otherwise it waits for its
//! turn.
//!
//! The turns follow the schedule's order, except that a pair held that way is passed over:
//! the first pair within [`LOOKAHEAD`] that nothing in flight meets is prepared instead and
//! has its turn first, and the held pair comes after it (its checks and backup then follow
//! every write before them, as at its own turn). Two pairs that meet still run strictly one
//! after the other, in the order their turns come; pairs that do not meet have no order to
//! keep. Never passed over: a pair resumed with its merge in flight, one merge of a decided
//! group (`--decisions`: its members run in order and are never prepared ahead), and a pair
//! under `--max-merges` (which pairs a canary merges stays the schedule's first ones).
//! A prepared backup that waited longer than [`crate::backup::FRESH_FOR`] for its turn is
//! checked against DevRev's current lists before its merge (the re-check a backup of an
//! earlier run gets).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;

use super::footprint::Footprint;
use super::saga::{self, Prepared, SagaCtx};
use super::schedule::{self, Item};
use super::shared::SharedSavepoint;
use crate::error::AppError;

/// How many pairs ahead of the one in hand may be in flight. Of those, at most one waits for
/// its turn with only its checks and backup done ([`PREPARED`]); the others went on to their
/// merge because they meet nothing in flight (issue 29: several merges in flight, their apply
/// waits overlapping).
pub const DEPTH: usize = 9;

/// How many pairs ahead may wait for their turn prepared but not merged. One: a pair's checks
/// and backup (about 7 calls, 9 s at 45 calls a minute) fill one 10 s apply wait, and a pair
/// prepared outside a wait (during the repairs of the pair in hand) only takes calls the
/// repairs needed, leaving less to fill the later waits (measured: 0.867 of the budget with
/// two ahead, 0.900 with one, default world at 10 s, docs/benchmarks.md).
pub const PREPARED: usize = 1;

/// How many pairs not yet started are looked at for one that may be prepared when the next
/// one is held: far enough to find one in a world where neighbouring pairs often share
/// tickets, near enough that the turns stay close to the schedule's order.
pub const LOOKAHEAD: usize = 8;

// A prepared backup older than `backup::FRESH_FOR` when its pair's turn comes is checked
// against DevRev again before the merge. The window lives in `backup`, which also reuses a
// timeline read earlier in the run only while it is younger: one window for both.
use crate::backup::fresh_for;

type Preparing<'a> = LocalBoxFuture<'a, Result<Prepared, AppError>>;

struct Running<'a> {
    index: usize,
    fut: Preparing<'a>,
}

/// Where a pair of the run stands. The scheduler orders pairs by these; what a pair's saga
/// has done (merge sent, applied, reconciled, adopted) is its journal's `Step`, each step
/// written to the savepoint before the next starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not started: its turn comes in the schedule's order, unless it is passed over.
    Waiting,
    /// Prepared ahead of its turn: reading (Validate, Backup, VerifyBackup), then waiting for
    /// its turn, or (meeting nothing in flight) gone on to its merge and the rest of its saga.
    Ahead,
    /// Its turn: the pair in hand.
    InHand,
    /// Its merge is accepted but not seen applied: settled in place before the turn of a
    /// pair it meets, else watched at the end of the run.
    Parked,
    /// Its turn is over.
    Done,
}

/// Every pair's stage, shared with the preparations under way: each decides whether it may
/// go on to its merge once its own backup is known, against the pairs in flight then.
struct Board {
    stage: Vec<Stage>,
    /// The pairs [`Stage::Ahead`], in the order their turns come.
    ahead: VecDeque<usize>,
    /// The pairs [`Stage::Parked`], in the order they parked.
    parked: Vec<usize>,
}

impl Board {
    fn new(pairs: usize) -> Self {
        Self {
            stage: vec![Stage::Waiting; pairs],
            ahead: VecDeque::new(),
            parked: Vec::new(),
        }
    }

    /// Moves pair `i` to `stage`; the only place stages change.
    fn set(&mut self, i: usize, stage: Stage) {
        let was = std::mem::replace(&mut self.stage[i], stage);
        if was == stage {
            return;
        }
        match was {
            Stage::Ahead => self.ahead.retain(|&b| b != i),
            Stage::Parked => self.parked.retain(|&b| b != i),
            _ => {}
        }
        match stage {
            Stage::Ahead => self.ahead.push_back(i),
            Stage::Parked => self.parked.push(i),
            _ => {}
        }
    }

    /// The pair in hand, if one is.
    fn in_hand(&self) -> Option<usize> {
        self.stage.iter().position(|s| *s == Stage::InHand)
    }

    /// The pairs whose writes may still come: the pair in hand, those ahead, the parked.
    fn in_flight(&self) -> impl Iterator<Item = usize> + '_ {
        self.in_hand()
            .into_iter()
            .chain(self.ahead.iter().copied())
            .chain(self.parked.iter().copied())
    }
}

/// A prepared pair waiting for its turn.
struct Ready {
    prepared: Prepared,
    at: Instant,
}

pub struct Pipeline<'a, 'p> {
    ctx: &'a SagaCtx<'a>,
    sp: &'a SharedSavepoint,
    work: &'a [Item<'p>],
    keep: crate::options::Keep,
    max_merges: Option<usize>,
    /// The merges sent before the pair in hand.
    merges_sent: usize,
    board: Rc<RefCell<Board>>,
    /// Every pair before this index is no longer [`Stage::Waiting`].
    cursor: usize,
    running: Vec<Running<'a>>,
    ready: BTreeMap<usize, Ready>,
    /// A run-wide error met while preparing: the run stops at the end of the pair in hand.
    fatal: Option<AppError>,
    fresh_for: Duration,
}

enum Event<T> {
    Main(T),
    Prepared(usize, Box<Result<Prepared, AppError>>),
    Requested,
}

impl<'a, 'p> Pipeline<'a, 'p> {
    pub fn new(
        ctx: &'a SagaCtx<'a>,
        sp: &'a SharedSavepoint,
        work: &'a [Item<'p>],
        keep: crate::options::Keep,
        max_merges: Option<usize>,
    ) -> Self {
        Self {
            ctx,
            sp,
            work,
            keep,
            max_merges,
            merges_sent: 0,
            board: Rc::new(RefCell::new(Board::new(work.len()))),
            cursor: 0,
            running: Vec::new(),
            ready: BTreeMap::new(),
            fatal: None,
            fresh_for: fresh_for(),
        }
    }

    /// A run-wide error met while preparing, once.
    pub fn take_fatal(&mut self) -> Option<AppError> {
        self.fatal.take()
    }

    /// The pair whose turn comes next, now in hand: the first one prepared ahead, or else
    /// the schedule's first one not started. `None` when every pair had its turn. The pair
    /// in hand before it is done with its turn (or parked already).
    pub fn next_turn(&mut self) -> Option<usize> {
        let ahead = {
            let mut board = self.board.borrow_mut();
            if let Some(i) = board.in_hand() {
                board.set(i, Stage::Done);
            }
            board.ahead.front().copied()
        };
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

    /// The merges sent before the pair in hand.
    pub fn set_merges_sent(&mut self, merges_sent: usize) {
        self.merges_sent = merges_sent;
    }

    /// Pair `index`'s turn ended with its merge not seen applied.
    pub fn park(&mut self, index: usize) {
        self.board.borrow_mut().set(index, Stage::Parked);
    }

    /// A parked pair settled (in place, or at the end of the run).
    pub fn settled(&mut self, index: usize) {
        self.board.borrow_mut().set(index, Stage::Done);
    }

    /// The run's pairs, in the schedule's order.
    pub fn work(&self) -> &'a [Item<'p>] {
        self.work
    }

    /// The parked pairs, in the order they parked.
    pub fn parked(&self) -> Vec<usize> {
        self.board.borrow().parked.clone()
    }

    /// What was prepared for pair `index` (waiting for its preparation to end if it is under
    /// way), or `None` if it was not prepared.
    pub async fn take(&mut self, index: usize) -> Result<Option<Prepared>, AppError> {
        if let Some(at) = self.running.iter().position(|r| r.index == index) {
            // Its saga may be well under way (a merge sent ahead of its turn, waiting to
            // apply): the next pairs are prepared meanwhile, as alongside any pair in hand.
            let mut r = self.running.remove(at);
            let res = self.alongside(&mut r.fut).await;
            self.prepared(r.index, res);
        }
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let Some(ready) = self.ready.remove(&index) else {
            return Ok(None);
        };
        let mut prepared = ready.prepared;
        if prepared.ended().is_none() && ready.at.elapsed() > self.fresh_for {
            // Waited long: DevRev may have changed since. Validate runs again and the backup
            // is compared with DevRev's lists (a new one is taken if it is stale).
            self.ctx.watch.forget_backup(&self.work[index].key);
            prepared = prepared.forget_checks();
        }
        Ok(Some(prepared))
    }

    /// Runs `main` (the pair in hand) while preparing the next pairs.
    pub async fn alongside<T>(&mut self, main: impl Future<Output = T>) -> T {
        let mut main = std::pin::pin!(main);
        self.refill();
        loop {
            let ev = {
                let running = &mut self.running;
                let watch = self.ctx.watch;
                let preparing = async move {
                    if running.is_empty() {
                        return std::future::pending().await;
                    }
                    let (res, at, _) =
                        futures_util::future::select_all(running.iter_mut().map(|r| &mut r.fut))
                            .await;
                    (at, res)
                };
                tokio::select! {
                    biased;
                    out = &mut main => Event::Main(out),
                    (at, res) = preparing => Event::Prepared(at, Box::new(res)),
                    _ = watch.merge_requested() => Event::Requested,
                }
            };
            match ev {
                Event::Main(out) => return out,
                Event::Prepared(at, res) => {
                    let r = self.running.remove(at);
                    self.prepared(r.index, *res);
                    self.refill();
                }
                Event::Requested => self.refill(),
            }
        }
    }

    /// The run stops: lets the preparations under way finish their step (they stop before
    /// the next one once Ctrl-C was pressed; dropped at a second Ctrl-C or after a run-wide
    /// error), then hands back every prepared pair that never had its turn.
    pub async fn wind_down(mut self, drop_running: bool) -> Vec<(usize, Prepared)> {
        let running = std::mem::take(&mut self.running);
        if !running.is_empty() && !drop_running {
            let (indices, futs): (Vec<usize>, Vec<Preparing<'_>>) =
                running.into_iter().map(|r| (r.index, r.fut)).unzip();
            let all = tokio::select! {
                biased;
                _ = self.ctx.stop.hard() => None,
                all = futures_util::future::join_all(futs) => Some(all),
            };
            for (index, res) in indices.into_iter().zip(all.into_iter().flatten()) {
                self.prepared(index, res);
            }
        }
        self.ready
            .into_iter()
            .map(|(i, r)| (i, r.prepared))
            .collect()
    }

    /// A preparation ended.
    fn prepared(&mut self, index: usize, res: Result<Prepared, AppError>) {
        let prepared = match res {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "while preparing the next pair; stopping after this one");
                self.fatal = Some(e);
                return;
            }
        };
        self.ready.insert(
            index,
            Ready {
                prepared,
                at: Instant::now(),
            },
        );
    }

    /// Starts preparing a pair ahead of its turn if one may be: the schedule's next one, or
    /// the first within [`LOOKAHEAD`] that nothing in flight meets.
    fn refill(&mut self) {
        while self.start_one() {}
    }

    /// Whether pair `b` has asked for its merge (its backup, what a later pair must not
    /// meet, is known then).
    fn merge_asked(&self, b: usize) -> bool {
        self.sp
            .get(&self.work[b].key)
            .is_some_and(|r| r.merge.is_some())
    }

    /// Starts preparing one pair if one may be; `true` if it did.
    fn start_one(&mut self) -> bool {
        if self.fatal.is_some() || self.ctx.stop.requested() {
            return false;
        }
        // One preparation reads at a time: the next starts once every one under way has
        // asked for its merge (or ended), so each knows the others' backups when it decides
        // whether it may merge ahead too.
        if self.running.iter().any(|r| !self.merge_asked(r.index)) {
            return false;
        }
        let (Some(current), ahead) = ({
            let b = self.board.borrow();
            (b.in_hand(), b.ahead.clone())
        }) else {
            return false;
        };
        let waiting = ahead.iter().filter(|&&b| !self.merge_asked(b)).count();
        if ahead.len() >= DEPTH || waiting >= PREPARED {
            return false;
        }
        // Only once the pair in hand has asked for its merge: before, its own checks use the
        // whole budget, and its backup (what the next pair must not meet) is not known.
        let in_hand = &self.work[current];
        if !self.merge_asked(current) {
            return false;
        }
        // Every fresh pair from the one in hand to the one prepared may send a merge first.
        let before = usize::from(!in_hand.in_flight) + ahead.len();
        let look = if self.max_merges.is_some() {
            1
        } else {
            LOOKAHEAD
        };
        // A pair in flight keeps a candidate from being prepared now if it meets it. The
        // pairs whose writes come between now and its turn (the pair in hand and the ones
        // ahead, all before it) must not meet it at all, and neither may a parked pair:
        // DevRev may apply its merge at any moment, and it is settled before the turn of a
        // pair it meets (`execute.rs`). Their footprints (read from their backups) once for
        // all candidates.
        let flying = in_flight_footprints(self.sp, self.work, &self.board.borrow(), None);
        let Some(j) = self.candidates(look).into_iter().find(|&j| {
            let mine = self.footprint_of(j);
            !schedule::held_back(&self.work[j], self.merges_sent + before, self.max_merges)
                && !flying.iter().any(|theirs| theirs.meets(&mine))
        }) else {
            return false;
        };
        let item = &self.work[j];
        let Some(pair) = item.pair else { return false };
        if let Err(e) = self.sp.journal_new_pair(item, self.keep) {
            self.fatal = Some(e);
            return false;
        }
        self.board.borrow_mut().set(j, Stage::Ahead);
        let (ctx, sp, work, key) = (self.ctx, self.sp, self.work, item.key.clone());
        tracing::debug!(pair = %pair.email, "preparing ahead of its turn");
        // It may go on to its merge if it meets nothing in flight when its backup is known
        // (never under --max-merges: a canary's merges stay the schedule's first ones, one
        // at a time).
        let board = Rc::clone(&self.board);
        let in_flight = (self.ctx.merge_ahead && self.max_merges.is_none()).then(|| {
            Box::new(move || in_flight_footprints(sp, work, &board.borrow(), Some(j)))
                as Box<dyn Fn() -> Vec<Footprint> + 'a>
        });
        self.running.push(Running {
            index: j,
            fut: Box::pin(
                async move { saga::prepare_pair(ctx, sp, &key, Some(pair), in_flight).await },
            ),
        });
        true
    }

    /// The next `n` pairs not started, in the schedule's order, up to the first that may not
    /// be prepared ahead or passed over (resumed in flight, left the CSV, a decided group's
    /// merge).
    fn candidates(&mut self, n: usize) -> Vec<usize> {
        let from = self.first_waiting().unwrap_or(self.work.len());
        let board = self.board.borrow();
        (from..self.work.len())
            .filter(|&j| board.stage[j] == Stage::Waiting)
            .take(n)
            .take_while(|&j| {
                let item = &self.work[j];
                item.pair.is_some() && !item.in_flight && item.group.is_none()
            })
            .collect()
    }

    fn footprint_of(&self, j: usize) -> Footprint {
        let pair = self.work[j].pair.expect("candidates have a CSV pair");
        Footprint::of_contacts([
            pair.primary.rev_user_id.clone(),
            pair.secondary.rev_user_id.clone(),
        ])
    }
}

/// The footprints of the pairs whose writes may still come (besides `except`): the pair in
/// hand, those ahead, the parked.
fn in_flight_footprints(
    sp: &SharedSavepoint,
    work: &[Item<'_>],
    board: &Board,
    except: Option<usize>,
) -> Vec<Footprint> {
    board
        .in_flight()
        .filter(|&b| Some(b) != except)
        .map(|b| {
            sp.get(&work[b].key)
                .map_or_else(Footprint::default, |r| Footprint::of_record(&r))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Board, Stage};

    #[test]
    fn a_pair_is_in_flight_from_ahead_through_its_turn_and_while_parked() {
        let mut b = Board::new(4);
        assert_eq!(b.in_flight().count(), 0, "nothing started");
        b.set(0, Stage::InHand);
        b.set(2, Stage::Ahead);
        b.set(1, Stage::Ahead);
        // Turns come in the order pairs went ahead (2 was passed over 1's held turn).
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [0, 2, 1]);
        b.set(0, Stage::Parked);
        b.set(2, Stage::InHand);
        assert_eq!(b.in_hand(), Some(2));
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [2, 1, 0]);
        // Settled in place, or done: out of flight, and out of both lists.
        b.set(0, Stage::Done);
        b.set(2, Stage::Done);
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [1]);
        assert!(b.parked.is_empty() && b.ahead == [1]);
        assert_eq!(
            b.stage,
            [Stage::Done, Stage::Ahead, Stage::Done, Stage::Waiting]
        );
    }
}
