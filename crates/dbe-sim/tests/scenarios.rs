//! Whole-bridge scenarios in simulated time: a simulated LEAF pack, the real bridge (driver, supervisor,
//! protocol) and a simulated Pylon inverter on an in-process bus. Each test reads as the story it checks; the
//! inverter's view is what the simulated inverter decoded from the wire, not what the bridge thinks it sent.

use std::time::Instant as WallInstant;

use dbe_core::battery::ContactorRequest;
use dbe_core::bridge::BridgeConfig;
use dbe_core::command::Command;
use dbe_core::events::EventKind;
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::{SocWindow, SupervisorConfig};
use dbe_core::units::{BasisPoints, DeciAmps, Watts};
use dbe_core::{Duration, Instant};
use dbe_sim::leaf::LeafPackParams;
use dbe_sim::pylon_inverter::PylonInverterParams;
use dbe_sim::sim_inverter::SimState;
use dbe_sim::world::{Demand, World};

mod common;
use common::{config, secs};

/// A world that has started and settled: contactors closed, the inverter running.
fn started(cfg: BridgeConfig) -> World {
    let mut w = World::leaf(cfg);
    assert!(
        w.run_until_cond(secs(30), |w| w.pack.contactors_closed() && w.inverter.state() == SimState::Running),
        "cold start did not close the contactors within 30 s: pack closed={} inverter={:?}",
        w.pack.contactors_closed(),
        w.inverter.state()
    );
    w.run_for(secs(5));
    w
}

fn told_limits(w: &World) -> (DeciAmps, DeciAmps) {
    let t = w.inverter.summary().expect("the inverter has been told something");
    (t.charge_limit, t.discharge_limit)
}

#[test]
fn cold_start_closes_contactors_and_the_inverter_sees_valid_data() {
    let w = started(config());
    let out = *w.bridge.output();
    assert!(out.data_valid);
    assert_eq!(w.bridge.contactor_request(), Some(ContactorRequest::Closed));
    let m = w.bridge.model();
    assert_eq!(m.cells.count(), 96, "all 96 cells polled");
    let told = w.inverter.summary().unwrap();
    let v = m.pack_voltage.unwrap().value;
    assert!(told.voltage.0.abs_diff(v.0) <= 2, "told {:?}, model {:?}", told.voltage, v);
    assert_eq!(Some(told.soc.0 / 100), out.soc.map(|s| s.0 / 100));
    assert_eq!(told.charge_limit, out.charge_current_limit);
    assert_eq!(told.discharge_limit, out.discharge_current_limit);
    assert!(told.charge_limit > DeciAmps(0) && told.discharge_limit > DeciAmps(0));
    // The sim pack's own truth and the decoded model agree.
    assert!(w.pack.pack_voltage().0.abs_diff(v.0) <= 2);
    let real = m.soc.unwrap().value.0 as i32;
    assert!((real - w.pack.soc_bp() as i32).abs() <= 100, "model SOC {real} vs pack {}", w.pack.soc_bp());
}

#[test]
fn battery_silent_drives_the_inverter_to_zero_then_recovers() {
    let mut w = started(config());
    w.pack.set_silent(true);
    let silent_at = w.now();
    let stale = SupervisorConfig::default().stale_timeout;
    assert!(w.run_until_cond(secs(60), |w| told_limits(w) == (DeciAmps(0), DeciAmps(0))));
    let took = w.now() - silent_at;
    let poll = PylonInverterParams::default().poll_interval;
    assert!(
        took.as_millis() <= (stale + poll + secs(1)).as_millis(),
        "inverter told 0 A after {took}, bound is the stale timeout {stale} plus one poll {poll}"
    );
    assert!(w.bridge.events().is_active(EventKind::StaleValue), "the 1 s readings went first");
    assert!(!w.bridge.output().alarms.is_empty());
    assert!(w.run_until_cond(stale + secs(1), |w| w.bridge.events().is_active(EventKind::BatteryMissing)));

    w.pack.set_silent(false);
    assert!(w.run_until_cond(secs(60), |w| told_limits(w).0 > DeciAmps(0) && w.pack.contactors_closed()));
    assert!(!w.bridge.events().is_active(EventKind::BatteryMissing));
}

