//! Live facts for the review file (`--preview --check-live`): each needs-review contact's
//! `is_verified`, `state` and account (`rev_org`), read with one `rev-users.get` each, shown
//! in the file and used by the proposal. The export has none of them, and each decides
//! whether DevRev can merge two contacts at all.

use std::collections::HashMap;

use futures_util::StreamExt;

use crate::detect::Plan;
use crate::devrev::{ApiError, DevRevClient};

/// Lookups in flight at once (the client paces them by the rate limit anyway).
const CONCURRENCY: usize = 4;

/// What DevRev says of one contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fact {
    pub verified: Option<bool>,
    /// `None` when DevRev omits it (an ordinary active contact); `not found` for a 404.
    pub state: Option<String>,
    /// The account's DON (`rev_org.id`).
    pub account: Option<String>,
}

impl Fact {
    /// Active: an ordinary contact (DevRev omits `state` for those).
    pub fn active(&self) -> bool {
        self.state.as_deref().is_none_or(|s| s == "active")
    }
}

/// Facts by `rev_user_id`.
pub type Facts = HashMap<String, Fact>;

/// Reads every contact of every needs-review group. A contact DevRev no longer has is
/// `not found`, one it cannot answer for is `not checked (<status>)` (left out of the
/// proposal); a failure every call would share stops the preview.
pub async fn read(client: &DevRevClient, plan: &Plan) -> Result<Facts, ApiError> {
    let ids: Vec<&str> = plan
        .needs_review
        .iter()
        .flat_map(|g| g.contacts.iter().map(|c| c.rev_user_id.as_str()))
        .collect();
    if !ids.is_empty() {
        tracing::info!(
            "reading {} needs-review contact(s) live for the review file",
            ids.len()
        );
    }
    // A window of contacts per rev-users.list; a get for any it leaves out (gone, moved).
    let reads = crate::validate::ContactReads::of_contacts(
        plan.needs_review.iter().flat_map(|g| g.contacts.iter()),
        std::time::Duration::from_secs(3600),
    );
    let reads = &reads;
    let mut out = Facts::with_capacity(ids.len());
    let mut stream = futures_util::stream::iter(ids)
        .map(|id| async move { (id, reads.get(client, id).await) })
        .buffered(CONCURRENCY);
    while let Some((id, r)) = stream.next().await {
        let fact = match r {
            Ok(u) => Fact {
                verified: u.is_verified,
                state: u.state.clone(),
                account: u.account().map(str::to_string),
            },
            Err(e) if e.is_not_found() => Fact {
                state: Some("not found".into()),
                ..Fact::default()
            },
            // Every later call would fail alike (token, reachability, rate): stop.
            Err(e) if e.scope() == crate::devrev::Scope::Run => return Err(e),
            // This contact only (e.g. DevRev rejects its id): unknown, so never proposed.
            Err(e) => Fact {
                state: Some(format!("not checked ({})", e.status().unwrap_or(0))),
                ..Fact::default()
            },
        };
        out.insert(id.to_string(), fact);
    }
    Ok(out)
}
