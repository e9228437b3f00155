//! What to restore: backup folders given on the command line, or every merged pair of a merge
//! report. Each folder is verified (checksums) and read here, before anything talks to
//! DevRev; a folder that is not a backup or does not verify stops the command (exit 65) with
//! nothing changed. The backup folder is only ever read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::backup::{self, manifest::Metadata, verify};
use crate::devrev::types::{Conversation, Work};
use crate::error::AppError;

/// One pair to restore, as its verified backup holds it.
#[derive(Debug, Clone)]
pub struct Item {
    pub dir: PathBuf,
    pub meta: Metadata,
    pub tickets: Vec<Work>,
    pub conversations: Vec<Conversation>,
    /// When the merge was requested (from a merge report), else when the backup was taken.
    pub merged_at: DateTime<Utc>,
    /// Comments in the saved timelines written by the secondary (their authorship moved to
    /// the primary with the merge and cannot be given back through the API).
    pub secondary_comments: usize,
}

impl Item {
    pub fn key(&self) -> String {
        super::journal::pair_key(&self.meta.primary_id, &self.meta.secondary_id)
    }

    pub fn email(&self) -> &str {
        &self.meta.pair.email
    }
}

/// A pair a merge report lists that was never merged: nothing to undo.
#[derive(Debug, Clone)]
pub struct NotMerged {
    pub email: String,
    pub primary: String,
    pub secondary: String,
    pub why: String,
}

/// Everything the inputs name.
#[derive(Debug, Default)]
pub struct Inputs {
    pub items: Vec<Item>,
    pub not_merged: Vec<NotMerged>,
    /// The organization ids the inputs belong to (from reports and backup DONs).
    pub orgs: BTreeSet<String>,
}

/// The part of a merge report a restore reads (the report is a file format, not code the
/// restore shares with the merge run).
#[derive(Debug, Deserialize)]
struct ReportFile {
    #[serde(default)]
    organization: Option<ReportOrg>,
    pairs: Vec<ReportPair>,
}

#[derive(Debug, Deserialize)]
struct ReportOrg {
    #[serde(default)]
    id: String,
}

#[derive(Debug, Deserialize)]
struct ReportPair {
    email: String,
    primary: String,
    secondary: String,
    status: String,
    #[serde(default)]
    backup_dir: Option<PathBuf>,
    #[serde(default)]
    merge_requested_at: Option<DateTime<Utc>>,
    /// Merged by an earlier run than the report's own (reports are cumulative).
    #[serde(default)]
    finished_earlier: bool,
}

/// Reads and verifies every input. Duplicates (a folder also named by a report) count once.
/// A merge report is cumulative: by default only the pairs its own run merged are undone
/// (`--restore REPORT` undoes that run); `all_in_report` takes every merged pair it lists.
pub fn resolve(paths: &[PathBuf], all_in_report: bool) -> Result<Inputs, AppError> {
    let mut out = Inputs::default();
    let mut seen = BTreeSet::new();
    for p in paths {
        if p.is_file() {
            read_report(p, all_in_report, &mut out, &mut seen)?;
        } else {
            push_folder(p, None, &mut out, &mut seen)?;
        }
    }
    // Newest merge first: undoing in the reverse order of the merges means each pair meets
    // the state its own merge left (later merges on shared tickets are already undone).
    out.items
        .sort_by(|a, b| b.merged_at.cmp(&a.merged_at).then(a.key().cmp(&b.key())));
    Ok(out)
}

fn push_folder(
    dir: &Path,
    merged_at: Option<DateTime<Utc>>,
    out: &mut Inputs,
    seen: &mut BTreeSet<String>,
) -> Result<(), AppError> {
    let mut item = load_folder(dir)?;
    if let Some(t) = merged_at {
        item.merged_at = t;
    }
    if let Some(org) = org_of(&item.meta.primary_id) {
        out.orgs.insert(org);
    }
    if seen.insert(item.key()) {
        out.items.push(item);
    }
    Ok(())
}