#[test]
fn cell_over_voltage_stops_charging_but_discharging_goes_on() {
    let mut w = started(config());
    // Put cell 18 between the charge-stop limit (4.200 V) and the critical one (4.224 V, the LEAF's design limit).
    let now_mv = w.pack.cell_voltages()[17].0 as i32;
    w.pack.set_cell_offset(17, 4212 - now_mv);
    assert!(w.run_until_cond(secs(60), |w| told_limits(w).0 == DeciAmps(0)), "charge limit never reached 0");
    assert!(told_limits(&w).1 > DeciAmps(0), "discharge must go on");
    assert!(w.bridge.events().record(EventKind::CellOverVoltage).count >= 1);
    w.pack.set_cell_offset(17, 0);
    assert!(w.run_until_cond(secs(60), |w| told_limits(w).0 > DeciAmps(0)), "charging resumes");
}

#[test]
fn inverter_silent_raises_an_event_and_zeroes_limits() {
    let mut w = started(config());
    w.inverter.set_silent(true);
    assert!(w.run_until_cond(secs(300), |w| w.bridge.events().is_active(EventKind::InverterMissing)));
    assert_eq!(w.bridge.output().charge_current_limit, DeciAmps(0));
    w.inverter.set_silent(false);
    assert!(w.run_until_cond(secs(60), |w| !w.bridge.events().is_active(EventKind::InverterMissing)));
}

#[test]
fn pause_and_resume_reach_the_inverter() {
    let mut w = started(config());
    let before = told_limits(&w);
    w.bridge.handle_command(w.now(), Command::Pause).unwrap();
    assert!(w.run_until_cond(secs(30), |w| told_limits(w) == (DeciAmps(0), DeciAmps(0))));
    assert!(w.pack.contactors_closed(), "pause keeps the contactors closed");
    w.bridge.handle_command(w.now(), Command::Resume).unwrap();
    assert!(w.run_until_cond(secs(30), |w| told_limits(w).1 > DeciAmps(0)));
    assert_eq!(told_limits(&w).1, before.1);
}

#[test]
fn temporary_limits_expire_by_themselves() {
    let mut w = started(config());
    let cmd = Command::SetTemporaryLimits { charge: Some(DeciAmps(55)), discharge: None, timeout: secs(60) };
    w.bridge.handle_command(w.now(), cmd).unwrap();
    assert!(w.run_until_cond(secs(30), |w| told_limits(w).0 == DeciAmps(55)));
    let set_at = w.now();
    assert!(w.run_until_cond(secs(120), |w| told_limits(w).0 > DeciAmps(55)));
    assert!(w.now() - set_at <= secs(62));
    assert_eq!(w.bridge.events().record(EventKind::TemporaryLimitsExpired).count, 1);
}

#[test]
fn soc_window_edges_stop_charging_at_reported_full() {
    let mut cfg = config();
    cfg.supervisor.soc_window = SocWindow { min: BasisPoints(1000), max: BasisPoints(5200) };
    let mut w = World::new(cfg, LeafPackParams { initial_soc_bp: 5000, ..Default::default() }, Instant::ZERO);
    w.demand = Demand::Constant(Watts(3000));
    assert!(
        w.run_until_cond(Duration::from_secs(4 * 3600), |w| w.inverter.summary().is_some_and(|t| t.soc.0 >= 10_000))
    );
    assert!(w.run_until_cond(secs(60), |w| told_limits(w).0 == DeciAmps(0)), "reported 100 % must stop charging");
    assert!(told_limits(&w).1 > DeciAmps(0));
    let real = w.bridge.model().soc.unwrap().value.0;
    assert!((5100..=5400).contains(&real), "charging stopped near the window's top, real SOC {real}");
}

