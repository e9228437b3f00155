//! `--generate-completions SHELL` and `--generate-man`: shell completions and the man page,
//! generated from the clap definitions so they cannot drift from `--help`.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::AppError;
use crate::output;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> Result<(), AppError> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "devrev-merge", &mut script);
    output::data(|w| w.write_all(&script))
}

/// Prints the man page (roff) on stdout.
pub fn man() -> Result<(), AppError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| AppError::io("cannot render the man page", e))?;
    output::data(|w| w.write_all(&page))
}
