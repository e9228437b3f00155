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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Seek};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::csvrec::{RawReader, RawRecord, Stop, read_pipelined};
use crate::error::AppError;
use crate::options::Keep;

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
fn normalize_email_into(raw: &str, out: &mut String) {
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

// ---- reading -------------------------------------------------------------------------------

/// The columns this tool reads, in the export's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    RevUserId = 0,
    DisplayName,
    Email,
    ExternalRef,
    FullName,
    CreatedAt,
    UpdatedAt,
    TicketCount,
}

const COLUMNS: [(Col, &str, bool); 8] = [
    (Col::RevUserId, "REV_USER_ID", true),
    (Col::DisplayName, "DISPLAY_NAME", false),
    (Col::Email, "EMAIL", true),
    (Col::ExternalRef, "EXTERNAL_REF", true),
    (Col::FullName, "FULL_NAME", false),
    (Col::CreatedAt, "CREATED_AT", false),
    (Col::UpdatedAt, "UPDATED_AT", false),
    (Col::TicketCount, "TICKET_COUNT", false),
];

/// Where each known column sits in the file.
#[derive(Debug, Clone)]
struct Layout {
    idx: [Option<usize>; 8],
    /// Number of fields every row must have (the header's).
    width: usize,
    /// Header names as written, for messages.
    names: Vec<String>,
}

impl Layout {
    fn column_label(&self, i: usize) -> String {
        match self.names.get(i) {
            Some(n) if !n.is_empty() => format!("column {} ({n})", i + 1),
            _ => format!("column {}", i + 1),
        }
    }
}

/// The most problems listed in one error message.
pub const MAX_PROBLEMS: usize = 20;

/// Problems found in the file, collected so the user can fix them all in one go.
#[derive(Debug, Default)]
struct Problems {
    shown: Vec<String>,
    total: u64,
}

impl Problems {
    fn push(&mut self, line: u64, what: String) {
        self.total += 1;
        if self.shown.len() < MAX_PROBLEMS {
            self.shown.push(format!("line {line}, {what}"));
        }
    }

    fn into_error(self, name: &str) -> AppError {
        let mut msg = format!(
            "{name}: {} problem{} in the CSV; nothing was done. Fix {} and run again:",
            self.total,
            if self.total == 1 { "" } else { "s" },
            if self.total == 1 { "it" } else { "them" }
        );
        for p in &self.shown {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        if self.total > self.shown.len() as u64 {
            msg.push_str(&format!(
                "\n  ... and {} more (only the first {MAX_PROBLEMS} are listed)",
                self.total - self.shown.len() as u64
            ));
        }
        AppError::Data(msg)
    }
}

/// One row's known fields, borrowed from the record.
struct RowView<'a> {
    f: [&'a str; 8],
    ticket_count: Option<u64>,
}

impl RowView<'_> {
    fn get(&self, c: Col) -> &str {
        self.f[c as usize]
    }

    fn to_contact(&self, line: u64) -> Contact {
        Contact {
            line,
            rev_user_id: self.get(Col::RevUserId).to_string(),
            display_name: self.get(Col::DisplayName).to_string(),
            email: self.get(Col::Email).to_string(),
            external_ref: self.get(Col::ExternalRef).to_string(),
            full_name: self.get(Col::FullName).to_string(),
            created_at: self.get(Col::CreatedAt).to_string(),
            updated_at: self.get(Col::UpdatedAt).to_string(),
            ticket_count: self.ticket_count,
        }
    }
}

