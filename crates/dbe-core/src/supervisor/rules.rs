//! The supervisor's rules: one small function each, run from [`RULES`] in this fixed order on every update.
//!
//! Each rule reads the model, the configuration and the supervisor's own state, and may offer a limit per
//! direction (the least offer wins; among equal offers the earlier rule's name is reported as `limited_by`), derate
//! a direction (a factor applied last), raise or clear events, set alarm or warning flags, and ask for the
//! contactors to open. No rule switches itself off because its input is absent: a reading a rule needs that is
//! missing or too old zeroes the directions it guards, with `unknown:<reading>` as the reason.
//!
//! | order | rule | input | effect |
//! |---|---|---|---|
//! | 1 | `stopped` | `Stop` latch | both 0, contactors open |
//! | 2 | `critical` | cells beyond the critical levels, design contradicted | latch (persisted); both 0, open |
//! | 3 | `unknown:<reading>` | every required reading (the driver's list, plus pack voltage, current, SOC, both temperatures and all cells, at most 60 s old) | missing or older than its age: the directions it guards 0, open, `STALE_VALUE` |
//! | 4 | `stale` | last valid frame and pack voltage | older than the stale timeout: both 0, open, `CAN_BATTERY_MISSING` |
//! | 5 | `design_pending` | driver's design status | not confirmed: both 0, open |
//! | 6 | `bms_fault` | every `BmsFaults` bit ([`FAULT_RULES`]), BMS status fault, contactor fault | per bit |
//! | 7 | `bms_request:<request>` | every `BmsRequests` bit ([`REQUEST_RULES`]) | per bit |
//! | 8 | (warnings) | every `BmsWarnings` bit | warning event only |
//! | 9 | `contactors_open` | contactor state the pack reports | open or precharging: both 0 |
//! | 10 | `inverter_missing`, `inverter_permission` | inverter last heard, its permission (Pylon 0x8210, an enable input) | silent past its timeout, or permission withdrawn: both 0; contactors open once current ≤ `open_current` or after `inverter_lost_open_ceiling` |
//! | 11 | `over_current` | measured current vs the limit told | above by `over_current_margin` for `over_current_time`: `CHARGE_/DISCHARGE_LIMIT_EXCEEDED`, paused until `Resume` |
//! | 12 | `paused` | `Pause` | both 0 (contactors stay) |
//! | 13 | `pack_voltage` | pack voltage | above max: charge 0; below min: discharge 0 |
//! | 14 | `cell_voltage` | highest and lowest cell | warning band derates, limit stops that direction |
//! | 15 | (warning) | cell spread | `CELL_DEVIATION_HIGH` |
//! | 16 | `temperature` | min and max temperature | hot: both 0, derate near it; cold: charge 0 (and discharge below its own minimum) |
//! | 17 | `soc_full` / `soc_empty` | SOC (scaled by the window) | 100 %: charge 0, 0 %: discharge 0, tapers before |
//! | 18 | `bms` | BMS power/current limits | the BMS's own limit |
//! | 19 | `user` | configured current and power | the user's limit |
//! | 20 | `temporary` | remote limits | lower only |
//! | 21 | (warning) | current sign vs SOC movement | `CURRENT_SIGN_IMPLAUSIBLE` |
//!
//! Contactors may close only when no rule asks them open, every required reading is fresh, the design is
//! confirmed and the inverter is heard. Once closed, an open request waits for the measured current to fall to
//! `open_current` (the limits are already 0) or for the ceiling (`open_ceiling`, Battery-Emulator's 7 s; 60 s when
//! only the inverter is lost), so a contactor is not opened under load when it can be helped.

use super::{
    Alarms, CellLimits, LimitReason, Output, SocWindow, Supervisor, SupervisorConfig, TemperatureLimits,
    CELL_HYSTERESIS, PACK_HYSTERESIS, TEMP_HYSTERESIS,
};
use crate::battery::ContactorRequest;
use crate::events::EventKind;
use crate::model::{
    BatteryModel, BmsFaults, BmsRequests, BmsStatus, BmsWarnings, Contactors, DesignStatus, Quantity, MAX_READING_AGE,
};
use crate::time::{Duration, Instant};
use crate::units::{current_for_power, BasisPoints, DeciAmps, DeciVolts, MilliVolts, WattHours};

