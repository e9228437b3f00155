//! The savepoint: a versioned journal of every pair's progress, appended and fsynced after
//! every step, plus the lock file that keeps two runs off the same journal.
//!
//! The file is the single source of truth for resuming. It is keyed by the pair's two DONs
//! (`"<primary DON> <- <secondary DON>"`), never by CSV line or email, so editing the CSV
//! between runs cannot attach an old record to a different pair. Every change goes through
//! [`Savepoint::update`] (or `put`), which changes the record in memory and appends the whole
//! record as one JSON line, fsynced, before returning: what is in memory is what is on disk.
//! One step therefore costs one line, the same at 10 pairs as at 100,000.
//!
//! Crash safety: a crash mid-append can only leave a torn *last* line, one without its line
//! break (each append is synced before the next action). Loading ignores it (the step it
//! recorded had not returned, so nothing that depended on it was sent), and the next write
//! drops it by rewriting the file. Any whole line that does not parse, the last one included,
//! is corruption: exit 65 naming the line, the file left as it is. The file is
//! compacted (rewritten atomically: temp file, fsync, rename, one line per live record) when
//! it has grown to twice the live records, at the end of a run, and at the first write after
//! loading a version-1 savepoint (the migration) or a torn tail.
//!
//! What the file holds (its types and format version) is defined in `journal.rs`; this module
//! only reads, locks, appends and compacts it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use fs4::fs_std::FileExt;

use super::journal::{
    GroupDecision, JOURNAL_V2, JOURNAL_V3, JournalHeader, JournalLine, JournalLineRef,
    LEGACY_VERSION, Owner, PairRecord, SavepointFile, VERSION, pair_key,
};
use crate::error::AppError;
use crate::fsutil;

/// A journal is compacted once it holds this many times more lines than live records...
const COMPACT_FACTOR: u64 = 2;
/// ...and at least this many lines, so a small plan is not rewritten every few steps.
const COMPACT_MIN_LINES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    #[error(
        "another devrev-merge run is using the savepoint {savepoint} (its lock {lock} is held{holder}). \
         Wait for that run to finish: one journal belongs to one run at a time."
    )]
    Locked {
        savepoint: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error(
        "the savepoint {path} is corrupt ({reason}). It was left unchanged. Restore it from a \
         copy, or move it away to start over (pairs already merged are then re-validated and \
         reported as skipped, never merged twice)."
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the savepoint {path} has format version {found}, but this devrev-merge reads version \
         {VERSION} (and converts version {LEGACY_VERSION}). Use the devrev-merge version that wrote it to finish that run. It was left unchanged."
    )]
    Version { path: PathBuf, found: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<SavepointError> for AppError {
    fn from(e: SavepointError) -> Self {
        match e {
            SavepointError::Corrupt { .. } | SavepointError::Version { .. } => {
                AppError::Data(e.to_string())
            }
            SavepointError::Locked { .. } | SavepointError::Io { .. } => {
                AppError::CantCreate(e.to_string())
            }
        }
    }
}

/// Opens the savepoint file for reading or for appending. Kept as the one place that opens it,
/// so how it is opened (mode, symlinks) is decided once.
fn open_file(path: &Path, append: bool) -> std::io::Result<fs::File> {
    // Never through a link: the journal must be this file, not one it points at.
    crate::platform::open_existing_nofollow(path, append)
}

/// A savepoint as read from disk, with what the next write needs to know about the file.
#[derive(Debug)]
struct Loaded {
    file: SavepointFile,
    /// Entry lines after the header (live or superseded); `None` when the file is not an
    /// appendable version-2 journal (a version-1 file, or a torn last line to drop).
    lines: Option<u64>,
}

/// Reads a savepoint file. `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<SavepointFile>, SavepointError> {
    Ok(read(path)?.map(|l| l.file))
}

