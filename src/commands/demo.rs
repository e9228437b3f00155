//! `--demo [--demo-dir DIR]`: the whole flow on the built-in fake DevRev, so a new user sees
//! what the tool does before creating a token.
//!
//! The fake (`crates/devrev-fake`) runs inside this process on 127.0.0.1 port 0. Each step
//! runs this very binary again (`current_exe`) with the fake's URL and token in its
//! environment and the demo folder as its working folder, so what is shown is exactly what a
//! user sees against a real org. The children get a cleared environment: a token or a `.env`
//! of the user's own never reaches them, and nothing is written outside the demo folder.

use std::path::Path;

use crate::config::Config;
use crate::error::AppError;

/// Runs the demo in `dir` (empty or new), or in a fresh temporary folder.
#[cfg(feature = "demo")]
pub fn run(cfg: &Config, dir: Option<&Path>) -> Result<(), AppError> {
    imp::run(cfg, dir)
}

#[cfg(not(feature = "demo"))]
pub fn run(_cfg: &Config, _dir: Option<&Path>) -> Result<(), AppError> {
    Err(AppError::Usage(
        "this build has no --demo (it was built without the `demo` feature); build with the \
         default features: cargo run --release -- --demo"
            .into(),
    ))
}

#[cfg(feature = "demo")]
mod imp {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use devrev_fake::fake::{FakeOptions, FakeServer, MergeBehaviour};
    use devrev_fake::seed::{GenSpec, Seed};

    use crate::config::Config;
    use crate::error::AppError;
    use crate::fsutil;
    use crate::output;

    /// Lines of a step's output shown before and after the cut.
    const HEAD: usize = 30;
    const TAIL: usize = 10;

    /// Stands for the first backup folder (by name) when a step runs: the folder names carry
    /// the email and the time of the backup, so they are only known once the merges ran.
    const FIRST_BACKUP: &str = "<first backup folder>";

    /// Stands for `decided.csv`, written first from the newest review file: the demo decides
    /// one needs-review group the way a person would in a spreadsheet.
    const DECIDED: &str = "<decide one group>";

