//! SolaX Triple Power over CAN: DBE answers a SolaX X1/X3 (G4, Ultra, VAST) hybrid as a Triple Power HV battery.
//!
//! Classic CAN with 29-bit ids at 500 kbit/s, little-endian words. The inverter polls on `0x1871` about once a
//! second; the battery answers each poll with its set `0x187E`, `0x187A`, `0x1872`..`0x1878` and nothing else is
//! sent cyclically. The inverter also decides when the battery may connect, through a small state machine:
//!
//! ```text
//!  Announce --(poll = close request)--> WaitingForContactor --(next poll: 0x1801 sent)--> Closing
//!     ^                                                                                    |
//!     |                                                                               (next poll)
//!     +------------- open request, or 2 s without a valid poll ----------------- Closed <--+
//! ```
//!
//! In *Announce* every answer set ends with the `0x0100A001` announcement (no data bytes); in
//! *WaitingForContactor* with `0x1801` ("the battery will connect"); in *Closed* `0x1875` reports the contactor
//! closed. [`CanInverter::contactor_permission`] is `Some(true)` only in *Closed* and `Some(false)` from the start,
//! so the supervisor closes the contactors only once the inverter asked for it, and opens them when the inverter
//! asks to open or stops polling for 2 s.
//!
//! # Sources
//! - **[BE]** dalathegreat/Battery-Emulator `Software/src/inverter/SOLAX-CAN.{h,cpp}` (HEAD of 2026-07 and its
//!   history: ccb82232 "min/max cell voltage fix/rescale for IE102", 035849b3 remaining capacity, b3fa1054
//!   identity answers, a377a21d battery type option): ids, byte positions, scales, constants, the close/open
//!   payloads, the state machine, the 2 s timeout, the serial request and its 0x1881/0x1882 answers; its frame
//!   names come from rand12345/solax_can_bus.
//! - **[BE-wiki]** dalathegreat/Battery-Emulator-Wiki `docs/10-inverters/Solax.md`: the battery type / module count
//!   table (pre-2026 and ARM 1.57 firmware), that firmware 1.57 rejects type 80 (IE102), the 1 s poll cadence,
//!   the list of type codes.
//! - `CAN_STILL_ALIVE` = 60 s in [BE] `devboard/utils/types.h`: the inverter link timeout.
//!
//! # Inverter → battery (`0x1871`, 8 bytes)
//! Byte 0 = 0x01 or 0x02 is a valid poll (answered; restarts the 2 s timer). `02 00 01 00 01 00 00 00` asks the
//! battery to close its contactors, `02 00 01 00 00 00 00 00` to open them (byte 4 is the request).
//! `05 00 01 00 00 00 00 00` asks for the serial numbers. Byte 0 = 0x03 is heard and not answered.
//!
//! # Battery → inverter (all 8 bytes, little-endian)
//! - `0x1872` limits: w0 max voltage 0.1 V, w1 min voltage 0.1 V, w2 max charge current 0.1 A, w3 max discharge
//!   current 0.1 A.
//! - `0x1873` pack: w0 voltage 0.1 V, w1 current 0.1 A signed (positive = charging), b4 SOC 1 %, b5 0, w3 remaining
//!   energy 10 Wh.
//! - `0x1874` cells: w0 highest, w1 lowest temperature 0.1 °C signed; w2 highest, w3 lowest cell voltage **0.1 V,
//!   rescaled into 3.0..3.5 V** (see below).
//! - `0x1875` status: w0 average temperature 0.1 °C; b2 module count option; b4 contactor 0 = open, 1 = closed.
//! - `0x1876`: w0 highest temperature, w1 highest cell mV, w2 lowest temperature, w3 lowest cell mV.
//! - `0x1877`: b4 battery type option, b6 0x22 (firmware), b7 0x02 (master BMS).
//! - `0x1878`: w0 voltage 0.1 V; b4-7 total energy Wh (u32).
//! - `0x187A`: `01 50 00 00 00 00 00 00` ([BE] constant, "needed for Ultra").
//! - `0x187E`: b0-3 total energy Wh (u32), b4 SOH 1 %, b5 SOC 1 %.
//! - `0x1801`: `02 00 01 00 01 00 00 00`; `0x0100A001`: no data.
//! - `0x1881`/`0x1882` per slot 0..=modules: b0 slot, b1-7 seven ASCII characters. [BE] derives them from its
//!   ESP32's MAC so SolaX Cloud can tell batteries apart; the core has no MAC, so DBE sends `DBE` + `A`/`B` (the
//!   frame) + the slot in three digits. Two DBEs behind one SolaX Cloud account would share serials.
//!
//! # Cell voltages SolaX accepts
//! SolaX validates `0x1874`'s cell voltages against its LFP battery types: an NMC cell at 4.1 V gives IE102
//! ([BE] ccb82232). Like [BE], DBE maps the pack's design cell window linearly onto 3.0..3.5 V and sends it in
//! 0.1 V; unlike [BE] it clamps first, so a cell outside its design window reads 3.0 / 3.5 V rather than a value
//! SolaX refuses (the supervisor's own cell rules act on the real value either way). `0x1876` carries the real
//! millivolts, as [BE] sends them (it left that frame alone when fixing IE102 and users report it works).
//!
//! # Battery type and module count
//! SolaX checks the pack voltage against a range hard-coded per battery type and module count; outside it the
//! inverter stops with BattVoltFault. [`check_pack`] refuses a combination whose range does not hold the pack's
//! design maximum and nominal (middle) voltage, using [BE-wiki]'s table ([`VOLTAGE_RANGES`]); combinations the
//! table does not list are refused too (their range is unknown). The default is type 131 (TR25_P, 16S LFP modules)
//! with 7 modules (313.6..408.8 V), which holds a 96S pack and which ARM 1.57 firmware accepts. [BE]'s default is
//! type 81 with 0 modules, for which no range is published.
//!
//! # What DBE does not copy
//! [BE]'s "AlwaysClosed" and "LockAfterFirstClose" contactor workarounds (ignoring the inverter's open request)
//! are not offered: the inverter's request to open is always obeyed. Limits, voltages, SOC and energy come from
//! the supervisor's view; both currents are 0 when its data is not valid. Unknown values are sent as 0, except an
//! unknown SOH (99 %, as the Pylon CAN module explains).

