//! The outside world's view of a running bridge: one serialisable snapshot, shared by the demo's JSON lines,
//! the web API, `/metrics` and MQTT, so every surface reports the same numbers under the same names.
//!
//! Units are in the field names (`_v`, `_a`, `_w`, `_wh`, `_pct`, `_c`, `_mv`, `_ms`); a value that is not known
//! yet is left out of the JSON (never sent as 0).

use dbe_core::battery::ContactorRequest;
use dbe_core::bridge::{Bridge, Port, PortStats};
use dbe_core::events::{EventKind, EventRecord};
use dbe_core::model::{BatteryModel, BmsFaults, BmsRequests, Extra, ExtraDescriptor, ExtraValue};
use dbe_core::supervisor::Alarms;
use dbe_core::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts};
use dbe_core::Instant;
use serde::Serialize;
use serde_json::Value;

fn v(d: DeciVolts) -> f64 {
    d.0 as f64 / 10.0
}
fn a(d: DeciAmps) -> f64 {
    d.0 as f64 / 10.0
}
fn pct(b: BasisPoints) -> f64 {
    b.0 as f64 / 100.0
}
fn c(t: DeciCelsius) -> f64 {
    t.0 as f64 / 10.0
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BatteryStatus {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_v: Option<f64>,
    /// Positive = charging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_w: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_real_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soh_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_min_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_max_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_min_mv: Option<u16>,
    /// Cell numbers count from 1, as on the pack's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_min_number: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_max_mv: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_max_number: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_delta_mv: Option<u16>,
    pub cell_count: usize,
    pub balancing_cells: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_energy_wh: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_energy_wh: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bms_max_charge_power_w: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bms_max_discharge_power_w: Option<i32>,
    pub contactors: &'static str,
    pub bms_status: &'static str,
    pub bms_faults: Vec<&'static str>,
    /// What the BMS asks for (`charge_stop`, `open_relays`, ...), each enforced by the supervisor.
    pub bms_requests: Vec<&'static str>,
    /// Whether the driver has confirmed the pack design (`pending`, `confirmed`, `contradicted`).
    pub design: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_frame_ms: Option<u64>,
    /// The pack-specific values that are known (LEAF GIDs, Hx, generation...), in the driver's order; a value not
    /// known yet is left out.
    pub extras: Vec<ExtraStatus>,
    /// Every pack-specific value the driver can report, known or not: what Home Assistant discovery announces.
    #[serde(skip)]
    pub extra_table: &'static [ExtraDescriptor],
}

/// One known pack-specific value with what a person needs to read it (the driver's descriptor, see
/// `dbe_core::extras`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExtraStatus {
    /// The stable key: the JSON/MQTT field name, the Home Assistant object id and the `/metrics` label.
    pub key: &'static str,
    pub label: &'static str,
    /// A number in its unit (already scaled), a string or a bool.
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    /// Numbers only: the decimals the value carries (and should be shown with).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
}

