//! Growatt HV over CAN: DBE answers a Growatt hybrid (SPH/SPA TL3 BH-UP) as the Growatt ARK HV battery it
//! expects.
//!
//! Classic CAN with 29-bit ids at 500 kbit/s, **big-endian** words. The inverter (the "PCS") sends three frames
//! every second: `0x3010` heartbeat, `0x3020` control, `0x3030` time. The battery says nothing until the first of
//! them, then sends its 20 frames once a second, in 5 batches of 4, 10 ms apart:
//!
//! | batch | frames |
//! | --- | --- |
//! | 0 | `0x3110` limits and status, `0x3120` protection and alarm bitmaps, `0x3130` pack, `0x3140` capacity |
//! | 1 | `0x3150` working parameters, `0x3160` cell-voltage positions, `0x3170` temperature positions, `0x3180` counts |
//! | 2 | `0x3190` cell voltages, `0x3200` manufacturer and cell cut-off, `0x3210` upgrade, `0x3220` derating |
//! | 3 | `0x3230` serial (one of 3 parts per second), `0x3240` lifetime energy, `0x3250` fault history, `0x3260` debug |
//! | 4 | `0x3270` debug, `0x3280` version, `0x3290` series, `0x3F00` internal alarms |
//!
//! # Sources
//! - **[BE]** dalathegreat/Battery-Emulator `Software/src/inverter/GROWATT-HV-CAN.{h,cpp}` (HEAD of 2026-08; its
//!   header names "Growatt BMS CAN-Bus-protocol High Voltage V1.10 2023-11-06", 29-bit, 500 kbit/s, big-endian,
//!   and it was tested with an SPH10000TL3 BH-UP): every id, the batches and their 10 ms spacing, the 1 s cycle,
//!   the byte position, scale and stated range of each field, the inverter frames' fields and their 1000 ms period.
//! - **[BE-ARK]** the same repository's `Software/src/battery/GROWATT-HV-ARK-BATTERY.{h,cpp}` (PR #2018, the
//!   inverter's side of the same protocol, "V1.10.x", tested between a real SPH and a real ARK 10 kWh pack): the
//!   `0x3110` byte 7 bits ("Table 1": bit 2 fault, bit 4 sleeping, bit 5 no discharge, bit 6 no charge), `0xAA` as
//!   the value of the `0x3020` commands, `0x3130` byte 7 bit 7 being a flag.
//! - **[CAP]** ai-republic/bms-to-inverter issue #85 (ErikssonPer, 2024-12-20): a capture of a real SPH10000TL3
//!   BH-UP with an ARK BMS. `0x3110 08 E0 00 00 00 FA 30 41` (227.2 V, 0 A charge at 100 % SOC, 25 A discharge,
//!   byte 6 `0x30`, byte 7 `0x41` = idle + no charge) agrees with [BE]'s layout; the inverter's `0x3010` counts up
//!   in bytes 0-1 with byte 2 `0x14`; its `0x3020` is all zeros in normal operation; its `0x3030` reads
//!   `18 0C 13 17 1C 17 00 01`, i.e. 2024-12-19 23:28:23 as YY MM DD hh mm ss, then working status 01.
//! - **[AR]** ai-republic/bms-to-inverter `inverter-growatt-hv-can/.../GrowattHVInverterCANProcessor.java`: the
//!   only public bit layout of the `0x3120` bitmaps (two big-endian 32-bit words, protection in bytes 0-3, alarm in
//!   4-7). It names no source; **unverified** against an inverter (see below).
//! - The Growatt document itself is not public (not in Sleeper85/esphome-yambms `documents/` nor elsewhere this
//!   project could search); [BE] transcribes its field names and ranges into comments, which is what DBE uses.
//! - Link timeout: [BE]'s `CAN_STILL_ALIVE` (60 s, `devboard/utils/types.h`), as for the other protocols; the
//!   inverter frames come every second, so this is 60 missed heartbeats. The supervisor zeroes both limits when
//!   it expires (`CAN_INVERTER_MISSING`).
//!
//! # Battery → inverter (8 bytes, big-endian words)
//! - `0x3110`: w0 max charge voltage 0.1 V (0-1000 V); w1 charge current limit 0.1 A (0-300 A); w2 discharge
//!   current limit 0.1 A; b6 bit 5 ISO detection done, bit 4 battery status normal; b7 bits 0-1 state (01 idle,
//!   10 charging, 11 discharging), bit 2 fault, bit 5 **no discharge**, bit 6 **no charge**.
//! - `0x3120`: bytes 0-3 protection word, 4-7 alarm word ([AR]'s bits, see below).
//! - `0x3130`: w0 pack voltage 0.1 V; w1 current 0.1 A signed (+ = charging, as [BE]'s datalayer); w2 highest cell
//!   temperature 0.1 °C signed; b6 SOC 1 %; b7 SOH 1 % (bit 7 a flag, never set).
//! - `0x3140`: w0 remaining and w1 full capacity in 10 mAh; b4-5 manufacturer "GT"; w3 cycle count (0).
//! - `0x3150`: w0 discharge cut-off voltage 0.1 V; w1 "main control unit temperature" 0.1 °C (the highest cell
//!   temperature, as [BE]); w2 total cells; w3 modules in series (1, as [BE] when it knows the real cell count).
//! - `0x3160`: b0-1 fault flags (0); b2/b3 module/cell of the highest cell voltage, b4/b5 of the lowest (1-based);
//!   w3 lowest cell temperature 0.1 °C signed.
//! - `0x3170`: b0-3 module/cell of the highest and lowest temperature ([BE]'s 1, 1, 1, 2: the view has no sensor
//!   positions); b4 "actual capacity" [BE]'s 50 (its unit unknown: **unverified**); b5-7 0.
//! - `0x3180`: "GT"; w1 packs in parallel (1); w2 total cells; w3 0.
//! - `0x3190`: b0 battery status (0, [BE]: "LFP, no forced charge"); b1-2 highest, b3-4 lowest cell mV; b5-7 0.
//! - `0x3200`: "GT"; b2 hardware revision 1; w2 circulating current 0; w3 cell charge cut-off mV (the design's).
//! - `0x3220`: b0-4 derating, fault status and forced-charge mark (0); b5-6 rated energy 0.1 kWh; b7 0.
//! - `0x3230`: b0 part 0/1/2 (one per second, cycling); b1-7 the serial (zeros, as [BE]: DBE has none).
//! - `0x3240`: b0 pack 1, b1-3 lifetime discharged 0.1 kWh (24 bits); b4 pack 1, b5-7 lifetime charged.
//! - `0x3210`, `0x3250`-`0x3290`, `0x3F00`: zeros (no upgrade, no fault history, no debug data, no version).
//!
//! # Inverter → battery (decoded, exposed as [`PcsState`])
//! - `0x3010`: w0 send counter; b2 safety specification (region).
//! - `0x3020`: b0 charging command, b1 discharging command, b2 shield external communication failure, b3 clear
//!   battery fault, b4 ISO detection command, b7 sleep / wake-up (`0xAA` = the command given, [BE-ARK]).
//! - `0x3030`: b0-5 the inverter's clock, b7 working status (00 standby, 01 operating).
//!
//! The `0x3020` commands are **not** a contactor permission: nothing in the sources says the battery must keep its
//! relays open without them, and a real SPH sends all zeros while it charges and discharges [CAP]. So
//! [`CanInverter::contactor_permission`] is `None`, the commands are shown as they are, and the supervisor decides.
//!
//! # Where DBE differs from [BE], and why
//! - **The bitmaps carry the supervisor's alarms.** [BE] sends `0x3120` (and `0x3160`'s fault flags) as zeros: the
//!   inverter is never told why it gets 0 A. DBE sets a protection bit for each of `view.alarms()` and an alarm
//!   bit for each of `view.warnings()`, so the inverter's display and log name the condition. The layout is
//!   [AR]'s (the only one published), unverified: should it be wrong, the inverter shows a wrong reason, but the
//!   0 A limits and the forbidden flags in `0x3110` (layout confirmed by [CAP]) still stop it.
//! - Limits, voltages and SOC come from the supervisor's view (BE: its design voltages, or the user's). When the
//!   data is not valid both limits are 0, both forbidden bits set, the fault bit set and "battery status normal"
//!   cleared. No charge is set when the charge limit is 0, the data invalid, or the SOC 100 % or unknown; no
//!   discharge when the discharge limit is 0, the data invalid, or the SOC 0 % or unknown (BE: the same, with its
//!   FAULT state for invalid).
//! - The current limits saturate at the documented 300 A (a lower limit is the safe side).
//! - The fault bit (`0x3110` b7 bit 2) follows the supervisor's alarms and the data (BE: never set).
//! - `0x3030` is kept as six raw clock bytes: [BE] reads bytes 0-3 as a Unix time, [CAP] shows calendar bytes;
//!   DBE acts on neither.
//! - Lifetime energy in `0x3240` from the bridge's counters (BE: 0); rated energy from the supervisor's (SOC-window
//!   scaled) total energy, as BE's "reported" one.
//! - ISO detection (`0x3110` b6 bit 5) is sent as done, as [BE] and [CAP]: DBE measures no insulation; the pack's
//!   BMS does its own isolation check where it has one.
//!
//! # `0x3120` bits ([AR], unverified)
//! Protection word (bytes 0-3): 1 pack under-voltage, 2 pack over-voltage, 3 cell under-voltage, 4 cell
//! over-voltage, 6 charge over-current, 7 discharge over-current, 10 cell voltage difference, 11 other failure,
//! 12/13 charge/discharge under-temperature, 14/15 charge/discharge over-temperature. Alarm word (bytes 4-7): 0
//! internal communication, 2 cell voltage difference, 4/5 charge/discharge under-temperature, 6/7 charge/discharge
//! over-temperature, 9 pack under-voltage, 10 pack over-voltage, 11 cell under-voltage, 12 cell over-voltage,
//! 14/15 charge/discharge over-current. DBE's communication, BMS-fault and critical alarms are "other failure"
//! in the protection word.

