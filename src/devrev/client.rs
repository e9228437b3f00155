//! The one DevRev API client: pacing, retries, timeouts, pagination and call counters.
//!
//! Every command shares one `DevRevClient` (behind an `Arc`) so a single rate budget covers
//! every call the process makes, retries included.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::{ApiError, ErrorBody};
use super::retry::{self, Decision, Failure};
use super::types::*;

/// Empty pages in a row, each handing out a new cursor, after which a listing is taken for a
/// server that never ends it (a fresh cursor on every page defeats the repeated-cursor check,
/// and `--max-pages` would allow hours of them at DevRev's pace).
const EMPTY_PAGES_MAX: usize = 20;

/// How a call may be repeated when its answer is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Reads: always safe to repeat.
    Read,
    /// Writes that set a state (`reported_by.set`, `external_ref = x`): repeating gives the
    /// same result, so they are retried like reads.
    IdempotentWrite,
    /// Writes that must not be repeated blindly (`rev-users.merge`, `rev-users.create`). A lost
    /// answer, or any 5xx (it may have followed the work, or come from a proxy in front of
    /// it), becomes [`ApiError::OutcomeUnknown`]; only 429 (turned away before any work) is
    /// retried.
    Write,
}

/// Everything the client needs; built from `Config`.
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: url::Url,
    pub token: SecretString,
    pub rate_limit_calls: u32,
    pub rate_limit_period: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_retries: u32,
    pub page_size: u32,
    /// Smallest backoff delay; tests shorten it.
    pub min_backoff: Duration,
    /// Bounds on every listing and answer, so a buggy or hostile server cannot hold a run.
    pub limits: Limits,
}

/// How far the client follows a server before calling it broken. Generous on purpose: each
/// default is far beyond anything a healthy DevRev answer needs, and each can be raised
/// (docs/limits.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pages one listing may take (`--max-pages`, `DEVREV_MAX_PAGES`).
    pub max_pages: u32,
    /// The whole of one request, from sending to the last byte of the answer
    /// (`--request-deadline`, `DEVREV_REQUEST_DEADLINE`). The read timeout alone never fires
    /// on a server that sends one byte every few seconds.
    pub request_deadline: Duration,
    /// Largest API answer read into memory (`DEVREV_MAX_ANSWER_BYTES`).
    pub max_answer_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pages: 10_000,
            request_deadline: Duration::from_secs(300),
            max_answer_bytes: 64 << 20,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("token", &"[redacted]")
            .field("rate_limit_calls", &self.rate_limit_calls)
            .field("rate_limit_period", &self.rate_limit_period)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_retries", &self.max_retries)
            .field("page_size", &self.page_size)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Per-endpoint counters, printed in reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EndpointStats {
    /// HTTP requests sent, retries included.
    pub calls: u64,
    /// Of those, repeats after a failure.
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Time spent waiting for the local pacer or a server-announced reset, in milliseconds.
    pub rate_wait_ms: u64,
    /// Calls that ended in an error after retries.
    pub errors: u64,
    /// `404`/`3xx` answers to a look at a contact this tool merged away: the answer the look
    /// hoped for, so not counted in `errors`.
    pub expected_gone: u64,
}

/// The `X-Ratelimit-*` headers of the most recent answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RateHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<u64>,
}

pub struct DevRevClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    limiter: DefaultDirectRateLimiter,
    /// Who waits for the pacer next: the most urgent call first (`line.rs`).
    line: super::line::Line,
    /// When the server said the budget is spent (remaining 0), no call goes out before this.
    blocked_until: Mutex<Option<Instant>>,
    stats: Mutex<BTreeMap<String, EndpointStats>>,
    last_rate: Mutex<Option<RateHeaders>>,
    started: Instant,
}

impl std::fmt::Debug for DevRevClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevRevClient")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// A place in the pacer's line already waited for ([`DevRevClient::turn`]): the request
/// sent with it goes out without waiting again. Not `Clone`: one turn, one request.
#[derive(Debug)]
#[must_use = "a turn not used is a call's share of the rate budget wasted"]
pub struct Turn(());

/// Builds the pacer: at most `calls` requests in any window of `period`.
///
/// governor's burst lets `burst` calls through at once *on top of* the steady rate, which
/// nearly doubles a naive limit (DESIGN §10). With burst 1 and one cell every
/// `period / calls` (plus a 2% margin against timer and network jitter), no window of
/// `period` can ever hold more than `calls` requests.
pub fn pacer_quota(calls: u32, period: Duration) -> Quota {
    let calls = calls.max(1);
    let per_call = period.mul_f64(1.02) / calls;
    Quota::with_period(per_call.max(Duration::from_micros(1)))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(1).expect("1 is non-zero"))
}

