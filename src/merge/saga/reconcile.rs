//! Reconcile: after the merge, every backed-up ticket and conversation names the primary
//! instead of the secondary, and a display name the merge changed is put back.

use super::*;
use crate::validate::Role;

impl Saga<'_, '_> {
    // ---- Reconcile ------------------------------------------------------------------------

    pub(super) async fn reconcile(&mut self) -> StepResult {
        let step = Step::Reconcile;
        let Some(summary) = self.rec().backup.clone() else {
            return Ok((
                StepOutcome::Failed {
                    error: PairError::new(step, "no backup recorded"),
                },
                None,
            ));
        };
        let (backed_up, backed_up_convs) = match load_backup(&summary.dir) {
            Ok(v) => v,
            Err(e) => {
                return Ok((
                    StepOutcome::Failed {
                        error: PairError::new(step, e),
                    },
                    None,
                ));
            }
        };
        if self.destination_unconfirmed() {
            match self
                .confirm_destination(&backed_up, &backed_up_convs)
                .await?
            {
                Ok(()) => {}
                Err(outcome) => return Ok((outcome, None)),
            }
        }
        // Applied (journaled so): a list read from now on stands in for this Reconcile's.
        self.merge_shows_applied().await;
        let merged = self.merged_map();
        let repaired_now = match self.repair_tickets(&backed_up, &merged).await? {
            Ok(n) => n,
            Err(outcome) => return Ok((outcome, None)),
        };
        let convs_now = match self.repair_conversations(backed_up_convs, &merged).await? {
            Ok(n) => n,
            Err(outcome) => return Ok((outcome, None)),
        };
        // Under `--keep revu` the ref adoption's answer is the whole primary: the name is
        // checked there, which spares a `rev-users.get` per pair.
        let renamed = if adoption_reads_primary(&self.rec()) {
            false
        } else {
            match self.restore_display_name(step, None).await? {
                Ok(renamed) => renamed,
                Err(outcome) => return Ok((outcome, None)),
            }
        };
        self.complete(step, |r| {
            if renamed {
                r.repairs.display_name_restored = true;
            }
        })?;
        let (primary, secondary) = (self.primary(), self.secondary());
        let clean = repaired_now == 0 && convs_now == 0;
        self.ctx
            .lists
            .merge_settled(&primary, &secondary, clean)
            .await;
        let detail = format!(
            "{repaired_now} ticket(s) and {convs_now} conversation(s) repaired{}",
            if renamed {
                ", display name restored"
            } else {
                ""
            }
        );
        Ok((StepOutcome::Completed, Some(detail)))
    }

    /// A lost merge answer (or a crash before it) whose merge showed by a sign that names no
    /// destination (404, inactive, `-drop-`): someone may have merged the secondary into a
    /// third contact meanwhile. An accepted request is this tool's merge; `primary_identity`
    /// and a `301` name the primary themselves.
    fn destination_unconfirmed(&self) -> bool {
        let rec = self.rec();
        let Some(m) = &rec.merged else { return false };
        !m.destination_confirmed
            && evidence::names_no_destination(&m.sign)
            && !rec
                .merge
                .as_ref()
                .is_some_and(|i| matches!(i.outcome, Some(MergeOutcome::Accepted { .. })))
    }

