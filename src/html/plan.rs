//! The plan's page (`reports/plan-<ts>.html`): what `--preview` found and what a run would do.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use serde_json::Value;

use super::page::{Card, Column, Kind, Page, Table, Tone};
use super::serial::fields_without;
use super::{at, cell, duration, figure, first, id_cell};
use crate::detect::{ReviewGroup, ReviewReason};
use crate::planfile::PlanReport;
use crate::review::decisions::{Decided, Outcome, Source};
use crate::review::{Proposal, Proposer};

/// The arrays that can hold one element per CSV row: streamed, never collected.
const BIG: &[&str] = &["pairs", "needs_review", "no_email", "live_check"];

fn pairs_table(checked_live: bool) -> Table {
    Table {
        id: "pairs",
        title: "Pairs to merge".into(),
        note: Some(if checked_live {
            "One card per pair: the survivor before and after, the contact merged into it, \
             the ref that will no longer resolve, why, and what conflicts (as DevRev held the \
             contacts at --check-live). Click a card for everything the plan holds."
                .into()
        } else {
            "One card per pair: the survivor before and after, the contact merged into it, \
             the ref that will no longer resolve, and why. Phones, custom fields, tags and \
             their conflicts are read from DevRev: run the preview with --check-live to see \
             them here. Click a card for everything the plan holds."
                .into()
        }),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Decision", Kind::Status, |r| {
                Value::String(figure(at(r, "decision")))
            }),
            Column::new("Survivor before", Kind::Long, |r| {
                contact_cell(at(r, "primary"), at(r, "app"))
            }),
            Column::new("Survivor after", Kind::Long, after),
            Column::new("Phones, custom fields, tags", Kind::Long, |r| {
                cell(r, "not_in_export")
            }),
            Column::new("Merged into it", Kind::Long, |r| {
                contact_cell(at(r, "secondary"), at(r, "app"))
            }),
            Column::new("No longer resolves", Kind::Long, |r| {
                lost(at(r, "secondary"))
            }),
            Column::new("Why", Kind::Long, |r| cell(r, "why")),
            Column::new("Conflicts", Kind::Long, |r| {
                super::merge::sentences(at(r, "carry.conflicts"), |c| {
                    format!(
                        "{}: the survivor's {} stays (the merged contact has {})",
                        figure(at(c, "key")),
                        at(c, "survivor"),
                        at(c, "secondary")
                    )
                })
            }),
            Column::new("Not carried", Kind::Long, |r| {
                super::merge::sentences(at(r, "carry.not_carried"), figure)
            }),
        ],
        details: true,
    }
}

/// A contact in lines: name, display id, ref, ticket count; a link to it in the DevRev app
/// when the app's URL is known (`[text, DON, href]`). The `<app>/contacts/<REVU-…>` path is
/// unverified: DevRev documents no contact URL (public code shows only
/// `<app>/<org-slug>/works/<display id>` for work items; docs/html-report.md).
fn contact_cell(c: &Value, app: &Value) -> Value {
    if c.is_null() {
        return Value::Null;
    }
    let don = at(c, "rev_user_id").as_str().unwrap_or_default();
    let id = crate::detect::display_id(don);
    let mut lines = vec![figure(&first(c, &["display_name", "full_name"]))];
    lines.push(format!("{id} \u{b7} ref {}", figure(at(c, "external_ref"))));
    lines.push(tickets(at(c, "ticket_count")));
    let text = Value::String(lines.join("\n"));
    match app.as_str() {
        Some(a) if !id.is_empty() => Value::Array(vec![
            text,
            Value::String(don.to_string()),
            Value::String(format!("{a}/contacts/{id}")),
        ]),
        _ => Value::Array(vec![text, Value::String(don.to_string())]),
    }
}

fn tickets(n: &Value) -> String {
    match n.as_u64() {
        Some(1) => "1 ticket".into(),
        Some(n) => format!("{n} tickets"),
        None => "tickets not counted in the export".into(),
    }
}

