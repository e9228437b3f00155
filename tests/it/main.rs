//! The one integration-test binary: each module tests one feature against the fake DevRev
//! (the `devrev-fake` workspace crate, `crates/devrev-fake/`). They run on Linux (CI); the
//! crash, signal and resource-limit modules are Unix-only by design and marked so. Windows is
//! covered by the library's unit tests and `--demo` under Wine (README, "Built and tested
//! where").

mod backup;
mod batched;
mod calls;
mod carry;
mod cli;
// Unix-only by design: a closed pipe made with pipe(2), SIGPIPE.
#[cfg(unix)]
mod closed_pipe;
mod common;
mod decided;
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
// Unix-only by design: setrlimit, getrusage, SIGXFSZ, file modes.
#[cfg(unix)]
mod limits;
mod lost;
mod merge;
// Unix-only by design: kills the binary mid-step and sends SIGINT.
#[cfg(unix)]
mod merge_crash;
mod merge_safety;
mod once;
mod pipeline;
mod probe;
mod restore;
// Unix-only by design: kills the binary mid-step and sends SIGINT.
#[cfg(unix)]
mod restore_crash;
mod review;
mod snapshots;
mod status;
mod test_api;
