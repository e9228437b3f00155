//! Undoing merges (`--restore FOLDER|REPORT... [--preview]`): DevRev has no unmerge, so a
//! merged-away contact is recreated from its backup and put back on its tickets and
//! conversations, with the same discipline as the merge run: a plan first, a journal, resume
//! after any crash, a report.
//!
//! Order: read and verify every input offline (`input.rs`; a bad folder stops here, exit 65)
//! → check the token's organization against the inputs' → lock the restore savepoint
//! (`journal.rs`) → confirm → one saga per pair (`saga.rs`) → report (`report.rs`).
//! This feature uses `backup` (read and verify folders), `devrev`, `fsutil` and `output`;
//! with the merge run it shares the file formats it reads and the merge savepoint, which it
//! locks for its whole run and marks every restored pair in (`merge_record.rs`), so that no
//! later merge run merges those contacts again.

mod carry;
pub mod input;
pub mod journal;
pub mod merge_record;
pub mod report;
pub mod saga;
mod stop;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::config::Config;
use crate::devrev::DevRevClient;
use crate::devrev::types::Organization;
use crate::error::AppError;
use crate::merge::report::ApiFigures;
use crate::output;
use input::{Inputs, Item};
use journal::{Journal, RestoreRecord, RestoreStatus};
use merge_record::MergeRecords;
use report::{Entry, EntryStatus, RestoreReport, Summary};
use saga::{PairEnd, StopReason};

/// The restore savepoint: `restore-savepoint.json` in the folder of `--savepoint`.
pub fn journal_path(cfg: &Config) -> PathBuf {
    cfg.savepoint.with_file_name(journal::FILE_NAME)
}

