//! Writes a realistic, deterministic contacts export for benchmarks and trials.
//!
//! Shaped like DESIGN §9 (by email): 12% clean REVU-/user_ pairs, 54% a single user_ row,
//! 28% a single REVU- row, 3.5% two user_ rows, 1% three user_ rows, and the rest split
//! between one REVU- with several user_ rows, two REVU- rows, -drop- leftovers, refs that are
//! emails, and rows without an email; plus one email with 50 rows. 18% of display names are
//! the email, full names are mostly empty, timestamps look like `2024-12-03 15:16:07.123`.
//! Rows are shuffled so the two halves of a pair are far apart, as in a real export.
//!
//! ```text
//! cargo run --release --example gen_contacts -- --rows 1000000 --seed 7 --out big.csv
//! ```

use std::io::Write;

/// The fake's SplitMix64: one seeded generator for every fixture.
use devrev_fake::rng::Rng;

const ORG: &str = "Xy7pQ2rT";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const FIRST: &[&str] = &[
    "ana", "ben", "carla", "dev", "elif", "femi", "gus", "hana", "ivan", "jade", "kofi", "lena",
    "mateo", "nora", "omar", "priya", "quinn", "rosa", "sven", "tara", "umar", "vera", "wei",
    "yuki",
];
const LAST: &[&str] = &[
    "silva", "muller", "okafor", "tanaka", "novak", "garcia", "smith", "haddad", "kowalski",
    "nguyen", "rossi", "dubois", "kim", "larsen", "patel", "ibrahim",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "acme.io",
    "globex.net",
    "initech.org",
    "mail.example.co.uk",
];

struct Gen {
    rng: Rng,
    next_id: u64,
    next_email: u64,
}

struct Row {
    id: String,
    display: String,
    email: String,
    ext_ref: String,
    full: String,
    created: String,
    updated: String,
    tickets: String,
}

