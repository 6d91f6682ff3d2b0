//! Nissan LEAF battery packs: ZE0 (2011-13, 24 kWh), AZE0 (2013-17, 24/30 kWh), ZE1 (2018+, 40/62 kWh).
//!
//! The pack's controller (LBC) broadcasts its state on EV-CAN and answers diagnostic group polls; it stays awake
//! and keeps its main relays closed while "the car" (the VCM) keeps talking to it.
//!
//! Sources of the facts (IDs, bit positions, scales, periods, checksums):
//! - dalathegreat/Battery-Emulator `Software/src/battery/NISSAN-LEAF-BATTERY.{h,cpp}` (BE): every message below,
//!   the generation detection, the group poll (0x79B/0x7BB, groups 0x01/0x02/0x04/0x06 and their byte layouts),
//!   the VCM frames the pack needs (0x1D4, 0x1F2, 0x50B, 0x50C; ZE1 extras 0x355, 0x3B8, 0x5C5, 0x626, 0x5EC) with
//!   their templates, counters and checksum tables, the design limits and the LBC thermistor conversion.
//! - dalathegreat/leaf_can_bus_messages EV-CAN DBC (`SG_ LB_Current : 7|11@0-`, `LB_Total_Voltage : 23|10@0+`,
//!   both 0.5 per bit; current range -400..200 A): the signal positions of 0x1DB agree with BE.
//!
//! - dalathegreat/leaf_can_bus_messages `EV-can_ZE0.dbc`, `EV-can_AZE0.dbc`, `EV-can_ZE1.dbc` (DBC): the periods
//!   (`CM_ BO_` comments) and the per-generation layouts of 0x5BC and 0x5C0.
//! - openvehicles/Open-Vehicle-Monitoring-System-3 `vehicle_nissanleaf.cpp` (OVMS): the group 0x01 reply lengths
//!   and Hx positions (`PollReply_Battery`), the 0x5C0 temperature (`d[2] / 2 - 40` when the mux is 1).
//!
//! Generation and temperatures (one source per generation, none before the generation is known):
//! - Markers (BE, DBC periods): 0x59E (500 ms) is sent by AZE0 and ZE1 packs only; 0x5EB (500 ms), 0x1C2 (10 ms),
//!   0x1ED (10 ms, 62 kWh), 0x380 and 0x5BF mean a ZE1. A ZE1 marker decides at once; 0x59E decides AZE0 at once
//!   (a ZE1 marker arriving later still upgrades it). A ZE0 sends no marker, so it is recognised by silence: no
//!   marker within [`GENERATION_WINDOW`] (3 s, six periods of the slowest marker) of the first frame decoded from
//!   the pack. A marker after that upgrades the generation and drops the temperatures read under the old one.
//! - Until the generation is known the model holds no temperature, so the supervisor allows no current: byte 3 of
//!   0x5BC is the ZE0's average temperature (ZE0 DBC `LB_Average_Battery_Temperature`, 1 °C, -40) but on AZE0 and
//!   ZE1 packs it is `LB_Temperature_Segment_For_Dash` (0.4166 % per bit), not a temperature at all.
//! - ZE0: 0x5BC byte 3; BE reports min as 1 °C below the average. 0x5BC is 100 ms in the AZE0/ZE1 DBC and BE
//!   treats it as such; the ZE0 DBC says 500 ms, so its 3 s maximum age is at least six periods.
//! - AZE0: 0x5C0, 500 ms in all three DBC files, multiplexed by byte 0's top two bits (DBC
//!   `LB_Historical_Data_Swich_Flag`: 1 max, 2 average, 3 min, 0 not calculated). The packs step through 1, 2, 3
//!   (BE's `VCU-CAN.cpp`, which plays a LEAF pack to a LEAF VCM, sends 0x40, 0x80, 0xC0 in turn every 500 ms), so
//!   each bound is refreshed every 1.5 s; the maximum age is three such refreshes, 4.5 s. Both bounds must have
//!   been received before either is put in the model (BE does the same with its `86` placeholders). The value is
//!   `d[2] / 2 - 40` °C (BE, OVMS). The AZE0 DBC gives the 7-bit field 0.5 °C per bit, but its own range
//!   (-40..86 °C) only fits 1 °C per bit, which the ZE0 and ZE1 DBC files also give; DBE follows BE and OVMS.
//! - ZE1: the group 0x04 poll (BE: "the mux is different on other generations", the ZE1 DBC moves the 0x5C0 mux
//!   to bits 0-2); its maximum age is three poll rounds (24 s). Group 0x04 replies of ZE0/AZE0 packs are ignored.
//!
//! Group 0x01 (high-precision values): the layout follows the reply's announced ISO-TP length, as BE and OVMS
//! decide it. 0x29 (ZE0, 24 kWh) and 0x2B (AZE0, 30 kWh): Hx at payload bytes 26..27 (after `61 01`), already in
//! 0.01 %. 0x35 (ZE1): Hx at bytes 28..29, raw / 102.4 % (BE: `raw × 125 / 128`, rounded, in 0.01 %). Any other
//! length (a ZE1 answers 0x2C just after waking up) is a layout nobody knows: nothing is decoded from it and the
//! last Hx stays. Insulation resistance (bytes 22..23) is read from the three known layouts only.
//!
//! Choices where the sources are silent or disagree:
//! - Sign of current: the DBC marks `LB_Current` signed with range -400..+200 A; the larger magnitude is the motor's
//!   draw, so negative is discharge. That is DBE's convention too (positive = charging), so the raw sign is kept.
//! - CRC: BE uses a 256-entry table; it is CRC-8 polynomial 0x85 ([`crate::crc::crc8_0x85`]), checked against
//!   BE's precomputed 0x1D4 checksums.
//! - 0x1F2's last byte: BE cycles 20 precomputed values; they are `0x80 | (nibble sum of bytes 0-6 + 0xA) & 0xF`,
//!   pinned against all 20 of BE's values in the tests.
//! - ZE1 0x3B8 (100 ms, BE): byte 2 is a counter 0-14 that BE steps before each send (so it starts at 1); byte 1
//!   alternates 0xE8/0xC8 on every frame, whatever the counter. BE's very first two frames both carry 0xE8 (its
//!   template starts at 0xE8 and its flag's first toggle writes 0xE8 again), a start-up artefact; DBE alternates
//!   from the first frame.
//! - Maximum GIDs: 30/40/62 kWh packs multiplex it into 0x5BC (`d[5] & 0x10`, DBC AZE0 `LB_MaxGIDS`); 24 kWh
//!   packs never send it and BE starts from 273 (21 kWh). DBE takes 273 for a ZE0 or AZE0 until the multiplex
//!   says otherwise, whichever of 0x59E and 0x5BC comes first. A ZE1 (40/62 kWh only) waits for the multiplex: 273
//!   would be half its size.
//! - 12 V supply: when the LBC's 12 V sags it reports impossible cell voltages; BE raises `EVENT_12V_LOW` when a
//!   cell reads above 60 V. DBE drops every cell report with a cell at or above 6 V (no LEAF cell can read that;
//!   the only known cause is the supply) and sets [`BmsFaults::SUPPLY_12V_LOW`] until the next good report.
//! - Interlock (`LB_INTER_LOCK`, 0x1DB byte 3 bit 3): it reads seated only with both HV connectors (the 80 kW and
//!   the 6 kW one) plugged in, which many stationary installs do not do. BE makes it an option
//!   (`INTERLOCKREQ`, off by default for every generation). DBE's [`InterlockPolicy`]: `Auto` (the default)
//!   requires it on a ZE0 (2011-12 packs; stricter than BE, whose option is off by default for every
//!   generation) and while the generation is not yet known, and only warns on AZE0/ZE1; `Required` and `WarnOnly` say it for every generation. Required and open:
//!   [`BmsFaults::HVIL_OPEN`]. Tolerated and open: [`BmsWarnings::INTERLOCK_OPEN`], which limits nothing.
//! - Contactors: a LEAF's main relays are hardwired (in the car the VCM drives them with 12 V lines; BE's wiki,
//!   "Contactor Control via GPIO pins"), so no CAN frame opens or closes them: the pack supports the `relays` and
//!   `none` contactor modes only, and [`Battery::set_contactors`] changes nothing on the wire. The VCM frames
//!   (0x1D4/0x1F2 every 10 ms, 0x50B/0x50C every 100 ms, the ZE1 extras) go out whenever the pack is heard, as BE
//!   sends them: they keep the LBC awake and content, and stopping them would open nothing.
//! - Poll cadence: BE polls one group every 10 s. DBE polls one group every 2 s (cells every 8 s) so the cell
//!   monitor and the cell-voltage rules see changes quickly; a stalled reply is abandoned after 1 s. The polls run
//!   on the shared diagnostic poller ([`crate::diag`]) with BE's frames (see `DIAG`).
//! - The pack does not report its relay state on these frames usefully, so `model.contactors` stays `Unknown`
//!   except that `LB_MainRelayOn_flag` (0x1DB) is exposed as the extra `main_relay_on_permission`.
//! - The pack's own requests are typed ([`crate::model::BmsRequests`]) and stand until the pack withdraws them:
//!   `LB_Relay_Cut_Request` ≠ 0 → open relays; `LB_Failsafe_Status` (see [`Failsafe`]) → charge / discharge stop and
//!   the caution warning; `LB_Full_CHARGE_flag` → full; `LB_Capacity_Empty` or GIDs under [`EMPTY_GIDS`] → empty.
//!   BE instead zeroes the BMS power limit in the frame that carries the flag, so the next 0x1DC restored it.
//! - Required readings: see `REQUIRED_*` below; the design counts as confirmed from the first 0x1DB that checks out.
//! - BMS reset: BE's SOH-reset sequence needs a challenge-response algorithm of Nissan's; DBE does not implement it
//!   (`bms_reset` is unsupported).

