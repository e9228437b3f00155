//! Dispatch: from the validated configuration to the one command it names.

use crate::cli::Cli;
use crate::commands;
use crate::config::{Command, Config};
use crate::error::AppError;

/// Runs the command the user asked for. `main` maps the error to an exit code.
pub fn run(cli: Cli) -> Result<(), AppError> {
    let cfg = Config::from_cli(&cli)?;
    // Generated text goes to stdout alone: no log folder, no runtime.
    match cfg.command {
        Command::Completions(shell) => return commands::generate::completions(shell),
        Command::Man => return commands::generate::man(),
        _ => {}
    }
    let log_file = crate::logging::init(cfg.verbose, cfg.printer.is_quiet(), Some(&cfg.log_dir))?;
    if let Some(p) = &log_file {
        tracing::debug!(log_file = %p.display(), "logging to file");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AppError::io("cannot start the async runtime", e))?;

    match &cfg.command {
        Command::TestApi => rt.block_on(commands::test_api::run(&cfg)),
        Command::Preview { csv, check_live } => {
            rt.block_on(commands::preview::run(&cfg, csv, *check_live))
        }
        Command::Sample(args) => commands::sample::run(&cfg, args),
        Command::BackupOnly { csv } => rt.block_on(commands::backup_only::run(&cfg, csv)),
        Command::VerifyBackups { dir, against_api } => {
            rt.block_on(commands::verify_backups::run(&cfg, dir, *against_api))
        }
        Command::Merge { csv } => rt.block_on(commands::merge::run(&cfg, csv)),
        Command::Completions(_) | Command::Man => unreachable!("handled before logging starts"),
    }
}
