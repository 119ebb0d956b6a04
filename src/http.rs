//! The HTTP surface: a fixed set of handler threads serving tiny_http requests (tiny_http
//! reads each connection on a thread of its own). Handlers check headers, read the body,
//! hand it to `decode` and the batch to `ingest`, and map the outcome to a status.
//!
//! Every failure becomes an [`ApiError`], and [`ApiError::status`] is the one place that maps
//! them to HTTP status codes: 4xx only for the sender's fault (Prometheus drops those), 503
//! with Retry-After for ours (Prometheus retries those). Never 429: Prometheus 2.42 drops it.

use crate::db_error::StoreError;
use crate::decode::{self, DecodeError};
use crate::decode_v2;
use crate::ha::{Election, HaError, HandOverError};
use crate::ingest::{Accepted, Ingest, IngestError};
use crate::metrics::Metrics;
use crate::read::{ReadError, ReadPool};
use crate::web_config::Role;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response};

/// Seconds suggested to a sender in `Retry-After` on a 503.
const RETRY_AFTER_SECS: u32 = 1;

/// Stack of a connection thread: it only parses request heads (bodies are read and decoded on
/// the handler threads), so a small stack keeps a thousand idle connections cheap.
const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// How the listener bounds each accepted connection: socket timeouts (on accepted sockets;
/// on the listener they would make accept() fail), the connection cap, and the request-head
/// limits (8 KiB a line, 64 KiB and 100 fields a head; beyond: 431).
pub fn connection_limits(config: &crate::config::Config) -> tiny_http::ConnectionLimits {
    tiny_http::ConnectionLimits {
        read_timeout: Some(config.http_read_timeout),
        write_timeout: Some(config.http_read_timeout),
        max_connections: config.http_max_connections,
        head: tiny_http::HeadLimits {
            max_line_bytes: 8 * 1024,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        },
        thread_stack_bytes: Some(CONNECTION_STACK_BYTES),
    }
}