/// The restore command. `Ok` only when every pair the inputs name is restored.
pub async fn run(cfg: &Config, inputs: &[PathBuf], preview: bool) -> Result<(), AppError> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let inp = input::resolve(inputs, cfg.all_in_report)?;
    if inp.items.is_empty() {
        return Err(AppError::Data(format!(
            "nothing to restore: {} pair(s) named, none merged with a backup ({})",
            inp.not_merged.len(),
            inp.not_merged
                .iter()
                .map(|n| format!("{}: {}", n.email, n.why))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    if preview {
        return show_preview(cfg, &inp).await;
    }
    let client = DevRevClient::new(cfg.client_config()?)?;
    let info = client.auth_tokens_info().await?;
    check_org(&info.organization, &inp)?;
    // The merge savepoint first: no merge run may start (or be running) while pairs are
    // given back, and each restored pair is marked there.
    let mut records = MergeRecords::open(&cfg.savepoint)?;
    let mut j = Journal::open(&journal_path(cfg))?;
    let todo = inp
        .items
        .iter()
        .filter(|i| {
            j.get(&i.key())
                .is_none_or(|r| r.status != RestoreStatus::Restored)
                && records.refusal(i).is_none()
        })
        .count();
    if todo > 0 {
        confirm(cfg, &info.organization, todo, &inp, &j)?;
    }
    let (ends, fatal) = execute(&client, &mut j, &mut records, &inp.items).await;

    let mut pairs: Vec<Entry> = inp
        .items
        .iter()
        .zip(ends.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(item, end)| entry(&j, item, end))
        .collect();
    pairs.extend(inp.not_merged.iter().map(Entry::not_merged));
    let summary = Summary::of(&pairs);
    let api_calls = client.totals().calls;
    let r = RestoreReport {
        report_version: 1,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        finished_at: Utc::now(),
        duration_s: t0.elapsed().as_secs_f64(),
        organization: info.organization,
        inputs: inputs.to_vec(),
        savepoint: j.path().to_path_buf(),
        id_map: pairs
            .iter()
            .filter_map(|e| Some((e.old_secondary.clone(), e.new_secondary.clone()?)))
            .collect(),
        api_calls,
        api: ApiFigures::of(&client, cfg, t0.elapsed().as_secs_f64(), summary.restored),
        api_calls_per_restored_pair: if summary.restored == 0 {
            0.0
        } else {
            (api_calls as f64 / summary.restored as f64 * 10.0).round() / 10.0
        },
        pairs,
        summary,
    };
    let path = report::write(&cfg.report_dir, &r)?;
    let marked: Vec<&Item> = inp
        .items
        .iter()
        .zip(&ends)
        .filter(|(_, e)| matches!(e, PairEnd::Restored | PairEnd::Earlier))
        .map(|(i, _)| i)
        .collect();
    records.note_report(&marked, &path)?;
    // The page for people: a failure is warned about, the restore stands.
    let html = crate::html::written_or_warn(&path, crate::html::write_restore(&path, &r));
    cfg.printer.note(&report::summary_text(&r, &path));
    if let Some(p) = &html {
        cfg.printer.note(&format!("HTML report: {}\n", p.display()));
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    if r.summary.all_done() {
        Ok(())
    } else {
        let unfinished = r.summary.failed + r.summary.not_started;
        Err(AppError::SomeFailed(format!(
            "{} pair(s) skipped and {unfinished} failed (see {}){}",
            r.summary.skipped,
            path.display(),
            if unfinished > 0 {
                "; nothing is lost: re-run the same command to resume failed pairs"
            } else {
                "; a skipped pair was refused by the live check (its reason is in the report): \
                 re-running does not change that"
            }
        )))
    }
}

/// One saga per pair, with a progress bar; stops at the first run-wide error. Ctrl-C once
/// stops after the pair in hand, twice stops at once: every write is journaled, so dropping
/// a saga mid-way is as safe as a crash, and the next run resumes it.
async fn execute(
    client: &DevRevClient,
    j: &mut Journal,
    records: &mut MergeRecords,
    items: &[Item],
) -> (Vec<PairEnd>, Option<AppError>) {
    let (tx, presses) = tokio::sync::watch::channel(0u8);
    // Registered here, before the first pair, so no Ctrl-C meets the default handler.
    let ctrl_c = crate::platform::CtrlC::listen();
    let listener = tokio::spawn(async move {
        let Ok(mut ctrl_c) = ctrl_c else { return };
        while ctrl_c.pressed().await.is_some() {
            let n = tx.borrow().saturating_add(1);
            if n == 1 {
                tracing::warn!(
                    "Ctrl-C: finishing the current pair, then stopping. Press Ctrl-C again to stop at once."
                );
            }
            let _ = tx.send(n);
        }
    });
    let span = crate::progress_span!("restoring", items.len());
    let _entered = span.enter();
    let mut ends = Vec::new();
    let mut stop = None;
    for item in items {
        if *presses.borrow() >= 1 {
            stop = Some(interrupted());
            break;
        }
        span.pb_set_message(item.email());
        if let Some(why) = records.refusal(item) {
            let end = PairEnd::Skipped(why);
            log_end(item, &end);
            ends.push(end);
            span.pb_inc(1);
            continue;
        }
        let facts = records.facts(item);
        let mut second = presses.clone();
        let end = tokio::select! {
            r = saga::restore_pair(client, j, item, &facts) => r,
            () = async {
                // No listener any more means no second press can come.
                if second.wait_for(|n| *n >= 2).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => Err(interrupted()),
        };
        // The merge savepoint learns of the restore as soon as it is done (and an earlier
        // run's restore that a crash kept from being marked is marked now).
        let end = match end {
            Ok(e @ (PairEnd::Restored | PairEnd::Earlier)) => {
                match j.get(&item.key()).and_then(|r| r.new_id.clone()) {
                    Some(new) => records.mark_restored(item, &new, j.path()).map(|()| e),
                    None => Ok(e),
                }
            }
            other => other,
        };
        match end {
            Ok(end) => {
                log_end(item, &end);
                ends.push(end);
            }
            Err(e) => {
                stop = Some(e);
                break;
            }
        }
        span.pb_inc(1);
    }
    listener.abort();
    (ends, stop)
}

fn interrupted() -> AppError {
    AppError::Interrupted(
        "restore interrupted (Ctrl-C); the restore savepoint is consistent: re-run the same \
         command to resume"
            .into(),
    )
}

fn log_end(item: &Item, end: &PairEnd) {
    match end {
        PairEnd::Restored => tracing::info!(email = item.email(), "restored"),
        PairEnd::Earlier => tracing::info!(email = item.email(), "restored earlier"),
        PairEnd::Skipped(w) => tracing::warn!(email = item.email(), "skipped: {w}"),
        PairEnd::Failed(w) => tracing::error!(email = item.email(), "failed: {w}"),
    }
}

fn entry(j: &Journal, item: &Item, end: Option<&PairEnd>) -> Entry {
    match (j.get(&item.key()), end) {
        (Some(r), Some(end)) => Entry::from_record(r, *end == PairEnd::Earlier),
        // Refused before its saga started (its merge is not finished): nothing was written.
        (None, Some(PairEnd::Skipped(why))) => {
            let mut rec = RestoreRecord::new(
                item.email(),
                &item.meta.primary_id,
                &item.meta.secondary_id,
                &item.dir,
            );
            rec.status = RestoreStatus::Skipped;
            rec.reason = Some(why.clone());
            Entry::from_record(&rec, false)
        }
        (rec, _) => {
            let fresh = RestoreRecord::new(
                item.email(),
                &item.meta.primary_id,
                &item.meta.secondary_id,
                &item.dir,
            );
            let mut e = Entry::from_record(rec.unwrap_or(&fresh), false);
            e.status = EntryStatus::NotStarted;
            e
        }
    }
}

/// The token's organization must be the one the backups (and reports) were taken in.
fn check_org(org: &Organization, inp: &Inputs) -> Result<(), AppError> {
    let mine = input::org_of(&org.id).unwrap_or_default();
    let other: Vec<&String> = inp.orgs.iter().filter(|o| **o != mine).collect();
    if other.is_empty() {
        return Ok(());
    }
    Err(AppError::Data(format!(
        "the inputs belong to another DevRev organization ({}) than the token's ({} {}); \
         nothing was changed. Use a token of the organization the merge ran in.",
        other
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        org.display_id.as_deref().unwrap_or("?"),
        org.id
    )))
}

/// Shows what is about to happen and asks; `--yes` skips the question.
fn confirm(
    cfg: &Config,
    org: &Organization,
    todo: usize,
    inp: &Inputs,
    j: &Journal,
) -> Result<(), AppError> {
    let text = format!(
        "DevRev organization: {} ({})\nPairs to restore:    {todo} of {} (journal {})\n",
        org.display_id.as_deref().unwrap_or("?"),
        org.id,
        inp.items.len(),
        j.path().display()
    );
    cfg.printer.confirm(
        cfg.yes,
        &text,
        "refusing to restore without confirmation: no terminal to ask on. Check the \
         organization and counts above (try --preview), then re-run with --yes.",
        "This recreates contacts and changes tickets. Type \"yes\" to continue: ",
    )
}

/// `--restore ... --preview`: the plan from the backups alone, then (with a token) each pair
/// checked read-only against DevRev. Writes nothing anywhere.
async fn show_preview(cfg: &Config, inp: &Inputs) -> Result<(), AppError> {
    let mut verdicts: Vec<Option<String>> = vec![None; inp.items.len()];
    let mut org_line = "offline (no DEVREV_API_TOKEN): not checked against DevRev".to_string();
    if cfg.token.is_some() {
        let client = DevRevClient::new(cfg.client_config()?)?;
        let info = client.auth_tokens_info().await?;
        check_org(&info.organization, inp)?;
        org_line = format!(
            "{} ({}), checked read-only",
            info.organization.display_id.as_deref().unwrap_or("?"),
            info.organization.id
        );
        let earlier = journal::peek(&journal_path(cfg)).unwrap_or_default();
        for (v, item) in verdicts.iter_mut().zip(&inp.items) {
            let rec = earlier.pairs.get(&item.key());
            if let Some(r) = rec.filter(|r| r.wrote_anything()) {
                *v = Some(match r.status {
                    RestoreStatus::Restored => "restored earlier (restore savepoint)".into(),
                    _ => "started earlier: a real run resumes it (restore savepoint)".into(),
                });
                continue;
            }
            *v = Some(match saga::check_live(&client, item).await {
                Ok(_) => "ready".to_string(),
                Err(StopReason::Refused(w)) => format!("refused: {w}"),
                Err(StopReason::Error(w)) => format!("cannot check: {w}"),
                Err(StopReason::Fatal(e)) => return Err(e),
            });
        }
    }
    output::data(|w| {
        writeln!(
            w,
            "Restore plan: {} pair(s); DevRev: {org_line}",
            inp.items.len()
        )?;
        for (item, v) in inp.items.iter().zip(&verdicts) {
            plan_lines(w, item, v.as_deref())?;
        }
        for n in &inp.not_merged {
            writeln!(w, "\n{}: nothing to undo ({})", n.email, n.why)?;
        }
        Ok(())
    })
}

fn plan_lines(w: &mut dyn Write, item: &Item, verdict: Option<&str>) -> std::io::Result<()> {
    let (p, s) = (&item.meta.primary, &item.meta.secondary);
    let old = item.meta.secondary_id.as_str();
    let name = |u: &crate::devrev::types::RevUser| u.display_id.clone().unwrap_or(u.id.clone());
    writeln!(w, "\n{} (backup {})", item.email(), item.dir.display())?;
    if let Some(v) = verdict {
        writeln!(w, "  live check:   {v}")?;
    }
    writeln!(
        w,
        "  recreate:     {} as a new contact: email {:?}, display name {:?}, external_ref {:?}",
        name(s),
        s.email.as_deref().unwrap_or(""),
        s.display_name.as_deref().unwrap_or(""),
        s.external_ref.as_deref().unwrap_or("")
    )?;
    if let Some(r) = &p.external_ref {
        writeln!(
            w,
            "  primary:      {} gets its own external_ref {r:?} back",
            name(p)
        )?;
    }
    let tickets: Vec<&str> = item
        .tickets
        .iter()
        .filter(|t| t.reported_by.iter().any(|u| u.id == old))
        .map(|t| t.label())
        .collect();
    let convs: Vec<&str> = item
        .conversations
        .iter()
        .filter(|c| c.members.iter().any(|u| u.id == old))
        .map(|c| c.label())
        .collect();
    writeln!(w, "  tickets:      {} {}", tickets.len(), tickets.join(" "))?;
    writeln!(w, "  conversations: {} {}", convs.len(), convs.join(" "))?;
    writeln!(
        w,
        "  cannot restore: the old id {} (a new one is assigned){}",
        name(s),
        if item.secondary_comments > 0 {
            format!(
                "; authorship of {} comment(s) (stays with the primary)",
                item.secondary_comments
            )
        } else {
            String::new()
        }
    )
}
