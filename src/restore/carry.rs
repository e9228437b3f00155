//! UndoCarry: the survivor gets back its own values where the merge's carry-over wrote the
//! secondary's (the recreated secondary gets its own from the backup, as every field).
//!
//! Only what the carry-over wrote, and only where the survivor still holds the carried
//! value: a value someone changed since is theirs, left as it is and reported. One
//! `rev-users.update`, journaled (the exact fields before the call, `done` after); an intent
//! found without `done` is checked against the survivor before it is sent again.

use chrono::Utc;
use serde_json::{Map, Value};

use super::input::Item;
use super::journal::{CarryUndo, Journal, RestoreStep};
use super::merge_record::MergeFacts;
use super::stop::{Stop, api, record};
use crate::devrev::DevRevClient;
use crate::devrev::types::RevUser;
use crate::merge::carry;

pub(super) async fn undo_carry(
    client: &DevRevClient,
    j: &mut Journal,
    item: &Item,
    key: &str,
    facts: &MergeFacts,
) -> Result<(), Stop> {
    let Some(c) = facts.carry.as_ref() else {
        j.update(key, |r| r.complete(RestoreStep::UndoCarry))?;
        return Ok(());
    };
    let primary = &item.meta.primary_id;
    let live = client
        .rev_users_get(primary)
        .await
        .map_err(api("reading the survivor to put its own values back"))?;
    // A survivor answered without the lists the undo edits cannot be compared: unknown, not
    // "changed since" (and never written whole from nothing). The next run reads again.
    let unknown = live.unknown_lists();
    if !unknown.is_empty() {
        return Err(Stop::Fail(format!(
            "DevRev's answer for the survivor does not carry {}: unknown, not empty, so the \
             carried values cannot be told from its own; nothing was put back, re-run to read \
             it again",
            unknown.join(", ")
        )));
    }
    let fields = match record(j, key).carry_undo {
        Some(u) if u.done => Map::new(),
        // Sent before a crash: applied if the survivor shows it.
        Some(u) if shows(&live, &u.fields) => Map::new(),
        Some(u) => u.fields,
        None => {
            let (fields, changed) = carry::undo(c, &live, &facts.others);
            let intent = (!fields.is_empty()).then(|| CarryUndo {
                requested_at: Utc::now(),
                fields: fields.clone(),
                done: false,
            });
            j.update(key, |r| {
                r.not_restored.extend(changed);
                r.carry_undo = intent;
            })?;
            fields
        }
    };
    if !fields.is_empty() {
        match client
            .rev_users_update(primary, Value::Object(fields.clone()))
            .await
        {
            Ok(u) if shows(&u, &fields) => {}
            Ok(_) => {
                return Err(Stop::Fail(
                    "the survivor does not show its own values after putting them back".into(),
                ));
            }
            // A refusal costs only these values: reported, the restore goes on.
            Err(e) if e.status() == Some(400) => {
                let note = format!("the survivor's own values were not put back: DevRev said {e}");
                j.update(key, |r| r.not_restored.push(note))?;
            }
            Err(e) => return Err(api("putting the survivor's own values back")(e)),
        }
    }
    j.update(key, |r| {
        if let Some(u) = r.carry_undo.as_mut() {
            u.done = true;
        }
        r.complete(RestoreStep::UndoCarry);
    })?;
    Ok(())
}

/// `u` holds what `fields` set: the same phone numbers, each cleared custom field gone, the
/// display name.
fn shows(u: &RevUser, fields: &Map<String, Value>) -> bool {
    let strs = |v: Option<&Value>| -> Vec<String> {
        let mut l: Vec<String> = v
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        l.sort();
        l
    };
    // Phone numbers compared in E.164 form: DevRev may answer another spelling of a number.
    let keys = |v: Option<&Value>| -> Vec<String> {
        let mut k: Vec<String> = strs(v).iter().map(|p| carry::phone_key(p)).collect();
        k.sort();
        k
    };
    let phones_ok = !fields.contains_key("phone_numbers")
        || keys(fields.get("phone_numbers")) == keys(u.extra.get("phone_numbers"));
    let cf_ok = fields
        .get("custom_fields")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| {
            u.extra
                .get("custom_fields")
                .and_then(|c| c.get(k))
                .is_none_or(|x| x == v)
        });
    let name_ok = fields
        .get("display_name")
        .is_none_or(|n| u.display_name.as_deref() == n.as_str());
    // Tags as objects show them (`{tag: {id}, value?}`) against the `[{id, value?}]` written.
    let tag_set = |list: Vec<(Value, Value)>| {
        let mut l: Vec<String> = list.iter().map(|(i, v)| format!("{i}={v}")).collect();
        l.sort();
        l
    };
    let live_tags = u
        .extra
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| (t["tag"]["id"].clone(), t["value"].clone()))
        .collect();
    let tags_ok = fields
        .get("tags")
        .and_then(Value::as_array)
        .is_none_or(|want| {
            tag_set(
                want.iter()
                    .map(|t| (t["id"].clone(), t["value"].clone()))
                    .collect(),
            ) == tag_set(live_tags)
        });
    phones_ok && cf_ok && name_ok && tags_ok
}