/// The survivor as the merge leaves it: its own name and ref, the tickets of both, and what
/// the carry-over adds (known with --check-live).
fn after(r: &Value) -> Value {
    let p = at(r, "primary");
    let s = at(r, "secondary");
    let name = first(p, &["display_name", "full_name"]);
    let name = if name.is_null() {
        first(s, &["display_name", "full_name"])
    } else {
        name
    };
    let mut lines = vec![figure(&name)];
    lines.push(format!(
        "{} \u{b7} ref {}",
        crate::detect::display_id(at(p, "rev_user_id").as_str().unwrap_or_default()),
        figure(at(p, "external_ref"))
    ));
    let t = match (
        at(p, "ticket_count").as_u64(),
        at(s, "ticket_count").as_u64(),
    ) {
        (Some(a), Some(b)) => tickets(&Value::from(a + b)),
        _ => "tickets: both contacts' (a count is missing in the export)".into(),
    };
    lines.push(t);
    if let Some(items) = at(r, "carry.items").as_array().filter(|i| !i.is_empty()) {
        let carried: Vec<String> = items.iter().map(super::merge::item_text).collect();
        lines.push(format!("+ {}", carried.join(", ")));
    }
    Value::String(lines.join("\n"))
}

/// What stops resolving once the contact is merged away: its id, and its ref (a `user_` ref's
/// next Plug login creates a new contact).
fn lost(c: &Value) -> Value {
    if c.is_null() {
        return Value::Null;
    }
    let id = crate::detect::display_id(at(c, "rev_user_id").as_str().unwrap_or_default());
    let r = figure(at(c, "external_ref"));
    let plug = if r.starts_with("user_") {
        " (its next Plug login creates a new contact)"
    } else {
        ""
    };
    Value::String(format!("{id}\nref {r}{plug}"))
}

fn review_table() -> Table {
    Table {
        id: "needs-review",
        title: "Groups that need a decision".into(),
        note: Some(
            "Groups detection does not merge on its own: one card per group, its contacts, \
             why it needs a person, what the review file proposes (its proposed and why \
             columns), and what the decisions file makes of it. Decide them in the review \
             file (or take its proposals with --accept-proposed), then --decisions FILE."
                .into(),
        ),
        columns: vec![
            Column::new("Email", Kind::Text, |r| cell(r, "email")),
            Column::new("Decision", Kind::Status, |r| {
                Value::String(figure(at(r, "decision")))
            }),
            Column::new("Why it needs a person", Kind::Long, |r| {
                Value::String(format!(
                    "{}\n{}",
                    figure(at(r, "reason")),
                    figure(at(r, "detail"))
                ))
            }),
            Column::new("The review file proposes", Kind::Long, |r| {
                cell(r, "proposal")
            }),
            Column::new("Contacts", Kind::Long, |r| {
                let app = at(r, "app");
                let Some(cs) = r.get("contacts").and_then(Value::as_array) else {
                    return Value::Null;
                };
                let lines: Vec<String> = cs
                    .iter()
                    .map(|c| figure(&txt(&contact_cell(c, app))).replace('\n', " \u{b7} "))
                    .collect();
                Value::String(lines.join("\n"))
            }),
            Column::new("Decided", Kind::Long, |r| cell(r, "decided")),
            Column::new("No longer resolves", Kind::Long, |r| cell(r, "lost")),
        ],
        details: true,
    }
}

/// The text of a cell (`[text, title, href]` or a string).
fn txt(v: &Value) -> Value {
    match v {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
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

fn row_each<T: serde::Serialize>(page: &mut Page<'_>, t: &Table, items: &[T]) -> io::Result<()> {
    page.begin_table(t, items.len())?;
    for item in items {
        page.row(t, &serde_json::to_value(item).map_err(io::Error::other)?)?;
    }
    page.end_table()
}

/// The organization the plan is for, and the DevRev app's URL, where known: the export does
/// not name them, so they come from the newest merge report beside the plan (a run of the
/// same savepoint) and `DEVREV_APP_URL`.
struct Org {
    text: Option<String>,
    app: Option<String>,
}

fn org_of(json: &Path) -> Org {
    let report = json.parent().and_then(super::history::newest_org);
    let text = report.as_ref().map(|o| {
        let id = figure(&first(o, &["display_id", "id"]));
        match at(o, "slug").as_str() {
            Some(s) => format!("{s} ({id})"),
            None => id,
        }
    });
    let app = std::env::var("DEVREV_APP_URL")
        .ok()
        .filter(|u| u.starts_with("https://"))
        .or_else(|| {
            report
                .as_ref()
                .and_then(|o| at(o, "slug").as_str().map(str::to_owned))
                .filter(|s| {
                    s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
                .map(|s| format!("https://app.devrev.ai/{s}"))
        })
        .map(|u| u.trim_end_matches('/').to_string());
    Org { text, app }
}

/// Who runs the tool, on which machine: `user@host` as far as the environment says.
pub(super) fn who() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "someone".into());
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => format!("{user}@{h}"),
        None => user,
    }
}

/// The most cards a page holds per list: a bigger plan is summarised, and its full list
/// stays in the plan's JSON and the review file.
pub const MOST_CARDS: usize = 1000;

/// What every section of the plan page reads: the report, its top-level fields as JSON, the
/// organization, and what a decisions file made of each group (by email).
struct Ctx<'a> {
    json: &'a Path,
    r: &'a PlanReport<'a>,
    top: Value,
    org: Org,
    by_email: HashMap<&'a str, &'a Outcome>,
    /// What the review file proposes for a group (the same rules, the same held contacts).
    proposer: &'a Proposer<'a>,
    /// The review file written beside the plan.
    review: &'a Path,
}

