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
    F: FnOnce(&mut BufWriter<SafeWriter<StdoutLock<'static>>>) -> io::Result<()>,
{
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut w = BufWriter::with_capacity(
        64 * 1024,
        SafeWriter {
            inner: io::stdout().lock(),
            pending_c2: false,
        },
    );
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

/// `1 ticket`, `2 tickets`: a count with its noun, for the lines people read.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    match n.into() {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// `s` with every control character (C0, DEL, C1: ESC, CSI, newlines, ...) shown as an escape
/// (`\u{1b}`), so a display name, email or ref from the data cannot move the cursor, rewrite
/// the screen or forge a line. Use it on every value that came from the CSV or from DevRev
/// before it goes into a table, a summary or an error.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(s, false)
}

/// `s` cut to at most `max` characters (with `…`) and made [`safe`]: for messages that
/// quote a bad value, which may be megabytes long.
pub fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    safe(&out).into_owned()
}

/// Escapes control characters; `keep_layout` leaves `\n` and `\t` alone (whole messages).
fn escape_controls(s: &str, keep_layout: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !(keep_layout && matches!(c, '\n' | '\t'));
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A writer that escapes control bytes (except `\n`, `\t`) on their way to the terminal: the
/// last line of defence for tables on stdout, whatever a formatter forgot.
pub struct SafeWriter<W: Write> {
    inner: W,
    /// A `0xC2` lead byte seen at the end of the previous write: the next byte decides
    /// whether it starts a C1 control (U+0080..U+009F).
    pending_c2: bool,
}

impl<W: Write> SafeWriter<W> {
    /// `b` as the escape the terminal shows (`\u{1b}`).
    fn escape(&mut self, b: u8) -> io::Result<()> {
        write!(self.inner, "\\u{{{b:x}}}")
    }
}

/// A byte that is not passed on as it is: a C0 control but `\n` and `\t`, DEL, or `0xC2`
/// (the lead byte of a C1 control, decided by the byte after it).
fn needs_care(b: u8) -> bool {
    (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f || b == 0xc2
}

/// Where the first byte [`needs_care`] is. Blocks of 64 bytes are checked whole first (a
/// check the compiler turns into a few vector instructions), then the block that has one
/// byte by byte: a 100 MB plan is scanned in tens of milliseconds, not hundreds.
fn first_needing_care(bytes: &[u8]) -> Option<usize> {
    let mut blocks = bytes.chunks_exact(64);
    let mut at = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | needs_care(b)) {
            return block.iter().position(|&b| needs_care(b)).map(|i| at + i);
        }
        at += 64;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| needs_care(b))
        .map(|i| at + i)
}

