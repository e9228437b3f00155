//! Reading a filled-in review file (`--decisions FILE`) and turning it into what happens to
//! each group. Every mistake is found before anything is sent: the whole file is checked and
//! the first problems are listed with their line (exit 65), so a person fixes them in one go.
//!
//! The file may come back from any spreadsheet: a byte-order mark, CRLF, `;` or tab
//! separators, quoted fields, re-sorted rows, deleted rows, extra columns. Only `rev_user_id`
//! and `decision` are required; `group`, `email`, `external_ref` and `updated_at`, when
//! present, are compared with this export to catch a row whose contact changed since.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::rules::{self, Cell, Partial, Problem, Verdict};
use super::{Group, GroupKind, groups, proposal_for};
use crate::detect::{Contact, Plan, RefClass, display_id};
use crate::error::AppError;
use crate::options::Keep;

/// Largest group `--accept-proposed` decides: a bigger one is for a person, row by row.
pub const ACCEPT_PROPOSED_MAX: usize = 5;

/// Most problems listed in one error.
const SHOWN: usize = 20;

pub use super::rules::Decision;

/// One row of the decisions file.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: u64,
    pub rev_user_id: String,
    pub decision: Option<Decision>,
    pub adopt_ref: bool,
    pub group: Option<String>,
    pub email: Option<String>,
    pub external_ref: Option<String>,
    pub updated_at: Option<String>,
}

/// What happens to one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Merge each of `merge` into `keep`, one at a time; `adopt_ref` is the merged contact
    /// whose `user_` ref the survivor takes (if any).
    Merge {
        keep: String,
        merge: Vec<String>,
        adopt_ref: Option<String>,
        /// Where it came from: typed, the proposal (`--accept-proposed`), or the clean-pair
        /// rule.
        source: Source,
    },
    /// `not-dup` on some row (its line).
    NotDup { line: u64 },
    /// Decided, but nothing to merge (every row `skip`, or a `keep` alone).
    Skipped,
    /// A needs-review group nobody decided.
    Undecided,
    /// A row's contact changed since the file was written: the group is left alone.
    Stale { reason: String },
    /// Decided by an earlier decisions file, recorded in the savepoint, and not decided
    /// (nor revoked) by this one.
    Recorded {
        decision: crate::merge::journal::LastingDecision,
        at: chrono::DateTime<chrono::Utc>,
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Typed,
    Proposed,
    CleanPairRule,
}

/// Every group with what happens to it, in the plan's order.
#[derive(Debug, Clone, Default)]
pub struct Decided {
    pub groups: Vec<(String, String, Outcome)>,
    /// Groups with `revoke` on a row (group id, line): their recorded decision is dropped.
    pub revoked: Vec<(String, u64)>,
    /// Lines of rows whose contact is in no group of this export (the full review file given
    /// with a sample, or with a newer export): counted and ignored.
    pub ignored: Vec<u64>,
    /// Partly decided groups, in words: what is missing for them to merge.
    pub notes: Vec<String>,
}

impl Decided {
    /// `[not-dup, skipped, undecided, stale]`: the groups that merge nothing (what merges is
    /// counted by kind, clean pairs apart from groups, where the plan is at hand).
    pub fn counts(&self) -> [usize; 4] {
        let mut n = [0; 4];
        for (_, _, o) in &self.groups {
            match o {
                Outcome::Merge { .. } => {}
                Outcome::NotDup { .. }
                | Outcome::Recorded {
                    decision: crate::merge::journal::LastingDecision::NotDup,
                    ..
                } => n[0] += 1,
                Outcome::Skipped | Outcome::Recorded { .. } => n[1] += 1,
                Outcome::Undecided => n[2] += 1,
                Outcome::Stale { .. } => n[3] += 1,
            }
        }
        n
    }
}

/// Reads `path` and decides every group of `plan`.
pub fn decide(
    path: &Path,
    plan: &Plan,
    keep: Keep,
    accept_proposed: bool,
) -> Result<Decided, AppError> {
    let name = path.display().to_string();
    let text = read_text(path, &name)?;
    let (rows, problems) = parse(&text, &name)?;
    decide_rows(&name, &rows, problems, plan, keep, accept_proposed)
}

fn read_text(path: &Path, name: &str) -> Result<String, AppError> {
    let bytes = std::fs::read(path)
        .map_err(|e| AppError::Data(format!("cannot read the decisions file {name}: {e}")))?;
    crate::spreadsheet::decode(&bytes).ok_or_else(|| {
        AppError::Data(format!(
            "{name}: the decisions file is neither UTF-8 nor UTF-16 text: save it as \"CSV UTF-8\""
        ))
    })
}

