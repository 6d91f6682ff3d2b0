//! Contactors that DBE drives itself: the precharge sequence, opening, relay readback and the BMS power output.
//!
//! Many packs (the Nissan LEAF among them) close their main relays only on hardwired 12 V signals from the car;
//! no CAN frame opens them. For those packs a "contactors open" decision needs relay outputs, and this module is
//! the sans-IO state machine behind them: the caller passes time, commands, readback and voltages in, and drives
//! its outputs (GPIO lines, a Modbus relay board, a simulator) to [`Contactors::outputs`] after every call. It
//! never reads a clock and never allocates.
//!
//! # How a pack's contactors are controlled
//! [`ContactorMode`] is chosen per pack in the config: `can` (the pack closes its own contactors on CAN commands),
//! `relays` (DBE drives relay outputs through this module) or `none` (the user wired manual switches; DBE cannot
//! open the pack and must say so). Each battery driver states which modes its pack supports
//! (`Battery::contactor_modes`); [`check_mode`] is the config layer's check.
//!
//! # Sources of the facts
//! dalathegreat/Battery-Emulator (BE), `Software/src/communication/contactorcontrol/comm_contactorcontrol.cpp`
//! (line numbers of the snapshot at commit 62532e9):
//! - the order: negative contactor, then the precharge relay, then positive, then precharge off (`handle_contactors`,
//!   lines 284-327);
//! - negative → precharge: `NEGATIVE_CONTACTOR_TIME_MS` = 500 ms (lines 34-35) → [`NEGATIVE_TIME`];
//! - precharge → positive: `precharge_time_ms` = 100 ms (line 16; the stored setting `PRECHGMS` defaults to 100,
//!   `communication/nvm/comm_nvm.cpp` line 193; the settings page accepts 1-65000 ms,
//!   `devboard/webserver/settings_html.cpp` lines 2078-2079) → [`PRECHARGE_TIME`], [`PRECHARGE_TIME_RANGE_MS`];
//! - positive → precharge off: `PRECHARGE_COMPLETED_TIME_MS` = 1000 ms (lines 36-37) → [`PRECHARGE_OFF_DELAY`];
//! - a fault latches the contactors open until a power cycle (lines 215-225); DBE latches until [`Command::Reset`];
//! - the BMS power output is on from start (lines 153-163); a BMS reset turns it off for
//!   `user_set_bms_reset_duration_ms` = 30 s (`datalayer/datalayer.h` line 189; the settings page accepts 1-600 s,
//!   `settings_html.cpp` line 1283) → [`BMS_POWER_OFF_TIME`], then on, and resumes after `bmsWarmupDuration` =
//!   3000 ms (line 57, lines 536-565) → [`BMS_WARMUP`];
//! - before cutting BMS power on a pack whose BMS powers its own contactors, BE pauses and waits for exactly 0 A,
//!   or below 1.0 A (10 dA) once 5 s have passed, and gives up after 10 s (lines 512-535) → [`bms_reset_wait`]; where
//!   BE drives the contactors itself it cuts the BMS power at once (lines 581-589);
//! - equipment stop under load: BE waits for the pause (current below 1.8 A, `devboard/safety/safety.cpp` line 691)
//!   at most `ESTOP_OPEN_TIMEOUT_MS` = 7000 ms before opening (lines 38-39, 248-268) → [`PAUSE_CURRENT_THRESHOLD`],
//!   [`EQUIPMENT_STOP_OPEN_TIMEOUT`] (for the supervisor, which owns the pause).
//!
//! # Where DBE differs from BE, and why
//! - Opening: BE sets all three outputs off in one pass (lines 215-218). DBE opens the positive contactor (and the
//!   precharge relay) first and the negative [`ContactorConfig::negative_open_delay`] later (20 ms by default, DBE's
//!   choice), so the negative never breaks load current; every open decision reaches all-open within
//!   [`OPEN_DEADLINE`] (100 ms). While the positive is open (a fault or stop during the early precharge) everything
//!   opens at once.
//! - BE waits 10 s of system fault before opening (`MAX_ALLOWED_FAULT_TICKS`, line 33). Here the caller (the
//!   supervisor) decides when to open; this module opens on the call.
//! - Readback: BE drives its pins blind. Here each output may have feedback; a step of the sequence advances only
//!   once the outputs with feedback confirm the previous step, and an output whose feedback disagrees with its
//!   command for longer than [`ContactorConfig::feedback_timeout`] (500 ms by default, DBE's choice: a contactor
//!   pulls in within tens of ms, a Modbus relay board answers within a few hundred) is a failure
//!   (`relay_not_following`). A feedback never reported counts as disagreeing: unknown is unsafe.
//! - Precharge check (optional, off by default since BE has none): where the inverter reports its DC bus voltage,
//!   positive closes only once the bus is within [`PrechargeCheck::margin`] of the pack voltage (20 V by default,
//!   about 5 % of a 400 V pack, the usual "precharged at 95 %" rule), and the sequence fails if that does not happen
//!   within [`PrechargeCheck::timeout`] after the precharge time (2 s by default, short enough not to cook the
//!   precharge resistor on a shorted bus).
//! - Every failure latches `opened_by_fault` until [`Command::Reset`], including a failed precharge check, so a
//!   caller that keeps asking for closed contactors cannot cycle the precharge resistor.
//!
//! # Use
//! After any `handle_*` call, drive the outputs to [`Contactors::outputs`], drain [`Contactors::poll_event`] and call
//! [`Contactors::handle_timeout`] at [`Contactors::poll_timeout`]. Current may flow only while
//! [`Contactors::state`] is [`ContactorState::Closed`]; while [`Contactors::failure`] is `Some`, the contactors are
//! failed and both limits must be 0.

use core::fmt;

use crate::time::{Duration, Instant};
use crate::units::{DeciAmps, DeciVolts};

/// BE `NEGATIVE_CONTACTOR_TIME_MS`: negative closed → precharge relay on.
pub const NEGATIVE_TIME: Duration = Duration::from_millis(500);
/// BE `precharge_time_ms` default: precharge relay on → positive closed.
pub const PRECHARGE_TIME: Duration = Duration::from_millis(100);
/// The precharge times BE's settings page accepts, in ms.
pub const PRECHARGE_TIME_RANGE_MS: (u64, u64) = (1, 65_000);
/// BE `PRECHARGE_COMPLETED_TIME_MS`: positive closed → precharge relay off.
pub const PRECHARGE_OFF_DELAY: Duration = Duration::from_millis(1000);
/// Every open decision reaches all outputs open within this (issue 13).
pub const OPEN_DEADLINE: Duration = Duration::from_millis(100);
/// BE `user_set_bms_reset_duration_ms` default: how long a BMS reset keeps the BMS unpowered.
pub const BMS_POWER_OFF_TIME: Duration = Duration::from_secs(30);
/// The BMS power-off times BE's settings page accepts, in s.
pub const BMS_POWER_OFF_RANGE_S: (u64, u64) = (1, 600);
/// BE `bmsWarmupDuration`: after BMS power returns, how long before the bridge resumes.
pub const BMS_WARMUP: Duration = Duration::from_millis(3000);
/// BE's BMS reset: below this current (strictly) the BMS power may be cut once [`BMS_RESET_LOW_CURRENT_WAIT`]
/// has passed (exactly 0 A may be cut at once).
pub const BMS_RESET_LOW_CURRENT: DeciAmps = DeciAmps(10);
pub const BMS_RESET_LOW_CURRENT_WAIT: Duration = Duration::from_secs(5);
/// BE's BMS reset gives up (and raises a failure event) when the current has not fallen within this.
pub const BMS_RESET_GIVE_UP: Duration = Duration::from_secs(10);
/// BE's pause counts as reached below this current (strictly), `safety.cpp` `CURRENT_THRESHOLD_dA`.
pub const PAUSE_CURRENT_THRESHOLD: DeciAmps = DeciAmps(18);
/// BE `ESTOP_OPEN_TIMEOUT_MS`: an equipment stop opens after this even if the pause has not reached 0 A.
pub const EQUIPMENT_STOP_OPEN_TIMEOUT: Duration = Duration::from_millis(7000);

