//! The end of a merge run: every pair's report entry, the report on disk, the summary, and
//! the run's verdict as an exit status.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::report::{self, EntryStatus, MergeReport, PairEntry, ReportPairs, RunOutcome};
use super::savepoint::Savepoint;
use super::schedule::{Item, Schedule};
use super::scheduler::Executed;
use crate::config::Config;
use crate::devrev::DevRevClient;
use crate::devrev::types::Organization;
use crate::error::AppError;
use crate::output;

/// The report's pairs: every pair the run knows of, left alone, run now, or not reached.
/// CSV pairs not reached and never journaled stay references into the plan
/// (see [`ReportPairs`]).
pub fn entries<'p>(sched: &Schedule<'p>, ran: &Executed, sp: &Savepoint) -> ReportPairs<'p> {
    let mut entries = Vec::new();
    let mut not_started = Vec::new();
    for e in &sched.earlier {
        if let Some(rec) = sp.get(&e.key) {
            let mut entry = PairEntry::from_record(rec, e.in_csv);
            if e.left_csv() {
                entry.status = EntryStatus::LeftCsv;
            }
            entries.push(entry);
        }
    }
    // Only the pairs run now are looked up by key: on a large plan they are few, and a set
    // of every scheduled key would cost as much as the keys themselves.
    let ran_keys: HashSet<&str> = ran.ran.iter().map(|(k, _)| k.as_str()).collect();
    let items: HashMap<&str, &Item<'_>> = sched
        .work
        .iter()
        .filter(|i| ran_keys.contains(i.key.as_str()))
        .map(|i| (i.key.as_str(), i))
        .collect();
    for (key, run) in &ran.ran {
        if let Some(rec) = sp.get(key) {
            let item = items.get(key.as_str());
            let in_csv = item.is_some_and(|i| i.in_csv);
            let mut e = PairEntry::from_run(rec, run.as_ref(), in_csv);
            if let Some(pair) = item.and_then(|i| i.pair) {
                e = e.with_contacts(pair);
            }
            entries.push(e);
        }
    }
    // Pairs the ledger held: skipped with the record that holds them, nothing sent.
    for h in &sched.held {
        let mut e = match sp.get(&h.key) {
            Some(rec) => PairEntry::from_record(rec, true).with_contacts(h.pair),
            None => PairEntry::from_pair(h.pair),
        };
        e.status = EntryStatus::Skipped;
        e.finished_earlier = false;
        e.skip_message = Some(h.reason.to_string());
        e.skip_reason = Some(h.reason.clone());
        entries.push(e);
    }
    // Merges of a group whose earlier merge did not end merged: not started, with why.
    let waits: HashMap<&str, &str> = ran
        .group_waits
        .iter()
        .map(|(k, why)| (k.as_str(), why.as_str()))
        .collect();
    for item in &sched.work {
        if ran_keys.contains(item.key.as_str()) {
            continue;
        }
        let wait = waits.get(item.key.as_str());
        let mut e = match (sp.get(&item.key), item.pair) {
            (Some(rec), Some(pair)) => PairEntry::from_record(rec, true).with_contacts(pair),
            (Some(rec), None) => PairEntry::from_record(rec, false),
            (None, Some(pair)) if wait.is_some() => PairEntry::from_pair(pair),
            (None, Some(pair)) => {
                not_started.push(pair);
                continue;
            }
            (None, None) => continue,
        };
        e.status = EntryStatus::NotStarted;
        if let Some(why) = wait {
            e.skip_message = Some((*why).to_string());
        }
        entries.push(e);
    }
    ReportPairs {
        entries,
        not_started,
    }
}

/// What the end of the run needs.
pub struct Finish<'a> {
    pub cfg: &'a Config,
    pub csv: &'a Path,
    pub run_id: &'a str,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
    pub organization: Organization,
    /// Groups detection left for a person.
    pub needs_review_groups: usize,
    pub client: &'a DevRevClient,
    pub pairs: ReportPairs<'a>,
    /// Every group of a decisions file, as it stands after the run.
    pub groups: Vec<super::groups::GroupEntry>,
    /// Vetoes given after the merge they veto (see [`crate::review::lasting::late_vetoes`]).
    pub late_vetoes: Vec<crate::review::lasting::LateVeto>,
}