/// Why a request was not answered with success.
#[derive(Debug)]
pub enum ApiError {
    Decode(DecodeError),
    /// Compressed body larger than any body that could decode within the limit.
    BodyTooLarge {
        length: usize,
        limit: usize,
    },
    BodyUnreadable(String),
    UnsupportedMediaType(String),
    NotFound,
    MethodNotAllowed,
    QueueFull,
    ShuttingDown,
    Database(StoreError),
    CommitTimeout(Duration),
    Unhealthy(String),
    Ha(HaError),
    Read(ReadError),
    HaDisabled,
    HandOver(HandOverError),
    MissingParameter(&'static str),
    /// A sample time looked out of range while the database clock, by which it is judged,
    /// could not be read lately: ours to retry, not the sender's fault.
    ClockUnknown(DecodeError),
    /// No credentials or wrong ones (401).
    Unauthorized,
    /// Credentials without the role the route needs (403).
    Forbidden,
    /// A state-changing request sent for another site's page (403).
    CrossOrigin(String),
    /// Too many passwords being checked at once (503, retried).
    AuthBusy,
}

impl From<crate::auth::Denied> for ApiError {
    fn from(d: crate::auth::Denied) -> Self {
        match d {
            crate::auth::Denied::Unauthenticated => ApiError::Unauthorized,
            crate::auth::Denied::Forbidden => ApiError::Forbidden,
            crate::auth::Denied::Busy => ApiError::AuthBusy,
        }
    }
}

impl ApiError {
    /// The status code and whether to send Retry-After: the single mapping of errors to HTTP.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Decode(
                DecodeError::TooLarge { .. } | DecodeError::TooManyElements { .. },
            )
            | ApiError::BodyTooLarge { .. } => 413,
            ApiError::Decode(_) | ApiError::BodyUnreadable(_) => 400,
            // PostgreSQL refused the data itself: retrying cannot help. Validation in `decode`
            // should catch such input first; this is the safety net.
            ApiError::Database(e) if e.is_data_error() => 400,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Read(ReadError::Decode(
                DecodeError::TooLarge { .. } | DecodeError::TooManyElements { .. },
            )) => 413,
            ApiError::Read(
                ReadError::Decode(_) | ReadError::BadMatcher(_) | ReadError::SampleLimit(_),
            ) => 400,
            ApiError::Read(ReadError::Store(e)) if e.is_data_error() => 400,
            ApiError::Read(ReadError::Store(_) | ReadError::Busy(_) | ReadError::Deadline(_)) => {
                503
            }
            ApiError::MissingParameter(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden | ApiError::CrossOrigin(_) => 403,
            ApiError::Ha(HaError::Store(_)) | ApiError::HandOver(HandOverError::Store(_)) => 503,
            ApiError::HandOver(HandOverError::UnknownCluster) => 404,
            ApiError::HandOver(HandOverError::ReplicaNotSending) => 409,
            ApiError::NotFound | ApiError::HaDisabled => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::QueueFull
            | ApiError::ShuttingDown
            | ApiError::Database(_)
            | ApiError::CommitTimeout(_)
            | ApiError::Unhealthy(_)
            | ApiError::ClockUnknown(_)
            | ApiError::AuthBusy => 503,
        }
    }

    /// For errors that carry the database's words (which can name tables, roles, hosts):
    /// what the answer says instead. The full error goes to the log.
    fn public_summary(&self) -> Option<&'static str> {
        match self {
            ApiError::Database(e) if e.is_data_error() => {
                Some("the database refused these samples")
            }
            ApiError::Database(_) => Some("samples not stored: database error; retry later"),
            ApiError::Read(ReadError::Store(_)) => Some("remote read failed: database error"),
            ApiError::Ha(HaError::Store(_)) => {
                Some("HA lease not readable: database error; retry later")
            }
            ApiError::HandOver(HandOverError::Store(_)) => {
                Some("hand-over failed: database error; retry")
            }
            ApiError::Unhealthy(_) => Some("unhealthy: database unreachable or schema not current"),
            _ => None,
        }
    }

    /// A short stable name for the `reason` label of rejected samples.
    fn reason(&self) -> &'static str {
        match self {
            ApiError::Decode(e) => e.reason(),
            ApiError::BodyTooLarge { .. } => "too_large",
            ApiError::BodyUnreadable(_) => "body_unreadable",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotFound | ApiError::MethodNotAllowed => "bad_route",
            ApiError::QueueFull => "queue_full",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Database(_) => "database_error",
            ApiError::CommitTimeout(_) => "commit_timeout",
            ApiError::Unhealthy(_) => "unhealthy",
            ApiError::ClockUnknown(_) => "clock_unknown",
            ApiError::Read(_) => "read_error",
            ApiError::Ha(HaError::Store(_)) => "ha_lease_unavailable",
            ApiError::HaDisabled | ApiError::HandOver(_) | ApiError::MissingParameter(_) => {
                "bad_route"
            }
            ApiError::Unauthorized | ApiError::Forbidden | ApiError::CrossOrigin(_) => {
                "unauthorized"
            }
            ApiError::AuthBusy => "auth_busy",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Decode(e) => write!(f, "{e}"),
            ApiError::BodyTooLarge { length, limit } => write!(
                f,
                "request body of {length} bytes is larger than any Snappy body within the decoded limit of {limit} bytes (--max-request-bytes)"
            ),
            ApiError::BodyUnreadable(e) => write!(f, "cannot read request body: {e}"),
            ApiError::UnsupportedMediaType(e) => write!(f, "{e}"),
            ApiError::NotFound => write!(f, "not found: promgres serves POST /write, GET /healthz, GET /metrics"),
            ApiError::MethodNotAllowed => write!(f, "method not allowed"),
            ApiError::QueueFull => write!(f, "write queue is full; retry later"),
            ApiError::ShuttingDown => write!(f, "promgres is shutting down; retry later"),
            ApiError::Database(e) => write!(f, "samples not stored, retry later: {e}"),
            ApiError::CommitTimeout(d) => write!(
                f,
                "no commit within {d:?}; the samples may or may not be stored, a retry is safe"
            ),
            ApiError::Unhealthy(e) => write!(f, "unhealthy: {e}"),
            ApiError::Ha(e) => write!(f, "{e}"),
            ApiError::Read(e) => write!(f, "{e}"),
            ApiError::HaDisabled => write!(f, "high availability is off (--high-availability)"),
            ApiError::HandOver(e) => write!(f, "{e}"),
            ApiError::MissingParameter(p) => write!(f, "missing query parameter {p:?}"),
            ApiError::ClockUnknown(e) => write!(
                f,
                "{e}; the database clock, by which sample times are judged, could not be read lately: retry later"
            ),
            ApiError::Unauthorized => write!(f, "credentials missing or wrong"),
            ApiError::Forbidden => write!(f, "these credentials may not do this"),
            ApiError::CrossOrigin(why) => write!(f, "{why}"),
            ApiError::AuthBusy => write!(f, "too many passwords being checked; retry later"),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::QueueFull => ApiError::QueueFull,
            IngestError::ShuttingDown => ApiError::ShuttingDown,
            IngestError::Database(e) => ApiError::Database(e),
            IngestError::CommitTimeout(d) => ApiError::CommitTimeout(d),
            IngestError::Ha(e) => ApiError::Ha(e),
        }
    }
}