/// One rule of the table.
pub struct Rule {
    /// What `limited_by` reports when this rule sets the limit (`unknown:…` and `bms_request:…` add the
    /// reading or request).
    pub name: &'static str,
    pub apply: fn(&mut Supervisor, &mut Eval<'_>),
}

/// The rules in the order they run (see the module doc).
pub const RULES: &[Rule] = &[
    Rule { name: "stopped", apply: stopped },
    Rule { name: "critical", apply: critical },
    Rule { name: "unknown", apply: required_readings },
    Rule { name: "stale", apply: stale },
    Rule { name: "design_pending", apply: design },
    Rule { name: "bms_fault", apply: bms_faults },
    Rule { name: "bms_request", apply: bms_requests },
    Rule { name: "bms_warning", apply: bms_warnings },
    Rule { name: "contactors_open", apply: contactors_reported },
    Rule { name: "inverter_missing", apply: inverter },
    Rule { name: "over_current", apply: over_current },
    Rule { name: "paused", apply: paused },
    Rule { name: "pack_voltage", apply: pack_voltage },
    Rule { name: "cell_voltage", apply: cell_voltage },
    Rule { name: "cell_deviation", apply: cell_deviation },
    Rule { name: "temperature", apply: temperature },
    Rule { name: "soc_full", apply: soc_full },
    Rule { name: "soc_empty", apply: soc_empty },
    Rule { name: "bms", apply: bms_limits },
    Rule { name: "user", apply: user_limits },
    Rule { name: "temporary", apply: temporary },
    Rule { name: "current_direction", apply: current_direction },
];

/// What a BMS fault bit does.
pub struct FaultRule {
    pub fault: BmsFaults,
    pub event: EventKind,
    pub stop_charge: bool,
    pub stop_discharge: bool,
    pub open: bool,
}

/// Every `BmsFaults` bit and its effect; a test checks that no bit is missing.
pub const FAULT_RULES: &[FaultRule] = &[
    FaultRule {
        fault: BmsFaults::HVIL_OPEN,
        event: EventKind::HvilFailure,
        stop_charge: true,
        stop_discharge: true,
        open: true,
    },
    FaultRule {
        fault: BmsFaults::ISOLATION,
        event: EventKind::BatteryIsolation,
        stop_charge: true,
        stop_discharge: true,
        open: true,
    },
    FaultRule {
        fault: BmsFaults::CELL_OVERVOLTAGE,
        event: EventKind::BatteryFault,
        stop_charge: true,
        stop_discharge: false,
        open: false,
    },
    FaultRule {
        fault: BmsFaults::CELL_UNDERVOLTAGE,
        event: EventKind::BatteryFault,
        stop_charge: false,
        stop_discharge: true,
        open: false,
    },
    FaultRule {
        fault: BmsFaults::OVER_TEMPERATURE,
        event: EventKind::BatteryFault,
        stop_charge: true,
        stop_discharge: true,
        open: false,
    },
    FaultRule {
        fault: BmsFaults::CONTACTOR,
        event: EventKind::BatteryFault,
        stop_charge: true,
        stop_discharge: true,
        open: true,
    },
    FaultRule {
        fault: BmsFaults::SUPPLY_12V_LOW,
        event: EventKind::Low12V,
        stop_charge: true,
        stop_discharge: true,
        open: false,
    },
    FaultRule {
        fault: BmsFaults::INTERNAL,
        event: EventKind::BatteryFault,
        stop_charge: true,
        stop_discharge: true,
        open: true,
    },
];

/// What a BMS request does.
pub struct RequestRule {
    pub request: BmsRequests,
    pub name: &'static str,
    pub event: EventKind,
    pub stop_charge: bool,
    pub stop_discharge: bool,
    pub open: bool,
}

/// Every `BmsRequests` bit and its effect; a test checks that no bit is missing.
pub const REQUEST_RULES: &[RequestRule] = &[
    RequestRule {
        request: BmsRequests::CHARGE_STOP,
        name: "bms_request:charge_stop",
        event: EventKind::BatteryChargeStopRequest,
        stop_charge: true,
        stop_discharge: false,
        open: false,
    },
    RequestRule {
        request: BmsRequests::DISCHARGE_STOP,
        name: "bms_request:discharge_stop",
        event: EventKind::BatteryDischargeStopRequest,
        stop_charge: false,
        stop_discharge: true,
        open: false,
    },
    RequestRule {
        request: BmsRequests::OPEN_RELAYS,
        name: "bms_request:open_relays",
        event: EventKind::BatteryRelayCutRequest,
        stop_charge: true,
        stop_discharge: true,
        open: true,
    },
    RequestRule {
        request: BmsRequests::CAPACITY_EMPTY,
        name: "bms_request:empty",
        event: EventKind::BatteryEmpty,
        stop_charge: false,
        stop_discharge: true,
        open: false,
    },
    RequestRule {
        request: BmsRequests::FULL,
        name: "bms_request:full",
        event: EventKind::BatteryFull,
        stop_charge: true,
        stop_discharge: false,
        open: false,
    },
];

/// Every `BmsWarnings` bit and its event.
pub const WARNING_RULES: &[(BmsWarnings, EventKind)] =
    &[(BmsWarnings::CAUTION, EventKind::BatteryCaution), (BmsWarnings::INTERLOCK_OPEN, EventKind::InterlockOpen)];

pub(super) fn request_reason_name(r: BmsRequests) -> &'static str {
    REQUEST_RULES.iter().find(|q| q.request == r).map_or("bms_request", |q| q.name)
}

/// Readings every pack must supply whatever its driver declares (a rule below needs each of them).
const CORE: [Quantity; 6] = [
    Quantity::PackVoltage,
    Quantity::Current,
    Quantity::Soc,
    Quantity::TemperatureMin,
    Quantity::TemperatureMax,
    Quantity::Cells,
];

/// One entry per reading, indexed by `Quantity as usize` (the order of [`Quantity::ALL`]).
type PerQuantity<T> = [T; Quantity::ALL.len()];

// `Quantity::ALL` lists the readings in declaration order, so `q as usize` is `q`'s place in it.
const _: () = {
    let mut i = 0;
    while i < Quantity::ALL.len() {
        assert!(Quantity::ALL[i] as usize == i);
        i += 1;
    }
};

/// How old each reading may be: the driver's declared age (its first declaration), else [`MAX_READING_AGE`] for
/// the core readings; `None` when the pack does not supply it and no rule needs it. Worked out once per
/// evaluation: a dozen rules ask, and a search of the driver's list each time was most of the supervisor's cost.
fn max_ages(model: &BatteryModel) -> PerQuantity<Option<Duration>> {
    let mut ages = [None; Quantity::ALL.len()];
    for r in model.required.iter().rev() {
        ages[r.quantity as usize] = Some(r.max_age);
    }
    for q in CORE {
        ages[q as usize].get_or_insert(MAX_READING_AGE);
    }
    ages
}

