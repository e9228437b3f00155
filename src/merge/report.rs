//! The JSON merge report (`reports/merge-report-<YYYYMMDD_HHMMSS>.json`, 0600) and the
//! console summary printed at the end of a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::carry::{CarryCounts, CarryEntry};
use super::journal::{Hold, MergedSign, PairError, PairRecord, PairStatus, SkipReason, Step};
use super::saga::{PairResult, PairRun, StepOutcome, StepRecord};
use crate::config::Config;
use crate::detect::Pair;
use crate::devrev::types::Organization;
use crate::devrev::{DevRevClient, EndpointStats, RateHeaders};
use crate::error::AppError;
use crate::fsutil;
use crate::options::{BackupScope, Keep};
use crate::output;

/// How the run as a whole ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every pair was tried.
    Completed,
    /// `--max-merges` stopped it; the rest runs on the next invocation.
    MaxMergesReached,
    /// Ctrl-C; resumable.
    Interrupted,
    /// An error that would hit every pair (DevRev unreachable, token refused, disk full).
    Aborted,
}

/// A pair's status in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    Merged,
    AlreadyMerged,
    Skipped,
    Failed,
    /// Merge accepted, not yet seen applied; the next run keeps watching.
    Unconfirmed,
    /// Stopped mid-way by Ctrl-C or a run-wide error; the next run resumes it.
    Interrupted,
    /// Not reached in this run (`--max-merges`, Ctrl-C, an earlier fatal error).
    NotStarted,
    /// Known only from the savepoint, never merged, and no longer in the CSV: left alone.
    LeftCsv,
    /// Merged earlier, then undone by `--restore`: decided "do not merge", left alone.
    Restored,
    /// After a lost merge answer the secondary showed merged, but not into our primary:
    /// nothing repaired or adopted (the reason names where it went, when known).
    MergedElsewhere,
}

impl EntryStatus {
    pub fn is_done(self) -> bool {
        matches!(self, EntryStatus::Merged | EntryStatus::AlreadyMerged)
    }
}

/// What the CSV says of one contact of a pair: what a reviewer recognises it by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactFacts {
    pub display_name: String,
    pub external_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_count: Option<u64>,
}

impl ContactFacts {
    fn of(c: &crate::detect::Contact) -> Self {
        Self {
            display_name: c.display_name.clone(),
            external_ref: c.external_ref.clone(),
            ticket_count: c.ticket_count,
        }
    }
}

/// One pair in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PairEntry {
    pub email: String,
    pub primary: String,
    pub secondary: String,
    pub status: EntryStatus,
    /// The CSV's facts of each contact, for pairs of this run's CSV the run reached or held
    /// (`None` for pairs known only from the savepoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_contact: Option<ContactFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary_contact: Option<ContactFacts>,
    /// The pair is in this run's CSV (false: known only from the savepoint).
    pub in_csv: bool,
    /// Finished in an earlier run; nothing was done to it now.
    pub finished_earlier: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// The skip reason in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PairError>,
    /// The last step completed (over all runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_step: Option<Step>,
    /// Steps run in this run, with timings.
    pub steps: Vec<StepRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_dir: Option<PathBuf>,
    pub tickets_backed_up: usize,
    pub conversations_backed_up: usize,
    /// The contacts whose CSV `TICKET_COUNT` differed from what DevRev listed at backup time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ticket_counts_differ: Vec<String>,
    pub tickets_repaired: usize,
    pub conversations_repaired: usize,
    pub display_name_restored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_ref_adopted: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_requested_at: Option<DateTime<Utc>>,
    /// `rev-users.merge` requests sent for this pair (over all runs).
    pub merge_requests: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_sign: Option<MergedSign>,
    /// The merge answer was lost and the merge has not shown yet: its outcome is unknown.
    /// It is never sent again before the secondary was seen unmerged for `--merge-watch`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
    /// Merged, but the secondary's `user_` ref is not on the primary yet (why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_adoption_pending: Option<String>,
    /// When a re-run can settle an unknown outcome (`None`: as soon as it looks again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun_after: Option<DateTime<Utc>>,
    /// The secondary's own data carried over to the survivor (absent with `--no-carry` or
    /// before the merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carry: Option<CarryEntry>,
}

