//! `dbe demo`: a simulated pack (the `--battery` driver's, from `dbe_sim::pack::PACKS`), the bridge and a simulated inverter on an in-process bus, run against the
//! wall clock (optionally faster), with the same hub as the daemon so the dashboard and MQTT work on it.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::Result;
use dbe_core::bridge::{Bridge, BridgeConfig};
use dbe_core::Instant;
use dbe_sim::world::{AnyWorld, Demand, World};
use tokio::time::Instant as WallInstant;

use dbe_services::hub::{Envelope, EventMessage, LoopEnd, Request, Snapshot};
use dbe_services::status::Status;
use dbe_services::web::TapDirection;

pub struct DemoOptions {
    pub bridge: BridgeConfig,
    pub pack: &'static dbe_sim::pack::PackEntry,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Stop after this much simulated time.
    pub duration: Option<dbe_core::Duration>,
    pub json: bool,
    /// Household demand peak (W).
    pub peak: dbe_core::units::Watts,
}

/// How often the hub's snapshot is refreshed (wall time): well under the dashboard's one-second promise.
const PUBLISH_EVERY: StdDuration = StdDuration::from_millis(200);
const TICK: StdDuration = StdDuration::from_millis(20);

pub async fn run(
    opts: DemoOptions,
    mut end: LoopEnd,
    frames: Option<tokio::sync::broadcast::Sender<dbe_services::web::FrameRecord>>,
    mut settings: tokio::sync::watch::Receiver<Arc<dbe_services::config::Config>>,
) -> Result<()> {
    let mut opts = opts;
    let mut world = World::with_pack(opts.bridge, opts.pack.build(Instant::ZERO), Instant::ZERO);
    if frames.is_some() {
        world.tap = Some(Default::default());
    }
    world.demand = Demand::Daily { peak: opts.peak };
    let wall0 = WallInstant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_print = wall0;
    let mut next_publish = wall0;
    let end_at = opts.duration.map(|d| Instant::ZERO + d);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(env) = end.requests.recv() => {
                let now = world.now();
                handle_request(&mut world, opts.bridge, now, env);
            }
            Ok(()) = settings.changed() => {
                // The demo has no file behind its settings: apply them by restarting the bridge in place (and the
                // simulated inverter, when the protocol changed); the simulated pack keeps its state.
                let cfg = settings.borrow_and_update().clone();
                let bridge = crate::options::bridge_config(&cfg);
                if bridge.inverter.kind() != opts.bridge.inverter.kind() {
                    world.inverter = dbe_sim::sim_inverter::SimInverter::for_config(&bridge.inverter, world.now());
                }
                opts.bridge = bridge;
                world.bridge = Bridge::start(bridge, world.now(), cfg.autostart, world.bridge.latches());
                eprintln!("settings changed: bridge restarted with them (latches kept)");
            }
            _ = &mut ctrl_c => break,
        }
        let elapsed = wall0.elapsed().as_secs_f64() * opts.speed * 1000.0;
        let mut target = Instant::from_millis(elapsed as u64);
        if let Some(e) = end_at {
            target = target.min(e);
        }
        world.run_until(target);
        let now = world.now();
        if let (Some(tap), Some(tx)) = (world.tap.as_mut(), frames.as_ref()) {
            let time_ms = crate::services::unix_ms();
            for t in tap.drain(..) {
                let dir = if t.sent_by_bridge { TapDirection::Tx } else { TapDirection::Rx };
                let _ = tx.send(crate::services::frame_record(t.bus, t.frame, dir, time_ms));
            }
        }
        while let Some(o) = world.bridge.poll_event() {
            let msg = EventMessage::from(o);
            if !opts.json {
                eprintln!(
                    "event {} {} (count {}, data {}): {}",
                    msg.severity, msg.event_type, msg.count, msg.data, msg.message
                );
            }
            let _ = end.events.send(msg);
        }
        let wall = WallInstant::now();
        if wall >= next_publish {
            end.snapshot.send_replace(Arc::new(Snapshot::of(&world.bridge, now)));
            next_publish = wall + PUBLISH_EVERY;
        }
        let done = end_at.is_some_and(|e| now >= e);
        if wall >= next_print || done {
            print_line(&world, now, opts.json);
            next_print += StdDuration::from_secs(1);
        }
        if done {
            break;
        }
    }
    Ok(())
}

fn handle_request(world: &mut AnyWorld, cfg: BridgeConfig, now: Instant, env: Envelope) {
    let result = match env.request {
        Request::Core(cmd) => world.bridge.handle_command(now, cmd),
        Request::Restart => {
            // As the daemon does: a restart never clears a latch.
            world.bridge = Bridge::start(cfg, now, true, world.bridge.latches());
            Ok(())
        }
        Request::Note { kind, active, data } => {
            world.bridge.note_event(now, kind, active, data);
            Ok(())
        }
    };
    match &result {
        Ok(()) => eprintln!("request: {} from {}: done", env.request.name(), env.source),
        Err(e) => eprintln!("request: {} from {}: refused: {e}", env.request.name(), env.source),
    }
    let _ = env.reply.send(result);
}

fn hms(now: Instant) -> String {
    let s = now.as_millis() / 1000;
    format!("{}d{:02}:{:02}:{:02}", s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn print_line(world: &AnyWorld, now: Instant, json: bool) {
    let status = Status::of(&world.bridge, now);
    let told = world.inverter.summary();
    if json {
        let inverter = serde_json::json!({
            "state": format!("{:?}", world.inverter.state()),
            "current_a": world.inverter.current().0 as f64 / 10.0,
            "told_charge_limit_a": told.map(|t| t.charge_limit.0 as f64 / 10.0),
            "told_discharge_limit_a": told.map(|t| t.discharge_limit.0 as f64 / 10.0),
            "told_soc_pct": told.map(|t| t.soc.0 as f64 / 100.0),
            "told_voltage_v": told.map(|t| t.voltage.0 as f64 / 10.0),
        });
        let mut line = serde_json::to_value(&status).unwrap_or_default();
        line["simulated_inverter"] = inverter;
        println!("{line}");
        return;
    }
    let b = &status.battery;
    println!(
        "{} SOC {}% (real {}%) {} V {} A {} W cells {}-{} mV limits +{}/-{} A contactors {} inverter {:?} told +{}/-{} A",
        hms(now),
        opt(status.reported.soc_pct.map(|v| format!("{v:.1}"))),
        opt(b.soc_real_pct.map(|v| format!("{v:.1}"))),
        opt(b.voltage_v.map(|v| format!("{v:.1}"))),
        opt(b.current_a.map(|v| format!("{v:.1}"))),
        opt(b.power_w),
        opt(b.cell_min_mv),
        opt(b.cell_max_mv),
        status.limits.charge_current_a,
        status.limits.discharge_current_a,
        b.contactors,
        world.inverter.state(),
        opt(told.map(|t| t.charge_limit.0 as f64 / 10.0)),
        opt(told.map(|t| t.discharge_limit.0 as f64 / 10.0)),
    );
}