/// Validates one record; records each problem and returns `None` if there was any.
fn check_row<'r>(
    rec: &'r RawRecord,
    layout: &Layout,
    line: u64,
    problems: &mut Problems,
) -> Option<RowView<'r>> {
    if rec.len() != layout.width {
        problems.push(
            line,
            format!(
                "{} field{} but the header has {} (a missing or extra comma, or a quote left open?)",
                rec.len(),
                if rec.len() == 1 { "" } else { "s" },
                layout.width
            ),
        );
        return None;
    }
    // Every field, extra columns included, must be UTF-8: the sample writes them back.
    let Some(text) = rec.utf8() else {
        for (i, field) in rec.iter().enumerate() {
            if let Err(e) = std::str::from_utf8(field) {
                problems.push(
                    line,
                    format!(
                        "{}: not valid UTF-8 (byte 0x{:02X} at offset {}); save the export as UTF-8",
                        layout.column_label(i),
                        field.get(e.valid_up_to()).copied().unwrap_or(0),
                        e.valid_up_to()
                    ),
                );
            }
        }
        return None;
    };
    let mut ok = true;
    let mut f = [""; 8];
    for (col, _, _) in COLUMNS {
        if let Some(i) = layout.idx[col as usize] {
            // `utf8()` guarantees every field starts and ends on a character boundary.
            f[col as usize] = text.get(rec.range(i)).unwrap_or("");
        }
    }
    f[Col::RevUserId as usize] = trim(f[Col::RevUserId as usize]);
    f[Col::Email as usize] = trim(f[Col::Email as usize]);
    f[Col::ExternalRef as usize] = trim(f[Col::ExternalRef as usize]);
    if f[Col::RevUserId as usize].is_empty() {
        problems.push(
            line,
            format!(
                "{}: empty; every row needs the contact's id",
                layout.column_label(layout.idx[Col::RevUserId as usize].unwrap_or(0))
            ),
        );
        ok = false;
    }
    let raw_count = trim(f[Col::TicketCount as usize]);
    let ticket_count = if raw_count.is_empty() {
        None
    } else {
        match raw_count.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(
                    line,
                    format!(
                        "{}: {raw_count:?} is not a whole number (leave it empty when unknown)",
                        layout.column_label(layout.idx[Col::TicketCount as usize].unwrap_or(0))
                    ),
                );
                ok = false;
                None
            }
        }
    };
    ok.then_some(RowView { f, ticket_count })
}

fn read_header<R: Read>(
    rdr: &mut RawReader<R>,
    name: &str,
) -> Result<(Layout, RawRecord), AppError> {
    let mut header = RawRecord::default();
    let got = rdr.read(&mut header).map_err(read_err(name))?;
    if !got {
        return Err(AppError::Data(format!(
            "{name}: no contacts: the file is empty. Export the contacts with the header \
             REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT"
        )));
    }
    let line = header.line;
    let mut names = Vec::with_capacity(header.len());
    for (i, field) in header.iter().enumerate() {
        match std::str::from_utf8(field) {
            Ok(s) => names.push(s.trim().to_string()),
            Err(_) => {
                return Err(AppError::Data(format!(
                    "{name}: line {line}, column {}: the header is not valid UTF-8; save the export as UTF-8",
                    i + 1
                )));
            }
        }
    }
    let mut idx = [None; 8];
    for (i, n) in names.iter().enumerate() {
        if let Some((col, canon, _)) = COLUMNS.iter().find(|(_, c, _)| c.eq_ignore_ascii_case(n)) {
            if let Some(first) = idx[*col as usize] {
                return Err(AppError::Data(format!(
                    "{name}: line {line}: column {canon} appears twice (columns {} and {}); keep one",
                    first + 1,
                    i + 1
                )));
            }
            idx[*col as usize] = Some(i);
        }
    }
    let missing: Vec<&str> = COLUMNS
        .iter()
        .filter(|(col, _, required)| *required && idx[*col as usize].is_none())
        .map(|(_, n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(AppError::Data(format!(
            "{name}: line {line}: missing required column{} {} (found: {}). The header needs \
             REV_USER_ID, EMAIL and EXTERNAL_REF (any case, any order).",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            names.join(", ")
        )));
    }
    let width = header.len();
    Ok((Layout { idx, width, names }, header))
}

fn read_err(name: &str) -> impl Fn(std::io::Error) -> AppError + '_ {
    // Reading the input failed: a problem with the input (exit 65), not with output.
    move |e| AppError::Data(format!("cannot read {name}: {e}"))
}

fn stopped(name: &str, stop: Stop<AppError>) -> AppError {
    match stop {
        Stop::Io(e) => read_err(name)(e),
        Stop::Caller(e) => e,
    }
}

