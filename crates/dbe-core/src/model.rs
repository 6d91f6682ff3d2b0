//! The one battery model: what every battery driver decodes into and every inverter protocol (through the
//! supervisor) encodes from.
//!
//! Each measured value carries the time it was last decoded ([`Reading`]), so the supervisor can tell a fresh
//! value from a stale one and telemetry can leave out what was never seen (a value not yet known is `None`, never
//! 0). Fields are named for what they mean, their units are in their types (see [`crate::units`]).
//!
//! Compared with Battery-Emulator's `datalayer` (Software/src/datalayer/datalayer.h), which this mirrors in
//! content: there is no global instance; the bridge owns one model and passes it to the driver that fills it.

pub use crate::extras::{
    check_table, DeviceClass, Extra, ExtraDescriptor, ExtraKind, ExtraValue, Extras, FlagId, NumberId, ShortText,
    StateClass, TextId, MAX_EXTRAS,
};
use crate::time::{Duration, Instant};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours, Watts};

/// The most cells any supported pack has (Battery-Emulator's `MAX_AMOUNT_CELLS`).
pub const MAX_CELLS: usize = 192;

/// A value and when it was decoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reading<T> {
    pub value: T,
    pub at: Instant,
}

impl<T: Copy> Reading<T> {
    pub fn new(value: T, at: Instant) -> Self {
        Reading { value, at }
    }
}

/// Cell chemistry: chooses the default cell voltage limits of the supervisor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Chemistry {
    /// Nickel-manganese-cobalt and LMO/NMC blends (LEAF, Bolt, i3, Zoe, MEB).
    Nmc,
    /// Nickel-cobalt-aluminium (Tesla long-range packs).
    Nca,
    /// Lithium iron phosphate.
    Lfp,
}

impl Chemistry {
    pub fn name(self) -> &'static str {
        match self {
            Chemistry::Nmc => "NMC",
            Chemistry::Nca => "NCA",
            Chemistry::Lfp => "LFP",
        }
    }
}

/// What the driver knows about the pack's design: fixed per pack family (and generation), used as the outer
/// bounds of every voltage the supervisor lets through.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PackDesign {
    pub chemistry: Chemistry,
    /// Cells in series.
    pub cells: u16,
    pub max_pack_voltage: DeciVolts,
    pub min_pack_voltage: DeciVolts,
    pub max_cell_voltage: MilliVolts,
    pub min_cell_voltage: MilliVolts,
    /// Largest cell-to-cell spread the pack family tolerates before it is a fault.
    pub max_cell_deviation: MilliVolts,
}

/// Contactor state as the pack reports it (or as the driver infers it from the pack's messages).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Contactors {
    #[default]
    Unknown,
    Open,
    Precharging,
    Closed,
    /// The pack reports a contactor fault (welded, failed to close).
    Fault,
}

impl Contactors {
    pub fn name(self) -> &'static str {
        match self {
            Contactors::Unknown => "unknown",
            Contactors::Open => "open",
            Contactors::Precharging => "precharging",
            Contactors::Closed => "closed",
            Contactors::Fault => "fault",
        }
    }
}

/// The BMS's own summary of its state.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum BmsStatus {
    #[default]
    Unknown,
    /// Awake and reporting, no fault.
    Active,
    /// Awake but asking not to be used (e.g. a LEAF BMS relay-cut request).
    Standby,
    /// The BMS reports a fault that forbids use.
    Fault,
}

impl BmsStatus {
    pub fn name(self) -> &'static str {
        match self {
            BmsStatus::Unknown => "UNKNOWN",
            BmsStatus::Active => "ACTIVE",
            BmsStatus::Standby => "STANDBY",
            BmsStatus::Fault => "FAULT",
        }
    }
}

bitflags::bitflags! {
    /// Faults the BMS itself reports. Each bit has a rule in the supervisor (`supervisor::FAULT_RULES`; a test
    /// fails when a bit has none). `contains` means every given bit is set, `intersects` any of them.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BmsFaults: u32 {
        /// High-voltage interlock loop open.
        const HVIL_OPEN = 1 << 0;
        /// Insulation resistance too low.
        const ISOLATION = 1 << 1;
        /// The BMS flags a cell over-voltage itself.
        const CELL_OVERVOLTAGE = 1 << 2;
        const CELL_UNDERVOLTAGE = 1 << 3;
        const OVER_TEMPERATURE = 1 << 4;
        /// A contactor the BMS drives is welded or failed to close.
        const CONTACTOR = 1 << 5;
        /// The pack's 12 V supply is too low for its controller to be trusted.
        const SUPPLY_12V_LOW = 1 << 6;
        /// Any other BMS-internal failure the driver decodes.
        const INTERNAL = 1 << 7;
    }
}

