//! CSV records with their exact byte offset and physical line number.
//!
//! `csv::Reader` reports the line *after* the previous record's terminator was counted, which
//! is off for CRLF files and after blank lines, and error messages must name the line a person
//! sees in an editor. So this drives `csv_core` directly, counts every `\n` it consumes, and
//! skips the blank lines between records itself (exactly what `csv_core` would skip).

use std::io::{self, Read};

use csv_core::ReadRecordResult;

/// Largest record (all its fields together), in bytes. A contacts export has rows of a few
/// hundred bytes; a record this long is an unterminated quote swallowing the rest of the
/// file, and reading on would hold the whole file in memory.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Most fields in one record (the export has 8 columns; a few extra are kept).
pub const MAX_FIELDS: usize = 4096;

/// One record: its fields, where it starts, and on which line.
#[derive(Debug, Clone)]
pub struct RawRecord {
    data: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    /// Byte offset in the file of the record's first byte (a BOM counts as part of it).
    pub byte: u64,
    /// 1-based line on which the record starts.
    pub line: u64,
}

impl Default for RawRecord {
    fn default() -> Self {
        Self {
            data: vec![0; 256],
            ends: vec![0; 16],
            nfields: 0,
            byte: 0,
            line: 0,
        }
    }
}

impl RawRecord {
    pub fn len(&self) -> usize {
        self.nfields
    }

    pub fn is_empty(&self) -> bool {
        self.nfields == 0
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.nfields {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..self.ends[i]])
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.nfields).filter_map(|i| self.get(i))
    }

    /// Byte range of field `i` within [`RawRecord::as_slice`] / [`RawRecord::utf8`].
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        if i >= self.nfields {
            return 0..0;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    /// The fields' text, concatenated, if every field is valid UTF-8 (one check for the whole
    /// record instead of one per field; fields are then `&text[record.range(i)]`). `None`
    /// means at least one field is not UTF-8: check them one by one to say which.
    pub fn utf8(&self) -> Option<&str> {
        let text = std::str::from_utf8(self.as_slice()).ok()?;
        // Valid as a whole but a field could still end inside a character, if the next field
        // starts with a continuation byte.
        (0..self.nfields)
            .all(|i| text.is_char_boundary(self.range(i).start))
            .then_some(text)
    }

    /// All fields' bytes, concatenated (for cheap equality checks).
    pub fn as_slice(&self) -> &[u8] {
        match self.nfields {
            0 => &[],
            n => &self.data[..self.ends[n - 1]],
        }
    }
}

/// A streaming CSV reader (RFC 4180: `,`, `"` quotes with `""` escapes, LF or CRLF).
pub struct RawReader<R> {
    src: R,
    core: csv_core::Reader,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// File offset of `buf[start]`.
    offset: u64,
    /// Line number at `buf[start]`.
    line: u64,
}

impl<R: Read> RawReader<R> {
    pub fn new(src: R) -> Self {
        Self {
            src,
            core: csv_core::Reader::new(),
            buf: vec![0; 1 << 16],
            start: 0,
            end: 0,
            eof: false,
            offset: 0,
            line: 1,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end && !self.eof {
            self.start = 0;
            self.end = loop {
                match self.src.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.eof = self.end == 0;
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) {
        let consumed = &self.buf[self.start..self.start + n];
        self.line += consumed.iter().filter(|b| **b == b'\n').count() as u64;
        self.offset += n as u64;
        self.start += n;
    }

    /// Moves to byte offset `byte` without parsing what lies between (lines are still
    /// counted). `byte` must be the start of a record at or after the current position, as
    /// recorded in [`RawRecord::byte`] by an earlier pass; `false` if the input ends first or
    /// the position is behind.
    pub fn skip_to(&mut self, byte: u64) -> io::Result<bool> {
        while self.offset < byte {
            self.fill()?;
            if self.start == self.end {
                return Ok(false);
            }
            let n = usize::try_from(byte - self.offset)
                .unwrap_or(usize::MAX)
                .min(self.end - self.start);
            self.advance(n);
        }
        Ok(self.offset == byte)
    }

    /// Reads the next record into `rec`; `false` at the end of the input.
    pub fn read(&mut self, rec: &mut RawRecord) -> io::Result<bool> {
        // Blank lines and the `\n` of a CRLF terminator sit before the record.
        loop {
            self.fill()?;
            if self.start == self.end {
                return Ok(false);
            }
            let skip = self.buf[self.start..self.end]
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            self.advance(skip);
            if self.start < self.end {
                break;
            }
        }
        rec.byte = self.offset;
        rec.line = self.line;
        let (mut outlen, mut endlen) = (0, 0);
        loop {
            self.fill()?;
            let input = &self.buf[self.start..self.end];
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut rec.data[outlen..], &mut rec.ends[endlen..]);
            self.advance(nin);
            outlen += nout;
            endlen += nend;
            match res {
                ReadRecordResult::InputEmpty => continue,
                ReadRecordResult::OutputFull => {
                    if rec.data.len() >= MAX_RECORD_BYTES {
                        return Err(too_long(rec.line, "bytes", MAX_RECORD_BYTES));
                    }
                    let n = (rec.data.len() * 2).min(MAX_RECORD_BYTES);
                    rec.data.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    if rec.ends.len() >= MAX_FIELDS {
                        return Err(too_long(rec.line, "fields", MAX_FIELDS));
                    }
                    let n = (rec.ends.len() * 2).min(MAX_FIELDS);
                    rec.ends.resize(n, 0);
                }
                ReadRecordResult::Record => {
                    rec.nfields = endlen;
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    rec.nfields = 0;
                    return Ok(false);
                }
            }
        }
    }
}

/// The error for a record over a limit: it names the line the record starts on, and never
/// quotes the record itself.
fn too_long(line: u64, what: &str, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "line {line}: the record starting here has more than {max} {what} (the limit; a \
             quote left open swallows the rest of the file). Close the quote or split the value."
        ),
    )
}