#[test]
fn a_simulated_day_runs_in_seconds_and_cycles_the_pack() {
    let mut w = started(config());
    w.demand = Demand::Daily { peak: Watts(4000) };
    let wall = WallInstant::now();
    let start_soc = w.pack.soc_bp();
    let mut min_soc = start_soc;
    let mut max_soc = start_soc;
    for _ in 0..24 * 60 {
        w.run_for(secs(60));
        min_soc = min_soc.min(w.pack.soc_bp());
        max_soc = max_soc.max(w.pack.soc_bp());
    }
    eprintln!(
        "one simulated day took {:?} of wall time; {:?} frames; SOC {start_soc}..{min_soc}..{max_soc}",
        wall.elapsed(),
        w.traffic()
    );
    assert!(max_soc > start_soc + 300 && min_soc < start_soc, "charged and discharged during the day");
    assert!(w.bridge.output().data_valid);
    assert!(!w.bridge.events().is_active(EventKind::BatteryMissing));
    assert_eq!(w.bridge.events().record(EventKind::BatteryMissing).count, 0);
}

#[test]
fn pylontech_rs485_refuses_a_high_voltage_pack() {
    // The Pylontech RS485 protocol is for 48 V stacks: a 96-cell LEAF (~370 V) cannot be expressed in it, so the
    // inverter must be told it may neither charge nor discharge, whatever the supervisor allows.
    let mut cfg = config();
    cfg.inverter = InverterConfig::PylonRs485(Default::default());
    let mut w = World::leaf(cfg);
    assert!(w.run_until_cond(secs(60), |w| w.inverter.state() == SimState::Running));
    w.run_for(secs(10));
    assert!(w.bridge.output().discharge_current_limit > DeciAmps(0), "the supervisor would allow it");
    let told = w.inverter.summary().unwrap();
    assert_eq!((told.charge_limit, told.discharge_limit), (DeciAmps(0), DeciAmps(0)), "{told:?}");
}

#[test]
fn byd_modbus_bridges_the_pack() {
    let inverter = InverterConfig::BydModbus(Default::default());
    {
        let mut cfg = config();
        cfg.inverter = inverter;
        let mut w = World::leaf(cfg);
        assert!(
            w.run_until_cond(secs(60), |w| w.pack.contactors_closed() && w.inverter.state() == SimState::Running),
            "{inverter:?}: contactors {} inverter {:?}",
            w.pack.contactors_closed(),
            w.inverter.state()
        );
        w.run_for(secs(10));
        let out = *w.bridge.output();
        let told = w.inverter.summary().unwrap();
        assert!(told.voltage.0.abs_diff(w.bridge.model().pack_voltage.unwrap().value.0) <= 2, "{inverter:?} {told:?}");
        assert!(told.discharge_limit > DeciAmps(0), "{inverter:?} {told:?}");
        assert!(told.discharge_limit <= out.discharge_current_limit, "never more than the supervisor allows");
        w.pack.set_silent(true);
        assert!(w.run_until_cond(secs(60), |w| w.inverter.summary().unwrap().discharge_limit == DeciAmps(0)));
    }
}

