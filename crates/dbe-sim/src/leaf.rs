//! A simulated Nissan LEAF pack: what a real LBC puts on EV-CAN, from a small physical model.
//!
//! It broadcasts 0x1DB/0x1DC (10 ms), 0x55B (100 ms), 0x5BC (100 ms; 500 ms on a ZE0) and 0x5C0/0x59E (+0x5EB on
//! ZE1, 500 ms) while powered,
//! answers 0x79B group polls (0x01, 0x02, 0x04, 0x06) with ISO-TP multi-frame replies paced by the tester's flow
//! control. Its main relays are hardwired, as on the real pack (in the car the VCM drives them with 12 V lines;
//! Battery-Emulator's wiki, "Contactor Control via GPIO pins"): they follow the relay outputs driven into them
//! ([`LeafPack::drive_relays`]: the negative and the positive closed, the precharge relay alone carries no load),
//! or a manual switch ([`LeafPack::set_manual_relays`]), never the CAN keep-alive. The keep-alive (0x1D4 with a
//! valid CRC and a counter that steps by one) is only checked and reported ([`LeafPack::keepalive_ok`]): what a
//! real LBC does without it, beyond its relays staying where the wires hold them, is not in the sources.
//!
//! Byte layouts are those of the driver's sources (Battery-Emulator NISSAN-LEAF-BATTERY, the EV-CAN DBC); the
//! encoders here are written separately from the driver's decoders so that a layout bug cannot cancel itself out.
//!
//! What differs by generation, as the real packs do it:
//! - 0x59E only on AZE0 and ZE1, 0x5EB only on ZE1 (the markers; 500 ms, DBC). A ZE0 sends no marker.
//! - 0x5BC byte 3: the ZE0's average temperature (°C + 40, ZE0 DBC); on AZE0/ZE1 the dashboard's temperature
//!   segment (`LB_Temperature_Segment_For_Dash`, 0.4166 % per bit). How the pack maps temperature to that segment is
//!   not in the sources; the sim maps -20..+60 °C onto 0..100 %, so that reading it as °C + 40 is plainly wrong.
//! - 0x5C0 (500 ms): ZE0/AZE0 multiplex max, average, min in turn in byte 0's top two bits (1, 2, 3; BE's
//!   VCU-CAN.cpp plays an AZE0 the same way), the value in byte 2 as (°C + 40) × 2. The ZE1 layout moves the mux
//!   to byte 0's bits 0-2 (ZE1 DBC).
//! - Group 0x01: announced length 0x29 (ZE0 and 24 kWh AZE0, 39 data bytes) or 0x2B (30 kWh AZE0, 41), Hx at data
//!   bytes 26..27 in 0.01 %; 0x35 (ZE1, 51), Hx at data bytes 28..29 as % × 102.4 (BE, OVMS).
//! - The interlock (0x1DB byte 3 bit 3) reads seated unless a test opens it; a sagging 12 V supply makes the LBC
//!   report every cell as 0xFFFF (BE's 12 V check looks for cells above 60 V).
//!
//! Physics: the shared [`PackModel`] (`crate::pack`) with the LEAF's parameters ([`physics_params`]): the NMC/LMO
//! open-circuit-voltage curve (3.0 V empty, 4.12 V full), a fixed per-cell offset of up to ±12 mV from `seed`,
//! 1.1 mΩ per cell of internal resistance, coulomb counting, temperature rising with I² and relaxing to ambient,
//! BMS power limits that shrink near full/empty and when cold or hot ([`LIMITS`]), and balancing shunts on the
//! highest cells above 4.0 V. This file is the LEAF's wire only: what it sends, what it answers, what it checks.

use dbe_core::units::{DeciAmps, DeciVolts, MilliVolts};
use dbe_core::{CanFrame, Duration, Instant};

use crate::pack::{ocv, BmsLimits, LimitParams, PackModel, PhysicsParams, RelayFault, RelayWiring, SimPack};

