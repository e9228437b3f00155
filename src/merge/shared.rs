//! The savepoint as the sagas of one run share it: the pair being merged and the pairs being
//! prepared alongside it (`scheduler/`) each journal their own record. Every change is made
//! and written (fsynced) under the lock and never across an `await`, so the journal's
//! "intent before the write, outcome after" holds for each record as before, and a crash at
//! any instant leaves it as consistent as one saga at a time did.

use std::sync::{Mutex, MutexGuard};

use super::journal::PairRecord;
use super::savepoint::{Savepoint, SavepointError};
use super::schedule::Item;
use crate::detect::RefClass;
use crate::error::AppError;
use crate::options::Keep;

pub struct SharedSavepoint {
    inner: Mutex<Savepoint>,
}

impl SharedSavepoint {
    pub fn new(sp: Savepoint) -> Self {
        Self {
            inner: Mutex::new(sp),
        }
    }

    pub fn into_inner(self) -> Savepoint {
        self.inner.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Savepoint> {
        // A panic elsewhere left the savepoint as it was on disk: every change is written
        // before the lock is released.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the whole savepoint (never across an `await`: the closure is synchronous).
    pub fn with<R>(&self, f: impl FnOnce(&Savepoint) -> R) -> R {
        f(&self.lock())
    }

    /// A copy of the record: it may change while its reader awaits.
    pub fn get(&self, key: &str) -> Option<PairRecord> {
        self.lock().get(key).cloned()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().get(key).is_some()
    }

    /// [`Savepoint::put`] under the lock.
    pub fn put(&self, key: &str, rec: PairRecord) -> Result<(), SavepointError> {
        self.lock().put(key, rec)
    }

    /// [`Savepoint::update`] under the lock: changed and written before it returns.
    pub fn update<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut PairRecord) -> R,
    ) -> Result<R, SavepointError> {
        self.lock().update(key, f)
    }

    /// A pair seen for the first time gets its record before the saga starts.
    pub(super) fn journal_new_pair(&self, item: &Item<'_>, keep: Keep) -> Result<(), AppError> {
        if let Some(rec) = self.get(&item.key) {
            // A group record not merged yet follows this run's decisions file: its place,
            // the group's length and whether it adopts the ref may have changed with it.
            if rec.group.is_some()
                && item.group.is_some()
                && rec.group != item.group
                && !rec.merge_in_flight()
                && !rec.status.is_final()
            {
                self.update(&item.key, |r| r.group = item.group.clone())?;
            }
            return Ok(());
        }
        let pair = item
            .pair
            .expect("a pair without a record comes from the CSV");
        // Each record holds the direction it is merged in: `--keep auto` resolves per pair (a
        // turned pair keeps its user_ contact and adopts no ref).
        let keep = match keep {
            Keep::Auto if pair.primary.ref_class() == RefClass::User => Keep::User,
            Keep::Auto => Keep::Revu,
            k => k,
        };
        let mut rec = PairRecord::new(
            &pair.email,
            &pair.primary.rev_user_id,
            &pair.secondary.rev_user_id,
            keep,
        );
        rec.group = item.group.clone();
        Ok(self.put(&item.key, rec)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Contact, Pair};
    use crate::merge::journal::{AdoptRef, GroupLink, MergeIntent, pair_key};

    fn contact(id: &str) -> Contact {
        Contact {
            line: 2,
            rev_user_id: id.into(),
            display_name: "x".into(),
            email: "g@example.com".into(),
            external_ref: String::new(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: None,
        }
    }

    fn link(index: u32, len: u32, adopt: bool) -> GroupLink {
        GroupLink {
            id: "G-0123456789".into(),
            index,
            len,
            adopt: adopt.then(|| AdoptRef {
                external_ref: "user_b".into(),
                holder: "B".into(),
            }),
            decisions: "decided.csv".into(),
        }
    }

    /// A group record journaled by an earlier run (backed up, its merge not sent) follows
    /// the new decisions file's place and adoption; one whose merge may have left keeps the
    /// link it was sent with.
    #[test]
    fn a_group_record_not_merged_yet_follows_the_new_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let sp = SharedSavepoint::new(Savepoint::open(&dir.path().join("sp.json")).unwrap());
        let pair = Pair {
            email: "g@example.com".into(),
            primary: contact("K"),
            secondary: contact("B"),
        };
        let key = pair_key("K", "B");
        let item = |group| Item {
            key: key.clone(),
            pair: Some(&pair),
            in_flight: false,
            in_csv: true,
            group: Some(group),
        };
        sp.journal_new_pair(&item(link(1, 2, true)), Keep::Revu)
            .unwrap();
        // The new file adds a third member after B and gives the ref to it.
        sp.journal_new_pair(&item(link(1, 3, false)), Keep::Revu)
            .unwrap();
        assert_eq!(sp.get(&key).unwrap().group, Some(link(1, 3, false)));

        sp.update(&key, |r| {
            r.merge = Some(MergeIntent {
                attempt: 1,
                requested_at: chrono::Utc::now(),
                outcome: None,
                unmerged_since: None,
                watch_until: None,
            })
        })
        .unwrap();
        sp.journal_new_pair(&item(link(2, 4, true)), Keep::Revu)
            .unwrap();
        assert_eq!(
            sp.get(&key).unwrap().group,
            Some(link(1, 3, false)),
            "a merge that may have left is finished the way it was sent"
        );
    }
}
