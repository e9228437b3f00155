//! Which pairs a merge run works on, and in which order: a pure function of the plan's clean
//! pairs and the savepoint's records, plus the `--max-merges` gate the run applies as it goes.
//!
//! Pairs whose merge is already in flight (requested in an earlier run and not finished) go
//! first, even if they have since left the CSV: a requested merge cannot be undone, so it is
//! always carried through Reconcile. Pairs that left the CSV before their merge was requested
//! are left alone and listed in the report.

use std::collections::HashSet;

use super::journal::{GroupLink, SavepointFile, SkipReason, pair_key};
use super::ledger::Ledger;
use crate::detect::Pair;

/// One pair the run works on.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'p> {
    pub key: String,
    /// The CSV's view of the pair; `None` for an in-flight pair known only from the journal
    /// (it left the CSV, or `--keep` changed and it is finished the way it was started).
    pub pair: Option<&'p Pair>,
    /// Resumed with a merge already requested: finished first, never held back by
    /// `--max-merges`.
    pub in_flight: bool,
    /// The pair is in this run's CSV (in either role order).
    pub in_csv: bool,
    /// One merge of a decided group (`--decisions`): started only once the group's merge
    /// before it is merged and reconciled.
    pub group: Option<GroupLink>,
}

/// A journaled pair the run leaves alone, reported from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    pub key: String,
    /// The pair is in this run's CSV (in either role order).
    pub in_csv: bool,
    /// Its record is final (merged or already merged).
    pub finished: bool,
}

impl Earlier {
    /// Never merged and no longer in the CSV: left alone, reported as `left_csv` (not a
    /// failure).
    pub fn left_csv(&self) -> bool {
        !self.in_csv && !self.finished
    }
}

/// What a run does, decided before its first API call.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule<'p> {
    /// Pairs to run, in order: in-flight merges first, then the CSV's order.
    pub work: Vec<Item<'p>>,
    /// Journaled pairs not run now.
    pub earlier: Vec<Earlier>,
    /// CSV pairs not started because a contact of theirs is held by another journaled record
    /// (the ledger): reported as skipped with that reason, never sent.
    pub held: Vec<Held<'p>>,
}

/// A CSV pair the ledger keeps from starting.
#[derive(Debug, Clone, PartialEq)]
pub struct Held<'p> {
    pub key: String,
    pub pair: &'p Pair,
    pub reason: SkipReason,
    /// The decided group the held merge belongs to: the rest of that group waits too.
    pub group: Option<GroupLink>,
}

/// Decides the run from the plan's clean pairs (in CSV order) and the journal.
pub fn schedule<'p>(pairs: &'p [Pair], journal: &SavepointFile) -> Schedule<'p> {
    schedule_all(pairs.iter().map(|p| (p, None)), journal)
}

/// [`schedule`] with the merges of decided groups after the clean pairs, each group in its
/// order.
pub fn schedule_with_groups<'p>(
    pairs: &'p [Pair],
    members: &'p [(Pair, GroupLink)],
    journal: &SavepointFile,
) -> Schedule<'p> {
    let all = pairs
        .iter()
        .map(|p| (p, None))
        .chain(members.iter().map(|(p, g)| (p, Some(g))));
    schedule_all(all, journal)
}