fn read(path: &Path) -> Result<Option<Loaded>, SavepointError> {
    let io = |source| SavepointError::Io {
        what: "read the savepoint",
        path: path.to_path_buf(),
        source,
    };
    let file = match open_file(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut first = Vec::new();
    r.read_until(b'\n', &mut first).map_err(io)?;
    let corrupt = |reason: String| SavepointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    // A version-2 journal starts with a one-line header; a version-1 file is one JSON document
    // (pretty-printed, so its first line alone is not JSON).
    let head: Option<serde_json::Value> = serde_json::from_slice(&first).ok();
    match head
        .as_ref()
        .map(|h| h.get("version").map(|v| (v.as_u64(), v)))
    {
        Some(Some((Some(v), _)))
            if v == u64::from(VERSION)
                || v == u64::from(JOURNAL_V2)
                || v == u64::from(JOURNAL_V3) =>
        {
            let header: JournalHeader = serde_json::from_slice(&first)
                .map_err(|e| corrupt(format!("the header line: {e}")))?;
            let whole_header = first.ends_with(b"\n");
            let mut loaded = read_lines(path, header, r)?;
            // A version-2 journal is rewritten (with a version-3 header) before anything is
            // appended, so no file says version 2 while holding a `restored` record.
            if !whole_header || v != u64::from(VERSION) {
                // Nothing may be appended to a line without its end: rewrite first.
                loaded.lines = None;
            }
            return Ok(Some(loaded));
        }
        Some(Some((n, v))) if n != Some(u64::from(LEGACY_VERSION)) => {
            return Err(SavepointError::Version {
                path: path.to_path_buf(),
                found: v.to_string(),
            });
        }
        _ => {}
    }
    let mut bytes = first;
    r.read_to_end(&mut bytes).map_err(io)?;
    load_legacy(path, &bytes).map(|file| Some(Loaded { file, lines: None }))
}

/// The entry lines of a version-2 journal, applied in order.
fn read_lines(
    path: &Path,
    header: JournalHeader,
    mut r: impl BufRead,
) -> Result<Loaded, SavepointError> {
    let io = |source| SavepointError::Io {
        what: "read the savepoint",
        path: path.to_path_buf(),
        source,
    };
    let mut file = SavepointFile {
        version: header.version,
        tool_version: header.tool_version,
        created_at: header.created_at,
        updated_at: header.created_at,
        pairs: Default::default(),
        owner: header.owner,
        decisions: Default::default(),
    };
    let mut lines = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Ok(Loaded {
                file,
                lines: Some(lines),
            });
        }
        match parse_line(&line) {
            LineRead::Entry(JournalLine::Pair(rec)) => {
                file.updated_at = file.updated_at.max(rec.updated_at);
                file.pairs
                    .insert(pair_key(&rec.primary, &rec.secondary), *rec);
            }
            LineRead::Entry(JournalLine::Removed(key)) => {
                file.pairs.remove(&key);
            }
            LineRead::Entry(JournalLine::Decision(d)) => {
                file.decisions.insert(d.group.clone(), *d);
            }
            // A crash mid-append: the last line is torn. Its step never returned, so it is
            // dropped (at the next write, which rewrites the file).
            LineRead::Torn => return Ok(Loaded { file, lines: None }),
            LineRead::Damaged(e) => {
                return Err(SavepointError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "line {} ends in a line break but is not a journal entry ({e}); only a \
                         line without its line break can be a torn write, so this one is not \
                         dropped",
                        lines + 2
                    ),
                });
            }
        }
        lines += 1;
    }
}

/// What one line of a version-2 journal turned out to be.
#[derive(Debug)]
enum LineRead {
    Entry(JournalLine),
    /// No line break at its end: an append cut short by a crash. Every append is synced
    /// before the next action, so only the last line can look like this, and only its step
    /// (which never returned) is lost.
    Torn,
    /// A whole line (it ends in a line break) that does not parse: damage after the fact (an
    /// edit, a bad disk, another program). Never dropped: dropping it would silently roll
    /// back a step DevRev may already have seen.
    Damaged(String),
}