/// Which directions a reading guards: (charge, discharge).
fn guards(q: Quantity) -> (bool, bool) {
    match q {
        Quantity::BmsChargePower | Quantity::BmsChargeCurrent => (true, false),
        Quantity::BmsDischargePower | Quantity::BmsDischargeCurrent => (false, true),
        _ => (true, true),
    }
}

/// Since when the battery counts as heard: the last valid frame, but no later than the last pack voltage (a pack
/// whose checksummed frames are all rejected while its unprotected ones still arrive is not heard).
pub(super) fn fresh_since(model: &BatteryModel) -> Option<Instant> {
    let frame = model.last_valid_frame_at?;
    Some(model.pack_voltage.map_or(frame, |v| v.at.min(frame)))
}

/// Fraction of the way a value has left a band: 10 000 at or before `start`, 0 at or past `end` (`end` may be
/// above or below `start`).
fn taper(value: i32, start: i32, end: i32) -> BasisPoints {
    if start == end {
        return if value < start { BasisPoints::FULL } else { BasisPoints(0) };
    }
    let (v, s, e) = if end > start { (value, start, end) } else { (-value, -start, -end) };
    if v <= s {
        BasisPoints::FULL
    } else if v >= e {
        BasisPoints(0)
    } else {
        BasisPoints(((e - v) as i64 * 10_000 / (e - s) as i64) as u16)
    }
}

fn above(active: bool, value: i32, limit: i32, hysteresis: i32) -> bool {
    if active {
        value > limit - hysteresis
    } else {
        value > limit
    }
}

fn below(active: bool, value: i32, limit: i32, hysteresis: i32) -> bool {
    if active {
        value < limit + hysteresis
    } else {
        value < limit
    }
}

/// A limit under construction: the least value offered so far and who offered it, plus the strongest derating
/// factor, applied last (a derating scales the final cap, whichever rule set it).
#[derive(Copy, Clone)]
struct Least {
    value: DeciAmps,
    reason: LimitReason,
    factor: BasisPoints,
    factor_reason: LimitReason,
}

impl Least {
    fn new() -> Self {
        Least {
            value: DeciAmps(i32::MAX),
            reason: LimitReason::User,
            factor: BasisPoints::FULL,
            factor_reason: LimitReason::User,
        }
    }

    fn offer(&mut self, value: DeciAmps, reason: LimitReason) {
        let value = DeciAmps(value.0.max(0));
        if value < self.value {
            self.value = value;
            self.reason = reason;
        }
    }

    fn zero(&mut self, reason: LimitReason) {
        self.offer(DeciAmps(-1), reason);
    }

    /// Scales the final limit by `factor` (0..=10 000 basis points); the strongest factor wins.
    fn derate(&mut self, factor: BasisPoints, reason: LimitReason) {
        if factor < self.factor {
            self.factor = factor;
            self.factor_reason = reason;
        }
    }

    /// The limit with the derating applied, and the rule that set it.
    fn finish(mut self) -> Self {
        if self.factor < BasisPoints::FULL {
            let derated = DeciAmps((self.value.0 as i64 * self.factor.0 as i64 / 10_000) as i32);
            self.offer(derated, self.factor_reason);
        }
        self
    }
}

bitflags::bitflags! {
    /// Why the contactors must open.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
    struct OpenCauses: u16 {
        const STOPPED = 1 << 0;
        const CRITICAL = 1 << 1;
        const UNKNOWN = 1 << 2;
        const STALE = 1 << 3;
        const DESIGN = 1 << 4;
        const FAULT = 1 << 5;
        const REQUEST = 1 << 6;
        const INVERTER = 1 << 7;
    }
}

/// One evaluation in progress: the inputs, and the limits, flags and open causes the rules have given so far.
pub struct Eval<'a> {
    now: Instant,
    started: Instant,
    model: &'a BatteryModel,
    inverter_last_heard: Option<Instant>,
    cfg: SupervisorConfig,
    soc_window: SocWindow,
    cells: CellLimits,
    charge: Least,
    discharge: Least,
    alarms: Alarms,
    warnings: Alarms,
    open: OpenCauses,
    unknown: Option<Quantity>,
    stale: bool,
    inverter_present: bool,
    max_pack: DeciVolts,
    min_pack: DeciVolts,
    /// [`max_ages`] of the model.
    ages: PerQuantity<Option<Duration>>,
    /// Each reading's last update if it is there and young enough (see [`Eval::fresh_at`]); the model and `now`
    /// do not change during an evaluation.
    fresh: PerQuantity<Option<Instant>>,
    /// The earliest moment after `after` at which a reading that is there becomes too old (`+ 1 ms`, as the
    /// supervisor's other deadlines), for [`Supervisor::poll_timeout`]; found in the same pass as `fresh`.
    pub(super) readings_expiry: Option<Instant>,
}

