//! The one place where failures become exit codes (DESIGN §8).
//!
//! Every command returns `Result<Outcome, AppError>`; `main` turns that into a process exit
//! code through [`AppError::exit_code`] and nothing else decides exit codes.

use crate::devrev::ApiError;

/// Documented exit codes. Kept as constants so tests and docs name the same numbers.
pub mod code {
    pub const OK: u8 = 0;
    pub const SOME_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DATA: u8 = 65;
    pub const UNAVAILABLE: u8 = 69;
    pub const CANT_CREATE: u8 = 73;
    pub const INTERRUPTED: u8 = 75;
    pub const NO_PERMISSION: u8 = 77;
    pub const CONFIG: u8 = 78;
}

/// Everything that can stop a command. Messages are written for the person at the terminal:
/// they say what went wrong, where, and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The command line itself is wrong (clap handles most of these before we run).
    #[error("{0}")]
    Usage(String),
    /// Configuration is missing or invalid (token, rate limit, base URL, ...).
    #[error("{0}")]
    Config(String),
    /// Input data (the CSV, a savepoint, a backup folder) is malformed.
    #[error("{0}")]
    Data(String),
    /// A file or folder could not be written (or there is not enough space).
    #[error("{0}")]
    CantCreate(String),
    /// The run was interrupted but the savepoint is consistent; re-run to resume.
    #[error("{0}")]
    Interrupted(String),
    /// The command finished, but some items failed (pairs, backups, probes).
    #[error("{0}")]
    SomeFailed(String),
    /// An error from the DevRev API; its exit code depends on its kind.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An I/O failure that is not about the input's content: starting the runtime, writing
    /// stdout, listing a folder, reading the terminal. Exit 73 (a CSV that cannot be opened
    /// is `Data`, 65).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl AppError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AppError::Io {
            context: context.into(),
            source,
        }
    }

    /// The exit code for this failure (DESIGN §8). The single mapping in the program.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) => code::USAGE,
            AppError::Config(_) => code::CONFIG,
            AppError::Data(_) => code::DATA,
            AppError::CantCreate(_) => code::CANT_CREATE,
            AppError::Interrupted(_) => code::INTERRUPTED,
            AppError::SomeFailed(_) => code::SOME_FAILED,
            AppError::Io { .. } => code::CANT_CREATE,
            AppError::Api(e) => api_exit_code(e),
        }
    }
}

/// Exit code when a DevRev error ends the whole command (DESIGN §8). Lives here, not in
/// `devrev`, so that the client layer never reaches back up into the exit-code table.
pub fn api_exit_code(e: &ApiError) -> u8 {
    match e {
        ApiError::Status { status, .. } if *status == 401 || *status == 403 => code::NO_PERMISSION,
        ApiError::Unreachable { .. } => code::UNAVAILABLE,
        ApiError::Status { status, .. } if *status == 429 || *status >= 500 => code::UNAVAILABLE,
        ApiError::Cancelled => code::INTERRUPTED,
        _ => code::SOME_FAILED,
    }
}
