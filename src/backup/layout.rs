//! Where a backup goes on disk: claiming a unique `.partial` folder, cleaning up after
//! crashed runs, renaming into place, and the free-space check.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;

use super::manifest::{LOCK_FILE, PARTIAL_SUFFIX};

/// The environment variable that replaces the real free-space figure (tests, and a user who
/// knows better than `statvfs`, e.g. on a quota-limited share). Read in [`free_space`] only.
pub const FAKE_FREE_BYTES_ENV: &str = "DEVREV_MERGE_FAKE_FREE_BYTES";

/// Held while a backup is being written into the backups folder: a shared `flock` on
/// [`LOCK_FILE`]. Leftover cleanup takes the lock exclusively, so it can only run when no
/// writer (in this process or another) is busy, and a crash releases the lock with the process.
#[derive(Debug)]
pub struct RootLock {
    _file: fs::File,
}

fn open_lock(root: &Path, create: bool) -> io::Result<fs::File> {
    let path = root.join(LOCK_FILE);
    if create {
        return fsutil::open_private(&path, false);
    }
    fsutil::refuse_symlink(&path)?;
    fs::OpenOptions::new().read(true).write(true).open(path)
}

/// Locks `root` for writing (creating it 0700) and, when no other writer holds it, removes
/// `*.partial` leftovers of crashed runs. Returns the lock and the folders removed.
pub fn lock_and_clean(root: &Path) -> io::Result<(RootLock, Vec<PathBuf>)> {
    use fs4::fs_std::FileExt;
    if let Some(was) = fsutil::tighten_private_dir(root)? {
        tracing::warn!(
            folder = %root.display(),
            "the backups folder was open to others ({was})"
        );
    }
    let file = open_lock(root, true)?;
    let mut removed = Vec::new();
    if FileExt::try_lock_exclusive(&file)? {
        for path in partial_leftovers(root)? {
            match fs::remove_dir_all(&path) {
                Ok(()) => removed.push(path),
                Err(e) => {
                    tracing::warn!(folder = %path.display(), error = %e, "cannot remove a leftover partial backup")
                }
            }
        }
        FileExt::unlock(&file)?;
    }
    // Another writer may take the exclusive lock between unlock and here; it would only
    // clean folders that already existed, and ours does not exist yet.
    FileExt::lock_shared(&file)?;
    Ok((RootLock { _file: file }, removed))
}

/// `*.partial` folders directly under `root`.
pub fn partial_leftovers(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(PARTIAL_SUFFIX) && entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// True when some process is writing a backup into `root` right now (its lock is held).
/// Never creates anything: a missing lock file means nobody is writing.
pub fn writer_active(root: &Path) -> bool {
    use fs4::fs_std::FileExt;
    match open_lock(root, false) {
        Ok(file) => match FileExt::try_lock_exclusive(&file) {
            Ok(true) => {
                let _ = FileExt::unlock(&file);
                false
            }
            Ok(false) => true,
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// The folder name for a pair's backup: `<safe email>_<YYYYMMDD_HHMMSS>`.
pub fn base_name(email: &str, stamp: &str) -> String {
    format!("{}_{stamp}", fsutil::safe_component(email, 100))
}

fn candidate(base: &str, n: u32) -> String {
    if n <= 1 {
        base.to_string()
    } else {
        format!("{base}-{n}")
    }
}

/// Claims a fresh `<name>.partial` folder (owner-only) whose final name is also free, and returns
/// (partial path, final name). `create_dir` is atomic, so two backups of the same email in
/// the same second — in this process or another — never get the same folder.
pub fn claim_partial(root: &Path, base: &str) -> io::Result<(PathBuf, String)> {
    for n in 1..10_000 {
        let name = candidate(base, n);
        if root.join(&name).exists() {
            continue;
        }
        let partial = root.join(format!("{name}{PARTIAL_SUFFIX}"));
        match crate::platform::create_dir_private(&partial) {
            Ok(()) => return Ok((partial, name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free folder name for {base} in {}",
        root.display()
    )))
}

/// Renames the verified `.partial` folder to its final name. A finished backup that took
/// the name in the meantime is never replaced: the next free `-N` name is used instead.
pub fn finalize(partial: &Path, root: &Path, name: &str) -> io::Result<PathBuf> {
    let base = name.to_string();
    for n in 1..10_000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let target = root.join(&name);
        if target.exists() {
            continue;
        }
        match fs::rename(partial, &target) {
            Ok(()) => {
                // The backup is only in place once its folder's new name is on disk.
                fsutil::sync_dir(root)
                    .map_err(|e| fsutil::renamed_but_not_durable(&target, root, e))?;
                return Ok(target);
            }
            // A folder is never renamed over another (Unix: not empty; Windows: exists):
            // someone finished a backup with this name between our check and the rename.
            Err(e) if crate::platform::rename_target_taken(&e, &target) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free folder name for {base} in {}",
        root.display()
    )))
}

/// Free bytes for new files in `dir` (or its nearest existing ancestor, since the backups
/// folder may not exist yet). [`FAKE_FREE_BYTES_ENV`] overrides the real figure.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    if let Ok(v) = std::env::var(FAKE_FREE_BYTES_ENV) {
        return v.trim().parse::<u64>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{FAKE_FREE_BYTES_ENV}={v:?} is not a whole number of bytes"),
            )
        });
    }
    let mut probe = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    loop {
        if probe.exists() {
            return fs4::available_space(probe);
        }
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => return fs4::available_space(Path::new(".")),
        }
    }
}

