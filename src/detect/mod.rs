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

use crate::cli::Keep;
use crate::csvrec::{RawReader, RawRecord};
use crate::error::AppError;

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
    /// Both contacts' CSV ticket counts added up; `None` if either is unknown.
    pub fn csv_tickets(&self) -> Option<u64> {
        Some(self.primary.ticket_count? + self.secondary.ticket_count?)
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
    match rev_user_id.rsplit_once(":revu/") {
        Some((_, id)) if !id.is_empty() => format!("REVU-{id}"),
        _ => rev_user_id.to_string(),
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
fn in_domain(email: &str, domain: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(_, d)| d == domain)
}

/// Reads the CSV at `path` and builds the plan.
pub fn plan_from_csv(path: &Path, opts: &DetectOptions) -> Result<Plan, AppError> {
    let name = path.display().to_string();
    let file = File::open(path)
        .map_err(|e| AppError::Data(format!("cannot open the contacts CSV {name}: {e}")))?;
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
mod tests {
    use super::scan::{hash64, radix_sort, sort_pairs_by_email};
    use super::*;
    use std::io::Cursor;

    thread_local! {
        /// When set, email and id hashes are taken modulo these numbers, so they collide
        /// (see `hash_collisions_change_nothing`).
        pub(super) static COLLIDE: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
    }

    const HEADER: &str = "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT\n";

    fn opts() -> DetectOptions {
        DetectOptions {
            keep: Keep::Revu,
            email_domain: None,
        }
    }

    fn plan(csv: &str) -> Result<Plan, AppError> {
        plan_from_reader("t.csv", Cursor::new(csv.as_bytes().to_vec()), &opts())
    }

    fn row(id: &str, email: &str, r: &str, tickets: &str) -> String {
        format!(
            "don:identity:dvrv-us-1:devo/o:revu/{id},Name {id},{email},{r},,2024-12-03 15:16:07.123,2024-12-03 15:16:07.123,{tickets}\n"
        )
    }

    #[test]
    fn normalization_trims_and_lowercases() {
        assert_eq!(
            normalize_email("  Jane.Doe@Example.COM \t"),
            "jane.doe@example.com"
        );
        assert_eq!(normalize_email("ÉLODIE@EXAMPLE.FR"), "élodie@example.fr");
        assert_eq!(normalize_email(""), "");
        assert_eq!(normalize_email("   "), "");
    }

    #[test]
    fn ref_classes() {
        assert_eq!(classify_ref("REVU-aB3dE5fG"), RefClass::Revu);
        assert_eq!(classify_ref(" user_2abc "), RefClass::User);
        assert_eq!(
            classify_ref("user_x-drop-don:identity:dvrv-us-1:devo/o:revu/y"),
            RefClass::Drop
        );
        assert_eq!(classify_ref("user_x-drop-a-drop-b"), RefClass::Drop);
        assert_eq!(
            classify_ref("revu-abc"),
            RefClass::Other,
            "ids are case-sensitive"
        );
        assert_eq!(classify_ref("USER_abc"), RefClass::Other);
        assert_eq!(classify_ref("REVU-"), RefClass::Other);
        assert_eq!(classify_ref("user_"), RefClass::Other);
        assert_eq!(classify_ref("jane@example.com"), RefClass::Other);
        assert_eq!(classify_ref(""), RefClass::Other);
    }

    #[test]
    fn display_ids_come_from_dons() {
        assert_eq!(
            display_id("don:identity:dvrv-us-1:devo/o:revu/aB3"),
            "REVU-aB3"
        );
        assert_eq!(display_id("REVU-aB3"), "REVU-aB3");
    }

    #[test]
    fn clean_pair_with_keep_revu_and_keep_user() {
        let csv = format!(
            "{HEADER}{}{}",
            row("u1", "Jane@X.com", "user_1", "3"),
            row("r1", " jane@x.com", "REVU-r1", "")
        );
        let p = plan(&csv).unwrap();
        assert_eq!(p.pairs.len(), 1);
        assert_eq!(p.pairs[0].email, "jane@x.com");
        assert_eq!(p.pairs[0].primary.external_ref, "REVU-r1");
        assert_eq!(p.pairs[0].secondary.external_ref, "user_1");
        assert_eq!(p.pairs[0].secondary.ticket_count, Some(3));
        assert_eq!(p.pairs[0].primary.ticket_count, None);
        assert_eq!(p.pairs[0].secondary.line, 2);
        let o = DetectOptions {
            keep: Keep::User,
            email_domain: None,
        };
        let p = plan_from_reader("t.csv", Cursor::new(csv.into_bytes()), &o).unwrap();
        assert_eq!(p.pairs[0].primary.external_ref, "user_1");
        assert_eq!(p.pairs[0].secondary.external_ref, "REVU-r1");
    }

    fn reason_of(rows: &[String]) -> ReviewReason {
        let csv = format!("{HEADER}{}", rows.concat());
        let p = plan(&csv).unwrap();
        assert!(p.pairs.is_empty(), "{:?}", p.pairs);
        assert_eq!(p.needs_review.len(), 1, "{:?}", p.needs_review);
        p.needs_review[0].reason
    }

    #[test]
    fn every_needs_review_reason() {
        let e = "a@x.com";
        assert_eq!(
            reason_of(&[row("u1", e, "user_1", "1"), row("u2", e, "user_2", "1")]),
            ReviewReason::SeveralUser
        );
        assert_eq!(
            reason_of(&[
                row("u1", e, "user_1", "1"),
                row("u2", e, "user_2", "1"),
                row("u3", e, "user_3", "")
            ]),
            ReviewReason::SeveralUser
        );
        assert_eq!(
            reason_of(&[row("r1", e, "REVU-r1", "1"), row("r2", e, "REVU-r2", "1")]),
            ReviewReason::SeveralRevu
        );
        assert_eq!(
            reason_of(&[
                row("r1", e, "REVU-r1", "1"),
                row("r2", e, "REVU-r2", "1"),
                row("u1", e, "user_1", "1")
            ]),
            ReviewReason::SeveralRevu
        );
        assert_eq!(
            reason_of(&[
                row("r1", e, "REVU-r1", "1"),
                row("u1", e, "user_1", "1"),
                row("u2", e, "user_2", "1")
            ]),
            ReviewReason::RevuWithSeveralUser
        );
        assert_eq!(
            reason_of(&[
                row("r1", e, "REVU-r1", "1"),
                row("u1", e, "user_1-drop-don:identity:x:revu/u1", "1")
            ]),
            ReviewReason::DropRef
        );
        assert_eq!(
            reason_of(&[
                row("r1", e, "REVU-r1", "1"),
                row("u1", e, "user_1", "1"),
                row("d1", e, "user_9-drop-x", "")
            ]),
            ReviewReason::DropRef
        );
        assert_eq!(
            reason_of(&[row("r1", e, "REVU-r1", "1"), row("o1", e, "a@x.com", "1")]),
            ReviewReason::OtherRef
        );
        // The same id twice in one group, even when the refs would make a pair.
        assert_eq!(
            reason_of(&[row("r1", e, "REVU-r1", "1"), row("r1", e, "user_1", "1")]),
            ReviewReason::DuplicateId
        );
        // The same id on a single row of another email: that row is flagged too.
        let csv = format!(
            "{HEADER}{}{}{}",
            row("r1", "a@x.com", "REVU-r1", ""),
            row("u1", "a@x.com", "user_1", ""),
            row("r1", "b@x.com", "user_2", "")
        );
        let p = plan(&csv).unwrap();
        assert!(p.pairs.is_empty());
        assert_eq!(p.needs_review.len(), 2);
        assert!(
            p.needs_review
                .iter()
                .all(|g| g.reason == ReviewReason::DuplicateId)
        );
        assert_eq!(p.needs_review[1].contacts.len(), 1);
        assert!(
            p.needs_review[0].detail.contains("revu/r1"),
            "{}",
            p.needs_review[0].detail
        );
    }

    #[test]
    fn singles_no_email_and_domain_filter() {
        let csv = format!(
            "{HEADER}{}{}{}{}{}{}",
            row("r1", "a@x.com", "REVU-r1", "1"),
            row("u1", "b@x.com", "user_1", "1"),
            row("d1", "c@x.com", "user_1-drop-y", "1"),
            row("o1", "d@y.com", "d@y.com", "1"),
            row("n1", "", "REVU-n1", "1"),
            row("n2", "  ", "user_2", "")
        );
        let p = plan(&csv).unwrap();
        assert_eq!(p.rows_read, 6);
        assert_eq!(p.emails, 4);
        assert_eq!(
            p.singles,
            Singles {
                revu: 1,
                user: 1,
                drop: 1,
                other: 1
            }
        );
        assert_eq!(p.no_email.len(), 2);
        assert!(p.pairs.is_empty() && p.needs_review.is_empty());
        let o = DetectOptions {
            keep: Keep::Revu,
            email_domain: Some("X.com".into()),
        };
        let p = plan_from_reader("t.csv", Cursor::new(csv.into_bytes()), &o).unwrap();
        assert_eq!(p.emails, 3);
        assert_eq!(
            p.outside_domain, 3,
            "d@y.com and the two rows without email"
        );
        assert_eq!(p.email_domain.as_deref(), Some("x.com"));
    }

    #[test]
    fn headers_any_case_any_order_extra_columns_bom_crlf_quotes() {
        let csv = "\u{feff}Ticket_Count,extra,email,External_Ref,rev_user_id\r\n\
                   2,\"x, \"\"quoted\"\"\nnewline\",A@x.com,REVU-1,id1\r\n\
                   ,z,a@x.com,user_1,id2\r\n";
        let p = plan(csv).unwrap();
        assert_eq!(p.pairs.len(), 1);
        assert_eq!(p.pairs[0].primary.rev_user_id, "id1");
        assert_eq!(p.pairs[0].primary.ticket_count, Some(2));
        assert_eq!(
            p.pairs[0].secondary.line, 4,
            "the quoted newline counts as a line"
        );
        assert_eq!(p.pairs[0].primary.display_name, "");
    }

    fn err(csv: &[u8]) -> String {
        let e = plan_from_reader("t.csv", Cursor::new(csv.to_vec()), &opts()).unwrap_err();
        assert_eq!(e.exit_code(), 65, "{e}");
        e.to_string()
    }

    #[test]
    fn malformed_files_are_data_errors_with_line_and_column() {
        assert!(err(b"").contains("no contacts"));
        assert!(err(HEADER.as_bytes()).contains("no contacts"));
        let m = err(b"REV_USER_ID,DISPLAY_NAME\nx,y\n");
        assert!(
            m.contains("missing required columns EMAIL, EXTERNAL_REF"),
            "{m}"
        );
        let m = err(format!("{HEADER}{}a,b\n", row("r1", "a@x.com", "REVU-1", "1")).as_bytes());
        assert!(m.contains("line 3, 2 fields but the header has 8"), "{m}");
        let m = err(format!("{HEADER}{}", row("r1", "a@x.com", "REVU-1", "many")).as_bytes());
        assert!(
            m.contains("line 2, column 8 (TICKET_COUNT): \"many\" is not a whole number"),
            "{m}"
        );
        let mut bad = format!("{HEADER}{}", row("r1", "a@x.com", "REVU-1", "1")).into_bytes();
        let at = HEADER.len() + bad[HEADER.len()..].iter().position(|b| *b == b'N').unwrap();
        bad[at] = 0xFF;
        let m = err(&bad);
        assert!(
            m.contains("line 2, column 2 (DISPLAY_NAME): not valid UTF-8"),
            "{m}"
        );
        let m = err(b"EMAIL,email,REV_USER_ID,EXTERNAL_REF\n");
        assert!(m.contains("column EMAIL appears twice"), "{m}");
        let m = err(format!("{HEADER},n,a@x.com,REVU-1,,,,1\n").as_bytes());
        assert!(m.contains("line 2, column 1 (REV_USER_ID): empty"), "{m}");
    }

    #[test]
    fn at_most_twenty_problems_are_listed() {
        let mut csv = HEADER.to_string();
        for i in 0..25 {
            csv.push_str(&row(&format!("r{i}"), "a@x.com", "REVU-1", "x"));
        }
        let m = err(csv.as_bytes());
        assert!(m.starts_with("t.csv: 25 problems"), "{m}");
        assert_eq!(m.matches("is not a whole number").count(), 20);
        assert!(m.contains("... and 5 more"), "{m}");
    }

    #[test]
    fn radix_sort_sorts_and_is_stable() {
        let v: Vec<(u64, u32)> = (0..50_000u32)
            .map(|i| {
                (
                    hash64(&(i % 17_777).to_string()) ^ (u64::from(i % 3) << 60),
                    i,
                )
            })
            .collect();
        let mut want = v.clone();
        want.sort_by_key(|x| x.0);
        assert_eq!(
            radix_sort(v, |x| x.0),
            want,
            "stable: equal keys keep their order"
        );
        assert!(radix_sort(Vec::<u64>::new(), |x| *x).is_empty());
    }

    #[test]
    fn in_place_sort_matches_a_plain_sort() {
        let email = |i: u64| {
            // Long shared prefixes, so the 16-byte keys tie and the full strings decide.
            let local = [
                "a",
                "a.very.long.shared.prefix",
                "a.very.long.shared.prefiy",
                "b",
                "",
            ];
            format!("{}{}@x.com", local[(i % 5) as usize], (i * 7919 + 13) % 23)
        };
        for n in 0..60u64 {
            let c = Contact::empty();
            let mut pairs: Vec<Pair> = (0..n)
                .map(|i| Pair {
                    email: email(i),
                    primary: c.clone(),
                    secondary: c.clone(),
                })
                .collect();
            let mut want: Vec<String> = pairs.iter().map(|p| p.email.clone()).collect();
            want.sort();
            sort_pairs_by_email(&mut pairs);
            assert_eq!(
                pairs.iter().map(|p| p.email.clone()).collect::<Vec<_>>(),
                want
            );
        }
    }

    #[test]
    fn move_pair_to_review_keeps_order() {
        let csv = format!(
            "{HEADER}{}{}{}{}",
            row("r1", "a@x.com", "REVU-r1", ""),
            row("u1", "a@x.com", "user_1", ""),
            row("u2", "b@x.com", "user_2", ""),
            row("u3", "b@x.com", "user_3", "")
        );
        let mut p = plan(&csv).unwrap();
        p.move_pair_to_review(0, ReviewReason::LiveNotFound, "gone".into());
        assert!(p.pairs.is_empty());
        assert_eq!(p.needs_review[0].email, "a@x.com");
        assert_eq!(p.needs_review[0].reason, ReviewReason::LiveNotFound);
        assert_eq!(p.needs_review[1].reason, ReviewReason::SeveralUser);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        type Row = (String, String, String, Option<u64>);

        /// Generated rows: (id, email, ref, ticket count). Small pools so that emails collide
        /// often and every kind of group shows up; about one row in ten reuses an earlier
        /// row's id.
        fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
            let email = prop::sample::select(vec![
                "a@x.com",
                "A@X.com",
                " a@x.com ",
                "b@x.com",
                "B@x.COM",
                "c@y.org",
                "d@x.com",
                "e@x.com",
                "f@x.com",
                "",
                "  ",
            ])
            .prop_map(str::to_string);
            let r = prop_oneof![
                4 => (0u8..12).prop_map(|n| format!("REVU-r{n}")),
                4 => (0u8..12).prop_map(|n| format!("user_{n}")),
                1 => (0u8..3).prop_map(|n| format!("user_{n}-drop-don:identity:x:revu/z")),
                1 => prop::sample::select(vec!["", "a@x.com", "revu-lower"]).prop_map(str::to_string),
            ];
            let dup = prop::option::weighted(0.1, any::<prop::sample::Index>());
            prop::collection::vec((dup, email, r, prop::option::of(0u64..50)), 1..40).prop_map(
                |v| {
                    let mut ids: Vec<String> = Vec::with_capacity(v.len());
                    let mut out = Vec::with_capacity(v.len());
                    for (i, (dup, email, r, t)) in v.into_iter().enumerate() {
                        let id = match dup {
                            Some(ix) if i > 0 => ids[ix.index(i)].clone(),
                            _ => format!("don:identity:dvrv-us-1:devo/o:revu/id{i}"),
                        };
                        ids.push(id.clone());
                        out.push((id, email, r, t));
                    }
                    out
                },
            )
        }

        fn to_csv(rows: &[Row]) -> Vec<u8> {
            let mut w = csv::Writer::from_writer(vec![]);
            w.write_record([
                "REV_USER_ID",
                "DISPLAY_NAME",
                "EMAIL",
                "EXTERNAL_REF",
                "TICKET_COUNT",
            ])
            .unwrap();
            for (id, email, r, t) in rows {
                let t = t.map(|t| t.to_string()).unwrap_or_default();
                w.write_record([id.as_str(), "Name, \"quoted\"", email, r, &t])
                    .unwrap();
            }
            w.into_inner().unwrap()
        }

        fn run(rows: &[Row], keep: Keep, domain: Option<&str>) -> Plan {
            let o = DetectOptions {
                keep,
                email_domain: domain.map(str::to_string),
            };
            plan_from_reader("p.csv", Cursor::new(to_csv(rows)), &o).unwrap()
        }

        fn without_lines(mut p: Plan) -> Plan {
            for pair in &mut p.pairs {
                pair.primary.line = 0;
                pair.secondary.line = 0;
            }
            for c in p
                .needs_review
                .iter_mut()
                .flat_map(|g| g.contacts.iter_mut())
                .chain(p.no_email.iter_mut())
            {
                c.line = 0;
            }
            p
        }

        /// The properties below only mean something if the generator makes every bucket.
        #[test]
        fn generator_covers_every_bucket() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let (mut pairs, mut singles, mut no_email) = (0, 0, 0);
            let mut reasons = HashSet::new();
            for _ in 0..300 {
                let rows = arb_rows().new_tree(&mut runner).unwrap().current();
                let p = run(&rows, Keep::Revu, None);
                pairs += p.pairs.len();
                singles += p.singles.total();
                no_email += p.no_email.len();
                reasons.extend(p.needs_review.iter().map(|g| g.reason));
            }
            assert!(
                pairs > 50 && singles > 50 && no_email > 50,
                "{pairs} {singles} {no_email}"
            );
            for r in [
                ReviewReason::DuplicateId,
                ReviewReason::DropRef,
                ReviewReason::OtherRef,
                ReviewReason::SeveralRevu,
                ReviewReason::RevuWithSeveralUser,
                ReviewReason::SeveralUser,
            ] {
                assert!(reasons.contains(&r), "{r:?} never generated");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn every_row_in_exactly_one_bucket(rows in arb_rows(),
                                               keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)],
                                               domain in prop::option::of(Just("x.com"))) {
                let p = run(&rows, keep, domain);
                prop_assert_eq!(p.rows_read, rows.len() as u64);
                let in_buckets = 2 * p.pairs.len() as u64 + p.review_rows() + p.no_email.len() as u64
                    + p.singles.total() + p.outside_domain;
                prop_assert_eq!(in_buckets, p.rows_read);
                prop_assert_eq!(p.emails, p.pairs.len() as u64 + p.needs_review.len() as u64 + p.singles.total());
                // Every line appears once across pairs, groups and no-email rows.
                let mut lines: Vec<u64> = p.pairs.iter().flat_map(|x| [x.primary.line, x.secondary.line])
                    .chain(p.needs_review.iter().flat_map(|g| g.contacts.iter().map(|c| c.line)))
                    .chain(p.no_email.iter().map(|c| c.line)).collect();
                let n = lines.len();
                lines.sort_unstable();
                lines.dedup();
                prop_assert_eq!(lines.len(), n);
                for g in &p.needs_review {
                    prop_assert!(g.contacts.len() >= 2 || g.reason == ReviewReason::DuplicateId);
                    for c in &g.contacts {
                        prop_assert_eq!(&normalize_email(&c.email), &g.email);
                    }
                }
                for c in &p.no_email {
                    prop_assert!(normalize_email(&c.email).is_empty());
                }
            }

            #[test]
            fn pairs_are_one_revu_and_one_user_with_equal_emails(rows in arb_rows(),
                                                                 keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)]) {
                let p = run(&rows, keep, None);
                for pair in &p.pairs {
                    let (want_p, want_s) = match keep {
                        Keep::Revu => (RefClass::Revu, RefClass::User),
                        Keep::User => (RefClass::User, RefClass::Revu),
                    };
                    prop_assert_eq!(pair.primary.ref_class(), want_p);
                    prop_assert_eq!(pair.secondary.ref_class(), want_s);
                    prop_assert_eq!(normalize_email(&pair.primary.email), pair.email.clone());
                    prop_assert_eq!(normalize_email(&pair.secondary.email), pair.email.clone());
                    prop_assert!(!pair.email.is_empty());
                    prop_assert_ne!(&pair.primary.rev_user_id, &pair.secondary.rev_user_id);
                }
            }

            #[test]
            fn hash_collisions_change_nothing(rows in arb_rows(),
                                              keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)]) {
                let strong = run(&rows, keep, None);
                for m in [(4, 1000), (3, 40), (2, 7), (1, 1)] {
                    COLLIDE.with(|c| c.set(Some(m)));
                    let weak = run(&rows, keep, None);
                    COLLIDE.with(|c| c.set(None));
                    prop_assert_eq!(&strong, &weak, "moduli {:?}", m);
                }
            }

            #[test]
            fn shuffling_rows_changes_nothing((rows, shuffled) in arb_rows()
                                                  .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))) {
                let a = without_lines(run(&rows, Keep::Revu, None));
                let b = without_lines(run(&shuffled, Keep::Revu, None));
                prop_assert_eq!(a, b);
            }
        }
    }
}
