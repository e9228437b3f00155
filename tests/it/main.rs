//! The one integration-test binary: each module tests one feature against the fake DevRev
//! (the `devrev-fake` workspace crate, `crates/devrev-fake/`).

mod backup;
mod cli;
mod closed_pipe;
mod common;
mod detect;
mod fake_selftest;
mod merge;
mod merge_crash;
mod merge_safety;
mod probe;
mod snapshots;
mod test_api;
