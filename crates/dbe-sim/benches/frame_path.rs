//! The per-frame path: LEAF decode → supervisor → Pylon encode, in frames per second on one core.
//!
//! Frames come from the simulated pack (a minute of its real traffic, polls included), replayed into a bridge in
//! a loop; every frame is followed by a poll of the inverter side, so the supervisor runs and answers are encoded.
//! Figures are printed, never asserted: machines here are shared and noisy. Run with `cargo bench -p dbe-sim`.

use std::hint::black_box;
use std::time::Instant as WallInstant;

use dbe_core::bridge::{Bridge, BridgeConfig, Port};
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::{CanFrame, Duration, Instant};
use dbe_sim::world::World;

fn config() -> BridgeConfig {
    BridgeConfig {
        battery: dbe_core::battery::BatteryKind::NissanLeaf,
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
    }
}

fn main() {
    // Record a minute of the pack's side of the bus, with the 0x4200 requests of the inverter mixed in.
    let mut world = World::leaf(config());
    world.run_for(Duration::from_secs(10));
    let mut frames: Vec<(Port, CanFrame)> = Vec::new();
    let mut pack = dbe_sim::leaf::LeafPack::new(Default::default(), Instant::ZERO);
    let mut inv = dbe_sim::pylon_inverter::PylonInverter::new(Default::default(), Instant::ZERO);
    let mut t = Instant::ZERO;
    while t < Instant::from_millis(60_000) {
        while let Some(f) = pack.poll_transmit(t) {
            frames.push((Port::Battery, f));
        }
        while let Some(f) = inv.poll_transmit(t) {
            frames.push((Port::Inverter, f));
        }
        t += Duration::from_millis(1);
    }
    println!("recorded {} frames from one simulated minute", frames.len());

    let mut bridge = Bridge::new(config());
    let rounds = 50;
    let start = WallInstant::now();
    let mut now = 0u64;
    let mut sent = 0u64;
    for _ in 0..rounds {
        for (port, f) in &frames {
            now += 1;
            let _ = black_box(bridge.handle_frame(Instant::from_millis(now), *port, f));
            while let Some(out) = bridge.poll_transmit(Instant::from_millis(now)) {
                black_box(out);
                sent += 1;
            }
        }
    }
    let n = frames.len() as u64 * rounds;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "frame_path: {n} frames in {secs:.3} s = {:.0} frames/s on one core ({sent} frames encoded); a 1 Mbit/s bus carries about 8000 frames/s",
        n as f64 / secs
    );
}
