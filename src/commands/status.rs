//! `--status`: what the savepoint holds, read-only, offline and without the CSV: counts by
//! status, merges waiting on a watch window (and until when), pending ref adoptions, pairs
//! that need a person, and the newest merge report.
//!
//! It answers "where does my dedupe stand?" between runs, which otherwise means reading a
//! JSON-lines journal by hand. It never writes (no log file, no lock: a run in progress keeps
//! appending, and the status shows the journal as of its last whole line).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::detect::display_id;
use crate::error::AppError;
use crate::merge::journal::{MergeOutcome, PairRecord, SavepointFile};
use crate::merge::savepoint;
use crate::output::{self, safe};

/// Most records listed by name under each heading; the counts always cover all of them.
const LISTED: usize = 20;

/// One record named in the status.
#[derive(Debug, Serialize)]
struct Named {
    email: String,
    primary: String,
    secondary: String,
    /// Why it is listed: the watch window's end, the pending reason, the error or skip.
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<DateTime<Utc>>,
}

/// The whole status, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Status {
    savepoint: PathBuf,
    records: usize,
    /// Records by their journal status (`merged`, `failed`, ...).
    by_status: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_url: Option<String>,
    updated_at: DateTime<Utc>,
    /// Merges whose answer was lost, watched until the window ends.
    watching: Vec<Named>,
    ref_adoption_pending: Vec<Named>,
    /// Failed, skipped or unconfirmed: a re-run picks them up, a person may need to look.
    needs_attention: Vec<Named>,
    /// Lasting group decisions in force (`not-dup`, `skip`) by decision, and how many were
    /// revoked: what a run without `--decisions` honours.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    decisions: BTreeMap<String, usize>,
    /// `not-dup`/`skip` decided for groups whose contacts were merged before: each merge and
    /// the `--restore` command that undoes it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    late_vetoes: Vec<crate::review::lasting::LateVeto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_report: Option<PathBuf>,
}

pub fn run(cfg: &Config) -> Result<(), AppError> {
    let path = &cfg.savepoint;
    let Some(file) = savepoint::load(path).map_err(AppError::from)? else {
        output::human(&format!(
            "No savepoint at {}: no merge run has started from this folder yet (or pass \
             --savepoint FILE).\n",
            path.display()
        ));
        return Ok(());
    };
    let status = status_of(path, &file, newest_report(&cfg.report_dir));
    if cfg.json {
        return output::json(&status);
    }
    output::data(|w| print(w, &status, Utc::now()))
}

fn status_of(path: &Path, file: &SavepointFile, last_report: Option<PathBuf>) -> Status {
    let mut by_status = BTreeMap::new();
    let (mut watching, mut pending, mut attention) = (Vec::new(), Vec::new(), Vec::new());
    for rec in file.pairs.values() {
        let name = serde_json::to_value(rec.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        *by_status.entry(name.clone()).or_insert(0) += 1;
        if let Some(named) = watched(rec) {
            watching.push(named);
        } else if let Some(reason) = &rec.ref_adoption_pending {
            pending.push(named(rec, reason.clone(), None));
        } else if !rec.status.is_final() {
            let detail = match (&rec.error, &rec.skip) {
                (Some(e), _) => e.to_string(),
                (None, Some(s)) => format!("skipped: {s}"),
                (None, None) => name.replace('_', " "),
            };
            attention.push(named(rec, detail, None));
        }
    }
    watching.sort_by_key(|n| n.until);
    let mut decisions = BTreeMap::new();
    for d in file.decisions.values() {
        let key = if d.holds() {
            d.decision.word()
        } else {
            "revoked"
        };
        *decisions.entry(key.to_string()).or_insert(0) += 1;
    }
    Status {
        decisions,
        late_vetoes: crate::review::lasting::late_vetoes(file),
        savepoint: path.to_path_buf(),
        records: file.pairs.len(),
        by_status,
        org: file.owner.as_ref().map(|o| o.org.clone()),
        base_url: file.owner.as_ref().map(|o| o.base_url.clone()),
        updated_at: file.updated_at,
        watching,
        ref_adoption_pending: pending,
        needs_attention: attention,
        last_report,
    }
}

fn named(rec: &PairRecord, detail: String, until: Option<DateTime<Utc>>) -> Named {
    Named {
        email: rec.email.clone(),
        primary: rec.primary.clone(),
        secondary: rec.secondary.clone(),
        detail,
        until,
    }
}

/// A record whose merge answer was lost (or never came) and is still being watched.
fn watched(rec: &PairRecord) -> Option<Named> {
    if rec.merged.is_some() {
        return None;
    }
    let m = rec.merge.as_ref()?;
    let unsettled = match &m.outcome {
        None | Some(MergeOutcome::Unknown { .. }) => true,
        Some(_) => false,
    };
    unsettled.then(|| {
        let detail = match m.watch_until {
            Some(_) => "merge answer lost: watching the secondary".to_string(),
            None => "merge answer lost: the next run starts the watch".to_string(),
        };
        named(rec, detail, m.watch_until)
    })
}

/// The newest `merge-report-*.json` in `dir` (their names sort by time).
fn newest_report(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("merge-report-") && n.ends_with(".json"))
        })
        .max()
}

fn print(w: &mut dyn Write, s: &Status, now: DateTime<Utc>) -> io::Result<()> {
    writeln!(
        w,
        "{}: {}, last written {}",
        s.savepoint.display(),
        output::count(s.records as u64, "record", "records"),
        s.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    if let (Some(org), Some(url)) = (&s.org, &s.base_url) {
        writeln!(w, "  org {} at {}", safe(org), safe(url))?;
    }
    for (status, n) in &s.by_status {
        writeln!(w, "  {:<22} {n:>6}", status.replace('_', " "))?;
    }
    list(w, "Waiting on a watch window", &s.watching, |n| {
        match n.until {
            Some(t) if t > now => format!(
                "{} until {} (in {}); re-run then",
                n.detail,
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                crate::preview::human_duration((t - now).num_seconds() as f64)
            ),
            Some(t) => format!(
                "{}: the window ended {}; re-run to settle it",
                n.detail,
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => n.detail.clone(),
        }
    })?;
    list(w, "Ref adoption pending", &s.ref_adoption_pending, |n| {
        n.detail.clone()
    })?;
    list(
        w,
        "Needs attention (a re-run retries these)",
        &s.needs_attention,
        |n| n.detail.clone(),
    )?;
    if !s.decisions.is_empty() {
        let parts: Vec<String> = s
            .decisions
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        writeln!(
            w,
            "  group decisions recorded: {} (runs without --decisions honour them)",
            parts.join(", ")
        )?;
    }
    if !s.late_vetoes.is_empty() {
        write!(
            w,
            "\n{}",
            crate::review::lasting::late_vetoes_text(&s.late_vetoes)
        )?;
    }
    match &s.last_report {
        Some(p) => writeln!(w, "\nLast merge report: {}", p.display()),
        None => writeln!(w, "\nNo merge report yet."),
    }
}

fn list(
    w: &mut dyn Write,
    heading: &str,
    items: &[Named],
    detail: impl Fn(&Named) -> String,
) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(w, "\n{heading}: {}", items.len())?;
    for n in items.iter().take(LISTED) {
        writeln!(
            w,
            "  {}  {} <- {}  {}",
            safe(&n.email),
            safe(&display_id(&n.primary)),
            safe(&display_id(&n.secondary)),
            safe(&detail(n))
        )?;
    }
    if items.len() > LISTED {
        writeln!(
            w,
            "  ... {} more (--json lists them all)",
            items.len() - LISTED
        )?;
    }
    Ok(())
}
