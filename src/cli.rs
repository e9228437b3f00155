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

// The `--help` headings, in the order they show.
const H_COMMANDS: &str = "Commands";
const H_SAMPLE: &str = "Test sample and export";
const H_MERGE: &str = "Plan and merge";
const H_BACKUP: &str = "Backup";
const H_FILES: &str = "Files";
const H_API: &str = "API (the token comes from DEVREV_API_TOKEN, never from a flag)";
const H_OUTPUT: &str = "Output";

/// The usage line: the commands as people type them, not one line of every flag.
const USAGE: &str = "devrev-merge --csv FILE [--preview [--check-live] | --backup-only] [OPTIONS]
       devrev-merge --csv FILE [--preview] --decisions FILE [--accept-proposed] [--max-merges N]
       devrev-merge --create-test-sample --input FILE --output FILE [--size N] [--decisions FILE]
       devrev-merge --export-contacts FILE [--force]
       devrev-merge --test-api | --status | --verify-backups DIR [--against-api]
       devrev-merge --restore FOLDER...|REPORT [--preview]
       devrev-merge --demo | --help-topic TOPIC
       devrev-merge --generate-completions SHELL | --generate-man";

/// What a first `devrev-merge` with no arguments shows (stdout, exit 0: a first run is a
/// question, not a mistake): what the tool does, the commands to start with, and where the
/// rest is. Short: the whole reference is `--help`.
pub const FIRST_SCREEN: &str = "\
devrev-merge safely merges duplicate DevRev contacts (rev users): the same email held by a
REVU- contact and a user_ contact. It previews first, backs up every contact, ticket and
conversation before each merge, journals every step, resumes after any stop, and can undo a
merge with --restore. The API token comes from DEVREV_API_TOKEN (environment or .env).

Start here:
  devrev-merge --demo                          the whole flow on a built-in fake DevRev
  devrev-merge --test-api                      check the token and the org (read-only)
  devrev-merge --csv contacts.csv --preview    the plan and the review file (offline)
  devrev-merge --create-test-sample --input contacts.csv --output test.csv --size 4

More: devrev-merge --help (every flag, examples, exit codes)
      devrev-merge --help-topic review         the review file and decisions
      devrev-merge --help-topic list           every built-in page
";

/// After `-h`: where the token comes from, and where the rest is.
const AFTER_HELP: &str = "The API token is read from DEVREV_API_TOKEN, in the environment or in a .env file in \
the current folder (never from the command line). More: --help (examples, exit codes).";

/// After `--help` and in the man page: the token, the usual commands and the exit codes.
const AFTER_LONG_HELP: &str = "\
The API token:
  DEVREV_API_TOKEN, from the environment or a .env file in the current folder (copy
  .env.example to .env). It is never taken from the command line, so it cannot show in the
  process list or the shell history. Every setting above can also come from .env.

Examples:
  devrev-merge --test-api                         check the token and the org
  devrev-merge --csv contacts.csv --preview       the plan, offline (nothing is changed)
  devrev-merge --create-test-sample --input contacts.csv --output test.csv --size 4
  devrev-merge --csv test.csv                     merge the sample (asks: type yes)
  devrev-merge --csv contacts.csv --max-merges 3  a canary run
  devrev-merge --csv contacts.csv                 the full run; re-run to resume
  devrev-merge --status                           where the savepoint stands
  devrev-merge --restore reports/merge-report-<time>.json --preview
  devrev-merge --demo                             the whole flow on a built-in fake DevRev

Exit codes:
  0   everything done
  1   partly done: some pairs failed, were skipped or are unconfirmed (see the report)
  2   usage: bad or conflicting flags, or a confirmation that was not `yes`
  65  bad input data: the CSV, a backup, a merge report or the savepoint
  69  DevRev unreachable, or still answering 429/5xx after retries: re-run to resume
  73  cannot write output (a file exists, the disk is full, the savepoint is locked)
  75  interrupted (Ctrl-C): re-run the same command to resume
  77  not authorized: DevRev answered 401/403
  78  configuration missing or invalid (no token, a bad setting, another org's savepoint)

Full reference: devrev-merge --help-topic commands (the repository's docs/commands.md).";

/// Safely merge duplicate DevRev contacts: preview, back up, verify, merge, resume.
///
/// The API token is read from DEVREV_API_TOKEN (environment or a .env file in the current
/// folder), never from the command line, so it cannot leak through the process list.
#[derive(Debug, Parser)]
#[command(name = "devrev-merge", version, about, long_about = None)]
#[command(override_usage = USAGE, after_help = AFTER_HELP, after_long_help = AFTER_LONG_HELP)]
#[command(group(
    ArgGroup::new("command")
        .args(["csv", "test_api", "create_test_sample", "verify_backups",
               "generate_completions", "generate_man", "restore", "demo", "export_contacts",
               "status", "help_topic"])
        .required(true)
        .multiple(false)
))]
#[command(group(ArgGroup::new("previewable").args(["csv", "restore"]).multiple(false)))]
pub struct Cli {
    // ---- commands ----
    /// The contacts CSV export: preview (--preview), back up (--backup-only) or merge its pairs.
    #[arg(help_heading = H_COMMANDS, long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Show the plan (pairs, needs-review groups, API-call and time estimate). Offline and
    /// read-only; writes reports/plan-<timestamp>.json.
    #[arg(help_heading = H_COMMANDS, long, requires = "previewable")]
    pub preview: bool,

