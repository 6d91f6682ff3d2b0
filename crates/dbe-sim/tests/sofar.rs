//! Sofar BMS (extended) via CAN in simulated time: the LEAF (and the Tesla) simulator → the bridge → a simulated
//! Sofar HYD listening to one battery address. The inverter must see exactly the limits the supervisor decided, with
//! the 0x30F enable bits following them, 0 A once the pack's data goes stale, its inquiries answered, and every id
//! moved by the battery ID. The protocol has no link timeout of its own (see `sofar_can`'s module doc); with one
//! configured, a silent inverter is missing and comes back.

use dbe_core::battery::tesla::{TeslaChemistry, TeslaModel3Options};
use dbe_core::battery::{BatteryConfig, BatteryKind};
use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::contactor::{ContactorMode, ContactorSetup};
use dbe_core::events::EventKind;
use dbe_core::inverter::sofar_can::SofarCanOptions;
use dbe_core::inverter::{InverterConfig, InverterKind};
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{CanFrame, Duration, Instant};
use dbe_sim::pack::SimPack;
use dbe_sim::sim_inverter::{SimInverter, SimState};
use dbe_sim::sofar_inverter::{SofarInverter, SofarInverterParams, SofarTold};
use dbe_sim::tesla::{TeslaPack, TeslaPackParams};
use dbe_sim::world::{Demand, World};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn sofar(battery_id: u8) -> InverterConfig {
    InverterConfig::SofarCan(SofarCanOptions { battery_id })
}

fn config(inverter: InverterConfig) -> BridgeConfig {
    BridgeConfig {
        battery: BatteryKind::NissanLeaf.into(),
        inverter,
        supervisor: SupervisorConfig::default(),
        contactors: ContactorSetup::default(),
    }
}

fn world(battery_id: u8) -> World {
    World::leaf(config(sofar(battery_id)))
}

fn told<P: SimPack>(w: &World<P>) -> (DeciAmps, DeciAmps) {
    w.inverter.summary().map_or((DeciAmps(0), DeciAmps(0)), |t| (t.charge_limit, t.discharge_limit))
}

fn decided<P: SimPack>(w: &World<P>) -> (DeciAmps, DeciAmps) {
    let o = w.bridge.output();
    (o.charge_current_limit, o.discharge_current_limit)
}

fn bridged<P: SimPack>(w: &World<P>) -> bool {
    w.pack.contactors_closed()
        && w.inverter.state() == SimState::Running
        && told(w).0 > DeciAmps(0)
        && told(w).1 > DeciAmps(0)
}

fn running<P: SimPack>(w: &mut World<P>, what: &str) {
    assert!(w.run_until_cond(secs(60), bridged), "{what}: never bridged; told {:?}, decided {:?}", told(w), decided(w));
}

fn inverter<P: SimPack>(w: &mut World<P>) -> &mut SofarInverter {
    match &mut w.inverter {
        SimInverter::SofarCan(p) => p,
        _ => panic!("Sofar"),
    }
}

fn told_all<P: SimPack>(w: &mut World<P>) -> SofarTold {
    inverter(w).told().expect("the inverter heard its battery")
}

/// The frames the bridge sent to the inverter since the tap was last cleared.
fn wire<P: SimPack>(w: &mut World<P>) -> Vec<(Instant, CanFrame)> {
    w.inverter_wire.replace(Vec::new()).unwrap_or_default()
}

fn limit<P: SimPack>(w: &mut World<P>, charge: Option<DeciAmps>, discharge: Option<DeciAmps>) {
    let now = w.now();
    w.bridge.handle_command(now, Command::SetTemporaryLimits { charge, discharge, timeout: secs(600) }).unwrap();
}

