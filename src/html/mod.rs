//! The HTML reports: a self-contained page next to each JSON report (the plan, every merge
//! run, every restore), for the people who review and sign off what the JSON records.
//!
//! `reports/<name>-<ts>.html` has the JSON report's name with `.html`, is written atomically
//! with mode 0600, and needs nothing but a browser: CSS and JS are inline and its
//! Content-Security-Policy forbids any network access. Each page is rendered from the
//! report's serialized JSON (a field added to a report later is shown in the row's details
//! without a change here), streamed one row at a time: a report of 100,000 pairs is never held
//! as one page or one JSON value. See docs/html-report.md.

mod escape;
pub mod history;
mod merge;
mod page;
mod plan;
mod restore;
mod serial;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use escape::{text as escape_text, write_script_json};
pub use page::PAGE_SIZE;

use crate::fsutil;
use crate::merge::report::MergeReport;
use crate::planfile::PlanReport;
use crate::restore::report::RestoreReport;
use crate::review::decisions::Decided;

/// The page next to the JSON report `json`: the same name, `.html`.
pub fn path_for(json: &Path) -> PathBuf {
    json.with_extension("html")
}

/// Writes the plan's page next to `json` (with the decisions of `--decisions`, if any);
/// `review` is the review file written beside the plan (the page names it). The preview
/// writes it while the plan and the review file are being written, and records it in the
/// history ([`record_plan`]) once they are.
pub fn write_plan(
    json: &Path,
    r: &PlanReport,
    decided: Option<&Decided>,
    proposer: &crate::review::Proposer<'_>,
    review: &Path,
) -> io::Result<PathBuf> {
    write_page(json, |w| plan::write(w, json, r, decided, proposer, review))
}

/// Records the preview whose plan is `json` in the folder's history, and writes the history
/// page again.
pub fn record_plan(json: &Path, r: &PlanReport, decided: bool) {
    let mut line = format!("{} pair(s) to merge", r.plan.pairs.len());
    if !r.plan.needs_review.is_empty() {
        line.push_str(&format!(
            ", {} group(s) need review",
            r.plan.needs_review.len()
        ));
    }
    if decided {
        line.push_str(" (with a decisions file)");
    }
    line.push_str(&format!(" from {}", r.plan.source));
    history::record(
        json,
        history::Entry {
            kind: "preview".into(),
            file: file_name(json),
            at: r.generated_at.clone(),
            line,
            savepoint: None,
            organization: None,
            by: plan::who(),
        },
    );
}

/// Writes a merge run's page next to `json`.
pub fn write_merge(json: &Path, r: &MergeReport<'_>) -> io::Result<PathBuf> {
    let page = write_page(json, |w| merge::write(w, json, r))?;
    let summary = serde_json::to_value(&r.summary).unwrap_or_default();
    history::record(
        json,
        history::Entry {
            kind: "merge run".into(),
            file: file_name(json),
            at: r.started_at.to_rfc3339(),
            line: format!(
                "{}: {}",
                words(&figure(
                    &serde_json::to_value(r.outcome).unwrap_or_default()
                )),
                counts_line(&summary, merge::SUMMARY_ORDER)
            ),
            savepoint: Some(r.configuration.savepoint.clone()),
            organization: serde_json::to_value(&r.organization).ok(),
            by: plan::who(),
        },
    );
    Ok(page)
}

/// Writes a restore's page next to `json`.
pub fn write_restore(json: &Path, r: &RestoreReport) -> io::Result<PathBuf> {
    let page = write_page(json, |w| restore::write(w, r))?;
    let summary = serde_json::to_value(&r.summary).unwrap_or_default();
    history::record(
        json,
        history::Entry {
            kind: "restore".into(),
            file: file_name(json),
            at: r.started_at.to_rfc3339(),
            line: format!(
                "{}; from {}",
                counts_line(&summary, &["restored"]),
                r.inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            savepoint: Some(r.savepoint.clone()),
            organization: serde_json::to_value(&r.organization).ok(),
            by: plan::who(),
        },
    );
    Ok(page)
}

/// The page is a copy for people; the JSON is the record. A page that could not be written is
/// warned about (with where the JSON is) and the command goes on: `Some(path)` when written.
pub fn written_or_warn(json: &Path, res: io::Result<PathBuf>) -> Option<PathBuf> {
    match res {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("{e}; the JSON report {} holds everything", json.display());
            None
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The non-zero counts of `summary` in words, those of `order` first.
fn counts_line(summary: &Value, order: &[&str]) -> String {
    let parts: Vec<String> = number_cards(summary, order)
        .into_iter()
        .filter(|c| c.value != "0")
        .map(|c| format!("{} {}", c.value, c.label))
        .collect();
    if parts.is_empty() {
        "nothing counted".into()
    } else {
        parts.join(", ")
    }
}

/// A status or reason code of the reports in words (`max_merges_reached` → "stopped at
/// --max-merges"); anything else with its underscores as spaces.
pub(crate) fn words(code: &str) -> String {
    match code {
        "max_merges_reached" => "stopped at --max-merges".into(),
        "not_started" => "not started".into(),
        "merged_elsewhere" => "merged by another record".into(),
        "already_merged" => "already merged".into(),
        "merged_earlier" => "merged by an earlier run".into(),
        "left_csv" => "no longer in the export".into(),
        "outcome_unknown" => "outcome unknown".into(),
        "not_dup" | "not-dup" => "not duplicates".into(),
        "completed" => "completed".into(),
        "in_progress" => "in progress".into(),
        other => other.replace(['_', '-'], " "),
    }
}

/// [`words`] for every code-like word of a sentence (`max_merges_reached: …`).
pub(crate) fn words_in(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, w) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = w.trim_end_matches([':', ',', '.', ';']);
        if core.contains('_') && core.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            out.push_str(&words(core));
            out.push_str(&w[core.len()..]);
        } else {
            out.push_str(w);
        }
    }
    out
}

