//! `--create-test-sample`: a small CSV of complete clean pairs to try first.
//!
//! The sample holds the *original* rows (every column, extra ones included, in the input's
//! order) of whole clean pairs only, preferring the pairs with the fewest tickets: the least
//! risky first run. Ties are broken by a seeded hash of the email, so the same input and seed
//! always give the same sample, whatever the order of the rows.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, SampleArgs};
use crate::detect::{self, DetectOptions, Pair};
use crate::error::AppError;
use crate::fsutil;
use crate::output::safe;
use crate::preview::thousands;

/// The order in which pairs are picked: known ticket counts first, fewest tickets first,
/// then a hash of (seed, email).
fn pick_key(pair: &Pair, seed: u64) -> (bool, u64, u64) {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(pair.email.as_bytes());
    let digest = h.finalize();
    let tiebreak = digest
        .iter()
        .take(8)
        .fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    match pair.csv_tickets() {
        Some(t) => (false, t, tiebreak),
        None => (true, 0, tiebreak),
    }
}

/// Picks `n` pairs: the fewest tickets first, deterministic for a seed.
pub fn choose(pairs: &[Pair], n: usize, seed: u64) -> Vec<&Pair> {
    let mut v: Vec<(_, &Pair)> = pairs.iter().map(|p| (pick_key(p, seed), p)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.email.cmp(&b.1.email)));
    v.into_iter().take(n).map(|(_, p)| p).collect()
}

#[derive(Serialize)]
struct SampleReport<'a> {
    input: String,
    output: String,
    rows: usize,
    seed: u64,
    pairs: Vec<&'a Pair>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    left_out: &'a [LeftOut],
}

/// Runs `--create-test-sample`; `args` were checked by `config.rs` (even size, output not the
/// input, no overwrite without `--force`).
pub fn run(cfg: &Config, args: &SampleArgs) -> Result<(), AppError> {
    let (input, output, size) = (args.input.as_path(), args.output.as_path(), args.size);
    let opts = DetectOptions {
        keep: cfg.keep,
        email_domain: cfg.email_domain.clone(),
    };
    let mut plan = detect::plan_from_csv(input, &opts)?;
    let left_out = leave_out(cfg, &mut plan)?;
    let want = size / 2;
    if plan.pairs.is_empty() && !left_out.is_empty() {
        return Err(AppError::Data(format!(
            "{} has no clean pair a merge run would take: {} left out by the decisions and the \
             savepoint ({}), so no test sample can be made",
            input.display(),
            left_out.len(),
            cfg.savepoint.display()
        )));
    }
    if plan.pairs.is_empty() {
        return Err(AppError::Data(format!(
            "{} has no clean pair, so no test sample can be made (needs-review groups are \
             never put in a sample; see --preview)",
            input.display()
        )));
    }
    if plan.pairs.len() < want {
        return Err(AppError::Data(format!(
            "{} has only {} clean pair(s){}, but --size {size} needs {want}; use --size {} or \
             less (needs-review groups are never put in a sample)",
            input.display(),
            plan.pairs.len(),
            if left_out.is_empty() {
                String::new()
            } else {
                format!(
                    " a merge run would take ({} left out by the decisions and the savepoint)",
                    left_out.len()
                )
            },
            plan.pairs.len() * 2
        )));
    }
    let chosen = choose(&plan.pairs, want, args.seed);

    let lines: HashSet<u64> = chosen
        .iter()
        .flat_map(|p| [p.primary.line, p.secondary.line])
        .collect();
    let ids: HashSet<&str> = chosen
        .iter()
        .flat_map(|p| {
            [
                p.primary.rev_user_id.as_str(),
                p.secondary.rev_user_id.as_str(),
            ]
        })
        .collect();
    let original = detect::original_rows(input, &lines)?;
    let intact = original.rows.len() == lines.len()
        && original.rows.iter().all(|r| {
            r.get(original.id_column)
                .and_then(|b| std::str::from_utf8(b).ok())
                .is_some_and(|id| ids.contains(id.trim()))
        });
    if !intact {
        return Err(AppError::Data(format!(
            "{} changed while it was being read; run the command again once it is complete",
            input.display()
        )));
    }

    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let write_err = |e: csv::Error| AppError::CantCreate(format!("cannot build the sample: {e}"));
    w.write_record(original.header.iter()).map_err(write_err)?;
    // The rows as they are, but a cell a spreadsheet would run as a formula (the detection
    // reads the escape back: `--csv` of the sample sees the same values).
    for r in &original.rows {
        w.write_record(r.iter().map(|c| match std::str::from_utf8(c) {
            Ok(text) => crate::spreadsheet::defuse(text).into_owned().into_bytes(),
            Err(_) => c.to_vec(),
        }))
        .map_err(write_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| AppError::CantCreate(format!("cannot build the sample: {e}")))?;
    fsutil::write_private_atomic_with(output, args.force, |out| out.write_all(&bytes)).map_err(
        |e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                AppError::CantCreate(format!(
                    "{} already exists; add --force to overwrite it, or choose another --output",
                    output.display()
                ))
            } else {
                AppError::CantCreate(format!("cannot write {}: {e}", output.display()))
            }
        },
    )?;

    if cfg.json {
        let report = SampleReport {
            input: input.display().to_string(),
            output: output.display().to_string(),
            rows: original.rows.len(),
            seed: args.seed,
            pairs: chosen.clone(),
            left_out: &left_out,
        };
        crate::output::json(&report)
    } else {
        crate::output::data(|w| {
            print_chosen(w, &chosen, output, plan.pairs.len(), args.seed)?;
            print_left_out(w, &left_out)?;
            writeln!(w, "Next: devrev-merge --csv {} --preview", output.display())
        })
    }
}