impl DevRevClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ApiError> {
        let mut builder = reqwest::Client::builder();
        // A proxy taken from HTTP(S)_PROXY/ALL_PROXY would see the token of a local fake (plain
        // http): loopback never goes through a proxy.
        if is_loopback(&cfg.base_url) {
            builder = builder.no_proxy();
        }
        let http = builder
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("devrev-merge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unreachable {
                endpoint: "client setup".into(),
                attempts: 0,
                reason: e.to_string(),
            })?;
        let limiter = RateLimiter::direct(pacer_quota(cfg.rate_limit_calls, cfg.rate_limit_period));
        Ok(Self {
            http,
            cfg,
            limiter,
            line: super::line::Line::default(),
            blocked_until: Mutex::new(None),
            stats: Mutex::new(BTreeMap::new()),
            last_rate: Mutex::new(None),
            started: Instant::now(),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// `text` without this client's token (see [`super::error::scrub`]), for server text that
    /// becomes an error outside the client (a decode of a listed item).
    pub fn scrub(&self, text: &str) -> String {
        super::error::scrub(text, self.cfg.token.expose_secret())
    }

    /// `e` with this client's token taken out of its server text: for an [`ApiError`] built
    /// outside the client from a server value (every error the client returns already is).
    pub fn scrub_error(&self, e: ApiError) -> ApiError {
        match e {
            ApiError::Decode { endpoint, reason } => ApiError::Decode {
                endpoint,
                reason: self.scrub(&reason),
            },
            other => other,
        }
    }

    /// One item of a list answer (kept as DevRev sent it) decoded as `T`; serde's reason
    /// quotes the server's values, so it is scrubbed like every server text.
    pub fn decode<T: DeserializeOwned>(&self, endpoint: &str, v: Value) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| ApiError::Decode {
            endpoint: endpoint.into(),
            reason: self.scrub(&e.to_string()),
        })
    }

    /// Counters per endpoint so far.
    pub fn stats(&self) -> BTreeMap<String, EndpointStats> {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Sum of all endpoints' counters.
    pub fn totals(&self) -> EndpointStats {
        let mut t = EndpointStats::default();
        for s in self.stats.lock().expect("stats lock").values() {
            t.calls += s.calls;
            t.retries += s.retries;
            t.rate_limited += s.rate_limited;
            t.rate_wait_ms += s.rate_wait_ms;
            t.errors += s.errors;
            t.expected_gone += s.expected_gone;
        }
        t
    }

    /// Time since the client was built (for achieved-rate figures).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn last_rate_headers(&self) -> Option<RateHeaders> {
        self.last_rate.lock().expect("rate lock").clone()
    }

    fn bump(&self, endpoint: &str, f: impl FnOnce(&mut EndpointStats)) {
        let mut stats = self.stats.lock().expect("stats lock");
        f(stats.entry(endpoint.to_string()).or_default());
    }

    /// Waits for the local pacer and any server-announced reset. Every HTTP attempt passes
    /// through here, so retries spend the same budget as first tries.
    ///
    /// A block can be announced by another caller's answer while this one waits in the
    /// pacer, so the block is checked again after the pacer and the wait repeats (taking a
    /// fresh pacer cell) until no block lies ahead. A wasted cell only slows the run; sending
    /// late on an old cell could bunch requests and break the "N in any window" promise.
    async fn pace(&self, endpoint: &str) {
        let t0 = Instant::now();
        // Only the first in line waits for the pacer; the others wait for their place.
        let _place = self.line.first(super::line::urgency(endpoint)).await;
        loop {
            if let Some(until) = self.blocked_until() {
                tokio::time::sleep_until(until.into()).await;
            }
            self.limiter.until_ready().await;
            if self.blocked_until().is_none() {
                break;
            }
        }
        let waited = t0.elapsed().as_millis() as u64;
        self.bump(endpoint, |s| s.rate_wait_ms += waited);
    }

    /// The instant before which no call may go out, if it is still ahead.
    fn blocked_until(&self) -> Option<Instant> {
        let until = *self.blocked_until.lock().expect("block lock");
        until.filter(|u| *u > Instant::now())
    }

    /// Holds every caller back until `until`. Never shortens a block already announced.
    fn block_until(&self, until: Instant) {
        let mut b = self.blocked_until.lock().expect("block lock");
        if b.is_none_or(|cur| cur < until) {
            *b = Some(until);
        }
    }

    /// The longest wait the server may ask for (a reset or a `Retry-After`) that this client
    /// honours: one rate window, and at least DevRev's own 5-minute window. A longer ask is
    /// clock skew or a misconfigured proxy; waiting it out silently could hang a run for hours.
    fn max_server_wait(&self) -> Duration {
        self.cfg.rate_limit_period.max(Duration::from_secs(300))
    }

    fn note_rate_headers(&self, headers: &HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let rh = RateHeaders {
            limit: num("x-ratelimit-limit"),
            remaining: num("x-ratelimit-remaining"),
            reset: num("x-ratelimit-reset"),
        };
        if rh.remaining == Some(0)
            && let Some(reset) = rh.reset
        {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            // Never trust a far-future reset blindly (clock skew): cap at one window.
            let wait = Duration::from_secs(reset.saturating_sub(now)).min(self.max_server_wait());
            tracing::info!(
                wait_s = wait.as_secs(),
                "DevRev reports the rate budget spent; waiting for its reset"
            );
            self.block_until(Instant::now() + wait);
        }
        if rh.limit.is_some() || rh.remaining.is_some() || rh.reset.is_some() {
            *self.last_rate.lock().expect("rate lock") = Some(rh);
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.cfg.min_backoff)
            .with_max_delay(Duration::from_secs(60))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.cfg.max_retries as usize)
            .build()
    }

    /// POSTs `body` to `/<endpoint>` and decodes the answer, with pacing and retries.
    pub async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &Value,
        kind: CallKind,
    ) -> Result<T, ApiError> {
        self.call_expecting(endpoint, body, kind, false, None).await
    }

    /// Waits for a place in the pacer's line, as a call would, without sending anything yet:
    /// the request sent with the [`Turn`] goes out at once. A read that gathers what several
    /// tasks need (one list for many contacts) decides what to ask only when its turn comes,
    /// so that it asks for everything needed by then.
    pub async fn turn(&self, endpoint: &str) -> Turn {
        self.pace(endpoint).await;
        Turn(())
    }

    /// [`Self::call`], where a `404` or a redirect is an answer the caller hopes for (a look
    /// at a contact after its merge) and so is counted in `expected_gone`, not in `errors`.
    async fn call_expecting<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &Value,
        kind: CallKind,
        gone_expected: bool,
        mut turn: Option<Turn>,
    ) -> Result<T, ApiError> {
        let url = self
            .cfg
            .base_url
            .join(endpoint)
            .map_err(|e| ApiError::Decode {
                endpoint: endpoint.into(),
                reason: e.to_string(),
            })?;
        let mut backoff = self.backoff();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            // A retry waits for the pacer again, as every attempt does.
            let paced = turn.take().is_some();
            let failure = match self
                .attempt::<T>(endpoint, &url, body, attempts, paced)
                .await
            {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            let (failure, err) =
                failure.into_error(endpoint, attempts, self.cfg.token.expose_secret());
            let decision = retry::decide(
                failure,
                kind,
                attempts,
                self.cfg.max_retries,
                self.max_server_wait(),
            );
            self.note_server_wait(endpoint, failure, decision);
            let delay = match decision {
                Decision::Retry { server_wait } => backoff
                    .next()
                    .map(|d| server_wait.map_or(d, |w| w.max(d.min(w + Duration::from_secs(1))))),
                Decision::Fail | Decision::WaitTooLong(_) => None,
                Decision::OutcomeUnknown => {
                    self.bump(endpoint, |s| s.errors += 1);
                    return Err(ApiError::OutcomeUnknown {
                        endpoint: endpoint.into(),
                        reason: outcome_unknown_reason(&err),
                    });
                }
            };
            let Some(delay) = delay else {
                let gone = gone_expected
                    && err
                        .status()
                        .is_some_and(|s| s == 404 || (300..400).contains(&s));
                self.bump(endpoint, |s| {
                    if gone {
                        s.expected_gone += 1;
                    } else {
                        s.errors += 1;
                    }
                });
                return Err(err);
            };
            // Say what went wrong this time, not the final "after N attempts" wording.
            let cause = match &err {
                ApiError::Unreachable { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            tracing::warn!(endpoint, attempt = attempts, wait_ms = delay.as_millis() as u64, error = %cause, "retrying DevRev call");
            tokio::time::sleep(delay).await;
        }
    }

    /// One paced, counted request and its decoded answer.
    async fn attempt<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: &url::Url,
        body: &Value,
        attempts: u32,
        paced: bool,
    ) -> Result<T, Attempt> {
        if !paced {
            self.pace(endpoint).await;
        }
        self.bump(endpoint, |s| {
            s.calls += 1;
            if attempts > 1 {
                s.retries += 1;
            }
        });
        let started = Instant::now();
        let deadline = self.cfg.limits.request_deadline;
        let exchange = async {
            let sent = self
                .http
                .post(url.clone())
                .header(
                    AUTHORIZATION,
                    self.auth_header().map_err(|_| {
                        Attempt::Decode(
                            "the API token holds characters not allowed in a header".into(),
                        )
                    })?,
                )
                .header(CONTENT_TYPE, "application/json");
            // A request that sets a beta-only field says so (devrev-api.md §1: beta fields
            // need `X-Devrev-Scope: beta`); every other request stays on the public API.
            let sent = if needs_beta(endpoint, body) {
                sent.header("x-devrev-scope", "beta")
            } else {
                sent
            };
            let sent = sent.json(body).send().await;
            match sent {
                Ok(resp) => self.read_response::<T>(endpoint, resp).await,
                Err(e) => Err(Attempt::Transport(e)),
            }
        };
        let outcome = match tokio::time::timeout(deadline, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Attempt::Cut(format!(
                "no complete answer within the {} s request deadline (raise --request-deadline \
                 if DevRev is this slow)",
                deadline.as_secs_f64()
            ))),
        };
        tracing::debug!(
            endpoint,
            attempt = attempts,
            ms = started.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "DevRev call"
        );
        outcome
    }

    /// `Bearer <token>`, marked sensitive so no debug output or proxy log of reqwest and
    /// hyper ever prints it.
    fn auth_header(&self) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.cfg.token.expose_secret()))?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// A 429 counts, and its wait holds back every caller: the budget is per token.
    fn note_server_wait(&self, endpoint: &str, failure: Failure, decision: Decision) {
        let Some(asked) = failure.server_wait() else {
            return;
        };
        self.bump(endpoint, |s| s.rate_limited += 1);
        if let Decision::WaitTooLong(asked) = decision {
            tracing::warn!(
                endpoint,
                retry_after_s = asked.as_secs(),
                "DevRev asks to wait longer than this tool will; giving up"
            );
        } else {
            self.block_until(Instant::now() + asked);
        }
    }

    async fn read_response<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        resp: reqwest::Response,
    ) -> Result<T, Attempt> {
        let status = resp.status().as_u16();
        self.note_rate_headers(resp.headers());
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // A 301's `Location` names where the object went (a merged contact's primary).
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect::<String>());
        let bytes = read_capped(resp, self.cfg.limits.max_answer_bytes, endpoint).await?;
        if (200..300).contains(&status) {
            let raw: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
            serde_json::from_slice(raw).map_err(|e| {
                Attempt::Decode(format!("{e} (endpoint {endpoint}, {} bytes)", bytes.len()))
            })
        } else {
            // A body that is not JSON is kept as its first 200 characters, scrubbed first:
            // a cut could otherwise leave a prefix of an echoed token behind.
            let token = self.cfg.token.expose_secret();
            let mut body: ErrorBody =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                    message: Some(
                        super::error::scrub(&String::from_utf8_lossy(&bytes), token)
                            .chars()
                            .take(200)
                            .collect(),
                    ),
                    ..Default::default()
                });
            body.location_raw = super::error::Unshown(location.clone());
            body.location = location;
            Err(Attempt::Status {
                status,
                body,
                retry_after,
            })
        }
    }

    /// Follows `next_cursor` to the end and returns every item under `key`.
    ///
    /// A listing must end: a cursor seen before in this listing (a server that hands out the
    /// same cursor forever) or more than `limits.max_pages` pages is an error naming the
    /// endpoint. So is an answer without `key`: an empty backup must never look complete.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: Value,
        key: &str,
    ) -> Result<Vec<T>, ApiError> {
        self.list_all_in(None, endpoint, body, key).await
    }

    /// [`Self::list_all`], its first page sent with `turn` (the later pages wait for the
    /// pacer as usual).
    pub async fn list_all_in<T: DeserializeOwned>(
        &self,
        mut turn: Option<Turn>,
        endpoint: &str,
        mut body: Value,
        key: &str,
    ) -> Result<Vec<T>, ApiError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut empty_run = 0;
        body["limit"] = json!(self.cfg.page_size);
        for page_no in 1..=self.cfg.limits.max_pages {
            let (items, cursor) = self
                .list_page::<T>(turn.take(), endpoint, &body, key, page_no)
                .await?;
            empty_run = if items.is_empty() { empty_run + 1 } else { 0 };
            out.extend(items);
            let Some(cursor) = cursor else {
                return Ok(out);
            };
            if empty_run >= EMPTY_PAGES_MAX {
                return Err(self.broken(
                    endpoint,
                    format!(
                        "{empty_run} empty pages in a row, each with a new cursor; the listing \
                         would never end (a server bug)"
                    ),
                ));
            }
            if !seen.insert(cursor.clone()) {
                return Err(self.broken(
                    endpoint,
                    format!(
                        "page {page_no} repeats a cursor handed out before; the listing would \
                         never end (a server bug)"
                    ),
                ));
            }
            body["cursor"] = json!(cursor);
        }
        Err(self.broken(
            endpoint,
            format!(
                "more than {} pages; stopped (raise --max-pages if this listing is really that long)",
                self.cfg.limits.max_pages
            ),
        ))
    }

    /// Page `page_no` of a listing: its items under `key` and its `next_cursor`, if any. An
    /// answer without `key` is an error: an empty backup must never look complete.
    async fn list_page<T: DeserializeOwned>(
        &self,
        turn: Option<Turn>,
        endpoint: &str,
        body: &Value,
        key: &str,
        page_no: u32,
    ) -> Result<(Vec<T>, Option<String>), ApiError> {
        let mut page: Value = self
            .call_expecting(endpoint, body, CallKind::Read, false, turn)
            .await?;
        let items = page.get_mut(key).map(Value::take).ok_or_else(|| {
            self.broken(
                endpoint,
                format!("page {page_no} has no `{key}` list; refusing to treat it as empty"),
            )
        })?;
        let items: Vec<T> = serde_json::from_value(items)
            .map_err(|e| self.broken(endpoint, format!("`{key}`: {e}")))?;
        let cursor = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        Ok((items, cursor))
    }

    /// A listing answer the client cannot use. serde's reasons quote the server's values:
    /// scrubbed like every server text.
    fn broken(&self, endpoint: &str, reason: String) -> ApiError {
        ApiError::Decode {
            endpoint: endpoint.into(),
            reason: self.scrub(&reason),
        }
    }

    // ---- typed calls -------------------------------------------------------------------

    pub async fn auth_tokens_info(&self) -> Result<TokenInfo, ApiError> {
        self.call("auth-tokens.info", &json!({}), CallKind::Read)
            .await
    }

    pub async fn dev_users_self(&self) -> Result<DevUser, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            dev_user: DevUser,
        }
        let r: R = self
            .call("dev-users.self", &json!({}), CallKind::Read)
            .await?;
        Ok(r.dev_user)
    }

    pub async fn rev_users_get(&self, id: &str) -> Result<RevUser, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            rev_user: RevUser,
        }
        let r: R = self
            .call("rev-users.get", &json!({ "id": id }), CallKind::Read)
            .await?;
        self.the_one_asked(id, r.rev_user)
    }

    /// `u` when it is the contact asked for (by id or display id), else
    /// [`ApiError::OtherContact`]: an answer about someone else is never taken for it.
    fn the_one_asked(&self, asked: &str, u: RevUser) -> Result<RevUser, ApiError> {
        if u.id == asked || u.display_id.as_deref() == Some(asked) {
            return Ok(u);
        }
        self.bump("rev-users.get", |s| s.errors += 1);
        Err(ApiError::OtherContact {
            endpoint: "rev-users.get".into(),
            asked: asked.to_string(),
            answered: u.id,
        })
    }

    /// `rev-users.get` of a contact this tool merged away (or is about to see merged): its
    /// `404` or redirect is the expected answer, not an API error in the run's figures.
    pub async fn rev_users_look(&self, id: &str) -> Result<RevUser, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            rev_user: RevUser,
        }
        let r: R = self
            .call_expecting(
                "rev-users.get",
                &json!({ "id": id }),
                CallKind::Read,
                true,
                None,
            )
            .await?;
        self.the_one_asked(id, r.rev_user)
    }

    /// The first page of a `rev-users.list`, and whether the server says more follow
    /// (a `next_cursor`). For a look whose *absences* count: only an answer known to be
    /// whole may show that a contact is missing, and one page is all a look needs (it asks
    /// for at most a window of refs), so a server that pages oddly costs one call, never a
    /// walk through pages.
    pub async fn rev_users_list_page_one(
        &self,
        filters: Value,
    ) -> Result<(Vec<RevUser>, bool), ApiError> {
        let mut body = filters;
        body["limit"] = json!(self.cfg.page_size);
        let (users, cursor) = self
            .list_page(None, "rev-users.list", &body, "rev_users", 1)
            .await?;
        Ok((users, cursor.is_some()))
    }

    pub async fn rev_users_list(&self, filters: Value) -> Result<Vec<RevUser>, ApiError> {
        self.list_all("rev-users.list", filters, "rev_users").await
    }

    /// [`Self::rev_users_list`], sent with `turn`.
    pub async fn rev_users_list_in(
        &self,
        turn: Option<Turn>,
        filters: Value,
    ) -> Result<Vec<RevUser>, ApiError> {
        self.list_all_in(turn, "rev-users.list", filters, "rev_users")
            .await
    }

    /// Sets fields of a contact (`external_ref`, `display_name`, ...). Setting a value is
    /// idempotent, so it is retried like a read.
    pub async fn rev_users_update(&self, id: &str, fields: Value) -> Result<RevUser, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            rev_user: RevUser,
        }
        let mut body = fields;
        body["id"] = json!(id);
        let r: R = self
            .call("rev-users.update", &body, CallKind::IdempotentWrite)
            .await?;
        Ok(r.rev_user)
    }

    /// Creates a contact (restores). Never repeated blindly: a second create with the same
    /// `external_ref` would be refused, and one without it would make a duplicate, so a lost
    /// answer is `OutcomeUnknown` and the caller looks the contact up before trying again.
    pub async fn rev_users_create(&self, fields: &Value) -> Result<RevUser, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            rev_user: RevUser,
        }
        let r: R = self
            .call("rev-users.create", fields, CallKind::Write)
            .await?;
        Ok(r.rev_user)
    }

    /// Asks DevRev to merge `secondary` into `primary`. Fire-and-forget on DevRev's side,
    /// never repeated blindly here: a lost answer is `OutcomeUnknown`.
    pub async fn rev_users_merge(&self, primary: &str, secondary: &str) -> Result<(), ApiError> {
        let _: Value = self
            .call(
                "rev-users.merge",
                &json!({ "primary_user": primary, "secondary_user": secondary }),
                CallKind::Write,
            )
            .await?;
        Ok(())
    }

    /// Every ticket whose `reported_by` names any of `user_ids`.
    pub async fn tickets_reported_by(&self, user_ids: &[&str]) -> Result<Vec<Work>, ApiError> {
        self.tickets_reported_by_as(user_ids).await
    }

    /// [`Self::tickets_reported_by`], decoded as `T`: backups take `serde_json::Value` to
    /// keep every ticket exactly as DevRev sent it. Filters are OR within a field, so a
    /// ticket naming several of `user_ids` comes back once.
    pub async fn tickets_reported_by_as<T: DeserializeOwned>(
        &self,
        user_ids: &[&str],
    ) -> Result<Vec<T>, ApiError> {
        self.tickets_reported_by_in(None, user_ids).await
    }

    /// [`Self::tickets_reported_by_as`], sent with `turn`.
    pub async fn tickets_reported_by_in<T: DeserializeOwned>(
        &self,
        turn: Option<Turn>,
        user_ids: &[&str],
    ) -> Result<Vec<T>, ApiError> {
        self.list_all_in(
            turn,
            "works.list",
            json!({ "type": ["ticket"], "reported_by": user_ids }),
            "works",
        )
        .await
    }

    pub async fn works_list_page(&self, body: Value) -> Result<Value, ApiError> {
        self.call("works.list", &body, CallKind::Read).await
    }

    pub async fn works_get(&self, id: &str) -> Result<Work, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            work: Work,
        }
        let r: R = self
            .call("works.get", &json!({ "id": id }), CallKind::Read)
            .await?;
        Ok(r.work)
    }

    /// Replaces a ticket's `reported_by` (DevRev only supports `set`).
    pub async fn works_set_reported_by(
        &self,
        id: &str,
        user_ids: &[String],
    ) -> Result<Work, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            work: Work,
        }
        let r: R = self
            .call(
                "works.update",
                &json!({ "id": id, "type": "ticket", "reported_by": { "set": user_ids } }),
                CallKind::IdempotentWrite,
            )
            .await?;
        Ok(r.work)
    }

    /// The whole timeline of an object (ticket or conversation), all pages.
    pub async fn timeline_entries(&self, object: &str) -> Result<Vec<TimelineEntry>, ApiError> {
        self.timeline_entries_as(object).await
    }

    /// [`Self::timeline_entries`], decoded as `T` (`Value` for backups).
    pub async fn timeline_entries_as<T: DeserializeOwned>(
        &self,
        object: &str,
    ) -> Result<Vec<T>, ApiError> {
        self.list_all(
            "timeline-entries.list",
            json!({ "object": object }),
            "timeline_entries",
        )
        .await
    }

    /// Every conversation in which any of `user_ids` is a member.
    pub async fn conversations_with_members(
        &self,
        user_ids: &[&str],
    ) -> Result<Vec<Conversation>, ApiError> {
        self.conversations_with_members_in(None, user_ids).await
    }

    /// [`Self::conversations_with_members`], decoded as `T` (`Value` for backups), sent with
    /// `turn` (`None`: it waits for the pacer like any call).
    pub async fn conversations_with_members_in<T: DeserializeOwned>(
        &self,
        turn: Option<Turn>,
        user_ids: &[&str],
    ) -> Result<Vec<T>, ApiError> {
        self.list_all_in(
            turn,
            "conversations.list",
            json!({ "members": user_ids }),
            "conversations",
        )
        .await
    }

    pub async fn conversations_list_page(&self, body: Value) -> Result<Value, ApiError> {
        self.call("conversations.list", &body, CallKind::Read).await
    }

    /// Replaces a conversation's `members` (set-only, like `reported_by`).
    pub async fn conversations_set_members(
        &self,
        id: &str,
        user_ids: &[String],
    ) -> Result<Conversation, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            conversation: Conversation,
        }
        let r: R = self
            .call(
                "conversations.update",
                &json!({ "id": id, "members": { "set": user_ids } }),
                CallKind::IdempotentWrite,
            )
            .await?;
        Ok(r.conversation)
    }

    pub async fn artifacts_get(&self, id: &str) -> Result<Artifact, ApiError> {
        #[derive(serde::Deserialize)]
        struct R {
            artifact: Artifact,
        }
        let r: R = self
            .call("artifacts.get", &json!({ "id": id }), CallKind::Read)
            .await?;
        Ok(r.artifact)
    }

    pub async fn artifacts_locate(&self, id: &str) -> Result<Located, ApiError> {
        self.call("artifacts.locate", &json!({ "id": id }), CallKind::Read)
            .await
    }

    /// Streams a located URL to `dest`, hashing as it goes. Sends **no** DevRev token: the
    /// URL is pre-signed and may live on another host. Returns (bytes, sha256 hex).
    ///
    /// With a `declared` size, at most `declared + 1` bytes are written: one byte more proves
    /// the server sends more than DevRev said, and nothing past it can fill the disk.
    ///
    /// Downloads are not DevRev API calls, so they do not spend the API rate budget. A 403
    /// (expired URL) comes back as `ApiError::Status` so the caller can locate again; a failed
    /// local write as `ApiError::LocalWrite`, which no retry can fix.
    pub async fn download_to(
        &self,
        url: &str,
        dest: &std::path::Path,
        declared: Option<u64>,
    ) -> Result<(u64, String), ApiError> {
        let what = dest.display().to_string();
        let derr = |reason: String| ApiError::Download {
            what: what.clone(),
            reason,
        };
        let werr = |e: std::io::Error| ApiError::LocalWrite {
            what: what.clone(),
            reason: e.to_string(),
        };
        // DevRev's `url` is only typed a string: one that is no absolute http(s) URL fails
        // here, naming the field (never the value: a URL may carry a signature), not as
        // reqwest's bare "builder error" after retries.
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => {
                return Err(derr(format!(
                    "artifacts.locate answered a `url` with scheme {:?}, not http(s)",
                    u.scheme()
                )));
            }
            Err(e) => {
                return Err(derr(format!(
                    "artifacts.locate answered a `url` that is not a URL ({e})"
                )));
            }
        }
        let mut backoff = self.backoff();
        loop {
            let resp = match self.http.get(url).send().await {
                Ok(r) => r,
                Err(e) => match backoff.next() {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    None => return Err(derr(e.without_url().to_string())),
                },
            };
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                // A 429 on a download is a storage throttle: wait and retry like a 5xx.
                if matches!(status, 429 | 500 | 502 | 503 | 504)
                    && let Some(d) = backoff.next()
                {
                    tokio::time::sleep(d).await;
                    continue;
                }
                return Err(ApiError::Status {
                    endpoint: "artifact download".into(),
                    status,
                    body: Box::default(),
                });
            }
            // Attachments are customer data: owner-only, whatever the umask.
            let file = crate::platform::open_private(dest, crate::platform::Open::Truncate)
                .map(tokio::fs::File::from_std)
                .map_err(werr)?;
            // A trickling server must not hold a download forever either: the request
            // deadline, plus one second per MiB declared (a floor of 1 MiB/s for big files).
            let deadline =
                self.cfg.limits.request_deadline + Duration::from_secs(declared.unwrap_or(0) >> 20);
            let cap = declared.map(|d| d.saturating_add(1));
            let streamed = tokio::time::timeout(deadline, stream_capped(resp, file, cap))
                .await
                .unwrap_or_else(|_| {
                    Err(StreamErr::Net(format!(
                        "no complete download within {} s",
                        deadline.as_secs_f64()
                    )))
                });
            match streamed {
                Ok(Streamed::Done(n, sha)) => return Ok((n, sha)),
                Ok(Streamed::Over(n)) => {
                    return Err(derr(format!(
                        "the server sent more than the declared {} bytes; stopped at {n}",
                        declared.unwrap_or_default()
                    )));
                }
                Err(StreamErr::Write(e)) => return Err(werr(e)),
                Err(StreamErr::Net(reason)) => match backoff.next() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err(derr(reason)),
                },
            }
        }
    }
}