use crate::battery::{Battery, ContactorRequest, Unsupported};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::crc::crc8_0x85;
use crate::diag::isotp::{Config as IsoTpConfig, Padding, SeparationTime};
use crate::diag::poller::{Heard, PollRequest, Poller, PollerConfig, Service};
use crate::model::{
    BatteryModel, BmsFaults, BmsRequests, BmsStatus, BmsWarnings, Chemistry, DesignStatus, ExtraDescriptor, FlagId,
    NumberId, PackDesign, Quantity, Reading, Requirement, StateClass, TextId,
};
use crate::options::{self, OptionField, OptionKind, OptionValue};
use crate::time::{earliest, Duration, Instant, Periodic};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours, Watts};

pub const SUPPORTS: &str = "voltage, current, SOC, SOH, GIDs, Hx, BMS power limits, 96 cells + balancing, \
temperatures, HVIL, relay-cut/failsafe, generation detection (ZE0/AZE0/ZE1); BMS reset: no";

/// Design facts (BE `NISSAN-LEAF-BATTERY.h`: 405.5/240.0 V pack, 4224/2500 mV cell emergency limits, 150 mV
/// maximum deviation, 96 cells).
pub const DESIGN: PackDesign = PackDesign {
    chemistry: Chemistry::Nmc,
    cells: 96,
    max_pack_voltage: DeciVolts(4055),
    min_pack_voltage: DeciVolts(2400),
    max_cell_voltage: MilliVolts(4224),
    min_cell_voltage: MilliVolts(2500),
    max_cell_deviation: MilliVolts(150),
};

/// The readings without which no current flows, with their maximum ages: three periods of the source's frame
/// rounded up to BE's own periods (0x1DB/0x1DC every 10 ms → 1 s; 0x55B and 0x5BC every 100 ms → 3 s), and three
/// rounds of the group poll for cells and the ZE1's polled temperatures (one group every 2 s, four groups: 8 s a
/// round → 24 s).
const fn common(temperature_age: Duration) -> [Requirement; 9] {
    [
        Requirement::new(Quantity::PackVoltage, Duration::from_secs(1)),
        Requirement::new(Quantity::Current, Duration::from_secs(1)),
        Requirement::new(Quantity::Status, Duration::from_secs(1)),
        Requirement::new(Quantity::BmsChargePower, Duration::from_secs(1)),
        Requirement::new(Quantity::BmsDischargePower, Duration::from_secs(1)),
        Requirement::new(Quantity::Soc, Duration::from_secs(3)),
        Requirement::new(Quantity::Cells, Duration::from_secs(24)),
        Requirement::new(Quantity::TemperatureMin, temperature_age),
        Requirement::new(Quantity::TemperatureMax, temperature_age),
    ]
}

/// ZE0: temperatures from 0x5BC (100 ms by BE; 500 ms by the ZE0 DBC, so 3 s is at least six periods). Also used
/// while the generation is not known: temperatures are required but none is decoded then, so nothing flows.
const REQUIRED_ZE0: [Requirement; 9] = common(Duration::from_secs(3));
/// AZE0: temperatures from the 0x5C0 multiplex (500 ms a frame, max/average/min in turn: each bound every 1.5 s;
/// three refreshes → 4.5 s).
const REQUIRED_AZE0: [Requirement; 9] = common(Duration::from_millis(4500));
/// ZE1: temperatures from the group-4 poll (three poll rounds of 8 s).
const REQUIRED_ZE1: [Requirement; 9] = common(Duration::from_secs(24));

/// The values shown to people (the web page's pack panel, MQTT `info`, Home Assistant, `/metrics`), in the order
/// of BE's "More battery info" page for the LEAF (`NISSAN-LEAF-HTML.h`). BE's MQTT names where it publishes the
/// value (`mqtt.cpp`: `leaf_hx` in % with 2 decimals, `insulation_resistance` in kΩ, both measurements). None has
/// safety meaning: the requests, faults and warnings decoded from the same frames are typed in the model.
pub const EXTRAS: &[ExtraDescriptor] = &[
    ExtraDescriptor::text("generation", "LEAF generation"),
    ExtraDescriptor::number("gids", "GIDs").state_class(StateClass::Measurement),
    ExtraDescriptor::number("leaf_hx", "Hx").decimals(2).unit("%").state_class(StateClass::Measurement),
    ExtraDescriptor::number("insulation_resistance", "Insulation resistance")
        .unit("kΩ")
        .state_class(StateClass::Measurement),
    ExtraDescriptor::number("failsafe_status", "Failsafe status"),
    ExtraDescriptor::flag("main_relay_on_permission", "Main relay on permission"),
    ExtraDescriptor::flag("interlock", "Interlock seated"),
];

/// Handles of [`EXTRAS`] (looked up once, at compile time).
mod extra {
    use super::*;
    pub const GENERATION: TextId = TextId::of(EXTRAS, "generation");
    pub const GIDS: NumberId = NumberId::of(EXTRAS, "gids");
    pub const HX: NumberId = NumberId::of(EXTRAS, "leaf_hx");
    pub const INSULATION: NumberId = NumberId::of(EXTRAS, "insulation_resistance");
    pub const FAILSAFE: NumberId = NumberId::of(EXTRAS, "failsafe_status");
    pub const MAIN_RELAY_ON: FlagId = FlagId::of(EXTRAS, "main_relay_on_permission");
    pub const INTERLOCK: FlagId = FlagId::of(EXTRAS, "interlock");
}

/// Below this many GIDs the pack counts as empty (BE `update_values`: "battery_GIDS < 10 ... 700Wh left").
pub const EMPTY_GIDS: u16 = 10;

/// `LB_Failsafe_Status` (0x1DB byte 1, bits 0-2). BE's `update_values` names the bits: 1 normal stop request
/// ("fully discharged"), 2 charging mode stop request ("fully charged"), 4 caution lamp request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Failsafe(pub u8);

impl Failsafe {
    const NORMAL_STOP: u8 = 0x01;
    const CHARGING_STOP: u8 = 0x02;
    const CAUTION: u8 = 0x04;

    /// Values 2, 3, 6, 7. BE raises its charge-stop event only for 6 and 7 (with the caution lamp) and ignores 2
    /// and 3 because it never opens contactors for them; DBE does not open either, it only stops charging, so the
    /// pack's "fully charged" is honoured without the lamp.
    pub fn charge_stop(self) -> bool {
        self.0 & Self::CHARGING_STOP != 0
    }

    /// Values 1, 3, 5, 7. BE raises its discharge-stop event for 5 and 7 and ignores 1 and 3 ("fully discharged ...
    /// it's OK to stop the session"); a pack that says it is fully discharged gets no more discharge from DBE.
    pub fn discharge_stop(self) -> bool {
        self.0 & Self::NORMAL_STOP != 0
    }

    pub fn caution(self) -> bool {
        self.0 & Self::CAUTION != 0
    }
}

/// How long after the first frame from the pack a missing AZE0/ZE1 marker means a ZE0: six periods of the slowest
/// marker (0x59E and 0x5EB, 500 ms).
pub const GENERATION_WINDOW: Duration = Duration::from_secs(3);

/// Maximum GIDs of the 24 kWh packs, which do not multiplex it into 0x5BC (BE's start value).
pub const MAX_GIDS_24KWH: u16 = 273;

/// Energy per GID (BE `WH_PER_GID`).
pub const WH_PER_GID: u32 = 77;

/// CAN identifiers.
pub mod id {
    pub const BATTERY_STATE: u16 = 0x1DB;
    pub const POWER_LIMITS: u16 = 0x1DC;
    pub const SOC: u16 = 0x55B;
    pub const GIDS: u16 = 0x5BC;
    pub const HISTORY: u16 = 0x5C0;
    /// Only AZE0 and ZE1 packs send it.
    pub const AZE0_MARKER: u16 = 0x59E;
    /// Any of these means a ZE1 pack.
    pub const ZE1_MARKERS: [u16; 5] = [0x380, 0x5EB, 0x5BF, 0x1ED, 0x1C2];
    pub const DIAG_REQUEST: u16 = 0x79B;
    pub const DIAG_RESPONSE: u16 = 0x7BB;
    pub const VCM_1D4: u16 = 0x1D4;
    pub const VCM_1F2: u16 = 0x1F2;
    pub const VCM_50B: u16 = 0x50B;
    pub const VCM_50C: u16 = 0x50C;
    pub const ZE1_355: u16 = 0x355;
    pub const ZE1_3B8: u16 = 0x3B8;
    pub const ZE1_5C5: u16 = 0x5C5;
    pub const ZE1_626: u16 = 0x626;
    pub const ZE1_5EC: u16 = 0x5EC;
}

/// Diagnostic groups polled with `02 21 GG` (BE `PIDgroups`, the ones DBE decodes).
pub mod group {
    /// High-precision values: insulation resistance, Hx.
    pub const PRECISION: u8 = 0x01;
    pub const CELLS: u8 = 0x02;
    pub const TEMPERATURES: u8 = 0x04;
    pub const BALANCING: u8 = 0x06;
    pub const POLLED: [u8; 4] = [PRECISION, CELLS, TEMPERATURES, BALANCING];
}

/// Which pack generation the bus shows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    Ze0,
    Aze0,
    Ze1,
}

impl Generation {
    pub fn name(self) -> &'static str {
        match self {
            Generation::Ze0 => "ZE0",
            Generation::Aze0 => "AZE0",
            Generation::Ze1 => "ZE1",
        }
    }
}

/// What an open high-voltage interlock (`LB_INTER_LOCK`) does: stop the pack, or only be reported.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum InterlockPolicy {
    /// Required on a ZE0 and while the generation is not yet known; a warning on AZE0 and ZE1.
    #[default]
    Auto,
    /// Required on every generation: an open loop is [`BmsFaults::HVIL_OPEN`] (0 A, contactors open).
    Required,
    /// Only a warning on every generation, ZE0 included: [`BmsWarnings::INTERLOCK_OPEN`].
    WarnOnly,
}

impl InterlockPolicy {
    pub const ALL: [InterlockPolicy; 3] = [InterlockPolicy::Auto, InterlockPolicy::Required, InterlockPolicy::WarnOnly];

