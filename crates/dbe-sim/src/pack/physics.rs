//! The physical state of a simulated pack, shared by every wire mapping: charge, cell voltages, temperature,
//! what its BMS would allow, and its contactors.
//!
//! The model is deterministic from its parameters (the per-cell spread comes from `seed`) and time is passed in:
//! [`PackModel::advance`] integrates from the last call to `now`, and every input that changes what flows
//! (current, contactors) settles the past first, so results do not depend on how often a caller looks.
//!
//! What it models, and how plainly:
//! - Open-circuit voltage per cell from the chemistry's curve ([`super::ocv`], approximations).
//! - A series resistance per cell: under load every cell reads `OCV + I·R` (`+` = charging, so a discharge sags).
//! - Cell spread: a fixed offset per cell, uniform within ±`spread_mv`; drift: each cell moving further the way
//!   its offset already points, at up to `drift_mv_per_day` (weak cells get weaker). Off for the LEAF.
//! - Coulomb counting over the usable capacity at the present health (`capacity_wh × SOH` over a nominal cell
//!   voltage), clamped to 0..100 %.
//! - Temperature: Joule heating `k·I²` relaxing to ambient with a time constant. A first-order lump, not a
//!   thermal model of any pack.
//! - BMS limits ([`BmsLimits`]): full power inside a temperature window, reduced when cold, little outside; a
//!   linear taper to zero near full and near empty; optionally (off for the LEAF, whose published taper is its
//!   own) capped by the current that keeps the extreme cell inside its voltage window through `I·R`.
//! - Balancing: shunts on the cells above the lowest by a band, once the highest cell passes a threshold.
//!
//! Faults that act on the physics (a cell forced to a voltage, a temperature sensor offset, a stuck relay) live
//! here; faults of the wire (silent, corrupt checksums, frozen frames) are in [`super::faults::WireFaults`], which
//! each wire mapping honours.

use dbe_core::units::{DeciAmps, MilliVolts};
use dbe_core::Instant;

use super::faults::WireFaults;
use super::ocv::OcvCurve;
use super::relays::{RelayFault, RelayWiring, Relays};

/// What the BMS allows, in W, from the physics and its limit parameters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct BmsLimits {
    pub charge_w: u32,
    pub discharge_w: u32,
}

/// How a pack's BMS derives its power limits (see the module doc).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LimitParams {
    pub max_charge_w: f64,
    pub max_discharge_w: f64,
    /// Charge power tapers linearly from full at `.0` % SOC to zero at `.1` %.
    pub charge_taper_pct: (f64, f64),
    /// Discharge power tapers linearly from full at `.0` % SOC to zero at `.1` %.
    pub discharge_taper_pct: (f64, f64),
    /// Inside this window (°C, inclusive) the temperature factor is 1 (or `cold_factor` below `cold_below_c`).
    pub temperature_window_c: (f64, f64),
    /// Factor outside the window.
    pub outside_factor: f64,
    pub cold_below_c: f64,
    pub cold_factor: f64,
    /// The cell window (min, max mV) whose `I·R` headroom caps the limits, or `None`.
    pub cell_window_mv: Option<(u16, u16)>,
}

/// The physical parameters of a pack family (and one pack: capacity, health, state and seed).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct PhysicsParams {
    pub ocv: OcvCurve,
    /// Cells in series.
    pub cells: usize,
    /// Usable energy when new.
    pub capacity_wh: u32,
    pub soh_bp: u16,
    pub initial_soc_bp: u16,
    pub ambient_dc: i16,
    pub seed: u64,
    /// The nominal cell voltage that turns the energy into charge.
    pub nominal_cell_v: f64,
    /// Series resistance of one cell (group), µΩ.
    pub cell_resistance_uohm: i64,
    /// Each cell's fixed offset is uniform within ±this.
    pub spread_mv: i32,
    /// The fastest a cell drifts from the others (mV a day); 0: no drift.
    pub drift_mv_per_day: f64,
    /// Joule heating, °C per A² per hour.
    pub heating_c_per_a2h: f64,
    /// Relaxation to ambient, hours.
    pub thermal_time_constant_h: f64,
    pub limits: LimitParams,
    /// Balancing starts once the highest cell is above this, on cells more than `balance_band_mv` above the lowest.
    pub balance_above_mv: i32,
    pub balance_band_mv: i32,
    pub relays: RelayWiring,
}

