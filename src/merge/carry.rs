//! Carry-over: the merged-away secondary's own data that the survivor lacked, written onto the
//! survivor after the merge is confirmed (issue 18).
//!
//! DevRev documents that a merge keeps the primary and says nothing of the secondary's own
//! fields; its account merges lose them (devrev-api.md §4.5). So the tool copies them itself,
//! from the verified backup's copy of the secondary (never from a live read of a half-merged
//! contact), onto the survivor as the same backup saw it before the merge:
//!
//! - every phone number the survivor lacks (the union; `phone_numbers` is written whole);
//! - every custom field the survivor does not have or has empty;
//! - `display_name` when the survivor's is empty or just its email;
//! - every tag the survivor lacks, with its value (`tags` is a beta field: the client sends
//!   such an update with the beta scope, and a DevRev that refuses it refuses only the tags).
//!
//! A value the survivor already has is never overwritten: a custom field (or a tag's value)
//! both hold with other values is a [`Conflict`], kept as the survivor's and reported.
//! `full_name` cannot be carried (`rev-users.update` does not take it): noted, never silently
//! dropped.
//!
//! Everything here is pure: [`plan`] decides, [`body`] builds the exact fields of one
//! `rev-users.update`, [`held`] checks an answer (or a later read) against what was written,
//! [`suspects`] maps a 400 onto the items it names. The saga (`saga/carry.rs`) journals and
//! sends; the types below are part of the savepoint format (re-exported by `journal.rs`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::devrev::types::RevUser;

/// One value the secondary held and the survivor lacked: the unit DevRev may refuse, so one
/// bad value never costs the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", rename_all = "snake_case")]
pub enum CarryItem {
    PhoneNumber {
        number: String,
    },
    CustomField {
        key: String,
        value: Value,
    },
    DisplayName {
        name: String,
    },
    /// A tag (its DON) with the value the secondary had on it, if any.
    Tag {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
}

impl CarryItem {
    /// How the report names it: `phone_numbers +15550100`, `custom_fields.tnt__x = "a"`.
    pub fn describe(&self) -> String {
        match self {
            CarryItem::PhoneNumber { number } => format!("phone_numbers {number}"),
            CarryItem::CustomField { key, value } => format!("custom_fields.{key} = {value}"),
            CarryItem::DisplayName { name } => format!("display_name {name:?}"),
            CarryItem::Tag { id, value: None } => format!("tag {id}"),
            CarryItem::Tag { id, value: Some(v) } => format!("tag {id} = {v:?}"),
        }
    }
}

/// A custom field both contacts hold with different values: the survivor's value stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: String,
    pub survivor: Value,
    pub secondary: Value,
}

/// What the carry-over will write, decided once from the backup and journaled before any write.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CarryPlan {
    pub items: Vec<CarryItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// The survivor's phone numbers before the merge, as the backup saw them (for the
    /// record: every write starts from the survivor's live list, read just before it).
    #[serde(default)]
    pub survivor_phones: Vec<String>,
    /// The survivor's display name before the merge (what `--restore` puts back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor_display_name: Option<String>,
    /// The survivor's tags before the merge, as `CarryItem::Tag`s (for the record, like
    /// `survivor_phones`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub survivor_tags: Vec<CarryItem>,
    /// What the secondary held that cannot be carried, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<String>,
}

/// A value DevRev would not take, with its words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub item: CarryItem,
    pub reason: String,
}

/// One `rev-users.update` of carried values: written (and fsynced) before the call; cleared,
/// with its items moved to `carried` or `refused`, after the answer. One still present when a
/// run starts was interrupted: the survivor is read to see whether it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarryWrite {
    pub requested_at: DateTime<Utc>,
    pub items: Vec<CarryItem>,
    /// The `user_` ref sent in the same update (the ref adoption under `--keep revu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_ref: Option<String>,
}

/// The carry-over's journal in a pair's savepoint record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CarryRecord {
    pub plan: CarryPlan,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<CarryItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    /// Items a refusal did not pin down (DevRev named no field, or a field several items
    /// share): each is then tried alone, so only the bad one is lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alone: Vec<CarryItem>,
    /// The write in flight (intent without an answer yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<CarryWrite>,
}

impl CarryRecord {
    pub fn new(plan: CarryPlan) -> Self {
        Self {
            plan,
            ..Default::default()
        }
    }

    /// Items neither carried, refused nor waiting to be tried alone: the next joint write.
    pub fn remaining(&self) -> Vec<CarryItem> {
        self.plan
            .items
            .iter()
            .filter(|i| {
                !self.carried.contains(i)
                    && !self.alone.contains(i)
                    && !self.refused.iter().any(|r| &r.item == *i)
            })
            .cloned()
            .collect()
    }

    /// The next write's items: all remaining ones together, else the first to try alone.
    pub fn next_batch(&self) -> Vec<CarryItem> {
        let rest = self.remaining();
        if !rest.is_empty() {
            return rest;
        }
        self.alone.first().cloned().into_iter().collect()
    }

    /// Nothing left to write.
    pub fn finished(&self) -> bool {
        self.write.is_none() && self.next_batch().is_empty()
    }

