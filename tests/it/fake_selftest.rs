//! Self-tests of the fake DevRev server: other tests trust it, so it must be faithful to
//! `devrev-api.md` (shapes, errors, pagination, rate limits, merges, downloads, faults).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::probe::{Probe, send};
use devrev_fake::fake::{FakeOptions, FakeServer, MergeBehaviour, MoveMode, SecondaryAfter};
use devrev_fake::seed::{GenSpec, GroupKind, Seed, summary_ids};

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
}

/// DESIGN §9: full names mostly empty, display names often emails, and a TICKET_COUNT from the
/// warehouse that sometimes differs from what the API lists (never wildly).
#[test]
fn contacts_csv_looks_like_a_real_export() {
    let (fake, _) = start(Seed::generate(&GenSpec {
        pairs: 20,
        review_groups: 8,
        singles: 12,
        ..GenSpec::default()
    }));
    let csv = fake.contacts_csv();
    let rows: Vec<_> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    let n = rows.len();
    let empty_full = rows.iter().filter(|r| r[4].is_empty()).count();
    assert!(
        empty_full * 2 > n,
        "full names mostly empty: {empty_full}/{n}"
    );
    assert!(empty_full < n, "some full names are set");
    let email_names = rows.iter().filter(|r| r[1].contains('@')).count();
    assert!(
        email_names * 10 >= n,
        "display names often emails: {email_names}/{n}"
    );
    // The API agrees with the export about empty full names.
    fake.with_state(|s| {
        for r in &rows {
            let u = &s.rev_users[&r[0]].json;
            assert_eq!(u["full_name"].as_str().unwrap_or(""), &r[4]);
        }
    });
    let (mut same, mut higher, mut lower) = (0, 0, 0);
    for r in &rows {
        let csv_count: usize = r[7].parse().unwrap();
        let listed = fake.with_state(|s| s.tickets_reported_by(&r[0]).len());
        match csv_count.cmp(&listed) {
            std::cmp::Ordering::Equal => same += 1,
            std::cmp::Ordering::Greater => {
                higher += 1;
                assert!(csv_count <= listed + 3, "{csv_count} vs {listed}");
            }
            std::cmp::Ordering::Less => {
                lower += 1;
                assert_eq!(csv_count + 1, listed);
            }
        }
    }
    assert!(same * 2 > n, "mostly equal: {same}/{n}");
    assert!(higher > 0 && lower > 0, "higher {higher}, lower {lower}");
    // Stable: the same world exports the same counts.
    assert_eq!(csv, fake.contacts_csv());
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
    // mode "before" walks back from a cursor.
    let second = probe.call(
        "rev-users.list",
        json!({"limit": 40, "cursor": first_cursor(&probe)}),
    );
    let prev = second.json["prev_cursor"].as_str().unwrap().to_string();
    let back = probe.call(
        "rev-users.list",
        json!({"limit": 40, "cursor": prev, "mode": "before"}),
    );
    let again = probe.call("rev-users.list", json!({"limit": 40}));
    assert_eq!(back.json["rev_users"], again.json["rev_users"]);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (total, total));
}

fn first_cursor(probe: &Probe) -> String {
    let r = probe.call("rev-users.list", json!({"limit": 40}));
    r.json["next_cursor"].as_str().unwrap().to_string()
}