    /// The words of [`Self::ALL`], for the config file's choices.
    pub const NAMES: [&'static str; 3] = [Self::ALL[0].name(), Self::ALL[1].name(), Self::ALL[2].name()];

    /// The word used in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            InterlockPolicy::Auto => "auto",
            InterlockPolicy::Required => "required",
            InterlockPolicy::WarnOnly => "warn",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether an open interlock is a fault for a pack of this generation (`None`: not yet known).
    pub fn requires(self, generation: Option<Generation>) -> bool {
        match self {
            InterlockPolicy::Required => true,
            InterlockPolicy::WarnOnly => false,
            InterlockPolicy::Auto => !matches!(generation, Some(Generation::Aze0 | Generation::Ze1)),
        }
    }
}

/// The driver's options (the config file's `[battery.nissan_leaf]`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NissanLeafOptions {
    pub interlock: InterlockPolicy,
}

impl crate::options::DriverOptions for NissanLeafOptions {
    const FIELDS: &'static [OptionField<Self>] = &[OptionField {
        name: "interlock",
        help: "What an open high-voltage interlock (both HV connectors seated) does: \"auto\" requires it on a ZE0 \
               (2011-13) and only warns on AZE0/ZE1; \"required\" stops the pack on every generation; \"warn\" only \
               warns, on a ZE0 too (a weakened safety rule).",
        kind: OptionKind::Choice(&InterlockPolicy::NAMES),
        get: |o| OptionValue::Word(o.interlock.name()),
        set: |o, v| o.interlock = InterlockPolicy::from_name(options::word(v)).unwrap_or_default(),
    }];
}

fn checked(frame: &CanFrame) -> Result<&[u8; 8], DecodeError> {
    let d = require_len(frame, 8)?;
    let computed = crc8_0x85(&d[..7]);
    if computed != d[7] {
        return Err(DecodeError::BadChecksum { id: frame.raw_id(), got: d[7], computed });
    }
    Ok(d)
}

/// 10 bits starting at the top of byte `i`: `d[i] << 2 | d[i+1] >> 6` (the layout of most LEAF values).
fn ten_bits(d: &[u8; 8], i: usize) -> u16 {
    (d[i] as u16) << 2 | (d[i + 1] as u16) >> 6
}

/// 0x1DB: the pack's electrical state (10 ms, CRC).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatteryState {
    /// Positive = charging, 0.5 A per bit on the wire.
    pub current: DeciAmps,
    /// `None` when the pack reports 0x3FF (not available yet).
    pub voltage: Option<DeciVolts>,
    pub relay_cut_request: u8,
    pub failsafe_status: u8,
    pub main_relay_on_permission: bool,
    pub full_charge: bool,
    pub interlock_ok: bool,
}

impl BatteryState {
    pub fn parse(d: &[u8; 8]) -> Self {
        let raw_current = (d[0] as u16) << 3 | (d[1] as u16) >> 5;
        // 11-bit two's complement.
        let current = ((raw_current << 5) as i16) >> 5;
        let raw_voltage = ten_bits(d, 2);
        BatteryState {
            current: DeciAmps(current as i32 * 5),
            voltage: (raw_voltage != 0x3FF).then_some(DeciVolts(raw_voltage * 5)),
            relay_cut_request: (d[1] >> 3) & 0x03,
            failsafe_status: d[1] & 0x07,
            main_relay_on_permission: d[3] & 0x20 != 0,
            full_charge: d[3] & 0x10 != 0,
            interlock_ok: d[3] & 0x08 != 0,
        }
    }
}

/// 0x1DC: the pack's power limits (10 ms, CRC), 0.25 kW per bit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PowerLimits {
    pub discharge: Watts,
    pub charge: Watts,
}

impl PowerLimits {
    pub fn parse(d: &[u8; 8]) -> Self {
        let discharge = ten_bits(d, 0);
        let charge = ((d[1] as u16 & 0x3F) << 4) | (d[2] as u16) >> 4;
        PowerLimits { discharge: Watts(discharge as i32 * 250), charge: Watts(charge as i32 * 250) }
    }
}

/// 0x55B: state of charge (100 ms, CRC), 0.1 % per bit; 0x3FF = not available.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Soc {
    pub soc: Option<BasisPoints>,
    pub empty: bool,
}

impl Soc {
    pub fn parse(d: &[u8; 8]) -> Self {
        let raw = ten_bits(d, 0);
        Soc { soc: (raw != 0x3FF).then_some(BasisPoints(raw * 10)), empty: d[6] & 0x80 != 0 }
    }
}

/// 0x5BC: GIDs (or, multiplexed, the maximum GIDs), SOH, and the ZE0's average temperature (100 ms, no CRC).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Gids {
    pub gids: u16,
    /// Set when `gids` is the pack's maximum (30/40/62 kWh packs multiplex it in).
    pub is_max: bool,
    /// `None` when the field is 0 (not reported).
    pub soh_percent: Option<u8>,
    /// Byte 3 read as the ZE0's average temperature. On AZE0 and ZE1 packs the same byte is the dashboard's
    /// temperature segment (0.4166 % per bit), so this is a temperature only once the pack is known to be a ZE0.
    pub average_temperature_c: i16,
}

impl Gids {
    pub fn parse(d: &[u8; 8]) -> Self {
        Gids {
            gids: ten_bits(d, 0),
            is_max: d[5] & 0x10 != 0,
            soh_percent: Some(d[4] >> 1).filter(|&s| s != 0),
            average_temperature_c: d[3] as i16 - 40,
        }
    }
}

/// Which value a 0x5C0 frame carries (AZE0 DBC `LB_Historical_Data_Swich_Flag`, byte 0 bits 6-7).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HistoryMux {
    NotCalculated,
    Max,
    Average,
    Min,
}

/// 0x5C0 in the ZE0/AZE0 layout: one multiplexed history value (500 ms, no CRC), and the heater's request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub mux: HistoryMux,
    /// `LB_HistData_Temperature_*`: byte 2 / 2 - 40 °C (see the module doc for the scale).
    pub temperature: DeciCelsius,
    /// `Batt_Heater_Mail_Send_Request` (byte 1 bit 0), acknowledged in 0x50B.
    pub heater_request: bool,
}

impl History {
    /// Needs 3 bytes (the pack sends 8).
    pub fn parse(d: &[u8]) -> Self {
        let mux = match d[0] >> 6 {
            0 => HistoryMux::NotCalculated,
            1 => HistoryMux::Max,
            2 => HistoryMux::Average,
            _ => HistoryMux::Min,
        };
        History { mux, temperature: DeciCelsius((d[2] as i16 / 2 - 40) * 10), heater_request: d[1] & 0x01 != 0 }
    }
}

/// The group 0x01 reply (high-precision values), in the layout its announced length names (see the module doc).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Precision {
    pub insulation_kohm: u16,
    /// Hx in 0.01 %.
    pub hx: BasisPoints,
}

/// Announced lengths of the group 0x01 reply (`61 01` included).
pub mod precision_len {
    /// ZE0, 24 kWh: Hx at bytes 26..27 after `61 01`, in 0.01 %.
    pub const ZE0: usize = 0x29;
    /// AZE0, 30 kWh: same layout as the ZE0 with two more bytes.
    pub const AZE0: usize = 0x2B;
    /// ZE1: Hx at bytes 28..29, raw / 102.4 %.
    pub const ZE1: usize = 0x35;
}

impl Precision {
    /// `payload` is the whole reply, `61 01` first; `None` for a layout nobody knows.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let data = payload.get(2..)?;
        let be16 = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
        let hx = match payload.len() {
            precision_len::ZE1 => ((be16(28) as u32 * 125 + 64) / 128) as u16,
            precision_len::ZE0 | precision_len::AZE0 => be16(26),
            _ => return None,
        };
        Some(Precision { insulation_kohm: be16(22), hx: BasisPoints(hx) })
    }
}

/// LBC thermistor reading (group 0x04) to tenths of °C. BE converts raw → °F×10 with a piecewise-linear table, then
/// to °C; the same breakpoints are used here. 0xFFFF (sensor absent) is `None`.
pub fn thermistor_dc(raw: u16) -> Option<DeciCelsius> {
    if raw == 0xFFFF {
        return None;
    }
    let r = raw as f32;
    let f10: f32 = match raw {
        1021 => 10.0,
        589.. => 1620.0 - r * 1.81,
        569..=588 => 572.0 + (579.0 - r) * 1.80,
        558..=568 => 608.0 + (558.0 - r) * 1.636_363_6,
        548..=557 => 626.0 + (548.0 - r) * 1.80,
        537..=547 => 644.0 + (537.0 - r) * 1.636_363_6,
        447..=536 => 662.0 + (527.0 - r) * 1.8,
        438..=446 => 824.0 + (438.0 - r) * 2.0,
        428..=437 => 842.0 + (428.0 - r) * 1.80,
        365..=427 => 860.0 + (419.0 - r) * 2.0,
        357..=364 => 986.0 + (357.0 - r) * 2.25,
        348..=356 => 1004.0 + (348.0 - r) * 2.0,
        316..=347 => 1022.0 + (340.0 - r) * 2.25,
        _ => 1094.0 + (309.0 - r) * 2.571_428_6,
    };
    // BE truncates the °F×10 value to an integer before converting.
    let f10 = f10.clamp(0.0, 65535.0) as i32;
    Some(DeciCelsius(((f10 - 320) * 5 / 9) as i16))
}

/// The 10 ms VCM frame 0x1D4: a 2-bit counter in byte 4's top bits and a CRC in byte 7 (BE's template
/// `6E 6E 00 04 07 46 E0 xx`; byte 4's low bits 0x07 request HV on).
pub fn vcm_1d4(counter: u8) -> CanFrame {
    let mut d = [0x6E, 0x6E, 0x00, 0x04, 0x07 | (counter & 3) << 6, 0x46, 0xE0, 0];
    d[7] = crc8_0x85(&d[..7]);
    CanFrame::std8(id::VCM_1D4, d)
}

