//! Whole-bridge scenarios with a Tesla Model 3/Y pack: the simulated BMS (`dbe_sim::tesla`) closes its own
//! contactors only while the driver's car frames arrive valid, and the bridge must read the pack, confirm its
//! chemistry from the cell count, and give 0 A whenever a reading it needs is missing or a cell is out of bounds.

use dbe_core::battery::tesla::{TeslaChemistry, TeslaModel3Options};
use dbe_core::battery::{BatteryConfig, ContactorRequest};
use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::contactor::{ContactorMode, ContactorSetup};
use dbe_core::events::EventKind;
use dbe_core::inverter::InverterConfig;
use dbe_core::model::{Contactors, DesignStatus};
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{Duration, Instant};
use dbe_sim::pack::{Fault, SimPack};
use dbe_sim::tesla::{TeslaPack, TeslaPackParams, VEHICLE_TIMEOUT};
use dbe_sim::world::{Demand, World};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config(chemistry: TeslaChemistry) -> BridgeConfig {
    BridgeConfig {
        battery: BatteryConfig::TeslaModel3(TeslaModel3Options { chemistry, digital_hvil: false }),
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors: ContactorSetup::with_mode(ContactorMode::Can),
    }
}

fn world(chemistry: TeslaChemistry, pack: TeslaPackParams) -> World<TeslaPack> {
    World::with_pack(config(chemistry), TeslaPack::new(pack, Instant::ZERO), Instant::ZERO)
}

fn told(w: &World<TeslaPack>) -> (DeciAmps, DeciAmps) {
    w.inverter.summary().map_or((DeciAmps(0), DeciAmps(0)), |t| (t.charge_limit, t.discharge_limit))
}

fn bridged(w: &World<TeslaPack>) -> bool {
    let (c, d) = told(w);
    w.pack.contactors_closed() && c > DeciAmps(0) && d > DeciAmps(0)
}

/// A world run until it bridges (the contactors closed and the inverter told it may charge and discharge).
fn running(chemistry: TeslaChemistry, pack: TeslaPackParams) -> World<TeslaPack> {
    let mut w = world(chemistry, pack);
    assert!(w.run_until_cond(secs(60), bridged), "{chemistry:?}: never bridged");
    w
}

#[test]
fn a_cold_model_3_closes_its_contactors_and_the_inverter_gets_current() {
    let mut w = world(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
    w.run_for(secs(2));
    // The car's frames are on the bus from the start, but no current until the chemistry is confirmed.
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)));
    assert!(w.run_until_cond(secs(60), bridged), "never bridged");
    let m = w.bridge.model();
    assert_eq!(m.design_status, DesignStatus::Confirmed);
    assert_eq!((m.design.cells, m.cells.count()), (96, 96));
    assert_eq!(m.contactors, Contactors::Closed, "0x212 CLOSED is the model's contactor state");
    // The decoded values are the pack's own.
    let pack_dv = (w.pack.model().pack_mv() / 100) as u16;
    assert!(m.pack_voltage.unwrap().value.0.abs_diff(pack_dv) <= 1, "{:?} vs {pack_dv}", m.pack_voltage);
    assert!(m.soc.unwrap().value.0.abs_diff(w.pack.soc_bp()) <= 10);
    let cells = w.pack.cell_voltages();
    assert_eq!(m.cells.max().map(|c| c.1), cells.iter().max().copied());
    // A household draws 3 kW: the inverter takes it from the pack, and the driver reads it back.
    w.demand = Demand::Constant(Watts(-3000));
    w.run_for(secs(10));
    let truth = w.pack.model().current();
    assert!(truth < DeciAmps(-50), "discharging: {truth:?}");
    let read = w.bridge.model().current.unwrap().value;
    assert!((read.0 - truth.0).abs() <= 1, "decoded {read:?}, flowing {truth:?}");
}

