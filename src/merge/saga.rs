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
use super::evidence::{self, Evidence};
use super::journal::{
    MergeConfirmation, MergeIntent, MergeOutcome, MergedSign, PairError, PairRecord, PairStatus,
    RefRelease, SkipReason, Step,
};
use super::savepoint::Savepoint;
use super::watching::WatchState;
use crate::backup::{self, BackupError, BackupInput};
use crate::detect::{Pair, RefClass, classify_ref};
use crate::devrev::types::{Conversation, RevUser, UserSummary, Work};
use crate::devrev::{ApiError, DevRevClient};
use crate::error::AppError;
use crate::options::{BackupScope, Keep};
use crate::validate::{self, LiveCheck, LiveProblem};

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
    pub stop: &'a StopSignal,
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
pub async fn run_pair(
    ctx: &SagaCtx<'_>,
    sp: &mut Savepoint,
    key: &str,
    pair: Option<&Pair>,
) -> Result<PairRun, AppError> {
    let mut saga = Saga {
        ctx,
        sp,
        key: key.to_string(),
        pair,
        steps: Vec::new(),
        live: None,
        validated: false,
        verified: false,
        merge_sent: false,
    };
    let result = saga.drive().await;
    let Saga {
        steps, merge_sent, ..
    } = saga;
    Ok(PairRun {
        steps,
        result: result?,
        merge_sent,
    })
}

struct Saga<'a, 'b> {
    ctx: &'a SagaCtx<'a>,
    sp: &'b mut Savepoint,
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
}