bitflags::bitflags! {
    /// What the BMS asks of "the car": typed, because each one has safety meaning and a rule in the supervisor
    /// (`supervisor::REQUEST_RULES`; a test fails when a bit has none). A driver sets and clears them from the
    /// pack's own frames only: a request stays in force until the pack says otherwise.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BmsRequests: u16 {
        /// Stop charging (e.g. a LEAF's failsafe "charging mode stop").
        const CHARGE_STOP = 1 << 0;
        /// Stop discharging (e.g. a LEAF's failsafe "normal stop").
        const DISCHARGE_STOP = 1 << 1;
        /// Open the main relays (a LEAF's relay-cut request).
        const OPEN_RELAYS = 1 << 2;
        /// The pack counts itself empty.
        const CAPACITY_EMPTY = 1 << 3;
        /// The pack counts itself full.
        const FULL = 1 << 4;
    }
}

bitflags::bitflags! {
    /// Conditions that call for a person's attention but forbid nothing by themselves: the BMS's own cautions, and
    /// conditions the user chose to tolerate (a driver option says so, e.g. the LEAF's `interlock = "warn"`). The
    /// supervisor raises each as a warning event for as long as it lasts, so a weakened safety rule stays visible.
    /// A driver sets a condition as a fault or as a warning, never as both.
    #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
    pub struct BmsWarnings: u16 {
        /// The pack's caution lamp request (a LEAF's failsafe bit 2).
        const CAUTION = 1 << 0;
        /// The interlock loop is open on a pack where the user chose not to require it.
        const INTERLOCK_OPEN = 1 << 1;
    }
}

/// Whether the driver has confirmed the pack design it reports (variant, chemistry, cell count). The supervisor
/// gives 0 A until it is `Confirmed`; `Contradicted` (what the bus shows disagrees with the configured design) is
/// a critical condition.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum DesignStatus {
    #[default]
    Pending,
    Confirmed,
    Contradicted,
}

impl DesignStatus {
    pub fn name(self) -> &'static str {
        match self {
            DesignStatus::Pending => "pending",
            DesignStatus::Confirmed => "confirmed",
            DesignStatus::Contradicted => "contradicted",
        }
    }
}

/// A reading the supervisor can require before any current flows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Quantity {
    PackVoltage,
    Current,
    Soc,
    TemperatureMin,
    TemperatureMax,
    /// Every cell of the design's count.
    Cells,
    BmsChargePower,
    BmsDischargePower,
    BmsChargeCurrent,
    BmsDischargeCurrent,
    /// The frame that carries the BMS's faults and requests ([`BatteryModel::status_at`]).
    Status,
}

impl Quantity {
    pub const ALL: [Quantity; 11] = [
        Quantity::PackVoltage,
        Quantity::Current,
        Quantity::Soc,
        Quantity::TemperatureMin,
        Quantity::TemperatureMax,
        Quantity::Cells,
        Quantity::BmsChargePower,
        Quantity::BmsDischargePower,
        Quantity::BmsChargeCurrent,
        Quantity::BmsDischargeCurrent,
        Quantity::Status,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Quantity::PackVoltage => "pack_voltage",
            Quantity::Current => "current",
            Quantity::Soc => "soc",
            Quantity::TemperatureMin => "temperature_min",
            Quantity::TemperatureMax => "temperature_max",
            Quantity::Cells => "cells",
            Quantity::BmsChargePower => "bms_charge_power",
            Quantity::BmsDischargePower => "bms_discharge_power",
            Quantity::BmsChargeCurrent => "bms_charge_current",
            Quantity::BmsDischargeCurrent => "bms_discharge_current",
            Quantity::Status => "bms_status",
        }
    }

    /// When the model last got this reading (`None`: never, or the cell report is incomplete).
    pub fn updated_at(self, m: &BatteryModel) -> Option<Instant> {
        match self {
            Quantity::PackVoltage => m.pack_voltage.map(|r| r.at),
            Quantity::Current => m.current.map(|r| r.at),
            Quantity::Soc => m.soc.map(|r| r.at),
            Quantity::TemperatureMin => m.temperature_min.map(|r| r.at),
            Quantity::TemperatureMax => m.temperature_max.map(|r| r.at),
            Quantity::Cells => m.cells.updated_at().filter(|_| m.cells.count() == m.design.cells as usize),
            Quantity::BmsChargePower => m.max_charge_power.map(|r| r.at),
            Quantity::BmsDischargePower => m.max_discharge_power.map(|r| r.at),
            Quantity::BmsChargeCurrent => m.bms_charge_current.map(|r| r.at),
            Quantity::BmsDischargeCurrent => m.bms_discharge_current.map(|r| r.at),
            Quantity::Status => m.status_at,
        }
    }
}

