//! Pylontech high-voltage CAN ("Pylon HV", Force H-series): DBE answers the inverter as a Pylontech HV battery.
//!
//! The inverter (the PCS) polls; the battery only answers. Every frame is a classic CAN frame with a 29-bit id at
//! 500 kbit/s. The inverter sends `0x4200` with a request code in byte 0; the battery answers the ensemble request
//! (`0x00`) with `0x4210`..`0x4290` and the system-equipment request (`0x02`) with `0x7310`..`0x7340`. Nothing is
//! sent cyclically: an inverter that stops polling hears nothing, which is what a real Pylontech stack does.
//!
//! # Sources
//! - **[BE]** dalathegreat/Battery-Emulator `Software/src/inverter/PYLON-CAN.{h,cpp}` (battery side, the
//!   history of that file, and its settings `PYLONSEND`/`PYLONOFFSET`/`PYLONORDER` in `comm_nvm.cpp` and
//!   `settings_html.cpp`): the ids, which request code gets which answer set, the byte positions of 0x4210..0x4280,
//!   the 0xAA "forbidden" mark, the 4250 state codes, the 0x7310 version bytes and the 0x7330/0x7340 name, and the
//!   three options below. BE's `PYLON-CAN.h` templates (captured from a Pylontech stack) give little-endian words
//!   with a 30000 current offset and a 1000 temperature offset.
//! - **[BE-batt]** the same repository, `Software/src/battery/PYLON-BATTERY.{h,cpp}` (BE polling a real Pylon HV
//!   battery, "based on CAN-Bus-Protocol-Pylon-high-voltage-V1.26"): the inverter side: it sends `0x4200`,
//!   `0x8200` (0xAA quit sleep, 0x55 go to sleep), `0x8210` (charge/discharge commands) and a `0x3010` heartbeat
//!   every 1 s; its decoder reads little-endian words, current `raw - 30000`, temperatures `raw - 1000`, and the
//!   discharge limit with the standard *negative* offset (`30000 - raw`).
//! - **[diyBMS]** stuartpittaway/diyBMSv4ESP32 `ESPController/src/pylonforce_canbus.cpp` (a Pylon Force emulator
//!   written from the Sermatec HV V1.18 and Deye HV V1.17 protocol PDFs): field names and units of every frame,
//!   the 0x4250 bit layout (basic status, error byte, alarm word, protection word), the 0x7320 layout, the
//!   `0x8200`/`0x8210` command bytes, the `0x8240` "mask external communication error" request and its `0x8250`
//!   reply (byte 0 = 0x00: "will not act").
//! - ai-republic/bms-to-inverter `inverter-pylon-hv-can/.../PylonHVInverterCANProcessor.java`: cross-check of the
//!   0x4210..0x4280 layouts and the 0x4250 alarm/protection bit meanings.
//!
//! # Layout (byte offsets; `w` = 16-bit word, its order chosen by [`ByteOrder`] where marked *value*)
//! - `0x4210`: w0-1 pack voltage 0.1 V; w2-3 current 0.1 A (positive = charging; see offset); w4-5 "BMS"
//!   temperature 0.1 °C + 1000 (we send the highest cell temperature, as BE); b6 SOC 1 %; b7 SOH 1 %.
//! - `0x4220`: w0-1 charge cutoff voltage 0.1 V; w2-3 discharge cutoff voltage 0.1 V; w4-5 max charge current
//!   0.1 A; w6-7 max discharge current 0.1 A.
//! - `0x4230`: w0-1 highest cell mV; w2-3 lowest cell mV; w4-5 / w6-7 their cell numbers (from 0).
//! - `0x4240`: w0-1 / w2-3 highest / lowest cell temperature 0.1 °C + 1000; w4-5 / w6-7 their sensor numbers.
//! - `0x4250`: b0 bits 0-2 state (0 sleep, 1 charge, 2 discharge, 3 idle), bit 3 force-charge request, bit 4
//!   balance-charge request; w1-2 cycle period; b3 error bits; w4-5 alarm bits; w6-7 protection bits.
//! - `0x4260`: w0-1 / w2-3 highest / lowest module voltage mV; w4-5 / w6-7 their module numbers.
//! - `0x4270`: w0-1 / w2-3 highest / lowest module temperature 0.1 °C + 1000; w4-5 / w6-7 their numbers.
//! - `0x4280`: b0 charge forbidden (0xAA) / allowed (0x00); b1 discharge forbidden / allowed.
//! - `0x4290`: b0 fault-extension bits (always 0 here).
//! - `0x7310`: hardware version, reserved, hardware V.R, software V.R, development version (constant).
//! - `0x7320`: w0-1 cells in series; b2 modules in series; b3 cells per module; w4-5 voltage level 1 V;
//!   w6-7 capacity 1 Ah.
//! - `0x7330` / `0x7340`: manufacturer name, 16 ASCII bytes.
//!
//! # Options ([`PylonCanOptions`])
//! - `byte_order` (BE's `PYLONORDER`, formerly `INVERT_LOW_HIGH_BYTES`): the order of the *value* words of
//!   0x4210, 0x4220, 0x4230 (cell voltages), 0x4240, 0x4260 (module voltages) and 0x4270 (temperatures) — the
//!   words BE swaps. Default [`ByteOrder::BigEndian`], BE's default today; [`ByteOrder::LittleEndian`] is what
//!   a real stack sends ([BE] templates, [BE-batt], [diyBMS]). Numbers, counts and bit words (cell/module numbers,
//!   0x4250 words, 0x7320) are always little-endian: BE sends them so in both modes and every source agrees.
//! - `offset_30k` (BE's `PYLONOFFSET`, formerly `SET_30K_OFFSET`): currents are sent as `30000 + current`, the
//!   max charge current as `30000 + limit` and the max discharge current as `30000 - limit` (Pylon's "0.1 A,
//!   offset -3000 A"). Off by default (BE's default: plain signed 0.1 A, limits as magnitudes).
//! - `address` (BE's `PYLONSEND` "send group"; diyBMS's equipment address): added to every answer id
//!   (0x4210 + address...) and to the addressed command ids 0x8200/0x8210/0x8240 we accept. BE offers 0 and 1;
//!   0..=15 is accepted, larger values are treated as 15 so an id never spills into the next message's range.
//!
//! # Where the sources disagree, and what we chose
//! - Discharge limit with the 30k offset: BE since 2025-10 sends `30000 + limit`; Pylon V1.26 as read by
//!   [BE-batt], [diyBMS] and BE's own earlier (2025-01) code send `30000 - limit`. We follow the standard. (An
//!   inverter expecting the other sign reads a negative limit, which it can only treat as 0 or as its magnitude.)
//! - Temperature offset: BE once put the 30k offset on the 0x4210 temperature; since 2026-05 it always sends
//!   `+1000` on every temperature, as [BE-batt], [diyBMS] and bms-to-inverter do. We always send `+1000`.
//! - 0x4250 state from the current's sign: BE since 2025-10 reports "charge" for a negative current; [diyBMS],
//!   bms-to-inverter and BE before then report charge for a positive (into the pack) current. We report charge when
//!   current flows into the pack, which is also the sign of the 0x4210 current.
//! - 0x7330/0x7340 with address 1: BE keeps them at 0x7330/0x7340; [diyBMS] adds the address. We add it, like every
//!   other answer.
//! - Cell numbers: [diyBMS] numbers cells from 0; we send the view's 0-based index.
//!
//! # What is estimated or constant
//! The view has no modules and no temperature sensor numbers. 0x7320 splits the pack into modules of about 15
//! cells (BE's 2024 mapping, `cells / 15`); 0x4260 reports module voltages as the extreme cell × cells per module
//! (saturating), with the module that holds that cell; temperature sensor/module numbers are 0. 0x7310 is BE's
//! captured version (hardware 1, V2.1, software V1.2), the name is `PYLONTECH` (BE's default brand). Unknown
//! values (`None` in the view) are sent as 0, except an unknown SOH, sent as 99 % like BE (its datalayer starts
//! at `soh_pptt = 9900`; Pylon has no "unknown" SOH and 0 % would read as a worn-out battery); when the view's
//! data is not valid both directions are forbidden.
//!
//! # Alarms
//! The supervisor's alarms (protection level) go to the protection word, its warnings to the alarm word, with the
//! bit meanings of [diyBMS]/bms-to-inverter: 0 cell low, 1 cell high, 2 pack low, 3 pack high, 4/6 charge/discharge
//! low temperature, 5/7 charge/discharge high temperature. Stale battery data sets error bit 2 (internal
//! communication), a BMS fault or a critical cell voltage sets error bit 7 (other). Cell deviation has no Pylon bit.
//!
//! # Commands
//! `0x8200` (sleep/wake) and `0x8210` (charge/discharge "close the relay") are decoded and kept
//! ([`PylonCan::sleep_command`], [`PylonCan::charge_command`]). An `0x8210` is the inverter's permission to close
//! the contactors ([`CanInverter::contactor_permission`]): once one has been received, neither charge nor discharge
//! asked means the inverter withdrew it, and the supervisor opens as for a lost inverter. It never closes them by
//! itself: an inverter that never sends 0x8210 (most do not) leaves the decision to the supervisor alone. `0x8240` (ignore loss of communication for 5 minutes) is answered "will not act": DBE never keeps
//! contactors closed on a silent inverter's say-so.
//!
//! # Presets: Ferroamp and Solxpow ([`Preset`])
//! Two inverter families speak this protocol with settings of their own, fixed; each is a protocol name of its
//! own in the registry (`ferroamp-can`, `solxpow-can`), so a user picks the inverter rather than three settings.
//! Sources: **[BE-ferroamp]** Battery-Emulator `Software/src/inverter/FERROAMP-CAN.{h,cpp}` ("a Pylon variant with
//! inverted HighLow bytes, and 30K offset on some values ... batch1 instead of batch0") and **[BE-solxpow]**
//! `SOLXPOW-CAN.{h,cpp}` (`INVERT_LOW_HIGH_BYTES` defined, `SET_30K_OFFSET` not).
//! - **Ferroamp**: little-endian, 30k offset, address 1 (answers on 0x4211.., 0x7311..); the equipment answer is
//!   0x7311 and 0x7321 only (BE removed the name frames, bf0273d0, 2025-10); cell voltages (0x4231 and the module
//!   voltages derived from them) are LFP-presented for a non-LFP pack ("Ferroamp only supports LFP batteries"),
//!   through the same mapping as FoxESS ([`super::lfp`], which says how DBE's mapping differs from BE's).
//! - **Solxpow**: little-endian, plain currents, address 0; the name is sixteen `X` (0x58); the cutoff voltages
//!   in 0x4220 are 2.0 V inside the pack's (BE's `VOLTAGE_OFFSET_DV` = 20, "to avoid generating voltage events").
//! - **Both**: 0x7320/0x7321 describe the Pylon stack these inverters are known to accept rather than the pack:
//!   120 cells, 4 modules of 30, 384 V, 37 Ah (BE's `TOTAL_CELL_AMOUNT`..`AH_CAPACITY`: "some inverters need to
//!   see a specific amount of cells/modules to emulate a specific Pylon battery"). 0x4260 keeps `pylon-can`'s
//!   module figures (the pack split into modules of about 15 cells): a 30-cell module (about 96 V) does not fit
//!   the field's 16-bit millivolts, and BE sends a constant captured template there (51.1 V / 10.1 V), so these
//!   inverters evidently do not check it against 0x7320.
//! - Where DBE differs from those files, and why: their 0x4240/0x4270 temperatures are written without the
//!   +1000 offset, while the captured templates in the same files (0x047E = 1150 = 15.0 °C + 100 °C) and the Pylon
//!   standard carry it: DBE sends +1000, as for `pylon-can`. They take limits, cutoffs and SOC from BE's
//!   datalayer; DBE from the supervisor's view, as every protocol. Everything else is the `pylon-can` encoding.
//! - Nothing of a preset is settable (its options table is empty): the fixed settings are the preset.

