//! The bridge: one battery driver, the supervisor and one inverter protocol, wired together.
//!
//! The outside world (the daemon's event loop, a simulated-time test) feeds it frames with the port they came
//! from and drains the frames it wants sent, per port. Between the two ends it keeps the one battery model, runs
//! the supervisor after every input, and turns the supervisor's contactor decision into something that opens the
//! pack, by the pack's [`ContactorMode`]:
//! - `can`: the driver's request to the pack ([`Battery::set_contactors`]);
//! - `relays`: the precharge sequencer ([`crate::contactor::Contactors`]), whose outputs the shell drives
//!   ([`Bridge::relay_outputs`]) and reads back ([`Bridge::handle_relay_feedback`]); its state is the model's
//!   contactor state, so the supervisor allows current only once the sequence has closed and gives 0 A when a
//!   relay does not follow;
//! - `none`: nothing can open the pack; the decision is still made and shown, and `CONTACTORS_NOT_CONTROLLED`
//!   stays active so nobody mistakes a decision for an actuator.

use crate::battery::{AnyBattery, Battery, BatteryConfig, BatteryKind, ContactorRequest};
use crate::can::{CanFrame, DecodeError, FrameUse};
use crate::command::{Command, CommandError};
use crate::contactor::{self, ContactorEvent, ContactorFailure, ContactorMode, ContactorSetup, ContactorState};
use crate::energy::EnergyCounters;
use crate::events::{EventKind, EventLog, Occurrence};
use crate::inverter::{AnyInverter, BufferTooSmall, InverterConfig, InverterView};
use crate::model::{BatteryModel, Contactors};
use crate::supervisor::{Latches, Output, Supervisor, SupervisorConfig};
use crate::time::{earliest, Instant};

/// Which side of the bridge a frame belongs to. When both sides share one bus, the caller hands every received
/// frame to both ports and sends both ports' frames on the one bus.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    Battery,
    Inverter,
}

impl Port {
    pub fn name(self) -> &'static str {
        match self {
            Port::Battery => "battery",
            Port::Inverter => "inverter",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The battery driver with its options.
    pub battery: BatteryConfig,
    pub inverter: InverterConfig,
    pub supervisor: SupervisorConfig,
    /// How the pack's contactors are opened and closed.
    pub contactors: ContactorSetup,
}

/// Frame counters per port (for a serial inverter: bytes received and replies sent).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx: u64,
    pub rx_used: u64,
    pub rx_invalid: u64,
    pub tx: u64,
}

#[derive(Clone, Debug)]
pub struct Bridge {
    battery: AnyBattery,
    inverter: AnyInverter,
    model: BatteryModel,
    supervisor: Supervisor,
    contactor_request: Option<ContactorRequest>,
    seen_contactors: Contactors,
    battery_stats: PortStats,
    inverter_stats: PortStats,
    last_error: Option<DecodeError>,
    contactor_mode: ContactorMode,
    /// The precharge sequence (used in `relays` mode only).
    sequencer: contactor::Contactors,
    /// Whether the inverter side allows the contactors closed, from an input wired to the inverter (SMA's enable
    /// line); `None` when there is no such input.
    enable_input: Option<bool>,
    /// Lifetime charged/discharged energy, integrated on every update (reported by BYD Modbus 316..=321).
    energy: EnergyCounters,
    /// Input arrived since the supervisor last ran. Battery frames wait for the next output at least
    /// [`SUPERVISOR_PERIOD`] after the last run (a LEAF sends two frames every 10 ms; one evaluation per frame
    /// doubled the frame path's cost); inverter input, commands and deadlines run it at once, so an answer never
    /// carries values older than the request.
    dirty: bool,
    urgent: bool,
    updated_at: Option<Instant>,
    /// A BMS power cycle under way (`BmsReset` on a pack that has no reset over CAN, with a BMS power output).
    bms_cycle: Option<BmsCycle>,
}

/// Battery-Emulator's BMS power reset, in the bridge: pause (0 A), wait for the current to stop or
/// [`BMS_CYCLE_PAUSE_CEILING`], then the sequencer cuts the BMS power for its off time and gives it its warm-up,
/// then resume (unless the user had paused already).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum BmsCycle {
    Pausing { since: Instant, was_paused: bool },
    Cycling { was_paused: bool },
}