/// How a pack's contactors are closed and opened (`[contactors] mode` in the config).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ContactorMode {
    /// The pack closes its own contactors on CAN commands (e.g. Tesla).
    Can,
    /// DBE drives relay outputs through the precharge sequence of this module.
    Relays,
    /// Manual switches: DBE cannot open the pack, and says so everywhere.
    None,
}

impl ContactorMode {
    pub const ALL: &'static [ContactorMode] = &[ContactorMode::Can, ContactorMode::Relays, ContactorMode::None];

    /// The name used in configs: `can`, `relays`, `none`.
    pub fn name(self) -> &'static str {
        match self {
            ContactorMode::Can => "can",
            ContactorMode::Relays => "relays",
            ContactorMode::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<ContactorMode> {
        Self::ALL.iter().copied().find(|m| m.name() == name)
    }
}

impl fmt::Display for ContactorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the bridge controls one pack's contactors: the mode, and for `relays` the sequence's timings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ContactorSetup {
    pub mode: ContactorMode,
    pub sequence: ContactorConfig,
}

impl ContactorSetup {
    pub fn relays() -> Self {
        ContactorSetup { mode: ContactorMode::Relays, sequence: ContactorConfig::default() }
    }

    pub fn with_mode(mode: ContactorMode) -> Self {
        ContactorSetup { mode, ..Self::relays() }
    }
}

impl Default for ContactorSetup {
    /// Relay outputs with Battery-Emulator's timings: what a LEAF (hardwired relays) needs.
    fn default() -> Self {
        Self::relays()
    }
}

/// A configured mode the pack does not support.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("contactor mode `{mode}` is not supported by pack `{pack}`; it supports: {}", ModeList(.supported))]
pub struct UnsupportedMode {
    pub mode: ContactorMode,
    /// The pack's name as in the config (e.g. `nissan-leaf`).
    pub pack: &'static str,
    pub supported: &'static [ContactorMode],
}

/// Formats a list of modes as `relays, none` without allocating.
struct ModeList<'a>(&'a [ContactorMode]);

impl fmt::Display for ModeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(m.name())?;
        }
        Ok(())
    }
}

/// The config layer's check: `mode` must be one of the pack's `supported` modes.
pub fn check_mode(
    pack: &'static str,
    supported: &'static [ContactorMode],
    mode: ContactorMode,
) -> Result<(), UnsupportedMode> {
    if supported.contains(&mode) {
        Ok(())
    } else {
        Err(UnsupportedMode { mode, pack, supported })
    }
}

/// One output this module drives.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Negative,
    Precharge,
    Positive,
    /// Powers the BMS (12 V to the pack's controller), for power-cycle resets.
    BmsPower,
}

impl Output {
    pub const ALL: [Output; 4] = [Output::Negative, Output::Precharge, Output::Positive, Output::BmsPower];

    pub fn name(self) -> &'static str {
        match self {
            Output::Negative => "negative",
            Output::Precharge => "precharge",
            Output::Positive => "positive",
            Output::BmsPower => "bms_power",
        }
    }

    fn bit(self) -> OutputSet {
        match self {
            Output::Negative => OutputSet::NEGATIVE,
            Output::Precharge => OutputSet::PRECHARGE,
            Output::Positive => OutputSet::POSITIVE,
            Output::BmsPower => OutputSet::BMS_POWER,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

bitflags::bitflags! {
    /// A set of outputs (e.g. those whose state can be read back).
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct OutputSet: u8 {
        const NEGATIVE = 1 << 0;
        const PRECHARGE = 1 << 1;
        const POSITIVE = 1 << 2;
        const BMS_POWER = 1 << 3;
    }
}

/// What each output must be driven to now: `true` = energised (contactor or relay closed, BMS powered).
///
/// Active-low lines and normally-closed contactors are the shell's business; here `true` always means "conducting".
/// `bms_power` is `true` except during a power cycle; drive it only when a BMS power output is configured.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutputStates {
    pub negative: bool,
    pub precharge: bool,
    pub positive: bool,
    pub bms_power: bool,
}

impl OutputStates {
    pub fn get(&self, output: Output) -> bool {
        match output {
            Output::Negative => self.negative,
            Output::Precharge => self.precharge,
            Output::Positive => self.positive,
            Output::BmsPower => self.bms_power,
        }
    }

    /// No contactor or precharge relay energised (BMS power aside).
    pub fn all_open(&self) -> bool {
        !self.negative && !self.precharge && !self.positive
    }
}

/// The contactors' state as reported in status, MQTT and the web page.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ContactorState {
    /// Not closed and not closing. The positive contactor is open (the negative may still be opening for up to
    /// [`ContactorConfig::negative_open_delay`]).
    Open,
    /// The closing sequence is under way (negative, precharge relay, positive, precharge off).
    Precharging,
    /// Both contactors closed and the precharge relay off: the DC bus is live and current may flow.
    Closed,
    /// Opened by a fault or a failure; stays so until [`Command::Reset`].
    OpenedByFault,
}

impl ContactorState {
    pub fn name(self) -> &'static str {
        match self {
            ContactorState::Open => "open",
            ContactorState::Precharging => "precharging",
            ContactorState::Closed => "closed",
            ContactorState::OpenedByFault => "opened_by_fault",
        }
    }
}

/// Why the contactors were opened by fault. The caller turns it into an event; while it is latched the
/// contactors are failed (limits 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ContactorFailure {
    /// The DC bus did not come within the margin of the pack voltage in time. The last fresh readings (`None`:
    /// missing or stale).
    PrechargeFailed { bus: Option<DeciVolts>, pack: Option<DeciVolts> },
    /// `output`'s feedback did not show `commanded` within the feedback timeout.
    RelayNotFollowing { output: Output, commanded: bool },
    /// The caller opened on a fault ([`Command::OpenOnFault`]).
    Fault,
}

impl ContactorFailure {
    pub fn name(self) -> &'static str {
        match self {
            ContactorFailure::PrechargeFailed { .. } => "precharge_failed",
            ContactorFailure::RelayNotFollowing { .. } => "relay_not_following",
            ContactorFailure::Fault => "fault",
        }
    }
}

/// Where a BMS power cycle is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BmsPowerPhase {
    /// Powered, no cycle under way.
    On,
    /// Power cut; back on after [`BmsPowerConfig::off_time`].
    Off,
    /// Powered again; the BMS is given [`BmsPowerConfig::warmup`] before the caller resumes.
    WarmingUp,
}

impl BmsPowerPhase {
    pub fn name(self) -> &'static str {
        match self {
            BmsPowerPhase::On => "on",
            BmsPowerPhase::Off => "off",
            BmsPowerPhase::WarmingUp => "warming_up",
        }
    }
}

/// What happened, for the caller to turn into events and logs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ContactorEvent {
    /// The reported state changed to this.
    State(ContactorState),
    /// A failure latched the contactors open (reported once, when it latches).
    Failed(ContactorFailure),
    /// A BMS power cycle cut the power.
    BmsPowerOff,
    /// A BMS power cycle finished (power back and the warm-up over): the caller may resume.
    BmsPowerCycled,
}

