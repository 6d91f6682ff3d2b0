//! A simulated hybrid inverter (a Deye, GoodWe, Solis...) that talks to a BYD Battery-Box Premium HVS over CAN.
//!
//! The battery side's frames and their meaning come from Battery-Emulator `Software/src/inverter/BYD-CAN.{h,cpp}`
//! (11-bit ids, big-endian words); this simulator decodes them with its own table below, not the protocol
//! module's code, so an encoder bug cannot cancel itself out. It speaks first, as a real inverter must for a BYD
//! tower to talk at all: an identify request (`0x151` byte 0 = 0x01) and its brand (`0x151` byte 0 = 0x00 +
//! ASCII), then every `poll_interval` its measurement `0x091` (bus voltage 0.1 V, current 0.01 A, temperature
//! 0.1 °C), its SOC `0x0D1`, a time `0x111` and `0x191`. BE documents which frames an inverter sends but not how
//! often: the 1 s cadence is this simulator's assumption.
//!
//! It decodes `0x110` (charge/discharge voltage, max discharge/charge current 0.1 A), `0x150` (SOC, SOH 0.01 %),
//! `0x1D0` (voltage 0.1 V, current 0.1 A) and notes the identity frame `0x250`. It runs once it has heard all
//! three cyclic frames and faults when `0x110` (sent every 2 s) stops for `answer_timeout`. Its current is the
//! household demand at the told voltage, clamped to the told limits; like a well-behaved inverter it obeys a
//! 0 A limit (the Deye that does not is what the BYD CAN module's workaround option is for).
//!
//! The bus voltage it reports is whatever the world sets ([`BydInverter::set_bus`]): the pack's voltage while the
//! contactors are closed, 0 V otherwise.

use std::collections::VecDeque;

use dbe_core::can::CanFrame;
use dbe_core::time::{Duration, Instant, Periodic};
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciVolts, Watts};

/// The inverter's own view of the wire.
mod wire {
    pub const MEASUREMENT: u16 = 0x091;
    pub const SOC: u16 = 0x0D1;
    pub const TIME: u16 = 0x111;
    pub const IDENTITY: u16 = 0x151;
    pub const ALIVE: u16 = 0x191;
    pub const IDENTIFY_REQUEST: u8 = 0x01;

    pub const LIMITS: u16 = 0x110;
    pub const STATES: u16 = 0x150;
    pub const INFO: u16 = 0x1D0;
    pub const FIRMWARE: u16 = 0x250;

