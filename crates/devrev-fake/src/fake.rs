//! The fake DevRev server's public face: start and stop it, configure its behaviour (merges,
//! rate limits, faults), read or change its world, and read the request log.
//!
//! It runs on 127.0.0.1 on its own thread with its own tokio runtime, so tests are plain
//! `#[test]` functions. Dropping the `FakeServer` stops it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::handlers;
use crate::seed::{self, GenSpec, Rng, Seed, summary_ids};

/// The token the fake accepts unless told otherwise.
pub const DEFAULT_TOKEN: &str = "fake-devrev-token";

/// A fault the fake can inject instead of (or around) a normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `500 {"type":"internal_error","reference_id":...}`; nothing applied.
    Status500,
    /// `503 {"type":"service_unavailable"}`; nothing applied.
    Status503,
    /// A 429 that the rate limit did not cause, with this `Retry-After`; nothing applied.
    Spurious429 { retry_after_s: u64 },
    /// A 429 with a spec-valid but odd wait: this `Retry-After` header (the spec types it a
    /// `number`: `0.5`, `-2`) and this body `retry_after` (`int64`: `-3`); nothing applied.
    OddWait { header: String, body: Value },
    /// Close the connection without an answer; nothing applied.
    Drop,
    /// Answer normally, but only after this delay (the work is done after the delay too).
    Slow(Duration),
    /// Apply the request (a write takes effect), then close the connection without answering.
    ApplyThenDrop,
    /// `404 {"message":"route not found"}` without a `type`, as a misrouting proxy answers;
    /// nothing applied.
    TypelessNotFound,
    /// `301` with this `Location` header and an empty body; nothing applied.
    Moved { location: String },
    /// `401 {"type":"unauthenticated"}` for this request only (a token revoked mid-run).
    Unauthenticated,
    /// `403 {"type":"forbidden"}` for this request only (a permission missing for one call).
    Forbidden,
    /// `400 {"type":"invalid_field","field_name":field}` for this request only; nothing
    /// applied (a field DevRev refuses for a reason the fake does not model).
    InvalidField { field: String },
}

/// Inject `fault` on the `nth` (1-based) request whose path matches `path` (`None` = any
/// request); `nth == 0` injects it on every matching request. Paths look like `/rev-users.merge` (the leading `/` is optional); a path ending in
/// `/` matches by prefix (`/download/`). Counting starts when the server starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedFault {
    pub path: Option<String>,
    pub nth: usize,
    pub fault: Fault,
}

/// Seeded random faults: each request (API call or download) gets, with `probability`, one of
/// `kinds` chosen uniformly.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFaults {
    pub seed: u64,
    pub probability: f64,
    pub kinds: Vec<Fault>,
}

/// A fixed-window rate limit per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
}

/// The limit used when `FakeOptions::rate_limit` is `None`.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    limit: 10_000,
    window: Duration::from_secs(300),
};

/// Which of the secondary's tickets and conversations a merge moves to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveMode {
    /// Every `reported_by` and `members` entry, and comment authorship.
    All,
    /// Every other affected ticket/conversation (in id order, tickets first) is NOT moved: the
    /// 1st, 3rd, ... stay with the secondary. Comment authorship is not moved.
    Partial,
    /// Nothing moves.
    Nothing,
}

/// What `rev-users.get(secondary)` shows once a merge has applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondaryAfter {
    /// 404: the contact is gone (kept in `State::deleted_rev_users`).
    Gone,
    /// Still there with `state: "deactivated"`.
    Deactivated,
    /// Still active, with `primary_identity` set to the primary's summary.
    PrimaryIdentity,
    /// Still there; `external_ref` rewritten to `<old>-drop-<secondary DON>`.
    DropRef,
    /// Gone from listings, but `rev-users.get` of its id answers the primary's record (with
    /// the primary's `id`), as an API that resolves a merged-away id to its survivor may.
    AnswersPrimary,
    /// One of the four above per secondary, picked by a hash of its id (so the same world
    /// always ends the same way): a random mix of what becomes of merged-away contacts.
    Mixed,
}

