//! Tesla Model 3 / Model Y packs (2017+): NCA/NCM (96 bricks in series) and LFP (102-108 bricks).
//!
//! One classic CAN bus at 500 kbit/s, 11-bit ids, Intel (little-endian) signals. The BMS broadcasts everything
//! needed in operation; it closes its contactors itself, but only while it hears a convincing car: DBE plays the
//! car's frames (see "Vehicle emulation") and turns the supervisor's contactor decision into the car's power state.
//!
//! Sources of the facts (ids, bit positions, scales, periods, checksums), named below where each is used:
//! - dalathegreat/Battery-Emulator `Software/src/battery/TESLA-BATTERY.{h,cpp}` (BE, commit 62532e9, 2026-08): every
//!   decoded message's layout, the design limits (`MAX_PACK_VOLTAGE_3Y_NCMA` ...), the chemistry rule (96 cells
//!   NCA/NCM, 102-108 LFP), the car's frames with their templates, periods, counters and checksums, the
//!   power-down sequence, the digital-HVIL frames, the 12 V and pyrofuse checks, the alert matrix 0x320.
//! - joshwardell/model3dbc `Model3CAN.dbc` (DBC, MIT, 2020): the signal layouts of 0x132, 0x292, 0x332, 0x401,
//!   0x2D2, 0x252, 0x212, 0x20A, 0x352 (old layout), 0x3D2, and the cycle times (`GenMsgCycleTime`): 0x132 10 ms,
//!   0x118 10 ms, 0x292/0x2D2/0x252/0x212 100 ms, 0x352/0x3D2 1000 ms.
//! - commaai/opendbc `opendbc/car/tesla/teslacan.py` (`tesla_checksum`) and `opendbc/safety/modes/tesla.h`: the
//!   additive checksum ([`crate::crc::tesla_checksum`]); `opendbc/dbc/tesla_model3_party.dbc`: 0x118
//!   `DI_systemStatus` (counter 8|4, checksum 0|8, `DI_systemState`, `DI_gear`), 0x221 `VCFRONT_LVPowerState`
//!   (mux 0|5, `VCFRONT_vehiclePowerState` 5|2: 0 OFF, 1 CONDITIONING, 2 ACCESSORY, 3 DRIVE; counter 52|4, checksum
//!   56|8), 0x39D `IBST_status` (counter 8|4, checksum 0|8).
//!
//! Decoded into the shared model (everything else as typed extras, [`EXTRAS`]):
//! - 0x132 (10 ms): pack voltage (0|16, 0.01 V) and current (`SmoothBattCurrent` 16|16 signed, DBC scale -0.1 A:
//!   Tesla counts discharge positive; BE passes the raw value to its datalayer unchanged as dA, charge positive, and
//!   so does DBE). `ChargeHoursRemaining` (48|12, minutes, 4095 none) is an extra. `RawBattCurrent` is not decoded:
//!   the sources disagree on its offset (DBC +500 A, BE +822 A).
//! - 0x292 (100 ms): SOC min/UI/max/average (10 bits each at 0/10/20/30, 0.1 %), beginning-of-life energy
//!   (40|10, 0.1 kWh). **The model's SOC is the UI SOC**, as BE uses: it is the SOC Tesla maps onto the usable energy
//!   (0 % UI still leaves the BMS's own buffer, see 0x352 `energyBuffer`), so an inverter emptying the pack to 0 %
//!   never eats into that reserve. Min and max are the weakest and strongest brick's SOC (for balancing), average is
//!   the mean; all four are extras.
//! - 0x332 (both multiplexes, mux 0|2): mux 0 brick temperatures max/min (16|8, 24|8, 0.5 °C, -40 °C) with their
//!   sensor numbers (2|4, 8|4) and the thermal model's max/min (32|8, 40|8); mux 1 brick voltage max/min (2|12,
//!   16|12, 2 mV) with brick numbers (32|7, 40|7, +1). The temperatures feed the model; the rest are extras (the
//!   model's cell extremes come from the complete cell report of 0x401, so they are never older than the cells).
//! - 0x401: three bricks per multiplex (mux 0|8, status 8|8, bricks 16|16, 32|16, 48|16 at 0.1 mV; BE truncates to
//!   mV and so does DBE). BE knows two status values: 0x2A (three bricks) and 0x02 (the last, partial frame with
//!   one brick). DBE reads the status as three 2-bit fields, `0b10` = brick present, which gives both of BE's
//!   values and reads 0x0A as two bricks (a 104-brick pack would need it; unverified). Any other status is not
//!   decoded. The cell count is learned from the scan: a scan is the run of multiplexes from 0 up to the last,
//!   closed by the next mux 0; it counts only when every mux in between was seen and only the last frame was
//!   partial. **Two consecutive complete scans must agree** before the count counts (BE waits for mux 0 twice): a
//!   single dropped frame must not read as a contradicting chemistry.
//! - 0x2D2 (100 ms): BMS min/max pack voltage (0|16, 16|16, 0.01 V; extras), max charge current (32|14, 0.1 A) and
//!   max discharge current (48|14, 0.128 A) into the model. BE ignores the charge limit ("behaves strangely") and
//!   uses the user's; DBE takes it as real data: the supervisor takes the least of it and the user's.
//! - 0x252 (100 ms): max regen (charge) power (0|16) and max discharge power (16|16) into the model's power limits,
//!   but only while `BMS_powerLimitsState` (48|1) says CALCULATED_FOR_DRIVE; otherwise the model holds none (the
//!   pack says they are not computed). Scale: 0.01 kW both (DBC). BE's comment gives 0.013 kW for the discharge
//!   power with "???"; DBE follows the DBC. These limits are not required (a BMS that computes them only in drive
//!   would otherwise never let the contactors close); when present and fresh the supervisor takes them.
//! - 0x212 (100 ms, the status frame): `BMS_contactorState` (8|3: 0 SNA, 1 OPEN, 2 OPENING, 3 CLOSING, 4 CLOSED,
//!   5 WELDED, 6 BLOCKED) is the model's contactor state; `BMS_hvState` (16|3), `BMS_isolationResistance` (19|10,
//!   10 kΩ), `BMS_state` (32|4: 6 FAULT and 7 WELD are a BMS fault), `BMS_uiChargeStatus` (11|3) are extras.
//! - 0x20A: HVP contactor states (negative 0|3, positive 3|3, set state 8|4), requests (open now 33, open 34), HVIL
//!   status (40|4: 1 STATUS_OK; every other value, 0 NOT OK included, is [`BmsFaults::HVIL_OPEN`]), pyro test (37).
//!   Bit 35 is `HVP_packCtrsClosingAllowed` in the DBC but `packCtrsClosingBlocked` in BE: opposite meanings, so it
//!   is shown under the DBC's name and nothing acts on it. The HVP's open requests (either bit) are
//!   [`BmsRequests::OPEN_RELAYS`].
//! - 0x352: two layouts. Before 2021 (DBC): nominal full pack energy 0|11, nominal remaining 11|11, expected
//!   remaining 22|11, ideal remaining 33|11, to charge complete 44|11 (0.1 kWh), buffer 55|8 (0.1 kWh), full charge
//!   complete 63|1. BE decodes this layout with shifts that drop bits of four fields; DBE reads the DBC positions.
//!   2021+ (BE): mux 0|2; mux 0: nominal full 16|16, nominal remaining 32|16, ideal remaining 48|16 (0.02 kWh); mux 1:
//!   buffer 16|16 (0.01 kWh), expected remaining 32|16, to charge complete 48|16 (0.02 kWh). The old layout's low two
//!   bits are energy, so the layout is recognised, as BE does, by the multiplex: "new" once mux 0 and mux 1 both
//!   appear among three consecutive frames; "old" after six consecutive frames with the same two low bits (an old
//!   BMS's nominal full pack energy does not move). Until then no energy is decoded. The model's total energy is
//!   the nominal full pack energy, its remaining energy the nominal energy remaining. The new layout's "fully
//!   charged" bit is not decoded: BE's comment puts it at 15, its code reads bit 8. The old layout's (63) is
//!   [`BmsRequests::FULL`].
//! - 0x3D2 (1 s): lifetime discharged (0|32) and charged (32|32) energy, 1 Wh (extras).
//! - 0x320 `BMS_alertMatrix` (mux 0|4), by BE's bit table: brick over-voltage (mux 0 bit 20) and stack over-voltage
//!   (26) → [`BmsFaults::CELL_OVERVOLTAGE`]; brick under-voltage (21) and brick over-discharged (mux 2 bit 29) →
//!   [`BmsFaults::CELL_UNDERVOLTAGE`]; module over-temperature (22) → [`BmsFaults::OVER_TEMPERATURE`]; over-current
//!   (25) → [`BmsFaults::INTERNAL`]; isolation (38; mux 2: internal 6, external 34) → [`BmsFaults::ISOLATION`]; HVP
//!   HVIL fault (39) → [`BmsFaults::HVIL_OPEN`]; contactor close failure (mux 1 bit 26) and pack weld (mux 2 bits
//!   48, 49) → [`BmsFaults::CONTACTOR`]; HVP 12 V fault (mux 2 bit 62) → [`BmsFaults::SUPPLY_12V_LOW`]. Each
//!   multiplex's bits stand until that multiplex says otherwise. "Close blocked" and "force open" (mux 1 bits 24,
//!   25) are not mapped: a pack not yet asked to close may well report them, and a fault there would stop DBE from
//!   ever asking.
//! - 12 V: 0x7AA `HVP_debugMessage` mux 5, `HVP_battery12V` (36|12, 0.1 V). Below 11.7 V (BE's threshold) while the
//!   contactors are not closed (BE checks only then: the reading sags while they energise) →
//!   [`BmsFaults::SUPPLY_12V_LOW`].
//! - Pyrofuse: BE's rule: a pack voltage (0x132) of 0.5-5.0 V means the pyrofuse has most likely blown →
//!   [`BmsFaults::INTERNAL`] and the extra `pyrofuse_suspected`.
//!
//! Chemistry and design: NCA/NCM and LFP have different pack and cell limits (BE: NCA/NCM 403.0/285.0 V pack,
//! 4250/2950 mV cell, 500 mV deviation; LFP 388.0/296.8 V, 3650/2800 mV, 400 mV). The user states the chemistry
//! ([`TeslaModel3Options::chemistry`]); the driver confirms it from the learned cell count (96 for NCA/NCM,
//! 102-108 for LFP, BE's rule) and keeps the design [`DesignStatus::Pending`] (0 A) until then. A count that
//! contradicts the configured chemistry makes it [`DesignStatus::Contradicted`] (the supervisor's critical
//! `BATTERY_DESIGN_MISMATCH`, 0 A) for the driver's lifetime: never a silent switch (BE switches to LFP on more than
//! 101 cells; it once over-charged an LFP pack when it guessed from voltage). The model's cell count becomes the
//! counted one.
//!
//! Vehicle emulation (BE's `transmit_can`, its periods and templates; every counter and checksum computed with
//! opendbc's algorithm, each template pinned in the tests to reproduce BE's bytes):
//! - 10 ms: 0x118 `DI_systemStatus` (counter 8|4, checksum byte 0; BE's header calls it 50 ms but sends it in its
//!   10 ms slot, and the DBC says 10 ms); 0x2E1 `VCFRONT_status`, six constant multiplexes in turn.
//! - 50 ms: 0x221 `VCFRONT_LVPowerState`, one frame a period alternating mux 1 and mux 0 (BE's order), one 4-bit
//!   counter shared by both; 0x3C2 `VCLEFT_switchStatus` (the same mux, constant); 0x39D `IBST_status` (counter
//!   8|4, checksum byte 0); 0x3A1 `VCFRONT_vehicleStatus` only while the BMS reports its contactors closed (BE).
//! - 100 ms: 0x102, 0x103, 0x241, 0x2D1 constant; 0x229 `SCCM_rightStalk`, whose `Crc` is not the additive sum but
//!   [`crate::crc::crc8_h2f`] over bytes 1-2 and the counter's data id (BE's table of 16, reproduced exactly); 0x2A8,
//!   0x2E8 (counter 52|4, checksum byte 7); 0x7FF `GTW_carConfig` mux 1-5 in turn with BE's default settings
//!   (country "DE", right-hand drive, map region 2, chassis Model 3, pack 74 kWh).
//! - 500 ms: 0x213 (counter 4|4, checksum byte 1: BE's `+ 0x15` is the sum of the id's bytes), 0x284, 0x333
//!   (`UI_chargeTerminationPct` 90.0 %, BE's template), 0x3B3, 0x55A constant; 0x293, 0x313, 0x334 (counter 52|4,
//!   checksum byte 7; 0x334's first frame is BE's "initial" one).
//! - 1 s: 0x082 constant; 0x321 (counter 52|4, checksum byte 7).
//! - 0x3A1: BE sends sixteen captured byte pairs; they are counter 52|4 starting at 13, a payload alternating with
//!   bit 49, and a checksum in byte 7 that is opendbc's sum **plus 0x90** for all sixteen (unexplained: the payload
//!   BE sends may differ from the captured one in bits the sum sees). DBE computes that, pinned against all 16.
//! - BE's 0x2E8 template carries checksum 0x6C where the sum is 0x7C (BE sends it once, then computes); DBE computes
//!   from the first frame.
//! - Digital HVIL ([`TeslaModel3Options::digital_hvil`], for the 2024+ packs that need it, BE's
//!   `user_selected_tesla_digital_HVIL`): 0x1CF (counter 53|3, checksum byte 7) and a second 0x118 template
//!   (`61 80 30 10 00 08 00 80`), both every 10 ms and only while the contactors are wanted closed; the normal
//!   0x118 is not sent. BE's two tables are these counters and sums, reproduced exactly.
//!
//! Contactors (mode `can`, [`crate::contactor::ContactorMode::Can`]): while the supervisor wants them closed 0x221
//! says DRIVE; to open it steps ACCESSORY (3 s), GOING_DOWN (3 s), then OFF, BE's sequence and timing (BE counts
//! the steps in its 1 s update). The decoded 0x212 state is the model's contactor state. WELDED, BLOCKED while a
//! close is wanted, a close that has not completed [`CLOSE_TIMEOUT`] after it was asked for (a DBE choice: no
//! source gives how long a close may take), and the alert matrix's close failure all make the contactor state
//! `Fault` with [`BmsFaults::CONTACTOR`] (an event and 0 A). WELDED and a failed close stay latched for the driver's
//! lifetime (BE latches its weld event); a restart of the bridge builds a new driver.
//!
//! Required readings ([`REQUIRED`]), ages from each source's period: 0x132 (10 ms) voltage and current 1 s; 0x212
//! status, 0x292 SOC, 0x2D2 current limits (100 ms) 3 s. 0x332 and 0x401 have no period in any source: DBE takes
//! 10 s for the temperatures and 60 s (the model's ceiling) for a complete cell report. Both are DBE's choices, to
//! be narrowed from a capture; BE notes that counting all cells takes minutes after start, which the 60 s ceiling
//! would turn into 0 A until the first two scans are in.
//!
//! Not done: BE's UDS services (isolation clear, BMS reset, SOC reset, part-number query): `bms_reset` is
//! unsupported; the PCS/CP alert matrices and the PCS/HVP debug values beyond 12 V are not decoded.

