//! Never idle: while the pair in hand waits for DevRev to apply its merge, the next pairs are
//! prepared (Validate, Backup, VerifyBackup: `saga/prepare.rs`) with the rate budget the wait
//! leaves unused. One client, so one rate limiter, paces every call of both.
//!
//! What stays strictly in order: every write to DevRev (merge, reconcile, ref adoption) is
//! made by the pair in hand, one pair at a time, in the schedule's order; a prepared pair only
//! reads DevRev and writes its backup and its journal record. Preparing runs one pair at a
//! time, at most [`DEPTH`] pairs ahead, and only once the pair in hand has sent its merge.
//! A pair is not prepared ahead while a pair whose writes come before its turn (the pair in
//! hand, the ones prepared before it) meets it: shares a contact, or rewrites a ticket
//! or conversation that names one of its contacts (`footprint.rs`), nor while a parked pair
//! shares a contact with it; it is reconsidered when
//! that pair is done, and at worst runs at its turn as without the pipeline. A prepared
//! backup that waited longer than [`FRESH_FOR`] for its turn is checked against
//! DevRev's current lists before its merge (the re-check a backup of an earlier run gets).
//! Under `--max-merges`, only pairs that can still send a merge in this run are prepared, and
//! the merges of a decided group (`--decisions`) are never prepared ahead.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;

use super::footprint::Footprint;
use super::saga::{self, Prepared, SagaCtx};
use super::schedule::{self, Item};
use super::shared::SharedSavepoint;
use crate::error::AppError;

/// How many pairs ahead of the one in hand may be prepared. Two cover a 10 s apply delay at
/// 45 calls a minute (a pair's checks and backup take about 7 calls, 9 s).
pub const DEPTH: usize = 2;

/// A prepared backup older than this when its pair's turn comes is checked against DevRev
/// again before the merge.
pub const FRESH_FOR: Duration = Duration::from_secs(90);

type Preparing<'a> = LocalBoxFuture<'a, Result<Prepared, AppError>>;

struct Running<'a> {
    index: usize,
    fut: Preparing<'a>,
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
    /// The pair in hand, and the merges sent before it.
    current: usize,
    merges_sent: usize,
    /// Parked pairs: their writes come later, at the end of the run.
    parked: Vec<usize>,
    /// The next index that may be prepared (pairs are prepared in order, never skipped over).
    next: usize,
    running: Option<Running<'a>>,
    ready: BTreeMap<usize, Ready>,
    /// A run-wide error met while preparing: the run stops at the end of the pair in hand.
    fatal: Option<AppError>,
}