use super::word::{clamp_u16, put_le as put, signed};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterView};
use crate::model::PackDesign;
use crate::options::{self, DriverOptions, OptionField, OptionKind, OptionValue};
use crate::time::{Duration, Instant};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts};

/// One line for `dbe list`.
pub const SUPPORTS: &str = "SolaX X1/X3 hybrids (G4, Ultra, VAST) that poll a Triple Power HV battery on CAN \
                            (29-bit 0x1871, 500 kbit/s); set the battery type and module count to fit the pack";

/// [BE]'s `CAN_STILL_ALIVE`: 60 s without an inverter frame and the link counts as lost.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// Without a valid poll for this long the permission is withdrawn and the state machine starts over ([BE]).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// CAN identifiers (all extended).
pub mod id {
    pub const POLL: u32 = 0x1871;
    pub const ANSWER: u32 = 0x1801;
    pub const LIMITS: u32 = 0x1872;
    pub const PACK: u32 = 0x1873;
    pub const CELLS: u32 = 0x1874;
    pub const STATUS: u32 = 0x1875;
    pub const PACK_TEMPERATURES: u32 = 0x1876;
    pub const BATTERY_TYPE: u32 = 0x1877;
    pub const PACK_STATS: u32 = 0x1878;
    pub const ULTRA_A: u32 = 0x187A;
    pub const ULTRA_E: u32 = 0x187E;
    pub const SERIAL_HEAD: u32 = 0x1881;
    pub const SERIAL_TAIL: u32 = 0x1882;
    pub const ANNOUNCE: u32 = 0x0100_A001;
}