/// The rule for one line read with its line break (if any): whole lines must parse.
fn parse_line(line: &[u8]) -> LineRead {
    if !line.ends_with(b"\n") {
        return LineRead::Torn;
    }
    match serde_json::from_slice::<JournalLine>(line) {
        Ok(entry) => LineRead::Entry(entry),
        Err(e) => LineRead::Damaged(e.to_string()),
    }
}

/// A version-1 savepoint: one JSON document.
fn load_legacy(path: &Path, bytes: &[u8]) -> Result<SavepointFile, SavepointError> {
    let corrupt = |reason: String| SavepointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    // The version is checked before the shape, so a newer format gets the right message
    // instead of a confusing field error.
    match value.get("version") {
        None => {
            return Err(corrupt(
                "no \"version\" field: not a devrev-merge savepoint".into(),
            ));
        }
        Some(v) if v.as_u64() == Some(u64::from(LEGACY_VERSION)) => {}
        Some(v) => {
            return Err(SavepointError::Version {
                path: path.to_path_buf(),
                found: v.to_string(),
            });
        }
    }
    let file: SavepointFile = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    for (key, rec) in &file.pairs {
        if *key != pair_key(&rec.primary, &rec.secondary) {
            return Err(corrupt(format!(
                "the entry {key:?} holds the pair {:?}",
                pair_key(&rec.primary, &rec.secondary)
            )));
        }
    }
    Ok(file)
}

/// An exclusive lock on `<savepoint>.lock`, held for the whole run and released when dropped
/// or when the process dies (it is an `flock`, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct SavepointLock {
    _file: fs::File,
    path: PathBuf,
}

impl SavepointLock {
    pub fn lock_path(savepoint: &Path) -> PathBuf {
        let mut name = savepoint
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        savepoint.with_file_name(name)
    }

    pub fn acquire(savepoint: &Path) -> Result<Self, SavepointError> {
        let path = Self::lock_path(savepoint);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir).map_err(|source| SavepointError::Io {
                what: "create the folder of",
                path: path.clone(),
                source,
            })?;
        }
        let io = |what, source| SavepointError::Io {
            what,
            path: path.clone(),
            source,
        };
        let mut file =
            fsutil::open_private(&path, false).map_err(|e| io("open the lock file", e))?;
        if !file.try_lock_exclusive().map_err(|e| io("lock", e))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                String::new()
            } else {
                format!(" by process {holder}")
            };
            return Err(SavepointError::Locked {
                savepoint: savepoint.to_path_buf(),
                lock: path,
                holder,
            });
        }
        // Who holds it, for the message a second run prints.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The open journal of a run: the lock, the path and the content.
#[derive(Debug)]
pub struct Savepoint {
    path: PathBuf,
    file: SavepointFile,
    /// The journal opened for appending; `None` until the file on disk is an appendable
    /// version-2 journal (then the next write compacts instead of appending).
    log: Option<fs::File>,
    /// Entry lines in the file after its header, live or superseded.
    lines: u64,
    /// Whether the file exists on disk (a new journal is only written at the first change).
    on_disk: bool,
    _lock: SavepointLock,
}

