//! Inverter protocols: one per protocol, each in its own file, all listed in one registry.
//!
//! A protocol answers the inverter as the battery it expects. It sees the pack only through an [`InverterView`],
//! which the bridge builds from the battery model *and the supervisor's output*: reported (scaled) SOC and energy,
//! and current limits that already include every safety rule. There is no way for a protocol to reach the raw
//! model's SOC or the BMS's own limits, so "what the inverter is told passes through the supervisor" holds by
//! construction.

pub mod byd_can;
pub mod byd_modbus;
pub mod foxess_can;
pub mod growatt_hv_can;
mod lfp;
pub mod modbus;
pub mod pylon_can;
pub mod pylon_rs485;
pub mod sofar_can;
pub mod solax_can;
mod word;

use crate::can::{CanFrame, DecodeError, FrameUse};
use crate::energy::EnergyCounters;
use crate::events::EventKind;
use crate::model::{BatteryModel, Chemistry, PackDesign};
use crate::options::Options;
use crate::supervisor::{Alarms, Output, TemperatureLimits};
use crate::time::{Duration, Instant};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, WattHours, Watts};

/// Read-only view of the pack as the inverter may be told it.
#[derive(Copy, Clone, Debug)]
pub struct InverterView<'a> {
    model: &'a BatteryModel,
    out: &'a Output,
    energy: Option<&'a EnergyCounters>,
}

impl<'a> InverterView<'a> {
    /// Built by the bridge (and by tests) from the model and the supervisor's output for the same instant.
    pub fn new(model: &'a BatteryModel, out: &'a Output) -> Self {
        InverterView { model, out, energy: None }
    }

    /// Adds the bridge's lifetime energy counters (without them the view has none to report).
    pub fn with_energy(self, energy: &'a EnergyCounters) -> Self {
        InverterView { energy: Some(energy), ..self }
    }

    /// Reported SOC (after the user's SOC window); `None` until the pack has reported one.
    pub fn soc(&self) -> Option<BasisPoints> {
        self.out.soc
    }
    pub fn soh(&self) -> Option<BasisPoints> {
        self.model.soh.map(|r| r.value)
    }
    pub fn voltage(&self) -> Option<DeciVolts> {
        self.model.pack_voltage.map(|r| r.value)
    }
    /// Positive = charging.
    pub fn current(&self) -> Option<DeciAmps> {
        self.model.current.map(|r| r.value)
    }
    pub fn power(&self) -> Option<Watts> {
        self.model.power()
    }
    pub fn temperature_min(&self) -> Option<DeciCelsius> {
        self.model.temperature_min.map(|r| r.value)
    }
    pub fn temperature_max(&self) -> Option<DeciCelsius> {
        self.model.temperature_max.map(|r| r.value)
    }
    /// Lowest cell (index from 0, voltage).
    pub fn cell_min(&self) -> Option<(usize, MilliVolts)> {
        self.model.cells.min()
    }
    /// Highest cell (index from 0, voltage).
    pub fn cell_max(&self) -> Option<(usize, MilliVolts)> {
        self.model.cells.max()
    }
    pub fn cell_voltages(&self) -> &'a [MilliVolts] {
        self.model.cells.voltages()
    }
    /// The pack's design cell voltage window (lowest, highest): static design values, not readings.
    pub fn cell_voltage_range(&self) -> (MilliVolts, MilliVolts) {
        (self.model.design.min_cell_voltage, self.model.design.max_cell_voltage)
    }
    pub fn cells_in_series(&self) -> u16 {
        self.model.design.cells
    }
    pub fn chemistry(&self) -> Chemistry {
        self.model.design.chemistry
    }
    /// Usable energy when full, scaled to the SOC window.
    pub fn total_energy(&self) -> Option<WattHours> {
        self.out.total_energy
    }
    /// Energy left, scaled to the SOC window.
    pub fn remaining_energy(&self) -> Option<WattHours> {
        self.out.remaining_energy
    }
    /// How much the inverter may charge with (never negative; 0 when charging is not allowed).
    pub fn charge_current_limit(&self) -> DeciAmps {
        self.out.charge_current_limit
    }
    /// How much the inverter may discharge with (never negative; 0 when discharging is not allowed).
    pub fn discharge_current_limit(&self) -> DeciAmps {
        self.out.discharge_current_limit
    }
    pub fn charge_power_limit(&self) -> Watts {
        self.out.charge_power_limit
    }
    pub fn discharge_power_limit(&self) -> Watts {
        self.out.discharge_power_limit
    }
    /// The voltage the inverter must not charge above.
    pub fn max_charge_voltage(&self) -> DeciVolts {
        self.out.max_charge_voltage
    }
    /// The voltage the inverter must not discharge below.
    pub fn min_discharge_voltage(&self) -> DeciVolts {
        self.out.min_discharge_voltage
    }
    /// Protection-level conditions (each also forces a limit to 0).
    pub fn alarms(&self) -> Alarms {
        self.out.alarms
    }
    /// Warning-level conditions (limits may be derated).
    pub fn warnings(&self) -> Alarms {
        self.out.warnings
    }
    /// The temperature bounds the supervisor enforces (the user's configured ones).
    pub fn temperature_limits(&self) -> TemperatureLimits {
        self.out.temperature_limits
    }
    /// Energy charged into the pack since the counters started; `None` when the view carries no counters.
    pub fn charged_energy(&self) -> Option<WattHours> {
        self.energy.map(|e| e.charged())
    }
    /// Energy discharged from the pack since the counters started; `None` when the view carries no counters.
    pub fn discharged_energy(&self) -> Option<WattHours> {
        self.energy.map(|e| e.discharged())
    }
    /// False when the battery data is stale or missing: protocols that have a "battery ready" flag clear it.
    pub fn data_valid(&self) -> bool {
        self.out.data_valid
    }
}

