//! Reading the export: the header's column layout, per-row validation, and the problems list
//! that tells the user everything wrong with the file at once.

use std::io::Read;

use super::{Contact, trim};
use crate::csvrec::{RawReader, RawRecord, Stop};
use crate::error::AppError;

/// The columns this tool reads, in the export's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Col {
    RevUserId = 0,
    DisplayName,
    Email,
    ExternalRef,
    FullName,
    CreatedAt,
    UpdatedAt,
    TicketCount,
}

pub(super) const COLUMNS: [(Col, &str, bool); 8] = [
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
pub(super) struct Layout {
    pub(super) idx: [Option<usize>; 8],
    /// Number of fields every row must have (the header's).
    pub(super) width: usize,
    /// Header names as written, for messages.
    pub(super) names: Vec<String>,
}

impl Layout {
    pub(super) fn column_label(&self, i: usize) -> String {
        match self.names.get(i) {
            Some(n) if !n.is_empty() => {
                format!("column {} ({})", i + 1, crate::output::clip(n, 40))
            }
            _ => format!("column {}", i + 1),
        }
    }

    /// The label of a known column, where the header put it.
    fn label_of(&self, c: Col) -> String {
        self.column_label(self.idx[c as usize].unwrap_or(0))
    }
}

/// The most problems listed in one error message.
pub const MAX_PROBLEMS: usize = 20;

/// Problems found in the file, collected so the user can fix them all in one go.
#[derive(Debug, Default)]
pub(super) struct Problems {
    pub(super) shown: Vec<String>,
    pub(super) total: u64,
}

impl Problems {
    pub(super) fn push(&mut self, line: u64, what: String) {
        self.total += 1;
        if self.shown.len() < MAX_PROBLEMS {
            self.shown.push(format!("line {line}, {what}"));
        }
    }

    pub(super) fn into_error(self, name: &str) -> AppError {
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
pub(super) struct RowView<'a> {
    f: [&'a str; 8],
    ticket_count: Option<u64>,
}

impl RowView<'_> {
    /// The field, without the `'` a spreadsheet-safe writer (the test sample, the export) put
    /// before a formula-like cell.
    pub(super) fn get(&self, c: Col) -> &str {
        crate::spreadsheet::undefuse(self.f[c as usize])
    }

    pub(super) fn to_contact(&self, line: u64) -> Contact {
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

/// The largest TICKET_COUNT accepted. Far above any real contact, and small enough that every
/// sum and estimate built from ticket counts stays exact in a `u64`.
pub(super) const MAX_TICKET_COUNT: u64 = 1_000_000_000;

/// Validates one record; records each problem and returns `None` if there was any.
pub(super) fn check_row<'r>(
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
    // A NUL is never part of a name, email or ref; it is a binary file or a broken export.
    if let Some(i) = (0..rec.len()).find(|&i| text[rec.range(i)].contains('\0')) {
        problems.push(
            line,
            format!(
                "{}: contains a NUL byte; is this really a CSV text export?",
                layout.column_label(i)
            ),
        );
        return None;
    }
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
                layout.label_of(Col::RevUserId)
            ),
        );
        ok = false;
    }
    let raw_count = trim(f[Col::TicketCount as usize]);
    let ticket_count = if raw_count.is_empty() {
        None
    } else {
        // `3.0`: a count a spreadsheet saved as a decimal is still a whole number.
        let whole = raw_count
            .split_once(['.', ','])
            .filter(|(_, frac)| !frac.is_empty() && frac.bytes().all(|b| b == b'0'))
            .map_or(raw_count, |(w, _)| w);
        let parsed = whole
            .parse::<u64>()
            .map_err(|e| *e.kind() == std::num::IntErrorKind::PosOverflow);
        match parsed {
            Ok(n) if n <= MAX_TICKET_COUNT => Some(n),
            bad => {
                let why = if bad.is_ok() || bad == Err(true) {
                    format!(
                        "is larger than {MAX_TICKET_COUNT}, the most tickets one contact can have here"
                    )
                } else {
                    "is not a whole number (leave it empty when unknown)".to_string()
                };
                problems.push(
                    line,
                    format!(
                        "{}: \"{}\" {why}",
                        layout.label_of(Col::TicketCount),
                        crate::output::clip(raw_count, 40)
                    ),
                );
                ok = false;
                None
            }
        }
    };
    ok.then_some(RowView { f, ticket_count })
}

pub(super) fn read_header<R: Read>(
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
        if let Some((col, canon, _)) = COLUMNS
            .iter()
            .find(|(_, c, _)| header_key(c) == header_key(n))
        {
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
        if let Some(sep) = other_separator(&names) {
            return Err(AppError::Data(format!(
                "{name}: line {line}: the columns are separated by {sep}, not by commas (Excel \
                 saves CSV this way in many locales). Save the file as \"CSV UTF-8 (Comma \
                 delimited)\", or export it again with devrev-merge --export-contacts FILE."
            )));
        }
        let hints: Vec<String> = missing
            .iter()
            .filter_map(|want| {
                let found = names.iter().find(|n| {
                    let (k, w) = (header_key(n), header_key(want));
                    !k.is_empty() && (k.contains(&w) || w.contains(&k))
                })?;
                Some(format!("rename {found:?} to {want}"))
            })
            .collect();
        let hint = if hints.is_empty() {
            String::new()
        } else {
            format!(" Did you mean: {}?", hints.join(", "))
        };
        return Err(AppError::Data(format!(
            "{name}: line {line}: missing required column{} {} (found: {}). The header needs \
             REV_USER_ID, EMAIL and EXTERNAL_REF (any case, any order; spaces or dashes for \
             underscores are fine).{hint}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            names.join(", ")
        )));
    }
    let width = header.len();
    Ok((Layout { idx, width, names }, header))
}

/// A header name as compared: letters and digits only, lower case, so that `Rev User Id`,
/// `rev-user-id` and `REV_USER_ID` (spreadsheets and warehouses each write their own) match.
fn header_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The separator a header that is not comma-separated uses, when it is plainly another one:
/// a single column whose text splits into the required names on `;`, a tab or `|`.
fn other_separator(names: &[String]) -> Option<&'static str> {
    let [only] = names else { return None };
    [(';', "semicolons"), ('\t', "tabs"), ('|', "vertical bars")]
        .into_iter()
        .find(|(sep, _)| {
            let keys: Vec<String> = only.split(*sep).map(header_key).collect();
            keys.len() > 1
                && COLUMNS
                    .iter()
                    .filter(|(_, _, required)| *required)
                    .all(|(_, c, _)| keys.contains(&header_key(c)))
        })
        .map(|(_, what)| what)
}

pub(super) fn read_err(name: &str) -> impl Fn(std::io::Error) -> AppError + '_ {
    // Reading the input failed: a problem with the input (exit 65), not with output.
    move |e| AppError::Data(format!("cannot read {name}: {e}"))
}

pub(super) fn stopped(name: &str, stop: Stop<AppError>) -> AppError {
    match stop {
        Stop::Io(e) => read_err(name)(e),
        Stop::Caller(e) => e,
    }
}
