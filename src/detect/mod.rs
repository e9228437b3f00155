//! CSV → contacts → groups by normalized email → `Plan { pairs, needs_review, ... }`.
//!
//! The export can hold millions of rows, and most of them are single contacts that can never
//! be part of a merge, so the file is read in two streaming passes instead of being loaded:
//!
//! 1. Every row is validated (all problems collected, not just the first) and reduced to a
//!    32-byte summary: hashes of its email and id, its ref class, and where it starts in the
//!    file. No text is kept. The summaries are then sorted by email hash (radix sort), which
//!    puts each email's rows next to each other.
//! 2. Only the rows whose email (hash) occurs more than once, whose id (hash) occurs more than
//!    once, or that have no email are read again, skipping everything else unparsed, and
//!    become full [`Contact`]s, directly in their final place in the plan.
//!
//! Both passes parse on a helper thread while the calling thread does the rest.
//! Hashes only decide what to re-read; every decision is then made on the real text, so a
//! hash collision can cost a little work but never change the plan. The result is sorted, so
//! it does not depend on the order of the rows.

//!
//! Layout: this file holds the public API and the plan's types; `rows` reads the header and
//! validates rows, `scan` is the speed code (the two passes and the slots between them),
//! `classify` decides what the passes could not settle from hashes alone.

mod classify;
mod rows;
mod scan;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::csvrec::{RawReader, RawRecord};
use crate::error::AppError;
use crate::options::Keep;

pub use rows::MAX_PROBLEMS;
use rows::{Col, read_err, read_header};

/// One row of the contacts export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// 1-based line number in the CSV where the row starts (for messages).
    pub line: u64,
    pub rev_user_id: String,
    pub display_name: String,
    /// The email as written in the export (trimmed); see [`normalize_email`] for grouping.
    pub email: String,
    pub external_ref: String,
    pub full_name: String,
    pub created_at: String,
    pub updated_at: String,
    /// `None` when the export left it empty (unknown).
    pub ticket_count: Option<u64>,
}

impl Contact {
    /// The class of this contact's `external_ref`.
    pub fn ref_class(&self) -> RefClass {
        classify_ref(&self.external_ref)
    }

    /// The display id (`REVU-<id>`) for people, derived from the DON in `REV_USER_ID`.
    pub fn display_id(&self) -> String {
        display_id(&self.rev_user_id)
    }

    /// The email as it is compared: trimmed and lower-cased.
    pub fn normalized_email(&self) -> String {
        normalize_email(&self.email)
    }

    /// A sort key that ignores the line number, so the plan is the same whatever the order
    /// of the rows.
    fn order_key(&self) -> impl Ord + '_ {
        (
            self.ref_class(),
            self.rev_user_id.as_str(),
            self.external_ref.as_str(),
            self.email.as_str(),
            self.display_name.as_str(),
            self.full_name.as_str(),
            self.created_at.as_str(),
            self.updated_at.as_str(),
            self.ticket_count,
            self.line,
        )
    }
}

/// The class of an `external_ref` (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefClass {
    /// `REVU-<id>`: DevRev's default.
    Revu,
    /// `user_<id>`: the customer app's id.
    User,
    /// `user_...-drop-...`: left over from an earlier merge; never treated as `user_`.
    Drop,
    /// Anything else (an email, empty, ...).
    Other,
}

impl RefClass {
    pub fn label(self) -> &'static str {
        match self {
            RefClass::Revu => "REVU-",
            RefClass::User => "user_",
            RefClass::Drop => "-drop-",
            RefClass::Other => "other",
        }
    }
}

/// A clean duplicate: one `REVU-` and one `user_` contact with the same normalized email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Normalized (trimmed, lower-cased) email.
    pub email: String,
    /// The contact that survives.
    pub primary: Contact,
    /// The contact merged into the primary.
    pub secondary: Contact,
}

impl Pair {
    /// The same two contacts with the other one kept (`--keep auto` turning a pair).
    pub fn swapped(&self) -> Pair {
        Pair {
            email: self.email.clone(),
            primary: self.secondary.clone(),
            secondary: self.primary.clone(),
        }
    }

