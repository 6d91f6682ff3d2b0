//! FoxESS HV2600 / ECS4100 over CAN: DBE answers a FoxESS H1/H3/KH/KP hybrid as a stack of HV2600 battery
//! modules under one master BMS.
//!
//! Classic CAN with 29-bit ids at 500 kbit/s, little-endian words. The ids are SolaX's `0x187x` set (FoxESS
//! inverters descend from SolaX's), but the payloads and the poll differ, so it is its own protocol. The inverter
//! polls on `0x1871` and the battery answers only what was asked; nothing is sent unasked:
//!
//! | `0x1871` payload | Asks for | DBE answers |
//! | --- | --- | --- |
//! | `01 .. .. .. 00 ..` (every 1 s) | the BMS set | `0x1872`..`0x1879` |
//! | `01 .. .. .. 01 ..` | each module's status | `0x0C05`.. one per configured module |
//! | `01 .. .. .. 04 ..` | every cell voltage and temperature | `0x0C1D`..`0x0CA9` (36 frames), `0x0D21`..`0x0D59` (8) |
//! | `01 .. .. .. 02 ..` | (sent with `04`, 100 ms earlier) | nothing, as [BE] |
//! | `02 ..` | an acknowledgement | nothing |
//! | `03 YY MM DD hh mm ss` | the inverter's clock (every 6 s) | nothing |
//! | `05 ..` | the serial numbers | `0x1881`/`0x1882`/`0x1883` for the BMS (slot 0) and each module |
//!
//! FoxESS has no contactor handshake: a real master closes its contactor by itself once it has answered
//! ([FZ]), so [`CanInverter::contactor_permission`] is `None` and the supervisor decides alone.
//!
//! # Sources
//! - **[BE]** dalathegreat/Battery-Emulator `Software/src/inverter/FOXESS-CAN.{h,cpp}` (HEAD of 2026-08, and its
//!   history: 7078a358 "Make FoxESS more configurable" (type, subtype and module count options), 600cd6a9
//!   "Rescale cellvoltages that aren't LFP", fea30ff6 cell voltages, 90cc4913 per-module voltage, c77207d8 /
//!   7cf2a136 per-module frames): the ids, which poll asks for what, byte positions, BE's constants, the option
//!   defaults, the charge-inhibit condition and the LFP remap.
//! - **[FZ]** FozzieUK/FoxESS-Canbus-Protocol `README.md` and `FoxESS_v1_15.dbc` (captures of a real HV2600
//!   stack, the source [BE] cites): the meaning of each field and its scale, the 1 s poll, the status bits of
//!   `0x1879`, that `0x1876` byte 0 bit 0 inhibits charging ("KH series relies on this bit and ignores 100% SoC
//!   limits"), the 50-degree temperature offset.
//! - **[BE-wiki]** dalathegreat/Battery-Emulator-Wiki `docs/inverter/foxess_h1_h3_ac1_kh.md`: which FoxESS
//!   models use this protocol, "module count 1-8, each step being 50 V", the tested battery type codes.
//! - `CAN_STILL_ALIVE` = 60 s in [BE] `devboard/utils/types.h`: the inverter link timeout.
//!
//! # Battery → inverter (all 8 bytes, little-endian)
//! The BMS set:
//! - `0x1872` limits: w0 max charge voltage 0.1 V, w1 min discharge voltage 0.1 V, w2 max charge current 0.1 A,
//!   w3 max discharge current 0.1 A.
//! - `0x1873` pack: w0 voltage 0.1 V, w1 current 0.1 A signed (positive = charging), b4 SOC 1 %, b5 0, w3
//!   remaining energy 10 Wh ([FZ] 0.01 kWh).
//! - `0x1874` cells: w0 highest, w1 lowest temperature 0.1 °C signed; w2 highest, w3 lowest cell voltage in mV,
//!   **LFP-presented** (see below).
//! - `0x1875` status: w0 average temperature 0.1 °C signed; b2 one bit per responding module (bit n-1 = module
//!   n); b3 module count; b4 contactor 0/1; b5 0; w3 cycle count.
//! - `0x1876`: b0 bit 0 **charge inhibit**; w1 highest cell mV; w3 lowest cell mV (the real values).
//! - `0x1877` identity, one unit per answer set in turn (the BMS, then module 1..n, then the BMS again): b0 0x02
//!   when in error else 0; b4 battery type (BMS) / subtype (module); b6 firmware (BMS 0x12, modules 0x1F =
//!   v1.15); b7 0x01 for the BMS, the module number << 4 for a module.
//! - `0x1878`: w0 "AC voltage max" 256.7 V ([BE] constant); b4-7 lifetime Wh (0: DBE has no such value).
//! - `0x1879`: b0 error code (0); b1 flags: `0x35` while charging, `0x2B` otherwise ([BE]; [FZ]'s "on-line
//!   (charge)" / "on-line (discharge)" columns), `0x5A` in error ([FZ]'s "Error" column).
//!
//! Per module (`0x0C05` + module − 1): w0 current 0.1 A signed; b2 highest, b3 lowest temperature 1 °C + 50; b4
//! SOC 1 %; b5 0x0A ([BE] constant, meaning unknown); w3 module voltage mV.
//!
//! Cells: `0x0C1D` + 4k (k = 0..36) carries cells 4k+1..4k+4 in mV (LFP-presented); `0x0D21` + 8k (k = 0..8)
//! eight temperatures 1 °C + 50.
//!
//! Serials: `0x1881`/`0x1882`/`0x1883`, b0 the slot (0 = BMS, 1..n modules), b1-7 seven ASCII characters.
//!
//! # Cell voltages FoxESS accepts (non-LFP packs)
//! FoxESS batteries are LFP and the inverter expects LFP cell voltages. For an LFP pack the real millivolts are
//! sent. For any other chemistry DBE maps the pack's design cell window linearly onto 2.5..3.4 V, [BE]'s target
//! window, in `0x1874` and in the per-cell frames: an empty NMC cell reads as an empty LFP cell, a full one as a
//! full LFP cell, and the inverter's LFP checks see plausible values. [BE] maps the fixed range 2.5..4.2 V instead
//! and does not clamp; DBE uses the pack's own design window (so its ends map onto the LFP ends) and clamps, so a
//! cell outside its window reads 2.5 / 3.4 V rather than a value the inverter refuses. The supervisor's cell
//! rules act on the real values either way. `0x1876` carries the real millivolts, as [BE] sends them ([FZ]: the
//! inverter shows them, it does not protect on them).
//!
//! # Where DBE differs from [BE], and why
//! - Limits, voltages, SOC and energy come from the supervisor's view (BE: its design voltages in `0x1872`); both
//!   currents are 0 when its data is not valid.
//! - Charge inhibit (`0x1876` b0 bit 0): set whenever the charge limit the supervisor decided is 0, the data is not
//!   valid, or the reported SOC is 100 % (BE: the same, with its FAULT state for "not valid"). FoxESS has no
//!   known discharge-inhibit bit: a forbidden discharge is the 0 A in `0x1872` alone.
//! - Error (`0x1877` b0 = 0x02, `0x1879` b1 = 0x5A) and contactor (`0x1875` b4) follow the data: error and open
//!   while the supervisor's data is not valid (BE: contactor always 1, error on its FAULT state). The view
//!   carries no contactor state, so "1" means "the bridge vouches for the data", not a relay reading.
//! - Per module: the *whole* pack current (the modules of a tower are in series: each carries all of it; BE
//!   divides the current by the module count) and the voltage over the module count in **mV** ([FZ]'s DBC
//!   `0.001 V`, and BE's own earlier constant `0xD0D0` "53.456 V"; BE's current `dV / n × 10` is a tenth of that).
//! - Temperatures with [FZ]'s offset of 50 (its README, "decimal 50 offset", and its DBC); BE uses 40 in the
//!   module frames and clamps below 0 °C. DBE clamps the raw byte to 0..=255 (-50..205 °C). [BE]'s constant cell
//!   temperatures 0x46..0x49 read 20..23 °C with 50, which agrees.
//! - Cell frames carry the pack's cells (BE: a constant 3300 mV in every slot); slots past the pack's last cell
//!   repeat its lowest cell, so the extremes the inverter sees are the pack's. Each module's eight temperature
//!   slots carry the highest temperature in b0-3 and the lowest in b4-7 (the view has no per-sensor values).
//! - `0x1875` b2 sets one bit per configured module (BE: 0xFF whatever the count); cycle count 0 (BE: 142,
//!   made up).
//! - `0x1874` b4-7 in mV as [BE] sends them; [FZ]'s DBC gives that signal a factor of 100 (0.1 V) and calls it
//!   the "cut" voltages. BE's mV is what FoxESS inverters run with in the field, so DBE keeps it (unverified).
//! - Serials: [BE]'s captured `60EP005` `047MA05` `2` for every slot (a real HV2600 serial format; FoxESS Cloud
//!   may derive the model from it, so DBE does not invent one). Two DBEs on one cloud account share it.
//!
//! Unknown values are sent as 0 (unknown SOH is not carried by this protocol).

