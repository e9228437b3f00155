//! `--csv FILE --preview [--check-live]`: build the plan, check it live on request, save it to
//! `reports/plan-<timestamp>.json` and show it (the tables are formatted in `preview.rs`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::detect::Plan;
use crate::detect::{self, DetectOptions};
use crate::error::AppError;
use crate::fsutil;
use crate::html;
use crate::merge::journal::{Hold, PairStatus, SavepointFile, SkipReason};
use crate::merge::{savepoint, schedule};
use crate::output;
use crate::planfile::{self, HeldPair, PlanReport};
use crate::preview::{TERMINAL_ROWS, check_live, estimate, print_human};
use crate::review;

/// Runs `--preview` for `csv`.
pub async fn run(cfg: &Config, csv: &Path, live: bool) -> Result<(), AppError> {
    // Without a token the live check cannot run: say so before reading a large file.
    if live {
        cfg.client_config()?;
    }
    let opts = DetectOptions {
        keep: cfg.keep,
        email_domain: cfg.email_domain.clone(),
    };
    let started = std::time::Instant::now();
    let mut plan = detect::plan_from_csv(csv, &opts)?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        rows = plan.rows_read,
        "plan built"
    );
    let live_summary = if live {
        Some(check_live(cfg, &mut plan).await?)
    } else {
        None
    };
    // The needs-review contacts' live facts, for the review file and its proposals.
    let facts = if live {
        let client = crate::devrev::DevRevClient::new(cfg.client_config()?)?;
        Some(
            review::live::read(&client, &plan)
                .await
                .map_err(AppError::Api)?,
        )
    } else {
        None
    };
    let mut journal = read_journal(cfg);

    // Decisions first: a bad one is refused (exit 65) before any file is written, so a
    // refused preview leaves no plan or review file behind. What the file decides that lasts
    // (not-dup, skip, revoke) is recorded in the savepoint now: the sample, the canary and
    // every later run honour it without the file.
    let decided = match &cfg.decisions {
        Some(file) => {
            let mut d = review::decisions::decide(file, &plan, cfg.keep, cfg.accept_proposed)?;
            if let Some(r) = journal.as_ref().map(|j| &j.decisions) {
                review::lasting::apply_recorded(&mut d, r);
            }
            journal = Some(review::lasting::record(&cfg.savepoint, &d, file)?);
            Some((file, d))
        }
        None => None,
    };
    let recorded = journal.as_ref().map(|j| &j.decisions);
    let held = held_by_savepoint(journal.as_ref(), &plan);
    let late = journal
        .as_ref()
        .map(review::lasting::late_vetoes)
        .unwrap_or_default();
    // Without decisions or a savepoint that holds anything, the run's pairs are the plan's:
    // no copy of a million-row plan's pairs is made for the estimate.
    let plain = decided.is_none()
        && journal
            .as_ref()
            .is_none_or(|j| j.pairs.is_empty() && j.decisions.is_empty());
    let est = if plain {
        estimate(&plan.pairs, cfg, live_summary.as_ref())
    } else {
        estimate(
            &runs_pairs(&plan, decided.as_ref().map(|(_, d)| d), journal.as_ref()),
            cfg,
            live_summary.as_ref(),
        )
    };

    let report = PlanReport {
        kind: "devrev-merge plan",
        format_version: 1,
        tool_version: env!("CARGO_PKG_VERSION"),
        generated_at: chrono::Local::now().to_rfc3339(),
        plan: &plan,
        review_counts: plan.review_counts(),
        estimate: &est,
        live_check: live_summary.as_ref(),
        held_by_savepoint: held,
    };
    let path = fsutil::unique_path(&cfg.report_dir, "plan", "json");
    let recorded_text = journal
        .as_ref()
        .map(review::lasting::recorded_text)
        .unwrap_or_default();
    let held_contacts = untouchable(journal.as_ref());
    let written = write_files(
        &Files {
            plan: path.clone(),
            review: fsutil::unique_path(&cfg.report_dir, "review", "csv"),
        },
        &report,
        decided.as_ref().map(|(_, d)| d),
        &review::Proposer {
            keep: cfg.keep,
            facts: facts.as_ref(),
            held: &held_contacts,
        },
        &recorded_text,
    );
    let (review_path, html_path) = written?;
    html::record_plan(&path, &report, decided.is_some());
    tracing::debug!(ms = started.elapsed().as_millis() as u64, path = %path.display(), "plan, review file and page written");
    if cfg.json {
        // The very bytes of the plan file: what is printed is what was saved.
        let mut saved = std::fs::File::open(&path).map_err(|e| {
            AppError::io(format!("cannot read back the plan {}", path.display()), e)
        })?;
        output::data(|w| io::copy(&mut saved, w).map(|_| ()))?;
    } else {
        let limit = output::stdout_is_terminal().then_some(TERMINAL_ROWS);
        output::data(|w| print_human(w, &plan, &est, live_summary.as_ref(), &path, limit))?;
        let mut text = held_text(&report.held_by_savepoint, &cfg.savepoint);
        if let Some(p) = &html_path {
            text.push_str(&format!(
                "HTML report (open in a browser): {}\n",
                p.display()
            ));
        }
        text.push_str(&format!(
            "Review file (decide every group in a spreadsheet, then --decisions FILE): {}\n",
            review_path.display()
        ));
        text.push_str(&review::lasting::groups_summary(
            &plan,
            decided.as_ref().map(|(_, d)| d),
            recorded,
        ));
        if let Some((file, d)) = &decided {
            text = review::decided_text(&plan, d, file) + &text;
        }
        text.push_str(&review::lasting::late_vetoes_text(&late));
        output::data(|w| w.write_all(text.as_bytes()))?;
    }
    if cfg.json {
        cfg.printer
            .note(&held_text(&report.held_by_savepoint, &cfg.savepoint));
        cfg.printer
            .note(&format!("Plan written to {}\n", path.display()));
        if let Some(p) = &html_path {
            cfg.printer.note(&format!("HTML report: {}\n", p.display()));
        }
        if let Some((file, d)) = &decided {
            cfg.printer.note(&review::decided_text(&plan, d, file));
        }
        cfg.printer
            .note(&format!("Review file: {}\n", review_path.display()));
        cfg.printer.note(&review::lasting::groups_summary(
            &plan,
            decided.as_ref().map(|(_, d)| d),
            recorded,
        ));
        cfg.printer.note(&review::lasting::late_vetoes_text(&late));
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "plan shown");
    let outcome = match &live_summary {
        Some(s) if s.errors > 0 => Err(AppError::SomeFailed(format!(
            "{} pair(s) could not be checked live (API errors after retries); they are listed \
             under needs review as live_check_failed in {}. Run the preview again to retry.",
            s.errors,
            path.display()
        ))),
        _ => Ok(()),
    };
    // The process ends right after this: freeing a million-row plan string by string costs
    // a noticeable fraction of the run and gives nothing back.
    std::mem::forget(plan);
    outcome
}

