use super::*;
use crate::model::{BmsFaults, BmsStatus, BmsWarnings, Reading, Requirement, MAX_CELLS};

const DESIGN: PackDesign = PackDesign {
    chemistry: Chemistry::Nmc,
    cells: 96,
    max_pack_voltage: DeciVolts(4040),
    min_pack_voltage: DeciVolts(2600),
    max_cell_voltage: MilliVolts(4250),
    min_cell_voltage: MilliVolts(2700),
    max_cell_deviation: MilliVolts(500),
};

/// The LEAF's list: 10 ms frames 1 s, SOC 3 s, cells and temperatures 24 s.
const REQUIRED: [Requirement; 9] = [
    Requirement::new(Quantity::PackVoltage, Duration::from_secs(1)),
    Requirement::new(Quantity::Current, Duration::from_secs(1)),
    Requirement::new(Quantity::Status, Duration::from_secs(1)),
    Requirement::new(Quantity::BmsChargePower, Duration::from_secs(1)),
    Requirement::new(Quantity::BmsDischargePower, Duration::from_secs(1)),
    Requirement::new(Quantity::Soc, Duration::from_secs(3)),
    Requirement::new(Quantity::Cells, Duration::from_secs(24)),
    Requirement::new(Quantity::TemperatureMin, Duration::from_secs(24)),
    Requirement::new(Quantity::TemperatureMax, Duration::from_secs(24)),
];

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A healthy pack at 50 % with generous BMS limits, last heard at `now`.
fn healthy(now: Instant) -> BatteryModel {
    let mut m = BatteryModel::new(DESIGN);
    m.pack_voltage = Some(Reading::new(DeciVolts(3800), now));
    m.current = Some(Reading::new(DeciAmps(0), now));
    m.soc = Some(Reading::new(BasisPoints(5000), now));
    m.soh = Some(Reading::new(BasisPoints(9500), now));
    m.temperature_min = Some(Reading::new(DeciCelsius(200), now));
    m.temperature_max = Some(Reading::new(DeciCelsius(220), now));
    m.total_energy = Some(Reading::new(WattHours(40_000), now));
    m.max_charge_power = Some(Reading::new(Watts(50_000), now));
    m.max_discharge_power = Some(Reading::new(Watts(50_000), now));
    m.cells.set_voltages(now, &[MilliVolts(3900); 96]);
    m.bms_status = BmsStatus::Active;
    m.status_at = Some(now);
    m.design_status = DesignStatus::Confirmed;
    m.required = &REQUIRED;
    m.last_valid_frame_at = Some(now);
    m
}

fn cfg() -> SupervisorConfig {
    SupervisorConfig {
        max_charge_current: DeciAmps(500),
        max_discharge_current: DeciAmps(500),
        max_charge_power: Watts(100_000),
        max_discharge_power: Watts(100_000),
        soc_window: SocWindow::FULL,
        inverter_timeout: Some(Duration::from_secs(10)),
        ..SupervisorConfig::default()
    }
}

fn running(cfg: SupervisorConfig) -> (Supervisor, BatteryModel) {
    let mut s = Supervisor::new(cfg);
    let m = healthy(t(0));
    s.update(t(0), &m, Some(t(0)));
    (s, m)
}

#[test]
fn healthy_pack_gets_user_limits_and_closed_contactors() {
    let (mut s, m) = running(cfg());
    let o = *s.update(t(100), &m, Some(t(100)));
    assert_eq!(o.charge_current_limit, DeciAmps(500));
    assert_eq!(o.discharge_current_limit, DeciAmps(500));
    assert_eq!(o.charge_limited_by, LimitReason::User);
    assert_eq!(o.contactors, Some(ContactorRequest::Closed));
    assert!(o.data_valid && o.inverter_present && o.alarms.is_empty());
    // 96 cells × 4.10 V (the CV target 100 mV under the 4.20 V cell maximum), not the 404.0 V design bound; the
    // floor is 96 × 3.00 V, not the 260.0 V design bound.
    assert_eq!(o.max_charge_voltage, DeciVolts(3936));
    assert_eq!(o.min_discharge_voltage, DeciVolts(2880));
}

#[test]
fn no_data_at_start_is_not_valid_but_not_missing_until_the_timeout() {
    let mut s = Supervisor::new(cfg());
    let m = BatteryModel::new(DESIGN);
    let o = *s.update(t(0), &m, None);
    assert!(!o.data_valid);
    assert_eq!(o.charge_current_limit, DeciAmps(0));
    assert!(!s.events().is_active(EventKind::BatteryMissing));
    assert_eq!(s.poll_timeout(), Some(t(10_001)));
    s.update(t(10_001), &m, None);
    assert!(s.events().is_active(EventKind::BatteryMissing));
}