/// Pack generation: which markers it sends and how it reports temperatures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Generation {
    Ze0,
    Aze0,
    Ze1,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeafPackParams {
    pub generation: Generation,
    /// Usable energy when new.
    pub capacity_wh: u32,
    pub initial_soc_bp: u16,
    pub soh_bp: u16,
    pub ambient_dc: i16,
    pub seed: u64,
}

impl Default for LeafPackParams {
    fn default() -> Self {
        LeafPackParams {
            generation: Generation::Ze1,
            capacity_wh: 40_000,
            initial_soc_bp: 5000,
            soh_bp: 9500,
            ambient_dc: 200,
            seed: 1,
        }
    }
}

/// Cells in series in every LEAF generation (each a pair of cells in parallel; 48 modules of 2s2p).
pub const CELLS: usize = 96;
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);
const WH_PER_GID: u32 = 77;

fn crc8(data: &[u8]) -> u8 {
    // Polynomial 0x85, MSB first, no reflection (the LEAF's frame CRC), computed bitwise here on purpose.
    data.iter().fold(0u8, |mut c, &b| {
        c ^= b;
        for _ in 0..8 {
            c = if c & 0x80 != 0 { (c << 1) ^ 0x85 } else { c << 1 };
        }
        c
    })
}

/// Inverse of the LBC thermistor table for the sim's encoder: raw value whose reading is closest to `dc`.
fn thermistor_raw(dc: i16) -> u16 {
    // °F×10 from °C×10, then invert BE's piecewise table by searching (the table is monotonic, raw 300-700).
    let target_f10 = dc as f64 * 9.0 / 5.0 + 320.0;
    let f10_of = |raw: f64| -> f64 {
        match raw as u16 {
            589.. => 1620.0 - raw * 1.81,
            569..=588 => 572.0 + (579.0 - raw) * 1.80,
            558..=568 => 608.0 + (558.0 - raw) * 1.636_363_6,
            548..=557 => 626.0 + (548.0 - raw) * 1.80,
            537..=547 => 644.0 + (537.0 - raw) * 1.636_363_6,
            447..=536 => 662.0 + (527.0 - raw) * 1.8,
            438..=446 => 824.0 + (438.0 - raw) * 2.0,
            428..=437 => 842.0 + (428.0 - raw) * 1.80,
            365..=427 => 860.0 + (419.0 - raw) * 2.0,
            357..=364 => 986.0 + (357.0 - raw) * 2.25,
            348..=356 => 1004.0 + (348.0 - raw) * 2.0,
            316..=347 => 1022.0 + (340.0 - raw) * 2.25,
            _ => 1094.0 + (309.0 - raw) * 2.571_428_6,
        }
    };
    (250u16..=1020).min_by_key(|&r| ((f10_of(r as f64) - target_f10).abs() * 100.0) as u64).unwrap_or(718)
}

/// An ISO-TP reply being sent, frame by frame as the tester's flow control allows.
#[derive(Clone, Debug)]
struct Reply {
    payload: Vec<u8>,
    sent: usize,
    seq: u8,
    /// Consecutive frames the last flow control allows before waiting again (0 = all).
    credit: Option<u8>,
}

/// What the LBC asks of the car, raised by tests on top of what the pack's own state gives (the EV-CAN DBC's
/// 0x1DB `LB_Relay_Cut_Request` (2 bits), `LB_Failsafe_Status` (3 bits: 1 normal stop, 2 charging-mode stop,
/// 4 caution lamp), `LB_Full_CHARGE_flag`, `LB_Interlock`, and 0x55B `LB_Capacity_Empty`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LbcRequests {
    pub relay_cut: u8,
    pub failsafe: u8,
    pub full: bool,
    pub empty: bool,
    /// The interlock loop reads open.
    pub interlock_open: bool,
}