/// What `/healthz` asks: database reachable and schema current.
pub trait HealthCheck: Send + Sync {
    fn check(&self) -> Result<(), String>;
}

/// Everything a handler thread needs.
pub struct HttpState {
    /// Where decoded write batches go.
    pub ingest: Ingest,
    pub metrics: Arc<Metrics>,
    pub health: Arc<dyn HealthCheck>,
    pub limits: decode::Limits,
    /// Longest a request body may take to arrive.
    pub body_deadline: Duration,
    pub stopping: Arc<AtomicBool>,
    /// Tokens bounding concurrent decodes: a decoded request can take several times its
    /// size in memory, and 128 at once must not exhaust the machine.
    pub decode_slots: (
        crossbeam_channel::Sender<()>,
        crossbeam_channel::Receiver<()>,
    ),
    /// The HA election, with --high-availability (for /ha and remote read's replica label;
    /// writes reach it through `ingest`).
    pub ha: Option<Arc<Election>>,
    pub reads: Arc<ReadPool>,
    pub read_sample_limit: usize,
    /// `--read-timeout`: the longest one remote read may take.
    pub read_timeout: Duration,
    /// Remote reads waiting for a read worker.
    pub read_queue: Sender<ReadJob>,
    /// The database clock, by which sample times are judged.
    pub db_clock: Arc<crate::clock::DbClock>,
    /// Who may do what (reloaded on SIGHUP).
    pub access: Arc<crate::auth::WebAccess>,
}

impl HttpState {
    /// Runs `f` holding one decode slot.
    fn with_decode_slot<T>(&self, f: impl FnOnce() -> T) -> T {
        // The channel is owned by `self`, so it cannot be closed while we wait.
        let _ = self.decode_slots.1.recv();
        let result = f();
        let _ = self.decode_slots.0.send(());
        result
    }
}

/// A decode slot per core, twice over (decoding is CPU work; more would only queue).
pub fn decode_slots() -> (
    crossbeam_channel::Sender<()>,
    crossbeam_channel::Receiver<()>,
) {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let (tx, rx) = crossbeam_channel::bounded(n);
    for _ in 0..n {
        let _ = tx.send(());
    }
    (tx, rx)
}

/// Serves requests from `server` until `state.stopping` is set, then answers the requests
/// already received (they would otherwise see their connection dropped) and returns. Run one
/// per handler thread.
pub fn serve(server: &tiny_http::Server, state: &HttpState) {
    while !state.stopping.load(Ordering::Relaxed) {
        match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(request)) => handle(request, state),
            Ok(None) => {}
            // The accept loop keeps its errors to itself (counted in /metrics); nothing else
            // is reported here, but never spin on one.
            Err(e) => {
                log::debug!("HTTP receive failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    while let Ok(Some(request)) = server.try_recv() {
        handle(request, state);
    }
}

fn handle(mut request: Request, state: &HttpState) {
    let started = Instant::now();
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let access = state.access.current();
    if let Some((metric_path, need)) = required_role(&path, &access) {
        let authorization = header_value(&request, "Authorization");
        if let Err(denied) = access.check(authorization, need) {
            answer(
                request,
                &path,
                metric_path,
                started,
                Err(denied.into()),
                state,
            );
            return;
        }
    }
    let boxed = |r: Reply| r.map(Response::boxed);
    let (metric_path, result) = match path.as_str() {
        "/write" | "/api/v1/write" => ("/write", boxed(write(&mut request, state))),
        "/read" | "/api/v1/read" => match accept_read(&mut request, state) {
            // Queued for a read worker, which answers: a handler thread never waits on a read.
            Ok(read) => match state.read_queue.try_send(ReadJob {
                request,
                read,
                started,
            }) {
                Ok(()) => return,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    request = job.request;
                    (
                        "/read",
                        Err(ApiError::Read(ReadError::Busy(Duration::ZERO))),
                    )
                }
            },
            Err(e) => ("/read", Err(e)),
        },
        "/healthz" => ("/healthz", boxed(healthz(&request, state))),
        "/metrics" => ("/metrics", boxed(metrics(&request, state))),
        "/api/v1/ha/clusters" => ("/api/v1/ha/clusters", boxed(ha_state(&request, state))),
        p if p.starts_with("/api/v1/ha/clusters/") && p.ends_with("/leader") => (
            "/api/v1/ha/clusters/:cluster/leader",
            boxed(ha_hand_over(&mut request, state)),
        ),
        "/ha" => ("/ha", boxed(ha_page(&request, state))),
        p if p.starts_with("/ha/clusters/") && p.ends_with("/leader") => (
            "/ha/clusters/:cluster/leader",
            boxed(ha_page_hand_over(&mut request, state)),
        ),
        _ => ("other", Err(ApiError::NotFound)),
    };
    answer(request, &path, metric_path, started, result, state);
}

