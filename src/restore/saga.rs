//! One pair's restore, step by step (docs/commands.md, "Undo a merge"):
//! Check (read-only) → PrimaryRef → Create → Tickets → Conversations → Verify → Done.
//!
//! Every write is journaled before it is sent and its outcome after (`journal.rs`), so a
//! run killed at any instant resumes without creating the contact twice: a create whose
//! answer is unknown is looked up by `external_ref` (then email) before any new attempt, and
//! a ticket or conversation is only written when its live list differs from the wanted one.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::input::Item;
use super::journal::{
    CreateIntent, CreateOutcome, Journal, ObjectKind, PendingWrite, RefChange, RestoreRecord,
    RestoreStatus, RestoreStep,
};
use super::merge_record::MergeFacts;
use super::stop::{Stop, api, record, run_wide};
use crate::devrev::types::{RevUser, UserSummary};
use crate::devrev::{ApiError, DevRevClient};
use crate::error::AppError;
use crate::merge::evidence::{self, Evidence};

/// Create attempts per pair, over all runs: each refused optional field costs one.
const MAX_CREATES: usize = 8;

/// How one pair ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PairEnd {
    Restored,
    /// Finished in an earlier run; nothing was sent now.
    Earlier,
    /// Refused before any write; nothing changed.
    Skipped(String),
    /// Stopped by an error; re-running resumes it.
    Failed(String),
}

fn ids(list: &[UserSummary]) -> Vec<String> {
    list.iter().map(|u| u.id.clone()).collect()
}

/// The backup's list with the secondaries of other pairs already restored replaced by their
/// new contacts (the backup was taken before those merges were undone).
fn as_restored(list: &[UserSummary], renamed: &BTreeMap<String, String>, own: &str) -> Vec<String> {
    list.iter()
        .map(|u| match renamed.get(&u.id) {
            Some(new) if u.id != own => new.clone(),
            _ => u.id.clone(),
        })
        .collect()
}

/// The list an object should have after the restore: the backup's order with the old
/// secondary replaced by the new contact, the primary only where it stood before the merge
/// (and is still), and everyone added since the merge kept at the end. Anyone removed since
/// the merge stays removed.
pub fn desired(
    backup: &[String],
    live: &[String],
    primary: &str,
    old: &str,
    new: &str,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if !out.iter().any(|x| x == id) {
            out.push(id.to_string());
        }
    };
    for b in backup {
        if b == old {
            push(new);
        } else if live.contains(b) {
            push(b);
        }
    }
    for l in live {
        if l != primary && l != old && l != new {
            push(l);
        }
    }
    out
}

/// Runs (or resumes) one pair. `Err` only for run-wide failures.
pub async fn restore_pair(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    facts: &MergeFacts,
) -> Result<PairEnd, AppError> {
    let key = item.key();
    j.insert_new(
        &key,
        RestoreRecord::new(
            item.email(),
            &item.meta.primary_id,
            &item.meta.secondary_id,
            &item.dir,
        ),
    )?;
    if j.get(&key)
        .is_some_and(|r| r.status == RestoreStatus::Restored)
    {
        return Ok(PairEnd::Earlier);
    }
    let (status, end, fatal) = match steps(client, j, item, &key, facts).await {
        Ok(()) => (RestoreStatus::Restored, PairEnd::Restored, None),
        Err(Stop::Skip(why)) => (RestoreStatus::Skipped, PairEnd::Skipped(why), None),
        Err(Stop::Fail(why)) => (RestoreStatus::Failed, PairEnd::Failed(why), None),
        Err(Stop::Fatal(e)) => (
            RestoreStatus::Failed,
            PairEnd::Failed(e.to_string()),
            Some(e),
        ),
    };
    let reason = match &end {
        PairEnd::Skipped(w) | PairEnd::Failed(w) => Some(w.clone()),
        _ => None,
    };
    let saved = j.update(&key, |r| {
        r.status = status;
        r.reason = reason;
        if status == RestoreStatus::Restored {
            r.complete(RestoreStep::Done);
            r.finished_at = Some(Utc::now());
        }
    });
    match (fatal, saved) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(end),
    }
}