#[test]
fn cell_over_voltage_stops_charging_only() {
    let (mut s, mut m) = running(cfg());
    let mut cells = [MilliVolts(4000); 96];
    cells[41] = MilliVolts(4210);
    m.cells.set_voltages(t(1), &cells);
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.charge_current_limit, DeciAmps(0));
    assert_eq!(o.charge_limited_by, LimitReason::CellVoltage);
    assert_eq!(o.discharge_current_limit, DeciAmps(500));
    assert!(o.alarms.contains(Alarms::CELL_OVER_VOLTAGE));
    let rec = s.events().record(EventKind::CellOverVoltage);
    assert!(rec.active);
    assert_eq!(rec.data, (42 << 16) | 4210, "cell number from 1 and its voltage");
    assert_eq!(o.contactors, Some(ContactorRequest::Closed));

    // Inside the hysteresis band it stays active; below it, it clears.
    cells[41] = MilliVolts(4190);
    m.cells.set_voltages(t(2), &cells);
    assert_eq!(s.update(t(2), &m, Some(t(2))).charge_current_limit, DeciAmps(0));
    cells[41] = MilliVolts(4150);
    m.cells.set_voltages(t(3), &cells);
    let o = *s.update(t(3), &m, Some(t(3)));
    assert!(!s.events().is_active(EventKind::CellOverVoltage));
    assert!(o.charge_current_limit > DeciAmps(0), "derated, not stopped");
    assert!(o.charge_current_limit < DeciAmps(500), "still derated in the warning band");
    assert_eq!(o.charge_limited_by, LimitReason::CellVoltage);
}

#[test]
fn critical_cell_voltage_opens_contactors_and_latches_until_start() {
    let (mut s, mut m) = running(cfg());
    let mut cells = [MilliVolts(3700); 96];
    cells[0] = MilliVolts(2900);
    m.cells.set_voltages(t(1), &cells);
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
    assert!(o.alarms.contains(Alarms::CRITICAL));
    m.cells.set_voltages(t(2), &[MilliVolts(3700); 96]);
    let o = *s.update(t(2), &m, Some(t(2)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open), "latched");
    s.handle_command(t(3), Command::Start).unwrap();
    let o = *s.update(t(3), &m, Some(t(3)));
    assert_eq!(o.contactors, Some(ContactorRequest::Closed));
    assert!(o.alarms.is_empty());
}

#[test]
fn pack_voltage_and_temperature_rules() {
    let (mut s, mut m) = running(cfg());
    m.pack_voltage = Some(Reading::new(DeciVolts(4050), t(1)));
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(0), LimitReason::PackVoltage));
    assert!(o.discharge_current_limit > DeciAmps(0));
    m.pack_voltage = Some(Reading::new(DeciVolts(2500), t(2)));
    let o = *s.update(t(2), &m, Some(t(2)));
    assert_eq!(o.discharge_current_limit, DeciAmps(0));
    assert!(s.events().is_active(EventKind::BatteryUnderVoltage));

    let (mut s, mut m) = running(cfg());
    m.temperature_max = Some(Reading::new(DeciCelsius(475), t(1)));
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.charge_current_limit, DeciAmps(250), "halfway between 45 and 50 °C: half");
    assert_eq!(o.discharge_limited_by, LimitReason::Temperature);
    m.temperature_max = Some(Reading::new(DeciCelsius(510), t(2)));
    let o = *s.update(t(2), &m, Some(t(2)));
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert!(s.events().is_active(EventKind::BatteryOverheat));

    let (mut s, mut m) = running(cfg());
    m.temperature_min = Some(Reading::new(DeciCelsius(-50), t(1)));
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.charge_current_limit, DeciAmps(0));
    assert_eq!(o.discharge_current_limit, DeciAmps(500));
    assert!(s.events().is_active(EventKind::BatteryFrozen));
}

