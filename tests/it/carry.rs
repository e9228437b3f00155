//! Nothing silently lost (issue 18): after the merge the survivor holds the secondary's phone
//! numbers, custom fields and name it lacked, from the verified backup; conflicts stay the
//! survivor's and are reported; a value DevRev refuses is reported and costs nothing else; a
//! SIGKILL between the write and its answer resumes without writing twice; `--restore` puts
//! the survivor back; `--no-carry` leaves DevRev's lossy behaviour alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::common::read_savepoint;
use crate::merge::{World, behaviour, spec};
use devrev_fake::FakeOptions;
use devrev_fake::fake::{Fault, MoveMode, RequestRecord, ScriptedFault, SecondaryAfter};
use devrev_fake::seed::Seed;
use devrev_merge::devrev::types::RevUser;
use devrev_merge::merge::carry::{self, CarryItem, CarryPlan};

const CRM_FRAGMENT: &str = "tenant_fragment/9";
const BAD_PHONE: &str = "415-555-0198";

pub(crate) fn contact<'a>(seed: &'a mut Seed, id: &str) -> &'a mut Value {
    seed.rev_users
        .iter_mut()
        .find(|u| u["id"] == id)
        .expect("seed contact")
}

/// The issue's world: four `REVU-`/`user_` pairs whose `user_` contacts (Plug-created) hold
/// phone numbers and custom fields the `REVU-` ones lack; pair 0 also holds a plan the
/// primary holds with another value (a conflict), pair 1 a field of a schema fragment the
/// primary lacks (DevRev refuses it), pair 2 a phone number not in E.164 (refused), pair 3 the
/// very phone numbers its primary has (nothing to add), and a real name where the primary's
/// display name is only its email.
pub(crate) fn issue_world(keep_user: bool, tweak: impl FnOnce(&mut FakeOptions)) -> World {
    let sp = spec(4, 0, 71);
    let mut seed = Seed::generate(&sp);
    let pairs = seed.pairs();
    let (p0, s0) = &pairs[0];
    contact(&mut seed, p0)["custom_fields"]["tnt__plan"] = json!("free");
    contact(&mut seed, s0)["custom_fields"]["tnt__plan"] = json!("pro");
    contact(&mut seed, s0)["custom_fields"]["tnt__company"] = json!("Acme Ltd");
    // A tag the primary lacks (carried), and one both hold with other values (a conflict).
    let org = seed.org.clone();
    let tag = |n: u32, value: &str| {
        json!({"tag": {"id": format!("don:core:dvrv-us-1:devo/{org}:tag/{n}"),
                       "display_id": format!("TAG-{n}"), "name": format!("tier-{n}")},
               "value": value})
    };
    contact(&mut seed, s0)["tags"] = json!([tag(5, "gold"), tag(6, "a")]);
    contact(&mut seed, p0)["tags"] = json!([tag(6, "b")]);
    let (_, s1) = &pairs[1];
    let s1c = contact(&mut seed, s1);
    let org = s1c["id"]
        .as_str()
        .unwrap()
        .split(':')
        .nth(3)
        .unwrap()
        .to_string();
    s1c["custom_schema_fragments"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!("don:core:dvrv-us-1:{org}:{CRM_FRAGMENT}")));
    s1c["custom_fields"]["tnt__legacy_crm_id"] = json!("CRM-77");
    let (_, s2) = &pairs[2];
    contact(&mut seed, s2)["phone_numbers"] = json!(["+14155550199", BAD_PHONE]);
    let (p3, s3) = &pairs[3];
    let phones = contact(&mut seed, s3)["phone_numbers"].clone();
    contact(&mut seed, p3)["phone_numbers"] = phones;
    let email = contact(&mut seed, p3)["email"].clone();
    contact(&mut seed, p3)["display_name"] = email;
    contact(&mut seed, s3)["display_name"] = json!("Ines Real-Name");
    let mut b = behaviour(MoveMode::All, SecondaryAfter::Mixed);
    b.delay = Duration::ZERO;
    let fake_seed = seed.clone();
    let mut w = World::with(sp, b, |o| {
        o.seed = fake_seed;
        tweak(o);
    });
    w.seed = seed;
    w.keep_user = keep_user;
    w
}

