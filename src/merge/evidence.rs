//! The one rule that decides, from a look at the secondary, whether it was merged into the
//! primary. Validate and the watch after a merge request (AwaitMerge, resolving a lost
//! answer) both use it, so no step can call a pair "merged" on weaker evidence than another.
//!
//! Exact evidence only (docs/commands.md, "Exactly one merge per pair"):
//! - `primary_identity` counts only when it names the primary: some orgs fill it on every
//!   contact with the contact itself;
//! - a 404 counts only with DevRev's error type `not_found`: a typeless 404 is an unknown
//!   route (a misrouting proxy) and says nothing about the contact;
//! - a 301 counts only when its `Location` names the primary;
//! - a `-drop-` ref or a non-active state counts only after this tool requested the merge
//!   (otherwise it may be someone else's merge, or a deactivation by hand);
//! - absence from `rev-users.list` by the secondary's `external_ref` counts only in an answer
//!   that holds the primary under its own ref (the filter held), and only after a merge
//!   request this tool sent and saw accepted (not after a lost answer): then it is the 404 or
//!   the `-drop-` ref a look with `rev-users.get` would have seen.

use super::journal::MergedSign;
use crate::devrev::ApiError;
use crate::devrev::types::RevUser;

/// What one look at the secondary says about a merge into the primary.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// The look shows exactly this merge.
    Merged(MergedSign),
    /// Plainly not merged (yet): active, no `-drop-` ref, no redirect, `primary_identity`
    /// absent or naming the contact itself. Only such looks count towards "not applied".
    Unmerged,
    /// `primary_identity` names a third contact: DevRev merged the secondary into it, not
    /// into the primary (after this tool's request, someone else's merge got there first).
    Elsewhere(String),
    /// Neither: it proves nothing either way (why, for the log).
    Unclear(String),
}

/// Judges a contact DevRev returned. `requested`: this tool sent a merge for the pair.
pub fn of_user(secondary: &RevUser, primary: &str, requested: bool) -> Evidence {
    if let Some(pi) = secondary
        .primary_identity
        .as_ref()
        .filter(|p| !p.id.is_empty() && p.id != secondary.id)
    {
        return if pi.id == primary {
            Evidence::Merged(MergedSign::PrimaryIdentity { id: pi.id.clone() })
        } else {
            Evidence::Elsewhere(pi.id.clone())
        };
    }
    let drop_ref = secondary
        .external_ref
        .as_deref()
        .filter(|r| r.contains("-drop-"));
    let weak = if !secondary.is_active() {
        Some(MergedSign::NotActive {
            state: secondary.state.clone().unwrap_or_default(),
        })
    } else {
        drop_ref.map(|r| MergedSign::DropRef {
            external_ref: r.to_string(),
        })
    };
    match weak {
        Some(sign) if requested => Evidence::Merged(sign),
        Some(sign) => Evidence::Unclear(format!("{sign}, but no merge was requested by this tool")),
        None => Evidence::Unmerged,
    }
}

/// Judges a look by `rev-users.list` ([`crate::validate::ContactReads::look`]): the
/// secondary as listed under its ref, or `None` when it no longer is. Only for a merge
/// request this tool sent and saw accepted.
pub fn of_listing(secondary: Option<&RevUser>, primary: &str) -> Evidence {
    match secondary {
        Some(u) => of_user(u, primary, true),
        None => Evidence::Merged(MergedSign::Unlisted),
    }
}

/// Judges the answer to `rev-users.get(secondary)`. `Err` for failures that are no answer
/// about the contact at all (5xx, 429, unreachable, ...): the caller decides by their scope.
pub fn of_answer(
    answer: Result<RevUser, ApiError>,
    primary: &str,
    requested: bool,
) -> Result<Evidence, ApiError> {
    match answer {
        Ok(u) => Ok(of_user(&u, primary, requested)),
        Err(e) if e.is_devrev_not_found() => Ok(Evidence::Merged(MergedSign::NotFound)),
        Err(e) if e.is_not_found() => Ok(Evidence::Unclear(format!(
            "a 404 without DevRev's error type (an unknown route, not evidence): {e}"
        ))),
        Err(e) if e.status() == Some(301) => Ok(match e.location_as_sent() {
            Some(loc) if names(loc, primary) => Evidence::Merged(MergedSign::Moved),
            _ => Evidence::Unclear(format!(
                "a 301 whose Location ({}) does not name the primary",
                e.location().unwrap_or("none")
            )),
        }),
        // The secondary's id answered with the primary's record: DevRev resolves the
        // merged-away id to its survivor. Any other contact is no evidence: the caller fails
        // the pair with the error.
        Err(ApiError::OtherContact { answered, .. }) if answered == primary => {
            Ok(Evidence::Merged(MergedSign::AnswersAsPrimary))
        }
        Err(e) => Err(e),
    }
}