/// A short id tying an error answer to its log line: milliseconds since the epoch and a
/// sequence number, in hex.
fn error_id() -> String {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{ms:x}-{n:x}")
}

/// The role a route needs (with its name for the request metrics), or None for open routes
/// and unknown paths (those get 404 whoever asks). Checked before a body is read.
fn required_role(path: &str, access: &crate::auth::Access) -> Option<(&'static str, Role)> {
    match path {
        "/write" | "/api/v1/write" => Some(("/write", Role::Write)),
        "/read" | "/api/v1/read" => Some(("/read", Role::Read)),
        "/metrics" if access.metrics_protected() => Some(("/metrics", Role::Read)),
        "/api/v1/ha/clusters" => Some(("/api/v1/ha/clusters", Role::Read)),
        p if p.starts_with("/api/v1/ha/clusters/") && p.ends_with("/leader") => {
            Some(("/api/v1/ha/clusters/:cluster/leader", Role::Admin))
        }
        "/ha" => Some(("/ha", Role::Read)),
        p if p.starts_with("/ha/clusters/") && p.ends_with("/leader") => {
            Some(("/ha/clusters/:cluster/leader", Role::Admin))
        }
        _ => None,
    }
}

/// Sends the answer to a request, or the error's, and counts it.
fn answer(
    request: Request,
    path: &str,
    metric_path: &'static str,
    started: Instant,
    result: Result<tiny_http::ResponseBox, ApiError>,
    state: &HttpState,
) {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let status = e.status();
            let body = match e.public_summary() {
                // The database's own words stay in the log, found by the id in the answer.
                Some(summary) => {
                    let id = error_id();
                    log::warn!("{path}: {status} (error id {id}): {e}");
                    format!("{summary} (error id {id})\n")
                }
                None => {
                    if status >= 500 {
                        log::warn!("{path}: {status}: {e}");
                    } else {
                        log::debug!("{path}: {status}: {e}");
                    }
                    format!("{e}\n")
                }
            };
            let mut r = Response::from_string(body)
                .with_status_code(status)
                .with_header(header("Content-Type", "text/plain; charset=utf-8"));
            if status == 503 {
                r = r.with_header(header("Retry-After", &RETRY_AFTER_SECS.to_string()));
            }
            if status == 401 {
                r = r
                    .with_header(header(
                        "WWW-Authenticate",
                        "Basic realm=\"promgres\", charset=\"UTF-8\"",
                    ))
                    .with_header(header("WWW-Authenticate", "Bearer realm=\"promgres\""));
            }
            r.boxed()
        }
    };
    let mut response = response;
    for (name, value) in state.access.current().headers() {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    let code = response.status_code().0;
    if metric_path == "/write" {
        state.metrics.http_write_duration.observe(started.elapsed());
    }
    state
        .metrics
        .http_requests
        .add(&[metric_path, &code.to_string()], 1);
    if let Err(e) = request.respond(response) {
        log::debug!("{path}: client went away before the answer: {e}");
    }
}

fn header(name: &str, value: &str) -> Header {
    // Both parts are ASCII literals or digits, which tiny_http always accepts.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).expect("static header")
    })
}

type Reply = Result<Response<std::io::Cursor<Vec<u8>>>, ApiError>;

fn header_value<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// The remote-write message a request carries, chosen by its `Content-Type` as the 2.0 spec
/// says (never by `X-Prometheus-Remote-Write-Version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteProtocol {
    /// `prometheus.WriteRequest`: `application/x-protobuf` without `proto=`, with
    /// `proto=prometheus.WriteRequest`, or no `Content-Type` at all (older senders).
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

const SUPPORTED_WRITE_TYPES: &str = "application/x-protobuf (remote write 1.0), \
    application/x-protobuf;proto=prometheus.WriteRequest (1.0), \
    application/x-protobuf;proto=io.prometheus.write.v2.Request (2.0)";

