//! The savepoint's on-disk format: every type serialized into the journal file, next to the
//! format version number that names it.
//!
//! These types are the file format, not the saga's working state: a change here changes what
//! older and newer builds can read, so it needs a [`VERSION`] bump (and the format test below
//! fails until the literal it pins is updated on purpose). The saga and the savepoint machinery
//! (`savepoint.rs`: lock, load, append, compaction) both build on this module; neither defines
//! a serialized type of its own.
//!
//! Since version 2 the file is a journal of JSON lines, so that one step costs one appended
//! line whatever the size of the plan: a [`JournalHeader`] line, then one [`JournalLine`] per
//! change (the whole record of the pair that changed). The last line of a pair wins. Version 1
//! was one JSON document ([`SavepointFile`]) rewritten whole at every step; it is still read,
//! and rewritten as version 2 at the first change.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The carry-over's journal types live beside its pure logic; they are part of this format.
pub use super::carry::{CarryItem, CarryPlan, CarryRecord, CarryWrite, Conflict, Refusal};
use crate::backup::BackupSummary;
use crate::options::Keep;
use crate::validate::Role;

/// The format version this build reads and writes. Bump it (and refuse older or newer files
/// explicitly) whenever a field changes meaning.
pub const VERSION: u32 = 4;

/// The JSON-lines format before restored pairs were recorded (no `restored` status): still
/// read, and rewritten as [`VERSION`] at the first change.
pub const JOURNAL_V2: u32 = 2;

/// The JSON-lines format before lasting group decisions ([`JournalLine::Decision`]): still
/// read, and rewritten as [`VERSION`] at the first change, so that a build that knows only
/// version 3 refuses the file by its number instead of calling a decision line damage.
pub const JOURNAL_V3: u32 = 3;

/// The single-document format of the first builds: still read, never written.
pub const LEGACY_VERSION: u32 = 1;

/// The savepoint key of a pair: both DONs, primary first. Sized exactly: a run holds one
/// per pair, and `format!` would leave each about twice its length (188 bytes for 98).
pub fn pair_key(primary: &str, secondary: &str) -> String {
    const SEP: &str = " <- ";
    let mut key = String::with_capacity(primary.len() + SEP.len() + secondary.len());
    key.push_str(primary);
    key.push_str(SEP);
    key.push_str(secondary);
    key
}

/// Where a pair stands overall. `Merged` and `AlreadyMerged` are final; every other status is
/// picked up again by the next run (skips are re-validated, failures retried from the last
/// completed step, unconfirmed merges polled again, never re-sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairStatus {
    /// Started, not finished (the run stopped or crashed in the middle).
    InProgress,
    Merged,
    /// The secondary already pointed at the primary when validated; nothing was changed.
    AlreadyMerged,
    Skipped,
    Failed,
    /// The merge was accepted but DevRev had not applied it within `--merge-timeout`.
    Unconfirmed,
    /// Merged and reconciled, but the secondary's `user_` ref could not be moved to the
    /// primary (DevRev refused to release it): the next run retries only that adoption.
    RefAdoptionPending,
    /// Undone by `--restore`: the secondary was recreated ([`PairRecord::restored`]). Final:
    /// no run merges these contacts again, or resumes anything of this record.
    Restored,
    /// The merge answer was lost, and the secondary then showed merged, but into another
    /// contact (or nothing confirms it went into the primary): nothing was repaired or
    /// adopted, and nothing more is done. The reason is in [`PairRecord::skip`].
    MergedElsewhere,
}

/// A merge DevRev accepted (`200`) and then never applied: the secondary was seen plainly
/// unmerged from the first look after the request for a whole `--merge-watch` window.
pub fn accepted_never_applied(rec: &PairRecord, now: DateTime<Utc>) -> bool {
    rec.merged.is_none()
        && rec.merge.as_ref().is_some_and(|m| {
            matches!(m.outcome, Some(MergeOutcome::Accepted { .. }))
                && m.watch_until.is_some_and(|t| t <= now)
        })
}

impl PairStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PairStatus::Merged
                | PairStatus::AlreadyMerged
                | PairStatus::Restored
                | PairStatus::MergedElsewhere
        )
    }
}