use super::lfp::presented_mv;
use super::word::{clamp_u16, put_le as put, signed};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterView};
use crate::model::PackDesign;
use crate::options::{self, DriverOptions, OptionField, OptionKind, OptionValue};
use crate::time::{Duration, Instant};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts};

/// One line for `dbe list`.
pub const SUPPORTS: &str = "FoxESS H1, H3, KH, KP hybrids that poll an HV2600/ECS4100 battery stack on CAN \
                            (29-bit 0x1871, 500 kbit/s); set the module count to fit the pack voltage";

/// [BE]'s `CAN_STILL_ALIVE`: 60 s without an inverter frame and the link counts as lost.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// CAN identifiers (all extended).
pub mod id {
    pub const POLL: u32 = 0x1871;
    pub const LIMITS: u32 = 0x1872;
    pub const PACK: u32 = 0x1873;
    pub const CELLS: u32 = 0x1874;
    pub const STATUS: u32 = 0x1875;
    pub const CELL_EXTREMES: u32 = 0x1876;
    pub const IDENTITY: u32 = 0x1877;
    pub const PACK_STATS: u32 = 0x1878;
    pub const FLAGS: u32 = 0x1879;
    /// `0x1881`, `0x1882`, `0x1883`: seven serial characters each.
    pub const SERIAL: u32 = 0x1881;
    /// Module n (1-based) at `MODULE + n - 1`.
    pub const MODULE: u32 = 0x0C05;
    /// Cells 4k+1..4k+4 at `CELL_VOLTAGES + 4k`.
    pub const CELL_VOLTAGES: u32 = 0x0C1D;
    /// Eight temperatures of module k+1 at `CELL_TEMPERATURES + 8k`.
    pub const CELL_TEMPERATURES: u32 = 0x0D21;
}

