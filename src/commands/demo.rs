//! placeholder
use crate::config::Config;
use crate::error::AppError;
use std::path::Path;
pub fn run(_cfg: &Config, _dir: Option<&Path>) -> Result<(), AppError> {
    todo!()
}