use super::word::{clamp_u16, put_be as put, signed};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterView};
use crate::options::{DriverOptions, OptionField};
use crate::supervisor::Alarms;
use crate::time::{earliest, Duration, Instant, Periodic};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius};

/// One line for `dbe list`.
pub const SUPPORTS: &str = "Growatt SPH/SPA 4000-10000TL3 BH-UP hybrids (and others that expect a Growatt ARK HV \
                            battery on CAN: 29-bit 0x3010/0x3020/0x3030, 500 kbit/s); set the inverter's battery \
                            to the Growatt HV (ARK) lithium battery";

/// [BE]'s `CAN_STILL_ALIVE`: 60 s without an inverter frame and the link counts as lost.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// The whole set goes out once a second ([BE] `INTERVAL_1_S`).
pub const CYCLE_INTERVAL: Duration = Duration::from_secs(1);

/// Between two batches of four frames ([BE] `delay_between_batches_ms`).
pub const BATCH_INTERVAL: Duration = Duration::from_millis(10);

/// CAN identifiers (all extended).
pub mod id {
    pub const HEARTBEAT: u32 = 0x3010;
    pub const CONTROL: u32 = 0x3020;
    pub const TIME: u32 = 0x3030;

    pub const LIMITS: u32 = 0x3110;
    pub const PROTECTION: u32 = 0x3120;
    pub const PACK: u32 = 0x3130;
    pub const CAPACITY: u32 = 0x3140;
    pub const WORKING: u32 = 0x3150;
    pub const CELL_POSITIONS: u32 = 0x3160;
    pub const TEMPERATURE_POSITIONS: u32 = 0x3170;
    pub const COUNTS: u32 = 0x3180;
    pub const CELLS: u32 = 0x3190;
    pub const MANUFACTURER: u32 = 0x3200;
    pub const UPGRADE: u32 = 0x3210;
    pub const DERATING: u32 = 0x3220;
    pub const SERIAL: u32 = 0x3230;
    pub const LIFETIME: u32 = 0x3240;
    pub const FAULT_HISTORY: u32 = 0x3250;
    pub const DEBUG_A: u32 = 0x3260;
    pub const DEBUG_B: u32 = 0x3270;
    pub const VERSION: u32 = 0x3280;
    pub const SERIES: u32 = 0x3290;
    pub const INTERNAL_ALARMS: u32 = 0x3F00;

