//! The safety supervisor: everything the inverter is told passes through here.
//!
//! Each call to [`Supervisor::update`] re-evaluates every rule against the model at `now` and produces one
//! [`Output`]: reported SOC and energy (after the user's SOC window), charge and discharge current limits (the
//! least of every limit that applies, with the reason), voltage limits, alarm and warning flags, and whether the
//! contactors may be closed. Conditions raise and clear events in the [`EventLog`].
//!
//! The rules, with the source of their defaults:
//! - stale data: no valid battery frame within `stale_timeout` → both limits 0, `CAN_BATTERY_MISSING`
//!   (Battery-Emulator raises the same event after its CAN timeout; 10 s here to stay well inside a typical
//!   inverter's own 30-60 s communication timeout);
//! - pack voltage above the design/user maximum → charge 0; below minimum → discharge 0;
//! - cell voltage: warning level derates, limit level stops that direction, critical level opens the contactors
//!   and latches until `Start` (defaults per chemistry below, never outside the pack's design bounds);
//! - cell deviation above the pack's maximum → warning (`CELL_DEVIATION_HIGH`, as Battery-Emulator's safety.cpp);
//! - temperature: above the maximum → both 0; near it → derated; below the minimum charge temperature → charge 0;
//! - SOC window: real SOC mapped to reported 0-100 % (Battery-Emulator's "scaled SOC"), energies scaled to match;
//!   reported 100 % → charge 0, 0 % → discharge 0, with a linear taper in the last `soc_taper` before them;
//! - limits are the least of the BMS's power limits (converted at the present pack voltage), the user's current and
//!   power maximums, the temporary (remote) limits and the deratings above;
//! - pause → both 0; stop → both 0 and contactors open; BMS fault or open HVIL → both 0 and contactors open;
//! - contactors may close only when the data is fresh, no fault is latched and the inverter has been heard; once
//!   closed, losing the inverter raises `CAN_INVERTER_MISSING` and zeroes the limits but does not open them under a
//!   load the inverter may still be drawing.
//!
//! Cell limits by chemistry (typical datasheet figures for the cell families; each is clamped into the pack's
//! design bounds from its driver): NMC/NCA 3.0-4.2 V with warnings 100 mV inside and critical 50 mV outside;
//! LFP 2.8-3.6 V, warnings 100 mV inside, critical 50 mV outside.

use crate::battery::ContactorRequest;
use crate::command::{check_range, Command, CommandError, MAX_TEMPORARY_LIMIT_TIMEOUT};
use crate::events::{EventKind, EventLog};
use crate::model::{BatteryModel, BmsFaults, BmsStatus, Chemistry, Contactors, PackDesign};
use crate::time::{earliest, Duration, Instant};
use crate::units::{current_for_power, BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours, Watts};

bitflags::bitflags! {
    /// Alarm or warning conditions (mapped by each inverter protocol to its own flags). `contains` means every
    /// given bit is set, `intersects` any of them.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Alarms: u32 {
        const PACK_OVER_VOLTAGE = 1 << 0;
        const PACK_UNDER_VOLTAGE = 1 << 1;
        const CELL_OVER_VOLTAGE = 1 << 2;
        const CELL_UNDER_VOLTAGE = 1 << 3;
        const CELL_DEVIATION = 1 << 4;
        const OVER_TEMPERATURE = 1 << 5;
        const UNDER_TEMPERATURE = 1 << 6;
        /// Battery data stale or never received.
        const COMMUNICATION = 1 << 7;
        /// The BMS reports a fault, or the interlock is open.
        const BMS_FAULT = 1 << 8;
        /// Critical cell voltage: contactors opened and latched.
        const CRITICAL = 1 << 9;
    }
}

/// Why a limit is what it is: the rule that gave the smallest value.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum LimitReason {
    /// The BMS's own power limit.
    #[default]
    Bms,
    /// The user's configured maximum current or power.
    User,
    /// A temporary remote limit.
    Temporary,
    SocFull,
    SocEmpty,
    CellVoltage,
    PackVoltage,
    Temperature,
    Paused,
    Stopped,
    /// Battery data stale or missing.
    Stale,
    BmsFault,
    /// The pack reports its contactors not closed.
    ContactorsOpen,
    /// The inverter has not been heard (before first contact, or lost).
    InverterMissing,
}

impl LimitReason {
    pub fn name(self) -> &'static str {
        match self {
            LimitReason::Bms => "bms",
            LimitReason::User => "user",
            LimitReason::Temporary => "temporary",
            LimitReason::SocFull => "soc_full",
            LimitReason::SocEmpty => "soc_empty",
            LimitReason::CellVoltage => "cell_voltage",
            LimitReason::PackVoltage => "pack_voltage",
            LimitReason::Temperature => "temperature",
            LimitReason::Paused => "paused",
            LimitReason::Stopped => "stopped",
            LimitReason::Stale => "stale",
            LimitReason::BmsFault => "bms_fault",
            LimitReason::ContactorsOpen => "contactors_open",
            LimitReason::InverterMissing => "inverter_missing",
        }
    }
}

/// The user's SOC window: real SOC `min` is reported as 0 %, `max` as 100 %.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SocWindow {
    pub min: BasisPoints,
    pub max: BasisPoints,
}

impl SocWindow {
    pub const FULL: SocWindow = SocWindow { min: BasisPoints(0), max: BasisPoints(10_000) };

    /// Real SOC → reported SOC, clamped to 0..=100 %.
    pub fn scale(self, real: BasisPoints) -> BasisPoints {
        let (lo, hi, r) = (self.min.0 as u32, self.max.0 as u32, real.clamped().0 as u32);
        if hi <= lo {
            return BasisPoints(0);
        }
        BasisPoints((r.clamp(lo, hi) - lo).saturating_mul(10_000).div_euclid(hi - lo) as u16)
    }

    /// The share of the pack's energy the window spans.
    pub fn span(self) -> BasisPoints {
        BasisPoints(self.max.0.saturating_sub(self.min.0))
    }
}

