//! A merge run's page (`reports/merge-report-<ts>.html`).

use std::io::{self, Write};

use serde_json::{Value, json};

use super::page::{Column, Kind, Page, Table, Tone};
use super::serial::{fields_without, for_each_element};
use super::{at, cell, figure, first, id_cell, number_cards};
use crate::merge::report::MergeReport;

/// The reason a pair is where it is, in words.
pub(super) fn reason(r: &Value) -> Value {
    if let Some(m) = at(r, "skip_message").as_str() {
        return Value::String(m.to_string());
    }
    if let Some(e) = r.get("error").filter(|e| e.is_object()) {
        let mut s = format!("{}: {}", figure(at(e, "step")), figure(at(e, "message")));
        if let Some(st) = at(e, "status").as_u64() {
            s.push_str(&format!(" (HTTP {st})"));
        }
        if let Some(id) = at(e, "reference_id").as_str() {
            s.push_str(&format!(" (DevRev reference id {id})"));
        }
        return Value::String(s);
    }
    if let Some(p) = at(r, "ref_adoption_pending").as_str() {
        return Value::String(format!("ref adoption pending: {p}"));
    }
    if at(r, "outcome_unknown").as_bool() == Some(true) {
        return Value::String(match at(r, "rerun_after").as_str() {
            Some(t) => format!("merge outcome unknown: re-run after {t}"),
            None => "merge outcome unknown: re-run to settle it".into(),
        });
    }
    first(r, &["reason", "detail"])
}

/// The summary's counts in reading order (any other count follows).
pub(super) const SUMMARY_ORDER: &[&str] = &[
    "pairs",
    "merged",
    "merged_this_run",
    "merged_earlier",
    "already_merged",
    "skipped",
    "failed",
    "unconfirmed",
    "outcome_unknown",
    "ref_adoptions_pending",
    "interrupted",
    "not_started",
    "left_csv",
    "restored",
    "held_as_restored",
    "needs_review_groups",
    "tickets_backed_up_this_run",
    "tickets_backed_up",
    "tickets_repaired",
    "conversations_repaired",
    "display_names_restored",
    "external_refs_adopted",
];

fn pairs_table() -> Table {
    Table {
        id: "pairs",
        title: "Pairs".into(),
        note: Some(
            "Every pair of the CSV and of the savepoint. The secondary is merged into the \
             primary, which survives. Click a row for its steps, ticket counts and everything \
             else the report holds."
                .into(),
        ),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Status", Kind::Status, |r| {
                let st = super::words(&figure(at(r, "status")));
                Value::String(match at(r, "vetoed_later").as_str() {
                    Some(d) => format!("{st}, then vetoed ({d})"),
                    None => st,
                })
            }),
            Column::new("Reason", Kind::Long, |r| match reason(r) {
                Value::String(s) => Value::String(super::words_in(&s)),
                other => other,
            }),
            Column::new("Survivor (primary)", Kind::Long, |r| {
                who_cell(
                    at(r, "primary"),
                    &first(r, &["primary_contact.display_name", "primary_display_name"]),
                    &cell(r, "primary_contact.external_ref"),
                )
            }),
            Column::new("Merged away (secondary)", Kind::Long, |r| {
                who_cell(
                    at(r, "secondary"),
                    &cell(r, "secondary_contact.display_name"),
                    &first(
                        r,
                        &["secondary_contact.external_ref", "secondary_external_ref"],
                    ),
                )
            }),
            Column::new("Ref adopted", Kind::Text, |r| {
                cell(r, "external_ref_adopted")
            })
            .optional(),
            Column::new("Carried over", Kind::Long, |r| {
                sentences(at(r, "carry.carried"), item_text)
            })
            .optional(),
            Column::new("Conflicts (the survivor's kept)", Kind::Long, |r| {
                sentences(at(r, "carry.conflicts"), |c| {
                    format!(
                        "{}: kept {} (the secondary had {})",
                        figure(at(c, "key")),
                        at(c, "survivor"),
                        at(c, "secondary")
                    )
                })
            })
            .optional(),
            Column::new("Refused by DevRev", Kind::Long, |r| {
                sentences(at(r, "carry.refused"), |x| {
                    format!("{}: {}", item_text(at(x, "item")), figure(at(x, "reason")))
                })
            })
            .optional(),
            Column::new("Tickets backed up", Kind::Num, |r| {
                cell(r, "tickets_backed_up")
            }),
            Column::new("Backup folder", Kind::Long, |r| cell(r, "backup_dir")),
        ],
        details: true,
    }
}

