//! `dbe replay`: drive the bridge from a recorded candump log and print what the inverter would have been told.
//!
//! Frames on interface `battery` go to the battery side, `inverter` to the inverter side, any other interface
//! (a shared bus, a plain `candump -l` capture) to both, as on a shared bus. The log's timestamps are the
//! bridge's clock, so stale-data timeouts and expiring limits happen as they would have; between frames the
//! bridge's own deadlines run. One JSON line is printed whenever the supervisor's decision changes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use dbe_core::bridge::{Bridge, BridgeConfig, Port};
use dbe_core::supervisor::Output;
use dbe_core::Instant;
use dbe_services::status::Status;
use serde_json::json;

fn decision(o: &Output) -> (i32, i32, Option<u16>, u32, u32, bool) {
    (
        o.charge_current_limit.0,
        o.discharge_current_limit.0,
        o.soc.map(|s| s.0),
        o.alarms.bits(),
        o.warnings.bits(),
        o.contactors == Some(dbe_core::battery::ContactorRequest::Closed),
    )
}

fn print_decision(bridge: &Bridge, now: Instant, sent_to_inverter: u64) {
    let s = Status::of(bridge, now);
    println!(
        "{}",
        json!({
            "time_ms": now.as_millis(),
            "soc_pct": s.reported.soc_pct,
            "charge_current_a": s.limits.charge_current_a,
            "discharge_current_a": s.limits.discharge_current_a,
            "charge_limited_by": s.limits.charge_limited_by,
            "discharge_limited_by": s.limits.discharge_limited_by,
            "max_charge_voltage_v": s.limits.max_charge_voltage_v,
            "min_discharge_voltage_v": s.limits.min_discharge_voltage_v,
            "alarms": s.alarms,
            "warnings": s.warnings,
            "contactor_request": s.contactor_request,
            "frames_to_inverter": sent_to_inverter,
        })
    );
}

pub fn run(cfg: BridgeConfig, realtime: bool, path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bridge = Bridge::new(cfg);
    let mut first_us = None;
    let mut now = Instant::ZERO;
    let mut last = None;
    let mut sent = 0u64;
    let mut malformed = 0u64;
    let wall0 = std::time::Instant::now();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: reading", path.display(), i + 1))?;
        let parsed = match dbe_link::candump::parse_line(&line) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                malformed += 1;
                eprintln!("{}:{}: skipped: {e}", path.display(), i + 1);
                continue;
            }
        };
        let t0 = *first_us.get_or_insert(parsed.timestamp_us);
        let at = Instant::from_millis(parsed.timestamp_us.saturating_sub(t0) / 1000).max(now);
        // Let the bridge's own deadlines pass up to this frame.
        while let Some(d) = bridge.poll_timeout().filter(|&d| d <= at) {
            now = d.max(now);
            bridge.handle_timeout(now);
            drain(&mut bridge, now, &mut sent, &mut last);
            if d < now {
                break;
            }
        }
        now = at;
        if realtime {
            let due = wall0 + std::time::Duration::from_millis(now.as_millis());
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let ports: &[Port] = match parsed.interface.as_str() {
            "battery" => &[Port::Battery],
            "inverter" => &[Port::Inverter],
            _ => &[Port::Battery, Port::Inverter],
        };
        for &port in ports {
            let _ = bridge.handle_frame(now, port, &parsed.frame);
        }
        drain(&mut bridge, now, &mut sent, &mut last);
    }
    print_decision(&bridge, now, sent);
    if malformed > 0 {
        eprintln!("{malformed} malformed line(s) skipped");
    }
    Ok(())
}

type Decision = (i32, i32, Option<u16>, u32, u32, bool);

fn drain(bridge: &mut Bridge, now: Instant, sent: &mut u64, last: &mut Option<Decision>) {
    while let Some((port, _)) = bridge.poll_transmit(now) {
        if port == Port::Inverter {
            *sent += 1;
        }
    }
    let d = decision(bridge.output());
    if *last != Some(d) {
        *last = Some(d);
        print_decision(bridge, now, *sent);
    }
}
