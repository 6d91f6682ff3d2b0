//! A simulated week of operation: daily charge/discharge cycles, a daily temperature swing, and one injected fault
//! a day that clears again. Checked every simulated second, for the whole week:
//! - the limits the inverter decoded never exceed the configured maximums;
//! - the bridge's limits are 0 while its data is stale, 0 for charging with a cell above its maximum and 0 for
//!   discharging with a cell below its minimum;
//! - the pack's relays are never closed for longer than its own keep-alive timeout without the bridge asking;
//! - SOC stays in range.
//!
//! At the end: one event episode per injected fault, nothing dropped from the event queue, the decoded current,
//! the SOC and the remaining-energy counter consistent with the charge that really flowed, the total energy
//! unchanged, and the process's memory flat between the first and the last day. The figures (simulated days per wall second) are printed.

use std::time::Instant as WallInstant;

use dbe_core::battery::ContactorRequest;
use dbe_core::bridge::BridgeConfig;
use dbe_core::events::EventKind;
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::{CellLimits, SupervisorConfig};
use dbe_core::units::{DeciAmps, Watts};
use dbe_core::{Duration, Instant};
use dbe_sim::leaf::LeafPackParams;
use dbe_sim::world::{Demand, World};

const DAY_S: u64 = 24 * 3600;
const DAYS: u64 = 7;

/// One fault a day, at 03:00 (discharging at night) or 13:00 (charging at noon), for `span`.
#[derive(Copy, Clone, Debug)]
enum Fault {
    PackSilent,
    CorruptChecksums,
    InverterSilent,
    CellLow,
    Hot,
    CellHigh,
    None,
}

const SCHEDULE: [(Fault, u64, u64); DAYS as usize] = [
    (Fault::None, 0, 0),
    (Fault::PackSilent, 3 * 3600, 30),
    (Fault::CorruptChecksums, 13 * 3600, 20),
    (Fault::InverterSilent, 3 * 3600, 120),
    (Fault::CellLow, 3 * 3600, 60),
    (Fault::Hot, 13 * 3600, 1200),
    (Fault::CellHigh, 13 * 3600, 60),
];

fn set_fault(w: &mut World, f: Fault, on: bool) {
    match f {
        Fault::PackSilent => w.pack.set_silent(on),
        Fault::CorruptChecksums => w.pack.set_corrupt_checksums(on),
        Fault::InverterSilent => w.inverter.set_silent(on),
        Fault::CellLow => force_cell(w, 30, on.then_some(2980)),
        Fault::CellHigh => force_cell(w, 60, on.then_some(4210)),
        Fault::Hot => {} // applied with the daily swing
        Fault::None => {}
    }
}

fn force_cell(w: &mut World, i: usize, mv: Option<i32>) {
    w.pack.set_cell_offset(i, 0);
    if let Some(mv) = mv {
        let now_mv = w.pack.cell_voltages()[i].0 as i32;
        w.pack.set_cell_offset(i, mv - now_mv);
    }
}