/// How long a BMS power cycle waits for the current to stop before it cuts the power anyway (Battery-Emulator's
/// wait for the inverter to follow a pause, as for opening under load).
pub const BMS_CYCLE_PAUSE_CEILING: crate::time::Duration = crate::time::Duration::from_secs(7);

/// How often battery frames alone re-evaluate the supervisor: 50 times a second, two periods of the fastest pack
/// frame (a LEAF's 0x1DB/0x1DC), a fifth of the tightest bound it enforces (contactors open within 100 ms of a
/// decision; a reading's age is counted in seconds). Battery-Emulator checks its limits once a second. At 10 ms the
/// fail-closed supervisor still cost the frame path +40 % over the old one; at 20 ms it is within the +20 % the
/// fail-closed issue allows (README, "Performance").
pub const SUPERVISOR_PERIOD: crate::time::Duration = crate::time::Duration::from_millis(20);

/// The longest the supervisor goes without being re-evaluated, input or not: the contactor-opening bound (100 ms).
pub const SUPERVISOR_HEARTBEAT: crate::time::Duration = crate::time::Duration::from_millis(100);

impl Bridge {
    pub fn new(cfg: BridgeConfig) -> Self {
        Self::with_latches(cfg, Instant::ZERO, Latches::default())
    }

    /// The one way the shell builds a bridge, at start-up, on `Restart` and on a settings change: it carries the
    /// latches over (from the state file or the bridge it replaces) and, without `autostart`, starts stopped.
    pub fn start(cfg: BridgeConfig, now: Instant, autostart: bool, carried: Latches) -> Self {
        Self::with_latches(cfg, now, Latches { stopped: carried.stopped || !autostart, ..carried })
    }

    /// A bridge that carries on from the latched safety state of the one before it (the state file at start-up,
    /// the old bridge on a restart or a settings change), so no restart clears a latch: only `Start` does.
    pub fn with_latches(cfg: BridgeConfig, now: Instant, latches: Latches) -> Self {
        let battery = AnyBattery::new(cfg.battery);
        let inverter = AnyInverter::new(cfg.inverter);
        let mut sup_cfg = cfg.supervisor;
        if sup_cfg.inverter_timeout.is_none() {
            sup_cfg.inverter_timeout = cfg.inverter.kind().info().link_timeout;
        }
        Bridge {
            model: BatteryModel::new(battery.design()).with_extras(battery.extras()),
            battery,
            inverter,
            supervisor: Supervisor::with_latches(sup_cfg, now, latches),
            contactor_request: None,
            seen_contactors: Contactors::Unknown,
            battery_stats: PortStats::default(),
            inverter_stats: PortStats::default(),
            last_error: None,
            energy: EnergyCounters::new(),
            contactor_mode: cfg.contactors.mode,
            sequencer: contactor::Contactors::new(cfg.contactors.sequence),
            enable_input: None,
            dirty: true,
            urgent: true,
            updated_at: None,
            bms_cycle: None,
        }
        .noting_uncontrolled(now)
    }

    fn noting_uncontrolled(mut self, now: Instant) -> Self {
        let none = self.contactor_mode == ContactorMode::None;
        self.supervisor.events_mut().set_condition(now, EventKind::ContactorsNotControlled, none, 0);
        self
    }

