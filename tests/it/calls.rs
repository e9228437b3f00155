//! Every call counts: the merge run's API calls, endpoint by endpoint and pair by pair,
//! against the README's per-pair minimum ("API calls per pair"):
//!
//! ```text
//! rev-users.list 1 (the look) · rev-users.get 0 (+1 with --keep user) ·
//! timeline-entries.list T + C · artifacts.locate A · artifacts.get A₀ ·
//! rev-users.merge 1 · rev-users.update 1 (--keep revu; 0 with --keep user)
//!                                                             = 3 + T + C + A + A₀
//! ```
//!
//! plus, once per run, at most one `rev-users.list` per window of 20 contacts (Validate's
//! batched reads, issue 29; the next contacts also ride in the looks' lists) and
//! `auth-tokens.info`; the ticket and conversation lists are shared by
//! the pairs (issue 29): each pair's Reconcile lists both anew after its merge (one
//! `works.list` and one `conversations.list` each), and the backups take their share from
//! lists that ask for the next pairs' contacts too, so the whole run makes fewer than one
//! backup list of each per pair;
//!
//! plus, with `--keep user` only, one `rev-users.update` when the secondary holds data the
//! survivor lacks (the carry-over; under `--keep revu` it rides in the ref adoption's update).
//!
//! with `T` tickets and `C` conversations backed up (one timeline page each) and `A`
//! attachments (`A₀` of them without a size in their summary), taken from the fake's world,
//! never from what the binary wrote. The merges are applied before the first look, so every
//! count is exact.
//!
//! Each thing is read once per run (issue 29): a ticket or conversation whose timeline an
//! earlier pair of the run already read (well within `FRESH_FOR`: these runs take a second),
//! and its attachments, are not counted again, so `T`, `C`, `A` and `A₀` count the objects
//! this pair's backup is the first of the run to read, and over a run they sum to the
//! distinct objects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::merge::{World, behaviour, spec};
use devrev_fake::fake::{MoveMode, RequestRecord, SecondaryAfter};
use devrev_fake::seed::summary_ids;
use devrev_merge::devrev::types::RevUser;
use devrev_merge::merge::carry;

/// What the fake's world says one pair's backup holds.
#[derive(Debug, Default)]
struct Terms {
    tickets: usize,
    conversations: usize,
    attachments: usize,
    sizeless: usize,
}

/// The terms of the objects `secondary`'s backup is the first of the run to read: those not
/// in `earlier` (what the pairs started before it read).
fn terms(w: &World, secondary: &str, earlier: &BTreeSet<String>) -> Terms {
    let names = |v: &Value, field: &str| summary_ids(&v[field]).contains(&secondary.to_string());
    let first = |o: &&Value| !earlier.contains(o["id"].as_str().unwrap());
    let tickets: BTreeSet<&str> = w
        .seed
        .tickets
        .iter()
        .filter(|t| names(t, "reported_by"))
        .filter(first)
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let convs: BTreeSet<&str> = w
        .seed
        .conversations
        .iter()
        .filter(|c| names(c, "members"))
        .filter(first)
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let objects: BTreeSet<&str> = tickets.union(&convs).copied().collect();
    let attachments = w
        .seed
        .artifacts
        .iter()
        .filter(|a| objects.contains(a["parent"].as_str().unwrap_or_default()))
        .count();
    // Summaries in timeline entries may omit the size: those cost one artifacts.get, once
    // per artifact in the run.
    let sizeless = objects
        .iter()
        .flat_map(|o| w.seed.timelines.get(*o).into_iter().flatten())
        .flat_map(|e| e["artifacts"].as_array().into_iter().flatten())
        .filter(|a| a["file"]["size"].is_null())
        .map(|a| a["id"].as_str().unwrap_or_default())
        .collect::<BTreeSet<_>>()
        .len();
    for o in &objects {
        let entries = w.seed.timelines.get(*o).map_or(0, Vec::len);
        assert!(entries < 100, "one timeline page per object");
    }
    Terms {
        tickets: tickets.len(),
        conversations: convs.len(),
        attachments,
        sizeless,
    }
}

/// Whether the carry-over has anything to write for this pair, from the fake's world (the
/// seed's contacts are what the backup saves).
fn carries(w: &World, primary: &str, secondary: &str) -> bool {
    let user = |id: &str| -> RevUser {
        serde_json::from_value(w.seed.rev_user(id).unwrap().clone()).unwrap()
    };
    !carry::plan(&user(secondary), &user(primary))
        .items
        .is_empty()
}