use super::lfp::presented_mv;
use super::word::clamp_u16;
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterKind, InverterView};
use crate::options::{self, DriverOptions, OptionField, OptionKind, OptionValue};
use crate::supervisor::Alarms;
use crate::time::{Duration, Instant};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts};

/// One line for `dbe list`.
pub const SUPPORTS: &str =
    "Inverters that poll a Pylontech high-voltage battery over CAN (29-bit 0x4200 requests, 500 kbit/s)";

/// One line for `dbe list`: the Ferroamp preset.
pub const FERROAMP_SUPPORTS: &str =
    "Ferroamp inverters that poll a Pylontech HV battery on 0x4200 and expect its answers on \
     0x4211.. with LFP cell voltages (Battery-Emulator's \"Ferroamp Pylon battery over CAN bus\")";

/// One line for `dbe list`: the Solxpow preset.
pub const SOLXPOW_SUPPORTS: &str =
    "Solxpow inverters that poll a Pylontech HV battery on 0x4200 (Battery-Emulator's \"Solxpow compatible battery\")";

/// How long the inverter may stay silent before the link counts as lost.
///
/// Inverters poll every second or so ([BE-batt] polls at 1 s); Battery-Emulator declares a CAN inverter missing
/// after 60 s without a frame (`CAN_STILL_ALIVE` = 60, decremented each second). We use the same 60 s: long enough
/// for an inverter that pauses polling while it reboots or changes mode, and the supervisor zeroes the limits when
/// it expires.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// CAN identifiers (all extended). Answer ids get the configured address added.
pub mod id {
    /// Inverter → battery: request, byte 0 = [`super::Request`] code.
    pub const REQUEST: u32 = 0x4200;
    /// Inverter → battery: heartbeat ([BE-batt] sends it every second).
    pub const HEARTBEAT: u32 = 0x3010;
    /// Inverter → battery (+ address): byte 0 = 0x55 sleep, 0xAA wake.
    pub const SLEEP_COMMAND: u32 = 0x8200;
    /// Inverter → battery (+ address): byte 0 = 0xAA charge command, byte 1 = 0xAA discharge command.
    pub const CHARGE_COMMAND: u32 = 0x8210;
    /// Inverter → battery (+ address): ignore "external communication error" for 5 minutes.
    pub const MASK_COMMAND: u32 = 0x8240;
    /// Battery → inverter (+ address): answer to [`MASK_COMMAND`]; byte 0 = 0xAA will act, 0x00 will not.
    pub const MASK_REPLY: u32 = 0x8250;
    pub const STATUS: u32 = 0x4210;
    pub const LIMITS: u32 = 0x4220;
    pub const CELL_VOLTAGES: u32 = 0x4230;
    pub const CELL_TEMPERATURES: u32 = 0x4240;
    pub const BASIC_STATUS: u32 = 0x4250;
    pub const MODULE_VOLTAGES: u32 = 0x4260;
    pub const MODULE_TEMPERATURES: u32 = 0x4270;
    pub const FORBIDDEN: u32 = 0x4280;
    pub const FAULT_EXTENSION: u32 = 0x4290;
    pub const VERSION: u32 = 0x7310;
    pub const LAYOUT: u32 = 0x7320;
    pub const NAME_HEAD: u32 = 0x7330;
    pub const NAME_TAIL: u32 = 0x7340;
}

/// Byte ranges of every field, per message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub mod status {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const CURRENT: Field = 2..4;
        pub const TEMPERATURE: Field = 4..6;
        pub const SOC: usize = 6;
        pub const SOH: usize = 7;
    }
    pub mod limits {
        use super::Field;
        pub const CHARGE_VOLTAGE: Field = 0..2;
        pub const DISCHARGE_VOLTAGE: Field = 2..4;
        pub const CHARGE_CURRENT: Field = 4..6;
        pub const DISCHARGE_CURRENT: Field = 6..8;
    }
    /// 0x4230, 0x4240, 0x4260 and 0x4270 share one shape: max, min, number of max, number of min.
    pub mod extremes {
        use super::Field;
        pub const MAX: Field = 0..2;
        pub const MIN: Field = 2..4;
        pub const MAX_NUMBER: Field = 4..6;
        pub const MIN_NUMBER: Field = 6..8;
    }
    pub mod basic_status {
        use super::Field;
        pub const STATE: usize = 0;
        pub const STATE_MASK: u8 = 0b0000_0111;
        pub const FORCE_CHARGE: u8 = 1 << 3;
        pub const BALANCE_CHARGE: u8 = 1 << 4;
        pub const CYCLE_PERIOD: Field = 1..3;
        pub const ERROR: usize = 3;
        pub const ALARM: Field = 4..6;
        pub const PROTECTION: Field = 6..8;
    }
    pub mod forbidden {
        pub const CHARGE: usize = 0;
        pub const DISCHARGE: usize = 1;
    }
    pub mod layout {
        use super::Field;
        pub const CELLS: Field = 0..2;
        pub const MODULES: usize = 2;
        pub const CELLS_PER_MODULE: usize = 3;
        pub const VOLTAGE_LEVEL: Field = 4..6;
        pub const CAPACITY: Field = 6..8;
    }
    pub mod charge_command {
        pub const CHARGE: usize = 0;
        pub const DISCHARGE: usize = 1;
    }
}

/// Offset of currents in the 30k variant (0.1 A): Pylon's "offset -3000 A".
const CURRENT_OFFSET: i32 = 30_000;
/// Offset of every temperature (0.1 °C): Pylon's "offset -100 °C".
const TEMPERATURE_OFFSET: i32 = 1_000;
/// The largest limit either encoding can carry (3000.0 A); the supervisor never gets near it.
const MAX_LIMIT: i32 = 30_000;
/// The 0x4280 mark for "forbidden".
const FORBIDDEN_MARK: u8 = 0xAA;
/// Cells per Pylon module used to describe the pack in 0x7320 (BE's 2024 mapping).
const CELLS_PER_PYLON_MODULE: u16 = 15;
/// BE's captured 0x7310: hardware version 1, reserved, hardware V2.1, software V1.2, development 0.0.
const VERSION_BYTES: [u8; 8] = [0x01, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x00];
/// The manufacturer name of 0x7330/0x7340 (BE's default brand), zero-padded to 16 bytes.
const NAME: &[u8] = b"PYLONTECH";

