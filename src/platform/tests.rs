//! The layer's own tests, and helpers other modules' tests use to check privacy the same way
//! on every platform. They run on Linux in `cargo test` and, built for Windows, under Wine
//! (`.ci/windows-tests`).

use std::fs;
use std::path::Path;

use super::*;

/// Asserts that only the owner can reach `path`: 0600/0700 on Unix, an ACL granting nobody
/// else on Windows.
#[track_caller]
pub fn assert_private(path: &Path) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert_eq!(
        open_to_others(path, &meta).unwrap(),
        None,
        "{} is open to others",
        path.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            meta.permissions().mode() & 0o777,
            want,
            "{}",
            path.display()
        );
    }
}

/// Opens `path` to others (mode 0755, or an ACL granting Everyone read on Windows).
pub fn make_loose(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    #[cfg(windows)]
    os::grant_everyone_read(path).unwrap();
    let meta = fs::symlink_metadata(path).unwrap();
    assert!(open_to_others(path, &meta).unwrap().is_some());
}

/// Makes a link at `link` to `target`; `false` (with a note) where this system cannot (a
/// Windows account without the symlink privilege, Wine).
pub fn symlink_or_skip(target: &Path, link: &Path, dir: bool) -> bool {
    #[cfg(unix)]
    let r = {
        let _ = dir;
        std::os::unix::fs::symlink(target, link)
    };
    #[cfg(windows)]
    let r = if dir {
        std::os::windows::fs::symlink_dir(target, link)
    } else {
        std::os::windows::fs::symlink_file(target, link)
    };
    match r {
        // Wine makes a Unix symlink that Windows calls do not see as a link: nothing to test.
        Ok(()) if !fs::symlink_metadata(link).is_ok_and(|m| is_link(&m)) => {
            let _ = fs::remove_file(link).or_else(|_| fs::remove_dir(link));
            eprintln!("skipped: this system's links are not seen as links (Wine)");
            false
        }
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: cannot create a symbolic link here ({e})");
            false
        }
    }
}

#[test]
fn new_private_files_and_folders_are_private_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a/b/c");
    create_dir_all_private(&d).unwrap();
    assert_private(&d);
    assert_private(&dir.path().join("a"));
    create_dir_all_private(&d).unwrap();
    let e = create_dir_private(&d).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);

    let f = d.join("x.json");
    drop(create_new_private(&f).unwrap());
    assert_private(&f);
    let e = create_new_private(&f).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
}

#[test]
fn private_opens_append_truncate_and_keep() {
    use std::io::{Read, Seek, Write};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.log");
    let mut f = open_private(&p, Open::Append).unwrap();
    f.write_all(b"one\n").unwrap();
    drop(f);
    assert_private(&p);
    let mut f = open_private(&p, Open::Append).unwrap();
    f.write_all(b"two\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"one\ntwo\n");
    let mut f = open_private(&p, Open::ReadWrite).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "one\ntwo\n");
    f.rewind().unwrap();
    f.write_all(b"ONE").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"ONE\ntwo\n");
    let mut f = open_private(&p, Open::Truncate).unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"x");
    let mut f = open_existing_nofollow(&p, true).unwrap();
    f.write_all(b"y").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"xy");
    let e = open_existing_nofollow(&dir.path().join("none"), false).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn links_are_refused_by_every_open() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.json");
    fs::write(&target, b"theirs").unwrap();
    let link = dir.path().join("link.json");
    if !symlink_or_skip(&target, &link, false) {
        return;
    }
    assert!(is_link(&fs::symlink_metadata(&link).unwrap()));
    for how in [Open::ReadWrite, Open::Append, Open::Truncate] {
        let e = open_private(&link, how).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{how:?}: {e}");
    }
    for append in [false, true] {
        let e = open_existing_nofollow(&link, append).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
    }
    let e = create_new_private(&link).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&target).unwrap(), b"theirs");
}

#[test]
fn same_file_sees_through_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    fs::write(&a, b"x").unwrap();
    let b = dir.path().join("b.csv");
    fs::write(&b, b"x").unwrap();
    assert!(same_file(&a, &a));
    assert!(same_file(&a, &dir.path().join(".").join("a.csv")));
    assert!(!same_file(&a, &b));
    assert!(!same_file(&a, &dir.path().join("missing.csv")));
    let link = dir.path().join("l.csv");
    if symlink_or_skip(&a, &link, false) {
        assert!(same_file(&a, &link));
    }
}

#[test]
fn a_folder_renamed_onto_a_taken_name_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("x.partial");
    let to = dir.path().join("x");
    create_dir_private(&from).unwrap();
    create_dir_private(&to).unwrap();
    fs::write(to.join("f"), b"kept").unwrap();
    let e = fs::rename(&from, &to).unwrap_err();
    assert!(rename_target_taken(&e, &to), "{e:?} ({:?})", e.kind());
    assert_eq!(fs::read(to.join("f")).unwrap(), b"kept");
    let other = io::Error::from(io::ErrorKind::NotFound);
    assert!(!rename_target_taken(&other, &to));
}

#[test]
fn folders_sync_and_paths_show_in_the_users_form() {
    let dir = tempfile::tempdir().unwrap();
    sync_dir(dir.path()).unwrap();
    let c = canonicalize(dir.path()).unwrap();
    assert!(!c.to_string_lossy().starts_with(r"\\?\"), "{}", c.display());
    assert_eq!(
        user_path(Path::new(r"\\?\C:\x\y")),
        Path::new(if cfg!(windows) {
            r"C:\x\y"
        } else {
            r"\\?\C:\x\y"
        })
    );
}
