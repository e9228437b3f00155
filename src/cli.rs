//! The command line as the user types it (clap definitions only).
//!
//! Values that need validation beyond their shape (rate limits, URLs, timeouts) are taken as
//! strings here and checked in `config.rs`, so that a bad value is a configuration error
//! (exit 78) with a clear message, whether it came from a flag, the environment or `.env`.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

use crate::options::{BackupScope, Keep};

/// DevRev's public API; `--base-url` (or `DEVREV_BASE_URL`) points elsewhere, e.g. at a fake.
pub const DEFAULT_BASE_URL: &str = "https://api.devrev.ai";

/// Safely merge duplicate DevRev contacts: preview, back up, verify, merge, resume.
///
/// The API token is read from DEVREV_API_TOKEN (environment or a .env file in the current
/// folder), never from the command line, so it cannot leak through the process list.
#[derive(Debug, Parser)]
#[command(name = "devrev-merge", version, about, long_about = None)]
#[command(group(
    ArgGroup::new("command")
        .args(["csv", "test_api", "create_test_sample", "verify_backups",
               "generate_completions", "generate_man", "restore", "demo", "export_contacts"])
        .required(true)
        .multiple(false)
))]
#[command(group(ArgGroup::new("previewable").args(["csv", "restore"]).multiple(false)))]
pub struct Cli {
    // ---- commands ----
    /// The contacts CSV export: preview (--preview), back up (--backup-only) or merge its pairs.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Show the plan (pairs, needs-review groups, API-call and time estimate). Offline and
    /// read-only; writes reports/plan-<timestamp>.json.
    #[arg(long, requires = "previewable")]
    pub preview: bool,

    /// With --preview: validate every pair read-only against DevRev (needs a token).
    #[arg(long, requires = "preview")]
    pub check_live: bool,

    /// With --csv: take and verify the backups of every clean pair, merge nothing.
    #[arg(long, requires = "csv", conflicts_with = "preview")]
    pub backup_only: bool,

    /// Check the token, org, identity, token expiry, read access and rate-limit headers.
    #[arg(long)]
    pub test_api: bool,

    /// Write a small CSV of complete clean pairs to try first (needs --input, --output).
    #[arg(long, requires_all = ["input", "output"])]
    pub create_test_sample: bool,

    /// With --create-test-sample: the CSV to choose pairs from.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// With --create-test-sample: where to write the sample.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// With --create-test-sample: number of rows (an even number: two rows per pair).
    #[arg(long, default_value_t = 4)]
    pub size: usize,

    /// With --create-test-sample: seed for the deterministic choice among equal candidates.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// With --create-test-sample or --export-contacts: overwrite an existing output file.
    #[arg(long)]
    pub force: bool,

    /// Try the whole flow on a built-in fake DevRev (no token, nothing sent anywhere): every
    /// step prints the command to type against a real org, then its output.
    #[arg(long)]
    pub demo: bool,

    /// With --demo: the folder to run it in (empty or new; default: a fresh temporary folder).
    #[arg(long, value_name = "DIR", requires = "demo")]
    pub demo_dir: Option<PathBuf>,

    /// Build the contacts CSV from the DevRev API (every rev user; ticket counts for contacts
    /// that share an email), for those without a warehouse export. Honours --email-domain.
    #[arg(long, value_name = "FILE")]
    pub export_contacts: Option<PathBuf>,

    /// Re-check every backup folder under DIR (checksums, sizes, counts).
    #[arg(long, value_name = "DIR")]
    pub verify_backups: Option<PathBuf>,

    /// With --verify-backups: also compare each backup's ticket ids with DevRev (read-only).
    #[arg(long, requires = "verify_backups")]
    pub against_api: bool,

    /// Undo merges from their backups: backup folders, or a merge report
    /// (reports/merge-report-<timestamp>.json) to undo every pair it merged. With --preview:
    /// the plan only, read-only. See "Undo a merge" in docs/commands.md.
    #[arg(long, value_name = "FOLDER|REPORT", num_args = 1..)]
    pub restore: Vec<PathBuf>,

    // ---- plan options ----
    /// Which contact of a pair survives.
    #[arg(long, value_enum, default_value_t = Keep::Revu)]
    pub keep: Keep,

    /// Only consider emails in this domain (e.g. example.com).
    #[arg(long, value_name = "DOMAIN")]
    pub email_domain: Option<String>,

    // ---- run options ----
    /// Do not ask for confirmation before writing to DevRev.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Stop after this many merged pairs (a canary run).
    #[arg(long, value_name = "N")]
    pub max_merges: Option<usize>,

