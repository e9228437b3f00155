//! Each thing read once per run (issue 29, item 1): pairs whose tickets and conversations are
//! shared, as email threads copying two customers are. A shared timeline is listed once while
//! it is fresh (`backup::FRESH_FOR`), a shared attachment is located and downloaded once per
//! run, and every backup folder still holds real bytes and verifies on its own, also when
//! copied elsewhere, and restores.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::merge::{World, behaviour, spec};
use devrev_fake::fake::{FakeOptions, FakeServer, MoveMode, RequestRecord, SecondaryAfter};
use devrev_fake::seed::{Seed, artifact_bytes, summary_ids, user_summary};
use devrev_merge::backup::manifest::Manifest;

/// `n` clean pairs in a ring: every ticket and conversation naming pair `i`'s secondary also
/// names pair `i + 1`'s, so each is backed up by two pairs; every ticket and comment carries
/// attachments.
fn threaded_world(n: usize, rng_seed: u64) -> World {
    let mut sp = spec(n, 0, rng_seed);
    sp.tickets_per_contact = (2, 2);
    sp.shared_ticket_pct = 0;
    sp.other_reporters = (0, 0);
    sp.attachments_pct = 100;
    sp.timeline_entries = (1, 3);
    sp.conversations_per_secondary = (1, 1);
    let mut seed = Seed::generate(&sp);
    let secondaries: Vec<String> = seed.pairs().into_iter().map(|(_, s)| s).collect();
    let summaries: Vec<Value> = secondaries
        .iter()
        .map(|s| user_summary(seed.rev_user(s).unwrap()))
        .collect();
    let next_of = |list: &Value| -> Option<usize> {
        let ids = summary_ids(list);
        secondaries
            .iter()
            .position(|s| ids.contains(s))
            .map(|i| (i + 1) % n)
    };
    for t in &mut seed.tickets {
        if let Some(j) = next_of(&t["reported_by"]) {
            t["reported_by"]
                .as_array_mut()
                .unwrap()
                .push(summaries[j].clone());
        }
    }
    for c in &mut seed.conversations {
        if let Some(j) = next_of(&c["members"]) {
            c["members"]
                .as_array_mut()
                .unwrap()
                .push(summaries[j].clone());
        }
    }
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Gone);
    b.delay = std::time::Duration::ZERO;
    let fake = FakeServer::start(FakeOptions {
        seed: seed.clone(),
        merge: b,
        ..FakeOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("contacts.csv"), fake.contacts_csv()).unwrap();
    World {
        fake,
        seed,
        dir,
        keep_user: false,
    }
}

