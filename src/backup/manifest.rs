//! The format of a backup folder: file names and `verification.json`, shared by the writer
//! (`backup::take`) and the checker (`backup::verify`).

use serde::{Deserialize, Serialize};

use crate::options::BackupScope;

/// The manifest: sizes, checksums and counts of everything in the folder.
pub const MANIFEST_FILE: &str = "verification.json";
/// Both contacts as `rev-users.get` returned them, the pair, tool version, run id, time.
pub const METADATA_FILE: &str = "metadata.json";
/// Every ticket naming either contact in `reported_by`, as `works.list` returned them.
pub const TICKETS_FILE: &str = "tickets.json";
/// The secondary's conversations, as `conversations.list` returned them.
pub const CONVERSATIONS_FILE: &str = "conversations.json";
/// Folder holding one sub-folder per ticket or conversation.
pub const OBJECTS_DIR: &str = "conversations";
/// An object's whole timeline, inside its folder.
pub const MESSAGES_FILE: &str = "messages.json";
/// An object's attachment bytes, inside its folder.
pub const ATTACHMENTS_DIR: &str = "attachments";
/// Suffix of a folder still being written (or left by a crash): never a finished backup.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Lock file in the backups folder: writers hold it shared; leftover cleanup needs it
/// exclusively, so a backup being written by another process is never removed.
pub const LOCK_FILE: &str = ".backups.lock";

/// The version of this layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// `verification.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool_version: String,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The pair's normalized email.
    pub email: String,
    pub primary_id: String,
    pub secondary_id: String,
    pub scope: BackupScope,
    /// What the API listed when the backup was taken.
    pub counts: Counts,
    /// One entry per ticket or conversation whose timeline (and attachments) were saved.
    pub objects: Vec<ObjectEntry>,
    /// Every file of the folder except `verification.json` itself.
    pub files: Vec<FileEntry>,
    /// Things a person should know but that do not fail the backup (e.g. the CSV's
    /// `TICKET_COUNT` differing from the listed count).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Counts as the API listed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Tickets naming either contact (`tickets.json`).
    pub tickets: usize,
    /// Of those, the tickets whose timeline and attachments were saved (scope).
    pub tickets_with_timeline: usize,
    /// The secondary's conversations (`conversations.json`).
    pub conversations: usize,
    /// Timeline entries over all saved timelines.
    pub timeline_entries: usize,
    /// Attachment files over all saved objects.
    pub attachments: usize,
    /// Of the saved timelines, those taken from a read earlier in the same run (younger
    /// than `backup::FRESH_FOR`) instead of listed again. Absent (0) in older manifests.
    #[serde(default)]
    pub timelines_reused: usize,
    /// Of the attachment files, those linked or copied from an earlier backup of the same
    /// run (checked against its sha256) instead of located and downloaded again; each is a
    /// file of this folder all the same. Absent (0) in older manifests.
    #[serde(default)]
    pub attachments_reused: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Ticket,
    Conversation,
}

/// One saved timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub kind: ObjectKind,
    /// The object's DON.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    /// Folder relative to the backup, e.g. `conversations/TKT-12`.
    pub dir: String,
    /// Entries `timeline-entries.list` returned (all pages).
    pub timeline_entries: usize,
    pub attachments: Vec<AttachmentEntry>,
}

/// One saved attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentEntry {
    pub artifact_id: String,
    /// The file name DevRev gave (unsanitized, for a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// File relative to the backup.
    pub path: String,
    /// `file.size` as DevRev reported it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_size: Option<u64>,
}

/// Size and checksum of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup folder, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// `messages.json`: one object's whole timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_display_id: Option<String>,
    pub object_kind: ObjectKind,
    /// Every entry as the API returned it (comments, change events, unknown types).
    pub timeline_entries: Vec<serde_json::Value>,
}

/// `metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub format: u32,
    pub tool: String,
    pub tool_version: String,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub scope: BackupScope,
    /// The pair as the plan had it (both CSV rows).
    pub pair: crate::detect::Pair,
    pub primary_id: String,
    pub secondary_id: String,
    /// Both contacts exactly as `rev-users.get` returned them (unknown fields included).
    pub primary: crate::devrev::types::RevUser,
    pub secondary: crate::devrev::types::RevUser,
}
