//! Atomic, owner-only file writes and safe names built from customer data.
//!
//! Everything this tool writes (backups, reports, plans, the savepoint, logs) holds PII, so
//! folders are 0700 and files 0600, and a file is either the old version or the complete new
//! one: written to a temp file in the same folder, fsynced, then renamed over the target.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Creates `dir` (and parents) with mode 0700. Existing folders keep their mode (see
/// [`tighten_private_dir`]). A symbolic link at `dir` is refused: customer data would land
/// wherever the link points, a place someone else may have chosen.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    refuse_symlink(dir)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A link created between the check and the creation is caught here.
    refuse_symlink(dir)
}

/// Creates `dir` like [`create_private_dir`] and, if it already existed with access for group
/// or others, takes that access away. Returns the old mode when it changed, for a warning.
/// For the folders this tool owns (backups, reports, logs), not for the savepoint's folder,
/// which is often the user's working folder.
pub fn tighten_private_dir(dir: &Path) -> std::io::Result<Option<u32>> {
    create_private_dir(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(Some(mode))
}

/// An error if `path` is a symbolic link (a missing path is fine).
pub fn refuse_symlink(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_error(path)),
        _ => Ok(()),
    }
}

fn symlink_error(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; refusing to write customer data through it \
             (remove the link or choose another path)",
            path.display()
        ),
    )
}

/// Opens (creating if needed, mode 0600) a file this tool owns, such as a lock or a log,
/// without following a symbolic link at its name: a link there is an error saying so.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = fs::OpenOptions::new();
    opts.read(!append)
        .write(true)
        .append(append)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW);
    opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            symlink_error(path)
        } else {
            e
        }
    })
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private_atomic_with(path, true, |w| w.write_all(bytes))
}

/// Like [`write_private_atomic`], but the content is streamed by `write` into a buffered
/// writer instead of being built in memory first (large plans). With `overwrite == false` an
/// existing `path` is an `AlreadyExists` error and is left untouched.
pub fn write_private_atomic_with<F>(path: &Path, overwrite: bool, write: F) -> std::io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_private_dir(dir)?;
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    // Writes larger than the buffer go straight to the file, without a copy.
    let mut out = std::io::BufWriter::with_capacity(64 << 10, tmp);
    write(&mut out)?;
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    if overwrite {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    sync_dir(dir).map_err(|e| renamed_but_not_durable(path, dir, e))
}

/// Makes a rename in `dir` durable: until the folder itself is synced, a power cut can bring
/// back the old name (or no file at all). A failure here is an error, never ignored: the
/// caller would otherwise go on (send the next write to DevRev) believing a journal line or
/// a backup is on disk when it may not survive.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The error for a rename that happened but whose folder could not be synced.
pub fn renamed_but_not_durable(path: &Path, dir: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "{} was written, but its folder {} could not be synced to disk ({e}); it may not \
             survive a power cut. Check the disk, then run again",
            path.display(),
            dir.display()
        ),
    )
}

/// Lower-case hex of a finished sha256: the one form manifests record and verification
/// compares.
pub fn sha256_hex(hasher: Sha256) -> String {
    base16ct::lower::encode_string(&hasher.finalize())
}

/// Serializes `value` as pretty JSON and writes it atomically like [`write_private_atomic`].
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> std::io::Result<()> {
    // Streamed: a report of 100,000 pairs never sits in memory as text.
    write_private_atomic_with(path, true, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        w.write_all(b"\n")
    })
}

/// Turns data (an email, an attachment name) into one safe path component: no separators,
/// no `..`, no control or NUL characters, not empty, at most `max` bytes. Characters other
/// than `[A-Za-z0-9@._+-]` become `_`.
pub fn safe_component(raw: &str, max: usize) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // No leading dots: ".." and hidden files are both out.
    while s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    if s.len() > max {
        s.truncate(max);
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// Timestamp used in file names: `YYYYMMDD_HHMMSS` in local time.
pub fn stamp() -> String {
    chrono::Local::now().format("%Y%m%d_%H%M%S").to_string()
}

/// A path for a timestamped output file that does not exist yet
/// (`<dir>/<prefix>-<stamp>.json`, with `-2`, `-3`, ... on a clash within one second).
pub fn unique_path(dir: &Path, prefix: &str, ext: &str) -> PathBuf {
    let st = stamp();
    let mut p = dir.join(format!("{prefix}-{st}.{ext}"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{prefix}-{st}-{n}.{ext}"));
        n += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_cannot_be_synced_is_an_error_naming_file_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let e = sync_dir(&gone).unwrap_err();
        let e = renamed_but_not_durable(&gone.join("savepoint.json"), &gone, e);
        let msg = e.to_string();
        assert!(
            msg.contains("savepoint.json") && msg.contains("could not be synced"),
            "{msg}"
        );
        sync_dir(dir.path()).expect("an existing folder syncs");
    }

    #[test]
    fn safe_component_cannot_escape() {
        for raw in [
            "../../etc/passwd",
            "a/b",
            "..",
            ".",
            "",
            "x\0y",
            "a\nb",
            "/abs",
            "\\win",
        ] {
            let s = safe_component(raw, 100);
            assert!(
                !s.contains('/') && !s.contains('\\') && !s.contains('\0'),
                "{raw:?} -> {s:?}"
            );
            assert!(!s.starts_with('.'), "{raw:?} -> {s:?}");
            assert!(!s.is_empty());
            assert!(s.chars().all(|c| !c.is_control()));
        }
        assert_eq!(
            safe_component("Jane.Doe+x@example.com", 100),
            "Jane.Doe+x@example.com"
        );
        assert_eq!(safe_component("abcdef", 3), "abc");
    }

    #[test]
    fn streamed_write_is_private_and_can_refuse_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        write_private_atomic_with(&p, false, |w| w.write_all(b"one")).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write_private_atomic_with(&p, false, |w| w.write_all(b"two")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_private_atomic_with(&p, true, |w| w.write_all(b"three")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        // A failing writer leaves nothing behind.
        let q = dir.path().join("q.json");
        assert!(
            write_private_atomic_with(&q, true, |_| Err(std::io::Error::other("boom"))).is_err()
        );
        assert!(!q.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_are_refused_and_loose_folders_tightened() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        let link = dir.path().join("backups");
        symlink(&target, &link).unwrap();
        let e = create_private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        // A link at a file name: refused, and the target is not created or touched.
        let file_link = dir.path().join("x.lock");
        symlink(target.join("victim"), &file_link).unwrap();
        let e = open_private(&file_link, false).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(!target.join("victim").exists());
        // An atomic write over a link replaces the link itself, never writes its target.
        write_private_atomic(&file_link, b"data").unwrap();
        assert!(
            !fs::symlink_metadata(&file_link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!target.join("victim").exists());
        let loose = dir.path().join("reports");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(tighten_private_dir(&loose).unwrap(), Some(0o755));
        assert_eq!(
            fs::metadata(&loose).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(tighten_private_dir(&loose).unwrap(), None);
    }

    #[test]
    fn atomic_write_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        write_private_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        // No temp files left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
