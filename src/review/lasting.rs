//! Decisions that last: a group decided `not-dup` or `skip` stays decided after its
//! decisions file is gone. The merge run that reads a file records them in the savepoint
//! ([`to_record`]); every later preview and merge run honours them ([`apply_recorded`],
//! [`recorded_text`]) until a file writes `revoke` on a row of the group.
//!
//! A recorded decision wins over whatever a later file says of the group without `revoke`:
//! "not a duplicate" was a person's judgement, and a re-sorted or re-exported file must not
//! undo it by a blank cell or a proposal.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::decisions::{Decided, Outcome};
use super::group_id;
use crate::merge::journal::{
    GroupDecision, LastingDecision, PairStatus, Revocation, SavepointFile,
};

/// Gives every group with a decision in force in `recorded` that decision, unless this file
/// revokes it.
pub fn apply_recorded(decided: &mut Decided, recorded: &BTreeMap<String, GroupDecision>) {
    let revoked: HashSet<&str> = decided.revoked.iter().map(|(g, _)| g.as_str()).collect();
    for (id, _, outcome) in &mut decided.groups {
        if revoked.contains(id.as_str()) {
            continue;
        }
        if let Some(d) = recorded.get(id).filter(|d| d.holds()) {
            *outcome = Outcome::Recorded {
                decision: d.decision,
                at: d.at,
                file: d.file.clone(),
            };
        }
    }
}

/// What a decisions file adds to the savepoint: each `not-dup` or skipped group it decides
/// (unless that is recorded already), and each recorded decision it revokes.
pub fn to_record(
    decided: &Decided,
    file: &Path,
    recorded: &BTreeMap<String, GroupDecision>,
    now: DateTime<Utc>,
) -> Vec<GroupDecision> {
    let mut out = Vec::new();
    for (group, line) in &decided.revoked {
        if let Some(d) = recorded.get(group).filter(|d| d.holds()) {
            out.push(GroupDecision {
                revoked: Some(Revocation {
                    at: now,
                    file: file.to_path_buf(),
                }),
                ..d.clone()
            });
            tracing::info!(group = %group, line, "recorded {} decision revoked", d.decision.word());
        }
    }
    for (group, email, outcome) in &decided.groups {
        let (decision, line) = match outcome {
            Outcome::NotDup { line } => (LastingDecision::NotDup, Some(*line)),
            Outcome::Skipped => (LastingDecision::Skip, None),
            _ => continue,
        };
        // A file that revokes a group's decision and decides it anew (`revoke` on one row,
        // `skip` on the other) records the new decision after the revocation.
        let revoked_here = decided.revoked.iter().any(|(g, _)| g == group);
        let same = !revoked_here
            && recorded
                .get(group)
                .is_some_and(|d| d.holds() && d.decision == decision);
        if !same {
            out.push(GroupDecision {
                group: group.clone(),
                email: email.clone(),
                decision,
                at: now,
                file: file.to_path_buf(),
                line,
                revoked: None,
            });
        }
    }
    out
}

/// Records in the savepoint at `savepoint` (taking its lock) what `decided` adds to it: the
/// `not-dup` and skipped groups of `file` and its revocations. Called by every command that
/// reads a decisions file (the preview, the test sample, the merge run), so that a veto holds
/// from the moment the tool has read it, whichever command comes next. Returns the savepoint
/// as it stands afterwards (the caller need not read it again). A savepoint another run holds
/// is refused (exit 73): the decisions would not last.
pub fn record(
    savepoint: &Path,
    decided: &Decided,
    file: &Path,
) -> Result<SavepointFile, crate::error::AppError> {
    let mut sp = crate::merge::savepoint::Savepoint::open(savepoint)?;
    for d in to_record(decided, file, &sp.file().decisions, Utc::now()) {
        tracing::info!(group = %d.group, email = %d.email, "recorded: {}{}", d.decision.word(),
            if d.revoked.is_some() { " (revoked)" } else { "" });
        sp.put_decision(d)?;
    }
    Ok(sp.file().clone())
}