/// The separator a spreadsheet used: the most frequent of `,`, `;` and tab in the header.
fn separator(header: &str) -> u8 {
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|s| header.bytes().filter(|b| b == s).count())
        .unwrap_or(b',')
}

fn key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

use crate::spreadsheet::undefuse;

/// The rows, and the problems found in single rows (reported with the group problems).
pub(super) fn parse(text: &str, name: &str) -> Result<(Vec<Row>, Vec<String>), AppError> {
    let header_line = text.lines().next().unwrap_or("");
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(separator(header_line))
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = rdr
        .headers()
        .map_err(|e| AppError::Data(format!("{name}: line 1: {e}")))?
        .clone();
    let col = |want: &str| header.iter().position(|h| key(h) == key(want));
    let (Some(id_col), Some(decision_col)) = (col("rev_user_id"), col("decision")) else {
        return Err(AppError::Data(format!(
            "{name}: line 1: a decisions file needs the columns rev_user_id and decision (found: \
             {}). Start from the review file --preview writes (reports/review-<time>.csv).",
            header.iter().collect::<Vec<_>>().join(", ")
        )));
    };
    let adopt_col = col("adopt_ref");
    let optional = |r: &csv::StringRecord, c: Option<usize>| {
        c.and_then(|i| r.get(i))
            .map(|v| undefuse(v.trim()).to_string())
            .filter(|v| !v.is_empty())
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| AppError::Data(format!("{name}: {e}")))?;
        let line = rec.position().map_or(0, |p| line_of(text, p.byte()));
        let id = undefuse(rec.get(id_col).unwrap_or("").trim())
            .trim()
            .to_string();
        let raw_decision = undefuse(rec.get(decision_col).unwrap_or("").trim());
        if id.is_empty() {
            if !rec.iter().all(|f| f.trim().is_empty()) {
                problems.push(format!("line {line}: rev_user_id is empty"));
            }
            continue;
        }
        let decision = match Decision::parse(raw_decision) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let adopt_ref = match adopt_col
            .and_then(|i| rec.get(i))
            .map(|v| undefuse(v.trim()).to_ascii_lowercase())
        {
            None => false,
            Some(v) if v.is_empty() || v == "no" || v == "n" => false,
            // "TRUE" and "1": what a spreadsheet makes of a ticked or typed yes.
            Some(v) if matches!(v.as_str(), "yes" | "y" | "x" | "true" | "1") => true,
            Some(v) => {
                problems.push(format!(
                    "line {line}: adopt_ref {v:?}: write yes (or leave it empty)"
                ));
                continue;
            }
        };
        rows.push(Row {
            line,
            rev_user_id: id,
            decision,
            adopt_ref,
            group: optional(&rec, col("group")),
            email: optional(&rec, col("email")),
            external_ref: optional(&rec, col("external_ref")),
            updated_at: optional(&rec, col("updated_at")),
        });
    }
    Ok((rows, problems))
}

/// The line (as an editor counts) of the record the csv crate places at byte `at`. Its own
/// line count is off for CRLF files and skipped blank lines, and its byte offset is where the
/// previous record ended: the record starts at the first byte after that which is not a line
/// break.
fn line_of(text: &str, at: u64) -> u64 {
    let bytes = text.as_bytes();
    let mut at = usize::try_from(at).unwrap_or(bytes.len()).min(bytes.len());
    while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
        at += 1;
    }
    bytes[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn refuse(name: &str, problems: Vec<String>) -> Result<(), AppError> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{name}: {} in the decisions file; nothing was done. Fix {} and run again:",
        crate::output::count(problems.len() as u64, "problem", "problems"),
        if problems.len() == 1 { "it" } else { "them" }
    );
    for p in problems.iter().take(SHOWN) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > SHOWN {
        msg.push_str(&format!("\n  ... and {} more", problems.len() - SHOWN));
    }
    Err(AppError::Data(msg))
}

