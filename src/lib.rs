//! devrev-merge: safely merge duplicate DevRev contacts.
//!
//! The binary (`main.rs`) only loads `.env`, parses the command line and maps errors to exit
//! codes; everything else lives here so tests and benchmarks can reach it.

pub mod app;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod csvrec;
pub mod detect;
pub mod devrev;
pub mod error;
pub mod fsutil;
pub mod html;
pub mod logging;
pub mod merge;
pub mod options;
pub mod output;
pub mod planfile;
pub mod platform;
pub mod preview;
pub mod restore;
pub mod review;
pub mod spreadsheet;
pub mod validate;
