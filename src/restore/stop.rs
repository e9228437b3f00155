//! How a restore pair's steps stop early, shared by the saga and its carry-over undo
//! (one place, so neither module needs the other).

use super::journal::{Journal, RestoreRecord};
use crate::devrev::ApiError;
use crate::error::AppError;

/// Why the steps stopped early.
pub(super) enum Stop {
    Skip(String),
    Fail(String),
    /// An error every pair would hit (DevRev unreachable, token refused, disk full).
    Fatal(AppError),
}

impl From<AppError> for Stop {
    fn from(e: AppError) -> Self {
        Stop::Fatal(e)
    }
}

/// Errors that would hit every pair end the run; the rest end this pair only.
pub(super) fn run_wide(e: &ApiError) -> bool {
    matches!(e, ApiError::Unreachable { .. } | ApiError::Cancelled)
        || matches!(e.status(), Some(401 | 403 | 429))
}

pub(super) fn api(what: &str) -> impl FnOnce(ApiError) -> Stop + '_ {
    move |e| {
        if run_wide(&e) {
            Stop::Fatal(AppError::Api(e))
        } else {
            Stop::Fail(format!("{what}: {e}"))
        }
    }
}

/// The pair's record (inserted before its steps run).
pub(super) fn record(j: &Journal, key: &str) -> RestoreRecord {
    j.get(key).cloned().expect("inserted before the steps run")
}