/// 0x4250 error bits ([diyBMS]).
pub mod error_bits {
    pub const VOLTAGE_SENSOR: u8 = 1 << 0;
    pub const TEMPERATURE_SENSOR: u8 = 1 << 1;
    pub const INTERNAL_COMMUNICATION: u8 = 1 << 2;
    pub const INPUT_OVER_VOLTAGE: u8 = 1 << 3;
    pub const INPUT_REVERSAL: u8 = 1 << 4;
    pub const RELAY: u8 = 1 << 5;
    pub const DAMAGE: u8 = 1 << 6;
    pub const OTHER: u8 = 1 << 7;
}

/// 0x4250 alarm and protection word bits ([diyBMS], bms-to-inverter): the same meaning in both words.
pub mod alarm_bits {
    pub const CELL_LOW_VOLTAGE: u16 = 1 << 0;
    pub const CELL_HIGH_VOLTAGE: u16 = 1 << 1;
    pub const PACK_LOW_VOLTAGE: u16 = 1 << 2;
    pub const PACK_HIGH_VOLTAGE: u16 = 1 << 3;
    pub const CHARGE_LOW_TEMPERATURE: u16 = 1 << 4;
    pub const CHARGE_HIGH_TEMPERATURE: u16 = 1 << 5;
    pub const DISCHARGE_LOW_TEMPERATURE: u16 = 1 << 6;
    pub const DISCHARGE_HIGH_TEMPERATURE: u16 = 1 << 7;
    pub const CHARGE_OVER_CURRENT: u16 = 1 << 8;
    pub const DISCHARGE_OVER_CURRENT: u16 = 1 << 9;
    pub const MODULE_LOW_VOLTAGE: u16 = 1 << 10;
    pub const MODULE_HIGH_VOLTAGE: u16 = 1 << 11;
}

/// The order of the value words (see the module doc for which words).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// High byte first: Battery-Emulator's default.
    #[default]
    BigEndian,
    /// Low byte first: what a real Pylontech stack sends (BE's "invert byte order").
    LittleEndian,
}

impl ByteOrder {
    pub const ALL: [ByteOrder; 2] = [ByteOrder::BigEndian, ByteOrder::LittleEndian];
    /// The words of [`Self::ALL`], for the config file's choices.
    pub const NAMES: [&'static str; 2] = [Self::ALL[0].name(), Self::ALL[1].name()];

    /// The word used in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            ByteOrder::BigEndian => "big-endian",
            ByteOrder::LittleEndian => "little-endian",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// What real inverters need set differently; every default is Battery-Emulator's default.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PylonCanOptions {
    pub byte_order: ByteOrder,
    /// Currents with Pylon's 30000 offset (see the module doc).
    pub offset_30k: bool,
    /// Added to the answer ids (0 or 1 in BE; up to 15 accepted).
    pub address: u8,
}

impl DriverOptions for PylonCanOptions {
    const FIELDS: &'static [OptionField<Self>] = &[
        OptionField {
            name: "byte_order",
            help: "The order of the value words (BE's PYLONORDER): \"big-endian\" is Battery-Emulator's default, \
                   \"little-endian\" what a real Pylontech stack sends; some inverters need it.",
            kind: OptionKind::Choice(&ByteOrder::NAMES),
            get: |o| OptionValue::Word(o.byte_order.name()),
            set: |o, v| o.byte_order = ByteOrder::from_name(options::word(v)).unwrap_or_default(),
        },
        OptionField {
            name: "offset_30k",
            help: "Send the 0x4210 pack current and the 0x4220 max charge/discharge currents with Pylon's 30000 \
                   offset (BE's PYLONOFFSET); temperatures always carry the protocol's own +1000.",
            kind: OptionKind::Bool,
            get: |o| OptionValue::Bool(o.offset_30k),
            set: |o, v| o.offset_30k = options::boolean(v),
        },
        OptionField {
            name: "address",
            help: "Battery address added to every answer id (BE's send group: 0 or 1).",
            kind: OptionKind::Integer { min: 0, max: PylonCanOptions::MAX_ADDRESS as i64, unit: "" },
            get: |o| OptionValue::Integer(o.address.into()),
            set: |o, v| o.address = options::byte(v),
        },
    ];
}

impl PylonCanOptions {
    pub const MAX_ADDRESS: u8 = 15;

    fn address(self) -> u32 {
        self.address.min(Self::MAX_ADDRESS) as u32
    }
}

/// Which inverter family the protocol is set up for (see the module doc's "Presets").
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Preset {
    /// `pylon-can`: every setting is the user's ([`PylonCanOptions`]).
    #[default]
    Pylontech,
    /// `ferroamp-can`.
    Ferroamp,
    /// `solxpow-can`.
    Solxpow,
}

/// 0x7320 of both presets ([BE-ferroamp], [BE-solxpow]).
const PRESET_LAYOUT: Layout =
    Layout { cells: 120, modules: 4, cells_per_module: 30, voltage_level: 384, capacity_ah: 37 };
/// How far inside the pack's cutoff voltages Solxpow's 0x4220 sits ([BE-solxpow] `VOLTAGE_OFFSET_DV`).
const SOLXPOW_CUTOFF_MARGIN: DeciVolts = DeciVolts(20);
/// Solxpow's 0x7330/0x7340 ([BE-solxpow]).
const SOLXPOW_NAME: &[u8] = b"XXXXXXXXXXXXXXXX";

impl Preset {
    /// The registry entry each preset is.
    pub fn kind(self) -> InverterKind {
        match self {
            Preset::Pylontech => InverterKind::PylonCan,
            Preset::Ferroamp => InverterKind::FerroampCan,
            Preset::Solxpow => InverterKind::SolxpowCan,
        }
    }

    /// The wire settings a preset fixes; `None` for `pylon-can`, whose settings are the user's.
    pub fn options(self) -> Option<PylonCanOptions> {
        match self {
            Preset::Pylontech => None,
            Preset::Ferroamp => {
                Some(PylonCanOptions { byte_order: ByteOrder::LittleEndian, offset_30k: true, address: 1 })
            }
            Preset::Solxpow => {
                Some(PylonCanOptions { byte_order: ByteOrder::LittleEndian, offset_30k: false, address: 0 })
            }
        }
    }

    fn layout(self, view: &InverterView<'_>) -> Layout {
        match self {
            Preset::Pylontech => Layout::from_view(view),
            Preset::Ferroamp | Preset::Solxpow => PRESET_LAYOUT,
        }
    }

    fn name(self) -> Option<&'static [u8]> {
        match self {
            Preset::Pylontech => Some(NAME),
            Preset::Ferroamp => None,
            Preset::Solxpow => Some(SOLXPOW_NAME),
        }
    }

    fn equipment(self) -> &'static [Answer] {
        match self.name() {
            Some(_) => &EQUIPMENT,
            None => &EQUIPMENT[..2],
        }
    }
}

/// The options of a preset protocol: none (a preset's settings are fixed), an empty table in the config file.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PresetOptions;

impl DriverOptions for PresetOptions {
    const FIELDS: &'static [OptionField<Self>] = &[];
}

/// What the inverter asks for in byte 0 of 0x4200.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// 0x00: answered with 0x4210..0x4290.
    Ensemble,
    /// 0x01: per-cell voltages ([BE-batt]); not answered (no source gives the 0x5xxx answer layout).
    CellVoltages,
    /// 0x02: answered with 0x7310..0x7340.
    Equipment,
    Unknown(u8),
}

impl Request {
    pub fn from_code(code: u8) -> Self {
        match code {
            0x00 => Request::Ensemble,
            0x01 => Request::CellVoltages,
            0x02 => Request::Equipment,
            other => Request::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Request::Ensemble => 0x00,
            Request::CellVoltages => 0x01,
            Request::Equipment => 0x02,
            Request::Unknown(c) => c,
        }
    }
}

/// The 0x8200 command.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SleepCommand {
    /// 0x55.
    Sleep,
    /// 0xAA.
    Wake,
    Unknown(u8),
}

impl SleepCommand {
    pub fn from_code(code: u8) -> Self {
        match code {
            0x55 => SleepCommand::Sleep,
            0xAA => SleepCommand::Wake,
            other => SleepCommand::Unknown(other),
        }
    }
}

/// The 0x8210 command: the inverter asks the battery to close its relay to charge / to discharge.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChargeCommand {
    pub charge: bool,
    pub discharge: bool,
}

/// 0x4250 bits 0-2.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BatteryState {
    Sleep,
    Charge,
    Discharge,
    Idle,
    Unknown(u8),
}

