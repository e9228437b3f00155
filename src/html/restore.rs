//! A restore's page (`reports/restore-report-<ts>.html`).

use std::io::{self, Write};

use serde_json::{Value, json};

use super::merge::id_map_table;
use super::page::{Column, Kind, Page, Table};
use super::serial::fields_without;
use super::{at, cell, count, figure, first, id_cell, number_cards};
use crate::restore::report::RestoreReport;

fn pairs_table() -> Table {
    Table {
        id: "pairs",
        title: "Pairs".into(),
        note: Some(
            "Each merged-away contact recreated from its backup, and what it was given back. \
             Click a row for the lists of tickets and conversations."
                .into(),
        ),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Status", Kind::Status, |r| cell(r, "status")),
            Column::new("Reason", Kind::Long, |r| first(r, &["reason", "detail"])),
            Column::new("Primary", Kind::Text, |r| id_cell(at(r, "primary"))),
            Column::new("Old secondary", Kind::Text, |r| {
                id_cell(at(r, "old_secondary"))
            }),
            Column::new("New contact", Kind::Text, |r| {
                match (at(r, "new_display_id").as_str(), at(r, "new_secondary")) {
                    (Some(d), Value::String(full)) => json!([d, full]),
                    (Some(d), _) => json!(d),
                    (None, full) => id_cell(full),
                }
            }),
            Column::new("Primary ref restored", Kind::Text, |r| {
                cell(r, "primary_external_ref_restored")
            })
            .optional(),
            Column::new("Tickets restored", Kind::Num, |r| {
                count(r, "tickets_restored")
            }),
            Column::new("Conversations restored", Kind::Num, |r| {
                count(r, "conversations_restored")
            }),
            Column::new("Objects written", Kind::Num, |r| cell(r, "objects_written")),
            Column::new("Not restored", Kind::Long, |r| lines(at(r, "not_restored"))),
            Column::new("Backup folder", Kind::Text, |r| cell(r, "backup_dir")),
        ],
        details: true,
    }
}

/// A list of sentences, one per line.
fn lines(v: &Value) -> Value {
    match v.as_array() {
        Some(items) => Value::String(items.iter().map(figure).collect::<Vec<_>>().join("\n")),
        None => super::flat(v),
    }
}

pub fn write(w: &mut dyn Write, r: &RestoreReport) -> io::Result<()> {
    let top = Value::Object(fields_without(r, &["pairs", "id_map"])?);
    let org = at(&top, "organization");
    let facts = vec![
        format!(
            "Organization {} ({}); from {} to {}, devrev-merge {}",
            figure(&first(org, &["display_id", "id"])),
            figure(&first(org, &["slug"])),
            figure(at(&top, "started_at")),
            figure(at(&top, "finished_at")),
            figure(at(&top, "tool_version")),
        ),
        format!(
            "Undoing {}; restore journal next to {}",
            figure(&cell(&top, "inputs")),
            figure(at(&top, "savepoint")),
        ),
    ];
    let mut page = Page::start(w, "restore-report", "Restore", &facts)?;
    let order = [
        "restored",
        "restored_earlier",
        "skipped",
        "failed",
        "not_started",
        "not_merged",
    ];
    let mut cards = number_cards(at(&top, "summary"), &order);
    for k in ["api_calls", "api_calls_per_restored_pair"] {
        cards.extend(number_cards(&json!({ k: at(&top, k) }), &[]));
    }
    page.cards("Summary", &cards)?;
    page.para("note", &format!("API: {}", r.api.line()))?;

    let t = pairs_table();
    page.begin_table(&t, r.pairs.len())?;
    for e in &r.pairs {
        page.row(&t, &serde_json::to_value(e).map_err(io::Error::other)?)?;
    }
    page.end_table()?;

    let t = id_map_table(
        "Id map: old contact \u{2192} recreated contact",
        "The merged-away contact's old id and the id of the contact the restore created in \
         its place: update links elsewhere from the old id to the new one.",
        ["Old contact", "Old DON", "Recreated contact", "New DON"],
    );
    page.begin_table(&t, r.id_map.len())?;
    for (old, new) in &r.id_map {
        page.row(&t, &json!({"old": old, "new": new}))?;
    }
    page.end_table()?;

    page.kv_section("details", "Restore details", &top)?;
    page.finish()
}