/// Inputs from the caller.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// The contactors may be closed: start the sequence if open. Repeating it is harmless; it is ignored while a
    /// failure is latched.
    Close,
    /// Open (stop, inverter permission withdrawn): recoverable, a later `Close` closes again.
    Open,
    /// Open on a fault: latched `opened_by_fault` until `Reset`.
    OpenOnFault,
    /// Clears a latched failure (the contactors stay open until the next `Close`). Nothing happens otherwise.
    Reset,
    /// Power-cycle the BMS (off for `off_time`, on, warm-up). The caller pauses first and, where the BMS powers
    /// its own contactors, waits for ~0 A ([`bms_reset_wait`]).
    BmsPowerCycle,
}

/// A command that could not be carried out; nothing changed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no BMS power output is configured")]
    NoBmsPower,
    #[error("a BMS power cycle is already under way")]
    BmsPowerCycleBusy,
}

/// The optional precharge check.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PrechargeCheck {
    /// The positive closes only once |bus − pack| ≤ this (and the pack voltage is above it, so a 0 V reading is
    /// never "precharged").
    pub margin: DeciVolts,
    /// After the precharge time, how long the bus may take to come within the margin before the sequence fails.
    pub timeout: Duration,
    /// Readings older than this are unknown.
    pub max_age: Duration,
}

impl Default for PrechargeCheck {
    fn default() -> Self {
        PrechargeCheck { margin: DeciVolts(200), timeout: Duration::from_secs(2), max_age: Duration::from_secs(2) }
    }
}

/// The optional BMS power output.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BmsPowerConfig {
    pub off_time: Duration,
    pub warmup: Duration,
}

impl Default for BmsPowerConfig {
    fn default() -> Self {
        BmsPowerConfig { off_time: BMS_POWER_OFF_TIME, warmup: BMS_WARMUP }
    }
}

/// Timings and options. `Default` is BE's timing with no feedback, no precharge check and no BMS power output.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ContactorConfig {
    /// Negative closed → precharge relay on.
    pub negative_time: Duration,
    /// Precharge relay on → positive closed (the least; the check may hold it longer).
    pub precharge_time: Duration,
    /// Positive closed → precharge relay off.
    pub precharge_off_delay: Duration,
    /// Positive opened → negative opened; at most half of [`OPEN_DEADLINE`] (50 ms), leaving the rest for the
    /// shell's writes. 0 opens everything at once.
    pub negative_open_delay: Duration,
    pub precharge_check: Option<PrechargeCheck>,
    /// The outputs whose state the hardware reads back.
    pub feedback: OutputSet,
    /// How long an output's feedback may disagree with its command.
    pub feedback_timeout: Duration,
    pub bms_power: Option<BmsPowerConfig>,
}

impl Default for ContactorConfig {
    fn default() -> Self {
        ContactorConfig {
            negative_time: NEGATIVE_TIME,
            precharge_time: PRECHARGE_TIME,
            precharge_off_delay: PRECHARGE_OFF_DELAY,
            negative_open_delay: Duration::from_millis(20),
            precharge_check: None,
            feedback: OutputSet::empty(),
            feedback_timeout: Duration::from_millis(500),
            bms_power: None,
        }
    }
}

/// A config value out of its range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{what} is {value} ms, expected {min} to {max} ms")]
    OutOfRange { what: &'static str, value: u64, min: u64, max: u64 },
    #[error("the precharge check margin must be above 0 V")]
    ZeroMargin,
    #[error("feedback is configured for the BMS power output, but there is no BMS power output")]
    BmsPowerFeedbackWithoutOutput,
}

impl ContactorConfig {
    /// Checks the ranges the sequence's guarantees rest on (the opening deadline, a precharge that really runs).
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range(what: &'static str, d: Duration, min: u64, max: u64) -> Result<(), ConfigError> {
            let value = d.as_millis();
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { what, value, min, max })
            }
        }
        let (pmin, pmax) = PRECHARGE_TIME_RANGE_MS;
        range("precharge_time", self.precharge_time, pmin, pmax)?;
        range("negative_time", self.negative_time, 1, 60_000)?;
        range("precharge_off_delay", self.precharge_off_delay, 1, 60_000)?;
        range("negative_open_delay", self.negative_open_delay, 0, OPEN_DEADLINE.as_millis() / 2)?;
        range("feedback_timeout", self.feedback_timeout, 1, 60_000)?;
        if let Some(check) = self.precharge_check {
            if check.margin.0 == 0 {
                return Err(ConfigError::ZeroMargin);
            }
            range("precharge_check.timeout", check.timeout, 1, 60_000)?;
            range("precharge_check.max_age", check.max_age, 1, 60_000)?;
        }
        if let Some(bms) = self.bms_power {
            let (min, max) = BMS_POWER_OFF_RANGE_S;
            range("bms_power.off_time", bms.off_time, min * 1000, max * 1000)?;
            range("bms_power.warmup", bms.warmup, 0, 600_000)?;
        } else if self.feedback.contains(OutputSet::BMS_POWER) {
            return Err(ConfigError::BmsPowerFeedbackWithoutOutput);
        }
        Ok(())
    }
}

/// What the caller does about a BMS reset while it waits for the current to fall ([`bms_reset_wait`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BmsResetWait {
    /// Cut the BMS power now ([`Command::BmsPowerCycle`]).
    Cut,
    /// Keep waiting (paused).
    Wait,
    /// Current has not fallen in time: give up the reset, resume, raise a failure event.
    GiveUp,
}

/// BE's rule for cutting BMS power on a pack whose BMS powers its own contactors (cutting it under load would
/// drop them under load): exactly 0 A at once, below 1.0 A after 5 s of waiting, give up after 10 s. An unknown
/// current is never low. Where DBE drives the contactors (`relays`), no wait is needed and this is not used.
pub fn bms_reset_wait(current: Option<DeciAmps>, waited: Duration) -> BmsResetWait {
    match current.map(DeciAmps::abs) {
        Some(DeciAmps(0)) => BmsResetWait::Cut,
        Some(i) if i < BMS_RESET_LOW_CURRENT && waited >= BMS_RESET_LOW_CURRENT_WAIT => BmsResetWait::Cut,
        _ if waited >= BMS_RESET_GIVE_UP => BmsResetWait::GiveUp,
        _ => BmsResetWait::Wait,
    }
}

/// Where the closing sequence is. Each step records when it began.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// Negative closed; the precharge relay follows after `negative_time`.
    Negative {
        since: Instant,
    },
    /// Negative and precharge relay closed; the positive follows after `precharge_time` (and the check).
    Precharge {
        since: Instant,
    },
    /// Both contactors and the precharge relay closed; the precharge relay opens after `precharge_off_delay`.
    Positive {
        since: Instant,
    },
    /// Precharge relay commanded off, waiting for it to confirm (where it has feedback).
    PrechargeOff,
    Closed,
    /// Positive and precharge relay opened at `since`; the negative opens at `since + negative_open_delay`.
    Opening {
        since: Instant,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum BmsCycle {
    Idle,
    Off { since: Instant },
    WarmingUp { since: Instant },
}

/// A reading with the time it arrived.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Stamped {
    value: DeciVolts,
    at: Instant,
}

const EVENTS: usize = 8;