#[test]
fn broadcasts_from_the_start_every_second_and_the_inverter_sees_the_supervisors_limits() {
    let mut w = world(0);
    w.inverter.set_silent(true);
    w.inverter_wire = Some(Vec::new());
    w.run_for(secs(10));
    let sent = wire(&mut w);
    let ids: Vec<u32> = sent.iter().map(|(_, f)| f.extended_id().expect("29-bit")).collect();
    assert_eq!(ids[0], 0x35A, "the alarm frame opens the schedule");
    let count = |id: u32| ids.iter().filter(|&&i| i == id).count();
    // The inverter said nothing, yet the battery broadcasts: once at 0 s, then every second.
    for id in [0x351, 0x355, 0x356, 0x359, 0x35E, 0x35F, 0x30F] {
        assert!((10..=11).contains(&count(id)), "{id:#x} × {}", count(id));
    }
    assert_eq!(count(0x35A), 1);
    assert_eq!(ids.len(), 1 + 7 * count(0x351), "nothing but the set: no answers without inquiries");
    w.inverter.set_silent(false);
    w.demand = Demand::Constant(Watts(2500));
    running(&mut w, "sofar");
    assert!(w.run_until_cond(secs(2), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() > DeciAmps(0)), "it charges");
    let t = told_all(&mut w);
    assert!(t.charge_allowed && t.discharge_allowed, "{t:?}");
    assert_eq!(t.cells, 96, "the LEAF's own cell count in 0x359");
    assert_eq!(t.max_charge_voltage, w.bridge.output().max_charge_voltage);
    assert_eq!(t.min_discharge_voltage, w.bridge.output().min_discharge_voltage);
    // Its inquiries (every 10 s, 0x705 every 60 s) are all answered, each with its own battery id.
    let asked = t.answers;
    w.run_for(secs(61));
    let t = told_all(&mut w);
    assert!(t.answers - asked >= 7, "{} answers in 61 s", t.answers - asked);
    assert_eq!(t.misaddressed_answers, 0);
    let driver = match w.bridge.inverter() {
        dbe_core::inverter::AnyInverter::SofarCan(s) => s.inquiries(),
        _ => unreachable!(),
    };
    assert!(driver >= 7, "{driver} inquiries heard");
}

#[test]
fn limits_to_0_in_each_direction_clear_the_enable_bits() {
    let mut w = world(0);
    w.demand = Demand::Constant(Watts(2500));
    running(&mut w, "sofar");
    // Charging forbidden: 0 A in 0x351 and the charge bit clear, which the simulated HYD obeys on its own.
    limit(&mut w, Some(DeciAmps(0)), None);
    assert!(w.run_until_cond(secs(2), |w| told(w).0 == DeciAmps(0)), "told {:?}", told(&w));
    let t = told_all(&mut w);
    assert!(!t.charge_allowed && t.discharge_allowed && t.charge_limit == DeciAmps(0), "{t:?}");
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() <= DeciAmps(0)), "still charging");
    // Discharging forbidden: 0 A and the discharge bit clear.
    w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
    w.demand = Demand::Constant(Watts(-2500));
    limit(&mut w, None, Some(DeciAmps(0)));
    assert!(w.run_until_cond(secs(2), |w| told(w).1 == DeciAmps(0) && told(w).0 > DeciAmps(0)), "{:?}", told(&w));
    let t = told_all(&mut w);
    assert!(t.charge_allowed && !t.discharge_allowed && t.discharge_limit == DeciAmps(0), "{t:?}");
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() >= DeciAmps(0)), "still discharging");
    w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() < DeciAmps(0)), "discharges again");
}

#[test]
fn stale_pack_data_is_0_a_and_both_bits_clear() {
    let mut w = world(0);
    w.demand = Demand::Constant(Watts(-2000));
    running(&mut w, "sofar");
    w.pack.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
    assert!(w.now() - at <= secs(3), "0 A after {}", w.now() - at);
    let t = told_all(&mut w);
    assert!(!t.charge_allowed && !t.discharge_allowed, "{t:?}");
    assert_eq!((t.charge_limit, t.discharge_limit), (DeciAmps(0), DeciAmps(0)));
    assert!(w.run_until_cond(secs(2), |w| w.inverter.current() == DeciAmps(0)));
    w.pack.set_silent(false);
    running(&mut w, "sofar after the pack returned");
}

