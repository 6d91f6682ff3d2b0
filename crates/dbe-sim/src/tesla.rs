//! A simulated Tesla Model 3 / Model Y pack: what its BMS puts on the vehicle CAN bus, from the shared physics,
//! and when it closes its own contactors.
//!
//! Two packs: a Model 3 Long Range (96 bricks, NCA, [`TeslaPackParams::nca`]; the registry's `tesla-model3`) and
//! a Standard Range LFP (106 bricks, [`TeslaPackParams::lfp`]; reachable from tests: the registry builds each
//! driver's default pack and takes no options).
//!
//! Byte layouts, written here from the sources (not from the driver's decoders, so that a layout bug cannot cancel
//! itself out): joshwardell/model3dbc `Model3CAN.dbc` (DBC) for 0x132, 0x292, 0x332, 0x401, 0x2D2, 0x252, 0x212,
//! 0x20A, 0x352 (the pre-2021 layout), 0x3D2, 0x320 (the multiplex index) and the cycle times it gives
//! (`GenMsgCycleTime`: 0x132 10 ms; 0x292, 0x2D2, 0x252, 0x212 100 ms; 0x352, 0x3D2 1000 ms);
//! dalathegreat/Battery-Emulator `TESLA-BATTERY.cpp` (BE) for the 2021+ multiplexed 0x352, the 0x401 status bytes
//! (0x2A: three bricks, 0x02: the last frame with one), 0x7AA mux 5 (`HVP_battery12V` 36|12, 0.1 V) and the cell
//! counts (96 NCA/NCM, 102-108 LFP); commaai/opendbc `tesla_model3_party.dbc` and `teslacan.py` for the car's
//! frames the BMS checks (0x118 `DI_systemStatus`: counter 8|4, checksum byte 0; 0x221 `VCFRONT_LVPowerState`:
//! `VCFRONT_vehiclePowerState` 5|2 with 3 = DRIVE, counter 52|4, checksum byte 7) and the additive checksum
//! ([`dbe_core::crc::tesla_checksum`]).
//!
//! What it sends:
//! - 10 ms: 0x132 pack voltage (0|16, 0.01 V), `SmoothBattCurrent` (16|16 signed; DBC scale -0.1 A with Tesla's
//!   discharge-positive current, so the raw value is the charging current in 0.1 A), `ChargeHoursRemaining` (48|12,
//!   minutes; 4095 unless charging). `RawBattCurrent` (32|16) is left at 0: the DBC and BE disagree on its offset.
//! - 100 ms: 0x292 SOC min/UI/max/average (10 bits each at 0/10/20/30, 0.1 %; UI = the model's SOC, min and max
//!   the sim's ±0.5 %) and beginning-of-life energy (40|10, 0.1 kWh); 0x2D2 min/max pack voltage (0|16, 16|16,
//!   0.01 V: the chemistry's design bounds), max charge current (32|14, 0.1 A) and max discharge current (48|14,
//!   0.128 A, rounded down) from the model's power limits over the pack voltage; 0x252 max regen/discharge power
//!   (0|16, 16|16, 0.01 kW) with `BMS_powerLimitsState` (48|1) CALCULATED_FOR_DRIVE only while the contactors are
//!   closed; 0x212 `BMS_contactorState` (8|3), `BMS_hvState` (16|3), `BMS_isolationResistance` (19|10, 10 kΩ;
//!   5 MΩ), `BMS_state` (32|4: STANDBY, DRIVE while closed); 0x20A HVP contactor states (0|3, 3|3, set state
//!   8|4) and `HVP_hvilStatus` (40|4, 1 STATUS_OK); 0x332 brick temperatures (mux 0: max/min 16|8, 24|8, 0.5 °C
//!   -40, sensors 2|4, 8|4, thermal model 32|8, 40|8) and brick voltages (mux 1: max/min 2|12, 16|12, 2 mV, brick
//!   numbers 32|7, 40|7 from 0), one multiplex a frame; 0x401 one multiplex a frame, three bricks at 0.1 mV
//!   (16|16, 32|16, 48|16), status 0x2A, the last multiplex of a 106-brick pack with one brick and status 0x02;
//!   0x320 `BMS_alertMatrix` multiplexes 0-2 in turn with no alert set.
//! - 1 s: 0x352 (the NCA pack the pre-2021 flat layout: 0|11 nominal full, 11|11 nominal remaining, 22|11 expected
//!   remaining, 33|11 ideal remaining, 44|11 to charge complete, 55|8 buffer, all 0.1 kWh, 63|1 full charge
//!   complete; the LFP pack the 2021+ multiplexed one, mux 0|2 alternating: mux 0 nominal full 16|16, nominal
//!   remaining 32|16, ideal remaining 48|16 at 0.02 kWh, mux 1 buffer 16|16 at 0.01 kWh, expected remaining
//!   32|16, to charge complete 48|16 at 0.02 kWh); 0x3D2 lifetime discharged / charged energy (0|32, 32|32, 1 Wh),
//!   counted from what flowed; 0x7AA mux 5 with the 12 V supply (13.5 V unless a test lowers it).
//! - The sim's buffer is 0: its UI SOC spans the whole usable energy, so the nominal energy remaining is the
//!   nominal full pack energy times the SOC.
//!
//! Periods the sources do not give (DBE's assumptions, chosen plausible and kept in one table, [`PERIODS`]):
//! 0x332, 0x401, 0x20A and 0x320 every 100 ms; 0x7AA every second. BE notes that counting all cells takes minutes on
//! a real pack; at one 0x401 multiplex per 100 ms a 96-brick scan here takes 3.2 s.
//!
//! The BMS closes its contactors itself ([`RelayWiring::Can`]), and only while it hears a car: a valid 0x118 (its
//! checksum right and its counter one on from the last) and a valid 0x221 saying DRIVE (both multiplexes share one
//! counter, as the driver's sources send them), each no older than [`VEHICLE_TIMEOUT`], and, for a 2024+ pack
//! ([`TeslaPackParams::digital_hvil`]), a valid 0x1CF (counter 53|3, checksum byte 7, BE) as well. Anything else on
//! the car's frames (BE sends about 25 ids) is not checked. A valid 0x221 that is not DRIVE opens at once (the car
//! is powering down); frames that stop open after [`VEHICLE_TIMEOUT`]. Neither figure is in a source: BE's PR #570
//! opens a Tesla by withholding 0x221 ("after a few seconds" for the rest), BE issue #404 reports that stopping the
//! frames is the only way known to open one; 500 ms is DBE's assumption, the LEAF simulator's keep-alive timeout.
//! Closing takes [`CLOSE_TIME`] of valid frames without a bad one (CLOSING, the BMS's own precharge; also an
//! assumption); once closed, an odd bad frame is outlived by the timeout. A contactor stuck open
//! stays CLOSING, as field logs show it (BE issue #2257: "Contactor State: CLOSING ... PosState: STUCK Open!");
//! one stuck closed reads WELDED once the BMS has opened it. An open interlock ([`TeslaPack::set_hvil_ok`]) reports
//! its HVIL status and keeps the contactors open (BE issue #2129: "closing contactors not allowed").
//!
//! Faults: silent (hears and sends nothing; the car's frames time out and the contactors open), frozen (each id
//! repeats the last frame it sent, one multiplex of a multiplexed one, as a hung controller's CAN mailboxes do,
//! and the hung BMS makes no contactor decision either way), cell at
//! X mV, temperature offset, relay stuck (the shared model's). **Corrupt checksums act on nothing**: none of the
//! BMS's frames above carries a checksum or a counter in any source, so [`SimPack::checksummed`] says so and the
//! shared tests hold it to sending the same bytes. (A frozen Tesla is therefore invisible on the wire to any driver;
//! only values that should move and do not can tell.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dbe_core::crc::tesla_checksum;
use dbe_core::units::MilliVolts;
use dbe_core::{CanFrame, Duration, Instant};

