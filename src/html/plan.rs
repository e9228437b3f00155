//! The plan's page (`reports/plan-<ts>.html`): what `--preview` found and what a run would do.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::page::{Card, Column, Kind, Page, Table, Tone};
use super::serial::fields_without;
use super::{at, cell, count, duration, figure, first, id_cell};
use crate::planfile::PlanReport;
use crate::review::decisions::{Decided, Outcome, Source};

/// The arrays that can hold one element per CSV row: streamed, never collected.
const BIG: &[&str] = &["pairs", "needs_review", "no_email", "live_check"];

fn pairs_table() -> Table {
    Table {
        id: "pairs",
        title: "Pairs to merge".into(),
        note: Some(
            "The secondary is merged into the primary, which survives. Ids are display ids \
             (hover for the DON); ticket counts are the CSV's TICKET_COUNT."
                .into(),
        ),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Primary", Kind::Text, |r| {
                id_cell(at(r, "primary.rev_user_id"))
            }),
            Column::new("Primary name", Kind::Text, |r| {
                first(r, &["primary.display_name", "primary.full_name"])
            }),
            Column::new("Primary ref", Kind::Text, |r| {
                cell(r, "primary.external_ref")
            }),
            Column::new("Primary tickets", Kind::Num, |r| {
                cell(r, "primary.ticket_count")
            }),
            Column::new("Secondary", Kind::Text, |r| {
                id_cell(at(r, "secondary.rev_user_id"))
            }),
            Column::new("Secondary name", Kind::Text, |r| {
                first(r, &["secondary.display_name", "secondary.full_name"])
            }),
            Column::new("Secondary ref", Kind::Text, |r| {
                cell(r, "secondary.external_ref")
            }),
            Column::new("Secondary tickets", Kind::Num, |r| {
                cell(r, "secondary.ticket_count")
            }),
        ],
        details: true,
    }
}

/// A list of the contacts' field `f`, one per contact, `; `-separated.
fn members(r: &Value, f: fn(&Value) -> Value) -> Value {
    let Some(cs) = r.get("contacts").and_then(Value::as_array) else {
        return Value::Null;
    };
    let parts: Vec<String> = cs
        .iter()
        .map(|c| match f(c) {
            Value::Array(a) => figure(&a[0]),
            Value::Null => "\u{2014}".into(),
            v => figure(&v),
        })
        .collect();
    Value::String(parts.join("; "))
}

fn review_table() -> Table {
    Table {
        id: "needs-review",
        title: "Needs review".into(),
        note: Some(
            "Groups detection does not merge on its own: decide them in the review file, then \
             --decisions FILE. Members are listed in the same order in each column."
                .into(),
        ),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Reason", Kind::Status, |r| cell(r, "reason")),
            Column::new("Detail", Kind::Long, |r| cell(r, "detail")),
            Column::new("Contacts", Kind::Num, |r| count(r, "contacts")),
            Column::new("Ids", Kind::Long, |r| {
                members(r, |c| id_cell(at(c, "rev_user_id")))
            }),
            Column::new("Names", Kind::Long, |r| {
                members(r, |c| first(c, &["display_name", "full_name"]))
            }),
            Column::new("Refs", Kind::Long, |r| {
                members(r, |c| cell(c, "external_ref"))
            }),
            Column::new("Tickets", Kind::Long, |r| {
                members(r, |c| cell(c, "ticket_count"))
            }),
        ],
        details: true,
    }
}

fn no_email_table() -> Table {
    Table {
        id: "no-email",
        title: "Rows without an email".into(),
        note: Some("Never paired: nothing to group them by.".into()),
        columns: vec![
            Column::new("Line", Kind::Num, |r| cell(r, "line")),
            Column::new("Id", Kind::Text, |r| id_cell(at(r, "rev_user_id"))),
            Column::new("Name", Kind::Text, |r| {
                first(r, &["display_name", "full_name"])
            }),
            Column::new("Ref", Kind::Text, |r| cell(r, "external_ref")),
            Column::new("Tickets", Kind::Num, |r| cell(r, "ticket_count")),
        ],
        details: true,
    }
}