    /// One step: what the user would type (without the program name), why, and the exit
    /// code the demo expects from it.
    struct Step {
        why: &'static str,
        args: &'static [&'static str],
        expect: i32,
        /// Shown whole (tables still cut to their first rows): the decisions' summary is the
        /// point of its step.
        whole: bool,
    }

    const STEPS: &[Step] = &[
        Step {
            why: "Check the token, the org and the rate limit (read-only)",
            args: &["--test-api"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Build the contacts CSV from the API (or use your warehouse export)",
            args: &["--export-contacts", "contacts.csv"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Preview the plan: pairs, groups that need review, API calls and time (offline)",
            args: &["--csv", "contacts.csv", "--preview"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "The same plan checked read-only against DevRev: each pair's contacts live, \
                  its ticket counts, and what the run would refuse",
            args: &["--csv", "contacts.csv", "--preview", "--check-live"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Pick a small test sample of whole pairs",
            args: &[
                "--create-test-sample",
                "--input",
                "contacts.csv",
                "--output",
                "sample.csv",
            ],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Merge the sample first (backups are taken and verified before each merge)",
            args: &["--csv", "sample.csv", "--yes"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "A canary on the full file: stop after 2 more merges",
            args: &["--csv", "contacts.csv", "--max-merges", "2", "--yes"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "The full run: resumes from savepoint.json (finished pairs are not touched)",
            args: &["--csv", "contacts.csv", "--yes"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Where the savepoint stands, offline: what is merged, waiting or needs a look",
            args: &["--status"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Decide one needs-review group: the demo fills the decision column of its rows \
                  in the review file from the proposal (as you would in a spreadsheet) into \
                  decided.csv, then previews what the decisions give",
            args: &["--csv", "contacts.csv", "--preview", "--decisions", DECIDED],
            expect: 0,
            whole: true,
        },
        Step {
            why: "Merge as decided: the group's contacts go into its keep one at a time, each \
                  backed up and verified first",
            args: &[
                "--csv",
                "contacts.csv",
                "--decisions",
                "decided.csv",
                "--yes",
            ],
            expect: 0,
            whole: true,
        },
        Step {
            why: "Re-check every backup folder (checksums, sizes, counts)",
            args: &["--verify-backups", "backups"],
            expect: 0,
            whole: false,
        },
        Step {
            why: "Undo one merge: recreate the merged-away contact from its backup",
            args: &["--restore", FIRST_BACKUP, "--yes"],
            expect: 0,
            whole: false,
        },
    ];

    pub fn run(_cfg: &Config, dir: Option<&Path>) -> Result<(), AppError> {
        let started = Instant::now();
        let dir = demo_dir(dir)?;
        let fake = start_fake();
        let exe = std::env::current_exe()
            .map_err(|e| AppError::io("cannot find this program's own path", e))?;
        say(&format!(
            "devrev-merge demo: a fake DevRev on {} with {} contacts, working in {}\n\
             Each step shows the command to type against your org, then its output (shortened).\n",
            fake.base_url(),
            fake.with_state(|s| s.rev_users.len()),
            dir.display()
        ))?;
        for (n, step) in STEPS.iter().enumerate() {
            let args = resolve_args(&dir, step.args)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let shown = shown_command(&args);
            say(&format!(
                "\n[{}/{}] {}\n$ {shown}\n",
                n + 1,
                STEPS.len(),
                step.why
            ))?;
            if step.args.contains(&"--yes") {
                say("  (the demo adds --yes; against your org, leave it out and confirm)\n")?;
            }
            if step.args.contains(&DECIDED) {
                say(&decided_rows(&dir)?)?;
            }
            let (code, text) = run_step(&exe, &dir, &fake, &args)?;
            say(&if step.whole {
                indent(&cut_tables(&text))
            } else {
                shorten(&text)
            })?;
            if code != step.expect {
                return Err(AppError::SomeFailed(format!(
                    "demo step {} ({shown}) exited {code}, expected {}; its files are in {}",
                    n + 1,
                    step.expect,
                    dir.display()
                )));
            }
        }
        drop(fake);
        say(&closing(&dir, started.elapsed()))
    }

    /// `dir` if given (created, or empty), else a fresh folder under the system's temp
    /// folder that is kept after the demo, so its files can be looked at.
    fn demo_dir(dir: Option<&Path>) -> Result<PathBuf, AppError> {
        let dir = match dir {
            Some(d) => {
                let busy = std::fs::read_dir(d).is_ok_and(|mut it| it.next().is_some());
                if busy {
                    return Err(AppError::CantCreate(format!(
                        "--demo-dir {} is not empty; give a new or empty folder",
                        d.display()
                    )));
                }
                fsutil::create_private_dir(d).map_err(|e| {
                    AppError::CantCreate(format!("cannot create {}: {e}", d.display()))
                })?;
                d.to_path_buf()
            }
            None => tempfile::Builder::new()
                .prefix("devrev-merge-demo-")
                .tempdir()
                .map_err(|e| AppError::io("cannot create a temporary folder for the demo", e))?
                .keep(),
        };
        crate::platform::canonicalize(&dir)
            .map_err(|e| AppError::io(format!("cannot resolve {}", dir.display()), e))
    }

    /// A small world with clean pairs, groups that need review and singles.
    fn start_fake() -> FakeServer {
        let spec = GenSpec {
            pairs: 8,
            review_groups: 4,
            singles: 6,
            tickets_per_contact: (0, 3),
            attachment_size_max: 64 << 10,
            conversations_per_secondary: (0, 1),
            ..GenSpec::default()
        };
        FakeServer::start(FakeOptions {
            seed: Seed::generate(&spec),
            merge: MergeBehaviour {
                delay: Duration::from_millis(200),
                ..MergeBehaviour::default()
            },
            ..FakeOptions::default()
        })
    }

    /// The step's arguments with [`FIRST_BACKUP`] replaced by `backups/<first folder>`.
    fn resolve_args(dir: &Path, args: &[&str]) -> Result<Vec<String>, AppError> {
        args.iter()
            .map(|a| {
                if *a == DECIDED {
                    return decide_one_group(dir);
                }
                if *a != FIRST_BACKUP {
                    return Ok((*a).to_string());
                }
                let mut names: Vec<String> = std::fs::read_dir(dir.join("backups"))
                    .map_err(|e| AppError::io("cannot list the demo's backups folder", e))?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.ends_with(".partial"))
                    .collect();
                names.sort();
                names
                    .into_iter()
                    .next()
                    .map(|n| format!("backups/{n}"))
                    .ok_or_else(|| {
                        AppError::SomeFailed("the demo's merges left no backup folder".into())
                    })
            })
            .collect()
    }

    /// What the user would type: the program name and the step's arguments.
    /// Writes `decided.csv`: the newest review file with the proposal typed in as the decision
    /// of the first needs-review group that has one (and no `-drop-` row).
    fn decide_one_group(dir: &Path) -> Result<String, AppError> {
        let fail =
            |why: &str| AppError::SomeFailed(format!("the demo cannot decide a group: {why}"));
        let newest = std::fs::read_dir(dir.join("reports"))
            .map_err(|e| AppError::io("cannot list the demo's reports", e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("review-"))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .ok_or_else(|| fail("no review file"))?
            .path();
        let text = std::fs::read_to_string(&newest)
            .map_err(|e| AppError::io(format!("cannot read {}", newest.display()), e))?;
        let text = text.trim_start_matches('\u{feff}');
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let header = rdr.headers().map_err(|e| fail(&e.to_string()))?.clone();
        let col = |n: &str| header.iter().position(|h| h == n);
        let (Some(group), Some(kind), Some(refk), Some(proposed), Some(decision)) = (
            col("group"),
            col("kind"),
            col("ref_kind"),
            col("proposed"),
            col("decision"),
        ) else {
            return Err(fail("the review file lacks its columns"));
        };
        let rows: Vec<csv::StringRecord> = rdr
            .records()
            .collect::<Result<_, _>>()
            .map_err(|e| fail(&e.to_string()))?;
        let chosen = rows
            .iter()
            .filter(|r| &r[kind] != "clean pair" && &r[proposed] == "keep")
            .map(|r| r[group].to_string())
            .find(|g| {
                !rows
                    .iter()
                    .any(|r| &r[group] == g.as_str() && &r[refk] == "-drop-")
            })
            .ok_or_else(|| fail("no needs-review group has a proposal"))?;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&header).map_err(|e| fail(&e.to_string()))?;
        for r in rows.iter().filter(|r| r[group] == *chosen) {
            let mut cells: Vec<&str> = r.iter().collect();
            cells[decision] = &r[proposed];
            w.write_record(&cells).map_err(|e| fail(&e.to_string()))?;
        }
        let bytes = w.into_inner().map_err(|e| fail(&e.to_string()))?;
        fsutil::write_private_atomic_with(&dir.join("decided.csv"), false, |out| {
            out.write_all(&bytes)
        })
        .map_err(|e| AppError::io("cannot write decided.csv", e))?;
        Ok("decided.csv".into())
    }

    fn shown_command(args: &[&str]) -> String {
        let args: Vec<&str> = args.iter().copied().filter(|a| *a != "--yes").collect();
        format!("devrev-merge {}", args.join(" "))
    }

    /// Runs this binary with `args` in `dir` against `fake`; its exit code and its stdout and
    /// stderr interleaved as they were written.
    fn run_step(
        exe: &Path,
        dir: &Path,
        fake: &FakeServer,
        args: &[&str],
    ) -> Result<(i32, String), AppError> {
        let (mut reader, writer) =
            std::io::pipe().map_err(|e| AppError::io("cannot create a pipe", e))?;
        let err_writer = writer
            .try_clone()
            .map_err(|e| AppError::io("cannot create a pipe", e))?;
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .env("DEVREV_BASE_URL", fake.base_url())
            .env("DEVREV_API_TOKEN", fake.token())
            // The fake has no real rate limit to respect; keep the demo quick.
            .env("RATE_LIMIT_CALLS", "6000")
            .env("RATE_LIMIT_PERIOD", "60")
            .env("DEVREV_MERGE_MIN_BACKOFF_MS", "100")
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(err_writer);
        let mut child = cmd
            .spawn()
            .map_err(|e| AppError::io(format!("cannot run {}", exe.display()), e))?;
        // Our copies of the pipe's write end must go, or reading never sees its end.
        drop(cmd);
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| AppError::io("cannot read a demo step's output", e))?;
        let status = child
            .wait()
            .map_err(|e| AppError::io("cannot wait for a demo step", e))?;
        Ok((status.code().unwrap_or(-1), text))
    }

    /// Rows kept of each table (its header line included) when a step's output is shortened.
    const TABLE_ROWS: usize = 4;

    /// Each table (the indented lines under a `Title (n):` heading) cut to its first rows, so
    /// a shortened step still shows every heading and what its table looks like; cutting the
    /// middle of the whole output hid exactly the preview's tables.
    fn cut_tables(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_table = false;
        let mut rows = 0usize;
        let mut dropped = 0usize;
        let flush = |out: &mut Vec<String>, dropped: &mut usize| {
            if *dropped > 0 {
                out.push(format!(
                    "  ... ({})",
                    crate::output::count(*dropped as u64, "more row", "more rows")
                ));
                *dropped = 0;
            }
        };
        for line in text.lines() {
            if in_table && line.starts_with("  ") {
                rows += 1;
                if rows <= TABLE_ROWS {
                    out.push(line.to_string());
                } else {
                    dropped += 1;
                }
                continue;
            }
            flush(&mut out, &mut dropped);
            in_table = line.ends_with("):") || line.ends_with(':');
            rows = 0;
            out.push(line.to_string());
        }
        flush(&mut out, &mut dropped);
        out
    }

    /// The decisions file the demo wrote, as a person would see it in a spreadsheet: the
    /// columns that decide, one row per contact.
    fn decided_rows(dir: &Path) -> Result<String, AppError> {
        let path = dir.join("decided.csv");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| AppError::io(format!("cannot read {}", path.display()), e))?;
        let mut rdr = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        let header = rdr
            .headers()
            .map_err(|e| AppError::SomeFailed(format!("decided.csv: {e}")))?
            .clone();
        let want = [
            "group",
            "display_id",
            "external_ref",
            "proposed",
            "decision",
            "adopt_ref",
        ];
        let cols: Vec<usize> = want
            .iter()
            .filter_map(|w| header.iter().position(|h| h == *w))
            .collect();
        let mut out =
            String::from("  decided.csv (the columns that decide; the demo typed the proposal):\n");
        out.push_str(&format!("  | {}\n", want.join("  ")));
        for r in rdr.records().flatten() {
            let cells: Vec<&str> = cols.iter().map(|&i| r.get(i).unwrap_or("")).collect();
            out.push_str(&format!("  | {}\n", crate::output::safe(&cells.join("  "))));
        }
        Ok(out)
    }

    /// Lines indented as a step's output.
    fn indent(lines: &[String]) -> String {
        lines.iter().map(|l| format!("  | {l}\n")).collect()
    }

    /// The output indented, tables cut to their first rows, and the middle cut when it is
    /// still long.
    fn shorten(text: &str) -> String {
        let cut = cut_tables(text);
        let lines: Vec<&str> = cut.iter().map(String::as_str).collect();
        let mut out = String::new();
        let mut push = |l: &str| {
            out.push_str("  | ");
            out.push_str(l);
            out.push('\n');
        };
        if lines.len() <= HEAD + TAIL + 1 {
            lines.iter().for_each(|l| push(l));
        } else {
            lines[..HEAD].iter().for_each(|l| push(l));
            push(&format!("... ({} lines cut)", lines.len() - HEAD - TAIL));
            lines[lines.len() - TAIL..].iter().for_each(|l| push(l));
        }
        out
    }

    fn closing(dir: &Path, took: Duration) -> String {
        format!(
            "\nDemo finished in {:.1} s. Its files are in {}:\n\
             \x20 contacts.csv, sample.csv   the exported contacts and the test sample\n\
             \x20 reports/                   plans, merge and restore reports (JSON)\n\
             \x20 backups/                   one verified backup per merged pair\n\
             \x20 savepoint.json, logs/      the journals that make runs resumable, and the logs\n\
             \n\
             Next, against your org:\n\
             \x20 1. copy .env.example to .env and set DEVREV_API_TOKEN (a token of a dev user)\n\
             \x20 2. devrev-merge --test-api\n\
             \x20 3. devrev-merge --export-contacts contacts.csv   (or use your warehouse export)\n\
             \x20 4. devrev-merge --csv contacts.csv --preview --check-live\n\
             \x20 5. a sample, a canary (--max-merges), then the full run, as above\n\
             \x20 6. decide the groups that need review in reports/review-<time>.csv, preview with\n\
             \x20    --decisions FILE, then run with it (docs/review.md, \"The workflow\")\n",
            took.as_secs_f64(),
            dir.display()
        )
    }

    fn say(text: &str) -> Result<(), AppError> {
        output::data(|w| {
            w.write_all(text.as_bytes())?;
            w.flush()
        })
    }
}
