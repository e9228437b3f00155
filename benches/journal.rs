//! Journal benchmark: what one saga step's savepoint write costs at 10, 10,000 and 100,000
//! pairs. The step's cost must not grow with the plan (issue 13, point 3).
//!
//! Run: `cargo bench --bench journal` (optionally `-- STEPS`, default 20 timed steps per size).
//! For each size it writes a journal of that many realistic records (about 1 KB each as JSON),
//! opens it like a run does (lock + load), makes one warm-up change (which migrates an older
//! savepoint), then times `STEPS` further `Savepoint::update` calls, each written and fsynced
//! before it returns, and prints the median and worst step, the load time and the file size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use devrev_merge::backup::BackupSummary;
use devrev_merge::merge::journal::{
    MergeConfirmation, MergeIntent, MergeOutcome, MergedSign, PairRecord, PairStatus,
    SavepointFile, Step, pair_key,
};
use devrev_merge::merge::savepoint::Savepoint;
use devrev_merge::options::Keep;

/// A finished pair, as a real run leaves it: backup summary, merge intent and repairs.
fn record(n: usize) -> PairRecord {
    let don = |kind: &str, id: String| format!("don:identity:dvrv-us-1:devo/1Abc2Def:{kind}/{id}");
    let mut r = PairRecord::new(
        &format!("person.number{n}@example.com"),
        &don("revu", format!("P{n:08}")),
        &don("revu", format!("S{n:08}")),
        Keep::Revu,
    );
    let now = Utc::now();
    r.status = PairStatus::Merged;
    r.last_step = Some(Step::Done);
    r.primary_display_name = Some(format!("Person Number {n}"));
    r.secondary_external_ref = Some(format!("user_{n:08}"));
    r.backup = Some(BackupSummary {
        dir: PathBuf::from(format!(
            "backups/20260101T000000Z-abcdef/person.number{n}@example.com"
        )),
        tickets: 3,
        timeline_entries: 12,
        attachments: 2,
        conversations: 1,
        bytes: 48_213,
        warnings: vec![],
        ticket_counts_differ: vec![],
        timelines_reused: 0,
        attachments_reused: 0,
    });
    r.merge = Some(MergeIntent {
        attempt: 1,
        requested_at: now,
        outcome: Some(MergeOutcome::Accepted { at: now }),
        unmerged_since: None,
        watch_until: None,
    });
    r.merged = Some(MergeConfirmation {
        at: now,
        sign: MergedSign::PrimaryIdentity {
            id: r.primary.clone(),
        },
        destination_confirmed: false,
    });
    r.repairs.tickets = (0..3)
        .map(|t| format!("don:core:dvrv-us-1:devo/1Abc2Def:ticket/{n}{t}"))
        .collect();
    r.external_ref_adopted = Some(format!("user_{n:08}"));
    r.finished_at = Some(now);
    r
}

fn main() {
    let steps: usize = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "{:>8}  {:>10}  {:>12}  {:>12}  {:>10}",
        "pairs", "file MB", "load", "step median", "step max"
    );
    for pairs in [10usize, 10_000, 100_000] {
        let path = dir.path().join(format!("savepoint-{pairs}.json"));
        let mut file = SavepointFile::new();
        for n in 0..pairs {
            let r = record(n);
            file.pairs.insert(pair_key(&r.primary, &r.secondary), r);
        }
        // The starting journal is written the way the first build wrote it (one JSON
        // document); the warm-up step below migrates it if the build reads it differently.
        let mut old = serde_json::to_value(&file).expect("serialize");
        old["version"] = serde_json::json!(1);
        devrev_merge::fsutil::write_json_atomic(&path, &old).expect("write");
        drop(file);

        let t = Instant::now();
        let mut sp = Savepoint::open(&path).expect("open");
        let load = t.elapsed();
        let keys: Vec<String> = sp.file().pairs.keys().take(steps + 1).cloned().collect();
        sp.update(&keys[0], |r| r.repairs.display_name_restored = true)
            .expect("warm-up step");
        let mut times: Vec<Duration> = Vec::with_capacity(steps);
        for i in 0..steps {
            let key = &keys[(i + 1) % keys.len()];
            let t = Instant::now();
            sp.update(key, |r| {
                r.repairs.display_name_restored = !r.repairs.display_name_restored
            })
            .expect("step");
            times.push(t.elapsed());
        }
        times.sort();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{pairs:>8}  {:>10.1}  {:>10.1}ms  {:>10.3}ms  {:>8.3}ms",
            size as f64 / 1e6,
            load.as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
    }
}