/// Where the preview writes its plan and its review file.
struct Files {
    plan: PathBuf,
    review: PathBuf,
}

/// Writes the plan file, the review file (every group, one row per contact) and the plan's
/// page at once, each on its own thread: for a million-row export the first two take about
/// half a second each, and none needs another (the page names the review file by the path
/// chosen before). A plan that cannot be written leaves neither of the others behind; a page
/// that cannot be written is warned about (the plan stands): its path is `None`.
fn write_files(
    to: &Files,
    report: &PlanReport,
    decided: Option<&review::decisions::Decided>,
    proposer: &review::Proposer<'_>,
    recorded_text: &BTreeMap<String, String>,
) -> Result<(PathBuf, Option<PathBuf>), AppError> {
    let plan = report.plan;
    let started = std::time::Instant::now();
    let done = |what: &str| {
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "{what} written");
    };
    let (plan_written, review_written, page_written) = std::thread::scope(|s| {
        let review = s.spawn(|| {
            let r = review::write(
                &to.review,
                plan,
                proposer.keep,
                recorded_text,
                proposer.facts,
                proposer.held,
            );
            done("review file");
            r
        });
        let page = s.spawn(|| {
            let p = html::write_plan(&to.plan, report, decided, proposer, &to.review);
            done("plan page");
            p
        });
        let plan_written =
            fsutil::write_private_atomic_with(&to.plan, false, |w| planfile::write(w, report));
        done("plan file");
        let stopped = |what: &str| format!("the {what}'s writer stopped unexpectedly");
        let review_written = review
            .join()
            .unwrap_or_else(|_| Err(AppError::CantCreate(stopped("review file"))));
        let page_written = page
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(stopped("plan page"))));
        (plan_written, review_written, page_written)
    });
    if let Err(e) = plan_written {
        // No review file and no page without their plan.
        if let Ok(r) = &review_written {
            let _ = std::fs::remove_file(r);
        }
        if let Ok(p) = &page_written {
            let _ = std::fs::remove_file(p);
        }
        return Err(AppError::CantCreate(format!(
            "cannot write the plan to {}: {e}",
            to.plan.display()
        )));
    }
    let review_path = match review_written {
        Ok(p) => p,
        Err(e) => {
            // The page names the review file: no page without it.
            if let Ok(p) = &page_written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    Ok((review_path, html::written_or_warn(&to.plan, page_written)))
}

/// The savepoint (`--savepoint`), read only and without the lock: a preview never blocks a
/// run. One that cannot be read is a warning here (the merge run refuses it with the
/// details).
fn read_journal(cfg: &Config) -> Option<SavepointFile> {
    match savepoint::load(&cfg.savepoint) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(
                "the savepoint cannot be read, so the plan does not show what it holds: {e}"
            );
            None
        }
    }
}

