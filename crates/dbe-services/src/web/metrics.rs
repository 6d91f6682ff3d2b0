//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Values not known yet are left out rather than reported as 0, so a graph shows a gap instead of a false
//! reading. Names use base units (volts, amperes, watts, celsius, with SOC and SOH kept in percent (`_percent`)
//! because that is what users compare with the inverter's display).
//!
//! Pack-specific values (the driver's extras) are two families labelled by key: numbers and flags (0/1) in
//! `dbe_pack_value` with their label and unit as labels, text in `dbe_pack_info` (value 1, the text as a label,
//! the Prometheus convention for "info" metrics).

use std::fmt::Write;

use axum::extract::State;
use axum::response::Response;

use super::api::text;
use super::Shared;
use crate::hub::Snapshot;
use crate::status::ExtraStatus;
use serde_json::Value;

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", fmt_value(value));
    }
    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.head(name, "gauge", help);
            self.sample(name, &[], v);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// The known pack-specific values (unknown ones are not in the list, so they are left out here too).
fn pack_values(o: &mut Out, extras: &[ExtraStatus]) {
    let numbers: Vec<_> = extras.iter().filter_map(|e| Some((e, sample_value(&e.value)?))).collect();
    if !numbers.is_empty() {
        o.head("dbe_pack_value", "gauge", "Pack-specific values the driver decodes (flags as 1/0), by key.");
        for (e, v) in numbers {
            o.sample("dbe_pack_value", &[("key", e.key), ("label", e.label), ("unit", e.unit.unwrap_or(""))], v);
        }
    }
    let texts: Vec<_> = extras.iter().filter_map(|e| Some((e, e.value.as_str()?))).collect();
    if !texts.is_empty() {
        o.head("dbe_pack_info", "gauge", "Pack-specific text the driver decodes (generation, serial number), by key.");
        for (e, text) in texts {
            o.sample("dbe_pack_info", &[("key", e.key), ("label", e.label), ("value", text)], 1.0);
        }
    }
}

fn sample_value(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(on) => Some(b(*on)),
        other => other.as_f64(),
    }
}