#[test]
fn soc_window_scales_soc_and_energy_with_tapers_at_the_edges() {
    let mut c = cfg();
    c.soc_window = SocWindow { min: BasisPoints(1000), max: BasisPoints(9000) };
    let (mut s, mut m) = running(c);
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.soc, Some(BasisPoints(5000)));
    assert_eq!(o.total_energy, Some(WattHours(32_000)));
    assert_eq!(o.remaining_energy, Some(WattHours(16_000)));

    for (real, reported) in [(900, 0), (1000, 0), (9000, 10_000), (9500, 10_000), (8800, 9750)] {
        m.soc = Some(Reading::new(BasisPoints(real), t(2)));
        assert_eq!(s.update(t(2), &m, Some(t(2))).soc, Some(BasisPoints(reported)), "real {real}");
    }
    m.soc = Some(Reading::new(BasisPoints(9000), t(3)));
    let o = *s.update(t(3), &m, Some(t(3)));
    assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(0), LimitReason::SocFull));
    assert_eq!(o.discharge_current_limit, DeciAmps(500));
    m.soc = Some(Reading::new(BasisPoints(8800), t(4)));
    let o = *s.update(t(4), &m, Some(t(4)));
    assert_eq!(o.charge_current_limit, DeciAmps(250), "reported 97.5 %: half of the 95-100 % taper");
    m.soc = Some(Reading::new(BasisPoints(1000), t(5)));
    let o = *s.update(t(5), &m, Some(t(5)));
    assert_eq!((o.discharge_current_limit, o.discharge_limited_by), (DeciAmps(0), LimitReason::SocEmpty));
    assert_eq!(o.remaining_energy, Some(WattHours(0)));
}

#[test]
fn limits_are_the_least_of_bms_user_and_power() {
    let (mut s, mut m) = running(cfg());
    m.max_charge_power = Some(Reading::new(Watts(7600), t(1)));
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(200), LimitReason::Bms));
    let mut c = cfg();
    c.max_discharge_power = Watts(3800);
    let (mut s, m) = running(c);
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!((o.discharge_current_limit, o.discharge_limited_by), (DeciAmps(100), LimitReason::User));
    assert_eq!(o.discharge_power_limit, Watts(3800));
}

#[test]
fn pause_resume_and_stop() {
    let (mut s, m) = running(cfg());
    s.handle_command(t(1), Command::Pause).unwrap();
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert_eq!(o.charge_limited_by, LimitReason::Paused);
    assert_eq!(o.contactors, Some(ContactorRequest::Closed), "pause keeps the contactors");
    s.handle_command(t(2), Command::Resume).unwrap();
    assert_eq!(s.update(t(2), &m, Some(t(2))).charge_current_limit, DeciAmps(500));
    assert_eq!(s.events().record(EventKind::PauseBegin).count, 1);
    assert_eq!(s.events().record(EventKind::PauseEnd).count, 1);

    s.handle_command(t(3), Command::Stop).unwrap();
    let o = *s.update(t(3), &m, Some(t(3)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
    assert_eq!(o.discharge_limited_by, LimitReason::Stopped);
    s.handle_command(t(4), Command::Start).unwrap();
    assert_eq!(s.update(t(4), &m, Some(t(4))).contactors, Some(ContactorRequest::Closed));
}

#[test]
fn temporary_limits_only_lower_and_expire_by_themselves() {
    let (mut s, m) = running(cfg());
    let cmd = Command::SetTemporaryLimits {
        charge: Some(DeciAmps(150)),
        discharge: Some(DeciAmps(9000)),
        timeout: Duration::from_secs(30),
    };
    s.handle_command(t(1000), cmd).unwrap();
    let o = *s.update(t(1000), &m, Some(t(1000)));
    assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(150), LimitReason::Temporary));
    assert_eq!(o.discharge_current_limit, DeciAmps(500), "a remote limit cannot raise the user's");
    assert_eq!(o.temporary_limits_until, Some(t(31_000)));
    // The 1 s readings of `m` (from t = 0) age out at 1.001 s: that is the next deadline.
    assert_eq!(s.poll_timeout(), Some(t(1001)));
    let o = *s.update(t(31_000), &healthy(t(31_000)), Some(t(31_000)));
    assert_eq!(o.charge_current_limit, DeciAmps(500));
    assert_eq!(s.events().record(EventKind::TemporaryLimitsExpired).count, 1);
}

