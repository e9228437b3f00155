//! Everything that differs between Unix (Linux, macOS) and Windows, behind one portable API.
//!
//! The tool's promises are the same on every platform: customer data is readable by its owner
//! alone, nothing is written through a link someone else planted, a rename that replaces a file
//! is durable once its folder is synced, and Ctrl-C stops a run between steps. How each promise
//! is kept differs, so this module is the only place that names an OS (`cfg(unix)`,
//! `cfg(windows)`, `std::os::*`, `libc`, `windows-sys`); the rest of the crate calls these
//! functions and compares [`std::io::ErrorKind`]s, never raw errno or Win32 codes.
//!
//! | promise | Unix | Windows |
//! |---|---|---|
//! | owner-only folder / file | mode 0700 / 0600 at creation | a protected DACL granting the current user alone, set at creation (`CreateDirectoryW` / `CreateFileW` with a security descriptor) |
//! | no-follow open | `O_NOFOLLOW` | `FILE_FLAG_OPEN_REPARSE_POINT`, then a name-surrogate reparse point (symlink, junction) is refused |
//! | same file | device and inode | volume serial and file index |
//! | folder sync | `fsync` on the folder | `FlushFileBuffers` on the folder opened with `FILE_FLAG_BACKUP_SEMANTICS` |
//! | atomic replace | `rename(2)` | `MoveFileExW(MOVEFILE_REPLACE_EXISTING)` (through `tempfile`) |
//! | Ctrl-C | `SIGINT` | the console's Ctrl-C event |
//!
//! Links: [`std::fs::FileType::is_symlink`] is true for Unix symlinks and for Windows symbolic
//! links and junctions (name-surrogate reparse points), so [`is_link`] refuses all of them,
//! while a OneDrive placeholder (a reparse point that is not a name surrogate) is an ordinary
//! file.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

/// What an owner-only folder or file had before it was made owner-only, for a warning
/// (`mode 755` on Unix, `an ACL that let others in` on Windows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loosened(pub(crate) String);

impl fmt::Display for Loosened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Creates one folder, readable by its owner alone from the moment it exists (no window in
/// which another user could open it). An existing folder (or link) is `AlreadyExists`.
pub fn create_dir_private(dir: &Path) -> io::Result<()> {
    os::create_dir_private(dir)
}

/// Creates `dir` and any missing parents, each owner-only like [`create_dir_private`].
/// Folders that already exist are left as they are.
pub fn create_dir_all_private(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_private(parent)?;
    }
    match create_dir_private(dir) {
        // Another process (or a parallel backup) made it first: fine if it is a folder.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        r => r,
    }
}

/// Creates a new file (read and write), owner-only from the start, failing with
/// `AlreadyExists` if anything (a file, a link, even a dangling one) has the name. Used for
/// temp files that are renamed over their target.
pub fn create_new_private(path: &Path) -> io::Result<fs::File> {
    os::create_new_private(path)
}

/// How [`open_private`] opens a file this tool owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Read and write, content kept (locks).
    ReadWrite,
    /// Append only (logs).
    Append,
    /// Write, content dropped (a download restarted into the same temp file).
    Truncate,
}

/// Opens (creating if needed, owner-only) a file this tool owns, such as a lock or a log,
/// without following a link at its name: a link there is [`link_refused`]'s error.
pub fn open_private(path: &Path, how: Open) -> io::Result<fs::File> {
    os::open_private(path, how)
}

/// Opens an existing file for reading or appending, never through a link at its name (the
/// savepoint: the journal must be this file, not one a link points at).
pub fn open_existing_nofollow(path: &Path, append: bool) -> io::Result<fs::File> {
    os::open_existing_nofollow(path, append)
}

/// The error for a link where this tool writes: customer data would land wherever the link
/// points, a place someone else may have chosen.
pub fn link_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link{}; refusing to write customer data through it \
             (remove the link or choose another path)",
            user_path(path).display(),
            if cfg!(windows) { " or junction" } else { "" }
        ),
    )
}

/// Whether `meta` (from [`fs::symlink_metadata`]) is a link: a Unix symlink, a Windows
/// symbolic link or junction.
pub fn is_link(meta: &fs::Metadata) -> bool {
    meta.file_type().is_symlink()
}

/// Makes an existing folder owner-only if others can reach it, and says what it was.
/// `Ok(None)` when it already was.
pub fn restrict_dir_to_owner(dir: &Path) -> io::Result<Option<Loosened>> {
    os::restrict_dir_to_owner(dir)
}

/// What gives others access to a file, or `None` when only its owner can read it (the backup
/// verifier's warning).
pub fn open_to_others(path: &Path, meta: &fs::Metadata) -> io::Result<Option<Loosened>> {
    os::open_to_others(path, meta)
}

/// Makes a rename (or a new file) in `dir` durable. Until the folder itself is synced, a power
/// cut can bring back the old name (or no file at all).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    os::sync_dir(dir)
}

/// Whether `a` and `b` name the same file (a link, `./x` and `x`, a different case on a
/// case-insensitive disk). `false` if either cannot be read.
pub fn same_file(a: &Path, b: &Path) -> bool {
    os::same_file(a, b).unwrap_or(false)
}

/// Whether a failed rename of a folder onto `target` failed because something else took the
/// name in the meantime (then the caller tries the next free name). Unix says `ENOTEMPTY` or
/// `EEXIST`; Windows says "already exists" or, for a folder over a folder, "access denied".
pub fn rename_target_taken(e: &io::Error, target: &Path) -> bool {
    match e.kind() {
        io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => true,
        io::ErrorKind::PermissionDenied => cfg!(windows) && target.exists(),
        _ => false,
    }
}

/// `path` in the form its user typed or would type: on Windows without the `\\?\` prefix that
/// canonical paths carry (when the path can be written without it), unchanged elsewhere.
pub fn user_path(path: &Path) -> &Path {
    dunce::simplified(path)
}

/// [`fs::canonicalize`], shown in the user's form (see [`user_path`]).
pub fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    dunce::canonicalize(path)
}

/// Ctrl-C presses for the rest of the run, registered when created (so a press right after
/// never meets the default handler, which would kill the process mid-step).
#[derive(Debug)]
pub struct CtrlC(os::CtrlC);

impl CtrlC {
    /// Starts listening. Must be called inside a tokio runtime.
    pub fn listen() -> io::Result<Self> {
        os::CtrlC::listen().map(Self)
    }

    /// The next press; `None` if no more can come.
    pub async fn pressed(&mut self) -> Option<()> {
        self.0.pressed().await
    }
}

#[cfg(test)]
pub(crate) mod tests;
