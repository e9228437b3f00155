//! What one run has already read, so that a ticket, conversation or attachment several pairs
//! share (as email threads do) costs its API calls once per run instead of once per pair.
//!
//! At DevRev's pace a run is as long as its calls, and the calls that read a shared object a
//! second time buy nothing:
//! - **Attachments** are immutable per artifact id, so each is located and downloaded once per
//!   run (and its `artifacts.get`, when a summary lacks the size, made once). A later backup
//!   that needs it gets the bytes from the first backup's verified file: hard-linked into its
//!   own folder (copied where a link cannot be made), then checked against the size and
//!   sha256 recorded at the download. Every folder still holds real bytes and verifies on its
//!   own, also when copied elsewhere. A source that is gone or no longer matches is
//!   downloaded again.
//! - **Timelines** change (comments arrive), so one read earlier in this run is reused only
//!   while younger than [`FRESH_FOR`], the age the run already accepts for a prepared backup
//!   before its merge. Older than that, it is read again.
//!
//! One [`RunReads`] per process run, shared by every pair's backup. The run is one thread
//! whose futures interleave, so the state sits behind a `Mutex` that is never held across an
//! `.await`: two backups missing the same object at once both read it (a wasted call, never a
//! wrong backup).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::devrev::types::FileInfo;
use crate::fsutil;

/// How long something read from DevRev stays fresh enough to act on: a prepared backup older
/// than this is checked against DevRev's lists again before its merge, and a timeline read
/// earlier in the run is reused by a later backup only while younger than this.
pub const FRESH_FOR: Duration = Duration::from_secs(90);

/// [`FRESH_FOR`], which only debug builds let the end-to-end tests shorten
/// (`DEVREV_MERGE_TEST_FRESH_FOR_MS`: a test cannot wait 90 s for a backup to age).
pub fn fresh_for() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("DEVREV_MERGE_TEST_FRESH_FOR_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_millis(ms);
    }
    FRESH_FOR
}

/// An attachment a finished backup holds: where, and what it was verified to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFile {
    /// Absolute (or as given by `--backup-dir`) path of the file in its finished backup.
    pub path: PathBuf,
    pub size: u64,
    /// Lower-case hex, as the manifest records it.
    pub sha256: String,
}

/// What the run reused instead of reading DevRev again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reused {
    /// Timelines (`timeline-entries.list`, all pages) taken from an earlier read.
    pub timelines: usize,
    /// Attachments linked or copied from an earlier backup instead of located and downloaded.
    pub attachments: usize,
    /// `artifacts.get` answers (sizes) taken from an earlier call.
    pub artifact_gets: usize,
}

#[derive(Debug)]
struct Timeline {
    /// When the read began: anything written to DevRev after this may be missing from it.
    read_at: Instant,
    entries: Arc<Vec<Value>>,
}

#[derive(Debug, Default)]
struct Inner {
    timelines: HashMap<String, Timeline>,
    files: HashMap<String, Option<FileInfo>>,
    saved: HashMap<String, SavedFile>,
    reused: Reused,
}

/// The run-wide read cache; see the module documentation.
#[derive(Debug)]
pub struct RunReads {
    fresh_for: Duration,
    inner: Mutex<Inner>,
}

impl Default for RunReads {
    fn default() -> Self {
        Self::new()
    }
}

impl RunReads {
    /// A cache whose timelines stay fresh for [`fresh_for`].
    pub fn new() -> Self {
        Self::with_window(fresh_for())
    }