    /// The 20 frames in their 5 batches of 4 ([BE]'s order).
    pub const BATCHES: [[u32; 4]; 5] = [
        [LIMITS, PROTECTION, PACK, CAPACITY],
        [WORKING, CELL_POSITIONS, TEMPERATURE_POSITIONS, COUNTS],
        [CELLS, MANUFACTURER, UPGRADE, DERATING],
        [SERIAL, LIFETIME, FAULT_HISTORY, DEBUG_A],
        [DEBUG_B, VERSION, SERIES, INTERNAL_ALARMS],
    ];
}

/// Byte ranges of every field, per message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub mod heartbeat {
        pub const COUNTER: super::Field = 0..2;
        pub const SAFETY: usize = 2;
    }
    pub mod control {
        pub const CHARGE: usize = 0;
        pub const DISCHARGE: usize = 1;
        pub const SHIELD_EXTERNAL_FAILURE: usize = 2;
        pub const CLEAR_FAULT: usize = 3;
        pub const ISO_DETECTION: usize = 4;
        pub const SLEEP_WAKE: usize = 7;
    }
    pub mod time {
        pub const CLOCK: super::Field = 0..6;
        pub const WORKING: usize = 7;
    }
    pub mod limits {
        use super::Field;
        pub const MAX_VOLTAGE: Field = 0..2;
        pub const CHARGE_CURRENT: Field = 2..4;
        pub const DISCHARGE_CURRENT: Field = 4..6;
        pub const FLAGS: usize = 6;
        pub const BATTERY_NORMAL: u8 = 1 << 4;
        pub const ISO_DETECTED: u8 = 1 << 5;
        pub const STATUS: usize = 7;
        pub const IDLE: u8 = 0b01;
        pub const CHARGING: u8 = 0b10;
        pub const DISCHARGING: u8 = 0b11;
        pub const FAULT: u8 = 1 << 2;
        pub const NO_DISCHARGE: u8 = 1 << 5;
        pub const NO_CHARGE: u8 = 1 << 6;
    }
    pub mod protection {
        use super::Field;
        pub const PROTECTION: Field = 0..4;
        pub const ALARM: Field = 4..8;
    }
    pub mod pack {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const CURRENT: Field = 2..4;
        pub const TEMPERATURE_MAX: Field = 4..6;
        pub const SOC: usize = 6;
        pub const SOH: usize = 7;
    }
    pub mod capacity {
        use super::Field;
        pub const REMAINING: Field = 0..2;
        pub const FULL: Field = 2..4;
        pub const MANUFACTURER: Field = 4..6;
        pub const CYCLES: Field = 6..8;
    }
    pub mod working {
        use super::Field;
        pub const MIN_VOLTAGE: Field = 0..2;
        pub const CONTROL_TEMPERATURE: Field = 2..4;
        pub const CELLS: Field = 4..6;
        pub const MODULES_IN_SERIES: Field = 6..8;
    }
    pub mod cell_positions {
        pub const MAX_MODULE: usize = 2;
        pub const MAX_CELL: usize = 3;
        pub const MIN_MODULE: usize = 4;
        pub const MIN_CELL: usize = 5;
        pub const TEMPERATURE_MIN: super::Field = 6..8;
    }
    pub mod temperature_positions {
        /// Module and cell of the highest, then the lowest temperature.
        pub const POSITIONS: super::Field = 0..4;
        pub const ACTUAL_CAPACITY: usize = 4;
    }
    pub mod counts {
        use super::Field;
        pub const MANUFACTURER: Field = 0..2;
        pub const PACKS: Field = 2..4;
        pub const CELLS: Field = 4..6;
    }
    pub mod cells {
        use super::Field;
        pub const MAX_MV: Field = 1..3;
        pub const MIN_MV: Field = 3..5;
    }
    pub mod manufacturer {
        use super::Field;
        pub const NAME: Field = 0..2;
        pub const HARDWARE: usize = 2;
        pub const CELL_CUTOFF_MV: Field = 6..8;
    }
    pub mod derating {
        pub const RATED_ENERGY: super::Field = 5..7;
    }
    pub mod serial {
        pub const PART: usize = 0;
    }
    pub mod lifetime {
        use super::Field;
        pub const DISCHARGE_PACK: usize = 0;
        pub const DISCHARGED: Field = 1..4;
        pub const CHARGE_PACK: usize = 4;
        pub const CHARGED: Field = 5..8;
    }
}

/// [BE]'s constants.
mod constant {
    /// "GT", the manufacturer abbreviation [BE] sends.
    pub const MANUFACTURER: [u8; 2] = *b"GT";
    pub const MODULES_IN_SERIES: u16 = 1;
    pub const PACKS_IN_PARALLEL: u16 = 1;
    pub const HARDWARE_REVISION: u8 = 1;
    pub const TEMPERATURE_POSITIONS: [u8; 4] = [1, 1, 1, 2];
    pub const ACTUAL_CAPACITY: u8 = 50;
    /// The charge/discharge current range the document gives (0-300 A).
    pub const MAX_CURRENT_DA: i32 = 3000;
    /// [BE-ARK]: a command given.
    pub const COMMAND: u8 = 0xAA;
    pub const SERIAL_PARTS: u8 = 3;
}

/// No options: everything the protocol carries comes from the pack and the supervisor.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GrowattHvCanOptions {}

impl DriverOptions for GrowattHvCanOptions {
    const FIELDS: &'static [OptionField<Self>] = &[];
}

