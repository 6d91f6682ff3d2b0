//! Cell voltages for inverters that accept only LFP batteries (FoxESS, Ferroamp): a non-LFP pack's cells are shown
//! inside the LFP window so the inverter's own LFP plausibility checks pass.
//!
//! Battery-Emulator maps the fixed range 2.5..4.2 V onto 2.5..3.4 V without clamping (`FOXESS-CAN.cpp`,
//! `FERROAMP-CAN.cpp`, "Rescale cellvoltages that aren't LFP"). DBE maps the pack's own design cell window instead,
//! so an empty NMC cell reads as an empty LFP cell and a full one as a full LFP cell, and clamps, so a cell outside
//! its window reads 2.5 / 3.4 V rather than a value the inverter refuses. This is presentation only: the
//! supervisor's cell rules act on the real voltages.

use crate::model::Chemistry;
use crate::units::MilliVolts;

/// The LFP window (mV) non-LFP cells are mapped into: Battery-Emulator's target range.
pub const LFP_WINDOW_MV: (i32, i32) = (2500, 3400);

/// A cell voltage as an LFP-only inverter expects it: real for LFP, else mapped from the design window `lo..=hi`
/// onto [`LFP_WINDOW_MV`] (clamped).
pub(crate) fn presented_mv(v: MilliVolts, chemistry: Chemistry, (lo, hi): (MilliVolts, MilliVolts)) -> u16 {
    if chemistry == Chemistry::Lfp {
        return v.0;
    }
    let (w_lo, w_hi) = LFP_WINDOW_MV;
    let (lo, hi) = (lo.0 as i32, hi.0 as i32);
    if hi <= lo {
        return w_lo as u16;
    }
    let v = (v.0 as i32).clamp(lo, hi);
    (w_lo + (v - lo) * (w_hi - w_lo) / (hi - lo)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_lfp_cells_map_onto_the_lfp_window_and_lfp_passes_through() {
        let range = (MilliVolts(3000), MilliVolts(4200));
        assert_eq!(presented_mv(MilliVolts(3000), Chemistry::Nmc, range), 2500);
        assert_eq!(presented_mv(MilliVolts(3600), Chemistry::Nmc, range), 2950);
        assert_eq!(presented_mv(MilliVolts(4200), Chemistry::Nmc, range), 3400);
        assert_eq!(presented_mv(MilliVolts(4500), Chemistry::Nmc, range), 3400, "clamped");
        assert_eq!(presented_mv(MilliVolts(2000), Chemistry::Nmc, range), 2500, "clamped");
        assert_eq!(presented_mv(MilliVolts(3650), Chemistry::Lfp, range), 3650, "LFP is real");
        let broken = (MilliVolts(4200), MilliVolts(3000));
        assert_eq!(presented_mv(MilliVolts(3700), Chemistry::Nmc, broken), 2500, "no division by 0");
    }
}
