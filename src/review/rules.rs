//! What the words of one group's rows decide: the table of docs/review.md ("What each word
//! does"), as one pure function with a unit test per row of that table.
//!
//! The rules sit apart from the reading of the file (`decisions.rs`) and from what the run does
//! with an outcome (`merge::groups`) so that there is exactly one place that says what `keep`
//! on one row of a clean pair means, and a test that fails if it changes.

/// What the user wrote in a row's `decision` cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The survivor: exactly one per group that merges.
    Keep,
    /// Merge into the group's `keep`.
    Merge,
    /// Leave this contact alone.
    Skip,
    /// The whole group is not a duplicate.
    NotDup,
    /// Drops the group's `not-dup` or `skip` decision recorded in the savepoint by an
    /// earlier run; the group's other rows then decide it as if nothing was recorded.
    Revoke,
}

impl Decision {
    pub(super) fn parse(raw: &str) -> Result<Option<Self>, String> {
        let w: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        match w.as_str() {
            "" => Ok(None),
            "keep" => Ok(Some(Decision::Keep)),
            "merge" => Ok(Some(Decision::Merge)),
            "skip" => Ok(Some(Decision::Skip)),
            "notdup" | "notduplicate" => Ok(Some(Decision::NotDup)),
            "revoke" => Ok(Some(Decision::Revoke)),
            _ => Err(format!(
                "{:?} is not a decision: write keep, merge, skip, not-dup or revoke (or leave it empty)",
                raw.trim()
            )),
        }
    }
}

/// One contact of the group as the decisions file has it. A contact without a row reads as a
/// blank cell (`line` is `None`); so does a `revoke` row (its word drops a recorded decision and
/// decides nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub line: Option<u64>,
    pub word: Option<Decision>,
    pub adopt_ref: bool,
    /// The contact's `external_ref` is a `user_` ref (the only kind a survivor adopts).
    pub user_ref: bool,
}

/// What a group's rows decide, by index into the cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row blank: a clean pair merges by the `--keep` rule; any other group is
    /// undecided (or takes the proposal with `--accept-proposed`).
    Blank,
    /// Merge each of `merge` into `keep`, in the group's order; `adopt` is the merged contact
    /// whose `user_` ref the survivor takes, when a row says so.
    Merge {
        keep: usize,
        merge: Vec<usize>,
        adopt: Option<usize>,
    },
    /// `not-dup` on a row (its line): the group is not a duplicate. Lasts.
    NotDup { line: u64 },
    /// A complete decision that merges nothing (every row `skip`, a `keep` with only `skip`
    /// rows, or `skip` on a clean pair). Lasts.
    Skipped,
    /// Some rows decided, but not enough to merge anything and not a complete "leave it":
    /// nothing happens and nothing is recorded; the reason says what is missing.
    Partial { why: Partial },
}

/// Why a partly decided group merges nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// A `keep`, no `merge`, and blank rows (of a group that is not a clean pair).
    KeepWithoutMerge { line: u64 },
    /// `skip` on some rows, the others blank (of a group that is not a clean pair).
    SomeSkipped,
}

/// A mistake in a group's rows (exit 65, with the lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    TwoKeeps(Vec<u64>),
    MergeWithoutKeep(u64),
    NotDupWithMerge {
        not_dup: u64,
        other: u64,
    },
    TwoAdopts(Vec<u64>),
    /// `adopt_ref` on a row that is not `merge`: only a merged contact hands its ref over.
    AdoptNotOnMerge(u64),
    /// `adopt_ref` on a row whose ref is not a `user_` ref.
    AdoptNotUser(u64),
}

/// The lines of the cells `want` picks, in the file's order.
fn lines(cells: &[Cell], want: impl Fn(&Cell) -> bool) -> Vec<u64> {
    let mut out: Vec<u64> = cells
        .iter()
        .filter(|c| want(c))
        .filter_map(|c| c.line)
        .collect();
    out.sort_unstable();
    out
}

fn find(cells: &[Cell], word: Decision) -> Vec<usize> {
    (0..cells.len())
        .filter(|&i| cells[i].word == Some(word))
        .collect()
}

