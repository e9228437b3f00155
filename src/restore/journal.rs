//! The restore savepoint (`restore-savepoint.json`, next to `--savepoint`): one record per
//! pair, every write journaled as an intent before it is sent and its outcome after, written
//! atomically (0600) after every change, and locked so two restores never share it.
//!
//! The dangerous write is `rev-users.create`: a second create would make a duplicate contact.
//! So its intent is on disk before the request leaves, and a run that finds an intent without
//! an outcome looks the contact up (by `external_ref`, then email) before ever creating again.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::fsutil;

/// Format version of the file; another number is refused, never guessed at.
pub const VERSION: u32 = 1;
/// The file name, in the folder of `--savepoint`.
pub const FILE_NAME: &str = "restore-savepoint.json";

/// The key of a pair: its two DONs, like the merge savepoint (the old secondary is unique).
pub fn pair_key(primary: &str, secondary: &str) -> String {
    format!("{primary} <- {secondary}")
}

/// Where a pair's restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStatus {
    InProgress,
    Restored,
    /// Refused by the live check before any write (nothing changed).
    Skipped,
    /// Stopped by an error; re-running resumes it from the journal.
    Failed,
}

/// The steps of one pair's restore, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStep {
    Check,
    PrimaryRef,
    /// The survivor's own values back where the merge's carry-over wrote the secondary's.
    UndoCarry,
    Create,
    Tickets,
    Conversations,
    Verify,
    Done,
}

/// What came of one `rev-users.create` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CreateOutcome {
    /// DevRev created it (or a lookup after a lost answer found it).
    Created {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_id: Option<String>,
        /// Found by a lookup, not from the answer.
        #[serde(default)]
        found_by_lookup: bool,
    },
    /// DevRev answered with an error: certainly not created.
    Refused { status: u16, reason: String },
    /// The answer was lost and a lookup found no such contact: not created.
    NotFound,
}

/// One create request: the intent is written before it is sent, the outcome after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateIntent {
    pub attempt: u32,
    pub requested_at: DateTime<Utc>,
    /// The fields sent (names only; the values are in the backup).
    pub fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CreateOutcome>,
}

/// Which list a set-write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Ticket,
    Conversation,
}

/// A `reported_by.set` / `members.set` about to be sent. On resume it is re-checked against
/// the live object; a set-write is never sent when the object already shows its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingWrite {
    pub kind: ObjectKind,
    pub object: String,
    pub set: Vec<String>,
    pub requested_at: DateTime<Utc>,
}

/// The `rev-users.update` that puts the survivor's values back over those the carry-over
/// wrote: the exact fields, journaled before the call, `done` after its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarryUndo {
    pub requested_at: DateTime<Utc>,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub done: bool,
}

/// Giving the primary back its own external_ref (intent, then `done`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefChange {
    pub from: Option<String>,
    pub to: String,
    pub done: bool,
}

/// Everything the journal knows about one pair's restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub email: String,
    pub primary: String,
    /// The merged-away contact's old DON.
    pub secondary: String,
    pub backup_dir: PathBuf,
    pub status: RestoreStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<RestoreStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_ref: Option<RefChange>,
    /// Every create request, oldest first; only the last may lack an outcome.
    #[serde(default)]
    pub creates: Vec<CreateIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingWrite>,
    /// Tickets and conversations finished (written, or already right).
    #[serde(default)]
    pub tickets: Vec<String>,
    #[serde(default)]
    pub conversations: Vec<String>,
    /// Tickets and conversations actually written by this tool.
    #[serde(default)]
    pub written: Vec<String>,
    /// What could not be restored, in words.
    #[serde(default)]
    pub not_restored: Vec<String>,
    /// Putting the survivor's values back over the carried ones (intent, then `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry_undo: Option<CarryUndo>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl RestoreRecord {
    pub fn new(email: &str, primary: &str, secondary: &str, backup_dir: &Path) -> Self {
        Self {
            email: email.to_string(),
            primary: primary.to_string(),
            secondary: secondary.to_string(),
            backup_dir: backup_dir.to_path_buf(),
            status: RestoreStatus::InProgress,
            last_step: None,
            reason: None,
            primary_ref: None,
            creates: Vec::new(),
            new_id: None,
            new_display_id: None,
            pending: None,
            tickets: Vec::new(),
            conversations: Vec::new(),
            written: Vec::new(),
            not_restored: Vec::new(),
            carry_undo: None,
            updated_at: Utc::now(),
            finished_at: None,
        }
    }

    /// True once anything may have been written to DevRev for this pair: from then on the
    /// live check (which expects the merged state) no longer applies.
    pub fn wrote_anything(&self) -> bool {
        self.primary_ref.is_some() || self.carry_undo.is_some() || !self.creates.is_empty()
    }

    /// The create request whose answer is unknown (sent, or about to be, when the run died).
    pub fn create_in_doubt(&self) -> bool {
        self.new_id.is_none() && self.creates.last().is_some_and(|c| c.outcome.is_none())
    }

    /// An attempt before the last one had a lost answer (its lookup found nothing then): a
    /// contact it created may show up only now. Definite refusals never count.
    pub fn earlier_create_in_doubt(&self) -> bool {
        let n = self.creates.len().saturating_sub(1);
        self.creates[..n]
            .iter()
            .any(|c| matches!(c.outcome, None | Some(CreateOutcome::NotFound)))
    }

    /// Marks `step` completed (never goes back).
    pub fn complete(&mut self, step: RestoreStep) {
        if self.last_step.is_none_or(|s| s < step) {
            self.last_step = Some(step);
        }
    }

    /// Whether `step` was completed in an earlier run or earlier in this one.
    pub fn has(&self, step: RestoreStep) -> bool {
        self.last_step.is_some_and(|s| s >= step)
    }
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreFile {
    pub version: u32,
    pub tool_version: String,
    pub updated_at: DateTime<Utc>,
    pub pairs: BTreeMap<String, RestoreRecord>,
}

