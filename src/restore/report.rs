//! The restore report (`reports/restore-report-<YYYYMMDD_HHMMSS>.json`, 0600, atomic): old
//! ids to new ones, and per pair what was restored and what could not be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::input::NotMerged;
use super::journal::{RestoreRecord, RestoreStatus};
use crate::devrev::types::Organization;
use crate::error::AppError;
use crate::fsutil;
use crate::merge::report::ApiFigures;
use crate::output;

/// A pair's status in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    Restored,
    RestoredEarlier,
    /// Refused by the live check; nothing changed.
    Skipped,
    /// Stopped by an error; re-run to resume.
    Failed,
    /// Not reached (the run stopped on a run-wide error first).
    NotStarted,
    /// Named by a merge report but never merged there: nothing to undo.
    NotMerged,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub email: String,
    pub status: EntryStatus,
    pub primary: String,
    /// The merged-away contact's old DON.
    pub old_secondary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_secondary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_display_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The primary's external_ref given back (the one it had before the merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_external_ref_restored: Option<String>,
    pub tickets_restored: Vec<String>,
    pub conversations_restored: Vec<String>,
    /// Of those, the ones this tool wrote (the rest already were right).
    pub objects_written: usize,
    pub create_requests: usize,
    pub not_restored: Vec<String>,
}

impl Entry {
    pub fn from_record(r: &RestoreRecord, earlier: bool) -> Self {
        let status = match r.status {
            RestoreStatus::Restored if earlier => EntryStatus::RestoredEarlier,
            RestoreStatus::Restored => EntryStatus::Restored,
            RestoreStatus::Skipped => EntryStatus::Skipped,
            RestoreStatus::Failed => EntryStatus::Failed,
            RestoreStatus::InProgress => EntryStatus::NotStarted,
        };
        Entry {
            email: r.email.clone(),
            status,
            primary: r.primary.clone(),
            old_secondary: r.secondary.clone(),
            new_secondary: r.new_id.clone(),
            new_display_id: r.new_display_id.clone(),
            backup_dir: Some(r.backup_dir.clone()),
            reason: r.reason.clone(),
            primary_external_ref_restored: r
                .primary_ref
                .as_ref()
                .filter(|c| c.done)
                .map(|c| c.to.clone()),
            tickets_restored: r.tickets.clone(),
            conversations_restored: r.conversations.clone(),
            objects_written: r.written.len(),
            create_requests: r.creates.len(),
            not_restored: r.not_restored.clone(),
        }
    }

    pub fn not_merged(n: &NotMerged) -> Self {
        Entry {
            email: n.email.clone(),
            status: EntryStatus::NotMerged,
            primary: n.primary.clone(),
            old_secondary: n.secondary.clone(),
            new_secondary: None,
            new_display_id: None,
            backup_dir: None,
            reason: Some(n.why.clone()),
            primary_external_ref_restored: None,
            tickets_restored: Vec::new(),
            conversations_restored: Vec::new(),
            objects_written: 0,
            create_requests: 0,
            not_restored: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub restored: usize,
    pub restored_earlier: usize,
    pub skipped: usize,
    pub failed: usize,
    pub not_started: usize,
    pub not_merged: usize,
}

impl Summary {
    pub fn of(entries: &[Entry]) -> Self {
        let n = |s: EntryStatus| entries.iter().filter(|e| e.status == s).count();
        Summary {
            restored: n(EntryStatus::Restored),
            restored_earlier: n(EntryStatus::RestoredEarlier),
            skipped: n(EntryStatus::Skipped),
            failed: n(EntryStatus::Failed),
            not_started: n(EntryStatus::NotStarted),
            not_merged: n(EntryStatus::NotMerged),
        }
    }

    /// Every pair that could be restored is.
    pub fn all_done(&self) -> bool {
        self.skipped == 0 && self.failed == 0 && self.not_started == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub report_version: u32,
    pub tool_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_s: f64,
    pub organization: Organization,
    pub inputs: Vec<PathBuf>,
    pub savepoint: PathBuf,
    pub pairs: Vec<Entry>,
    pub summary: Summary,
    /// API calls in this run (`auth-tokens.info` included), and per pair restored now.
    pub api_calls: u64,
    pub api_calls_per_restored_pair: f64,
    /// The same API figures as a merge report's (one line format for every command).
    pub api: ApiFigures,
    /// Old secondary DON → new contact DON, for every restored pair.
    pub id_map: BTreeMap<String, String>,
}

/// Writes the report atomically, 0600, under a name that does not exist yet.
pub fn write(dir: &Path, report: &RestoreReport) -> Result<PathBuf, AppError> {
    fsutil::create_private_dir(dir).map_err(|e| {
        AppError::CantCreate(format!(
            "cannot create the report folder {}: {e}",
            dir.display()
        ))
    })?;
    let path = fsutil::unique_path(dir, "restore-report", "json");
    fsutil::write_json_atomic(&path, report).map_err(|e| {
        AppError::CantCreate(format!("cannot write the report {}: {e}", path.display()))
    })?;
    Ok(path)
}

/// The human summary on stderr.
pub fn summary_text(r: &RestoreReport, path: &Path) -> String {
    let s = &r.summary;
    let mut t = format!(
        "Restore: {} restored, {} restored earlier, {} skipped, {} failed, {} not started, {} \
         not merged\nAPI: {} ({:.1} per restored pair)\nReport: {}\n",
        s.restored,
        s.restored_earlier,
        s.skipped,
        s.failed,
        s.not_started,
        s.not_merged,
        r.api.line(),
        r.api_calls_per_restored_pair,
        path.display()
    );
    for e in &r.pairs {
        match (e.status, &e.new_secondary) {
            // The new contact is what a user goes to look at (and links things to).
            (EntryStatus::Restored, Some(new)) => t.push_str(&format!(
                "  restored {}: the merged-away contact {} is now {}{}\n",
                output::safe(&e.email),
                e.old_secondary,
                new,
                e.new_display_id
                    .as_deref()
                    .map(|d| format!(" ({})", output::safe(d)))
                    .unwrap_or_default()
            )),
            (EntryStatus::Skipped | EntryStatus::Failed, _) => {
                if let Some(why) = &e.reason {
                    t.push_str(&format!("  {:?} {}: {why}\n", e.status, e.email));
                }
            }
            _ => {}
        }
    }
    t
}
