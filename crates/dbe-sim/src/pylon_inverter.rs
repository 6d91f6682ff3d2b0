//! A simulated hybrid inverter that polls a Pylontech high-voltage battery over CAN, as the house side of tests.
//!
//! It behaves like the inverter side in Battery-Emulator's `Software/src/battery/PYLON-BATTERY.{h,cpp}` (BE polling
//! a real Pylon HV battery): every second it sends a `0x4200` request, a `0x8200` "quit sleep" (0xAA), a `0x8210`
//! charge/discharge command (0xAA 0xAA) and a `0x3010` heartbeat; it asks for the ensemble information (`0x4200`
//! byte 0 = 0x00) on every poll and for the system-equipment information (byte 0 = 0x02) on the first poll and every
//! tenth after. It decodes the answers with its own layout table below (written from the same public facts as the
//! protocol module, but not sharing its code, so an encoder bug cannot cancel itself out):
//! `0x4210` voltage 0.1 V, current 0.1 A, `0x4220` cutoff voltages and current limits, `0x4230` cell mV,
//! `0x4240` cell temperatures 0.1 °C − 100 °C, `0x4250` alarm/protection words, `0x4280` 0xAA forbidden marks.
//! Currents are plain signed 0.1 A, or with the 30k options `raw − 30000` (charge limit) and `30000 − raw`
//! (discharge limit, the Pylon V1.26 sign as BE's battery-side decoder reads it).
//!
//! It faults when no complete answer set has arrived for `answer_timeout`, and recovers with the next one.
//!
//! The Ferroamp and Solxpow presets ([`PylonInverterParams::for_preset`]) decode with the preset's fixed settings
//! and send only the `0x4200` polls: Battery-Emulator's `FERROAMP-CAN.cpp` and `SOLXPOW-CAN.cpp` read nothing
//! else from the inverter, and nothing public says what else those inverters send. The Ferroamp one accepts only
//! LFP cell voltages ("Ferroamp only supports LFP batteries", ibid.): a complete set with a cell outside
//! 2.0..3.65 V faults it, as an LFP-only inverter refuses such a battery.

use std::collections::VecDeque;

use dbe_core::can::CanFrame;
use dbe_core::inverter::pylon_can::{ByteOrder, Preset, PylonCanOptions};
use dbe_core::time::{Duration, Instant, Periodic};
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, Watts};

/// The inverter's own view of the wire: ids, request codes, byte positions and offsets.
mod wire {
    pub const POLL: u32 = 0x4200;
    pub const HEARTBEAT: u32 = 0x3010;
    pub const WAKE: u32 = 0x8200;
    pub const CHARGE_DISCHARGE: u32 = 0x8210;
    pub const ASK_ENSEMBLE: u8 = 0x00;
    pub const ASK_EQUIPMENT: u8 = 0x02;
    pub const QUIT_SLEEP: u8 = 0xAA;
    pub const COMMAND_ON: u8 = 0xAA;
    pub const FORBIDDEN: u8 = 0xAA;

    /// Answer ids before the battery address is added.
    pub const PACK: u32 = 0x4210;
    pub const LIMITS: u32 = 0x4220;
    pub const CELL_MV: u32 = 0x4230;
    pub const CELL_TEMP: u32 = 0x4240;
    pub const STATUS: u32 = 0x4250;
    pub const FLAGS: u32 = 0x4280;

    /// Start byte of each 16-bit word, and the single bytes.
    pub const PACK_VOLTAGE_AT: usize = 0;
    pub const PACK_CURRENT_AT: usize = 2;
    pub const PACK_SOC_AT: usize = 6;
    pub const PACK_SOH_AT: usize = 7;
    pub const CHARGE_VOLTAGE_AT: usize = 0;
    pub const DISCHARGE_VOLTAGE_AT: usize = 2;
    pub const CHARGE_LIMIT_AT: usize = 4;
    pub const DISCHARGE_LIMIT_AT: usize = 6;
    pub const HIGH_AT: usize = 0;
    pub const LOW_AT: usize = 2;
    pub const ALARM_WORD_AT: usize = 4;
    pub const PROTECTION_WORD_AT: usize = 6;
    pub const CHARGE_FLAG_AT: usize = 0;
    pub const DISCHARGE_FLAG_AT: usize = 1;

