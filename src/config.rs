//! Flags + environment + `.env` → one validated `Config`.
//!
//! Precedence is flag > environment > `.env` (current folder only) > default. `.env` is
//! loaded into the environment by `main` before anything else runs, without overriding
//! variables that are already set, which gives exactly that order.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::cli::{BackupScope, Cli, Keep};
use crate::devrev::ClientConfig;
use crate::error::AppError;

pub const DEFAULT_BASE_URL: &str = "https://api.devrev.ai";

/// The validated settings of one run. The token is a `SecretString`: its `Debug` prints
/// `[REDACTED]`, and it is only exposed when building the `Authorization` header.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: Option<SecretString>,
    pub base_url: url::Url,
    pub rate_limit_calls: u32,
    pub rate_limit_period: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_retries: u32,
    pub page_size: u32,
    pub min_backoff: Duration,
    pub keep: Keep,
    pub email_domain: Option<String>,
    pub backup_scope: BackupScope,
    pub backup_dir: PathBuf,
    pub log_dir: PathBuf,
    pub report_dir: PathBuf,
    pub savepoint: PathBuf,
    pub yes: bool,
    pub max_merges: Option<usize>,
    pub merge_timeout: Duration,
    pub json: bool,
    pub quiet: bool,
}

/// Reads a setting: the flag if given, else the environment variable, else the default.
fn pick(flag: &Option<String>, env: &str) -> Option<(String, String)> {
    if let Some(v) = flag {
        return Some((
            v.clone(),
            format!("--{}", env.to_lowercase().replace('_', "-")),
        ));
    }
    std::env::var(env)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| (v, env.to_string()))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    flag: &Option<String>,
    env: &str,
    flag_name: &str,
    default: T,
    what: &str,
) -> Result<T, AppError> {
    let Some((raw, _)) = pick(flag, env) else {
        return Ok(default);
    };
    let source = if flag.is_some() {
        flag_name.to_string()
    } else {
        env.to_string()
    };
    match raw.trim().parse::<T>() {
        Ok(v) if v > T::default() => Ok(v),
        _ => Err(AppError::Config(format!(
            "{source}={raw:?} is not valid: expected {what} greater than zero. \
             Fix it in the flag, the environment or .env (see .env.example)."
        ))),
    }
}

