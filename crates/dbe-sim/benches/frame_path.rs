//! The per-frame path: LEAF decode → supervisor → Pylon encode, in frames per second on one core; and for each
//! RS485 protocol (Pylontech, BYD Modbus) the request path: parse → supervisor → reply, in requests per second.
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
    config_for(InverterConfig::PylonCan(Default::default()))
}

fn config_for(inverter: InverterConfig) -> BridgeConfig {
    BridgeConfig {
        battery: dbe_core::battery::BatteryKind::NissanLeaf.into(),
        inverter,
        supervisor: SupervisorConfig::default(),
        contactors: Default::default(),
    }
}

/// Feeds a bridge a simulated pack's traffic (and lets the pack hear the bridge) up to `until`.
fn bring_up(bridge: &mut Bridge, pack: &mut dbe_sim::leaf::LeafPack, from: Instant, until: Instant) {
    let mut t = from;
    while t < until {
        while let Some(f) = pack.poll_transmit(t) {
            let _ = bridge.handle_frame(t, Port::Battery, &f);
        }
        while let Some((port, f)) = bridge.poll_transmit(t) {
            if port == Port::Battery {
                pack.handle_frame(t, &f);
            }
        }
        t += Duration::from_millis(1);
    }
}

/// Requests per second of a byte-stream protocol: the requests a simulated inverter sends in a simulated minute
/// of talking to a live bridge, then replayed into a bridge with fresh battery data, each answered.
fn serial_path(name: &str, inverter: InverterConfig) {
    let cfg = config_for(inverter);
    let mut pack = dbe_sim::leaf::LeafPack::new(Default::default(), Instant::ZERO);
    let mut bridge = Bridge::new(cfg);
    bring_up(&mut bridge, &mut pack, Instant::ZERO, Instant::from_millis(10_000));
    let mut master = dbe_sim::sim_inverter::SimInverter::for_config(&cfg.inverter, Instant::from_millis(10_000));
    let mut requests: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut t = Instant::from_millis(10_000);
    while t < Instant::from_millis(70_000) {
        if master.poll_timeout().is_some_and(|d| d <= t) {
            master.handle_timeout(t);
        }
        let n = master.poll_bytes(t, &mut buf);
        if n > 0 {
            requests.push(buf[..n].to_vec());
            bridge.handle_inverter_bytes(t, &buf[..n]);
            bridge.handle_inverter_silence(t);
        }
        if let Ok(n) = bridge.poll_inverter_bytes(t, &mut buf) {
            if n > 0 {
                master.handle_bytes(t, &buf[..n]);
            }
        }
        t += Duration::from_millis(1);
    }
    let mut bridge = Bridge::new(cfg);
    let mut pack = dbe_sim::leaf::LeafPack::new(Default::default(), Instant::ZERO);
    bring_up(&mut bridge, &mut pack, Instant::ZERO, Instant::from_millis(10_000));
    let rounds = 200;
    let mut now = 10_000u64;
    let (mut answered, mut reply_bytes) = (0u64, 0u64);
    let start = WallInstant::now();
    for _ in 0..rounds {
        for r in &requests {
            now += 20; // past any turnaround; the battery data stays within its stale timeout
            let at = Instant::from_millis(now);
            bridge.handle_inverter_bytes(at, black_box(r));
            bridge.handle_inverter_silence(at);
            let later = Instant::from_millis(now + 10);
            if let Ok(n) = bridge.poll_inverter_bytes(later, &mut buf) {
                answered += (n > 0) as u64;
                reply_bytes += n as u64;
                black_box(&buf[..n]);
            }
        }
        // Keep the battery data fresh without timing it: a pack frame every round.
        while let Some(f) = pack.poll_transmit(Instant::from_millis(now)) {
            let _ = bridge.handle_frame(Instant::from_millis(now), Port::Battery, &f);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = requests.len() as u64 * rounds;
    println!(
        "{name}: {n} requests in {secs:.3} s = {:.0} requests/s on one core ({answered} answered, {reply_bytes} reply bytes); \
         a 9600-baud line carries about 960 bytes/s",
        n as f64 / secs
    );
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
    serial_path("pylontech_rs485", InverterConfig::PylonRs485(Default::default()));
    serial_path("byd_modbus", InverterConfig::BydModbus(Default::default()));
}
