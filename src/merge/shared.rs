//! The savepoint as the sagas of one run share it: the pair being merged and the pairs being
//! prepared alongside it (`pipeline.rs`) each journal their own record. Every change is made
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
        if self.contains(&item.key) {
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