/// Byte ranges of every field, per message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub mod poll {
        pub const KIND: usize = 0;
        pub const POLL_A: u8 = 0x01;
        pub const POLL_B: u8 = 0x02;
        pub const CLOSE: [u8; 8] = [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
        pub const OPEN: [u8; 8] = [0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
        pub const SERIAL: [u8; 8] = [0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
    }
    pub mod limits {
        use super::Field;
        pub const MAX_VOLTAGE: Field = 0..2;
        pub const MIN_VOLTAGE: Field = 2..4;
        pub const CHARGE_CURRENT: Field = 4..6;
        pub const DISCHARGE_CURRENT: Field = 6..8;
    }
    pub mod pack {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const CURRENT: Field = 2..4;
        pub const SOC: usize = 4;
        pub const REMAINING_10WH: Field = 6..8;
    }
    pub mod cells {
        use super::Field;
        pub const TEMPERATURE_MAX: Field = 0..2;
        pub const TEMPERATURE_MIN: Field = 2..4;
        pub const CELL_MAX_DV: Field = 4..6;
        pub const CELL_MIN_DV: Field = 6..8;
    }
    pub mod status {
        use super::Field;
        pub const TEMPERATURE_AVERAGE: Field = 0..2;
        pub const MODULES: usize = 2;
        pub const CONTACTOR: usize = 4;
    }
    pub mod pack_temperatures {
        use super::Field;
        pub const TEMPERATURE_MAX: Field = 0..2;
        pub const CELL_MAX_MV: Field = 2..4;
        pub const TEMPERATURE_MIN: Field = 4..6;
        pub const CELL_MIN_MV: Field = 6..8;
    }
    pub mod battery_type {
        pub const TYPE: usize = 4;
        pub const FIRMWARE: usize = 6;
        pub const FIRMWARE_OF: usize = 7;
    }
    pub mod pack_stats {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const TOTAL_WH: Field = 4..8;
    }
    pub mod ultra_e {
        use super::Field;
        pub const TOTAL_WH: Field = 0..4;
        pub const SOH: usize = 4;
        pub const SOC: usize = 5;
    }
}

/// [BE]'s constants.
mod constant {
    pub const ANSWER: [u8; 8] = [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
    pub const ULTRA_A: [u8; 8] = [0x01, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    /// 0x1877 byte 6: firmware version; byte 7: of the master BMS (0x02).
    pub const FIRMWARE: u8 = 0x22;
    pub const FIRMWARE_OF_MASTER: u8 = 0x02;
    /// The window [BE] rescales cell voltages into (mV).
    pub const CELL_WINDOW_MV: (i32, i32) = (3000, 3500);
}

/// An unknown SOH, in 1 %: [BE]'s datalayer default.
const UNKNOWN_SOH_PERCENT: u8 = 99;

/// A battery type / module count the inverter knows, with the pack voltage range it accepts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VoltageRange {
    pub battery_type: u8,
    pub modules: u8,
    pub min: DeciVolts,
    pub max: DeciVolts,
}

const fn range(battery_type: u8, modules: u8, min_dv: u16, max_dv: u16) -> VoltageRange {
    VoltageRange { battery_type, modules, min: DeciVolts(min_dv), max: DeciVolts(max_dv) }
}

/// TR25_P (type 131) modules: 16S LFP, 44.8 V / 58.4 V each ([BE-wiki] 2026 table: `n × 44.8 .. n × 58.4`).
const TR25_P: u8 = 131;
const TR25_P_MIN_DV: u16 = 448;
const TR25_P_MAX_DV: u16 = 584;

/// [BE-wiki]'s table. Type 131 with 2..=13 modules from its ARM 1.57 (2026) table, which supersedes the pre-2026
/// rows for 131 (7: 295-412 V, 8: 325-455 V, 10: 400-584 V; the newer ranges are the narrower, so the stricter
/// check). The other three are the pre-2026 rows; firmware 1.57 rejects type 80 (IE102), so it is listed for
/// older firmware only.
pub const VOLTAGE_RANGES: [VoltageRange; 15] = {
    let mut t = [
        range(80, 0, 2900, 4040),
        range(84, 4, 2250, 3150),
        range(91, 6, 1700, 2350),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
        range(0, 0, 0, 0),
    ];
    let mut n = 2;
    while n <= 13 {
        t[n as usize + 1] = range(TR25_P, n, n as u16 * TR25_P_MIN_DV, n as u16 * TR25_P_MAX_DV);
        n += 1;
    }
    t
};

/// The range of a combination, if the table lists it.
pub fn voltage_range(battery_type: u8, modules: u8) -> Option<VoltageRange> {
    VOLTAGE_RANGES.iter().copied().find(|r| r.battery_type == battery_type && r.modules == modules)
}

/// Why a battery type / module count does not fit the pack.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackMismatch {
    #[error(
        "battery type {battery_type} with {modules} modules has no published voltage range; use one of the \
         Battery-Emulator wiki's combinations (type 131 with 2..13 modules covers 89.6..759.2 V)"
    )]
    Unlisted { battery_type: u8, modules: u8 },
    #[error(
        "battery type {} with {} modules accepts {}..{}; this pack's design maximum is {} and its nominal \
         (middle) voltage {}",
        range.battery_type, range.modules, range.min, range.max, design_max, nominal
    )]
    OutOfRange { range: VoltageRange, design_max: DeciVolts, nominal: DeciVolts },
}

/// Whether the options' battery type and module count let the inverter accept this pack (see the module doc).
pub fn check_pack(options: &SolaxCanOptions, design: &PackDesign) -> Result<(), PackMismatch> {
    let Some(range) = voltage_range(options.battery_type, options.modules) else {
        return Err(PackMismatch::Unlisted { battery_type: options.battery_type, modules: options.modules });
    };
    let design_max = design.max_pack_voltage;
    let nominal = DeciVolts(((design.max_pack_voltage.0 as u32 + design.min_pack_voltage.0 as u32) / 2) as u16);
    let holds = |v: DeciVolts| range.min <= v && v <= range.max;
    if holds(design_max) && holds(nominal) {
        Ok(())
    } else {
        Err(PackMismatch::OutOfRange { range, design_max, nominal })
    }
}

/// Options. Defaults: see the module doc (type 131 × 7 rather than [BE]'s 81 × 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SolaxCanOptions {
    /// The battery type code sent in 0x1877 byte 4.
    pub battery_type: u8,
    /// The module count sent in 0x1875 byte 2 (and the number of serial slots, plus one).
    pub modules: u8,
}

impl Default for SolaxCanOptions {
    fn default() -> Self {
        SolaxCanOptions { battery_type: TR25_P, modules: 7 }
    }
}

impl SolaxCanOptions {
    /// The highest module count the wiki's table uses.
    pub const MAX_MODULES: u8 = 13;
}

impl DriverOptions for SolaxCanOptions {
    const FIELDS: &'static [OptionField<Self>] = &[
        OptionField {
            name: "battery_type",
            help: "The SolaX battery type code (decimal) DBE reports; with module_count it sets the pack voltage \
                   range the inverter accepts. 131 (TR25_P) works on current firmware; 80 is refused by ARM 1.57 \
                   (IE102). check-config refuses a combination that does not fit the pack.",
            kind: OptionKind::Integer { min: 0, max: 255, unit: "" },
            get: |o| OptionValue::Integer(o.battery_type.into()),
            set: |o, v| o.battery_type = options::byte(v),
        },
        OptionField {
            name: "modules",
            help: "The module count DBE reports (0x1875). With type 131 each module stands for 44.8..58.4 V: 7 for \
                   a 96S pack (313.6..408.8 V), 8 for 358.4..467.2 V.",
            kind: OptionKind::Integer { min: 0, max: SolaxCanOptions::MAX_MODULES as i64, unit: "" },
            get: |o| OptionValue::Integer(o.modules.into()),
            set: |o, v| o.modules = options::byte(v),
        },
    ];
}

