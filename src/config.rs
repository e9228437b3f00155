//! Flags + environment + `.env` → one validated `Config`.
//!
//! Precedence is flag > environment > `.env` (current folder only) > default. `.env` is
//! loaded into the environment by `main` before anything else runs, without overriding
//! variables that are already set, which gives exactly that order.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::cli::{Cli, DEFAULT_BASE_URL};
use crate::devrev::{ClientConfig, Limits};
use crate::error::AppError;
use crate::options::{BackupScope, Keep};
use crate::output::Printer;

/// What the user asked the program to do, with that command's own inputs (ripgrep's mode):
/// `app` matches on it once, and each arm is one file under `src/commands/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--test-api`: check the token, org, identity and rate-limit headers.
    TestApi,
    /// `--status`: what the savepoint holds, offline.
    Status,
    /// `--csv FILE --preview [--check-live]`: the plan, offline unless `check_live`.
    Preview { csv: PathBuf, check_live: bool },
    /// `--create-test-sample`: a small CSV of whole clean pairs.
    Sample(SampleArgs),
    /// `--csv FILE --backup-only`: back up and verify every clean pair, merge nothing.
    BackupOnly { csv: PathBuf },
    /// `--verify-backups DIR [--against-api]`: re-check backup folders.
    VerifyBackups { dir: PathBuf, against_api: bool },
    /// `--csv FILE`: the merge run.
    Merge { csv: PathBuf },
    /// `--restore FOLDER|REPORT... [--preview]`: undo merges from their backups.
    Restore { inputs: Vec<PathBuf>, preview: bool },
    /// `--generate-completions SHELL`: a completion script on stdout.
    Completions(clap_complete::Shell),
    /// `--generate-man`: the man page on stdout.
    Man,
    /// `--demo [--demo-dir DIR]`: the whole flow against the built-in fake DevRev.
    Demo { dir: Option<PathBuf> },
    /// `--export-contacts FILE [--force]`: the contacts CSV from the API. An existing `output`
    /// was already refused unless `force`.
    ExportContacts { output: PathBuf, force: bool },
}

impl Command {
    /// The command's short name, which names its log file (`logs/<name>-<timestamp>.log`).
    pub fn log_name(&self) -> &'static str {
        match self {
            Command::TestApi => "test-api",
            Command::Status => "status",
            Command::Preview { .. } => "preview",
            Command::Sample(_) => "sample",
            Command::BackupOnly { .. } => "backup-only",
            Command::VerifyBackups { .. } => "verify-backups",
            Command::Merge { .. } => "merge",
            Command::Restore { preview: true, .. } => "restore-preview",
            Command::Restore { .. } => "restore",
            Command::Completions(_) | Command::Man => "generate",
            Command::Demo { .. } => "demo",
            Command::ExportContacts { .. } => "export",
        }
    }
}

/// `--create-test-sample`'s inputs, already checked: `size` is even and at least 2, and
/// `output` is not the input file (nor an existing file unless `force`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    pub size: usize,
    pub seed: u64,
    pub force: bool,
}

/// The validated settings of one run. The token is a `SecretString`: its `Debug` prints
/// `[REDACTED]`, and it is only exposed when building the `Authorization` header.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    pub token: Option<SecretString>,
    pub base_url: url::Url,
    pub rate_limit_calls: u32,
    pub rate_limit_period: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_retries: u32,
    pub page_size: u32,
    pub min_backoff: Duration,
    pub limits: Limits,
    pub keep: Keep,
    pub email_domain: Option<String>,
    /// `--decisions FILE` (the preview shows what it decides; the merge run runs it).
    pub decisions: Option<PathBuf>,
    pub accept_proposed: bool,
    /// `--all-in-report`: a restore from a merge report undoes earlier runs' pairs too.
    pub all_in_report: bool,
    /// `--resend-unapplied`: merges accepted but never applied are sent again.
    pub resend_unapplied: bool,
    /// Carry the secondary's own data over to the survivor (off with `--no-carry`).
    pub carry: bool,
    pub backup_scope: BackupScope,
    pub backup_dir: PathBuf,
    pub log_dir: PathBuf,
    pub report_dir: PathBuf,
    pub savepoint: PathBuf,
    pub yes: bool,
    pub max_merges: Option<usize>,
    /// `--one-merge-at-a-time`: no pair merges ahead of its turn.
    pub one_merge_at_a_time: bool,
    pub merge_timeout: Duration,
    /// The "was it applied?" window after a lost merge answer (`--merge-watch`).
    pub merge_watch: Duration,
    pub json: bool,
    pub verbose: u8,
    /// Where human text and data go, and how loud (DESIGN §11).
    pub printer: Printer,
}