/// How a capped download ended.
enum Streamed {
    /// Complete: bytes and sha256 hex.
    Done(u64, String),
    /// The cap was reached: this many bytes were written, and the server had more.
    Over(u64),
}

enum StreamErr {
    /// The connection failed mid-body (worth another try).
    Net(String),
    /// Writing the local file failed (a full disk: no retry helps).
    Write(std::io::Error),
}

/// Copies `resp`'s body into `file`, hashing it, writing at most `cap` bytes.
async fn stream_capped(
    resp: reqwest::Response,
    mut file: tokio::fs::File,
    cap: Option<u64>,
) -> Result<Streamed, StreamErr> {
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let c = chunk.map_err(|e| StreamErr::Net(e.without_url().to_string()))?;
        let room = cap.map_or(u64::MAX, |cap| cap - n);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(c.len());
        hasher.update(&c[..take]);
        file.write_all(&c[..take]).await.map_err(StreamErr::Write)?;
        n += take as u64;
        if cap == Some(n) {
            return Ok(Streamed::Over(n));
        }
    }
    file.flush().await.map_err(StreamErr::Write)?;
    file.sync_all().await.map_err(StreamErr::Write)?;
    Ok(Streamed::Done(n, crate::fsutil::sha256_hex(hasher)))
}

enum Attempt {
    Status {
        status: u16,
        body: ErrorBody,
        retry_after: Option<u64>,
    },
    Transport(reqwest::Error),
    Decode(String),
    /// The answer was cut off by this client: over the request deadline or the size cap.
    /// Retried like a lost answer (reads again, writes become an unknown outcome).
    Cut(String),
}

