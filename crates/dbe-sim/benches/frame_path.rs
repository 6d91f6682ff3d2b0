//! The per-frame path: LEAF decode → supervisor → Pylon encode, in frames per second on one core; and for each
//! RS485 protocol (Pylontech, BYD Modbus) the request path: parse → supervisor → reply, in requests per second.
//!
//! The frame path's input is what a live bridge received from the simulated pack (its polls answered) and a
//! simulated Pylon inverter over 50 simulated minutes; it is replayed into a fresh bridge with the same calls at
//! the same times (a frame's arrival or one of the bridge's own deadlines), so the bridge goes through the same
//! states as the live one, bridging after its first seconds, and its sends are checked against the live run's.
//! The figure is frames received per second of CPU, everything the bridge does (supervisor, keep-alives, polls,
//! inverter answers) included. Figures are printed, never asserted: machines here are shared and noisy. Run with
//! `cargo bench -p dbe-sim`.

use std::hint::black_box;
use std::time::Instant as WallInstant;

use dbe_core::bridge::{Bridge, BridgeConfig, Port};
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::{CanFrame, Duration, Instant};

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

/// The next step of a loop driven by deadlines, at most `end`; never before `after + 1 ms`.
fn next_step(after: u64, end: u64, deadlines: &[Option<Instant>]) -> u64 {
    let next = deadlines.iter().flatten().map(|d| d.as_millis()).min().unwrap_or(end);
    next.max(after + 1).min(end)
}

/// Drives a bridge at `t`: its deadline if due, the frames that arrive now, then everything it sends (each
/// handed to `sent_to`).
fn step(bridge: &mut Bridge, t: Instant, arrived: &[(u64, Port, CanFrame)], mut sent_to: impl FnMut(Port, &CanFrame)) {
    if bridge.poll_timeout().is_some_and(|d| d <= t) {
        bridge.handle_timeout(t);
    }
    for (_, port, f) in arrived {
        let _ = black_box(bridge.handle_frame(t, *port, f));
    }
    while let Some((port, f)) = bridge.poll_transmit(t) {
        sent_to(port, black_box(&f));
    }
}

/// The timed part: a fresh bridge given `inputs` at their times (and its own deadlines) up to `end`; returns the
/// frames it sent. Not inlined, so `valgrind --tool=callgrind --toggle-collect=frame_path::replay` counts the
/// instructions of exactly this part, a figure that does not depend on how busy the machine is.
#[inline(never)]
fn replay(inputs: &[(u64, Port, CanFrame)], end: u64) -> u64 {
    let mut bridge = Bridge::new(config());
    let mut sent = 0u64;
    let (mut i, mut ms) = (0, 0);
    while ms < end {
        let t = Instant::from_millis(ms);
        let first = i;
        while inputs.get(i).is_some_and(|x| x.0 == ms) {
            i += 1;
        }
        if i > first || bridge.poll_timeout().is_some_and(|d| d <= t) {
            step(&mut bridge, t, &inputs[first..i], |_, _| sent += 1);
        }
        ms = next_step(ms, end, &[bridge.poll_timeout(), inputs.get(i).map(|x| Instant::from_millis(x.0))]);
    }
    sent
}

fn main() {
    // The live run: the bridge, the pack and the inverter each at their own deadlines.
    let end = 50 * 60_000;
    let mut live = Bridge::new(config());
    let mut pack = dbe_sim::leaf::LeafPack::new(Default::default(), Instant::ZERO);
    let mut inv = dbe_sim::pylon_inverter::PylonInverter::new(Default::default(), Instant::ZERO);
    let mut inputs: Vec<(u64, Port, CanFrame)> = Vec::new();
    let mut live_sent = 0u64;
    let mut ms = 0;
    while ms < end {
        let t = Instant::from_millis(ms);
        let first = inputs.len();
        while let Some(f) = pack.poll_transmit(t) {
            inputs.push((ms, Port::Battery, f));
        }
        while let Some(f) = inv.poll_transmit(t) {
            inputs.push((ms, Port::Inverter, f));
        }
        if inputs.len() > first || live.poll_timeout().is_some_and(|d| d <= t) {
            step(&mut live, t, &inputs[first..], |port, f| {
                live_sent += 1;
                match port {
                    Port::Battery => pack.handle_frame(t, f),
                    Port::Inverter => inv.handle_frame(t, f),
                }
            });
        }
        ms = next_step(ms, end, &[live.poll_timeout(), pack.poll_timeout(), inv.poll_timeout()]);
    }
    let o = live.output();
    println!(
        "recorded {} frames received by a live bridge in 50 simulated minutes (at the end: charge limit {} dA, limited by {:?})",
        inputs.len(),
        o.charge_current_limit.0,
        o.charge_limited_by
    );

    // The replay: the same calls at the same times, timed.
    let start = WallInstant::now();
    let sent = replay(&inputs, end);
    let secs = start.elapsed().as_secs_f64();
    let n = inputs.len() as u64;
    let same = if sent == live_sent { "as the live bridge did" } else { "UNLIKE the live bridge" };
    println!(
        "frame_path: {n} frames in {secs:.3} s = {:.0} frames/s on one core ({sent} frames sent, {same}); a 1 Mbit/s bus carries about 8000 frames/s",
        n as f64 / secs
    );
    serial_path("pylontech_rs485", InverterConfig::PylonRs485(Default::default()));
    serial_path("byd_modbus", InverterConfig::BydModbus(Default::default()));
}
