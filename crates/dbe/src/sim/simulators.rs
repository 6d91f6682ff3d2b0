//! Simulators on `sim:` buses inside the daemon: `battery.port = "sim:"` puts the configured battery's simulated
//! pack on that bus,
//! `inverter.port = "sim:"` (or `rs485.port = "sim:"`) a simulated inverter of the configured protocol, so `dbe run` can be tried (and tested) with no hardware.
//! When both are simulated, the inverter's current flows into the pack.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use dbe_core::inverter::InverterConfig;
use dbe_core::units::{DeciAmps, Watts};
use dbe_sim::pack::{PackEntry, SimPack};
use dbe_sim::sim_inverter::{SimInverter, SimState, Summary};
use dbe_sim::world::Demand;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};

use crate::clock::{sleep_until_opt, Clock};
use crate::ports::serial::{SerialHandle, SerialIn};
use crate::ports::sim::Bus;
use crate::ports::PortState;
use crate::sim::control::PackFault;

/// The current the simulated inverter draws, shared with the simulated pack (+ = charging).
#[derive(Clone, Default)]
pub struct Coupling(Arc<AtomicI32>);

impl Coupling {
    fn set(&self, a: DeciAmps) {
        self.0.store(a.0, Ordering::Relaxed);
    }
    fn get(&self) -> DeciAmps {
        DeciAmps(self.0.load(Ordering::Relaxed))
    }
}

const PHYSICS: std::time::Duration = std::time::Duration::from_millis(100);

/// What a simulated pack shows from outside, for `dbe simulate`'s status lines.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct PackView {
    pub contactors_closed: bool,
    pub soc_bp: u16,
}

/// What a simulated inverter has been told, for `dbe simulate`'s status lines.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct InverterView {
    pub state: SimState,
    pub told: Option<Summary>,
}

/// A simulated pack of the `pack` family on `bus`. Hardwired relays (a LEAF's) follow `relays` (the simulated
/// relay board's outputs, by `outputs::Output::index`), or are manual switches, closed, when there is none; a
/// CAN-controlled pack closes its own.
pub async fn pack(
    bus: Bus,
    clock: Clock,
    pack: &'static PackEntry,
    coupling: Coupling,
    relays: Option<watch::Receiver<[bool; 4]>>,
) {
    pack_reporting(bus, clock, pack, coupling, None, None, relays).await
}

