//! The Windows side: owner-only ACLs, reparse-point checks, file indexes, folder flushes and
//! the console's Ctrl-C.
//!
//! "Readable by its owner alone" is a protected DACL (nothing inherited from the parent) with
//! one entry: full access for the user running the tool, inherited by what is created inside a
//! folder. It is given at creation (`CreateDirectoryW` / `CreateFileW` with a security
//! descriptor), so there is no moment when the folder or file carries the parent's ACL. When
//! judging an existing folder, entries for SYSTEM and Administrators do not count as "others":
//! like root on Unix they can read anything anyway, and every folder a user creates in their
//! profile has them. An existing folder is tightened with `SetKernelObjectSecurity` on a
//! handle to the folder itself (Wine 8 accepts `SetSecurityInfo` there but leaves the ACL as it
//! was; both are the same call on Windows).
//!
//! Under Wine (how CI runs this side) ACLs are mapped onto Unix modes: an owner-only ACL reads
//! back as the user plus SYSTEM, and a link made by Unix is not a Windows link, so the link
//! tests skip there (`platform::tests::symlink_or_skip`).

use std::ffi::{OsStr, c_void};
use std::fs;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::Path;
use std::ptr::null_mut;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{
    ERROR_INVALID_FUNCTION, ERROR_NOT_SUPPORTED, GENERIC_READ, GENERIC_WRITE, HANDLE,
    INVALID_HANDLE_VALUE, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo,
    SDDL_REVISION_1, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, GetAce, GetTokenInformation, INHERIT_ONLY_ACE,
    PROTECTED_DACL_SECURITY_INFORMATION, PSID, SECURITY_ATTRIBUTES, SetKernelObjectSecurity,
    TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, CREATE_NEW, CreateDirectoryW, CreateFileW, FILE_APPEND_DATA,
    FILE_ATTRIBUTE_NORMAL, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_GENERIC_WRITE, FILE_READ_ATTRIBUTES, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
    FILE_WRITE_DATA, GetFileInformationByHandle, OPEN_ALWAYS, READ_CONTROL, WRITE_DAC,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::{Loosened, Open, link_refused};

/// SIDs that may appear on a private folder without making it "open to others": SYSTEM and
/// the local Administrators group (root's equivalents).
const TRUSTED_SIDS: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];

/// Memory Windows allocated with `LocalAlloc`, freed on drop.
struct Local(*mut c_void);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an API documented to allocate with LocalAlloc.
            unsafe { LocalFree(self.0) };
        }
    }
}

fn check(ok: i32) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_code(code: u32) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code as i32))
    }
}

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// `path` for the raw `...W` calls: absolute and with the `\\?\` prefix, so paths longer than
/// 260 characters work as they do through `std::fs` (which adds the prefix itself).
fn wide_path(path: &Path) -> io::Result<Vec<u16>> {
    let abs = std::path::absolute(path)?;
    let w: Vec<u16> = abs.as_os_str().encode_wide().collect();
    if w.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path holds a NUL character",
        ));
    }
    let bs = u16::from(b'\\');
    let mut out: Vec<u16> = Vec::with_capacity(w.len() + 9);
    let verbatim = w.len() >= 4
        && w[0] == bs
        && w[1] == bs
        && (w[2] == u16::from(b'?') || w[2] == u16::from(b'.'))
        && w[3] == bs;
    if verbatim {
        out.extend_from_slice(&w);
    } else if w.len() >= 2 && w[0] == bs && w[1] == bs {
        out.extend(r"\\?\UNC".encode_utf16());
        out.extend_from_slice(&w[1..]);
    } else {
        out.extend(r"\\?\".encode_utf16());
        out.extend_from_slice(&w);
    }
    out.push(0);
    Ok(out)
}

/// The SID of the user running this process, as text (`S-1-5-21-...`), looked up once.
fn my_sid() -> io::Result<&'static str> {
    static SID: OnceLock<Result<String, i32>> = OnceLock::new();
    match SID.get_or_init(|| current_user_sid().map_err(|e| e.raw_os_error().unwrap_or(0))) {
        Ok(s) => Ok(s),
        Err(code) => Err(io::Error::from_raw_os_error(*code)),
    }
}

fn current_user_sid() -> io::Result<String> {
    // SAFETY: plain Win32 calls on buffers sized as the API asks; the token handle is owned.
    unsafe {
        let mut token: HANDLE = null_mut();
        check(OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_QUERY,
            &mut token,
        ))?;
        let token = OwnedHandle::from_raw_handle(token);
        let mut len = 0u32;
        GetTokenInformation(token.as_raw_handle(), TokenUser, null_mut(), 0, &mut len);
        // u64s: TOKEN_USER holds pointers, so the buffer must be pointer-aligned.
        let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
        check(GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut len,
        ))?;
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        sid_text(user.User.Sid)
    }
}

