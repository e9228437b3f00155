//! A stateful fake DevRev API on 127.0.0.1, shared by devrev-merge's integration tests, the
//! standalone fake server (`cargo run --example fake_devrev`) and, later, the `--demo` command.
//!
//! It stays faithful to the API described in the project's `devrev-api.md`: the tests prove the
//! client against it, so any shortcut here would hide a real bug.
//!
//! `fake` is the public face (start, stop, inspect, script faults), `seed` builds the world it
//! serves, `handlers` is the API logic as plain functions over the state, `http` is the thin
//! axum layer that adds auth, rate limits, faults and the request log.
//!
//! The server runs on its own thread with its own single-threaded tokio runtime, so it starts
//! the same way from a plain `#[test]`, from `main`, or from inside a caller's tokio runtime
//! (it never blocks on the caller's runtime):
//!
//! ```
//! use devrev_fake::{FakeOptions, FakeServer, GenSpec, Seed};
//!
//! let fake = FakeServer::start(FakeOptions {
//!     seed: Seed::generate(&GenSpec { pairs: 3, ..GenSpec::default() }),
//!     ..FakeOptions::default()
//! });
//! let (url, token) = (fake.base_url(), fake.token());
//! assert!(url.starts_with("http://127.0.0.1:"));
//! assert_eq!(token, devrev_fake::DEFAULT_TOKEN);
//! let csv = fake.contacts_csv(); // the contacts export devrev-merge reads
//! assert!(csv.starts_with("REV_USER_ID,"));
//! // Dropping `fake` stops the server.
//! ```

pub mod fake;
mod handlers;
mod http;
pub mod rng;
pub mod schema;
pub mod seed;

pub use fake::{
    BodyQuirk, DEFAULT_TOKEN, FakeOptions, FakeServer, Fault, Hostile, MergeBehaviour, MoveMode,
    RandomFaults, RateLimit, ScriptedFault, SecondaryAfter,
};
pub use seed::{GenSpec, GroupKind, Seed};

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The `--demo` case: started from inside a running tokio runtime, it answers a request
    /// made on that same runtime, and dropping it there stops it.
    #[tokio::test(flavor = "current_thread")]
    async fn starts_and_answers_from_inside_a_tokio_runtime() {
        let fake = FakeServer::start(FakeOptions {
            seed: Seed::generate(&GenSpec {
                pairs: 2,
                ..GenSpec::default()
            }),
            ..FakeOptions::default()
        });
        let addr = fake.addr();
        assert_eq!(fake.base_url(), format!("http://{addr}"));
        let body = "{}";
        let request = format!(
            "POST /dev-users.self HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            fake.token(),
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"dev_user\""), "{answer}");
        assert_eq!(fake.count("dev-users.self"), 1);
        drop(fake);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
