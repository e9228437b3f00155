//! The savepoint: a versioned JSON journal of every pair's progress, written atomically after
//! every step, plus the lock file that keeps two runs off the same journal.
//!
//! The file is the single source of truth for resuming. It is keyed by the pair's two DONs
//! (`"<primary DON> <- <secondary DON>"`), never by CSV line or email, so editing the CSV
//! between runs cannot attach an old record to a different pair. Every change goes through
//! [`Savepoint::update`], which modifies the record and writes the whole file (temp file,
//! fsync, rename) before returning: what is in memory is what is on disk, so a crash or a
//! second Ctrl-C at any instant leaves a consistent journal.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

use super::saga::{MergedSign, PairError, SkipReason, Step};
use crate::backup::BackupSummary;
use crate::cli::Keep;
use crate::error::AppError;
use crate::fsutil;

/// The format version this build reads and writes. Bump it (and refuse older or newer files
/// explicitly) whenever a field changes meaning.
pub const VERSION: u32 = 1;

/// The savepoint key of a pair: both DONs, primary first.
pub fn pair_key(primary: &str, secondary: &str) -> String {
    format!("{primary} <- {secondary}")
}

/// Where a pair stands overall. `Merged` and `AlreadyMerged` are final; every other status is
/// picked up again by the next run (skips are re-validated, failures retried from the last
/// completed step, unconfirmed merges polled again, never re-sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairStatus {
    /// Started, not finished (the run stopped or crashed in the middle).
    InProgress,
    Merged,
    /// The secondary already pointed at the primary when validated; nothing was changed.
    AlreadyMerged,
    Skipped,
    Failed,
    /// The merge was accepted but DevRev had not applied it within `--merge-timeout`.
    Unconfirmed,
}

impl PairStatus {
    pub fn is_final(self) -> bool {
        matches!(self, PairStatus::Merged | PairStatus::AlreadyMerged)
    }
}

/// One `rev-users.merge` request: the intent is written before the call, the outcome after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeIntent {
    /// 1 for the first request of this pair; higher only after an earlier one was shown not
    /// to have been applied.
    pub attempt: u32,
    pub requested_at: DateTime<Utc>,
    /// `None` between the intent and the answer: a crash in that window leaves it `None`.
    pub outcome: Option<MergeOutcome>,
}

/// What became of a merge request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MergeOutcome {
    /// DevRev answered 200: the merge is queued.
    Accepted { at: DateTime<Utc> },
    /// The request never left this machine (connection refused): certainly not applied.
    NotSent { reason: String },
    /// DevRev refused it (4xx): not applied.
    Rejected { error: PairError },
    /// The answer was lost (dropped connection, timeout, 500/502/504). Resolved by watching
    /// the secondary, never by asking again.
    Unknown { reason: String },
    /// An unknown or missing outcome, resolved: the secondary was still unmerged a full
    /// `--merge-timeout` after the request, so the request was not applied.
    NotApplied { checked_at: DateTime<Utc> },
}

impl MergeOutcome {
    /// True when the request certainly had no effect, so a new one may be sent.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(
            self,
            MergeOutcome::NotSent { .. }
                | MergeOutcome::Rejected { .. }
                | MergeOutcome::NotApplied { .. }
        )
    }
}

/// How the merge was seen to have happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeConfirmation {
    pub at: DateTime<Utc>,
    pub sign: MergedSign,
}

/// Repairs made by Reconcile, kept as ids so a resumed Reconcile never counts one twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repairs {
    pub tickets: Vec<String>,
    pub conversations: Vec<String>,
    pub display_name_restored: bool,
    /// Backed-up tickets that no longer exist (deleted by someone since the backup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets_gone: Vec<String>,
}