impl SecondaryAfter {
    /// What becomes of this secondary: [`SecondaryAfter::Mixed`] resolved by its id.
    pub fn for_secondary(&self, id: &str) -> SecondaryAfter {
        match self {
            SecondaryAfter::Mixed => match crate::seed::fnv1a(id.as_bytes()) % 4 {
                0 => SecondaryAfter::Gone,
                1 => SecondaryAfter::Deactivated,
                2 => SecondaryAfter::PrimaryIdentity,
                _ => SecondaryAfter::DropRef,
            },
            other => *other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MergeBehaviour {
    /// The merge answers `200 {}` at once and applies after this delay.
    pub delay: Duration,
    pub moves: MoveMode,
    pub secondary_after: SecondaryAfter,
    /// The secondary's `external_ref` stays taken (409 on `rev-users.update` of another user)
    /// this long after the merge applies.
    pub ref_release_delay: Duration,
    /// The merge copies the secondary's `display_name` onto the primary.
    pub renames_primary: bool,
    /// `(secondary, into)`: when a `rev-users.merge` request for `secondary` arrives, someone
    /// else has just merged it into the contact `into` (in the DevRev UI, say), applied as
    /// any merge is, before the request is handled. Once per secondary.
    pub side_merges: Vec<(String, String)>,
    /// The merge loses the secondary's own data (on by default, as DevRev's account-merge
    /// documentation says, devrev-api.md §4.5): its phone numbers, custom fields and tags
    /// vanish with it and the primary gets none of them. Off: the merge copies onto the
    /// primary the phone numbers and custom fields it lacks (the other reading no public
    /// source rules out).
    pub lossy: bool,
}

impl Default for MergeBehaviour {
    fn default() -> Self {
        MergeBehaviour {
            delay: Duration::from_millis(50),
            moves: MoveMode::All,
            secondary_after: SecondaryAfter::Gone,
            ref_release_delay: Duration::ZERO,
            renames_primary: false,
            side_merges: Vec::new(),
            lossy: true,
        }
    }
}

/// Everything that shapes the fake's behaviour. Change it while running with
/// `FakeServer::set_options`.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    pub token: String,
    pub seed: Seed,
    /// `None` = 10 000 per 300 s.
    pub rate_limit: Option<RateLimit>,
    pub merge: MergeBehaviour,
    pub faults: Vec<ScriptedFault>,
    pub random_faults: Option<RandomFaults>,
    /// `artifacts.locate` URLs expire after this (403 afterwards).
    pub url_ttl: Duration,
    /// Every authorized API call answers `403 forbidden`.
    pub forbidden: bool,
    /// Largest page; a bigger `limit` is clamped. The default page is 50.
    pub max_page: usize,
    /// `auth-tokens.info` reports the token expiring this far in the future.
    pub token_expires_in: Duration,
    /// Transport-level misbehaviour a hostile or buggy server shows (off by default).
    pub hostile: Hostile,
    /// Behaviours no public source rules out (devrev-api.md §7), each off by default.
    pub quirks: Quirks,
}

/// How an answer's body is sent when [`Hostile::body`] names its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyQuirk {
    /// `200`, then JSON-looking bytes that never end.
    Endless,
    /// The normal answer, one byte every this long (a per-read timeout never fires).
    Trickle(Duration),
}

/// Server bugs and hostile answers the client must survive without looping, hanging or filling
/// the disk. Each is off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hostile {
    /// Every list answer carries the same `next_cursor`, whatever cursor was sent (a
    /// validating mock of DevRev's spec does this).
    pub repeat_cursor: bool,
    /// Every list answer carries a new `next_cursor`, also past the end (where its pages are
    /// empty): a listing that only stops at a missing cursor never ends.
    pub endless_cursor: bool,
    /// List answers leave out their list key (`works`, `rev_users`, ...).
    pub omit_list_key: bool,
    /// Answers to this path (pattern as in [`ScriptedFault`]) are sent with this quirk.
    pub body: Option<(String, BodyQuirk)>,
    /// Downloads stream this many bytes more than the artifact's declared `file.size`.
    pub download_extra_bytes: u64,
    /// Every API error answer (status 400 and up) echoes the request's `Authorization` header
    /// in its `message` (as sent, e.g. `Bearer <token>`) and the bare token in its `detail`,
    /// as a proxy or a misconfigured gateway does.
    pub echo_auth: bool,
}