async fn steps(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    key: &str,
    facts: &MergeFacts,
) -> Result<(), Stop> {
    j.update(key, |r| {
        r.status = RestoreStatus::InProgress;
        r.reason = None;
    })?;
    let rec = record(j, key);
    let mut primary = None;
    if !rec.wrote_anything() {
        primary = Some(check_live(client, item).await?);
        j.update(key, |r| r.complete(RestoreStep::Check))?;
    }
    if !rec.has(RestoreStep::PrimaryRef) {
        primary_ref(client, j, item, key, primary, facts).await?;
    }
    if !record(j, key).has(RestoreStep::UndoCarry) {
        super::carry::undo_carry(client, j, item, key, facts).await?;
    }
    if !record(j, key).has(RestoreStep::Create) {
        create(client, j, item, key).await?;
    }
    if !record(j, key).has(RestoreStep::Tickets) {
        put_back_all(client, j, item, key, ObjectKind::Ticket).await?;
    }
    if !record(j, key).has(RestoreStep::Conversations) {
        put_back_all(client, j, item, key, ObjectKind::Conversation).await?;
    }
    if !record(j, key).has(RestoreStep::Verify) {
        verify(client, j, item, key).await?;
    }
    Ok(())
}

/// The live state must be the merged one: the primary active, the secondary gone or merged,
/// and nobody but the primary holding the secondary's email or ref. Read-only.
pub async fn check_live(client: &DevRevClient, item: &Item) -> Result<RevUser, StopReason> {
    check(client, item).await.map_err(|s| match s {
        Stop::Skip(w) => StopReason::Refused(w),
        Stop::Fail(w) => StopReason::Error(w),
        Stop::Fatal(e) => StopReason::Fatal(e),
    })
}

/// [`check_live`]'s verdict as the preview reports it.
#[derive(Debug)]
pub enum StopReason {
    Refused(String),
    Error(String),
    Fatal(AppError),
}

impl From<StopReason> for Stop {
    fn from(s: StopReason) -> Self {
        match s {
            StopReason::Refused(w) => Stop::Skip(w),
            StopReason::Error(w) => Stop::Fail(w),
            StopReason::Fatal(e) => Stop::Fatal(e),
        }
    }
}

async fn check(client: &DevRevClient, item: &Item) -> Result<RevUser, Stop> {
    let m = &item.meta;
    let primary = match client.rev_users_get(&m.primary_id).await {
        Ok(u) if u.is_active() => u,
        Ok(_) => {
            return Err(Stop::Skip(format!(
                "the primary {} is no longer active; nothing was changed",
                m.primary_id
            )));
        }
        Err(e) if e.is_devrev_not_found() => {
            return Err(Stop::Skip(format!(
                "the primary {} no longer exists; nothing was changed",
                m.primary_id
            )));
        }
        Err(e) => return Err(api("reading the primary")(e)),
    };
    // The merge run's one rule (`merge/evidence.rs`): a 404 `not_found`, a 301 to the
    // primary, a non-active state, a `-drop-` ref or `primary_identity` naming the primary.
    let answer = client.rev_users_look(&m.secondary_id).await;
    match evidence::of_answer(answer, &m.primary_id, true) {
        Ok(Evidence::Merged(_)) => {}
        Ok(Evidence::Unmerged) => {
            return Err(Stop::Skip(format!(
                "this pair was never merged: the secondary {} is still an active contact, so \
                 there is nothing to undo; nothing was changed",
                m.secondary_id
            )));
        }
        Ok(Evidence::Elsewhere(other)) => {
            return Err(Stop::Skip(format!(
                "the secondary {} was merged into another contact ({other}), not into the \
                 primary: this backup cannot undo that merge; nothing was changed",
                m.secondary_id
            )));
        }
        Ok(Evidence::Unclear(why)) => {
            return Err(Stop::Fail(format!(
                "cannot tell whether the secondary {} is merged ({why}); nothing was changed: \
                 re-run later",
                m.secondary_id
            )));
        }
        Err(e) => return Err(api("reading the secondary")(e)),
    }
    for u in holders(client, item).await? {
        if u.id != m.primary_id && u.id != m.secondary_id && u.is_active() {
            return Err(Stop::Skip(format!(
                "another active contact {} already holds the secondary's email or \
                 external_ref (restored earlier, or created since?); restoring would make a \
                 duplicate, so nothing was changed",
                u.display_id.as_deref().unwrap_or(&u.id)
            )));
        }
    }
    Ok(primary)
}

