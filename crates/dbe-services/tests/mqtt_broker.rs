//! The MQTT client against a real `mosquitto`, checked with `mosquitto_sub`/`mosquitto_pub`; the test plays the
//! bridge loop on the hub.

mod mqtt_common;

use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use dbe_core::battery::nissan_leaf;
use dbe_core::command::{Command, CommandError};
use dbe_core::model::{BatteryModel, NumberId};
use dbe_core::units::{BasisPoints, DeciAmps};
use dbe_services::hub::{EventMessage, Request, Snapshot};
use dbe_services::mqtt::discovery::SENSORS;
use dbe_services::mqtt::{run, CommandName, MqttConfig, TlsConfig};
use dbe_services::status::{BatteryStatus, CellsStatus};
use mqtt_common::*;
use serde_json::json;

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        enabled: true,
        host: "127.0.0.1".into(),
        port,
        publish_interval_ms: 100,
        publish_cell_voltages: true,
        web_url: Some("http://127.0.0.1:8080".into()),
        ..MqttConfig::default()
    }
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    // The LEAF's real table: only GIDs are known, so only they are sent; every value gets a sensor.
    let mut pack = BatteryModel::new(nissan_leaf::DESIGN).with_extras(nissan_leaf::EXTRAS);
    pack.extras.set_number(dbe_core::Instant::ZERO, NumberId::of(nissan_leaf::EXTRAS, "gids"), 201);
    let known = BatteryStatus::of("nissan-leaf", &pack);
    s.status.battery = BatteryStatus {
        kind: "NISSAN_LEAF",
        voltage_v: Some(370.5),
        current_a: Some(10.0),
        power_w: Some(3705),
        soc_real_pct: Some(50.5),
        soh_pct: Some(88.0),
        temperature_min_c: Some(12.5),
        temperature_max_c: Some(14.0),
        cell_min_mv: Some(3850),
        cell_max_mv: Some(3865),
        cell_delta_mv: Some(15),
        cell_count: 4,
        balancing_cells: 1,
        total_energy_wh: Some(24_000),
        remaining_energy_wh: Some(12_120),
        bms_max_charge_power_w: Some(5000),
        bms_max_discharge_power_w: Some(9000),
        bms_status: "ACTIVE",
        extras: known.extras,
        extra_table: known.extra_table,
        ..BatteryStatus::default()
    };
    s.status.reported.soc_pct = Some(55.0);
    s.status.reported.remaining_energy_wh = Some(11_000);
    s.status.limits.charge_limited_by = "user";
    s.status.event_level = "INFO";
    s.status.time_ms = 42_000;
    s.cells = CellsStatus {
        voltages_mv: vec![3850, 3860, 3865, 3855],
        balancing: vec![false, false, true, false],
        ..CellsStatus::default()
    };
    s
}

fn event(kind: &'static str, count: u32, millis: u64) -> EventMessage {
    EventMessage { event_type: kind, severity: "INFO", count, data: 7, message: "Something happened.", millis }
}

fn is_config(m: &Msg) -> bool {
    m.topic.starts_with("homeassistant/") && m.topic.ends_with("/config")
}

