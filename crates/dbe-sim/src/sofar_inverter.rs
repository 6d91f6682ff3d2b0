//! A simulated Sofar HYD hybrid listening to one battery of the Sofar BMS (extended) CAN protocol.
//!
//! The wire facts come from Battery-Emulator `Software/src/inverter/SOFAR-CAN.{h,cpp}` and its wiki page
//! (`docs/10-inverters/Sofar.md`); the decoding below is this simulator's own. The inverter is set to one battery
//! address (`battery_id`, as a user sets it on the inverter) and reads only the frames carrying that id's offset
//! (`base + battery_id × 0x1000`). It also asks: a `0x605` real-time inquiry every 10 s and a `0x705` history
//! inquiry every 60 s, each cycling through the codes Battery-Emulator answers, addressed to its battery. No source
//! gives the real inverter's inquiry cadence (Battery-Emulator: it "only listens periodically"), so these periods
//! are this simulator's assumption, chosen sparse on purpose.
//!
//! It runs once it has heard the limits (`0x351`), the SOC (`0x355`), the pack (`0x356`) and the enable flags
//! (`0x30F`) with a voltage inside its battery input range and a sane window; it faults when the battery's frames
//! stop for `answer_timeout` or a value is out of range (pack voltage outside 180..800 V, this simulator's
//! assumption from Sofar HYD-3PH data sheets, unverified; SOC above 100 %; max charge voltage below min discharge
//! voltage), and runs again once a good set returns. It draws the household demand at the told voltage, clamped to
//! the told limits, and not at all in a direction whose `0x30F` enable bit is clear.
//!
//! Decoded (little-endian): `0x351` max charge voltage 0.1 V, charge / discharge current 0.1 A, min discharge
//! voltage 0.1 V; `0x355` b0 SOC 1 %, b2 SOH 1 %; `0x356` voltage 0.1 V, current 0.1 A signed, temperature
//! 0.1 °C; `0x359` b3 cells in series; `0x30F` b1 bit 0 discharge allowed, bit 1 charge allowed; answers
//! `0x670`..`0x7B0` counted, their b0 checked against the address.

use dbe_core::can::CanFrame;
use dbe_core::time::{Duration, Instant, Periodic};
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciCelsius, DeciVolts, Watts};