impl Saga<'_, '_> {
    fn rec(&self) -> &PairRecord {
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
                Some(Step::Reconcile) if rec.keep == Keep::Revu => Some(Step::AdoptExternalRef),
                Some(Step::Reconcile | Step::AdoptExternalRef) => Some(Step::Done),
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

    async fn drive(&mut self) -> Result<PairResult, AppError> {
        loop {
            let Some(step) = self.next_step() else {
                return Ok(match self.rec().status {
                    PairStatus::AlreadyMerged => PairResult::AlreadyMerged,
                    _ => PairResult::Merged,
                });
            };
            // Ctrl-C: finish the step in hand, never start a new one. Checked before every
            // step, so in particular before a merge request.
            if self.ctx.stop.requested() {
                return Ok(PairResult::Interrupted);
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
                    return Ok(if status.is_final() {
                        PairResult::AlreadyMerged
                    } else {
                        PairResult::Skipped(reason)
                    });
                }
                StepOutcome::Failed { error } => {
                    tracing::warn!(pair = %self.rec().email, %error, "pair failed");
                    self.save(|r| {
                        r.status = PairStatus::Failed;
                        r.error = Some(error.clone());
                    })?;
                    return Ok(PairResult::Failed(error));
                }
                StepOutcome::Unconfirmed => {
                    self.save(|r| r.status = PairStatus::Unconfirmed)?;
                    return Ok(PairResult::Unconfirmed);
                }
                StepOutcome::Parked => return Ok(PairResult::Parked),
                StepOutcome::RefPending => {
                    self.save(|r| r.status = PairStatus::RefAdoptionPending)?;
                    return Ok(PairResult::RefPending);
                }
                StepOutcome::Interrupted => return Ok(PairResult::Interrupted),
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

    // ---- Validate -------------------------------------------------------------------------

    async fn validate(&mut self) -> StepResult {
        let Some(pair) = self.pair else {
            return Ok((
                StepOutcome::Skipped {
                    reason: SkipReason::NotInCsv,
                },
                None,
            ));
        };
        // The same live check as `--preview --check-live`, so both refuse the same pairs.
        let (primary, secondary) = match validate::validate_pair(self.ctx.client, pair).await {
            // A redirect is an answer about the secondary, judged by the one evidence rule.
            Err(e) if e.status() == Some(301) => return self.validate_moved(&e),
            Err(e) => return Self::api_failure(Step::Validate, &e),
            Ok(LiveCheck::Passed(live)) => {
                for w in &live.warnings {
                    tracing::warn!(pair = %pair.email, "{w}");
                }
                (live.primary, live.secondary)
            }
            Ok(LiveCheck::Refused {
                problems,
                secondary,
                ..
            }) => {
                // A merge this tool requested earlier that DevRev applied late: it still
                // needs its follow-up steps (Reconcile, AdoptExternalRef).
                if let Some(sign) = self.merged_late(secondary.as_ref()) {
                    let detail = format!(
                        "an earlier merge request was applied late ({sign}); resuming at Reconcile"
                    );
                    tracing::info!(pair = %pair.email, "{detail}");
                    self.complete(Step::AwaitMerge, |r| {
                        r.merged = Some(MergeConfirmation {
                            at: Utc::now(),
                            sign,
                        });
                    })?;
                    return Ok((StepOutcome::Completed, Some(detail)));
                }
                let detail = problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let reason = if already_merged_into(secondary.as_ref(), &pair.primary.rev_user_id) {
                    SkipReason::AlreadyMerged
                } else {
                    problems
                        .first()
                        .map(skip_reason)
                        .unwrap_or(SkipReason::NotInCsv)
                };
                return Ok((StepOutcome::Skipped { reason }, Some(detail)));
            }
        };
        let (name, sref) = (primary.display_name.clone(), secondary.external_ref.clone());
        self.complete(Step::Validate, |r| {
            r.primary_display_name = name;
            r.secondary_external_ref = sref;
        })?;
        self.live = Some((primary, secondary));
        self.validated = true;
        Ok((StepOutcome::Completed, None))
    }

    /// Validate got a 301 for the secondary: merged into the primary when its `Location`
    /// names the primary (resumed at Reconcile if this tool's request may have done it,
    /// otherwise already merged, nothing to do); any other redirect fails the pair.
    fn validate_moved(&mut self, e: &ApiError) -> StepResult {
        let primary = self.primary();
        let Ok(Evidence::Merged(sign)) = evidence::of_answer(Err(e.clone()), &primary, false)
        else {
            return Self::api_failure(Step::Validate, e);
        };
        if self.requested_may_have_landed() {
            let detail = format!(
                "an earlier merge request was applied late ({sign}); resuming at Reconcile"
            );
            tracing::info!(pair = %self.rec().email, "{detail}");
            self.complete(Step::AwaitMerge, |r| {
                r.merged = Some(MergeConfirmation {
                    at: Utc::now(),
                    sign,
                });
            })?;
            return Ok((StepOutcome::Completed, Some(detail)));
        }
        Ok((
            StepOutcome::Skipped {
                reason: SkipReason::AlreadyMerged,
            },
            Some(format!(
                "the secondary is already merged into the primary ({sign})"
            )),
        ))
    }

    /// Whether the journal shows a merge request of this tool that DevRev may have taken in.
    /// One it refused (4xx) or that never reached it is no merge of this tool's, and a
    /// deactivation by hand must not read as one. An intent without an outcome (a crash
    /// mid-request) may have been applied.
    fn requested_may_have_landed(&self) -> bool {
        let rec = self.rec();
        rec.merge.iter().chain(&rec.earlier_merges).any(|m| {
            !m.outcome
                .as_ref()
                .is_some_and(MergeOutcome::never_reached_devrev)
        })
    }

    /// Validate's look at the secondary, by the one evidence rule, when the journal shows a
    /// merge request of this tool for the pair: `None` when it does not show that merge.
    /// `secondary` is `None` when DevRev answered 404 `not_found` for it.
    fn merged_late(&self, secondary: Option<&RevUser>) -> Option<MergedSign> {
        if !self.requested_may_have_landed() {
            return None;
        }
        let rec = self.rec();
        match secondary {
            None => Some(MergedSign::NotFound),
            Some(s) => match evidence::of_user(s, &rec.primary, true) {
                Evidence::Merged(sign) => Some(sign),
                _ => None,
            },
        }
    }

    // ---- Backup ---------------------------------------------------------------------------

    async fn backup(&mut self) -> StepResult {
        let (Some(pair), Some((primary, secondary))) = (self.pair, self.live.as_ref()) else {
            // next_step() only reaches Backup after Validate in this process.
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(Step::Backup, "backup attempted without a validation"),
                },
                None,
            ));
        };
        let input = BackupInput {
            pair,
            primary,
            secondary,
            run_id: self.ctx.run_id,
            scope: self.ctx.scope,
            root: self.ctx.backup_root,
        };
        match backup::take(self.ctx.client, input).await {
            Ok(summary) => {
                let detail = format!(
                    "{} ticket(s), {} timeline entries, {} attachment(s), {} conversation(s) in {}",
                    summary.tickets,
                    summary.timeline_entries,
                    summary.attachments,
                    summary.conversations,
                    summary.dir.display()
                );
                self.complete(Step::Backup, |r| r.backup = Some(summary))?;
                self.ctx.watch.note_backup(&self.key);
                // A backup verified by `take` itself still gets VerifyBackup: re-reading from
                // disk is the check that counts.
                self.verified = false;
                Ok((StepOutcome::Completed, Some(detail)))
            }
            Err(BackupError::Api(e)) => Self::api_failure(Step::Backup, &e),
            Err(e @ (BackupError::NoSpace { .. } | BackupError::Io { .. })) => Err(
                AppError::CantCreate(format!("backup of {}: {e}", pair.email)),
            ),
            Err(e @ BackupError::Verification(_)) => Ok((
                StepOutcome::Failed {
                    error: PairError::new(Step::Backup, e.to_string()),
                },
                None,
            )),
        }
    }

    // ---- VerifyBackup ---------------------------------------------------------------------

