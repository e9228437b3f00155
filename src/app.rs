//! Dispatch: from the parsed command line to the command that runs.

use crate::cli::Cli;
use crate::config::Config;
use crate::error::AppError;

/// Runs the command the user asked for. `main` maps the error to an exit code.
pub fn run(cli: Cli) -> Result<(), AppError> {
    let cfg = Config::from_cli(&cli)?;
    let log_file = crate::logging::init(cli.verbose, cli.quiet, Some(&cfg.log_dir))?;
    if let Some(p) = &log_file {
        tracing::debug!(log_file = %p.display(), "logging to file");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AppError::io("cannot start the async runtime", e))?;

    if cli.test_api {
        return rt.block_on(crate::test_api::run(&cfg));
    }
    if let Some(dir) = &cli.verify_backups {
        return rt.block_on(crate::backup::commands::verify_backups(
            &cfg,
            dir,
            cli.against_api,
        ));
    }
    if let (true, Some(csv)) = (cli.backup_only, &cli.csv) {
        return rt.block_on(crate::backup::commands::backup_only(&cfg, csv));
    }
    if cli.create_test_sample {
        return crate::sample::run(&cli, &cfg);
    }
    if let (Some(csv), true) = (&cli.csv, cli.preview) {
        return rt.block_on(crate::preview::run(&cfg, csv, cli.check_live));
    }
    if let Some(csv) = cli
        .csv
        .as_deref()
        .filter(|_| !cli.preview && !cli.backup_only)
    {
        return rt.block_on(crate::merge::run(&cfg, csv));
    }
    // clap's argument group makes one command mandatory, so only a flag combination it
    // cannot express (e.g. `--backup-only` without `--csv`) gets here.
    Err(AppError::Usage(
        "nothing to do: give one of --csv FILE [--preview | --backup-only], --test-api, \
         --create-test-sample or --verify-backups DIR (see --help)"
            .into(),
    ))
}
