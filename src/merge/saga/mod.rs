//! One pair's steps: Validate → Backup → VerifyBackup → RequestMerge → AwaitMerge →
//! Reconcile → AdoptExternalRef → Done, each journaled in the savepoint before the next one
//! starts, each ending `Completed`, `Skipped { reason }` or `Failed { error }`.
//!
//! # Exactly one merge per pair
//!
//! `rev-users.merge` answers `200 {}` at once and applies the merge later; it has no job id
//! and no idempotency key. So the saga:
//!
//! 1. writes the intent (`merge.outcome = None`, with `requested_at`) to the savepoint and
//!    fsyncs it **before** sending the request;
//! 2. writes the outcome after the answer: `Accepted`, `Rejected` (4xx: not applied),
//!    `NotSent` (connection refused: nothing left this machine) or `Unknown` (the answer was
//!    lost, or a 500/502/504 that may have followed the work);
//! 3. an intent whose outcome is missing (crash) or `Unknown` is *resolved*, never retried:
//!    the secondary is polled until it shows as merged, or until `--merge-timeout` has passed
//!    **since the request** with the secondary still plainly unmerged. Because DevRev applies
//!    merges after a delay, a single look right after a lost answer proves nothing: a merge
//!    that was received may simply not be applied yet. Only a full `--merge-timeout` of
//!    successful observations of an active, un-redirected secondary (no 404, no
//!    `primary_identity`, no `-drop-` ref) counts as "certainly not merged"; only then is the
//!    outcome recorded as `NotApplied` and a new request (attempt 2) allowed. A poll that
//!    fails proves nothing either, so it never leads to a new request.
//! 4. an `Accepted` merge that DevRev has not applied within `--merge-timeout` leaves the
//!    pair `Unconfirmed`: the next run polls again and never sends the merge a second time.
//!
//! The remaining risk is a lost request that DevRev applies more than `--merge-timeout` after
//! it was sent; keep `--merge-timeout` well above DevRev's observed delay (about 2 s).
//!
//! After the merge, Reconcile and AdoptExternalRef only *set* values (`reported_by.set`,
//! `members.set`, `external_ref`, `display_name`), computed from the current state each time
//! (the primary's name from the adoption's answer under `--keep revu`), so repeating
//! them after a crash is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::StopSignal;
use super::evidence::{self, Destination, Evidence};
use super::journal::{
    MergeConfirmation, MergeIntent, MergeOutcome, MergedSign, PairError, PairRecord, PairStatus,
    RefRelease, SkipReason, Step,
};
use super::shared::SharedSavepoint;
use super::watching::WatchState;
use crate::backup::{self, BackupError, BackupInput};
use crate::detect::{Pair, RefClass, classify_ref};
use crate::devrev::types::{Conversation, RevUser, UserSummary, Work};
use crate::devrev::{ApiError, DevRevClient};
use crate::error::AppError;
use crate::options::BackupScope;
use crate::validate::{self, Listing, LiveCheck, LiveProblem};

mod adopt;
mod carry;
mod prepare;
mod reconcile;
mod steps;
mod watch;

pub use prepare::{Prepared, prepare_pair};
pub use watch::first_look_wait;