    /// Confirms that the secondary went into the primary: its backed-up tickets (up to five
    /// that named it and not the primary) or conversations now name the primary, and none
    /// names a contact they did not before. One that names another contact instead makes the
    /// pair merged elsewhere: nothing is written to the tickets, nothing adopted. When none
    /// says anything (the secondary was on no object of its own, or the merge moved none of
    /// them) there is no sign of another destination either, and the merge is taken as ours,
    /// with a warning (docs/commands.md, "Merged elsewhere").
    async fn confirm_destination(
        &mut self,
        backed_up: &[Work],
        convs: &[Conversation],
    ) -> Phase<()> {
        const LOOKS: usize = 5;
        let step = Step::Reconcile;
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let alone = |l: &[UserSummary]| {
            let l = ids(l);
            l.contains(&secondary) && !l.contains(&primary)
        };
        let mut verdicts = Vec::new();
        for t in backed_up
            .iter()
            .filter(|t| alone(&t.reported_by))
            .take(LOOKS)
        {
            match client.works_get(&t.id).await {
                Ok(w) => verdicts.push(evidence::destination_of(
                    &ids(&t.reported_by),
                    &ids(&w.reported_by),
                    &primary,
                    &secondary,
                )),
                Err(e) if e.is_devrev_not_found() => {}
                Err(e) => return phase_api_failure(step, &e),
            }
        }
        let mut dest = evidence::destination(verdicts);
        let convs: Vec<&Conversation> = convs.iter().filter(|c| alone(&c.members)).collect();
        if dest == Destination::Unknown && !convs.is_empty() {
            // No conversations.get: the primary's conversations show those that moved to it.
            match client.conversations_with_members(&[&primary]).await {
                Ok(now) => {
                    dest = evidence::destination(convs.iter().map(|c| {
                        now.iter().find(|n| n.id == c.id).and_then(|n| {
                            evidence::destination_of(
                                &ids(&c.members),
                                &ids(&n.members),
                                &primary,
                                &secondary,
                            )
                        })
                    }));
                }
                Err(e) => return phase_api_failure(step, &e),
            }
        }
        let sign = self
            .rec()
            .merged
            .as_ref()
            .map(|m| m.sign.to_string())
            .unwrap_or_default();
        let evidence = match dest {
            Destination::Ours => {
                self.save(|r| {
                    if let Some(m) = r.merged.as_mut() {
                        m.destination_confirmed = true;
                    }
                })?;
                return Ok(Ok(()));
            }
            Destination::Elsewhere(into) => format!(
                "after the lost merge answer the secondary was merged into {} ({sign}; its backed-up tickets now name that contact), not into the primary: nothing repaired or adopted",
                into.join(", ")
            ),
            Destination::Unknown => {
                tracing::warn!(
                    pair = %self.rec().email,
                    "after the lost merge answer the secondary shows merged ({sign}); none of its own tickets or conversations says where it went, and nothing names another contact: taken as this tool's merge"
                );
                return Ok(Ok(()));
            }
        };
        Ok(Err(StepOutcome::MergedElsewhere {
            reason: SkipReason::MergedElsewhere {
                role: Role::Secondary,
                evidence,
            },
        }))
    }

    /// Every merged secondary → its primary, over all pairs of the journal and this one.
    pub(super) fn merged_map(&self) -> BTreeMap<String, String> {
        let mut merged: BTreeMap<String, String> = self.sp.with(|sp| {
            sp.file()
                .pairs
                .values()
                .filter(|r| r.merged.is_some() && r.status != PairStatus::MergedElsewhere)
                .map(|r| (r.secondary.clone(), r.primary.clone()))
                .collect()
        });
        merged.insert(self.secondary(), self.primary());
        merged
    }