impl<'a> Eval<'a> {
    pub(super) fn new(
        now: Instant,
        started: Instant,
        model: &'a BatteryModel,
        inverter_last_heard: Option<Instant>,
        cfg: &SupervisorConfig,
        soc_window: SocWindow,
        after: Option<Instant>,
    ) -> Self {
        let design = &model.design;
        let cells = cfg.cell_limits.unwrap_or(CellLimits::for_chemistry(design.chemistry)).within(design);
        let per_cells = |mv: MilliVolts| (mv.0 as u32 * design.cells as u32 / 100).min(u16::MAX as u32) as u16;
        let max_pack =
            design.max_pack_voltage.0.min(cfg.max_pack_voltage.map_or(u16::MAX, |v| v.0)).min(per_cells(cells.max));
        let min_pack = design.min_pack_voltage.0.max(cfg.min_pack_voltage.map_or(0, |v| v.0)).max(per_cells(cells.min));
        let ages = max_ages(model);
        let mut fresh = [None; Quantity::ALL.len()];
        let mut readings_expiry: Option<Instant> = None;
        for (q, fresh) in Quantity::ALL.into_iter().zip(&mut fresh) {
            if let Some(at) = q.updated_at(model) {
                let max_age = ages[q as usize];
                *fresh = (now.saturating_since(at) <= max_age.unwrap_or(MAX_READING_AGE)).then_some(at);
                if let Some(age) = max_age {
                    let t = at + age + Duration::from_millis(1);
                    if after.is_none_or(|a| t > a) {
                        readings_expiry = Some(readings_expiry.map_or(t, |e| e.min(t)));
                    }
                }
            }
        }
        Eval {
            now,
            started,
            model,
            inverter_last_heard,
            cfg: *cfg,
            soc_window,
            cells,
            charge: Least::new(),
            discharge: Least::new(),
            alarms: Alarms::empty(),
            warnings: Alarms::empty(),
            open: OpenCauses::empty(),
            unknown: None,
            stale: false,
            inverter_present: false,
            max_pack: DeciVolts(max_pack),
            min_pack: DeciVolts(min_pack),
            ages,
            fresh,
            readings_expiry,
        }
    }

    fn zero_both(&mut self, reason: LimitReason) {
        self.charge.zero(reason);
        self.discharge.zero(reason);
    }

    /// `q`'s last update, if the reading is there and young enough.
    fn fresh_at(&self, q: Quantity) -> Option<Instant> {
        self.fresh[q as usize]
    }

    /// Zeroes what `q` guards because it is missing or too old (idempotent: the `unknown` rule did it first).
    fn unknown(&mut self, q: Quantity) {
        let (c, d) = guards(q);
        if c {
            self.charge.zero(LimitReason::Unknown(q));
        }
        if d {
            self.discharge.zero(LimitReason::Unknown(q));
        }
        self.open |= OpenCauses::UNKNOWN;
        self.unknown.get_or_insert(q);
    }

    fn value<T: Copy>(&mut self, q: Quantity, r: Option<crate::model::Reading<T>>) -> Option<T> {
        match (self.fresh_at(q), r) {
            (Some(_), Some(r)) => Some(r.value),
            _ => {
                self.unknown(q);
                None
            }
        }
    }

    /// The pack voltage for converting power to current, 0 V (and so 0 A) when unknown.
    fn voltage(&self) -> DeciVolts {
        match self.fresh_at(Quantity::PackVoltage) {
            Some(_) => self.model.pack_voltage.map_or(DeciVolts(0), |r| r.value),
            None => DeciVolts(0),
        }
    }

    fn fresh_current(&self) -> Option<DeciAmps> {
        self.fresh_at(Quantity::Current).and(self.model.current.map(|r| r.value))
    }

    pub(super) fn finish(self, s: &mut Supervisor) -> Output {
        let (charge, discharge) = (self.charge.finish(), self.discharge.finish());
        let m = self.model;
        let all_fresh = self.unknown.is_none();
        let design_ok = m.design_status == DesignStatus::Confirmed;
        let data_valid = all_fresh && design_ok && !self.stale && !m.required.is_empty();
        let was_closed = s.out.contactors == Some(ContactorRequest::Closed);
        let close_ok = self.open.is_empty() && data_valid && self.inverter_present;
        let contactors = if close_ok {
            s.open_pending_since = None;
            ContactorRequest::Closed
        } else if !was_closed {
            s.open_pending_since = None;
            ContactorRequest::Open
        } else {
            // Open, but not under load if it can be helped: the limits are 0 already; wait for the current to
            // fall, or for the ceiling.
            let since = *s.open_pending_since.get_or_insert(self.now);
            let ceiling = if self.open == OpenCauses::INVERTER || self.open.is_empty() {
                self.cfg.inverter_lost_open_ceiling
            } else {
                self.cfg.open_ceiling
            };
            let low = self.fresh_current().is_some_and(|i| i.abs() <= self.cfg.open_current);
            if low || self.now.saturating_since(since) >= ceiling {
                s.open_pending_since = None;
                ContactorRequest::Open
            } else {
                ContactorRequest::Closed
            }
        };
        let soc_real = self.fresh_at(Quantity::Soc).and(m.soc.map(|r| r.value));
        let soc = soc_real.map(|r| self.soc_window.scale(r));
        let span = self.soc_window.span();
        let total_energy = m.total_energy.map(|r| WattHours(span.of(r.value.0)));
        let remaining_energy = match (total_energy, soc) {
            (Some(total), Some(s)) => Some(WattHours(s.of(total.0))),
            _ => None,
        };
        let voltage = self.voltage();
        let cells = m.design.cells as u32;
        let target_cell = self
            .cfg
            .charge_target_cell_voltage
            .unwrap_or(MilliVolts(self.cells.max.0.saturating_sub(100)))
            .min(self.cells.max);
        let target = (target_cell.0 as u32 * cells / 100).min(u16::MAX as u32) as u16;
        Output {
            soc,
            total_energy,
            remaining_energy,
            charge_current_limit: charge.value,
            discharge_current_limit: discharge.value,
            charge_power_limit: crate::units::power(voltage, charge.value),
            discharge_power_limit: crate::units::power(voltage, discharge.value),
            charge_limited_by: charge.reason,
            discharge_limited_by: discharge.reason,
            max_charge_voltage: DeciVolts(target.min(self.max_pack.0)),
            min_discharge_voltage: self.min_pack,
            alarms: self.alarms,
            warnings: self.warnings,
            temperature_limits: TemperatureLimits {
                max: self.cfg.max_temperature,
                min_charge: self.cfg.min_charge_temperature,
                min_discharge: self.cfg.min_discharge_temperature,
            },
            contactors: Some(contactors),
            contactors_open_pending: contactors == ContactorRequest::Closed && !close_ok,
            data_valid,
            unknown: self.unknown,
            design_status: m.design_status,
            inverter_present: self.inverter_present,
            paused: s.paused || s.over_current_paused,
            stopped: s.latches.stopped,
            latches: s.latches,
            soc_window: Some(self.soc_window),
            temporary_limits_until: s.temporary.map(|t| t.until),
        }
    }
}