/// The clean pairs a merge run would not start because of the savepoint (`--savepoint`), by
/// the very rule the run uses (`merge::schedule`): restored pairs and recreated contacts are
/// decided "do not merge"; a contact merged away or in flight elsewhere is held. Read only,
/// without the lock: a preview never blocks a run. A savepoint that cannot be read is a
/// warning here (the merge run refuses it with the details).
fn held_by_savepoint(journal: Option<&SavepointFile>, plan: &Plan) -> Vec<HeldPair> {
    let Some(journal) = journal else {
        return Vec::new();
    };
    let s = schedule::schedule(&plan.pairs, journal);
    let mut out: Vec<HeldPair> = s
        .held
        .iter()
        .map(|h| HeldPair {
            email: h.pair.email.clone(),
            primary: h.pair.primary.rev_user_id.clone(),
            secondary: h.pair.secondary.rev_user_id.clone(),
            do_not_merge: matches!(
                h.reason,
                SkipReason::HeldByLedger {
                    hold: Hold::Restored | Hold::Recreated,
                    ..
                }
            ),
            reason: h.reason.to_string(),
        })
        .collect();
    for e in s.earlier.iter().filter(|e| e.in_csv) {
        if let Some(r) = journal.pairs.get(&e.key)
            && r.status == PairStatus::Restored
        {
            out.push(HeldPair {
                email: r.email.clone(),
                primary: r.primary.clone(),
                secondary: r.secondary.clone(),
                do_not_merge: true,
                reason: "merged earlier and undone by --restore".into(),
            });
        }
    }
    out
}

/// The merges the merge run would make, for its estimate: what the decisions (the file given,
/// else those recorded) leave of the clean pairs, each decided group's merges, and of those only
/// what the savepoint has not finished or held.
fn runs_pairs(
    plan: &Plan,
    decided: Option<&review::decisions::Decided>,
    journal: Option<&SavepointFile>,
) -> Vec<crate::detect::Pair> {
    use review::decisions::Outcome;
    let mut pairs: Vec<crate::detect::Pair> = match decided {
        Some(d) => review::groups(plan)
            .iter()
            .zip(&d.groups)
            .filter_map(|(g, (_, _, o))| match o {
                Outcome::Merge { keep, merge, .. } => Some((g, keep, merge)),
                _ => None,
            })
            .flat_map(|(g, keep, merge)| {
                let find = |id: &str| g.contacts.iter().find(|c| c.rev_user_id == id);
                let survivor = find(keep);
                merge.iter().filter_map(move |m| {
                    Some(crate::detect::Pair {
                        email: g.email.to_string(),
                        primary: (*survivor?).clone(),
                        secondary: (*find(m)?).clone(),
                    })
                })
            })
            .collect(),
        None => {
            let in_force = |p: &crate::detect::Pair| {
                journal.is_some_and(|j| {
                    j.decisions
                        .get(&review::group_id(&p.email))
                        .is_some_and(|d| d.holds())
                })
            };
            plan.pairs
                .iter()
                .filter(|p| !in_force(p))
                .cloned()
                .collect()
        }
    };
    if let Some(j) = journal {
        let s = schedule::schedule(&pairs, j);
        let run: std::collections::HashSet<String> = s.work.iter().map(|i| i.key.clone()).collect();
        pairs.retain(|p| {
            run.contains(&crate::merge::journal::pair_key(
                &p.primary.rev_user_id,
                &p.secondary.rev_user_id,
            ))
        });
    }
    pairs
}

/// Contacts no new merge may take (merged away, in flight, restored, recreated), with why.
fn untouchable(journal: Option<&SavepointFile>) -> std::collections::HashMap<String, String> {
    let Some(j) = journal else {
        return Default::default();
    };
    crate::merge::ledger::Ledger::of(j)
        .untouchable()
        .map(|(c, hold)| {
            let why = match hold {
                Hold::MergedAway => "merged away",
                Hold::InFlight => "its merge is not finished",
                Hold::Restored => "a merge of it was undone by --restore",
                Hold::Recreated => "recreated by --restore",
                Hold::Survivor => "survived a merge",
            };
            (c.to_string(), why.to_string())
        })
        .collect()
}

fn held_text(held: &[HeldPair], savepoint: &Path) -> String {
    if held.is_empty() {
        return String::new();
    }
    let mut t = format!(
        "Held by {} ({} clean pair(s) a merge run will not start):\n",
        savepoint.display(),
        held.len()
    );
    for h in held.iter().take(TERMINAL_ROWS) {
        t += &format!(
            "  {}: {}{}\n",
            h.email,
            if h.do_not_merge { "do not merge: " } else { "" },
            h.reason
        );
    }
    if held.len() > TERMINAL_ROWS {
        t += &format!(
            "  ... and {} more in the plan file\n",
            held.len() - TERMINAL_ROWS
        );
    }
    t
}
