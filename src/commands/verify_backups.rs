//! `--verify-backups DIR [--against-api]`: re-check every backup folder (checksums, sizes,
//! counts) and, on request, compare each one's ticket ids with DevRev (read-only).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::backup::manifest::{Counts, MANIFEST_FILE, PARTIAL_SUFFIX};
use crate::backup::{layout, load_tickets, verify};
use crate::config::Config;
use crate::devrev::DevRevClient;
use crate::error::AppError;
use crate::output;

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
///
/// `restored` maps a merged-away secondary to the contact `--restore` recreated for it (from
/// the restore journal): after a restore the backed-up tickets name that contact, so it is
/// the one to list with the primary, never a false "no longer name either contact".
async fn compare_with_api(
    client: &DevRevClient,
    check: &mut BackupCheck,
    restored: &BTreeMap<String, String>,
) -> Result<(), AppError> {
    let meta = match crate::backup::load_metadata(&check.dir) {
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
    let listed = match restored.get(&meta.secondary_id) {
        Some(new) => {
            check.warnings.push(format!(
                "the merge was undone by --restore: the secondary is back as {new}; compared \
                 with the tickets of the primary and that contact"
            ));
            client
                .tickets_reported_by_as(&[meta.primary_id.as_str(), new.as_str()])
                .await
        }
        None => {
            crate::validate::tickets_of_both(
                client,
                &crate::validate::ListReads::none(),
                &meta.primary_id,
                &meta.secondary_id,
            )
            .await
        }
    };
    let now: Vec<Value> = match listed {
        Ok(v) => v,
        // Authorization and reachability end the command; anything else is this backup's.
        Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(AppError::Api(e)),
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
pub async fn run(cfg: &Config, root: &Path, against_api: bool) -> Result<(), AppError> {
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
        let restored: BTreeMap<String, String> =
            crate::restore::journal::peek(&crate::restore::journal_path(cfg))
                .map(|f| {
                    f.pairs
                        .into_values()
                        .filter_map(|r| Some((r.secondary, r.new_id?)))
                        .collect()
                })
                .unwrap_or_default();
        for c in checks
            .iter_mut()
            .filter(|c| matches!(c.status, VerifyStatus::Ok | VerifyStatus::Failed))
        {
            compare_with_api(&client, c, &restored).await?;
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
                            " ({}, {}, {}, {})",
                            output::count(k.tickets as u64, "ticket", "tickets"),
                            output::count(
                                k.timeline_entries as u64,
                                "timeline entry",
                                "timeline entries"
                            ),
                            output::count(k.attachments as u64, "attachment", "attachments"),
                            output::count(k.conversations as u64, "conversation", "conversations")
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