/// The process's resident memory in KiB (Linux; 0 elsewhere, which disables the check).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_simulated_week_never_exceeds_a_limit() {
    let cfg = BridgeConfig {
        battery: dbe_core::battery::BatteryKind::NissanLeaf.into(),
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors: Default::default(),
    };
    let sup = cfg.supervisor;
    let mut w = World::new(cfg, LeafPackParams { initial_soc_bp: 5000, ..Default::default() }, Instant::ZERO);
    w.demand = Demand::Daily { peak: Watts(4000) };
    let cell_limits = CellLimits::for_chemistry(w.bridge.model().design.chemistry);
    let wall = WallInstant::now();

    let mut occurrences = [0u32; EventKind::COUNT];
    let mut closed_without_request_s = 0u64;
    let (mut soc_min, mut soc_max) = (u16::MAX, 0u16);
    let mut rss_day1 = 0;
    let mut checks = 0u64;
    // No drift: the charge the bridge's decoded current adds up to, against the pack's true current over the same
    // seconds (catches scale and sign errors), and the true charge against the SOC the BMS reports.
    let (mut decoded_ah, mut true_fresh_ah, mut true_ah, mut gross_ah) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut soc_start: Option<u16> = None;
    // (remaining Wh, total Wh, true Ah so far) at the end of the first day. The simulated BMS counts energy as
    // charge times the pack's nominal voltage (as a GID does), so the counter must follow the charge that flowed
    // to within a GID either way plus the SOC tolerance below.
    let mut energy_day1: Option<(u32, u32, f64)> = None;
    let params = LeafPackParams::default();
    let nominal_v = params.capacity_wh as f64 * params.soh_bp as f64 / 10_000.0 / w.pack.capacity_ah();
    let energy_tolerance_wh = 2.0 * 77.0 + 50.0 / 10_000.0 * params.capacity_wh as f64;
    let (mut energy_worst_wh, mut energy_checks) = (0.0f64, 0u32);
    for day in 0..DAYS {
        let (fault, fault_at, fault_span) = SCHEDULE[day as usize];
        for s in 0..DAY_S {
            let hour = s / 3600;
            // Ambient swing: -6 K before dawn to +8 K mid-afternoon; the hot fault adds 35 K for its span.
            let swing: i16 = match hour {
                0..=5 => -60,
                6..=10 => 0,
                11..=17 => 80,
                _ => 20,
            };
            let in_fault = s >= fault_at && s < fault_at + fault_span;
            if s == fault_at {
                set_fault(&mut w, fault, true);
            }
            if s == fault_at + fault_span {
                set_fault(&mut w, fault, false);
            }
            let hot = matches!(fault, Fault::Hot) && in_fault;
            w.pack.set_temperature_offset(swing + if hot { 350 } else { 0 });
            w.run_until(Instant::from_millis((day * DAY_S + s + 1) * 1000));

            // Drain the events as the daemon's telemetry does.
            while let Some(o) = w.bridge.poll_event() {
                occurrences[o.kind as usize] += 1;
            }
            checks += 1;
            let out = *w.bridge.output();
            if let Some(t) = w.inverter.summary() {
                assert!(t.charge_limit <= sup.max_charge_current, "day {day} {s} s: told charge {t:?}");
                assert!(t.discharge_limit <= sup.max_discharge_current, "day {day} {s} s: told discharge {t:?}");
            }
            let m = w.bridge.model();
            let fresh = m.last_valid_frame_at.is_some_and(|t| w.now().saturating_since(t) <= sup.stale_timeout);
            if !fresh || !out.data_valid {
                assert_eq!(
                    (out.charge_current_limit, out.discharge_current_limit),
                    (DeciAmps(0), DeciAmps(0)),
                    "day {day} {s} s: limits with stale data"
                );
            }
            if m.cells.max().is_some_and(|c| c.1 > cell_limits.max) {
                assert_eq!(out.charge_current_limit, DeciAmps(0), "day {day} {s} s: charging a high cell");
            }
            if m.cells.min().is_some_and(|c| c.1 < cell_limits.min) {
                assert_eq!(out.discharge_current_limit, DeciAmps(0), "day {day} {s} s: discharging a low cell");
            }
            // The relays may outlive the bridge's request by the pack's own 500 ms keep-alive timeout, never by
            // a whole checked second twice in a row.
            if w.pack.contactors_closed() && w.bridge.contactor_request() != Some(ContactorRequest::Closed) {
                closed_without_request_s += 1;
                assert!(closed_without_request_s < 2, "day {day} {s} s: relays closed without keep-alive");
            } else {
                closed_without_request_s = 0;
            }
            match (soc_start, m.soc) {
                (None, Some(r)) => soc_start = Some(r.value.0),
                (Some(_), _) => {
                    let truth = w.pack.current().0 as f64 / 10.0 / 3600.0;
                    true_ah += truth;
                    gross_ah += truth.abs();
                    if let Some(c) = m.current.filter(|c| w.now().saturating_since(c.at) <= Duration::from_millis(100))
                    {
                        decoded_ah += c.value.0 as f64 / 10.0 / 3600.0;
                        true_fresh_ah += truth;
                    }
                }
                _ => {}
            }
            // Every hour from the second day: the remaining-energy counter against the charge that really flowed.
            if let (Some((e1, _, ah1)), 0) = (energy_day1, s % 3600) {
                let m = w.bridge.model();
                if let Some(e) = m.remaining_energy.filter(|e| w.now().saturating_since(e.at) <= Duration::from_secs(1))
                {
                    let off = (e.value.0 as f64 - e1 as f64) - (true_ah - ah1) * nominal_v;
                    assert!(off.abs() <= energy_tolerance_wh, "day {day} {s} s: energy counter off by {off:.0} Wh");
                    energy_worst_wh = energy_worst_wh.max(off.abs());
                    energy_checks += 1;
                }
            }
            let soc = w.pack.soc_bp();
            assert!(soc <= 10_000);
            assert!(out.soc.is_none_or(|s| s.0 <= 10_000));
            soc_min = soc_min.min(soc);
            soc_max = soc_max.max(soc);
        }
        if day == 0 {
            rss_day1 = rss_kib();
            let m = w.bridge.model();
            energy_day1 = Some((
                m.remaining_energy.expect("remaining energy known after a day").value.0,
                m.total_energy.expect("total energy known after a day").value.0,
                true_ah,
            ));
        }
    }
    let elapsed = wall.elapsed();
    let rss_end = rss_kib();
    let days_per_s = DAYS as f64 / elapsed.as_secs_f64();
    eprintln!(
        "soak: {DAYS} simulated days in {elapsed:.2?} ({days_per_s:.1} simulated days per wall second), {checks} checks, \
         {:?}, SOC {soc_min}..{soc_max} bp, RSS {rss_day1} → {rss_end} KiB",
        w.traffic()
    );

    // No drift: the SOC the BMS reports moved by what the decoded current put in and took out.
    let soc_end = w.bridge.model().soc.expect("SOC known").value.0;
    let true_bp = true_ah / w.pack.capacity_ah() * 10_000.0;
    let reported_bp = soc_end as f64 - soc_start.expect("SOC known") as f64;
    eprintln!(
        "soak: {gross_ah:.0} Ah through the pack; decoded {decoded_ah:.2} Ah vs true {true_fresh_ah:.2} Ah over the \
         same seconds; SOC moved {reported_bp} bp, the true charge {true_bp:.0} bp"
    );
    // 0.5 A per bit on the wire: rounding errors cancel; a wrong scale or sign would be off by the gross throughput.
    assert!((decoded_ah - true_fresh_ah).abs() <= 0.005 * gross_ah + 0.5, "decoded current drifted");
    // Sampled once a second against a current that changes in between: a few basis points.
    assert!((reported_bp - true_bp).abs() <= 50.0, "SOC drifted: reported {reported_bp} bp, counted {true_bp:.0} bp");

    // The total energy does not drift; the hourly energy checks above ran through the week's swings.
    let (_, total1, _) = energy_day1.expect("a first day");
    let total_end = w.bridge.model().total_energy.expect("total energy known").value.0;
    eprintln!(
        "soak: remaining energy checked {energy_checks} times against the charge that flowed, worst {energy_worst_wh:.0} \
         Wh off (tolerance {energy_tolerance_wh:.0}); total {total1} → {total_end} Wh"
    );
    assert!(energy_checks >= 100, "the energy counter was checked only {energy_checks} times");
    assert_eq!(total_end, total1, "the total energy drifted");

    // The week cycled the pack and stayed inside the SOC window's reach.
    assert!(soc_max > soc_min + 1000, "the pack was cycled: SOC {soc_min}..{soc_max}");
    assert!(soc_min >= 500 && soc_max <= 9500, "SOC {soc_min}..{soc_max}");
    // One episode per injected fault, and nothing else went wrong on the way.
    let ev = w.bridge.events();
    assert_eq!(ev.dropped(), 0);
    let expected = [
        (EventKind::BatteryMissing, 2), // pack silent, corrupt checksums
        (EventKind::BatteryFrameInvalid, 1),
        (EventKind::InverterMissing, 1),
        (EventKind::CellUnderVoltage, 1),
        (EventKind::BatteryOverheat, 1),
        (EventKind::CellOverVoltage, 1),
        (EventKind::CellCriticalOverVoltage, 0),
        (EventKind::CellCriticalUnderVoltage, 0),
        (EventKind::BatteryFault, 0),
        (EventKind::CommandRejected, 0),
    ];
    for (k, n) in expected {
        assert_eq!(ev.record(k).count, n, "{k:?}");
        assert!(!ev.is_active(k), "{k:?} still active at the end");
    }
    for (k, rec) in ev.records() {
        assert_eq!(occurrences[k as usize], rec.count, "{k:?}: occurrences polled vs counted");
    }
    assert!(w.bridge.output().data_valid && w.pack.contactors_closed(), "running at the end of the week");
    if rss_day1 > 0 {
        assert!(rss_end <= rss_day1 + 4096, "memory grew from {rss_day1} to {rss_end} KiB over six days");
    }
}