impl PairEntry {
    /// From the journal alone (a pair not run now).
    pub fn from_record(rec: &PairRecord, in_csv: bool) -> Self {
        let status = match rec.status {
            PairStatus::Merged => EntryStatus::Merged,
            PairStatus::AlreadyMerged => EntryStatus::AlreadyMerged,
            PairStatus::Skipped => EntryStatus::Skipped,
            PairStatus::Failed => EntryStatus::Failed,
            PairStatus::Unconfirmed => EntryStatus::Unconfirmed,
            PairStatus::RefAdoptionPending => EntryStatus::Merged,
            PairStatus::InProgress => interrupted(rec),
            PairStatus::Restored => EntryStatus::Restored,
            PairStatus::MergedElsewhere => EntryStatus::MergedElsewhere,
        };
        PairEntry {
            email: rec.email.clone(),
            primary: rec.primary.clone(),
            secondary: rec.secondary.clone(),
            status,
            primary_contact: None,
            secondary_contact: None,
            in_csv,
            finished_earlier: rec.status.is_final(),
            skip_message: rec.skip.as_ref().map(ToString::to_string),
            skip_reason: rec.skip.clone(),
            error: rec.error.clone(),
            last_step: rec.last_step,
            steps: Vec::new(),
            backup_dir: rec.backup.as_ref().map(|b| b.dir.clone()),
            tickets_backed_up: rec.backup.as_ref().map_or(0, |b| b.tickets),
            conversations_backed_up: rec.backup.as_ref().map_or(0, |b| b.conversations),
            ticket_counts_differ: rec
                .backup
                .as_ref()
                .map(|b| b.ticket_counts_differ.clone())
                .unwrap_or_default(),
            tickets_repaired: rec.repairs.tickets.len(),
            conversations_repaired: rec.repairs.conversations.len(),
            display_name_restored: rec.repairs.display_name_restored,
            external_ref_adopted: rec.external_ref_adopted.clone(),
            merge_requested_at: rec.merge.as_ref().map(|m| m.requested_at),
            merge_requests: rec.merge.as_ref().map_or(0, |m| m.attempt),
            merged_sign: rec.merged.as_ref().map(|m| m.sign.clone()),
            outcome_unknown: outcome_unknown(rec),
            ref_adoption_pending: rec.ref_adoption_pending.clone(),
            rerun_after: rec
                .merge
                .as_ref()
                .filter(|_| outcome_unknown(rec))
                .and_then(|m| m.watch_until),
            carry: rec.carry.as_ref().map(CarryEntry::of),
        }
    }

    /// A pair run now (`run` is `None` when it was cut off by a fatal error or a second
    /// Ctrl-C).
    pub fn from_run(rec: &PairRecord, run: Option<&PairRun>, in_csv: bool) -> Self {
        let mut e = Self::from_record(rec, in_csv);
        e.finished_earlier = false;
        match run {
            Some(run) => {
                e.steps = run.steps.clone();
                e.status = match &run.result {
                    PairResult::Merged => EntryStatus::Merged,
                    PairResult::AlreadyMerged => EntryStatus::AlreadyMerged,
                    PairResult::Skipped(_) => EntryStatus::Skipped,
                    PairResult::Failed(_) => EntryStatus::Failed,
                    PairResult::Unconfirmed | PairResult::Parked => EntryStatus::Unconfirmed,
                    PairResult::RefPending => EntryStatus::Merged,
                    PairResult::Interrupted => interrupted(rec),
                    PairResult::MergedElsewhere(_) => EntryStatus::MergedElsewhere,
                };
            }
            None => e.status = interrupted(rec),
        }
        e
    }

    /// A CSV pair never started.
    pub fn from_pair(pair: &Pair) -> Self {
        PairEntry {
            email: pair.email.clone(),
            primary: pair.primary.rev_user_id.clone(),
            secondary: pair.secondary.rev_user_id.clone(),
            status: EntryStatus::NotStarted,
            primary_contact: Some(ContactFacts::of(&pair.primary)),
            secondary_contact: Some(ContactFacts::of(&pair.secondary)),
            in_csv: true,
            finished_earlier: false,
            skip_reason: None,
            skip_message: None,
            error: None,
            last_step: None,
            steps: Vec::new(),
            backup_dir: None,
            tickets_backed_up: 0,
            conversations_backed_up: 0,
            ticket_counts_differ: Vec::new(),
            tickets_repaired: 0,
            conversations_repaired: 0,
            display_name_restored: false,
            external_ref_adopted: None,
            merge_requested_at: None,
            merge_requests: 0,
            merged_sign: None,
            outcome_unknown: false,
            ref_adoption_pending: None,
            rerun_after: None,
            carry: None,
        }
    }
}

impl PairEntry {
    /// With the CSV's facts of the pair's contacts (matched by DON: the record may hold the
    /// roles the other way round after `--keep auto`).
    pub fn with_contacts(mut self, pair: &Pair) -> Self {
        for c in [&pair.primary, &pair.secondary] {
            if c.rev_user_id == self.primary {
                self.primary_contact = Some(ContactFacts::of(c));
            } else if c.rev_user_id == self.secondary {
                self.secondary_contact = Some(ContactFacts::of(c));
            }
        }
        self
    }

    /// Its recorded backup was taken in this run (a Backup step completed now).
    pub fn backed_up_this_run(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.step == Step::Backup && s.outcome == StepOutcome::Completed)
    }
}

/// A pair stopped mid-way. Once its merge request may have left, it is not "not finished"
/// like a pair that never got that far: the merge is DevRev's now, and the next run watches
/// for it and never sends it again, so it is unconfirmed.
fn interrupted(rec: &PairRecord) -> EntryStatus {
    if rec.merge_in_flight() && rec.merged.is_none() {
        EntryStatus::Unconfirmed
    } else {
        EntryStatus::Interrupted
    }
}