/// Behaviours of DevRev that no public source rules out, each a switch (off by default), so
/// the client is proven safe under them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quirks {
    /// `rev-users.get` of an unmerged contact carries `primary_identity` naming itself.
    pub self_identity: bool,
    /// `reported_by` / `members` are stored and answered in another order than set (they are
    /// sets), with `extra_member` added when set.
    pub reorder_sets: bool,
    /// A user DevRev adds to every `reported_by` / `members` it stores (with `reorder_sets`).
    pub extra_member: Option<String>,
    /// A merged-away secondary keeps its `external_ref` (409 for anyone else) until its own
    /// ref is changed.
    pub merged_keeps_ref: bool,
    /// `rev-users.update` of a merged-away secondary answers `400 bad_request`.
    pub refuse_merged_update: bool,
    /// `rev-users.merge` of two contacts in different accounts (`rev_org`) answers `400
    /// bad_request` (devrev-api.md §8 q4 leaves open whether DevRev checks it; off: it merges
    /// them, as the spec alone suggests).
    pub refuse_cross_account_merge: bool,
    /// A refused value's 400 names no `field_name` (which DevRev's answers name is not
    /// documented): the client must find the bad value without being told.
    pub unnamed_field_errors: bool,
    /// The org has no beta API: `X-Devrev-Scope: beta` is ignored, so beta-only fields
    /// (`tags` on `rev-users.update`) are unknown fields (400 `invalid_field`).
    pub no_beta: bool,
    /// Rev users are answered by the public schema outside the beta scope: `is_verified`,
    /// `custom_fields`, `tags` and the other beta-only fields (`BETA_REV_USER_FIELDS`) are left
    /// out of every `rev-users.*` answer without `X-Devrev-Scope: beta`, and
    /// `rev-users.create` refuses `custom_fields` / `tags` there (400 `invalid_field`), as the
    /// public OpenAPI file has them. With `no_beta` too, no answer ever carries them.
    pub public_shape: bool,
    /// `(asked, answered)`: `rev-users.get` of `asked` answers the record of `answered` (its
    /// own `id`), as a cache or an id resolver in front of DevRev might; `rev-users.list`
    /// answers `answered`'s record in `asked`'s place.
    pub get_answers: Vec<(String, String)>,
    /// Every artifact's `file.size` is answered as this spec-valid `int32` (e.g. `-1`) in
    /// tickets, timeline entries and `artifacts.get`.
    pub file_size: Option<i64>,
    /// `artifacts.locate` answers this `url` (a string the spec allows, not necessarily a URL).
    pub locate_url: Option<String>,
    /// `rev-users.list` ignores its `email` / `external_ref` filters and answers every contact
    /// (a proxy or an API version that does not know them): a client reading contacts in
    /// batches must notice rather than take a stranger for the contact it asked about.
    pub list_ignores_filters: bool,
    /// `rev-users.list` answers every merged-away secondary as it was before its merge, for
    /// good (a search index behind DevRev's own records); `rev-users.get` shows the merge. A
    /// client judging merges from lists alone would never see one applied.
    pub list_lags_merges: bool,
    /// Contacts `rev-users.list` never answers, while `rev-users.get` does (a search index
    /// that lags behind new contacts, or leaves a kind of contact out). A client that takes
    /// "not in the list" for "merged" would see these merged before DevRev applied anything.
    pub list_hides: Vec<String>,
    /// `rev-users.list` answers each contact as it was before its last `rev-users.update`
    /// (an index one write behind DevRev's records); `rev-users.get` answers it as it is. A
    /// client that writes a contact's lists whole from a list's record would write back what
    /// the previous write replaced.
    pub list_lags_updates: bool,
}