/// A small deterministic generator (xorshift64*) so two runs with one seed are identical.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Highest cell voltage the model reports (the clamp keeps a wild injected offset on any wire's scale).
const CELL_MAX_MV: i32 = 6000;

#[derive(Clone, Debug)]
pub struct PackModel {
    p: PhysicsParams,
    soc: f64,
    temperature_dc: f64,
    current: DeciAmps,
    /// The fixed spread.
    offsets_mv: Vec<i32>,
    /// Drift so far (whole mV).
    drift_mv: Vec<i32>,
    /// Injected by tests (a cell forced to a voltage).
    extra_offsets_mv: Vec<i32>,
    /// Lowest, highest and sum of all offsets, kept up to date: the pack voltage is read every few ms.
    offsets: (i32, i32, i32),
    temperature_offset_dc: i16,
    relays: Relays,
    /// Faults of the wire, for the mapping to honour.
    pub wire: WireFaults,
    start: Instant,
    last: Instant,
}

impl PackModel {
    pub fn new(p: PhysicsParams, now: Instant) -> Self {
        let mut seed = p.seed.max(1);
        let span = (2 * p.spread_mv.max(0) + 1) as u64;
        let offsets_mv: Vec<i32> = (0..p.cells).map(|_| (rng(&mut seed) % span) as i32 - p.spread_mv.max(0)).collect();
        let mut m = PackModel {
            soc: p.initial_soc_bp as f64,
            temperature_dc: p.ambient_dc as f64,
            current: DeciAmps(0),
            offsets_mv,
            drift_mv: vec![0; p.cells],
            extra_offsets_mv: vec![0; p.cells],
            offsets: (0, 0, 0),
            temperature_offset_dc: 0,
            relays: Relays::new(p.relays),
            wire: WireFaults::default(),
            start: now,
            last: now,
            p,
        };
        m.offsets = m.offset_extremes();
        m
    }

    pub fn params(&self) -> &PhysicsParams {
        &self.p
    }

    pub fn cells(&self) -> usize {
        self.p.cells
    }

    // ---- time ----

    /// Integrates charge, heat and drift up to `now` at the present current.
    pub fn advance(&mut self, now: Instant) {
        let dt_h = now.saturating_since(self.last).as_millis() as f64 / 3_600_000.0;
        self.last = now;
        if dt_h <= 0.0 {
            return;
        }
        let amps = self.current.0 as f64 / 10.0;
        self.soc = (self.soc + amps * dt_h / self.capacity_ah() * 10_000.0).clamp(0.0, 10_000.0);
        let heat_dc_per_h = amps * amps * self.p.heating_c_per_a2h * 10.0;
        let relax = (self.temperature_dc - self.p.ambient_dc as f64) * (dt_h / self.p.thermal_time_constant_h).min(1.0);
        self.temperature_dc += heat_dc_per_h * dt_h - relax;
        if self.p.drift_mv_per_day != 0.0 && self.p.spread_mv > 0 {
            let days = now.saturating_since(self.start).as_millis() as f64 / 86_400_000.0;
            let rate = self.p.drift_mv_per_day / self.p.spread_mv as f64;
            let mut changed = false;
            for (d, &o) in self.drift_mv.iter_mut().zip(&self.offsets_mv) {
                let v = (o as f64 * rate * days).round() as i32;
                changed |= v != *d;
                *d = v;
            }
            if changed {
                self.offsets = self.offset_extremes();
            }
        }
    }

    /// The current flowing from now on (+ = charging); none flows while the contactors are open.
    pub fn set_current(&mut self, now: Instant, current: DeciAmps) {
        self.advance(now);
        self.current = if self.relays.closed() { current } else { DeciAmps(0) };
    }

