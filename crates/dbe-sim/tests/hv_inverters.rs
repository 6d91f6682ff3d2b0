//! The high-voltage CAN protocols in simulated time: the LEAF simulator → the bridge → a simulated BYD HVS / SolaX / FoxESS
//! inverter speaking the real protocol. The inverter must see exactly the limits the supervisor decided, 0 A once
//! the pack's data goes stale, and (SolaX) the contactors must follow the inverter's permission.

use dbe_core::battery::BatteryKind;
use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::contactor::ContactorSetup;
use dbe_core::events::EventKind;
use dbe_core::inverter::{AnyInverter, InverterConfig, InverterKind};
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{CanFrame, Duration, Instant};
use dbe_sim::sim_inverter::{SimInverter, SimState};
use dbe_sim::solax_inverter::SolaxInverterState;
use dbe_sim::world::{Demand, World};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn world(inverter: InverterConfig) -> World {
    World::leaf(BridgeConfig {
        battery: BatteryKind::NissanLeaf.into(),
        inverter,
        supervisor: SupervisorConfig::default(),
        contactors: ContactorSetup::default(),
    })
}

fn told(w: &World) -> (DeciAmps, DeciAmps) {
    w.inverter.summary().map_or((DeciAmps(0), DeciAmps(0)), |t| (t.charge_limit, t.discharge_limit))
}

fn decided(w: &World) -> (DeciAmps, DeciAmps) {
    let o = w.bridge.output();
    (o.charge_current_limit, o.discharge_current_limit)
}

fn running(w: &mut World, what: &str) {
    assert!(
        w.run_until_cond(secs(60), |w| w.pack.contactors_closed()
            && w.inverter.state() == SimState::Running
            && told(w).0 > DeciAmps(0)
            && told(w).1 > DeciAmps(0)),
        "{what}: never bridged; told {:?}, decided {:?}",
        told(w),
        decided(w)
    );
}

/// The frames the bridge sent to the inverter since the tap was last cleared.
fn wire(w: &mut World) -> Vec<(Instant, CanFrame)> {
    w.inverter_wire.replace(Vec::new()).unwrap_or_default()
}

#[test]
fn byd_is_silent_until_the_inverter_speaks_then_keeps_its_periods() {
    let mut w = world(InverterConfig::BydCan(Default::default()));
    w.inverter.set_silent(true);
    w.inverter_wire = Some(Vec::new());
    w.run_for(secs(20));
    assert!(wire(&mut w).is_empty(), "a BYD tower does not talk into a silent inverter");
    w.inverter.set_silent(false);
    let from = w.now();
    w.run_for(secs(61));
    let sent = wire(&mut w);
    let ids: Vec<u16> = sent.iter().map(|(_, f)| f.standard_id().unwrap()).collect();
    assert_eq!(&ids[..4], [0x250, 0x290, 0x2D0, 0x3D0], "identity first (the simulator asks for it, too)");
    let count = |id: u16| ids.iter().filter(|&&i| i == id).count();
    // Every 2 s for 61 s: 31 at most (the first at once), each 10 s: 7, each 60 s: 2.
    assert!((30..=31).contains(&count(0x110)), "0x110 × {}", count(0x110));
    assert!((6..=7).contains(&count(0x150)), "0x150 × {}", count(0x150));
    assert_eq!(count(0x150), count(0x1D0));
    assert_eq!(count(0x150), count(0x210));
    assert_eq!(count(0x190), 2);
    assert!(sent.iter().all(|(t, _)| *t >= from));
}

