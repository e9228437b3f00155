//! Cells as a spreadsheet reads and writes them back. Every CSV this tool writes is opened in
//! Excel or LibreOffice by someone, and some come back (the review file as `--decisions`, the
//! test sample and the export as `--csv`). Two things happen on the way, and both are undone
//! here, in one place:
//!
//! - **Formulas.** A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is
//!   run as a formula by a spreadsheet: a display name from DevRev is anyone's text. Every such
//!   cell is written with a leading `'` ([`defuse`]) and read back without it ([`undefuse`]).
//! - **Reformatting.** A spreadsheet saves dates the way the user's locale shows them
//!   (`2024-04-28 15:41:20.945` comes back as `4/28/2024 15:41` in the US, `28.04.2024 15:41`
//!   in Germany) and numbers as it likes (`1.0`). [`same_time`] and [`same_value`] say whether
//!   two cells hold the same value, so a row is "changed" only when its contact changed.

use std::borrow::Cow;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};

/// The text of a file a spreadsheet saved: UTF-8 (with or without a byte-order mark), UTF-16
/// with its mark (Excel's "Unicode Text"), or, failing both, Windows-1252 (Excel's plain "CSV"
/// on Windows). The last is read byte by byte as Latin-1: the columns a decision is matched
/// by (ids, words, refs, times) are ASCII, and an accented email read wrongly only makes its
/// row stale, never matches another contact. `None` for a file with NUL bytes in it that is
/// not UTF-16 (not text at all).
pub fn decode(bytes: &[u8]) -> Option<String> {
    let utf16 = |b: &[u8], from: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = b.chunks_exact(2).map(|c| from([c[0], c[1]])).collect();
        String::from_utf16(&units).ok()
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    if bytes.contains(&0) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s.to_string()),
        Err(_) => Some(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// True when a spreadsheet would take a cell starting with `c` for a formula.
fn formula_start(c: char) -> bool {
    matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r')
}

/// `cell` with a leading `'` when a spreadsheet would run it as a formula.
pub fn defuse(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some(c) if formula_start(c) => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Takes off the `'` [`defuse`] put before a formula-like cell (and nothing else).
pub fn undefuse(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.chars().next().is_some_and(formula_start) => rest,
        _ => cell,
    }
}

/// The same value, as text or as a number a spreadsheet reformatted (`1` and `1.0`, `007`
/// and `7` are not: a leading zero makes an id, not a number).
pub fn same_value(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    let number = |s: &str| {
        let plain = s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        let leading_zero = s.starts_with('0') && s.len() > 1 && !s.starts_with("0.");
        (plain && !leading_zero)
            .then(|| s.parse::<f64>().ok())
            .flatten()
    };
    matches!((number(a), number(b)), (Some(x), Some(y)) if x == y)
}

/// How much of a time a cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Day,
    Minute,
    Second,
    /// Digits of the fraction of a second (1 to 9).
    Fraction(u32),
}

impl Precision {
    fn unit(self) -> TimeDelta {
        match self {
            Precision::Day => TimeDelta::days(1),
            Precision::Minute => TimeDelta::minutes(1),
            Precision::Second => TimeDelta::seconds(1),
            Precision::Fraction(d) => TimeDelta::nanoseconds(10i64.pow(9 - d.min(9))),
        }
    }

    /// `t` cut down to what a cell of this precision shows.
    fn truncate(self, t: NaiveDateTime) -> NaiveDateTime {
        let unit = self.unit().num_nanoseconds().unwrap_or(i64::MAX);
        let since = t.and_utc().timestamp_nanos_opt().unwrap_or(0);
        let cut = since - since.rem_euclid(unit);
        chrono::DateTime::from_timestamp_nanos(cut).naive_utc()
    }
}

