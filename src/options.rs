//! The user's choices that shape a plan and a run: which contact survives, what to back up.
//!
//! Domain types, not command-line ones: detection, backups, the savepoint and the reports
//! store them. They derive clap's `ValueEnum` only so the flags can name them directly.

use clap::ValueEnum;

/// Which contact of a pair survives the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Keep the REVU- contact; it adopts the user_ external_ref after the merge.
    Revu,
    /// Keep the user_ contact.
    User,
    /// Keep the REVU- contact, except where DevRev would refuse that direction (a verified
    /// REVU- and an unverified user_ contact): there the user_ contact is kept. Which pairs
    /// turn is only known live, so `--check-live` and the merge run decide it.
    Auto,
}

impl Keep {
    /// The direction the offline plan is built in: `auto` plans as `revu` and turns pairs
    /// only once DevRev has said which ones it would refuse.
    pub fn planned(self) -> Keep {
        match self {
            Keep::Auto => Keep::Revu,
            k => k,
        }
    }
}

/// Which tickets' timelines and attachments a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupScope {
    /// Timelines and attachments of the secondary's tickets.
    Secondary,
    /// Timelines and attachments of both contacts' tickets.
    Both,
}