    /// Start byte of each big-endian word.
    pub const CHARGE_VOLTAGE_AT: usize = 0;
    pub const DISCHARGE_VOLTAGE_AT: usize = 2;
    pub const DISCHARGE_LIMIT_AT: usize = 4;
    pub const CHARGE_LIMIT_AT: usize = 6;
    pub const SOC_AT: usize = 0;
    pub const SOH_AT: usize = 2;
    pub const VOLTAGE_AT: usize = 0;
    pub const CURRENT_AT: usize = 2;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BydInverterParams {
    pub poll_interval: Duration,
    /// No 0x110 for this long → Faulted (it comes every 2 s).
    pub answer_timeout: Duration,
}

impl Default for BydInverterParams {
    fn default() -> Self {
        BydInverterParams { poll_interval: Duration::from_secs(1), answer_timeout: Duration::from_secs(10) }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BydInverterState {
    Waiting,
    Running,
    Faulted,
}

/// What the battery told it, the latest of each.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BydTold {
    pub charge_voltage: DeciVolts,
    pub discharge_voltage: DeciVolts,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub soc: BasisPoints,
    pub soh: BasisPoints,
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    /// When 0x110 last came.
    pub limits_at: Option<Instant>,
    pub identity_seen: bool,
}

pub struct BydInverter {
    params: BydInverterParams,
    poll: Periodic,
    outbox: VecDeque<CanFrame>,
    outbox_at: Instant,
    introduced: bool,
    got: u8,
    told: BydTold,
    state: BydInverterState,
    demand: Watts,
    silent: bool,
    bus: DeciVolts,
    bus_current: DeciAmps,
    started_at: Instant,
}

const GOT_LIMITS: u8 = 1;
const GOT_STATES: u8 = 2;
const GOT_INFO: u8 = 4;

fn word(d: &[u8; 8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

impl BydInverter {
    pub fn new(params: BydInverterParams, now: Instant) -> Self {
        let mut poll = Periodic::new(params.poll_interval);
        poll.start_at(now);
        BydInverter {
            params,
            poll,
            outbox: VecDeque::new(),
            outbox_at: now,
            introduced: false,
            got: 0,
            told: BydTold::default(),
            state: BydInverterState::Waiting,
            demand: Watts(0),
            silent: false,
            bus: DeciVolts(0),
            bus_current: DeciAmps(0),
            started_at: now,
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        if let (BydInverterState::Running, Some(t)) = (self.state, self.told.limits_at) {
            if now >= t + self.params.answer_timeout {
                self.state = BydInverterState::Faulted;
            }
        }
    }

    /// Takes one frame from the battery.
    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        self.check_timeout(now);
        let Some(id) = frame.standard_id() else { return };
        if frame.is_remote() || frame.len() != 8 {
            return;
        }
        let d = frame.data8();
        match id {
            wire::LIMITS => {
                self.got |= GOT_LIMITS;
                self.told.charge_voltage = DeciVolts(word(d, wire::CHARGE_VOLTAGE_AT));
                self.told.discharge_voltage = DeciVolts(word(d, wire::DISCHARGE_VOLTAGE_AT));
                self.told.discharge_limit = DeciAmps(word(d, wire::DISCHARGE_LIMIT_AT) as i32);
                self.told.charge_limit = DeciAmps(word(d, wire::CHARGE_LIMIT_AT) as i32);
                self.told.limits_at = Some(now);
            }
            wire::STATES => {
                self.got |= GOT_STATES;
                self.told.soc = BasisPoints(word(d, wire::SOC_AT));
                self.told.soh = BasisPoints(word(d, wire::SOH_AT));
            }
            wire::INFO => {
                self.got |= GOT_INFO;
                self.told.voltage = DeciVolts(word(d, wire::VOLTAGE_AT));
                self.told.current = DeciAmps(word(d, wire::CURRENT_AT) as i16 as i32);
            }
            wire::FIRMWARE => self.told.identity_seen = true,
            _ => return,
        }
        // Running once all three cyclic frames were heard; a faulted inverter recovers with the next 0x110.
        let complete = self.got == GOT_LIMITS | GOT_STATES | GOT_INFO;
        if complete && (self.state != BydInverterState::Faulted || id == wire::LIMITS) {
            self.state = BydInverterState::Running;
        }
    }

    /// Its own frames, one per call.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.check_timeout(now);
        if self.outbox.is_empty() && !self.silent && self.poll.poll(now) {
            let std = |id: u16, data: [u8; 8]| CanFrame::standard(id, &data).expect("constant ids are valid");
            if !self.introduced {
                self.introduced = true;
                self.outbox.push_back(std(wire::IDENTITY, [wire::IDENTIFY_REQUEST, 0, 0, 0, 0, 0, 0, 0]));
                self.outbox.push_back(std(wire::IDENTITY, [0x00, b'D', b'E', b'Y', b'E', 0, 0, 0]));
            }
            let v = self.bus.0.to_be_bytes();
            // The pack's current (+ = charging) in 0.01 A, as the inverter's measurement.
            let centi = (self.bus_current.0 * 10).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            let c = centi.to_be_bytes();
            let t = 250i16.to_be_bytes();
            self.outbox.push_back(std(wire::MEASUREMENT, [v[0], v[1], c[0], c[1], t[0], t[1], 0, 0]));
            let soc = (self.told.soc.0 / 10).to_be_bytes();
            self.outbox.push_back(std(wire::SOC, [soc[0], soc[1], 0, 0, 0, 0, 0, 0]));
            let secs = ((now - self.started_at).as_millis() / 1000) as u32;
            let s = secs.to_be_bytes();
            self.outbox.push_back(std(wire::TIME, [s[0], s[1], s[2], s[3], 0, 0, 0, 0]));
            self.outbox.push_back(std(wire::ALIVE, [0; 8]));
            self.outbox_at = now;
        }
        self.outbox.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = if self.silent { None } else { self.poll.next_at() };
        if !self.outbox.is_empty() {
            next = Some(self.outbox_at);
        }
        if let (BydInverterState::Running, Some(t)) = (self.state, self.told.limits_at) {
            let fault_at = t + self.params.answer_timeout;
            next = Some(next.map_or(fault_at, |n| n.min(fault_at)));
        }
        next
    }

    pub fn told(&self) -> Option<BydTold> {
        (self.got != 0).then_some(self.told)
    }

    pub fn state(&self) -> BydInverterState {
        self.state
    }

    pub fn set_demand(&mut self, now: Instant, demand: Watts) {
        self.check_timeout(now);
        self.demand = demand;
    }

    /// What the world measures at the inverter's battery terminals (0 V with the contactors open).
    pub fn set_bus(&mut self, voltage: DeciVolts, current: DeciAmps) {
        self.bus = voltage;
        self.bus_current = current;
    }

    /// The demand at the told voltage, clamped to the told limits; 0 unless Running.
    pub fn current(&self) -> DeciAmps {
        if self.state != BydInverterState::Running {
            return DeciAmps(0);
        }
        let want = current_for_power(self.demand, self.told.voltage).0;
        DeciAmps(want.clamp(-self.told.discharge_limit.0.max(0), self.told.charge_limit.0.max(0)))
    }

    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
        if silent {
            self.outbox.clear();
        }
    }
}