impl PairError {
    /// A failure as DevRev described it (status, error type, reference id).
    pub fn api(step: Step, e: &ApiError) -> Self {
        Self {
            step,
            message: e.to_string(),
            status: e.status(),
            kind: e.kind().map(str::to_string),
            reference_id: e.reference_id().map(str::to_string),
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    Completed,
    Skipped {
        reason: SkipReason,
    },
    Failed {
        error: PairError,
    },
    /// AwaitMerge ran out of `--merge-timeout`.
    Unconfirmed,
    /// Not applied yet after this visit's looks: the run comes back to the pair later.
    Parked,
    /// Merged and reconciled, but the `user_` ref could not be adopted yet.
    RefPending,
    /// Ctrl-C arrived during a wait; the step resumes on the next run.
    Interrupted,
    /// The secondary went to another contact (Reconcile's destination check): final.
    MergedElsewhere {
        reason: SkipReason,
    },
}

/// One step as it ran, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: Step,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub outcome: StepOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How the pair ended in this run.
#[derive(Debug, Clone, PartialEq)]
pub enum PairResult {
    Merged,
    AlreadyMerged,
    Skipped(SkipReason),
    Failed(PairError),
    Unconfirmed,
    /// Waiting for a merge to show; the run revisits it after the other pairs.
    Parked,
    /// Merged; the ref adoption is pending (retried by the next run).
    RefPending,
    /// Stopped by Ctrl-C between steps or during a wait; resumes on the next run.
    Interrupted,
    /// After a lost merge answer the secondary went to another contact; nothing repaired.
    MergedElsewhere(SkipReason),
}

/// One pair's run.
#[derive(Debug, Clone)]
pub struct PairRun {
    pub steps: Vec<StepRecord>,
    pub result: PairResult,
    /// A `rev-users.merge` request was sent for this pair in this run (counts for
    /// `--max-merges`).
    pub merge_sent: bool,
}

/// What every pair's saga shares.
pub struct SagaCtx<'a> {
    pub client: &'a DevRevClient,
    /// The run's batched contact reads (Validate takes each contact from them once).
    pub contacts: &'a crate::validate::ContactReads,
    /// The run's shared ticket and conversation lists (Backup, its check, Reconcile).
    pub lists: &'a crate::validate::ListReads,
    pub scope: BackupScope,
    pub backup_root: &'a Path,
    pub run_id: &'a str,
    pub merge_timeout: Duration,
    /// `--merge-watch`: how long a secondary must be seen plainly unmerged after a lost merge
    /// answer before the merge may be sent again.
    pub merge_watch: Duration,
    /// What the run has learned about apply delays, and which pairs it is watching.
    pub watch: &'a WatchState,
    /// First delay of every poll/backoff loop (`DEVREV_MERGE_MIN_BACKOFF_MS`).
    pub min_backoff: Duration,
    /// `--resend-unapplied`: an accepted merge never applied over a whole watch window is
    /// sent again (after Validate and the backup check run again).
    pub resend_unapplied: bool,
    /// Carry the secondary's own data over to the survivor (`--no-carry` turns it off).
    pub carry: bool,
    /// A pair prepared ahead that meets nothing in flight may go on to its merge
    /// (`--one-merge-at-a-time` turns it off).
    pub merge_ahead: bool,
    pub stop: &'a StopSignal,
    /// What the run's backups have read so far: a ticket, conversation or attachment that
    /// several pairs share is read once per run (timelines while fresh).
    pub reads: &'a backup::RunReads,
}

/// A step's result as the driver sees it: fatal errors stop the whole run.
type StepResult = Result<(StepOutcome, Option<String>), AppError>;

/// A part of a step: `Ok(Ok(v))` goes on with `v`, `Ok(Err(outcome))` ends the step with that
/// outcome, `Err` stops the run.
type Phase<T> = Result<Result<T, StepOutcome>, AppError>;

/// A failed API call inside a part of a step: fatal for the run, or a failure of this pair.
fn phase_api_failure<T>(step: Step, e: &ApiError) -> Phase<T> {
    if is_fatal(e) {
        return Err(AppError::Api(e.clone()));
    }
    Ok(Err(StepOutcome::Failed {
        error: PairError::api(step, e),
    }))
}

/// A part of a step that found the pair in a state it cannot go on from.
fn phase_failed<T>(step: Step, message: String) -> Phase<T> {
    Ok(Err(StepOutcome::Failed {
        error: PairError::new(step, message),
    }))
}

/// API failures that will hit every following pair too, so the run stops (and resumes later)
/// instead of failing pair after pair.
pub fn is_fatal(e: &ApiError) -> bool {
    e.scope() == crate::devrev::Scope::Run
}

/// `current` with every merged secondary replaced by its primary (`merged`: secondary →
/// primary, always including this pair): no duplicates, everyone else kept in their order. If
/// the primary is then missing it is put back at `hint` (its place in the backup), clamped to
/// the end.
///
/// Other pairs' merged secondaries are mapped too: DevRev refuses (404) a `reported_by.set`
/// naming a contact a merge deleted, so a ticket shared with a pair whose own repair has not
/// happened yet (it failed, or the run stopped) is fixed for both in one write.
pub fn replace_members(
    current: &[String],
    merged: &BTreeMap<String, String>,
    primary: &str,
    hint: Option<usize>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(current.len() + 1);
    for id in current {
        let id = merged.get(id).map_or(id.as_str(), String::as_str);
        if !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    if !out.iter().any(|o| o == primary) {
        let at = hint.unwrap_or(out.len()).min(out.len());
        out.insert(at, primary.to_string());
    }
    out
}

/// A write of `reported_by` / `members` succeeded: both are sets, so DevRev may answer the
/// ids in another order, and may add members of its own. Every id written must be there, and
/// none of those the write removed (`before` minus `want`: the merged secondaries) may be.
fn same_set(answer: &[String], want: &[String], before: &[String]) -> bool {
    want.iter().all(|w| answer.contains(w))
        && !before
            .iter()
            .any(|b| !want.contains(b) && answer.contains(b))
}

fn ids(users: &[UserSummary]) -> Vec<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

/// Where the primary belongs in a backed-up list: the first place either contact held, which
/// is where "secondary replaced in place, first occurrence kept" puts it.
fn position_hint(users: &[UserSummary], primary: &str, secondary: &str) -> Option<usize> {
    users
        .iter()
        .position(|u| u.id == primary || u.id == secondary)
}

/// The longest wait between two looks in a poll or retry loop.
const MAX_POLL_DELAY: Duration = Duration::from_secs(10);

/// Delays of a poll or retry loop (AwaitMerge, resolving a lost merge answer, the 409s of
/// AdoptExternalRef): `min` (at least 5 ms), doubling, capped at [`MAX_POLL_DELAY`], without
/// jitter and without end: each loop stops at its own `--merge-timeout` deadline.
pub(super) fn poll_delays(min: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(min.max(Duration::from_millis(5)))
        .with_max_delay(MAX_POLL_DELAY)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// The next delay of an endless [`poll_delays`] sequence.
pub(super) fn next_delay(delays: &mut impl Iterator<Item = Duration>) -> Duration {
    delays.next().unwrap_or(MAX_POLL_DELAY)
}

/// Runs one pair from wherever its savepoint record stands until it is finished, skipped,
/// failed, unconfirmed or interrupted. The record must already be in the savepoint.
///
/// `pair` is the CSV's view of the pair; `None` when the pair left the CSV after its merge
/// was requested (the journal holds all the post-merge steps need).
///
/// `Err` means the whole run must stop (DevRev unreachable, token refused, disk full, the
/// savepoint cannot be written); the savepoint is consistent at that point.
///
/// `prepared`: what [`prepare_pair`] already did for the pair in this process (its checks
/// count as this process's own); a pair it already settled (skipped, failed) is not run again.
pub async fn run_pair(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    key: &str,
    pair: Option<&Pair>,
    prepared: Option<Prepared>,
) -> Result<PairRun, AppError> {
    drive_pair(ctx, sp, key, pair, prepared, Reach::Done).await
}

/// A parked pair's visit beside other pairs: its saga up to the end of the merge in flight
/// (watched, reconciled, ref adopted), never a new backup or request (those wait for the end
/// of the run: `PairResult::Parked`). `Err` as in [`run_pair`].
pub async fn visit_parked(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    key: &str,
    pair: Option<&Pair>,
) -> Result<PairRun, AppError> {
    drive_pair(ctx, sp, key, pair, None, Reach::Settled).await
}

async fn drive_pair(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    key: &str,
    pair: Option<&Pair>,
    prepared: Option<Prepared>,
    reach: Reach,
) -> Result<PairRun, AppError> {
    let mut saga = Saga::new(ctx, sp, key, pair);
    if let Some(p) = prepared {
        if let Some(result) = p.ended {
            return Ok(PairRun {
                steps: p.steps,
                result,
                merge_sent: p.merge_sent,
            });
        }
        saga.steps = p.steps;
        saga.live = p.live;
        saga.validated = p.validated;
        // A verified backup is checked again at its turn, against lists read since.
        saga.recheck_since = p.current_from;
        saga.verified = false;
    }
    let result = saga.drive_until(reach).await;
    let Saga {
        steps, merge_sent, ..
    } = saga;
    Ok(PairRun {
        steps,
        result: result?.expect("a saga run to its end has a result"),
        merge_sent,
    })
}

/// How far a saga runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// To the end.
    Done,
    /// To the end of the merge in flight (AwaitMerge, Reconcile, the ref adoption), never
    /// back to Validate, Backup or a new request: a parked pair visited beside other pairs,
    /// which were checked against its backup's footprint; a new backup could widen it. One
    /// that needs a new request stays parked for the end of the run, when nothing else runs.
    Settled,
    /// Up to the first step that may write to DevRev (RequestMerge, or Reconcile of a merge
    /// found applied), which it leaves to the run in order: only Validate, Backup and
    /// VerifyBackup, which read DevRev and write only local files and the journal.
    BeforeWrites,
}

impl Step {
    /// Reads DevRev and writes only the backup and the journal: safe to run alongside
    /// another pair's merge.
    fn reads_only(self) -> bool {
        matches!(self, Step::Validate | Step::Backup | Step::VerifyBackup)
    }
}

struct Saga<'a, 'b> {
    ctx: &'a SagaCtx<'a>,
    sp: &'b SharedSavepoint,
    key: String,
    pair: Option<&'a Pair>,
    steps: Vec<StepRecord>,
    /// Both contacts as Validate read them (the backup stores exactly these).
    live: Option<(RevUser, RevUser)>,
    /// Validate and VerifyBackup run again in every process before a merge is requested:
    /// time may have passed since an interrupted run checked them.
    validated: bool,
    verified: bool,
    merge_sent: bool,
    /// The first look after this process's merge request did not find it applied, this long
    /// after the request: told to the run's first-look wait when the visit ends, with when a
    /// later look found it (if one did).
    first_miss: Option<Duration>,
    /// Looks by `rev-users.list` that still listed the secondary unmerged: after
    /// `watch::LIST_LOOKS` of them the looks are `rev-users.get`s, so a list that lags behind
    /// DevRev's own records (a search index) cannot keep a merge from being seen.
    unmerged_list_looks: u32,
    /// When VerifyBackup passed in this process, the moment from which a list says whether
    /// the backup is still current: when this process began taking the backup (its own
    /// lists were read after it), else when the check began. A list read after it that
    /// still holds ([`crate::validate::ListReads`] drops any answer a write of this run may
    /// have changed) says what DevRev holds now as well as a new one would.
    current_from: Option<Instant>,
    /// When this process began taking the pair's backup.
    backup_began: Option<Instant>,
    /// A backup verified while its pair was prepared ahead: at the turn VerifyBackup compares
    /// it with lists read after this moment, without reading the folder again (issue 29:
    /// what changed between the read and the merge is in the backup, or the backup is taken
    /// again).
    recheck_since: Option<Instant>,
    /// The survivor as DevRev holds it now is what a read after this instant says: set when
    /// the merge shows applied, moved on by each of this saga's writes to the survivor.
    /// A read gathered with other pairs' (`ContactReads::survivor`) counts only if later.
    survivor_since: Option<Instant>,
}

impl<'a, 'b> Saga<'a, 'b> {
    fn new(
        ctx: &'a SagaCtx<'a>,
        sp: &'b SharedSavepoint,
        key: &str,
        pair: Option<&'a Pair>,
    ) -> Self {
        Saga {
            ctx,
            sp,
            key: key.to_string(),
            pair,
            steps: Vec::new(),
            live: None,
            validated: false,
            verified: false,
            merge_sent: false,
            first_miss: None,
            unmerged_list_looks: 0,
            current_from: None,
            backup_began: None,
            recheck_since: None,
            survivor_since: None,
        }
    }
}

impl Saga<'_, '_> {
    /// The record as it is now (a copy: other sagas journal their own records meanwhile).
    fn rec(&self) -> PairRecord {
        self.sp
            .get(&self.key)
            .expect("the run puts the record in the savepoint before the saga")
    }

    fn primary(&self) -> String {
        self.rec().primary.clone()
    }

    fn secondary(&self) -> String {
        self.rec().secondary.clone()
    }

    /// The merge shows applied: other pairs' gathered reads may now answer for this pair's
    /// Reconcile lists and its survivor read.
    async fn merge_shows_applied(&mut self) {
        let (primary, secondary) = (self.primary(), self.secondary());
        self.ctx.lists.merge_applied(&primary, &secondary).await;
        if self.survivor_since.is_none() {
            self.survivor_since = Some(Instant::now());
        }
        if let Some(r) = self.ref_of(&primary) {
            self.ctx.contacts.survivor_expected(&primary, &r).await;
        }
    }

    /// Contact `id`'s `external_ref` exactly as DevRev answered it to this process's Validate
    /// of the pair, if it did: a look by list counts the secondary's absence only under a ref
    /// DevRev was seen to hold for it (not the export's, which may be stale or differ in
    /// whitespace, and not one a saga that did not validate, such as a visit, never read).
    fn live_ref(&self, id: &str) -> Option<String> {
        self.live
            .iter()
            .flat_map(|(p, s)| [p, s])
            .find(|u| u.id == id)
            .and_then(|u| u.external_ref.clone())
            .filter(|r| !r.trim().is_empty())
    }

    /// Contact `id`'s `external_ref` as this pair last read it (Validate), else as the export
    /// gave it.
    fn ref_of(&self, id: &str) -> Option<String> {
        self.live_ref(id)
            .or_else(|| {
                self.pair
                    .into_iter()
                    .flat_map(|p| [&p.primary, &p.secondary])
                    .find(|c| c.rev_user_id == id)
                    .map(|c| c.external_ref.clone())
            })
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
    }

    /// The survivor as DevRev holds it now (after the merge and this saga's own writes).
    async fn survivor_now(&self) -> Result<RevUser, ApiError> {
        let since = self.survivor_since.unwrap_or_else(Instant::now);
        self.ctx
            .contacts
            .survivor(self.ctx.client, &self.primary(), since)
            .await
    }

    /// This saga wrote to the survivor and DevRev answered `answer` (`None`: no answer):
    /// only a read after now, and as new as that answer, says what it holds.
    async fn wrote_survivor(&mut self, answer: Option<&RevUser>) {
        self.survivor_since = Some(Instant::now());
        self.ctx.contacts.wrote(&self.primary(), answer).await;
    }

    /// Changes the record and writes the savepoint before returning.
    fn save<R>(&mut self, f: impl FnOnce(&mut PairRecord) -> R) -> Result<R, AppError> {
        Ok(self.sp.update(&self.key, f)?)
    }

    /// Records a completed step.
    fn complete(&mut self, step: Step, f: impl FnOnce(&mut PairRecord)) -> Result<(), AppError> {
        self.save(|r| {
            f(r);
            r.last_step = Some(step);
            if !r.status.is_final() {
                r.status = PairStatus::InProgress;
            }
            r.error = None;
            r.skip = None;
        })
    }

    /// Which step comes next, from the journal (what is certain) and this process's own
    /// checks (what must be re-checked after a restart).
    fn next_step(&self) -> Option<Step> {
        let rec = self.rec();
        if rec.status.is_final() {
            return None;
        }
        if rec.merged.is_some() {
            // The record's own `--keep`: a pair in flight is finished the way it was started.
            return match rec.last_step {
                Some(Step::Reconcile) if rec.adopts() => Some(Step::AdoptExternalRef),
                Some(Step::Reconcile | Step::AdoptExternalRef) => Some(Step::CarryOver),
                Some(Step::CarryOver) => Some(Step::Done),
                _ => Some(Step::Reconcile),
            };
        }
        if let Some(m) = &rec.merge {
            match &m.outcome {
                None | Some(MergeOutcome::Unknown { .. }) => return Some(Step::RequestMerge),
                Some(MergeOutcome::Accepted { .. }) => return Some(Step::AwaitMerge),
                Some(_) => {} // certainly not applied: back to the pre-merge steps
            }
        }
        if !self.validated {
            Some(Step::Validate)
        } else if rec.backup.is_none() {
            Some(Step::Backup)
        } else if !self.verified {
            Some(Step::VerifyBackup)
        } else {
            Some(Step::RequestMerge)
        }
    }

    /// Runs the steps up to `reach`. `Ok(None)`: stopped before a step that may write to
    /// DevRev (only with [`Reach::BeforeWrites`]).
    async fn drive_until(&mut self, reach: Reach) -> Result<Option<PairResult>, AppError> {
        loop {
            let Some(step) = self.next_step() else {
                return Ok(Some(match self.rec().status {
                    PairStatus::AlreadyMerged => PairResult::AlreadyMerged,
                    _ => PairResult::Merged,
                }));
            };
            if reach == Reach::BeforeWrites && !step.reads_only() {
                return Ok(None);
            }
            if reach == Reach::Settled
                && matches!(
                    step,
                    Step::Validate | Step::Backup | Step::VerifyBackup | Step::RequestMerge
                )
            {
                return Ok(Some(PairResult::Parked));
            }
            // Ctrl-C: finish the step in hand, never start a new one. Checked before every
            // step, so in particular before a merge request.
            if self.ctx.stop.requested() {
                return Ok(Some(PairResult::Interrupted));
            }
            let started_at = Utc::now();
            let t0 = Instant::now();
            tracing::debug!(pair = %self.rec().email, %step, "step");
            let (outcome, detail) = match step {
                Step::Validate => self.validate().await?,
                Step::Backup => self.backup().await?,
                Step::VerifyBackup => self.verify_backup().await?,
                Step::RequestMerge => self.request_merge().await?,
                Step::AwaitMerge => self.await_merge().await?,
                Step::Reconcile => self.reconcile().await?,
                Step::AdoptExternalRef => self.adopt_external_ref().await?,
                Step::CarryOver => self.carry_over().await?,
                Step::Done => self.done()?,
            };
            self.steps.push(StepRecord {
                step,
                started_at,
                duration_ms: t0.elapsed().as_millis() as u64,
                outcome: outcome.clone(),
                detail,
            });
            match outcome {
                StepOutcome::Completed => {}
                StepOutcome::Skipped { reason } => {
                    let status = if reason == SkipReason::AlreadyMerged {
                        PairStatus::AlreadyMerged
                    } else {
                        PairStatus::Skipped
                    };
                    self.save(|r| {
                        r.status = status;
                        r.skip = Some(reason.clone());
                        r.error = None;
                        if status.is_final() {
                            r.finished_at = Some(Utc::now());
                        }
                    })?;
                    return Ok(Some(if status.is_final() {
                        PairResult::AlreadyMerged
                    } else {
                        PairResult::Skipped(reason)
                    }));
                }
                StepOutcome::Failed { error } => {
                    tracing::warn!(pair = %self.rec().email, %error, "pair failed");
                    self.save(|r| {
                        r.status = PairStatus::Failed;
                        r.error = Some(error.clone());
                    })?;
                    return Ok(Some(PairResult::Failed(error)));
                }
                StepOutcome::Unconfirmed => {
                    self.save(|r| r.status = PairStatus::Unconfirmed)?;
                    return Ok(Some(PairResult::Unconfirmed));
                }
                StepOutcome::Parked => return Ok(Some(PairResult::Parked)),
                StepOutcome::RefPending => {
                    self.save(|r| r.status = PairStatus::RefAdoptionPending)?;
                    return Ok(Some(PairResult::RefPending));
                }
                StepOutcome::Interrupted => return Ok(Some(PairResult::Interrupted)),
                StepOutcome::MergedElsewhere { reason } => {
                    tracing::warn!(pair = %self.rec().email, %reason, "merged elsewhere");
                    self.save(|r| {
                        r.status = PairStatus::MergedElsewhere;
                        r.skip = Some(reason.clone());
                        r.error = None;
                        r.finished_at = Some(Utc::now());
                    })?;
                    return Ok(Some(PairResult::MergedElsewhere(reason)));
                }
            }
        }
    }

    /// A failed API call: fatal for the run, or a failure of this pair.
    fn api_failure(step: Step, e: &ApiError) -> StepResult {
        if is_fatal(e) {
            return Err(AppError::Api(e.clone()));
        }
        Ok((
            StepOutcome::Failed {
                error: PairError::api(step, e),
            },
            None,
        ))
    }

    /// Sleeps `d`, or less if Ctrl-C arrives; true when interrupted.
    async fn nap(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.ctx.stop.soft() => true,
        }
    }

    // Validate, Backup, VerifyBackup, RequestMerge: steps.rs; AwaitMerge: watch.rs;
    // Reconcile: reconcile.rs; AdoptExternalRef: adopt.rs.

    // ---- Done -----------------------------------------------------------------------------

    fn done(&mut self) -> StepResult {
        self.save(|r| {
            r.last_step = Some(Step::Done);
            r.status = PairStatus::Merged;
            r.error = None;
            r.finished_at = Some(Utc::now());
        })?;
        Ok((StepOutcome::Completed, None))
    }
}

/// With a `user_` ref to adopt (`--keep revu`, or a group's last merge), AdoptExternalRef's
/// `rev-users.update` answers with the whole primary after the merge, so the display-name
/// check (whether the merge renamed the primary) reads that answer instead of a
/// `rev-users.get` in Reconcile.
fn adoption_reads_primary(rec: &PairRecord) -> bool {
    rec.adopts()
        && rec
            .ref_to_adopt()
            .is_some_and(|(r, _)| classify_ref(&r) == RefClass::User)
}

/// The secondary already points at this primary: the merge happened (in an earlier run
/// whose savepoint was lost, or by hand), so there is nothing to do.
fn already_merged_into(secondary: Option<&RevUser>, primary: &str) -> bool {
    secondary.is_some_and(|s| {
        matches!(
            evidence::of_user(s, primary, false),
            Evidence::Merged(MergedSign::PrimaryIdentity { .. })
        )
    })
}

/// A live-check problem as a savepoint skip reason.
pub fn skip_reason(p: &LiveProblem) -> SkipReason {
    match p {
        LiveProblem::NotFound { role: r, .. } => SkipReason::ContactMissing { role: *r },
        LiveProblem::NotActive { role: r, state } => SkipReason::NotActive {
            role: *r,
            state: state.clone(),
        },
        LiveProblem::AlreadyMerged { role: r, evidence } => SkipReason::MergedElsewhere {
            role: *r,
            evidence: evidence.clone(),
        },
        LiveProblem::EmailChanged { role: r, live, .. } => SkipReason::EmailChanged {
            role: *r,
            email: live.clone().unwrap_or_default(),
        },
        LiveProblem::RefChanged { role: r, csv, live } => SkipReason::RefChanged {
            role: *r,
            csv: csv.clone(),
            live: live.clone(),
        },
        LiveProblem::UnverifiedIntoVerified => SkipReason::UnverifiedIntoVerified,
        LiveProblem::FieldsUnknown { role, fields } => SkipReason::FieldsUnknown {
            role: *role,
            fields: fields.clone(),
        },
        LiveProblem::DifferentAccounts { primary, secondary } => SkipReason::DifferentAccounts {
            primary: primary.clone(),
            secondary: secondary.clone(),
        },
    }
}

fn load_backup(dir: &Path) -> Result<(Vec<Work>, Vec<Conversation>), String> {
    let tickets = backup::load_tickets(dir)
        .map_err(|e| format!("cannot read the backup in {}: {e}", dir.display()))?;
    let convs = backup::load_conversations(dir)
        .map_err(|e| format!("cannot read the backup in {}: {e}", dir.display()))?;
    Ok((tickets, convs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Contact;
    use crate::validate::Role;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn replace_member(current: &[String], p: &str, sec: &str, hint: Option<usize>) -> Vec<String> {
        let map = BTreeMap::from([(sec.to_string(), p.to_string())]);
        replace_members(current, &map, p, hint)
    }

    #[test]
    fn replace_keeps_order_and_others_and_never_duplicates() {
        assert_eq!(
            replace_member(&s(&["a", "S", "b"]), "P", "S", None),
            s(&["a", "P", "b"])
        );
        assert_eq!(
            replace_member(&s(&["P", "a", "S", "b"]), "P", "S", None),
            s(&["P", "a", "b"])
        );
        assert_eq!(
            replace_member(&s(&["a", "S", "P"]), "P", "S", None),
            s(&["a", "P"])
        );
        assert_eq!(
            replace_member(&s(&["a", "P"]), "P", "S", None),
            s(&["a", "P"]),
            "already right"
        );
        assert_eq!(
            replace_member(&s(&["a", "b"]), "P", "S", Some(1)),
            s(&["a", "P", "b"]),
            "put back"
        );
        assert_eq!(
            replace_member(&s(&["a"]), "P", "S", Some(7)),
            s(&["a", "P"]),
            "hint clamped"
        );
        assert_eq!(replace_member(&[], "P", "S", None), s(&["P"]));
        assert_eq!(replace_member(&s(&["S", "S"]), "P", "S", None), s(&["P"]));
        // Another pair's merged secondary is mapped to its primary in the same write.
        let map = BTreeMap::from([
            ("S".to_string(), "P".to_string()),
            ("T".to_string(), "Q".to_string()),
        ]);
        assert_eq!(
            replace_members(&s(&["T", "a", "S", "Q"]), &map, "P", None),
            s(&["Q", "a", "P"])
        );
    }

    fn user(id: &str, email: &str, r: &str) -> RevUser {
        RevUser {
            id: id.into(),
            email: Some(email.into()),
            external_ref: Some(r.into()),
            state: Some("active".into()),
            is_verified: Some(false),
            extra: serde_json::json!({"custom_fields": {}, "tags": []})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn contact(id: &str, r: &str) -> Contact {
        Contact {
            line: 2,
            rev_user_id: id.into(),
            display_name: "x".into(),
            email: "a@example.com".into(),
            external_ref: r.into(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: None,
        }
    }

    fn pair() -> Pair {
        Pair {
            email: "a@example.com".into(),
            primary: contact("P", "REVU-1"),
            secondary: contact("S", "user_1"),
        }
    }

    /// The live check's verdict as the saga files it.
    fn verdict(p: &RevUser, s: &RevUser) -> Option<SkipReason> {
        match validate::judge(&pair(), Some(p.clone()), Some(s.clone())) {
            LiveCheck::Passed(_) => None,
            LiveCheck::Refused {
                problems,
                secondary,
                ..
            } => Some(if already_merged_into(secondary.as_ref(), "P") {
                SkipReason::AlreadyMerged
            } else {
                skip_reason(&problems[0])
            }),
        }
    }

    #[test]
    fn live_checks_catch_drift() {
        let p = user("P", "A@Example.com ", "REVU-1");
        let s = user("S", "a@example.com", "user_1");
        assert_eq!(verdict(&p, &s), None);

        let mut s2 = s.clone();
        s2.primary_identity = Some(UserSummary {
            id: "P".into(),
            ..Default::default()
        });
        assert_eq!(verdict(&p, &s2), Some(SkipReason::AlreadyMerged));
        s2.primary_identity.as_mut().unwrap().id = "Q".into();
        assert!(matches!(
            verdict(&p, &s2),
            Some(SkipReason::MergedElsewhere {
                role: Role::Secondary,
                ..
            })
        ));

        let mut s3 = s.clone();
        s3.state = Some("deactivated".into());
        assert!(matches!(
            verdict(&p, &s3),
            Some(SkipReason::NotActive {
                role: Role::Secondary,
                ..
            })
        ));

        let mut s4 = s.clone();
        s4.email = Some("other@example.com".into());
        assert!(matches!(
            verdict(&p, &s4),
            Some(SkipReason::EmailChanged {
                role: Role::Secondary,
                ..
            })
        ));

        let mut s5 = s.clone();
        s5.external_ref = Some("user_1-drop-don:identity:x:revu/S".into());
        assert!(matches!(
            verdict(&p, &s5),
            Some(SkipReason::MergedElsewhere { .. })
        ));
        let mut s6 = s.clone();
        s6.external_ref = Some("user_2".into());
        assert!(matches!(
            verdict(&p, &s6),
            Some(SkipReason::RefChanged { .. })
        ));

        let (mut pv, mut su) = (p.clone(), s.clone());
        pv.is_verified = Some(true);
        su.is_verified = Some(false);
        assert_eq!(verdict(&pv, &su), Some(SkipReason::UnverifiedIntoVerified));
        su.is_verified = Some(true);
        assert_eq!(verdict(&pv, &su), None);

        // Skip reasons survive the savepoint.
        let r = SkipReason::RefChanged {
            role: Role::Primary,
            csv: "REVU-1".into(),
            live: None,
        };
        let back: SkipReason = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.code(), "ref_changed");
    }

    /// The sign the one evidence rule reads from a secondary after this tool's request.
    fn merged_sign(s: &RevUser) -> Option<MergedSign> {
        match evidence::of_user(s, "P", true) {
            Evidence::Merged(m) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn set_writes_compare_as_sets() {
        let (want, before) = (s(&["a", "P", "b"]), s(&["a", "S", "b"]));
        assert!(same_set(&s(&["b", "a", "P"]), &want, &before), "order");
        assert!(
            same_set(&s(&["a", "P", "b", "owner"]), &want, &before),
            "added"
        );
        assert!(!same_set(&s(&["a", "b"]), &want, &before), "missing");
        assert!(!same_set(&s(&["a", "P", "b", "S"]), &want, &before), "kept");
    }

    #[test]
    fn merged_signs() {
        let mut s = user("S", "a@example.com", "user_1");
        assert_eq!(merged_sign(&s), None);
        s.external_ref = Some("user_1-drop-don:x".into());
        assert!(matches!(merged_sign(&s), Some(MergedSign::DropRef { .. })));
        s.state = Some("deactivated".into());
        assert!(matches!(
            merged_sign(&s),
            Some(MergedSign::NotActive { .. })
        ));
        s.primary_identity = Some(UserSummary {
            id: "P".into(),
            ..Default::default()
        });
        assert!(matches!(
            merged_sign(&s),
            Some(MergedSign::PrimaryIdentity { .. })
        ));
    }

    #[test]
    fn poll_delays_start_at_the_minimum_and_double_up_to_10_s() {
        let secs = |min_ms| {
            let mut d = poll_delays(Duration::from_millis(min_ms));
            (0..7)
                .map(|_| next_delay(&mut d).as_millis())
                .collect::<Vec<_>>()
        };
        // README: "first after 1 s, the client's smallest retry backoff, then doubling up to
        // 10 s".
        assert_eq!(secs(1000), [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        assert_eq!(
            secs(3000),
            [3000, 6000, 10_000, 10_000, 10_000, 10_000, 10_000]
        );
        // backon doubles in f32: small delays may come out a fraction of a millisecond short.
        let tiny = secs(0);
        for (got, want) in tiny.iter().zip([5, 10, 20, 40, 80, 160, 320]) {
            assert!(got.abs_diff(want) <= 1, "never a busy loop: {tiny:?}");
        }
        // A minimum above the cap is used once, then the cap.
        assert_eq!(
            secs(15_000),
            [15_000, 10_000, 10_000, 10_000, 10_000, 10_000, 10_000]
        );
        let mut d = poll_delays(Duration::from_millis(1));
        assert!((0..10_000).all(|_| d.next().is_some()), "endless");
    }

    #[test]
    fn fatal_errors_stop_the_run() {
        let st = |status| ApiError::Status {
            endpoint: "x".into(),
            status,
            body: Box::default(),
        };
        assert!(is_fatal(&st(401)));
        assert!(is_fatal(&st(429)));
        assert!(!is_fatal(&st(500)));
        let not_found = ApiError::Status {
            endpoint: "x".into(),
            status: 404,
            body: Box::new(crate::devrev::ErrorBody {
                kind: Some("not_found".into()),
                ..Default::default()
            }),
        };
        assert!(!is_fatal(&not_found));
        // A 404 without DevRev's type is an unknown route: every call would fail alike.
        assert!(is_fatal(&st(404)));
        assert!(is_fatal(&ApiError::Unreachable {
            endpoint: "x".into(),
            attempts: 3,
            reason: "refused".into()
        }));
    }
}