/// Why [`read_pipelined`] stopped early.
#[derive(Debug)]
pub enum Stop<E> {
    /// Reading the input failed.
    Io(io::Error),
    /// The caller's function returned an error.
    Caller(E),
}

/// Records per hand-over between the two threads of [`read_pipelined`].
const BATCH: usize = 512;
/// Batches in flight: enough to keep both threads busy, few enough to stay small.
const IN_FLIGHT: usize = 4;
/// A batch is handed over early once its records hold this many bytes, and a recycled record
/// that grew past [`KEEP_RECORD_BYTES`] starts small again: with records up to
/// [`MAX_RECORD_BYTES`], memory stays at a few dozen MiB whatever the file holds.
const BATCH_BYTES: usize = 4 << 20;
const KEEP_RECORD_BYTES: usize = 64 << 10;

/// Reads records on a helper thread and gives them to `f` on this one, so parsing and the
/// caller's work use two cores. `next` reads the next record the caller wants into the record
/// it is given (usually [`RawReader::read`]; it may skip ahead first) and returns `false` at
/// the end. Records arrive in order; buffers are recycled, so nothing is allocated per record.
pub fn read_pipelined<R, N, F, E>(
    rdr: &mut RawReader<R>,
    mut next: N,
    mut f: F,
) -> Result<(), Stop<E>>
where
    R: Read + Send,
    N: FnMut(&mut RawReader<R>, &mut RawRecord) -> io::Result<bool> + Send,
    F: FnMut(&RawRecord) -> Result<(), E>,
{
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    type Batch = (Vec<RawRecord>, usize);
    std::thread::scope(|scope| {
        let (full_tx, full_rx): (SyncSender<io::Result<Batch>>, Receiver<io::Result<Batch>>) =
            sync_channel(IN_FLIGHT);
        let (free_tx, free_rx) = sync_channel::<Vec<RawRecord>>(IN_FLIGHT + 1);
        for _ in 0..IN_FLIGHT {
            // Records are added as needed: a small file costs a few, not thousands.
            let _ = free_tx.send(Vec::new());
        }
        scope.spawn(move || {
            // Stops when the input ends, on an error, or when the consumer hangs up.
            while let Ok(mut batch) = free_rx.recv() {
                let mut n = 0;
                let mut bytes = 0;
                let mut done = false;
                while n < BATCH && bytes < BATCH_BYTES {
                    if batch.len() == n {
                        batch.push(RawRecord::default());
                    } else if batch[n].data.len() > KEEP_RECORD_BYTES {
                        batch[n] = RawRecord::default();
                    }
                    match next(rdr, &mut batch[n]) {
                        Ok(true) => {
                            bytes += batch[n].as_slice().len();
                            n += 1;
                        }
                        Ok(false) => {
                            done = true;
                            break;
                        }
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return;
                        }
                    }
                }
                if (n > 0 && full_tx.send(Ok((batch, n))).is_err()) || done {
                    return;
                }
            }
        });
        for msg in full_rx.iter() {
            let (batch, n) = msg.map_err(Stop::Io)?;
            for rec in &batch[..n] {
                f(rec).map_err(Stop::Caller)?;
            }
            // The reader may have finished already; then nobody needs the buffer back.
            let _ = free_tx.send(batch);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &str) -> Vec<(u64, u64, Vec<String>)> {
        let mut r = RawReader::new(data.as_bytes());
        let mut rec = RawRecord::default();
        let mut out = vec![];
        while r.read(&mut rec).unwrap() {
            let fields = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            out.push((rec.line, rec.byte, fields));
        }
        out
    }

    #[test]
    fn lines_and_offsets_are_physical() {
        let lf = read_all("h\na\nb\n");
        assert_eq!(
            lf.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            [(1, 0), (2, 2), (3, 4)]
        );
        let crlf = read_all("h\r\na\r\nb");
        assert_eq!(
            crlf.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            [(1, 0), (2, 3), (3, 6)]
        );
        let blank = read_all("h\n\na\n\r\n\nb\n");
        assert_eq!(blank.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3, 6]);
        let quoted = read_all("h\r\n\"a\r\nx, \"\"y\"\"\",2\r\nb\r\n");
        assert_eq!(quoted[1].2, ["a\r\nx, \"y\"", "2"]);
        assert_eq!(quoted[2].0, 4);
    }

    #[test]
    fn utf8_is_checked_per_field_even_when_the_whole_is_valid() {
        let mut r = RawReader::new("é,x\n".as_bytes());
        let mut rec = RawRecord::default();
        assert!(r.read(&mut rec).unwrap());
        assert_eq!(rec.utf8(), Some("éx"));
        assert_eq!(&rec.utf8().unwrap()[rec.range(1)], "x");
        // "\xC3" then "\xA9": each field invalid, the concatenation is "é".
        let mut r = RawReader::new(&b"\xC3,\xA9\n"[..]);
        assert!(r.read(&mut rec).unwrap());
        assert_eq!(rec.as_slice(), "é".as_bytes());
        assert_eq!(rec.utf8(), None);
    }

    #[test]
    fn skipping_to_a_recorded_offset_reads_the_same_record_and_line() {
        let data = "h\r\n\"a\nb\",1\r\n\r\nc,2\r\nd,3\r\n";
        let all = read_all(data);
        let mut r = RawReader::new(data.as_bytes());
        let mut rec = RawRecord::default();
        assert!(r.read(&mut rec).unwrap());
        let (line, byte, fields) = &all[3];
        assert!(r.skip_to(*byte).unwrap());
        assert!(r.read(&mut rec).unwrap());
        assert_eq!((rec.line, rec.byte), (*line, *byte));
        assert_eq!(
            rec.iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>(),
            *fields
        );
        assert_eq!(rec.line, 6);
        assert!(!r.skip_to(1).unwrap(), "behind the current position");
        assert!(!r.skip_to(10_000).unwrap(), "past the end");
    }

    #[test]
    fn pipelined_reading_sees_every_record_in_order_and_stops_on_errors() {
        let mut data = String::from("h\n");
        for i in 0..5000 {
            data.push_str(&format!("{i},\"x\ny\"\n"));
        }
        let mut r = RawReader::new(data.as_bytes());
        let mut seen = vec![];
        read_pipelined(
            &mut r,
            |r, rec| r.read(rec),
            |rec| {
                seen.push((
                    rec.line,
                    String::from_utf8_lossy(rec.get(0).unwrap()).into_owned(),
                ));
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(seen.len(), 5001);
        assert_eq!(seen[0], (1, "h".to_string()));
        assert_eq!(seen[5000], (2 * 5000, "4999".to_string()));
        let mut r = RawReader::new(data.as_bytes());
        let mut count = 0;
        let stop = read_pipelined(
            &mut r,
            |r, rec| r.read(rec),
            |_| {
                count += 1;
                if count == 1000 { Err("enough") } else { Ok(()) }
            },
        );
        assert!(matches!(stop, Err(Stop::Caller("enough"))));
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut r = RawReader::new(Broken);
        let stop = read_pipelined(&mut r, |r, rec| r.read(rec), |_| Ok::<(), ()>(()));
        assert!(matches!(stop, Err(Stop::Io(e)) if e.to_string() == "disk on fire"));
    }

    #[test]
    fn a_record_over_the_limit_is_an_error_naming_its_line_in_bounded_memory() {
        // An unterminated quote on line 3 of a "file" far larger than the limit: the reader
        // stops at the limit instead of holding the rest.
        let head = b"h\na,b\n\"open,".to_vec();
        let endless = std::io::Read::chain(&head[..], std::io::repeat(b'x').take(64 << 20));
        let mut r = RawReader::new(endless);
        let mut rec = RawRecord::default();
        assert!(r.read(&mut rec).unwrap());
        assert!(r.read(&mut rec).unwrap());
        let e = r.read(&mut rec).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().starts_with("line 3: "), "{e}");
        assert!(e.to_string().len() < 300, "{e}");
        assert!(rec.data.len() <= MAX_RECORD_BYTES);
        let commas = format!("h\n{}\n", ",".repeat(MAX_FIELDS + 1));
        let mut r = RawReader::new(commas.as_bytes());
        assert!(r.read(&mut rec).unwrap());
        let e = r.read(&mut rec).unwrap_err().to_string();
        assert!(e.starts_with("line 2: ") && e.contains("fields"), "{e}");
    }

    #[test]
    fn bom_is_stripped_and_long_fields_grow_buffers() {
        let long = "x".repeat(200_000);
        let data = format!("\u{feff}a,b\n{long},{}\n", "y,".repeat(100));
        let recs = read_all(&data);
        assert_eq!(recs[0].2, ["a", "b"]);
        assert_eq!(recs[1].2[0].len(), 200_000);
        assert_eq!(recs[1].2.len(), 102);
        assert_eq!(recs[1].0, 2);
    }
}