impl Config {
    pub fn from_cli(cli: &Cli) -> Result<Self, AppError> {
        let token = std::env::var("DEVREV_API_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(SecretString::from);

        let base_raw = pick(&cli.base_url, "DEVREV_BASE_URL")
            .map(|(v, _)| v)
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let base_url = parse_base_url(&base_raw)?;

        let rate_limit_calls: u32 = positive(
            &cli.rate_limit_calls,
            "RATE_LIMIT_CALLS",
            "--rate-limit-calls",
            45,
            "a whole number of calls",
        )?;
        let period_s: f64 = positive(
            &cli.rate_limit_period,
            "RATE_LIMIT_PERIOD",
            "--rate-limit-period",
            60.0,
            "a number of seconds",
        )?;
        let connect_s: f64 = positive(
            &cli.connect_timeout,
            "DEVREV_CONNECT_TIMEOUT",
            "--connect-timeout",
            30.0,
            "a number of seconds",
        )?;
        let read_s: f64 = positive(
            &cli.read_timeout,
            "DEVREV_READ_TIMEOUT",
            "--read-timeout",
            60.0,
            "a number of seconds",
        )?;
        let max_retries = match pick(&cli.max_retries, "DEVREV_MAX_RETRIES") {
            None => 3,
            Some((raw, src)) => raw.trim().parse::<u32>().map_err(|_| {
                AppError::Config(format!(
                    "{src}={raw:?} is not valid: expected a whole number of retries (0 or more)."
                ))
            })?,
        };
        // Hidden knob for tests: shorter backoff so retry tests finish quickly.
        let min_backoff_ms: u64 = std::env::var("DEVREV_MERGE_MIN_BACKOFF_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        if !period_s.is_finite() || !connect_s.is_finite() || !read_s.is_finite() {
            return Err(AppError::Config(
                "timeouts and periods must be finite numbers".into(),
            ));
        }

        Ok(Config {
            token,
            base_url,
            rate_limit_calls,
            rate_limit_period: Duration::from_secs_f64(period_s),
            connect_timeout: Duration::from_secs_f64(connect_s),
            read_timeout: Duration::from_secs_f64(read_s),
            max_retries,
            page_size: 100,
            min_backoff: Duration::from_millis(min_backoff_ms),
            keep: cli.keep,
            email_domain: cli
                .email_domain
                .as_ref()
                .map(|d| d.trim().trim_start_matches('@').to_lowercase()),
            backup_scope: cli.backup_scope,
            backup_dir: cli.backup_dir.clone(),
            log_dir: cli.log_dir.clone(),
            report_dir: cli.report_dir.clone(),
            savepoint: cli.savepoint.clone(),
            yes: cli.yes,
            max_merges: cli.max_merges,
            merge_timeout: Duration::from_secs(cli.merge_timeout),
            json: cli.json,
            quiet: cli.quiet,
        })
    }

    /// Settings for the API client; fails with exit 78 when no token is configured.
    pub fn client_config(&self) -> Result<ClientConfig, AppError> {
        let token = self.token.clone().ok_or_else(|| {
            AppError::Config(
                "no DevRev API token: set DEVREV_API_TOKEN in the environment or in a .env file \
                 in the current folder (copy .env.example to .env and fill it in)."
                    .into(),
            )
        })?;
        Ok(ClientConfig {
            base_url: self.base_url.clone(),
            token,
            rate_limit_calls: self.rate_limit_calls,
            rate_limit_period: self.rate_limit_period,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            max_retries: self.max_retries,
            page_size: self.page_size,
            min_backoff: self.min_backoff,
        })
    }
}

/// Accepts `https://` anywhere and `http://` only for loopback hosts (local fakes); a token
/// must never travel in clear text over a network.
pub fn parse_base_url(raw: &str) -> Result<url::Url, AppError> {
    let mut url = url::Url::parse(raw.trim()).map_err(|e| {
        AppError::Config(format!("DEVREV_BASE_URL {raw:?} is not a valid URL: {e}"))
    })?;
    // Whatever is in the URL is copied into reports and logs; credentials belong in
    // DEVREV_API_TOKEN only.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::Config(
            "DEVREV_BASE_URL must not contain a user name or password: the API token goes in \
             DEVREV_API_TOKEN, and the base URL is copied into reports and logs."
                .into(),
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(AppError::Config(format!(
                    "refusing plain http:// base URL {raw:?}: the API token would travel \
                     unencrypted. Use https://, or http:// only for a loopback address \
                     (127.0.0.1, ::1, localhost)."
                )));
            }
        }
        other => {
            return Err(AppError::Config(format!(
                "DEVREV_BASE_URL {raw:?} has scheme {other:?}; use https://"
            )));
        }
    }
    // `Url::join` drops the last path segment unless the base ends with '/'.
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_loopback() {
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("http://localhost:1").is_ok());
        assert!(parse_base_url("http://[::1]:9").is_ok());
        assert!(parse_base_url("https://api.devrev.ai").is_ok());
        let e = parse_base_url("http://api.devrev.ai").unwrap_err();
        assert!(e.to_string().contains("refusing plain http://"));
        assert_eq!(e.exit_code(), 78);
        assert!(parse_base_url("ftp://x").is_err());
    }

    #[test]
    fn credentials_in_the_base_url_are_refused_without_echoing_them() {
        let e = parse_base_url("https://me:s3cr3t@api.devrev.ai").unwrap_err();
        assert_eq!(e.exit_code(), 78);
        assert!(!e.to_string().contains("s3cr3t"));
        assert!(parse_base_url("https://tok@api.devrev.ai").is_err());
    }

    #[test]
    fn base_url_gets_trailing_slash_so_endpoints_join() {
        let u = parse_base_url("https://h/internal").unwrap();
        assert_eq!(
            u.join("works.list").unwrap().as_str(),
            "https://h/internal/works.list"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let cfg = ClientConfig {
            base_url: parse_base_url("https://h").unwrap(),
            token: SecretString::from("s3cr3t-token"),
            rate_limit_calls: 1,
            rate_limit_period: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_retries: 0,
            page_size: 1,
            min_backoff: Duration::from_millis(1),
        };
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }
}
