//! Tickets and conversations listed for many contacts at once (issue 29): a list a pair
//! needs (its backup's, its check before the merge, its Reconcile's) also asks for the next
//! pairs' contacts (`reported_by` / `members` are OR filters), and a later pair's backup takes
//! its share from that answer instead of listing again.
//!
//! An answer stands in for a later list of contact `c` only while it still says what DevRev
//! holds:
//!
//! - **Fresh**: read less than the run's `FRESH_FOR` ago (the window it already grants a
//!   prepared backup; a ticket added by someone else within it is caught as it is today, by
//!   Reconcile's own list after the merge).
//! - **No merge of this run in between touches it.** From the moment a merge is sent until
//!   its Reconcile has finished, nothing is taken from an answer for the merge's two contacts
//!   or for any contact on a ticket or conversation that names its secondary (DevRev moves
//!   those, Reconcile rewrites them; one naming only the primary is written by neither, as
//!   `merge/footprint.rs` counts it); when Reconcile finishes, every such answer read before
//!   is dropped. Merges an earlier run sent and did not reconcile count from the start.
//! - **Every object is attributed by what it names**, never by the filter: an object naming
//!   none of the contacts asked about (a server ignoring the filter) is left out, and a
//!   contact's share is exactly the objects naming it.
//!
//! A list a pair needs after its own merge (Reconcile) is always read anew. A contact
//! expected to have many tickets (`TICKET_COUNT` over [`MANY`], or unknown), or one DevRev
//! answered more than that for once (the export's count was wrong), is never added to
//! another pair's list, so one large customer is not read again and again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use super::gather::Gathering;
use crate::detect::Pair;
use crate::devrev::{ApiError, DevRevClient, Turn};

/// Contacts asked about in one list, at most (ten pairs).
const WINDOW: usize = 20;

/// Tickets a contact added to another pair's list may be expected to have, at most (in all,
/// the list stays about one page of 100).
const MANY: u64 = 10;

impl std::fmt::Debug for ListReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListReads")
            .field("contacts", &self.order.len())
            .field("fresh_for", &self.fresh_for)
            .finish_non_exhaustive()
    }
}

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    /// `works.list {type: [ticket], reported_by: [...]}`
    Tickets,
    /// `conversations.list {members: [...]}`
    Conversations,
}

impl Listing {
    fn endpoint(self) -> &'static str {
        match self {
            Listing::Tickets => "works.list",
            Listing::Conversations => "conversations.list",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Listing::Tickets => "reported_by",
            Listing::Conversations => "members",
        }
    }
}