impl BatteryState {
    pub fn code(self) -> u8 {
        match self {
            BatteryState::Sleep => 0,
            BatteryState::Charge => 1,
            BatteryState::Discharge => 2,
            BatteryState::Idle => 3,
            BatteryState::Unknown(c) => c & field::basic_status::STATE_MASK,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code & field::basic_status::STATE_MASK {
            0 => BatteryState::Sleep,
            1 => BatteryState::Charge,
            2 => BatteryState::Discharge,
            3 => BatteryState::Idle,
            other => BatteryState::Unknown(other),
        }
    }
}

fn put_word(buf: &mut [u8; 8], at: field::Field, value: u16, order: ByteOrder) {
    let bytes = match order {
        ByteOrder::BigEndian => value.to_be_bytes(),
        ByteOrder::LittleEndian => value.to_le_bytes(),
    };
    buf[at].copy_from_slice(&bytes);
}

/// A current (positive = charging) in its wire form.
fn current_raw(current: DeciAmps, offset_30k: bool) -> u16 {
    if offset_30k {
        clamp_u16(current.0 as i64 + CURRENT_OFFSET as i64)
    } else {
        current.0.clamp(i16::MIN as i32, i16::MAX as i32) as i16 as u16
    }
}

fn limit_magnitude(limit: DeciAmps) -> u16 {
    limit.0.clamp(0, MAX_LIMIT) as u16
}

fn charge_limit_raw(limit: DeciAmps, offset_30k: bool) -> u16 {
    let l = limit_magnitude(limit);
    if offset_30k {
        CURRENT_OFFSET as u16 + l
    } else {
        l
    }
}

fn discharge_limit_raw(limit: DeciAmps, offset_30k: bool) -> u16 {
    let l = limit_magnitude(limit);
    if offset_30k {
        CURRENT_OFFSET as u16 - l
    } else {
        l
    }
}

fn temperature_raw(t: DeciCelsius) -> u16 {
    clamp_u16(t.0 as i64 + TEMPERATURE_OFFSET as i64)
}

/// SOH sent while the pack has not reported one: Battery-Emulator's datalayer default (`soh_pptt = 9900`), which its
/// `PYLON-CAN.cpp` sends as `soh_pptt / 100`. The protocol has no "unknown" value, and 0 % reads as a dead battery.
const UNKNOWN_SOH: BasisPoints = BasisPoints(9900);

fn percent(bp: BasisPoints) -> u8 {
    (bp.clamped().0 / 100) as u8
}

/// 0x4210.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatteryStatus {
    pub voltage: DeciVolts,
    pub current: DeciAmps,
    pub temperature: DeciCelsius,
    pub soc: BasisPoints,
    pub soh: BasisPoints,
}

impl BatteryStatus {
    pub fn emit(&self, opts: PylonCanOptions, buf: &mut [u8; 8]) {
        use field::status::*;
        put_word(buf, VOLTAGE, self.voltage.0, opts.byte_order);
        put_word(buf, CURRENT, current_raw(self.current, opts.offset_30k), opts.byte_order);
        put_word(buf, TEMPERATURE, temperature_raw(self.temperature), opts.byte_order);
        buf[SOC] = percent(self.soc);
        buf[SOH] = percent(self.soh);
    }
}

/// 0x4220. Limits are magnitudes (never negative).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub charge_voltage: DeciVolts,
    pub discharge_voltage: DeciVolts,
    pub charge_current: DeciAmps,
    pub discharge_current: DeciAmps,
}

impl Limits {
    pub fn emit(&self, opts: PylonCanOptions, buf: &mut [u8; 8]) {
        use field::limits::*;
        put_word(buf, CHARGE_VOLTAGE, self.charge_voltage.0, opts.byte_order);
        put_word(buf, DISCHARGE_VOLTAGE, self.discharge_voltage.0, opts.byte_order);
        put_word(buf, CHARGE_CURRENT, charge_limit_raw(self.charge_current, opts.offset_30k), opts.byte_order);
        put_word(buf, DISCHARGE_CURRENT, discharge_limit_raw(self.discharge_current, opts.offset_30k), opts.byte_order);
    }
}

/// 0x4230, 0x4240, 0x4260, 0x4270: the highest and lowest of something, already in wire units, with the numbers
/// of the cell/sensor/module that holds them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Extremes {
    pub max: u16,
    pub min: u16,
    pub max_number: u16,
    pub min_number: u16,
}

impl Extremes {
    pub fn emit(&self, opts: PylonCanOptions, buf: &mut [u8; 8]) {
        use field::extremes::*;
        put_word(buf, MAX, self.max, opts.byte_order);
        put_word(buf, MIN, self.min, opts.byte_order);
        put_word(buf, MAX_NUMBER, self.max_number, ByteOrder::LittleEndian);
        put_word(buf, MIN_NUMBER, self.min_number, ByteOrder::LittleEndian);
    }
}

/// 0x4250.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BasicStatus {
    pub state: BatteryState,
    pub force_charge: bool,
    pub balance_charge: bool,
    pub cycle_period: u16,
    pub error: u8,
    pub alarm: u16,
    pub protection: u16,
}

impl BasicStatus {
    pub fn emit(&self, buf: &mut [u8; 8]) {
        use field::basic_status::*;
        let mut b0 = self.state.code();
        if self.force_charge {
            b0 |= FORCE_CHARGE;
        }
        if self.balance_charge {
            b0 |= BALANCE_CHARGE;
        }
        buf[STATE] = b0;
        put_word(buf, CYCLE_PERIOD, self.cycle_period, ByteOrder::LittleEndian);
        buf[ERROR] = self.error;
        put_word(buf, ALARM, self.alarm, ByteOrder::LittleEndian);
        put_word(buf, PROTECTION, self.protection, ByteOrder::LittleEndian);
    }
}

/// 0x4280.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    pub charge: bool,
    pub discharge: bool,
}

impl Forbidden {
    pub fn emit(&self, buf: &mut [u8; 8]) {
        let mark = |f: bool| if f { FORBIDDEN_MARK } else { 0 };
        buf[field::forbidden::CHARGE] = mark(self.charge);
        buf[field::forbidden::DISCHARGE] = mark(self.discharge);
    }
}

/// 0x7320.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub cells: u16,
    pub modules: u8,
    pub cells_per_module: u8,
    /// Nominal voltage, 1 V.
    pub voltage_level: u16,
    /// 1 Ah.
    pub capacity_ah: u16,
}

impl Layout {
    /// The pack described as Pylon modules of about [`CELLS_PER_PYLON_MODULE`] cells.
    pub fn from_view(view: &InverterView<'_>) -> Self {
        let cells = view.cells_in_series();
        let modules = (cells / CELLS_PER_PYLON_MODULE).clamp(1, u8::MAX as u16);
        let cells_per_module = (cells / modules).min(u8::MAX as u16) as u8;
        let nominal_dv = (view.max_charge_voltage().0 as u32 + view.min_discharge_voltage().0 as u32) / 2;
        let voltage_level = (nominal_dv / 10) as u16;
        let capacity_ah = match view.total_energy() {
            Some(wh) if voltage_level > 0 => (wh.0 / voltage_level as u32).min(u16::MAX as u32) as u16,
            _ => 0,
        };
        Layout { cells, modules: modules as u8, cells_per_module, voltage_level, capacity_ah }
    }

    pub fn emit(&self, buf: &mut [u8; 8]) {
        use field::layout::*;
        put_word(buf, CELLS, self.cells, ByteOrder::LittleEndian);
        buf[MODULES] = self.modules;
        buf[CELLS_PER_MODULE] = self.cells_per_module;
        put_word(buf, VOLTAGE_LEVEL, self.voltage_level, ByteOrder::LittleEndian);
        put_word(buf, CAPACITY, self.capacity_ah, ByteOrder::LittleEndian);
    }
}

/// One frame the battery owes the inverter.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Answer {
    Status,
    Limits,
    CellVoltages,
    CellTemperatures,
    BasicStatus,
    ModuleVoltages,
    ModuleTemperatures,
    Forbidden,
    FaultExtension,
    Version,
    Layout,
    NameHead,
    NameTail,
    MaskReply,
}

const ENSEMBLE: [Answer; 9] = [
    Answer::Status,
    Answer::Limits,
    Answer::CellVoltages,
    Answer::CellTemperatures,
    Answer::BasicStatus,
    Answer::ModuleVoltages,
    Answer::ModuleTemperatures,
    Answer::Forbidden,
    Answer::FaultExtension,
];
const EQUIPMENT: [Answer; 4] = [Answer::Version, Answer::Layout, Answer::NameHead, Answer::NameTail];
/// Every answer at most once (requests already queued are not queued twice), so the queue never overflows.
const QUEUE_LEN: usize = 16;

impl Answer {
    fn base_id(self) -> u32 {
        match self {
            Answer::Status => id::STATUS,
            Answer::Limits => id::LIMITS,
            Answer::CellVoltages => id::CELL_VOLTAGES,
            Answer::CellTemperatures => id::CELL_TEMPERATURES,
            Answer::BasicStatus => id::BASIC_STATUS,
            Answer::ModuleVoltages => id::MODULE_VOLTAGES,
            Answer::ModuleTemperatures => id::MODULE_TEMPERATURES,
            Answer::Forbidden => id::FORBIDDEN,
            Answer::FaultExtension => id::FAULT_EXTENSION,
            Answer::Version => id::VERSION,
            Answer::Layout => id::LAYOUT,
            Answer::NameHead => id::NAME_HEAD,
            Answer::NameTail => id::NAME_TAIL,
            Answer::MaskReply => id::MASK_REPLY,
        }
    }
}

/// The values the answers carry, derived once per frame from the view (so every rule lives here, not in `emit`).
struct Snapshot {
    status: BatteryStatus,
    limits: Limits,
    cells: Extremes,
    cell_temperatures: Extremes,
    basic: BasicStatus,
    modules: Extremes,
    module_temperatures: Extremes,
    forbidden: Forbidden,
}

