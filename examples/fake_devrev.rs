//! The fake DevRev server, runnable by hand for a local trial of `devrev-merge`:
//!
//! ```text
//! cargo run --example fake_devrev -- --pairs 20 --write-csv contacts.csv
//! ```
//!
//! It prints the base URL, the token and the `export` line to paste, writes the contacts CSV,
//! and serves until Ctrl-C, then prints what it saw.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use devrev_fake::fake::{
    DEFAULT_TOKEN, FakeOptions, FakeServer, Fault, MergeBehaviour, MoveMode, RandomFaults,
    RateLimit, SecondaryAfter,
};
use devrev_fake::seed::{GenSpec, Seed};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Moves {
    All,
    Partial,
    Nothing,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum After {
    Gone,
    Deactivated,
    PrimaryIdentity,
    DropRef,
    /// One of the four per secondary, by a hash of its id.
    Mixed,
}

/// A stateful fake DevRev API on 127.0.0.1 for trying devrev-merge without a real org.
#[derive(Debug, Parser)]
#[command(name = "fake_devrev")]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Clean REVU-/user_ duplicate pairs to generate.
    #[arg(long, default_value_t = 10)]
    pairs: usize,
    /// Needs-review groups (two or three user_, REVU- + two user_, -drop- refs).
    #[arg(long, default_value_t = 4)]
    review_groups: usize,
    /// Contacts without a duplicate.
    #[arg(long, default_value_t = 6)]
    singles: usize,
    /// Serve this JSON fixture instead of generating a world.
    #[arg(long, value_name = "FILE")]
    seed_json: Option<PathBuf>,
    /// Write the world as a JSON fixture (loadable with --seed-json).
    #[arg(long, value_name = "FILE")]
    write_seed: Option<PathBuf>,
    /// Seed of the generator (same seed, same world).
    #[arg(long, default_value_t = 42)]
    rng_seed: u64,
    /// The accepted API token.
    #[arg(long, default_value = DEFAULT_TOKEN)]
    token: String,
    /// Write the contacts export (the CSV devrev-merge reads) here.
    #[arg(long, value_name = "FILE")]
    write_csv: Option<PathBuf>,
    /// Requests allowed per window and token.
    #[arg(long, default_value_t = 10_000)]
    rate_limit: u32,
    /// Rate-limit window in seconds.
    #[arg(long, default_value_t = 300)]
    rate_window: u64,
    /// Milliseconds between a merge's 200 and its effect.
    #[arg(long, default_value_t = 1000)]
    merge_delay_ms: u64,
    /// Milliseconds a merged secondary's external_ref stays taken after the merge applies.
    #[arg(long, default_value_t = 0)]
    ref_release_ms: u64,
    /// What a merge moves to the primary.
    #[arg(long, value_enum, default_value = "all")]
    moves: Moves,
    /// What the secondary looks like after a merge.
    #[arg(long, value_enum, default_value = "gone")]
    secondary_after: After,
    /// Probability (0..1) that a request gets a random fault (500, 503, 429, slow, dropped).
    #[arg(long, default_value_t = 0.0)]
    faults: f64,
    /// Seconds a located attachment URL stays valid.
    #[arg(long, default_value_t = 300)]
    url_ttl: u64,
    /// Answer every authorized call with 403 forbidden.
    #[arg(long)]
    forbidden: bool,
    /// Echo the request's Authorization header (and the bare token) in every error message,
    /// as a misconfigured gateway does.
    #[arg(long)]
    echo_auth: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = match &args.seed_json {
        Some(path) => match Seed::from_json_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(66);
            }
        },
        None => Seed::generate(&GenSpec {
            pairs: args.pairs,
            review_groups: args.review_groups,
            singles: args.singles,
            rng_seed: args.rng_seed,
            ..GenSpec::default()
        }),
    };
    if !(0.0..=1.0).contains(&args.faults) {
        eprintln!("error: --faults must be a probability between 0 and 1");
        return ExitCode::from(64);
    }
    if let Some(path) = &args.write_seed
        && let Err(e) = devrev_merge::fsutil::write_private_atomic(path, seed.to_json().as_bytes())
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::from(73);
    }
    let opts = FakeOptions {
        token: args.token.clone(),
        seed,
        rate_limit: Some(RateLimit {
            limit: args.rate_limit.max(1),
            window: Duration::from_secs(args.rate_window.max(1)),
        }),
        merge: MergeBehaviour {
            delay: Duration::from_millis(args.merge_delay_ms),
            moves: match args.moves {
                Moves::All => MoveMode::All,
                Moves::Partial => MoveMode::Partial,
                Moves::Nothing => MoveMode::Nothing,
            },
            secondary_after: match args.secondary_after {
                After::Gone => SecondaryAfter::Gone,
                After::Deactivated => SecondaryAfter::Deactivated,
                After::PrimaryIdentity => SecondaryAfter::PrimaryIdentity,
                After::DropRef => SecondaryAfter::DropRef,
                After::Mixed => SecondaryAfter::Mixed,
            },
            ref_release_delay: Duration::from_millis(args.ref_release_ms),
            renames_primary: false,
            ..MergeBehaviour::default()
        },
        random_faults: (args.faults > 0.0).then(|| RandomFaults {
            seed: args.rng_seed,
            probability: args.faults,
            kinds: vec![
                Fault::Status500,
                Fault::Status503,
                Fault::Spurious429 { retry_after_s: 1 },
                Fault::Slow(Duration::from_millis(1500)),
                Fault::Drop,
                Fault::ApplyThenDrop,
            ],
        }),
        url_ttl: Duration::from_secs(args.url_ttl.max(1)),
        forbidden: args.forbidden,
        hostile: devrev_fake::fake::Hostile {
            echo_auth: args.echo_auth,
            ..Default::default()
        },
        ..FakeOptions::default()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], args.port).into();
    let fake = match FakeServer::start_at(addr, opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::from(69);
        }
    };
    let (users, tickets) = fake.with_state(|s| (s.rev_users.len(), s.works.len()));
    if let Some(path) = &args.write_csv {
        if let Err(e) =
            devrev_merge::fsutil::write_private_atomic(path, fake.contacts_csv().as_bytes())
        {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(73);
        }
        println!("wrote {} ({users} contacts)", path.display());
    }
    println!("fake DevRev listening on {}", fake.base_url());
    println!("  {users} contacts, {tickets} tickets");
    println!("  token: {}", fake.token());
    println!();
    // The pace that matches this fake's own limit (9/10 of it, so a run never meets its 429s):
    // without it the tool paces at DevRev's 45 calls a minute and its estimates say so.
    println!(
        "export DEVREV_BASE_URL={} DEVREV_API_TOKEN={} RATE_LIMIT_CALLS={} RATE_LIMIT_PERIOD={}",
        fake.base_url(),
        fake.token(),
        (u64::from(args.rate_limit.max(1)) * 9 / 10).max(1),
        args.rate_window.max(1)
    );
    if let Some(path) = &args.write_csv {
        println!("devrev-merge --test-api");
        println!("devrev-merge --csv {} --preview", path.display());
    }
    println!();
    println!("Ctrl-C to stop.");

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(70);
        }
    };
    let _ = rt.block_on(tokio::signal::ctrl_c());

    let mut per_path: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in fake.requests() {
        let key = if r.path.starts_with("/download/") {
            "/download/…".to_string()
        } else {
            r.path
        };
        let e = per_path.entry(key).or_default();
        e.0 += 1;
        if r.status != 200 {
            e.1 += 1;
        }
    }
    println!("\nrequests (path: total / not 200):");
    for (path, (n, bad)) in per_path {
        println!("  {path}: {n} / {bad}");
    }
    let (applied, pending) = fake.with_state(|s| {
        let a = s.merges.iter().filter(|m| m.applied).count();
        (a, s.merges.len() - a)
    });
    println!("merges: {applied} applied, {pending} pending");
    ExitCode::SUCCESS
}
