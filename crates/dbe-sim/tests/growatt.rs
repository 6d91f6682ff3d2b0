//! Growatt HV CAN in simulated time: the LEAF (and the Tesla Model 3) simulator → the bridge → a simulated Growatt
//! SPH speaking the protocol. The battery stays silent until the inverter's heartbeat, then sends its 20 frames in
//! 5 batches every second; the inverter must hold exactly the limits the supervisor decided, see the forbidden
//! flags with each 0 A, the supervisor's alarms in the protection bitmap, and lose the battery's current when its
//! link is lost.

use dbe_core::battery::tesla::{TeslaChemistry, TeslaModel3Options};
use dbe_core::battery::{BatteryConfig, BatteryKind};
use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::contactor::{ContactorMode, ContactorSetup};
use dbe_core::events::EventKind;
use dbe_core::inverter::{AnyInverter, InverterConfig, InverterKind};
use dbe_core::supervisor::{Alarms, SupervisorConfig};
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{CanFrame, Duration, Instant};
use dbe_sim::growatt_inverter::{GrowattInverter, GrowattTold};
use dbe_sim::pack::{Fault, SimPack};
use dbe_sim::sim_inverter::{SimInverter, SimState};
use dbe_sim::tesla::{TeslaPack, TeslaPackParams};
use dbe_sim::world::{Demand, World};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config(battery: BatteryConfig, contactors: ContactorSetup) -> BridgeConfig {
    BridgeConfig {
        battery,
        inverter: InverterConfig::GrowattHvCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors,
    }
}