impl Savepoint {
    /// Locks and loads the savepoint (or starts an empty one; nothing is written yet).
    pub fn open(path: &Path) -> Result<Self, SavepointError> {
        // A link would make the journal of this run someone else's file.
        fsutil::refuse_symlink(path).map_err(|source| SavepointError::Io {
            what: "open",
            path: path.to_path_buf(),
            source,
        })?;
        let lock = SavepointLock::acquire(path)?;
        let existing = read(path)?;
        let on_disk = existing.is_some();
        let (file, lines) = match existing {
            Some(l) => (l.file, l.lines),
            None => (SavepointFile::new(), None),
        };
        let log = match lines {
            Some(_) => Some(open_file(path, true).map_err(|source| SavepointError::Io {
                what: "open the savepoint",
                path: path.to_path_buf(),
                source,
            })?),
            None => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            log,
            lines: lines.unwrap_or(0),
            on_disk,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists_on_disk(&self) -> bool {
        self.on_disk
    }

    pub fn file(&self) -> &SavepointFile {
        &self.file
    }

    pub fn get(&self, key: &str) -> Option<&PairRecord> {
        self.file.pairs.get(key)
    }

    /// Adds a record (or replaces one) and writes it.
    pub fn put(&mut self, key: &str, rec: PairRecord) -> Result<(), SavepointError> {
        self.file.pairs.insert(key.to_string(), rec);
        self.write(key)
    }

    /// Records a lasting group decision (or its revocation) and writes it.
    pub fn put_decision(&mut self, d: GroupDecision) -> Result<(), SavepointError> {
        if self.file.decisions.get(&d.group) == Some(&d) {
            return Ok(());
        }
        let group = d.group.clone();
        self.file.decisions.insert(group.clone(), d);
        self.append(Entry::Decision(&group))
    }

    /// Records which org and base URL the journal belongs to. A file-level field lives in the
    /// header, so it is written by rewriting the journal (once: an unchanged owner writes
    /// nothing).
    pub fn set_owner(&mut self, owner: Owner) -> Result<(), SavepointError> {
        if self.file.owner.as_ref() == Some(&owner) && self.on_disk {
            return Ok(());
        }
        self.file.owner = Some(owner);
        self.compact()
    }

    /// Removes a record and writes the removal.
    pub fn remove(&mut self, key: &str) -> Result<Option<PairRecord>, SavepointError> {
        let old = self.file.pairs.remove(key);
        if old.is_some() {
            self.write(key)?;
        }
        Ok(old)
    }

    /// Changes one record and writes it before returning. There is no way to change a
    /// record without writing it, which is what keeps memory and disk the same.
    pub fn update<R>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut PairRecord) -> R,
    ) -> Result<R, SavepointError> {
        let rec = self
            .file
            .pairs
            .get_mut(key)
            .ok_or_else(|| SavepointError::Corrupt {
                path: self.path.clone(),
                reason: format!("no entry for {key:?} (changed by something else during the run?)"),
            })?;
        let r = f(rec);
        rec.updated_at = Utc::now();
        self.write(key)?;
        Ok(r)
    }

    /// Rewrites the journal with one line per live record if earlier lines were superseded
    /// (the end of a run: the next run loads less).
    pub fn compact_if_superseded(&mut self) -> Result<(), SavepointError> {
        let live = (self.file.pairs.len() + self.file.decisions.len()) as u64;
        if self.on_disk && self.lines > live {
            self.compact()?;
        }
        Ok(())
    }

    /// Records the current state of `key` (its record, or its removal): one appended line,
    /// or a compaction when the file must or should be rewritten.
    fn write(&mut self, key: &str) -> Result<(), SavepointError> {
        // The file's time is its newest record's, which is also what loading derives.
        if let Some(rec) = self.file.pairs.get(key) {
            self.file.updated_at = self.file.updated_at.max(rec.updated_at);
        }
        self.append(Entry::Pair(key))
    }