/// Where the inverter's contactor state machine is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SolaxState {
    /// Announcing; the contactors must stay open.
    Announce,
    /// The inverter asked to close; the next poll is answered with 0x1801.
    WaitingForContactor,
    /// 0x1801 sent; the next poll moves to `Closed`.
    Closing,
    /// The inverter allows the contactors closed.
    Closed,
}

/// One frame the battery owes the inverter.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Answer {
    UltraE,
    UltraA,
    Limits,
    Pack,
    Cells,
    Status,
    PackTemperatures,
    BatteryType,
    PackStats,
    Announce,
    Connect,
    Serial { slot: u8, tail: bool },
}

const SET: [Answer; 9] = [
    Answer::UltraE,
    Answer::UltraA,
    Answer::Limits,
    Answer::Pack,
    Answer::Cells,
    Answer::Status,
    Answer::PackTemperatures,
    Answer::BatteryType,
    Answer::PackStats,
];
/// The set, one closing frame, and two serial frames per slot (at most `MAX_MODULES + 1` slots).
const QUEUE_LEN: usize = SET.len() + 1 + 2 * (SolaxCanOptions::MAX_MODULES as usize + 1);

/// The SolaX Triple Power battery as the inverter sees it.
#[derive(Clone, Debug)]
pub struct SolaxCan {
    options: SolaxCanOptions,
    state: SolaxState,
    queue: heapless::Deque<Answer, QUEUE_LEN>,
    queued_at: Option<Instant>,
    last_heard: Option<Instant>,
    last_poll: Option<Instant>,
    open_requests: u32,
}

impl SolaxCan {
    pub fn new(options: SolaxCanOptions) -> Self {
        SolaxCan {
            options,
            state: SolaxState::Announce,
            queue: heapless::Deque::new(),
            queued_at: None,
            last_heard: None,
            last_poll: None,
            open_requests: 0,
        }
    }

    pub fn options(&self) -> SolaxCanOptions {
        self.options
    }

    pub fn state(&self) -> SolaxState {
        self.state
    }

    /// How many times the inverter asked the contactors open (for telemetry).
    pub fn open_requests(&self) -> u32 {
        self.open_requests
    }

    fn enqueue(&mut self, now: Instant, answers: &[Answer]) {
        for &a in answers {
            if !self.queue.iter().any(|&q| q == a) {
                // Cannot fail: each answer at most once, and QUEUE_LEN counts them all.
                let _ = self.queue.push_back(a);
            }
        }
        if self.queued_at.is_none() && !self.queue.is_empty() {
            self.queued_at = Some(now);
        }
    }

    fn handle_poll(&mut self, now: Instant, payload: Option<&[u8; 8]>) {
        self.last_poll = Some(now);
        let is = |p: [u8; 8]| payload == Some(&p);
        self.enqueue(now, &SET);
        match self.state {
            SolaxState::Announce => {
                self.enqueue(now, &[Answer::Announce]);
                if is(field::poll::CLOSE) {
                    self.state = SolaxState::WaitingForContactor;
                }
            }
            SolaxState::WaitingForContactor => {
                self.enqueue(now, &[Answer::Connect]);
                self.state = SolaxState::Closing;
            }
            SolaxState::Closing => self.state = SolaxState::Closed,
            SolaxState::Closed => {
                if is(field::poll::OPEN) {
                    self.open_requests += 1;
                    self.state = SolaxState::Announce;
                }
            }
        }
    }