/// A merge was requested, its answer lost (or never recorded), and it has not shown yet.
fn outcome_unknown(rec: &PairRecord) -> bool {
    rec.merged.is_none()
        && rec.merge.as_ref().is_some_and(|m| {
            matches!(
                m.outcome,
                None | Some(super::journal::MergeOutcome::Unknown { .. })
            )
        })
}

/// The report's pairs, in (email, primary) order. The CSV pairs a run never reached and knows
/// no record of (on a 100,000-pair plan, nearly all of them before a full run) are kept as
/// references into the plan and written out as the report is serialized, as the very
/// [`PairEntry::from_pair`] they stand for: one entry at a time instead of 100,000 held at once.
#[derive(Debug, Clone)]
pub struct ReportPairs<'p> {
    /// Entries built in full (sorted).
    pub entries: Vec<PairEntry>,
    /// CSV pairs never started, without a savepoint record (sorted the same way).
    pub not_started: Vec<&'p Pair>,
}

impl<'p> ReportPairs<'p> {
    /// Both lists sorted by (email, primary), stably.
    pub fn sorted(mut entries: Vec<PairEntry>, mut not_started: Vec<&'p Pair>) -> Self {
        entries.sort_by(|a, b| a.email.cmp(&b.email).then(a.primary.cmp(&b.primary)));
        not_started.sort_by(|a, b| {
            a.email
                .cmp(&b.email)
                .then(a.primary.rev_user_id.cmp(&b.primary.rev_user_id))
        });
        ReportPairs {
            entries,
            not_started,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len() + self.not_started.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Serialize for ReportPairs<'_> {
    /// Both sorted lists merged; on a tie the built entry first, as the stable sort of all
    /// entries together (the built ones pushed first) would have it.
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.len()))?;
        let mut built = self.entries.iter().peekable();
        let mut fresh = self.not_started.iter().peekable();
        loop {
            let take_built = match (built.peek(), fresh.peek()) {
                (Some(e), Some(p)) => {
                    (e.email.as_str(), e.primary.as_str())
                        <= (p.email.as_str(), p.primary.rev_user_id.as_str())
                }
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_built {
                seq.serialize_element(built.next().expect("peeked"))?;
            } else {
                seq.serialize_element(&PairEntry::from_pair(fresh.next().expect("peeked")))?;
            }
        }
        seq.end()
    }
}