    /// Appends the current state of one entry: one synced line, or a compaction when the
    /// file must or should be rewritten.
    fn append(&mut self, what: Entry<'_>) -> Result<(), SavepointError> {
        let live = (self.file.pairs.len() + self.file.decisions.len()) as u64;
        let grown = self.lines >= COMPACT_FACTOR * live.max(COMPACT_MIN_LINES / COMPACT_FACTOR);
        let Some(log) = self.log.as_mut().filter(|_| !grown) else {
            return self.compact();
        };
        let entry = match what {
            Entry::Pair(key) => match self.file.pairs.get(key) {
                Some(rec) => JournalLineRef::Pair(rec),
                None => JournalLineRef::Removed(key),
            },
            Entry::Decision(group) => match self.file.decisions.get(group) {
                Some(d) => JournalLineRef::Decision(d),
                None => return Ok(()),
            },
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other);
        if let Ok(l) = &mut line {
            l.push(b'\n');
        }
        let written = line
            .and_then(|l| log.write_all(&l))
            .and_then(|()| log.sync_data());
        if let Err(source) = written {
            // A partial line may be on disk: the next write rewrites the whole file instead.
            self.log = None;
            return Err(SavepointError::Io {
                what: "write the savepoint",
                path: self.path.clone(),
                source,
            });
        }
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the whole journal atomically in the current format, one line per live record,
    /// and reopens it for appending (the old handle points at the replaced file).
    fn compact(&mut self) -> Result<(), SavepointError> {
        self.log = None;
        let header = JournalHeader {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: self.file.created_at,
            owner: self.file.owner.clone(),
        };
        let pairs = &self.file.pairs;
        let decisions = &self.file.decisions;
        let io = |source| SavepointError::Io {
            what: "write the savepoint",
            path: self.path.clone(),
            source,
        };
        fsutil::write_private_atomic_with(&self.path, true, |w| {
            serde_json::to_writer(&mut *w, &header)?;
            w.write_all(b"\n")?;
            for rec in pairs.values() {
                serde_json::to_writer(&mut *w, &JournalLineRef::Pair(rec))?;
                w.write_all(b"\n")?;
            }
            for d in decisions.values() {
                serde_json::to_writer(&mut *w, &JournalLineRef::Decision(d))?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
        .map_err(io)?;
        self.file.version = VERSION;
        self.lines = (pairs.len() + decisions.len()) as u64;
        self.on_disk = true;
        self.log = Some(open_file(&self.path, true).map_err(io)?);
        Ok(())
    }
}

/// Which entry an append writes.
#[derive(Debug, Clone, Copy)]
enum Entry<'a> {
    /// A pair's record, by key (its removal when it has none).
    Pair(&'a str),
    /// A group's lasting decision, by group id.
    Decision(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::journal::{MergeIntent, MergeOutcome, Step};
    use crate::options::Keep;

    fn rec(n: u32) -> PairRecord {
        PairRecord::new(
            &format!("p{n}@example.com"),
            &format!("don:identity:dvrv-us-1:devo/1:revu/P{n}"),
            &format!("don:identity:dvrv-us-1:devo/1:revu/S{n}"),
            Keep::Revu,
        )
    }

    fn key(r: &PairRecord) -> String {
        pair_key(&r.primary, &r.secondary)
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut sp = Savepoint::open(&path).unwrap();
        assert!(!path.exists(), "nothing is written before the first change");
        let r = rec(1);
        sp.put(&key(&r), r.clone()).unwrap();
        sp.update(&key(&r), |p| {
            p.last_step = Some(Step::Backup);
            p.merge = Some(MergeIntent {
                attempt: 1,
                requested_at: Utc::now(),
                outcome: Some(MergeOutcome::Unknown {
                    reason: "dropped".into(),
                }),
                unmerged_since: None,
                watch_until: None,
            });
            p.repairs
                .tickets
                .push("don:core:dvrv-us-1:devo/1:ticket/1".into());
        })
        .unwrap();
        crate::platform::tests::assert_private(&path);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, *sp.file());
        assert_eq!(loaded.version, VERSION);
        let got = &loaded.pairs[&key(&r)];
        assert_eq!(got.last_step, Some(Step::Backup));
        assert!(got.merge_in_flight());
        let raw = lines(&path);
        assert_eq!(raw[0]["version"], VERSION);
        assert_eq!(raw.last().unwrap()["pair"]["last_step"], "backup");
    }

    /// The file's lines as JSON values (header first).
    fn lines(path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A version-2 journal with `n` pairs, each written `steps` times.
    fn journal_with(path: &Path, n: u32, steps: u32) -> Savepoint {
        let mut sp = Savepoint::open(path).unwrap();
        for i in 0..n {
            let r = rec(i);
            sp.put(&key(&r), r.clone()).unwrap();
            for _ in 1..steps {
                sp.update(&key(&r), |p| p.last_step = Some(Step::Backup))
                    .unwrap();
            }
        }
        sp
    }

    #[test]
    fn each_step_appends_one_line_and_the_last_line_of_a_pair_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut sp = journal_with(&path, 3, 1);
        assert_eq!(lines(&path).len(), 1 + 3, "header + one line per put");
        let k = key(&rec(1));
        sp.update(&k, |p| p.last_step = Some(Step::Backup)).unwrap();
        sp.update(&k, |p| p.last_step = Some(Step::VerifyBackup))
            .unwrap();
        assert_eq!(lines(&path).len(), 1 + 5, "one appended line per step");
        sp.remove(&key(&rec(2))).unwrap();
        assert_eq!(lines(&path).len(), 1 + 6);
        let expected = sp.file().clone();
        drop(sp);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.pairs, expected.pairs);
        assert_eq!(loaded.pairs[&k].last_step, Some(Step::VerifyBackup));
        assert!(
            !loaded.pairs.contains_key(&key(&rec(2))),
            "removal read back"
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_dropped_at_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut sp = journal_with(&path, 2, 1);
        let k = key(&rec(0));
        sp.update(&k, |p| p.last_step = Some(Step::Backup)).unwrap();
        let before_step = sp.file().clone();
        sp.update(&k, |p| p.last_step = Some(Step::VerifyBackup))
            .unwrap();
        drop(sp);
        // A crash in the middle of appending the last step: only part of its line is there.
        let full = fs::read(&path).unwrap();
        let last_start = full[..full.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        for cut in [last_start + 1, last_start + 40, full.len() - 1] {
            fs::write(&path, &full[..cut]).unwrap();
            let loaded = load(&path).unwrap().unwrap();
            assert_eq!(loaded.pairs, before_step.pairs, "cut at {cut}");
        }
        let mut sp = Savepoint::open(&path).unwrap();
        assert_eq!(sp.get(&k).unwrap().last_step, Some(Step::Backup));
        sp.update(&k, |p| p.last_step = Some(Step::RequestMerge))
            .unwrap();
        let after = lines(&path);
        assert_eq!(after.len(), 1 + 2, "rewritten without the torn line");
        drop(sp);
        assert_eq!(
            load(&path).unwrap().unwrap().pairs[&k].last_step,
            Some(Step::RequestMerge)
        );
    }

    #[test]
    fn a_header_without_its_line_end_is_rewritten_before_anything_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        drop(journal_with(&path, 0, 1));
        let mut sp = Savepoint::open(&path).unwrap();
        let r = rec(1);
        sp.put(&key(&r), r.clone()).unwrap();
        drop(sp);
        let text = fs::read_to_string(&path).unwrap();
        let header = text.lines().next().unwrap();
        fs::write(&path, header).unwrap();
        let mut sp = Savepoint::open(&path).unwrap();
        assert!(sp.file().pairs.is_empty());
        sp.put(&key(&r), r.clone()).unwrap();
        assert_eq!(
            lines(&path).len(),
            2,
            "header and the record, each on its line"
        );
    }

    #[test]
    fn an_unreadable_line_before_the_last_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        drop(journal_with(&path, 3, 1));
        let text = fs::read_to_string(&path).unwrap();
        let mut ls: Vec<&str> = text.lines().collect();
        ls[2] = "{\"pair\": {\"email\"";
        let bad = ls.join("\n") + "\n";
        fs::write(&path, &bad).unwrap();
        let err = Savepoint::open(&path).unwrap_err();
        assert!(matches!(err, SavepointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), bad, "left unchanged");
    }

    #[test]
    fn a_whole_last_line_that_does_not_parse_is_corruption_not_a_torn_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        drop(journal_with(&path, 2, 1));
        let good = fs::read(&path).unwrap();
        for garbage in [
            &b"garbage\n"[..],
            b"{\"pair\": {\"email\"\n",
            b"\n",
            b"{}\n",
        ] {
            let bad = [&good[..], garbage].concat();
            fs::write(&path, &bad).unwrap();
            let err = Savepoint::open(&path).unwrap_err();
            assert!(matches!(err, SavepointError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("line 4"), "{err}");
            assert_eq!(AppError::from(err).exit_code(), 65);
            assert_eq!(fs::read(&path).unwrap(), bad, "left byte for byte");
        }
    }

    #[test]
    fn only_a_line_without_its_line_break_is_torn() {
        assert!(matches!(parse_line(b"{\"pair\": {"), LineRead::Torn));
        assert!(matches!(parse_line(b""), LineRead::Torn));
        assert!(matches!(parse_line(b"x\n"), LineRead::Damaged(_)));
        assert!(matches!(parse_line(b"\n"), LineRead::Damaged(_)));
        let removed = b"{\"removed\": \"a <- b\"}\n";
        assert!(matches!(
            parse_line(removed),
            LineRead::Entry(JournalLine::Removed(k)) if k == "a <- b"
        ));
    }

    #[test]
    fn the_journal_is_compacted_when_it_doubles_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut sp = journal_with(&path, 600, 1);
        assert_eq!(lines(&path).len(), 1 + 600);
        let k = key(&rec(7));
        // 2 x 600 lines is the threshold: the step that finds it reached rewrites the file.
        for _ in 0..600 {
            sp.update(&k, |p| p.last_step = Some(Step::Backup)).unwrap();
        }
        assert_eq!(lines(&path).len(), 1 + 1200);
        sp.update(&k, |p| p.last_step = Some(Step::Reconcile))
            .unwrap();
        assert_eq!(lines(&path).len(), 1 + 600, "compacted: one line per pair");
        sp.update(&k, |p| p.last_step = Some(Step::Done)).unwrap();
        assert_eq!(lines(&path).len(), 1 + 601, "appending again after");
        sp.compact_if_superseded().unwrap();
        assert_eq!(lines(&path).len(), 1 + 600, "end-of-run compaction");
        crate::platform::tests::assert_private(&path);
        let expected = sp.file().clone();
        drop(sp);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.pairs, expected.pairs);
        assert_eq!(loaded.pairs[&k].last_step, Some(Step::Done));
        // No temp files left behind (the lock file stays).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_version_1_savepoint_is_read_and_migrated_at_the_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut f = SavepointFile::new();
        f.version = 1;
        for i in 0..3 {
            let r = rec(i);
            f.pairs.insert(key(&r), r);
        }
        fsutil::write_json_atomic(&path, &f).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, f);
        let mut sp = Savepoint::open(&path).unwrap();
        assert_eq!(sp.file().pairs, f.pairs);
        let k = key(&rec(1));
        sp.update(&k, |p| p.last_step = Some(Step::Validate))
            .unwrap();
        let raw = lines(&path);
        assert_eq!(
            raw[0]["version"], VERSION,
            "rewritten in the current format"
        );
        assert_eq!(
            raw[0]["created_at"],
            serde_json::to_value(f.created_at).unwrap()
        );
        assert_eq!(raw.len(), 1 + 3);
        drop(sp);
        let again = load(&path).unwrap().unwrap();
        assert_eq!(again.version, VERSION);
        assert_eq!(again.pairs[&k].last_step, Some(Step::Validate));
        assert_eq!(again.pairs.len(), 3);
    }

