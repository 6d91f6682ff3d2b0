//! Lifetime charged and discharged energy, counted by the bridge from the pack's own voltage and current.
//!
//! Why DBE counts: BYD Modbus registers 316/317 and 320/321 carry the battery's total charged and discharged Wh
//! (Battery-Emulator `Software/src/inverter/BYD-MODBUS.cpp`, `handle_update_data_modbusp301_byd`). Battery-Emulator
//! fills them from `datalayer.battery.status.total_{charged,discharged}_battery_Wh`, which only the packs that report
//! such counters themselves set (`supports_charged_energy()`: Tesla, MEB, BYD Atto 3, CMP); a LEAF reports none, so
//! Battery-Emulator sends 0 there. DBE keeps one count for every pack, the same way whatever the driver.
//!
//! How: each time the bridge updates, [`EnergyCounters::update`] takes the model's pack voltage and current as one
//! sample, timed by the *older* of the two readings (a sample is only as new as its staler half), and adds the
//! trapezoid between it and the previous sample: half the interval at each end's power, each half to the direction
//! of its own sign, so an interval across a change of direction is split between the two counters. Updates without a
//! newer reading add nothing, so the caller may update as often as it likes. An interval longer than [`MAX_GAP`]
//! (a stale or missing reading, a pause in the traffic) is not integrated: what happened in it is unknown, and a
//! lifetime counter that under-counts a gap is better than one that invents energy. Everything is integer:
//! 0.1 V × 0.1 A = 0.01 W, times milliseconds.
//!
//! The totals are what the lead's state file persists ([`EnergyCounters::restored`] brings them back); the part
//! below 1 Wh is not kept across a restart.

use crate::model::BatteryModel;
use crate::time::{Duration, Instant};
use crate::units::WattHours;

/// The longest interval between two samples that is integrated. The LEAF sends voltage and current every 10 ms;
/// the supervisor's stale timeout is a few seconds, so a longer gap means the data was not trustworthy anyway.
pub const MAX_GAP: Duration = Duration::from_secs(5);

/// One half-trapezoid unit: 0.01 W × 1 ms / 2. Each end of an interval adds `power × dt` in these units.
const UNITS_PER_WH: u64 = 2 * 100 * 3_600_000;

/// One voltage × current sample.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Sample {
    at: Instant,
    /// Power in 0.01 W, positive = charging.
    centiwatts: i64,
}

/// Charged and discharged energy since the counters started (or were restored). See the module doc.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EnergyCounters {
    /// In [`UNITS_PER_WH`] per Wh.
    charged: u64,
    discharged: u64,
    last: Option<Sample>,
}

impl EnergyCounters {
    /// Counters at zero.
    pub const fn new() -> Self {
        EnergyCounters { charged: 0, discharged: 0, last: None }
    }

    /// Counters continuing from persisted totals; the next interval starts at the next sample.
    pub fn restored(charged: WattHours, discharged: WattHours) -> Self {
        EnergyCounters {
            charged: charged.0 as u64 * UNITS_PER_WH,
            discharged: discharged.0 as u64 * UNITS_PER_WH,
            last: None,
        }
    }

    /// Energy put into the pack (whole Wh, rounded down; saturates at `u32::MAX`).
    pub fn charged(&self) -> WattHours {
        whole_wh(self.charged)
    }

    /// Energy taken out of the pack (whole Wh, rounded down; saturates at `u32::MAX`).
    pub fn discharged(&self) -> WattHours {
        whole_wh(self.discharged)
    }

    /// Integrates up to the model's newest voltage × current sample (see the module doc).
    pub fn update(&mut self, now: Instant, model: &BatteryModel) {
        let (Some(v), Some(i)) = (model.pack_voltage, model.current) else {
            self.last = None;
            return;
        };
        let at = v.at.min(i.at);
        if now.saturating_since(at) > MAX_GAP {
            // Stale: whatever comes next starts a new interval.
            self.last = None;
            return;
        }
        let sample = Sample { at, centiwatts: v.value.0 as i64 * i.value.0 as i64 };
        if let Some(prev) = self.last {
            if at < prev.at {
                // Older than what was already counted: nothing to add, and never count that span twice.
                return;
            }
            let dt = at - prev.at;
            if dt > Duration::ZERO && dt <= MAX_GAP {
                self.add(prev.centiwatts, dt);
                self.add(sample.centiwatts, dt);
            }
        }
        // A reading decoded twice within one millisecond replaces the sample: the newer value counts.
        self.last = Some(sample);
    }

    fn add(&mut self, centiwatts: i64, dt: Duration) {
        let amount = centiwatts.unsigned_abs().saturating_mul(dt.as_millis());
        let counter = if centiwatts >= 0 { &mut self.charged } else { &mut self.discharged };
        *counter = counter.saturating_add(amount);
    }
}

