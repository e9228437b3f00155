//! The ledger: every journaled record indexed by contact id, so that no contact is merged away
//! twice, whatever the CSV says.
//!
//! The journal is keyed by pair (`primary <- secondary`). A refreshed export can pair the same
//! contact with someone else: the secondary of a merge whose answer was lost, now paired with
//! a new primary; a primary that was itself merged away earlier; a contact `--restore`
//! recreated, which forms a clean pair again. Looking records up by pair key alone sends a
//! second `rev-users.merge` for a contact DevRev may already have merged. The ledger answers
//! "is this contact already part of a merge this tool made?" for the schedule (the merge run)
//! and the preview, from one rule ([`Ledger::hold_of`]).

use std::collections::HashMap;

use super::journal::{Hold, PairRecord, PairStatus, SavepointFile, SkipReason, pair_key};

/// Contact id -> the records that hold it and why (the first is the one reported).
#[derive(Debug, Default)]
pub struct Ledger<'j> {
    holds: HashMap<&'j str, Vec<Holding<'j>>>,
}

/// One record's hold on a contact.
#[derive(Debug, Clone, Copy)]
struct Holding<'j> {
    key: &'j str,
    hold: Hold,
    /// The holding record's decided group, if it is one merge of a group.
    group: Option<&'j str>,
}

/// What one record holds: its primary's and its secondary's hold (`None`: it holds nothing,
/// e.g. it was skipped or failed before any merge request).
fn holds_of(rec: &PairRecord) -> (Option<Hold>, Option<Hold>) {
    match rec.status {
        PairStatus::Restored => (Some(Hold::Restored), Some(Hold::Restored)),
        // The secondary went to another contact: it is merged away, our primary untouched.
        PairStatus::MergedElsewhere => (None, Some(Hold::MergedAway)),
        _ if rec.merged.is_some() || rec.status.is_final() => {
            (Some(Hold::Survivor), Some(Hold::MergedAway))
        }
        _ if rec.merge_in_flight() => (Some(Hold::InFlight), Some(Hold::InFlight)),
        _ => (None, None),
    }
}

impl<'j> Ledger<'j> {
    pub fn of(journal: &'j SavepointFile) -> Self {
        let mut ledger = Ledger::default();
        for (key, rec) in &journal.pairs {
            let group = rec.group.as_ref().map(|g| g.id.as_str());
            let (primary, secondary) = holds_of(rec);
            if let Some(h) = primary {
                ledger.hold(&rec.primary, key, h, group);
            }
            if let Some(h) = secondary {
                ledger.hold(&rec.secondary, key, h, group);
            }
            if let Some(r) = &rec.restored {
                ledger.hold(&r.new_contact, key, Hold::Recreated, group);
            }
        }
        ledger
    }

