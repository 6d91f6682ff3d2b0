//! The safety supervisor: everything the inverter is told passes through here.
//!
//! It fails **closed**: current flows in a direction only while fresh data proves that direction safe. Each call
//! to [`Supervisor::update`] runs the rules of [`rules::RULES`] in their fixed order against the model at `now`
//! and produces one [`Output`]: reported SOC and energy (after the user's SOC window), charge and discharge current
//! limits (the least of every limit that applies, with the rule that set it: `limited_by`), voltage targets,
//! alarm and warning flags, and whether the contactors may be closed. Conditions raise and clear events in the
//! [`EventLog`]. The table, its order and what each rule does are documented in [`rules`]; the README's supervisor
//! table states the same.
//!
//! What is kept between updates is small and explicit: the pause and stop flags, the critical latches (which
//! outlive a restart through [`Latches`]), the temporary limits, the SOC window in use, the open-under-load timer,
//! the over-current timers and the current-direction check's integrator.
//!
//! Cell limits by chemistry (typical datasheet figures for the cell families; each is clamped into the pack's
//! design bounds from its driver): NMC/NCA 3.0-4.2 V with warnings 100 mV inside and critical 50 mV outside;
//! LFP 2.8-3.6 V, warnings 100 mV inside, critical 50 mV outside. The charge voltage told to the inverter (its
//! constant-voltage target) is 100 mV per cell below the cell maximum unless configured: a LEAF at 100 % rests at
//! about 4.10 V/cell (the LEAF simulator's and Battery-Emulator's full-pack figures), and an inverter aiming at
//! the cell maximum itself would leave no margin for cell spread.

pub mod rules;

use crate::battery::ContactorRequest;
use crate::command::{check_range, Command, CommandError, MAX_TEMPORARY_LIMIT_TIMEOUT};
use crate::events::{EventKind, EventLog};
use crate::model::{BatteryModel, BmsRequests, Chemistry, DesignStatus, PackDesign, Quantity};
use crate::time::{Duration, Instant};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours, Watts};

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
        /// Battery data stale, missing or unconfirmed.
        const COMMUNICATION = 1 << 7;
        /// The BMS reports a fault or asks for its relays opened, or the interlock is open.
        const BMS_FAULT = 1 << 8;
        /// A critical condition latched: contactors opened until `Start`.
        const CRITICAL = 1 << 9;
        /// The measured current exceeded what the inverter was allowed.
        const OVER_CURRENT = 1 << 10;
    }
}

/// Why a limit is what it is: the rule that gave the smallest value (its name is what `limited_by` reports).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum LimitReason {
    /// The BMS's own power or current limit.
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
    /// No valid battery frame within the stale timeout.
    Stale,
    BmsFault,
    /// A request of the BMS (one bit of [`BmsRequests`]).
    BmsRequest(BmsRequests),
    /// The pack reports its contactors not closed.
    ContactorsOpen,
    /// The inverter has not been heard (before first contact, or lost).
    InverterMissing,
    /// The inverter withdrew its permission to close the contactors.
    InverterPermission,
    /// A reading that guards this direction is missing or too old.
    Unknown(Quantity),
    /// The driver declared no required readings at all.
    NoRequirements,
    /// The driver has not confirmed the pack design yet.
    DesignPending,
    /// A critical condition is latched (critical cell voltage, design contradicted).
    Critical,
    /// The measured current exceeded the told limit: paused until `Resume`.
    OverCurrent,
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
            LimitReason::BmsRequest(r) => rules::request_reason_name(r),
            LimitReason::ContactorsOpen => "contactors_open",
            LimitReason::InverterMissing => "inverter_missing",
            LimitReason::InverterPermission => "inverter_permission",
            LimitReason::Unknown(q) => unknown_name(q),
            LimitReason::NoRequirements => "unknown:requirements",
            LimitReason::DesignPending => "design_pending",
            LimitReason::Critical => "critical",
            LimitReason::OverCurrent => "over_current",
        }
    }
}

