//! The CAN page's data: a live, filtered view of the frames DBE receives and sends on its ports, per-port
//! counters, and a recording that downloads as a candump log (`(seconds.micros) port ID#DATA R|T`, which
//! `canplayer`, python-can, SavvyCAN and `dbe replay` read). Every frame says its direction as python-can's
//! candump format does: `R` received by DBE, `T` sent by DBE (accepted by the port for sending).
//!
//! Frames arrive on a broadcast channel: a slow browser or the recorder falls behind and loses frames (counted),
//! it never slows the sender.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dbe_core::CanFrame;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::api::{error, parse_empty};
use super::history::wall_ms;
use super::Shared;

/// Whether DBE received or sent a frame; `R` and `T` in JSON and in the log, as python-can and `candump -x` write.
#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum TapDirection {
    /// Received from the bus.
    #[serde(rename = "R")]
    Rx,
    /// Sent by DBE.
    #[serde(rename = "T")]
    Tx,
}

/// One CAN frame as DBE received or sent it. Plain data, sent by value: the tap allocates nothing per frame (the
/// port is one of a few fixed names, the frame carries its bytes inline).
///
/// In JSON: `{"port","time_ms","id","extended","data":[bytes],"direction":"R"|"T"}`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// The port's name (`battery`, `inverter`, `bus` for one shared by both, or an interface name like `can0`).
    pub port: &'static str,
    /// When the frame was seen, in ms since the Unix epoch.
    pub time_ms: u64,
    pub frame: CanFrame,
    pub direction: TapDirection,
}

impl Serialize for FrameRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("FrameRecord", 6)?;
        st.serialize_field("port", self.port)?;
        st.serialize_field("time_ms", &self.time_ms)?;
        st.serialize_field("id", &self.frame.raw_id())?;
        st.serialize_field("extended", &self.frame.is_extended())?;
        st.serialize_field("data", self.frame.data())?;
        st.serialize_field("direction", &self.direction)?;
        st.end()
    }
}

impl FrameRecord {
    /// One candump log line, without the newline.
    pub fn candump_line(&self) -> String {
        let mut s = String::new();
        self.push_candump_line(&mut s);
        s
    }

    /// Appends [`candump_line`](Self::candump_line) to `out` (the recording grows one buffer).
    pub fn push_candump_line(&self, out: &mut String) {
        let _ = write!(out, "({}.{:06}) {} ", self.time_ms / 1000, (self.time_ms % 1000) * 1000, self.port);
        let id = self.frame.raw_id();
        if self.frame.is_extended() {
            let _ = write!(out, "{id:08X}#");
        } else {
            let _ = write!(out, "{id:03X}#");
        }
        for b in self.frame.data() {
            let _ = write!(out, "{b:02X}");
        }
        out.push_str(match self.direction {
            TapDirection::Rx => " R",
            TapDirection::Tx => " T",
        });
    }
}