#[test]
fn merge_answers_at_once_and_applies_after_the_delay() {
    let seed = small(3);
    let (p, s) = seed.pairs()[0].clone();
    let fake = FakeServer::start(FakeOptions {
        seed,
        merge: MergeBehaviour {
            delay: Duration::from_millis(1000),
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
    assert!(t0.elapsed() < Duration::from_millis(1000));
    // Not applied yet: the secondary is still there.
    assert_eq!(probe.call("rev-users.get", json!({"id": s})).status, 200);
    assert!(fake.wait_for(|st| !st.rev_users.contains_key(&s), Duration::from_secs(5)));
    assert!(t0.elapsed() >= Duration::from_millis(1000));
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
            ..MergeBehaviour::default()
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
    let applied = fake.with_state(|st| st.merges[0].applied_at.unwrap());
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
    assert!(applied.elapsed() >= Duration::from_millis(400));
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

#[test]
fn error_shapes_match_devrev() {
    let seed = small(2);
    let (p, s) = seed.pairs()[0].clone();
    let ticket = seed.tickets[0]["id"].as_str().unwrap().to_string();
    let org = seed.org.clone();
    let (fake, probe) = start(seed);
    let unknown_user = format!("don:identity:dvrv-us-1:devo/{org}:revu/Zz9Zz9Zz9");
    let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (
            "rev-users.get",
            json!({}),
            400,
            "missing_required_field",
            Some("id"),
        ),
        (
            "rev-users.get",
            json!({"id": "not an id"}),
            400,
            "invalid_id",
            Some("id"),
        ),
        (
            "rev-users.get",
            json!({"id": unknown_user}),
            404,
            "not_found",
            None,
        ),
        (
            "rev-users.get",
            json!({"id": ticket}),
            400,
            "unexpected_id_type",
            Some("id"),
        ),
        (
            "rev-users.get",
            json!({"id": p, "expand": true}),
            400,
            "invalid_field",
            Some("expand"),
        ),
        (
            "rev-users.get",
            json!({"id": 5}),
            400,
            "unexpected_json_type",
            Some("id"),
        ),
        (
            "works.list",
            json!({"external_refs": ["x"]}),
            400,
            "invalid_field",
            Some("external_refs"),
        ),
        (
            "works.list",
            json!({"mode": "sideways"}),
            400,
            "invalid_enum_value",
            Some("mode"),
        ),
        (
            "works.list",
            json!({"reported_by": ["REVU"]}),
            400,
            "invalid_id",
            Some("reported_by"),
        ),
        (
            "conversations.list",
            json!({"work": ticket}),
            400,
            "invalid_field",
            Some("work"),
        ),
        (
            "works.update",
            json!({"id": ticket, "reported_by": {"add": [p]}}),
            400,
            "invalid_field",
            Some("reported_by.add"),
        ),
        (
            "works.update",
            json!({"id": ticket, "severity": "high"}),
            400,
            "invalid_field",
            Some("severity"),
        ),
        (
            "works.update",
            json!({"id": ticket, "owned_by": {"set": []}}),
            400,
            "value_not_permitted",
            Some("owned_by.set"),
        ),
        (
            "works.update",
            json!({"id": ticket, "reported_by": {"set": [unknown_user]}}),
            404,
            "not_found",
            None,
        ),
        (
            "works.get",
            json!({"id": "TKT-999999"}),
            404,
            "not_found",
            None,
        ),
        (
            "timeline-entries.list",
            json!({}),
            400,
            "missing_required_field",
            Some("object"),
        ),
        (
            "rev-users.merge",
            json!({"primary_user": p}),
            400,
            "missing_required_field",
            Some("secondary_user"),
        ),
        (
            "rev-users.merge",
            json!({"primary_user": p, "secondary_user": "x y"}),
            400,
            "invalid_id",
            Some("secondary_user"),
        ),
        (
            "rev-users.merge",
            json!({"primary_user": p, "secondary_user": unknown_user}),
            404,
            "not_found",
            None,
        ),
        (
            "rev-users.merge",
            json!({"primary_user": unknown_user, "secondary_user": s}),
            404,
            "not_found",
            None,
        ),
        (
            "rev-users.merge",
            json!({"primary_user": p, "secondary_user": p}),
            400,
            "bad_request",
            None,
        ),
        (
            "rev-users.merge",
            json!({"primary_user": p, "secondary_user": s, "force": true}),
            400,
            "invalid_field",
            Some("force"),
        ),
        (
            "artifacts.locate",
            json!({"id": "artifact-1"}),
            404,
            "not_found",
            None,
        ),
        (
            "conversations.update",
            json!({"id": "CONV-1", "members": {"add": [p]}}),
            400,
            "invalid_field",
            Some("members.add"),
        ),
        (
            "rev-users.update",
            json!({"id": p, "external_ref": 7}),
            400,
            "unexpected_json_type",
            Some("external_ref"),
        ),
        (
            "rev-users.update",
            json!({"id": p, "primary_identity": p}),
            400,
            "invalid_field",
            Some("primary_identity"),
        ),
    ];
    for (ep, body, status, kind, field) in cases {
        let r = probe.call(ep, body.clone());
        assert_eq!(r.status, status, "{ep} {body}: {}", r.json);
        assert_eq!(r.json["type"], kind, "{ep} {body}: {}", r.json);
        if let Some(f) = field {
            assert_eq!(r.json["field_name"], f, "{ep} {body}: {}", r.json);
        }
    }
    // Unknown route: only a message, no type.
    let r = probe.call("rev-users.frobnicate", json!({}));
    assert_eq!(
        (r.status, r.json.clone()),
        (404, json!({"message": "route not found"}))
    );
    assert!(!r.header("x-ratelimit-remaining").is_empty());
    // API versions: known ones pass, others are 400 invalid_api_version.
    let url = format!("{}/dev-users.self", fake.base_url());
    let bearer = format!("Bearer {}", probe.token);
    let with_version = |v: &str| {
        let h = [("authorization", bearer.as_str()), ("x-devrev-version", v)];
        crate::probe::send_with(&url, &h, Some(&json!({}))).unwrap()
    };
    assert_eq!(with_version("2024-01-24").status, 200);
    let r = with_version("1999-01-01");
    assert_eq!(
        (r.status, r.json["type"].clone()),
        (400, json!("invalid_api_version"))
    );
    assert_eq!(r.json["value"], "1999-01-01");
    // Writes have no GET variant.
    assert_eq!(probe.get("rev-users.merge").status, 404);
    // A body that is not JSON.
    let raw = send(
        &format!("{}/rev-users.get", fake.base_url()),
        Some(&probe.token),
        Some(&json!("just a string")),
    )
    .unwrap();
    assert_eq!(raw.status, 400);
    // Nothing above merged anything.
    assert!(fake.with_state(|st| st.merges.is_empty()));
}

#[test]
fn get_variants_take_comma_joined_arrays_and_dotted_names() {
    let seed = small(3);
    let (p, s) = seed.pairs()[0].clone();
    let (_fake, probe) = start(seed);
    let post = probe.call(
        "works.list",
        json!({"reported_by": [p, s], "type": ["ticket"]}),
    );
    let get = probe.get(&format!("works.list?reported_by={p},{s}&type=ticket"));
    assert_eq!(get.status, 200);
    assert_eq!(get.json, post.json);
    let user = probe.get(&format!("rev-users.get?id={s}"));
    assert_eq!(user.json["rev_user"]["id"], s.as_str());
    let dated = probe.get("rev-users.list?created_date.after=2000-01-01T00:00:00Z&limit=5");
    assert_eq!(dated.json["rev_users"].as_array().unwrap().len(), 5);
    let none = probe.get("rev-users.list?created_date.before=2000-01-01T00:00:00Z");
    assert_eq!(none.json["rev_users"], json!([]));
    assert!(none.json.get("next_cursor").is_none());
    let bad = probe.get("rev-users.list?nope=1");
    assert_eq!(
        (bad.status, bad.json["field_name"].clone()),
        (400, json!("nope"))
    );
    let bad = probe.get("works.list?ticket.nope=1");
    assert_eq!(bad.json["field_name"], "ticket.nope");
}

#[test]
fn rate_limit_headers_on_every_answer_and_429_with_retry_after() {
    let seed = small(1);
    let fake = FakeServer::start(FakeOptions {
        seed,
        rate_limit: Some(devrev_fake::fake::RateLimit {
            limit: 3,
            window: Duration::from_millis(1500),
        }),
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    for left in [2, 1, 0] {
        let r = probe.call("dev-users.self", json!({}));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), "3");
        assert_eq!(r.header("x-ratelimit-remaining"), left.to_string());
        let reset: u64 = r.header("x-ratelimit-reset").parse().unwrap();
        assert!(reset >= now_s() && reset <= now_s() + 3, "reset {reset}");
    }
    // The 429 carries the headers too.
    let r = probe.call("dev-users.self", json!({}));
    assert_eq!(r.status, 429);
    assert_eq!(r.json["type"], "too_many_requests");
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.json["retry_after"], retry);
    assert_eq!(r.header("x-ratelimit-remaining"), "0");
    // Another token has its own bucket (and is rejected, with headers).
    let other = send(
        &format!("{}/dev-users.self", fake.base_url()),
        Some("Bearer x"),
        Some(&json!({})),
    )
    .unwrap();
    assert_eq!(other.status, 401);
    assert!(!other.header("x-ratelimit-limit").is_empty());
    // After the window, calls pass again.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(probe.call("dev-users.self", json!({})).status, 200);
}

#[test]
fn forbidden_mode_answers_403() {
    let (fake, probe) = start(small(1));
    fake.set_options(|o| o.forbidden = true);
    let r = probe.call("rev-users.list", json!({"limit": 1}));
    assert_eq!(
        (r.status, r.json["type"].clone()),
        (403, json!("forbidden"))
    );
    let bad = send(
        &format!("{}/rev-users.list", fake.base_url()),
        Some("wrong"),
        Some(&json!({})),
    )
    .unwrap();
    assert_eq!(bad.status, 401, "a wrong token is still 401");
    fake.set_options(|o| o.forbidden = false);
    assert_eq!(
        probe.call("rev-users.list", json!({"limit": 1})).status,
        200
    );
}

#[test]
fn merging_unverified_into_verified_is_refused() {
    let seed = Seed::generate(&GenSpec {
        pairs: 4,
        unverified_secondary_pct: 100,
        ..GenSpec::default()
    });
    let (p, s) = seed.pairs()[0].clone();
    let (fake, probe) = start(seed);
    let r = probe.call(
        "rev-users.merge",
        json!({"primary_user": p, "secondary_user": s}),
    );
    assert_eq!(
        (r.status, r.json["type"].clone()),
        (400, json!("bad_request"))
    );
    // The other way round (unverified primary) is allowed.
    let r = probe.call(
        "rev-users.merge",
        json!({"primary_user": s, "secondary_user": p}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(fake.with_state(|st| st.merges.len()), 1);
}

fn merge_world(behaviour: MergeBehaviour) -> (FakeServer, Probe, String, String) {
    // Every contact reports several tickets and secondaries sit in conversations.
    let seed = Seed::generate(&GenSpec {
        pairs: 6,
        tickets_per_contact: (3, 4),
        shared_ticket_pct: 50,
        conversations_per_secondary: (2, 2),
        ..GenSpec::default()
    });
    let (p, s) = seed.pairs()[0].clone();
    let fake = FakeServer::start(FakeOptions {
        seed,
        merge: behaviour,
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    (fake, probe, p, s)
}

#[test]
fn merge_move_modes() {
    for mode in [MoveMode::All, MoveMode::Partial, MoveMode::Nothing] {
        let (fake, probe, p, s) = merge_world(MergeBehaviour {
            delay: Duration::from_secs(3600),
            moves: mode,
            secondary_after: SecondaryAfter::Deactivated,
            ..MergeBehaviour::default()
        });
        let affected = fake
            .with_state(|st| st.tickets_reported_by(&s).len() + st.conversations_with(&s).len());
        assert!(affected >= 4, "{affected}");
        assert_eq!(
            probe
                .call(
                    "rev-users.merge",
                    json!({"primary_user": p, "secondary_user": s})
                )
                .status,
            200
        );
        assert_eq!(fake.pending_merges(), 1, "an hour's delay: still pending");
        fake.apply_pending_merges();
        assert_eq!(fake.pending_merges(), 0);
        let left = fake
            .with_state(|st| st.tickets_reported_by(&s).len() + st.conversations_with(&s).len());
        let expect = match mode {
            MoveMode::All => 0,
            MoveMode::Partial => affected.div_ceil(2),
            MoveMode::Nothing => affected,
        };
        assert_eq!(left, expect, "{mode:?}");
        // What the API shows agrees with the state.
        let listed = probe.call("works.list", json!({"reported_by": [s]}));
        assert_eq!(
            listed.json["works"].as_array().unwrap().len(),
            fake.with_state(|st| st.tickets_reported_by(&s).len())
        );
        let convs = probe.call("conversations.list", json!({"members": [s]}));
        assert_eq!(
            convs.json["conversations"].as_array().unwrap().len(),
            fake.with_state(|st| st.conversations_with(&s).len())
        );
    }
}

#[test]
fn mixed_secondary_outcomes_cover_all_four_and_are_stable() {
    let kinds: std::collections::BTreeSet<String> = (0..64)
        .map(|i| {
            format!(
                "{:?}",
                SecondaryAfter::Mixed.for_secondary(&format!("don:revu/{i}"))
            )
        })
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert_eq!(
        SecondaryAfter::Mixed.for_secondary("don:revu/7"),
        SecondaryAfter::Mixed.for_secondary("don:revu/7")
    );
    assert_eq!(
        SecondaryAfter::Gone.for_secondary("don:revu/7"),
        SecondaryAfter::Gone
    );
}

#[test]
fn secondary_after_merge_variants() {
    for after in [
        SecondaryAfter::Gone,
        SecondaryAfter::Deactivated,
        SecondaryAfter::PrimaryIdentity,
        SecondaryAfter::DropRef,
        SecondaryAfter::AnswersPrimary,
    ] {
        let (fake, probe, p, s) = merge_world(MergeBehaviour {
            delay: Duration::ZERO,
            secondary_after: after,
            renames_primary: true,
            ..MergeBehaviour::default()
        });
        let old = fake.with_state(|st| st.rev_users[&s].json.clone());
        assert_eq!(
            probe
                .call(
                    "rev-users.merge",
                    json!({"primary_user": p, "secondary_user": s})
                )
                .status,
            200
        );
        let r = probe.call("rev-users.get", json!({"id": s}));
        let u = &r.json["rev_user"];
        match after {
            SecondaryAfter::Gone | SecondaryAfter::Mixed => assert_eq!(r.status, 404),
            SecondaryAfter::Deactivated => assert_eq!(u["state"], "deactivated"),
            SecondaryAfter::PrimaryIdentity => {
                assert_eq!(u["state"], "active");
                assert_eq!(u["primary_identity"]["id"], p.as_str());
            }
            SecondaryAfter::DropRef => assert_eq!(
                u["external_ref"],
                format!("{}-drop-{s}", old["external_ref"].as_str().unwrap())
            ),
            // The merged-away id answers the primary's record, under the primary's id.
            SecondaryAfter::AnswersPrimary => assert_eq!(u["id"], p.as_str()),
        }
        let primary = probe.call("rev-users.get", json!({"id": p}));
        assert_eq!(
            primary.json["rev_user"]["display_name"],
            old["display_name"]
        );
    }
}

#[test]
fn timelines_mix_comments_and_change_events_in_order() {
    let seed = Seed::generate(&GenSpec {
        pairs: 10,
        tickets_per_contact: (2, 3),
        timeline_entries: (4, 8),
        attachments_pct: 40,
        ..GenSpec::default()
    });
    let (fake, probe) = start(seed);
    let tickets: Vec<String> = fake.with_state(|st| st.works.keys().cloned().collect());
    let mut all = Vec::new();
    for t in &tickets {
        let r = probe.call("timeline-entries.list", json!({"object": t}));
        assert_eq!(r.status, 200);
        let entries = r.json["timeline_entries"].as_array().unwrap().clone();
        let dates: Vec<_> = entries
            .iter()
            .map(|e| {
                chrono::DateTime::parse_from_rfc3339(e["created_date"].as_str().unwrap()).unwrap()
            })
            .collect();
        assert!(dates.windows(2).all(|w| w[0] <= w[1]), "created_date order");
        for e in &entries {
            assert_eq!(e["object"], t.as_str());
        }
        all.extend(entries);
    }
    let kind = |k: &str| all.iter().filter(|e| e["type"] == k).count();
    assert!(kind("timeline_comment") > 0 && kind("timeline_change_event") > 0);
    let comments: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"] == "timeline_comment")
        .collect();
    assert!(
        comments.iter().any(|c| c.get("body").is_none()),
        "deleted comments"
    );
    assert!(comments.iter().any(|c| c["visibility"] == "private"));
    assert!(
        comments
            .iter()
            .any(|c| c["artifacts"].as_array().is_some_and(|a| !a.is_empty()))
    );
    assert!(
        comments
            .iter()
            .any(|c| c["created_by"]["type"] == "rev_user")
    );
    // Strict visibility filter and display-id object.
    let t = fake.with_state(|st| st.works.values().next().unwrap().display_id());
    let r = probe.call(
        "timeline-entries.list",
        json!({"object": t, "visibility": ["private"]}),
    );
    assert!(
        r.json["timeline_entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["visibility"] == "private")
    );
}

#[test]
fn attachments_locate_download_and_expire() {
    let seed = Seed::generate(&GenSpec {
        pairs: 8,
        tickets_per_contact: (1, 2),
        attachments_pct: 60,
        attachment_size_max: 2 * 1024 * 1024,
        ..GenSpec::default()
    });
    let fake = FakeServer::start(FakeOptions {
        seed,
        url_ttl: Duration::from_millis(800),
        rate_limit: Some(devrev_fake::fake::RateLimit {
            limit: 100,
            window: Duration::from_secs(60),
        }),
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    let ids: Vec<(String, u64)> = fake.with_state(|st| {
        st.artifacts
            .values()
            .map(|a| {
                (
                    a.json["id"].as_str().unwrap().to_string(),
                    a.json["file"]["size"].as_u64().unwrap(),
                )
            })
            .collect()
    });
    assert!(ids.iter().any(|(_, n)| *n == 0), "a 0-byte file");
    assert!(ids.iter().any(|(_, n)| *n >= 1024 * 1024), "a file of MBs");
    for (id, size) in ids
        .iter()
        .filter(|(_, n)| *n == 0 || *n >= 1024 * 1024)
        .take(2)
    {
        let meta = probe.call("artifacts.get", json!({"id": id}));
        assert_eq!(meta.json["artifact"]["file"]["size"], *size);
        assert!(meta.json["artifact"]["file"]["name"].is_string());
        assert!(meta.json["artifact"]["file"]["type"].is_string());
        let loc = probe.call("artifacts.locate", json!({"id": id}));
        let url = loc.json["url"].as_str().unwrap().to_string();
        assert!(url.starts_with(&format!("{}/download/", fake.base_url())));
        assert!(
            chrono::DateTime::parse_from_rfc3339(loc.json["expires_at"].as_str().unwrap()).is_ok()
        );
        let got = send(&url, None, None).unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.bytes.len() as u64, *size);
        assert_eq!(
            got.bytes,
            devrev_fake::seed::artifact_bytes(id, *size as usize)
        );
        // A tampered signature is refused.
        let bad = send(&url.replace("sig=", "sig=0"), None, None).unwrap();
        assert_eq!(bad.status, 403);
        // After the TTL the link is dead.
        std::thread::sleep(Duration::from_millis(850));
        assert_eq!(send(&url, None, None).unwrap().status, 403);
    }
    let downloads: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/download/"))
        .collect();
    assert_eq!(downloads.len(), 6);
    assert!(downloads.iter().all(|r| !r.had_auth_header));
    // Downloads spend no API units: 4 API calls so far.
    let r = probe.call("dev-users.self", json!({}));
    assert_eq!(r.header("x-ratelimit-remaining"), "95");
}

#[test]
fn scripted_status_faults() {
    use devrev_fake::fake::{Fault, ScriptedFault};
    let seed = small(1);
    let fake = FakeServer::start(FakeOptions {
        seed,
        faults: vec![
            ScriptedFault {
                path: Some("/auth-tokens.info".into()),
                nth: 1,
                fault: Fault::Status503,
            },
            ScriptedFault {
                path: Some("auth-tokens.info".into()),
                nth: 2,
                fault: Fault::Status500,
            },
            ScriptedFault {
                path: Some("/auth-tokens.info".into()),
                nth: 3,
                fault: Fault::Spurious429 { retry_after_s: 2 },
            },
        ],
        ..FakeOptions::default()
    });
    let probe = Probe::new(&fake);
    // Other paths do not advance the count.
    assert_eq!(probe.call("dev-users.self", json!({})).status, 200);
    let r = probe.call("auth-tokens.info", json!({}));
    assert_eq!(
        (r.status, r.json["type"].clone()),
        (503, json!("service_unavailable"))
    );
    let r = probe.call("auth-tokens.info", json!({}));
    assert_eq!(
        (r.status, r.json["type"].clone()),
        (500, json!("internal_error"))
    );
    assert!(r.json["reference_id"].is_string());
    let r = probe.call("auth-tokens.info", json!({}));
    assert_eq!((r.status, r.header("retry-after")), (429, "2".to_string()));
    assert_eq!(
        r.json,
        json!({"type": "too_many_requests", "message": "Too many requests", "retry_after": 2})
    );
    assert_eq!(probe.call("auth-tokens.info", json!({})).status, 200);
    let faults: Vec<_> = fake.requests().iter().map(|r| r.fault.is_some()).collect();
    assert_eq!(faults, vec![false, true, true, true, false]);
}

#[test]
fn dropped_connections_and_slow_answers() {
    use devrev_fake::fake::Fault;
    let seed = small(2);
    let (p, _) = seed.pairs()[0].clone();
    let (fake, probe) = start(seed);
    let update =
        |name: &str| probe.try_call("rev-users.update", json!({"id": p, "display_name": name}));
    let name_now = || fake.with_state(|st| st.rev_users[&p].json["display_name"].clone());

    // Drop: no answer, nothing applied.
    fake.fault_next(Some("/rev-users.update"), 1, Fault::Drop);
    let err = update("Dropped").expect_err("the connection must be dropped");
    // hyper's "connection closed before message completed".
    assert!(err.contains("IncompleteMessage"), "{err}");
    assert_ne!(name_now(), json!("Dropped"));

    // ApplyThenDrop: no answer, but the write happened.
    fake.fault_next(Some("/rev-users.update"), 1, Fault::ApplyThenDrop);
    update("Applied").expect_err("the connection must be dropped");
    assert_eq!(name_now(), json!("Applied"));

    // Slow: answered, late.
    fake.fault_next(None, 1, Fault::Slow(Duration::from_millis(300)));
    let t0 = Instant::now();
    assert_eq!(update("Slow").unwrap().status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));

    let log = fake.requests();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![0, 0, 200]
    );
    assert_eq!(log[0].fault, Some(Fault::Drop));
    // The server keeps serving after dropping connections.
    assert_eq!(update("After").unwrap().status, 200);
}

#[test]
fn random_faults_are_seeded() {
    use devrev_fake::fake::{Fault, RandomFaults};
    let run = |seed: u64| {
        let fake = FakeServer::start(FakeOptions {
            seed: small(1),
            random_faults: Some(RandomFaults {
                seed,
                probability: 0.3,
                kinds: vec![Fault::Status500, Fault::Status503],
            }),
            ..FakeOptions::default()
        });
        let probe = Probe::new(&fake);
        (0..40)
            .map(|_| probe.call("dev-users.self", json!({})).status)
            .collect::<Vec<_>>()
    };
    let a = run(9);
    assert_eq!(a, run(9), "same seed, same faults");
    let faulted = a.iter().filter(|s| **s != 200).count();
    assert!((4..=20).contains(&faulted), "{faulted} of 40 at p=0.3");
}

#[test]
fn trip_wire_runs_once_when_the_nth_request_arrives() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (fake, probe) = start(small(1));
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    fake.on_request(
        2,
        Box::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        }),
    );
    probe.call("dev-users.self", json!({}));
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    probe.call("dev-users.self", json!({}));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    probe.call("dev-users.self", json!({}));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

/// The crate's own client against the fake: every typed call the tool uses must be accepted
/// (no `invalid_field`) and decode, and the fake's faults must surface as the client expects.
#[test]
fn the_crate_client_speaks_to_the_fake() {
    use devrev_fake::fake::Fault;
    use devrev_merge::devrev::{ApiError, ClientConfig, DevRevClient};

    let seed = Seed::generate(&GenSpec {
        pairs: 4,
        tickets_per_contact: (2, 3),
        conversations_per_secondary: (1, 1),
        attachments_pct: 50,
        attachment_size_max: 200_000,
        ..GenSpec::default()
    });
    let (p, s) = seed.pairs()[0].clone();
    let fake = FakeServer::start(FakeOptions {
        seed,
        merge: MergeBehaviour {
            delay: Duration::from_millis(20),
            ..MergeBehaviour::default()
        },
        ..FakeOptions::default()
    });
    let client = DevRevClient::new(ClientConfig {
        base_url: url::Url::parse(&fake.base_url()).unwrap(),
        token: fake.token().into(),
        rate_limit_calls: 10_000,
        rate_limit_period: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        max_retries: 2,
        page_size: 7,
        min_backoff: Duration::from_millis(10),
        limits: Default::default(),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let info = client.auth_tokens_info().await.unwrap();
        assert!(info.organization.id.starts_with("don:identity:"));
        client.dev_users_self().await.unwrap();
        let users = client.rev_users_list(json!({})).await.unwrap();
        assert_eq!(users.len(), fake.with_state(|st| st.rev_users.len()));
        let sec = client.rev_users_get(&s).await.unwrap();
        assert_eq!(sec.id, s);
        let tickets = client.tickets_reported_by(&[s.as_str()]).await.unwrap();
        assert!(!tickets.is_empty());
        for t in &tickets {
            let entries = client.timeline_entries(&t.id).await.unwrap();
            for a in entries
                .iter()
                .flat_map(|e| e.artifacts.iter())
                .chain(t.artifacts.iter())
            {
                let meta = client.artifacts_get(&a.id).await.unwrap();
                let loc = client.artifacts_locate(&a.id).await.unwrap();
                let (n, _sha) = client
                    .download_to(&loc.url, &tmp.path().join("f"), None)
                    .await
                    .unwrap();
                assert_eq!(Some(n), meta.file.and_then(|f| f.size));
            }
        }
        let convs = client
            .conversations_with_members(&[s.as_str()])
            .await
            .unwrap();
        assert!(!convs.is_empty());
        let ids = vec![p.clone()];
        client
            .conversations_set_members(&convs[0].id, &ids)
            .await
            .unwrap();
        client
            .works_set_reported_by(&tickets[0].id, &ids)
            .await
            .unwrap();

        // A 503 then success is retried transparently.
        fake.fault_next(Some("/rev-users.get"), 1, Fault::Status503);
        client.rev_users_get(&p).await.unwrap();
        // A merge whose answer is lost is "outcome unknown", never repeated.
        fake.fault_next(Some("/rev-users.merge"), 1, Fault::ApplyThenDrop);
        let err = client.rev_users_merge(&p, &s).await.unwrap_err();
        assert!(matches!(err, ApiError::OutcomeUnknown { .. }), "{err:?}");
        assert_eq!(fake.count("/rev-users.merge"), 1);
    });
    assert!(fake.wait_for(|st| !st.rev_users.contains_key(&s), Duration::from_secs(5)));
    let user_ref = fake.with_state(|st| st.deleted_rev_users[&s].external_ref().unwrap());
    rt.block_on(async {
        let got = client.rev_users_get(&s).await.unwrap_err();
        assert!(got.is_not_found());
        let u = client
            .rev_users_update(&p, json!({"external_ref": user_ref}))
            .await
            .unwrap();
        assert_eq!(u.external_ref.as_deref(), Some(user_ref.as_str()));
    });
    // No request the client made was refused as malformed.
    let refused: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.status == 400)
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

/// The request log keeps what was sent even when a fault drops or delays the answer: tests
/// that check "the merge was sent once, with these ids" must see dropped attempts too.
#[test]
fn the_log_records_faulted_requests_as_sent() {
    use devrev_fake::fake::Fault;
    let seed = small(2);
    let (p, s) = seed.pairs()[0].clone();
    let (fake, probe) = start(seed);
    let merge = json!({"primary_user": p, "secondary_user": s});
    fake.fault_next(Some("/rev-users.merge"), 1, Fault::Drop);
    probe
        .try_call("rev-users.merge", merge.clone())
        .expect_err("dropped");
    fake.fault_next(None, 1, Fault::Status503);
    assert_eq!(probe.call("rev-users.merge", merge.clone()).status, 503);
    let bad = send(
        &format!("{}/rev-users.merge", fake.base_url()),
        Some("Bearer wrong"),
        Some(&merge),
    )
    .unwrap();
    assert_eq!(bad.status, 401);
    let log = fake.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].fault, Some(Fault::Drop));
    assert_eq!((log[0].status, log[1].status, log[2].status), (0, 503, 401));
    for r in &log {
        assert_eq!(r.body, merge, "{r:?}");
        assert_eq!(r.path, "/rev-users.merge");
    }
    assert!(log[0].authorized && log[1].authorized && !log[2].authorized);
    assert_eq!(fake.count("/rev-users.merge"), 3);
    assert!(
        fake.with_state(|st| st.merges.is_empty()),
        "nothing applied"
    );

    // A GET that is dropped is logged with its query as a body.
    fake.fault_next(None, 1, Fault::Drop);
    send(
        &format!("{}/rev-users.get?id={p}", fake.base_url()),
        Some(&probe.token),
        None,
    )
    .expect_err("dropped");
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.body.clone()),
        ("GET", json!({"id": p}))
    );
    assert!(last.authorized);
}