fn live_table() -> Table {
    Table {
        id: "live-check",
        title: "Live check".into(),
        note: Some("Each pair as DevRev holds it now (--check-live).".into()),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Outcome", Kind::Status, |r| cell(r, "outcome")),
            Column::new("Reason", Kind::Long, |r| {
                first(r, &["problems", "error", "turned"])
            }),
            Column::new("Primary", Kind::Text, |r| id_cell(at(r, "primary"))),
            Column::new("Secondary", Kind::Text, |r| id_cell(at(r, "secondary"))),
            Column::new("Live tickets (primary)", Kind::Num, |r| {
                cell(r, "live_tickets.primary")
            }),
            Column::new("Live tickets (secondary)", Kind::Num, |r| {
                cell(r, "live_tickets.secondary")
            }),
            Column::new("CSV tickets (primary)", Kind::Num, |r| {
                cell(r, "csv_tickets_primary")
            }),
            Column::new("CSV tickets (secondary)", Kind::Num, |r| {
                cell(r, "csv_tickets_secondary")
            }),
            Column::new("Warnings", Kind::Long, |r| cell(r, "warnings")).optional(),
        ],
        details: true,
    }
}

fn decisions_table() -> Table {
    Table {
        id: "decisions",
        title: "Decisions".into(),
        note: Some("What --decisions makes of every group.".into()),
        columns: vec![
            Column::new("Group", Kind::Text, |r| cell(r, "group")),
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Decision", Kind::Status, |r| cell(r, "decision")),
            Column::new("Keep", Kind::Text, |r| id_cell(at(r, "keep"))),
            Column::new("Merged into it", Kind::Long, |r| {
                let Some(m) = r.get("merge").and_then(Value::as_array) else {
                    return Value::Null;
                };
                let ids: Vec<String> = m
                    .iter()
                    .map(|d| crate::detect::display_id(d.as_str().unwrap_or_default()))
                    .collect();
                Value::String(ids.join(", "))
            }),
            Column::new("Ref adopted from", Kind::Text, |r| {
                id_cell(at(r, "adopt_ref"))
            }),
            Column::new("Source / detail", Kind::Long, |r| {
                first(r, &["source", "detail"])
            }),
        ],
        details: false,
    }
}

/// One decided group as JSON (the decisions have no serialized form of their own).
fn decision_row(group: &str, email: &str, o: &Outcome) -> Value {
    match o {
        Outcome::Merge {
            keep,
            merge,
            adopt_ref,
            source,
        } => json!({
            "group": group, "email": email, "decision": "merge", "keep": keep,
            "merge": merge, "adopt_ref": adopt_ref,
            "source": match source {
                Source::Typed => "typed",
                Source::Proposed => "proposed (--accept-proposed)",
                Source::CleanPairRule => "clean pair rule",
            },
        }),
        Outcome::NotDup { line } => json!({
            "group": group, "email": email, "decision": "not_dup",
            "detail": format!("not-dup on line {line}"),
        }),
        Outcome::Skipped => json!({"group": group, "email": email, "decision": "skipped"}),
        Outcome::Undecided => json!({"group": group, "email": email, "decision": "undecided"}),
        Outcome::Stale { reason } => json!({
            "group": group, "email": email, "decision": "stale", "detail": reason,
        }),
        Outcome::Recorded { decision, at, file } => json!({
            "group": group, "email": email, "decision": decision.word(),
            "detail": format!("recorded in the savepoint: {} on {} from {}", decision.word(),
                              at.format("%Y-%m-%d %H:%M UTC"), file.display()),
        }),
    }
}

fn row_each<T: serde::Serialize>(page: &mut Page<'_>, t: &Table, items: &[T]) -> io::Result<()> {
    page.begin_table(t, items.len())?;
    for item in items {
        page.row(t, &serde_json::to_value(item).map_err(io::Error::other)?)?;
    }
    page.end_table()
}