enum Event<T> {
    Main(T),
    Prepared(Box<Result<Prepared, AppError>>),
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
            current: 0,
            merges_sent: 0,
            parked: Vec::new(),
            next: 0,
            running: None,
            ready: BTreeMap::new(),
            fatal: None,
        }
    }

    /// A run-wide error met while preparing, once.
    pub fn take_fatal(&mut self) -> Option<AppError> {
        self.fatal.take()
    }

    /// Pair `index` is now in hand.
    pub fn set_current(&mut self, index: usize, merges_sent: usize) {
        self.current = index;
        self.merges_sent = merges_sent;
        self.next = self.next.max(index + 1);
    }

    pub fn park(&mut self, index: usize) {
        self.parked.push(index);
    }

    /// What was prepared for pair `index` (waiting for its preparation to end if it is under
    /// way), or `None` if it was not prepared.
    pub async fn take(&mut self, index: usize) -> Result<Option<Prepared>, AppError> {
        if let Some(mut r) = self.running.take_if(|r| r.index == index) {
            let res = Pin::new(&mut r.fut).await;
            self.prepared(r.index, res);
        }
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let Some(ready) = self.ready.remove(&index) else {
            return Ok(None);
        };
        let mut prepared = ready.prepared;
        if prepared.ended().is_none() && ready.at.elapsed() > FRESH_FOR {
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
                    match running.as_mut() {
                        Some(r) => Pin::new(&mut r.fut).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    out = &mut main => Event::Main(out),
                    res = preparing => Event::Prepared(Box::new(res)),
                    _ = watch.merge_requested() => Event::Requested,
                }
            };
            match ev {
                Event::Main(out) => return out,
                Event::Prepared(res) => {
                    if let Some(r) = self.running.take() {
                        self.prepared(r.index, *res);
                    }
                    self.refill();
                }
                Event::Requested => self.refill(),
            }
        }
    }

    /// The run stops: lets a preparation under way finish its step (it stops before the
    /// next one once Ctrl-C was pressed; dropped at a second Ctrl-C or after a run-wide
    /// error), then hands back every prepared pair that never had its turn.
    pub async fn wind_down(mut self, drop_running: bool) -> Vec<(usize, Prepared)> {
        if let Some(mut r) = self.running.take()
            && !drop_running
        {
            let res = tokio::select! {
                biased;
                _ = self.ctx.stop.hard() => None,
                res = Pin::new(&mut r.fut) => Some(res),
            };
            if let Some(res) = res {
                self.prepared(r.index, res);
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

    /// Whether a pair in flight keeps pair `index` (footprint `mine`) from being prepared now.
    /// The pairs whose writes come between now and its turn (the pair in hand and the ones
    /// prepared before it) must not meet it at all. A parked pair must not share a contact
    /// with it; its tickets do not matter here: its repairs come at the end of the run, after
    /// `index`'s turn, so `index`'s backup is taken before them whether it is prepared early
    /// or at its turn.
    fn held_by_in_flight(&self, index: usize, mine: &Footprint) -> bool {
        let theirs = |b: usize| {
            self.sp
                .get(&self.work[b].key)
                .map_or_else(Footprint::default, |r| Footprint::of_record(&r))
        };
        (self.current..index).any(|b| theirs(b).meets(mine))
            || self
                .parked
                .iter()
                .any(|&b| !theirs(b).contacts.is_disjoint(&mine.contacts))
    }

    /// Starts preparing the next pair if it may be.
    fn refill(&mut self) {
        if self.running.is_some() || self.fatal.is_some() || self.ctx.stop.requested() {
            return;
        }
        let j = self.next;
        if j > self.current + DEPTH || j >= self.work.len() {
            return;
        }
        // Only once the pair in hand has asked for its merge: before, its own checks use the
        // whole budget, and its backup (what the next pair must not meet) is not known.
        let in_hand = &self.work[self.current];
        if self.sp.get(&in_hand.key).is_none_or(|r| r.merge.is_none()) {
            return;
        }
        let item = &self.work[j];
        let Some(pair) = item.pair.filter(|_| !item.in_flight) else {
            return;
        };
        // A decided group's merges run strictly one after the other, and a group that stops
        // leaves its later merges untouched (no record, no backup): none is prepared ahead.
        if item.group.is_some() {
            return;
        }
        // Every fresh pair from the one in hand to this one may send a merge first.
        let ahead = (self.current..j)
            .filter(|&i| !self.work[i].in_flight)
            .count();
        if schedule::held_back(item, self.merges_sent + ahead, self.max_merges) {
            return;
        }
        let mine = Footprint::of_contacts([
            pair.primary.rev_user_id.clone(),
            pair.secondary.rev_user_id.clone(),
        ]);
        let meets = self.held_by_in_flight(j, &mine);
        if meets {
            // Waits for its turn (reconsidered when the pair it meets is done).
            return;
        }
        if let Err(e) = self.sp.journal_new_pair(item, self.keep) {
            self.fatal = Some(e);
            return;
        }
        self.next = j + 1;
        let (ctx, sp, key) = (self.ctx, self.sp, item.key.clone());
        tracing::debug!(pair = %pair.email, "preparing ahead of its turn");
        self.running = Some(Running {
            index: j,
            fut: Box::pin(async move { saga::prepare_pair(ctx, sp, &key, Some(pair)).await }),
        });
    }
}
