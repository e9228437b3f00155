//! The review file on disk: `reports/review-<timestamp>.csv`, written for spreadsheets (a
//! UTF-8 byte-order mark so Excel reads the accents, CRLF line ends, every field quoted where
//! needed) and read back however a spreadsheet saved it (see `decisions.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{GroupKind, groups, proposal_for, ref_kind};
use crate::detect::Plan;
use crate::error::AppError;
use crate::fsutil;
use crate::options::Keep;

/// The columns, in this order, with these names (issue 17; docs/review.md).
pub const COLUMNS: [&str; 16] = [
    "group",
    "kind",
    "email",
    "rev_user_id",
    "display_id",
    "external_ref",
    "ref_kind",
    "display_name",
    "created_at",
    "updated_at",
    "ticket_count",
    "proposed",
    "why",
    "decision",
    "adopt_ref",
    "note",
];

/// Extra columns after [`COLUMNS`]: `recorded` says what the savepoint holds for the group
/// (a `not-dup`/`skip` decided by an earlier file, or a merge undone by `--restore`), with
/// when and from which file. Read by nobody: a person sees why a group is decided already.
pub const EXTRA_COLUMNS: [&str; 1] = ["recorded"];

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, a tab or a line break
/// first) gets a leading `'`: a display name from DevRev is anyone's text, and a review file
/// opened in Excel must not execute it. The reader takes the `'` off again.
pub(super) fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Writes the review file for `plan` into `dir` (0600, atomically) and returns its path.
///
/// `recorded` is the `recorded` column by group id (see [`EXTRA_COLUMNS`]).
pub fn write(
    dir: &Path,
    plan: &Plan,
    keep: Keep,
    recorded: &BTreeMap<String, String>,
) -> Result<PathBuf, AppError> {
    let path = fsutil::unique_path(dir, "review", "csv");
    let cant = |e: std::io::Error| {
        AppError::CantCreate(format!(
            "cannot write the review file {}: {e}",
            path.display()
        ))
    };
    fsutil::write_private_atomic_with(&path, false, |w| write_rows(w, plan, keep, recorded))
        .map_err(cant)?;
    Ok(path)
}

fn write_rows(
    w: &mut dyn Write,
    plan: &Plan,
    keep: Keep,
    recorded: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    w.write_all("\u{feff}".as_bytes())?;
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(w);
    csv.write_record(COLUMNS.iter().chain(&EXTRA_COLUMNS))?;
    for g in groups(plan) {
        let proposal = proposal_for(&g, keep);
        let rec = recorded.get(&g.id).map(String::as_str).unwrap_or("");
        for c in &g.contacts {
            let proposed = match &proposal.keep {
                Some(k) if *k == c.rev_user_id => "keep",
                Some(_) if proposal.merge.contains(&c.rev_user_id) => "merge",
                _ => "",
            };
            let why = match (proposed, &g.kind) {
                ("keep", _) => proposal.why.clone(),
                ("merge", _) => format!(
                    "merge into {}",
                    proposal
                        .keep
                        .as_deref()
                        .map(crate::detect::display_id)
                        .unwrap_or_default()
                ),
                (_, GroupKind::CleanPair) => String::new(),
                _ if proposal.keep.is_some() => "a -drop- ref: left alone".to_string(),
                _ => proposal.why.clone(),
            };
            let tickets = c.ticket_count.map(|n| n.to_string()).unwrap_or_default();
            csv.write_record([
                g.id.as_str(),
                g.kind.text(),
                g.email,
                &c.rev_user_id,
                &c.display_id(),
                &defuse(&c.external_ref),
                ref_kind(c),
                &defuse(&c.display_name),
                &c.created_at,
                &c.updated_at,
                &tickets,
                proposed,
                &why,
                "",
                "",
                "",
                &defuse(rec),
            ])?;
        }
    }
    csv.flush()
}