fn decide_rows(
    name: &str,
    rows: &[Row],
    mut problems: Vec<String>,
    plan: &Plan,
    keep: Keep,
    accept_proposed: bool,
) -> Result<Decided, AppError> {
    let groups = groups(plan);
    let mut where_is: HashMap<&str, usize> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        for c in &g.contacts {
            where_is.insert(&c.rev_user_id, i);
        }
    }
    let mut by_group: BTreeMap<usize, Vec<&Row>> = BTreeMap::new();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut ignored = Vec::new();
    for r in rows {
        if let Some(first) = seen.insert(&r.rev_user_id, r.line) {
            problems.push(format!(
                "line {}: {} is also on line {first}: keep one row per contact",
                r.line,
                display_id(&r.rev_user_id)
            ));
            continue;
        }
        match where_is.get(r.rev_user_id.as_str()) {
            Some(&g) => by_group.entry(g).or_default().push(r),
            // A file may cover more than this export (the full review file with a sample, or
            // with a newer export where a contact is gone): the row is counted and ignored.
            None => ignored.push(r.line),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut revoked = Vec::new();
    let mut notes = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let all = by_group.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(r) = all.iter().find(|r| r.decision == Some(Decision::Revoke)) {
            revoked.push((g.id.clone(), r.line));
        }
        // A `revoke` row decides nothing else: it reads as a blank decision.
        let rows: Vec<&Row> = all
            .iter()
            .copied()
            .filter(|r| r.decision != Some(Decision::Revoke))
            .collect();
        let outcome = match group_outcome(g, &rows, keep, accept_proposed, &mut notes) {
            Ok(o) => o,
            Err(mut p) => {
                problems.append(&mut p);
                continue;
            }
        };
        out.push((g.id.clone(), g.email.to_string(), outcome));
    }
    refuse(name, problems)?;
    Ok(Decided {
        groups: out,
        revoked,
        ignored,
        notes,
    })
}

fn contact<'g>(g: &Group<'g>, id: &str) -> &'g Contact {
    g.contacts
        .iter()
        .copied()
        .find(|c| c.rev_user_id == id)
        .expect("rows are matched to their group by id")
}

/// Why a row no longer describes its contact, if it does not. A spreadsheet's rewriting is
/// not a change: a date in the user's locale, a number as `1.0`, the case of an email.
fn stale(g: &Group<'_>, r: &Row) -> Option<String> {
    use crate::spreadsheet::{same_time, same_value};
    let c = contact(g, &r.rev_user_id);
    let differs = |what: &str, file: &Option<String>, now: &str, same: fn(&str, &str) -> bool| {
        file.as_deref().filter(|f| !same(f, now)).map(|f| {
            format!(
                "line {}: {what} was {f:?}, the export now has {now:?}",
                r.line
            )
        })
    };
    if let Some(id) = r.group.as_deref().filter(|id| *id != g.id) {
        return Some(format!(
            "line {}: the row was written for group {id}, the contact is now in {}",
            r.line, g.id
        ));
    }
    let same_email =
        |a: &str, b: &str| crate::detect::normalize_email(a) == crate::detect::normalize_email(b);
    differs("email", &r.email, &c.email, same_email)
        .or_else(|| differs("external_ref", &r.external_ref, &c.external_ref, same_value))
        .or_else(|| differs("updated_at", &r.updated_at, &c.updated_at, same_time))
}

fn group_outcome(
    g: &Group<'_>,
    rows: &[&Row],
    keep: Keep,
    accept_proposed: bool,
    notes: &mut Vec<String>,
) -> Result<Outcome, Vec<String>> {
    if let Some(reason) = rows.iter().find_map(|r| stale(g, r)) {
        return Ok(Outcome::Stale { reason });
    }
    let cells: Vec<Cell> = g
        .contacts
        .iter()
        .map(|c| {
            let row = rows.iter().find(|r| r.rev_user_id == c.rev_user_id);
            Cell {
                line: row.map(|r| r.line),
                word: row.and_then(|r| r.decision),
                adopt_ref: row.is_some_and(|r| r.adopt_ref),
                user_ref: c.ref_class() == RefClass::User,
            }
        })
        .collect();
    let clean_pair = g.kind == GroupKind::CleanPair;
    let verdict = rules::decide(clean_pair, &cells).map_err(|ps| {
        ps.into_iter()
            .map(|p| problem_text(g, &cells, p))
            .collect::<Vec<_>>()
    })?;
    let id = |i: usize| g.contacts[i].rev_user_id.clone();
    match verdict {
        Verdict::NotDup { line } => Ok(Outcome::NotDup { line }),
        Verdict::Skipped => Ok(Outcome::Skipped),
        Verdict::Partial { why } => {
            notes.push(match why {
                Partial::KeepWithoutMerge { line } => format!(
                    "line {line}: group {} ({}) has a keep but no merge row: nothing merges; \
                     mark the rows to merge (merge) or to leave (skip)",
                    g.id, g.email
                ),
                Partial::SomeSkipped => format!(
                    "group {} ({}): some rows skip, the others are blank: nothing merges; \
                     decide the blank rows",
                    g.id, g.email
                ),
            });
            Ok(Outcome::Undecided)
        }
        Verdict::Merge {
            keep: k,
            merge,
            adopt,
        } => Ok(merge_outcome(
            g,
            id(k),
            merge.into_iter().map(id).collect(),
            adopt.map(id),
            Source::Typed,
        )),
        Verdict::Blank => {
            let proposal = proposal_for(g, keep);
            let source = match g.kind {
                GroupKind::CleanPair => Source::CleanPairRule,
                GroupKind::NeedsReview(_)
                    if accept_proposed && g.contacts.len() <= ACCEPT_PROPOSED_MAX =>
                {
                    Source::Proposed
                }
                GroupKind::NeedsReview(_) => return Ok(Outcome::Undecided),
            };
            match proposal.keep {
                Some(k) => Ok(merge_outcome(g, k, proposal.merge, None, source)),
                None => Ok(Outcome::Undecided),
            }
        }
    }
}