/// One setting as the user gave it: its text and the name to quote when it is wrong (the
/// flag, or the environment variable clap read it from).
struct Setting<'a> {
    raw: &'a str,
    source: String,
}

impl<'a> Setting<'a> {
    /// `raw` from the field `id` of `cli`; `env` is the variable clap reads for it.
    fn new(cli: &Cli, raw: &'a str, id: &str, env: &str) -> Self {
        let source = if cli.from_env(id) {
            env.to_string()
        } else {
            format!("--{}", id.replace('_', "-"))
        };
        Setting { raw, source }
    }

    /// A number greater than zero; a blank value (e.g. `RATE_LIMIT_CALLS=` in `.env`) means
    /// the default.
    fn positive<T: std::str::FromStr + PartialOrd + Default>(
        &self,
        default: T,
        what: &str,
    ) -> Result<T, AppError> {
        if self.raw.trim().is_empty() {
            return Ok(default);
        }
        match self.raw.trim().parse::<T>() {
            Ok(v) if v > T::default() => Ok(v),
            _ => Err(AppError::Config(format!(
                "{}={:?} is not valid: expected {what} greater than zero. \
                 Fix it in the flag, the environment or .env (see .env.example).",
                self.source,
                crate::output::clip(self.raw, 40)
            ))),
        }
    }

    /// A whole number from 1 to `max`; anything larger is an error naming the value, never
    /// a wrap or a panic further on.
    fn count(&self, default: u64, max: u64, what: &str) -> Result<u64, AppError> {
        let v: u64 = self.positive(default, what)?;
        self.at_most(v as f64, max as f64, what)?;
        Ok(v)
    }

    /// A number of seconds above zero and at most `max_s`: a `Duration` built from it, and
    /// deadlines added to `Instant::now()`, can then never overflow.
    fn seconds(&self, default: f64, max_s: u64) -> Result<Duration, AppError> {
        let v: f64 = self.positive(default, "a number of seconds")?;
        self.at_most(v, max_s as f64, "a number of seconds")?;
        Ok(Duration::from_secs_f64(v))
    }

    /// [`Setting::seconds`] with a floor: a value that rounds to nothing (`1e-300`) would turn
    /// pacing off or fail every call, so anything below `floor_s` is an error saying why.
    fn seconds_from(
        &self,
        default: f64,
        floor_s: f64,
        why: &str,
        max_s: u64,
    ) -> Result<Duration, AppError> {
        let d = self.seconds(default, max_s)?;
        if d.as_secs_f64() >= floor_s {
            return Ok(d);
        }
        Err(AppError::Config(format!(
            "{}={:?} is below its floor of {floor_s} s: {why}. \
             Fix it in the flag, the environment or .env (see .env.example).",
            self.source,
            crate::output::clip(self.raw, 40)
        )))
    }

    fn at_most(&self, v: f64, max: f64, what: &str) -> Result<(), AppError> {
        if v.is_finite() && v <= max {
            return Ok(());
        }
        Err(AppError::Config(format!(
            "{}={:?} is not valid: expected {what} of at most {max}. \
             Fix it in the flag, the environment or .env (see .env.example).",
            self.source,
            crate::output::clip(self.raw, 40)
        )))
    }
}