/// The contacts an object names (`reported_by` / `members` ids).
fn named(object: &Value, field: &str) -> Vec<String> {
    object[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect()
}

#[derive(Default)]
struct Side {
    /// Contact → the objects naming it, and when that was read.
    covered: HashMap<String, (BTreeSet<String>, Instant)>,
    /// Object id → as last read.
    objects: HashMap<String, Value>,
}

#[derive(Default)]
struct State {
    sides: HashMap<Listing, Side>,
    /// Merges sent and not reconciled yet: (primary, secondary).
    pending: Vec<(String, String)>,
    /// Pending merges DevRev was seen to apply, and when: their Reconcile's lists may come
    /// from an answer read after that, so one list serves the Reconciles of several merges
    /// applied about together.
    applied: HashMap<(String, String), Instant>,
    /// A list of each kind waiting for its turn (or under way), which others join.
    gathering: HashMap<Listing, Gathering<String>>,
    /// Contacts DevRev answered more than [`MANY`] objects for (the export's count was
    /// wrong): never added to another pair's list again.
    large: std::collections::HashSet<String>,
    lists: usize,
    served: usize,
}

/// The run's shared lists. `ListReads::none()` reads exactly what is asked, every time.
pub struct ListReads {
    order: Vec<(String, u64)>,
    at: HashMap<String, usize>,
    fresh_for: Duration,
    state: Mutex<State>,
}

impl ListReads {
    /// For `pairs` in the order they run; `pending`: merges sent by an earlier run and not
    /// reconciled yet.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = &'a Pair>,
        pending: Vec<(String, String)>,
        fresh_for: Duration,
    ) -> Self {
        let mut order = Vec::new();
        let mut at = HashMap::new();
        for p in pairs {
            for c in [&p.primary, &p.secondary] {
                if at.contains_key(&c.rev_user_id) {
                    continue;
                }
                at.insert(c.rev_user_id.clone(), order.len());
                order.push((c.rev_user_id.clone(), c.ticket_count.unwrap_or(u64::MAX)));
            }
        }
        Self {
            order,
            at,
            fresh_for,
            state: Mutex::new(State {
                pending,
                ..State::default()
            }),
        }
    }

    /// No sharing: every list asks for exactly its contacts.
    pub fn none() -> Self {
        Self::new(std::iter::empty(), Vec::new(), Duration::ZERO)
    }

    /// Lists made, and lists another pair's answer stood in for.
    pub async fn figures(&self) -> (usize, usize) {
        let s = self.state.lock().await;
        (s.lists, s.served)
    }

    /// A merge of `primary` ← `secondary` is about to be sent: nothing touching them is taken
    /// from an answer until [`Self::merge_settled`].
    pub async fn merge_sent(&self, primary: &str, secondary: &str) {
        let mut s = self.state.lock().await;
        forget_around(&mut s, primary, secondary);
        s.applied
            .remove(&(primary.to_string(), secondary.to_string()));
        if !s
            .pending
            .iter()
            .any(|(p, q)| p == primary && q == secondary)
        {
            s.pending.push((primary.to_string(), secondary.to_string()));
        }
    }

    /// DevRev was seen to apply the merge of `primary` ← `secondary` (it stays pending until
    /// [`Self::merge_settled`]). From now on an answer read later may stand in for its
    /// Reconcile's lists, and other lists ask for its contacts too. The first sighting
    /// counts.
    pub async fn merge_applied(&self, primary: &str, secondary: &str) {
        let mut s = self.state.lock().await;
        let key = (primary.to_string(), secondary.to_string());
        if s.pending.contains(&key) {
            s.applied.entry(key).or_insert_with(Instant::now);
        }
    }

    /// The merge's Reconcile has finished. Answers read while it was under way are dropped,
    /// but for those read after DevRev was seen to apply the merge when Reconcile wrote
    /// nothing (`clean`): such an answer is what Reconcile itself read, and nothing of this
    /// run changed the objects since (DevRev's moves came before it, and Reconcile found
    /// nothing to repair), so it still says what DevRev holds for the next pairs' backups.
    pub async fn merge_settled(&self, primary: &str, secondary: &str, clean: bool) {
        let mut s = self.state.lock().await;
        let key = (primary.to_string(), secondary.to_string());
        let keep_after = s.applied.get(&key).copied().filter(|_| clean);
        forget_around_read_before(&mut s, primary, secondary, keep_after);
        s.pending.retain(|(p, q)| !(p == primary && q == secondary));
        s.applied.remove(&key);
    }

    /// Every object of `listing` naming any of `contacts`, as DevRev answers it now (or as
    /// an answer that still holds said it). `Err` as the list itself would fail (a refused
    /// filter included: the caller's fallback sees the same error).
    pub async fn list(
        &self,
        client: &DevRevClient,
        listing: Listing,
        contacts: &[&str],
    ) -> Result<Vec<Value>, ApiError> {
        self.list_since(client, listing, contacts, None).await
    }

    /// [`Self::list`], taking an earlier answer only if it was read after `since` (a check
    /// of a backup taken at `since` needs an answer newer than the backup).
    ///
    /// A list that must be read waits for its turn at the pacer first, and a list needed
    /// while one waits joins it: what the turn asks is decided when it comes (the contacts
    /// joined, the merges seen applied by then, the next pairs' contacts).
    pub async fn list_since(
        &self,
        client: &DevRevClient,
        listing: Listing,
        contacts: &[&str],
        since: Option<Instant>,
    ) -> Result<Vec<Value>, ApiError> {
        let mut joined_once = false;
        loop {
            let mut s = self.state.lock().await;
            self.prune(&mut s);
            if let Some(out) = self.serve(&mut s, listing, contacts, since) {
                return Ok(out);
            }
            let keys: Vec<String> = contacts.iter().map(|c| c.to_string()).collect();
            if !joined_once
                && let Some(joined) = s.gathering.get_mut(&listing).and_then(|g| g.join(&keys))
            {
                drop(s);
                joined_once = true;
                joined.wait().await;
                continue;
            }
            return self.lead(s, client, listing, contacts).await;
        }
    }

    /// Every contact's share from answers that still hold, if all of them have one.
    fn serve(
        &self,
        s: &mut State,
        listing: Listing,
        contacts: &[&str],
        since: Option<Instant>,
    ) -> Option<Vec<Value>> {
        let newer = |s: &State, c: &str| {
            since.is_none_or(|t| {
                s.sides
                    .get(&listing)
                    .and_then(|side| side.covered.get(c))
                    .is_some_and(|(_, at)| *at > t)
            })
        };
        if contacts.is_empty()
            || !contacts
                .iter()
                .all(|c| self.servable(s, listing, c) && newer(s, c))
        {
            return None;
        }
        s.served += 1;
        let side = s.sides.entry(listing).or_default();
        let ids: BTreeSet<&String> = contacts
            .iter()
            .flat_map(|c| side.covered[*c].0.iter())
            .collect();
        Some(ids.into_iter().map(|id| side.objects[id].clone()).collect())
    }

    /// Reads the list for `contacts` (and whatever joined it while it waited for its turn).
    async fn lead(
        &self,
        mut s: tokio::sync::MutexGuard<'_, State>,
        client: &DevRevClient,
        listing: Listing,
        contacts: &[&str],
    ) -> Result<Vec<Value>, ApiError> {
        // One gathering a listing at a time; one whose reader was dropped is replaced.
        let gathers = s.gathering.get(&listing).is_none_or(Gathering::abandoned);
        let done = gathers.then(|| {
            let (g, done) = Gathering::start();
            s.gathering.insert(listing, g);
            done
        });
        drop(s);
        let turn = client.turn(listing.endpoint()).await;
        let mut s = self.state.lock().await;
        let joined = match s.gathering.get_mut(&listing).filter(|_| gathers) {
            Some(g) => g.take_joined(),
            None => Vec::new(),
        };
        let ask: Vec<String> = self
            .ask(&s, contacts, &joined)
            .into_iter()
            .map(str::to_string)
            .collect();
        if gathers && let Some(g) = s.gathering.get_mut(&listing) {
            g.asked(ask.clone());
        }
        s.lists += 1;
        drop(s);
        let asked: Vec<&str> = ask.iter().map(String::as_str).collect();
        // An answer says what DevRev held when it was *asked*: a list sent before a merge was
        // seen applied and answered after it is no list read after the merge (stamped with
        // its arrival it would serve a Reconcile, or a caller that joined it late, a snapshot
        // from before the merge).
        let mut sent = Instant::now();
        let answer = self.read(client, listing, Some(turn), &asked).await;
        let mut s = self.state.lock().await;
        if let Some(done) = done {
            s.gathering.remove(&listing);
            done.now();
        }
        let (answer, asked) = match answer {
            Ok(a) => (a, asked),
            Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(e),
            // The added contacts may be what DevRev refuses (one merged meanwhile): the list
            // as asked decides.
            Err(_) if asked.len() > contacts.len() => {
                s.lists += 1;
                sent = Instant::now();
                (
                    self.read(client, listing, None, contacts).await?,
                    contacts.to_vec(),
                )
            }
            Err(e) => return Err(e),
        };
        Ok(record(&mut s, listing, contacts, &asked, answer, sent))
    }

    /// Forgets answers older than the freshness window and the objects only they held: a
    /// long run keeps about one window of lists, not every ticket it ever read.
    fn prune(&self, s: &mut State) {
        for side in s.sides.values_mut() {
            side.covered
                .retain(|_, (_, at)| at.elapsed() < self.fresh_for);
            let held: HashSet<&String> = side.covered.values().flat_map(|(ids, _)| ids).collect();
            side.objects.retain(|id, _| held.contains(id));
        }
    }

    async fn read(
        &self,
        client: &DevRevClient,
        listing: Listing,
        turn: Option<Turn>,
        contacts: &[&str],
    ) -> Result<Vec<Value>, ApiError> {
        match listing {
            Listing::Tickets => client.tickets_reported_by_in(turn, contacts).await,
            Listing::Conversations => client.conversations_with_members_in(turn, contacts).await,
        }
    }

    /// Whether an earlier answer may stand in for a list of `contact`.
    fn servable(&self, s: &State, listing: Listing, contact: &str) -> bool {
        let Some(side) = s.sides.get(&listing) else {
            return false;
        };
        let Some((share, at)) = side.covered.get(contact) else {
            return false;
        };
        if at.elapsed() >= self.fresh_for {
            return false;
        }
        !s.pending.iter().any(|(p, q)| {
            if contact == p || contact == q {
                // Its own merge: only an answer read after DevRev was seen to apply it
                // (what its Reconcile would read).
                return s
                    .applied
                    .get(&(p.clone(), q.clone()))
                    .is_none_or(|applied| at <= applied);
            }
            // An object naming the secondary is what the merge moves and Reconcile rewrites;
            // one naming only the primary is not written (footprint.rs says the same).
            share.iter().any(|id| {
                side.objects
                    .get(id)
                    .is_some_and(|o| named(o, listing.field()).iter().any(|n| n == q))
            })
        })
    }

    /// `contacts`, those `joined` while the list waited for its turn, the contacts of merges
    /// seen applied and not reconciled yet (their Reconciles' lists), and the next contacts of
    /// the run (few tickets expected, no merge of theirs under way).
    fn ask<'a>(&'a self, s: &'a State, contacts: &[&'a str], joined: &'a [String]) -> Vec<&'a str> {
        let mut ask: Vec<&str> = contacts.to_vec();
        let applied = s.applied.keys().flat_map(|(p, q)| [p.as_str(), q.as_str()]);
        for c in joined.iter().map(String::as_str).chain(applied) {
            if ask.len() < WINDOW && !ask.contains(&c) {
                ask.push(c);
            }
        }
        let Some(&start) = contacts.iter().filter_map(|c| self.at.get(*c)).min() else {
            return ask;
        };
        let busy = |c: &str| s.pending.iter().any(|(p, q)| c == p || c == q);
        let mut expected: u64 = contacts
            .iter()
            .filter_map(|c| self.at.get(*c))
            .map(|&i| self.order[i].1.min(MANY))
            .sum();
        for (c, tickets) in &self.order[start..] {
            if ask.len() >= WINDOW {
                break;
            }
            // Contacts already covered are asked again: the fresh answer is what a check of
            // their backup before their merge compares it with (and costs no call more).
            if ask.contains(&c.as_str())
                || busy(c)
                || s.large.contains(c)
                || *tickets > MANY
                || expected + tickets > 10 * MANY
            {
                continue;
            }
            expected += tickets;
            ask.push(c);
        }
        ask
    }
}

