//! Atomic, owner-only file writes and safe names built from customer data.
//!
//! Everything this tool writes (backups, reports, plans, the savepoint, logs) holds PII, so
//! folders and files are readable by their owner alone (0700 and 0600 on Unix, an ACL granting
//! the current user alone on Windows: see [`crate::platform`]), and a file is either the old
//! version or the complete new one: written to a temp file in the same folder, fsynced, then
//! renamed over the target. This module is portable; what differs per OS is in `platform`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::platform::{self, Loosened};

/// Creates `dir` (and parents), owner-only. Existing folders keep their access (see
/// [`tighten_private_dir`]). A link (symlink, or junction on Windows) at `dir` is refused:
/// customer data would land wherever the link points, a place someone else may have chosen.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    refuse_symlink(dir)?;
    platform::create_dir_all_private(dir)?;
    // A link created between the check and the creation is caught here.
    refuse_symlink(dir)
}

/// Creates `dir` like [`create_private_dir`] and, if it already existed with access for
/// others, takes that access away. Returns what it was when it changed, for a warning.
/// For the folders this tool owns (backups, reports, logs), not for the savepoint's folder,
/// which is often the user's working folder.
pub fn tighten_private_dir(dir: &Path) -> std::io::Result<Option<Loosened>> {
    create_private_dir(dir)?;
    platform::restrict_dir_to_owner(dir)
}

/// An error if `path` is a link (a missing path is fine).
pub fn refuse_symlink(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if platform::is_link(&m) => Err(platform::link_refused(path)),
        _ => Ok(()),
    }
}

/// Opens (creating if needed, owner-only) a file this tool owns, such as a lock or a log,
/// without following a link at its name: a link there is an error saying so.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<fs::File> {
    let how = if append {
        platform::Open::Append
    } else {
        platform::Open::ReadWrite
    };
    platform::open_private(path, how)
}

/// A new temp file in `dir`, owner-only from its creation, deleted on drop unless persisted.
pub fn private_tempfile_in(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(prefix)
        .make_in(dir, platform::create_new_private)
}

/// Writes `bytes` to `path` atomically, owner-only.
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
    let tmp = private_tempfile_in(dir, ".tmp-")?;
    // Writes larger than the buffer go straight to the file, without a copy.
    let mut out = std::io::BufWriter::with_capacity(64 << 10, tmp);
    write(&mut out)?;
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    // Replaces an existing file on Windows too (MoveFileExW with MOVEFILE_REPLACE_EXISTING).
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
    platform::sync_dir(dir)
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
    // Windows drops a trailing dot and reserves device names (`con`, `nul`, `com1`, ... with
    // any extension: `con.txt` opens the console). Sanitized the same on every platform, so a
    // backup taken on Linux can be copied to Windows and verified there.
    if s.ends_with('.') {
        s.pop();
        s.push('_');
    }
    if is_reserved_on_windows(&s) {
        s.insert(0, '_');
        s.truncate(max.max(1));
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// `CON`, `PRN`, `AUX`, `NUL`, `COM1`-`COM9`, `LPT1`-`LPT9` (and `COM0`/`LPT0`), in any case,
/// alone or before a dot.
fn is_reserved_on_windows(name: &str) -> bool {
    let stem = name
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit())
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
    use crate::platform::tests::{assert_private, make_loose, symlink_or_skip};

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
            "C:\\x",
            "a:b",
        ] {
            let s = safe_component(raw, 100);
            assert!(
                !s.contains('/') && !s.contains('\\') && !s.contains('\0') && !s.contains(':'),
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
    fn names_windows_reserves_are_changed_everywhere() {
        for (raw, want) in [
            ("con", "_con"),
            ("CON.txt", "_CON.txt"),
            ("nul.tar.gz", "_nul.tar.gz"),
            ("Com1", "_Com1"),
            ("lpt9.log", "_lpt9.log"),
            ("aux:x", "aux_x"),
            ("report.", "report_"),
            ("console.txt", "console.txt"),
            ("com10", "com10"),
        ] {
            assert_eq!(safe_component(raw, 100), want, "{raw:?}");
        }
        // Truncation that leaves a reserved name is caught too.
        assert_eq!(safe_component("conx", 3), "_co");
        // Each such name can really be written here (and would be on Windows).
        let dir = tempfile::tempdir().unwrap();
        for raw in ["con.txt", "NUL", "prn", "a:b", "x."] {
            let p = dir.path().join(safe_component(raw, 100));
            write_private_atomic(&p, raw.as_bytes()).unwrap();
            assert_eq!(fs::read(&p).unwrap(), raw.as_bytes());
        }
    }

    #[test]
    fn streamed_write_is_private_and_can_refuse_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        write_private_atomic_with(&p, false, |w| w.write_all(b"one")).unwrap();
        assert_private(&p);
        let e = write_private_atomic_with(&p, false, |w| w.write_all(b"two")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_private_atomic_with(&p, true, |w| w.write_all(b"three")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_private(&p);
        // A failing writer leaves nothing behind.
        let q = dir.path().join("q.json");
        assert!(
            write_private_atomic_with(&q, true, |_| Err(std::io::Error::other("boom"))).is_err()
        );
        assert!(!q.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replacing_a_file_that_was_appended_to_works() {
        // The savepoint's compaction: append, close the handle (Windows cannot replace a file
        // that is still open, so `Savepoint::compact` drops its handle first), then replace.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("savepoint.json");
        write_private_atomic(&p, b"old").unwrap();
        let mut log = crate::platform::open_existing_nofollow(&p, true).unwrap();
        log.write_all(b"+line").unwrap();
        log.sync_all().unwrap();
        drop(log);
        assert_eq!(fs::read(&p).unwrap(), b"old+line");
        write_private_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_private(&p);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn long_paths_are_written_like_short_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = dir.path().to_path_buf();
        for i in 0..6 {
            p.push(format!("{i}{}", "d".repeat(60)));
        }
        let f = p.join(format!("{}.json", "f".repeat(100)));
        assert!(f.as_os_str().len() > 400);
        write_private_atomic(&f, b"far").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"far");
        assert_private(&f);
        assert_private(&p);
        let mut lock = open_private(&p.join("x.lock"), false).unwrap();
        lock.write_all(b"1").unwrap();
        sync_dir(&p).unwrap();
    }

    #[test]
    fn symlinks_are_refused_and_loose_folders_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        let loose = dir.path().join("reports");
        fs::create_dir(&loose).unwrap();
        make_loose(&loose);
        assert!(tighten_private_dir(&loose).unwrap().is_some());
        assert_private(&loose);
        assert_eq!(tighten_private_dir(&loose).unwrap(), None);

        let link = dir.path().join("backups");
        if !symlink_or_skip(&target, &link, true) {
            return;
        }
        let e = create_private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        // A link at a file name: refused, and the target is not created or touched.
        let file_link = dir.path().join("x.lock");
        assert!(symlink_or_skip(&target.join("victim"), &file_link, false));
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
    }

    #[test]
    fn atomic_write_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_private(&p);
        assert_private(p.parent().unwrap());
        write_private_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_private(&p);
        // No temp files left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
