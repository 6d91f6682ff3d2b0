//! The state payloads (`info`, `spec_data`, `balancing_data`, `events`, `command_result`) built from a hub
//! snapshot; pure functions, so every field is tested without a broker. The field table is in the module doc of
//! [`crate::mqtt`].

use serde_json::{json, Map, Value};

use crate::hub::{EventMessage, Snapshot};
use crate::status::Status;

pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn put<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v.into());
    }
}

/// `RUNNING`, `PAUSED` or `STOPPED` (Battery-Emulator's `pause_status` words; DBE pauses at once, so it never
/// reports the in-between `PAUSING`/`RESUMING`).
pub fn pause_status(s: &Status) -> &'static str {
    if s.stopped {
        "STOPPED"
    } else if s.paused {
        "PAUSED"
    } else {
        "RUNNING"
    }
}

/// Battery-Emulator's `emulator_status` from the event level: `OK`, `WARNING` or `ERROR`.
pub fn emulator_status(event_level: &str) -> &'static str {
    match event_level {
        "ERROR" => "ERROR",
        "WARNING" => "WARNING",
        _ => "OK",
    }
}

/// `Charging`/`Discharging`/`Idle` from the sign of the current (positive charges), as Battery-Emulator does.
pub fn charging_state(s: &Status) -> Option<&'static str> {
    let a = s.battery.current_a?;
    Some(if a > 0.0 {
        "Charging"
    } else if a < 0.0 {
        "Discharging"
    } else {
        "Idle"
    })
}

/// What limits the current in the direction it flows. Battery-Emulator's words where they mean the same
/// (`Battery`, `UserSetting`, `Idle`); DBE's own reason otherwise (`cell_voltage`, `temperature`, `soc_full`...),
/// which says more than Battery-Emulator's three-way choice.
pub fn limiting_factor(s: &Status) -> Option<&'static str> {
    let reason = match charging_state(s)? {
        "Charging" => s.limits.charge_limited_by,
        "Discharging" => s.limits.discharge_limited_by,
        _ => return Some("Idle"),
    };
    Some(match reason {
        "bms" => "Battery",
        "user" | "temporary" => "UserSetting",
        other => other,
    })
}

/// The `info` payload. A value DBE does not know yet is left out, so Home Assistant shows "unknown" and not 0.
pub fn info(snap: &Snapshot) -> Value {
    let s = &snap.status;
    let b = &s.battery;
    let mut m = Map::new();
    put(&mut m, "SOC", s.reported.soc_pct);
    put(&mut m, "SOC_real", b.soc_real_pct);
    put(&mut m, "state_of_health", b.soh_pct);
    put(&mut m, "temperature_min", b.temperature_min_c);
    put(&mut m, "temperature_max", b.temperature_max_c);
    put(&mut m, "stat_batt_power", b.power_w);
    put(&mut m, "battery_current", b.current_a);
    put(&mut m, "battery_voltage", b.voltage_v);
    put(&mut m, "cell_max_voltage", b.cell_max_mv.map(|mv| mv as f64 / 1000.0));
    put(&mut m, "cell_min_voltage", b.cell_min_mv.map(|mv| mv as f64 / 1000.0));
    put(&mut m, "cell_voltage_delta", b.cell_delta_mv);
    put(&mut m, "total_capacity", b.total_energy_wh);
    put(&mut m, "remaining_capacity", s.reported.remaining_energy_wh);
    put(&mut m, "remaining_capacity_real", b.remaining_energy_wh);
    put(&mut m, "max_charge_power", b.bms_max_charge_power_w);
    put(&mut m, "max_discharge_power", b.bms_max_discharge_power_w);
    put(&mut m, "bms_status", Some(b.bms_status));
    put(&mut m, "pause_status", Some(pause_status(s)));
    put(&mut m, "event_level", Some(s.event_level));
    put(&mut m, "emulator_status", Some(emulator_status(s.event_level)));
    put(&mut m, "emulator_uptime", Some(s.time_ms / 1000));
    if b.cell_count > 0 {
        put(&mut m, "balancing_active_cells", Some(b.balancing_cells));
        put(&mut m, "balancing_status", Some(if b.balancing_cells > 0 { "Active" } else { "Ready" }));
    }
    put(&mut m, "charging_state", charging_state(s));
    put(&mut m, "limiting_factor", limiting_factor(s));
    put(&mut m, "software_version", Some(SOFTWARE_VERSION));
    if !s.contactor_mode.is_empty() {
        put(&mut m, "contactor_control", Some(contactor_control(s)));
    }
    // Pack-specific values (LEAF GIDs, `leaf_hx`, ...) sit next to the common fields under their keys, which are
    // Battery-Emulator's field names where it has them; only known ones are in the list, and a driver key can
    // never replace a common field.
    for e in &b.extras {
        if !m.contains_key(e.key) {
            m.insert(e.key.to_string(), e.value.clone());
        }
    }
    Value::Object(m)
}