mod wire {
    pub const LIMITS: u32 = 0x351;
    pub const SOC_SOH: u32 = 0x355;
    pub const PACK: u32 = 0x356;
    pub const CONFIG: u32 = 0x359;
    pub const ENABLE: u32 = 0x30F;
    pub const INQUIRY: u32 = 0x605;
    pub const HISTORY_INQUIRY: u32 = 0x705;
    /// The inquiry codes Battery-Emulator answers.
    pub const INQUIRY_CODES: [u8; 9] = [0x00, 0x01, 0x02, 0x03, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E];
    pub const HISTORY_CODES: [u8; 9] = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
    /// Base ids of the answers.
    pub const ANSWERS: core::ops::RangeInclusive<u32> = 0x670..=0x7C0;
    pub const DISCHARGE_ALLOWED: u8 = 1 << 0;
    pub const CHARGE_ALLOWED: u8 = 1 << 1;
    /// The battery input range this simulator accepts (0.1 V).
    pub const VOLTAGE_DV: core::ops::RangeInclusive<u16> = 1800..=8000;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SofarInverterParams {
    /// The battery address set on the inverter.
    pub battery_id: u8,
    pub inquiry_interval: Duration,
    pub history_interval: Duration,
    /// No battery frame for this long → Faulted.
    pub answer_timeout: Duration,
}

impl Default for SofarInverterParams {
    fn default() -> Self {
        SofarInverterParams {
            battery_id: 0,
            inquiry_interval: Duration::from_secs(10),
            history_interval: Duration::from_secs(60),
            answer_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SofarInverterState {
    /// No full set yet.
    Waiting,
    Running,
    /// The battery's frames stopped, or a value is out of range.
    Faulted,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SofarTold {
    pub max_charge_voltage: DeciVolts,
    pub min_discharge_voltage: DeciVolts,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub soc: BasisPoints,
    pub soh: BasisPoints,
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    pub temperature: DeciCelsius,
    pub cells: u8,
    pub charge_allowed: bool,
    pub discharge_allowed: bool,
    /// Answers to its inquiries, and how many of them carried the wrong battery id.
    pub answers: u32,
    pub misaddressed_answers: u32,
    /// When a battery frame was last heard.
    pub at: Option<Instant>,
}

/// The parts of a set heard since the last judgement.
#[derive(Copy, Clone, Debug, Default)]
struct Heard {
    limits: bool,
    soc: bool,
    pack: bool,
}

pub struct SofarInverter {
    params: SofarInverterParams,
    inquiry: Periodic,
    history: Periodic,
    next_code: usize,
    next_history_code: usize,
    told: SofarTold,
    heard: Heard,
    state: SofarInverterState,
    demand: Watts,
    silent: bool,
}

fn word(d: &[u8; 8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

impl SofarInverter {
    pub fn new(params: SofarInverterParams, now: Instant) -> Self {
        let mut inquiry = Periodic::new(params.inquiry_interval);
        inquiry.start_at(now + params.inquiry_interval);
        let mut history = Periodic::new(params.history_interval);
        history.start_at(now + params.history_interval);
        SofarInverter {
            params,
            inquiry,
            history,
            next_code: 0,
            next_history_code: 0,
            told: SofarTold::default(),
            heard: Heard::default(),
            state: SofarInverterState::Waiting,
            demand: Watts(0),
            silent: false,
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        if self.state != SofarInverterState::Faulted
            && self.told.at.is_some_and(|t| now >= t + self.params.answer_timeout)
        {
            self.state = SofarInverterState::Faulted;
            self.heard = Heard::default();
        }
    }

    fn out_of_range(&self) -> bool {
        let t = &self.told;
        !wire::VOLTAGE_DV.contains(&t.voltage.0) || t.soc.0 > 10_000 || t.max_charge_voltage < t.min_discharge_voltage
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        self.check_timeout(now);
        let Some(raw) = frame.extended_id() else { return };
        if frame.is_remote() || frame.len() != 8 || raw >> 12 != self.params.battery_id as u32 {
            return;
        }
        let d = frame.data8();
        let t = &mut self.told;
        match raw & 0xFFF {
            wire::LIMITS => {
                t.max_charge_voltage = DeciVolts(word(d, 0));
                t.charge_limit = DeciAmps(word(d, 2) as i32);
                t.discharge_limit = DeciAmps(word(d, 4) as i32);
                t.min_discharge_voltage = DeciVolts(word(d, 6));
                self.heard.limits = true;
            }
            wire::SOC_SOH => {
                t.soc = BasisPoints(d[0] as u16 * 100);
                t.soh = BasisPoints(d[2] as u16 * 100);
                self.heard.soc = true;
            }
            wire::PACK => {
                t.voltage = DeciVolts(word(d, 0));
                t.current = DeciAmps(word(d, 2) as i16 as i32);
                t.temperature = DeciCelsius(word(d, 4) as i16);
                self.heard.pack = true;
            }
            wire::CONFIG => t.cells = d[3],
            wire::ENABLE => {
                t.discharge_allowed = d[1] & wire::DISCHARGE_ALLOWED != 0;
                t.charge_allowed = d[1] & wire::CHARGE_ALLOWED != 0;
            }
            base if wire::ANSWERS.contains(&base) => {
                t.answers += 1;
                if d[0] != self.params.battery_id {
                    t.misaddressed_answers += 1;
                }
            }
            _ => return,
        }
        self.told.at = Some(now);
        // The set ends with 0x30F: judge it then.
        if raw & 0xFFF == wire::ENABLE {
            let full = self.heard.limits && self.heard.soc && self.heard.pack;
            self.state = if full && self.out_of_range() {
                SofarInverterState::Faulted
            } else if full {
                SofarInverterState::Running
            } else if self.state == SofarInverterState::Faulted {
                SofarInverterState::Faulted
            } else {
                SofarInverterState::Waiting
            };
            self.heard = Heard::default();
        }
    }

    /// Its next inquiry, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.check_timeout(now);
        if self.silent {
            return None;
        }
        let id = self.params.battery_id;
        if self.inquiry.poll(now) {
            let code = wire::INQUIRY_CODES[self.next_code % wire::INQUIRY_CODES.len()];
            self.next_code += 1;
            return Some(CanFrame::ext8(wire::INQUIRY, [id, code, 0, 0, 0, 0, 0, 0]));
        }
        if self.history.poll(now) {
            let code = wire::HISTORY_CODES[self.next_history_code % wire::HISTORY_CODES.len()];
            self.next_history_code += 1;
            return Some(CanFrame::ext8(wire::HISTORY_INQUIRY, [id, code, 0, 0, 0, 0, 0, 0]));
        }
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !self.silent {
            take(self.inquiry.next_at());
            take(self.history.next_at());
        }
        if self.state != SofarInverterState::Faulted {
            take(self.told.at.map(|t| t + self.params.answer_timeout));
        }
        next
    }

    pub fn told(&self) -> Option<SofarTold> {
        self.told.at.map(|_| self.told)
    }

    pub fn state(&self) -> SofarInverterState {
        self.state
    }

    pub fn set_demand(&mut self, now: Instant, demand: Watts) {
        self.check_timeout(now);
        self.demand = demand;
    }

    /// The charge limit it obeys: 0 while the charge bit is clear.
    pub fn charge_limit(&self) -> DeciAmps {
        if self.told.charge_allowed {
            self.told.charge_limit
        } else {
            DeciAmps(0)
        }
    }

    /// The discharge limit it obeys: 0 while the discharge bit is clear.
    pub fn discharge_limit(&self) -> DeciAmps {
        if self.told.discharge_allowed {
            self.told.discharge_limit
        } else {
            DeciAmps(0)
        }
    }

    /// The demand at the told voltage, clamped to the limits it obeys; 0 unless Running.
    pub fn current(&self) -> DeciAmps {
        if self.state != SofarInverterState::Running {
            return DeciAmps(0);
        }
        let want = current_for_power(self.demand, self.told.voltage).0;
        DeciAmps(want.clamp(-self.discharge_limit().0.max(0), self.charge_limit().0.max(0)))
    }

    /// A silent inverter sends no inquiries (it still listens).
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(battery_id: u8, voltage_dv: u16, flags: u8) -> Vec<CanFrame> {
        let v = voltage_dv.to_le_bytes();
        let off = (battery_id as u32) << 12;
        [
            (0x351, [0xA0, 0x0F, 0xFA, 0x00, 0x2C, 0x01, 0xB8, 0x0B]),
            (0x355, [50, 0, 98, 0, 0, 0, 0, 0]),
            (0x356, [v[0], v[1], 0x83, 0xFF, 0xE7, 0x00, 0, 0]),
            (0x359, [1, 1, 1, 96, 0, 0, 0, 0]),
            (0x30F, [0, flags, 0, 0, 0, 0, 0, 0]),
        ]
        .into_iter()
        .map(|(id, d)| CanFrame::ext8(id + off, d))
        .collect()
    }

    fn feed(inv: &mut SofarInverter, t: Instant, frames: Vec<CanFrame>) {
        frames.iter().for_each(|f| inv.handle_frame(t, f));
    }

    #[test]
    fn runs_on_its_batterys_set_obeys_the_flags_and_faults_out_of_range_or_silent() {
        let mut inv = SofarInverter::new(SofarInverterParams { battery_id: 3, ..Default::default() }, Instant::ZERO);
        let t = Instant::from_millis(10);
        feed(&mut inv, t, set(0, 3984, 0x03));
        assert_eq!(inv.state(), SofarInverterState::Waiting, "another battery's frames");
        feed(&mut inv, t, set(3, 3984, 0x03));
        assert_eq!(inv.state(), SofarInverterState::Running);
        let told = inv.told().unwrap();
        assert_eq!((told.voltage, told.soc, told.cells), (DeciVolts(3984), BasisPoints(5000), 96));
        assert_eq!((inv.charge_limit(), inv.discharge_limit()), (DeciAmps(250), DeciAmps(300)));
        feed(&mut inv, t, set(3, 3984, 0x01));
        assert_eq!(inv.charge_limit(), DeciAmps(0), "the charge bit overrides 0x351's 25 A");
        inv.set_demand(t, Watts(5000));
        assert_eq!(inv.current(), DeciAmps(0), "no charging while forbidden");
        feed(&mut inv, t, set(3, 1000, 0x03));
        assert_eq!(inv.state(), SofarInverterState::Faulted, "100 V is outside its input range");
        feed(&mut inv, t, set(3, 3984, 0x03));
        assert_eq!(inv.state(), SofarInverterState::Running);
        inv.handle_frame(Instant::from_millis(5009), &CanFrame::ext8(0x3999, [0; 8]));
        assert_eq!(inv.state(), SofarInverterState::Running);
        inv.handle_frame(Instant::from_millis(5010), &CanFrame::ext8(0x3999, [0; 8]));
        assert_eq!(inv.state(), SofarInverterState::Faulted, "5 s without its battery");
    }

    #[test]
    fn inquires_sparsely_addressed_to_its_battery() {
        let mut inv = SofarInverter::new(SofarInverterParams { battery_id: 2, ..Default::default() }, Instant::ZERO);
        let mut sent = Vec::new();
        for s in 0..=60 {
            let now = Instant::from_millis(s * 1000);
            while let Some(f) = inv.poll_transmit(now) {
                sent.push((s, f.extended_id().unwrap(), f.data8()[0], f.data8()[1]));
            }
        }
        let inquiries: Vec<_> = sent.iter().filter(|f| f.1 == 0x605).map(|f| (f.0, f.2, f.3)).collect();
        assert_eq!(
            inquiries,
            [(10, 2, 0x00), (20, 2, 0x01), (30, 2, 0x02), (40, 2, 0x03), (50, 2, 0x0A), (60, 2, 0x0B)]
        );
        assert_eq!(sent.iter().filter(|f| f.1 == 0x705).count(), 1);
    }
}
