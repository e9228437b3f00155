//! The `devrev-merge` binary: load `.env`, parse, run, map the error to an exit code.

use std::process::ExitCode;

use clap::Parser;
use devrev_merge::{app, cli::Cli, output};

fn main() -> ExitCode {
    // Before anything reads the environment, and from the current folder only: variables
    // already set win over `.env` (flag > environment > .env > default).
    let _ = dotenvy::from_path(".env");
    let cli = Cli::parse();
    match app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::human(&format!("error: {e}\n"));
            ExitCode::from(e.exit_code())
        }
    }
}