pub struct LeafPack {
    p: LeafPackParams,
    /// The physics every simulated pack shares; this file is only the LEAF's wire.
    model: PackModel,
    requests: LbcRequests,
    /// Frame ids the pack stops sending (a test's altered session).
    dropped: std::collections::BTreeSet<u16>,
    /// Diagnostic groups the pack stops answering.
    dropped_groups: std::collections::BTreeSet<u8>,
    interlock_seated: bool,
    supply_low: bool,
    last_keepalive: Option<Instant>,
    keepalive_ok: bool,
    last_1d4_counter: Option<u8>,
    /// Frozen: the broadcasts captured at the freeze repeat byte for byte and polls go unanswered (a hung LBC
    /// whose CAN controller keeps resending its last buffers).
    frozen: Option<Vec<CanFrame>>,
    next_10: Instant,
    next_100: Instant,
    next_500: Instant,
    mux_5bc: bool,
    /// 0x5C0's multiplex: 1 max, 2 average, 3 min.
    mux_5c0: u8,
    outbox: std::collections::VecDeque<CanFrame>,
    reply: Option<Reply>,
}

/// What the LBC allows, as the simulator's own figures (not from a source): 45 kW charge and 80 kW discharge,
/// tapering to zero from 90 % to 99 % and from 10 % to 1 %, halved below 10 °C, a fifth outside 0..55 °C.
pub const LIMITS: LimitParams = LimitParams {
    max_charge_w: 45_000.0,
    max_discharge_w: 80_000.0,
    charge_taper_pct: (90.0, 99.0),
    discharge_taper_pct: (10.0, 1.0),
    temperature_window_c: (0.0, 55.0),
    outside_factor: 0.2,
    cold_below_c: 10.0,
    cold_factor: 0.5,
    cell_window_mv: None,
};

/// The LEAF's physics: the NMC/LMO curve, 96 cells of 1.1 mΩ with ±12 mV of spread and no drift, 0.0008 °C per
/// A²·h of heating relaxing over 2 h, balancing above 4.0 V on cells 15 mV over the lowest, hardwired relays.
pub fn physics_params(p: &LeafPackParams) -> PhysicsParams {
    PhysicsParams {
        ocv: ocv::NMC,
        cells: CELLS,
        capacity_wh: p.capacity_wh,
        soh_bp: p.soh_bp,
        initial_soc_bp: p.initial_soc_bp,
        ambient_dc: p.ambient_dc,
        seed: p.seed,
        nominal_cell_v: 3.65,
        cell_resistance_uohm: 1100,
        spread_mv: 12,
        drift_mv_per_day: 0.0,
        heating_c_per_a2h: 0.0008,
        thermal_time_constant_h: 2.0,
        limits: LIMITS,
        balance_above_mv: 4000,
        balance_band_mv: 15,
        relays: RelayWiring::Hardwired,
    }
}

impl LeafPack {
    pub fn new(p: LeafPackParams, now: Instant) -> Self {
        LeafPack {
            model: PackModel::new(physics_params(&p), now),
            p,
            requests: LbcRequests::default(),
            dropped: Default::default(),
            dropped_groups: Default::default(),
            interlock_seated: true,
            supply_low: false,
            last_keepalive: None,
            keepalive_ok: false,
            last_1d4_counter: None,
            frozen: None,
            next_10: now,
            next_100: now,
            next_500: now,
            mux_5bc: false,
            mux_5c0: 0,
            outbox: Default::default(),
            reply: None,
        }
    }

    // ---- what tests look at and inject (the model's, kept here so callers of a LEAF need no trait) ----

    pub fn contactors_closed(&self) -> bool {
        self.model.contactors_closed()
    }

    /// Drives the relays from outputs: `negative` and `positive` energised close the main circuit.
    pub fn drive_relays(&mut self, now: Instant, negative: bool, positive: bool) {
        self.model.drive_relays(now, negative, positive);
    }

    /// Manual switches instead of driven relays (`None`: back to driven relays, open until driven).
    pub fn set_manual_relays(&mut self, now: Instant, closed: Option<bool>) {
        self.model.set_manual_relays(now, closed);
    }

    /// A relay that stays where it is (`Some(true)`: welded closed, `Some(false)`: fails to close), or `None`.
    pub fn set_relay_stuck(&mut self, stuck: Option<bool>) {
        self.model.set_relay_fault(stuck.map_or(RelayFault::None, RelayFault::Stuck));
    }