    /// Both contacts' CSV ticket counts added up; `None` if either is unknown. Saturates:
    /// two counts near `u64::MAX` must not wrap into a small number.
    pub fn csv_tickets(&self) -> Option<u64> {
        Some(
            self.primary
                .ticket_count?
                .saturating_add(self.secondary.ticket_count?),
        )
    }
}

/// Why a group of contacts is not merged automatically. One reason per group: the first
/// that applies in the order below (a duplicate id outranks everything else, because no
/// other statement about such a group can be trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// The same `REV_USER_ID` is on two or more rows of the export.
    DuplicateId,
    /// A row's ref is a `-drop-` leftover of an earlier merge.
    DropRef,
    /// A row's ref is neither `REVU-` nor `user_` (an email, empty, ...).
    OtherRef,
    /// Two or more `REVU-` rows.
    SeveralRevu,
    /// One `REVU-` row and two or more `user_` rows: which one is the duplicate?
    RevuWithSeveralUser,
    /// Two or more `user_` rows and no `REVU-` row.
    SeveralUser,
    /// `--check-live`: a contact no longer exists in DevRev.
    LiveNotFound,
    /// `--check-live`: a contact is not active (deactivated, deleted, locked, ...).
    LiveNotActive,
    /// `--check-live`: a contact already shows as merged (`primary_identity` or a `-drop-` ref).
    LiveAlreadyMerged,
    /// `--check-live`: a contact's email in DevRev no longer matches the export.
    LiveEmailChanged,
    /// `--check-live`: a contact's external_ref in DevRev differs from the export.
    LiveRefChanged,
    /// `--check-live`: the secondary is unverified and the primary verified; DevRev refuses.
    LiveUnverifiedIntoVerified,
    /// `--check-live`: the contacts are in different accounts (`rev_org`).
    LiveDifferentAccounts,
    /// `--check-live`: DevRev's answer lacks `is_verified`, `custom_fields` or `tags`
    /// (answered by the public schema): unknown, so the pair cannot be judged.
    LiveFieldsUnknown,
    /// `--check-live`: the check itself failed (an API error after retries).
    LiveCheckFailed,
}

impl ReviewReason {
    /// Short human text for tables and the summary.
    pub fn describe(self) -> &'static str {
        match self {
            ReviewReason::DuplicateId => "same REV_USER_ID on several rows",
            ReviewReason::DropRef => "a -drop- ref (left over from an earlier merge)",
            ReviewReason::OtherRef => "a ref that is neither REVU- nor user_",
            ReviewReason::SeveralRevu => "several REVU- rows",
            ReviewReason::RevuWithSeveralUser => "one REVU- and several user_ rows",
            ReviewReason::SeveralUser => "several user_ rows, no REVU-",
            ReviewReason::LiveNotFound => "live: contact not found",
            ReviewReason::LiveNotActive => "live: contact not active",
            ReviewReason::LiveAlreadyMerged => "live: already merged",
            ReviewReason::LiveEmailChanged => "live: email changed",
            ReviewReason::LiveRefChanged => "live: external_ref changed",
            ReviewReason::LiveUnverifiedIntoVerified => "live: unverified into verified",
            ReviewReason::LiveDifferentAccounts => "live: different accounts",
            ReviewReason::LiveFieldsUnknown => "live: fields unknown (public-schema answer)",
            ReviewReason::LiveCheckFailed => "live: check failed (API error)",
        }
    }
}

/// A group of rows sharing one normalized email that is not a clean pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewGroup {
    /// Normalized email.
    pub email: String,
    pub reason: ReviewReason,
    /// The reason in words, with the specifics (counts, the duplicated id, ...).
    pub detail: String,
    pub contacts: Vec<Contact>,
}

/// Emails with a single row, counted by the row's ref class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Singles {
    pub revu: u64,
    pub user: u64,
    pub drop: u64,
    pub other: u64,
}

impl Singles {
    pub fn total(&self) -> u64 {
        self.revu + self.user + self.drop + self.other
    }