/// Cell voltage thresholds, ordered `critical_low < min < warn_low < warn_high < max < critical_high`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CellLimits {
    pub critical_high: MilliVolts,
    pub max: MilliVolts,
    pub warn_high: MilliVolts,
    pub warn_low: MilliVolts,
    pub min: MilliVolts,
    pub critical_low: MilliVolts,
}

impl CellLimits {
    pub fn for_chemistry(chemistry: Chemistry) -> Self {
        let (min, max) = match chemistry {
            Chemistry::Nmc | Chemistry::Nca => (3000, 4200),
            Chemistry::Lfp => (2800, 3600),
        };
        CellLimits {
            critical_high: MilliVolts(max + 50),
            max: MilliVolts(max),
            warn_high: MilliVolts(max - 100),
            warn_low: MilliVolts(min + 100),
            min: MilliVolts(min),
            critical_low: MilliVolts(min - 50),
        }
    }

    /// Pulls every threshold inside the pack's design bounds.
    fn within(self, design: &PackDesign) -> Self {
        let hi = |v: MilliVolts| MilliVolts(v.0.min(design.max_cell_voltage.0));
        let lo = |v: MilliVolts| MilliVolts(v.0.max(design.min_cell_voltage.0));
        CellLimits {
            critical_high: hi(self.critical_high),
            max: hi(self.max),
            warn_high: hi(self.warn_high),
            warn_low: lo(self.warn_low),
            min: lo(self.min),
            critical_low: lo(self.critical_low),
        }
    }
}

/// The user's limits and the rules' thresholds. `Default` is conservative.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    pub max_charge_current: DeciAmps,
    pub max_discharge_current: DeciAmps,
    pub max_charge_power: Watts,
    pub max_discharge_power: Watts,
    /// The SOC window in use at start.
    pub soc_window: SocWindow,
    /// The bounds a run-time `SetSocWindow` must stay within.
    pub soc_window_bounds: SocWindow,
    /// Reported-SOC span before 100 % (and after 0 %) over which the limit tapers linearly to 0.
    pub soc_taper: BasisPoints,
    /// `None`: the pack's design maximum.
    pub max_pack_voltage: Option<DeciVolts>,
    pub min_pack_voltage: Option<DeciVolts>,
    /// `None`: the chemistry defaults.
    pub cell_limits: Option<CellLimits>,
    /// `None`: the pack's design maximum deviation.
    pub max_cell_deviation: Option<MilliVolts>,
    pub max_temperature: DeciCelsius,
    /// Above this, both limits taper linearly to 0 at `max_temperature`.
    pub derate_temperature: DeciCelsius,
    pub min_charge_temperature: DeciCelsius,
    pub min_discharge_temperature: DeciCelsius,
    /// No valid battery frame for this long → safe state.
    pub stale_timeout: Duration,
    /// `None`: the inverter protocol's own link timeout.
    pub inverter_timeout: Option<Duration>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_charge_current: DeciAmps(300),
            max_discharge_current: DeciAmps(300),
            max_charge_power: Watts(5000),
            max_discharge_power: Watts(5000),
            soc_window: SocWindow { min: BasisPoints(1000), max: BasisPoints(9000) },
            soc_window_bounds: SocWindow::FULL,
            soc_taper: BasisPoints(500),
            max_pack_voltage: None,
            min_pack_voltage: None,
            cell_limits: None,
            max_cell_deviation: None,
            max_temperature: DeciCelsius(500),
            derate_temperature: DeciCelsius(450),
            min_charge_temperature: DeciCelsius(0),
            min_discharge_temperature: DeciCelsius(-200),
            stale_timeout: Duration::from_secs(10),
            inverter_timeout: None,
        }
    }
}

/// The temperature bounds the supervisor enforces, for protocols that report them to the inverter.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TemperatureLimits {
    /// Above this, neither charging nor discharging.
    pub max: DeciCelsius,
    /// Below this, no charging.
    pub min_charge: DeciCelsius,
    /// Below this, no discharging.
    pub min_discharge: DeciCelsius,
}