/// A clean pair the sample does not offer, and why.
#[derive(Debug, Serialize)]
struct LeftOut {
    group: String,
    email: String,
    why: String,
}

/// Takes out of `plan.pairs` every clean pair a merge run would not merge by the `--keep`
/// rule: a group decided `not-dup`/`skip` (recorded in the savepoint, or in `--decisions`,
/// which is recorded now), a pair the file turns round or leaves (stale, undecided), and a
/// pair whose contacts the savepoint already holds (merged, in flight, restored). A sample is
/// run without the decisions file (`--csv test.csv`), so it must hold only what that run does
/// as the person decided.
fn leave_out(cfg: &Config, plan: &mut detect::Plan) -> Result<Vec<LeftOut>, AppError> {
    use crate::review::decisions::{Outcome, Source};
    let mut why: std::collections::HashMap<String, String> = Default::default();
    let mut journal = None;
    if let Some(file) = &cfg.decisions {
        let d = crate::review::decisions::decide(file, plan, cfg.keep, false)?;
        journal = Some(crate::review::lasting::record(&cfg.savepoint, &d, file)?);
        for (id, _, o) in &d.groups {
            let reason = match o {
                Outcome::Merge {
                    source: Source::CleanPairRule,
                    ..
                } => continue,
                Outcome::Merge { keep, .. } => {
                    let rule = plan.pairs.iter().any(|p| p.primary.rev_user_id == *keep);
                    if rule {
                        continue;
                    }
                    format!(
                        "{} decides {} survives, not the --keep rule's choice",
                        file.display(),
                        crate::detect::display_id(keep)
                    )
                }
                Outcome::NotDup { line } => format!("not-dup in {} line {line}", file.display()),
                Outcome::Skipped => format!("skip in {}", file.display()),
                Outcome::Undecided => format!("undecided in {}", file.display()),
                Outcome::Stale { reason } => format!("stale in {}: {reason}", file.display()),
                Outcome::Recorded { .. } => continue,
            };
            why.insert(id.clone(), reason);
        }
    }
    let journal = match journal {
        Some(j) => Some(j),
        None => crate::merge::savepoint::load(&cfg.savepoint)?,
    };
    if let Some(j) = &journal {
        for (id, d) in j.decisions.iter().filter(|(_, d)| d.holds()) {
            why.entry(id.clone()).or_insert_with(|| {
                format!(
                    "{} recorded on {} from {}",
                    d.decision.word(),
                    d.at.format("%Y-%m-%d %H:%M UTC"),
                    d.file.display()
                )
            });
        }
        let s = crate::merge::schedule::schedule(&plan.pairs, j);
        for h in &s.held {
            why.entry(crate::review::group_id(&h.pair.email))
                .or_insert_with(|| format!("held by the savepoint: {}", h.reason));
        }
        let ids: std::collections::HashSet<(&str, &str)> = j
            .pairs
            .values()
            .map(|r| (r.primary.as_str(), r.secondary.as_str()))
            .collect();
        for p in &plan.pairs {
            let (a, b) = (
                p.primary.rev_user_id.as_str(),
                p.secondary.rev_user_id.as_str(),
            );
            if ids.contains(&(a, b)) || ids.contains(&(b, a)) {
                why.entry(crate::review::group_id(&p.email))
                    .or_insert_with(|| "already in the savepoint (merged or started)".into());
            }
        }
    }
    let mut out = Vec::new();
    plan.pairs.retain(|p| {
        let id = crate::review::group_id(&p.email);
        match why.remove(&id) {
            Some(why) => {
                out.push(LeftOut {
                    group: id,
                    email: p.email.clone(),
                    why,
                });
                false
            }
            None => true,
        }
    });
    Ok(out)
}

