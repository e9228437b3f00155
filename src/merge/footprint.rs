//! What a pair's writes can touch, and whether a later pair's checks and backup could see
//! them: two pairs whose footprints meet run strictly one after the other. A pair is
//! prepared ahead of its turn (`scheduler/ahead.rs`) only when no pair still in flight before it
//! meets it.
//!
//! A pair's writes are the merge of its two contacts and Reconcile's rewrite of the tickets
//! and conversations that name its secondary (`reported_by` / `members`, the secondary
//! replaced). Its backup says which those are and whom each names. A later pair's backup
//! holds the tickets and conversations naming its own contacts; so it would back up an
//! object the earlier pair rewrites exactly when that object names one of its contacts.
//! Checked before the later pair reads anything, from files on disk: no call is spent on a
//! backup that would have to be taken again.
//!
//! Generic on ids: several records sharing one survivor contact (a group merged into one
//! primary) meet on that contact and so never overlap in time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::journal::PairRecord;
use crate::backup;
use crate::devrev::types::UserSummary;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    pub contacts: BTreeSet<String>,
    /// The tickets and conversations its writes may rewrite, each with the contacts it names;
    /// `None` when not known (no readable backup), which meets every footprint.
    pub writes: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl Footprint {
    /// The contacts only: a pair not backed up yet.
    pub fn of_contacts<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        Self {
            contacts: ids.into_iter().map(Into::into).collect(),
            writes: None,
        }
    }

    /// With the objects its writes may rewrite: `(id, contacts it names)`.
    pub fn with_writes<S: Into<String>, C: Into<String>>(
        mut self,
        objects: impl IntoIterator<Item = (S, Vec<C>)>,
    ) -> Self {
        self.writes = Some(
            objects
                .into_iter()
                .map(|(id, named)| (id.into(), named.into_iter().map(Into::into).collect()))
                .collect(),
        );
        self
    }

    /// A journaled pair: its contacts, and what its recorded backup says it rewrites.
    pub fn of_record(rec: &PairRecord) -> Self {
        let base = Self::of_contacts([rec.primary.clone(), rec.secondary.clone()]);
        match rec
            .backup
            .as_ref()
            .and_then(|b| rewritten_in_backup(&b.dir, &rec.secondary))
        {
            Some(objects) => base.with_writes(objects),
            None => base,
        }
    }

    /// Whether `later` must wait for this pair's writes: they share a contact, or this pair
    /// rewrites an object that names one of `later`'s contacts (or that `later` rewrites too),
    /// or what this pair rewrites is not known.
    pub fn meets(&self, later: &Footprint) -> bool {
        if !self.contacts.is_disjoint(&later.contacts) {
            return true;
        }
        let Some(mine) = &self.writes else {
            return true;
        };
        mine.values()
            .any(|named| !named.is_disjoint(&later.contacts))
            || later
                .writes
                .as_ref()
                .is_some_and(|theirs| theirs.keys().any(|k| mine.contains_key(k)))
    }
}

/// The tickets and conversations of a backup that name `secondary` (what Reconcile
/// rewrites), each with every contact it names; `None` if the backup cannot be read.
fn rewritten_in_backup(dir: &Path, secondary: &str) -> Option<Vec<(String, Vec<String>)>> {
    let tickets = backup::load_tickets(dir).ok()?;
    let convs = backup::load_conversations(dir).ok()?;
    let named = |users: &[UserSummary]| -> Option<Vec<String>> {
        users
            .iter()
            .any(|u| u.id == secondary)
            .then(|| users.iter().map(|u| u.id.clone()).collect())
    };
    let t = tickets
        .into_iter()
        .filter_map(|t| Some((t.id, named(&t.reported_by)?)));
    let c = convs
        .into_iter()
        .filter_map(|c| Some((c.id, named(&c.members)?)));
    Some(t.chain(c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(contacts: [&str; 2], writes: &[(&str, &[&str])]) -> Footprint {
        Footprint::of_contacts(contacts).with_writes(
            writes
                .iter()
                .map(|(id, named)| (*id, named.to_vec()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn disjoint_pairs_do_not_meet() {
        let a = fp(["P1", "S1"], &[("T1", &["S1", "X"]), ("C1", &["S1"])]);
        let b = Footprint::of_contacts(["P2", "S2"]);
        assert!(!a.meets(&b));
    }

    #[test]
    fn a_shared_contact_meets_a_group_runs_one_at_a_time() {
        // Two records merged into the same survivor.
        let a = fp(["P1", "S1"], &[]);
        let b = Footprint::of_contacts(["P1", "S3"]);
        assert!(a.meets(&b));
        let c = Footprint::of_contacts(["P9", "S1"]);
        assert!(a.meets(&c));
    }

    #[test]
    fn a_ticket_rewritten_by_the_earlier_pair_that_names_the_later_one_meets() {
        // T1 is reported by S1 (rewritten by pair 1) and by P2: pair 2's backup would hold
        // T1 as it was before pair 1's Reconcile.
        let a = fp(["P1", "S1"], &[("T1", &["S1", "P2"])]);
        assert!(a.meets(&Footprint::of_contacts(["P2", "S2"])));
        // The same object rewritten by both.
        let b = fp(["P3", "S3"], &[("T1", &["S3"])]);
        assert!(a.meets(&b));
    }

    #[test]
    fn unknown_writes_meet_everything() {
        let unknown = Footprint::of_contacts(["P1", "S1"]);
        assert!(unknown.meets(&Footprint::of_contacts(["P2", "S2"])));
        let none = fp(["P1", "S1"], &[]);
        assert!(!none.meets(&Footprint::of_contacts(["P2", "S2"])));
    }
}
