//! The fake's thin HTTP layer (axum): request log, trip wires, faults, auth, rate limit and
//! routing around the plain handler functions in `handlers.rs`.
//!
//! Dropped connections need a socket the handler can kill: a custom `Listener` wraps each
//! accepted stream with a kill flag that the handler reaches through `ConnectInfo`; once set,
//! every read and write on that socket fails, so hyper closes it without sending the answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::fake::{BodyQuirk, Bucket, DEFAULT_RATE_LIMIT, Fault, Inner, Shared, path_matches};
use crate::handlers::{self, Ctx, Download, Reply};
use crate::seed::Rng;

/// Per-connection handle: setting `kill` aborts the connection.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    kill: Arc<AtomicBool>,
}

impl Conn {
    fn kill(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

struct KillListener(TcpListener);

pub(crate) struct KillIo {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "fake: connection dropped on purpose",
    )
}

impl AsyncRead for KillIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Listener for KillListener {
    type Io = KillIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (
                        KillIo {
                            inner: stream,
                            kill: kill.clone(),
                        },
                        Conn { kill },
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()?;
        Ok(Conn {
            kill: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, KillListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Serves until `shutdown` fires. Also applies due merges in the background so `wait_for` and
/// direct state reads see them without a request arriving.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => panic!("fake DevRev listener: {e}"),
    };
    let ticker = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut inner = ticker.lock();
            let Inner { state, opts, .. } = &mut *inner;
            handlers::apply_due(state, opts, Instant::now(), false);
        }
    });
    let app = Router::new().fallback(entry).with_state(shared);
    let server = axum::serve(
        KillListener(listener),
        app.into_make_service_with_connect_info::<Conn>(),
    );
    tokio::select! {
        _ = server.into_future() => {}
        _ = shutdown => {}
    }
}

/// What goes back on the wire.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    body: Vec<u8>,
    /// Close the connection instead of answering (after the work is done).
    drop_conn: bool,
    /// How the body goes on the wire (all at once unless a `Hostile` switch says otherwise).
    shape: Shape,
}

/// How an answer's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Shape {
    #[default]
    Whole,
    /// The body, then this many filler bytes more (an oversized download).
    Extra(u64),
    /// `{"works":[` and filler, forever.
    Endless,
    /// One byte of the body every this long.
    Trickle(Duration),
}

/// Filler sent after or instead of a body: 64 KiB of spaces, valid inside a JSON value.
static FILLER: [u8; 64 << 10] = [b' '; 64 << 10];

/// The body as a stream shaped by `shape`. Endless and extra bytes come from one shared
/// chunk, so the fake itself stays small however much it sends.
fn shaped_body(body: Vec<u8>, shape: Shape) -> Body {
    use futures_util::stream;
    type Chunk = Result<Bytes, std::io::Error>;
    match shape {
        Shape::Whole => Body::from(body),
        Shape::Extra(extra) => {
            let head = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(body)) });
            let tail = stream::unfold(extra, |left| async move {
                (left > 0).then(|| {
                    let n = left.min(FILLER.len() as u64) as usize;
                    (Ok(Bytes::from_static(&FILLER[..n])), left - n as u64)
                })
            });
            Body::from_stream(futures_util::StreamExt::chain(head, tail))
        }
        Shape::Endless => {
            let head = stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"works\":["))
            });
            let tail = stream::repeat_with(|| -> Chunk { Ok(Bytes::from_static(&FILLER)) });
            Body::from_stream(futures_util::StreamExt::chain(head, tail))
        }
        Shape::Trickle(every) => Body::from_stream(stream::unfold(0usize, move |i| {
            let byte = body.get(i).copied();
            async move {
                let b = byte?;
                tokio::time::sleep(every).await;
                Some((Ok::<_, std::io::Error>(Bytes::from(vec![b])), i + 1))
            }
        })),
    }
}

impl Answer {
    fn json(status: u16, body: &Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: serde_json::to_vec(body).unwrap_or_default(),
            drop_conn: false,
            shape: Shape::Whole,
        }
    }
    fn dropped() -> Answer {
        Answer {
            drop_conn: true,
            ..Answer::json(0, &Value::Null)
        }
    }
}