/// Bytes to insist on before writing a backup: what we know will be written (JSON files,
/// attachments of known size), 1 MiB per attachment of unknown size, plus a margin of 10%
/// and 16 MiB so the log, report and savepoint can still be written afterwards.
pub fn required_space(known_bytes: u64, unknown_attachments: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let raw = known_bytes.saturating_add(unknown_attachments.saturating_mul(MIB));
    raw.saturating_add(raw / 10).saturating_add(16 * MIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::tests::assert_private;

    #[test]
    fn same_email_same_second_never_collides() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fsutil::create_private_dir(root).unwrap();
        let base = base_name("a@x.com", "20250101_120000");
        let (p1, n1) = claim_partial(root, &base).unwrap();
        let (p2, n2) = claim_partial(root, &base).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(n1, "a@x.com_20250101_120000");
        assert_eq!(n2, "a@x.com_20250101_120000-2");
        assert_private(&p1);
        fs::write(p1.join("f"), b"1").unwrap();
        fs::write(p2.join("f"), b"2").unwrap();
        // The second finishes first and takes the plain name: the first must not replace it.
        let f2 = finalize(&p2, root, &n1).unwrap();
        let f1 = finalize(&p1, root, &n1).unwrap();
        assert_ne!(f1, f2);
        assert_eq!(fs::read(f2.join("f")).unwrap(), b"2");
        assert_eq!(fs::read(f1.join("f")).unwrap(), b"1");
    }

    #[test]
    fn cleanup_spares_folders_of_an_active_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("old_20240101_000000.partial/x")).unwrap();
        let (lock, removed) = lock_and_clean(root).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(!root.join("old_20240101_000000.partial").exists());
        assert!(writer_active(root));
        // A second run while the first still writes: the first's partial folder survives.
        let (mine, _) = claim_partial(root, "b@x.com_20250101_000000").unwrap();
        let (_lock2, removed2) = lock_and_clean(root).unwrap();
        assert!(removed2.is_empty());
        assert!(mine.exists());
        drop(lock);
        drop(_lock2);
        assert!(!writer_active(root));
    }

    #[test]
    fn required_space_has_a_margin() {
        assert!(required_space(0, 0) >= 16 * 1024 * 1024);
        assert!(required_space(100 * 1024 * 1024, 0) >= 110 * 1024 * 1024);
        assert!(required_space(0, 3) >= 3 * 1024 * 1024);
    }
}