fn carried_name(w: &World, primary: &str, secondary: &str) -> Option<String> {
    let user = |id: &str| -> RevUser {
        serde_json::from_value(w.seed.rev_user(id).unwrap().clone()).unwrap()
    };
    carry::plan(&user(secondary), &user(primary))
        .items
        .into_iter()
        .find_map(|i| match i {
            carry::CarryItem::DisplayName { name } => Some(name),
            _ => None,
        })
}

/// The README's minimum for one pair, endpoint by endpoint; `renamed`: the merge renamed the
/// primary (`N` = 1: one more `rev-users.update` sets the name back); `carried`: the
/// carry-over writes something, which costs an update of its own under `--keep user` only.
fn minimum(t: &Terms, keep_user: bool, renamed: bool, carried: bool) -> BTreeMap<String, usize> {
    let k = usize::from(keep_user);
    let n = usize::from(renamed) + usize::from(keep_user && carried);
    // The survivor is read after the merge (issue 27: from the live values, never the
    // backup's) by the look that found the merge applied; under --keep user it is read
    // twice (its name in Reconcile, then the carry-over), the second time on its own.
    let kc = usize::from(keep_user && carried);
    [
        // Validate reads both contacts from the run's batched rev-users.list (issue 29): no
        // get of its own; the one look after the merge, a rev-users.list by both contacts'
        // refs, reads the secondary and the survivor.
        ("/rev-users.list", 1),
        ("/rev-users.get", kc),
        ("/timeline-entries.list", t.tickets + t.conversations),
        ("/artifacts.locate", t.attachments),
        ("/artifacts.get", t.sizeless),
        ("/rev-users.merge", 1),
        ("/rev-users.update", 1 - k + n),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(p, n)| (p.to_string(), n))
    .collect()
}

/// Each request of the log attributed to its pair, by what it names: the contact of a
/// `rev-users.*` call or a list filter, or the backed-up object of a timeline or attachment
/// call. The run prepares the next pair while one waits for its merge, so the pairs' calls
/// interleave; backups are taken one at a time in the pairs' order, so an object backed up by
/// several pairs (a ticket naming two secondaries) goes to them in the order they started,
/// and a download to the pair of the `artifacts.locate` before it. Returns the requests in
/// the order of `pairs` and those naming no pair (the run's own).
fn per_pair<'a>(
    w: &World,
    log: &'a [RequestRecord],
    pairs: &[(String, String)],
) -> (Vec<Vec<&'a RequestRecord>>, Vec<&'a RequestRecord>) {
    let mut contact: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (p, s)) in pairs.iter().enumerate() {
        contact.insert(p, i);
        contact.insert(s, i);
    }
    // Backed-up object -> the pairs backing it up, in the order they started (only the first
    // reads it, the others reuse its read).
    let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in started(w) {
        for o in objects(w, &pairs[i].1) {
            holders.entry(o).or_default().push(i);
        }
    }
    let parent: BTreeMap<&str, &str> = w
        .seed
        .artifacts
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap(),
                a["parent"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut by_object = |path: &str, id: &str, object: &str| -> Option<usize> {
        let k = seen.entry((path.to_string(), id.to_string())).or_default();
        let who = holders.get(object)?.get(*k).copied();
        *k += 1;
        who
    };
    let mut out = vec![Vec::new(); pairs.len()];
    let mut rest = Vec::new();
    let mut last_locate = None;
    for r in log {
        let who = match r.path.as_str() {
            "/timeline-entries.list" => {
                let o = r.body["object"].as_str().unwrap_or_default();
                by_object(&r.path, o, o)
            }
            "/artifacts.locate" | "/artifacts.get" => {
                let id = r.body["id"].as_str().unwrap_or_default();
                let who = by_object(&r.path, id, parent.get(id).copied().unwrap_or_default());
                if r.path == "/artifacts.locate" {
                    last_locate = who;
                }
                who
            }
            p if p.starts_with("/download/") => last_locate,
            // Shared by the pairs whose contacts they name: counted run-wide.
            "/works.list" | "/conversations.list" => None,
            // A look at a secondary after its merge (by its ref and its primary's), which
            // reads the survivor too: its pair's. Validate's batched lists: run-wide.
            "/rev-users.list" => pairs.iter().position(|(_, s)| w.is_look(r, s)),
            _ => first_contact(&r.body, &contact),
        };
        match who {
            Some(i) => out[i].push(r),
            None => rest.push(r),
        }
    }
    (out, rest)
}

/// The pairs (indexes into `w.pairs()`) in the order their Validate began.
fn started(w: &World) -> Vec<usize> {
    let started = w.validate_started();
    let mut order: Vec<usize> = started.keys().copied().collect();
    order.sort_by_key(|i| started[i]);
    order
}