/// One `rev-users.merge` request: the intent is written before the call, the outcome after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeIntent {
    /// 1 for the first request of this pair; higher only after an earlier one was shown not
    /// to have been applied.
    pub attempt: u32,
    pub requested_at: DateTime<Utc>,
    /// `None` between the intent and the answer: a crash in that window leaves it `None`.
    pub outcome: Option<MergeOutcome>,
    /// While the outcome is unknown: when the secondary was first seen plainly unmerged
    /// (after the request, with no unclear look since). The watch spans runs: only a
    /// secondary seen plainly unmerged from here for a whole `--merge-watch` window lets the
    /// request count as not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmerged_since: Option<DateTime<Utc>>,
    /// `unmerged_since` + the window: the earliest time a re-run can settle the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_until: Option<DateTime<Utc>>,
}

/// What became of a merge request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MergeOutcome {
    /// DevRev answered 200: the merge is queued.
    Accepted { at: DateTime<Utc> },
    /// The request never left this machine (connection refused): certainly not applied.
    NotSent { reason: String },
    /// DevRev refused it (4xx): not applied.
    Rejected { error: PairError },
    /// The answer was lost (dropped connection, timeout, 500/502/504). Resolved by watching
    /// the secondary, never by asking again.
    Unknown { reason: String },
    /// An unknown or missing outcome, resolved: the secondary was seen plainly unmerged for
    /// a whole `--merge-watch` window after the request, so the request was not applied.
    NotApplied { checked_at: DateTime<Utc> },
}

impl MergeOutcome {
    /// True when DevRev certainly never took the request in (refused it, or it never
    /// reached DevRev). A request watched into `NotApplied` may still land late, so it does
    /// not count here.
    pub fn never_reached_devrev(&self) -> bool {
        matches!(
            self,
            MergeOutcome::NotSent { .. } | MergeOutcome::Rejected { .. }
        )
    }

    /// True when the request certainly had no effect, so a new one may be sent.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(
            self,
            MergeOutcome::NotSent { .. }
                | MergeOutcome::Rejected { .. }
                | MergeOutcome::NotApplied { .. }
        )
    }
}

/// How the merge was seen to have happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeConfirmation {
    pub at: DateTime<Utc>,
    pub sign: MergedSign,
    /// After a lost merge answer, a sign that names no destination (404, inactive, `-drop-`)
    /// was confirmed by the secondary's backed-up tickets or conversations now naming the
    /// primary (see [`crate::merge::evidence::Destination`]). Kept so a resumed Reconcile
    /// does not look again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destination_confirmed: bool,
}

impl MergeConfirmation {
    /// The merge seen now, by `sign` (its destination not confirmed yet).
    pub fn now(sign: MergedSign) -> Self {
        Self {
            at: Utc::now(),
            sign,
            destination_confirmed: false,
        }
    }
}

/// Repairs made by Reconcile, kept as ids so a resumed Reconcile never counts one twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repairs {
    pub tickets: Vec<String>,
    pub conversations: Vec<String>,
    pub display_name_restored: bool,
    /// Backed-up tickets that no longer exist (deleted by someone since the backup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets_gone: Vec<String>,
}

/// Everything the journal knows about one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub email: String,
    /// DON of the contact that survives.
    pub primary: String,
    /// DON of the contact merged into it.
    pub secondary: String,
    pub keep: Keep,
    pub status: PairStatus,
    /// The last step that completed (`None`: nothing completed yet).
    pub last_step: Option<Step>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PairError>,
    /// The primary's display name before the merge (restored if the merge changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_display_name: Option<String>,
    /// The secondary's external_ref before the merge (adopted by the primary with
    /// `--keep revu`; after the merge the secondary may be gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSummary>,
    /// The current merge request (intent + outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeIntent>,
    /// Earlier requests that were shown not to have been applied (audit trail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_merges: Vec<MergeIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeConfirmation>,
    #[serde(default)]
    pub repairs: Repairs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref_adopted: Option<String>,
    /// Releasing the `user_` ref from the merged-away secondary that kept it (intent before
    /// the write, outcome after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_release: Option<RefRelease>,
    /// Why the ref is not adopted yet (with status `RefAdoptionPending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_adoption_pending: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Set by `--restore` (with status `Restored`): the merge was undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
    /// This record is one merge of a group decided in a decisions file (absent for clean
    /// pairs, and in savepoints written before groups merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupLink>,
    /// The secondary's own data written onto the survivor after the merge (absent in
    /// savepoints of builds before the carry-over, and with `--no-carry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<CarryRecord>,
}