    /// What a relay driven to `driven` reads back (a stuck one reads where it is stuck).
    pub fn relay_reads(&self, driven: bool) -> bool {
        self.model.relay_reads(driven)
    }

    /// Whether a valid VCM keep-alive arrives (reported only: it opens and closes nothing).
    pub fn keepalive_ok(&self) -> bool {
        self.keepalive_ok
    }

    pub fn soc_bp(&self) -> u16 {
        self.model.soc_bp()
    }

    pub fn cell_voltages(&self) -> Vec<MilliVolts> {
        self.model.cell_voltages()
    }

    pub fn pack_voltage(&self) -> DeciVolts {
        // On the wire it is 0.5 V per bit; keep the sim's own figure on that grid so tests compare exactly.
        DeciVolts(((self.model.pack_mv() / 500) * 5) as u16)
    }

    pub fn temperature_dc(&self) -> i16 {
        self.model.temperature_dc()
    }

    /// The current flowing now (+ = charging), the simulator's ground truth.
    pub fn current(&self) -> DeciAmps {
        self.model.current()
    }

    pub fn set_current(&mut self, now: Instant, current: DeciAmps) {
        self.model.set_current(now, current);
    }

    pub fn set_silent(&mut self, silent: bool) {
        self.model.wire.silent = silent;
    }

    pub fn set_cell_offset(&mut self, cell: usize, offset_mv: i32) {
        self.model.set_cell_offset(cell, offset_mv);
    }

    pub fn set_corrupt_checksums(&mut self, on: bool) {
        self.model.wire.corrupt = on;
    }

    /// Freezes the pack's broadcasts at their present bytes (see `frozen`), or lets them live again.
    pub fn set_frozen(&mut self, on: bool) {
        self.frozen = if on {
            let mut cache = Vec::new();
            cache.push(self.frame_1db());
            cache.push(self.frame_1dc());
            cache.push(self.frame_55b());
            let f = self.frame_5bc();
            cache.push(f);
            Some(cache)
        } else {
            None
        };
    }

    /// Raises (or withdraws) the LBC's requests on its own frames.
    pub fn set_requests(&mut self, r: LbcRequests) {
        self.requests = r;
    }

    pub fn requests(&self) -> LbcRequests {
        self.requests
    }

    /// Stops (or resumes) sending every frame with this id.
    pub fn set_dropped(&mut self, id: u16, on: bool) {
        if on {
            self.dropped.insert(id);
        } else {
            self.dropped.remove(&id);
        }
    }

    /// Stops (or resumes) answering polls of this diagnostic group.
    pub fn set_group_dropped(&mut self, group: u8, on: bool) {
        if on {
            self.dropped_groups.insert(group);
        } else {
            self.dropped_groups.remove(&group);
        }
    }

    pub fn set_temperature_offset(&mut self, dc: i16) {
        self.model.set_temperature_offset(dc);
    }

    /// Unplugs (or plugs back) an HV connector: the interlock loop opens.
    pub fn set_interlock_seated(&mut self, seated: bool) {
        self.interlock_seated = seated;
    }

    /// Lets the LBC's 12 V supply sag (its cell reports become 0xFFFF) or recover.
    pub fn set_supply_low(&mut self, low: bool) {
        self.supply_low = low;
    }

    pub fn generation(&self) -> Generation {
        self.p.generation
    }

    pub fn capacity_ah(&self) -> f64 {
        self.model.capacity_ah()
    }

