//! The DevRev API: one client shared by every command, its errors and its models.

mod client;
mod error;
mod retry;
pub mod types;

pub use client::{
    CallKind, ClientConfig, DevRevClient, EndpointStats, Limits, RateHeaders, is_loopback,
    pacer_quota,
};
pub use error::{ApiError, ErrorBody, Scope};
