//! The fake DevRev server used by the integration tests and `examples/fake_devrev.rs`.
//!
//! `fake` is the public face (start, stop, inspect, script faults), `seed` builds the world it
//! serves, `handlers` is the API logic as plain functions over the state, `http` is the thin
//! axum layer that adds auth, rate limits, faults and the request log.
#![allow(dead_code)]

pub mod fake;
mod handlers;
mod http;
pub mod probe;
mod rng;
pub mod seed;
