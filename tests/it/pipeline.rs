//! Never idle (issue 19): while one pair waits for DevRev to apply its merge, the next pairs
//! are validated and backed up. What a user relies on: the writes of different pairs never
//! interleave, a pair whose contacts are on a ticket the pair in flight rewrites waits for
//! it, and a crash or Ctrl-C while a pair is being prepared resumes with one merge per pair
//! (the prepared pair reported not started: nothing was sent for it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::read_savepoint;
use crate::merge::{World, behaviour, check_final_state, merges_handled, spec};
use devrev_fake::fake::{MoveMode, RequestRecord, SecondaryAfter};
use devrev_fake::seed::{GenSpec, summary_ids};

/// A world of `pairs` pairs whose tickets name no contact of another pair (so each write
/// belongs to exactly one pair), with merges applied `delay_ms` after they are accepted and
/// only every other ticket moved by the merge (Reconcile writes the rest).
fn world(pairs: usize, delay_ms: u64, seed: u64) -> World {
    World::new(own_tickets(pairs, seed), slow_merges(delay_ms))
}

fn own_tickets(pairs: usize, seed: u64) -> GenSpec {
    let mut sp = spec(pairs, 0, seed);
    sp.other_reporters = (0, 0);
    sp.tickets_per_contact = (1, 3);
    sp
}

fn slow_merges(delay_ms: u64) -> devrev_fake::fake::MergeBehaviour {
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Gone);
    b.delay = Duration::from_millis(delay_ms);
    b
}

/// The pair (index into `pairs`) a request is about: a contact it names, or the pair whose
/// contact the seed's ticket or conversation it writes names.
fn owner(w: &World, pairs: &[(String, String)], r: &RequestRecord) -> Option<usize> {
    let of_contact = |id: &str| pairs.iter().position(|(p, s)| p == id || s == id);
    match r.path.as_str() {
        "/rev-users.get" | "/rev-users.update" => of_contact(r.body["id"].as_str()?),
        "/rev-users.merge" => of_contact(r.body["secondary_user"].as_str()?),
        // A pair's own lists (its backup, its checks, Reconcile) name its contacts. Validate
        // reads contacts from the run's batched rev-users.list (issue 29), which names refs
        // and serves several pairs: a pair's first read of its own is its backup's list.
        "/works.list" | "/conversations.list" => {
            let field = if r.path == "/works.list" {
                "reported_by"
            } else {
                "members"
            };
            r.body[field]
                .as_array()?
                .iter()
                .find_map(|v| of_contact(v.as_str()?))
        }
        "/works.update" | "/conversations.update" => {
            let id = r.body["id"].as_str()?;
            let (list, field) = if r.path == "/works.update" {
                (&w.seed.tickets, "reported_by")
            } else {
                (&w.seed.conversations, "members")
            };
            let obj = list.iter().find(|o| o["id"] == id)?;
            let named = summary_ids(&obj[field]);
            let mut who: Vec<usize> = named.iter().filter_map(|c| of_contact(c)).collect();
            who.dedup();
            assert_eq!(who.len(), 1, "{id} names one pair: {named:?}");
            who.first().copied()
        }
        _ => None,
    }
}

/// `devrev-merge --csv contacts.csv --yes --merge-timeout 30`, its first look 0.4 s after each
/// merge request (twice a 200 ms backoff): after the worlds' 0.3 s apply delay, so no pair is
/// parked (a parked pair's repairs come at the end of the run, by design).
fn run(w: &World) -> assert_cmd::assert::Assert {
    w.cmd()
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "30"])
        .env("DEVREV_MERGE_MIN_BACKOFF_MS", "200")
        .assert()
}

fn is_write(r: &RequestRecord) -> bool {
    matches!(
        r.path.as_str(),
        "/rev-users.merge" | "/rev-users.update" | "/works.update" | "/conversations.update"
    )
}

/// The pairs in the order their Validate started.
fn in_order(started: &BTreeMap<usize, SystemTime>) -> Vec<usize> {
    let mut order: Vec<usize> = started.keys().copied().collect();
    order.sort_by_key(|i| started[i]);
    order
}

/// Each pair's first Validate and its writes.
struct Timeline {
    /// Pair indices in the order the run started them.
    order: Vec<usize>,
    first_read: BTreeMap<usize, SystemTime>,
    /// (arrival, pair) of every write, in arrival order.
    writes: Vec<(SystemTime, usize)>,
}

