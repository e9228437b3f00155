//! The steps before the merge and the request itself: Validate, Backup, VerifyBackup,
//! RequestMerge (with the intent journaled before the request leaves).

use super::*;

impl Saga<'_, '_> {
    // ---- Validate -------------------------------------------------------------------------

    pub(super) async fn validate(&mut self) -> StepResult {
        let Some(pair) = self.pair else {
            return Ok((
                StepOutcome::Skipped {
                    reason: SkipReason::NotInCsv,
                },
                None,
            ));
        };
        // The same live check as `--preview --check-live`, so both refuse the same pairs.
        let (primary, secondary) = match validate::validate_pair(
            self.ctx.client,
            pair,
            self.ctx.contacts,
        )
        .await
        {
            // A redirect, or the secondary's id answered with another contact's record, is an
            // answer about the secondary, judged by the one evidence rule.
            Err(e) if e.status() == Some(301) || matches!(e, ApiError::OtherContact { .. }) => {
                return self.validate_moved(&e);
            }
            Err(e) => return Self::api_failure(Step::Validate, &e),
            Ok(LiveCheck::Passed(live)) => {
                for w in &live.warnings {
                    tracing::warn!(pair = %pair.email, "{w}");
                }
                (live.primary, live.secondary)
            }
            Ok(LiveCheck::Refused {
                problems,
                secondary,
                ..
            }) => {
                // A merge this tool requested earlier that DevRev applied late: it still
                // needs its follow-up steps (Reconcile, AdoptExternalRef).
                if let Some(sign) = self.merged_late(secondary.as_ref()) {
                    let detail = format!(
                        "an earlier merge request was applied late ({sign}); resuming at Reconcile"
                    );
                    tracing::info!(pair = %pair.email, "{detail}");
                    self.complete(Step::AwaitMerge, |r| {
                        r.merged = Some(MergeConfirmation::now(sign));
                    })?;
                    return Ok((StepOutcome::Completed, Some(detail)));
                }
                let detail = problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let reason = if already_merged_into(secondary.as_ref(), &pair.primary.rev_user_id) {
                    SkipReason::AlreadyMerged
                } else {
                    problems
                        .first()
                        .map(skip_reason)
                        .unwrap_or(SkipReason::NotInCsv)
                };
                return Ok((StepOutcome::Skipped { reason }, Some(detail)));
            }
        };
        let (name, sref) = (primary.display_name.clone(), secondary.external_ref.clone());
        self.complete(Step::Validate, |r| {
            r.primary_display_name = name;
            r.secondary_external_ref = sref;
        })?;
        self.live = Some((primary, secondary));
        self.validated = true;
        Ok((StepOutcome::Completed, None))
    }

    /// Validate got a 301 for the secondary: merged into the primary when its `Location`
    /// names the primary (resumed at Reconcile if this tool's request may have done it,
    /// otherwise already merged, nothing to do); any other redirect fails the pair.
    pub(super) fn validate_moved(&mut self, e: &ApiError) -> StepResult {
        let primary = self.primary();
        let Ok(Evidence::Merged(sign)) = evidence::of_answer(Err(e.clone()), &primary, false)
        else {
            return Self::api_failure(Step::Validate, e);
        };
        if self.requested_may_have_landed() {
            let detail = format!(
                "an earlier merge request was applied late ({sign}); resuming at Reconcile"
            );
            tracing::info!(pair = %self.rec().email, "{detail}");
            self.complete(Step::AwaitMerge, |r| {
                r.merged = Some(MergeConfirmation::now(sign));
            })?;
            return Ok((StepOutcome::Completed, Some(detail)));
        }
        Ok((
            StepOutcome::Skipped {
                reason: SkipReason::AlreadyMerged,
            },
            Some(format!(
                "the secondary is already merged into the primary ({sign})"
            )),
        ))
    }

