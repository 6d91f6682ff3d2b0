//! A simulated SolaX X1/X3 hybrid that polls a Triple Power battery on CAN and decides when it may connect.
//!
//! The wire facts come from Battery-Emulator `Software/src/inverter/SOLAX-CAN.{h,cpp}` and its wiki page
//! (`docs/10-inverters/Solax.md`); the decoding below is this simulator's own. It polls `0x1871` every second
//! (the wiki: "the 1871 frame the inverter sends every 1000ms"). Like the real one it waits until the battery has
//! answered with a voltage (`0x1872` max voltage and `0x1873` voltage non-zero: "if you send no voltage on frame
//! 1872 then it just stays in Waiting"), then asks the battery to close (`02 00 01 00 01 00 00 00`) on every poll,
//! and runs once `0x1875` byte 4 reports the contactor closed. [`SolaxInverter::request_open`] makes it ask the
//! battery to open (`02 00 01 00 00 00 00 00`) instead. It faults when the answers stop for `answer_timeout`, and
//! starts over when they return. It does not model the battery-type voltage check (BattVoltFault).
//!
//! Decoded (little-endian): `0x1872` max/min voltage 0.1 V, max charge/discharge current 0.1 A; `0x1873`
//! voltage 0.1 V, current 0.1 A signed, SOC 1 %; `0x1874` cell voltages 0.1 V; `0x1875` contactor flag;
//! `0x1877` battery type.

use std::collections::VecDeque;

use dbe_core::can::CanFrame;
use dbe_core::time::{Duration, Instant, Periodic};
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciVolts, Watts};

mod wire {
    pub const POLL: u32 = 0x1871;
    pub const PLAIN_POLL: [u8; 8] = [0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
    pub const CLOSE: [u8; 8] = [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
    pub const OPEN: [u8; 8] = [0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];

    pub const LIMITS: u32 = 0x1872;
    pub const PACK: u32 = 0x1873;
    pub const CELLS: u32 = 0x1874;
    pub const STATUS: u32 = 0x1875;
    pub const BATTERY_TYPE: u32 = 0x1877;

    pub const CONTACTOR_AT: usize = 4;
    pub const TYPE_AT: usize = 4;
    pub const SOC_AT: usize = 4;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SolaxInverterParams {
    pub poll_interval: Duration,
    /// No answer for this long → Faulted.
    pub answer_timeout: Duration,
}

impl Default for SolaxInverterParams {
    fn default() -> Self {
        SolaxInverterParams { poll_interval: Duration::from_secs(1), answer_timeout: Duration::from_secs(5) }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SolaxInverterState {
    /// No usable answer yet (or the battery's voltage is missing).
    Waiting,
    /// Asking the battery to close; waiting for 0x1875 to say closed.
    Checking,
    Running,
    Faulted,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SolaxTold {
    pub max_voltage: DeciVolts,
    pub min_voltage: DeciVolts,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    pub soc: BasisPoints,
    /// 0x1874 highest / lowest cell, 0.1 V.
    pub cell_max_dv: u16,
    pub cell_min_dv: u16,
    pub contactor_closed: bool,
    pub battery_type: u8,
    pub at: Option<Instant>,
}

pub struct SolaxInverter {
    params: SolaxInverterParams,
    poll: Periodic,
    outbox: VecDeque<CanFrame>,
    outbox_at: Instant,
    told: SolaxTold,
    state: SolaxInverterState,
    demand: Watts,
    silent: bool,
    want_open: bool,
}

fn word(d: &[u8; 8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

impl SolaxInverter {
    pub fn new(params: SolaxInverterParams, now: Instant) -> Self {
        let mut poll = Periodic::new(params.poll_interval);
        poll.start_at(now);
        SolaxInverter {
            params,
            poll,
            outbox: VecDeque::new(),
            outbox_at: now,
            told: SolaxTold::default(),
            state: SolaxInverterState::Waiting,
            demand: Watts(0),
            silent: false,
            want_open: false,
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        if self.state != SolaxInverterState::Faulted
            && self.told.at.is_some_and(|t| now >= t + self.params.answer_timeout)
        {
            self.state = SolaxInverterState::Faulted;
        }
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        self.check_timeout(now);
        let Some(id) = frame.extended_id() else { return };
        if frame.is_remote() || frame.len() != 8 {
            return;
        }
        let d = frame.data8();
        match id {
            wire::LIMITS => {
                self.told.max_voltage = DeciVolts(word(d, 0));
                self.told.min_voltage = DeciVolts(word(d, 2));
                self.told.charge_limit = DeciAmps(word(d, 4) as i32);
                self.told.discharge_limit = DeciAmps(word(d, 6) as i32);
            }
            wire::PACK => {
                self.told.voltage = DeciVolts(word(d, 0));
                self.told.current = DeciAmps(word(d, 2) as i16 as i32);
                self.told.soc = BasisPoints(d[wire::SOC_AT] as u16 * 100);
            }
            wire::CELLS => {
                self.told.cell_max_dv = word(d, 4);
                self.told.cell_min_dv = word(d, 6);
            }
            wire::STATUS => self.told.contactor_closed = d[wire::CONTACTOR_AT] == 1,
            wire::BATTERY_TYPE => self.told.battery_type = d[wire::TYPE_AT],
            _ => return,
        }
        self.told.at = Some(now);
        let has_voltage = self.told.max_voltage.0 > 0 && self.told.voltage.0 > 0;
        self.state = match (self.state, has_voltage, self.told.contactor_closed) {
            (_, false, _) => SolaxInverterState::Waiting,
            (SolaxInverterState::Faulted | SolaxInverterState::Waiting, true, _) => SolaxInverterState::Checking,
            (_, true, true) if !self.want_open => SolaxInverterState::Running,
            (_, true, _) => SolaxInverterState::Checking,
        };
    }

    /// Its poll, once per `poll_interval`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.check_timeout(now);
        if self.outbox.is_empty() && !self.silent && self.poll.poll(now) {
            let payload = match self.state {
                _ if self.want_open => wire::OPEN,
                SolaxInverterState::Checking | SolaxInverterState::Running => wire::CLOSE,
                SolaxInverterState::Waiting | SolaxInverterState::Faulted => wire::PLAIN_POLL,
            };
            self.outbox.push_back(CanFrame::extended(wire::POLL, &payload).expect("valid id"));
            self.outbox_at = now;
        }
        self.outbox.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = if self.silent { None } else { self.poll.next_at() };
        if !self.outbox.is_empty() {
            next = Some(self.outbox_at);
        }
        if let (true, Some(t)) = (self.state != SolaxInverterState::Faulted, self.told.at) {
            let fault_at = t + self.params.answer_timeout;
            next = Some(next.map_or(fault_at, |n| n.min(fault_at)));
        }
        next
    }

    pub fn told(&self) -> Option<SolaxTold> {
        self.told.at.map(|_| self.told)
    }

    pub fn state(&self) -> SolaxInverterState {
        self.state
    }

    /// Ask the battery to open (true) or let it close again (false).
    pub fn request_open(&mut self, open: bool) {
        self.want_open = open;
    }

    pub fn set_demand(&mut self, now: Instant, demand: Watts) {
        self.check_timeout(now);
        self.demand = demand;
    }

    /// The demand at the told voltage, clamped to the told limits; 0 unless Running with the contactor closed.
    pub fn current(&self) -> DeciAmps {
        if self.state != SolaxInverterState::Running || !self.told.contactor_closed {
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