#[test]
fn byd_inverter_sees_the_supervisors_limits_and_its_measurement_is_shown() {
    let mut w = world(InverterConfig::BydCan(Default::default()));
    w.demand = Demand::Constant(Watts(-3000));
    running(&mut w, "byd");
    // 0x110 comes every 2 s: within one period the inverter holds what the supervisor decides.
    assert!(w.run_until_cond(secs(3), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    assert!(w.run_until_cond(secs(1), |w| w.pack.current() < DeciAmps(0)), "it discharges");
    // The inverter's 0x091 reaches the bridge: its bus voltage is the pack's, seen through the protocol.
    // (0x091 comes once a second, so it may be a second behind the pack's voltage under load.)
    w.run_for(secs(2));
    let AnyInverter::BydCan(p) = w.bridge.inverter() else { panic!("BYD CAN") };
    let m = p.measurement().expect("0x091 heard");
    assert!(m.voltage.0.abs_diff(w.pack.pack_voltage().0) <= 20, "{:?} vs {:?}", m.voltage, w.pack.pack_voltage());
    assert!(m.current() < DeciAmps(0), "{m:?}");
}

#[test]
fn byd_inverter_gets_0_a_when_the_pack_data_goes_stale() {
    let mut w = world(InverterConfig::BydCan(Default::default()));
    w.demand = Demand::Constant(Watts(2000));
    running(&mut w, "byd");
    w.pack.set_silent(true);
    let at = w.now();
    // The LEAF's 0x1DB is required within 1 s; 0x110 follows within its 2 s period.
    assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
    assert!(w.now() - at <= secs(3), "0 A after {}", w.now() - at);
    assert_eq!(w.inverter.current(), DeciAmps(0));
}

fn solax(w: &mut World) -> &mut dbe_sim::solax_inverter::SolaxInverter {
    match &mut w.inverter {
        SimInverter::SolaxCan(p) => p,
        _ => panic!("SolaX"),
    }
}

#[test]
fn solax_closes_only_once_the_inverter_asks_and_sees_the_supervisors_limits() {
    let mut w = world(InverterConfig::SolaxCan(Default::default()));
    solax(&mut w).request_open(true); // the inverter never asks to close
    w.run_for(secs(20));
    assert!(!w.pack.contactors_closed(), "closed without the inverter's permission");
    assert_eq!(w.bridge.inverter().contactor_permission(), Some(false));
    assert_eq!(decided(&w), (DeciAmps(0), DeciAmps(0)));
    solax(&mut w).request_open(false);
    w.demand = Demand::Constant(Watts(2500));
    running(&mut w, "solax");
    assert_eq!(solax(&mut w).state(), SolaxInverterState::Running);
    assert!(solax(&mut w).told().unwrap().contactor_closed);
    // Answers go out on every 1 s poll.
    assert!(w.run_until_cond(secs(2), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    assert!(w.run_until_cond(secs(1), |w| w.pack.current() > DeciAmps(0)), "it charges");
    // Cell voltages arrive rescaled into SolaX's 3.0..3.5 V.
    let t = solax(&mut w).told().unwrap();
    assert!((30..=35).contains(&t.cell_min_dv) && (30..=35).contains(&t.cell_max_dv), "{t:?}");
}

#[test]
fn solax_open_request_opens_the_contactors_and_a_close_request_closes_them_again() {
    let mut w = world(InverterConfig::SolaxCan(Default::default()));
    running(&mut w, "solax");
    solax(&mut w).request_open(true);
    assert!(w.run_until_cond(secs(5), |w| !w.pack.contactors_closed()), "the open request was not obeyed");
    assert_eq!(told(&w).0, DeciAmps(0));
    solax(&mut w).request_open(false);
    running(&mut w, "solax again");
}

#[test]
fn solax_poll_loss_withdraws_permission_and_opens_the_contactors() {
    let mut w = world(InverterConfig::SolaxCan(Default::default()));
    running(&mut w, "solax");
    w.inverter.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(10), |w| !w.pack.contactors_closed()), "contactors stayed closed");
    let took = w.now() - at;
    // 2 s without a valid poll (from the last one, up to 1 s before `at`), then the bridge's next evaluation.
    assert!(took <= secs(2) + Duration::from_millis(200), "opened after {took}");
    assert_eq!(w.bridge.inverter().contactor_permission(), Some(false));
    assert_eq!(decided(&w), (DeciAmps(0), DeciAmps(0)));
    // Polls return: the handshake starts over and it bridges again.
    w.inverter.set_silent(false);
    running(&mut w, "solax after the polls returned");
}

#[test]
fn solax_inverter_gets_0_a_when_the_pack_data_goes_stale() {
    let mut w = world(InverterConfig::SolaxCan(Default::default()));
    w.demand = Demand::Constant(Watts(-2000));
    running(&mut w, "solax");
    w.pack.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
    assert!(w.now() - at <= secs(2), "0 A after {}", w.now() - at);
    assert_eq!(w.inverter.current(), DeciAmps(0));
}

fn world_with_precharge_check(broken: bool) -> World {
    use dbe_core::contactor::PrechargeCheck;
    let mut contactors = ContactorSetup::relays();
    contactors.sequence.precharge_check = Some(PrechargeCheck::default());
    let mut w = World::leaf(BridgeConfig {
        battery: BatteryKind::NissanLeaf.into(),
        inverter: InverterConfig::BydCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors,
    });
    w.precharge_broken = broken;
    w
}

#[test]
fn byd_reports_the_bus_rising_through_the_precharge_and_the_positive_waits_for_it() {
    use dbe_core::contactor::ContactorState;
    let mut w = world_with_precharge_check(false);
    // While precharging, the positive stays open until the bus the inverter reports (0x091) is near the pack.
    assert!(w.run_until_cond(secs(60), |w| w.bridge.relay_state() == Some(ContactorState::Precharging)));
    let mut max_gap_at_positive = None;
    assert!(w.run_until_cond(secs(10), |w| {
        let o = w.bridge.relay_outputs().unwrap();
        if o.positive && max_gap_at_positive.is_none() {
            let pack = w.pack.pack_voltage().0 as f64 / 10.0;
            max_gap_at_positive = Some((pack - w.bus_voltage()).abs());
        }
        w.bridge.relay_state() == Some(ContactorState::Closed)
    }));
    let gap = max_gap_at_positive.expect("the positive closed");
    // The margin is 20 V; the bus keeps rising between the 0x091 report the bridge judged and this step.
    assert!(gap <= 20.0, "positive closed with the bus {gap:.1} V from the pack");
    running(&mut w, "precharge check");
}

#[test]
fn a_broken_precharge_fails_the_check_and_the_contactors_stay_open() {
    use dbe_core::contactor::ContactorState;
    use dbe_core::events::EventKind;
    let mut w = world_with_precharge_check(true);
    assert!(
        w.run_until_cond(secs(60), |w| w.bridge.events().is_active(EventKind::ContactorPrechargeFailed)),
        "the precharge check fails"
    );
    assert_eq!(w.bridge.relay_state(), Some(ContactorState::OpenedByFault));
    w.run_for(secs(30));
    assert!(!w.pack.contactors_closed(), "never closed on an uncharged bus");
    assert!(!w.bridge.relay_outputs().unwrap().positive);
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)));
}

