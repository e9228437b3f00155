//! `--keep auto` in the merge run: before scheduling, every pair DevRev would refuse as
//! planned (a verified REVU- primary, an unverified user_ secondary) is turned round, so the
//! saga merges the verified REVU- contact into the user_ one instead of skipping the pair.
//!
//! A pair the journal already knows is finished the way it was started: turned if its record
//! has the turned roles, as planned once a merge was requested. Only the others are looked up
//! (read-only: one `rev-users.list` per ten pairs, a `rev-users.get` for a contact it leaves
//! out; the saga's Validate checks them again before any write), so pairs an earlier
//! `--keep revu` run skipped are turned too.

use futures_util::StreamExt;

use super::journal::{SavepointFile, pair_key};
use super::saga::is_fatal;
use crate::detect::Pair;
use crate::devrev::DevRevClient;
use crate::error::AppError;
use crate::validate;

/// Pairs looked up at once (the client's pacer still bounds the rate).
const CONCURRENCY: usize = 4;

/// Turns the pairs of `pairs` that need it; returns how many were turned.
pub async fn turn_pairs(
    client: &DevRevClient,
    pairs: &mut [Pair],
    journal: &SavepointFile,
) -> Result<usize, AppError> {
    let mut fresh = Vec::new();
    let mut turned = 0;
    for (i, pair) in pairs.iter_mut().enumerate() {
        let (p, s) = (&pair.primary.rev_user_id, &pair.secondary.rev_user_id);
        if journal.pairs.contains_key(&pair_key(s, p)) {
            *pair = pair.swapped();
            turned += 1;
        } else {
            // New, or journaled as planned but never sent to DevRev (e.g. skipped by an
            // earlier `--keep revu` run): free to turn.
            let untouched = journal
                .pairs
                .get(&pair_key(p, s))
                .is_none_or(|r| r.merge.is_none() && r.merged.is_none() && !r.status.is_final());
            if untouched {
                fresh.push(i);
            }
        }
    }
    if fresh.is_empty() {
        return Ok(turned);
    }
    tracing::info!(
        "--keep auto: checking {} new pair(s) live to see which DevRev merges only the other way",
        fresh.len(),
    );
    let shared: &[Pair] = pairs;
    // Read once, right now: the saga's Validate reads them again before any write.
    let reads = validate::ContactReads::new(
        fresh.iter().map(|&i| &shared[i]),
        std::time::Duration::from_secs(3600),
    );
    let reads = &reads;
    let checks: Vec<(usize, Option<Pair>)> = futures_util::stream::iter(fresh)
        .map(|i| async move {
            let pair = &shared[i];
            match validate::validate_pair(client, pair, reads).await {
                Ok(check) => Ok((i, validate::turned(pair, &check).map(|(p, _)| p))),
                Err(e) if is_fatal(&e) => Err(AppError::Api(e)),
                // Anything else is the pair's own problem: the saga's Validate meets it again
                // and reports it for this pair.
                Err(e) => {
                    tracing::debug!(pair = %pair.email, error = %e, "--keep auto: lookup failed; left as planned");
                    Ok((i, None))
                }
            }
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for (i, swapped) in checks {
        if let Some(swapped) = swapped {
            tracing::info!(pair = %swapped.email, "--keep auto: {}", validate::TURNED_BECAUSE);
            pairs[i] = swapped;
            turned += 1;
        }
    }
    Ok(turned)
}
