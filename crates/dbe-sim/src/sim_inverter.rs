//! Any simulated inverter behind one face, so a world, the demo and the daemon's `sim:` ports can pair the
//! simulated pack with whichever protocol the bridge speaks.
//!
//! The RS485 masters only poll; this wrapper gives them the household demand and the current it draws (the
//! demand at the told voltage, clamped to the told limits), as the Pylon CAN simulator does itself.

use dbe_core::inverter::pylon_can::Preset;
use dbe_core::inverter::InverterConfig;
use dbe_core::units::{current_for_power, BasisPoints, DeciAmps, DeciVolts, Watts};
use dbe_core::{CanFrame, Instant};

use crate::byd_inverter::{BydInverter, BydInverterParams, BydInverterState};
use crate::foxess_inverter::{FoxessInverter, FoxessInverterParams, FoxessInverterState};
use crate::growatt_inverter::{GrowattInverter, GrowattInverterParams, GrowattInverterState};
use crate::modbus_master::{self, ModbusMaster};
use crate::pylon_inverter::{InverterState, PylonInverter, PylonInverterParams};
use crate::pylon_rs485_master::{self, PylonRs485Master};
use crate::sofar_inverter::{SofarInverter, SofarInverterParams, SofarInverterState};
use crate::solax_inverter::{SolaxInverter, SolaxInverterParams, SolaxInverterState};

/// What every simulated inverter decoded from the battery, in common terms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub voltage: DeciVolts,
    pub soc: BasisPoints,
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
}

/// Whether the simulated inverter is getting answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SimState {
    Waiting,
    Running,
    Faulted,
}

pub enum SimInverter {
    PylonCan(PylonInverter),
    PylonRs485 { master: PylonRs485Master, demand: Watts },
    Modbus { master: ModbusMaster, demand: Watts },
    BydCan(BydInverter),
    SolaxCan(SolaxInverter),
    FoxessCan(FoxessInverter),
    SofarCan(SofarInverter),
    GrowattHvCan(GrowattInverter),
}

impl SimInverter {
    /// The simulator that speaks `config`'s protocol with its options.
    /// A Pylon CAN inverter polling every `poll` instead of its real 1 s (benchmarks: enough answers to time in a
    /// short run); `None` for any other protocol, which keeps its real cadence.
    pub fn pylon_polling_every(
        options: dbe_core::inverter::pylon_can::PylonCanOptions,
        poll: dbe_core::Duration,
        now: Instant,
    ) -> Self {
        SimInverter::PylonCan(PylonInverter::new(
            PylonInverterParams { options, poll_interval: poll, ..Default::default() },
            now,
        ))
    }

    pub fn for_config(config: &InverterConfig, now: Instant) -> Self {
        match config {
            InverterConfig::PylonCan(o) => SimInverter::PylonCan(PylonInverter::new(
                PylonInverterParams { options: *o, ..Default::default() },
                now,
            )),
            InverterConfig::PylonRs485(o) => {
                SimInverter::PylonRs485 { master: PylonRs485Master::new(o.address, o.modules), demand: Watts(0) }
            }
            InverterConfig::BydModbus(o) => {
                SimInverter::Modbus { master: ModbusMaster::new(o.slave), demand: Watts(0) }
            }
            InverterConfig::BydCan(_) => SimInverter::BydCan(BydInverter::new(BydInverterParams::default(), now)),
            InverterConfig::SolaxCan(_) => {
                SimInverter::SolaxCan(SolaxInverter::new(SolaxInverterParams::default(), now))
            }
            InverterConfig::FoxessCan(_) => {
                SimInverter::FoxessCan(FoxessInverter::new(FoxessInverterParams::default(), now))
            }
            InverterConfig::FerroampCan(_) => {
                SimInverter::PylonCan(PylonInverter::new(PylonInverterParams::for_preset(Preset::Ferroamp), now))
            }
            InverterConfig::SolxpowCan(_) => {
                SimInverter::PylonCan(PylonInverter::new(PylonInverterParams::for_preset(Preset::Solxpow), now))
            }
            InverterConfig::SofarCan(o) => SimInverter::SofarCan(SofarInverter::new(
                SofarInverterParams { battery_id: o.battery_id, ..Default::default() },
                now,
            )),
            InverterConfig::GrowattHvCan(_) => {
                SimInverter::GrowattHvCan(GrowattInverter::new(GrowattInverterParams::default(), now))
            }
        }
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        match self {
            SimInverter::PylonCan(p) => p.handle_frame(now, frame),
            SimInverter::BydCan(p) => p.handle_frame(now, frame),
            SimInverter::SolaxCan(p) => p.handle_frame(now, frame),
            SimInverter::FoxessCan(p) => p.handle_frame(now, frame),
            SimInverter::SofarCan(p) => p.handle_frame(now, frame),
            SimInverter::GrowattHvCan(p) => p.handle_frame(now, frame),
            SimInverter::PylonRs485 { .. } | SimInverter::Modbus { .. } => {}
        }
    }

