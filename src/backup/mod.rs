//! Taking one pair's backup (DESIGN §6, §7): list everything DevRev holds about the pair,
//! check free space, write it into a `.partial` folder, verify it, rename it into place.
//!
//! Layout (`backups/<safe email>_<YYYYMMDD_HHMMSS>/`, see `manifest.rs` and docs/files.md):
//! `metadata.json`, `tickets.json`, `conversations.json`,
//! `conversations/<TKT-n | conversation display id>/messages.json` and `.../attachments/`,
//! and `verification.json` with the size and sha256 of every file and the counts.
//!
//! Pairs share tickets and conversations, so one run's backups share what they read
//! (`reuse.rs`): an attachment is located and downloaded once per run and linked (or copied)
//! into the next folders that need it, checked against its sha256; a timeline read earlier in
//! the run is reused while younger than [`FRESH_FOR`]. Each folder still stands alone.

pub mod layout;
pub mod manifest;
pub mod reuse;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::detect::Pair;
use crate::devrev::types::{ArtifactSummary, Conversation, RevUser, Work};
use crate::devrev::{ApiError, DevRevClient};
use crate::fsutil;
use crate::options::BackupScope;

pub use layout::FAKE_FREE_BYTES_ENV;
use manifest::*;
pub use reuse::{FRESH_FOR, RunReads, fresh_for};

use crate::validate::{ListReads, Listing};

/// What a backup needs: the pair and both contacts as `Validate` just read them.
#[derive(Debug, Clone, Copy)]
pub struct BackupInput<'a> {
    pub pair: &'a Pair,
    pub primary: &'a RevUser,
    pub secondary: &'a RevUser,
    pub run_id: &'a str,
    pub scope: BackupScope,
    /// The backups folder (`--backup-dir`).
    pub root: &'a Path,
    /// The run's shared lists: an answer another pair's list already holds may stand in for
    /// this backup's (`validate::ListReads`; `ListReads::none()` lists anew).
    pub lists: &'a ListReads,
    /// What this run has already read (one per run, shared by every pair's backup), so a
    /// ticket, conversation or attachment several pairs share is read once; `None` reads
    /// everything afresh.
    pub reads: Option<&'a RunReads>,
}

/// A finished, verified backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub dir: PathBuf,
    pub tickets: usize,
    pub timeline_entries: usize,
    pub attachments: usize,
    pub conversations: usize,
    pub bytes: u64,
    pub warnings: Vec<String>,
    /// The contacts whose CSV `TICKET_COUNT` differs from the tickets DevRev listed
    /// ("secondary REVU-x: TICKET_COUNT 0, DevRev lists 1"). Common (exports count
    /// differently and age), so the run sums them in one line instead of warning per pair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ticket_counts_differ: Vec<String>,
    /// Of `tickets`' and `conversations`' timelines, those taken from a read earlier in this
    /// run (younger than [`FRESH_FOR`]) instead of listed again. Left out when 0, so the
    /// savepoint's pinned format is unchanged for a backup that reused nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timelines_reused: usize,
    /// Of `attachments`, those linked or copied from an earlier backup of this run (checked
    /// against its recorded sha256) instead of located and downloaded again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attachments_reused: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The one summary line for the reads a run spared: "3 timelines and 5 attachments reused
/// from earlier backups in this run".
pub fn reused_line(timelines: usize, attachments: usize) -> String {
    format!(
        "{} and {} reused from earlier backups in this run",
        crate::output::count(timelines as u64, "timeline", "timelines"),
        crate::output::count(attachments as u64, "attachment", "attachments")
    )
}

/// The one summary line for [`BackupSummary::ticket_counts_differ`] over a run.
pub fn ticket_counts_line(contacts: usize) -> String {
    format!(
        "TICKET_COUNT differs from what DevRev lists for {}: the export counts differently or \
         is older; each backup holds what DevRev listed (the report names them)",
        crate::output::count(contacts as u64, "contact", "contacts")
    )
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Not enough free disk space: stops the whole run (exit 73) before anything is written.
    #[error("not enough free space in {dir}: about {needed} bytes needed, {available} available")]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    /// The backup was written but does not verify; the pair must not be merged.
    #[error("backup verification failed: {0}")]
    Verification(String),
}

