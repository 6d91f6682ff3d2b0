//! Writes a candump log of a simulated LEAF pack talking to DBE and a Pylon CAN inverter, as DBE's recorder
//! writes it (`battery`/`inverter` interfaces, `R` for received, `T` for sent): the input of the log benchmarks
//! in `scripts/bench` (`dbe decode`, `dbe replay`, cantools, python-can).
//!
//! `cargo run --release -p dbe --example leaf_log -- OUT FRAMES`

use std::io::Write as _;

use dbe_core::bridge::BridgeConfig;
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::Duration;
use dbe_link::candump::{push_line, Direction};
use dbe_sim::world::World;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(out), Some(frames)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: leaf_log OUT FRAMES");
        std::process::exit(2);
    };
    let cfg = BridgeConfig {
        battery: dbe_core::battery::BatteryKind::NissanLeaf.into(),
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors: Default::default(),
    };
    let mut world = World::leaf(cfg);
    world.tap = Some(Default::default());
    let origin_us = 1_700_000_000_000_000u64;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let mut line = String::with_capacity(64);
    let mut written = 0;
    // Every deadline falls on a whole millisecond, so stepping by one stamps each frame with its own time; the
    // first step (to the start itself) takes the bridge's and the pack's first turn, at 0 as in the daemon.
    world.run_until(world.now());
    while written < frames {
        let at = origin_us + world.now().as_millis() * 1000;
        for t in world.tap.as_mut().into_iter().flat_map(|t| t.drain(..)) {
            if written == frames {
                break;
            }
            line.clear();
            let dir = if t.sent_by_bridge { Direction::Tx } else { Direction::Rx };
            push_line(&mut line, at, t.bus, &t.frame, Some(dir));
            line.push('\n');
            w.write_all(line.as_bytes())?;
            written += 1;
        }
        world.run_for(Duration::from_millis(1));
    }
    w.flush()
}