/// Contacts holding the secondary's external_ref or email.
async fn holders(client: &DevRevClient, item: &Item) -> Result<Vec<RevUser>, Stop> {
    let s = &item.meta.secondary;
    let mut out = Vec::new();
    if let Some(r) = &s.external_ref {
        out.extend(
            client
                .rev_users_list(json!({ "external_ref": [r] }))
                .await
                .map_err(api("listing contacts by external_ref"))?,
        );
    }
    if let Some(e) = &s.email {
        out.extend(
            client
                .rev_users_list(json!({ "email": [e] }))
                .await
                .map_err(api("listing contacts by email"))?,
        );
    }
    Ok(out)
}

/// Gives the primary back its own external_ref, which frees the secondary's.
async fn primary_ref(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    key: &str,
    primary: Option<RevUser>,
    facts: &MergeFacts,
) -> Result<(), Stop> {
    let Some(want) = item.meta.primary.external_ref.clone() else {
        j.update(key, |r| r.complete(RestoreStep::PrimaryRef))?;
        return Ok(());
    };
    let live = match primary {
        Some(p) => p,
        None => client
            .rev_users_get(&item.meta.primary_id)
            .await
            .map_err(api("reading the primary"))?,
    };
    if live.external_ref.as_deref() == Some(want.as_str()) {
        // Already right; with an intent on record, the write before a crash did it.
        j.update(key, |r| {
            if let Some(c) = r.primary_ref.as_mut() {
                c.done = true;
            }
            r.complete(RestoreStep::PrimaryRef);
        })?;
        return Ok(());
    }
    // Decided before a crash: the intent on record goes out again.
    if record(j, key).primary_ref.is_none()
        && let Some(note) = ref_left_alone(item, facts, live.external_ref.as_deref(), &want)
    {
        j.update(key, |r| {
            r.not_restored.push(note);
            r.complete(RestoreStep::PrimaryRef);
        })?;
        return Ok(());
    }
    let change = RefChange {
        from: live.external_ref.clone(),
        to: want.clone(),
        done: false,
    };
    j.update(key, |r| r.primary_ref = Some(change))?;
    let got = client
        .rev_users_update(&item.meta.primary_id, json!({ "external_ref": want }))
        .await
        .map_err(api("giving the primary back its external_ref"))?;
    if got.external_ref.as_deref() != Some(want.as_str()) {
        return Err(Stop::Fail(format!(
            "DevRev did not keep the primary's external_ref {want} (it shows {:?})",
            got.external_ref
        )));
    }
    j.update(key, |r| {
        if let Some(c) = r.primary_ref.as_mut() {
            c.done = true;
        }
        r.complete(RestoreStep::PrimaryRef);
    })?;
    Ok(())
}

/// Why the survivor's ref is left as it is, if it is: it is changed only where it still
/// holds what this pair's merge put there (the ref AdoptExternalRef gave it; with no merge
/// record, the secondary's own ref) and no other merge into it that stays gave the same.
/// Otherwise the ref is someone's since (changed by hand, or another member's): the report
/// says so with both values.
fn ref_left_alone(
    item: &Item,
    facts: &MergeFacts,
    live: Option<&str>,
    own: &str,
) -> Option<String> {
    let own_ref = item.meta.secondary.external_ref.clone();
    let candidates: Vec<String> = if facts.known {
        // The ref this record's adoption set, and this secondary's own ref where any merge
        // into the survivor adopted it (a group runs the adoption in one member's merge).
        facts
            .adopted_ref
            .iter()
            .cloned()
            .chain(own_ref.filter(|r| facts.adopted_into.contains(r)))
            .collect()
    } else {
        own_ref.into_iter().collect()
    };
    let live_s = live.unwrap_or("");
    let Some(put_there) = candidates.into_iter().find(|r| Some(r.as_str()) == live) else {
        return Some(format!(
            "external_ref: the survivor holds {live_s:?}, not a ref this merge gave it (changed \
             since the merge?); left as it is (its own before the merge: {own:?})"
        ));
    };
    facts
        .others
        .iter()
        .find(|o| o.secondary.external_ref.as_deref() == Some(put_there.as_str()))
        .map(|o| {
            format!(
                "external_ref: the survivor holds {live_s:?}, which {} gave it, and that merge \
                 stays; left as it is (its own before the merge: {own:?})",
                o.label
            )
        })
}