/// The longest any configured wait may be: a week. Longer is a typo, and an `Instant` plus a
/// near-`u64::MAX` duration panics.
const MAX_SECONDS: u64 = 7 * 86_400;

/// The shortest rate window (`RATE_LIMIT_PERIOD`), in seconds: below it, "N calls in any
/// window" stops meaning anything a server counts.
pub const RATE_PERIOD_FLOOR_S: f64 = 1.0;
/// The most calls per second of window (`RATE_LIMIT_CALLS` / `RATE_LIMIT_PERIOD`): at least
/// 1 ms per call. Past it the pacer's cell rounds to nothing and pacing is off in all but name.
pub const MAX_CALLS_PER_SECOND: f64 = 1000.0;
/// The shortest connect timeout, read timeout and request deadline, in seconds.
pub const TIMEOUT_FLOOR_S: f64 = 1.0;
const TIMEOUT_WHY: &str = "a shorter wait fails every call before DevRev can answer";

/// `RATE_LIMIT_CALLS` and `RATE_LIMIT_PERIOD`, checked together: a window of at least 1 s
/// and at least 1 ms per call, so no setting that rounds to nothing turns pacing off.
fn rate_limit(cli: &Cli) -> Result<(u32, Duration), AppError> {
    let calls_setting = setting(
        cli,
        &cli.rate_limit_calls,
        "rate_limit_calls",
        "RATE_LIMIT_CALLS",
    );
    let calls: u32 = calls_setting.positive(45, "a whole number of calls")?;
    let period = setting(
        cli,
        &cli.rate_limit_period,
        "rate_limit_period",
        "RATE_LIMIT_PERIOD",
    )
    .seconds_from(
        60.0,
        RATE_PERIOD_FLOOR_S,
        "a shorter window makes the pacing meaningless (use RATE_LIMIT_CALLS for the rate)",
        MAX_SECONDS,
    )?;
    let most = (period.as_secs_f64() * MAX_CALLS_PER_SECOND).floor();
    if f64::from(calls) > most {
        return Err(AppError::Config(format!(
            "{}={calls} is too many for a window of {} s: the floor is 1 ms per call, so at \
             most {most} calls in that window. Lower it, or lengthen RATE_LIMIT_PERIOD \
             (--rate-limit-period).",
            calls_setting.source,
            period.as_secs_f64()
        )));
    }
    Ok((calls, period))
}

/// The smallest `DEVREV_MERGE_MIN_BACKOFF_MS` a release build accepts: the demo's 100 ms. A
/// backoff of nothing would spend every retry of a 5xx within a millisecond and shrink the
/// merge poll windows that are derived from it. Debug builds (the end-to-end tests) may go
/// down to 1 ms.
pub const MIN_BACKOFF_FLOOR_MS: u64 = if cfg!(debug_assertions) { 1 } else { 100 };
/// The largest `DEVREV_MERGE_MIN_BACKOFF_MS`: one minute, the backoff's own ceiling.
pub const MIN_BACKOFF_MAX_MS: u64 = 60_000;

/// `DEVREV_MERGE_MIN_BACKOFF_MS`, the first delay of every retry and poll (default 1000 ms),
/// between [`MIN_BACKOFF_FLOOR_MS`] and [`MIN_BACKOFF_MAX_MS`]; anything else is exit 78
/// naming it (it used to be ignored when unreadable, and unbounded).
fn min_backoff() -> Result<Duration, AppError> {
    let raw = std::env::var("DEVREV_MERGE_MIN_BACKOFF_MS").unwrap_or_default();
    if raw.trim().is_empty() {
        return Ok(Duration::from_millis(1000));
    }
    match raw.trim().parse::<u64>() {
        Ok(ms) if (MIN_BACKOFF_FLOOR_MS..=MIN_BACKOFF_MAX_MS).contains(&ms) => {
            Ok(Duration::from_millis(ms))
        }
        _ => Err(AppError::Config(format!(
            "DEVREV_MERGE_MIN_BACKOFF_MS={:?} is not valid: expected a whole number of \
             milliseconds from {MIN_BACKOFF_FLOOR_MS} to {MIN_BACKOFF_MAX_MS} (default 1000). \
             Fix it in the environment or .env, or unset it.",
            crate::output::clip(&raw, 40)
        ))),
    }
}

