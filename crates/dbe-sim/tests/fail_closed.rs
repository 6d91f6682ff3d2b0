//! Fail-closed in simulated time: the sessions of the fail-closed issue, each altered the way a real pack or wire
//! can alter it (a frame type gone, a poll answer gone, a BMS request raised), against the LEAF simulator and the
//! real bridge. Each ends at 0 A in the forbidden direction within the bound the driver declares for the missing
//! reading, plus one inverter poll; the unaltered session still bridges.
//!
//! The bounds come from the LEAF driver's required readings: 0x1DB/0x1DC (10 ms) 1 s, 0x55B (100 ms) 3 s, the
//! cell and (ZE1) temperature polls 24 s.

use dbe_core::battery::ContactorRequest;
use dbe_core::events::EventKind;
use dbe_core::model::{BmsRequests, Quantity};
use dbe_core::supervisor::LimitReason;
use dbe_core::units::{DeciAmps, DeciVolts};
use dbe_core::{Duration, Instant};
use dbe_sim::leaf::{LbcRequests, LeafPackParams};
use dbe_sim::pylon_inverter::PylonInverterParams;
use dbe_sim::sim_inverter::SimState;
use dbe_sim::world::World;
use proptest::prelude::*;

mod common;
use common::{config, secs};

fn poll() -> Duration {
    PylonInverterParams::default().poll_interval
}

const FRAME_AGE: Duration = Duration::from_secs(1);
const SOC_AGE: Duration = Duration::from_secs(3);
const POLL_AGE: Duration = Duration::from_secs(24);

fn told(w: &World) -> (DeciAmps, DeciAmps) {
    w.inverter.summary().map_or((DeciAmps(0), DeciAmps(0)), |t| (t.charge_limit, t.discharge_limit))
}

fn started() -> World {
    let mut w = World::leaf(config());
    assert!(
        w.run_until_cond(secs(30), |w| w.pack.contactors_closed() && w.inverter.state() == SimState::Running),
        "cold start"
    );
    w.run_for(secs(10));
    assert!(told(&w).0 > DeciAmps(0) && told(&w).1 > DeciAmps(0), "bridging before the fault: {:?}", told(&w));
    w
}

/// Runs until the inverter has been told 0 A in the directions asked, and checks the bound.
fn zero_within(w: &mut World, charge: bool, discharge: bool, bound: Duration, what: &str) {
    let at = w.now();
    let zero = |w: &World| (!charge || told(w).0 == DeciAmps(0)) && (!discharge || told(w).1 == DeciAmps(0));
    assert!(w.run_until_cond(bound + secs(5), zero), "{what}: never 0 A, told {:?}", told(w));
    let took = w.now() - at;
    assert!(took <= bound, "{what}: 0 A after {took}, bound {bound}");
}

#[test]
fn nothing_is_offered_before_every_reading_is_known() {
    let mut w = World::leaf(config());
    let mut offered = None;
    let mut first_closed = None;
    // Until every required reading is in (the cells come with the second poll, 2.5 s in), nothing may flow.
    w.run_until_cond(secs(30), |w| {
        let o = w.bridge.output();
        let any = o.charge_current_limit > DeciAmps(0) || o.discharge_current_limit > DeciAmps(0);
        if any && o.unknown.is_some() {
            offered.get_or_insert((w.now(), o.unknown));
        }
        if w.bridge.contactor_request() == Some(ContactorRequest::Closed) {
            first_closed.get_or_insert((w.now(), o.unknown, w.bridge.model().cells.count()));
        }
        false
    });
    assert_eq!(offered, None, "current offered while a reading was unknown");
    let (at, unknown, cells) = first_closed.expect("it bridges in the end");
    assert_eq!((unknown, cells), (None, 96), "closed at {at:?} with a reading unknown");
    assert!(at >= Instant::from_millis(2500), "closed at {at:?}, before the cells were polled");
    assert!(told(&w).0 > DeciAmps(0) && w.pack.contactors_closed());
}