/// A `not-dup` or `skip` in force for a group whose contacts a merge of the savepoint already
/// merged: the veto came after the fact. Nothing undoes a merge but `--restore`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LateVeto {
    pub group: String,
    pub email: String,
    pub decision: &'static str,
    /// Each merge of the group's contacts the savepoint holds as done.
    pub merged: Vec<VetoedMerge>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VetoedMerge {
    pub primary: String,
    pub secondary: String,
    /// The command that undoes it: `--restore` with the pair's backup folder.
    pub restore: String,
}

/// Every group decided `not-dup`/`skip` (in force in `journal`) whose contacts a record of
/// `journal` merged (merged, already merged, or merged with its ref adoption pending).
pub fn late_vetoes(journal: &SavepointFile) -> Vec<LateVeto> {
    let mut out: Vec<LateVeto> = Vec::new();
    for rec in journal.pairs.values() {
        let merged = matches!(
            rec.status,
            PairStatus::Merged | PairStatus::AlreadyMerged | PairStatus::RefAdoptionPending
        );
        if !merged {
            continue;
        }
        let group = group_id(&crate::detect::normalize_email(&rec.email));
        let Some(d) = journal.decisions.get(&group).filter(|d| d.holds()) else {
            continue;
        };
        let restore = match &rec.backup {
            Some(b) => format!(
                "devrev-merge --restore {}",
                crate::output::shell_quote(&b.dir.display().to_string())
            ),
            None => "devrev-merge --restore <the merge report that lists it>".to_string(),
        };
        let m = VetoedMerge {
            primary: rec.primary.clone(),
            secondary: rec.secondary.clone(),
            restore,
        };
        match out.iter_mut().find(|v| v.group == group) {
            Some(v) => v.merged.push(m),
            None => out.push(LateVeto {
                group,
                email: d.email.clone(),
                decision: d.decision.word(),
                merged: vec![m],
            }),
        }
    }
    out
}

/// The lines that report late vetoes: each merged contact and the command that undoes it.
pub fn late_vetoes_text(vetoes: &[LateVeto]) -> String {
    use crate::detect::display_id;
    use crate::output::safe;
    if vetoes.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "Decided not to merge after the merge ({}): the contacts were merged before the \
         decision was given, and nothing undoes a merge but --restore:\n",
        crate::output::count(vetoes.len() as u64, "group", "groups"),
    );
    for v in vetoes {
        for m in &v.merged {
            out.push_str(&format!(
                "  {} {} ({}): {} was merged into {}; to undo: {}\n",
                v.group,
                safe(&v.email),
                v.decision,
                display_id(&m.secondary),
                display_id(&m.primary),
                m.restore
            ));
        }
    }
    out
}

/// The review file's `recorded` column by group id: decisions in force, and merges undone by
/// `--restore` (their contacts are decided "do not merge" by the ledger).
pub fn recorded_text(journal: &SavepointFile) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (id, d) in &journal.decisions {
        if d.holds() {
            out.insert(
                id.clone(),
                format!(
                    "{} on {} from {}{}",
                    d.decision.word(),
                    d.at.format("%Y-%m-%d %H:%M UTC"),
                    d.file.display(),
                    d.line.map(|l| format!(" line {l}")).unwrap_or_default()
                ),
            );
        }
    }
    for rec in journal.pairs.values() {
        if rec.status != PairStatus::Restored {
            continue;
        }
        let Some(r) = &rec.restored else { continue };
        out.entry(group_id(&rec.email)).or_insert_with(|| {
            format!(
                "merge of {} undone by --restore on {} ({}): not merged again",
                crate::detect::display_id(&rec.secondary),
                r.at.format("%Y-%m-%d %H:%M UTC"),
                r.restore_journal.display()
            )
        });
    }
    out
}

