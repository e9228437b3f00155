//! Contacts read many at a time: one `rev-users.list` filtered by the `external_ref`s of the
//! next pairs' contacts reads what would otherwise take one `rev-users.get` each (issue 29).
//!
//! What a batched read may stand in for, and what it may not:
//!
//! - **Only a contact it answered, by its own id.** A contact the list leaves out (gone,
//!   merged, its ref changed since the export, a ref DevRev rewrote to `-drop-`) is read with
//!   `rev-users.get` as before, so every 404, redirect and "answered as another contact" is
//!   judged exactly as it was.
//! - **Once.** A record is handed to the first check that asks and then forgotten: a contact
//!   the run may write afterwards (a group's survivor, a primary whose ref is adopted) is read
//!   again by the next check. A contact handed out once is never put in a later batch either,
//!   since that batch could be read before this run's own writes to it land.
//! - **While fresh.** A record older than the run's `FRESH_FOR` (90 s: the freshness window the
//!   run already grants a prepared backup) is not used; its contact may be batched again.
//! - **Only from a server that filters.** A list answering any contact whose `external_ref`
//!   was not asked for ignores the filter: batching is turned off for the rest of the run
//!   (one warning) and every contact is read with `rev-users.get`. An answer that is no
//!   list at all (any error the run survives) also falls back, for that window.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use super::gather::Gathering;
use crate::detect::{Contact, Pair};
use crate::devrev::types::RevUser;
use crate::devrev::{ApiError, DevRevClient};

/// Contacts asked for in one `rev-users.list`: ten pairs, well inside one page of 100 and
/// about what the run gets through within the freshness window at DevRev's 45 calls a minute.
pub const WINDOW: usize = 20;

/// A contact the run will check, in the order the checks come.
#[derive(Debug, Clone)]
struct Planned {
    id: String,
    external_ref: String,
}

#[derive(Default)]
struct State {
    /// Read by a batch and not handed out yet: id → (record, when read).
    read: HashMap<String, (RevUser, Instant)>,
    /// Asked for in a batch (answered or not), with when: not asked again while that is fresh.
    asked: HashMap<String, Instant>,
    /// Handed out once: never batched again (see the module doc).
    handed: HashSet<String>,
    /// Why batching is off for the rest of the run.
    off: Option<String>,
    /// Batched `rev-users.list` calls made and contacts they stood in for (for the log).
    lists: usize,
    served: usize,
    /// Survivors read after their merge by a gathered list: id → (record, when read).
    survivors: HashMap<String, (RevUser, Instant)>,
    /// Survivors whose read after the merge is still to come: id → `external_ref`.
    expected: HashMap<String, String>,
    /// A survivor read waiting for its turn (or under way), which others join.
    gathering: Option<Gathering<String>>,
    /// Contacts a list answered in this process: id (and display id) → the exact
    /// `external_ref` it was listed under. A look counts a secondary's absence only under a
    /// ref a list was seen to answer it by: a list that leaves some contacts out (an index
    /// that lags behind new contacts, or hides a kind of contact) never showed it, so its
    /// absence from that list proves nothing.
    listed: HashMap<String, String>,
    /// Contacts this run wrote: id → what DevRev answered the last write with (`None`: the
    /// answer was lost or an error). A list may be served by an index behind DevRev's
    /// records (devrev-api.md leaves it open), so after a write a list's record of the
    /// contact stands in for a read only if it holds what that answer holds in every field
    /// this run writes: a record from before the write would have the carry-over write the
    /// lists it writes whole (phone numbers, `custom_fields`, `tags`) without what another
    /// pair of the group carried. (Not `modified_date`: DevRev prints it with varying
    /// precision, so an older stamp can read as newer.)
    written: HashMap<String, Option<RevUser>>,
}

impl State {
    /// `answered` came back for a filter by `external_ref` that does not name it: the server
    /// ignores the filter, so batching is off for the rest of the run (one warning).
    fn filter_ignored(&mut self, answered: &RevUser) {
        self.turn_off(format!(
            "rev-users.list answered {} (external_ref {:?}) to a filter that does not name it: \
             it ignores the filter, so every contact is read one by one",
            answered.display_id.as_deref().unwrap_or(&answered.id),
            answered.external_ref.as_deref().unwrap_or("")
        ));
    }

    /// Whether a list's record `u` of contact `id` holds what this run's last write to it
    /// left (see `written`).
    fn current(&self, id: &str, u: &RevUser) -> bool {
        match self.written.get(id) {
            None => true,
            Some(None) => false,
            Some(Some(after)) => {
                after.external_ref == u.external_ref
                    && after.display_name == u.display_name
                    && WRITTEN_LISTS
                        .iter()
                        .all(|k| after.extra.get(*k) == u.extra.get(*k))
            }
        }
    }