fn world() -> World {
    World::leaf(config(BatteryKind::NissanLeaf.into(), ContactorSetup::default()))
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

fn growatt<P: SimPack>(w: &World<P>) -> &GrowattInverter {
    match &w.inverter {
        SimInverter::GrowattHvCan(p) => p,
        _ => panic!("Growatt"),
    }
}

fn growatt_told<P: SimPack>(w: &World<P>) -> GrowattTold {
    growatt(w).told().expect("the battery has answered")
}

fn limit(w: &mut World, charge: Option<DeciAmps>, discharge: Option<DeciAmps>) {
    let now = w.now();
    w.bridge.handle_command(now, Command::SetTemporaryLimits { charge, discharge, timeout: secs(600) }).unwrap();
}

/// The frames the bridge sent to the inverter since the tap was last cleared.
fn wire(w: &mut World) -> Vec<(Instant, CanFrame)> {
    w.inverter_wire.replace(Vec::new()).unwrap_or_default()
}

#[test]
fn silent_until_the_heartbeat_then_20_frames_in_5_batches_every_second() {
    let mut w = world();
    w.inverter.set_silent(true);
    w.inverter_wire = Some(Vec::new());
    w.run_for(secs(10));
    assert!(wire(&mut w).is_empty(), "an ARK battery does not talk into a silent inverter");
    w.inverter.set_silent(false);
    let from = w.now();
    w.run_for(secs(10));
    let sent = wire(&mut w);
    assert!(sent.iter().all(|(t, f)| *t >= from && f.extended_id().is_some() && f.len() == 8));
    // 10 s: 10 sets (or 11, with the one at the start of the next second), each of all 20 ids once.
    let ids: Vec<u32> = sent.iter().map(|(_, f)| f.extended_id().unwrap()).collect();
    assert!((200..=220).contains(&ids.len()), "{} frames", ids.len());
    assert_eq!(&ids[..4], [0x3110, 0x3120, 0x3130, 0x3140]);
    assert_eq!(ids[19], 0x3F00);
    // Within a set, the batches come 10 ms apart (allowing the bridge's scheduling granularity).
    let set: Vec<Instant> = sent[..20].iter().map(|(t, _)| *t).collect();
    for k in 0..5 {
        assert!(set[4 * k..4 * k + 4].iter().all(|t| *t == set[4 * k]), "batch {k} split: {set:?}");
        if k > 0 {
            let gap = set[4 * k] - set[4 * k - 4];
            assert!(gap >= Duration::from_millis(10) && gap <= Duration::from_millis(20), "gap {gap}");
        }
    }
    // Every id of the set reaches the simulated inverter as often as the others.
    let counts = growatt_told(&w).counts;
    assert!(counts.iter().all(|&c| c + 1 >= counts[0] && c <= counts[0]), "{counts:?}");
    // And the bridge decoded the inverter's frames.
    let AnyInverter::GrowattHvCan(p) = w.bridge.inverter() else { panic!("Growatt") };
    assert!(p.pcs().heartbeat.is_some_and(|(_, safety)| safety == 0x14) && p.pcs().clock.is_some(), "{:?}", p.pcs());
}

#[test]
fn the_inverter_holds_the_supervisors_limits_and_draws_within_them() {
    let mut w = world();
    w.demand = Demand::Constant(Watts(-3000));
    running(&mut w, "growatt");
    assert!(w.run_until_cond(secs(2), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() < DeciAmps(0)), "it discharges");
    let t = growatt_told(&w);
    assert!(t.normal && !t.fault && !t.no_charge && !t.no_discharge, "{t:?}");
    assert_eq!(t.cells, 96);
    assert_eq!((t.protection, t.alarm), (0, 0));
    assert!(t.voltage.0.abs_diff(w.pack.pack_voltage().0) <= 20, "{:?} vs {:?}", t.voltage, w.pack.pack_voltage());
    assert_eq!(t.max_voltage, w.bridge.output().max_charge_voltage);
    assert_eq!(t.min_voltage, w.bridge.output().min_discharge_voltage);
    assert!(-w.pack.current().0 <= decided(&w).1 .0, "drew beyond the discharge limit");
}

#[test]
fn limits_to_0_in_each_direction_carry_the_forbidden_flags() {
    let mut w = world();
    w.demand = Demand::Constant(Watts(2500));
    running(&mut w, "growatt");
    limit(&mut w, Some(DeciAmps(0)), None);
    assert!(w.run_until_cond(secs(2), |w| growatt_told(w).no_charge), "no-charge flag never set");
    let t = growatt_told(&w);
    assert_eq!(t.charge_limit, DeciAmps(0));
    assert!(!t.no_discharge && t.discharge_limit > DeciAmps(0), "discharging stays allowed: {t:?}");
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() <= DeciAmps(0)), "still charging");

    w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
    w.demand = Demand::Constant(Watts(-2500));
    limit(&mut w, None, Some(DeciAmps(0)));
    assert!(w.run_until_cond(secs(2), |w| growatt_told(w).no_discharge && !growatt_told(w).no_charge));
    assert_eq!(growatt_told(&w).discharge_limit, DeciAmps(0));
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() >= DeciAmps(0)), "still discharging");
    w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
    assert!(w.run_until_cond(secs(2), |w| w.pack.current() < DeciAmps(0)), "discharges again");
}

#[test]
fn stale_pack_data_gives_0_a_both_flags_and_a_fault_then_recovers() {
    let mut w = world();
    w.demand = Demand::Constant(Watts(-2000));
    running(&mut w, "growatt");
    w.pack.apply(Fault::Silent(true));
    let at = w.now();
    assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "told {:?}", told(&w));
    assert!(w.now() - at <= secs(2), "0 A after {}", w.now() - at);
    let t = growatt_told(&w);
    assert!(t.no_charge && t.no_discharge && t.fault && !t.normal, "{t:?}");
    assert_eq!((t.charge_limit, t.discharge_limit), (DeciAmps(0), DeciAmps(0)));
    // The supervisor's communication alarm is in the protection bitmap ("other failure", bit 11).
    assert!(w.bridge.output().alarms.contains(Alarms::COMMUNICATION));
    assert_ne!(t.protection & 1 << 11, 0, "{:#x}", t.protection);
    // Not "normal" any more: the inverter stops.
    assert_ne!(w.inverter.state(), SimState::Running);
    assert_eq!(w.inverter.current(), DeciAmps(0));
    w.pack.apply(Fault::Silent(false));
    running(&mut w, "growatt after the pack returned");
    assert_eq!(growatt_told(&w).protection, 0);
}