/// Writes the plan page: the header, the sentence, the counts, what is left to do, the pairs
/// and groups as cards, the other lists, the sign-off, then the plan's details.
pub fn write(
    w: &mut dyn Write,
    json: &Path,
    r: &PlanReport,
    decided: Option<&Decided>,
    proposer: &Proposer<'_>,
    review: &Path,
) -> io::Result<()> {
    // What a decisions file makes of the groups, by email.
    let by_email = decided
        .map(|d| d.groups.iter().map(|(_, e, o)| (e.as_str(), o)).collect())
        .unwrap_or_default();
    let cx = Ctx {
        json,
        r,
        top: Value::Object(fields_without(r, BIG)?),
        org: org_of(json),
        by_email,
        proposer,
        review,
    };
    let live = match r.live_check {
        Some(l) => Some(Value::Object(fields_without(l, &["results"])?)),
        None => None,
    };
    let when = super::local_time(&r.generated_at);
    let by = who();
    let title = format!("Merge plan for {}", r.plan.source);
    let mut page = Page::start(w, "plan", &title, &header_facts(&cx, &by, &when))?;
    let est = at(&cx.top, "estimate");
    let c = tally(r.plan, decided);
    page.lead(&lead_sentence(&c, est))?;
    page.cards("Summary", &summary_cards(&cx, &c, live.as_ref()))?;
    before_approving(&mut page, &cx, c.undecided)?;
    pair_cards(&mut page, &cx)?;
    review_cards(&mut page, &cx)?;
    other_lists(&mut page, &cx)?;
    page.signoff(&by, &when)?;
    details(&mut page, &cx, live.as_ref())?;
    page.finish()
}

/// The header's lines: the organization, who prepared the plan and when, the rule and the file.
fn header_facts(cx: &Ctx<'_>, by: &str, when: &str) -> Vec<String> {
    let mut facts = vec![
        format!(
            "Organization: {}",
            cx.org.text.clone().unwrap_or_else(|| {
                "not named by the export (a first run records it; see the history page)".into()
            })
        ),
        format!(
            "Prepared by {by} on {when}, with devrev-merge {} (--preview)",
            cx.r.tool_version
        ),
        format!(
            "Keep: {}. Plan file: {}",
            figure(at(&cx.top, "keep")),
            cx.json.file_name().unwrap_or_default().to_string_lossy()
        ),
    ];
    if let Some(d) = at(&cx.top, "email_domain").as_str() {
        facts.push(format!("Only emails of {d}"));
    }
    facts
}

