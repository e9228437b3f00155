//! The Unix side (Linux and macOS): modes, `O_NOFOLLOW`, inodes, `fsync` on folders, SIGINT.
//! Only POSIX calls here; anything Linux-only would go under `cfg(target_os = "linux")`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{Loosened, Open, link_refused};

pub fn create_dir_private(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(dir)
}

/// `O_NOFOLLOW` makes a link at the final name fail with `ELOOP`; that becomes the error
/// that says so.
fn nofollow(path: &Path, r: io::Result<fs::File>) -> io::Result<fs::File> {
    r.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            link_refused(path)
        } else {
            e
        }
    })
}

pub fn create_new_private(path: &Path) -> io::Result<fs::File> {
    // O_EXCL never follows a link at the name: it is simply `EEXIST`.
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

pub fn open_private(path: &Path, how: Open) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    match how {
        Open::ReadWrite => o.read(true).write(true).truncate(false),
        Open::Append => o.append(true),
        Open::Truncate => o.write(true).truncate(true),
    };
    o.create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    nofollow(path, o.open(path))
}

pub fn open_existing_nofollow(path: &Path, append: bool) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.read(true);
    }
    o.custom_flags(libc::O_NOFOLLOW);
    nofollow(path, o.open(path))
}

fn loose_mode(meta: &fs::Metadata) -> Option<u32> {
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

pub fn restrict_dir_to_owner(dir: &Path) -> io::Result<Option<Loosened>> {
    let Some(mode) = loose_mode(&fs::metadata(dir)?) else {
        return Ok(None);
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(Some(Loosened(format!("mode {mode:o}; set to 0700"))))
}

pub fn open_to_others(_path: &Path, meta: &fs::Metadata) -> io::Result<Option<Loosened>> {
    Ok(loose_mode(meta).map(|mode| Loosened(format!("mode {mode:o}"))))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

pub fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    let (x, y) = (fs::metadata(a)?, fs::metadata(b)?);
    Ok(x.dev() == y.dev() && x.ino() == y.ino())
}

/// SIGINT, registered at creation.
#[derive(Debug)]
pub struct CtrlC(tokio::signal::unix::Signal);

impl CtrlC {
    pub fn listen() -> io::Result<Self> {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map(Self)
    }

    pub async fn pressed(&mut self) -> Option<()> {
        self.0.recv().await
    }
}