/// The rev-user fields only DevRev's beta OpenAPI file declares (`rev-user` in
/// `openapi-beta.yaml` less the public one).
pub const BETA_REV_USER_FIELDS: [&str; 8] = [
    "artifacts",
    "custom_fields",
    "custom_schema_fragments",
    "external_refs",
    "is_verified",
    "stock_schema_fragment",
    "subtype",
    "tags",
];

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            token: DEFAULT_TOKEN.to_string(),
            seed: Seed::generate(&GenSpec::default()),
            rate_limit: None,
            merge: MergeBehaviour::default(),
            faults: Vec::new(),
            random_faults: None,
            url_ttl: Duration::from_secs(60),
            forbidden: false,
            max_page: 100,
            token_expires_in: Duration::from_secs(90 * 86_400),
            hostile: Hostile::default(),
            quirks: Quirks::default(),
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// 1-based arrival order over every request.
    pub seq: usize,
    /// Arrival time since the server started.
    pub at: Duration,
    pub method: String,
    /// `/rev-users.merge`, `/download/<token>`, ...
    pub path: String,
    /// The JSON body (for GET: the query turned into the equivalent body; downloads: `null`).
    pub body: Value,
    /// The status answered; 0 when the connection was dropped without an answer (or the
    /// answer is still being prepared).
    pub status: u16,
    /// The request carried the accepted token.
    pub authorized: bool,
    pub had_auth_header: bool,
    /// The request carried `X-Devrev-Scope: beta` (whatever `Quirks::no_beta` makes of it):
    /// which of DevRev's two OpenAPI files its body must follow.
    pub beta_scope: bool,
    pub fault: Option<Fault>,
}

/// A contact as stored (and served).
#[derive(Debug, Clone, PartialEq)]
pub struct RevUserRec {
    pub json: Value,
}

impl RevUserRec {
    pub fn id(&self) -> String {
        self.str_field("id").unwrap_or_default()
    }
    pub fn display_id(&self) -> Option<String> {
        self.str_field("display_id")
    }
    pub fn email(&self) -> Option<String> {
        self.str_field("email")
    }
    pub fn external_ref(&self) -> Option<String> {
        self.str_field("external_ref")
    }
    /// `active` when the field is missing.
    pub fn state(&self) -> String {
        self.str_field("state").unwrap_or_else(|| "active".into())
    }
    pub fn is_verified(&self) -> bool {
        self.json["is_verified"].as_bool().unwrap_or(false)
    }
    fn str_field(&self, k: &str) -> Option<String> {
        self.json[k].as_str().map(str::to_string)
    }
}

/// A ticket as stored. Served with `reported_by` summaries refreshed from the live contacts.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketRec {
    pub json: Value,
}

impl TicketRec {
    pub fn reported_by_ids(&self) -> Vec<String> {
        summary_ids(&self.json["reported_by"])
    }
    pub fn display_id(&self) -> String {
        self.json["display_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRec {
    pub json: Value,
}

impl ConversationRec {
    pub fn member_ids(&self) -> Vec<String> {
        summary_ids(&self.json["members"])
    }
}

/// An attachment: the `artifacts.get` object and its bytes (`bytes.len() == file.size`).
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRec {
    pub json: Value,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MergeRecord {
    pub primary: String,
    pub secondary: String,
    /// `seq` of the `rev-users.merge` request.
    pub requested_seq: usize,
    pub applied: bool,
    /// When the merge is (or was) due to apply.
    pub due: Instant,
    pub applied_at: Option<Instant>,
    /// The secondary's `external_ref` when the merge was requested.
    pub secondary_ref: Option<String>,
}

/// A pre-signed download link handed out by `artifacts.locate`.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadGrant {
    pub artifact: String,
    pub expires: Instant,
}

/// The fake's world. Maps are keyed by DON.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub org: String,
    pub dev_users: Vec<Value>,
    pub rev_users: BTreeMap<String, RevUserRec>,
    pub works: BTreeMap<String, TicketRec>,
    pub conversations: BTreeMap<String, ConversationRec>,
    pub artifacts: BTreeMap<String, ArtifactRec>,
    /// Timeline entries keyed by the DON of their object.
    pub timelines: BTreeMap<String, Vec<Value>>,
    pub merges: Vec<MergeRecord>,
    /// Secondaries removed by a merge (`SecondaryAfter::Gone`).
    pub deleted_rev_users: BTreeMap<String, RevUserRec>,
    /// Download links by token.
    pub downloads: BTreeMap<String, DownloadGrant>,
    /// Secondaries a [`MergeBehaviour::side_merges`] entry has merged already.
    pub side_merged: Vec<String>,
    /// Merged-away ids whose `rev-users.get` answers their primary
    /// ([`SecondaryAfter::AnswersPrimary`]): secondary → primary.
    pub answered_by: BTreeMap<String, String>,
    /// Secondaries as they were before their merge, answered by `rev-users.list` under
    /// [`Quirks::list_lags_merges`].
    pub listed_before_merge: BTreeMap<String, Value>,
    /// Contacts as they were before their last update, answered by `rev-users.list` under
    /// [`Quirks::list_lags_updates`].
    pub listed_before_update: BTreeMap<String, Value>,
}

fn key_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

impl State {
    pub fn from_seed(seed: &Seed) -> State {
        let mut s = State {
            org: seed.org.clone(),
            dev_users: seed.dev_users.clone(),
            ..State::default()
        };
        for u in &seed.rev_users {
            s.rev_users
                .insert(key_of(u), RevUserRec { json: u.clone() });
        }
        for t in &seed.tickets {
            s.works.insert(key_of(t), TicketRec { json: t.clone() });
        }
        for c in &seed.conversations {
            s.conversations
                .insert(key_of(c), ConversationRec { json: c.clone() });
        }
        for a in &seed.artifacts {
            let id = key_of(a);
            let size = a["file"]["size"].as_u64().unwrap_or(0) as usize;
            let bytes = seed::artifact_bytes(&id, size);
            s.artifacts.insert(
                id,
                ArtifactRec {
                    json: a.clone(),
                    bytes,
                },
            );
        }
        s.timelines = seed.timelines.clone();
        s
    }

