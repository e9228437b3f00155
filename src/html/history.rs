//! The history page (`reports/history.html`): every preview, merge run and restore whose
//! report is in this folder, and every decision the savepoint holds, with when and from which
//! file, so a lead can audit a whole dedupe in one place.
//!
//! Each page written ([`super::write_plan`], [`super::write_merge`],
//! [`super::write_restore`]) adds one line to `reports/history.jsonl` (what the report was,
//! when, its one-line outcome, the savepoint and organization it names) and writes the
//! history page again from it. Reports of the folder the list does not name (written by an
//! older version) are listed by their file name. Like the other pages, the history is a copy
//! for people: a failure to write it is a warning.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::page::{Page, Tone};
use crate::fsutil;

/// One report of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// `preview`, `merge run`, `restore`.
    pub kind: String,
    /// The JSON report's file name (in the same folder).
    pub file: String,
    /// When it was written (RFC 3339).
    pub at: String,
    /// Its outcome in one line.
    pub line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Value>,
    /// Who ran it (`user@host`).
    #[serde(default)]
    pub by: String,
}

const LIST: &str = "history.jsonl";
/// The history page's name, in the reports folder.
pub const PAGE: &str = "history.html";

fn entries(dir: &Path) -> Vec<Entry> {
    std::fs::read_to_string(dir.join(LIST))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Adds `e` (the report `json`) to the history and writes the page again; a failure is
/// warned about.
pub fn record(json: &Path, e: Entry) {
    let dir = match json.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let res = (|| -> io::Result<PathBuf> {
        let mut all = entries(&dir);
        all.retain(|x| x.file != e.file);
        all.push(e);
        let mut text = String::new();
        for x in &all {
            text.push_str(&serde_json::to_string(x).map_err(io::Error::other)?);
            text.push('\n');
        }
        fsutil::write_private_atomic(&dir.join(LIST), text.as_bytes())?;
        let page = dir.join(PAGE);
        fsutil::write_private_atomic_with(&page, true, |w| write(w, &dir, &all))?;
        Ok(page)
    })();
    if let Err(err) = res {
        tracing::warn!(
            "cannot write the history page {}: {err}",
            dir.join(PAGE).display()
        );
    }
}

/// The organization of the newest report of `dir` that names one.
pub fn newest_org(dir: &Path) -> Option<Value> {
    entries(dir)
        .into_iter()
        .rev()
        .find_map(|e| e.organization.filter(|o| !o.is_null()))
}

/// The savepoint the history names last (else `savepoint.json` where the tool runs).
fn savepoint_of(all: &[Entry]) -> PathBuf {
    all.iter()
        .rev()
        .find_map(|e| e.savepoint.clone())
        .unwrap_or_else(|| PathBuf::from("savepoint.json"))
}

fn write(w: &mut dyn io::Write, dir: &Path, all: &[Entry]) -> io::Result<()> {
    let savepoint = savepoint_of(all);
    let mut page = Page::start(
        w,
        "history",
        "History of this dedupe",
        &[
            format!(
                "Every preview, merge run and restore reported in this folder ({}), and every \
                 decision of the savepoint {}.",
                dir.display(),
                savepoint.display()
            ),
            format!(
                "Written {} (each preview, run and restore writes it again).",
                super::local_time(&chrono::Local::now().to_rfc3339())
            ),
        ],
    )?;
    let runs = all.iter().filter(|e| e.kind == "merge run").count();
    let restores = all.iter().filter(|e| e.kind == "restore").count();
    let previews = all.iter().filter(|e| e.kind == "preview").count();
    let journal = crate::merge::savepoint::load(&savepoint).ok().flatten();
    let decisions: Vec<&crate::merge::journal::GroupDecision> = journal
        .as_ref()
        .map(|j| j.decisions.values().collect())
        .unwrap_or_default();
    page.lead(&format!(
        "{previews} preview(s), {runs} merge run(s), {restores} restore(s); {} decision(s) \
         recorded in the savepoint.",
        decisions.len()
    ))?;

    let rows = report_rows(dir, all);
    page.link_table(
        "reports",
        "Previews, runs and restores",
        &["When", "What", "Outcome", "By", "Report"],
        &rows,
    )?;

    let drows = decision_rows(&decisions);
    page.link_table(
        "decisions",
        "Decisions recorded in the savepoint",
        &["When", "Group", "Email", "Decision", "State", "From file"],
        &drows,
    )?;
    if journal.is_none() {
        page.points(
            "no-savepoint",
            "Savepoint",
            Tone::Plain,
            &[(
                format!(
                    "No savepoint at {} (none yet, or elsewhere): its decisions are not listed.",
                    savepoint.display()
                ),
                None,
            )],
        )?;
    }
    page.finish()
}

/// One row per report, oldest first: the listed ones, then any other report of the folder
/// (written before the history was kept).
fn report_rows(dir: &Path, all: &[Entry]) -> Vec<(Vec<String>, Option<String>)> {
    let mut rows: Vec<(String, Vec<String>, Option<String>)> = all
        .iter()
        .map(|e| {
            (
                e.file.clone(),
                vec![
                    super::local_time(&e.at),
                    e.kind.clone(),
                    e.line.clone(),
                    e.by.clone(),
                    e.file.clone(),
                ],
                Some(link(dir, &e.file)),
            )
        })
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for f in rd.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            let kind = if f.starts_with("plan-") {
                "preview"
            } else if f.starts_with("merge-report-") {
                "merge run"
            } else if f.starts_with("restore-report-") {
                "restore"
            } else {
                continue;
            };
            if !f.ends_with(".json") || all.iter().any(|e| e.file == f) {
                continue;
            }
            rows.push((
                f.clone(),
                vec![
                    stamp_of(&f),
                    kind.into(),
                    "(written before the history was kept: see its report)".into(),
                    String::new(),
                    f.clone(),
                ],
                Some(link(dir, &f)),
            ));
        }
    }
    rows.sort_by(|a, b| stamp_of(&a.0).cmp(&stamp_of(&b.0)).then(a.0.cmp(&b.0)));
    rows.into_iter().map(|(_, c, l)| (c, l)).collect()
}

