//! The DevRev API: one client shared by every command, its errors and its models.

mod client;
mod error;
pub mod types;

pub use client::{pacer_quota, CallKind, ClientConfig, DevRevClient, EndpointStats, RateHeaders};
pub use error::{ApiError, ErrorBody};