fn alarm_word(a: Alarms) -> u16 {
    use alarm_bits::*;
    let mut w = 0;
    let mut map = |cond: Alarms, bits: u16| {
        if a.contains(cond) {
            w |= bits;
        }
    };
    map(Alarms::CELL_UNDER_VOLTAGE, CELL_LOW_VOLTAGE);
    map(Alarms::CELL_OVER_VOLTAGE, CELL_HIGH_VOLTAGE);
    map(Alarms::PACK_UNDER_VOLTAGE, PACK_LOW_VOLTAGE);
    map(Alarms::PACK_OVER_VOLTAGE, PACK_HIGH_VOLTAGE);
    map(Alarms::UNDER_TEMPERATURE, CHARGE_LOW_TEMPERATURE | DISCHARGE_LOW_TEMPERATURE);
    map(Alarms::OVER_TEMPERATURE, CHARGE_HIGH_TEMPERATURE | DISCHARGE_HIGH_TEMPERATURE);
    w
}

impl Snapshot {
    fn new(view: &InverterView<'_>, preset: Preset) -> Self {
        let valid = view.data_valid();
        let alarms = view.alarms();
        let fault = alarms.intersects(Alarms::BMS_FAULT | Alarms::CRITICAL);
        let current = view.current().unwrap_or(DeciAmps::ZERO);
        let t_max = view.temperature_max().unwrap_or(DeciCelsius::ZERO);
        let t_min = view.temperature_min().unwrap_or(DeciCelsius::ZERO);
        let (charge, discharge) = if valid {
            // A negative limit breaks the view's contract: it becomes 0 (forbidden), never its magnitude.
            (view.charge_current_limit(), view.discharge_current_limit())
        } else {
            (DeciAmps::ZERO, DeciAmps::ZERO)
        };
        let charge_forbidden = !valid || fault || limit_magnitude(charge) == 0;
        let discharge_forbidden = !valid || fault || limit_magnitude(discharge) == 0;

        let shown = |(i, v): (usize, MilliVolts)| match preset {
            Preset::Ferroamp => (i, MilliVolts(presented_mv(v, view.chemistry(), view.cell_voltage_range()))),
            Preset::Pylontech | Preset::Solxpow => (i, v),
        };
        let (max_cell, max_mv) = view.cell_max().map_or((0, MilliVolts(0)), shown);
        let (min_cell, min_mv) = view.cell_min().map_or((0, MilliVolts(0)), shown);
        // The pack's own module split, also for the presets (see the module doc).
        let per_module = Layout::from_view(view).cells_per_module.max(1) as usize;
        let margin = match preset {
            Preset::Solxpow => SOLXPOW_CUTOFF_MARGIN,
            Preset::Pylontech | Preset::Ferroamp => DeciVolts::ZERO,
        };
        let number = |i: usize| i.min(u16::MAX as usize) as u16;
        let module_mv = |v: MilliVolts| clamp_u16(v.0 as i64 * per_module as i64);

        let state = if !valid || fault {
            BatteryState::Sleep
        } else if current.0 > 0 {
            BatteryState::Charge
        } else if current.0 < 0 {
            BatteryState::Discharge
        } else {
            BatteryState::Idle
        };
        let mut error = 0;
        if !valid || alarms.contains(Alarms::COMMUNICATION) {
            error |= error_bits::INTERNAL_COMMUNICATION;
        }
        if fault {
            error |= error_bits::OTHER;
        }
        let temps = Extremes { max: temperature_raw(t_max), min: temperature_raw(t_min), max_number: 0, min_number: 0 };

        Snapshot {
            status: BatteryStatus {
                voltage: view.voltage().unwrap_or(DeciVolts::ZERO),
                current,
                temperature: t_max,
                soc: view.soc().unwrap_or(BasisPoints::ZERO),
                soh: view.soh().unwrap_or(UNKNOWN_SOH),
            },
            limits: Limits {
                charge_voltage: DeciVolts(view.max_charge_voltage().0.saturating_sub(margin.0)),
                discharge_voltage: DeciVolts(view.min_discharge_voltage().0.saturating_add(margin.0)),
                charge_current: if charge_forbidden { DeciAmps::ZERO } else { charge },
                discharge_current: if discharge_forbidden { DeciAmps::ZERO } else { discharge },
            },
            cells: Extremes {
                max: max_mv.0,
                min: min_mv.0,
                max_number: number(max_cell),
                min_number: number(min_cell),
            },
            cell_temperatures: temps,
            basic: BasicStatus {
                state,
                force_charge: false,
                balance_charge: false,
                cycle_period: 0,
                error,
                alarm: alarm_word(view.warnings()),
                protection: alarm_word(alarms),
            },
            modules: Extremes {
                max: module_mv(max_mv),
                min: module_mv(min_mv),
                max_number: number(max_cell / per_module),
                min_number: number(min_cell / per_module),
            },
            module_temperatures: temps,
            forbidden: Forbidden { charge: charge_forbidden, discharge: discharge_forbidden },
        }
    }
}

/// The Pylontech HV battery as the inverter sees it.
///
/// `handle_frame` records what the inverter asked for; `poll_transmit` encodes each answer from the view at send
/// time, one frame per call, in the order of the sources (0x4210 first).
#[derive(Clone, Debug)]
pub struct PylonCan {
    options: PylonCanOptions,
    preset: Preset,
    queue: heapless::Deque<Answer, QUEUE_LEN>,
    /// When the oldest queued answer was requested.
    queued_at: Option<Instant>,
    last_heard: Option<Instant>,
    sleep_command: Option<SleepCommand>,
    charge_command: Option<ChargeCommand>,
}

impl PylonCan {
    pub fn new(options: PylonCanOptions) -> Self {
        PylonCan {
            options,
            preset: Preset::Pylontech,
            queue: heapless::Deque::new(),
            queued_at: None,
            last_heard: None,
            sleep_command: None,
            charge_command: None,
        }
    }

    /// The protocol set up as `preset` (its fixed settings; `Pylontech` gets the defaults).
    pub fn with_preset(preset: Preset) -> Self {
        PylonCan { preset, ..PylonCan::new(preset.options().unwrap_or_default()) }
    }

    /// The wire settings in use (a preset's fixed ones, or the user's).
    pub fn options(&self) -> PylonCanOptions {
        self.options
    }

    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// The last 0x8200 command received (kept for telemetry; never acted on).
    pub fn sleep_command(&self) -> Option<SleepCommand> {
        self.sleep_command
    }

    /// The last 0x8210 command received (the inverter's contactor permission).
    pub fn charge_command(&self) -> Option<ChargeCommand> {
        self.charge_command
    }

    fn enqueue(&mut self, now: Instant, answers: &[Answer]) {
        for &a in answers {
            if !self.queue.iter().any(|&q| q == a) {
                // Cannot fail: every answer is queued at most once and QUEUE_LEN covers them all.
                let _ = self.queue.push_back(a);
            }
        }
        if self.queued_at.is_none() && !self.queue.is_empty() {
            self.queued_at = Some(now);
        }
    }

    fn encode(&self, answer: Answer, view: &InverterView<'_>) -> CanFrame {
        let opts = self.options;
        let mut buf = [0u8; 8];
        match answer {
            Answer::Version => buf = VERSION_BYTES,
            Answer::Layout => self.preset.layout(view).emit(&mut buf),
            Answer::NameHead => {
                let name = self.preset.name().unwrap_or(&[]);
                let n = name.len().min(8);
                buf[..n].copy_from_slice(&name[..n]);
            }
            Answer::NameTail => {
                let tail = self.preset.name().unwrap_or(&[]).get(8..).unwrap_or(&[]);
                let n = tail.len().min(8);
                buf[..n].copy_from_slice(&tail[..n]);
            }
            // "Will not act": DBE never keeps the contactors up for an inverter it cannot hear.
            Answer::MaskReply => buf[0] = 0x00,
            Answer::FaultExtension => {}
            _ => {
                let s = Snapshot::new(view, self.preset);
                match answer {
                    Answer::Status => s.status.emit(opts, &mut buf),
                    Answer::Limits => s.limits.emit(opts, &mut buf),
                    Answer::CellVoltages => s.cells.emit(opts, &mut buf),
                    Answer::CellTemperatures => s.cell_temperatures.emit(opts, &mut buf),
                    Answer::BasicStatus => s.basic.emit(&mut buf),
                    Answer::ModuleVoltages => s.modules.emit(opts, &mut buf),
                    Answer::ModuleTemperatures => s.module_temperatures.emit(opts, &mut buf),
                    Answer::Forbidden => s.forbidden.emit(&mut buf),
                    _ => {}
                }
            }
        }
        // Ids are at most 0x825F: always a valid extended id.
        CanFrame::ext8(answer.base_id() + opts.address(), buf)
    }
}