fn read_report(
    path: &Path,
    all_in_report: bool,
    out: &mut Inputs,
    seen: &mut BTreeSet<String>,
) -> Result<(), AppError> {
    let bytes = std::fs::read(path)
        .map_err(|e| AppError::Data(format!("cannot read {}: {e}", path.display())))?;
    let report: ReportFile = serde_json::from_slice(&bytes).map_err(|e| {
        AppError::Data(format!(
            "{} is not a devrev-merge merge report ({e}); give a backup folder or \
             reports/merge-report-<timestamp>.json",
            path.display()
        ))
    })?;
    if let Some(org) = report.organization.as_ref().and_then(|o| org_of(&o.id)) {
        out.orgs.insert(org);
    }
    for p in report.pairs {
        let merged = matches!(p.status.as_str(), "merged" | "already_merged");
        if merged && p.finished_earlier && !all_in_report {
            out.not_merged.push(NotMerged {
                why: "merged by an earlier run than this report's (add --all-in-report to undo \
                      it too, or give that run's report)"
                    .into(),
                email: p.email,
                primary: p.primary,
                secondary: p.secondary,
            });
            continue;
        }
        match (&p.backup_dir, merged) {
            (Some(dir), true) => {
                if !dir.exists() {
                    return Err(AppError::Data(format!(
                        "the backup folder {} that {} names for {} does not exist here; run \
                         the restore from the folder the merge ran in",
                        dir.display(),
                        path.display(),
                        p.email
                    )));
                }
                push_folder(dir, p.merge_requested_at, out, seen)?;
            }
            (None, true) => out.not_merged.push(NotMerged {
                why: "merged, but the report names no backup folder for it".into(),
                email: p.email,
                primary: p.primary,
                secondary: p.secondary,
            }),
            (_, false) => out.not_merged.push(NotMerged {
                why: format!("not merged by that run (status {})", p.status),
                email: p.email,
                primary: p.primary,
                secondary: p.secondary,
            }),
        }
    }
    Ok(())
}

/// Verifies and reads one backup folder.
pub fn load_folder(dir: &Path) -> Result<Item, AppError> {
    if !dir.is_dir() {
        return Err(AppError::Data(format!(
            "{} is neither a backup folder nor a merge report",
            dir.display()
        )));
    }
    if !dir.join(backup::manifest::MANIFEST_FILE).exists() {
        return Err(AppError::Data(format!(
            "{} is not a devrev-merge backup folder (no {}); give a folder under backups/ or \
             a merge report",
            dir.display(),
            backup::manifest::MANIFEST_FILE
        )));
    }
    verify::verify_dir(dir).map_err(|why| {
        AppError::Data(format!(
            "the backup {} does not verify, so it cannot be trusted for a restore: {why}. \
             Nothing was changed in DevRev.",
            dir.display()
        ))
    })?;
    let bad = |e: backup::BackupError| AppError::Data(e.to_string());
    let meta = backup::load_metadata(dir).map_err(bad)?;
    let tickets = backup::load_tickets(dir).map_err(bad)?;
    let conversations = backup::load_conversations(dir).map_err(bad)?;
    let secondary_comments = count_comments_by(dir, &meta.secondary_id);
    let merged_at = DateTime::parse_from_rfc3339(&meta.created_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    Ok(Item {
        merged_at,
        dir: dir.to_path_buf(),
        meta,
        tickets,
        conversations,
        secondary_comments,
    })
}

/// Timeline entries in the folder's saved timelines whose author was `who`.
fn count_comments_by(dir: &Path, who: &str) -> usize {
    let Ok(manifest) = std::fs::read(dir.join(backup::manifest::MANIFEST_FILE)) else {
        return 0;
    };
    let Ok(manifest) = serde_json::from_slice::<backup::manifest::Manifest>(&manifest) else {
        return 0;
    };
    manifest
        .objects
        .iter()
        .filter_map(|o| {
            let path = dir.join(&o.dir).join(backup::manifest::MESSAGES_FILE);
            let bytes = std::fs::read(path).ok()?;
            serde_json::from_slice::<backup::manifest::Messages>(&bytes).ok()
        })
        .flat_map(|m| m.timeline_entries)
        .filter(|e| e["created_by"]["id"] == who)
        .count()
}

/// The org of a DON: one rule with the merge run's, kept in `devrev`.
pub use crate::devrev::org_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_manifest_is_not_a_backup() {
        let d = tempfile::tempdir().unwrap();
        let e = load_folder(d.path()).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("not a devrev-merge backup"), "{e}");
    }
}
