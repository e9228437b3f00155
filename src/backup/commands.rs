//! The two backup commands: `--verify-backups DIR [--against-api]` and
//! `--csv FILE --backup-only`.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::config::Config;
use crate::detect::{Contact, DetectOptions, Pair};
use crate::devrev::DevRevClient;
use crate::devrev::types::RevUser;
use crate::error::AppError;
use crate::output;

use super::manifest::{Counts, MANIFEST_FILE, PARTIAL_SUFFIX};
use super::{BackupError, BackupInput, BackupSummary, layout, load_tickets, verify};

// ---- --verify-backups ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    Ok,
    Failed,
    /// A `.partial` folder left by an interrupted backup.
    Leftover,
    /// A `.partial` folder another process is writing right now.
    InProgress,
}

/// One line of the `--verify-backups` report.
#[derive(Debug, Clone, Serialize)]
pub struct BackupCheck {
    pub name: String,
    pub dir: PathBuf,
    pub status: VerifyStatus,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// With `--against-api`: backed-up tickets DevRev no longer lists for either contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_in_api: Option<Vec<String>>,
    /// With `--against-api`: tickets DevRev lists now that the backup does not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_in_api: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    pub leftovers: usize,
    pub in_progress: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub root: PathBuf,
    pub against_api: bool,
    pub backups: Vec<BackupCheck>,
    pub summary: VerifySummary,
}