/// The contactor state machine (see the module doc).
#[derive(Clone, Debug)]
pub struct Contactors {
    cfg: ContactorConfig,
    phase: Phase,
    /// The caller's last `Close`/`Open`.
    want_closed: bool,
    latched: Option<ContactorFailure>,
    bms: BmsCycle,
    /// Each output's last reported state, indexed by `Output::index`.
    reported: [Option<bool>; 4],
    /// Since when each output with feedback has disagreed with its command.
    mismatch_since: [Option<Instant>; 4],
    bus: Option<Stamped>,
    pack: Option<Stamped>,
    /// The latest `now` seen, so `poll_timeout` never hands out a deadline that has already been dealt with.
    now: Instant,
    reported_state: ContactorState,
    events: heapless::Deque<ContactorEvent, EVENTS>,
}

impl Contactors {
    /// All outputs open, BMS powered. Check the config with [`ContactorConfig::validate`] first.
    pub fn new(cfg: ContactorConfig) -> Self {
        Contactors {
            cfg,
            phase: Phase::Open,
            want_closed: false,
            latched: None,
            bms: BmsCycle::Idle,
            reported: [None; 4],
            mismatch_since: [None; 4],
            bus: None,
            pack: None,
            now: Instant::ZERO,
            reported_state: ContactorState::Open,
            events: heapless::Deque::new(),
        }
    }