    pub const AMPS_OFFSET: i32 = 30_000;
    pub const CELSIUS_OFFSET: i32 = 1_000;
    /// 1 % on the wire is 100 basis points.
    pub const PERCENT: u16 = 100;
}

/// How often the equipment information is asked for, in polls.
const EQUIPMENT_EVERY: u32 = 10;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PylonInverterParams {
    /// 1 s: the period of Battery-Emulator's Pylon HV battery poller.
    pub poll_interval: Duration,
    /// No complete answer set for this long → Faulted. 30 s: inside the 30-60 s communication timeout of real
    /// inverters the supervisor's documentation assumes.
    pub answer_timeout: Duration,
    /// Must match the battery side's.
    pub options: PylonCanOptions,
    /// Sends the 0x8200 wake, 0x8210 charge/discharge command and 0x3010 heartbeat with each poll.
    pub commands: bool,
    /// Cell voltages the inverter accepts; a complete set outside it faults the inverter.
    pub cell_window: Option<(MilliVolts, MilliVolts)>,
}

impl Default for PylonInverterParams {
    fn default() -> Self {
        PylonInverterParams {
            poll_interval: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(30),
            options: PylonCanOptions::default(),
            commands: true,
            cell_window: None,
        }
    }
}

/// The cell voltages an LFP-only inverter accepts (LFP's 2.0 V floor to its 3.65 V full charge).
pub const LFP_CELL_WINDOW: (MilliVolts, MilliVolts) = (MilliVolts(2000), MilliVolts(3650));

