//! The fake's API logic: plain functions from (state, request JSON) to (status, JSON).
//!
//! Request validation follows the official OpenAPI request schemas (public ∪ beta): a field the
//! spec does not list is `400 invalid_field`, a wrong JSON type is `400 unexpected_json_type`, a
//! missing required field is `400 missing_required_field`, a malformed id is `400 invalid_id`
//! and an unknown object is `404 not_found`. The HTTP layer (`http.rs`) adds auth, rate limits,
//! faults and the request log around `dispatch`.

use std::cmp::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::fake::{ArtifactRec, FakeOptions, MergeRecord, MoveMode, SecondaryAfter, State};
use crate::seed::{PARTITION, fmt_ts, summary_ids, user_summary};

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }
}

/// A DevRev error body: `{"type", "message", ...extra}`.
pub(crate) fn error(status: u16, kind: &str, message: &str, extra: Value) -> Reply {
    let mut body = json!({"type": kind, "message": message});
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    Reply { status, body }
}

fn invalid_field(name: &str) -> Reply {
    error(
        400,
        "invalid_field",
        &format!("Invalid field: {name}"),
        json!({"field_name": name}),
    )
}

fn missing(name: &str) -> Reply {
    error(
        400,
        "missing_required_field",
        &format!("Missing required field: {name}"),
        json!({"field_name": name}),
    )
}

fn invalid_id(field: &str) -> Reply {
    error(
        400,
        "invalid_id",
        &format!("Invalid id in field {field}"),
        json!({"field_name": field}),
    )
}

fn not_found(what: &str) -> Reply {
    error(404, "not_found", &format!("{what} not found"), json!({}))
}

fn bad_request(message: &str) -> Reply {
    error(400, "bad_request", message, json!({}))
}

/// The JSON kind a request field must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum K {
    Str,
    Int,
    Bool,
    StrList,
    /// Anything (objects the fake does not interpret deeply).
    Any,
    Obj(&'static [(&'static str, K)]),
}

/// One endpoint: its name, whether GET is allowed, and its request fields.
pub(crate) struct Endpoint {
    pub name: &'static str,
    pub get: bool,
    pub fields: &'static [(&'static str, K)],
    pub required: &'static [&'static str],
}

const DATE_TIME_FILTER: K = K::Obj(&[("after", K::Str), ("before", K::Str)]);
const SET_IDS: K = K::Obj(&[("set", K::StrList)]);
const PAGING: [(&str, K); 4] = [
    ("cursor", K::Str),
    ("limit", K::Int),
    ("mode", K::Str),
    ("sort_by", K::StrList),
];

/// Ticket-only fields of `works.update` (the spec's `works-update-request-ticket`): they need
/// `"type": "ticket"` in the request.
const TICKET_UPDATE_FIELDS: &[&str] = &[
    "account",
    "channels",
    "channels_v2",
    "group",
    "is_archived",
    "is_frozen",
    "is_spam",
    "needs_response",
    "rev_org",
    "sentiment",
    "sentiment_modified_date",
    "sentiment_summary",
    "severity",
    "source_channel_v2",
];

macro_rules! fields {
    ($($name:literal : $k:expr),* $(,)?) => { &[$(($name, $k)),*] };
}

pub(crate) static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        name: "auth-tokens.info",
        get: true,
        fields: &[],
        required: &[],
    },
    Endpoint {
        name: "dev-users.self",
        get: true,
        fields: &[],
        required: &[],
    },
    Endpoint {
        name: "rev-users.get",
        get: true,
        fields: fields!("id": K::Str),
        required: &["id"],
    },
    Endpoint {
        name: "rev-users.list",
        get: true,
        fields: fields!(
            "cursor": PAGING[0].1, "limit": PAGING[1].1, "mode": PAGING[2].1, "sort_by": PAGING[3].1,
            "associations": K::StrList, "created_by": K::StrList, "created_date": DATE_TIME_FILTER,
            "email": K::StrList, "external_ref": K::StrList, "external_refs": K::StrList,
            "is_verified": K::Bool, "modified_date": DATE_TIME_FILTER, "phone_numbers": K::StrList,
            "rev_org": K::StrList, "custom_fields": K::Any, "tags": K::Any,
        ),
        required: &[],
    },
    Endpoint {
        name: "rev-users.update",
        get: false,
        fields: fields!(
            "id": K::Str, "display_name": K::Str, "description": K::Str, "email": K::Str,
            "external_ref": K::Str, "phone_numbers": K::StrList, "display_picture": K::Str,
            "custom_fields": K::Any, "custom_schema_fragments": SET_IDS, "custom_schema_spec": K::Any,
            "external_refs": K::Any, "tags": K::Any, "artifacts": SET_IDS,
        ),
        required: &["id"],
    },
    Endpoint {
        name: "rev-users.create",
        get: false,
        fields: fields!(
            "account": K::Str, "artifacts": K::StrList, "custom_fields": K::Any,
            "custom_schema_fragments": K::StrList, "custom_schema_spec": K::Any,
            "description": K::Str, "display_name": K::Str, "display_picture": K::Str,
            "email": K::Str, "external_ref": K::Str, "external_refs": K::Any,
            "phone_numbers": K::StrList, "rev_org": K::Str, "tags": K::Any,
        ),
        required: &[],
    },
    Endpoint {
        name: "rev-users.merge",
        get: false,
        fields: fields!("primary_user": K::Str, "secondary_user": K::Str),
        required: &["primary_user", "secondary_user"],
    },
    Endpoint {
        name: "works.list",
        get: true,
        fields: fields!(
            "cursor": PAGING[0].1, "limit": PAGING[1].1, "mode": PAGING[2].1, "sort_by": PAGING[3].1,
            "actual_close_date": K::Any, "applies_to_part": K::StrList, "created_by": K::StrList,
            "created_date": K::Any, "custom_fields": K::Any, "issue": K::Any, "modified_by": K::StrList,
            "modified_date": K::Any, "opportunity": K::Any, "owned_by": K::StrList,
            "reported_by": K::StrList, "stage": K::Obj(&[("name", K::StrList)]), "staged_info": K::Any,
            "state": K::StrList, "sync_metadata": K::Any, "tags": K::StrList,
            "target_close_date": K::Any, "type": K::StrList, "external_ref": K::StrList,
            "ticket": K::Obj(&[
                ("brand", K::StrList), ("channels", K::StrList), ("channels_v2", K::StrList),
                ("group", K::StrList), ("is_frozen", K::Bool), ("is_spam", K::Bool),
                ("needs_response", K::Bool), ("rev_org", K::StrList), ("severity", K::StrList),
                ("sla_summary", K::Any), ("source_channel", K::StrList),
                ("source_channel_v2", K::StrList), ("subtype", K::StrList), ("surveys", K::Any),
            ]),
        ),
        required: &[],
    },
    Endpoint {
        name: "works.get",
        get: true,
        fields: fields!("id": K::Str),
        required: &["id"],
    },
    Endpoint {
        name: "works.update",
        get: false,
        fields: fields!(
            "id": K::Str, "type": K::Str, "title": K::Str, "body": K::Str,
            "reported_by": SET_IDS, "owned_by": SET_IDS,
            "artifacts": K::Obj(&[("add", K::StrList), ("remove", K::StrList), ("set", K::StrList)]),
            "tags": K::Obj(&[("add", K::Any), ("remove", K::Any), ("set", K::Any)]),
            "stage": K::Obj(&[("name", K::Str), ("stage", K::Str)]),
            "stage_validation_options": K::Any, "staged_info": K::Any, "applies_to_part": K::Str,
            "target_close_date": K::Str, "custom_fields": K::Any, "custom_schema_fragments": K::Any,
            "custom_schema_spec": K::Any,
            "account": K::Str, "channels": K::Any, "channels_v2": K::Any, "group": K::Str,
            "is_archived": K::Bool, "is_frozen": K::Bool, "is_spam": K::Bool,
            "needs_response": K::Bool, "rev_org": K::Str, "sentiment": K::Any,
            "sentiment_modified_date": K::Str, "sentiment_summary": K::Str, "severity": K::Str,
            "source_channel_v2": K::Str,
        ),
        required: &["id"],
    },
    Endpoint {
        name: "timeline-entries.list",
        get: true,
        fields: fields!(
            "object": K::Str, "cursor": K::Str, "limit": K::Int, "mode": K::Str,
            "visibility": K::StrList, "collections": K::StrList, "labels": K::StrList,
        ),
        required: &["object"],
    },
    Endpoint {
        name: "conversations.list",
        get: true,
        fields: fields!(
            "cursor": K::Str, "limit": K::Int, "mode": K::Str,
            "actual_close_date": K::Any, "applies_to_parts": K::StrList, "brand": K::StrList,
            "channels": K::StrList, "custom_fields": K::Any, "group": K::StrList,
            "is_creator_verified": K::Bool, "is_frozen": K::Bool, "is_spam": K::Bool,
            "members": K::StrList, "modified_date": DATE_TIME_FILTER, "owned_by": K::StrList,
            "rev_org": K::StrList, "rev_orgs": K::StrList, "sla_summary": K::Any,
            "source_channel": K::StrList, "source_channel_v2": K::StrList,
            "source_channels": K::StrList, "stage": K::Obj(&[("name", K::StrList)]),
            "state": K::StrList, "subtype": K::StrList, "tags": K::StrList,
            "tags_v2": K::Any,
        ),
        required: &[],
    },
    Endpoint {
        name: "conversations.update",
        get: false,
        fields: fields!(
            "id": K::Str, "applies_to_parts": SET_IDS, "brand": K::Str, "channels": K::Any,
            "custom_fields": K::Any, "custom_schema_spec": K::Any, "description": K::Str,
            "group": K::Str, "is_frozen": K::Bool, "is_spam": K::Bool, "members": SET_IDS,
            "metadata": K::Any, "owned_by": SET_IDS, "source_channel_v2": K::Str,
            "stage": K::Obj(&[("name", K::Str), ("stage", K::Str)]), "status": K::Any, "tags": K::Any,
            "title": K::Str,
        ),
        required: &["id"],
    },
    Endpoint {
        name: "artifacts.get",
        get: true,
        fields: fields!("id": K::Str, "version": K::Str),
        required: &["id"],
    },
    Endpoint {
        name: "artifacts.locate",
        get: true,
        fields: fields!("id": K::Str, "version": K::Str),
        required: &["id"],
    },
];