#[test]
fn bad_commands_change_nothing_and_raise_an_event() {
    let (mut s, m) = running(cfg());
    let before = *s.update(t(1), &m, Some(t(1)));
    let bad = [
        Command::SetTemporaryLimits { charge: Some(DeciAmps(-1)), discharge: None, timeout: Duration::from_secs(30) },
        Command::SetTemporaryLimits { charge: None, discharge: None, timeout: Duration::ZERO },
        Command::SetSocWindow { min: BasisPoints(6000), max: BasisPoints(5000) },
        Command::SetSocWindow { min: BasisPoints(0), max: BasisPoints(10_001) },
    ];
    for (i, cmd) in bad.into_iter().enumerate() {
        assert!(s.handle_command(t(2), cmd).is_err(), "{cmd:?}");
        assert_eq!(s.events().record(EventKind::CommandRejected).count, i as u32 + 1);
    }
    assert_eq!(*s.update(t(1), &m, Some(t(1))), before);
    s.handle_command(t(3), Command::SetSocWindow { min: BasisPoints(2000), max: BasisPoints(8000) }).unwrap();
    assert_eq!(s.update(t(3), &m, Some(t(3))).soc, Some(BasisPoints(5000)));
    assert_eq!(s.soc_window(), SocWindow { min: BasisPoints(2000), max: BasisPoints(8000) });
}

#[test]
fn bms_fault_and_hvil_open_the_contactors() {
    let (mut s, mut m) = running(cfg());
    m.faults.set(BmsFaults::HVIL_OPEN, true);
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
    assert!(o.alarms.contains(Alarms::BMS_FAULT));
    assert!(s.events().is_active(EventKind::HvilFailure));
}

#[test]
fn soc_window_scale_never_panics_or_leaves_range() {
    for min in (0..=10_000u16).step_by(997) {
        for max in (0..=10_000u16).step_by(1013) {
            for real in (0..=12_000u16).step_by(331) {
                let s = SocWindow { min: BasisPoints(min), max: BasisPoints(max) }.scale(BasisPoints(real));
                assert!(s.0 <= 10_000);
            }
        }
    }
    let _ = MAX_CELLS;
}

#[test]
fn voltage_targets_follow_the_cells_and_the_configured_cv_target() {
    let mut c = cfg();
    c.charge_target_cell_voltage = Some(MilliVolts(4150));
    let (mut s, m) = running(c);
    assert_eq!(s.update(t(1), &m, Some(t(1))).max_charge_voltage, DeciVolts(3984));
    // Never above the cell maximum, however it is configured.
    c.charge_target_cell_voltage = Some(MilliVolts(4300));
    let (mut s, m) = running(c);
    assert_eq!(s.update(t(1), &m, Some(t(1))).max_charge_voltage, DeciVolts(4032));
    // A user maximum below the cells' bound wins.
    c.max_pack_voltage = Some(DeciVolts(3900));
    let (mut s, m) = running(c);
    assert_eq!(s.update(t(1), &m, Some(t(1))).max_charge_voltage, DeciVolts(3900));
}

#[test]
fn stale_data_zeroes_limits_then_recovers() {
    let (mut s, mut m) = running(cfg());
    // Only the last valid frame keeps coming (an unchecksummed frame): the 1 s readings age out first.
    m.last_valid_frame_at = Some(t(10_000));
    let o = *s.update(t(1000), &m, Some(t(1000)));
    assert!(o.data_valid, "exactly at its age a reading still counts");
    let o = *s.update(t(1001), &m, Some(t(1001)));
    assert!(!o.data_valid);
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert_eq!(o.charge_limited_by, LimitReason::Unknown(Quantity::PackVoltage));
    assert_eq!(o.charge_limited_by.name(), "unknown:pack_voltage");
    assert!(o.alarms.contains(Alarms::COMMUNICATION));
    assert!(s.events().is_active(EventKind::StaleValue));
    // The current aged out with the voltage: nobody can say no current flows, so they wait for the ceiling.
    assert!(o.contactors_open_pending);
    let o = *s.update(t(8001), &m, Some(t(8001)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open), "7 s after the decision");
    // The pack voltage is part of "heard": ten seconds after it, the battery counts as missing.
    let o = *s.update(t(10_001), &m, Some(t(10_001)));
    assert!(s.events().is_active(EventKind::BatteryMissing));
    assert_eq!(o.unknown, Some(Quantity::PackVoltage));

    let m = healthy(t(12_000));
    let o = *s.update(t(12_000), &m, Some(t(12_000)));
    assert!(o.data_valid);
    assert_eq!(o.charge_current_limit, DeciAmps(500));
    assert!(!s.events().is_active(EventKind::BatteryMissing) && !s.events().is_active(EventKind::StaleValue));
    assert_eq!(s.events().record(EventKind::BatteryMissing).count, 1);
}