impl PylonInverterParams {
    /// The inverter of a preset protocol (see the module doc); `Pylontech` gets the defaults.
    pub fn for_preset(preset: Preset) -> Self {
        let base = PylonInverterParams::default();
        match preset {
            Preset::Pylontech => base,
            Preset::Ferroamp => PylonInverterParams {
                options: preset.options().unwrap_or_default(),
                commands: false,
                cell_window: Some(LFP_CELL_WINDOW),
                ..base
            },
            Preset::Solxpow => {
                PylonInverterParams { options: preset.options().unwrap_or_default(), commands: false, ..base }
            }
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InverterState {
    /// No complete answer set yet.
    Waiting,
    Running,
    /// The battery stopped answering for `answer_timeout`.
    Faulted,
}

/// The last complete set of values decoded from the battery's answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Told {
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    pub soc: BasisPoints,
    pub soh: BasisPoints,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub max_charge_voltage: DeciVolts,
    pub min_discharge_voltage: DeciVolts,
    pub temperature_min: DeciCelsius,
    pub temperature_max: DeciCelsius,
    pub cell_min: MilliVolts,
    pub cell_max: MilliVolts,
    pub charge_forbidden: bool,
    pub discharge_forbidden: bool,
    /// 0x4250 raw: protection word in bits 16-31, alarm word in bits 0-15.
    pub alarms: u32,
    /// When the set completed.
    pub at: Instant,
}

/// Bits of the answers a set needs before it counts as complete.
const NEED_PACK: u8 = 1 << 0;
const NEED_LIMITS: u8 = 1 << 1;
const NEED_CELL_MV: u8 = 1 << 2;
const NEED_CELL_TEMP: u8 = 1 << 3;
const NEED_STATUS: u8 = 1 << 4;
const NEED_FLAGS: u8 = 1 << 5;
const NEED_ALL: u8 = NEED_PACK | NEED_LIMITS | NEED_CELL_MV | NEED_CELL_TEMP | NEED_STATUS | NEED_FLAGS;

pub struct PylonInverter {
    params: PylonInverterParams,
    poll: Periodic,
    /// Polls since the last equipment request, modulo [`EQUIPMENT_EVERY`].
    polls: u32,
    outbox: VecDeque<CanFrame>,
    outbox_at: Instant,
    partial: Told,
    got: u8,
    told: Option<Told>,
    state: InverterState,
    demand: Watts,
    silent: bool,
}

impl PylonInverter {
    pub fn new(p: PylonInverterParams, now: Instant) -> Self {
        let mut poll = Periodic::new(p.poll_interval);
        poll.start_at(now);
        let blank = Told {
            voltage: DeciVolts(0),
            current: DeciAmps(0),
            soc: BasisPoints(0),
            soh: BasisPoints(0),
            charge_limit: DeciAmps(0),
            discharge_limit: DeciAmps(0),
            max_charge_voltage: DeciVolts(0),
            min_discharge_voltage: DeciVolts(0),
            temperature_min: DeciCelsius(0),
            temperature_max: DeciCelsius(0),
            cell_min: MilliVolts(0),
            cell_max: MilliVolts(0),
            charge_forbidden: true,
            discharge_forbidden: true,
            alarms: 0,
            at: now,
        };
        PylonInverter {
            params: p,
            poll,
            polls: 0,
            outbox: VecDeque::new(),
            outbox_at: now,
            partial: blank,
            got: 0,
            told: None,
            state: InverterState::Waiting,
            demand: Watts(0),
            silent: false,
        }
    }

    fn address(&self) -> u32 {
        self.params.options.address.min(15) as u32
    }

    fn check_timeout(&mut self, now: Instant) {
        if let (InverterState::Running, Some(t)) = (self.state, self.told) {
            if now >= t.at + self.params.answer_timeout {
                self.state = InverterState::Faulted;
            }
        }
    }

    fn word(&self, d: &[u8; 8], at: usize) -> u16 {
        let pair = [d[at], d[at + 1]];
        match self.params.options.byte_order {
            ByteOrder::BigEndian => u16::from_be_bytes(pair),
            ByteOrder::LittleEndian => u16::from_le_bytes(pair),
        }
    }

    fn amps(&self, raw: u16) -> i32 {
        if self.params.options.offset_30k {
            raw as i32 - wire::AMPS_OFFSET
        } else {
            raw as i16 as i32
        }
    }

    fn celsius(raw: u16) -> DeciCelsius {
        DeciCelsius((raw as i32 - wire::CELSIUS_OFFSET).clamp(i16::MIN as i32, i16::MAX as i32) as i16)
    }

    /// Takes one frame from the battery. Anything that is not a full 8-byte answer of ours is dropped.
    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        self.check_timeout(now);
        let Some(raw_id) = frame.extended_id() else { return };
        if frame.is_remote() || frame.len() != 8 {
            return;
        }
        let Some(base) = raw_id.checked_sub(self.address()) else { return };
        let d = frame.data8();
        let offset = self.params.options.offset_30k;
        match base {
            wire::PACK => {
                // A set starts with 0x4210: nothing from an older, interrupted set is kept.
                self.got = NEED_PACK;
                self.partial.voltage = DeciVolts(self.word(d, wire::PACK_VOLTAGE_AT));
                self.partial.current = DeciAmps(self.amps(self.word(d, wire::PACK_CURRENT_AT)));
                self.partial.soc = BasisPoints(d[wire::PACK_SOC_AT] as u16 * wire::PERCENT);
                self.partial.soh = BasisPoints(d[wire::PACK_SOH_AT] as u16 * wire::PERCENT);
            }
            wire::LIMITS => {
                self.got |= NEED_LIMITS;
                self.partial.max_charge_voltage = DeciVolts(self.word(d, wire::CHARGE_VOLTAGE_AT));
                self.partial.min_discharge_voltage = DeciVolts(self.word(d, wire::DISCHARGE_VOLTAGE_AT));
                self.partial.charge_limit = DeciAmps(self.amps(self.word(d, wire::CHARGE_LIMIT_AT)));
                let discharge = self.word(d, wire::DISCHARGE_LIMIT_AT);
                self.partial.discharge_limit =
                    DeciAmps(if offset { wire::AMPS_OFFSET - discharge as i32 } else { discharge as i16 as i32 });
            }
            wire::CELL_MV => {
                self.got |= NEED_CELL_MV;
                self.partial.cell_max = MilliVolts(self.word(d, wire::HIGH_AT));
                self.partial.cell_min = MilliVolts(self.word(d, wire::LOW_AT));
            }
            wire::CELL_TEMP => {
                self.got |= NEED_CELL_TEMP;
                self.partial.temperature_max = Self::celsius(self.word(d, wire::HIGH_AT));
                self.partial.temperature_min = Self::celsius(self.word(d, wire::LOW_AT));
            }
            wire::STATUS => {
                self.got |= NEED_STATUS;
                let alarm = u16::from_le_bytes([d[wire::ALARM_WORD_AT], d[wire::ALARM_WORD_AT + 1]]);
                let protection = u16::from_le_bytes([d[wire::PROTECTION_WORD_AT], d[wire::PROTECTION_WORD_AT + 1]]);
                self.partial.alarms = (protection as u32) << 16 | alarm as u32;
            }
            wire::FLAGS => {
                self.got |= NEED_FLAGS;
                self.partial.charge_forbidden = d[wire::CHARGE_FLAG_AT] == wire::FORBIDDEN;
                self.partial.discharge_forbidden = d[wire::DISCHARGE_FLAG_AT] == wire::FORBIDDEN;
            }
            _ => return,
        }
        if self.got == NEED_ALL {
            self.got = 0;
            self.told = Some(Told { at: now, ..self.partial });
            let refused = self.params.cell_window.is_some_and(|(lo, hi)| {
                let (min, max) = (self.partial.cell_min, self.partial.cell_max);
                min < lo || max > hi
            });
            self.state = if refused { InverterState::Faulted } else { InverterState::Running };
        }
    }

    /// Its requests, one frame per call, at the poll cadence.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.check_timeout(now);
        if self.outbox.is_empty() && !self.silent && self.poll.poll(now) {
            let ext = |id: u32, data: [u8; 8]| CanFrame::extended(id, &data).expect("constant ids are valid");
            self.outbox.push_back(ext(wire::POLL, [wire::ASK_ENSEMBLE, 0, 0, 0, 0, 0, 0, 0]));
            if self.polls == 0 {
                self.outbox.push_back(ext(wire::POLL, [wire::ASK_EQUIPMENT, 0, 0, 0, 0, 0, 0, 0]));
            }
            if self.params.commands {
                let address = self.address();
                self.outbox.push_back(ext(wire::WAKE + address, [wire::QUIT_SLEEP, 0, 0, 0, 0, 0, 0, 0]));
                self.outbox.push_back(ext(
                    wire::CHARGE_DISCHARGE + address,
                    [wire::COMMAND_ON, wire::COMMAND_ON, 0, 0, 0, 0, 0, 0],
                ));
                self.outbox.push_back(ext(wire::HEARTBEAT, [0x01, 0, 0, 0, 0, 0, 0, 0]));
            }
            self.polls = (self.polls + 1) % EQUIPMENT_EVERY;
            self.outbox_at = now;
        }
        self.outbox.pop_front()
    }