fn timeline(w: &World) -> Timeline {
    let pairs = w.pairs();
    let log = w.fake.requests();
    let first_read = w.validate_started();
    let mut writes = Vec::new();
    for r in &log {
        let Some(i) = owner(w, &pairs, r) else {
            continue;
        };
        if is_write(r) && r.status == 200 {
            writes.push((w.fake.wall_time(r), i));
        }
    }
    Timeline {
        order: in_order(&first_read),
        first_read,
        writes,
    }
}

impl Timeline {
    /// The writes grouped by pair, in arrival order: one group per pair means no two pairs'
    /// writes interleaved.
    fn write_groups(&self) -> Vec<usize> {
        let mut g: Vec<usize> = self.writes.iter().map(|(_, i)| *i).collect();
        g.dedup();
        g
    }

    fn last_write(&self, pair: usize) -> SystemTime {
        self.writes
            .iter()
            .filter(|(_, i)| *i == pair)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Pairs validated before the pair ahead of them had made its last write.
    fn prepared_ahead(&self) -> usize {
        self.order
            .windows(2)
            .filter(|w| self.first_read[&w[1]] < self.last_write(w[0]))
            .count()
    }
}

#[test]
fn one_merge_at_a_time_prepares_the_next_pair_during_the_wait_and_writes_never_interleave() {
    let w = world(6, 300, 41);
    let a = w
        .cmd()
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "30"])
        .arg("--one-merge-at-a-time")
        .env("DEVREV_MERGE_MIN_BACKOFF_MS", "200")
        .assert();
    let out = a.get_output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(&w);
    assert!(merges_handled(&w.fake.requests()).values().all(|n| *n == 1));
    let t = timeline(&w);
    let groups = t.write_groups();
    assert_eq!(
        groups, t.order,
        "every pair's writes in one block, in the order the pairs were started"
    );
    assert!(
        t.prepared_ahead() >= 3,
        "the next pair is validated while the one ahead waits for its merge: {} of 5",
        t.prepared_ahead()
    );
    // The report lists each pair's steps once each, in order.
    for e in w.last_report()["pairs"].as_array().unwrap() {
        let steps: Vec<&str> = e["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps[..3], ["validate", "backup", "verify_backup"], "{e}");
        assert_eq!(steps.iter().filter(|s| **s == "validate").count(), 1, "{e}");
    }
}

/// Issue 29: a pair whose backup shows it meets nothing in flight merges while the merge
/// before it is applied; the run stays exactly one merge per pair with nothing lost.
#[test]
fn a_pair_that_meets_nothing_in_flight_merges_while_another_merge_applies() {
    let w = world(6, 300, 41);
    let a = run(&w);
    let out = a.get_output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(&w);
    let log = w.fake.requests();
    assert!(merges_handled(&log).values().all(|n| *n == 1));
    // Two merges in flight: a merge request sent before the pair merged before it had made
    // its last write (its Reconcile and ref adoption).
    let pairs = w.pairs();
    let t = timeline(&w);
    let merge_at = |i: usize| {
        log.iter()
            .find(|r| {
                r.path == "/rev-users.merge" && r.body["secondary_user"] == pairs[i].1.as_str()
            })
            .map(|r| w.fake.wall_time(r))
            .unwrap()
    };
    let mut by_merge: Vec<usize> = (0..pairs.len()).collect();
    by_merge.sort_by_key(|&i| merge_at(i));
    let overlapped = by_merge
        .windows(2)
        .filter(|p| merge_at(p[1]) < t.last_write(p[0]))
        .count();
    assert!(
        overlapped >= 2,
        "merges sent while the one before was still in flight: {overlapped} of 5"
    );
    for e in w.last_report()["pairs"].as_array().unwrap() {
        assert_eq!(e["status"], "merged", "{e}");
        assert_eq!(e["merge_requests"], 1, "{e}");
    }
}

