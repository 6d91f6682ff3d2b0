//! The dashboard's HTTP surface against a fake bridge loop: the test holds the loop end of a `hub::hub()`, publishes
//! hand-made snapshots and answers (and records) the requests the server sends.
//!
//! Requests go over real TCP with a minimal HTTP/1.1 client, so headers (Origin, cookies) are exactly what a
//! browser or script would send.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbe_core::battery::Unsupported;
use dbe_core::command::Command;
use dbe_core::units::{BasisPoints, DeciAmps};
use dbe_core::CanFrame;
use dbe_services::hub::{self, Request, Snapshot};
use dbe_services::status::EventStatus;
use dbe_services::web::{self, ConfigStore, Extras, FieldError, FrameRecord, TapDirection, WebConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

const DEADLINE: Duration = Duration::from_secs(10);

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.body)).to_string()
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        raw = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One request on a fresh connection, with `Host` set to the server's address unless `headers` names one.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let mut s = tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect timeout").unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw)).await.expect("response timeout").unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Resp { status, headers, body }
}

struct Fake {
    addr: SocketAddr,
    origin: String,
    requests: Arc<Mutex<Vec<Request>>>,
    snapshot: tokio::sync::watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<hub::EventMessage>,
    frames: broadcast::Sender<FrameRecord>,
}