    /// `u` was answered by a list under its `external_ref`.
    fn note_listed(&mut self, u: &RevUser) {
        if let Some(r) = u.external_ref.as_deref() {
            for k in [Some(u.id.as_str()), u.display_id.as_deref()]
                .into_iter()
                .flatten()
            {
                self.listed.insert(k.to_string(), r.to_string());
            }
        }
    }

    /// Batching is off for the rest of the run, for `why` (one warning).
    fn turn_off(&mut self, why: String) {
        tracing::warn!("{why}");
        self.off = Some(why);
    }
}

/// The fields of a contact this run writes besides `external_ref` and `display_name`: a
/// list's record after a write must hold what the write's answer holds in each.
const WRITTEN_LISTS: [&str; 3] = ["phone_numbers", "custom_fields", "tags"];

/// What one [`ContactReads::look`] answered.
#[derive(Debug)]
pub struct Look {
    /// The secondary as listed under the ref it had, by its own id; `None`: no longer
    /// listed under it while the survivor was (DevRev removed it, or rewrote its ref).
    pub secondary: Option<RevUser>,
    /// The survivor, when the answer carries the lists a carry-over writes whole.
    pub survivor: Option<RevUser>,
    /// When the look was asked (what it says may be from then).
    pub at: Instant,
}

/// How long a survivor's record read after its merge (by a look or a gathered list) stands
/// in for the read right before the carry-over's write, which writes `custom_fields` and
/// `tags` whole and so must start from what DevRev holds now. Seconds cover a Reconcile with
/// nothing or little to repair; after a longer one the survivor is read again.
pub const SURVIVOR_FRESH: Duration = Duration::from_secs(20);

/// The run's batched contact reads. `Sync`: the preview's live check asks from several tasks.
pub struct ContactReads {
    order: Vec<Planned>,
    at: HashMap<String, usize>,
    fresh_for: Duration,
    state: Mutex<State>,
}