async fn entry(
    AxState(shared): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The work runs in its own task so a client that hangs up mid-request (e.g. during a Slow
    // fault) cannot cancel a write half-way: like a real server, it completes regardless.
    let task = tokio::spawn(process(shared, method, uri, headers, body));
    let answer = match task.await {
        Ok(a) => a,
        // Every real 500 carries a `reference_id`; the fake's own bugs answer the same way.
        Err(_) => Answer::json(
            500,
            &json!({"type": "internal_error", "message": "fake panicked",
                    "reference_id": "fake-ref-panic"}),
        ),
    };
    if answer.drop_conn {
        conn.kill();
    }
    let mut resp = Response::new(shaped_body(answer.body, answer.shape));
    *resp.status_mut() = StatusCode::from_u16(answer.status.max(100)).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(answer.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    for (k, v) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

fn epoch_secs_after(d: Duration) -> u64 {
    let t = SystemTime::now() + d;
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Decides the fault for request `seq` (scripted ones first, then random).
fn pick_fault(inner: &mut Inner, path: &str) -> Option<Fault> {
    for f in &inner.opts.faults {
        let hit = |p: &str| f.path.as_deref().is_none_or(|pat| path_matches(pat, p));
        if hit(path) {
            let n = inner.log.iter().filter(|r| hit(&r.path)).count();
            if n == f.nth || f.nth == 0 {
                return Some(f.fault.clone());
            }
        }
    }
    let rf = inner.opts.random_faults.clone()?;
    if rf.kinds.is_empty() {
        return None;
    }
    let rng = match &mut inner.random {
        Some((seed, rng)) if *seed == rf.seed => rng,
        slot => &mut slot.insert((rf.seed, Rng::new(rf.seed))).1,
    };
    if rng.chance(rf.probability) {
        let i = rng.range(0, rf.kinds.len() - 1);
        return Some(rf.kinds[i].clone());
    }
    None
}

fn finish(shared: &Shared, seq: usize, status: u16) {
    if let Some(r) = shared.lock().log.get_mut(seq - 1) {
        r.status = status;
    }
}

fn route_not_found() -> Answer {
    Answer::json(404, &json!({"message": "route not found"}))
}

async fn process(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let now = Instant::now();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (seq, fault) = {
        let mut inner = shared.lock();
        let seq = inner.log.len() + 1;
        // Body and auth are recorded on arrival, so a request that is then dropped or delayed
        // by a fault (or whose client hangs up) is in the log as it was sent.
        let (log_body, authorized) = if path.starts_with("/download/") {
            (Value::Null, false)
        } else {
            let name = path.strip_prefix('/').unwrap_or(&path);
            let ep = handlers::endpoint(name);
            let body = match ep {
                Some(ep) => log_body(
                    &decode_body(ep, method == Method::GET, &query, &body),
                    &method,
                    &query,
                    &body,
                ),
                None if body.iter().all(u8::is_ascii_whitespace) => Value::Null,
                None => serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
            };
            let authorized =
                presented_token(auth.as_deref()).as_deref() == Some(inner.opts.token.as_str());
            (body, authorized)
        };
        inner.log.push(crate::fake::RequestRecord {
            seq,
            at: now.duration_since(shared.started),
            method: method.to_string(),
            path: path.clone(),
            body: log_body,
            status: 0,
            authorized,
            had_auth_header: auth.is_some(),
            beta_scope: headers
                .get("x-devrev-scope")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("beta")),
            fault: None,
        });
        let fault = pick_fault(&mut inner, &path);
        inner.log[seq - 1].fault = fault.clone();
        (seq, fault)
    };
    let wires: Vec<_> = {
        let mut w = shared.trip_wires.lock().unwrap_or_else(|e| e.into_inner());
        let (now_due, later): (Vec<_>, Vec<_>) = w.drain(..).partition(|(n, _)| *n == seq);
        *w = later;
        now_due
    };
    for (_, f) in wires {
        f();
    }
    match &fault {
        Some(Fault::Drop) => {
            finish(&shared, seq, 0);
            return Answer::dropped();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let mut answer = if let Some(token) = path.strip_prefix("/download/") {
        if method == Method::GET {
            download(&shared, seq, token, &query, &fault)
        } else {
            route_not_found()
        }
    } else {
        api(
            &shared,
            seq,
            &method,
            &path,
            &query,
            auth.as_deref(),
            &headers,
            &body,
            &fault,
        )
    };
    if fault == Some(Fault::ApplyThenDrop) {
        answer.drop_conn = true;
    }
    if answer.status >= 400
        && !path.starts_with("/download/")
        && shared.lock().opts.hostile.echo_auth
    {
        echo_auth(&mut answer, auth.as_deref());
    }
    if answer.status == 200 {
        let inner = shared.lock();
        if let Some((pattern, quirk)) = &inner.opts.hostile.body
            && path_matches(pattern, &path)
        {
            answer.shape = match quirk {
                BodyQuirk::Endless => Shape::Endless,
                BodyQuirk::Trickle(every) => Shape::Trickle(*every),
            };
        }
    }
    finish(
        &shared,
        seq,
        if answer.drop_conn { 0 } else { answer.status },
    );
    answer
}

fn fault_answer(fault: &Option<Fault>, seq: usize) -> Option<Answer> {
    match fault {
        Some(Fault::Status500) => Some(Answer::json(
            500,
            &json!({"type": "internal_error", "message": "Internal server error",
                    "reference_id": format!("fake-ref-{seq:06}")}),
        )),
        Some(Fault::TypelessNotFound) => Some(route_not_found()),
        Some(Fault::Unauthenticated) => Some(Answer::json(
            401,
            &json!({"type": "unauthenticated", "message": "Token is invalid or expired"}),
        )),
        Some(Fault::Forbidden) => Some(Answer::json(
            403,
            &json!({"type": "forbidden", "message": "Forbidden: the token lacks a permission"}),
        )),
        Some(Fault::Moved { location }) => {
            let mut a = Answer::json(301, &json!({}));
            a.headers.push(("location", location.clone()));
            Some(a)
        }
        Some(Fault::InvalidField { field }) => Some(Answer::json(
            400,
            &json!({"type": "invalid_field", "message": format!("Invalid field: {field}"),
                    "field_name": field}),
        )),
        Some(Fault::Status503) => Some(Answer::json(
            503,
            &json!({"type": "service_unavailable", "message": "Service unavailable"}),
        )),
        Some(Fault::Spurious429 { retry_after_s }) => {
            let mut a = Answer::json(
                429,
                &json!({"type": "too_many_requests", "message": "Too many requests",
                        "retry_after": retry_after_s}),
            );
            a.headers.push(("retry-after", retry_after_s.to_string()));
            Some(a)
        }
        Some(Fault::OddWait { header, body }) => {
            let mut a = Answer::json(
                429,
                &json!({"type": "too_many_requests", "message": "Too many requests",
                        "retry_after": body}),
            );
            a.headers.push(("retry-after", header.clone()));
            Some(a)
        }
        _ => None,
    }
}

fn download(
    shared: &Shared,
    seq: usize,
    token: &str,
    query: &str,
    fault: &Option<Fault>,
) -> Answer {
    if let Some(a) = fault_answer(fault, seq) {
        return a;
    }
    let inner = shared.lock();
    match handlers::download(&inner.state, token, query, Instant::now()) {
        Download::Bytes { bytes, mime, name } => Answer {
            status: 200,
            headers: vec![("content-disposition", format!("attachment; filename=\"{name}\""))],
            content_type: mime_static(&mime),
            body: bytes,
            drop_conn: false,
            shape: match inner.opts.hostile.download_extra_bytes {
                0 => Shape::Whole,
                n => Shape::Extra(n),
            },
        },
        Download::Denied(msg) => Answer {
            status: 403,
            headers: Vec::new(),
            content_type: "application/xml",
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>{msg}</Message></Error>"
            )
            .into_bytes(),
            drop_conn: false,
            shape: Shape::Whole,
        },
    }
}

fn mime_static(m: &str) -> &'static str {
    match m {
        "image/png" => "image/png",
        "application/pdf" => "application/pdf",
        "text/plain" => "text/plain",
        "text/csv" => "text/csv",
        "video/mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// [`crate::fake::Hostile::echo_auth`]: the error's `message` gets the `Authorization` header
/// as received, its `detail` the bare token.
fn echo_auth(answer: &mut Answer, auth: Option<&str>) {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&answer.body) else {
        return;
    };
    let header = auth.unwrap_or("(none)");
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error");
    let message = format!("{message} (gateway saw Authorization: {header})");
    body.insert("message".into(), Value::String(message));
    let bare = presented_token(auth).unwrap_or_default();
    body.insert(
        "detail".into(),
        Value::String(format!("token {bare} rejected upstream")),
    );
    answer.body = serde_json::to_vec(&body).unwrap_or_default();
}

/// The token in an `Authorization` value: `Bearer <t>` or the bare `<t>`.
fn presented_token(auth: Option<&str>) -> Option<String> {
    auth.map(|a| {
        let a = a.trim();
        match a.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                rest.trim().to_string()
            }
            _ => a.to_string(),
        }
    })
}

/// The body as JSON: POST's body, or GET's query turned into the same shape.
fn decode_body(
    ep: &handlers::Endpoint,
    is_get: bool,
    query: &str,
    raw: &Bytes,
) -> Result<Value, handlers::Reply> {
    if is_get {
        handlers::body_from_query(ep, query)
    } else if raw.iter().all(u8::is_ascii_whitespace) {
        Ok(json!({}))
    } else {
        serde_json::from_slice::<Value>(raw).map_err(|e| {
            handlers::error(
                400,
                "parse_error",
                &format!("invalid JSON body: {e}"),
                json!({}),
            )
        })
    }
}

/// What the request log keeps of a body that may not have parsed.
fn log_body(
    decoded: &Result<Value, handlers::Reply>,
    method: &Method,
    query: &str,
    raw: &Bytes,
) -> Value {
    match decoded {
        Ok(v) => v.clone(),
        Err(_) if *method == Method::GET => json!({"_query": query}),
        Err(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
    }
}

const KNOWN_VERSIONS: &[&str] = &["2022-10-20", "2024-01-24"];

#[allow(clippy::too_many_arguments)]
fn api(
    shared: &Shared,
    seq: usize,
    method: &Method,
    path: &str,
    query: &str,
    auth: Option<&str>,
    headers: &HeaderMap,
    raw: &Bytes,
    fault: &Option<Fault>,
) -> Answer {
    let name = path.strip_prefix('/').unwrap_or(path);
    let is_get = *method == Method::GET;
    let ep = handlers::endpoint(name).filter(|ep| is_get && ep.get || *method == Method::POST);
    let mut inner = shared.lock();
    let limit = inner.opts.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT);
    let presented = presented_token(auth);
    let authorized = presented.as_deref() == Some(inner.opts.token.as_str());
    inner.log[seq - 1].authorized = authorized;

    // Fixed window per token; only authenticated calls spend units.
    let now = Instant::now();
    let key = presented.clone().unwrap_or_default();
    let bucket = inner.buckets.entry(key).or_insert(Bucket {
        start: now,
        count: 0,
    });
    if now >= bucket.start + limit.window {
        *bucket = Bucket {
            start: now,
            count: 0,
        };
    }
    let reset_in = (bucket.start + limit.window).saturating_duration_since(now);
    let over = authorized && bucket.count >= limit.limit;
    // Unknown routes and injected faults spend nothing.
    if authorized && !over && ep.is_some() && fault_answer(fault, seq).is_none() {
        bucket.count += 1;
    }
    let remaining = limit.limit.saturating_sub(bucket.count);
    let rate_headers = vec![
        ("x-ratelimit-limit", limit.limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", epoch_secs_after(reset_in).to_string()),
    ];
    let with_rate = |mut a: Answer| {
        a.headers.extend(rate_headers.clone());
        a
    };
    let Some(ep) = ep else {
        return with_rate(route_not_found());
    };

    let body = decode_body(ep, is_get, query, raw);

    if let Some(a) = fault_answer(fault, seq) {
        return with_rate(a);
    }
    if !authorized {
        return with_rate(Answer::json(
            401,
            &json!({"type": "unauthenticated", "message": "Authentication failed: missing or invalid token"}),
        ));
    }
    if over {
        let secs = ceil_secs(reset_in);
        let mut a = Answer::json(
            429,
            &json!({"type": "too_many_requests", "message": "Rate limit exceeded", "retry_after": secs}),
        );
        a.headers.push(("retry-after", secs.to_string()));
        return with_rate(a);
    }
    if let Some(v) = headers
        .get("x-devrev-version")
        .and_then(|v| v.to_str().ok())
        && !KNOWN_VERSIONS.contains(&v)
    {
        return with_rate(Answer::json(
            400,
            &json!({"type": "invalid_api_version", "message": "Invalid API version", "value": v}),
        ));
    }
    if inner.opts.forbidden {
        return with_rate(Answer::json(
            403,
            &json!({"type": "forbidden", "message": "You do not have permission to perform this action"}),
        ));
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return with_rate(Answer::json(r.status, &r.body)),
    };
    let Inner { state, opts, .. } = &mut *inner;
    handlers::apply_due(state, opts, now, false);
    let mut ctx = Ctx {
        state,
        opts,
        now,
        base_url: &shared.base_url,
        seq,
        beta: !opts.quirks.no_beta
            && headers
                .get("x-devrev-scope")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("beta")),
    };
    let Reply { status, body } = handlers::dispatch(&mut ctx, ep, &body);
    with_rate(Answer::json(status, &body))
}
