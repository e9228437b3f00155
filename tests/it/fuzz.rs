//! Fuzzing by property (issue 10, point 9): arbitrary bytes through the CSV reader and
//! detection, arbitrary values through the command line and configuration. No input may
//! panic; every refusal is the documented exit code with a message of bounded size.
//!
//! The suite runs proptest's default 256 cases per property. A long run:
//! `PROPTEST_CASES=100000 cargo test --release --test it fuzz::` (see docs/limits.md).
//! The `fuzz/` folder holds the same two targets for cargo-fuzz (nightly).

use std::io::Cursor;

use devrev_merge::cli::Cli;
use devrev_merge::config::Config;
use devrev_merge::detect::{self, DetectOptions};
use devrev_merge::options::Keep;
use proptest::prelude::*;

/// Bytes drawn mostly from what a contacts CSV is made of, so the reader's quote, line and
/// field handling is reached far more often than by uniform bytes.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let alphabet =
        prop::sample::select(b",,,\"\"\n\n\r REVU-user_drop@x.com019\0\xff\xc3\xa9\x1b".to_vec());
    prop::collection::vec(alphabet, 0..2048)
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        csvish(),
        csvish().prop_map(|tail| {
            let mut v = b"REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,TICKET_COUNT\n".to_vec();
            v.extend(tail);
            v
        }),
    ]
}

proptest! {
    #[test]
    fn detection_never_panics_on_any_bytes(bytes in input(),
                                           keep in prop_oneof![Just(Keep::Revu), Just(Keep::User)]) {
        let opts = DetectOptions { keep, email_domain: None };
        match detect::plan_from_reader("fuzz.csv", Cursor::new(bytes), &opts) {
            Ok(plan) => {
                let rows = 2 * plan.pairs.len() as u64 + plan.review_rows()
                    + plan.no_email.len() as u64 + plan.singles.total() + plan.outside_domain;
                prop_assert_eq!(rows, plan.rows_read);
            }
            Err(e) => {
                prop_assert_eq!(e.exit_code(), 65, "{}", e);
                prop_assert!(e.to_string().len() < 16 * 1024, "{} bytes", e.to_string().len());
            }
        }
    }

    #[test]
    fn configuration_never_panics_on_any_value(
        flag in prop::sample::select(vec![
            "--rate-limit-calls", "--rate-limit-period", "--connect-timeout", "--read-timeout",
            "--max-retries", "--merge-timeout", "--request-deadline", "--max-pages",
            "--max-answer-bytes", "--base-url", "--max-merges", "--size", "--seed",
        ]),
        value in prop_oneof![
            any::<String>(),
            "[-+0-9.eE]{0,30}",
            Just("99999999999999999999".to_string()),
            Just("1e308".to_string()),
            Just("NaN".to_string()),
            Just("inf".to_string()),
        ],
    ) {
        let args = ["devrev-merge", "--csv", "c.csv", flag, value.as_str()];
        if let Ok(cli) = Cli::parse_args(args)
            && let Err(e) = Config::from_cli(&cli)
        {
            prop_assert!([2, 73, 78].contains(&e.exit_code()), "{}: {}", e.exit_code(), e);
        }
    }
}
