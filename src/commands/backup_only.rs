//! `--csv FILE --backup-only`: take and verify the backup of every clean pair, merge nothing.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::Instrument;

use crate::backup::{
    BackupError, BackupInput, BackupSummary, RunReads, reused_line, ticket_counts_line,
};
use crate::config::Config;
use crate::detect::{Contact, DetectOptions, Pair};
use crate::devrev::DevRevClient;
use crate::devrev::types::RevUser;
use crate::error::AppError;
use crate::output;
use crate::validate::{ContactReads, ListReads};

fn print_backup_only(
    w: &mut impl Write,
    report: &BackupOnlyReport,
    planned: usize,
) -> io::Result<()> {
    for p in &report.pairs {
        match (&p.backup, &p.error) {
            (Some(b), _) => writeln!(
                w,
                "OK      {}  {} ({}, {}, {}, {}, {})",
                output::safe(&p.email),
                b.dir.display(),
                output::count(b.tickets as u64, "ticket", "tickets"),
                output::count(
                    b.timeline_entries as u64,
                    "timeline entry",
                    "timeline entries"
                ),
                output::count(b.attachments as u64, "attachment", "attachments"),
                output::count(b.conversations as u64, "conversation", "conversations"),
                output::count(b.bytes, "byte", "bytes")
            )?,
            (None, Some(e)) => writeln!(
                w,
                "FAILED  {}  {}",
                output::safe(&p.email),
                output::safe(&e.to_string())
            )?,
            (None, None) => {}
        }
        if let Some(b) = &p.backup {
            for warning in &b.warnings {
                writeln!(w, "        warning: {}", output::safe(warning))?;
            }
        }
    }
    let differ: usize = report
        .pairs
        .iter()
        .filter_map(|p| p.backup.as_ref())
        .map(|b| b.ticket_counts_differ.len())
        .sum();
    if differ > 0 {
        writeln!(w, "{}", ticket_counts_line(differ))?;
    }
    if report.timelines_reused + report.attachments_reused > 0 {
        writeln!(
            w,
            "{}",
            reused_line(report.timelines_reused, report.attachments_reused)
        )?;
    }
    let not_reached = planned - report.pairs.len();
    writeln!(
        w,
        "{planned} pair(s): {} backed up and verified, {} failed{}",
        report.ok,
        report.failed,
        if not_reached > 0 {
            format!(", {not_reached} not reached")
        } else {
            String::new()
        }
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct PairBackup {
    pub email: String,
    pub primary: String,
    pub secondary: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupOnlyReport {
    pub run_id: String,
    pub backup_dir: PathBuf,
    pub pairs: Vec<PairBackup>,
    pub ok: usize,
    pub failed: usize,
    /// Timelines and attachments shared with an earlier pair of this run, taken from its read
    /// instead of read from DevRev again (summed over the pairs' backups).
    pub timelines_reused: usize,
    pub attachments_reused: usize,
    /// Set when the run stopped before the last pair (no space, no permission, no DevRev).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// An error that will hit every following pair too, so the run stops.
fn stops_the_run(e: &BackupError) -> bool {
    match e {
        BackupError::NoSpace { .. } => true,
        BackupError::Io { .. } => true,
        BackupError::Api(a) => a.scope() == crate::devrev::Scope::Run,
        BackupError::Verification(_) => false,
    }
}

fn to_app_error(e: BackupError) -> AppError {
    AppError::from(e)
}

/// Why one pair of `--backup-only` has no backup.
#[derive(Debug, thiserror::Error)]
enum PairFailure {
    /// A contact of the CSV is gone from DevRev: usually merged since the export.
    #[error(
        "the {role} contact {display_id} ({don}) was not found in DevRev (HTTP 404): it may \
         already have been merged, or was deleted. Export the contacts again to see the pair \
         as it is now"
    )]
    ContactGone {
        role: &'static str,
        display_id: String,
        don: String,
    },
    #[error(transparent)]
    Backup(#[from] BackupError),
}

async fn get_contact(
    client: &DevRevClient,
    reads: &ContactReads,
    contact: &Contact,
    role: &'static str,
) -> Result<RevUser, PairFailure> {
    reads.get(client, &contact.rev_user_id).await.map_err(|e| {
        if e.is_devrev_not_found() {
            PairFailure::ContactGone {
                role,
                display_id: contact.display_id(),
                don: contact.rev_user_id.clone(),
            }
        } else {
            PairFailure::Backup(e.into())
        }
    })
}

async fn back_up_pair(
    client: &DevRevClient,
    contacts: &ContactReads,
    lists: &ListReads,
    cfg: &Config,
    pair: &Pair,
    run_id: &str,
    reads: &RunReads,
) -> Result<BackupSummary, PairFailure> {
    let primary = get_contact(client, contacts, &pair.primary, "primary").await?;
    let secondary = get_contact(client, contacts, &pair.secondary, "secondary").await?;
    crate::backup::take(
        client,
        BackupInput {
            pair,
            primary: &primary,
            secondary: &secondary,
            run_id,
            scope: cfg.backup_scope,
            root: &cfg.backup_dir,
            lists,
            reads: Some(reads),
        },
    )
    .await
    .map_err(PairFailure::Backup)
}

/// `--csv FILE --backup-only`: back up and verify every clean pair, merge nothing.
pub async fn run(cfg: &Config, csv: &Path) -> Result<(), AppError> {
    let plan = crate::detect::plan_from_csv(
        csv,
        &DetectOptions {
            keep: cfg.keep,
            email_domain: cfg.email_domain.clone(),
        },
    )?;
    let client = DevRevClient::new(cfg.client_config()?)?;
    let run_id = format!("backup-{}-{}", crate::fsutil::stamp(), std::process::id());
    tracing::info!(pairs = plan.pairs.len(), dir = %cfg.backup_dir.display(), "backing up every clean pair (no merge)");

    // Each contact is read once, a window at a time, just before its backup.
    let contacts = ContactReads::new(&plan.pairs, crate::merge::fresh_for());
    // Nothing is merged: one pair's tickets list serves the next pairs' backups while fresh.
    let lists = ListReads::new(&plan.pairs, Vec::new(), crate::merge::fresh_for());
    // One for the run: pairs sharing a ticket or an attachment read it once.
    let reads = RunReads::new();
    let span = crate::progress_span!("backup", plan.pairs.len());
    let mut results = Vec::new();
    let mut stopped: Option<BackupError> = None;
    async {
        use tracing_indicatif::span_ext::IndicatifSpanExt as _;
        for pair in &plan.pairs {
            tracing::Span::current().pb_set_message(&pair.email);
            let res = back_up_pair(&client, &contacts, &lists, cfg, pair, &run_id, &reads).await;
            tracing::Span::current().pb_inc(1);
            let mut entry = PairBackup {
                email: pair.email.clone(),
                primary: pair.primary.rev_user_id.clone(),
                secondary: pair.secondary.rev_user_id.clone(),
                ok: res.is_ok(),
                backup: None,
                error: None,
            };
            match res {
                Ok(summary) => entry.backup = Some(summary),
                // The summary prints each failure once (FAILED ...); the log keeps it too.
                Err(e @ PairFailure::ContactGone { .. }) => {
                    let e = e.to_string();
                    tracing::debug!(email = %pair.email, error = %e, "backup failed");
                    entry.error = Some(e);
                }
                Err(PairFailure::Backup(e)) => {
                    tracing::debug!(email = %pair.email, error = %e, "backup failed");
                    entry.error = Some(e.to_string());
                    if stops_the_run(&e) {
                        results.push(entry);
                        stopped = Some(e);
                        break;
                    }
                }
            }
            results.push(entry);
        }
    }
    .instrument(span)
    .await;

    let ok = results.iter().filter(|p| p.ok).count();
    let failed = results.len() - ok;
    let summaries = || results.iter().filter_map(|p| p.backup.as_ref());
    let timelines_reused = summaries().map(|b| b.timelines_reused).sum();
    let attachments_reused = summaries().map(|b| b.attachments_reused).sum();
    let report = BackupOnlyReport {
        run_id,
        timelines_reused,
        attachments_reused,
        backup_dir: cfg.backup_dir.clone(),
        ok,
        failed,
        stopped: stopped.as_ref().map(|e| e.to_string()),
        pairs: results,
    };
    if cfg.json {
        output::json(&report)?;
    } else {
        output::data(|w| print_backup_only(w, &report, plan.pairs.len()))?;
    }
    if let Some(e) = stopped {
        return Err(to_app_error(e));
    }
    if report.failed > 0 {
        return Err(AppError::SomeFailed(format!(
            "{} of {} pair backup(s) failed; nothing was merged",
            report.failed,
            plan.pairs.len()
        )));
    }
    Ok(())
}