/// Byte ranges of every field, per message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub mod poll {
        pub const KIND: usize = 0;
        pub const QUERY: u8 = 0x01;
        pub const ACK: u8 = 0x02;
        pub const CLOCK: u8 = 0x03;
        pub const SERIALS: u8 = 0x05;
        /// For `QUERY`: what is asked for.
        pub const WHAT: usize = 4;
        pub const WHAT_BMS: u8 = 0x00;
        pub const WHAT_MODULES: u8 = 0x01;
        pub const WHAT_CELLS: u8 = 0x04;
        /// For `CLOCK`: YY MM DD hh mm ss.
        pub const CLOCK_AT: core::ops::Range<usize> = 2..8;
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
        pub const CELL_MAX_MV: Field = 4..6;
        pub const CELL_MIN_MV: Field = 6..8;
    }
    pub mod status {
        use super::Field;
        pub const TEMPERATURE_AVERAGE: Field = 0..2;
        pub const MODULES_OK: usize = 2;
        pub const MODULES: usize = 3;
        pub const CONTACTOR: usize = 4;
        pub const CYCLES: Field = 6..8;
    }
    pub mod extremes {
        use super::Field;
        pub const INHIBIT: usize = 0;
        pub const CHARGE_INHIBIT_BIT: u8 = 1 << 0;
        pub const CELL_MAX_MV: Field = 2..4;
        pub const CELL_MIN_MV: Field = 6..8;
    }
    pub mod identity {
        pub const ERROR: usize = 0;
        pub const TYPE: usize = 4;
        pub const FIRMWARE: usize = 6;
        pub const UNIT: usize = 7;
    }
    pub mod pack_stats {
        use super::Field;
        pub const AC_VOLTAGE_MAX: Field = 0..2;
    }
    pub mod flags {
        pub const FLAGS: usize = 1;
    }
    pub mod module {
        use super::Field;
        pub const CURRENT: Field = 0..2;
        pub const TEMPERATURE_MAX: usize = 2;
        pub const TEMPERATURE_MIN: usize = 3;
        pub const SOC: usize = 4;
        pub const TAIL: usize = 5;
        pub const VOLTAGE_MV: Field = 6..8;
    }
}

/// [BE]'s and [FZ]'s constants.
mod constant {
    pub const FIRMWARE_BMS: u8 = 0x12;
    pub const FIRMWARE_MODULE: u8 = 0x1F;
    pub const UNIT_BMS: u8 = 0x01;
    pub const ERROR: u8 = 0x02;
    /// 256.7 V.
    pub const AC_VOLTAGE_MAX_DV: u16 = 2567;
    pub const FLAGS_CHARGING: u8 = 0x35;
    pub const FLAGS_DISCHARGING: u8 = 0x2B;
    pub const FLAGS_ERROR: u8 = 0x5A;
    pub const MODULE_TAIL: u8 = 0x0A;
    /// Temperatures in 1 °C + 50.
    pub const TEMPERATURE_OFFSET_C: i32 = 50;
    pub const SERIAL: [[u8; 7]; 3] = [*b"60EP005", *b"047MA05", *b"2\0\0\0\0\0\0"];
}

/// Cell voltage frames and the cells they carry.
pub const CELL_FRAMES: u8 = 36;
pub const CELL_SLOTS: usize = CELL_FRAMES as usize * 4;
/// Temperature frames (one per possible module).
pub const TEMPERATURE_FRAMES: u8 = 8;

/// The most module voltage the per-module frames carry (16-bit mV).
const MODULE_VOLTAGE_MAX: MilliVolts = MilliVolts(u16::MAX);

/// Options; every default is Battery-Emulator's.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FoxessCanOptions {
    /// Modules in the tower (1..=8): the module count in 0x1875 and how many modules answer.
    pub modules: u8,
    /// The master's battery type in 0x1877 (0x52 = HV2600 V2 BMS master).
    pub battery_type: u8,
    /// The modules' type in 0x1877 (0x82 HV2600 V1, 0x83 ECS4100 V1, 0x84 HV2600 V2).
    pub battery_subtype: u8,
}

impl Default for FoxessCanOptions {
    fn default() -> Self {
        FoxessCanOptions { modules: 8, battery_type: 0x52, battery_subtype: 0x84 }
    }
}

impl FoxessCanOptions {
    pub const MAX_MODULES: u8 = 8;
}

impl DriverOptions for FoxessCanOptions {
    const FIELDS: &'static [OptionField<Self>] = &[
        OptionField {
            name: "modules",
            help: "HV2600 modules DBE reports (1-8, about 50 V each: 8 for a 400 V pack, 4 for 200 V). Each \
                   module's voltage is the pack voltage over this count; check-config refuses a count for which \
                   a module would exceed 65.5 V.",
            kind: OptionKind::Integer { min: 1, max: FoxessCanOptions::MAX_MODULES as i64, unit: "" },
            get: |o| OptionValue::Integer(o.modules.into()),
            set: |o, v| o.modules = options::byte(v),
        },
        OptionField {
            name: "battery_type",
            help: "The FoxESS battery type code of the master BMS (decimal; 82 = 0x52, HV2600 V2). The \
                   Battery-Emulator wiki lists the codes tested up to 134 (S28-H2.0).",
            kind: OptionKind::Integer { min: 0, max: 255, unit: "" },
            get: |o| OptionValue::Integer(o.battery_type.into()),
            set: |o, v| o.battery_type = options::byte(v),
        },
        OptionField {
            name: "battery_subtype",
            help: "The type code of each module (decimal; 130 = HV2600 V1, 131 = ECS4100 V1, 132 = HV2600 V2).",
            kind: OptionKind::Integer { min: 0, max: 255, unit: "" },
            get: |o| OptionValue::Integer(o.battery_subtype.into()),
            set: |o, v| o.battery_subtype = options::byte(v),
        },
    ];
}