#[test]
fn byd_modbus_tells_the_gen24_the_energy_that_flowed() {
    // The household draws 3 kW for half an hour, then pushes 2 kW in for a quarter: the simulated Gen24 reads the
    // lifetime counters (316/317, 320/321), the power (311, BYD sign) and the direction (302) off the wire, and
    // they match the pack simulator's own voltage × current (at the pack's 0.5 A resolution), summed here once a
    // second.
    let mut cfg = config();
    cfg.inverter = InverterConfig::BydModbus(Default::default());
    let mut w = started(cfg);
    let told = |w: &World| match &w.inverter {
        dbe_sim::sim_inverter::SimInverter::Modbus { master, .. } => master.told().cloned().expect("told"),
        _ => unreachable!(),
    };
    let start = told(&w);
    let mut truth_wh = [0f64; 2]; // charged, discharged
    let mut leg = |w: &mut World, demand: i32, seconds: u64| {
        w.demand = Demand::Constant(Watts(demand));
        for _ in 0..seconds {
            w.run_for(secs(1));
            // The LEAF measures in 0.5 A steps, rounded to nearest (see `leaf.rs`): count what it can report.
            let da = w.pack.current().0;
            let reported_a = ((da + if da >= 0 { 2 } else { -2 }) / 5) as f64 / 2.0;
            let watts = w.pack.pack_voltage().as_f32() as f64 * reported_a;
            truth_wh[(watts < 0.0) as usize] += watts.abs() / 3600.0;
        }
    };
    leg(&mut w, -3000, 1800);
    let t = told(&w);
    assert_eq!(t.flow, dbe_sim::modbus_master::Flow::Discharging, "{t:?}");
    assert!((t.power.0 + 3000).abs() < 150, "311 says {:?} while 3 kW is drawn", t.power);
    assert_eq!(t.power_active, t.power, "active: 309 carries the power too");
    leg(&mut w, 2000, 900);
    let t = told(&w);
    assert_eq!(t.flow, dbe_sim::modbus_master::Flow::Charging, "{t:?}");
    assert!((t.power.0 - 2000).abs() < 150, "311 says {:?} while 2 kW is pushed in", t.power);
    let charged = (t.charged_energy.0 - start.charged_energy.0) as f64;
    let discharged = (t.discharged_energy.0 - start.discharged_energy.0) as f64;
    eprintln!("told +{charged} / -{discharged} Wh; the pack simulator: +{:.1} / -{:.1} Wh", truth_wh[0], truth_wh[1]);
    assert!(truth_wh[1] > 1400.0 && truth_wh[0] > 450.0, "energy flowed both ways: {truth_wh:?}");
    assert!((discharged - truth_wh[1]).abs() <= truth_wh[1] * 0.01 + 2.0, "discharged {discharged} vs {truth_wh:?}");
    assert!((charged - truth_wh[0]).abs() <= truth_wh[0] * 0.01 + 2.0, "charged {charged} vs {truth_wh:?}");
    // The bridge's counters are what the wire carries (up to the last poll).
    let c = w.bridge.energy_counters();
    assert!(c.discharged().0 >= t.discharged_energy.0 && c.discharged().0 - t.discharged_energy.0 <= 2);
}

#[test]
fn a_gen24_reading_outside_the_byd_map_gets_zeros_and_one_event() {
    use dbe_core::bridge::Bridge;
    use dbe_core::inverter::modbus::{emit_read_request, Function, Response};
    let mut cfg = config();
    cfg.inverter = InverterConfig::BydModbus(Default::default());
    let mut b = Bridge::new(cfg);
    let ask = |b: &mut Bridge, at_ms: u64, address: u16, quantity: u16| {
        let mut req = [0u8; 8];
        emit_read_request(21, Function::ReadHoldingRegisters, address, quantity, &mut req).unwrap();
        b.handle_inverter_bytes(Instant::from_millis(at_ms), &req);
        let mut buf = [0u8; 256];
        let n = b.poll_inverter_bytes(Instant::from_millis(at_ms + 100), &mut buf).unwrap();
        match Response::parse(&buf[..n]) {
            Some(Response::Registers { data, .. }) => data.to_vec(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ask(&mut b, 0, 300, 24).len(), 48);
    assert_eq!(b.events().record(EventKind::ModbusReadOutsideMap).count, 0);
    assert_eq!(ask(&mut b, 1000, 1000, 4), vec![0; 8]);
    assert_eq!(ask(&mut b, 2000, 500, 2), vec![0; 4]);
    let r = b.events().record(EventKind::ModbusReadOutsideMap);
    assert_eq!((r.count, r.data), (1, 1000), "once, with the first read's start address");
}