fn stopped(s: &mut Supervisor, e: &mut Eval<'_>) {
    if s.latches.stopped {
        e.zero_both(LimitReason::Stopped);
        e.open |= OpenCauses::STOPPED;
    }
}

fn critical(s: &mut Supervisor, e: &mut Eval<'_>) {
    let now = e.now;
    let cells = e.fresh_at(Quantity::Cells).and(e.model.cells.max().zip(e.model.cells.min()));
    let h = CELL_HYSTERESIS as i32;
    let cell_data = |i: usize, v: MilliVolts| ((i as i32 + 1) << 16) | v.0 as i32;
    let mut over_gone = false;
    let mut under_gone = false;
    if let Some(((imax, vmax), (imin, vmin))) = cells {
        let ev = &mut s.events;
        let over =
            above(ev.is_active(EventKind::CellCriticalOverVoltage), vmax.0 as i32, e.cells.critical_high.0 as i32, h);
        let under =
            below(ev.is_active(EventKind::CellCriticalUnderVoltage), vmin.0 as i32, e.cells.critical_low.0 as i32, h);
        // A latched event stays active (and counted once) until `Start`; only a new episode raises it again.
        if over {
            s.latches.critical_cell_over_voltage = true;
            ev.raise(now, EventKind::CellCriticalOverVoltage, cell_data(imax, vmax));
        }
        if under {
            s.latches.critical_cell_under_voltage = true;
            ev.raise(now, EventKind::CellCriticalUnderVoltage, cell_data(imin, vmin));
        }
        over_gone = !over && (vmax.0 as i32) < e.cells.critical_high.0 as i32 - h;
        under_gone = !under && (vmin.0 as i32) > e.cells.critical_low.0 as i32 + h;
    }
    let contradicted = e.model.design_status == DesignStatus::Contradicted;
    if contradicted {
        s.latches.design_mismatch = true;
        s.events.raise(now, EventKind::BatteryDesignMismatch, e.model.design.cells as i32);
    }
    let l = s.latches;
    s.critical_gone = (!l.critical_cell_over_voltage || over_gone)
        && (!l.critical_cell_under_voltage || under_gone)
        && (!l.design_mismatch || e.model.design_status == DesignStatus::Confirmed);
    if l.critical() {
        e.alarms |= Alarms::CRITICAL;
        e.zero_both(LimitReason::Critical);
        e.open |= OpenCauses::CRITICAL;
    }
}

fn required_readings(s: &mut Supervisor, e: &mut Eval<'_>) {
    if e.model.required.is_empty() {
        e.zero_both(LimitReason::NoRequirements);
        e.open |= OpenCauses::UNKNOWN;
        e.alarms |= Alarms::COMMUNICATION;
        return;
    }
    let mut went_stale: Option<Quantity> = None;
    for q in Quantity::ALL {
        if e.ages[q as usize].is_some() && e.fresh_at(q).is_none() {
            e.unknown(q);
            if q.updated_at(e.model).is_some() || e.model.last_valid_frame_at.is_some() {
                went_stale.get_or_insert(q);
            }
        }
    }
    if e.unknown.is_some() {
        e.alarms |= Alarms::COMMUNICATION;
    }
    // At start nothing is known yet: the event waits for the stale timeout, as `CAN_BATTERY_MISSING` does.
    let settled = e.now.saturating_since(e.started) > e.cfg.stale_timeout;
    let q = if settled { e.unknown } else { went_stale.filter(|&q| q.updated_at(e.model).is_some()) };
    let data = q.map_or(0, |q| Quantity::ALL.iter().position(|&x| x == q).map_or(0, |i| i as i32 + 1));
    s.events.set_condition(e.now, EventKind::StaleValue, q.is_some(), data);
}

fn stale(s: &mut Supervisor, e: &mut Eval<'_>) {
    let since = fresh_since(e.model).unwrap_or(e.started);
    e.stale = e.now.saturating_since(since) > e.cfg.stale_timeout;
    s.events.set_condition(e.now, EventKind::BatteryMissing, e.stale, 0);
    if e.stale || e.model.last_valid_frame_at.is_none() {
        e.alarms.set(Alarms::COMMUNICATION, true);
        e.zero_both(LimitReason::Stale);
        e.open |= OpenCauses::STALE;
    }
}

