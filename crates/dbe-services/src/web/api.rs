//! The JSON API behind the pages, the command endpoints and the live stream (`/api/stream`).
//!
//! Commands are parsed and range-checked here so a user gets a precise 4xx for bad input; the core checks them
//! again (its ranges are the authority), and a refusal there comes back as 409 with the core's reason; a bridge
//! that is busy or not running is a 503 (see [`RequestError`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dbe_core::command::{Command, MAX_TEMPORARY_LIMIT_TIMEOUT};
use dbe_core::units::{BasisPoints, DeciAmps};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use crate::hub::{Request as HubRequest, RequestError};

/// Fastest the live stream sends snapshots; the bridge may publish faster, the page needs no more.
const STREAM_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// How long a command may wait for the bridge loop's answer before the user is told.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest current a temporary limit may name, in A (the core's bound is 10 000.0 A).
const MAX_LIMIT_A: f64 = 10_000.0;

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A refused request: its status and the sentence that tells the user what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

/// Turns axum's plain-text rejections (404, 405, 413, ...) under `/api/` into `{"error": ...}`, so every API
/// failure has the same shape.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.starts_with("application/json"))
        .unwrap_or(false);
    if !api || !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let detail = match to_bytes(response.into_body(), 4096).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "method {method} not allowed here{}",
            allow
                .as_ref()
                .and_then(|a| a.to_str().ok())
                .map(|a| format!("; use {a}"))
                .unwrap_or_else(|| " (reads are GET, commands and changes are POST)".to_string())
        ),
        StatusCode::NOT_FOUND => "no such API endpoint".to_string(),
        _ if !detail.is_empty() => detail,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut r = error(status, &message);
    if let Some(a) = allow {
        r.headers_mut().insert(header::ALLOW, a);
    }
    r
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/info", get(info))
        .route("/api/status", get(status))
        .route("/api/cells", get(cells))
        .route("/api/events", get(events))
        .route("/api/history", get(history))
        .route("/api/stream", get(stream))
        .route("/api/commands/{name}", post(command))
}

async fn info(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "auth_required": s.auth.required(),
        "config": s.config.is_some(),
        "can": s.can.is_some(),
        "history_interval_s": s.history.interval().as_secs(),
        "server_uptime_s": s.started.elapsed().as_secs(),
    }))
}

async fn status(State(s): State<Shared>) -> Response {
    Json(&s.handle.latest().status).into_response()
}

async fn cells(State(s): State<Shared>) -> Response {
    Json(&s.handle.latest().cells).into_response()
}

#[derive(Deserialize)]
struct EventQuery {
    level: Option<String>,
}

async fn events(
    State(s): State<Shared>,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else { return error(StatusCode::BAD_REQUEST, "bad query string") };
    let levels: Option<Vec<String>> = match q.level.as_deref() {
        None | Some("") => None,
        Some(l) => {
            let wanted: Vec<String> = l.split(',').map(|x| x.trim().to_ascii_uppercase()).collect();
            if let Some(bad) = wanted.iter().find(|w| !["INFO", "WARNING", "ERROR"].contains(&w.as_str())) {
                return error(StatusCode::BAD_REQUEST, &format!("unknown level {bad:?}; use INFO, WARNING or ERROR"));
            }
            Some(wanted)
        }
    };
    let snap = s.handle.latest();
    let list: Vec<_> = snap
        .events
        .iter()
        .filter(|e| levels.as_ref().map(|l| l.iter().any(|x| x == e.level)).unwrap_or(true))
        .collect();
    Json(json!({ "time_ms": snap.status.time_ms, "events": list })).into_response()
}

async fn history(State(s): State<Shared>) -> Json<Value> {
    let live = super::history::Sample::now(&s.handle.latest());
    Json(json!({
        "interval_s": s.history.interval().as_secs(),
        "samples": s.history.samples(),
        "live": live,
    }))
}

/// Parses a JSON body into `T`, with messages that say which field was wrong.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text = if body.iter().all(|b| b.is_ascii_whitespace()) { &b"{}"[..] } else { &body[..] };
    serde_json::from_slice(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "invalid JSON",
            _ => "invalid request",
        };
        ApiError::bad(format!("{what}: {e}"))
    })
}

/// Commands without parameters take no body, `{}`, or nothing else.
pub(crate) fn parse_empty(body: &Bytes) -> Result<(), ApiError> {
    let v: Value = parse_body(body)?;
    match v.as_object() {
        Some(o) => match o.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::bad(format!("unknown field `{k}`: this takes no parameters"))),
        },
        None => Err(ApiError::bad("invalid request: expected a JSON object or no body")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    /// A; absent or null = no temporary limit in that direction.
    charge_a: Option<f64>,
    discharge_a: Option<f64>,
    timeout_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SocWindowBody {
    min_pct: f64,
    max_pct: f64,
}

fn amps(what: &str, v: Option<f64>) -> Result<Option<DeciAmps>, String> {
    match v {
        None => Ok(None),
        Some(a) if a.is_finite() && (0.0..=MAX_LIMIT_A).contains(&a) => Ok(Some(DeciAmps((a * 10.0).round() as i32))),
        Some(a) => Err(format!("{what} is {a}, expected 0 to {MAX_LIMIT_A} A")),
    }
}

fn percent(what: &str, v: f64) -> Result<BasisPoints, String> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(BasisPoints((v * 100.0).round() as u16))
    } else {
        Err(format!("{what} is {v}, expected 0 to 100 %"))
    }
}

