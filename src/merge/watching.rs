//! What the run learns while watching merges get applied, shared by every pair's saga: when
//! the first look after a request should come (steered by the first looks so far, see
//! `apply_wait.rs`, so it comes when DevRev usually has applied the merge, not long after), when each pair's watch started in this run (its `--merge-timeout`
//! deadline), and whether the run is revisiting parked pairs.
//!
//! A pair whose merge is not seen applied within a few looks is *parked*: the run goes on with
//! the other pairs and comes back to it at the end (see `scheduler/parked.rs`), so one slow or
//! uncertain merge costs the run seconds, not `--merge-timeout`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::apply_wait::{self, Bounds, FirstLook};

/// The run's watch state (interior mutability: the saga context is shared by reference).
#[derive(Debug, Default)]
pub struct WatchState {
    inner: Mutex<Inner>,
    /// Woken at every merge request: the run may start preparing the next pair then.
    requested: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// The wait before the first look after a request, once a first look of this run has
    /// steered it (`None`: the initial wait).
    first_look: Option<Duration>,
    /// When the watch of each pair's current merge request started in this run (it bounds
    /// the run's wait for that request).
    started: HashMap<String, Instant>,
    /// Pairs whose recorded backup was taken in this run.
    backed_up: HashSet<String>,

    revisiting: bool,
}

/// A first pass watches for this many times the expected apply delay before parking.
const FIRST_PASS_LOOKS: u32 = 3;

impl WatchState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first look after a request of this run came `look.after` it and found the merge
    /// applied or not: the next first look comes sooner or later (see `apply_wait.rs`).
    pub fn note_first_look(&self, look: FirstLook, initial: Duration, bounds: Bounds) {
        let mut inner = self.lock();
        let current = inner.first_look.unwrap_or(initial);
        inner.first_look = Some(apply_wait::next_wait(current, look, bounds));
    }

    /// How long after a request the first look should come: `initial` until a first look
    /// of this run has steered it, always within `bounds`.
    pub fn first_look(&self, initial: Duration, bounds: Bounds) -> Duration {
        apply_wait::learn(self.lock().first_look.unwrap_or(initial), [], bounds)
    }

    /// How long a first pass keeps looking before it parks the pair.
    /// Never less than for the initial wait, however short the first look has become: a
    /// pair parks no sooner than before the wait learned to come down (a parked pair's
    /// repairs wait for the end of the run).
    pub fn pass_budget(&self, initial: Duration, bounds: Bounds) -> Duration {
        (self.first_look(initial, bounds).max(initial) * FIRST_PASS_LOOKS).min(bounds.cap)
    }

    /// When this pair's watch started in this run (now, on the first call).
    pub fn started(&self, key: &str) -> Instant {
        *self
            .lock()
            .started
            .entry(key.to_string())
            .or_insert_with(Instant::now)
    }

    /// A new merge request for the pair: its watch starts afresh.
    pub fn restart(&self, key: &str) {
        self.lock().started.remove(key);
        self.requested.notify_one();
    }

    /// Resolves at the next merge request (or at once if one came since the last call).
    pub async fn merge_requested(&self) {
        self.requested.notified().await;
    }

    /// The pair's backup no longer counts as taken in this run: it is checked against
    /// DevRev's current lists before a merge is sent over it (a prepared pair that waited
    /// too long for its turn).
    pub fn forget_backup(&self, key: &str) {
        self.lock().backed_up.remove(key);
    }

    /// The pair's backup was taken in this run.
    pub fn note_backup(&self, key: &str) {
        self.lock().backed_up.insert(key.to_string());
    }

    /// Was the pair's recorded backup taken in this run? (Else it is checked against DevRev's
    /// current lists before a merge is sent over it.)
    pub fn backed_up_in_run(&self, key: &str) -> bool {
        self.lock().backed_up.contains(key)
    }

    /// From now on sagas take one look per visit: the run is revisiting parked pairs.
    pub fn start_revisiting(&self) {
        self.lock().revisiting = true;
    }

    pub fn revisiting(&self) -> bool {
        self.lock().revisiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_look_learns_from_the_run() {
        let w = WatchState::default();
        let init = Duration::from_secs(2);
        let b = Bounds {
            floor: Duration::from_millis(10),
            cap: Duration::from_secs(60),
        };
        assert_eq!(w.first_look(init, b), init);
        let look = |ms, applied| FirstLook {
            after: Duration::from_millis(ms),
            applied,
            applied_by: None,
        };
        w.note_first_look(look(2100, true), init, b);
        assert_eq!(
            w.first_look(init, b),
            Duration::from_millis(1800),
            "shorter"
        );
        w.note_first_look(look(1800, false), init, b);
        assert_eq!(w.first_look(init, b), Duration::from_millis(2700), "longer");
        assert_eq!(w.pass_budget(init, b), Duration::from_millis(8100));
        let tight = Bounds {
            cap: Duration::from_secs(1),
            ..b
        };
        assert_eq!(w.first_look(init, tight), Duration::from_secs(1));
        // A first look shorter than the initial wait does not park pairs sooner.
        let quick = WatchState::default();
        quick.note_first_look(look(500, true), init, b);
        assert!(quick.first_look(init, b) < init);
        assert_eq!(quick.pass_budget(init, b), init * 3);
        let a = w.started("k");
        assert_eq!(w.started("k"), a, "never reset");
        assert!(!w.revisiting());
        w.start_revisiting();
        assert!(w.revisiting());
    }
}