/// How a backup failure ends a command: the feature maps its own error into the top-level one.
impl From<BackupError> for crate::error::AppError {
    fn from(e: BackupError) -> Self {
        use crate::error::AppError;
        match e {
            BackupError::Api(e) => AppError::Api(e),
            e @ BackupError::NoSpace { .. } => AppError::CantCreate(format!(
                "{e}. Nothing was written for this pair: free some space or choose another --backup-dir."
            )),
            e @ BackupError::Io { .. } => AppError::CantCreate(e.to_string()),
            e @ BackupError::Verification(_) => AppError::SomeFailed(e.to_string()),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// Knobs of [`take_with`] that tests drive directly.
#[derive(Debug, Clone, Default)]
pub struct TakeOptions {
    /// Free bytes to assume instead of asking the file system (and instead of
    /// [`FAKE_FREE_BYTES_ENV`]).
    pub free_space_override: Option<u64>,
}

/// Takes, writes and verifies one pair's backup; returns only once the folder is complete
/// and renamed into place.
pub async fn take(
    client: &DevRevClient,
    input: BackupInput<'_>,
) -> Result<BackupSummary, BackupError> {
    take_with(client, input, &TakeOptions::default()).await
}

/// The tickets saved in a backup (`tickets.json`), as the API returned them.
pub fn load_tickets(dir: &Path) -> Result<Vec<Work>, BackupError> {
    load_json(&dir.join(TICKETS_FILE))
}

/// The secondary's conversations saved in a backup.
pub fn load_conversations(dir: &Path) -> Result<Vec<Conversation>, BackupError> {
    load_json(&dir.join(CONVERSATIONS_FILE))
}

/// The contacts and pair saved in a backup.
pub fn load_metadata(dir: &Path) -> Result<Metadata, BackupError> {
    load_json(&dir.join(METADATA_FILE))
}

fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BackupError> {
    let bytes = std::fs::read(path).map_err(io_err(format!("cannot read {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| BackupError::Io {
        context: format!("{} is not valid backup JSON", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

// ---- listing ---------------------------------------------------------------------------

/// One attachment to download.
#[derive(Debug, Clone)]
struct PlannedAttachment {
    id: String,
    name: Option<String>,
    mime: Option<String>,
    size: Option<u64>,
    /// A declared size that is no byte count, as DevRev sent it (`file.size: -1`).
    odd_size: Option<String>,
    /// Relative to the backup folder.
    path: String,
}

/// One ticket or conversation whose timeline is saved.
#[derive(Debug)]
struct PlannedObject {
    kind: ObjectKind,
    id: String,
    display_id: Option<String>,
    dir: String,
    entries: Arc<Vec<Value>>,
    /// The timeline came from an earlier read in this run.
    timeline_reused: bool,
    attachments: Vec<PlannedAttachment>,
}

/// Everything the API listed for the pair, in memory (JSON is small next to attachments).
#[derive(Debug)]
struct Listed {
    tickets: Vec<Value>,
    conversations: Vec<Value>,
    objects: Vec<PlannedObject>,
    tickets_with_timeline: usize,
    ticket_counts_differ: Vec<String>,
}

/// Keeps the first occurrence of each `id`: a list that changes while it is paged through
/// can repeat an item, and a repeated ticket would be counted twice.
fn dedupe_by_id(items: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|v| {
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            id.is_empty() || seen.insert(id)
        })
        .collect()
}

/// The artifacts an entry refers to: summaries, or bare ids.
fn entry_artifacts(entry: &Value, label: &str) -> Result<Vec<ArtifactSummary>, ApiError> {
    let Some(arr) = entry.get("artifacts").and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    arr.iter()
        .map(|a| match a {
            Value::String(id) => Ok(ArtifactSummary {
                id: id.clone(),
                ..Default::default()
            }),
            other => serde_json::from_value::<ArtifactSummary>(other.clone()).map_err(|e| {
                ApiError::Decode {
                    endpoint: "timeline-entries.list".into(),
                    reason: format!(
                        "an entry of {label} has an attachment reference without an id: {e}"
                    ),
                }
            }),
        })
        .collect()
}

/// A unique, safe folder or file name: `used` holds the names taken so far (lower-cased, so
/// a case-insensitive file system cannot merge two of them either).
fn unique_name(used: &mut BTreeSet<String>, wanted: String) -> String {
    let mut name = wanted.clone();
    let mut n = 2;
    while !used.insert(name.to_lowercase()) {
        name = format!("{wanted}-{n}");
        n += 1;
    }
    name
}

/// The last segment of a DON (`...:artifact/123` → `123`), for file names.
fn id_tail(id: &str) -> &str {
    id.rsplit(['/', ':']).find(|s| !s.is_empty()).unwrap_or(id)
}

/// An object's whole timeline: from an earlier read in this run while it is fresh, else
/// listed (and kept for the next backups). Returns the entries and whether they were reused.
async fn timeline(
    client: &DevRevClient,
    reads: Option<&RunReads>,
    id: &str,
) -> Result<(Arc<Vec<Value>>, bool), ApiError> {
    if let Some(entries) = reads.and_then(|r| r.timeline(id)) {
        tracing::debug!(object = %id, "timeline reused from an earlier read in this run");
        return Ok((entries, true));
    }
    // The read's start is its age: whatever DevRev wrote after it may be missing.
    let read_at = Instant::now();
    let entries: Vec<Value> = client.timeline_entries_as(id).await?;
    let entries = Arc::new(dedupe_by_id(entries));
    if let Some(r) = reads {
        r.keep_timeline(id, read_at, entries.clone());
    }
    Ok((entries, false))
}

/// An artifact's `file` by `artifacts.get`, once per run: an artifact never changes.
async fn artifact_file(
    client: &DevRevClient,
    reads: Option<&RunReads>,
    id: &str,
) -> Result<Option<crate::devrev::types::FileInfo>, ApiError> {
    if let Some(file) = reads.and_then(|r| r.artifact_file(id)) {
        return Ok(file);
    }
    let file = client.artifacts_get(id).await?.file;
    if let Some(r) = reads {
        r.keep_artifact_file(id, file.clone());
    }
    Ok(file)
}

async fn plan_object(
    client: &DevRevClient,
    reads: Option<&RunReads>,
    kind: ObjectKind,
    id: &str,
    display_id: Option<String>,
    own_artifacts: Vec<ArtifactSummary>,
    used_dirs: &mut BTreeSet<String>,
) -> Result<PlannedObject, ApiError> {
    let label = display_id.clone().unwrap_or_else(|| id.to_string());
    let (entries, timeline_reused) = timeline(client, reads, id).await?;
    let dir = format!(
        "{OBJECTS_DIR}/{}",
        unique_name(used_dirs, fsutil::safe_component(&label, 100))
    );

    let mut summaries = own_artifacts;
    for e in entries.iter() {
        summaries.extend(entry_artifacts(e, &label).map_err(|e| client.scrub_error(e))?);
    }
    let mut seen = BTreeSet::new();
    let mut used_files = BTreeSet::new();
    let mut attachments = Vec::new();
    for s in summaries {
        if s.id.is_empty() || !seen.insert(s.id.clone()) {
            continue;
        }
        let mut file = s.file.clone().unwrap_or_default();
        // The embedded summary is enough when it carries the size; otherwise one
        // artifacts.get for name and size (the check after the download needs the size).
        if file.size.is_none()
            && let Some(f) = artifact_file(client, reads, &s.id).await?
        {
            file.size = f.size;
            file.odd_size = f.odd_size.or(file.odd_size);
            file.name = file.name.or(f.name);
            file.mime = file.mime.or(f.mime);
        }
        let safe = fsutil::safe_component(file.name.as_deref().unwrap_or("attachment"), 120);
        let wanted = format!("{}_{safe}", fsutil::safe_component(id_tail(&s.id), 60));
        let fname = unique_name(&mut used_files, wanted);
        attachments.push(PlannedAttachment {
            path: format!("{dir}/{ATTACHMENTS_DIR}/{fname}"),
            id: s.id,
            name: file.name,
            mime: file.mime,
            size: file.size,
            odd_size: file.odd_size.filter(|_| file.size.is_none()),
        });
    }
    Ok(PlannedObject {
        kind,
        id: id.to_string(),
        display_id,
        dir,
        entries,
        timeline_reused,
        attachments,
    })
}

async fn list_everything(
    client: &DevRevClient,
    input: &BackupInput<'_>,
) -> Result<Listed, ApiError> {
    let primary = input.primary.id.as_str();
    let secondary = input.secondary.id.as_str();
    // One list for both contacts: a ticket naming both comes back once instead of twice.
    let tickets: Vec<Value> = input
        .lists
        .list(client, Listing::Tickets, &[primary, secondary])
        .await?;
    let tickets = dedupe_by_id(tickets);
    let works: Vec<Work> = tickets
        .iter()
        .map(|t| client.decode::<Work>("works.list", t.clone()))
        .collect::<Result<_, _>>()?;

    let mut ticket_counts_differ = Vec::new();
    for (role, contact, user) in [
        ("primary", &input.pair.primary, input.primary),
        ("secondary", &input.pair.secondary, input.secondary),
    ] {
        let listed = works
            .iter()
            .filter(|w| w.reported_by.iter().any(|u| u.id == user.id))
            .count() as u64;
        if let Some(csv) = contact.ticket_count
            && csv != listed
        {
            ticket_counts_differ.push(format!(
                "{role} {}: TICKET_COUNT {csv}, DevRev lists {listed}",
                user.display_id.as_deref().unwrap_or(&user.id)
            ));
        }
    }

    let mut used_dirs = BTreeSet::new();
    let mut objects = Vec::new();
    for w in &works {
        let covered = match input.scope {
            BackupScope::Both => true,
            BackupScope::Secondary => w.reported_by.iter().any(|u| u.id == secondary),
        };
        if covered {
            objects.push(
                plan_object(
                    client,
                    input.reads,
                    ObjectKind::Ticket,
                    &w.id,
                    w.display_id.clone(),
                    w.artifacts.clone(),
                    &mut used_dirs,
                )
                .await?,
            );
        }
    }
    let tickets_with_timeline = objects.len();

    let conversations: Vec<Value> = input
        .lists
        .list(client, Listing::Conversations, &[secondary])
        .await?;
    let conversations = dedupe_by_id(conversations);
    for c in &conversations {
        let conv: Conversation = client.decode("conversations.list", c.clone())?;
        let own = match c.get("artifacts") {
            Some(_) => entry_artifacts(c, conv.label()).map_err(|e| client.scrub_error(e))?,
            None => vec![],
        };
        objects.push(
            plan_object(
                client,
                input.reads,
                ObjectKind::Conversation,
                &conv.id,
                conv.display_id.clone(),
                own,
                &mut used_dirs,
            )
            .await?,
        );
    }
    Ok(Listed {
        tickets,
        conversations,
        objects,
        tickets_with_timeline,
        ticket_counts_differ,
    })
}

// ---- writing ---------------------------------------------------------------------------

/// Removes the `.partial` folder unless the backup finished: on an error, and also when the
/// future is dropped (Ctrl-C), so only a killed process leaves a leftover for the next run.
struct PartialGuard {
    path: Option<PathBuf>,
}

impl Drop for PartialGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take()
            && let Err(e) = std::fs::remove_dir_all(&p)
        {
            tracing::warn!(folder = %p.display(), error = %e, "cannot remove an unfinished backup folder; the next backup run removes it");
        }
    }
}

fn to_json_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}

/// Takes one pair's backup with explicit knobs; see [`take`].
pub async fn take_with(
    client: &DevRevClient,
    input: BackupInput<'_>,
    opts: &TakeOptions,
) -> Result<BackupSummary, BackupError> {
    // Milliseconds: a restore undoes pairs newest first, and many backups share a second.
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let stamp = fsutil::stamp();
    let listed = list_everything(client, &input).await?;
    let json_files = render_json_files(&input, &listed, &created_at);
    check_space(&input, opts, &json_files, &listed)?;

    let (_lock, removed) = layout::lock_and_clean(input.root).map_err(io_err(format!(
        "cannot prepare the backups folder {}",
        input.root.display()
    )))?;
    for r in &removed {
        tracing::info!(folder = %r.display(), "removed the leftover of an interrupted backup");
    }
    let base = layout::base_name(&input.pair.email, &stamp);
    let (partial, name) = layout::claim_partial(input.root, &base).map_err(io_err(format!(
        "cannot create a backup folder in {}",
        input.root.display()
    )))?;
    let mut guard = PartialGuard {
        path: Some(partial.clone()),
    };

    let mut files = write_json_files(&partial, &json_files)?;
    drop(json_files);
    let mut warnings = unknown_field_warnings(input.primary, input.secondary);
    let mut attachments = Attachments {
        client,
        reads: input.reads,
        partial: &partial,
        files: &mut files,
        warnings: &mut warnings,
        here: BTreeMap::new(),
        reused: 0,
    };
    let objects = attachments.download_all(&listed).await?;
    let (here, attachments_reused) = (attachments.here, attachments.reused);
    let counts = Counts {
        tickets: listed.tickets.len(),
        tickets_with_timeline: listed.tickets_with_timeline,
        conversations: listed.conversations.len(),
        timeline_entries: objects.iter().map(|o| o.timeline_entries).sum(),
        attachments: objects.iter().map(|o| o.attachments.len()).sum(),
        timelines_reused: listed.objects.iter().filter(|o| o.timeline_reused).count(),
        attachments_reused,
    };
    let bytes = files.iter().map(|f| f.size).sum();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        run_id: input.run_id.into(),
        created_at,
        email: input.pair.email.clone(),
        primary_id: input.primary.id.clone(),
        secondary_id: input.secondary.id.clone(),
        scope: input.scope,
        counts: counts.clone(),
        objects,
        files,
        warnings: warnings.clone(),
    };
    fsutil::write_json_atomic(&partial.join(MANIFEST_FILE), &manifest).map_err(io_err(format!(
        "cannot write {MANIFEST_FILE} in {}",
        partial.display()
    )))?;

    // Read everything back before the folder may look complete.
    let report = verify::check_dir(&partial);
    if !report.ok() {
        return Err(BackupError::Verification(report.problems.join("; ")));
    }
    let dir = layout::finalize(&partial, input.root, &name).map_err(io_err(format!(
        "cannot rename {} into place",
        partial.display()
    )))?;
    guard.path = None;
    // Only a finished, verified backup is a source for the next backups' attachments.
    if let Some(reads) = input.reads {
        reads.keep_saved(here.into_iter().map(|(id, mut f)| {
            f.path = dir.join(&f.path);
            (id, f)
        }));
    }
    for w in &warnings {
        tracing::warn!(email = %input.pair.email, "{w}");
    }
    for d in &listed.ticket_counts_differ {
        tracing::debug!(email = %input.pair.email, "{d} (the backup holds what DevRev listed)");
    }
    // The commands print one line per pair; the log file keeps this detail.
    tracing::debug!(
        dir = %dir.display(),
        tickets = counts.tickets,
        timeline_entries = counts.timeline_entries,
        attachments = counts.attachments,
        conversations = counts.conversations,
        timelines_reused = counts.timelines_reused,
        attachments_reused = counts.attachments_reused,
        bytes,
        "backup written and verified"
    );
    Ok(BackupSummary {
        dir,
        tickets: counts.tickets,
        timeline_entries: counts.timeline_entries,
        attachments: counts.attachments,
        conversations: counts.conversations,
        bytes,
        warnings,
        ticket_counts_differ: listed.ticket_counts_differ.clone(),
        timelines_reused: counts.timelines_reused,
        attachments_reused: counts.attachments_reused,
    })
}

/// Every JSON file of the backup, rendered up front so its size is known exactly for the
/// space check.
fn render_json_files(
    input: &BackupInput<'_>,
    listed: &Listed,
    created_at: &str,
) -> Vec<(String, Vec<u8>)> {
    let metadata = Metadata {
        format: FORMAT_VERSION,
        tool: env!("CARGO_PKG_NAME").into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        run_id: input.run_id.into(),
        created_at: created_at.to_string(),
        scope: input.scope,
        pair: input.pair.clone(),
        primary_id: input.primary.id.clone(),
        secondary_id: input.secondary.id.clone(),
        primary: input.primary.clone(),
        secondary: input.secondary.clone(),
    };
    let mut json_files: Vec<(String, Vec<u8>)> = vec![
        (METADATA_FILE.into(), to_json_bytes(&metadata)),
        (TICKETS_FILE.into(), to_json_bytes(&listed.tickets)),
        (
            CONVERSATIONS_FILE.into(),
            to_json_bytes(&listed.conversations),
        ),
    ];
    for o in &listed.objects {
        let messages = Messages {
            object: o.id.clone(),
            object_display_id: o.display_id.clone(),
            object_kind: o.kind,
            timeline_entries: o.entries.to_vec(),
        };
        json_files.push((
            format!("{}/{MESSAGES_FILE}", o.dir),
            to_json_bytes(&messages),
        ));
    }
    json_files
}

/// Free space, before anything is written.
fn check_space(
    input: &BackupInput<'_>,
    opts: &TakeOptions,
    json_files: &[(String, Vec<u8>)],
    listed: &Listed,
) -> Result<(), BackupError> {
    let all_attachments = || listed.objects.iter().flat_map(|o| o.attachments.iter());
    // Saturating: a hostile `file.size` near u64::MAX must read as "too big", never wrap.
    let known: u64 = json_files
        .iter()
        .map(|(_, b)| b.len() as u64)
        .chain(all_attachments().filter_map(|a| a.size))
        .fold(0, u64::saturating_add);
    let unknown = all_attachments().filter(|a| a.size.is_none()).count() as u64;
    let needed = layout::required_space(known, unknown);
    let available = match opts.free_space_override {
        Some(v) => v,
        None => layout::free_space(input.root).map_err(io_err(format!(
            "cannot tell the free space in {}",
            input.root.display()
        )))?,
    };
    if available < needed {
        return Err(BackupError::NoSpace {
            dir: input.root.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Writes the rendered JSON files into the partial folder; returns their manifest entries.
fn write_json_files(
    partial: &Path,
    json_files: &[(String, Vec<u8>)],
) -> Result<Vec<FileEntry>, BackupError> {
    let mut files = Vec::with_capacity(json_files.len());
    for (rel, bytes) in json_files {
        fsutil::write_private_atomic(&partial.join(rel), bytes).map_err(io_err(format!(
            "cannot write {rel} in {}",
            partial.display()
        )))?;
        files.push(FileEntry {
            path: rel.clone(),
            size: bytes.len() as u64,
            sha256: fsutil::sha256_hex(Sha256::new_with_prefix(bytes)),
        });
    }
    Ok(files)
}

/// Puts every attachment of one backup into its partial folder: from this backup or an
/// earlier one of the run where it already holds the artifact (linked or copied, checked
/// against the recorded sha256), else located and downloaded.
struct Attachments<'b> {
    client: &'b DevRevClient,
    reads: Option<&'b RunReads>,
    partial: &'b Path,
    files: &'b mut Vec<FileEntry>,
    warnings: &'b mut Vec<String>,
    /// Artifact id -> its file in this backup (path relative to the folder).
    here: BTreeMap<String, reuse::SavedFile>,
    /// Attachments taken from an earlier backup of the run.
    reused: usize,
}

impl Attachments<'_> {
    /// Every attachment, adding its file entry (and a warning where DevRev declared no
    /// size); returns the manifest's timeline entries.
    async fn download_all(&mut self, listed: &Listed) -> Result<Vec<ObjectEntry>, BackupError> {
        let mut objects = Vec::with_capacity(listed.objects.len());
        for o in &listed.objects {
            let label = o.display_id.as_deref().unwrap_or(&o.id);
            let mut entries = Vec::new();
            for a in &o.attachments {
                let (size, sha) = self.one(a, label).await?;
                match (&a.size, &a.odd_size) {
                    (Some(_), _) => {}
                    (None, Some(odd)) => self.warnings.push(format!(
                        "attachment {} of {label}: DevRev's file.size is {odd}, not a byte count, so only the checksum of the {size} bytes received is recorded",
                        a.id
                    )),
                    (None, None) => self.warnings.push(format!(
                        "attachment {} of {label}: DevRev declared no size, so only the checksum of the {size} bytes received is recorded",
                        a.id
                    )),
                }
                self.here.entry(a.id.clone()).or_insert(reuse::SavedFile {
                    path: PathBuf::from(&a.path),
                    size,
                    sha256: sha.clone(),
                });
                self.files.push(FileEntry {
                    path: a.path.clone(),
                    size,
                    sha256: sha,
                });
                entries.push(AttachmentEntry {
                    artifact_id: a.id.clone(),
                    name: a.name.clone(),
                    mime: a.mime.clone(),
                    path: a.path.clone(),
                    declared_size: a.size,
                });
            }
            objects.push(ObjectEntry {
                kind: o.kind,
                id: o.id.clone(),
                display_id: o.display_id.clone(),
                dir: o.dir.clone(),
                timeline_entries: o.entries.len(),
                attachments: entries,
            });
        }
        Ok(objects)
    }

    /// One attachment into the partial folder; returns (size, sha256).
    async fn one(
        &mut self,
        a: &PlannedAttachment,
        label: &str,
    ) -> Result<(u64, String), BackupError> {
        let dest = self.partial.join(&a.path);
        // The same artifact twice in this backup (two timelines refer to it).
        if let Some(f) = self.here.get(&a.id) {
            let src = reuse::SavedFile {
                path: self.partial.join(&f.path),
                ..f.clone()
            };
            if reuse::link_or_copy_verified(&src, &dest).is_ok() {
                return Ok((src.size, src.sha256));
            }
        }
        if let Some(reads) = self.reads
            && let Some(src) = reads.saved(&a.id)
        {
            // Its declared size is the same artifact's, but a mismatch is DevRev's to report.
            let fits = a.size.is_none_or(|d| d == src.size);
            match fits.then(|| reuse::link_or_copy_verified(&src, &dest)) {
                Some(Ok(())) => {
                    reads.note_attachment_reused();
                    self.reused += 1;
                    tracing::debug!(artifact = %a.id, source = %src.path.display(), "attachment taken from an earlier backup of this run");
                    return Ok((src.size, src.sha256));
                }
                Some(Err(e)) => {
                    tracing::debug!(artifact = %a.id, error = %e, "the earlier copy of an attachment cannot be reused; downloading it again");
                    reads.forget_saved(&a.id);
                }
                None => reads.forget_saved(&a.id),
            }
        }
        download_attachment(self.client, self.partial, a, label).await
    }
}

/// A warning for each contact whose copy lacks fields only DevRev's beta schema has (an
/// answer by the public schema): unknown, so the backup cannot hold them and a restore
/// cannot recreate them. Said, never passed off as "none".
fn unknown_field_warnings(primary: &RevUser, secondary: &RevUser) -> Vec<String> {
    [("primary", primary), ("secondary", secondary)]
        .into_iter()
        .filter_map(|(role, u)| {
            let unknown = u.unknown_fields();
            (!unknown.is_empty()).then(|| {
                format!(
                    "DevRev's answer for the {role} contact does not carry {} (public-schema \
                     answer): unknown, so this backup does not hold them and a restore cannot \
                     recreate them",
                    unknown.join(", ")
                )
            })
        })
        .collect()
}

/// Locates and downloads one attachment into the partial folder; returns (size, sha256).
/// The URL is located right before the download because it expires; a 403 (expired) gets
/// one more `artifacts.locate`.
async fn download_attachment(
    client: &DevRevClient,
    partial: &Path,
    a: &PlannedAttachment,
    label: &str,
) -> Result<(u64, String), BackupError> {
    let dest = partial.join(&a.path);
    let folder = dest.parent().unwrap_or(partial).to_path_buf();
    fsutil::create_private_dir(&folder)
        .map_err(io_err(format!("cannot create {}", folder.display())))?;
    // A private temp file in the same folder, renamed over the final name once checked.
    let tmp = fsutil::private_tempfile_in(&folder, ".dl-").map_err(io_err(format!(
        "cannot create a file in {}",
        folder.display()
    )))?;
    let what = format!("attachment {} of {label}", a.id);
    let mut relocated = false;
    let (size, sha) = loop {
        let located = client.artifacts_locate(&a.id).await?;
        match client.download_to(&located.url, tmp.path(), a.size).await {
            Ok(done) => break done,
            // The disk, not DevRev: stops the run (exit 73); the temp file goes with `tmp`.
            Err(ApiError::LocalWrite { what, reason }) => {
                return Err(BackupError::Io {
                    context: format!("cannot write {what}"),
                    source: std::io::Error::other(reason),
                });
            }
            Err(e) if e.status() == Some(403) && !relocated => {
                tracing::debug!(artifact = %a.id, "download URL expired; locating it again");
                relocated = true;
            }
            Err(e) => {
                return Err(BackupError::Api(ApiError::Download {
                    what,
                    reason: e.to_string(),
                }));
            }
        }
    };
    if let Some(declared) = a.size
        && declared != size
    {
        return Err(BackupError::Api(ApiError::Download {
            what,
            reason: format!("received {size} bytes, DevRev says the file has {declared}"),
        }));
    }
    tmp.persist(&dest)
        .map_err(|e| e.error)
        .map_err(io_err(format!("cannot save {}", dest.display())))?;
    let _ = fsutil::sync_dir(&folder);
    Ok((size, sha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_tail_takes_the_last_segment() {
        assert_eq!(id_tail("don:core:dvrv-us-1:devo/1:artifact/77"), "77");
        assert_eq!(id_tail("ARTIFACT-9"), "ARTIFACT-9");
        assert_eq!(id_tail("x/"), "x");
    }

    #[test]
    fn unique_names_ignore_case() {
        let mut used = BTreeSet::new();
        assert_eq!(unique_name(&mut used, "TKT-1".into()), "TKT-1");
        assert_eq!(unique_name(&mut used, "tkt-1".into()), "tkt-1-2");
        assert_eq!(unique_name(&mut used, "TKT-1".into()), "TKT-1-3");
    }

    #[test]
    fn entry_artifacts_accept_ids_and_summaries() {
        let e = json!({"artifacts": ["a/1", {"id": "a/2", "file": {"size": 3}}]});
        let a = entry_artifacts(&e, "TKT-1").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].file.as_ref().unwrap().size, Some(3));
        assert!(entry_artifacts(&json!({"artifacts": [{"x": 1}]}), "TKT-1").is_err());
        assert!(entry_artifacts(&json!({}), "TKT-1").unwrap().is_empty());
    }
}