/// A Tesla Model 3 (NCA, 96 cells, CAN-controlled contactors) for twelve simulated hours, a night's discharge and a
/// morning's charge, one fault every few hours. Shorter than the LEAF's week to keep the test time down; the same
/// checks every second: the limits never above the configured maximums, 0 A while the data is stale or a cell is
/// out of its window, the pack's contactors never closed without the bridge asking for longer than its own 500 ms
/// vehicle timeout, SOC in range; at the end one event episode per fault and the decoded current adding up to the
/// charge that flowed. The pack's frames carry no checksums, so the LEAF's corrupt-checksum day has no Tesla
/// counterpart.
#[test]
fn twelve_simulated_hours_of_a_tesla_never_exceed_a_limit() {
    use dbe_core::battery::tesla::TeslaModel3Options;
    use dbe_core::contactor::{ContactorMode, ContactorSetup};
    use dbe_sim::pack::{Fault as PackFault, SimPack};
    use dbe_sim::tesla::{TeslaPack, TeslaPackParams};

    const HOURS: u64 = 12;
    let cfg = BridgeConfig {
        battery: dbe_core::battery::BatteryConfig::TeslaModel3(TeslaModel3Options::default()),
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors: ContactorSetup::with_mode(ContactorMode::Can),
    };
    let sup = cfg.supervisor;
    let params = TeslaPackParams { initial_soc_bp: 6000, ..TeslaPackParams::nca() };
    let mut w = World::with_pack(cfg, TeslaPack::new(params, Instant::ZERO), Instant::ZERO);
    w.demand = Demand::Daily { peak: Watts(6000) };
    let cell_limits = CellLimits::for_chemistry(dbe_core::model::Chemistry::Nca);
    let wall = WallInstant::now();
    // (start s, span s, what)
    let schedule: [(u64, u64, &str); 5] = [
        (3600, 30, "pack silent"),
        (3 * 3600, 120, "inverter silent"),
        (4 * 3600, 60, "cell low"),
        (10 * 3600, 60, "cell high"),
        (11 * 3600, 1200, "hot"),
    ];
    let set = |w: &mut World<TeslaPack>, what: &str, on: bool| match what {
        "pack silent" => w.pack.apply(PackFault::Silent(on)),
        "inverter silent" => w.inverter.set_silent(on),
        "cell low" => w.pack.apply(PackFault::Cell { index: 30, millivolts: on.then_some(2985) }),
        "cell high" => w.pack.apply(PackFault::Cell { index: 60, millivolts: on.then_some(4210) }),
        _ => w.pack.apply(PackFault::TemperatureOffset(if on { 350 } else { 0 })),
    };
    let mut occurrences = [0u32; EventKind::COUNT];
    let mut closed_without_request_s = 0u64;
    let (mut decoded_ah, mut true_fresh_ah, mut gross_ah) = (0.0f64, 0.0f64, 0.0f64);
    let (mut soc_min, mut soc_max) = (u16::MAX, 0u16);
    let mut total_first: Option<u32> = None;
    for s in 0..HOURS * 3600 {
        for &(at, span, what) in &schedule {
            if s == at {
                set(&mut w, what, true);
            }
            if s == at + span {
                set(&mut w, what, false);
            }
        }
        w.run_until(Instant::from_millis((s + 1) * 1000));
        while let Some(o) = w.bridge.poll_event() {
            occurrences[o.kind as usize] += 1;
        }
        let out = *w.bridge.output();
        if let Some(t) = w.inverter.summary() {
            assert!(t.charge_limit <= sup.max_charge_current, "{s} s: told charge {t:?}");
            assert!(t.discharge_limit <= sup.max_discharge_current, "{s} s: told discharge {t:?}");
        }
        let m = w.bridge.model();
        let fresh = m.last_valid_frame_at.is_some_and(|t| w.now().saturating_since(t) <= sup.stale_timeout);
        if !fresh || !out.data_valid {
            assert_eq!((out.charge_current_limit, out.discharge_current_limit), (DeciAmps(0), DeciAmps(0)), "{s} s");
        }
        if m.cells.max().is_some_and(|c| c.1 > cell_limits.max) {
            assert_eq!(out.charge_current_limit, DeciAmps(0), "{s} s: charging a high cell");
        }
        if m.cells.min().is_some_and(|c| c.1 < cell_limits.min) {
            assert_eq!(out.discharge_current_limit, DeciAmps(0), "{s} s: discharging a low cell");
        }
        if w.pack.contactors_closed() && w.bridge.contactor_request() != Some(ContactorRequest::Closed) {
            closed_without_request_s += 1;
            assert!(closed_without_request_s < 2, "{s} s: contactors closed without the car asking");
        } else {
            closed_without_request_s = 0;
        }
        let truth = w.pack.model().current().0 as f64 / 10.0 / 3600.0;
        gross_ah += truth.abs();
        if let Some(c) = m.current.filter(|c| w.now().saturating_since(c.at) <= Duration::from_millis(100)) {
            decoded_ah += c.value.0 as f64 / 10.0 / 3600.0;
            true_fresh_ah += truth;
        }
        if total_first.is_none() {
            total_first = m.total_energy.map(|e| e.value.0);
        }
        let soc = w.pack.soc_bp();
        soc_min = soc_min.min(soc);
        soc_max = soc_max.max(soc);
        assert!(out.soc.is_none_or(|s| s.0 <= 10_000));
    }
    eprintln!(
        "soak (tesla): {HOURS} simulated hours in {:.2?}, {:?}, SOC {soc_min}..{soc_max} bp, {gross_ah:.0} Ah through \
         the pack, decoded {decoded_ah:.2} Ah vs true {true_fresh_ah:.2} Ah",
        wall.elapsed(),
        w.traffic()
    );
    // 0.1 A per bit: a wrong scale or sign would be off by the gross throughput.
    assert!((decoded_ah - true_fresh_ah).abs() <= 0.005 * gross_ah + 0.5, "decoded current drifted");
    assert!(soc_max > soc_min + 500, "the pack was cycled: SOC {soc_min}..{soc_max}");
    let total_end = w.bridge.model().total_energy.expect("total energy known").value.0;
    assert_eq!(Some(total_end), total_first, "the total energy drifted");
    let ev = w.bridge.events();
    assert_eq!(ev.dropped(), 0);
    for (k, n) in [
        (EventKind::BatteryMissing, 1),
        (EventKind::InverterMissing, 1),
        (EventKind::CellUnderVoltage, 1),
        (EventKind::CellOverVoltage, 1),
        (EventKind::BatteryOverheat, 1),
        (EventKind::CellCriticalOverVoltage, 0),
        (EventKind::CellCriticalUnderVoltage, 0),
        (EventKind::BatteryFault, 0),
        (EventKind::BatteryDesignMismatch, 0),
        (EventKind::CommandRejected, 0),
    ] {
        assert_eq!(ev.record(k).count, n, "{k:?}");
        assert!(!ev.is_active(k), "{k:?} still active at the end");
    }
    for (k, rec) in ev.records() {
        assert_eq!(occurrences[k as usize], rec.count, "{k:?}: occurrences polled vs counted");
    }
    assert!(w.bridge.output().data_valid && w.pack.contactors_closed(), "running at the end");
}