use crate::battery::{Battery, ContactorRequest, Unsupported};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::contactor::ContactorMode;
use crate::crc::{crc8_h2f, tesla_checksum};
use crate::model::{
    BatteryModel, BmsFaults, BmsRequests, BmsStatus, Chemistry, Contactors, DesignStatus, DeviceClass, ExtraDescriptor,
    FlagId, NumberId, PackDesign, Quantity, Reading, Requirement, StateClass, TextId, MAX_CELLS,
};
use crate::options::{self, OptionField, OptionKind, OptionValue};
use crate::time::{Duration, Instant, Periodic};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours, Watts};

pub const SUPPORTS: &str = "voltage, current, SOC (UI), BMS current and power limits, 96-108 cells, brick \
temperatures, contactor state (CAN-controlled), HVIL, isolation, energies, alert matrix, 12 V, chemistry confirmed \
from the cell count (NCA/NCM 96, LFP 102-108), digital HVIL option; BMS reset: no";

/// The pack's chemistry, as the user states it (`[battery.tesla_model3] chemistry`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum TeslaChemistry {
    /// NCA or NCM (Long Range, Performance, older Standard Range): 96 bricks.
    #[default]
    NcaNcm,
    /// LFP (Standard Range from 2021): 102-108 bricks.
    Lfp,
}

impl TeslaChemistry {
    pub const ALL: [TeslaChemistry; 2] = [TeslaChemistry::NcaNcm, TeslaChemistry::Lfp];
    pub const NAMES: [&'static str; 2] = [Self::ALL[0].name(), Self::ALL[1].name()];

    pub const fn name(self) -> &'static str {
        match self {
            TeslaChemistry::NcaNcm => "nca",
            TeslaChemistry::Lfp => "lfp",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether a pack of `cells` bricks is of this chemistry (BE: NCA/NCM 96s, LFP 102-108s).
    pub fn fits(self, cells: u16) -> bool {
        match self {
            TeslaChemistry::NcaNcm => cells == 96,
            TeslaChemistry::Lfp => (102..=108).contains(&cells),
        }
    }

    pub fn design(self) -> PackDesign {
        match self {
            TeslaChemistry::NcaNcm => DESIGN_NCA,
            TeslaChemistry::Lfp => DESIGN_LFP,
        }
    }
}

/// The driver's options (the config file's `[battery.tesla_model3]`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TeslaModel3Options {
    pub chemistry: TeslaChemistry,
    /// Send the 2024+ packs' digital-HVIL frames (0x1CF and the second 0x118) while the contactors are wanted.
    pub digital_hvil: bool,
}

impl crate::options::DriverOptions for TeslaModel3Options {
    const FIELDS: &'static [OptionField<Self>] = &[
        OptionField {
            name: "chemistry",
            help: "The pack's chemistry: \"nca\" (NCA or NCM, 96 cells: Long Range, Performance) or \"lfp\" (102-108 \
                   cells: Standard Range from 2021). It sets the cell and pack limits; the driver checks it against \
                   the cell count and gives no current until it matches (a mismatch stops the pack).",
            kind: OptionKind::Choice(&TeslaChemistry::NAMES),
            get: |o| OptionValue::Word(o.chemistry.name()),
            set: |o, v| o.chemistry = TeslaChemistry::from_name(options::word(v)).unwrap_or_default(),
        },
        OptionField {
            name: "digital_hvil",
            help: "Send the digital-HVIL frames that 2024+ packs need before they close their contactors.",
            kind: OptionKind::Bool,
            get: |o| OptionValue::Bool(o.digital_hvil),
            set: |o, v| o.digital_hvil = options::boolean(v),
        },
    ];
}

/// NCA/NCM design (BE `MAX_PACK_VOLTAGE_3Y_NCMA` 4030 dV, `MIN_PACK_VOLTAGE_3Y_NCMA` 2850 dV, cell 4250/2950 mV,
/// deviation 500 mV), 96 bricks.
pub const DESIGN_NCA: PackDesign = PackDesign {
    chemistry: Chemistry::Nca,
    cells: 96,
    max_pack_voltage: DeciVolts(4030),
    min_pack_voltage: DeciVolts(2850),
    max_cell_voltage: MilliVolts(4250),
    min_cell_voltage: MilliVolts(2950),
    max_cell_deviation: MilliVolts(500),
};

/// LFP design (BE `MAX_PACK_VOLTAGE_3Y_LFP` 3880 dV, `MIN_PACK_VOLTAGE_3Y_LFP` 2968 dV, cell 3650/2800 mV,
/// deviation 400 mV). The cell count is nominal (106) until the pack's own is learned.
pub const DESIGN_LFP: PackDesign = PackDesign {
    chemistry: Chemistry::Lfp,
    cells: 106,
    max_pack_voltage: DeciVolts(3880),
    min_pack_voltage: DeciVolts(2968),
    max_cell_voltage: MilliVolts(3650),
    min_cell_voltage: MilliVolts(2800),
    max_cell_deviation: MilliVolts(400),
};