/// The fields of `rev-users.create` the backup can fill. The first three identify the
/// contact; the others are dropped one by one if DevRev refuses them (and reported).
fn create_fields(s: &RevUser) -> Map<String, Value> {
    let mut f = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            f.insert(k.to_string(), v);
        }
    };
    put("display_name", s.display_name.clone().map(Value::from));
    put("email", s.email.clone().map(Value::from));
    put("external_ref", s.external_ref.clone().map(Value::from));
    put("description", s.extra.get("description").cloned());
    put(
        "phone_numbers",
        s.extra
            .get("phone_numbers")
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            .cloned(),
    );
    put("rev_org", s.extra.get("rev_org").map(|o| o["id"].clone()));
    put(
        "custom_fields",
        s.extra
            .get("custom_fields")
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .cloned(),
    );
    // Tags as objects show them (`{tag: {id, …}, value?}`), as the create takes them
    // (`[{id, value?}]`, beta scope like `custom_fields`).
    let tags: Vec<Value> = s
        .extra
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let id = t["tag"]["id"].as_str()?;
            Some(match t.get("value").filter(|v| !v.is_null()) {
                Some(v) => json!({"id": id, "value": v}),
                None => json!({"id": id}),
            })
        })
        .collect();
    put("tags", (!tags.is_empty()).then_some(Value::Array(tags)));
    // Beta `external_refs`: only when they hold more than `external_ref` (an org with
    // multi-association contacts); one that refuses it costs that field, noted.
    let refs: Vec<Value> = s
        .extra
        .get("external_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.as_str().is_some_and(|r| !r.is_empty()))
        .cloned()
        .collect();
    let more = refs.iter().any(|r| r.as_str() != s.external_ref.as_deref());
    put("external_refs", more.then_some(Value::Array(refs)));
    f
}

/// What the backup holds of the secondary that `rev-users.create` cannot set, in words: the
/// restore lists each rather than leave it silently behind.
fn not_recreatable(s: &RevUser) -> Vec<String> {
    let mut out = Vec::new();
    for f in s.unknown_fields() {
        if f != "is_verified" {
            out.push(format!(
                "{f}: the backup does not hold them (DevRev's answer did not carry the field \
                 when it was taken: unknown, not empty); not recreated"
            ));
        }
    }
    if s.full_name.as_deref().is_some_and(|n| !n.trim().is_empty()) {
        out.push("full_name: rev-users.create does not take it".to_string());
    }
    if s.is_verified == Some(true) {
        out.push(
            "is_verified: DevRev sets it when the contact verifies (Plug); the new contact is \
             unverified"
                .to_string(),
        );
    }
    let present = |k: &str| {
        s.extra.get(k).is_some_and(|v| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::String(t) => !t.is_empty(),
            _ => true,
        })
    };
    for (k, why) in [
        (
            "display_picture",
            "its artifact belongs to the merged-away contact; upload it again by hand",
        ),
        (
            "artifacts",
            "artifacts have one parent ever; upload them again by hand",
        ),
    ] {
        if present(k) {
            out.push(format!("{k}: {why}"));
        }
    }
    out
}

const IDENTIFYING: [&str; 3] = ["display_name", "email", "external_ref"];