/// [`Setting::new`] as a plain function, so a long list of settings reads as one call each.
fn setting<'a>(cli: &'a Cli, raw: &'a str, id: &str, env: &str) -> Setting<'a> {
    Setting::new(cli, raw, id, env)
}

impl Config {
    pub fn from_cli(cli: &Cli) -> Result<Self, AppError> {
        let command = command_from_cli(cli)?;
        let token = token_from_env()?;

        let base_raw = if cli.base_url.trim().is_empty() {
            DEFAULT_BASE_URL
        } else {
            cli.base_url.as_str()
        };
        let base_url = parse_base_url(base_raw)?;

        let (rate_limit_calls, rate_limit_period) = rate_limit(cli)?;
        let connect_timeout = setting(
            cli,
            &cli.connect_timeout,
            "connect_timeout",
            "DEVREV_CONNECT_TIMEOUT",
        )
        .seconds_from(30.0, TIMEOUT_FLOOR_S, TIMEOUT_WHY, MAX_SECONDS)?;
        let read_timeout = setting(
            cli,
            &cli.read_timeout,
            "read_timeout",
            "DEVREV_READ_TIMEOUT",
        )
        .seconds_from(60.0, TIMEOUT_FLOOR_S, TIMEOUT_WHY, MAX_SECONDS)?;
        let limits = limits(cli)?;
        let merge_timeout = merge_timeout(cli)?;
        let merge_watch = merge_watch(cli)?;
        let retries = Setting::new(cli, &cli.max_retries, "max_retries", "DEVREV_MAX_RETRIES");
        let max_retries = if retries.raw.trim().is_empty() {
            3
        } else {
            retries.raw.trim().parse::<u32>().map_err(|_| {
                AppError::Config(format!(
                    "{}={:?} is not valid: expected a whole number of retries (0 or more).",
                    retries.source, retries.raw
                ))
            })?
        };
        let min_backoff = min_backoff()?;

        Ok(Config {
            command,
            token,
            base_url,
            rate_limit_calls,
            rate_limit_period,
            connect_timeout,
            read_timeout,
            limits,
            max_retries,
            page_size: 100,
            min_backoff,
            keep: cli.keep,
            decisions: cli.decisions.clone(),
            accept_proposed: cli.accept_proposed,
            all_in_report: cli.all_in_report,
            resend_unapplied: cli.resend_unapplied,
            carry: !cli.no_carry,
            email_domain: cli
                .email_domain
                .as_ref()
                .map(|d| d.trim().trim_start_matches('@').to_lowercase()),
            backup_scope: cli.backup_scope,
            backup_dir: cli.backup_dir.clone(),
            log_dir: cli.log_dir.clone(),
            report_dir: cli.report_dir.clone(),
            savepoint: cli.savepoint.clone(),
            yes: cli.yes,
            max_merges: cli.max_merges,
            one_merge_at_a_time: cli.one_merge_at_a_time,
            merge_timeout,
            merge_watch,
            json: cli.json,
            verbose: cli.verbose,
            printer: Printer::new(cli.quiet),
        })
    }

    /// Settings for the API client; fails with exit 78 when no token is configured.
    pub fn client_config(&self) -> Result<ClientConfig, AppError> {
        let token = self.token.clone().ok_or_else(|| {
            AppError::Config(
                "no DevRev API token: set DEVREV_API_TOKEN in the environment or in a .env file \
                 in the current folder (copy .env.example to .env and fill it in)."
                    .into(),
            )
        })?;
        Ok(ClientConfig {
            base_url: self.base_url.clone(),
            token,
            rate_limit_calls: self.rate_limit_calls,
            rate_limit_period: self.rate_limit_period,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            max_retries: self.max_retries,
            page_size: self.page_size,
            min_backoff: self.min_backoff,
            limits: self.limits,
        })
    }
}