/// The 10 ms VCM frame 0x1F2: a 20-step pattern (byte 3 alternates 0xB0/0xB4 every five frames, byte 6 counts 0-3)
/// with a nibble checksum in byte 7 (BE's template `10 64 00 B0 00 1E 00 8F`).
pub fn vcm_1f2(step: u8) -> CanFrame {
    let step = step % 20;
    let mut d = [0x10, 0x64, 0x00, if (step / 5).is_multiple_of(2) { 0xB0 } else { 0xB4 }, 0x00, 0x1E, step % 4, 0];
    let nibbles: u32 = d[..7].iter().map(|&b| (b >> 4) as u32 + (b & 0x0F) as u32).sum();
    d[7] = 0x80 | ((nibbles + 0xA) & 0x0F) as u8;
    CanFrame::std8(id::VCM_1F2, d)
}

/// The 100 ms VCM frame 0x50B ("wake up", 7 bytes; byte 6 acknowledges a heater request).
pub fn vcm_50b(heater_ack: bool) -> CanFrame {
    let d = [0x00, 0x00, 0x06, 0xC0, 0x00, 0x00, if heater_ack { 0x20 } else { 0x00 }];
    CanFrame::standard(id::VCM_50B, &d).expect("constant frame")
}

/// The 100 ms VCM frame 0x50C: a 2-bit counter in byte 3 and BE's four precomputed bytes 4-5.
pub fn vcm_50c(counter: u8) -> CanFrame {
    const TAIL: [[u8; 2]; 4] = [[0x5D, 0xC8], [0xB2, 0x31], [0x5D, 0x63], [0xB2, 0x9A]];
    let c = counter & 3;
    let t = TAIL[c as usize];
    CanFrame::standard(id::VCM_50C, &[0, 0, 0, c, t[0], t[1]]).expect("constant frame")
}

/// The ZE1's 100 ms frame 0x3B8 (BE's template `7F E8 01 07 FF`): a counter 0-14 in byte 2 and byte 1 alternating
/// 0xE8/0xC8 (`flipped`) on every frame, independently of the counter (see the module doc).
pub fn ze1_3b8(counter: u8, flipped: bool) -> CanFrame {
    let b1 = if flipped { 0xC8 } else { 0xE8 };
    CanFrame::standard(id::ZE1_3B8, &[0x7F, b1, counter % 15, 0x07, 0xFF]).expect("5 bytes")
}

/// A group poll: `02 21 GG` (what the poller sends with [`DIAG`]; pinned by the tests).
pub fn group_request(group: u8) -> CanFrame {
    CanFrame::std8(id::DIAG_REQUEST, [0x02, 0x21, group, 0, 0, 0, 0, 0])
}

/// Flow control after each response frame: continue, block size 1, no separation time (BE's `30 01 00`; what the
/// poller sends with [`DIAG`], pinned by the tests).
pub const FLOW_CONTROL: CanFrame = CanFrame::std8(id::DIAG_REQUEST, [0x30, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);

const POLL_INTERVAL: Duration = Duration::from_millis(2000);
const POLL_TIMEOUT: Duration = Duration::from_millis(1000);

/// The LBC's diagnostic connection on the shared poller: 0x79B/0x7BB, requests padded with 0x00 and flow control
/// with 0xFF (BE's `LEAF_GROUP_REQUEST` and `LEAF_NEXT_LINE_REQUEST`), block size 1 and no separation time (the
/// `30 01 00` the LBC expects), one group every 2 s with a 1 s answer timeout, and 20 s of quiet when another
/// tester (LeafSpy) polls the LBC, as BE does.
const DIAG: PollerConfig = {
    let mut isotp = IsoTpConfig::standard(id::DIAG_REQUEST, id::DIAG_RESPONSE);
    isotp.padding = Padding::Byte(0x00);
    isotp.fc_padding = Padding::Byte(0xFF);
    isotp.block_size = 1;
    isotp.st_min = SeparationTime::ZERO;
    let mut c = PollerConfig::new(isotp);
    c.spacing = POLL_INTERVAL;
    c.response_timeout = POLL_TIMEOUT;
    c.tester_backoff = Duration::from_secs(20);
    c
};

/// The groups in [`group::POLLED`] order, each once a round of four ticks (so they rotate, cells every 8 s).
const POLLS: [PollRequest; 4] = {
    const fn kwp(g: u8) -> PollRequest {
        let round = Duration::from_millis(POLL_INTERVAL.as_millis() * group::POLLED.len() as u64);
        PollRequest::new(Service::ReadDataByLocalIdentifier(g), round)
    }
    [kwp(group::POLLED[0]), kwp(group::POLLED[1]), kwp(group::POLLED[2]), kwp(group::POLLED[3])]
};

/// The reassembly buffer holds the longest reply, the cells' 196 bytes.
type LbcPoller = Poller<256, 4>;

/// The periodic sends, as one table (see `time::Periodic`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Slot {
    Keepalive10 = 0,
    Ze1Every40 = 1,
    Wake100 = 2,
    Ze1Every500 = 3,
}

const SLOTS: usize = 4;

/// Frames queued for sending (a tick can produce several at once).
type Outbox = heapless::Deque<CanFrame, 16>;

#[derive(Clone, Debug)]
pub struct NissanLeaf {
    options: NissanLeafOptions,
    timers: [Periodic; SLOTS],
    outbox: Outbox,
    /// `None` until decided (see the module doc): no temperature is decoded before.
    generation: Option<Generation>,
    /// The first frame decoded from the pack: a ZE0 is recognised [`GENERATION_WINDOW`] after it.
    heard_at: Option<Instant>,
    counter_1d4: u8,
    step_1f2: u8,
    counter_50c: u8,
    counter_3b8: u8,
    /// 0x3B8 byte 1 alternates on every frame, independently of the counter.
    flip_3b8: bool,
    heater_request: bool,
    /// The AZE0's 0x5C0 bounds, kept until both are known.
    history_max: Option<Reading<DeciCelsius>>,
    history_min: Option<Reading<DeciCelsius>>,
    /// The group polls (the shared diagnostic poller).
    poller: LbcPoller,
    gids: Option<u16>,
    /// The maximum GIDs from the 0x5BC multiplex, once seen.
    max_gids_mux: Option<u16>,
    soh_percent: Option<u8>,
    /// 0x55B's `LB_Capacity_Empty` as last seen.
    empty_flag: bool,
}

impl Default for NissanLeaf {
    fn default() -> Self {
        Self::new()
    }
}

impl NissanLeaf {
    /// A driver with the default options.
    pub fn new() -> Self {
        Self::with_options(NissanLeafOptions::default())
    }

    pub fn with_options(options: NissanLeafOptions) -> Self {
        NissanLeaf {
            options,
            timers: [
                Periodic::new(Duration::from_millis(10)),
                Periodic::new(Duration::from_millis(40)),
                Periodic::new(Duration::from_millis(100)),
                Periodic::new(Duration::from_millis(500)),
            ],
            outbox: Outbox::new(),
            generation: None,
            heard_at: None,
            counter_1d4: 0,
            step_1f2: 0,
            counter_50c: 0,
            counter_3b8: 0,
            flip_3b8: false,
            heater_request: false,
            history_max: None,
            history_min: None,
            poller: Poller::new(DIAG, POLLS),
            gids: None,
            max_gids_mux: None,
            soh_percent: None,
            empty_flag: false,
        }
    }

    /// Empty by the pack's own flag, or by GIDs under BE's floor (under [`EMPTY_GIDS`], about 0.7 kWh, BE zeroes
    /// the SOC and the discharge power whatever else the pack says).
    fn is_empty(&self) -> bool {
        self.empty_flag || self.gids.is_some_and(|g| g < EMPTY_GIDS)
    }

    pub fn options(&self) -> NissanLeafOptions {
        self.options
    }

    /// The pack's generation, once decided.
    pub fn generation(&self) -> Option<Generation> {
        self.generation
    }

    fn push(&mut self, f: CanFrame) {
        if self.outbox.push_back(f).is_err() {
            // Full only if nobody drains us; the oldest frame is the stalest.
            self.outbox.pop_front();
            let _ = self.outbox.push_back(f);
        }
    }

    fn start_timers(&mut self, now: Instant) {
        if !self.timers[Slot::Wake100 as usize].is_running() {
            for t in self.timers.iter_mut() {
                t.start_at(now);
            }
            // Stagger the first poll so the pack has announced itself.
            self.poller.start(now + Duration::from_millis(500));
        }
    }

    /// A marker frame: decides the generation at once, or upgrades one decided earlier.
    fn marker(&mut self, now: Instant, model: &mut BatteryModel, g: Generation) {
        // ZE1 markers win over the AZE0 marker (ZE1 packs send 0x59E too).
        let rank = |g: Option<Generation>| match g {
            None => 0,
            Some(Generation::Ze0) => 1,
            Some(Generation::Aze0) => 2,
            Some(Generation::Ze1) => 3,
        };
        if rank(Some(g)) > rank(self.generation) {
            self.decide(now, model, g);
        }
    }

    /// After every frame that decoded: a pack that has sent no marker for [`GENERATION_WINDOW`] is a ZE0.
    fn heard(&mut self, now: Instant, model: &mut BatteryModel) {
        let first = *self.heard_at.get_or_insert(now);
        if self.generation.is_none() && now.saturating_since(first) >= GENERATION_WINDOW {
            self.decide(now, model, Generation::Ze0);
        }
    }

    fn decide(&mut self, now: Instant, model: &mut BatteryModel, g: Generation) {
        if self.generation.is_some() {
            // A late marker: what was read under the other generation's layout goes.
            model.temperature_min = None;
            model.temperature_max = None;
        }
        self.generation = Some(g);
        self.history_max = None;
        self.history_min = None;
        model.extras.set_text(now, extra::GENERATION, g.name());
        self.update_energy(now, model);
    }

    /// The maximum GIDs to count energy with: the multiplexed value, else 273 for the generations that have
    /// 24 kWh packs (see the module doc).
    fn max_gids(&self) -> Option<u16> {
        self.max_gids_mux.or(match self.generation {
            Some(Generation::Ze0 | Generation::Aze0) => Some(MAX_GIDS_24KWH),
            _ => None,
        })
    }

