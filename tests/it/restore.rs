//! Undoing merges end to end: merge a world with the built binary, restore it from the merge
//! report or from backup folders, and compare the fake's state with the state before the
//! merge; plus the inputs a restore must refuse without changing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::mode;
use crate::merge::{World, behaviour, spec};
use devrev_fake::fake::{MoveMode, RequestRecord, SecondaryAfter, State};

/// DevRev as a restore must leave it, with contacts named by their external_ref (a restored
/// contact has a new id but the old ref): contacts' identity fields, every ticket's
/// reporters and every conversation's members, in order.
pub fn view(s: &State) -> Value {
    let mut refs: BTreeMap<String, String> = BTreeMap::new();
    for u in s.deleted_rev_users.values().chain(s.rev_users.values()) {
        refs.insert(u.id(), u.external_ref().unwrap_or_default());
    }
    let name = |id: &String| refs.get(id).cloned().unwrap_or_else(|| id.clone());
    let contacts: BTreeSet<String> = s
        .rev_users
        .values()
        .filter(|u| u.state() == "active")
        .map(|u| {
            let j = &u.json;
            // No phone numbers read the same to a person whether the list is empty or absent.
            let phones = match &j["phone_numbers"] {
                Value::Array(a) if a.is_empty() => Value::Null,
                other => other.clone(),
            };
            json!([
                u.external_ref(),
                j["email"],
                j["display_name"],
                phones,
                j["custom_fields"],
                j["rev_org"]["id"]
            ])
            .to_string()
        })
        .collect();
    let tickets: BTreeMap<&String, Vec<String>> = s
        .works
        .iter()
        .map(|(k, t)| (k, t.reported_by_ids().iter().map(name).collect()))
        .collect();
    let convs: BTreeMap<&String, Vec<String>> = s
        .conversations
        .iter()
        .map(|(k, c)| (k, c.member_ids().iter().map(name).collect()))
        .collect();
    json!({"contacts": contacts, "tickets": tickets, "conversations": convs})
}

/// No ticket or conversation names a contact that is gone or inactive.
fn only_live_contacts_named(s: &State) {
    // Dev users (agents) are members too; only contacts can be merged or restored.
    let live = |id: &String| {
        !id.contains(":revu/") || s.rev_users.get(id).is_some_and(|u| u.state() == "active")
    };
    for t in s.works.values() {
        for id in t.reported_by_ids() {
            assert!(live(&id), "{} names {id}", t.display_id());
        }
    }
    for c in s.conversations.values() {
        for id in c.member_ids() {
            assert!(live(&id), "{} names {id}", c.json["id"]);
        }
    }
}

/// `assert_eq!` of two [`view`]s that names only what differs.
fn assert_same_view(got: &Value, want: &Value, context: &str) {
    for part in ["contacts", "tickets", "conversations"] {
        if got[part] == want[part] {
            continue;
        }
        let diff: Vec<String> = match (got[part].as_object(), want[part].as_object()) {
            (Some(g), Some(w)) => w
                .iter()
                .filter(|(k, v)| g.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: got {:?}, want {v}", g.get(k)))
                .collect(),
            _ => vec![format!("got {}, want {}", got[part], want[part])],
        };
        panic!("{part} differ: {diff:#?}\n{context}");
    }
}

fn merge(w: &World) {
    let out = w.std_cmd(&w.run_args()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.fake.apply_pending_merges();
}

fn report_arg(w: &World) -> String {
    let p = w.reports().pop().expect("a merge report");
    p.strip_prefix(w.dir.path()).unwrap().display().to_string()
}

fn restore_args(w: &World) -> Vec<String> {
    vec!["--restore".into(), report_arg(w), "--yes".into()]
}

fn run(w: &World, args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    w.std_cmd(&a).output().unwrap()
}

fn writes(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter()
        .filter(|r| {
            r.path.ends_with(".update") || r.path.ends_with(".create") || r.path.ends_with(".merge")
        })
        .collect()
}

pub(crate) fn restore_reports(w: &World) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(w.path("reports"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("restore-report-")
                && p.extension().is_some_and(|e| e == "json")
        })
        .collect();
    v.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    v
}

pub(crate) fn last_restore_report(w: &World) -> Value {
    let p = restore_reports(w).pop().expect("a restore report");
    assert_eq!(mode(&p), 0o600);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Every file under `dir` with its bytes and mode, to prove a folder was not modified.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                out.insert(p.clone(), (Vec::new(), mode(&p)));
            } else {
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), mode(&p)));
            }
        }
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