/// Where a record stands in its decided group. A group merges one contact at a time into
/// one survivor, so its records share their primary: the ledger lets them (and only them)
/// do that, and the run starts a member only once the one before it is merged and reconciled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLink {
    /// The group's id in the review file (`G-` and 10 hex digits).
    pub id: String,
    /// This merge's place in the group's order, from 0.
    pub index: u32,
    /// How many merges the group has.
    pub len: u32,
    /// On the group's last merge only: the `user_` ref the survivor takes once every member
    /// is merged (taken earlier, a later member's merge could not release it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptRef>,
    /// The decisions file the group was decided in, as given.
    pub decisions: std::path::PathBuf,
}

/// A `user_` ref a group's survivor takes, and the merged-away member that held it (released
/// from that member if DevRev does not free it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptRef {
    pub external_ref: String,
    pub holder: String,
}

/// A pair `--restore` undid: the contact it recreated for the merged-away secondary, and where
/// the restore is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    pub at: DateTime<Utc>,
    /// The recreated contact's DON (DevRev gives it a new id; the old one stays merged away).
    pub new_contact: String,
    /// The restore's own journal (`restore-savepoint.json`).
    pub restore_journal: std::path::PathBuf,
    /// The restore report, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<std::path::PathBuf>,
}

/// One write that moves the `user_` ref off a merged-away secondary that kept it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefRelease {
    pub requested_at: DateTime<Utc>,
    /// The value the secondary's ref is set to (`<ref>-drop-<secondary DON>`, DevRev's own
    /// form for a merged-away ref).
    pub new_ref: String,
    /// `None` between the intent and the answer; `Some(Ok)`/`Some(Err(reason))` after it.
    pub outcome: Option<Result<(), String>>,
}

impl PairRecord {
    pub fn new(email: &str, primary: &str, secondary: &str, keep: Keep) -> Self {
        Self {
            email: email.to_string(),
            primary: primary.to_string(),
            secondary: secondary.to_string(),
            keep,
            status: PairStatus::InProgress,
            last_step: None,
            updated_at: Utc::now(),
            skip: None,
            error: None,
            primary_display_name: None,
            secondary_external_ref: None,
            backup: None,
            merge: None,
            earlier_merges: Vec::new(),
            merged: None,
            repairs: Repairs::default(),
            external_ref_adopted: None,
            ref_release: None,
            ref_adoption_pending: None,
            finished_at: None,
            restored: None,
            group: None,
            carry: None,
        }
    }

    /// Whether the pair ends with AdoptExternalRef: a clean pair under `--keep revu`, a
    /// group's record only when it carries the group's ref to adopt.
    pub fn adopts(&self) -> bool {
        match &self.group {
            Some(g) => g.adopt.is_some(),
            None => self.keep == Keep::Revu,
        }
    }

    /// The ref AdoptExternalRef moves to the primary and the contact that held it: for a
    /// clean pair the secondary's own `user_` ref (as Validate read it), for a group the one
    /// the decisions chose.
    pub fn ref_to_adopt(&self) -> Option<(String, String)> {
        match &self.group {
            Some(g) => g
                .adopt
                .as_ref()
                .map(|a| (a.external_ref.clone(), a.holder.clone())),
            None => self
                .secondary_external_ref
                .clone()
                .map(|r| (r, self.secondary.clone())),
        }
    }

    /// True once a merge may have been sent for this pair and was not shown to be without
    /// effect: from here on the pair must be finished, never started over.
    pub fn merge_in_flight(&self) -> bool {
        self.merged.is_some()
            || self.merge.as_ref().is_some_and(|m| {
                !m.outcome
                    .as_ref()
                    .is_some_and(MergeOutcome::certainly_not_applied)
            })
    }
}

/// Everything the journal holds, as a run sees it in memory; also the whole-document file
/// format of version 1 ([`LEGACY_VERSION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointFile {
    pub version: u32,
    pub tool_version: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pairs: BTreeMap<String, PairRecord>,
    /// The org and base URL the journal's merges were made in, set by the first merge run
    /// (absent in files written before it was recorded). A run with a token of another org,
    /// or against another base URL, stops before any change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Lasting `not-dup` and `skip` decisions by group id: a run without `--decisions` and
    /// the next preview still honour them, until a decisions file revokes one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub decisions: BTreeMap<String, GroupDecision>,
}

/// A decision about a whole group that outlasts its decisions file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDecision {
    /// The group's id (`G-` and 10 hex digits of the email's hash).
    pub group: String,
    pub email: String,
    pub decision: LastingDecision,
    pub at: DateTime<Utc>,
    /// The decisions file it came from, as given, and the line that decided it.
    pub file: std::path::PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Set when a later decisions file revoked it (`revoke` on a row of the group): kept,
    /// so the journal shows what was decided and undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

