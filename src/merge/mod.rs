//! Running the plan (`--csv contacts.csv`): every clean pair through its saga, journaled in
//! the savepoint, with confirmation, a canary limit, Ctrl-C handling, progress and a report.
//!
//! Order of a run: read the plan (offline) → lock and read the savepoint → schedule (pure:
//! `schedule.rs`) → check the token and show the org (`auth-tokens.info`) → ask for
//! confirmation → run the pairs (`scheduler/`: one loop over each pair's stage, each pair through its saga in
//! `saga.rs`, journaled in the format of `journal.rs` by `savepoint.rs`) → finish: report and
//! exit status (`finish.rs`, `report.rs`).

pub mod apply_wait;
pub mod carry;
pub mod evidence;
mod finish;
pub mod footprint;
pub mod groups;
pub mod journal;
pub mod ledger;
mod scheduler;
pub(crate) use crate::backup::fresh_for;
pub mod report;
pub mod saga;
pub mod savepoint;
pub mod schedule;
pub mod shared;
mod turn;
pub mod watching;

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::watch;

use crate::config::Config;
use crate::detect::{self, DetectOptions};
use crate::devrev::DevRevClient;
use crate::devrev::types::Organization;
use crate::error::AppError;
use crate::fsutil;
use crate::options::Keep;
use saga::SagaCtx;
use savepoint::Savepoint;

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