#[test]
fn restoring_a_whole_run_from_its_report_gives_back_the_state_before_the_merge() {
    let mut b = behaviour(MoveMode::Partial, SecondaryAfter::Gone);
    b.renames_primary = true;
    let w = World::new(spec(6, 1, 51), b);
    let before = w.fake.with_state(|s| view(s));
    merge(&w);
    assert_ne!(
        w.fake.with_state(|s| view(s)),
        before,
        "the merge changed things"
    );
    let backups_before = tree(&w.path("backups"));
    let n0 = w.fake.requests().len();

    let out = run(&w, &restore_args(&w));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_same_view(&w.fake.with_state(|s| view(s)), &before, &err);
    w.fake.with_state(|s| only_live_contacts_named(s));
    assert_eq!(
        tree(&w.path("backups")),
        backups_before,
        "backups never modified"
    );

    // One create per pair, each with the secondary's ref; the primary has its own ref back.
    let log = w.fake.requests();
    let creates: Vec<_> = log[n0..]
        .iter()
        .filter(|r| r.path == "/rev-users.create")
        .collect();
    assert_eq!(creates.len(), w.pairs().len());
    assert!(creates.iter().all(|r| r.status == 201));
    let r = last_restore_report(&w);
    assert_eq!(r["summary"]["restored"], w.pairs().len());
    assert_eq!(r["id_map"].as_object().unwrap().len(), w.pairs().len());
    // The summary names each new contact: it is what the user goes to look at.
    for (old, new) in r["id_map"].as_object().unwrap() {
        let line = format!(
            "the merged-away contact {old} is now {}",
            new.as_str().unwrap()
        );
        assert!(err.contains(&line), "{line} missing from: {err}");
    }
    assert!(err.contains("API: "), "{err}");
    assert_eq!(r["api"]["calls"], r["api_calls"]);
    for (p, s) in w.pairs() {
        let e = r["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["old_secondary"] == s.as_str())
            .unwrap();
        assert_eq!(e["status"], "restored");
        assert_eq!(e["primary"], p.as_str());
        let new = e["new_secondary"].as_str().unwrap();
        assert_ne!(new, s);
        assert!(
            e["not_restored"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().starts_with("id:"))
        );
    }
    let calls = log.len() - n0;
    eprintln!(
        "restore figures: {} pairs, {calls} API calls, {:.1} per pair (report: {})",
        w.pairs().len(),
        calls as f64 / w.pairs().len() as f64,
        r["api_calls_per_restored_pair"]
    );

    // Re-running a finished restore does nothing.
    let n1 = w.fake.requests().len();
    let out = run(&w, &restore_args(&w));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(writes(&w.fake.requests()[n1..]).is_empty());
    assert_eq!(
        last_restore_report(&w)["summary"]["restored_earlier"],
        w.pairs().len()
    );
    // The preview knows too, from the journal, and sends no write.
    let out = w
        .cmd()
        .args(["--restore", &report_arg(&w), "--preview"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("restored earlier").count(),
        w.pairs().len(),
        "{text}"
    );
    assert!(writes(&w.fake.requests()[n1..]).is_empty());
}

#[test]
fn one_folder_with_a_deactivated_secondary_and_a_preview_first() {
    let w = World::new(
        spec(2, 0, 52),
        behaviour(MoveMode::All, SecondaryAfter::Deactivated),
    );
    let before = w.fake.with_state(|s| view(s));
    merge(&w);
    let folder = backup_folders(&w)[0].clone();
    let rel = folder
        .strip_prefix(w.dir.path())
        .unwrap()
        .display()
        .to_string();

    // Offline preview: the plan from the backup alone, nothing sent.
    let n0 = w.fake.requests().len();
    let out = w
        .cmd()
        .env_remove("DEVREV_API_TOKEN")
        .args(["--restore", &rel, "--preview"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("recreate:") && text.contains("offline"),
        "{text}"
    );
    assert_eq!(w.fake.requests().len(), n0);
    // With the token: checked read-only.
    let out = w
        .cmd()
        .args(["--restore", &rel, "--preview"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("live check:   ready"), "{text}");
    assert!(writes(&w.fake.requests()[n0..]).is_empty());

    let out = w.cmd().args(["--restore", &rel, "--yes"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = last_restore_report(&w);
    assert_eq!(restored["summary"]["restored"], 1);
    let p = restored["pairs"][0]["primary"]
        .as_str()
        .unwrap()
        .to_string();
    let s = restored["pairs"][0]["old_secondary"]
        .as_str()
        .unwrap()
        .to_string();
    let other_refs: Vec<String> = w
        .pairs()
        .iter()
        .filter(|(pp, _)| *pp != p)
        .flat_map(|(a, b)| [a, b])
        .map(|id| {
            w.seed.rev_user(id).unwrap()["external_ref"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let after = w.fake.with_state(|s| view(s));
    // The restored pair looks as before; the other (not restored) still merged.
    let (bt, at) = (&before["tickets"], &after["tickets"]);
    let sec_ref = w.seed.rev_user(&s).unwrap()["external_ref"]
        .as_str()
        .unwrap()
        .to_string();
    let p_ref = w.seed.rev_user(&p).unwrap()["external_ref"]
        .as_str()
        .unwrap()
        .to_string();
    for (id, list) in bt.as_object().unwrap() {
        let l: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // Tickets of the other pair (still merged) are left as they are.
        if l.contains(&sec_ref.as_str()) && !other_refs.iter().any(|r| l.contains(&r.as_str())) {
            assert_eq!(&at[id], list, "ticket {id}");
        }
    }
    assert_eq!(
        w.fake.with_state(|st| st.rev_users[&p].external_ref()),
        Some(p_ref)
    );
}

#[test]
fn keep_user_with_a_secondary_that_stays_as_primary_identity() {
    let mut w = World::new(
        spec(3, 0, 55),
        behaviour(MoveMode::All, SecondaryAfter::PrimaryIdentity),
    );
    w.keep_user = true;
    let before = w.fake.with_state(|s| view(s));
    merge(&w);
    let out = run(&w, &restore_args(&w));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let after = w.fake.with_state(|s| view(s));
    // The merged-away contacts are still there (merged into their primaries); every ticket
    // and conversation names the restored ones exactly where the old ones stood.
    assert_eq!(after["tickets"], before["tickets"], "{err}");
    assert_eq!(after["conversations"], before["conversations"], "{err}");
    let r = last_restore_report(&w);
    assert_eq!(r["summary"]["restored"], w.pairs().len());
    // --keep user: the primary kept its own ref, so nothing to give back.
    assert!(
        r["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["primary_external_ref_restored"].is_null())
    );
}

#[test]
fn bad_inputs_are_refused_with_clear_errors_and_nothing_changed() {
    let w = World::new(
        spec(2, 0, 53),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    merge(&w);
    let n0 = w.fake.requests().len();
    let check = |args: &[&str], code: i32, says: &str| {
        let out = w.cmd().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    // Not a backup folder, and not a report.
    std::fs::create_dir(w.path("empty")).unwrap();
    check(
        &["--restore", "empty", "--yes"],
        65,
        "not a devrev-merge backup folder",
    );
    std::fs::write(w.path("notes.json"), b"{\"hello\": 1}").unwrap();
    check(
        &["--restore", "notes.json", "--yes"],
        65,
        "not a devrev-merge merge report",
    );
    // A copy of a backup that fails verification (the original is never touched).
    let good = backup_folders(&w)[0].clone();
    let bad = w.path("tampered");
    copy_dir(&good, &bad);
    let t = bad.join("tickets.json");
    let mut bytes = std::fs::read(&t).unwrap();
    bytes.push(b' ');
    std::fs::write(&t, bytes).unwrap();
    check(&["--restore", "tampered", "--yes"], 65, "does not verify");
    // A report of another organization.
    let report = w.reports().pop().unwrap();
    let mut r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    r["organization"]["id"] = json!("don:identity:dvrv-us-1:devo/someone-else");
    std::fs::write(w.path("other-org.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    check(
        &["--restore", "other-org.json", "--yes"],
        65,
        "another DevRev organization",
    );
    assert!(
        writes(&w.fake.requests()[n0..]).is_empty(),
        "nothing sent to DevRev"
    );
    assert!(
        w.fake.requests()[n0..]
            .iter()
            .all(|r| r.path == "/auth-tokens.info")
    );
}

#[test]
fn a_pair_never_merged_is_skipped_and_nothing_changes() {
    let w = World::new(
        spec(1, 0, 54),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let out = w
        .cmd()
        .args(["--csv", "contacts.csv", "--backup-only"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = backup_folders(&w)[0].clone();
    let before = w.fake.with_state(|s| view(s));
    let n0 = w.fake.requests().len();
    let out = w
        .cmd()
        .args(["--restore", folder.to_str().unwrap(), "--yes"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("never merged"), "{err}");
    assert!(writes(&w.fake.requests()[n0..]).is_empty());
    assert_eq!(w.fake.with_state(|s| view(s)), before);
    assert_eq!(last_restore_report(&w)["pairs"][0]["status"], "skipped");
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

/// Issue 16 point 4: merge reports are cumulative; `--restore REPORT` undoes that run's pairs
/// only, `--all-in-report` every pair the report lists.
#[test]
fn restoring_a_report_undoes_that_run_only_unless_all_in_report() {
    let w = World::new(
        spec(4, 0, 57),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let mut canary = w.run_args();
    canary.extend(["--max-merges", "1"]);
    let out = w.std_cmd(&canary).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.fake.apply_pending_merges();
    merge(&w);
    let second = report_arg(&w);
    let r = w.last_report();
    let earlier = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["finished_earlier"] == true)
        .count();
    assert_eq!(earlier, 1, "the canary's pair is in the cumulative report");

    let creates = |w: &World| w.fake.count("/rev-users.create");
    let out = run(&w, &["--restore".into(), second.clone(), "--yes".into()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(creates(&w), 3, "only the 3 pairs that run merged: {err}");
    assert_eq!(last_restore_report(&w)["summary"]["restored"], 3);

    let out = run(
        &w,
        &[
            "--restore".into(),
            second,
            "--all-in-report".into(),
            "--yes".into(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(creates(&w), 4, "the canary's pair too: {err}");
}

/// Issue 16 point 3: a restore stays restored. The restore marks each pair `restored` in the
/// merge savepoint (with the recreated contact and the report); a re-run of the merge on the
/// same CSV sends nothing, and a fresh export, where the recreated contact forms a clean pair
/// with the primary again, is held as "do not merge" (exit 0).
#[test]
fn a_restored_pair_is_not_merged_again_by_a_later_run() {
    let w = World::new(
        spec(2, 0, 71),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    merge(&w);
    let out = run(&w, &restore_args(&w));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let merges = w.fake.count("/rev-users.merge");
    assert_eq!(merges, 2);

    // The merge savepoint knows.
    let sp = crate::common::read_savepoint(&w.path("savepoint.json")).unwrap();
    let recs: Vec<&Value> = sp["pairs"].as_object().unwrap().values().collect();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r["status"], "restored", "{r}");
        assert!(r["restored"]["new_contact"].is_string(), "{r}");
        assert!(r["restored"]["report"].is_string(), "{r}");
    }
    let new_ids: BTreeSet<String> = recs
        .iter()
        .map(|r| r["restored"]["new_contact"].as_str().unwrap().to_string())
        .collect();

    // The same CSV again: nothing is sent, both pairs are reported restored.
    let a = w.run(&[]);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert_eq!(a.get_output().status.code(), Some(0), "{err}");
    assert_eq!(w.fake.count("/rev-users.merge"), merges, "{err}");
    let r = w.last_report();
    assert_eq!(r["summary"]["restored"], 2, "{}", r["summary"]);

    // A fresh export: the recreated contacts pair with the primaries again.
    std::fs::write(w.path("contacts.csv"), w.fake.contacts_csv()).unwrap();
    let a = w.run(&[]);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert_eq!(a.get_output().status.code(), Some(0), "{err}");
    assert_eq!(w.fake.count("/rev-users.merge"), merges, "{err}");
    let r = w.last_report();
    let held: Vec<&Value> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["skip_reason"]["kind"] == "held_by_ledger")
        .collect();
    assert_eq!(held.len(), 2, "{}", r["pairs"]);
    for e in held {
        assert!(new_ids.contains(e["secondary"].as_str().unwrap()), "{e}");
        assert_eq!(e["skip_reason"]["hold"], "recreated", "{e}");
    }
    // The preview says the same, offline.
    let a = w
        .cmd()
        .args(["--csv", "contacts.csv", "--preview"])
        .assert();
    let out = String::from_utf8_lossy(&a.get_output().stdout).to_string()
        + &String::from_utf8_lossy(&a.get_output().stderr);
    assert!(out.contains("do not merge"), "{out}");
}

/// Issue 16 point 3: a pair whose merge record is not final (Reconcile still to run) is refused
/// by the restore before any write, with what to do; the merge run then finishes it.
#[test]
fn a_restore_of_an_unfinished_merge_is_refused() {
    let w = World::new(
        spec(1, 0, 72),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    merge(&w);
    let report = report_arg(&w);
    // As a run that stopped after AwaitMerge leaves it.
    let path = w.path("savepoint.json");
    let mut sp = crate::common::read_savepoint(&path).unwrap();
    for rec in sp["pairs"].as_object_mut().unwrap().values_mut() {
        rec["status"] = json!("in_progress");
        rec["last_step"] = json!("await_merge");
    }
    sp["version"] = 1.into();
    sp["updated_at"] = sp["created_at"].clone();
    std::fs::write(&path, serde_json::to_vec(&sp).unwrap()).unwrap();
    let before = writes(&w.fake.requests()).len();
    let out = run(&w, &["--restore".into(), report, "--yes".into()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        writes(&w.fake.requests()).len(),
        before,
        "nothing written: {err}"
    );
    let r = last_restore_report(&w);
    assert_eq!(r["pairs"][0]["status"], "skipped", "{r}");
    let why = r["pairs"][0]["reason"].to_string();
    assert!(why.contains("run the merge again"), "{why}");
}

/// Issue 16 point 6: a merged secondary that answers `301` to its primary is read by the merge
/// run's evidence rule: the restore goes ahead (it failed every time before).
#[test]
fn a_secondary_answering_301_to_the_primary_is_restored() {
    let w = World::new(
        spec(1, 0, 73),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    merge(&w);
    let (p, _) = w.pairs()[0].clone();
    // The restore's check reads the primary, then the secondary.
    w.fake.fault_next(
        Some("/rev-users.get"),
        2,
        devrev_fake::fake::Fault::Moved {
            location: format!("{}rev-users.get?id={p}", w.fake.base_url()),
        },
    );
    let out = run(&w, &restore_args(&w));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(w.fake.count("/rev-users.create"), 1, "{err}");
    assert_eq!(last_restore_report(&w)["summary"]["restored"], 1);
}

/// Issue 16 point 7: the first create is turned away (429), and before the re-run a Plug
/// login creates a contact with the freed `user_` ref and the email. The re-run's create gets a
/// 409: that contact is not ours (no create answer was ever lost), so it is not claimed and
/// given the tickets; the pair fails naming it.
#[test]
fn a_restore_never_claims_a_contact_it_did_not_create() {
    let w = World::new(
        spec(1, 0, 74),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    merge(&w);
    let (_, s) = w.pairs()[0].clone();
    // DevRev turns the create away (429, no retries left): certainly not created.
    w.fake.fault_next(
        Some("/rev-users.create"),
        1,
        devrev_fake::fake::Fault::Spurious429 { retry_after_s: 0 },
    );
    let args = restore_args(&w);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w
        .std_cmd(&a)
        .env("DEVREV_MAX_RETRIES", "0")
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A Plug login meanwhile: a new contact with the old secondary's ref and email.
    let impostor = "don:identity:dvrv-us-1:devo/0:revu/PlugLogin1".to_string();
    w.fake.with_state(|st| {
        let mut u = st.deleted_rev_users[&s].json.clone();
        let org = st.org.clone();
        let id = impostor.replace(
            "devo/0",
            &format!("devo/{}", org.rsplit('/').next().unwrap()),
        );
        u["id"] = json!(id);
        u["display_id"] = json!("REVU-PlugLogin1");
        st.rev_users
            .insert(id, devrev_fake::fake::RevUserRec { json: u });
    });
    let before = w.fake.count("/works.update") + w.fake.count("/conversations.update");
    let out = run(&w, &restore_args(&w));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        w.fake.count("/works.update") + w.fake.count("/conversations.update"),
        before,
        "no ticket given to a contact the restore did not create: {err}"
    );
    let r = last_restore_report(&w);
    let why = r["pairs"][0].to_string();
    assert!(why.contains("REVU-PlugLogin1"), "names the holder: {why}");
}