    /// How long to wait for DevRev to apply one merge, in seconds.
    // Text, checked in `config.rs`: an out-of-range number is exit 78 naming it, not clap's 2.
    #[arg(long, value_name = "SECS", default_value = "120")]
    pub merge_timeout: String,

    /// How long a secondary must be seen plainly unmerged after a merge request whose answer
    /// was lost before the merge may be sent again, in seconds (at least 300).
    #[arg(long, value_name = "SECS", default_value = "600")]
    pub merge_watch: String,

    /// Which tickets' timelines and attachments to back up.
    #[arg(long, value_enum, default_value_t = BackupScope::Secondary)]
    pub backup_scope: BackupScope,

    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,

    // ---- files ----
    #[arg(long, value_name = "DIR", default_value = "backups")]
    pub backup_dir: PathBuf,

    #[arg(long, value_name = "DIR", default_value = "logs")]
    pub log_dir: PathBuf,

    #[arg(long, value_name = "DIR", default_value = "reports")]
    pub report_dir: PathBuf,

    #[arg(long, value_name = "FILE", default_value = "savepoint.json")]
    pub savepoint: PathBuf,

    // ---- API ----
    // Taken as text and checked in `config.rs` (exit 78 naming the flag or the variable). The
    // `[env: …] [default: …]` help comes from these attributes; values are hidden so `--help`
    // prints the same text whatever the environment holds.
    /// DevRev API base URL.
    #[arg(long, value_name = "URL", env = "DEVREV_BASE_URL", hide_env_values = true,
          default_value = DEFAULT_BASE_URL)]
    pub base_url: String,

    /// Most API calls in any window of --rate-limit-period.
    #[arg(
        long,
        value_name = "N",
        env = "RATE_LIMIT_CALLS",
        hide_env_values = true,
        default_value = "45"
    )]
    pub rate_limit_calls: String,

    /// Length of the rate-limit window in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "RATE_LIMIT_PERIOD",
        hide_env_values = true,
        default_value = "60"
    )]
    pub rate_limit_period: String,

    /// Connect timeout in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "DEVREV_CONNECT_TIMEOUT",
        hide_env_values = true,
        default_value = "30"
    )]
    pub connect_timeout: String,

    /// Read timeout in seconds.
    #[arg(
        long,
        value_name = "SECS",
        env = "DEVREV_READ_TIMEOUT",
        hide_env_values = true,
        default_value = "60"
    )]
    pub read_timeout: String,

    /// Retries for a failed call (429, 5xx, network).
    #[arg(
        long,
        value_name = "N",
        env = "DEVREV_MAX_RETRIES",
        hide_env_values = true,
        default_value = "3"
    )]
    pub max_retries: String,

    /// Whole-request deadline in seconds: sending, waiting and reading the full answer.
    #[arg(
        long,
        value_name = "SECS",
        env = "DEVREV_REQUEST_DEADLINE",
        hide_env_values = true,
        default_value = "300"
    )]
    pub request_deadline: String,

    /// Most pages one listing may take before it counts as a server bug.
    #[arg(
        long,
        value_name = "N",
        env = "DEVREV_MAX_PAGES",
        hide_env_values = true,
        default_value = "10000"
    )]
    pub max_pages: String,

    /// Largest API answer accepted, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        env = "DEVREV_MAX_ANSWER_BYTES",
        hide_env_values = true,
        default_value = "67108864"
    )]
    pub max_answer_bytes: String,

    // ---- output ----
    /// More log detail on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr; no progress bars.
    #[arg(short, long)]
    pub quiet: bool,

    // ---- packaging ----
    /// Print a shell completion script on stdout (see the README to install it).
    #[arg(long, value_name = "SHELL", value_enum, hide = true, exclusive = true)]
    pub generate_completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) on stdout (see the README to install it).
    #[arg(long, hide = true, exclusive = true)]
    pub generate_man: bool,

    /// Where each setting's value came from (filled by [`Cli::parse_args`], not by clap): the
    /// error for a bad value names what the user typed, the flag or the variable.
    #[arg(skip)]
    pub from_env: Vec<String>,
}

impl Cli {
    /// Parses `args` (the program name first) like `Cli::parse_from`, and records which
    /// settings clap took from the environment.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.from_env = matches
            .ids()
            .filter(|id| {
                matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::EnvVariable)
            })
            .map(|id| id.as_str().to_string())
            .collect();
        Ok(cli)
    }

    /// Whether the setting `id` (a field name) came from its environment variable.
    pub fn from_env(&self, id: &str) -> bool {
        self.from_env.iter().any(|i| i == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
