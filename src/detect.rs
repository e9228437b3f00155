//! CSV → contacts → groups by normalized email → `Plan { pairs, needs_review, ... }`.
//!
//! (Skeleton: the reading and classification are being written under issue 3.)

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::Keep;
use crate::error::AppError;

/// One row of the contacts export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// 1-based line number in the CSV where the row starts (for messages).
    pub line: u64,
    pub rev_user_id: String,
    pub display_name: String,
    pub email: String,
    pub external_ref: String,
    pub full_name: String,
    pub created_at: String,
    pub updated_at: String,
    /// `None` when the export left it empty (unknown).
    pub ticket_count: Option<u64>,
}

/// The class of an `external_ref` (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefClass {
    /// `REVU-<id>`: DevRev's default.
    Revu,
    /// `user_<id>`: the customer app's id.
    User,
    /// `user_...-drop-...`: left over from an earlier merge; never treated as `user_`.
    Drop,
    /// Anything else (an email, empty, ...).
    Other,
}

/// A clean duplicate: one `REVU-` and one `user_` contact with the same normalized email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Normalized (trimmed, lower-cased) email.
    pub email: String,
    /// The contact that survives.
    pub primary: Contact,
    /// The contact merged into the primary.
    pub secondary: Contact,
}

/// Options that shape the plan.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub keep: Keep,
    pub email_domain: Option<String>,
}

/// What detection found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub pairs: Vec<Pair>,
}

/// Reads the CSV at `path` and builds the plan.
pub fn plan_from_csv(_path: &Path, _opts: &DetectOptions) -> Result<Plan, AppError> {
    Err(AppError::Usage(
        "duplicate detection is not implemented yet".into(),
    ))
}