/// The request a command endpoint stands for, or what was wrong with its body.
fn parse_command(name: &str, body: &Bytes) -> Result<HubRequest, ApiError> {
    let bad = ApiError::bad;
    let simple = |c: Command| parse_empty(body).map(|_| HubRequest::Core(c));
    match name {
        "pause" => simple(Command::Pause),
        "resume" => simple(Command::Resume),
        "stop" => simple(Command::Stop),
        "start" => simple(Command::Start),
        "bmsreset" => simple(Command::BmsReset),
        "clear-limits" => simple(Command::ClearTemporaryLimits),
        "restart" => parse_empty(body).map(|_| HubRequest::Restart),
        "limits" => {
            let b: LimitsBody = parse_body(body)?;
            let charge = amps("charge_a", b.charge_a).map_err(bad)?;
            let discharge = amps("discharge_a", b.discharge_a).map_err(bad)?;
            if charge.is_none() && discharge.is_none() {
                return Err(bad("give charge_a or discharge_a (or both); to remove limits use clear-limits".into()));
            }
            let max = MAX_TEMPORARY_LIMIT_TIMEOUT.as_secs();
            if !(1..=max).contains(&b.timeout_s) {
                return Err(bad(format!("timeout_s is {}, expected 1 to {max}", b.timeout_s)));
            }
            let timeout = dbe_core::Duration::from_secs(b.timeout_s);
            Ok(HubRequest::Core(Command::SetTemporaryLimits { charge, discharge, timeout }))
        }
        "soc-window" => {
            let b: SocWindowBody = parse_body(body)?;
            let min = percent("min_pct", b.min_pct).map_err(bad)?;
            let max = percent("max_pct", b.max_pct).map_err(bad)?;
            if min >= max {
                return Err(bad(format!("min_pct {} must be below max_pct {}", b.min_pct, b.max_pct)));
            }
            Ok(HubRequest::Core(Command::SetSocWindow { min, max }))
        }
        other => Err(ApiError { status: StatusCode::NOT_FOUND, message: format!("unknown command {other:?}") }),
    }
}

async fn command(State(s): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let request = match parse_command(&name, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, s.handle.request(request, "web")).await {
        Ok(Ok(())) => Json(json!({ "ok": true, "command": request.name() })).into_response(),
        Ok(Err(why)) => error(request_status(&why), &why.to_string()),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "the bridge did not answer in time"),
    }
}

/// The HTTP status of a request the bridge did not carry out: a refusal is a conflict with the bridge's state
/// (409); a busy or stopped bridge is a temporary failure to try again (503).
fn request_status(e: &RequestError) -> StatusCode {
    match e {
        RequestError::Refused(_) => StatusCode::CONFLICT,
        RequestError::Busy | RequestError::Gone => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Snapshots (at most every 250 ms, latest wins) and every new event occurrence, as SSE events `snapshot`,
/// `event` and `lagged`.
async fn stream(State(s): State<Shared>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    let mut snap = s.handle.snapshot.clone();
    let mut events = s.handle.events.subscribe();
    tokio::spawn(async move {
        let mut next_snapshot = tokio::time::Instant::now();
        let mut dirty = true;
        loop {
            if dirty && tokio::time::Instant::now() >= next_snapshot {
                let latest = snap.borrow_and_update().clone();
                let Ok(ev) = Event::default().event("snapshot").json_data(&*latest) else { break };
                if tx.send(Ok(ev)).await.is_err() {
                    break;
                }
                dirty = false;
                next_snapshot = tokio::time::Instant::now() + STREAM_MIN_INTERVAL;
            }
            tokio::select! {
                _ = tx.closed() => break,
                _ = tokio::time::sleep_until(next_snapshot), if dirty => {}
                changed = snap.changed(), if !dirty => {
                    if changed.is_err() { break; }
                    dirty = true;
                }
                ev = events.recv() => {
                    let ev = match ev {
                        Ok(m) => Event::default().event("event").json_data(&m).ok(),
                        Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::default().event("lagged").data(n.to_string())),
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if let Some(ev) = ev {
                        if tx.send(Ok(ev)).await.is_err() { break; }
                    }
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()).into_response()
}

/// Keeps the response type simple for handlers that stream a body.
pub(crate) fn text(content_type: &'static str, body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}
