//! The HTML reports as a browser shows them: the plan and a merge run against the fake
//! DevRev, opened in headless Chromium (`--dump-dom`, the DOM after the page's script ran).
//!
//! Chromium is found through `CHROMIUM`, `/usr/bin/chromium`, or `chromium` on `PATH`
//! (`.ci/run` installs Debian's package). Without one they are skipped with one loud line, so
//! `cargo test` passes on any fresh machine; `.ci/run` sets `DEVREV_MERGE_REQUIRE_BROWSER=1`,
//! under which a missing browser fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devrev_fake::seed::GroupKind;

use crate::common::{mode, scrubbed_assert_cmd};
use crate::merge::{World, behaviour, spec};
use devrev_fake::fake::{MoveMode, SecondaryAfter};

/// A display name that runs script if any layer fails to escape it.
const EVIL: &str = "<script>document.body.setAttribute('data-pwned','1')</script>\
                    <img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> & \"q\"";

fn browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.exists() {
        return Some(fixed.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// The browser, or `None` (skip) when none is found. The README's test command passes on a
/// machine without one: the browser tests are skipped with one loud line (written past the
/// test harness's capture, once per run). `.ci/run` sets `DEVREV_MERGE_REQUIRE_BROWSER=1`,
/// which makes a missing browser a failure there.
pub(crate) fn browser_or_skip() -> Option<PathBuf> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    match browser() {
        Some(b) => Some(b),
        None if std::env::var("DEVREV_MERGE_REQUIRE_BROWSER").as_deref() == Ok("1") => panic!(
            "no Chromium found for the HTML report tests, and DEVREV_MERGE_REQUIRE_BROWSER=1: \
             install Debian's `chromium` package (`apt-get install -y chromium`, as .ci/run \
             does), or point CHROMIUM at the binary"
        ),
        None => {
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: the HTML page tests in headless Chromium (no chromium found; \
                     `apt-get install -y chromium` or CHROMIUM=/path to run them) ***"
                );
            });
            None
        }
    }
}

/// The DOM of `page` after its script ran, as headless Chromium serializes it.
pub(crate) fn dump_dom(chromium: &Path, page: &Path) -> String {
    let dom = run_chromium(chromium, page, &["--dump-dom"]);
    assert!(dom.contains("</html>"), "no DOM dumped: {dom}");
    dom
}

/// Runs headless Chromium on `page` with `args`; its stdout.
fn run_chromium(chromium: &Path, page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not finish within 90 s", chromium.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    std::fs::read_to_string(out.path()).unwrap()
}