impl Gen {
    /// A unique, case-sensitive base-62 id of 8 characters (a bijection of the counter).
    fn rid(&mut self) -> String {
        self.next_id += 1;
        let space = 62u64.pow(8);
        // Odd and not a multiple of 31, so coprime with 62^8: distinct counters, distinct ids.
        let mut n = (u128::from(self.next_id) * 98_765_432_123 % u128::from(space)) as u64;
        let mut s = [0u8; 8];
        for c in s.iter_mut().rev() {
            *c = BASE62[(n % 62) as usize];
            n /= 62;
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    fn user_ref(&mut self) -> String {
        let mut s = String::from("user_");
        for _ in 0..26 {
            let c = self.rng.below(36) as u8;
            s.push(if c < 10 {
                (b'0' + c) as char
            } else {
                (b'a' + c - 10) as char
            });
        }
        s
    }

    fn email(&mut self) -> (String, String) {
        self.next_email += 1;
        let (f, l) = (self.rng.pick(FIRST), self.rng.pick(LAST));
        let d = self.rng.pick(DOMAINS);
        (
            format!("{f}.{l}{}@{d}", self.next_email),
            format!("{} {}", cap(f), cap(l)),
        )
    }

    fn stamp(&mut self) -> (String, String) {
        // 2022-01-01 .. 2025-06-30, as seconds from 2022-01-01.
        let t = self.rng.below(1_277 * 86_400);
        let u = t + self.rng.below(200 * 86_400);
        (
            fmt_ts(t, self.rng.below(1000)),
            fmt_ts(u, self.rng.below(1000)),
        )
    }

    fn tickets(&mut self) -> String {
        let r = self.rng.below(100);
        match r {
            0 => String::new(),
            1..=35 => "0".into(),
            36..=75 => (1 + self.rng.below(3)).to_string(),
            76..=95 => (4 + self.rng.below(17)).to_string(),
            _ => (21 + self.rng.below(280)).to_string(),
        }
    }

    fn row(&mut self, email: &str, name: &str, ext_ref: Option<String>) -> Row {
        let rid = self.rid();
        let ext_ref = ext_ref.unwrap_or_else(|| format!("REVU-{rid}"));
        let display = if self.rng.chance(0.18) {
            email.trim().to_string()
        } else {
            name.to_string()
        };
        let full = if self.rng.chance(0.1) {
            name.to_string()
        } else {
            String::new()
        };
        let (created, updated) = self.stamp();
        Row {
            id: format!("don:identity:dvrv-us-1:devo/{ORG}:revu/{rid}"),
            display,
            email: email.to_string(),
            ext_ref,
            full,
            created,
            updated,
            tickets: self.tickets(),
        }
    }

    /// The same address as exported for another contact: sometimes with other case or spaces.
    fn variant(&mut self, email: &str) -> String {
        match self.rng.below(10) {
            0 => email.to_uppercase(),
            1 => format!(" {email}"),
            2 => cap(email),
            _ => email.to_string(),
        }
    }

    /// All rows of one email.
    fn slot(&mut self, out: &mut Vec<Row>) {
        let (email, name) = self.email();
        let p = self.rng.below(10_000);
        let revu = |g: &mut Gen, out: &mut Vec<Row>| {
            let e = g.variant(&email);
            let r = g.row(&e, &name, None);
            out.push(r);
        };
        let user = |g: &mut Gen, out: &mut Vec<Row>| {
            let e = g.variant(&email);
            let u = g.user_ref();
            let r = g.row(&e, &name, Some(u));
            out.push(r);
        };
        match p {
            // 12% clean pairs
            0..1200 => {
                revu(self, out);
                user(self, out);
            }
            // 54% single user_
            1200..6600 => user(self, out),
            // 28% single REVU-
            6600..9400 => revu(self, out),
            // 3.5% two user_
            9400..9750 => {
                user(self, out);
                user(self, out);
            }
            // 1% three user_
            9750..9850 => {
                for _ in 0..3 {
                    user(self, out);
                }
            }
            // 0.4% one REVU- and 2-4 user_
            9850..9890 => {
                revu(self, out);
                for _ in 0..2 + self.rng.below(3) {
                    user(self, out);
                }
            }
            // 0.2% two REVU-
            9890..9910 => {
                revu(self, out);
                revu(self, out);
            }
            // 0.3% a -drop- leftover next to the live user_ ref
            9910..9940 => {
                let u = self.user_ref();
                let rid = self.rid();
                let dropped = format!("{u}-drop-don:identity:dvrv-us-1:devo/{ORG}:revu/{rid}");
                let r = self.row(&email, &name, Some(dropped));
                out.push(r);
                let r = self.row(&email, &name, Some(u));
                out.push(r);
                if self.rng.chance(0.5) {
                    revu(self, out);
                }
            }
            // 0.4% a ref that is the email itself
            9940..9980 => {
                let r = self.row(&email, &name, Some(email.clone()));
                out.push(r);
            }
            // 0.2% no email at all
            _ => {
                let r = self.row("", &name, None);
                out.push(r);
            }
        }
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Seconds since 2022-01-01 00:00:00 → `YYYY-MM-DD HH:MM:SS.mmm`.
fn fmt_ts(secs: u64, millis: u64) -> String {
    let mut days = secs / 86_400;
    let rem = secs % 86_400;
    let mut year = 2022;
    loop {
        let len = if year % 4 == 0 { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let feb = if year % 4 == 0 { 29 } else { 28 };
    let months = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 1;
    for m in months {
        if days < m {
            break;
        }
        days -= m;
        month += 1;
    }
    format!(
        "{year}-{month:02}-{:02} {:02}:{:02}:{:02}.{millis:03}",
        days + 1,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows_wanted: u64 = 1_000_000;
    let mut seed: u64 = 7;
    let mut out_path: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows_wanted = args.next().ok_or("--rows needs a number")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed needs a number")?.parse()?,
            "--out" => out_path = Some(args.next().ok_or("--out needs a path")?),
            "-h" | "--help" => {
                println!("gen_contacts [--rows N (1000000)] [--seed S (7)] [--out FILE (stdout)]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let mut g = Gen {
        rng: Rng::from_state(seed),
        next_id: 0,
        next_email: 0,
    };
    let mut rows: Vec<Row> = Vec::with_capacity(rows_wanted as usize + 64);
    // One email with 50 rows, as in the real export.
    if rows_wanted >= 100 {
        let (email, name) = g.email();
        let r = g.row(&email, &name, None);
        rows.push(r);
        for _ in 0..49 {
            let u = g.user_ref();
            let r = g.row(&email, &name, Some(u));
            rows.push(r);
        }
    }
    while (rows.len() as u64) < rows_wanted {
        g.slot(&mut rows);
    }
    rows.truncate(rows_wanted as usize);
    // Fisher-Yates with the same generator: deterministic for a seed.
    for i in (1..rows.len()).rev() {
        let j = g.rng.below(i as u64 + 1) as usize;
        rows.swap(i, j);
    }

    let sink: Box<dyn Write> = match &out_path {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(std::io::BufWriter::with_capacity(1 << 20, sink));
    w.write_record([
        "REV_USER_ID",
        "DISPLAY_NAME",
        "EMAIL",
        "EXTERNAL_REF",
        "FULL_NAME",
        "CREATED_AT",
        "UPDATED_AT",
        "TICKET_COUNT",
    ])?;
    for r in &rows {
        w.write_record([
            &r.id, &r.display, &r.email, &r.ext_ref, &r.full, &r.created, &r.updated, &r.tickets,
        ])?;
    }
    w.flush()?;
    if let Some(p) = out_path {
        eprintln!("wrote {} rows to {p}", rows.len());
    }
    Ok(())
}