/// Sensors, the LEAF's pack values, the event sensor, the buttons of the default allowed commands (PAUSE, RESUME,
/// STOP) and four cells.
fn config_count() -> usize {
    SENSORS.len() + nissan_leaf::EXTRAS.len() + 1 + 3 + 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_discovery_events_last_will_and_removal() {
    let broker = Broker::start("");
    let port = broker.port;
    let sub = Sub::start(port, &["BE/#", "homeassistant/#"], &[]);
    let (bridge, handle) = fake_bridge(|_| None);
    bridge.loop_end_snapshot.send(Arc::new(snapshot())).unwrap();
    // The node id as `dbe run` makes it (the machine id); discovery adds the one `dbe_` prefix.
    let task = tokio::spawn(run(config(port), handle.clone(), "3d1219c7c4c5".into()));

    sub.wait("online", |m| m.topic == "BE/status" && m.payload == "online").await;
    let info = sub.wait("info", |m| m.topic == "BE/info").await.json();
    let expect = json!({
        "SOC": 55.0, "SOC_real": 50.5, "state_of_health": 88.0, "temperature_min": 12.5, "temperature_max": 14.0,
        "stat_batt_power": 3705, "battery_current": 10.0, "battery_voltage": 370.5, "cell_max_voltage": 3.865,
        "cell_min_voltage": 3.85, "cell_voltage_delta": 15, "total_capacity": 24000, "remaining_capacity": 11000,
        "remaining_capacity_real": 12120, "max_charge_power": 5000, "max_discharge_power": 9000,
        "bms_status": "ACTIVE", "pause_status": "RUNNING", "event_level": "INFO", "emulator_status": "OK",
        "emulator_uptime": 42, "balancing_active_cells": 1, "balancing_status": "Active",
        "charging_state": "Charging", "limiting_factor": "UserSetting",
        "software_version": env!("CARGO_PKG_VERSION"), "gids": 201,
    });
    assert_eq!(info, expect);
    let spec = sub.wait("spec_data", |m| m.topic == "BE/spec_data").await.json();
    assert_eq!(
        spec,
        json!({"cell_voltages": [3.85, 3.86, 3.865, 3.855], "cell_balancing": [false, false, true, false]})
    );
    let bal = sub.wait("balancing_data", |m| m.topic == "BE/balancing_data").await.json();
    assert_eq!(bal, json!({"cell_balancing": [false, false, true, false]}));

    // Discovery: every config retained, parseable, with what Home Assistant requires.
    wait_until_async("all discovery configs", DEADLINE, || (sub.count(is_config) >= config_count()).then_some(()))
        .await;
    let configs: Vec<Msg> = retained(port, "homeassistant/#").into_iter().filter(is_config).collect();
    assert_eq!(configs.len(), config_count(), "{configs:#?}");
    for m in &configs {
        assert!(m.retained);
        let v = m.json();
        let domain = if m.topic.starts_with("homeassistant/button/") { "button" } else { "sensor" };
        assert!(m.topic.starts_with(&format!("homeassistant/{domain}/dbe_3d1219c7c4c5/")), "{}", m.topic);
        let uid = v["unique_id"].as_str().unwrap();
        assert!(uid.starts_with("dbe_3d1219c7c4c5_") && !uid.starts_with("dbe_dbe_"), "{uid}");
        assert_eq!(v["default_entity_id"], format!("{domain}.{uid}"));
        assert!(v.get("object_id").is_none());
        assert_eq!(v["device"]["identifiers"], json!(["dbe_3d1219c7c4c5"]));
        assert_eq!(v["device"]["name"], "DBE", "no device name configured: never the node id");
        for k in ["name", "model", "manufacturer", "sw_version"] {
            assert!(v["device"][k].is_string(), "device.{k} in {}", m.topic);
        }
        assert_eq!(v["device"]["configuration_url"], "http://127.0.0.1:8080");
        assert_eq!(v["availability"][0]["topic"], "BE/status");
        assert_eq!(v["availability"][0]["payload_not_available"], "offline");
        if domain == "button" {
            assert!(v["command_topic"].as_str().unwrap().starts_with("BE/command/"));
        } else {
            assert!(v["state_topic"].is_string() && v["value_template"].is_string());
            assert!(!(v["device_class"] == "energy" && v["state_class"] == "measurement"));
        }
    }
    // Buttons only for the commands allowed by default (the ones that can only make things safer).
    let mut buttons: Vec<&str> =
        configs.iter().filter_map(|m| m.topic.strip_prefix("homeassistant/button/dbe_3d1219c7c4c5/")).collect();
    buttons.sort();
    assert_eq!(buttons, ["PAUSE/config", "RESUME/config", "STOP/config"]);
    let find = |suffix: &str| configs.iter().find(|m| m.topic.ends_with(suffix)).unwrap().json();
    let cap = find("/total_capacity/config");
    assert_eq!(
        (cap["device_class"].clone(), cap["state_class"].clone()),
        (json!("energy_storage"), json!("measurement"))
    );
    assert_eq!(find("/emulator_status/config")["entity_category"], "diagnostic");
    assert_eq!(find("/cell_voltage4/config")["enabled_by_default"], false);
    assert_eq!(find("/SOC/config")["unit_of_measurement"], "%");
    let hx = find("/leaf_hx/config");
    assert_eq!((hx["name"].as_str(), hx["unit_of_measurement"].as_str()), (Some("Hx"), Some("%")));
    assert_eq!(hx["value_template"], "{{ value_json.leaf_hx | default(none) }}", "unknown until sent");

    // Events: one message per occurrence, with the hub's fields.
    bridge.events.send(event("PAUSE_BEGIN", 3, 1234)).unwrap();
    let ev = sub.wait("event", |m| m.topic == "BE/events").await.json();
    assert_eq!(
        ev,
        json!({"event_type": "PAUSE_BEGIN", "severity": "INFO", "count": 3, "data": 7,
               "message": "Something happened.", "millis": 1234})
    );

    // Home Assistant restarts: everything is announced again.
    let mark = sub.len();
    publish(port, "homeassistant/status", "online", &[]);
    wait_until_async("re-announcement", DEADLINE, || {
        (sub.since(mark).iter().filter(|m| is_config(m)).count() >= config_count()).then_some(())
    })
    .await;

    // Killed without a DISCONNECT: the broker publishes the last will.
    task.abort();
    let _ = task.await;
    sub.wait_since("last will", mark, |m| m.topic == "BE/status" && m.payload == "offline").await;
    assert_eq!(retained(port, "BE/status")[0].payload, "offline");

    // Discovery turned off: the entities are removed (empty retained configs).
    let off = MqttConfig { ha_discovery: false, ..config(port) };
    let task = tokio::spawn(run(off, handle, "3d1219c7c4c5".into()));
    let mark = sub.len();
    wait_until_async("removal", DEADLINE, || {
        (sub.since(mark).iter().filter(|m| is_config(m) && m.payload.is_empty()).count() >= config_count())
            .then_some(())
    })
    .await;
    assert_eq!(retained(port, "homeassistant/#").into_iter().filter(is_config).count(), 0);
    task.abort();
}

fn refuse_soc_window(r: &Request) -> Option<CommandError> {
    match r {
        Request::Core(Command::SetSocWindow { .. }) => {
            Some(CommandError::OutOfRange { what: "SOC window min", value: 100, min: 500, max: 2000 })
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_become_requests_and_bad_ones_are_answered() {
    let broker = Broker::start("");
    let port = broker.port;
    // A stale retained command must not fire when the client subscribes.
    publish_retained(port, "BE/command/PAUSE", "PRESS");
    let sub = Sub::start(port, &["BE/command_result", "homeassistant/#"], &[]);
    let (mut bridge, handle) = fake_bridge(refuse_soc_window);
    let mut cfg = config(port);
    // Every command but STOP, START, RESTART and BMSRESET enabled by name (they are not allowed by default).
    cfg.allowed_commands = CommandName::ALL.iter().copied().filter(|c| *c != CommandName::Stop).collect();
    let task = tokio::spawn(run(cfg, handle, "cmd".into()));
    // Discovery goes out after the subscriptions, on the same connection: once it is seen, commands are heard.
    sub.wait("discovery", is_config).await;
    let retained_result = sub.wait("retained command refused", |m| m.topic == "BE/command_result").await.json();
    assert_eq!(retained_result["command"], "PAUSE");
    assert_eq!(retained_result["ok"], false);
    assert!(retained_result["error"].as_str().unwrap().contains("retained"));
    assert!(bridge.requests.try_recv().is_err());

    let limits = |c: Option<i32>, d: Option<i32>, t: u64| {
        Request::Core(Command::SetTemporaryLimits {
            charge: c.map(DeciAmps),
            discharge: d.map(DeciAmps),
            timeout: dbe_core::Duration::from_secs(t),
        })
    };
    let good: &[(&str, &str, Request)] = &[
        ("PAUSE", "PRESS", Request::Core(Command::Pause)),
        ("RESUME", "PRESS", Request::Core(Command::Resume)),
        ("RESTART", "PRESS", Request::Restart),
        ("BMSRESET", "PRESS", Request::Core(Command::BmsReset)),
        ("START", "PRESS", Request::Core(Command::Start)),
        ("SET_LIMITS", r#"{"max_charge":150,"max_discharge":200,"timeout":60}"#, limits(Some(150), Some(200), 60)),
        ("SET_LIMITS", r#"{"max_discharge":100}"#, limits(None, Some(100), 30)),
        (
            "SET_SOC_WINDOW",
            r#"{"min":10,"max":90}"#,
            Request::Core(Command::SetSocWindow { min: BasisPoints(1000), max: BasisPoints(9000) }),
        ),
    ];
    for (name, payload, want) in good {
        let mark = sub.len();
        publish(port, &format!("BE/command/{name}"), payload, &[]);
        let got = tokio::time::timeout(DEADLINE, bridge.requests.recv()).await.expect("request").unwrap();
        assert_eq!((got.0, got.1), (*want, "mqtt"), "{name} {payload}");
        let result = sub.wait_since("result", mark, |m| m.topic == "BE/command_result").await.json();
        assert_eq!(result["command"], *name);
        if *name == "SET_SOC_WINDOW" {
            // Refused by the core: the bridge's reason is passed on.
            assert_eq!(
                result,
                json!({"command": name, "ok": false, "error": "SOC window min is 100, expected 500 to 2000"})
            );
        } else {
            assert_eq!(result, json!({"command": name, "ok": true}));
        }
    }

    let bad: &[(&str, &str, &str)] = &[
        ("SET_LIMITS", "max_charge=150", "not JSON"),
        ("SET_LIMITS", r#"{"max_charge":-150}"#, "\"max_charge\" is -150"),
        ("SET_LIMITS", r#"{"max_discharge":99999999999}"#, "expected 0 to 100000"),
        ("SET_LIMITS", r#"{"max_charge":"150"}"#, "must be a whole number"),
        ("SET_LIMITS", r#"{"max_charge":15.5}"#, "must be a whole number"),
        ("SET_LIMITS", r#"{"max_charge":10,"timeout":-1}"#, "\"timeout\" is -1"),
        ("SET_LIMITS", r#"{"max_charge":10,"speed":3}"#, "unknown key"),
        ("SET_SOC_WINDOW", r#"{"min":90,"max":10}"#, "must be below"),
        ("STOP", "PRESS", "not in mqtt.allowed_commands"),
        ("REBOOT", "PRESS", "unknown command"),
    ];
    for (name, payload, why) in bad {
        let mark = sub.len();
        publish(port, &format!("BE/command/{name}"), payload, &[]);
        let result = sub.wait_since("refusal", mark, |m| m.topic == "BE/command_result").await.json();
        assert_eq!(result["ok"], false, "{name} {payload}");
        assert_eq!(result["command"], *name);
        let error = result["error"].as_str().unwrap();
        assert!(error.contains(why), "{name} {payload}: {error}");
        assert!(bridge.requests.try_recv().is_err(), "{name} {payload} reached the bridge");
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_reconnects_reannounces_and_sends_queued_events() {
    let mut broker = Broker::start("");
    let port = broker.port;
    let (bridge, handle) = fake_bridge(|_| None);
    bridge.loop_end_snapshot.send(Arc::new(snapshot())).unwrap();
    {
        let sub = Sub::start(port, &["BE/#"], &[]);
        tokio::spawn(run(config(port), handle.clone(), "restart".into()));
        sub.wait("info", |m| m.topic == "BE/info").await;
    }
    broker.kill();
    for i in 1..=3 {
        bridge.events.send(event("BMS_RESET", i, 1000 + i as u64)).unwrap();
    }
    broker.restart();
    // The broker kept nothing (no persistence): what arrives now was sent again after the reconnect.
    let sub = Sub::start(port, &["BE/#", "homeassistant/#"], &[]);
    sub.wait("online again", |m| m.topic == "BE/status" && m.payload == "online").await;
    sub.wait("info again", |m| m.topic == "BE/info").await;
    wait_until_async("re-announcement", DEADLINE, || (sub.count(is_config) >= config_count()).then_some(())).await;
    wait_until_async("queued events", DEADLINE, || (sub.count(|m| m.topic == "BE/events") >= 3).then_some(())).await;
    let counts: Vec<i64> =
        sub.all().iter().filter(|m| m.topic == "BE/events").map(|m| m.json()["count"].as_i64().unwrap()).collect();
    assert_eq!(counts, [1, 2, 3], "oldest first, each once");
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Process::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_own_ca_and_password_and_a_wrong_password_is_retried() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let d = d.as_path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        d,
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=DBE test CA"],
        ]
        .concat(),
    );
    openssl(
        d,
        &[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
    );
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let st =
        Process::new("mosquitto_passwd").current_dir(d).args(["-b", "-c", "passwd", "dbe", "s3cret"]).output().unwrap();
    assert!(st.status.success());
    let p = |f: &str| path_str(&d.join(f));
    let broker = Broker::start_in(
        dir,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\npassword_file {}",
            p("ca.crt"),
            p("server.crt"),
            p("server.key"),
            p("passwd")
        ),
    );
    let port = broker.port;
    let ca = path_str(&broker.path("ca.crt"));
    let auth = ["--cafile", ca.as_str(), "-u", "dbe", "-P", "s3cret"];
    let sub = Sub::start(port, &["BE/#"], &auth);

    let (bridge, handle) = fake_bridge(|_| None);
    bridge.loop_end_snapshot.send(Arc::new(snapshot())).unwrap();
    let tls = TlsConfig { enabled: true, ca_file: Some(broker.path("ca.crt")), ..TlsConfig::default() };
    let good =
        MqttConfig { username: Some("dbe".into()), password: Some("s3cret".into()), tls: tls.clone(), ..config(port) };
    let task = tokio::spawn(run(good.clone(), handle.clone(), "tls".into()));
    sub.wait("online over TLS", |m| m.topic == "BE/status" && m.payload == "online").await;
    assert_eq!(sub.wait("info over TLS", |m| m.topic == "BE/info").await.json()["SOC"], 55.0);
    task.abort();

    // A wrong password: a clear message, retried, and the task keeps running.
    let wrong = MqttConfig { password: Some("nope".into()), client_id: Some("dbe-wrong".into()), ..good };
    let task = tokio::spawn(run(wrong, handle, "tls".into()));
    let needle = format!("127.0.0.1:{port} refused the user name or password");
    wait_until_async("two refused attempts", DEADLINE, || (logs_containing(&needle).len() >= 2).then_some(())).await;
    assert!(!task.is_finished());
    task.abort();
    drop(bridge);
    tokio::time::sleep(Duration::ZERO).await;
}