#[test]
fn a_supervisor_alarm_appears_in_the_protection_bitmap() {
    let mut w = world();
    running(&mut w, "growatt");
    // Every sensor 60 °C hotter: the supervisor's over-temperature alarm, 0 A both ways.
    w.pack.apply(Fault::TemperatureOffset(600));
    assert!(
        w.run_until_cond(secs(10), |w| w.bridge.output().alarms.contains(Alarms::OVER_TEMPERATURE)),
        "no over-temperature alarm: {:?}",
        w.bridge.output().alarms
    );
    // Charge and discharge over-temperature protection (bits 14 and 15), within a second.
    assert!(
        w.run_until_cond(secs(2), |w| growatt_told(w).protection & 0xC000 == 0xC000),
        "{:#x}",
        growatt_told(&w).protection
    );
    assert!(growatt_told(&w).fault);
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)));
    w.pack.apply(Fault::TemperatureOffset(0));
    assert!(w.run_until_cond(secs(30), |w| growatt_told(w).protection == 0), "{:#x}", growatt_told(&w).protection);
}

#[test]
fn link_loss_is_inverter_missing_and_the_bridge_recovers() {
    let mut w = world();
    running(&mut w, "growatt");
    let timeout = InverterKind::GrowattHvCan.info().link_timeout.unwrap();
    w.inverter.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(120), |w| w.bridge.events().is_active(EventKind::InverterMissing)));
    assert!(w.now() - at <= timeout + secs(1), "missing after {}", w.now() - at);
    assert!(w.now() - at + secs(2) >= timeout, "missing already after {}", w.now() - at);
    assert_eq!(decided(&w), (DeciAmps(0), DeciAmps(0)));
    assert!(w.run_until_cond(secs(5), |w| !w.pack.contactors_closed()), "contactors stayed closed");
    w.inverter.set_silent(false);
    assert!(w.run_until_cond(secs(10), |w| !w.bridge.events().is_active(EventKind::InverterMissing)));
    running(&mut w, "growatt after the heartbeat returned");
}

#[test]
fn the_inverter_faults_when_the_answers_stop() {
    let mut w = world();
    running(&mut w, "growatt");
    w.cuts.inverter = true;
    assert!(w.run_until_cond(secs(10), |w| w.inverter.state() == SimState::Faulted), "{:?}", w.inverter.state());
    assert_eq!(w.inverter.current(), DeciAmps(0));
    w.cuts.inverter = false;
    running(&mut w, "growatt after the cable returned");
}

#[test]
fn the_tesla_pack_is_bridged_to_a_growatt_too() {
    let battery =
        BatteryConfig::TeslaModel3(TeslaModel3Options { chemistry: TeslaChemistry::NcaNcm, digital_hvil: false });
    let mut w = World::with_pack(
        config(battery, ContactorSetup::with_mode(ContactorMode::Can)),
        TeslaPack::new(TeslaPackParams::nca(), Instant::ZERO),
        Instant::ZERO,
    );
    w.demand = Demand::Constant(Watts(2000));
    running(&mut w, "tesla → growatt");
    assert!(w.run_until_cond(secs(2), |w| told(w) == decided(w)), "told {:?}, decided {:?}", told(&w), decided(&w));
    assert!(w.run_until_cond(secs(2), |w| w.pack.model().current() > DeciAmps(0)), "it charges");
    let t = growatt_told(&w);
    assert_eq!(t.cells as usize, w.bridge.model().cells.voltages().len());
    assert!(t.cell_min.0 > 3000 && t.cell_max.0 < 4300 && t.cell_min <= t.cell_max, "{t:?}");
}