/// Recreates the secondary, exactly once over all runs.
async fn create(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    key: &str,
) -> Result<(), Stop> {
    if record(j, key).create_in_doubt() {
        if let Some(u) = lookup_created(client, item).await? {
            return record_created(j, key, &u, true);
        }
        set_outcome(j, key, CreateOutcome::NotFound)?;
    }
    let mut fields = create_fields(&item.meta.secondary);
    for note in not_recreatable(&item.meta.secondary) {
        note_once(j, key, &note)?;
    }
    loop {
        let attempt = record(j, key).creates.len() + 1;
        if attempt > MAX_CREATES {
            return Err(Stop::Fail(format!(
                "DevRev refused {MAX_CREATES} create requests; see the restore savepoint"
            )));
        }
        let intent = CreateIntent {
            attempt: attempt as u32,
            requested_at: Utc::now(),
            fields: fields.keys().cloned().collect(),
            outcome: None,
        };
        j.update(key, |r| r.creates.push(intent))?;
        let err = match client
            .rev_users_create(&Value::Object(fields.clone()))
            .await
        {
            Ok(u) => return record_created(j, key, &u, false),
            Err(e) => e,
        };
        if let ApiError::OutcomeUnknown { .. } = err {
            if let Some(u) = lookup_created(client, item).await? {
                return record_created(j, key, &u, true);
            }
            // The intent stays open: the next run looks again before any new create.
            return Err(Stop::Fail(format!(
                "{err}; the contact is not listed (yet): re-run to look it up again"
            )));
        }
        let refused = CreateOutcome::Refused {
            status: err.status().unwrap_or(0),
            reason: err.to_string(),
        };
        set_outcome(j, key, refused)?;
        if let Some(field) = refused_optional_field(&err, &fields) {
            fields.remove(&field);
            note_once(j, key, &format!("{field}: DevRev refused it ({err})"))?;
            continue;
        }
        if err.is_conflict() && record(j, key).earlier_create_in_doubt() {
            // An earlier attempt's answer was lost (its lookup found nothing then); the check
            // before the first write showed no other holder, so a holder now is ours. After
            // definite refusals only, a holder is someone else: a Plug login that took the
            // freed ref meanwhile is never claimed.
            if let Some(u) = lookup_created(client, item).await? {
                return record_created(j, key, &u, true);
            }
        }
        if err.is_conflict() {
            // Whoever holds the ref now, apart from the pair's own contacts (a merged-away
            // secondary that keeps its ref until DevRev releases it).
            let holder = holders(client, item).await.ok().and_then(|hs| {
                hs.into_iter()
                    .find(|u| u.id != item.meta.primary_id && u.id != item.meta.secondary_id)
            });
            let reference = &item.meta.secondary.external_ref;
            return Err(Stop::Fail(match holder {
                Some(u) => format!(
                    "the secondary's external_ref {reference:?} is held by another contact ({}{}) \
                     (DevRev answered 409); this restore did not create that contact and does \
                     not take it for its own: move the ref off it (or merge it) in DevRev, then \
                     re-run",
                    u.display_id.as_deref().unwrap_or(&u.id),
                    if u.is_active() { "" } else { ", not active" }
                ),
                None => format!(
                    "the secondary's external_ref {reference:?} is still held (DevRev answered \
                     409, and no other contact is listed with it: the merged-away secondary \
                     keeps it until DevRev releases it); re-run later"
                ),
            }));
        }
        return Err(api("creating the contact")(err));
    }
}

/// The optional field a 400 names, if the request sent it.
fn refused_optional_field(err: &ApiError, fields: &Map<String, Value>) -> Option<String> {
    let ApiError::Status {
        status: 400, body, ..
    } = err
    else {
        return None;
    };
    let f = body.field_name.as_deref()?;
    let f = f.split('.').next().unwrap_or(f);
    (fields.contains_key(f) && !IDENTIFYING.contains(&f)).then(|| f.to_string())
}

fn set_outcome(j: &mut Journal, key: &str, outcome: CreateOutcome) -> Result<(), Stop> {
    j.update(key, |r| {
        if let Some(c) = r.creates.last_mut() {
            c.outcome = Some(outcome);
        }
    })?;
    Ok(())
}

fn note_once(j: &mut Journal, key: &str, note: &str) -> Result<(), Stop> {
    j.update(key, |r| {
        if !r.not_restored.iter().any(|n| n == note) {
            r.not_restored.push(note.to_string());
        }
    })?;
    Ok(())
}