fn whole_wh(units: u64) -> WattHours {
    WattHours((units / UNITS_PER_WH).min(u32::MAX as u64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Chemistry, PackDesign, Reading};
    use crate::units::{DeciAmps, DeciVolts, MilliVolts};

    fn model() -> BatteryModel {
        BatteryModel::new(PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96,
            max_pack_voltage: DeciVolts(4032),
            min_pack_voltage: DeciVolts(2600),
            max_cell_voltage: MilliVolts(4200),
            min_cell_voltage: MilliVolts(2700),
            max_cell_deviation: MilliVolts(500),
        })
    }

    fn set(m: &mut BatteryModel, at: Instant, dv: u16, da: i32) {
        m.pack_voltage = Some(Reading::new(DeciVolts(dv), at));
        m.current = Some(Reading::new(DeciAmps(da), at));
    }

    /// Samples every `step_ms` from `from_ms` to `to_ms` inclusive, updating once per sample.
    fn run(e: &mut EnergyCounters, m: &mut BatteryModel, from_ms: u64, to_ms: u64, step_ms: u64, dv: u16, da: i32) {
        let mut t = from_ms;
        while t <= to_ms {
            set(m, Instant::from_millis(t), dv, da);
            e.update(Instant::from_millis(t), m);
            t += step_ms;
        }
    }

    #[test]
    fn one_hour_at_4_kw_is_4_kwh_each_way() {
        let (mut e, mut m) = (EnergyCounters::new(), model());
        // 400.0 V × 10.0 A = 4000 W for one hour, sampled every 10 ms as a LEAF sends it.
        run(&mut e, &mut m, 0, 3_600_000, 10, 4000, 100);
        assert_eq!((e.charged(), e.discharged()), (WattHours(4000), WattHours(0)));
        // Then 400.0 V × -5.0 A for half an hour: 1000 Wh out.
        run(&mut e, &mut m, 3_600_010, 5_400_010, 10, 4000, -50);
        assert_eq!(e.charged(), WattHours(4000));
        // The step from +10 A to -5 A is split: 10 ms at half each way (0.0056 Wh in, 0.0028 Wh out).
        assert_eq!(e.discharged(), WattHours(1000));
    }

    #[test]
    fn small_currents_are_not_lost_to_rounding() {
        let (mut e, mut m) = (EnergyCounters::new(), model());
        // 0.3 A at 360.0 V = 108 W (0.3 Wh per 10 s): each 10 ms step is 0.0003 Wh, far below 1 Wh.
        run(&mut e, &mut m, 0, 3_600_000, 10, 3600, 3);
        assert_eq!(e.charged(), WattHours(108));
    }

    #[test]
    fn updating_without_a_new_reading_adds_nothing() {
        let (mut e, mut m) = (EnergyCounters::new(), model());
        run(&mut e, &mut m, 0, 1_000_000, 1000, 4000, 100);
        let before = e;
        for ms in 1_000_001..1_000_999 {
            e.update(Instant::from_millis(ms), &m);
        }
        assert_eq!(e.charged(), before.charged());
        assert_eq!(e, before);
    }

    #[test]
    fn a_gap_longer_than_max_gap_is_not_integrated() {
        let (mut e, mut m) = (EnergyCounters::new(), model());
        // 10 kW: 1 s is 2.78 Wh, so a 6 s gap would add 16 Wh.
        set(&mut m, Instant::ZERO, 4000, 250);
        e.update(Instant::ZERO, &m);
        // Nothing for 6 s (the bridge still updates, with the old reading).
        for s in 1..=6 {
            e.update(Instant::from_millis(s * 1000), &m);
        }
        set(&mut m, Instant::from_millis(6000), 4000, 250);
        e.update(Instant::from_millis(6000), &m);
        assert_eq!(e.charged(), WattHours(0));
        // From the new sample on, counting resumes.
        set(&mut m, Instant::from_millis(6000 + 3600), 4000, 250);
        e.update(Instant::from_millis(6000 + 3600), &m);
        assert_eq!(e.charged(), WattHours(10));
    }

    #[test]
    fn a_stale_voltage_stops_the_count() {
        let (mut e, mut m) = (EnergyCounters::new(), model());
        set(&mut m, Instant::ZERO, 4000, 250);
        e.update(Instant::ZERO, &m);
        // The current keeps coming for 10 s, the voltage does not: the sample is as old as the voltage.
        for ms in (10..=10_000).step_by(10) {
            m.current = Some(Reading::new(DeciAmps(250), Instant::from_millis(ms)));
            e.update(Instant::from_millis(ms), &m);
        }
        assert_eq!(e.charged(), WattHours(0));
        // A missing reading forgets the previous sample too.
        m.pack_voltage = None;
        e.update(Instant::from_millis(10_000), &m);
        set(&mut m, Instant::from_millis(10_010), 4000, 250);
        e.update(Instant::from_millis(10_010), &m);
        assert_eq!(e, EnergyCounters { last: e.last, ..EnergyCounters::new() });
    }

    #[test]
    fn restored_totals_continue() {
        let mut e = EnergyCounters::restored(WattHours(123_456), WattHours(7));
        assert_eq!((e.charged(), e.discharged()), (WattHours(123_456), WattHours(7)));
        let mut m = model();
        run(&mut e, &mut m, 0, 3_600_000, 100, 4000, -100);
        assert_eq!((e.charged(), e.discharged()), (WattHours(123_456), WattHours(4007)));
    }

    #[test]
    fn extreme_values_saturate_instead_of_wrapping() {
        let mut e = EnergyCounters::restored(WattHours(u32::MAX), WattHours(0));
        let mut m = model();
        run(&mut e, &mut m, 0, 5000, 5000, u16::MAX, i32::MAX);
        assert_eq!(e.charged(), WattHours(u32::MAX));
        run(&mut e, &mut m, 10_000, 15_000, 5000, u16::MAX, i32::MIN);
        assert!(e.discharged().0 > 0);
    }
}