    /// With --preview: validate every pair read-only against DevRev (needs a token).
    #[arg(help_heading = H_COMMANDS, long, requires = "preview")]
    pub check_live: bool,

    /// With --csv: take and verify the backups of every clean pair, merge nothing.
    #[arg(help_heading = H_COMMANDS, long, requires = "csv", conflicts_with = "preview")]
    pub backup_only: bool,

    /// Check the token, org, identity, token expiry, read access and rate-limit headers.
    #[arg(help_heading = H_COMMANDS, long)]
    pub test_api: bool,

    /// What the savepoint holds, offline and without the CSV: counts by status, merges waiting
    /// on a watch window and until when, pending ref adoptions, the newest merge report.
    #[arg(help_heading = H_COMMANDS, long)]
    pub status: bool,

    /// Write a small CSV of complete clean pairs to try first (needs --input, --output).
    #[arg(help_heading = H_COMMANDS, long, requires_all = ["input", "output"])]
    pub create_test_sample: bool,

    /// With --create-test-sample: the CSV to choose pairs from.
    #[arg(help_heading = H_SAMPLE, long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// With --create-test-sample: where to write the sample.
    #[arg(help_heading = H_SAMPLE, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// With --create-test-sample: number of rows (an even number: two rows per pair).
    #[arg(help_heading = H_SAMPLE, long, default_value_t = 4)]
    pub size: usize,

    /// With --create-test-sample: seed for the deterministic choice among equal candidates.
    #[arg(help_heading = H_SAMPLE, long, default_value_t = 42)]
    pub seed: u64,

    /// With --create-test-sample or --export-contacts: overwrite an existing output file.
    #[arg(help_heading = H_SAMPLE, long)]
    pub force: bool,

    /// Try the whole flow on a built-in fake DevRev (no token, nothing sent anywhere): every
    /// step prints the command to type against a real org, then its output.
    #[arg(help_heading = H_COMMANDS, long)]
    pub demo: bool,

    /// With --demo: the folder to run it in (empty or new; default: a fresh temporary folder).
    #[arg(help_heading = H_COMMANDS, long, value_name = "DIR", requires = "demo")]
    pub demo_dir: Option<PathBuf>,

    /// Build the contacts CSV from the DevRev API (every rev user; ticket counts for contacts
    /// that share an email), for those without a warehouse export. Honours --email-domain.
    #[arg(help_heading = H_COMMANDS, long, value_name = "FILE")]
    pub export_contacts: Option<PathBuf>,

    /// Re-check every backup folder under DIR (checksums, sizes, counts).
    #[arg(help_heading = H_COMMANDS, long, value_name = "DIR")]
    pub verify_backups: Option<PathBuf>,

    /// With --verify-backups: also compare each backup's ticket ids with DevRev (read-only).
    #[arg(help_heading = H_COMMANDS, long, requires = "verify_backups")]
    pub against_api: bool,

    /// Undo merges from their backups: backup folders, or a merge report
    /// (reports/merge-report-<timestamp>.json) to undo every pair it merged. With --preview:
    /// the plan only, read-only. See "Undo a merge" in docs/commands.md.
    #[arg(help_heading = H_COMMANDS, long, value_name = "FOLDER|REPORT", num_args = 1..)]
    pub restore: Vec<PathBuf>,

    /// With --restore REPORT: undo every pair the (cumulative) report lists as merged, also
    /// those an earlier run merged. Without it only the pairs that report's run merged.
    #[arg(help_heading = H_COMMANDS, long, requires = "restore")]
    pub all_in_report: bool,

    // ---- plan options ----
    /// Which contact of a pair survives.
    #[arg(help_heading = H_MERGE, long, value_enum, default_value_t = Keep::Revu)]
    pub keep: Keep,

    /// Only consider emails in this domain (e.g. example.com).
    #[arg(help_heading = H_MERGE, long, value_name = "DOMAIN")]
    pub email_domain: Option<String>,