/// Who can open the pack, in words: in `none` mode that it is nobody but the person at the switches.
fn contactor_control(s: &crate::status::Status) -> &'static str {
    match (s.contactor_mode, s.can_open_pack) {
        (_, false) => "DBE cannot open the pack (manual switches)",
        ("can", true) => "the pack's contactors, on DBE's CAN commands",
        _ => "DBE's relay outputs",
    }
}

/// True when every cell has reported a voltage (0 mV means "not yet" in the model).
fn cell_voltages_known(snap: &Snapshot) -> bool {
    let v = &snap.cells.voltages_mv;
    !v.is_empty() && v.iter().all(|&mv| mv != 0)
}

fn volts(snap: &Snapshot) -> Vec<Value> {
    snap.cells.voltages_mv.iter().map(|&mv| Value::from(mv as f64 / 1000.0)).collect()
}

/// `{"cell_voltages":[V...], "cell_balancing":[bool...]}`, or `None` while the cell count is unknown. Voltages
/// are left out until every cell has one.
pub fn spec_data(snap: &Snapshot) -> Option<Value> {
    if snap.cells.voltages_mv.is_empty() {
        return None;
    }
    let mut m = Map::new();
    if cell_voltages_known(snap) {
        m.insert("cell_voltages".into(), Value::Array(volts(snap)));
    }
    m.insert("cell_balancing".into(), json!(snap.cells.balancing));
    Some(Value::Object(m))
}

/// `{"cell_balancing":[bool...]}`, or `None` while the cell count is unknown.
pub fn balancing_data(snap: &Snapshot) -> Option<Value> {
    if snap.cells.balancing.is_empty() {
        return None;
    }
    Some(json!({ "cell_balancing": snap.cells.balancing }))
}

