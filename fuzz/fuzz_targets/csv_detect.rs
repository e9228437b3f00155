//! Any bytes as a contacts CSV: reading and detection may refuse them (exit 65), never panic.
#![no_main]

use std::io::Cursor;

use devrev_merge::detect::{self, DetectOptions};
use devrev_merge::options::Keep;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = DetectOptions {
        keep: Keep::Revu,
        email_domain: None,
    };
    if let Err(e) = detect::plan_from_reader("fuzz.csv", Cursor::new(data), &opts) {
        assert_eq!(e.exit_code(), 65, "{e}");
    }
});