/// Listens for Ctrl-C (SIGINT, or the Windows console's) for the rest of the run.
fn listen_for_ctrl_c(tx: watch::Sender<u8>) {
    // Registered before the first step, so no press meets the default handler.
    let ctrl_c = crate::platform::CtrlC::listen();
    tokio::spawn(async move {
        let Ok(mut ctrl_c) = ctrl_c else { return };
        loop {
            if ctrl_c.pressed().await.is_none() {
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

/// The merge run. `Ok(())` only when every clean pair is merged (or already was).
pub async fn run(cfg: &Config, csv: &Path) -> Result<(), AppError> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let run_id = format!(
        "{}-{:06x}",
        fsutil::stamp(),
        rand::random::<u32>() & 0xff_ffff
    );

    let client_cfg = cfg.client_config()?;
    let mut sp = Savepoint::open(&cfg.savepoint)?;
    let Planned {
        mut plan_pairs,
        members,
        group_plans,
        needs_review_groups,
        to_record,
    } = read_plan(cfg, csv, &sp)?;
    let client = DevRevClient::new(client_cfg)?;
    if cfg.keep == Keep::Auto {
        turn_rule_pairs(&client, &mut plan_pairs, &group_plans, sp.file()).await?;
    }

    // ---- schedule ---------------------------------------------------------------------------
    let sched = schedule::schedule_with_groups(&plan_pairs, &members, sp.file());
    if !sched.earlier.is_empty() || !sched.work.is_empty() {
        tracing::info!(
            "plan: {} clean pair(s), {} to run, {} finished earlier",
            plan_pairs.len(),
            sched.work.len(),
            sched.earlier.iter().filter(|e| e.finished).count()
        );
    }
    for h in &sched.held {
        tracing::warn!(pair = %h.pair.email, "not started: {}", h.reason);
    }
    let info = client.auth_tokens_info().await?;
    let owner = check_owner(&sp, &info.organization.id, cfg.base_url.as_str())?;
    // The file's not-dup and skip decisions (and its revocations) last from the moment they
    // are read: recorded once the savepoint is known to be this org's, before the question
    // (nothing of them is sent to DevRev).
    for d in to_record {
        tracing::info!(group = %d.group, email = %d.email, "recorded: {}{}", d.decision.word(),
            if d.revoked.is_some() { " (revoked)" } else { "" });
        sp.put_decision(d)?;
    }
    if !sched.work.is_empty() {
        confirm(cfg, &info.organization, &sched, &sp, &group_plans)?;
        if let Some(owner) = owner {
            sp.set_owner(owner)?;
        }
    }

    // ---- execute ----------------------------------------------------------------------------
    let (mut done, sp) = execute_scheduled(cfg, &client, sp, &sched, &run_id).await;

    // ---- finish -----------------------------------------------------------------------------
    let pairs = finish::entries(&sched, &done, &sp);
    let groups = groups::entries(&group_plans, &sp);
    let f = finish::Finish {
        late_vetoes: crate::review::lasting::late_vetoes(sp.file()),
        groups,
        cfg,
        csv,
        run_id: &run_id,
        started_at,
        elapsed: t0.elapsed(),
        organization: info.organization,
        needs_review_groups,
        client: &client,
        pairs,
    };
    finish::finish(f, done.outcome, done.fatal.take())
}

/// Runs the scheduled pairs with the run's shared reads (contacts, lists, timelines and
/// attachments read once: issue 29) and Ctrl-C handling; hands the savepoint back compacted.
async fn execute_scheduled(
    cfg: &Config,
    client: &DevRevClient,
    sp: Savepoint,
    sched: &schedule::Schedule<'_>,
    run_id: &str,
) -> (scheduler::Executed, Savepoint) {
    let (tx, stop) = StopSignal::new();
    listen_for_ctrl_c(tx);
    let watch = watching::WatchState::default();
    // The contacts of the pairs to run, read ten pairs at a time (issue 29).
    let contacts =
        crate::validate::ContactReads::new(sched.work.iter().filter_map(|i| i.pair), fresh_for());
    // Their tickets and conversations, listed for several pairs at once; merges an earlier
    // run sent and did not reconcile count as under way.
    let unreconciled = unreconciled(sp.file());
    let lists = crate::validate::ListReads::new(
        sched.work.iter().filter_map(|i| i.pair),
        unreconciled,
        fresh_for(),
    );
    let reads = crate::backup::RunReads::new();
    let ctx = SagaCtx {
        client,
        contacts: &contacts,
        lists: &lists,
        scope: cfg.backup_scope,
        backup_root: &cfg.backup_dir,
        run_id,
        merge_timeout: cfg.merge_timeout,
        merge_watch: cfg.merge_watch,
        watch: &watch,
        min_backoff: cfg.min_backoff,
        resend_unapplied: cfg.resend_unapplied,
        carry: cfg.carry,
        merge_ahead: !cfg.one_merge_at_a_time,
        stop: &stop,
        reads: &reads,
    };
    let stopped_groups = held_groups(sched);
    // Decided pairs may keep either contact: each record takes the direction of its pair.
    let keep = if cfg.decisions.is_some() {
        Keep::Auto
    } else {
        cfg.keep
    };
    let shared = shared::SharedSavepoint::new(sp);
    let done = scheduler::execute(
        &ctx,
        &shared,
        &sched.work,
        cfg.max_merges,
        keep,
        stopped_groups,
    )
    .await;
    let (lists, served) = contacts.figures().await;
    if lists > 0 {
        tracing::debug!(
            "contacts read in batches: {lists} rev-users.list call(s) stood in for {served} rev-users.get"
        );
    }
    let mut sp = shared.into_inner();
    let reused = reads.reused();
    if reused.timelines + reused.attachments > 0 {
        tracing::info!(
            "{}",
            crate::backup::reused_line(reused.timelines, reused.attachments)
        );
    }
    // Superseded lines are dropped so the next run loads only live records. Not fatal: the
    // journal as it stands is complete.
    if let Err(e) = sp.compact_if_superseded() {
        tracing::warn!("the savepoint was not compacted: {e}");
    }

    (done, sp)
}

/// What the run merges, from the CSV and the decisions file (with the decisions recorded
/// before): the clean pairs, the decided groups' merges, and what is left for a person.
struct Planned {
    plan_pairs: Vec<detect::Pair>,
    members: Vec<(detect::Pair, journal::GroupLink)>,
    group_plans: Vec<groups::GroupPlan>,
    needs_review_groups: usize,
    to_record: Vec<journal::GroupDecision>,
}

fn read_plan(cfg: &Config, csv: &Path, sp: &Savepoint) -> Result<Planned, AppError> {
    // The run reads only the clean pairs and the number of groups left for a person: the
    // groups' rows and the rows without an email are let go at once, not held for the run.
    let mut plan = detect::plan_from_csv(
        csv,
        &DetectOptions {
            keep: cfg.keep,
            email_domain: cfg.email_domain.clone(),
        },
    )?;
    let mut needs_review_groups = plan.needs_review.len();
    // A decisions file is read and checked whole before anything is sent (exit 65 naming
    // the file and line): the clean pairs follow it, and every decided group becomes its
    // chain of merges. Decisions recorded by earlier files hold unless this one revokes them.
    let mut to_record = Vec::new();
    let decided = match &cfg.decisions {
        Some(file) => {
            let mut d =
                crate::review::decisions::decide(file, &plan, cfg.keep, cfg.accept_proposed)?;
            crate::review::lasting::apply_recorded(&mut d, &sp.file().decisions);
            to_record =
                crate::review::lasting::to_record(&d, file, &sp.file().decisions, Utc::now());
            for n in &d.notes {
                tracing::warn!("{n}");
            }
            Some(groups::apply(&mut plan, &d, file, sp.file()))
        }
        None => None,
    };
    if let Some(w) = &decided {
        // Left for a person: the groups the file leaves undecided, or whose rows went stale.
        needs_review_groups = w
            .groups
            .iter()
            .filter(|g| {
                !g.clean_pair
                    && matches!(
                        g.outcome,
                        crate::review::decisions::Outcome::Undecided
                            | crate::review::decisions::Outcome::Stale { .. }
                    )
            })
            .count();
    }
    let (plan_pairs, members, group_plans) = match decided {
        Some(w) => (w.pairs, w.members, w.groups),
        None => {
            // Without a file, the recorded decisions still hold: their clean pairs are left.
            let mut pairs = std::mem::take(&mut plan.pairs);
            let held = groups::honour_recorded(&mut pairs, &sp.file().decisions);
            (pairs, Vec::new(), held)
        }
    };
    Ok(Planned {
        plan_pairs,
        members,
        group_plans,
        needs_review_groups,
        to_record,
    })
}

/// Merges an earlier run sent and did not reconcile: under way from the run's start for the
/// shared lists (`validate::ListReads`).
fn unreconciled(sp: &journal::SavepointFile) -> Vec<(String, String)> {
    sp.pairs
        .values()
        .filter(|r| {
            r.merge_in_flight()
                && !r.status.is_final()
                && !matches!(
                    r.last_step,
                    Some(
                        journal::Step::Reconcile
                            | journal::Step::AdoptExternalRef
                            | journal::Step::CarryOver
                            | journal::Step::Done
                    )
                )
        })
        .map(|r| (r.primary.clone(), r.secondary.clone()))
        .collect()
}

/// A merge held by the ledger keeps the rest of its group waiting too: group id -> why.
fn held_groups(sched: &schedule::Schedule<'_>) -> std::collections::HashMap<String, String> {
    sched
        .held
        .iter()
        .filter_map(|h| {
            let g = h.group.as_ref()?;
            Some((
                g.id.clone(),
                format!(
                    "the group stopped at {} (merge {} of {}): {}",
                    crate::detect::display_id(&h.pair.secondary.rev_user_id),
                    g.index + 1,
                    g.len,
                    h.reason
                ),
            ))
        })
        .collect()
}

/// `--keep auto`: turns round the clean pairs DevRev would refuse, among those the `--keep`
/// rule decided. A survivor the user typed (or accepted) in the decisions file is theirs: only
/// the pairs the `--keep` rule decided may be turned round. The CSV's order is kept.
async fn turn_rule_pairs(
    client: &DevRevClient,
    plan_pairs: &mut Vec<crate::detect::Pair>,
    group_plans: &[groups::GroupPlan],
    journal: &journal::SavepointFile,
) -> Result<(), AppError> {
    // A survivor the user typed (or accepted) in the decisions file is theirs: only the
    // pairs the `--keep` rule decided may be turned round.
    let chosen: std::collections::HashSet<&str> = group_plans
        .iter()
        .filter_map(|g| match &g.outcome {
            crate::review::decisions::Outcome::Merge { keep, source, .. }
                if g.clean_pair && *source != crate::review::decisions::Source::CleanPairRule =>
            {
                Some(keep.as_str())
            }
            _ => None,
        })
        .collect();
    let (free_at, kept_at): (Vec<usize>, Vec<usize>) = (0..plan_pairs.len())
        .partition(|&i| !chosen.contains(plan_pairs[i].primary.rev_user_id.as_str()));
    let mut slots: Vec<Option<crate::detect::Pair>> =
        std::mem::take(plan_pairs).into_iter().map(Some).collect();
    let mut free: Vec<crate::detect::Pair> =
        free_at.iter().filter_map(|&i| slots[i].take()).collect();
    turn::turn_pairs(client, &mut free, journal).await?;
    // Back in the CSV's order, turned or not.
    for (i, p) in free_at.into_iter().zip(free) {
        slots[i] = Some(p);
    }
    debug_assert!(kept_at.iter().all(|&i| slots[i].is_some()));
    *plan_pairs = slots.into_iter().flatten().collect();
    Ok(())
}

/// A savepoint belongs to one org at one base URL: resuming it elsewhere would match its
/// records against contacts that are not the ones it journaled. Checked before any call
/// that changes anything. `Some`: the journal has no owner yet (new, or from an older build)
/// and gets this one once the run is confirmed.
fn check_owner(
    sp: &Savepoint,
    org: &str,
    base_url: &str,
) -> Result<Option<journal::Owner>, AppError> {
    let here = journal::Owner {
        org: org.to_string(),
        base_url: base_url.trim_end_matches('/').to_string(),
    };
    match &sp.file().owner {
        Some(o) if *o == here => Ok(None),
        Some(o) => Err(AppError::Config(format!(
            "the savepoint {} belongs to org {} at {}, but this run's token is for org {} at {}. \
             Use the token and --base-url (DEVREV_BASE_URL) of that org to resume it, or another \
             --savepoint for this org. Nothing was changed.",
            sp.path().display(),
            o.org,
            o.base_url,
            here.org,
            here.base_url
        ))),
        None => {
            check_records_org(sp, org)?;
            Ok(Some(here))
        }
    }
}

/// A journal without an owner (written by an older build) is not adopted by whichever org
/// comes next: its records' DONs name the org they were made in (`devo/<org>`, the same rule
/// the restore applies to backups), and a run whose token is for another org stops with
/// exit 78 before any write. Records whose ids are not DONs say nothing and are not counted.
fn check_records_org(sp: &Savepoint, org: &str) -> Result<(), AppError> {
    let mine = crate::devrev::org_of(org);
    let theirs: std::collections::BTreeSet<String> = sp
        .file()
        .pairs
        .values()
        .flat_map(|r| [&r.primary, &r.secondary])
        .filter_map(|id| crate::devrev::org_of(id))
        .collect();
    let foreign: Vec<&str> = theirs
        .iter()
        .filter(|o| Some(*o) != mine.as_ref())
        .map(String::as_str)
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(AppError::Config(format!(
        "the savepoint {} names no org (it was written by an older devrev-merge), and its \
         records are contacts of {}, but this run's token is for org {org}. Use the token of \
         that org to resume it, or another --savepoint for this org. Nothing was changed.",
        sp.path().display(),
        foreign.join(", ")
    )))
}

/// Shows what is about to happen and asks. `--yes` skips the question; without a terminal
/// there is nobody to ask, so the run is refused.
fn confirm(
    cfg: &Config,
    org: &Organization,
    sched: &schedule::Schedule<'_>,
    sp: &Savepoint,
    groups: &[groups::GroupPlan],
) -> Result<(), AppError> {
    let work = &sched.work;
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
    // "New" and "to resume" add up to the pairs to merge; pairs the savepoint already
    // finished are not among them and get their own line.
    text.push_str(&format!(
        "Pairs to merge:      {} ({} new, {} to resume from {})\n",
        work.len(),
        work.len() - resumed,
        resumed,
        cfg.savepoint.display()
    ));
    let finished = sched.earlier.iter().filter(|e| e.finished).count();
    if finished > 0 {
        text.push_str(&format!(
            "Finished earlier:    {} (in {}, not touched)\n",
            finished,
            cfg.savepoint.display()
        ));
    }
    if !sched.held.is_empty() {
        text.push_str(&format!(
            "Held, not sent:      {} (a contact of theirs belongs to another record; see the log)\n",
            sched.held.len()
        ));
    }
    let merging = groups
        .iter()
        .filter(|g| {
            !g.clean_pair && matches!(g.outcome, crate::review::decisions::Outcome::Merge { .. })
        })
        .count();
    if let Some(file) = &cfg.decisions {
        let members = work.iter().filter(|i| i.group.is_some()).count();
        text.push_str(&format!(
            "Decided groups:      {merging} from {} ({members} of the merges above, one contact at a time)\n",
            file.display()
        ));
    }
    if let Some(m) = cfg.max_merges {
        text.push_str(&format!(
            "Canary:              stop after {m} merge(s) (--max-merges)\n"
        ));
    }
    text.push_str(&format!(
        "Backups go to:       {}\n",
        cfg.backup_dir.display()
    ));
    // -q asks for errors only; with --yes nobody reads the question anyway.
    cfg.printer.confirm(
        cfg.yes,
        &text,
        "refusing to merge without confirmation: no terminal to ask on. Check the organization \
         and counts above, then re-run with --yes.",
        "DevRev has no unmerge: only --restore brings a merged contact back, from its backup \
         (docs/restore.md). Type \"yes\" to continue: ",
    )
}