/// Writes the report, prints the summary and turns the run's outcome into its result:
/// `Ok(())` only when every clean pair is merged (or already was).
pub fn finish(f: Finish<'_>, outcome: RunOutcome, fatal: Option<AppError>) -> Result<(), AppError> {
    let cfg = f.cfg;
    let mut report = MergeReport::build(report::BuildInput {
        run_id: f.run_id,
        started_at: f.started_at,
        elapsed: f.elapsed,
        outcome,
        organization: Some(f.organization),
        cfg,
        csv: f.csv,
        needs_review_groups: f.needs_review_groups,
        entries: f.pairs.entries,
        not_started: f.pairs.not_started,
        client: f.client,
        groups: f.groups,
    });
    report.late_vetoes = f.late_vetoes;
    let path = report::write(&cfg.report_dir, &report)?;
    // The run is over and the report is on disk: a failed stdout write must not hide how
    // the run went, so it is only warned about (a closed pipe is not even that).
    if cfg.json
        && let Err(e) = output::json(&report)
    {
        tracing::warn!("{e}; the report is in {}", path.display());
    }
    // The page for people: a failure is warned about, never a failure of the run.
    let html = crate::html::written_or_warn(&path, crate::html::write_merge(&path, &report));
    if !cfg.printer.is_quiet() {
        report::print_summary(&report, &path, &cfg.savepoint);
        output::human(&super::groups::summary_text(&report.groups, cfg.max_merges));
        output::human(&crate::review::lasting::late_vetoes_text(
            &report.late_vetoes,
        ));
        if let Some(p) = &html {
            output::human(&format!("  HTML report:     {}\n", p.display()));
        }
    }

    if let Some(e) = fatal {
        return Err(e);
    }
    if outcome == RunOutcome::Interrupted {
        return Err(AppError::Interrupted(format!(
            "interrupted. The savepoint {} is consistent: re-run the same command to resume.",
            cfg.savepoint.display()
        )));
    }
    let s = &report.summary;
    // A pair held because --restore undid a merge of its contacts was decided "do not merge".
    let bad = s.failed
        + (s.skipped - s.held_as_restored)
        + s.unconfirmed
        + s.ref_adoptions_pending
        + s.merged_elsewhere_this_run;
    if !report.late_vetoes.is_empty() {
        return Err(AppError::SomeFailed(format!(
            "{} decided not to merge after the merge: undo with --restore as listed above; see {}",
            crate::output::count(report.late_vetoes.len() as u64, "group", "groups"),
            path.display()
        )));
    }
    if bad > 0 {
        return Err(AppError::SomeFailed(format!(
            "{} pair(s) failed, {} skipped, {} unconfirmed{}{}; see {}",
            s.failed,
            s.skipped,
            s.unconfirmed,
            if s.merged_elsewhere_this_run > 0 {
                format!(", {} merged elsewhere", s.merged_elsewhere_this_run)
            } else {
                String::new()
            },
            if s.ref_adoptions_pending > 0 {
                format!(
                    ", {} with the ref adoption pending",
                    s.ref_adoptions_pending
                )
            } else {
                String::new()
            },
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Contact, Pair};
    use crate::merge::journal::{PairRecord, PairStatus};
    use crate::options::Keep;

    fn contact(id: &str) -> Contact {
        Contact {
            line: 2,
            rev_user_id: id.into(),
            display_name: "x".into(),
            email: "x@example.com".into(),
            external_ref: String::new(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: None,
        }
    }

    fn pair(email: &str, p: &str) -> Pair {
        Pair {
            email: email.into(),
            primary: contact(p),
            secondary: contact(&format!("{p}-s")),
        }
    }

    fn record(email: &str, p: &str, status: PairStatus) -> PairEntry {
        let mut rec = PairRecord::new(email, p, &format!("{p}-old"), Keep::Revu);
        rec.status = status;
        PairEntry::from_record(&rec, true)
    }

    #[test]
    fn never_started_pairs_serialize_as_the_full_entries_they_stand_for() {
        let pairs = [
            pair("d@x.com", "P4"),
            pair("a@x.com", "P1"),
            pair("c@x.com", "P3"),
            // Ties with a built entry on (email, primary): the built one comes first.
            pair("b@x.com", "P2"),
            pair("e@x.com", "P5"),
        ];
        let built = vec![
            record("e@x.com", "P0", PairStatus::Failed),
            record("b@x.com", "P2", PairStatus::Merged),
            record("c@x.com", "P9", PairStatus::Skipped),
            record("0@x.com", "P0", PairStatus::InProgress),
        ];
        // What the report held before: every entry built, all sorted together (stable).
        let mut all: Vec<PairEntry> = built.clone();
        all.extend(pairs.iter().map(PairEntry::from_pair));
        all.sort_by(|a, b| a.email.cmp(&b.email).then(a.primary.cmp(&b.primary)));

        let streamed = ReportPairs::sorted(built, pairs.iter().collect());
        assert_eq!(streamed.len(), 9);
        assert_eq!(
            serde_json::to_string_pretty(&streamed).unwrap(),
            serde_json::to_string_pretty(&all).unwrap()
        );
        let order: Vec<(&str, &str)> = all
            .iter()
            .map(|e| (e.email.as_str(), e.primary.as_str()))
            .collect();
        assert_eq!(order[2..4], [("b@x.com", "P2"), ("b@x.com", "P2")]);
        assert_eq!(all[2].status, EntryStatus::Merged);
    }
}