    fn encode(&self, answer: Answer, view: &InverterView<'_>) -> CanFrame {
        let mut buf = [0u8; 8];
        let valid = view.data_valid();
        let voltage = view.voltage().map_or(0, |v| v.0);
        let t_max = view.temperature_max().unwrap_or(DeciCelsius::ZERO).0;
        let t_min = view.temperature_min().unwrap_or(DeciCelsius::ZERO).0;
        let cell_max = view.cell_max().map(|c| c.1);
        let cell_min = view.cell_min().map(|c| c.1);
        let total_wh = view.total_energy().map_or(0, |e| e.0);
        let soc = percent(view.soc().unwrap_or(BasisPoints::ZERO));
        let id = match answer {
            Answer::Limits => {
                use field::limits::*;
                let limit = |l: DeciAmps| if valid { clamp_u16(l.0 as i64) } else { 0 };
                put(&mut buf, MAX_VOLTAGE, view.max_charge_voltage().0);
                put(&mut buf, MIN_VOLTAGE, view.min_discharge_voltage().0);
                put(&mut buf, CHARGE_CURRENT, limit(view.charge_current_limit()));
                put(&mut buf, DISCHARGE_CURRENT, limit(view.discharge_current_limit()));
                id::LIMITS
            }
            Answer::Pack => {
                use field::pack::*;
                put(&mut buf, VOLTAGE, voltage);
                put(&mut buf, CURRENT, signed(view.current().map_or(0, |c| c.0 as i64)));
                buf[SOC] = soc;
                let remaining = view.remaining_energy().map_or(0, |e| e.0 / 10);
                put(&mut buf, REMAINING_10WH, clamp_u16(remaining as i64));
                id::PACK
            }
            Answer::Cells => {
                use field::cells::*;
                put(&mut buf, TEMPERATURE_MAX, t_max as u16);
                put(&mut buf, TEMPERATURE_MIN, t_min as u16);
                let (lo, hi) = view.cell_voltage_range();
                put(&mut buf, CELL_MAX_DV, cell_max.map_or(0, |v| rescaled_dv(v, lo, hi)));
                put(&mut buf, CELL_MIN_DV, cell_min.map_or(0, |v| rescaled_dv(v, lo, hi)));
                id::CELLS
            }
            Answer::Status => {
                use field::status::*;
                put(&mut buf, TEMPERATURE_AVERAGE, ((t_max as i32 + t_min as i32) / 2) as i16 as u16);
                buf[MODULES] = self.options.modules;
                buf[CONTACTOR] = u8::from(self.state == SolaxState::Closed);
                id::STATUS
            }
            Answer::PackTemperatures => {
                use field::pack_temperatures::*;
                put(&mut buf, TEMPERATURE_MAX, t_max as u16);
                put(&mut buf, CELL_MAX_MV, cell_max.map_or(0, |v| v.0));
                put(&mut buf, TEMPERATURE_MIN, t_min as u16);
                put(&mut buf, CELL_MIN_MV, cell_min.map_or(0, |v| v.0));
                id::PACK_TEMPERATURES
            }
            Answer::BatteryType => {
                use field::battery_type::*;
                buf[TYPE] = self.options.battery_type;
                buf[FIRMWARE] = constant::FIRMWARE;
                buf[FIRMWARE_OF] = constant::FIRMWARE_OF_MASTER;
                id::BATTERY_TYPE
            }
            Answer::PackStats => {
                use field::pack_stats::*;
                put(&mut buf, VOLTAGE, voltage);
                buf[TOTAL_WH].copy_from_slice(&total_wh.to_le_bytes());
                id::PACK_STATS
            }
            Answer::UltraA => {
                buf = constant::ULTRA_A;
                id::ULTRA_A
            }
            Answer::UltraE => {
                use field::ultra_e::*;
                buf[TOTAL_WH].copy_from_slice(&total_wh.to_le_bytes());
                buf[SOH] = view.soh().map_or(UNKNOWN_SOH_PERCENT, percent);
                buf[SOC] = soc;
                id::ULTRA_E
            }
            Answer::Connect => {
                buf = constant::ANSWER;
                id::ANSWER
            }
            Answer::Announce => return CanFrame::extended(id::ANNOUNCE, &[]).expect("0x0100A001 is a valid id"),
            Answer::Serial { slot, tail } => {
                buf[0] = slot;
                buf[1..4].copy_from_slice(b"DBE");
                buf[4] = if tail { b'B' } else { b'A' };
                buf[5] = b'0' + slot / 100 % 10;
                buf[6] = b'0' + slot / 10 % 10;
                buf[7] = b'0' + slot % 10;
                if tail {
                    id::SERIAL_TAIL
                } else {
                    id::SERIAL_HEAD
                }
            }
        };
        CanFrame::ext8(id, buf)
    }
}

fn percent(bp: BasisPoints) -> u8 {
    (bp.clamped().0 / 100) as u8
}

/// A cell voltage mapped from the design window `lo..=hi` onto 3.0..3.5 V, in 0.1 V (30..=35).
fn rescaled_dv(v: MilliVolts, lo: MilliVolts, hi: MilliVolts) -> u16 {
    let (w_lo, w_hi) = constant::CELL_WINDOW_MV;
    let (lo, hi) = (lo.0 as i32, hi.0 as i32);
    if hi <= lo {
        return (w_lo / 100) as u16;
    }
    let v = (v.0 as i32).clamp(lo, hi);
    let mv = w_lo + (v - lo) * (w_hi - w_lo) / (hi - lo);
    (mv / 100) as u16
}

