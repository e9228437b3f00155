//! A read that gathers: while it waits for its turn at the pacer, reads of the same kind
//! needed meanwhile join it instead of costing a call of their own, and what it asks for is
//! decided when its turn comes (issue 29: batching as a property of the run, not of a
//! window chosen in advance). `lists.rs` gathers ticket and conversation lists, `batch.rs`
//! the reads of survivors after their merges.

use tokio::sync::watch;

/// A read waiting for its turn, or under way.
pub struct Gathering<K> {
    /// Keys joined while it waited: asked for when its turn comes.
    joined: Vec<K>,
    /// What it asked for, once its turn came.
    asked: Option<Vec<K>>,
    /// Turns `true` when its answer is recorded; closed if its reader was dropped.
    done: watch::Receiver<bool>,
}

/// Said by the reader when its answer is recorded (or, dropped, when it gave up).
pub struct Done(watch::Sender<bool>);

impl Done {
    pub fn now(self) {
        let _ = self.0.send(true);
    }
}

/// What a joined read waits for.
pub struct Joined(watch::Receiver<bool>);

impl Joined {
    /// Until the read it joined is recorded or dropped: then the caller looks again.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }
}

impl<K: PartialEq + Clone> Gathering<K> {
    pub fn start() -> (Self, Done) {
        let (tx, rx) = watch::channel(false);
        (
            Self {
                joined: Vec::new(),
                asked: None,
                done: rx,
            },
            Done(tx),
        )
    }

    /// Its reader was dropped without saying it was done (Ctrl-C): it gathers nothing more.
    pub fn abandoned(&self) -> bool {
        self.done.has_changed().is_err()
    }

    /// Joins it if it still waits for its turn (`keys` are asked for too), or follows it if
    /// it is under way and asks for all of `keys`. `None`: the caller reads for itself.
    pub fn join(&mut self, keys: &[K]) -> Option<Joined> {
        if self.abandoned() {
            return None;
        }
        match &self.asked {
            None => {
                for k in keys {
                    if !self.joined.contains(k) {
                        self.joined.push(k.clone());
                    }
                }
            }
            Some(asked) if keys.iter().all(|k| asked.contains(k)) => {}
            Some(_) => return None,
        }
        Some(Joined(self.done.clone()))
    }

    /// Its turn came: the keys joined so far (taken).
    pub fn take_joined(&mut self) -> Vec<K> {
        std::mem::take(&mut self.joined)
    }

    /// What it asks for, fixed from now on.
    pub fn asked(&mut self, ask: Vec<K>) {
        self.asked = Some(ask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_join_while_it_waits_follow_it_under_way_and_wake_when_it_is_done() {
        let (mut g, done) = Gathering::<&str>::start();
        let first = g.join(&["a"]).expect("joins while waiting");
        assert!(g.join(&["b"]).is_some());
        assert_eq!(g.take_joined(), ["a", "b"]);
        g.asked(vec!["mine", "a", "b"]);
        // Under way: only a read it asks for all of follows it.
        assert!(g.join(&["a", "mine"]).is_some());
        assert!(g.join(&["a", "c"]).is_none());
        done.now();
        first.wait().await;

        // A reader dropped without an answer: the joined wake, and nobody joins again.
        let (mut g, done) = Gathering::<&str>::start();
        let joined = g.join(&["a"]).expect("joins");
        drop(done);
        joined.wait().await;
        assert!(g.abandoned() && g.join(&["a"]).is_none());
    }
}