pub(crate) fn endpoint(name: &str) -> Option<&'static Endpoint> {
    ENDPOINTS.iter().find(|e| e.name == name)
}

fn jtype(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong_type(field: &str, expected: &str, actual: &str) -> Reply {
    error(
        400,
        "unexpected_json_type",
        &format!("Field {field} must be {expected}, not {actual}"),
        json!({"field_name": field, "expected": expected, "actual": actual}),
    )
}

fn check_fields(fields: &[(&str, K)], map: &Map<String, Value>, prefix: &str) -> Result<(), Reply> {
    for (k, v) in map {
        let name = format!("{prefix}{k}");
        let Some((_, kind)) = fields.iter().find(|(f, _)| f == k) else {
            return Err(invalid_field(&name));
        };
        if v.is_null() {
            continue;
        }
        match kind {
            K::Str if !v.is_string() => return Err(wrong_type(&name, "string", jtype(v))),
            K::Int if !(v.is_i64() || v.is_u64()) => {
                return Err(wrong_type(&name, "integer", jtype(v)));
            }
            K::Bool if !v.is_boolean() => return Err(wrong_type(&name, "boolean", jtype(v))),
            K::StrList => match v.as_array() {
                Some(a) => {
                    if let Some(x) = a.iter().find(|x| !x.is_string()) {
                        return Err(wrong_type(&name, "string", jtype(x)));
                    }
                }
                None => return Err(wrong_type(&name, "array", jtype(v))),
            },
            K::Obj(sub) => match v.as_object() {
                Some(m) => check_fields(sub, m, &format!("{name}."))?,
                None => return Err(wrong_type(&name, "object", jtype(v))),
            },
            _ => {}
        }
    }
    Ok(())
}

/// Checks a request body against the endpoint's fields.
pub(crate) fn validate(ep: &Endpoint, body: &Value) -> Result<(), Reply> {
    let Some(map) = body.as_object() else {
        return Err(error(
            400,
            "parse_error",
            "request body must be a JSON object",
            json!({}),
        ));
    };
    check_fields(ep.fields, map, "")?;
    for r in ep.required {
        if map.get(*r).is_none_or(Value::is_null) {
            return Err(missing(r));
        }
    }
    if let Some(mode) = map.get("mode").and_then(Value::as_str)
        && mode != "after"
        && mode != "before"
    {
        return Err(error(
            400,
            "invalid_enum_value",
            "Invalid value for mode",
            json!({"field_name": "mode", "value": mode, "allowed_values": ["after", "before"]}),
        ));
    }
    Ok(())
}

/// Turns a GET query string into the equivalent POST body: dotted names nest
/// (`created_date.after`), arrays are comma-joined (`explode: false`) or repeated.
pub(crate) fn body_from_query(ep: &Endpoint, query: &str) -> Result<Value, Reply> {
    let mut root = Map::new();
    for (key, val) in url::form_urlencoded::parse(query.as_bytes()) {
        let parts: Vec<&str> = key.split('.').collect();
        let mut fields: Option<&[(&str, K)]> = Some(ep.fields);
        let mut kind = K::Any;
        for p in &parts {
            let Some(fs) = fields else {
                // Inside an `Any` object: keep nesting as plain strings.
                kind = K::Any;
                continue;
            };
            let Some((_, k)) = fs.iter().find(|(f, _)| f == p) else {
                return Err(invalid_field(&key));
            };
            kind = *k;
            fields = match k {
                K::Obj(sub) => Some(sub),
                K::Any => None,
                _ => Some(&[]),
            };
        }
        let value = match kind {
            K::Str | K::Any => json!(val),
            K::Int => match val.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => return Err(wrong_type(&key, "integer", "string")),
            },
            K::Bool => match val.as_ref() {
                "true" => json!(true),
                "false" => json!(false),
                _ => return Err(wrong_type(&key, "boolean", "string")),
            },
            K::StrList => json!(
                val.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            ),
            K::Obj(_) => return Err(wrong_type(&key, "object", "string")),
        };
        let mut cur = &mut root;
        for p in &parts[..parts.len() - 1] {
            let entry = cur.entry(p.to_string()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            let Some(next) = entry.as_object_mut() else {
                return Err(invalid_field(&key));
            };
            cur = next;
        }
        let last = parts[parts.len() - 1].to_string();
        match (cur.get_mut(&last), value) {
            (Some(Value::Array(existing)), Value::Array(more)) => existing.extend(more),
            (_, v) => {
                cur.insert(last, v);
            }
        }
    }
    Ok(Value::Object(root))
}

/// The shapes an id can take.
#[derive(Debug, PartialEq)]
pub(crate) enum IdForm {
    /// A DON: its first object segment's type and local id.
    Don { kind: String, local: String },
    /// A display id like `REVU-aB3dE5f`, `TKT-12`, `artifact-7`.
    Display { prefix: String, rest: String },
}

fn id_chars(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn parse_id(s: &str) -> Option<IdForm> {
    if let Some(rest) = s.strip_prefix("don:") {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() < 4 || !matches!(parts[0], "identity" | "core") || !id_chars(parts[1]) {
            return None;
        }
        let org = parts[2].strip_prefix("devo/")?;
        if !id_chars(org) {
            return None;
        }
        let mut first = None;
        for seg in &parts[3..] {
            let (kind, local) = seg.split_once('/')?;
            if kind.is_empty()
                || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                || !id_chars(local)
            {
                return None;
            }
            first.get_or_insert((kind.to_string(), local.to_string()));
        }
        let (kind, local) = first?;
        return Some(IdForm::Don { kind, local });
    }
    let (prefix, rest) = s.split_once('-')?;
    if prefix.is_empty()
        || !prefix.chars().all(|c| c.is_ascii_alphabetic())
        || rest.is_empty()
        || !rest.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(IdForm::Display {
        prefix: prefix.to_string(),
        rest: rest.to_string(),
    })
}

/// What kind of object an id field expects: DON type and display prefix.
#[derive(Debug, Clone, Copy)]
enum Want {
    RevUser,
    Work,
    Conversation,
    Artifact,
    DevUser,
}

impl Want {
    fn don_kind(self) -> &'static [&'static str] {
        match self {
            Want::RevUser => &["revu"],
            Want::Work => &["ticket", "issue"],
            Want::Conversation => &["conversation"],
            Want::Artifact => &["artifact"],
            Want::DevUser => &["devu"],
        }
    }
    fn display(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Want::RevUser => &[("REVU", "revu")],
            Want::Work => &[("TKT", "ticket"), ("ISS", "issue")],
            Want::Conversation => &[("CONV", "conversation")],
            Want::Artifact => &[("artifact", "artifact"), ("ARTIFACT", "artifact")],
            Want::DevUser => &[("DEVU", "devu")],
        }
    }
    fn service(self) -> &'static str {
        match self {
            Want::RevUser | Want::DevUser => "identity",
            _ => "core",
        }
    }
}