impl CanInverter for SolaxCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.is_remote() || frame.extended_id() != Some(id::POLL) {
            return Ok(FrameUse::Ignored);
        }
        let data = require_len(frame, 1)?;
        // The requests are compared whole: a short frame is a poll but never a close/open/serial request.
        let payload = (frame.len() == 8).then_some(data);
        self.last_heard = Some(now);
        match data[field::poll::KIND] {
            field::poll::POLL_A | field::poll::POLL_B => self.handle_poll(now, payload),
            _ if payload == Some(&field::poll::SERIAL) => {
                let slots = self.options.modules.min(SolaxCanOptions::MAX_MODULES);
                for slot in 0..=slots {
                    self.enqueue(now, &[Answer::Serial { slot, tail: false }, Answer::Serial { slot, tail: true }]);
                }
            }
            _ => {}
        }
        Ok(FrameUse::Used)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.state != SolaxState::Announce && self.last_poll.is_none_or(|t| now >= t + POLL_TIMEOUT) {
            self.state = SolaxState::Announce;
        }
    }

    fn poll_transmit(&mut self, now: Instant, view: &InverterView<'_>) -> Option<CanFrame> {
        self.handle_timeout(now);
        let answer = self.queue.pop_front()?;
        if self.queue.is_empty() {
            self.queued_at = None;
        }
        Some(self.encode(answer, view))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let poll_deadline = match (self.state, self.last_poll) {
            (SolaxState::Announce, _) | (_, None) => None,
            (_, Some(t)) => Some(t + POLL_TIMEOUT),
        };
        crate::time::earliest(self.queued_at, poll_deadline)
    }

    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// `Some(false)` from the start: SolaX decides when the battery connects.
    fn contactor_permission(&self) -> Option<bool> {
        Some(self.state == SolaxState::Closed)
    }
}

#[cfg(test)]
mod tests {
    //! The view is made up; the expected bytes are worked out by hand from the layout in the module doc ([BE]
    //! SOLAX-CAN.{h,cpp} at HEAD), field by field.
    use super::*;
    use crate::model::{BatteryModel, Chemistry, Reading};
    use crate::supervisor::Output;
    use crate::units::WattHours;

    const T0: Instant = Instant::ZERO;