/// A contact in one cell: display id (the DON on hover), name, ref.
fn who_cell(don: &Value, name: &Value, r: &Value) -> Value {
    let id = id_cell(don);
    let (short, whole) = match &id {
        Value::Array(a) => (figure(&a[0]), a.get(1).cloned().unwrap_or(Value::Null)),
        other => (figure(other), Value::Null),
    };
    let mut lines = vec![short];
    if !name.is_null() {
        lines.push(figure(name));
    }
    if !r.is_null() {
        lines.push(format!("ref {}", figure(r)));
    }
    Value::Array(vec![Value::String(lines.join("\n")), whole])
}

/// A carried value in words (the report's `carry` items).
pub(super) fn item_text(i: &Value) -> String {
    match at(i, "field").as_str() {
        Some("phone_number") => format!("phone number {}", figure(at(i, "number"))),
        Some("custom_field") => format!("{} = {}", figure(at(i, "key")), at(i, "value")),
        Some("display_name") => format!("display name {}", figure(at(i, "name"))),
        Some("tag") => match at(i, "value").as_str() {
            Some(v) => format!("tag {} = {v}", figure(at(i, "id"))),
            None => format!("tag {}", figure(at(i, "id"))),
        },
        _ => i.to_string(),
    }
}

/// A list as one sentence per element (`Null` for none, so the column can stay hidden).
pub(super) fn sentences(list: &Value, f: impl Fn(&Value) -> String) -> Value {
    let parts: Vec<String> = list.as_array().into_iter().flatten().map(f).collect();
    if parts.is_empty() {
        Value::Null
    } else {
        Value::String(parts.join("; "))
    }
}

/// The decided groups (`--decisions`): who survives, who was merged into it in which order,
/// how far the group got, and the `user_` refs its merges leave without a contact.
fn groups_table() -> Table {
    Table {
        id: "groups",
        title: "Decided groups".into(),
        note: Some(
            "Every group of the decisions file. A group merges its members into the survivor \
             one at a time and stops at its first failure. A ref left without a contact: the \
             next Plug login with it creates a new contact."
                .into(),
        ),
        columns: vec![
            Column::new("Group", Kind::Text, |r| cell(r, "group")),
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Outcome", Kind::Status, |r| cell(r, "outcome")),
            Column::new("Decided by", Kind::Text, |r| cell(r, "decided_by")).optional(),
            Column::new("Survivor", Kind::Text, |r| id_cell(at(r, "survivor"))).optional(),
            Column::new("Merged in (in order)", Kind::Long, |r| {
                sentences(at(r, "members"), |m| {
                    format!(
                        "{} {}",
                        figure(&first(m, &["display_id", "rev_user_id"])),
                        figure(at(m, "status"))
                    )
                })
            }),
            Column::new("Stopped at", Kind::Long, |r| {
                let s = at(r, "stopped_at");
                if s.is_null() {
                    Value::Null
                } else {
                    Value::String(format!(
                        "{}: {}",
                        figure(&first(s, &["display_id", "rev_user_id"])),
                        figure(at(s, "reason"))
                    ))
                }
            })
            .optional(),
            Column::new("Ref to adopt", Kind::Text, |r| {
                let r_ = at(r, "adopts_ref");
                if r_.is_null() {
                    return Value::Null;
                }
                let state = match at(r, "ref_adoption").as_str() {
                    Some("adopted") => "adopted",
                    Some("pending") => "pending",
                    Some("not_adopted") => "not adopted",
                    _ => "after the last merge",
                };
                Value::String(format!("{} ({state})", figure(r_)))
            })
            .optional(),
            Column::new("Refs left without a contact", Kind::Long, |r| {
                sentences(at(r, "refs_left"), figure)
            })
            .optional(),
            Column::new("Reason", Kind::Long, |r| cell(r, "reason")).optional(),
        ],
        details: true,
    }
}

/// What changed in DevRev, what to check, and each problem with the command that deals
/// with it.
fn changed_and_todo(
    page: &mut Page<'_>,
    json: &std::path::Path,
    r: &MergeReport<'_>,
    top: &Value,
) -> io::Result<()> {
    let s = &r.summary;
    page.points("changed", "What changed in DevRev", Tone::Good, &changed(r))?;
    let tone = if s.failed > 0 || !r.late_vetoes.is_empty() {
        Tone::Bad
    } else {
        Tone::Warn
    };
    page.points(
        "todo",
        "What to check, and what to run",
        tone,
        &todo(json, r, top),
    )
}

