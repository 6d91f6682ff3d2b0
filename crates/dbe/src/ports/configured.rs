//! The ports of one daemon, opened as its config names them. A `sim:` port is a port kind like any other: the
//! simulator behind it (a pack, an inverter) is started here, on the in-process bus the port joins.

use anyhow::{Context, Result};
use dbe_core::inverter::Transport;
use dbe_services::config::Config;

use super::serial::{SerialHandle, SerialSpec};
use super::{PortHandle, PortKind, PortSpec};
use crate::clock::Clock;
use crate::sim::simulators;

/// The open ports of one daemon.
pub struct Ports {
    pub battery: PortHandle,
    /// The inverter's CAN port (the battery's when they share a bus); `None` for RS485 protocols.
    pub inverter: Option<PortHandle>,
    /// The inverter's serial port, for RS485 protocols.
    pub serial: Option<SerialHandle>,
    /// Battery and inverter on one CAN bus.
    pub shared: bool,
}

/// Opens the configured ports; a `sim:` battery port gets a simulated pack whose relays follow `relays` (the
/// simulated relay board), or manual switches when there is none.
pub fn open_ports(
    cfg: &Config,
    clock: Clock,
    relays: Option<tokio::sync::watch::Receiver<[bool; 4]>>,
) -> Result<Ports> {
    let sims = super::sim::Buses::default();
    let inverter_cfg = crate::options::inverter_config(cfg);
    let serial_protocol = inverter_cfg.kind().info().transport == Transport::Serial;
    let bspec = PortSpec::parse(&cfg.battery.port).context("battery.port")?;
    let coupling = simulators::Coupling::default();
    if let PortKind::Sim { bus } = &bspec.kind {
        let pack = dbe_sim::pack::for_battery(cfg.battery.kind).context("battery.port")?;
        tokio::spawn(simulators::pack(sims.get(bus), clock, pack, coupling.clone(), relays));
    }
    let ispec =
        if serial_protocol { None } else { Some(PortSpec::parse(&cfg.inverter.port).context("inverter.port")?) };
    let shared = ispec.as_ref().is_some_and(|i| i.kind == bspec.kind);
    // A battery port of its own is read in batches at the bridge's pace (`ports::pace`); one the inverter shares
    // is not, so the inverter's requests are answered at once.
    let battery = super::open_with(bspec.clone(), clock, &sims, !shared);
    let Some(ispec) = ispec else {
        let serial = if cfg.rs485.port == "sim:" {
            simulators::serial_inverter(clock, inverter_cfg, simulators::default_demand(), coupling)
        } else {
            super::serial::open(SerialSpec::new(&cfg.rs485.port, cfg.rs485.baud, &cfg.rs485.parity))
        };
        return Ok(Ports { battery, inverter: None, serial: Some(serial), shared: false });
    };
    if let PortKind::Sim { bus } = &ispec.kind {
        tokio::spawn(simulators::can_inverter(
            sims.get(bus),
            clock,
            inverter_cfg,
            simulators::default_demand(),
            coupling,
        ));
    }
    let inverter = if shared { battery.clone() } else { super::open(ispec, clock, &sims) };
    Ok(Ports { battery, inverter: Some(inverter), serial: None, shared })
}

impl Ports {
    /// The CAN port a `battery` / `inverter` setting names (`[share].port`); `None` for the inverter when it has
    /// no CAN port (an RS485 protocol).
    pub fn can_port(&self, role: &str) -> Option<&PortHandle> {
        match role {
            "inverter" => self.inverter.as_ref(),
            _ => Some(&self.battery),
        }
    }

    /// The candump interface names the recorder and the CAN view use, which `dbe replay` maps back to the
    /// bridge's ports.
    pub fn record_names(&self) -> Vec<(&'static str, &PortHandle)> {
        match &self.inverter {
            Some(_) if self.shared => vec![("bus", &self.battery)],
            Some(inv) => vec![("battery", &self.battery), ("inverter", inv)],
            None => vec![("battery", &self.battery)],
        }
    }
}