impl ExtraStatus {
    pub fn of(e: &Extra) -> ExtraStatus {
        let d = e.descriptor;
        ExtraStatus {
            key: d.key,
            label: d.label,
            value: extra_json(d, &e.value),
            unit: d.unit,
            decimals: matches!(e.value, ExtraValue::Number(_)).then_some(d.decimals),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ReportedStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_energy_wh: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_energy_wh: Option<u32>,
    pub soc_window_min_pct: f64,
    pub soc_window_max_pct: f64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LimitStatus {
    pub charge_current_a: f64,
    pub discharge_current_a: f64,
    pub charge_power_w: i32,
    pub discharge_power_w: i32,
    pub charge_limited_by: &'static str,
    pub discharge_limited_by: &'static str,
    pub max_charge_voltage_v: f64,
    pub min_discharge_voltage_v: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary_until_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct InverterStatus {
    pub protocol: &'static str,
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heard_ms: Option<u64>,
    /// What the inverter itself says, where its protocol carries it; absent until it has said something.
    #[serde(skip_serializing_if = "InverterReports::is_empty")]
    pub reports: InverterReports,
}

/// What an inverter reports about itself, for display only: nothing here feeds a safety decision (the
/// supervisor takes an inverter's permission through `CanInverter::contactor_permission` and the precharge check
/// its bus voltage through `bus_voltage`, both in the core).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct InverterReports {
    /// BYD CAN 0x091: the DC voltage the inverter measures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_voltage_v: Option<f64>,
    /// BYD CAN 0x091: the current it measures (0.01 A, a scale no source confirms; sign as it sends it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_current_a: Option<f64>,
    /// BYD CAN 0x091: its temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_temperature_c: Option<f64>,
    /// Growatt 0x3020 and Pylon 0x8210: whether it asks to charge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge_requested: Option<bool>,
    /// Growatt 0x3020 and Pylon 0x8210: whether it asks to discharge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharge_requested: Option<bool>,
    /// Growatt 0x3030: `standby`, `operating` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working: Option<&'static str>,
}

impl InverterReports {
    pub fn is_empty(&self) -> bool {
        *self == InverterReports::default()
    }

    pub fn of(inverter: &dbe_core::inverter::AnyInverter) -> InverterReports {
        use dbe_core::inverter::growatt_hv_can::{PcsCommand, PcsWorking};
        use dbe_core::inverter::AnyInverter;
        let mut r = InverterReports::default();
        match inverter {
            AnyInverter::BydCan(p) => {
                if let Some(m) = p.measurement() {
                    r.measured_voltage_v = Some(f64::from(m.voltage.0) / 10.0);
                    r.measured_current_a = Some(f64::from(m.current_centiamps) / 100.0);
                    r.measured_temperature_c = Some(f64::from(m.temperature.0) / 10.0);
                }
            }
            AnyInverter::GrowattHvCan(p) => {
                let pcs = p.pcs();
                if let Some(c) = pcs.control {
                    r.charge_requested = Some(c.charge == PcsCommand::Given);
                    r.discharge_requested = Some(c.discharge == PcsCommand::Given);
                }
                r.working = pcs.working.map(|w| match w {
                    PcsWorking::Standby => "standby",
                    PcsWorking::Operating => "operating",
                    PcsWorking::Unknown(_) => "unknown",
                });
            }
            AnyInverter::PylonCan(p) => {
                if let Some(c) = p.charge_command() {
                    r.charge_requested = Some(c.charge);
                    r.discharge_requested = Some(c.discharge);
                }
            }
            _ => {}
        }
        r
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FrameCounters {
    pub rx: u64,
    pub rx_used: u64,
    pub rx_invalid: u64,
    pub tx: u64,
}

impl From<PortStats> for FrameCounters {
    fn from(s: PortStats) -> Self {
        FrameCounters { rx: s.rx, rx_used: s.rx_used, rx_invalid: s.rx_invalid, tx: s.tx }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Status {
    /// Time of the snapshot, in ms since the bridge started (simulated time in the demo).
    pub time_ms: u64,
    pub battery: BatteryStatus,
    pub reported: ReportedStatus,
    pub limits: LimitStatus,
    pub alarms: Vec<&'static str>,
    pub warnings: Vec<&'static str>,
    pub inverter: InverterStatus,
    /// The first required reading that is missing or too old (`soc`, `cells`, ...), while one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reading: Option<&'static str>,
    /// Safety state that outlives a restart (persisted in the state file).
    pub latched: Vec<&'static str>,
    /// The contactors must open but wait for the current to stop (or for the ceiling).
    pub contactors_open_pending: bool,
    /// How the pack's contactors are controlled: `relays`, `can` or `none`.
    pub contactor_mode: &'static str,
    /// False in `none` mode: DBE cannot open the pack, only tell the inverter 0 A.
    pub can_open_pack: bool,
    /// A BMS power cycle (`BMSRESET` through the BMS power output) under way: `pausing`, `off`, `warming_up`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bms_power_cycle: Option<&'static str>,
    pub data_valid: bool,
    pub paused: bool,
    pub stopped: bool,
    /// What DBE asks of the pack's contactors (`closed`/`open`).
    pub contactor_request: &'static str,
    /// The highest level among active events: `INFO`, `WARNING`, `ERROR`.
    pub event_level: &'static str,
    pub frames_battery: FrameCounters,
    pub frames_inverter: FrameCounters,
}

/// Names of alarm bits, in a fixed order.
const ALARM_NAMES: &[(Alarms, &str)] = &[
    (Alarms::PACK_OVER_VOLTAGE, "pack_over_voltage"),
    (Alarms::PACK_UNDER_VOLTAGE, "pack_under_voltage"),
    (Alarms::CELL_OVER_VOLTAGE, "cell_over_voltage"),
    (Alarms::CELL_UNDER_VOLTAGE, "cell_under_voltage"),
    (Alarms::CELL_DEVIATION, "cell_deviation"),
    (Alarms::OVER_TEMPERATURE, "over_temperature"),
    (Alarms::UNDER_TEMPERATURE, "under_temperature"),
    (Alarms::COMMUNICATION, "communication"),
    (Alarms::BMS_FAULT, "bms_fault"),
    (Alarms::CRITICAL, "critical"),
    (Alarms::OVER_CURRENT, "over_current"),
];

fn alarm_names(a: Alarms) -> Vec<&'static str> {
    ALARM_NAMES.iter().filter(|(bit, _)| a.contains(*bit)).map(|(_, n)| *n).collect()
}

/// Every BMS fault bit by name; a test checks none is missing.
const FAULT_NAMES: &[(BmsFaults, &str)] = &[
    (BmsFaults::HVIL_OPEN, "hvil_open"),
    (BmsFaults::ISOLATION, "isolation"),
    (BmsFaults::CELL_OVERVOLTAGE, "cell_overvoltage"),
    (BmsFaults::CELL_UNDERVOLTAGE, "cell_undervoltage"),
    (BmsFaults::OVER_TEMPERATURE, "over_temperature"),
    (BmsFaults::CONTACTOR, "contactor"),
    (BmsFaults::SUPPLY_12V_LOW, "supply_12v_low"),
    (BmsFaults::INTERNAL, "internal"),
];

fn latch_names(l: dbe_core::supervisor::Latches) -> Vec<&'static str> {
    [
        (l.stopped, "stopped"),
        (l.critical_cell_over_voltage, "critical_cell_over_voltage"),
        (l.critical_cell_under_voltage, "critical_cell_under_voltage"),
        (l.design_mismatch, "design_mismatch"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// Every BMS request bit by name; a test checks none is missing.
const REQUEST_NAMES: &[(BmsRequests, &str)] = &[
    (BmsRequests::CHARGE_STOP, "charge_stop"),
    (BmsRequests::DISCHARGE_STOP, "discharge_stop"),
    (BmsRequests::OPEN_RELAYS, "open_relays"),
    (BmsRequests::CAPACITY_EMPTY, "capacity_empty"),
    (BmsRequests::FULL, "full"),
];

/// A pack-specific value as JSON: an integer, a number scaled by the descriptor's decimals, a string or a bool.
pub fn extra_json(descriptor: &ExtraDescriptor, value: &ExtraValue) -> Value {
    match value {
        ExtraValue::Number(raw) => {
            if descriptor.decimals == 0 {
                Value::from(*raw)
            } else {
                Value::from(*raw as f64 / 10f64.powi(descriptor.decimals as i32))
            }
        }
        ExtraValue::Text(t) => Value::from(t.as_str()),
        ExtraValue::Flag(b) => Value::from(*b),
    }
}

impl BatteryStatus {
    pub fn of(kind: &'static str, m: &BatteryModel) -> BatteryStatus {
        let cells = &m.cells;
        let (cmin, cmax) = (cells.min(), cells.max());
        BatteryStatus {
            kind,
            voltage_v: m.pack_voltage.map(|r| v(r.value)),
            current_a: m.current.map(|r| a(r.value)),
            power_w: m.power().map(|p| p.0),
            soc_real_pct: m.soc.map(|r| pct(r.value)),
            soh_pct: m.soh.map(|r| pct(r.value)),
            temperature_min_c: m.temperature_min.map(|r| c(r.value)),
            temperature_max_c: m.temperature_max.map(|r| c(r.value)),
            cell_min_mv: cmin.map(|(_, mv)| mv.0),
            cell_min_number: cmin.map(|(i, _)| i + 1),
            cell_max_mv: cmax.map(|(_, mv)| mv.0),
            cell_max_number: cmax.map(|(i, _)| i + 1),
            cell_delta_mv: cells.deviation().map(|d| d.0),
            cell_count: cells.count(),
            balancing_cells: cells.balancing_count(),
            total_energy_wh: m.total_energy.map(|r| r.value.0),
            remaining_energy_wh: m.remaining_energy.map(|r| r.value.0),
            bms_max_charge_power_w: m.max_charge_power.map(|r| r.value.0),
            bms_max_discharge_power_w: m.max_discharge_power.map(|r| r.value.0),
            contactors: m.contactors.name(),
            bms_status: m.bms_status.name(),
            bms_faults: FAULT_NAMES.iter().filter(|(b, _)| m.faults.contains(*b)).map(|(_, n)| *n).collect(),
            bms_requests: REQUEST_NAMES.iter().filter(|(b, _)| m.requests.contains(*b)).map(|(_, n)| *n).collect(),
            design: m.design_status.name(),
            last_frame_ms: m.last_valid_frame_at.map(|t| t.as_millis()),
            extras: m.extras.iter().map(|e| ExtraStatus::of(&e)).collect(),
            extra_table: m.extras.descriptors(),
        }
    }
}

impl Status {
    pub fn of(bridge: &Bridge, now: Instant) -> Status {
        let m = bridge.model();
        let out = bridge.output();
        let window = bridge.supervisor().soc_window();
        Status {
            time_ms: now.as_millis(),
            battery: BatteryStatus::of(bridge.battery_kind().info().name, m),
            reported: ReportedStatus {
                soc_pct: out.soc.map(pct),
                total_energy_wh: out.total_energy.map(|e| e.0),
                remaining_energy_wh: out.remaining_energy.map(|e| e.0),
                soc_window_min_pct: pct(window.min),
                soc_window_max_pct: pct(window.max),
            },
            limits: LimitStatus {
                charge_current_a: a(out.charge_current_limit),
                discharge_current_a: a(out.discharge_current_limit),
                charge_power_w: out.charge_power_limit.0,
                discharge_power_w: out.discharge_power_limit.0,
                charge_limited_by: out.charge_limited_by.name(),
                discharge_limited_by: out.discharge_limited_by.name(),
                max_charge_voltage_v: v(out.max_charge_voltage),
                min_discharge_voltage_v: v(out.min_discharge_voltage),
                temporary_until_ms: out.temporary_limits_until.map(|t| t.as_millis()),
            },
            alarms: alarm_names(out.alarms),
            warnings: alarm_names(out.warnings),
            inverter: InverterStatus {
                protocol: bridge.inverter_config_kind().info().name,
                present: out.inverter_present,
                last_heard_ms: bridge.inverter_last_heard().map(|t| t.as_millis()),
                reports: InverterReports::of(bridge.inverter()),
            },
            unknown_reading: out.unknown.map(|q| q.name()),
            latched: latch_names(out.latches),
            contactors_open_pending: out.contactors_open_pending,
            contactor_mode: bridge.contactor_mode().name(),
            can_open_pack: bridge.contactor_mode() != dbe_core::contactor::ContactorMode::None,
            bms_power_cycle: bridge.bms_cycle_phase(),
            data_valid: out.data_valid,
            paused: out.paused,
            stopped: out.stopped,
            contactor_request: match out.contactors {
                Some(ContactorRequest::Closed) => "closed",
                _ => "open",
            },
            event_level: bridge.events().level().name(),
            frames_battery: bridge.stats(Port::Battery).into(),
            frames_inverter: bridge.stats(Port::Inverter).into(),
        }
    }
}

/// Every cell's voltage and balancing flag.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CellsStatus {
    pub voltages_mv: Vec<u16>,
    pub balancing: Vec<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_mv: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_mv: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_ms: Option<u64>,
}

impl CellsStatus {
    pub fn of(bridge: &Bridge) -> CellsStatus {
        Self::of_model(bridge.model())
    }

    pub fn of_model(model: &BatteryModel) -> CellsStatus {
        let cells = &model.cells;
        CellsStatus {
            voltages_mv: cells.voltages().iter().map(|v| v.0).collect(),
            balancing: (0..cells.count()).map(|i| cells.is_balancing(i)).collect(),
            min_mv: cells.min().map(|(_, v)| v.0),
            max_mv: cells.max().map(|(_, v)| v.0),
            updated_ms: cells.updated_at().map(|t| t.as_millis()),
        }
    }
}

/// One event kind with its record.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EventStatus {
    pub event_type: &'static str,
    pub level: &'static str,
    pub message: &'static str,
    pub count: u32,
    pub active: bool,
    pub data: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<u64>,
}

impl EventStatus {
    pub fn of(kind: EventKind, r: &EventRecord) -> EventStatus {
        EventStatus {
            event_type: kind.name(),
            level: kind.level().name(),
            message: kind.message(),
            count: r.count,
            active: r.active,
            data: r.data,
            first_ms: r.first_at.map(|t| t.as_millis()),
            last_ms: r.last_at.map(|t| t.as_millis()),
        }
    }

    /// Every event that has occurred at least once.
    pub fn all(bridge: &Bridge) -> Vec<EventStatus> {
        bridge.events().records().filter(|(_, r)| r.count > 0).map(|(k, r)| EventStatus::of(k, r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_inverter_reports_is_shown_once_it_has_said_it() {
        use dbe_core::bridge::BridgeConfig;
        use dbe_core::inverter::{InverterConfig, InverterKind};
        use dbe_core::CanFrame;
        let cfg = |kind| BridgeConfig {
            battery: dbe_core::battery::BatteryKind::NissanLeaf.into(),
            inverter: InverterConfig::default_for(kind),
            supervisor: Default::default(),
            contactors: Default::default(),
        };
        // BYD CAN 0x091: 401.2 V (0x0FAC), -12.34 A (0xFB2E in 0.01 A), 23.5 °C (0x00EB), big-endian.
        let mut b = Bridge::start(cfg(InverterKind::BydCan), Instant::ZERO, true, Default::default());
        let json = serde_json::to_value(Status::of(&b, Instant::ZERO)).unwrap();
        assert!(json["inverter"].get("reports").is_none(), "nothing said yet: {}", json["inverter"]);
        let f = CanFrame::standard(0x091, &[0x0F, 0xAC, 0xFB, 0x2E, 0x00, 0xEB, 0, 0]).unwrap();
        b.handle_frame(Instant::from_millis(5), Port::Inverter, &f).unwrap();
        let json = serde_json::to_value(Status::of(&b, Instant::from_millis(5))).unwrap();
        let r = &json["inverter"]["reports"];
        assert_eq!((r["measured_voltage_v"].as_f64(), r["measured_current_a"].as_f64()), (Some(401.2), Some(-12.34)));
        assert_eq!(r["measured_temperature_c"].as_f64(), Some(23.5));
        // Growatt 0x3020: charge 0xAA, discharge 0x00; 0x3030 byte 7 = 01 operating.
        let mut b = Bridge::start(cfg(InverterKind::GrowattHvCan), Instant::ZERO, true, Default::default());
        let ext = |id, d: &[u8]| CanFrame::extended(id, d).unwrap();
        b.handle_frame(Instant::ZERO, Port::Inverter, &ext(0x3020, &[0xAA, 0, 0, 0, 0, 0, 0, 0])).unwrap();
        b.handle_frame(Instant::ZERO, Port::Inverter, &ext(0x3030, &[0x18, 0x0C, 0x13, 0x17, 0x1C, 0x17, 0, 1]))
            .unwrap();
        let json = serde_json::to_value(Status::of(&b, Instant::ZERO)).unwrap();
        let r = &json["inverter"]["reports"];
        assert_eq!((r["charge_requested"].as_bool(), r["discharge_requested"].as_bool()), (Some(true), Some(false)));
        assert_eq!(r["working"], "operating");
    }

    #[test]
    fn every_alarm_fault_and_request_bit_has_a_name() {
        let all = |names: &[(u32, &str)]| names.iter().fold(0, |a, (b, _)| a | b);
        let alarms: Vec<(u32, &str)> = ALARM_NAMES.iter().map(|(b, n)| (b.bits(), *n)).collect();
        assert_eq!(all(&alarms), Alarms::all().bits(), "an alarm bit without a name");
        let faults: Vec<(u32, &str)> = FAULT_NAMES.iter().map(|(b, n)| (b.bits(), *n)).collect();
        assert_eq!(all(&faults), BmsFaults::all().bits(), "a fault bit without a name");
        let requests: Vec<(u32, &str)> = REQUEST_NAMES.iter().map(|(b, n)| (b.bits() as u32, *n)).collect();
        assert_eq!(all(&requests), BmsRequests::all().bits() as u32, "a request bit without a name");
    }

    #[test]
    fn known_extras_come_with_their_metadata_and_unknown_ones_are_left_out() {
        use dbe_core::battery::nissan_leaf::{DESIGN, EXTRAS};
        use dbe_core::model::{NumberId, TextId};
        let mut m = BatteryModel::new(DESIGN).with_extras(EXTRAS);
        assert!(BatteryStatus::of("nissan-leaf", &m).extras.is_empty());
        m.extras.set_number(Instant::ZERO, NumberId::of(EXTRAS, "leaf_hx"), 8751);
        m.extras.set_text(Instant::ZERO, TextId::of(EXTRAS, "generation"), "ZE1");
        let b = BatteryStatus::of("nissan-leaf", &m);
        assert_eq!(b.extra_table, EXTRAS, "discovery needs every descriptor, known or not");
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(
            json["extras"],
            serde_json::json!([
                {"key": "generation", "label": "LEAF generation", "value": "ZE1"},
                {"key": "leaf_hx", "label": "Hx", "value": 87.51, "unit": "%", "decimals": 2},
            ])
        );
        assert!(json.get("extra_table").is_none());
    }
}