    /// The contacts export of the current contacts (see `seed::contacts_csv`).
    pub fn contacts_csv(&self) -> String {
        seed::contacts_csv(
            self.rev_users.values().map(|u| &u.json),
            self.works.values().map(|t| &t.json),
        )
    }

    /// A live contact by DON or `REVU-` display id.
    pub fn rev_user(&self, id: &str) -> Option<&RevUserRec> {
        self.rev_users
            .get(id)
            .or_else(|| self.rev_users.values().find(|u| u.json["display_id"] == id))
    }

    /// Tickets whose `reported_by` lists `user`.
    pub fn tickets_reported_by(&self, user: &str) -> Vec<&TicketRec> {
        self.works
            .values()
            .filter(|t| t.reported_by_ids().iter().any(|i| i == user))
            .collect()
    }

    /// Conversations whose `members` list `user`.
    pub fn conversations_with(&self, user: &str) -> Vec<&ConversationRec> {
        self.conversations
            .values()
            .filter(|c| c.member_ids().iter().any(|i| i == user))
            .collect()
    }

    /// Whether `value` is taken as an `external_ref` by someone other than `target`: held by a
    /// live contact, or by a merged secondary whose ref is not released yet.
    pub fn ref_taken(
        &self,
        value: &str,
        target: &str,
        now: Instant,
        release: Duration,
        kept: bool,
    ) -> bool {
        let released = |id: &str| {
            !kept
                && self.merges.iter().any(|m| {
                    m.secondary == id && m.applied_at.is_some_and(|at| at + release <= now)
                })
        };
        let live = self.rev_users.values().any(|u| {
            u.external_ref().as_deref() == Some(value) && u.id() != target && !released(&u.id())
        });
        let pending_release = !kept
            && self.merges.iter().any(|m| {
                m.secondary != target
                    && m.secondary_ref.as_deref() == Some(value)
                    && m.applied_at.is_some_and(|at| at + release > now)
            });
        live || pending_release
    }
}

/// Per-token fixed window.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub start: Instant,
    pub count: u32,
}

/// Everything behind the one lock.
pub(crate) struct Inner {
    pub state: State,
    pub opts: FakeOptions,
    pub log: Vec<RequestRecord>,
    pub buckets: HashMap<String, Bucket>,
    pub random: Option<(u64, Rng)>,
}