#[test]
fn when_the_car_frames_stop_the_pack_opens() {
    let mut w = running(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
    // The wire is cut: the BMS hears no car.
    w.cuts.battery = true;
    let cut = w.now();
    assert!(w.run_until_cond(secs(2), |w| !w.pack.contactors_closed()));
    let after = w.now() - cut;
    assert!(after >= VEHICLE_TIMEOUT && after <= VEHICLE_TIMEOUT + Duration::from_millis(20), "opened after {after}");
    // Reconnected, it closes again.
    w.cuts.battery = false;
    assert!(w.run_until_cond(secs(30), bridged), "closes again");
}

#[test]
fn a_stop_steps_the_car_down_and_the_pack_opens_within_100_ms() {
    let mut w = running(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
    w.bridge.handle_command(w.now(), Command::Stop).unwrap();
    let mut decided = None;
    assert!(w.run_until_cond(secs(10), |w| {
        if w.bridge.contactor_request() == Some(ContactorRequest::Open) {
            decided.get_or_insert(w.now());
        }
        !w.pack.contactors_closed()
    }));
    let decided = decided.expect("decided");
    assert!(w.now() - decided <= Duration::from_millis(100), "opened {} after the decision", w.now() - decided);
    assert!(w.run_until_cond(secs(2), |w| w.bridge.model().contactors == Contactors::Open), "0x212 says OPEN");
}

#[test]
fn an_lfp_pack_is_confirmed_from_its_106_cells() {
    let w = running(TeslaChemistry::Lfp, TeslaPackParams::lfp());
    let m = w.bridge.model();
    assert_eq!(m.design_status, DesignStatus::Confirmed);
    assert_eq!((m.design.cells, m.cells.count()), (106, 106));
    assert_eq!(m.design.max_cell_voltage.0, 3650);
    // The 2021+ energy layout, decoded: 55 kWh × 95 %.
    assert!(m.total_energy.is_some_and(|e| e.value.0.abs_diff(52_250) <= 20), "{:?}", m.total_energy);
}

#[test]
fn a_chemistry_the_cell_count_contradicts_stops_the_pack() {
    for (chemistry, pack) in
        [(TeslaChemistry::Lfp, TeslaPackParams::nca()), (TeslaChemistry::NcaNcm, TeslaPackParams::lfp())]
    {
        let mut w = world(chemistry, pack);
        assert!(
            w.run_until_cond(secs(60), |w| w.bridge.events().is_active(EventKind::BatteryDesignMismatch)),
            "{chemistry:?} on {:?}: no mismatch",
            pack.variant
        );
        w.run_for(secs(30));
        assert_eq!(w.bridge.model().design_status, DesignStatus::Contradicted);
        assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)), "{chemistry:?}");
        assert!(!w.pack.contactors_closed(), "{chemistry:?}: never closed");
        assert_eq!(w.pack.model().current(), DeciAmps(0));
    }
}

#[test]
fn each_required_reading_dropped_gives_0_a() {
    // Pack voltage and current, status, SOC, BMS current limits, temperatures, cells.
    for id in [0x132u16, 0x212, 0x292, 0x2D2, 0x332, 0x401] {
        let mut w = running(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
        w.pack.set_dropped(id, true);
        // The longest required age is the cells' 60 s.
        assert!(
            w.run_until_cond(secs(70), |w| told(w) == (DeciAmps(0), DeciAmps(0))),
            "0x{id:03X} dropped: still {:?}",
            told(&w)
        );
        assert!(!w.bridge.output().data_valid, "0x{id:03X}");
        w.pack.set_dropped(id, false);
        assert!(w.run_until_cond(secs(70), bridged), "0x{id:03X} back: bridges again");
    }
}

#[test]
fn an_open_interlock_keeps_the_contactors_open() {
    let mut w = world(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
    w.pack.set_hvil_ok(false);
    w.run_for(secs(30));
    assert!(!w.pack.contactors_closed());
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)));
}

