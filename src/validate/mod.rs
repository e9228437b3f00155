//! Read-only live checks of one pair against DevRev: does the plan still hold?
//!
//! Shared by `--preview --check-live` and the merge saga's Validate step, so both refuse
//! exactly the same pairs: both contacts exist and are active, neither already shows as
//! merged, the emails still match the pair's, the refs are unchanged since the export, and
//! DevRev will accept the merge (`is_verified`: an unverified contact cannot be merged into
//! a verified one).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::detect::{Contact, Pair, RefClass, ReviewReason, classify_ref, normalize_email};
use crate::devrev::types::RevUser;
use crate::devrev::{ApiError, DevRevClient};

mod batch;
mod gather;
mod lists;

pub use batch::{ContactReads, Look, WINDOW};
pub use lists::{ListReads, Listing};

/// Which side of the pair a finding is about (also in the saga's skip reasons, which the
/// savepoint stores: hence `Deserialize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Secondary,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        })
    }
}

/// Why DevRev's current state does not allow merging the pair as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum LiveProblem {
    /// `rev-users.get` answered 404 `not_found` (deleted, or merged away already).
    NotFound { role: Role, id: String },
    /// The contact's `state` is not `active`.
    NotActive { role: Role, state: String },
    /// The contact shows a merge already: `primary_identity` pointing elsewhere, or a
    /// `-drop-` external ref.
    AlreadyMerged { role: Role, evidence: String },
    /// The contact's email (normalized) is no longer the pair's.
    EmailChanged {
        role: Role,
        expected: String,
        live: Option<String>,
    },
    /// The contact's external_ref differs from the export.
    RefChanged {
        role: Role,
        csv: String,
        live: Option<String>,
    },
    /// The secondary is unverified and the primary verified: DevRev refuses such merges.
    UnverifiedIntoVerified,
    /// The two contacts belong to different accounts (`rev_org`): a different customer, not
    /// a duplicate, whatever the email says. Refused whether or not DevRev would take it
    /// (devrev-api.md leaves that open).
    DifferentAccounts { primary: String, secondary: String },
    /// DevRev's answer for the contact does not carry fields a decision needs
    /// ([`RevUser::unknown_fields`]): unknown, so neither the verified rule nor the
    /// carry-over can be judged; refused until an answer carries them.
    FieldsUnknown { role: Role, fields: Vec<String> },
}

impl LiveProblem {
    /// The needs-review reason a pair with this problem is filed under.
    pub fn reason(&self) -> ReviewReason {
        match self {
            LiveProblem::NotFound { .. } => ReviewReason::LiveNotFound,
            LiveProblem::NotActive { .. } => ReviewReason::LiveNotActive,
            LiveProblem::AlreadyMerged { .. } => ReviewReason::LiveAlreadyMerged,
            LiveProblem::EmailChanged { .. } => ReviewReason::LiveEmailChanged,
            LiveProblem::RefChanged { .. } => ReviewReason::LiveRefChanged,
            LiveProblem::UnverifiedIntoVerified => ReviewReason::LiveUnverifiedIntoVerified,
            LiveProblem::DifferentAccounts { .. } => ReviewReason::LiveDifferentAccounts,
            LiveProblem::FieldsUnknown { .. } => ReviewReason::LiveFieldsUnknown,
        }
    }
}

impl fmt::Display for LiveProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveProblem::NotFound { role, id } => {
                write!(f, "the {role} contact {id} no longer exists in DevRev")
            }
            LiveProblem::NotActive { role, state } => {
                write!(f, "the {role} contact is {state}, not active")
            }
            LiveProblem::AlreadyMerged { role, evidence } => {
                write!(f, "the {role} contact already shows as merged: {evidence}")
            }
            LiveProblem::EmailChanged {
                role,
                expected,
                live,
            } => write!(
                f,
                "the {role} contact's email is now {:?}, the plan expects {expected:?}",
                live.as_deref().unwrap_or("")
            ),
            LiveProblem::RefChanged { role, csv, live } => write!(
                f,
                "the {role} contact's external_ref is now {:?}, the export says {csv:?}",
                live.as_deref().unwrap_or("")
            ),
            LiveProblem::UnverifiedIntoVerified => f.write_str(
                "the secondary is unverified and the primary verified: DevRev refuses to merge \
                 an unverified contact into a verified one",
            ),
            LiveProblem::DifferentAccounts { primary, secondary } => write!(
                f,
                "the contacts are in different accounts (rev_org {primary} and {secondary}): \
                 a different customer, not a duplicate"
            ),
            LiveProblem::FieldsUnknown { role, fields } => {
                write!(f, "{}", fields_unknown_text(*role, fields))
            }
        }
    }
}

