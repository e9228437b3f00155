//! AwaitMerge and the resolution of a lost merge answer: looking at the secondary until it
//! shows merged (by the one rule of `merge/evidence.rs`), is parked, or the watch is over.

use super::*;
use crate::merge::apply_wait::{Bounds, FirstLook};
use crate::merge::journal::accepted_never_applied;

impl Saga<'_, '_> {
    // ---- AwaitMerge -----------------------------------------------------------------------

    pub(super) async fn await_merge(&mut self) -> StepResult {
        if self.ctx.resend_unapplied && accepted_never_applied(&self.rec(), Utc::now()) {
            let attempt = self.rec().merge.as_ref().map_or(1, |m| m.attempt);
            let now = Utc::now();
            self.save(|r| {
                if let Some(m) = r.merge.as_mut() {
                    m.outcome = Some(MergeOutcome::NotApplied { checked_at: now });
                }
            })?;
            self.validated = false;
            self.verified = false;
            let detail = format!(
                "attempt {attempt} was accepted but never applied; --resend-unapplied: it is sent again after Validate and the backup check"
            );
            tracing::warn!(pair = %self.rec().email, "{detail}");
            return Ok((StepOutcome::Completed, Some(detail)));
        }
        self.watch(false).await
    }

    /// Looks at the secondary after this tool requested its merge until it shows merged
    /// (exact evidence only), this visit's look budget is spent (parked: the run comes back
    /// to it), or this run's `--merge-timeout` for the pair is over. `lost`: the request's
    /// answer was lost, so plainly-unmerged looks are counted towards `--merge-watch`.
    pub(super) async fn watch(&mut self, lost: bool) -> StepResult {
        let res = self.watch_visit(lost).await;
        // A first look that missed and no later look of this visit found the merge.
        if let Some(after) = self.first_miss.take() {
            self.tell_first_look(FirstLook {
                after,
                applied: false,
                applied_by: None,
            });
        }
        res
    }