/// One command byte of `0x3020`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PcsCommand {
    /// `0x00`: nothing asked (what a real SPH sends in normal operation, [CAP]).
    None,
    /// `0xAA`: the command given ([BE-ARK]).
    Given,
    Unknown(u8),
}

impl PcsCommand {
    fn from_byte(b: u8) -> Self {
        match b {
            0x00 => PcsCommand::None,
            constant::COMMAND => PcsCommand::Given,
            other => PcsCommand::Unknown(other),
        }
    }
}

/// The inverter's `0x3020` control frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PcsControl {
    pub charge: PcsCommand,
    pub discharge: PcsCommand,
    pub shield_external_failure: PcsCommand,
    pub clear_fault: PcsCommand,
    pub iso_detection: PcsCommand,
    pub sleep_wake: PcsCommand,
}

impl PcsControl {
    pub fn parse(frame: &CanFrame) -> Result<Self, DecodeError> {
        use field::control::*;
        let d = require_len(frame, SLEEP_WAKE + 1)?;
        let c = |at: usize| PcsCommand::from_byte(d[at]);
        Ok(PcsControl {
            charge: c(CHARGE),
            discharge: c(DISCHARGE),
            shield_external_failure: c(SHIELD_EXTERNAL_FAILURE),
            clear_fault: c(CLEAR_FAULT),
            iso_detection: c(ISO_DETECTION),
            sleep_wake: c(SLEEP_WAKE),
        })
    }
}

/// The inverter's working status (`0x3030` byte 7).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PcsWorking {
    Standby,
    Operating,
    Unknown(u8),
}

/// What the inverter last said, frame by frame (for status and telemetry).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PcsState {
    /// `0x3010`: the send counter and the safety specification byte.
    pub heartbeat: Option<(u16, u8)>,
    pub control: Option<PcsControl>,
    /// `0x3030` bytes 0-5 as sent ([CAP]: YY MM DD hh mm ss; [BE]: a Unix time in bytes 0-3).
    pub clock: Option<[u8; 6]>,
    pub working: Option<PcsWorking>,
}

/// The Growatt ARK HV battery as the inverter sees it.
#[derive(Clone, Debug)]
pub struct GrowattHvCan {
    cycle: Periodic,
    /// The next batch of the current cycle and when it is due.
    batch: Option<(u8, Instant)>,
    queue: heapless::Deque<u32, 4>,
    /// When the queued batch fell due (what `poll_timeout` says while frames wait).
    queued_at: Option<Instant>,
    last_heard: Option<Instant>,
    serial_part: u8,
    pcs: PcsState,
}

impl GrowattHvCan {
    pub fn new(_options: GrowattHvCanOptions) -> Self {
        GrowattHvCan {
            cycle: Periodic::new(CYCLE_INTERVAL),
            batch: None,
            queue: heapless::Deque::new(),
            queued_at: None,
            last_heard: None,
            serial_part: 0,
            pcs: PcsState::default(),
        }
    }

    /// What the inverter last sent.
    pub fn pcs(&self) -> PcsState {
        self.pcs
    }

