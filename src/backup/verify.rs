//! Checking a backup folder against its `verification.json`: every listed file present with
//! the same size and sha256, no unlisted files, and counts that agree with the files.
//!
//! Used right after a backup is written (the saga's VerifyBackup step: any problem fails the
//! pair) and by `--verify-backups` for folders written earlier.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::options::BackupScope;

use super::manifest::*;

/// The outcome of checking one folder. `problems` empty means it verifies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirReport {
    /// Each one a reason the folder cannot be trusted.
    pub problems: Vec<String>,
    /// Worth knowing, not a failure (loose permissions, the CSV count warning).
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

impl DirReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Re-reads every file listed in `verification.json` and compares sizes, sha256 and counts.
/// `Ok(())` means the folder holds exactly what was listed; `Err` gives every reason.
pub fn verify_dir(dir: &Path) -> Result<(), String> {
    let report = check_dir(dir);
    if report.ok() {
        Ok(())
    } else {
        Err(report.problems.join("; "))
    }
}

/// The largest `verification.json` read: about 2 KB per file listed, so 64 MiB is tens of
/// thousands of files, far past any real pair.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Checks one backup folder and says everything that is wrong with it.
pub fn check_dir(dir: &Path) -> DirReport {
    let mut r = DirReport::default();
    let manifest_path = dir.join(MANIFEST_FILE);
    // The manifest is this tool's own small file: a link (to /dev/zero, say) or a huge file
    // is a tampered backup, not something to read into memory.
    match fs::symlink_metadata(&manifest_path) {
        Ok(m) if !m.file_type().is_file() => {
            r.problems.push(format!(
                "{MANIFEST_FILE} is not a regular file (a symbolic link?)"
            ));
            return r;
        }
        Ok(m) if m.len() > MAX_MANIFEST_BYTES => {
            r.problems.push(format!(
                "{MANIFEST_FILE} is {} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})",
                m.len()
            ));
            return r;
        }
        _ => {}
    }
    let raw = match fs::read(&manifest_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.problems.push(format!("{MANIFEST_FILE} is missing"));
            return r;
        }
        Err(e) => {
            r.problems
                .push(format!("{MANIFEST_FILE} cannot be read: {e}"));
            return r;
        }
    };
    let manifest: Manifest = match serde_json::from_slice(&raw) {
        Ok(m) => m,
        Err(e) => {
            r.problems
                .push(format!("{MANIFEST_FILE} does not parse: {e}"));
            return r;
        }
    };
    if manifest.format != FORMAT_VERSION {
        r.problems.push(format!(
            "{MANIFEST_FILE} has format {}, this tool reads format {FORMAT_VERSION}",
            manifest.format
        ));
        r.manifest = Some(manifest);
        return r;
    }
    r.warnings.extend(manifest.warnings.iter().cloned());

    // 1. Every listed file: a safe relative path, a regular file, same size, same sha256.
    let mut listed: BTreeMap<String, &FileEntry> = BTreeMap::new();
    let mut bad: BTreeSet<String> = BTreeSet::new();
    for f in &manifest.files {
        if !is_safe_relative(&f.path) {
            r.problems
                .push(format!("{MANIFEST_FILE} lists an unsafe path {:?}", f.path));
            bad.insert(f.path.clone());
            continue;
        }
        if listed.insert(f.path.clone(), f).is_some() {
            r.problems
                .push(format!("{MANIFEST_FILE} lists {} twice", f.path));
        }
        if let Some(p) = check_file(dir, f, &mut r.warnings) {
            r.problems.push(p);
            bad.insert(f.path.clone());
        }
    }

    // 2. Nothing on disk that the manifest does not list.
    let mut on_disk = Vec::new();
    if let Err(e) = walk(dir, dir, &mut on_disk) {
        r.problems.push(format!("cannot list the folder: {e}"));
    }
    for (rel, kind) in &on_disk {
        if rel == MANIFEST_FILE || listed.contains_key(rel) {
            continue;
        }
        match kind {
            EntryKind::File => r
                .problems
                .push(format!("{rel}: file not listed in {MANIFEST_FILE}")),
            EntryKind::Other => r.problems.push(format!(
                "{rel}: not a regular file and not listed in {MANIFEST_FILE}"
            )),
        }
    }

    // 3. Counts and completeness, from the files that passed step 1.
    check_counts(dir, &manifest, &listed, &bad, &mut r.problems);
    r.manifest = Some(manifest);
    r
}