    fn update_energy(&self, now: Instant, model: &mut BatteryModel) {
        if let Some(g) = self.gids {
            model.remaining_energy = Some(Reading::new(WattHours(g as u32 * WH_PER_GID), now));
        }
        if let (Some(max), Some(soh)) = (self.max_gids(), self.soh_percent) {
            let total = max as u32 * WH_PER_GID * soh as u32 / 100;
            model.total_energy = Some(Reading::new(WattHours(total), now));
        }
    }

    /// The interlock as the options want it: a fault where required, a warning where tolerated.
    fn interlock(&self, model: &mut BatteryModel, seated: bool) {
        let required = self.options.interlock.requires(self.generation);
        model.faults.set(BmsFaults::HVIL_OPEN, !seated && required);
        model.warnings.set(BmsWarnings::INTERLOCK_OPEN, !seated && !required);
    }

    fn handle_reply(&self, now: Instant, model: &mut BatteryModel) {
        let Some(p) = self.poller.response() else { return };
        // Positive response to service 0x21 is 0x61, then the group number.
        if p.len() < 2 || p[0] != 0x61 {
            return;
        }
        let (grp, data) = (p[1], &p[2..]);
        match grp {
            group::CELLS if data.len() >= 192 => {
                let mut cells = [MilliVolts(0); 96];
                for (i, c) in cells.iter_mut().enumerate() {
                    *c = MilliVolts(u16::from_be_bytes([data[2 * i], data[2 * i + 1]]));
                }
                // A 12 V supply sagging makes the LBC report nonsense (see the module doc): drop the report and
                // say why, until a good one comes.
                let sane = cells.iter().all(|c| c.0 < 6000);
                model.faults.set(BmsFaults::SUPPLY_12V_LOW, !sane);
                if sane {
                    model.cells.set_voltages(now, &cells);
                }
            }
            group::TEMPERATURES if data.len() >= 11 && self.generation == Some(Generation::Ze1) => {
                // Four sensors of 3 bytes: 16-bit raw thermistor value, then one byte DBE does not use.
                let temps = [0usize, 3, 6, 9]
                    .map(|o| thermistor_dc(u16::from_be_bytes([data[o], data[o + 1]])))
                    .into_iter()
                    .flatten();
                let (mut lo, mut hi) = (i16::MAX, i16::MIN);
                for t in temps {
                    lo = lo.min(t.0);
                    hi = hi.max(t.0);
                }
                if lo <= hi {
                    model.temperature_min = Some(Reading::new(DeciCelsius(lo), now));
                    model.temperature_max = Some(Reading::new(DeciCelsius(hi), now));
                }
            }
            group::BALANCING if data.len() >= 12 => {
                for cell in 0..96 {
                    model.cells.set_balancing(cell, data[cell / 8] & (1 << (cell % 8)) != 0);
                }
            }
            group::PRECISION => {
                if let Some(v) = Precision::parse(p) {
                    if v.insulation_kohm > 0 {
                        model.extras.set_number(now, extra::INSULATION, v.insulation_kohm as i64);
                    }
                    model.extras.set_number(now, extra::HX, v.hx.0 as i64);
                }
            }
            _ => {}
        }
    }
}

impl Battery for NissanLeaf {
    fn design(&self) -> PackDesign {
        DESIGN
    }

