//! A simulated Growatt SPH TL3 BH-UP hybrid expecting a Growatt ARK HV battery on CAN.
//!
//! The wire facts come from Battery-Emulator `Software/src/inverter/GROWATT-HV-CAN.{h,cpp}` and
//! `Software/src/battery/GROWATT-HV-ARK-BATTERY.cpp` (which plays this inverter's part against a real ARK pack),
//! and the capture of a real SPH10000TL3 BH-UP in ai-republic/bms-to-inverter issue #85; the decoding below is this
//! simulator's own. Every second it sends `0x3010` (a counter in bytes 0-1, byte 2 `0x14` as captured), `0x3020`
//! (all zeros, as captured in normal operation) and `0x3030` (YY MM DD hh mm ss, working status 01, as captured).
//! Until a battery answers it also probes for a Pylon HV battery (`0x4200` `02 ..`/`00 ..`, `0x8210` `AA ..`), as
//! the captured inverter does.
//!
//! It runs once `0x3110` and `0x3130` carried a voltage with "battery status normal" (`0x3110` byte 6 bit 4) set
//! and the fault bit (byte 7 bit 2) clear; the fault bit or a cleared "normal" sends it back to Waiting. It obeys
//! the no-charge / no-discharge bits (`0x3110` byte 7 bits 6 / 5) over the current limits. It faults when answers
//! stop for `answer_timeout`, or on values outside the ranges Battery-Emulator transcribes from the document
//! (voltages above 1000 V, currents above 300 A, SOC above 100 %), and starts over when good answers return.
//!
//! Decoded (big-endian): `0x3110` max charge voltage 0.1 V, charge/discharge limits 0.1 A, flags; `0x3120`
//! protection and alarm words; `0x3130` voltage 0.1 V, current 0.1 A signed, SOC 1 %; `0x3150` discharge cut-off
//! 0.1 V, cell count; `0x3190` cell extremes mV; every id of the set counted.

use dbe_core::can::CanFrame;
use dbe_core::time::{Duration, Instant, Periodic};
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciVolts, MilliVolts, Watts};

mod wire {
    pub const HEARTBEAT: u32 = 0x3010;
    pub const CONTROL: u32 = 0x3020;
    pub const TIME: u32 = 0x3030;
    pub const SAFETY: u8 = 0x14;
    /// 2026-08-21 12:00:00, operating.
    pub const CLOCK: [u8; 8] = [0x1A, 0x08, 0x15, 0x0C, 0x00, 0x00, 0x00, 0x01];
    pub const PYLON_PROBES: [(u32, [u8; 8]); 3] = [
        (0x4200, [0x02, 0, 0, 0, 0, 0, 0, 0xE3]),
        (0x4200, [0x00, 0, 0, 0, 0, 0, 0, 0xE3]),
        (0x8210, [0xAA, 0, 0, 0, 0, 0, 0, 0]),
    ];

    pub const LIMITS: u32 = 0x3110;
    pub const PROTECTION: u32 = 0x3120;
    pub const PACK: u32 = 0x3130;
    pub const WORKING: u32 = 0x3150;
    pub const CELLS: u32 = 0x3190;
    pub const SET: [u32; 20] = [
        0x3110, 0x3120, 0x3130, 0x3140, 0x3150, 0x3160, 0x3170, 0x3180, 0x3190, 0x3200, 0x3210, 0x3220, 0x3230, 0x3240,
        0x3250, 0x3260, 0x3270, 0x3280, 0x3290, 0x3F00,
    ];