/// Waits (polling the savepoint as the run writes it) until two merges are accepted and not
/// seen applied.
fn wait_for_two_merges_in_flight(w: &World) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "two merges were never in flight");
        let sp = read_savepoint(&w.path("savepoint.json"));
        let in_flight = sp.as_ref().map_or(0, |sp| {
            sp["pairs"]
                .as_object()
                .unwrap()
                .values()
                .filter(|r| r["merge"]["outcome"]["kind"] == "accepted" && r["merged"].is_null())
                .count()
        });
        if in_flight >= 2 {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Ctrl-C with two merges in flight: both are journaled as sent and reported, the run exits
/// 75, and the next run finishes them without sending either again.
#[test]
fn ctrl_c_with_two_merges_in_flight_reports_both_and_resumes_cleanly() {
    let w = world(4, 60_000, 63);
    let mut cmd = w.std_cmd(&["--csv", "contacts.csv", "--yes", "--merge-timeout", "60"]);
    cmd.env("DEVREV_MERGE_MIN_BACKOFF_MS", "400");
    let child = cmd.spawn().unwrap();
    wait_for_two_merges_in_flight(&w);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    let report = w.last_report();
    assert_eq!(report["outcome"], "interrupted");
    let sent: Vec<&Value> = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["merge_requests"] == 1)
        .collect();
    assert_eq!(
        sent.len(),
        2,
        "both merges in flight are reported: {report}"
    );
    resume_and_finish(&w);
}

/// SIGKILL with two merges in flight: the next run resolves both from the journal and sends
/// no merge twice.
#[test]
fn a_kill_with_two_merges_in_flight_resumes_with_one_merge_per_pair() {
    let w = world(4, 60_000, 59);
    let mut cmd = w.std_cmd(&["--csv", "contacts.csv", "--yes", "--merge-timeout", "60"]);
    cmd.env("DEVREV_MERGE_MIN_BACKOFF_MS", "400");
    let child = cmd.spawn().unwrap();
    wait_for_two_merges_in_flight(&w);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed");
    resume_and_finish(&w);
}

#[test]
fn a_pair_named_on_a_ticket_the_pair_in_flight_rewrites_waits_for_it() {
    // Every secondary's tickets also name every other pair's primary: each pair's Reconcile
    // rewrites tickets every later pair would back up, so none is prepared ahead.
    let w = World::with(own_tickets(4, 43), slow_merges(300), |o| {
        let pairs = o.seed.pairs();
        let summaries: Vec<Value> = pairs
            .iter()
            .map(|(revu, _)| {
                o.seed
                    .tickets
                    .iter()
                    .flat_map(|t| t["reported_by"].as_array().cloned().unwrap_or_default())
                    .find(|u| u["id"] == revu.as_str())
                    .unwrap_or_else(|| serde_json::json!({ "id": revu, "type": "rev_user" }))
            })
            .collect();
        for (_, user) in &pairs {
            let t = o
                .seed
                .tickets
                .iter_mut()
                .find(|t| summary_ids(&t["reported_by"]).contains(user))
                .expect("every secondary has a ticket");
            let list = t["reported_by"].as_array_mut().unwrap();
            for s in &summaries {
                if !list.iter().any(|u| u["id"] == s["id"]) {
                    list.push(s.clone());
                }
            }
        }
    });
    let out = run(&w).get_output().clone();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(merges_handled(&w.fake.requests()).values().all(|n| *n == 1));
    let (order, first_read, last_merge_write) = contact_timeline(&w);
    assert_eq!(order.len(), 4);
    for p in order.windows(2) {
        assert!(
            first_read[&p[1]] > last_merge_write[&p[0]],
            "pair {} was read before pair {} finished its writes",
            p[1],
            p[0]
        );
    }
}

/// From the requests that name a contact (`rev-users.get`, `.update`, `.merge`): the pairs
/// (indices into `w.pairs()`) in the order their first read came, the seq of that read, and
/// the seq of each pair's last write to a contact.
fn contact_timeline(
    w: &World,
) -> (
    Vec<usize>,
    BTreeMap<usize, SystemTime>,
    BTreeMap<usize, SystemTime>,
) {
    let pairs = w.pairs();
    let of_contact = |id: &str| pairs.iter().position(|(p, s)| p == id || s == id);
    let first_read = w.validate_started();
    let mut last_write = BTreeMap::new();
    for r in &w.fake.requests() {
        let who = match r.path.as_str() {
            "/rev-users.update" => r.body["id"].as_str().and_then(of_contact),
            "/rev-users.merge" => r.body["secondary_user"].as_str().and_then(of_contact),
            _ => None,
        };
        if let Some(i) = who
            && is_write(r)
        {
            last_write.insert(i, w.fake.wall_time(r));
        }
    }
    (in_order(&first_read), first_read, last_write)
}

