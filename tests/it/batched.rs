//! Issue 29: contacts are read a window at a time (`rev-users.list` by the pairs'
//! `external_ref`s) instead of one `rev-users.get` each, and a batched read never stands in
//! for what it cannot vouch for: a contact it left out, a server that ignores the filter, a
//! record older than the freshness window.

use std::time::Duration;

use devrev_fake::fake::{MoveMode, RequestRecord, SecondaryAfter};

use crate::merge::{World, behaviour, check_final_state, find, spec};

fn calls(log: &[RequestRecord], path: &str) -> usize {
    log.iter().filter(|r| r.path == path).count()
}

fn gets_of(log: &[RequestRecord], id: &str) -> usize {
    log.iter()
        .filter(|r| r.path == "/rev-users.get" && r.body["id"] == id)
        .count()
}

fn merge_seq(log: &[RequestRecord], secondary: &str) -> usize {
    log.iter()
        .find(|r| r.path == "/rev-users.merge" && r.body["secondary_user"] == secondary)
        .map(|r| r.seq)
        .expect("the pair was merged")
}

fn gets_before(log: &[RequestRecord], id: &str, seq: usize) -> usize {
    log.iter()
        .filter(|r| r.path == "/rev-users.get" && r.body["id"] == id && r.seq < seq)
        .count()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

#[test]
fn a_run_reads_its_contacts_ten_pairs_per_call() {
    let w = World::new(
        spec(14, 0, 29),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    // Paced (ten calls a second), as at DevRev's pace: the survivors' reads wait for their
    // turn, which is when they gather (unpaced, whether they meet is up to the machine's load).
    let a = w.run(&["--rate-limit-calls", "600"]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    check_final_state(&w);
    let log = w.fake.requests();
    // 28 contacts: two windows of 20 at most (the test run is far inside the freshness
    // window), and fewer where the next contacts ride in a look after a merge (a list by
    // the secondary's and the primary's refs that reads the survivor too).
    let pairs = w.pairs();
    let is_look = |r: &RequestRecord| pairs.iter().any(|(_, s)| w.is_look(r, s));
    let validating = log
        .iter()
        .filter(|r| r.path == "/rev-users.list" && !is_look(r))
        .count();
    assert!(
        (1..=2).contains(&validating),
        "{validating} lists: one per 20 contacts at most"
    );
    for (p, s) in w.pairs() {
        let merge = merge_seq(&log, &s);
        assert_eq!(
            gets_before(&log, &p, merge) + gets_before(&log, &s, merge),
            0,
            "pair {p} <- {s}: validated from the list, no get of its own before its merge"
        );
    }
    // The list asked for exactly the refs of the CSV, nothing else (no prefix search).
    // Each contact asked for once for Validate: in a list of its own or after a look's two
    // and the `-drop-` ref a merge gives its secondary.
    let lists: Vec<&RequestRecord> = log.iter().filter(|r| r.path == "/rev-users.list").collect();
    let asked: Vec<String> = lists
        .iter()
        .flat_map(|r| {
            let refs = r.body["external_ref"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            refs.into_iter().skip(if is_look(r) { 3 } else { 0 })
        })
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(asked.len(), 28, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|r| r.starts_with("REVU-") || r.starts_with("user_")),
        "{asked:?}"
    );
    // Each survivor is read by the look that found its merge applied (its last look): no
    // read of its own after it, and no contact read one by one.
    for (p, s) in &pairs {
        let found = log.iter().rfind(|r| w.is_look(r, s)).expect("looked at");
        assert_eq!(found.path, "/rev-users.list", "{p} <- {s}");
        assert_eq!(
            found.body["external_ref"][1],
            w.seed.rev_user(p).unwrap()["external_ref"]
        );
    }
    assert_eq!(
        lists.len() - validating,
        log.iter()
            .filter(|r| r.path == "/rev-users.list" && is_look(r))
            .count(),
        "every other rev-users.list is a look"
    );
    assert_eq!(
        calls(&log, "/rev-users.get"),
        0,
        "no contact read one by one"
    );
}

#[test]
fn a_list_that_ignores_its_filter_is_noticed_and_every_contact_read_alone() {
    let w = World::with(
        spec(6, 1, 30),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| o.quirks.list_ignores_filters = true,
    );
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    assert!(
        stderr(&a).contains("ignores the filter"),
        "one warning says why every contact is read alone: {}",
        stderr(&a)
    );
    check_final_state(&w);
    let log = w.fake.requests();
    assert_eq!(
        calls(&log, "/rev-users.list"),
        1,
        "batching is off after the first answer"
    );
    for (p, s) in w.pairs() {
        let merge = merge_seq(&log, &s);
        assert_eq!(gets_before(&log, &p, merge), 1, "{p} read alone");
        assert_eq!(gets_before(&log, &s, merge), 1, "{s} read alone");
    }
}

#[test]
fn a_contact_the_list_leaves_out_is_read_alone_and_judged_as_before() {
    let w = World::new(
        spec(4, 0, 31),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let (p, s) = w.pairs()[1].clone();
    // Someone changed the secondary's ref since the export: the batched list (by the CSV's
    // refs) does not answer it, so it is read alone, and the pair is skipped for the change.
    w.fake.with_state(|st| {
        st.rev_users.get_mut(&s).unwrap().json["external_ref"] = "user_changed_since".into();
    });
    let a = w.run(&[]);
    assert_eq!(
        a.get_output().status.code(),
        Some(1),
        "one pair skipped: {}",
        stderr(&a)
    );
    let log = w.fake.requests();
    assert_eq!(gets_of(&log, &s), 1, "the left-out secondary read alone");
    assert_eq!(gets_of(&log, &p), 0, "its primary came from the list");
    let r = w.last_report();
    let pair = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["secondary"] == s.as_str())
        .expect("the pair is reported");
    assert_eq!(pair["status"], "skipped", "{pair}");
    assert!(
        pair.to_string().contains("ref_changed"),
        "skipped for the changed ref: {pair}"
    );
    assert_eq!(
        w.fake
            .with_state(|st| st.merges.iter().filter(|m| m.secondary == s).count()),
        0,
        "never merged"
    );
}

#[test]
fn batched_reads_older_than_the_freshness_window_are_read_again() {
    let w = World::new(
        spec(5, 0, 32),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let a = w
        .cmd()
        .env("DEVREV_MERGE_TEST_FRESH_FOR_MS", "0")
        .args(w.run_args())
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    check_final_state(&w);
    let log = w.fake.requests();
    // Nothing read is ever fresh: every contact is read anew for its own check (by a list
    // made for it, or alone), never taken from a list made for an earlier pair.
    let n = w.pairs().len();
    let reads = calls(&log, "/rev-users.list") + calls(&log, "/rev-users.get") - n;
    assert!(
        reads >= 2 * n,
        "{reads} contact reads for {n} pairs (one list would have served them all)"
    );
}

#[test]
fn the_live_check_reads_contacts_ten_pairs_per_call() {
    let w = World::new(
        spec(12, 0, 33),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let a = w
        .cmd()
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .assert();
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    let log = w.fake.requests();
    assert_eq!(
        calls(&log, "/rev-users.get"),
        0,
        "every contact from a list"
    );
    assert_eq!(calls(&log, "/rev-users.list"), 2, "24 contacts: two lists");
}

/// A contact the export says has few tickets but DevRev answers many for is added to another
/// pair's list once, then never again: one large customer is not read with every list.
#[test]
fn a_contact_with_more_tickets_than_the_export_says_is_asked_for_once() {
    let w = World::new(
        spec(8, 0, 34),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let pairs = w.pairs();
    // The schedule runs the pairs by email; take the last one's primary, which every earlier
    // pair's lists ask for as an upcoming contact.
    let by_email = {
        let mut v = pairs.clone();
        let email = |id: &str| {
            w.seed.rev_user(id).unwrap()["email"]
                .as_str()
                .unwrap()
                .to_lowercase()
        };
        v.sort_by_key(|(p, _)| email(p));
        v
    };
    let (big, big_secondary) = by_email.last().unwrap().clone();
    w.fake.with_state(|st| {
        let template = st.works.values().next().unwrap().clone();
        for n in 0..15 {
            let mut t = template.clone();
            let id = format!("{}-bulk{n}", template.json["id"].as_str().unwrap());
            t.json["id"] = id.clone().into();
            t.json["display_id"] = format!("TKT-8{n:03}").into();
            t.json["reported_by"] = serde_json::json!([{ "id": big, "type": "rev_user" }]);
            st.works.insert(id, t);
        }
    });
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    let log = w.fake.requests();
    let asked_for_others = log
        .iter()
        .filter(|r| r.path == "/works.list")
        .filter(|r| {
            let ids: Vec<&str> = r.body["reported_by"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            ids.contains(&big.as_str())
                && !ids[..2.min(ids.len())].contains(&big.as_str())
                && !ids[..2.min(ids.len())].contains(&big_secondary.as_str())
        })
        .count();
    assert_eq!(
        asked_for_others, 1,
        "the large contact was added to other pairs' lists once"
    );
}

/// Issue 29: pairs that meet nothing have their merges in flight together, and what they
/// read after their merges (Reconcile's lists, the survivor before the carry-over) is read
/// for several at once; each of those reads still comes after DevRev was seen to apply the
/// merges it stands in for.
#[test]
fn merges_that_meet_nothing_fly_together_and_their_reads_after_them_are_shared() {
    let mut sp = spec(8, 0, 41);
    sp.tickets_per_contact = (0, 0);
    sp.conversations_per_secondary = (0, 0);
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    // Long enough that the next pairs' merges go out while the first ones apply.
    b.delay = Duration::from_millis(400);
    let w = World::new(sp, b);
    // Paced (ten calls a second): calls wait for their turn, as at DevRev's pace, which is
    // when reads gather.
    let a = w.run(&["--rate-limit-calls", "600"]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    check_final_state(&w);
    let log = w.fake.requests();
    let pairs = w.pairs();
    assert_eq!(
        calls(&log, "/rev-users.merge"),
        pairs.len(),
        "one merge per pair"
    );
    // Several merges were sent before DevRev was first seen to apply one (the last look at
    // a secondary is the one that found it merged).
    let seen_applied = |s: &str| {
        log.iter()
            .rfind(|r| w.is_look(r, s))
            .expect("seen merged")
            .seq
    };
    let first_applied = pairs.iter().map(|(_, s)| seen_applied(s)).min().unwrap();
    let in_flight = log
        .iter()
        .filter(|r| r.path == "/rev-users.merge" && r.seq < first_applied)
        .count();
    assert!(in_flight >= 3, "{in_flight} merges in flight together");
    // Each pair's Reconcile lists come after the look that found its secondary merged, and
    // fewer calls than pairs serve them; the survivor was read by that look.
    let names = |r: &RequestRecord, field: &str, id: &str| {
        r.body[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == id))
    };
    for (p, s) in &pairs {
        let applied = seen_applied(s);
        for (path, field) in [
            ("/works.list", "reported_by"),
            ("/conversations.list", "members"),
        ] {
            assert!(
                log.iter()
                    .any(|r| r.path == path && r.seq > applied && names(r, field, s)),
                "{path} for the Reconcile of {p} <- {s}"
            );
        }
    }
    let after_first = |path: &str| {
        log.iter()
            .filter(|r| r.path == path && r.seq > first_applied)
            .count()
    };
    let reconcile_lists = after_first("/works.list") + after_first("/conversations.list");
    let survivor_reads = log
        .iter()
        .filter(|r| r.path == "/rev-users.list" && r.seq > first_applied)
        .filter(|r| !pairs.iter().any(|(_, s)| w.is_look(r, s)))
        .count();
    eprintln!(
        "{} pairs: {in_flight} merges in flight together; {reconcile_lists} Reconcile lists, \
         {survivor_reads} survivor reads; {} calls in all",
        pairs.len(),
        log.len()
    );
    assert!(
        reconcile_lists < 2 * pairs.len(),
        "{reconcile_lists} Reconcile lists for {} pairs",
        pairs.len()
    );
    assert!(
        survivor_reads < pairs.len(),
        "{survivor_reads} survivor reads for {} pairs",
        pairs.len()
    );
    // No primary read one by one: every survivor came from a shared list.
    for (p, _) in &pairs {
        assert!(
            !log.iter()
                .any(|r| r.path == "/rev-users.get" && r.body["id"] == p.as_str()),
            "primary {p} read on its own"
        );
    }
}

/// The look after a merge is a `rev-users.list` by the secondary's and the survivor's refs
/// (it reads the survivor too). A list that lags behind DevRev's own records (a search
/// index) keeps answering the merged-away secondary as it was: after two such looks the
/// next ones are `rev-users.get`s, which see the merge, so the pairs are merged, not left
/// unconfirmed.
#[test]
fn a_list_that_lags_behind_merges_cannot_keep_them_from_being_seen() {
    let w = World::with(
        spec(3, 0, 52),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| o.quirks.list_lags_merges = true,
    );
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    check_final_state(&w);
    let log = w.fake.requests();
    let r = w.last_report();
    for (p, s) in w.pairs() {
        let merge = merge_seq(&log, &s);
        let looks: Vec<&str> = log
            .iter()
            .filter(|r| r.seq > merge && w.is_look(r, &s))
            .map(|r| r.path.as_str())
            .collect();
        // The first look is a list; at most two are (a pair parked after one looks with
        // `rev-users.get` at its visit); the one that sees the merge is a get.
        assert_eq!(looks[0], "/rev-users.list", "{p} <- {s}: {looks:?}");
        assert!(
            looks.iter().filter(|l| **l == "/rev-users.list").count() <= 2,
            "{p} <- {s}: {looks:?}"
        );
        assert_eq!(
            looks.last(),
            Some(&"/rev-users.get"),
            "{p} <- {s}: {looks:?}"
        );
        let e = find(&r["pairs"], "secondary", &s);
        assert_eq!(e["status"], "merged", "{e}");
        assert_eq!(e["merged_sign"]["kind"], "not_found", "{e}");
    }
}

/// The look by list sends both refs exactly as Validate read them from DevRev. A secondary
/// whose stored ref has a trailing space (the export trims it, Validate compares trimmed) is
/// listed under that exact ref: a merge that leaves it listed, deactivated, is seen by its
/// state, never taken as "gone from the list" because a trimmed ref matched nothing.
#[test]
fn a_look_asks_for_the_ref_as_devrev_holds_it_not_as_the_export_trims_it() {
    let w = World::new(
        spec(2, 0, 53),
        behaviour(MoveMode::All, SecondaryAfter::Deactivated),
    );
    let (_, s) = w.pairs()[0].clone();
    w.fake.with_state(|st| {
        let u = st.rev_users.get_mut(&s).unwrap();
        let r = u.external_ref().unwrap();
        u.json["external_ref"] = format!("{r} ").into();
    });
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    let r = w.last_report();
    let e = find(&r["pairs"], "secondary", &s);
    assert_eq!(e["status"], "merged", "{e}");
    assert_eq!(e["merged_sign"]["kind"], "not_active", "{e}");
    let log = w.fake.requests();
    assert!(
        log.iter().any(|r| r.path == "/rev-users.list"
            && r.body["external_ref"][0]
                .as_str()
                .is_some_and(|x| x.ends_with(' '))),
        "a look asked for the ref with its space"
    );
}

/// A list that leaves a contact out (an index behind new contacts, or one that hides a kind
/// of contact) never shows it, so its absence from a look proves nothing: its merge is seen
/// by `rev-users.get`, only once DevRev applied it. Taken as "gone from the list", the first
/// look would find it merged before DevRev had moved anything, and Reconcile would move the
/// tickets itself.
#[test]
fn a_secondary_the_list_never_shows_is_not_taken_for_merged_by_its_absence() {
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    b.delay = Duration::from_millis(600);
    let seed_pairs = World::new(spec(3, 0, 54), b.clone()).pairs();
    let (_, hidden) = seed_pairs[0].clone();
    let w = World::with(spec(3, 0, 54), b, |o| {
        o.quirks.list_hides = vec![hidden.clone()];
    });
    assert_eq!(w.pairs()[0].1, hidden, "the same seed gives the same world");
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    check_final_state(&w);
    let r = w.last_report();
    let e = find(&r["pairs"], "secondary", &hidden);
    assert_eq!(e["status"], "merged", "{e}");
    // Seen by `rev-users.get` (its 404), never by its absence from a list.
    assert_eq!(e["merged_sign"]["kind"], "not_found", "{e}");
    // DevRev moved every ticket: nothing was left for Reconcile.
    assert_eq!(e["tickets_repaired"], 0, "{e}");
    let log = w.fake.requests();
    assert!(
        log.iter()
            .any(|r| r.path == "/rev-users.list" && w.is_look(r, &hidden)),
        "the look by list was made (and proved nothing)"
    );
}

/// A look reads one page: an answer cut short by the server (a `next_cursor`) cannot show a
/// secondary gone, and is never walked page by page. The server below answers one contact a
/// page, in id order: where the survivor's id comes first, a look before DevRev applied the
/// merge gets the survivor alone on its first page. Taken as "the secondary is gone", the
/// pair would be found merged before DevRev moved anything, and Reconcile would move the
/// tickets itself.
#[test]
fn a_look_reads_one_page_and_a_cut_answer_proves_no_absence() {
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    b.delay = Duration::from_millis(600);
    let w = World::with(spec(3, 0, 55), b, |o| o.max_page = 1);
    assert!(
        w.pairs().iter().any(|(p, s)| p < s),
        "the seed must hold a survivor whose id comes first"
    );
    let a = w.run(&[]);
    assert_eq!(a.get_output().status.code(), Some(0), "{}", stderr(&a));
    check_final_state(&w);
    let log = w.fake.requests();
    let r = w.last_report();
    for (_, s) in w.pairs() {
        let looks: Vec<&RequestRecord> = log.iter().filter(|r| w.is_look(r, &s)).collect();
        assert!(
            looks.iter().any(|r| r.path == "/rev-users.list"),
            "{s}: looked by list"
        );
        assert!(
            looks.iter().all(|r| r.body.get("cursor").is_none()),
            "{s}: a look walked pages"
        );
        let e = find(&r["pairs"], "secondary", &s);
        assert_eq!(e["status"], "merged", "{e}");
        // DevRev moved every ticket: nothing was left for Reconcile.
        assert_eq!(e["tickets_repaired"], 0, "{e}");
    }
}
