//! Open-circuit voltage of one cell against state of charge, per chemistry.
//!
//! These curves are approximations for simulation, not measurements of any one cell. They are shaped like the
//! published curves of each chemistry (a steep knee near empty, a long plateau, a rise near full; LFP's plateau
//! nearly flat) and pinned at the ends to the cell windows the drivers' sources use:
//! - NMC / LMO-NMC blend (the LEAF curve): 3.00 V empty, 4.12 V full, inside the LEAF's 2.50-4.224 V design window
//!   (`dbe_core::battery::nissan_leaf::DESIGN`, from Battery-Emulator's NISSAN-LEAF-BATTERY). This is the table
//!   the LEAF simulator has always used: its frames, and the tests written against them, stay as they were.
//! - NCA (Tesla long-range packs): 3.00 V empty, 4.18 V full, inside Battery-Emulator's Tesla NCA/NCM window
//!   (`MAX_CELL_VOLTAGE_NCA_NCM` 4250 mV, `MIN_CELL_VOLTAGE_NCA_NCM` 2950 mV, TESLA-BATTERY.h).
//! - LFP: 2.85 V empty, 3.45 V full with a 3.26-3.34 V plateau from 20 % to 90 %, inside Battery-Emulator's Tesla
//!   LFP window (`MAX_CELL_VOLTAGE_LFP` 3650 mV, `MIN_CELL_VOLTAGE_LFP` 2800 mV).
//!
//! What a simulator needs from them is their shape (monotonic, inside the window, flat where the chemistry is
//! flat, so a driver or an SOC estimate that leans on voltage meets the same difficulty it meets on a real pack),
//! not their last millivolt.

use dbe_core::model::Chemistry;

/// A cell's open-circuit voltage as points `(SOC in 0.01 %, mV)`, strictly increasing in SOC from 0 to 10 000,
/// linear between points.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OcvCurve {
    pub points: &'static [(u16, u16)],
}

/// The LEAF's NMC/LMO curve (see the module doc).
pub const NMC: OcvCurve = OcvCurve {
    points: &[
        (0, 3000),
        (500, 3350),
        (1000, 3500),
        (2000, 3600),
        (3000, 3660),
        (4000, 3710),
        (5000, 3760),
        (6000, 3820),
        (7000, 3880),
        (8000, 3950),
        (9000, 4030),
        (10000, 4120),
    ],
};

/// An NCA curve (see the module doc).
pub const NCA: OcvCurve = OcvCurve {
    points: &[
        (0, 3000),
        (500, 3300),
        (1000, 3440),
        (2000, 3550),
        (3000, 3620),
        (4000, 3680),
        (5000, 3750),
        (6000, 3830),
        (7000, 3910),
        (8000, 3990),
        (9000, 4080),
        (10000, 4180),
    ],
};

/// An LFP curve (see the module doc): almost flat between 20 % and 90 %.
pub const LFP: OcvCurve = OcvCurve {
    points: &[
        (0, 2850),
        (500, 3100),
        (1000, 3200),
        (2000, 3260),
        (3000, 3280),
        (4000, 3290),
        (5000, 3295),
        (6000, 3300),
        (7000, 3310),
        (8000, 3320),
        (9000, 3340),
        (9500, 3380),
        (10000, 3450),
    ],
};

impl OcvCurve {
    pub const fn for_chemistry(chemistry: Chemistry) -> OcvCurve {
        match chemistry {
            Chemistry::Nmc => NMC,
            Chemistry::Nca => NCA,
            Chemistry::Lfp => LFP,
        }
    }

    /// The open-circuit voltage (mV) at `soc_bp` (0.01 %, clamped to 0..=10 000).
    pub fn mv(&self, soc_bp: f64) -> f64 {
        let s = soc_bp.clamp(0.0, 10_000.0);
        for w in self.points.windows(2) {
            let ((s0, v0), (s1, v1)) = (w[0], w[1]);
            if s <= s1 as f64 {
                return v0 as f64 + (v1 as f64 - v0 as f64) * (s - s0 as f64) / (s1 - s0) as f64;
            }
        }
        self.points.last().map_or(0.0, |p| p.1 as f64)
    }

    /// Empty and full.
    pub fn bounds_mv(&self) -> (u16, u16) {
        (self.points.first().map_or(0, |p| p.1), self.points.last().map_or(0, |p| p.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(Chemistry, (u16, u16)); 3] =
        [(Chemistry::Nmc, (2500, 4224)), (Chemistry::Nca, (2950, 4250)), (Chemistry::Lfp, (2800, 3650))];

    #[test]
    fn every_curve_is_monotonic_spans_the_soc_range_and_stays_inside_its_window() {
        for (chemistry, (min, max)) in ALL {
            let c = OcvCurve::for_chemistry(chemistry);
            assert_eq!(c.points.first().map(|p| p.0), Some(0), "{chemistry:?}");
            assert_eq!(c.points.last().map(|p| p.0), Some(10_000), "{chemistry:?}");
            assert!(c.points.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "{chemistry:?}");
            let mut last = 0.0;
            for s in (0..=10_000).step_by(25) {
                let v = c.mv(s as f64);
                assert!(v > last, "{chemistry:?} not rising at {s}");
                last = v;
            }
            let (empty, full) = c.bounds_mv();
            assert!(min < empty && full < max, "{chemistry:?}: {empty}-{full} outside {min}-{max}");
            assert_eq!(c.mv(-5.0), empty as f64);
            assert_eq!(c.mv(20_000.0), full as f64);
        }
    }

    #[test]
    fn lfp_is_flat_where_nmc_is_not() {
        let rise = |c: OcvCurve| c.mv(9000.0) - c.mv(2000.0);
        assert!(rise(LFP) < 100.0, "{}", rise(LFP));
        assert!(rise(NMC) > 300.0, "{}", rise(NMC));
        assert!(rise(NCA) > 300.0, "{}", rise(NCA));
    }

    #[test]
    fn the_leaf_curve_is_the_one_the_leaf_simulator_always_used() {
        // Points and one interpolation pinned: the LEAF's frames depend on them.
        assert_eq!(NMC.mv(5000.0), 3760.0);
        assert_eq!(NMC.mv(250.0), 3175.0);
        assert_eq!(NMC.mv(9500.0), 4075.0);
    }
}