/// Every reading of a date-time cell (a `4/5/2024` is April 5 in the US and May 4 elsewhere),
/// each with the precision it shows. Empty when it is not a date-time.
fn readings(cell: &str) -> Vec<(NaiveDateTime, Precision)> {
    let s = cell.trim();
    let s = s
        .strip_suffix("UTC")
        .or_else(|| s.strip_suffix('Z'))
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s)
        .trim();
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let Some((time, precision)) = time_of(time) else {
        return Vec::new();
    };
    dates_of(date)
        .into_iter()
        .map(|d| (d.and_time(time), precision))
        .collect()
}

fn dates_of(date: &str) -> Vec<NaiveDate> {
    let sep = match date.chars().find(|c| !c.is_ascii_alphanumeric()) {
        Some(c @ ('-' | '/' | '.')) => c,
        _ => return Vec::new(),
    };
    let parts: Vec<&str> = date.split(sep).collect();
    let [a, b, c] = parts.as_slice() else {
        return Vec::new();
    };
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 4 && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    // `28-Apr-2024`: a month by its English name is unambiguous.
    let month = |s: &str| {
        const NAMES: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let s = s.to_ascii_lowercase();
        NAMES
            .iter()
            .position(|m| s.len() >= 3 && s.starts_with(m))
            .map(|i| i as u32 + 1)
    };
    if let (Some(d), Some(m), Some(y)) = (num(a), month(b), num(c)) {
        let year = match c.len() {
            4 => y as i32,
            2 => 2000 + y as i32,
            _ => return Vec::new(),
        };
        return NaiveDate::from_ymd_opt(year, m, d).into_iter().collect();
    }
    let (Some(x), Some(y), Some(z)) = (num(a), num(b), num(c)) else {
        return Vec::new();
    };
    let year = |v: u32, s: &str| match s.len() {
        4 => Some(v as i32),
        2 => Some(2000 + v as i32),
        _ => None,
    };
    let mut out = Vec::new();
    let mut push = |y: Option<i32>, m: u32, d: u32| {
        if let Some(d) = y.and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
            && !out.contains(&d)
        {
            out.push(d);
        }
    };
    if a.len() == 4 {
        push(year(x, a), y, z);
    } else {
        // Month first (US) or day first (most of the world): a cell is the same date if
        // either reading is; the check it serves only asks "did this contact change?".
        if sep != '.' {
            push(year(z, c), x, y);
        }
        push(year(z, c), y, x);
    }
    out
}

fn time_of(time: &str) -> Option<(NaiveTime, Precision)> {
    if time.is_empty() {
        return Some((NaiveTime::MIN, Precision::Day));
    }
    let upper = time.to_ascii_uppercase();
    let (clock, meridiem) = match upper
        .strip_suffix("AM")
        .or_else(|| upper.strip_suffix("A.M."))
    {
        Some(c) => (c.trim().to_string(), Some(false)),
        None => match upper
            .strip_suffix("PM")
            .or_else(|| upper.strip_suffix("P.M."))
        {
            Some(c) => (c.trim().to_string(), Some(true)),
            None => (upper.clone(), None),
        },
    };
    let mut parts = clock.split(':');
    let h: u32 = parts.next()?.trim().parse().ok()?;
    let m: u32 = parts.next()?.trim().parse().ok()?;
    let (sec, precision, nanos) = match parts.next() {
        None => (0, Precision::Minute, 0),
        Some(s) => {
            let (whole, frac) = match s.split_once(['.', ',']) {
                Some((w, f)) => (w, Some(f)),
                None => (s, None),
            };
            let whole: u32 = whole.trim().parse().ok()?;
            match frac {
                None => (whole, Precision::Second, 0),
                Some(f)
                    if !f.is_empty() && f.len() <= 9 && f.chars().all(|c| c.is_ascii_digit()) =>
                {
                    let digits = f.len() as u32;
                    let nanos = f.parse::<u32>().ok()? * 10u32.pow(9 - digits);
                    (whole, Precision::Fraction(digits), nanos)
                }
                Some(_) => return None,
            }
        }
    };
    if parts.next().is_some() {
        return None;
    }
    let h = match meridiem {
        None => h,
        Some(_) if h == 0 || h > 12 => return None,
        Some(false) => h % 12,
        Some(true) => h % 12 + 12,
    };
    NaiveTime::from_hms_nano_opt(h, m, sec, nanos).map(|t| (t, precision))
}