    /// Records an answer: the items it shows are carried, the others refused as `missing`.
    pub fn settle(&mut self, items: &[CarryItem], answer: &RevUser, missing: &str) {
        for it in items {
            self.alone.retain(|a| a != it);
            if held(answer, it) {
                push_new(&mut self.carried, it.clone());
            } else {
                self.refuse(it.clone(), missing.to_string());
            }
        }
        self.write = None;
    }

    /// Records what a read after an interrupted write shows: the items the survivor holds
    /// are carried (the write applied, or someone wrote the same), the others go out again.
    pub fn resumed(&mut self, items: &[CarryItem], live: &RevUser) {
        for it in items {
            if held(live, it) {
                self.alone.retain(|a| a != it);
                push_new(&mut self.carried, it.clone());
            }
        }
        self.write = None;
    }

    /// Records a 400 for a write of `items`: a refusal that names exactly one item (or hits a
    /// lone item) refuses it; otherwise the named items (or all, when none is named) are tried
    /// alone.
    pub fn refused_write(&mut self, items: &[CarryItem], field_name: Option<&str>, reason: &str) {
        let named = suspects(field_name, items);
        if items.len() == 1 || named.len() == 1 {
            let it = if items.len() == 1 {
                items[0].clone()
            } else {
                named[0].clone()
            };
            self.alone.retain(|a| a != &it);
            self.refuse(it, reason.to_string());
        } else {
            let pick = if named.is_empty() {
                items.to_vec()
            } else {
                named
            };
            for it in pick {
                push_new(&mut self.alone, it);
            }
        }
        self.write = None;
    }

    /// A 400 on an update that also set something else (the adopted ref) and named no field:
    /// it may be about that other field, so no value is refused for it; each is tried alone
    /// later, where a refusal can only be its own.
    pub fn set_aside(&mut self, items: &[CarryItem]) {
        for it in items {
            push_new(&mut self.alone, it.clone());
        }
        self.write = None;
    }

    /// Items the survivor gained its own value for since the plan (`value`): they become
    /// conflicts kept as the survivor's, never written.
    pub fn superseded(&mut self, items: &[(CarryItem, Value)]) {
        for (it, mine) in items {
            self.plan.items.retain(|i| i != it);
            self.alone.retain(|i| i != it);
            let (key, theirs) = match it {
                CarryItem::CustomField { key, value } => (key.clone(), value.clone()),
                CarryItem::Tag { id, value } => (format!("tags.{id}"), json!(value)),
                CarryItem::DisplayName { name } => ("display_name".into(), json!(name)),
                CarryItem::PhoneNumber { number } => ("phone_numbers".into(), json!(number)),
            };
            let c = Conflict {
                key,
                survivor: mine.clone(),
                secondary: theirs,
            };
            push_new(&mut self.plan.conflicts, c);
        }
    }

    fn refuse(&mut self, item: CarryItem, reason: String) {
        if !self.refused.iter().any(|r| r.item == item) {
            self.refused.push(Refusal { item, reason });
        }
    }
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// A pair's carry-over as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarryEntry {
    pub carried: Vec<CarryItem>,
    pub conflicts: Vec<Conflict>,
    pub refused: Vec<Refusal>,
    /// What the secondary held that cannot be carried, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<String>,
    /// Values not written yet (the step resumes on the next run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<CarryItem>,
}

impl CarryEntry {
    pub fn of(r: &CarryRecord) -> Self {
        let mut pending = r.remaining();
        for a in &r.alone {
            push_new(&mut pending, a.clone());
        }
        Self {
            carried: r.carried.clone(),
            conflicts: r.plan.conflicts.clone(),
            refused: r.refused.clone(),
            not_carried: r.plan.not_carried.clone(),
            pending,
        }
    }

    /// One line for the console and the HTML page: `2 carried, 1 conflict, 1 refused`.
    pub fn brief(&self) -> String {
        let mut s = format!(
            "{} carried, {} conflict(s), {} refused",
            self.carried.len(),
            self.conflicts.len(),
            self.refused.len()
        );
        if !self.pending.is_empty() {
            s.push_str(&format!(", {} pending", self.pending.len()));
        }
        s
    }
}

/// Counts for the run's summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CarryCounts {
    pub phone_numbers: usize,
    pub custom_fields: usize,
    pub display_names: usize,
    pub tags: usize,
    pub conflicts: usize,
    pub refused: usize,
}

impl CarryCounts {
    pub fn add_items(&mut self, items: &[CarryItem]) {
        for i in items {
            match i {
                CarryItem::PhoneNumber { .. } => self.phone_numbers += 1,
                CarryItem::CustomField { .. } => self.custom_fields += 1,
                CarryItem::DisplayName { .. } => self.display_names += 1,
                CarryItem::Tag { .. } => self.tags += 1,
            }
        }
    }

    pub fn add(&mut self, e: &CarryEntry) {
        self.add_items(&e.carried);
        self.conflicts += e.conflicts.len();
        self.refused += e.refused.len();
    }