/// Which command the flags name, with its own checks. clap's argument group makes exactly
/// one command flag mandatory; what it cannot express is checked here, with the same exit
/// codes the commands used to give.
fn command_from_cli(cli: &Cli) -> Result<Command, AppError> {
    if let Some(shell) = cli.generate_completions {
        return Ok(Command::Completions(shell));
    }
    if cli.generate_man {
        return Ok(Command::Man);
    }
    if cli.test_api {
        return Ok(Command::TestApi);
    }
    if cli.status {
        return Ok(Command::Status);
    }
    if cli.demo {
        return Ok(Command::Demo {
            dir: cli.demo_dir.clone(),
        });
    }
    if let Some(output) = &cli.export_contacts {
        if output.symlink_metadata().is_ok() && !cli.force {
            return Err(AppError::CantCreate(format!(
                "{} already exists{}; add --force to overwrite it, or choose another file name",
                output.display(),
                link_note(output)
            )));
        }
        return Ok(Command::ExportContacts {
            output: output.clone(),
            force: cli.force,
        });
    }
    if let Some(dir) = &cli.verify_backups {
        return Ok(Command::VerifyBackups {
            dir: dir.clone(),
            against_api: cli.against_api,
        });
    }
    if cli.decisions.is_some() && cli.csv.is_none() && !cli.create_test_sample {
        return Err(AppError::Usage(
            "--decisions FILE goes with --csv FILE (the preview and the merge run) or with \
             --create-test-sample: the commands that read a decisions file"
                .into(),
        ));
    }
    if cli.create_test_sample {
        return sample_args(cli).map(Command::Sample);
    }
    if !cli.restore.is_empty() {
        return Ok(Command::Restore {
            inputs: cli.restore.clone(),
            preview: cli.preview,
        });
    }
    match &cli.csv {
        Some(csv) if cli.backup_only => Ok(Command::BackupOnly { csv: csv.clone() }),
        Some(csv) if cli.preview => Ok(Command::Preview {
            csv: csv.clone(),
            check_live: cli.check_live,
        }),
        Some(csv) => {
            merge_timeout(cli)?;
            Ok(Command::Merge { csv: csv.clone() })
        }
        None => Err(AppError::Usage(
            "nothing to do: give one of --csv FILE [--preview | --backup-only], --test-api, \
             --create-test-sample, --verify-backups DIR, --restore PATH, --export-contacts FILE \
             or --demo \
             (see --help)"
                .into(),
        )),
    }
}

/// The client's bounds on listings, requests and answers (docs/limits.md).
fn limits(cli: &Cli) -> Result<Limits, AppError> {
    let d = Limits::default();
    Ok(Limits {
        request_deadline: setting(
            cli,
            &cli.request_deadline,
            "request_deadline",
            "DEVREV_REQUEST_DEADLINE",
        )
        .seconds_from(
            d.request_deadline.as_secs_f64(),
            TIMEOUT_FLOOR_S,
            TIMEOUT_WHY,
            MAX_SECONDS,
        )?,
        max_pages: setting(cli, &cli.max_pages, "max_pages", "DEVREV_MAX_PAGES").count(
            u64::from(d.max_pages),
            u64::from(u32::MAX),
            "a whole number of pages",
        )? as u32,
        max_answer_bytes: setting(
            cli,
            &cli.max_answer_bytes,
            "max_answer_bytes",
            "DEVREV_MAX_ANSWER_BYTES",
        )
        .count(d.max_answer_bytes, 1 << 40, "a whole number of bytes")?,
    })
}