fn unknown_name(q: Quantity) -> &'static str {
    match q {
        Quantity::PackVoltage => "unknown:pack_voltage",
        Quantity::Current => "unknown:current",
        Quantity::Soc => "unknown:soc",
        Quantity::TemperatureMin => "unknown:temperature_min",
        Quantity::TemperatureMax => "unknown:temperature_max",
        Quantity::Cells => "unknown:cells",
        Quantity::BmsChargePower => "unknown:bms_charge_power",
        Quantity::BmsDischargePower => "unknown:bms_discharge_power",
        Quantity::BmsChargeCurrent => "unknown:bms_charge_current",
        Quantity::BmsDischargeCurrent => "unknown:bms_discharge_current",
        Quantity::Status => "unknown:bms_status",
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
    /// The constant-voltage target per cell told to the inverter as its charge voltage. `None`: 100 mV below the
    /// cell maximum. Never above the cell maximum.
    pub charge_target_cell_voltage: Option<MilliVolts>,
    /// `None`: the pack's design maximum deviation.
    pub max_cell_deviation: Option<MilliVolts>,
    pub max_temperature: DeciCelsius,
    /// Above this, both limits taper linearly to 0 at `max_temperature`.
    pub derate_temperature: DeciCelsius,
    pub min_charge_temperature: DeciCelsius,
    pub min_discharge_temperature: DeciCelsius,
    /// No valid battery frame for this long → `CAN_BATTERY_MISSING`.
    pub stale_timeout: Duration,
    /// `None`: the inverter protocol's own link timeout.
    pub inverter_timeout: Option<Duration>,
    /// Measured current more than this above the told limit, for `over_current_time`, pauses the bridge.
    pub over_current_margin: DeciAmps,
    pub over_current_time: Duration,
    /// Contactors that must open under a possible load open once the measured current is at most this...
    pub open_current: DeciAmps,
    /// ... or after this long whatever the current (Battery-Emulator waits up to 7 s for a fault under load).
    pub open_ceiling: Duration,
    /// The same ceiling when the only reason to open is a lost inverter (it may still be drawing).
    pub inverter_lost_open_ceiling: Duration,
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
            charge_target_cell_voltage: None,
            max_cell_deviation: None,
            max_temperature: DeciCelsius(500),
            derate_temperature: DeciCelsius(450),
            min_charge_temperature: DeciCelsius(0),
            min_discharge_temperature: DeciCelsius(-200),
            stale_timeout: Duration::from_secs(10),
            inverter_timeout: None,
            over_current_margin: DeciAmps(50),
            over_current_time: Duration::from_secs(5),
            open_current: DeciAmps(20),
            open_ceiling: Duration::from_secs(7),
            inverter_lost_open_ceiling: Duration::from_secs(60),
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

/// The safety state that must outlive a restart of the bridge, a crash and a power cut: the shell writes it to
/// the state file whenever it changes and hands it back to the next bridge.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Latches {
    /// `Stop` was commanded (or the bridge starts without `autostart`); only `Start` ends it.
    pub stopped: bool,
    /// A cell went beyond its critical high voltage.
    pub critical_cell_over_voltage: bool,
    /// A cell went beyond its critical low voltage.
    pub critical_cell_under_voltage: bool,
    /// The pack contradicted its configured design.
    pub design_mismatch: bool,
}