/// The page without its scripts (the row data and the code): what a reader sees.
fn visible(dom: &str) -> String {
    let mut out = String::new();
    let mut rest = dom;
    while let Some(i) = rest.find("<script") {
        out.push_str(&rest[..i]);
        match rest[i..].find("</script>") {
            Some(j) => rest = &rest[i + j + "</script>".len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The one file in `dir/reports` named `<prefix>-*.html`.
pub(crate) fn page(dir: &Path, prefix: &str) -> PathBuf {
    let pages: Vec<PathBuf> = std::fs::read_dir(dir.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&format!("{prefix}-")) && n.ends_with(".html")
        })
        .collect();
    assert_eq!(pages.len(), 1, "{pages:?}");
    let json = pages[0].with_extension("json");
    assert!(
        json.exists(),
        "the page sits next to its JSON report {json:?}"
    );
    assert_eq!(mode(&pages[0]), 0o600);
    pages[0].clone()
}

/// The start tag of the table section `id`, as rendered (its data-* attributes).
fn section_tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let (class, id) = match id.split_once(' ') {
        Some((id, class)) => (format!("tbl {class}"), id),
        None => ("tbl".to_string(), id),
    };
    let at = dom
        .find(&format!("<section class=\"{class}\" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}"));
    &dom[at..at + dom[at..].find('>').unwrap()]
}

/// The page rendered, its script finished, nothing injected ran.
pub(crate) fn assert_rendered_safely(dom: &str) {
    assert!(
        dom.contains("data-ready=\"") && !dom.contains("data-ready=\"error\""),
        "the page's script did not finish: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(!dom.contains("data-error="), "a table failed to render");
    assert!(!dom.contains("data-pwned=\""), "injected script ran");
    assert!(!dom.contains("<img"), "an element was injected");
}

fn card(dom: &str, n: usize, label: &str) -> bool {
    dom.contains(&format!(
        "<span class=\"n\">{n}</span><span class=\"l\">{label}</span>"
    ))
}

#[test]
fn the_plan_and_the_run_render_in_chromium_with_hostile_names_as_text() {
    let Some(chromium) = browser_or_skip() else {
        return;
    };
    let w = World::with(
        spec(3, 1, 20),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
        |o| {
            let evil: Vec<String> = o
                .seed
                .groups
                .iter()
                .filter(|g| g.kind == GroupKind::CleanPair)
                .take(1)
                .flat_map(|g| g.members.clone())
                .collect();
            for u in &mut o.seed.rev_users {
                if evil.iter().any(|id| u["id"] == id.as_str()) {
                    u["display_name"] = EVIL.into();
                }
            }
        },
    );
    let emails: Vec<String> = w
        .seed
        .groups
        .iter()
        .filter(|g| g.kind == GroupKind::CleanPair)
        .map(|g| g.email.to_lowercase())
        .collect();
    assert_eq!(emails.len(), 3);
    assert!(
        String::from_utf8_lossy(&std::fs::read(w.path("contacts.csv")).unwrap())
            .contains("data-pwned"),
        "the hostile name is in the export"
    );

    let out = w
        .cmd()
        .args(["--csv", "contacts.csv", "--preview"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let plan = page(w.dir.path(), "plan");
    assert!(
        stdout.contains(&format!(
            "HTML report (open in a browser): reports/{}",
            plan.file_name().unwrap().to_string_lossy()
        )),
        "{stdout}"
    );
    let dom = dump_dom(&chromium, &plan);
    assert_rendered_safely(&dom);
    // The page opens with what it all comes to, then only the counts that are not zero.
    assert!(
        dom.contains("<p class=\"lead\" id=\"lead\">3 pairs to merge, 1 group undecided; about "),
        "{dom}"
    );
    assert!(card(&dom, 3, "pairs to merge"), "{dom}");
    assert!(card(&dom, 1, "groups undecided"), "{dom}");
    assert!(
        !dom.contains("<span class=\"n\">0</span>"),
        "a zero count shown"
    );
    // Who prepared it, when (with the zone), and where to sign.
    assert!(
        dom.contains("Prepared by ") && dom.contains(" UTC"),
        "{dom}"
    );
    assert!(dom.contains("id=\"sign-off\"") && dom.contains("<th>Approved by</th>"));
    // A card per pair, headed by its email; the group's reason in words, not its code.
    for e in &emails {
        assert!(
            dom.contains(&format!("<h3><span>{e}</span>")),
            "no card for {e}"
        );
    }
    let seen = visible(&dom);
    assert!(!seen.contains("several_user"), "an internal code shown");
    assert!(
        seen.contains("several contacts your app created (user_), and none DevRev created"),
        "{seen}"
    );
    assert!(
        seen.contains("No longer resolves"),
        "the lost refs are shown"
    );
    assert!(section_tag(&dom, "pairs as-cards").contains("data-shown=\"3\""));
    // The name is on the page as the text it is (both contacts of the first pair).
    let as_text = "&lt;script&gt;document.body.setAttribute('data-pwned','1')&lt;/script&gt;\
                   &lt;img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"&gt; \
                   &amp; \"q\"";
    assert!(
        dom.matches(as_text).count() >= 2,
        "the hostile name shown as text for both contacts"
    );

    let out = w.run(&[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let run = page(w.dir.path(), "merge-report");
    assert!(
        stderr.contains(&format!(
            "  HTML report:     reports/{}",
            run.file_name().unwrap().to_string_lossy()
        )),
        "{stderr}"
    );
    let dom = dump_dom(&chromium, &run);
    assert_rendered_safely(&dom);
    assert!(card(&dom, 3, "pairs"), "{dom}");
    assert!(card(&dom, 3, "merged"), "{dom}");
    assert!(!card(&dom, 0, "failed"), "zero counts are left out");
    assert!(dom.contains("3 of 3 pair(s) merged (3 this run)."), "{dom}");
    assert!(dom.contains("<h2>What changed in DevRev</h2>"));
    assert!(dom.contains("3 contact(s) merged into their survivor this run"));
    assert!(
        dom.contains("<pre class=\"cmd\">devrev-merge --restore "),
        "{dom}"
    );
    for e in &emails {
        assert!(dom.contains(&format!("<td>{e}</td>")), "no row for {e}");
    }
    assert_eq!(
        dom.matches("<td class=\"st st-merged\">merged</td>")
            .count(),
        3
    );
    // The id map: every merged secondary and its primary.
    assert!(section_tag(&dom, "id-map").contains("data-shown=\"3\""));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.with_extension("json")).unwrap()).unwrap();
    for (old, new) in report["id_map"].as_object().unwrap() {
        assert!(dom.contains(&format!("<td>{old}</td>")), "{old}");
        let new = new.as_str().unwrap();
        assert!(dom.contains(&format!("<td>{new}</td>")), "{new}");
    }
    // The API figures and the backup folder are there.
    assert!(dom.contains(&format!(
        "API: {} call(s)",
        report["api"]["calls"].as_u64().unwrap()
    )));
    // Word for word the console's API line.
    let console_api = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("API:"))
        .unwrap()
        .trim();
    assert!(
        dom.contains(&format!("API: {console_api}")),
        "{console_api}"
    );
    // Each pair shows who its contacts are: the secondary's ref and ticket count.
    for p in report["pairs"].as_array().unwrap() {
        let r = p["secondary_contact"]["external_ref"].as_str().unwrap();
        assert!(dom.contains(&format!("ref {r}")), "no ref {r}");
    }
    let backup = report["pairs"][0]["backup_dir"].as_str().unwrap();
    assert!(
        dom.contains(&format!("<td class=\"long\">{backup}</td>")),
        "{backup}"
    );

    // The restore of that run: its page shows the three restored pairs and old → new ids.
    let rel = format!(
        "reports/{}",
        run.with_extension("json")
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let out = w
        .cmd()
        .args(["--restore", &rel, "--yes"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let restore = page(w.dir.path(), "restore-report");
    assert!(
        stderr.contains(&format!(
            "HTML report: reports/{}",
            restore.file_name().unwrap().to_string_lossy()
        )),
        "{stderr}"
    );
    let dom = dump_dom(&chromium, &restore);
    assert_rendered_safely(&dom);
    assert!(card(&dom, 3, "restored"), "{dom}");
    assert_eq!(
        dom.matches("<td class=\"st st-restored\">restored</td>")
            .count(),
        3
    );
    assert!(section_tag(&dom, "id-map").contains("data-shown=\"3\""));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(restore.with_extension("json")).unwrap()).unwrap();
    for (old, new) in report["id_map"].as_object().unwrap() {
        assert!(dom.contains(&format!("<td>{old}</td>")), "{old}");
        let new = new.as_str().unwrap();
        assert!(dom.contains(&format!("<td>{new}</td>")), "{new}");
    }
}

#[test]
fn a_big_plan_is_paged_in_the_browser() {
    let Some(chromium) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("REV_USER_ID,EMAIL,EXTERNAL_REF,TICKET_COUNT\n");
    for i in 0..450 {
        csv.push_str(&format!(
            "don:identity:dvrv-us-1:devo/1:revu/r{i},p{i:03}@x.com,REVU-r{i},1\n\
             don:identity:dvrv-us-1:devo/1:revu/u{i},p{i:03}@x.com,user_{i},2\n"
        ));
    }
    std::fs::write(dir.path().join("c.csv"), csv).unwrap();
    scrubbed_assert_cmd(dir.path())
        .args(["--csv", "c.csv", "--preview"])
        .assert()
        .success();
    let dom = dump_dom(&chromium, &page(dir.path(), "plan"));
    assert_rendered_safely(&dom);
    let tag = section_tag(&dom, "pairs as-cards");
    for attr in [
        "data-total=\"450\"",
        "data-page=\"1\"",
        "data-pages=\"9\"",
        "data-shown=\"50\"",
    ] {
        assert!(tag.contains(attr), "{attr} in {tag}");
    }
    assert!(dom.contains("rows 1\u{2013}50 of 450 \u{b7} page 1 of 9"));
    assert!(
        dom.contains("<h3><span>p000@x.com</span>") && dom.contains("<h3><span>p049@x.com</span>")
    );
    assert!(
        !dom.contains("<h3><span>p050@x.com</span>"),
        "the second page is not shown"
    );
}

/// The page is a copy for people: a run whose page cannot be written still succeeds, warns,
/// and leaves its JSON report.
#[test]
fn a_page_that_cannot_be_written_does_not_fail_the_run() {
    let w = World::new(
        spec(2, 0, 21),
        behaviour(MoveMode::All, SecondaryAfter::Gone),
    );
    let reports = w.path("reports");
    std::fs::create_dir(&reports).unwrap();
    std::fs::set_permissions(
        &reports,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // Something already stands at every page name of the next three minutes.
    let now = chrono::Local::now();
    for s in 0..180 {
        let stamp = (now + chrono::Duration::seconds(s)).format("%Y%m%d_%H%M%S");
        std::fs::create_dir(reports.join(format!("merge-report-{stamp}.html"))).unwrap();
    }
    let out = w.run(&[]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("cannot write the HTML report"), "{stderr}");
    assert!(stderr.contains("the JSON report"), "{stderr}");
    assert!(!stderr.contains("HTML report:"), "{stderr}");
    assert_eq!(w.last_report()["summary"]["merged"], 2);
}

/// Readable on a laptop and on a wide screen: at 1366 and at 1920 pixels nothing on the plan
/// page is wider than the window, and the cards fill the width (3 and 4 to a row, not 2 with a
/// third of the screen empty); printed to PDF by Chromium it is pages with the plan's sentence
/// and the sign-off in them.
#[test]
fn the_plan_page_fits_a_laptop_fills_a_wide_screen_and_prints() {
    let Some(chromium) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("REV_USER_ID,EMAIL,EXTERNAL_REF,DISPLAY_NAME,TICKET_COUNT\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "don:identity:dvrv-us-1:devo/1:revu/r{i},p{i:03}@x.com,REVU-r{i},Person {i},1\n\
             don:identity:dvrv-us-1:devo/1:revu/u{i},p{i:03}@x.com,user_{i}verylongref{i},P {i},2\n"
        ));
    }
    std::fs::write(dir.path().join("c.csv"), csv).unwrap();
    scrubbed_assert_cmd(dir.path())
        .args(["--csv", "c.csv", "--preview"])
        .assert()
        .success();
    let plan = page(dir.path(), "plan");
    for (width, columns) in [(1366, "3"), (1920, "4")] {
        let dom = run_chromium(
            &chromium,
            &plan,
            &[&format!("--window-size={width},768"), "--dump-dom"],
        );
        assert_rendered_safely(&dom);
        assert!(
            dom.contains("data-overflow=\"\""),
            "something is wider than a {width} px window: {}",
            dom.split("data-overflow=\"")
                .nth(1)
                .unwrap_or("")
                .split('"')
                .next()
                .unwrap_or("")
        );
        assert!(
            dom.contains(&format!("data-card-columns=\"{columns}\"")),
            "{columns} cards to a row at {width} px: {}",
            dom.split("data-card-columns=\"")
                .nth(1)
                .unwrap_or("?")
                .split('"')
                .next()
                .unwrap_or("")
        );
    }
    let pdf = dir.path().join("plan.pdf");
    run_chromium(
        &chromium,
        &plan,
        &[
            "--no-pdf-header-footer",
            &format!("--print-to-pdf={}", pdf.display()),
        ],
    );
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF"), "a PDF");
    let pages = String::from_utf8_lossy(&bytes)
        .matches("/Type /Page\n")
        .count()
        + String::from_utf8_lossy(&bytes)
            .matches("/Type/Page/")
            .count()
        + String::from_utf8_lossy(&bytes)
            .matches("/Type /Page ")
            .count()
        + String::from_utf8_lossy(&bytes)
            .matches("/Type/Page>")
            .count();
    assert!(pages >= 2, "60 cards print on several pages ({pages})");
    // The text a reader of the PDF sees (poppler's pdftotext: .ci/run installs it with
    // Chromium; elsewhere this part runs where it is installed).
    match Command::new("pdftotext").arg(&pdf).arg("-").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            for want in ["60 pairs to merge", "Approved by", "p059@x.com"] {
                assert!(text.contains(want), "{want:?} in the printed plan: {text}");
            }
        }
        _ if std::env::var("DEVREV_MERGE_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("pdftotext (poppler-utils) is needed to read the printed plan")
        }
        _ => {}
    }
}

/// The groups that need a person show, on their card, the reason in words (never its code)
/// and what the review file proposes for them, the same survivor and merges as its
/// `proposed` column; the pair cards say in one line where phones, custom fields and tags
/// are (not in the export: `--check-live`).
#[test]
fn the_plan_page_shows_each_groups_proposal_and_reason_in_words() {
    let Some(chromium) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let don = |x: &str| format!("don:identity:dvrv-us-1:devo/1:revu/{x}");
    let csv = format!(
        "REV_USER_ID,EMAIL,EXTERNAL_REF,DISPLAY_NAME,TICKET_COUNT,CREATED_AT\n\
         {},ann@x.com,REVU-r1,Ann,1,2024-01-01 10:00:00\n\
         {},ann@x.com,user_1,Ann,2,2024-02-01 10:00:00\n\
         {},bob@x.com,REVU-r2,Bob,1,2024-01-01 10:00:00\n\
         {},bob@x.com,user_2,Bob,3,2024-02-01 10:00:00\n\
         {},bob@x.com,user_3,Bob,0,2024-03-01 10:00:00\n\
         {},cy@x.com,user_4,Cy,0,2024-03-01 10:00:00\n\
         {},cy@x.com,user_5,Cy,5,2024-03-01 10:00:00\n",
        don("r1"),
        don("u1"),
        don("r2"),
        don("u2"),
        don("u3"),
        don("u4"),
        don("u5")
    );
    std::fs::write(dir.path().join("c.csv"), csv).unwrap();
    scrubbed_assert_cmd(dir.path())
        .args(["--csv", "c.csv", "--preview"])
        .assert()
        .success();
    let dom = dump_dom(&chromium, &page(dir.path(), "plan"));
    assert_rendered_safely(&dom);

    // What the review file proposes, by email: (keep, [merge]).
    let review = std::fs::read_dir(dir.path().join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .unwrap();
    // The page names the very review file written beside it, in the command to run next.
    assert!(
        dom.contains(&format!(
            "--preview --decisions reports/{}</pre>",
            review.file_name().unwrap().to_string_lossy()
        )),
        "{dom}"
    );
    let text = std::fs::read_to_string(review).unwrap();
    let mut rows = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let mut proposed: std::collections::BTreeMap<String, (String, Vec<String>)> =
        Default::default();
    for row in rows.deserialize::<std::collections::HashMap<String, String>>() {
        let row = row.unwrap();
        let e = proposed.entry(row["email"].clone()).or_default();
        match row["proposed"].as_str() {
            "keep" => e.0 = row["display_id"].clone(),
            "merge" => e.1.push(row["display_id"].clone()),
            _ => {}
        }
    }
    for (email, (keep, merge)) in [
        ("bob@x.com", ("REVU-r2", "REVU-u2, REVU-u3")),
        ("cy@x.com", ("REVU-u5", "REVU-u4")),
    ] {
        assert_eq!(proposed[email].0, keep, "{text}");
        assert_eq!(proposed[email].1.join(", "), merge, "{text}");
    }

    let seen = visible(&dom);
    assert!(seen.contains("The review file proposes"), "{seen}");
    assert!(
        seen.contains(
            "keep REVU-r2, merge REVU-u2, REVU-u3 into it. Why: --keep revu: the only REVU- \
             contact"
        ),
        "{seen}"
    );
    assert!(
        seen.contains("keep REVU-u5, merge REVU-u4 into it. Why: the most tickets (5)"),
        "{seen}"
    );
    assert!(
        seen.contains(
            "one contact DevRev created (REVU-) and several that your app created (user_) \
             share this email: only a person can say which are the same customer"
        ),
        "{seen}"
    );
    assert!(
        seen.contains("several contacts your app created (user_), and none DevRev created"),
        "{seen}"
    );
    // No reason code anywhere, not even in a card's details (the row data in the page).
    for code in [
        "duplicate_id",
        "drop_ref",
        "other_ref",
        "several_revu",
        "revu_with_several_user",
        "several_user",
        "live_",
    ] {
        assert!(!dom.contains(code), "the code {code} is on the page");
        // Nor spelt with spaces (the plan details' counts of groups by why).
        let spaced = code.replace('_', " ");
        assert!(
            !seen.contains(spaced.trim()) || spaced.trim() == "live",
            "the code {code} is on the page as {spaced:?}"
        );
    }
    assert!(
        seen.contains("groups that need a decision, by why"),
        "the plan details count the groups by why, in words: {seen}"
    );
    // Where the pair's phones, custom fields and tags would be: one plain line.
    assert!(
        seen.contains(
            "Phones, custom fields, tags</span><span class=\"v\">not in the export: run \
             --preview --check-live to see them"
        ),
        "{seen}"
    );
}