    fn extras(&self) -> &'static [ExtraDescriptor] {
        EXTRAS
    }

    fn requirements(&self) -> &'static [Requirement] {
        match self.generation {
            None | Some(Generation::Ze0) => &REQUIRED_ZE0,
            Some(Generation::Aze0) => &REQUIRED_AZE0,
            Some(Generation::Ze1) => &REQUIRED_ZE1,
        }
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        frame: &CanFrame,
        model: &mut BatteryModel,
    ) -> Result<FrameUse, DecodeError> {
        let Some(sid) = frame.standard_id() else {
            return Ok(FrameUse::Ignored);
        };
        if frame.is_remote() {
            return Ok(FrameUse::Ignored);
        }
        match sid {
            id::BATTERY_STATE => {
                let s = BatteryState::parse(checked(frame)?);
                self.start_timers(now);
                model.current = Some(Reading::new(s.current, now));
                if let Some(v) = s.voltage {
                    model.pack_voltage = Some(Reading::new(v, now));
                }
                let failsafe = Failsafe(s.failsafe_status);
                model.requests.set(BmsRequests::OPEN_RELAYS, s.relay_cut_request != 0);
                model.requests.set(BmsRequests::CHARGE_STOP, failsafe.charge_stop());
                model.requests.set(BmsRequests::DISCHARGE_STOP, failsafe.discharge_stop());
                model.requests.set(BmsRequests::FULL, s.full_charge);
                model.warnings.set(BmsWarnings::CAUTION, failsafe.caution());
                self.interlock(model, s.interlock_ok);
                model.bms_status = if s.relay_cut_request != 0 { BmsStatus::Standby } else { BmsStatus::Active };
                model.status_at = Some(now);
                // The design is the same for every generation (96 cells, NMC/LMO): a pack that checks out is one.
                model.design_status = DesignStatus::Confirmed;
                model.extras.set_number(now, extra::FAILSAFE, s.failsafe_status as i64);
                model.extras.set_flag(now, extra::MAIN_RELAY_ON, s.main_relay_on_permission);
                model.extras.set_flag(now, extra::INTERLOCK, s.interlock_ok);
            }
            id::POWER_LIMITS => {
                let l = PowerLimits::parse(checked(frame)?);
                // The pack's full/empty flags are requests of their own (the supervisor stops that direction for as
                // long as they stand), not a one-frame edit of these limits.
                model.max_charge_power = Some(Reading::new(l.charge, now));
                model.max_discharge_power = Some(Reading::new(l.discharge, now));
            }
            id::SOC => {
                let s = Soc::parse(checked(frame)?);
                if let Some(soc) = s.soc {
                    model.soc = Some(Reading::new(soc, now));
                }
                self.empty_flag = s.empty;
                model.requests.set(BmsRequests::CAPACITY_EMPTY, self.is_empty());
            }
            id::GIDS => {
                let g = Gids::parse(require_len(frame, 8)?);
                if g.is_max {
                    self.max_gids_mux = Some(g.gids);
                } else {
                    self.gids = Some(g.gids);
                    model.extras.set_number(now, extra::GIDS, g.gids as i64);
                    model.requests.set(BmsRequests::CAPACITY_EMPTY, self.is_empty());
                }
                if let Some(soh) = g.soh_percent {
                    self.soh_percent = Some(soh);
                    model.soh = Some(Reading::new(BasisPoints(soh as u16 * 100), now));
                }
                if self.generation == Some(Generation::Ze0) {
                    let t = DeciCelsius(g.average_temperature_c * 10);
                    // Only the average is known: BE reports min as 1 °C below it.
                    model.temperature_min = Some(Reading::new(DeciCelsius(t.0 - 10), now));
                    model.temperature_max = Some(Reading::new(t, now));
                }
                self.update_energy(now, model);
            }
            id::HISTORY => {
                let h = History::parse(require_len(frame, 5)?);
                if self.generation == Some(Generation::Aze0) {
                    let t = Some(Reading::new(h.temperature, now));
                    match h.mux {
                        HistoryMux::Max => self.history_max = t,
                        HistoryMux::Min => self.history_min = t,
                        HistoryMux::Average | HistoryMux::NotCalculated => {}
                    }
                    // Both bounds, or neither: one alone says nothing of the other side.
                    if let (Some(max), Some(min)) = (self.history_max, self.history_min) {
                        model.temperature_max = Some(max);
                        model.temperature_min = Some(min);
                    }
                }
                self.heater_request = h.heater_request;
            }
            id::AZE0_MARKER => self.marker(now, model, Generation::Aze0),
            s if id::ZE1_MARKERS.contains(&s) => self.marker(now, model, Generation::Ze1),
            id::DIAG_REQUEST | id::DIAG_RESPONSE => match self.poller.handle_frame(now, frame) {
                // Another tester (LeafSpy) on 0x79B: the poller stays out of its way for a while, as BE does.
                // Replies while nothing of ours is outstanding are theirs.
                Heard::OtherTester | Heard::Ignored => return Ok(FrameUse::Ignored),
                Heard::Progress => {}
                Heard::Answer(_) => self.handle_reply(now, model),
                Heard::Failed { .. } => return Err(DecodeError::BadSequence { id: frame.raw_id() }),
            },
            _ => return Ok(FrameUse::Ignored),
        }
        // Every frame of the pack's that decoded counts towards recognising its generation.
        self.heard(now, model);
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        if let Some(f) = self.outbox.pop_front() {
            return Some(f);
        }
        if self.timers[Slot::Keepalive10 as usize].poll(now) {
            self.push(vcm_1d4(self.counter_1d4));
            self.push(vcm_1f2(self.step_1f2));
            self.counter_1d4 = (self.counter_1d4 + 1) % 4;
            self.step_1f2 = (self.step_1f2 + 1) % 20;
        }
        if self.timers[Slot::Ze1Every40 as usize].poll(now) && self.generation == Some(Generation::Ze1) {
            self.push(CanFrame::std8(id::ZE1_355, [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x40, 0x00]));
        }
        if self.timers[Slot::Wake100 as usize].poll(now) {
            if self.generation == Some(Generation::Ze1) {
                // BE steps the counter before sending (1, 2, ... 14, 0) and flips byte 1 on every frame.
                self.counter_3b8 = (self.counter_3b8 + 1) % 15;
                self.push(ze1_3b8(self.counter_3b8, self.flip_3b8));
                self.flip_3b8 = !self.flip_3b8;
                self.push(CanFrame::std8(id::ZE1_5C5, [0x40, 0x01, 0x2F, 0x5E, 0x00, 0x00, 0x00, 0x00]));
                self.push(CanFrame::standard(id::ZE1_626, &[0x02, 0x00, 0xFF, 0x1D, 0x20, 0x00]).expect("6 bytes"));
            }
            self.push(vcm_50b(self.heater_request));
            self.push(vcm_50c(self.counter_50c));
            self.counter_50c = (self.counter_50c + 1) % 4;
        }
        if self.timers[Slot::Ze1Every500 as usize].poll(now) && self.generation == Some(Generation::Ze1) {
            self.push(CanFrame::standard(id::ZE1_5EC, &[0x00]).expect("1 byte"));
        }
        while let Some(f) = self.poller.poll_transmit(now) {
            self.push(f);
        }
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            // Queued frames (flow control) are due at once.
            return Some(Instant::ZERO);
        }
        earliest(self.timers.iter().filter_map(|t| t.next_at()).min(), self.poller.poll_timeout())
    }

    fn set_contactors(&mut self, now: Instant, _request: ContactorRequest) {
        // Hardwired relays (module doc): the request reaches the relay outputs, not the pack.
        self.start_timers(now);
    }

    fn bms_reset(&mut self, _now: Instant) -> Result<(), Unsupported> {
        Err(Unsupported { battery: "Nissan LEAF", what: "BMS reset" })
    }

    /// The LBC's main relays are driven by the VCM's hardwired 12 V lines, never by CAN (Battery-Emulator wiki,
    /// "Contactor Control via GPIO pins").
    fn contactor_modes(&self) -> &'static [crate::contactor::ContactorMode] {
        &[crate::contactor::ContactorMode::Relays, crate::contactor::ContactorMode::None]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn with_crc(mut d: [u8; 8]) -> [u8; 8] {
        d[7] = crc8_0x85(&d[..7]);
        d
    }

    fn model() -> BatteryModel {
        BatteryModel::new(DESIGN).with_extras(EXTRAS)
    }

    #[test]
    fn battery_state_0x1db() {
        // Voltage 740 × 0.5 V = 370.0 V (BE's startup default 740); current raw -20 × 0.5 A = -10.0 A (discharge);
        // relay-cut 0, failsafe 0, main relay permission, interlock seated.
        // current -20 = 0x7EC (11 bits): byte0 = 0x7EC >> 3 = 0xFD, byte1 top 3 bits = 0x7EC & 7 = 0b100 → 0x80.
        // voltage 740 = 0x2E4: byte2 = 0x2E4 >> 2 = 0xB9, byte3 top 2 bits = 0 → 0x00 | 0x20 | 0x08.
        let d = with_crc([0xFD, 0x80, 0xB9, 0x28, 0x00, 0x00, 0x00, 0]);
        let s = BatteryState::parse(&d);
        assert_eq!(s.current, DeciAmps(-100));
        assert_eq!(s.voltage, Some(DeciVolts(3700)));
        assert!(s.main_relay_on_permission && s.interlock_ok && !s.full_charge);
        assert_eq!((s.relay_cut_request, s.failsafe_status), (0, 0));
        // Positive current (charging), relay cut 2, failsafe 5, voltage not available.
        let d = with_crc([0x01, 0x40 | 0x10 | 0x05, 0xFF, 0xC0, 0, 0, 0, 0]);
        let s = BatteryState::parse(&d);
        assert_eq!(s.current, DeciAmps(10 * 5));
        assert_eq!(s.voltage, None);
        assert_eq!((s.relay_cut_request, s.failsafe_status), (2, 5));
    }

    #[test]
    fn bad_crc_and_short_frames_leave_the_model_alone() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        let mut d = with_crc([0xFD, 0x80, 0xB9, 0x28, 0, 0, 0, 0]);
        d[7] ^= 1;
        let f = CanFrame::std8(0x1DB, d);
        assert!(matches!(leaf.handle_frame(t(0), &f, &mut m), Err(DecodeError::BadChecksum { id: 0x1DB, .. })));
        let short = CanFrame::standard(0x55B, &[1, 2, 3]).unwrap();
        assert!(matches!(leaf.handle_frame(t(0), &short, &mut m), Err(DecodeError::WrongLength { .. })));
        assert_eq!(m, model());
    }

    #[test]
    fn power_limits_0x1dc_and_soc_0x55b() {
        // Discharge 200 × 0.25 = 50 kW, charge 100 × 0.25 = 25 kW.
        // 200 = 0x0C8 → byte0 0x32, byte1 top 2 bits 00; 100 = 0x064 → byte1 low 6 = 0x06, byte2 top 4 = 0x4.
        let d = with_crc([0x32, 0x06, 0x40, 0, 0, 0, 0, 0]);
        assert_eq!(PowerLimits::parse(&d), PowerLimits { discharge: Watts(50_000), charge: Watts(25_000) });
        // SOC 523 × 0.1 % = 52.3 %: 523 = 0x20B → 0x82, 0xC0.
        let d = with_crc([0x82, 0xC0, 0, 0, 0, 0, 0x80, 0]);
        assert_eq!(Soc::parse(&d), Soc { soc: Some(BasisPoints(5230)), empty: true });
        assert_eq!(Soc::parse(&with_crc([0xFF, 0xC0, 0, 0, 0, 0, 0, 0])).soc, None);
    }

    #[test]
    fn gids_0x5bc_give_energy_and_soh() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        // ZE1 detected first, so the maximum comes from the mux.
        leaf.handle_frame(t(0), &CanFrame::std8(0x5EB, [0; 8]), &mut m).unwrap();
        // Max GIDs 502 (mux bit), SOH 92 % (byte 4 = 92 << 1).
        let max = [(502u16 >> 2) as u8, ((502u16 & 3) << 6) as u8, 0, 0, 92 << 1, 0x10, 0, 0];
        leaf.handle_frame(t(1), &CanFrame::std8(0x5BC, max), &mut m).unwrap();
        let now = [(300u16 >> 2) as u8, ((300u16 & 3) << 6) as u8, 0, 0, 92 << 1, 0x00, 0, 0];
        leaf.handle_frame(t(2), &CanFrame::std8(0x5BC, now), &mut m).unwrap();
        assert_eq!(m.remaining_energy.unwrap().value, WattHours(300 * 77));
        assert_eq!(m.total_energy.unwrap().value, WattHours(502 * 77 * 92 / 100));
        assert_eq!(m.soh.unwrap().value, BasisPoints(9200));
        assert_eq!(m.extras.number(extra::GIDS), Some(300));
        assert_eq!(m.extras.text(extra::GENERATION), Some("ZE1"));
    }

    #[test]
    fn vcm_frames_match_battery_emulators_tables() {
        // BE's 0x1D4 cycle: byte 4 = 07/47/87/C7 with byte 7 = 12/D5/19/DE.
        for (c, b4, crc) in [(0, 0x07, 0x12), (1, 0x47, 0xD5), (2, 0x87, 0x19), (3, 0xC7, 0xDE)] {
            let f = vcm_1d4(c);
            assert_eq!(f.data(), &[0x6E, 0x6E, 0x00, 0x04, b4, 0x46, 0xE0, crc]);
        }
        // BE's 20-step 0x1F2 cycle: (byte 3, byte 6, byte 7).
        let be: [(u8, u8, u8); 20] = [
            (0xB0, 0, 0x8F),
            (0xB0, 1, 0x80),
            (0xB0, 2, 0x81),
            (0xB0, 3, 0x82),
            (0xB0, 0, 0x8F),
            (0xB4, 1, 0x84),
            (0xB4, 2, 0x85),
            (0xB4, 3, 0x86),
            (0xB4, 0, 0x83),
            (0xB4, 1, 0x84),
            (0xB0, 2, 0x81),
            (0xB0, 3, 0x82),
            (0xB0, 0, 0x8F),
            (0xB0, 1, 0x80),
            (0xB0, 2, 0x81),
            (0xB4, 3, 0x86),
            (0xB4, 0, 0x83),
            (0xB4, 1, 0x84),
            (0xB4, 2, 0x85),
            (0xB4, 3, 0x86),
        ];
        for (step, (b3, b6, b7)) in be.into_iter().enumerate() {
            let f = vcm_1f2(step as u8);
            assert_eq!(f.data(), &[0x10, 0x64, 0x00, b3, 0x00, 0x1E, b6, b7], "step {step}");
        }
        assert_eq!(vcm_50c(1).data(), &[0, 0, 0, 1, 0xB2, 0x31]);
        assert_eq!(vcm_50b(false).data(), &[0x00, 0x00, 0x06, 0xC0, 0x00, 0x00, 0x00]);
        assert_eq!(group_request(2).data(), &[0x02, 0x21, 0x02, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn the_vcm_keepalive_goes_out_whatever_the_contactor_decision() {
        // The relays are hardwired: the keep-alive opens nothing, so it runs as BE's does (the supervisor's decision
        // reaches the relay outputs instead).
        let mut leaf = NissanLeaf::new();
        leaf.set_contactors(t(0), ContactorRequest::Open);
        let ids: Vec<u16> = core::iter::from_fn(|| leaf.poll_transmit(t(0))).filter_map(|f| f.standard_id()).collect();
        assert!(ids.contains(&0x50B) && ids.contains(&0x1D4), "{ids:x?}");
        leaf.set_contactors(t(5), ContactorRequest::Open);
        let mut seen_1d4 = 0;
        let mut now = 10;
        while now <= 100 {
            while let Some(f) = leaf.poll_transmit(t(now)) {
                if f.standard_id() == Some(0x1D4) {
                    seen_1d4 += 1;
                }
            }
            now += 10;
        }
        assert_eq!(seen_1d4, 10, "one 0x1D4 every 10 ms, the decision Open");
        assert_eq!(leaf.poll_timeout(), Some(t(110)));
    }

    #[test]
    fn cell_voltages_arrive_through_a_polled_multi_frame_reply() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        leaf.set_contactors(t(0), ContactorRequest::Open);
        // Run until the first poll (group 0x01) and leave it unanswered: it is abandoned after 1 s, and the next
        // tick asks for the cells.
        let mut now = 0;
        let mut asked = vec![];
        while asked.len() < 2 && now < 10_000 {
            while let Some(f) = leaf.poll_transmit(t(now)) {
                if f.standard_id() == Some(0x79B) && f.data()[1] == 0x21 {
                    asked.push((now, f));
                }
            }
            now += 10;
        }
        assert_eq!(asked, vec![(500, group_request(group::PRECISION)), (2500, group_request(group::CELLS))]);
        // Build the cells reply: 61 02 + 96 × u16 + 2 bytes, segmented as the LBC does.
        let mut payload = vec![0x61, 0x02];
        for i in 0..96u16 {
            payload.extend_from_slice(&(3700 + i).to_be_bytes());
        }
        payload.extend_from_slice(&[0xFF, 0xFF]);
        let mut frames = vec![];
        let mut first = [0x10 | (payload.len() >> 8) as u8, payload.len() as u8, 0, 0, 0, 0, 0, 0];
        first[2..].copy_from_slice(&payload[..6]);
        frames.push(first);
        for (seq, chunk) in payload[6..].chunks(7).enumerate() {
            let mut f = [0xFF; 8];
            f[0] = 0x20 | ((seq + 1) & 0x0F) as u8;
            f[1..1 + chunk.len()].copy_from_slice(chunk);
            frames.push(f);
        }
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(leaf.handle_frame(t(now), &CanFrame::std8(0x7BB, *f), &mut m), Ok(FrameUse::Used));
            // The keep-alive may be due in the same millisecond: the flow control is among what goes out.
            let sent: Vec<CanFrame> = core::iter::from_fn(|| leaf.poll_transmit(t(now))).collect();
            if i + 1 < frames.len() {
                assert!(sent.contains(&FLOW_CONTROL), "flow control after frame {i}: {sent:?}");
            }
        }
        assert_eq!(m.cells.count(), 96);
        assert_eq!(m.cells.voltages()[95], MilliVolts(3795));
        assert_eq!(m.cells.min(), Some((0, MilliVolts(3700))));
    }

    /// The group polls sent from `from` to `to` (10 ms steps): (ms, group).
    fn polls(leaf: &mut NissanLeaf, from: u64, to: u64) -> Vec<(u64, u8)> {
        let mut asked = vec![];
        let mut now = from;
        while now < to {
            while let Some(f) = leaf.poll_transmit(t(now)) {
                if f.standard_id() == Some(0x79B) && f.data()[..2] == [0x02, 0x21] {
                    asked.push((now, f.data()[2]));
                }
            }
            now += 10;
        }
        asked
    }

    #[test]
    fn another_tester_on_0x79b_pauses_the_polls_for_20_s() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        leaf.set_contactors(t(0), ContactorRequest::Open);
        assert_eq!(polls(&mut leaf, 0, 600), vec![(500, group::PRECISION)]);
        // LeafSpy asks the LBC at 1 s: what we were waiting for is dropped, its reply is not ours (no flow control
        // from us), and we ask nothing for 20 s.
        let spy = CanFrame::std8(0x79B, [0x02, 0x21, 0x01, 0, 0, 0, 0, 0]);
        assert_eq!(leaf.handle_frame(t(1000), &spy, &mut m), Ok(FrameUse::Ignored));
        let theirs = CanFrame::std8(0x7BB, [0x10, 0x29, 0x61, 0x01, 0, 0, 0, 0]);
        assert_eq!(leaf.handle_frame(t(1010), &theirs, &mut m), Ok(FrameUse::Ignored));
        assert!(core::iter::from_fn(|| leaf.poll_transmit(t(1010))).all(|f| f.standard_id() != Some(0x79B)));
        assert_eq!(polls(&mut leaf, 1010, 21_000), vec![]);
        // The first tick after the pause goes on with the rotation: the cells.
        assert_eq!(polls(&mut leaf, 21_000, 23_000), vec![(22_500, group::CELLS)]);
        assert_eq!(polls(&mut leaf, 23_000, 25_000), vec![(24_500, group::TEMPERATURES)]);
    }

    #[test]
    fn thermistor_conversion_follows_bes_table() {
        // 718 is BE's "0 °C" placeholder raw value in °F×10 terms: 1620 - 718 × 1.81 = 320.42 → 32 °F → 0 °C.
        assert_eq!(thermistor_dc(718), Some(DeciCelsius(0)));
        assert_eq!(thermistor_dc(0xFFFF), None);
        // Hotter sensors read lower raw values.
        assert!(thermistor_dc(500).unwrap() > thermistor_dc(600).unwrap());
    }

    /// A valid 0x1DB: 370 V, -10 A, interlock seated or open.
    fn state_1db(seated: bool) -> CanFrame {
        CanFrame::std8(0x1DB, with_crc([0xFD, 0x80, 0xB9, if seated { 0x28 } else { 0x20 }, 0, 0, 0, 0]))
    }

    /// 0x5BC with `gids`, SOH 92 %, byte 3 as given, the max-GIDs mux bit as given.
    fn gids_5bc(gids: u16, byte3: u8, is_max: bool) -> CanFrame {
        let d = [(gids >> 2) as u8, ((gids & 3) << 6) as u8, 0, byte3, 92 << 1, if is_max { 0x10 } else { 0 }, 0, 0];
        CanFrame::std8(0x5BC, d)
    }

    /// 0x5C0 in the ZE0/AZE0 layout: mux (1 max, 2 average, 3 min) and °C.
    fn history_5c0(mux: u8, c: i16) -> CanFrame {
        CanFrame::std8(0x5C0, [mux << 6, 0, ((c + 40) * 2) as u8, 0, 0, 0, 0, 0])
    }

    /// Feeds a whole group reply (`61 GG ...`) as the LBC segments it, as if `group` had been asked for.
    fn reply(leaf: &mut NissanLeaf, m: &mut BatteryModel, now: Instant, payload: &[u8]) {
        let index = leaf.poller.index_of(Service::ReadDataByLocalIdentifier(payload[1])).expect("a polled group");
        leaf.poller.poll_now(now, index).unwrap();
        let mut first = [0x10 | (payload.len() >> 8) as u8, payload.len() as u8, 0, 0, 0, 0, 0, 0];
        first[2..].copy_from_slice(&payload[..6]);
        leaf.handle_frame(now, &CanFrame::std8(0x7BB, first), m).unwrap();
        for (seq, chunk) in payload[6..].chunks(7).enumerate() {
            let mut f = [0xFF; 8];
            f[0] = 0x20 | ((seq + 1) & 0x0F) as u8;
            f[1..1 + chunk.len()].copy_from_slice(chunk);
            leaf.handle_frame(now, &CanFrame::std8(0x7BB, f), m).unwrap();
        }
        while leaf.poll_transmit(now).is_some() {}
    }

    fn hx(m: &BatteryModel) -> Option<i64> {
        m.extras.number(extra::HX)
    }

    #[test]
    fn hx_is_read_where_the_replys_length_says() {
        // ZE1: 0x35 bytes, Hx raw 0x26 0x9A = 9882 at data 28..29 (OVMS's ZE1 capture) → 9882 / 102.4 = 96.50 %.
        let mut ze1 = vec![0x61, 0x01];
        ze1.extend([0u8; 51]);
        ze1[2 + 26..2 + 28].copy_from_slice(&[0x12, 0x34]);
        ze1[2 + 28..2 + 30].copy_from_slice(&[0x26, 0x9A]);
        assert_eq!(Precision::parse(&ze1).unwrap().hx, BasisPoints(9650)); // (9882 × 125 + 64) / 128
                                                                           // ZE0: 0x29 bytes, Hx at data 26..27 already in 0.01 %: 0x269A = 98.82 %; 28..29 are something else.
        let mut ze0 = vec![0x61, 0x01];
        ze0.extend([0u8; 39]);
        ze0[2 + 22..2 + 24].copy_from_slice(&1500u16.to_be_bytes());
        ze0[2 + 26..2 + 28].copy_from_slice(&[0x26, 0x9A]);
        ze0[2 + 28..2 + 30].copy_from_slice(&[0x00, 0x0E]);
        assert_eq!(Precision::parse(&ze0), Some(Precision { insulation_kohm: 1500, hx: BasisPoints(9882) }));
        // AZE0 30 kWh: 0x2B bytes, same place.
        let mut aze0 = ze0.clone();
        aze0.extend([0, 0]);
        assert_eq!(Precision::parse(&aze0).unwrap().hx, BasisPoints(9882));
        // A ZE1 just after waking answers 0x2C bytes: unknown layout, nothing decoded, the last Hx stays.
        let mut early = vec![0x61, 0x01];
        early.extend([0x55u8; 42]);
        assert_eq!(Precision::parse(&early), None);

        let mut leaf = NissanLeaf::new();
        let mut m = model();
        reply(&mut leaf, &mut m, t(0), &ze0);
        assert_eq!(hx(&m), Some(9882));
        reply(&mut leaf, &mut m, t(10), &early);
        assert_eq!(hx(&m), Some(9882), "an unknown layout leaves the last Hx");
        reply(&mut leaf, &mut m, t(20), &ze1);
        assert_eq!(hx(&m), Some(9650));
    }

    #[test]
    fn no_temperature_until_the_generation_is_known() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        // An AZE0 before its 0x59E: byte 3 of 0x5BC is the dash segment (0x78 = 50 %), not 80 °C.
        leaf.handle_frame(t(0), &state_1db(true), &mut m).unwrap();
        leaf.handle_frame(t(5), &gids_5bc(200, 0x78, false), &mut m).unwrap();
        leaf.handle_frame(t(6), &history_5c0(1, 30), &mut m).unwrap();
        leaf.handle_frame(t(7), &history_5c0(3, 20), &mut m).unwrap();
        assert_eq!(leaf.generation(), None);
        assert_eq!((m.temperature_min, m.temperature_max), (None, None));
        assert!(m.extras.text(extra::GENERATION).is_none());
        // The marker: an AZE0 at once. 0x5BC byte 3 is still not a temperature; 0x5C0 needs both bounds.
        leaf.handle_frame(t(100), &CanFrame::std8(0x59E, [0; 8]), &mut m).unwrap();
        assert_eq!(leaf.generation(), Some(Generation::Aze0));
        leaf.handle_frame(t(105), &gids_5bc(200, 0x78, false), &mut m).unwrap();
        leaf.handle_frame(t(500), &history_5c0(1, 30), &mut m).unwrap();
        leaf.handle_frame(t(1000), &history_5c0(2, 25), &mut m).unwrap();
        assert_eq!((m.temperature_min, m.temperature_max), (None, None), "max alone is not used");
        leaf.handle_frame(t(1500), &history_5c0(3, 20), &mut m).unwrap();
        assert_eq!(m.temperature_max, Some(Reading::new(DeciCelsius(300), t(500))));
        assert_eq!(m.temperature_min, Some(Reading::new(DeciCelsius(200), t(1500))));
        // Group 0x04 is the ZE1's source only.
        let mut temps = vec![0x61, 0x04];
        for _ in 0..4 {
            temps.extend(600u16.to_be_bytes());
            temps.push(0);
        }
        temps.extend([0, 0]);
        reply(&mut leaf, &mut m, t(1600), &temps);
        assert_eq!(m.temperature_max.unwrap().value, DeciCelsius(300));
    }

    #[test]
    fn a_pack_without_markers_is_a_ze0_after_the_window_and_a_late_marker_upgrades_it() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        let mut now = 0;
        while now < GENERATION_WINDOW.as_millis() {
            leaf.handle_frame(t(now), &state_1db(true), &mut m).unwrap();
            assert_eq!(leaf.generation(), None, "at {now} ms");
            now += 10;
        }
        leaf.handle_frame(t(now), &state_1db(true), &mut m).unwrap();
        assert_eq!(leaf.generation(), Some(Generation::Ze0));
        assert_eq!(m.extras.text(extra::GENERATION), Some("ZE0"));
        // The ZE0's average temperature: 25 °C (byte 3 = 65); min reported 1 °C below.
        leaf.handle_frame(t(now + 1), &gids_5bc(200, 65, false), &mut m).unwrap();
        assert_eq!(m.temperature_max.unwrap().value, DeciCelsius(250));
        assert_eq!(m.temperature_min.unwrap().value, DeciCelsius(240));
        // A marker after all: the 0x5BC reading was the dash segment, it goes.
        leaf.handle_frame(t(now + 2), &CanFrame::std8(0x59E, [0; 8]), &mut m).unwrap();
        assert_eq!(leaf.generation(), Some(Generation::Aze0));
        assert_eq!((m.temperature_min, m.temperature_max), (None, None));
        // A ZE1 marker outranks the AZE0 one, and then group 0x04 is the source.
        leaf.handle_frame(t(now + 3), &CanFrame::std8(0x5EB, [0; 8]), &mut m).unwrap();
        assert_eq!(leaf.generation(), Some(Generation::Ze1));
        leaf.handle_frame(t(now + 4), &CanFrame::std8(0x59E, [0; 8]), &mut m).unwrap();
        assert_eq!(leaf.generation(), Some(Generation::Ze1), "0x59E does not downgrade a ZE1");
    }

    #[test]
    fn temperature_ages_follow_each_generations_source() {
        let age = |leaf: &NissanLeaf, q: Quantity| {
            leaf.requirements().iter().find(|r| r.quantity == q).map(|r| r.max_age.as_millis())
        };
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        assert_eq!(age(&leaf, Quantity::TemperatureMax), Some(3000), "unknown: required, and none decoded");
        leaf.handle_frame(t(0), &CanFrame::std8(0x59E, [0; 8]), &mut m).unwrap();
        // 0x5C0: 500 ms a frame, three multiplexed values → each bound every 1.5 s; three refreshes.
        assert_eq!(age(&leaf, Quantity::TemperatureMin), Some(4500));
        leaf.handle_frame(t(0), &CanFrame::std8(0x5EB, [0; 8]), &mut m).unwrap();
        assert_eq!(age(&leaf, Quantity::TemperatureMin), Some(24_000));
    }

    #[test]
    fn a_24_kwh_aze0_whose_marker_comes_first_still_gets_a_total_energy() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        leaf.handle_frame(t(0), &CanFrame::std8(0x59E, [0; 8]), &mut m).unwrap();
        leaf.handle_frame(t(1), &gids_5bc(200, 0x78, false), &mut m).unwrap();
        assert_eq!(m.total_energy.unwrap().value, WattHours(273 * 77 * 92 / 100));
        // A 30 kWh AZE0 multiplexes its maximum, which wins.
        leaf.handle_frame(t(2), &gids_5bc(363, 0x78, true), &mut m).unwrap();
        assert_eq!(m.total_energy.unwrap().value, WattHours(363 * 77 * 92 / 100));
        // A ZE1 waits for its multiplex: 273 would be half its size.
        let mut ze1 = NissanLeaf::new();
        let mut m = model();
        ze1.handle_frame(t(0), &CanFrame::std8(0x5EB, [0; 8]), &mut m).unwrap();
        ze1.handle_frame(t(1), &gids_5bc(300, 0x78, false), &mut m).unwrap();
        assert_eq!(m.total_energy, None);
        assert_eq!(m.remaining_energy.unwrap().value, WattHours(300 * 77));
    }

    #[test]
    fn a_sagging_12v_supply_drops_the_cell_report_and_says_so_until_a_good_one() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        let cells = |mv: u16| {
            let mut p = vec![0x61, 0x02];
            for _ in 0..96 {
                p.extend(mv.to_be_bytes());
            }
            p.extend([0xFF, 0xFF]);
            p
        };
        reply(&mut leaf, &mut m, t(0), &cells(3700));
        assert_eq!(m.cells.updated_at(), Some(t(0)));
        assert!(!m.faults.contains(BmsFaults::SUPPLY_12V_LOW));
        reply(&mut leaf, &mut m, t(8000), &cells(0xFFFF));
        assert!(m.faults.contains(BmsFaults::SUPPLY_12V_LOW));
        assert_eq!(m.cells.updated_at(), Some(t(0)), "the nonsense report is not stored");
        assert_eq!(m.cells.max().unwrap().1, MilliVolts(3700));
        reply(&mut leaf, &mut m, t(16_000), &cells(3710));
        assert!(!m.faults.contains(BmsFaults::SUPPLY_12V_LOW));
        assert_eq!(m.cells.updated_at(), Some(t(16_000)));
    }

    #[test]
    fn ze1_0x3b8_flips_on_every_frame_whatever_the_counter() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        leaf.handle_frame(t(0), &CanFrame::std8(0x5EB, [0; 8]), &mut m).unwrap();
        leaf.set_contactors(t(0), ContactorRequest::Open);
        let mut seen = vec![];
        let mut now = 0;
        while seen.len() < 40 {
            while let Some(f) = leaf.poll_transmit(t(now)) {
                if f.standard_id() == Some(0x3B8) {
                    seen.push(*f.data().first_chunk::<5>().unwrap());
                }
            }
            now += 10;
        }
        // BE steps the counter before sending: 1, 2, ... 14, 0, 1, ...
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d[2], ((i + 1) % 15) as u8, "counter of frame {i}");
            assert_eq!((d[0], d[3], d[4]), (0x7F, 0x07, 0xFF));
            assert_eq!(d[1], if i % 2 == 0 { 0xE8 } else { 0xC8 }, "byte 1 of frame {i}");
        }
        assert!(seen.windows(2).all(|w| w[0][1] != w[1][1]), "0xE8/0xC8 never twice in a row");
    }

    #[test]
    fn the_interlock_is_a_fault_where_required_and_a_warning_where_tolerated() {
        let run = |policy: InterlockPolicy, marker: Option<u16>| {
            let mut leaf = NissanLeaf::with_options(NissanLeafOptions { interlock: policy });
            let mut m = model();
            let mut now = 0;
            if let Some(id) = marker {
                leaf.handle_frame(t(0), &CanFrame::std8(id, [0; 8]), &mut m).unwrap();
            } else {
                while leaf.generation().is_none() {
                    leaf.handle_frame(t(now), &state_1db(true), &mut m).unwrap();
                    now += 10;
                }
            }
            leaf.handle_frame(t(now), &state_1db(false), &mut m).unwrap();
            let open = (m.faults.contains(BmsFaults::HVIL_OPEN), m.warnings.contains(BmsWarnings::INTERLOCK_OPEN));
            leaf.handle_frame(t(now + 10), &state_1db(true), &mut m).unwrap();
            assert!(!m.faults.contains(BmsFaults::HVIL_OPEN) && !m.warnings.contains(BmsWarnings::INTERLOCK_OPEN));
            open
        };
        let (fault, warning) = ((true, false), (false, true));
        assert_eq!(run(InterlockPolicy::Auto, None), fault, "ZE0: required by default");
        assert_eq!(run(InterlockPolicy::Auto, Some(0x59E)), warning, "AZE0: a warning by default");
        assert_eq!(run(InterlockPolicy::Auto, Some(0x5EB)), warning, "ZE1: a warning by default");
        assert_eq!(run(InterlockPolicy::Required, Some(0x59E)), fault);
        assert_eq!(run(InterlockPolicy::WarnOnly, None), warning, "the user's choice, ZE0 included");
        // Before the generation is known, Auto is required: unknown is unsafe.
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        leaf.handle_frame(t(0), &state_1db(false), &mut m).unwrap();
        assert!(m.faults.contains(BmsFaults::HVIL_OPEN));
        assert_eq!(InterlockPolicy::from_name("warn"), Some(InterlockPolicy::WarnOnly));
        assert_eq!(InterlockPolicy::from_name("off"), None);
    }

    proptest! {
        #[test]
        fn no_frame_panics_or_breaks_the_model(id in 0u16..0x800, len in 0usize..=8, data in proptest::array::uniform8(any::<u8>())) {
            let mut leaf = NissanLeaf::new();
            let mut m = model();
            let f = CanFrame::standard(id, &data[..len]).unwrap();
            let before = m.clone();
            if leaf.handle_frame(t(1), &f, &mut m).is_err() {
                prop_assert_eq!(m, before);
            }
            while leaf.poll_transmit(t(1)).is_some() {}
        }
    }
}
