//! Taking one pair's backup (DESIGN §6, §7).
//!
//! (Skeleton: the bodies are written under issue 4; the signatures are what the merge saga
//! calls, keep them stable.)

pub mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::BackupScope;
use crate::detect::Pair;
use crate::devrev::types::{Conversation, RevUser, Work};
use crate::devrev::{ApiError, DevRevClient};

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

/// Takes, writes and verifies one pair's backup; returns only once the folder is complete
/// and renamed into place.
pub async fn take(
    _client: &DevRevClient,
    _input: BackupInput<'_>,
) -> Result<BackupSummary, BackupError> {
    unimplemented!("issue 4")
}

/// The tickets saved in a backup (`tickets.json`), as the API returned them.
pub fn load_tickets(_dir: &Path) -> Result<Vec<Work>, BackupError> {
    unimplemented!("issue 4")
}

/// The secondary's conversations saved in a backup.
pub fn load_conversations(_dir: &Path) -> Result<Vec<Conversation>, BackupError> {
    unimplemented!("issue 4")
}