/// A fast 64-bit hash (8 bytes per step, MurmurHash3's finalizer). It only decides what to
/// re-read: a collision, even a crafted one, costs a re-read and never changes the plan.
fn hash64(s: &str) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = s.as_bytes();
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    let mut word = [0u8; 8];
    for c in &mut chunks {
        word.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    let rest = chunks.remainder();
    word = [0u8; 8];
    word[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// Hash of a normalized email.
fn email_hash(s: &str) -> u64 {
    #[cfg(test)]
    if let Some(m) = tests::COLLIDE.with(std::cell::Cell::get).map(|m| m.0) {
        // Tests force collisions to prove they never change the plan.
        return hash64(s) % m;
    }
    hash64(s)
}

/// Hash of a REV_USER_ID.
fn id_hash(s: &str) -> u64 {
    #[cfg(test)]
    if let Some(m) = tests::COLLIDE.with(std::cell::Cell::get).map(|m| m.1) {
        return hash64(s) % m;
    }
    hash64(s)
}

/// Pass 1's summary of a row with an email (32 bytes, no text).
#[derive(Debug, Clone, Copy)]
struct RowMeta {
    email_hash: u64,
    id_hash: u64,
    /// Where the row starts in the file, to read it again.
    byte: u64,
    class: RefClass,
}

impl Default for RowMeta {
    fn default() -> Self {
        RowMeta {
            email_hash: 0,
            id_hash: 0,
            byte: 0,
            class: RefClass::Other,
        }
    }
}

/// Sorts by a 64-bit key in four passes of 16 bits (LSD radix, stable). For a million rows
/// this is several times faster than a comparison sort, and it replaces a hash table whose
/// random accesses dominated the grouping.
fn radix_sort<T: Copy + Default>(v: Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
    let mut src = v;
    if src.len() < 1 << 14 {
        // Small inputs: the counting tables would cost more than the sort.
        src.sort_by_key(|x| key(x));
        return src;
    }
    let mut dst = vec![T::default(); src.len()];
    let mut counts = vec![0usize; 1 << 16];
    for shift in [0u32, 16, 32, 48] {
        counts.iter_mut().for_each(|c| *c = 0);
        for x in &src {
            counts[((key(x) >> shift) & 0xFFFF) as usize] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for x in &src {
            let d = ((key(x) >> shift) & 0xFFFF) as usize;
            dst[counts[d]] = *x;
            counts[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    src
}

/// A set of hashes (they need no hashing again).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// Where pass 2 puts a re-read row. Decided from pass 1 (hashes and classes), so every row
/// lands directly in its final place and the plan is never copied.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Predicted clean pair `index`; `primary` says which side.
    Pair {
        index: u32,
        primary: bool,
    },
    /// Candidate group `index` (classified once its rows are read).
    Group(u32),
    NoEmail,
}

#[derive(Debug, Clone, Copy)]
struct Wanted {
    byte: u64,
    /// Hash of the normalized email (checked again on the text; 0 without email).
    key: u64,
    slot: Slot,
}

impl Contact {
    /// A placeholder filled in by pass 2 (empty strings do not allocate).
    fn empty() -> Self {
        Contact {
            line: 0,
            rev_user_id: String::new(),
            display_name: String::new(),
            email: String::new(),
            external_ref: String::new(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: None,
        }
    }
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

    // ---- pass 1: validate everything, remember 32 bytes per row ----
    let mut rdr = RawReader::new(&mut src);
    let (layout, header) = read_header(&mut rdr, name)?;
    let mut problems = Problems::default();
    let mut rows: Vec<RowMeta> = Vec::with_capacity(expected_rows);
    // Rows without an email: (where they start, id hash).
    let mut no_email_rows: Vec<(u64, u64)> = Vec::new();
    let mut rows_read = 0u64;
    let mut outside_domain = 0u64;
    let mut email = String::new();
    let pass1 = read_pipelined(
        &mut rdr,
        |r, rec| r.read(rec),
        |rec| {
            rows_read += 1;
            let Some(row) = check_row(rec, &layout, rec.line, &mut problems) else {
                return Ok(());
            };
            if problems.total > 0 {
                // The command stops anyway: keep validating, stop collecting.
                return Ok(());
            }
            normalize_email_into(row.get(Col::Email), &mut email);
            if let Some(d) = &domain {
                if !in_domain(&email, d) {
                    outside_domain += 1;
                    return Ok(());
                }
            }
            let id = id_hash(row.get(Col::RevUserId));
            if email.is_empty() {
                no_email_rows.push((rec.byte, id));
            } else {
                rows.push(RowMeta {
                    email_hash: email_hash(&email),
                    id_hash: id,
                    byte: rec.byte,
                    class: classify_ref(row.get(Col::ExternalRef)),
                });
            }
            Ok(())
        },
    );
    pass1.map_err(|stop| stopped(name, stop))?;
    drop(rdr);
    if problems.total > 0 {
        return Err(problems.into_error(name));
    }
    if rows_read == 0 {
        return Err(AppError::Data(format!(
            "{name}: no contacts: the file has a header but no rows"
        )));
    }
    if u32::try_from(rows.len() + no_email_rows.len()).is_err() {
        return Err(AppError::Data(format!(
            "{name}: more than 4 billion rows; split the file"
        )));
    }
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        rows_read,
        "pass 1 done"
    );

    // Ids seen more than once (by hash; confirmed on the text after pass 2).
    let dup_id_hashes: HashSet64 = {
        let ids: Vec<u64> = rows
            .iter()
            .map(|r| r.id_hash)
            .chain(no_email_rows.iter().map(|r| r.1))
            .collect();
        let ids = radix_sort(ids, |x| *x);
        ids.windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect()
    };

    // Group by email hash: equal hashes end up next to each other.
    let rows = radix_sort(rows, |r| r.email_hash);

    // Decide what pass 2 reads and where each row goes. Emails with one row and an id seen
    // once are singles: counted, never read again.
    let mut singles = Singles::default();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut n_pairs = 0u32;
    let mut group_sizes: Vec<u32> = Vec::new();
    let mut emails = 0u64;
    for members in rows.chunk_by(|a, b| a.email_hash == b.email_hash) {
        emails += 1;
        let key = members[0].email_hash;
        let suspicious =
            !dup_id_hashes.is_empty() && members.iter().any(|r| dup_id_hashes.contains(&r.id_hash));
        if members.len() == 1 && !suspicious {
            singles.add(members[0].class);
            continue;
        }
        let clean = matches!(
            members,
            [a, b] if matches!((a.class, b.class), (RefClass::Revu, RefClass::User) | (RefClass::User, RefClass::Revu))
        );
        if clean && !suspicious {
            for r in members {
                let primary = (r.class == RefClass::Revu) == (opts.keep == Keep::Revu);
                wanted.push(Wanted {
                    byte: r.byte,
                    key,
                    slot: Slot::Pair {
                        index: n_pairs,
                        primary,
                    },
                });
            }
            n_pairs += 1;
        } else {
            let g = group_sizes.len() as u32;
            group_sizes.push(members.len() as u32);
            for r in members {
                wanted.push(Wanted {
                    byte: r.byte,
                    key,
                    slot: Slot::Group(g),
                });
            }
        }
    }
    let n_no_email = no_email_rows.len();
    for (byte, _) in no_email_rows {
        wanted.push(Wanted {
            byte,
            key: 0,
            slot: Slot::NoEmail,
        });
    }
    drop(rows);
    wanted.sort_unstable_by_key(|w| w.byte);

    // ---- pass 2: read the wanted rows in full, straight into place ----
    let placeholder = Pair {
        email: String::new(),
        primary: Contact::empty(),
        secondary: Contact::empty(),
    };
    let mut pairs: Vec<Pair> = vec![placeholder; n_pairs as usize];
    let mut groups: Vec<Vec<Contact>> = group_sizes
        .iter()
        .map(|n| Vec::with_capacity(*n as usize))
        .collect();
    let mut no_email: Vec<Contact> = Vec::with_capacity(n_no_email);
    // Predicted pairs whose two rows turn out to have different emails (a hash collision).
    let mut broken: Vec<u32> = Vec::new();
    let changed = || {
        AppError::Data(format!(
            "{name}: the file changed while it was being read; run the command again once it is complete"
        ))
    };
    if !wanted.is_empty() {
        src.rewind()
            .map_err(|e| AppError::Data(format!("cannot re-read {name}: {e}")))?;
        let mut rdr = RawReader::new(&mut src);
        let (_, header2) = read_header(&mut rdr, name)?;
        if header2.as_slice() != header.as_slice() {
            return Err(changed());
        }
        // The helper thread jumps over the rows pass 1 settled and parses only the wanted
        // ones; this thread turns them into contacts.
        let mut k = 0usize;
        let skip_and_read = |r: &mut RawReader<&mut R>, rec: &mut RawRecord| {
            let Some(w) = wanted.get(k) else {
                return Ok(false);
            };
            k += 1;
            Ok(r.skip_to(w.byte)? && r.read(rec)?)
        };
        let mut next = 0usize;
        let pass2 = read_pipelined(&mut rdr, skip_and_read, |rec| {
            let w = wanted[next];
            next += 1;
            if rec.byte != w.byte {
                return Err(changed());
            }
            let mut scratch = Problems::default();
            let row = check_row(rec, &layout, rec.line, &mut scratch).ok_or_else(changed)?;
            normalize_email_into(row.get(Col::Email), &mut email);
            let key_ok = if email.is_empty() {
                w.key == 0
            } else {
                email_hash(&email) == w.key
            };
            if !key_ok {
                return Err(changed());
            }
            let contact = row.to_contact(rec.line);
            match w.slot {
                Slot::NoEmail => no_email.push(contact),
                Slot::Group(g) => groups[g as usize].push(contact),
                Slot::Pair { index, primary } => {
                    let pair = &mut pairs[index as usize];
                    let side = if primary {
                        &mut pair.primary
                    } else {
                        &mut pair.secondary
                    };
                    if !side.rev_user_id.is_empty() {
                        return Err(changed());
                    }
                    *side = contact;
                    if pair.email.is_empty() {
                        pair.email = email.clone();
                    } else if pair.email != email {
                        broken.push(index);
                    }
                }
            }
            Ok(())
        });
        pass2.map_err(|stop| stopped(name, stop))?;
        if next < wanted.len() {
            return Err(changed());
        }
    }
    drop(wanted);
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "pass 2 done");
    // A row's class must not have changed between the passes either.
    for p in &pairs {
        let want = match opts.keep {
            Keep::Revu => (RefClass::Revu, RefClass::User),
            Keep::User => (RefClass::User, RefClass::Revu),
        };
        if (p.primary.ref_class(), p.secondary.ref_class()) != want {
            return Err(changed());
        }
    }

    // Confirm duplicate ids on the real text (a hash match alone proves nothing). Predicted
    // pairs never hold a suspicious id, so groups and no-email rows are all there is to see.
    let dup_ids: HashSet<String> = {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for c in groups.iter().flatten().chain(no_email.iter()) {
            if dup_id_hashes.contains(&id_hash(&c.rev_user_id)) {
                *seen.entry(c.rev_user_id.as_str()).or_insert(0) += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, _)| id.to_string())
            .collect()
    };

    // ---- classify what was not already a certain pair ----
    let mut loose: Vec<Vec<Contact>> = Vec::new();
    broken.sort_unstable();
    for index in broken.into_iter().rev() {
        let p = pairs.swap_remove(index as usize);
        loose.push(vec![p.primary, p.secondary]);
    }
    let mut needs_review = Vec::with_capacity(groups.len());
    for group in groups.into_iter().chain(loose) {
        for (email, contacts) in split_by_email(group) {
            match classify_group(email, contacts, &dup_ids, opts.keep) {
                Outcome::Single(class) => singles.add(class),
                Outcome::Pair(p) => pairs.push(p),
                Outcome::Review(g) => needs_review.push(g),
            }
            emails += 1;
        }
        // The group itself was counted once in pass 1.
        emails -= 1;
    }
    sort_pairs_by_email(&mut pairs);
    needs_review.sort_by(|a, b| (a.email.as_str(), a.reason).cmp(&(b.email.as_str(), b.reason)));
    no_email.sort_by(|a, b| a.order_key().cmp(&b.order_key()));

    Ok(Plan {
        source: name.to_string(),
        keep: opts.keep,
        email_domain: domain,
        rows_read,
        emails,
        outside_domain,
        singles,
        pairs,
        needs_review,
        no_email,
    })
}

/// Splits a candidate group on the real normalized email: rows only share a candidate group
/// because their email hashes matched. Nearly always one part, returned without copying.
fn split_by_email(group: Vec<Contact>) -> Vec<(String, Vec<Contact>)> {
    let first = group
        .first()
        .map(Contact::normalized_email)
        .unwrap_or_default();
    let mut buf = String::new();
    if group.iter().all(|c| {
        normalize_email_into(&c.email, &mut buf);
        buf == first
    }) {
        return vec![(first, group)];
    }
    let mut by_email: BTreeMap<String, Vec<Contact>> = BTreeMap::new();
    for c in group {
        by_email.entry(c.normalized_email()).or_default().push(c);
    }
    by_email.into_iter().collect()
}

/// The first 16 bytes of `s` as a big-endian number, zero-padded: comparing two of these
/// compares the strings' first 16 bytes, so only ties need the strings themselves.
fn prefix_key(s: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// Sorts pairs by email. The pairs are large and their emails scattered on the heap, so the
/// order is computed on (prefix, index) keys and applied with one move per pair.
fn sort_pairs_by_email(pairs: &mut [Pair]) {
    let mut keys: Vec<(u128, u32)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (prefix_key(&p.email), i as u32))
        .collect();
    keys.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| pairs[a.1 as usize].email.cmp(&pairs[b.1 as usize].email))
            .then(a.1.cmp(&b.1))
    });
    let order: Vec<usize> = keys.into_iter().map(|(_, i)| i as usize).collect();
    apply_order(pairs, order);
}

/// Rearranges `v` so that position `k` holds what was at `order[k]` (a permutation).
fn apply_order<T>(v: &mut [T], mut order: Vec<usize>) {
    for i in 0..v.len() {
        let mut cur = i;
        while order[cur] != i {
            let src = order[cur];
            v.swap(cur, src);
            order[cur] = cur;
            cur = src;
        }
        order[cur] = cur;
    }
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

/// Where one email's rows end up. (Short-lived and moved at once, so its size is moot.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Single(RefClass),
    Pair(Pair),
    Review(ReviewGroup),
}

/// DESIGN §5: exactly one `REVU-` and one `user_` row is a clean pair; any other group of two
/// or more rows (or a row whose id is also on another row) needs review, with its reason.
fn classify_group(
    email: String,
    mut contacts: Vec<Contact>,
    dup_ids: &HashSet<String>,
    keep: Keep,
) -> Outcome {
    contacts.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let dups: Vec<&str> = {
        let mut v: Vec<&str> = contacts
            .iter()
            .map(|c| c.rev_user_id.as_str())
            .filter(|id| dup_ids.contains(*id))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if contacts.len() == 1 && dups.is_empty() {
        return Outcome::Single(contacts[0].ref_class());
    }
    let (mut revu, mut user, mut drop, mut other) = (0, 0, 0, 0);
    for c in &contacts {
        match c.ref_class() {
            RefClass::Revu => revu += 1,
            RefClass::User => user += 1,
            RefClass::Drop => drop += 1,
            RefClass::Other => other += 1,
        }
    }
    let (reason, detail) = if !dups.is_empty() {
        (
            ReviewReason::DuplicateId,
            format!(
                "REV_USER_ID {} is on more than one row of the export",
                dups.join(", ")
            ),
        )
    } else if drop > 0 {
        (
            ReviewReason::DropRef,
            format!("{drop} row(s) with a -drop- ref, {revu} REVU-, {user} user_, {other} other"),
        )
    } else if other > 0 {
        (
            ReviewReason::OtherRef,
            format!(
                "{other} row(s) with a ref that is neither REVU- nor user_, {revu} REVU-, {user} user_"
            ),
        )
    } else if revu >= 2 {
        (
            ReviewReason::SeveralRevu,
            format!("{revu} REVU- rows and {user} user_ rows"),
        )
    } else if revu == 1 && user >= 2 {
        (
            ReviewReason::RevuWithSeveralUser,
            format!("1 REVU- row and {user} user_ rows"),
        )
    } else if revu == 0 && user >= 2 {
        (
            ReviewReason::SeveralUser,
            format!("{user} user_ rows and no REVU- row"),
        )
    } else {
        // Exactly one REVU- and one user_ row and nothing else.
        debug_assert!(revu == 1 && user == 1 && contacts.len() == 2);
        let mut it = contacts.into_iter();
        let (Some(revu_c), Some(user_c)) = (it.next(), it.next()) else {
            unreachable!("a group of two rows has two rows")
        };
        let (primary, secondary) = match keep {
            Keep::Revu => (revu_c, user_c),
            Keep::User => (user_c, revu_c),
        };
        return Outcome::Pair(Pair {
            email,
            primary,
            secondary,
        });
    };
    Outcome::Review(ReviewGroup {
        email,
        reason,
        detail,
        contacts,
    })
}

#[cfg(test)]
mod tests {
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