/// The module count leaves a module voltage the protocol cannot carry.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "with {modules} modules each FoxESS module would be at up to {per_module} (the pack's design maximum {design_max} \
     over {modules}); the protocol carries at most 65.535 V per module: use at least {needed} modules"
)]
pub struct ModulesDoNotFit {
    pub modules: u8,
    pub design_max: DeciVolts,
    pub per_module: MilliVolts,
    pub needed: u32,
}

/// Whether the module count lets every module voltage fit its 16-bit millivolt field.
pub fn check_pack(options: &FoxessCanOptions, design: &PackDesign) -> Result<(), ModulesDoNotFit> {
    let max_mv = design.max_pack_voltage.0 as u32 * 100;
    let modules = options.modules.max(1) as u32;
    let per_module = max_mv / modules;
    if per_module <= MODULE_VOLTAGE_MAX.0 as u32 {
        return Ok(());
    }
    Err(ModulesDoNotFit {
        modules: options.modules,
        design_max: design.max_pack_voltage,
        per_module: MilliVolts(per_module.min(u16::MAX as u32) as u16),
        needed: max_mv.div_ceil(MODULE_VOLTAGE_MAX.0 as u32),
    })
}

/// One frame the battery owes the inverter.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Answer {
    Limits,
    Pack,
    Cells,
    Status,
    CellExtremes,
    /// 0x1877 for unit 0 (the BMS) or module 1..=n.
    Identity(u8),
    PackStats,
    Flags,
    /// Module 1..=n.
    Module(u8),
    CellVoltages(u8),
    CellTemperatures(u8),
    Serial {
        slot: u8,
        part: u8,
    },
}

impl Answer {
    /// Two answers that would carry the same id with the same meaning (only one stays queued).
    fn same(self, other: Answer) -> bool {
        match (self, other) {
            (Answer::Identity(_), Answer::Identity(_)) => true,
            _ => self == other,
        }
    }
}

const BMS_SET: usize = 8;
const MAX_SLOTS: usize = FoxessCanOptions::MAX_MODULES as usize + 1;
const QUEUE_LEN: usize = BMS_SET
    + FoxessCanOptions::MAX_MODULES as usize
    + CELL_FRAMES as usize
    + TEMPERATURE_FRAMES as usize
    + 3 * MAX_SLOTS;

/// The FoxESS battery stack as the inverter sees it.
#[derive(Clone, Debug)]
pub struct FoxessCan {
    options: FoxessCanOptions,
    queue: heapless::Deque<Answer, QUEUE_LEN>,
    queued_at: Option<Instant>,
    last_heard: Option<Instant>,
    /// The unit whose 0x1877 goes with the next BMS set.
    next_unit: u8,
    clock: Option<[u8; 6]>,
    acks: u32,
}

impl FoxessCan {
    pub fn new(options: FoxessCanOptions) -> Self {
        FoxessCan {
            options,
            queue: heapless::Deque::new(),
            queued_at: None,
            last_heard: None,
            next_unit: 0,
            clock: None,
            acks: 0,
        }
    }

    pub fn options(&self) -> FoxessCanOptions {
        self.options
    }

    /// The inverter's clock from its last `03` frame: YY MM DD hh mm ss.
    pub fn inverter_clock(&self) -> Option<[u8; 6]> {
        self.clock
    }

    /// How many `02` acknowledgements the inverter sent (for telemetry).
    pub fn acks(&self) -> u32 {
        self.acks
    }

    fn modules(&self) -> u8 {
        self.options.modules.clamp(1, FoxessCanOptions::MAX_MODULES)
    }

    fn enqueue(&mut self, now: Instant, answer: Answer) {
        if !self.queue.iter().any(|q| q.same(answer)) {
            // Cannot fail: each answer at most once, and QUEUE_LEN counts them all.
            let _ = self.queue.push_back(answer);
        }
        if self.queued_at.is_none() && !self.queue.is_empty() {
            self.queued_at = Some(now);
        }
    }

    fn handle_query(&mut self, now: Instant, what: u8) {
        match what {
            field::poll::WHAT_BMS => {
                let unit = self.next_unit;
                if !self.queue.iter().any(|q| matches!(q, Answer::Identity(_))) {
                    self.next_unit = if unit >= self.modules() { 0 } else { unit + 1 };
                }
                for a in [Answer::Limits, Answer::Pack, Answer::Cells, Answer::Status, Answer::CellExtremes] {
                    self.enqueue(now, a);
                }
                for a in [Answer::Identity(unit), Answer::PackStats, Answer::Flags] {
                    self.enqueue(now, a);
                }
            }
            field::poll::WHAT_MODULES => {
                for m in 1..=self.modules() {
                    self.enqueue(now, Answer::Module(m));
                }
            }
            field::poll::WHAT_CELLS => {
                for k in 0..CELL_FRAMES {
                    self.enqueue(now, Answer::CellVoltages(k));
                }
                for k in 0..TEMPERATURE_FRAMES {
                    self.enqueue(now, Answer::CellTemperatures(k));
                }
            }
            _ => {}
        }
    }

