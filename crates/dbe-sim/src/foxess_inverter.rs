//! A simulated FoxESS H1/H3/KH hybrid that polls an HV2600/ECS4100 battery stack on CAN.
//!
//! The wire facts come from FozzieUK/FoxESS-Canbus-Protocol (`README.md`, `FoxESS_v1_15.dbc`: captures of a real
//! inverter and stack) and Battery-Emulator `Software/src/inverter/FOXESS-CAN.{h,cpp}`; the decoding below is this
//! simulator's own. Its cadence is FozzieUK's: the BMS-set poll `01 00 01 00 00 00 00 00` every second, the
//! acknowledgement `02 00 01 00 01 ..` half a second after each; once the battery has answered, the module poll
//! (`.. 01 ..`) and the serial request (`05 ..`) every 6 s, the cell pair (`.. 02 ..`, then `.. 04 ..` 100 ms
//! later) every 3 s and its clock (`03 YY MM DD hh mm ss`) every 6 s.
//!
//! It runs once the BMS set carried a voltage (`0x1872` max voltage and `0x1873` voltage non-zero) with the
//! contactor closed (`0x1875` b4) and no error (`0x1877` b0, `0x1879` b1 = 0x5A); an error sends it back to
//! Waiting. It obeys the charge-inhibit bit (`0x1876` b0 bit 0) as a KH does: no charging while it is set,
//! whatever `0x1872` says. Like the real one (Battery-Emulator: "Foxess only supports LFP batteries") it checks
//! the `0x1874` cell voltages against an LFP window, here 2.0..3.65 V (this simulator's assumption: no source
//! gives the inverter's exact bounds), and faults outside it. It faults when answers stop for `answer_timeout` and
//! starts over when they return.
//!
//! Decoded (little-endian): `0x1872` max/min voltage 0.1 V, max charge/discharge current 0.1 A; `0x1873`
//! voltage 0.1 V, current 0.1 A signed, SOC 1 %; `0x1874` cell voltages mV; `0x1875` module count, contactor;
//! `0x1876` inhibit bit; `0x1877` error byte; `0x1879` flags; `0x0C05`.. module voltage mV; `0x0C1D`.. cells.

use std::collections::VecDeque;

use dbe_core::can::CanFrame;
use dbe_core::time::{Duration, Instant, Periodic};
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciVolts, MilliVolts, Watts};