#[test]
fn a_ze1_takes_its_temperatures_from_the_poll_only() {
    // Before the ZE1's markers, byte 3 of 0x5BC is a dash segment, not a temperature (issue: wire truth): the first
    // current may flow only after the group-4 poll (the third poll, 4.5 s in) has been answered.
    let mut w = World::leaf(config());
    let mut first = None;
    w.run_until_cond(secs(30), |w| {
        if w.bridge.output().charge_current_limit > DeciAmps(0) {
            first.get_or_insert(w.now());
        }
        first.is_some()
    });
    let first = first.expect("it bridges");
    assert!(first >= Instant::from_millis(4500), "current offered at {first:?}, before the temperature poll");
}

#[test]
fn soc_frames_removed_stop_both_directions() {
    let mut w = started();
    w.pack.set_dropped(0x55B, true);
    zero_within(&mut w, true, true, SOC_AGE + poll() + secs(1), "no 0x55B");
    assert_eq!(w.bridge.output().charge_limited_by, LimitReason::Unknown(Quantity::Soc));
    assert!(w.bridge.events().is_active(EventKind::StaleValue));
    assert!(w.run_until_cond(secs(2), |w| w.bridge.contactor_request() == Some(ContactorRequest::Open)));
    w.pack.set_dropped(0x55B, false);
    assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0)), "recovers when 0x55B returns");
}

#[test]
fn poll_answers_removed_stop_both_directions() {
    let mut w = started();
    w.pack.set_dropped(0x7BB, true);
    zero_within(&mut w, true, true, POLL_AGE + poll() + secs(1), "no 0x7BB answers");
    let unknown = w.bridge.output().unknown;
    assert!(
        matches!(unknown, Some(Quantity::Cells | Quantity::TemperatureMin | Quantity::TemperatureMax)),
        "{unknown:?}"
    );
    w.pack.set_dropped(0x7BB, false);
    assert!(w.run_until_cond(secs(40), |w| told(w).0 > DeciAmps(0)), "recovers");
}

#[test]
fn a_ze1_without_its_temperature_poll_cannot_charge_below_zero() {
    // The ZE1 reports temperatures only in the group-4 poll: without it nothing says the pack is not frozen.
    let mut w = World::new(config(), LeafPackParams { ambient_dc: -100, ..Default::default() }, Instant::ZERO);
    w.pack.set_group_dropped(0x04, true);
    let mut offered = false;
    w.run_until_cond(secs(120), |w| {
        offered |= told(w).0 > DeciAmps(0);
        false
    });
    assert!(!offered, "charging offered to a ZE1 whose temperature is unknown");
    assert_eq!(w.bridge.output().unknown, Some(Quantity::TemperatureMin));
    w.pack.set_group_dropped(0x04, false);
    assert!(w.run_until_cond(secs(30), |w| w.bridge.output().unknown.is_none()));
    assert_eq!(told(&w).0, DeciAmps(0), "now known: -10 °C, still no charging");
    assert!(w.bridge.events().is_active(EventKind::BatteryFrozen));
}

#[test]
fn unchecksummed_frames_alone_never_make_the_data_valid() {
    let mut w = World::leaf(config());
    for id in [0x1DB, 0x1DC, 0x55B, 0x7BB] {
        w.pack.set_dropped(id, true);
    }
    let mut closed = false;
    w.run_until_cond(secs(60), |w| {
        closed |= w.bridge.contactor_request() == Some(ContactorRequest::Closed);
        false
    });
    assert!(!closed, "contactors requested closed on 0x5BC alone");
    assert!(!w.bridge.output().data_valid);
    assert_eq!(told(&w), (DeciAmps(0), DeciAmps(0)));
}

#[test]
fn power_limits_stopping_while_the_state_frame_goes_on_stop_both_directions() {
    let mut w = started();
    w.pack.set_dropped(0x1DC, true);
    zero_within(&mut w, true, true, FRAME_AGE + poll() + secs(1), "no 0x1DC");
    let o = w.bridge.output();
    assert!(matches!(
        o.charge_limited_by,
        LimitReason::Unknown(Quantity::BmsChargePower) | LimitReason::Unknown(Quantity::BmsDischargePower)
    ));
}