impl Attempt {
    /// The failure as the retry decision sees it, and the error to report if it is final.
    ///
    /// The one place server text becomes an [`ApiError`], so the token (`secret`) is scrubbed
    /// here from all of it: the error body's fields, decode reasons (serde quotes the value it
    /// choked on) and transport messages. Every consumer (logs, console, savepoint, reports,
    /// the restore journal) then only ever sees scrubbed text.
    fn into_error(self, endpoint: &str, attempts: u32, secret: &str) -> (Failure, ApiError) {
        let endpoint = endpoint.to_string();
        let clean = |s: String| super::error::scrub(&s, secret);
        match self {
            Attempt::Status {
                status,
                body,
                retry_after,
            } => (
                Failure::Status {
                    status,
                    retry_after: retry_after.or(body.retry_after),
                },
                ApiError::Status {
                    endpoint,
                    status,
                    body: Box::new(body.scrubbed(secret)),
                },
            ),
            Attempt::Decode(reason) => (
                Failure::Decode,
                ApiError::Decode {
                    endpoint,
                    reason: clean(reason),
                },
            ),
            Attempt::Cut(reason) => (
                Failure::Transport { connect: false },
                ApiError::Unreachable {
                    endpoint,
                    attempts,
                    reason: clean(reason),
                },
            ),
            Attempt::Transport(e) => (
                Failure::Transport {
                    connect: e.is_connect(),
                },
                ApiError::Unreachable {
                    endpoint,
                    attempts,
                    reason: clean(redact(&e.to_string())),
                },
            ),
        }
    }
}