    /// A plan's would-be writes (the preview's `--check-live`).
    pub fn add_plan(&mut self, p: &CarryPlan) {
        self.add_items(&p.items);
        self.conflicts += p.conflicts.len();
    }

    /// "carried: 31 phone numbers, 12 custom fields; 2 conflicts kept as the survivor's".
    pub fn line(&self) -> String {
        self.line_with("carried")
    }

    /// [`Self::line`] with another verb ("would carry").
    pub fn line_with(&self, verb: &str) -> String {
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        let mut parts = vec![
            n(self.phone_numbers, "phone number", "phone numbers"),
            n(self.custom_fields, "custom field", "custom fields"),
        ];
        if self.display_names > 0 {
            parts.push(n(self.display_names, "display name", "display names"));
        }
        if self.tags > 0 {
            parts.push(n(self.tags, "tag", "tags"));
        }
        let mut s = format!(
            "{verb}: {}; {} kept as the survivor's",
            parts.join(", "),
            n(self.conflicts, "conflict", "conflicts")
        );
        if self.refused > 0 {
            s.push_str(&format!(
                "; {} refused by DevRev",
                n(self.refused, "value", "values")
            ));
        }
        s
    }
}

/// A value that counts as "nothing there": the survivor may take the secondary's.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A phone number in E.164 form for comparing (`+<digits>`): the spaces, dashes, dots and
/// brackets people type dropped, and an international `00` prefix read as `+`; so
/// `+1 415-555 0100`, `+1 (415) 555.0100`, `0014155550100` and `+14155550100` are one number.
/// A number with no country code (`415-555-0100`) cannot be put in E.164: it is compared by
/// its digits alone. Only for comparing: a number is always written as DevRev holds it (or as
/// the secondary held it), never rewritten.
pub fn phone_key(n: &str) -> String {
    let t = n.trim();
    let plus = t.starts_with('+');
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    match (plus, digits.strip_prefix("00")) {
        (true, _) => format!("+{digits}"),
        (false, Some(rest)) if !rest.is_empty() => format!("+{rest}"),
        _ => digits,
    }
}