/// Everything the journal knows about one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub email: String,
    /// DON of the contact that survives.
    pub primary: String,
    /// DON of the contact merged into it.
    pub secondary: String,
    pub keep: Keep,
    pub status: PairStatus,
    /// The last step that completed (`None`: nothing completed yet).
    pub last_step: Option<Step>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PairError>,
    /// The primary's display name before the merge (restored if the merge changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_display_name: Option<String>,
    /// The secondary's external_ref before the merge (adopted by the primary with
    /// `--keep revu`; after the merge the secondary may be gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSummary>,
    /// The current merge request (intent + outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeIntent>,
    /// Earlier requests that were shown not to have been applied (audit trail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_merges: Vec<MergeIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeConfirmation>,
    #[serde(default)]
    pub repairs: Repairs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref_adopted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl PairRecord {
    pub fn new(email: &str, primary: &str, secondary: &str, keep: Keep) -> Self {
        Self {
            email: email.to_string(),
            primary: primary.to_string(),
            secondary: secondary.to_string(),
            keep,
            status: PairStatus::InProgress,
            last_step: None,
            updated_at: Utc::now(),
            skip: None,
            error: None,
            primary_display_name: None,
            secondary_external_ref: None,
            backup: None,
            merge: None,
            earlier_merges: Vec::new(),
            merged: None,
            repairs: Repairs::default(),
            external_ref_adopted: None,
            finished_at: None,
        }
    }

    /// True once a merge may have been sent for this pair and was not shown to be without
    /// effect: from here on the pair must be finished, never started over.
    pub fn merge_in_flight(&self) -> bool {
        self.merged.is_some()
            || self.merge.as_ref().is_some_and(|m| {
                !m.outcome
                    .as_ref()
                    .is_some_and(MergeOutcome::certainly_not_applied)
            })
    }
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavepointFile {
    pub version: u32,
    pub tool_version: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pairs: BTreeMap<String, PairRecord>,
}

impl SavepointFile {
    pub fn new() -> Self {
        let now = Utc::now();
        Self {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: now,
            updated_at: now,
            pairs: BTreeMap::new(),
        }
    }
}

impl Default for SavepointFile {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    #[error(
        "another devrev-merge run is using the savepoint {savepoint} (its lock {lock} is held{holder}). \
         Wait for that run to finish, or use a different --savepoint for an unrelated run."
    )]
    Locked {
        savepoint: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error(
        "the savepoint {path} is corrupt ({reason}). It was left unchanged. Restore it from a \
         copy, or move it away to start over (pairs already merged are then re-validated and \
         reported as skipped, never merged twice)."
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the savepoint {path} has format version {found}, but this devrev-merge reads version \
         {VERSION}. Use the devrev-merge version that wrote it to finish that run. It was left unchanged."
    )]
    Version { path: PathBuf, found: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<SavepointError> for AppError {
    fn from(e: SavepointError) -> Self {
        match e {
            SavepointError::Corrupt { .. } | SavepointError::Version { .. } => {
                AppError::Data(e.to_string())
            }
            SavepointError::Locked { .. } | SavepointError::Io { .. } => {
                AppError::CantCreate(e.to_string())
            }
        }
    }
}

/// Reads a savepoint file. `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<SavepointFile>, SavepointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SavepointError::Io {
                what: "read the savepoint",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| SavepointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    // The version is checked before the shape, so a newer format gets the right message
    // instead of a confusing field error.
    match value.get("version") {
        None => {
            return Err(corrupt(
                "no \"version\" field: not a devrev-merge savepoint".into(),
            ));
        }
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(SavepointError::Version {
                path: path.to_path_buf(),
                found: v.to_string(),
            });
        }
    }
    let file: SavepointFile = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    for (key, rec) in &file.pairs {
        if *key != pair_key(&rec.primary, &rec.secondary) {
            return Err(corrupt(format!(
                "the entry {key:?} holds the pair {:?}",
                pair_key(&rec.primary, &rec.secondary)
            )));
        }
    }
    Ok(Some(file))
}

/// An exclusive lock on `<savepoint>.lock`, held for the whole run and released when dropped
/// or when the process dies (it is an `flock`, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct SavepointLock {
    _file: fs::File,
    path: PathBuf,
}

impl SavepointLock {
    pub fn lock_path(savepoint: &Path) -> PathBuf {
        let mut name = savepoint
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        savepoint.with_file_name(name)
    }

    pub fn acquire(savepoint: &Path) -> Result<Self, SavepointError> {
        let path = Self::lock_path(savepoint);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir).map_err(|source| SavepointError::Io {
                what: "create the folder of",
                path: path.clone(),
                source,
            })?;
        }
        let io = |what, source| SavepointError::Io {
            what,
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("open the lock file", e))?;
        if !file.try_lock_exclusive().map_err(|e| io("lock", e))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                String::new()
            } else {
                format!(" by process {holder}")
            };
            return Err(SavepointError::Locked {
                savepoint: savepoint.to_path_buf(),
                lock: path,
                holder,
            });
        }
        // Who holds it, for the message a second run prints.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The open journal of a run: the lock, the path and the content.
#[derive(Debug)]
pub struct Savepoint {
    path: PathBuf,
    file: SavepointFile,
    /// Whether the file exists on disk (a new journal is only written at the first change).
    on_disk: bool,
    _lock: SavepointLock,
}

impl Savepoint {
    /// Locks and loads the savepoint (or starts an empty one; nothing is written yet).
    pub fn open(path: &Path) -> Result<Self, SavepointError> {
        let lock = SavepointLock::acquire(path)?;
        let existing = load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            on_disk: existing.is_some(),
            file: existing.unwrap_or_default(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists_on_disk(&self) -> bool {
        self.on_disk
    }

    pub fn file(&self) -> &SavepointFile {
        &self.file
    }

    pub fn get(&self, key: &str) -> Option<&PairRecord> {
        self.file.pairs.get(key)
    }

    /// Adds a record (or replaces one) and writes the file.
    pub fn put(&mut self, key: &str, rec: PairRecord) -> Result<(), SavepointError> {
        self.file.pairs.insert(key.to_string(), rec);
        self.save()
    }

    /// Removes a record and writes the file.
    pub fn remove(&mut self, key: &str) -> Result<Option<PairRecord>, SavepointError> {
        let old = self.file.pairs.remove(key);
        if old.is_some() {
            self.save()?;
        }
        Ok(old)
    }

    /// Changes one record and writes the file before returning. There is no way to change a
    /// record without writing it, which is what keeps memory and disk the same.
    pub fn update<R>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut PairRecord) -> R,
    ) -> Result<R, SavepointError> {
        let rec = self
            .file
            .pairs
            .get_mut(key)
            .ok_or_else(|| SavepointError::Corrupt {
                path: self.path.clone(),
                reason: format!("no entry for {key:?} (changed by something else during the run?)"),
            })?;
        let r = f(rec);
        rec.updated_at = Utc::now();
        self.save()?;
        Ok(r)
    }

