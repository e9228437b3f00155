//! The run's ETA from what it measures: the API calls per pair so far times the pairs left, at
//! the client's pacing, plus the wait for the last merge to apply; or the time per pair so
//! far, when that is longer (waits that preparing the next pair did not fill). A run is bound
//! by its rate limit, so its calls are most of its length; the preview's estimate only
//! guesses attachments and conversations, the run counts them.

use super::super::saga::{self, SagaCtx};
use crate::devrev::DevRevClient;

pub(super) struct CallMeter {
    calls_at_start: u64,
    started: std::time::Instant,
    pairs: u64,
    /// Seconds one call takes at the configured pacing.
    per_call_s: f64,
}

impl CallMeter {
    pub(super) fn new(client: &DevRevClient) -> Self {
        let cfg = client.config();
        Self {
            calls_at_start: client.totals().calls,
            started: std::time::Instant::now(),
            pairs: 0,
            per_call_s: cfg.rate_limit_period.as_secs_f64()
                / f64::from(cfg.rate_limit_calls.max(1)),
        }
    }

    /// Counts a finished pair; returns the text shown after the next pair's email.
    pub(super) fn pair_done(&mut self, ctx: &SagaCtx<'_>, left: usize) -> String {
        self.pairs += 1;
        let calls = ctx
            .client
            .totals()
            .calls
            .saturating_sub(self.calls_at_start);
        let m = Measured {
            calls,
            pairs: self.pairs,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        let wait_s = saga::first_look_wait(ctx).as_secs_f64();
        let (per_pair, secs) = time_left(m, left, self.per_call_s, wait_s);
        tracing::debug!(
            pairs = self.pairs,
            calls,
            per_pair,
            left,
            secs,
            "measured calls per pair"
        );
        format!(
            "~{} left ({per_pair:.1} calls/pair) ",
            crate::preview::human_duration(secs)
        )
    }
}

/// What the run has measured so far.
#[derive(Debug, Clone, Copy)]
struct Measured {
    calls: u64,
    pairs: u64,
    elapsed_s: f64,
}

/// Calls per pair measured so far, and the seconds the `left` pairs take: their calls at one
/// every `per_call_s` plus one merge wait of `wait_s` (the last pair's), or the time per pair
/// measured so far if that is longer.
fn time_left(m: Measured, left: usize, per_call_s: f64, wait_s: f64) -> (f64, f64) {
    if left == 0 {
        return (m.calls as f64 / m.pairs.max(1) as f64, 0.0);
    }
    let per_pair = m.calls as f64 / m.pairs.max(1) as f64;
    let by_calls = per_pair * left as f64 * per_call_s + wait_s;
    let by_time = m.elapsed_s / m.pairs.max(1) as f64 * left as f64;
    (per_pair, by_calls.max(by_time))
}

#[cfg(test)]
mod tests {
    use super::{Measured, time_left};

    #[test]
    fn the_eta_follows_the_measured_calls_per_pair_and_counts_the_last_wait() {
        let m = |calls, pairs, elapsed_s| Measured {
            calls,
            pairs,
            elapsed_s,
        };
        // 3 pairs took 52 calls in 60 s: 17.3 a pair; 17 pairs left at 45 calls a minute,
        // and the last merge's 2 s wait.
        let (per_pair, secs) = time_left(m(52, 3, 60.0), 17, 60.0 / 45.0, 2.0);
        assert!((per_pair - 17.333).abs() < 0.01, "{per_pair}");
        assert!(
            (secs - (52.0 / 3.0 * 17.0 * 60.0 / 45.0 + 2.0)).abs() < 1e-6,
            "{secs}"
        );
        // A pair that cost more (attachments) raises the estimate for the rest.
        let (_, later) = time_left(m(52 + 40, 4, 120.0), 16, 60.0 / 45.0, 2.0);
        assert!(later / 16.0 > secs / 17.0);
        // Waits nothing filled (pairs that had to run one after the other): the time per
        // pair measured so far is the better guide.
        let (_, slow) = time_left(m(52, 3, 3.0 * 40.0), 17, 60.0 / 45.0, 2.0);
        assert!((slow - 40.0 * 17.0).abs() < 1e-6, "{slow}");
        assert_eq!(time_left(m(0, 0, 0.0), 5, 1.0, 0.0), (0.0, 0.0));
        assert_eq!(time_left(m(10, 1, 5.0), 0, 1.0, 2.0).1, 0.0, "nothing left");
    }
}
