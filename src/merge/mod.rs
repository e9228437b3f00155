//! Running the plan (`--csv contacts.csv`): every clean pair through its saga, journaled in
//! the savepoint, with confirmation, a canary limit, Ctrl-C handling, progress and a report.
//!
//! Order of a run: read the plan (offline) → lock and read the savepoint → check the token
//! and show the org (`auth-tokens.info`) → ask for confirmation → pairs one by one → report.
//! Pairs whose merge is already in flight (requested in an earlier run and not finished) go
//! first, even if they have since left the CSV: a requested merge cannot be undone, so it is
//! always carried through Reconcile. Pairs that left the CSV before their merge was requested
//! are left alone and listed in the report.

pub mod journal;
pub mod report;
pub mod saga;
pub mod savepoint;

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::watch;
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::config::Config;
use crate::detect::{self, DetectOptions, Pair};
use crate::devrev::DevRevClient;
use crate::devrev::types::Organization;
use crate::error::AppError;
use crate::fsutil;
use crate::output;
use report::{EntryStatus, MergeReport, PairEntry, RunOutcome};
use saga::{PairResult, PairRun, SagaCtx};
use savepoint::{PairRecord, Savepoint, pair_key};

/// Ctrl-C as the saga sees it: the first press asks to stop after the current step, the
/// second to stop at once.
#[derive(Debug, Clone)]
pub struct StopSignal {
    rx: watch::Receiver<u8>,
}

impl StopSignal {
    /// A signal and the sender that raises it (tests and the Ctrl-C listener).
    pub fn new() -> (watch::Sender<u8>, Self) {
        let (tx, rx) = watch::channel(0);
        (tx, Self { rx })
    }

    /// True once Ctrl-C was pressed at least once.
    pub fn requested(&self) -> bool {
        *self.rx.borrow() >= 1
    }

    /// Resolves at the first Ctrl-C.
    pub async fn soft(&self) {
        self.wait(1).await;
    }

    /// Resolves at the second Ctrl-C.
    pub async fn hard(&self) {
        self.wait(2).await;
    }

    async fn wait(&self, n: u8) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|v| *v >= n).await.is_err() {
            // The listener is gone: no signal can come any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Listens for SIGINT for the rest of the run.
fn listen_for_ctrl_c(tx: watch::Sender<u8>) {
    tokio::spawn(async move {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            let n = tx.borrow().saturating_add(1);
            if n == 1 {
                tracing::warn!(
                    "Ctrl-C: finishing the current step, then stopping. Press Ctrl-C again to stop at once."
                );
            } else {
                tracing::warn!("Ctrl-C again: stopping now.");
            }
            let _ = tx.send(n);
        }
    });
}

/// One pair of the run, before it runs.
struct Item<'p> {
    key: String,
    pair: Option<&'p Pair>,
    /// Resumed with a merge already requested: finished first, never held back by
    /// `--max-merges`.
    in_flight: bool,
}

