//! Logging: human-readable lines on stderr (`-v`, `-q`) and a timestamped log file.
//!
//! Progress bars come from `tracing-indicatif`: a span created with
//! `indicatif.pb_show = true` becomes a bar (see [`progress_span`]), and log lines are
//! written through the same layer so they never tear a bar. Bars are hidden when stderr is
//! not a terminal or with `-q`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanDuration, ProgressState, ProgressStyle};

use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::filter::{IndicatifFilter, hide_indicatif_span_fields};
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::AppError;
use crate::fsutil;

/// Sets up logging for the process and returns the log file's path.
///
/// `log_dir = None` logs to stderr only (used by read-only commands that must not write
/// anything, such as a preview in a read-only folder).
/// What a log file starts with: which build ran which command line, so a log sent to a
/// colleague says what it is a log of.
pub struct LogHeader<'a> {
    /// The command's short name: the log is `<name>-<timestamp>.log`.
    pub name: &'a str,
    /// The command line as typed (no token: it is never a flag).
    pub command_line: &'a str,
}

/// The log file this process writes, once [`init`] opened one (errors shown on the console
/// are added to it by [`record_error`]).
static LOG_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Adds an error the console showed (the one `main` prints) to this process's log file, if it
/// has one: the log must hold what the user saw, a refused confirmation included.
pub fn record_error(message: &str) {
    use std::io::Write;
    let Some(path) = LOG_FILE.get() else { return };
    if let Ok(mut f) = open_private_append(path) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        for line in message.lines() {
            let _ = writeln!(f, "{now} ERROR {line}");
        }
    }
}

pub fn init(
    verbose: u8,
    quiet: bool,
    log_dir: Option<&Path>,
    header: &LogHeader<'_>,
) -> Result<Option<PathBuf>, AppError> {
    let console_level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let console_filter = EnvFilter::new(format!("warn,devrev_merge={console_level}"));

    let mut file_path = None;
    let file_layer = match log_dir {
        Some(dir) => {
            let loosened = fsutil::tighten_private_dir(dir).map_err(|e| {
                AppError::CantCreate(format!("cannot create log folder {}: {e}", dir.display()))
            })?;
            // Logging is not running yet: say it directly.
            if let Some(was) = loosened {
                crate::output::human(&format!(
                    "warning: log folder {} was open to others ({was})\n",
                    dir.display()
                ));
            }
            let path = fsutil::unique_path(dir, header.name, "log");
            let cant = |e: std::io::Error| {
                AppError::CantCreate(format!("cannot create log file {}: {e}", path.display()))
            };
            let mut file = open_private_append(&path).map_err(cant)?;
            {
                use std::io::Write;
                writeln!(
                    file,
                    "devrev-merge {}\ncommand line: {}",
                    env!("CARGO_PKG_VERSION"),
                    header.command_line
                )
                .map_err(cant)?;
            }
            let _ = LOG_FILE.set(path.clone());
            file_path = Some(path);
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_target(false)
                    .fmt_fields(hide_indicatif_span_fields(DefaultFields::new()))
                    .with_writer(Mutex::new(file))
                    .with_filter(EnvFilter::new("warn,devrev_merge=debug")),
            )
        }
        None => None,
    };

    let indicatif = IndicatifLayer::new()
        .with_span_field_formatter(hide_indicatif_span_fields(DefaultFields::new()));
    // Progress-bar spans carry `indicatif.*` fields; log lines must not print them, and colour
    // codes only belong on a terminal, and not with NO_COLOR.
    let console = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_ansi(crate::output::color_on_stderr())
        .fmt_fields(hide_indicatif_span_fields(DefaultFields::new()))
        .with_writer(indicatif.get_stderr_writer())
        .with_filter(console_filter);
    let bars = (!quiet).then(|| indicatif.with_filter(IndicatifFilter::new(false)));

    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file_layer)
        .with(bars)
        .try_init();
    Ok(file_path)
}

fn open_private_append(path: &Path) -> std::io::Result<fs::File> {
    fsutil::open_private(path, true)
}

/// The look of every progress bar: `merging [=====>    ] 3/20 ETA 1m 40s pair@example.com`.
/// The message is `wide_msg`: cut to the terminal's width, so the line never wraps.
pub fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template("{span_name} [{bar:24}] {pos}/{len} {eta_once_moving}{wide_msg}")
        .expect("valid template")
        .progress_chars("=> ")
        .with_key(
            "eta_once_moving",
            |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = w.write_str(&eta_text(state.pos(), state.eta()));
            },
        )
}

/// A bar whose message carries its own estimate (the merge run's, from measured calls at the
/// rate limit): no second, rate-of-bar ETA beside it.
pub fn measured_progress_style() -> ProgressStyle {
    ProgressStyle::with_template("{span_name} [{bar:24}] {pos}/{len} {wide_msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

/// `ETA …` once a step is done; before that there is no rate to estimate from, and
/// indicatif's `{eta}` would claim "0s".
fn eta_text(pos: u64, eta: Duration) -> String {
    if pos == 0 {
        String::new()
    } else {
        format!("ETA {:#} ", HumanDuration(eta))
    }
}

/// A span that shows as a progress bar with `len` steps while entered.
///
/// Use `tracing_indicatif::span_ext::IndicatifSpanExt` on it (`pb_inc`, `pb_set_message`).
#[macro_export]
macro_rules! progress_span {
    ($name:expr, $len:expr) => {{
        use tracing_indicatif::span_ext::IndicatifSpanExt as _;
        let span = tracing::info_span!($name, indicatif.pb_show = true);
        span.pb_set_style(&$crate::logging::progress_style());
        span.pb_set_length($len as u64);
        span
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_eta_before_the_first_step() {
        // At 0 of N indicatif's estimate is 0 s, which reads as "almost done".
        assert_eq!(eta_text(0, Duration::ZERO), "");
        assert_eq!(eta_text(0, Duration::from_secs(90)), "");
        assert_eq!(eta_text(3, Duration::from_secs(600)), "ETA 10m ");
    }

    #[test]
    fn the_style_builds() {
        let _ = measured_progress_style();
        // The template is checked at run time; a typo would panic in the first bar.
        let _ = progress_style();
    }
}