/// Checks every backup folder under `root` (or `root` itself when it is one backup).
pub fn check_root(root: &Path) -> Result<Vec<BackupCheck>, AppError> {
    if !root.is_dir() {
        let what = if root.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return Err(AppError::Usage(format!(
            "{} {what}: give the backups folder (e.g. backups/) to --verify-backups",
            root.display()
        )));
    }
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut dirs = Vec::new();
    if root.join(MANIFEST_FILE).exists() {
        dirs.push(root.to_path_buf());
    } else {
        let entries = std::fs::read_dir(root)
            .map_err(|e| AppError::io(format!("cannot list {}", root.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| AppError::io(format!("cannot list {}", root.display()), e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
        dirs.sort();
    }
    let writing = layout::writer_active(root);
    let mut out = Vec::new();
    for dir in dirs {
        let name = name_of(&dir);
        if name.ends_with(PARTIAL_SUFFIX) {
            let (status, problem) = if writing {
                (
                    VerifyStatus::InProgress,
                    "a backup is being written into it right now".to_string(),
                )
            } else {
                (
                    VerifyStatus::Leftover,
                    "leftover of an interrupted backup (.partial): it is incomplete; the next backup run removes it, or delete it".to_string(),
                )
            };
            out.push(BackupCheck {
                name,
                dir,
                status,
                problems: vec![problem],
                warnings: vec![],
                counts: None,
                missing_in_api: None,
                new_in_api: None,
            });
            continue;
        }
        let r = verify::check_dir(&dir);
        out.push(BackupCheck {
            name,
            dir,
            status: if r.ok() {
                VerifyStatus::Ok
            } else {
                VerifyStatus::Failed
            },
            counts: r.manifest.as_ref().map(|m| m.counts.clone()),
            problems: r.problems,
            warnings: r.warnings,
            missing_in_api: None,
            new_in_api: None,
        });
    }
    Ok(out)
}

/// Compares one backup's ticket ids with what DevRev lists now for the same two contacts.
async fn compare_with_api(client: &DevRevClient, check: &mut BackupCheck) -> Result<(), AppError> {
    let meta = match super::load_metadata(&check.dir) {
        Ok(m) => m,
        Err(e) => {
            check
                .problems
                .push(format!("cannot compare with DevRev: {e}"));
            return Ok(());
        }
    };
    let saved = match load_tickets(&check.dir) {
        Ok(t) => t,
        Err(e) => {
            check
                .problems
                .push(format!("cannot compare with DevRev: {e}"));
            return Ok(());
        }
    };
    // After the merge DevRev may refuse the secondary's id as a filter: then the primary's
    // tickets are the ones to compare with (the same fallback the merge itself uses).
    let now: Vec<Value> = match crate::validate::tickets_of_both(
        client,
        &meta.primary_id,
        &meta.secondary_id,
    )
    .await
    {
        Ok(v) => v,
        // Authorization and reachability end the command; anything else is this backup's.
        Err(e) if matches!(e.status(), Some(401 | 403)) => return Err(AppError::Api(e)),
        Err(e @ crate::devrev::ApiError::Unreachable { .. }) => return Err(AppError::Api(e)),
        Err(e) => {
            check
                .problems
                .push(format!("cannot compare with DevRev: {e}"));
            return Ok(());
        }
    };
    let label = |v: &Value| {
        v.get("display_id")
            .or_else(|| v.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let now_ids: BTreeSet<&str> = now
        .iter()
        .filter_map(|v| v.get("id").and_then(Value::as_str))
        .collect();
    let saved_ids: BTreeSet<&str> = saved.iter().map(|w| w.id.as_str()).collect();
    let missing: Vec<String> = saved
        .iter()
        .filter(|w| !now_ids.contains(w.id.as_str()))
        .map(|w| w.label().to_string())
        .collect();
    let new: Vec<String> = now
        .iter()
        .filter(|v| {
            !v.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| saved_ids.contains(id))
        })
        .map(label)
        .collect();
    if !missing.is_empty() {
        check.problems.push(format!(
            "{} backed-up ticket(s) no longer name either contact in DevRev: {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    if !new.is_empty() {
        check.warnings.push(format!(
            "{} ticket(s) listed in DevRev now are not in the backup (newer than it): {}",
            new.len(),
            new.join(", ")
        ));
    }
    check.missing_in_api = Some(missing);
    check.new_in_api = Some(new);
    Ok(())
}

/// `--verify-backups DIR`: one line per backup, a summary, exit 0 only when all pass.
pub async fn verify_backups(cfg: &Config, root: &Path, against_api: bool) -> Result<(), AppError> {
    let mut checks = check_root(root)?;
    if checks.is_empty() {
        // Fail closed: "0 backup folder(s), all OK" for the wrong folder would read as a pass.
        return Err(AppError::SomeFailed(format!(
            "no backup folders found in {}: a backup folder is named <email>_<YYYYMMDD_HHMMSS> \
             and holds {MANIFEST_FILE} (merge runs and --backup-only write them under \
             --backup-dir, default backups/). Give that folder, or one backup folder, to \
             --verify-backups",
            root.display()
        )));
    }
    if against_api {
        let client = DevRevClient::new(cfg.client_config()?)?;
        for c in checks
            .iter_mut()
            .filter(|c| matches!(c.status, VerifyStatus::Ok | VerifyStatus::Failed))
        {
            compare_with_api(&client, c).await?;
            if !c.problems.is_empty() {
                c.status = VerifyStatus::Failed;
            }
        }
    }
    let count = |s: VerifyStatus| checks.iter().filter(|c| c.status == s).count();
    let summary = VerifySummary {
        total: checks.len(),
        ok: count(VerifyStatus::Ok),
        failed: count(VerifyStatus::Failed),
        leftovers: count(VerifyStatus::Leftover),
        in_progress: count(VerifyStatus::InProgress),
    };
    let report = VerifyReport {
        root: root.to_path_buf(),
        against_api,
        backups: checks,
        summary,
    };
    if cfg.json {
        output::json(&report)?;
    } else {
        output::data(|w| print_verify(w, &report))?;
    }
    let s = &report.summary;
    if s.failed + s.leftovers == 0 {
        Ok(())
    } else {
        Err(AppError::SomeFailed(format!(
            "{} of {} backup folder(s) in {} did not verify",
            s.failed + s.leftovers,
            s.total,
            root.display()
        )))
    }
}

fn print_verify(w: &mut impl Write, r: &VerifyReport) -> io::Result<()> {
    for c in &r.backups {
        match c.status {
            VerifyStatus::Ok => {
                let detail = c
                    .counts
                    .as_ref()
                    .map(|k| {
                        format!(
                            " ({} tickets, {} timeline entries, {} attachments, {} conversations)",
                            k.tickets, k.timeline_entries, k.attachments, k.conversations
                        )
                    })
                    .unwrap_or_default();
                writeln!(w, "OK          {}{detail}", c.name)
            }
            VerifyStatus::Failed => {
                writeln!(w, "FAILED      {}: {}", c.name, c.problems.join("; "))
            }
            VerifyStatus::Leftover => {
                writeln!(w, "LEFTOVER    {}: {}", c.name, c.problems.join("; "))
            }
            VerifyStatus::InProgress => {
                writeln!(w, "IN PROGRESS {}: {}", c.name, c.problems.join("; "))
            }
        }?;
        for warning in &c.warnings {
            writeln!(w, "            warning: {warning}")?;
        }
    }
    let s = &r.summary;
    writeln!(
        w,
        "{} backup folder(s): {} OK, {} FAILED, {} leftover, {} in progress",
        s.total, s.ok, s.failed, s.leftovers, s.in_progress
    )
}

// ---- --backup-only ---------------------------------------------------------------------

fn print_backup_only(
    w: &mut impl Write,
    report: &BackupOnlyReport,
    planned: usize,
) -> io::Result<()> {
    for p in &report.pairs {
        match (&p.backup, &p.error) {
            (Some(b), _) => writeln!(
                w,
                "OK      {}  {} ({} tickets, {} timeline entries, {} attachments, {} conversations, {} bytes)",
                p.email,
                b.dir.display(),
                b.tickets,
                b.timeline_entries,
                b.attachments,
                b.conversations,
                b.bytes
            )?,
            (None, Some(e)) => writeln!(w, "FAILED  {}  {e}", p.email)?,
            (None, None) => {}
        }
        if let Some(b) = &p.backup {
            for warning in &b.warnings {
                writeln!(w, "        warning: {warning}")?;
            }
        }
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
    /// Set when the run stopped before the last pair (no space, no permission, no DevRev).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// An error that will hit every following pair too, so the run stops.
fn stops_the_run(e: &BackupError) -> bool {
    match e {
        BackupError::NoSpace { .. } => true,
        BackupError::Io { .. } => true,
        BackupError::Api(a) => {
            matches!(a.status(), Some(401 | 403))
                || matches!(a, crate::devrev::ApiError::Unreachable { .. })
        }
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
    contact: &Contact,
    role: &'static str,
) -> Result<RevUser, PairFailure> {
    client
        .rev_users_get(&contact.rev_user_id)
        .await
        .map_err(|e| {
            if e.is_not_found() {
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
    cfg: &Config,
    pair: &Pair,
    run_id: &str,
) -> Result<BackupSummary, PairFailure> {
    let primary = get_contact(client, &pair.primary, "primary").await?;
    let secondary = get_contact(client, &pair.secondary, "secondary").await?;
    super::take(
        client,
        BackupInput {
            pair,
            primary: &primary,
            secondary: &secondary,
            run_id,
            scope: cfg.backup_scope,
            root: &cfg.backup_dir,
        },
    )
    .await
    .map_err(PairFailure::Backup)
}

/// `--csv FILE --backup-only`: back up and verify every clean pair, merge nothing.
pub async fn backup_only(cfg: &Config, csv: &Path) -> Result<(), AppError> {
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

    let span = crate::progress_span!("backup", plan.pairs.len());
    let mut results = Vec::new();
    let mut stopped: Option<BackupError> = None;
    async {
        use tracing_indicatif::span_ext::IndicatifSpanExt as _;
        for pair in &plan.pairs {
            tracing::Span::current().pb_set_message(&pair.email);
            let res = back_up_pair(&client, cfg, pair, &run_id).await;
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
                Err(e @ PairFailure::ContactGone { .. }) => {
                    let e = e.to_string();
                    tracing::error!(email = %pair.email, error = %e, "backup failed");
                    entry.error = Some(e);
                }
                Err(PairFailure::Backup(e)) => {
                    tracing::error!(email = %pair.email, error = %e, "backup failed");
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
    let report = BackupOnlyReport {
        run_id,
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