    pub fn poll_frame(&mut self, now: Instant) -> Option<CanFrame> {
        match self {
            SimInverter::PylonCan(p) => p.poll_transmit(now),
            SimInverter::BydCan(p) => p.poll_transmit(now),
            SimInverter::SolaxCan(p) => p.poll_transmit(now),
            SimInverter::FoxessCan(p) => p.poll_transmit(now),
            SimInverter::SofarCan(p) => p.poll_transmit(now),
            SimInverter::GrowattHvCan(p) => p.poll_transmit(now),
            SimInverter::PylonRs485 { .. } | SimInverter::Modbus { .. } => None,
        }
    }

    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        match self {
            SimInverter::PylonRs485 { master, .. } => master.handle_bytes(now, bytes),
            SimInverter::Modbus { master, .. } => master.handle_bytes(now, bytes),
            SimInverter::PylonCan(_)
            | SimInverter::BydCan(_)
            | SimInverter::SolaxCan(_)
            | SimInverter::FoxessCan(_)
            | SimInverter::SofarCan(_)
            | SimInverter::GrowattHvCan(_) => {}
        }
    }

    /// The next request bytes, written into `buf` (0: none due).
    pub fn poll_bytes(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        match self {
            SimInverter::PylonRs485 { master, .. } => master.poll_transmit(now, buf),
            SimInverter::Modbus { master, .. } => master.poll_transmit(now, buf),
            SimInverter::PylonCan(_)
            | SimInverter::BydCan(_)
            | SimInverter::SolaxCan(_)
            | SimInverter::FoxessCan(_)
            | SimInverter::SofarCan(_)
            | SimInverter::GrowattHvCan(_) => 0,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            SimInverter::PylonRs485 { master, .. } => master.handle_timeout(now),
            SimInverter::Modbus { master, .. } => master.handle_timeout(now),
            SimInverter::PylonCan(_)
            | SimInverter::BydCan(_)
            | SimInverter::SolaxCan(_)
            | SimInverter::FoxessCan(_)
            | SimInverter::SofarCan(_)
            | SimInverter::GrowattHvCan(_) => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            SimInverter::PylonCan(p) => p.poll_timeout(),
            SimInverter::PylonRs485 { master, .. } => master.poll_timeout(),
            SimInverter::Modbus { master, .. } => master.poll_timeout(),
            SimInverter::BydCan(p) => p.poll_timeout(),
            SimInverter::SolaxCan(p) => p.poll_timeout(),
            SimInverter::FoxessCan(p) => p.poll_timeout(),
            SimInverter::SofarCan(p) => p.poll_timeout(),
            SimInverter::GrowattHvCan(p) => p.poll_timeout(),
        }
    }

    pub fn is_serial(&self) -> bool {
        matches!(self, SimInverter::PylonRs485 { .. } | SimInverter::Modbus { .. })
    }

    pub fn summary(&self) -> Option<Summary> {
        match self {
            SimInverter::PylonCan(p) => p.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: if t.charge_forbidden { DeciAmps(0) } else { t.charge_limit },
                discharge_limit: if t.discharge_forbidden { DeciAmps(0) } else { t.discharge_limit },
            }),
            SimInverter::PylonRs485 { master, .. } => master.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: if t.charge_enabled { t.charge_limit } else { DeciAmps(0) },
                discharge_limit: if t.discharge_enabled { t.discharge_limit } else { DeciAmps(0) },
            }),
            SimInverter::Modbus { master, .. } => master.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: t.charge_limit,
                discharge_limit: t.discharge_limit,
            }),
            SimInverter::BydCan(p) => p.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: t.charge_limit,
                discharge_limit: t.discharge_limit,
            }),
            SimInverter::SolaxCan(p) => p.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: t.charge_limit,
                discharge_limit: t.discharge_limit,
            }),
            SimInverter::FoxessCan(p) => p.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: p.charge_limit(),
                discharge_limit: t.discharge_limit,
            }),
            SimInverter::SofarCan(p) => p.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: p.charge_limit(),
                discharge_limit: p.discharge_limit(),
            }),
            SimInverter::GrowattHvCan(p) => p.told().map(|t| Summary {
                voltage: t.voltage,
                soc: t.soc,
                charge_limit: p.limits().0,
                discharge_limit: p.limits().1,
            }),
        }
    }

    pub fn state(&self) -> SimState {
        match self {
            SimInverter::PylonCan(p) => match p.state() {
                InverterState::Waiting => SimState::Waiting,
                InverterState::Running => SimState::Running,
                InverterState::Faulted => SimState::Faulted,
            },
            SimInverter::PylonRs485 { master, .. } => match master.state() {
                pylon_rs485_master::State::Waiting => SimState::Waiting,
                pylon_rs485_master::State::Running => SimState::Running,
                pylon_rs485_master::State::Faulted => SimState::Faulted,
            },
            SimInverter::Modbus { master, .. } => match master.state() {
                modbus_master::State::Waiting => SimState::Waiting,
                modbus_master::State::Running => SimState::Running,
                modbus_master::State::Faulted => SimState::Faulted,
            },
            SimInverter::BydCan(p) => match p.state() {
                BydInverterState::Waiting => SimState::Waiting,
                BydInverterState::Running => SimState::Running,
                BydInverterState::Faulted => SimState::Faulted,
            },
            SimInverter::SolaxCan(p) => match p.state() {
                SolaxInverterState::Waiting | SolaxInverterState::Checking => SimState::Waiting,
                SolaxInverterState::Running => SimState::Running,
                SolaxInverterState::Faulted => SimState::Faulted,
            },
            SimInverter::FoxessCan(p) => match p.state() {
                FoxessInverterState::Waiting => SimState::Waiting,
                FoxessInverterState::Running => SimState::Running,
                FoxessInverterState::Faulted => SimState::Faulted,
            },
            SimInverter::SofarCan(p) => match p.state() {
                SofarInverterState::Waiting => SimState::Waiting,
                SofarInverterState::Running => SimState::Running,
                SofarInverterState::Faulted => SimState::Faulted,
            },
            SimInverter::GrowattHvCan(p) => match p.state() {
                GrowattInverterState::Waiting => SimState::Waiting,
                GrowattInverterState::Running => SimState::Running,
                GrowattInverterState::Faulted => SimState::Faulted,
            },
        }
    }

    /// What the household asks for (+ charges the battery).
    pub fn set_demand(&mut self, now: Instant, w: Watts) {
        match self {
            SimInverter::PylonCan(p) => p.set_demand(now, w),
            SimInverter::BydCan(p) => p.set_demand(now, w),
            SimInverter::SolaxCan(p) => p.set_demand(now, w),
            SimInverter::FoxessCan(p) => p.set_demand(now, w),
            SimInverter::SofarCan(p) => p.set_demand(now, w),
            SimInverter::GrowattHvCan(p) => p.set_demand(now, w),
            SimInverter::PylonRs485 { demand, .. } | SimInverter::Modbus { demand, .. } => *demand = w,
        }
    }

    /// The current it draws (+ = charging): never beyond what it was told, 0 unless running.
    pub fn current(&self) -> DeciAmps {
        let demand = match self {
            SimInverter::PylonCan(p) => return p.current(),
            SimInverter::BydCan(p) => return p.current(),
            SimInverter::SolaxCan(p) => return p.current(),
            SimInverter::FoxessCan(p) => return p.current(),
            SimInverter::SofarCan(p) => return p.current(),
            SimInverter::GrowattHvCan(p) => return p.current(),
            SimInverter::PylonRs485 { demand, .. } | SimInverter::Modbus { demand, .. } => *demand,
        };
        let Some(t) = self.summary().filter(|_| self.state() == SimState::Running) else {
            return DeciAmps(0);
        };
        let want = current_for_power(demand, t.voltage).0;
        DeciAmps(want.clamp(-t.discharge_limit.0.max(0), t.charge_limit.0.max(0)))
    }

    pub fn set_silent(&mut self, silent: bool) {
        match self {
            SimInverter::PylonCan(p) => p.set_silent(silent),
            SimInverter::PylonRs485 { master, .. } => master.set_silent(silent),
            SimInverter::Modbus { master, .. } => master.set_silent(silent),
            SimInverter::BydCan(p) => p.set_silent(silent),
            SimInverter::SolaxCan(p) => p.set_silent(silent),
            SimInverter::FoxessCan(p) => p.set_silent(silent),
            SimInverter::SofarCan(p) => p.set_silent(silent),
            SimInverter::GrowattHvCan(p) => p.set_silent(silent),
        }
    }

    /// What a real inverter measures at its battery terminals (only BYD CAN reports it back).
    pub fn set_bus(&mut self, voltage: DeciVolts, current: DeciAmps) {
        if let SimInverter::BydCan(p) = self {
            p.set_bus(voltage, current);
        }
    }
}