/// `healthy` at `now`, except that `q` is missing (`stale == false`) or one millisecond past its age.
fn without(now: Instant, q: Quantity, max_age: Duration, stale: bool) -> BatteryModel {
    let mut m = healthy(now);
    let old = Instant::from_millis(now.as_millis() - max_age.as_millis() - 1);
    match (q, stale) {
        (Quantity::PackVoltage, false) => m.pack_voltage = None,
        (Quantity::PackVoltage, true) => m.pack_voltage.as_mut().unwrap().at = old,
        (Quantity::Current, false) => m.current = None,
        (Quantity::Current, true) => m.current.as_mut().unwrap().at = old,
        (Quantity::Soc, false) => m.soc = None,
        (Quantity::Soc, true) => m.soc.as_mut().unwrap().at = old,
        (Quantity::TemperatureMin, false) => m.temperature_min = None,
        (Quantity::TemperatureMin, true) => m.temperature_min.as_mut().unwrap().at = old,
        (Quantity::TemperatureMax, false) => m.temperature_max = None,
        (Quantity::TemperatureMax, true) => m.temperature_max.as_mut().unwrap().at = old,
        (Quantity::Cells, false) => m.cells.set_voltages(now, &[MilliVolts(3900); 95]),
        (Quantity::Cells, true) => m.cells.set_voltages(old, &[MilliVolts(3900); 96]),
        (Quantity::BmsChargePower, false) => m.max_charge_power = None,
        (Quantity::BmsChargePower, true) => m.max_charge_power.as_mut().unwrap().at = old,
        (Quantity::BmsDischargePower, false) => m.max_discharge_power = None,
        (Quantity::BmsDischargePower, true) => m.max_discharge_power.as_mut().unwrap().at = old,
        (Quantity::Status, false) => m.status_at = None,
        (Quantity::Status, true) => m.status_at = Some(old),
        (q, _) => unreachable!("{q:?} is not in the LEAF list"),
    }
    m
}

#[test]
fn every_required_reading_missing_or_stale_zeroes_what_it_guards_and_opens() {
    for r in REQUIRED {
        for stale in [false, true] {
            let (mut s, _) = running(cfg());
            let now = t(30_000);
            // Everything else fresh at `now`; the contactors closed just before.
            s.update(t(29_999), &healthy(t(29_999)), Some(t(29_999)));
            let m = without(now, r.quantity, r.max_age, stale);
            let o = *s.update(now, &m, Some(now));
            let case = format!("{:?} {}", r.quantity, if stale { "stale" } else { "missing" });
            let (c, d) = match r.quantity {
                Quantity::BmsChargePower => (true, false),
                Quantity::BmsDischargePower => (false, true),
                _ => (true, true),
            };
            let unknown = LimitReason::Unknown(r.quantity);
            if c {
                assert_eq!((o.charge_current_limit, o.charge_limited_by), (DeciAmps(0), unknown), "{case}");
            } else {
                assert!(o.charge_current_limit > DeciAmps(0), "{case}: charge is not guarded by it");
            }
            if d {
                assert_eq!((o.discharge_current_limit, o.discharge_limited_by), (DeciAmps(0), unknown), "{case}");
            } else {
                assert!(o.discharge_current_limit > DeciAmps(0), "{case}: discharge is not guarded by it");
            }
            assert!(!o.data_valid, "{case}");
            assert_eq!(o.unknown, Some(r.quantity), "{case}");
            if r.quantity != Quantity::Current {
                assert_eq!(o.contactors, Some(ContactorRequest::Open), "{case}: no current flows, so they open");
            } else {
                assert!(o.contactors_open_pending, "{case}: without a current they wait for the ceiling");
            }
            assert!(s.events().is_active(EventKind::StaleValue), "{case}");
        }
    }
}

#[test]
fn a_driver_that_declares_nothing_gets_nothing() {
    let (mut s, mut m) = running(cfg());
    m.required = &[];
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert_eq!(o.charge_limited_by.name(), "unknown:requirements");
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
}

#[test]
fn core_readings_are_required_even_when_a_driver_forgets_them() {
    // A driver listing only its status frame still cannot run without temperatures: they stay required (60 s
    // at most).
    const ONLY_STATUS: [Requirement; 1] = [Requirement::new(Quantity::Status, Duration::from_secs(1))];
    let (mut s, mut m) = running(cfg());
    m.required = &ONLY_STATUS;
    m.temperature_min = None;
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!(o.charge_limited_by, LimitReason::Unknown(Quantity::TemperatureMin));
    assert_eq!(o.discharge_current_limit, DeciAmps(0));
    let mut m = healthy(t(60_001));
    m.required = &ONLY_STATUS;
    m.temperature_min = Some(Reading::new(DeciCelsius(200), t(0)));
    assert_eq!(s.update(t(60_001), &m, Some(t(60_001))).charge_current_limit, DeciAmps(0), "60 s at most");
}

