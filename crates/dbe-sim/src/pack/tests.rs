//! The shared model's physics, and the checks every registered wire mapping is held to.

use super::*;
use dbe_core::battery::BATTERIES;
use dbe_core::model::Chemistry;
use dbe_core::units::MilliVolts;
use dbe_core::Duration;

fn params(chemistry: Chemistry) -> PhysicsParams {
    PhysicsParams {
        ocv: OcvCurve::for_chemistry(chemistry),
        cells: 4,
        capacity_wh: 1460, // 100 Ah over 4 × 3.65 V
        soh_bp: 10_000,
        initial_soc_bp: 5000,
        ambient_dc: 200,
        seed: 7,
        nominal_cell_v: 3.65,
        cell_resistance_uohm: 1000,
        spread_mv: 0,
        drift_mv_per_day: 0.0,
        heating_c_per_a2h: 0.001,
        thermal_time_constant_h: 2.0,
        limits: crate::leaf::LIMITS,
        balance_above_mv: 4000,
        balance_band_mv: 15,
        relays: RelayWiring::Hardwired,
    }
}

fn closed(p: PhysicsParams) -> PackModel {
    let mut m = PackModel::new(p, Instant::ZERO);
    m.drive_relays(Instant::ZERO, true, true);
    m
}

const HOUR: Duration = Duration::from_millis(3_600_000);

#[test]
fn ocv_rises_with_soc_for_every_chemistry() {
    for chemistry in [Chemistry::Nmc, Chemistry::Nca, Chemistry::Lfp] {
        let mut m = PackModel::new(params(chemistry), Instant::ZERO);
        let mut last = 0;
        for soc in (0..=10_000).step_by(500) {
            m = PackModel::new(PhysicsParams { initial_soc_bp: soc, ..params(chemistry) }, Instant::ZERO);
            let v = m.base_mv();
            assert!(v > last, "{chemistry:?} at {soc}: {v} after {last}");
            last = v;
        }
        assert_eq!(m.pack_mv(), last * 4, "no spread: the pack is its cells");
    }
}

#[test]
fn load_sags_the_voltage_by_i_times_r_and_charging_lifts_it() {
    let mut m = closed(params(Chemistry::Nmc));
    let rest = m.base_mv();
    m.set_current(Instant::ZERO, DeciAmps(-1000)); // 100 A out through 1 mΩ a cell: 100 mV a cell
    assert_eq!(m.base_mv(), rest - 100);
    assert_eq!(m.pack_mv(), (rest - 100) * 4);
    m.set_current(Instant::ZERO, DeciAmps(500));
    assert_eq!(m.base_mv(), rest + 50);
}

#[test]
fn soc_integrates_the_current_over_the_capacity() {
    let mut m = closed(params(Chemistry::Nca));
    assert!((m.capacity_ah() - 100.0).abs() < 1e-9);
    m.set_current(Instant::ZERO, DeciAmps(-200)); // 20 A for an hour: 20 % of 100 Ah
    m.advance(Instant::ZERO + HOUR);
    assert_eq!(m.soc_bp(), 3000);
    m.set_current(Instant::ZERO + HOUR, DeciAmps(100));
    m.advance(Instant::ZERO + HOUR + HOUR);
    assert_eq!(m.soc_bp(), 4000);
    // Clamped at the ends, however long it runs.
    m.set_current(Instant::ZERO + HOUR + HOUR, DeciAmps(1000));
    m.advance(Instant::ZERO + Duration::from_millis(100 * 3_600_000));
    assert_eq!(m.soc_bp(), 10_000);
}

#[test]
fn no_current_flows_through_open_contactors_and_opening_stops_it() {
    let mut m = PackModel::new(params(Chemistry::Lfp), Instant::ZERO);
    m.set_current(Instant::ZERO, DeciAmps(-50));
    assert_eq!(m.current(), DeciAmps(0));
    m.drive_relays(Instant::ZERO, true, true);
    m.set_current(Instant::ZERO, DeciAmps(-50)); // 5 A out of 100 Ah
    m.drive_relays(Instant::ZERO + HOUR, false, true);
    assert_eq!(m.current(), DeciAmps(0));
    m.advance(Instant::ZERO + HOUR + HOUR);
    assert_eq!(m.soc_bp(), 4500, "only the hour with closed contactors counts");
}

