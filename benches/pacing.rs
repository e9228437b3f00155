//! Pacing benchmark: how close the client gets to the allowed request rate without a 429.
//!
//! Run: `cargo bench --bench pacing` (optionally `-- CALLS WINDOW_SECS DURATION_SECS`,
//! default 120 calls per 10 s for 30 s). Starts the fake DevRev with the same limit, drives
//! the client from 4 concurrent tasks and prints achieved rate / allowed rate and the 429 count.
//! Target: ratio >= 0.97 with zero 429s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use devrev_fake::fake::{FakeOptions, FakeServer, RateLimit};
use devrev_fake::seed::{GenSpec, Seed};
use devrev_merge::devrev::{ClientConfig, DevRevClient};

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = args.first().copied().unwrap_or(120.0) as u32;
    let window = Duration::from_secs_f64(args.get(1).copied().unwrap_or(10.0));
    let duration = Duration::from_secs_f64(args.get(2).copied().unwrap_or(30.0));

    let fake = FakeServer::start(FakeOptions {
        seed: Seed::generate(&GenSpec {
            pairs: 1,
            ..GenSpec::default()
        }),
        rate_limit: Some(RateLimit {
            limit: calls,
            window,
        }),
        ..FakeOptions::default()
    });
    let client = Arc::new(
        DevRevClient::new(ClientConfig {
            base_url: devrev_merge::config::parse_base_url(&fake.base_url()).expect("url"),
            token: fake.token().into(),
            rate_limit_calls: calls,
            rate_limit_period: window,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            max_retries: 3,
            page_size: 100,
            min_backoff: Duration::from_millis(100),
            limits: Default::default(),
        })
        .expect("client"),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (c, stop) = (client.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = c.auth_tokens_info().await;
                }
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
    });
    let reqs = fake.requests();
    let first = reqs.first().map(|r| r.at).unwrap_or_default();
    let last = reqs.last().map(|r| r.at).unwrap_or_default();
    let span = (last - first).as_secs_f64();
    let n = reqs.len();
    // Rate over the span between the first and the last request: n-1 intervals.
    let achieved = if span > 0.0 {
        (n as f64 - 1.0) / span
    } else {
        0.0
    };
    let allowed = f64::from(calls) / window.as_secs_f64();
    let max_in_window = (0..n)
        .map(|i| {
            reqs[i..]
                .iter()
                .take_while(|u| u.at < reqs[i].at + window)
                .count()
        })
        .max()
        .unwrap_or(0);
    let too_many = reqs.iter().filter(|r| r.status == 429).count();
    println!(
        "pacing benchmark: limit {calls} calls per {:.1} s, ran {:.1} s",
        window.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    println!("  requests seen by the server : {n}");
    println!("  achieved rate               : {achieved:.3} /s");
    println!("  allowed rate                : {allowed:.3} /s");
    println!("  achieved / allowed          : {:.3}", achieved / allowed);
    println!("  most requests in one window : {max_in_window} (limit {calls})");
    println!("  429 answers                 : {too_many}");
}