impl<W: Write> Write for SafeWriter<W> {
    /// Passes the runs of plain bytes on as they are (no copy: a 100 MB plan printed with
    /// `--json` is almost all plain) and escapes the rest.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if self.pending_c2 && !rest.is_empty() {
            self.pending_c2 = false;
            match rest[0] {
                b @ 0x80..=0x9f => {
                    self.escape(b)?;
                    rest = &rest[1..];
                }
                _ => self.inner.write_all(&[0xc2])?,
            }
        }
        while let Some(i) = first_needing_care(rest) {
            self.inner.write_all(&rest[..i])?;
            let b = rest[i];
            rest = &rest[i + 1..];
            if b != 0xc2 {
                self.escape(b)?;
                continue;
            }
            match rest.first() {
                None => self.pending_c2 = true,
                Some(&n @ 0x80..=0x9f) => {
                    self.escape(n)?;
                    rest = &rest[1..];
                }
                Some(_) => self.inner.write_all(&[0xc2])?,
            }
        }
        self.inner.write_all(rest)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.pending_c2) {
            self.inner.write_all(&[0xc2])?;
        }
        self.inner.flush()
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
///
/// Control characters other than newlines and tabs are escaped here, whatever the caller
/// passed: an error quoting a display name must not carry its escape sequences to the screen.
pub fn human(text: &str) {
    let text = escape_controls(text, true);
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

    /// Shows `summary`, then asks for a typed "yes" before a run that changes DevRev.
    /// `--yes` (`yes`) skips the question, and `-q` then the summary too. Without a terminal
    /// to ask on the run is refused (exit 2) with `no_terminal`; any other answer is exit 2,
    /// "nothing was changed".
    pub fn confirm(
        &self,
        yes: bool,
        summary: &str,
        no_terminal: &str,
        question: &str,
    ) -> Result<(), AppError> {
        use std::io::BufRead;
        if yes {
            self.note(summary);
            return Ok(());
        }
        human(summary);
        if !std::io::stdin().is_terminal() {
            return Err(AppError::Usage(no_terminal.into()));
        }
        human(question);
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| AppError::io("cannot read the confirmation", e))?;
        if answer.trim().eq_ignore_ascii_case("yes") {
            Ok(())
        } else {
            Err(AppError::Usage(
                "not confirmed; nothing was changed.".into(),
            ))
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

/// `s` as one word a POSIX shell (and PowerShell) reads back as `s`: as it is when it holds only
/// characters no shell treats specially, otherwise in single quotes. For commands the tool
/// prints for a person to copy (`--restore <folder>`): a backup folder is named after an email.
pub fn shell_quote(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '/' | ':' | '+' | '-' | '\\')
        });
    if plain {
        s.into()
    } else {
        format!("'{}'", s.replace('\'', "'\\''")).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(count(1u64, "ticket", "tickets"), "1 ticket");
        assert_eq!(count(0u64, "ticket", "tickets"), "0 tickets");
        assert_eq!(
            count(2u64, "timeline entry", "timeline entries"),
            "2 timeline entries"
        );
    }
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

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(safe("Jane Doe"), "Jane Doe");
        assert_eq!(safe("\u{1b}[2J\u{1b}[HX"), "\\u{1b}[2J\\u{1b}[HX");
        assert_eq!(safe("a\nb\u{9b}c\u{7f}"), "a\\u{a}b\\u{9b}c\\u{7f}");
        assert_eq!(escape_controls("a\nb\tc\u{7}", true), "a\nb\tc\\u{7}");
        assert_eq!(clip(&"x".repeat(1000), 5), "xxxxx…");
        let mut w = SafeWriter {
            inner: Vec::new(),
            pending_c2: false,
        };
        // A C1 CSI split across two writes, an ESC, and a harmless é (0xC3 0xA9) and ¢ (C2 A2).
        w.write_all(b"a\xc2").unwrap();
        w.write_all(b"\x9b2J\x1b[0m\xc3\xa9\xc2\xa2\n").unwrap();
        w.flush().unwrap();
        assert_eq!(
            String::from_utf8(w.inner).unwrap(),
            "a\\u{9b}2J\\u{1b}[0mé¢\n"
        );
    }

    /// The writer escapes exactly what a byte-by-byte reading escapes, however the bytes are
    /// split across writes (it passes plain runs on without looking at each byte twice).
    #[test]
    fn the_safe_writer_matches_a_byte_by_byte_reading_at_any_split() {
        fn one_by_one(bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut pending = false;
            for &b in bytes {
                if std::mem::take(&mut pending) {
                    if (0x80..=0x9f).contains(&b) {
                        out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes());
                        continue;
                    }
                    out.push(0xc2);
                }
                match b {
                    0xc2 => pending = true,
                    b'\n' | b'\t' => out.push(b),
                    0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes()),
                    _ => out.push(b),
                }
            }
            if pending {
                out.push(0xc2);
            }
            out
        }
        let alphabet = [
            b'a', b'\n', b'\t', 0x1b, 0x7f, 0xc2, 0x9b, 0xa2, 0x80, 0x9f, 0xa0, 0,
        ];
        let mut seed: u64 = 7;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..2000 {
            // Mostly plain, across several 64-byte blocks.
            let bytes: Vec<u8> = (0..next() % 300)
                .map(|_| match next() % 8 {
                    0 => alphabet[next() % alphabet.len()],
                    _ => b'a',
                })
                .collect();
            let mut w = SafeWriter {
                inner: Vec::new(),
                pending_c2: false,
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = 1 + next() % rest.len();
                w.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            w.flush().unwrap();
            assert_eq!(w.inner, one_by_one(&bytes), "{bytes:?}");
        }
    }
}