use crate::pack::{ocv, LimitParams, PackModel, PhysicsParams, RelayWiring, SimPack};

/// The two packs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TeslaVariant {
    /// Model 3 Long Range: 96 bricks of NCA cells, the pre-2021 0x352 layout.
    Model3LongRangeNca,
    /// Standard Range LFP: 106 bricks, the 2021+ 0x352 layout.
    Lfp,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TeslaPackParams {
    pub variant: TeslaVariant,
    /// Usable energy when new.
    pub capacity_wh: u32,
    pub initial_soc_bp: u16,
    pub soh_bp: u16,
    pub ambient_dc: i16,
    pub seed: u64,
    /// A 2024+ pack that also wants the digital-HVIL frame 0x1CF before it closes.
    pub digital_hvil: bool,
}

impl TeslaPackParams {
    /// A Model 3 Long Range: 96 bricks, 75 kWh usable (the sim's figure).
    pub fn nca() -> Self {
        TeslaPackParams {
            variant: TeslaVariant::Model3LongRangeNca,
            capacity_wh: 75_000,
            initial_soc_bp: 5000,
            soh_bp: 9500,
            ambient_dc: 200,
            seed: 3,
            digital_hvil: false,
        }
    }

    /// A Standard Range LFP: 106 bricks, 55 kWh usable (the sim's figure).
    pub fn lfp() -> Self {
        TeslaPackParams { variant: TeslaVariant::Lfp, capacity_wh: 55_000, seed: 5, ..Self::nca() }
    }

    pub fn cells(&self) -> usize {
        match self.variant {
            TeslaVariant::Model3LongRangeNca => CELLS_NCA,
            TeslaVariant::Lfp => CELLS_LFP,
        }
    }
}

impl Default for TeslaPackParams {
    fn default() -> Self {
        Self::nca()
    }
}

pub const CELLS_NCA: usize = 96;
pub const CELLS_LFP: usize = 106;

