//! The one integration-test binary: each module tests one feature against the fake DevRev.

#[path = "../support/mod.rs"]
mod support;

mod backup;
mod cli;
mod closed_pipe;
mod common;
mod detect;
mod fake_selftest;
mod merge;
mod merge_crash;
mod test_api;
