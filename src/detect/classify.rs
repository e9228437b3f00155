//! Classifying what the passes could not settle from hashes alone (DESIGN §5): candidate
//! groups, predicted pairs that turned out to be hash collisions, and duplicate ids confirmed
//! on the real text.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::scan::{HashSet64, Pass2, Tally, id_hash, sort_pairs_by_email};
use super::{Contact, Pair, RefClass, ReviewGroup, ReviewReason, Singles, normalize_email_into};
use crate::options::Keep;

/// The plan's buckets once every group is classified, sorted so the plan does not depend on
/// the order of the rows.
pub(super) struct Classified {
    pub(super) pairs: Vec<Pair>,
    pub(super) needs_review: Vec<ReviewGroup>,
    pub(super) no_email: Vec<Contact>,
    pub(super) singles: Singles,
    pub(super) emails: u64,
}

/// Classifies the candidate groups and the broken pairs, then sorts every bucket.
pub(super) fn classify(
    read: Pass2,
    dup_id_hashes: &HashSet64,
    tally: Tally,
    keep: Keep,
) -> Classified {
    let Pass2 {
        mut pairs,
        groups,
        mut no_email,
        mut broken,
    } = read;
    let Tally {
        mut singles,
        mut emails,
    } = tally;
    let dup_ids = confirm_duplicate_ids(&groups, &no_email, dup_id_hashes);
    let mut loose: Vec<Vec<Contact>> = Vec::new();
    broken.sort_unstable();
    for index in broken.into_iter().rev() {
        let p = pairs.swap_remove(index as usize);
        loose.push(vec![p.primary, p.secondary]);
    }
    let mut needs_review = Vec::with_capacity(groups.len());
    for group in groups.into_iter().chain(loose) {
        for (email, contacts) in split_by_email(group) {
            match classify_group(email, contacts, &dup_ids, keep) {
                Outcome::Single(class) => singles.add(class),
                Outcome::Pair(p) => pairs.push(p),
                Outcome::Review(g) => needs_review.push(g),
            }
            emails += 1;
        }
        // The group itself was counted once in pass 1.
        emails -= 1;
    }
    sort_pairs_by_email(&mut pairs);
    needs_review.sort_by(|a, b| (a.email.as_str(), a.reason).cmp(&(b.email.as_str(), b.reason)));
    no_email.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    Classified {
        pairs,
        needs_review,
        no_email,
        singles,
        emails,
    }
}

/// Confirms duplicate ids on the real text (a hash match alone proves nothing). Predicted
/// pairs never hold a suspicious id, so groups and no-email rows are all there is to see.
fn confirm_duplicate_ids(
    groups: &[Vec<Contact>],
    no_email: &[Contact],
    dup_id_hashes: &HashSet64,
) -> HashSet<String> {
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for c in groups.iter().flatten().chain(no_email.iter()) {
        if dup_id_hashes.contains(&id_hash(&c.rev_user_id)) {
            *seen.entry(c.rev_user_id.as_str()).or_insert(0) += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect()
}

/// Splits a candidate group on the real normalized email: rows only share a candidate group
/// because their email hashes matched. Nearly always one part, returned without copying.
fn split_by_email(group: Vec<Contact>) -> Vec<(String, Vec<Contact>)> {
    let first = group
        .first()
        .map(Contact::normalized_email)
        .unwrap_or_default();
    let mut buf = String::new();
    if group.iter().all(|c| {
        normalize_email_into(&c.email, &mut buf);
        buf == first
    }) {
        return vec![(first, group)];
    }
    let mut by_email: BTreeMap<String, Vec<Contact>> = BTreeMap::new();
    for c in group {
        by_email.entry(c.normalized_email()).or_default().push(c);
    }
    by_email.into_iter().collect()
}

/// Where one email's rows end up. (Short-lived and moved at once, so its size is moot.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Single(RefClass),
    Pair(Pair),
    Review(ReviewGroup),
}

/// DESIGN §5: exactly one `REVU-` and one `user_` row is a clean pair; any other group of two
/// or more rows (or a row whose id is also on another row) needs review, with its reason.
fn classify_group(
    email: String,
    mut contacts: Vec<Contact>,
    dup_ids: &HashSet<String>,
    keep: Keep,
) -> Outcome {
    contacts.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let dups: Vec<&str> = {
        let mut v: Vec<&str> = contacts
            .iter()
            .map(|c| c.rev_user_id.as_str())
            .filter(|id| dup_ids.contains(*id))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if contacts.len() == 1 && dups.is_empty() {
        return Outcome::Single(contacts[0].ref_class());
    }
    let (mut revu, mut user, mut drop, mut other) = (0, 0, 0, 0);
    for c in &contacts {
        match c.ref_class() {
            RefClass::Revu => revu += 1,
            RefClass::User => user += 1,
            RefClass::Drop => drop += 1,
            RefClass::Other => other += 1,
        }
    }
    let (reason, detail) = if !dups.is_empty() {
        (
            ReviewReason::DuplicateId,
            format!(
                "REV_USER_ID {} is on more than one row of the export",
                dups.join(", ")
            ),
        )
    } else if drop > 0 {
        (
            ReviewReason::DropRef,
            format!("{drop} row(s) with a -drop- ref, {revu} REVU-, {user} user_, {other} other"),
        )
    } else if other > 0 {
        (
            ReviewReason::OtherRef,
            format!(
                "{other} row(s) with a ref that is neither REVU- nor user_, {revu} REVU-, {user} user_"
            ),
        )
    } else if revu >= 2 {
        (
            ReviewReason::SeveralRevu,
            format!("{revu} REVU- rows and {user} user_ rows"),
        )
    } else if revu == 1 && user >= 2 {
        (
            ReviewReason::RevuWithSeveralUser,
            format!("1 REVU- row and {user} user_ rows"),
        )
    } else if revu == 0 && user >= 2 {
        (
            ReviewReason::SeveralUser,
            format!("{user} user_ rows and no REVU- row"),
        )
    } else {
        // Exactly one REVU- and one user_ row and nothing else.
        debug_assert!(revu == 1 && user == 1 && contacts.len() == 2);
        let mut it = contacts.into_iter();
        let (Some(revu_c), Some(user_c)) = (it.next(), it.next()) else {
            unreachable!("a group of two rows has two rows")
        };
        let (primary, secondary) = match keep.planned() {
            Keep::User => (user_c, revu_c),
            Keep::Revu | Keep::Auto => (revu_c, user_c),
        };
        return Outcome::Pair(Pair {
            email,
            primary,
            secondary,
        });
    };
    Outcome::Review(ReviewGroup {
        email,
        reason,
        detail,
        contacts,
    })
}
