//! Decided groups in the merge run (`--decisions FILE`, `--accept-proposed`): what the
//! decisions leave of the clean pairs, and every decided group as the chain of merges that
//! takes it to one survivor.
//!
//! A group of n contacts merges as n-1 records, each a pair `keep <- member` run by the same
//! saga as a clean pair (backup verified first, one journaled merge request, exact evidence,
//! reconcile, resume after any crash). Each is its own record so that a crash in the middle of
//! a group resumes exactly where it stood, and the ledger still sees every contact. The run
//! starts a member only once the one before it is merged and reconciled (`scheduler/hand.rs`), and
//! only the last record adopts the `user_` ref the decisions chose: moved earlier, the ref
//! would have to be moved again by every later merge.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::journal::{AdoptRef, GroupLink, PairStatus};
use super::savepoint::Savepoint;
use crate::detect::{Contact, Pair, Plan, display_id};
use crate::review::decisions::{self, Decided, Outcome, Source};
use crate::review::{self, GroupKind};

/// The run's work as the decisions give it.
#[derive(Debug, Default)]
pub struct DecidedWork {
    /// The clean pairs to merge, each in the direction decided (the `--keep` rule for a blank
    /// decision, turned round when the user kept the other contact). Pairs decided `not-dup`,
    /// `skip`, stale or undecided are not here.
    pub pairs: Vec<Pair>,
    /// Every merge of every decided needs-review group, group after group, each in order.
    pub members: Vec<(Pair, GroupLink)>,
    /// Every group with its decision, for the report.
    pub groups: Vec<GroupPlan>,
}

/// One group as the decisions left it.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub id: String,
    pub email: String,
    pub clean_pair: bool,
    pub outcome: Outcome,
    /// `user_` refs the merge leaves without a contact.
    pub refs_left: Vec<String>,
    /// The `user_` ref the survivor takes.
    pub adopts_ref: Option<String>,
}

/// Splits the plan by the decisions. `plan.pairs` and `plan.needs_review` are consumed.
///
/// A group's merges run in one order whatever the order of the file's rows (by the members'
/// ids): a file re-sorted between two runs must not move the ref adoption to a member that an
/// earlier run already merged without it. The adoption rides on the last merge not sent yet
/// (`journal`); when every merge of the group was sent without it, the report says it was not
/// adopted.
pub fn apply(
    plan: &mut Plan,
    decided: &Decided,
    file: &Path,
    journal: &super::journal::SavepointFile,
) -> DecidedWork {
    let mut work = DecidedWork::default();
    let outcomes: HashMap<&str, &Outcome> = decided
        .groups
        .iter()
        .map(|(id, _, o)| (id.as_str(), o))
        .collect();
    for g in review::groups(plan) {
        let Some(outcome) = outcomes.get(g.id.as_str()) else {
            continue;
        };
        let adopts_ref = match outcome {
            Outcome::Merge {
                keep,
                adopt_ref: Some(a),
                ..
            } if a != keep => g
                .contacts
                .iter()
                .find(|c| c.rev_user_id == *a)
                .map(|c| c.external_ref.trim().to_string()),
            _ => None,
        };
        work.groups.push(GroupPlan {
            adopts_ref,
            id: g.id.clone(),
            email: g.email.to_string(),
            clean_pair: g.kind == GroupKind::CleanPair,
            outcome: (*outcome).clone(),
            refs_left: decisions::refs_left(&g, outcome),
        });
    }
    for pair in std::mem::take(&mut plan.pairs) {
        let id = review::group_id(&pair.email);
        match outcomes.get(id.as_str()) {
            Some(Outcome::Merge { keep, .. }) if *keep == pair.primary.rev_user_id => {
                work.pairs.push(pair);
            }
            Some(Outcome::Merge { keep, .. }) if *keep == pair.secondary.rev_user_id => {
                work.pairs.push(pair.swapped());
            }
            // not-dup, skip, stale, undecided: left alone (reported from `groups`).
            _ => {}
        }
    }
    for group in std::mem::take(&mut plan.needs_review) {
        let id = review::group_id(&group.email);
        if let Some(Outcome::Merge {
            keep,
            merge,
            adopt_ref,
            ..
        }) = outcomes.get(id.as_str())
        {
            let decided = MergeDecision {
                keep,
                merge,
                adopt_ref: adopt_ref.as_deref(),
            };
            work.members
                .extend(group_members(&group, &id, decided, file, journal));
        }
    }
    work
}