/// What the run changed in DevRev, one line each (merges, adopted refs, repairs, carry-over,
/// refs left without a contact).
fn changed(r: &MergeReport<'_>) -> Vec<(String, Option<String>)> {
    let s = &r.summary;
    let mut changed: Vec<(String, Option<String>)> = Vec::new();
    if s.merged_this_run > 0 {
        changed.push((
            format!(
                "{} contact(s) merged into their survivor this run: each secondary's id now \
                 leads to its primary (the id map below). Their tickets and conversations were \
                 backed up first ({} ticket(s) this run).",
                s.merged_this_run, s.tickets_backed_up_this_run
            ),
            None,
        ));
    } else {
        changed.push(("No contact was merged this run.".into(), None));
    }
    if s.external_refs_adopted > 0 {
        changed.push((
            format!(
                "{} survivor(s) took the merged contact's user_ ref (Plug logins with it keep \
                 finding the survivor).",
                s.external_refs_adopted
            ),
            None,
        ));
    }
    if s.tickets_repaired_this_run + s.conversations_repaired_this_run > 0 {
        changed.push((
            format!(
                "{} ticket(s) and {} conversation(s) repaired (moved to the survivor).",
                s.tickets_repaired_this_run, s.conversations_repaired_this_run
            ),
            None,
        ));
    }
    if r.summary.carry != crate::merge::carry::CarryCounts::default() {
        changed.push((
            format!(
                "Carry-over (the secondaries' own data the survivors lacked): {}",
                r.summary.carry.line()
            ),
            None,
        ));
    }
    let left: Vec<String> = r.groups.iter().flat_map(|g| g.refs_left.clone()).collect();
    if !left.is_empty() {
        changed.push((
            format!(
                "{} ref(s) no longer resolve to a contact (their next Plug login creates a new \
                 one): {}",
                left.len(),
                left.join(", ")
            ),
            None,
        ));
    }
    changed
}

/// What is left to check or do after the run, each with the exact command that does it.
fn todo(json: &std::path::Path, r: &MergeReport<'_>, top: &Value) -> Vec<(String, Option<String>)> {
    let s = &r.summary;
    let csv = figure(at(top, "configuration.csv"));
    let sp = figure(at(top, "configuration.savepoint"));
    let rerun = format!("devrev-merge --csv {csv} --savepoint {sp}");
    let mut todo: Vec<(String, Option<String>)> = Vec::new();
    for v in &r.late_vetoes {
        for m in &v.merged {
            todo.push((
                format!(
                    "Group {} ({}) was decided {} after {} was merged into {}: undo that merge \
                     with",
                    v.group,
                    v.email,
                    v.decision,
                    crate::detect::display_id(&m.secondary),
                    crate::detect::display_id(&m.primary)
                ),
                Some(m.restore.clone()),
            ));
        }
    }
    if s.failed > 0 {
        todo.push((
            format!(
                "{} pair(s) failed (the reason is on each row): fix the cause, then run again; \
                 the savepoint resumes each where it stopped.",
                s.failed
            ),
            Some(rerun.clone()),
        ));
    }
    if s.outcome_unknown > 0 || s.unconfirmed > 0 {
        todo.push((
            format!(
                "{} merge(s) not yet confirmed by DevRev{}: run again to settle them.",
                s.outcome_unknown + s.unconfirmed,
                s.rerun_after
                    .map(|t| format!(" (after {})", super::local_time(&t.to_rfc3339())))
                    .unwrap_or_default()
            ),
            Some(rerun.clone()),
        ));
    }
    if s.ref_adoptions_pending > 0 {
        todo.push((
            format!(
                "{} survivor(s) still to take their merged contact's ref: run again.",
                s.ref_adoptions_pending
            ),
            Some(rerun.clone()),
        ));
    }
    if s.not_started + s.interrupted > 0 {
        todo.push((
            format!(
                "{} pair(s) not started or interrupted (the run stopped early): run again to \
                 go on.",
                s.not_started + s.interrupted
            ),
            Some(rerun.clone()),
        ));
    }
    if s.needs_review_groups > 0 {
        todo.push((
            format!(
                "{} group(s) need a decision: preview, decide them in the review file, then \
                 run with it.",
                s.needs_review_groups
            ),
            Some(format!("devrev-merge --csv {csv} --preview")),
        ));
    }
    if s.merged_this_run > 0 {
        todo.push((
            "Open two or three survivors in DevRev (the id map below): their tickets, \
             conversations and ref are there. A merge can be undone with --restore and this \
             report:"
                .into(),
            Some(format!("devrev-merge --restore {}", json.display())),
        ));
    }
    todo
}