    /// Takes one received frame. Errors are also counted and raised as events; the model is left unchanged.
    /// The supervisor's decision is brought up to date by the next `poll_transmit` or `handle_timeout` (callers
    /// drain `poll_transmit` after every input).
    pub fn handle_frame(&mut self, now: Instant, port: Port, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        let result = match port {
            Port::Battery => {
                self.battery_stats.rx += 1;
                let r = self.battery.handle_frame(now, frame, &mut self.model);
                match r {
                    Ok(FrameUse::Used) => {
                        self.battery_stats.rx_used += 1;
                        self.model.last_valid_frame_at = Some(now);
                        // Only a valid frame of the rejected id ends the episode: a pack whose unprotected frames
                        // arrive between its rejected checksummed ones made the event flap and flood the queue.
                        let events = self.supervisor.events_mut();
                        if events.record(EventKind::BatteryFrameInvalid).data == frame.raw_id() as i32 {
                            events.clear(EventKind::BatteryFrameInvalid);
                        }
                    }
                    Ok(FrameUse::Ignored) => {}
                    Err(e) => {
                        self.battery_stats.rx_invalid += 1;
                        self.last_error = Some(e);
                        self.supervisor.events_mut().raise(now, EventKind::BatteryFrameInvalid, frame.raw_id() as i32);
                    }
                }
                r
            }
            Port::Inverter => {
                let Some(inverter) = self.inverter.as_can() else {
                    return Ok(FrameUse::Ignored);
                };
                self.inverter_stats.rx += 1;
                let r = inverter.handle_frame(now, frame);
                self.urgent = true;
                match r {
                    Ok(FrameUse::Used) => {
                        self.inverter_stats.rx_used += 1;
                        // A protocol that carries the inverter's measured bus voltage (BYD CAN 0x091) feeds the
                        // precharge check with it, once per frame that brought it.
                        if let Some((at, v)) = inverter.bus_voltage().filter(|&(at, _)| at == now) {
                            self.sequencer.handle_bus_voltage(at, v);
                        }
                    }
                    Ok(FrameUse::Ignored) => {}
                    Err(e) => {
                        self.inverter_stats.rx_invalid += 1;
                        self.last_error = Some(e);
                    }
                }
                r
            }
        };
        self.dirty = true;
        result
    }