/// The summary's counts (the page shows only those that are not zero) and the estimate.
fn summary_cards(cx: &Ctx<'_>, c: &Tally, live: Option<&Value>) -> Vec<Card> {
    let (top, p) = (&cx.top, cx.r.plan);
    let est = at(top, "estimate");
    let singles: u64 = at(top, "singles")
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let n = |x: usize| x.to_string();
    let mut cards = vec![
        card("rows read", figure(at(top, "rows_read")), Tone::Plain),
        card("emails", figure(at(top, "emails")), Tone::Plain),
        card("pairs to merge", n(p.pairs.len()), Tone::Good),
        card("groups to merge", n(c.groups), Tone::Good),
        card("groups undecided", n(c.undecided), warn_if(c.undecided)),
        card("vetoed (not duplicates)", n(c.vetoes), Tone::Plain),
        card("single contacts", singles.to_string(), Tone::Plain),
        card("rows without email", n(p.no_email.len()), Tone::Plain),
    ];
    if let Some(out) = at(top, "outside_domain").as_u64().filter(|&o| o > 0) {
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
    if let Some(l) = live {
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
    cards
}

/// What is left to do before a run, each with the command that does it (nothing when
/// nothing is left).
fn before_approving(page: &mut Page<'_>, cx: &Ctx<'_>, undecided: usize) -> io::Result<()> {
    let (r, p) = (cx.r, cx.r.plan);
    let review = cx.review.display();
    let mut todo: Vec<(String, Option<String>)> = Vec::new();
    if undecided > 0 {
        todo.push((
            format!(
                "{undecided} group(s) undecided: decide them in the review file (keep / merge / \
                 not-dup on each row), then preview again with it:"
            ),
            Some(format!(
                "devrev-merge --csv {} --preview --decisions {review}",
                p.source
            )),
        ));
    }
    if r.live_check.is_none() && !p.pairs.is_empty() {
        todo.push((
            "The pairs were not checked against DevRev: check them as they stand now (and see \
             what the carry-over would write and what conflicts):"
                .into(),
            Some(format!(
                "devrev-merge --csv {} --preview --check-live",
                p.source
            )),
        ));
    }
    if !r.held_by_savepoint.is_empty() {
        todo.push((
            format!(
                "{} pair(s) are held by the savepoint (restored earlier, or sharing a contact \
                 with another record): a run skips them.",
                r.held_by_savepoint.len()
            ),
            None,
        ));
    }
    if todo.is_empty() {
        return Ok(());
    }
    page.points("before", "Before approving", Tone::Warn, &todo)
}

/// The pairs, one card each (the first [`MOST_CARDS`] of them).
fn pair_cards(page: &mut Page<'_>, cx: &Ctx<'_>) -> io::Result<()> {
    let (r, p) = (cx.r, cx.r.plan);
    let live_by_email: HashMap<&str, &crate::planfile::LiveResult> = r
        .live_check
        .map(|l| l.results.iter().map(|x| (x.email.as_str(), x)).collect())
        .unwrap_or_default();
    let t = pairs_table(r.live_check.is_some());
    let shown = p.pairs.len().min(MOST_CARDS);
    page.begin_cards(&t, shown)?;
    for pair in &p.pairs[..shown] {
        let mut row = serde_json::to_value(pair).map_err(io::Error::other)?;
        let (decision, why) = match cx.by_email.get(pair.email.as_str()) {
            Some(o) => outcome_words(o),
            None => (
                "merge".to_string(),
                format!(
                    "a clean pair: one REVU- and one user_ contact share the email; the plan's \
                     rule (keep {}) keeps the first",
                    figure(at(&cx.top, "keep"))
                ),
            ),
        };
        if let Some(m) = row.as_object_mut() {
            m.insert("decision".into(), Value::String(decision));
            m.insert("why".into(), Value::String(why));
            if let Some(a) = &cx.org.app {
                m.insert("app".into(), Value::String(a.clone()));
            }
            if r.live_check.is_none() {
                m.insert("not_in_export".into(), Value::String(NOT_IN_EXPORT.into()));
            }
            if let Some(l) = live_by_email.get(pair.email.as_str()) {
                if let Some(c) = &l.would_carry {
                    m.insert(
                        "carry".into(),
                        serde_json::to_value(c).map_err(io::Error::other)?,
                    );
                }
                if let Some(t) = &l.turned {
                    m.insert(
                        "why".into(),
                        Value::String(format!("--keep auto turned it: {t}")),
                    );
                }
            }
        }
        page.row(&t, &row)?;
    }
    page.end_table()?;
    more(page, p.pairs.len(), shown, "pairs", cx.json)
}

/// The groups that need a person, one card each (the first [`MOST_CARDS`] of them).
fn review_cards(page: &mut Page<'_>, cx: &Ctx<'_>) -> io::Result<()> {
    let p = cx.r.plan;
    let t = review_table();
    let shown = p.needs_review.len().min(MOST_CARDS);
    page.begin_cards(&t, shown)?;
    for g in &p.needs_review[..shown] {
        page.row(&t, &review_row(cx, g)?)?;
    }
    page.end_table()?;
    more(page, p.needs_review.len(), shown, "groups", cx.json)
}

/// One needs-review group as its card reads it: the reason in words, the decision and the
/// refs a merge would leave without a contact.
fn review_row(cx: &Ctx<'_>, g: &ReviewGroup) -> io::Result<Value> {
    let mut row = serde_json::to_value(g).map_err(io::Error::other)?;
    let Some(m) = row.as_object_mut() else {
        return Ok(row);
    };
    // The reason in words, never its code (the card's details show the row as it is).
    m.insert(
        "reason".into(),
        Value::String(plain_reason(g.reason).into()),
    );
    m.insert(
        "proposal".into(),
        Value::String(proposal_words(&cx.proposer.propose_review(g), g)),
    );
    if let Some(a) = &cx.org.app {
        m.insert("app".into(), Value::String(a.clone()));
    }
    let outcome = cx.by_email.get(g.email.as_str());
    let (decision, detail) = match outcome {
        Some(o) => outcome_words(o),
        None => (
            "undecided".to_string(),
            "no decisions file given: decide it in the review file".to_string(),
        ),
    };
    m.insert("decision".into(), Value::String(decision));
    m.insert("decided".into(), Value::String(detail));
    if let Some(Outcome::Merge {
        merge, adopt_ref, ..
    }) = outcome
    {
        let lost: Vec<String> = g
            .contacts
            .iter()
            .filter(|c| merge.contains(&c.rev_user_id))
            .filter(|c| adopt_ref.as_deref() != Some(c.rev_user_id.as_str()))
            .map(|c| {
                format!(
                    "{} ref {}",
                    crate::detect::display_id(&c.rev_user_id),
                    c.external_ref
                )
            })
            .collect();
        if !lost.is_empty() {
            m.insert("lost".into(), Value::String(lost.join("\n")));
        }
    }
    Ok(row)
}

/// Where a card would list the contacts' phones, custom fields and tags: the export holds
/// none of them, only DevRev does.
const NOT_IN_EXPORT: &str =
    "not in the export: run --preview --check-live to see them and what the merge carries over";

/// Why a group needs a person, in words a reviewer reads without the code's glossary.
fn plain_reason(r: ReviewReason) -> &'static str {
    match r {
        ReviewReason::DuplicateId => {
            "the same contact id is on several rows of the export: the export needs fixing first"
        }
        ReviewReason::DropRef => {
            "one contact is what an earlier merge left behind (its ref holds -drop-): it is \
             never merged again, and no rule says what to do with the others"
        }
        ReviewReason::OtherRef => {
            "a contact's ref is neither DevRev's (REVU-) nor your app's (user_), so no rule \
             says which contact should survive"
        }
        ReviewReason::SeveralRevu => {
            "several contacts DevRev created (REVU-) share this email: no rule says which one \
             survives"
        }
        ReviewReason::RevuWithSeveralUser => {
            "one contact DevRev created (REVU-) and several that your app created (user_) share \
             this email: only a person can say which are the same customer"
        }
        ReviewReason::SeveralUser => {
            "several contacts your app created (user_), and none DevRev created, share this \
             email: no rule says which one survives"
        }
        ReviewReason::LiveNotFound => "a contact no longer exists in DevRev",
        ReviewReason::LiveNotActive => {
            "a contact is not active in DevRev (deactivated, deleted or locked)"
        }
        ReviewReason::LiveAlreadyMerged => "a contact already shows as merged in DevRev",
        ReviewReason::LiveEmailChanged => {
            "a contact's email in DevRev no longer matches the export"
        }
        ReviewReason::LiveRefChanged => "a contact's ref in DevRev differs from the export",
        ReviewReason::LiveUnverifiedIntoVerified => {
            "DevRev refuses to merge an unverified contact into a verified one"
        }
        ReviewReason::LiveDifferentAccounts => {
            "the contacts belong to different customer accounts in DevRev"
        }
        ReviewReason::LiveFieldsUnknown => {
            "DevRev's answer lacked what a merge is judged by (verified, custom fields, tags): \
             checked again by the next preview or run"
        }
        ReviewReason::LiveCheckFailed => {
            "the live check failed (an API error after retries): run the preview again"
        }
    }
}

/// The review file's proposal for a group in one line: who survives, who merges into it,
/// who is left alone, and the rule that decided (or why nothing is proposed).
fn proposal_words(p: &Proposal, g: &ReviewGroup) -> String {
    let id = |d: &str| crate::detect::display_id(d);
    let Some(keep) = &p.keep else {
        return format!("nothing: {}", p.why);
    };
    let mut s = format!(
        "keep {}, merge {} into it. Why: {}",
        id(keep),
        p.merge.iter().map(|m| id(m)).collect::<Vec<_>>().join(", "),
        p.why
    );
    let alone: Vec<String> = g
        .contacts
        .iter()
        .filter(|c| c.rev_user_id != *keep && !p.merge.contains(&c.rev_user_id))
        .map(|c| id(&c.rev_user_id))
        .collect();
    if !alone.is_empty() {
        s.push_str(&format!(". Left alone: {}", alone.join(", ")));
    }
    s
}

/// The live check's results (with --check-live) and the rows without an email, as tables.
fn other_lists(page: &mut Page<'_>, cx: &Ctx<'_>) -> io::Result<()> {
    let p = cx.r.plan;
    if let Some(l) = cx.r.live_check {
        let shown = l.results.len().min(MOST_CARDS);
        row_each(page, &live_table(), &l.results[..shown])?;
        more(page, l.results.len(), shown, "live checks", cx.json)?;
    }
    let shown = p.no_email.len().min(MOST_CARDS);
    row_each(page, &no_email_table(), &p.no_email[..shown])?;
    more(page, p.no_email.len(), shown, "rows", cx.json)
}

/// The estimate, the live check's figures and the plan's other fields, for whoever asks
/// (hidden in print).
fn details(page: &mut Page<'_>, cx: &Ctx<'_>, live: Option<&Value>) -> io::Result<()> {
    page.kv_section("estimate", "Estimate", at(&cx.top, "estimate"))?;
    if let Some(l) = live {
        page.kv_section("live", "Live check", l)?;
    }
    let mut rest = cx.top.clone();
    if let Some(m) = rest.as_object_mut() {
        m.remove("estimate");
        // The groups a person decides, counted by why in words (the JSON keeps the codes).
        if let Some(Value::Object(counts)) = m.remove("review_counts") {
            let by_why: serde_json::Map<String, Value> = counts
                .into_iter()
                .map(|(code, n)| {
                    let why = serde_json::from_value::<ReviewReason>(Value::String(code.clone()))
                        .map_or_else(|_| super::words(&code), |r| plain_reason(r).to_string());
                    (why, n)
                })
                .collect();
            m.insert(
                "groups that need a decision, by why".into(),
                Value::Object(by_why),
            );
        }
    }
    page.kv_section("details", "Plan details", &rest)
}

/// The note under a list cut at [`MOST_CARDS`]: where the rest is.
fn more(
    page: &mut Page<'_>,
    total: usize,
    shown: usize,
    what: &str,
    json: &Path,
) -> io::Result<()> {
    if total > shown {
        page.para(
            "note more",
            &format!(
                "The first {shown} of {total} {what} are shown. The full list is in the plan {} \
                 and the review file beside it (one line each, for a spreadsheet or grep).",
                json.file_name().unwrap_or_default().to_string_lossy()
            ),
        )?;
    }
    Ok(())
}

/// The plan in one sentence, in the manner of `terraform plan`: "20 pairs and 4 groups (6
/// contacts) to merge, 2 groups undecided, 1 veto; about 33 s at 45 calls/min".
fn lead_sentence(c: &Tally, est: &Value) -> String {
    let Tally {
        pairs,
        groups,
        group_contacts,
        undecided,
        vetoes,
        left,
    } = *c;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = match (pairs, groups) {
        (0, 0) => "Nothing to merge".to_string(),
        (p, 0) => format!("{} to merge", plural(p, "pair", "pairs")),
        (0, g) => format!(
            "{} ({group_contacts} contacts) to merge",
            plural(g, "group", "groups")
        ),
        (p, g) => format!(
            "{} and {} ({group_contacts} contacts) to merge",
            plural(p, "pair", "pairs"),
            plural(g, "group", "groups")
        ),
    };
    if undecided > 0 {
        s.push_str(&format!(
            ", {} undecided",
            plural(undecided, "group", "groups")
        ));
    }
    if vetoes > 0 {
        s.push_str(&format!(", {}", plural(vetoes, "veto", "vetoes")));
    }
    if left > 0 {
        s.push_str(&format!(", {} left alone", plural(left, "group", "groups")));
    }
    if pairs + groups > 0 {
        let calls = at(est, "rate_limit_calls").as_f64().unwrap_or(0.0);
        let period = at(est, "rate_limit_period_s").as_f64().unwrap_or(60.0);
        let per_min = if period > 0.0 {
            calls * 60.0 / period
        } else {
            0.0
        };
        s.push_str(&format!(
            "; about {} at {} calls/min",
            duration(at(est, "seconds").as_f64().unwrap_or(0.0)),
            (per_min * 10.0).round() / 10.0
        ));
    }
    s.push('.');
    s
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    /// Clean pairs that merge.
    pairs: usize,
    /// Other groups that merge, and their contacts (survivors included).
    groups: usize,
    group_contacts: usize,
    undecided: usize,
    vetoes: usize,
    /// Skipped, stale, or recorded as skipped.
    left: usize,
}

/// What the plan comes to, with the decisions if any (a clean pair is a group of the
/// decisions too: counted as a pair).
fn tally(p: &crate::detect::Plan, decided: Option<&Decided>) -> Tally {
    let Some(d) = decided else {
        return Tally {
            pairs: p.pairs.len(),
            undecided: p.needs_review.len(),
            ..Tally::default()
        };
    };
    let pair_emails: std::collections::HashSet<&str> =
        p.pairs.iter().map(|x| x.email.as_str()).collect();
    let mut t = Tally::default();
    let mut decided_pairs = std::collections::HashSet::new();
    for (_, e, o) in &d.groups {
        let is_pair = pair_emails.contains(e.as_str());
        if is_pair {
            decided_pairs.insert(e.as_str());
        }
        match o {
            Outcome::Merge { .. } if is_pair => t.pairs += 1,
            Outcome::Merge { merge, .. } => {
                t.groups += 1;
                t.group_contacts += 1 + merge.len();
            }
            Outcome::NotDup { .. }
            | Outcome::Recorded {
                decision: crate::merge::journal::LastingDecision::NotDup,
                ..
            } => t.vetoes += 1,
            Outcome::Undecided => t.undecided += 1,
            Outcome::Skipped | Outcome::Stale { .. } | Outcome::Recorded { .. } => t.left += 1,
        }
    }
    // Pairs the decisions do not name merge by the plan's rule.
    t.pairs += pair_emails.len() - decided_pairs.len();
    t
}

/// A decision in words: what happens, and where it came from.
fn outcome_words(o: &Outcome) -> (String, String) {
    let id = |d: &str| crate::detect::display_id(d);
    match o {
        Outcome::Merge {
            keep,
            merge,
            adopt_ref,
            source,
        } => {
            let from = match source {
                Source::Typed => "typed in the decisions file",
                Source::Proposed => "the review file's proposal (--accept-proposed)",
                Source::CleanPairRule => "the clean-pair rule",
            };
            let mut d = format!(
                "keep {}, merge {} into it; {from}",
                id(keep),
                merge.iter().map(|m| id(m)).collect::<Vec<_>>().join(", ")
            );
            if let Some(a) = adopt_ref {
                d.push_str(&format!("; the survivor takes the ref of {}", id(a)));
            }
            ("merge".into(), d)
        }
        Outcome::NotDup { line } => (
            "not duplicates".into(),
            format!("not-dup on line {line} of the decisions file: never merged"),
        ),
        Outcome::Skipped => ("skipped".into(), "decided: nothing to merge".into()),
        Outcome::Undecided => ("undecided".into(), "nobody decided it: left alone".into()),
        Outcome::Stale { reason } => (
            "left alone (changed)".into(),
            format!("a contact changed since the review file was written: {reason}"),
        ),
        Outcome::Recorded { decision, at, file } => (
            decision.word().replace(['-', '_'], " "),
            format!(
                "recorded in the savepoint on {} from {}",
                super::local_time(&at.to_rfc3339()),
                file.display()
            ),
        ),
    }
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