/// How long a close may take before it counts as failed (DBE's choice; see the module doc).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Each step of the power-down sequence (BE: three of its 1 s updates each).
pub const POWER_DOWN_STEP: Duration = Duration::from_secs(3);

/// Below this 12 V supply (BE: 11.7 V) the HVP cannot be trusted to operate the contactors.
pub const SUPPLY_12V_MIN_DV: u16 = 117;

/// The readings without which no current flows (ages: see the module doc).
pub const REQUIRED: [Requirement; 9] = [
    Requirement::new(Quantity::PackVoltage, Duration::from_secs(1)),
    Requirement::new(Quantity::Current, Duration::from_secs(1)),
    Requirement::new(Quantity::Status, Duration::from_secs(3)),
    Requirement::new(Quantity::Soc, Duration::from_secs(3)),
    Requirement::new(Quantity::BmsChargeCurrent, Duration::from_secs(3)),
    Requirement::new(Quantity::BmsDischargeCurrent, Duration::from_secs(3)),
    Requirement::new(Quantity::TemperatureMin, Duration::from_secs(10)),
    Requirement::new(Quantity::TemperatureMax, Duration::from_secs(10)),
    Requirement::new(Quantity::Cells, Duration::from_secs(60)),
];

/// The values shown to people. None has safety meaning: what does is typed in the model.
pub const EXTRAS: &[ExtraDescriptor] = &[
    ExtraDescriptor::text("chemistry", "Chemistry (configured)"),
    ExtraDescriptor::number("cell_count", "Cells counted"),
    ExtraDescriptor::number("soc_min", "SOC min").decimals(1).unit("%").state_class(StateClass::Measurement),
    ExtraDescriptor::number("soc_ui", "SOC UI").decimals(1).unit("%").state_class(StateClass::Measurement),
    ExtraDescriptor::number("soc_max", "SOC max").decimals(1).unit("%").state_class(StateClass::Measurement),
    ExtraDescriptor::number("soc_ave", "SOC average").decimals(1).unit("%").state_class(StateClass::Measurement),
    ExtraDescriptor::number("beginning_of_life_energy", "Beginning-of-life energy")
        .decimals(1)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("charge_time_remaining", "Charge time remaining").unit("min"),
    ExtraDescriptor::number("brick_voltage_max", "Brick voltage max").unit("mV").state_class(StateClass::Measurement),
    ExtraDescriptor::number("brick_voltage_max_number", "Brick voltage max number"),
    ExtraDescriptor::number("brick_voltage_min", "Brick voltage min").unit("mV").state_class(StateClass::Measurement),
    ExtraDescriptor::number("brick_voltage_min_number", "Brick voltage min number"),
    ExtraDescriptor::number("brick_temp_max_number", "Brick temperature max sensor"),
    ExtraDescriptor::number("brick_temp_min_number", "Brick temperature min sensor"),
    ExtraDescriptor::number("brick_model_temp_max", "Thermal model max")
        .decimals(1)
        .unit("°C")
        .device_class(DeviceClass::Temperature),
    ExtraDescriptor::number("brick_model_temp_min", "Thermal model min")
        .decimals(1)
        .unit("°C")
        .device_class(DeviceClass::Temperature),
    ExtraDescriptor::number("bms_max_voltage", "BMS max pack voltage").decimals(1).unit("V"),
    ExtraDescriptor::number("bms_min_voltage", "BMS min pack voltage").decimals(1).unit("V"),
    ExtraDescriptor::flag("power_limits_calculated", "Power limits calculated"),
    ExtraDescriptor::text("bms_contactor_state", "BMS contactor state"),
    ExtraDescriptor::text("bms_state", "BMS state"),
    ExtraDescriptor::text("bms_hv_state", "BMS HV state"),
    ExtraDescriptor::number("isolation_resistance", "Isolation resistance")
        .unit("kΩ")
        .state_class(StateClass::Measurement),
    ExtraDescriptor::number("pack_contactor_negative_state", "Pack contactor negative state"),
    ExtraDescriptor::number("pack_contactor_positive_state", "Pack contactor positive state"),
    ExtraDescriptor::number("pack_contactor_set_state", "Pack contactor set state"),
    ExtraDescriptor::flag("pack_ctrs_closing_allowed", "Pack contactors closing allowed (DBC bit 35)"),
    ExtraDescriptor::flag("pyro_test_in_progress", "Pyro test in progress"),
    ExtraDescriptor::text("hvil_status", "HVIL status"),
    ExtraDescriptor::text("energy_layout", "0x352 layout"),
    ExtraDescriptor::number("nominal_full_pack_energy", "Nominal full pack energy")
        .decimals(2)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("nominal_energy_remaining", "Nominal energy remaining")
        .decimals(2)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("ideal_energy_remaining", "Ideal energy remaining")
        .decimals(2)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("expected_energy_remaining", "Expected energy remaining")
        .decimals(2)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("energy_to_charge_complete", "Energy to charge complete")
        .decimals(2)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("energy_buffer", "Energy buffer")
        .decimals(2)
        .unit("kWh")
        .device_class(DeviceClass::EnergyStorage),
    ExtraDescriptor::number("total_discharged", "Total discharged")
        .decimals(3)
        .unit("kWh")
        .device_class(DeviceClass::Energy)
        .state_class(StateClass::TotalIncreasing),
    ExtraDescriptor::number("total_charged", "Total charged")
        .decimals(3)
        .unit("kWh")
        .device_class(DeviceClass::Energy)
        .state_class(StateClass::TotalIncreasing),
    ExtraDescriptor::number("battery_12v", "12 V supply").decimals(1).unit("V").device_class(DeviceClass::Voltage),
    ExtraDescriptor::flag("pyrofuse_suspected", "Pyrofuse suspected blown"),
    ExtraDescriptor::text("vehicle_power_state", "Vehicle power state sent"),
];

/// Handles of [`EXTRAS`].
mod extra {
    use super::*;
    pub const CHEMISTRY: TextId = TextId::of(EXTRAS, "chemistry");
    pub const CELL_COUNT: NumberId = NumberId::of(EXTRAS, "cell_count");
    pub const SOC_MIN: NumberId = NumberId::of(EXTRAS, "soc_min");
    pub const SOC_UI: NumberId = NumberId::of(EXTRAS, "soc_ui");
    pub const SOC_MAX: NumberId = NumberId::of(EXTRAS, "soc_max");
    pub const SOC_AVE: NumberId = NumberId::of(EXTRAS, "soc_ave");
    pub const BOL_ENERGY: NumberId = NumberId::of(EXTRAS, "beginning_of_life_energy");
    pub const CHARGE_TIME: NumberId = NumberId::of(EXTRAS, "charge_time_remaining");
    pub const BRICK_V_MAX: NumberId = NumberId::of(EXTRAS, "brick_voltage_max");
    pub const BRICK_V_MAX_NUM: NumberId = NumberId::of(EXTRAS, "brick_voltage_max_number");
    pub const BRICK_V_MIN: NumberId = NumberId::of(EXTRAS, "brick_voltage_min");
    pub const BRICK_V_MIN_NUM: NumberId = NumberId::of(EXTRAS, "brick_voltage_min_number");
    pub const BRICK_T_MAX_NUM: NumberId = NumberId::of(EXTRAS, "brick_temp_max_number");
    pub const BRICK_T_MIN_NUM: NumberId = NumberId::of(EXTRAS, "brick_temp_min_number");
    pub const MODEL_T_MAX: NumberId = NumberId::of(EXTRAS, "brick_model_temp_max");
    pub const MODEL_T_MIN: NumberId = NumberId::of(EXTRAS, "brick_model_temp_min");
    pub const BMS_MAX_V: NumberId = NumberId::of(EXTRAS, "bms_max_voltage");
    pub const BMS_MIN_V: NumberId = NumberId::of(EXTRAS, "bms_min_voltage");
    pub const POWER_CALCULATED: FlagId = FlagId::of(EXTRAS, "power_limits_calculated");
    pub const CONTACTOR_STATE: TextId = TextId::of(EXTRAS, "bms_contactor_state");
    pub const BMS_STATE: TextId = TextId::of(EXTRAS, "bms_state");
    pub const HV_STATE: TextId = TextId::of(EXTRAS, "bms_hv_state");
    pub const ISOLATION: NumberId = NumberId::of(EXTRAS, "isolation_resistance");
    pub const NEG_STATE: NumberId = NumberId::of(EXTRAS, "pack_contactor_negative_state");
    pub const POS_STATE: NumberId = NumberId::of(EXTRAS, "pack_contactor_positive_state");
    pub const SET_STATE: NumberId = NumberId::of(EXTRAS, "pack_contactor_set_state");
    pub const CLOSING_ALLOWED: FlagId = FlagId::of(EXTRAS, "pack_ctrs_closing_allowed");
    pub const PYRO_TEST: FlagId = FlagId::of(EXTRAS, "pyro_test_in_progress");
    pub const HVIL: TextId = TextId::of(EXTRAS, "hvil_status");
    pub const ENERGY_LAYOUT: TextId = TextId::of(EXTRAS, "energy_layout");
    pub const NOMINAL_FULL: NumberId = NumberId::of(EXTRAS, "nominal_full_pack_energy");
    pub const NOMINAL_REMAINING: NumberId = NumberId::of(EXTRAS, "nominal_energy_remaining");
    pub const IDEAL_REMAINING: NumberId = NumberId::of(EXTRAS, "ideal_energy_remaining");
    pub const EXPECTED_REMAINING: NumberId = NumberId::of(EXTRAS, "expected_energy_remaining");
    pub const TO_CHARGE_COMPLETE: NumberId = NumberId::of(EXTRAS, "energy_to_charge_complete");
    pub const BUFFER: NumberId = NumberId::of(EXTRAS, "energy_buffer");
    pub const TOTAL_DISCHARGED: NumberId = NumberId::of(EXTRAS, "total_discharged");
    pub const TOTAL_CHARGED: NumberId = NumberId::of(EXTRAS, "total_charged");
    pub const SUPPLY_12V: NumberId = NumberId::of(EXTRAS, "battery_12v");
    pub const PYROFUSE: FlagId = FlagId::of(EXTRAS, "pyrofuse_suspected");
    pub const POWER_STATE: TextId = TextId::of(EXTRAS, "vehicle_power_state");
}