/// How long the BMS keeps its contactors closed after the last valid car frame (DBE's assumption: module doc).
pub const VEHICLE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the BMS takes to close once the car says DRIVE (its precharge; DBE's assumption).
pub const CLOSE_TIME: Duration = Duration::from_millis(500);

/// The BMS's limits, the simulator's own figures (not from a source): 70 kW charge, 250 kW discharge, tapering to
/// zero from 90 % to 99 % and from 10 % to 1 %, halved below 10 °C, a fifth outside 0..55 °C, and capped by the
/// chemistry's cell window through `I·R` (a Tesla BMS derates near its cell limits).
const fn limits(cell_window_mv: (u16, u16)) -> LimitParams {
    LimitParams {
        max_charge_w: 70_000.0,
        max_discharge_w: 250_000.0,
        charge_taper_pct: (90.0, 99.0),
        discharge_taper_pct: (10.0, 1.0),
        temperature_window_c: (0.0, 55.0),
        outside_factor: 0.2,
        cold_below_c: 10.0,
        cold_factor: 0.5,
        cell_window_mv: Some(cell_window_mv),
    }
}

/// The chemistry's design bounds as the BMS reports them in 0x2D2, 0.01 V, and its cell window, mV (BE
/// `MAX/MIN_PACK_VOLTAGE_3Y_NCMA/_LFP`, `MAX/MIN_CELL_VOLTAGE_NCA_NCM/_LFP`).
fn design(variant: TeslaVariant) -> ((u16, u16), (u16, u16)) {
    match variant {
        TeslaVariant::Model3LongRangeNca => ((28_500, 40_300), (2950, 4250)),
        TeslaVariant::Lfp => ((29_680, 38_800), (2800, 3650)),
    }
}

/// The pack's physics: NCA 0.8 mΩ a brick with ±8 mV of spread, LFP 0.5 mΩ with ±5 mV; no drift; little heating
/// relaxing over 3 h; balancing near the top of the curve; CAN-controlled contactors. The sim's figures.
pub fn physics_params(p: &TeslaPackParams) -> PhysicsParams {
    let (_, window) = design(p.variant);
    let (ocv, nominal_cell_v, r, spread, balance_above) = match p.variant {
        TeslaVariant::Model3LongRangeNca => (ocv::NCA, 3.6, 800, 8, 4050),
        TeslaVariant::Lfp => (ocv::LFP, 3.2, 500, 5, 3350),
    };
    PhysicsParams {
        ocv,
        cells: p.cells(),
        capacity_wh: p.capacity_wh,
        soh_bp: p.soh_bp,
        initial_soc_bp: p.initial_soc_bp,
        ambient_dc: p.ambient_dc,
        seed: p.seed,
        nominal_cell_v,
        cell_resistance_uohm: r,
        spread_mv: spread,
        drift_mv_per_day: 0.0,
        heating_c_per_a2h: 0.0003,
        thermal_time_constant_h: 3.0,
        limits: limits(window),
        balance_above_mv: balance_above,
        balance_band_mv: 10,
        relays: RelayWiring::Can,
    }
}

/// The BMS's broadcasts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Msg {
    HvBus,
    Soc,
    DriveLimits,
    PowerAvailable,
    Status,
    Hvp,
    BrickMinMax,
    Bricks,
    Alerts,
    Energy,
    Totals,
    HvpDebug,
}

/// Every broadcast and its period (the sources' where they give one; see the module doc).
const PERIODS: [(Msg, u64); 12] = [
    (Msg::HvBus, 10),
    (Msg::Soc, 100),
    (Msg::DriveLimits, 100),
    (Msg::PowerAvailable, 100),
    (Msg::Status, 100),
    (Msg::Hvp, 100),
    (Msg::BrickMinMax, 100),
    (Msg::Bricks, 100),
    (Msg::Alerts, 100),
    (Msg::Energy, 1000),
    (Msg::Totals, 1000),
    (Msg::HvpDebug, 1000),
];

/// The BMS's contactor state machine.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Ctr {
    Open,
    Closing { since: Instant },
    Closed,
}

/// One of the car's checked frames: when it last arrived valid, since when every one has, and its last counter.
#[derive(Copy, Clone, Debug, Default)]
struct Checked {
    valid_at: Option<Instant>,
    /// The start of the present run of valid frames (`None` after an invalid one).
    run_since: Option<Instant>,
    last: Option<(Instant, u8)>,
}

impl Checked {
    /// A frame whose checksum was right, with `counter` out of `modulo`: valid if it steps by one from the last
    /// (or starts afresh after a gap longer than the timeout). The counter is taken either way (one bad step costs
    /// one frame, not the link).
    fn see(&mut self, now: Instant, counter: u8, modulo: u8) -> bool {
        let fresh = self.last.is_none_or(|(t, _)| now.saturating_since(t) > VEHICLE_TIMEOUT);
        let ok = fresh || self.last.is_some_and(|(_, c)| (c + 1) % modulo == counter);
        self.last = Some((now, counter));
        if ok {
            if !self.fresh(now) {
                self.run_since = None;
            }
            self.valid_at = Some(now);
            self.run_since.get_or_insert(now);
        } else {
            self.run_since = None;
        }
        ok
    }

    /// An invalid frame (a bad checksum does not get this far).
    fn invalid(&mut self) {
        self.run_since = None;
    }

    fn fresh(&self, now: Instant) -> bool {
        self.valid_at.is_some_and(|t| now.saturating_since(t) <= VEHICLE_TIMEOUT)
    }
}

/// `len` bits of `v` into `d` from bit `start`, Intel order (DBC `start|len@1+`).
fn put(d: &mut [u8; 8], start: u32, len: u32, v: u64) {
    let mask = ((1u64 << len) - 1) << start;
    let w = (u64::from_le_bytes(*d) & !mask) | ((v << start) & mask);
    *d = w.to_le_bytes();
}

fn get(d: &[u8], start: u32, len: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..d.len().min(8)].copy_from_slice(&d[..d.len().min(8)]);
    (u64::from_le_bytes(b) >> start) & ((1u64 << len) - 1)
}

pub struct TeslaPack {
    p: TeslaPackParams,
    model: PackModel,
    /// Frame ids the pack stops sending (a test's missing reading).
    dropped: BTreeSet<u16>,
    hvil_ok: bool,
    supply_12v_dv: u16,
    di_status: Checked,
    power_state: Checked,
    /// The last valid 0x221 said DRIVE.
    drive: bool,
    digital_hvil: Checked,
    ctr: Ctr,
    /// Lifetime energies (Wh, 0x3D2), counted from what flowed.
    discharged_wh: f64,
    charged_wh: f64,
    energy_at: Instant,
    next: [Instant; PERIODS.len()],
    steps: [u8; PERIODS.len()],
    /// The broadcasts captured at the freeze: the last frame of each (a hung BMS whose CAN controller resends its
    /// last buffer per id; a multiplexed message repeats one multiplex).
    frozen: Option<BTreeMap<Msg, CanFrame>>,
    outbox: VecDeque<CanFrame>,
}