/// A manifest path is trusted only if it stays inside the folder: relative, made of plain
/// names (no `..`, no `/` root, no `.`), not the manifest itself.
fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && p != MANIFEST_FILE
        && !p.contains('\0')
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn check_file(dir: &Path, f: &FileEntry, warnings: &mut Vec<String>) -> Option<String> {
    let path = dir.join(&f.path);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("{}: listed in {MANIFEST_FILE} but missing", f.path));
        }
        Err(e) => return Some(format!("{}: cannot be read: {e}", f.path)),
    };
    if !meta.file_type().is_file() {
        return Some(format!("{}: is not a regular file", f.path));
    }
    if meta.len() != f.size {
        return Some(format!(
            "{}: {} bytes on disk, {MANIFEST_FILE} says {} (truncated or changed)",
            f.path,
            meta.len(),
            f.size
        ));
    }
    if let Ok(Some(why)) = crate::platform::open_to_others(&path, &meta) {
        warnings.push(format!(
            "{}: readable by others ({why}); it holds customer data",
            f.path
        ));
    }
    match sha256_file(&path) {
        Ok((n, sha)) if n == f.size && sha.eq_ignore_ascii_case(&f.sha256) => None,
        Ok((n, _)) if n != f.size => Some(format!("{}: changed while being read", f.path)),
        Ok(_) => Some(format!(
            "{}: sha256 differs from {MANIFEST_FILE} (the content changed)",
            f.path
        )),
        Err(e) => Some(format!("{}: cannot be read: {e}", f.path)),
    }
}

/// Streams a file through sha256; returns (bytes, lower-case hex).
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = file.read(&mut buf)?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, crate::fsutil::sha256_hex(hasher)))
}

enum EntryKind {
    File,
    Other,
}

/// Every non-directory under `dir`, relative and `/`-separated. Symlinks are not followed.
fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, EntryKind)>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            walk(base, &path, out)?;
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push((
            rel,
            if ft.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            },
        ));
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, rel: &str) -> Result<T, String> {
    let bytes = fs::read(dir.join(rel)).map_err(|e| format!("{rel}: cannot be read: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{rel}: does not parse: {e}"))
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| {
            v.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn names(v: &Value, contact: &str) -> bool {
    v.get("reported_by")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|u| u.get("id").and_then(Value::as_str) == Some(contact))
        })
}