#[test]
fn without_a_configured_timeout_a_silent_inverter_is_not_missing() {
    assert_eq!(InverterKind::SofarCan.info().link_timeout, None, "broadcast-only (see the module doc)");
    let mut w = world(0);
    running(&mut w, "sofar");
    w.inverter.set_silent(true);
    w.run_for(secs(300));
    assert!(!w.bridge.events().is_active(EventKind::InverterMissing));
    assert!(bridged(&w), "told {:?}", told(&w));
}

#[test]
fn with_a_configured_timeout_the_inquiries_are_the_link_and_it_recovers() {
    let timeout = secs(30);
    let mut cfg = config(sofar(0));
    cfg.supervisor.inverter_timeout = Some(timeout);
    let mut w = World::leaf(cfg);
    running(&mut w, "sofar");
    // Inquiries every 10 s keep the link.
    w.run_for(secs(60));
    assert!(!w.bridge.events().is_active(EventKind::InverterMissing));
    assert!(bridged(&w));
    w.inverter.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(120), |w| w.bridge.events().is_active(EventKind::InverterMissing)));
    assert!(w.now() - at <= timeout + secs(1), "missing after {}", w.now() - at);
    assert_eq!(decided(&w), (DeciAmps(0), DeciAmps(0)));
    assert!(w.run_until_cond(secs(2), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
    w.inverter.set_silent(false);
    assert!(w.run_until_cond(secs(20), |w| !w.bridge.events().is_active(EventKind::InverterMissing)));
    running(&mut w, "sofar after the inquiries returned");
}

#[test]
fn the_battery_id_moves_every_id_and_an_inverter_set_to_another_address_never_runs() {
    let mut w = world(7);
    w.inverter_wire = Some(Vec::new());
    running(&mut w, "sofar as battery 7");
    w.run_for(secs(61));
    let sent = wire(&mut w);
    assert!(sent.len() > 100);
    for (_, f) in &sent {
        let id = f.extended_id().expect("29-bit");
        assert_eq!(id >> 12, 7, "{id:#x} without battery 7's offset");
    }
    let has = |id: u32| sent.iter().any(|(_, f)| f.extended_id() == Some(id));
    assert!(has(0x7351) && has(0x730F) && has(0x7670), "broadcasts and answers, all offset");
    assert_eq!(told_all(&mut w).misaddressed_answers, 0);
    // The same bridge with the inverter set to battery address 0: it hears nothing of its own.
    let mut w = world(7);
    w.inverter = SimInverter::SofarCan(SofarInverter::new(SofarInverterParams::default(), w.now()));
    w.demand = Demand::Constant(Watts(-2000));
    w.run_for(secs(60));
    assert_eq!(w.inverter.state(), SimState::Waiting);
    assert!(inverter(&mut w).told().is_none());
    assert_eq!(w.pack.current(), DeciAmps(0));
}

#[test]
fn the_tesla_pack_bridges_to_sofar_too() {
    let cfg = BridgeConfig {
        battery: BatteryConfig::TeslaModel3(TeslaModel3Options {
            chemistry: TeslaChemistry::NcaNcm,
            digital_hvil: false,
        }),
        inverter: sofar(1),
        supervisor: SupervisorConfig::default(),
        contactors: ContactorSetup::with_mode(ContactorMode::Can),
    };
    let mut w = World::with_pack(cfg, TeslaPack::new(TeslaPackParams::nca(), Instant::ZERO), Instant::ZERO);
    running(&mut w, "tesla → sofar");
    assert!(w.run_until_cond(secs(2), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    let t = told_all(&mut w);
    assert_eq!(t.cells, 96);
    let pack_dv = w.bridge.model().pack_voltage.unwrap().value;
    assert!(t.voltage.0.abs_diff(pack_dv.0) <= 5, "{:?} vs {pack_dv:?}", t.voltage);
    w.demand = Demand::Constant(Watts(-3000));
    assert!(w.run_until_cond(secs(5), |w| w.pack.model().current() < DeciAmps(-50)), "it discharges");
    // The pack's bus is cut, so its data goes stale: 0 A both ways.
    w.cuts.battery = true;
    assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
}