impl CanInverter for PylonCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.is_remote() {
            return Ok(FrameUse::Ignored);
        }
        let Some(raw) = frame.extended_id() else {
            return Ok(FrameUse::Ignored);
        };
        let addr = self.options.address();
        match raw {
            id::REQUEST => {
                let data = require_len(frame, 1)?;
                match Request::from_code(data[0]) {
                    Request::Ensemble => self.enqueue(now, &ENSEMBLE),
                    Request::Equipment => self.enqueue(now, self.preset.equipment()),
                    Request::CellVoltages | Request::Unknown(_) => {}
                }
            }
            id::HEARTBEAT => {}
            r if r == id::SLEEP_COMMAND + addr => {
                let data = require_len(frame, 1)?;
                self.sleep_command = Some(SleepCommand::from_code(data[0]));
            }
            r if r == id::CHARGE_COMMAND + addr => {
                let data = require_len(frame, 2)?;
                self.charge_command = Some(ChargeCommand {
                    charge: data[field::charge_command::CHARGE] == 0xAA,
                    discharge: data[field::charge_command::DISCHARGE] == 0xAA,
                });
            }
            r if r == id::MASK_COMMAND + addr => self.enqueue(now, &[Answer::MaskReply]),
            _ => return Ok(FrameUse::Ignored),
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

    fn contactor_permission(&self) -> Option<bool> {
        self.charge_command.map(|c| c.charge || c.discharge)
    }
}