    fn add(&mut self, class: RefClass) {
        match class {
            RefClass::Revu => self.revu += 1,
            RefClass::User => self.user += 1,
            RefClass::Drop => self.drop += 1,
            RefClass::Other => self.other += 1,
        }
    }
}

/// Options that shape the plan.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub keep: Keep,
    /// Only emails in this domain (lower-case, no `@`); `None` keeps all.
    pub email_domain: Option<String>,
}

/// What detection found. Every data row is in exactly one bucket: a pair (two rows), a
/// needs-review group, `no_email`, a single, or outside `--email-domain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The CSV the plan was built from, as given.
    pub source: String,
    pub keep: Keep,
    pub email_domain: Option<String>,
    /// Data rows in the file (the header not counted).
    pub rows_read: u64,
    /// Distinct normalized emails considered.
    pub emails: u64,
    /// Rows skipped because their email is outside `--email-domain` (or they have none).
    pub outside_domain: u64,
    pub singles: Singles,
    pub pairs: Vec<Pair>,
    pub needs_review: Vec<ReviewGroup>,
    /// Rows without an email: never paired, listed for a person to look at.
    pub no_email: Vec<Contact>,
}

impl Plan {
    /// Needs-review groups counted by reason.
    pub fn review_counts(&self) -> BTreeMap<ReviewReason, u64> {
        let mut m = BTreeMap::new();
        for g in &self.needs_review {
            *m.entry(g.reason).or_insert(0) += 1;
        }
        m
    }

    /// Rows inside needs-review groups.
    pub fn review_rows(&self) -> u64 {
        self.needs_review
            .iter()
            .map(|g| g.contacts.len() as u64)
            .sum()
    }

    /// Moves a pair to needs-review (used by `--check-live`), keeping both lists sorted.
    pub fn move_pair_to_review(&mut self, index: usize, reason: ReviewReason, detail: String) {
        let pair = self.pairs.remove(index);
        let mut contacts = vec![pair.primary, pair.secondary];
        contacts.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let group = ReviewGroup {
            email: pair.email,
            reason,
            detail,
            contacts,
        };
        let at = self.needs_review.partition_point(|g| {
            (g.email.as_str(), g.reason) < (group.email.as_str(), group.reason)
        });
        self.needs_review.insert(at, group);
    }
}

// ---- normalization and classes ----------------------------------------------------------

/// The email as it is compared: surrounding whitespace removed, lower-cased.
pub fn normalize_email(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    normalize_email_into(raw, &mut s);
    s
}

/// [`normalize_email`] into a reused buffer (the hot loop reads millions of rows).
pub(crate) fn normalize_email_into(raw: &str, out: &mut String) {
    out.clear();
    let t = trim(raw);
    if t.is_ascii() {
        out.push_str(t);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&t.to_lowercase());
    }
}

/// Classifies an `external_ref` (DESIGN §5). Refs are case-sensitive ids: `revu-x` is not
/// `REVU-x`. Anything carrying `-drop-` is a leftover of an earlier merge, whatever its
/// prefix, and must never be mistaken for a live `user_` ref.
pub fn classify_ref(raw: &str) -> RefClass {
    let r = trim(raw);
    if r.contains("-drop-") {
        RefClass::Drop
    } else if r.len() > "REVU-".len() && r.starts_with("REVU-") {
        RefClass::Revu
    } else if r.len() > "user_".len() && r.starts_with("user_") {
        RefClass::User
    } else {
        RefClass::Other
    }
}

/// The human display id of a contact: `REVU-<id>` for a DON, else the id as given.
pub fn display_id(rev_user_id: &str) -> String {
    let mut out = String::with_capacity(rev_user_id.len());
    push_display_id(rev_user_id, &mut out);
    out
}

/// [`display_id`] appended to `out`: for writers of a row per contact, which reuse one buffer.
pub fn push_display_id(rev_user_id: &str, out: &mut String) {
    match rev_user_id.rsplit_once(":revu/") {
        Some((_, id)) if !id.is_empty() => {
            out.push_str("REVU-");
            out.push_str(id);
        }
        _ => out.push_str(rev_user_id),
    }
}

