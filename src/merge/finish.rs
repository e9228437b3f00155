//! The end of a merge run: every pair's report entry, the report on disk, the summary, and
//! the run's verdict as an exit status.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::execute::Executed;
use super::report::{self, EntryStatus, MergeReport, PairEntry, ReportPairs, RunOutcome};
use super::savepoint::Savepoint;
use super::schedule::Schedule;
use crate::config::Config;
use crate::detect::Plan;
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
    let in_csv: HashMap<&str, bool> = sched
        .work
        .iter()
        .filter(|i| ran_keys.contains(i.key.as_str()))
        .map(|i| (i.key.as_str(), i.in_csv))
        .collect();
    for (key, run) in &ran.ran {
        if let Some(rec) = sp.get(key) {
            let in_csv = in_csv.get(key.as_str()).copied().unwrap_or(false);
            entries.push(PairEntry::from_run(rec, run.as_ref(), in_csv));
        }
    }
    for item in &sched.work {
        if ran_keys.contains(item.key.as_str()) {
            continue;
        }
        let mut e = match (sp.get(&item.key), item.pair) {
            (Some(rec), _) => PairEntry::from_record(rec, item.pair.is_some()),
            (None, Some(pair)) => {
                not_started.push(pair);
                continue;
            }
            (None, None) => continue,
        };
        e.status = EntryStatus::NotStarted;
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
    pub plan: &'a Plan,
    pub client: &'a DevRevClient,
    pub pairs: ReportPairs<'a>,
}

/// Writes the report, prints the summary and turns the run's outcome into its result:
/// `Ok(())` only when every clean pair is merged (or already was).
pub fn finish(f: Finish<'_>, outcome: RunOutcome, fatal: Option<AppError>) -> Result<(), AppError> {
    let cfg = f.cfg;
    let report = MergeReport::build(report::BuildInput {
        run_id: f.run_id,
        started_at: f.started_at,
        elapsed: f.elapsed,
        outcome,
        organization: Some(f.organization),
        cfg,
        csv: f.csv,
        plan: f.plan,
        entries: f.pairs.entries,
        not_started: f.pairs.not_started,
        client: f.client,
    });
    let path = report::write(&cfg.report_dir, &report)?;
    // The run is over and the report is on disk: a failed stdout write must not hide how
    // the run went, so it is only warned about (a closed pipe is not even that).
    if cfg.json
        && let Err(e) = output::json(&report)
    {
        tracing::warn!("{e}; the report is in {}", path.display());
    }
    if !cfg.printer.is_quiet() {
        report::print_summary(&report, &path, &cfg.savepoint);
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
    let bad = s.failed + s.skipped + s.unconfirmed;
    if bad > 0 {
        return Err(AppError::SomeFailed(format!(
            "{} pair(s) failed, {} skipped, {} unconfirmed; see {}",
            s.failed,
            s.skipped,
            s.unconfirmed,
            path.display()
        )));
    }
    Ok(())
}