/// Turns an id (DON or display id) into the DON key it would have in this org, or the error the
/// real API gives for a malformed or wrong-type id.
fn to_don(state: &State, field: &str, id: &str, want: Want) -> Result<String, Reply> {
    match parse_id(id) {
        None => Err(invalid_id(field)),
        Some(IdForm::Don { kind, .. }) => {
            if want.don_kind().contains(&kind.as_str()) {
                Ok(id.to_string())
            } else {
                Err(unexpected_id_type(field))
            }
        }
        Some(IdForm::Display { prefix, rest }) => {
            match want.display().iter().find(|(p, _)| *p == prefix) {
                Some((_, kind)) => Ok(format!(
                    "don:{}:{PARTITION}:devo/{}:{kind}/{rest}",
                    want.service(),
                    state.org
                )),
                None => Err(unexpected_id_type(field)),
            }
        }
    }
}

fn unexpected_id_type(field: &str) -> Reply {
    error(
        400,
        "unexpected_id_type",
        &format!("Unexpected id type in field {field}"),
        json!({"field_name": field}),
    )
}

/// Everything a handler needs.
pub(crate) struct Ctx<'a> {
    pub state: &'a mut State,
    pub opts: &'a FakeOptions,
    pub now: Instant,
    pub base_url: &'a str,
    pub seq: usize,
    /// The request came with `X-Devrev-Scope: beta`.
    pub beta: bool,
}

impl Ctx<'_> {
    /// "Now" as DevRev would print it, with varying fraction precision.
    fn stamp(&self) -> String {
        fmt_ts(Utc::now(), self.seq as u64)
    }
}

fn s<'a>(body: &'a Value, k: &str) -> Option<&'a str> {
    body.get(k).and_then(Value::as_str)
}

fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

/// Runs one validated request.
pub(crate) fn dispatch(ctx: &mut Ctx<'_>, ep: &Endpoint, body: &Value) -> Reply {
    if let Err(r) = validate(ep, body) {
        return r;
    }
    let r = dispatch_validated(ctx, ep, body).map(|mut reply| {
        if ctx.opts.quirks.public_shape && !ctx.beta && ep.name.starts_with("rev-users.") {
            public_shape(&mut reply.body);
        }
        if let Some(size) = ctx.opts.quirks.file_size {
            set_file_sizes(&mut reply.body, size);
        }
        reply
    });
    r.unwrap_or_else(|e| e)
}

/// Every `file.size` in an answer set to `size` (`Quirks::file_size`).
fn set_file_sizes(v: &mut Value, size: i64) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(f)) = o.get_mut("file")
                && f.contains_key("size")
            {
                f.insert("size".into(), json!(size));
            }
            o.values_mut().for_each(|x| set_file_sizes(x, size));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| set_file_sizes(x, size)),
        _ => {}
    }
}

/// A `rev-users.*` answer as the public schema has it: the beta-only fields left out of every
/// contact in it (`Quirks::public_shape`).
fn public_shape(body: &mut Value) {
    let strip = |u: &mut Value| {
        if let Some(o) = u.as_object_mut() {
            for k in crate::fake::BETA_REV_USER_FIELDS {
                o.remove(k);
            }
        }
    };
    if let Some(u) = body.get_mut("rev_user") {
        strip(u);
    }
    if let Some(list) = body.get_mut("rev_users").and_then(Value::as_array_mut) {
        list.iter_mut().for_each(strip);
    }
}

fn dispatch_validated(ctx: &mut Ctx<'_>, ep: &Endpoint, body: &Value) -> Result<Reply, Reply> {
    match ep.name {
        "auth-tokens.info" => Ok(auth_tokens_info(ctx)),
        "dev-users.self" => Ok(Reply::ok(
            json!({"dev_user": ctx.state.dev_users.first().cloned().unwrap_or(json!({}))}),
        )),
        "rev-users.get" => rev_users_get(ctx, body),
        "rev-users.list" => rev_users_list(ctx, body),
        "rev-users.update" => rev_users_update(ctx, body),
        "rev-users.create" => rev_users_create(ctx, body),
        "rev-users.merge" => rev_users_merge(ctx, body),
        "works.list" => works_list(ctx, body),
        "works.get" => works_get(ctx, body),
        "works.update" => works_update(ctx, body),
        "timeline-entries.list" => timeline_list(ctx, body),
        "conversations.list" => conversations_list(ctx, body),
        "conversations.update" => conversations_update(ctx, body),
        "artifacts.get" => artifacts_get(ctx, body),
        "artifacts.locate" => artifacts_locate(ctx, body),
        _ => Err(Reply {
            status: 404,
            body: json!({"message": "route not found"}),
        }),
    }
}

fn auth_tokens_info(ctx: &Ctx<'_>) -> Reply {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let user = ctx.state.dev_users.first().cloned().unwrap_or(json!({}));
    Reply::ok(json!({
        "organization": {
            "id": format!("don:identity:{PARTITION}:devo/{}", ctx.state.org),
            "display_id": format!("DEV-{}", ctx.state.org),
            "slug": "fake-org",
        },
        "user": {
            "type": "dev_user", "id": user["id"], "display_id": user["display_id"],
            "display_name": user["display_name"], "email": user["email"], "full_name": user["full_name"],
        },
        "token": {
            "subject": user["id"],
            "issuer": "https://auth-token.devrev.ai/",
            "issued_at": now.saturating_sub(86_400),
            "expiry": now + ctx.opts.token_expires_in.as_secs(),
        },
    }))
}

// ---------- pagination ----------

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn cmp_field(a: &Value, b: &Value, field: &str) -> Ordering {
    let (x, y) = (&a[field], &b[field]);
    if field.ends_with("_date") {
        let px = x.as_str().and_then(parse_ts);
        let py = y.as_str().and_then(parse_ts);
        return px.cmp(&py);
    }
    match (x, y) {
        (Value::Number(p), Value::Number(q)) => p
            .as_f64()
            .partial_cmp(&q.as_f64())
            .unwrap_or(Ordering::Equal),
        _ => x.to_string().cmp(&y.to_string()),
    }
}