/// What one needs-review group's decision merges.
#[derive(Clone, Copy)]
struct MergeDecision<'a> {
    keep: &'a str,
    merge: &'a [String],
    adopt_ref: Option<&'a str>,
}

/// A decided group's merges, one per member into the survivor, in a fixed order; the last
/// member whose merge was not sent yet adopts the chosen ref.
fn group_members(
    group: &crate::detect::ReviewGroup,
    id: &str,
    decided: MergeDecision<'_>,
    file: &Path,
    journal: &super::journal::SavepointFile,
) -> Vec<(Pair, GroupLink)> {
    let MergeDecision {
        keep,
        merge,
        adopt_ref,
    } = decided;
    let mut out = Vec::new();
    let find = |rid: &str| group.contacts.iter().find(|c| c.rev_user_id == rid);
    let Some(survivor) = find(keep) else {
        return out;
    };
    let mut members: Vec<&Contact> = merge.iter().filter_map(|m| find(m)).collect();
    members.sort_by(|a, b| a.rev_user_id.cmp(&b.rev_user_id));
    // A record whose merge may have left keeps the link it was sent with.
    let sent = |m: &Contact| {
        journal
            .pairs
            .get(&super::journal::pair_key(keep, &m.rev_user_id))
            .is_some_and(|r| r.merge_in_flight() || r.status.is_final())
    };
    let adopter = members.iter().rposition(|m| !sent(m));
    let adopt = adopt_ref
        .filter(|a| *a != keep && merge.iter().any(|m| m == a))
        .and_then(find)
        .map(|c| AdoptRef {
            external_ref: c.external_ref.trim().to_string(),
            holder: c.rev_user_id.clone(),
        });
    let len = members.len() as u32;
    for (i, m) in members.iter().enumerate() {
        let last = Some(i) == adopter;
        out.push((
            Pair {
                email: group.email.clone(),
                primary: survivor.clone(),
                secondary: (*m).clone(),
            },
            GroupLink {
                id: id.to_string(),
                index: i as u32,
                len,
                adopt: if last { adopt.clone() } else { None },
                decisions: file.to_path_buf(),
            },
        ));
    }
    out
}

/// A run without `--decisions`: clean pairs of a group with a recorded `not-dup` or `skip`
/// in force are taken out of `pairs`, and returned as the report's groups.
pub fn honour_recorded(
    pairs: &mut Vec<Pair>,
    recorded: &std::collections::BTreeMap<String, super::journal::GroupDecision>,
) -> Vec<GroupPlan> {
    if !recorded.values().any(|d| d.holds()) {
        return Vec::new();
    }
    let mut held = Vec::new();
    pairs.retain(|p| {
        let id = review::group_id(&p.email);
        match recorded.get(&id).filter(|d| d.holds()) {
            Some(d) => {
                tracing::info!(pair = %p.email, "not merged: {} recorded on {} from {}", d.decision.word(), d.at, d.file.display());
                held.push(GroupPlan {
                    id,
                    email: p.email.clone(),
                    clean_pair: true,
                    outcome: Outcome::Recorded {
                        decision: d.decision,
                        at: d.at,
                        file: d.file.clone(),
                    },
                    refs_left: Vec::new(),
                    adopts_ref: None,
                });
                false
            }
            None => true,
        }
    });
    held
}

