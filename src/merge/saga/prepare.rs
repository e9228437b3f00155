//! A pair prepared ahead of its turn: Validate, Backup and VerifyBackup run while an earlier
//! pair's merge is being applied, with the rate budget its wait leaves unused
//! (`merge/scheduler/ahead.rs` decides which pairs and when). They only read DevRev and write the
//! backup and the journal, so running them early changes nothing in DevRev; every write
//! (RequestMerge onwards) waits for the pair's turn, in order.
//!
//! A pair prepared but never run (Ctrl-C, a crash, a run-wide error) is journaled exactly as
//! a pair interrupted after its backup: the next run validates it again and checks its backup
//! against DevRev before it merges over it. The report lists it as not started.

use super::*;

/// What preparing a pair did: handed to [`run_pair`] at the pair's turn.
#[derive(Debug)]
pub struct Prepared {
    pub steps: Vec<StepRecord>,
    /// The pair is settled already (skipped, failed, interrupted): its turn only reports it.
    pub(super) ended: Option<PairResult>,
    pub(super) live: Option<(RevUser, RevUser)>,
    pub(super) validated: bool,
    /// When VerifyBackup passed, if it did: the moment from which DevRev's lists say whether
    /// the backup is still current (see `Saga::current_from`).
    pub(super) current_from: Option<Instant>,
    /// It went on to its merge ahead of its turn (issue 29: several merges in flight).
    pub(super) merge_sent: bool,
}

impl Prepared {
    /// How preparing ended when the pair is settled already.
    pub fn ended(&self) -> Option<&PairResult> {
        self.ended.as_ref()
    }

    /// A merge request was sent while it ran ahead of its turn.
    pub fn merge_sent(&self) -> bool {
        self.merge_sent
    }

    /// The checks no longer count (the backup was dropped because an earlier pair's writes
    /// may change what it holds): the pair runs Validate and Backup again at its turn. Its
    /// steps stay in the report.
    pub fn forget_checks(self) -> Self {
        Self {
            ended: None,
            live: None,
            validated: false,
            current_from: None,
            merge_sent: false,
            ..self
        }
    }
}

/// Runs the pair's saga up to its first write to DevRev. The record must already be in the
/// savepoint. `Err`: the whole run must stop (as in [`run_pair`]).
///
/// `in_flight`: the pairs whose writes may still come (the pair in hand, those ahead, the
/// parked ones), asked once the pair's own backup is known. When given and the pair's
/// backup shows it meets none of them either way (no shared
/// contact, no object one rewrites naming the other's contacts, no object both rewrite), the
/// saga goes on to its merge and to the end without waiting for its turn: their writes
/// cannot touch the same thing, so their order does not matter, and the apply waits overlap.
pub async fn prepare_pair(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    key: &str,
    pair: Option<&Pair>,
    in_flight: Option<Box<dyn Fn() -> Vec<crate::merge::footprint::Footprint> + '_>>,
) -> Result<Prepared, AppError> {
    let mut saga = Saga::new(ctx, sp, key, pair);
    let mut ended = saga.drive_until(Reach::BeforeWrites).await?;
    if ended.is_none()
        && let Some(others) = in_flight.map(|f| f())
        && let Some(mine) = sp
            .get(key)
            .map(|r| crate::merge::footprint::Footprint::of_record(&r))
        && !others.iter().any(|o| o.meets(&mine) || mine.meets(o))
    {
        tracing::debug!(pair = %saga.rec().email, "meets nothing in flight: merging ahead of its turn");
        ended = saga.drive_until(Reach::Done).await?;
    }
    Ok(Prepared {
        steps: saga.steps,
        ended,
        live: saga.live,
        validated: saga.validated,
        current_from: saga.current_from.filter(|_| saga.verified),
        merge_sent: saga.merge_sent,
    })
}