mod wire {
    pub const POLL: u32 = 0x1871;
    pub const QUERY_BMS: [u8; 8] = [0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
    pub const QUERY_MODULES: [u8; 8] = [0x01, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
    pub const QUERY_CELLS_A: [u8; 8] = [0x01, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00];
    pub const QUERY_CELLS_B: [u8; 8] = [0x01, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00];
    pub const ACK: [u8; 8] = [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
    pub const SERIALS: [u8; 8] = [0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
    /// 2026-08-21 12:00:00.
    pub const CLOCK: [u8; 8] = [0x03, 0x06, 0x1A, 0x08, 0x15, 0x0C, 0x00, 0x00];

    pub const LIMITS: u32 = 0x1872;
    pub const PACK: u32 = 0x1873;
    pub const CELLS: u32 = 0x1874;
    pub const STATUS: u32 = 0x1875;
    pub const EXTREMES: u32 = 0x1876;
    pub const IDENTITY: u32 = 0x1877;
    pub const FLAGS: u32 = 0x1879;
    pub const SERIAL_A: u32 = 0x1881;
    pub const MODULES: core::ops::RangeInclusive<u32> = 0x0C05..=0x0C0C;
    pub const CELL_VOLTAGES: core::ops::RangeInclusive<u32> = 0x0C1D..=0x0CA9;

    pub const FLAGS_ERROR: u8 = 0x5A;
    /// The LFP window the simulator accepts in 0x1874 (mV).
    pub const LFP_CELL_MV: core::ops::RangeInclusive<u16> = 2000..=3650;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FoxessInverterParams {
    pub poll_interval: Duration,
    /// No answer for this long → Faulted.
    pub answer_timeout: Duration,
}

impl Default for FoxessInverterParams {
    fn default() -> Self {
        FoxessInverterParams { poll_interval: Duration::from_secs(1), answer_timeout: Duration::from_secs(5) }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FoxessInverterState {
    /// No usable BMS set yet, the contactor open, or the battery in error.
    Waiting,
    Running,
    /// Answers stopped, or cell voltages outside the LFP window.
    Faulted,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FoxessTold {
    pub max_voltage: DeciVolts,
    pub min_voltage: DeciVolts,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    pub soc: BasisPoints,
    /// 0x1874 highest / lowest cell (as presented).
    pub cell_max: MilliVolts,
    pub cell_min: MilliVolts,
    pub modules: u8,
    pub contactor_closed: bool,
    pub charge_inhibit: bool,
    pub error: bool,
    /// The last module voltage heard (0x0C05..).
    pub module_voltage: MilliVolts,
    /// Module, cell-voltage and serial frames heard so far.
    pub module_frames: u32,
    pub cell_frames: u32,
    pub serial_frames: u32,
    pub at: Option<Instant>,
}

pub struct FoxessInverter {
    params: FoxessInverterParams,
    poll: Periodic,
    cells: Periodic,
    modules: Periodic,
    /// Frames due later (the ack 0.5 s after a poll, the second cell query 100 ms after the first).
    later: VecDeque<(Instant, [u8; 8])>,
    told: FoxessTold,
    state: FoxessInverterState,
    /// Out of range values in the last BMS set.
    out_of_range: bool,
    demand: Watts,
    silent: bool,
}

fn word(d: &[u8; 8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

impl FoxessInverter {
    pub fn new(params: FoxessInverterParams, now: Instant) -> Self {
        let mut poll = Periodic::new(params.poll_interval);
        poll.start_at(now);
        FoxessInverter {
            params,
            poll,
            cells: Periodic::new(Duration::from_secs(3)),
            modules: Periodic::new(Duration::from_secs(6)),
            later: VecDeque::new(),
            told: FoxessTold::default(),
            state: FoxessInverterState::Waiting,
            out_of_range: false,
            demand: Watts(0),
            silent: false,
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        if self.state != FoxessInverterState::Faulted
            && self.told.at.is_some_and(|t| now >= t + self.params.answer_timeout)
        {
            self.state = FoxessInverterState::Faulted;
        }
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        self.check_timeout(now);
        let Some(id) = frame.extended_id() else { return };
        if frame.is_remote() || frame.len() != 8 {
            return;
        }
        let d = frame.data8();
        let t = &mut self.told;
        match id {
            wire::LIMITS => {
                t.max_voltage = DeciVolts(word(d, 0));
                t.min_voltage = DeciVolts(word(d, 2));
                t.charge_limit = DeciAmps(word(d, 4) as i32);
                t.discharge_limit = DeciAmps(word(d, 6) as i32);
            }
            wire::PACK => {
                t.voltage = DeciVolts(word(d, 0));
                t.current = DeciAmps(word(d, 2) as i16 as i32);
                t.soc = BasisPoints(d[4] as u16 * 100);
            }
            wire::CELLS => {
                t.cell_max = MilliVolts(word(d, 4));
                t.cell_min = MilliVolts(word(d, 6));
                self.out_of_range =
                    !(wire::LFP_CELL_MV.contains(&t.cell_max.0) && wire::LFP_CELL_MV.contains(&t.cell_min.0));
            }
            wire::STATUS => {
                t.modules = d[3];
                t.contactor_closed = d[4] == 1;
            }
            wire::EXTREMES => t.charge_inhibit = d[0] & 1 != 0,
            wire::IDENTITY => t.error = d[0] != 0,
            wire::FLAGS => t.error |= d[1] == wire::FLAGS_ERROR,
            wire::SERIAL_A..=0x1883 => t.serial_frames += 1,
            id if wire::MODULES.contains(&id) => {
                t.module_voltage = MilliVolts(word(d, 6));
                t.module_frames += 1;
            }
            id if wire::CELL_VOLTAGES.contains(&id) => t.cell_frames += 1,
            _ => return,
        }
        let first = t.at.is_none();
        t.at = Some(now);
        if first {
            self.cells.start_at(now);
            self.modules.start_at(now);
        }
        // The set ends with 0x1879: judge it then.
        if id == wire::FLAGS {
            let t = &self.told;
            let usable = t.max_voltage.0 > 0 && t.voltage.0 > 0 && t.contactor_closed && !t.error;
            self.state = if self.out_of_range {
                FoxessInverterState::Faulted
            } else if usable {
                FoxessInverterState::Running
            } else {
                FoxessInverterState::Waiting
            };
            self.told.error = false;
        }
    }

    fn push(&mut self, at: Instant, payload: [u8; 8]) {
        self.later.push_back((at, payload));
    }

    /// Its next request, on FozzieUK's cadence.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.check_timeout(now);
        if self.silent {
            return None;
        }
        if self.poll.poll(now) {
            self.push(now, wire::QUERY_BMS);
            self.push(now + Duration::from_millis(500), wire::ACK);
        }
        if self.told.at.is_some() {
            if self.cells.poll(now) {
                self.push(now, wire::QUERY_CELLS_A);
                self.push(now + Duration::from_millis(100), wire::QUERY_CELLS_B);
            }
            if self.modules.poll(now) {
                self.push(now, wire::QUERY_MODULES);
                self.push(now + Duration::from_millis(500), wire::SERIALS);
                self.push(now + Duration::from_millis(1000), wire::CLOCK);
            }
        }
        let i = self.later.iter().position(|(at, _)| *at <= now)?;
        let (_, payload) = self.later.remove(i)?;
        Some(CanFrame::extended(wire::POLL, &payload).expect("valid id"))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !self.silent {
            take(self.poll.next_at());
            if self.told.at.is_some() {
                take(self.cells.next_at());
                take(self.modules.next_at());
            }
            take(self.later.iter().map(|(at, _)| *at).min());
        }
        if self.state != FoxessInverterState::Faulted {
            take(self.told.at.map(|t| t + self.params.answer_timeout));
        }
        next
    }

    pub fn told(&self) -> Option<FoxessTold> {
        self.told.at.map(|_| self.told)
    }

    pub fn state(&self) -> FoxessInverterState {
        self.state
    }

    pub fn set_demand(&mut self, now: Instant, demand: Watts) {
        self.check_timeout(now);
        self.demand = demand;
    }

    /// The charge limit it obeys: 0 while the inhibit bit is set.
    pub fn charge_limit(&self) -> DeciAmps {
        if self.told.charge_inhibit {
            DeciAmps(0)
        } else {
            self.told.charge_limit
        }
    }

    /// The demand at the told voltage, clamped to the told limits (charging 0 while inhibited); 0 unless Running.
    pub fn current(&self) -> DeciAmps {
        if self.state != FoxessInverterState::Running {
            return DeciAmps(0);
        }
        let want = current_for_power(self.demand, self.told.voltage).0;
        DeciAmps(want.clamp(-self.told.discharge_limit.0.max(0), self.charge_limit().0.max(0)))
    }

    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
        if silent {
            self.later.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cell_mv: u16, contactor: u8, error: u8) -> Vec<CanFrame> {
        let c = cell_mv.to_le_bytes();
        [
            (0x1872, [0xA0, 0x0F, 0xB8, 0x0B, 0xFA, 0x00, 0x2C, 0x01]),
            (0x1873, [0x90, 0x0F, 0x83, 0xFF, 0x32, 0x00, 0xD2, 0x04]),
            (0x1874, [0xE7, 0x00, 0xCC, 0xFF, c[0], c[1], c[0], c[1]]),
            (0x1875, [0x59, 0x00, 0xFF, 0x08, contactor, 0x00, 0x00, 0x00]),
            (0x1876, [0x01, 0x00, 0xA0, 0x0F, 0x00, 0x00, 0x10, 0x0E]),
            (0x1877, [error, 0, 0, 0, 0x52, 0, 0x12, 0x01]),
            (0x1879, [0x00, 0x2B, 0, 0, 0, 0, 0, 0]),
        ]
        .into_iter()
        .map(|(id, d)| CanFrame::ext8(id, d))
        .collect()
    }

    #[test]
    fn runs_on_a_good_set_faults_outside_the_lfp_window_and_waits_on_error() {
        let mut inv = FoxessInverter::new(FoxessInverterParams::default(), Instant::ZERO);
        let t = Instant::from_millis(10);
        let feed = |inv: &mut FoxessInverter, frames: Vec<CanFrame>| frames.iter().for_each(|f| inv.handle_frame(t, f));
        feed(&mut inv, set(3200, 1, 0));
        assert_eq!(inv.state(), FoxessInverterState::Running);
        assert!(inv.told().unwrap().charge_inhibit);
        assert_eq!(inv.charge_limit(), DeciAmps(0), "the inhibit bit overrides 0x1872's 25 A");
        feed(&mut inv, set(4100, 1, 0));
        assert_eq!(inv.state(), FoxessInverterState::Faulted, "an NMC cell voltage");
        feed(&mut inv, set(3200, 1, 0x02));
        assert_eq!(inv.state(), FoxessInverterState::Waiting, "battery in error");
        feed(&mut inv, set(3200, 0, 0));
        assert_eq!(inv.state(), FoxessInverterState::Waiting, "contactor open");
        feed(&mut inv, set(3200, 1, 0));
        assert_eq!(inv.state(), FoxessInverterState::Running);
        assert_eq!(inv.current(), DeciAmps(0), "no demand");
    }

    #[test]
    fn polls_on_fozzieuks_cadence() {
        let mut inv = FoxessInverter::new(FoxessInverterParams::default(), Instant::ZERO);
        let mut sent = Vec::new();
        for ms in (0..=1500).step_by(10) {
            let now = Instant::from_millis(ms);
            while let Some(f) = inv.poll_transmit(now) {
                sent.push((ms, f.data8()[0], f.data8()[4]));
            }
        }
        // Nothing but the BMS poll and its ack until the battery has answered.
        assert_eq!(sent, [(0, 1, 0), (500, 2, 1), (1000, 1, 0), (1500, 2, 1)]);
    }
}