pub(crate) fn user(v: &Value) -> RevUser {
    serde_json::from_value(v.clone()).unwrap()
}

/// The carry-over's plan for a pair, from the world as the backup saw it.
pub(crate) fn plan(w: &World, p: &str, s: &str) -> CarryPlan {
    carry::plan(
        &user(w.seed.rev_user(s).unwrap()),
        &user(w.seed.rev_user(p).unwrap()),
    )
}

pub(crate) fn live(w: &World, id: &str) -> RevUser {
    user(
        &w.fake
            .with_state(|st| st.rev_user(id).unwrap().json.clone()),
    )
}

fn refused_in_this_world(item: &CarryItem) -> bool {
    match item {
        CarryItem::PhoneNumber { number } => number == BAD_PHONE,
        CarryItem::CustomField { key, .. } => key == "tnt__legacy_crm_id",
        CarryItem::DisplayName { .. } | CarryItem::Tag { .. } => false,
    }
}

pub(crate) fn entry<'a>(report: &'a Value, primary: &str) -> &'a Value {
    report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["primary"] == primary)
        .expect("pair in the report")
}

pub(crate) fn updates_of<'a>(log: &'a [RequestRecord], id: &str) -> Vec<&'a RequestRecord> {
    log.iter()
        .filter(|r| r.path == "/rev-users.update" && r.body["id"] == id)
        .collect()
}

/// Every survivor holds the union, keeps its own value on a conflict, lacks only what DevRev
/// refused; the report lists per pair what was carried, conflicted and refused, and the
/// summary counts it. Returns (carried phone numbers, carried custom fields, conflicts).
pub(crate) fn check_carried(w: &World, stderr: &str) -> (usize, usize, usize) {
    let r = w.last_report();
    let (mut phones, mut fields, mut conflicts, mut refused, mut names, mut tags) =
        (0, 0, 0, 0, 0, 0);
    for (p, s) in w.pairs() {
        let plan = plan(w, &p, &s);
        let now = live(w, &p);
        let e = &entry(&r, &p)["carry"];
        for item in &plan.items {
            let want = !refused_in_this_world(item);
            assert_eq!(carry::held(&now, item), want, "{p}: {item:?}");
            let listed = |k: &str| {
                e[k].as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == &json!(item) || x["item"] == json!(item))
            };
            assert!(listed(if want { "carried" } else { "refused" }), "{e}");
            if want {
                match item {
                    CarryItem::PhoneNumber { .. } => phones += 1,
                    CarryItem::CustomField { .. } => fields += 1,
                    CarryItem::DisplayName { .. } => names += 1,
                    CarryItem::Tag { .. } => tags += 1,
                }
            } else {
                refused += 1;
            }
        }
        for c in &plan.conflicts {
            let mine = match c.key.strip_prefix("tags.") {
                Some(id) => now.extra["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["tag"]["id"] == id)
                    .map_or(Value::Null, |t| t["value"].clone()),
                None => now.extra["custom_fields"][&c.key].clone(),
            };
            assert_eq!(mine, c.survivor, "{p}: the survivor's {} stays", c.key);
            assert!(
                e["conflicts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["key"] == c.key.as_str()
                        && x["survivor"] == c.survivor
                        && x["secondary"] == c.secondary),
                "both values listed: {e}"
            );
            conflicts += 1;
        }
        // The survivor's own name, or the one carried over an email-only name.
        let name = plan
            .items
            .iter()
            .find_map(|i| match i {
                CarryItem::DisplayName { name } => Some(name.clone()),
                _ => None,
            })
            .or_else(|| {
                w.seed.rev_user(&p).unwrap()["display_name"]
                    .as_str()
                    .map(str::to_string)
            });
        assert_eq!(now.display_name, name, "{p}");
        // No phone number twice.
        let list = now.extra["phone_numbers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut dedup = list.clone();
        dedup.sort_by_key(|v| v.to_string());
        dedup.dedup();
        assert_eq!(dedup.len(), list.len(), "{p}: {list:?}");
    }
    assert_eq!(refused, 2, "the CRM field and the non-E.164 number");
    let sum = &r["summary"]["carry"];
    assert_eq!(sum["phone_numbers"], phones, "{sum}");
    assert_eq!(sum["custom_fields"], fields, "{sum}");
    assert_eq!(sum["conflicts"], conflicts, "{sum}");
    assert_eq!(sum["refused"], 2, "{sum}");
    assert_eq!(sum["display_names"], names, "{sum}");
    assert_eq!(
        (sum["tags"].clone(), tags),
        (json!(1), 1),
        "pair 0's tag: {sum}"
    );
    let line = format!(
        "carried: {phones} phone number{}, {fields} custom field{}",
        if phones == 1 { "" } else { "s" },
        if fields == 1 { "" } else { "s" }
    );
    assert!(stderr.contains(&line), "{line} in: {stderr}");
    for refused in ["custom_fields.tnt__legacy_crm_id", BAD_PHONE] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("not carried over") && l.contains(refused)),
            "{refused} named on the console: {stderr}"
        );
    }
    (phones, fields, conflicts)
}