/// Remote write is Snappy-compressed protobuf. A missing header is tolerated (some 1.0
/// senders omit them); anything else announced is refused with 415 naming what is supported.
fn write_protocol(request: &Request) -> Result<WriteProtocol, ApiError> {
    if let Some(encoding) = header_value(request, "Content-Encoding") {
        if !encoding.trim().eq_ignore_ascii_case("snappy") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "unsupported Content-Encoding {encoding:?}: remote write needs snappy"
            )));
        }
    }
    let Some(content_type) = header_value(request, "Content-Type") else {
        return Ok(WriteProtocol::V1);
    };
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {content_type:?}; supported: {SUPPORTED_WRITE_TYPES}"
        )));
    }
    let mut protocol = WriteProtocol::V1;
    for p in parts {
        let Some((key, value)) = p.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        protocol = match value.trim().trim_matches('"') {
            "prometheus.WriteRequest" => WriteProtocol::V1,
            "io.prometheus.write.v2.Request" => WriteProtocol::V2,
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "unsupported message proto={other:?}; supported: {SUPPORTED_WRITE_TYPES}"
                )))
            }
        };
    }
    Ok(protocol)
}

fn write(request: &mut Request, state: &HttpState) -> Reply {
    if *request.method() != Method::Post {
        return Err(ApiError::MethodNotAllowed);
    }
    let result = write_inner(request, state);
    if let Err(e) = &result {
        let refused = match e {
            ApiError::Decode(d) => d.refused_samples(),
            _ => 0,
        };
        state
            .metrics
            .samples_rejected
            .add(&[e.reason()], refused as u64);
    }
    result
}

fn write_inner(request: &mut Request, state: &HttpState) -> Reply {
    let protocol = write_protocol(request)?;
    // No valid Snappy body within the decoded limit can be longer than this.
    let limit = snap::raw::max_compress_len(state.limits.max_decoded_bytes).max(64);
    if let Some(length) = request.body_length() {
        if length > limit {
            return Err(ApiError::BodyTooLarge { length, limit });
        }
    }
    let body = read_body(request, limit, state.body_deadline)?;
    // Sample times are judged by the database clock; if it could not be read lately, a time
    // that looks out of range may be our clock's fault, and a 4xx would lose the samples.
    let now = state.db_clock.now();
    let batch = state
        .with_decode_slot(|| match protocol {
            WriteProtocol::V1 => decode::decode_write(&body, state.limits, now.ms),
            WriteProtocol::V2 => decode_v2::decode_write_v2(&body, state.limits, now.ms),
        })
        .map_err(|e| match e {
            DecodeError::TimestampOutOfRange { .. } if !now.trusted => ApiError::ClockUnknown(e),
            e => ApiError::Decode(e),
        })?;
    drop(body);
    let samples = batch.sample_count();
    let counts = batch.counts();
    state.metrics.samples_received.add(counts.samples as u64);
    state
        .metrics
        .histograms_received
        .add(counts.histograms as u64);
    state
        .metrics
        .exemplars_received
        .add(counts.exemplars as u64);
    // 202 when some samples were not stored on purpose (HA kept them back, or this instance
    // is an advisory-lock follower): a 2xx, so Prometheus neither retries nor blocks.
    let status = match state.ingest.write(batch, samples)? {
        Accepted::Stored => 204,
        Accepted::PartlyKeptBack | Accepted::Follower => 202,
    };
    Ok(with_written(empty(status), counts))
}

/// Adds the `X-Prometheus-Remote-Write-*-Written` headers to a 2xx answer. A request is
/// stored whole or refused whole, so on a 2xx everything it carried counts as written: also
/// what HA kept back on purpose (another replica's moments, a standby's buffer, an advisory
/// follower's data) and what was stored already (a resend). Prometheus 3.x takes "2xx but
/// fewer written" as a failure and would report deduplicated samples as lost. On errors the
/// headers are left out, which the spec reads as 0 written.
fn with_written<R: std::io::Read>(response: Response<R>, counts: decode::Counts) -> Response<R> {
    response
        .with_header(header(
            "X-Prometheus-Remote-Write-Samples-Written",
            &counts.samples.to_string(),
        ))
        .with_header(header(
            "X-Prometheus-Remote-Write-Histograms-Written",
            &counts.histograms.to_string(),
        ))
        .with_header(header(
            "X-Prometheus-Remote-Write-Exemplars-Written",
            &counts.exemplars.to_string(),
        ))
}

fn empty(status: u16) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(Vec::new()).with_status_code(status)
}

fn ha_state(request: &Request, state: &HttpState) -> Reply {
    if *request.method() != Method::Get {
        return Err(ApiError::MethodNotAllowed);
    }
    let ha = state.ha.as_ref().ok_or(ApiError::HaDisabled)?;
    Ok(Response::from_data(ha.state_json().into_bytes())
        .with_header(header("Content-Type", "application/json")))
}