/// The merge run. `Ok(())` only when every clean pair is merged (or already was).
pub async fn run(cfg: &Config, csv: &Path) -> Result<(), AppError> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let run_id = format!(
        "{}-{:06x}",
        fsutil::stamp(),
        rand::random::<u32>() & 0xff_ffff
    );

    // A zero timeout would make "not merged a full --merge-timeout after the request" true
    // at once, and a lost answer could then lead to a second merge request.
    if cfg.merge_timeout.is_zero() {
        return Err(AppError::Config(
            "--merge-timeout 0 is not allowed: DevRev applies merges after a delay, so the run \
             must be able to wait for one (default 120 s)"
                .into(),
        ));
    }
    let plan = detect::plan_from_csv(
        csv,
        &DetectOptions {
            keep: cfg.keep,
            email_domain: cfg.email_domain.clone(),
        },
    )?;
    let client_cfg = cfg.client_config()?;
    let mut sp = Savepoint::open(&cfg.savepoint)?;
    let client = DevRevClient::new(client_cfg)?;

    // ---- what to run -------------------------------------------------------------------
    let mut entries: Vec<PairEntry> = Vec::new();
    let mut in_flight = Vec::new();
    let mut fresh = Vec::new();
    let mut plan_keys = BTreeSet::new();
    for pair in &plan.pairs {
        let (p, s) = (&pair.primary.rev_user_id, &pair.secondary.rev_user_id);
        let key = pair_key(p, s);
        plan_keys.insert(key.clone());
        let reversed = pair_key(s, p);
        if let Some(rev) = sp.get(&reversed) {
            // The same two contacts with primary and secondary swapped (`--keep` changed).
            // What was started that way is finished that way: going the other way now could
            // merge them twice.
            plan_keys.insert(reversed.clone());
            if rev.status.is_final() {
                entries.push(PairEntry::from_record(rev, true));
                continue;
            }
            if rev.merge_in_flight() {
                in_flight.push(Item {
                    key: reversed,
                    pair: None,
                    in_flight: true,
                });
                continue;
            }
            // Nothing was sent to DevRev under the old roles: run with the new ones.
        }
        match sp.get(&key) {
            Some(rec) if rec.status.is_final() => entries.push(PairEntry::from_record(rec, true)),
            Some(rec) if rec.merge_in_flight() => in_flight.push(Item {
                key,
                pair: Some(pair),
                in_flight: true,
            }),
            _ => fresh.push(Item {
                key,
                pair: Some(pair),
                in_flight: false,
            }),
        }
    }
    for (key, rec) in &sp.file().pairs {
        if plan_keys.contains(key) {
            continue;
        }
        if rec.merge_in_flight() && !rec.status.is_final() {
            in_flight.push(Item {
                key: key.clone(),
                pair: None,
                in_flight: true,
            });
        } else {
            // Finished earlier (reported as such), or never merged and now out of the CSV
            // (reported as `left_csv`, not counted as a failure).
            let mut e = PairEntry::from_record(rec, false);
            if !rec.status.is_final() {
                e.status = EntryStatus::LeftCsv;
            }
            entries.push(e);
        }
    }
    let work: Vec<Item> = in_flight.into_iter().chain(fresh).collect();
    if !entries.is_empty() || !work.is_empty() {
        tracing::info!(
            "plan: {} clean pair(s), {} to run, {} finished earlier",
            plan.pairs.len(),
            work.len(),
            entries.iter().filter(|e| e.status.is_done()).count()
        );
    }

    // ---- org and confirmation -----------------------------------------------------------
    let info = client.auth_tokens_info().await?;
    if !work.is_empty() {
        confirm(cfg, &info.organization, &work, &sp)?;
    }

    // ---- the pairs ------------------------------------------------------------------------
    let (tx, stop) = StopSignal::new();
    listen_for_ctrl_c(tx);
    let ctx = SagaCtx {
        client: &client,
        scope: cfg.backup_scope,
        backup_root: &cfg.backup_dir,
        run_id: &run_id,
        merge_timeout: cfg.merge_timeout,
        min_backoff: cfg.min_backoff,
        stop: &stop,
    };
    // Entered once to show the bar, then updated from outside: log lines written during the
    // run stay free of the span's name, and the bar is cleared when the span is dropped.
    let span = crate::progress_span!("merging", work.len());
    span.in_scope(|| {});
    let mut outcome = RunOutcome::Completed;
    let mut fatal: Option<AppError> = None;
    let mut merges_sent = 0usize;
    let mut ran: Vec<(String, Option<PairRun>)> = Vec::new();
    async {
        for item in &work {
            if stop.requested() {
                outcome = RunOutcome::Interrupted;
                break;
            }
            if let Some(max) = cfg
                .max_merges
                .filter(|m| merges_sent >= *m && !item.in_flight)
            {
                tracing::info!(
                    "--max-merges {max} reached: stopping; re-run to continue with the rest"
                );
                outcome = RunOutcome::MaxMergesReached;
                break;
            }
            let email = item
                .pair
                .map(|p| p.email.clone())
                .or_else(|| sp.get(&item.key).map(|r| r.email.clone()))
                .unwrap_or_default();
            span.pb_set_message(&email);
            if sp.get(&item.key).is_none() {
                let pair = item
                    .pair
                    .expect("a pair without a record comes from the CSV");
                let rec = PairRecord::new(
                    &pair.email,
                    &pair.primary.rev_user_id,
                    &pair.secondary.rev_user_id,
                    cfg.keep,
                );
                if let Err(e) = sp.put(&item.key, rec) {
                    fatal = Some(e.into());
                    break;
                }
            }
            let res = tokio::select! {
                biased;
                _ = stop.hard() => None,
                r = saga::run_pair(&ctx, &mut sp, &item.key, item.pair) => Some(r),
            };
            match res {
                None => {
                    // Dropped mid-step: every savepoint change is written as it is made, so
                    // the journal is as consistent as after a crash.
                    ran.push((item.key.clone(), None));
                    outcome = RunOutcome::Interrupted;
                    break;
                }
                Some(Err(e)) => {
                    tracing::error!(pair = %email, error = %e, "stopping the run");
                    ran.push((item.key.clone(), None));
                    fatal = Some(e);
                    break;
                }
                Some(Ok(run)) => {
                    if run.merge_sent {
                        merges_sent += 1;
                    }
                    log_result(&email, &run.result);
                    let interrupted = run.result == PairResult::Interrupted;
                    ran.push((item.key.clone(), Some(run)));
                    span.pb_inc(1);
                    if interrupted {
                        outcome = RunOutcome::Interrupted;
                        break;
                    }
                }
            }
        }
    }
    .await;
    drop(span);
    if fatal.is_some() {
        outcome = RunOutcome::Aborted;
    }

    // ---- report -----------------------------------------------------------------------
    let ran_keys: BTreeSet<&str> = ran.iter().map(|(k, _)| k.as_str()).collect();
    for (key, run) in &ran {
        if let Some(rec) = sp.get(key) {
            let in_csv = plan_keys.contains(key);
            entries.push(PairEntry::from_run(rec, run.as_ref(), in_csv));
        }
    }
    for item in &work {
        if !ran_keys.contains(item.key.as_str()) {
            let mut e = match (sp.get(&item.key), item.pair) {
                (Some(rec), _) => PairEntry::from_record(rec, item.pair.is_some()),
                (None, Some(pair)) => PairEntry::from_pair(pair),
                (None, None) => continue,
            };
            e.status = EntryStatus::NotStarted;
            entries.push(e);
        }
    }
    let report = MergeReport::build(report::BuildInput {
        run_id: &run_id,
        started_at,
        elapsed: t0.elapsed(),
        outcome,
        organization: Some(info.organization.clone()),
        cfg,
        csv,
        plan: &plan,
        entries,
        client: &client,
    });
    let path = report::write(&cfg.report_dir, &report)?;
    // The run is over and the report is on disk: a failed stdout write must not hide how
    // the run went, so it is only warned about (a closed pipe is not even that).
    if cfg.json
        && let Err(e) = output::json(&report)
    {
        tracing::warn!("{e}; the report is in {}", path.display());
    }
    if !cfg.quiet {
        report::print_summary(&report, &path, &cfg.savepoint);
    }

    if let Some(e) = fatal {
        return Err(e);
    }
    let s = &report.summary;
    if outcome == RunOutcome::Interrupted {
        return Err(AppError::Interrupted(format!(
            "interrupted. The savepoint {} is consistent: re-run the same command to resume.",
            cfg.savepoint.display()
        )));
    }
    let bad = s.failed + s.skipped + s.unconfirmed;
    if bad > 0 {
        return Err(AppError::SomeFailed(format!(
            "{} pair(s) failed, {} skipped, {} unconfirmed; see {}",
            s.failed,
            s.skipped,
            s.unconfirmed,
            path.display()
        )));
    }
    Ok(())
}