impl Default for RestoreFile {
    fn default() -> Self {
        Self {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            updated_at: Utc::now(),
            pairs: BTreeMap::new(),
        }
    }
}

/// The open, locked journal. Changes go through [`Journal::update`], which writes the file
/// before returning, so memory and disk never differ.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: RestoreFile,
    _lock: fs::File,
}

impl Journal {
    /// Locks `<path>.lock` (an `flock`: a crash releases it) and loads `path` if it exists.
    pub fn open(path: &Path) -> Result<Self, AppError> {
        // A link would make this run's journal someone else's file.
        fsutil::refuse_symlink(path).map_err(|e| AppError::CantCreate(e.to_string()))?;
        let lock = lock(path)?;
        let file = match fs::read(path) {
            Ok(bytes) => parse(path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RestoreFile::default(),
            Err(e) => {
                return Err(AppError::CantCreate(format!(
                    "cannot read the restore savepoint {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Old secondary → new contact, for every pair whose contact is recreated.
    pub fn renamed(&self) -> BTreeMap<String, String> {
        self.file
            .pairs
            .values()
            .filter_map(|r| Some((r.secondary.clone(), r.new_id.clone()?)))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&RestoreRecord> {
        self.file.pairs.get(key)
    }

    /// Adds `rec` under `key` unless a record is there already, and writes the file.
    pub fn insert_new(&mut self, key: &str, rec: RestoreRecord) -> Result<(), AppError> {
        if !self.file.pairs.contains_key(key) {
            self.file.pairs.insert(key.to_string(), rec);
            self.save()?;
        }
        Ok(())
    }

    /// Changes one record and writes the file before returning.
    pub fn update<R>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut RestoreRecord) -> R,
    ) -> Result<R, AppError> {
        let rec = self.file.pairs.get_mut(key).ok_or_else(|| {
            AppError::Data(format!(
                "the restore savepoint {} has no entry for {key}",
                self.path.display()
            ))
        })?;
        let r = f(rec);
        rec.updated_at = Utc::now();
        self.save()?;
        Ok(r)
    }

    fn save(&mut self) -> Result<(), AppError> {
        self.file.updated_at = Utc::now();
        fsutil::write_json_atomic(&self.path, &self.file).map_err(|e| {
            AppError::CantCreate(format!(
                "cannot write the restore savepoint {}: {e}",
                self.path.display()
            ))
        })
    }
}

/// Reads the journal without locking it (the preview, which writes nothing). `None` when there
/// is none or it cannot be read; a real run reports that properly.
pub fn peek(path: &Path) -> Option<RestoreFile> {
    let bytes = fs::read(path).ok()?;
    parse(path, &bytes).ok()
}

fn parse(path: &Path, bytes: &[u8]) -> Result<RestoreFile, AppError> {
    let corrupt = |why: String| {
        AppError::Data(format!(
            "the restore savepoint {} is unreadable ({why}); it was left unchanged. Move it \
             away to start over: pairs already restored are then refused by the live check, \
             never restored twice.",
            path.display()
        ))
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    if v.get("version").and_then(serde_json::Value::as_u64) != Some(u64::from(VERSION)) {
        return Err(corrupt(format!(
            "format version {} where this devrev-merge reads {VERSION}",
            v.get("version").map_or("none".into(), ToString::to_string)
        )));
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

fn lock(path: &Path) -> Result<fs::File, AppError> {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::create_private_dir(dir)
            .map_err(|e| AppError::CantCreate(format!("cannot create {}: {e}", dir.display())))?;
    }
    let cant = |e: std::io::Error| {
        AppError::CantCreate(format!("cannot lock {}: {e}", lock_path.display()))
    };
    let mut file = fsutil::open_private(&lock_path, false).map_err(cant)?;
    if !file.try_lock_exclusive().map_err(cant)? {
        return Err(AppError::CantCreate(format!(
            "another devrev-merge restore is using {} (its lock {} is held). Wait for it to \
             finish.",
            path.display(),
            lock_path.display()
        )));
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::tests::{assert_private, symlink_or_skip};

    #[test]
    fn a_symlink_at_the_journal_or_its_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere.json");
        let path = tmp.path().join("restore-savepoint.json");
        if !symlink_or_skip(&target, &path, false) {
            return;
        }
        let e = Journal::open(&path).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let path = tmp.path().join("other.json");
        assert!(symlink_or_skip(
            &target,
            &tmp.path().join("other.json.lock"),
            false
        ));
        let e = Journal::open(&path).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!target.exists(), "nothing was written through a link");
    }

    #[test]
    fn round_trip_lock_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut j = Journal::open(&path).unwrap();
        assert!(matches!(Journal::open(&path), Err(AppError::CantCreate(_))));
        let key = pair_key("p", "s");
        j.insert_new(&key, RestoreRecord::new("a@x", "p", "s", Path::new("b")))
            .unwrap();
        j.update(&key, |r| {
            r.creates.push(CreateIntent {
                attempt: 1,
                requested_at: Utc::now(),
                fields: vec!["email".into()],
                outcome: None,
            });
            r.complete(RestoreStep::PrimaryRef);
        })
        .unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        let r = j.get(&key).unwrap();
        assert!(r.create_in_doubt() && r.wrote_anything());
        assert!(r.has(RestoreStep::Check) && !r.has(RestoreStep::Create));
        assert_private(&path);
        drop(j);
        std::fs::write(&path, b"{\"version\":9}").unwrap();
        let e = Journal::open(&path).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"version\":9}");
    }
}