/// The run's settings, without the token.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub csv: PathBuf,
    pub base_url: String,
    pub keep: Keep,
    pub backup_scope: BackupScope,
    pub email_domain: Option<String>,
    pub backup_dir: PathBuf,
    pub report_dir: PathBuf,
    pub log_dir: PathBuf,
    pub savepoint: PathBuf,
    pub max_merges: Option<usize>,
    pub merge_timeout_s: f64,
    pub rate_limit_calls: u32,
    pub rate_limit_period_s: f64,
    pub max_retries: u32,
    pub yes: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Pairs in the report (the CSV's clean pairs plus pairs known only from the savepoint).
    pub pairs: usize,
    /// Merged by this tool, in this run or earlier (`merged_this_run + merged_earlier`).
    pub merged: usize,
    pub merged_this_run: usize,
    pub merged_earlier: usize,
    /// Found merged into the primary before this tool asked (not counted in `merged`).
    pub already_merged: usize,
    pub skipped: usize,
    pub skipped_by_reason: BTreeMap<String, usize>,
    pub failed: usize,
    pub unconfirmed: usize,
    /// Of `unconfirmed`: merges whose answer was lost and whose outcome is still unknown.
    pub outcome_unknown: usize,
    /// The latest `rerun_after` of those: a re-run after it settles every one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun_after: Option<DateTime<Utc>>,
    /// Of `merged`: pairs whose `user_` ref adoption is pending (re-run to retry it).
    pub ref_adoptions_pending: usize,
    /// Stopped by Ctrl-C or a run-wide error before their merge was sent.
    pub interrupted: usize,
    /// Of `interrupted`: merged (confirmed), with repairs or the ref adoption still to do.
    pub interrupted_after_merge: usize,
    pub not_started: usize,
    /// Savepoint records of pairs that left the CSV before their merge (left alone).
    pub left_csv: usize,
    /// Pairs merged earlier and undone by `--restore` (left alone).
    pub restored: usize,
    /// Secondaries merged into another contact after a lost merge answer (over all runs).
    pub merged_elsewhere: usize,
    /// Of `merged_elsewhere`: found in this run (these make the run exit 1).
    pub merged_elsewhere_this_run: usize,
    /// Of `skipped`: pairs held because `--restore` undid a merge of one of their contacts
    /// (decided "do not merge": not a failure of this run).
    pub held_as_restored: usize,
    /// Groups detection left for a person (never touched).
    pub needs_review_groups: usize,
    /// Over every pair in the report, whichever run did it.
    pub tickets_backed_up: usize,
    pub tickets_repaired: usize,
    pub conversations_repaired: usize,
    /// Of those, what this run did (the backups it took, the repairs of pairs it ran).
    pub tickets_backed_up_this_run: usize,
    pub tickets_repaired_this_run: usize,
    pub conversations_repaired_this_run: usize,
    pub display_names_restored: usize,
    pub external_refs_adopted: usize,
    /// Contacts whose CSV `TICKET_COUNT` differs from what DevRev listed at backup time, in
    /// backups taken this run (one summary line instead of a warning per pair).
    pub ticket_counts_differ: usize,
    /// What the carry-over wrote onto survivors, over every pair in the report.
    pub carry: CarryCounts,
    /// Of those, the pairs this run ran.
    pub carry_this_run: CarryCounts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiFigures {
    pub calls: u64,
    pub retries: u64,
    pub rate_limited_429: u64,
    /// Calls that failed after their retries. A `404` or redirect from a look at a contact
    /// after its merge is what the look hoped for: counted in `expected_gone` instead.
    pub errors: u64,
    pub expected_gone: u64,
    pub rate_wait_ms: u64,
    pub per_endpoint: BTreeMap<String, EndpointStats>,
    pub elapsed_s: f64,
    pub achieved_calls_per_minute: f64,
    pub limit_calls: u32,
    pub limit_period_s: f64,
    pub limit_calls_per_minute: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rate_headers: Option<RateHeaders>,
    /// Calls divided by the pairs run in this run (0 when none ran).
    pub calls_per_pair_run: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport<'p> {
    pub report_version: u32,
    pub run_id: String,
    pub tool_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_s: f64,
    pub outcome: RunOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<Organization>,
    pub configuration: RunConfig,
    pub pairs: ReportPairs<'p>,
    pub summary: Summary,
    pub api: ApiFigures,
    /// Every merged secondary (DON) → its primary (DON), over all runs.
    pub id_map: BTreeMap<String, String>,
    /// With `--decisions`: every group of the file and how far it got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<super::groups::GroupEntry>,
    /// Groups decided `not-dup`/`skip` whose contacts were merged before the decision came
    /// (any run of this savepoint): each merge and the `--restore` command that undoes it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub late_vetoes: Vec<crate::review::lasting::LateVeto>,
}

pub struct BuildInput<'a> {
    pub run_id: &'a str,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
    pub outcome: RunOutcome,
    pub organization: Option<Organization>,
    pub cfg: &'a Config,
    pub csv: &'a Path,
    /// Groups detection left for a person.
    pub needs_review_groups: usize,
    pub entries: Vec<PairEntry>,
    /// CSV pairs never started and without a record (see [`ReportPairs`]).
    pub not_started: Vec<&'a Pair>,
    pub client: &'a DevRevClient,
    pub groups: Vec<super::groups::GroupEntry>,
}

impl<'a> MergeReport<'a> {
    pub fn build(input: BuildInput<'a>) -> Self {
        let BuildInput {
            run_id,
            started_at,
            elapsed,
            outcome,
            organization,
            cfg,
            csv,
            needs_review_groups,
            entries,
            not_started,
            client,
            groups,
        } = input;
        let pairs = ReportPairs::sorted(entries, not_started);
        let mut summary = Summary::of(&pairs.entries, needs_review_groups);
        // What `Summary::of` would count for each `PairEntry::from_pair`.
        summary.pairs += pairs.not_started.len();
        summary.not_started += pairs.not_started.len();
        let id_map = pairs
            .entries
            .iter()
            .filter(|e| e.status.is_done())
            .map(|e| (e.secondary.clone(), e.primary.clone()))
            .collect();
        let run_now = pairs.entries.iter().filter(|e| !e.steps.is_empty()).count();
        let secs = elapsed.as_secs_f64();
        MergeReport {
            report_version: 1,
            run_id: run_id.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at,
            finished_at: Utc::now(),
            duration_s: round2(secs),
            outcome,
            organization,
            configuration: RunConfig::of(cfg, csv),
            pairs,
            summary,
            api: ApiFigures::of(client, cfg, secs, run_now),
            id_map,
            groups,
            late_vetoes: Vec::new(),
        }
    }
}

/// One status line of the summary (see [`Summary::parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Merged,
    AlreadyMerged,
    Skipped,
    Failed,
    Unconfirmed,
    MergedElsewhere,
    NotFinished,
    NotStarted,
    LeftCsv,
    Restored,
}

impl Part {
    pub fn label(self) -> &'static str {
        match self {
            Part::Merged => "merged",
            Part::AlreadyMerged => "already merged",
            Part::Skipped => "skipped",
            Part::Failed => "failed",
            Part::Unconfirmed => "unconfirmed",
            Part::MergedElsewhere => "merged elsewhere",
            Part::NotFinished => "not finished",
            Part::NotStarted => "not started",
            Part::LeftCsv => "left the CSV",
            Part::Restored => "restored",
        }
    }

    /// Shown even at 0: what a reader looks for first.
    fn always_shown(self) -> bool {
        matches!(self, Part::Merged | Part::Skipped | Part::Failed)
    }
}

