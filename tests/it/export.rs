//! `--export-contacts`: the contacts CSV from the API, checked against the fake's own
//! warehouse-style CSV of the same world (same pairs, same needs-review groups), under small
//! pages and random faults; its exit codes; resuming after a failure.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::mode;
use crate::merge::{World, behaviour, spec};
use devrev_fake::fake::{Fault, MoveMode, RandomFaults, ScriptedFault, SecondaryAfter};

fn world(tweak: impl FnOnce(&mut devrev_fake::fake::FakeOptions)) -> World {
    World::with(
        spec(14, 8, 23),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| {
            o.max_page = 3;
            tweak(o);
        },
    )
}

/// The plan of `csv` as sets: clean pairs (email, primary, secondary) and needs-review
/// groups (reason, email, member ids).
fn plan_of(w: &World, csv: &str, extra: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = w
        .cmd()
        .args(["--csv", csv, "--preview", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pairs = plan["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} <- {}",
                p["email"], p["primary"]["rev_user_id"], p["secondary"]["rev_user_id"]
            )
        })
        .collect();
    let review = plan["needs_review"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut ids: Vec<String> = g["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["rev_user_id"].to_string())
                .collect();
            ids.sort();
            format!("{} {} {}", g["reason"], g["email"], ids.join(","))
        })
        .collect();
    (pairs, review)
}

#[test]
fn export_previews_like_the_warehouse_export_under_small_pages_and_faults() {
    let w = world(|o| {
        o.random_faults = Some(RandomFaults {
            seed: 7,
            probability: 0.1,
            kinds: vec![
                Fault::Status500,
                Fault::Status503,
                Fault::Spurious429 { retry_after_s: 0 },
                Fault::Drop,
            ],
        });
    });
    let out = w
        .cmd()
        .args(["--export-contacts", "exported.csv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("share an email"),
        "the estimate is shown: {stderr}"
    );
    assert!(
        w.fake.requests().iter().any(|r| r.fault.is_some()),
        "faults were injected"
    );
    assert_eq!(mode(&w.path("exported.csv")), 0o600);
    let text = std::fs::read_to_string(w.path("exported.csv")).unwrap();
    assert!(text.starts_with(
        "REV_USER_ID,DISPLAY_NAME,EMAIL,EXTERNAL_REF,FULL_NAME,CREATED_AT,UPDATED_AT,TICKET_COUNT\n"
    ));
    assert_eq!(
        text.lines().count(),
        w.fake.contacts_csv().lines().count(),
        "every contact once"
    );
    assert!(!w.path("exported.csv.export-progress.json").exists());

    let want = plan_of(&w, "contacts.csv", &[]);
    assert!(!want.0.is_empty() && !want.1.is_empty());
    assert_eq!(plan_of(&w, "exported.csv", &[]), want);

    // TICKET_COUNT: what DevRev lists for contacts sharing an email, empty for the others.
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let paired: BTreeSet<String> = want
        .0
        .iter()
        .chain(want.1.iter())
        .flat_map(|s| {
            s.split(['"', ' ', ','])
                .filter(|t| t.starts_with("don:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let (id, count) = (&rec[0], &rec[7]);
        if paired.contains(id) {
            let listed = w.fake.with_state(|s| s.tickets_reported_by(id).len());
            assert_eq!(count, listed.to_string(), "{id}");
        }
    }
}

#[test]
fn export_honours_the_email_domain() {
    let w = world(|_| {});
    let csv = w.fake.contacts_csv();
    let domain = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split(',')
                .nth(2)?
                .rsplit_once('@')
                .map(|(_, d)| d.trim().to_lowercase())
        })
        .next()
        .expect("a contact with an email");
    w.cmd()
        .args([
            "--export-contacts",
            "exported.csv",
            "--email-domain",
            &domain,
        ])
        .assert()
        .success();
    let text = std::fs::read_to_string(w.path("exported.csv")).unwrap();
    for rec in csv::Reader::from_reader(text.as_bytes()).records() {
        let rec = rec.unwrap();
        assert!(
            rec[2]
                .trim()
                .to_lowercase()
                .ends_with(&format!("@{domain}")),
            "{:?}",
            rec
        );
    }
    let d = ["--email-domain", domain.as_str()];
    assert_eq!(
        plan_of(&w, "exported.csv", &d),
        plan_of(&w, "contacts.csv", &d)
    );
}

#[test]
fn export_exit_codes_bad_token_unwritable_existing() {
    let w = world(|_| {});
    // A bad token: 77, nothing written.
    w.cmd()
        .env("DEVREV_API_TOKEN", "not-the-token")
        .args(["--export-contacts", "exported.csv"])
        .assert()
        .code(77);
    assert!(!w.path("exported.csv").exists());
    // An output that cannot be written (its folder is a file): 73, before any API call.
    std::fs::write(w.path("afile"), "x").unwrap();
    let before = w.fake.requests().len();
    w.cmd()
        .args(["--export-contacts", "afile/exported.csv"])
        .assert()
        .code(73);
    assert_eq!(w.fake.requests().len(), before, "no API call");
    // An existing output without --force: 73 and left alone; with --force: replaced.
    std::fs::write(w.path("exported.csv"), "mine").unwrap();
    w.cmd()
        .args(["--export-contacts", "exported.csv"])
        .assert()
        .code(73);
    assert_eq!(
        std::fs::read_to_string(w.path("exported.csv")).unwrap(),
        "mine"
    );
    w.cmd()
        .args(["--export-contacts", "exported.csv", "--force"])
        .assert()
        .success();
    assert!(
        std::fs::read_to_string(w.path("exported.csv"))
            .unwrap()
            .starts_with("REV_USER_ID,")
    );
}

#[test]
fn an_interrupted_export_resumes_where_it_stopped() {
    let w = world(|o| {
        o.faults = vec![ScriptedFault {
            path: Some("/works.list".into()),
            nth: 12,
            fault: Fault::Status500,
        }];
    });
    let out = w
        .cmd()
        .env("DEVREV_MAX_RETRIES", "0")
        .args(["--export-contacts", "exported.csv"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w.path("exported.csv").exists());
    let progress = w.path("exported.csv.export-progress.json");
    assert_eq!(mode(&progress), 0o600);
    let saved: Value = serde_json::from_slice(&std::fs::read(&progress).unwrap()).unwrap();
    let saved_ids: BTreeSet<String> = saved["counts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let saved = saved_ids.len();
    assert!(
        saved >= 3,
        "counts made before the failure are kept: {saved}"
    );

    let first_seq = w.fake.requests().len();
    let out = w
        .cmd()
        .args(["--export-contacts", "exported.csv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("Resuming: {saved} ticket count(s)")),
        "{stderr}"
    );
    assert!(
        !progress.exists(),
        "the progress file is removed at the end"
    );
    // The resumed export counts no contact again whose count was saved.
    let again: BTreeSet<String> = w.fake.requests()[first_seq..]
        .iter()
        .filter(|r| r.path == "/works.list")
        .filter_map(|r| r.body["reported_by"][0].as_str().map(str::to_string))
        .collect();
    assert!(!again.is_empty());
    assert!(
        again.iter().all(|id| !saved_ids.contains(id)),
        "counted again: {:?}",
        again.intersection(&saved_ids).collect::<Vec<_>>()
    );
    let shared = plan_of(&w, "contacts.csv", &[]);
    assert_eq!(plan_of(&w, "exported.csv", &[]), shared);
}