    /// Reconcile's tickets: every backed-up ticket, and any listed one still naming the
    /// secondary, gets `reported_by` with the secondary replaced. One listing finds the
    /// primary's tickets and any still naming the secondary. Returns how many were written.
    pub(super) async fn repair_tickets(
        &mut self,
        backed_up: &[Work],
        merged: &BTreeMap<String, String>,
    ) -> Phase<usize> {
        let step = Step::Reconcile;
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let listed =
            match validate::tickets_of_both::<Work>(client, self.ctx.lists, &primary, &secondary)
                .await
            {
                Ok(v) => v,
                Err(e) => return phase_api_failure(step, &e),
            };
        let mut listed: BTreeMap<String, Work> =
            listed.into_iter().map(|w| (w.id.clone(), w)).collect();
        let mut todo: Vec<(String, Option<usize>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for t in backed_up {
            if seen.insert(t.id.clone()) {
                todo.push((
                    t.id.clone(),
                    position_hint(&t.reported_by, &primary, &secondary),
                ));
            }
        }
        // Tickets created after the backup that still name the secondary are repaired too.
        for (id, w) in &listed {
            if !seen.contains(id) && w.reported_by.iter().any(|u| u.id == secondary) {
                seen.insert(id.clone());
                todo.push((id.clone(), None));
            }
        }
        let mut repaired_now = 0usize;
        for (id, hint) in todo {
            let current = match listed.remove(&id) {
                Some(w) => w,
                None => match client.works_get(&id).await {
                    Ok(w) => w,
                    Err(e) if e.is_devrev_not_found() => {
                        tracing::warn!(ticket = %id, "backed-up ticket no longer exists; it is in the backup");
                        self.save(|r| {
                            if !r.repairs.tickets_gone.contains(&id) {
                                r.repairs.tickets_gone.push(id.clone());
                            }
                        })?;
                        continue;
                    }
                    Err(e) => return phase_api_failure(step, &e),
                },
            };
            let now = ids(&current.reported_by);
            let want = replace_members(&now, merged, &primary, hint);
            if want == now {
                continue;
            }
            match client.works_set_reported_by(&id, &want).await {
                Ok(w) if same_set(&ids(&w.reported_by), &want, &now) => {}
                Ok(w) => {
                    return phase_failed(
                        step,
                        format!(
                            "ticket {}: reported_by is {:?} after setting {:?}",
                            w.label(),
                            ids(&w.reported_by),
                            want
                        ),
                    );
                }
                Err(e) => return phase_api_failure(step, &e),
            }
            repaired_now += 1;
            self.save(|r| {
                if !r.repairs.tickets.contains(&id) {
                    r.repairs.tickets.push(id.clone());
                }
            })?;
        }
        Ok(Ok(repaired_now))
    }

    /// Reconcile's conversations: the same for members. There is no conversations.get, so
    /// one that names neither contact any more is rebuilt from its backed-up member list.
    /// Returns how many were written.
    pub(super) async fn repair_conversations(
        &mut self,
        backed_up: Vec<Conversation>,
        merged: &BTreeMap<String, String>,
    ) -> Phase<usize> {
        let step = Step::Reconcile;
        let (primary, secondary) = (self.primary(), self.secondary());
        let client = self.ctx.client;
        let listed = match validate::conversations_of_both::<Conversation>(
            client,
            self.ctx.lists,
            &primary,
            &secondary,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return phase_api_failure(step, &e),
        };
        let mut listed: BTreeMap<String, Conversation> =
            listed.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut todo: Vec<Conversation> = Vec::new();
        let mut seen = BTreeSet::new();
        for c in backed_up {
            if seen.insert(c.id.clone()) {
                todo.push(c);
            }
        }
        for (id, c) in &listed {
            if !seen.contains(id) && c.members.iter().any(|u| u.id == secondary) {
                seen.insert(id.clone());
                todo.push(c.clone());
            }
        }
        let mut convs_now = 0usize;
        for c in todo {
            let hint = position_hint(&c.members, &primary, &secondary);
            let current = listed.remove(&c.id).unwrap_or(c);
            let now = ids(&current.members);
            let want = replace_members(&now, merged, &primary, hint);
            if want == now {
                continue;
            }
            match client.conversations_set_members(&current.id, &want).await {
                Ok(updated) if same_set(&ids(&updated.members), &want, &now) => {}
                Ok(updated) => {
                    return phase_failed(
                        step,
                        format!(
                            "conversation {}: members are {:?} after setting {:?}",
                            updated.label(),
                            ids(&updated.members),
                            want
                        ),
                    );
                }
                Err(e) => return phase_api_failure(step, &e),
            }
            convs_now += 1;
            let id = current.id.clone();
            self.save(|r| {
                if !r.repairs.conversations.contains(&id) {
                    r.repairs.conversations.push(id.clone());
                }
            })?;
        }
        Ok(Ok(convs_now))
    }

    /// The primary's display name as it was before the merge, if the merge changed it (the
    /// last part of Reconcile, or of AdoptExternalRef when that runs). `seen`: the primary as
    /// an answer after the merge showed it (a `rev-users.update` answer is the whole user);
    /// without one it is read. True when the name was written now.
    pub(super) async fn restore_display_name(
        &mut self,
        step: Step,
        seen: Option<RevUser>,
    ) -> Phase<bool> {
        // A name the carry-over wrote (over an empty or email-only one) is the one to keep.
        let Some(original) = self
            .carried_display_name()
            .or_else(|| self.rec().primary_display_name.clone())
        else {
            return Ok(Ok(false));
        };
        let primary = self.primary();
        let client = self.ctx.client;
        let current = match seen {
            Some(u) if u.id == primary => u,
            _ => match self.survivor_now().await {
                Ok(u) => u,
                Err(e) => return phase_api_failure(step, &e),
            },
        };
        if current.display_name.as_deref() == Some(original.as_str()) {
            return Ok(Ok(false));
        }
        let written = client
            .rev_users_update(&primary, json!({ "display_name": original }))
            .await;
        self.wrote_survivor(written.as_ref().ok()).await;
        match written {
            Ok(u) if u.display_name.as_deref() == Some(original.as_str()) => Ok(Ok(true)),
            Ok(u) => phase_failed(
                step,
                format!(
                    "display name is {:?} after restoring {original:?}",
                    u.display_name
                ),
            ),
            Err(e) => phase_api_failure(step, &e),
        }
    }
}
