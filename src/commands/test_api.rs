//! `--test-api`: is the token good, which org and identity is it, when does it expire, can it
//! read what a merge run needs, and what rate-limit headers does DevRev send.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::devrev::{ApiError, DevRevClient, RateHeaders};
use crate::error::AppError;
use crate::output;

/// One read probe's outcome.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub name: String,
    pub endpoint: String,
    pub ok: bool,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The permission (OAuth scope) this probe needs, named when it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_permission: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TestApiReport {
    pub base_url: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_in_days: Option<f64>,
    pub warnings: Vec<String>,
    pub probes: Vec<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_headers: Option<RateHeaders>,
    pub configured_rate_limit: String,
}

const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

fn scope_for(endpoint: &str) -> &'static str {
    match endpoint {
        "rev-users.list" => "rev_user:read",
        "works.list" => "ticket:read",
        "conversations.list" => "conversation:read",
        _ => "a valid, unexpired token",
    }
}

/// Milliseconds since `t0` minus the time the client spent waiting for its own pacer since
/// `wait0` (its `rate_wait_ms` then): at 45 calls/min every probe after the first waits
/// about 1.3 s for the local pacer, which says nothing about DevRev's latency.
fn latency_since(client: &DevRevClient, t0: Instant, wait0: u64) -> u64 {
    let waited = client.totals().rate_wait_ms.saturating_sub(wait0);
    (t0.elapsed().as_millis() as u64).saturating_sub(waited)
}

async fn probe(
    client: &DevRevClient,
    name: &str,
    endpoint: &str,
    key: &str,
    fut: impl std::future::Future<Output = Result<serde_json::Value, ApiError>>,
) -> (Probe, Option<ApiError>) {
    let t0 = Instant::now();
    let wait0 = client.totals().rate_wait_ms;
    let res = fut.await;
    let latency_ms = latency_since(client, t0, wait0);
    match res {
        Ok(v) => (
            Probe {
                name: name.into(),
                endpoint: endpoint.into(),
                ok: true,
                latency_ms,
                items: v.get(key).and_then(|a| a.as_array()).map(Vec::len),
                error: None,
                status: None,
                missing_permission: None,
            },
            None,
        ),
        Err(e) => (failed_probe(name, endpoint, latency_ms, &e), Some(e)),
    }
}

fn failed_probe(name: &str, endpoint: &str, latency_ms: u64, e: &ApiError) -> Probe {
    let denied = matches!(e.status(), Some(401 | 403));
    Probe {
        name: name.into(),
        endpoint: endpoint.into(),
        ok: false,
        latency_ms,
        items: None,
        error: Some(e.to_string()),
        status: e.status(),
        missing_permission: denied.then(|| scope_for(endpoint).to_string()),
    }
}

/// Runs the probes and prints the result. Exit 0 when all pass, 77 on 401/403, 69 when
/// DevRev cannot be reached.
pub async fn run(cfg: &Config) -> Result<(), AppError> {
    let client = DevRevClient::new(cfg.client_config()?)?;
    let mut report = TestApiReport {
        base_url: cfg.base_url.to_string(),
        ok: true,
        organization: None,
        identity: None,
        token_expires_at: None,
        token_expires_in_days: None,
        warnings: vec![],
        probes: vec![],
        rate_limit_headers: None,
        configured_rate_limit: format!(
            "{} calls per {} s",
            cfg.rate_limit_calls,
            cfg.rate_limit_period.as_secs_f64()
        ),
    };
    // Reads only make sense once the token itself works.
    let worst = match check_token(&client, &mut report).await {
        Some(e) => Some(e),
        None => read_probes(&client, &mut report).await,
    };
    report.rate_limit_headers = client.last_rate_headers();
    report.ok = report.probes.iter().all(|p| p.ok);

    if cfg.json {
        output::json(&report)?;
    } else {
        output::data(|w| print_human(w, &report))?;
    }
    match worst {
        None => Ok(()),
        Some(e) => Err(AppError::Api(e)),
    }
}

/// `auth-tokens.info`: the org, the identity and the token's expiry (with a warning when it is
/// near). Returns the error when the token itself does not work.
async fn check_token(client: &DevRevClient, report: &mut TestApiReport) -> Option<ApiError> {
    let mut worst = None;
    let t0 = Instant::now();
    let wait0 = client.totals().rate_wait_ms;
    let info = client.auth_tokens_info().await;
    let latency_ms = latency_since(client, t0, wait0);
    match info {
        Ok(info) => {
            report.probes.push(Probe {
                name: "token".into(),
                endpoint: "auth-tokens.info".into(),
                ok: true,
                latency_ms,
                items: None,
                error: None,
                status: None,
                missing_permission: None,
            });
            report.organization = serde_json::to_value(&info.organization).ok();
            report.identity = serde_json::to_value(&info.user).ok();
            if let Some(exp) = info.token.expiry {
                let at = chrono::DateTime::from_timestamp(exp, 0);
                report.token_expires_at = at.map(|t| t.to_rfc3339());
                let left = exp.saturating_sub(chrono::Utc::now().timestamp());
                report.token_expires_in_days = Some((left as f64 / 86400.0 * 10.0).round() / 10.0);
                if left <= 0 {
                    report.warnings.push("the token has expired".into());
                } else if (left as u64) < EXPIRY_WARNING.as_secs() {
                    report.warnings.push(format!(
                        "the token expires in {:.1} days: create a new one before a long run",
                        left as f64 / 86400.0
                    ));
                }
            }
        }
        Err(e) => {
            report
                .probes
                .push(failed_probe("token", "auth-tokens.info", latency_ms, &e));
            worst = Some(e);
        }
    }

    worst
}