/// CAN identifiers.
pub mod id {
    pub const HV_BUS: u16 = 0x132;
    pub const SOC: u16 = 0x292;
    pub const BRICK_MIN_MAX: u16 = 0x332;
    pub const BRICK_VOLTAGES: u16 = 0x401;
    pub const DRIVE_LIMITS: u16 = 0x2D2;
    pub const POWER_AVAILABLE: u16 = 0x252;
    pub const BMS_STATUS: u16 = 0x212;
    pub const HVP_CONTACTORS: u16 = 0x20A;
    pub const ENERGY_STATUS: u16 = 0x352;
    pub const KWH_COUNTER: u16 = 0x3D2;
    pub const ALERT_MATRIX: u16 = 0x320;
    pub const HVP_DEBUG: u16 = 0x7AA;
    pub const DI_SYSTEM_STATUS: u16 = 0x118;
    pub const LV_POWER_STATE: u16 = 0x221;
    pub const SCCM_RIGHT_STALK: u16 = 0x229;
    pub const VEHICLE_STATUS: u16 = 0x3A1;
    pub const DIGITAL_HVIL: u16 = 0x1CF;
}

/// `len` bits from bit `start` of the frame read as one little-endian 64-bit word (DBC `start|len@1+`).
fn bits(d: &[u8; 8], start: u32, len: u32) -> u32 {
    ((u64::from_le_bytes(*d) >> start) & ((1u64 << len) - 1)) as u32
}

/// Writes `v` into `len` bits from bit `start` (the inverse of [`bits`]).
fn set_bits(d: &mut [u8; 8], start: u32, len: u32, v: u32) {
    let mask = ((1u64 << len) - 1) << start;
    let w = (u64::from_le_bytes(*d) & !mask) | (((v as u64) << start) & mask);
    *d = w.to_le_bytes();
}

/// 0x132 `HVBattAmpVolt` (10 ms).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HvBus {
    pub voltage: DeciVolts,
    /// Positive = charging (see the module doc for the sign).
    pub current: DeciAmps,
    /// `None` for 4095 (not charging).
    pub charge_minutes_remaining: Option<u16>,
}

impl HvBus {
    pub fn parse(d: &[u8; 8]) -> Self {
        let minutes = bits(d, 48, 12) as u16;
        HvBus {
            voltage: DeciVolts((bits(d, 0, 16) / 10) as u16),
            current: DeciAmps(bits(d, 16, 16) as u16 as i16 as i32),
            charge_minutes_remaining: (minutes != 4095).then_some(minutes),
        }
    }
}

/// 0x292 `BMS_socStatus` (100 ms): four SOCs and the beginning-of-life energy.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SocStatus {
    /// In 0.1 %.
    pub min: u16,
    pub ui: u16,
    pub max: u16,
    pub ave: u16,
    /// In 0.1 kWh.
    pub beginning_of_life: u16,
}

impl SocStatus {
    pub fn parse(d: &[u8; 8]) -> Self {
        let f = |start| bits(d, start, 10) as u16;
        SocStatus { min: f(0), ui: f(10), max: f(20), ave: f(30), beginning_of_life: f(40) }
    }
}

/// 0x332 `BattBrickMinMax`: brick temperature extremes (mux 0) or brick voltage extremes (mux 1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BrickMinMax {
    Temperatures {
        max: DeciCelsius,
        min: DeciCelsius,
        max_sensor: u8,
        min_sensor: u8,
        model_max: DeciCelsius,
        model_min: DeciCelsius,
    },
    Voltages {
        max: MilliVolts,
        min: MilliVolts,
        /// From 1.
        max_brick: u8,
        min_brick: u8,
    },
    Other(u8),
}

impl BrickMinMax {
    /// Needs 6 bytes (the DBC's length).
    pub fn parse(d: &[u8; 8]) -> Self {
        let temp = |start| DeciCelsius(bits(d, start, 8) as i16 * 5 - 400);
        match bits(d, 0, 2) {
            0 => BrickMinMax::Temperatures {
                max: temp(16),
                min: temp(24),
                max_sensor: bits(d, 2, 4) as u8,
                min_sensor: bits(d, 8, 4) as u8,
                model_max: temp(32),
                model_min: temp(40),
            },
            1 => BrickMinMax::Voltages {
                max: MilliVolts(bits(d, 2, 12) as u16 * 2),
                min: MilliVolts(bits(d, 16, 12) as u16 * 2),
                max_brick: bits(d, 32, 7) as u8 + 1,
                min_brick: bits(d, 40, 7) as u8 + 1,
            },
            m => BrickMinMax::Other(m as u8),
        }
    }
}

/// 0x401 `BrickVoltages`: up to three bricks of one multiplex.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BrickVoltages {
    pub mux: u8,
    /// How many of `bricks` are present (1-3), from the status byte.
    pub count: u8,
    pub bricks: [MilliVolts; 3],
}

impl BrickVoltages {
    /// `None` for a status byte that is not 0x02, 0x0A or 0x2A (see the module doc).
    pub fn parse(d: &[u8; 8]) -> Option<Self> {
        let count = match d[1] {
            0x2A => 3,
            0x0A => 2,
            0x02 => 1,
            _ => return None,
        };
        let brick = |i: u32| MilliVolts((bits(d, 16 + 16 * i, 16) / 10) as u16);
        Some(BrickVoltages { mux: d[0], count, bricks: [brick(0), brick(1), brick(2)] })
    }
}

/// 0x2D2 `BMSVAlimits` (100 ms).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DriveLimits {
    pub min_voltage: DeciVolts,
    pub max_voltage: DeciVolts,
    pub max_charge_current: DeciAmps,
    pub max_discharge_current: DeciAmps,
}

impl DriveLimits {
    pub fn parse(d: &[u8; 8]) -> Self {
        DriveLimits {
            min_voltage: DeciVolts((bits(d, 0, 16) / 10) as u16),
            max_voltage: DeciVolts((bits(d, 16, 16) / 10) as u16),
            max_charge_current: DeciAmps(bits(d, 32, 14) as i32),
            // 0.128 A per bit = 1.28 dA, rounded down.
            max_discharge_current: DeciAmps((bits(d, 48, 14) * 128 / 100) as i32),
        }
    }
}

/// 0x252 `BMS_powerAvailable` (100 ms).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PowerAvailable {
    pub max_regen: Watts,
    pub max_discharge: Watts,
    /// `BMS_powerLimitsState`: 1 = CALCULATED_FOR_DRIVE.
    pub calculated: bool,
}

impl PowerAvailable {
    pub fn parse(d: &[u8; 8]) -> Self {
        PowerAvailable {
            max_regen: Watts(bits(d, 0, 16) as i32 * 10),
            max_discharge: Watts(bits(d, 16, 16) as i32 * 10),
            calculated: bits(d, 48, 1) == 1,
        }
    }
}

/// `BMS_contactorState` (0x212 8|3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ContactorState {
    Sna,
    Open,
    Opening,
    Closing,
    Closed,
    Welded,
    Blocked,
    Unknown(u8),
}

impl ContactorState {
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            0 => ContactorState::Sna,
            1 => ContactorState::Open,
            2 => ContactorState::Opening,
            3 => ContactorState::Closing,
            4 => ContactorState::Closed,
            5 => ContactorState::Welded,
            6 => ContactorState::Blocked,
            r => ContactorState::Unknown(r),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ContactorState::Sna => "SNA",
            ContactorState::Open => "OPEN",
            ContactorState::Opening => "OPENING",
            ContactorState::Closing => "CLOSING",
            ContactorState::Closed => "CLOSED",
            ContactorState::Welded => "WELDED",
            ContactorState::Blocked => "BLOCKED",
            ContactorState::Unknown(_) => "UNKNOWN",
        }
    }
}

/// 0x212 `BMS_status` (100 ms).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BmsStatusFrame {
    pub contactors: ContactorState,
    /// `BMS_hvState` 16|3.
    pub hv_state: u8,
    pub isolation_kohm: u16,
    /// `BMS_state` 32|4.
    pub state: u8,
}

impl BmsStatusFrame {
    pub fn parse(d: &[u8; 8]) -> Self {
        BmsStatusFrame {
            contactors: ContactorState::from_raw(bits(d, 8, 3) as u8),
            hv_state: bits(d, 16, 3) as u8,
            isolation_kohm: bits(d, 19, 10) as u16 * 10,
            state: bits(d, 32, 4) as u8,
        }
    }

    /// `BMS_state` names (BE: 0 STANDBY ... 10 BMS_DIAG).
    pub fn state_name(&self) -> &'static str {
        const NAMES: [&str; 11] = [
            "STANDBY",
            "DRIVE",
            "SUPPORT",
            "CHARGE",
            "FEIM",
            "CLEAR_FAULT",
            "FAULT",
            "WELD",
            "TEST",
            "SNA",
            "BMS_DIAG",
        ];
        NAMES.get(self.state as usize).copied().unwrap_or("UNKNOWN")
    }

    pub fn hv_state_name(&self) -> &'static str {
        const NAMES: [&str; 7] =
            ["DOWN", "COMING_UP", "GOING_DOWN", "UP_FOR_DRIVE", "UP_FOR_CHARGE", "UP_FOR_DC_CHARGE", "UP"];
        NAMES.get(self.hv_state as usize).copied().unwrap_or("UNKNOWN")
    }

    pub fn bms_status(&self) -> BmsStatus {
        match self.state {
            6 | 7 => BmsStatus::Fault,
            0 => BmsStatus::Standby,
            9 => BmsStatus::Unknown,
            _ => BmsStatus::Active,
        }
    }
}