impl Fake {
    async fn get(&self, path: &str) -> Resp {
        http(self.addr, "GET", path, &[], None).await
    }
    async fn post(&self, path: &str, body: &str) -> Resp {
        http(self.addr, "POST", path, &[("Origin", &self.origin), ("Content-Type", "application/json")], Some(body))
            .await
    }
    fn recorded(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn snapshot(voltage: f64, paused: bool) -> Snapshot {
    let mut s = Snapshot::default();
    s.status.time_ms = 120_000;
    s.status.battery.kind = "TEST_PACK";
    s.status.battery.voltage_v = Some(voltage);
    s.status.battery.soc_real_pct = Some(61.5);
    s.status.battery.power_w = Some(-1200);
    s.status.reported.soc_pct = Some(63.0);
    s.status.limits.charge_current_a = 40.0;
    s.status.limits.charge_limited_by = "bms";
    s.status.limits.discharge_limited_by = "temperature";
    s.status.paused = paused;
    s.cells.voltages_mv = (0..96).map(|i| 3700 + i as u16).collect();
    s.cells.balancing = (0..96).map(|i| i == 5).collect();
    s.events = vec![
        EventStatus {
            event_type: "CAN_INVERTER_MISSING",
            level: "WARNING",
            message: "The inverter has not polled within its timeout.",
            count: 2,
            active: false,
            data: 0,
            first_ms: Some(1000),
            last_ms: Some(5000),
        },
        EventStatus {
            event_type: "BATTERY_OVERVOLTAGE",
            level: "ERROR",
            message: "Pack voltage \"high\"",
            count: 1,
            active: true,
            data: 4100,
            first_ms: Some(2000),
            last_ms: Some(2000),
        },
    ];
    s
}

struct MemConfig(Mutex<Value>);

impl ConfigStore for MemConfig {
    fn get(&self) -> Value {
        self.0.lock().unwrap().clone()
    }
    fn schema(&self) -> Value {
        json!([{"key": "limits.max_charge_a", "type": "number", "min": 0, "max": 200},
               {"key": "mqtt.host", "type": "string"}])
    }
    fn update(&self, v: Value) -> Result<(), Vec<FieldError>> {
        let mut errors = vec![];
        for (k, val) in v.as_object().unwrap() {
            let ok = match k.as_str() {
                "limits.max_charge_a" => val.as_f64().is_some_and(|x| (0.0..=200.0).contains(&x)),
                "mqtt.host" => val.is_string(),
                _ => false,
            };
            if !ok {
                errors.push(FieldError { key: k.clone(), message: format!("bad value {val}") });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut cur = self.0.lock().unwrap();
        for (k, val) in v.as_object().unwrap() {
            cur[k] = val.clone();
        }
        Ok(())
    }
}

async fn start(password: Option<&str>, bind: &str) -> Fake {
    let (mut end, handle) = hub::hub();
    end.snapshot.send_replace(Arc::new(snapshot(398.4, false)));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let rec = requests.clone();
    let snap_tx = end.snapshot.clone();
    let events = end.events.clone();
    // The bridge loop's end: records every request, answers Pause by publishing a paused snapshot, and refuses
    // BmsReset the way a pack without reset support would.
    tokio::spawn(async move {
        while let Some(env) = end.requests.recv().await {
            rec.lock().unwrap().push(env.request);
            let answer = match env.request {
                Request::Core(Command::Pause) => {
                    end.snapshot.send_replace(Arc::new(snapshot(398.4, true)));
                    Ok(())
                }
                Request::Core(Command::BmsReset) => {
                    Err(Unsupported { battery: "this pack", what: "a BMS reset" }.into())
                }
                _ => Ok(()),
            };
            let _ = env.reply.send(answer);
        }
    });
    let (frames, _) = broadcast::channel(64);
    let config = WebConfig {
        bind: bind.parse().unwrap(),
        password_hash: password.map(web::hash_password),
        history_interval: Duration::from_secs(1),
        ..WebConfig::default()
    };
    let store: Arc<dyn ConfigStore> =
        Arc::new(MemConfig(Mutex::new(json!({"limits.max_charge_a": 50.0, "mqtt.host": ""}))));
    let extras = Extras { config: Some(store), frames: Some(frames.clone()) };
    let running = web::serve(config, handle, extras).await.unwrap();
    let addr = running.local_addr;
    Fake { addr, origin: format!("http://{addr}"), requests, snapshot: snap_tx, events, frames }
}

/// A bridge loop that is not running (stopping, or restarting after a settings change) is a temporary failure:
/// 503 and a sentence saying to try again, not a refusal (409) nor a timeout (504).
#[tokio::test]
async fn commands_to_a_bridge_that_is_not_running_are_503() {
    let (end, handle) = hub::hub();
    drop(end);
    let config = WebConfig { bind: "127.0.0.1:0".parse().unwrap(), ..WebConfig::default() };
    let running = web::serve(config, handle, Extras::default()).await.unwrap();
    let addr = running.local_addr;
    let origin = format!("http://{addr}");
    let headers = [("Origin", origin.as_str()), ("Content-Type", "application/json")];
    let r = http(addr, "POST", "/api/commands/pause", &headers, Some("{}")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let why = r.error();
    assert!(why.contains("not running") && why.contains("try again"), "{why}");
}

#[tokio::test]
async fn status_cells_events_and_history() {
    let f = start(None, "127.0.0.1:0").await;
    let r = f.get("/api/status").await;
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["battery"]["voltage_v"], 398.4);
    assert_eq!(s["limits"]["discharge_limited_by"], "temperature");
    assert!(s["battery"].get("soh_pct").is_none(), "unknown values are left out");

    let c = f.get("/api/cells").await.json();
    assert_eq!(c["voltages_mv"].as_array().unwrap().len(), 96);
    assert_eq!(c["balancing"][5], true);

    let e = f.get("/api/events").await.json();
    assert_eq!(e["events"].as_array().unwrap().len(), 2);
    let e = f.get("/api/events?level=error").await.json();
    assert_eq!(e["events"].as_array().unwrap().len(), 1);
    assert_eq!(e["events"][0]["event_type"], "BATTERY_OVERVOLTAGE");
    let bad = f.get("/api/events?level=LOUD").await;
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("LOUD"));

    // The sampler takes one sample per second: wait for one with a deadline.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let h = f.get("/api/history").await.json();
        assert_eq!(h["live"]["voltage_v"], 398.4);
        if !h["samples"].as_array().unwrap().is_empty() {
            assert_eq!(h["samples"][0]["soc_pct"], 63.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no history sample");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = f.get("/api/info").await.json();
    assert_eq!(info["auth_required"], false);
    assert_eq!(info["config"], true);
}

#[tokio::test]
async fn pages_and_assets_are_served_with_security_headers() {
    let f = start(None, "127.0.0.1:0").await;
    for p in ["/", "/cells", "/pack", "/events", "/controls", "/can", "/settings"] {
        let r = f.get(p).await;
        assert_eq!(r.status, 200, "{p}");
        assert!(r.body.contains("/assets/app.js"));
        assert!(r.header("content-security-policy").unwrap().contains("script-src 'self'"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
    }
    assert!(f.get("/assets/app.js").await.header("content-type").unwrap().contains("javascript"));
    assert!(f.get("/assets/app.css").await.body.contains(".card"));
    let r = f.get("/nope").await;
    assert_eq!(r.status, 404);
    let r = f.get("/api/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no such API endpoint"));
}

#[tokio::test]
async fn every_command_reaches_the_loop() {
    let f = start(None, "127.0.0.1:0").await;
    for name in ["pause", "resume", "stop", "start", "restart", "clear-limits"] {
        let r = f.post(&format!("/api/commands/{name}"), "").await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json()["ok"], true);
    }
    let r = f.post("/api/commands/limits", r#"{"charge_a": 12.5, "timeout_s": 600}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = f.post("/api/commands/soc-window", r#"{"min_pct": 10, "max_pct": 90.5}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        f.recorded(),
        vec![
            Request::Core(Command::Pause),
            Request::Core(Command::Resume),
            Request::Core(Command::Stop),
            Request::Core(Command::Start),
            Request::Restart,
            Request::Core(Command::ClearTemporaryLimits),
            Request::Core(Command::SetTemporaryLimits {
                charge: Some(DeciAmps(125)),
                discharge: None,
                timeout: dbe_core::Duration::from_secs(600)
            }),
            Request::Core(Command::SetSocWindow { min: BasisPoints(1000), max: BasisPoints(9050) }),
        ]
    );
    // The loop's own refusal comes back as 409 with its reason.
    let r = f.post("/api/commands/bmsreset", "{}").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), "this pack does not support a BMS reset");
    // Pause was answered with a paused snapshot, and the API shows it.
    assert_eq!(f.get("/api/status").await.json()["paused"], true);
}

#[tokio::test]
async fn bad_command_input_is_refused_and_changes_nothing() {
    let f = start(None, "127.0.0.1:0").await;
    let cases: &[(&str, &str, &str)] = &[
        ("limits", "{not json", "invalid JSON"),
        ("limits", r#"{"charge_a": "ten", "timeout_s": 60}"#, "invalid type"),
        ("limits", r#"{"charge_a": -1, "timeout_s": 60}"#, "charge_a is -1"),
        ("limits", r#"{"discharge_a": 20000, "timeout_s": 60}"#, "discharge_a is 20000"),
        ("limits", r#"{"charge_a": 10, "timeout_s": 0}"#, "timeout_s is 0"),
        ("limits", r#"{"charge_a": 10, "timeout_s": 90000}"#, "timeout_s is 90000"),
        ("limits", r#"{"charge_a": 10}"#, "missing field `timeout_s`"),
        ("limits", r#"{"timeout_s": 10}"#, "give charge_a or discharge_a"),
        ("limits", r#"{"charge_a": 1, "timeout_s": 10, "extra": 1}"#, "unknown field `extra`"),
        ("soc-window", r#"{"min_pct": 80, "max_pct": 20}"#, "must be below"),
        ("soc-window", r#"{"min_pct": 10, "max_pct": 101}"#, "max_pct is 101"),
        ("pause", r#"{"now": true}"#, "unknown field `now`"),
        ("pause", "[]", "invalid"),
    ];
    for (name, body, want) in cases {
        let r = f.post(&format!("/api/commands/{name}"), body).await;
        assert_eq!(r.status, 400, "{name} {body}: {}", r.body);
        assert!(r.error().contains(want), "{name} {body}: {} does not say {want:?}", r.error());
    }
    let r = f.post("/api/commands/explode", "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("explode"));
    let r = f.get("/api/commands/pause").await;
    assert_eq!(r.status, 405);
    assert!(r.error().contains("POST"), "{}", r.error());
    assert!(f.recorded().is_empty(), "nothing reached the bridge: {:?}", f.recorded());
}

#[tokio::test]
async fn posts_without_a_matching_origin_are_refused() {
    let f = start(None, "127.0.0.1:0").await;
    let no_origin = http(f.addr, "POST", "/api/commands/pause", &[], Some("{}")).await;
    assert_eq!(no_origin.status, 403);
    assert!(no_origin.error().contains("Origin"));
    let evil = http(f.addr, "POST", "/api/commands/pause", &[("Origin", "http://evil.example")], Some("{}")).await;
    assert_eq!(evil.status, 403);
    let fetch_meta = http(
        f.addr,
        "POST",
        "/api/commands/pause",
        &[("Origin", &f.origin), ("Sec-Fetch-Site", "cross-site")],
        Some("{}"),
    )
    .await;
    assert_eq!(fetch_meta.status, 403);
    // A DNS-rebinding page reaches us under its own name: a loopback server without password refuses it.
    let rebinding = http(f.addr, "GET", "/api/status", &[("Host", "evil.example:80")], None).await;
    assert_eq!(rebinding.status, 403, "{}", rebinding.body);
    assert!(f.recorded().is_empty());
}

#[tokio::test]
async fn config_get_update_and_field_errors() {
    let f = start(None, "127.0.0.1:0").await;
    let c = f.get("/api/config").await.json();
    assert_eq!(c["values"]["limits.max_charge_a"], 50.0);
    assert_eq!(c["schema"][0]["key"], "limits.max_charge_a");
    let r = f.post("/api/config", r#"{"limits.max_charge_a": 500, "mqtt.host": "broker"}"#).await;
    assert_eq!(r.status, 422);
    let j = r.json();
    assert_eq!(j["fields"][0]["key"], "limits.max_charge_a");
    assert_eq!(f.get("/api/config").await.json()["values"]["mqtt.host"], "", "nothing saved on error");
    let r = f.post("/api/config", "[1,2]").await;
    assert_eq!(r.status, 400);
    let r = f.post("/api/config", "{").await;
    assert_eq!(r.status, 400);
    let r = f.post("/api/config", r#"{"limits.max_charge_a": 80}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(f.get("/api/config").await.json()["values"]["limits.max_charge_a"], 80);
}

#[tokio::test]
async fn metrics_are_valid_exposition_text() {
    let f = start(None, "127.0.0.1:0").await;
    f.frames
        .send(FrameRecord {
            port: "can0",
            time_ms: 1,
            frame: CanFrame::standard(0x1DB, &[1]).unwrap(),
            direction: TapDirection::Rx,
        })
        .ok();
    let r = f.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.body;
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap();
            assert!(matches!(it.next(), Some("gauge" | "counter")), "{line}");
            assert!(typed.insert(name.to_string()), "TYPE repeated: {line}");
        } else if line.starts_with("# HELP ") {
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
            value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}"));
            if name.ends_with("_total") {
                assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
            }
        }
    }
    assert!(text.contains("dbe_voltage_volts 398.4\n"));
    assert!(text.contains("dbe_soc_percent{kind=\"reported\"} 63\n"));
    assert!(text.contains("dbe_cell_voltage_volts{cell=\"96\"} 3.795\n"));
    assert!(text.contains("dbe_limit_reason{direction=\"discharge\",reason=\"temperature\"} 1\n"));
    assert!(text.contains("dbe_events_total{event=\"BATTERY_OVERVOLTAGE\",level=\"ERROR\"} 1\n"));
    assert!(text.contains("dbe_can_frames_total{port=\"battery\",direction=\"rx\"} 0\n"));
}

/// Reads an SSE response until `want` appears in it (or the deadline passes).
async fn sse_until(addr: SocketAddr, path: &str, want: &[&str], trigger: impl FnOnce()) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 8192];
    let mut trigger = Some(trigger);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !want.iter().all(|w| got.contains(w)) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("SSE did not show {want:?}; got {got}"))
            .unwrap();
        assert!(n > 0, "stream closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        // Once the headers are in, the server has subscribed: now the test may make things happen.
        if got.contains("\r\n\r\n") {
            if let Some(t) = trigger.take() {
                t();
            }
        }
    }
    got
}

#[tokio::test]
async fn stream_sends_snapshots_and_events() {
    let f = start(None, "127.0.0.1:0").await;
    let snap = f.snapshot.clone();
    let events = f.events.clone();
    let got =
        sse_until(f.addr, "/api/stream", &["event: snapshot", "401.2", "event: event", "PAUSE_BEGIN"], move || {
            snap.send_replace(Arc::new(snapshot(401.2, false)));
            events
                .send(hub::EventMessage {
                    event_type: "PAUSE_BEGIN",
                    severity: "INFO",
                    count: 1,
                    data: 0,
                    message: "paused",
                    millis: 5,
                })
                .ok();
        })
        .await;
    assert!(got.contains("text/event-stream"));
}

#[tokio::test]
async fn can_stream_filter_and_recording() {
    let f = start(None, "127.0.0.1:0").await;
    let bad = f.get("/api/can/stream?id=XYZ").await;
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("XYZ"));
    assert_eq!(f.post("/api/can/recording/stop", "").await.status, 409);
    let r = f.post("/api/can/recording/start", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(f.post("/api/can/recording/start", "").await.status, 409);
    let frames = f.frames.clone();
    let got = sse_until(
        f.addr,
        "/api/can/stream?port=can0&id=1DB",
        &["event: frames", "\"id\":475", "\"direction\":\"T\""],
        move || {
            for (id, direction) in [(0x55B, TapDirection::Rx), (0x1DB, TapDirection::Tx)] {
                frames
                    .send(FrameRecord {
                        port: "can0",
                        time_ms: 1_700_000_000_250,
                        frame: CanFrame::standard(id, &[0xAB, 1]).unwrap(),
                        direction,
                    })
                    .ok();
            }
        },
    )
    .await;
    assert!(!got.contains("\"id\":1371"), "filtered out: {got}");
    // The recorder saw both frames; wait for it with a deadline, then stop and download.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while f.get("/api/can/recording").await.json()["frames"] != 2 {
        assert!(tokio::time::Instant::now() < deadline, "recorder did not see the frames");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.post("/api/can/recording/stop", "{}").await.status, 200);
    let log = f.get("/api/can/recording.log").await;
    assert_eq!(log.status, 200);
    assert!(log.header("content-disposition").unwrap().contains("attachment"));
    assert_eq!(log.body, "(1700000000.250000) can0 55B#AB01 R\n(1700000000.250000) can0 1DB#AB01 T\n");
    let ports = f.get("/api/can/ports").await.json();
    assert_eq!(ports["ports"][0], "can0");
}

#[tokio::test]
async fn no_password_refused_off_loopback() {
    let config = WebConfig { bind: "0.0.0.0:0".parse().unwrap(), ..WebConfig::default() };
    assert!(matches!(config.validate(), Err(web::WebError::PasswordRequired { .. })));
    let (_end, handle) = hub::hub();
    assert!(web::serve(config, handle, Extras::default()).await.is_err());
    let config = WebConfig { password_hash: Some("plaintext".into()), ..WebConfig::default() };
    assert!(matches!(config.validate(), Err(web::WebError::BadPasswordHash(_))));
    assert!(WebConfig::default().validate().is_ok());
}

fn form_login(f: &Fake, password: &str) -> impl std::future::Future<Output = Resp> {
    let body = format!("password={}", password.replace(' ', "+"));
    let origin = f.origin.clone();
    let addr = f.addr;
    async move {
        http(
            addr,
            "POST",
            "/login",
            &[("Origin", &origin), ("Content-Type", "application/x-www-form-urlencoded")],
            Some(&body),
        )
        .await
    }
}

#[tokio::test]
async fn password_login_session_and_rate_limit() {
    let f = start(Some("hunter two"), "127.0.0.2:0").await;
    // Everything but the login page needs a session.
    let r = f.get("/api/status").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "login required");
    assert_eq!(f.post("/api/commands/pause", "{}").await.status, 401);
    assert_eq!(f.get("/metrics").await.status, 401);
    let page = f.get("/controls").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    assert_eq!(f.get("/login").await.status, 200);

    let wrong = form_login(&f, "hunter three").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong password"));
    assert!(wrong.header("set-cookie").is_none());

    let ok = form_login(&f, "hunter two").await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let cookie = ok.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = http(f.addr, "GET", "/api/status", &[("Cookie", &pair)], None).await;
    assert_eq!(r.status, 200);
    let r = http(f.addr, "POST", "/api/commands/pause", &[("Cookie", &pair), ("Origin", &f.origin)], Some("")).await;
    assert_eq!(r.status, 200);
    // The cookie alone does not make a cross-site POST acceptable.
    let r = http(f.addr, "POST", "/api/commands/resume", &[("Cookie", &pair)], Some("")).await;
    assert_eq!(r.status, 403);
    let r = http(f.addr, "GET", "/api/status", &[("Cookie", "dbe_session=forged")], None).await;
    assert_eq!(r.status, 401);
    // HTTP Basic for scripts and Prometheus.
    let basic = "Basic Omh1bnRlciB0d28="; // ":hunter two"
    assert_eq!(http(f.addr, "GET", "/metrics", &[("Authorization", basic)], None).await.status, 200);

    // Logout ends the session.
    let out = http(f.addr, "POST", "/logout", &[("Cookie", &pair), ("Origin", &f.origin)], Some("")).await;
    assert_eq!(out.status, 303);
    assert_eq!(http(f.addr, "GET", "/api/status", &[("Cookie", &pair)], None).await.status, 401);

    // One wrong password above; four more reach the limit, then even the right one is refused for a while.
    for _ in 0..4 {
        assert_eq!(form_login(&f, "guess").await.status, 401);
    }
    let limited = form_login(&f, "hunter two").await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.header("retry-after").is_some());
    assert!(limited.header("set-cookie").is_none());
    let limited = http(f.addr, "GET", "/api/status", &[("Authorization", basic)], None).await;
    assert_eq!(limited.status, 429);
    assert!(limited.error().contains("too many wrong passwords"));
    assert_eq!(f.recorded(), vec![Request::Core(Command::Pause)]);
}

#[tokio::test]
async fn hash_password_verifies() {
    let h = web::hash_password("pw");
    assert!(web::verify_password("pw", &h));
    assert!(!web::verify_password("pW", &h));
}
