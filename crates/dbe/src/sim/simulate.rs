//! `dbe simulate`: simulators behind a real wire, for end-to-end tests, benchmarks and trying DBE on a bench
//! without a pack. A simulated pack (`--pack NAME`, any registered in `dbe_sim::pack::PACKS`; `--pack` alone is
//! the LEAF) and/or a simulated CAN inverter share one in-process bus, which is
//! exposed as an slcan adapter on a serial device or pty (`--slcan`) and/or as a socketcand server (`--socketcand`),
//! so `dbe run` (or python-can, or SavvyCAN through DBE) reaches them exactly as it reaches hardware.
//!
//! Standard output carries JSON lines only: one `{"event":"ready",...}` once the wires are up, then a status line
//! for each simulator every [`STATUS_EVERY`] (`"event":"pack"`: contactors and SOC; `"event":"inverter"`: its
//! state and the limits it has been told), so a test can assert the safe state from the other end of the wire.
//! `--rate N` adds N filler frames a second (extended id [`FILLER_ID`], a little-endian sequence number as data)
//! to load the bus like a busy car.
//!
//! Standard input takes faults, one per line (`cell 8 4240`, `silent on`, `bus-off on`...; the list is in
//! [`crate::sim::control`]). Each line is answered on standard output with `{"event":"control","applied":LINE}` at
//! the moment it took effect, or `{"event":"control","error":WHY}` (nothing changed), so a test can time the
//! reaction of whatever is at the other end of the wire from that line.

use std::time::Duration;

use anyhow::{bail, Result};
use dbe_core::inverter::{InverterConfig, InverterKind, Transport};
use dbe_core::CanFrame;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::ports::{self, sim, PortSpec};
use crate::share::{self, slcan::BusOff, Protocol};
use crate::sim::control::Control;
use crate::sim::simulators::{self, Coupling, InverterView, PackView};

pub const STATUS_EVERY: Duration = Duration::from_millis(250);
/// The filler frames' id: extended, far from every pack and inverter id DBE knows.
pub const FILLER_ID: u32 = 0x1FFF_FFF0;
const BUS: &str = "simulate";

#[derive(Clone, Debug)]
pub struct Options {
    pub pack: Option<&'static dbe_sim::pack::PackEntry>,
    pub inverter: Option<InverterKind>,
    pub slcan: Option<String>,
    pub socketcand: Option<String>,
    pub rate: u32,
    /// The simulated Pylon CAN inverter's poll period, instead of its real 1 s.
    pub poll_ms: Option<u64>,
}

pub async fn run(opts: Options) -> Result<()> {
    if opts.slcan.is_none() && opts.socketcand.is_none() {
        bail!("nothing to expose the bus on: give --slcan DEVICE and/or --socketcand ADDRESS");
    }
    let inverter_cfg = match opts.inverter {
        Some(kind) if kind.info().transport != Transport::Can => {
            bail!("--inverter {} is not a CAN protocol", kind.info().name)
        }
        Some(kind) if opts.poll_ms.is_some() && kind != InverterKind::PylonCan => {
            bail!("--poll-ms is for --inverter pylon-can only; {} keeps its real cadence", kind.info().name)
        }
        Some(kind) => Some(InverterConfig::default_for(kind)),
        None => None,
    };
    let clock = Clock::new();
    let buses = sim::Buses::default();
    let bus = buses.get(BUS);
    let coupling = Coupling::default();
    let (pack_tx, pack_rx) = watch::channel(PackView::default());
    let (inv_tx, inv_rx) = watch::channel(InverterView { state: dbe_sim::sim_inverter::SimState::Waiting, told: None });
    let (fault_tx, fault_rx) = mpsc::channel(16);
    if let Some(pack) = opts.pack {
        let (b, c) = (bus.clone(), coupling.clone());
        tokio::spawn(simulators::pack_reporting(b, clock, pack, c, Some(pack_tx), Some(fault_rx), None));
    }
    let bus_off = BusOff::default();
    if let Some(cfg) = inverter_cfg {
        let demand = simulators::default_demand();
        let poll = opts.poll_ms.map(dbe_core::Duration::from_millis);
        tokio::spawn(simulators::can_inverter_reporting(bus.clone(), clock, cfg, demand, coupling, Some(inv_tx), poll));
    }
    if opts.rate > 0 {
        tokio::spawn(filler(bus.clone(), opts.rate));
    }
    // Each wire reaches the bus through its own `sim:` port, as a controller of its own would: a frame sent over
    // one wire is seen on the other, as on a real bus.
    let controller = || PortSpec::parse(&format!("sim:{BUS}")).map(|spec| ports::open(spec, clock, &buses));
    let mut ready = serde_json::Map::new();
    ready.insert("event".into(), json!("ready"));
    let _server = match &opts.socketcand {
        Some(bind) => {
            let s = share::serve_tcp(Protocol::Socketcand, bind, controller()?, clock).await?;
            ready.insert("socketcand".into(), json!(s.addr.to_string()));
            Some(s)
        }
        None => None,
    };
    if let Some(path) = &opts.slcan {
        tokio::spawn(share::slcan::serve_device(path.clone(), controller()?, bus_off.clone()));
        ready.insert("slcan".into(), json!(path));
    }
    println!("{}", serde_json::Value::Object(ready));
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut shutdown = std::pin::pin!(crate::run::shutdown_signal());
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return Ok(()),
            line = stdin.next_line(), if stdin_open => {
                match line {
                    Ok(Some(line)) => {
                        let cells = opts.pack.map_or(dbe_sim::leaf::CELLS, |p| p.cells);
                        let answer = match Control::parse_for(&line, cells) {
                            Err(e) => Err(e.to_string()),
                            Ok(Control::Pack(_)) if opts.pack.is_none() => {
                                Err("no simulated pack (give --pack)".to_string())
                            }
                            Ok(Control::Pack(f)) => fault_tx.send(f).await.map_err(|_| "the pack stopped".to_string()),
                            Ok(Control::BusOff(_)) if opts.slcan.is_none() => {
                                Err("bus-off is an slcan adapter's fault (give --slcan)".to_string())
                            }
                            Ok(Control::BusOff(on)) => {
                                bus_off.set(on);
                                Ok(())
                            }
                        };
                        println!("{}", control_line(clock.now_ms(), &line, answer));
                    }
                    // Standard input closed (or not a terminal nor a pipe): the simulators go on without it.
                    Ok(None) | Err(_) => stdin_open = false,
                }
                continue;
            }
        }
        let t = clock.now_ms();
        if opts.pack.is_some() {
            let p = *pack_rx.borrow();
            println!(
                "{}",
                json!({"event": "pack", "time_ms": t, "contactors_closed": p.contactors_closed,
                       "soc_pct": p.soc_bp as f64 / 100.0})
            );
        }
        if opts.inverter.is_some() {
            println!("{}", inverter_line(t, &inv_rx.borrow()));
        }
    }
}