pub(crate) type TripWire = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub trip_wires: Mutex<Vec<(usize, TripWire)>>,
    pub started: Instant,
    /// The same moment on the wall clock (to set a request's arrival beside a time the
    /// binary wrote in its report).
    pub started_wall: std::time::SystemTime,
    pub base_url: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts on 127.0.0.1 with an OS-chosen port. Panics if it cannot (tests only).
    pub fn start(opts: FakeOptions) -> FakeServer {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        match Self::start_at(addr, opts) {
            Ok(f) => f,
            Err(e) => panic!("the fake DevRev server could not start: {e}"),
        }
    }

    /// Starts on a chosen address (the example uses this for `--port`).
    pub fn start_at(addr: SocketAddr, opts: FakeOptions) -> std::io::Result<FakeServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let token = opts.token.clone();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state: State::from_seed(&opts.seed),
                opts,
                log: Vec::new(),
                buckets: HashMap::new(),
                random: None,
            }),
            trip_wires: Mutex::new(Vec::new()),
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            base_url: format!("http://{addr}"),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-devrev".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => panic!("fake DevRev runtime: {e}"),
                };
                rt.block_on(crate::http::serve(listener, for_thread, rx));
            })?;
        Ok(FakeServer {
            shared,
            addr,
            token,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The accepted token (as started; `set_options` may change what is accepted).
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// The current contacts as the real CSV export.
    pub fn contacts_csv(&self) -> String {
        self.shared.lock().state.contacts_csv()
    }

    /// Every request so far, in arrival order.
    /// When request `r` arrived, on the wall clock.
    pub fn wall_time(&self, r: &RequestRecord) -> std::time::SystemTime {
        self.shared.started_wall + r.at
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// Requests so far to `path` (`/works.list` or `works.list`; a trailing `/` = prefix).
    pub fn count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| path_matches(path, &r.path))
            .count()
    }

    /// Reads or changes the world directly.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.shared.lock().state)
    }

    /// Runs `f` once, when the `n`-th request (1-based, counting every request) arrives,
    /// before it is handled. Runs on the server's thread: keep it short.
    pub fn on_request(&self, n: usize, f: Box<dyn FnOnce() + Send + 'static>) {
        self.shared
            .trip_wires
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((n, f));
    }

    /// Changes behaviour while running.
    pub fn set_options(&self, f: impl FnOnce(&mut FakeOptions)) {
        f(&mut self.shared.lock().opts);
    }

    /// Adds a scripted fault on the `nth` request from now on (1 = the next one) matching
    /// `path` (`None` = any request).
    pub fn fault_next(&self, path: Option<&str>, nth: usize, fault: Fault) {
        let mut inner = self.shared.lock();
        let seen = inner
            .log
            .iter()
            .filter(|r| path.is_none_or(|p| path_matches(p, &r.path)))
            .count();
        inner.opts.faults.push(ScriptedFault {
            path: path.map(str::to_string),
            nth: seen + nth,
            fault,
        });
    }

    /// Polls the state (applying due merges) until `pred` holds or `timeout` passes.
    pub fn wait_for(&self, pred: impl Fn(&State) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut inner = self.shared.lock();
                let Inner { state, opts, .. } = &mut *inner;
                handlers::apply_due(state, opts, Instant::now(), false);
                if pred(state) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Someone else merges `secondary` into `into` now (as from the DevRev UI): applied at
    /// once, with the merge behaviour in force. Returns false when either is unknown.
    pub fn merge_from_the_side(&self, into: &str, secondary: &str) -> bool {
        let mut inner = self.shared.lock();
        let Inner { state, opts, .. } = &mut *inner;
        handlers::side_merge(state, opts, into, secondary, Instant::now())
    }

    /// Applies every scheduled merge now, ignoring the delay.
    pub fn apply_pending_merges(&self) {
        let mut inner = self.shared.lock();
        let Inner { state, opts, .. } = &mut *inner;
        handlers::apply_due(state, opts, Instant::now(), true);
    }

    /// Merges requested but not applied yet.
    pub fn pending_merges(&self) -> usize {
        self.shared
            .lock()
            .state
            .merges
            .iter()
            .filter(|m| !m.applied)
            .count()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `pattern` matches `path`: equal after adding a leading `/`, or a prefix when it ends in `/`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let p = if pattern.starts_with('/') {
        pattern.to_string()
    } else {
        format!("/{pattern}")
    };
    if p.ends_with('/') {
        path.starts_with(&p)
    } else {
        path == p
    }
}