impl TeslaPack {
    pub fn new(p: TeslaPackParams, now: Instant) -> Self {
        TeslaPack {
            model: PackModel::new(physics_params(&p), now),
            p,
            dropped: BTreeSet::new(),
            hvil_ok: true,
            supply_12v_dv: 135,
            di_status: Checked::default(),
            power_state: Checked::default(),
            drive: false,
            digital_hvil: Checked::default(),
            ctr: Ctr::Open,
            discharged_wh: 0.0,
            charged_wh: 0.0,
            energy_at: now,
            next: [now; PERIODS.len()],
            steps: [0; PERIODS.len()],
            frozen: None,
            outbox: VecDeque::new(),
        }
    }

    /// A Model 3 Long Range (96 bricks, NCA).
    pub fn model3_long_range(now: Instant) -> Self {
        Self::new(TeslaPackParams::nca(), now)
    }

    /// A Standard Range LFP pack (106 bricks).
    pub fn lfp(now: Instant) -> Self {
        Self::new(TeslaPackParams::lfp(), now)
    }

    pub fn params(&self) -> &TeslaPackParams {
        &self.p
    }

    /// Stops (or resumes) sending every frame with this id.
    pub fn set_dropped(&mut self, id: u16, on: bool) {
        if on {
            self.dropped.insert(id);
        } else {
            self.dropped.remove(&id);
        }
    }

    /// The HV interlock loop closed (`true`) or open: the HVP reports it and the BMS will not close.
    pub fn set_hvil_ok(&mut self, ok: bool) {
        self.hvil_ok = ok;
    }

    /// The 12 V supply the HVP reports in 0x7AA, 0.1 V.
    pub fn set_supply_12v(&mut self, dv: u16) {
        self.supply_12v_dv = dv;
    }

    /// Whether the car's frames the BMS checks arrive valid and say DRIVE now.
    pub fn vehicle_ok(&self, now: Instant) -> bool {
        self.di_status.fresh(now)
            && self.power_state.fresh(now)
            && self.drive
            && (!self.p.digital_hvil || self.digital_hvil.fresh(now))
    }

    /// Since when every checked frame has arrived valid (`None`: not all are in a clean run).
    fn clean_since(&self) -> Option<Instant> {
        let mut since = self.di_status.run_since?.max(self.power_state.run_since?);
        if self.p.digital_hvil {
            since = since.max(self.digital_hvil.run_since?);
        }
        Some(since)
    }

    /// The pack voltage on 0x132's grid (0.01 V).
    pub fn pack_voltage_cv(&self) -> u16 {
        (self.model.pack_mv().max(0) / 10).min(u16::MAX as i32) as u16
    }

    pub fn cell_voltages(&self) -> Vec<MilliVolts> {
        self.model.cell_voltages()
    }

    // ---- the BMS's contactors ----

    fn update_contactors(&mut self, now: Instant) {
        if self.frozen.is_some() {
            return;
        }
        // Closing needs a clean run of valid frames for the whole close; staying closed needs them fresh (an odd
        // bad frame while closed is outlived by the timeout).
        let want = self.vehicle_ok(now) && self.hvil_ok;
        let clean = self.clean_since();
        self.ctr = match (self.ctr, want) {
            (Ctr::Open, true) => Ctr::Closing { since: now },
            (Ctr::Closing { .. }, true) if clean.is_none() => Ctr::Open,
            (Ctr::Closing { since }, true) if now.saturating_since(since.max(clean.unwrap_or(since))) >= CLOSE_TIME => {
                self.model.set_can_request(now, true);
                if self.model.contactors_closed() {
                    Ctr::Closed
                } else {
                    Ctr::Closing { since }
                }
            }
            (c, true) => c,
            (Ctr::Open, false) => Ctr::Open,
            (_, false) => {
                self.model.set_can_request(now, false);
                Ctr::Open
            }
        };
    }

    /// `BMS_contactorState` (0x212 8|3, DBC values).
    fn contactor_state(&self) -> u8 {
        match self.ctr {
            Ctr::Open if self.model.contactors_closed() => 5, // WELDED
            Ctr::Open => 1,                                   // OPEN
            Ctr::Closing { .. } => 3,                         // CLOSING
            Ctr::Closed => 4,                                 // CLOSED
        }
    }

    fn account_energy(&mut self, now: Instant) {
        let dt_h = now.saturating_since(self.energy_at).as_millis() as f64 / 3_600_000.0;
        self.energy_at = now;
        let w = self.model.pack_mv() as f64 / 1000.0 * self.model.current().0 as f64 / 10.0;
        if w > 0.0 {
            self.charged_wh += w * dt_h;
        } else {
            self.discharged_wh -= w * dt_h;
        }
    }

    // ---- encoders ----

    /// How many steps (multiplexes) a broadcast cycles through.
    fn step_count(&self, msg: Msg) -> u8 {
        match msg {
            Msg::BrickMinMax => 2,
            Msg::Bricks => self.p.cells().div_ceil(3) as u8,
            Msg::Alerts => 3,
            Msg::Energy if self.p.variant == TeslaVariant::Lfp => 2,
            _ => 1,
        }
    }