/// [`pack`], publishing what it shows on `report` and taking faults from `faults`.
pub async fn pack_reporting(
    bus: Bus,
    clock: Clock,
    entry: &'static PackEntry,
    coupling: Coupling,
    report: Option<watch::Sender<PackView>>,
    mut faults: Option<mpsc::Receiver<PackFault>>,
    mut relays: Option<watch::Receiver<[bool; 4]>>,
) {
    let mut pack = entry.build(clock.now());
    if relays.is_none() {
        pack.set_manual_relays(clock.now(), Some(true));
    }
    let (me, mut rx) = bus.attach();
    let mut physics = tokio::time::interval(PHYSICS);
    loop {
        let deadline = pack.poll_timeout().map(|t| clock.deadline(t));
        tokio::select! {
            r = rx.recv() => match r {
                Ok(f) if f.sender != me => pack.handle_frame(clock.now(), &f.frame),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = sleep_until_opt(deadline) => {}
            _ = physics.tick() => pack.set_current(clock.now(), coupling.get()),
            fault = next_fault(&mut faults) => pack.apply(fault),
            Some(r) = relays_changed(&mut relays) => {
                use crate::outputs::Output;
                pack.drive_relays(clock.now(), r[Output::Negative.index()], r[Output::Positive.index()]);
            }
        }
        let now = clock.now();
        while let Some(f) = pack.poll_transmit(now) {
            bus.send(me, f);
        }
        if let Some(r) = &report {
            let view = PackView { contactors_closed: pack.contactors_closed(), soc_bp: pack.soc_bp() };
            r.send_if_modified(|v| std::mem::replace(v, view) != view);
        }
    }
}

async fn relays_changed(rx: &mut Option<watch::Receiver<[bool; 4]>>) -> Option<[bool; 4]> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

pub async fn can_inverter(bus: Bus, clock: Clock, config: InverterConfig, demand: Demand, coupling: Coupling) {
    can_inverter_reporting(bus, clock, config, demand, coupling, None, None).await
}

/// [`can_inverter`], publishing what it has been told on `report`; a Pylon CAN inverter polls every `poll` when
/// given (`dbe simulate --poll-ms`).
pub async fn can_inverter_reporting(
    bus: Bus,
    clock: Clock,
    config: InverterConfig,
    demand: Demand,
    coupling: Coupling,
    report: Option<watch::Sender<InverterView>>,
    poll: Option<dbe_core::Duration>,
) {
    let mut inv = match (&config, poll) {
        (InverterConfig::PylonCan(o), Some(every)) => SimInverter::pylon_polling_every(*o, every, clock.now()),
        _ => SimInverter::for_config(&config, clock.now()),
    };
    let (me, mut rx) = bus.attach();
    let mut physics = tokio::time::interval(PHYSICS);
    loop {
        let deadline = inv.poll_timeout().map(|t| clock.deadline(t));
        tokio::select! {
            r = rx.recv() => match r {
                Ok(f) if f.sender != me => inv.handle_frame(clock.now(), &f.frame),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = sleep_until_opt(deadline) => {}
            _ = physics.tick() => {
                let now = clock.now();
                inv.set_demand(now, demand.at(now));
                coupling.set(inv.current());
            }
        }
        let now = clock.now();
        while let Some(f) = inv.poll_frame(now) {
            bus.send(me, f);
        }
        if let Some(r) = &report {
            let view = InverterView { state: inv.state(), told: inv.summary() };
            r.send_if_modified(|v| std::mem::replace(v, view) != view);
        }
    }
}

/// A simulated RS485 inverter wired straight to the bridge loop (`rs485.port = "sim:"`): its requests arrive as
/// whole frames followed by a line-quiet signal, as a real port delivers them after the inter-frame gap.
pub fn serial_inverter(clock: Clock, config: InverterConfig, demand: Demand, coupling: Coupling) -> SerialHandle {
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let (_state_tx, state_rx) = watch::channel(PortState::Up);
    tokio::spawn(async move {
        let _keep_state = _state_tx;
        let mut inv = SimInverter::for_config(&config, clock.now());
        let mut physics = tokio::time::interval(PHYSICS);
        let mut buf = vec![0u8; 8192];
        loop {
            let deadline = inv.poll_timeout().map(|t| clock.deadline(t));
            tokio::select! {
                r = out_rx.recv() => match r {
                    Some(bytes) => inv.handle_bytes(clock.now(), &bytes),
                    None => return,
                },
                _ = sleep_until_opt(deadline) => inv.handle_timeout(clock.now()),
                _ = physics.tick() => {
                    let now = clock.now();
                    inv.set_demand(now, demand.at(now));
                    coupling.set(inv.current());
                }
            }
            let n = inv.poll_bytes(clock.now(), &mut buf);
            if n > 0 {
                if in_tx.send(SerialIn::Bytes(buf[..n].to_vec())).await.is_err() {
                    return;
                }
                if in_tx.send(SerialIn::Silence).await.is_err() {
                    return;
                }
            }
        }
    });
    SerialHandle { rx: in_rx, tx: out_tx, state: state_rx }
}

/// The next fault to apply; never, once there is no one left to send one.
async fn next_fault(rx: &mut Option<mpsc::Receiver<PackFault>>) -> PackFault {
    if let Some(r) = rx {
        if let Some(f) = r.recv().await {
            return f;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// A household demand that makes a `dbe run` on simulators show both directions.
pub fn default_demand() -> Demand {
    Demand::Daily { peak: Watts(3000) }
}
