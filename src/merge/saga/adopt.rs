//! AdoptExternalRef: under `--keep revu` the primary takes the secondary's `user_` ref, so
//! future Plug logins resolve to the survivor; a ref DevRev has not released yet is retried.
//! The same update carries the secondary's own data over (see `carry.rs`), so the carry-over
//! costs no call of its own under `--keep revu`.

use super::*;
use crate::merge::carry::CarryItem;

impl Saga<'_, '_> {
    // ---- AdoptExternalRef -----------------------------------------------------------------

    pub(super) async fn adopt_external_ref(&mut self) -> StepResult {
        let step = Step::AdoptExternalRef;
        let (target, holder) = match self.rec().ref_to_adopt() {
            Some((r, holder)) if classify_ref(&r) == RefClass::User => (r, holder),
            other => {
                let other = other.map(|(r, _)| r);
                // Validate guarantees a user_ ref under --keep revu; anything else is left
                // alone rather than guessed at. (Reconcile checked the name: see
                // `adoption_reads_primary`.)
                let detail = format!("nothing to adopt (secondary's ref was {other:?})");
                self.complete(step, |_| {})?;
                return Ok((StepOutcome::Completed, Some(detail)));
            }
        };
        // A backup that cannot be read leaves the carry-over to its own step, which says so.
        let _ = self.carry_planned(step)?;
        let live = match self.carry_resolve(step).await? {
            Ok(live) => live,
            Err(outcome) => return Ok((outcome, None)),
        };
        let done_before = live.filter(|u| {
            u.external_ref.as_deref() == Some(target.as_str())
                && self.carry_with_adoption().is_empty()
        });
        let adopted = match done_before {
            // The interrupted update applied whole: nothing is written again.
            Some(u) => Ok((u, 0)),
            None => self.move_ref(&target, &holder).await?,
        };
        let (answer, conflicts) = match adopted {
            Ok(adopted) => adopted,
            Err((StepOutcome::Interrupted, detail)) => {
                return Ok((StepOutcome::Interrupted, detail));
            }
            Err(other) => {
                // The ref stays pending or failed (the next run retries this step), but the
                // name Reconcile left to this step is put back now all the same.
                self.restore_name_anyway().await?;
                return Ok(other);
            }
        };
        self.save(|r| {
            r.external_ref_adopted = Some(target.clone());
            r.ref_adoption_pending = None;
        })?;
        let renamed = match self.restore_display_name(step, Some(answer)).await? {
            Ok(renamed) => renamed,
            Err(outcome) => return Ok((outcome, None)),
        };
        let detail = format!(
            "{target} (after {conflicts} conflict answer(s)){}",
            if renamed {
                ", display name restored"
            } else {
                ""
            }
        );
        self.complete(step, |r| {
            if renamed {
                r.repairs.display_name_restored = true;
            }
        })?;
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// The display-name check of an adoption that did not complete (one `rev-users.get`):
    /// best effort, a failure here leaves the step's own outcome in place and the next run
    /// checks again.
    pub(super) async fn restore_name_anyway(&mut self) -> Result<(), AppError> {
        match self
            .restore_display_name(Step::AdoptExternalRef, None)
            .await?
        {
            Ok(true) => self.save(|r| r.repairs.display_name_restored = true)?,
            Ok(false) => {}
            Err(outcome) => {
                tracing::warn!(pair = %self.rec().email, ?outcome, "cannot check the primary's display name now; the next run checks it again");
            }
        }
        Ok(())
    }

    /// Sets the ref on the primary, waiting out (and if need be releasing) the merged-away
    /// `holder`'s hold on it (the secondary, or the group member the ref came from). `Ok(Ok((answer, conflicts)))`: adopted, with the
    /// primary as the answer showed it; `Ok(Err(..))`: how the step ends instead.
    pub(super) async fn move_ref(
        &mut self,
        target: &str,
        holder: &str,
    ) -> Result<Result<(RevUser, u32), (StepOutcome, Option<String>)>, AppError> {
        let step = Step::AdoptExternalRef;
        let primary = self.primary();
        let wait = self.ref_wait();
        let mut deadline = Instant::now() + wait;
        let mut delays = poll_delays(self.ctx.min_backoff);
        let mut conflicts = 0u32;
        let mut released = false;
        // The survivor as read for the carried values: once per step, reused while DevRev
        // answers 409 (an update it refused changed nothing), so waiting for the ref costs
        // one call per conflict as before.
        // `None`: not read yet; `Some(None)`: read, and unusable (the values wait for CarryOver).
        let mut live: Option<Option<RevUser>> = None;
        loop {
            let (batch, mut body) = self.carry_with_ref(&mut live).await?;
            body.insert("external_ref".into(), json!(target));
            if !batch.is_empty() {
                self.carry_intent(&batch, Some(target))?;
            }
            let res = self
                .ctx
                .client
                .rev_users_update(&primary, serde_json::Value::Object(body))
                .await;
            self.wrote_survivor(res.as_ref().ok()).await;
            if let Ok(u) = &res
                && !batch.is_empty()
            {
                self.carry_answered(&batch, u)?;
            }
            match res {
                Ok(u) if u.external_ref.as_deref() == Some(target) => {
                    return Ok(Ok((u, conflicts)));
                }
                Ok(u) => {
                    let error = PairError::new(
                        step,
                        format!(
                            "external_ref is {:?} after setting {target:?}",
                            u.external_ref
                        ),
                    );
                    return Ok(Err((StepOutcome::Failed { error }, None)));
                }
                // A carried value DevRev refuses: recorded, and the ref goes again without it.
                // A 400 about the ref itself refuses no value: the adoption fails as it would
                // without them.
                Err(e) if e.status() == Some(400) && !batch.is_empty() => {
                    if !self.carry_refused_with_ref(&batch, &e)? {
                        return Self::api_failure(step, &e).map(Err);
                    }
                }
                Err(e) if e.is_conflict() => {
                    self.carry_not_applied()?;
                    conflicts += 1;
                    let now = Instant::now();
                    if now >= deadline && !released {
                        match self.release_ref(target, holder).await? {
                            Ok(()) => {
                                // DevRev may take a moment to free a released ref: seconds
                                // (at most --merge-timeout), then the adoption is pending.
                                released = true;
                                deadline = Instant::now()
                                    + (wait + Duration::from_secs(10)).min(self.ctx.merge_timeout);
                                continue;
                            }
                            Err(why) => return self.adoption_pending(target, why).await.map(Err),
                        }
                    }
                    if now >= deadline {
                        let why = format!(
                            "{target} is still taken after it was released from the secondary ({conflicts} conflict answers)"
                        );
                        return self.adoption_pending(target, why).await.map(Err);
                    }
                    tracing::debug!(%target, "external_ref still taken; waiting for DevRev to free it");
                    if self.nap(next_delay(&mut delays).min(deadline - now)).await {
                        return Ok(Err((StepOutcome::Interrupted, None)));
                    }
                }
                Err(e) => return Self::api_failure(step, &e).map(Err),
            }
        }
    }

    /// How long to wait for DevRev to free the merged secondary's ref: it keeps refs unique
    /// for a while (409 until it frees it), and one still taken then is released by hand.
    /// Seconds, not minutes, whatever the merges' apply delay: a ref that is not freed by
    /// then is released, and one DevRev will not free is left pending (never a stall).
    fn ref_wait(&self) -> Duration {
        let bounds = crate::merge::apply_wait::Bounds {
            floor: self.ctx.min_backoff,
            cap: self.ctx.merge_timeout,
        };
        self.ctx
            .watch
            .pass_budget(self.ctx.min_backoff * 2, bounds)
            .min(self.ctx.min_backoff * 10)
    }

    /// The carried values that ride in the ref's update, as a write onto the survivor read
    /// just before (see `carry_live`). When that read fails or lacks fields, the ref goes
    /// alone and the values are left to CarryOver, which reads again and says why.
    async fn carry_with_ref(
        &mut self,
        live: &mut Option<Option<RevUser>>,
    ) -> Result<(Vec<CarryItem>, serde_json::Map<String, serde_json::Value>), AppError> {
        let batch = self.carry_with_adoption();
        if batch.is_empty() {
            return Ok(Default::default());
        }
        if live.is_none() {
            *live = Some(match self.carry_live(Step::AdoptExternalRef).await? {
                Ok(u) => Some(u),
                Err(outcome) => {
                    tracing::debug!(pair = %self.rec().email, ?outcome, "the carried values wait for CarryOver");
                    None
                }
            });
        }
        match live.as_ref().and_then(Option::as_ref) {
            Some(u) => self.carry_write_for(&batch, u),
            None => Ok(Default::default()),
        }
    }

    /// Moves the ref off the merged-away `holder` when it still holds it (journaled intent
    /// and outcome, like every write). `Ok(Err(why))`: it cannot be released now.
    pub(super) async fn release_ref(
        &mut self,
        target: &str,
        holder_id: &str,
    ) -> Result<Result<(), String>, AppError> {
        let secondary = holder_id.to_string();
        let client = self.ctx.client;
        let holder = match client.rev_users_look(&secondary).await {
            Ok(u) => u,
            Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(AppError::Api(e)),
            Err(e) => {
                return Ok(Err(format!(
                    "cannot read the secondary to release {target}: {e}"
                )));
            }
        };
        if holder.external_ref.as_deref().map(str::trim) != Some(target) {
            return Ok(Err(format!(
                "{target} is taken, but not by the merged-away secondary (its ref is {:?})",
                holder.external_ref
            )));
        }
        let new_ref = format!("{target}-drop-{secondary}");
        let release = RefRelease {
            requested_at: Utc::now(),
            new_ref: new_ref.clone(),
            outcome: None,
        };
        self.save(|r| r.ref_release = Some(release))?;
        let res = client
            .rev_users_update(&secondary, json!({ "external_ref": new_ref }))
            .await;
        let outcome = match &res {
            Ok(u) if u.external_ref.as_deref() == Some(new_ref.as_str()) => Ok(()),
            Ok(u) => Err(format!(
                "the secondary's ref is {:?} after the release",
                u.external_ref
            )),
            Err(e) if e.scope() == crate::devrev::Scope::Run => {
                return Err(AppError::Api(e.clone()));
            }
            Err(e) => Err(format!(
                "DevRev refused to release {target} from the secondary: {e}"
            )),
        };
        self.save(|r| {
            if let Some(rel) = r.ref_release.as_mut() {
                rel.outcome = Some(outcome.clone());
            }
        })?;
        tracing::info!(pair = %self.rec().email, %target, ?outcome, "released the ref from the merged-away secondary");
        Ok(outcome)
    }

    /// The pair is merged and reconciled but its ref is not adopted: recorded, reported with
    /// what to do, and retried alone by the next run.
    pub(super) async fn adoption_pending(&mut self, target: &str, why: String) -> StepResult {
        // The values that were to ride with the ref go now in updates of their own: a ref
        // that stays pending for good must not keep the secondary's data off the survivor.
        if self.rec().carry.is_some()
            && let Err(outcome) = self.carry_write_rest(Step::AdoptExternalRef).await?
        {
            return Ok((outcome, None));
        }
        let detail = format!(
            "ref adoption pending: {why}. Until {target} is on the primary, a login with it may create the duplicate again; re-run to retry only this step, or move the ref by hand"
        );
        tracing::warn!(pair = %self.rec().email, "{detail}");
        self.save(|r| r.ref_adoption_pending = Some(why))?;
        Ok((StepOutcome::RefPending, Some(detail)))
    }
}