impl Summary {
    /// The pair counts the summary prints, one per status: every pair is in exactly one, so
    /// they add up to `pairs` (the console summary is built from this list).
    pub fn parts(&self) -> [(Part, usize); 10] {
        [
            (Part::Merged, self.merged),
            (Part::AlreadyMerged, self.already_merged),
            (Part::Skipped, self.skipped),
            (Part::Failed, self.failed),
            (Part::Unconfirmed, self.unconfirmed),
            (Part::MergedElsewhere, self.merged_elsewhere),
            (Part::NotFinished, self.interrupted),
            (Part::NotStarted, self.not_started),
            (Part::LeftCsv, self.left_csv),
            (Part::Restored, self.restored),
        ]
    }

    /// The counts over the report's entries.
    fn of(entries: &[PairEntry], needs_review_groups: usize) -> Self {
        let mut s = Summary {
            pairs: entries.len(),
            needs_review_groups,
            ..Summary::default()
        };
        for e in entries {
            match e.status {
                EntryStatus::Merged => {
                    s.merged += 1;
                    if e.finished_earlier {
                        s.merged_earlier += 1;
                    } else {
                        s.merged_this_run += 1;
                    }
                }
                EntryStatus::AlreadyMerged => s.already_merged += 1,
                EntryStatus::Skipped => {
                    s.skipped += 1;
                    if let Some(SkipReason::HeldByLedger { hold, .. }) = &e.skip_reason
                        && matches!(hold, Hold::Restored | Hold::Recreated)
                    {
                        s.held_as_restored += 1;
                    }
                    let code = e.skip_reason.as_ref().map_or("unknown", SkipReason::code);
                    *s.skipped_by_reason.entry(code.to_string()).or_default() += 1;
                }
                EntryStatus::Failed => s.failed += 1,
                EntryStatus::Unconfirmed => {
                    s.unconfirmed += 1;
                    if e.outcome_unknown {
                        s.outcome_unknown += 1;
                        s.rerun_after = s.rerun_after.max(e.rerun_after);
                    }
                }
                EntryStatus::Interrupted => {
                    s.interrupted += 1;
                    if e.merged_sign.is_some() {
                        s.interrupted_after_merge += 1;
                    }
                }
                EntryStatus::NotStarted => s.not_started += 1,
                EntryStatus::LeftCsv => s.left_csv += 1,
                EntryStatus::Restored => s.restored += 1,
                EntryStatus::MergedElsewhere => {
                    s.merged_elsewhere += 1;
                    if !e.finished_earlier {
                        s.merged_elsewhere_this_run += 1;
                    }
                }
            }
            s.tickets_backed_up += e.tickets_backed_up;
            s.tickets_repaired += e.tickets_repaired;
            s.conversations_repaired += e.conversations_repaired;
            if e.backed_up_this_run() {
                s.tickets_backed_up_this_run += e.tickets_backed_up;
                s.ticket_counts_differ += e.ticket_counts_differ.len();
            }
            if !e.steps.is_empty() {
                s.tickets_repaired_this_run += e.tickets_repaired;
                s.conversations_repaired_this_run += e.conversations_repaired;
            }
            s.display_names_restored += usize::from(e.display_name_restored);
            s.external_refs_adopted += usize::from(e.external_ref_adopted.is_some());
            s.ref_adoptions_pending += usize::from(e.ref_adoption_pending.is_some());
            if let Some(c) = &e.carry {
                s.carry.add(c);
                if !e.finished_earlier {
                    s.carry_this_run.add(c);
                }
            }
        }
        s
    }
}

impl ApiFigures {
    /// The client's counters over a run of `secs` seconds in which `run_now` pairs ran.
    pub fn of(client: &DevRevClient, cfg: &Config, secs: f64, run_now: usize) -> Self {
        let totals = client.totals();
        let period = cfg.rate_limit_period.as_secs_f64();
        ApiFigures {
            calls: totals.calls,
            retries: totals.retries,
            rate_limited_429: totals.rate_limited,
            errors: totals.errors,
            expected_gone: totals.expected_gone,
            rate_wait_ms: totals.rate_wait_ms,
            per_endpoint: client.stats(),
            elapsed_s: round2(secs),
            achieved_calls_per_minute: if secs > 0.0 {
                round2(totals.calls as f64 * 60.0 / secs)
            } else {
                0.0
            },
            limit_calls: cfg.rate_limit_calls,
            limit_period_s: period,
            limit_calls_per_minute: if period > 0.0 {
                round2(f64::from(cfg.rate_limit_calls) * 60.0 / period)
            } else {
                0.0
            },
            last_rate_headers: client.last_rate_headers(),
            calls_per_pair_run: if run_now > 0 {
                round2(totals.calls as f64 / run_now as f64)
            } else {
                0.0
            },
        }
    }
}