/// `POST /api/v1/ha/clusters/<cluster>/leader?replica=<name>`: operator hand-over.
fn ha_hand_over(request: &mut Request, state: &HttpState) -> Reply {
    if *request.method() != Method::Post {
        return Err(ApiError::MethodNotAllowed);
    }
    same_origin(request).map_err(ApiError::CrossOrigin)?;
    if state.ha.is_none() {
        return Err(ApiError::HaDisabled);
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let cluster = path
        .strip_prefix("/api/v1/ha/clusters/")
        .and_then(|p| p.strip_suffix("/leader"))
        .map(percent_decode)
        .filter(|c| !c.is_empty())
        .ok_or(ApiError::NotFound)?;
    let replica = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("replica="))
        .map(percent_decode)
        .filter(|r| !r.is_empty())
        .ok_or(ApiError::MissingParameter("replica"))?;
    let lease = state
        .ingest
        .hand_over(&cluster, &replica)
        .map_err(ApiError::HandOver)?;
    let mut body = String::from("{\"cluster\":");
    decode::push_json_string(&mut body, &lease.cluster);
    body.push_str(",\"leader\":");
    decode::push_json_string(&mut body, &lease.leader);
    body.push_str(&format!(
        ",\"term\":{},\"handover_time_ms\":{}}}",
        lease.term, lease.start_ms
    ));
    Ok(Response::from_data(body.into_bytes())
        .with_header(header("Content-Type", "application/json")))
}

/// Decodes %XX escapes (and '+' as space) of a URL component; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads at most `limit` bytes of body, giving up once `deadline` has passed: the socket's
/// read timeout bounds each read, this bounds a client that trickles bytes.
fn read_body(request: &mut Request, limit: usize, deadline: Duration) -> Result<Vec<u8>, ApiError> {
    let started = Instant::now();
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0).min(limit));
    let mut reader = request.as_reader().take(limit as u64 + 1);
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut chunk)
            .map_err(|e| ApiError::BodyUnreadable(e.to_string()))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
        if started.elapsed() > deadline {
            return Err(ApiError::BodyUnreadable(format!(
                "body not complete after {deadline:?}"
            )));
        }
    }
    if body.len() > limit {
        return Err(ApiError::BodyTooLarge {
            length: body.len(),
            limit,
        });
    }
    Ok(body)
}

/// How long a read may wait in the queue for a read worker before 503.
const READ_WAIT: Duration = Duration::from_secs(30);

/// A remote read accepted by a handler thread: decoded and planned, to be run by a read worker.
pub struct AcceptedRead {
    plans: Vec<crate::read::Plan>,
    stream: bool,
}

/// A remote read waiting for a read worker, with the request to answer.
pub struct ReadJob {
    request: Request,
    read: AcceptedRead,
    started: Instant,
}

/// The read workers' queue: bounded, so reads beyond it get 503 at once.
pub fn read_queue(workers: usize) -> (Sender<ReadJob>, Receiver<ReadJob>) {
    crossbeam_channel::bounded((4 * workers).max(16))
}

/// `POST /read` on a handler thread: checks, reads and decodes the request (bounded by the
/// body deadline and the decode budget) and plans its queries; running them is a read
/// worker's job.
fn accept_read(request: &mut Request, state: &HttpState) -> Result<AcceptedRead, ApiError> {
    if *request.method() != Method::Post {
        return Err(ApiError::MethodNotAllowed);
    }
    let limit = snap::raw::max_compress_len(state.limits.max_decoded_bytes).max(64);
    let body = read_body(request, limit, state.body_deadline)?;
    // Decoded under a decode slot, as writes are: at most two decodes per core at once.
    let read_request = state
        .with_decode_slot(|| crate::read::decode_request(&body, state.limits.max_decoded_bytes))
        .map_err(ApiError::Read)?;
    let replica_label = state.ha.as_ref().map(|h| h.config().replica_label.as_str());
    let plans = crate::read::plan(&read_request, replica_label).map_err(ApiError::Read)?;
    Ok(AcceptedRead {
        plans,
        stream: crate::read::wants_stream(&read_request),
    })
}