/// The answer's body, refused as soon as it is known to exceed `cap` bytes (by its declared
/// length, or while streaming), so a server cannot make the client hold more than `cap`.
async fn read_capped(
    resp: reqwest::Response,
    cap: u64,
    endpoint: &str,
) -> Result<Vec<u8>, Attempt> {
    let too_big = || {
        Attempt::Cut(format!(
            "the answer of {endpoint} is larger than {cap} bytes; stopped reading \
             (DEVREV_MAX_ANSWER_BYTES raises the cap)"
        ))
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Attempt::Transport)?;
        if (out.len() + chunk.len()) as u64 > cap {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whether `url` names this machine: such a server is reached directly, never via a proxy.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Why a write's outcome is unknown, in the words of the failure behind it.
/// Which requests go with `X-Devrev-Scope: beta`: every one about contacts but the merge.
///
/// Only DevRev's beta schema has the rev-user fields the tool decides on and must never lose
/// (`is_verified`, `custom_fields`, `tags`; devrev-api.md §1), so every read of a contact asks
/// for them in that scope, and every write whose request schema has them only there
/// (`rev-users.create` with `custom_fields`/`tags`, `rev-users.update` with `tags`) is sent in
/// it. The beta request schemas of these endpoints hold every public field, so nothing the
/// public API takes is lost by the scope. `rev-users.merge` takes no beta field.
fn needs_beta(endpoint: &str, _body: &Value) -> bool {
    matches!(
        endpoint,
        "rev-users.get" | "rev-users.list" | "rev-users.create" | "rev-users.update"
    )
}

fn outcome_unknown_reason(err: &ApiError) -> String {
    match err {
        ApiError::Status { status, body, .. } => {
            let reference = body.reference_id.as_deref().unwrap_or("none");
            format!("HTTP {status} (reference id {reference})")
        }
        ApiError::Decode { reason, .. } => format!("unreadable answer: {reason}"),
        ApiError::Unreachable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3); DevRev sends
/// seconds, a proxy in front of it may send a date.
fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s);
    }
    // The spec types it a `number`: a fraction is waited up to the next whole second, a
    // negative one is "now".
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return Some(f.max(0.0).ceil() as u64);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let left = at.timestamp() - chrono::Utc::now().timestamp();
    Some(left.max(0) as u64)
}