    /// Whether the journal shows a merge request of this tool that DevRev may have taken in.
    /// One it refused (4xx) or that never reached it is no merge of this tool's, and a
    /// deactivation by hand must not read as one. An intent without an outcome (a crash
    /// mid-request) may have been applied.
    pub(super) fn requested_may_have_landed(&self) -> bool {
        let rec = self.rec();
        rec.merge.iter().chain(&rec.earlier_merges).any(|m| {
            !m.outcome
                .as_ref()
                .is_some_and(MergeOutcome::never_reached_devrev)
        })
    }

    /// Validate's look at the secondary, by the one evidence rule, when the journal shows a
    /// merge request of this tool for the pair: `None` when it does not show that merge.
    /// `secondary` is `None` when DevRev answered 404 `not_found` for it.
    pub(super) fn merged_late(&self, secondary: Option<&RevUser>) -> Option<MergedSign> {
        if !self.requested_may_have_landed() {
            return None;
        }
        let rec = self.rec();
        match secondary {
            None => Some(MergedSign::NotFound),
            Some(s) => match evidence::of_user(s, &rec.primary, true) {
                Evidence::Merged(sign) => Some(sign),
                _ => None,
            },
        }
    }

    // ---- Backup ---------------------------------------------------------------------------

    pub(super) async fn backup(&mut self) -> StepResult {
        let (Some(pair), Some((primary, secondary))) = (self.pair, self.live.as_ref()) else {
            // next_step() only reaches Backup after Validate in this process.
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(Step::Backup, "backup attempted without a validation"),
                },
                None,
            ));
        };
        let input = BackupInput {
            pair,
            primary,
            secondary,
            run_id: self.ctx.run_id,
            scope: self.ctx.scope,
            root: self.ctx.backup_root,
            lists: self.ctx.lists,
            reads: Some(self.ctx.reads),
        };
        self.backup_began = Some(Instant::now());
        match backup::take(self.ctx.client, input).await {
            Ok(summary) => {
                let detail = format!(
                    "{} ticket(s), {} timeline entries, {} attachment(s), {} conversation(s) in {}",
                    summary.tickets,
                    summary.timeline_entries,
                    summary.attachments,
                    summary.conversations,
                    summary.dir.display()
                );
                self.complete(Step::Backup, |r| r.backup = Some(summary))?;
                self.ctx.watch.note_backup(&self.key);
                self.recheck_since = None;
                // A backup verified by `take` itself still gets VerifyBackup: re-reading from
                // disk is the check that counts.
                self.verified = false;
                Ok((StepOutcome::Completed, Some(detail)))
            }
            Err(BackupError::Api(e)) => Self::api_failure(Step::Backup, &e),
            Err(e @ (BackupError::NoSpace { .. } | BackupError::Io { .. })) => Err(
                AppError::CantCreate(format!("backup of {}: {e}", pair.email)),
            ),
            Err(e @ BackupError::Verification(_)) => Ok((
                StepOutcome::Failed {
                    error: PairError::new(Step::Backup, e.to_string()),
                },
                None,
            )),
        }
    }

    // ---- VerifyBackup ---------------------------------------------------------------------

    pub(super) async fn verify_backup(&mut self) -> StepResult {
        let Some(summary) = self.rec().backup.clone() else {
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(Step::VerifyBackup, "no backup recorded"),
                },
                None,
            ));
        };
        let check_began = Instant::now();
        // At the turn of a pair verified while prepared, the folder was read moments ago:
        // only what DevRev holds may have changed since.
        let recheck = self.recheck_since.take();
        if recheck.is_none()
            && let Err(msg) = backup::verify::verify_dir(&summary.dir)
        {
            // A backup that does not verify is never merged over; the next run takes a new
            // one.
            self.save(|r| r.backup = None)?;
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(
                        Step::VerifyBackup,
                        format!("backup {} does not verify: {msg}", summary.dir.display()),
                    ),
                },
                None,
            ));
        }
        // A backup taken by an earlier process may be stale by now, and one prepared ahead of
        // its turn is compared with lists read since: what it would restore must still be
        // what DevRev holds when the merge is sent.
        let since = match recheck {
            Some(t) => Some(Some(t)),
            None if !self.ctx.watch.backed_up_in_run(&self.key) => Some(None),
            None => None,
        };
        if let Some(since) = since {
            match self.backup_is_current(&summary.dir, since).await? {
                Err(outcome) => return Ok((outcome, None)),
                Ok(None) => {}
                Ok(Some(change)) => {
                    tracing::info!(pair = %self.rec().email, %change, "backup is stale; taking a new one");
                    self.save(|r| r.backup = None)?;
                    let which = if recheck.is_some() {
                        "backup prepared ahead"
                    } else {
                        "backup from an earlier run"
                    };
                    return Ok((
                        StepOutcome::Completed,
                        Some(format!("{which} is stale ({change}); taking a new one")),
                    ));
                }
            }
        }
        self.complete(Step::VerifyBackup, |_| {})?;
        self.verified = true;
        self.current_from = Some(self.backup_began.unwrap_or(check_began));
        let detail = if recheck.is_some() {
            format!(
                "{}: prepared ahead, checked again at its turn against DevRev's lists read since: unchanged",
                summary.dir.display()
            )
        } else {
            summary.dir.display().to_string()
        };
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// Compares which tickets and conversations name the secondary in the backup, and when
    /// each was last modified, with DevRev's current lists (read after `since`, when given).
    /// `Some(what)`: something changed.
    pub(super) async fn backup_is_current(
        &self,
        dir: &Path,
        since: Option<Instant>,
    ) -> Phase<Option<String>> {
        let step = Step::VerifyBackup;
        let (tickets, convs) = match load_backup(dir) {
            Ok(v) => v,
            Err(e) => return phase_failed(step, e),
        };
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let lists = self.ctx.lists;
        let live_t = match validate::of_both::<Work>(
            client,
            lists,
            Listing::Tickets,
            &primary,
            &secondary,
            since,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return phase_api_failure(step, &e),
        };
        let live_c = match validate::of_both::<Conversation>(
            client,
            lists,
            Listing::Conversations,
            &primary,
            &secondary,
            since,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return phase_api_failure(step, &e),
        };
        // Which tickets and conversations name the secondary, and when each was last
        // modified: what the merge moves and Reconcile repairs. (Other reporters may change
        // as other pairs merge; that does not make this pair's backup stale.)
        let naming = |users: &[UserSummary]| users.iter().any(|u| u.id == secondary);
        let modified = |extra: &serde_json::Map<String, serde_json::Value>| {
            extra
                .get("modified_date")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let t_of = |v: &[Work]| -> BTreeMap<String, Option<String>> {
            v.iter()
                .filter(|w| naming(&w.reported_by))
                .map(|w| (w.id.clone(), modified(&w.extra)))
                .collect()
        };
        let c_of = |v: &[Conversation]| -> BTreeMap<String, Option<String>> {
            v.iter()
                .filter(|c| naming(&c.members))
                .map(|c| (c.id.clone(), modified(&c.extra)))
                .collect()
        };
        let (then_t, now_t) = (t_of(&tickets), t_of(&live_t));
        if then_t.keys().ne(now_t.keys()) {
            return Ok(Ok(Some("the secondary's tickets changed".into())));
        }
        let (then_c, now_c) = (c_of(&convs), c_of(&live_c));
        if then_c.keys().ne(now_c.keys()) {
            return Ok(Ok(Some("the secondary's conversations changed".into())));
        }
        let changed: Vec<&String> = then_t
            .iter()
            .chain(&then_c)
            .filter(|(id, at)| now_t.get(*id).or_else(|| now_c.get(*id)) != Some(*at))
            .map(|(id, _)| id)
            .collect();
        if !changed.is_empty() {
            // Their timelines are read again too, not taken from earlier in the run.
            for id in &changed {
                self.ctx.reads.forget_timeline(id);
            }
            return Ok(Ok(Some(format!(
                "{} of the secondary's tickets or conversations modified since (first: {})",
                changed.len(),
                changed[0]
            ))));
        }
        // The carry-over plans from the backup's copy of the survivor and writes its lists
        // whole: a survivor changed since the backup needs a new one.
        if self.ctx.carry
            && let Some((live_primary, _)) = &self.live
            && let Ok(meta) = backup::load_metadata(dir)
            && crate::merge::carry::survivor_data_differs(&meta.primary, live_primary)
        {
            return Ok(Ok(Some(
                "the survivor's own data changed (phone numbers, tags, custom fields or name)"
                    .into(),
            )));
        }
        Ok(Ok(None))
    }

    // ---- RequestMerge ---------------------------------------------------------------------

    pub(super) async fn request_merge(&mut self) -> StepResult {
        // An earlier request whose outcome is unknown: find out, never ask again blindly.
        if let Some(m) = self.rec().merge.clone()
            && !m
                .outcome
                .as_ref()
                .is_some_and(MergeOutcome::certainly_not_applied)
        {
            return self.resolve_intent(m).await;
        }
        let (primary, secondary) = (self.primary(), self.secondary());
        let requested_at = Utc::now();
        // 1. The intent, on disk before the request leaves.
        self.save(|r| {
            let attempt = r.merge.as_ref().map_or(1, |m| m.attempt + 1);
            if let Some(old) = r.merge.take() {
                r.earlier_merges.push(old);
            }
            r.merge = Some(MergeIntent {
                attempt,
                requested_at,
                outcome: None,
                unmerged_since: None,
                watch_until: None,
            });
        })?;
        self.merge_sent = true;
        self.ctx.watch.restart(&self.key);
        // From here on no list answer about these two (or their tickets' other contacts) is
        // reused until Reconcile has finished.
        self.ctx.lists.merge_sent(&primary, &secondary).await;
        // 2. The request, exactly once (the client never repeats a `Write` whose answer may
        //    have followed the work).
        let res = self.ctx.client.rev_users_merge(&primary, &secondary).await;
        // 3. The outcome.
        let outcome = match &res {
            Ok(()) => MergeOutcome::Accepted { at: Utc::now() },
            Err(ApiError::OutcomeUnknown { reason, .. }) => MergeOutcome::Unknown {
                reason: reason.clone(),
            },
            Err(e @ ApiError::Unreachable { .. }) => MergeOutcome::NotSent {
                reason: e.to_string(),
            },
            // 429 after the client's retries: DevRev's own refusal before any work. (Every
            // 5xx comes back from the client as an unknown outcome: it may follow the work.)
            Err(e) if e.status() == Some(429) => MergeOutcome::NotSent {
                reason: e.to_string(),
            },
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                MergeOutcome::Rejected {
                    error: PairError::api(Step::RequestMerge, e),
                }
            }
            Err(e) => MergeOutcome::Unknown {
                reason: e.to_string(),
            },
        };
        self.save(|r| {
            if let Some(m) = r.merge.as_mut() {
                m.outcome = Some(outcome.clone());
            }
            if matches!(outcome, MergeOutcome::Accepted { .. }) {
                r.last_step = Some(Step::RequestMerge);
            }
        })?;
        match (res, outcome) {
            (Ok(()), _) => Ok((StepOutcome::Completed, None)),
            (Err(_), MergeOutcome::Unknown { reason }) => {
                tracing::warn!(pair = %self.rec().email, %reason, "merge answer lost; watching the secondary to find out whether it was applied");
                let m = self.rec().merge.clone().expect("intent just written");
                self.resolve_intent(m).await
            }
            (Err(e), _) if is_fatal(&e) => Err(AppError::Api(e)),
            (Err(e), _) => Ok((
                StepOutcome::Failed {
                    error: PairError::api(Step::RequestMerge, &e),
                },
                None,
            )),
        }
    }

    /// Settles an intent with no known outcome by watching the secondary (see the module
    /// docs): merged → continue with Reconcile; plainly unmerged for a whole `--merge-watch`
    /// window → `NotApplied`, and the pre-merge steps run again; otherwise parked (or, once
    /// the run's wait is over, left with its outcome unknown until a later run).
    pub(super) async fn resolve_intent(&mut self, _m: MergeIntent) -> StepResult {
        self.watch(true).await
    }
}