impl RunConfig {
    /// The settings of this run, without the token.
    fn of(cfg: &Config, csv: &Path) -> Self {
        RunConfig {
            csv: csv.to_path_buf(),
            base_url: cfg.base_url.to_string(),
            keep: cfg.keep,
            backup_scope: cfg.backup_scope,
            email_domain: cfg.email_domain.clone(),
            backup_dir: cfg.backup_dir.clone(),
            report_dir: cfg.report_dir.clone(),
            log_dir: cfg.log_dir.clone(),
            savepoint: cfg.savepoint.clone(),
            max_merges: cfg.max_merges,
            merge_timeout_s: cfg.merge_timeout.as_secs_f64(),
            rate_limit_calls: cfg.rate_limit_calls,
            rate_limit_period_s: cfg.rate_limit_period.as_secs_f64(),
            max_retries: cfg.max_retries,
            yes: cfg.yes,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Writes the report atomically, 0600, under a name that does not exist yet.
pub fn write(dir: &Path, report: &MergeReport<'_>) -> Result<PathBuf, AppError> {
    let loosened = fsutil::tighten_private_dir(dir).map_err(|e| {
        AppError::CantCreate(format!(
            "cannot create the report folder {}: {e}",
            dir.display()
        ))
    })?;
    if let Some(was) = loosened {
        tracing::warn!(
            folder = %dir.display(),
            "the report folder was open to others ({was})"
        );
    }
    let path = fsutil::unique_path(dir, "merge-report", "json");
    fsutil::write_json_atomic(&path, report).map_err(|e| {
        AppError::CantCreate(format!("cannot write the report {}: {e}", path.display()))
    })?;
    Ok(path)
}

impl ApiFigures {
    /// The one API line of every command's summary and HTML page: the same words and order
    /// in every run, short or long. No calls-per-minute figure: `n` calls paced one per
    /// `period / limit` span only `n - 1` intervals, so a short run would read as faster than
    /// the limit though no window ever held more than it allows (the rate is in the JSON).
    pub fn line(&self) -> String {
        format!(
            "{} call(s) in {:.1} s (limit {} per {} s): {} retries, {} x 429, {} error(s)",
            self.calls,
            self.elapsed_s,
            self.limit_calls,
            self.limit_period_s,
            self.retries,
            self.rate_limited_429,
            self.errors
        )
    }
}

/// The words after the unconfirmed count: accepted merges still being watched, and merges
/// whose answer was lost (never sent again; settled by the watch window).
fn unconfirmed_detail(s: &Summary) -> String {
    let accepted = s.unconfirmed - s.outcome_unknown;
    let mut parts = Vec::new();
    if accepted > 0 {
        parts.push(format!(
            "{accepted} accepted, not yet seen applied: re-run to keep watching"
        ));
    }
    if s.outcome_unknown > 0 {
        parts.push(format!(
            "{} with the merge answer lost: watched, never sent again; re-run after {}",
            s.outcome_unknown,
            s.rerun_after.map_or_else(
                || "a while".to_string(),
                |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            )
        ));
    }
    format!(" ({})", parts.join("; "))
}

/// The human summary on stderr.
pub fn print_summary(r: &MergeReport<'_>, path: &Path, savepoint: &Path) {
    let s = &r.summary;
    let mut out = String::new();
    out.push_str(&format!(
        "\nMerge run {} ({}): {} pair(s)\n",
        r.run_id,
        match r.outcome {
            RunOutcome::Completed => "completed",
            RunOutcome::MaxMergesReached => "stopped at --max-merges",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Aborted => "aborted",
        },
        s.pairs
    ));
    status_lines(&mut out, s);
    figure_lines(&mut out, s);
    out.push_str(&format!("  API:             {}\n", r.api.line()));
    out.push_str(&format!("  time:            {:.1} s\n", r.duration_s));
    out.push_str(&format!("  report:          {}\n", path.display()));
    out.push_str(&format!("  savepoint:       {}\n", savepoint.display()));
    pair_lines(&mut out, r);
    output::human(&out);
}

/// One line per status, from [`Summary::parts`]: they add up to the pairs of the first line.
fn status_lines(out: &mut String, s: &Summary) {
    // One line per status, from `Summary::parts` (they add up to the pairs above); each
    // line says whether its breakdown is this run or all runs.
    for (part, n) in s.parts() {
        if n == 0 && !part.always_shown() {
            continue;
        }
        let detail = match part {
            Part::Merged => format!(
                " ({} in this run, {} in earlier runs)",
                s.merged_this_run, s.merged_earlier
            ),
            Part::AlreadyMerged => " (found merged into the primary before this tool asked)".into(),
            Part::Unconfirmed => unconfirmed_detail(s),
            Part::MergedElsewhere => format!(
                " ({} in this run; the secondary went to another contact after a lost merge \
                 answer: nothing repaired or adopted, see the report)",
                s.merged_elsewhere_this_run
            ),
            Part::NotFinished if s.interrupted_after_merge > 0 => format!(
                " ({} merged with repairs still to do; re-run the same command to continue)",
                s.interrupted_after_merge
            ),
            Part::NotFinished | Part::NotStarted => " (re-run the same command to continue)".into(),
            Part::LeftCsv => " (never merged, left alone)".into(),
            Part::Restored => " (undone by --restore: not merged again)".into(),
            Part::Skipped | Part::Failed => String::new(),
        };
        out.push_str(&format!(
            "  {:<17}{n}{detail}\n",
            format!("{}:", part.label())
        ));
        if part == Part::Skipped {
            for (reason, n) in &s.skipped_by_reason {
                out.push_str(&format!("    {reason}: {n}\n"));
            }
        }
    }
    if s.ref_adoptions_pending > 0 {
        out.push_str(&format!(
            "  of the merged, ref adoption pending: {} (DevRev would not free the user_ ref; a \
             login with it may create the duplicate again: re-run to retry, or move the ref by \
             hand)\n",
            s.ref_adoptions_pending
        ));
    }
}

/// Groups left for a person, tickets this run and all runs, the TICKET_COUNT note, the
/// carry-over.
fn figure_lines(out: &mut String, s: &Summary) {
    out.push_str(&format!(
        "  needs review:    {}, untouched\n",
        output::count(s.needs_review_groups as u64, "group", "groups")
    ));
    out.push_str(&format!(
        "  this run:        {} backed up, {} repaired, {} repaired\n",
        output::count(s.tickets_backed_up_this_run as u64, "ticket", "tickets"),
        output::count(s.tickets_repaired_this_run as u64, "ticket", "tickets"),
        output::count(
            s.conversations_repaired_this_run as u64,
            "conversation",
            "conversations"
        )
    ));
    if (
        s.tickets_backed_up,
        s.tickets_repaired,
        s.conversations_repaired,
    ) != (
        s.tickets_backed_up_this_run,
        s.tickets_repaired_this_run,
        s.conversations_repaired_this_run,
    ) {
        out.push_str(&format!(
            "  all runs:        {} backed up, {} repaired, {} repaired\n",
            output::count(s.tickets_backed_up as u64, "ticket", "tickets"),
            output::count(s.tickets_repaired as u64, "ticket", "tickets"),
            output::count(
                s.conversations_repaired as u64,
                "conversation",
                "conversations"
            )
        ));
    }
    if s.ticket_counts_differ > 0 {
        out.push_str(&format!(
            "  note:            {}\n",
            crate::backup::ticket_counts_line(s.ticket_counts_differ)
        ));
    }
    if s.carry != CarryCounts::default() {
        out.push_str(&format!(
            "  carry-over:      this run {}\n",
            s.carry_this_run.line()
        ));
        if s.carry != s.carry_this_run {
            out.push_str(&format!("                   all runs {}\n", s.carry.line()));
        }
    }
}

/// Each failed pair's error, and each value the carry-over could not write.
fn pair_lines(out: &mut String, r: &MergeReport<'_>) {
    for e in r
        .pairs
        .entries
        .iter()
        .filter(|e| e.status == EntryStatus::Failed)
    {
        if let Some(err) = &e.error {
            out.push_str(&format!(
                "  FAILED {}: {}{}\n",
                e.email,
                err,
                err.reference_id
                    .as_deref()
                    .map(|r| format!(" (DevRev reference id {r})"))
                    .unwrap_or_default()
            ));
        }
    }
    // What the carry-over could not write, pair by pair (the rest of it is in the report).
    for e in r.pairs.entries.iter().filter(|e| !e.finished_earlier) {
        for x in e.carry.iter().flat_map(|c| &c.refused) {
            out.push_str(&format!(
                "  not carried over {}: {} ({}); the backup keeps it\n",
                e.email,
                x.item.describe(),
                x.reason
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(calls: u64, elapsed_s: f64) -> ApiFigures {
        ApiFigures {
            calls,
            retries: 0,
            rate_limited_429: 0,
            errors: 0,
            expected_gone: 0,
            rate_wait_ms: 0,
            per_endpoint: BTreeMap::new(),
            elapsed_s,
            achieved_calls_per_minute: round2(calls as f64 * 60.0 / elapsed_s),
            limit_calls: 60,
            limit_period_s: 60.0,
            limit_calls_per_minute: 60.0,
            last_rate_headers: None,
            calls_per_pair_run: 0.0,
        }
    }

    fn entry(email: &str, status: EntryStatus, finished_earlier: bool) -> PairEntry {
        let rec = PairRecord::new(email, "don:P", "don:S", Keep::Revu);
        let mut e = PairEntry::from_record(&rec, true);
        e.status = status;
        e.finished_earlier = finished_earlier;
        e
    }

    #[test]
    fn the_summary_counts_every_status_and_skip_reason() {
        let mut skipped = entry("c", EntryStatus::Skipped, false);
        skipped.skip_reason = Some(SkipReason::UnverifiedIntoVerified);
        let mut merged = entry("a", EntryStatus::Merged, false);
        merged.tickets_repaired = 2;
        merged.external_ref_adopted = Some("user_1".into());
        let entries = [
            merged,
            entry("b", EntryStatus::Merged, true),
            skipped,
            entry("d", EntryStatus::Skipped, false),
            entry("e", EntryStatus::AlreadyMerged, false),
            entry("f", EntryStatus::LeftCsv, false),
            entry("g", EntryStatus::NotStarted, false),
        ];
        let s = Summary::of(&entries, 3);
        assert_eq!(s.pairs, 7);
        assert_eq!((s.merged, s.merged_this_run, s.already_merged), (2, 1, 1));
        assert_eq!(s.merged_earlier, 1);
        assert_eq!(s.skipped, 2);
        assert_eq!(
            s.skipped_by_reason,
            BTreeMap::from([
                ("unknown".to_string(), 1),
                ("unverified_into_verified".to_string(), 1)
            ])
        );
        assert_eq!((s.left_csv, s.not_started, s.failed), (1, 1, 0));
        assert_eq!(s.needs_review_groups, 3);
        assert_eq!((s.tickets_repaired, s.external_refs_adopted), (2, 1));
    }

    #[test]
    fn the_api_line_has_one_format_for_short_and_long_runs() {
        assert_eq!(
            figures(4, 3.3).line(),
            "4 call(s) in 3.3 s (limit 60 per 60 s): 0 retries, 0 x 429, 0 error(s)"
        );
        assert_eq!(
            figures(120, 150.0).line(),
            "120 call(s) in 150.0 s (limit 60 per 60 s): 0 retries, 0 x 429, 0 error(s)"
        );
    }

    /// Every status once (and the statuses that split into two kinds, both ways): the printed
    /// parts add up to the pairs, and each breakdown adds up to its line.
    #[test]
    fn the_summary_counts_add_up() {
        use super::super::journal::{MergeConfirmation, MergeIntent, MergeOutcome};
        let now = Utc::now();
        let sent = |e: &mut PairEntry, rec: &mut PairRecord| {
            rec.merge = Some(MergeIntent {
                attempt: 1,
                requested_at: now,
                outcome: Some(MergeOutcome::Accepted { at: now }),
                unmerged_since: None,
                watch_until: None,
            });
            e.status = interrupted(rec);
        };
        let mut entries = Vec::new();
        for (i, status) in [
            EntryStatus::Merged,
            EntryStatus::Merged,
            EntryStatus::AlreadyMerged,
            EntryStatus::Skipped,
            EntryStatus::Failed,
            EntryStatus::Unconfirmed,
            EntryStatus::Interrupted,
            EntryStatus::Interrupted,
            EntryStatus::Interrupted,
            EntryStatus::NotStarted,
            EntryStatus::LeftCsv,
            EntryStatus::Restored,
            EntryStatus::MergedElsewhere,
        ]
        .into_iter()
        .enumerate()
        {
            let mut rec = PairRecord::new(&format!("p{i}"), "don:P", "don:S", Keep::Revu);
            let mut e = PairEntry::from_record(&rec, true);
            e.status = status;
            e.finished_earlier = i == 1;
            match i {
                // Ctrl-C after the merge was accepted, before it showed: unconfirmed.
                7 => sent(&mut e, &mut rec),
                // Ctrl-C after the merge showed, before its repairs: not finished.
                8 => {
                    sent(&mut e, &mut rec);
                    rec.merged = Some(MergeConfirmation::now(MergedSign::NotFound));
                    e.status = interrupted(&rec);
                    e.merged_sign = Some(MergedSign::NotFound);
                }
                _ => {}
            }
            entries.push(e);
        }
        let s = Summary::of(&entries, 0);
        assert_eq!(s.pairs, 13);
        assert_eq!(s.parts().iter().map(|(_, n)| n).sum::<usize>(), s.pairs);
        assert_eq!(s.merged, s.merged_this_run + s.merged_earlier);
        assert_eq!((s.merged_this_run, s.merged_earlier), (1, 1));
        assert_eq!(
            s.unconfirmed, 2,
            "the pair whose merge was sent is unconfirmed"
        );
        assert_eq!((s.interrupted, s.interrupted_after_merge), (2, 1));
        assert_eq!(s.skipped_by_reason.values().sum::<usize>(), s.skipped);
    }

    #[test]
    fn this_run_counts_only_the_backups_this_run_took() {
        let mut earlier = entry("a", EntryStatus::Merged, true);
        earlier.tickets_backed_up = 100;
        let mut now = entry("b", EntryStatus::Merged, false);
        now.tickets_backed_up = 3;
        now.ticket_counts_differ = vec!["secondary REVU-1: TICKET_COUNT 0, DevRev lists 1".into()];
        now.steps = vec![StepRecord {
            step: Step::Backup,
            started_at: Utc::now(),
            duration_ms: 1,
            outcome: StepOutcome::Completed,
            detail: None,
        }];
        let s = Summary::of(&[earlier, now], 0);
        assert_eq!(
            (s.tickets_backed_up, s.tickets_backed_up_this_run),
            (103, 3)
        );
        assert_eq!(s.ticket_counts_differ, 1);
    }
}