/// 0x20A `HVP_contactorState`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HvpContactors {
    pub negative: u8,
    pub positive: u8,
    pub set_state: u8,
    pub open_now_requested: bool,
    pub open_requested: bool,
    /// Bit 35 under the DBC's name (see the module doc).
    pub closing_allowed: bool,
    pub pyro_test: bool,
    pub hvil: u8,
}

impl HvpContactors {
    /// Needs 6 bytes (the DBC's length).
    pub fn parse(d: &[u8; 8]) -> Self {
        HvpContactors {
            negative: bits(d, 0, 3) as u8,
            positive: bits(d, 3, 3) as u8,
            set_state: bits(d, 8, 4) as u8,
            open_now_requested: bits(d, 33, 1) == 1,
            open_requested: bits(d, 34, 1) == 1,
            closing_allowed: bits(d, 35, 1) == 1,
            pyro_test: bits(d, 37, 1) == 1,
            hvil: bits(d, 40, 4) as u8,
        }
    }

    pub fn hvil_name(&self) -> &'static str {
        const NAMES: [&str; 10] = [
            "NOT_OK",
            "STATUS_OK",
            "CURRENT_SOURCE_FAULT",
            "INTERNAL_OPEN_FAULT",
            "VEHICLE_OPEN_FAULT",
            "PENTHOUSE_LID_OPEN_FAULT",
            "UNKNOWN_LOCATION_OPEN_FAULT",
            "VEHICLE_NODE_FAULT",
            "NO_12V_SUPPLY",
            "VEHICLE_OR_PENTHOUSE_LID_OPEN",
        ];
        NAMES.get(self.hvil as usize).copied().unwrap_or("UNKNOWN")
    }
}

/// Energies in 10 Wh (0.01 kWh), from either layout of 0x352.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Energies {
    pub nominal_full: Option<u32>,
    pub nominal_remaining: Option<u32>,
    pub ideal_remaining: Option<u32>,
    pub expected_remaining: Option<u32>,
    pub to_charge_complete: Option<u32>,
    pub buffer: Option<u32>,
    /// The old layout's `BMS_fullChargeComplete`.
    pub full_charge_complete: Option<bool>,
}

/// Which layout of 0x352 the pack sends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EnergyLayout {
    /// Before 2021, one frame (DBC).
    Flat,
    /// 2021+, multiplexed (BE).
    Multiplexed,
}

impl Energies {
    pub fn parse_flat(d: &[u8; 8]) -> Self {
        let kwh10 = |start, len| Some(bits(d, start, len) * 10);
        Energies {
            nominal_full: kwh10(0, 11),
            nominal_remaining: kwh10(11, 11),
            expected_remaining: kwh10(22, 11),
            ideal_remaining: kwh10(33, 11),
            to_charge_complete: kwh10(44, 11),
            buffer: kwh10(55, 8),
            full_charge_complete: Some(bits(d, 63, 1) == 1),
        }
    }

    /// `None` for a multiplex that carries none of these (mux 2, 3).
    pub fn parse_multiplexed(d: &[u8; 8]) -> Option<Self> {
        let kwh50 = |start| Some(bits(d, start, 16) * 2);
        match bits(d, 0, 2) {
            0 => Some(Energies {
                nominal_full: kwh50(16),
                nominal_remaining: kwh50(32),
                ideal_remaining: kwh50(48),
                ..Default::default()
            }),
            1 => Some(Energies {
                buffer: Some(bits(d, 16, 16)),
                expected_remaining: kwh50(32),
                to_charge_complete: kwh50(48),
                ..Default::default()
            }),
            _ => None,
        }
    }
}

/// Recognises the layout of 0x352 (see the module doc).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct LayoutDetector {
    layout: Option<EnergyLayout>,
    /// The low two bits of the last three frames, newest first.
    recent: [Option<u8>; 3],
    /// How many frames in a row had the same low two bits.
    same: u8,
}

impl LayoutDetector {
    const FLAT_AFTER: u8 = 6;

    fn feed(&mut self, low: u8) -> Option<EnergyLayout> {
        if self.layout.is_none() {
            self.same = if self.recent[0] == Some(low) { self.same.saturating_add(1) } else { 1 };
            self.recent = [Some(low), self.recent[0], self.recent[1]];
            if self.recent.contains(&Some(0)) && self.recent.contains(&Some(1)) {
                self.layout = Some(EnergyLayout::Multiplexed);
            } else if self.same >= Self::FLAT_AFTER {
                self.layout = Some(EnergyLayout::Flat);
            }
        }
        self.layout
    }
}

/// 0x320 `BMS_alertMatrix`: the faults DBE maps from one multiplex (see the module doc), `None` for a multiplex
/// without mapped bits.
pub fn alert_faults(d: &[u8; 8]) -> Option<(u8, BmsFaults)> {
    let mux = bits(d, 0, 4) as u8;
    let table: &[(u32, BmsFaults)] = match mux {
        0 => &[
            (20, BmsFaults::CELL_OVERVOLTAGE),
            (21, BmsFaults::CELL_UNDERVOLTAGE),
            (22, BmsFaults::OVER_TEMPERATURE),
            (25, BmsFaults::INTERNAL),
            (26, BmsFaults::CELL_OVERVOLTAGE),
            (38, BmsFaults::ISOLATION),
            (39, BmsFaults::HVIL_OPEN),
        ],
        1 => &[(26, BmsFaults::CONTACTOR)],
        2 => &[
            (6, BmsFaults::ISOLATION),
            (29, BmsFaults::CELL_UNDERVOLTAGE),
            (34, BmsFaults::ISOLATION),
            (48, BmsFaults::CONTACTOR),
            (49, BmsFaults::CONTACTOR),
            (62, BmsFaults::SUPPLY_12V_LOW),
        ],
        _ => return None,
    };
    let mut faults = BmsFaults::empty();
    for &(bit, f) in table {
        if bits(d, bit, 1) == 1 {
            faults |= f;
        }
    }
    Some((mux, faults))
}

/// 0x7AA `HVP_debugMessage` mux 5: the 12 V supply in 0.1 V (`None` for the other multiplexes).
pub fn hvp_12v_dv(d: &[u8; 8]) -> Option<u16> {
    (bits(d, 0, 4) == 5).then(|| bits(d, 36, 12) as u16)
}

/// A frame of the car's with a counter and the additive checksum.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub id: u16,
    pub len: usize,
    /// BE's template; its counter field is where the counter starts.
    pub template: [u8; 8],
    pub counter_start: u32,
    pub counter_len: u32,
    pub checksum_byte: usize,
}

impl Counted {
    /// The frame with `counter` (modulo the field's width) and its checksum.
    pub fn frame(&self, counter: u8) -> CanFrame {
        let mut d = self.template;
        set_bits(&mut d, self.counter_start, self.counter_len, counter as u32);
        d[self.checksum_byte] = tesla_checksum(self.id, &d[..self.len], self.checksum_byte);
        CanFrame::standard(self.id, &d[..self.len]).expect("11-bit id, at most 8 bytes")
    }

    pub fn first_counter(&self) -> u8 {
        bits(&self.template, self.counter_start, self.counter_len) as u8
    }

    pub fn next(&self, counter: u8) -> u8 {
        ((counter as u32 + 1) & ((1 << self.counter_len) - 1)) as u8
    }
}

const fn counted(id: u16, len: usize, template: [u8; 8], counter: (u32, u32), checksum_byte: usize) -> Counted {
    Counted { id, len, template, counter_start: counter.0, counter_len: counter.1, checksum_byte }
}

/// 0x118 `DI_systemStatus`: system state STANDBY, brake pedal on, gear P (BE's template).
pub const DI_SYSTEM_STATUS: Counted = counted(0x118, 8, [0xAB, 0x60, 0x2A, 0x00, 0x00, 0x08, 0x00, 0x00], (8, 4), 0);
/// 0x118 in the digital-HVIL mode (BE `TESLA_118_digital_hvil`).
pub const DI_SYSTEM_STATUS_DIGITAL_HVIL: Counted =
    counted(0x118, 8, [0x61, 0x80, 0x30, 0x10, 0x00, 0x08, 0x00, 0x80], (8, 4), 0);
/// 0x1CF, the digital-HVIL frame (BE `TESLA_1CF_digital_hvil`; its table starts at counter 3).
pub const DIGITAL_HVIL: Counted = counted(0x1CF, 8, [0x01, 0x00, 0x00, 0x1A, 0x1C, 0x02, 0x60, 0x69], (53, 3), 7);
/// 0x39D `IBST_status` (5 bytes).
pub const IBST_STATUS: Counted = counted(0x39D, 5, [0xE1, 0x59, 0xC1, 0x27, 0x00, 0, 0, 0], (8, 4), 0);
pub const CMPD_STATE: Counted = counted(0x2A8, 8, [0x02, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x2C], (52, 4), 7);
/// 0x2E8 `EPBR_status` (BE's template byte 7 is 0x6C, the sum is 0x7C: see the module doc).
pub const EPBR_STATUS: Counted = counted(0x2E8, 8, [0x02, 0x00, 0x10, 0x00, 0x00, 0x80, 0x00, 0x7C], (52, 4), 7);
pub const UI_CHASSIS_CONTROL: Counted = counted(0x293, 8, [0x01, 0x0C, 0x55, 0x91, 0x55, 0x15, 0x01, 0xF3], (52, 4), 7);
pub const UI_POWERTRAIN_CONTROL: Counted =
    counted(0x313, 8, [0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x1B], (52, 4), 7);