pub fn write(w: &mut dyn Write, r: &PlanReport, decided: Option<&Decided>) -> io::Result<()> {
    let top = Value::Object(fields_without(r, BIG)?);
    let live = match r.live_check {
        Some(l) => Some(Value::Object(fields_without(l, &["results"])?)),
        None => None,
    };
    let p = r.plan;
    let title = format!("Merge plan for {}", p.source);
    let mut facts = vec![format!(
        "Written {} by devrev-merge {} (--preview). keep: {}",
        figure(at(&top, "generated_at")),
        figure(at(&top, "tool_version")),
        figure(at(&top, "keep")),
    )];
    if let Some(d) = at(&top, "email_domain").as_str() {
        facts.push(format!("Only emails of {d}"));
    }
    let mut page = Page::start(w, "plan", &title, &facts)?;

    let est = at(&top, "estimate");
    let singles: u64 = at(&top, "singles")
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let n = |x: usize| x.to_string();
    let mut cards = vec![
        card("rows read", figure(at(&top, "rows_read")), Tone::Plain),
        card("emails", figure(at(&top, "emails")), Tone::Plain),
        card("pairs to merge", n(p.pairs.len()), Tone::Good),
        card(
            "needs review (groups)",
            n(p.needs_review.len()),
            warn_if(p.needs_review.len()),
        ),
        card("single contacts", singles.to_string(), Tone::Plain),
        card("rows without email", n(p.no_email.len()), Tone::Plain),
    ];
    if let Some(out) = at(&top, "outside_domain").as_u64().filter(|&o| o > 0) {
        cards.push(card("outside the domain", out.to_string(), Tone::Plain));
    }
    cards.push(card(
        "API calls (estimate)",
        format!(
            "{} ({}\u{2013}{})",
            figure(at(est, "api_calls")),
            figure(at(est, "api_calls_low")),
            figure(at(est, "api_calls_high"))
        ),
        Tone::Plain,
    ));
    cards.push(card(
        "run time (estimate)",
        format!(
            "{} ({}\u{2013}{})",
            duration(at(est, "seconds").as_f64().unwrap_or(0.0)),
            duration(at(est, "seconds_low").as_f64().unwrap_or(0.0)),
            duration(at(est, "seconds_high").as_f64().unwrap_or(0.0))
        ),
        Tone::Plain,
    ));
    if let Some(l) = &live {
        for (k, label) in [
            ("passed", "live check passed"),
            ("refused", "live check refused"),
            ("errors", "live check errors"),
        ] {
            let v = at(l, k);
            cards.push(card(
                label,
                figure(v),
                super::tone_of(k, v.as_f64().unwrap_or(0.0)),
            ));
        }
    }
    page.cards("Summary", &cards)?;

    row_each(&mut page, &pairs_table(), &p.pairs)?;
    row_each(&mut page, &review_table(), &p.needs_review)?;
    if let Some(d) = decided {
        let t = decisions_table();
        page.begin_table(&t, d.groups.len())?;
        for (group, email, o) in &d.groups {
            page.row(&t, &decision_row(group, email, o))?;
        }
        page.end_table()?;
    }
    if let Some(l) = r.live_check {
        row_each(&mut page, &live_table(), &l.results)?;
    }
    row_each(&mut page, &no_email_table(), &p.no_email)?;

    page.kv_section("estimate", "Estimate", est)?;
    if let Some(l) = &live {
        page.kv_section("live", "Live check", l)?;
    }
    let mut rest = top.clone();
    if let Some(m) = rest.as_object_mut() {
        m.remove("estimate");
    }
    page.kv_section("details", "Plan details", &rest)?;
    page.finish()
}

fn card(label: &str, value: String, tone: Tone) -> Card {
    Card {
        label: label.into(),
        value,
        tone,
    }
}

fn warn_if(n: usize) -> Tone {
    if n > 0 { Tone::Warn } else { Tone::Plain }
}
