//! Serves the dashboard over a fake bridge loop whose values drift over time, for the browser tests and for
//! looking at the pages without a pack. `dbe demo` replaces it once the real binary serves the dashboard.
//!
//! Usage: `web_fake [--bind ADDR] [--password PW] [--history-interval-s N] [--no-config]`
//! Prints `DBE dashboard: http://ADDR/` once listening, and `request: NAME` for every command it receives.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbe_core::battery::nissan_leaf;
use dbe_core::command::Command;
use dbe_core::model::{BatteryModel, FlagId, NumberId, TextId};
use dbe_core::CanFrame;
use dbe_services::hub::{self, Request, Snapshot};
use dbe_services::status::{CellsStatus, EventStatus, ExtraStatus};
use dbe_services::web::{self, ConfigStore, Extras, FieldError, FrameRecord, TapDirection, WebConfig};
use serde_json::{json, Value};
use tokio::sync::broadcast;

struct FakeConfig(Mutex<Value>);

impl ConfigStore for FakeConfig {
    fn get(&self) -> Value {
        self.0.lock().unwrap().clone()
    }
    fn schema(&self) -> Value {
        json!([
            {"key": "battery.type", "type": "enum", "label": "Battery", "options": ["NISSAN_LEAF", "TESLA_MODEL_3", "BYD_ATTO_3"], "restart": true},
            {"key": "inverter.protocol", "type": "enum", "label": "Inverter protocol", "options": ["PYLON_CAN", "BYD_CAN", "SOFAR_CAN"], "restart": true},
            {"key": "limits.max_charge_a", "type": "number", "label": "Max charge current", "unit": "A", "min": 0, "max": 200, "step": 0.1},
            {"key": "limits.max_discharge_a", "type": "number", "label": "Max discharge current", "unit": "A", "min": 0, "max": 200, "step": 0.1},
            {"key": "soc.min_pct", "type": "integer", "label": "Scaled SOC minimum", "unit": "%", "min": 0, "max": 50},
            {"key": "soc.max_pct", "type": "integer", "label": "Scaled SOC maximum", "unit": "%", "min": 50, "max": 100},
            {"key": "mqtt.enabled", "type": "bool", "label": "MQTT"},
            {"key": "mqtt.host", "type": "string", "label": "MQTT broker", "help": "host or host:port"}
        ])
    }
    fn update(&self, v: Value) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let obj = v.as_object().cloned().unwrap_or_default();
        for (k, val) in &obj {
            let bad = match k.as_str() {
                "limits.max_charge_a" | "limits.max_discharge_a" => {
                    !val.as_f64().map(|x| (0.0..=200.0).contains(&x)).unwrap_or(false)
                }
                "soc.min_pct" => !val.as_u64().map(|x| x <= 50).unwrap_or(false),
                "soc.max_pct" => !val.as_u64().map(|x| (50..=100).contains(&x)).unwrap_or(false),
                "mqtt.enabled" => !val.is_boolean(),
                "mqtt.host" | "battery.type" | "inverter.protocol" => !val.is_string(),
                _ => {
                    errors.push(FieldError { key: k.clone(), message: "unknown setting".into() });
                    false
                }
            };
            if bad {
                errors.push(FieldError { key: k.clone(), message: "out of range or wrong type".into() });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut cur = self.0.lock().unwrap();
        for (k, val) in obj {
            cur[k] = val;
        }
        Ok(())
    }
}

#[derive(Default)]
struct FakeState {
    paused: bool,
    stopped: bool,
    temp: Option<(Option<f64>, Option<f64>, Instant)>,
    window: (f64, f64),
    started: Option<Instant>,
}

fn snapshot(st: &FakeState, seed: &mut u64) -> Snapshot {
    let mut rnd = || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f64) / (1u64 << 31) as f64
    };
    let t = st.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    let soc_real = 55.0 + 20.0 * (t / 90.0).sin();
    let current = if st.paused || st.stopped { 0.0 } else { (-18.0 * (t / 20.0).cos() * 10.0).round() / 10.0 };
    let voltage = ((360.0 + soc_real * 0.6 + current * 0.05) * 10.0).round() / 10.0;
    let cells: Vec<u16> =
        (0..96).map(|i| (3600.0 + soc_real * 3.0 + 8.0 * ((i as f64) * 0.7).sin() + rnd() * 4.0) as u16).collect();
    let balancing: Vec<bool> = (0..96).map(|i| i % 17 == 3).collect();
    let (min_i, min_v) = cells.iter().enumerate().min_by_key(|(_, v)| **v).map(|(i, v)| (i, *v)).unwrap();
    let (max_i, max_v) = cells.iter().enumerate().max_by_key(|(_, v)| **v).map(|(i, v)| (i, *v)).unwrap();
    let (w_min, w_max) = st.window;
    let reported = ((soc_real - w_min) / (w_max - w_min) * 100.0).clamp(0.0, 100.0);
    let mut s = Snapshot::default();
    let time_ms = (t * 1000.0) as u64;
    s.status.time_ms = time_ms;
    let b = &mut s.status.battery;
    b.kind = "NISSAN_LEAF";
    b.voltage_v = Some(voltage);
    b.current_a = Some(current);
    b.power_w = Some((voltage * current) as i32);
    b.soc_real_pct = Some((soc_real * 100.0).round() / 100.0);
    b.soh_pct = Some(87.5);
    b.temperature_min_c = Some(18.5 + (t / 300.0).sin());
    b.temperature_max_c = Some(22.0 + (t / 300.0).sin());
    b.cell_min_mv = Some(min_v);
    b.cell_min_number = Some(min_i + 1);
    b.cell_max_mv = Some(max_v);
    b.cell_max_number = Some(max_i + 1);
    b.cell_delta_mv = Some(max_v - min_v);
    b.cell_count = 96;
    b.balancing_cells = balancing.iter().filter(|x| **x).count() as u32;
    b.total_energy_wh = Some(40_000);
    b.remaining_energy_wh = Some((400.0 * soc_real) as u32);
    b.bms_max_charge_power_w = Some(20_000);
    b.bms_max_discharge_power_w = Some(25_000);
    b.contactors = if st.stopped { "open" } else { "closed" };
    b.bms_status = "active";
    b.last_frame_ms = Some(time_ms.saturating_sub(40));
    // The pack panel's values go through the LEAF's real descriptor table; those never set (failsafe status, main
    // relay) stay unknown and must not show.
    let mut pack = BatteryModel::new(nissan_leaf::DESIGN).with_extras(nissan_leaf::EXTRAS);
    let now = dbe_core::Instant::from_millis(time_ms);
    let table = nissan_leaf::EXTRAS;
    pack.extras.set_text(now, TextId::of(table, "generation"), "AZE0");
    pack.extras.set_number(now, NumberId::of(table, "gids"), 200 + (soc_real * 2.0) as i64);
    pack.extras.set_number(now, NumberId::of(table, "leaf_hx"), 8751);
    pack.extras.set_number(now, NumberId::of(table, "insulation_resistance"), 5000);
    pack.extras.set_flag(now, FlagId::of(table, "interlock"), true);
    b.extras = pack.extras.iter().map(|e| ExtraStatus::of(&e)).collect();
    b.extra_table = table;
    s.status.reported.soc_pct = Some((reported * 100.0).round() / 100.0);
    s.status.reported.soc_window_min_pct = w_min;
    s.status.reported.soc_window_max_pct = w_max;
    let l = &mut s.status.limits;
    let (mut ch, mut dis, mut why_c, mut why_d) = (50.0, 62.5, "bms", "user");
    if let Some((c, d, until)) = st.temp {
        if Instant::now() < until {
            if let Some(c) = c {
                ch = c;
                why_c = "temporary";
            }
            if let Some(d) = d {
                dis = d;
                why_d = "temporary";
            }
            l.temporary_until_ms = Some(time_ms + until.duration_since(Instant::now()).as_millis() as u64);
        }
    }
    if st.stopped {
        (ch, dis, why_c, why_d) = (0.0, 0.0, "stopped", "stopped");
    } else if st.paused {
        (ch, dis, why_c, why_d) = (0.0, 0.0, "paused", "paused");
    }
    l.charge_current_a = ch;
    l.discharge_current_a = dis;
    l.charge_power_w = (ch * voltage) as i32;
    l.discharge_power_w = (dis * voltage) as i32;
    l.charge_limited_by = why_c;
    l.discharge_limited_by = why_d;
    l.max_charge_voltage_v = 403.2;
    l.min_discharge_voltage_v = 300.0;
    s.status.inverter.protocol = "PYLON_CAN";
    s.status.inverter.present = true;
    s.status.inverter.last_heard_ms = Some(time_ms.saturating_sub(120));
    s.status.data_valid = true;
    s.status.paused = st.paused;
    s.status.stopped = st.stopped;
    s.status.contactor_request = if st.stopped { "open" } else { "closed" };
    s.status.event_level = "WARNING";
    s.status.frames_battery.rx = (t * 100.0) as u64;
    s.status.frames_battery.rx_used = (t * 90.0) as u64;
    s.status.frames_battery.tx = (t * 10.0) as u64;
    s.status.frames_inverter.rx = (t * 2.0) as u64;
    s.status.frames_inverter.rx_used = (t * 2.0) as u64;
    s.status.frames_inverter.tx = (t * 12.0) as u64;
    s.cells = CellsStatus {
        voltages_mv: cells,
        balancing,
        min_mv: Some(min_v),
        max_mv: Some(max_v),
        updated_ms: Some(time_ms),
    };
    let ev = |event_type, level, message, count, active, first_ms: u64| EventStatus {
        event_type,
        level,
        message,
        count,
        active,
        data: 0,
        first_ms: Some(first_ms),
        last_ms: Some(time_ms.saturating_sub(first_ms / 3)),
    };
    s.events = vec![
        ev("BRIDGE_STARTED", "INFO", "The bridge started.", 1, false, 0),
        ev("CONTACTORS_CLOSED", "INFO", "The pack's contactors closed.", 1, false, 800),
        ev("CAN_INVERTER_MISSING", "WARNING", "The inverter has not polled within its timeout.", 2, false, 1200),
        ev("CELL_DEVIATION_HIGH", "WARNING", "Cell voltages differ more than allowed.", 3, true, 2500),
        ev(
            "BATTERY_FRAME_INVALID",
            "ERROR",
            "Battery frames are being rejected (wrong length, checksum or counter).",
            1,
            false,
            3000,
        ),
    ];
    if st.paused {
        s.events.push(ev("PAUSE_BEGIN", "INFO", "Paused by a remote command.", 1, true, time_ms));
    }
    s
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = WebConfig {
        bind: arg(&args, "--bind").unwrap_or_else(|| "127.0.0.1:8080".into()).parse().expect("--bind ADDR:PORT"),
        password_hash: arg(&args, "--password").map(|p| web::hash_password(&p)),
        history_interval: Duration::from_secs(
            arg(&args, "--history-interval-s").and_then(|s| s.parse().ok()).unwrap_or(2),
        ),
        ..WebConfig::default()
    };

    let (mut end, handle) = hub::hub();
    let (frames, _) = broadcast::channel::<FrameRecord>(1024);
    let store: Option<Arc<dyn ConfigStore>> = if args.iter().any(|a| a == "--no-config") {
        None
    } else {
        Some(Arc::new(FakeConfig(Mutex::new(json!({
            "battery.type": "NISSAN_LEAF", "inverter.protocol": "PYLON_CAN",
            "limits.max_charge_a": 50.0, "limits.max_discharge_a": 62.5,
            "soc.min_pct": 5, "soc.max_pct": 95, "mqtt.enabled": false, "mqtt.host": ""
        })))))
    };
    let extras = Extras { config: store, frames: Some(frames.clone()) };
    let running = match web::serve(config, handle, extras).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("web_fake: {e}");
            std::process::exit(2);
        }
    };
    println!("DBE dashboard: {}", running.url());
    std::io::stdout().flush().ok();

    let mut st = FakeState { window: (5.0, 95.0), started: Some(Instant::now()), ..FakeState::default() };
    let mut seed = 42u64;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                end.snapshot.send_replace(Arc::new(snapshot(&st, &mut seed)));
                n += 1;
                let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
                for (port, id, ext) in [("battery", 0x1DBu32, false), ("battery", 0x55B, false), ("battery", 0x5BC, false), ("inverter", 0x4210, true), ("inverter", 0x351, false)] {
                    let data: [u8; 8] = std::array::from_fn(|i| (n as u8).wrapping_mul(i as u8 + 1).wrapping_add(id as u8));
                    let frame = if ext { CanFrame::extended(id, &data) } else { CanFrame::standard(id as u16, &data) }.expect("valid id");
                    // The fake pack's frames arrive, the fake inverter answers go out.
                    let direction = if port == "inverter" { TapDirection::Tx } else { TapDirection::Rx };
                    let _ = frames.send(FrameRecord { port, time_ms: now_ms, frame, direction });
                }
            }
            Some(env) = end.requests.recv() => {
                println!("request: {}", env.request.name());
                std::io::stdout().flush().ok();
                match env.request {
                    Request::Core(Command::Pause) => st.paused = true,
                    Request::Core(Command::Resume) => st.paused = false,
                    Request::Core(Command::Stop) => st.stopped = true,
                    Request::Core(Command::Start) => st.stopped = false,
                    Request::Core(Command::SetTemporaryLimits { charge, discharge, timeout }) => {
                        st.temp = Some((charge.map(|c| c.0 as f64 / 10.0), discharge.map(|d| d.0 as f64 / 10.0),
                            Instant::now() + Duration::from_millis(timeout.as_millis())));
                    }
                    Request::Core(Command::ClearTemporaryLimits) => st.temp = None,
                    Request::Core(Command::SetSocWindow { min, max }) => st.window = (min.0 as f64 / 100.0, max.0 as f64 / 100.0),
                    Request::Core(Command::BmsReset) => {}
                    Request::Restart => { st = FakeState { window: st.window, started: Some(Instant::now()), ..FakeState::default() }; }
                    Request::Note { .. } => {}
                }
                end.snapshot.send_replace(Arc::new(snapshot(&st, &mut seed)));
                let _ = env.reply.send(Ok(()));
            }
        }
    }
}