fn schedule_all<'p>(
    pairs: impl Iterator<Item = (&'p Pair, Option<&'p GroupLink>)>,
    journal: &SavepointFile,
) -> Schedule<'p> {
    let ledger = Ledger::of(journal);
    let mut held = Vec::new();
    let mut earlier = Vec::new();
    let mut in_flight = Vec::new();
    let mut fresh = Vec::with_capacity(pairs.size_hint().0);
    // The journal's keys the CSV covers (both role orders where the journal has the swapped
    // one). Only journaled keys: a set of every CSV key would cost as much as the keys
    // themselves on a large plan, and only the journal's are looked up.
    let mut covered: HashSet<&str> = HashSet::new();
    let item =
        |key: String, pair: Option<&'p Pair>, in_flight, in_csv, group: Option<&GroupLink>| Item {
            key,
            pair,
            in_flight,
            in_csv,
            group: group.cloned(),
        };
    for (pair, group) in pairs {
        let (p, s) = (&pair.primary.rev_user_id, &pair.secondary.rev_user_id);
        let key = pair_key(p, s);
        if let Some((k, _)) = journal.pairs.get_key_value(&key) {
            covered.insert(k);
        }
        let reversed = pair_key(s, p);
        if let Some((rev_key, rev)) = journal.pairs.get_key_value(&reversed) {
            // The same two contacts with primary and secondary swapped (`--keep` changed).
            // What was started that way is finished that way: going the other way now could
            // merge them twice.
            covered.insert(rev_key);
            if rev.status.is_final() {
                earlier.push(Earlier {
                    key: reversed,
                    in_csv: true,
                    finished: true,
                });
                continue;
            }
            if rev.merge_in_flight() {
                in_flight.push(item(reversed, None, true, true, group));
                continue;
            }
            // Nothing was sent to DevRev under the old roles: run with the new ones.
        }
        match journal.pairs.get(&key) {
            Some(rec) if rec.status.is_final() => earlier.push(Earlier {
                key,
                in_csv: true,
                finished: true,
            }),
            // Its own merge may have been sent: finished whatever else the ledger holds.
            Some(rec) if rec.merge_in_flight() => {
                in_flight.push(item(key, Some(pair), true, true, group));
            }
            _ => match ledger.blocks_in(p, s, group.map(|g| g.id.as_str())) {
                Some(reason) => held.push(Held {
                    key,
                    pair,
                    reason,
                    group: group.cloned(),
                }),
                None => fresh.push(item(key, Some(pair), false, true, group)),
            },
        }
    }
    for (key, rec) in &journal.pairs {
        if covered.contains(key.as_str()) {
            continue;
        }
        if rec.merge_in_flight() && !rec.status.is_final() {
            in_flight.push(item(key.clone(), None, true, false, rec.group.as_ref()));
        } else {
            // Finished earlier (reported as such), or never merged and now out of the CSV.
            earlier.push(Earlier {
                key: key.clone(),
                in_csv: false,
                finished: rec.status.is_final(),
            });
        }
    }
    // In-flight merges are few: they go in front of the fresh pairs without a second list.
    fresh.splice(0..0, in_flight);
    Schedule {
        work: fresh,
        earlier,
        held,
    }
}