pub(crate) fn render(s: &Snapshot, frames: Option<&[(String, u64)]>) -> String {
    let st = &s.status;
    let bt = &st.battery;
    let mut o = Out(String::with_capacity(8192));
    o.gauge("dbe_uptime_seconds", "Time since the bridge started.", Some(st.time_ms as f64 / 1000.0));
    if st.reported.soc_pct.is_some() || bt.soc_real_pct.is_some() {
        o.head(
            "dbe_soc_percent",
            "gauge",
            "State of charge: as reported to the inverter (scaled) and as the pack says (real).",
        );
        if let Some(v) = st.reported.soc_pct {
            o.sample("dbe_soc_percent", &[("kind", "reported")], v);
        }
        if let Some(v) = bt.soc_real_pct {
            o.sample("dbe_soc_percent", &[("kind", "real")], v);
        }
    }
    o.gauge("dbe_soh_percent", "State of health of the pack.", bt.soh_pct);
    o.gauge("dbe_voltage_volts", "Pack voltage.", bt.voltage_v);
    o.gauge("dbe_current_amperes", "Pack current, positive when charging.", bt.current_a);
    o.gauge("dbe_power_watts", "Pack power, positive when charging.", bt.power_w.map(f64::from));
    if bt.temperature_min_c.is_some() || bt.temperature_max_c.is_some() {
        o.head("dbe_temperature_celsius", "gauge", "Lowest and highest pack temperature.");
        if let Some(v) = bt.temperature_min_c {
            o.sample("dbe_temperature_celsius", &[("sensor", "min")], v);
        }
        if let Some(v) = bt.temperature_max_c {
            o.sample("dbe_temperature_celsius", &[("sensor", "max")], v);
        }
    }
    o.gauge("dbe_energy_total_watthours", "Pack capacity as the pack reports it.", bt.total_energy_wh.map(f64::from));
    o.gauge(
        "dbe_energy_remaining_watthours",
        "Energy left as the pack reports it.",
        bt.remaining_energy_wh.map(f64::from),
    );
    o.gauge("dbe_cell_voltage_min_volts", "Lowest cell voltage.", bt.cell_min_mv.map(|v| v as f64 / 1000.0));
    o.gauge("dbe_cell_voltage_max_volts", "Highest cell voltage.", bt.cell_max_mv.map(|v| v as f64 / 1000.0));
    o.gauge(
        "dbe_cell_voltage_delta_volts",
        "Highest minus lowest cell voltage.",
        bt.cell_delta_mv.map(|v| v as f64 / 1000.0),
    );
    o.gauge("dbe_cells_balancing", "Number of cells being balanced.", Some(bt.balancing_cells as f64));
    let cells = &s.cells;
    if !cells.voltages_mv.is_empty() {
        o.head("dbe_cell_voltage_volts", "gauge", "Voltage of each cell, numbered from 1.");
        for (i, mv) in cells.voltages_mv.iter().enumerate() {
            o.sample("dbe_cell_voltage_volts", &[("cell", &(i + 1).to_string())], *mv as f64 / 1000.0);
        }
        o.head("dbe_cell_balancing", "gauge", "1 while a cell is being balanced.");
        for (i, bal) in cells.balancing.iter().enumerate() {
            o.sample("dbe_cell_balancing", &[("cell", &(i + 1).to_string())], b(*bal));
        }
    }
    pack_values(&mut o, &bt.extras);
    let l = &st.limits;
    o.head("dbe_limit_current_amperes", "gauge", "Current limit sent to the inverter.");
    o.sample("dbe_limit_current_amperes", &[("direction", "charge")], l.charge_current_a);
    o.sample("dbe_limit_current_amperes", &[("direction", "discharge")], l.discharge_current_a);
    o.head("dbe_limit_power_watts", "gauge", "Power limit sent to the inverter.");
    o.sample("dbe_limit_power_watts", &[("direction", "charge")], l.charge_power_w as f64);
    o.sample("dbe_limit_power_watts", &[("direction", "discharge")], l.discharge_power_w as f64);
    o.head("dbe_limit_reason", "gauge", "1 for what currently sets each limit (bms, user, temporary, soc_full, ...).");
    o.sample("dbe_limit_reason", &[("direction", "charge"), ("reason", l.charge_limited_by)], 1.0);
    o.sample("dbe_limit_reason", &[("direction", "discharge"), ("reason", l.discharge_limited_by)], 1.0);
    o.head("dbe_voltage_limit_volts", "gauge", "Voltage limits sent to the inverter.");
    o.sample("dbe_voltage_limit_volts", &[("limit", "max_charge")], l.max_charge_voltage_v);
    o.sample("dbe_voltage_limit_volts", &[("limit", "min_discharge")], l.min_discharge_voltage_v);
    o.head("dbe_soc_window_percent", "gauge", "Real-SOC window that is scaled to 0-100 % for the inverter.");
    o.sample("dbe_soc_window_percent", &[("bound", "min")], st.reported.soc_window_min_pct);
    o.sample("dbe_soc_window_percent", &[("bound", "max")], st.reported.soc_window_max_pct);
    o.gauge("dbe_paused", "1 while paused (limits held at 0 A).", Some(b(st.paused)));
    o.gauge("dbe_stopped", "1 while the bridge is stopped.", Some(b(st.stopped)));
    o.gauge("dbe_data_valid", "1 while the battery data is fresh and valid.", Some(b(st.data_valid)));
    o.gauge("dbe_inverter_present", "1 while the inverter is being heard.", Some(b(st.inverter.present)));
    o.gauge(
        "dbe_contactors_closed_requested",
        "1 while DBE asks for the contactors closed.",
        Some(b(st.contactor_request == "closed")),
    );
    o.head("dbe_alarm_active", "gauge", "1 for each active alarm.");
    for a in &st.alarms {
        o.sample("dbe_alarm_active", &[("alarm", a)], 1.0);
    }
    if !s.events.is_empty() {
        o.head("dbe_events_total", "counter", "Occurrences of each event since the bridge started.");
        for e in &s.events {
            o.sample("dbe_events_total", &[("event", e.event_type), ("level", e.level)], e.count as f64);
        }
        o.head("dbe_event_active", "gauge", "1 while an event's condition holds.");
        for e in &s.events {
            o.sample("dbe_event_active", &[("event", e.event_type), ("level", e.level)], b(e.active));
        }
    }
    o.head("dbe_can_frames_total", "counter", "CAN frames per port of the bridge: received, used, rejected, sent.");
    for (port, f) in [("battery", &st.frames_battery), ("inverter", &st.frames_inverter)] {
        o.sample("dbe_can_frames_total", &[("port", port), ("direction", "rx")], f.rx as f64);
        o.sample("dbe_can_frames_total", &[("port", port), ("direction", "rx_used")], f.rx_used as f64);
        o.sample("dbe_can_frames_total", &[("port", port), ("direction", "rx_invalid")], f.rx_invalid as f64);
        o.sample("dbe_can_frames_total", &[("port", port), ("direction", "tx")], f.tx as f64);
    }
    if let Some(frames) = frames {
        o.head("dbe_can_tap_frames_total", "counter", "CAN frames seen by the dashboard's frame tap, per port.");
        for (port, n) in frames {
            o.sample("dbe_can_tap_frames_total", &[("port", port)], *n as f64);
        }
    }
    o.0
}