    /// Lets time pass: stale data, expiring limits and link timeouts take effect. A deadline that is only a
    /// driver's (a keep-alive due) does not re-run the supervisor: that was half of all evaluations, and nothing
    /// it decides depends on a driver's send schedule.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.needs_update(now) {
            self.update(now);
        }
    }

    /// Whether anything the supervisor or the sequencer decides may have changed by `now`: input waiting, one of
    /// their own deadlines reached, or [`SUPERVISOR_HEARTBEAT`] gone by (a backstop, should a deadline ever be
    /// missing from `Supervisor::poll_timeout`).
    fn needs_update(&self, now: Instant) -> bool {
        let reached = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        self.due(now)
            || self.updated_at.is_none_or(|t| now >= t + SUPERVISOR_HEARTBEAT)
            || reached(self.supervisor.poll_timeout())
            || (self.contactor_mode == ContactorMode::Relays && reached(self.sequencer.poll_timeout()))
    }

    /// Applies a command from any source. Refused commands change nothing.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        // A command is judged against the latest data (`Start` needs to see a latched condition gone).
        if self.dirty {
            self.update(now);
        }
        if cmd == Command::BmsReset {
            if let Err(e) = self.battery.bms_reset(now) {
                // No reset over CAN: power-cycle the BMS where its power is one of DBE's outputs.
                let power = self.contactor_mode == ContactorMode::Relays && self.sequencer.config().bms_power.is_some();
                if !power || self.bms_cycle.is_some() {
                    self.supervisor.events_mut().raise(now, EventKind::CommandRejected, 0);
                    return Err(if power {
                        CommandError::ConditionPresent { what: "a BMS power cycle is under way" }
                    } else {
                        e.into()
                    });
                }
                let was_paused = self.supervisor.output().paused;
                let _ = self.supervisor.handle_command(now, Command::Pause);
                self.bms_cycle = Some(BmsCycle::Pausing { since: now, was_paused });
            }
        }
        let r = self.supervisor.handle_command(now, cmd);
        if r.is_ok() && cmd == Command::Start {
            // `Start` also clears a latched contactor failure (relay not following, precharge failed).
            let _ = self.sequencer.handle_command(now, contactor::Command::Reset);
            // The sequencer ignored `Close` while latched: the next update hands it the decision again.
            self.contactor_request = None;
        }
        self.update(now);
        r
    }

    /// Records a condition the shell observed (a port down, a CAN controller error), so it is counted and
    /// published with the core's own events.
    pub fn note_event(&mut self, now: Instant, kind: EventKind, active: bool, data: i32) {
        self.supervisor.events_mut().set_condition(now, kind, active, data);
    }

    /// The next frame to send and the port to send it on. Drain until `None` after every input.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(Port, CanFrame)> {
        if self.due(now) {
            self.update(now);
        }
        if let Some(f) = self.battery.poll_transmit(now) {
            self.battery_stats.tx += 1;
            return Some((Port::Battery, f));
        }
        let view = InverterView::new(&self.model, self.supervisor.output()).with_energy(&self.energy);
        let f = self.inverter.as_can()?.poll_transmit(now, &view)?;
        self.inverter_stats.tx += 1;
        Some((Port::Inverter, f))
    }

    /// Takes bytes from the inverter's serial port (byte-stream protocols; ignored for CAN protocols).
    pub fn handle_inverter_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if let Some(inverter) = self.inverter.as_serial() {
            self.inverter_stats.rx += bytes.len() as u64;
            inverter.handle_bytes(now, bytes);
        }
        self.update(now);
    }

    /// The serial line has been quiet for an inter-frame gap.
    pub fn handle_inverter_silence(&mut self, now: Instant) {
        self.inverter.handle_silence(now);
    }

    /// The next reply for the inverter's serial port, written into `buf` (0: nothing due).
    pub fn poll_inverter_bytes(&mut self, now: Instant, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        if self.due(now) {
            self.update(now);
        }
        let view = InverterView::new(&self.model, self.supervisor.output()).with_energy(&self.energy);
        let Some(inverter) = self.inverter.as_serial() else {
            return Ok(0);
        };
        let n = inverter.poll_transmit(now, &view, buf)?;
        if n > 0 {
            self.inverter_stats.tx += 1;
        }
        while let Some((kind, data)) = self.inverter.poll_event() {
            self.supervisor.events_mut().raise(now, kind, data);
        }
        Ok(n)
    }

    /// What each relay output must be driven to now (`relays` mode; `None` otherwise). Drive them after every
    /// input, and again at `poll_timeout`.
    #[must_use]
    pub fn relay_outputs(&self) -> Option<contactor::OutputStates> {
        (self.contactor_mode == ContactorMode::Relays).then(|| self.sequencer.outputs())
    }

    /// An output's read-back state from the hardware (`true` = conducting), where it can be read back.
    pub fn handle_relay_feedback(&mut self, now: Instant, output: contactor::Output, conducting: bool) {
        // A disagreement fails by the sequencer's own deadline (in `poll_timeout`); an agreement changes nothing
        // the supervisor sees, so no update is forced here (the world feeds it back after every exchange).
        self.sequencer.handle_feedback(now, output, conducting);
    }

    /// The DC bus voltage the inverter side reports, for the precharge check.
    pub fn handle_bus_voltage(&mut self, now: Instant, voltage: crate::units::DeciVolts) {
        self.sequencer.handle_bus_voltage(now, voltage);
        self.dirty = true;
    }

    /// The inverter's enable input (closed = the inverter allows the contactors closed); `None`: not fitted.
    pub fn set_enable_input(&mut self, allowed: Option<bool>) {
        self.enable_input = allowed;
        self.dirty = true;
    }

    pub fn contactor_mode(&self) -> ContactorMode {
        self.contactor_mode
    }

    /// The sequencer's state in `relays` mode.
    pub fn relay_state(&self) -> Option<ContactorState> {
        (self.contactor_mode == ContactorMode::Relays).then(|| self.sequencer.state())
    }

    /// When the bridge next needs `handle_timeout` / `poll_transmit`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut drivers = earliest(self.battery.poll_timeout(), self.inverter.poll_timeout());
        if self.contactor_mode == ContactorMode::Relays {
            drivers = earliest(drivers, self.sequencer.poll_timeout());
        }
        if let Some(BmsCycle::Pausing { since, .. }) = self.bms_cycle {
            drivers = earliest(drivers, Some(since + BMS_CYCLE_PAUSE_CEILING));
        }
        let deferred = self.updated_at.map(|t| t + if self.dirty { SUPERVISOR_PERIOD } else { SUPERVISOR_HEARTBEAT });
        earliest(earliest(drivers, deferred), self.supervisor.poll_timeout())
    }

    fn due(&self, now: Instant) -> bool {
        self.dirty && (self.urgent || self.updated_at.is_none_or(|t| now >= t + SUPERVISOR_PERIOD))
    }

    /// The next event occurrence for telemetry, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Occurrence> {
        self.supervisor.events_mut().poll_event()
    }

    /// Cuts the BMS power once the pause has brought the current down (or the ceiling passed), and resumes once
    /// the sequencer has powered the BMS again and given it its warm-up. Runs before the supervisor is evaluated,
    /// so the evaluation that follows already sees the pause or the resume.
    fn step_bms_cycle(&mut self, now: Instant) {
        if let Some(BmsCycle::Cycling { was_paused }) = self.bms_cycle {
            if self.sequencer.bms_power_phase() == contactor::BmsPowerPhase::On {
                self.bms_cycle = None;
                if !was_paused {
                    let _ = self.supervisor.handle_command(now, Command::Resume);
                }
            }
            return;
        }
        let Some(BmsCycle::Pausing { since, was_paused }) = self.bms_cycle else { return };
        let threshold = self.supervisor.config().open_current;
        let low = self.model.current.is_some_and(|i| i.value.0.abs() <= threshold.0);
        if low || now >= since + BMS_CYCLE_PAUSE_CEILING {
            match self.sequencer.handle_command(now, contactor::Command::BmsPowerCycle) {
                Ok(()) => self.bms_cycle = Some(BmsCycle::Cycling { was_paused }),
                Err(_) => {
                    // Busy or not fitted (checked at the command): give up and leave the pause to the user.
                    self.bms_cycle = None;
                    self.supervisor.events_mut().raise(now, EventKind::CommandRejected, 0);
                }
            }
        }
    }

    /// Where a BMS power cycle stands: `None` when none is under way.
    pub fn bms_cycle_phase(&self) -> Option<&'static str> {
        match self.bms_cycle? {
            BmsCycle::Pausing { .. } => Some("pausing"),
            BmsCycle::Cycling { .. } => Some(self.sequencer.bms_power_phase().name()),
        }
    }

    fn update(&mut self, now: Instant) {
        self.dirty = false;
        self.urgent = false;
        self.updated_at = Some(now);
        self.energy.update(now, &self.model);
        self.model.required = self.battery.requirements();
        let relays = self.contactor_mode == ContactorMode::Relays;
        if relays {
            self.sequencer.handle_timeout(now);
            if let Some(v) = self.model.pack_voltage.filter(|v| v.at == now) {
                self.sequencer.handle_pack_voltage(now, v.value);
            }
            self.model.contactors = model_contactors(self.sequencer.state());
        }
        self.step_bms_cycle(now);
        // The protocol's own notion (Pylon CAN 0x8210, SolaX's handshake) and a wired enable input must both allow
        // it; a protocol's permission may lapse with time alone (SolaX: 2 s without a poll).
        self.inverter.handle_timeout(now);
        let permission = match (self.inverter.contactor_permission(), self.enable_input) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
        };
        self.supervisor.set_inverter_permission(permission);
        let out = *self.supervisor.update(now, &self.model, self.inverter.last_heard());
        if let Some(req) = out.contactors {
            let changed = self.contactor_request != Some(req);
            self.contactor_request = Some(req);
            if changed {
                // In every mode the driver hears the decision: a pack with CAN contactors acts on it, a pack with
                // hardwired ones (the LEAF) only starts talking to the car side, so a sleeping pack is woken.
                self.battery.set_contactors(now, req);
            }
            match self.contactor_mode {
                // The sequencer acts on a change of decision; repeating it each update was a tenth of the frame
                // path (its own deadlines run through `handle_timeout` above).
                ContactorMode::Relays if changed => {
                    let cmd = match req {
                        ContactorRequest::Closed => contactor::Command::Close,
                        ContactorRequest::Open => contactor::Command::Open,
                    };
                    // Cannot fail: only BMS power cycles are refused.
                    let _ = self.sequencer.handle_command(now, cmd);
                    self.model.contactors = model_contactors(self.sequencer.state());
                }
                ContactorMode::Relays | ContactorMode::Can | ContactorMode::None => {}
            }
        }
        if relays {
            while let Some(e) = self.sequencer.poll_event() {
                let events = self.supervisor.events_mut();
                match e {
                    ContactorEvent::Failed(f @ ContactorFailure::PrechargeFailed { .. }) => {
                        events.raise(now, EventKind::ContactorPrechargeFailed, failure_data(f));
                    }
                    ContactorEvent::Failed(f @ ContactorFailure::RelayNotFollowing { .. }) => {
                        events.raise(now, EventKind::ContactorNotFollowing, failure_data(f));
                    }
                    ContactorEvent::Failed(ContactorFailure::Fault)
                    | ContactorEvent::State(_)
                    | ContactorEvent::BmsPowerOff
                    | ContactorEvent::BmsPowerCycled => {}
                }
            }
            if self.sequencer.failure().is_none() {
                let events = self.supervisor.events_mut();
                events.clear(EventKind::ContactorPrechargeFailed);
                events.clear(EventKind::ContactorNotFollowing);
            }
        }
        if self.model.contactors != self.seen_contactors {
            match self.model.contactors {
                Contactors::Closed => {
                    self.supervisor.events_mut().raise(now, EventKind::ContactorsClosed, 0);
                }
                Contactors::Open if self.seen_contactors == Contactors::Closed => {
                    self.supervisor.events_mut().raise(now, EventKind::ContactorsOpened, 0);
                }
                _ => {}
            }
            self.seen_contactors = self.model.contactors;
        }
    }

    pub fn model(&self) -> &BatteryModel {
        &self.model
    }

    pub fn output(&self) -> &Output {
        self.supervisor.output()
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn events(&self) -> &EventLog {
        self.supervisor.events()
    }

    pub fn view(&self) -> InverterView<'_> {
        InverterView::new(&self.model, self.supervisor.output()).with_energy(&self.energy)
    }

    /// The lifetime energy counters (for the state file and telemetry).
    pub fn energy_counters(&self) -> &EnergyCounters {
        &self.energy
    }

    /// Continues from persisted counters (e.g. [`EnergyCounters::restored`] from the state file at start).
    pub fn restore_energy_counters(&mut self, counters: EnergyCounters) {
        self.energy = counters;
    }

    pub fn battery_kind(&self) -> BatteryKind {
        self.battery.kind()
    }

    pub fn inverter_config_kind(&self) -> crate::inverter::InverterKind {
        self.inverter.kind()
    }

    /// The last time the inverter was heard.
    pub fn inverter_last_heard(&self) -> Option<Instant> {
        self.inverter.last_heard()
    }

    /// The safety state to persist (see [`Latches`]); it changes only through commands and critical conditions.
    pub fn latches(&self) -> Latches {
        self.supervisor.latches()
    }

    pub fn contactor_request(&self) -> Option<ContactorRequest> {
        self.contactor_request
    }

    pub fn stats(&self, port: Port) -> PortStats {
        match port {
            Port::Battery => self.battery_stats,
            Port::Inverter => self.inverter_stats,
        }
    }

    /// The last decode error on either port, for diagnostics.
    pub fn last_error(&self) -> Option<DecodeError> {
        self.last_error
    }

    /// The driver itself, for driver-specific diagnostics.
    pub fn battery(&self) -> &AnyBattery {
        &self.battery
    }

    /// The inverter protocol itself, for protocol-specific diagnostics (BYD CAN's measured voltage and current).
    pub fn inverter(&self) -> &AnyInverter {
        &self.inverter
    }
}

