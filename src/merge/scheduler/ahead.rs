//! Pairs started ahead of their turn. Never idle: while the pair in hand waits for DevRev to
//! apply its merge, the next pairs are read (Validate, Backup, VerifyBackup:
//! `saga/prepare.rs`) with the rate budget the wait leaves unused, and a pair whose backup
//! meets nothing in flight goes on to its own merge (issue 29: several merges in flight, their
//! apply waits overlapping). One client, so one rate limiter, paces every call of all of them,
//! the most urgent first (`devrev/line.rs`).
//!
//! What stays strictly in order: two pairs that meet never write to DevRev at the same time.
//! A pair is started ahead only once the pair in hand has sent its merge, one start reads at
//! a time (the next begins once every one under way has sent its merge or stopped before
//! it), at most [`DEPTH`] pairs ahead and at most [`PREPARED`] of them waiting for their turn
//! unmerged. A pair is not started while a pair whose writes come before its turn (the pair
//! in hand, the ones ahead of it) meets it: shares a contact, or rewrites a ticket or
//! conversation that names one of its contacts (`footprint.rs`), nor while a parked pair (its
//! merge accepted, not seen applied yet) meets it: that one is settled in place before the
//! turn of a pair it meets. A pair read ahead goes on to its merge only if, once its own
//! backup is known, it meets none of the pairs in flight then, either way; otherwise it
//! waits for its turn.
//!
//! The turns follow the schedule's order, except that a pair held that way is passed over:
//! the first pair within [`LOOKAHEAD`] that nothing in flight meets is started instead and
//! has its turn first, and the held pair comes after it (its checks and backup then follow
//! every write before them, as at its own turn). Two pairs that meet still run strictly one
//! after the other, in the order their turns come; pairs that do not meet have no order to
//! keep. Never passed over: a pair resumed with its merge in flight, one merge of a decided
//! group (`--decisions`: its members run in order and are never started ahead), and a pair
//! under `--max-merges` (which pairs a canary merges stays the schedule's first ones).
//! A backup read ahead that waited longer than [`crate::backup::FRESH_FOR`] for its turn is
//! checked against DevRev's current lists before its merge (the re-check a backup of an
//! earlier run gets).

use std::rc::Rc;
use std::time::Instant;

use futures_util::future::LocalBoxFuture;

use super::Scheduler;
use super::board::{Board, Stage};
use crate::error::AppError;
use crate::merge::footprint::Footprint;
use crate::merge::saga::{self, Prepared};
use crate::merge::schedule::{self, Item};
use crate::merge::shared::SharedSavepoint;

/// How many pairs ahead of the one in hand may be in flight. Of those, at most one waits for
/// its turn with only its checks and backup done ([`PREPARED`]); the others went on to their
/// merge because they meet nothing in flight (issue 29: several merges in flight, their apply
/// waits overlapping).
pub const DEPTH: usize = 9;

/// How many pairs ahead may wait for their turn read but not merged. One: a pair's checks and
/// backup (about 7 calls, 9 s at 45 calls a minute) fill one 10 s apply wait, and a pair read
/// outside a wait (during the repairs of the pair in hand) only takes calls the repairs
/// needed, leaving less to fill the later waits (measured: 0.867 of the budget with two
/// ahead, 0.900 with one, default world at 10 s, docs/benchmarks.md).
pub const PREPARED: usize = 1;

/// How many pairs not yet started are looked at for one that may be started when the next
/// one is held: far enough to find one in a world where neighbouring pairs often share
/// tickets, near enough that the turns stay close to the schedule's order.
pub const LOOKAHEAD: usize = 8;

pub(super) type Starting<'a> = LocalBoxFuture<'a, Result<Prepared, AppError>>;

/// A pair started ahead whose start (its reads, and its saga if it merges ahead) still runs.
pub(super) struct Running<'a> {
    pub index: usize,
    pub fut: Starting<'a>,
}

/// A pair whose start ended before its turn came.
pub(super) struct Ready {
    pub prepared: Prepared,
    pub at: Instant,
}