    fn encode(&mut self, id: u32, view: &InverterView<'_>) -> CanFrame {
        let mut buf = [0u8; 8];
        let valid = view.data_valid();
        let soc_percent = (view.soc().unwrap_or(BasisPoints::ZERO).clamped().0 / 100) as u8;
        let cell_max = view.cell_max();
        let cell_min = view.cell_min();
        match id {
            id::LIMITS => {
                use field::limits::*;
                let limit = |l: DeciAmps| if valid { clamp_u16(l.0.min(constant::MAX_CURRENT_DA) as i64) } else { 0 };
                let (charge, discharge) = (limit(view.charge_current_limit()), limit(view.discharge_current_limit()));
                put(&mut buf, MAX_VOLTAGE, view.max_charge_voltage().0);
                put(&mut buf, CHARGE_CURRENT, charge);
                put(&mut buf, DISCHARGE_CURRENT, discharge);
                let normal = valid && view.alarms().is_empty();
                buf[FLAGS] = ISO_DETECTED | if normal { BATTERY_NORMAL } else { 0 };
                let power = view.power().map_or(0, |p| p.0);
                buf[STATUS] = match power {
                    p if p > 1 => CHARGING,
                    p if p < -1 => DISCHARGING,
                    _ => IDLE,
                };
                if !normal {
                    buf[STATUS] |= FAULT;
                }
                let soc = view.soc();
                if charge == 0 || soc.is_none_or(|s| s.0 >= 10_000) {
                    buf[STATUS] |= NO_CHARGE;
                }
                if discharge == 0 || soc.is_none_or(|s| s.0 == 0) {
                    buf[STATUS] |= NO_DISCHARGE;
                }
            }
            id::PROTECTION => {
                use field::protection::*;
                buf[PROTECTION].copy_from_slice(&protection_word(view.alarms()).to_be_bytes());
                buf[ALARM].copy_from_slice(&alarm_word(view.warnings()).to_be_bytes());
            }
            id::PACK => {
                use field::pack::*;
                put(&mut buf, VOLTAGE, view.voltage().map_or(0, |v| v.0));
                put(&mut buf, CURRENT, signed(view.current().map_or(0, |c| c.0 as i64)));
                put(&mut buf, TEMPERATURE_MAX, deci_c(view.temperature_max()));
                buf[SOC] = soc_percent;
                buf[SOH] = view.soh().map_or(0, |s| (s.clamped().0 / 100) as u8);
            }
            id::CAPACITY => {
                use field::capacity::*;
                // 10 mAh = Wh × 1000 / dV ([BE]'s conversion, at the present pack voltage).
                let ah_10m = |wh: Option<crate::units::WattHours>| match (wh, view.voltage()) {
                    (Some(wh), Some(v)) if v.0 > 0 => clamp_u16(wh.0 as i64 * 1000 / v.0 as i64),
                    _ => 0,
                };
                put(&mut buf, REMAINING, ah_10m(view.remaining_energy()));
                put(&mut buf, FULL, ah_10m(view.total_energy()));
                buf[MANUFACTURER].copy_from_slice(&constant::MANUFACTURER);
                put(&mut buf, CYCLES, 0);
            }
            id::WORKING => {
                use field::working::*;
                put(&mut buf, MIN_VOLTAGE, view.min_discharge_voltage().0);
                put(&mut buf, CONTROL_TEMPERATURE, deci_c(view.temperature_max()));
                put(&mut buf, CELLS, view.cells_in_series());
                put(&mut buf, MODULES_IN_SERIES, constant::MODULES_IN_SERIES);
            }
            id::CELL_POSITIONS => {
                use field::cell_positions::*;
                let number = |c: Option<(usize, _)>| c.map_or(0, |(i, _)| (i + 1).min(u8::MAX as usize) as u8);
                buf[MAX_MODULE] = 1;
                buf[MAX_CELL] = number(cell_max);
                buf[MIN_MODULE] = 1;
                buf[MIN_CELL] = number(cell_min);
                put(&mut buf, TEMPERATURE_MIN, deci_c(view.temperature_min()));
            }
            id::TEMPERATURE_POSITIONS => {
                use field::temperature_positions::*;
                buf[POSITIONS].copy_from_slice(&constant::TEMPERATURE_POSITIONS);
                buf[ACTUAL_CAPACITY] = constant::ACTUAL_CAPACITY;
            }
            id::COUNTS => {
                use field::counts::*;
                buf[MANUFACTURER].copy_from_slice(&constant::MANUFACTURER);
                put(&mut buf, PACKS, constant::PACKS_IN_PARALLEL);
                put(&mut buf, CELLS, view.cells_in_series());
            }
            id::CELLS => {
                use field::cells::*;
                put(&mut buf, MAX_MV, cell_max.map_or(0, |c| c.1 .0));
                put(&mut buf, MIN_MV, cell_min.map_or(0, |c| c.1 .0));
            }
            id::MANUFACTURER => {
                use field::manufacturer::*;
                buf[NAME].copy_from_slice(&constant::MANUFACTURER);
                buf[HARDWARE] = constant::HARDWARE_REVISION;
                put(&mut buf, CELL_CUTOFF_MV, view.cell_voltage_range().1 .0);
            }
            id::DERATING => {
                let rated = view.total_energy().map_or(0, |e| e.0 as i64 / 100);
                put(&mut buf, field::derating::RATED_ENERGY, clamp_u16(rated));
            }
            id::SERIAL => {
                buf[field::serial::PART] = self.serial_part;
                self.serial_part = (self.serial_part + 1) % constant::SERIAL_PARTS;
            }
            id::LIFETIME => {
                use field::lifetime::*;
                let kwh_10 = |e: Option<crate::units::WattHours>| {
                    let v = e.map_or(0, |e| (e.0 as i64 / 100).clamp(0, 0xFF_FFFF)) as u32;
                    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
                };
                buf[DISCHARGE_PACK] = 1;
                buf[DISCHARGED].copy_from_slice(&kwh_10(view.discharged_energy()));
                buf[CHARGE_PACK] = 1;
                buf[CHARGED].copy_from_slice(&kwh_10(view.charged_energy()));
            }
            // 0x3210, 0x3250..0x3290, 0x3F00: zeros.
            _ => {}
        }
        CanFrame::ext8(id, buf)
    }
}

/// The protection word of `0x3120` for the supervisor's alarms ([AR]'s bits).
pub fn protection_word(a: Alarms) -> u32 {
    let mut w = 0u32;
    let mut set = |flag: Alarms, bits: &[u32]| {
        if a.intersects(flag) {
            bits.iter().for_each(|b| w |= 1 << b);
        }
    };
    set(Alarms::PACK_UNDER_VOLTAGE, &[1]);
    set(Alarms::PACK_OVER_VOLTAGE, &[2]);
    set(Alarms::CELL_UNDER_VOLTAGE, &[3]);
    set(Alarms::CELL_OVER_VOLTAGE, &[4]);
    set(Alarms::OVER_CURRENT, &[6, 7]);
    set(Alarms::CELL_DEVIATION, &[10]);
    set(Alarms::COMMUNICATION | Alarms::BMS_FAULT | Alarms::CRITICAL, &[11]);
    set(Alarms::UNDER_TEMPERATURE, &[12, 13]);
    set(Alarms::OVER_TEMPERATURE, &[14, 15]);
    w
}

/// The alarm word of `0x3120` for the supervisor's warnings ([AR]'s bits).
pub fn alarm_word(a: Alarms) -> u32 {
    let mut w = 0u32;
    let mut set = |flag: Alarms, bits: &[u32]| {
        if a.intersects(flag) {
            bits.iter().for_each(|b| w |= 1 << b);
        }
    };
    set(Alarms::COMMUNICATION, &[0]);
    set(Alarms::CELL_DEVIATION, &[2]);
    set(Alarms::UNDER_TEMPERATURE, &[4, 5]);
    set(Alarms::OVER_TEMPERATURE, &[6, 7]);
    set(Alarms::PACK_UNDER_VOLTAGE, &[9]);
    set(Alarms::PACK_OVER_VOLTAGE, &[10]);
    set(Alarms::CELL_UNDER_VOLTAGE, &[11]);
    set(Alarms::CELL_OVER_VOLTAGE, &[12]);
    set(Alarms::OVER_CURRENT, &[14, 15]);
    w
}

fn deci_c(t: Option<DeciCelsius>) -> u16 {
    t.unwrap_or(DeciCelsius::ZERO).0 as u16
}

