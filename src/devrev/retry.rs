//! The client's retry decision, kept pure so every case can be read and tested in one table:
//! what failed, how the call may be repeated, and how many attempts were made go in; whether
//! to try again, give up, or tell the caller the outcome is unknown comes out.

use std::time::Duration;

use super::CallKind;

/// One failed attempt, reduced to what the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// DevRev (or a proxy) answered an error status; `retry_after` is its wait in seconds,
    /// from the `Retry-After` header or else the error body.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// A 2xx whose body could not be read.
    Decode,
    /// No answer; `connect` means the connection was never made, so nothing reached DevRev.
    Transport { connect: bool },
}

impl Failure {
    /// The wait DevRev asked for: only a 429 asks, one second when it does not say how long.
    pub(crate) fn server_wait(self) -> Option<Duration> {
        match self {
            Failure::Status {
                status: 429,
                retry_after,
            } => Some(Duration::from_secs(retry_after.unwrap_or(1))),
            _ => None,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try again after the backoff delay, and not before `server_wait` if DevRev asked.
    Retry { server_wait: Option<Duration> },
    /// Give up with the error as it is.
    Fail,
    /// DevRev asked to wait longer than this tool will: waiting less would only earn another
    /// 429, waiting hours unannounced looks like a hang. Give up; the run resumes later.
    WaitTooLong(Duration),
    /// The write may have been applied: the caller must look at the state before repeating it.
    OutcomeUnknown,
}

/// Decides after attempt number `attempt` (1 for the first) failed. `max_retries` counts the
/// attempts after the first; `max_server_wait` is the longest 429 wait honoured.
pub(crate) fn decide(
    failure: Failure,
    kind: CallKind,
    attempt: u32,
    max_retries: u32,
    max_server_wait: Duration,
) -> Decision {
    let write = kind == CallKind::Write;
    let retryable = match failure {
        // Any 5xx to a non-idempotent write may come after DevRev (or a proxy in front of
        // it) already passed it on: merges are queued asynchronously, and a 503 from a load
        // balancer says nothing about the backend. Only watching the state can tell, so it is
        // never repeated blindly. A 429 is DevRev's own refusal before any work: retried.
        Failure::Status {
            status: 500..=599, ..
        } if write => return Decision::OutcomeUnknown,
        Failure::Status { status: 429, .. } => {
            let asked = failure.server_wait().unwrap_or_default();
            if asked > max_server_wait {
                return Decision::WaitTooLong(asked);
            }
            true
        }
        Failure::Status { status, .. } => matches!(status, 500 | 502 | 503 | 504),
        // A 2xx means DevRev took the write; an unreadable answer says nothing about what it
        // did. For a read, a garbled answer will not improve by asking again.
        Failure::Decode if write => return Decision::OutcomeUnknown,
        Failure::Decode => false,
        // A connect failure means nothing reached DevRev; anything later may have.
        Failure::Transport { connect: false } if write => return Decision::OutcomeUnknown,
        Failure::Transport { .. } => true,
    };
    if retryable && attempt <= max_retries {
        Decision::Retry {
            server_wait: failure.server_wait(),
        }
    } else {
        Decision::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_table() {
        use CallKind::{IdempotentWrite as Idem, Read, Write};
        use Decision::{Fail, OutcomeUnknown as Unknown, Retry, WaitTooLong};
        let st = |status, retry_after| Failure::Status {
            status,
            retry_after,
        };
        let secs = Duration::from_secs;
        let retry = Retry { server_wait: None };
        let max_wait = secs(300);
        // (failure, kind, attempt, max_retries, expected)
        let table = [
            // Errors that repeating cannot fix.
            (st(400, None), Read, 1, 5, Fail),
            (st(401, None), Write, 1, 5, Fail),
            (st(404, None), Idem, 1, 5, Fail),
            (st(409, None), Write, 1, 5, Fail),
            // Server errors: retried, except a non-idempotent write that may have been done.
            (st(500, None), Read, 1, 5, retry),
            (st(502, None), Idem, 2, 5, retry),
            (st(504, None), Read, 5, 5, retry),
            (st(504, None), Read, 6, 5, Fail),
            (st(500, None), Write, 1, 5, Unknown),
            (st(502, None), Write, 1, 5, Unknown),
            (st(504, None), Write, 6, 5, Unknown),
            (st(503, None), Write, 1, 5, Unknown),
            (st(501, None), Write, 1, 5, Unknown),
            (st(503, None), Read, 1, 5, retry),
            (st(503, None), Idem, 6, 5, Fail),
            // 429: turned away before any work; wait what DevRev asks, within reason.
            (
                st(429, None),
                Write,
                1,
                5,
                Retry {
                    server_wait: Some(secs(1)),
                },
            ),
            (
                st(429, Some(30)),
                Read,
                1,
                5,
                Retry {
                    server_wait: Some(secs(30)),
                },
            ),
            (
                st(429, Some(300)),
                Idem,
                1,
                5,
                Retry {
                    server_wait: Some(secs(300)),
                },
            ),
            (st(429, Some(301)), Read, 1, 5, WaitTooLong(secs(301))),
            (st(429, Some(3600)), Write, 6, 5, WaitTooLong(secs(3600))),
            (st(429, Some(2)), Read, 1, 0, Fail),
            // Unreadable 2xx answers.
            (Failure::Decode, Read, 1, 5, Fail),
            (Failure::Decode, Idem, 1, 5, Fail),
            (Failure::Decode, Write, 1, 5, Unknown),
            // No answer at all.
            (Failure::Transport { connect: true }, Write, 1, 5, retry),
            (Failure::Transport { connect: true }, Write, 6, 5, Fail),
            (Failure::Transport { connect: false }, Write, 1, 5, Unknown),
            (Failure::Transport { connect: false }, Idem, 1, 5, retry),
            (Failure::Transport { connect: false }, Read, 3, 2, Fail),
        ];
        for (failure, kind, attempt, max_retries, want) in table {
            assert_eq!(
                decide(failure, kind, attempt, max_retries, max_wait),
                want,
                "{failure:?} {kind:?} attempt {attempt} of 1+{max_retries}"
            );
        }
    }
}
