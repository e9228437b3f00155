//! The one integration-test binary: each module tests one feature against the fake DevRev
//! (the `devrev-fake` workspace crate, `crates/devrev-fake/`).

mod backup;
mod calls;
mod carry;
mod cli;
mod closed_pipe;
mod common;
mod demo;
mod detect;
mod estimate;
mod export;
mod fake_selftest;
mod fuzz;
mod groups;
mod hardening;
mod html;
mod keep_auto;
mod ledger;
mod limits;
mod lost;
mod merge;
mod merge_crash;
mod merge_safety;
mod pipeline;
mod probe;
mod restore;
mod restore_crash;
mod review;
mod snapshots;
mod status;
mod test_api;