    pub fn config(&self) -> &ContactorConfig {
        &self.cfg
    }

    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        self.tick(now);
        match cmd {
            // Ignored while latched, so a caller repeating `Close` does not close the moment `Reset` arrives.
            Command::Close => self.want_closed = self.latched.is_none(),
            Command::Open => {
                self.want_closed = false;
                self.open(now);
            }
            Command::OpenOnFault => self.fail(now, ContactorFailure::Fault),
            Command::Reset => {
                if self.latched.take().is_some() {
                    // A fresh start for the readback: an output still disagreeing fails again after the timeout.
                    for m in self.mismatch_since.iter_mut().filter(|m| m.is_some()) {
                        *m = Some(now);
                    }
                }
            }
            Command::BmsPowerCycle => {
                if self.cfg.bms_power.is_none() {
                    return Err(CommandError::NoBmsPower);
                }
                if self.bms != BmsCycle::Idle {
                    return Err(CommandError::BmsPowerCycleBusy);
                }
                self.bms = BmsCycle::Off { since: now };
                self.push(ContactorEvent::BmsPowerOff);
            }
        }
        self.step(now);
        Ok(())
    }

    /// An output's read-back state (`true` = conducting). Ignored for outputs without configured feedback.
    pub fn handle_feedback(&mut self, now: Instant, output: Output, conducting: bool) {
        self.tick(now);
        if self.cfg.feedback.contains(output.bit()) {
            self.reported[output.index()] = Some(conducting);
        }
        self.step(now);
    }

    /// The DC bus voltage the inverter reports (for the precharge check).
    pub fn handle_bus_voltage(&mut self, now: Instant, voltage: DeciVolts) {
        self.tick(now);
        self.bus = Some(Stamped { value: voltage, at: now });
        self.step(now);
    }

    /// The pack voltage the battery reports (for the precharge check).
    pub fn handle_pack_voltage(&mut self, now: Instant, voltage: DeciVolts) {
        self.tick(now);
        self.pack = Some(Stamped { value: voltage, at: now });
        self.step(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.step(now);
    }

    /// What each output must be driven to now.
    #[must_use]
    pub fn outputs(&self) -> OutputStates {
        let (negative, precharge, positive) = match self.phase {
            Phase::Open => (false, false, false),
            Phase::Negative { .. } => (true, false, false),
            Phase::Precharge { .. } => (true, true, false),
            Phase::Positive { .. } => (true, true, true),
            Phase::PrechargeOff | Phase::Closed => (true, false, true),
            Phase::Opening { .. } => (true, false, false),
        };
        OutputStates { negative, precharge, positive, bms_power: !matches!(self.bms, BmsCycle::Off { .. }) }
    }

    #[must_use]
    pub fn state(&self) -> ContactorState {
        if self.latched.is_some() {
            return ContactorState::OpenedByFault;
        }
        match self.phase {
            Phase::Open | Phase::Opening { .. } => ContactorState::Open,
            Phase::Negative { .. } | Phase::Precharge { .. } | Phase::Positive { .. } | Phase::PrechargeOff => {
                ContactorState::Precharging
            }
            Phase::Closed => ContactorState::Closed,
        }
    }

    /// The latched failure, if any: while `Some`, the contactors are failed and both limits must be 0.
    #[must_use]
    pub fn failure(&self) -> Option<ContactorFailure> {
        self.latched
    }

    #[must_use]
    pub fn bms_power_phase(&self) -> BmsPowerPhase {
        match self.bms {
            BmsCycle::Idle => BmsPowerPhase::On,
            BmsCycle::Off { .. } => BmsPowerPhase::Off,
            BmsCycle::WarmingUp { .. } => BmsPowerPhase::WarmingUp,
        }
    }

    /// When `handle_timeout` next has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let step = match self.phase {
            Phase::Negative { since } => Some(since + self.cfg.negative_time),
            Phase::Precharge { since } => {
                let least = since + self.cfg.precharge_time;
                match self.cfg.precharge_check {
                    // Before the least time, that is the next thing; after it, the failure deadline (readings
                    // arriving in between advance the sequence themselves).
                    Some(check) if least <= self.now => Some(least + check.timeout),
                    _ => Some(least),
                }
            }
            Phase::Positive { since } => Some(since + self.cfg.precharge_off_delay),
            Phase::Opening { since } => Some(since + self.cfg.negative_open_delay),
            Phase::Open | Phase::PrechargeOff | Phase::Closed => None,
        };
        let bms = match (self.bms, self.cfg.bms_power) {
            (BmsCycle::Off { since }, Some(b)) => Some(since + b.off_time),
            (BmsCycle::WarmingUp { since }, Some(b)) => Some(since + b.warmup),
            _ => None,
        };
        let feedback = self.mismatch_since.iter().flatten().map(|&t| t + self.cfg.feedback_timeout).min();
        [step, bms, feedback].into_iter().flatten().filter(|&t| t > self.now).min()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ContactorEvent> {
        self.events.pop_front()
    }

    fn push(&mut self, event: ContactorEvent) {
        // The getters stay authoritative; a caller that stops polling loses the oldest events, never the newest.
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Opens: the positive and the precharge relay at once, the negative after `negative_open_delay` if the
    /// positive was closed (so the negative never breaks current), else at once.
    fn open(&mut self, now: Instant) {
        self.phase = match self.phase {
            Phase::Positive { .. } | Phase::PrechargeOff | Phase::Closed
                if self.cfg.negative_open_delay > Duration::ZERO =>
            {
                Phase::Opening { since: now }
            }
            Phase::Opening { since } => Phase::Opening { since },
            _ => Phase::Open,
        };
    }

    fn fail(&mut self, now: Instant, failure: ContactorFailure) {
        self.want_closed = false;
        if self.latched.is_none() {
            self.latched = Some(failure);
            self.push(ContactorEvent::Failed(failure));
        }
        self.open(now);
    }

    /// Every contactor output with feedback shows its command (the gate for each step of the sequence).
    fn confirmed(&self) -> bool {
        let out = self.outputs();
        Output::ALL
            .iter()
            .filter(|o| self.cfg.feedback.contains(o.bit()) && **o != Output::BmsPower)
            .all(|&o| self.reported[o.index()] == Some(out.get(o)))
    }

    fn fresh(&self, reading: Option<Stamped>, now: Instant, max_age: Duration) -> Option<DeciVolts> {
        reading.filter(|r| now.saturating_since(r.at) <= max_age).map(|r| r.value)
    }

    /// Runs every transition due at `now` until none is, then reports a changed state.
    fn step(&mut self, now: Instant) {
        self.step_bms(now);
        // Each pass makes at most one transition (or one failure); the sequence has fewer than 8 steps.
        for _ in 0..8 {
            let before = (self.phase, self.latched);
            self.track_mismatch(now);
            self.check_feedback(now);
            self.transition(now);
            if (self.phase, self.latched) == before {
                break;
            }
        }
        self.track_mismatch(now);
        let state = self.state();
        if state != self.reported_state {
            self.reported_state = state;
            self.push(ContactorEvent::State(state));
        }
    }

    fn transition(&mut self, now: Instant) {
        let cfg = self.cfg;
        let next = match self.phase {
            Phase::Open if self.want_closed && self.latched.is_none() => Phase::Negative { since: now },
            Phase::Negative { since } if now >= since + cfg.negative_time && self.confirmed() => {
                Phase::Precharge { since: now }
            }
            Phase::Precharge { since } if now >= since + cfg.precharge_time => match cfg.precharge_check {
                None if self.confirmed() => Phase::Positive { since: now },
                None => return,
                Some(check) => {
                    let bus = self.fresh(self.bus, now, check.max_age);
                    let pack = self.fresh(self.pack, now, check.max_age);
                    let precharged = match (bus, pack) {
                        (Some(b), Some(p)) => p.0 > check.margin.0 && b.0.abs_diff(p.0) <= check.margin.0,
                        _ => false,
                    };
                    if precharged && self.confirmed() {
                        Phase::Positive { since: now }
                    } else if now >= since + cfg.precharge_time + check.timeout {
                        return self.fail(now, ContactorFailure::PrechargeFailed { bus, pack });
                    } else {
                        return;
                    }
                }
            },
            Phase::Positive { since } if now >= since + cfg.precharge_off_delay && self.confirmed() => {
                Phase::PrechargeOff
            }
            Phase::PrechargeOff if self.confirmed() => Phase::Closed,
            Phase::Opening { since } if now >= since + cfg.negative_open_delay => Phase::Open,
            _ => return,
        };
        self.phase = next;
    }

    fn step_bms(&mut self, now: Instant) {
        let Some(b) = self.cfg.bms_power else { return };
        match self.bms {
            BmsCycle::Off { since } if now >= since + b.off_time => {
                self.bms = BmsCycle::WarmingUp { since: now };
                self.step_bms(now);
            }
            BmsCycle::WarmingUp { since } if now >= since + b.warmup => {
                self.bms = BmsCycle::Idle;
                self.push(ContactorEvent::BmsPowerCycled);
            }
            _ => {}
        }
    }

    /// Fails on any output whose feedback has disagreed with its command for the feedback timeout.
    fn check_feedback(&mut self, now: Instant) {
        let out = self.outputs();
        for o in Output::ALL {
            if let Some(since) = self.mismatch_since[o.index()] {
                let still = self.reported[o.index()] != Some(out.get(o));
                if still && now >= since + self.cfg.feedback_timeout {
                    self.fail(now, ContactorFailure::RelayNotFollowing { output: o, commanded: out.get(o) });
                }
            }
        }
    }

    /// Starts or clears each output's disagreement clock after the commands or the readback changed. The clock runs
    /// from the moment command and readback first disagreed and is not restarted by a new command, so a caller
    /// toggling its command faster than the timeout cannot hide a relay that never follows.
    fn track_mismatch(&mut self, now: Instant) {
        let out = self.outputs();
        for o in Output::ALL {
            let i = o.index();
            if !self.cfg.feedback.contains(o.bit()) {
                continue;
            }
            if self.reported[i] == Some(out.get(o)) {
                self.mismatch_since[i] = None;
            } else if self.mismatch_since[i].is_none() {
                self.mismatch_since[i] = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// `(negative, precharge, positive)` as a compact tuple for assertions.
    fn nnp(c: &Contactors) -> (bool, bool, bool) {
        let o = c.outputs();
        (o.negative, o.precharge, o.positive)
    }

    /// A caller that jumps `now` to each deadline up to `to`, as the daemon's loop does, recording every change of
    /// the contactor outputs with its time.
    struct Sim {
        c: Contactors,
        now: Instant,
        trace: Vec<(u64, (bool, bool, bool))>,
    }

    impl Sim {
        fn new(cfg: ContactorConfig) -> Self {
            cfg.validate().unwrap();
            let c = Contactors::new(cfg);
            let trace = std::vec![(0, nnp(&c))];
            Sim { c, now: Instant::ZERO, trace }
        }

        fn record(&mut self) {
            let o = nnp(&self.c);
            if self.trace.last().map(|l| l.1) != Some(o) {
                self.trace.push((self.now.as_millis(), o));
            }
        }

        fn run_to(&mut self, to: u64) {
            while let Some(at) = self.c.poll_timeout().filter(|&at| at <= t(to)) {
                self.now = at;
                self.c.handle_timeout(at);
                self.record();
            }
            self.now = t(to);
            self.c.handle_timeout(self.now);
            self.record();
        }

        fn cmd(&mut self, cmd: Command) {
            self.c.handle_command(self.now, cmd).unwrap();
            self.record();
        }

        fn feedback(&mut self, output: Output, on: bool) {
            self.c.handle_feedback(self.now, output, on);
            self.record();
        }

        /// Reports every output as following its command.
        fn follow(&mut self) {
            for o in Output::ALL {
                let on = self.c.outputs().get(o);
                self.c.handle_feedback(self.now, o, on);
            }
            self.record();
        }

        fn events(&mut self) -> Vec<ContactorEvent> {
            core::iter::from_fn(|| self.c.poll_event()).collect()
        }
    }

    const OPEN: (bool, bool, bool) = (false, false, false);
    const NEG: (bool, bool, bool) = (true, false, false);
    const NEG_PRE: (bool, bool, bool) = (true, true, false);
    const ALL_ON: (bool, bool, bool) = (true, true, true);
    const CLOSED: (bool, bool, bool) = (true, false, true);

    #[test]
    fn closes_negative_then_precharge_then_positive_then_precharge_off_on_bes_timing() {
        let mut s = Sim::new(ContactorConfig::default());
        s.run_to(1000);
        assert_eq!(s.c.state(), ContactorState::Open);
        s.cmd(Command::Close);
        assert_eq!(s.c.state(), ContactorState::Precharging);
        s.run_to(5000);
        assert_eq!(
            s.trace,
            [(0, OPEN), (1000, NEG), (1500, NEG_PRE), (1600, ALL_ON), (2600, CLOSED)],
            "500 ms negative time, 100 ms precharge time, 1000 ms until precharge off"
        );
        assert_eq!(s.c.state(), ContactorState::Closed);
        assert_eq!(
            s.events(),
            [ContactorEvent::State(ContactorState::Precharging), ContactorEvent::State(ContactorState::Closed)]
        );
        assert_eq!(s.c.poll_timeout(), None, "nothing to do while closed");
        // Repeating Close changes nothing.
        s.cmd(Command::Close);
        assert_eq!(s.trace.len(), 5);
    }

    #[test]
    fn opening_from_closed_opens_positive_first_and_negative_within_100_ms() {
        let mut s = Sim::new(ContactorConfig::default());
        s.cmd(Command::Close);
        s.run_to(3000);
        assert_eq!(s.c.state(), ContactorState::Closed);
        s.trace.clear();
        s.cmd(Command::Open);
        assert_eq!(nnp(&s.c), NEG, "the positive opens on the call, the negative after it");
        assert_eq!(s.c.state(), ContactorState::Open);
        s.run_to(4000);
        assert_eq!(s.trace, [(3000, NEG), (3020, OPEN)]);
        assert!(3020 - 3000 <= OPEN_DEADLINE.as_millis());
        // Recoverable: Close runs the whole sequence again.
        s.cmd(Command::Close);
        s.run_to(6000);
        assert_eq!(s.c.state(), ContactorState::Closed);
    }

    #[test]
    fn no_open_delay_opens_everything_at_once() {
        let mut s = Sim::new(ContactorConfig { negative_open_delay: Duration::ZERO, ..Default::default() });
        s.cmd(Command::Close);
        s.run_to(3000);
        s.cmd(Command::OpenOnFault);
        assert_eq!(nnp(&s.c), OPEN);
    }

    #[test]
    fn fault_during_precharge_opens_everything_at_once_and_latches() {
        let mut s = Sim::new(ContactorConfig::default());
        s.cmd(Command::Close);
        s.run_to(550);
        assert_eq!(nnp(&s.c), NEG_PRE);
        s.cmd(Command::OpenOnFault);
        assert_eq!(nnp(&s.c), OPEN, "the positive was never closed: nothing to stage");
        assert_eq!(s.c.state(), ContactorState::OpenedByFault);
        assert_eq!(s.c.failure(), Some(ContactorFailure::Fault));
        // Latched: Close does nothing, time does nothing.
        s.cmd(Command::Close);
        s.run_to(10_000);
        assert_eq!(nnp(&s.c), OPEN);
        assert_eq!(
            s.events(),
            [
                ContactorEvent::State(ContactorState::Precharging),
                ContactorEvent::Failed(ContactorFailure::Fault),
                ContactorEvent::State(ContactorState::OpenedByFault)
            ]
        );
    }

    #[test]
    fn fault_after_positive_closed_still_opens_positive_first() {
        let mut s = Sim::new(ContactorConfig::default());
        s.cmd(Command::Close);
        s.run_to(700);
        assert_eq!(nnp(&s.c), ALL_ON, "still precharging: the precharge relay is on with the positive");
        assert_eq!(s.c.state(), ContactorState::Precharging);
        s.cmd(Command::OpenOnFault);
        assert_eq!(nnp(&s.c), NEG);
        s.run_to(720);
        assert_eq!(nnp(&s.c), OPEN);
    }

    #[test]
    fn stop_during_precharge_opens_at_once_and_is_not_latched() {
        let mut s = Sim::new(ContactorConfig::default());
        s.cmd(Command::Close);
        s.run_to(200);
        assert_eq!(nnp(&s.c), NEG);
        s.cmd(Command::Open);
        assert_eq!(nnp(&s.c), OPEN);
        assert_eq!(s.c.state(), ContactorState::Open);
        assert_eq!(s.c.failure(), None);
        s.run_to(5000);
        assert_eq!(nnp(&s.c), OPEN, "stays open without a new Close");
        s.cmd(Command::Close);
        s.run_to(7000);
        assert_eq!(s.c.state(), ContactorState::Closed);
    }

    #[test]
    fn reset_clears_the_latch_and_the_next_close_closes() {
        let mut s = Sim::new(ContactorConfig::default());
        s.cmd(Command::Close);
        s.run_to(3000);
        s.cmd(Command::OpenOnFault);
        s.run_to(3100);
        s.cmd(Command::Close);
        s.run_to(4000);
        assert_eq!(s.c.state(), ContactorState::OpenedByFault);
        s.cmd(Command::Reset);
        assert_eq!(s.c.state(), ContactorState::Open);
        assert_eq!(s.c.failure(), None);
        s.run_to(6000);
        assert_eq!(nnp(&s.c), OPEN, "a Close sent while latched is not remembered");
        s.cmd(Command::Close);
        s.run_to(8000);
        assert_eq!(s.c.state(), ContactorState::Closed);
        // Reset without a latched failure changes nothing.
        s.cmd(Command::Reset);
        assert_eq!(s.c.state(), ContactorState::Closed);
    }

    fn checked() -> ContactorConfig {
        ContactorConfig { precharge_check: Some(PrechargeCheck::default()), ..Default::default() }
    }

    #[test]
    fn precharge_check_holds_the_positive_until_the_bus_is_within_the_margin() {
        let mut s = Sim::new(checked());
        s.c.handle_pack_voltage(s.now, DeciVolts(3600));
        s.cmd(Command::Close);
        s.run_to(600);
        assert_eq!(nnp(&s.c), NEG_PRE, "the precharge time is over but the bus is unknown");
        s.c.handle_bus_voltage(s.now, DeciVolts(3000));
        s.c.handle_pack_voltage(s.now, DeciVolts(3600));
        s.record();
        assert_eq!(nnp(&s.c), NEG_PRE, "60 V short of the pack");
        s.run_to(900);
        s.c.handle_pack_voltage(s.now, DeciVolts(3600));
        s.c.handle_bus_voltage(s.now, DeciVolts(3410));
        s.record();
        assert_eq!(nnp(&s.c), ALL_ON, "19 V short: within 20 V");
        s.run_to(3000);
        assert_eq!(s.c.state(), ContactorState::Closed);
        assert_eq!(s.trace, [(0, OPEN), (0, NEG), (500, NEG_PRE), (900, ALL_ON), (1900, CLOSED)]);
    }

    #[test]
    fn precharge_check_waits_out_the_precharge_time_even_when_the_bus_is_already_up() {
        let mut s = Sim::new(checked());
        s.cmd(Command::Close);
        s.run_to(510);
        s.c.handle_pack_voltage(s.now, DeciVolts(3600));
        s.c.handle_bus_voltage(s.now, DeciVolts(3600));
        s.record();
        assert_eq!(nnp(&s.c), NEG_PRE);
        s.run_to(600);
        assert_eq!(nnp(&s.c), ALL_ON);
    }

    #[test]
    fn precharge_check_fails_and_stays_open_when_the_bus_does_not_come_up() {
        let mut s = Sim::new(checked());
        s.cmd(Command::Close);
        s.run_to(1000);
        s.c.handle_pack_voltage(s.now, DeciVolts(3600));
        s.c.handle_bus_voltage(s.now, DeciVolts(1200));
        s.run_to(10_000);
        assert_eq!(s.trace, [(0, OPEN), (0, NEG), (500, NEG_PRE), (2600, OPEN)], "fails 2 s after the precharge time");
        assert_eq!(s.c.state(), ContactorState::OpenedByFault);
        assert_eq!(
            s.c.failure(),
            Some(ContactorFailure::PrechargeFailed { bus: Some(DeciVolts(1200)), pack: Some(DeciVolts(3600)) })
        );
        s.cmd(Command::Close);
        s.run_to(20_000);
        assert_eq!(nnp(&s.c), OPEN, "no retry into a bus that does not charge");
    }

    #[test]
    fn precharge_check_treats_stale_and_zero_readings_as_unknown() {
        // Readings 2.8 s old when the precharge time ends: unknown.
        let mut s = Sim::new(checked());
        s.c.handle_pack_voltage(s.now, DeciVolts(3600));
        s.c.handle_bus_voltage(s.now, DeciVolts(3600));
        s.run_to(2200);
        s.cmd(Command::Close);
        s.run_to(10_000);
        assert_eq!(s.c.failure(), Some(ContactorFailure::PrechargeFailed { bus: None, pack: None }));

        // A 0 V pack and a 0 V bus agree, but that is not a precharged bus.
        let mut s = Sim::new(checked());
        s.cmd(Command::Close);
        for ms in (0..3000).step_by(100) {
            s.run_to(ms);
            s.c.handle_pack_voltage(s.now, DeciVolts(0));
            s.c.handle_bus_voltage(s.now, DeciVolts(0));
        }
        assert_eq!(s.c.state(), ContactorState::OpenedByFault);
        assert_eq!(s.c.failure().map(ContactorFailure::name), Some("precharge_failed"));
    }

    fn with_feedback() -> ContactorConfig {
        ContactorConfig {
            feedback: OutputSet::NEGATIVE | OutputSet::PRECHARGE | OutputSet::POSITIVE,
            ..Default::default()
        }
    }

    #[test]
    fn each_step_waits_for_the_readback_of_the_previous_one() {
        let mut s = Sim::new(ContactorConfig { feedback_timeout: Duration::from_millis(800), ..with_feedback() });
        s.follow();
        s.cmd(Command::Close);
        s.run_to(600);
        assert_eq!(nnp(&s.c), NEG, "negative not confirmed: no precharge");
        s.follow();
        assert_eq!(nnp(&s.c), NEG_PRE, "confirmed after the negative time: the precharge relay follows at once");
        s.run_to(700);
        s.follow();
        s.run_to(800);
        s.follow();
        s.run_to(2000);
        assert_eq!(nnp(&s.c), CLOSED);
        assert_eq!(s.c.state(), ContactorState::Precharging, "the precharge relay has not confirmed off");
        s.follow();
        assert_eq!(s.c.state(), ContactorState::Closed);
        assert_eq!(s.trace, [(0, OPEN), (0, NEG), (600, NEG_PRE), (700, ALL_ON), (1700, CLOSED)]);
        assert_eq!(s.c.failure(), None);
    }

    #[test]
    fn a_relay_that_does_not_follow_opens_by_fault() {
        let mut s = Sim::new(with_feedback());
        s.follow();
        s.cmd(Command::Close);
        s.run_to(2000);
        assert_eq!(s.trace, [(0, OPEN), (0, NEG), (500, OPEN)], "the negative never reported closed");
        assert_eq!(
            s.c.failure(),
            Some(ContactorFailure::RelayNotFollowing { output: Output::Negative, commanded: true })
        );
        assert_eq!(s.c.state(), ContactorState::OpenedByFault);
        let events = s.events();
        assert!(events.contains(&ContactorEvent::Failed(s.c.failure().unwrap())));
        assert_eq!(s.c.failure().unwrap().name(), "relay_not_following");
    }

    #[test]
    fn a_contactor_that_drops_out_while_closed_opens_by_fault() {
        let mut s = Sim::new(with_feedback());
        s.cmd(Command::Close);
        for ms in (0..3000).step_by(50) {
            s.run_to(ms);
            s.follow();
        }
        s.run_to(3000);
        assert_eq!(s.c.state(), ContactorState::Closed);
        s.feedback(Output::Positive, false);
        s.run_to(3499);
        assert_eq!(s.c.state(), ContactorState::Closed, "within the feedback timeout");
        s.run_to(3500);
        assert_eq!(s.c.state(), ContactorState::OpenedByFault);
        s.run_to(3600);
        assert_eq!(nnp(&s.c), OPEN);
    }

    #[test]
    fn a_welded_contactor_is_found_while_open_and_found_again_after_reset() {
        let mut s = Sim::new(with_feedback());
        s.follow();
        s.feedback(Output::Negative, true);
        s.run_to(499);
        assert_eq!(s.c.failure(), None);
        s.run_to(500);
        assert_eq!(
            s.c.failure(),
            Some(ContactorFailure::RelayNotFollowing { output: Output::Negative, commanded: false })
        );
        s.cmd(Command::Reset);
        assert_eq!(s.c.failure(), None);
        assert_eq!(s.c.poll_timeout(), Some(t(1000)), "a fresh feedback timeout from the reset");
        s.run_to(1000);
        assert_eq!(s.c.state(), ContactorState::OpenedByFault, "still welded 500 ms after the reset");
        assert_eq!(s.trace, [(0, OPEN)]);
    }

    #[test]
    fn bms_power_cycles_off_then_on_then_warms_up() {
        let cfg = ContactorConfig { bms_power: Some(BmsPowerConfig::default()), ..Default::default() };
        let mut s = Sim::new(cfg);
        assert!(s.c.outputs().bms_power);
        s.run_to(1000);
        s.cmd(Command::BmsPowerCycle);
        assert!(!s.c.outputs().bms_power);
        assert_eq!(s.c.bms_power_phase(), BmsPowerPhase::Off);
        assert_eq!(s.c.handle_command(s.now, Command::BmsPowerCycle), Err(CommandError::BmsPowerCycleBusy));
        assert_eq!(s.c.poll_timeout(), Some(t(31_000)), "BE: 30 s off");
        s.run_to(30_999);
        assert!(!s.c.outputs().bms_power);
        s.run_to(31_000);
        assert!(s.c.outputs().bms_power);
        assert_eq!(s.c.bms_power_phase(), BmsPowerPhase::WarmingUp);
        s.run_to(33_999);
        assert!(!s.events().contains(&ContactorEvent::BmsPowerCycled));
        s.run_to(34_000);
        assert_eq!(s.c.bms_power_phase(), BmsPowerPhase::On);
        assert_eq!(s.events(), [ContactorEvent::BmsPowerCycled], "BE: 3 s warm-up");
        assert_eq!(nnp(&s.c), OPEN, "a BMS power cycle never touches the contactors");
        s.cmd(Command::BmsPowerCycle);
        assert_eq!(s.events(), [ContactorEvent::BmsPowerOff], "a second cycle may start once the first is over");

        let mut none = Contactors::new(ContactorConfig::default());
        assert_eq!(none.handle_command(t(0), Command::BmsPowerCycle), Err(CommandError::NoBmsPower));
        assert!(none.outputs().bms_power);
    }

    #[test]
    fn bms_power_keeps_the_contactors_closed_and_its_readback_is_checked() {
        let cfg = ContactorConfig {
            bms_power: Some(BmsPowerConfig::default()),
            feedback: OutputSet::BMS_POWER,
            ..Default::default()
        };
        let mut s = Sim::new(cfg);
        s.follow();
        s.cmd(Command::Close);
        s.run_to(3000);
        s.cmd(Command::BmsPowerCycle);
        s.run_to(3400);
        assert_eq!(s.c.state(), ContactorState::Closed);
        s.run_to(3500);
        assert_eq!(
            s.c.failure(),
            Some(ContactorFailure::RelayNotFollowing { output: Output::BmsPower, commanded: false })
        );
    }

    #[test]
    fn bms_reset_wait_follows_bes_rule() {
        use BmsResetWait::*;
        let s = Duration::from_secs;
        assert_eq!(bms_reset_wait(Some(DeciAmps(0)), s(0)), Cut);
        assert_eq!(bms_reset_wait(Some(DeciAmps(-9)), s(4)), Wait);
        assert_eq!(bms_reset_wait(Some(DeciAmps(-9)), s(5)), Cut);
        assert_eq!(bms_reset_wait(Some(DeciAmps(10)), s(5)), Wait);
        assert_eq!(bms_reset_wait(Some(DeciAmps(10)), s(10)), GiveUp);
        assert_eq!(bms_reset_wait(None, s(9)), Wait);
        assert_eq!(bms_reset_wait(None, s(10)), GiveUp);
    }

    #[test]
    fn config_validation() {
        assert_eq!(ContactorConfig::default().validate(), Ok(()));
        let bad = |cfg: ContactorConfig| cfg.validate().unwrap_err();
        let d = Duration::from_millis;
        assert_eq!(
            bad(ContactorConfig { precharge_time: d(0), ..Default::default() }),
            ConfigError::OutOfRange { what: "precharge_time", value: 0, min: 1, max: 65_000 }
        );
        assert!(matches!(
            bad(ContactorConfig { negative_open_delay: d(60), ..Default::default() }),
            ConfigError::OutOfRange { what: "negative_open_delay", .. }
        ));
        assert_eq!(
            bad(ContactorConfig {
                precharge_check: Some(PrechargeCheck { margin: DeciVolts(0), ..Default::default() }),
                ..Default::default()
            }),
            ConfigError::ZeroMargin
        );
        assert_eq!(
            bad(ContactorConfig { feedback: OutputSet::BMS_POWER, ..Default::default() }),
            ConfigError::BmsPowerFeedbackWithoutOutput
        );
        assert!(matches!(
            bad(ContactorConfig {
                bms_power: Some(BmsPowerConfig { off_time: Duration::from_secs(601), ..Default::default() }),
                ..Default::default()
            }),
            ConfigError::OutOfRange { what: "bms_power.off_time", .. }
        ));
    }

    #[test]
    fn names() {
        for m in ContactorMode::ALL {
            assert_eq!(ContactorMode::from_name(m.name()), Some(*m));
        }
        assert_eq!(ContactorMode::from_name("gpio"), None);
        let states =
            [ContactorState::Open, ContactorState::Precharging, ContactorState::Closed, ContactorState::OpenedByFault];
        assert_eq!(states.map(ContactorState::name), ["open", "precharging", "closed", "opened_by_fault"]);
        assert_eq!(Output::ALL.map(Output::name), ["negative", "precharge", "positive", "bms_power"]);
        assert_eq!(check_mode("tesla", &[ContactorMode::Can], ContactorMode::Can), Ok(()),);
    }

    #[test]
    fn a_flood_of_events_keeps_the_newest() {
        let mut c = Contactors::new(ContactorConfig::default());
        for i in 0..20 {
            c.handle_command(t(i * 10), Command::Close).unwrap();
            c.handle_command(t(i * 10 + 5), Command::Open).unwrap();
        }
        let events: Vec<_> = core::iter::from_fn(|| c.poll_event()).collect();
        assert_eq!(events.len(), EVENTS);
        assert_eq!(events.last(), Some(&ContactorEvent::State(ContactorState::Open)));
    }

    mod invariants {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            Wait(u64),
            Cmd(Command),
            Feedback(Output, bool),
            Follow,
            Bus(u16),
            Pack(u16),
        }

        fn step() -> impl Strategy<Value = Step> {
            let output = proptest::sample::select(Output::ALL.to_vec());
            let cmd = proptest::sample::select(std::vec![
                Command::Close,
                Command::Close,
                Command::Open,
                Command::OpenOnFault,
                Command::Reset,
                Command::BmsPowerCycle,
            ]);
            prop_oneof![
                4 => (0u64..800).prop_map(Step::Wait),
                3 => cmd.prop_map(Step::Cmd),
                2 => (output, any::<bool>()).prop_map(|(o, b)| Step::Feedback(o, b)),
                4 => Just(Step::Follow),
                1 => (3000u16..3800).prop_map(Step::Bus),
                1 => (3300u16..3800).prop_map(Step::Pack),
            ]
        }

        fn config() -> impl Strategy<Value = ContactorConfig> {
            (0u8..16, any::<bool>(), 0u64..=50, 1u64..400, any::<bool>()).prop_map(
                |(feedback, check, open_delay, precharge_ms, bms)| ContactorConfig {
                    feedback: OutputSet::from_bits_truncate(feedback)
                        & if bms { OutputSet::all() } else { !OutputSet::BMS_POWER },
                    precharge_check: check.then(PrechargeCheck::default),
                    negative_open_delay: Duration::from_millis(open_delay),
                    precharge_time: Duration::from_millis(precharge_ms),
                    bms_power: bms.then(|| BmsPowerConfig {
                        off_time: Duration::from_secs(1),
                        warmup: Duration::from_millis(500),
                    }),
                    ..Default::default()
                },
            )
        }

        /// What the invariants need to remember between observations.
        #[derive(Default)]
        struct Watch {
            precharge_on_since: Option<Instant>,
            open_decided_at: Option<Instant>,
        }

        impl Watch {
            fn observe(&mut self, c: &Contactors, now: Instant) -> Result<(), TestCaseError> {
                let o = c.outputs();
                prop_assert!(!o.positive || o.negative, "positive closed while negative open at {now:?}");
                if o.precharge {
                    self.precharge_on_since.get_or_insert(now);
                } else if !o.positive {
                    self.precharge_on_since = None;
                }
                if o.positive {
                    // The positive closes only with the precharge relay having run its full time in this cycle.
                    let since = self.precharge_on_since;
                    prop_assert!(
                        since.is_some_and(|s| now.saturating_since(s) >= c.config().precharge_time),
                        "positive closed at {now:?} without a full precharge (since {since:?})"
                    );
                }
                let state = c.state();
                match state {
                    ContactorState::Closed => prop_assert_eq!((o.negative, o.precharge, o.positive), CLOSED),
                    ContactorState::Open | ContactorState::OpenedByFault => {
                        prop_assert!(!o.positive, "positive closed in state {}", state.name());
                    }
                    ContactorState::Precharging => {}
                }
                prop_assert_eq!(c.failure().is_some(), state == ContactorState::OpenedByFault);
                let deciding = matches!(state, ContactorState::Open | ContactorState::OpenedByFault);
                if deciding && !o.all_open() {
                    let at = *self.open_decided_at.get_or_insert(now);
                    prop_assert!(now.saturating_since(at) <= OPEN_DEADLINE, "still not open {now:?}, decided {at:?}");
                } else {
                    self.open_decided_at = None;
                }
                Ok(())
            }
        }

        proptest! {
            #[test]
            fn positive_needs_negative_and_precharge_and_every_open_completes_in_time(
                cfg in config(),
                steps in proptest::collection::vec(step(), 1..80),
            ) {
                let mut c = Contactors::new(cfg);
                let mut w = Watch::default();
                let mut now = Instant::ZERO;
                w.observe(&c, now)?;
                for s in steps {
                    match s {
                        Step::Wait(ms) => {
                            let to = now + Duration::from_millis(ms);
                            while let Some(at) = c.poll_timeout().filter(|&at| at <= to) {
                                prop_assert!(at > now, "a deadline in the past: {at:?} at {now:?}");
                                now = at;
                                c.handle_timeout(now);
                                w.observe(&c, now)?;
                            }
                            now = to;
                            c.handle_timeout(now);
                        }
                        Step::Cmd(cmd) => {
                            let _ = c.handle_command(now, cmd);
                            if cmd == Command::Open || cmd == Command::OpenOnFault {
                                prop_assert!(!c.outputs().positive, "{cmd:?} left the positive closed");
                            }
                        }
                        Step::Feedback(o, b) => c.handle_feedback(now, o, b),
                        Step::Follow => {
                            for o in Output::ALL {
                                let on = c.outputs().get(o);
                                c.handle_feedback(now, o, on);
                            }
                        }
                        Step::Bus(v) => c.handle_bus_voltage(now, DeciVolts(v)),
                        Step::Pack(v) => c.handle_pack_voltage(now, DeciVolts(v)),
                    }
                    w.observe(&c, now)?;
                    while c.poll_event().is_some() {}
                }
                // A last open decision, then time: everything ends open within the deadline.
                c.handle_command(now, Command::Open).unwrap();
                w.observe(&c, now)?;
                let end = now + OPEN_DEADLINE;
                while let Some(at) = c.poll_timeout().filter(|&at| at <= end) {
                    now = at;
                    c.handle_timeout(now);
                    w.observe(&c, now)?;
                }
                prop_assert!(c.outputs().all_open());
            }
        }
    }
}
