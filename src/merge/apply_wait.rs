//! How long after a merge request the first look at the secondary comes, learned in both
//! directions from the run's first looks.
//!
//! A first look that finds the merge applied says only that DevRev's apply delay was at most
//! that long: it is a bound, not a measurement. Scheduling the next look from such bounds can
//! only ever grow the wait (each wait becomes the next "delay seen"), so the wait is instead
//! steered: shortened a little after every first look that found the merge applied when it
//! came about when planned (one the rate budget held back much longer tested nothing),
//! lengthened by half after one that did not (but never past the look that then found it
//! applied: the delay was at most that). A miss costs one more look; a wait too long
//! costs time only when nothing else can use the budget, so the wait comes down slowly and
//! goes up fast. It stays within [`Bounds`]: never below the poll loop's first delay, never
//! above half of `--merge-timeout`.

use std::time::Duration;

/// One first look after a merge request of this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstLook {
    /// Time from the request to the look (the look may come later than planned: it waits
    /// for the rate budget like any call).
    pub after: Duration,
    /// The look found the merge applied.
    pub applied: bool,
    /// When it did not: how long after the request a later look of the same visit found it
    /// applied, if one did (the delay lies between `after` and this).
    pub applied_by: Option<Duration>,
}

/// The range the wait stays in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub floor: Duration,
    pub cap: Duration,
}

impl Bounds {
    fn clamp(self, d: Duration) -> Duration {
        d.max(self.floor).min(self.cap.max(self.floor))
    }
}

/// After a hit the next wait is this fraction of the wait that worked.
const SHORTEN: (u32, u32) = (9, 10);
/// A hit shortens the wait only if the look came within this multiple of the wait planned:
/// one the rate budget held back much longer found the merge applied after a longer time
/// than planned, which says nothing about whether the planned wait would have been enough
/// (and shortening on it led, in a busy run, to a miss as soon as the run went idle).
const TESTED: (u32, u32) = (3, 2);
/// After a miss the next wait is this multiple of the wait that was too short.
const LENGTHEN: (u32, u32) = (3, 2);

/// The wait after `look`, given the wait `current` that was planned for it.
pub fn next_wait(current: Duration, look: FirstLook, bounds: Bounds) -> Duration {
    let next = if look.applied && look.after > current * TESTED.0 / TESTED.1 {
        // Applied, but the look came much later than planned: the planned wait is untested.
        current
    } else if look.applied {
        // Applied by then: the delay was at most the earlier of the two.
        current.min(look.after) * SHORTEN.0 / SHORTEN.1
    } else {
        // Not applied yet: the delay was longer than the later of the two, and at most when
        // a later look found it applied.
        let longer = current.max(look.after) * LENGTHEN.0 / LENGTHEN.1;
        look.applied_by.map_or(longer, |t| longer.min(t))
    };
    bounds.clamp(next)
}