/// One group in the merge report (`groups` in the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct GroupEntry {
    pub group: String,
    pub email: String,
    /// A clean pair the file decided (counted with the pairs, not with the groups).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub clean_pair: bool,
    /// `merged` (every member), `stopped` (at `stopped_at`), `in_progress` (not all run yet),
    /// `not_dup`, `skipped`, `undecided`, `stale`.
    pub outcome: &'static str,
    /// Where the decision came from: `typed`, `proposed` (`--accept-proposed`), `keep rule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub survivor: Option<String>,
    /// Each contact merged (or to be merged) into the survivor, in order, with its record's
    /// status (`not_started` when it has none).
    pub members: Vec<GroupMember>,
    /// The first member that did not merge, and why: the rest were not started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<GroupStop>,
    /// The `user_` ref the survivor takes, with [`GroupEntry::ref_adoption`] saying where
    /// that stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopts_ref: Option<String>,
    /// What the journal says of the adoption of `adopts_ref`: `adopted`, `pending` (DevRev
    /// has not freed it yet; the next run retries), `not_adopted` (with the reason), or
    /// `after_last_merge` (the group's merges are not all done yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_adoption: Option<&'static str>,
    /// `user_` refs left without a contact: the next Plug login with one creates a new
    /// contact, the price of the merge decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refs_left: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    pub rev_user_id: String,
    pub display_id: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStop {
    pub rev_user_id: String,
    pub display_id: String,
    pub status: String,
    pub reason: String,
}

/// The report's groups, from the plan and where each record stands now.
pub fn entries(plans: &[GroupPlan], sp: &Savepoint) -> Vec<GroupEntry> {
    plans.iter().map(|g| entry(g, sp)).collect()
}