/// Why a pair whose contact came back without `fields` is not merged (one text for the live
/// check and the savepoint).
pub fn fields_unknown_text(role: Role, fields: &[String]) -> String {
    format!(
        "DevRev's answer for the {role} contact does not carry {} (answered by the public \
         schema, without the beta scope?): unknown, not empty, so neither the verified rule \
         nor what the merge would lose can be judged; not merged, checked again next run",
        fields.join(", ")
    )
}

/// Both contacts as DevRev has them now, and the plan still holds.
#[derive(Debug, Clone)]
pub struct LivePair {
    pub primary: RevUser,
    pub secondary: RevUser,
    /// Things worth a look that do not stop the merge (e.g. `is_verified` not reported).
    pub warnings: Vec<String>,
}

/// The outcome of [`validate_pair`].
#[derive(Debug, Clone)]
pub enum LiveCheck {
    Passed(LivePair),
    Refused {
        /// Never empty; the first is the main reason.
        problems: Vec<LiveProblem>,
        primary: Option<RevUser>,
        secondary: Option<RevUser>,
    },
}

impl LiveCheck {
    pub fn passed(&self) -> bool {
        matches!(self, LiveCheck::Passed(_))
    }
}

/// Fetches both contacts (read-only: from `reads`' batched lists where they answered them,
/// else one `rev-users.get` each) and judges the pair.
///
/// `Err` only for API failures that say nothing about the pair (after the client's retries):
/// 401/403, DevRev unreachable, 5xx, an unknown route. A contact that is gone is a refusal,
/// not an error.
pub async fn validate_pair(
    client: &DevRevClient,
    pair: &Pair,
    reads: &ContactReads,
) -> Result<LiveCheck, ApiError> {
    let (p, s) = tokio::join!(
        fetch(client, reads, &pair.primary.rev_user_id),
        fetch(client, reads, &pair.secondary.rev_user_id)
    );
    Ok(judge(pair, p?, s?))
}