/// One `limit: 1` read per kind of object the merge run lists; returns the first error.
async fn read_probes(client: &DevRevClient, report: &mut TestApiReport) -> Option<ApiError> {
    let mut worst = None;
    let probes = [
        (
            "contacts",
            "rev-users.list",
            "rev_users",
            json!({"limit": 1}),
        ),
        (
            "tickets",
            "works.list",
            "works",
            json!({"limit": 1, "type": ["ticket"]}),
        ),
        (
            "conversations",
            "conversations.list",
            "conversations",
            json!({"limit": 1}),
        ),
    ];
    for (name, endpoint, key, body) in probes {
        let (p, err) = probe(client, name, endpoint, key, async {
            client
                .call::<serde_json::Value>(endpoint, &body, crate::devrev::CallKind::Read)
                .await
        })
        .await;
        report.probes.push(p);
        if let Some(e) = err {
            worst.get_or_insert(e);
        }
    }
    worst
}

fn print_human(w: &mut impl Write, r: &TestApiReport) -> io::Result<()> {
    writeln!(w, "DevRev API check against {}", r.base_url)?;
    if let Some(org) = &r.organization {
        writeln!(
            w,
            "  organization: {} ({})",
            org.get("display_id")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            org.get("id").and_then(|v| v.as_str()).unwrap_or("?")
        )?;
    }
    if let Some(id) = &r.identity {
        writeln!(
            w,
            "  identity:     {} {} <{}>",
            id.get("display_id").and_then(|v| v.as_str()).unwrap_or("?"),
            id.get("display_name")
                .and_then(|v| v.as_str())
                .unwrap_or(""),
            id.get("email").and_then(|v| v.as_str()).unwrap_or("")
        )?;
    }
    if let Some(at) = &r.token_expires_at {
        writeln!(
            w,
            "  token expiry: {at} ({} days left)",
            r.token_expires_in_days.unwrap_or(0.0)
        )?;
    }
    for p in &r.probes {
        let status = if p.ok { "OK  " } else { "FAIL" };
        let detail = match (&p.error, p.items) {
            (Some(e), _) => e.clone(),
            (None, Some(n)) => format!("{n} item(s) on the first page"),
            (None, None) => String::new(),
        };
        writeln!(
            w,
            "  {status} {:<14} {:<20} {:>5} ms  {detail}",
            p.name, p.endpoint, p.latency_ms
        )?;
        if let Some(perm) = &p.missing_permission {
            writeln!(w, "       the token lacks permission: {perm}")?;
        }
    }
    match &r.rate_limit_headers {
        Some(h) => writeln!(
            w,
            "  rate-limit headers: limit {} remaining {} reset {}",
            h.limit.map_or("-".into(), |v| v.to_string()),
            h.remaining.map_or("-".into(), |v| v.to_string()),
            h.reset.map_or("-".into(), reset_text)
        ),
        None => writeln!(w, "  rate-limit headers: none seen"),
    }?;
    writeln!(w, "  configured pacing: {}", r.configured_rate_limit)?;
    for warning in &r.warnings {
        writeln!(w, "  warning: {warning}")?;
    }
    writeln!(
        w,
        "{}",
        if r.ok {
            "All checks passed."
        } else {
            "Some checks failed."
        }
    )?;
    Ok(())
}

/// `X-Ratelimit-Reset` is epoch seconds (../shared/devrev-api.md): shown as a time and how far
/// off it is, not as a ten-digit number. A small value is taken as seconds from now, as some
/// gateways send it.
fn reset_text(reset: u64) -> String {
    let now = chrono::Utc::now();
    let at = if reset > 1_000_000_000 {
        i64::try_from(reset)
            .ok()
            .and_then(|r| chrono::DateTime::from_timestamp(r, 0))
    } else {
        i64::try_from(reset)
            .ok()
            .map(|r| now + chrono::Duration::seconds(r))
    };
    match at {
        Some(at) => {
            let secs = (at - now).num_seconds();
            let when = at.format("%H:%M:%S UTC");
            if secs >= 0 {
                format!(
                    "{when} (in {})",
                    crate::preview::human_duration(secs as f64)
                )
            } else {
                format!("{when} (passed)")
            }
        }
        None => reset.to_string(),
    }
}