#[test]
fn a_relay_cut_request_stops_both_and_opens() {
    for cut in [1, 2, 3] {
        let mut w = started();
        w.pack.set_requests(LbcRequests { relay_cut: cut, ..Default::default() });
        zero_within(&mut w, true, true, poll() + secs(1), "relay cut");
        assert_eq!(w.bridge.output().charge_limited_by, LimitReason::BmsRequest(BmsRequests::OPEN_RELAYS));
        assert!(w.bridge.events().is_active(EventKind::BatteryRelayCutRequest));
        assert!(w.run_until_cond(secs(8), |w| w.bridge.contactor_request() == Some(ContactorRequest::Open)));
        w.pack.set_requests(LbcRequests::default());
        assert!(w.run_until_cond(secs(30), |w| told(w).0 > DeciAmps(0)), "recovers when withdrawn");
    }
}

#[test]
fn failsafe_stop_requests_stop_their_direction() {
    // 2/3/6/7: charging-mode stop; 1/3/5/7: normal stop ("fully discharged"); 4 alone: the caution lamp.
    for failsafe in 1..=7u8 {
        let mut w = started();
        w.pack.set_requests(LbcRequests { failsafe, ..Default::default() });
        let charge = failsafe & 2 != 0;
        let discharge = failsafe & 1 != 0;
        if charge || discharge {
            zero_within(&mut w, charge, discharge, poll() + secs(1), &format!("failsafe {failsafe}"));
        } else {
            w.run_for(secs(3));
        }
        let (c, d) = told(&w);
        assert_eq!(c == DeciAmps(0), charge, "failsafe {failsafe}: charge {c:?}");
        assert_eq!(d == DeciAmps(0), discharge, "failsafe {failsafe}: discharge {d:?}");
        assert_eq!(w.bridge.events().is_active(EventKind::BatteryCaution), failsafe & 4 != 0, "failsafe {failsafe}");
        // It holds over many 0x1DC periods, not one.
        w.run_for(secs(20));
        assert_eq!(told(&w).0 == DeciAmps(0), charge, "failsafe {failsafe} still enforced");
        assert_eq!(told(&w).1 == DeciAmps(0), discharge, "failsafe {failsafe} still enforced");
    }
}

#[test]
fn capacity_empty_stays_enforced_until_the_pack_says_otherwise() {
    let mut w = started();
    w.pack.set_requests(LbcRequests { empty: true, ..Default::default() });
    zero_within(&mut w, false, true, poll() + secs(1), "capacity empty");
    w.run_for(secs(60));
    assert_eq!(told(&w).1, DeciAmps(0), "still empty after 6000 0x1DC frames");
    assert!(told(&w).0 > DeciAmps(0), "charging is what empties need");
    w.pack.set_requests(LbcRequests::default());
    assert!(w.run_until_cond(secs(10), |w| told(w).1 > DeciAmps(0)));
}

#[test]
fn a_full_flag_stops_charging() {
    let mut w = started();
    w.pack.set_requests(LbcRequests { full: true, ..Default::default() });
    zero_within(&mut w, true, false, poll() + secs(1), "full");
    assert!(told(&w).1 > DeciAmps(0));
    assert!(w.bridge.events().is_active(EventKind::BatteryFull));
}

#[test]
fn the_inverter_is_told_the_cells_voltage_targets() {
    let w = started();
    let dbe_sim::sim_inverter::SimInverter::PylonCan(inv) = &w.inverter else { unreachable!("Pylon CAN world") };
    let t = inv.told().expect("told");
    // 96 × 4.10 V CV target and 96 × 3.00 V floor, not the LEAF's 405.5 / 240.0 V emergency bounds.
    assert_eq!(t.max_charge_voltage, DeciVolts(3936));
    assert_eq!(t.min_discharge_voltage, DeciVolts(2880));
}