#[test]
fn design_pending_gives_nothing_and_a_contradiction_latches() {
    let (mut s, mut m) = running(cfg());
    m.design_status = DesignStatus::Pending;
    let o = *s.update(t(1), &m, Some(t(1)));
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert_eq!(o.charge_limited_by, LimitReason::DesignPending);
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
    m.design_status = DesignStatus::Confirmed;
    assert_eq!(s.update(t(2), &m, Some(t(2))).charge_current_limit, DeciAmps(500), "limits follow at once");

    m.design_status = DesignStatus::Contradicted;
    let o = *s.update(t(3), &m, Some(t(3)));
    assert_eq!(o.charge_limited_by, LimitReason::Critical);
    assert!(o.latches.design_mismatch && s.events().is_active(EventKind::BatteryDesignMismatch));
    assert!(s.handle_command(t(4), Command::Start).is_err(), "still contradicted");
    m.design_status = DesignStatus::Confirmed;
    let o = *s.update(t(5), &m, Some(t(5)));
    assert_eq!(o.charge_current_limit, DeciAmps(0), "latched until Start");
    s.handle_command(t(6), Command::Start).unwrap();
    assert_eq!(s.update(t(6), &m, Some(t(6))).charge_current_limit, DeciAmps(500));
}

#[test]
fn every_fault_request_and_warning_bit_has_a_rule() {
    let faults = rules::FAULT_RULES.iter().fold(BmsFaults::empty(), |a, r| a | r.fault);
    assert_eq!(faults, BmsFaults::all(), "a BmsFaults bit without a rule");
    let requests = rules::REQUEST_RULES.iter().fold(BmsRequests::empty(), |a, r| a | r.request);
    assert_eq!(requests, BmsRequests::all(), "a BmsRequests bit without a rule");
    let warnings = rules::WARNING_RULES.iter().fold(BmsWarnings::empty(), |a, r| a | r.0);
    assert_eq!(warnings, BmsWarnings::all(), "a BmsWarnings bit without a rule");
    for r in rules::FAULT_RULES {
        assert!(r.stop_charge || r.stop_discharge, "{:?} stops nothing", r.fault);
    }
}

#[test]
fn each_fault_bit_stops_what_its_rule_says() {
    for r in rules::FAULT_RULES {
        let (mut s, mut m) = running(cfg());
        m.faults = r.fault;
        let o = *s.update(t(1), &m, Some(t(1)));
        assert_eq!(o.charge_current_limit == DeciAmps(0), r.stop_charge, "{:?}", r.fault);
        assert_eq!(o.discharge_current_limit == DeciAmps(0), r.stop_discharge, "{:?}", r.fault);
        assert_eq!(o.contactors == Some(ContactorRequest::Open), r.open, "{:?}", r.fault);
        assert!(s.events().is_active(r.event), "{:?}", r.fault);
        assert!(o.alarms.contains(Alarms::BMS_FAULT));
        m.faults = BmsFaults::empty();
        s.update(t(2), &m, Some(t(2)));
        assert!(!s.events().is_active(r.event), "{:?} clears with the bit", r.fault);
    }
}

#[test]
fn each_bms_request_is_enforced_for_as_long_as_it_stands() {
    for r in rules::REQUEST_RULES {
        let (mut s, _) = running(cfg());
        for ms in [1, 10, 20, 5000] {
            // Fresh frames keep arriving (0x1DC's power limits included): the request still holds.
            let mut m = healthy(t(ms));
            m.requests = r.request;
            let o = *s.update(t(ms), &m, Some(t(ms)));
            let reason = LimitReason::BmsRequest(r.request);
            assert_eq!(o.charge_current_limit == DeciAmps(0), r.stop_charge, "{} at {ms}", r.name);
            assert_eq!(o.discharge_current_limit == DeciAmps(0), r.stop_discharge, "{} at {ms}", r.name);
            if r.stop_charge {
                assert_eq!(o.charge_limited_by, reason);
                assert_eq!(o.charge_limited_by.name(), r.name);
            }
            assert_eq!(o.contactors == Some(ContactorRequest::Open), r.open, "{}", r.name);
            assert!(s.events().is_active(r.event), "{}", r.name);
        }
        let o = *s.update(t(5001), &healthy(t(5001)), Some(t(5001)));
        assert!(o.charge_current_limit > DeciAmps(0) && o.discharge_current_limit > DeciAmps(0), "{}", r.name);
        assert!(!s.events().is_active(r.event));
    }
}

