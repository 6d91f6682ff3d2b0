//! Fault injection in simulated time: each fault is put on a running installation (a simulated LEAF, the real
//! bridge, a simulated Pylon CAN inverter), and each test checks the same four things:
//! 1. the expected events are raised (names from `EventKind`);
//! 2. the safe state is reached within its bound, measured in simulated time (exact, so the bound is asserted);
//! 3. the installation recovers when the fault clears;
//! 4. the event log keeps what happened before the fault: earlier records are unchanged and nothing was dropped
//!    from the queue of occurrences.
//!
//! `tests/scenarios.rs` covers the plain stories already (battery silent → 0 A, cell over-voltage stops charging,
//! inverter silent raises `CAN_INVERTER_MISSING`); the tests here add the bounds, the contactors and the history
//! for those faults and cover the others.

use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::events::{EventKind, EventRecord, Occurrence};
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{Duration, Instant};
use dbe_sim::leaf::LeafPackParams;
use dbe_sim::pylon_inverter::PylonInverterParams;
use dbe_sim::sim_inverter::SimState;
use dbe_sim::world::{Demand, World};

fn config() -> BridgeConfig {
    BridgeConfig {
        battery: dbe_core::battery::BatteryKind::NissanLeaf,
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The LEAF driver polls one diagnostic group every 2 s and cells are one group of four: a changed cell voltage
/// or temperature reaches the model within 8 s, plus the reply's own time (under 1 s).
const CELL_REPORT_BOUND: Duration = Duration::from_secs(9);
/// The simulated inverter polls once a second: a new limit reaches it within one poll.
fn inverter_poll() -> Duration {
    PylonInverterParams::default().poll_interval
}
/// The pack opens its relays this long after the last good keep-alive (the sim's, like a car's VCM timeout).
const PACK_RELAY_TIMEOUT: Duration = Duration::from_millis(500);

/// A running installation with some history: started, contactors closed, paused and resumed once, so the log
/// holds events from before the fault.
fn with_history(params: LeafPackParams) -> World {
    let mut w = World::new(config(), params, Instant::ZERO);
    assert!(
        w.run_until_cond(secs(30), |w| w.pack.contactors_closed() && w.inverter.state() == SimState::Running),
        "cold start"
    );
    w.bridge.handle_command(w.now(), Command::Pause).unwrap();
    w.run_for(secs(2));
    w.bridge.handle_command(w.now(), Command::Resume).unwrap();
    assert!(w.run_until_cond(secs(10), |w| told(w).0 > DeciAmps(0)));
    w.run_for(secs(10));
    w
}

fn told(w: &World) -> (DeciAmps, DeciAmps) {
    let t = w.inverter.summary().expect("the inverter has been told something");
    (t.charge_limit, t.discharge_limit)
}

/// The records of the events raised before the fault, to compare after it.
fn history(w: &World) -> Vec<(EventKind, EventRecord)> {
    [EventKind::PauseBegin, EventKind::PauseEnd].iter().map(|&k| (k, *w.bridge.events().record(k))).collect()
}

/// Checks point 4 and returns every occurrence in the order raised.
fn history_kept(w: &mut World, before: &[(EventKind, EventRecord)]) -> Vec<Occurrence> {
    for (k, rec) in before {
        assert_eq!(w.bridge.events().record(*k), rec, "{k:?} changed by the fault");
    }
    assert_eq!(w.bridge.events().dropped(), 0, "occurrences were dropped from the queue");
    let all: Vec<Occurrence> = std::iter::from_fn(|| w.bridge.poll_event()).collect();
    let kinds: Vec<EventKind> = all.iter().map(|o| o.kind).collect();
    assert_eq!(kinds[..2], [EventKind::PauseBegin, EventKind::PauseEnd], "earlier events first: {kinds:?}");
    all
}

fn count(w: &World, kind: EventKind) -> u32 {
    w.bridge.events().record(kind).count
}

#[test]
fn corrupt_checksums_count_as_no_data_and_reach_the_safe_state_within_the_stale_timeout() {
    let mut w = with_history(LeafPackParams::default());
    let before = history(&w);
    let stale = SupervisorConfig::default().stale_timeout;
    w.pack.set_corrupt_checksums(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(60), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "never reached 0 A");
    let took = w.now() - at;
    assert!(took <= stale + inverter_poll() + secs(1), "0 A after {took}, bound {stale} + one poll");
    assert!(w.bridge.events().is_active(EventKind::BatteryFrameInvalid));
    assert!(w.bridge.events().is_active(EventKind::BatteryMissing));
    assert!(!w.bridge.output().data_valid);
    assert!(
        w.run_until_cond(PACK_RELAY_TIMEOUT + secs(1), |w| !w.pack.contactors_closed()),
        "keep-alive stopped, so the pack opens its relays"
    );

    w.pack.set_corrupt_checksums(false);
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0) && w.pack.contactors_closed()), "recovery");
    assert!(!w.bridge.events().is_active(EventKind::BatteryFrameInvalid));
    assert!(!w.bridge.events().is_active(EventKind::BatteryMissing));
    assert_eq!(count(&w, EventKind::BatteryMissing), 1);
    assert_eq!(count(&w, EventKind::BatteryFrameInvalid), 1, "one episode, not one event per bad frame");
    history_kept(&mut w, &before);
}
