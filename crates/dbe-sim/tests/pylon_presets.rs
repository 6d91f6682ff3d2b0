//! The Pylon HV presets (`ferroamp-can`, `solxpow-can`) in simulated time: the LEAF and the Tesla simulators →
//! the bridge → a simulated Ferroamp / Solxpow inverter polling with the preset's fixed settings. The inverter must
//! see exactly the limits the supervisor decided (0 A with the 0x4280 forbidden marks when it says 0), 0 A once
//! the pack's data goes stale, and a silent inverter must count as missing within the protocol's 60 s.

use dbe_core::battery::tesla::{TeslaChemistry, TeslaModel3Options};
use dbe_core::battery::{BatteryConfig, BatteryKind};
use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::contactor::{ContactorMode, ContactorSetup};
use dbe_core::events::EventKind;
use dbe_core::inverter::{InverterConfig, InverterKind};
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{Duration, Instant};
use dbe_sim::pack::SimPack;
use dbe_sim::pylon_inverter::{Told, LFP_CELL_WINDOW};
use dbe_sim::sim_inverter::{SimInverter, SimState};
use dbe_sim::tesla::{TeslaPack, TeslaPackParams};
use dbe_sim::world::{Demand, World};

const PRESETS: [InverterKind; 2] = [InverterKind::FerroampCan, InverterKind::SolxpowCan];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn world(kind: InverterKind) -> World {
    World::leaf(BridgeConfig {
        battery: BatteryKind::NissanLeaf.into(),
        inverter: InverterConfig::default_for(kind),
        supervisor: SupervisorConfig::default(),
        contactors: ContactorSetup::default(),
    })
}

fn pylon_told<P: SimPack>(w: &World<P>) -> Option<Told> {
    match &w.inverter {
        SimInverter::PylonCan(p) => p.told(),
        _ => panic!("a preset is simulated by the Pylon inverter"),
    }
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

fn limit<P: SimPack>(w: &mut World<P>, charge: Option<DeciAmps>, discharge: Option<DeciAmps>) {
    let now = w.now();
    w.bridge.handle_command(now, Command::SetTemporaryLimits { charge, discharge, timeout: secs(600) }).unwrap();
}

#[test]
fn each_preset_bridges_the_leaf_with_the_supervisors_limits() {
    for kind in PRESETS {
        let mut w = world(kind);
        running(&mut w, kind.info().name);
        w.run_for(secs(5));
        assert_eq!(told(&w), decided(&w), "{kind}");
        let t = pylon_told(&w).unwrap();
        let (lo, hi) = LFP_CELL_WINDOW;
        if kind == InverterKind::FerroampCan {
            // The LEAF's NMC cells arrive inside the LFP window the Ferroamp accepts (else it would fault).
            assert!(t.cell_min >= lo && t.cell_max <= hi, "{t:?}");
        } else {
            // Solxpow gets the real cells and cutoffs 2.0 V inside the supervisor's.
            let m = w.bridge.model();
            assert_eq!(t.cell_max, m.cells.max().unwrap().1, "{t:?}");
            assert_eq!(t.max_charge_voltage.0 + 20, w.bridge.output().max_charge_voltage.0);
            assert_eq!(t.min_discharge_voltage.0 - 20, w.bridge.output().min_discharge_voltage.0);
        }
    }
}

#[test]
fn limits_to_0_in_each_direction_are_forbidden_and_the_inverter_stops() {
    for kind in PRESETS {
        let mut w = world(kind);
        w.demand = Demand::Constant(Watts(2500));
        running(&mut w, kind.info().name);
        limit(&mut w, Some(DeciAmps(0)), None);
        assert!(w.run_until_cond(secs(3), |w| told(w).0 == DeciAmps(0)), "{kind}: told {:?}", told(&w));
        assert!(pylon_told(&w).unwrap().charge_forbidden && !pylon_told(&w).unwrap().discharge_forbidden, "{kind}");
        assert!(w.run_until_cond(secs(3), |w| w.pack.current() <= DeciAmps(0)), "{kind}: still charging");

        w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
        w.demand = Demand::Constant(Watts(-2500));
        limit(&mut w, None, Some(DeciAmps(0)));
        assert!(w.run_until_cond(secs(3), |w| told(w).1 == DeciAmps(0) && told(w).0 > DeciAmps(0)), "{kind}");
        assert!(pylon_told(&w).unwrap().discharge_forbidden, "{kind}");
        assert!(w.run_until_cond(secs(3), |w| w.pack.current() >= DeciAmps(0)), "{kind}: still discharging");
        w.bridge.handle_command(w.now(), Command::ClearTemporaryLimits).unwrap();
        assert!(w.run_until_cond(secs(3), |w| w.pack.current() < DeciAmps(0)), "{kind}: discharges again");
    }
}

#[test]
fn stale_pack_data_gives_0_a_and_forbids_both_directions() {
    for kind in PRESETS {
        let mut w = world(kind);
        w.demand = Demand::Constant(Watts(-2000));
        running(&mut w, kind.info().name);
        w.pack.set_silent(true);
        let at = w.now();
        assert!(w.run_until_cond(secs(10), |w| told(w) == (DeciAmps(0), DeciAmps(0))), "{kind}: {:?}", told(&w));
        assert!(w.now() - at <= secs(3), "{kind}: 0 A after {}", w.now() - at);
        let t = pylon_told(&w).unwrap();
        assert!(t.charge_forbidden && t.discharge_forbidden, "{kind}: {t:?}");
        assert_eq!(w.inverter.current(), DeciAmps(0));
        w.pack.set_silent(false);
        running(&mut w, "after the pack returned");
    }
}

#[test]
fn a_silent_inverter_is_missing_within_60_s_and_the_bridge_recovers() {
    for kind in PRESETS {
        let mut w = world(kind);
        running(&mut w, kind.info().name);
        let timeout = kind.info().link_timeout.unwrap();
        w.inverter.set_silent(true);
        let at = w.now();
        assert!(w.run_until_cond(secs(120), |w| w.bridge.events().is_active(EventKind::InverterMissing)));
        assert!(w.now() - at <= timeout + secs(1), "{kind}: missing after {}", w.now() - at);
        assert_eq!(decided(&w), (DeciAmps(0), DeciAmps(0)));
        assert!(w.run_until_cond(secs(5), |w| !w.pack.contactors_closed()), "{kind}: contactors stayed closed");
        w.inverter.set_silent(false);
        assert!(w.run_until_cond(secs(10), |w| !w.bridge.events().is_active(EventKind::InverterMissing)));
        running(&mut w, "after the polls returned");
    }
}

#[test]
fn each_preset_bridges_the_tesla_pack() {
    for kind in PRESETS {
        let cfg = BridgeConfig {
            battery: BatteryConfig::TeslaModel3(TeslaModel3Options {
                chemistry: TeslaChemistry::NcaNcm,
                digital_hvil: false,
            }),
            inverter: InverterConfig::default_for(kind),
            supervisor: SupervisorConfig::default(),
            contactors: ContactorSetup::with_mode(ContactorMode::Can),
        };
        let mut w = World::with_pack(cfg, TeslaPack::new(TeslaPackParams::nca(), Instant::ZERO), Instant::ZERO);
        running(&mut w, kind.info().name);
        w.run_for(secs(5));
        assert_eq!(told(&w), decided(&w), "{kind}");
    }
}