    fn encode(&self, answer: Answer, view: &InverterView<'_>) -> CanFrame {
        let mut buf = [0u8; 8];
        let valid = view.data_valid();
        let voltage = view.voltage().map_or(0, |v| v.0);
        let current = signed(view.current().map_or(0, |c| c.0 as i64));
        let t_max = view.temperature_max();
        let t_min = view.temperature_min();
        let cell_max = view.cell_max().map(|c| c.1);
        let cell_min = view.cell_min().map(|c| c.1);
        let soc = view.soc().unwrap_or(BasisPoints::ZERO).clamped();
        let soc_percent = (soc.0 / 100) as u8;
        let lfp = |v: MilliVolts| presented_mv(v, view.chemistry(), view.cell_voltage_range());
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
                put(&mut buf, CURRENT, current);
                buf[SOC] = soc_percent;
                let remaining = view.remaining_energy().map_or(0, |e| e.0 / 10);
                put(&mut buf, REMAINING_10WH, clamp_u16(remaining as i64));
                id::PACK
            }
            Answer::Cells => {
                use field::cells::*;
                put(&mut buf, TEMPERATURE_MAX, deci_c(t_max));
                put(&mut buf, TEMPERATURE_MIN, deci_c(t_min));
                put(&mut buf, CELL_MAX_MV, cell_max.map_or(0, lfp));
                put(&mut buf, CELL_MIN_MV, cell_min.map_or(0, lfp));
                id::CELLS
            }
            Answer::Status => {
                use field::status::*;
                put(&mut buf, TEMPERATURE_AVERAGE, average(t_max, t_min));
                let modules = self.modules();
                buf[MODULES_OK] = ((1u16 << modules) - 1) as u8;
                buf[MODULES] = modules;
                buf[CONTACTOR] = u8::from(valid);
                put(&mut buf, CYCLES, 0);
                id::STATUS
            }
            Answer::CellExtremes => {
                use field::extremes::*;
                if charge_inhibited(view) {
                    buf[INHIBIT] |= CHARGE_INHIBIT_BIT;
                }
                put(&mut buf, CELL_MAX_MV, cell_max.map_or(0, |v| v.0));
                put(&mut buf, CELL_MIN_MV, cell_min.map_or(0, |v| v.0));
                id::CELL_EXTREMES
            }
            Answer::Identity(unit) => {
                use field::identity::*;
                buf[ERROR] = if valid { 0 } else { constant::ERROR };
                if unit == 0 {
                    buf[TYPE] = self.options.battery_type;
                    buf[FIRMWARE] = constant::FIRMWARE_BMS;
                    buf[UNIT] = constant::UNIT_BMS;
                } else {
                    buf[TYPE] = self.options.battery_subtype;
                    buf[FIRMWARE] = constant::FIRMWARE_MODULE;
                    buf[UNIT] = unit << 4;
                }
                id::IDENTITY
            }
            Answer::PackStats => {
                put(&mut buf, field::pack_stats::AC_VOLTAGE_MAX, constant::AC_VOLTAGE_MAX_DV);
                id::PACK_STATS
            }
            Answer::Flags => {
                buf[field::flags::FLAGS] = if !valid {
                    constant::FLAGS_ERROR
                } else if view.current().is_some_and(|c| c.0 > 0) {
                    constant::FLAGS_CHARGING
                } else {
                    constant::FLAGS_DISCHARGING
                };
                id::FLAGS
            }
            Answer::Module(m) => {
                use field::module::*;
                put(&mut buf, CURRENT, current);
                buf[TEMPERATURE_MAX] = offset_c(t_max);
                buf[TEMPERATURE_MIN] = offset_c(t_min);
                buf[SOC] = soc_percent;
                buf[TAIL] = constant::MODULE_TAIL;
                let per_module = voltage as u32 * 100 / self.modules() as u32;
                put(&mut buf, VOLTAGE_MV, per_module.min(u16::MAX as u32) as u16);
                id::MODULE + m as u32 - 1
            }
            Answer::CellVoltages(k) => {
                let cells = view.cell_voltages();
                let filler = cell_min.map_or(0, lfp);
                for i in 0..4 {
                    let slot = k as usize * 4 + i;
                    let mv = cells.get(slot).map_or(filler, |&v| if v.0 == 0 { 0 } else { lfp(v) });
                    put(&mut buf, 2 * i..2 * i + 2, mv);
                }
                id::CELL_VOLTAGES + 4 * k as u32
            }
            Answer::CellTemperatures(k) => {
                buf[..4].fill(offset_c(t_max));
                buf[4..].fill(offset_c(t_min));
                id::CELL_TEMPERATURES + 8 * k as u32
            }
            Answer::Serial { slot, part } => {
                buf[0] = slot;
                buf[1..].copy_from_slice(&constant::SERIAL[part as usize % 3]);
                id::SERIAL + part as u32
            }
        };
        CanFrame::ext8(id, buf)
    }
}

/// Charging must stop: the supervisor's charge limit is 0, its data is not valid, or the pack is full.
fn charge_inhibited(view: &InverterView<'_>) -> bool {
    !view.data_valid() || view.charge_current_limit().0 <= 0 || view.soc().is_some_and(|s| s.0 >= 10_000)
}

fn deci_c(t: Option<DeciCelsius>) -> u16 {
    t.unwrap_or(DeciCelsius::ZERO).0 as u16
}

fn average(a: Option<DeciCelsius>, b: Option<DeciCelsius>) -> u16 {
    let (a, b) = (a.unwrap_or(DeciCelsius::ZERO).0 as i32, b.unwrap_or(DeciCelsius::ZERO).0 as i32);
    ((a + b) / 2) as i16 as u16
}