    pub fn model(&self) -> &PackModel {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut PackModel {
        &mut self.model
    }

    // ---- wire ----

    fn crc_frame(&self, id: u16, mut d: [u8; 8]) -> CanFrame {
        d[7] = crc8(&d[..7]);
        if self.model.wire.corrupt {
            d[7] ^= 0x5A;
        }
        CanFrame::std8(id, d)
    }

    fn frame_1db(&self) -> CanFrame {
        // 0.5 A per bit, rounded to nearest like a sensor's ADC (truncating would bias every reading toward zero).
        let current = self.model.current();
        let cur = (current.0 + if current.0 >= 0 { 2 } else { -2 }) / 5;
        let cur = cur as i16 as u16 & 0x07FF;
        let volt = (self.pack_voltage().0 / 5).min(0x3FE);
        let mut d = [0u8; 8];
        d[0] = (cur >> 3) as u8;
        let r = self.requests;
        d[1] = ((cur & 0x07) << 5) as u8 | (r.relay_cut & 0x03) << 3 | (r.failsafe & 0x07);
        d[2] = (volt >> 2) as u8;
        let full = self.model.soc() >= 9990.0 || r.full;
        let interlock = if self.interlock_seated && !r.interlock_open { 0x08 } else { 0 };
        d[3] = ((volt & 0x03) << 6) as u8 | 0x20 | interlock | if full { 0x10 } else { 0 };
        self.crc_frame(0x1DB, d)
    }

    fn frame_1dc(&self) -> CanFrame {
        let BmsLimits { charge_w: charge, discharge_w: discharge } = self.model.limits();
        let dis = (discharge / 250).min(0x3FF) as u16;
        let chg = (charge / 250).min(0x3FF) as u16;
        let mut d = [0u8; 8];
        d[0] = (dis >> 2) as u8;
        d[1] = ((dis & 0x03) << 6) as u8 | (chg >> 4) as u8 & 0x3F;
        d[2] = ((chg & 0x0F) << 4) as u8;
        self.crc_frame(0x1DC, d)
    }

    fn frame_55b(&self) -> CanFrame {
        let soc = (self.model.soc() / 10.0).round().clamp(0.0, 1000.0) as u16;
        let mut d = [0u8; 8];
        d[0] = (soc >> 2) as u8;
        d[1] = ((soc & 0x03) << 6) as u8;
        d[6] = if soc == 0 || self.requests.empty { 0x80 } else { 0 };
        self.crc_frame(0x55B, d)
    }

    fn frame_5bc(&mut self) -> CanFrame {
        self.mux_5bc = !self.mux_5bc;
        let max_gids = (self.p.capacity_wh / WH_PER_GID) as u16;
        // Only the 30/40/62 kWh packs multiplex their maximum (AZE0 DBC `LB_MaxGIDS`, BE).
        let has_max = self.p.generation != Generation::Ze0 && self.p.capacity_wh > 24_000;
        let gids = if self.mux_5bc && has_max {
            max_gids
        } else {
            (self.p.capacity_wh as f64 * self.p.soh_bp as f64 / 10_000.0 * self.model.soc()
                / 10_000.0
                / WH_PER_GID as f64) as u16
        };
        let mux = self.mux_5bc && has_max;
        let mut d = [0u8; 8];
        d[0] = (gids >> 2) as u8;
        d[1] = ((gids & 0x03) << 6) as u8;
        d[3] = if self.p.generation == Generation::Ze0 {
            ((self.temperature_dc() / 10) + 40).clamp(0, 255) as u8
        } else {
            // Dashboard segment: -20..+60 °C onto 0..100 %, 0.4166 (5/12) % per bit.
            let pct = ((self.temperature_dc() as i32 + 200) * 100 / 800).clamp(0, 100);
            (pct * 12 / 5) as u8
        };
        d[4] = ((self.p.soh_bp / 100) as u8) << 1;
        d[5] = if mux { 0x10 } else { 0 };
        CanFrame::std8(0x5BC, d)
    }

    fn frame_5c0(&mut self) -> CanFrame {
        self.mux_5c0 = self.mux_5c0 % 3 + 1;
        let t = self.temperature_dc() / 10;
        let v = match self.mux_5c0 {
            1 => t + 1,
            2 => t,
            _ => t - 1,
        };
        let mux_byte = if self.p.generation == Generation::Ze1 { self.mux_5c0 } else { self.mux_5c0 << 6 };
        let d = [mux_byte, 0, ((v + 40) * 2).clamp(0, 254) as u8, 0, 0, 0, 0, 0];
        CanFrame::std8(0x5C0, d)
    }

    fn broadcasts(&mut self, now: Instant) {
        if let Some(cache) = &self.frozen {
            while now >= self.next_10 {
                self.next_10 += Duration::from_millis(10);
                self.outbox.extend(cache[..2].iter().copied());
            }
            while now >= self.next_100 {
                self.next_100 += Duration::from_millis(100);
                self.outbox.extend(cache[2..].iter().copied());
            }
            self.next_10 = self.next_10.max(now);
            self.next_100 = self.next_100.max(now);
            self.next_500 = self.next_500.max(now + Duration::from_millis(500));
            return;
        }
        while now >= self.next_10 {
            self.next_10 += Duration::from_millis(10);
            let (a, b) = (self.frame_1db(), self.frame_1dc());
            self.outbox.push_back(a);
            self.outbox.push_back(b);
        }
        let ze0 = self.p.generation == Generation::Ze0;
        while now >= self.next_100 {
            self.next_100 += Duration::from_millis(100);
            let a = self.frame_55b();
            self.outbox.push_back(a);
            if !ze0 {
                let b = self.frame_5bc();
                self.outbox.push_back(b);
            }
        }
        while now >= self.next_500 {
            self.next_500 += Duration::from_millis(500);
            if ze0 {
                // 500 ms on a ZE0 (ZE0 DBC), 100 ms on the later packs.
                let b = self.frame_5bc();
                self.outbox.push_back(b);
            }
            let f = self.frame_5c0();
            self.outbox.push_back(f);
            if self.p.generation != Generation::Ze0 {
                self.outbox.push_back(CanFrame::std8(0x59E, [0; 8]));
            }
            if self.p.generation == Generation::Ze1 {
                self.outbox.push_back(CanFrame::std8(0x5EB, [0; 8]));
            }
        }
        // After a long gap (silent, or a test jumping time) do not replay the backlog.
        self.next_10 = self.next_10.max(now);
        self.next_100 = self.next_100.max(now);
        self.next_500 = self.next_500.max(now);
    }

    fn group_payload(&self, group: u8) -> Option<Vec<u8>> {
        let mut p = vec![0x61, group];
        match group {
            0x01 => {
                // Data bytes after `61 01`: 39 (ZE0, 24 kWh AZE0), 41 (30 kWh AZE0), 51 (ZE1); insulation at 22..23.
                let len = match self.p.generation {
                    Generation::Ze1 => 51,
                    Generation::Aze0 if self.p.capacity_wh > 24_000 => 41,
                    _ => 39,
                };
                let mut data = vec![0u8; len];
                data[22..24].copy_from_slice(&1500u16.to_be_bytes());
                // Hx% ≈ SOH% for a healthy pack.
                if self.p.generation == Generation::Ze1 {
                    let raw = (self.p.soh_bp as u32 * 1024 / 1000) as u16; // % × 102.4
                    data[28..30].copy_from_slice(&raw.to_be_bytes());
                } else {
                    data[26..28].copy_from_slice(&self.p.soh_bp.to_be_bytes()); // 0.01 %
                }
                p.extend(data);
            }
            0x02 => {
                for v in self.cell_voltages() {
                    let v = if self.supply_low { 0xFFFF } else { v.0 };
                    p.extend_from_slice(&v.to_be_bytes());
                }
                p.extend_from_slice(&[0xFF, 0xFF]);
            }
            0x04 => {
                let base = self.temperature_dc();
                for (k, dt) in [-10i16, 0, 5, 10].into_iter().enumerate() {
                    let raw =
                        if k == 2 && self.p.generation != Generation::Ze0 { 0xFFFF } else { thermistor_raw(base + dt) };
                    p.extend_from_slice(&raw.to_be_bytes());
                    p.push(((base + dt) / 10) as u8);
                }
            }
            0x06 => {
                let b = self.model.balancing();
                let mut bytes = [0u8; 12];
                for (i, on) in b.iter().enumerate() {
                    if *on {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                p.extend_from_slice(&bytes);
                p.extend_from_slice(&[0xFF; 6]);
            }
            _ => return None,
        }
        Some(p)
    }

    fn send_reply_frames(&mut self) {
        let Some(r) = self.reply.as_mut() else { return };
        if r.sent == 0 {
            let mut f = [0xFFu8; 8];
            f[0] = 0x10 | ((r.payload.len() >> 8) & 0x0F) as u8;
            f[1] = r.payload.len() as u8;
            f[2..8].copy_from_slice(&r.payload[..6]);
            r.sent = 6;
            r.seq = 1;
            r.credit = None; // wait for flow control
            self.outbox.push_back(CanFrame::std8(0x7BB, f));
            return;
        }
        while let Some(credit) = r.credit {
            if r.sent >= r.payload.len() {
                self.reply = None;
                return;
            }
            let n = (r.payload.len() - r.sent).min(7);
            let mut f = [0xFFu8; 8];
            f[0] = 0x20 | (r.seq & 0x0F);
            f[1..1 + n].copy_from_slice(&r.payload[r.sent..r.sent + n]);
            r.sent += n;
            r.seq = r.seq.wrapping_add(1);
            self.outbox.push_back(CanFrame::std8(0x7BB, f));
            r.credit = match credit {
                0 => Some(0),
                1 => None,
                c => Some(c - 1),
            };
            if r.sent >= r.payload.len() {
                self.reply = None;
                return;
            }
        }
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        if self.model.wire.silent {
            return;
        }
        let Some(id) = frame.standard_id() else { return };
        let d = frame.data();
        match id {
            0x1D4 if d.len() == 8 && crc8(&d[..7]) == d[7] && d[4] & 0x07 == 0x07 => {
                let counter = d[4] >> 6;
                let in_step = self.last_1d4_counter.is_none_or(|c| (c + 1) % 4 == counter);
                let timely = self.last_keepalive.is_none_or(|t| now.saturating_since(t) <= Duration::from_millis(100));
                self.last_1d4_counter = Some(counter);
                self.keepalive_ok = in_step && timely;
                self.last_keepalive = Some(now);
            }
            0x79B if d.len() >= 3 && self.frozen.is_none() => match (d[0], d[1]) {
                (0x02, 0x21) if self.dropped_groups.contains(&d[2]) => {}
                (0x02, 0x21) => {
                    self.reply =
                        self.group_payload(d[2]).map(|payload| Reply { payload, sent: 0, seq: 1, credit: None });
                    self.send_reply_frames();
                }
                (fc, bs) if fc & 0xF0 == 0x30 && self.reply.is_some() => {
                    if let Some(r) = self.reply.as_mut() {
                        r.credit = Some(bs);
                    }
                    self.send_reply_frames();
                }
                _ => {}
            },
            _ => {}
        }
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.model.advance(now);
        if self.last_keepalive.is_some_and(|t| now.saturating_since(t) > KEEPALIVE_TIMEOUT) {
            self.keepalive_ok = false;
            self.last_1d4_counter = None;
            self.last_keepalive = None;
        }
        if self.model.wire.silent {
            // Nothing is sent; the schedule moves on so the next deadline is in the future.
            self.outbox.clear();
            self.next_10 = self.next_10.max(now + Duration::from_millis(10));
            self.next_100 = self.next_100.max(now + Duration::from_millis(100));
            self.next_500 = self.next_500.max(now + Duration::from_millis(500));
            return None;
        }
        if self.outbox.is_empty() {
            self.broadcasts(now);
        }
        while let Some(f) = self.outbox.pop_front() {
            if f.standard_id().is_some_and(|id| self.dropped.contains(&id)) {
                continue;
            }
            return Some(f);
        }
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            return Some(Instant::ZERO);
        }
        let mut t = self.next_10.min(self.next_100).min(self.next_500);
        if let Some(k) = self.last_keepalive {
            t = t.min(k + KEEPALIVE_TIMEOUT + Duration::from_millis(1));
        }
        Some(t)
    }
}

impl SimPack for LeafPack {
    fn name(&self) -> &'static str {
        "nissan-leaf"
    }

    fn model(&self) -> &PackModel {
        &self.model
    }

    fn model_mut(&mut self) -> &mut PackModel {
        &mut self.model
    }

    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        LeafPack::handle_frame(self, now, frame)
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        LeafPack::poll_transmit(self, now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        LeafPack::poll_timeout(self)
    }

    fn set_frozen(&mut self, on: bool) {
        LeafPack::set_frozen(self, on)
    }

    fn keepalive_ok(&self) -> bool {
        self.keepalive_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocv_is_monotonic_and_bounded() {
        let mut last = 0.0;
        for s in (0..=10_000).step_by(50) {
            let v = ocv::NMC.mv(s as f64);
            assert!(v >= last);
            last = v;
        }
        assert_eq!(ocv::NMC.mv(-5.0), 3000.0);
        assert_eq!(ocv::NMC.mv(20_000.0), 4120.0);
    }

    fn pack(generation: Generation, capacity_wh: u32) -> LeafPack {
        LeafPack::new(LeafPackParams { generation, capacity_wh, ..Default::default() }, Instant::ZERO)
    }

    #[test]
    fn each_generation_sends_its_own_0x5bc_byte_3_and_0x5c0_multiplex() {
        let mut ze0 = pack(Generation::Ze0, 24_000);
        // 20 °C: the ZE0 sends it as 60; the later packs send the dash segment (50 % → 120).
        assert_eq!(ze0.frame_5bc().data()[3], 60);
        assert_eq!(pack(Generation::Aze0, 24_000).frame_5bc().data()[3], 120);
        // Max, average, min in turn, top two bits; (°C + 40) × 2 in byte 2.
        let seq: Vec<(u8, u8)> = (0..6).map(|_| ze0.frame_5c0()).map(|f| (f.data()[0], f.data()[2])).collect();
        assert_eq!(seq, [(0x40, 122), (0x80, 120), (0xC0, 118), (0x40, 122), (0x80, 120), (0xC0, 118)]);
        let mut ze1 = pack(Generation::Ze1, 40_000);
        assert_eq!((0..3).map(|_| ze1.frame_5c0().data()[0]).collect::<Vec<_>>(), [1, 2, 3]);
        // Only packs above 24 kWh multiplex the maximum GIDs.
        let mut aze0 = pack(Generation::Aze0, 24_000);
        assert!((0..4).all(|_| aze0.frame_5bc().data()[5] & 0x10 == 0));
        let mut aze0_30 = pack(Generation::Aze0, 30_000);
        assert!((0..4).any(|_| aze0_30.frame_5bc().data()[5] & 0x10 != 0));
    }

    #[test]
    fn group_0x01_has_each_generations_length_and_hx_position() {
        // SOH 95 %: Hx 95.00 % as 9500 at data 26..27, or 95 × 102.4 = 9728 at data 28..29 on a ZE1.
        for (generation, capacity, len, at, raw) in [
            (Generation::Ze0, 24_000, 0x29, 26, 9500u16),
            (Generation::Aze0, 24_000, 0x29, 26, 9500),
            (Generation::Aze0, 30_000, 0x2B, 26, 9500),
            (Generation::Ze1, 40_000, 0x35, 28, 9728),
        ] {
            let p = pack(generation, capacity).group_payload(0x01).unwrap();
            assert_eq!(p.len(), len, "{generation:?} {capacity}");
            assert_eq!(u16::from_be_bytes([p[2 + at], p[3 + at]]), raw, "{generation:?}");
        }
    }

    #[test]
    fn interlock_and_12v_sag_show_on_the_wire() {
        let mut p = pack(Generation::Aze0, 24_000);
        assert_eq!(p.frame_1db().data()[3] & 0x08, 0x08);
        p.set_interlock_seated(false);
        assert_eq!(p.frame_1db().data()[3] & 0x08, 0);
        p.set_supply_low(true);
        let cells = p.group_payload(0x02).unwrap();
        assert_eq!(&cells[2..4], &[0xFF, 0xFF]);
    }

    #[test]
    fn thermistor_inverse_round_trips_through_the_drivers_table() {
        for dc in [-100i16, 0, 150, 250, 400] {
            let raw = thermistor_raw(dc);
            let back = dbe_core::battery::nissan_leaf::thermistor_dc(raw).unwrap().0;
            assert!((back - dc).abs() <= 15, "{dc} → raw {raw} → {back}");
        }
    }
}