    #[test]
    fn missing_file_is_a_fresh_journal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none.json")).unwrap().is_none());
    }

    #[test]
    fn corrupt_file_is_a_data_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        for bad in [
            &b"{\"version\":1,\"pairs\":{"[..],
            b"[]",
            b"{\"pairs\":{}}",
            b"{\"version\":1,\"tool_version\":\"x\",\"created_at\":\"nope\",\"updated_at\":\"nope\",\"pairs\":{}}",
        ] {
            fs::write(&path, bad).unwrap();
            let err = Savepoint::open(&path).unwrap_err();
            assert!(matches!(err, SavepointError::Corrupt { .. }), "{err}");
            let app: AppError = err.into();
            assert_eq!(app.exit_code(), 65);
            assert!(app.to_string().contains("left unchanged"), "{app}");
            assert_eq!(fs::read(&path).unwrap(), bad, "never overwritten");
        }
    }

    #[test]
    fn entry_under_the_wrong_key_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut f = SavepointFile::new();
        f.version = 1;
        f.pairs.insert("someone else".into(), rec(1));
        fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
        assert!(matches!(load(&path), Err(SavepointError::Corrupt { .. })));
    }

    #[test]
    fn version_2_and_3_journals_are_read_and_rewritten_in_the_current_format_before_an_append() {
        for old in [JOURNAL_V2, JOURNAL_V3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("savepoint.json");
            let r = rec(1);
            let header = serde_json::json!({"version": old, "tool_version": "0.1.0",
                                            "created_at": "2026-01-01T00:00:00Z"});
            let line = serde_json::to_string(&JournalLineRef::Pair(&r)).unwrap();
            fs::write(&path, format!("{header}\n{line}\n")).unwrap();
            let mut sp = Savepoint::open(&path).unwrap();
            assert_eq!(sp.get(&key(&r)), Some(&r));
            sp.update(&key(&r), |p| p.last_step = Some(Step::Validate))
                .unwrap();
            let raw = lines(&path);
            assert_eq!(
                raw[0]["version"], VERSION,
                "no version-{old} header over lines of the current version"
            );
            assert_eq!(raw.len(), 2);
        }
    }

    #[test]
    fn group_decisions_last_across_loads_and_compactions() {
        use crate::merge::journal::{GroupDecision, LastingDecision, Revocation};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut sp = Savepoint::open(&path).unwrap();
        sp.put(&key(&rec(1)), rec(1)).unwrap();
        let d = GroupDecision {
            group: "G-0123456789".into(),
            email: "a@x.com".into(),
            decision: LastingDecision::NotDup,
            at: Utc::now(),
            file: "decided.csv".into(),
            line: Some(4),
            revoked: None,
        };
        sp.put_decision(d.clone()).unwrap();
        let before = lines(&path).len();
        sp.put_decision(d.clone()).unwrap();
        assert_eq!(
            lines(&path).len(),
            before,
            "an unchanged decision writes nothing"
        );
        drop(sp);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.decisions["G-0123456789"], d);
        assert_eq!(
            lines(&path).last().unwrap()["decision"]["decision"],
            "not_dup"
        );
        // Revoked later: the last line wins, and a compaction keeps it.
        let mut sp = Savepoint::open(&path).unwrap();
        let revoked = GroupDecision {
            revoked: Some(Revocation {
                at: Utc::now(),
                file: "later.csv".into(),
            }),
            ..d
        };
        sp.put_decision(revoked.clone()).unwrap();
        sp.compact().unwrap();
        drop(sp);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.decisions["G-0123456789"], revoked);
        assert!(!loaded.decisions["G-0123456789"].holds());
        assert_eq!(lines(&path).len(), 3, "header, one pair, one decision");
    }

    #[test]
    fn other_versions_are_refused_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let mut v = serde_json::to_value(SavepointFile::new()).unwrap();
        let future = VERSION + 1;
        v["version"] = serde_json::json!(future);
        // As one document, and as a journal header line followed by entries.
        let header = serde_json::json!({"version": future, "tool_version": "9", "created_at": "2030-01-01T00:00:00Z"});
        for text in [
            serde_json::to_string_pretty(&v).unwrap(),
            serde_json::to_string(&v).unwrap(),
            format!("{header}\n{{\"future\": 1}}\n"),
        ] {
            fs::write(&path, &text).unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, SavepointError::Version { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("version {future}")),
                "{err}"
            );
            assert_eq!(AppError::from(err).exit_code(), 65);
        }
    }

    #[test]
    fn second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("savepoint.json");
        let first = Savepoint::open(&path).unwrap();
        let err = Savepoint::open(&path).unwrap_err();
        assert!(matches!(err, SavepointError::Locked { .. }));
        let msg = err.to_string();
        assert!(msg.contains("another devrev-merge run"), "{msg}");
        assert!(
            msg.contains(&std::process::id().to_string()),
            "names the holder: {msg}"
        );
        assert_eq!(AppError::from(err).exit_code(), 73);
        drop(first);
        Savepoint::open(&path).expect("free again once the first run ends");
    }
}
