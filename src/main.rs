//! The `devrev-merge` binary: load `.env`, parse, run, map the error to an exit code.

use std::path::Path;
use std::process::ExitCode;

use devrev_merge::{app, cli::Cli, config, output};

fn main() -> ExitCode {
    // Before anything reads the environment, and from the current folder only: variables
    // already set win over `.env` (flag > environment > .env > default).
    let dotenv = config::load_dotenv(Path::new(".env"));
    if std::env::args_os().len() <= 1 {
        print!("{}", devrev_merge::cli::FIRST_SCREEN);
        return ExitCode::SUCCESS;
    }
    // clap prints its own usage errors, --help and --version, and exits (2 or 0).
    let cli = Cli::parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // The generators read no setting, so a malformed `.env` does not stop them; every other
    // command stops on it (exit 78) before doing anything.
    let generator = cli.generate_completions.is_some() || cli.generate_man;
    let result = match dotenv {
        Err(e) if !generator => Err(e),
        _ => app::run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("error: {e}");
            devrev_merge::logging::record_error(&message);
            output::human(&format!("{message}\n"));
            ExitCode::from(e.exit_code())
        }
    }
}