fn log_result(email: &str, r: &PairResult) {
    match r {
        PairResult::Merged => tracing::info!(pair = %email, "merged"),
        PairResult::AlreadyMerged => tracing::info!(pair = %email, "already merged"),
        PairResult::Skipped(reason) => tracing::warn!(pair = %email, %reason, "skipped"),
        PairResult::Failed(error) => tracing::warn!(pair = %email, %error, "failed"),
        PairResult::Unconfirmed => tracing::warn!(pair = %email, "merge not confirmed yet"),
        PairResult::Interrupted => {
            tracing::info!(pair = %email, "interrupted; resumes on the next run")
        }
    }
}

/// Shows what is about to happen and asks. `--yes` skips the question; without a terminal
/// there is nobody to ask, so the run is refused.
fn confirm(
    cfg: &Config,
    org: &Organization,
    work: &[Item],
    sp: &Savepoint,
) -> Result<(), AppError> {
    let org_name = [org.display_id.as_deref(), org.slug.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ");
    let resumed = work.iter().filter(|i| sp.get(&i.key).is_some()).count();
    let mut text = String::new();
    text.push_str(&format!(
        "DevRev organization: {} ({})\n",
        if org_name.is_empty() { "?" } else { &org_name },
        if org.id.is_empty() { "?" } else { &org.id }
    ));
    text.push_str(&format!(
        "Pairs to merge:      {} ({} resumed from {})\n",
        work.len(),
        resumed,
        cfg.savepoint.display()
    ));
    if let Some(m) = cfg.max_merges {
        text.push_str(&format!(
            "Canary:              stop after {m} merge(s) (--max-merges)\n"
        ));
    }
    text.push_str(&format!(
        "Backups go to:       {}\n",
        cfg.backup_dir.display()
    ));
    if cfg.yes {
        // -q asks for errors only; with --yes nobody reads the question anyway.
        if !cfg.quiet {
            output::human(&text);
        }
        return Ok(());
    }
    output::human(&text);
    if !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(
            "refusing to merge without confirmation: no terminal to ask on. Check the organization \
             and counts above, then re-run with --yes."
                .into(),
        ));
    }
    output::human("Merges cannot be undone. Type \"yes\" to continue: ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| AppError::io("cannot read the confirmation", e))?;
    if answer.trim().eq_ignore_ascii_case("yes") {
        Ok(())
    } else {
        Err(AppError::Usage(
            "not confirmed; nothing was changed.".into(),
        ))
    }
}
