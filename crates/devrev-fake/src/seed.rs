//! The world the fake serves: a deterministic, realistic generator of contacts, tickets,
//! conversations, timelines and attachments, a JSON fixture format, and the contacts CSV export.
//!
//! Shapes follow `/work/shared/devrev-api.md` §4–§5: DONs like
//! `don:identity:dvrv-us-1:devo/<org>:revu/<base62>`, display ids `REVU-<same>`, `user_` refs
//! made by the customer's app, `-drop-` leftovers, mixed timestamp precision, and duplicates that
//! often co-report the same ticket.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::rng::Rng;
use crate::rng::splitmix;

/// The partition every generated DON uses.
pub const PARTITION: &str = "dvrv-us-1";

/// Everything the fake starts with. Objects are kept as the JSON the API serves so fixtures can
/// carry any field; attachments' bytes are not stored but derived from the artifact id and size
/// (`artifact_bytes`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Seed {
    /// The dev org's id (the `<org>` in `devo/<org>`).
    pub org: String,
    /// Dev users; the first one is the token's owner (`dev-users.self`, `auth-tokens.info`).
    #[serde(default)]
    pub dev_users: Vec<Value>,
    #[serde(default)]
    pub rev_users: Vec<Value>,
    #[serde(default)]
    pub tickets: Vec<Value>,
    #[serde(default)]
    pub conversations: Vec<Value>,
    /// Timeline entries keyed by the DON of the object they belong to.
    #[serde(default)]
    pub timelines: BTreeMap<String, Vec<Value>>,
    /// Full artifact objects (`artifacts.get` shape, with `file{name,type,size}`).
    #[serde(default)]
    pub artifacts: Vec<Value>,
    /// What the generator meant by each group of same-email contacts (for assertions).
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
}

/// One group of contacts sharing a (normalized) email, as generated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedGroup {
    pub kind: GroupKind,
    /// The normalized (trimmed, lower-cased) email.
    pub email: String,
    /// Contact DONs; for a clean pair `[REVU- contact, user_ contact]`.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// One `REVU-` and one `user_` contact: mergeable.
    CleanPair,
    /// Two `user_` contacts.
    TwoUser,
    /// Three `user_` contacts.
    ThreeUser,
    /// One `REVU-` and two `user_` contacts.
    RevuTwoUser,
    /// One `REVU-` contact and one whose ref is `user_<x>-drop-<own DON>` (sometimes twice);
    /// the plain `user_<x>` belongs to another contact with a different email.
    DropRef,
    /// One `REVU-` contact and many `user_` contacts, as [`GenSpec::shaped_groups`] asks.
    Shaped,
}

/// A needs-review group of a chosen shape: one verified `REVU-` contact first, then
/// `size - 1` `user_` contacts, all sharing one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupShape {
    /// Contacts in the group (at least 2).
    pub size: usize,
    /// How many of the `user_` contacts (the last ones) are unverified: DevRev refuses to
    /// merge them into a verified contact.
    pub unverified: usize,
    /// How many of the `user_` contacts (the first ones after the `REVU-`) are in another
    /// account (`rev_org`) than the rest: a different customer, not a duplicate.
    pub other_account: usize,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    /// Clean `REVU-`/`user_` pairs.
    pub pairs: usize,
    /// Needs-review groups, cycling through two `user_`, three `user_`, `REVU-` + two `user_`,
    /// and `-drop-` refs.
    pub review_groups: usize,
    /// Contacts without a duplicate (some with an email as ref, some without an email).
    pub singles: usize,
    /// Tickets reported by each grouped contact, inclusive range.
    pub tickets_per_contact: (usize, usize),
    /// Percentage of a contact's tickets that also list its duplicate(s) in `reported_by`.
    pub shared_ticket_pct: u8,
    /// Extra, unrelated reporters per ticket, inclusive range (`reported_by` is capped at 25).
    pub other_reporters: (usize, usize),
    /// Timeline entries per ticket / conversation, inclusive range.
    pub timeline_entries: (usize, usize),
    /// Percentage of tickets and comments that carry attachments.
    pub attachments_pct: u8,
    /// Largest attachment in bytes (a few are this big; the first is always 0 bytes).
    pub attachment_size_max: usize,
    /// Conversations each secondary (`user_`) contact is a member of, inclusive range.
    pub conversations_per_secondary: (usize, usize),
    /// Percentage of clean pairs whose `user_` contact is unverified while the `REVU-` one is
    /// verified (DevRev refuses to merge unverified into verified).
    pub unverified_secondary_pct: u8,
    /// Needs-review groups of chosen shapes (3, 4, 50 contacts...), after the cycled ones.
    pub shaped_groups: Vec<GroupShape>,
    pub rng_seed: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            pairs: 10,
            review_groups: 4,
            singles: 6,
            tickets_per_contact: (0, 3),
            shared_ticket_pct: 40,
            other_reporters: (0, 3),
            timeline_entries: (1, 5),
            attachments_pct: 25,
            attachment_size_max: 3 * 1024 * 1024,
            conversations_per_secondary: (0, 1),
            unverified_secondary_pct: 0,
            shaped_groups: Vec::new(),
            rng_seed: 42,
        }
    }
}

