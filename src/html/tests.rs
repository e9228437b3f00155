//! The pages' markup: escaping of hostile data, paging of big tables, the file's mode.
//! (What a browser makes of them is tested in tests/it/html.rs, in headless Chromium.)

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::detect::{self, DetectOptions};
use crate::devrev::types::Organization;
use crate::options::Keep;
use crate::planfile::Estimate;
use crate::restore::report::{Entry, EntryStatus, Summary};

const EVIL: &str = "</script><script>window.pwned=1</script><img src=x onerror=\"pwned=2\"> & 'q'";

fn estimate() -> Estimate {
    Estimate::sample()
}

/// A plan of `n` pairs; the first primary's display name is [`EVIL`].
fn plan(n: usize) -> detect::Plan {
    let mut csv = String::from("REV_USER_ID,EMAIL,EXTERNAL_REF,TICKET_COUNT,DISPLAY_NAME\n");
    for i in 0..n {
        let name = if i == 0 {
            format!("\"{}\"", EVIL.replace('"', "\"\""))
        } else {
            format!("Person {i}")
        };
        csv.push_str(&format!(
            "don:identity:dvrv-us-1:devo/1:revu/r{i},p{i}@x.com,REVU-r{i},{i},{name}\n\
             don:identity:dvrv-us-1:devo/1:revu/u{i},p{i}@x.com,user_{i},1,Other {i}\n"
        ));
    }
    csv.push_str("a,dup@x.com,user_a,,\nb,dup@x.com,user_b,2,\n");
    let opts = DetectOptions {
        keep: Keep::Revu,
        email_domain: None,
    };
    detect::plan_from_reader("c<1>.csv", std::io::Cursor::new(csv.into_bytes()), &opts).unwrap()
}

