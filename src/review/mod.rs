//! The review file: every group of contacts that share an email, one row per contact, with a
//! proposal a person can check and a `decision` column they fill in a spreadsheet.
//!
//! Detection merges only clean pairs by rule; every other group needs a person. This module
//! turns the plan into rows ([`rows_of`]), proposes a survivor by a documented order of rules
//! ([`propose`]), and reads the user's decisions back ([`decisions`]), refusing bad ones with
//! the file and line before anything is sent.

pub mod decisions;
mod file;
pub mod lasting;
pub mod live;
mod propose;
pub mod rules;

use sha2::{Digest, Sha256};

use crate::detect::{Contact, Plan, RefClass};
use crate::options::Keep;

pub use file::{COLUMNS, Proposer, write};
pub use propose::{Proposal, propose, propose_live};

/// What kind of group a review row belongs to (the `kind` column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKind {
    /// One `REVU-` and one `user_` contact: merged by the `--keep` rule unless decided.
    CleanPair,
    /// Anything else, with detection's reason in words.
    NeedsReview(&'static str),
}

impl GroupKind {
    pub fn text(&self) -> &'static str {
        match self {
            GroupKind::CleanPair => "clean pair",
            GroupKind::NeedsReview(why) => why,
        }
    }
}

/// One group of the plan, as the review file lists it.
#[derive(Debug, Clone)]
pub struct Group<'p> {
    /// Stable id: the same for the same email in every export ([`group_id`]).
    pub id: String,
    pub kind: GroupKind,
    pub email: &'p str,
    pub contacts: Vec<&'p Contact>,
}

/// A group's id: `G-` and 10 hex digits of the normalized email's SHA-256. The email is what
/// makes contacts a group, so an export taken next week gives the group the same id (a row
/// whose contact changed is caught by the stale check, not by the id).
pub fn group_id(normalized_email: &str) -> String {
    let mut h = Sha256::new();
    h.update(normalized_email.as_bytes());
    let hex = crate::fsutil::sha256_hex(h);
    format!("G-{}", &hex[..10])
}

/// Every group of `plan`: clean pairs first (in CSV order), then the needs-review groups.
pub fn groups(plan: &Plan) -> Vec<Group<'_>> {
    let pairs = plan.pairs.iter().map(|p| Group {
        id: group_id(&p.email),
        kind: GroupKind::CleanPair,
        email: &p.email,
        contacts: vec![&p.primary, &p.secondary],
    });
    let review = plan.needs_review.iter().map(|g| Group {
        id: group_id(&g.email),
        kind: GroupKind::NeedsReview(g.reason.describe()),
        email: &g.email,
        contacts: g.contacts.iter().collect(),
    });
    pairs.chain(review).collect()
}

/// The `ref_kind` column's words.
pub fn ref_kind(c: &Contact) -> &'static str {
    match c.ref_class() {
        RefClass::Revu => "REVU-",
        RefClass::User => "user_",
        RefClass::Drop => "-drop-",
        RefClass::Other => "other",
    }
}

/// The proposal for a clean pair is the `--keep` rule itself (what a run merges by default).
fn clean_pair_proposal(g: &Group<'_>, keep: Keep) -> Proposal {
    propose(&g.contacts, keep)
}

/// The proposal for any group.
pub fn proposal_for(g: &Group<'_>, keep: Keep) -> Proposal {
    proposal_with(g, keep, None)
}

/// [`proposal_for`] with the live facts of `--check-live` (needs-review groups only: a clean
/// pair's live check is the merge's own).
pub fn proposal_with(g: &Group<'_>, keep: Keep, facts: Option<&live::Facts>) -> Proposal {
    match g.kind {
        GroupKind::CleanPair => clean_pair_proposal(g, keep),
        GroupKind::NeedsReview(_) => propose_live(&g.contacts, keep, facts),
    }
}

/// The preview's lines for a decisions file: the counts, then each merging group (survivor,
/// contacts merged into it, the ref it adopts, the `user_` refs left without a contact), then
/// the stale groups with why.
pub fn decided_text(plan: &Plan, decided: &decisions::Decided, file: &std::path::Path) -> String {
    use crate::detect::display_id;
    use crate::output::{count, safe};
    use decisions::Outcome;
    let [not_dup, skipped, undecided, stale] = decided.counts();
    // Clean pairs and groups counted apart: each once.
    let (mut pairs_n, mut groups_n, mut merged) = (0, 0, 0);
    for ((_, _, o), g) in decided.groups.iter().zip(groups(plan)) {
        if let Outcome::Merge { merge, .. } = o {
            if g.kind == GroupKind::CleanPair {
                pairs_n += 1;
            } else {
                groups_n += 1;
                merged += merge.len();
            }
        }
    }
    let mut out = format!(
        "\nDecisions from {}: {} and {} ({} merged away) to merge; {not_dup} not duplicates, \
         {skipped} skipped, {undecided} undecided, {stale} stale\n",
        file.display(),
        count(pairs_n as u64, "clean pair", "clean pairs"),
        count(groups_n as u64, "group", "groups"),
        count(merged as u64, "contact", "contacts"),
    );
    if !decided.ignored.is_empty() {
        out.push_str(&format!(
            "  {} of contacts in no group of this export ignored (line{} {})\n",
            count(decided.ignored.len() as u64, "row", "rows"),
            if decided.ignored.len() == 1 { "" } else { "s" },
            decided
                .ignored
                .iter()
                .take(10)
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
                + if decided.ignored.len() > 10 {
                    ", ..."
                } else {
                    ""
                }
        ));
    }
    for n in &decided.notes {
        out.push_str(&format!("  {}\n", safe(n)));
    }
    let all = groups(plan);
    for ((id, email, outcome), g) in decided.groups.iter().zip(&all) {
        match outcome {
            Outcome::Merge {
                keep,
                merge,
                adopt_ref,
                source,
            } => {
                let from = match source {
                    decisions::Source::Typed => "decided",
                    decisions::Source::Proposed => "proposed (--accept-proposed)",
                    decisions::Source::CleanPairRule => "clean pair, --keep rule",
                };
                out.push_str(&format!(
                    "  {id}  {}  keep {} <- {}{}  [{from}]\n",
                    safe(email),
                    display_id(keep),
                    merge
                        .iter()
                        .map(|m| display_id(m))
                        .collect::<Vec<_>>()
                        .join(", "),
                    adopt_ref
                        .as_deref()
                        .map(|a| format!("; adopts the ref of {}", display_id(a)))
                        .unwrap_or_default()
                ));
                let left = decisions::refs_left(g, outcome);
                if !left.is_empty() {
                    out.push_str(&format!(
                        "      refs left without a contact (the next Plug login with one creates a new contact): {}\n",
                        left.iter().map(|r| safe(r).into_owned()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            Outcome::Stale { reason } => {
                out.push_str(&format!(
                    "  {id}  {}  stale, left alone: {}\n",
                    safe(email),
                    safe(reason)
                ));
            }
            Outcome::Recorded { decision, at, file } => {
                out.push_str(&format!(
                    "  {id}  {}  {} (recorded {} from {}; write revoke on a row to undo it)\n",
                    safe(email),
                    decision.word(),
                    at.format("%Y-%m-%d %H:%M UTC"),
                    file.display()
                ));
            }
            Outcome::NotDup { .. } | Outcome::Skipped | Outcome::Undecided => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_stable_and_short() {
        let a = group_id("ana@x.com");
        assert_eq!(a, group_id("ana@x.com"));
        assert_ne!(a, group_id("bob@x.com"));
        assert!(a.starts_with("G-") && a.len() == 12, "{a}");
    }
}