    /// The current flowing now (+ = charging), the simulator's ground truth.
    pub fn current(&self) -> DeciAmps {
        self.current
    }

    // ---- charge ----

    /// Usable charge at present health over the nominal cell voltage.
    pub fn capacity_ah(&self) -> f64 {
        self.p.capacity_wh as f64 * self.p.soh_bp as f64 / 10_000.0 / (self.p.cells as f64 * self.p.nominal_cell_v)
    }

    /// State of charge, 0.01 % (unrounded: wire encoders round to their own scale).
    pub fn soc(&self) -> f64 {
        self.soc
    }

    pub fn soc_bp(&self) -> u16 {
        self.soc.round().clamp(0.0, 10_000.0) as u16
    }

    // ---- voltages ----

    /// The voltage every cell shares: OCV at the present SOC plus the I·R drop (0.1 A × 1 µΩ = 1e-4 mV).
    pub fn base_mv(&self) -> i32 {
        let ir = self.current.0 as i64 * self.p.cell_resistance_uohm / 10_000;
        self.p.ocv.mv(self.soc) as i32 + ir as i32
    }

    fn offset(&self, i: usize) -> i32 {
        self.offsets_mv[i] + self.drift_mv[i] + self.extra_offsets_mv[i]
    }

    fn cell_mv_from(&self, base: i32, i: usize) -> i32 {
        (base + self.offset(i)).clamp(0, CELL_MAX_MV)
    }

    pub fn cell_voltages(&self) -> Vec<MilliVolts> {
        let base = self.base_mv();
        (0..self.p.cells).map(|i| MilliVolts(self.cell_mv_from(base, i) as u16)).collect()
    }

    /// The sum of the cells, mV.
    pub fn pack_mv(&self) -> i32 {
        let base = self.base_mv();
        // Read every few ms: when no cell needs clamping the sum is the base times the cells plus the offsets.
        let (lo, hi, sum) = self.offsets;
        if base + lo >= 0 && base + hi <= CELL_MAX_MV {
            base * self.p.cells as i32 + sum
        } else {
            (0..self.p.cells).map(|i| self.cell_mv_from(base, i)).sum()
        }
    }

    /// Lowest, highest and sum of the per-cell offsets (spread, drift and injected).
    fn offset_extremes(&self) -> (i32, i32, i32) {
        let all = || (0..self.p.cells).map(|i| self.offset(i));
        (all().min().unwrap_or(0), all().max().unwrap_or(0), all().sum())
    }

    /// Puts `offset_mv` on cell `cell` (0-based) on top of its own voltage; out of range: nothing.
    pub fn set_cell_offset(&mut self, cell: usize, offset_mv: i32) {
        if let Some(o) = self.extra_offsets_mv.get_mut(cell) {
            *o = offset_mv;
        }
        self.offsets = self.offset_extremes();
    }

    /// Cell `cell` (0-based) at about `mv` now, following the pack from there; `None`: its own voltage again.
    pub fn set_cell_at(&mut self, cell: usize, mv: Option<i32>) {
        self.set_cell_offset(cell, 0);
        if let (Some(mv), Some(own)) = (mv, self.cell_voltages().get(cell)) {
            let own = own.0 as i32;
            self.set_cell_offset(cell, mv - own);
        }
    }

    // ---- temperature ----

    /// The temperature the sensors read (0.1 °C): the pack's own plus any injected sensor offset.
    pub fn temperature_dc(&self) -> i16 {
        self.temperature_dc.round() as i16 + self.temperature_offset_dc
    }

    /// Every temperature sensor `dc` (0.1 °C) off. The BMS reads its sensors too: its limits follow.
    pub fn set_temperature_offset(&mut self, dc: i16) {
        self.temperature_offset_dc = dc;
    }

    // ---- what the BMS allows ----

