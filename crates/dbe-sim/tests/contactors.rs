//! Contactors that really open, in simulated time: a LEAF (hardwired relays) whose relays follow the bridge's relay
//! outputs, driven through the precharge sequence of `dbe_core::contactor`, against the simulated Pylon inverter.

use dbe_core::battery::ContactorRequest;
use dbe_core::command::Command;
use dbe_core::contactor::{ContactorMode, ContactorSetup, ContactorState, OutputSet, NEGATIVE_TIME, PRECHARGE_TIME};
use dbe_core::events::EventKind;
use dbe_core::units::DeciAmps;
use dbe_core::{Duration, Instant};
use dbe_sim::sim_inverter::SimState;
use dbe_sim::world::World;

mod common;
use common::{leaf_pylon, secs};

fn told(w: &World) -> (DeciAmps, DeciAmps) {
    w.inverter.summary().map_or((DeciAmps(0), DeciAmps(0)), |t| (t.charge_limit, t.discharge_limit))
}

/// The outputs over time: (when, negative, precharge, positive), one entry per change.
fn trace(w: &mut World, span: Duration, log: &mut Vec<(Instant, bool, bool, bool)>) {
    w.run_until_cond(span, |w| {
        if let Some(o) = w.bridge.relay_outputs() {
            let e = (o.negative, o.precharge, o.positive);
            if log.last().is_none_or(|l| (l.1, l.2, l.3) != e) {
                log.push((w.now(), e.0, e.1, e.2));
            }
        }
        false
    });
}

#[test]
fn a_leaf_closes_only_through_the_precharge_sequence() {
    let mut w = World::leaf(leaf_pylon(ContactorSetup::relays()));
    let mut log = Vec::new();
    trace(&mut w, secs(30), &mut log);
    assert!(w.pack.contactors_closed() && told(&w).0 > DeciAmps(0), "it bridges");
    // Negative, then precharge after the negative time, then positive after the precharge time, then precharge off.
    // From the first closing step on (before it: all open, while the readings came in).
    let log: Vec<_> = log.into_iter().skip_while(|l| !(l.1 || l.2 || l.3)).collect();
    let steps: Vec<(bool, bool, bool)> = log.iter().map(|l| (l.1, l.2, l.3)).collect();
    assert_eq!(
        steps[..4],
        [(true, false, false), (true, true, false), (true, true, true), (true, false, true)],
        "{log:?}"
    );
    assert_eq!(log[1].0 - log[0].0, NEGATIVE_TIME);
    assert_eq!(log[2].0 - log[1].0, PRECHARGE_TIME);
    // No current before the sequence is done: the contactors count as closed only at its end.
    assert_eq!(w.bridge.relay_state(), Some(ContactorState::Closed));
}

#[test]
fn every_open_decision_opens_the_outputs_within_100_ms() {
    for what in ["stop", "critical cell", "relay cut", "silent pack"] {
        let mut w = World::leaf(leaf_pylon(ContactorSetup::relays()));
        assert!(w.run_until_cond(secs(30), |w| w.bridge.relay_state() == Some(ContactorState::Closed)));
        w.run_for(secs(5));
        match what {
            "stop" => w.bridge.handle_command(w.now(), Command::Stop).unwrap(),
            "critical cell" => {
                let now_mv = w.pack.cell_voltages()[3].0 as i32;
                w.pack.set_cell_offset(3, 4260 - now_mv);
            }
            "relay cut" => w.pack.set_requests(dbe_sim::leaf::LbcRequests { relay_cut: 1, ..Default::default() }),
            _ => w.pack.set_silent(true),
        }
        let mut decided = None;
        let mut opened = None;
        w.run_until_cond(secs(60), |w| {
            if w.bridge.contactor_request() == Some(ContactorRequest::Open) {
                decided.get_or_insert(w.now());
            }
            if w.bridge.relay_outputs().is_some_and(|o| o.all_open()) {
                opened.get_or_insert(w.now());
            }
            opened.is_some()
        });
        let (decided, opened) = (decided.expect(what), opened.expect(what));
        assert!(
            opened - decided <= Duration::from_millis(100),
            "{what}: opened {} after the decision",
            opened - decided
        );
        assert!(!w.pack.contactors_closed(), "{what}: the pack's relays follow the outputs");
    }
}

#[test]
fn a_relay_that_does_not_follow_opens_everything_and_gives_0_a_until_start() {
    let mut setup = ContactorSetup::relays();
    setup.sequence.feedback = OutputSet::NEGATIVE | OutputSet::POSITIVE;
    let mut w = World::leaf(leaf_pylon(setup));
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0)));
    // The positive drops out (a failed coil): the read-back disagrees with the command.
    w.pack.set_relay_stuck(Some(false));
    assert!(w.run_until_cond(secs(5), |w| w.bridge.events().is_active(EventKind::ContactorNotFollowing)));
    assert_eq!(w.bridge.relay_state(), Some(ContactorState::OpenedByFault));
    assert!(w.run_until_cond(Duration::from_millis(100), |w| w.bridge.relay_outputs().unwrap().all_open()));
    assert!(w.run_until_cond(secs(3), |w| told(w) == (DeciAmps(0), DeciAmps(0))));
    w.pack.set_relay_stuck(None);
    w.run_for(secs(10));
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)), "latched until Start");
    w.bridge.handle_command(w.now(), Command::Start).unwrap();
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0) && w.pack.contactors_closed()), "recovery");
}