/// `--max-merges`: whether `item` must wait for the next run, given the merge requests sent
/// so far in this one. A pair whose merge is in flight is always finished: stopping it would
/// leave a requested merge unreconciled.
pub fn held_back(item: &Item<'_>, merges_sent: usize, max_merges: Option<usize>) -> bool {
    max_merges.is_some_and(|m| merges_sent >= m && !item.in_flight)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::detect::Contact;
    use crate::merge::journal::{
        MergeConfirmation, MergeIntent, MergeOutcome, MergedSign, PairRecord, PairStatus,
    };
    use crate::options::Keep;

    fn contact(id: &str) -> Contact {
        Contact {
            line: 2,
            rev_user_id: id.into(),
            display_name: "x".into(),
            email: format!("{id}@example.com"),
            external_ref: String::new(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: None,
        }
    }

    fn pair(p: &str, s: &str) -> Pair {
        Pair {
            email: format!("{p}@example.com"),
            primary: contact(p),
            secondary: contact(s),
        }
    }

    fn rec(p: &str, s: &str, status: PairStatus) -> PairRecord {
        let mut r = PairRecord::new(&format!("{p}@example.com"), p, s, Keep::Revu);
        r.status = status;
        r
    }

    fn requested(mut r: PairRecord, outcome: Option<MergeOutcome>) -> PairRecord {
        r.merge = Some(MergeIntent {
            attempt: 1,
            requested_at: Utc::now(),
            outcome,
            unmerged_since: None,
            watch_until: None,
        });
        r
    }

    fn journal(recs: Vec<PairRecord>) -> SavepointFile {
        let mut f = SavepointFile::new();
        for r in recs {
            f.pairs.insert(pair_key(&r.primary, &r.secondary), r);
        }
        f
    }

    fn keys(s: &Schedule<'_>) -> Vec<(String, bool, bool)> {
        s.work
            .iter()
            .map(|i| (i.key.clone(), i.pair.is_some(), i.in_flight))
            .collect()
    }

    fn k(p: &str, s: &str) -> String {
        pair_key(p, s)
    }

    #[test]
    fn a_fresh_journal_runs_the_csv_in_order() {
        let pairs = vec![pair("P1", "S1"), pair("P2", "S2")];
        let s = schedule(&pairs, &SavepointFile::new());
        assert_eq!(
            keys(&s),
            vec![(k("P1", "S1"), true, false), (k("P2", "S2"), true, false)]
        );
        assert!(s.earlier.is_empty());
        assert!(s.work.iter().all(|i| i.in_csv));
    }

    #[test]
    fn in_flight_merges_go_first_even_out_of_the_csv_and_finished_pairs_are_not_rerun() {
        let pairs = vec![pair("P1", "S1"), pair("P2", "S2"), pair("P3", "S3")];
        let j = journal(vec![
            // Finished: reported, not run.
            rec("P1", "S1", PairStatus::Merged),
            // Accepted merge, unconfirmed: in flight.
            requested(
                rec("P3", "S3", PairStatus::Unconfirmed),
                Some(MergeOutcome::Accepted { at: Utc::now() }),
            ),
            // Out of the CSV with a lost answer: still finished, without a CSV pair.
            requested(rec("P9", "S9", PairStatus::InProgress), None),
            // Out of the CSV, never requested: left alone.
            rec("P8", "S8", PairStatus::Failed),
            // Out of the CSV, rejected (certainly not applied): left alone too.
            requested(
                rec("P7", "S7", PairStatus::Failed),
                Some(MergeOutcome::NotSent { reason: "x".into() }),
            ),
        ]);
        let s = schedule(&pairs, &j);
        assert_eq!(
            keys(&s),
            vec![
                (k("P3", "S3"), true, true),
                (k("P9", "S9"), false, true),
                (k("P2", "S2"), true, false),
            ]
        );
        let in_csv: Vec<_> = s.work.iter().map(|i| i.in_csv).collect();
        assert_eq!(in_csv, vec![true, false, true]);
        let earlier: Vec<_> = s
            .earlier
            .iter()
            .map(|e| (e.key.clone(), e.in_csv, e.finished, e.left_csv()))
            .collect();
        assert_eq!(
            earlier,
            vec![
                (k("P1", "S1"), true, true, false),
                (k("P7", "S7"), false, false, true),
                (k("P8", "S8"), false, false, true),
            ]
        );
    }

    #[test]
    fn swapped_roles_finish_the_way_they_started() {
        // `--keep` changed between runs: the CSV now says S <- P.
        let pairs = vec![pair("S1", "P1"), pair("S2", "P2"), pair("S3", "P3")];
        let mut merged = rec("P1", "S1", PairStatus::Merged);
        merged.merged = Some(MergeConfirmation {
            at: Utc::now(),
            sign: MergedSign::NotFound,
            destination_confirmed: false,
        });
        let j = journal(vec![
            merged,
            requested(rec("P2", "S2", PairStatus::InProgress), None),
            // Validated under the old roles, nothing sent: runs with the new ones.
            rec("P3", "S3", PairStatus::Skipped),
        ]);
        let s = schedule(&pairs, &j);
        assert_eq!(
            keys(&s),
            vec![(k("P2", "S2"), false, true), (k("S3", "P3"), true, false)]
        );
        assert_eq!(
            s.earlier,
            vec![Earlier {
                key: k("P1", "S1"),
                in_csv: true,
                finished: true,
            }]
        );
        // The old-role record of the re-run pair is covered by the CSV, not "left the CSV"
        // (it is not in `earlier`, above), and both pairs run are in the CSV.
        assert!(s.work.iter().all(|i| i.in_csv));
    }

    #[test]
    fn a_contact_of_another_record_is_never_started_again() {
        use crate::merge::journal::Hold;
        // S's merge into P has an unknown outcome; a refreshed export pairs S with P2, and
        // P (merged into Q earlier) with a new secondary.
        let pairs = vec![pair("P2", "S"), pair("S9", "Q"), pair("P3", "S3")];
        let j = journal(vec![
            requested(
                rec("P", "S", PairStatus::Unconfirmed),
                Some(MergeOutcome::Unknown {
                    reason: "timeout".into(),
                }),
            ),
            rec("X", "Q", PairStatus::Merged),
        ]);
        let s = schedule(&pairs, &j);
        let work: Vec<String> = s.work.iter().map(|i| i.key.clone()).collect();
        assert_eq!(
            work,
            vec![k("P", "S"), k("P3", "S3")],
            "the lost merge is finished first"
        );
        let held: Vec<(String, Hold)> = s
            .held
            .iter()
            .map(|h| match &h.reason {
                SkipReason::HeldByLedger { other, hold, .. } => (other.clone(), *hold),
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            held,
            vec![
                (k("P", "S"), Hold::InFlight),
                (k("X", "Q"), Hold::MergedAway)
            ]
        );
    }

    #[test]
    fn max_merges_holds_back_fresh_pairs_only() {
        let p = pair("P", "S");
        let fresh = Item {
            key: k("P", "S"),
            pair: Some(&p),
            in_flight: false,
            in_csv: true,
            group: None,
        };
        let resumed = Item {
            in_flight: true,
            ..fresh.clone()
        };
        assert!(!held_back(&fresh, 5, None));
        assert!(!held_back(&fresh, 1, Some(2)));
        assert!(held_back(&fresh, 2, Some(2)));
        assert!(held_back(&fresh, 0, Some(0)));
        assert!(!held_back(&resumed, 2, Some(2)));
    }
}
