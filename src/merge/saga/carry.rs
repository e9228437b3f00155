//! CarryOver: the secondary's own phone numbers, custom fields and name that the survivor
//! lacked, from the verified backup onto the survivor (pure rules: `merge/carry.rs`).
//!
//! Under `--keep revu` with a `user_` ref the values ride in AdoptExternalRef's own
//! `rev-users.update` (no extra call); this step then writes only what that update could not
//! take (values a refusal left to be tried alone). Otherwise it is one update.
//! Every write is journaled: the intent (the exact items) before the call, the outcome after,
//! checked against the answer. An intent found without an outcome is resolved by reading the
//! survivor, so a crash never writes twice nor skips a value. A value DevRev refuses (400) is
//! recorded per item and the rest still carried: a refusal never fails the pair.

use super::*;
use crate::merge::carry::{self, CarryItem, CarryRecord, CarryWrite};

impl Saga<'_, '_> {
    /// The pair's carry record, planned from the backup the first time. `Ok(Ok(false))`:
    /// nothing to carry (`--no-carry` before it started). A record an earlier run started is
    /// finished even under `--no-carry`: a write may be in flight.
    pub(super) fn carry_planned(&mut self, step: Step) -> Phase<bool> {
        if self.rec().carry.is_some() {
            return Ok(Ok(true));
        }
        if !self.ctx.carry {
            return Ok(Ok(false));
        }
        let Some(dir) = self.rec().backup.as_ref().map(|b| b.dir.clone()) else {
            return phase_failed(
                step,
                "no backup on record to carry the secondary's data from".into(),
            );
        };
        let meta = match backup::load_metadata(&dir) {
            Ok(m) => m,
            Err(e) => {
                return phase_failed(
                    step,
                    format!(
                        "cannot read the secondary's data from the backup in {}: {e}",
                        dir.display()
                    ),
                );
            }
        };
        let plan = carry::plan(&meta.secondary, &meta.primary);
        self.save(|r| r.carry = Some(CarryRecord::new(plan)))?;
        Ok(Ok(true))
    }

    fn carry_rec(&self) -> CarryRecord {
        self.rec().carry.clone().unwrap_or_default()
    }

    fn carry_mut(&mut self, f: impl FnOnce(&mut CarryRecord)) -> Result<(), AppError> {
        self.save(|r| {
            if let Some(c) = r.carry.as_mut() {
                f(c);
            }
        })
    }

    /// An intent without an outcome (the run stopped between the call and its answer): the
    /// survivor is read, and what it holds counts as carried; the rest is written again.
    pub(super) async fn carry_resolve(&mut self, step: Step) -> Phase<Option<RevUser>> {
        let Some(w) = self.carry_rec().write else {
            return Ok(Ok(None));
        };
        let live = match self.survivor_now().await {
            Ok(u) => u,
            Err(e) => return phase_api_failure(step, &e),
        };
        tracing::info!(pair = %self.rec().email, items = w.items.len(), "resolving an interrupted carry-over write");
        self.carry_mut(|c| c.resumed(&w.items, &live))?;
        Ok(Ok(Some(live)))
    }

    /// Journals the intent of a write of `items` (before the call).
    pub(super) fn carry_intent(
        &mut self,
        items: &[CarryItem],
        with_ref: Option<&str>,
    ) -> Result<(), AppError> {
        let w = CarryWrite {
            requested_at: Utc::now(),
            items: items.to_vec(),
            with_ref: with_ref.map(str::to_string),
        };
        self.carry_mut(|c| c.write = Some(w))
    }

    /// Reads the survivor for a write of carried values: in the same step as the write, just
    /// before it, so the lists written whole start from what DevRev holds now (a value the
    /// survivor gained since the backup is kept). `Ok(Err)`: the read failed, or the answer
    /// does not carry `custom_fields`/`tags` (unknown, never taken as empty: the step fails
    /// with the reason and the next run reads again).
    pub(super) async fn carry_live(&mut self, step: Step) -> Phase<RevUser> {
        let live = match self.survivor_now().await {
            Ok(u) => u,
            Err(e) => return phase_api_failure(step, &e),
        };
        let unknown = live.unknown_lists();
        if !unknown.is_empty() {
            return phase_failed(
                step,
                format!(
                    "DevRev's answer for the survivor does not carry {}: unknown, not empty, so \
                     the carry-over cannot tell what the survivor holds; nothing written, \
                     re-run to read it again",
                    unknown.join(", ")
                ),
            );
        }
        Ok(Ok(live))
    }

    /// The write of `batch` onto the survivor as it is `live`: the items it gained its own
    /// value for since the plan are journaled as conflicts (never written), the ones it holds
    /// already as carried. Returns the items still to write and the update's fields.
    pub(super) fn carry_write_for(
        &mut self,
        batch: &[CarryItem],
        live: &RevUser,
    ) -> Result<(Vec<CarryItem>, serde_json::Map<String, serde_json::Value>), AppError> {
        let w = carry::body(batch, live);
        if !w.superseded.is_empty() {
            tracing::info!(pair = %self.rec().email, n = w.superseded.len(), "the survivor gained its own values since the plan; kept as its own");
            self.carry_mut(|c| c.superseded(&w.superseded))?;
        }
        let rest: Vec<CarryItem> = batch
            .iter()
            .filter(|i| !w.superseded.iter().any(|(s, _)| s == *i))
            .cloned()
            .collect();
        let (held, rest): (Vec<CarryItem>, Vec<CarryItem>) =
            rest.into_iter().partition(|i| carry::held(live, i));
        if !held.is_empty() {
            self.carry_mut(|c| c.resumed(&held, live))?;
        }
        Ok((rest, w.fields))
    }

