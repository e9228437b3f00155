//! Self-tests of the fake DevRev server: other tests trust it, so it must be faithful to
//! `devrev-api.md` (shapes, errors, pagination, rate limits, merges, downloads, faults).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake::{FakeOptions, FakeServer, MergeBehaviour, MoveMode, SecondaryAfter};
use crate::support::probe::{Probe, send};
use crate::support::seed::{GenSpec, GroupKind, Seed, summary_ids};

fn small(pairs: usize) -> Seed {
    Seed::generate(&GenSpec {
        pairs,
        review_groups: 4,
        singles: 4,
        ..GenSpec::default()
    })
}

fn start(seed: Seed) -> (FakeServer, Probe) {
    let fake = FakeServer::start(FakeOptions {
        seed,
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    (fake, probe)
}

fn is_base62(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[test]
fn seed_is_deterministic_and_looks_like_devrev() {
    let spec = GenSpec {
        pairs: 30,
        review_groups: 8,
        singles: 10,
        ..GenSpec::default()
    };
    let a = Seed::generate(&spec);
    assert_eq!(a, Seed::generate(&spec), "same spec, same world");
    assert_ne!(
        a,
        Seed::generate(&GenSpec {
            rng_seed: 7,
            ..spec.clone()
        })
    );
    assert_eq!(a.pairs().len(), 30);

    let org = &a.org;
    for u in &a.rev_users {
        let id = u["id"].as_str().unwrap();
        let rid = id
            .strip_prefix(&format!("don:identity:dvrv-us-1:devo/{org}:revu/"))
            .unwrap_or_else(|| panic!("bad DON {id}"));
        assert!((7..=9).contains(&rid.len()) && is_base62(rid), "{rid}");
        assert_eq!(u["display_id"], format!("REVU-{rid}"));
        let ext = u["external_ref"].as_str().unwrap();
        if ext.starts_with("REVU-") {
            assert_eq!(ext, u["display_id"].as_str().unwrap());
        } else if ext.starts_with("user_") && !ext.contains("-drop-") {
            let tail = &ext["user_".len()..];
            assert_eq!(tail.len(), 26);
            assert!(
                tail.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            );
            assert_eq!(
                u["display_name"], u["email"],
                "Plug contacts show the email as name"
            );
        }
    }
    // Mixed case somewhere in the rids (case-sensitive base-62).
    assert!(a.rev_users.iter().any(|u| {
        u["id"]
            .as_str()
            .unwrap()
            .chars()
            .any(|c| c.is_ascii_uppercase())
    }));
    // Duplicates' emails sometimes differ in case or whitespace.
    let differs = a
        .pairs()
        .iter()
        .any(|(p, s)| a.rev_user(p).unwrap()["email"] != a.rev_user(s).unwrap()["email"]);
    assert!(differs);
    // -drop- refs exist, and the plain ref lives on another contact.
    let drop_group = a
        .groups
        .iter()
        .find(|g| g.kind == GroupKind::DropRef)
        .unwrap();
    let dropped = a.rev_user(&drop_group.members[1]).unwrap()["external_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = dropped.split("-drop-").next().unwrap();
    assert!(dropped.ends_with(&drop_group.members[1]));
    assert!(a.rev_users.iter().any(|u| u["external_ref"] == plain));

    for t in &a.tickets {
        let id = t["id"].as_str().unwrap();
        let n = id
            .strip_prefix(&format!("don:core:dvrv-us-1:devo/{org}:ticket/"))
            .unwrap();
        assert_eq!(t["display_id"], format!("TKT-{n}"));
        let reporters = summary_ids(&t["reported_by"]).len();
        assert!((1..=25).contains(&reporters));
    }
    let both = a.pairs().iter().any(|(p, s)| {
        a.tickets.iter().any(|t| {
            let ids = summary_ids(&t["reported_by"]);
            ids.contains(p) && ids.contains(s)
        })
    });
    assert!(both, "some tickets list both duplicates");
    // Mixed timestamp precision.
    let fracs: std::collections::BTreeSet<usize> = a
        .rev_users
        .iter()
        .map(|u| {
            let t = u["created_date"].as_str().unwrap();
            t.split_once('.').map_or(0, |(_, f)| f.len() - 1)
        })
        .collect();
    assert!(fracs.len() >= 3, "{fracs:?}");
    // JSON fixture round trip.
    let back: Seed = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn contacts_csv_is_the_export_format() {
    let (fake, _) = start(small(3));
    let csv = fake.contacts_csv();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT"
    );
    let rows: Vec<_> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), fake.with_state(|s| s.rev_users.len()));
    let r = &rows[0];
    assert!(r[0].starts_with("don:identity:dvrv-us-1:devo/"));
    assert_eq!(r[5].len(), "2024-12-03 15:16:07.123".len(), "{}", &r[5]);
    let count: usize = r[7].parse().unwrap();
    assert_eq!(
        count,
        fake.with_state(|s| s.tickets_reported_by(&r[0]).len())
    );
}

#[test]
fn auth_accepts_bearer_and_bare_token_only() {
    let (fake, probe) = start(small(1));
    let url = format!("{}/auth-tokens.info", fake.base_url());
    let body = json!({});
    let ok = send(&url, Some(&format!("Bearer {}", probe.token)), Some(&body)).unwrap();
    assert_eq!(ok.status, 200);
    assert!(
        ok.json["organization"]["id"]
            .as_str()
            .unwrap()
            .starts_with("don:identity:dvrv-us-1:devo/")
    );
    assert_eq!(
        send(&url, Some(&probe.token), Some(&body)).unwrap().status,
        200
    );
    for bad in [None, Some("Bearer nope"), Some("nope")] {
        let r = send(&url, bad, Some(&body)).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.json["type"], "unauthenticated");
    }
    let log = fake.requests();
    assert_eq!(log.len(), 5);
    assert!(log[0].authorized && log[1].authorized && !log[2].authorized);
    assert!(!log[2].had_auth_header && log[3].had_auth_header);
    assert_eq!(log[4].status, 401);
}

#[test]
fn pagination_defaults_to_50_clamps_and_ends_without_cursor() {
    let (fake, probe) = start(Seed::generate(&GenSpec {
        pairs: 60,
        review_groups: 0,
        singles: 5,
        ..GenSpec::default()
    }));
    let total = fake.with_state(|s| s.rev_users.len());
    assert_eq!(total, 125);
    let first = probe.call("rev-users.list", json!({}));
    assert_eq!(first.status, 200);
    assert_eq!(first.json["rev_users"].as_array().unwrap().len(), 50);
    assert!(first.json.get("prev_cursor").is_none());
    let big = probe.call("rev-users.list", json!({"limit": 1000}));
    assert_eq!(big.json["rev_users"].as_array().unwrap().len(), 100);
    // Follow cursors to the end: every contact once, last page without next_cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"limit": 40});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let r = probe.call("rev-users.list", body);
        pages += 1;
        for u in r.json["rev_users"].as_array().unwrap() {
            seen.push(u["id"].as_str().unwrap().to_string());
        }
        match r.json.get("next_cursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (total, total));
}

#[test]
fn merge_answers_at_once_and_applies_after_the_delay() {
    let seed = small(3);
    let (p, s) = seed.pairs()[0].clone();
    let fake = FakeServer::start(FakeOptions {
        seed,
        merge: MergeBehaviour {
            delay: Duration::from_millis(300),
            ..MergeBehaviour::default()
        },
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    let before = fake.with_state(|st| st.tickets_reported_by(&s).len());
    let t0 = Instant::now();
    let r = probe.call(
        "rev-users.merge",
        json!({"primary_user": p, "secondary_user": s}),
    );
    assert_eq!((r.status, r.json.clone()), (200, json!({})));
    assert!(t0.elapsed() < Duration::from_millis(250));
    // Not applied yet: the secondary is still there.
    assert_eq!(probe.call("rev-users.get", json!({"id": s})).status, 200);
    assert!(fake.wait_for(|st| !st.rev_users.contains_key(&s), Duration::from_secs(5)));
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let gone = probe.call("rev-users.get", json!({"id": s}));
    assert_eq!(
        (gone.status, gone.json["type"].clone()),
        (404, json!("not_found"))
    );
    fake.with_state(|st| {
        assert!(st.tickets_reported_by(&s).is_empty());
        assert!(st.tickets_reported_by(&p).len() >= before);
        for t in st.works.values() {
            let ids = t.reported_by_ids();
            let mut d = ids.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), ids.len(), "no duplicate reporters after a move");
        }
        assert!(st.merges[0].applied);
        assert!(st.deleted_rev_users.contains_key(&s));
    });
}

#[test]
fn works_update_replaces_reported_by() {
    let seed = small(2);
    let (p, s) = seed.pairs()[0].clone();
    let (fake, probe) = start(seed);
    let ticket = fake.with_state(|st| st.works.keys().next().unwrap().clone());
    let r = probe.call(
        "works.update",
        json!({"id": ticket, "type": "ticket", "reported_by": {"set": [p, s]}}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        summary_ids(&r.json["work"]["reported_by"]),
        vec![p.clone(), s.clone()]
    );
    assert_eq!(r.json["work"]["reported_by"][0]["type"], "rev_user");
    let got = probe.call("works.get", json!({"id": ticket}));
    assert_eq!(summary_ids(&got.json["work"]["reported_by"]), vec![p, s]);
}

#[test]
fn external_ref_is_unique_until_the_merged_secondary_releases_it() {
    let seed = small(2);
    let (p, s) = seed.pairs()[0].clone();
    let fake = FakeServer::start(FakeOptions {
        seed,
        merge: MergeBehaviour {
            delay: Duration::from_millis(10),
            ref_release_delay: Duration::from_millis(400),
            secondary_after: SecondaryAfter::Deactivated,
            moves: MoveMode::All,
            renames_primary: false,
        },
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    let user_ref = fake.with_state(|st| st.rev_users[&s].external_ref().unwrap());
    let adopt = || {
        probe.call(
            "rev-users.update",
            json!({"id": p, "external_ref": user_ref}),
        )
    };
    let r = adopt();
    assert_eq!((r.status, r.json["type"].clone()), (409, json!("conflict")));
    probe.call(
        "rev-users.merge",
        json!({"primary_user": p, "secondary_user": s}),
    );
    assert!(fake.wait_for(|st| st.merges[0].applied, Duration::from_secs(5)));
    let applied = Instant::now();
    assert_eq!(adopt().status, 409, "still taken right after the merge");
    let mut ok = None;
    while applied.elapsed() < Duration::from_secs(5) {
        let r = adopt();
        if r.status == 200 {
            ok = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = ok.expect("ref released");
    assert!(applied.elapsed() >= Duration::from_millis(380));
    assert_eq!(
        ok.json["rev_user"]["external_ref"].as_str(),
        Some(user_ref.as_str())
    );
    let sec = probe.call("rev-users.get", json!({"id": s}));
    assert_eq!(sec.json["rev_user"]["state"], "deactivated");
}

/// The request log records what each test will want to assert on.
#[test]
fn request_log_and_count() {
    let (fake, probe) = start(small(1));
    probe.call("works.list", json!({"type": ["ticket"], "limit": 1}));
    probe.get("works.list?type=ticket&limit=1");
    assert_eq!(fake.count("/works.list"), 2);
    assert_eq!(fake.count("works.list"), 2);
    let log = fake.requests();
    assert_eq!(log[1].method, "GET");
    assert_eq!(log[1].body, json!({"type": ["ticket"], "limit": 1}));
    assert_eq!(log[0].body, log[1].body);
    assert!(log.iter().all(|r| r.status == 200));
    let _: Value = log[0].body.clone();
}