/// The preview's line on where the groups stand: how many a person has decided (in the
/// decisions file given, or recorded in the savepoint) and how many are still undecided.
/// Clean pairs count as decided: the `--keep` rule decides them unless a file says otherwise.
pub fn groups_summary(
    plan: &crate::detect::Plan,
    decided: Option<&Decided>,
    recorded: Option<&BTreeMap<String, GroupDecision>>,
) -> String {
    let total = plan.pairs.len() + plan.needs_review.len();
    let in_force = |id: &str| {
        recorded
            .and_then(|r| r.get(id))
            .is_some_and(GroupDecision::holds)
    };
    let (undecided, from_savepoint) = match decided {
        Some(d) => (
            d.groups
                .iter()
                .filter(|(_, _, o)| matches!(o, Outcome::Undecided))
                .count(),
            d.groups
                .iter()
                .filter(|(_, _, o)| matches!(o, Outcome::Recorded { .. }))
                .count(),
        ),
        None => {
            let from_savepoint = plan
                .pairs
                .iter()
                .map(|p| group_id(&p.email))
                .chain(plan.needs_review.iter().map(|g| group_id(&g.email)))
                .filter(|id| in_force(id))
                .count();
            let undecided = plan
                .needs_review
                .iter()
                .filter(|g| !in_force(&group_id(&g.email)))
                .count();
            (undecided, from_savepoint)
        }
    };
    format!(
        "Groups: {total} ({} clean pair(s), {} needing review): {} decided ({from_savepoint} \
         recorded in the savepoint), {undecided} undecided{}\n",
        plan.pairs.len(),
        plan.needs_review.len(),
        total - undecided,
        if undecided > 0 {
            "; decide them in the review file, then --decisions FILE (docs/review.md)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(groups: Vec<(&str, Outcome)>, revoked: Vec<(&str, u64)>) -> Decided {
        Decided {
            groups: groups
                .into_iter()
                .map(|(g, o)| (g.to_string(), format!("{g}@x.com"), o))
                .collect(),
            revoked: revoked
                .into_iter()
                .map(|(g, l)| (g.to_string(), l))
                .collect(),
            ..Decided::default()
        }
    }

    fn rec(group: &str, decision: LastingDecision) -> GroupDecision {
        GroupDecision {
            group: group.into(),
            email: format!("{group}@x.com"),
            decision,
            at: "2026-01-02T03:04:05Z".parse().unwrap(),
            file: "first.csv".into(),
            line: Some(3),
            revoked: None,
        }
    }

    #[test]
    fn a_recorded_decision_wins_until_a_file_revokes_it() {
        let recorded = BTreeMap::from([
            ("A".to_string(), rec("A", LastingDecision::NotDup)),
            ("B".to_string(), rec("B", LastingDecision::Skip)),
        ]);
        let merge = Outcome::Merge {
            keep: "k".into(),
            merge: vec!["m".into()],
            adopt_ref: None,
            source: super::super::decisions::Source::CleanPairRule,
        };
        let mut d = decided(
            vec![
                ("A", merge.clone()),
                ("B", merge.clone()),
                ("C", Outcome::Undecided),
            ],
            vec![("B", 7)],
        );
        apply_recorded(&mut d, &recorded);
        assert!(matches!(
            d.groups[0].2,
            Outcome::Recorded {
                decision: LastingDecision::NotDup,
                ..
            }
        ));
        assert_eq!(d.groups[1].2, merge, "revoked: the file decides");
        assert_eq!(d.groups[2].2, Outcome::Undecided);

        let now: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let new = to_record(&d, Path::new("second.csv"), &recorded, now);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].group, "B");
        assert_eq!(
            new[0].revoked.as_ref().unwrap().file,
            Path::new("second.csv")
        );
    }

    #[test]
    fn new_not_dup_and_skip_groups_are_recorded_once() {
        let recorded = BTreeMap::from([("A".to_string(), rec("A", LastingDecision::NotDup))]);
        let d = decided(
            vec![
                ("A", Outcome::NotDup { line: 9 }),
                ("B", Outcome::NotDup { line: 4 }),
                ("C", Outcome::Skipped),
                ("D", Outcome::Undecided),
            ],
            vec![],
        );
        let now: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let new = to_record(&d, Path::new("f.csv"), &recorded, now);
        let got: Vec<(&str, LastingDecision, Option<u64>)> = new
            .iter()
            .map(|g| (g.group.as_str(), g.decision, g.line))
            .collect();
        assert_eq!(
            got,
            [
                ("B", LastingDecision::NotDup, Some(4)),
                ("C", LastingDecision::Skip, None)
            ]
        );
    }
}