#[test]
fn current_heats_the_pack_and_it_relaxes_to_ambient() {
    let mut m = closed(params(Chemistry::Nmc));
    m.set_current(Instant::ZERO, DeciAmps(-1000));
    m.advance(Instant::ZERO + Duration::from_millis(600_000));
    let hot = m.temperature_dc();
    assert!(hot > 200, "{hot}");
    m.set_current(Instant::ZERO + Duration::from_millis(600_000), DeciAmps(0));
    m.advance(Instant::ZERO + Duration::from_millis(600_000) + HOUR + HOUR);
    assert!(m.temperature_dc() < hot);
    assert_eq!(m.temperature_dc(), 200, "back at ambient");
}

#[test]
fn limits_taper_near_full_and_empty_and_shrink_when_cold() {
    let at = |soc: u16, ambient_dc: i16| {
        PackModel::new(PhysicsParams { initial_soc_bp: soc, ambient_dc, ..params(Chemistry::Nmc) }, Instant::ZERO)
            .limits()
    };
    assert_eq!(at(5000, 200), BmsLimits { charge_w: 45_000, discharge_w: 80_000 });
    assert_eq!(at(9900, 200).charge_w, 0);
    assert_eq!(at(9450, 200).charge_w, 22_500);
    assert_eq!(at(100, 200).discharge_w, 0);
    assert_eq!(at(5000, 50), BmsLimits { charge_w: 22_500, discharge_w: 40_000 }, "5 °C: halved");
    assert_eq!(at(5000, -50).charge_w, 9_000, "-5 °C: a fifth");
}

#[test]
fn the_cell_window_caps_the_limits_through_i_times_r() {
    let window = LimitParams { cell_window_mv: Some((2500, 4200)), ..crate::leaf::LIMITS };
    let mut m =
        PackModel::new(PhysicsParams { initial_soc_bp: 5000, limits: window, ..params(Chemistry::Nmc) }, Instant::ZERO);
    let free = m.limits();
    // A cell forced to 4190 mV leaves 10 mV of headroom: 10 A through 1 mΩ, about 150 W on a 4-cell pack.
    m.set_cell_at(0, Some(4190));
    let capped = m.limits();
    assert!(capped.charge_w < 200 && capped.charge_w > 100, "{capped:?}");
    assert_eq!(capped.discharge_w, free.discharge_w);
    m.set_cell_at(0, Some(4250));
    assert_eq!(m.limits().charge_w, 0, "a cell over the window: no charge at all");
}

#[test]
fn spread_is_within_its_bound_and_drift_widens_it() {
    let p = PhysicsParams { cells: 96, spread_mv: 12, drift_mv_per_day: 2.0, ..params(Chemistry::Nmc) };
    let mut m = PackModel::new(p, Instant::ZERO);
    let range = |m: &PackModel| {
        let v = m.cell_voltages();
        v.iter().max().unwrap().0 - v.iter().min().unwrap().0
    };
    let base = m.base_mv() as u16;
    assert!(m.cell_voltages().iter().all(|v| v.0.abs_diff(base) <= 12));
    let before = range(&m);
    assert!(before > 0);
    m.advance(Instant::ZERO + Duration::from_millis(10 * 86_400_000));
    assert!(range(&m) >= before + 30, "{before} → {}", range(&m));
    // The same seed gives the same pack.
    assert_eq!(PackModel::new(p, Instant::ZERO).cell_voltages(), PackModel::new(p, Instant::ZERO).cell_voltages());
}

#[test]
fn a_cell_fault_sets_the_cell_and_follows_the_pack() {
    let mut m = closed(params(Chemistry::Nmc));
    m.set_cell_at(2, Some(4240));
    assert_eq!(m.cell_voltages()[2], MilliVolts(4240));
    m.set_current(Instant::ZERO, DeciAmps(-1000));
    assert_eq!(m.cell_voltages()[2], MilliVolts(4140), "it sags with the others");
    m.set_cell_at(2, None);
    assert_eq!(m.cell_voltages()[2], m.cell_voltages()[1]);
    m.set_cell_at(99, Some(1)); // out of range: nothing
}

#[test]
fn a_temperature_offset_moves_every_reading_and_the_limits() {
    let mut m = closed(params(Chemistry::Nmc));
    m.set_temperature_offset(-250);
    assert_eq!(m.temperature_dc(), -50);
    assert_eq!(m.limits().charge_w, 9_000);
}

#[test]
fn can_controlled_contactors_close_only_when_the_bms_says() {
    let mut m = PackModel::new(PhysicsParams { relays: RelayWiring::Can, ..params(Chemistry::Nca) }, Instant::ZERO);
    m.drive_relays(Instant::ZERO, true, true);
    m.set_manual_relays(Instant::ZERO, Some(true));
    assert!(!m.contactors_closed(), "no wires to drive on a CAN pack");
    m.set_can_request(Instant::ZERO, true);
    assert!(m.contactors_closed());
    m.set_relay_fault(RelayFault::Stuck(true));
    m.set_can_request(Instant::ZERO, false);
    assert!(m.contactors_closed(), "welded");
}