impl<'a, 'p: 'a> Scheduler<'a, 'p> {
    /// Starts pairs ahead of their turn while one may be: the schedule's next one, or the
    /// first within [`LOOKAHEAD`] that nothing in flight meets.
    pub(super) fn refill(&mut self) {
        while self.start_one() {}
    }

    /// What was read for pair `index` ahead of its turn, if anything; a backup that waited
    /// long is checked again (DevRev may have changed since: Validate runs again and the
    /// backup is compared with DevRev's lists, a new one taken if it is stale).
    pub(super) fn take_ready(&mut self, index: usize) -> Option<Prepared> {
        let ready = self.ready.remove(&index)?;
        let mut prepared = ready.prepared;
        if prepared.ended().is_none() && ready.at.elapsed() > self.fresh_for {
            self.ctx.watch.forget_backup(&self.work[index].key);
            prepared = prepared.forget_checks();
        }
        Some(prepared)
    }

    /// A start ahead ended.
    pub(super) fn started(&mut self, index: usize, res: Result<Prepared, AppError>) {
        let prepared = match res {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "while preparing the next pair; stopping after this one");
                self.fatal = Some(e);
                return;
            }
        };
        let mut board = self.board.borrow_mut();
        if board.stage[index] == Stage::Ahead {
            board.set(index, Stage::Ready);
        }
        self.ready.insert(
            index,
            Ready {
                prepared,
                at: Instant::now(),
            },
        );
    }

    /// Whether pair `b` has asked for its merge (its backup, what a later pair must not
    /// meet, is known then).
    fn merge_asked(&self, b: usize) -> bool {
        self.sp
            .get(&self.work[b].key)
            .is_some_and(|r| r.merge.is_some())
    }

    /// Starts one pair ahead if one may be; `true` if it did.
    fn start_one(&mut self) -> bool {
        if self.stopping() {
            return false;
        }
        // One start reads at a time: the next begins once every one under way has asked for
        // its merge (or ended), so each knows the others' backups when it decides whether it
        // may merge ahead too.
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
        // Every fresh pair from the one in hand to the one started may send a merge first.
        let before = usize::from(!in_hand.in_flight) + ahead.len();
        let look = if self.max_merges.is_some() {
            1
        } else {
            LOOKAHEAD
        };
        // A pair in flight keeps a candidate from being started now if it meets it. The
        // pairs whose writes come between now and its turn (the pair in hand and the ones
        // ahead, all before it) must not meet it at all, and neither may a parked pair:
        // DevRev may apply its merge at any moment, and it is settled before the turn of a
        // pair it meets (`hand.rs`). Their footprints (read from their backups) once for
        // all candidates.
        let flying = in_flight_footprints(self.sp, self.work, &self.board.borrow(), None);
        let Some(j) = self.candidates(look).into_iter().find(|&j| {
            let mine = self.footprint_of(j);
            !schedule::held_back(&self.work[j], self.merges_sent + before, self.max_merges)
                && !flying.iter().any(|theirs| theirs.meets(&mine))
        }) else {
            return false;
        };
        self.start(j)
    }

    /// Starts pair `j` ahead of its turn: its reads, then its merge and the rest of its saga
    /// if it meets nothing in flight once its backup is known (never under --max-merges: a
    /// canary's merges stay the schedule's first ones, one at a time).
    fn start(&mut self, j: usize) -> bool {
        let item = &self.work[j];
        let Some(pair) = item.pair else { return false };
        if let Err(e) = self.sp.journal_new_pair(item, self.keep) {
            self.fatal = Some(e);
            return false;
        }
        self.board.borrow_mut().set(j, Stage::Ahead);
        let (ctx, sp, work, key) = (self.ctx, self.sp, self.work, item.key.clone());
        tracing::debug!(pair = %pair.email, "preparing ahead of its turn");
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
    /// be started ahead or passed over (resumed in flight, left the CSV, a decided group's
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