/// The elements of the contact's list field `key` (none when it is absent or not a list).
fn listed<'u>(u: &'u RevUser, key: &str) -> impl Iterator<Item = &'u Value> {
    u.extra
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn phones(u: &RevUser) -> Vec<String> {
    listed(u, "phone_numbers")
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The contact's tags as `CarryItem::Tag`s (objects show `{tag: {id, …}, value?}`).
fn tags(u: &RevUser) -> Vec<CarryItem> {
    listed(u, "tags")
        .filter_map(|t| {
            Some(CarryItem::Tag {
                id: t["tag"]["id"].as_str()?.to_string(),
                value: t["value"].as_str().map(str::to_string),
            })
        })
        .collect()
}

fn tag_id(i: &CarryItem) -> Option<&str> {
    match i {
        CarryItem::Tag { id, .. } => Some(id),
        _ => None,
    }
}

/// `tags` as `rev-users.update` takes it: `[{id, value?}]`.
fn tags_field(list: &[&CarryItem]) -> Value {
    Value::Array(
        list.iter()
            .filter_map(|i| match i {
                CarryItem::Tag { id, value } => Some(match value {
                    Some(v) => json!({"id": id, "value": v}),
                    None => json!({"id": id}),
                }),
                _ => None,
            })
            .collect(),
    )
}

fn custom_fields(u: &RevUser) -> Map<String, Value> {
    u.extra
        .get("custom_fields")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether the survivor's own data (what the carry-over reads from its backed-up copy and
/// writes whole: phone numbers, tags, custom fields, the display name) differs between the
/// backup and a live read. A backup taken long before the merge (an earlier run, a changed
/// decisions file) must then be taken again: building the written lists from the old copy
/// would drop what someone added to the survivor since.
pub fn survivor_data_differs(backed_up: &RevUser, live: &RevUser) -> bool {
    let mut a = phones(backed_up);
    let mut b = phones(live);
    a.sort();
    b.sort();
    let mut ta = tags(backed_up);
    let mut tb = tags(live);
    let key = |i: &CarryItem| format!("{i:?}");
    ta.sort_by_key(key);
    tb.sort_by_key(key);
    a != b
        || ta != tb
        || custom_fields(backed_up) != custom_fields(live)
        || backed_up.display_name != live.display_name
}

/// A display name that says nothing more than the email (Plug-created contacts have these).
fn name_is_placeholder(name: Option<&str>, email: Option<&str>) -> bool {
    let name = name.map(str::trim).unwrap_or_default();
    name.is_empty() || email.is_some_and(|e| e.trim().eq_ignore_ascii_case(name))
}

/// What to carry from `secondary` (the backup's copy) onto `survivor` (the backup's copy of
/// the primary, before the merge).
pub fn plan(secondary: &RevUser, survivor: &RevUser) -> CarryPlan {
    let mut items = Vec::new();
    let survivor_phones = phones(survivor);
    let mut have: BTreeSet<String> = survivor_phones.iter().map(|p| phone_key(p)).collect();
    for n in phones(secondary) {
        let key = phone_key(&n);
        if !key.is_empty() && have.insert(key) {
            items.push(CarryItem::PhoneNumber { number: n });
        }
    }
    let mine = custom_fields(survivor);
    let mut conflicts = Vec::new();
    for (key, value) in custom_fields(secondary) {
        if is_empty(&value) {
            continue;
        }
        match mine.get(&key) {
            Some(v) if !is_empty(v) => {
                if *v != value {
                    conflicts.push(Conflict {
                        key,
                        survivor: v.clone(),
                        secondary: value,
                    });
                }
            }
            _ => items.push(CarryItem::CustomField { key, value }),
        }
    }
    let sec_name = secondary.display_name.as_deref().map(str::trim);
    if name_is_placeholder(survivor.display_name.as_deref(), survivor.email.as_deref())
        && !name_is_placeholder(sec_name, secondary.email.as_deref())
        && !name_is_placeholder(sec_name, survivor.email.as_deref())
        && let Some(name) = sec_name
    {
        items.push(CarryItem::DisplayName {
            name: name.to_string(),
        });
    }
    let survivor_tags = tags(survivor);
    for t in tags(secondary) {
        let CarryItem::Tag { id, value } = &t else {
            continue;
        };
        if survivor_tags.contains(&t) {
            continue;
        }
        match survivor_tags
            .iter()
            .find(|s| tag_id(s) == Some(id.as_str()))
        {
            Some(CarryItem::Tag { value: mine, .. }) => conflicts.push(Conflict {
                key: format!("tags.{id}"),
                survivor: json!(mine),
                secondary: json!(value),
            }),
            _ => items.push(t.clone()),
        }
    }
    let mut not_carried = Vec::new();
    if secondary
        .full_name
        .as_deref()
        .is_some_and(|f| !f.trim().is_empty())
        && survivor
            .full_name
            .as_deref()
            .is_none_or(|f| f.trim().is_empty())
    {
        not_carried.push("full_name: rev-users.update does not take it".to_string());
    }
    CarryPlan {
        items,
        conflicts,
        survivor_phones,
        survivor_display_name: survivor.display_name.clone(),
        survivor_tags,
        not_carried,
    }
}

/// One carry-over write: the fields of its `rev-users.update` (besides `id`), and the items
/// the survivor no longer lacks (it gained its own value since the plan): never written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Write {
    pub fields: Map<String, Value>,
    /// Each item the survivor now holds another value for, with that value.
    pub superseded: Vec<(CarryItem, Value)>,
}

/// The write of `items` onto the survivor as it is `live` (read in the same step, just
/// before): `phone_numbers` and `tags` are written whole, so each is the survivor's list as
/// DevRev holds it now plus the carried values it lacks (a number or tag it gained since the
/// backup is kept: the backup never held it); a custom field or the display name is written
/// only where the survivor still lacks it. Custom fields go with the schema spec DevRev
/// requires for them.
pub fn body(items: &[CarryItem], live: &RevUser) -> Write {
    let mut w = Write::default();
    let mut list: Vec<String> = phones(live);
    let mut keys: BTreeSet<String> = list.iter().map(|p| phone_key(p)).collect();
    let mut any_phone = false;
    let mut cf = Map::new();
    let live_tags = tags(live);
    let mut tag_list: Vec<&CarryItem> = live_tags.iter().collect();
    let mut any_tag = false;
    let mine = custom_fields(live);
    for it in items {
        match it {
            CarryItem::Tag { id, value } => match tag_list.iter().find(|t| tag_id(t) == Some(id)) {
                Some(CarryItem::Tag { value: v, .. }) if v != value => {
                    w.superseded.push((it.clone(), json!(v)));
                }
                Some(_) => {}
                None => {
                    any_tag = true;
                    tag_list.push(it);
                }
            },
            CarryItem::PhoneNumber { number } => {
                if keys.insert(phone_key(number)) {
                    any_phone = true;
                    list.push(number.clone());
                }
            }
            CarryItem::CustomField { key, value } => match mine.get(key) {
                Some(v) if !is_empty(v) && v != value => {
                    w.superseded.push((it.clone(), v.clone()));
                }
                Some(v) if !is_empty(v) => {}
                _ => {
                    cf.insert(key.clone(), value.clone());
                }
            },
            CarryItem::DisplayName { name } => {
                if live.display_name.as_deref() == Some(name.as_str()) {
                } else if name_is_placeholder(live.display_name.as_deref(), live.email.as_deref()) {
                    w.fields.insert("display_name".into(), json!(name));
                } else {
                    w.superseded
                        .push((it.clone(), json!(live.display_name.clone())));
                }
            }
        }
    }
    if any_phone {
        w.fields.insert("phone_numbers".into(), json!(list));
    }
    if any_tag {
        w.fields.insert("tags".into(), tags_field(&tag_list));
    }
    if !cf.is_empty() {
        w.fields.insert("custom_fields".into(), Value::Object(cf));
        // "Each custom field in the request must have the corresponding schema specified".
        w.fields.insert(
            "custom_schema_spec".into(),
            json!({"tenant_fragment": true, "validate_required_fields": false}),
        );
    }
    w
}

/// `u` holds the carried value (the read-back check of an answer or of a later read).
pub fn held(u: &RevUser, item: &CarryItem) -> bool {
    match item {
        CarryItem::PhoneNumber { number } => {
            let k = phone_key(number);
            phones(u).iter().any(|p| phone_key(p) == k)
        }
        CarryItem::CustomField { key, value } => custom_fields(u).get(key) == Some(value),
        CarryItem::DisplayName { name } => u.display_name.as_deref() == Some(name.as_str()),
        CarryItem::Tag { .. } => tags(u).contains(item),
    }
}

/// The items a 400 names through its `field_name` (`custom_fields.tnt__x`, `tnt__x`,
/// `phone_numbers`, `display_name`); none when it names nothing this write sent.
pub fn suspects(field_name: Option<&str>, items: &[CarryItem]) -> Vec<CarryItem> {
    let Some(f) = field_name.map(str::trim).filter(|f| !f.is_empty()) else {
        return Vec::new();
    };
    let f = f.strip_prefix("custom_fields.").unwrap_or(f);
    items
        .iter()
        .filter(|i| match i {
            CarryItem::PhoneNumber { .. } => {
                f == "phone_numbers" || f.starts_with("phone_numbers[")
            }
            CarryItem::CustomField { key, .. } => f == key,
            CarryItem::DisplayName { .. } => f == "display_name",
            CarryItem::Tag { .. } => {
                f == "tags" || f.starts_with("tags.") || f.starts_with("tags[")
            }
        })
        .cloned()
        .collect()
}

/// Adds what puts `it` back to the undo's fields.
fn undo_one<'r>(
    record: &CarryRecord,
    it: &'r CarryItem,
    f: &mut Map<String, Value>,
    cf: &mut Map<String, Value>,
    drop_phones: &mut Vec<String>,
    drop_tags: &mut Vec<&'r CarryItem>,
) {
    match it {
        CarryItem::PhoneNumber { number } => drop_phones.push(phone_key(number)),
        CarryItem::Tag { .. } => drop_tags.push(it),
        CarryItem::CustomField { key, .. } => {
            cf.insert(key.clone(), Value::Null);
        }
        CarryItem::DisplayName { .. } => {
            f.insert(
                "display_name".into(),
                json!(
                    record
                        .plan
                        .survivor_display_name
                        .clone()
                        .unwrap_or_default()
                ),
            );
        }
    }
}