// ---- the registry and the checks every mapping is held to ----

#[test]
fn every_pack_is_named_after_a_battery_driver_and_every_driver_has_a_pack() {
    for (i, p) in PACKS.iter().enumerate() {
        assert!(PACKS[..i].iter().all(|q| q.name != p.name), "{} listed twice", p.name);
        assert!(BATTERIES.iter().any(|b| b.name == p.name), "{}: no battery driver of that name", p.name);
        let pack = p.build(Instant::ZERO);
        assert_eq!(pack.name(), p.name);
        assert_eq!(pack.model().cells(), p.cells, "{}", p.name);
        assert_eq!(pack.relay_wiring(), p.relays, "{}", p.name);
    }
    for b in BATTERIES {
        assert!(for_battery(b.kind).is_ok(), "battery driver {} has no simulated pack", b.name);
    }
}

#[test]
fn an_unknown_pack_names_the_known_ones() {
    let e = PackEntry::by_name("tesla-model-t").unwrap_err().to_string();
    assert!(e.contains("tesla-model-t") && e.contains("nissan-leaf"), "{e}");
}

/// Every frame the pack sends from `from` for `span`, stepping to each deadline.
fn run(pack: &mut dyn SimPack, from: Instant, span: Duration) -> Vec<CanFrame> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= from + span {
        while let Some(f) = pack.poll_transmit(now) {
            out.push(f);
        }
        now = pack.poll_timeout().map_or(now + Duration::from_millis(10), |t| t.max(now + Duration::from_millis(1)));
    }
    out
}

#[test]
fn every_pack_talks_and_goes_quiet_when_silent() {
    for p in PACKS {
        let mut pack = p.build(Instant::ZERO);
        let t = Instant::ZERO;
        assert!(!run(&mut *pack, t, Duration::from_millis(1000)).is_empty(), "{}: says nothing", p.name);
        pack.apply(Fault::Silent(true));
        let t = t + Duration::from_millis(1001);
        assert!(run(&mut *pack, t, Duration::from_millis(1000)).is_empty(), "{}: silent but talking", p.name);
        pack.apply(Fault::Silent(false));
        let t = t + Duration::from_millis(1001);
        let back = run(&mut *pack, t, Duration::from_millis(1000));
        // No backlog of the silent second: about a second's worth of frames, not two.
        let normal = run(&mut *p.build(Instant::ZERO), Instant::ZERO, Duration::from_millis(1000)).len();
        assert!(!back.is_empty() && back.len() <= normal * 3 / 2, "{}: {} frames after silence", p.name, back.len());
    }
}

#[test]
fn every_pack_repeats_itself_when_frozen() {
    for p in PACKS {
        let mut pack = p.build(Instant::ZERO);
        pack.drive_relays(Instant::ZERO, true, true);
        let _ = run(&mut *pack, Instant::ZERO, Duration::from_millis(1000));
        pack.apply(Fault::Frozen(true));
        let t = Instant::ZERO + Duration::from_millis(1001);
        let first = run(&mut *pack, t, Duration::from_millis(1000));
        assert!(!first.is_empty(), "{}: frozen means repeating, not silent", p.name);
        // The physics moves on; the frames do not.
        pack.set_current(t, DeciAmps(-1000));
        pack.apply(Fault::Cell { index: 0, millivolts: Some(3000) });
        let later = run(&mut *pack, t + Duration::from_millis(600_000), Duration::from_millis(1000));
        assert!(later.iter().all(|f| first.contains(f)), "{}: a frozen pack sent something new", p.name);
        pack.apply(Fault::Frozen(false));
    }
}

#[test]
fn every_pack_corrupts_its_checksums_when_told() {
    for p in PACKS {
        // Two identical packs, one corrupt: the same frames at the same moments, some bytes different.
        let (mut clean, mut corrupt) = (p.build(Instant::ZERO), p.build(Instant::ZERO));
        corrupt.apply(Fault::CorruptChecksums(true));
        let a = run(&mut *clean, Instant::ZERO, Duration::from_millis(1000));
        let b = run(&mut *corrupt, Instant::ZERO, Duration::from_millis(1000));
        assert_eq!(a.iter().map(|f| f.raw_id()).collect::<Vec<_>>(), b.iter().map(|f| f.raw_id()).collect::<Vec<_>>());
        if clean.checksummed() {
            assert!(a != b, "{}: corrupt checksums changed nothing", p.name);
        } else {
            assert_eq!(a, b, "{}: no checksums on its wire, yet the fault changed its frames", p.name);
        }
    }
}