    /// Every contact no new merge may take, with why: merged away, in flight, restored or
    /// recreated by `--restore`. (A survivor is left out: a decided group's survivor takes
    /// its next member.) What the review file proposes leaves these out.
    pub fn untouchable(&self) -> impl Iterator<Item = (&'j str, Hold)> + '_ {
        self.holds.iter().filter_map(|(c, hs)| {
            hs.iter()
                .find(|h| h.hold != Hold::Survivor)
                .map(|h| (*c, h.hold))
        })
    }

    /// Records a hold; a contact merged away keeps that reason first (it is the one that
    /// matters most to the person reading why a pair was not run).
    fn hold(&mut self, contact: &'j str, key: &'j str, hold: Hold, group: Option<&'j str>) {
        let all = self.holds.entry(contact).or_default();
        let h = Holding { key, hold, group };
        if hold == Hold::MergedAway {
            all.insert(0, h);
        } else {
            all.push(h);
        }
    }

    /// The hold on `contact`, unless it comes from the record of `primary <- secondary`
    /// itself (either role order): the schedule finishes or reports that one by its key.
    pub fn hold_of(
        &self,
        contact: &str,
        primary: &str,
        secondary: &str,
    ) -> Option<(&'j str, Hold)> {
        self.hold_in(contact, primary, secondary, None)
    }

    /// [`Self::hold_of`] for a merge of decided group `group`: the survivor of an earlier
    /// merge of the same group (merged, or in flight) is not held by it: a group merges every
    /// member into the same survivor, one after the other, and the run starts the next only
    /// once the one before it is merged.
    fn hold_in(
        &self,
        contact: &str,
        primary: &str,
        secondary: &str,
        group: Option<&str>,
    ) -> Option<(&'j str, Hold)> {
        let own =
            |key: &str| key == pair_key(primary, secondary) || key == pair_key(secondary, primary);
        self.holds
            .get(contact)?
            .iter()
            .find(|h| {
                // The same survivor in an earlier merge of the same group, merged or still
                // in flight: the run finishes that one first and starts this one only if it
                // ended merged (`scheduler/`), so it holds nothing against this one.
                let same_group_survivor = matches!(h.hold, Hold::Survivor | Hold::InFlight)
                    && contact == primary
                    && group.is_some()
                    && h.group == group;
                !own(h.key) && !same_group_survivor
            })
            .map(|h| (h.key, h.hold))
    }

    /// Why the pair `primary <- secondary` must not start, if it must not: one of its contacts
    /// is held by another record. The secondary is looked at first (a second merge of a
    /// merged-away contact is the worst case).
    pub fn blocks(&self, primary: &str, secondary: &str) -> Option<SkipReason> {
        self.blocks_in(primary, secondary, None)
    }

    /// [`Self::blocks`] for one merge of decided group `group` (`None`: a clean pair).
    pub fn blocks_in(
        &self,
        primary: &str,
        secondary: &str,
        group: Option<&str>,
    ) -> Option<SkipReason> {
        [secondary, primary].into_iter().find_map(|c| {
            self.hold_in(c, primary, secondary, group)
                .map(|(other, hold)| SkipReason::HeldByLedger {
                    contact: c.to_string(),
                    other: other.to_string(),
                    hold,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::merge::journal::{MergeIntent, MergeOutcome, Restored};
    use crate::options::Keep;

    fn rec(p: &str, s: &str, status: PairStatus) -> PairRecord {
        let mut r = PairRecord::new("a@x.com", p, s, Keep::Revu);
        r.status = status;
        r
    }

    fn journal(recs: Vec<PairRecord>) -> SavepointFile {
        let mut f = SavepointFile::new();
        for r in recs {
            f.pairs.insert(pair_key(&r.primary, &r.secondary), r);
        }
        f
    }

    fn held(l: &Ledger<'_>, p: &str, s: &str) -> Option<(String, String, Hold)> {
        match l.blocks(p, s)? {
            SkipReason::HeldByLedger {
                contact,
                other,
                hold,
            } => Some((contact, other, hold)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_outcome_holds_its_secondary_against_a_new_primary() {
        let mut lost = rec("P", "S", PairStatus::Unconfirmed);
        lost.merge = Some(MergeIntent {
            attempt: 1,
            requested_at: Utc::now(),
            outcome: Some(MergeOutcome::Unknown {
                reason: "timeout".into(),
            }),
            unmerged_since: None,
            watch_until: None,
        });
        let j = journal(vec![lost]);
        let l = Ledger::of(&j);
        assert_eq!(
            held(&l, "P2", "S"),
            Some(("S".into(), pair_key("P", "S"), Hold::InFlight))
        );
        // Its own pair, in either order, is the schedule's to finish, not held.
        assert_eq!(held(&l, "P", "S"), None);
        assert_eq!(held(&l, "S", "P"), None);
        assert_eq!(held(&l, "Q", "R"), None);
    }

    #[test]
    fn merged_away_survivor_restored_and_recreated_contacts_are_held() {
        let merged = rec("P", "S", PairStatus::Merged);
        let mut restored = rec("A", "B", PairStatus::Restored);
        restored.restored = Some(Restored {
            at: Utc::now(),
            new_contact: "B2".into(),
            restore_journal: "restore-savepoint.json".into(),
            report: None,
        });
        let never_sent = rec("X", "Y", PairStatus::Failed);
        let j = journal(vec![merged, restored, never_sent]);
        let l = Ledger::of(&j);
        // A primary that was itself merged away earlier.
        assert_eq!(held(&l, "S", "T").map(|h| h.2), Some(Hold::MergedAway));
        assert_eq!(held(&l, "P", "T").map(|h| h.2), Some(Hold::Survivor));
        assert_eq!(held(&l, "A", "B2").map(|h| h.2), Some(Hold::Recreated));
        assert_eq!(held(&l, "C", "A").map(|h| h.2), Some(Hold::Restored));
        // A record that never sent a merge holds nothing.
        assert_eq!(held(&l, "X", "Z"), None);
    }

    #[test]
    fn a_group_survivor_takes_its_next_member_and_nobody_else() {
        use crate::merge::journal::GroupLink;
        let link = |id: &str, index| GroupLink {
            id: id.into(),
            index,
            len: 3,
            adopt: None,
            decisions: "d.csv".into(),
        };
        let mut first = rec("K", "M1", PairStatus::Merged);
        first.group = Some(link("G-1", 0));
        // The group's second merge was sent and its answer lost: in flight.
        let mut second = rec("K", "M2", PairStatus::Unconfirmed);
        second.group = Some(link("G-1", 1));
        second.merge = Some(MergeIntent {
            attempt: 1,
            requested_at: Utc::now(),
            outcome: None,
            unmerged_since: None,
            watch_until: None,
        });
        let j = journal(vec![first, second]);
        let l = Ledger::of(&j);
        // The same group's next merge into the same survivor is not held: the run finishes
        // the one in flight first, and starts this one only if that one merged.
        assert_eq!(l.blocks_in("K", "M3", Some("G-1")), None);
        // The in-flight member itself is never merged elsewhere.
        assert!(l.blocks_in("Q", "M2", Some("G-1")).is_some());
        // The same group's next merge into the same survivor starts.
        assert_eq!(l.blocks_in("K", "M2", Some("G-1")), None);
        // A clean pair, or another group, with that survivor is held as before.
        assert_eq!(
            held(&l, "K", "X"),
            Some(("K".into(), pair_key("K", "M1"), Hold::Survivor))
        );
        assert!(l.blocks_in("K", "M2", Some("G-2")).is_some());
        // The merged-away member is never merged again, in its group or not.
        assert!(
            l.blocks_in("K", "M1", Some("G-1")).is_none(),
            "its own record"
        );
        assert!(l.blocks_in("Q", "M1", Some("G-1")).is_some());
        // The survivor merged away into someone else: held, whatever the group.
        assert!(l.blocks_in("M2", "K", Some("G-1")).is_some());
    }
}