/// Does a `Location` name this contact? By its full DON, or by the DON's last segment (the
/// id part), as a whole path or query component: never a mere prefix of a longer id.
fn names(location: &str, primary: &str) -> bool {
    let short = primary.rsplit('/').next().unwrap_or(primary);
    let decoded = location
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2F", "/")
        .replace("%2f", "/");
    decoded
        .split(['?', '&', '=', '#'])
        .any(|part| part == primary || part.ends_with(&format!("/{short}")) || part == short)
        || decoded.ends_with(primary)
}

/// Where a secondary went, judged from its backed-up tickets (or conversations) as they
/// stand now. After a lost merge answer a `404` or an inactive state says only that the
/// secondary was merged (or removed) by *someone*: only the objects it was on say into whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An object that named the secondary and not the primary now names the primary.
    Ours,
    /// Such an object now names neither, but these contacts it did not name before.
    Elsewhere(Vec<String>),
    /// Nothing says: no such object, or none changed.
    Unknown,
}

/// A sign that says the secondary was merged, but not into whom: after a lost answer it
/// needs [`Destination::Ours`] before any repair or adoption.
pub fn names_no_destination(sign: &MergedSign) -> bool {
    matches!(
        sign,
        MergedSign::NotFound
            | MergedSign::NotActive { .. }
            | MergedSign::DropRef { .. }
            | MergedSign::Unlisted
    )
}

/// One object's member list `before` (the backup) and `now`: what it says about where the
/// secondary went (`None`: nothing, it did not name the secondary alone or did not change).
pub fn destination_of(
    before: &[String],
    now: &[String],
    primary: &str,
    secondary: &str,
) -> Option<Destination> {
    let names = |l: &[String], id: &str| l.iter().any(|x| x == id);
    if !names(before, secondary) || names(before, primary) || names(now, secondary) {
        return None;
    }
    if names(now, primary) {
        return Some(Destination::Ours);
    }
    let added: Vec<String> = now.iter().filter(|x| !names(before, x)).cloned().collect();
    (!added.is_empty()).then_some(Destination::Elsewhere(added))
}