impl Latches {
    pub fn critical(self) -> bool {
        self.critical_cell_over_voltage || self.critical_cell_under_voltage || self.design_mismatch
    }
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
    /// The constant-voltage target the inverter charges to.
    pub max_charge_voltage: DeciVolts,
    /// The voltage the inverter must not discharge below.
    pub min_discharge_voltage: DeciVolts,
    pub alarms: Alarms,
    pub warnings: Alarms,
    pub temperature_limits: TemperatureLimits,
    pub contactors: Option<ContactorRequest>,
    /// The contactors must open but wait (current still flowing, ceiling not reached).
    pub contactors_open_pending: bool,
    /// Every required reading fresh, the design confirmed and the pack heard within the stale timeout.
    pub data_valid: bool,
    /// The first required reading that is missing or too old, if any.
    pub unknown: Option<Quantity>,
    pub design_status: DesignStatus,
    pub inverter_present: bool,
    pub paused: bool,
    pub stopped: bool,
    pub latches: Latches,
    pub soc_window: Option<SocWindow>,
    pub temporary_limits_until: Option<Instant>,
}

#[derive(Copy, Clone, Debug)]
struct TemporaryLimits {
    charge: Option<DeciAmps>,
    discharge: Option<DeciAmps>,
    until: Instant,
}

/// Charge that flowed (in dA·ms) since the SOC last moved, for the current-direction check.
#[derive(Copy, Clone, Debug, Default)]
struct DirectionCheck {
    anchor_soc: Option<BasisPoints>,
    charge: i64,
    last_current: Option<(Instant, DeciAmps)>,
}

/// See the module doc.
#[derive(Clone, Debug)]
pub struct Supervisor {
    cfg: SupervisorConfig,
    soc_window: SocWindow,
    started_at: Option<Instant>,
    paused: bool,
    latches: Latches,
    /// Whether each latched critical condition was seen gone at the last update (so `Start` may clear it).
    critical_gone: bool,
    over_current_paused: bool,
    over_charge_since: Option<Instant>,
    over_discharge_since: Option<Instant>,
    /// Since when the contactors have had to open while current may still flow.
    open_pending_since: Option<Instant>,
    ever_heard_inverter: bool,
    /// Whether the inverter allows the contactors closed (`None`: the protocol and the wiring have no such notion).
    inverter_permission: Option<bool>,
    temporary: Option<TemporaryLimits>,
    direction: DirectionCheck,
    out: Output,
    events: EventLog,
    /// The `now` of the last `update`: deadlines at or before it have been dealt with.
    evaluated_at: Option<Instant>,
    /// [`Supervisor::poll_timeout`], as of the last `update` (or the last command: then at once).
    deadline: Option<Instant>,
}

/// Hysteresis for clearing conditions, so a value sitting on a threshold does not flap events.
const CELL_HYSTERESIS: u16 = 20;
const PACK_HYSTERESIS: u16 = 10;
const TEMP_HYSTERESIS: i16 = 10;

impl Supervisor {
    pub fn new(cfg: SupervisorConfig) -> Self {
        Supervisor {
            soc_window: cfg.soc_window,
            cfg,
            started_at: None,
            paused: false,
            latches: Latches::default(),
            critical_gone: false,
            over_current_paused: false,
            over_charge_since: None,
            over_discharge_since: None,
            open_pending_since: None,
            ever_heard_inverter: false,
            inverter_permission: None,
            temporary: None,
            direction: DirectionCheck::default(),
            out: Output::default(),
            events: EventLog::default(),
            evaluated_at: None,
            deadline: None,
        }
    }