/// Whether `cell` (from a file a spreadsheet may have saved) shows the time `export` holds, to
/// the precision the cell shows: the same instant written another way, cut or rounded to
/// minutes or seconds as spreadsheets do. Cells that are not date-times compare as text.
pub fn same_time(cell: &str, export: &str) -> bool {
    if cell.trim() == export.trim() {
        return true;
    }
    let Some(&(exact, _)) = readings(export).first() else {
        return false;
    };
    readings(cell)
        .into_iter()
        .any(|(t, p)| p.truncate(exact) == t || p.truncate(exact + p.unit() / 2) == t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_escaped_and_the_escape_is_undone() {
        for cell in ["=1+1", "+33 6", "-drop-", "@x", "\tx", "\rx"] {
            let written = defuse(cell);
            assert!(written.starts_with('\''), "{cell:?}");
            assert_eq!(undefuse(&written), cell);
        }
        for cell in ["Ana", "'quoted'", "", "don:identity"] {
            assert_eq!(defuse(cell), cell);
            assert_eq!(undefuse(cell), cell);
        }
    }

    #[test]
    fn a_time_a_spreadsheet_rewrote_is_the_same_time() {
        let export = "2024-04-28 15:41:20.945";
        for cell in [
            "2024-04-28 15:41:20.945",
            "2024-04-28T15:41:20.945Z",
            "4/28/2024 15:41",
            "4/28/2024 3:41 PM",
            "4/28/24 15:41",
            "28.04.2024 15:41",
            "28/04/2024 15:41:20",
            "28/04/2024 15:41:21",
            "28.04.2024 15:41:20,9",
            "2024/04/28 15:41:20.945",
            " 2024-04-28 15:41:20.94 ",
        ] {
            assert!(same_time(cell, export), "{cell:?}");
        }
        for cell in [
            "4/28/2024 15:42",
            "4/29/2024 15:41",
            "2024-04-28 15:41:22",
            "28.04.2024 16:41",
            "not a date",
            "",
        ] {
            assert!(!same_time(cell, export), "{cell:?}");
        }
        // Day and month the other way round are read both ways.
        assert!(same_time("5/4/2024 10:00", "2024-04-05 10:00:00"));
        assert!(same_time("4/5/2024 10:00", "2024-04-05 10:00:00"));
        // A day-only cell; a month by name.
        assert!(same_time("28.04.2024", export));
        assert!(same_time("28-Apr-2024 15:41", export));
        assert!(same_time("28-apr-24 3:41 PM", export));
    }

    #[test]
    fn files_in_the_encodings_spreadsheets_save_are_read() {
        let text = "rev_user_id;decision\r\nJosé;keep\r\n";
        assert_eq!(decode(text.as_bytes()).unwrap(), text);
        let bom = [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat();
        assert_eq!(decode(&bom).unwrap(), text);
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&le).unwrap(), text);
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode(&be).unwrap(), text);
        // Windows-1252 "José" (é = 0xE9): read as Latin-1.
        let ansi = b"rev_user_id;decision\r\nJos\xE9;keep\r\n";
        assert_eq!(decode(ansi).unwrap(), text);
        assert_eq!(decode(b"a\0b"), None);
    }

    #[test]
    fn numbers_a_spreadsheet_reformatted_are_the_same_value() {
        assert!(same_value("1", "1.0"));
        assert!(same_value("12345", " 12345 "));
        assert!(same_value("1.5e3", "1500"));
        assert!(!same_value("007", "7"), "a leading zero makes an id");
        assert!(!same_value("user_1", "user_1.0"));
        assert!(!same_value("1", "2"));
    }
}