    pub fn limits(&self) -> BmsLimits {
        let l = &self.p.limits;
        let t = self.temperature_dc() as f64 / 10.0;
        let temp_factor = if !(l.temperature_window_c.0..=l.temperature_window_c.1).contains(&t) {
            l.outside_factor
        } else if t < l.cold_below_c {
            l.cold_factor
        } else {
            1.0
        };
        let soc = self.soc / 100.0;
        let (c_full, c_zero) = l.charge_taper_pct;
        let mut charge = if soc >= c_zero {
            0.0
        } else if soc > c_full {
            l.max_charge_w * (c_zero - soc) / (c_zero - c_full)
        } else {
            l.max_charge_w
        };
        let (d_full, d_zero) = l.discharge_taper_pct;
        let mut discharge = if soc <= d_zero {
            0.0
        } else if soc < d_full {
            l.max_discharge_w * (soc - d_zero) / (d_full - d_zero)
        } else {
            l.max_discharge_w
        };
        if let Some((min_mv, max_mv)) = l.cell_window_mv {
            let (charge_cap, discharge_cap) = self.headroom_w(min_mv as f64, max_mv as f64);
            charge = charge.min(charge_cap);
            discharge = discharge.min(discharge_cap);
        }
        BmsLimits { charge_w: (charge * temp_factor) as u32, discharge_w: (discharge * temp_factor) as u32 }
    }

    /// The power that takes the extreme cell from its resting voltage to the window's edge through `I·R`.
    fn headroom_w(&self, min_mv: f64, max_mv: f64) -> (f64, f64) {
        let ocv = self.p.ocv.mv(self.soc);
        let (lo, hi, _) = self.offsets;
        let r_mohm = self.p.cell_resistance_uohm.max(1) as f64 / 1000.0;
        let pack_v = ocv * self.p.cells as f64 / 1000.0;
        let charge_a = ((max_mv - (ocv + hi as f64)) / r_mohm).max(0.0);
        let discharge_a = ((ocv + lo as f64 - min_mv) / r_mohm).max(0.0);
        (charge_a * pack_v, discharge_a * pack_v)
    }

    /// Which cells bleed through their balancing shunts now.
    pub fn balancing(&self) -> Vec<bool> {
        let base = self.base_mv();
        let v: Vec<i32> = (0..self.p.cells).map(|i| self.cell_mv_from(base, i)).collect();
        let min = v.iter().copied().min().unwrap_or(0);
        let on = v.iter().copied().max().unwrap_or(0) > self.p.balance_above_mv;
        v.iter().map(|&mv| on && mv > min + self.p.balance_band_mv).collect()
    }

    // ---- contactors ----

    pub fn relays(&self) -> &Relays {
        &self.relays
    }

    pub fn contactors_closed(&self) -> bool {
        self.relays.closed()
    }

    fn relays_moved(&mut self, now: Instant, moved: Option<bool>) {
        if let Some(closed) = moved {
            // The relays moved at `now`: what flowed until then flowed at the old position.
            self.advance(now);
            if !closed {
                self.current = DeciAmps(0);
            }
        }
    }

    /// Drives the relays from outputs (hardwired packs): `negative` and `positive` energised close the circuit.
    pub fn drive_relays(&mut self, now: Instant, negative: bool, positive: bool) {
        let moved = self.relays.drive(negative, positive);
        self.relays_moved(now, moved);
    }

    /// Manual switches instead of driven relays (hardwired packs; `None`: back to driven relays, open until
    /// driven).
    pub fn set_manual_relays(&mut self, now: Instant, closed: Option<bool>) {
        let moved = self.relays.set_manual(closed);
        self.relays_moved(now, moved);
    }

    /// The BMS's own contactor decision (CAN-controlled packs), from what its wire mapping heard.
    pub fn set_can_request(&mut self, now: Instant, closed: bool) {
        let moved = self.relays.set_can_request(closed);
        self.relays_moved(now, moved);
    }

    pub fn set_relay_fault(&mut self, fault: RelayFault) {
        self.relays.set_fault(fault);
    }

    /// What a relay driven to `driven` reads back.
    pub fn relay_reads(&self, driven: bool) -> bool {
        self.relays.reads(driven)
    }
}