    fn encode(&self, msg: Msg, step: u8) -> CanFrame {
        let mut d = [0u8; 8];
        let m = &self.model;
        let closed = self.ctr == Ctr::Closed && m.contactors_closed();
        let ((pack_min_cv, pack_max_cv), _) = design(self.p.variant);
        let soc_permille = (m.soc() / 10.0).round().clamp(0.0, 1000.0) as u64;
        let full_wh = self.p.capacity_wh as f64 * self.p.soh_bp as f64 / 10_000.0;
        let remaining_wh = full_wh * m.soc() / 10_000.0;
        let id = match msg {
            Msg::HvBus => {
                put(&mut d, 0, 16, self.pack_voltage_cv() as u64);
                put(&mut d, 16, 16, m.current().0.clamp(i16::MIN as i32, i16::MAX as i32) as i16 as u16 as u64);
                let minutes = if m.current().0 > 0 {
                    let ah_to_full = (10_000.0 - m.soc()) / 10_000.0 * m.capacity_ah();
                    ((ah_to_full / (m.current().0 as f64 / 10.0) * 60.0).round() as u64).min(4094)
                } else {
                    4095
                };
                put(&mut d, 48, 12, minutes);
                0x132
            }
            Msg::Soc => {
                put(&mut d, 0, 10, soc_permille.saturating_sub(5));
                put(&mut d, 10, 10, soc_permille);
                put(&mut d, 20, 10, (soc_permille + 5).min(1000));
                put(&mut d, 30, 10, soc_permille);
                put(&mut d, 40, 10, (self.p.capacity_wh / 100).min(1023) as u64);
                0x292
            }
            Msg::DriveLimits => {
                let l = m.limits();
                let volts = (self.pack_voltage_cv() as f64 / 100.0).max(1.0);
                let charge_da = (l.charge_w as f64 / volts * 10.0) as u64;
                let discharge_da = (l.discharge_w as f64 / volts * 10.0) as u64;
                put(&mut d, 0, 16, pack_min_cv as u64);
                put(&mut d, 16, 16, pack_max_cv as u64);
                put(&mut d, 32, 14, charge_da.min(0x3FFF));
                // 0.128 A = 1.28 dA per bit, rounded down so that the limit read is never above the BMS's.
                put(&mut d, 48, 14, (discharge_da * 100 / 128).min(0x3FFF));
                0x2D2
            }
            Msg::PowerAvailable => {
                let l = m.limits();
                put(&mut d, 0, 16, (l.charge_w / 10).min(0xFFFF) as u64);
                put(&mut d, 16, 16, (l.discharge_w / 10).min(0xFFFF) as u64);
                put(&mut d, 48, 1, closed as u64);
                0x252
            }
            Msg::Status => {
                put(&mut d, 8, 3, self.contactor_state() as u64);
                let hv = match self.ctr {
                    Ctr::Closed => 3,         // UP_FOR_DRIVE
                    Ctr::Closing { .. } => 1, // COMING_UP
                    Ctr::Open => 0,           // DOWN
                };
                put(&mut d, 16, 3, hv);
                put(&mut d, 19, 10, 500); // 5 MΩ
                put(&mut d, 32, 4, if closed { 1 } else { 0 }); // DRIVE, STANDBY
                0x212
            }
            Msg::Hvp => {
                // CONTACTOR_STATE_*: 1 OPEN, 2 PRECHARGE, 6 ECONOMIZED, 7 WELDED; set state 1 OPEN, 2 CLOSING,
                // 5 CLOSED, 7 WELDED.
                let (neg, pos, set) = match (self.ctr, m.contactors_closed()) {
                    (Ctr::Open, true) => (7, 7, 7),
                    (Ctr::Open, false) => (1, 1, 1),
                    (Ctr::Closing { .. }, _) => (6, 2, 2),
                    (Ctr::Closed, _) => (6, 6, 5),
                };
                put(&mut d, 0, 3, neg);
                put(&mut d, 3, 3, pos);
                put(&mut d, 8, 4, set);
                put(&mut d, 40, 4, if self.hvil_ok { 1 } else { 4 }); // STATUS_OK, VEHICLE_OPEN_FAULT
                0x20A
            }
            Msg::BrickMinMax => {
                put(&mut d, 0, 2, step as u64);
                if step == 0 {
                    let t = m.temperature_dc() as i32;
                    let raw = |dc: i32| ((dc + 400) / 5).clamp(0, 255) as u64;
                    put(&mut d, 2, 4, 3);
                    put(&mut d, 8, 4, 7);
                    put(&mut d, 16, 8, raw(t + 10));
                    put(&mut d, 24, 8, raw(t - 10));
                    put(&mut d, 32, 8, raw(t + 5));
                    put(&mut d, 40, 8, raw(t - 5));
                } else {
                    let v = m.cell_voltages();
                    let (imax, vmax) = v.iter().enumerate().max_by_key(|c| c.1 .0).map_or((0, 0), |(i, c)| (i, c.0));
                    let (imin, vmin) = v.iter().enumerate().min_by_key(|c| c.1 .0).map_or((0, 0), |(i, c)| (i, c.0));
                    put(&mut d, 2, 12, (vmax / 2) as u64);
                    put(&mut d, 16, 12, (vmin / 2) as u64);
                    put(&mut d, 32, 7, imax as u64);
                    put(&mut d, 40, 7, imin as u64);
                }
                return CanFrame::standard(0x332, &d[..6]).expect("6 bytes");
            }
            Msg::Bricks => {
                let v = m.cell_voltages();
                let first = step as usize * 3;
                let n = (v.len() - first).min(3);
                d[0] = step;
                d[1] = if n == 3 { 0x2A } else { 0x02 };
                for (k, cell) in v[first..first + n].iter().enumerate() {
                    put(&mut d, 16 + 16 * k as u32, 16, cell.0 as u64 * 10);
                }
                0x401
            }
            Msg::Alerts => {
                put(&mut d, 0, 4, step as u64);
                0x320
            }
            Msg::Energy => {
                let to_full = (full_wh - remaining_wh).max(0.0);
                match self.p.variant {
                    TeslaVariant::Model3LongRangeNca => {
                        let kwh10 = |wh: f64| ((wh / 100.0).round() as u64).min(0x7FF);
                        put(&mut d, 0, 11, kwh10(full_wh));
                        put(&mut d, 11, 11, kwh10(remaining_wh));
                        put(&mut d, 22, 11, kwh10(remaining_wh));
                        put(&mut d, 33, 11, kwh10(remaining_wh));
                        put(&mut d, 44, 11, kwh10(to_full));
                        put(&mut d, 55, 8, 0);
                        put(&mut d, 63, 1, (m.soc() >= 9990.0) as u64);
                    }
                    TeslaVariant::Lfp => {
                        let kwh50 = |wh: f64| ((wh / 20.0).round() as u64).min(0xFFFF);
                        put(&mut d, 0, 2, step as u64);
                        if step == 0 {
                            put(&mut d, 16, 16, kwh50(full_wh));
                            put(&mut d, 32, 16, kwh50(remaining_wh));
                            put(&mut d, 48, 16, kwh50(remaining_wh));
                        } else {
                            put(&mut d, 16, 16, 0);
                            put(&mut d, 32, 16, kwh50(remaining_wh));
                            put(&mut d, 48, 16, kwh50(to_full));
                        }
                    }
                }
                0x352
            }
            Msg::Totals => {
                put(&mut d, 0, 32, self.discharged_wh as u64);
                put(&mut d, 32, 32, self.charged_wh as u64);
                0x3D2
            }
            Msg::HvpDebug => {
                put(&mut d, 0, 4, 5);
                put(&mut d, 36, 12, self.supply_12v_dv as u64);
                0x7AA
            }
        };
        CanFrame::std8(id, d)
    }