/// reqwest errors include the URL; pre-signed download URLs carry credentials in their
/// query string, so strip queries from anything we print.
fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_query = false;
    for ch in msg.chars() {
        match ch {
            '?' => {
                in_query = true;
                out.push_str("?[redacted]");
            }
            ')' | ' ' if in_query => {
                in_query = false;
                out.push(ch);
            }
            _ if in_query => {}
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_error_scrubs_the_token_from_all_server_text() {
        let t = "eyJ.tok-123456";
        let body = ErrorBody {
            message: Some(format!("gateway saw Authorization: Bearer {t}")),
            detail: Some(format!("token {t}")),
            location: Some(format!("https://h/?t={t}")),
            location_raw: crate::devrev::Unshown(Some(format!("https://h/?t={t}"))),
            ..Default::default()
        };
        let status = Attempt::Status {
            status: 400,
            body,
            retry_after: None,
        };
        for attempt in [
            status,
            Attempt::Decode(format!("invalid type: string \"{t}\", expected u64")),
            Attempt::Cut(format!("cut at {t}")),
        ] {
            let (_, e) = attempt.into_error("works.list", 1, t);
            if let Some(raw) = e.location_as_sent() {
                // The id compared (is it the primary?) is kept exactly as sent.
                assert!(raw.contains(t), "{raw}");
            }
            let shown = format!("{e} {e:?} {:?}", e.location());
            assert!(!shown.contains(t), "{shown}");
            assert!(shown.contains(crate::devrev::REDACTED), "{shown}");
        }
    }

    #[test]
    fn redact_strips_query_strings() {
        assert_eq!(
            redact("error sending request for url (http://h/x?sig=abc&t=1)"),
            "error sending request for url (http://h/x?[redacted])"
        );
    }

    fn client(calls: u32, period: Duration) -> DevRevClient {
        DevRevClient::new(ClientConfig {
            base_url: url::Url::parse("http://127.0.0.1:9/").unwrap(),
            token: SecretString::from("t"),
            rate_limit_calls: calls,
            rate_limit_period: period,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            max_retries: 0,
            page_size: 1,
            min_backoff: Duration::from_millis(1),
            limits: Limits::default(),
        })
        .unwrap()
    }

    #[test]
    fn the_authorization_header_is_sensitive_and_loopback_skips_proxies() {
        let c = client(1, Duration::from_secs(1));
        let Ok(h) = c.auth_header() else {
            panic!("a plain token makes a header")
        };
        assert!(h.is_sensitive());
        assert_eq!(format!("{h:?}"), "Sensitive");
        for (u, local) in [
            ("http://127.0.0.1:9/", true),
            ("http://[::1]:9/", true),
            ("http://LOCALHOST:9/", true),
            ("https://api.devrev.ai/", false),
        ] {
            assert_eq!(is_loopback(&url::Url::parse(u).unwrap()), local, "{u}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 30 "), Some(30));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(0));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let s = parse_retry_after(&later).unwrap();
        assert!((118..=120).contains(&s), "{s}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("1.2"),
            Some(2),
            "a number: up to the next second"
        );
        assert_eq!(parse_retry_after("-3"), Some(0), "negative: now");
    }

    #[test]
    fn a_block_is_never_shortened() {
        let c = client(10, Duration::from_secs(1));
        let far = Instant::now() + Duration::from_secs(60);
        c.block_until(far);
        c.block_until(Instant::now() + Duration::from_secs(1));
        assert_eq!(c.blocked_until(), Some(far));
    }

    /// A block announced while a caller already waits in the pacer still holds it back.
    #[tokio::test]
    async fn a_block_set_while_waiting_in_the_pacer_is_honoured() {
        let c = std::sync::Arc::new(client(1, Duration::from_millis(300)));
        c.pace("x").await; // takes the only cell: the next caller waits ~300 ms
        let t0 = Instant::now();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.pace("x").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.block_until(t0 + Duration::from_millis(700));
        waiter.await.unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(700),
            "went out after {:?}, inside the announced block",
            t0.elapsed()
        );
    }

    #[test]
    fn pacer_never_lets_more_than_n_through_in_a_window() {
        use governor::clock::{Clock, FakeRelativeClock, Reference};
        let calls = 10;
        let period = Duration::from_secs(1);
        let clock = FakeRelativeClock::default();
        let lim = RateLimiter::direct_with_clock(pacer_quota(calls, period), clock.clone());
        // Greedy caller: take every cell as soon as it is available, over 5 windows.
        let mut times = Vec::new();
        let start = clock.now();
        while clock.now().duration_since(start) < Duration::from_secs(5).into() {
            if lim.check().is_ok() {
                times.push(Duration::from(clock.now().duration_since(start)));
            }
            clock.advance(Duration::from_millis(1));
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + period).count();
            assert!(
                in_window <= calls as usize,
                "{in_window} calls in one window"
            );
        }
        // And it does not leave much of the budget unused: >= 95% of 50 calls.
        assert!(times.len() >= 47, "only {} calls in 5 windows", times.len());
    }
}