fn print_left_out<W: Write>(w: &mut W, left: &[LeftOut]) -> io::Result<()> {
    if left.is_empty() {
        return Ok(());
    }
    writeln!(
        w,
        "Left out {} clean pair(s) a merge run would not merge as decided:",
        left.len()
    )?;
    for l in left {
        writeln!(w, "  {} {}: {}", l.group, safe(&l.email), safe(&l.why))?;
    }
    Ok(())
}

fn print_chosen<W: Write>(
    w: &mut W,
    chosen: &[&Pair],
    output: &Path,
    of: usize,
    seed: u64,
) -> io::Result<()> {
    writeln!(
        w,
        "Wrote {} rows ({} clean pair(s), the fewest tickets of {}; seed {seed}) to {}:",
        chosen.len() * 2,
        chosen.len(),
        thousands(of as u64),
        output.display()
    )?;
    let t = |c: &detect::Contact| {
        c.ticket_count.map_or_else(
            || "? tickets".into(),
            |n| crate::output::count(n, "ticket", "tickets"),
        )
    };
    for p in chosen {
        writeln!(
            w,
            "  {}  primary {} ({}, {})  secondary {} ({}, {})",
            safe(&p.email),
            safe(&p.primary.display_id()),
            safe(&p.primary.external_ref),
            t(&p.primary),
            safe(&p.secondary.display_id()),
            safe(&p.secondary.external_ref),
            t(&p.secondary)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Contact;

    fn pair(email: &str, tp: Option<u64>, ts: Option<u64>) -> Pair {
        let c = |r: &str, t| Contact {
            line: 1,
            rev_user_id: format!("id-{email}-{r}"),
            display_name: String::new(),
            email: email.into(),
            external_ref: r.into(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: t,
        };
        Pair {
            email: email.into(),
            primary: c("REVU-1", tp),
            secondary: c("user_1", ts),
        }
    }

    #[test]
    fn fewest_tickets_first_unknown_last_ties_by_seed() {
        let pairs = vec![
            pair("a@x", Some(5), Some(0)),
            pair("b@x", Some(0), Some(1)),
            pair("c@x", None, Some(0)),
            pair("d@x", Some(0), Some(0)),
            pair("e@x", Some(1), Some(0)),
        ];
        let got: Vec<&str> = choose(&pairs, 5, 42)
            .iter()
            .map(|p| p.email.as_str())
            .collect();
        assert_eq!(got[0], "d@x");
        assert_eq!(&got[3..], ["a@x", "c@x"]);
        assert!(got[1..3].contains(&"b@x") && got[1..3].contains(&"e@x"));
        // Deterministic for a seed, independent of the input order.
        let mut rev = pairs.clone();
        rev.reverse();
        let again: Vec<&str> = choose(&rev, 5, 42)
            .iter()
            .map(|p| p.email.as_str())
            .collect();
        assert_eq!(got, again);
        // Another seed can order ties differently, but never before fewer tickets.
        let ties: Vec<Pair> = (0..20)
            .map(|i| pair(&format!("t{i}@x"), Some(0), Some(0)))
            .collect();
        let s1: Vec<&str> = choose(&ties, 3, 1)
            .iter()
            .map(|p| p.email.as_str())
            .collect();
        let s2: Vec<&str> = choose(&ties, 3, 2)
            .iter()
            .map(|p| p.email.as_str())
            .collect();
        assert_ne!(s1, s2);
    }
}