fn write_page<F>(json: &Path, render: F) -> io::Result<PathBuf>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let path = path_for(json);
    // Never over another file: the JSON's name is new, so the page's is too.
    fsutil::write_private_atomic_with(&path, false, render).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write the HTML report {}: {e}", path.display()),
        )
    })?;
    Ok(path)
}

// ---- cell helpers shared by the renderers ----

/// The value at a dotted `path` in `v` (`Null` when missing).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for k in path.split('.') {
        cur = match cur.get(k) {
            Some(x) => x,
            None => return &Value::Null,
        };
    }
    cur
}

/// A cell showing the value at `path`: scalars as they are, lists joined, objects as JSON.
fn cell(v: &Value, path: &str) -> Value {
    flat(at(v, path))
}

/// The first of `paths` that has a value.
fn first(v: &Value, paths: &[&str]) -> Value {
    paths
        .iter()
        .map(|p| cell(v, p))
        .find(|c| !c.is_null() && c.as_str() != Some(""))
        .unwrap_or(Value::Null)
}

fn flat(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    Value::Object(_) => obj_text(i),
                    other => other.to_string(),
                })
                .collect();
            let sep = if items.iter().any(Value::is_object) {
                "; "
            } else {
                ", "
            };
            Value::String(parts.join(sep))
        }
        Value::Object(_) => Value::String(obj_text(v)),
        Value::Bool(b) => Value::String(if *b { "yes" } else { "no" }.into()),
        other => other.clone(),
    }
}

/// An object in one line: its scalar values, `key: value` apart from a leading `kind`.
fn obj_text(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return figure(v);
    };
    let mut parts = Vec::new();
    for (k, x) in m {
        let t = match x {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Object(_) | Value::Array(_) => x.to_string(),
            other => other.to_string(),
        };
        parts.push(if k == "kind" { t } else { format!("{k}: {t}") });
    }
    parts.join(", ")
}

/// An RFC 3339 time as the reader's local time with its zone ("2026-12-07 11:11:43
/// UTC+01:00"); the text as it is when it does not parse.
pub(crate) fn local_time(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S UTC%:z")
            .to_string(),
        Err(_) => rfc3339.to_string(),
    }
}

/// A contact id cell: the display id (`REVU-…`), the whole DON on hover.
fn id_cell(don: &Value) -> Value {
    match don.as_str() {
        Some(s) if !s.is_empty() => {
            let short = crate::detect::display_id(s);
            if short == s {
                Value::String(short)
            } else {
                Value::Array(vec![Value::String(short), Value::String(s.to_string())])
            }
        }
        _ => Value::Null,
    }
}

/// The length of the list at `path` (or the number there).
fn count(v: &Value, path: &str) -> Value {
    match at(v, path) {
        Value::Array(a) => Value::from(a.len()),
        Value::Number(n) => Value::Number(n.clone()),
        _ => Value::Null,
    }
}

/// Seconds as the console prints them ([`crate::preview::human_duration`]), so the page and
/// the terminal give the same figures; `?` for a value no estimate produces.
fn duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".into();
    }
    crate::preview::human_duration(s)
}

/// A figure of the JSON as text (`—` when absent).
fn figure(v: &Value) -> String {
    match v {
        Value::Null => "\u{2014}".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Summary counts that call for a look when not zero, and those that call for action.
fn tone_of(key: &str, n: f64) -> page::Tone {
    use page::Tone;
    if n == 0.0 {
        return Tone::Plain;
    }
    let bad = ["failed", "errors", "error", "refused", "interrupted"];
    let warn = [
        "skipped",
        "unconfirmed",
        "outcome_unknown",
        "ref_adoptions_pending",
        "not_started",
        "needs_review",
        "needs_review_groups",
        "left_csv",
        "not_merged",
        "no_email",
        "rate_limited_429",
    ];
    let good = ["merged", "merged_this_run", "restored", "passed", "pairs"];
    if bad.contains(&key) {
        Tone::Bad
    } else if warn.contains(&key) {
        Tone::Warn
    } else if good.contains(&key) {
        Tone::Good
    } else {
        Tone::Plain
    }
}

/// A card per number of the object `summary`: those named in `order` first, in that order,
/// then any other (a count added later) by name. Nested objects are left to the details.
fn number_cards(summary: &Value, order: &[&str]) -> Vec<page::Card> {
    let Some(m) = summary.as_object() else {
        return Vec::new();
    };
    let known = order.iter().filter_map(|k| m.get_key_value(*k));
    let others = m.iter().filter(|(k, _)| !order.contains(&k.as_str()));
    known
        .chain(others)
        .filter_map(|(k, v)| {
            let n = v.as_f64()?;
            Some(page::Card {
                label: page::label(k),
                value: figure(v),
                tone: tone_of(k, n),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
