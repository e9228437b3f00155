//! The restore's mark in the merge savepoint, so that an undo stays undone.
//!
//! The restore keeps its own journal (`restore-savepoint.json`) for its steps, but the merge run
//! decides from `savepoint.json` alone. So the restore holds the merge savepoint's lock for its
//! whole run (no merge run can start meanwhile, nor a restore start during a merge), and for
//! every pair it restores writes the merge record's status `restored` with the recreated
//! contact's id, the restore journal and, at the end, the restore report. The merge run's ledger
//! (`merge/ledger.rs`) then holds both the pair and the recreated contact as decided "do not
//! merge". A pair whose merge record is not finished (Reconcile still to run, an outcome still
//! unknown) is refused before any write: restoring it would leave the merge run work that puts
//! the primary back on the tickets the restore gives back.

use std::path::{Path, PathBuf};

use chrono::Utc;

use super::input::Item;
use crate::error::AppError;
use crate::merge::carry::OtherMerge;
use crate::merge::journal::{CarryRecord, PairRecord, PairStatus, Restored, pair_key};
use crate::merge::savepoint::Savepoint;
use crate::options::Keep;

/// What the merge savepoint says of one pair's merge, for its undo.
#[derive(Debug, Clone, Default)]
pub struct MergeFacts {
    /// What the merge's carry-over wrote onto the survivor, if anything.
    pub carry: Option<CarryRecord>,
    /// The ref the merge's AdoptExternalRef put on the survivor (`None`: none, or no record).
    pub adopted_ref: Option<String>,
    /// The other merges into the same survivor that stay in place (not restored).
    pub others: Vec<OtherMerge>,
    /// The savepoint has a record of this pair (else `adopted_ref` says nothing).
    pub known: bool,
    /// Every ref a merge into the same survivor adopted (this pair's and the others'): a
    /// group adopts one member's ref in whichever member's merge runs the adoption.
    pub adopted_into: Vec<String>,
}

/// The merge savepoint, locked for the restore's run.
pub struct MergeRecords {
    sp: Savepoint,
}

impl MergeRecords {
    /// Locks `savepoint.json` (waiting for no one: a merge run holding it is an error that
    /// says so).
    pub fn open(path: &Path) -> Result<Self, AppError> {
        Ok(Self {
            sp: Savepoint::open(path)?,
        })
    }

    /// Why this pair must not be restored now, if it must not: its merge is not finished.
    /// A pending ref adoption is no reason: the restore gives the ref back to the recreated
    /// contact, and its `restored` status ends the record, adoption included.
    pub fn refusal(&self, item: &Item) -> Option<String> {
        let rec = self.sp.get(&key(item))?;
        let unfinished = !rec.status.is_final() && rec.status != PairStatus::RefAdoptionPending;
        if !unfinished || !rec.merge_in_flight() {
            return None;
        }
        Some(format!(
            "its merge is not finished in {} (status {}{}): run the merge again to finish it \
             (the same `devrev-merge --csv ...` command), then restore. Restoring now would \
             leave the merge run work that undoes the restore",
            self.sp.path().display(),
            serde_json::to_value(rec.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            rec.last_step
                .map(|s| format!(", last step {s}"))
                .unwrap_or_default(),
        ))
    }

    /// What the merge savepoint knows of this pair's merge and of the other merges into the
    /// same survivor that stay in place: the undo changes only what this merge put there.
    pub fn facts(&self, item: &Item) -> MergeFacts {
        let rec = self.sp.get(&key(item));
        let carry = rec
            .and_then(|r| r.carry.clone())
            .filter(|c| !c.carried.is_empty() || c.write.is_some());
        let others = self
            .sp
            .file()
            .pairs
            .values()
            .filter(|r| {
                r.primary == item.meta.primary_id
                    && r.secondary != item.meta.secondary_id
                    && r.status != PairStatus::Restored
                    && (r.merged.is_some()
                        || matches!(
                            r.status,
                            PairStatus::Merged
                                | PairStatus::AlreadyMerged
                                | PairStatus::RefAdoptionPending
                        ))
            })
            .filter_map(|r| {
                let dir = &r.backup.as_ref()?.dir;
                match crate::backup::load_metadata(dir) {
                    Ok(m) => Some(OtherMerge {
                        label: m
                            .secondary
                            .display_id
                            .clone()
                            .unwrap_or_else(|| m.secondary_id.clone()),
                        secondary: m.secondary,
                    }),
                    Err(e) => {
                        tracing::warn!(pair = %r.email, error = %e, "cannot read another merge's backup; its values are not known to the undo");
                        None
                    }
                }
            })
            .collect();
        MergeFacts {
            carry,
            adopted_ref: rec.and_then(|r| r.external_ref_adopted.clone()),
            others,
            known: rec.is_some(),
            adopted_into: self
                .sp
                .file()
                .pairs
                .values()
                .filter(|r| r.primary == item.meta.primary_id)
                .filter_map(|r| r.external_ref_adopted.clone())
                .collect(),
        }
    }

    /// Records the pair as restored (with the recreated contact), creating its record when the
    /// merge savepoint has none (a backup from elsewhere, a savepoint started afresh).
    pub fn mark_restored(
        &mut self,
        item: &Item,
        new_contact: &str,
        restore_journal: &Path,
    ) -> Result<(), AppError> {
        let key = key(item);
        let restored = Restored {
            at: Utc::now(),
            new_contact: new_contact.to_string(),
            restore_journal: restore_journal.to_path_buf(),
            report: None,
        };
        let Some(rec) = self.sp.get(&key) else {
            let mut rec = PairRecord::new(
                item.email(),
                &item.meta.primary_id,
                &item.meta.secondary_id,
                Keep::Revu,
            );
            rec.status = PairStatus::Restored;
            rec.restored = Some(restored);
            rec.finished_at = Some(Utc::now());
            self.sp.put(&key, rec)?;
            return Ok(());
        };
        let marked = rec.status == PairStatus::Restored
            && rec
                .restored
                .as_ref()
                .is_some_and(|x| x.new_contact == new_contact);
        if marked {
            return Ok(());
        }
        self.sp.update(&key, |r| {
            r.status = PairStatus::Restored;
            r.restored = Some(restored);
            r.error = None;
            r.skip = None;
        })?;
        Ok(())
    }

    /// Adds the restore report to the records this run marked.
    pub fn note_report(&mut self, items: &[&Item], report: &Path) -> Result<(), AppError> {
        for item in items {
            let key = key(item);
            if self.sp.get(&key).is_some_and(|r| r.restored.is_some()) {
                let report: PathBuf = report.to_path_buf();
                self.sp.update(&key, |r| {
                    if let Some(x) = r.restored.as_mut() {
                        x.report = Some(report);
                    }
                })?;
            }
        }
        Ok(())
    }
}

fn key(item: &Item) -> String {
    pair_key(&item.meta.primary_id, &item.meta.secondary_id)
}