#[test]
fn mode_none_says_plainly_that_dbe_cannot_open_the_pack() {
    let mut w = World::leaf(leaf_pylon(ContactorSetup::with_mode(ContactorMode::None)));
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0) && w.inverter.state() == SimState::Running));
    assert!(w.bridge.events().is_active(EventKind::ContactorsNotControlled));
    assert_eq!(w.bridge.relay_outputs(), None);
    w.bridge.handle_command(w.now(), Command::Stop).unwrap();
    w.run_for(secs(10));
    // The decision is made and the inverter is told 0 A, but nothing can open the manual switches.
    assert_eq!(w.bridge.contactor_request(), Some(ContactorRequest::Open));
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)));
    assert!(w.pack.contactors_closed());
    assert!(w.bridge.events().is_active(EventKind::ContactorsNotControlled), "stays active");
}

#[test]
fn the_inverter_withdrawing_its_permission_opens_the_contactors() {
    let mut w = World::leaf(leaf_pylon(ContactorSetup::relays()));
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0)));
    // Pylon CAN 0x8210: neither charge nor discharge asked.
    let cmd = dbe_core::CanFrame::extended(0x8210, &[0x00, 0x00]).unwrap();
    let _ = w.bridge.handle_frame(w.now(), dbe_core::bridge::Port::Inverter, &cmd);
    assert!(w.run_until_cond(secs(5), |w| !w.pack.contactors_closed()), "permission withdrawn: opened");
    assert_eq!(w.bridge.output().charge_limited_by.name(), "inverter_permission");
    let cmd = dbe_core::CanFrame::extended(0x8210, &[0xAA, 0xAA]).unwrap();
    let _ = w.bridge.handle_frame(w.now(), dbe_core::bridge::Port::Inverter, &cmd);
    assert!(w.run_until_cond(secs(10), |w| w.pack.contactors_closed() && told(w).0 > DeciAmps(0)), "granted again");
}

#[test]
fn bms_reset_power_cycles_the_bms_through_its_output_then_bridges_again() {
    use dbe_core::contactor::{BmsPowerConfig, BMS_POWER_OFF_TIME};
    let mut setup = ContactorSetup::relays();
    setup.sequence.bms_power = Some(BmsPowerConfig::default());
    let mut w = World::leaf(leaf_pylon(setup));
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0) && w.pack.contactors_closed()));
    // An inverter slow to follow: 30 A still flows after the pause.
    w.forced_current = Some(DeciAmps(-300));
    w.run_for(secs(1));
    w.bridge.handle_command(w.now(), Command::BmsReset).unwrap();
    assert!(w.bridge.output().paused, "paused at once");
    assert!(w.run_until_cond(secs(3), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "the inverter is told 0 A");
    assert!(w.bridge.relay_outputs().unwrap().bms_power, "the power stays on while current flows");
    assert_eq!(w.bridge.bms_cycle_phase(), Some("pausing"));
    w.forced_current = None;
    assert!(w.run_until_cond(secs(1), |w| !w.bridge.relay_outputs().unwrap().bms_power), "cut once it stopped");
    let off_at = w.now();
    assert!(w.bridge.handle_command(w.now(), Command::BmsReset).is_err(), "one cycle at a time");
    // A dead BMS says nothing: its readings go stale and the contactors open on that.
    // Unknown current: the open-under-load ceiling (7 s) decides.
    assert!(w.run_until_cond(secs(10), |w| !w.pack.contactors_closed()), "opened while the BMS is off");
    assert!(w.run_until_cond(BMS_POWER_OFF_TIME + secs(1), |w| w.bridge.relay_outputs().unwrap().bms_power));
    assert!(w.now() - off_at >= BMS_POWER_OFF_TIME, "off for the configured time");
    assert!(w.run_until_cond(secs(60), |w| told(w).0 > DeciAmps(0) && w.pack.contactors_closed()), "bridging again");
    assert!(!w.bridge.output().paused, "resumed");
    assert_eq!(w.bridge.bms_cycle_phase(), None);
}

#[test]
fn bms_reset_without_a_bms_power_output_is_refused_and_changes_nothing() {
    let mut w = World::leaf(leaf_pylon(ContactorSetup::relays()));
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0)));
    assert!(w.bridge.handle_command(w.now(), Command::BmsReset).is_err());
    assert!(!w.bridge.output().paused);
    assert_eq!(w.bridge.bms_cycle_phase(), None);
}