fn foxess(w: &mut World) -> &mut dbe_sim::foxess_inverter::FoxessInverter {
    match &mut w.inverter {
        SimInverter::FoxessCan(p) => p,
        _ => panic!("FoxESS"),
    }
}

#[test]
fn foxess_answers_only_what_is_polled_and_sees_the_supervisors_limits() {
    let mut w = world(InverterConfig::FoxessCan(Default::default()));
    w.inverter.set_silent(true);
    w.inverter_wire = Some(Vec::new());
    w.run_for(secs(10));
    assert!(wire(&mut w).is_empty(), "a FoxESS stack only answers polls");
    w.inverter.set_silent(false);
    w.demand = Demand::Constant(Watts(2500));
    running(&mut w, "foxess");
    assert!(w.run_until_cond(secs(2), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    assert!(w.run_until_cond(secs(1), |w| w.pack.current() > DeciAmps(0)), "it charges");
    // Within 6 s every kind of answer has gone out: module, cell and serial frames.
    w.run_for(secs(7));
    let t = foxess(&mut w).told().unwrap();
    assert_eq!(t.modules, 8);
    assert!(t.module_frames >= 8 && t.cell_frames >= 36 && t.serial_frames >= 27, "{t:?}");
    // Each of the 8 modules carries an eighth of the pack voltage, in mV.
    let per_module = w.pack.pack_voltage().0 as i32 * 100 / 8;
    assert!((t.module_voltage.0 as i32 - per_module).abs() <= 300, "{t:?} vs {per_module} mV");
    // The LEAF's NMC cells arrive inside the LFP window the inverter accepts.
    assert!((2500..=3400).contains(&t.cell_min.0) && (2500..=3400).contains(&t.cell_max.0), "{t:?}");
}

fn limit(w: &mut World, charge: Option<DeciAmps>, discharge: Option<DeciAmps>) {
    let now = w.now();
    w.bridge.handle_command(now, Command::SetTemporaryLimits { charge, discharge, timeout: secs(600) }).unwrap();
}

#[test]
fn foxess_limits_to_0_in_each_direction_and_the_charge_inhibit_bit() {
    let mut w = world(InverterConfig::FoxessCan(Default::default()));
    w.demand = Demand::Constant(Watts(2500));
    running(&mut w, "foxess");
    // Charging forbidden: 0 A in 0x1872 and the inhibit bit, which the simulated KH obeys on its own.
    limit(&mut w, Some(DeciAmps(0)), None);
    assert!(w.run_until_cond(secs(2), |w| told(w).0 == DeciAmps(0)), "told {:?}", told(&w));
    assert!(foxess(&mut w).told().unwrap().charge_inhibit);
    assert!(told(&w).1 > DeciAmps(0), "discharging stays allowed");
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() <= DeciAmps(0)), "still charging");
    // Discharging forbidden: 0 A, no inhibit bit (FoxESS has none for discharging).
    w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
    w.demand = Demand::Constant(Watts(-2500));
    limit(&mut w, None, Some(DeciAmps(0)));
    assert!(w.run_until_cond(secs(2), |w| told(w).1 == DeciAmps(0) && told(w).0 > DeciAmps(0)), "{:?}", told(&w));
    assert!(!foxess(&mut w).told().unwrap().charge_inhibit);
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() >= DeciAmps(0)), "still discharging");
    w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() < DeciAmps(0)), "discharges again");
}