/// One reading a driver declares it must supply before current flows, and how old it may get (from the source's
/// period: a 10 ms frame is stale after 1 s, a 100 ms frame after 3 s, a polled value after three poll periods,
/// never more than [`MAX_READING_AGE`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub quantity: Quantity,
    pub max_age: Duration,
}

/// The oldest any required reading may be, whatever its source.
pub const MAX_READING_AGE: Duration = Duration::from_secs(60);

impl Requirement {
    pub const fn new(quantity: Quantity, max_age: Duration) -> Self {
        let max_age = if max_age.as_millis() > MAX_READING_AGE.as_millis() { MAX_READING_AGE } else { max_age };
        Requirement { quantity, max_age }
    }
}

/// Cell voltages and balancing flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cells {
    voltages: [MilliVolts; MAX_CELLS],
    balancing: [u32; MAX_CELLS / 32],
    count: u16,
    updated_at: Option<Instant>,
    /// Lowest and highest cell, found once when the voltages are stored (the supervisor asks on every frame).
    extremes: Option<((usize, MilliVolts), (usize, MilliVolts))>,
}

impl Default for Cells {
    fn default() -> Self {
        Cells {
            voltages: [MilliVolts(0); MAX_CELLS],
            balancing: [0; MAX_CELLS / 32],
            count: 0,
            updated_at: None,
            extremes: None,
        }
    }
}

impl Cells {
    /// The cells known so far (an empty slice until the first complete cell report).
    pub fn voltages(&self) -> &[MilliVolts] {
        &self.voltages[..self.count as usize]
    }

    pub fn count(&self) -> usize {
        self.count as usize
    }

    pub fn updated_at(&self) -> Option<Instant> {
        self.updated_at
    }

    /// Replaces all cell voltages at once (a driver decodes a full report, then stores it). Cells past
    /// [`MAX_CELLS`] are ignored.
    pub fn set_voltages(&mut self, now: Instant, voltages: &[MilliVolts]) {
        let n = voltages.len().min(MAX_CELLS);
        self.voltages[..n].copy_from_slice(&voltages[..n]);
        self.count = n as u16;
        self.updated_at = Some(now);
        let v = &self.voltages[..n];
        let min = v.iter().copied().enumerate().min_by_key(|&(_, v)| v);
        let max = v.iter().copied().enumerate().max_by_key(|&(_, v)| v);
        self.extremes = min.zip(max);
    }

    pub fn is_balancing(&self, cell: usize) -> bool {
        cell < MAX_CELLS && self.balancing[cell / 32] & (1 << (cell % 32)) != 0
    }

    pub fn set_balancing(&mut self, cell: usize, on: bool) {
        if cell >= MAX_CELLS {
            return;
        }
        let bit = 1 << (cell % 32);
        if on {
            self.balancing[cell / 32] |= bit;
        } else {
            self.balancing[cell / 32] &= !bit;
        }
    }

    pub fn balancing_count(&self) -> u32 {
        self.balancing.iter().map(|w| w.count_ones()).sum()
    }

    /// Lowest cell: (index from 0, voltage); the first of equal ones.
    pub fn min(&self) -> Option<(usize, MilliVolts)> {
        self.extremes.map(|e| e.0)
    }

    /// Highest cell: (index from 0, voltage); the last of equal ones.
    pub fn max(&self) -> Option<(usize, MilliVolts)> {
        self.extremes.map(|e| e.1)
    }