    fn broadcasts(&mut self, now: Instant) {
        for (i, (msg, period)) in PERIODS.into_iter().enumerate() {
            let period = Duration::from_millis(period);
            while now >= self.next[i] {
                self.next[i] += period;
                let steps = self.step_count(msg);
                let step = self.steps[i] % steps;
                self.steps[i] = (step + 1) % steps;
                let f = match &self.frozen {
                    Some(cache) => cache.get(&msg).copied(),
                    None => Some(self.encode(msg, step)),
                };
                if let Some(f) = f {
                    self.outbox.push_back(f);
                }
            }
            // After a long gap (a test jumping time) no backlog.
            self.next[i] = self.next[i].max(now);
        }
    }

    fn handle_vehicle_frame(&mut self, now: Instant, frame: &CanFrame) {
        let Some(id) = frame.standard_id() else { return };
        let d = frame.data();
        if frame.is_remote() || d.len() != 8 {
            return;
        }
        match id {
            0x118 if tesla_checksum(0x118, d, 0) == d[0] => {
                self.di_status.see(now, get(d, 8, 4) as u8, 16);
            }
            0x118 => self.di_status.invalid(),
            0x221 if tesla_checksum(0x221, d, 7) == d[7] => {
                // Only a valid frame's power state counts.
                let valid = self.power_state.see(now, get(d, 52, 4) as u8, 16);
                self.drive = if valid { get(d, 5, 2) == 3 } else { self.drive };
            }
            0x221 => self.power_state.invalid(),
            0x1CF if self.p.digital_hvil && tesla_checksum(0x1CF, d, 7) == d[7] => {
                self.digital_hvil.see(now, get(d, 53, 3) as u8, 8);
            }
            0x1CF => self.digital_hvil.invalid(),
            _ => {}
        }
    }
}

impl SimPack for TeslaPack {
    fn name(&self) -> &'static str {
        "tesla-model3"
    }

    fn model(&self) -> &PackModel {
        &self.model
    }

    fn model_mut(&mut self) -> &mut PackModel {
        &mut self.model
    }

    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        if self.model.wire.silent || self.frozen.is_some() {
            return;
        }
        self.handle_vehicle_frame(now, frame);
        self.update_contactors(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.model.advance(now);
        self.account_energy(now);
        self.update_contactors(now);
        if self.model.wire.silent {
            self.outbox.clear();
            for (i, (_, period)) in PERIODS.into_iter().enumerate() {
                self.next[i] = self.next[i].max(now + Duration::from_millis(period));
            }
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

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            return Some(Instant::ZERO);
        }
        // The 10 ms broadcast is always due within 10 ms: the contactor timeouts are judged at that pace.
        self.next.iter().copied().min()
    }

    fn set_frozen(&mut self, on: bool) {
        self.frozen = on.then(|| {
            let mut cache = BTreeMap::new();
            for (i, (msg, _)) in PERIODS.into_iter().enumerate() {
                let steps = self.step_count(msg);
                // The step sent last (the next to send, less one).
                cache.insert(msg, self.encode(msg, (self.steps[i] + steps - 1) % steps));
            }
            cache
        });
    }

    /// The car's frames arrive valid (and say DRIVE).
    fn keepalive_ok(&self) -> bool {
        self.vehicle_ok(self.model_last())
    }

    fn checksummed(&self) -> bool {
        false
    }
}

impl TeslaPack {
    /// The moment the model last advanced to (the pack's own notion of now, for the trait's untimed queries).
    fn model_last(&self) -> Instant {
        self.energy_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u16, d: [u8; 8]) -> CanFrame {
        CanFrame::std8(id, d)
    }

    /// A 0x118 with `counter` (BE's template `AB 60 2A 00 00 08 00 00`, counter 8|4, checksum byte 0).
    fn di_status(counter: u8) -> CanFrame {
        let mut d = [0x00, 0x60, 0x2A, 0x00, 0x00, 0x08, 0x00, 0x00];
        d[1] = (d[1] & 0xF0) | (counter & 0x0F);
        d[0] = tesla_checksum(0x118, &d, 0);
        frame(0x118, d)
    }