/// Records an answer to a list that asked for `asked`, sent at `now` (each contact's share is
/// exactly the objects naming it) and returns the objects naming any of `contacts`.
fn record(
    s: &mut State,
    listing: Listing,
    contacts: &[&str],
    asked: &[&str],
    answer: Vec<Value>,
    now: Instant,
) -> Vec<Value> {
    let field = listing.field();
    let side = s.sides.entry(listing).or_default();
    let mut out = Vec::new();
    let mut shares: HashMap<&str, BTreeSet<String>> =
        asked.iter().map(|c| (*c, BTreeSet::new())).collect();
    for o in answer {
        let Some(id) = o["id"].as_str().map(str::to_string) else {
            continue;
        };
        let names = named(&o, field);
        let mut any = false;
        for n in &names {
            if let Some(share) = shares.get_mut(n.as_str()) {
                share.insert(id.clone());
                any = true;
            }
        }
        if !any {
            continue; // names no contact asked about: not this list's
        }
        if names.iter().any(|n| contacts.contains(&n.as_str())) {
            out.push(o.clone());
        }
        side.objects.insert(id, o);
    }
    let mut large = Vec::new();
    for (c, share) in shares {
        if share.len() > MANY as usize && !contacts.contains(&c) {
            large.push(c.to_string());
        }
        side.covered.insert(c.to_string(), (share, now));
    }
    s.large.extend(large);
    out
}