    /// The next poll, a queued request, or the moment the answers run out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = if self.silent { None } else { self.poll.next_at() };
        if !self.outbox.is_empty() {
            next = Some(self.outbox_at);
        }
        if let (InverterState::Running, Some(t)) = (self.state, self.told) {
            let fault_at = t.at + self.params.answer_timeout;
            next = Some(next.map_or(fault_at, |n| n.min(fault_at)));
        }
        next
    }

    pub fn told(&self) -> Option<Told> {
        self.told
    }

    pub fn state(&self) -> InverterState {
        self.state
    }

    /// What the house wants (+ = charge the battery).
    pub fn set_demand(&mut self, now: Instant, demand: Watts) {
        self.check_timeout(now);
        self.demand = demand;
    }

    /// What it draws: the demand at the told voltage, clamped to the told limits; 0 unless Running and allowed.
    pub fn current(&self) -> DeciAmps {
        let Some(t) = self.told.filter(|_| self.state == InverterState::Running) else {
            return DeciAmps(0);
        };
        let want = current_for_power(self.demand, t.voltage).0;
        if want > 0 {
            if t.charge_forbidden {
                return DeciAmps(0);
            }
            DeciAmps(want.min(t.charge_limit.0.max(0)))
        } else if want < 0 {
            if t.discharge_forbidden {
                return DeciAmps(0);
            }
            DeciAmps(want.max(-t.discharge_limit.0.max(0)))
        } else {
            DeciAmps(0)
        }
    }

    /// Stops (or resumes) polling, for inverter-missing tests.
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
        if silent {
            self.outbox.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::inverter::pylon_can::PylonCan;
    use dbe_core::inverter::{CanInverter, InverterView};
    use dbe_core::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use dbe_core::supervisor::{Alarms, Output};
    use dbe_core::time::earliest;
    use dbe_core::units::WattHours;

    fn model() -> BatteryModel {
        let t = Instant::ZERO;
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96,
            max_pack_voltage: DeciVolts(4040),
            min_pack_voltage: DeciVolts(2600),
            max_cell_voltage: MilliVolts(4250),
            min_cell_voltage: MilliVolts(2700),
            max_cell_deviation: MilliVolts(500),
        });
        m.pack_voltage = Some(Reading::new(DeciVolts(3812), t));
        m.current = Some(Reading::new(DeciAmps(-437), t));
        m.soh = Some(Reading::new(BasisPoints(8765), t));
        m.temperature_min = Some(Reading::new(DeciCelsius(-53), t));
        m.temperature_max = Some(Reading::new(DeciCelsius(284), t));
        let mut cells = [MilliVolts(3970); 96];
        cells[3] = MilliVolts(3941);
        cells[77] = MilliVolts(4012);
        m.cells.set_voltages(t, &cells);
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(6789)),
            total_energy: Some(WattHours(30_000)),
            charge_current_limit: DeciAmps(1234),
            discharge_current_limit: DeciAmps(2345),
            max_charge_voltage: DeciVolts(4030),
            min_discharge_voltage: DeciVolts(2650),
            warnings: Alarms::OVER_TEMPERATURE,
            alarms: Alarms::CELL_UNDER_VOLTAGE,
            data_valid: true,
            ..Output::default()
        }
    }

    /// The battery protocol and the simulated inverter on one in-memory bus, in simulated time.
    struct Bus {
        battery: PylonCan,
        inverter: PylonInverter,
        model: BatteryModel,
        out: Output,
        now: Instant,
        /// The battery side hears nothing (and so answers nothing).
        battery_deaf: bool,
    }

    impl Bus {
        fn new(options: PylonCanOptions) -> Self {
            let params = PylonInverterParams { options, ..Default::default() };
            Bus {
                battery: PylonCan::new(options),
                inverter: PylonInverter::new(params, Instant::ZERO),
                model: model(),
                out: output(),
                now: Instant::ZERO,
                battery_deaf: false,
            }
        }

        fn exchange(&mut self) {
            loop {
                let mut moved = false;
                while let Some(f) = self.inverter.poll_transmit(self.now) {
                    moved = true;
                    if !self.battery_deaf {
                        let _ = self.battery.handle_frame(self.now, &f);
                    }
                }
                let view = InverterView::new(&self.model, &self.out);
                while let Some(f) = self.battery.poll_transmit(self.now, &view) {
                    moved = true;
                    self.inverter.handle_frame(self.now, &f);
                }
                if !moved {
                    break;
                }
            }
        }

        /// Jumps from deadline to deadline until `end`.
        fn run_until(&mut self, end: Instant) {
            self.exchange();
            while let Some(t) = earliest(self.battery.poll_timeout(), self.inverter.poll_timeout()) {
                if t > end {
                    break;
                }
                self.now = self.now.max(t);
                self.exchange();
            }
            self.now = end;
            self.exchange();
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            self.run_until(end);
        }
    }

    fn all_options() -> Vec<PylonCanOptions> {
        let mut v = Vec::new();
        for byte_order in [ByteOrder::BigEndian, ByteOrder::LittleEndian] {
            for offset_30k in [false, true] {
                for address in [0, 1] {
                    v.push(PylonCanOptions { byte_order, offset_30k, address });
                }
            }
        }
        v
    }

    #[test]
    fn inverter_decodes_the_view_in_every_option_combination() {
        for o in all_options() {
            let mut bus = Bus::new(o);
            assert_eq!(bus.inverter.state(), InverterState::Waiting);
            bus.run_for(Duration::from_millis(2500));
            assert_eq!(bus.inverter.state(), InverterState::Running, "{o:?}");
            let t = bus.inverter.told().unwrap();
            let view = InverterView::new(&bus.model, &bus.out);
            assert_eq!(t.voltage, view.voltage().unwrap(), "{o:?}");
            assert_eq!(t.current, view.current().unwrap(), "{o:?}");
            // SOC and SOH travel in whole percent: within one LSB (100 basis points), never above.
            let soc = view.soc().unwrap().0;
            assert!(t.soc.0 <= soc && soc - t.soc.0 < 100, "{o:?}: {:?}", t.soc);
            let soh = view.soh().unwrap().0;
            assert!(t.soh.0 <= soh && soh - t.soh.0 < 100, "{o:?}: {:?}", t.soh);
            assert_eq!(t.charge_limit, view.charge_current_limit(), "{o:?}");
            assert_eq!(t.discharge_limit, view.discharge_current_limit(), "{o:?}");
            assert_eq!(t.max_charge_voltage, view.max_charge_voltage(), "{o:?}");
            assert_eq!(t.min_discharge_voltage, view.min_discharge_voltage(), "{o:?}");
            assert_eq!(t.temperature_min, view.temperature_min().unwrap(), "{o:?}");
            assert_eq!(t.temperature_max, view.temperature_max().unwrap(), "{o:?}");
            assert_eq!(t.cell_min, view.cell_min().unwrap().1, "{o:?}");
            assert_eq!(t.cell_max, view.cell_max().unwrap().1, "{o:?}");
            assert!(!t.charge_forbidden && !t.discharge_forbidden, "{o:?}");
            // protection: cell low voltage (bit 0); alarm: charge + discharge high temperature (bits 5, 7)
            assert_eq!(t.alarms, 0x0001_00A0, "{o:?}");
            // The battery heard every poll.
            assert_eq!(bus.battery.last_heard(), Some(Instant::from_millis(2000)));
        }
    }

    #[test]
    fn zero_limits_reach_the_inverter_as_zero_and_forbidden() {
        for o in all_options() {
            let mut bus = Bus::new(o);
            bus.out.charge_current_limit = DeciAmps(0);
            bus.run_for(Duration::from_millis(1500));
            let t = bus.inverter.told().unwrap();
            assert_eq!((t.charge_limit, t.charge_forbidden), (DeciAmps(0), true), "{o:?}");
            assert_eq!((t.discharge_limit, t.discharge_forbidden), (DeciAmps(2345), false), "{o:?}");
            bus.inverter.set_demand(bus.now, Watts(3000));
            assert_eq!(bus.inverter.current(), DeciAmps(0));
            bus.inverter.set_demand(bus.now, Watts(-3000));
            assert_eq!(bus.inverter.current(), current_for_power(Watts(-3000), DeciVolts(3812)));

            bus.out.discharge_current_limit = DeciAmps(0);
            bus.run_for(Duration::from_secs(1));
            let t = bus.inverter.told().unwrap();
            assert_eq!((t.discharge_limit, t.discharge_forbidden), (DeciAmps(0), true), "{o:?}");
            assert_eq!(bus.inverter.current(), DeciAmps(0));

            bus.out = Output { data_valid: false, ..output() };
            bus.run_for(Duration::from_secs(1));
            let t = bus.inverter.told().unwrap();
            assert!(t.charge_forbidden && t.discharge_forbidden);
            assert_eq!((t.charge_limit, t.discharge_limit), (DeciAmps(0), DeciAmps(0)));
        }
    }

    #[test]
    fn the_ferroamp_refuses_nmc_cells_unless_they_are_lfp_presented_and_sends_only_polls() {
        let params = PylonInverterParams::for_preset(Preset::Ferroamp);
        // The preset's wire settings without its LFP presentation: the 3.94-4.01 V cells are refused.
        let mut bus = Bus::new(params.options);
        bus.inverter = PylonInverter::new(params, Instant::ZERO);
        bus.run_for(Duration::from_millis(1500));
        assert_eq!(bus.inverter.state(), InverterState::Faulted);
        // The preset itself maps them into the LFP window.
        bus.battery = PylonCan::with_preset(Preset::Ferroamp);
        bus.run_for(Duration::from_secs(1));
        assert_eq!(bus.inverter.state(), InverterState::Running);
        let t = bus.inverter.told().unwrap();
        assert!(t.cell_min >= LFP_CELL_WINDOW.0 && t.cell_max <= LFP_CELL_WINDOW.1, "{t:?}");
        assert_eq!(t.charge_limit, DeciAmps(1234));
        // Only 0x4200 polls: no wake, charge command or heartbeat.
        let mut inv = PylonInverter::new(params, Instant::ZERO);
        let ids: Vec<u32> =
            core::iter::from_fn(|| inv.poll_transmit(Instant::ZERO)).filter_map(|f| f.extended_id()).collect();
        assert_eq!(ids, [0x4200, 0x4200]);
    }

    #[test]
    fn demand_is_clamped_to_the_told_limits() {
        let mut bus = Bus::new(PylonCanOptions::default());
        bus.inverter.set_demand(Instant::ZERO, Watts(50_000));
        assert_eq!(bus.inverter.current(), DeciAmps(0)); // still Waiting
        bus.run_for(Duration::from_millis(100));
        assert_eq!(bus.inverter.current(), DeciAmps(1234));
        bus.inverter.set_demand(bus.now, Watts(-150_000));
        assert_eq!(bus.inverter.current(), DeciAmps(-2345));
        bus.inverter.set_demand(bus.now, Watts(1000));
        assert_eq!(bus.inverter.current(), current_for_power(Watts(1000), DeciVolts(3812)));
    }

    #[test]
    fn silent_battery_faults_the_inverter_then_it_recovers() {
        let mut bus = Bus::new(PylonCanOptions::default());
        bus.run_for(Duration::from_secs(5));
        let last = bus.inverter.told().unwrap().at;
        assert_eq!(last, secs(5));
        bus.inverter.set_demand(bus.now, Watts(2000));
        assert_ne!(bus.inverter.current(), DeciAmps(0));

        bus.battery_deaf = true;
        let timeout = PylonInverterParams::default().answer_timeout;
        bus.run_until(last + Duration::from_millis(timeout.as_millis() - 1));
        assert_eq!(bus.inverter.state(), InverterState::Running);
        bus.run_until(last + timeout);
        assert_eq!(bus.inverter.state(), InverterState::Faulted);
        assert_eq!(bus.inverter.current(), DeciAmps(0));

        bus.battery_deaf = false;
        bus.run_for(Duration::from_secs(1));
        assert_eq!(bus.inverter.state(), InverterState::Running);
        assert_ne!(bus.inverter.current(), DeciAmps(0));
    }

    #[test]
    fn silent_inverter_stops_last_heard() {
        let mut bus = Bus::new(PylonCanOptions { address: 1, ..Default::default() });
        bus.run_for(Duration::from_secs(3));
        let heard = bus.battery.last_heard().unwrap();
        assert_eq!(heard, secs(3));
        bus.inverter.set_silent(true);
        bus.run_for(Duration::from_secs(90));
        assert_eq!(bus.battery.last_heard(), Some(heard));
        assert_eq!(bus.inverter.state(), InverterState::Faulted);
        bus.inverter.set_silent(false);
        bus.run_for(Duration::from_millis(10));
        assert!(bus.battery.last_heard().unwrap() > heard);
        assert_eq!(bus.inverter.state(), InverterState::Running);
    }

    #[test]
    fn polls_at_the_real_cadence() {
        let mut inv = PylonInverter::new(PylonInverterParams::default(), Instant::ZERO);
        let mut polls = Vec::new();
        let mut now = Instant::ZERO;
        while now <= Instant::from_millis(10_500) {
            while let Some(f) = inv.poll_transmit(now) {
                if f.extended_id() == Some(0x4200) {
                    polls.push((now.as_millis(), f.data()[0]));
                }
            }
            now = inv.poll_timeout().unwrap();
        }
        let ensemble: Vec<u64> = polls.iter().filter(|p| p.1 == 0).map(|p| p.0).collect();
        assert_eq!(ensemble, (0..=10).map(|s| s * 1000).collect::<Vec<_>>());
        let equipment: Vec<u64> = polls.iter().filter(|p| p.1 == 2).map(|p| p.0).collect();
        assert_eq!(equipment, [0, 10_000]);
    }

    fn secs(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    proptest::proptest! {
        #[test]
        fn any_frame_is_taken_without_panic(
            raw in 0u32..0x2000_0000,
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=8),
            address in proptest::prelude::any::<u8>(),
            offset_30k in proptest::prelude::any::<bool>(),
        ) {
            let options = PylonCanOptions { address, offset_30k, ..Default::default() };
            let mut inv = PylonInverter::new(PylonInverterParams { options, ..Default::default() }, Instant::ZERO);
            let f = CanFrame::extended(raw, &data).unwrap();
            inv.handle_frame(Instant::from_millis(1), &f);
            let _ = inv.current();
            proptest::prop_assert!(inv.told().is_none());
        }
    }
}