/// A rule's problem in words, with the group's id and email.
fn problem_text(g: &Group<'_>, cells: &[Cell], p: Problem) -> String {
    let join = |ls: &[u64]| ls.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let who = |line: u64| {
        cells
            .iter()
            .position(|c| c.line == Some(line))
            .map(|i| display_id(&g.contacts[i].rev_user_id))
            .unwrap_or_default()
    };
    match p {
        Problem::TwoKeeps(ls) => format!(
            "lines {}: two keep in group {} ({}): exactly one contact survives",
            join(&ls),
            g.id,
            g.email
        ),
        Problem::MergeWithoutKeep(l) => format!(
            "line {l}: merge without a keep in group {} ({}): mark the survivor keep",
            g.id, g.email
        ),
        Problem::NotDupWithMerge { not_dup, other } => format!(
            "lines {not_dup}, {other}: not-dup and keep/merge in group {} ({}): a group that is \
             not a duplicate merges nothing; keep one of the two",
            g.id, g.email
        ),
        Problem::TwoAdopts(ls) => format!(
            "lines {}: adopt_ref on more than one row of group {}: the survivor takes one ref",
            join(&ls),
            g.id
        ),
        Problem::AdoptNotOnMerge(l) => format!(
            "line {l}: adopt_ref on {}, which is not merged: only a row marked merge hands its \
             user_ ref to the survivor (write merge on that row, or clear adopt_ref)",
            who(l)
        ),
        Problem::AdoptNotUser(l) => format!(
            "line {l}: adopt_ref on {} whose ref is not a user_ ref",
            who(l)
        ),
    }
}

/// A merge outcome with the default ref rule when the user named none: a survivor with its own
/// `user_` ref keeps it; otherwise the merged `user_` contact the proposal rules would keep.
fn merge_outcome(
    g: &Group<'_>,
    keep: String,
    merge: Vec<String>,
    adopt: Option<String>,
    source: Source,
) -> Outcome {
    let adopt_ref = adopt.or_else(|| {
        if contact(g, &keep).ref_class() == RefClass::User {
            return None;
        }
        let users: Vec<&Contact> = merge
            .iter()
            .map(|id| contact(g, id))
            .filter(|c| c.ref_class() == RefClass::User)
            .collect();
        match users.as_slice() {
            [] => None,
            [one] => Some(one.rev_user_id.clone()),
            many => super::propose(many, Keep::Auto).keep,
        }
    });
    Outcome::Merge {
        keep,
        merge,
        adopt_ref,
        source,
    }
}

/// The `user_` refs a merge leaves without a contact: every merged contact's `user_` ref but
/// the one the survivor adopts, and the survivor's own `user_` ref when it takes another one.
/// The next Plug login with one of them creates a new contact.
pub fn refs_left(plan_group: &Group<'_>, outcome: &Outcome) -> Vec<String> {
    let Outcome::Merge {
        keep,
        merge,
        adopt_ref,
        ..
    } = outcome
    else {
        return Vec::new();
    };
    let survivor = adopt_ref.as_ref().filter(|a| *a != keep).map(|_| keep);
    survivor
        .into_iter()
        .chain(merge.iter().filter(|id| Some(*id) != adopt_ref.as_ref()))
        .map(|id| contact(plan_group, id))
        .filter(|c| c.ref_class() == RefClass::User)
        .map(|c| c.external_ref.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_numbered_as_an_editor_counts_lines() {
        let lf: Vec<u64> = parse("rev_user_id,decision\na,keep\n\nb,\"merge\"\n", "f.csv")
            .unwrap()
            .0
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lf, [2, 4]);
        let (rows, problems) = parse(
            "rev_user_id;decision\r\na;keep\r\nb;Merge\r\n\r\nc;NOT DUP\r\nd;zap\r\n",
            "f.csv",
        )
        .unwrap();
        let lines: Vec<(u64, Option<Decision>)> =
            rows.iter().map(|r| (r.line, r.decision)).collect();
        assert_eq!(
            lines,
            [
                (2, Some(Decision::Keep)),
                (3, Some(Decision::Merge)),
                (5, Some(Decision::NotDup))
            ]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("line 6: \"zap\""), "{problems:?}");
    }
}
