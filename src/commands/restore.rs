//! `--restore FOLDER|REPORT... [--preview]`: undo merges from their backups. The undo saga,
//! its journal and report live in `restore/`; this is its entry as a command.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::AppError;

/// Restores (or, with `preview`, plans the restore of) every pair the inputs name.
pub async fn run(cfg: &Config, inputs: &[PathBuf], preview: bool) -> Result<(), AppError> {
    crate::restore::run(cfg, inputs, preview).await
}