fn design(_: &mut Supervisor, e: &mut Eval<'_>) {
    match e.model.design_status {
        DesignStatus::Confirmed => {}
        // A contradicted design is latched by the `critical` rule.
        DesignStatus::Pending | DesignStatus::Contradicted => {
            e.zero_both(LimitReason::DesignPending);
            e.open |= OpenCauses::DESIGN;
        }
    }
}

fn bms_faults(s: &mut Supervisor, e: &mut Eval<'_>) {
    let m = e.model;
    let other = m.bms_status == BmsStatus::Fault || m.contactors == Contactors::Fault;
    let mut battery_fault = other;
    let mut any = other;
    for r in FAULT_RULES {
        let on = m.faults.contains(r.fault);
        if r.event == EventKind::BatteryFault {
            battery_fault |= on;
        } else {
            s.events.set_condition(e.now, r.event, on, m.faults.bits() as i32);
        }
        if !on {
            continue;
        }
        any = true;
        if r.stop_charge {
            e.charge.zero(LimitReason::BmsFault);
        }
        if r.stop_discharge {
            e.discharge.zero(LimitReason::BmsFault);
        }
        if r.open {
            e.open |= OpenCauses::FAULT;
        }
    }
    if other {
        e.zero_both(LimitReason::BmsFault);
        e.open |= OpenCauses::FAULT;
    }
    s.events.set_condition(e.now, EventKind::BatteryFault, battery_fault, m.faults.bits() as i32);
    e.alarms.set(Alarms::BMS_FAULT, any);
}

fn bms_requests(s: &mut Supervisor, e: &mut Eval<'_>) {
    let m = e.model;
    for r in REQUEST_RULES {
        let on = m.requests.contains(r.request);
        s.events.set_condition(e.now, r.event, on, m.requests.bits() as i32);
        if !on {
            continue;
        }
        let reason = LimitReason::BmsRequest(r.request);
        if r.stop_charge {
            e.charge.zero(reason);
        }
        if r.stop_discharge {
            e.discharge.zero(reason);
        }
        if r.open {
            e.open |= OpenCauses::REQUEST;
            e.alarms |= Alarms::BMS_FAULT;
        }
    }
}

fn bms_warnings(s: &mut Supervisor, e: &mut Eval<'_>) {
    for &(w, event) in WARNING_RULES {
        s.events.set_condition(e.now, event, e.model.warnings.contains(w), 0);
    }
}

fn contactors_reported(_: &mut Supervisor, e: &mut Eval<'_>) {
    if matches!(e.model.contactors, Contactors::Open | Contactors::Precharging) {
        e.zero_both(LimitReason::ContactorsOpen);
    }
}

fn inverter(s: &mut Supervisor, e: &mut Eval<'_>) {
    let present = match e.cfg.inverter_timeout {
        Some(timeout) => e.inverter_last_heard.is_some_and(|t| e.now.saturating_since(t) <= timeout),
        None => true,
    };
    s.ever_heard_inverter |= present;
    let never = e.inverter_last_heard.is_none()
        && e.now.saturating_since(e.started) > e.cfg.inverter_timeout.unwrap_or(Duration::ZERO);
    let missing = e.cfg.inverter_timeout.is_some() && ((s.ever_heard_inverter && !present) || never);
    s.events.set_condition(e.now, EventKind::InverterMissing, missing, 0);
    e.inverter_present = present;
    if !present {
        e.zero_both(LimitReason::InverterMissing);
        e.open |= OpenCauses::INVERTER;
    }
    if s.inverter_permission == Some(false) {
        e.zero_both(LimitReason::InverterPermission);
        e.open |= OpenCauses::INVERTER;
    }
}

fn over_current(s: &mut Supervisor, e: &mut Eval<'_>) {
    let now = e.now;
    if let Some(i) = e.fresh_current() {
        let margin = e.cfg.over_current_margin.0;
        let told = (s.out.charge_current_limit.0, s.out.discharge_current_limit.0);
        let over_charge = i.0 > told.0.saturating_add(margin);
        let over_discharge = -i.0 > told.1.saturating_add(margin);
        for (over, since, kind) in [
            (over_charge, &mut s.over_charge_since, EventKind::ChargeLimitExceeded),
            (over_discharge, &mut s.over_discharge_since, EventKind::DischargeLimitExceeded),
        ] {
            if !over {
                *since = None;
                continue;
            }
            let t = *since.get_or_insert(now);
            if now.saturating_since(t) >= e.cfg.over_current_time && !s.events.is_active(kind) {
                s.events.raise(now, kind, i.0);
                if !s.over_current_paused {
                    s.over_current_paused = true;
                    s.events.raise(now, EventKind::PauseBegin, 0);
                }
            }
        }
    } else {
        // Without a current there is nothing to compare; the `unknown` rule has zeroed both directions.
        e.unknown(Quantity::Current);
        s.over_charge_since = None;
        s.over_discharge_since = None;
    }
    if s.over_current_paused {
        e.alarms |= Alarms::OVER_CURRENT;
        e.zero_both(LimitReason::OverCurrent);
    }
}

fn paused(s: &mut Supervisor, e: &mut Eval<'_>) {
    if s.paused {
        e.zero_both(LimitReason::Paused);
    }
}