/// The old→new id table: `labels` are the old id, its DON, the new id, its DON.
pub(super) fn id_map_table(title: &str, note: &str, labels: [&'static str; 4]) -> Table {
    let [old, old_don, new, new_don] = labels;
    Table {
        id: "id-map",
        title: title.into(),
        note: Some(note.into()),
        columns: vec![
            Column::new(old, Kind::Text, |r| id_cell(at(r, "old"))),
            Column::new(old_don, Kind::Text, |r| cell(r, "old")),
            Column::new(new, Kind::Text, |r| id_cell(at(r, "new"))),
            Column::new(new_don, Kind::Text, |r| cell(r, "new")),
        ],
        details: false,
    }
}

pub fn write(w: &mut dyn Write, json: &std::path::Path, r: &MergeReport<'_>) -> io::Result<()> {
    let top = Value::Object(fields_without(r, &["pairs", "id_map"])?);
    let title = format!("Merge run {}", figure(at(&top, "run_id")));
    let org = at(&top, "organization");
    let facts = vec![
        format!(
            "Outcome: {}. Organization {} ({})",
            super::words(&figure(at(&top, "outcome"))),
            figure(&first(org, &["display_id", "id"])),
            figure(&first(org, &["slug"])),
        ),
        format!(
            "From {} to {} ({} s), devrev-merge {}, CSV {}",
            super::local_time(&figure(at(&top, "started_at"))),
            super::local_time(&figure(at(&top, "finished_at"))),
            figure(at(&top, "duration_s")),
            figure(at(&top, "tool_version")),
            figure(at(&top, "configuration.csv")),
        ),
        format!(
            "Backups in {}, savepoint {}",
            figure(at(&top, "configuration.backup_dir")),
            figure(at(&top, "configuration.savepoint")),
        ),
    ];
    let mut page = Page::start(w, "merge-report", &title, &facts)?;
    let summary = at(&top, "summary");
    let s = &r.summary;
    page.lead(&format!(
        "{} of {} pair(s) merged ({} this run){}{}.",
        s.merged,
        s.pairs,
        s.merged_this_run,
        if s.failed > 0 {
            format!(", {} failed", s.failed)
        } else {
            String::new()
        },
        if r.late_vetoes.is_empty() {
            String::new()
        } else {
            format!(
                ", {} group(s) vetoed after their merge",
                r.late_vetoes.len()
            )
        }
    ))?;
    page.cards("Summary", &number_cards(summary, SUMMARY_ORDER))?;
    changed_and_todo(&mut page, json, r, &top)?;
    let api = at(&top, "api");
    // The console's API line, word for word.
    page.para("note", &format!("API: {}", r.api.line()))?;

    pair_rows(&mut page, r)?;

    if !r.groups.is_empty() {
        let t = groups_table();
        page.begin_table(&t, r.groups.len())?;
        for g in &r.groups {
            page.row(&t, &serde_json::to_value(g).map_err(io::Error::other)?)?;
        }
        page.end_table()?;
    }

    let t = id_map_table(
        "Id map: merged away \u{2192} survivor",
        "Every merged secondary and the primary it now is, over all runs: update links \
         elsewhere from the old id to the new one.",
        ["Merged away (old)", "Old DON", "Survivor (new)", "New DON"],
    );
    page.begin_table(&t, r.id_map.len())?;
    for (old, new) in &r.id_map {
        page.row(&t, &json!({"old": old, "new": new}))?;
    }
    page.end_table()?;

    page.kv_section("summary-details", "Summary details", summary)?;
    page.kv_section("api", "API figures", api)?;
    let mut rest = top.clone();
    if let Some(m) = rest.as_object_mut() {
        m.remove("summary");
        m.remove("api");
        m.remove("groups");
    }
    page.kv_section("details", "Run details", &rest)?;
    page.finish()
}

/// Every pair of the run, one row each; a pair merged against a later veto is not shown as
/// plainly merged.
fn pair_rows(page: &mut Page<'_>, r: &MergeReport<'_>) -> io::Result<()> {
    let vetoed: std::collections::HashMap<(&str, &str), &str> = r
        .late_vetoes
        .iter()
        .flat_map(|v| {
            v.merged
                .iter()
                .map(move |m| ((m.primary.as_str(), m.secondary.as_str()), v.decision))
        })
        .collect();
    let t = pairs_table();
    page.begin_table(&t, r.pairs.len())?;
    for_each_element(&r.pairs, &mut |mut row| {
        let key = (
            at(&row, "primary").as_str().unwrap_or_default().to_string(),
            at(&row, "secondary")
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if let (Some(d), Some(m)) = (
            vetoed.get(&(key.0.as_str(), key.1.as_str())),
            row.as_object_mut(),
        ) {
            m.insert("vetoed_later".into(), Value::String(d.to_string()));
        }
        page.row(&t, &row)
    })?;
    page.end_table()
}
