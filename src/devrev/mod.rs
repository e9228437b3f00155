//! The DevRev API: one client shared by every command, its errors and its models.

mod client;
mod don;
mod error;
mod line;
mod retry;
pub mod types;

pub use client::{
    CallKind, ClientConfig, DevRevClient, EndpointStats, Limits, RateHeaders, Turn, is_loopback,
    pacer_quota,
};
pub use don::org_of;
pub use error::{ApiError, ErrorBody, REDACTED, Scope, Unshown, scrub};