    async fn verify_backup(&mut self) -> StepResult {
        let Some(summary) = self.rec().backup.clone() else {
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(Step::VerifyBackup, "no backup recorded"),
                },
                None,
            ));
        };
        if let Err(msg) = backup::verify::verify_dir(&summary.dir) {
            // A backup that does not verify is never merged over; the next run takes a new
            // one.
            self.save(|r| r.backup = None)?;
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(
                        Step::VerifyBackup,
                        format!("backup {} does not verify: {msg}", summary.dir.display()),
                    ),
                },
                None,
            ));
        }
        // A backup taken by an earlier process may be stale by now: what it would restore
        // must still be what DevRev holds when the merge is sent.
        if !self.ctx.watch.backed_up_in_run(&self.key) {
            match self.backup_is_current(&summary.dir).await? {
                Err(outcome) => return Ok((outcome, None)),
                Ok(None) => {}
                Ok(Some(change)) => {
                    tracing::info!(pair = %self.rec().email, %change, "backup is stale; taking a new one");
                    self.save(|r| r.backup = None)?;
                    return Ok((
                        StepOutcome::Completed,
                        Some(format!(
                            "backup from an earlier run is stale ({change}); taking a new one"
                        )),
                    ));
                }
            }
        }
        self.complete(Step::VerifyBackup, |_| {})?;
        self.verified = true;
        Ok((
            StepOutcome::Completed,
            Some(summary.dir.display().to_string()),
        ))
    }

    /// Compares which tickets and conversations name the secondary in the backup with
    /// DevRev's current lists. `Some(what)`: something changed.
    async fn backup_is_current(&self, dir: &Path) -> Phase<Option<String>> {
        let step = Step::VerifyBackup;
        let (tickets, convs) = match load_backup(dir) {
            Ok(v) => v,
            Err(e) => return phase_failed(step, e),
        };
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let live_t = match validate::tickets_of_both::<Work>(client, &primary, &secondary).await {
            Ok(v) => v,
            Err(e) => return phase_api_failure(step, &e),
        };
        let live_c =
            match validate::conversations_of_both::<Conversation>(client, &primary, &secondary)
                .await
            {
                Ok(v) => v,
                Err(e) => return phase_api_failure(step, &e),
            };
        // Which tickets and conversations name the secondary: what the merge moves and
        // Reconcile repairs. (Other reporters may change as other pairs merge; that does
        // not make this pair's backup stale.)
        let naming = |users: &[UserSummary]| users.iter().any(|u| u.id == secondary);
        let t_of = |v: &[Work]| -> BTreeSet<String> {
            v.iter()
                .filter(|w| naming(&w.reported_by))
                .map(|w| w.id.clone())
                .collect()
        };
        let c_of = |v: &[Conversation]| -> BTreeSet<String> {
            v.iter()
                .filter(|c| naming(&c.members))
                .map(|c| c.id.clone())
                .collect()
        };
        if t_of(&tickets) != t_of(&live_t) {
            return Ok(Ok(Some("the secondary's tickets changed".into())));
        }
        if c_of(&convs) != c_of(&live_c) {
            return Ok(Ok(Some("the secondary's conversations changed".into())));
        }
        Ok(Ok(None))
    }

    // ---- RequestMerge ---------------------------------------------------------------------

    async fn request_merge(&mut self) -> StepResult {
        // An earlier request whose outcome is unknown: find out, never ask again blindly.
        if let Some(m) = self.rec().merge.clone()
            && !m
                .outcome
                .as_ref()
                .is_some_and(MergeOutcome::certainly_not_applied)
        {
            return self.resolve_intent(m).await;
        }
        let (primary, secondary) = (self.primary(), self.secondary());
        let requested_at = Utc::now();
        // 1. The intent, on disk before the request leaves.
        self.save(|r| {
            let attempt = r.merge.as_ref().map_or(1, |m| m.attempt + 1);
            if let Some(old) = r.merge.take() {
                r.earlier_merges.push(old);
            }
            r.merge = Some(MergeIntent {
                attempt,
                requested_at,
                outcome: None,
                unmerged_since: None,
                watch_until: None,
            });
        })?;
        self.merge_sent = true;
        self.ctx.watch.restart(&self.key);
        // 2. The request, exactly once (the client never repeats a `Write` whose answer may
        //    have followed the work).
        let res = self.ctx.client.rev_users_merge(&primary, &secondary).await;
        // 3. The outcome.
        let outcome = match &res {
            Ok(()) => MergeOutcome::Accepted { at: Utc::now() },
            Err(ApiError::OutcomeUnknown { reason, .. }) => MergeOutcome::Unknown {
                reason: reason.clone(),
            },
            Err(e @ ApiError::Unreachable { .. }) => MergeOutcome::NotSent {
                reason: e.to_string(),
            },
            // 429 after the client's retries: DevRev's own refusal before any work. (Every
            // 5xx comes back from the client as an unknown outcome: it may follow the work.)
            Err(e) if e.status() == Some(429) => MergeOutcome::NotSent {
                reason: e.to_string(),
            },
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                MergeOutcome::Rejected {
                    error: PairError::api(Step::RequestMerge, e),
                }
            }
            Err(e) => MergeOutcome::Unknown {
                reason: e.to_string(),
            },
        };
        self.save(|r| {
            if let Some(m) = r.merge.as_mut() {
                m.outcome = Some(outcome.clone());
            }
            if matches!(outcome, MergeOutcome::Accepted { .. }) {
                r.last_step = Some(Step::RequestMerge);
            }
        })?;
        match (res, outcome) {
            (Ok(()), _) => Ok((StepOutcome::Completed, None)),
            (Err(_), MergeOutcome::Unknown { reason }) => {
                tracing::warn!(pair = %self.rec().email, %reason, "merge answer lost; watching the secondary to find out whether it was applied");
                let m = self.rec().merge.clone().expect("intent just written");
                self.resolve_intent(m).await
            }
            (Err(e), _) if is_fatal(&e) => Err(AppError::Api(e)),
            (Err(e), _) => Ok((
                StepOutcome::Failed {
                    error: PairError::api(Step::RequestMerge, &e),
                },
                None,
            )),
        }
    }

    /// Settles an intent with no known outcome by watching the secondary (see the module
    /// docs): merged → continue with Reconcile; plainly unmerged for a whole `--merge-watch`
    /// window → `NotApplied`, and the pre-merge steps run again; otherwise parked (or, once
    /// the run's wait is over, left with its outcome unknown until a later run).
    async fn resolve_intent(&mut self, _m: MergeIntent) -> StepResult {
        self.watch(true).await
    }

    // ---- AwaitMerge -----------------------------------------------------------------------

    async fn await_merge(&mut self) -> StepResult {
        self.watch(false).await
    }

    /// Looks at the secondary after this tool requested its merge until it shows merged
    /// (exact evidence only), this visit's look budget is spent (parked: the run comes back
    /// to it), or this run's `--merge-timeout` for the pair is over. `lost`: the request's
    /// answer was lost, so plainly-unmerged looks are counted towards `--merge-watch`.
    async fn watch(&mut self, lost: bool) -> StepResult {
        let w = self.ctx.watch;
        let mut deadline = w.started(&self.key) + self.ctx.merge_timeout;
        let initial = self.ctx.min_backoff * 2;
        let cap = self.ctx.merge_timeout / 2;
        let budget = if w.revisiting() {
            Duration::ZERO
        } else {
            w.pass_budget(initial, cap)
        };
        let budget_end = (Instant::now() + budget).min(deadline);
        let mut delays = poll_delays(self.ctx.min_backoff);
        let mut last_error: Option<ApiError> = None;
        // DevRev never applies a merge within its own answer: a look right after the request
        // would be a wasted call. Wait until it usually has applied one in this run.
        if self.merge_sent && !w.revisiting() {
            let first = w.first_look(initial, cap);
            if self.nap(first).await {
                return Ok((StepOutcome::Interrupted, None));
            }
        }
        loop {
            match self.observe().await {
                Ok(Evidence::Merged(sign)) => return self.seen_merged(sign, lost),
                Ok(Evidence::Unmerged) => {
                    last_error = None;
                    if lost && let Some(done) = self.unmerged_look()? {
                        return Ok(done);
                    }
                }
                Ok(Evidence::Unclear(why)) => {
                    tracing::warn!(pair = %self.rec().email, "{why}; looking again");
                    if lost {
                        self.save(|r| {
                            if let Some(m) = r.merge.as_mut() {
                                // The window starts again at the next plain look, and so
                                // does the time the report gives for a re-run.
                                m.unmerged_since = None;
                                m.watch_until = None;
                            }
                        })?;
                    }
                }
                Err(e) if is_fatal(&e) => return Err(AppError::Api(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the secondary; will look again");
                    last_error = Some(e);
                }
            }
            let now = Instant::now();
            if lost {
                deadline = deadline.max(self.window_end(now));
            }
            if now >= deadline {
                return self.watch_over(lost, last_error);
            }
            if now >= budget_end {
                return Ok((
                    StepOutcome::Parked,
                    Some("not applied yet; parked, the run comes back to it".into()),
                ));
            }
            if self
                .nap(next_delay(&mut delays).min(budget_end - now))
                .await
            {
                return Ok((StepOutcome::Interrupted, None));
            }
        }
    }

    /// When a `--merge-watch` window shorter than `--merge-timeout` (a setting, or tests)
    /// that has started will be complete: the run waits for it rather than leave the
    /// outcome unknown. `now` when there is no such window.
    fn window_end(&self, now: Instant) -> Instant {
        let since = self.rec().merge.as_ref().and_then(|m| m.unmerged_since);
        match since {
            Some(since) if self.ctx.merge_watch <= self.ctx.merge_timeout => {
                let end =
                    since + chrono::Duration::from_std(self.ctx.merge_watch).unwrap_or_default();
                now + (end - Utc::now()).to_std().unwrap_or_default()
            }
            _ => now,
        }
    }

    /// The merge shows: journal it and go on with Reconcile.
    fn seen_merged(&mut self, sign: MergedSign, lost: bool) -> StepResult {
        let detail = match self.rec().merge.as_ref() {
            Some(m) if lost => format!("resolved attempt {}: merged ({sign})", m.attempt),
            _ => sign.to_string(),
        };
        if self.merge_sent
            && let Some(m) = &self.rec().merge
            && let Ok(d) = (Utc::now() - m.requested_at).to_std()
        {
            self.ctx.watch.note_applied(d);
        }
        self.complete(Step::AwaitMerge, |r| {
            r.merged = Some(MergeConfirmation {
                at: Utc::now(),
                sign,
            });
        })?;
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// A plainly unmerged look at a pair whose merge answer was lost: starts or continues its
    /// `--merge-watch` window (journaled, so it spans runs); once the window is whole the
    /// request counts as not applied and the pre-merge steps run again.
    fn unmerged_look(&mut self) -> Result<Option<(StepOutcome, Option<String>)>, AppError> {
        let now = Utc::now();
        let window =
            chrono::Duration::from_std(self.ctx.merge_watch).unwrap_or(chrono::TimeDelta::MAX);
        let since = self.save(|r| {
            let m = r.merge.as_mut()?;
            let since = *m.unmerged_since.get_or_insert(now);
            m.watch_until = since.checked_add_signed(window);
            Some(since)
        })?;
        let Some(since) = since else { return Ok(None) };
        if now - since < window {
            return Ok(None);
        }
        let attempt = self.rec().merge.as_ref().map_or(1, |m| m.attempt);
        let detail = format!(
            "resolved attempt {attempt}: seen plainly unmerged for the whole {} s watch window; it will be sent again",
            self.ctx.merge_watch.as_secs_f64()
        );
        tracing::warn!(pair = %self.rec().email, "{detail}");
        self.save(|r| {
            if let Some(cur) = r.merge.as_mut() {
                cur.outcome = Some(MergeOutcome::NotApplied { checked_at: now });
            }
        })?;
        // Re-check the contacts (and the backup's freshness) before asking again.
        self.validated = false;
        self.verified = false;
        Ok(Some((StepOutcome::Completed, Some(detail))))
    }

    /// This run's wait for the pair is over without an answer either way.
    fn watch_over(&mut self, lost: bool, last_error: Option<ApiError>) -> StepResult {
        if lost {
            let after = self
                .rec()
                .merge
                .as_ref()
                .and_then(|m| m.watch_until)
                .map_or_else(
                    || "its watch window is complete".to_string(),
                    |t| t.to_rfc3339(),
                );
            let detail = format!(
                "outcome unknown: the merge answer was lost and DevRev has not shown it applied; it is never sent again before the secondary was seen unmerged for {} s. Re-run after {after}",
                self.ctx.merge_watch.as_secs()
            );
            tracing::warn!(pair = %self.rec().email, "{detail}");
            return Ok((StepOutcome::Unconfirmed, Some(detail)));
        }
        if let Some(e) = last_error {
            return Self::api_failure(Step::AwaitMerge, &e);
        }
        let detail = format!(
            "DevRev accepted the merge but had not applied it after {} s; re-run to keep waiting (it is never requested again)",
            self.ctx.merge_timeout.as_secs_f64()
        );
        tracing::warn!(pair = %self.rec().email, "{detail}");
        Ok((StepOutcome::Unconfirmed, Some(detail)))
    }

    /// One look at the secondary after this tool requested its merge, judged by the one
    /// rule of [`evidence`].
    async fn observe(&self) -> Result<Evidence, ApiError> {
        let answer = self.ctx.client.rev_users_get(&self.secondary()).await;
        evidence::of_answer(answer, &self.primary(), true)
    }

    // ---- Reconcile ------------------------------------------------------------------------

    async fn reconcile(&mut self) -> StepResult {
        let step = Step::Reconcile;
        let Some(summary) = self.rec().backup.clone() else {
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(step, "no backup recorded"),
                },
                None,
            ));
        };
        let (backed_up, backed_up_convs) = match load_backup(&summary.dir) {
            Ok(v) => v,
            Err(e) => {
                return Ok((
                    StepOutcome::Failed {
                        error: PairError::new(step, e),
                    },
                    None,
                ));
            }
        };
        let merged = self.merged_map();
        let repaired_now = match self.repair_tickets(&backed_up, &merged).await? {
            Ok(n) => n,
            Err(outcome) => return Ok((outcome, None)),
        };
        let convs_now = match self.repair_conversations(backed_up_convs, &merged).await? {
            Ok(n) => n,
            Err(outcome) => return Ok((outcome, None)),
        };
        // Under `--keep revu` the ref adoption's answer is the whole primary: the name is
        // checked there, which spares a `rev-users.get` per pair.
        let renamed = if adoption_reads_primary(self.rec()) {
            false
        } else {
            match self.restore_display_name(step, None).await? {
                Ok(renamed) => renamed,
                Err(outcome) => return Ok((outcome, None)),
            }
        };
        self.complete(step, |r| {
            if renamed {
                r.repairs.display_name_restored = true;
            }
        })?;
        let detail = format!(
            "{repaired_now} ticket(s) and {convs_now} conversation(s) repaired{}",
            if renamed {
                ", display name restored"
            } else {
                ""
            }
        );
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// Every merged secondary → its primary, over all pairs of the journal and this one.
    fn merged_map(&self) -> BTreeMap<String, String> {
        let mut merged: BTreeMap<String, String> = self
            .sp
            .file()
            .pairs
            .values()
            .filter(|r| r.merged.is_some())
            .map(|r| (r.secondary.clone(), r.primary.clone()))
            .collect();
        merged.insert(self.secondary(), self.primary());
        merged
    }

    /// Reconcile's tickets: every backed-up ticket, and any listed one still naming the
    /// secondary, gets `reported_by` with the secondary replaced. One listing finds the
    /// primary's tickets and any still naming the secondary. Returns how many were written.
    async fn repair_tickets(
        &mut self,
        backed_up: &[Work],
        merged: &BTreeMap<String, String>,
    ) -> Phase<usize> {
        let step = Step::Reconcile;
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let listed = match validate::tickets_of_both::<Work>(client, &primary, &secondary).await {
            Ok(v) => v,
            Err(e) => return phase_api_failure(step, &e),
        };
        let mut listed: BTreeMap<String, Work> =
            listed.into_iter().map(|w| (w.id.clone(), w)).collect();
        let mut todo: Vec<(String, Option<usize>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for t in backed_up {
            if seen.insert(t.id.clone()) {
                todo.push((
                    t.id.clone(),
                    position_hint(&t.reported_by, &primary, &secondary),
                ));
            }
        }
        // Tickets created after the backup that still name the secondary are repaired too.
        for (id, w) in &listed {
            if !seen.contains(id) && w.reported_by.iter().any(|u| u.id == secondary) {
                seen.insert(id.clone());
                todo.push((id.clone(), None));
            }
        }
        let mut repaired_now = 0usize;
        for (id, hint) in todo {
            let current = match listed.remove(&id) {
                Some(w) => w,
                None => match client.works_get(&id).await {
                    Ok(w) => w,
                    Err(e) if e.is_devrev_not_found() => {
                        tracing::warn!(ticket = %id, "backed-up ticket no longer exists; it is in the backup");
                        self.save(|r| {
                            if !r.repairs.tickets_gone.contains(&id) {
                                r.repairs.tickets_gone.push(id.clone());
                            }
                        })?;
                        continue;
                    }
                    Err(e) => return phase_api_failure(step, &e),
                },
            };
            let now = ids(&current.reported_by);
            let want = replace_members(&now, merged, &primary, hint);
            if want == now {
                continue;
            }
            match client.works_set_reported_by(&id, &want).await {
                Ok(w) if same_set(&ids(&w.reported_by), &want, &now) => {}
                Ok(w) => {
                    return phase_failed(
                        step,
                        format!(
                            "ticket {}: reported_by is {:?} after setting {:?}",
                            w.label(),
                            ids(&w.reported_by),
                            want
                        ),
                    );
                }
                Err(e) => return phase_api_failure(step, &e),
            }
            repaired_now += 1;
            self.save(|r| {
                if !r.repairs.tickets.contains(&id) {
                    r.repairs.tickets.push(id.clone());
                }
            })?;
        }
        Ok(Ok(repaired_now))
    }

    /// Reconcile's conversations: the same for members. There is no conversations.get, so
    /// one that names neither contact any more is rebuilt from its backed-up member list.
    /// Returns how many were written.
    async fn repair_conversations(
        &mut self,
        backed_up: Vec<Conversation>,
        merged: &BTreeMap<String, String>,
    ) -> Phase<usize> {
        let step = Step::Reconcile;
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let listed =
            match validate::conversations_of_both::<Conversation>(client, &primary, &secondary)
                .await
            {
                Ok(v) => v,
                Err(e) => return phase_api_failure(step, &e),
            };
        let mut listed: BTreeMap<String, Conversation> =
            listed.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut todo: Vec<Conversation> = Vec::new();
        let mut seen = BTreeSet::new();
        for c in backed_up {
            if seen.insert(c.id.clone()) {
                todo.push(c);
            }
        }
        for (id, c) in &listed {
            if !seen.contains(id) && c.members.iter().any(|u| u.id == secondary) {
                seen.insert(id.clone());
                todo.push(c.clone());
            }
        }
        let mut convs_now = 0usize;
        for c in todo {
            let hint = position_hint(&c.members, &primary, &secondary);
            let current = listed.remove(&c.id).unwrap_or(c);
            let now = ids(&current.members);
            let want = replace_members(&now, merged, &primary, hint);
            if want == now {
                continue;
            }
            match client.conversations_set_members(&current.id, &want).await {
                Ok(updated) if same_set(&ids(&updated.members), &want, &now) => {}
                Ok(updated) => {
                    return phase_failed(
                        step,
                        format!(
                            "conversation {}: members are {:?} after setting {:?}",
                            updated.label(),
                            ids(&updated.members),
                            want
                        ),
                    );
                }
                Err(e) => return phase_api_failure(step, &e),
            }
            convs_now += 1;
            let id = current.id.clone();
            self.save(|r| {
                if !r.repairs.conversations.contains(&id) {
                    r.repairs.conversations.push(id.clone());
                }
            })?;
        }
        Ok(Ok(convs_now))
    }

    /// The primary's display name as it was before the merge, if the merge changed it (the
    /// last part of Reconcile, or of AdoptExternalRef when that runs). `seen`: the primary as
    /// an answer after the merge showed it (a `rev-users.update` answer is the whole user);
    /// without one it is read. True when the name was written now.
    async fn restore_display_name(&mut self, step: Step, seen: Option<RevUser>) -> Phase<bool> {
        let Some(original) = self.rec().primary_display_name.clone() else {
            return Ok(Ok(false));
        };
        let primary = self.primary();
        let client = self.ctx.client;
        let current = match seen {
            Some(u) if u.id == primary => u,
            _ => match client.rev_users_get(&primary).await {
                Ok(u) => u,
                Err(e) => return phase_api_failure(step, &e),
            },
        };
        if current.display_name.as_deref() == Some(original.as_str()) {
            return Ok(Ok(false));
        }
        match client
            .rev_users_update(&primary, json!({ "display_name": original }))
            .await
        {
            Ok(u) if u.display_name.as_deref() == Some(original.as_str()) => Ok(Ok(true)),
            Ok(u) => phase_failed(
                step,
                format!(
                    "display name is {:?} after restoring {original:?}",
                    u.display_name
                ),
            ),
            Err(e) => phase_api_failure(step, &e),
        }
    }

    // ---- AdoptExternalRef -----------------------------------------------------------------

    async fn adopt_external_ref(&mut self) -> StepResult {
        let step = Step::AdoptExternalRef;
        let target = match self.rec().secondary_external_ref.clone() {
            Some(r) if classify_ref(&r) == RefClass::User => r,
            other => {
                // Validate guarantees a user_ ref under --keep revu; anything else is left
                // alone rather than guessed at. (Reconcile checked the name: see
                // `adoption_reads_primary`.)
                let detail = format!("nothing to adopt (secondary's ref was {other:?})");
                self.complete(step, |_| {})?;
                return Ok((StepOutcome::Completed, Some(detail)));
            }
        };
        let (answer, conflicts) = match self.move_ref(&target).await? {
            Ok(adopted) => adopted,
            Err((StepOutcome::Interrupted, detail)) => {
                return Ok((StepOutcome::Interrupted, detail));
            }
            Err(other) => {
                // The ref stays pending or failed (the next run retries this step), but the
                // name Reconcile left to this step is put back now all the same.
                self.restore_name_anyway().await?;
                return Ok(other);
            }
        };
        self.save(|r| {
            r.external_ref_adopted = Some(target.clone());
            r.ref_adoption_pending = None;
        })?;
        let renamed = match self.restore_display_name(step, Some(answer)).await? {
            Ok(renamed) => renamed,
            Err(outcome) => return Ok((outcome, None)),
        };
        let detail = format!(
            "{target} (after {conflicts} conflict answer(s)){}",
            if renamed {
                ", display name restored"
            } else {
                ""
            }
        );
        self.complete(step, |r| {
            if renamed {
                r.repairs.display_name_restored = true;
            }
        })?;
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// The display-name check of an adoption that did not complete (one `rev-users.get`):
    /// best effort, a failure here leaves the step's own outcome in place and the next run
    /// checks again.
    async fn restore_name_anyway(&mut self) -> Result<(), AppError> {
        match self
            .restore_display_name(Step::AdoptExternalRef, None)
            .await?
        {
            Ok(true) => self.save(|r| r.repairs.display_name_restored = true)?,
            Ok(false) => {}
            Err(outcome) => {
                tracing::warn!(pair = %self.rec().email, ?outcome, "cannot check the primary's display name now; the next run checks it again");
            }
        }
        Ok(())
    }

    /// Sets the secondary's ref on the primary, waiting out (and if need be releasing) the
    /// merged-away secondary's hold on it. `Ok(Ok((answer, conflicts)))`: adopted, with the
    /// primary as the answer showed it; `Ok(Err(..))`: how the step ends instead.
    async fn move_ref(
        &mut self,
        target: &str,
    ) -> Result<Result<(RevUser, u32), (StepOutcome, Option<String>)>, AppError> {
        let step = Step::AdoptExternalRef;
        let primary = self.primary();
        // DevRev keeps the merged secondary's ref unique for a while (409 until it frees it).
        // Wait a few seconds for that; a secondary that keeps it is then released by hand.
        // Seconds, not minutes, whatever the merges' apply delay: a ref that is not freed by
        // then is released, and one DevRev will not free is left pending (never a stall).
        let wait = self
            .ctx
            .watch
            .pass_budget(self.ctx.min_backoff * 2, self.ctx.merge_timeout)
            .min(self.ctx.min_backoff * 10);
        let t0 = Instant::now();
        let mut deadline = t0 + wait;
        let mut delays = poll_delays(self.ctx.min_backoff);
        let mut conflicts = 0u32;
        let mut released = false;
        loop {
            match self
                .ctx
                .client
                .rev_users_update(&primary, json!({ "external_ref": target }))
                .await
            {
                Ok(u) if u.external_ref.as_deref() == Some(target) => {
                    return Ok(Ok((u, conflicts)));
                }
                Ok(u) => {
                    let error = PairError::new(
                        step,
                        format!(
                            "external_ref is {:?} after setting {target:?}",
                            u.external_ref
                        ),
                    );
                    return Ok(Err((StepOutcome::Failed { error }, None)));
                }
                Err(e) if e.is_conflict() => {
                    conflicts += 1;
                    let now = Instant::now();
                    if now >= deadline && !released {
                        match self.release_ref(target).await? {
                            Ok(()) => {
                                // DevRev may take a moment to free a released ref: seconds
                                // (at most --merge-timeout), then the adoption is pending.
                                released = true;
                                deadline = Instant::now()
                                    + (wait + Duration::from_secs(10)).min(self.ctx.merge_timeout);
                                continue;
                            }
                            Err(why) => return self.adoption_pending(target, why).map(Err),
                        }
                    }
                    if now >= deadline {
                        let why = format!(
                            "{target} is still taken after it was released from the secondary ({conflicts} conflict answers)"
                        );
                        return self.adoption_pending(target, why).map(Err);
                    }
                    tracing::debug!(%target, "external_ref still taken; waiting for DevRev to free it");
                    if self.nap(next_delay(&mut delays).min(deadline - now)).await {
                        return Ok(Err((StepOutcome::Interrupted, None)));
                    }
                }
                Err(e) => return Self::api_failure(step, &e).map(Err),
            }
        }
    }

    /// Moves the ref off the merged-away secondary when it still holds it (journaled intent
    /// and outcome, like every write). `Ok(Err(why))`: it cannot be released now.
    async fn release_ref(&mut self, target: &str) -> Result<Result<(), String>, AppError> {
        let secondary = self.secondary();
        let client = self.ctx.client;
        let holder = match client.rev_users_get(&secondary).await {
            Ok(u) => u,
            Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(AppError::Api(e)),
            Err(e) => {
                return Ok(Err(format!(
                    "cannot read the secondary to release {target}: {e}"
                )));
            }
        };
        if holder.external_ref.as_deref().map(str::trim) != Some(target) {
            return Ok(Err(format!(
                "{target} is taken, but not by the merged-away secondary (its ref is {:?})",
                holder.external_ref
            )));
        }
        let new_ref = format!("{target}-drop-{secondary}");
        let release = RefRelease {
            requested_at: Utc::now(),
            new_ref: new_ref.clone(),
            outcome: None,
        };
        self.save(|r| r.ref_release = Some(release))?;
        let res = client
            .rev_users_update(&secondary, json!({ "external_ref": new_ref }))
            .await;
        let outcome = match &res {
            Ok(u) if u.external_ref.as_deref() == Some(new_ref.as_str()) => Ok(()),
            Ok(u) => Err(format!(
                "the secondary's ref is {:?} after the release",
                u.external_ref
            )),
            Err(e) if e.scope() == crate::devrev::Scope::Run => {
                return Err(AppError::Api(e.clone()));
            }
            Err(e) => Err(format!(
                "DevRev refused to release {target} from the secondary: {e}"
            )),
        };
        self.save(|r| {
            if let Some(rel) = r.ref_release.as_mut() {
                rel.outcome = Some(outcome.clone());
            }
        })?;
        tracing::info!(pair = %self.rec().email, %target, ?outcome, "released the ref from the merged-away secondary");
        Ok(outcome)
    }

    /// The pair is merged and reconciled but its ref is not adopted: recorded, reported with
    /// what to do, and retried alone by the next run.
    fn adoption_pending(&mut self, target: &str, why: String) -> StepResult {
        let detail = format!(
            "ref adoption pending: {why}. Until {target} is on the primary, a login with it may create the duplicate again; re-run to retry only this step, or move the ref by hand"
        );
        tracing::warn!(pair = %self.rec().email, "{detail}");
        self.save(|r| r.ref_adoption_pending = Some(why))?;
        Ok((StepOutcome::RefPending, Some(detail)))
    }

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

/// Under `--keep revu` with a `user_` ref to adopt, AdoptExternalRef's `rev-users.update`
/// answers with the whole primary after the merge, so the display-name check (whether the
/// merge renamed the primary) reads that answer instead of a `rev-users.get` in Reconcile.
fn adoption_reads_primary(rec: &PairRecord) -> bool {
    rec.keep == Keep::Revu
        && rec
            .secondary_external_ref
            .as_deref()
            .is_some_and(|r| classify_ref(r) == RefClass::User)
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
