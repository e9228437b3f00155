//! The proposal for a group: which contact survives, by a fixed order of rules, and which
//! rule decided (the `why` column), so a person can check it in one glance.
//!
//! The order (docs/review.md):
//! 1. `-drop-` rows are left out: they are leftovers of an earlier merge, never merged again.
//! 2. The survivor must be verified if any member is (DevRev refuses an unverified contact
//!    into a verified one); known only from live facts (`--check-live`, [`propose_live`]),
//!    so the offline proposal skips it. With live facts, inactive contacts are left out and
//!    a group spread over several accounts gets no proposal.
//! 3. The `--keep` convention (`revu`: the `REVU-` contact; `user`: the `user_` contact).
//! 4. The most tickets (`TICKET_COUNT`; a member without a count stops this rule).
//! 5. The oldest (`CREATED_AT`; a member without a readable time stops this rule).
//!
//! Each rule narrows the candidates; the first that leaves one decides. When none does, the
//! group gets no proposal: a tie is for a person.

use chrono::NaiveDateTime;

use super::live::{Fact, Facts};
use crate::detect::{Contact, RefClass};
use crate::options::Keep;

/// What the rules propose for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The survivor's `rev_user_id`, or `None` when no rule found a single one.
    pub keep: Option<String>,
    /// The members proposed for merging into `keep` (empty without a survivor).
    pub merge: Vec<String>,
    /// Which rule decided, or why nothing is proposed.
    pub why: String,
}

impl Proposal {
    /// Nothing proposed, and why.
    pub fn none(why: &str) -> Self {
        Proposal {
            keep: None,
            merge: Vec::new(),
            why: why.to_string(),
        }
    }
}

/// Proposes a survivor among `members`, offline (rule 2 needs live facts).
pub fn propose(members: &[&Contact], keep: Keep) -> Proposal {
    propose_live(members, keep, None)
}