/// Cross-checks the manifest's counts against the files and the files against each other.
fn check_counts(
    dir: &Path,
    m: &Manifest,
    listed: &BTreeMap<String, &FileEntry>,
    bad: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    // A file that failed its checksum (or is missing) already has its problem; reading it
    // again would only add noise.
    let usable = |rel: &str| listed.contains_key(rel) && !bad.contains(rel);

    for required in [METADATA_FILE, TICKETS_FILE, CONVERSATIONS_FILE] {
        if !listed.contains_key(required) {
            problems.push(format!("{required} is not listed in {MANIFEST_FILE}"));
        }
    }
    if usable(METADATA_FILE) {
        match read_json::<Metadata>(dir, METADATA_FILE) {
            Ok(meta) => {
                if meta.primary.id != m.primary_id || meta.secondary.id != m.secondary_id {
                    problems.push(format!(
                        "{METADATA_FILE} names other contacts than {MANIFEST_FILE}"
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    let tickets = usable(TICKETS_FILE)
        .then(|| read_counted(dir, TICKETS_FILE, "tickets", m.counts.tickets, problems))
        .flatten();
    let conversations = usable(CONVERSATIONS_FILE)
        .then(|| {
            let n = m.counts.conversations;
            read_counted(dir, CONVERSATIONS_FILE, "conversations", n, problems)
        })
        .flatten();
    let (ticket_objects, conv_objects) = timelines_by_kind(m, problems);
    check_completeness(
        m,
        tickets.as_deref(),
        conversations.as_deref(),
        &ticket_objects,
        &conv_objects,
        problems,
    );
    check_objects(dir, m, listed, bad, problems);
}

/// Reads a JSON array of `noun` that the manifest says holds `expected` items.
fn read_counted(
    dir: &Path,
    rel: &str,
    noun: &str,
    expected: usize,
    problems: &mut Vec<String>,
) -> Option<Vec<Value>> {
    match read_json::<Vec<Value>>(dir, rel) {
        Ok(items) => {
            if items.len() != expected {
                problems.push(format!(
                    "{rel} holds {} {noun}, {MANIFEST_FILE} counts {expected}",
                    items.len()
                ));
            }
            Some(items)
        }
        Err(e) => {
            problems.push(e);
            None
        }
    }
}

/// The manifest's ticket and conversation timelines, checked against its counts.
fn timelines_by_kind<'m>(
    m: &'m Manifest,
    problems: &mut Vec<String>,
) -> (Vec<&'m ObjectEntry>, Vec<&'m ObjectEntry>) {
    let of_kind = |kind: ObjectKind| -> Vec<&ObjectEntry> {
        m.objects.iter().filter(|o| o.kind == kind).collect()
    };
    let ticket_objects = of_kind(ObjectKind::Ticket);
    let conv_objects = of_kind(ObjectKind::Conversation);
    if ticket_objects.len() != m.counts.tickets_with_timeline {
        problems.push(format!(
            "{MANIFEST_FILE} lists {} ticket timelines but counts {}",
            ticket_objects.len(),
            m.counts.tickets_with_timeline
        ));
    }
    if conv_objects.len() != m.counts.conversations {
        problems.push(format!(
            "{MANIFEST_FILE} lists {} conversation timelines but counts {} conversations",
            conv_objects.len(),
            m.counts.conversations
        ));
    }
    (ticket_objects, conv_objects)
}

/// Completeness: every ticket the scope covers, and every conversation, has its timeline.
fn check_completeness(
    m: &Manifest,
    tickets: Option<&[Value]>,
    conversations: Option<&[Value]>,
    ticket_objects: &[&ObjectEntry],
    conv_objects: &[&ObjectEntry],
    problems: &mut Vec<String>,
) {
    if let Some(tickets) = tickets {
        let saved: BTreeSet<&str> = ticket_objects.iter().map(|o| o.id.as_str()).collect();
        let ids: BTreeSet<String> = ids_of(tickets).into_iter().collect();
        for t in tickets {
            let id = t.get("id").and_then(Value::as_str).unwrap_or("");
            let covered = match m.scope {
                BackupScope::Both => true,
                BackupScope::Secondary => names(t, &m.secondary_id),
            };
            if covered && !saved.contains(id) {
                let label = t.get("display_id").and_then(Value::as_str).unwrap_or(id);
                problems.push(format!("ticket {label} has no saved timeline"));
            }
        }
        for o in ticket_objects {
            if !ids.contains(&o.id) {
                problems.push(format!(
                    "timeline {} belongs to no ticket in {TICKETS_FILE}",
                    o.dir
                ));
            }
        }
    }
    if let Some(convs) = conversations {
        let saved: BTreeSet<&str> = conv_objects.iter().map(|o| o.id.as_str()).collect();
        for id in ids_of(convs) {
            if !saved.contains(id.as_str()) {
                problems.push(format!("conversation {id} has no saved timeline"));
            }
        }
    }
}

/// Every timeline folder: safe, listed once, its messages and attachments as counted.
fn check_objects(
    dir: &Path,
    m: &Manifest,
    listed: &BTreeMap<String, &FileEntry>,
    bad: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let mut entries_total = 0usize;
    let mut attachments_total = 0usize;
    let mut dirs = BTreeSet::new();
    for o in &m.objects {
        entries_total += o.timeline_entries;
        attachments_total += o.attachments.len();
        if !is_safe_relative(&o.dir) {
            problems.push(format!(
                "{MANIFEST_FILE} lists an unsafe folder {:?}",
                o.dir
            ));
            continue;
        }
        if !dirs.insert(o.dir.as_str()) {
            problems.push(format!("{MANIFEST_FILE} lists folder {} twice", o.dir));
        }
        check_messages(dir, o, listed, bad, problems);
        check_attachments(o, listed, problems);
    }
    if entries_total != m.counts.timeline_entries {
        problems.push(format!(
            "{MANIFEST_FILE} counts {} timeline entries but its timelines hold {entries_total}",
            m.counts.timeline_entries
        ));
    }
    if attachments_total != m.counts.attachments {
        problems.push(format!(
            "{MANIFEST_FILE} counts {} attachments but its timelines list {attachments_total}",
            m.counts.attachments
        ));
    }
}

/// One timeline's messages file: listed, of this object, with the counted entries.
fn check_messages(
    dir: &Path,
    o: &ObjectEntry,
    listed: &BTreeMap<String, &FileEntry>,
    bad: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let messages = format!("{}/{MESSAGES_FILE}", o.dir);
    if !listed.contains_key(&messages) {
        problems.push(format!("{messages} is not listed in {MANIFEST_FILE}"));
        return;
    }
    if bad.contains(&messages) {
        return;
    }
    match read_json::<Messages>(dir, &messages) {
        Ok(msg) => {
            if msg.object != o.id {
                problems.push(format!(
                    "{messages} is the timeline of {}, not {}",
                    msg.object, o.id
                ));
            }
            if msg.timeline_entries.len() != o.timeline_entries {
                problems.push(format!(
                    "{messages} holds {} timeline entries, {MANIFEST_FILE} counts {}",
                    msg.timeline_entries.len(),
                    o.timeline_entries
                ));
            }
        }
        Err(e) => problems.push(e),
    }
}

/// One timeline's attachments: as many files in its folder as counted, each one listed.
fn check_attachments(
    o: &ObjectEntry,
    listed: &BTreeMap<String, &FileEntry>,
    problems: &mut Vec<String>,
) {
    let prefix = format!("{}/{ATTACHMENTS_DIR}/", o.dir);
    let files_here = listed.keys().filter(|p| p.starts_with(&prefix)).count();
    if files_here != o.attachments.len() {
        problems.push(format!(
            "{}: {files_here} attachment files listed, {MANIFEST_FILE} counts {}",
            o.dir,
            o.attachments.len()
        ));
    }
    for a in &o.attachments {
        if !a.path.starts_with(&prefix) || !listed.contains_key(&a.path) {
            problems.push(format!(
                "attachment {} of {} is not a listed file in its folder",
                a.artifact_id, o.dir
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_that_is_a_link_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"{}").unwrap();
        if !crate::platform::tests::symlink_or_skip(&target, &dir.path().join(MANIFEST_FILE), false)
        {
            return;
        }
        let r = check_dir(dir.path());
        assert!(
            r.problems.iter().any(|p| p.contains("not a regular file")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn unsafe_manifest_paths_are_refused() {
        for p in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "./a",
            "",
            "a\\..\\b",
            MANIFEST_FILE,
        ] {
            assert!(!is_safe_relative(p), "{p:?}");
        }
        assert!(is_safe_relative("conversations/TKT-1/attachments/1_a.png"));
    }

    fn manifest_listing(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            tool_version: "0".into(),
            run_id: "r".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            email: "a@x.com".into(),
            primary_id: "p".into(),
            secondary_id: "s".into(),
            scope: BackupScope::Secondary,
            counts: Counts::default(),
            objects: vec![],
            files,
            warnings: vec![],
        }
    }

    #[test]
    fn a_manifest_cannot_point_outside_the_folder_or_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        fs::create_dir(&dir).unwrap();
        fs::write(tmp.path().join("secret"), b"outside").unwrap();
        let linked = crate::platform::tests::symlink_or_skip(
            &tmp.path().join("secret"),
            &dir.join("link"),
            false,
        );
        let (size, sha256) = sha256_file(&tmp.path().join("secret")).unwrap();
        let m = manifest_listing(vec![
            FileEntry {
                path: "../secret".into(),
                size,
                sha256: sha256.clone(),
            },
            FileEntry {
                path: "link".into(),
                size,
                sha256,
            },
        ]);
        fs::write(dir.join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        let r = check_dir(&dir);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("unsafe path \"../secret\"")),
            "{:?}",
            r.problems
        );
        assert!(
            !linked
                || r.problems
                    .iter()
                    .any(|p| p == "link: is not a regular file"),
            "{:?}",
            r.problems
        );
        assert!(!r.ok());
    }

    #[test]
    fn missing_manifest_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let r = check_dir(tmp.path());
        assert_eq!(r.problems, vec!["verification.json is missing".to_string()]);
    }
}