    fn save(&mut self) -> Result<(), SavepointError> {
        self.file.updated_at = Utc::now();
        fsutil::write_json_atomic(&self.path, &self.file).map_err(|source| SavepointError::Io {
            what: "write the savepoint",
            path: self.path.clone(),
            source,
        })?;
        self.on_disk = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rec(n: u32) -> PairRecord {
        PairRecord::new(
            &format!("p{n}@example.com"),
            &format!("don:identity:dvrv-us-1:devo/1:revu/P{n}"),
            &format!("don:identity:dvrv-us-1:devo/1:revu/S{n}"),
            Keep::Revu,
        )
    }

    fn key(r: &PairRecord) -> String {
        pair_key(&r.primary, &r.secondary)
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut sp = Savepoint::open(&path).unwrap();
        assert!(!path.exists(), "nothing is written before the first change");
        let r = rec(1);
        sp.put(&key(&r), r.clone()).unwrap();
        sp.update(&key(&r), |p| {
            p.last_step = Some(Step::Backup);
            p.merge = Some(MergeIntent {
                attempt: 1,
                requested_at: Utc::now(),
                outcome: Some(MergeOutcome::Unknown {
                    reason: "dropped".into(),
                }),
            });
            p.repairs
                .tickets
                .push("don:core:dvrv-us-1:devo/1:ticket/1".into());
        })
        .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, *sp.file());
        assert_eq!(loaded.version, VERSION);
        let got = &loaded.pairs[&key(&r)];
        assert_eq!(got.last_step, Some(Step::Backup));
        assert!(got.merge_in_flight());
        let raw: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["version"], 1);
        assert_eq!(raw["pairs"][key(&r)]["last_step"], "backup");
    }

    #[test]
    fn missing_file_is_a_fresh_journal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.json")).unwrap().is_none());
    }

    #[test]
    fn corrupt_file_is_a_data_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        for bad in [
            &b"{\"version\":1,\"pairs\":{"[..],
            b"[]",
            b"{\"pairs\":{}}",
            b"{\"version\":1,\"tool_version\":\"x\",\"created_at\":\"nope\",\"updated_at\":\"nope\",\"pairs\":{}}",
        ] {
            fs::write(&path, bad).unwrap();
            let err = Savepoint::open(&path).unwrap_err();
            assert!(matches!(err, SavepointError::Corrupt { .. }), "{err}");
            let app: AppError = err.into();
            assert_eq!(app.exit_code(), 65);
            assert!(app.to_string().contains("left unchanged"), "{app}");
            assert_eq!(fs::read(&path).unwrap(), bad, "never overwritten");
        }
    }

    #[test]
    fn entry_under_the_wrong_key_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut f = SavepointFile::new();
        f.pairs.insert("someone else".into(), rec(1));
        fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
        assert!(matches!(load(&path), Err(SavepointError::Corrupt { .. })));
    }

    #[test]
    fn other_versions_are_refused_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut v = serde_json::to_value(SavepointFile::new()).unwrap();
        v["version"] = serde_json::json!(2);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, SavepointError::Version { .. }));
        assert!(err.to_string().contains("version 2"), "{err}");
        assert_eq!(AppError::from(err).exit_code(), 65);
    }

    #[test]
    fn second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let first = Savepoint::open(&path).unwrap();
        let err = Savepoint::open(&path).unwrap_err();
        assert!(matches!(err, SavepointError::Locked { .. }));
        let msg = err.to_string();
        assert!(msg.contains("another devrev-merge run"), "{msg}");
        assert!(
            msg.contains(&std::process::id().to_string()),
            "names the holder: {msg}"
        );
        assert_eq!(AppError::from(err).exit_code(), 73);
        drop(first);
        Savepoint::open(&path).expect("free again once the first run ends");
    }

    #[test]
    fn in_flight_means_a_merge_may_have_been_sent() {
        let mut r = rec(1);
        assert!(!r.merge_in_flight());
        r.merge = Some(MergeIntent {
            attempt: 1,
            requested_at: Utc::now(),
            outcome: None,
        });
        assert!(r.merge_in_flight(), "intent without outcome");
        r.merge.as_mut().unwrap().outcome = Some(MergeOutcome::NotSent {
            reason: "refused".into(),
        });
        assert!(!r.merge_in_flight());
        r.merge.as_mut().unwrap().outcome = Some(MergeOutcome::Accepted { at: Utc::now() });
        assert!(r.merge_in_flight());
    }
}
