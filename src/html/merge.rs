//! A merge run's page (`reports/merge-report-<ts>.html`).

use std::io::{self, Write};

use serde_json::{Value, json};

use super::page::{Column, Kind, Page, Table};
use super::serial::{fields_without, for_each_element};
use super::{at, cell, count, figure, first, id_cell, number_cards};
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
             primary. Click a row for its steps and everything else the report holds."
                .into(),
        ),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Status", Kind::Status, |r| cell(r, "status")),
            Column::new("Reason", Kind::Long, reason),
            Column::new("Primary", Kind::Text, |r| id_cell(at(r, "primary"))),
            Column::new("Primary name", Kind::Text, |r| {
                first(r, &["primary_contact.display_name", "primary_display_name"])
            })
            .optional(),
            Column::new("Primary ref", Kind::Text, |r| {
                cell(r, "primary_contact.external_ref")
            })
            .optional(),
            Column::new("Primary tickets (CSV)", Kind::Num, |r| {
                cell(r, "primary_contact.ticket_count")
            })
            .optional(),
            Column::new("Secondary", Kind::Text, |r| id_cell(at(r, "secondary"))),
            Column::new("Secondary name", Kind::Text, |r| {
                cell(r, "secondary_contact.display_name")
            })
            .optional(),
            Column::new("Secondary ref", Kind::Text, |r| {
                first(
                    r,
                    &["secondary_contact.external_ref", "secondary_external_ref"],
                )
            })
            .optional(),
            Column::new("Secondary tickets (CSV)", Kind::Num, |r| {
                cell(r, "secondary_contact.ticket_count")
            })
            .optional(),
            Column::new("Ref adopted", Kind::Text, |r| {
                cell(r, "external_ref_adopted")
            })
            .optional(),
            Column::new("Last step", Kind::Text, |r| cell(r, "last_step")),
            Column::new("Tickets backed up", Kind::Num, |r| {
                cell(r, "tickets_backed_up")
            }),
            Column::new("Conversations backed up", Kind::Num, |r| {
                cell(r, "conversations_backed_up")
            }),
            Column::new("Tickets repaired", Kind::Num, |r| {
                cell(r, "tickets_repaired")
            }),
            Column::new("Conversations repaired", Kind::Num, |r| {
                cell(r, "conversations_repaired")
            }),
            Column::new("Carried over", Kind::Long, |r| {
                sentences(at(r, "carry.carried"), item_text)
            })
            .optional(),
            Column::new("Conflicts", Kind::Long, |r| {
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
            Column::new("Merge requests", Kind::Num, |r| cell(r, "merge_requests")),
            Column::new("Steps this run", Kind::Num, |r| count(r, "steps")),
            Column::new("Backup folder", Kind::Text, |r| cell(r, "backup_dir")),
        ],
        details: true,
    }
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

pub fn write(w: &mut dyn Write, r: &MergeReport<'_>) -> io::Result<()> {
    let top = Value::Object(fields_without(r, &["pairs", "id_map"])?);
    let title = format!("Merge run {}", figure(at(&top, "run_id")));
    let org = at(&top, "organization");
    let facts = vec![
        format!(
            "Outcome: {}. Organization {} ({})",
            figure(at(&top, "outcome")),
            figure(&first(org, &["display_id", "id"])),
            figure(&first(org, &["slug"])),
        ),
        format!(
            "From {} to {} ({} s), devrev-merge {}, CSV {}",
            figure(at(&top, "started_at")),
            figure(at(&top, "finished_at")),
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
    page.cards("Summary", &number_cards(summary, SUMMARY_ORDER))?;
    if r.summary.carry != crate::merge::carry::CarryCounts::default() {
        page.para(
            "note",
            &format!(
                "Carry-over (the secondaries' own data the survivors lacked): {}",
                r.summary.carry.line()
            ),
        )?;
    }
    let api = at(&top, "api");
    // The console's API line, word for word.
    page.para("note", &format!("API: {}", r.api.line()))?;

    let t = pairs_table();
    page.begin_table(&t, r.pairs.len())?;
    for_each_element(&r.pairs, &mut |row| page.row(&t, &row))?;
    page.end_table()?;

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