fn pack_voltage(s: &mut Supervisor, e: &mut Eval<'_>) {
    let Some(v) = e.value(Quantity::PackVoltage, e.model.pack_voltage) else {
        return;
    };
    let h = PACK_HYSTERESIS as i32;
    let ev = &mut s.events;
    let over = above(ev.is_active(EventKind::BatteryOverVoltage), v.0 as i32, e.max_pack.0 as i32, h);
    let under = below(ev.is_active(EventKind::BatteryUnderVoltage), v.0 as i32, e.min_pack.0 as i32, h);
    ev.set_condition(e.now, EventKind::BatteryOverVoltage, over, v.0 as i32);
    ev.set_condition(e.now, EventKind::BatteryUnderVoltage, under, v.0 as i32);
    e.alarms.set(Alarms::PACK_OVER_VOLTAGE, over);
    e.alarms.set(Alarms::PACK_UNDER_VOLTAGE, under);
    if over {
        e.charge.zero(LimitReason::PackVoltage);
    }
    if under {
        e.discharge.zero(LimitReason::PackVoltage);
    }
}

fn cell_extremes(e: &mut Eval<'_>) -> Option<((usize, MilliVolts), (usize, MilliVolts))> {
    let m = e.model;
    match e.fresh_at(Quantity::Cells).and(m.cells.max().zip(m.cells.min())) {
        Some(x) => Some(x),
        None => {
            e.unknown(Quantity::Cells);
            None
        }
    }
}

fn cell_voltage(s: &mut Supervisor, e: &mut Eval<'_>) {
    let Some(((imax, vmax), (imin, vmin))) = cell_extremes(e) else {
        return;
    };
    let cl = e.cells;
    let h = CELL_HYSTERESIS as i32;
    let (hi, lo) = (vmax.0 as i32, vmin.0 as i32);
    let cell_data = |i: usize, v: MilliVolts| ((i as i32 + 1) << 16) | v.0 as i32;
    let ev = &mut s.events;
    let over = above(ev.is_active(EventKind::CellOverVoltage), hi, cl.max.0 as i32, h);
    let under = below(ev.is_active(EventKind::CellUnderVoltage), lo, cl.min.0 as i32, h);
    let warn_hi = above(ev.is_active(EventKind::CellOverVoltageWarning), hi, cl.warn_high.0 as i32, h);
    let warn_lo = below(ev.is_active(EventKind::CellUnderVoltageWarning), lo, cl.warn_low.0 as i32, h);
    ev.set_condition(e.now, EventKind::CellOverVoltage, over, cell_data(imax, vmax));
    ev.set_condition(e.now, EventKind::CellUnderVoltage, under, cell_data(imin, vmin));
    ev.set_condition(e.now, EventKind::CellOverVoltageWarning, warn_hi && !over, cell_data(imax, vmax));
    ev.set_condition(e.now, EventKind::CellUnderVoltageWarning, warn_lo && !under, cell_data(imin, vmin));
    e.alarms.set(Alarms::CELL_OVER_VOLTAGE, over);
    e.alarms.set(Alarms::CELL_UNDER_VOLTAGE, under);
    e.warnings.set(Alarms::CELL_OVER_VOLTAGE, warn_hi);
    e.warnings.set(Alarms::CELL_UNDER_VOLTAGE, warn_lo);
    if over {
        e.charge.zero(LimitReason::CellVoltage);
    }
    if under {
        e.discharge.zero(LimitReason::CellVoltage);
    }
    e.charge.derate(taper(hi, cl.warn_high.0 as i32, cl.max.0 as i32), LimitReason::CellVoltage);
    e.discharge.derate(taper(lo, cl.warn_low.0 as i32, cl.min.0 as i32), LimitReason::CellVoltage);
}

fn cell_deviation(s: &mut Supervisor, e: &mut Eval<'_>) {
    let Some(((_, vmax), (_, vmin))) = cell_extremes(e) else {
        return;
    };
    let max_dev = e.cfg.max_cell_deviation.unwrap_or(e.model.design.max_cell_deviation);
    let dev = vmax.0.saturating_sub(vmin.0) as i32;
    let active = s.events.is_active(EventKind::CellDeviationHigh);
    let high = above(active, dev, max_dev.0 as i32, CELL_HYSTERESIS as i32);
    s.events.set_condition(e.now, EventKind::CellDeviationHigh, high, dev);
    e.warnings.set(Alarms::CELL_DEVIATION, high);
}

fn temperature(s: &mut Supervisor, e: &mut Eval<'_>) {
    let h = TEMP_HYSTERESIS as i32;
    let cfg = e.cfg;
    if let Some(t) = e.value(Quantity::TemperatureMax, e.model.temperature_max) {
        let t = t.0 as i32;
        let ev = &mut s.events;
        let hot = above(ev.is_active(EventKind::BatteryOverheat), t, cfg.max_temperature.0 as i32, h);
        let warm = above(ev.is_active(EventKind::BatteryTemperatureHighWarning), t, cfg.derate_temperature.0 as i32, h);
        ev.set_condition(e.now, EventKind::BatteryOverheat, hot, t);
        ev.set_condition(e.now, EventKind::BatteryTemperatureHighWarning, warm && !hot, t);
        e.alarms.set(Alarms::OVER_TEMPERATURE, hot);
        e.warnings.set(Alarms::OVER_TEMPERATURE, warm);
        if hot {
            e.zero_both(LimitReason::Temperature);
        }
        let f = taper(t, cfg.derate_temperature.0 as i32, cfg.max_temperature.0 as i32);
        e.charge.derate(f, LimitReason::Temperature);
        e.discharge.derate(f, LimitReason::Temperature);
    }
    if let Some(t) = e.value(Quantity::TemperatureMin, e.model.temperature_min) {
        let t = t.0 as i32;
        let frozen = below(s.events.is_active(EventKind::BatteryFrozen), t, cfg.min_charge_temperature.0 as i32, h);
        s.events.set_condition(e.now, EventKind::BatteryFrozen, frozen, t);
        e.alarms.set(Alarms::UNDER_TEMPERATURE, frozen);
        if frozen {
            e.charge.zero(LimitReason::Temperature);
        }
        if t < cfg.min_discharge_temperature.0 as i32 {
            e.discharge.zero(LimitReason::Temperature);
        }
    }
}