/// A seed's pairs `(revu, user)` in the schedule's order: by email.
fn by_email_of(seed: &devrev_fake::seed::Seed) -> Vec<(String, String)> {
    let email = |s: &str| {
        seed.groups
            .iter()
            .find(|g| g.members.iter().any(|m| m == s))
            .map(|g| g.email.clone())
            .unwrap()
    };
    let mut sorted = seed.pairs();
    sorted.sort_by_key(|(_, s)| email(s));
    sorted
}

/// The world's pairs (indices into `w.pairs()`) in the schedule's order.
fn by_email(w: &World) -> Vec<usize> {
    let pairs = w.pairs();
    by_email_of(&w.seed)
        .iter()
        .map(|(_, s)| pairs.iter().position(|(_, sec)| sec == s).unwrap())
        .collect()
}

/// A world of `pairs` pairs whose tickets name no other pair, except that one ticket of the
/// contact `pick` names (given the pairs in the schedule's order) also names a second one.
fn one_shared_ticket(
    pairs: usize,
    seed: u64,
    delay_ms: u64,
    pick: impl FnOnce(&[(String, String)]) -> (String, String),
) -> World {
    let mut tweaked = None;
    let mut w = World::with(own_tickets(pairs, seed), slow_merges(delay_ms), |o| {
        let (owner, added) = pick(&by_email_of(&o.seed));
        let t = o
            .seed
            .tickets
            .iter_mut()
            .find(|t| summary_ids(&t["reported_by"]).contains(&owner))
            .expect("the contact has a ticket");
        t["reported_by"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "id": added, "type": "rev_user" }));
        tweaked = Some(o.seed.clone());
    });
    // The final state is checked against the world as served.
    w.seed = tweaked.expect("tweaked");
    w
}

/// Three pairs a, b, c (in the schedule's order) whose tickets name no other pair, except
/// one ticket of a's secondary that also names b's primary: a's Reconcile rewrites a ticket
/// b would back up.
fn a_meets_b() -> World {
    one_shared_ticket(3, 49, 300, |p| (p[0].1.clone(), p[1].0.clone()))
}

#[test]
fn a_pair_held_by_the_one_in_flight_is_passed_over_and_runs_after_it() {
    let w = a_meets_b();
    let [a, b, c] = by_email(&w)[..] else {
        panic!("three pairs")
    };
    let out = run(&w).get_output().clone();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(&w);
    assert!(merges_handled(&w.fake.requests()).values().all(|n| *n == 1));
    let (order, first_read, last_write) = contact_timeline(&w);
    // b waits for a; c, which nothing in flight meets, is prepared during a's wait and has
    // its turn before b.
    assert_eq!(order, [a, c, b], "turns in the order they came");
    assert!(
        first_read[&b] > last_write[&a],
        "b was read before a finished its writes"
    );
    assert!(
        first_read[&c] < last_write[&a],
        "c was prepared while a waited for its merge"
    );
    let merges: Vec<usize> = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.path == "/rev-users.merge")
        .filter_map(|r| {
            let s = r.body["secondary_user"].as_str()?;
            w.pairs().iter().position(|(_, sec)| sec == s)
        })
        .collect();
    assert_eq!(merges, [a, c, b], "the merges in the same order");
    // b's backup holds the ticket it shares with a as a's merge and Reconcile left it (a's
    // primary in a's secondary's place), never a list answer read before a's writes.
    let pairs = w.pairs();
    let (pa, sa) = &pairs[a];
    let pb = &pairs[b].0;
    let report = w.last_report();
    let eb = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["secondary"] == pairs[b].1.as_str())
        .expect("b is reported");
    let dir = w.path(eb["backup_dir"].as_str().expect("b's backup"));
    let tickets = devrev_merge::backup::load_tickets(&dir).unwrap();
    let shared: Vec<_> = tickets
        .iter()
        .filter(|t| t.reported_by.iter().any(|u| &u.id == pb))
        .filter(|t| t.reported_by.iter().any(|u| &u.id == pa || &u.id == sa))
        .collect();
    assert_eq!(shared.len(), 1, "the one ticket a and b share: {tickets:?}");
    let names: Vec<&str> = shared[0]
        .reported_by
        .iter()
        .map(|u| u.id.as_str())
        .collect();
    assert!(
        names.contains(&pa.as_str()) && !names.contains(&sa.as_str()),
        "b backed up the shared ticket as it was before a's writes: {names:?}"
    );
}