/// The wait after a sequence of first looks, starting from `initial`.
pub fn learn(
    initial: Duration,
    looks: impl IntoIterator<Item = FirstLook>,
    bounds: Bounds,
) -> Duration {
    looks
        .into_iter()
        .fold(bounds.clamp(initial), |w, l| next_wait(w, l, bounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        floor: Duration::from_millis(500),
        cap: Duration::from_secs(60),
    };

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn hit(after: u64) -> FirstLook {
        FirstLook {
            after: ms(after),
            applied: true,
            applied_by: None,
        }
    }

    fn miss(after: u64) -> FirstLook {
        FirstLook {
            after: ms(after),
            applied: false,
            applied_by: None,
        }
    }

    #[test]
    fn waits_that_find_the_merge_applied_come_down() {
        // The ratchet of issue 19: every look found the merge applied, and the wait grew
        // from 4 s to 14.6 s. Here it shrinks towards the delay instead.
        let w = learn(ms(4000), [hit(4200), hit(3700), hit(3300)], B);
        assert_eq!(w, ms(2916));
        assert!(w < ms(4000));
    }

    #[test]
    fn a_wait_that_was_too_short_goes_up_by_half() {
        assert_eq!(learn(ms(2000), [miss(2000)], B), ms(3000));
        // A look delayed by the rate budget says the delay was longer than when it came.
        assert_eq!(learn(ms(2000), [miss(2600)], B), ms(3900));
    }

    #[test]
    fn a_miss_lengthens_the_wait_no_further_than_the_look_that_found_the_merge() {
        // First look at 9 s: not applied; the next look, 1 s later, found it: the delay was
        // between 9 and 10 s, so the next wait is 10 s, not 13.5 s.
        let found = FirstLook {
            applied_by: Some(ms(10_000)),
            ..miss(9000)
        };
        assert_eq!(learn(ms(9000), [found], B), ms(10_000));
        // Found much later than half again the wait: half again it is.
        let late = FirstLook {
            applied_by: Some(ms(30_000)),
            ..miss(2000)
        };
        assert_eq!(learn(ms(2000), [late], B), ms(3000));
    }

    #[test]
    fn with_the_looks_that_found_it_the_wait_stays_close_to_a_long_delay() {
        // 10 s: each miss is followed by looks 1 s apart (the poll loop's first delay).
        let mut w = ms(10_000);
        let mut seen = Vec::new();
        for _ in 0..40 {
            let applied = w >= ms(10_000);
            let look = FirstLook {
                after: w,
                applied,
                applied_by: (!applied).then(|| w + ms(1000)),
            };
            w = next_wait(w, look, B);
            seen.push(w);
        }
        assert!(
            seen.iter().all(|w| *w >= ms(9000) && *w <= ms(11_000)),
            "{seen:?}"
        );
    }

    #[test]
    fn a_look_delayed_by_the_budget_neither_lengthens_nor_shortens_the_next_wait() {
        // Planned at 2 s, made at 3.5 s, applied: the delay was at most 3.5 s, which says
        // nothing of whether 2 s was enough: the wait stays.
        assert_eq!(learn(ms(2000), [hit(3500)], B), ms(2000));
        // Made a little late (within half again the wait): it counts as a test of the wait.
        assert_eq!(learn(ms(2000), [hit(2900)], B), ms(1800));
        // A busy run's looks all come late: the wait does not creep down to a miss.
        assert_eq!(
            learn(ms(2000), std::iter::repeat_n(hit(4080), 9), B),
            ms(2000)
        );
    }

    #[test]
    fn it_settles_around_a_steady_apply_delay() {
        // DevRev applies every merge 2 s after the request: a look at or after 2 s finds it.
        let delay = ms(2000);
        let mut w = ms(2000);
        let mut misses = 0;
        let mut seen = Vec::new();
        for _ in 0..60 {
            let look = FirstLook {
                after: w,
                applied: w >= delay,
                applied_by: None,
            };
            misses += u32::from(!look.applied);
            w = next_wait(w, look, B);
            seen.push(w);
        }
        // Never far from the delay, in either direction, and mostly right first time.
        assert!(
            seen.iter().all(|w| *w >= ms(1600) && *w <= ms(3000)),
            "{seen:?}"
        );
        assert!(misses <= 60 / 4, "{misses} misses");
    }

    #[test]
    fn it_follows_a_delay_that_changes() {
        // 1 s for a while, then DevRev slows to 8 s, then recovers.
        let mut w = ms(2000);
        let run = |delay: u64, n: usize, w: &mut Duration| {
            for _ in 0..n {
                let look = FirstLook {
                    after: *w,
                    applied: *w >= ms(delay),
                    applied_by: None,
                };
                *w = next_wait(*w, look, B);
            }
        };
        // Within half a delay above it at worst (the step after a miss).
        run(1000, 10, &mut w);
        assert!(w <= ms(1500), "{w:?}");
        run(8000, 8, &mut w);
        assert!(w >= ms(7200), "{w:?}");
        run(1000, 30, &mut w);
        assert!(w <= ms(1500), "{w:?}");
    }

    #[test]
    fn bounds_hold() {
        assert_eq!(learn(ms(600), [hit(600), hit(600), hit(100)], B), B.floor);
        assert_eq!(learn(ms(100), [], B), B.floor, "the start is clamped too");
        let long = std::iter::repeat_n(miss(1000), 20);
        assert_eq!(learn(ms(1000), long, B), B.cap);
        // A cap below the floor (a tiny --merge-timeout) gives the floor, never a panic.
        let odd = Bounds {
            floor: ms(500),
            cap: ms(100),
        };
        assert_eq!(learn(ms(2000), [miss(2000)], odd), ms(500));
    }
}
