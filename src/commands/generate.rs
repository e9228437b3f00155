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

/// The pages of `docs/`, built into the binary so that an installed `devrev-merge` carries
/// its reference: `--help-topic NAME`.
const TOPICS: [(&str, &str, &str); 8] = [
    (
        "review",
        "the review file, decisions, and what each word does",
        include_str!("../../docs/review.md"),
    ),
    (
        "restore",
        "undoing a merge with --restore",
        include_str!("../../docs/restore.md"),
    ),
    (
        "commands",
        "every command and flag",
        include_str!("../../docs/commands.md"),
    ),
    (
        "files",
        "every file written, its format and permissions",
        include_str!("../../docs/files.md"),
    ),
    (
        "api",
        "the DevRev API calls, their cost and the estimate",
        include_str!("../../docs/api.md"),
    ),
    (
        "limits",
        "sizes and limits",
        include_str!("../../docs/limits.md"),
    ),
    (
        "html-report",
        "the HTML pages",
        include_str!("../../docs/html-report.md"),
    ),
    (
        "benchmarks",
        "the benchmarks and their figures",
        include_str!("../../docs/benchmarks.md"),
    ),
];

/// `--help-topic TOPIC`: the page on stdout; `list` (or an unknown name, as a usage error)
/// names them all.
pub fn help_topic(name: &str) -> Result<(), AppError> {
    let list = || {
        TOPICS
            .iter()
            .map(|(n, what, _)| format!("  {n:<12} {what}\n"))
            .collect::<String>()
    };
    let wanted = name.trim().to_ascii_lowercase();
    if wanted == "list" {
        return crate::output::data(|w| {
            w.write_all(
                format!(
                    "Built-in pages (devrev-merge --help-topic NAME):\n{}",
                    list()
                )
                .as_bytes(),
            )
        });
    }
    match TOPICS.iter().find(|(n, _, _)| *n == wanted) {
        Some((_, _, text)) => crate::output::data(|w| w.write_all(text.as_bytes())),
        None => Err(AppError::Usage(format!(
            "--help-topic {name:?}: no such page. The pages are:\n{}",
            list()
        ))),
    }
}