/// The tickets and conversations naming `secondary`: what its pair's backup reads the
/// timeline of.
fn objects(w: &World, secondary: &str) -> BTreeSet<String> {
    let names = |v: &Value, field: &str| summary_ids(&v[field]).contains(&secondary.to_string());
    w.seed
        .tickets
        .iter()
        .filter(|t| names(t, "reported_by"))
        .chain(w.seed.conversations.iter().filter(|c| names(c, "members")))
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

/// The pair of the first contact id a request body names (its `id`, a merge's secondary, a
/// list filter).
fn first_contact(body: &Value, contact: &BTreeMap<&str, usize>) -> Option<usize> {
    match body {
        Value::String(s) => contact.get(s.as_str()).copied(),
        Value::Array(a) => a.iter().find_map(|v| first_contact(v, contact)),
        Value::Object(m) => m.values().find_map(|v| first_contact(v, contact)),
        _ => None,
    }
}

fn counts(reqs: &[&RequestRecord]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in reqs.iter().filter(|r| !r.path.starts_with("/download/")) {
        *out.entry(r.path.clone()).or_default() += 1;
    }
    out
}

fn check_world(keep_user: bool, renames: bool) {
    let mut sp = spec(10, 0, 13);
    sp.attachments_pct = 50;
    sp.timeline_entries = (1, 3);
    // Applied at once: the first look (after the run's first-look delay) always sees it.
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    b.delay = Duration::ZERO;
    b.renames_primary = renames;
    let mut w = World::new(sp, b);
    w.keep_user = keep_user;
    let a = w.run(&[]);
    let out = a.get_output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = w.fake.requests();
    let mut endpoints: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &log {
        let k = if r.path.starts_with("/download/") {
            "(downloads)"
        } else {
            r.path.as_str()
        };
        *endpoints.entry(k).or_default() += 1;
    }
    eprintln!("calls per endpoint (--keep user {keep_user}, renames {renames}): {endpoints:?}");
    let pairs = w.pairs();
    let (slices, before) = per_pair(&w, &log, &pairs);
    // The run's own calls: who it is, one rev-users.list per window of contacts
    // (Validate's batched reads), and the lists several pairs share.
    let lists = (2 * pairs.len()).div_ceil(devrev_merge::validate::WINDOW);
    let mut run_wide = counts(&before);
    let works = run_wide.remove("/works.list").unwrap_or(0);
    let convs = run_wide.remove("/conversations.list").unwrap_or(0);
    let validate_lists = run_wide.remove("/rev-users.list").unwrap_or(0);
    assert!(
        (1..=lists).contains(&validate_lists),
        "{validate_lists} rev-users.list for Validate: one per 20 contacts at most (the next \
         contacts ride in the looks)"
    );
    assert_eq!(
        run_wide,
        BTreeMap::from([("/auth-tokens.info".to_string(), 1)]),
        "the run's own calls"
    );
    // Each Reconcile lists after DevRev was seen to apply its merge (the look that found
    // the secondary gone): a list of each naming both its contacts, shared or its own.
    for (p, s) in &pairs {
        let look = log
            .iter()
            .rfind(|r| w.is_look(r, s))
            .expect("looked at")
            .seq;
        for (path, field) in [
            ("/works.list", "reported_by"),
            ("/conversations.list", "members"),
        ] {
            let names = |r: &&RequestRecord| {
                let ids = r.body[field].as_array().cloned().unwrap_or_default();
                ids.contains(&Value::from(p.as_str())) && ids.contains(&Value::from(s.as_str()))
            };
            let reconcile = log
                .iter()
                .filter(|r| r.path == path && r.seq > look)
                .filter(names)
                .count();
            assert!(reconcile >= 1, "{path} of Reconcile for {p} <- {s}");
        }
    }
    let n = pairs.len();
    assert!(
        works < 2 * n && convs < 2 * n,
        "backups share their lists: {works} works.list and {convs} conversations.list for {n} pairs"
    );
    let (mut sum_t, mut sum_c, mut sum_a, mut sum_a0, mut total) = (0, 0, 0, 0, 0);
    let mut sum_carry = 0;
    let mut sum_live = 0;
    // What the pairs started before each one read: not read again.
    let mut earlier_of = vec![BTreeSet::new(); pairs.len()];
    let mut read = BTreeSet::new();
    let mut shared = 0;
    for i in started(&w) {
        earlier_of[i] = read.clone();
        let mine = objects(&w, &pairs[i].1);
        shared += mine.intersection(&read).count();
        read.extend(mine);
    }
    for (((p, s), reqs), earlier) in pairs.iter().zip(&slices).zip(&earlier_of) {
        let t = terms(&w, s, earlier);
        let got = counts(reqs);
        let carried = carries(&w, p, s);
        assert_eq!(
            got,
            minimum(&t, keep_user, renames, carried),
            "pair {p} ← {s}: {t:?}"
        );
        // The same as one sum: the README's `3 + T + C + A + A₀ (+ N) (+ 2K) − U`.
        let calls: usize = got.values().sum();
        let k = usize::from(keep_user && carried);
        sum_carry += k;
        sum_live += usize::from(carried);
        assert_eq!(
            calls,
            3 + t.tickets
                + t.conversations
                + t.attachments
                + t.sizeless
                + usize::from(renames)
                + 2 * k
                - usize::from(keep_user)
        );
        let downloads = reqs
            .iter()
            .filter(|r| r.path.starts_with("/download/"))
            .count();
        assert_eq!(downloads, t.attachments, "one download per attachment");
        // Whose contacts were read one by one: none but --keep user's second survivor read;
        // the one look reads the secondary and the survivor.
        let gets = |id: &str| {
            reqs.iter()
                .filter(|r| r.path == "/rev-users.get" && r.body["id"] == id)
                .count()
        };
        assert_eq!(gets(p), usize::from(keep_user && carried), "primary reads");
        assert_eq!(gets(s), 0, "secondary reads");
        assert_eq!(
            reqs.iter().filter(|r| w.is_look(r, s)).count(),
            1,
            "one look"
        );
        sum_t += t.tickets;
        sum_c += t.conversations;
        sum_a += t.attachments;
        sum_a0 += t.sizeless;
        total += calls;
    }
    let n = pairs.len();
    let report = w.last_report();
    for e in report["pairs"].as_array().unwrap() {
        assert_eq!(e["display_name_restored"], renames, "{e}");
    }
    for (p, s) in &pairs {
        let now = w
            .fake
            .with_state(|st| st.rev_user(p).unwrap().json["display_name"].clone());
        // Its own name, or the secondary's where its own was only its email (carried).
        let want = match carried_name(&w, p, s) {
            Some(name) => Value::from(name),
            None => w.seed.rev_user(p).unwrap()["display_name"].clone(),
        };
        assert_eq!(now, want, "the primary keeps its name");
    }
    assert!(
        sum_t > 0 && sum_c > 0 && sum_a > 0 && sum_a0 > 0,
        "the world exercises every term"
    );
    assert!(shared > 0, "the world has objects several pairs share");
    assert_eq!(
        log.iter()
            .filter(|r| !r.path.starts_with("/download/"))
            .count(),
        total + 1 + validate_lists + works + convs
    );
    eprintln!(
        "calls per pair (--keep {}, renames {renames}): {n} pairs, T = {sum_t}, C = {sum_c}, A = {sum_a} (A₀ = {sum_a0}) distinct in the run, \
         {shared} timelines shared with an earlier pair not read again: {total} calls = 3·{n} + T + C + A + A₀{} + 2K − U ({sum_carry} carry-over updates, {sum_live} carry-overs), plus {works} works.list, {convs} conversations.list, {validate_lists} rev-users.list (Validate) and 1 auth-tokens.info: {:.1} per pair",
        if keep_user { "user" } else { "revu" },
        if renames { " + N (1 per pair)" } else { "" },
        (total + works + convs + validate_lists + 1) as f64 / n as f64
    );
}

#[test]
fn each_endpoint_is_called_the_minimum_per_pair_keep_revu() {
    check_world(false, false);
}

#[test]
fn each_endpoint_is_called_the_minimum_per_pair_keep_user() {
    check_world(true, false);
}

/// A merge that renames the primary costs exactly one more call: the name is read from the
/// adoption's answer (--keep revu) or the one re-read (--keep user), and set back once.
#[test]
fn a_renamed_primary_costs_one_update_more() {
    check_world(false, true);
    check_world(true, true);
}

/// Safety of the spared read: when the adoption cannot complete (DevRev keeps the ref on the
/// merged-away secondary and refuses its release), there is no answer carrying the primary,
/// so its name is read and put back anyway; the pair's adoption stays pending.
#[test]
fn a_pending_adoption_still_puts_the_primary_name_back() {
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Deactivated);
    b.renames_primary = true;
    let w = World::with(spec(3, 0, 35), b, |o| {
        o.quirks.merged_keeps_ref = true;
        o.quirks.refuse_merged_update = true;
    });
    let a = w
        .cmd()
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "10"])
        .assert();
    let out = a.get_output();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = w.last_report();
    assert_eq!(r["summary"]["ref_adoptions_pending"], 3, "{}", r["summary"]);
    assert_eq!(
        r["summary"]["display_names_restored"], 3,
        "{}",
        r["summary"]
    );
    for (p, _) in w.pairs() {
        let now = w
            .fake
            .with_state(|st| st.rev_user(&p).unwrap().json["display_name"].clone());
        assert_eq!(now, w.seed.rev_user(&p).unwrap()["display_name"]);
    }
}