/// Puts cell 10 at `mv` on a bridged pack and returns (charge, discharge) told once the cell report shows it.
fn with_cell(chemistry: TeslaChemistry, pack: TeslaPackParams, mv: i32) -> (World<TeslaPack>, (DeciAmps, DeciAmps)) {
    let mut w = running(chemistry, pack);
    w.pack.apply(Fault::Cell { index: 10, millivolts: Some(mv) });
    let seen =
        |w: &World<TeslaPack>| w.bridge.model().cells.voltages().get(10).is_some_and(|v| (v.0 as i32 - mv).abs() <= 2);
    assert!(w.run_until_cond(secs(20), seen), "{chemistry:?}: cell at {mv} mV never reported");
    w.run_for(secs(5));
    let t = told(&w);
    (w, t)
}

#[test]
fn cell_over_and_under_voltage_per_chemistry() {
    // NCA: the supervisor's window is 3000-4200 mV (critical 2950/4250).
    let (w, (c, d)) = with_cell(TeslaChemistry::NcaNcm, TeslaPackParams::nca(), 4220);
    assert_eq!(c, DeciAmps(0), "NCA cell at 4220 mV: no charging");
    assert!(d > DeciAmps(0), "but discharging");
    assert!(w.bridge.events().is_active(EventKind::CellOverVoltage));
    let (w, (c, d)) = with_cell(TeslaChemistry::NcaNcm, TeslaPackParams::nca(), 2980);
    assert_eq!(d, DeciAmps(0), "NCA cell at 2980 mV: no discharging");
    assert!(c > DeciAmps(0), "but charging");
    assert!(w.bridge.events().is_active(EventKind::CellUnderVoltage));
    // The same 4220 mV is far beyond LFP's critical 3650: the LFP pack stops.
    let (w, (c, d)) = with_cell(TeslaChemistry::Lfp, TeslaPackParams::lfp(), 3620);
    assert_eq!(c, DeciAmps(0), "LFP cell at 3620 mV: no charging");
    assert!(d > DeciAmps(0), "but discharging");
    assert!(w.bridge.events().is_active(EventKind::CellOverVoltage));
    let (w, (c, d)) = with_cell(TeslaChemistry::Lfp, TeslaPackParams::lfp(), 3700);
    assert_eq!((c, d), (DeciAmps(0), DeciAmps(0)), "LFP cell at 3700 mV: critical");
    assert!(w.bridge.events().is_active(EventKind::CellCriticalOverVoltage));
    let (w, (_, d)) = with_cell(TeslaChemistry::Lfp, TeslaPackParams::lfp(), 2790);
    assert_eq!(d, DeciAmps(0), "LFP cell at 2790 mV: no discharging");
    assert!(w.bridge.events().is_active(EventKind::CellCriticalUnderVoltage));
    // An NCA pack reads 3620 mV as a healthy cell.
    let (w, (c, d)) = with_cell(TeslaChemistry::NcaNcm, TeslaPackParams::nca(), 3620);
    assert!(c > DeciAmps(0) && d > DeciAmps(0), "NCA at 3620 mV: {c:?} {d:?}");
    assert!(!w.bridge.events().is_active(EventKind::CellOverVoltage));
}

#[test]
fn a_welded_contactor_is_reported_and_gives_0_a() {
    let mut w = running(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
    w.pack.apply(Fault::Relay(dbe_sim::pack::RelayFault::Stuck(true)));
    w.bridge.handle_command(w.now(), Command::Stop).unwrap();
    assert!(w.run_until_cond(secs(5), |w| w.bridge.model().contactors == Contactors::Fault), "WELDED read");
    assert!(w.pack.contactors_closed(), "welded");
    w.bridge.handle_command(w.now(), Command::Start).unwrap();
    w.run_for(secs(10));
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)), "latched");
}

#[test]
fn the_pack_going_silent_opens_it_and_gives_0_a() {
    let mut w = running(TeslaChemistry::NcaNcm, TeslaPackParams::nca());
    w.pack.apply(Fault::Silent(true));
    assert!(w.run_until_cond(secs(5), |w| !w.pack.contactors_closed()));
    assert!(w.run_until_cond(secs(5), |w| told(w) == (DeciAmps(0), DeciAmps(0))));
    w.pack.apply(Fault::Silent(false));
    assert!(w.run_until_cond(secs(60), bridged), "recovers");
}