    fn design() -> PackDesign {
        PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96,
            max_pack_voltage: DeciVolts(4055),
            min_pack_voltage: DeciVolts(2400),
            max_cell_voltage: MilliVolts(4200),
            min_cell_voltage: MilliVolts(3000),
            max_cell_deviation: MilliVolts(500),
        }
    }

    fn model() -> BatteryModel {
        let mut m = BatteryModel::new(design());
        m.pack_voltage = Some(Reading::new(DeciVolts(3984), T0)); // 0x0F90
        m.current = Some(Reading::new(DeciAmps(-125), T0)); // 0xFF83
        m.soh = Some(Reading::new(BasisPoints(9876), T0)); // 98 %
        m.temperature_min = Some(Reading::new(DeciCelsius(-52), T0)); // 0xFFCC
        m.temperature_max = Some(Reading::new(DeciCelsius(231), T0)); // 0x00E7, average 89 = 0x59
        let mut cells = [MilliVolts(3900); 96];
        cells[10] = MilliVolts(3600); // 3000 + 600 × 500 / 1200 = 3250 mV → 32 (0.1 V); 0x0E10 mV
        cells[42] = MilliVolts(4000); // 3000 + 1000 × 500 / 1200 = 3416 mV → 34; 0x0FA0 mV
        m.cells.set_voltages(T0, &cells);
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(5012)),              // 50 %
            total_energy: Some(WattHours(24_000)),     // 0x00005DC0
            remaining_energy: Some(WattHours(12_345)), // 1234 × 10 Wh = 0x04D2
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

    const POLL: [u8; 8] = [0x01, 0, 0, 0, 0, 0, 0, 0];

    fn poll(s: &mut SolaxCan, now: Instant, data: [u8; 8], m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
        assert_eq!(s.handle_frame(now, &ext(id::POLL, &data)), Ok(FrameUse::Used));
        let view = InverterView::new(m, out);
        core::iter::from_fn(|| s.poll_transmit(now, &view)).collect()
    }

    fn ids(frames: &[CanFrame]) -> Vec<u32> {
        frames.iter().map(|f| f.extended_id().unwrap()).collect()
    }

    fn find(frames: &[CanFrame], id: u32) -> [u8; 8] {
        *frames.iter().find(|f| f.extended_id() == Some(id)).expect("frame present").data8()
    }

    const SET_IDS: [u32; 9] = [0x187E, 0x187A, 0x1872, 0x1873, 0x1874, 0x1875, 0x1876, 0x1877, 0x1878];

    #[test]
    fn answer_set_bytes() {
        let mut s = SolaxCan::new(SolaxCanOptions::default());
        let f = poll(&mut s, T0, POLL, &model(), &output());
        let mut want = SET_IDS.to_vec();
        want.push(0x0100_A001);
        assert_eq!(ids(&f), want);
        assert_eq!(f[9].len(), 0, "the announcement has no data");
        // total energy 24000 Wh, SOH 98 %, SOC 50 %
        assert_eq!(find(&f, 0x187E), [0xC0, 0x5D, 0x00, 0x00, 0x62, 0x32, 0x00, 0x00]);
        assert_eq!(find(&f, 0x187A), [0x01, 0x50, 0, 0, 0, 0, 0, 0]);
        // 400.0 V, 300.0 V, charge 25.0 A, discharge 30.0 A
        assert_eq!(find(&f, 0x1872), [0xA0, 0x0F, 0xB8, 0x0B, 0xFA, 0x00, 0x2C, 0x01]);
        // 398.4 V, -12.5 A, 50 %, 0, 1234 × 10 Wh
        assert_eq!(find(&f, 0x1873), [0x90, 0x0F, 0x83, 0xFF, 0x32, 0x00, 0xD2, 0x04]);
        // 23.1 °C, -5.2 °C, cells 3.4 V and 3.2 V after rescaling
        assert_eq!(find(&f, 0x1874), [0xE7, 0x00, 0xCC, 0xFF, 0x22, 0x00, 0x20, 0x00]);
        // average 8.9 °C, 7 modules, contactor open
        assert_eq!(find(&f, 0x1875), [0x59, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00]);
        // 23.1 °C, 4000 mV, -5.2 °C, 3600 mV
        assert_eq!(find(&f, 0x1876), [0xE7, 0x00, 0xA0, 0x0F, 0xCC, 0xFF, 0x10, 0x0E]);
        // type 131, firmware 0x22 of the master
        assert_eq!(find(&f, 0x1877), [0, 0, 0, 0, 0x83, 0, 0x22, 0x02]);
        // 398.4 V, total 24000 Wh
        assert_eq!(find(&f, 0x1878), [0x90, 0x0F, 0, 0, 0xC0, 0x5D, 0x00, 0x00]);
    }

    #[test]
    fn handshake_close_and_open() {
        let (m, out) = (model(), output());
        let mut s = SolaxCan::new(SolaxCanOptions::default());
        assert_eq!(s.contactor_permission(), Some(false), "SolaX decides; closed only once it asks");
        // Plain polls keep announcing.
        let t = |ms| Instant::from_millis(ms);
        assert_eq!(ids(&poll(&mut s, t(0), POLL, &m, &out)).last(), Some(&0x0100_A001));
        assert_eq!(s.state(), SolaxState::Announce);
        // The close request: still announced, then 0x1801, then closed.
        let close = [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(ids(&poll(&mut s, t(1000), close, &m, &out)).last(), Some(&0x0100_A001));
        assert_eq!(s.state(), SolaxState::WaitingForContactor);
        assert_eq!(s.contactor_permission(), Some(false));
        let f = poll(&mut s, t(2000), close, &m, &out);
        assert_eq!(ids(&f).last(), Some(&0x1801));
        assert_eq!(find(&f, 0x1801), [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00]);
        assert_eq!(s.state(), SolaxState::Closing);
        assert_eq!(s.contactor_permission(), Some(false));
        let f = poll(&mut s, t(3000), close, &m, &out);
        assert_eq!(ids(&f), SET_IDS);
        assert_eq!(s.contactor_permission(), Some(true));
        assert_eq!(find(&f, 0x1875)[4], 1, "contactor reported closed");
        // The open request withdraws it.
        let open = [0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
        let f = poll(&mut s, t(4000), open, &m, &out);
        assert_eq!(find(&f, 0x1875)[4], 0);
        assert_eq!(s.state(), SolaxState::Announce);
        assert_eq!(s.contactor_permission(), Some(false));
        assert_eq!(s.open_requests(), 1);
    }

    #[test]
    fn two_seconds_without_a_valid_poll_withdraws_permission() {
        let (m, out) = (model(), output());
        let mut s = SolaxCan::new(SolaxCanOptions::default());
        let close = [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00];
        for i in 0..3 {
            poll(&mut s, Instant::from_millis(i * 1000), close, &m, &out);
        }
        assert_eq!(s.contactor_permission(), Some(true));
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(4000)));
        // Frames that are not valid polls do not count.
        s.handle_frame(Instant::from_millis(3000), &ext(id::POLL, &[0x03, 0, 0, 0, 0, 0, 0, 0])).unwrap();
        s.handle_timeout(Instant::from_millis(3999));
        assert_eq!(s.contactor_permission(), Some(true));
        s.handle_timeout(Instant::from_millis(4000));
        assert_eq!(s.contactor_permission(), Some(false));
        assert_eq!(s.state(), SolaxState::Announce);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn serial_request_answers_every_slot() {
        let (m, out) = (model(), output());
        let mut s = SolaxCan::new(SolaxCanOptions { battery_type: 131, modules: 2 });
        let f = poll(&mut s, T0, [0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00], &m, &out);
        assert_eq!(ids(&f), [0x1881, 0x1882, 0x1881, 0x1882, 0x1881, 0x1882]);
        assert_eq!(f[0].data8(), b"\x00DBEA000");
        assert_eq!(f[5].data8(), b"\x02DBEB002");
        assert_eq!(s.state(), SolaxState::Announce);
        assert_eq!(s.last_poll, None, "a serial request is not a poll");
    }

    #[test]
    fn zero_and_invalid_limits() {
        let m = model();
        let mut s = SolaxCan::new(SolaxCanOptions::default());
        let out = Output { charge_current_limit: DeciAmps(0), ..output() };
        assert_eq!(find(&poll(&mut s, T0, POLL, &m, &out), 0x1872)[4..8], [0, 0, 0x2C, 0x01]);
        let out = Output { data_valid: false, ..output() };
        assert_eq!(find(&poll(&mut s, T0, POLL, &m, &out), 0x1872)[4..8], [0, 0, 0, 0]);
        let out = Output { charge_current_limit: DeciAmps(-3), ..output() };
        assert_eq!(find(&poll(&mut s, T0, POLL, &m, &out), 0x1872)[4..6], [0, 0]);
    }

    #[test]
    fn cell_voltages_stay_inside_what_solax_accepts() {
        let (lo, hi) = (MilliVolts(3000), MilliVolts(4200));
        assert_eq!(rescaled_dv(MilliVolts(3000), lo, hi), 30);
        assert_eq!(rescaled_dv(MilliVolts(4200), lo, hi), 35);
        assert_eq!(rescaled_dv(MilliVolts(4500), lo, hi), 35, "clamped");
        assert_eq!(rescaled_dv(MilliVolts(2000), lo, hi), 30, "clamped");
        assert_eq!(rescaled_dv(MilliVolts(3700), lo, hi), 32); // 3000 + 700 × 500 / 1200 = 3291
        assert_eq!(rescaled_dv(MilliVolts(3700), hi, lo), 30, "a broken design window cannot divide by 0");
        // Unknown cells are 0.
        let m = BatteryModel::new(design());
        let mut s = SolaxCan::new(SolaxCanOptions::default());
        let f = poll(&mut s, T0, POLL, &m, &Output { data_valid: false, ..Output::default() });
        assert_eq!(find(&f, 0x1874)[4..8], [0, 0, 0, 0]);
        assert_eq!(find(&f, 0x187E)[4], 99, "unknown SOH");
    }

    #[test]
    fn battery_type_must_fit_the_pack() {
        let leaf = design(); // 240.0..405.5 V, nominal 322.7 V
        assert_eq!(check_pack(&SolaxCanOptions::default(), &leaf), Ok(()));
        assert_eq!(voltage_range(131, 7), Some(range(131, 7, 3136, 4088)));
        assert_eq!(voltage_range(131, 13), Some(range(131, 13, 5824, 7592)));
        assert_eq!(voltage_range(131, 2), Some(range(131, 2, 896, 1168)));
        // 8 modules start at 358.4 V, above the LEAF's nominal voltage.
        assert!(matches!(
            check_pack(&SolaxCanOptions { battery_type: 131, modules: 8 }, &leaf),
            Err(PackMismatch::OutOfRange { .. })
        ));
        // Type 80 ends at 404.0 V, below the LEAF's 405.5 V maximum.
        let e = check_pack(&SolaxCanOptions { battery_type: 80, modules: 0 }, &leaf).unwrap_err();
        assert_eq!(
            e,
            PackMismatch::OutOfRange {
                range: range(80, 0, 2900, 4040),
                design_max: DeciVolts(4055),
                nominal: DeciVolts(3227)
            }
        );
        // BE's default (81 with 0 modules) has no published range.
        assert_eq!(
            check_pack(&SolaxCanOptions { battery_type: 81, modules: 0 }, &leaf),
            Err(PackMismatch::Unlisted { battery_type: 81, modules: 0 })
        );
        // Every listed row is a real range.
        for r in VOLTAGE_RANGES {
            assert!(r.min < r.max, "{r:?}");
        }
    }

    #[test]
    fn other_frames_and_short_frames() {
        let mut s = SolaxCan::new(SolaxCanOptions::default());
        let t = Instant::from_millis(9);
        assert_eq!(
            s.handle_frame(t, &ext(id::POLL, &[])),
            Err(DecodeError::WrongLength { id: 0x1871, expected: 1, got: 0 })
        );
        assert_eq!(s.last_heard(), None);
        assert_eq!(s.handle_frame(t, &CanFrame::standard(0x187, &[1]).unwrap()), Ok(FrameUse::Ignored));
        assert_eq!(s.handle_frame(t, &ext(0x1872, &[1; 8])), Ok(FrameUse::Ignored));
        assert_eq!(s.last_heard(), None);
        // A short poll is answered but never read as a close request.
        assert_eq!(s.handle_frame(t, &ext(id::POLL, &[0x02, 0x00, 0x01, 0x00, 0x01])), Ok(FrameUse::Used));
        assert_eq!(s.state(), SolaxState::Announce);
        assert_eq!(s.poll_timeout(), Some(t));
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_frame_is_handled_without_panic(
            raw in prop_oneof![Just(0x1871u32), 0x1800u32..0x1900, 0u32..0x2000_0000],
            extended in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..=8),
            modules in 0u8..=255,
            battery_type in any::<u8>(),
            steps in proptest::collection::vec(0u64..3000, 1..8),
        ) {
            let mut s = SolaxCan::new(SolaxCanOptions { battery_type, modules });
            let frame = if extended { CanFrame::extended(raw, &data) } else { CanFrame::standard((raw & 0x7FF) as u16, &data) };
            let frame = frame.unwrap();
            let (m, out) = (model(), output());
            let view = InverterView::new(&m, &out);
            let mut now = T0;
            for step in steps {
                now += Duration::from_millis(step);
                let _ = s.handle_frame(now, &frame);
                s.handle_timeout(now);
                let mut n = 0;
                while s.poll_transmit(now, &view).is_some() {
                    n += 1;
                    prop_assert!(n <= QUEUE_LEN);
                }
                // Permission only ever in Closed.
                prop_assert_eq!(s.contactor_permission(), Some(s.state() == SolaxState::Closed));
            }
        }
    }
}
