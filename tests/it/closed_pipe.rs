//! Running the binary with stdout (and optionally stderr) on a pipe nobody reads, as in
//! `devrev-merge ... --json | head -c 10` once `head` has exited.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// How a run with a closed stdout ended.
pub struct Closed {
    /// The exit code; `None` if a signal killed the process.
    pub code: Option<i32>,
    /// stderr, when it was left readable.
    pub stderr: String,
}

/// Runs `c` with stdout on a pipe whose read end is closed before the child starts, so the
/// very first write meets a closed pipe (no race with a reader that has not gone yet). With
/// `stderr_too`, stderr goes to the same dead pipe (`2>&1 | head`).
pub fn run(mut c: Command, stderr_too: bool) -> Closed {
    let (reader, writer) = pipe();
    drop(reader);
    c.stdin(Stdio::null()).stdout(writer.try_clone().unwrap());
    if stderr_too {
        c.stderr(writer);
    } else {
        drop(writer);
        c.stderr(Stdio::piped());
    }
    let mut child = c.spawn().unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    let status = child.wait().unwrap();
    Closed {
        code: status.code(),
        stderr,
    }
}

/// A plain OS pipe (`std::io::pipe` is newer than the crate's MSRV).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe` writes; on success both are open
    // and owned by nobody else, so each goes into exactly one `OwnedFd`.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}
