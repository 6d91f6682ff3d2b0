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
//! Choices where the sources are silent or disagree:
//! - Sign of current: the DBC marks `LB_Current` signed with range -400..+200 A; the larger magnitude is the motor's
//!   draw, so negative is discharge. That is DBE's convention too (positive = charging), so the raw sign is kept.
//! - CRC: BE uses a 256-entry table; it is CRC-8 polynomial 0x85 ([`crate::crc::crc8_0x85`]), checked against
//!   BE's precomputed 0x1D4 checksums.
//! - 0x1F2's last byte: BE cycles 20 precomputed values; they are `0x80 | (nibble sum of bytes 0-6 + 0xA) & 0xF`,
//!   pinned against all 20 of BE's values in the tests.
//! - Opening the contactors: BE keeps the VCM frames going whenever the pack is heard. DBE sends the 10 ms VCM pair
//!   (0x1D4, 0x1F2) only while the supervisor allows the contactors closed; without them the LBC opens its relays as
//!   when the car is switched off. The 100 ms wake frames (0x50B/0x50C) and the polls continue, so the pack stays
//!   awake and reporting.
//! - Poll cadence: BE polls one group every 10 s. DBE polls one group every 2 s (cells every 8 s) so the cell
//!   monitor and the cell-voltage rules see changes quickly; a stalled reply is abandoned after 1 s.
//! - The pack does not report its relay state on these frames usefully, so `model.contactors` stays `Unknown`
//!   except that `LB_MainRelayOn_flag` (0x1DB) is exposed as the extra `main_relay_on_permission`.
//! - BMS reset: BE's SOH-reset sequence needs a challenge-response algorithm of Nissan's; DBE does not implement it
//!   (`bms_reset` is unsupported).

use crate::battery::{Battery, ContactorRequest, Unsupported};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::crc::crc8_0x85;
use crate::isotp::{Reassembler, Step};
use crate::model::{
    BatteryModel, BmsFaults, BmsRequests, BmsStatus, Chemistry, ExtraValue, PackDesign, Quantity, Reading, Requirement,
};
use crate::time::{Duration, Instant, Periodic};
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

/// ZE0: temperatures from 0x5BC (100 ms).
const REQUIRED_ZE0: [Requirement; 9] = common(Duration::from_secs(3));
/// AZE0: temperatures from the 0x5C0 multiplex (max and min in turn, one every 500 ms... checked in the sim).
const REQUIRED_AZE0: [Requirement; 9] = common(Duration::from_secs(10));
/// ZE1: temperatures from the group-4 poll.
const REQUIRED_ZE1: [Requirement; 9] = common(Duration::from_secs(24));

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
    /// Only meaningful on ZE0 packs.
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

/// A group poll: `02 21 GG`.
pub fn group_request(group: u8) -> CanFrame {
    CanFrame::std8(id::DIAG_REQUEST, [0x02, 0x21, group, 0, 0, 0, 0, 0])
}

/// Flow control after each response frame: continue, block size 1, no separation time (BE's `30 01 00`).
pub const FLOW_CONTROL: CanFrame = CanFrame::std8(id::DIAG_REQUEST, [0x30, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);

const POLL_INTERVAL: Duration = Duration::from_millis(2000);
const POLL_TIMEOUT: Duration = Duration::from_millis(1000);
const MAX_GIDS_UNKNOWN: u16 = 0;

/// The periodic sends, as one table (see `time::Periodic`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Slot {
    Keepalive10 = 0,
    Ze1Every40 = 1,
    Wake100 = 2,
    Ze1Every500 = 3,
    Poll = 4,
}

const SLOTS: usize = 5;

/// Frames queued for sending (a tick can produce several at once).
type Outbox = heapless::Deque<CanFrame, 16>;

#[derive(Clone, Debug)]
pub struct NissanLeaf {
    timers: [Periodic; SLOTS],
    outbox: Outbox,
    contactors: ContactorRequest,
    generation: Generation,
    counter_1d4: u8,
    step_1f2: u8,
    counter_50c: u8,
    counter_3b8: u8,
    heater_request: bool,
    poll_index: usize,
    /// The group whose reply is being reassembled and when it was asked for.
    pending: Option<(u8, Instant)>,
    reply: Reassembler<256>,
    gids: Option<u16>,
    max_gids: u16,
    soh_percent: Option<u8>,
    /// Someone else (LeafSpy) polls the LBC: hold our polls until this time.
    polls_paused_until: Option<Instant>,
}

impl Default for NissanLeaf {
    fn default() -> Self {
        Self::new()
    }
}

