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
}

/// Runs `--create-test-sample`; `args` were checked by `config.rs` (even size, output not the
/// input, no overwrite without `--force`).
pub fn run(cfg: &Config, args: &SampleArgs) -> Result<(), AppError> {
    let (input, output, size) = (args.input.as_path(), args.output.as_path(), args.size);
    let opts = DetectOptions {
        keep: cfg.keep,
        email_domain: cfg.email_domain.clone(),
    };
    let plan = detect::plan_from_csv(input, &opts)?;
    let want = size / 2;
    if plan.pairs.is_empty() {
        return Err(AppError::Data(format!(
            "{} has no clean pair, so no test sample can be made (needs-review groups are \
             never put in a sample; see --preview)",
            input.display()
        )));
    }
    if plan.pairs.len() < want {
        return Err(AppError::Data(format!(
            "{} has only {} clean pair(s), but --size {size} needs {want}; use --size {} or less \
             (needs-review groups are never put in a sample)",
            input.display(),
            plan.pairs.len(),
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
    for r in &original.rows {
        w.write_record(r.iter()).map_err(write_err)?;
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
        };
        crate::output::json(&report)
    } else {
        crate::output::data(|w| print_chosen(w, &chosen, output, plan.pairs.len(), args.seed))
    }
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
    writeln!(w, "Next: devrev-merge --csv {} --preview", output.display())
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