impl GroupDecision {
    /// In force: recorded and not revoked.
    pub fn holds(&self) -> bool {
        self.revoked.is_none()
    }
}

/// The decisions that last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastingDecision {
    /// `not-dup`: the group is not a duplicate.
    NotDup,
    /// Every row `skip` (or a `keep` alone): nothing of the group merges.
    Skip,
}

impl LastingDecision {
    pub fn word(self) -> &'static str {
        match self {
            LastingDecision::NotDup => "not-dup",
            LastingDecision::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: DateTime<Utc>,
    pub file: std::path::PathBuf,
}

/// Which DevRev a savepoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The org's id (DON) as `auth-tokens.info` names it.
    pub org: String,
    pub base_url: String,
}

impl SavepointFile {
    pub fn new() -> Self {
        let now = Utc::now();
        Self {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: now,
            updated_at: now,
            pairs: BTreeMap::new(),
            owner: None,
            decisions: BTreeMap::new(),
        }
    }
}

impl Default for SavepointFile {
    fn default() -> Self {
        Self::new()
    }
}

/// The first line of a version-2 journal. It is written only when the whole file is (re)written
/// atomically, so it is never torn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    pub version: u32,
    pub tool_version: String,
    pub created_at: DateTime<Utc>,
    /// Which DevRev the journal belongs to ([`SavepointFile::owner`]); set once, by a rewrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Every line after the header: one change, read back in order (the last line of a pair wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalLine {
    /// The whole record of a pair after the change (never a partial one, so any single line is
    /// enough to know where the pair stands).
    Pair(Box<PairRecord>),
    /// The pair's record was dropped.
    Removed(String),
    /// A lasting group decision, whole (the last line of a group wins).
    Decision(Box<GroupDecision>),
}

/// [`JournalLine`] by reference, for writing without copying records (same serialized form).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalLineRef<'a> {
    Pair(&'a PairRecord),
    Removed(&'a str),
    Decision(&'a GroupDecision),
}

/// The steps of one pair, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Validate,
    Backup,
    VerifyBackup,
    RequestMerge,
    AwaitMerge,
    Reconcile,
    AdoptExternalRef,
    /// The secondary's phone numbers, custom fields and name the survivor lacked (issue 18).
    CarryOver,
    Done,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Validate => "validate",
            Step::Backup => "backup",
            Step::VerifyBackup => "verify_backup",
            Step::RequestMerge => "request_merge",
            Step::AwaitMerge => "await_merge",
            Step::Reconcile => "reconcile",
            Step::AdoptExternalRef => "adopt_external_ref",
            Step::CarryOver => "carry_over",
            Step::Done => "done",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a pair was left alone. Every reason but `AlreadyMerged` needs a person to look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// DevRev has no such contact any more (404).
    ContactMissing { role: Role },
    /// The contact exists but is not active (deactivated, deleted, locked, shadow, ...).
    NotActive { role: Role, state: String },
    /// The live email no longer matches the pair's email.
    EmailChanged { role: Role, email: String },
    /// The live external_ref differs from the export's (e.g. a `user_` ref that became a
    /// `-drop-` ref counts as `MergedElsewhere`; any other change lands here).
    RefChanged {
        role: Role,
        csv: String,
        live: Option<String>,
    },
    /// The secondary already points at the primary (`primary_identity`): nothing to do.
    AlreadyMerged,
    /// The contact already shows a merge: `primary_identity` pointing elsewhere, or a
    /// `-drop-` external_ref.
    MergedElsewhere { role: Role, evidence: String },
    /// DevRev refuses to merge an unverified contact into a verified one.
    UnverifiedIntoVerified,
    /// The contacts are in different accounts (`rev_org`): a different customer.
    DifferentAccounts { primary: String, secondary: String },
    /// DevRev's answer for the contact lacks fields the merge's decisions need
    /// (`is_verified`, `custom_fields`, `tags`): unknown, never read as empty. The pair is
    /// checked again on the next run.
    FieldsUnknown { role: Role, fields: Vec<String> },
    /// The pair left the CSV before its merge was requested; the journal alone cannot
    /// re-validate it.
    NotInCsv,
    /// One of the pair's contacts is already part of another journaled record that merged,
    /// may have merged, or was restored: a contact is merged away at most once, whatever the
    /// CSV says (the ledger, `ledger.rs`).
    HeldByLedger {
        /// The shared contact's DON.
        contact: String,
        /// The other record's key (`primary <- secondary`).
        other: String,
        hold: Hold,
    },
}

/// Why a journaled record keeps a contact out of any other merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// The other record merged this contact away (or DevRev showed it merged into its primary).
    MergedAway,
    /// The other record's merge may have been sent and is not finished (in flight, or its
    /// outcome unknown): finished first, never raced by a second merge.
    InFlight,
    /// This contact survived the other record's merge; its duplicate is gone.
    Survivor,
    /// The other record was undone by `--restore`: its contacts are decided "do not merge".
    Restored,
    /// `--restore` recreated this contact for the other record's merged-away one.
    Recreated,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hold::MergedAway => "it was merged away by",
            Hold::InFlight => "its merge is not finished in",
            Hold::Survivor => "it survived the merge",
            Hold::Restored => "the merge was undone by --restore in",
            Hold::Recreated => "--restore recreated it for",
        })
    }
}