    /// A supervisor that carries on from `latches` (the state file of the previous run, or the bridge being
    /// replaced by a restart). The latched conditions are raised as events again so they show.
    pub fn with_latches(cfg: SupervisorConfig, now: Instant, latches: Latches) -> Self {
        let mut s = Supervisor::new(cfg);
        s.latches = latches;
        for (on, kind) in [
            (latches.stopped, EventKind::BridgeStopped),
            (latches.critical_cell_over_voltage, EventKind::CellCriticalOverVoltage),
            (latches.critical_cell_under_voltage, EventKind::CellCriticalUnderVoltage),
            (latches.design_mismatch, EventKind::BatteryDesignMismatch),
        ] {
            if on {
                s.events.raise(now, kind, 0);
            }
        }
        s
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

    /// The state that must survive a restart (see [`Latches`]).
    pub fn latches(&self) -> Latches {
        self.latches
    }

    /// Whether the inverter allows the contactors closed, as of now (`Some(false)`: it withdrew it; the
    /// contactors open as for a lost inverter).
    pub fn set_inverter_permission(&mut self, permission: Option<bool>) {
        self.inverter_permission = permission;
    }

    pub fn soc_window(&self) -> SocWindow {
        self.soc_window
    }

    /// The next instant at which the output changes without any new input: a required reading ageing out, the
    /// stale deadline, temporary limits expiring, the inverter timeout, the open-under-load ceiling, an
    /// over-current lasting long enough. Deadlines already evaluated (data stale and still stale) are left out:
    /// they change nothing until new input arrives.
    ///
    /// Computed once at the end of each `update` (on every `poll_timeout` it was a fifth of the frame path): between
    /// updates readings only get newer or appear, the inverter is only heard later, and a command forces the next
    /// evaluation at once, so the figure is never later than the true deadline, at worst earlier by one spare
    /// evaluation.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn next_deadline(
        &self,
        readings: Option<Instant>,
        model: &BatteryModel,
        inverter_last_heard: Option<Instant>,
    ) -> Option<Instant> {
        let ms = Duration::from_millis(1);
        let cfg = &self.cfg;
        let stale = rules::fresh_since(model).or(self.started_at).map(|t| t + cfg.stale_timeout + ms);
        let inverter =
            cfg.inverter_timeout.and_then(|timeout| inverter_last_heard.or(self.started_at).map(|t| t + timeout + ms));
        let ceiling = cfg.open_ceiling.min(cfg.inverter_lost_open_ceiling);
        let others = [
            stale,
            self.temporary.map(|t| t.until),
            inverter,
            self.open_pending_since.map(|t| t + ceiling),
            self.over_charge_since.map(|t| t + cfg.over_current_time),
            self.over_discharge_since.map(|t| t + cfg.over_current_time),
        ];
        let others = others.into_iter().flatten().filter(|&t| self.evaluated_at.is_none_or(|e| t > e)).min();
        match (readings, others) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a command. Refused commands change nothing and raise `COMMAND_REJECTED`.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        let result = self.apply_command(now, cmd);
        if result.is_ok() {
            // Its effect shows at the next evaluation, which is due now.
            self.deadline = Some(now);
        }
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
                if self.paused || self.over_current_paused {
                    self.paused = false;
                    self.over_current_paused = false;
                    self.over_charge_since = None;
                    self.over_discharge_since = None;
                    self.events.clear(EventKind::ChargeLimitExceeded);
                    self.events.clear(EventKind::DischargeLimitExceeded);
                    self.events.raise(now, EventKind::PauseEnd, 0);
                }
            }
            Command::Stop => {
                self.latches.stopped = true;
                self.events.raise(now, EventKind::BridgeStopped, 0);
            }
            Command::Start => {
                if self.latches.critical() && !self.critical_gone {
                    return Err(CommandError::ConditionPresent {
                        what: "a critical condition (cell voltage or pack design) is still present or not yet \
                               known to be gone",
                    });
                }
                self.latches = Latches::default();
                self.events.clear(EventKind::CellCriticalOverVoltage);
                self.events.clear(EventKind::CellCriticalUnderVoltage);
                self.events.clear(EventKind::BatteryDesignMismatch);
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
        if let Some(t) = self.temporary {
            if now >= t.until {
                self.temporary = None;
                self.events.raise(now, EventKind::TemporaryLimitsExpired, 0);
            }
        }
        let mut eval =
            rules::Eval::new(now, started, model, inverter_last_heard, &self.cfg, self.soc_window, self.evaluated_at);
        for rule in rules::RULES {
            (rule.apply)(self, &mut eval);
        }
        let readings = eval.readings_expiry;
        self.out = eval.finish(self);
        self.deadline = self.next_deadline(readings, model, inverter_last_heard);
        &self.out
    }
}

#[cfg(test)]
mod tests;