    /// Journals an answer: each item is carried if the answer shows it, refused if not.
    pub(super) fn carry_answered(
        &mut self,
        items: &[CarryItem],
        answer: &RevUser,
    ) -> Result<(), AppError> {
        self.carry_mut(|c| c.settle(items, answer, "DevRev answered without this value"))
    }

    /// Journals a 400 to a write of `items` (see [`CarryRecord::refused_write`]).
    pub(super) fn carry_refused(
        &mut self,
        items: &[CarryItem],
        e: &ApiError,
    ) -> Result<(), AppError> {
        let field = match e {
            ApiError::Status { body, .. } => body.field_name.clone(),
            _ => None,
        };
        let reason = e.to_string();
        tracing::warn!(pair = %self.rec().email, ?field, %reason, "DevRev refused carried values");
        self.carry_mut(|c| c.refused_write(items, field.as_deref(), &reason))
    }

    /// A 400 on the ref adoption's update, which carried `items` too. `Ok(true)`: the answer
    /// names one of the carried values, recorded as [`Self::carry_refused`] does (the ref then
    /// goes again without it). `Ok(false)`: it names another field (the ref itself): nothing
    /// is refused and the adoption fails on its own. Naming nothing, the values are set aside
    /// to be tried alone by CarryOver and the ref goes again without them.
    pub(super) fn carry_refused_with_ref(
        &mut self,
        items: &[CarryItem],
        e: &ApiError,
    ) -> Result<bool, AppError> {
        let field = match e {
            ApiError::Status { body, .. } => body.field_name.clone(),
            _ => None,
        };
        match field.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) if carry::suspects(Some(f), items).is_empty() => {
                self.carry_not_applied()?;
                Ok(false)
            }
            Some(_) => self.carry_refused(items, e).map(|()| true),
            None => {
                tracing::debug!(pair = %self.rec().email, "a 400 naming no field on the adoption's update: the carried values are tried alone");
                self.carry_mut(|c| c.set_aside(items))?;
                Ok(true)
            }
        }
    }

    /// The write was certainly not applied (a 409 for the ref): the intent is dropped.
    pub(super) fn carry_not_applied(&mut self) -> Result<(), AppError> {
        if self.rec().carry.as_ref().is_some_and(|c| c.write.is_some()) {
            self.carry_mut(|c| c.write = None)?;
        }
        Ok(())
    }

    /// The items AdoptExternalRef's update carries: all remaining ones.
    pub(super) fn carry_with_adoption(&self) -> Vec<CarryItem> {
        if self.rec().carry.is_none() {
            return Vec::new();
        }
        self.carry_rec().remaining()
    }

    /// The display name the carry-over gave the survivor, once written: the name the
    /// display-name check must then expect instead of the one before the merge.
    pub(super) fn carried_display_name(&self) -> Option<String> {
        self.rec()
            .carry
            .as_ref()?
            .carried
            .iter()
            .find_map(|i| match i {
                CarryItem::DisplayName { name } => Some(name.clone()),
                _ => None,
            })
    }

    // ---- CarryOver --------------------------------------------------------------------------

    /// Writes every value not carried yet in updates of their own (all together, then one at
    /// a time after an unnamed refusal), each journaled. `Ok(Err(outcome))`: an answer that
    /// may or may not have applied stops here (the intent stays; the next run reads first).
    pub(super) async fn carry_write_rest(&mut self, step: Step) -> Phase<()> {
        let primary = self.primary();
        loop {
            let batch = self.carry_rec().next_batch();
            if batch.is_empty() {
                return Ok(Ok(()));
            }
            let live = match self.carry_live(step).await? {
                Ok(u) => u,
                Err(outcome) => return Ok(Err(outcome)),
            };
            let (batch, fields) = self.carry_write_for(&batch, &live)?;
            if batch.is_empty() {
                continue;
            }
            self.carry_intent(&batch, None)?;
            let written = self
                .ctx
                .client
                .rev_users_update(&primary, serde_json::Value::Object(fields))
                .await;
            self.wrote_survivor(written.as_ref().ok()).await;
            match written {
                Ok(u) => self.carry_answered(&batch, &u)?,
                Err(e) if e.status() == Some(400) => self.carry_refused(&batch, &e)?,
                Err(e) => return Self::api_failure(step, &e).map(|(o, _)| Err(o)),
            }
        }
    }

    pub(super) async fn carry_over(&mut self) -> StepResult {
        let step = Step::CarryOver;
        match self.carry_planned(step)? {
            Ok(true) => {}
            Ok(false) => {
                self.complete(step, |_| {})?;
                return Ok((StepOutcome::Completed, Some("off (--no-carry)".into())));
            }
            Err(outcome) => return Ok((outcome, None)),
        }
        if let Err(outcome) = self.carry_resolve(step).await? {
            return Ok((outcome, None));
        }
        if let Err(outcome) = self.carry_write_rest(step).await? {
            return Ok((outcome, None));
        }
        let c = self.carry_rec();
        let detail = format!(
            "{} carried, {} conflict(s) kept as the survivor's, {} refused",
            c.carried.len(),
            c.plan.conflicts.len(),
            c.refused.len()
        );
        self.complete(step, |_| {})?;
        Ok((StepOutcome::Completed, Some(detail)))
    }
}