/// `--merge-timeout` in whole seconds, 1 to a week.
fn merge_timeout(cli: &Cli) -> Result<Duration, AppError> {
    let raw = cli.merge_timeout.trim();
    // A zero timeout would make "not merged a full --merge-timeout after the request"
    // true at once, and a lost answer could then lead to a second merge request.
    if raw == "0" {
        return Err(AppError::Config(
            "--merge-timeout 0 is not allowed: DevRev applies merges after a delay, so \
             the run must be able to wait for one (default 120 s)"
                .into(),
        ));
    }
    let setting = Setting {
        raw,
        source: "--merge-timeout".into(),
    };
    let secs = setting.count(120, MAX_SECONDS, "a whole number of seconds")?;
    Ok(Duration::from_secs(secs))
}

/// The lowest `--merge-watch` a user may set, in seconds.
pub const MERGE_WATCH_FLOOR_S: u64 = 300;

/// `--merge-watch`, which only debug builds let the end-to-end tests shorten (they cannot wait
/// minutes): `DEVREV_MERGE_TEST_WATCH_MS` does not exist in release builds, so the floor
/// holds for every user.
fn merge_watch(cli: &Cli) -> Result<Duration, AppError> {
    let setting = Setting {
        raw: cli.merge_watch.trim(),
        source: "--merge-watch".into(),
    };
    let secs = setting.count(600, MAX_SECONDS, "a whole number of seconds")?;
    if secs < MERGE_WATCH_FLOOR_S {
        return Err(AppError::Config(format!(
            "--merge-watch {secs} is below its floor of {MERGE_WATCH_FLOOR_S} s: DevRev is \
             slowest exactly when merge answers get lost, and a shorter window could send a \
             second merge for a pair whose first one is still being applied"
        )));
    }
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("DEVREV_MERGE_TEST_WATCH_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Ok(Duration::from_millis(ms));
    }
    Ok(Duration::from_secs(secs))
}

fn sample_args(cli: &Cli) -> Result<SampleArgs, AppError> {
    let (Some(input), Some(output)) = (cli.input.clone(), cli.output.clone()) else {
        return Err(AppError::Usage(
            "--create-test-sample needs --input FILE and --output FILE".into(),
        ));
    };
    let size = cli.size;
    if size == 0 || !size.is_multiple_of(2) {
        return Err(AppError::Usage(format!(
            "--size {size}: the sample holds whole pairs (two rows each), so --size must be an \
             even number of at least 2, e.g. --size 4 for two pairs"
        )));
    }
    if same_file(&input, &output) {
        return Err(AppError::Usage(format!(
            "--output {} is the input file itself; choose another name",
            output.display()
        )));
    }
    if output.symlink_metadata().is_ok() && !cli.force {
        return Err(AppError::CantCreate(format!(
            "{} already exists{}; add --force to overwrite it, or choose another --output",
            output.display(),
            link_note(&output)
        )));
    }
    Ok(SampleArgs {
        input,
        output,
        size,
        seed: cli.seed,
        force: cli.force,
    })
}

/// The same file under two names (a link, `./x` and `x`).
fn same_file(a: &Path, b: &Path) -> bool {
    crate::platform::same_file(a, b)
}

/// Loads `path` (`.env` in the current folder) into the environment without overriding
/// variables already set. A missing file is fine; a malformed one is a configuration error
/// (exit 78) naming the file and the line, never its content, which may hold the token.
pub fn load_dotenv(path: &Path) -> Result<(), AppError> {
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(dotenvy::Error::LineParse(bad, _)) => {
            let line = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| line_of(&text, &bad))
                .map_or_else(String::new, |n| format!(" line {n}"));
            Err(AppError::Config(format!(
                "{}{line} cannot be read as NAME=value: fix or remove that line \
                 (see .env.example; quote values that hold spaces or special characters)",
                path.display()
            )))
        }
        Err(e) => Err(AppError::Config(format!(
            "cannot load {}: {e}",
            path.display()
        ))),
    }
}

/// The 1-based number of the line where `fragment` starts in `text`.
fn line_of(text: &str, fragment: &str) -> Option<usize> {
    let first = fragment.lines().next().filter(|l| !l.trim().is_empty())?;
    let at = text.find(first)?;
    Some(text[..at].matches('\n').count() + 1)
}

