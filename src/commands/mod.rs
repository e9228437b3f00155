//! One file per command (uv's layout). Each takes the validated `Config` (and its own inputs
//! from `config::Command`), parses nothing and prints through `output`.

pub mod backup_only;
pub mod demo;
pub mod export;
pub mod generate;
pub mod merge;
pub mod preview;
pub mod restore;
pub mod sample;
pub mod status;
pub mod test_api;
pub mod verify_backups;