fn record_created(j: &mut Journal, key: &str, u: &RevUser, found: bool) -> Result<(), Stop> {
    j.update(key, |r| {
        if let Some(c) = r.creates.last_mut() {
            c.outcome = Some(CreateOutcome::Created {
                id: u.id.clone(),
                display_id: u.display_id.clone(),
                found_by_lookup: found,
            });
        }
        r.new_id = Some(u.id.clone());
        r.new_display_id = u.display_id.clone();
        r.complete(RestoreStep::Create);
    })?;
    Ok(())
}

/// The contact an earlier create made, if DevRev lists it: by the secondary's ref, else by
/// its email, never the primary or the old secondary.
async fn lookup_created(client: &DevRevClient, item: &Item) -> Result<Option<RevUser>, Stop> {
    let m = &item.meta;
    let want_email = m.secondary.email.as_deref().map(str::to_lowercase);
    let ours = |u: &RevUser| {
        u.id != m.primary_id
            && u.id != m.secondary_id
            && u.is_active()
            && u.email.as_deref().map(str::to_lowercase) == want_email
    };
    Ok(holders(client, item).await?.into_iter().find(ours))
}

/// One backed-up ticket or conversation: its id, name and list as the backup has it.
struct Saved<'a> {
    id: &'a str,
    label: &'a str,
    list: &'a [UserSummary],
}

fn saved(item: &Item, kind: ObjectKind) -> Vec<Saved<'_>> {
    match kind {
        ObjectKind::Ticket => item
            .tickets
            .iter()
            .map(|t| Saved {
                id: &t.id,
                label: t.label(),
                list: &t.reported_by,
            })
            .collect(),
        ObjectKind::Conversation => item
            .conversations
            .iter()
            .map(|c| Saved {
                id: &c.id,
                label: c.label(),
                list: &c.members,
            })
            .collect(),
    }
}

/// The live lists of every ticket (or conversation) naming the primary or the new contact.
async fn live_lists(
    client: &DevRevClient,
    kind: ObjectKind,
    users: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, Stop> {
    Ok(match kind {
        ObjectKind::Ticket => client
            .tickets_reported_by(users)
            .await
            .map_err(api("listing the primary's tickets"))?
            .into_iter()
            .map(|w| (w.id.clone(), ids(&w.reported_by)))
            .collect(),
        ObjectKind::Conversation => client
            .conversations_with_members(users)
            .await
            .map_err(api("listing the primary's conversations"))?
            .into_iter()
            .map(|c| (c.id.clone(), ids(&c.members)))
            .collect(),
    })
}

/// The live list of an object no listing found: a ticket is fetched by id (it may still name
/// only the old secondary); `Err(note)` when there is nothing to put back.
async fn unlisted(
    client: &DevRevClient,
    kind: ObjectKind,
    o: &Saved<'_>,
) -> Result<Result<Vec<String>, String>, Stop> {
    match kind {
        ObjectKind::Ticket => match client.works_get(o.id).await {
            Ok(w) => Ok(Ok(ids(&w.reported_by))),
            Err(e) if e.is_devrev_not_found() => {
                Ok(Err(format!("ticket {}: it no longer exists", o.label)))
            }
            Err(e) => Err(api("reading a ticket")(e)),
        },
        ObjectKind::Conversation => Ok(Err(format!(
            "conversation {}: it no longer lists the primary or the restored contact; left alone",
            o.label
        ))),
    }
}

/// Puts the new contact back on every backed-up ticket (`reported_by`) or conversation
/// (`members`) that named the secondary.
async fn put_back_all(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    key: &str,
    kind: ObjectKind,
) -> Result<(), Stop> {
    let rec = record(j, key);
    let (p, old) = (&item.meta.primary_id, &item.meta.secondary_id);
    let Some(new) = rec.new_id.clone() else {
        return Err(Stop::Fail(
            "the restore savepoint says the contact was created but holds no id for it (was \
             it edited?); check the contact in DevRev, then move restore-savepoint.json away"
                .into(),
        ));
    };
    let renamed = j.renamed();
    let finished = match kind {
        ObjectKind::Ticket => &rec.tickets,
        ObjectKind::Conversation => &rec.conversations,
    };
    let todo: Vec<Saved<'_>> = saved(item, kind)
        .into_iter()
        .filter(|o| o.list.iter().any(|u| u.id == *old) && !finished.iter().any(|f| f == o.id))
        .collect();
    if !todo.is_empty() {
        let live = live_lists(client, kind, &[p.as_str(), new.as_str()]).await?;
        for o in todo {
            let cur = match live.get(o.id) {
                Some(c) => c.clone(),
                None => match unlisted(client, kind, &o).await? {
                    Ok(c) => c,
                    Err(note) => {
                        done_object(j, key, kind, o.id, Some(note), false)?;
                        continue;
                    }
                },
            };
            let backup = as_restored(o.list, &renamed, old);
            let want = desired(&backup, &cur, p, old, &new);
            let target = Target {
                kind,
                id: o.id,
                label: o.label,
            };
            put_back(client, j, key, target, &cur, want).await?;
        }
    }
    let step = match kind {
        ObjectKind::Ticket => RestoreStep::Tickets,
        ObjectKind::Conversation => RestoreStep::Conversations,
    };
    j.update(key, |r| r.complete(step))?;
    Ok(())
}

struct Target<'a> {
    kind: ObjectKind,
    id: &'a str,
    label: &'a str,
}