/// A read worker: runs queued remote reads one at a time on its own connection of the read
/// pool, until shutdown. Reads therefore never take handler threads from writes, and at most
/// as many run as there are workers.
pub fn read_worker(jobs: &Receiver<ReadJob>, state: &HttpState) {
    loop {
        match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => {
                let result = if job.started.elapsed() > READ_WAIT {
                    Err(ApiError::Read(ReadError::Busy(READ_WAIT)))
                } else {
                    run_read(job.read, job.started, state)
                };
                let path = job
                    .request
                    .url()
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .to_string();
                answer(job.request, &path, "/read", job.started, result, state);
            }
            Err(RecvTimeoutError::Timeout) if !state.stopping.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
}

fn run_read(
    read: AcceptedRead,
    started: Instant,
    state: &HttpState,
) -> Result<tiny_http::ResponseBox, ApiError> {
    let deadline = crate::read::Deadline::after(state.read_timeout, started);
    let mut pooled = state.reads.get(READ_WAIT).map_err(ApiError::Read)?;
    if read.stream {
        let stream =
            crate::read::ChunkStream::new(pooled, read.plans, state.read_sample_limit, deadline);
        let headers = vec![header(
            "Content-Type",
            "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse",
        )];
        return Ok(Response::new(tiny_http::StatusCode(200), headers, stream, None, None).boxed());
    }
    let body =
        crate::read::samples_response(&mut pooled, &read.plans, state.read_sample_limit, deadline)
            .map_err(ApiError::Read)?;
    Ok(Response::from_data(body)
        .with_header(header("Content-Type", "application/x-protobuf"))
        .with_header(header("Content-Encoding", "snappy"))
        .boxed())
}

fn healthz(request: &Request, state: &HttpState) -> Reply {
    if *request.method() != Method::Get && *request.method() != Method::Head {
        return Err(ApiError::MethodNotAllowed);
    }
    state.health.check().map_err(ApiError::Unhealthy)?;
    Ok(Response::from_data(b"ok\n".to_vec()).with_header(header("Content-Type", "text/plain")))
}

fn metrics(request: &Request, state: &HttpState) -> Reply {
    if *request.method() != Method::Get {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(
        Response::from_data(state.metrics.render().into_bytes()).with_header(header(
            "Content-Type",
            "text/plain; version=0.0.4; charset=utf-8",
        )),
    )
}

/// How many leases per cluster the `/ha` page shows.
const HA_PAGE_HISTORY: usize = 10;

/// The longest the `/ha` page waits for a read connection for the lease history; past it the
/// page is served without the history (and says so).
const HA_PAGE_DB_WAIT: Duration = Duration::from_secs(2);

/// Whether the caller may hand a cluster's lease over: the `/ha` page renders its forms, and
/// `POST /ha/clusters/<cluster>/leader` acts, only when it may.
fn may_hand_over(request: &Request, state: &HttpState) -> bool {
    state
        .access
        .current()
        .check(header_value(request, "Authorization"), Role::Admin)
        .is_ok()
}

/// `GET /ha`: the HA page for operators (`ha_page`), from the election's state and the
/// newest leases of the database's lease history.
fn ha_page(request: &Request, state: &HttpState) -> Reply {
    if *request.method() != Method::Get {
        return Err(ApiError::MethodNotAllowed);
    }
    let ha = state.ha.as_ref().ok_or(ApiError::HaDisabled)?;
    // On a read connection (read-only sessions), not the election's: a page load never holds
    // the election's lock while it waits for the database.
    let history = state
        .reads
        .get(HA_PAGE_DB_WAIT)
        .map_err(|e| e.to_string())
        .and_then(|mut pooled| {
            let client = pooled.client().map_err(|e| e.to_string())?;
            crate::ha::lease_history(client, HA_PAGE_HISTORY as i64).map_err(|e| e.to_string())
        })
        // The page says that the history could not be read, not the database's words.
        .map_err(|e| {
            let id = error_id();
            log::warn!("/ha: lease history not read (error id {id}): {e}");
            format!("database error (error id {id})")
        });
    let config = ha.config();
    let page = crate::ha_page::PageState {
        status: ha.status(),
        history,
        history_limit: HA_PAGE_HISTORY,
        cluster_label: config.cluster_label.clone(),
        replica_label: config.replica_label.clone(),
        failover_timeout_ms: config.failover_timeout_ms,
    };
    let html = crate::ha_page::render(&page, may_hand_over(request, state));
    Ok(html_response(200, html))
}

/// `POST /ha/clusters/<cluster>/leader` with the form body `replica=<name>`
/// (application/x-www-form-urlencoded): the `/ha` page's hand-over button. The same hand-over
/// as the API; answers 303 See Other back to /ha, or an HTML page with the error.
fn ha_page_hand_over(request: &mut Request, state: &HttpState) -> Reply {
    match ha_page_hand_over_inner(request, state) {
        Ok(()) => Ok(Response::from_data(Vec::new())
            .with_status_code(303)
            .with_header(header("Location", "/ha"))),
        Err((status, message)) => Ok(html_response(
            status,
            crate::ha_page::render_error(status, &message),
        )),
    }
}

fn ha_page_hand_over_inner(request: &mut Request, state: &HttpState) -> Result<(), (u16, String)> {
    let api = |e: ApiError| match e.public_summary() {
        Some(summary) => {
            let id = error_id();
            log::warn!("/ha hand-over: {} (error id {id}): {e}", e.status());
            (e.status(), format!("{summary} (error id {id})"))
        }
        None => (e.status(), e.to_string()),
    };
    if *request.method() != Method::Post {
        return Err(api(ApiError::MethodNotAllowed));
    }
    if state.ha.is_none() {
        return Err(api(ApiError::HaDisabled));
    }
    if !may_hand_over(request, state) {
        return Err((403, "handing a lease over needs the admin role".into()));
    }
    if let Err(why) = same_origin(request) {
        return Err((403, why));
    }
    if let Some(content_type) = header_value(request, "Content-Type") {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(api(ApiError::UnsupportedMediaType(format!(
                "unsupported Content-Type {content_type:?}: the hand-over form is application/x-www-form-urlencoded"
            ))));
        }
    }
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("");
    let cluster = path
        .strip_prefix("/ha/clusters/")
        .and_then(|p| p.strip_suffix("/leader"))
        .map(percent_decode)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| api(ApiError::NotFound))?;
    let body = read_body(request, 4096, state.body_deadline).map_err(api)?;
    let body = String::from_utf8_lossy(&body);
    let replica = body
        .split('&')
        .find_map(|kv| kv.trim().strip_prefix("replica="))
        .map(percent_decode)
        .filter(|r| !r.is_empty())
        .ok_or((400, "missing form field \"replica\"".to_string()))?;
    let lease = state
        .ingest
        .hand_over(&cluster, &replica)
        .map_err(|e| api(ApiError::HandOver(e)))?;
    log::info!(
        "HA cluster {:?}: handed over to {:?} from the /ha page (term {}, data time T={} ms)",
        lease.cluster,
        lease.leader,
        lease.term,
        lease.start_ms
    );
    Ok(())
}

