//! The one printer (DESIGN §11): data alone on stdout, human text on stderr.
//!
//! `println!`/`eprint!` panic (exit 101) when the reader has gone away, as in
//! `devrev-merge --verify-backups backups --json | head -c 10`. Here a closed pipe means
//! "nobody is reading any more": the text is dropped quietly and the command goes on to exit
//! with its own code. SIGPIPE stays ignored (Rust's default) on purpose: dying on it could stop
//! a merge in the middle of a step, between a DevRev call and its savepoint line.

use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::AppError;

/// Set once a write to stdout met a closed pipe; later data is not even formatted.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes data to stdout through `print`, buffered and flushed at the end.
///
/// A reader that went away (`BrokenPipe`) is not an error; any other write failure is
/// (exit 73), because the user asked for data they did not get.
pub fn data<F>(print: F) -> Result<(), AppError>
where
    F: FnOnce(&mut BufWriter<StdoutLock<'static>>) -> io::Result<()>,
{
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut w = BufWriter::new(io::stdout().lock());
    let written = print(&mut w).and_then(|()| w.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_GONE.store(true, Ordering::Relaxed);
            // Whatever is still buffered has nowhere to go; `into_parts` drops it without the
            // second failing flush that dropping the writer would attempt.
            let _ = w.into_parts();
            Ok(())
        }
        Err(e) => Err(AppError::io("cannot write to stdout", e)),
    }
}

/// `value` as pretty JSON and a newline on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), AppError> {
    data(|w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(io::Error::other)?;
        writeln!(w)
    })
}

/// Whether stdout is a terminal (tables are shortened there).
pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// Human text on stderr, written as is (include the newline). Write failures are ignored:
/// there is nowhere left to report them, and they must not change the exit code.
pub fn human(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// How loud the program is, carried as a value (DESIGN §11): commands print status lines
/// through [`Printer::note`], which `-q` silences, instead of testing `quiet` themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Printer {
    quiet: bool,
}

impl Printer {
    pub fn new(quiet: bool) -> Self {
        Printer { quiet }
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// A status line on stderr ("Plan written to …"); dropped with `-q`.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            human(text);
        }
    }

    /// An error or warning on stderr: shown even with `-q`.
    pub fn error(&self, text: &str) {
        human(text);
    }
}

/// Whether human text on stderr may carry colour codes: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
pub fn color_on_stderr() -> bool {
    color_wanted(
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The decision behind [`color_on_stderr`], apart from the process state so it can be tested.
pub fn color_wanted(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn no_color_set_and_non_empty_turns_colour_off() {
        assert!(color_wanted(true, None));
        assert!(
            color_wanted(true, Some(OsStr::new(""))),
            "empty NO_COLOR is ignored"
        );
        assert!(!color_wanted(true, Some(OsStr::new("1"))));
        assert!(
            !color_wanted(true, Some(OsStr::new("0"))),
            "any non-empty value counts"
        );
        assert!(!color_wanted(false, None), "never on a pipe or a file");
    }
}