/// Writes `want` to one object unless it already shows it; journaled, read back, and a
/// refusal is recorded instead of stopping the pair.
async fn put_back(
    client: &DevRevClient,
    j: &mut Journal,
    key: &str,
    t: Target<'_>,
    cur: &[String],
    want: Vec<String>,
) -> Result<(), Stop> {
    if want == cur {
        return done_object(j, key, t.kind, t.id, None, false);
    }
    let pending = PendingWrite {
        kind: t.kind,
        object: t.id.to_string(),
        set: want.clone(),
        requested_at: Utc::now(),
    };
    j.update(key, |r| r.pending = Some(pending))?;
    let got = match t.kind {
        ObjectKind::Ticket => client
            .works_set_reported_by(t.id, &want)
            .await
            .map(|w| ids(&w.reported_by)),
        ObjectKind::Conversation => client
            .conversations_set_members(t.id, &want)
            .await
            .map(|c| ids(&c.members)),
    };
    let what = match t.kind {
        ObjectKind::Ticket => "ticket",
        ObjectKind::Conversation => "conversation",
    };
    let note = match got {
        Ok(g) if g == want => None,
        Ok(g) => Some(format!(
            "{what} {}: DevRev kept {g:?} instead of {want:?}",
            t.label
        )),
        Err(e) if !run_wide(&e) && e.status().is_some_and(|s| (400..500).contains(&s)) => Some(
            format!("{what} {}: DevRev refused the change: {e}", t.label),
        ),
        Err(e) => return Err(api("writing a ticket or conversation")(e)),
    };
    done_object(j, key, t.kind, t.id, note, true)
}

fn done_object(
    j: &mut Journal,
    key: &str,
    kind: ObjectKind,
    id: &str,
    note: Option<String>,
    written: bool,
) -> Result<(), Stop> {
    j.update(key, |r| {
        let list = match kind {
            ObjectKind::Ticket => &mut r.tickets,
            ObjectKind::Conversation => &mut r.conversations,
        };
        list.push(id.to_string());
        if written {
            r.written.push(id.to_string());
        }
        r.not_restored.extend(note);
        r.pending = None;
    })?;
    Ok(())
}