pub(crate) fn run_ok(w: &World, extra: &[&str]) -> String {
    let a = w.run(extra);
    let out = a.get_output();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    err
}

#[test]
fn every_survivor_holds_the_union_and_the_report_lists_conflicts_and_refusals() {
    let w = issue_world(false, |_| {});
    let err = run_ok(&w, &[]);
    let (phones, fields, conflicts) = check_carried(&w, &err);
    let log = w.fake.requests();
    let mut per_pair = BTreeMap::new();
    for (i, (p, _)) in w.pairs().iter().enumerate() {
        per_pair.insert(i, updates_of(&log, p).len());
    }
    // Under --keep revu the carry-over rides in the ref adoption's update: pairs without a
    // refusal cost what they cost before (one update); a named refusal costs one retry.
    assert_eq!(per_pair[&0], 1, "{per_pair:?}");
    assert_eq!(per_pair[&3], 1, "the carried name too: {per_pair:?}");
    assert_eq!(
        per_pair[&1], 2,
        "one retry without the refused field: {per_pair:?}"
    );
    // The HTML page beside the report shows it per pair too.
    let html = std::fs::read_to_string(w.reports().pop().unwrap().with_extension("html")).unwrap();
    for want in [
        "Carried over",
        "Refused by DevRev",
        "tnt__legacy_crm_id",
        BAD_PHONE,
        "tnt__plan: kept",
    ] {
        assert!(html.contains(want), "{want} in the HTML page");
    }
    let total: usize = per_pair.values().sum();
    eprintln!(
        "carry-over figures (--keep revu, 4 pairs): {phones} phone numbers, {fields} custom fields and {} display name(s) carried, \
         {conflicts} conflicts kept, 2 refused; rev-users.update per pair {per_pair:?} ({total} in all)",
        w.last_report()["summary"]["carry"]["display_names"]
    );
}

/// DevRev's 400 may not name the refused field: the tool then tries the values one by one,
/// and ends with the same survivors.
#[test]
fn a_refusal_that_names_no_field_is_found_value_by_value() {
    let w = issue_world(false, |o| o.quirks.unnamed_field_errors = true);
    let err = run_ok(&w, &[]);
    check_carried(&w, &err);
}

/// A merge that keeps the secondary's data itself (the fake's lossless setting), and renames
/// the primary after the secondary: the carry-over writes the same values again, harmlessly,
/// nothing is doubled, and each survivor ends with its own name or the carried one.
#[test]
fn a_lossless_merge_that_renames_the_primary_ends_the_same() {
    let w = issue_world(false, |o| {
        o.merge.lossy = false;
        o.merge.renames_primary = true;
    });
    let err = run_ok(&w, &[]);
    check_carried(&w, &err);
}