    /// A filled-in review file (reports/review-<time>.csv): keep, merge, skip, not-dup or
    /// revoke per contact. With --preview: show the plan it gives; in a merge run: merge as
    /// decided, each group one contact at a time; with --create-test-sample: leave out what
    /// it keeps from merging. Its not-dup and skip decisions are recorded in the savepoint and
    /// honoured by every later command. See docs/review.md.
    #[arg(
        help_heading = H_MERGE,
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "backup_only", "test_api", "status", "demo",
            "export_contacts", "verify_backups", "restore"
        ]
    )]
    pub decisions: Option<PathBuf>,

    /// With --decisions: decide blank needs-review groups of at most 5 contacts by the
    /// proposal, where a rule found a single survivor (never over a typed decision).
    #[arg(help_heading = H_MERGE, long, requires = "decisions")]
    pub accept_proposed: bool,

    // ---- run options ----
    /// Do not ask for confirmation before writing to DevRev.
    #[arg(help_heading = H_MERGE, long, short = 'y')]
    pub yes: bool,

    /// Stop after this many merged pairs (a canary run).
    #[arg(help_heading = H_MERGE, long, value_name = "N")]
    pub max_merges: Option<usize>,

    /// Send each merge only after the one before it is finished. By default a pair that
    /// shares no contact, ticket or conversation with the pairs in flight may merge while
    /// another merge is applied (two at a time).
    #[arg(help_heading = H_MERGE, long)]
    pub one_merge_at_a_time: bool,

    /// How long to wait for DevRev to apply one merge, in seconds.
    // Text, checked in `config.rs`: an out-of-range number is exit 78 naming it, not clap's 2.
    #[arg(help_heading = H_MERGE, long, value_name = "SECS", default_value = "120")]
    pub merge_timeout: String,

    /// How long a secondary must be seen plainly unmerged after a merge request whose answer
    /// was lost before the merge may be sent again, in seconds (at least 300).
    #[arg(help_heading = H_MERGE, long, value_name = "SECS", default_value = "600")]
    pub merge_watch: String,

    /// Send again the merges DevRev accepted but never applied: pairs whose secondary was
    /// seen plainly unmerged for a whole --merge-watch window after the accepted request
    /// (reported "accepted, never applied"). Without it they are only reported.
    #[arg(help_heading = H_MERGE, long)]
    pub resend_unapplied: bool,

    /// Do not copy the secondary's phone numbers, custom fields and name onto the survivor
    /// after the merge (DevRev's own behaviour: they are lost with the secondary; the backup
    /// keeps them).
    #[arg(help_heading = H_MERGE, long)]
    pub no_carry: bool,

    /// Which tickets' timelines and attachments to back up.
    #[arg(help_heading = H_BACKUP, long, value_enum, default_value_t = BackupScope::Secondary)]
    pub backup_scope: BackupScope,

    // ---- files ----
    /// Where each pair's backup folder is written (0700).
    #[arg(help_heading = H_FILES, long, value_name = "DIR", default_value = "backups")]
    pub backup_dir: PathBuf,

    /// Where the log of each run is written.
    #[arg(help_heading = H_FILES, long, value_name = "DIR", default_value = "logs")]
    pub log_dir: PathBuf,

    /// Where plans and merge and restore reports are written.
    #[arg(help_heading = H_FILES, long, value_name = "DIR", default_value = "reports")]
    pub report_dir: PathBuf,

    /// The journal of every merge step, from which an interrupted run resumes.
    #[arg(help_heading = H_FILES, long, value_name = "FILE", default_value = "savepoint.json")]
    pub savepoint: PathBuf,

    // ---- API ----
    // Taken as text and checked in `config.rs` (exit 78 naming the flag or the variable). The
    // `[env: …] [default: …]` help comes from these attributes; values are hidden so `--help`
    // prints the same text whatever the environment holds.
    /// DevRev API base URL.
    #[arg(help_heading = H_API, long, value_name = "URL", env = "DEVREV_BASE_URL", hide_env_values = true,
          default_value = DEFAULT_BASE_URL)]
    pub base_url: String,

    /// Most API calls in any window of --rate-limit-period.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "N",
        env = "RATE_LIMIT_CALLS",
        hide_env_values = true,
        default_value = "45"
    )]
    pub rate_limit_calls: String,

    /// Length of the rate-limit window in seconds.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "SECS",
        env = "RATE_LIMIT_PERIOD",
        hide_env_values = true,
        default_value = "60"
    )]
    pub rate_limit_period: String,

    /// Connect timeout in seconds.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "SECS",
        env = "DEVREV_CONNECT_TIMEOUT",
        hide_env_values = true,
        default_value = "30"
    )]
    pub connect_timeout: String,

    /// Read timeout in seconds.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "SECS",
        env = "DEVREV_READ_TIMEOUT",
        hide_env_values = true,
        default_value = "60"
    )]
    pub read_timeout: String,

    /// Retries for a failed call (429, 5xx, network).
    #[arg(
        help_heading = H_API,
        long,
        value_name = "N",
        env = "DEVREV_MAX_RETRIES",
        hide_env_values = true,
        default_value = "3"
    )]
    pub max_retries: String,

    /// Whole-request deadline in seconds: sending, waiting and reading the full answer.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "SECS",
        env = "DEVREV_REQUEST_DEADLINE",
        hide_env_values = true,
        default_value = "300"
    )]
    pub request_deadline: String,

    /// Most pages one listing may take before it counts as a server bug.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "N",
        env = "DEVREV_MAX_PAGES",
        hide_env_values = true,
        default_value = "10000"
    )]
    pub max_pages: String,

    /// Largest API answer accepted, in bytes.
    #[arg(
        help_heading = H_API,
        long,
        value_name = "BYTES",
        env = "DEVREV_MAX_ANSWER_BYTES",
        hide_env_values = true,
        default_value = "67108864"
    )]
    pub max_answer_bytes: String,

    // ---- output ----
    /// More log detail on stderr (-v, -vv).
    #[arg(help_heading = H_OUTPUT, short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr; no progress bars.
    #[arg(help_heading = H_OUTPUT, short, long)]
    pub quiet: bool,

    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(help_heading = H_OUTPUT, long)]
    pub json: bool,

    // ---- packaging ----
    /// Print a shell completion script on stdout (see the README to install it).
    #[arg(help_heading = H_OUTPUT, long, value_name = "SHELL", value_enum)]
    pub generate_completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) on stdout (see the README to install it).
    #[arg(help_heading = H_OUTPUT, long)]
    pub generate_man: bool,

    /// Print a page of the built-in documentation (the docs/ folder of the repository, built
    /// into the binary): review, restore, commands, files, api, limits, html-report,
    /// benchmarks; `list` names them.
    #[arg(help_heading = H_OUTPUT, long, value_name = "TOPIC")]
    pub help_topic: Option<String>,

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
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        if let Some(e) = misnamed_flag(&args) {
            return Err(e);
        }
        let matches = Cli::command().try_get_matches_from(&args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if cli.generate_completions.is_some() || cli.generate_man {
            generator_alone(&matches)?;
        }
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

/// Flags people type from other tools, answered with the one this tool has (clap's own
/// "similar argument" tip cannot see that `--dry-run` means `--preview`).
const MISNAMED: [(&str, &str); 3] = [
    (
        "--dry-run",
        "there is no --dry-run: --preview shows the plan and changes nothing in DevRev \
         (devrev-merge --csv FILE --preview)",
    ),
    (
        "--token",
        "the token is never taken from the command line (it would show in the process list): \
         set DEVREV_API_TOKEN in the environment or in a .env file in the current folder",
    ),
    (
        "--api-token",
        "the token is never taken from the command line (it would show in the process list): \
         set DEVREV_API_TOKEN in the environment or in a .env file in the current folder",
    ),
];

fn misnamed_flag(args: &[std::ffi::OsString]) -> Option<clap::Error> {
    use clap::CommandFactory;
    let typed = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .filter_map(|a| a.to_str());
    for arg in typed {
        let name = arg.split_once('=').map_or(arg, |(n, _)| n);
        if let Some((_, what)) = MISNAMED.iter().find(|(flag, _)| *flag == name) {
            return Some(
                Cli::command().error(clap::error::ErrorKind::UnknownArgument, what.to_string()),
            );
        }
    }
    None
}

/// `--generate-completions` and `--generate-man` take no other flag the user typed. Settings
/// that came from the environment or `.env` do not count: a shell with `RATE_LIMIT_CALLS` set
/// must still be able to install the completions (clap's `exclusive` counts them too).
fn generator_alone(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    use clap::CommandFactory;
    use clap::parser::ValueSource;
    let cmd = Cli::command();
    let typed = cmd.get_arguments().map(|a| a.get_id().as_str()).find(|id| {
        !matches!(*id, "generate_completions" | "generate_man")
            && matches.value_source(id) == Some(ValueSource::CommandLine)
    });
    match typed {
        None => Ok(()),
        Some(id) => Err(cmd.clone().error(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "--generate-completions and --generate-man print a file and take no other flag \
                 (got --{})",
                id.replace('_', "-")
            ),
        )),
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
