//! Dispatch: from the validated configuration to the one command it names.

use std::future::Future;

use crate::cli::Cli;
use crate::commands;
use crate::config::{Command, Config};
use crate::error::AppError;

/// Runs the command the user asked for. `main` maps the error to an exit code.
pub fn run(cli: Cli) -> Result<(), AppError> {
    // Generated text goes to stdout alone: no log folder, no runtime, and no setting read, so
    // whatever the environment or `.env` holds cannot stop the completions from installing.
    if let Some(shell) = cli.generate_completions {
        return commands::generate::completions(shell);
    }
    if cli.generate_man {
        return commands::generate::man();
    }
    if let Some(topic) = &cli.help_topic {
        return commands::generate::help_topic(topic);
    }
    let cfg = Config::from_cli(&cli)?;
    match &cfg.command {
        Command::Completions(shell) => commands::generate::completions(*shell),
        Command::Man => commands::generate::man(),
        // Read-only and offline: no log file, no runtime.
        Command::Status => commands::status::run(&cfg),
        Command::Sample(args) => {
            start_logging(&cfg)?;
            commands::sample::run(&cfg, args)
        }
        Command::TestApi => block_on(&cfg, commands::test_api::run(&cfg)),
        Command::Preview { csv, check_live } => {
            block_on(&cfg, commands::preview::run(&cfg, csv, *check_live))
        }
        Command::BackupOnly { csv } => block_on(&cfg, commands::backup_only::run(&cfg, csv)),
        Command::VerifyBackups { dir, against_api } => {
            block_on(&cfg, commands::verify_backups::run(&cfg, dir, *against_api))
        }
        Command::Merge { csv } => block_on(&cfg, commands::merge::run(&cfg, csv)),
        Command::Restore { inputs, preview } => {
            block_on(&cfg, commands::restore::run(&cfg, inputs, *preview))
        }
        Command::ExportContacts { output, force } => {
            block_on(&cfg, commands::export::run(&cfg, output, *force))
        }
        // The demo writes nothing in the current folder (no log folder here): each step is
        // a child process logging inside the demo's own folder.
        Command::Demo { dir } => commands::demo::run(&cfg, dir.as_deref()),
    }
}

/// Logs to stderr and to a file under `--log-dir`.
fn start_logging(cfg: &Config) -> Result<(), AppError> {
    let command_line = command_line(cfg);
    let header = crate::logging::LogHeader {
        name: cfg.command.log_name(),
        command_line: &command_line,
    };
    let log_file = crate::logging::init(
        cfg.verbose,
        cfg.printer.is_quiet(),
        Some(&cfg.log_dir),
        &header,
    )?;
    if let Some(p) = &log_file {
        tracing::debug!(log_file = %p.display(), "logging to file");
    }
    Ok(())
}

/// The command line as typed, each argument quoted where a shell would need it. The token is
/// never a flag, but a value that equals it (pasted by mistake) is masked all the same.
fn command_line(cfg: &Config) -> String {
    use secrecy::ExposeSecret;
    let token = cfg.token.as_ref().map(|t| t.expose_secret().to_string());
    std::iter::once("devrev-merge".to_string())
        .chain(std::env::args().skip(1).map(|a| {
            let a = match &token {
                Some(t) if !t.is_empty() && a.contains(t.as_str()) => {
                    a.replace(t.as_str(), "[token]")
                }
                _ => a,
            };
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:@,+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts logging and the runtime, then runs `command` to its end. Futures do nothing until
/// polled, so the command starts only once logging is up.
fn block_on(
    cfg: &Config,
    command: impl Future<Output = Result<(), AppError>>,
) -> Result<(), AppError> {
    start_logging(cfg)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AppError::io("cannot start the async runtime", e))?
        .block_on(command)
}