/// # Safety
/// `sid` must point to a valid SID.
unsafe fn sid_text(sid: PSID) -> io::Result<String> {
    let mut text: *mut u16 = null_mut();
    // SAFETY: the caller guarantees `sid`; the returned string is freed by `Local`.
    unsafe {
        check(ConvertSidToStringSidW(sid, &mut text))?;
        let _free = Local(text.cast());
        let mut n = 0;
        while *text.add(n) != 0 {
            n += 1;
        }
        Ok(String::from_utf16_lossy(std::slice::from_raw_parts(
            text, n,
        )))
    }
}

/// A security descriptor whose DACL grants the current user alone full access, protected
/// from inheritance; for a folder the entry is inherited by everything created inside.
fn owner_only(folder: bool) -> io::Result<Local> {
    let inherit = if folder { "OICI" } else { "" };
    descriptor(&format!("D:P(A;{inherit};FA;;;{})", my_sid()?))
}

/// The security descriptor an SDDL string describes.
fn descriptor(sddl: &str) -> io::Result<Local> {
    let mut sd = null_mut();
    // SAFETY: a NUL-terminated string in, a LocalAlloc'd descriptor out (freed by `Local`).
    unsafe {
        check(ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide(OsStr::new(sddl)).as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            null_mut(),
        ))?;
    }
    Ok(Local(sd))
}

fn attributes(sd: &Local) -> SECURITY_ATTRIBUTES {
    SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    }
}

pub fn create_dir_private(dir: &Path) -> io::Result<()> {
    let sd = owner_only(true)?;
    let sa = attributes(&sd);
    let p = wide_path(dir)?;
    // SAFETY: a NUL-terminated path and a valid SECURITY_ATTRIBUTES that outlive the call.
    check(unsafe { CreateDirectoryW(p.as_ptr(), &sa) })
}

/// Opens or creates `path` with `access`; a file created here gets the owner-only DACL. The
/// name itself is opened, never a link's target; a link there is refused.
fn create_file(path: &Path, access: u32, disposition: u32) -> io::Result<fs::File> {
    let sd = owner_only(false)?;
    let sa = attributes(&sd);
    let p = wide_path(path)?;
    // SAFETY: valid NUL-terminated path and attributes; the handle is owned by the File.
    let file = unsafe {
        let h = CreateFileW(
            p.as_ptr(),
            access,
            // As std opens files: others may read, write and rename (atomic replaces).
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            &sa,
            disposition,
            FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT,
            null_mut(),
        );
        if h == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        fs::File::from_raw_handle(h)
    };
    refuse_if_link(path, file)
}

/// A handle opened with `FILE_FLAG_OPEN_REPARSE_POINT` is the link itself when there is one:
/// refuse it (std's `is_symlink` is true for symbolic links and junctions alike).
fn refuse_if_link(path: &Path, file: fs::File) -> io::Result<fs::File> {
    if file.metadata()?.file_type().is_symlink() {
        return Err(link_refused(path));
    }
    Ok(file)
}

pub fn create_new_private(path: &Path) -> io::Result<fs::File> {
    create_file(path, GENERIC_READ | GENERIC_WRITE, CREATE_NEW)
}

/// Append-only access, as std's `append(true)`: writes land at the end, whatever the offset.
const APPEND: u32 = FILE_GENERIC_WRITE & !FILE_WRITE_DATA | FILE_APPEND_DATA;

pub fn open_private(path: &Path, how: Open) -> io::Result<fs::File> {
    match how {
        Open::ReadWrite => create_file(path, GENERIC_READ | GENERIC_WRITE, OPEN_ALWAYS),
        Open::Append => create_file(path, APPEND, OPEN_ALWAYS),
        Open::Truncate => {
            let f = create_file(path, GENERIC_WRITE, OPEN_ALWAYS)?;
            f.set_len(0)?;
            Ok(f)
        }
    }
}

pub fn open_existing_nofollow(path: &Path, append: bool) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.read(true);
    }
    let file = o.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT).open(path)?;
    refuse_if_link(path, file)
}