/// The verdict of several objects: any sign of another destination wins over ours (a merge
/// into a third contact never adds our primary; a person may have), then ours.
pub fn destination(verdicts: impl IntoIterator<Item = Option<Destination>>) -> Destination {
    let mut ours = false;
    let mut elsewhere: Vec<String> = Vec::new();
    for v in verdicts.into_iter().flatten() {
        match v {
            Destination::Ours => ours = true,
            Destination::Elsewhere(ids) => {
                for id in ids {
                    if !elsewhere.contains(&id) {
                        elsewhere.push(id);
                    }
                }
            }
            Destination::Unknown => {}
        }
    }
    if !elsewhere.is_empty() {
        Destination::Elsewhere(elsewhere)
    } else if ours {
        Destination::Ours
    } else {
        Destination::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devrev::ErrorBody;
    use crate::devrev::types::UserSummary;

    const P: &str = "don:identity:dvrv-us-1:devo/1:revu/P1";
    const S: &str = "don:identity:dvrv-us-1:devo/1:revu/S1";

    fn sec() -> RevUser {
        RevUser {
            id: S.into(),
            email: Some("a@example.com".into()),
            external_ref: Some("user_1".into()),
            state: Some("active".into()),
            ..Default::default()
        }
    }

    fn status(status: u16, kind: Option<&str>, location: Option<&str>) -> ApiError {
        ApiError::Status {
            endpoint: "rev-users.get".into(),
            status,
            body: Box::new(ErrorBody {
                kind: kind.map(str::to_string),
                location: location.map(str::to_string),
                location_raw: crate::devrev::Unshown(location.map(str::to_string)),
                ..Default::default()
            }),
        }
    }

    fn pi(id: &str) -> Option<UserSummary> {
        Some(UserSummary {
            id: id.into(),
            ..Default::default()
        })
    }

    #[test]
    fn primary_identity_counts_only_when_it_names_the_primary() {
        let mut s = sec();
        assert_eq!(of_user(&s, P, true), Evidence::Unmerged);
        s.primary_identity = pi(S);
        assert_eq!(
            of_user(&s, P, true),
            Evidence::Unmerged,
            "itself: not merged"
        );
        s.primary_identity = pi("don:identity:dvrv-us-1:devo/1:revu/OTHER");
        assert_eq!(
            of_user(&s, P, true),
            Evidence::Elsewhere("don:identity:dvrv-us-1:devo/1:revu/OTHER".into()),
            "another contact: merged, but not into ours"
        );
        s.primary_identity = pi(P);
        assert!(matches!(
            of_user(&s, P, false),
            Evidence::Merged(MergedSign::PrimaryIdentity { .. })
        ));
    }

    #[test]
    fn drop_ref_and_state_count_only_after_our_request() {
        let mut s = sec();
        s.external_ref = Some("user_1-drop-don:x".into());
        assert!(matches!(of_user(&s, P, false), Evidence::Unclear(_)));
        assert!(matches!(
            of_user(&s, P, true),
            Evidence::Merged(MergedSign::DropRef { .. })
        ));
        let mut s = sec();
        s.state = Some("deactivated".into());
        assert!(matches!(of_user(&s, P, false), Evidence::Unclear(_)));
        assert!(matches!(
            of_user(&s, P, true),
            Evidence::Merged(MergedSign::NotActive { .. })
        ));
    }

    /// A look by `rev-users.list`: the secondary listed is judged as a `rev-users.get` answer
    /// after our request; gone from the list, it is merged (`unlisted`).
    #[test]
    fn a_look_by_list_judges_the_listed_secondary_and_counts_its_absence() {
        assert_eq!(of_listing(None, P), Evidence::Merged(MergedSign::Unlisted));
        assert_eq!(of_listing(Some(&sec()), P), Evidence::Unmerged);
        let mut s = sec();
        s.state = Some("deactivated".into());
        assert!(matches!(
            of_listing(Some(&s), P),
            Evidence::Merged(MergedSign::NotActive { .. })
        ));
        assert!(names_no_destination(&MergedSign::Unlisted));
    }

    /// The secondary's id answered with the primary's record is the merge; with a third
    /// contact's, no evidence at all: the error goes to the caller.
    #[test]
    fn an_answer_naming_the_primary_is_evidence_another_is_an_error() {
        let other = |answered: &str| ApiError::OtherContact {
            endpoint: "rev-users.get".into(),
            asked: "S".into(),
            answered: answered.into(),
        };
        assert_eq!(
            of_answer(Err(other(P)), P, true).unwrap(),
            Evidence::Merged(MergedSign::AnswersAsPrimary)
        );
        assert!(of_answer(Err(other("Q")), P, true).is_err());
    }

    #[test]
    fn errors_count_only_when_exact() {
        let e = |st, k, l| of_answer(Err(status(st, k, l)), P, true);
        assert_eq!(
            e(404, Some("not_found"), None).unwrap(),
            Evidence::Merged(MergedSign::NotFound)
        );
        assert!(matches!(e(404, None, None).unwrap(), Evidence::Unclear(_)));
        let moved = format!("https://api.devrev.ai/rev-users.get?id={P}");
        assert_eq!(
            e(301, None, Some(&moved)).unwrap(),
            Evidence::Merged(MergedSign::Moved)
        );
        assert_eq!(
            e(301, None, Some("/rev-users/P1")).unwrap(),
            Evidence::Merged(MergedSign::Moved)
        );
        assert!(matches!(
            e(301, None, Some("/rev-users/P10")).unwrap(),
            Evidence::Unclear(_)
        ));
        assert!(matches!(e(301, None, None).unwrap(), Evidence::Unclear(_)));
        assert!(e(500, Some("internal_error"), None).is_err());
    }

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_destination_comes_from_objects_that_named_the_secondary_alone() {
        // Moved to ours.
        assert_eq!(
            destination_of(&v(&[S, "x"]), &v(&["x", P]), P, S),
            Some(Destination::Ours)
        );
        // Moved to a third contact.
        assert_eq!(
            destination_of(&v(&[S]), &v(&["X"]), P, S),
            Some(Destination::Elsewhere(v(&["X"])))
        );
        // Still naming the secondary, or naming the primary already: says nothing.
        assert_eq!(destination_of(&v(&[S]), &v(&[S]), P, S), None);
        assert_eq!(destination_of(&v(&[S, P]), &v(&[P]), P, S), None);
        assert_eq!(destination_of(&v(&["y"]), &v(&["y", "X"]), P, S), None);
        // The secondary just removed, nobody added: nothing either.
        assert_eq!(destination_of(&v(&[S, "y"]), &v(&["y"]), P, S), None);
        // Aggregated: another destination wins, then ours, else unknown.
        assert_eq!(
            destination([Some(Destination::Ours), None]),
            Destination::Ours
        );
        assert_eq!(
            destination([
                Some(Destination::Ours),
                Some(Destination::Elsewhere(v(&["X"])))
            ]),
            Destination::Elsewhere(v(&["X"]))
        );
        assert_eq!(destination([None, None]), Destination::Unknown);
        assert!(names_no_destination(&MergedSign::NotFound));
        assert!(!names_no_destination(&MergedSign::Moved));
    }
}