fn scaled_soc(e: &mut Eval<'_>) -> Option<BasisPoints> {
    let real = e.value(Quantity::Soc, e.model.soc)?;
    Some(e.soc_window.scale(real))
}

fn soc_full(_: &mut Supervisor, e: &mut Eval<'_>) {
    let Some(soc) = scaled_soc(e) else {
        return;
    };
    if soc.0 >= 10_000 {
        e.charge.zero(LimitReason::SocFull);
    } else {
        let taper_bp = e.cfg.soc_taper.0 as i32;
        e.charge.derate(taper(soc.0 as i32, 10_000 - taper_bp, 10_000), LimitReason::SocFull);
    }
}

fn soc_empty(_: &mut Supervisor, e: &mut Eval<'_>) {
    let Some(soc) = scaled_soc(e) else {
        return;
    };
    if soc.0 == 0 {
        e.discharge.zero(LimitReason::SocEmpty);
    } else {
        e.discharge.derate(taper(soc.0 as i32, e.cfg.soc_taper.0 as i32, 0), LimitReason::SocEmpty);
    }
}

fn bms_limits(_: &mut Supervisor, e: &mut Eval<'_>) {
    let voltage = e.voltage();
    let m = e.model;
    let offers = [
        (Quantity::BmsChargePower, m.max_charge_power.map(|r| current_for_power(r.value, voltage)), true),
        (Quantity::BmsDischargePower, m.max_discharge_power.map(|r| current_for_power(r.value, voltage)), false),
        (Quantity::BmsChargeCurrent, m.bms_charge_current.map(|r| r.value), true),
        (Quantity::BmsDischargeCurrent, m.bms_discharge_current.map(|r| r.value), false),
    ];
    for (q, limit, charge) in offers {
        let required = e.ages[q as usize].is_some();
        match (e.fresh_at(q), limit) {
            (Some(_), Some(limit)) => {
                let l = if charge { &mut e.charge } else { &mut e.discharge };
                l.offer(limit, LimitReason::Bms);
            }
            // A limit this pack never gives (not required) has no rule; a required one that is missing zeroes.
            _ if !required => {}
            _ => e.unknown(q),
        }
    }
}

fn user_limits(_: &mut Supervisor, e: &mut Eval<'_>) {
    let voltage = e.voltage();
    let cfg = e.cfg;
    e.charge.offer(cfg.max_charge_current, LimitReason::User);
    e.discharge.offer(cfg.max_discharge_current, LimitReason::User);
    e.charge.offer(current_for_power(cfg.max_charge_power, voltage), LimitReason::User);
    e.discharge.offer(current_for_power(cfg.max_discharge_power, voltage), LimitReason::User);
}

fn temporary(s: &mut Supervisor, e: &mut Eval<'_>) {
    if let Some(t) = s.temporary {
        if let Some(c) = t.charge {
            e.charge.offer(c, LimitReason::Temporary);
        }
        if let Some(d) = t.discharge {
            e.discharge.offer(d, LimitReason::Temporary);
        }
    }
}

/// Charge that must flow for a 1 % SOC step before its direction is judged: 0.5 Ah in dA·ms (a 24 kWh LEAF moves
/// 1 % with about 0.65 Ah, bigger packs with more), so a step from recalibration alone is not judged.
const DIRECTION_MIN_CHARGE: i64 = 5 * 3_600_000;
/// The largest gap between two current readings that is integrated (longer: the data had a hole).
const DIRECTION_MAX_GAP: Duration = Duration::from_secs(5);

fn current_direction(s: &mut Supervisor, e: &mut Eval<'_>) {
    let m = e.model;
    let d = &mut s.direction;
    let current = e.fresh_at(Quantity::Current).and(m.current);
    if let Some(r) = current {
        if let Some((at, i)) = d.last_current {
            if r.at > at {
                let dt = r.at.saturating_since(at);
                if dt <= DIRECTION_MAX_GAP {
                    d.charge += i.0 as i64 * dt.as_millis() as i64;
                }
            }
        }
        if d.last_current.is_none_or(|(at, _)| r.at > at) {
            d.last_current = Some((r.at, r.value));
        }
    }
    let Some(soc) = e.fresh_at(Quantity::Soc).and(m.soc.map(|r| r.value)) else {
        return;
    };
    let anchor = *d.anchor_soc.get_or_insert(soc);
    let step = soc.0 as i32 - anchor.0 as i32;
    if step.abs() < 100 {
        return;
    }
    if d.charge.abs() >= DIRECTION_MIN_CHARGE {
        let contradicts = (step > 0) != (d.charge > 0);
        s.events.set_condition(e.now, EventKind::CurrentSignImplausible, contradicts, d.charge.signum() as i32);
    }
    d.anchor_soc = Some(soc);
    d.charge = 0;
}