/// What the supervisor decided at one instant.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Reported (scaled) SOC.
    pub soc: Option<BasisPoints>,
    pub total_energy: Option<WattHours>,
    pub remaining_energy: Option<WattHours>,
    pub charge_current_limit: DeciAmps,
    pub discharge_current_limit: DeciAmps,
    /// The current limits as power at the present pack voltage.
    pub charge_power_limit: Watts,
    pub discharge_power_limit: Watts,
    pub charge_limited_by: LimitReason,
    pub discharge_limited_by: LimitReason,
    pub max_charge_voltage: DeciVolts,
    pub min_discharge_voltage: DeciVolts,
    pub alarms: Alarms,
    pub warnings: Alarms,
    pub temperature_limits: TemperatureLimits,
    pub contactors: Option<ContactorRequest>,
    pub data_valid: bool,
    pub inverter_present: bool,
    pub paused: bool,
    pub stopped: bool,
    pub soc_window: Option<SocWindow>,
    pub temporary_limits_until: Option<Instant>,
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

    fn new() -> Self {
        Least {
            value: DeciAmps(i32::MAX),
            reason: LimitReason::User,
            factor: BasisPoints::FULL,
            factor_reason: LimitReason::User,
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

#[derive(Copy, Clone, Debug)]
struct TemporaryLimits {
    charge: Option<DeciAmps>,
    discharge: Option<DeciAmps>,
    until: Instant,
}

/// See the module doc.
#[derive(Clone, Debug)]
pub struct Supervisor {
    cfg: SupervisorConfig,
    soc_window: SocWindow,
    started_at: Option<Instant>,
    paused: bool,
    stopped: bool,
    critical_latched: bool,
    ever_closed_with_inverter: bool,
    temporary: Option<TemporaryLimits>,
    out: Output,
    events: EventLog,
    /// The `now` of the last `update`: deadlines at or before it have been dealt with.
    evaluated_at: Option<Instant>,
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

/// Since when the battery data counts as fresh: the last valid frame, but no later than the last pack voltage.
/// A pack whose checksummed frames (voltage, current, power limits) are all rejected while its unprotected ones
/// still arrive must go stale too, or the inverter would be told limits from frozen values.
///
/// Cell voltages arrive more slowly (polled, or broadcast in rotation) and may pause, so they get their own,
/// longer bound, [`CELL_DATA_TIMEOUT`]: once a pack has reported cells, cells older than that make the data stale
/// too. A hung battery controller that keeps resending its last broadcasts but answers no poll is caught this way
/// (its frames look alive, but nothing it says is new).
fn fresh_since(model: &BatteryModel, stale_timeout: Duration) -> Option<Instant> {
    let frame = model.last_valid_frame_at?;
    let mut since = model.pack_voltage.map_or(frame, |v| v.at.min(frame));
    if let Some(cells_at) = model.cells.updated_at() {
        // Expressed on the stale_timeout scale: cells are stale CELL_DATA_TIMEOUT after their last update.
        let slack = Duration::from_millis(CELL_DATA_TIMEOUT.as_millis().saturating_sub(stale_timeout.as_millis()));
        since = since.min(cells_at + slack);
    }
    Some(since)
}

/// How old the cell voltages may get before the battery data counts as stale. A LEAF's cells come in a 4-group
/// poll rotation every 2 s (8 s per round) and polls pause for 20 s while a car's VCM is polling; 60 s leaves room
/// for both and a lost answer, and is still far inside what a pack tolerates at the configured current limits.
pub const CELL_DATA_TIMEOUT: Duration = Duration::from_secs(60);

/// Hysteresis for clearing conditions, so a value sitting on a threshold does not flap events.
const CELL_HYSTERESIS: u16 = 20;
const PACK_HYSTERESIS: u16 = 10;
const TEMP_HYSTERESIS: i16 = 10;

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

impl Supervisor {
    pub fn new(cfg: SupervisorConfig) -> Self {
        Supervisor {
            soc_window: cfg.soc_window,
            cfg,
            started_at: None,
            paused: false,
            stopped: false,
            critical_latched: false,
            ever_closed_with_inverter: false,
            temporary: None,
            out: Output::default(),
            events: EventLog::default(),
            evaluated_at: None,
        }
    }

    pub fn config(&self) -> &SupervisorConfig {
        &self.cfg
    }

    pub fn output(&self) -> &Output {
        &self.out
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn events_mut(&mut self) -> &mut EventLog {
        &mut self.events
    }

    /// The next instant at which the output changes without any new input (stale deadline, temporary limits
    /// expiring, inverter timeout).
    #[must_use]
    pub fn poll_timeout(&self, model: &BatteryModel, inverter_last_heard: Option<Instant>) -> Option<Instant> {
        let stale_from = fresh_since(model, self.cfg.stale_timeout).or(self.started_at);
        let stale_at = stale_from.map(|t| t + self.cfg.stale_timeout + Duration::from_millis(1));
        let temp_at = self.temporary.map(|t| t.until);
        let inverter_at = self.cfg.inverter_timeout.and_then(|timeout| {
            inverter_last_heard.or(self.started_at).map(|t| t + timeout + Duration::from_millis(1))
        });
        // A deadline already evaluated (data stale and still stale) changes nothing until new input arrives.
        let pending = |t: Option<Instant>| t.filter(|&t| self.evaluated_at.is_none_or(|e| t > e));
        earliest(earliest(pending(stale_at), pending(temp_at)), pending(inverter_at))
    }

    /// Applies a command. Refused commands change nothing and raise `COMMAND_REJECTED`.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        let result = self.apply_command(now, cmd);
        if let Err(e) = &result {
            let data = match e {
                CommandError::OutOfRange { value, .. } => *value as i32,
                _ => 0,
            };
            self.events.raise(now, EventKind::CommandRejected, data);
        }
        result
    }

    fn apply_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::Pause => {
                if !self.paused {
                    self.paused = true;
                    self.events.raise(now, EventKind::PauseBegin, 0);
                }
            }
            Command::Resume => {
                if self.paused {
                    self.paused = false;
                    self.events.raise(now, EventKind::PauseEnd, 0);
                }
            }
            Command::Stop => {
                self.stopped = true;
                self.events.raise(now, EventKind::BridgeStopped, 0);
            }
            Command::Start => {
                self.stopped = false;
                self.critical_latched = false;
                self.events.clear(EventKind::CellCriticalOverVoltage);
                self.events.clear(EventKind::CellCriticalUnderVoltage);
                self.events.raise(now, EventKind::BridgeStarted, 0);
            }
            Command::BmsReset => {
                // The driver does the reset; the bridge calls it. Here it is only logged.
                self.events.raise(now, EventKind::BmsReset, 0);
            }
            Command::SetTemporaryLimits { charge, discharge, timeout } => {
                let max = MAX_TEMPORARY_LIMIT_TIMEOUT.as_secs() as i64;
                check_range("timeout (s)", timeout.as_secs() as i64, 1, max)?;
                for (what, v) in [("max_charge (dA)", charge), ("max_discharge (dA)", discharge)] {
                    if let Some(v) = v {
                        check_range(what, v.0 as i64, 0, 100_000)?;
                    }
                }
                self.temporary = Some(TemporaryLimits { charge, discharge, until: now + timeout });
                let data = charge.map_or(-1, |c| c.0);
                self.events.raise(now, EventKind::TemporaryLimitsSet, data);
            }
            Command::ClearTemporaryLimits => {
                if self.temporary.take().is_some() {
                    self.events.raise(now, EventKind::TemporaryLimitsExpired, 0);
                }
            }
            Command::SetSocWindow { min, max } => {
                let b = self.cfg.soc_window_bounds;
                check_range("SOC window min (0.01 %)", min.0 as i64, b.min.0 as i64, b.max.0 as i64)?;
                check_range("SOC window max (0.01 %)", max.0 as i64, b.min.0 as i64, b.max.0 as i64)?;
                if min >= max {
                    return Err(CommandError::EmptySocWindow { min, max });
                }
                self.soc_window = SocWindow { min, max };
                self.events.raise(now, EventKind::SocWindowChanged, (min.0 as i32) << 16 | max.0 as i32);
            }
        }
        Ok(())
    }

    /// Re-evaluates every rule at `now`.
    pub fn update(&mut self, now: Instant, model: &BatteryModel, inverter_last_heard: Option<Instant>) -> &Output {
        let started = *self.started_at.get_or_insert(now);
        self.evaluated_at = Some(self.evaluated_at.map_or(now, |e| e.max(now)));
        let cfg = self.cfg;
        let design = model.design;
        let mut alarms = Alarms::default();
        let mut warnings = Alarms::default();
        let mut charge = Least::new();
        let mut discharge = Least::new();

        if let Some(t) = self.temporary {
            if now >= t.until {
                self.temporary = None;
                self.events.raise(now, EventKind::TemporaryLimitsExpired, 0);
            }
        }

        // Stale data.
        let fresh_since = fresh_since(model, cfg.stale_timeout).unwrap_or(started);
        let stale = now.saturating_since(fresh_since) > cfg.stale_timeout;
        let data_valid = model.last_valid_frame_at.is_some() && !stale;
        self.events.set_condition(now, EventKind::BatteryMissing, stale, 0);
        if !data_valid {
            alarms.set(Alarms::COMMUNICATION, stale);
            charge.zero(LimitReason::Stale);
            discharge.zero(LimitReason::Stale);
        }

        // Voltage limits told to the inverter.
        let max_pack =
            DeciVolts(cfg.max_pack_voltage.map_or(design.max_pack_voltage.0, |v| v.0.min(design.max_pack_voltage.0)));
        let min_pack =
            DeciVolts(cfg.min_pack_voltage.map_or(design.min_pack_voltage.0, |v| v.0.max(design.min_pack_voltage.0)));

        // Pack voltage.
        if let Some(v) = model.pack_voltage.map(|r| r.value) {
            let h = PACK_HYSTERESIS as i32;
            let over = above(self.events.is_active(EventKind::BatteryOverVoltage), v.0 as i32, max_pack.0 as i32, h);
            let under = below(self.events.is_active(EventKind::BatteryUnderVoltage), v.0 as i32, min_pack.0 as i32, h);
            self.events.set_condition(now, EventKind::BatteryOverVoltage, over, v.0 as i32);
            self.events.set_condition(now, EventKind::BatteryUnderVoltage, under, v.0 as i32);
            alarms.set(Alarms::PACK_OVER_VOLTAGE, over);
            alarms.set(Alarms::PACK_UNDER_VOLTAGE, under);
            if over {
                charge.zero(LimitReason::PackVoltage);
            }
            if under {
                discharge.zero(LimitReason::PackVoltage);
            }
        }

        // Cell voltages.
        let cl = cfg.cell_limits.unwrap_or(CellLimits::for_chemistry(design.chemistry)).within(&design);
        if let (Some((imax, vmax)), Some((imin, vmin))) = (model.cells.max(), model.cells.min()) {
            let h = CELL_HYSTERESIS as i32;
            let (hi, lo) = (vmax.0 as i32, vmin.0 as i32);
            let cell_data = |i: usize, v: MilliVolts| ((i as i32 + 1) << 16) | v.0 as i32;
            let ev = &mut self.events;
            let crit_hi = above(ev.is_active(EventKind::CellCriticalOverVoltage), hi, cl.critical_high.0 as i32, h);
            let crit_lo = below(ev.is_active(EventKind::CellCriticalUnderVoltage), lo, cl.critical_low.0 as i32, h);
            let over = above(ev.is_active(EventKind::CellOverVoltage), hi, cl.max.0 as i32, h);
            let under = below(ev.is_active(EventKind::CellUnderVoltage), lo, cl.min.0 as i32, h);
            let warn_hi = above(ev.is_active(EventKind::CellOverVoltageWarning), hi, cl.warn_high.0 as i32, h);
            let warn_lo = below(ev.is_active(EventKind::CellUnderVoltageWarning), lo, cl.warn_low.0 as i32, h);
            ev.set_condition(now, EventKind::CellCriticalOverVoltage, crit_hi, cell_data(imax, vmax));
            ev.set_condition(now, EventKind::CellCriticalUnderVoltage, crit_lo, cell_data(imin, vmin));
            ev.set_condition(now, EventKind::CellOverVoltage, over, cell_data(imax, vmax));
            ev.set_condition(now, EventKind::CellUnderVoltage, under, cell_data(imin, vmin));
            ev.set_condition(now, EventKind::CellOverVoltageWarning, warn_hi && !over, cell_data(imax, vmax));
            ev.set_condition(now, EventKind::CellUnderVoltageWarning, warn_lo && !under, cell_data(imin, vmin));
            if crit_hi || crit_lo {
                self.critical_latched = true;
            }
            alarms.set(Alarms::CELL_OVER_VOLTAGE, over);
            alarms.set(Alarms::CELL_UNDER_VOLTAGE, under);
            warnings.set(Alarms::CELL_OVER_VOLTAGE, warn_hi);
            warnings.set(Alarms::CELL_UNDER_VOLTAGE, warn_lo);
            if over {
                charge.zero(LimitReason::CellVoltage);
            }
            if under {
                discharge.zero(LimitReason::CellVoltage);
            }
            charge.derate(taper(hi, cl.warn_high.0 as i32, cl.max.0 as i32), LimitReason::CellVoltage);
            discharge.derate(taper(lo, cl.warn_low.0 as i32, cl.min.0 as i32), LimitReason::CellVoltage);

            let max_dev = cfg.max_cell_deviation.unwrap_or(design.max_cell_deviation);
            let dev = vmax.0 - vmin.0;
            let dev_high =
                above(ev_active(&self.events, EventKind::CellDeviationHigh), dev as i32, max_dev.0 as i32, h);
            self.events.set_condition(now, EventKind::CellDeviationHigh, dev_high, dev as i32);
            warnings.set(Alarms::CELL_DEVIATION, dev_high);
        }
        if self.critical_latched {
            alarms.set(Alarms::CRITICAL, true);
            charge.zero(LimitReason::CellVoltage);
            discharge.zero(LimitReason::CellVoltage);
        }

        // Temperatures.
        let h = TEMP_HYSTERESIS as i32;
        if let Some(t) = model.temperature_max.map(|r| r.value.0 as i32) {
            let hot = above(self.events.is_active(EventKind::BatteryOverheat), t, cfg.max_temperature.0 as i32, h);
            let warm = above(
                self.events.is_active(EventKind::BatteryTemperatureHighWarning),
                t,
                cfg.derate_temperature.0 as i32,
                h,
            );
            self.events.set_condition(now, EventKind::BatteryOverheat, hot, t);
            self.events.set_condition(now, EventKind::BatteryTemperatureHighWarning, warm && !hot, t);
            alarms.set(Alarms::OVER_TEMPERATURE, hot);
            warnings.set(Alarms::OVER_TEMPERATURE, warm);
            if hot {
                charge.zero(LimitReason::Temperature);
                discharge.zero(LimitReason::Temperature);
            }
            let f = taper(t, cfg.derate_temperature.0 as i32, cfg.max_temperature.0 as i32);
            charge.derate(f, LimitReason::Temperature);
            discharge.derate(f, LimitReason::Temperature);
        }
        if let Some(t) = model.temperature_min.map(|r| r.value.0 as i32) {
            let frozen =
                below(self.events.is_active(EventKind::BatteryFrozen), t, cfg.min_charge_temperature.0 as i32, h);
            self.events.set_condition(now, EventKind::BatteryFrozen, frozen, t);
            alarms.set(Alarms::UNDER_TEMPERATURE, frozen);
            if frozen {
                charge.zero(LimitReason::Temperature);
            }
            if t < cfg.min_discharge_temperature.0 as i32 {
                discharge.zero(LimitReason::Temperature);
            }
        }

        // BMS-reported faults.
        let hvil = model.faults.contains(BmsFaults::HVIL_OPEN);
        let bms_fault = model.bms_status == BmsStatus::Fault
            || model.contactors == Contactors::Fault
            || model.faults.contains(BmsFaults::INTERNAL)
            || model.faults.contains(BmsFaults::ISOLATION);
        self.events.set_condition(now, EventKind::HvilFailure, hvil, 0);
        self.events.set_condition(now, EventKind::BatteryFault, bms_fault, model.faults.bits() as i32);
        let fault = hvil || bms_fault;
        if fault {
            alarms.set(Alarms::BMS_FAULT, true);
            charge.zero(LimitReason::BmsFault);
            discharge.zero(LimitReason::BmsFault);
        }

        // SOC window and energy scaling.
        let soc_real = model.soc.map(|r| r.value);
        let soc = soc_real.map(|s| self.soc_window.scale(s));
        let span = self.soc_window.span();
        let total_energy = model.total_energy.map(|r| span.of(r.value.0)).map(WattHours);
        let remaining_energy = match (total_energy, soc) {
            (Some(total), Some(s)) => Some(WattHours(s.of(total.0))),
            _ => None,
        };
        if let Some(s) = soc {
            let taper_bp = cfg.soc_taper.0 as i32;
            if s.0 >= 10_000 {
                charge.zero(LimitReason::SocFull);
            } else {
                charge.derate(taper(s.0 as i32, 10_000 - taper_bp, 10_000), LimitReason::SocFull);
            }
            if s.0 == 0 {
                discharge.zero(LimitReason::SocEmpty);
            } else {
                discharge.derate(taper(s.0 as i32, taper_bp, 0), LimitReason::SocEmpty);
            }
        }

        // The BMS's own limits, the user's and the remote ones.
        let voltage = model.pack_voltage.map(|r| r.value).unwrap_or(DeciVolts(0));
        if let Some(p) = model.max_charge_power {
            charge.offer(current_for_power(p.value, voltage), LimitReason::Bms);
        }
        if let Some(p) = model.max_discharge_power {
            discharge.offer(current_for_power(p.value, voltage), LimitReason::Bms);
        }
        charge.offer(cfg.max_charge_current, LimitReason::User);
        discharge.offer(cfg.max_discharge_current, LimitReason::User);
        charge.offer(current_for_power(cfg.max_charge_power, voltage), LimitReason::User);
        discharge.offer(current_for_power(cfg.max_discharge_power, voltage), LimitReason::User);
        if let Some(t) = self.temporary {
            if let Some(c) = t.charge {
                charge.offer(c, LimitReason::Temporary);
            }
            if let Some(d) = t.discharge {
                discharge.offer(d, LimitReason::Temporary);
            }
        }

        // Contactors and the inverter link.
        let inverter_present = match cfg.inverter_timeout {
            Some(timeout) => inverter_last_heard.is_some_and(|t| now.saturating_since(t) <= timeout),
            None => true,
        };
        let inverter_lost = self.ever_closed_with_inverter && !inverter_present;
        let inverter_never = inverter_last_heard.is_none()
            && now.saturating_since(started) > cfg.inverter_timeout.unwrap_or(Duration::ZERO);
        let missing = cfg.inverter_timeout.is_some() && (inverter_lost || inverter_never);
        self.events.set_condition(now, EventKind::InverterMissing, missing, 0);
        let healthy = data_valid && !self.critical_latched && !fault;
        let contactors = if self.stopped || !healthy {
            ContactorRequest::Open
        } else if inverter_present || (self.out.contactors == Some(ContactorRequest::Closed)) {
            ContactorRequest::Closed
        } else {
            ContactorRequest::Open
        };
        if contactors == ContactorRequest::Closed && inverter_present {
            self.ever_closed_with_inverter = true;
        }
        if !inverter_present {
            charge.zero(LimitReason::InverterMissing);
            discharge.zero(LimitReason::InverterMissing);
        }
        if matches!(model.contactors, Contactors::Open | Contactors::Precharging) {
            charge.zero(LimitReason::ContactorsOpen);
            discharge.zero(LimitReason::ContactorsOpen);
        }
        if self.paused {
            charge.zero(LimitReason::Paused);
            discharge.zero(LimitReason::Paused);
        }
        if self.stopped {
            charge.zero(LimitReason::Stopped);
            discharge.zero(LimitReason::Stopped);
        }

        let (charge, discharge) = (charge.finish(), discharge.finish());
        self.out = Output {
            soc,
            total_energy,
            remaining_energy,
            charge_current_limit: charge.value,
            discharge_current_limit: discharge.value,
            charge_power_limit: crate::units::power(voltage, charge.value),
            discharge_power_limit: crate::units::power(voltage, discharge.value),
            charge_limited_by: charge.reason,
            discharge_limited_by: discharge.reason,
            max_charge_voltage: max_pack,
            min_discharge_voltage: min_pack,
            alarms,
            warnings,
            temperature_limits: TemperatureLimits {
                max: cfg.max_temperature,
                min_charge: cfg.min_charge_temperature,
                min_discharge: cfg.min_discharge_temperature,
            },
            contactors: Some(contactors),
            data_valid,
            inverter_present,
            paused: self.paused,
            stopped: self.stopped,
            soc_window: Some(self.soc_window),
            temporary_limits_until: self.temporary.map(|t| t.until),
        };
        &self.out
    }

    pub fn soc_window(&self) -> SocWindow {
        self.soc_window
    }
}

fn ev_active(events: &EventLog, kind: EventKind) -> bool {
    events.is_active(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reading, MAX_CELLS};

    const DESIGN: PackDesign = PackDesign {
        chemistry: Chemistry::Nmc,
        cells: 96,
        max_pack_voltage: DeciVolts(4040),
        min_pack_voltage: DeciVolts(2600),
        max_cell_voltage: MilliVolts(4250),
        min_cell_voltage: MilliVolts(2700),
        max_cell_deviation: MilliVolts(500),
    };

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A healthy pack at 50 % with generous BMS limits, last heard at `now`.
    fn healthy(now: Instant) -> BatteryModel {
        let mut m = BatteryModel::new(DESIGN);
        m.pack_voltage = Some(Reading::new(DeciVolts(3800), now));
        m.current = Some(Reading::new(DeciAmps(0), now));
        m.soc = Some(Reading::new(BasisPoints(5000), now));
        m.soh = Some(Reading::new(BasisPoints(9500), now));
        m.temperature_min = Some(Reading::new(DeciCelsius(200), now));
        m.temperature_max = Some(Reading::new(DeciCelsius(220), now));
        m.total_energy = Some(Reading::new(WattHours(40_000), now));
        m.max_charge_power = Some(Reading::new(Watts(50_000), now));
        m.max_discharge_power = Some(Reading::new(Watts(50_000), now));
        m.cells.set_voltages(now, &[MilliVolts(3900); 96]);
        m.bms_status = BmsStatus::Active;
        m.last_valid_frame_at = Some(now);
        m
    }

    fn cfg() -> SupervisorConfig {
        SupervisorConfig {
            max_charge_current: DeciAmps(500),
            max_discharge_current: DeciAmps(500),
            max_charge_power: Watts(100_000),
            max_discharge_power: Watts(100_000),
            soc_window: SocWindow::FULL,
            inverter_timeout: Some(Duration::from_secs(10)),
            ..SupervisorConfig::default()
        }
    }

    fn running(cfg: SupervisorConfig) -> (Supervisor, BatteryModel) {
        let mut s = Supervisor::new(cfg);
        let m = healthy(t(0));
        s.update(t(0), &m, Some(t(0)));
        (s, m)
    }

    #[test]
    fn healthy_pack_gets_user_limits_and_closed_contactors() {
        let (mut s, m) = running(cfg());
        let o = *s.update(t(100), &m, Some(t(100)));
        assert_eq!(o.charge_current_limit, DeciAmps(500));
        assert_eq!(o.discharge_current_limit, DeciAmps(500));
        assert_eq!(o.charge_limited_by, LimitReason::User);
        assert_eq!(o.contactors, Some(ContactorRequest::Closed));
        assert!(o.data_valid && o.inverter_present && o.alarms.is_empty());
        assert_eq!(o.max_charge_voltage, DeciVolts(4040));
    }

    #[test]
    fn stale_data_zeroes_limits_then_recovers() {
        let (mut s, m) = running(cfg());
        let o = *s.update(t(10_000), &m, Some(t(10_000)));
        assert!(o.data_valid, "exactly at the timeout the data still counts");
        let o = *s.update(t(10_001), &m, Some(t(10_001)));
        assert!(!o.data_valid);
        assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
        assert_eq!(o.charge_limited_by, LimitReason::Stale);
        assert!(o.alarms.contains(Alarms::COMMUNICATION));
        assert_eq!(o.contactors, Some(ContactorRequest::Open));
        assert!(s.events().is_active(EventKind::BatteryMissing));

        let m = healthy(t(12_000));
        let o = *s.update(t(12_000), &m, Some(t(12_000)));
        assert!(o.data_valid);
        assert_eq!(o.charge_current_limit, DeciAmps(500));
        assert!(!s.events().is_active(EventKind::BatteryMissing));
        assert_eq!(s.events().record(EventKind::BatteryMissing).count, 1);
    }

    #[test]
    fn frames_without_a_fresh_pack_voltage_do_not_keep_the_data_valid() {
        // Found by fault injection: the LEAF's unprotected frames (0x5BC...) kept arriving while every
        // checksummed one was rejected, and the limits stayed up on frozen values.
        let (mut s, mut m) = running(cfg());
        m.last_valid_frame_at = Some(t(10_500));
        assert_eq!(s.poll_timeout(&m, Some(t(10_500))), Some(t(10_001)), "deadline from the pack voltage");
        let o = *s.update(t(10_501), &m, Some(t(10_501)));
        assert!(!o.data_valid);
        assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
        assert!(s.events().is_active(EventKind::BatteryMissing));
    }

    #[test]
    fn no_data_at_start_is_not_valid_but_not_missing_until_the_timeout() {
        let mut s = Supervisor::new(cfg());
        let m = BatteryModel::new(DESIGN);
        let o = *s.update(t(0), &m, None);
        assert!(!o.data_valid);
        assert_eq!(o.charge_current_limit, DeciAmps(0));
        assert!(!s.events().is_active(EventKind::BatteryMissing));
        assert_eq!(s.poll_timeout(&m, None), Some(t(10_001)));
        s.update(t(10_001), &m, None);
        assert!(s.events().is_active(EventKind::BatteryMissing));
    }

    #[test]
    fn cell_over_voltage_stops_charging_only() {
        let (mut s, mut m) = running(cfg());
        let mut cells = [MilliVolts(4000); 96];
        cells[41] = MilliVolts(4210);
        m.cells.set_voltages(t(1), &cells);
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.charge_current_limit, DeciAmps(0));
        assert_eq!(o.charge_limited_by, LimitReason::CellVoltage);
        assert_eq!(o.discharge_current_limit, DeciAmps(500));
        assert!(o.alarms.contains(Alarms::CELL_OVER_VOLTAGE));
        let rec = s.events().record(EventKind::CellOverVoltage);
        assert!(rec.active);
        assert_eq!(rec.data, (42 << 16) | 4210, "cell number from 1 and its voltage");
        assert_eq!(o.contactors, Some(ContactorRequest::Closed));

        // Inside the hysteresis band it stays active; below it, it clears.
        cells[41] = MilliVolts(4190);
        m.cells.set_voltages(t(2), &cells);
        assert_eq!(s.update(t(2), &m, Some(t(2))).charge_current_limit, DeciAmps(0));
        cells[41] = MilliVolts(4150);
        m.cells.set_voltages(t(3), &cells);
        let o = *s.update(t(3), &m, Some(t(3)));
        assert!(!s.events().is_active(EventKind::CellOverVoltage));
        assert!(o.charge_current_limit > DeciAmps(0), "derated, not stopped");
        assert!(o.charge_current_limit < DeciAmps(500), "still derated in the warning band");
        assert_eq!(o.charge_limited_by, LimitReason::CellVoltage);
    }

    #[test]
    fn critical_cell_voltage_opens_contactors_and_latches_until_start() {
        let (mut s, mut m) = running(cfg());
        let mut cells = [MilliVolts(3700); 96];
        cells[0] = MilliVolts(2900);
        m.cells.set_voltages(t(1), &cells);
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.contactors, Some(ContactorRequest::Open));
        assert!(o.alarms.contains(Alarms::CRITICAL));
        m.cells.set_voltages(t(2), &[MilliVolts(3700); 96]);
        let o = *s.update(t(2), &m, Some(t(2)));
        assert_eq!(o.contactors, Some(ContactorRequest::Open), "latched");
        s.handle_command(t(3), Command::Start).unwrap();
        let o = *s.update(t(3), &m, Some(t(3)));
        assert_eq!(o.contactors, Some(ContactorRequest::Closed));
        assert!(o.alarms.is_empty());
    }

    #[test]
    fn pack_voltage_and_temperature_rules() {
        let (mut s, mut m) = running(cfg());
        m.pack_voltage = Some(Reading::new(DeciVolts(4050), t(1)));
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(0), LimitReason::PackVoltage));
        assert!(o.discharge_current_limit > DeciAmps(0));
        m.pack_voltage = Some(Reading::new(DeciVolts(2500), t(2)));
        let o = *s.update(t(2), &m, Some(t(2)));
        assert_eq!(o.discharge_current_limit, DeciAmps(0));
        assert!(s.events().is_active(EventKind::BatteryUnderVoltage));

        let (mut s, mut m) = running(cfg());
        m.temperature_max = Some(Reading::new(DeciCelsius(475), t(1)));
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.charge_current_limit, DeciAmps(250), "halfway between 45 and 50 °C: half");
        assert_eq!(o.discharge_limited_by, LimitReason::Temperature);
        m.temperature_max = Some(Reading::new(DeciCelsius(510), t(2)));
        let o = *s.update(t(2), &m, Some(t(2)));
        assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
        assert!(s.events().is_active(EventKind::BatteryOverheat));

        let (mut s, mut m) = running(cfg());
        m.temperature_min = Some(Reading::new(DeciCelsius(-50), t(1)));
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.charge_current_limit, DeciAmps(0));
        assert_eq!(o.discharge_current_limit, DeciAmps(500));
        assert!(s.events().is_active(EventKind::BatteryFrozen));
    }

    #[test]
    fn soc_window_scales_soc_and_energy_with_tapers_at_the_edges() {
        let mut c = cfg();
        c.soc_window = SocWindow { min: BasisPoints(1000), max: BasisPoints(9000) };
        let (mut s, mut m) = running(c);
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.soc, Some(BasisPoints(5000)));
        assert_eq!(o.total_energy, Some(WattHours(32_000)));
        assert_eq!(o.remaining_energy, Some(WattHours(16_000)));

        for (real, reported) in [(900, 0), (1000, 0), (9000, 10_000), (9500, 10_000), (8800, 9750)] {
            m.soc = Some(Reading::new(BasisPoints(real), t(2)));
            assert_eq!(s.update(t(2), &m, Some(t(2))).soc, Some(BasisPoints(reported)), "real {real}");
        }
        m.soc = Some(Reading::new(BasisPoints(9000), t(3)));
        let o = *s.update(t(3), &m, Some(t(3)));
        assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(0), LimitReason::SocFull));
        assert_eq!(o.discharge_current_limit, DeciAmps(500));
        m.soc = Some(Reading::new(BasisPoints(8800), t(4)));
        let o = *s.update(t(4), &m, Some(t(4)));
        assert_eq!(o.charge_current_limit, DeciAmps(250), "reported 97.5 %: half of the 95-100 % taper");
        m.soc = Some(Reading::new(BasisPoints(1000), t(5)));
        let o = *s.update(t(5), &m, Some(t(5)));
        assert_eq!((o.discharge_current_limit, o.discharge_limited_by), (DeciAmps(0), LimitReason::SocEmpty));
        assert_eq!(o.remaining_energy, Some(WattHours(0)));
    }

    #[test]
    fn limits_are_the_least_of_bms_user_and_power() {
        let (mut s, mut m) = running(cfg());
        m.max_charge_power = Some(Reading::new(Watts(7600), t(1)));
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(200), LimitReason::Bms));
        let mut c = cfg();
        c.max_discharge_power = Watts(3800);
        let (mut s, m) = running(c);
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!((o.discharge_current_limit, o.discharge_limited_by), (DeciAmps(100), LimitReason::User));
        assert_eq!(o.discharge_power_limit, Watts(3800));
    }

    #[test]
    fn pause_resume_and_stop() {
        let (mut s, m) = running(cfg());
        s.handle_command(t(1), Command::Pause).unwrap();
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
        assert_eq!(o.charge_limited_by, LimitReason::Paused);
        assert_eq!(o.contactors, Some(ContactorRequest::Closed), "pause keeps the contactors");
        s.handle_command(t(2), Command::Resume).unwrap();
        assert_eq!(s.update(t(2), &m, Some(t(2))).charge_current_limit, DeciAmps(500));
        assert_eq!(s.events().record(EventKind::PauseBegin).count, 1);
        assert_eq!(s.events().record(EventKind::PauseEnd).count, 1);

        s.handle_command(t(3), Command::Stop).unwrap();
        let o = *s.update(t(3), &m, Some(t(3)));
        assert_eq!(o.contactors, Some(ContactorRequest::Open));
        assert_eq!(o.discharge_limited_by, LimitReason::Stopped);
        s.handle_command(t(4), Command::Start).unwrap();
        assert_eq!(s.update(t(4), &m, Some(t(4))).contactors, Some(ContactorRequest::Closed));
    }

    #[test]
    fn temporary_limits_only_lower_and_expire_by_themselves() {
        let (mut s, m) = running(cfg());
        let cmd = Command::SetTemporaryLimits {
            charge: Some(DeciAmps(150)),
            discharge: Some(DeciAmps(9000)),
            timeout: Duration::from_secs(30),
        };
        s.handle_command(t(1000), cmd).unwrap();
        let o = *s.update(t(1000), &m, Some(t(1000)));
        assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(150), LimitReason::Temporary));
        assert_eq!(o.discharge_current_limit, DeciAmps(500), "a remote limit cannot raise the user's");
        assert_eq!(o.temporary_limits_until, Some(t(31_000)));
        assert_eq!(s.poll_timeout(&m, Some(t(1000))), Some(t(10_001)).min(Some(t(31_000))));
        let o = *s.update(t(31_000), &healthy(t(31_000)), Some(t(31_000)));
        assert_eq!(o.charge_current_limit, DeciAmps(500));
        assert_eq!(s.events().record(EventKind::TemporaryLimitsExpired).count, 1);
    }

    #[test]
    fn bad_commands_change_nothing_and_raise_an_event() {
        let (mut s, m) = running(cfg());
        let before = *s.update(t(1), &m, Some(t(1)));
        let bad = [
            Command::SetTemporaryLimits {
                charge: Some(DeciAmps(-1)),
                discharge: None,
                timeout: Duration::from_secs(30),
            },
            Command::SetTemporaryLimits { charge: None, discharge: None, timeout: Duration::ZERO },
            Command::SetSocWindow { min: BasisPoints(6000), max: BasisPoints(5000) },
            Command::SetSocWindow { min: BasisPoints(0), max: BasisPoints(10_001) },
        ];
        for (i, cmd) in bad.into_iter().enumerate() {
            assert!(s.handle_command(t(2), cmd).is_err(), "{cmd:?}");
            assert_eq!(s.events().record(EventKind::CommandRejected).count, i as u32 + 1);
        }
        assert_eq!(*s.update(t(1), &m, Some(t(1))), before);
        s.handle_command(t(3), Command::SetSocWindow { min: BasisPoints(2000), max: BasisPoints(8000) }).unwrap();
        assert_eq!(s.update(t(3), &m, Some(t(3))).soc, Some(BasisPoints(5000)));
        assert_eq!(s.soc_window(), SocWindow { min: BasisPoints(2000), max: BasisPoints(8000) });
    }

    #[test]
    fn contactors_wait_for_the_inverter_and_an_inverter_loss_zeroes_limits_without_opening() {
        let mut s = Supervisor::new(cfg());
        let m = healthy(t(0));
        let o = *s.update(t(0), &m, None);
        assert_eq!(o.contactors, Some(ContactorRequest::Open), "no inverter yet");
        assert_eq!(o.charge_limited_by, LimitReason::InverterMissing);
        let o = *s.update(t(500), &healthy(t(500)), Some(t(500)));
        assert_eq!(o.contactors, Some(ContactorRequest::Closed));
        let o = *s.update(t(10_501), &healthy(t(10_501)), Some(t(500)));
        assert!(!o.inverter_present);
        assert_eq!(o.contactors, Some(ContactorRequest::Closed), "not opened under a possible load");
        assert_eq!(o.charge_current_limit, DeciAmps(0));
        assert!(s.events().is_active(EventKind::InverterMissing));
        let o = *s.update(t(11_000), &healthy(t(11_000)), Some(t(11_000)));
        assert!(o.inverter_present && !s.events().is_active(EventKind::InverterMissing));
        assert_eq!(o.charge_current_limit, DeciAmps(500));
    }

    #[test]
    fn bms_fault_and_hvil_open_the_contactors() {
        let (mut s, mut m) = running(cfg());
        m.faults.set(BmsFaults::HVIL_OPEN, true);
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.contactors, Some(ContactorRequest::Open));
        assert!(o.alarms.contains(Alarms::BMS_FAULT));
        assert!(s.events().is_active(EventKind::HvilFailure));
    }

    #[test]
    fn soc_window_scale_never_panics_or_leaves_range() {
        for min in (0..=10_000u16).step_by(997) {
            for max in (0..=10_000u16).step_by(1013) {
                for real in (0..=12_000u16).step_by(331) {
                    let s = SocWindow { min: BasisPoints(min), max: BasisPoints(max) }.scale(BasisPoints(real));
                    assert!(s.0 <= 10_000);
                }
            }
        }
        let _ = MAX_CELLS;
    }
}