impl SkipReason {
    /// A stable short name for counting ("skipped by reason").
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::ContactMissing { .. } => "contact_missing",
            SkipReason::NotActive { .. } => "not_active",
            SkipReason::EmailChanged { .. } => "email_changed",
            SkipReason::RefChanged { .. } => "ref_changed",
            SkipReason::AlreadyMerged => "already_merged",
            SkipReason::MergedElsewhere { .. } => "merged_elsewhere",
            SkipReason::UnverifiedIntoVerified => "unverified_into_verified",
            SkipReason::DifferentAccounts { .. } => "different_accounts",
            SkipReason::FieldsUnknown { .. } => "fields_unknown",
            SkipReason::NotInCsv => "not_in_csv",
            SkipReason::HeldByLedger { .. } => "held_by_another_record",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ContactMissing { role } => {
                write!(f, "the {role} contact no longer exists in DevRev")
            }
            SkipReason::NotActive { role, state } => {
                write!(f, "the {role} contact is {state}, not active")
            }
            SkipReason::EmailChanged { role, email } => {
                write!(
                    f,
                    "the {role} contact's email is now {email:?}, not the pair's email"
                )
            }
            SkipReason::RefChanged { role, csv, live } => write!(
                f,
                "the {role} contact's external_ref is now {:?}, the export says {csv:?}",
                live.as_deref().unwrap_or("")
            ),
            SkipReason::AlreadyMerged => {
                f.write_str("the secondary is already merged into the primary")
            }
            SkipReason::MergedElsewhere { role, evidence } => {
                write!(f, "the {role} contact already shows as merged: {evidence}")
            }
            SkipReason::UnverifiedIntoVerified => f.write_str(
                "DevRev refuses to merge an unverified contact into a verified one (is_verified)",
            ),
            SkipReason::DifferentAccounts { primary, secondary } => write!(
                f,
                "the contacts are in different accounts (rev_org {primary} and {secondary}): a \
                 different customer, not a duplicate; never merged"
            ),
            SkipReason::FieldsUnknown { role, fields } => {
                f.write_str(&crate::validate::fields_unknown_text(*role, fields))
            }
            SkipReason::NotInCsv => f.write_str("the pair is no longer in the CSV"),
            SkipReason::HeldByLedger {
                contact,
                other,
                hold,
            } => write!(
                f,
                "{} is in another record of the savepoint: {hold} {other}; a contact is merged \
                 at most once (see docs/commands.md, \"One merge per contact\")",
                crate::detect::display_id(contact)
            ),
        }
    }
}

/// A failure of one pair, with what DevRev said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairError {
    pub step: Step,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// DevRev's error `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// DevRev's `reference_id`, for its support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
}

impl PairError {
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        Self {
            step,
            message: message.into(),
            status: None,
            kind: None,
            reference_id: None,
        }
    }
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.message)
    }
}

/// The evidence that DevRev applied a merge (`devrev-api.md` §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MergedSign {
    /// `rev-users.get(secondary)` answers 404.
    NotFound,
    /// It answers 301 (the object moved).
    Moved,
    /// Its state is no longer active.
    NotActive { state: String },
    /// It carries `primary_identity`.
    PrimaryIdentity { id: String },
    /// Its external_ref was rewritten with a `-drop-` suffix.
    DropRef { external_ref: String },
    /// `rev-users.get(secondary)` answers the primary's record (its id resolved to the
    /// survivor).
    AnswersAsPrimary,
    /// `rev-users.list` by its external_ref no longer answers it, while the same answer holds
    /// the primary under its own (a look that reads the survivor too): DevRev removed it, or
    /// rewrote its ref, as a merge does.
    Unlisted,
}