/// The contract every CAN inverter protocol keeps.
///
/// Requests are recorded in `handle_frame`; answers are encoded in `poll_transmit` from the view at that
/// instant, so an answer never carries values older than the request.
pub trait CanInverter {
    /// Takes one frame from the inverter's bus. Frames of other devices are `Ok(Ignored)`.
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError>;

    /// The next frame to send to the inverter at `now`: answers to requests first, then cyclic frames.
    #[must_use]
    fn poll_transmit(&mut self, now: Instant, view: &InverterView<'_>) -> Option<CanFrame>;

    /// When `poll_transmit` next has something to send.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// The last time the inverter was heard (any frame of this protocol from it).
    fn last_heard(&self) -> Option<Instant>;

    /// Whether the inverter allows the battery's contactors closed: `None` when the protocol has no such notion,
    /// or the inverter has not said yet (the supervisor then does not wait for it).
    fn contactor_permission(&self) -> Option<bool> {
        None
    }

    /// Lets time pass for a protocol whose state changes without input (SolaX's 2 s poll timeout). The bridge
    /// calls it before reading [`Self::contactor_permission`].
    fn handle_timeout(&mut self, _now: Instant) {}

    /// The DC bus voltage the inverter reports measuring, with when it arrived, for the precharge check; `None`
    /// when the protocol carries none.
    fn bus_voltage(&self) -> Option<(Instant, DeciVolts)> {
        None
    }
}

/// The stable identifier of each inverter protocol.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum InverterKind {
    PylonCan,
    PylonRs485,
    BydModbus,
    BydCan,
    SolaxCan,
    FoxessCan,
    FerroampCan,
    SolxpowCan,
    SofarCan,
    GrowattHvCan,
}

impl core::fmt::Display for InverterKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.info().name)
    }
}

/// How a protocol reaches the inverter.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// CAN frames (`CanInverter`).
    Can,
    /// A byte stream on an RS485 port (`SerialInverter`).
    Serial,
}

