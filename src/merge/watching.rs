//! What the run learns while watching merges get applied, shared by every pair's saga: the
//! apply delays seen so far (so the first look after a request comes when DevRev usually has
//! applied it, not before), when each pair's watch started in this run (its `--merge-timeout`
//! deadline), and whether the run is revisiting parked pairs.
//!
//! A pair whose merge is not seen applied within a few looks is *parked*: the run goes on with
//! the other pairs and comes back to it at the end (see `execute.rs`), so one slow or
//! uncertain merge costs the run seconds, not `--merge-timeout`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The run's watch state (interior mutability: the saga context is shared by reference).
#[derive(Debug, Default)]
pub struct WatchState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Request → first look that saw the merge applied, for merges sent in this run.
    apply_delays: Vec<Duration>,
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

    /// A merge sent in this run was seen applied `d` after its request.
    pub fn note_applied(&self, d: Duration) {
        self.lock().apply_delays.push(d);
    }

    /// How long after a request the first look should come: the median apply delay seen so
    /// far in this run plus a quarter (each is an upper bound already: the look that saw the
    /// merge came after it was applied), or `initial` before any was seen; never more than
    /// `cap`. The median, so one merge seen late (its look delayed by retries) does not slow
    /// every later pair.
    pub fn first_look(&self, initial: Duration, cap: Duration) -> Duration {
        let mut seen = self.lock().apply_delays.clone();
        seen.sort();
        let median = seen.get(seen.len() / 2).copied();
        median.map_or(initial, |d| d + d / 4).min(cap)
    }

    /// How long a first pass keeps looking before it parks the pair.
    pub fn pass_budget(&self, initial: Duration, cap: Duration) -> Duration {
        (self.first_look(initial, cap) * FIRST_PASS_LOOKS).min(cap)
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
        let (init, cap) = (Duration::from_secs(2), Duration::from_secs(120));
        assert_eq!(w.first_look(init, cap), init);
        w.note_applied(Duration::from_millis(800));
        w.note_applied(Duration::from_millis(1600));
        w.note_applied(Duration::from_millis(30_000));
        assert_eq!(
            w.first_look(init, cap),
            Duration::from_millis(2000),
            "median"
        );
        assert_eq!(w.pass_budget(init, cap), Duration::from_millis(6000));
        assert_eq!(
            w.first_look(init, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        let a = w.started("k");
        assert_eq!(w.started("k"), a, "never reset");
        assert!(!w.revisiting());
        w.start_revisiting();
        assert!(w.revisiting());
    }
}