async fn fetch(
    client: &DevRevClient,
    reads: &ContactReads,
    id: &str,
) -> Result<Option<RevUser>, ApiError> {
    if let Some(u) = reads.take(client, id).await? {
        return Ok(Some(u));
    }
    match client.rev_users_get(id).await {
        Ok(u) => Ok(Some(u)),
        // Only DevRev's own `not_found` means the contact is gone: a 404 without a type is an
        // unknown route (a wrong base URL), which must not read as "every contact deleted".
        Err(e) if e.is_devrev_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The checks themselves, on contacts already fetched (pure, so it is tested directly).
pub fn judge(pair: &Pair, primary: Option<RevUser>, secondary: Option<RevUser>) -> LiveCheck {
    let mut problems = Vec::new();
    let warnings = Vec::new();
    for (role, csv, live) in [
        (Role::Primary, &pair.primary, primary.as_ref()),
        (Role::Secondary, &pair.secondary, secondary.as_ref()),
    ] {
        match live {
            None => problems.push(LiveProblem::NotFound {
                role,
                id: csv.rev_user_id.clone(),
            }),
            Some(u) => {
                check_contact(role, csv, &pair.email, u, &mut problems);
                let unknown = u.unknown_fields();
                if !unknown.is_empty() {
                    problems.push(LiveProblem::FieldsUnknown {
                        role,
                        fields: unknown.into_iter().map(str::to_string).collect(),
                    });
                }
            }
        }
    }
    if let (Some(p), Some(s)) = (&primary, &secondary) {
        if let (Some(a), Some(b)) = (p.account(), s.account())
            && a != b
        {
            problems.push(LiveProblem::DifferentAccounts {
                primary: a.to_string(),
                secondary: b.to_string(),
            });
        }
        if let (Some(true), Some(false)) = (p.is_verified, s.is_verified) {
            problems.push(LiveProblem::UnverifiedIntoVerified);
        }
    }
    match (problems.is_empty(), primary, secondary) {
        (true, Some(primary), Some(secondary)) => LiveCheck::Passed(LivePair {
            primary,
            secondary,
            warnings,
        }),
        (_, primary, secondary) => LiveCheck::Refused {
            problems,
            primary,
            secondary,
        },
    }
}

/// `--keep auto`: the pair turned round (the user_ contact kept) with its live check, when
/// DevRev refuses it as planned only because a verified primary would take an unverified
/// secondary, and accepts it the other way. `None` when turning would not help.
pub fn turned(pair: &Pair, check: &LiveCheck) -> Option<(Pair, LivePair)> {
    let LiveCheck::Refused {
        problems,
        primary,
        secondary,
    } = check
    else {
        return None;
    };
    if problems.as_slice() != [LiveProblem::UnverifiedIntoVerified] {
        return None;
    }
    let swapped = pair.swapped();
    match judge(&swapped, secondary.clone(), primary.clone()) {
        LiveCheck::Passed(live) => Some((swapped, live)),
        LiveCheck::Refused { .. } => None,
    }
}

/// Why a pair was turned, in the words the plan and the report use.
pub const TURNED_BECAUSE: &str = "the REVU- contact is verified and the user_ contact is not: \
     DevRev refuses that merge, so the user_ contact is kept (--keep auto)";

fn check_contact(
    role: Role,
    csv: &Contact,
    email: &str,
    live: &RevUser,
    problems: &mut Vec<LiveProblem>,
) {
    let live_ref = live.external_ref.as_deref().map(str::trim);
    if let Some(pi) = &live.primary_identity
        && pi.id != live.id
    {
        problems.push(LiveProblem::AlreadyMerged {
            role,
            evidence: format!("primary_identity is {}", pi.id),
        });
    }
    if let Some(r) = live_ref.filter(|r| classify_ref(r) == RefClass::Drop) {
        problems.push(LiveProblem::AlreadyMerged {
            role,
            evidence: format!("external_ref is now {r}"),
        });
    } else if live_ref != Some(csv.external_ref.trim()) {
        problems.push(LiveProblem::RefChanged {
            role,
            csv: csv.external_ref.clone(),
            live: live_ref.map(str::to_string),
        });
    }
    if !live.is_active() {
        problems.push(LiveProblem::NotActive {
            role,
            state: live.state.clone().unwrap_or_default(),
        });
    }
    let live_email = live.email.as_deref().map(normalize_email);
    if live_email.as_deref() != Some(email) {
        problems.push(LiveProblem::EmailChanged {
            role,
            expected: email.to_string(),
            live: live.email.clone(),
        });
    }
}

/// Refused filters: DevRev may reject the id of a merged (deleted) secondary.
fn filter_refused(e: &ApiError) -> bool {
    matches!(e.status(), Some(400 | 404))
}

/// Tickets naming the primary or the secondary (after a merge too, which is why it is shared by
/// the saga and `--verify-backups --against-api`); if DevRev refuses the secondary's id (it may
/// be gone), tickets naming the primary. Through `lists`: an answer the run already has may
/// stand in (see [`ListReads`]).
pub async fn tickets_of_both<T: DeserializeOwned>(
    client: &DevRevClient,
    lists: &ListReads,
    primary: &str,
    secondary: &str,
) -> Result<Vec<T>, ApiError> {
    of_both(client, lists, Listing::Tickets, primary, secondary, None).await
}

/// Conversations with either contact as a member (same fallback as [`tickets_of_both`]).
pub async fn conversations_of_both<T: DeserializeOwned>(
    client: &DevRevClient,
    lists: &ListReads,
    primary: &str,
    secondary: &str,
) -> Result<Vec<T>, ApiError> {
    of_both(
        client,
        lists,
        Listing::Conversations,
        primary,
        secondary,
        None,
    )
    .await
}

/// Tickets or conversations naming either contact, from an answer read after `since` when
/// given (see [`ListReads::list_since`]), with [`tickets_of_both`]'s fallback.
pub async fn of_both<T: DeserializeOwned>(
    client: &DevRevClient,
    lists: &ListReads,
    listing: Listing,
    primary: &str,
    secondary: &str,
    since: Option<std::time::Instant>,
) -> Result<Vec<T>, ApiError> {
    let values = match lists
        .list_since(client, listing, &[primary, secondary], since)
        .await
    {
        Err(e) if filter_refused(&e) => {
            tracing::debug!(error = %e, "listing by the merged secondary refused; listing by the primary");
            lists.list_since(client, listing, &[primary], since).await
        }
        other => other,
    }?;
    let endpoint = match listing {
        Listing::Tickets => "works.list",
        Listing::Conversations => "conversations.list",
    };
    values
        .into_iter()
        .map(|v| client.decode(endpoint, v))
        .collect()
}

/// How many tickets DevRev lists for each contact of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LiveTickets {
    /// Tickets naming the primary in `reported_by`.
    pub primary: u64,
    /// Tickets naming the secondary.
    pub secondary: u64,
    /// Tickets naming both (counted in both figures above).
    pub shared: u64,
}

/// Counts both contacts' tickets with one paged `works.list` (read-only). `primary_id` and
/// `secondary_id` should be the DONs DevRev returned ([`LivePair`]), which is what tickets'
/// `reported_by` holds.
pub async fn live_ticket_counts(
    client: &DevRevClient,
    primary_id: &str,
    secondary_id: &str,
) -> Result<LiveTickets, ApiError> {
    let works = client
        .tickets_reported_by(&[primary_id, secondary_id])
        .await?;
    let mut t = LiveTickets {
        primary: 0,
        secondary: 0,
        shared: 0,
    };
    for w in &works {
        let p = w.reported_by.iter().any(|u| u.id == primary_id);
        let s = w.reported_by.iter().any(|u| u.id == secondary_id);
        t.primary += u64::from(p);
        t.secondary += u64::from(s);
        t.shared += u64::from(p && s);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devrev::types::UserSummary;

    fn contact(id: &str, r: &str, email: &str) -> Contact {
        Contact {
            line: 2,
            rev_user_id: format!("don:identity:dvrv-us-1:devo/o:revu/{id}"),
            display_name: "Jane".into(),
            email: email.into(),
            external_ref: r.into(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: Some(1),
        }
    }

    fn pair() -> Pair {
        Pair {
            email: "jane@x.com".into(),
            primary: contact("P", "REVU-P", "Jane@X.com"),
            secondary: contact("S", "user_s", "jane@x.com"),
        }
    }

    fn live(c: &Contact) -> RevUser {
        RevUser {
            id: c.rev_user_id.clone(),
            email: Some(c.email.to_uppercase()),
            external_ref: Some(c.external_ref.clone()),
            state: Some("active".into()),
            is_verified: Some(true),
            extra: serde_json::json!({"custom_fields": {}, "tags": []})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..RevUser::default()
        }
    }

    fn problems(p: Option<RevUser>, s: Option<RevUser>) -> Vec<LiveProblem> {
        match judge(&pair(), p, s) {
            LiveCheck::Passed(_) => vec![],
            LiveCheck::Refused { problems, .. } => problems,
        }
    }

    #[test]
    fn a_pair_that_still_holds_passes() {
        let pr = pair();
        assert!(judge(&pr, Some(live(&pr.primary)), Some(live(&pr.secondary))).passed());
        // A verified secondary into an unverified primary is fine; so is a missing state.
        let mut p = live(&pr.primary);
        p.is_verified = Some(false);
        p.state = None;
        assert!(judge(&pr, Some(p), Some(live(&pr.secondary))).passed());
    }

    #[test]
    fn every_live_problem_is_found() {
        let pr = pair();
        let (p, s) = (live(&pr.primary), live(&pr.secondary));
        assert_eq!(
            problems(None, Some(s.clone())),
            [LiveProblem::NotFound {
                role: Role::Primary,
                id: pr.primary.rev_user_id.clone()
            }]
        );
        let mut x = s.clone();
        x.state = Some("deactivated".into());
        assert_eq!(
            problems(Some(p.clone()), Some(x))[0].reason(),
            ReviewReason::LiveNotActive
        );
        let mut x = s.clone();
        x.primary_identity = Some(UserSummary {
            id: p.id.clone(),
            ..UserSummary::default()
        });
        assert_eq!(
            problems(Some(p.clone()), Some(x))[0].reason(),
            ReviewReason::LiveAlreadyMerged
        );
        let mut x = s.clone();
        x.external_ref = Some(format!("user_s-drop-{}", s.id));
        assert_eq!(
            problems(Some(p.clone()), Some(x)),
            [LiveProblem::AlreadyMerged {
                role: Role::Secondary,
                evidence: format!("external_ref is now user_s-drop-{}", s.id)
            }]
        );
        let mut x = s.clone();
        x.external_ref = Some("user_other".into());
        assert_eq!(
            problems(Some(p.clone()), Some(x))[0].reason(),
            ReviewReason::LiveRefChanged
        );
        let mut x = p.clone();
        x.email = Some("someone@else.com".into());
        let found = problems(Some(x), Some(s.clone()));
        assert_eq!(found[0].reason(), ReviewReason::LiveEmailChanged);
        assert!(found[0].to_string().contains("someone@else.com"));
        let mut x = s.clone();
        x.is_verified = Some(false);
        assert_eq!(
            problems(Some(p.clone()), Some(x)),
            [LiveProblem::UnverifiedIntoVerified]
        );
        // The primary pointing at itself is not a merge.
        let mut x = p.clone();
        x.primary_identity = Some(UserSummary {
            id: p.id.clone(),
            ..UserSummary::default()
        });
        assert!(problems(Some(x), Some(s.clone())).is_empty());
    }

    /// A field only the beta schema has, missing from the answer (a public-schema answer), is
    /// unknown: the pair is refused with the reason, never judged as if it were empty.
    #[test]
    fn a_field_the_answer_does_not_carry_is_unknown_not_empty() {
        let pr = pair();
        let mut s = live(&pr.secondary);
        s.is_verified = None;
        s.extra.remove("tags");
        let found = problems(Some(live(&pr.primary)), Some(s));
        assert_eq!(
            found,
            [LiveProblem::FieldsUnknown {
                role: Role::Secondary,
                fields: vec!["is_verified".into(), "tags".into()]
            }]
        );
        assert_eq!(found[0].reason(), ReviewReason::LiveFieldsUnknown);
        assert!(
            found[0].to_string().contains("is_verified, tags"),
            "{}",
            found[0]
        );
    }
}