/// A temperature in whole °C + 50, clamped to a byte; unknown is 0.
fn offset_c(t: Option<DeciCelsius>) -> u8 {
    t.map_or(0, |t| (t.0 as i32 / 10 + constant::TEMPERATURE_OFFSET_C).clamp(0, 255) as u8)
}

impl CanInverter for FoxessCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.is_remote() || frame.extended_id() != Some(id::POLL) {
            return Ok(FrameUse::Ignored);
        }
        let data = require_len(frame, 1)?;
        match data[field::poll::KIND] {
            field::poll::QUERY => {
                let data = require_len(frame, field::poll::WHAT + 1)?;
                self.handle_query(now, data[field::poll::WHAT]);
            }
            field::poll::SERIALS => {
                for slot in 0..=self.modules() {
                    for part in 0..3 {
                        self.enqueue(now, Answer::Serial { slot, part });
                    }
                }
            }
            field::poll::CLOCK if frame.len() == 8 => {
                let mut clock = [0u8; 6];
                clock.copy_from_slice(&data[field::poll::CLOCK_AT]);
                self.clock = Some(clock);
            }
            field::poll::ACK => self.acks = self.acks.saturating_add(1),
            _ => {}
        }
        self.last_heard = Some(now);
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, _now: Instant, view: &InverterView<'_>) -> Option<CanFrame> {
        let answer = self.queue.pop_front()?;
        if self.queue.is_empty() {
            self.queued_at = None;
        }
        Some(self.encode(answer, view))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.queued_at
    }

    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }
}

#[cfg(test)]
mod tests {
    //! The view is made up; the expected bytes are worked out by hand from the layout in the module doc ([BE]
    //! FOXESS-CAN.{h,cpp} at HEAD and [FZ]), field by field.
    use super::*;
    use crate::model::Chemistry;
    use crate::model::{BatteryModel, Reading};
    use crate::supervisor::Output;
    use crate::units::WattHours;

    const T0: Instant = Instant::ZERO;

    fn design(chemistry: Chemistry) -> PackDesign {
        PackDesign {
            chemistry,
            cells: 96,
            max_pack_voltage: DeciVolts(4055),
            min_pack_voltage: DeciVolts(2400),
            max_cell_voltage: MilliVolts(4200),
            min_cell_voltage: MilliVolts(3000),
            max_cell_deviation: MilliVolts(500),
        }
    }

    fn model_of(chemistry: Chemistry) -> BatteryModel {
        let mut m = BatteryModel::new(design(chemistry));
        m.pack_voltage = Some(Reading::new(DeciVolts(3984), T0)); // 0x0F90; / 8 = 49800 mV = 0xC288
        m.current = Some(Reading::new(DeciAmps(-125), T0)); // 0xFF83
        m.temperature_min = Some(Reading::new(DeciCelsius(-52), T0)); // 0xFFCC; -5 + 50 = 45 = 0x2D
        m.temperature_max = Some(Reading::new(DeciCelsius(231), T0)); // 0x00E7; 23 + 50 = 73 = 0x49; avg 89
        let mut cells = [MilliVolts(3900); 96]; // 2500 + 900 × 900 / 1200 = 3175 = 0x0C67
        cells[10] = MilliVolts(3600); // 2500 + 600 × 900 / 1200 = 2950 = 0x0B86; 0x0E10 mV
        cells[42] = MilliVolts(4000); // 2500 + 1000 × 900 / 1200 = 3250 = 0x0CB2; 0x0FA0 mV
        m.cells.set_voltages(T0, &cells);
        m
    }

    fn model() -> BatteryModel {
        model_of(Chemistry::Nmc)
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(5012)),              // 50 %
            total_energy: Some(WattHours(24_000)),     //
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

    fn query(what: u8) -> [u8; 8] {
        [0x01, 0x00, 0x01, 0x00, what, 0x00, 0x00, 0x00]
    }