#[test]
fn foxess_inverter_gets_0_a_when_the_pack_data_goes_stale() {
    let mut w = world(InverterConfig::FoxessCan(Default::default()));
    w.demand = Demand::Constant(Watts(-2000));
    running(&mut w, "foxess");
    w.pack.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
    assert!(w.now() - at <= secs(2), "0 A after {}", w.now() - at);
    // The stack reports itself in error with the contactor open: the inverter stops.
    assert!(w.run_until_cond(secs(2), |w| w.inverter.state() != SimState::Running));
    let t = foxess(&mut w).told().unwrap();
    assert!(!t.contactor_closed && t.charge_inhibit, "{t:?}");
    assert_eq!(w.inverter.current(), DeciAmps(0));
    w.pack.set_silent(false);
    running(&mut w, "foxess after the pack returned");
}

#[test]
fn foxess_link_loss_is_inverter_missing_and_the_bridge_recovers() {
    let mut w = world(InverterConfig::FoxessCan(Default::default()));
    running(&mut w, "foxess");
    let timeout = InverterKind::FoxessCan.info().link_timeout.unwrap();
    w.inverter.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(120), |w| w.bridge.events().is_active(EventKind::InverterMissing)));
    assert!(w.now() - at <= timeout + secs(1), "missing after {}", w.now() - at);
    assert_eq!(decided(&w), (DeciAmps(0), DeciAmps(0)));
    assert!(w.run_until_cond(secs(5), |w| !w.pack.contactors_closed()), "contactors stayed closed");
    w.inverter.set_silent(false);
    assert!(w.run_until_cond(secs(10), |w| !w.bridge.events().is_active(EventKind::InverterMissing)));
    running(&mut w, "foxess after the polls returned");
}