/// The table of docs/review.md, "What each word does". `clean_pair`: the group is one
/// `REVU-` and one `user_` contact.
pub fn decide(clean_pair: bool, cells: &[Cell]) -> Result<Verdict, Vec<Problem>> {
    let keeps = find(cells, Decision::Keep);
    let merges = find(cells, Decision::Merge);
    let not_dups = find(cells, Decision::NotDup);
    let skips = find(cells, Decision::Skip);
    let blank = |i: usize| cells[i].word.is_none();
    let line = |i: usize| cells[i].line.unwrap_or(0);

    let mut problems = Vec::new();
    if keeps.len() > 1 {
        problems.push(Problem::TwoKeeps(lines(cells, |c| {
            c.word == Some(Decision::Keep)
        })));
    }
    if let (Some(&n), Some(&o)) = (not_dups.first(), keeps.first().or(merges.first())) {
        problems.push(Problem::NotDupWithMerge {
            not_dup: line(n),
            other: line(o),
        });
    }
    let adopts = lines(cells, |c| c.adopt_ref);
    if adopts.len() > 1 {
        problems.push(Problem::TwoAdopts(adopts));
    }
    for c in cells.iter().filter(|c| c.adopt_ref) {
        let l = c.line.unwrap_or(0);
        if c.word != Some(Decision::Merge) {
            problems.push(Problem::AdoptNotOnMerge(l));
        } else if !c.user_ref {
            problems.push(Problem::AdoptNotUser(l));
        }
    }
    // A clean pair's `merge` on one row with the other blank names its survivor: the other.
    let implied_keep = clean_pair && keeps.is_empty() && merges.len() == 1 && cells.len() == 2;
    let implied_keep = implied_keep.then(|| 1 - merges[0]).filter(|&k| blank(k));
    if keeps.is_empty() && !merges.is_empty() && implied_keep.is_none() {
        problems.push(Problem::MergeWithoutKeep(line(merges[0])));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    if let Some(&n) = not_dups.first() {
        return Ok(Verdict::NotDup { line: line(n) });
    }
    let adopt = (0..cells.len()).find(|&i| cells[i].adopt_ref);
    if let Some(keep) = implied_keep {
        return Ok(Verdict::Merge {
            keep,
            merge: merges,
            adopt,
        });
    }
    if let Some(&keep) = keeps.first() {
        if !merges.is_empty() {
            // Blank and `skip` rows beside them are left alone.
            return Ok(Verdict::Merge {
                keep,
                merge: merges,
                adopt,
            });
        }
        let others_blank: Vec<usize> = (0..cells.len())
            .filter(|&i| i != keep && blank(i))
            .collect();
        return Ok(match others_blank.as_slice() {
            [] => Verdict::Skipped,
            // `keep` on one row of a clean pair turns it round if need be: the other merges.
            [other] if clean_pair => Verdict::Merge {
                keep,
                merge: vec![*other],
                adopt,
            },
            _ => Verdict::Partial {
                why: Partial::KeepWithoutMerge { line: line(keep) },
            },
        });
    }
    if skips.is_empty() {
        return Ok(Verdict::Blank);
    }
    // `skip` on a clean pair leaves one contact: nothing can merge.
    if clean_pair || skips.len() == cells.len() {
        return Ok(Verdict::Skipped);
    }
    Ok(Verdict::Partial {
        why: Partial::SomeSkipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    /// Cells on lines 2, 3, ...; `u` marks a contact with a `user_` ref, `*` an adopt_ref.
    fn cells(spec: &[(&str, &str)]) -> Vec<Cell> {
        spec.iter()
            .enumerate()
            .map(|(i, (word, flags))| Cell {
                line: Some(i as u64 + 2),
                word: match *word {
                    "" => None,
                    "keep" => Some(Keep),
                    "merge" => Some(Merge),
                    "skip" => Some(Skip),
                    "not-dup" => Some(NotDup),
                    other => panic!("{other}"),
                },
                adopt_ref: flags.contains('*'),
                user_ref: flags.contains('u'),
            })
            .collect()
    }

    fn pair(a: &str, b: &str) -> Result<Verdict, Vec<Problem>> {
        decide(true, &cells(&[(a, ""), (b, "u")]))
    }

    fn group(spec: &[(&str, &str)]) -> Result<Verdict, Vec<Problem>> {
        decide(false, &cells(spec))
    }

    fn merge(keep: usize, merge: &[usize], adopt: Option<usize>) -> Result<Verdict, Vec<Problem>> {
        Ok(Verdict::Merge {
            keep,
            merge: merge.to_vec(),
            adopt,
        })
    }

    // One test per row of the table in docs/review.md.

    #[test]
    fn row_blank() {
        assert_eq!(pair("", ""), Ok(Verdict::Blank));
        assert_eq!(group(&[("", ""), ("", ""), ("", "")]), Ok(Verdict::Blank));
    }

    #[test]
    fn row_not_dup_on_any_row() {
        assert_eq!(pair("", "not-dup"), Ok(Verdict::NotDup { line: 3 }));
        assert_eq!(
            group(&[("skip", ""), ("not-dup", ""), ("", "")]),
            Ok(Verdict::NotDup { line: 3 })
        );
    }

    #[test]
    fn row_not_dup_with_keep_or_merge_is_refused() {
        assert_eq!(
            pair("keep", "not-dup"),
            Err(vec![Problem::NotDupWithMerge {
                not_dup: 3,
                other: 2
            }])
        );
    }

    #[test]
    fn row_keep_and_merge() {
        assert_eq!(
            group(&[("merge", "u"), ("keep", ""), ("skip", "u"), ("", "u")]),
            merge(1, &[0], None)
        );
    }

    #[test]
    fn row_keep_on_one_row_of_a_clean_pair_merges_the_other_into_it() {
        assert_eq!(pair("", "keep"), merge(1, &[0], None));
        assert_eq!(pair("keep", ""), merge(0, &[1], None));
    }

    #[test]
    fn row_merge_on_one_row_of_a_clean_pair_merges_it_into_the_other() {
        assert_eq!(pair("merge", ""), merge(1, &[0], None));
    }

    #[test]
    fn row_keep_alone_in_a_group_is_partial_not_a_lasting_skip() {
        assert_eq!(
            group(&[("keep", ""), ("", "u"), ("", "u")]),
            Ok(Verdict::Partial {
                why: Partial::KeepWithoutMerge { line: 2 }
            })
        );
    }

    #[test]
    fn row_keep_with_only_skips_is_skipped() {
        assert_eq!(
            group(&[("keep", ""), ("skip", "u"), ("skip", "u")]),
            Ok(Verdict::Skipped)
        );
        assert_eq!(pair("keep", "skip"), Ok(Verdict::Skipped));
    }

    #[test]
    fn row_skip_on_a_clean_pair_is_skipped() {
        assert_eq!(pair("skip", ""), Ok(Verdict::Skipped));
        assert_eq!(pair("skip", "skip"), Ok(Verdict::Skipped));
    }

    #[test]
    fn row_skip_on_every_row_of_a_group_is_skipped() {
        assert_eq!(
            group(&[("skip", ""), ("skip", "u"), ("skip", "u")]),
            Ok(Verdict::Skipped)
        );
    }

    #[test]
    fn row_skip_on_some_rows_of_a_group_is_partial() {
        assert_eq!(
            group(&[("skip", ""), ("", "u"), ("", "u")]),
            Ok(Verdict::Partial {
                why: Partial::SomeSkipped
            })
        );
    }

    #[test]
    fn row_merge_without_keep_is_refused() {
        assert_eq!(
            group(&[("merge", ""), ("", "u"), ("", "u")]),
            Err(vec![Problem::MergeWithoutKeep(2)])
        );
        assert_eq!(
            pair("merge", "merge"),
            Err(vec![Problem::MergeWithoutKeep(2)])
        );
        assert_eq!(
            pair("merge", "skip"),
            Err(vec![Problem::MergeWithoutKeep(2)])
        );
    }

    #[test]
    fn row_two_keeps_is_refused() {
        assert_eq!(
            group(&[("keep", ""), ("keep", "u"), ("merge", "u")]),
            Err(vec![Problem::TwoKeeps(vec![2, 3])])
        );
    }

    #[test]
    fn row_adopt_ref_on_a_merge_row_is_taken() {
        assert_eq!(
            group(&[("keep", "u"), ("merge", "u*"), ("merge", "u")]),
            merge(0, &[1, 2], Some(1))
        );
    }

    #[test]
    fn row_adopt_ref_on_a_row_that_is_not_merge_is_refused() {
        assert_eq!(
            group(&[("keep", "u*"), ("merge", "u")]),
            Err(vec![Problem::AdoptNotOnMerge(2)])
        );
        assert_eq!(
            group(&[("keep", ""), ("merge", "u"), ("skip", "u*")]),
            Err(vec![Problem::AdoptNotOnMerge(4)])
        );
        assert_eq!(
            decide(true, &cells(&[("keep", ""), ("", "u*")])),
            Err(vec![Problem::AdoptNotOnMerge(3)])
        );
    }

    #[test]
    fn row_adopt_ref_on_a_ref_that_is_not_user_is_refused() {
        assert_eq!(
            group(&[("keep", "u"), ("merge", "*")]),
            Err(vec![Problem::AdoptNotUser(3)])
        );
    }

    #[test]
    fn row_adopt_ref_on_two_rows_is_refused() {
        assert_eq!(
            group(&[("keep", ""), ("merge", "u*"), ("merge", "u*")]),
            Err(vec![Problem::TwoAdopts(vec![3, 4])])
        );
    }
}