impl NissanLeaf {
    pub fn new() -> Self {
        NissanLeaf {
            timers: [
                Periodic::new(Duration::from_millis(10)),
                Periodic::new(Duration::from_millis(40)),
                Periodic::new(Duration::from_millis(100)),
                Periodic::new(Duration::from_millis(500)),
                Periodic::new(POLL_INTERVAL),
            ],
            outbox: Outbox::new(),
            contactors: ContactorRequest::Open,
            generation: Generation::Ze0,
            counter_1d4: 0,
            step_1f2: 0,
            counter_50c: 0,
            counter_3b8: 0,
            heater_request: false,
            poll_index: 0,
            pending: None,
            reply: Reassembler::default(),
            gids: None,
            max_gids: MAX_GIDS_UNKNOWN,
            soh_percent: None,
            polls_paused_until: None,
        }
    }

    pub fn generation(&self) -> Generation {
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
            for (i, t) in self.timers.iter_mut().enumerate() {
                // Stagger the first poll so the pack has announced itself.
                let first = if i == Slot::Poll as usize { now + Duration::from_millis(500) } else { now };
                t.start_at(first);
            }
        }
    }

    fn set_generation(&mut self, now: Instant, model: &mut BatteryModel, g: Generation) {
        // ZE1 markers win over the AZE0 marker (ZE1 packs send 0x59E too).
        let rank = |g: Generation| match g {
            Generation::Ze0 => 0,
            Generation::Aze0 => 1,
            Generation::Ze1 => 2,
        };
        if rank(g) > rank(self.generation) {
            self.generation = g;
        }
        model.extras.set(now, "generation", ExtraValue::Text(self.generation.name()));
    }

    fn update_energy(&self, now: Instant, model: &mut BatteryModel) {
        if let Some(g) = self.gids {
            model.remaining_energy = Some(Reading::new(WattHours(g as u32 * WH_PER_GID), now));
        }
        if let (true, Some(soh)) = (self.max_gids != MAX_GIDS_UNKNOWN, self.soh_percent) {
            let total = self.max_gids as u32 * WH_PER_GID * soh as u32 / 100;
            model.total_energy = Some(Reading::new(WattHours(total), now));
        }
    }

    fn handle_reply(&self, now: Instant, model: &mut BatteryModel) {
        let p = self.reply.payload();
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
                // A 12 V supply sagging makes the LBC report nonsense (BE's 12 V check: > 60 V per "cell").
                if cells.iter().all(|c| c.0 < 6000) {
                    model.cells.set_voltages(now, &cells);
                }
            }
            group::TEMPERATURES if data.len() >= 11 => {
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
            group::PRECISION if data.len() >= 30 => {
                let insulation = u16::from_be_bytes([data[22], data[23]]);
                if insulation > 0 {
                    model.extras.number(now, "insulation_resistance", insulation as i64, 0, "kΩ");
                }
                // Hx: raw / 102.4 %, kept in 0.01 %.
                let raw = u16::from_be_bytes([data[28], data[29]]) as i64;
                model.extras.number(now, "hx", raw * 1000 / 1024, 2, "%");
            }
            _ => {}
        }
    }
}

impl Battery for NissanLeaf {
    fn design(&self) -> PackDesign {
        DESIGN
    }