    /// Spread between highest and lowest cell.
    pub fn deviation(&self) -> Option<MilliVolts> {
        Some(MilliVolts(self.max()?.1 .0 - self.min()?.1 .0))
    }
}

/// Everything known about the pack, as decoded from its own messages. Nothing here is what the inverter is
/// told: that is the supervisor's output, which starts from this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatteryModel {
    pub design: PackDesign,
    pub pack_voltage: Option<Reading<DeciVolts>>,
    /// Positive = charging.
    pub current: Option<Reading<DeciAmps>>,
    /// State of charge as the BMS computes it (the "real" SOC, before the user's SOC window is applied).
    pub soc: Option<Reading<BasisPoints>>,
    pub soh: Option<Reading<BasisPoints>>,
    pub temperature_min: Option<Reading<DeciCelsius>>,
    pub temperature_max: Option<Reading<DeciCelsius>>,
    /// Usable energy of the pack when full, at its present health.
    pub total_energy: Option<Reading<WattHours>>,
    /// Energy left in the pack (real, before SOC-window scaling).
    pub remaining_energy: Option<Reading<WattHours>>,
    /// The BMS's own limits (never negative).
    pub max_charge_power: Option<Reading<Watts>>,
    pub max_discharge_power: Option<Reading<Watts>>,
    /// The BMS's own current limits, for packs that give them as currents (never negative).
    pub bms_charge_current: Option<Reading<DeciAmps>>,
    pub bms_discharge_current: Option<Reading<DeciAmps>>,
    pub cells: Cells,
    pub contactors: Contactors,
    pub bms_status: BmsStatus,
    pub faults: BmsFaults,
    pub requests: BmsRequests,
    pub warnings: BmsWarnings,
    /// When the BMS last reported its status (faults and requests) in a frame that checked out.
    pub status_at: Option<Instant>,
    /// Set by the driver; see [`DesignStatus`].
    pub design_status: DesignStatus,
    /// The readings the driver must supply fresh before current flows (set from `Battery::requirements` by the
    /// bridge). Empty means the driver declared nothing, and the supervisor then allows no current at all.
    pub required: &'static [Requirement],
    /// Pack-specific values for people (see [`crate::extras`]): never safety state.
    pub extras: Extras,
    /// The last frame from the pack that decoded without error (the stale-data rule runs on this).
    pub last_valid_frame_at: Option<Instant>,
}

impl BatteryModel {
    pub fn new(design: PackDesign) -> Self {
        BatteryModel {
            design,
            pack_voltage: None,
            current: None,
            soc: None,
            soh: None,
            temperature_min: None,
            temperature_max: None,
            total_energy: None,
            remaining_energy: None,
            max_charge_power: None,
            max_discharge_power: None,
            bms_charge_current: None,
            bms_discharge_current: None,
            cells: Cells::default(),
            contactors: Contactors::Unknown,
            bms_status: BmsStatus::Unknown,
            faults: BmsFaults::empty(),
            requests: BmsRequests::empty(),
            warnings: BmsWarnings::empty(),
            status_at: None,
            design_status: DesignStatus::Pending,
            required: &[],
            extras: Extras::default(),
            last_valid_frame_at: None,
        }
    }

    /// The model with the slots of a driver's pack-specific values (`Battery::extras`).
    pub fn with_extras(mut self, table: &'static [ExtraDescriptor]) -> Self {
        self.extras = Extras::new(table);
        self
    }

    /// Battery power from voltage and current (positive = charging); `None` until both are known.
    pub fn power(&self) -> Option<Watts> {
        Some(crate::units::power(self.pack_voltage?.value, self.current?.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_min_max_deviation_and_balancing() {
        let mut c = Cells::default();
        assert_eq!(c.min(), None);
        assert_eq!(c.deviation(), None);
        c.set_voltages(Instant::from_millis(5), &[MilliVolts(3900), MilliVolts(3850), MilliVolts(3950)]);
        assert_eq!(c.min(), Some((1, MilliVolts(3850))));
        assert_eq!(c.max(), Some((2, MilliVolts(3950))));
        assert_eq!(c.deviation(), Some(MilliVolts(100)));
        c.set_balancing(2, true);
        c.set_balancing(191, true);
        c.set_balancing(192, true); // out of range: ignored
        assert!(c.is_balancing(2) && c.is_balancing(191) && !c.is_balancing(1));
        assert_eq!(c.balancing_count(), 2);
    }
}