/// Sorts by `sort_by` (`field:asc|desc`, several allowed), then by creation and id.
fn sort_items(items: &mut [Value], sort_by: Option<Vec<String>>) -> Result<(), Reply> {
    let mut keys = Vec::new();
    for spec in sort_by.unwrap_or_default() {
        let (f, dir) = spec.split_once(':').unwrap_or((spec.as_str(), "asc"));
        let desc = match dir {
            "asc" => false,
            "desc" => true,
            _ => return Err(bad_request(&format!("invalid sort_by value: {spec}"))),
        };
        keys.push((f.to_string(), desc));
    }
    items.sort_by(|a, b| {
        for (f, desc) in &keys {
            let o = cmp_field(a, b, f);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        cmp_field(a, b, "created_date").then_with(|| a["id"].to_string().cmp(&b["id"].to_string()))
    });
    Ok(())
}

fn encode_cursor(offset: usize) -> String {
    let raw = format!("fake-cursor:{offset}");
    base16ct::lower::encode_string(raw.as_bytes())
}

fn decode_cursor(c: &str) -> Option<usize> {
    let bytes = base16ct::lower::decode_vec(c).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("fake-cursor:")?.parse().ok()
}

/// The one cursor a `Hostile::repeat_cursor` fake hands out, forever.
const REPEATED_CURSOR: &str = "fake-cursor-repeats";

/// One page of `items` as `{key: [...], next_cursor?, prev_cursor?}`.
fn paginate(ctx: &Ctx<'_>, body: &Value, key: &str, items: Vec<Value>) -> Result<Reply, Reply> {
    let limit = match body.get("limit").and_then(Value::as_i64) {
        None => 50,
        Some(n) if n < 1 => {
            return Err(error(
                400,
                "value_not_permitted",
                "limit must be positive",
                json!({"field_name": "limit", "reason": "must be at least 1"}),
            ));
        }
        Some(n) => (n as usize).min(ctx.opts.max_page.max(1)),
    };
    let start = match s(body, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(REPEATED_CURSOR) if ctx.opts.hostile.repeat_cursor => 0,
        Some(c) => decode_cursor(c)
            .ok_or_else(|| error(400, "bad_request", "invalid cursor", json!({})))?,
    };
    let before = s(body, "mode") == Some("before");
    let n = items.len();
    let (lo, hi) = if before {
        (start.saturating_sub(limit), start.min(n))
    } else {
        (start.min(n), (start + limit).min(n))
    };
    let page: Vec<Value> = items[lo..hi].to_vec();
    let mut out = Map::new();
    if !ctx.opts.hostile.omit_list_key {
        out.insert(key.into(), Value::Array(page));
    }
    if ctx.opts.hostile.repeat_cursor {
        out.insert("next_cursor".into(), json!(REPEATED_CURSOR));
    } else if ctx.opts.hostile.endless_cursor && !before {
        out.insert("next_cursor".into(), json!(encode_cursor(start + limit)));
    } else if hi < n {
        out.insert("next_cursor".into(), json!(encode_cursor(hi)));
    }
    if lo > 0 {
        out.insert("prev_cursor".into(), json!(encode_cursor(lo)));
    }
    Ok(Reply::ok(Value::Object(out)))
}

fn in_range(v: &Value, filter: Option<&Value>) -> bool {
    let Some(f) = filter else { return true };
    let t = v.as_str().and_then(parse_ts);
    let after = f.get("after").and_then(Value::as_str).and_then(parse_ts);
    let before = f.get("before").and_then(Value::as_str).and_then(parse_ts);
    match t {
        None => after.is_none() && before.is_none(),
        Some(t) => after.is_none_or(|a| t >= a) && before.is_none_or(|b| t <= b),
    }
}

fn matches_any(v: &Value, wanted: &Option<Vec<String>>) -> bool {
    match wanted {
        None => true,
        Some(w) => v.as_str().is_some_and(|x| w.iter().any(|y| y == x)),
    }
}

/// Ids of any user kind, as DONs (display ids resolved by prefix).
fn user_id_filter(ctx: &Ctx<'_>, body: &Value, key: &str) -> Result<Option<Vec<String>>, Reply> {
    let Some(list) = str_list(body.get(key)) else {
        return Ok(None);
    };
    list.iter()
        .map(|id| resolve_user_don(ctx.state, key, id))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn resolve_user_don(state: &State, field: &str, id: &str) -> Result<String, Reply> {
    match parse_id(id) {
        Some(IdForm::Don { kind, .. })
            if matches!(kind.as_str(), "revu" | "devu" | "sysu" | "svcacc") =>
        {
            Ok(id.to_string())
        }
        Some(IdForm::Display { prefix, .. }) if prefix == "REVU" => {
            to_don(state, field, id, Want::RevUser)
        }
        Some(IdForm::Display { prefix, .. }) if prefix == "DEVU" => {
            to_don(state, field, id, Want::DevUser)
        }
        Some(_) => Err(unexpected_id_type(field)),
        None => Err(invalid_id(field)),
    }
}

// ---------- rev users ----------

fn find_rev_user(ctx: &Ctx<'_>, field: &str, id: &str) -> Result<String, Reply> {
    let don = to_don(ctx.state, field, id, Want::RevUser)?;
    if ctx.state.rev_users.contains_key(&don) {
        Ok(don)
    } else {
        Err(not_found("rev user"))
    }
}

fn rev_users_get(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let asked = s(body, "id").unwrap_or("");
    let don = to_don(ctx.state, "id", asked, Want::RevUser)?;
    let other = ctx
        .opts
        .quirks
        .get_answers
        .iter()
        .find(|(a, _)| *a == don || a == asked)
        .map(|(_, b)| b.clone())
        .or_else(|| ctx.state.answered_by.get(&don).cloned());
    let id = match other {
        Some(b) if ctx.state.rev_users.contains_key(&b) => b,
        _ => find_rev_user(ctx, "id", asked)?,
    };
    let mut u = ctx.state.rev_users[&id].json.clone();
    if ctx.opts.quirks.self_identity && u.get("primary_identity").is_none_or(Value::is_null) {
        u["primary_identity"] = user_summary(&u);
    }
    Ok(Reply::ok(json!({"rev_user": u})))
}

/// A stored `reported_by` / `members` list as a DevRev that treats them as sets might keep
/// it (`Quirks::reorder_sets`): reversed, with `Quirks::extra_member` added.
fn as_set(opts: &FakeOptions, state: &State, mut list: Vec<Value>) -> Vec<Value> {
    if opts.quirks.reorder_sets {
        list.reverse();
        if let Some(extra) = &opts.quirks.extra_member
            && let Some(u) = state.rev_users.get(extra)
            && !list.iter().any(|m| m["id"] == extra.as_str())
        {
            list.push(user_summary(&u.json));
        }
    }
    list
}

fn rev_users_list(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let ignore = ctx.opts.quirks.list_ignores_filters;
    let email = str_list(body.get("email")).filter(|_| !ignore);
    let ext = str_list(body.get("external_ref")).filter(|_| !ignore);
    let exts = str_list(body.get("external_refs"));
    let phones = str_list(body.get("phone_numbers"));
    let rev_org = str_list(body.get("rev_org"));
    let created_by = user_id_filter(ctx, body, "created_by")?;
    let verified = body.get("is_verified").and_then(Value::as_bool);
    let lagging = &ctx.state.listed_before_merge;
    let hidden = &ctx.opts.quirks.list_hides;
    let behind = &ctx.state.listed_before_update;
    let mut items: Vec<Value> = ctx
        .state
        .rev_users
        .values()
        .map(|u| {
            let id = u.json["id"].as_str().unwrap_or_default();
            behind.get(id).unwrap_or(&u.json)
        })
        .filter(|u| !lagging.contains_key(u["id"].as_str().unwrap_or_default()))
        .chain(lagging.values())
        .filter(|u| !hidden.iter().any(|h| u["id"] == h.as_str()))
        .filter(|u| matches_any(&u["email"], &email))
        .filter(|u| matches_any(&u["external_ref"], &ext))
        .filter(|u| matches_any(&u["external_ref"], &exts))
        .filter(|u| {
            phones.as_ref().is_none_or(|p| {
                str_list(u.get("phone_numbers"))
                    .unwrap_or_default()
                    .iter()
                    .any(|x| p.contains(x))
            })
        })
        .filter(|u| {
            rev_org.as_ref().is_none_or(|o| {
                o.iter().any(|x| {
                    u["rev_org"]["id"] == x.as_str() || u["rev_org"]["display_id"] == x.as_str()
                })
            })
        })
        .filter(|u| matches_any(&u["created_by"]["id"], &created_by))
        .filter(|u| verified.is_none_or(|v| u["is_verified"].as_bool().unwrap_or(false) == v))
        .filter(|u| in_range(&u["created_date"], body.get("created_date")))
        .filter(|u| in_range(&u["modified_date"], body.get("modified_date")))
        .cloned()
        .collect();
    // A resolver in front of DevRev answers its other contact in the list too.
    for (asked, answered) in &ctx.opts.quirks.get_answers {
        if let Some(b) = ctx.state.rev_users.get(answered) {
            for u in items.iter_mut().filter(|u| u["id"] == asked.as_str()) {
                *u = b.json.clone();
            }
        }
    }
    // The same record as `rev-users.get` answers.
    if ctx.opts.quirks.self_identity {
        for u in &mut items {
            if u.get("primary_identity").is_none_or(Value::is_null) {
                u["primary_identity"] = user_summary(u);
            }
        }
    }
    sort_items(&mut items, str_list(body.get("sort_by")))?;
    paginate(ctx, body, "rev_users", items)
}

fn rev_users_update(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let id = find_rev_user(ctx, "id", s(body, "id").unwrap_or(""))?;
    if ctx.opts.quirks.refuse_merged_update
        && ctx
            .state
            .merges
            .iter()
            .any(|m| m.secondary == id && m.applied)
    {
        return Err(bad_request("a merged user cannot be updated"));
    }
    if let Some(new_ref) = s(body, "external_ref") {
        if new_ref.is_empty() {
            return Err(error(
                400,
                "value_not_permitted",
                "external_ref must not be empty",
                json!({"field_name": "external_ref"}),
            ));
        }
        let own = ctx.state.rev_users[&id].external_ref();
        if own.as_deref() != Some(new_ref)
            && ctx.state.ref_taken(
                new_ref,
                &id,
                ctx.now,
                ctx.opts.merge.ref_release_delay,
                ctx.opts.quirks.merged_keeps_ref,
            )
        {
            return Err(error(
                409,
                "conflict",
                "external_ref is already in use by another user",
                json!({}),
            ));
        }
    }
    check_own_data(ctx, &id, body)?;
    let tags = match body.get("tags") {
        // A beta-only field of this endpoint: the public API does not know it.
        Some(_) if !ctx.beta => return Err(invalid_field("tags")),
        Some(t) => Some(tag_objects(ctx.state, t)?),
        None => None,
    };
    if let Some(pic) = s(body, "display_picture") {
        let don = to_don(ctx.state, "display_picture", pic, Want::Artifact)?;
        if !ctx.state.artifacts.contains_key(&don) {
            return Err(not_found("artifact"));
        }
    }
    let stamp = ctx.stamp();
    let modified_by = dev_summary(ctx.state);
    if ctx.opts.quirks.list_lags_updates
        && let Some(rec) = ctx.state.rev_users.get(&id)
    {
        let before = rec.json.clone();
        ctx.state.listed_before_update.insert(id.clone(), before);
    }
    let Some(rec) = ctx.state.rev_users.get_mut(&id) else {
        return Err(not_found("rev user"));
    };
    let u = &mut rec.json;
    for k in [
        "display_name",
        "description",
        "email",
        "external_ref",
        "phone_numbers",
        "external_refs",
    ] {
        if let Some(v) = body.get(k) {
            u[k] = v.clone();
        }
    }
    if let Some(t) = tags {
        u["tags"] = t;
    }
    if let Some(pic) = body.get("display_picture") {
        u["display_picture"] = if pic.is_null() {
            Value::Null
        } else {
            json!({"id": pic})
        };
    }
    if let Some(Value::Object(cf)) = body.get("custom_fields") {
        if !u["custom_fields"].is_object() {
            u["custom_fields"] = json!({});
        }
        if let Some(m) = u["custom_fields"].as_object_mut() {
            // Only the fields sent change; a null clears one.
            for (k, v) in cf {
                if v.is_null() {
                    m.remove(k);
                } else {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(set) = body
        .get("custom_schema_fragments")
        .and_then(|v| v.get("set"))
    {
        u["custom_schema_fragments"] = set.clone();
    }
    u["modified_date"] = json!(stamp);
    u["modified_by"] = modified_by;
    Ok(Reply::ok(json!({"rev_user": u})))
}

/// `tags: [{id, value?}]` (the whole list) as objects show them, `[{tag: {id, display_id,
/// name}, value?}]`, each tag as some object already shows it; `TAG-<n>` ids are taken too.
fn tag_objects(state: &State, list: &Value) -> Result<Value, Reply> {
    let known = |don: &str| {
        state
            .rev_users
            .values()
            .chain(state.deleted_rev_users.values())
            .flat_map(|u| u.json["tags"].as_array().cloned().unwrap_or_default())
            .map(|t| t["tag"].clone())
            .find(|t| t["id"] == don)
    };
    let mut out = Vec::new();
    for t in list.as_array().into_iter().flatten() {
        let Some(id) = t["id"].as_str() else {
            return Err(missing("tags.id"));
        };
        let don = match id.strip_prefix("TAG-") {
            Some(n) => format!("don:core:{PARTITION}:devo/{}:tag/{n}", state.org),
            None if id.contains(":tag/") => id.to_string(),
            None => return Err(invalid_id("tags.id")),
        };
        let n = don.rsplit('/').next().unwrap_or_default().to_string();
        let tag =
            known(&don).unwrap_or_else(|| json!({"id": don, "display_id": format!("TAG-{n}")}));
        let mut o = json!({ "tag": tag });
        if let Some(v) = t.get("value").filter(|v| !v.is_null()) {
            o["value"] = v.clone();
        }
        out.push(o);
    }
    Ok(Value::Array(out))
}

/// The value rules of a contact's own data (`schema.rs`): E.164 phone numbers, custom fields
/// sent with a `custom_schema_spec` and defined by one of the contact's fragments (as they
/// will be after this update's `custom_schema_fragments.set`).
fn check_own_data(ctx: &Ctx<'_>, id: &str, body: &Value) -> Result<(), Reply> {
    let named = |field: &str| {
        if ctx.opts.quirks.unnamed_field_errors {
            json!({})
        } else {
            json!({ "field_name": field })
        }
    };
    for n in body["phone_numbers"].as_array().into_iter().flatten() {
        let n = n.as_str().unwrap_or_default();
        if !crate::schema::is_e164(n) {
            return Err(error(
                400,
                "bad_request",
                &format!("phone number {n:?} is not in E.164 format"),
                named("phone_numbers"),
            ));
        }
    }
    let Some(cf) = body["custom_fields"].as_object().filter(|o| !o.is_empty()) else {
        return Ok(());
    };
    if !body["custom_schema_spec"].is_object() {
        return Err(error(
            400,
            "bad_request",
            "custom fields need their schema specified (custom_schema_spec)",
            named("custom_schema_spec"),
        ));
    }
    let fragments = match body["custom_schema_fragments"]["set"].as_array() {
        Some(set) => set
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        None => crate::schema::fragments_of(&ctx.state.rev_users[id].json),
    };
    for key in cf.keys() {
        if !crate::schema::defined(&fragments, key) {
            return Err(error(
                400,
                "bad_request",
                &format!("custom field {key} is not defined by the contact's schema fragments"),
                named(&format!("custom_fields.{key}")),
            ));
        }
    }
    Ok(())
}

/// `rev-users.create` (public spec: 201 with `{rev_user}`; 409 when the `external_ref` is taken).
/// Without an `external_ref` the contact gets DevRev's default, its own `REVU-` display id.
fn rev_users_create(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    // Only the beta `rev-users-create-request` has these (the public one does not).
    if ctx.opts.quirks.public_shape && !ctx.beta {
        for k in ["custom_fields", "tags"] {
            if body.get(k).is_some() {
                return Err(invalid_field(k));
            }
        }
    }
    let tags = match body.get("tags") {
        Some(t) => tag_objects(ctx.state, t)?,
        None => json!([]),
    };
    let new_ref = s(body, "external_ref");
    if new_ref == Some("") {
        return Err(error(
            400,
            "value_not_permitted",
            "external_ref must not be empty",
            json!({"field_name": "external_ref"}),
        ));
    }
    if let Some(r) = new_ref
        && ctx.state.ref_taken(
            r,
            "",
            ctx.now,
            ctx.opts.merge.ref_release_delay,
            ctx.opts.quirks.merged_keeps_ref,
        )
    {
        return Err(error(
            409,
            "conflict",
            "external_ref is already in use by another user",
            json!({}),
        ));
    }
    let rev_org = match s(body, "rev_org") {
        None => None,
        Some(id) => Some(find_rev_org(ctx.state, id)?),
    };
    if let Some(pic) = s(body, "display_picture") {
        let don = to_don(ctx.state, "display_picture", pic, Want::Artifact)?;
        if !ctx.state.artifacts.contains_key(&don) {
            return Err(not_found("artifact"));
        }
    }
    // Ids never repeat: the request's sequence number is unique over the server's life.
    let rid = format!("C{:06}", ctx.seq);
    let id = format!("don:identity:{PARTITION}:devo/{}:revu/{rid}", ctx.state.org);
    let display_id = format!("REVU-{rid}");
    let stamp = ctx.stamp();
    let by = dev_summary(ctx.state);
    let mut u = json!({
        "id": id,
        "display_id": display_id,
        "external_ref": new_ref.unwrap_or(&display_id),
        "state": "active",
        "is_verified": false,
        "created_by": by,
        "created_date": stamp,
        "modified_by": by,
        "modified_date": stamp,
        "tags": tags,
        "custom_fields": {},
    });
    for k in [
        "display_name",
        "description",
        "email",
        "phone_numbers",
        "custom_fields",
        "external_refs",
    ] {
        if let Some(v) = body.get(k) {
            u[k] = v.clone();
        }
    }
    if let Some(o) = rev_org {
        u["rev_org"] = o;
    }
    if let Some(f) = body.get("custom_schema_fragments") {
        u["custom_schema_fragments"] = f.clone();
    }
    if let Some(pic) = body.get("display_picture") {
        u["display_picture"] = json!({"id": pic});
    }
    ctx.state
        .rev_users
        .insert(id.clone(), crate::fake::RevUserRec { json: u.clone() });
    Ok(Reply {
        status: 201,
        body: json!({"rev_user": u}),
    })
}

/// A Rev organization by DON or `REV-` display id, as some contact (live or merged away)
/// carries it; the fake keeps no separate list of orgs.
fn find_rev_org(state: &State, id: &str) -> Result<Value, Reply> {
    if parse_id(id).is_none() {
        return Err(invalid_id("rev_org"));
    }
    state
        .rev_users
        .values()
        .chain(state.deleted_rev_users.values())
        .map(|u| &u.json["rev_org"])
        .find(|o| o["id"] == id || o["display_id"] == id)
        .cloned()
        .ok_or_else(|| not_found("rev org"))
}

fn dev_summary(state: &State) -> Value {
    let d = state.dev_users.first().cloned().unwrap_or(json!({}));
    json!({"type": "dev_user", "id": d["id"], "display_id": d["display_id"],
           "display_name": d["display_name"], "email": d["email"], "full_name": d["full_name"],
           "state": "active"})
}

fn rev_users_merge(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let p_raw = s(body, "primary_user").unwrap_or("");
    let s_raw = s(body, "secondary_user").unwrap_or("");
    let p_don = to_don(ctx.state, "primary_user", p_raw, Want::RevUser)?;
    let s_don = to_don(ctx.state, "secondary_user", s_raw, Want::RevUser)?;
    if let Some((_, into)) = ctx
        .opts
        .merge
        .side_merges
        .iter()
        .find(|(sec, _)| *sec == s_don)
        && !ctx.state.side_merged.contains(&s_don)
    {
        ctx.state.side_merged.push(s_don.clone());
        side_merge(ctx.state, ctx.opts, &into.clone(), &s_don, ctx.now);
    }
    if !ctx.state.rev_users.contains_key(&p_don) {
        return Err(not_found("primary user"));
    }
    if !ctx.state.rev_users.contains_key(&s_don) {
        return Err(not_found("secondary user"));
    }
    if p_don == s_don {
        return Err(bad_request(
            "primary_user and secondary_user must be different users",
        ));
    }
    let verified = |id: &str| {
        ctx.state.rev_users[id].json["is_verified"]
            .as_bool()
            .unwrap_or(false)
    };
    if verified(&p_don) && !verified(&s_don) {
        return Err(bad_request(
            "Unverified users cannot be converted or merged into verified users",
        ));
    }
    let account = |id: &str| ctx.state.rev_users[id].json["rev_org"]["id"].clone();
    if ctx.opts.quirks.refuse_cross_account_merge && account(&p_don) != account(&s_don) {
        return Err(bad_request(
            "primary_user and secondary_user belong to different rev orgs",
        ));
    }
    let secondary_ref = ctx.state.rev_users[&s_don].external_ref();
    ctx.state.merges.push(MergeRecord {
        primary: p_don,
        secondary: s_don,
        requested_seq: ctx.seq,
        applied: false,
        due: ctx.now + ctx.opts.merge.delay,
        applied_at: None,
        secondary_ref,
    });
    if ctx.opts.merge.delay.is_zero() {
        let i = ctx.state.merges.len() - 1;
        apply_merge(ctx.state, i, ctx.opts, ctx.now);
    }
    Ok(Reply::ok(json!({})))
}

/// A merge of `secondary` into `into` that this client did not ask for, applied at once.
pub(crate) fn side_merge(
    state: &mut State,
    opts: &FakeOptions,
    into: &str,
    secondary: &str,
    now: Instant,
) -> bool {
    if !state.rev_users.contains_key(into) || !state.rev_users.contains_key(secondary) {
        return false;
    }
    let secondary_ref = state.rev_users[secondary].external_ref();
    state.merges.push(MergeRecord {
        primary: into.to_string(),
        secondary: secondary.to_string(),
        requested_seq: 0,
        applied: false,
        due: now,
        applied_at: None,
        secondary_ref,
    });
    let i = state.merges.len() - 1;
    apply_merge(state, i, opts, now);
    true
}

/// Applies every scheduled merge whose time has come (all of them with `force`).
pub(crate) fn apply_due(state: &mut State, opts: &FakeOptions, now: Instant, force: bool) {
    for i in 0..state.merges.len() {
        let m = &state.merges[i];
        if !m.applied && (force || m.due <= now) {
            apply_merge(state, i, opts, now);
        }
    }
}

/// What the real merge is believed to do, shaped by `opts.merge` (see `MergeBehaviour`).
pub(crate) fn apply_merge(state: &mut State, i: usize, opts: &FakeOptions, now: Instant) {
    let (primary, secondary) = {
        let m = &mut state.merges[i];
        m.applied = true;
        m.applied_at = Some(now);
        (m.primary.clone(), m.secondary.clone())
    };
    // A contact merged into another one already (a side merge that came first) is merged
    // away: a later merge of it changes nothing, whichever way it went (otherwise a still
    // listed secondary would show the later primary, depending on timing).
    if state
        .merges
        .iter()
        .enumerate()
        .any(|(j, m)| j != i && m.applied && m.secondary == secondary && m.primary != primary)
    {
        return;
    }
    let (Some(p), Some(sec)) = (
        state.rev_users.get(&primary).map(|r| r.json.clone()),
        state.rev_users.get(&secondary).map(|r| r.json.clone()),
    ) else {
        return; // one side vanished meanwhile (merged twice): nothing to do
    };
    if opts.quirks.list_lags_merges {
        state
            .listed_before_merge
            .insert(secondary.clone(), sec.clone());
    }
    let b = &opts.merge;
    let p_sum = user_summary(&p);
    // Affected objects in a stable order; Partial skips every other one (the 1st, 3rd, ...).
    let mut k = 0usize;
    let mut should_move = |mode: MoveMode| {
        let this = k;
        k += 1;
        match mode {
            MoveMode::All => true,
            MoveMode::Nothing => false,
            MoveMode::Partial => this % 2 == 1,
        }
    };
    for t in state.works.values_mut() {
        if summary_ids(&t.json["reported_by"]).contains(&secondary) && should_move(b.moves) {
            t.json["reported_by"] = replace_member(&t.json["reported_by"], &secondary, &p_sum);
        }
    }
    for c in state.conversations.values_mut() {
        if summary_ids(&c.json["members"]).contains(&secondary) && should_move(b.moves) {
            c.json["members"] = replace_member(&c.json["members"], &secondary, &p_sum);
        }
    }
    if b.moves == MoveMode::All {
        for entries in state.timelines.values_mut() {
            for e in entries.iter_mut() {
                if e["created_by"]["id"] == secondary.as_str() {
                    e["created_by"] = p_sum.clone();
                }
            }
        }
    }
    let stamp = fmt_ts(Utc::now(), i as u64 + 3);
    if let Some(pr) = state.rev_users.get_mut(&primary) {
        if b.renames_primary {
            pr.json["display_name"] = sec["display_name"].clone();
        }
        if !b.lossy {
            keep_secondary_data(&mut pr.json, &sec);
        }
        pr.json["modified_date"] = json!(stamp);
    }
    if b.lossy
        && let Some(r) = state.rev_users.get_mut(&secondary)
        && let Some(o) = r.json.as_object_mut()
    {
        // Gone with the merge: what a later read of a still-listed secondary shows.
        o.remove("phone_numbers");
        o.insert("custom_fields".into(), json!({}));
        o.insert("tags".into(), json!([]));
    }
    match b.secondary_after.for_secondary(&secondary) {
        SecondaryAfter::Gone | SecondaryAfter::Mixed => {
            if let Some(rec) = state.rev_users.remove(&secondary) {
                state.deleted_rev_users.insert(secondary.clone(), rec);
            }
        }
        SecondaryAfter::AnswersPrimary => {
            if let Some(rec) = state.rev_users.remove(&secondary) {
                state.deleted_rev_users.insert(secondary.clone(), rec);
            }
            state.answered_by.insert(secondary.clone(), primary.clone());
        }
        SecondaryAfter::Deactivated => {
            if let Some(r) = state.rev_users.get_mut(&secondary) {
                r.json["state"] = json!("deactivated");
                r.json["modified_date"] = json!(stamp);
            }
        }
        SecondaryAfter::PrimaryIdentity => {
            if let Some(r) = state.rev_users.get_mut(&secondary) {
                r.json["primary_identity"] = p_sum.clone();
                r.json["modified_date"] = json!(stamp);
            }
        }
        SecondaryAfter::DropRef => {
            if let Some(r) = state.rev_users.get_mut(&secondary) {
                let old = r.external_ref().unwrap_or_default();
                r.json["external_ref"] = json!(format!("{old}-drop-{secondary}"));
                r.json["modified_date"] = json!(stamp);
            }
        }
    }
}

/// A lossless merge (`MergeBehaviour::lossy` off): the primary gains the phone numbers and
/// custom fields it lacks; its own values stay.
/// Only what DevRev's own rules let the primary hold: E.164 numbers, and fields its schema
/// fragments define.
fn keep_secondary_data(p: &mut Value, sec: &Value) {
    let mut phones: Vec<Value> = p["phone_numbers"].as_array().cloned().unwrap_or_default();
    for n in sec["phone_numbers"].as_array().into_iter().flatten() {
        if n.as_str().is_some_and(crate::schema::is_e164) && !phones.contains(n) {
            phones.push(n.clone());
        }
    }
    if !phones.is_empty() {
        p["phone_numbers"] = Value::Array(phones);
    }
    if !p["custom_fields"].is_object() {
        p["custom_fields"] = json!({});
    }
    let fragments = crate::schema::fragments_of(p);
    if let (Some(mine), Some(theirs)) = (
        p["custom_fields"].as_object_mut(),
        sec["custom_fields"].as_object(),
    ) {
        for (k, v) in theirs {
            if mine.get(k).is_none_or(Value::is_null) && crate::schema::defined(&fragments, k) {
                mine.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Replaces `old` by `new` in a summary list, keeping order and dropping the duplicate when
/// `new` was already listed.
fn replace_member(list: &Value, old: &str, new: &Value) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for m in list.as_array().cloned().unwrap_or_default() {
        let m = if m["id"] == old { new.clone() } else { m };
        if !out.iter().any(|o| o["id"] == m["id"]) {
            out.push(m);
        }
    }
    Value::Array(out)
}

// ---------- works ----------

/// A stored object rendered as served: user summaries refreshed from the live contacts.
fn refresh_summaries(state: &State, list: &Value) -> Value {
    let Some(a) = list.as_array() else {
        return list.clone();
    };
    Value::Array(
        a.iter()
            .map(|m| {
                m["id"]
                    .as_str()
                    .and_then(|id| state.rev_users.get(id))
                    .map(|u| user_summary(&u.json))
                    .unwrap_or_else(|| m.clone())
            })
            .collect(),
    )
}

pub(crate) fn render_work(state: &State, w: &Value) -> Value {
    let mut w = w.clone();
    w["reported_by"] = refresh_summaries(state, &w["reported_by"]);
    w
}

pub(crate) fn render_conversation(state: &State, c: &Value) -> Value {
    let mut c = c.clone();
    c["members"] = refresh_summaries(state, &c["members"]);
    c
}

fn find_work(ctx: &Ctx<'_>, field: &str, id: &str) -> Result<String, Reply> {
    let don = to_don(ctx.state, field, id, Want::Work)?;
    if ctx.state.works.contains_key(&don) {
        Ok(don)
    } else {
        Err(not_found("work"))
    }
}

fn works_get(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let id = find_work(ctx, "id", s(body, "id").unwrap_or(""))?;
    Ok(Reply::ok(
        json!({"work": render_work(ctx.state, &ctx.state.works[&id].json)}),
    ))
}

fn works_list(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let types = str_list(body.get("type"));
    let reported_by = user_id_filter(ctx, body, "reported_by")?;
    let owned_by = user_id_filter(ctx, body, "owned_by")?;
    let created_by = user_id_filter(ctx, body, "created_by")?;
    let stage = str_list(body.get("stage").and_then(|s| s.get("name")));
    let severity = str_list(body.get("ticket").and_then(|t| t.get("severity")));
    let rev_org = str_list(body.get("ticket").and_then(|t| t.get("rev_org")));
    let any_in = |list: &Value, wanted: &Option<Vec<String>>| match wanted {
        None => true,
        Some(w) => summary_ids(list).iter().any(|i| w.contains(i)),
    };
    let mut items: Vec<Value> = ctx
        .state
        .works
        .values()
        .map(|w| &w.json)
        .filter(|w| matches_any(&w["type"], &types))
        .filter(|w| any_in(&w["reported_by"], &reported_by))
        .filter(|w| any_in(&w["owned_by"], &owned_by))
        .filter(|w| matches_any(&w["created_by"]["id"], &created_by))
        .filter(|w| matches_any(&w["stage"]["name"], &stage))
        .filter(|w| matches_any(&w["severity"], &severity))
        .filter(|w| {
            rev_org.as_ref().is_none_or(|o| {
                o.iter().any(|x| {
                    w["rev_org"]["id"] == x.as_str() || w["rev_org"]["display_id"] == x.as_str()
                })
            })
        })
        .map(|w| render_work(ctx.state, w))
        .collect();
    sort_items(&mut items, str_list(body.get("sort_by")))?;
    paginate(ctx, body, "works", items)
}

/// Resolves a `set` list of user ids to summaries (404 for an unknown user).
fn user_summaries(state: &State, field: &str, ids: &[String]) -> Result<Vec<Value>, Reply> {
    ids.iter()
        .map(|id| {
            let don = resolve_user_don(state, field, id)?;
            if let Some(u) = state.rev_users.get(&don) {
                return Ok(user_summary(&u.json));
            }
            if let Some(d) = state.dev_users.iter().find(|d| d["id"] == don.as_str()) {
                return Ok(
                    json!({"type": "dev_user", "id": d["id"], "display_id": d["display_id"],
                                 "display_name": d["display_name"], "email": d["email"],
                                 "full_name": d["full_name"], "state": d["state"]}),
                );
            }
            Err(not_found(&format!("user {id}")))
        })
        .collect()
}

fn works_update(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let id = find_work(ctx, "id", s(body, "id").unwrap_or(""))?;
    let kind = ctx.state.works[&id].json["type"]
        .as_str()
        .unwrap_or("ticket")
        .to_string();
    let req_type = s(body, "type");
    if let Some(t) = req_type
        && t != kind
    {
        return Err(bad_request(&format!("work {id} is a {kind}, not a {t}")));
    }
    if let Some(map) = body.as_object()
        && let Some(f) = map
            .keys()
            .find(|k| TICKET_UPDATE_FIELDS.contains(&k.as_str()))
        && req_type != Some("ticket")
    {
        return Err(invalid_field(f));
    }
    let reported = match str_list(body.get("reported_by").and_then(|r| r.get("set"))) {
        Some(ids) => Some(user_summaries(ctx.state, "reported_by.set", &ids)?),
        None => None,
    };
    let owned = match str_list(body.get("owned_by").and_then(|r| r.get("set"))) {
        Some(ids) if ids.is_empty() => {
            return Err(error(
                400,
                "value_not_permitted",
                "owned_by must not be empty",
                json!({"field_name": "owned_by.set", "reason": "owners must not be empty"}),
            ));
        }
        Some(ids) => Some(user_summaries(ctx.state, "owned_by.set", &ids)?),
        None => None,
    };
    let artifacts = match body.get("artifacts") {
        Some(a) => Some(artifact_ops(ctx, &id, a)?),
        None => None,
    };
    let stamp = ctx.stamp();
    let by = dev_summary(ctx.state);
    let reported = reported.map(|r| as_set(ctx.opts, ctx.state, r));
    let Some(rec) = ctx.state.works.get_mut(&id) else {
        return Err(not_found("work"));
    };
    let w = &mut rec.json;
    if let Some(r) = reported {
        w["reported_by"] = Value::Array(r);
    }
    if let Some(o) = owned {
        w["owned_by"] = Value::Array(o);
    }
    if let Some(a) = artifacts {
        w["artifacts"] = Value::Array(a);
    }
    for k in [
        "title",
        "body",
        "severity",
        "needs_response",
        "is_spam",
        "is_frozen",
        "is_archived",
        "target_close_date",
    ] {
        if let Some(v) = body.get(k) {
            w[k] = v.clone();
        }
    }
    if let Some(name) = body.get("stage").and_then(|s| s.get("name")) {
        w["stage"]["name"] = name.clone();
    }
    if let Some(set) = body.get("tags").and_then(|t| t.get("set")) {
        w["tags"] = set.clone();
    }
    // Beta `tags.add` / `tags.remove` (by tag id).
    let tag_id = |t: &Value| {
        t.get("id")
            .or_else(|| t.get("tag").and_then(|x| x.get("id")))
            .cloned()
            .unwrap_or(Value::Null)
    };
    if let Some(Value::Array(add)) = body.get("tags").and_then(|t| t.get("add")) {
        let mut cur = w["tags"].as_array().cloned().unwrap_or_default();
        for t in add {
            if !cur.iter().any(|c| tag_id(c) == tag_id(t)) {
                cur.push(t.clone());
            }
        }
        w["tags"] = Value::Array(cur);
    }
    if let Some(Value::Array(rm)) = body.get("tags").and_then(|t| t.get("remove")) {
        let mut cur = w["tags"].as_array().cloned().unwrap_or_default();
        cur.retain(|c| !rm.iter().any(|r| tag_id(r) == tag_id(c)));
        w["tags"] = Value::Array(cur);
    }
    w["modified_date"] = json!(stamp);
    w["modified_by"] = by;
    let out = render_work(ctx.state, &ctx.state.works[&id].json);
    Ok(Reply::ok(json!({"work": out})))
}

fn artifact_summary(a: &ArtifactRec) -> Value {
    json!({"id": a.json["id"], "display_id": a.json["display_id"], "file": a.json["file"]})
}

fn artifact_ops(ctx: &Ctx<'_>, work: &str, ops: &Value) -> Result<Vec<Value>, Reply> {
    let resolve = |field: &str, ids: Vec<String>| -> Result<Vec<Value>, Reply> {
        ids.iter()
            .map(|i| {
                let don = to_don(ctx.state, field, i, Want::Artifact)?;
                ctx.state
                    .artifacts
                    .get(&don)
                    .map(artifact_summary)
                    .ok_or_else(|| not_found("artifact"))
            })
            .collect()
    };
    let mut cur: Vec<Value> = ctx.state.works[work].json["artifacts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(set) = str_list(ops.get("set")) {
        cur = resolve("artifacts.set", set)?;
    }
    if let Some(add) = str_list(ops.get("add")) {
        for a in resolve("artifacts.add", add)? {
            if !cur.iter().any(|c| c["id"] == a["id"]) {
                cur.push(a);
            }
        }
    }
    if let Some(rm) = str_list(ops.get("remove")) {
        let rm = resolve("artifacts.remove", rm)?;
        cur.retain(|c| !rm.iter().any(|r| r["id"] == c["id"]));
    }
    Ok(cur)
}

// ---------- timelines ----------

fn timeline_list(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let raw = s(body, "object").unwrap_or("");
    let object = match parse_id(raw) {
        None => return Err(invalid_id("object")),
        Some(IdForm::Don { kind, .. }) if kind == "conversation" => raw.to_string(),
        Some(IdForm::Display { prefix, .. }) if prefix == "CONV" => {
            to_don(ctx.state, "object", raw, Want::Conversation)?
        }
        Some(_) => to_don(ctx.state, "object", raw, Want::Work)?,
    };
    if !ctx.state.works.contains_key(&object) && !ctx.state.conversations.contains_key(&object) {
        return Err(not_found("object"));
    }
    let visibility = str_list(body.get("visibility"));
    let collections = str_list(body.get("collections"));
    let mut items: Vec<Value> = ctx
        .state
        .timelines
        .get(&object)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| matches_any(&e["visibility"], &visibility))
        .filter(|e| {
            collections.as_ref().is_none_or(|c| {
                let t = e["type"].as_str().unwrap_or("");
                (c.iter().any(|x| x == "discussions") && t == "timeline_comment")
                    || (c.iter().any(|x| x == "events") && t != "timeline_comment")
            })
        })
        .collect();
    items.sort_by(|a, b| cmp_field(a, b, "created_date"));
    paginate(ctx, body, "timeline_entries", items)
}

// ---------- conversations ----------

fn conversations_list(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let members = user_id_filter(ctx, body, "members")?;
    let owned_by = user_id_filter(ctx, body, "owned_by")?;
    let stage = str_list(body.get("stage").and_then(|s| s.get("name")));
    let any_in = |list: &Value, wanted: &Option<Vec<String>>| match wanted {
        None => true,
        Some(w) => summary_ids(list).iter().any(|i| w.contains(i)),
    };
    let mut items: Vec<Value> = ctx
        .state
        .conversations
        .values()
        .map(|c| &c.json)
        .filter(|c| any_in(&c["members"], &members))
        .filter(|c| any_in(&c["owned_by"], &owned_by))
        .filter(|c| matches_any(&c["stage"]["name"], &stage))
        .map(|c| render_conversation(ctx.state, c))
        .collect();
    sort_items(&mut items, None)?;
    paginate(ctx, body, "conversations", items)
}

fn conversations_update(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let id = to_don(
        ctx.state,
        "id",
        s(body, "id").unwrap_or(""),
        Want::Conversation,
    )?;
    if !ctx.state.conversations.contains_key(&id) {
        return Err(not_found("conversation"));
    }
    let members = match str_list(body.get("members").and_then(|r| r.get("set"))) {
        Some(ids) => Some(user_summaries(ctx.state, "members.set", &ids)?),
        None => None,
    };
    let owned = match str_list(body.get("owned_by").and_then(|r| r.get("set"))) {
        Some(ids) => Some(user_summaries(ctx.state, "owned_by.set", &ids)?),
        None => None,
    };
    let stamp = ctx.stamp();
    let members = members.map(|m| as_set(ctx.opts, ctx.state, m));
    let Some(rec) = ctx.state.conversations.get_mut(&id) else {
        return Err(not_found("conversation"));
    };
    let c = &mut rec.json;
    if let Some(m) = members {
        c["members"] = Value::Array(m);
    }
    if let Some(o) = owned {
        c["owned_by"] = Value::Array(o);
    }
    for k in ["title", "description", "is_spam", "is_frozen"] {
        if let Some(v) = body.get(k) {
            c[k] = v.clone();
        }
    }
    if let Some(name) = body.get("stage").and_then(|s| s.get("name")) {
        c["stage"]["name"] = name.clone();
    }
    c["modified_date"] = json!(stamp);
    let out = render_conversation(ctx.state, &ctx.state.conversations[&id].json);
    Ok(Reply::ok(json!({"conversation": out})))
}

// ---------- artifacts ----------

fn find_artifact(ctx: &Ctx<'_>, body: &Value) -> Result<String, Reply> {
    let don = to_don(ctx.state, "id", s(body, "id").unwrap_or(""), Want::Artifact)?;
    if ctx.state.artifacts.contains_key(&don) {
        Ok(don)
    } else {
        Err(not_found("artifact"))
    }
}

fn artifacts_get(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let id = find_artifact(ctx, body)?;
    let a = &ctx.state.artifacts[&id].json;
    let mut served = a.clone();
    if let Some(o) = served.as_object_mut() {
        o.remove("parent");
    }
    Ok(Reply::ok(json!({
        "artifact": served,
        "version": {"version": "1", "timestamp": a["created_date"], "modified_by": a["created_by"]},
    })))
}

pub(crate) fn sign(token: &str, expires_ms: u128) -> String {
    let digest = Sha256::digest(format!("fake-devrev-secret:{token}:{expires_ms}").as_bytes());
    base16ct::lower::encode_string(&digest)[..32].to_string()
}

fn artifacts_locate(ctx: &mut Ctx<'_>, body: &Value) -> Result<Reply, Reply> {
    let id = find_artifact(ctx, body)?;
    let ttl = ctx.opts.url_ttl;
    let expires_wall = SystemTime::now() + ttl;
    let expires_ms = expires_wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let token = {
        let d = Sha256::digest(format!("{id}:{}:{}", ctx.seq, expires_ms).as_bytes());
        base16ct::lower::encode_string(&d)[..24].to_string()
    };
    let sig = sign(&token, expires_ms);
    ctx.state.downloads.insert(
        token.clone(),
        crate::fake::DownloadGrant {
            artifact: id,
            expires: ctx.now + ttl,
        },
    );
    let expires_at: DateTime<Utc> = expires_wall.into();
    if let Some(url) = &ctx.opts.quirks.locate_url {
        return Ok(Reply::ok(json!({ "url": url })));
    }
    Ok(Reply::ok(json!({
        "url": format!("{}/download/{token}?expires={expires_ms}&sig={sig}", ctx.base_url),
        "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    })))
}

/// The answer to `GET /download/<token>?expires=..&sig=..`: like a pre-signed storage URL, a
/// bad signature or an expired link is 403 with an XML error, otherwise the bytes.
pub(crate) enum Download {
    Bytes {
        bytes: Vec<u8>,
        mime: String,
        name: String,
    },
    Denied(&'static str),
}

pub(crate) fn download(state: &State, token: &str, query: &str, now: Instant) -> Download {
    let mut expires = None;
    let mut sig = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "expires" => expires = v.parse::<u128>().ok(),
            "sig" => sig = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return Download::Denied(
            "Query-string authentication requires the Signature and Expires parameters",
        );
    };
    let Some(grant) = state.downloads.get(token) else {
        return Download::Denied(
            "The request signature we calculated does not match the signature you provided",
        );
    };
    if sign(token, expires) != sig {
        return Download::Denied(
            "The request signature we calculated does not match the signature you provided",
        );
    }
    if now >= grant.expires {
        return Download::Denied("Request has expired");
    }
    let Some(a) = state.artifacts.get(&grant.artifact) else {
        return Download::Denied("The specified key does not exist");
    };
    Download::Bytes {
        bytes: a.bytes.clone(),
        mime: a.json["file"]["type"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_string(),
        name: a.json["file"]["name"]
            .as_str()
            .unwrap_or("file")
            .to_string(),
    }
}