pub const UI_REQUEST: Counted = counted(0x334, 8, [0x3F, 0x3F, 0x00, 0x0F, 0xE2, 0x3F, 0x90, 0x75], (52, 4), 7);
/// 0x334's first frame (BE `TESLA_334_INITIAL`).
pub const UI_REQUEST_INITIAL: [u8; 8] = [0x3F, 0x3F, 0xC8, 0x00, 0xE2, 0x3F, 0x80, 0x1E];
pub const VCFRONT_SENSORS: Counted = counted(0x321, 8, [0xEC, 0x71, 0xA7, 0x6E, 0x02, 0x6C, 0x00, 0x04], (52, 4), 7);
/// 0x213 `UI_cruiseControl` (2 bytes).
pub const UI_CRUISE_CONTROL: Counted = counted(0x213, 2, [0x00, 0x15, 0, 0, 0, 0, 0, 0], (4, 4), 1);

/// The car's power state as 0x221 says it (`VCFRONT_vehiclePowerState`, with BE's "going down" key parts).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    Drive,
    Accessory,
    GoingDown,
    Off,
}

impl PowerState {
    pub fn name(self) -> &'static str {
        match self {
            PowerState::Drive => "DRIVE",
            PowerState::Accessory => "ACCESSORY",
            PowerState::GoingDown => "GOING_DOWN",
            PowerState::Off => "OFF",
        }
    }

    /// BE's templates (mux 0, mux 1) for the state; counter and checksum are set by [`lv_power_state`].
    fn templates(self) -> [[u8; 8]; 2] {
        match self {
            PowerState::Drive => {
                [[0x60, 0x55, 0x55, 0x15, 0x54, 0x51, 0xF1, 0xD8], [0x61, 0x05, 0x55, 0x05, 0x00, 0x00, 0x00, 0xE3]]
            }
            PowerState::Accessory => {
                [[0x40, 0x55, 0x55, 0x05, 0x54, 0x51, 0xF5, 0xAC], [0x41, 0x05, 0x55, 0x55, 0x01, 0x00, 0x04, 0x18]]
            }
            PowerState::GoingDown => {
                [[0x00, 0x89, 0x55, 0x06, 0xA4, 0x51, 0xF1, 0xED], [0x01, 0x09, 0x55, 0x59, 0x00, 0x00, 0x00, 0xDB]]
            }
            PowerState::Off => {
                [[0x00, 0x01, 0x00, 0x00, 0x00, 0x50, 0xF1, 0x65], [0x01, 0x01, 0x01, 0x50, 0x00, 0x00, 0x00, 0x76]]
            }
        }
    }
}

/// 0x221 `VCFRONT_LVPowerState` for `state`, multiplex `mux` (0 or 1), with `counter` (52|4) and checksum (byte 7).
pub fn lv_power_state(state: PowerState, mux: u8, counter: u8) -> CanFrame {
    let t = state.templates()[(mux & 1) as usize];
    counted(id::LV_POWER_STATE, 8, t, (52, 4), 7).frame(counter)
}

/// The data ids of 0x229's CRC, one per counter value (BE's comment: `autosarDataIds` in Model 3 firmware).
const SCCM_DATA_IDS: [u8; 16] = [124, 182, 240, 47, 105, 163, 221, 28, 86, 144, 202, 9, 67, 125, 183, 241];

/// 0x229 `SCCM_rightStalk`, stalk idle (BE's template `46 00 00`): counter 8|4, CRC in byte 0.
pub fn sccm_right_stalk(counter: u8) -> CanFrame {
    let c = counter & 0x0F;
    let mut d = [0u8, c, 0x00];
    d[0] = crc8_h2f(&[d[1], d[2], SCCM_DATA_IDS[c as usize]]);
    CanFrame::standard(id::SCCM_RIGHT_STALK, &d).expect("3 bytes")
}

/// 0x3A1 `VCFRONT_vehicleStatus`, step `step` of BE's 16-frame cycle (see the module doc).
pub fn vehicle_status(step: u8) -> CanFrame {
    const PAYLOADS: [[u8; 6]; 2] = [[0xC3, 0xFF, 0xFF, 0xFF, 0x3D, 0x00], [0x08, 0x62, 0x0B, 0x18, 0x00, 0x28]];
    let step = step & 0x0F;
    let mut d = [0u8; 8];
    d[..6].copy_from_slice(&PAYLOADS[(step & 1) as usize]);
    set_bits(&mut d, 49, 1, (step & 1) as u32);
    set_bits(&mut d, 52, 4, ((13 + step) & 0x0F) as u32);
    d[7] = tesla_checksum(id::VEHICLE_STATUS, &d, 7).wrapping_add(0x90);
    CanFrame::std8(id::VEHICLE_STATUS, d)
}