/// Drops every answer about `primary`, `secondary` and the contacts sharing an object with
/// them.
fn forget_around(s: &mut State, primary: &str, secondary: &str) {
    forget_around_read_before(s, primary, secondary, None);
}

/// [`forget_around`], keeping the answers read after `keep_after` when it is given.
fn forget_around_read_before(
    s: &mut State,
    primary: &str,
    secondary: &str,
    keep_after: Option<Instant>,
) {
    for (listing, side) in s.sides.iter_mut() {
        let field = listing.field();
        let touching: BTreeSet<&String> = side
            .objects
            .iter()
            .filter(|(_, o)| named(o, field).iter().any(|n| n == secondary))
            .map(|(id, _)| id)
            .collect();
        side.covered.retain(|c, (share, at)| {
            keep_after.is_some_and(|t| *at > t)
                || (c != primary && c != secondary && !share.iter().any(|id| touching.contains(id)))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_answer(lists: &ListReads, read_at: Instant) {
        let mut s = lists.state.blocking_lock();
        let side = s.sides.entry(Listing::Tickets).or_default();
        side.objects
            .insert("t1".into(), serde_json::json!({"id": "t1"}));
        side.objects
            .insert("t2".into(), serde_json::json!({"id": "t2"}));
        side.covered
            .insert("c1".into(), (BTreeSet::from(["t1".to_string()]), read_at));
    }

    /// Contact `c`'s share: one ticket naming `c` and `other`, read at `at`.
    fn cover(lists: &ListReads, c: &str, other: &str, at: Instant) {
        let mut s = lists.state.blocking_lock();
        let side = s.sides.entry(Listing::Tickets).or_default();
        let id = format!("t-{c}");
        side.objects.insert(
            id.clone(),
            serde_json::json!({"id": id, "reported_by": [{"id": c}, {"id": other}]}),
        );
        side.covered.insert(c.into(), (BTreeSet::from([id]), at));
    }

    #[test]
    fn a_clean_reconcile_keeps_only_the_answers_read_after_its_merge_applied() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for clean in [true, false] {
            let lists = ListReads::new(std::iter::empty(), Vec::new(), Duration::from_secs(90));
            rt.block_on(lists.merge_sent("p", "s"));
            // c1's share (a ticket also naming the secondary) was read before DevRev was
            // seen to apply the merge; c2's after, as Reconcile's own list is.
            cover(&lists, "c1", "s", Instant::now());
            rt.block_on(lists.merge_applied("p", "s"));
            let applied = lists.state.blocking_lock().applied[&("p".into(), "s".into())];
            cover(&lists, "c2", "s", applied + Duration::from_millis(1));
            {
                let s = lists.state.blocking_lock();
                assert!(!lists.servable(&s, Listing::Tickets, "c2"), "pending merge");
            }
            rt.block_on(lists.merge_settled("p", "s", clean));
            let s = lists.state.blocking_lock();
            assert!(
                !lists.servable(&s, Listing::Tickets, "c1"),
                "read before applied"
            );
            assert_eq!(
                lists.servable(&s, Listing::Tickets, "c2"),
                clean,
                "read after applied, Reconcile wrote {}",
                if clean { "nothing" } else { "something" }
            );
        }
    }

    /// A list asked before DevRev was seen to apply a merge and answered after it says what
    /// DevRev held before: it never stands in for the merge's Reconcile lists (nor for a
    /// Reconcile that joined it while it was under way).
    #[test]
    fn an_answer_asked_before_a_merge_applied_never_serves_its_reconcile() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let lists = ListReads::new(std::iter::empty(), Vec::new(), Duration::from_secs(90));
        rt.block_on(lists.merge_sent("p", "s"));
        let asked = Instant::now();
        rt.block_on(lists.merge_applied("p", "s"));
        let mut s = lists.state.blocking_lock();
        let answer = vec![
            serde_json::json!({"id": "t1", "reported_by": [{"id": "s"}]}),
            serde_json::json!({"id": "t2", "reported_by": [{"id": "p"}]}),
        ];
        record(&mut s, Listing::Tickets, &["p"], &["p", "s"], answer, asked);
        for c in ["p", "s"] {
            assert!(!lists.servable(&s, Listing::Tickets, c), "{c}");
        }
    }

    #[test]
    fn a_long_run_keeps_only_the_answers_still_fresh_and_their_objects() {
        let lists = ListReads::new(std::iter::empty(), Vec::new(), Duration::from_secs(90));
        with_answer(&lists, Instant::now());
        let mut s = lists.state.blocking_lock();
        lists.prune(&mut s);
        let side = &s.sides[&Listing::Tickets];
        assert!(side.covered.contains_key("c1"));
        // t2 is named by no answer still held.
        assert_eq!(side.objects.keys().collect::<Vec<_>>(), ["t1"]);
        drop(s);

        let stale = ListReads::none();
        with_answer(&stale, Instant::now());
        let mut s = stale.state.blocking_lock();
        stale.prune(&mut s);
        let side = &s.sides[&Listing::Tickets];
        assert!(side.covered.is_empty() && side.objects.is_empty());
    }
}
