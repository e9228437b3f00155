//! Any text as command-line values: lines are arguments after `--csv c.csv`. Parsing and
//! configuration may refuse them (exit 2, 73 or 78), never panic; any text as a base URL too.
#![no_main]

use devrev_merge::cli::Cli;
use devrev_merge::config::{Config, parse_base_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_base_url(text);
    let args = ["devrev-merge", "--csv", "c.csv"]
        .into_iter()
        .chain(text.split('\n'));
    if let Ok(cli) = Cli::parse_args(args)
        && let Err(e) = Config::from_cli(&cli)
    {
        assert!([2, 73, 78].contains(&e.exit_code()), "{e}");
    }
});