/// Reads the new contact back and records what differs from the backup, and what no restore
/// can give back.
async fn verify(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    key: &str,
) -> Result<(), Stop> {
    let rec = record(j, key);
    let Some(new) = rec.new_id.clone() else {
        return Err(Stop::Fail(
            "the restore savepoint says the contact was created but holds no id for it (was \
             it edited?); check the contact in DevRev, then move restore-savepoint.json away"
                .into(),
        ));
    };
    let u = client
        .rev_users_get(&new)
        .await
        .map_err(api("reading the restored contact back"))?;
    let s = &item.meta.secondary;
    let mut notes = vec![format!(
        "id: the contact is back as {} (was {}); DevRev never reuses ids",
        u.display_id.as_deref().unwrap_or(&u.id),
        s.display_id.as_deref().unwrap_or(&s.id)
    )];
    for (field, was, now) in [
        ("email", &s.email, &u.email),
        ("external_ref", &s.external_ref, &u.external_ref),
        ("display_name", &s.display_name, &u.display_name),
    ] {
        if was.is_some() && was != now {
            notes.push(format!("{field}: DevRev shows {now:?}, the backup {was:?}"));
        }
    }
    if item.secondary_comments > 0 {
        notes.push(format!(
            "comments: {} timeline entr(y/ies) written by the secondary show the primary as \
             author since the merge; the API cannot change authorship",
            item.secondary_comments
        ));
    }
    j.update(key, |r| {
        r.not_restored.extend(notes);
        r.complete(RestoreStep::Verify);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_new_contact_takes_the_secondarys_place_and_the_primary_only_its_own() {
        // Before: [a, S, b]; after the merge: [a, P, b, c] (c added since).
        let want = desired(
            &v(&["a", "S", "b"]),
            &v(&["a", "P", "b", "c"]),
            "P",
            "S",
            "N",
        );
        assert_eq!(want, v(&["a", "N", "b", "c"]));
        // Both were reporters: the merge left P once; both come back in their places.
        let want = desired(&v(&["P", "x", "S"]), &v(&["P", "x"]), "P", "S", "N");
        assert_eq!(want, v(&["P", "x", "N"]));
        // Someone removed x since the merge: x stays removed.
        let want = desired(&v(&["S", "x"]), &v(&["P"]), "P", "S", "N");
        assert_eq!(want, v(&["N"]));
        // A ticket the merge did not move (old S still listed) gets N instead of S.
        let want = desired(&v(&["S", "y"]), &v(&["S", "y"]), "P", "S", "N");
        assert_eq!(want, v(&["N", "y"]));
        // Already restored: nothing changes (so nothing is written twice).
        let want = desired(&v(&["a", "S"]), &v(&["a", "N"]), "P", "S", "N");
        assert_eq!(want, v(&["a", "N"]));
    }

    #[test]
    fn create_fields_come_from_the_backup_and_skip_empty_ones() {
        let s: RevUser = serde_json::from_value(json!({
            "id": "don:identity:dvrv-us-1:devo/o:revu/S", "display_name": "a@x.com",
            "email": "a@x.com", "external_ref": "user_1", "phone_numbers": [],
            "rev_org": {"id": "don:identity:dvrv-us-1:devo/o:revo/1"},
            "custom_fields": {"tnt__plan": "pro"},
            "tags": [{"tag": {"id": "don:core:dvrv-us-1:devo/o:tag/5", "name": "tier"},
                      "value": "gold"}, {"tag": {"id": "don:core:dvrv-us-1:devo/o:tag/6"}}],
            "is_verified": true, "full_name": "Ann Lee"
        }))
        .unwrap();
        let f = create_fields(&s);
        assert!(!f.contains_key("external_refs"), "none beyond external_ref");
        let mut multi = s.clone();
        multi
            .extra
            .insert("external_refs".into(), json!(["user_1", "crm-9"]));
        assert_eq!(
            create_fields(&multi)["external_refs"],
            json!(["user_1", "crm-9"])
        );
        assert_eq!(
            f["tags"],
            json!([{"id": "don:core:dvrv-us-1:devo/o:tag/5", "value": "gold"},
                   {"id": "don:core:dvrv-us-1:devo/o:tag/6"}])
        );
        let notes = not_recreatable(&s);
        assert!(notes[0].starts_with("full_name") && notes[1].starts_with("is_verified"));
        assert_eq!(f["external_ref"], "user_1");
        assert_eq!(f["rev_org"], "don:identity:dvrv-us-1:devo/o:revo/1");
        assert_eq!(f["custom_fields"]["tnt__plan"], "pro");
        assert!(!f.contains_key("phone_numbers") && !f.contains_key("description"));
    }
}