fn html_response(status: u16, html: String) -> Response<std::io::Cursor<Vec<u8>>> {
    // Never inside another site's frame: its page could make an operator click "Make leader".
    Response::from_data(html.into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/html; charset=utf-8"))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Frame-Options", "DENY"))
        .with_header(header("Content-Security-Policy", "frame-ancestors 'none'"))
}

/// Refuses a hand-over a browser sends for another site's page (the browser says so in
/// `Origin` or `Sec-Fetch-Site`): a page elsewhere must not make an operator's browser, with
/// its cached credentials, hand a lease over. Behind a proxy that rewrites Host, the proxy's
/// X-Forwarded-Host names this server (a page elsewhere cannot set that header). Requests
/// without these headers (curl, scripts) pass.
fn same_origin(request: &Request) -> Result<(), String> {
    if header_value(request, "Sec-Fetch-Site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
    {
        return Err("cross-site request refused (Sec-Fetch-Site: cross-site)".into());
    }
    let Some(origin) = header_value(request, "Origin") else {
        return Ok(());
    };
    let host = header_value(request, "Host").unwrap_or("");
    let forwarded = header_value(request, "X-Forwarded-Host")
        .and_then(|h| h.split(',').next())
        .map(str::trim);
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| {
            (!host.is_empty() && o.eq_ignore_ascii_case(host))
                || forwarded.is_some_and(|f| !f.is_empty() && o.eq_ignore_ascii_case(f))
        });
    if same {
        Ok(())
    } else {
        Err(format!(
            "cross-origin request refused: Origin {origin:?} is not this server ({host:?})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_words_stay_out_of_answers() {
        let secret = "relation \"promgres.secret_table\" owned by role dbadmin on db.internal";
        let cases = [
            ApiError::Database(StoreError {
                connection_lost: true,
                sqlstate: Some("57P01".into()),
                message: secret.into(),
            }),
            ApiError::Database(StoreError {
                connection_lost: false,
                sqlstate: Some("22P02".into()),
                message: secret.into(),
            }),
            ApiError::Read(ReadError::Store(StoreError::internal(secret))),
            ApiError::Unhealthy(secret.into()),
        ];
        for e in cases {
            let summary = e.public_summary().expect("a summary for a database error");
            assert!(!summary.contains("secret_table"), "{summary}");
            assert!(
                e.to_string().contains("secret_table"),
                "the log keeps the detail"
            );
        }
        assert!(ApiError::Unauthorized.public_summary().is_none());
        assert_eq!(ApiError::Unauthorized.status(), 401);
        assert_eq!(ApiError::Forbidden.status(), 403);
        assert_ne!(error_id(), error_id());
    }
}