    /// A 0x221 multiplex 0 with the power state `state` (5|2), `counter` (52|4), checksum byte 7.
    fn power_state(state: u8, counter: u8) -> CanFrame {
        let mut d = [0x00, 0x55, 0x55, 0x15, 0x54, 0x51, 0x01, 0x00];
        d[0] = (state & 3) << 5;
        d[6] = (d[6] & 0x0F) | (counter & 0x0F) << 4;
        d[7] = tesla_checksum(0x221, &d, 7);
        frame(0x221, d)
    }

    fn drain(p: &mut TeslaPack, now: Instant) -> Vec<CanFrame> {
        std::iter::from_fn(|| p.poll_transmit(now)).collect()
    }

    /// Feeds the car's two frames every 10 ms from `from` for `ms`, with valid counters from `c`.
    fn drive(p: &mut TeslaPack, from: u64, ms: u64, c: &mut u8, state: u8) {
        for t in (from..from + ms).step_by(10) {
            let now = Instant::from_millis(t);
            p.handle_frame(now, &di_status(*c));
            p.handle_frame(now, &power_state(state, *c));
            *c = (*c + 1) & 0x0F;
            let _ = drain(p, now);
        }
    }

    #[test]
    fn the_templates_used_here_are_bes_frames() {
        // BE TESLA-BATTERY.h: 0x118 `AB 60 2A 00 00 08 00 00` (counter 0), 0x221 DRIVE mux 0
        // `60 55 55 15 54 51 F1 D8` (counter 15): the helpers above reproduce both.
        assert_eq!(di_status(0).data(), &[0xAB, 0x60, 0x2A, 0x00, 0x00, 0x08, 0x00, 0x00]);
        let mut d = *power_state(3, 15).data8();
        d[6] = 0xF1;
        d[7] = tesla_checksum(0x221, &d, 7);
        assert_eq!(d, [0x60, 0x55, 0x55, 0x15, 0x54, 0x51, 0xF1, 0xD8]);
    }

    #[test]
    fn closes_only_on_valid_drive_frames_and_opens_when_they_stop() {
        let mut p = TeslaPack::model3_long_range(Instant::ZERO);
        let mut c = 0;
        drive(&mut p, 0, 2000, &mut c, 2); // ACCESSORY: valid, but not DRIVE
        assert!(!p.contactors_closed());
        drive(&mut p, 2000, 2000, &mut c, 3);
        assert!(p.contactors_closed(), "DRIVE for 2 s");
        // The frames stop: open within the timeout plus one 10 ms step.
        let stop = 4000;
        let mut opened = None;
        for t in (stop..stop + 1000).step_by(10) {
            let _ = drain(&mut p, Instant::from_millis(t));
            if !p.contactors_closed() {
                opened.get_or_insert(t);
            }
        }
        let opened = opened.expect("opens");
        assert!(opened - stop >= VEHICLE_TIMEOUT.as_millis() && opened - stop <= 520, "{}", opened - stop);
    }

    #[test]
    fn bad_checksums_or_counters_do_not_keep_it_closed() {
        for what in ["checksum", "counter", "0x221 missing"] {
            let mut p = TeslaPack::model3_long_range(Instant::ZERO);
            let mut c = 0;
            for t in (0..3000).step_by(10) {
                let now = Instant::from_millis(t);
                let mut a = *di_status(c).data8();
                let mut b = *power_state(3, c).data8();
                match what {
                    "checksum" => {
                        a[0] ^= 1;
                        b[7] ^= 1;
                    }
                    "counter" => {
                        // A replayed frame: the same counter every time.
                        a = *di_status(4).data8();
                        b = *power_state(3, 4).data8();
                    }
                    _ => b = [0; 8],
                }
                p.handle_frame(now, &frame(0x118, a));
                if what != "0x221 missing" {
                    p.handle_frame(now, &frame(0x221, b));
                }
                c = (c + 1) & 0x0F;
                let _ = drain(&mut p, now);
                assert!(!p.contactors_closed(), "{what} at {t} ms");
            }
        }
    }

    #[test]
    fn a_power_state_other_than_drive_opens_at_once() {
        let mut p = TeslaPack::model3_long_range(Instant::ZERO);
        let mut c = 0;
        drive(&mut p, 0, 2000, &mut c, 3);
        assert!(p.contactors_closed());
        drive(&mut p, 2000, 10, &mut c, 2);
        assert!(!p.contactors_closed(), "ACCESSORY: the car is going down");
    }

    #[test]
    fn the_status_frame_reports_open_closing_closed_and_welded() {
        let state = |p: &mut TeslaPack, t: u64| {
            let f = drain(p, Instant::from_millis(t)).into_iter().rfind(|f| f.raw_id() == 0x212);
            f.map(|f| f.data()[1] & 0x07)
        };
        let mut p = TeslaPack::model3_long_range(Instant::ZERO);
        assert_eq!(state(&mut p, 0), Some(1), "OPEN");
        let mut c = 0;
        drive(&mut p, 0, 200, &mut c, 3);
        assert_eq!(state(&mut p, 200), Some(3), "CLOSING");
        drive(&mut p, 200, 800, &mut c, 3);
        assert_eq!(state(&mut p, 1000), Some(4), "CLOSED");
        p.model_mut().set_relay_fault(crate::pack::RelayFault::Stuck(true));
        drive(&mut p, 1000, 10, &mut c, 2);
        assert!(p.contactors_closed());
        assert_eq!(state(&mut p, 1100), Some(5), "WELDED");
    }