    async fn watch_visit(&mut self, lost: bool) -> StepResult {
        let w = self.ctx.watch;
        let mut deadline = w.started(&self.key) + self.ctx.merge_timeout;
        let (initial, bounds) = self.first_look_bounds();
        let budget = if w.revisiting() {
            Duration::ZERO
        } else {
            w.pass_budget(initial, bounds)
        };
        let budget_end = (Instant::now() + budget).min(deadline);
        let mut delays = poll_delays(self.ctx.min_backoff);
        let mut last_error: Option<ApiError> = None;
        // DevRev never applies a merge within its own answer: a look right after the request
        // would be a wasted call. Wait until it usually has applied one in this run.
        let mut first_look = self.merge_sent && !w.revisiting();
        if first_look {
            let first = w.first_look(initial, bounds);
            if self.nap(first).await {
                return Ok((StepOutcome::Interrupted, None));
            }
        }
        loop {
            let seen = self.observe(lost).await;
            if std::mem::take(&mut first_look) {
                self.note_first_look(&seen);
            }
            match seen {
                Ok(Evidence::Merged(sign)) => {
                    self.merge_shows_applied().await;
                    return self.seen_merged(sign, lost);
                }
                Ok(Evidence::Unmerged) => {
                    last_error = None;
                    if lost {
                        if let Some(done) = self.unmerged_look()? {
                            return Ok(done);
                        }
                    } else {
                        self.note_unmerged()?;
                    }
                }
                Ok(Evidence::Elsewhere(into)) => {
                    return Ok((
                        StepOutcome::MergedElsewhere {
                            reason: SkipReason::MergedElsewhere {
                                role: crate::validate::Role::Secondary,
                                evidence: format!(
                                    "the secondary's primary_identity names {into}: DevRev merged it into that contact, not into the primary; nothing repaired or adopted"
                                ),
                            },
                        },
                        None,
                    ));
                }
                Ok(Evidence::Unclear(why)) => {
                    tracing::warn!(pair = %self.rec().email, "{why}; looking again");
                    // The window starts again at the next plain look, and so does the time
                    // the report gives for a re-run (written only when one was open).
                    if self
                        .rec()
                        .merge
                        .as_ref()
                        .is_some_and(|m| m.unmerged_since.is_some())
                    {
                        self.save(|r| {
                            if let Some(m) = r.merge.as_mut() {
                                m.unmerged_since = None;
                                m.watch_until = None;
                            }
                        })?;
                    }
                }
                Err(e) if is_fatal(&e) => return Err(AppError::Api(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the secondary; will look again");
                    last_error = Some(e);
                }
            }
            let now = Instant::now();
            if lost {
                deadline = deadline.max(self.window_end(now));
            }
            if now >= deadline {
                return self.watch_over(lost, last_error);
            }
            if now >= budget_end {
                return Ok((
                    StepOutcome::Parked,
                    Some("not applied yet; parked, the run comes back to it".into()),
                ));
            }
            if self
                .nap(next_delay(&mut delays).min(budget_end - now))
                .await
            {
                return Ok((StepOutcome::Interrupted, None));
            }
        }
    }

    /// The first look's initial wait (twice the poll loop's first delay: 2 s at the default
    /// 1 s, DevRev's usual apply delay) and the bounds it is steered within: at least the
    /// poll loop's first delay, at most half of `--merge-timeout`.
    fn first_look_bounds(&self) -> (Duration, Bounds) {
        first_look_bounds(self.ctx)
    }

    /// Steers the next pair's first look by what this one found: applied (shorter, told
    /// now), plainly not applied (longer, told when the visit ends, with when a later look
    /// found it). A failed or unclear look says nothing about the delay.
    fn note_first_look(&mut self, seen: &Result<Evidence, ApiError>) {
        let applied = match seen {
            Ok(Evidence::Merged(_)) => true,
            Ok(Evidence::Unmerged) => false,
            _ => return,
        };
        let after = self.since_request();
        if applied {
            self.tell_first_look(FirstLook {
                after,
                applied,
                applied_by: None,
            });
        } else {
            self.first_miss = Some(after);
        }
    }

    fn since_request(&self) -> Duration {
        self.rec().merge.map_or(Duration::ZERO, |m| {
            (Utc::now() - m.requested_at).to_std().unwrap_or_default()
        })
    }

    fn tell_first_look(&self, look: FirstLook) {
        let (initial, bounds) = self.first_look_bounds();
        self.ctx.watch.note_first_look(look, initial, bounds);
    }

    /// When a `--merge-watch` window shorter than `--merge-timeout` (a setting, or tests)
    /// that has started will be complete: the run waits for it rather than leave the
    /// outcome unknown. `now` when there is no such window.
    pub(super) fn window_end(&self, now: Instant) -> Instant {
        let since = self.rec().merge.as_ref().and_then(|m| m.unmerged_since);
        match since {
            Some(since) if self.ctx.merge_watch <= self.ctx.merge_timeout => {
                let end =
                    since + chrono::Duration::from_std(self.ctx.merge_watch).unwrap_or_default();
                now + (end - Utc::now()).to_std().unwrap_or_default()
            }
            _ => now,
        }
    }

    /// The merge shows: journal it and go on with Reconcile.
    pub(super) fn seen_merged(&mut self, sign: MergedSign, lost: bool) -> StepResult {
        if let Some(after) = self.first_miss.take() {
            let applied_by = Some(self.since_request());
            self.tell_first_look(FirstLook {
                after,
                applied: false,
                applied_by,
            });
        }
        let detail = match self.rec().merge.as_ref() {
            Some(m) if lost => format!("resolved attempt {}: merged ({sign})", m.attempt),
            _ => sign.to_string(),
        };
        self.complete(Step::AwaitMerge, |r| {
            r.merged = Some(MergeConfirmation::now(sign));
        })?;
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// A plainly unmerged look at a pair whose merge answer was lost: starts or continues its
    /// `--merge-watch` window (journaled, so it spans runs); once the window is whole the
    /// request counts as not applied and the pre-merge steps run again.
    pub(super) fn unmerged_look(
        &mut self,
    ) -> Result<Option<(StepOutcome, Option<String>)>, AppError> {
        let now = Utc::now();
        let window =
            chrono::Duration::from_std(self.ctx.merge_watch).unwrap_or(chrono::TimeDelta::MAX);
        let since = self.save(|r| {
            let m = r.merge.as_mut()?;
            let since = *m.unmerged_since.get_or_insert(now);
            m.watch_until = since.checked_add_signed(window);
            Some(since)
        })?;
        let Some(since) = since else { return Ok(None) };
        if now - since < window {
            return Ok(None);
        }
        let attempt = self.rec().merge.as_ref().map_or(1, |m| m.attempt);
        let detail = format!(
            "resolved attempt {attempt}: seen plainly unmerged for the whole {} s watch window; it will be sent again",
            self.ctx.merge_watch.as_secs_f64()
        );
        tracing::warn!(pair = %self.rec().email, "{detail}");
        self.save(|r| {
            if let Some(cur) = r.merge.as_mut() {
                cur.outcome = Some(MergeOutcome::NotApplied { checked_at: now });
            }
        })?;
        // Re-check the contacts (and the backup's freshness) before asking again.
        self.validated = false;
        self.verified = false;
        Ok(Some((StepOutcome::Completed, Some(detail))))
    }

    /// A plainly unmerged look after an accepted request: the window that, once whole, makes
    /// it "accepted, never applied" (journaled, so it spans runs).
    fn note_unmerged(&mut self) -> Result<(), AppError> {
        // Only the first look of a window is written: later ones change nothing on disk.
        if self
            .rec()
            .merge
            .as_ref()
            .is_none_or(|m| m.unmerged_since.is_some())
        {
            return Ok(());
        }
        let now = Utc::now();
        let window =
            chrono::Duration::from_std(self.ctx.merge_watch).unwrap_or(chrono::TimeDelta::MAX);
        self.save(|r| {
            if let Some(m) = r.merge.as_mut() {
                m.unmerged_since = Some(now);
                m.watch_until = now.checked_add_signed(window);
            }
        })
    }

    /// This run's wait for the pair is over without an answer either way.
    pub(super) fn watch_over(&mut self, lost: bool, last_error: Option<ApiError>) -> StepResult {
        if lost {
            let after = self
                .rec()
                .merge
                .as_ref()
                .and_then(|m| m.watch_until)
                .map_or_else(
                    || "its watch window is complete".to_string(),
                    |t| t.to_rfc3339(),
                );
            let detail = format!(
                "outcome unknown: the merge answer was lost and DevRev has not shown it applied; it is never sent again before the secondary was seen unmerged for {} s. Re-run after {after}",
                self.ctx.merge_watch.as_secs()
            );
            tracing::warn!(pair = %self.rec().email, "{detail}");
            return Ok((StepOutcome::Unconfirmed, Some(detail)));
        }
        if let Some(e) = last_error {
            return Self::api_failure(Step::AwaitMerge, &e);
        }
        if accepted_never_applied(&self.rec(), Utc::now()) {
            let at = self
                .rec()
                .merge
                .as_ref()
                .and_then(|m| m.unmerged_since)
                .map_or_else(String::new, |t| t.to_rfc3339());
            let detail = format!(
                "accepted, never applied: DevRev accepted the merge, but the secondary has been seen plainly unmerged since {at}, for more than the whole {} s watch window. It is not sent again on its own: check the pair in DevRev, then re-run with --resend-unapplied to send it again (or leave it)",
                self.ctx.merge_watch.as_secs()
            );
            tracing::warn!(pair = %self.rec().email, "{detail}");
            return Ok((StepOutcome::Unconfirmed, Some(detail)));
        }
        let detail = format!(
            "DevRev accepted the merge but had not applied it after {} s; re-run to keep waiting (it is never requested again)",
            self.ctx.merge_timeout.as_secs_f64()
        );
        tracing::warn!(pair = %self.rec().email, "{detail}");
        Ok((StepOutcome::Unconfirmed, Some(detail)))
    }

    /// One look at the secondary after this tool requested its merge, judged by the one
    /// rule of [`evidence`]. After an accepted request (not `lost`) the look is one
    /// `rev-users.list` by both contacts' refs, which also reads the survivor for the
    /// carry-over: when it shows the merge applied, that record is the survivor read after
    /// it (one call, not two). Only under both refs exactly as this process's Validate read
    /// them (a visit or a resumed pair looks with `rev-users.get`). Otherwise, and whenever
    /// that answer proves nothing, one `rev-users.get`.
    pub(super) async fn observe(&mut self, lost: bool) -> Result<Evidence, ApiError> {
        let (primary, secondary) = (self.primary(), self.secondary());
        if !lost
            && self.unmerged_list_looks < LIST_LOOKS
            && let (Some(sec_ref), Some(surv_ref)) =
                (self.live_ref(&secondary), self.live_ref(&primary))
        {
            let sent = Instant::now();
            let contacts = self.ctx.contacts;
            if let Some(look) = contacts
                .look(
                    self.ctx.client,
                    (&secondary, &sec_ref),
                    (&primary, &surv_ref),
                )
                .await?
            {
                let seen = evidence::of_listing(look.secondary.as_ref(), &primary);
                if seen == Evidence::Unmerged {
                    self.unmerged_list_looks += 1;
                }
                if matches!(seen, Evidence::Merged(_))
                    && let Some(survivor) = look.survivor
                {
                    contacts.keep_survivor(&primary, survivor, look.at).await;
                    self.survivor_since = Some(self.survivor_since.map_or(sent, |t| t.max(sent)));
                }
                return Ok(seen);
            }
        }
        let answer = self.ctx.client.rev_users_look(&secondary).await;
        evidence::of_answer(answer, &primary, true)
    }
}

/// Looks by `rev-users.list` a pair gets while they show its secondary unmerged; the next
/// ones are `rev-users.get`s (see `Saga::unmerged_list_looks`). Two: a first look that came
/// too early and the one after it, which usually finds the merge.
const LIST_LOOKS: u32 = 2;

/// The first look's initial wait and the bounds it is steered within (see
/// `Saga::first_look_bounds`).
pub fn first_look_bounds(ctx: &SagaCtx<'_>) -> (Duration, Bounds) {
    let floor = ctx.min_backoff.max(Duration::from_millis(5));
    let bounds = Bounds {
        floor,
        cap: ctx.merge_timeout / 2,
    };
    (ctx.min_backoff * 2, bounds)
}

/// The wait the next first look comes after, as the run has learned it.
pub fn first_look_wait(ctx: &SagaCtx<'_>) -> Duration {
    let (initial, bounds) = first_look_bounds(ctx);
    ctx.watch.first_look(initial, bounds)
}