    /// A cache whose timelines stay fresh for `fresh_for` (zero: never reused).
    pub fn with_window(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps half-updated (each update is one insert),
        // so a poisoned lock is still good to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What was reused so far in this run.
    pub fn reused(&self) -> Reused {
        self.lock().reused
    }

    /// The timeline of `object` if it was read less than the window ago. Older reads are
    /// dropped, which also bounds the memory a long run holds.
    pub fn timeline(&self, object: &str) -> Option<Arc<Vec<Value>>> {
        let window = self.fresh_for;
        let mut inner = self.lock();
        inner.timelines.retain(|_, t| t.read_at.elapsed() < window);
        let hit = inner.timelines.get(object).map(|t| t.entries.clone());
        if hit.is_some() {
            inner.reused.timelines += 1;
        }
        hit
    }

    /// Drops the timeline of `object`: it changed since it was read.
    pub fn forget_timeline(&self, object: &str) {
        self.lock().timelines.remove(object);
    }

    /// Keeps a timeline whose read began at `read_at`.
    pub fn keep_timeline(&self, object: &str, read_at: Instant, entries: Arc<Vec<Value>>) {
        if self.fresh_for.is_zero() {
            return;
        }
        self.lock()
            .timelines
            .insert(object.to_string(), Timeline { read_at, entries });
    }

    /// The `file` of an `artifacts.get` answer made earlier in the run (`Some(None)`: the
    /// answer had no `file`).
    pub fn artifact_file(&self, id: &str) -> Option<Option<FileInfo>> {
        let mut inner = self.lock();
        let hit = inner.files.get(id).cloned();
        if hit.is_some() {
            inner.reused.artifact_gets += 1;
        }
        hit
    }

    /// Keeps the `file` of an `artifacts.get` answer: an artifact's file never changes.
    pub fn keep_artifact_file(&self, id: &str, file: Option<FileInfo>) {
        self.lock().files.insert(id.to_string(), file);
    }

    /// The file of a finished backup holding this artifact, if any.
    pub fn saved(&self, id: &str) -> Option<SavedFile> {
        self.lock().saved.get(id).cloned()
    }

    /// Records attachments of a backup that is finished (verified and renamed into place):
    /// only then are they a source for the next backups.
    pub fn keep_saved(&self, files: impl IntoIterator<Item = (String, SavedFile)>) {
        let mut inner = self.lock();
        for (id, f) in files {
            inner.saved.insert(id, f);
        }
    }

    /// Forgets a source that turned out to be gone or changed.
    pub fn forget_saved(&self, id: &str) {
        self.lock().saved.remove(id);
    }

    /// Counts one attachment taken from an earlier backup.
    pub fn note_attachment_reused(&self) {
        self.lock().reused.attachments += 1;
    }
}

/// Why an earlier file could not be reused (the caller downloads instead).
#[derive(Debug, thiserror::Error)]
pub enum ReuseError {
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("{path} holds {size} bytes with sha256 {sha256}, not what its backup recorded")]
    Differs {
        path: PathBuf,
        size: u64,
        sha256: String,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Puts the bytes of `src` at `dest` (a new name in a private folder), checked to be `src`'s
/// recorded size and sha256 before `dest` appears: a hard link where the file system allows
/// one (no second copy on disk), else a copy. Either way `dest` is a regular, owner-only file
/// of its own name, so its folder verifies and can be copied elsewhere on its own.
pub fn link_or_copy_verified(src: &SavedFile, dest: &Path) -> Result<(), ReuseError> {
    let folder = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fsutil::create_private_dir(folder)?;
    let meta = std::fs::symlink_metadata(&src.path)?;
    if !meta.file_type().is_file() {
        return Err(ReuseError::NotAFile(src.path.clone()));
    }
    // A source someone opened to others is not linked (the link would share that access):
    // it is copied into a fresh owner-only file instead.
    let private = matches!(crate::platform::open_to_others(&src.path, &meta), Ok(None));
    if private {
        match link_checked(src, folder, dest) {
            Ok(()) => return Ok(()),
            Err(e @ ReuseError::Differs { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(source = %src.path.display(), error = %e, "cannot hard-link an attachment; copying it");
            }
        }
    }
    copy_checked(src, folder, dest)
}

fn link_checked(src: &SavedFile, folder: &Path, dest: &Path) -> Result<(), ReuseError> {
    let tmp = tempfile::Builder::new()
        .prefix(".ln-")
        .make_in(folder, |p| std::fs::hard_link(&src.path, p))?;
    let meta = std::fs::symlink_metadata(tmp.path())?;
    if !meta.file_type().is_file() {
        return Err(ReuseError::NotAFile(src.path.clone()));
    }
    let (size, sha256) = super::verify::sha256_file(tmp.path())?;
    check_same(src, size, sha256)?;
    tmp.persist_noclobber(dest).map_err(|e| e.error)?;
    fsutil::sync_dir(folder)?;
    Ok(())
}

fn copy_checked(src: &SavedFile, folder: &Path, dest: &Path) -> Result<(), ReuseError> {
    fsutil::refuse_symlink(&src.path)?;
    let mut from = std::fs::File::open(&src.path)?;
    let mut tmp = fsutil::private_tempfile_in(folder, ".cp-")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let k = from.read(&mut buf)?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        tmp.write_all(&buf[..k])?;
        size += k as u64;
    }
    check_same(src, size, fsutil::sha256_hex(hasher))?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(dest).map_err(|e| e.error)?;
    fsutil::sync_dir(folder)?;
    Ok(())
}

fn check_same(src: &SavedFile, size: u64, sha256: String) -> Result<(), ReuseError> {
    if size == src.size && sha256.eq_ignore_ascii_case(&src.sha256) {
        Ok(())
    } else {
        Err(ReuseError::Differs {
            path: src.path.clone(),
            size,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &Path, name: &str, bytes: &[u8]) -> SavedFile {
        let path = dir.join(name);
        fsutil::write_private_atomic(&path, bytes).unwrap();
        SavedFile {
            path,
            size: bytes.len() as u64,
            sha256: fsutil::sha256_hex(Sha256::new_with_prefix(bytes)),
        }
    }

    #[test]
    fn a_timeline_is_reused_only_inside_the_window() {
        let reads = RunReads::with_window(Duration::from_secs(60));
        let entries = Arc::new(vec![serde_json::json!({"id": "e1"})]);
        reads.keep_timeline("TKT-1", Instant::now(), entries.clone());
        assert_eq!(reads.timeline("TKT-1"), Some(entries.clone()));
        assert_eq!(reads.timeline("TKT-2"), None);
        // Read long ago: stale, dropped, read again.
        let old = Instant::now()
            .checked_sub(Duration::from_secs(61))
            .unwrap_or_else(Instant::now);
        reads.keep_timeline("TKT-3", old, entries);
        if old.elapsed() >= Duration::from_secs(60) {
            assert_eq!(reads.timeline("TKT-3"), None);
        }
        assert_eq!(reads.reused().timelines, 1);
    }

    #[test]
    fn a_zero_window_never_keeps_a_timeline() {
        let reads = RunReads::with_window(Duration::ZERO);
        reads.keep_timeline("TKT-1", Instant::now(), Arc::new(vec![]));
        assert_eq!(reads.timeline("TKT-1"), None);
        assert_eq!(reads.reused(), Reused::default());
    }

    #[test]
    fn artifact_files_and_saved_files_are_kept_for_the_run() {
        let reads = RunReads::default();
        assert_eq!(reads.artifact_file("a/1"), None);
        reads.keep_artifact_file("a/1", None);
        assert_eq!(reads.artifact_file("a/1"), Some(None));
        assert_eq!(reads.reused().artifact_gets, 1);
        let f = SavedFile {
            path: "x".into(),
            size: 1,
            sha256: "00".into(),
        };
        reads.keep_saved([("a/1".to_string(), f.clone())]);
        assert_eq!(reads.saved("a/1"), Some(f));
        reads.forget_saved("a/1");
        assert_eq!(reads.saved("a/1"), None);
    }

    #[test]
    fn a_link_holds_the_same_bytes_privately() {
        let tmp = tempfile::tempdir().unwrap();
        let src = saved(tmp.path(), "first", b"attachment bytes");
        let dest = tmp.path().join("second/attachments/a_1.txt");
        link_or_copy_verified(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"attachment bytes");
        crate::platform::tests::assert_private(&dest);
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let a = std::fs::metadata(&src.path).unwrap();
            let b = std::fs::metadata(&dest).unwrap();
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "a hard link");
        }
        // Removing the first leaves the second whole.
        std::fs::remove_file(&src.path).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"attachment bytes");
    }

    #[test]
    fn a_copy_is_checked_too() {
        let tmp = tempfile::tempdir().unwrap();
        let src = saved(tmp.path(), "first", b"abc");
        let dest = tmp.path().join("copy");
        copy_checked(&src, tmp.path(), &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        crate::platform::tests::assert_private(&dest);
    }

    #[test]
    fn a_changed_or_missing_source_is_not_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut src = saved(tmp.path(), "first", b"abc");
        src.sha256 = "0".repeat(64);
        let dest = tmp.path().join("d");
        assert!(matches!(
            link_or_copy_verified(&src, &dest),
            Err(ReuseError::Differs { .. })
        ));
        assert!(!dest.exists());
        assert!(copy_checked(&src, tmp.path(), &dest).is_err());
        assert!(!dest.exists());
        let gone = SavedFile {
            path: tmp.path().join("gone"),
            ..src
        };
        assert!(link_or_copy_verified(&gone, &dest).is_err());
        assert!(!dest.exists());
        // Nothing half-made is left behind.
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_never_a_source() {
        let tmp = tempfile::tempdir().unwrap();
        let real = saved(tmp.path(), "real", b"abc");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real.path, &link).unwrap();
        let src = SavedFile { path: link, ..real };
        let dest = tmp.path().join("d");
        assert!(link_or_copy_verified(&src, &dest).is_err());
        assert!(!dest.exists());
    }
}
