//! `--csv FILE`: the merge run. The run itself (schedule, sagas, savepoint, report) lives in
//! `merge/`; this is its entry as a command.

use std::path::Path;

use crate::config::Config;
use crate::error::AppError;

/// Runs the merges of `csv`'s clean pairs; `Ok` only when every one is merged.
pub async fn run(cfg: &Config, csv: &Path) -> Result<(), AppError> {
    crate::merge::run(cfg, csv).await
}