/// 0x2E1 `VCFRONT_status`, its six multiplexes (BE, the INIT vehicle-and-rails one first).
const VCFRONT_STATUS: [[u8; 8]; 6] = [
    [0x29, 0x0A, 0x00, 0xFF, 0x0F, 0x00, 0x00, 0x00],
    [0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00],
    [0x03, 0x6D, 0x99, 0x02, 0x1B, 0x57, 0x00, 0x00],
    [0xFC, 0x1B, 0xD1, 0x99, 0x9A, 0xD8, 0x09, 0x00],
    [0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
    [0x08, 0x21, 0x04, 0x6E, 0xA0, 0x88, 0x06, 0x04],
];

/// 0x3C2 `VCLEFT_switchStatus` mux 0 and mux 1 (BE).
const SWITCH_STATUS: [[u8; 8]; 2] =
    [[0x00, 0x55, 0x55, 0x55, 0x00, 0x00, 0x5A, 0x45], [0x29, 0x55, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]];

/// 0x7FF `GTW_carConfig` mux 1-5 with BE's default settings applied (mux 1: country 16|16 = "DE" (17477),
/// right-hand drive 11|1; mux 3: map region 8|4 = 2, chassis 18|3 = 2 (Model 3), pack energy 32|5 = 1 (74 kWh)).
const CAR_CONFIG: [[u8; 8]; 5] = [
    [0x01, 0x49, 0x45, 0x44, 0x00, 0x03, 0x15, 0x01],
    [0x02, 0x66, 0x32, 0x24, 0x04, 0x49, 0x95, 0x82],
    [0x03, 0x02, 0x08, 0x48, 0x01, 0x00, 0x00, 0x12],
    [0x04, 0x73, 0x03, 0x67, 0x5C, 0x00, 0x00, 0x00],
    [0x05, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00],
];

/// Constant frames (BE's templates): (id, data).
const STATIC_100MS: [(u16, &[u8]); 4] = [
    (0x102, &[0x22, 0x33, 0x00, 0x00, 0xC0, 0x38, 0x21, 0x08]),
    (0x103, &[0x22, 0x33, 0x00, 0x00, 0x30, 0xF2, 0x20, 0x02]),
    (0x241, &[0x35, 0x34, 0x0C, 0x0F, 0x8F, 0x55, 0x00]),
    (0x2D1, &[0xFF, 0x01]),
];
const STATIC_500MS: [(u16, &[u8]); 4] = [
    (0x284, &[0x10, 0x00, 0x00, 0x00, 0x00]),
    (0x333, &[0x84, 0x30, 0x84, 0x07, 0x02]),
    (0x3B3, &[0x90, 0x80, 0x05, 0x08, 0x00, 0x00, 0x00, 0x01]),
    (0x55A, &[0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
];
const UI_TRIP_PLANNING: (u16, &[u8]) = (0x082, &[0x00, 0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x80]);

/// The periodic sends, one slot each (see `time::Periodic`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Slot {
    Ms10 = 0,
    Ms50 = 1,
    Ms100 = 2,
    Ms500 = 3,
    S1 = 4,
}

const SLOTS: usize = 5;

/// The counters of the [`Counted`] frames, in this order.
const COUNTED: [Counted; 10] = [
    DI_SYSTEM_STATUS,
    DI_SYSTEM_STATUS_DIGITAL_HVIL,
    DIGITAL_HVIL,
    IBST_STATUS,
    CMPD_STATE,
    EPBR_STATUS,
    UI_CHASSIS_CONTROL,
    UI_POWERTRAIN_CONTROL,
    VCFRONT_SENSORS,
    UI_CRUISE_CONTROL,
];
/// Counters kept besides [`COUNTED`]'s: 0x229 (its own CRC) and 0x334 (its first frame is a fixed one).
const SCCM_INDEX: usize = COUNTED.len();
const UI_REQUEST_INDEX: usize = COUNTED.len() + 1;

type Outbox = heapless::Deque<CanFrame, 32>;

/// The cell scan of 0x401 under way (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
struct CellScan {
    voltages: [MilliVolts; MAX_CELLS],
    /// Multiplexes seen in this scan (64 × 3 = [`MAX_CELLS`]).
    seen: u64,
    /// The highest multiplex seen and its brick count.
    last: Option<(u8, u8)>,
    /// A partial frame came before the last multiplex.
    broken: bool,
}

impl CellScan {
    fn new() -> Self {
        CellScan { voltages: [MilliVolts(0); MAX_CELLS], seen: 0, last: None, broken: false }
    }

    /// The count of the scan if it is complete.
    fn complete(&self) -> Option<u16> {
        let (max, count) = self.last?;
        let all = if max >= 63 { u64::MAX } else { (1u64 << (max + 1)) - 1 };
        (!self.broken && self.seen == all).then_some(max as u16 * 3 + count as u16)
    }

    fn add(&mut self, f: &BrickVoltages) {
        if let Some((max, count)) = self.last {
            // A partial frame that is not the last one breaks the scan.
            if (f.mux > max && count < 3) || (f.mux < max && f.count < 3) {
                self.broken = true;
            }
        }
        let base = f.mux as usize * 3;
        self.voltages[base..base + f.count as usize].copy_from_slice(&f.bricks[..f.count as usize]);
        self.seen |= 1 << f.mux;
        if self.last.is_none_or(|(max, _)| f.mux >= max) {
            self.last = Some((f.mux, f.count));
        }
    }
}

#[derive(Clone, Debug)]
pub struct TeslaModel3 {
    options: TeslaModel3Options,
    timers: [Periodic; SLOTS],
    outbox: Outbox,
    counters: [u8; COUNTED.len() + 2],
    sent_ui_request_initial: bool,
    step_2e1: u8,
    step_7ff: u8,
    step_3a1: u8,
    mux_221: u8,
    counter_221: u8,
    /// What the supervisor last decided.
    wanted: ContactorRequest,
    /// When the power-down sequence began (`None`: never driven, or driving).
    opening_since: Option<Instant>,
    /// When the close under way was asked for (`None` once the pack reports CLOSED).
    closing_since: Option<Instant>,
    /// The pack's contactor state from 0x212.
    reported: Option<ContactorState>,
    /// Latched: a close that failed (timeout, BLOCKED while asked, the BMS's close-failure alert).
    close_failed: bool,
    /// Latched: the pack reported WELDED.
    welded: bool,
    scan: CellScan,
    /// The count of the last complete scan.
    last_scan: Option<u16>,
    /// The count two scans agreed on.
    cell_count: Option<u16>,
    contradicted: bool,
    layout: LayoutDetector,
    alert: [BmsFaults; 3],
    hvil_open: bool,
    supply_low: bool,
    pyrofuse: bool,
}

impl Default for TeslaModel3 {
    fn default() -> Self {
        Self::new()
    }
}

impl TeslaModel3 {
    pub fn new() -> Self {
        Self::with_options(TeslaModel3Options::default())
    }

    pub fn with_options(options: TeslaModel3Options) -> Self {
        let mut counters = [0u8; COUNTED.len() + 2];
        for (c, spec) in counters.iter_mut().zip(COUNTED.iter()) {
            *c = spec.first_counter();
        }
        counters[UI_REQUEST_INDEX] = UI_REQUEST.first_counter();
        TeslaModel3 {
            options,
            timers: [
                Periodic::new(Duration::from_millis(10)),
                Periodic::new(Duration::from_millis(50)),
                Periodic::new(Duration::from_millis(100)),
                Periodic::new(Duration::from_millis(500)),
                Periodic::new(Duration::from_millis(1000)),
            ],
            outbox: Outbox::new(),
            counters,
            sent_ui_request_initial: false,
            step_2e1: 0,
            step_7ff: 0,
            step_3a1: 0,
            mux_221: 1,
            counter_221: 15,
            wanted: ContactorRequest::Open,
            opening_since: None,
            closing_since: None,
            reported: None,
            close_failed: false,
            welded: false,
            scan: CellScan::new(),
            last_scan: None,
            cell_count: None,
            contradicted: false,
            layout: LayoutDetector::default(),
            alert: [BmsFaults::empty(); 3],
            hvil_open: false,
            supply_low: false,
            pyrofuse: false,
        }
    }

    pub fn options(&self) -> TeslaModel3Options {
        self.options
    }

    /// The cell count two scans agreed on.
    pub fn cell_count(&self) -> Option<u16> {
        self.cell_count
    }

    /// The power state 0x221 says at `now`.
    pub fn power_state(&self, now: Instant) -> PowerState {
        if self.wanted == ContactorRequest::Closed {
            return PowerState::Drive;
        }
        match self.opening_since {
            None => PowerState::Off,
            Some(t) => match now.saturating_since(t).as_millis() / POWER_DOWN_STEP.as_millis() {
                0 => PowerState::Accessory,
                1 => PowerState::GoingDown,
                _ => PowerState::Off,
            },
        }
    }

    fn start(&mut self, now: Instant) {
        if !self.timers[Slot::Ms10 as usize].is_running() {
            for t in self.timers.iter_mut() {
                t.start_at(now);
            }
        }
    }

    fn push(&mut self, f: CanFrame) {
        if self.outbox.push_back(f).is_err() {
            self.outbox.pop_front();
            let _ = self.outbox.push_back(f);
        }
    }

    fn push_counted(&mut self, i: usize) {
        let spec = &COUNTED[i];
        self.push(spec.frame(self.counters[i]));
        self.counters[i] = spec.next(self.counters[i]);
    }

    fn design_now(&self) -> PackDesign {
        let mut d = self.options.chemistry.design();
        if let Some(n) = self.cell_count {
            d.cells = n;
        }
        d
    }

    /// Everything that makes up the model's faults and contactor state, from their separate sources.
    fn update_state(&self, model: &mut BatteryModel) {
        let contactor_fault = self.close_failed || self.welded;
        let mut faults = self.alert[0] | self.alert[1] | self.alert[2];
        faults.set(BmsFaults::CONTACTOR, faults.contains(BmsFaults::CONTACTOR) || contactor_fault);
        faults.set(BmsFaults::HVIL_OPEN, faults.contains(BmsFaults::HVIL_OPEN) || self.hvil_open);
        faults.set(BmsFaults::SUPPLY_12V_LOW, faults.contains(BmsFaults::SUPPLY_12V_LOW) || self.supply_low);
        faults.set(BmsFaults::INTERNAL, faults.contains(BmsFaults::INTERNAL) || self.pyrofuse);
        model.faults = faults;
        model.contactors = if contactor_fault {
            Contactors::Fault
        } else {
            match self.reported {
                None | Some(ContactorState::Sna | ContactorState::Unknown(_)) => Contactors::Unknown,
                Some(ContactorState::Open | ContactorState::Opening | ContactorState::Blocked) => Contactors::Open,
                Some(ContactorState::Closing) => Contactors::Precharging,
                Some(ContactorState::Closed) => Contactors::Closed,
                Some(ContactorState::Welded) => Contactors::Fault,
            }
        };
    }

    fn handle_contactor_state(&mut self, now: Instant, state: ContactorState) {
        let was_closed = self.reported == Some(ContactorState::Closed);
        self.reported = Some(state);
        match state {
            ContactorState::Welded => self.welded = true,
            ContactorState::Blocked if self.wanted == ContactorRequest::Closed => self.close_failed = true,
            ContactorState::Closed => self.closing_since = None,
            _ => {}
        }
        if self.wanted == ContactorRequest::Closed {
            if was_closed && state != ContactorState::Closed {
                // The pack opened by itself: a new close is under way (it closes again while DRIVE lasts).
                self.closing_since = Some(now);
            }
            if self.closing_since.is_some_and(|t| now.saturating_since(t) > CLOSE_TIMEOUT) {
                self.close_failed = true;
            }
        }
    }

    fn handle_bricks(&mut self, now: Instant, f: &BrickVoltages, model: &mut BatteryModel) {
        if f.mux == 0 && self.scan.seen != 0 {
            if let Some(count) = self.scan.complete() {
                if self.last_scan == Some(count) {
                    self.learned(now, count, model);
                }
                self.last_scan = Some(count);
                if self.cell_count == Some(count) && !self.contradicted {
                    model.cells.set_voltages(now, &self.scan.voltages[..count as usize]);
                }
            }
            self.scan = CellScan::new();
        }
        self.scan.add(f);
    }

    /// Two scans agree on `count`: the chemistry is confirmed or contradicted (see the module doc).
    fn learned(&mut self, now: Instant, count: u16, model: &mut BatteryModel) {
        let changed = self.cell_count.is_some_and(|c| c != count);
        if changed || !self.options.chemistry.fits(count) {
            self.contradicted = true;
        }
        if self.cell_count.is_none() || self.contradicted {
            self.cell_count = Some(count);
        }
        model.design.cells = count;
        model.design_status = if self.contradicted { DesignStatus::Contradicted } else { DesignStatus::Confirmed };
        model.extras.set_number(now, extra::CELL_COUNT, count as i64);
    }

    fn handle_energies(&mut self, now: Instant, d: &[u8; 8], model: &mut BatteryModel) {
        let e = match self.layout.feed(d[0] & 0x03) {
            None => return,
            Some(EnergyLayout::Flat) => {
                model.extras.set_text(now, extra::ENERGY_LAYOUT, "pre-2021");
                Energies::parse_flat(d)
            }
            Some(EnergyLayout::Multiplexed) => {
                model.extras.set_text(now, extra::ENERGY_LAYOUT, "2021+ multiplexed");
                match Energies::parse_multiplexed(d) {
                    Some(e) => e,
                    None => return,
                }
            }
        };
        let fields = [
            (e.nominal_full, extra::NOMINAL_FULL),
            (e.nominal_remaining, extra::NOMINAL_REMAINING),
            (e.ideal_remaining, extra::IDEAL_REMAINING),
            (e.expected_remaining, extra::EXPECTED_REMAINING),
            (e.to_charge_complete, extra::TO_CHARGE_COMPLETE),
            (e.buffer, extra::BUFFER),
        ];
        for (v, key) in fields {
            if let Some(v) = v {
                model.extras.set_number(now, key, v as i64);
            }
        }
        if let Some(full) = e.nominal_full {
            model.total_energy = Some(Reading::new(WattHours(full * 10), now));
        }
        if let Some(rem) = e.nominal_remaining {
            model.remaining_energy = Some(Reading::new(WattHours(rem * 10), now));
        }
        if let Some(full) = e.full_charge_complete {
            model.requests.set(BmsRequests::FULL, full);
        }
    }
}

impl Battery for TeslaModel3 {
    fn design(&self) -> PackDesign {
        self.design_now()
    }

    fn requirements(&self) -> &'static [Requirement] {
        &REQUIRED
    }

    fn extras(&self) -> &'static [ExtraDescriptor] {
        EXTRAS
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
            id::HV_BUS => {
                let f = HvBus::parse(require_len(frame, 8)?);
                model.pack_voltage = Some(Reading::new(f.voltage, now));
                model.current = Some(Reading::new(f.current, now));
                self.pyrofuse = (5..=50).contains(&f.voltage.0);
                model.extras.set_flag(now, extra::PYROFUSE, self.pyrofuse);
                if let Some(m) = f.charge_minutes_remaining {
                    model.extras.set_number(now, extra::CHARGE_TIME, m as i64);
                }
            }
            id::SOC => {
                let s = SocStatus::parse(require_len(frame, 8)?);
                model.soc = Some(Reading::new(BasisPoints(s.ui * 10), now));
                for (v, key) in [(s.min, extra::SOC_MIN), (s.ui, extra::SOC_UI), (s.max, extra::SOC_MAX)] {
                    model.extras.set_number(now, key, v as i64);
                }
                model.extras.set_number(now, extra::SOC_AVE, s.ave as i64);
                model.extras.set_number(now, extra::BOL_ENERGY, s.beginning_of_life as i64);
            }
            id::BRICK_MIN_MAX => match BrickMinMax::parse(require_len(frame, 6)?) {
                BrickMinMax::Temperatures { max, min, max_sensor, min_sensor, model_max, model_min } => {
                    model.temperature_max = Some(Reading::new(max, now));
                    model.temperature_min = Some(Reading::new(min, now));
                    model.extras.set_number(now, extra::BRICK_T_MAX_NUM, max_sensor as i64);
                    model.extras.set_number(now, extra::BRICK_T_MIN_NUM, min_sensor as i64);
                    model.extras.set_number(now, extra::MODEL_T_MAX, model_max.0 as i64);
                    model.extras.set_number(now, extra::MODEL_T_MIN, model_min.0 as i64);
                }
                BrickMinMax::Voltages { max, min, max_brick, min_brick } => {
                    model.extras.set_number(now, extra::BRICK_V_MAX, max.0 as i64);
                    model.extras.set_number(now, extra::BRICK_V_MAX_NUM, max_brick as i64);
                    model.extras.set_number(now, extra::BRICK_V_MIN, min.0 as i64);
                    model.extras.set_number(now, extra::BRICK_V_MIN_NUM, min_brick as i64);
                }
                BrickMinMax::Other(_) => {}
            },
            id::BRICK_VOLTAGES => {
                let d = require_len(frame, 8)?;
                if d[0] as usize * 3 + 3 > MAX_CELLS {
                    return Err(DecodeError::OutOfRange { id: frame.raw_id() });
                }
                if let Some(f) = BrickVoltages::parse(d) {
                    self.handle_bricks(now, &f, model);
                }
            }
            id::DRIVE_LIMITS => {
                let l = DriveLimits::parse(require_len(frame, 8)?);
                model.bms_charge_current = Some(Reading::new(l.max_charge_current, now));
                model.bms_discharge_current = Some(Reading::new(l.max_discharge_current, now));
                model.extras.set_number(now, extra::BMS_MAX_V, l.max_voltage.0 as i64);
                model.extras.set_number(now, extra::BMS_MIN_V, l.min_voltage.0 as i64);
            }
            id::POWER_AVAILABLE => {
                let p = PowerAvailable::parse(require_len(frame, 8)?);
                if p.calculated {
                    model.max_charge_power = Some(Reading::new(p.max_regen, now));
                    model.max_discharge_power = Some(Reading::new(p.max_discharge, now));
                } else {
                    model.max_charge_power = None;
                    model.max_discharge_power = None;
                }
                model.extras.set_flag(now, extra::POWER_CALCULATED, p.calculated);
            }
            id::BMS_STATUS => {
                let s = BmsStatusFrame::parse(require_len(frame, 8)?);
                self.handle_contactor_state(now, s.contactors);
                model.bms_status = s.bms_status();
                model.status_at = Some(now);
                model.extras.set_text(now, extra::CONTACTOR_STATE, s.contactors.name());
                model.extras.set_text(now, extra::BMS_STATE, s.state_name());
                model.extras.set_text(now, extra::HV_STATE, s.hv_state_name());
                model.extras.set_number(now, extra::ISOLATION, s.isolation_kohm as i64);
            }
            id::HVP_CONTACTORS => {
                let h = HvpContactors::parse(require_len(frame, 6)?);
                self.hvil_open = h.hvil != 1;
                model.requests.set(BmsRequests::OPEN_RELAYS, h.open_now_requested || h.open_requested);
                model.extras.set_number(now, extra::NEG_STATE, h.negative as i64);
                model.extras.set_number(now, extra::POS_STATE, h.positive as i64);
                model.extras.set_number(now, extra::SET_STATE, h.set_state as i64);
                model.extras.set_flag(now, extra::CLOSING_ALLOWED, h.closing_allowed);
                model.extras.set_flag(now, extra::PYRO_TEST, h.pyro_test);
                model.extras.set_text(now, extra::HVIL, h.hvil_name());
            }
            id::ENERGY_STATUS => {
                let d = *require_len(frame, 8)?;
                self.handle_energies(now, &d, model);
            }
            id::KWH_COUNTER => {
                let d = require_len(frame, 8)?;
                model.extras.set_number(now, extra::TOTAL_DISCHARGED, bits(d, 0, 32) as i64);
                model.extras.set_number(now, extra::TOTAL_CHARGED, bits(d, 32, 32) as i64);
            }
            id::ALERT_MATRIX => {
                if let Some((mux, faults)) = alert_faults(require_len(frame, 8)?) {
                    self.alert[mux as usize] = faults;
                    if mux == 1 && faults.contains(BmsFaults::CONTACTOR) {
                        // The BMS's own "contactor close failure": a failed close, latched as DBE's own is.
                        self.close_failed = true;
                    }
                }
            }
            id::HVP_DEBUG => {
                if let Some(v) = hvp_12v_dv(require_len(frame, 8)?) {
                    model.extras.set_number(now, extra::SUPPLY_12V, v as i64);
                    // BE judges the 12 V only while the contactors are open, and clears it while they are closed.
                    self.supply_low = model.contactors != Contactors::Closed && v < SUPPLY_12V_MIN_DV;
                }
            }
            _ => return Ok(FrameUse::Ignored),
        }
        if model.extras.text(extra::CHEMISTRY).is_none() {
            let name = match self.options.chemistry {
                TeslaChemistry::NcaNcm => "NCA/NCM",
                TeslaChemistry::Lfp => "LFP",
            };
            model.extras.set_text(now, extra::CHEMISTRY, name);
        }
        self.update_state(model);
        model.extras.set_text(now, extra::POWER_STATE, self.power_state(now).name());
        self.start(now);
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        if let Some(f) = self.outbox.pop_front() {
            return Some(f);
        }
        let wanted = self.wanted == ContactorRequest::Closed;
        if self.timers[Slot::Ms10 as usize].poll(now) {
            if self.options.digital_hvil {
                // BE sends the digital-HVIL pair only while closing is allowed, and no normal 0x118 then.
                if wanted {
                    self.push_counted(2);
                    self.push_counted(1);
                }
            } else {
                self.push_counted(0);
            }
            self.push(CanFrame::std8(0x2E1, VCFRONT_STATUS[self.step_2e1 as usize]));
            self.step_2e1 = (self.step_2e1 + 1) % VCFRONT_STATUS.len() as u8;
        }
        if self.timers[Slot::Ms50 as usize].poll(now) {
            let mux = self.mux_221;
            self.push(lv_power_state(self.power_state(now), mux, self.counter_221));
            self.counter_221 = (self.counter_221 + 1) & 0x0F;
            self.mux_221 ^= 1;
            self.push(CanFrame::std8(0x3C2, SWITCH_STATUS[mux as usize]));
            self.push_counted(3);
            if self.reported == Some(ContactorState::Closed) {
                self.push(vehicle_status(self.step_3a1));
                self.step_3a1 = (self.step_3a1 + 1) & 0x0F;
            }
        }
        if self.timers[Slot::Ms100 as usize].poll(now) {
            for (fid, d) in STATIC_100MS {
                self.push(CanFrame::standard(fid, d).expect("constant frame"));
            }
            let c = self.counters[SCCM_INDEX];
            self.push(sccm_right_stalk(c));
            self.counters[SCCM_INDEX] = (c + 1) & 0x0F;
            self.push_counted(4);
            self.push_counted(5);
            self.push(CanFrame::std8(0x7FF, CAR_CONFIG[self.step_7ff as usize]));
            self.step_7ff = (self.step_7ff + 1) % CAR_CONFIG.len() as u8;
        }
        if self.timers[Slot::Ms500 as usize].poll(now) {
            self.push_counted(9);
            for (fid, d) in STATIC_500MS {
                self.push(CanFrame::standard(fid, d).expect("constant frame"));
            }
            self.push_counted(6);
            self.push_counted(7);
            if self.sent_ui_request_initial {
                let c = self.ui_request_counter();
                self.push(UI_REQUEST.frame(c));
            } else {
                self.sent_ui_request_initial = true;
                self.push(CanFrame::std8(0x334, UI_REQUEST_INITIAL));
            }
        }
        if self.timers[Slot::S1 as usize].poll(now) {
            self.push(CanFrame::standard(UI_TRIP_PLANNING.0, UI_TRIP_PLANNING.1).expect("constant frame"));
            self.push_counted(8);
        }
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.outbox.is_empty() {
            return Some(Instant::ZERO);
        }
        self.timers.iter().filter_map(|t| t.next_at()).min()
    }

    fn set_contactors(&mut self, now: Instant, request: ContactorRequest) {
        self.start(now);
        if request == self.wanted {
            return;
        }
        match request {
            ContactorRequest::Closed => {
                self.opening_since = None;
                self.closing_since = (self.reported != Some(ContactorState::Closed)).then_some(now);
            }
            ContactorRequest::Open => {
                self.opening_since = Some(now);
                self.closing_since = None;
            }
        }
        self.wanted = request;
    }

    fn bms_reset(&mut self, _now: Instant) -> Result<(), Unsupported> {
        Err(Unsupported { battery: "Tesla Model 3/Y", what: "BMS reset" })
    }

    /// The BMS closes its contactors itself when the car's frames say so: CAN only (the contactors are inside the
    /// pack; `none` would claim DBE cannot open them, which is not so).
    fn contactor_modes(&self) -> &'static [ContactorMode] {
        &[ContactorMode::Can]
    }
}

impl TeslaModel3 {
    /// 0x334's counter: the first regular frame carries the template's, then it steps.
    fn ui_request_counter(&mut self) -> u8 {
        let c = self.counters[UI_REQUEST_INDEX];
        self.counters[UI_REQUEST_INDEX] = UI_REQUEST.next(c);
        c
    }
}

#[cfg(test)]
mod tests;