/// [`propose`] with the live facts of `--check-live`: inactive contacts are left out, a group
/// spread over several accounts gets no proposal (different customers are never proposed
/// for a merge), and rule 2 applies: the survivor is verified if any member is, and an
/// unverified member is not proposed into a verified survivor (DevRev refuses it).
pub fn propose_live(members: &[&Contact], keep: Keep, facts: Option<&Facts>) -> Proposal {
    let none = |why: String| Proposal {
        keep: None,
        merge: Vec::new(),
        why,
    };
    if has_duplicate_ids(members) {
        return none("the same REV_USER_ID is on several rows: fix the export first".into());
    }
    let mut cands: Vec<&Contact> = members
        .iter()
        .copied()
        .filter(|c| c.ref_class() != RefClass::Drop)
        .collect();
    let fact = |c: &Contact| facts.and_then(|f| f.get(&c.rev_user_id));
    if facts.is_some() {
        cands.retain(|c| fact(c).is_none_or(Fact::active));
    }
    if cands.len() < 2 {
        return none(
            "fewer than two contacts to merge (-drop- rows and inactive contacts are left alone)"
                .into(),
        );
    }
    let mut accounts: Vec<&str> = cands
        .iter()
        .filter_map(|c| fact(c).and_then(|f| f.account.as_deref()))
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    if accounts.len() > 1 {
        return none(format!(
            "the contacts are in {} accounts ({}): different customers are never proposed for \
             a merge, and a merge between them is refused",
            accounts.len(),
            accounts.join(", ")
        ));
    }
    let all = cands.clone();
    let decided = |winner: &Contact, why: String| {
        let verified_survivor = fact(winner).and_then(|f| f.verified) == Some(true);
        Proposal {
            keep: Some(winner.rev_user_id.clone()),
            merge: all
                .iter()
                .filter(|c| c.rev_user_id != winner.rev_user_id)
                // DevRev refuses an unverified contact into a verified one.
                .filter(|c| !(verified_survivor && fact(c).and_then(|f| f.verified) == Some(false)))
                .map(|c| c.rev_user_id.clone())
                .collect(),
            why,
        }
    };

    // Rule 2 (live facts only): the survivor is verified if any member is.
    if facts.is_some() {
        let verified: Vec<&Contact> = cands
            .iter()
            .copied()
            .filter(|c| fact(c).and_then(|f| f.verified) == Some(true))
            .collect();
        match verified.len() {
            0 => {}
            1 => {
                return decided(
                    verified[0],
                    "the only verified contact (DevRev refuses an unverified contact into a \
                     verified one)"
                        .into(),
                );
            }
            _ => cands = verified,
        }
    }

    // Rule 3: the --keep convention.
    let convention = match keep {
        Keep::Revu => Some((RefClass::Revu, "--keep revu: the only REVU- contact")),
        Keep::User => Some((RefClass::User, "--keep user: the only user_ contact")),
        Keep::Auto => None,
    };
    if let Some((class, why)) = convention {
        let matching: Vec<&Contact> = cands
            .iter()
            .copied()
            .filter(|c| c.ref_class() == class)
            .collect();
        match matching.len() {
            1 => return decided(matching[0], why.to_string()),
            0 => {}
            _ => cands = matching,
        }
    }

    // Rule 4: the most tickets.
    if let Some(counts) = cands
        .iter()
        .map(|c| c.ticket_count)
        .collect::<Option<Vec<u64>>>()
    {
        let most = counts.iter().copied().max().unwrap_or(0);
        let top: Vec<&Contact> = cands
            .iter()
            .zip(&counts)
            .filter(|(_, n)| **n == most)
            .map(|(c, _)| *c)
            .collect();
        if top.len() == 1 {
            return decided(top[0], format!("the most tickets ({most})"));
        }
        cands = top;
    }

    // Rule 5: the oldest.
    if let Some(times) = cands
        .iter()
        .map(|c| parse_time(&c.created_at))
        .collect::<Option<Vec<NaiveDateTime>>>()
    {
        let oldest = times.iter().min().copied();
        let first: Vec<&Contact> = cands
            .iter()
            .zip(&times)
            .filter(|(_, t)| Some(**t) == oldest)
            .map(|(c, _)| *c)
            .collect();
        if first.len() == 1 {
            return decided(
                first[0],
                format!("the oldest (created {})", first[0].created_at.trim()),
            );
        }
    }
    none(format!(
        "a tie between {}: no rule decides; choose by hand",
        cands
            .iter()
            .map(|c| c.display_id())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn has_duplicate_ids(members: &[&Contact]) -> bool {
    let mut ids: Vec<&str> = members.iter().map(|c| c.rev_user_id.as_str()).collect();
    ids.sort_unstable();
    ids.windows(2).any(|w| w[0] == w[1])
}

/// The export's timestamps: `2024-12-03 15:16:07.123` (no zone), ISO 8601 with `T`, with or
/// without fractions or a trailing `Z`.
fn parse_time(raw: &str) -> Option<NaiveDateTime> {
    let t = raw.trim().trim_end_matches('Z');
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(raw.trim())
                .ok()
                .map(|d| d.naive_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, r: &str, tickets: Option<u64>, created: &str) -> Contact {
        Contact {
            line: 2,
            rev_user_id: format!("don:identity:dvrv-us-1:devo/1:revu/{id}"),
            display_name: id.into(),
            email: "a@x.com".into(),
            external_ref: r.into(),
            full_name: String::new(),
            created_at: created.into(),
            updated_at: String::new(),
            ticket_count: tickets,
        }
    }

    fn keep_of(p: &Proposal) -> Option<&str> {
        p.keep.as_deref().and_then(|k| k.rsplit('/').next())
    }

    #[test]
    fn the_keep_convention_decides_first() {
        let (a, b, d) = (
            c("A", "REVU-A", Some(0), "2024-01-01 00:00:00"),
            c("B", "user_b", Some(9), "2020-01-01 00:00:00"),
            c("D", "user_d", Some(1), "2021-01-01 00:00:00"),
        );
        let p = propose(&[&a, &b, &d], Keep::Revu);
        assert_eq!(keep_of(&p), Some("A"));
        assert_eq!(p.merge.len(), 2);
        assert!(p.why.starts_with("--keep revu"), "{}", p.why);
    }

    #[test]
    fn then_the_most_tickets_then_the_oldest_and_a_tie_proposes_nothing() {
        let (b, d) = (
            c("B", "user_b", Some(9), "2024-01-01 00:00:00"),
            c("D", "user_d", Some(1), "2020-01-01 00:00:00"),
        );
        let p = propose(&[&b, &d], Keep::Revu);
        assert_eq!(keep_of(&p), Some("B"));
        assert_eq!(p.why, "the most tickets (9)");

        let (b, d) = (
            c("B", "user_b", Some(3), "2024-01-01 00:00:00.5"),
            c("D", "user_d", Some(3), "2020-01-01T00:00:00Z"),
        );
        let p = propose(&[&b, &d], Keep::Revu);
        assert_eq!(keep_of(&p), Some("D"));
        assert!(p.why.starts_with("the oldest"), "{}", p.why);

        let (b, d) = (
            c("B", "user_b", Some(3), "2024-01-01 00:00:00"),
            c("D", "user_d", Some(3), "2024-01-01 00:00:00"),
        );
        let p = propose(&[&b, &d], Keep::Revu);
        assert_eq!(p.keep, None);
        assert!(p.why.contains("tie"), "{}", p.why);
        assert!(p.merge.is_empty());
    }

    #[test]
    fn an_unknown_count_or_time_stops_that_rule_and_drop_rows_are_left_out() {
        let (b, d, x) = (
            c("B", "user_b", None, "2024-01-01 00:00:00"),
            c("D", "user_d", Some(5), "2020-01-01 00:00:00"),
            c("X", "user_x-drop-1", Some(99), "2010-01-01 00:00:00"),
        );
        let p = propose(&[&b, &d, &x], Keep::Revu);
        assert_eq!(
            keep_of(&p),
            Some("D"),
            "oldest decides, tickets unknown for B"
        );
        assert_eq!(p.merge.len(), 1, "the -drop- row is never proposed: {p:?}");
        let p = propose(&[&b, &x], Keep::Revu);
        assert_eq!(p.keep, None);
    }

    fn fact(verified: Option<bool>, state: Option<&str>, account: &str) -> Fact {
        Fact {
            verified,
            state: state.map(str::to_string),
            account: Some(account.into()),
        }
    }

    #[test]
    fn live_facts_make_the_survivor_verified_and_never_cross_accounts() {
        let a = c("A", "user_a", Some(9), "2024-01-01 00:00:00");
        let b = c("B", "user_b", Some(1), "2023-01-01 00:00:00");
        let d = c("D", "user_d", Some(5), "2022-01-01 00:00:00");
        let members = [&a, &b, &d];
        // Offline: the most tickets.
        assert_eq!(keep_of(&propose(&members, Keep::Revu)), Some("A"));
        let facts = |fa, fb, fd| -> Facts {
            [(&a, fa), (&b, fb), (&d, fd)]
                .into_iter()
                .map(|(x, f)| (x.rev_user_id.clone(), f))
                .collect()
        };
        // Live: B is the only verified contact; the unverified ones are not proposed into it.
        let f = facts(
            fact(Some(false), None, "org1"),
            fact(Some(true), None, "org1"),
            fact(Some(false), None, "org1"),
        );
        let p = propose_live(&members, Keep::Revu, Some(&f));
        assert_eq!(keep_of(&p), Some("B"));
        assert!(p.why.contains("only verified"), "{}", p.why);
        assert!(
            p.merge.is_empty(),
            "DevRev refuses unverified into verified"
        );
        // Two verified: rule 2 narrows, the tickets decide among them, and the verified
        // one is proposed into the survivor.
        let f = facts(
            fact(Some(false), None, "org1"),
            fact(Some(true), None, "org1"),
            fact(Some(true), None, "org1"),
        );
        let p = propose_live(&members, Keep::Revu, Some(&f));
        assert_eq!(keep_of(&p), Some("D"));
        assert_eq!(p.merge, vec![b.rev_user_id.clone()]);
        // Two accounts: no proposal at all.
        let f = facts(
            fact(Some(true), None, "org1"),
            fact(Some(true), None, "org2"),
            fact(Some(true), None, "org1"),
        );
        let p = propose_live(&members, Keep::Revu, Some(&f));
        assert_eq!(p.keep, None);
        assert!(p.why.contains("2 accounts"), "{}", p.why);
        // An inactive contact is left out: the other two decide.
        let f = facts(
            fact(Some(true), Some("deactivated"), "org1"),
            fact(Some(true), None, "org1"),
            fact(Some(true), None, "org1"),
        );
        let p = propose_live(&members, Keep::Revu, Some(&f));
        assert_eq!(keep_of(&p), Some("D"));
        assert_eq!(p.merge, vec![b.rev_user_id.clone()]);
    }
}
