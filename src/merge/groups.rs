//! Decided groups in the merge run (`--decisions FILE`, `--accept-proposed`): what the
//! decisions leave of the clean pairs, and every decided group as the chain of merges that
//! takes it to one survivor.
//!
//! A group of n contacts merges as n-1 records, each a pair `keep <- member` run by the same
//! saga as a clean pair (backup verified first, one journaled merge request, exact evidence,
//! reconcile, resume after any crash). Each is its own record so that a crash in the middle of
//! a group resumes exactly where it stood, and the ledger still sees every contact. The run
//! starts a member only once the one before it is merged and reconciled (`execute.rs`), and
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
pub fn apply(plan: &mut Plan, decided: &Decided, file: &Path) -> DecidedWork {
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
        let Some(Outcome::Merge {
            keep,
            merge,
            adopt_ref,
            ..
        }) = outcomes.get(id.as_str())
        else {
            continue;
        };
        let find = |rid: &str| group.contacts.iter().find(|c| c.rev_user_id == rid);
        let Some(survivor) = find(keep) else { continue };
        let members: Vec<&Contact> = merge.iter().filter_map(|m| find(m)).collect();
        let adopt = adopt_ref
            .as_deref()
            .filter(|a| *a != keep.as_str() && merge.iter().any(|m| m == a))
            .and_then(find)
            .map(|c| AdoptRef {
                external_ref: c.external_ref.trim().to_string(),
                holder: c.rev_user_id.clone(),
            });
        let len = members.len() as u32;
        for (i, m) in members.iter().enumerate() {
            let last = i + 1 == members.len();
            work.members.push((
                Pair {
                    email: group.email.clone(),
                    primary: survivor.clone(),
                    secondary: (*m).clone(),
                },
                GroupLink {
                    id: id.clone(),
                    index: i as u32,
                    len,
                    adopt: if last { adopt.clone() } else { None },
                    decisions: file.to_path_buf(),
                },
            ));
        }
    }
    work
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
    /// The `user_` ref the survivor took (or takes, after the group's last merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopts_ref: Option<String>,
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
        outcome: "",
        decided_by: None,
        survivor: None,
        members: Vec::new(),
        stopped_at: None,
        adopts_ref: None,
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
        } => {
            e.decided_by = Some(match source {
                Source::Typed => "typed",
                Source::Proposed => "proposed",
                Source::CleanPairRule => "keep rule",
            });
            e.survivor = Some(keep.clone());
            e.refs_left = g.refs_left.clone();
            let mut done = 0;
            let mut adoption_skipped = false;
            for m in merge {
                let rec = sp
                    .get(&super::journal::pair_key(keep, m))
                    .or_else(|| sp.get(&super::journal::pair_key(m, keep)));
                // Found merged before this tool asked, its steps after the merge never ran:
                // the ref it was to hand over was not adopted.
                adoption_skipped |= rec.is_some_and(|r| {
                    r.status == PairStatus::AlreadyMerged
                        && r.group.as_ref().is_some_and(|g| g.adopt.is_some())
                });
                let status =
                    rec.map_or_else(|| "not_started".to_string(), |r| status_word(r.status));
                let merged = rec.is_some_and(|r| {
                    matches!(
                        r.status,
                        PairStatus::Merged
                            | PairStatus::AlreadyMerged
                            | PairStatus::RefAdoptionPending
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
            e.adopts_ref = g.adopts_ref.clone();
            if adoption_skipped && let Some(r) = e.adopts_ref.take() {
                e.reason = Some(format!(
                    "{r} was not adopted: the contact that held it was already merged into the \
                     survivor before this tool asked; set it on the survivor by hand"
                ));
                e.refs_left.push(r);
            }
            e.outcome = if done == merge.len() {
                "merged"
            } else if e.stopped_at.is_some() {
                "stopped"
            } else {
                "in_progress"
            };
        }
    }
    e
}

/// The console's lines for the groups of a decisions file (empty without one).
pub fn summary_text(groups: &[GroupEntry]) -> String {
    use crate::output::safe;
    if groups.is_empty() {
        return String::new();
    }
    let count = |o: &str| groups.iter().filter(|g| g.outcome == o).count();
    let mut out = format!(
        "  Decided groups:  {} merged, {} stopped, {} in progress, {} not duplicates, {} skipped, {} undecided, {} stale\n",
        count("merged"),
        count("stopped"),
        count("in_progress"),
        count("not_dup"),
        count("skipped"),
        count("undecided"),
        count("stale"),
    );
    for g in groups {
        if let Some(s) = &g.stopped_at {
            out.push_str(&format!(
                "    {} {}: stopped at {} ({}): {}; the rest of the group was not started\n",
                g.group,
                safe(&g.email),
                s.display_id,
                s.status,
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
            revoked: Vec::new(),
        };
        let w = apply(&mut plan, &decided, Path::new("d.csv"));
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
        // In the file's order; the ref adopted on the last merge only, from its holder.
        assert_eq!(
            members,
            [
                ("don:a:revu/G3", 0, 2, None),
                ("don:a:revu/G1", 1, 2, Some("user_g3"))
            ]
        );
        assert_eq!(
            w.members[1].1.adopt.as_ref().unwrap().holder,
            "don:a:revu/G3"
        );
        let g = w.groups.iter().find(|g| g.email == "g@x.com").unwrap();
        assert_eq!(g.refs_left, ["user_g1"]);
        assert_eq!(g.adopts_ref.as_deref(), Some("user_g3"));
        assert_eq!(w.groups.len(), 4);
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
        assert_eq!(e.adopts_ref, None);
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