fn control_line(time_ms: u64, line: &str, answer: Result<(), String>) -> serde_json::Value {
    match answer {
        Ok(()) => json!({"event": "control", "time_ms": time_ms, "applied": line.trim()}),
        Err(why) => json!({"event": "control", "time_ms": time_ms, "line": line, "error": why}),
    }
}

fn inverter_line(time_ms: u64, v: &InverterView) -> serde_json::Value {
    use dbe_sim::sim_inverter::SimState;
    let state = match v.state {
        SimState::Waiting => "waiting",
        SimState::Running => "running",
        SimState::Faulted => "faulted",
    };
    let mut line =
        json!({"event": "inverter", "time_ms": time_ms, "state": state, "faulted": v.state == SimState::Faulted});
    // Nothing told yet (or a faulted link): the inverter draws nothing, which is what these limits say.
    let (charge, discharge) = match (v.told, v.state) {
        (Some(t), SimState::Running) => (t.charge_limit.0 as f64 / 10.0, t.discharge_limit.0 as f64 / 10.0),
        _ => (0.0, 0.0),
    };
    line["charge_limit_a"] = json!(charge);
    line["discharge_limit_a"] = json!(discharge);
    if let Some(t) = v.told {
        line["voltage_v"] = json!(t.voltage.0 as f64 / 10.0);
        line["soc_pct"] = json!(t.soc.0 as f64 / 100.0);
    }
    line
}

/// Puts `rate` filler frames a second on the bus, evenly in 1 ms steps, catching up after a late wake-up.
async fn filler(bus: sim::Bus, rate: u32) {
    let (me, rx) = bus.attach();
    drop(rx); // the filler only talks
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent: u64 = 0;
    loop {
        tick.tick().await;
        let due = start.elapsed().as_micros() as u64 * u64::from(rate) / 1_000_000;
        while sent < due {
            if let Ok(f) = CanFrame::extended(FILLER_ID, &sent.to_le_bytes()) {
                bus.send(me, f);
            }
            sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::units::{BasisPoints, DeciAmps, DeciVolts};
    use dbe_sim::sim_inverter::{SimState, Summary};

    #[test]
    fn inverter_lines_show_zero_unless_running() {
        let told = Summary {
            voltage: DeciVolts(3800),
            soc: BasisPoints(5000),
            charge_limit: DeciAmps(300),
            discharge_limit: DeciAmps(250),
        };
        let running = inverter_line(1, &InverterView { state: SimState::Running, told: Some(told) });
        assert_eq!(running["charge_limit_a"], 30.0);
        assert_eq!(running["discharge_limit_a"], 25.0);
        let faulted = inverter_line(1, &InverterView { state: SimState::Faulted, told: Some(told) });
        assert_eq!(faulted["charge_limit_a"], 0.0);
        assert_eq!(faulted["faulted"], true);
        let waiting = inverter_line(1, &InverterView { state: SimState::Waiting, told: None });
        assert_eq!(waiting["state"], "waiting");
        assert!(waiting.get("voltage_v").is_none());
    }
}