#[test]
fn a_lost_inverter_has_the_contactors_opened_once_its_current_stops() {
    let mut w = started();
    w.inverter.set_silent(true);
    let at = w.now();
    assert!(w.run_until_cond(secs(120), |w| !w.pack.contactors_closed()), "contactors never opened");
    // The inverter's own timeout (Pylon: its link timeout), then the current is 0 (a silent inverter draws nothing).
    let timeout = dbe_core::inverter::InverterKind::PylonCan.info().link_timeout.unwrap();
    assert!(w.now() - at <= timeout + secs(2), "opened after {}", w.now() - at);
    w.inverter.set_silent(false);
    assert!(w.run_until_cond(secs(30), |w| w.pack.contactors_closed() && told(w).0 > DeciAmps(0)), "recovers");
}

/// What a dropped frame type or poll group takes away, from the driver's sources (not from its code): the
/// directions it guards and the age after which it must have been noticed.
fn guarded(item: Item) -> Option<Duration> {
    match item {
        Item::Frame(0x1DB) | Item::Frame(0x1DC) => Some(FRAME_AGE),
        Item::Frame(0x55B) => Some(SOC_AGE),
        Item::Frame(0x7BB) | Item::Group(0x02) | Item::Group(0x04) => Some(POLL_AGE),
        _ => None,
    }
}

#[derive(Copy, Clone, Debug)]
enum Item {
    Frame(u16),
    Group(u8),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        prop::sample::select(vec![0x1DB_u16, 0x1DC, 0x55B, 0x5BC, 0x5C0, 0x59E, 0x7BB]).prop_map(Item::Frame),
        prop::sample::select(vec![0x01_u8, 0x02, 0x04, 0x06]).prop_map(Item::Group),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// For random sessions with random frame types dropped from random times, the inverter is never offered
    /// current once a reading it depends on is past its age, and the contactors are never requested closed from
    /// open while one is.
    #[test]
    fn dropped_readings_never_leave_current_offered(
        drops in prop::collection::vec((item(), 0u64..90_000), 1..4),
        seed in 1u64..1000,
    ) {
        let mut w = World::new(config(), LeafPackParams { seed, ..Default::default() }, Instant::ZERO);
        let mut drops = drops;
        drops.sort_by_key(|d| d.1);
        let end = Instant::from_millis(drops.last().unwrap().1 + 40_000);
        let mut pending = drops.clone();
        let mut deadline: Option<Instant> = None;
        let mut last_request = w.bridge.contactor_request();
        while w.now() < end {
            let next = pending.first().map_or(end, |d| Instant::from_millis(d.1).min(end));
            let mut violation = None;
            w.run_until_cond(next.saturating_since(w.now()), |w| {
                if let Some(dl) = deadline {
                    if w.now() > dl {
                        let o = w.bridge.output();
                        if o.charge_current_limit > DeciAmps(0) || o.discharge_current_limit > DeciAmps(0) {
                            violation.get_or_insert(format!("{:?} offered {:?}/{:?} at {:?}", o.charge_limited_by,
                                o.charge_current_limit, o.discharge_current_limit, w.now()));
                        }
                        let req = w.bridge.contactor_request();
                        if req == Some(ContactorRequest::Closed) && last_request != req {
                            violation.get_or_insert(format!("contactors closed at {:?}", w.now()));
                        }
                    }
                }
                last_request = w.bridge.contactor_request();
                false
            });
            prop_assert!(violation.is_none(), "{}", violation.unwrap_or_default());
            if let Some(&(it, at)) = pending.first() {
                if w.now() >= Instant::from_millis(at) {
                    pending.remove(0);
                    match it {
                        Item::Frame(id) => w.pack.set_dropped(id, true),
                        Item::Group(g) => w.pack.set_group_dropped(g, true),
                    }
                    if let Some(age) = guarded(it) {
                        // The inverter poll and the bridge's own step are on top of the reading's age.
                        let dl = w.now() + age + Duration::from_millis(2);
                        deadline = Some(deadline.map_or(dl, |d| d.min(dl)));
                    }
                }
            }
        }
    }
}