impl Seed {
    /// A deterministic world: the same `GenSpec` always gives the same seed.
    pub fn generate(spec: &GenSpec) -> Seed {
        Generator::new(spec).run()
    }

    /// An empty world in org `org` with one dev user (for hand-built fixtures).
    pub fn empty(org: &str) -> Seed {
        let spec = GenSpec {
            pairs: 0,
            review_groups: 0,
            singles: 0,
            ..GenSpec::default()
        };
        let mut g = Generator::new(&spec);
        g.org = org.to_string();
        let mut seed = g.run();
        seed.org = org.to_string();
        seed
    }

    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Seed, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read seed {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("seed {} is not valid: {e}", path.display()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The clean pairs as `(REVU- contact DON, user_ contact DON)`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.groups
            .iter()
            .filter(|g| g.kind == GroupKind::CleanPair && g.members.len() == 2)
            .map(|g| (g.members[0].clone(), g.members[1].clone()))
            .collect()
    }

    /// The contacts export (see `contacts_csv`).
    pub fn contacts_csv(&self) -> String {
        contacts_csv(self.rev_users.iter(), self.tickets.iter())
    }

    /// A rev user by DON.
    pub fn rev_user(&self, id: &str) -> Option<&Value> {
        self.rev_users.iter().find(|u| u["id"] == id)
    }

    /// Tickets whose `reported_by` lists `user_id`.
    pub fn tickets_of(&self, user_id: &str) -> Vec<&Value> {
        self.tickets
            .iter()
            .filter(|t| summary_ids(&t["reported_by"]).iter().any(|i| i == user_id))
            .collect()
    }
}

/// The ids in an array of user summaries.
pub fn summary_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The real contacts export: `REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,
/// UPDATED_AT,TICKET_COUNT`, where `REV_USER_ID` is the DON and timestamps look like
/// `2024-12-03 15:16:07.123`. Rows come in creation order.
pub fn contacts_csv<'a>(
    rev_users: impl Iterator<Item = &'a Value>,
    tickets: impl Iterator<Item = &'a Value>,
) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tickets {
        let mut ids = summary_ids(&t["reported_by"]);
        ids.sort();
        ids.dedup();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
    }
    let mut users: Vec<&Value> = rev_users.collect();
    users.sort_by_key(|u| {
        (
            parse_ts(u["created_date"].as_str().unwrap_or("")),
            u["id"].to_string(),
        )
    });
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "REV_USER_ID",
        "DISPLAY_NAME",
        "EMAIL",
        "EXTERNAL_REF",
        "FULL_NAME",
        "CREATED_AT",
        "UPDATED_AT",
        "TICKET_COUNT",
    ]);
    for u in users {
        let s = |k: &str| u[k].as_str().unwrap_or("").to_string();
        let id = s("id");
        let count = warehouse_count(&id, counts.get(&id).copied().unwrap_or(0)).to_string();
        let _ = w.write_record([
            id,
            s("display_name"),
            s("email"),
            s("external_ref"),
            s("full_name"),
            csv_ts(&s("created_date")),
            csv_ts(&s("modified_date")),
            count,
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The export's `TICKET_COUNT` for a contact the API lists `listed` tickets for. The warehouse
/// computes GREATEST(owned, created, reported) over its own, lagging copy (DESIGN §9), so for
/// about a fifth of the contacts (chosen by id hash, stable across runs) it differs: higher
/// (tickets the API no longer lists) or one lower (tickets the warehouse has not seen yet).
pub fn warehouse_count(id: &str, listed: usize) -> usize {
    let h = fnv1a(id.as_bytes());
    match h % 10 {
        0 => listed + 1 + (h >> 8) as usize % 3,
        1 => listed.saturating_sub(1),
        _ => listed,
    }
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn csv_ts(rfc3339: &str) -> String {
    parse_ts(rfc3339)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// Formats a timestamp the way DevRev does, with a fraction precision that varies like in real
/// responses (`…46.19Z`, `…28.773Z`, `…47.497205Z`, sometimes none).
pub fn fmt_ts(t: DateTime<Utc>, precision_pick: u64) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    let digits = match precision_pick % 10 {
        0 => 0,
        1 => 2,
        2 => 6,
        3 => 1,
        4 => 9,
        _ => 3,
    };
    if digits == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    let mut frac = frac[..digits].to_string();
    // DevRev trims trailing zeros (".19", not ".190"); keep at least one digit.
    while frac.len() > 1 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{base}.{frac}Z")
}

/// The bytes of an attachment: deterministic from its id and size, so fixtures need not store
/// them and tests can recompute what a download must contain.
pub fn artifact_bytes(id: &str, size: usize) -> Vec<u8> {
    // A 64 KiB pseudo-random block, repeated with each copy stamped with its own index, so big
    // files are cheap to make (even in unoptimized test builds) yet no two blocks are equal.
    const BLOCK: usize = 64 * 1024;
    let mut state = fnv1a(id.as_bytes());
    let mut block = Vec::with_capacity(BLOCK);
    while block.len() < BLOCK.min(size) {
        block.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    let mut out = vec![0u8; size];
    for (k, chunk) in out.chunks_mut(BLOCK).enumerate() {
        chunk.copy_from_slice(&block[..chunk.len()]);
        if k > 0 {
            let stamp = (k as u64 ^ state).to_le_bytes();
            let n = chunk.len().min(8);
            chunk[..n].copy_from_slice(&stamp[..n]);
        }
    }
    out
}

/// What Plug's `user_traits` leave on a contact the customer's app created (devrev-api.md
/// §5.2): the app's user id and signup channel as custom fields of the contact fragment and,
/// for two in three, a phone number in E.164. Decided by the id's hash, not the RNG, so every
/// other generated value stays what it was.
fn plug_traits(u: &mut Value, rid: &str) {
    let h = fnv1a(format!("plug/{rid}").as_bytes());
    let app_id = u["external_ref"]
        .as_str()
        .and_then(|r| r.split("-drop-").next())
        .unwrap_or_default()
        .to_string();
    if let Some(cf) = u["custom_fields"].as_object_mut() {
        cf.insert("tnt__app_user_id".into(), json!(app_id));
        let source = ["ios", "android", "web"][(h % 3) as usize];
        cf.insert("tnt__signup_source".into(), json!(source));
    }
    if !h.is_multiple_of(3) {
        let n = (h >> 8) % 10_000_000;
        let mut list = u["phone_numbers"].as_array().cloned().unwrap_or_default();
        list.push(json!(format!("+1628{n:07}")));
        u["phone_numbers"] = Value::Array(list);
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FIRST: &[&str] = &[
    "Ana", "Bruno", "Chen", "Dana", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jonas", "Kira",
    "Luis", "Maya", "Nils", "Olga", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera",
    "Wei", "Xenia", "Yusuf", "Zoe",
];
const LAST: &[&str] = &[
    "Almeida", "Becker", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jansen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quispe", "Rossi",
    "Schmidt", "Tanaka", "Ueda", "Varga", "Weber", "Yilmaz", "Zhang",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "acme.io",
    "globex.co",
    "initech.net",
    "umbrella.org",
    "hooli.dev",
];
const TITLES: &[&str] = &[
    "Cannot log in after password reset",
    "Invoice shows the wrong VAT number",
    "Export to CSV times out",
    "Feature request: dark mode",
    "Webhook deliveries delayed",
    "Billing: charged twice this month",
    "SSO redirect loop",
    "Mobile app crashes on start",
    "Question about API limits",
    "Data missing after import",
];
const FILES: &[(&str, &str)] = &[
    ("screenshot.png", "image/png"),
    ("invoice.pdf", "application/pdf"),
    ("logs.txt", "text/plain"),
    ("export.csv", "text/csv"),
    ("recording.mp4", "video/mp4"),
    ("empty.txt", "text/plain"),
];

struct Person {
    first: &'static str,
    last: &'static str,
    email: String,
}

struct Generator<'a> {
    spec: &'a GenSpec,
    rng: Rng,
    org: String,
    seed: Seed,
    rev_orgs: Vec<Value>,
    next_ticket: u64,
    next_artifact: u64,
    next_conversation: u64,
    used_emails: std::collections::BTreeSet<String>,
    used_rids: std::collections::BTreeSet<String>,
    /// Per contact: the other members of its duplicate group.
    partners: BTreeMap<String, Vec<String>>,
    /// Contacts that get tickets of their own.
    reporters: Vec<String>,
    /// Secondaries (user_ side of groups) that get conversations.
    secondaries: Vec<String>,
    epoch: DateTime<Utc>,
}

impl<'a> Generator<'a> {
    fn new(spec: &'a GenSpec) -> Self {
        let mut rng = Rng::new(spec.rng_seed);
        let org = rng.base62(8);
        Generator {
            spec,
            rng,
            org,
            seed: Seed::default(),
            rev_orgs: Vec::new(),
            next_ticket: 1000,
            next_artifact: 5000,
            next_conversation: 300,
            used_emails: Default::default(),
            used_rids: Default::default(),
            partners: BTreeMap::new(),
            reporters: Vec::new(),
            secondaries: Vec::new(),
            epoch: Utc
                .with_ymd_and_hms(2023, 3, 1, 8, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    fn don(&self, service: &str, kind_id: &str) -> String {
        format!("don:{service}:{PARTITION}:devo/{}:{kind_id}", self.org)
    }

    fn ts_at(&mut self, t: DateTime<Utc>) -> String {
        let pick = self.rng.next_u64();
        fmt_ts(t, pick)
    }

    /// A random instant `days` after the epoch window start, with sub-second noise.
    fn instant(&mut self, from_days: usize, to_days: usize) -> DateTime<Utc> {
        let secs = self.rng.range(from_days * 86_400, to_days * 86_400) as i64;
        let nanos = (self.rng.next_u64() % 1_000_000_000) as i64;
        self.epoch + chrono::Duration::seconds(secs) + chrono::Duration::nanoseconds(nanos)
    }

    fn run(mut self) -> Seed {
        self.seed.org = self.org.clone();
        self.make_dev_users();
        let n_orgs = 3 + (self.spec.pairs + self.spec.review_groups + self.spec.singles) / 10;
        for i in 0..n_orgs {
            let rid = self.rng.base62(9);
            self.rev_orgs.push(json!({
                "type": "rev_org",
                "id": self.don("identity", &format!("revo/{rid}")),
                "display_id": format!("REV-{rid}"),
                "display_name": format!("{} Customers {}", self.rng.pick(LAST), i + 1),
            }));
        }
        for i in 0..self.spec.pairs {
            self.clean_pair(i);
        }
        for i in 0..self.spec.review_groups {
            self.review_group(i);
        }
        for shape in self.spec.shaped_groups.clone() {
            self.shaped_group(&shape);
        }
        for i in 0..self.spec.singles {
            self.single(i);
        }
        self.make_tickets();
        self.make_conversations();
        self.seed
    }

    fn make_dev_users(&mut self) {
        for (n, (first, last)) in [("Sam", "Support"), ("Alex", "Agent"), ("Robin", "Rota")]
            .iter()
            .enumerate()
        {
            let n = n + 1;
            let created = self.instant(0, 10);
            let created = self.ts_at(created);
            let email = format!(
                "{}.{}@vendor.example",
                first.to_lowercase(),
                last.to_lowercase()
            );
            self.seed.dev_users.push(json!({
                "type": "dev_user",
                "id": self.don("identity", &format!("devu/{n}")),
                "display_id": format!("DEVU-{n}"),
                "display_name": format!("{}-{}", first.to_lowercase(), last.to_lowercase()),
                "full_name": format!("{first} {last}"),
                "email": email,
                "state": "active",
                "created_date": created,
            }));
        }
    }

    fn person(&mut self) -> Person {
        loop {
            let first = *self.rng.pick(FIRST);
            let last = *self.rng.pick(LAST);
            let domain = *self.rng.pick(DOMAINS);
            let n = self.rng.range(1, 999);
            let email = format!(
                "{}.{}{n}@{domain}",
                first.to_lowercase(),
                last.to_lowercase()
            );
            if self.used_emails.insert(email.clone()) {
                return Person { first, last, email };
            }
        }
    }

    fn rid(&mut self) -> String {
        loop {
            let len = self.rng.range(7, 9);
            let rid = self.rng.base62(len);
            if self.used_rids.insert(rid.clone()) {
                return rid;
            }
        }
    }

    /// The second duplicate's spelling of the same email: sometimes different case or stray
    /// whitespace, as seen in real exports.
    fn email_variant(&mut self, email: &str) -> String {
        match self.rng.range(0, 9) {
            0 | 1 => {
                let mut out = String::new();
                let mut up = true;
                for c in email.chars() {
                    out.push(if up { c.to_ascii_uppercase() } else { c });
                    up = matches!(c, '.' | '@');
                }
                out
            }
            2 => format!("{} ", email.to_uppercase()),
            3 => format!(" {email}"),
            _ => email.to_string(),
        }
    }

    fn sys_user(&self) -> Value {
        json!({"type": "sys_user", "id": self.don("identity", "sysu/1"), "display_id": "SYSU-1",
               "display_name": "devrev-bot", "state": "active"})
    }

    fn dev_summary(&self, i: usize) -> Value {
        let d = &self.seed.dev_users[i % self.seed.dev_users.len()];
        json!({"type": "dev_user", "id": d["id"], "display_id": d["display_id"],
               "display_name": d["display_name"], "full_name": d["full_name"], "email": d["email"],
               "state": "active"})
    }

    /// Creates a contact. `ext_ref = None` gives DevRev's default `REVU-<rid>`.
    fn contact(
        &mut self,
        person: &Person,
        email: Option<String>,
        ext_ref: Option<String>,
        verified: bool,
        rev_org: &Value,
        created: DateTime<Utc>,
    ) -> String {
        let rid = self.rid();
        let id = self.don("identity", &format!("revu/{rid}"));
        let display_id = format!("REVU-{rid}");
        let full_name = format!("{} {}", person.first, person.last);
        let is_user_ref = ext_ref.is_some();
        let ext_ref = ext_ref
            .map(|r| r.replace("{self}", &id))
            .unwrap_or_else(|| display_id.clone());
        // Plug-created (user_) contacts come from devrev-bot with the email as display name.
        let display_name = if is_user_ref {
            email.clone().unwrap_or_else(|| full_name.clone())
        } else {
            full_name.clone()
        };
        let created_by = if is_user_ref {
            self.sys_user()
        } else {
            let i = self.rng.range(0, 2);
            self.dev_summary(i)
        };
        let modified = created + chrono::Duration::seconds(self.rng.range(0, 90 * 86_400) as i64);
        let created_s = self.ts_at(created);
        let modified_s = self.ts_at(modified);
        let mut u = json!({
            "id": id,
            "display_id": display_id,
            "display_name": display_name,
            "full_name": full_name,
            "external_ref": ext_ref,
            "state": "active",
            "is_verified": verified,
            "rev_org": rev_org,
            "created_by": created_by,
            "created_date": created_s,
            "modified_by": created_by,
            "modified_date": modified_s,
            "custom_fields": {"tnt__plan": if self.rng.pct(50) { "pro" } else { "free" }},
            "stock_schema_fragment": self.don("core", "stock_sf/1"),
            "custom_schema_fragments": [self.don("core", "tenant_fragment/3")],
            "tags": [],
        });
        if let Some(e) = email {
            u["email"] = json!(e);
        }
        // Real exports have mostly empty full names (DESIGN §9). Decided by the id's hash, not
        // the RNG, so every other generated value stays what it was.
        if !fnv1a(rid.as_bytes()).is_multiple_of(4)
            && let Some(o) = u.as_object_mut()
        {
            o.remove("full_name");
        }
        if self.rng.pct(30) {
            let n = self.rng.range(100_000_000, 999_999_999);
            u["phone_numbers"] = json!([format!("+1415{n}")]);
        }
        if is_user_ref {
            plug_traits(&mut u, &rid);
        }
        self.seed.rev_users.push(u);
        id
    }

    fn user_ref(&mut self) -> String {
        format!("user_{}", self.rng.lower_alnum(26))
    }

    fn clean_pair(&mut self, _i: usize) {
        let p = self.person();
        let org = self.rev_orgs[self.rng.range(0, self.rev_orgs.len() - 1)].clone();
        let unverified_secondary = self.rng.pct(self.spec.unverified_secondary_pct);
        let t1 = self.instant(0, 300);
        let t2 = t1 + chrono::Duration::seconds(self.rng.range(3_600, 200 * 86_400) as i64);
        let revu = self.contact(&p, Some(p.email.clone()), None, true, &org, t1);
        let variant = self.email_variant(&p.email);
        let uref = self.user_ref();
        let user = self.contact(
            &p,
            Some(variant),
            Some(uref),
            !unverified_secondary,
            &org,
            t2,
        );
        self.group(GroupKind::CleanPair, &p.email, vec![revu, user.clone()]);
        self.secondaries.push(user);
    }

    fn review_group(&mut self, i: usize) {
        let p = self.person();
        let org = self.rev_orgs[self.rng.range(0, self.rev_orgs.len() - 1)].clone();
        let t = self.instant(0, 300);
        let at = |g: &mut Self, k: i64| {
            t + chrono::Duration::seconds(k * 86_400 + g.rng.range(0, 86_000) as i64)
        };
        let kinds = [
            GroupKind::TwoUser,
            GroupKind::ThreeUser,
            GroupKind::RevuTwoUser,
            GroupKind::DropRef,
        ];
        let kind = kinds[i % kinds.len()];
        let mut members = Vec::new();
        match kind {
            GroupKind::TwoUser | GroupKind::ThreeUser => {
                let n = if kind == GroupKind::TwoUser { 2 } else { 3 };
                for k in 0..n {
                    let e = if k == 0 {
                        p.email.clone()
                    } else {
                        self.email_variant(&p.email)
                    };
                    let r = self.user_ref();
                    let when = at(self, k);
                    members.push(self.contact(&p, Some(e), Some(r), true, &org, when));
                }
            }
            GroupKind::RevuTwoUser => {
                let when = at(self, 0);
                members.push(self.contact(&p, Some(p.email.clone()), None, true, &org, when));
                for k in 1..3 {
                    let e = self.email_variant(&p.email);
                    let r = self.user_ref();
                    let when = at(self, k);
                    members.push(self.contact(&p, Some(e), Some(r), true, &org, when));
                }
            }
            GroupKind::DropRef | GroupKind::CleanPair | GroupKind::Shaped => {
                let when = at(self, 0);
                members.push(self.contact(&p, Some(p.email.clone()), None, true, &org, when));
                let plain = self.user_ref();
                let twice = self.rng.pct(30);
                let dropped = if twice {
                    format!("{plain}-drop-{{self}}-drop-{{self}}")
                } else {
                    format!("{plain}-drop-{{self}}")
                };
                let e = self.email_variant(&p.email);
                let when = at(self, 1);
                members.push(self.contact(&p, Some(e), Some(dropped), true, &org, when));
                // The plain ref lives on with someone who changed their email since.
                let other = self.person();
                let when = at(self, 2);
                let holder = self.contact(
                    &other,
                    Some(other.email.clone()),
                    Some(plain),
                    true,
                    &org,
                    when,
                );
                self.reporters.push(holder);
            }
        }
        for m in &members[1..] {
            self.secondaries.push(m.clone());
        }
        self.group(kind, &p.email, members);
    }

    fn shaped_group(&mut self, shape: &GroupShape) {
        let p = self.person();
        let n = self.rev_orgs.len();
        let org = self.rev_orgs[self.rng.range(0, n - 1)].clone();
        let other_org = self.rev_orgs
            [(self.rev_orgs.iter().position(|o| *o == org).unwrap_or(0) + 1) % n]
            .clone();
        let t = self.instant(0, 300);
        let when = t;
        let mut members = vec![self.contact(&p, Some(p.email.clone()), None, true, &org, when)];
        let users = shape.size.saturating_sub(1);
        for k in 0..users {
            let e = self.email_variant(&p.email);
            let r = self.user_ref();
            let verified = k < users.saturating_sub(shape.unverified);
            let o = if k < shape.other_account {
                &other_org
            } else {
                &org
            };
            let when = t + chrono::Duration::seconds((k as i64 + 1) * 3_600);
            members.push(self.contact(&p, Some(e), Some(r), verified, o, when));
        }
        for m in &members[1..] {
            self.secondaries.push(m.clone());
        }
        self.group(GroupKind::Shaped, &p.email, members);
    }

    fn single(&mut self, i: usize) {
        let p = self.person();
        let org = self.rev_orgs[self.rng.range(0, self.rev_orgs.len() - 1)].clone();
        let when = self.instant(0, 400);
        let id = match i % 4 {
            0 => {
                let verified = self.rng.pct(50);
                self.contact(&p, Some(p.email.clone()), None, verified, &org, when)
            }
            1 => {
                let r = self.user_ref();
                self.contact(&p, Some(p.email.clone()), Some(r), true, &org, when)
            }
            2 => self.contact(
                &p,
                Some(p.email.clone()),
                Some(p.email.clone()),
                true,
                &org,
                when,
            ),
            _ => self.contact(&p, None, None, false, &org, when),
        };
        self.reporters.push(id);
    }

    fn group(&mut self, kind: GroupKind, email: &str, members: Vec<String>) {
        for m in &members {
            let others: Vec<String> = members.iter().filter(|o| *o != m).cloned().collect();
            self.partners.insert(m.clone(), others);
            self.reporters.push(m.clone());
        }
        self.seed.groups.push(SeedGroup {
            kind,
            email: email.trim().to_lowercase(),
            members,
        });
    }

    fn rev_summary(&self, id: &str) -> Value {
        self.seed
            .rev_users
            .iter()
            .find(|u| u["id"] == id)
            .map(user_summary)
            .unwrap_or_else(|| json!({"type": "rev_user", "id": id}))
    }

    fn make_tickets(&mut self) {
        let reporters = self.reporters.clone();
        let all: Vec<String> = self
            .seed
            .rev_users
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_string))
            .collect();
        for who in reporters {
            let n = self.rng.range(
                self.spec.tickets_per_contact.0,
                self.spec.tickets_per_contact.1,
            );
            for _ in 0..n {
                let mut ids = vec![who.clone()];
                if self.rng.pct(self.spec.shared_ticket_pct)
                    && let Some(ps) = self.partners.get(&who)
                {
                    ids.extend(ps.iter().cloned());
                }
                let extra = self
                    .rng
                    .range(self.spec.other_reporters.0, self.spec.other_reporters.1);
                for _ in 0..extra {
                    if all.is_empty() {
                        break;
                    }
                    let o = self.rng.pick(&all).clone();
                    if !ids.contains(&o) {
                        ids.push(o);
                    }
                }
                ids.truncate(25);
                // The contact is not always listed first on a shared email thread.
                let k = self.rng.range(0, ids.len() - 1);
                ids.swap(0, k);
                self.ticket(&ids);
            }
        }
    }

    fn artifact(&mut self, parent: &str, created: DateTime<Utc>) -> Value {
        let n = self.next_artifact;
        self.next_artifact += 1;
        let idx = self.seed.artifacts.len();
        let max = self.spec.attachment_size_max;
        // The first artifact is always empty and the second always large, so every world with
        // attachments exercises both edges.
        let size = match idx {
            0 => 0,
            1 => max,
            _ => match self.rng.range(0, 19) {
                0 => 0,
                1 => self.rng.range(max / 2, max),
                _ => self.rng.range(1, max.min(64 * 1024)),
            },
        };
        let (name, mime) = if size == 0 {
            FILES[5]
        } else {
            *self.rng.pick(&FILES[..5])
        };
        let id = self.don("core", &format!("artifact/{n}"));
        let created_s = self.ts_at(created);
        let by = self.dev_summary(0);
        let file = json!({"name": name, "type": mime, "size": size});
        self.seed.artifacts.push(json!({
            "id": id,
            "display_id": format!("artifact-{n}"),
            "file": file,
            "parent": parent,
            "created_by": by,
            "created_date": created_s,
            "modified_by": by,
            "modified_date": created_s,
        }));
        json!({"id": id, "display_id": format!("artifact-{n}"), "file": file})
    }

    fn ticket(&mut self, reporter_ids: &[String]) {
        let n = self.next_ticket;
        self.next_ticket += 1;
        let id = self.don("core", &format!("ticket/{n}"));
        let created = self.instant(300, 600);
        let modified = created + chrono::Duration::seconds(self.rng.range(60, 30 * 86_400) as i64);
        let reported_by: Vec<Value> = reporter_ids.iter().map(|r| self.rev_summary(r)).collect();
        let rev_org = reported_by
            .first()
            .and_then(|s| self.seed.rev_users.iter().find(|u| u["id"] == s["id"]))
            .map(|u| u["rev_org"].clone())
            .unwrap_or(Value::Null);
        let stage = *self.rng.pick(&[
            "queued",
            "work_in_progress",
            "awaiting_customer_response",
            "resolved",
        ]);
        let closed = stage == "resolved";
        let mut artifacts = Vec::new();
        if self.rng.pct(self.spec.attachments_pct) {
            for _ in 0..self.rng.range(1, 2) {
                let a = self.artifact(&id, created);
                artifacts.push(a);
            }
        }
        let owner = self.rng.range(0, 2);
        let created_s = self.ts_at(created);
        let modified_s = self.ts_at(modified);
        let title = *self.rng.pick(TITLES);
        let mut t = json!({
            "type": "ticket",
            "id": id,
            "display_id": format!("TKT-{n}"),
            "title": title,
            "body": format!("Hello,\n\n{title}. Thanks!"),
            "reported_by": reported_by,
            "owned_by": [self.dev_summary(owner)],
            "created_by": {"type": "service_account", "id": self.don("identity", "svcacc/2"),
                           "display_id": "SVCACC-2", "display_name": "Email Integration Bot"},
            "modified_by": self.dev_summary(owner),
            "created_date": created_s,
            "modified_date": modified_s,
            "rev_org": rev_org,
            "group": {"id": self.don("identity", "group/4"), "display_id": "group-4",
                      "name": "Support", "member_type": "dev_user"},
            "stage": {"name": stage, "notes": "", "ordinal": if closed { 6000 } else { 1000 },
                      "stage": {"id": self.don("core", "custom_stage/7"), "name": stage},
                      "state": {"id": self.don("core", "custom_state/2"),
                                "name": if closed { "closed" } else { "open" }, "is_final": closed}},
            "severity": *self.rng.pick(&["blocker", "high", "medium", "low"]),
            "needs_response": !closed,
            "channels": ["email"],
            "source_channel": "email",
            "applies_to_part": {"type": "product", "id": self.don("core", "product/1"),
                                "display_id": "PROD-1", "name": "Platform"},
            "artifacts": artifacts,
            "tags": [],
            "custom_fields": {},
            "stock_schema_fragment": self.don("core", "stock_sf/2"),
        });
        if closed {
            t["actual_close_date"] = json!(modified_s);
        }
        let participants: Vec<Value> = t["reported_by"].as_array().cloned().unwrap_or_default();
        self.timeline(&id, &format!("TKT-{n}"), "ticket", created, &participants);
        self.seed.tickets.push(t);
    }

    fn make_conversations(&mut self) {
        let secondaries = self.secondaries.clone();
        for s in secondaries {
            let k = self.rng.range(
                self.spec.conversations_per_secondary.0,
                self.spec.conversations_per_secondary.1,
            );
            for _ in 0..k {
                let n = self.next_conversation;
                self.next_conversation += 1;
                let id = self.don("core", &format!("conversation/{n}"));
                let mut members = vec![self.rev_summary(&s)];
                if self.rng.pct(30)
                    && let Some(p) = self.partners.get(&s).and_then(|p| p.first()).cloned()
                {
                    members.push(self.rev_summary(&p));
                }
                if self.rng.pct(50) {
                    let i = self.rng.range(0, 2);
                    members.push(self.dev_summary(i));
                }
                let created = self.instant(300, 600);
                let created_s = self.ts_at(created);
                let participants = members.clone();
                let owner = self.dev_summary(1);
                self.seed.conversations.push(json!({
                    "type": "conversation",
                    "id": id,
                    "display_id": format!("CONV-{n}"),
                    "title": "Chat with support",
                    "description": "",
                    "members": members,
                    "owned_by": [owner],
                    "stage": {"name": "resolved"},
                    "source_channel": "plug",
                    "channels": ["plug"],
                    "tags": [],
                    "metadata": {"url_context": "https://app.example.com/settings"},
                    "created_by": participants[0],
                    "created_date": created_s,
                    "modified_date": created_s,
                }));
                self.timeline(
                    &id,
                    &format!("CONV-{n}"),
                    "conversation",
                    created,
                    &participants,
                );
            }
        }
    }

    /// Comments (some private, some deleted, some with attachments) interleaved with change
    /// events, in `created_date` order.
    fn timeline(
        &mut self,
        object: &str,
        display: &str,
        object_type: &str,
        start: DateTime<Utc>,
        participants: &[Value],
    ) {
        let n = self
            .rng
            .range(self.spec.timeline_entries.0, self.spec.timeline_entries.1);
        let mut at = start;
        let mut entries = Vec::new();
        for _ in 0..n {
            at += chrono::Duration::seconds(self.rng.range(30, 3 * 86_400) as i64)
                + chrono::Duration::nanoseconds((self.rng.next_u64() % 1_000_000_000) as i64);
            let when = self.ts_at(at);
            let cid = self.rng.lower_alnum(13);
            if self.rng.pct(30) {
                let i = self.rng.range(0, 2);
                let by = self.dev_summary(i);
                let (old, new) = *self.rng.pick(&[
                    ("queued", "work_in_progress"),
                    ("work_in_progress", "awaiting_customer_response"),
                    ("awaiting_customer_response", "resolved"),
                ]);
                entries.push(json!({
                    "type": "timeline_change_event",
                    "id": format!("{object}:change_event/{cid}"),
                    "object": object,
                    "object_display_id": display,
                    "object_type": object_type,
                    "created_by": by,
                    "created_date": when,
                    "modified_date": when,
                    "visibility": "internal",
                    "event": {"type": "update",
                              "update": {"stage": {"old": {"name": old}, "new": {"name": new}}}},
                }));
                continue;
            }
            let by = if !participants.is_empty() && self.rng.pct(60) {
                participants[self.rng.range(0, participants.len() - 1)].clone()
            } else {
                let i = self.rng.range(0, 2);
                self.dev_summary(i)
            };
            let by_dev = by["type"] == "dev_user";
            let visibility = if by_dev && self.rng.pct(20) {
                "private"
            } else if by_dev && self.rng.pct(20) {
                "internal"
            } else {
                "external"
            };
            let mut c = json!({
                "type": "timeline_comment",
                "id": format!("{object}:comment/{cid}"),
                "object": object,
                "object_display_id": display,
                "object_type": object_type,
                "body_type": "text",
                "created_by": by,
                "created_date": when,
                "modified_by": by,
                "modified_date": when,
                "visibility": visibility,
                "references": [],
            });
            if visibility == "private" {
                c["private_to"] = json!([by]);
            }
            if self.rng.pct(10) {
                // Deleted: the entry stays, its body is gone.
            } else {
                c["body"] = json!(format!("Comment {cid}: any update on this?"));
                if self.rng.pct(self.spec.attachments_pct) {
                    let mut a = self.artifact(object, at);
                    if self.rng.pct(30) {
                        // Embedded summaries may omit `file`; `artifacts.get` has it.
                        if let Some(o) = a.as_object_mut() {
                            o.remove("file");
                        }
                    }
                    c["artifacts"] = json!([a]);
                }
            }
            entries.push(c);
        }
        self.seed.timelines.insert(object.to_string(), entries);
    }
}

/// The `rev_user` summary embedded in `reported_by`, `members`, `created_by`, ….
pub fn user_summary(u: &Value) -> Value {
    let mut s = serde_json::Map::new();
    s.insert("type".into(), json!("rev_user"));
    for k in [
        "id",
        "display_id",
        "display_name",
        "email",
        "full_name",
        "state",
        "external_ref",
        "rev_org",
    ] {
        if let Some(v) = u.get(k)
            && !v.is_null()
        {
            s.insert(k.into(), v.clone());
        }
    }
    Value::Object(s)
}