/// `--keep user`: the survivor is the Plug contact; the `REVU-` secondary's name replaces a
/// display name that was only the email, in one update of its own.
#[test]
fn keep_user_carries_in_one_update_of_its_own() {
    let w = issue_world(true, |_| {});
    let err = run_ok(&w, &[]);
    let r = w.last_report();
    for (p, s) in w.pairs() {
        let plan = plan(&w, &p, &s);
        let now = live(&w, &p);
        for item in &plan.items {
            assert!(carry::held(&now, item), "{p}: {item:?}");
        }
        let n = updates_of(&w.fake.requests(), &p).len();
        assert_eq!(n, usize::from(!plan.items.is_empty()), "{p}");
        assert!(entry(&r, &p)["carry"].is_object());
    }
    assert!(err.contains("carry-over:"), "{err}");
}

/// `--no-carry`: DevRev's behaviour, nothing written beyond the ref adoption.
#[test]
fn no_carry_leaves_the_secondarys_data_to_the_backup() {
    let w = issue_world(false, |_| {});
    let err = run_ok(&w, &["--no-carry"]);
    let r = w.last_report();
    for (p, s) in w.pairs() {
        let plan = plan(&w, &p, &s);
        let now = live(&w, &p);
        assert!(
            plan.items.iter().all(|i| !carry::held(&now, i)),
            "{p} lost them, as DevRev's merge does"
        );
        let log = w.fake.requests();
        let ups = updates_of(&log, &p);
        assert_eq!(ups.len(), 1, "the ref adoption only");
        assert_eq!(
            ups[0].body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["external_ref", "id"]
        );
        assert!(entry(&r, &p).get("carry").is_none());
    }
    assert!(!err.contains("carry-over:"), "{err}");
}