/// Another merge into the same survivor that is still in place (not restored): what its
/// secondary held (its backed-up copy) may be on the survivor through that merge.
#[derive(Debug, Clone)]
pub struct OtherMerge {
    /// How the report names it (the secondary's display id).
    pub label: String,
    pub secondary: RevUser,
}

/// The fields `--restore` writes to put the survivor back: for each carried item the survivor
/// still holds (`live`, read in the same step), the value from before the merge, unless
/// another merge into the survivor that stays in place (`others`) holds the same value: that
/// one is kept. Returns the fields and, in words, each carried value left as it is (changed
/// since, or another member's too).
pub fn undo(
    record: &CarryRecord,
    live: &RevUser,
    others: &[OtherMerge],
) -> (Map<String, Value>, Vec<String>) {
    let mut f = Map::new();
    let mut changed = Vec::new();
    let mut cf = Map::new();
    let mut drop_phones: Vec<String> = Vec::new();
    let mut drop_tags: Vec<&CarryItem> = Vec::new();
    let also_from = |it: &CarryItem| others.iter().find(|o| held(&o.secondary, it));
    // A write whose answer never came (a crash, a second Ctrl-C) may have applied: its items
    // are undone where the survivor holds them (it lacked each before: that is why it was
    // planned), and otherwise were never written.
    let in_doubt: Vec<&CarryItem> = record
        .write
        .iter()
        .flat_map(|w| &w.items)
        .filter(|i| !record.carried.contains(i))
        .collect();
    let carried = record.carried.iter().map(|i| (i, true));
    for (it, sure) in in_doubt.into_iter().map(|i| (i, false)).chain(carried) {
        if !held(live, it) {
            if sure {
                changed.push(format!(
                    "{} was carried by the merge but has changed since; left as it is",
                    it.describe()
                ));
            }
            continue;
        }
        if let Some(o) = also_from(it) {
            changed.push(format!(
                "{} is kept: {} also held it, and its merge into the survivor stays",
                it.describe(),
                o.label
            ));
            continue;
        }
        undo_one(
            record,
            it,
            &mut f,
            &mut cf,
            &mut drop_phones,
            &mut drop_tags,
        );
    }
    if !drop_phones.is_empty() {
        let keep: Vec<String> = phones(live)
            .into_iter()
            .filter(|p| !drop_phones.contains(&phone_key(p)))
            .collect();
        f.insert("phone_numbers".into(), json!(keep));
    }
    if !drop_tags.is_empty() {
        let live_tags = tags(live);
        let keep: Vec<&CarryItem> = live_tags
            .iter()
            .filter(|t| !drop_tags.contains(t))
            .collect();
        f.insert("tags".into(), tags_field(&keep));
    }
    if !cf.is_empty() {
        f.insert("custom_fields".into(), Value::Object(cf));
        f.insert(
            "custom_schema_spec".into(),
            json!({"tenant_fragment": true, "validate_required_fields": false}),
        );
    }
    (f, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(v: Value) -> RevUser {
        let mut v = v;
        v["id"] = json!("X");
        serde_json::from_value(v).unwrap()
    }

    fn phone(n: &str) -> CarryItem {
        CarryItem::PhoneNumber { number: n.into() }
    }

    fn cf(k: &str, v: Value) -> CarryItem {
        CarryItem::CustomField {
            key: k.into(),
            value: v,
        }
    }

    #[test]
    fn carries_what_the_survivor_lacks_and_never_overwrites() {
        let sec = user(json!({
            "email": "a@x.com", "display_name": "a@x.com", "full_name": "Ann Lee",
            "phone_numbers": ["+14155550100", "+1 415 555 0101"],
            "custom_fields": {"tnt__plan": "pro", "tnt__app_user_id": "u1", "tnt__seat": "",
                              "tnt__size": 5},
            "tags": [{"tag": {"id": "TAG-1"}}],
        }));
        let sur = user(json!({
            "email": "a@x.com", "display_name": "Ann Lee",
            "phone_numbers": ["+14155550101"],
            "custom_fields": {"tnt__plan": "free", "tnt__size": 5, "tnt__app_user_id": null},
        }));
        let p = plan(&sec, &sur);
        assert_eq!(
            p.items,
            vec![
                phone("+14155550100"),
                cf("tnt__app_user_id", json!("u1")),
                CarryItem::Tag {
                    id: "TAG-1".into(),
                    value: None
                }
            ],
            "same number in another spelling is not carried; an empty secondary value neither"
        );
        assert_eq!(
            p.conflicts,
            vec![Conflict {
                key: "tnt__plan".into(),
                survivor: json!("free"),
                secondary: json!("pro")
            }]
        );
        assert_eq!(p.survivor_phones, vec!["+14155550101"]);
        assert_eq!(p.not_carried.len(), 1, "full_name: {:?}", p.not_carried);
    }

    #[test]
    fn tags_are_a_union_with_their_values_and_written_whole() {
        let tag = |id: &str, v: Option<&str>| match v {
            Some(v) => json!({"tag": {"id": id, "name": "n"}, "value": v}),
            None => json!({"tag": {"id": id}}),
        };
        let sec =
            user(json!({"tags": [tag("T1", Some("gold")), tag("T2", None), tag("T3", Some("a"))]}));
        let sur = user(json!({"tags": [tag("T2", None), tag("T3", Some("b"))]}));
        let p = plan(&sec, &sur);
        let t1 = CarryItem::Tag {
            id: "T1".into(),
            value: Some("gold".into()),
        };
        assert_eq!(p.items, vec![t1.clone()], "T2 is there already");
        assert_eq!(
            p.conflicts[0].key, "tags.T3",
            "another value: the survivor's stays"
        );
        let r = CarryRecord::new(p);
        let b = body(std::slice::from_ref(&t1), &sur).fields;
        assert_eq!(
            b["tags"],
            json!([{"id": "T2"}, {"id": "T3", "value": "b"}, {"id": "T1", "value": "gold"}])
        );
        let after =
            user(json!({"tags": [tag("T2", None), tag("T3", Some("b")), tag("T1", Some("gold"))]}));
        assert!(held(&after, &t1));
        assert_eq!(
            suspects(Some("tags"), std::slice::from_ref(&t1)),
            vec![t1.clone()]
        );
        let mut r = r;
        r.carried.push(t1);
        let (f, changed) = undo(&r, &after, &[]);
        assert!(changed.is_empty());
        assert_eq!(f["tags"], json!([{"id": "T2"}, {"id": "T3", "value": "b"}]));
    }

    #[test]
    fn display_name_only_over_an_empty_or_email_name() {
        let sec = user(json!({"email": "a@x.com", "display_name": "Ann Lee"}));
        for (name, carried) in [
            (json!("A@X.com"), true),
            (json!(""), true),
            (Value::Null, true),
            (json!("Ann L."), false),
        ] {
            let sur = user(json!({"email": "a@x.com", "display_name": name}));
            let got = plan(&sec, &sur).items.contains(&CarryItem::DisplayName {
                name: "Ann Lee".into(),
            });
            assert_eq!(got, carried, "{name}");
        }
        // A secondary whose own name is its email has nothing better to give.
        let sec = user(json!({"email": "a@x.com", "display_name": "a@x.com"}));
        let sur = user(json!({"email": "a@x.com", "display_name": "a@x.com"}));
        assert!(plan(&sec, &sur).items.is_empty());
    }

    #[test]
    fn the_body_writes_the_whole_phone_list_and_the_schema_spec() {
        let sec = user(json!({"phone_numbers": ["+15550001", "+15550002"],
                              "custom_fields": {"tnt__a": 1}}));
        let sur = user(json!({"phone_numbers": ["+15550009"]}));
        let r = CarryRecord::new(plan(&sec, &sur));
        let b = body(&r.next_batch(), &sur).fields;
        assert_eq!(
            b["phone_numbers"],
            json!(["+15550009", "+15550001", "+15550002"])
        );
        assert_eq!(b["custom_fields"], json!({"tnt__a": 1}));
        assert_eq!(b["custom_schema_spec"]["tenant_fragment"], true);
        // A later write of one phone keeps those the survivor holds now.
        let now = user(json!({"phone_numbers": ["+15550009", "+15550001"]}));
        let b = body(&[phone("+15550002")], &now).fields;
        assert_eq!(
            b["phone_numbers"],
            json!(["+15550009", "+15550001", "+15550002"])
        );
        assert!(!b.contains_key("custom_fields"));
    }

    /// The write starts from the survivor's live values, never the backup's: a number or tag
    /// it gained since is kept; a field or name it gained its own value for is not written.
    #[test]
    fn the_write_starts_from_the_live_survivor_and_keeps_what_it_gained() {
        let sec = user(json!({"email": "a@x.com", "display_name": "Ann Lee",
                              "phone_numbers": ["+15550001"],
                              "custom_fields": {"tnt__a": 1, "tnt__b": 2}}));
        let sur = user(json!({"email": "a@x.com", "display_name": "a@x.com",
                              "phone_numbers": ["+15550009"]}));
        let mut r = CarryRecord::new(plan(&sec, &sur));
        let now = user(json!({"email": "a@x.com", "display_name": "Ann L.",
                              "phone_numbers": ["+15550009", "+1 555 0007"],
                              "custom_fields": {"tnt__b": 3},
                              "tags": [{"tag": {"id": "T9"}}]}));
        let w = body(&r.next_batch(), &now);
        assert_eq!(
            w.fields["phone_numbers"],
            json!(["+15550009", "+1 555 0007", "+15550001"]),
            "the number gained since stays, as DevRev holds it"
        );
        assert_eq!(w.fields["custom_fields"], json!({"tnt__a": 1}));
        assert!(!w.fields.contains_key("display_name") && !w.fields.contains_key("tags"));
        assert_eq!(w.superseded.len(), 2, "{:?}", w.superseded);
        r.superseded(&w.superseded);
        assert!(
            r.plan
                .conflicts
                .iter()
                .any(|c| c.key == "tnt__b" && c.survivor == json!(3) && c.secondary == json!(2))
        );
        assert!(r.plan.conflicts.iter().any(|c| c.key == "display_name"));
        assert_eq!(r.next_batch().len(), 2, "the phone and tnt__a");
    }

    #[test]
    fn phone_numbers_compare_in_e164_form() {
        for same in [
            "+1 415-555 0100",
            "+1 (415) 555.0100",
            "0014155550100",
            " +14155550100",
        ] {
            assert_eq!(phone_key(same), "+14155550100", "{same}");
        }
        assert_eq!(
            phone_key("415-555-0100"),
            "4155550100",
            "no country code: digits"
        );
        assert_ne!(phone_key("4155550100"), phone_key("+4155550100"));
    }

    #[test]
    fn a_named_refusal_costs_one_item_an_unnamed_one_splits_the_write() {
        let items = vec![phone("+1"), cf("tnt__a", json!(1)), cf("tnt__b", json!(2))];
        let plan = CarryPlan {
            items: items.clone(),
            ..Default::default()
        };
        // Named: that field is refused, the rest go again together.
        let mut r = CarryRecord::new(plan.clone());
        r.refused_write(&items, Some("custom_fields.tnt__b"), "no schema");
        assert_eq!(r.refused.len(), 1);
        assert_eq!(r.refused[0].item, cf("tnt__b", json!(2)));
        assert_eq!(r.next_batch(), vec![phone("+1"), cf("tnt__a", json!(1))]);
        let answer = user(json!({"phone_numbers": ["+1"], "custom_fields": {"tnt__a": 1}}));
        r.settle(&r.next_batch(), &answer, "missing");
        assert!(r.finished());
        assert_eq!(r.carried.len(), 2);

        // Unnamed: every item is tried alone; only the bad one is lost.
        let mut r = CarryRecord::new(plan);
        r.refused_write(&items, None, "bad request");
        assert!(r.refused.is_empty());
        assert_eq!(r.next_batch(), vec![phone("+1")]);
        r.settle(&[phone("+1")], &user(json!({"phone_numbers": ["+1"]})), "m");
        assert_eq!(r.next_batch(), vec![cf("tnt__a", json!(1))]);
        r.refused_write(&[cf("tnt__a", json!(1))], None, "bad request");
        assert_eq!(r.next_batch(), vec![cf("tnt__b", json!(2))]);
        r.settle(
            &[cf("tnt__b", json!(2))],
            &user(json!({"custom_fields": {"tnt__b": 2}})),
            "m",
        );
        assert!(r.finished());
        assert_eq!(r.carried, vec![phone("+1"), cf("tnt__b", json!(2))]);
        assert_eq!(r.refused[0].item, cf("tnt__a", json!(1)));

        // An answer without a carried value is a refusal too, in the caller's words.
        let mut r = CarryRecord::new(CarryPlan {
            items: vec![phone("+2")],
            ..Default::default()
        });
        r.settle(
            &[phone("+2")],
            &user(json!({})),
            "DevRev answered without it",
        );
        assert_eq!(r.refused[0].reason, "DevRev answered without it");
    }

    #[test]
    fn suspects_read_the_field_name_devrev_gives() {
        let items = vec![phone("+1"), phone("+2"), cf("tnt__a", json!(1))];
        assert_eq!(suspects(Some("phone_numbers"), &items).len(), 2);
        assert_eq!(
            suspects(Some("tnt__a"), &items),
            vec![cf("tnt__a", json!(1))]
        );
        assert_eq!(
            suspects(Some("custom_fields.tnt__a"), &items),
            vec![cf("tnt__a", json!(1))]
        );
        assert!(suspects(Some("external_ref"), &items).is_empty());
        assert!(suspects(None, &items).is_empty());
    }

    #[test]
    fn undo_puts_back_only_what_still_holds_the_carried_value() {
        let mut r = CarryRecord::new(CarryPlan {
            survivor_phones: vec!["+10".into()],
            survivor_display_name: Some("a@x.com".into()),
            ..Default::default()
        });
        r.carried = vec![
            phone("+11"),
            cf("tnt__a", json!("x")),
            cf("tnt__b", json!("y")),
            CarryItem::DisplayName { name: "Ann".into() },
        ];
        let live = user(
            json!({"display_name": "Ann", "phone_numbers": ["+10", "+11", "+12"],
                               "custom_fields": {"tnt__a": "x", "tnt__b": "changed"}}),
        );
        let (f, changed) = undo(&r, &live, &[]);
        assert_eq!(
            f["phone_numbers"],
            json!(["+10", "+12"]),
            "a number added since stays"
        );
        assert_eq!(f["custom_fields"], json!({"tnt__a": null}));
        assert_eq!(f["display_name"], "a@x.com");
        assert_eq!(changed.len(), 1);
        assert!(changed[0].contains("tnt__b"), "{changed:?}");
    }

    /// A write whose answer never came may have applied: what the survivor holds of it is
    /// undone, what it does not hold was never written (and is no "changed since").
    #[test]
    fn undo_takes_back_a_write_in_doubt_where_it_applied() {
        let mut r = CarryRecord::new(CarryPlan {
            survivor_phones: vec!["+10".into()],
            ..Default::default()
        });
        r.write = Some(CarryWrite {
            requested_at: Utc::now(),
            items: vec![phone("+11"), cf("tnt__a", json!("x"))],
            with_ref: Some("user_1".into()),
        });
        let applied = user(json!({"phone_numbers": ["+10", "+11"],
                                  "custom_fields": {"tnt__a": "x"}}));
        let (f, changed) = undo(&r, &applied, &[]);
        assert_eq!(f["phone_numbers"], json!(["+10"]));
        assert_eq!(f["custom_fields"], json!({"tnt__a": null}));
        assert!(changed.is_empty(), "{changed:?}");
        let not_applied = user(json!({"phone_numbers": ["+10"]}));
        let (f, changed) = undo(&r, &not_applied, &[]);
        assert!(f.is_empty(), "{f:?}");
        assert!(changed.is_empty(), "{changed:?}");
    }

    /// Undoing one member of a group keeps what another member, still merged, also held.
    #[test]
    fn undo_keeps_what_another_member_still_merged_also_held() {
        let mut r = CarryRecord::new(CarryPlan::default());
        r.carried = vec![phone("+11"), phone("+12"), cf("tnt__a", json!("x"))];
        let live = user(json!({"phone_numbers": ["+10", "+11", "+12"],
                               "custom_fields": {"tnt__a": "x"}}));
        let other = OtherMerge {
            label: "REVU-B".into(),
            secondary: user(json!({"phone_numbers": ["+1 2"], "custom_fields": {"tnt__a": "x"}})),
        };
        let (f, kept) = undo(&r, &live, &[other]);
        assert_eq!(f["phone_numbers"], json!(["+10", "+12"]));
        assert!(!f.contains_key("custom_fields"), "{f:?}");
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.iter().all(|k| k.contains("REVU-B")), "{kept:?}");
    }

    #[test]
    fn the_summary_line() {
        let c = CarryCounts {
            phone_numbers: 31,
            custom_fields: 12,
            conflicts: 2,
            ..Default::default()
        };
        assert_eq!(
            c.line(),
            "carried: 31 phone numbers, 12 custom fields; 2 conflicts kept as the survivor's"
        );
    }

    #[test]
    fn old_records_without_the_new_fields_still_read() {
        let r: CarryRecord = serde_json::from_value(json!({"plan": {"items": []}})).unwrap();
        assert!(r.finished());
        let i: CarryItem =
            serde_json::from_value(json!({"field": "phone_number", "number": "+1"})).unwrap();
        assert_eq!(i, phone("+1"));
    }
}