/// A client that gives up while a write is in progress cannot cancel it half-way: the write
/// completes and the log records the answer the server produced.
#[test]
fn a_client_hanging_up_does_not_cancel_a_write() {
    use devrev_fake::fake::Fault;
    let seed = small(1);
    let (p, _) = seed.pairs()[0].clone();
    let (fake, probe) = start(seed);
    fake.fault_next(
        Some("/rev-users.update"),
        1,
        Fault::Slow(Duration::from_millis(300)),
    );
    let url = format!("{}/rev-users.update", fake.base_url());
    let body = json!({"id": p, "display_name": "Written anyway"});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(async {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(60))
            .build()
            .unwrap()
            .post(&url)
            .bearer_auth(&probe.token)
            .json(&body)
            .send()
            .await
            .expect_err("the client times out first")
    });
    assert!(err.is_timeout(), "{err}");
    drop(rt);
    assert!(fake.wait_for(
        |st| st.rev_users[&p].json["display_name"] == "Written anyway",
        Duration::from_secs(5)
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.requests()[0].status == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fake.requests()[0].status, 200);
    // Other requests were served meanwhile and afterwards: no lock was held across the wait.
    assert_eq!(probe.call("dev-users.self", json!({})).status, 200);
}

/// Request fields of the spec's beta schemas that the fake had missed are accepted (and
/// `tags.add` / `tags.remove` applied); set-only fields still refuse anything but `set`.
#[test]
fn beta_request_fields_are_accepted() {
    let seed = small(2);
    let t = seed.tickets[0]["id"].as_str().unwrap().to_string();
    let (fake, probe) = start(seed);
    let tag = |n: u32| json!({"id": format!("don:core:dvrv-us-1:devo/x:tag/{n}")});
    let r = probe.call(
        "works.update",
        json!({"id": t, "tags": {"set": [tag(1), tag(2)]}}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let r = probe.call(
        "works.update",
        json!({"id": t, "tags": {"add": [tag(3), tag(1)], "remove": [tag(2)]},
               "stage": {"name": "resolved", "stage": "don:core:dvrv-us-1:devo/x:custom_stage/7"}}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["work"]["tags"], json!([tag(1), tag(3)]));
    assert_eq!(r.json["work"]["stage"]["name"], "resolved");
    let r = probe.call(
        "works.list",
        json!({"type": ["ticket"], "ticket": {"surveys": {"response_score": [5]}}, "limit": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let conv = fake.with_state(|s| s.conversations.keys().next().cloned());
    if let Some(c) = conv {
        let r = probe.call(
            "conversations.update",
            json!({"id": c, "stage": {"name": "resolved", "stage": "x"}}),
        );
        assert_eq!(r.status, 200, "{}", r.json);
    }
    for (ep, body, field) in [
        (
            "works.update",
            json!({"id": t, "reported_by": {"add": []}}),
            "reported_by.add",
        ),
        (
            "works.update",
            json!({"id": t, "tags": {"replace": []}}),
            "tags.replace",
        ),
        (
            "works.update",
            json!({"id": t, "priority": "p1"}),
            "priority",
        ),
    ] {
        let r = probe.call(ep, body);
        assert_eq!(
            (
                r.status,
                r.json["type"].clone(),
                r.json["field_name"].clone()
            ),
            (400, json!("invalid_field"), json!(field))
        );
    }
}

/// IDs are case-sensitive base-62: the same id with its case changed is another (unknown)
/// object, never a match.
#[test]
fn ids_are_case_sensitive() {
    let seed = small(3);
    let (fake, probe) = start(seed.clone());
    let u = seed
        .rev_users
        .iter()
        .find(|u| {
            u["display_id"]
                .as_str()
                .unwrap()
                .chars()
                .skip(5)
                .any(|c| c.is_ascii_alphabetic())
        })
        .unwrap();
    let swap = |s: &str, keep: usize| -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if i < keep {
                    c
                } else if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    };
    let id = u["id"].as_str().unwrap();
    let display = u["display_id"].as_str().unwrap();
    let cut = id.rfind('/').unwrap() + 1;
    for (good, bad) in [
        (id.to_string(), swap(id, cut)),
        (display.to_string(), swap(display, 5)),
    ] {
        assert_ne!(good, bad);
        assert_eq!(probe.call("rev-users.get", json!({"id": good})).status, 200);
        let r = probe.call("rev-users.get", json!({"id": bad}));
        assert_eq!(
            (r.status, r.json["type"].clone()),
            (404, json!("not_found"))
        );
    }
    drop(fake);
}

/// Even the fake's own failures look like DevRev's 500: `internal_error` with a
/// `reference_id`.
#[test]
fn an_internal_failure_is_a_500_with_reference_id() {
    let (fake, probe) = start(small(1));
    fake.on_request(1, Box::new(|| panic!("deliberate failure inside the fake")));
    let r = probe.call("dev-users.self", json!({}));
    assert_eq!(r.status, 500);
    assert_eq!(r.json["type"], "internal_error");
    assert!(r.json["reference_id"].is_string(), "{}", r.json);
    assert_eq!(probe.call("dev-users.self", json!({})).status, 200);
}

#[test]
fn rev_users_create_follows_the_spec() {
    let (fake, probe) = start(small(2));
    let (p, org) = fake.with_state(|st| {
        let u = st.rev_users.values().next().unwrap();
        (
            u.id(),
            u.json["rev_org"]["id"].as_str().unwrap().to_string(),
        )
    });
    let taken = fake.with_state(|st| st.rev_users[&p].external_ref().unwrap());
    let r = probe.call(
        "rev-users.create",
        json!({"display_name": "Ana", "email": "ana@x.com", "external_ref": "user_new1",
               "phone_numbers": ["+14155550100"], "rev_org": org,
               "custom_fields": {"tnt__plan": "pro"}}),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let u = &r.json["rev_user"];
    let id = u["id"].as_str().unwrap();
    assert!(id.contains(":revu/C"), "{id}");
    assert_eq!(
        u["display_id"],
        format!("REVU-{}", id.rsplit('/').next().unwrap())
    );
    assert_eq!(
        (u["external_ref"].clone(), u["email"].clone()),
        (json!("user_new1"), json!("ana@x.com"))
    );
    assert_eq!(u["rev_org"]["id"], org.as_str());
    assert_eq!(u["state"], "active");
    assert_eq!(probe.call("rev-users.get", json!({"id": id})).status, 200);
    // Without a ref: DevRev's default, the display id. Emails are not unique.
    let r = probe.call("rev-users.create", json!({"email": "ana@x.com"}));
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json["rev_user"]["external_ref"],
        r.json["rev_user"]["display_id"]
    );
    let cases = [
        (json!({"external_ref": taken}), 409, "conflict"),
        (json!({"external_ref": "user_new1"}), 409, "conflict"),
        (json!({"external_ref": ""}), 400, "value_not_permitted"),
        (json!({"full_name": "Ana"}), 400, "invalid_field"),
        (json!({"email": 5}), 400, "unexpected_json_type"),
        (json!({"rev_org": "not an id"}), 400, "invalid_id"),
        (
            json!({"rev_org": "don:identity:dvrv-us-1:devo/x:revo/none"}),
            404,
            "not_found",
        ),
    ];
    for (body, status, kind) in cases {
        let r = probe.call("rev-users.create", body.clone());
        assert_eq!(
            (r.status, r.json["type"].clone()),
            (status, json!(kind)),
            "{body}: {}",
            r.json
        );
    }
    // Refused requests created nothing.
    assert_eq!(
        fake.with_state(|st| st.rev_users.len()),
        small(2).rev_users.len() + 2
    );
}