impl CanInverter for GrowattHvCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.is_remote() {
            return Ok(FrameUse::Ignored);
        }
        match frame.extended_id() {
            Some(id::HEARTBEAT) => {
                use field::heartbeat::*;
                let d = require_len(frame, SAFETY + 1)?;
                self.pcs.heartbeat = Some((u16::from_be_bytes([d[COUNTER.start], d[COUNTER.start + 1]]), d[SAFETY]));
            }
            Some(id::CONTROL) => self.pcs.control = Some(PcsControl::parse(frame)?),
            Some(id::TIME) => {
                use field::time::*;
                let d = require_len(frame, WORKING + 1)?;
                let mut clock = [0u8; 6];
                clock.copy_from_slice(&d[CLOCK]);
                self.pcs.clock = Some(clock);
                self.pcs.working = Some(match d[WORKING] {
                    0 => PcsWorking::Standby,
                    1 => PcsWorking::Operating,
                    other => PcsWorking::Unknown(other),
                });
            }
            _ => return Ok(FrameUse::Ignored),
        }
        if self.last_heard.is_none() {
            // The inverter's first word: the first set goes out at once.
            self.cycle.start_at(now);
        }
        self.last_heard = Some(now);
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, now: Instant, view: &InverterView<'_>) -> Option<CanFrame> {
        if self.queue.is_empty() {
            if self.cycle.poll(now) {
                // A new cycle starts over even if the last one was cut short.
                self.batch = Some((0, now));
            }
            if let Some((n, at)) = self.batch.filter(|&(_, at)| at <= now) {
                for id in id::BATCHES[n as usize] {
                    // Cannot fail: the queue holds exactly one batch and is empty here.
                    let _ = self.queue.push_back(id);
                }
                self.queued_at = Some(at);
                self.batch = (n + 1 < id::BATCHES.len() as u8).then(|| (n + 1, at + BATCH_INTERVAL));
            }
        }
        let id = self.queue.pop_front()?;
        if self.queue.is_empty() {
            self.queued_at = None;
        }
        Some(self.encode(id, view))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.queued_at.is_some() {
            return self.queued_at;
        }
        earliest(self.cycle.next_at(), self.batch.map(|(_, at)| at))
    }

    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }
}

#[cfg(test)]
mod tests {
    //! The view is made up; the expected bytes are worked out by hand from the layout in the module doc ([BE]
    //! GROWATT-HV-CAN.{h,cpp} at HEAD for positions and scales, [BE-ARK] and [CAP] for the 0x3110 bits, [AR] for
    //! the 0x3120 bits), field by field. The inverter frames are [CAP]'s captured bytes where it has them.
    use super::*;
    use crate::energy::EnergyCounters;
    use crate::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use crate::supervisor::Output;
    use crate::units::{DeciVolts, MilliVolts, WattHours};

    const T0: Instant = Instant::ZERO;