fn render_plan(plan: &detect::Plan) -> String {
    let est = estimate();
    let report = PlanReport {
        kind: "devrev-merge plan",
        format_version: 1,
        tool_version: "0",
        generated_at: "now".into(),
        plan,
        review_counts: plan.review_counts(),
        estimate: &est,
        live_check: None,
        held_by_savepoint: Vec::new(),
    };
    let mut out = Vec::new();
    plan::write(
        &mut out,
        std::path::Path::new("reports/plan-x.json"),
        &report,
        None,
        &crate::review::Proposer {
            keep: Keep::Revu,
            facts: None,
            held: &Default::default(),
        },
        std::path::Path::new("reports/review-x.csv"),
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

/// The rows of the table section `id`, parsed back from the page.
fn rows_of(page: &str, id: &str) -> Vec<Value> {
    let start = page
        .find(&format!("<section class=\"tbl\" id=\"{id}\""))
        .or_else(|| page.find(&format!("<section class=\"tbl as-cards\" id=\"{id}\"")))
        .unwrap_or_else(|| panic!("no table {id}"));
    let open = "<script type=\"application/json\" class=\"rows\">";
    let body = &page[start..];
    let from = body.find(open).unwrap() + open.len();
    let to = from + body[from..].find("</script>").unwrap();
    serde_json::from_str::<Vec<Value>>(&body[from..to]).unwrap()
}

#[test]
fn hostile_names_stay_data_and_come_back_exactly() {
    let page = render_plan(&plan(3));
    // The only script elements are the page's: three data blocks and its one script.
    assert_eq!(page.matches("<script").count(), 3 + 1, "{page}");
    assert_eq!(page.matches("</script>").count(), 3 + 1);
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("window.pwned=1</script>"));
    assert!(page.contains("\\u003c/script\\u003e\\u003cscript\\u003ewindow.pwned=1"));
    // HTML text (the title from the CSV's name) is entity-escaped.
    assert!(
        page.contains("<title>Merge plan for c&lt;1&gt;.csv</title>"),
        "{page}"
    );
    let rows = rows_of(&page, "pairs");
    assert_eq!(rows.len(), 3);
    let first = &rows[0];
    assert_eq!(first[0], "p0@x.com");
    assert_eq!(first[1], "merge");
    // The survivor's card: the name exactly the text it is, its id and ref, its DON on hover.
    let before = first[2][0].as_str().unwrap();
    assert!(
        before.starts_with(&format!("{EVIL}\nREVU-r0 \u{b7} ref REVU-r0\n")),
        "{before}"
    );
    assert_eq!(first[2][1], "don:identity:dvrv-us-1:devo/1:revu/r0");
    // The last element is the whole pair for its details.
    assert_eq!(
        first.as_array().unwrap().last().unwrap()["primary"]["display_name"],
        EVIL
    );
    // Only the page's own script may run.
    let nonce = page
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap();
    assert_eq!(nonce.len(), 32);
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(page.contains("default-src 'none'"));
}

#[test]
fn five_thousand_pairs_are_summarised_and_paged() {
    let page = render_plan(&plan(5000));
    // The first MOST_CARDS are on the page, 50 cards a page; the rest is in the JSON.
    assert!(
        page.contains(
            "<section class=\"tbl as-cards\" id=\"pairs\" data-total=\"1000\" data-page-size=\"50\" data-status=\"1\">"
        ),
        "paging markup"
    );
    assert!(
        page.contains("The first 1000 of 5000 pairs are shown."),
        "{page}"
    );
    assert!(page.contains("5000 pairs to merge, 1 group undecided"));
    assert!(page.contains("<button type=\"button\" class=\"prev\">"));
    assert!(page.contains("<button type=\"button\" class=\"next\">"));
    let lines = page
        .lines()
        .filter(|l| l.starts_with("[\"p") || l.starts_with(",\n[\"p"))
        .count();
    assert_eq!(lines, 1000, "one row per line, streamed");
    let rows = rows_of(&page, "pairs");
    assert_eq!(rows.len(), 1000);
    assert!(
        rows.iter()
            .any(|r| r[0] == "p0@x.com" && r[3].as_str().unwrap().ends_with("\n1 ticket")),
        "the survivor after holds both ticket counts: {:?}",
        rows[0]
    );
    // The needs-review group has a status (its decision) for the select.
    assert!(
        page.contains(
            "id=\"needs-review\" data-total=\"1\" data-page-size=\"50\" data-status=\"1\""
        )
    );
    assert!(page.contains("<select class=\"st\""));
    assert_eq!(PAGE_SIZE, 200);
}

fn restore_report(email: &str) -> RestoreReport {
    let entry = Entry {
        email: email.into(),
        status: EntryStatus::Restored,
        primary: "don:identity:dvrv-us-1:devo/1:revu/P".into(),
        old_secondary: "don:identity:dvrv-us-1:devo/1:revu/S".into(),
        new_secondary: Some("don:identity:dvrv-us-1:devo/1:revu/N".into()),
        new_display_id: Some("REVU-N".into()),
        backup_dir: Some("backups/a_1".into()),
        reason: None,
        primary_external_ref_restored: None,
        tickets_restored: vec!["don:core:dvrv-us-1:devo/1:ticket/1".into()],
        conversations_restored: vec![],
        objects_written: 1,
        create_requests: 1,
        not_restored: vec![],
    };
    let pairs = vec![entry];
    RestoreReport {
        report_version: 1,
        tool_version: "0".into(),
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        duration_s: 1.0,
        organization: Organization {
            id: "don:identity:dvrv-us-1:devo/1".into(),
            display_id: Some("DEV-1".into()),
            slug: Some("<org>".into()),
        },
        inputs: vec!["backups/a_1".into()],
        savepoint: "savepoint.json".into(),
        summary: Summary::of(&pairs),
        id_map: BTreeMap::from([(
            pairs[0].old_secondary.clone(),
            pairs[0].new_secondary.clone().unwrap(),
        )]),
        pairs,
        api: crate::merge::report::ApiFigures::default(),
        api_calls: 9,
        api_calls_per_restored_pair: 9.0,
    }
}

#[test]
fn the_restore_page_is_private_next_to_its_json_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("restore-report-20250101_000000.json");
    let r = restore_report("a<b>@x.com");
    let p = write_restore(&json, &r).unwrap();
    assert_eq!(p, dir.path().join("restore-report-20250101_000000.html"));
    crate::platform::tests::assert_private(&p);
    let page = std::fs::read_to_string(&p).unwrap();
    assert!(page.contains("(&lt;org&gt;)"), "org slug escaped");
    let rows = rows_of(&page, "pairs");
    assert_eq!(rows[0][0], "a<b>@x.com");
    assert_eq!(rows[0][1], "restored");
    assert_eq!(
        rows[0][5],
        json!(["REVU-N", "don:identity:dvrv-us-1:devo/1:revu/N"])
    );
    assert_eq!(rows[0][7], 1, "tickets restored counted");
    let ids = rows_of(&page, "id-map");
    assert_eq!(ids.len(), 1);
    assert_eq!(
        ids[0][0],
        json!(["REVU-S", "don:identity:dvrv-us-1:devo/1:revu/S"])
    );
    assert_eq!(
        ids[0][2],
        json!(["REVU-N", "don:identity:dvrv-us-1:devo/1:revu/N"])
    );
    // A second page under the same name is refused, the first left as it was.
    let e = write_restore(&json, &restore_report("other@x.com")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(
        e.to_string().contains("cannot write the HTML report"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), page);
    // A failure is a warning that names the JSON, and no page.
    assert_eq!(written_or_warn(&json, Err(e)), None);
}

#[test]
fn key_value_sections_escape_keys_and_values_and_show_lists_as_tables() {
    let mut out = Vec::new();
    let mut page = page::Page::start(&mut out, "k<", "t\"", &["f&".into()]).unwrap();
    page.kv_section(
        "x",
        "H<",
        &json!({
            "<b>": "<i>v</i>",
            "per_endpoint": {"rev-users.get": {"calls": 3, "errors": 0}},
            "list": [{"a": "<1>"}, {"b": 2}],
            "empty": [],
            "flags": [true, null],
        }),
    )
    .unwrap();
    page.finish().unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(
        s.contains("<th>&lt;b&gt;</th><td>&lt;i&gt;v&lt;/i&gt;</td>"),
        "{s}"
    );
    assert!(
        s.contains("<th>rev-users.get</th><td>3</td><td>0</td>"),
        "{s}"
    );
    assert!(s.contains("<td>&lt;1&gt;</td>"), "{s}");
    assert!(s.contains("data-kind=\"k&lt;\""));
    assert!(s.contains("<h1>t&quot;</h1>") && s.contains("<p class=\"fact\">f&amp;</p>"));
    assert!(s.contains("yes, \u{2014}"));
    assert!(s.ends_with("</html>\n"));
}

#[test]
fn cells_and_durations() {
    let r = json!({"a": {"b": [1, "x"]}, "e": "", "o": {"kind": "not_found", "role": "primary"}});
    assert_eq!(cell(&r, "a.b"), "1, x");
    assert_eq!(cell(&r, "a.zz"), Value::Null);
    assert_eq!(
        first(&r, &["e", "a.b"]),
        "1, x",
        "empty strings are skipped"
    );
    assert_eq!(cell(&r, "o"), "not_found, role: primary");
    assert_eq!(count(&r, "a.b"), 2);
    assert_eq!(id_cell(&json!("plain")), "plain");
    assert_eq!(duration(42.0), "42 s");
    assert_eq!(duration(600.0), "10 m 00 s");
    assert_eq!(duration(3.0 * 3600.0 + 300.0), "3 h 05 m");
    assert_eq!(duration(f64::NAN), "?");
    assert_eq!(
        path_for(Path::new("r/plan-1.json")),
        Path::new("r/plan-1.html")
    );
}