#[cfg(test)]
mod tests {
    //! The view below is made up; the expected bytes are worked out by hand from the layout in the module doc
    //! (sources: [BE] PYLON-CAN.cpp for positions/options, [diyBMS] for 0x4250/0x7320), written out field by
    //! field so a wrong scale shows up as a wrong byte.
    use super::*;
    use crate::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use crate::supervisor::Output;
    use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours};

    const T0: Instant = Instant::ZERO;

    fn model() -> BatteryModel {
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96,
            max_pack_voltage: DeciVolts(4040),
            min_pack_voltage: DeciVolts(2600),
            max_cell_voltage: MilliVolts(4250),
            min_cell_voltage: MilliVolts(2700),
            max_cell_deviation: MilliVolts(500),
        });
        m.pack_voltage = Some(Reading::new(DeciVolts(3984), T0)); // 398.4 V = 0x0F90
        m.current = Some(Reading::new(DeciAmps(-125), T0)); // -12.5 A (discharging) = 0xFF83, +30000 = 0x74B3
        m.soh = Some(Reading::new(BasisPoints(9876), T0)); // 98 % = 0x62
        m.temperature_min = Some(Reading::new(DeciCelsius(152), T0)); // 15.2 °C + 100 °C = 1152 = 0x0480
        m.temperature_max = Some(Reading::new(DeciCelsius(231), T0)); // 23.1 °C + 100 °C = 1231 = 0x04CF
        let mut cells = [MilliVolts(3900); 96];
        cells[10] = MilliVolts(3850); // lowest: 0x0F0A, cell 10
        cells[42] = MilliVolts(3950); // highest: 0x0F6E, cell 42
        m.cells.set_voltages(T0, &cells);
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(5012)),                                   // 50 % = 0x32
            total_energy: Some(WattHours(20_000)),                          // / 350 V = 57 Ah
            charge_current_limit: DeciAmps(250),                            // 25.0 A = 0x00FA, +30000 = 0x762A
            discharge_current_limit: DeciAmps(300),                         // 30.0 A = 0x012C, 30000- = 0x7404
            max_charge_voltage: DeciVolts(4000),                            // 0x0FA0
            min_discharge_voltage: DeciVolts(3000),                         // 0x0BB8
            warnings: Alarms::CELL_OVER_VOLTAGE | Alarms::OVER_TEMPERATURE, // alarm bits 1, 5, 7 = 0x00A2
            data_valid: true,
            ..Output::default()
        }
    }

    fn opts(byte_order: ByteOrder, offset_30k: bool) -> PylonCanOptions {
        PylonCanOptions { byte_order, offset_30k, address: 0 }
    }

    fn ext(id: u32, data: &[u8]) -> CanFrame {
        CanFrame::extended(id, data).unwrap()
    }

    /// Sends one request and drains every answer.
    fn ask(p: &mut PylonCan, code: u8, m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
        assert_eq!(p.handle_frame(T0, &ext(id::REQUEST, &[code, 0, 0, 0, 0, 0, 0, 0])), Ok(FrameUse::Used));
        let view = InverterView::new(m, out);
        core::iter::from_fn(|| p.poll_transmit(T0, &view)).collect()
    }

    fn ensemble(o: PylonCanOptions, m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
        ask(&mut PylonCan::new(o), 0x00, m, out)
    }

    fn frame(frames: &[CanFrame], id: u32) -> [u8; 8] {
        let f = frames.iter().find(|f| f.extended_id() == Some(id)).expect("answer present");
        assert_eq!(f.len(), 8);
        *f.data8()
    }

    #[test]
    fn ensemble_answers_big_endian_plain() {
        let f = ensemble(opts(ByteOrder::BigEndian, false), &model(), &output());
        let ids: Vec<u32> = f.iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290]);
        // voltage, current (signed), temperature + 1000, SOC %, SOH %
        assert_eq!(frame(&f, 0x4210), [0x0F, 0x90, 0xFF, 0x83, 0x04, 0xCF, 0x32, 0x62]);
        // charge cutoff, discharge cutoff, charge limit, discharge limit
        assert_eq!(frame(&f, 0x4220), [0x0F, 0xA0, 0x0B, 0xB8, 0x00, 0xFA, 0x01, 0x2C]);
        // max/min cell mV (value words), cell numbers (always little-endian)
        assert_eq!(frame(&f, 0x4230), [0x0F, 0x6E, 0x0F, 0x0A, 0x2A, 0x00, 0x0A, 0x00]);
        assert_eq!(frame(&f, 0x4240), [0x04, 0xCF, 0x04, 0x80, 0x00, 0x00, 0x00, 0x00]);
        // discharge state, cycle period 0, no error, alarm word 0x00A2, protection 0
        assert_eq!(frame(&f, 0x4250), [0x02, 0x00, 0x00, 0x00, 0xA2, 0x00, 0x00, 0x00]);
        // 96 cells as 6 modules of 16: 3950 × 16 = 63200 = 0xF6E0 in module 2; 3850 × 16 = 0xF0A0 in module 0
        assert_eq!(frame(&f, 0x4260), [0xF6, 0xE0, 0xF0, 0xA0, 0x02, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4270), [0x04, 0xCF, 0x04, 0x80, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4280), [0x00; 8]);
        assert_eq!(frame(&f, 0x4290), [0x00; 8]);
    }

    #[test]
    fn ensemble_answers_little_endian_plain() {
        let f = ensemble(opts(ByteOrder::LittleEndian, false), &model(), &output());
        assert_eq!(frame(&f, 0x4210), [0x90, 0x0F, 0x83, 0xFF, 0xCF, 0x04, 0x32, 0x62]);
        assert_eq!(frame(&f, 0x4220), [0xA0, 0x0F, 0xB8, 0x0B, 0xFA, 0x00, 0x2C, 0x01]);
        assert_eq!(frame(&f, 0x4230), [0x6E, 0x0F, 0x0A, 0x0F, 0x2A, 0x00, 0x0A, 0x00]);
        assert_eq!(frame(&f, 0x4240), [0xCF, 0x04, 0x80, 0x04, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4250), [0x02, 0x00, 0x00, 0x00, 0xA2, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4260), [0xE0, 0xF6, 0xA0, 0xF0, 0x02, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4270), [0xCF, 0x04, 0x80, 0x04, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4280), [0x00; 8]);
    }

    #[test]
    fn ensemble_answers_with_30k_offset() {
        let (m, out) = (model(), output());
        let be = ensemble(opts(ByteOrder::BigEndian, true), &m, &out);
        // current -125 + 30000 = 29875 = 0x74B3; temperature keeps its +1000 offset only
        assert_eq!(frame(&be, 0x4210), [0x0F, 0x90, 0x74, 0xB3, 0x04, 0xCF, 0x32, 0x62]);
        // charge 30000 + 250 = 0x762A; discharge 30000 - 300 = 0x7404
        assert_eq!(frame(&be, 0x4220), [0x0F, 0xA0, 0x0B, 0xB8, 0x76, 0x2A, 0x74, 0x04]);
        let le = ensemble(opts(ByteOrder::LittleEndian, true), &m, &out);
        assert_eq!(frame(&le, 0x4210), [0x90, 0x0F, 0xB3, 0x74, 0xCF, 0x04, 0x32, 0x62]);
        assert_eq!(frame(&le, 0x4220), [0xA0, 0x0F, 0xB8, 0x0B, 0x2A, 0x76, 0x04, 0x74]);
        // the offset touches nothing else
        for id in [0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290] {
            assert_eq!(frame(&be, id), frame(&ensemble(opts(ByteOrder::BigEndian, false), &m, &out), id));
            assert_eq!(frame(&le, id), frame(&ensemble(opts(ByteOrder::LittleEndian, false), &m, &out), id));
        }
    }

    #[test]
    fn equipment_answers() {
        let (m, out) = (model(), output());
        for o in [opts(ByteOrder::BigEndian, false), opts(ByteOrder::LittleEndian, true)] {
            let f = ask(&mut PylonCan::new(o), 0x02, &m, &out);
            let ids: Vec<u32> = f.iter().map(|f| f.extended_id().unwrap()).collect();
            assert_eq!(ids, [0x7310, 0x7320, 0x7330, 0x7340]);
            // BE's captured version bytes
            assert_eq!(frame(&f, 0x7310), [0x01, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x00]);
            // 96 cells, 6 modules of 16, (400.0 + 300.0) / 2 = 350 V = 0x015E, 20000 Wh / 350 V = 57 Ah
            assert_eq!(frame(&f, 0x7320), [0x60, 0x00, 0x06, 0x10, 0x5E, 0x01, 0x39, 0x00]);
            assert_eq!(&frame(&f, 0x7330), b"PYLONTEC");
            assert_eq!(frame(&f, 0x7340), [b'H', 0, 0, 0, 0, 0, 0, 0]);
        }
    }

    /// The presets' bytes, from the same view (sources: [BE-ferroamp], [BE-solxpow] for ids, byte order, offset,
    /// layout and name; the LFP mapping of [`super::super::lfp`]).
    #[test]
    fn ferroamp_preset_answers_on_group_1_little_endian_with_30k_and_lfp_cells() {
        let (m, out) = (model(), output());
        let mut p = PylonCan::with_preset(Preset::Ferroamp);
        let f = ask(&mut p, 0x00, &m, &out);
        let ids: Vec<u32> = f.iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x4211, 0x4221, 0x4231, 0x4241, 0x4251, 0x4261, 0x4271, 0x4281, 0x4291]);
        // 398.4 V, -12.5 A + 30000 = 0x74B3, 23.1 °C + 100 °C = 0x04CF, 50 %, 98 %
        assert_eq!(frame(&f, 0x4211), [0x90, 0x0F, 0xB3, 0x74, 0xCF, 0x04, 0x32, 0x62]);
        // 400.0 V, 300.0 V, 30000 + 25.0 A = 0x762A, 30000 - 30.0 A = 0x7404
        assert_eq!(frame(&f, 0x4221), [0xA0, 0x0F, 0xB8, 0x0B, 0x2A, 0x76, 0x04, 0x74]);
        // NMC cells mapped from the 2700..4250 mV design window onto 2500..3400 mV:
        // 3950 → 2500 + 1250 × 900 / 1550 = 3225 = 0x0C99 (cell 42); 3850 → 2500 + 1150 × 900 / 1550 = 3167 = 0x0C5F
        assert_eq!(frame(&f, 0x4231), [0x99, 0x0C, 0x5F, 0x0C, 0x2A, 0x00, 0x0A, 0x00]);
        // modules of 16 cells (the pack's split): 3225 × 16 = 51600 = 0xC990 (module 2), 3167 × 16 = 0xC5F0 (0)
        assert_eq!(frame(&f, 0x4261), [0x90, 0xC9, 0xF0, 0xC5, 0x02, 0x00, 0x00, 0x00]);
        // +1000 on the cell temperatures, as the captured templates (not BE's raw writes)
        assert_eq!(frame(&f, 0x4241), [0xCF, 0x04, 0x80, 0x04, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(frame(&f, 0x4281), [0; 8]);

        let f = ask(&mut p, 0x02, &m, &out);
        let ids: Vec<u32> = f.iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x7311, 0x7321], "no name frames");
        assert_eq!(frame(&f, 0x7311), [0x01, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x00]);
        // 120 cells, 4 modules of 30, 384 V = 0x0180, 37 Ah
        assert_eq!(frame(&f, 0x7321), [0x78, 0x00, 0x04, 0x1E, 0x80, 0x01, 0x25, 0x00]);

        // An LFP pack's cells are sent as they are: 3950 mV = 0x0F6E.
        let mut lfp = model();
        lfp.design.chemistry = Chemistry::Lfp;
        let f = ask(&mut p, 0x00, &lfp, &out);
        assert_eq!(frame(&f, 0x4231)[..2], [0x6E, 0x0F]);
        // Its requests are the standard ones: 0x4200 is not moved by the group, 0x4210 is not ours to answer.
        assert_eq!(p.handle_frame(T0, &ext(0x4201, &[0; 8])), Ok(FrameUse::Ignored));
    }

    #[test]
    fn solxpow_preset_is_little_endian_plain_with_its_name_and_inner_cutoffs() {
        let (m, out) = (model(), output());
        let mut p = PylonCan::with_preset(Preset::Solxpow);
        let f = ask(&mut p, 0x00, &m, &out);
        let ids: Vec<u32> = f.iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x4210, 0x4220, 0x4230, 0x4240, 0x4250, 0x4260, 0x4270, 0x4280, 0x4290]);
        // -12.5 A = 0xFF83, plain
        assert_eq!(frame(&f, 0x4210), [0x90, 0x0F, 0x83, 0xFF, 0xCF, 0x04, 0x32, 0x62]);
        // 400.0 - 2.0 = 398.0 V = 0x0F8C, 300.0 + 2.0 = 302.0 V = 0x0BCC, 25.0 A, 30.0 A
        assert_eq!(frame(&f, 0x4220), [0x8C, 0x0F, 0xCC, 0x0B, 0xFA, 0x00, 0x2C, 0x01]);
        // real cells: 3950 = 0x0F6E (cell 42), 3850 = 0x0F0A (cell 10)
        assert_eq!(frame(&f, 0x4230), [0x6E, 0x0F, 0x0A, 0x0F, 0x2A, 0x00, 0x0A, 0x00]);

        let f = ask(&mut p, 0x02, &m, &out);
        let ids: Vec<u32> = f.iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x7310, 0x7320, 0x7330, 0x7340]);
        assert_eq!(frame(&f, 0x7320), [0x78, 0x00, 0x04, 0x1E, 0x80, 0x01, 0x25, 0x00]);
        assert_eq!(&frame(&f, 0x7330), b"XXXXXXXX");
        assert_eq!(&frame(&f, 0x7340), b"XXXXXXXX");

        // 0 A in both directions is forbidden in 0x4280 too, whatever the preset.
        let stop = Output { charge_current_limit: DeciAmps(0), discharge_current_limit: DeciAmps(0), ..output() };
        for preset in [Preset::Ferroamp, Preset::Solxpow] {
            let mut p = PylonCan::with_preset(preset);
            let f = ask(&mut p, 0x00, &m, &stop);
            let forbidden = 0x4280 + preset.options().unwrap().address as u32;
            assert_eq!(frame(&f, forbidden)[..2], [0xAA, 0xAA], "{preset:?}");
        }
    }

    #[test]
    fn presets_are_registry_entries_of_their_own_with_no_settings() {
        use crate::inverter::{AnyInverter, InverterConfig};
        for (kind, preset) in [
            (InverterKind::PylonCan, Preset::Pylontech),
            (InverterKind::FerroampCan, Preset::Ferroamp),
            (InverterKind::SolxpowCan, Preset::Solxpow),
        ] {
            let config = InverterConfig::default_for(kind);
            let any = AnyInverter::new(config);
            assert_eq!(any.kind(), kind);
            assert_eq!(preset.kind(), kind);
            if let AnyInverter::PylonCan(p) = any {
                assert_eq!(p.preset(), preset);
            } else {
                panic!("{kind:?} is not the Pylon encoder");
            }
            assert_eq!(config.options().is_empty(), preset != Preset::Pylontech, "{kind:?}");
        }
    }

    #[test]
    fn address_is_added_to_every_answer_id() {
        let (m, out) = (model(), output());
        let o = PylonCanOptions { address: 1, ..Default::default() };
        let mut p = PylonCan::new(o);
        let ids: Vec<u32> = ask(&mut p, 0x00, &m, &out).iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x4211, 0x4221, 0x4231, 0x4241, 0x4251, 0x4261, 0x4271, 0x4281, 0x4291]);
        let ids: Vec<u32> = ask(&mut p, 0x02, &m, &out).iter().map(|f| f.extended_id().unwrap()).collect();
        assert_eq!(ids, [0x7311, 0x7321, 0x7331, 0x7341]);
        // Same bytes as address 0.
        assert_eq!(
            frame(&ask(&mut p, 0x00, &m, &out), 0x4211),
            frame(&ensemble(PylonCanOptions::default(), &m, &out), 0x4210)
        );
        // Out-of-range addresses stay inside the message's id range.
        let mut p = PylonCan::new(PylonCanOptions { address: 200, ..Default::default() });
        assert_eq!(ask(&mut p, 0x00, &m, &out)[0].extended_id(), Some(0x421F));
    }

    #[test]
    fn zero_limits_are_forbidden() {
        let m = model();
        let out = Output { charge_current_limit: DeciAmps(0), ..output() };
        let f = ensemble(opts(ByteOrder::BigEndian, true), &m, &out);
        assert_eq!(frame(&f, 0x4280), [0xAA, 0x00, 0, 0, 0, 0, 0, 0]);
        // charge limit 0 with the offset is 30000 = 0x7530
        assert_eq!(frame(&f, 0x4220)[4..8], [0x75, 0x30, 0x74, 0x04]);
        let out = Output { discharge_current_limit: DeciAmps(0), ..output() };
        let f = ensemble(opts(ByteOrder::BigEndian, false), &m, &out);
        assert_eq!(frame(&f, 0x4280), [0x00, 0xAA, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame(&f, 0x4220)[4..8], [0x00, 0xFA, 0x00, 0x00]);
    }

    #[test]
    fn invalid_data_forbids_both_and_sleeps() {
        let m = model();
        // Even if a buggy caller left limits up, invalid data sends none of them.
        let out = Output { data_valid: false, alarms: Alarms::COMMUNICATION, ..output() };
        let f = ensemble(opts(ByteOrder::BigEndian, false), &m, &out);
        assert_eq!(frame(&f, 0x4280), [0xAA, 0xAA, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame(&f, 0x4220)[4..8], [0, 0, 0, 0]);
        // sleep, internal-communication error bit, warnings still reported
        assert_eq!(frame(&f, 0x4250), [0x00, 0x00, 0x00, 0x04, 0xA2, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn alarms_map_to_protection_bits() {
        let m = model();
        let out = Output {
            alarms: Alarms::CELL_UNDER_VOLTAGE
                | Alarms::PACK_OVER_VOLTAGE
                | Alarms::UNDER_TEMPERATURE
                | Alarms::BMS_FAULT
                | Alarms::CELL_DEVIATION,
            warnings: Alarms::PACK_UNDER_VOLTAGE,
            ..output()
        };
        let f = ensemble(opts(ByteOrder::BigEndian, false), &m, &out);
        // sleep (fault), error bit 7; alarm word bit 2; protection bits 0, 3, 4, 6 = 0x0059
        assert_eq!(frame(&f, 0x4250), [0x00, 0x00, 0x00, 0x80, 0x04, 0x00, 0x59, 0x00]);
        assert_eq!(frame(&f, 0x4280), [0xAA, 0xAA, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_values_are_sent_as_zero_except_soh() {
        let m = BatteryModel::new(model().design);
        let out = Output { data_valid: false, ..Output::default() };
        let f = ensemble(opts(ByteOrder::LittleEndian, true), &m, &out);
        // 0 V, 0 A (30000), 0 °C (1000), 0 % SOC, SOH unknown: 99 %
        assert_eq!(frame(&f, 0x4210), [0x00, 0x00, 0x30, 0x75, 0xE8, 0x03, 0x00, 0x63]);
        assert_eq!(frame(&f, 0x4230), [0; 8]);
        assert_eq!(frame(&f, 0x4280), [0xAA, 0xAA, 0, 0, 0, 0, 0, 0]);
    }

    /// BE sends its datalayer default `soh_pptt = 9900` (99 %) until a pack reports an SOH; 0 % would tell the
    /// inverter the battery is worn out.
    #[test]
    fn unknown_soh_is_99_percent() {
        let mut m = model();
        m.soh = None;
        let f = ensemble(opts(ByteOrder::BigEndian, false), &m, &output());
        assert_eq!(frame(&f, 0x4210)[7], 99);
    }

    #[test]
    fn negative_limits_are_sent_as_forbidden() {
        let out = Output { charge_current_limit: DeciAmps(-50), discharge_current_limit: DeciAmps(-1), ..output() };
        let f = ensemble(opts(ByteOrder::BigEndian, false), &model(), &out);
        assert_eq!(frame(&f, 0x4220)[4..8], [0, 0, 0, 0]);
        assert_eq!(frame(&f, 0x4280), [0xAA, 0xAA, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn state_follows_the_current_sign() {
        let out = output();
        for (current, state) in [(125, 1u8), (0, 3), (-1, 2)] {
            let mut m = model();
            m.current = Some(Reading::new(DeciAmps(current), T0));
            assert_eq!(frame(&ensemble(PylonCanOptions::default(), &m, &out), 0x4250)[0], state);
        }
    }

    #[test]
    fn answers_carry_the_values_at_send_time() {
        let mut p = PylonCan::new(PylonCanOptions::default());
        let t = Instant::from_millis(500);
        assert_eq!(p.poll_timeout(), None);
        p.handle_frame(t, &ext(id::REQUEST, &[0x00])).unwrap();
        assert_eq!(p.poll_timeout(), Some(t));
        assert_eq!(p.last_heard(), Some(t));
        let mut m = model();
        m.pack_voltage = Some(Reading::new(DeciVolts(3700), t)); // changed after the request
        let out = output();
        let view = InverterView::new(&m, &out);
        let first = p.poll_transmit(t, &view).unwrap();
        assert_eq!(first.data()[0..2], [0x0E, 0x74]);
        // A repeated request while answering does not queue duplicates.
        p.handle_frame(t, &ext(id::REQUEST, &[0x00])).unwrap();
        let rest: Vec<_> = core::iter::from_fn(|| p.poll_transmit(t, &view)).collect();
        assert_eq!(rest.len(), 9); // 0x4220..0x4290 and the re-requested 0x4210 at the end
        assert_eq!(rest.last().unwrap().extended_id(), Some(0x4210));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn other_requests_and_commands() {
        let (m, out) = (model(), output());
        let view = InverterView::new(&m, &out);
        let mut p = PylonCan::new(PylonCanOptions::default());
        let t = Instant::from_millis(7);
        // Cell-voltage and unknown requests are heard but not answered.
        for code in [0x01, 0x7F] {
            assert_eq!(p.handle_frame(t, &ext(id::REQUEST, &[code])), Ok(FrameUse::Used));
            assert_eq!(p.poll_transmit(t, &view), None);
        }
        assert_eq!(Request::from_code(0x7F), Request::Unknown(0x7F));
        assert_eq!(p.handle_frame(t, &ext(id::HEARTBEAT, &[1, 0, 0, 0, 0, 0, 0, 0])), Ok(FrameUse::Used));
        assert_eq!(p.handle_frame(t, &ext(0x8200, &[0x55, 0, 0, 0, 0, 0, 0, 0])), Ok(FrameUse::Used));
        assert_eq!(p.sleep_command(), Some(SleepCommand::Sleep));
        p.handle_frame(t, &ext(0x8200, &[0x12])).unwrap();
        assert_eq!(p.sleep_command(), Some(SleepCommand::Unknown(0x12)));
        assert_eq!(p.handle_frame(t, &ext(0x8210, &[0xAA, 0x00])), Ok(FrameUse::Used));
        assert_eq!(p.charge_command(), Some(ChargeCommand { charge: true, discharge: false }));
        // The "ignore lost communication" request is refused.
        assert_eq!(p.handle_frame(t, &ext(0x8240, &[0xAA])), Ok(FrameUse::Used));
        let reply = p.poll_transmit(t, &view).unwrap();
        assert_eq!((reply.extended_id(), *reply.data8()), (Some(0x8250), [0; 8]));
        // Commands for another address are not ours.
        assert_eq!(p.handle_frame(t, &ext(0x8201, &[0x55])), Ok(FrameUse::Ignored));
    }

    #[test]
    fn bad_frames_are_rejected_without_effect() {
        let mut p = PylonCan::new(PylonCanOptions::default());
        let t = Instant::from_millis(3);
        assert_eq!(
            p.handle_frame(t, &ext(id::REQUEST, &[])),
            Err(DecodeError::WrongLength { id: 0x4200, expected: 1, got: 0 })
        );
        assert_eq!(
            p.handle_frame(t, &ext(id::CHARGE_COMMAND, &[0xAA])),
            Err(DecodeError::WrongLength { id: 0x8210, expected: 2, got: 1 })
        );
        assert_eq!(
            p.handle_frame(t, &ext(0x8200, &[])),
            Err(DecodeError::WrongLength { id: 0x8200, expected: 1, got: 0 })
        );
        assert_eq!(p.last_heard(), None);
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.charge_command(), None);
        // Standard ids, remote frames and other extended ids belong to someone else.
        assert_eq!(p.handle_frame(t, &CanFrame::standard(0x420, &[0]).unwrap()), Ok(FrameUse::Ignored));
        let remote = <CanFrame as embedded_can::Frame>::new_remote(ExtendedId::new(0x4200).unwrap(), 1).unwrap();
        assert_eq!(p.handle_frame(t, &remote), Ok(FrameUse::Ignored));
        assert_eq!(p.handle_frame(t, &ext(0x4210, &[0; 8])), Ok(FrameUse::Ignored));
        assert_eq!(p.last_heard(), None);
    }

    use crate::can::ExtendedId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_frame_is_handled_without_panic(
            raw in prop_oneof![0u32..0x800, 0x3000u32..0x9000, 0u32..0x2000_0000],
            extended in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..=8),
            address in any::<u8>(),
            offset_30k in any::<bool>(),
            little in any::<bool>(),
        ) {
            let order = if little { ByteOrder::LittleEndian } else { ByteOrder::BigEndian };
            let mut p = PylonCan::new(PylonCanOptions { byte_order: order, offset_30k, address });
            let frame = if extended { CanFrame::extended(raw, &data) } else { CanFrame::standard((raw & 0x7FF) as u16, &data) };
            let frame = frame.unwrap();
            let before = p.last_heard();
            match p.handle_frame(Instant::from_millis(1), &frame) {
                Ok(FrameUse::Used) => prop_assert!(p.last_heard().is_some()),
                _ => prop_assert_eq!(p.last_heard(), before),
            }
            let (m, out) = (model(), output());
            let view = InverterView::new(&m, &out);
            let mut n = 0;
            while p.poll_transmit(Instant::from_millis(1), &view).is_some() {
                n += 1;
                prop_assert!(n <= QUEUE_LEN);
            }
        }
    }
}