/// What `dbe list` and the config layer know about a protocol.
#[derive(Copy, Clone, Debug)]
pub struct InverterInfo {
    pub kind: InverterKind,
    /// The name used in configs and on the command line, e.g. `pylon-can`.
    pub name: &'static str,
    pub title: &'static str,
    pub supports: &'static str,
    pub transport: Transport,
    /// How long the inverter may stay silent before its link counts as lost. `None` for protocols where the
    /// battery only broadcasts and the inverter never speaks.
    pub link_timeout: Option<Duration>,
}

impl InverterKind {
    /// Whether the protocol carries the inverter's DC bus voltage (`CanInverter::bus_voltage`), the input of the
    /// contactor sequence's precharge check.
    pub fn reports_bus_voltage(self) -> bool {
        matches!(self, InverterKind::BydCan)
    }
}

/// The only place an inverter protocol is added.
pub const INVERTERS: &[InverterInfo] = &[
    InverterInfo {
        kind: InverterKind::PylonCan,
        name: "pylon-can",
        title: "Pylontech high-voltage CAN (Pylon HV, 0x4200 requests)",
        supports: pylon_can::SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(pylon_can::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::PylonRs485,
        name: "pylontech-rs485",
        title: "Pylontech low-voltage RS485 (~...\\r ASCII-hex frames, US2000/US3000 stacks)",
        supports: pylon_rs485::SUPPORTS,
        transport: Transport::Serial,
        link_timeout: Some(pylon_rs485::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::BydModbus,
        name: "byd-modbus",
        title: "BYD battery over Modbus RTU (Fronius Gen24 and others)",
        supports: byd_modbus::SUPPORTS,
        transport: Transport::Serial,
        link_timeout: Some(byd_modbus::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::BydCan,
        name: "byd-can",
        title: "BYD Battery-Box Premium HVS over CAN (11-bit; Deye, GoodWe, Solis, Sungrow, Afore, Ingeteam)",
        supports: byd_can::SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(byd_can::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::SolaxCan,
        name: "solax-can",
        title: "SolaX Triple Power over CAN (29-bit 0x1871 polls, inverter-controlled contactors)",
        supports: solax_can::SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(solax_can::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::FoxessCan,
        name: "foxess-can",
        title: "FoxESS HV2600/ECS4100 over CAN (29-bit 0x1871 polls; FoxESS H1, H3, KH, KP)",
        supports: foxess_can::SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(foxess_can::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::FerroampCan,
        name: "ferroamp-can",
        title: "Ferroamp: Pylon HV CAN preset (little-endian, 30k offset, answers on 0x4211.., LFP cell voltages)",
        supports: pylon_can::FERROAMP_SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(pylon_can::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::SolxpowCan,
        name: "solxpow-can",
        title: "Solxpow: Pylon HV CAN preset (little-endian, plain currents, cutoffs 2 V inside the pack's)",
        supports: pylon_can::SOLXPOW_SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(pylon_can::LINK_TIMEOUT),
    },
    InverterInfo {
        kind: InverterKind::SofarCan,
        name: "sofar-can",
        title: "Sofar BMS (extended) over CAN (29-bit, battery ID in the ids; Sofar HYD)",
        supports: sofar_can::SUPPORTS,
        transport: Transport::Can,
        // Broadcast-only: the inverter's inquiries are too sparse for a deadline (see sofar_can's module doc).
        link_timeout: None,
    },
    InverterInfo {
        kind: InverterKind::GrowattHvCan,
        name: "growatt-hv-can",
        title:
            "Growatt HV (ARK) battery over CAN (29-bit, after the inverter's 0x3010/0x3020/0x3030; SPH/SPA TL3 BH-UP)",
        supports: growatt_hv_can::SUPPORTS,
        transport: Transport::Can,
        link_timeout: Some(growatt_hv_can::LINK_TIMEOUT),
    },
];

impl InverterKind {
    pub fn info(self) -> &'static InverterInfo {
        INVERTERS.iter().find(|i| i.kind == self).expect("every kind is in INVERTERS")
    }

    pub fn from_name(name: &str) -> Option<InverterKind> {
        INVERTERS.iter().find(|i| i.name == name).map(|i| i.kind)
    }

    /// Whether the protocol can carry this pack's design values truthfully; the config layer refuses the
    /// combination otherwise (today only Pylontech RS485 has such a bound: see [`pylon_rs485::check_pack`]).
    pub fn check_pack(self, design: &PackDesign) -> Result<(), PackNotCarried> {
        match self {
            InverterKind::PylonRs485 => pylon_rs485::check_pack(design),
            // 0.1 V in 16 bits (6553.5 V): every pack fits.
            // (SolaX's battery type must fit the pack too, but that depends on its options: see
            // `solax_can::check_pack`, which the config layer calls.)
            // (FoxESS's module count must fit too: `foxess_can::check_pack`, also called by the config layer.)
            InverterKind::PylonCan
            | InverterKind::BydModbus
            | InverterKind::BydCan
            | InverterKind::SolaxCan
            | InverterKind::FoxessCan
            | InverterKind::FerroampCan
            | InverterKind::SolxpowCan
            | InverterKind::SofarCan
            | InverterKind::GrowattHvCan => Ok(()),
        }
    }
}

/// A pack whose design voltage the protocol's fields cannot hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{protocol} carries pack voltages only up to {limit} (16-bit millivolts); this pack's design maximum is {design_max}"
)]
pub struct PackNotCarried {
    /// The protocol's config name (`inverter.protocol`).
    pub protocol: &'static str,
    pub design_max: DeciVolts,
    /// The highest design voltage the protocol carries.
    pub limit: DeciVolts,
}

/// A protocol with its options, as chosen in the config.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InverterConfig {
    PylonCan(pylon_can::PylonCanOptions),
    PylonRs485(pylon_rs485::PylonRs485Options),
    BydModbus(byd_modbus::BydModbusOptions),
    BydCan(byd_can::BydCanOptions),
    SolaxCan(solax_can::SolaxCanOptions),
    FoxessCan(foxess_can::FoxessCanOptions),
    /// Pylon HV with Ferroamp's fixed settings ([`pylon_can::Preset::Ferroamp`]).
    FerroampCan(pylon_can::PresetOptions),
    /// Pylon HV with Solxpow's fixed settings ([`pylon_can::Preset::Solxpow`]).
    SolxpowCan(pylon_can::PresetOptions),
    SofarCan(sofar_can::SofarCanOptions),
    GrowattHvCan(growatt_hv_can::GrowattHvCanOptions),
}

impl InverterConfig {
    /// The protocol with its default options.
    pub fn default_for(kind: InverterKind) -> Self {
        match kind {
            InverterKind::PylonCan => InverterConfig::PylonCan(Default::default()),
            InverterKind::PylonRs485 => InverterConfig::PylonRs485(Default::default()),
            InverterKind::BydModbus => InverterConfig::BydModbus(Default::default()),
            InverterKind::BydCan => InverterConfig::BydCan(Default::default()),
            InverterKind::SolaxCan => InverterConfig::SolaxCan(Default::default()),
            InverterKind::FoxessCan => InverterConfig::FoxessCan(Default::default()),
            InverterKind::FerroampCan => InverterConfig::FerroampCan(Default::default()),
            InverterKind::SolxpowCan => InverterConfig::SolxpowCan(Default::default()),
            InverterKind::SofarCan => InverterConfig::SofarCan(Default::default()),
            InverterKind::GrowattHvCan => InverterConfig::GrowattHvCan(Default::default()),
        }
    }

    pub fn kind(&self) -> InverterKind {
        match self {
            InverterConfig::PylonCan(_) => InverterKind::PylonCan,
            InverterConfig::PylonRs485(_) => InverterKind::PylonRs485,
            InverterConfig::BydModbus(_) => InverterKind::BydModbus,
            InverterConfig::BydCan(_) => InverterKind::BydCan,
            InverterConfig::SolaxCan(_) => InverterKind::SolaxCan,
            InverterConfig::FoxessCan(_) => InverterKind::FoxessCan,
            InverterConfig::FerroampCan(_) => InverterKind::FerroampCan,
            InverterConfig::SolxpowCan(_) => InverterKind::SolxpowCan,
            InverterConfig::SofarCan(_) => InverterKind::SofarCan,
            InverterConfig::GrowattHvCan(_) => InverterKind::GrowattHvCan,
        }
    }

    /// The protocol's options with their table of settings (`[inverter.<protocol>]` in the config file).
    pub fn options(&self) -> &dyn Options {
        match self {
            InverterConfig::PylonCan(o) => o,
            InverterConfig::PylonRs485(o) => o,
            InverterConfig::BydModbus(o) => o,
            InverterConfig::BydCan(o) => o,
            InverterConfig::SolaxCan(o) => o,
            InverterConfig::FoxessCan(o) => o,
            InverterConfig::FerroampCan(o) | InverterConfig::SolxpowCan(o) => o,
            InverterConfig::SofarCan(o) => o,
            InverterConfig::GrowattHvCan(o) => o,
        }
    }

    pub fn options_mut(&mut self) -> &mut dyn Options {
        match self {
            InverterConfig::PylonCan(o) => o,
            InverterConfig::PylonRs485(o) => o,
            InverterConfig::BydModbus(o) => o,
            InverterConfig::BydCan(o) => o,
            InverterConfig::SolaxCan(o) => o,
            InverterConfig::FoxessCan(o) => o,
            InverterConfig::FerroampCan(o) | InverterConfig::SolxpowCan(o) => o,
            InverterConfig::SofarCan(o) => o,
            InverterConfig::GrowattHvCan(o) => o,
        }
    }

    /// Sets the half-duplex turnaround of a byte-stream protocol (the config's `[rs485]`, shared by every serial
    /// protocol); a CAN protocol has none.
    pub fn set_turnaround(&mut self, turnaround: Duration) {
        match self {
            InverterConfig::PylonRs485(o) => o.turnaround = turnaround,
            InverterConfig::BydModbus(o) => o.turnaround = turnaround,
            InverterConfig::PylonCan(_)
            | InverterConfig::BydCan(_)
            | InverterConfig::SolaxCan(_)
            | InverterConfig::FoxessCan(_)
            | InverterConfig::FerroampCan(_)
            | InverterConfig::SolxpowCan(_)
            | InverterConfig::SofarCan(_)
            | InverterConfig::GrowattHvCan(_) => {}
        }
    }
}

/// Any inverter protocol, chosen at run time. CAN protocols are driven through [`AnyInverter::as_can`], byte-
/// stream protocols through [`AnyInverter::as_serial`]; the other returns `None`.
// The core has no heap and a bridge owns exactly one of these, so boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum AnyInverter {
    PylonCan(pylon_can::PylonCan),
    PylonRs485(pylon_rs485::PylonRs485),
    BydModbus(byd_modbus::BydModbus),
    BydCan(byd_can::BydCan),
    SolaxCan(solax_can::SolaxCan),
    FoxessCan(foxess_can::FoxessCan),
    SofarCan(sofar_can::SofarCan),
    GrowattHvCan(growatt_hv_can::GrowattHvCan),
}

impl AnyInverter {
    pub fn new(config: InverterConfig) -> Self {
        match config {
            InverterConfig::PylonCan(o) => AnyInverter::PylonCan(pylon_can::PylonCan::new(o)),
            InverterConfig::PylonRs485(o) => AnyInverter::PylonRs485(pylon_rs485::PylonRs485::new(o)),
            InverterConfig::BydModbus(o) => AnyInverter::BydModbus(byd_modbus::BydModbus::new(o)),
            InverterConfig::BydCan(o) => AnyInverter::BydCan(byd_can::BydCan::new(o)),
            InverterConfig::SolaxCan(o) => AnyInverter::SolaxCan(solax_can::SolaxCan::new(o)),
            InverterConfig::FoxessCan(o) => AnyInverter::FoxessCan(foxess_can::FoxessCan::new(o)),
            InverterConfig::FerroampCan(_) => {
                AnyInverter::PylonCan(pylon_can::PylonCan::with_preset(pylon_can::Preset::Ferroamp))
            }
            InverterConfig::SolxpowCan(_) => {
                AnyInverter::PylonCan(pylon_can::PylonCan::with_preset(pylon_can::Preset::Solxpow))
            }
            InverterConfig::SofarCan(o) => AnyInverter::SofarCan(sofar_can::SofarCan::new(o)),
            InverterConfig::GrowattHvCan(o) => AnyInverter::GrowattHvCan(growatt_hv_can::GrowattHvCan::new(o)),
        }
    }

    pub fn kind(&self) -> InverterKind {
        match self {
            AnyInverter::PylonCan(p) => p.preset().kind(),
            AnyInverter::PylonRs485(_) => InverterKind::PylonRs485,
            AnyInverter::BydModbus(_) => InverterKind::BydModbus,
            AnyInverter::BydCan(_) => InverterKind::BydCan,
            AnyInverter::SolaxCan(_) => InverterKind::SolaxCan,
            AnyInverter::FoxessCan(_) => InverterKind::FoxessCan,
            AnyInverter::SofarCan(_) => InverterKind::SofarCan,
            AnyInverter::GrowattHvCan(_) => InverterKind::GrowattHvCan,
        }
    }

    pub fn as_can(&mut self) -> Option<&mut dyn CanInverter> {
        match self {
            AnyInverter::PylonCan(p) => Some(p),
            AnyInverter::BydCan(p) => Some(p),
            AnyInverter::SolaxCan(p) => Some(p),
            AnyInverter::FoxessCan(p) => Some(p),
            AnyInverter::SofarCan(p) => Some(p),
            AnyInverter::GrowattHvCan(p) => Some(p),
            AnyInverter::PylonRs485(_) | AnyInverter::BydModbus(_) => None,
        }
    }

    pub fn as_serial(&mut self) -> Option<&mut dyn SerialInverter> {
        match self {
            AnyInverter::PylonRs485(p) => Some(p),
            AnyInverter::BydModbus(p) => Some(p),
            AnyInverter::PylonCan(_)
            | AnyInverter::BydCan(_)
            | AnyInverter::SolaxCan(_)
            | AnyInverter::FoxessCan(_)
            | AnyInverter::SofarCan(_)
            | AnyInverter::GrowattHvCan(_) => None,
        }
    }

    /// When the protocol next needs to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            AnyInverter::PylonCan(p) => p.poll_timeout(),
            AnyInverter::PylonRs485(p) => p.poll_timeout(),
            AnyInverter::BydModbus(p) => p.poll_timeout(),
            AnyInverter::BydCan(p) => p.poll_timeout(),
            AnyInverter::SolaxCan(p) => p.poll_timeout(),
            AnyInverter::FoxessCan(p) => p.poll_timeout(),
            AnyInverter::SofarCan(p) => p.poll_timeout(),
            AnyInverter::GrowattHvCan(p) => p.poll_timeout(),
        }
    }

    /// Whether the inverter allows the contactors closed (see [`CanInverter::contactor_permission`]).
    pub fn contactor_permission(&self) -> Option<bool> {
        match self {
            AnyInverter::PylonCan(p) => p.contactor_permission(),
            AnyInverter::SolaxCan(p) => p.contactor_permission(),
            AnyInverter::BydCan(p) => p.contactor_permission(),
            AnyInverter::FoxessCan(p) => p.contactor_permission(),
            AnyInverter::SofarCan(p) => p.contactor_permission(),
            AnyInverter::GrowattHvCan(p) => p.contactor_permission(),
            AnyInverter::PylonRs485(_) | AnyInverter::BydModbus(_) => None,
        }
    }

    /// Lets time pass for a CAN protocol (see [`CanInverter::handle_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.as_can() {
            p.handle_timeout(now);
        }
    }

    /// The DC bus voltage the inverter reports (see [`CanInverter::bus_voltage`]).
    pub fn bus_voltage(&self) -> Option<(Instant, DeciVolts)> {
        match self {
            AnyInverter::BydCan(p) => p.bus_voltage(),
            AnyInverter::PylonCan(_)
            | AnyInverter::SolaxCan(_)
            | AnyInverter::FoxessCan(_)
            | AnyInverter::SofarCan(_)
            | AnyInverter::GrowattHvCan(_)
            | AnyInverter::PylonRs485(_)
            | AnyInverter::BydModbus(_) => None,
        }
    }

    /// The last time the inverter was heard.
    pub fn last_heard(&self) -> Option<Instant> {
        match self {
            AnyInverter::PylonCan(p) => p.last_heard(),
            AnyInverter::PylonRs485(p) => p.last_heard(),
            AnyInverter::BydModbus(p) => p.last_heard(),
            AnyInverter::BydCan(p) => p.last_heard(),
            AnyInverter::SolaxCan(p) => p.last_heard(),
            AnyInverter::FoxessCan(p) => p.last_heard(),
            AnyInverter::SofarCan(p) => p.last_heard(),
            AnyInverter::GrowattHvCan(p) => p.last_heard(),
        }
    }

    /// The next thing the protocol noticed that the event log should hold, with its data (drained by the bridge).
    pub fn poll_event(&mut self) -> Option<(EventKind, i32)> {
        match self {
            AnyInverter::BydModbus(p) => p.poll_event(),
            AnyInverter::PylonCan(_)
            | AnyInverter::PylonRs485(_)
            | AnyInverter::BydCan(_)
            | AnyInverter::SolaxCan(_)
            | AnyInverter::FoxessCan(_)
            | AnyInverter::SofarCan(_)
            | AnyInverter::GrowattHvCan(_) => None,
        }
    }

    /// Tells a byte-stream protocol that the line has been quiet for an inter-frame gap (Modbus RTU delimits
    /// frames by silence).
    pub fn handle_silence(&mut self, now: Instant) {
        if let AnyInverter::BydModbus(p) = self {
            p.handle_silence(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_each_kind_once_with_unique_names() {
        for (i, a) in INVERTERS.iter().enumerate() {
            assert_eq!(InverterKind::from_name(a.name), Some(a.kind));
            assert_eq!(InverterConfig::default_for(a.kind).kind(), a.kind);
            let config = InverterConfig::default_for(a.kind);
            assert_eq!(crate::options::check_all(config.options()), Ok(()), "{}", a.name);
            let names: std::vec::Vec<_> = crate::options::infos(config.options()).map(|i| i.name).collect();
            for (i, n) in names.iter().enumerate() {
                assert!(!names[i + 1..].contains(n), "{}: {n} twice", a.name);
            }
            for b in &INVERTERS[i + 1..] {
                assert_ne!(a.kind, b.kind);
                assert_ne!(a.name, b.name);
            }
        }
    }
}

/// The caller's buffer cannot hold the reply (byte-stream protocols write into a buffer the caller owns).
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reply needs {needed} bytes, the buffer holds {capacity}")]
pub struct BufferTooSmall {
    pub needed: usize,
    pub capacity: usize,
}

/// The contract of byte-stream (RS485) inverter protocols: the inverter polls, the battery answers.
///
/// Bytes arrive in whatever pieces the serial port delivers; the protocol reassembles frames itself, resyncs on
/// garbage, and never lets a bad frame swallow the next good one.
pub trait SerialInverter {
    /// Takes bytes received from the inverter.
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]);

    /// Writes the next reply into `buf`, returning its length (0: nothing to send now).
    fn poll_transmit(&mut self, now: Instant, view: &InverterView<'_>, buf: &mut [u8])
        -> Result<usize, BufferTooSmall>;

    /// When `poll_transmit` next has something to send (e.g. after the half-duplex turnaround delay).
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// The last time a valid request addressed to us was received.
    fn last_heard(&self) -> Option<Instant>;
}