/// Opens a file or folder itself (not a link's target) to read or change its ACL.
fn open_for_acl(path: &Path, change: bool) -> io::Result<fs::File> {
    let access = READ_CONTROL | if change { WRITE_DAC } else { 0 };
    fs::OpenOptions::new()
        .access_mode(access)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Whether the object's DACL lets anyone but its owner (and SYSTEM, Administrators) in.
fn others_allowed(file: &fs::File) -> io::Result<bool> {
    let me = my_sid()?;
    let mut dacl: *mut ACL = null_mut();
    let mut sd = null_mut();
    // SAFETY: the handle is open with READ_CONTROL; the descriptor is freed by `Local`, and
    // `dacl` points into it, so it is only read while `_sd` lives.
    unsafe {
        check_code(GetSecurityInfo(
            file.as_raw_handle(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            &mut dacl,
            null_mut(),
            &mut sd,
        ))?;
        let _sd = Local(sd);
        if dacl.is_null() {
            // A NULL DACL grants everyone everything.
            return Ok(true);
        }
        for i in 0..u32::from((*dacl).AceCount) {
            let mut ace: *mut c_void = null_mut();
            check(GetAce(dacl, i, &mut ace))?;
            let header = &*(ace as *const ACE_HEADER);
            // Denials take nothing away from privacy; inherit-only entries apply to children.
            if header.AceType == 1 || u32::from(header.AceFlags) & INHERIT_ONLY_ACE != 0 {
                continue;
            }
            // Every allow entry type starts with the header and a mask, then the SID for
            // the plain and callback types (0 and 9); object types (5, 11) are judged open.
            if !matches!(header.AceType, 0 | 9) {
                return Ok(true);
            }
            let sid = (ace as *const u8).add(size_of::<ACE_HEADER>() + 4) as PSID;
            let who = sid_text(sid)?;
            if who != me && !TRUSTED_SIDS.contains(&who.as_str()) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Gives the object the owner-only DACL.
fn set_owner_only(file: &fs::File, folder: bool) -> io::Result<()> {
    set_dacl(file, owner_only(folder)?)
}

/// Tests: lets Everyone read `path` (as a folder made by Explorer in a shared place would).
#[cfg(test)]
pub fn grant_everyone_read(path: &Path) -> io::Result<()> {
    let sd = descriptor(&format!("D:P(A;;FA;;;{})(A;;FR;;;WD)", my_sid()?))?;
    set_dacl(&open_for_acl(path, true)?, sd)
}

/// Sets the DACL of `sd` on the object, protected from inheritance.
fn set_dacl(file: &fs::File, sd: Local) -> io::Result<()> {
    // SAFETY: a valid handle opened with WRITE_DAC and a valid self-relative descriptor
    // (its DACL is marked protected by the `P` in the SDDL).
    check(unsafe {
        SetKernelObjectSecurity(
            file.as_raw_handle(),
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            sd.0,
        )
    })
}

pub fn restrict_dir_to_owner(dir: &Path) -> io::Result<Option<Loosened>> {
    let handle = open_for_acl(dir, true)?;
    if !others_allowed(&handle)? {
        return Ok(None);
    }
    set_owner_only(&handle, true)?;
    Ok(Some(Loosened(
        "its ACL let other users in; now only its owner's".into(),
    )))
}

pub fn open_to_others(path: &Path, _meta: &fs::Metadata) -> io::Result<Option<Loosened>> {
    let handle = open_for_acl(path, false)?;
    Ok(others_allowed(&handle)?.then(|| Loosened("its ACL lets other users in".into())))
}

/// Opening a folder as a file is "access denied" on Windows; `FILE_FLAG_BACKUP_SEMANTICS`
/// is what allows a handle to a folder, and `FlushFileBuffers` (`sync_all`) needs write
/// access. A file system that cannot flush a folder (FAT, some network shares) says
/// "invalid function" or "not supported": there is nothing more to do, NTFS itself journals
/// the rename.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let r = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(dir)
        .and_then(|d| d.sync_all());
    match r {
        Err(e)
            if matches!(
                e.raw_os_error().map(|c| c as u32),
                Some(ERROR_INVALID_FUNCTION | ERROR_NOT_SUPPORTED)
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn file_id(path: &Path) -> io::Result<(u32, u32, u32)> {
    let f = fs::OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    // SAFETY: a valid handle and an out-structure of the right type.
    unsafe {
        let mut info: BY_HANDLE_FILE_INFORMATION = std::mem::zeroed();
        check(GetFileInformationByHandle(f.as_raw_handle(), &mut info))?;
        Ok((
            info.dwVolumeSerialNumber,
            info.nFileIndexHigh,
            info.nFileIndexLow,
        ))
    }
}

pub fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    Ok(file_id(a)? == file_id(b)?)
}

/// The console's Ctrl-C, registered at creation.
#[derive(Debug)]
pub struct CtrlC(tokio::signal::windows::CtrlC);

impl CtrlC {
    pub fn listen() -> io::Result<Self> {
        tokio::signal::windows::ctrl_c().map(Self)
    }

    pub async fn pressed(&mut self) -> Option<()> {
        self.0.recv().await
    }
}
