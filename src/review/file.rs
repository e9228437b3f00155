//! The review file on disk: `reports/review-<timestamp>.csv`, written for spreadsheets (a
//! UTF-8 byte-order mark so Excel reads the accents, CRLF line ends, every field quoted where
//! needed) and read back however a spreadsheet saved it (see `decisions.rs`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::live::Facts;
use super::{Group, GroupKind, Proposal, groups, proposal_with, ref_kind};
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
/// With `--check-live`, `verified`, `state` and `account` are DevRev's `is_verified`, `state`
/// and `rev_org` of each needs-review contact (empty offline), as the proposal used them.
pub const EXTRA_COLUMNS: [&str; 4] = ["recorded", "verified", "state", "account"];

use crate::spreadsheet::defuse;

/// What the review file proposes for a group, the same wherever it is shown (the file, the
/// plan page): the rules of [`proposal_with`], with the savepoint's held contacts left out.
pub struct Proposer<'a> {
    pub keep: Keep,
    /// `--check-live`'s facts of the needs-review contacts (none offline).
    pub facts: Option<&'a Facts>,
    /// Every contact the savepoint keeps from any new merge, with why.
    pub held: &'a HashMap<String, String>,
}

impl Proposer<'_> {
    /// The proposal for `g`. A contact the savepoint holds (merged away, restored, ...) is
    /// never proposed: the run would refuse the merge. The rest of its group is proposed
    /// without it.
    pub fn propose(&self, g: &Group<'_>) -> Proposal {
        // Nothing held (the usual case): the group as it is, without a copy.
        if g.contacts.len() >= 2
            && !g
                .contacts
                .iter()
                .any(|c| self.held.contains_key(&c.rev_user_id))
        {
            return proposal_with(g, self.keep, self.facts);
        }
        let free = Group {
            contacts: g
                .contacts
                .iter()
                .copied()
                .filter(|c| !self.held.contains_key(&c.rev_user_id))
                .collect(),
            ..g.clone()
        };
        if free.contacts.len() < 2 {
            Proposal::none("fewer than two contacts the savepoint leaves free")
        } else if free.contacts.len() < g.contacts.len() && g.kind == GroupKind::CleanPair {
            Proposal::none("a contact is held by the savepoint")
        } else {
            proposal_with(&free, self.keep, self.facts)
        }
    }

    /// [`Proposer::propose`] for a needs-review group of the plan.
    pub fn propose_review(&self, g: &crate::detect::ReviewGroup) -> Proposal {
        self.propose(&Group {
            id: super::group_id(&g.email),
            kind: GroupKind::NeedsReview(g.reason.describe()),
            email: &g.email,
            contacts: g.contacts.iter().collect(),
        })
    }
}

/// Writes the review file for `plan` at `path` (0600, atomically; a new name from
/// `fsutil::unique_path`, known before it is written so the plan page can name it) and
/// returns the path.
///
/// `recorded` is the `recorded` column by group id (see [`EXTRA_COLUMNS`]).
/// `held` is every contact the savepoint keeps from any new merge, with why: never proposed.
pub fn write(
    path: &Path,
    plan: &Plan,
    keep: Keep,
    recorded: &BTreeMap<String, String>,
    facts: Option<&Facts>,
    held: &HashMap<String, String>,
) -> Result<PathBuf, AppError> {
    let cant = |e: std::io::Error| {
        AppError::CantCreate(format!(
            "cannot write the review file {}: {e}",
            path.display()
        ))
    };
    fsutil::write_private_atomic_with(path, false, |w| {
        write_rows(w, plan, keep, recorded, facts, held)
    })
    .map_err(cant)?;
    Ok(path.to_path_buf())
}

fn write_rows(
    w: &mut dyn Write,
    plan: &Plan,
    keep: Keep,
    recorded: &BTreeMap<String, String>,
    facts: Option<&Facts>,
    held: &HashMap<String, String>,
) -> std::io::Result<()> {
    w.write_all("\u{feff}".as_bytes())?;
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(w);
    csv.write_record(COLUMNS.iter().chain(&EXTRA_COLUMNS))?;
    let proposer = Proposer { keep, facts, held };
    // Reused for every row: no allocation per row for what is formatted.
    let (mut tickets, mut display_id) = (String::new(), String::new());
    for g in groups(plan) {
        let proposal = proposer.propose(&g);
        let rec = recorded.get(&g.id).map(String::as_str).unwrap_or("");
        // Once per group, not per row: a million-row export has about a million rows here.
        let merge_why = proposal
            .keep
            .as_deref()
            .map(|k| format!("merge into {}", crate::detect::display_id(k)))
            .unwrap_or_else(|| "merge into ".into());
        for c in &g.contacts {
            let proposed = match &proposal.keep {
                Some(k) if *k == c.rev_user_id => "keep",
                Some(_) if proposal.merge.contains(&c.rev_user_id) => "merge",
                _ => "",
            };
            let fact = facts.and_then(|f| f.get(&c.rev_user_id));
            let why: Cow<'_, str> = match (proposed, &g.kind) {
                _ if held.contains_key(&c.rev_user_id) => {
                    format!("held by the savepoint: {}", held[&c.rev_user_id]).into()
                }
                ("keep", _) => proposal.why.as_str().into(),
                ("merge", _) => merge_why.as_str().into(),
                (_, GroupKind::CleanPair) => "".into(),
                _ if c.ref_class() == crate::detect::RefClass::Drop => {
                    "a -drop- ref: left alone".into()
                }
                _ if fact.is_some_and(|f| !f.active()) => "not active: left alone".into(),
                _ if proposal.keep.is_some() && fact.and_then(|f| f.verified) == Some(false) => {
                    "unverified: DevRev refuses it into the verified survivor".into()
                }
                _ if proposal.keep.is_some() => "left alone".into(),
                _ => proposal.why.as_str().into(),
            };
            tickets.clear();
            if let Some(n) = c.ticket_count {
                let _ = write!(tickets, "{n}");
            }
            display_id.clear();
            crate::detect::push_display_id(&c.rev_user_id, &mut display_id);
            let verified = match fact.and_then(|f| f.verified) {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            };
            let state = fact
                .map(|f| f.state.as_deref().unwrap_or("active"))
                .unwrap_or("");
            let account = fact.and_then(|f| f.account.as_deref()).unwrap_or("");
            // Every cell escaped: `why` starts with `--keep ...`, and an email or a name
            // can start with anything.
            csv.write_record(
                [
                    g.id.as_str(),
                    g.kind.text(),
                    g.email,
                    &c.rev_user_id,
                    &display_id,
                    &c.external_ref,
                    ref_kind(c),
                    &c.display_name,
                    &c.created_at,
                    &c.updated_at,
                    &tickets,
                    proposed,
                    &why,
                    "",
                    "",
                    "",
                    rec,
                    verified,
                    state,
                    account,
                ]
                .map(defuse)
                .iter()
                .map(|c| c.as_bytes()),
            )?;
        }
    }
    csv.flush()
}