/// Accepts `https://` anywhere and `http://` only for loopback hosts (local fakes); a token
/// must never travel in clear text over a network.
pub fn parse_base_url(raw: &str) -> Result<url::Url, AppError> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| {
        AppError::Config(format!("DEVREV_BASE_URL {raw:?} is not a valid URL: {e}"))
    })?;
    // Whatever is in the URL is copied into reports and logs; credentials belong in
    // DEVREV_API_TOKEN only.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::Config(
            "DEVREV_BASE_URL must not contain a user name or password: the API token goes in \
             DEVREV_API_TOKEN, and the base URL is copied into reports and logs."
                .into(),
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(AppError::Config(format!(
                    "refusing plain http:// base URL {raw:?}: the API token would travel \
                     unencrypted. Use https://, or http:// only for a loopback address \
                     (127.0.0.1, ::1, localhost)."
                )));
            }
        }
        other => {
            return Err(AppError::Config(format!(
                "DEVREV_BASE_URL {raw:?} has scheme {other:?}; use https://"
            )));
        }
    }
    // `Url::join` drops the last path segment unless the base ends with '/'.
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// `DEVREV_API_TOKEN` (environment or `.env`), trimmed; empty counts as unset.
fn token_from_env() -> Result<Option<SecretString>, AppError> {
    let token = std::env::var("DEVREV_API_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    // A token that cannot be an HTTP header would fail every call as an "unexpected
    // answer"; say so once, here, without echoing it.
    if let Some(t) = &token
        && reqwest::header::HeaderValue::from_str(t.expose_secret()).is_err()
    {
        return Err(AppError::Config(
            "DEVREV_API_TOKEN holds characters a token cannot have (a line break, a \
             control character or non-ASCII text?); copy it again into the environment \
             or .env"
                .into(),
        ));
    }
    Ok(token)
}

/// " (as a symbolic link)" when `path` is one: a dangling link "exists" too, and the error
/// should say why a file the user cannot see is in the way.
fn link_note(path: &std::path::Path) -> &'static str {
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        " (as a symbolic link)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_env_file_is_an_error_naming_its_line_not_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "# comment\nDEVREV_MERGE_TEST_OK=1\nnot a setting s3cr3t\n",
        )
        .unwrap();
        let e = load_dotenv(&path).unwrap_err();
        assert_eq!(e.exit_code(), 78);
        let msg = e.to_string();
        assert!(msg.contains(".env line 3"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(load_dotenv(&dir.path().join("missing.env")).is_ok());
    }

    #[test]
    fn http_only_for_loopback() {
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("http://localhost:1").is_ok());
        assert!(parse_base_url("http://[::1]:9").is_ok());
        assert!(parse_base_url("https://api.devrev.ai").is_ok());
        let e = parse_base_url("http://api.devrev.ai").unwrap_err();
        assert!(e.to_string().contains("refusing plain http://"));
        assert_eq!(e.exit_code(), 78);
        assert!(parse_base_url("ftp://x").is_err());
    }

    #[test]
    fn credentials_in_the_base_url_are_refused_without_echoing_them() {
        let e = parse_base_url("https://me:s3cr3t@api.devrev.ai").unwrap_err();
        assert_eq!(e.exit_code(), 78);
        assert!(!e.to_string().contains("s3cr3t"));
        assert!(parse_base_url("https://tok@api.devrev.ai").is_err());
    }

    #[test]
    fn base_url_gets_trailing_slash_so_endpoints_join() {
        let u = parse_base_url("https://h/internal").unwrap();
        assert_eq!(
            u.join("works.list").unwrap().as_str(),
            "https://h/internal/works.list"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let cfg = ClientConfig {
            base_url: parse_base_url("https://h").unwrap(),
            token: SecretString::from("s3cr3t-token"),
            rate_limit_calls: 1,
            rate_limit_period: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_retries: 0,
            page_size: 1,
            min_backoff: Duration::from_millis(1),
            limits: Limits::default(),
        };
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }
}