/// One row per decision the savepoint holds: when, which group, what, whether it still holds,
/// and from which file.
fn decision_rows(
    decisions: &[&crate::merge::journal::GroupDecision],
) -> Vec<(Vec<String>, Option<String>)> {
    decisions
        .iter()
        .map(|d| {
            let state = match &d.revoked {
                Some(r) => format!(
                    "revoked {} by {}",
                    super::local_time(&r.at.to_rfc3339()),
                    r.file.display()
                ),
                None => "in force".into(),
            };
            (
                vec![
                    super::local_time(&d.at.to_rfc3339()),
                    d.group.clone(),
                    d.email.clone(),
                    d.decision.word().into(),
                    state,
                    match d.line {
                        Some(l) => format!("{} line {l}", d.file.display()),
                        None => d.file.display().to_string(),
                    },
                ],
                None,
            )
        })
        .collect()
}

/// The page of a report when there is one, else its JSON (relative to the history page).
fn link(dir: &Path, json: &str) -> String {
    let html = Path::new(json).with_extension("html");
    if dir.join(&html).exists() {
        html.to_string_lossy().into_owned()
    } else {
        json.to_string()
    }
}

/// The `YYYYMMDD_HHMMSS` of a report's name as `YYYY-MM-DD HH:MM:SS` (the name when it has
/// none).
fn stamp_of(file: &str) -> String {
    let digits: String = file
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '_')
        .collect();
    let d = digits.trim_matches('_');
    if d.len() >= 15 && d.as_bytes()[8] == b'_' {
        format!(
            "{}-{}-{} {}:{}:{}",
            &d[0..4],
            &d[4..6],
            &d[6..8],
            &d[9..11],
            &d[11..13],
            &d[13..15]
        )
    } else {
        file.to_string()
    }
}
