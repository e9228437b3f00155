//! A pair prepared ahead of its turn: Validate, Backup and VerifyBackup run while an earlier
//! pair's merge is being applied, with the rate budget its wait leaves unused
//! (`merge/pipeline.rs` decides which pairs and when). They only read DevRev and write the
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
    pub(super) verified: bool,
    pub(super) backed_up_at: Option<Instant>,
}

impl Prepared {
    /// How preparing ended when the pair is settled already.
    pub fn ended(&self) -> Option<&PairResult> {
        self.ended.as_ref()
    }

    /// The checks no longer count (the backup was dropped because an earlier pair's writes
    /// may change what it holds): the pair runs Validate and Backup again at its turn. Its
    /// steps stay in the report.
    pub fn forget_checks(self) -> Self {
        Self {
            ended: None,
            live: None,
            validated: false,
            verified: false,
            backed_up_at: None,
            ..self
        }
    }
}

/// Runs the pair's saga up to its first write to DevRev. The record must already be in the
/// savepoint. `Err`: the whole run must stop (as in [`run_pair`]).
pub async fn prepare_pair(
    ctx: &SagaCtx<'_>,
    sp: &SharedSavepoint,
    key: &str,
    pair: Option<&Pair>,
) -> Result<Prepared, AppError> {
    let mut saga = Saga::new(ctx, sp, key, pair);
    let ended = saga.drive_until(Reach::BeforeWrites).await?;
    Ok(Prepared {
        steps: saga.steps,
        ended,
        live: saga.live,
        validated: saga.validated,
        verified: saga.verified,
        backed_up_at: saga.backed_up_at,
    })
}