    fn ask(s: &mut FoxessCan, now: Instant, data: [u8; 8], m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
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

    #[test]
    fn bms_set_bytes() {
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let f = ask(&mut s, T0, query(0), &model(), &output());
        assert_eq!(ids(&f), [0x1872, 0x1873, 0x1874, 0x1875, 0x1876, 0x1877, 0x1878, 0x1879]);
        // 400.0 V, 300.0 V, charge 25.0 A, discharge 30.0 A
        assert_eq!(find(&f, 0x1872), [0xA0, 0x0F, 0xB8, 0x0B, 0xFA, 0x00, 0x2C, 0x01]);
        // 398.4 V, -12.5 A, 50 %, 0, 1234 × 10 Wh
        assert_eq!(find(&f, 0x1873), [0x90, 0x0F, 0x83, 0xFF, 0x32, 0x00, 0xD2, 0x04]);
        // 23.1 °C, -5.2 °C, cells 3250 / 2950 mV LFP-presented
        assert_eq!(find(&f, 0x1874), [0xE7, 0x00, 0xCC, 0xFF, 0xB2, 0x0C, 0x86, 0x0B]);
        // average 8.9 °C, 8 modules responding, 8 modules, contactor 1, 0, 0 cycles
        assert_eq!(find(&f, 0x1875), [0x59, 0x00, 0xFF, 0x08, 0x01, 0x00, 0x00, 0x00]);
        // charging allowed; 4000 mV, 3600 mV (real)
        assert_eq!(find(&f, 0x1876), [0x00, 0x00, 0xA0, 0x0F, 0x00, 0x00, 0x10, 0x0E]);
        // the BMS first: type 0x52, firmware 0x12, unit 0x01
        assert_eq!(find(&f, 0x1877), [0x00, 0, 0, 0, 0x52, 0, 0x12, 0x01]);
        // 256.7 V AC, lifetime 0 Wh
        assert_eq!(find(&f, 0x1878), [0x07, 0x0A, 0, 0, 0, 0, 0, 0]);
        // discharging → 0x2B
        assert_eq!(find(&f, 0x1879), [0x00, 0x2B, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn identity_walks_the_bms_then_each_module() {
        let (m, out) = (model(), output());
        let mut s = FoxessCan::new(FoxessCanOptions { modules: 2, ..Default::default() });
        let units: Vec<[u8; 8]> =
            (0..4).map(|i| find(&ask(&mut s, T0 + Duration::from_secs(i), query(0), &m, &out), 0x1877)).collect();
        assert_eq!(units[0][4..8], [0x52, 0, 0x12, 0x01]);
        assert_eq!(units[1][4..8], [0x84, 0, 0x1F, 0x10]);
        assert_eq!(units[2][4..8], [0x84, 0, 0x1F, 0x20]);
        assert_eq!(units[3][4..8], [0x52, 0, 0x12, 0x01], "and round again");
        assert_eq!(find(&ask(&mut s, T0, query(0), &m, &out), 0x1875)[2..4], [0x03, 0x02], "two modules");
    }

    #[test]
    fn module_frames() {
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let f = ask(&mut s, T0, query(1), &model(), &output());
        assert_eq!(ids(&f), (0x0C05..=0x0C0C).collect::<Vec<_>>());
        // the whole -12.5 A, 73 (23 °C), 45 (-5 °C), 50 %, 0x0A, 49800 mV
        for frame in &f {
            assert_eq!(frame.data8(), &[0x83, 0xFF, 0x49, 0x2D, 0x32, 0x0A, 0x88, 0xC2]);
        }
        let mut s = FoxessCan::new(FoxessCanOptions { modules: 3, ..Default::default() });
        assert_eq!(ids(&ask(&mut s, T0, query(1), &model(), &output())), [0x0C05, 0x0C06, 0x0C07]);
    }

    #[test]
    fn cell_frames() {
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let f = ask(&mut s, T0, query(4), &model(), &output());
        let want: Vec<u32> = (0..36).map(|k| 0x0C1D + 4 * k).chain((0..8).map(|k| 0x0D21 + 8 * k)).collect();
        assert_eq!(ids(&f), want);
        assert_eq!(ids(&f)[35], 0x0CA9, "cells 141-144");
        assert_eq!(ids(&f)[43], 0x0D59, "module 8's temperatures");
        // cells 9-12: 3175, 3175, 2950 (cell 11 = index 10), 3175
        assert_eq!(find(&f, 0x0C25), [0x67, 0x0C, 0x67, 0x0C, 0x86, 0x0B, 0x67, 0x0C]);
        // cells 97-100 are past the pack's 96: its lowest cell
        assert_eq!(find(&f, 0x0C7D), [0x86, 0x0B, 0x86, 0x0B, 0x86, 0x0B, 0x86, 0x0B]);
        // 23 °C + 50 in b0-3, -5 °C + 50 in b4-7
        assert_eq!(find(&f, 0x0D21), [0x49, 0x49, 0x49, 0x49, 0x2D, 0x2D, 0x2D, 0x2D]);
        // 0x02 is heard and not answered
        assert!(ask(&mut s, T0, query(2), &model(), &output()).is_empty());
    }

    #[test]
    fn lfp_cells_pass_through() {
        let m = model_of(Chemistry::Lfp);
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let f = ask(&mut s, T0, query(0), &m, &output());
        assert_eq!(find(&f, 0x1874)[4..8], [0xA0, 0x0F, 0x10, 0x0E]);
    }

    #[test]
    fn serials_for_the_bms_and_every_module() {
        let mut s = FoxessCan::new(FoxessCanOptions { modules: 2, ..Default::default() });
        let f = ask(&mut s, T0, [0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00], &model(), &output());
        assert_eq!(ids(&f), [0x1881, 0x1882, 0x1883].repeat(3));
        assert_eq!(f[0].data8(), b"\x0060EP005");
        assert_eq!(f[4].data8(), b"\x01047MA05");
        assert_eq!(f[8].data8(), b"\x022\0\0\0\0\0\0");
    }

    #[test]
    fn charge_inhibit_follows_the_supervisor() {
        let m = model();
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let inhibit = |s: &mut FoxessCan, out: &Output| find(&ask(s, T0, query(0), &m, out), 0x1876)[0];
        assert_eq!(inhibit(&mut s, &output()), 0);
        assert_eq!(inhibit(&mut s, &Output { charge_current_limit: DeciAmps(0), ..output() }), 1);
        assert_eq!(inhibit(&mut s, &Output { soc: Some(BasisPoints(10_000)), ..output() }), 1);
        assert_eq!(inhibit(&mut s, &Output { data_valid: false, ..output() }), 1);
        // A forbidden discharge has no flag: 0 A in 0x1872, charging still allowed.
        let out = Output { discharge_current_limit: DeciAmps(0), ..output() };
        let f = ask(&mut s, T0, query(0), &m, &out);
        assert_eq!(find(&f, 0x1872)[4..8], [0xFA, 0x00, 0, 0]);
        assert_eq!(find(&f, 0x1876)[0], 0);
    }

    #[test]
    fn invalid_data_means_0_a_error_and_contactor_open() {
        let m = model();
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let f = ask(&mut s, T0, query(0), &m, &Output { data_valid: false, ..output() });
        assert_eq!(find(&f, 0x1872)[4..8], [0, 0, 0, 0]);
        assert_eq!(find(&f, 0x1875)[4], 0);
        assert_eq!(find(&f, 0x1877)[0], 0x02);
        assert_eq!(find(&f, 0x1879)[1], 0x5A);
        // Charging: 0x35.
        let mut m = model();
        m.current = Some(Reading::new(DeciAmps(80), T0));
        assert_eq!(find(&ask(&mut s, T0, query(0), &m, &output()), 0x1879)[1], 0x35);
        // Nothing known at all: zeros, no panic.
        let m = BatteryModel::new(design(Chemistry::Nmc));
        let f = ask(&mut s, T0, query(0), &m, &Output::default());
        assert_eq!(find(&f, 0x1874), [0; 8]);
        let f = ask(&mut s, T0, query(4), &m, &Output::default());
        assert_eq!(find(&f, 0x0C1D), [0; 8]);
        assert_eq!(find(&f, 0x0D21), [0; 8]);
    }

    #[test]
    fn other_requests_are_heard_but_not_answered() {
        let (m, out) = (model(), output());
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        assert!(ask(&mut s, T0, [0x02, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00], &m, &out).is_empty());
        assert_eq!(s.acks(), 1);
        assert!(ask(&mut s, T0, [0x03, 0x06, 0x17, 0x05, 0x09, 0x09, 0x28, 0x22], &m, &out).is_empty());
        assert_eq!(s.inverter_clock(), Some([0x17, 0x05, 0x09, 0x09, 0x28, 0x22]));
        assert_eq!(s.last_heard(), Some(T0));
        assert_eq!(s.contactor_permission(), None, "FoxESS has no contactor handshake");
    }

    #[test]
    fn short_and_foreign_frames() {
        let mut s = FoxessCan::new(FoxessCanOptions::default());
        let t = Instant::from_millis(9);
        assert_eq!(
            s.handle_frame(t, &ext(id::POLL, &[])),
            Err(DecodeError::WrongLength { id: 0x1871, expected: 1, got: 0 })
        );
        assert_eq!(
            s.handle_frame(t, &ext(id::POLL, &[0x01, 0, 1, 0])),
            Err(DecodeError::WrongLength { id: 0x1871, expected: 5, got: 4 })
        );
        assert_eq!(s.last_heard(), None);
        assert_eq!(s.handle_frame(t, &CanFrame::standard(0x187, &[1]).unwrap()), Ok(FrameUse::Ignored));
        assert_eq!(s.handle_frame(t, &ext(0x1872, &[1; 8])), Ok(FrameUse::Ignored));
        assert_eq!(s.poll_timeout(), None);
        // A short clock frame is heard, not decoded.
        assert_eq!(s.handle_frame(t, &ext(id::POLL, &[0x03, 0x06])), Ok(FrameUse::Used));
        assert_eq!(s.inverter_clock(), None);
    }

    #[test]
    fn module_count_must_fit_the_pack() {
        let leaf = design(Chemistry::Nmc); // up to 405.5 V
        assert_eq!(check_pack(&FoxessCanOptions::default(), &leaf), Ok(()));
        assert_eq!(check_pack(&FoxessCanOptions { modules: 7, ..Default::default() }, &leaf), Ok(()));
        let e = check_pack(&FoxessCanOptions { modules: 6, ..Default::default() }, &leaf).unwrap_err();
        assert_eq!(e.per_module, MilliVolts(u16::MAX));
        assert_eq!(e.needed, 7);
        // A module voltage past 65.535 V is clamped on the wire, never wrapped.
        let mut m = model();
        m.pack_voltage = Some(Reading::new(DeciVolts(8000), T0));
        let mut s = FoxessCan::new(FoxessCanOptions { modules: 1, ..Default::default() });
        assert_eq!(find(&ask(&mut s, T0, query(1), &m, &output()), 0x0C05)[6..8], [0xFF, 0xFF]);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_frame_is_handled_without_panic(
            raw in prop_oneof![Just(0x1871u32), 0x0C00u32..0x1900, 0u32..0x2000_0000],
            extended in any::<bool>(),
            remote in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..=8),
            modules in any::<u8>(),
            steps in proptest::collection::vec(0u64..3000, 1..8),
        ) {
            let mut s = FoxessCan::new(FoxessCanOptions { modules, ..Default::default() });
            let id: crate::can::Id = if extended {
                crate::can::ExtendedId::new(raw).unwrap().into()
            } else {
                crate::can::StandardId::new((raw & 0x7FF) as u16).unwrap().into()
            };
            let frame = if remote { CanFrame::remote(id, data.len()) } else { CanFrame::new(id, &data) };
            let frame = frame.unwrap();
            let (m, out) = (model(), output());
            let view = InverterView::new(&m, &out);
            let mut now = T0;
            for step in steps {
                now += Duration::from_millis(step);
                let _ = s.handle_frame(now, &frame);
                let mut n = 0;
                while let Some(f) = s.poll_transmit(now, &view) {
                    n += 1;
                    prop_assert!(n <= QUEUE_LEN);
                    prop_assert!(f.extended_id().is_some());
                }
                prop_assert_eq!(s.poll_timeout(), None);
            }
        }
    }
}