impl fmt::Display for MergedSign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergedSign::NotFound => f.write_str("secondary answers 404"),
            MergedSign::Moved => f.write_str("secondary answers 301"),
            MergedSign::NotActive { state } => write!(f, "secondary is {state}"),
            MergedSign::PrimaryIdentity { id } => write!(f, "secondary's primary_identity is {id}"),
            MergedSign::DropRef { external_ref } => {
                write!(f, "secondary's external_ref is {external_ref}")
            }
            MergedSign::AnswersAsPrimary => {
                f.write_str("secondary's id answers with the primary's record")
            }
            MergedSign::Unlisted => {
                f.write_str("secondary no longer listed under its external_ref")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A record that uses every part of the format.
    fn full_record() -> PairRecord {
        let mut r = PairRecord::new("a@example.com", "don:P", "don:S", Keep::Revu);
        r.status = PairStatus::Merged;
        r.last_step = Some(Step::AdoptExternalRef);
        r.updated_at = at("2026-01-02T03:04:05Z");
        r.error = Some(PairError {
            step: Step::Reconcile,
            message: "boom".into(),
            status: Some(404),
            kind: Some("not_found".into()),
            reference_id: Some("ref-1".into()),
        });
        r.skip = Some(SkipReason::RefChanged {
            role: Role::Secondary,
            csv: "user_1".into(),
            live: None,
        });
        r.primary_display_name = Some("Ann".into());
        r.secondary_external_ref = Some("user_1".into());
        r.backup = Some(BackupSummary {
            dir: PathBuf::from("backups/x"),
            tickets: 2,
            timeline_entries: 3,
            attachments: 1,
            conversations: 4,
            bytes: 99,
            warnings: vec!["w".into()],
            ticket_counts_differ: Vec::new(),
            timelines_reused: 0,
            attachments_reused: 0,
        });
        r.earlier_merges = vec![MergeIntent {
            attempt: 1,
            requested_at: at("2026-01-02T03:00:00Z"),
            outcome: Some(MergeOutcome::NotApplied {
                checked_at: at("2026-01-02T03:02:00Z"),
            }),
            unmerged_since: None,
            watch_until: None,
        }];
        r.merge = Some(MergeIntent {
            attempt: 2,
            requested_at: at("2026-01-02T03:03:00Z"),
            outcome: Some(MergeOutcome::Accepted {
                at: at("2026-01-02T03:03:01Z"),
            }),
            unmerged_since: None,
            watch_until: None,
        });
        r.merged = Some(MergeConfirmation {
            at: at("2026-01-02T03:03:03Z"),
            sign: MergedSign::PrimaryIdentity { id: "don:P".into() },
            destination_confirmed: false,
        });
        r.repairs = Repairs {
            tickets: vec!["don:t1".into()],
            conversations: vec!["don:c1".into()],
            display_name_restored: true,
            tickets_gone: vec!["don:t2".into()],
        };
        r.external_ref_adopted = Some("user_1".into());
        r.finished_at = Some(at("2026-01-02T03:04:05Z"));
        r
    }

    /// Pins the file format: if this test fails, the savepoint format changed. Either undo the
    /// change or bump [`VERSION`] and update the literal on purpose.
    #[test]
    fn the_serialized_format_is_pinned() {
        let mut file = SavepointFile::new();
        file.tool_version = "0.0.0".into();
        file.created_at = at("2026-01-02T03:00:00Z");
        file.updated_at = at("2026-01-02T03:04:05Z");
        file.pairs.insert(pair_key("don:P", "don:S"), full_record());
        let expected = json!({
            "version": 1,
            "tool_version": "0.0.0",
            "created_at": "2026-01-02T03:00:00Z",
            "updated_at": "2026-01-02T03:04:05Z",
            "pairs": {
                "don:P <- don:S": {
                    "email": "a@example.com",
                    "primary": "don:P",
                    "secondary": "don:S",
                    "keep": "revu",
                    "status": "merged",
                    "last_step": "adopt_external_ref",
                    "updated_at": "2026-01-02T03:04:05Z",
                    "skip": {"kind": "ref_changed", "role": "secondary", "csv": "user_1", "live": null},
                    "error": {
                        "step": "reconcile",
                        "message": "boom",
                        "status": 404,
                        "kind": "not_found",
                        "reference_id": "ref-1"
                    },
                    "primary_display_name": "Ann",
                    "secondary_external_ref": "user_1",
                    "backup": {
                        "dir": "backups/x",
                        "tickets": 2,
                        "timeline_entries": 3,
                        "attachments": 1,
                        "conversations": 4,
                        "bytes": 99,
                        "warnings": ["w"]
                    },
                    "merge": {
                        "attempt": 2,
                        "requested_at": "2026-01-02T03:03:00Z",
                        "outcome": {"kind": "accepted", "at": "2026-01-02T03:03:01Z"}
                    },
                    "earlier_merges": [{
                        "attempt": 1,
                        "requested_at": "2026-01-02T03:00:00Z",
                        "outcome": {"kind": "not_applied", "checked_at": "2026-01-02T03:02:00Z"}
                    }],
                    "merged": {
                        "at": "2026-01-02T03:03:03Z",
                        "sign": {"kind": "primary_identity", "id": "don:P"}
                    },
                    "repairs": {
                        "tickets": ["don:t1"],
                        "conversations": ["don:c1"],
                        "display_name_restored": true,
                        "tickets_gone": ["don:t2"]
                    },
                    "external_ref_adopted": "user_1",
                    "finished_at": "2026-01-02T03:04:05Z"
                }
            }
        });
        assert_eq!(VERSION, 4, "a new version needs a new literal below");
        let mut got = serde_json::to_value(&file).unwrap();
        assert_eq!(
            got["version"], VERSION,
            "a new file carries this build's version"
        );
        got["version"] = json!(LEGACY_VERSION);
        assert_eq!(got, expected, "the legacy whole-document layout");
        // Version 2 stores the same record, one per line.
        let line = serde_json::to_value(JournalLineRef::Pair(&full_record())).unwrap();
        assert_eq!(line, json!({"pair": expected["pairs"]["don:P <- don:S"]}));
        assert_eq!(
            serde_json::to_value(JournalLineRef::Removed("don:P <- don:S")).unwrap(),
            json!({"removed": "don:P <- don:S"})
        );
        let header = JournalHeader {
            version: VERSION,
            tool_version: "0.0.0".into(),
            created_at: at("2026-01-02T03:00:00Z"),
            owner: None,
        };
        assert_eq!(
            serde_json::to_value(&header).unwrap(),
            json!({"version": 4, "tool_version": "0.0.0", "created_at": "2026-01-02T03:00:00Z"})
        );
        let owned = JournalHeader {
            owner: Some(Owner {
                org: "don:identity:dvrv-us-1:devo/1".into(),
                base_url: "https://api.devrev.ai".into(),
            }),
            ..header
        };
        assert_eq!(
            serde_json::to_value(&owned).unwrap(),
            json!({"version": 4, "tool_version": "0.0.0", "created_at": "2026-01-02T03:00:00Z",
                   "owner": {"org": "don:identity:dvrv-us-1:devo/1", "base_url": "https://api.devrev.ai"}})
        );
        let owned: JournalLine = serde_json::from_value(line).unwrap();
        assert_eq!(owned, JournalLine::Pair(Box::new(full_record())));
        file.version = LEGACY_VERSION;
        let back: SavepointFile = serde_json::from_value(expected).unwrap();
        assert_eq!(back, file);
    }

    /// A version-1 journal as an early build wrote it (an in-flight pair with only the
    /// fields that existed then, no optional ones, no `repairs`) still reads.
    #[test]
    fn an_older_version_1_file_still_parses() {
        let old = r#"{
            "version": 1,
            "tool_version": "0.1.0",
            "created_at": "2025-06-01T10:00:00.123456Z",
            "updated_at": "2025-06-01T10:05:00Z",
            "pairs": {
                "don:P <- don:S": {
                    "email": "a@example.com",
                    "primary": "don:P",
                    "secondary": "don:S",
                    "keep": "user",
                    "status": "in_progress",
                    "last_step": "verify_backup",
                    "updated_at": "2025-06-01T10:05:00Z",
                    "merge": {"attempt": 1, "requested_at": "2025-06-01T10:04:59Z", "outcome": null}
                }
            }
        }"#;
        let f: SavepointFile = serde_json::from_str(old).unwrap();
        assert_eq!(f.version, LEGACY_VERSION);
        let r = &f.pairs["don:P <- don:S"];
        assert_eq!(r.keep, Keep::User);
        assert_eq!(r.status, PairStatus::InProgress);
        assert_eq!(r.last_step, Some(Step::VerifyBackup));
        assert_eq!(r.repairs, Repairs::default());
        assert!(r.earlier_merges.is_empty() && r.backup.is_none() && r.merged.is_none());
        assert!(
            r.merge_in_flight(),
            "an intent without an outcome is in flight"
        );
    }

    #[test]
    fn in_flight_means_a_merge_may_have_been_sent() {
        let mut r = PairRecord::new("a@example.com", "don:P", "don:S", Keep::Revu);
        assert!(!r.merge_in_flight());
        r.merge = Some(MergeIntent {
            attempt: 1,
            requested_at: Utc::now(),
            outcome: None,
            unmerged_since: None,
            watch_until: None,
        });
        assert!(r.merge_in_flight(), "intent without outcome");
        r.merge.as_mut().unwrap().outcome = Some(MergeOutcome::NotSent {
            reason: "refused".into(),
        });
        assert!(!r.merge_in_flight());
        r.merge.as_mut().unwrap().outcome = Some(MergeOutcome::Accepted { at: Utc::now() });
        assert!(r.merge_in_flight());
    }

    #[test]
    fn version_3_adds_restored_records_and_ledger_holds() {
        let mut r = PairRecord::new("a@x.com", "don:P", "don:S", Keep::Revu);
        r.status = PairStatus::Restored;
        r.updated_at = at("2026-01-02T03:00:00Z");
        r.restored = Some(Restored {
            at: at("2026-01-02T03:05:00Z"),
            new_contact: "don:S2".into(),
            restore_journal: PathBuf::from("restore-savepoint.json"),
            report: Some(PathBuf::from("reports/restore-report-1.json")),
        });
        r.skip = Some(SkipReason::HeldByLedger {
            contact: "don:S".into(),
            other: "don:Q <- don:S".into(),
            hold: Hold::MergedAway,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "restored");
        assert_eq!(
            v["restored"],
            json!({"at": "2026-01-02T03:05:00Z", "new_contact": "don:S2",
                   "restore_journal": "restore-savepoint.json",
                   "report": "reports/restore-report-1.json"})
        );
        assert_eq!(
            v["skip"],
            json!({"kind": "held_by_ledger", "contact": "don:S", "other": "don:Q <- don:S",
                   "hold": "merged_away"})
        );
        let back: PairRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(PairStatus::Restored.is_final());
    }

    /// Pins the shapes version 4 added: a group record's link and a decision line.
    #[test]
    fn version_4_adds_group_links_and_decision_lines() {
        let mut r = PairRecord::new("a@x.com", "don:K", "don:M", Keep::Revu);
        r.updated_at = at("2026-01-02T03:00:00Z");
        r.group = Some(GroupLink {
            id: "G-0123456789".into(),
            index: 2,
            len: 3,
            adopt: Some(AdoptRef {
                external_ref: "user_1".into(),
                holder: "don:M1".into(),
            }),
            decisions: PathBuf::from("decided.csv"),
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["group"],
            json!({"id": "G-0123456789", "index": 2, "len": 3,
                   "adopt": {"external_ref": "user_1", "holder": "don:M1"},
                   "decisions": "decided.csv"})
        );
        assert!(r.adopts());
        assert_eq!(r.ref_to_adopt(), Some(("user_1".into(), "don:M1".into())));
        let back: PairRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        // A group's earlier merge adopts nothing, whatever its --keep.
        r.group.as_mut().unwrap().adopt = None;
        assert!(!r.adopts());

        let d = GroupDecision {
            group: "G-0123456789".into(),
            email: "a@x.com".into(),
            decision: LastingDecision::NotDup,
            at: at("2026-01-02T03:05:00Z"),
            file: PathBuf::from("decided.csv"),
            line: Some(4),
            revoked: Some(Revocation {
                at: at("2026-01-03T00:00:00Z"),
                file: PathBuf::from("later.csv"),
            }),
        };
        let line = serde_json::to_value(JournalLineRef::Decision(&d)).unwrap();
        assert_eq!(
            line,
            json!({"decision": {"group": "G-0123456789", "email": "a@x.com",
                   "decision": "not_dup", "at": "2026-01-02T03:05:00Z",
                   "file": "decided.csv", "line": 4,
                   "revoked": {"at": "2026-01-03T00:00:00Z", "file": "later.csv"}}})
        );
        let back: JournalLine = serde_json::from_value(line).unwrap();
        assert_eq!(back, JournalLine::Decision(Box::new(d)));
    }
}