/// The objects (tickets, conversations) naming `secondary`: what its pair's backup saves.
fn objects_of(w: &World, secondary: &str) -> BTreeSet<String> {
    let names = |v: &Value, f: &str| summary_ids(&v[f]).contains(&secondary.to_string());
    w.seed
        .tickets
        .iter()
        .filter(|t| names(t, "reported_by"))
        .chain(w.seed.conversations.iter().filter(|c| names(c, "members")))
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

/// How many requests to `path` named each id (`field` of the body).
fn per_id(log: &[RequestRecord], path: &str, field: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in log.iter().filter(|r| r.path == path) {
        *out.entry(r.body[field].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    out
}

fn per_endpoint(log: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in log {
        let key = if r.path.starts_with("/download/") {
            "(downloads)".to_string()
        } else {
            r.path.clone()
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

fn backup_folders(w: &World) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(w.path("backups"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("verification.json")).unwrap()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn run_ok(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The size the fake's world gives an artifact.
fn artifact_size(w: &World, id: &str) -> usize {
    let a = w
        .seed
        .artifacts
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("artifact {id} is in the world"));
    a["file"]["size"].as_u64().unwrap() as usize
}

#[test]
fn shared_tickets_and_attachments_are_read_once_and_every_folder_stands_alone() {
    let w = threaded_world(3, 29);
    let pairs = w.pairs();
    // Every backed-up object is held by two pairs.
    let mut holders: BTreeMap<String, usize> = BTreeMap::new();
    for (_, s) in &pairs {
        for o in objects_of(&w, s) {
            *holders.entry(o).or_default() += 1;
        }
    }
    assert!(
        holders.len() >= 6 && holders.values().all(|&k| k == 2),
        "{holders:?}"
    );
    let a = w.run(&[]);
    let out = a.get_output();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = w.fake.requests();
    eprintln!(
        "calls per endpoint, {} pairs sharing {} tickets and conversations: {:?}",
        pairs.len(),
        holders.len(),
        per_endpoint(&log)
    );

    // Each timeline listed once (one page each), each attachment located once, downloaded
    // once, its size looked up at most once.
    let timelines = per_id(&log, "/timeline-entries.list", "object");
    assert_eq!(
        timelines.keys().cloned().collect::<BTreeSet<_>>(),
        holders.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert!(timelines.values().all(|&k| k == 1), "{timelines:?}");
    let located = per_id(&log, "/artifacts.locate", "id");
    assert!(!located.is_empty());
    assert!(located.values().all(|&k| k == 1), "{located:?}");
    let gets = per_id(&log, "/artifacts.get", "id");
    assert!(gets.values().all(|&k| k == 1), "{gets:?}");
    let downloads = log
        .iter()
        .filter(|r| r.path.starts_with("/download/"))
        .count();
    assert_eq!(downloads, located.len());

    // What each folder holds, and what the run says it reused.
    let folders = backup_folders(&w);
    assert_eq!(folders.len(), pairs.len());
    let manifests: Vec<Manifest> = folders.iter().map(|f| manifest(f)).collect();
    let held_timelines: usize = manifests.iter().map(|m| m.objects.len()).sum();
    let held_attachments: usize = manifests.iter().map(|m| m.counts.attachments).sum();
    let reused_t: usize = manifests.iter().map(|m| m.counts.timelines_reused).sum();
    let reused_a: usize = manifests.iter().map(|m| m.counts.attachments_reused).sum();
    assert_eq!(held_timelines, 2 * holders.len());
    assert_eq!(reused_t, held_timelines - timelines.len());
    assert_eq!(reused_a, held_attachments - located.len());
    assert!(reused_a > 0);
    // The run's log says it in one line.
    let line = format!(
        "{reused_t} timelines and {reused_a} attachments reused from earlier backups in this run"
    );
    let logs: String = std::fs::read_dir(w.path("logs"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    assert!(logs.contains(&line), "{line:?} not in the log");

    // Every folder verifies.
    run_ok(w.cmd().args(["--verify-backups", "backups"]));

    // A folder that reused attachments, copied elsewhere, verifies alone and holds the bytes.
    let (i, m) = manifests
        .iter()
        .enumerate()
        .find(|(_, m)| m.counts.attachments_reused > 0)
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let linked = m
            .objects
            .iter()
            .flat_map(|o| &o.attachments)
            .filter(|a| std::fs::metadata(folders[i].join(&a.path)).unwrap().nlink() > 1)
            .count();
        assert!(linked > 0, "reused attachments are hard links");
    }
    let name = folders[i].file_name().unwrap().to_owned();
    let copy = w.path("elsewhere").join(&name);
    copy_dir(&folders[i], &copy);
    // The original is dropped: the copy owes it nothing.
    std::fs::remove_dir_all(&folders[i]).unwrap();
    let rel = Path::new("elsewhere").join(&name).display().to_string();
    run_ok(w.cmd().args(["--verify-backups", &rel]));
    let mut checked = 0;
    for o in &m.objects {
        for a in &o.attachments {
            let bytes = std::fs::read(copy.join(&a.path)).unwrap();
            let want = artifact_bytes(&a.artifact_id, artifact_size(&w, &a.artifact_id));
            assert!(bytes == want, "{} holds the artifact's bytes", a.path);
            checked += 1;
        }
    }
    assert!(checked > 0);

    // The pair restores from the copy.
    run_ok(w.cmd().args(["--restore", &rel, "--yes"]));
    let rr = crate::restore::last_restore_report(&w);
    assert_eq!(rr["pairs"][0]["status"], "restored", "{rr}");
    assert_eq!(rr["pairs"][0]["old_secondary"], m.secondary_id.as_str());
    let new = rr["pairs"][0]["new_secondary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        w.fake.with_state(|s| s.rev_user(&new).is_some()),
        "the secondary is back as {new}"
    );

    eprintln!(
        "reused {reused_t} timelines and {reused_a} attachments; {} timelines and {} attachments read",
        timelines.len(),
        located.len()
    );
}

/// A timeline read longer ago than the freshness window is read again (the window shortened
/// to 1 ms); attachments, immutable, are still located once.
#[test]
fn a_timeline_older_than_the_window_is_read_again() {
    let w = threaded_world(3, 30);
    let pairs = w.pairs();
    let mut holders: BTreeMap<String, usize> = BTreeMap::new();
    for (_, s) in &pairs {
        for o in objects_of(&w, s) {
            *holders.entry(o).or_default() += 1;
        }
    }
    let mut cmd = w.cmd();
    cmd.env("DEVREV_MERGE_TEST_FRESH_FOR_MS", "1")
        .args(w.run_args());
    run_ok(&mut cmd);
    let log = w.fake.requests();
    let timelines = per_id(&log, "/timeline-entries.list", "object");
    for (o, k) in &holders {
        assert!(
            timelines.get(o).copied().unwrap_or(0) >= *k,
            "{o}: read by each of its {k} pairs: {timelines:?}"
        );
    }
    let located = per_id(&log, "/artifacts.locate", "id");
    assert!(located.values().all(|&k| k == 1), "{located:?}");
    let reused_t: usize = backup_folders(&w)
        .iter()
        .map(|f| manifest(f).counts.timelines_reused)
        .sum();
    assert_eq!(reused_t, 0);
    run_ok(w.cmd().args(["--verify-backups", "backups"]));
}

/// `--backup-only` shares one read cache over its pairs too, and says what it spared.
#[test]
fn backup_only_reads_each_shared_thing_once() {
    let w = threaded_world(3, 31);
    let out = run_ok(w.cmd().args(["--csv", "contacts.csv", "--backup-only"]));
    let log = w.fake.requests();
    let timelines = per_id(&log, "/timeline-entries.list", "object");
    assert!(timelines.values().all(|&k| k == 1), "{timelines:?}");
    let located = per_id(&log, "/artifacts.locate", "id");
    assert!(located.values().all(|&k| k == 1), "{located:?}");
    let manifests: Vec<Manifest> = backup_folders(&w).iter().map(|f| manifest(f)).collect();
    let reused_t: usize = manifests.iter().map(|m| m.counts.timelines_reused).sum();
    let reused_a: usize = manifests.iter().map(|m| m.counts.attachments_reused).sum();
    assert!(reused_t > 0 && reused_a > 0);
    let line = format!(
        "{reused_t} timelines and {reused_a} attachments reused from earlier backups in this run"
    );
    assert!(out.contains(&line), "{line:?} not in: {out}");
    let json: Value = serde_json::from_str(&run_ok(w.cmd().args([
        "--csv",
        "contacts.csv",
        "--backup-only",
        "--json",
    ])))
    .unwrap();
    // A second process starts afresh, and reuses within itself the same way.
    assert_eq!(json["timelines_reused"], reused_t);
    assert_eq!(json["attachments_reused"], reused_a);
    run_ok(w.cmd().args(["--verify-backups", "backups"]));
}