    pub const BATTERY_NORMAL: u8 = 1 << 4;
    pub const FAULT: u8 = 1 << 2;
    pub const NO_DISCHARGE: u8 = 1 << 5;
    pub const NO_CHARGE: u8 = 1 << 6;
    /// The document's ranges as Battery-Emulator transcribes them.
    pub const MAX_VOLTAGE_DV: u16 = 10_000;
    pub const MAX_CURRENT_DA: u16 = 3_000;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GrowattInverterParams {
    pub interval: Duration,
    /// No `0x3110` for this long → Faulted.
    pub answer_timeout: Duration,
}

impl Default for GrowattInverterParams {
    fn default() -> Self {
        GrowattInverterParams { interval: Duration::from_secs(1), answer_timeout: Duration::from_secs(5) }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GrowattInverterState {
    /// No usable answer yet, or the battery reports a fault.
    Waiting,
    Running,
    /// Answers stopped, or a value out of the protocol's range.
    Faulted,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct GrowattTold {
    pub max_voltage: DeciVolts,
    pub min_voltage: DeciVolts,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub no_charge: bool,
    pub no_discharge: bool,
    pub fault: bool,
    pub normal: bool,
    pub protection: u32,
    pub alarm: u32,
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    pub soc: BasisPoints,
    pub cells: u16,
    pub cell_max: MilliVolts,
    pub cell_min: MilliVolts,
    /// How many frames of each id of the set (in [`wire::SET`]'s order) were heard.
    pub counts: [u32; 20],
    pub at: Option<Instant>,
}

pub struct GrowattInverter {
    params: GrowattInverterParams,
    tick: Periodic,
    counter: u16,
    pending: Vec<(u32, [u8; 8])>,
    /// When the pending frames fell due.
    pending_at: Option<Instant>,
    told: GrowattTold,
    heard_pack: bool,
    state: GrowattInverterState,
    out_of_range: bool,
    demand: Watts,
    silent: bool,
}

fn word(d: &[u8; 8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn long(d: &[u8; 8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

impl GrowattInverter {
    pub fn new(params: GrowattInverterParams, now: Instant) -> Self {
        let mut tick = Periodic::new(params.interval);
        tick.start_at(now);
        GrowattInverter {
            params,
            tick,
            counter: 0x0EDF,
            pending: Vec::new(),
            pending_at: None,
            told: GrowattTold::default(),
            heard_pack: false,
            state: GrowattInverterState::Waiting,
            out_of_range: false,
            demand: Watts(0),
            silent: false,
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        if self.state != GrowattInverterState::Faulted
            && self.told.at.is_some_and(|t| now >= t + self.params.answer_timeout)
        {
            self.state = GrowattInverterState::Faulted;
        }
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        self.check_timeout(now);
        let Some(id) = frame.extended_id() else { return };
        let Some(slot) = wire::SET.iter().position(|&i| i == id) else { return };
        if frame.is_remote() || frame.len() != 8 {
            return;
        }
        let d = frame.data8();
        let t = &mut self.told;
        t.counts[slot] += 1;
        match id {
            wire::LIMITS => {
                t.max_voltage = DeciVolts(word(d, 0));
                t.charge_limit = DeciAmps(word(d, 2) as i32);
                t.discharge_limit = DeciAmps(word(d, 4) as i32);
                t.normal = d[6] & wire::BATTERY_NORMAL != 0;
                t.fault = d[7] & wire::FAULT != 0;
                t.no_discharge = d[7] & wire::NO_DISCHARGE != 0;
                t.no_charge = d[7] & wire::NO_CHARGE != 0;
                t.at = Some(now);
                self.out_of_range = t.max_voltage.0 > wire::MAX_VOLTAGE_DV
                    || word(d, 2) > wire::MAX_CURRENT_DA
                    || word(d, 4) > wire::MAX_CURRENT_DA;
            }
            wire::PROTECTION => {
                t.protection = long(d, 0);
                t.alarm = long(d, 4);
            }
            wire::PACK => {
                t.voltage = DeciVolts(word(d, 0));
                t.current = DeciAmps(word(d, 2) as i16 as i32);
                t.soc = BasisPoints(d[6] as u16 * 100);
                self.heard_pack = true;
                self.out_of_range |= t.voltage.0 > wire::MAX_VOLTAGE_DV || d[6] > 100;
            }
            wire::WORKING => {
                t.min_voltage = DeciVolts(word(d, 0));
                t.cells = word(d, 4);
            }
            wire::CELLS => {
                t.cell_max = MilliVolts(word(d, 1));
                t.cell_min = MilliVolts(word(d, 3));
            }
            _ => {}
        }
        // Judge once the pack frame of a set has followed its limits.
        if id == wire::PACK {
            let t = &self.told;
            let usable = t.at.is_some() && t.max_voltage.0 > 0 && t.voltage.0 > 0 && t.normal && !t.fault;
            self.state = if self.out_of_range {
                GrowattInverterState::Faulted
            } else if usable {
                GrowattInverterState::Running
            } else {
                GrowattInverterState::Waiting
            };
        }
    }

    /// Its next frame: the heartbeat, control and time frames every second (and the Pylon probes until a battery
    /// answered).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.check_timeout(now);
        if self.silent {
            return None;
        }
        if self.tick.poll(now) {
            let c = self.counter.to_be_bytes();
            self.counter = self.counter.wrapping_add(1);
            self.pending.push((wire::HEARTBEAT, [c[0], c[1], wire::SAFETY, 0, 0, 0, 0, 0]));
            self.pending.push((wire::CONTROL, [0; 8]));
            self.pending.push((wire::TIME, wire::CLOCK));
            if self.told.at.is_none() {
                self.pending.extend(wire::PYLON_PROBES);
            }
            self.pending_at = Some(now);
        }
        if self.pending.is_empty() {
            return None;
        }
        let (id, data) = self.pending.remove(0);
        if self.pending.is_empty() {
            self.pending_at = None;
        }
        Some(CanFrame::extended(id, &data).expect("valid id"))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = if self.silent { None } else { self.pending_at.or(self.tick.next_at()) };
        if self.state != GrowattInverterState::Faulted {
            if let Some(deadline) = self.told.at.map(|t| t + self.params.answer_timeout) {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        next
    }

    pub fn told(&self) -> Option<GrowattTold> {
        self.told.at.filter(|_| self.heard_pack).map(|_| self.told)
    }

    pub fn state(&self) -> GrowattInverterState {
        self.state
    }

    pub fn set_demand(&mut self, now: Instant, demand: Watts) {
        self.check_timeout(now);
        self.demand = demand;
    }

    /// The limits it obeys: 0 in a direction whose forbidden bit is set.
    pub fn limits(&self) -> (DeciAmps, DeciAmps) {
        let t = &self.told;
        (
            if t.no_charge { DeciAmps(0) } else { t.charge_limit },
            if t.no_discharge { DeciAmps(0) } else { t.discharge_limit },
        )
    }

    /// The demand at the told voltage, clamped to the limits it obeys; 0 unless Running.
    pub fn current(&self) -> DeciAmps {
        if self.state != GrowattInverterState::Running {
            return DeciAmps(0);
        }
        let (charge, discharge) = self.limits();
        let want = current_for_power(self.demand, self.told.voltage).0;
        DeciAmps(want.clamp(-discharge.0.max(0), charge.0.max(0)))
    }

    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
        if silent {
            self.pending.clear();
            self.pending_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(flags6: u8, flags7: u8, voltage_dv: u16) -> Vec<CanFrame> {
        let v = voltage_dv.to_be_bytes();
        [
            (0x3110, [0x0F, 0xA0, 0x00, 0xFA, 0x01, 0x2C, flags6, flags7]),
            (0x3120, [0, 0, 0, 0x10, 0, 0, 0, 0x04]),
            (0x3130, [v[0], v[1], 0xFF, 0x83, 0x00, 0xE7, 0x32, 0x5B]),
        ]
        .into_iter()
        .map(|(id, d)| CanFrame::ext8(id, d))
        .collect()
    }

    #[test]
    fn runs_on_a_normal_battery_obeys_the_forbidden_bits_waits_on_a_fault_and_faults_out_of_range() {
        let mut inv = GrowattInverter::new(GrowattInverterParams::default(), Instant::ZERO);
        let t = Instant::from_millis(10);
        let feed =
            |inv: &mut GrowattInverter, frames: Vec<CanFrame>| frames.iter().for_each(|f| inv.handle_frame(t, f));
        feed(&mut inv, set(0x30, 0x03, 3984));
        assert_eq!(inv.state(), GrowattInverterState::Running);
        let told = inv.told().unwrap();
        assert_eq!(
            (told.voltage, told.soc, told.protection, told.alarm),
            (DeciVolts(3984), BasisPoints(5000), 0x10, 4)
        );
        assert_eq!(inv.limits(), (DeciAmps(250), DeciAmps(300)));
        feed(&mut inv, set(0x30, 0x03 | 0x40, 3984));
        assert_eq!(inv.limits(), (DeciAmps(0), DeciAmps(300)), "no charge");
        feed(&mut inv, set(0x30, 0x03 | 0x20, 3984));
        assert_eq!(inv.limits(), (DeciAmps(250), DeciAmps(0)), "no discharge");
        feed(&mut inv, set(0x20, 0x03, 3984));
        assert_eq!(inv.state(), GrowattInverterState::Waiting, "not normal");
        feed(&mut inv, set(0x30, 0x07, 3984));
        assert_eq!(inv.state(), GrowattInverterState::Waiting, "fault bit");
        feed(&mut inv, set(0x30, 0x03, 10_001));
        assert_eq!(inv.state(), GrowattInverterState::Faulted, "over 1000 V");
    }

    #[test]
    fn heartbeat_control_and_time_every_second_with_pylon_probes_until_answered() {
        let mut inv = GrowattInverter::new(GrowattInverterParams::default(), Instant::ZERO);
        let mut sent = Vec::new();
        for ms in (0..=1000).step_by(10) {
            let now = Instant::from_millis(ms);
            while let Some(f) = inv.poll_transmit(now) {
                sent.push((ms, f.extended_id().unwrap()));
            }
        }
        let second = [0x3010, 0x3020, 0x3030, 0x4200, 0x4200, 0x8210];
        let want: Vec<(u64, u32)> = [0, 1000].iter().flat_map(|&t| second.iter().map(move |&i| (t, i))).collect();
        assert_eq!(sent, want);
        for f in set(0x30, 0x03, 3984) {
            inv.handle_frame(Instant::from_millis(1500), &f);
        }
        let now = Instant::from_millis(2000);
        let ids: Vec<u32> = std::iter::from_fn(|| inv.poll_transmit(now)).map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x3010, 0x3020, 0x3030], "no more probes once a battery answered");
    }
}