/// The sequencer's state as the model's contactor state (what the supervisor's rules read).
fn model_contactors(s: ContactorState) -> Contactors {
    match s {
        ContactorState::Open => Contactors::Open,
        ContactorState::Precharging => Contactors::Precharging,
        ContactorState::Closed => Contactors::Closed,
        ContactorState::OpenedByFault => Contactors::Fault,
    }
}

/// An event's data for a sequencer failure: the output's number (from 1) or the bus voltage.
fn failure_data(f: ContactorFailure) -> i32 {
    match f {
        ContactorFailure::RelayNotFollowing { output, .. } => output.index() as i32 + 1,
        ContactorFailure::PrechargeFailed { bus, .. } => bus.map_or(-1, |v| v.0 as i32),
        ContactorFailure::Fault => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::crc8_0x85;

    #[test]
    fn frame_invalid_is_one_episode_until_the_rejected_id_is_valid_again() {
        // Found by fault injection: every valid 0x5BC (no checksum) cleared the event raised by a bad 0x1DB, so a
        // pack with bad checksums raised it 10 times a second and pushed older events out of the queue.
        let mut b = Bridge::new(BridgeConfig {
            battery: BatteryKind::NissanLeaf.into(),
            inverter: InverterConfig::PylonCan(Default::default()),
            supervisor: SupervisorConfig::default(),
            contactors: Default::default(),
        });
        let mut d = [0xFD, 0x80, 0xB9, 0x28, 0, 0, 0, 0];
        d[7] = crc8_0x85(&d[..7]);
        let good = CanFrame::std8(0x1DB, d);
        d[7] ^= 0x5A;
        let bad = CanFrame::std8(0x1DB, d);
        let gids = CanFrame::std8(0x5BC, [0x4B, 0, 0, 60, 190, 0, 0, 0]);
        for ms in 0..10 {
            let now = Instant::from_millis(ms * 10);
            assert!(b.handle_frame(now, Port::Battery, &bad).is_err());
            assert_eq!(b.handle_frame(now, Port::Battery, &gids), Ok(FrameUse::Used));
        }
        assert!(b.events().is_active(EventKind::BatteryFrameInvalid));
        assert_eq!(b.events().record(EventKind::BatteryFrameInvalid).count, 1);
        assert_eq!(b.handle_frame(Instant::from_millis(100), Port::Battery, &good), Ok(FrameUse::Used));
        assert!(!b.events().is_active(EventKind::BatteryFrameInvalid));
    }

    #[test]
    fn battery_frames_reevaluate_at_most_once_a_period_and_a_drivers_deadline_alone_never() {
        let mut b = Bridge::new(BridgeConfig {
            battery: BatteryKind::NissanLeaf.into(),
            inverter: InverterConfig::PylonCan(Default::default()),
            supervisor: SupervisorConfig::default(),
            contactors: Default::default(),
        });
        let ms = Instant::from_millis;
        let gids = CanFrame::std8(0x5BC, [0x4B, 0, 0, 60, 190, 0, 0, 0]);
        let drain = |b: &mut Bridge, now| while b.poll_transmit(now).is_some() {};
        b.handle_frame(ms(0), Port::Battery, &gids).unwrap();
        drain(&mut b, ms(0));
        assert_eq!(b.updated_at, Some(ms(0)));
        b.handle_frame(ms(5), Port::Battery, &gids).unwrap();
        drain(&mut b, ms(5));
        assert_eq!(b.updated_at, Some(ms(0)), "within the period a frame waits");
        assert!(b.poll_timeout().is_some_and(|t| t <= ms(0) + SUPERVISOR_PERIOD));
        b.handle_timeout(ms(10));
        drain(&mut b, ms(10));
        assert_eq!(b.updated_at, Some(ms(0)), "a keep-alive due is not a reason to evaluate");
        drain(&mut b, ms(0) + SUPERVISOR_PERIOD);
        assert_eq!(b.updated_at, Some(ms(0) + SUPERVISOR_PERIOD), "the waiting frame is evaluated at the period");
        // No input at all: the heartbeat still comes.
        let beat = ms(0) + SUPERVISOR_PERIOD + SUPERVISOR_HEARTBEAT;
        assert!(b.poll_timeout().is_some_and(|t| t <= beat));
        b.handle_timeout(beat);
        assert_eq!(b.updated_at, Some(beat));
        // A command is judged and applied at once.
        let _ = b.handle_command(beat + crate::time::Duration::from_millis(1), Command::Pause);
        assert_eq!(b.updated_at, Some(beat + crate::time::Duration::from_millis(1)));
        assert!(b.output().paused);
    }
}