/// A recording stops by itself at this many frames, so a forgotten one cannot eat the machine's memory.
const MAX_RECORDED_FRAMES: u64 = 500_000;
/// Batching interval of the live view: one SSE event per batch instead of one per frame.
const BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Most frames sent to a browser per batch; the rest are counted as skipped (the page is for looking, the
/// recording is for keeping).
const MAX_BATCH: usize = 200;

#[derive(Default)]
struct Recording {
    active: bool,
    started_ms: Option<u64>,
    stopped_ms: Option<u64>,
    frames: u64,
    lost: u64,
    log: String,
    task: Option<JoinHandle<()>>,
}

pub(crate) struct Can {
    frames: broadcast::Sender<FrameRecord>,
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    recording: Arc<Mutex<Recording>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Can {
    pub fn new(frames: broadcast::Sender<FrameRecord>) -> Can {
        Can { frames, counts: Arc::default(), recording: Arc::default() }
    }

    pub fn counts(&self) -> Vec<(String, u64)> {
        lock(&self.counts).iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    pub fn spawn_counter(&self) -> JoinHandle<()> {
        let mut rx = self.frames.subscribe();
        let counts = self.counts.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(f) => *lock(&counts).entry(f.port).or_default() += 1,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }

    fn start_recording(&self) -> bool {
        let mut r = lock(&self.recording);
        if r.active {
            return false;
        }
        *r = Recording { active: true, started_ms: Some(wall_ms()), ..Recording::default() };
        let mut rx = self.frames.subscribe();
        let rec = self.recording.clone();
        r.task = Some(tokio::spawn(async move {
            loop {
                let f = rx.recv().await;
                let mut r = lock(&rec);
                match f {
                    Ok(f) => {
                        f.push_candump_line(&mut r.log);
                        r.log.push('\n');
                        r.frames += 1;
                        if r.frames >= MAX_RECORDED_FRAMES {
                            r.active = false;
                            r.stopped_ms = Some(wall_ms());
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => r.lost += n,
                    Err(broadcast::error::RecvError::Closed) => {
                        r.active = false;
                        break;
                    }
                }
            }
        }));
        true
    }

    fn stop_recording(&self) -> bool {
        let mut r = lock(&self.recording);
        if !r.active {
            return false;
        }
        if let Some(t) = r.task.take() {
            t.abort();
        }
        r.active = false;
        r.stopped_ms = Some(wall_ms());
        true
    }

    fn recording_status(&self) -> serde_json::Value {
        let r = lock(&self.recording);
        json!({
            "recording": r.active,
            "started_ms": r.started_ms,
            "stopped_ms": r.stopped_ms,
            "frames": r.frames,
            "lost": r.lost,
            "max_frames": MAX_RECORDED_FRAMES,
        })
    }
}

fn no_source() -> Response {
    error(StatusCode::NOT_FOUND, "no CAN frame source is connected to the dashboard")
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/can/ports", get(ports))
        .route("/api/can/stream", get(stream))
        .route("/api/can/recording", get(recording))
        .route("/api/can/recording/start", post(start))
        .route("/api/can/recording/stop", post(stop))
        .route("/api/can/recording.log", get(download))
}

async fn ports(State(s): State<Shared>) -> Response {
    let Some(can) = &s.can else { return no_source() };
    let counts: BTreeMap<String, u64> = can.counts().into_iter().collect();
    Json(json!({ "ports": counts.keys().collect::<Vec<_>>(), "frames": counts })).into_response()
}

#[derive(Deserialize)]
struct StreamQuery {
    port: Option<String>,
    /// Comma-separated hex ids (`1DB,0x55B`); empty = all.
    id: Option<String>,
}

/// Parses the `id` filter; an id the user typed wrong is reported, not silently ignored.
pub(crate) fn parse_ids(s: &str) -> Result<HashSet<u32>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            let hex = x.strip_prefix("0x").or_else(|| x.strip_prefix("0X")).unwrap_or(x);
            match u32::from_str_radix(hex, 16) {
                Ok(v) if v <= 0x1FFF_FFFF => Ok(v),
                _ => Err(format!("{x:?} is not a CAN id (hex, up to 1FFFFFFF)")),
            }
        })
        .collect()
}

async fn stream(
    State(s): State<Shared>,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(can) = &s.can else { return no_source() };
    let Ok(Query(q)) = q else { return error(StatusCode::BAD_REQUEST, "bad query string") };
    let ids = match parse_ids(q.id.as_deref().unwrap_or("")) {
        Ok(ids) => ids,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let port = q.port.filter(|p| !p.is_empty());
    let mut rx = can.frames.subscribe();
    let (tx, out) = mpsc::channel::<Result<Event, Infallible>>(4);
    tokio::spawn(async move {
        let mut batch: Vec<FrameRecord> = Vec::with_capacity(MAX_BATCH);
        let mut skipped = 0u64;
        let mut tick = tokio::time::interval(BATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                f = rx.recv() => match f {
                    Ok(f) => {
                        if port.as_ref().map(|p| *p == f.port).unwrap_or(true) && (ids.is_empty() || ids.contains(&f.frame.raw_id())) {
                            if batch.len() < MAX_BATCH { batch.push(f) } else { skipped += 1 }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => skipped += n,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    if batch.is_empty() && skipped == 0 { continue; }
                    // Serialised straight from the batch (no JSON tree per frame); the batch's buffer is kept.
                    let ev = Event::default().event("frames").json_data(FramesEvent { frames: &batch, skipped });
                    batch.clear();
                    skipped = 0;
                    let Ok(ev) = ev else { break };
                    if tx.send(Ok(ev)).await.is_err() { break; }
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(out)).keep_alive(KeepAlive::default()).into_response()
}

/// One `frames` event of the live view.
#[derive(Serialize)]
struct FramesEvent<'a> {
    frames: &'a [FrameRecord],
    skipped: u64,
}

async fn recording(State(s): State<Shared>) -> Response {
    let Some(can) = &s.can else { return no_source() };
    Json(can.recording_status()).into_response()
}

async fn start(State(s): State<Shared>, body: Bytes) -> Response {
    let Some(can) = &s.can else { return no_source() };
    if let Err(r) = parse_empty(&body) {
        return r.into_response();
    }
    if !can.start_recording() {
        return error(StatusCode::CONFLICT, "a recording is already running");
    }
    Json(can.recording_status()).into_response()
}

async fn stop(State(s): State<Shared>, body: Bytes) -> Response {
    let Some(can) = &s.can else { return no_source() };
    if let Err(r) = parse_empty(&body) {
        return r.into_response();
    }
    if !can.stop_recording() {
        return error(StatusCode::CONFLICT, "no recording is running");
    }
    Json(can.recording_status()).into_response()
}

async fn download(State(s): State<Shared>) -> Response {
    let Some(can) = &s.can else { return no_source() };
    let (log, started) = {
        let r = lock(&can.recording);
        (r.log.clone(), r.started_ms)
    };
    let Some(started) = started else { return error(StatusCode::NOT_FOUND, "nothing has been recorded yet") };
    let name = format!("attachment; filename=\"dbe-{}.log\"", started / 1000);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, name)], log)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candump_lines() {
        let f = FrameRecord {
            port: "can0",
            time_ms: 1_700_000_000_123,
            frame: CanFrame::standard(0x1DB, &[0x01, 0xAB]).unwrap(),
            direction: TapDirection::Rx,
        };
        assert_eq!(f.candump_line(), "(1700000000.123000) can0 1DB#01AB R");
        assert_eq!(
            serde_json::to_value(f).unwrap(),
            json!({"port": "can0", "time_ms": 1_700_000_000_123u64, "id": 0x1DB, "extended": false,
                   "data": [1, 0xAB], "direction": "R"}),
            "the view's JSON keeps its shape"
        );
        let f = FrameRecord {
            port: "inverter",
            time_ms: 5,
            frame: CanFrame::extended(0x18FF50E5, &[]).unwrap(),
            direction: TapDirection::Tx,
        };
        assert_eq!(f.candump_line(), "(0.005000) inverter 18FF50E5# T");
        let json = serde_json::to_value(f).unwrap();
        assert_eq!(json["direction"], "T", "the view marks direction as the log does");
        assert_eq!(json["extended"], true);
        assert_eq!(json["data"], json!([]));
    }

    #[test]
    fn id_filters() {
        assert_eq!(parse_ids("1db, 0x55B,").unwrap(), [0x1DB, 0x55B].into_iter().collect());
        assert!(parse_ids("xyz").is_err());
        assert!(parse_ids("20000000").is_err());
    }
}
