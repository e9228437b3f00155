//! The order in which calls waiting for the rate budget go out: the most urgent first, and
//! in the order they came within one urgency.
//!
//! A run is bound by its rate budget, so several pairs' calls usually wait for the pacer at
//! once, and which goes next shapes the run (issue 29):
//!
//! - **A merge request first.** DevRev applies a merge seconds after accepting it; the sooner
//!   it is sent, the sooner its wait starts, and the waits of merges sent together overlap.
//! - **Then a pair's next step** (a look after a merge, an update, a single read): each
//!   moves one pair on.
//! - **Lists and backup reads last.** They fill the budget the steps leave, and a list that
//!   waits gathers what other pairs need meanwhile (`validate/lists.rs`): the Reconciles of
//!   merges seen applied while it waited are answered by the same call.
//!
//! Only the first in line waits for the pacer; a more urgent call that arrives meanwhile goes
//! next, after it. Nothing waits forever behind a stream of more urgent calls for long: the
//! run keeps only a few pairs in flight, and each has few urgent calls.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// How soon a call should go out when several wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    Merge,
    Step,
    Read,
}

/// The urgency of a call to `endpoint`.
pub fn urgency(endpoint: &str) -> Urgency {
    match endpoint {
        "rev-users.merge" => Urgency::Merge,
        e if e.ends_with(".list") || e.starts_with("artifacts.") => Urgency::Read,
        _ => Urgency::Step,
    }
}

#[derive(Debug, Default)]
struct State {
    /// Arrivals so far (the order within one urgency).
    arrived: u64,
    /// Calls waiting for their turn: (urgency, arrival).
    waiting: BTreeSet<(Urgency, u64)>,
    /// A call holds the front of the line (it is waiting for the pacer).
    held: bool,
}

#[derive(Debug, Default)]
pub struct Line {
    state: Mutex<State>,
    moved: Notify,
}

/// The front of the line, held while its call waits for the pacer; dropped (the call goes
/// out, or is given up), it passes to the most urgent call waiting.
pub struct Place<'a> {
    line: &'a Line,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.line.lock().held = false;
        self.line.moved.notify_waiters();
    }
}

/// A call waiting for the front; given up, it leaves the line.
struct Waiting<'a> {
    line: &'a Line,
    key: (Urgency, u64),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.line.lock().waiting.remove(&self.key) {
            self.line.moved.notify_waiters();
        }
    }
}

impl Line {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the front of the line: when no call holds it and none more urgent (or of
    /// the same urgency and earlier) waits.
    pub async fn first(&self, urgency: Urgency) -> Place<'_> {
        let key = {
            let mut s = self.lock();
            s.arrived += 1;
            let key = (urgency, s.arrived);
            s.waiting.insert(key);
            key
        };
        let waiting = Waiting { line: self, key };
        loop {
            let moved = self.moved.notified();
            let mut moved = std::pin::pin!(moved);
            moved.as_mut().enable();
            {
                let mut s = self.lock();
                if !s.held && s.waiting.first() == Some(&key) {
                    s.waiting.remove(&key);
                    s.held = true;
                    drop(s);
                    // No longer waiting (its key is gone): dropping it changes nothing.
                    drop(waiting);
                    return Place { line: self };
                }
            }
            moved.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_go_first_then_steps_then_lists() {
        assert_eq!(urgency("rev-users.merge"), Urgency::Merge);
        assert_eq!(urgency("rev-users.get"), Urgency::Step);
        assert_eq!(urgency("works.update"), Urgency::Step);
        assert_eq!(urgency("works.list"), Urgency::Read);
        assert_eq!(urgency("timeline-entries.list"), Urgency::Read);
        assert_eq!(urgency("artifacts.locate"), Urgency::Read);
    }

    #[tokio::test]
    async fn the_most_urgent_waiting_call_goes_next_and_a_dropped_place_frees_the_line() {
        let line = std::sync::Arc::new(Line::default());
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        // The first in line holds it while the others queue behind.
        let front = line.first(Urgency::Read).await;
        let mut tasks = Vec::new();
        for (name, u) in [
            ("list", Urgency::Read),
            ("look", Urgency::Step),
            ("merge", Urgency::Merge),
        ] {
            let (waiter, order) = (line.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = waiter.first(u).await;
                order.lock().unwrap().push(name);
            }));
            // Each has taken its place before the next arrives.
            while line.lock().waiting.len() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        // A call given up leaves no hole in the line.
        let waiter = line.clone();
        let given_up = tokio::spawn(async move {
            let _p = waiter.first(Urgency::Merge).await;
        });
        while line.lock().waiting.len() < 4 {
            tokio::task::yield_now().await;
        }
        given_up.abort();
        let _ = given_up.await;
        drop(front);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["merge", "look", "list"]);
    }
}