    fn model() -> BatteryModel {
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96, // 0x0060
            max_pack_voltage: DeciVolts(4055),
            min_pack_voltage: DeciVolts(2400),
            max_cell_voltage: MilliVolts(4200), // 0x1068
            min_cell_voltage: MilliVolts(3000),
            max_cell_deviation: MilliVolts(500),
        });
        m.pack_voltage = Some(Reading::new(DeciVolts(3984), T0)); // 0x0F90
        m.current = Some(Reading::new(DeciAmps(-125), T0)); // 0xFF83: discharging
        m.temperature_min = Some(Reading::new(DeciCelsius(-52), T0)); // 0xFFCC
        m.temperature_max = Some(Reading::new(DeciCelsius(231), T0)); // 0x00E7
        m.soh = Some(Reading::new(BasisPoints(9150), T0)); // 91 % = 0x5B
        let mut cells = [MilliVolts(3900); 96];
        cells[10] = MilliVolts(3600); // lowest: cell 11 = 0x0B, 0x0E10 mV
        cells[42] = MilliVolts(4000); // highest: cell 43 = 0x2B, 0x0FA0 mV
        m.cells.set_voltages(T0, &cells);
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(5012)),              // 50 % = 0x32
            total_energy: Some(WattHours(24_000)),     // 24e6 / 3984 = 6024 = 0x1788 (10 mAh); 240 = 0x00F0 (0.1 kWh)
            remaining_energy: Some(WattHours(12_345)), // 12_345_000 / 3984 = 3098 = 0x0C1A
            charge_current_limit: DeciAmps(250),       // 0x00FA
            discharge_current_limit: DeciAmps(300),    // 0x012C
            max_charge_voltage: DeciVolts(4000),       // 0x0FA0
            min_discharge_voltage: DeciVolts(3000),    // 0x0BB8
            data_valid: true,
            ..Output::default()
        }
    }

    fn ext(id: u32, data: &[u8]) -> CanFrame {
        CanFrame::extended(id, data).unwrap()
    }

    /// One whole second of sending after the inverter's first heartbeat at `T0`.
    fn one_set(g: &mut GrowattHvCan, view: &InverterView<'_>) -> Vec<(u64, CanFrame)> {
        let mut sent = Vec::new();
        while let Some(at) = g.poll_timeout().filter(|t| t.as_millis() < 1000) {
            while let Some(f) = g.poll_transmit(at, view) {
                sent.push((at.as_millis(), f));
            }
        }
        sent
    }

    fn started() -> GrowattHvCan {
        let mut g = GrowattHvCan::new(GrowattHvCanOptions::default());
        let used = g.handle_frame(T0, &ext(id::HEARTBEAT, &[0x0E, 0xEF, 0x14, 0, 0, 0, 0, 0]));
        assert_eq!(used, Ok(FrameUse::Used));
        g
    }

    fn frames(m: &BatteryModel, out: &Output) -> Vec<(u32, [u8; 8])> {
        let mut g = started();
        let view = InverterView::new(m, out);
        one_set(&mut g, &view).into_iter().map(|(_, f)| (f.extended_id().unwrap(), *f.data8())).collect()
    }

    fn find(frames: &[(u32, [u8; 8])], id: u32) -> [u8; 8] {
        frames.iter().find(|(i, _)| *i == id).unwrap_or_else(|| panic!("{id:#x} not sent")).1
    }

    #[test]
    fn silent_until_the_inverter_speaks_then_20_frames_in_5_batches_each_second() {
        let mut g = GrowattHvCan::new(GrowattHvCanOptions::default());
        let (m, out) = (model(), output());
        let view = InverterView::new(&m, &out);
        assert_eq!(g.poll_timeout(), None);
        assert!(g.poll_transmit(Instant::from_millis(5000), &view).is_none(), "a battery that talks first");
        let mut g = started();
        let sent = one_set(&mut g, &view);
        let got: Vec<(u64, u32)> = sent.iter().map(|(t, f)| (*t, f.extended_id().unwrap())).collect();
        let want: Vec<(u64, u32)> =
            id::BATCHES.iter().enumerate().flat_map(|(k, b)| b.iter().map(move |&i| (k as u64 * 10, i))).collect();
        assert_eq!(got, want);
        assert!(sent.iter().all(|(_, f)| f.len() == 8));
        // The next set one second after the first.
        assert_eq!(g.poll_timeout(), Some(Instant::from_millis(1000)));
    }

    #[test]
    fn limits_and_status_0x3110() {
        let f = frames(&model(), &output());
        // 400.0 V, 25.0 A, 30.0 A; ISO detected + battery normal; discharging (11).
        assert_eq!(find(&f, 0x3110), [0x0F, 0xA0, 0x00, 0xFA, 0x01, 0x2C, 0x30, 0x03]);
    }

    #[test]
    fn capture_0x3110_layout_reads_as_cap_says() {
        // [CAP]: 227.2 V, 0 A charge (full), 25 A discharge, battery normal + ISO, idle + no charge.
        let mut m = model();
        m.current = Some(Reading::new(DeciAmps(0), T0));
        let out = Output {
            soc: Some(BasisPoints(10_000)),
            max_charge_voltage: DeciVolts(2272),
            charge_current_limit: DeciAmps(0),
            discharge_current_limit: DeciAmps(250),
            ..output()
        };
        assert_eq!(find(&frames(&m, &out), 0x3110), [0x08, 0xE0, 0x00, 0x00, 0x00, 0xFA, 0x30, 0x41]);
    }

    #[test]
    fn forbidden_flags_follow_each_zero_limit_and_invalid_data_forbids_both() {
        let f = frames(&model(), &Output { discharge_current_limit: DeciAmps(0), ..output() });
        assert_eq!(find(&f, 0x3110)[4..], [0x00, 0x00, 0x30, 0x03 | 0x20], "no discharge");
        let f = frames(&model(), &Output { charge_current_limit: DeciAmps(0), ..output() });
        assert_eq!(find(&f, 0x3110)[2..], [0x00, 0x00, 0x01, 0x2C, 0x30, 0x03 | 0x40], "no charge");
        // Stale data: both limits 0 whatever the output says, both forbidden, fault, not normal.
        let f = frames(&model(), &Output { data_valid: false, alarms: Alarms::COMMUNICATION, ..output() });
        assert_eq!(find(&f, 0x3110), [0x0F, 0xA0, 0, 0, 0, 0, 0x20, 0x03 | 0x04 | 0x20 | 0x40]);
        // The limits saturate at the documented 300 A.
        let f = frames(&model(), &Output { charge_current_limit: DeciAmps(4500), ..output() });
        assert_eq!(find(&f, 0x3110)[2..4], [0x0B, 0xB8]);
    }

    #[test]
    fn supervisor_alarms_fill_the_0x3120_bitmaps() {
        assert_eq!(find(&frames(&model(), &output()), 0x3120), [0; 8], "no alarms, no bits");
        let out = Output {
            alarms: Alarms::CELL_OVER_VOLTAGE | Alarms::OVER_TEMPERATURE, // bits 4, 14, 15 = 0x0000_C010
            warnings: Alarms::CELL_DEVIATION | Alarms::PACK_UNDER_VOLTAGE, // bits 2, 9 = 0x0000_0204
            ..output()
        };
        let f = frames(&model(), &out);
        assert_eq!(find(&f, 0x3120), [0x00, 0x00, 0xC0, 0x10, 0x00, 0x00, 0x02, 0x04]);
        // An alarm is a fault: the status byte says so and "battery normal" is cleared.
        assert_eq!(find(&f, 0x3110)[6..], [0x20, 0x03 | 0x04]);
        assert_eq!(protection_word(Alarms::BMS_FAULT | Alarms::CRITICAL | Alarms::COMMUNICATION), 1 << 11);
        assert_eq!(protection_word(Alarms::OVER_CURRENT | Alarms::UNDER_TEMPERATURE), 0x30C0);
        // Bits 0, 2, 4-7, 9-12, 14, 15.
        assert_eq!(alarm_word(Alarms::all()), 0xDEF5);
    }

    #[test]
    fn pack_capacity_and_working_parameters() {
        let f = frames(&model(), &output());
        // 398.4 V, -12.5 A, 23.1 °C, 50 %, 91 %.
        assert_eq!(find(&f, 0x3130), [0x0F, 0x90, 0xFF, 0x83, 0x00, 0xE7, 0x32, 0x5B]);
        // 30.98 Ah, 60.24 Ah, "GT", 0 cycles.
        assert_eq!(find(&f, 0x3140), [0x0C, 0x1A, 0x17, 0x88, 0x47, 0x54, 0x00, 0x00]);
        // 300.0 V cut-off, 23.1 °C, 96 cells, 1 module.
        assert_eq!(find(&f, 0x3150), [0x0B, 0xB8, 0x00, 0xE7, 0x00, 0x60, 0x00, 0x01]);
    }

    #[test]
    fn cell_and_temperature_positions_counts_and_voltages() {
        let f = frames(&model(), &output());
        // Highest cell 43, lowest cell 11 (both module 1); lowest temperature -5.2 °C.
        assert_eq!(find(&f, 0x3160), [0x00, 0x00, 0x01, 0x2B, 0x01, 0x0B, 0xFF, 0xCC]);
        assert_eq!(find(&f, 0x3170), [0x01, 0x01, 0x01, 0x02, 0x32, 0x00, 0x00, 0x00]);
        assert_eq!(find(&f, 0x3180), [0x47, 0x54, 0x00, 0x01, 0x00, 0x60, 0x00, 0x00]);
        assert_eq!(find(&f, 0x3190), [0x00, 0x0F, 0xA0, 0x0E, 0x10, 0x00, 0x00, 0x00]);
        // "GT", hardware rev 1, cell cut-off 4200 mV.
        assert_eq!(find(&f, 0x3200), [0x47, 0x54, 0x01, 0x00, 0x00, 0x00, 0x10, 0x68]);
    }

    #[test]
    fn derating_serial_lifetime_and_the_zero_frames() {
        let (m, out) = (model(), output());
        let energy = EnergyCounters::restored(WattHours(1_234_567), WattHours(2_000_000));
        let view = InverterView::new(&m, &out).with_energy(&energy);
        let mut g = started();
        let f: Vec<(u32, [u8; 8])> =
            one_set(&mut g, &view).into_iter().map(|(_, f)| (f.extended_id().unwrap(), *f.data8())).collect();
        // Rated energy 24.0 kWh = 240 × 0.1 kWh.
        assert_eq!(find(&f, 0x3220), [0, 0, 0, 0, 0, 0x00, 0xF0, 0]);
        // Discharged 2 000 kWh = 20 000 × 0.1 kWh = 0x004E20; charged 1 234.5 kWh = 12 345 = 0x003039.
        assert_eq!(find(&f, 0x3240), [0x01, 0x00, 0x4E, 0x20, 0x01, 0x00, 0x30, 0x39]);
        for id in [0x3210, 0x3250, 0x3260, 0x3270, 0x3280, 0x3290, 0x3F00] {
            assert_eq!(find(&f, id), [0; 8], "{id:#x}");
        }
        // The serial's three parts, one per second.
        assert_eq!(find(&f, 0x3230), [0; 8]);
        let mut parts = Vec::new();
        while let Some(at) = g.poll_timeout().filter(|t| t.as_millis() < 4000) {
            while let Some(fr) = g.poll_transmit(at, &view) {
                if fr.extended_id() == Some(id::SERIAL) {
                    parts.push(fr.data8()[0]);
                }
            }
        }
        assert_eq!(parts, [1, 2, 0]);
    }

    #[test]
    fn inverter_frames_are_decoded() {
        let mut g = started();
        assert_eq!(g.pcs().heartbeat, Some((0x0EEF, 0x14)), "[CAP]'s heartbeat");
        let t = Instant::from_millis(5);
        assert_eq!(
            g.handle_frame(t, &ext(0x3030, &[0x18, 0x0C, 0x13, 0x17, 0x1C, 0x17, 0x00, 0x01])),
            Ok(FrameUse::Used)
        );
        assert_eq!(g.pcs().clock, Some([0x18, 0x0C, 0x13, 0x17, 0x1C, 0x17]));
        assert_eq!(g.pcs().working, Some(PcsWorking::Operating));
        assert_eq!(g.handle_frame(t, &ext(0x3020, &[0; 8])), Ok(FrameUse::Used));
        let c = g.pcs().control.unwrap();
        assert_eq!((c.charge, c.discharge, c.sleep_wake), (PcsCommand::None, PcsCommand::None, PcsCommand::None));
        let _ = g.handle_frame(t, &ext(0x3020, &[0xAA, 0xAA, 0, 0x55, 0, 0, 0, 0xAA]));
        let c = g.pcs().control.unwrap();
        assert_eq!((c.charge, c.discharge, c.sleep_wake), (PcsCommand::Given, PcsCommand::Given, PcsCommand::Given));
        assert_eq!(c.clear_fault, PcsCommand::Unknown(0x55));
        assert_eq!(g.last_heard(), Some(t));
        // The commands are shown, not taken as a contactor permission.
        assert_eq!(g.contactor_permission(), None);
    }

    #[test]
    fn short_or_foreign_frames_change_nothing() {
        let mut g = GrowattHvCan::new(GrowattHvCanOptions::default());
        let t = Instant::from_millis(1);
        assert_eq!(
            g.handle_frame(t, &ext(0x3010, &[1, 2])),
            Err(DecodeError::WrongLength { id: 0x3010, expected: 3, got: 2 })
        );
        assert_eq!(
            g.handle_frame(t, &ext(0x3020, &[0xAA; 7])),
            Err(DecodeError::WrongLength { id: 0x3020, expected: 8, got: 7 })
        );
        assert_eq!(
            g.handle_frame(t, &ext(0x3030, &[])),
            Err(DecodeError::WrongLength { id: 0x3030, expected: 8, got: 0 })
        );
        assert_eq!(g.handle_frame(t, &CanFrame::standard(0x301, &[0; 8]).unwrap()), Ok(FrameUse::Ignored));
        assert_eq!(g.handle_frame(t, &ext(0x4200, &[0; 8])), Ok(FrameUse::Ignored), "the Pylon probe [CAP]");
        let remote = CanFrame::remote(embedded_can::ExtendedId::new(0x3010).unwrap(), 8).unwrap();
        assert_eq!(g.handle_frame(t, &remote), Ok(FrameUse::Ignored));
        assert_eq!((g.last_heard(), g.poll_timeout(), g.pcs()), (None, None, PcsState::default()));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_frame_is_handled_without_panic(
            raw in prop_oneof![0x3000u32..0x3040, 0u32..0x2000_0000],
            data in proptest::collection::vec(any::<u8>(), 0..=8),
            at in 0u64..200_000,
        ) {
            let mut g = GrowattHvCan::new(GrowattHvCanOptions::default());
            let now = Instant::from_millis(at);
            match g.handle_frame(now, &ext(raw, &data)) {
                Ok(FrameUse::Used) => prop_assert_eq!(g.last_heard(), Some(now)),
                _ => prop_assert_eq!(g.last_heard(), None),
            }
            let (m, out) = (model(), output());
            let view = InverterView::new(&m, &out);
            let mut n = 0;
            while g.poll_transmit(now, &view).is_some() {
                n += 1;
                prop_assert!(n <= 4, "one batch at a time");
            }
        }
    }
}
