//! The savepoint: a versioned JSON journal of every pair's progress, written atomically after
//! every step, plus the lock file that keeps two runs off the same journal.
//!
//! The file is the single source of truth for resuming. It is keyed by the pair's two DONs
//! (`"<primary DON> <- <secondary DON>"`), never by CSV line or email, so editing the CSV
//! between runs cannot attach an old record to a different pair. Every change goes through
//! [`Savepoint::update`], which modifies the record and writes the whole file (temp file,
//! fsync, rename) before returning: what is in memory is what is on disk, so a crash or a
//! second Ctrl-C at any instant leaves a consistent journal.
//!
//! What the file holds (its types and format version) is defined in `journal.rs`; this module
//! only reads, locks and writes it.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use fs4::fs_std::FileExt;

use super::journal::{Owner, PairRecord, SavepointFile, VERSION, pair_key};
use crate::error::AppError;
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    #[error(
        "another devrev-merge run is using the savepoint {savepoint} (its lock {lock} is held{holder}). \
         Wait for that run to finish: one journal belongs to one run at a time."
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

    /// Records which org and base URL the journal belongs to (file-level fields) and writes
    /// the file.
    pub fn set_owner(&mut self, owner: Owner) -> Result<(), SavepointError> {
        self.file.owner = Some(owner);
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
    use crate::merge::journal::{MergeIntent, MergeOutcome, Step};
    use crate::options::Keep;
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
                unmerged_since: None,
                watch_until: None,
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
}