fn status_word(s: PairStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn entry(g: &GroupPlan, sp: &Savepoint) -> GroupEntry {
    let mut e = GroupEntry {
        group: g.id.clone(),
        email: g.email.clone(),
        clean_pair: g.clean_pair,
        outcome: "",
        decided_by: None,
        survivor: None,
        members: Vec::new(),
        stopped_at: None,
        adopts_ref: None,
        ref_adoption: None,
        refs_left: Vec::new(),
        reason: None,
    };
    match &g.outcome {
        Outcome::NotDup { line } => {
            e.outcome = "not_dup";
            e.reason = Some(format!("not-dup on line {line}"));
        }
        Outcome::Skipped => e.outcome = "skipped",
        Outcome::Undecided => e.outcome = "undecided",
        Outcome::Recorded { decision, at, file } => {
            e.outcome = match decision {
                super::journal::LastingDecision::NotDup => "not_dup",
                super::journal::LastingDecision::Skip => "skipped",
            };
            e.decided_by = Some("recorded");
            e.reason = Some(format!(
                "{} recorded in the savepoint on {} from {}",
                decision.word(),
                at.format("%Y-%m-%d %H:%M UTC"),
                file.display()
            ));
        }
        Outcome::Stale { reason } => {
            e.outcome = "stale";
            e.reason = Some(reason.clone());
        }
        Outcome::Merge {
            keep,
            merge,
            source,
            ..
        } => merge_entry(&mut e, g, sp, keep, merge, source),
    }
    e
}

/// A decided group's entry: its members as their records stand, where it stopped, its
/// adoption, and its outcome.
fn merge_entry(
    e: &mut GroupEntry,
    g: &GroupPlan,
    sp: &Savepoint,
    keep: &str,
    merge: &[String],
    source: &Source,
) {
    e.decided_by = Some(match source {
        Source::Typed => "typed",
        Source::Proposed => "proposed",
        Source::CleanPairRule => "keep rule",
    });
    e.survivor = Some(keep.to_string());
    e.refs_left = g.refs_left.clone();
    let mut done = 0;
    let mut adoption = Adoption::default();
    for m in merge {
        // Either direction (a clean pair `--keep auto` turned round is journaled as
        // turned): the one that merged tells, else the one there is.
        let ways = [
            sp.get(&super::journal::pair_key(keep, m)),
            sp.get(&super::journal::pair_key(m, keep)),
        ];
        let rec = ways
            .iter()
            .flatten()
            .find(|r| r.status.is_final() || r.status == PairStatus::RefAdoptionPending)
            .or(ways.iter().flatten().next())
            .copied();
        if let Some(r) = rec {
            adoption.see(r);
        }
        let status = rec.map_or_else(|| "not_started".to_string(), |r| status_word(r.status));
        let merged = rec.is_some_and(|r| {
            matches!(
                r.status,
                PairStatus::Merged | PairStatus::AlreadyMerged | PairStatus::RefAdoptionPending
            )
        });
        if merged {
            done += 1;
        } else if e.stopped_at.is_none()
            && let Some(r) = rec
            && r.status != PairStatus::InProgress
        {
            e.stopped_at = Some(GroupStop {
                rev_user_id: m.clone(),
                display_id: display_id(m),
                status: status.clone(),
                reason: r
                    .skip
                    .as_ref()
                    .map(ToString::to_string)
                    .or_else(|| r.error.as_ref().map(ToString::to_string))
                    .unwrap_or_else(|| status.replace('_', " ")),
            });
        }
        e.members.push(GroupMember {
            rev_user_id: m.clone(),
            display_id: display_id(m),
            status,
        });
    }
    let all_merged = done == merge.len();
    if let Some(r) = g.adopts_ref.clone() {
        adoption.report(e, r, all_merged);
    }
    let started = e.members.iter().any(|m| m.status != "not_started");
    e.outcome = if all_merged {
        "merged"
    } else if e.stopped_at.is_some() {
        "stopped"
    } else if started {
        "in_progress"
    } else {
        "not_started"
    };
}

/// What a group's records say of its ref adoption, member by member.
#[derive(Default)]
struct Adoption {
    /// A record carrying the adoption adopted it.
    adopted: bool,
    /// A record carrying it ended with the adoption pending (and why).
    pending: Option<String>,
    /// The record carrying it was found merged before this tool asked: no step ran after.
    skipped: bool,
}

impl Adoption {
    fn see(&mut self, r: &super::journal::PairRecord) {
        // A group's merge carrying the adoption, or a clean pair under `--keep revu`.
        if !r.adopts() {
            return;
        }
        self.adopted |= r.external_ref_adopted.is_some();
        if r.status == PairStatus::RefAdoptionPending {
            self.pending = Some(r.ref_adoption_pending.clone().unwrap_or_default());
        }
        self.skipped |= r.status == PairStatus::AlreadyMerged;
    }

    /// Sets the entry's adoption from what the journal holds, never from the plan.
    fn report(self, e: &mut GroupEntry, r: String, all_merged: bool) {
        let (state, why) = if self.adopted {
            ("adopted", None)
        } else if let Some(why) = self.pending {
            (
                "pending",
                Some(format!(
                    "{r} is not on the survivor yet ({why}); re-run to retry the adoption"
                )),
            )
        } else if self.skipped {
            (
                "not_adopted",
                Some(format!(
                    "{r} was not adopted: the contact that held it was already merged into the \
                     survivor before this tool asked; set it on the survivor by hand"
                )),
            )
        } else if all_merged {
            (
                "not_adopted",
                Some(format!(
                    "{r} was not adopted: every merge of the group was sent without the \
                     adoption (an earlier run decided the group otherwise); set it on the \
                     survivor by hand"
                )),
            )
        } else {
            ("after_last_merge", None)
        };
        if state == "not_adopted" {
            e.refs_left.push(r.clone());
        }
        e.ref_adoption = Some(state);
        e.reason = why.or(e.reason.take());
        e.adopts_ref = Some(r);
    }
}

/// With `--max-merges`: which decided groups the canary reached, and why the others were not.
fn canary_text(groups: &[GroupEntry], n: usize) -> String {
    let merging: Vec<&GroupEntry> = groups
        .iter()
        .filter(|g| !g.clean_pair && g.survivor.is_some())
        .collect();
    if merging.is_empty() {
        return String::new();
    }
    let ran: Vec<String> = merging
        .iter()
        .filter(|g| g.outcome != "not_started")
        .map(|g| format!("{} ({})", g.group, crate::output::safe(&g.email)))
        .collect();
    let waiting = merging.len() - ran.len();
    let mut out = format!(
        "  Canary (--max-merges {n}): {} of {} decided groups reached{}\n",
        ran.len(),
        merging.len(),
        if ran.is_empty() {
            String::new()
        } else {
            format!(": {}", ran.join(", "))
        }
    );
    if waiting > 0 {
        out.push_str(&format!(
            "    {waiting} not started: the clean pairs merge first, then the groups, each \
             merge of a group counting as one; the next run with the file goes on (a larger \
             --max-merges reaches more)\n"
        ));
    }
    out
}

/// The console's lines for the groups of a decisions file (empty without one): the decided
/// groups and the clean pairs the file (or the savepoint) kept from merging, each counted once,
/// only the non-zero counts, statuses in words.
pub fn summary_text(groups: &[GroupEntry], canary: Option<usize>) -> String {
    use crate::output::safe;
    let counts = |clean: bool| {
        let of: Vec<&GroupEntry> = groups.iter().filter(|g| g.clean_pair == clean).collect();
        let words = [
            ("merged", "merged"),
            ("stopped", "stopped"),
            ("in_progress", "in progress"),
            ("not_started", "not started"),
            ("not_dup", "not duplicates"),
            ("skipped", "skipped"),
            ("undecided", "undecided"),
            ("stale", "stale"),
        ];
        let parts: Vec<String> = words
            .iter()
            // A clean pair that merges is counted with the pairs: here only those the
            // decisions kept from merging.
            .filter(|(code, _)| {
                !clean || matches!(*code, "not_dup" | "skipped" | "undecided" | "stale")
            })
            .map(|(code, word)| (of.iter().filter(|g| g.outcome == *code).count(), word))
            .filter(|(n, _)| *n > 0)
            .map(|(n, word)| format!("{n} {word}"))
            .collect();
        parts.join(", ")
    };
    let mut out = String::new();
    let decided = counts(false);
    if !decided.is_empty() {
        out.push_str(&format!("  Decided groups:  {decided}\n"));
    }
    let pairs = counts(true);
    if !pairs.is_empty() {
        out.push_str(&format!("  Clean pairs left by the decisions: {pairs}\n"));
    }
    if let Some(n) = canary {
        out.push_str(&canary_text(groups, n));
    }
    for g in groups {
        if let Some(s) = &g.stopped_at {
            out.push_str(&format!(
                "    {} {}: stopped at {} ({}): {}; the rest of the group was not started\n",
                g.group,
                safe(&g.email),
                s.display_id,
                s.status.replace('_', " "),
                safe(&s.reason)
            ));
        }
        if g.outcome == "merged" && !g.refs_left.is_empty() {
            out.push_str(&format!(
                "    {} {}: refs left without a contact (the next Plug login with one creates a new contact): {}\n",
                g.group,
                safe(&g.email),
                g.refs_left
                    .iter()
                    .map(|r| safe(r).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let (Some(r), Some(state)) = (&g.adopts_ref, g.ref_adoption)
            && state != "adopted"
            && state != "after_last_merge"
        {
            out.push_str(&format!(
                "    {} {}: {} {}: {}\n",
                g.group,
                safe(&g.email),
                safe(r),
                state.replace('_', " "),
                safe(g.reason.as_deref().unwrap_or(""))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::detect::{DetectOptions, plan_from_reader};
    use crate::options::Keep;

    const CSV: &str = "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT\n\
        don:a:revu/P1,P,p@x.com,REVU-P1,,2024-01-01 00:00:00,,1\n\
        don:a:revu/S1,S,p@x.com,user_s1,,2024-01-02 00:00:00,,1\n\
        don:a:revu/P2,Q,q@x.com,REVU-P2,,2024-01-01 00:00:00,,1\n\
        don:a:revu/S2,T,q@x.com,user_s2,,2024-01-02 00:00:00,,1\n\
        don:a:revu/P3,R,r@x.com,REVU-P3,,2024-01-01 00:00:00,,1\n\
        don:a:revu/S3,U,r@x.com,user_s3,,2024-01-02 00:00:00,,1\n\
        don:a:revu/G1,G,g@x.com,user_g1,,2024-01-01 00:00:00,,1\n\
        don:a:revu/G2,G,g@x.com,user_g2,,2024-01-02 00:00:00,,1\n\
        don:a:revu/G3,G,g@x.com,user_g3,,2024-01-03 00:00:00,,1\n";

    fn plan() -> Plan {
        plan_from_reader(
            "t.csv",
            Cursor::new(CSV.as_bytes().to_vec()),
            &DetectOptions {
                keep: Keep::Revu,
                email_domain: None,
            },
        )
        .unwrap()
    }

    fn merge(keep: &str, merge: &[&str], adopt: Option<&str>, source: Source) -> Outcome {
        Outcome::Merge {
            keep: keep.into(),
            merge: merge.iter().map(|m| m.to_string()).collect(),
            adopt_ref: adopt.map(str::to_string),
            source,
        }
    }

    #[test]
    fn decisions_split_the_plan_into_pairs_as_decided_and_chains_of_group_merges() {
        let mut plan = plan();
        let id = |e: &str| review::group_id(e);
        let decided = Decided {
            groups: vec![
                (
                    id("p@x.com"),
                    "p@x.com".into(),
                    merge(
                        "don:a:revu/P1",
                        &["don:a:revu/S1"],
                        None,
                        Source::CleanPairRule,
                    ),
                ),
                // Kept the user_ contact: turned round.
                (
                    id("q@x.com"),
                    "q@x.com".into(),
                    merge("don:a:revu/S2", &["don:a:revu/P2"], None, Source::Typed),
                ),
                (id("r@x.com"), "r@x.com".into(), Outcome::NotDup { line: 6 }),
                (
                    id("g@x.com"),
                    "g@x.com".into(),
                    merge(
                        "don:a:revu/G2",
                        &["don:a:revu/G3", "don:a:revu/G1"],
                        Some("don:a:revu/G3"),
                        Source::Typed,
                    ),
                ),
            ],
            ..Decided::default()
        };
        let w = apply(
            &mut plan,
            &decided,
            Path::new("d.csv"),
            &super::super::journal::SavepointFile::new(),
        );
        let pairs: Vec<(&str, &str)> = w
            .pairs
            .iter()
            .map(|p| {
                (
                    p.primary.rev_user_id.as_str(),
                    p.secondary.rev_user_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("don:a:revu/P1", "don:a:revu/S1"),
                ("don:a:revu/S2", "don:a:revu/P2")
            ]
        );
        let members: Vec<(&str, u32, u32, Option<&str>)> = w
            .members
            .iter()
            .map(|(p, g)| {
                assert_eq!(p.primary.rev_user_id, "don:a:revu/G2");
                assert_eq!(g.decisions, Path::new("d.csv"));
                (
                    p.secondary.rev_user_id.as_str(),
                    g.index,
                    g.len,
                    g.adopt.as_ref().map(|a| a.external_ref.as_str()),
                )
            })
            .collect();
        // In the members' id order, whatever the file's; the ref adopted on the last merge
        // only, from its holder.
        assert_eq!(
            members,
            [
                ("don:a:revu/G1", 0, 2, None),
                ("don:a:revu/G3", 1, 2, Some("user_g3"))
            ]
        );
        assert_eq!(
            w.members[1].1.adopt.as_ref().unwrap().holder,
            "don:a:revu/G3"
        );
        let g = w.groups.iter().find(|g| g.email == "g@x.com").unwrap();
        // The survivor's own user_ ref, replaced by the one it adopts, is left too.
        assert_eq!(g.refs_left, ["user_g2", "user_g1"]);
        assert_eq!(g.adopts_ref.as_deref(), Some("user_g3"));
        assert_eq!(w.groups.len(), 4);
    }

    /// A file re-sorted between two runs: the group's merges keep their order, and the
    /// adoption goes on the last merge not sent yet, never on one an earlier run merged
    /// without it.
    #[test]
    fn row_order_never_moves_the_adoption_onto_a_merge_already_sent() {
        use crate::merge::journal::{PairRecord, PairStatus, SavepointFile, pair_key};
        let decided = |order: &[&str]| Decided {
            groups: vec![(
                review::group_id("g@x.com"),
                "g@x.com".into(),
                merge("don:a:revu/G1", order, Some("don:a:revu/G3"), Source::Typed),
            )],
            ..Decided::default()
        };
        let order = |w: &DecidedWork| -> Vec<(String, bool)> {
            w.members
                .iter()
                .map(|(p, g)| (p.secondary.rev_user_id.clone(), g.adopt.is_some()))
                .collect()
        };
        let fresh = SavepointFile::new();
        let a = apply(
            &mut plan(),
            &decided(&["don:a:revu/G2", "don:a:revu/G3"]),
            Path::new("d.csv"),
            &fresh,
        );
        let b = apply(
            &mut plan(),
            &decided(&["don:a:revu/G3", "don:a:revu/G2"]),
            Path::new("d.csv"),
            &fresh,
        );
        assert_eq!(order(&a), order(&b));
        assert_eq!(
            order(&a),
            [
                ("don:a:revu/G2".to_string(), false),
                ("don:a:revu/G3".to_string(), true)
            ]
        );
        // The last in order was merged by an earlier run without the adoption (another file):
        // the adoption rides on the merge still to come.
        let mut journal = SavepointFile::new();
        let mut rec = PairRecord::new("g@x.com", "don:a:revu/G1", "don:a:revu/G3", Keep::Revu);
        rec.status = PairStatus::Merged;
        journal
            .pairs
            .insert(pair_key("don:a:revu/G1", "don:a:revu/G3"), rec);
        let c = apply(
            &mut plan(),
            &decided(&["don:a:revu/G3", "don:a:revu/G2"]),
            Path::new("d.csv"),
            &journal,
        );
        assert_eq!(
            order(&c),
            [
                ("don:a:revu/G2".to_string(), true),
                ("don:a:revu/G3".to_string(), false)
            ]
        );
    }

    /// The group's adopting member found already merged runs no step after the merge, so its
    /// ref was never adopted: the report says so and lists the ref as left, never as taken.
    #[test]
    fn a_ref_whose_holder_was_already_merged_is_reported_not_adopted() {
        use crate::merge::journal::{AdoptRef, GroupLink, PairRecord, PairStatus, pair_key};
        let dir = tempfile::tempdir().unwrap();
        let mut sp = Savepoint::open(&dir.path().join("sp.json")).unwrap();
        let link = |index, adopt: Option<AdoptRef>| GroupLink {
            id: "G-1".into(),
            index,
            len: 2,
            adopt,
            decisions: "d.csv".into(),
        };
        let mut a = PairRecord::new("g@x.com", "K", "A", Keep::Revu);
        a.status = PairStatus::Merged;
        a.group = Some(link(0, None));
        sp.put(&pair_key("K", "A"), a).unwrap();
        let mut b = PairRecord::new("g@x.com", "K", "B", Keep::Revu);
        b.status = PairStatus::AlreadyMerged;
        b.group = Some(link(
            1,
            Some(AdoptRef {
                external_ref: "user_b".into(),
                holder: "B".into(),
            }),
        ));
        sp.put(&pair_key("K", "B"), b).unwrap();
        let g = GroupPlan {
            id: "G-1".into(),
            email: "g@x.com".into(),
            clean_pair: false,
            outcome: merge("K", &["A", "B"], Some("B"), Source::Typed),
            refs_left: vec![],
            adopts_ref: Some("user_b".into()),
        };
        let e = &entries(&[g], &sp)[0];
        assert_eq!(e.outcome, "merged");
        assert_eq!(e.ref_adoption, Some("not_adopted"));
        assert_eq!(e.refs_left, vec!["user_b".to_string()]);
        assert!(
            e.reason
                .as_deref()
                .unwrap()
                .contains("user_b was not adopted"),
            "{e:?}"
        );
    }
}