/// `healthy` at `now` with `current` flowing.
fn with_current(now: Instant, current: DeciAmps) -> BatteryModel {
    let mut m = healthy(now);
    m.current = Some(Reading::new(current, now));
    m
}

#[test]
fn contactors_wait_for_the_inverter_and_open_once_it_is_lost_and_the_current_has_stopped() {
    let mut s = Supervisor::new(cfg());
    let o = *s.update(t(0), &healthy(t(0)), None);
    assert_eq!(o.contactors, Some(ContactorRequest::Open), "no inverter yet");
    assert_eq!(o.charge_limited_by, LimitReason::InverterMissing);
    let o = *s.update(t(500), &healthy(t(500)), Some(t(500)));
    assert_eq!(o.contactors, Some(ContactorRequest::Closed));
    // Lost while 20 A still flow: limits 0 at once, contactors wait.
    let o = *s.update(t(10_501), &with_current(t(10_501), DeciAmps(-200)), Some(t(500)));
    assert!(!o.inverter_present);
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert_eq!(o.contactors, Some(ContactorRequest::Closed), "not opened under load");
    assert!(o.contactors_open_pending);
    assert!(s.events().is_active(EventKind::InverterMissing));
    // The current stops: open.
    let o = *s.update(t(12_000), &with_current(t(12_000), DeciAmps(-10)), Some(t(500)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
    // The inverter comes back: they close again and the limits return.
    let o = *s.update(t(13_000), &healthy(t(13_000)), Some(t(13_000)));
    assert!(o.inverter_present && !s.events().is_active(EventKind::InverterMissing));
    assert_eq!(o.contactors, Some(ContactorRequest::Closed));
    assert_eq!(o.charge_current_limit, DeciAmps(500));
}

#[test]
fn a_lost_inverter_that_keeps_drawing_has_the_contactors_opened_at_the_ceiling() {
    let (mut s, _) = running(cfg());
    let lost = t(10_001);
    let draw = |now: Instant| with_current(now, DeciAmps(-300));
    assert_eq!(s.update(lost, &draw(lost), Some(t(0))).contactors, Some(ContactorRequest::Closed));
    let ceiling = cfg().inverter_lost_open_ceiling.as_millis();
    let before = t(lost.as_millis() + ceiling - 1);
    assert_eq!(s.update(before, &draw(before), Some(t(0))).contactors, Some(ContactorRequest::Closed));
    let at = t(lost.as_millis() + ceiling);
    assert_eq!(s.update(at, &draw(at), Some(t(0))).contactors, Some(ContactorRequest::Open));
}

#[test]
fn a_fault_under_load_opens_when_the_current_stops_or_after_seven_seconds() {
    let (mut s, _) = running(cfg());
    let faulty = |ms: u64, i: i32| {
        let mut m = with_current(t(ms), DeciAmps(i));
        m.faults = BmsFaults::INTERNAL;
        m
    };
    let o = *s.update(t(1), &faulty(1, 250), Some(t(1)));
    assert_eq!((o.charge_current_limit, o.contactors), (DeciAmps(0), Some(ContactorRequest::Closed)));
    assert_eq!(s.poll_timeout(), Some(t(1002)), "readings age first");
    assert_eq!(s.update(t(7000), &faulty(7000, 250), Some(t(7000))).contactors, Some(ContactorRequest::Closed));
    assert_eq!(s.update(t(7001), &faulty(7001, 250), Some(t(7001))).contactors, Some(ContactorRequest::Open));

    // Under a current that stops at once, they open at once.
    let (mut s, _) = running(cfg());
    s.update(t(1), &faulty(1, 250), Some(t(1)));
    assert_eq!(s.update(t(500), &faulty(500, 5), Some(t(500))).contactors, Some(ContactorRequest::Open));
}

#[test]
fn current_above_the_told_limit_pauses_after_a_few_seconds() {
    let mut c = cfg();
    c.max_charge_current = DeciAmps(100);
    let (mut s, _) = running(c);
    // Told 10 A; 14 A is inside the 5 A margin.
    for ms in (100..=10_000).step_by(100) {
        let o = *s.update(t(ms), &with_current(t(ms), DeciAmps(140)), Some(t(ms)));
        assert_eq!(o.charge_current_limit, DeciAmps(100));
    }
    // 20 A for five seconds: CHARGE_LIMIT_EXCEEDED, then paused.
    let start = 10_100;
    for ms in (start..start + 5000).step_by(100) {
        let o = *s.update(t(ms), &with_current(t(ms), DeciAmps(200)), Some(t(ms)));
        assert_eq!(o.charge_current_limit, DeciAmps(100), "not yet at {ms}");
    }
    let end = t(start + 5000);
    let o = *s.update(end, &with_current(end, DeciAmps(200)), Some(end));
    assert!(s.events().is_active(EventKind::ChargeLimitExceeded));
    assert_eq!((o.charge_current_limit, o.discharge_current_limit), (DeciAmps(0), DeciAmps(0)));
    assert_eq!(o.charge_limited_by, LimitReason::OverCurrent);
    assert!(o.paused && o.alarms.contains(Alarms::OVER_CURRENT));
    // It stays paused when the current stops, until Resume.
    let o = *s.update(t(20_000), &healthy(t(20_000)), Some(t(20_000)));
    assert_eq!(o.charge_current_limit, DeciAmps(0));
    s.handle_command(t(20_001), Command::Resume).unwrap();
    assert_eq!(s.update(t(20_001), &healthy(t(20_001)), Some(t(20_001))).charge_current_limit, DeciAmps(100));

    // Discharge the same way.
    let (mut s, _) = running(cfg());
    for ms in (100..=5100).step_by(100) {
        s.update(t(ms), &with_current(t(ms), DeciAmps(-600)), Some(t(ms)));
    }
    assert!(s.events().is_active(EventKind::DischargeLimitExceeded));
}

#[test]
fn a_current_whose_sign_contradicts_the_soc_raises_a_warning() {
    let (mut s, _) = running(cfg());
    // Discharging at 20 A (by the sensor) for 3 minutes while the SOC rises by 1 %: 1 Ah "out" against SOC "in".
    let step = |s: &mut Supervisor, ms: u64, soc: u16| {
        let mut m = with_current(t(ms), DeciAmps(-200));
        m.soc = Some(Reading::new(BasisPoints(soc), t(ms)));
        s.update(t(ms), &m, Some(t(ms)));
    };
    for ms in (0..180_000).step_by(100) {
        step(&mut s, ms, 5000);
    }
    step(&mut s, 180_000, 5100);
    assert!(s.events().is_active(EventKind::CurrentSignImplausible));
    // Consistent the next time: cleared.
    for ms in (180_100..360_000).step_by(100) {
        step(&mut s, ms, 5100);
    }
    step(&mut s, 360_000, 5000);
    assert!(!s.events().is_active(EventKind::CurrentSignImplausible));
}

#[test]
fn latches_survive_a_new_supervisor_and_only_start_clears_them_once_the_condition_is_gone() {
    let (mut s, mut m) = running(cfg());
    let mut cells = [MilliVolts(3900); 96];
    cells[3] = MilliVolts(4260);
    m.cells.set_voltages(t(1), &cells);
    s.update(t(1), &m, Some(t(1)));
    s.handle_command(t(2), Command::Stop).unwrap();
    let latches = s.latches();
    assert!(latches.critical_cell_over_voltage && latches.stopped);

    // A restart (or a reboot reading the state file) carries them over.
    let mut s = Supervisor::with_latches(cfg(), t(3), latches);
    let o = *s.update(t(3), &healthy(t(3)), Some(t(3)));
    assert_eq!(o.contactors, Some(ContactorRequest::Open));
    assert_eq!(o.charge_limited_by, LimitReason::Stopped);
    assert!(s.events().is_active(EventKind::CellCriticalOverVoltage), "shown again after the restart");

    // Start before the cells are known to be fine again is refused and changes nothing.
    let mut unknown = healthy(t(4));
    unknown.cells = Default::default();
    s.update(t(4), &unknown, Some(t(4)));
    assert!(matches!(s.handle_command(t(4), Command::Start), Err(CommandError::ConditionPresent { .. })));
    assert_eq!(s.latches(), latches);
    // With the cells back in range it works.
    s.update(t(5), &healthy(t(5)), Some(t(5)));
    s.handle_command(t(5), Command::Start).unwrap();
    assert_eq!(s.latches(), Latches::default());
    assert_eq!(s.update(t(6), &healthy(t(6)), Some(t(6))).contactors, Some(ContactorRequest::Closed));
}

#[test]
fn the_rule_table_is_in_its_documented_order_with_unique_names() {
    let names: Vec<&str> = rules::RULES.iter().map(|r| r.name).collect();
    assert_eq!(&names[..5], ["stopped", "critical", "unknown", "stale", "design_pending"]);
    for (i, a) in names.iter().enumerate() {
        assert!(!names[i + 1..].contains(a), "{a} twice");
    }
}
