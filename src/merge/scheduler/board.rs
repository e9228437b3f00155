//! Where each pair of the run stands: the scheduler's one table of states. What a pair's saga
//! has done inside a stage (merge sent, applied, reconciled, adopted) is its journal's `Step`,
//! each written to the savepoint before the next starts; the stage says what the scheduler
//! may do with the pair next.

use std::collections::VecDeque;

/// A pair's stage in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not started: its turn comes in the schedule's order, unless it is passed over.
    Waiting,
    /// Started ahead of its turn: reading (Validate, Backup, VerifyBackup), or (meeting
    /// nothing in flight) gone on to its merge and the rest of its saga.
    Ahead,
    /// Started ahead, and its start has ended: read and waiting for its turn (its merge not
    /// sent), or settled already (merged ahead, skipped, failed).
    Ready,
    /// Its turn: the pair in hand.
    InHand,
    /// Its merge is accepted but not seen applied: looked at again once DevRev has usually
    /// applied a merge (in the background, [`Stage::Visiting`]), settled in place before the
    /// turn of a pair it meets, and watched at the end of the run if it is still parked.
    Parked,
    /// A parked pair looked at again in the background while other pairs run; parked again,
    /// or done, when the visit ends.
    Visiting,
    /// Its turn is over.
    Done,
}

/// Every pair's stage, shared with the pairs started ahead: each decides whether it may go
/// on to its merge once its own backup is known, against the pairs in flight then.
pub(super) struct Board {
    pub(super) stage: Vec<Stage>,
    /// The pairs [`Stage::Ahead`] or [`Stage::Ready`], in the order their turns come.
    pub(super) ahead: VecDeque<usize>,
    /// The pairs [`Stage::Parked`], in the order they parked.
    pub(super) parked: Vec<usize>,
    /// The pairs [`Stage::Visiting`].
    pub(super) visiting: Vec<usize>,
}

impl Board {
    pub(super) fn new(pairs: usize) -> Self {
        Self {
            stage: vec![Stage::Waiting; pairs],
            ahead: VecDeque::new(),
            parked: Vec::new(),
            visiting: Vec::new(),
        }
    }

    /// Moves pair `i` to `stage`; the only place stages change.
    pub(super) fn set(&mut self, i: usize, stage: Stage) {
        let was = std::mem::replace(&mut self.stage[i], stage);
        if was == stage {
            return;
        }
        let queued = |s: Stage| matches!(s, Stage::Ahead | Stage::Ready);
        if queued(was) && !queued(stage) {
            self.ahead.retain(|&b| b != i);
        }
        match was {
            Stage::Parked => self.parked.retain(|&b| b != i),
            Stage::Visiting => self.visiting.retain(|&b| b != i),
            _ => {}
        }
        if queued(stage) && !queued(was) {
            self.ahead.push_back(i);
        }
        match stage {
            Stage::Parked => self.parked.push(i),
            Stage::Visiting => self.visiting.push(i),
            _ => {}
        }
    }

    /// The pair in hand, if one is.
    pub(super) fn in_hand(&self) -> Option<usize> {
        self.stage.iter().position(|s| *s == Stage::InHand)
    }

    /// The pairs whose writes may still come: the pair in hand, those ahead, the parked (and
    /// those being visited).
    pub(super) fn in_flight(&self) -> impl Iterator<Item = usize> + '_ {
        self.in_hand()
            .into_iter()
            .chain(self.ahead.iter().copied())
            .chain(self.parked.iter().copied())
            .chain(self.visiting.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::{Board, Stage};

    #[test]
    fn a_pair_is_in_flight_from_ahead_through_its_turn_and_while_parked() {
        let mut b = Board::new(4);
        assert_eq!(b.in_flight().count(), 0, "nothing started");
        b.set(0, Stage::InHand);
        b.set(2, Stage::Ahead);
        b.set(1, Stage::Ahead);
        // Turns come in the order pairs went ahead (2 was passed over 1's held turn).
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [0, 2, 1]);
        // Read ahead and waiting: still in flight, in its place.
        b.set(2, Stage::Ready);
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [0, 2, 1]);
        b.set(0, Stage::Parked);
        b.set(2, Stage::InHand);
        assert_eq!(b.in_hand(), Some(2));
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [2, 1, 0]);
        // Visited in the background: still in flight, no longer parked; parked again after.
        b.set(0, Stage::Visiting);
        assert!(b.parked.is_empty() && b.visiting == [0]);
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [2, 1, 0]);
        b.set(0, Stage::Parked);
        assert!(b.parked == [0] && b.visiting.is_empty());
        // Settled in place, or done: out of flight, and out of both lists.
        b.set(0, Stage::Done);
        b.set(2, Stage::Done);
        assert_eq!(b.in_flight().collect::<Vec<_>>(), [1]);
        assert!(b.parked.is_empty() && b.visiting.is_empty() && b.ahead == [1]);
        assert_eq!(
            b.stage,
            [Stage::Done, Stage::Ahead, Stage::Done, Stage::Waiting]
        );
    }
}