/// A SIGKILL after the update that carries the values was sent and before its answer: the
/// savepoint holds the intent (the exact values); the next run reads the survivor, finds them
/// there and does not write them again. The killed update is the first pair's second one
/// (its first was refused for the CRM field), so the crash also follows a refusal.
#[test]
fn a_kill_between_the_carry_write_and_its_answer_resumes_without_writing_twice() {
    let w = issue_world(false, |o| {
        o.faults.push(ScriptedFault {
            path: Some("/rev-users.update".into()),
            nth: 2,
            // Long enough that a loaded machine still kills before the answer.
            fault: Fault::Slow(Duration::from_millis(2000)),
        });
    });
    let mut child = w.std_cmd(&w.run_args()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let in_flight = loop {
        assert!(Instant::now() < deadline, "no update seen");
        if let Some(r) = w
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.path == "/rev-users.update")
            .nth(1)
        {
            break r;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().code(), None, "killed");
    assert_eq!(in_flight.status, 0, "killed before the answer");
    let p = in_flight.body["id"].as_str().unwrap().to_string();
    let (_, s) = w.pairs().into_iter().find(|(x, _)| *x == p).unwrap();
    // The slow update is applied once its delay is over (DevRev got it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !w
        .fake
        .requests()
        .iter()
        .any(|r| r.seq == in_flight.seq && r.status != 0)
    {
        assert!(
            Instant::now() < deadline,
            "the slow update was never handled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pair_index = w.pairs().iter().position(|(x, _)| *x == p).unwrap();
    let handled = w.fake.requests()[in_flight.seq - 1].status;
    assert_eq!(handled, 200, "pair {pair_index}: {:?}", in_flight.body);
    let plan = plan(&w, &p, &s);
    let now = live(&w, &p);
    assert!(
        plan.items
            .iter()
            .filter(|i| !matches!(i, CarryItem::DisplayName { .. }))
            .all(|i| carry::held(&now, i) || refused_in_this_world(i)),
        "DevRev applied it"
    );
    let sp: Value = read_savepoint(&w.path("savepoint.json")).unwrap();
    let rec = &sp["pairs"][format!("{p} <- {s}")];
    let intent = &rec["carry"]["write"];
    assert!(
        intent["requested_at"].is_string(),
        "intent before the call: {rec}"
    );
    assert!(
        intent["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["field"] == "custom_field"),
        "the exact values: {intent}"
    );
    assert_eq!(
        rec["carry"]["carried"],
        Value::Null,
        "no outcome yet: {rec}"
    );

    let err = run_ok(&w, &[]);
    check_carried(&w, &err);
    let carrying = updates_of(&w.fake.requests(), &p)
        .into_iter()
        .filter(|r| r.body.get("custom_fields").is_some())
        .count();
    // The refused first attempt, then the killed one that applied: never a third.
    assert_eq!(carrying, 2, "the carried values were written once");
}

/// `--restore` puts each survivor back as its backup held it: the carried values go, and a
/// carried value someone changed since is left and reported.
#[test]
fn restore_puts_the_survivor_back() {
    let w = issue_world(false, |_| {});
    let before = w.fake.with_state(|st| crate::restore::view(st));
    run_ok(&w, &[]);
    w.fake.apply_pending_merges();
    // Someone edits one carried value on pair 0's survivor after the merge.
    let (p0, _) = w.pairs()[0].clone();
    w.fake.with_state(|st| {
        st.rev_users.get_mut(&p0).unwrap().json["custom_fields"]["tnt__company"] =
            json!("Acme Holdings");
    });
    let report = w.reports().pop().unwrap();
    let rel = report
        .strip_prefix(w.dir.path())
        .unwrap()
        .display()
        .to_string();
    let out = w.std_cmd(&["--restore", &rel, "--yes"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    // All as before the merge, but for the value changed since.
    let after = w.fake.with_state(|st| {
        st.rev_users.get_mut(&p0).unwrap().json["custom_fields"]
            .as_object_mut()
            .unwrap()
            .remove("tnt__company");
        crate::restore::view(st)
    });
    assert_eq!(after["contacts"], before["contacts"]);
    let rr: Value = {
        let mut v: Vec<_> = std::fs::read_dir(w.path("reports"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                n.starts_with("restore-report-") && n.ends_with(".json")
            })
            .collect();
        v.sort();
        serde_json::from_slice(&std::fs::read(v.pop().unwrap()).unwrap()).unwrap()
    };
    let e = rr["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["primary"] == p0.as_str())
        .expect("pair 0 in the restore report");
    assert!(
        e["not_restored"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("tnt__company")),
        "the changed value is reported: {e}"
    );
}

/// The preview cannot know the contacts' fields from the CSV; with `--check-live` it reads
/// them and says what the merge would carry.
#[test]
fn the_live_preview_says_what_would_be_carried() {
    let w = issue_world(false, |_| {});
    let (mut phones, mut fields, mut names, mut conflicts) = (0, 0, 0, 0);
    for (p, s) in w.pairs() {
        let plan = plan(&w, &p, &s);
        for i in &plan.items {
            match i {
                CarryItem::PhoneNumber { .. } => phones += 1,
                CarryItem::CustomField { .. } => fields += 1,
                CarryItem::DisplayName { .. } => names += 1,
                CarryItem::Tag { .. } => {}
            }
        }
        conflicts += plan.conflicts.len();
    }
    assert!(
        phones > 0 && fields > 0 && conflicts > 0,
        "the world has some of each"
    );
    let out = w
        .cmd()
        .args(["--csv", "contacts.csv", "--preview", "--check-live"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(names, 1, "pair 3's real name");
    let want = format!(
        "would carry: {phones} phone numbers, {fields} custom fields, 1 display name, 1 tag; {conflicts} conflict{} kept as the survivor's",
        if conflicts == 1 { "" } else { "s" }
    );
    assert!(text.contains(&want), "{want} in:\n{text}");
    assert!(
        w.fake
            .requests()
            .iter()
            .all(|r| !r.path.ends_with(".update"))
    );
}

/// The fake's value rules for a contact's own data, which the carry-over relies on being
/// DevRev's (devrev-api.md §4.3): E.164 phone numbers, custom fields defined by the contact's
/// schema fragments and sent with a schema spec, a null clearing a field; and its lossy merge.
#[test]
fn the_fake_enforces_the_value_rules_and_loses_the_secondarys_data() {
    let w = issue_world(false, |_| {});
    let probe = crate::probe::Probe::new(&w.fake);
    let (p, s) = w.pairs()[1].clone();
    let spec = json!({"tenant_fragment": true});
    let field = |r: &crate::probe::Resp| r.json["field_name"].clone();
    let r = probe.call(
        "rev-users.update",
        json!({"id": p, "phone_numbers": ["+14155550100", "415 555"]}),
    );
    assert_eq!((r.status, field(&r)), (400, json!("phone_numbers")));
    let r = probe.call(
        "rev-users.update",
        json!({"id": p, "custom_fields": {"tnt__company": "X"}}),
    );
    assert_eq!(r.status, 400, "no schema spec: {}", r.json);
    let r = probe.call(
        "rev-users.update",
        json!({"id": p, "custom_fields": {"tnt__legacy_crm_id": "X"}, "custom_schema_spec": spec}),
    );
    assert_eq!(
        (r.status, field(&r)),
        (400, json!("custom_fields.tnt__legacy_crm_id"))
    );
    // The secondary's fragments define it.
    let r = probe.call(
        "rev-users.update",
        json!({"id": s, "custom_fields": {"tnt__legacy_crm_id": "Y"}, "custom_schema_spec": spec}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let r = probe.call(
        "rev-users.update",
        json!({"id": p, "custom_fields": {"tnt__company": "X"}, "custom_schema_spec": spec,
               "phone_numbers": ["+14155550100"]}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["rev_user"]["custom_fields"]["tnt__company"], "X");
    let r = probe.call(
        "rev-users.update",
        json!({"id": p, "custom_fields": {"tnt__company": null}, "custom_schema_spec": spec}),
    );
    assert!(
        r.json["rev_user"]["custom_fields"]
            .get("tnt__company")
            .is_none(),
        "{}",
        r.json
    );
    // Unnamed: the same refusal without a field name.
    w.fake.set_options(|o| o.quirks.unnamed_field_errors = true);
    let r = probe.call(
        "rev-users.update",
        json!({"id": p, "phone_numbers": ["415 555"]}),
    );
    assert_eq!((r.status, field(&r)), (400, Value::Null));
    // A lossy merge: the merged-away secondary shows none of its own data, the primary none of it.
    w.fake
        .set_options(|o| o.merge.secondary_after = SecondaryAfter::Deactivated);
    let before = live(&w, &p);
    let r = probe.call(
        "rev-users.merge",
        json!({"primary_user": p, "secondary_user": s}),
    );
    assert_eq!(r.status, 200);
    w.fake.apply_pending_merges();
    let gone = live(&w, &s);
    assert!(gone.extra.get("phone_numbers").is_none() && gone.extra["custom_fields"] == json!({}));
    assert_eq!(
        live(&w, &p).extra["custom_fields"],
        before.extra["custom_fields"]
    );
}

/// Tags are a beta field: the update that carries them goes with the beta scope (the fake
/// refuses `tags` without it, so the other tests prove it is sent). An org without the beta
/// API refuses the tags alone; everything else is still carried.
#[test]
fn without_the_beta_api_only_the_tags_are_refused() {
    let w = issue_world(false, |o| o.quirks.no_beta = true);
    run_ok(&w, &[]);
    let r = w.last_report();
    let (p0, s0) = w.pairs()[0].clone();
    let plan = plan(&w, &p0, &s0);
    let now = live(&w, &p0);
    let e = &entry(&r, &p0)["carry"];
    for item in &plan.items {
        let is_tag = matches!(item, CarryItem::Tag { .. });
        assert_eq!(carry::held(&now, item), !is_tag, "{item:?}");
    }
    let refused = e["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{e}");
    assert_eq!(refused[0]["item"]["field"], "tag");
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("tags"),
        "DevRev's words: {e}"
    );
    assert_eq!(r["summary"]["carry"]["tags"], 0);
}

/// A 400 on the ref adoption's update that names the ref itself (a reason the fake does not
/// model: `Fault::InvalidField`) is the adoption's failure, not the carried values': nothing
/// is reported refused, and the re-run adopts the ref and carries every value (review finding:
/// the values were refused for good with the ref's error).
#[test]
fn a_refusal_naming_the_ref_refuses_no_carried_value() {
    let w = issue_world(false, |o| {
        o.faults.push(ScriptedFault {
            path: Some("/rev-users.update".into()),
            nth: 1,
            fault: Fault::InvalidField {
                field: "external_ref".into(),
            },
        })
    });
    let a = w.run(&[]);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert_eq!(a.get_output().status.code(), Some(1), "{err}");
    let r = w.last_report();
    let failed: Vec<&Value> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    let refused = failed[0]["carry"]["refused"].as_array().map_or(0, Vec::len);
    assert_eq!(refused, 0, "no carried value blamed: {}", failed[0]);
    // The other pairs' refusals were named by the first run's console, this pair's by the
    // second's.
    let again = run_ok(&w, &[]);
    check_carried(&w, &format!("{err}{again}"));
}

/// A group's survivor is written by each of its pairs' carry-overs. A list one write behind
/// DevRev's records answers it as it was before the previous pair's write: a carry-over
/// that started from that record would write the lists it writes whole (phone numbers here)
/// back without what the previous pair carried. Each value a pair reports carried is what
/// the survivor holds.
#[test]
fn a_list_behind_the_last_write_never_undoes_what_a_group_carried() {
    use crate::groups::{decide, review, shape, shaped};
    use crate::review::{col, save_like_excel};
    use devrev_fake::seed::GroupKind;
    let sp = devrev_fake::seed::GenSpec {
        shaped_groups: vec![shape(3)],
        ..spec(0, 0, 17)
    };
    let w = World::with(
        sp,
        behaviour(MoveMode::All, SecondaryAfter::Deactivated),
        |o| {
            o.quirks.list_lags_updates = true;
            let g = o
                .seed
                .groups
                .iter()
                .find(|g| g.kind == GroupKind::Shaped)
                .unwrap()
                .members
                .clone();
            contact(&mut o.seed, &g[0])["phone_numbers"] = json!([]);
            contact(&mut o.seed, &g[1])["phone_numbers"] = json!(["+14155550101"]);
            contact(&mut o.seed, &g[2])["phone_numbers"] = json!(["+14155550102"]);
        },
    );
    let g = shaped(&w)[0].clone();
    let (h, mut rows) = review(&w);
    decide(&h, &mut rows, &g[0], "keep", false);
    decide(&h, &mut rows, &g[1], "merge", false);
    decide(&h, &mut rows, &g[2], "merge", false);
    let mut file = vec![h.clone()];
    file.extend(
        rows.iter()
            .filter(|r| g.contains(&r[col(&h, "rev_user_id")]))
            .cloned(),
    );
    save_like_excel(&w.path("decisions.csv"), &file);
    let a = w.run(&["--decisions", "decisions.csv"]);
    assert_eq!(a.get_output().status.code(), Some(0));
    let survivor = w.fake.with_state(|s| s.rev_users[&g[0]].json.clone());
    let r = w.last_report();
    let mut carried = 0;
    for p in r["pairs"].as_array().unwrap() {
        for item in p["carry"]["carried"].as_array().unwrap() {
            let held = match item["field"].as_str().unwrap() {
                "custom_field" => {
                    survivor["custom_fields"][item["key"].as_str().unwrap()] == item["value"]
                }
                "phone_number" => survivor["phone_numbers"]
                    .as_array()
                    .unwrap()
                    .contains(&item["number"]),
                _ => continue,
            };
            carried += 1;
            assert!(held, "{item} carried by {}: {survivor:#}", p["secondary"]);
        }
    }
    assert_eq!(
        survivor["phone_numbers"],
        json!(["+14155550101", "+14155550102"]),
        "{r:#}"
    );
    assert!(carried >= 2, "both pairs carried: {r:#}");
}