#[test]
fn under_max_merges_no_pair_is_passed_over() {
    // A canary merges the schedule's first pairs, whatever meets what.
    let w = a_meets_b();
    let [a, b, c] = by_email(&w)[..] else {
        panic!("three pairs")
    };
    let out = w
        .cmd()
        .args(["--csv", "contacts.csv", "--yes", "--merge-timeout", "30"])
        .args(["--max-merges", "2"])
        .env("DEVREV_MERGE_MIN_BACKOFF_MS", "200")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (order, _, _) = contact_timeline(&w);
    assert_eq!(order, [a, b], "c not started");
    let pairs = w.pairs();
    let merged: Vec<String> = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.path == "/rev-users.merge")
        .filter_map(|r| r.body["secondary_user"].as_str().map(String::from))
        .collect();
    assert_eq!(merged, [pairs[a].1.clone(), pairs[b].1.clone()]);
    assert_eq!(
        writes_naming(&w.fake.requests(), &pairs[c].0, &pairs[c].1),
        0
    );
}

/// Waits (polling the savepoint as the run writes it) until one pair's merge is accepted and
/// not seen applied while another pair has its backup and no merge request: a pair prepared
/// during the wait. Returns that pair's contacts.
fn wait_for_a_prepared_pair(w: &World) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "no pair was prepared during a wait"
        );
        if let Some(sp) = read_savepoint(&w.path("savepoint.json")) {
            let recs: Vec<&Value> = sp["pairs"].as_object().unwrap().values().collect();
            let waiting = recs
                .iter()
                .any(|r| r["merge"]["outcome"]["kind"] == "accepted" && r["merged"].is_null());
            let prepared = recs
                .iter()
                .find(|r| !r["backup"].is_null() && r["merge"].is_null());
            if waiting && let Some(p) = prepared {
                return (
                    p["primary"].as_str().unwrap().to_string(),
                    p["secondary"].as_str().unwrap().to_string(),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The run's arguments with a first look 0.8 s after each request (so a wait is long enough
/// to catch), the savepoint being watched by the test; one merge at a time, so a pair
/// prepared during a wait stays prepared (not merged) until its turn.
fn slow_watch_cmd(w: &World) -> std::process::Command {
    let mut c = w.std_cmd(&[
        "--csv",
        "contacts.csv",
        "--yes",
        "--merge-timeout",
        "60",
        "--one-merge-at-a-time",
    ]);
    c.env("DEVREV_MERGE_MIN_BACKOFF_MS", "400");
    c
}

fn writes_naming(log: &[RequestRecord], p: &str, s: &str) -> usize {
    log.iter()
        .filter(|r| is_write(r))
        .filter(|r| {
            let b = r.body.to_string();
            b.contains(p) || b.contains(s)
        })
        .count()
}

#[test]
fn a_kill_while_a_pair_is_prepared_resumes_with_one_merge_per_pair() {
    // Merges take a minute to apply: the first pair waits, the next ones are prepared.
    let w = world(4, 60_000, 45);
    let child = slow_watch_cmd(&w).spawn().unwrap();
    let pid = Arc::new(AtomicI32::new(child.id() as i32));
    let (p, s) = wait_for_a_prepared_pair(&w);
    kill(Pid::from_raw(pid.load(Ordering::SeqCst)), Signal::SIGKILL).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed");
    assert_eq!(
        writes_naming(&w.fake.requests(), &p, &s),
        0,
        "nothing was written for the prepared pair"
    );
    // DevRev applies what it accepted; the rerun finishes every pair.
    resume_and_finish(&w);
}

#[test]
fn ctrl_c_while_a_pair_is_prepared_stops_before_its_merge_and_resumes_cleanly() {
    let w = world(4, 60_000, 47);
    let child = slow_watch_cmd(&w).spawn().unwrap();
    let (p, s) = wait_for_a_prepared_pair(&w);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert_eq!(writes_naming(&w.fake.requests(), &p, &s), 0, "{err}");
    let report = w.last_report();
    assert_eq!(report["outcome"], "interrupted");
    // Its turn never came: not started as far as DevRev goes, its backup kept.
    let entry = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["secondary"] == s.as_str())
        .expect("the prepared pair is in the report")
        .clone();
    assert_eq!(entry["status"], "not_started", "{entry}");
    assert!(entry["backup_dir"].is_string(), "{entry}");
    // The savepoint holds the prepared pair's backup and no merge request.
    let sp = read_savepoint(&w.path("savepoint.json")).unwrap();
    let rec = &sp["pairs"][format!("{p} <- {s}")];
    assert!(!rec["backup"].is_null() && rec["merge"].is_null(), "{rec}");

    resume_and_finish(&w);
}

/// A ticket naming `secondary` added to DevRev while the run is under way.
fn add_ticket_naming(w: &World, secondary: &str) -> String {
    w.fake.with_state(|st| {
        let mut json = st.works.values().next().expect("a ticket").json.clone();
        let id = json["id"]
            .as_str()
            .unwrap()
            .rsplit_once('/')
            .map(|(head, _)| format!("{head}/9999"))
            .unwrap();
        json["id"] = Value::from(id.clone());
        json["display_id"] = Value::from("TKT-9999");
        json["reported_by"] = serde_json::json!([{ "id": secondary, "type": "rev_user" }]);
        json["artifacts"] = serde_json::json!([]);
        st.works
            .insert(id.clone(), devrev_fake::fake::TicketRec { json });
        id
    })
}

/// Runs a world whose first merge takes a minute to apply until a pair is prepared during
/// that wait, adds a ticket to the prepared pair's secondary, lets the merge apply, and
/// returns the prepared pair's record from the savepoint with the new ticket's id.
fn a_ticket_added_after_a_pair_was_prepared(fresh_for_ms: Option<u64>) -> (World, Value, String) {
    let w = world(3, 60_000, 53);
    let mut cmd = slow_watch_cmd(&w);
    if let Some(ms) = fresh_for_ms {
        cmd.env("DEVREV_MERGE_TEST_FRESH_FOR_MS", ms.to_string());
    }
    let child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (p, s) = wait_for_a_prepared_pair(&w);
    let added = add_ticket_naming(&w, &s);
    w.fake
        .set_options(|o| o.merge.delay = Duration::from_millis(30));
    w.fake.apply_pending_merges();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(merges_handled(&w.fake.requests()).values().all(|n| *n == 1));
    let sp = read_savepoint(&w.path("savepoint.json")).unwrap();
    let rec = sp["pairs"][format!("{p} <- {s}")].clone();
    (w, rec, added)
}

fn backed_up_ticket_ids(w: &World, rec: &Value) -> Vec<String> {
    // Relative to the folder the run was started in.
    let dir = w.path(rec["backup"]["dir"].as_str().expect("a backup"));
    let tickets: Value =
        serde_json::from_slice(&std::fs::read(dir.join("tickets.json")).unwrap()).unwrap();
    tickets
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_prepared_backup_that_waited_too_long_is_checked_again_before_its_merge() {
    // Any wait is too long here: at its turn the prepared pair's backup is compared with
    // DevRev's lists, the ticket added meanwhile makes it stale, and a new one is taken
    // before the merge.
    let (w, rec, added) = a_ticket_added_after_a_pair_was_prepared(Some(0));
    assert!(
        backed_up_ticket_ids(&w, &rec).contains(&added),
        "the backup the merge followed holds the ticket added after the pair was prepared: {rec}"
    );
    assert!(rec["merged"].is_object(), "{rec}");
    let t = w.fake.with_state(|st| st.works[&added].reported_by_ids());
    assert_eq!(t, [rec["primary"].as_str().unwrap()], "and it was moved");
}

#[test]
fn a_prepared_backup_younger_than_its_freshness_is_checked_against_a_later_list() {
    // The same run with the 90 s rule. Before issue 29 the backup taken during the wait was
    // used as it was, and the ticket added after it was missing from it (only Reconcile
    // repaired it). Now, at its turn, the backup is compared with a list read since (the
    // one the pair before it made for its Reconcile, which asked for this pair's contacts
    // too): the added ticket makes it stale, and the backup the merge follows holds it.
    let (w, rec, added) = a_ticket_added_after_a_pair_was_prepared(None);
    assert!(backed_up_ticket_ids(&w, &rec).contains(&added), "{rec}");
    assert!(rec["merged"].is_object(), "{rec}");
    let t = w.fake.with_state(|st| st.works[&added].reported_by_ids());
    assert_eq!(t, [rec["primary"].as_str().unwrap()]);
}

#[test]
fn a_parked_pair_is_settled_before_the_turn_of_a_pair_it_meets() {
    // a's merge takes 3 s to apply, longer than its first watch: it is parked. b's
    // secondary is on a ticket of a's secondary, so b's repairs would write a ticket naming
    // a contact DevRev is about to remove: a is watched until merged and repaired first.
    let w = one_shared_ticket(2, 57, 3_000, |p| (p[0].1.clone(), p[1].1.clone()));
    let [a, b] = by_email(&w)[..] else {
        panic!("two pairs")
    };
    // Only a's merge is slow.
    let out = slow_first_merge(&w, &[], Duration::from_millis(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(&w);
    assert!(merges_handled(&w.fake.requests()).values().all(|n| *n == 1));
    let (order, first_read, last_write) = contact_timeline(&w);
    assert_eq!(order, [a, b]);
    assert!(
        first_read[&b] > last_write[&a],
        "b started before the parked pair a was merged and repaired"
    );
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let report = w.last_report();
    for e in report["pairs"].as_array().unwrap() {
        assert_eq!(e["status"], "merged", "{e}\n{log}");
    }
}

/// A parked pair is looked at again while the run goes on, not only at its end: once DevRev
/// applies its merge, its repairs and ref adoption come while the later pairs still run, so it
/// stops holding back the pairs it meets (issue 29: one scheduler).
#[test]
fn a_parked_pair_is_visited_and_repaired_while_the_run_goes_on() {
    // a's merge takes 3 s to apply, longer than its first watch: it is parked. The next
    // five pairs' merges take 1 s each, one merge at a time: the run goes on for 5 s more.
    let w = world(6, 3_000, 71);
    let order = by_email(&w);
    let out = slow_first_merge(&w, &["--one-merge-at-a-time"], Duration::from_secs(1));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{log}");
    check_final_state(&w);
    let requests = w.fake.requests();
    assert!(merges_handled(&requests).values().all(|n| *n == 1));
    assert!(log.contains("coming back to it"), "a was parked: {log}");
    let pairs = w.pairs();
    let (a, last) = (order[0], order[order.len() - 1]);
    let (_, _, last_write) = contact_timeline(&w);
    let last_merge = requests
        .iter()
        .filter(|r| r.path == "/rev-users.merge" && r.body["secondary_user"] == pairs[last].1)
        .map(|r| w.fake.wall_time(r))
        .max()
        .expect("the last pair's merge");
    assert!(
        last_write[&a] < last_merge,
        "the parked pair's repairs waited for the end of the run\n{log}"
    );
    for e in w.last_report()["pairs"].as_array().unwrap() {
        assert_eq!(e["status"], "merged", "{e}\n{log}");
    }
}

/// Ctrl-C while parked pairs are visited beside the pair in hand: the pair in hand finishes
/// its step and is reported, every pair whose merge was sent is reported as such (none as
/// not started), and the next run finishes them all with one merge per pair.
#[test]
fn ctrl_c_while_a_parked_pair_is_visited_reports_every_sent_merge_and_resumes_cleanly() {
    // a's merge never applies in this run; the others apply 1 s after their request, one
    // merge at a time, while a is visited again and again.
    let w = world(5, 60_000, 73);
    let child =
        spawn_slow_first_merge(&w, "60", &["--one-merge-at-a-time"], Duration::from_secs(1));
    assert!(
        w.fake
            .wait_for(|st| st.merges.len() >= 3, Duration::from_secs(60)),
        "three merges sent"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(75), "{log}");
    let report = w.last_report();
    assert_eq!(report["outcome"], "interrupted", "{log}");
    let sent = merges_handled(&w.fake.requests());
    let pairs = report["pairs"].as_array().unwrap();
    for e in pairs
        .iter()
        .filter(|e| e["merge_requests"].as_u64() > Some(0))
    {
        assert_ne!(e["status"], "not_started", "{e}\n{log}");
    }
    assert_eq!(
        pairs
            .iter()
            .filter(|e| e["merge_requests"].as_u64() > Some(0))
            .count(),
        sent.len(),
        "every merge sent is reported: {report}"
    );
    resume_and_finish(&w);
}

/// Issue 29: a backup prepared ahead of its turn may come from a list several pairs shared;
/// a ticket changed or added between that read and the pair's merge is in the backup all the
/// same: at its turn the backup is compared with a list read since, and taken again.
#[test]
fn a_ticket_changed_or_added_after_a_prepared_backup_is_in_the_backup_merged_over() {
    let w = world(3, 3_000, 61);
    let child = slow_watch_cmd(&w).spawn().unwrap();
    let (_, s) = wait_for_a_prepared_pair(&w);
    // Someone edits one of the secondary's tickets and opens a new one while the pair waits.
    let (changed, added) = w.fake.with_state(|st| {
        let id = st
            .works
            .iter()
            .find(|(_, t)| summary_ids(&t.json["reported_by"]).contains(&s))
            .map(|(id, _)| id.clone())
            .expect("the secondary has a ticket");
        let mut copy = st.works[&id].clone();
        let t = &mut st.works.get_mut(&id).unwrap().json;
        t["title"] = "edited while the pair waited".into();
        t["modified_date"] = chrono::Utc::now().to_rfc3339().into();
        let new_id = format!("{id}9");
        copy.json["id"] = new_id.clone().into();
        copy.json["display_id"] = "TKT-99999".into();
        copy.json["title"] = "opened while the pair waited".into();
        st.works.insert(new_id.clone(), copy);
        (id, new_id)
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(merges_handled(&w.fake.requests()).values().all(|n| *n == 1));
    let report = w.last_report();
    let e = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["secondary"] == s.as_str())
        .expect("the pair is reported");
    assert_eq!(e["status"], "merged", "{e}");
    let backups = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["step"] == "backup")
        .count();
    assert_eq!(
        backups, 2,
        "the prepared backup was taken again at its turn: {e}"
    );
    let dir = w.path(e["backup_dir"].as_str().unwrap());
    let tickets = devrev_merge::backup::load_tickets(&dir).unwrap();
    let title = |id: &str| {
        tickets
            .iter()
            .find(|t| t.id == id)
            .and_then(|t| t.title.clone())
    };
    assert_eq!(
        title(&changed).as_deref(),
        Some("edited while the pair waited"),
        "the edit is in the backup"
    );
    assert_eq!(
        title(&added).as_deref(),
        Some("opened while the pair waited"),
        "the new ticket is in the backup"
    );
}

/// A merge run (`--merge-timeout 30`, 200 ms backoff, `extra`) whose first merge applies
/// with the world's delay and every later one `then` after it is accepted.
fn slow_first_merge(w: &World, extra: &[&str], then: Duration) -> std::process::Output {
    spawn_slow_first_merge(w, "30", extra, then)
        .wait_with_output()
        .unwrap()
}

/// [`slow_first_merge`] with `--merge-timeout timeout`, still running once the first merge
/// is accepted.
fn spawn_slow_first_merge(
    w: &World,
    timeout: &str,
    extra: &[&str],
    then: Duration,
) -> std::process::Child {
    let mut args = vec!["--csv", "contacts.csv", "--yes", "--merge-timeout", timeout];
    args.extend(extra);
    let child = w
        .std_cmd(&args)
        .env("DEVREV_MERGE_MIN_BACKOFF_MS", "200")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        w.fake
            .wait_for(|st| !st.merges.is_empty(), Duration::from_secs(60))
    );
    w.fake.set_options(|o| o.merge.delay = then);
    child
}

/// DevRev applies what it accepted (and the next merges quickly); a plain rerun then finishes
/// every pair, right and with one merge request each.
fn resume_and_finish(w: &World) {
    w.fake
        .set_options(|o| o.merge.delay = Duration::from_millis(30));
    w.fake.apply_pending_merges();
    let out = run(w).get_output().clone();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_final_state(w);
    assert!(
        merges_handled(&w.fake.requests()).values().all(|n| *n == 1),
        "one merge per pair: {:?}",
        merges_handled(&w.fake.requests())
    );
}