impl ContactReads {
    /// Batches for `pairs`, in the order their checks will come (primary, then secondary).
    pub fn new<'a>(pairs: impl IntoIterator<Item = &'a Pair>, fresh_for: Duration) -> Self {
        Self::of_contacts(
            pairs.into_iter().flat_map(|p| [&p.primary, &p.secondary]),
            fresh_for,
        )
    }

    /// Batches for `contacts`, in the order they will be asked for.
    pub fn of_contacts<'a>(
        contacts: impl IntoIterator<Item = &'a Contact>,
        fresh_for: Duration,
    ) -> Self {
        let mut order = Vec::new();
        let mut at = HashMap::new();
        for c in contacts {
            if c.external_ref.trim().is_empty() || at.contains_key(&c.rev_user_id) {
                continue;
            }
            at.insert(c.rev_user_id.clone(), order.len());
            order.push(Planned {
                id: c.rev_user_id.clone(),
                external_ref: c.external_ref.trim().to_string(),
            });
        }
        Self {
            order,
            at,
            fresh_for,
            state: Mutex::new(State::default()),
        }
    }

    /// How many `rev-users.list` calls stood in for how many `rev-users.get`s.
    pub async fn figures(&self) -> (usize, usize) {
        let s = self.state.lock().await;
        (s.lists, s.served)
    }

    /// Contact `id` from a fresh batched read, else one `rev-users.get` (which keeps its
    /// errors: 404, redirects, another contact's record).
    pub async fn get(&self, client: &DevRevClient, id: &str) -> Result<RevUser, ApiError> {
        match self.take(client, id).await? {
            Some(u) => Ok(u),
            None => client.rev_users_get(id).await,
        }
    }

    /// Contact `id` as a fresh batched read answered it, reading the window that starts at
    /// it first if need be. `None`: read it with `rev-users.get` (not planned, left out of
    /// the list, batching off). `Err` only for a run-wide failure (the run stops as it would
    /// on the `rev-users.get`).
    pub async fn take(&self, client: &DevRevClient, id: &str) -> Result<Option<RevUser>, ApiError> {
        let Some(&start) = self.at.get(id) else {
            return Ok(None);
        };
        let mut s = self.state.lock().await;
        let fresh = |t: &Instant| t.elapsed() < self.fresh_for;
        if let Some((u, t)) = s.read.remove(id)
            && fresh(&t)
        {
            s.handed.insert(id.to_string());
            s.served += 1;
            return Ok(Some(u));
        }
        let stale_ask = s.asked.get(id).is_none_or(|t| !fresh(t));
        if s.off.is_some() || s.handed.contains(id) || !stale_ask {
            s.handed.insert(id.to_string());
            return Ok(None);
        }
        let window = self.window(&s, start, WINDOW);
        let refs: Vec<&str> = window.iter().map(|c| c.external_ref.as_str()).collect();
        let now = Instant::now();
        for c in &window {
            s.asked.insert(c.id.clone(), now);
        }
        s.lists += 1;
        match client.rev_users_list(json!({ "external_ref": refs })).await {
            Ok(users) => {
                if let Some(odd) = users
                    .iter()
                    .find(|u| u.external_ref.as_deref().is_none_or(|r| !refs.contains(&r)))
                {
                    s.filter_ignored(odd);
                } else {
                    let wanted: HashSet<&str> = window.iter().map(|c| c.id.as_str()).collect();
                    for u in users {
                        s.note_listed(&u);
                        // By its id, or its display id when the export holds those.
                        let key = [Some(u.id.as_str()), u.display_id.as_deref()]
                            .into_iter()
                            .flatten()
                            .find(|k| wanted.contains(k))
                            .map(str::to_string);
                        if let Some(key) = key {
                            s.read.insert(key, (u, now));
                        }
                    }
                }
            }
            Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "batched rev-users.list failed; reading these contacts one by one");
            }
        }
        s.handed.insert(id.to_string());
        Ok(s.read.remove(id).map(|(u, _)| {
            s.served += 1;
            u
        }))
    }

    /// The next contacts Validate will ask for (up to `n`, none of `but`), marked asked.
    fn ask_next(&self, s: &mut State, n: usize, but: &[&str]) -> Vec<Planned> {
        let Some(start) = self.order.iter().position(|c| !s.handed.contains(&c.id)) else {
            return Vec::new();
        };
        let next: Vec<Planned> = self
            .window(s, start, n)
            .into_iter()
            .filter(|c| !but.contains(&c.external_ref.as_str()))
            .cloned()
            .collect();
        let now = Instant::now();
        for c in &next {
            s.asked.insert(c.id.clone(), now);
        }
        next
    }

    /// Up to `n` contacts to batch, from the one at `start` onwards, then the ones before it
    /// a run passed over: never handed out, neither read nor asked for while fresh.
    fn window(&self, s: &State, start: usize, n: usize) -> Vec<&Planned> {
        let fresh = |t: &Instant| t.elapsed() < self.fresh_for;
        self.order[start..]
            .iter()
            .chain(&self.order[..start])
            .filter(|c| {
                !s.handed.contains(&c.id)
                    && s.read.get(&c.id).is_none_or(|(_, t)| !fresh(t))
                    && s.asked.get(&c.id).is_none_or(|t| !fresh(t))
            })
            .take(n)
            .collect()
    }

    /// Survivor `id` (its `external_ref` now) will be read after its merge, for the
    /// carry-over: a survivor read of another pair made meanwhile asks for it too.
    pub async fn survivor_expected(&self, id: &str, external_ref: &str) {
        let r = external_ref.trim();
        if !r.is_empty() {
            let mut s = self.state.lock().await;
            s.expected.insert(id.to_string(), r.to_string());
        }
    }

    /// Survivor `id` as DevRev holds it after `since` (its merge applied, this run's last
    /// write to it): from a gathered `rev-users.list` read after `since`, handed out once,
    /// else one `rev-users.get`. A read that must be made waits for its turn at the pacer
    /// and asks, by `external_ref`, for every survivor expected by then; reads needed while
    /// it waits join it.
    ///
    /// Only a record the list answered by the contact's own id, with its `custom_fields`
    /// and `tags` (what the carry-over writes whole), stands in for the `rev-users.get`;
    /// any other case reads with `rev-users.get` as before.
    pub async fn survivor(
        &self,
        client: &DevRevClient,
        id: &str,
        since: Instant,
    ) -> Result<RevUser, ApiError> {
        let mut joined_once = false;
        loop {
            let mut s = self.state.lock().await;
            if let Some((_, at)) = s.survivors.get(id)
                && *at > since
                && at.elapsed() < SURVIVOR_FRESH
            {
                s.served += 1;
                s.expected.remove(id);
                return Ok(s.survivors.remove(id).expect("checked").0);
            }
            // A contact this run wrote is read by itself: a list's record of it rarely
            // holds what the write left, if the list lags (see `written`).
            if s.off.is_some() || !s.expected.contains_key(id) || s.written.contains_key(id) {
                drop(s);
                return client.rev_users_get(id).await;
            }
            let key = [id.to_string()];
            if !joined_once && let Some(joined) = s.gathering.as_mut().and_then(|g| g.join(&key)) {
                drop(s);
                joined_once = true;
                joined.wait().await;
                continue;
            }
            drop(s);
            self.read_survivors(client, id).await?;
            let mut s = self.state.lock().await;
            s.expected.remove(id);
            if let Some((u, at)) = s.survivors.remove(id)
                && at > since
            {
                s.served += 1;
                return Ok(u);
            }
            drop(s);
            return client.rev_users_get(id).await;
        }
    }

    /// One look at a secondary after its merge was requested that also reads its survivor:
    /// one `rev-users.list` by both contacts' `external_ref`s, where the look (a
    /// `rev-users.get`) and the survivor read after it took two calls.
    ///
    /// `None`: this answer cannot stand in for the look (batching off, the list failed or
    /// answered another contact, or one twice, under either ref), or the secondary is
    /// missing from an answer whose silence proves nothing: the survivor is missing too, a
    /// `next_cursor` says the answer is not whole, or no list of this process ever answered
    /// the secondary under that ref (a list that leaves it out for a reason of its own).
    /// The caller then looks with `rev-users.get`. A refused filter turns batching off for
    /// the rest of the run, so a server without it costs one call more once, not at every
    /// look.
    pub async fn look(
        &self,
        client: &DevRevClient,
        secondary: (&str, &str),
        survivor: (&str, &str),
    ) -> Result<Option<Look>, ApiError> {
        // Exactly as DevRev holds them (the filter matches exact values): never trimmed.
        let refs = [secondary.1, survivor.1];
        if refs.iter().any(|r| r.trim().is_empty()) || refs[0] == refs[1] {
            return Ok(None);
        }
        // The ref DevRev gives a merged-away contact (devrev-api.md, finding 4): asked for
        // too, so a secondary rewritten that way is judged by its record (a
        // `primary_identity` naming a third contact is a merge elsewhere), not by absence.
        let dropped = secondary
            .0
            .starts_with("don:")
            .then(|| format!("{}-drop-{}", refs[0], secondary.0));
        let mut s = self.state.lock().await;
        if s.off.is_some() {
            return Ok(None);
        }
        // The next contacts Validate will ask for ride along (what their own batch would
        // read), so a look also stands in for the next batched read.
        let own = refs.len() + usize::from(dropped.is_some());
        let next = self.ask_next(&mut s, WINDOW - own, &refs);
        drop(s);
        let all: Vec<&str> = refs
            .iter()
            .copied()
            .chain(dropped.as_deref())
            .chain(next.iter().map(|c| c.external_ref.as_str()))
            .collect();
        // When it was asked: what an answer says of the survivor may be from then.
        let at = Instant::now();
        let answer = client
            .rev_users_list_page_one(json!({ "external_ref": all }))
            .await;
        let mut s = self.state.lock().await;
        s.lists += 1;
        let (users, more) = match answer {
            Ok(page) => page,
            // A typeless 404 (a misrouting proxy) proves nothing here: the look falls back to
            // `rev-users.get`, which judges its own answer.
            Err(e) if e.scope() == crate::devrev::Scope::Run && !e.is_not_found() => {
                return Err(e);
            }
            Err(e) => {
                if matches!(e.status(), Some(400 | 422)) {
                    s.turn_off(format!(
                        "rev-users.list refused a filter by external_ref ({e}): every contact is read one by one"
                    ));
                } else {
                    tracing::debug!(error = %e, "look by rev-users.list failed; looking with rev-users.get");
                }
                return Ok(None);
            }
        };
        let is = |u: &RevUser, id: &str| u.id == id || u.display_id.as_deref() == Some(id);
        let mut look = Look {
            secondary: None,
            survivor: None,
            at,
        };
        let mut survivor_listed = false;
        for u in users {
            match u.external_ref.as_deref() {
                Some(r)
                    if (r == refs[0] || Some(r) == dropped.as_deref())
                        && is(&u, secondary.0)
                        && look.secondary.is_none() =>
                {
                    s.note_listed(&u);
                    look.secondary = Some(u);
                }
                Some(r) if r == refs[1] && is(&u, survivor.0) && !survivor_listed => {
                    s.note_listed(&u);
                    survivor_listed = true;
                    if u.unknown_lists().is_empty() && s.current(survivor.0, &u) {
                        look.survivor = Some(u);
                    }
                }
                Some(r) if refs.contains(&r) || Some(r) == dropped.as_deref() => {
                    // Another contact under one of the refs, or one contact twice: only
                    // `rev-users.get` judges that.
                    return Ok(None);
                }
                Some(r) if all.contains(&r) => {
                    // By its id, or its display id when the export holds those.
                    s.note_listed(&u);
                    if let Some(c) = next.iter().find(|c| is(&u, &c.id)) {
                        s.read.insert(c.id.clone(), (u, at));
                    }
                }
                _ => {
                    s.filter_ignored(&u);
                    return Ok(None);
                }
            }
        }
        // Its absence shows the merge only from a whole answer (one page, the survivor in
        // it under its own ref) of a list seen to answer the secondary under that very ref.
        if look.secondary.is_none()
            && (more
                || !survivor_listed
                || s.listed.get(secondary.0).map(String::as_str) != Some(refs[0]))
        {
            return Ok(None);
        }
        s.served += 1;
        Ok(Some(look))
    }

    /// This run wrote contact `id` and DevRev answered `answer` (`None`: the write failed or
    /// its answer was lost, so it may or may not have landed): from now on a list's record
    /// of it stands in for a read only if it holds what that answer holds.
    pub async fn wrote(&self, id: &str, answer: Option<&RevUser>) {
        let mut s = self.state.lock().await;
        s.written.insert(id.to_string(), answer.cloned());
    }

    /// A survivor read by a [`Self::look`] that showed its merge applied: it stands in for
    /// the survivor read after the merge ([`Self::survivor`] with `since` before `at`).
    pub async fn keep_survivor(&self, id: &str, user: RevUser, at: Instant) {
        let mut s = self.state.lock().await;
        s.survivors.insert(id.to_string(), (user, at));
    }

    /// One gathered read of the survivors expected when its turn comes (`id` first).
    async fn read_survivors(&self, client: &DevRevClient, id: &str) -> Result<(), ApiError> {
        let mut s = self.state.lock().await;
        let gathers = s.gathering.as_ref().is_none_or(Gathering::abandoned);
        let done = gathers.then(|| {
            let (g, done) = Gathering::start();
            s.gathering = Some(g);
            done
        });
        drop(s);
        let turn = client.turn("rev-users.list").await;
        let mut s = self.state.lock().await;
        let joined = match s.gathering.as_mut().filter(|_| gathers) {
            Some(g) => g.take_joined(),
            None => Vec::new(),
        };
        let mut ids: Vec<String> = Vec::new();
        let rest = joined
            .into_iter()
            .chain(s.expected.keys().cloned().collect::<Vec<_>>());
        // Only ids whose ref is known (`id` first): each asked for by its own ref.
        for other in std::iter::once(id.to_string()).chain(rest) {
            if ids.len() < WINDOW && !ids.contains(&other) && s.expected.contains_key(&other) {
                ids.push(other);
            }
        }
        if gathers && let Some(g) = s.gathering.as_mut() {
            g.asked(ids.clone());
        }
        let refs: Vec<String> = ids
            .iter()
            .filter_map(|i| s.expected.get(i).cloned())
            .collect();
        if refs.is_empty() {
            // Nothing left to ask (read meanwhile): the turn goes unused.
            if let Some(done) = done {
                s.gathering = None;
                done.now();
            }
            return Ok(());
        }
        s.lists += 1;
        drop(s);
        // When it was asked (its turn came): a record may say what DevRev held then, so it
        // stands in only for a read needed after that (`survivor`'s `since`).
        let now = Instant::now();
        let answer = client
            .rev_users_list_in(Some(turn), json!({ "external_ref": refs }))
            .await;
        let mut s = self.state.lock().await;
        if let Some(done) = done {
            s.gathering = None;
            done.now();
        }
        let users = match answer {
            Ok(users) => users,
            Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "gathered survivor read failed; reading them one by one");
                return Ok(());
            }
        };
        if let Some(odd) = users.iter().find(|u| {
            u.external_ref
                .as_deref()
                .is_none_or(|r| !refs.iter().any(|x| x == r))
        }) {
            s.filter_ignored(odd);
            return Ok(());
        }
        for u in users {
            // By its id, or its display id when the export holds those.
            let key = [Some(u.id.as_str()), u.display_id.as_deref()]
                .into_iter()
                .flatten()
                .find(|k| ids.iter().any(|i| i == k))
                .map(str::to_string);
            if let Some(key) = key
                && u.unknown_lists().is_empty()
                && s.current(&key, &u)
            {
                s.survivors.insert(key, (u, now));
            }
        }
        Ok(())
    }
}