/// `str::trim`, with a shortcut for the usual field that starts and ends with a visible ASCII
/// character (the full Unicode check costs more than everything else done per field).
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => s,
        (None, _) | (_, None) => s,
        _ => s.trim(),
    }
}

/// Whether `email` (normalized) belongs to `domain` (lower-case, no `@`).
pub fn in_domain(email: &str, domain: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(_, d)| d == domain)
}

/// Reads the CSV at `path` and builds the plan.
pub fn plan_from_csv(path: &Path, opts: &DetectOptions) -> Result<Plan, AppError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                ". Export the contacts from a warehouse, or build the file from DevRev with: \
                 devrev-merge --export-contacts {name}"
            )
        } else {
            String::new()
        };
        AppError::Data(format!("cannot open the contacts CSV {name}: {e}{hint}"))
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(AppError::Data(format!(
            "{name} is a folder, not a CSV file"
        )));
    }
    plan_from_reader(&name, file, opts)
}

/// Builds the plan from any seekable source (`name` is used in messages).
pub fn plan_from_reader<R: Read + Seek + Send>(
    name: &str,
    mut src: R,
    opts: &DetectOptions,
) -> Result<Plan, AppError> {
    let started = std::time::Instant::now();
    let domain = opts
        .email_domain
        .as_deref()
        .map(|d| d.trim().trim_start_matches('@').to_lowercase())
        .filter(|d| !d.is_empty());

    // Real exports run at about 170 bytes per row: sizing the summaries up front saves
    // growing them a dozen times.
    // The file is read twice, so it must be seekable (a pipe is not).
    let len = src
        .seek(std::io::SeekFrom::End(0))
        .and_then(|n| src.rewind().map(|()| n))
        .map_err(|e| {
            AppError::Data(format!(
                "{name}: cannot be read twice ({e}); save the export to a file and pass that file"
            ))
        })?;
    let expected_rows = usize::try_from(len / 170).unwrap_or(0).min(1 << 26);

    let first = scan::pass1(&mut src, name, domain.as_deref(), expected_rows)?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        rows_read = first.rows_read,
        "pass 1 done"
    );
    let dup_id_hashes = scan::duplicate_id_hashes(&first.rows, &first.no_email_rows);
    let (slots, tally) =
        scan::assign_slots(first.rows, first.no_email_rows, &dup_id_hashes, opts.keep);
    let read = scan::pass2(
        &mut src,
        name,
        &first.layout,
        &first.header,
        slots,
        opts.keep,
    )?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "pass 2 done");
    let done = classify::classify(read, &dup_id_hashes, tally, opts.keep);

    Ok(Plan {
        source: name.to_string(),
        keep: opts.keep,
        email_domain: domain,
        rows_read: first.rows_read,
        emails: done.emails,
        outside_domain: first.outside_domain,
        singles: done.singles,
        pairs: done.pairs,
        needs_review: done.needs_review,
        no_email: done.no_email,
    })
}

/// The original records of an export, for writing them back verbatim (`--create-test-sample`).
#[derive(Debug)]
pub(crate) struct OriginalRows {
    pub header: RawRecord,
    /// Records starting on the requested lines, in file order.
    pub rows: Vec<RawRecord>,
    /// Index of the REV_USER_ID column.
    pub id_column: usize,
}

/// Re-reads the records that start on `lines` (lines as in [`Contact::line`]).
pub(crate) fn original_rows(path: &Path, lines: &HashSet<u64>) -> Result<OriginalRows, AppError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| AppError::Data(format!("cannot open {name}: {e}")))?;
    let mut rdr = RawReader::new(file);
    let (layout, header) = read_header(&mut rdr, &name)?;
    let mut rows = Vec::with_capacity(lines.len());
    let mut rec = RawRecord::default();
    while rows.len() < lines.len() && rdr.read(&mut rec).map_err(read_err(&name))? {
        if lines.contains(&rec.line) {
            rows.push(rec.clone());
        }
    }
    Ok(OriginalRows {
        header,
        rows,
        id_column: layout.idx[Col::RevUserId as usize].unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;