    #[test]
    fn byte_vectors_of_the_broadcasts() {
        // 50 % SOC, 20 °C, no current, contactors open.
        let p = TeslaPack::model3_long_range(Instant::ZERO);
        let hv = p.encode(Msg::HvBus, 0);
        let cv = p.pack_voltage_cv();
        assert_eq!(&hv.data()[..2], &cv.to_le_bytes());
        assert_eq!(&hv.data()[2..4], &[0, 0], "no current");
        assert_eq!(get(hv.data(), 48, 12), 4095, "not charging");
        // 0x292: UI 50.0 % = 500 at 10|10; min 495, max 505, average 500; BOL 75.0 kWh = 750.
        let soc = p.encode(Msg::Soc, 0);
        let v: Vec<u64> = [0, 10, 20, 30, 40].iter().map(|&s| get(soc.data(), s, 10)).collect();
        assert_eq!(v, [495, 500, 505, 500, 750]);
        // 0x212: OPEN (1) at 8|3, DOWN, 5000 kΩ (500 at 19|10), STANDBY.
        assert_eq!(p.encode(Msg::Status, 0).data(), &[0x00, 0x01, 0xA0, 0x0F, 0x00, 0x00, 0x00, 0x00]);
        // 0x332 mux 0: 20 °C ± 1 °C as (°C + 40) × 2: 122 and 118; sensors 3 and 7.
        let t = p.encode(Msg::BrickMinMax, 0);
        assert_eq!(t.data(), &[0x0C, 0x07, 122, 118, 121, 119]);
        // 0x401 mux 0: three bricks at 0.1 mV.
        let b = p.encode(Msg::Bricks, 0);
        let cells = p.cell_voltages();
        assert_eq!(&b.data()[..2], &[0x00, 0x2A]);
        assert_eq!(get(b.data(), 16, 16), cells[0].0 as u64 * 10);
        assert_eq!(get(b.data(), 48, 16), cells[2].0 as u64 * 10);
        // 0x2D2: 285.00 V and 403.00 V.
        let l = p.encode(Msg::DriveLimits, 0);
        assert_eq!(&l.data()[..4], &[0x54, 0x6F, 0x6C, 0x9D]);
        // 0x352, the flat layout: 71.25 kWh full (713 × 0.1 kWh), half of it remaining (356).
        let e = p.encode(Msg::Energy, 0);
        assert_eq!((get(e.data(), 0, 11), get(e.data(), 11, 11)), (713, 356));
    }

    #[test]
    fn an_lfp_pack_sends_106_bricks_and_the_multiplexed_energy_layout() {
        let p = TeslaPack::lfp(Instant::ZERO);
        assert_eq!(p.step_count(Msg::Bricks), 36);
        let last = p.encode(Msg::Bricks, 35);
        assert_eq!(&last.data()[..2], &[35, 0x02], "one brick in the last multiplex");
        assert_eq!(get(last.data(), 32, 32), 0);
        let e0 = p.encode(Msg::Energy, 0);
        let e1 = p.encode(Msg::Energy, 1);
        assert_eq!((get(e0.data(), 0, 2), get(e1.data(), 0, 2)), (0, 1));
        // 55 kWh × 95 % = 52.25 kWh at 0.02 kWh: 2612.5, rounded half away from zero.
        assert_eq!(get(e0.data(), 16, 16), 2613);
    }

    #[test]
    fn a_dropped_id_is_not_sent_and_the_others_still_are() {
        let mut p = TeslaPack::model3_long_range(Instant::ZERO);
        p.set_dropped(0x292, true);
        let ids: Vec<u32> = drain(&mut p, Instant::ZERO).iter().map(|f| f.raw_id()).collect();
        assert!(!ids.contains(&0x292) && ids.contains(&0x132) && ids.contains(&0x212), "{ids:x?}");
    }

    #[test]
    fn an_open_interlock_keeps_it_open_and_says_so() {
        let mut p = TeslaPack::model3_long_range(Instant::ZERO);
        p.set_hvil_ok(false);
        let mut c = 0;
        drive(&mut p, 0, 2000, &mut c, 3);
        assert!(!p.contactors_closed());
        assert_eq!(get(p.encode(Msg::Hvp, 0).data(), 40, 4), 4);
    }

    #[test]
    fn a_digital_hvil_pack_wants_0x1cf_as_well() {
        let mut p = TeslaPack::new(TeslaPackParams { digital_hvil: true, ..TeslaPackParams::nca() }, Instant::ZERO);
        let mut c = 0;
        drive(&mut p, 0, 2000, &mut c, 3);
        assert!(!p.contactors_closed(), "no 0x1CF");
        // BE's 0x1CF template `01 00 00 1A 1C 02 60 69`: counter 53|3 = 3, checksum byte 7.
        for (k, t) in (2000..4000).step_by(10).enumerate() {
            let now = Instant::from_millis(t);
            let mut d = [0x01, 0x00, 0x00, 0x1A, 0x1C, 0x02, 0x60, 0x00];
            put(&mut d, 53, 3, ((3 + k) % 8) as u64);
            d[7] = tesla_checksum(0x1CF, &d, 7);
            if k == 0 {
                assert_eq!(d[7], 0x69, "BE's template");
            }
            p.handle_frame(now, &frame(0x1CF, d));
            p.handle_frame(now, &di_status(c));
            p.handle_frame(now, &power_state(3, c));
            c = (c + 1) & 0x0F;
            let _ = drain(&mut p, now);
        }
        assert!(p.contactors_closed());
    }
}