pub fn event(e: &EventMessage) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// The answer to one command: `{"command":"SET_LIMITS","ok":false,"error":"..."}`.
pub fn command_result(command: &str, result: Result<(), &dyn std::fmt::Display>) -> Value {
    match result {
        Ok(()) => json!({ "command": command, "ok": true }),
        Err(e) => json!({ "command": command, "ok": false, "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BatteryStatus, CellsStatus, ExtraStatus};

    fn extra(key: &'static str, value: Value) -> ExtraStatus {
        ExtraStatus { key, label: key, value, unit: None, decimals: None }
    }

    #[test]
    fn unknown_values_are_left_out() {
        let v = info(&Snapshot::default());
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        for k in ["SOC", "SOC_real", "battery_voltage", "cell_max_voltage", "total_capacity", "balancing_status"] {
            assert!(!keys.contains(&k.to_string()), "{k} published while unknown");
        }
        assert_eq!(v["pause_status"], "RUNNING");
        assert_eq!(v["emulator_status"], "OK");
        assert_eq!(v["software_version"], SOFTWARE_VERSION);
    }

    #[test]
    fn fields_have_battery_emulators_units() {
        let mut snap = Snapshot::default();
        let extras =
            vec![extra("gids", Value::from(201)), extra("leaf_hx", Value::from(87.51)), extra("SOC", 1.into())];
        snap.status.battery = BatteryStatus {
            voltage_v: Some(398.4),
            current_a: Some(-12.5),
            power_w: Some(-4980),
            soc_real_pct: Some(55.5),
            soh_pct: Some(92.0),
            temperature_min_c: Some(-1.5),
            temperature_max_c: Some(21.0),
            cell_min_mv: Some(3850),
            cell_max_mv: Some(3921),
            cell_delta_mv: Some(71),
            cell_count: 96,
            balancing_cells: 2,
            total_energy_wh: Some(40_000),
            remaining_energy_wh: Some(22_200),
            bms_max_charge_power_w: Some(10_000),
            bms_max_discharge_power_w: Some(20_000),
            bms_status: "ACTIVE",
            extras,
            ..BatteryStatus::default()
        };
        snap.status.reported.soc_pct = Some(60.25);
        snap.status.reported.remaining_energy_wh = Some(20_000);
        snap.status.limits.discharge_limited_by = "bms";
        snap.status.event_level = "WARNING";
        snap.status.paused = true;
        snap.status.time_ms = 3_600_999;
        let v = info(&snap);
        let expect = json!({
            "SOC": 60.25, "SOC_real": 55.5, "state_of_health": 92.0, "temperature_min": -1.5,
            "temperature_max": 21.0, "stat_batt_power": -4980, "battery_current": -12.5, "battery_voltage": 398.4,
            "cell_max_voltage": 3.921, "cell_min_voltage": 3.85, "cell_voltage_delta": 71, "total_capacity": 40000,
            "remaining_capacity": 20000, "remaining_capacity_real": 22200, "max_charge_power": 10000,
            "max_discharge_power": 20000, "bms_status": "ACTIVE", "pause_status": "PAUSED", "event_level": "WARNING",
            "emulator_status": "WARNING", "emulator_uptime": 3600, "balancing_active_cells": 2,
            "balancing_status": "Active", "charging_state": "Discharging", "limiting_factor": "Battery",
            "software_version": SOFTWARE_VERSION, "gids": 201, "leaf_hx": 87.51,
        });
        assert_eq!(v, expect);
    }

    #[test]
    fn info_says_plainly_when_dbe_cannot_open_the_pack() {
        let mut snap = Snapshot::default();
        assert!(info(&snap).get("contactor_control").is_none(), "no bridge yet: left out");
        snap.status.contactor_mode = "none";
        snap.status.can_open_pack = false;
        assert_eq!(info(&snap)["contactor_control"], "DBE cannot open the pack (manual switches)");
        snap.status.contactor_mode = "relays";
        snap.status.can_open_pack = true;
        assert_eq!(info(&snap)["contactor_control"], "DBE's relay outputs");
    }

    #[test]
    fn pack_values_appear_once_known_and_unknown_ones_are_left_out() {
        use dbe_core::battery::nissan_leaf::{DESIGN, EXTRAS};
        use dbe_core::model::{BatteryModel, FlagId, NumberId};
        let mut m = BatteryModel::new(DESIGN).with_extras(EXTRAS);
        m.extras.set_number(dbe_core::Instant::ZERO, NumberId::of(EXTRAS, "leaf_hx"), 8751);
        m.extras.set_flag(dbe_core::Instant::ZERO, FlagId::of(EXTRAS, "interlock"), false);
        let mut snap = Snapshot::default();
        snap.status.battery = BatteryStatus::of("nissan-leaf", &m);
        let v = info(&snap);
        assert_eq!(v["leaf_hx"], 87.51);
        assert_eq!(v["interlock"], false, "a known false is sent");
        for unknown in ["gids", "insulation_resistance", "generation"] {
            assert!(v.get(unknown).is_none(), "{unknown} published while unknown");
        }
    }

    #[test]
    fn cells() {
        let mut snap = Snapshot::default();
        assert_eq!(spec_data(&snap), None);
        snap.cells = CellsStatus { voltages_mv: vec![3900, 0], balancing: vec![false, true], ..Default::default() };
        assert_eq!(spec_data(&snap), Some(json!({"cell_balancing":[false,true]})));
        snap.cells.voltages_mv[1] = 3911;
        assert_eq!(spec_data(&snap), Some(json!({"cell_voltages":[3.9,3.911],"cell_balancing":[false,true]})));
        assert_eq!(balancing_data(&snap), Some(json!({"cell_balancing":[false,true]})));
    }

    #[test]
    fn stopped_wins_over_paused() {
        let mut s = Status { stopped: true, paused: true, ..Status::default() };
        assert_eq!(pause_status(&s), "STOPPED");
        s.stopped = false;
        assert_eq!(pause_status(&s), "PAUSED");
        assert_eq!(emulator_status("ERROR"), "ERROR");
    }
}