pub(crate) async fn metrics(State(s): State<Shared>) -> Response {
    let counts = s.can.as_ref().map(|c| c.counts());
    let body = render(&s.handle.latest(), counts.as_deref());
    text("text/plain; version=0.0.4; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_sample_has_help_and_type() {
        let mut snap = Snapshot::default();
        snap.status.battery.voltage_v = Some(400.5);
        snap.cells.voltages_mv = vec![3700, 3710];
        snap.cells.balancing = vec![false, true];
        let text = render(&snap, Some(&[("can0".into(), 5)]));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_string()), "TYPE twice: {line}");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "no TYPE before {line}");
            }
        }
        assert!(text.contains("dbe_voltage_volts 400.5\n"));
        assert!(text.contains("dbe_cell_balancing{cell=\"2\"} 1\n"));
        assert!(!text.contains("dbe_soh_percent"), "unknown values are left out");
        assert!(!text.contains("dbe_pack_"), "no pack value is known");
    }

    #[test]
    fn pack_values_with_their_label_and_unit() {
        use dbe_core::battery::nissan_leaf::{DESIGN, EXTRAS};
        use dbe_core::model::{BatteryModel, FlagId, NumberId, TextId};
        let mut m = BatteryModel::new(DESIGN).with_extras(EXTRAS);
        let now = dbe_core::Instant::ZERO;
        m.extras.set_number(now, NumberId::of(EXTRAS, "leaf_hx"), 8751);
        m.extras.set_flag(now, FlagId::of(EXTRAS, "interlock"), true);
        m.extras.set_text(now, TextId::of(EXTRAS, "generation"), "AZE0");
        let mut snap = Snapshot::default();
        snap.status.battery = crate::status::BatteryStatus::of("nissan-leaf", &m);
        let text = render(&snap, None);
        assert!(text.contains("# TYPE dbe_pack_value gauge\n"), "{text}");
        assert!(text.contains("dbe_pack_value{key=\"leaf_hx\",label=\"Hx\",unit=\"%\"} 87.51\n"), "{text}");
        assert!(text.contains("dbe_pack_value{key=\"interlock\",label=\"Interlock seated\",unit=\"\"} 1\n"));
        assert!(text.contains("dbe_pack_info{key=\"generation\",label=\"LEAF generation\",value=\"AZE0\"} 1\n"));
        assert!(!text.contains("key=\"gids\""), "unknown values are left out");
    }
}