    fn requirements(&self) -> &'static [Requirement] {
        match self.generation {
            Generation::Ze0 => &REQUIRED_ZE0,
            Generation::Aze0 => &REQUIRED_AZE0,
            Generation::Ze1 => &REQUIRED_ZE1,
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
                model.requests.set(BmsRequests::OPEN_RELAYS, s.relay_cut_request != 0);
                model.faults.set(BmsFaults::HVIL_OPEN, !s.interlock_ok);
                model.bms_status = if s.relay_cut_request != 0 { BmsStatus::Standby } else { BmsStatus::Active };
                model.extras.number(now, "failsafe_status", s.failsafe_status as i64, 0, "");
                model.extras.set(now, "main_relay_on_permission", ExtraValue::Flag(s.main_relay_on_permission));
                model.extras.set(now, "full_charge", ExtraValue::Flag(s.full_charge));
                model.extras.set(now, "interlock", ExtraValue::Flag(s.interlock_ok));
            }
            id::POWER_LIMITS => {
                let mut l = PowerLimits::parse(checked(frame)?);
                // The pack's own full/empty flags stop that direction, as BE does.
                if model.extras.get("full_charge").is_some_and(|e| e.value == ExtraValue::Flag(true)) {
                    l.charge = Watts(0);
                }
                model.max_charge_power = Some(Reading::new(l.charge, now));
                model.max_discharge_power = Some(Reading::new(l.discharge, now));
            }
            id::SOC => {
                let s = Soc::parse(checked(frame)?);
                if let Some(soc) = s.soc {
                    model.soc = Some(Reading::new(soc, now));
                }
                if s.empty {
                    model.max_discharge_power = Some(Reading::new(Watts(0), now));
                }
                model.extras.set(now, "capacity_empty", ExtraValue::Flag(s.empty));
            }
            id::GIDS => {
                let g = Gids::parse(require_len(frame, 8)?);
                if g.is_max {
                    self.max_gids = g.gids;
                } else {
                    self.gids = Some(g.gids);
                    model.extras.number(now, "gids", g.gids as i64, 0, "");
                }
                if let Some(soh) = g.soh_percent {
                    self.soh_percent = Some(soh);
                    model.soh = Some(Reading::new(BasisPoints(soh as u16 * 100), now));
                }
                if self.max_gids == MAX_GIDS_UNKNOWN && self.generation == Generation::Ze0 {
                    // 24 kWh packs do not multiplex the maximum: BE starts from 273 GIDs (21 kWh usable).
                    self.max_gids = 273;
                }
                if self.generation == Generation::Ze0 {
                    let t = DeciCelsius(g.average_temperature_c * 10);
                    // Only the average is known: BE reports min as 1 °C below it.
                    model.temperature_min = Some(Reading::new(DeciCelsius(t.0 - 10), now));
                    model.temperature_max = Some(Reading::new(t, now));
                }
                self.update_energy(now, model);
            }
            id::HISTORY => {
                let d = require_len(frame, 5)?;
                if self.generation == Generation::Aze0 {
                    let t = DeciCelsius((d[2] as i16 / 2 - 40) * 10);
                    match d[0] >> 6 {
                        1 => model.temperature_max = Some(Reading::new(t, now)),
                        3 => model.temperature_min = Some(Reading::new(t, now)),
                        _ => {}
                    }
                }
                self.heater_request = d[1] & 0x01 != 0;
            }
            id::AZE0_MARKER => self.set_generation(now, model, Generation::Aze0),
            s if id::ZE1_MARKERS.contains(&s) => self.set_generation(now, model, Generation::Ze1),
            id::DIAG_REQUEST => {
                // Another tester (LeafSpy) talks to the LBC: stay out of its way for a while, as BE does.
                self.polls_paused_until = Some(now + Duration::from_secs(20));
                self.pending = None;
                self.reply.reset();
                return Ok(FrameUse::Ignored);
            }
            id::DIAG_RESPONSE => {
                if self.pending.is_none() {
                    return Ok(FrameUse::Ignored);
                }
                match self.reply.push(frame.data()) {
                    Ok(Step::More) => self.push(FLOW_CONTROL),
                    Ok(Step::Done) => {
                        self.handle_reply(now, model);
                        self.pending = None;
                    }
                    Err(_) => {
                        self.pending = None;
                        return Err(DecodeError::BadSequence { id: frame.raw_id() });
                    }
                }
            }
            _ => return Ok(FrameUse::Ignored),
        }
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        if let Some(f) = self.outbox.pop_front() {
            return Some(f);
        }
        if self.timers[Slot::Keepalive10 as usize].poll(now) && self.contactors == ContactorRequest::Closed {
            self.push(vcm_1d4(self.counter_1d4));
            self.push(vcm_1f2(self.step_1f2));
            self.counter_1d4 = (self.counter_1d4 + 1) % 4;
            self.step_1f2 = (self.step_1f2 + 1) % 20;
        }
        if self.timers[Slot::Ze1Every40 as usize].poll(now) && self.generation == Generation::Ze1 {
            self.push(CanFrame::std8(id::ZE1_355, [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x40, 0x00]));
        }
        if self.timers[Slot::Wake100 as usize].poll(now) {
            if self.generation == Generation::Ze1 {
                let flip = if self.counter_3b8.is_multiple_of(2) { 0xE8 } else { 0xC8 };
                self.push(
                    CanFrame::standard(id::ZE1_3B8, &[0x7F, flip, self.counter_3b8, 0x07, 0xFF]).expect("5 bytes"),
                );
                self.counter_3b8 = (self.counter_3b8 + 1) % 15;
                self.push(CanFrame::std8(id::ZE1_5C5, [0x40, 0x01, 0x2F, 0x5E, 0x00, 0x00, 0x00, 0x00]));
                self.push(CanFrame::standard(id::ZE1_626, &[0x02, 0x00, 0xFF, 0x1D, 0x20, 0x00]).expect("6 bytes"));
            }
            self.push(vcm_50b(self.heater_request));
            self.push(vcm_50c(self.counter_50c));
            self.counter_50c = (self.counter_50c + 1) % 4;
        }
        if self.timers[Slot::Ze1Every500 as usize].poll(now) && self.generation == Generation::Ze1 {
            self.push(CanFrame::standard(id::ZE1_5EC, &[0x00]).expect("1 byte"));
        }
        if let Some((_, asked)) = self.pending {
            if now.saturating_since(asked) > POLL_TIMEOUT {
                self.pending = None;
                self.reply.reset();
            }
        }
        if self.timers[Slot::Poll as usize].poll(now)
            && self.pending.is_none()
            && self.polls_paused_until.is_none_or(|t| now >= t)
        {
            let g = group::POLLED[self.poll_index % group::POLLED.len()];
            self.poll_index = (self.poll_index + 1) % group::POLLED.len();
            self.pending = Some((g, now));
            self.reply.reset();
            self.push(group_request(g));
        }
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            // Queued frames (flow control) are due at once.
            return Some(Instant::ZERO);
        }
        self.timers.iter().filter_map(|t| t.next_at()).min()
    }

    fn set_contactors(&mut self, now: Instant, request: ContactorRequest) {
        self.contactors = request;
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
        BatteryModel::new(DESIGN)
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
        assert_eq!(m.extras.get("gids").unwrap().value, ExtraValue::Number { raw: 300, decimals: 0, unit: "" });
        assert_eq!(m.extras.get("generation").unwrap().value, ExtraValue::Text("ZE1"));
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
    fn keepalive_only_while_contactors_may_close() {
        let mut leaf = NissanLeaf::new();
        leaf.set_contactors(t(0), ContactorRequest::Open);
        let ids: Vec<u16> = core::iter::from_fn(|| leaf.poll_transmit(t(0))).filter_map(|f| f.standard_id()).collect();
        assert!(ids.contains(&0x50B) && !ids.contains(&0x1D4), "{ids:x?}");
        leaf.set_contactors(t(5), ContactorRequest::Closed);
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
        assert_eq!(seen_1d4, 10, "one 0x1D4 every 10 ms");
        assert_eq!(leaf.poll_timeout(), Some(t(110)));
    }

    #[test]
    fn cell_voltages_arrive_through_a_polled_multi_frame_reply() {
        let mut leaf = NissanLeaf::new();
        let mut m = model();
        leaf.set_contactors(t(0), ContactorRequest::Open);
        // Run until the first poll (group 0x01), answer it with a negative reply so the next is cells.
        let mut now = 0;
        let mut asked = None;
        while asked.is_none() && now < 10_000 {
            while let Some(f) = leaf.poll_transmit(t(now)) {
                if f.standard_id() == Some(0x79B) && f.data()[1] == 0x21 {
                    asked = Some(f.data()[2]);
                }
            }
            now += 10;
        }
        assert_eq!(asked, Some(group::PRECISION));
        // Build the cells reply: 61 02 + 96 × u16 + 2 bytes, segmented as the LBC does.
        let mut payload = vec![0x61, 0x02];
        for i in 0..96u16 {
            payload.extend_from_slice(&(3700 + i).to_be_bytes());
        }
        payload.extend_from_slice(&[0xFF, 0xFF]);
        leaf.pending = Some((group::CELLS, t(now)));
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
            let fc = leaf.poll_transmit(t(now));
            if i + 1 < frames.len() {
                assert_eq!(fc, Some(FLOW_CONTROL), "flow control after frame {i}");
            }
        }
        assert_eq!(m.cells.count(), 96);
        assert_eq!(m.cells.voltages()[95], MilliVolts(3795));
        assert_eq!(m.cells.min(), Some((0, MilliVolts(3700))));
    }

    #[test]
    fn thermistor_conversion_follows_bes_table() {
        // 718 is BE's "0 °C" placeholder raw value in °F×10 terms: 1620 - 718 × 1.81 = 320.42 → 32 °F → 0 °C.
        assert_eq!(thermistor_dc(718), Some(DeciCelsius(0)));
        assert_eq!(thermistor_dc(0xFFFF), None);
        // Hotter sensors read lower raw values.
        assert!(thermistor_dc(500).unwrap() > thermistor_dc(600).unwrap());
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
