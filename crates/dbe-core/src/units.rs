//! Physical quantities as fixed-point integer newtypes: the unit is in the type, so a cell voltage in millivolts
//! can never be passed where a pack voltage in decivolts is expected.
//!
//! The scales follow what the wire protocols carry (and what Battery-Emulator's datalayer keeps), so most
//! conversions in drivers are a plain copy:
//! - pack voltage: [`DeciVolts`] (0.1 V); cell voltage: [`MilliVolts`];
//! - current: [`DeciAmps`] (0.1 A), **positive = charging** (current into the pack), negative = discharging;
//! - power: [`Watts`], same sign convention as current;
//! - temperature: [`DeciCelsius`] (0.1 °C);
//! - state of charge and health: [`BasisPoints`] (0.01 %, 10 000 = 100.00 %);
//! - energy: [`WattHours`].
//!
//! Scaling to and from wire units happens only in drivers' `parse`/`emit`; everything between works on these.

use core::fmt;

macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident($inner:ty), $unit:literal, $decimals:literal) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl $name {
            pub const ZERO: $name = $name(0);
            /// How many decimal places one unit of the raw value stands for (e.g. 1 for deci-).
            pub const DECIMALS: u32 = $decimals;
            pub const UNIT: &'static str = $unit;

            /// The value as a float in the base unit (V, A, °C, %, Wh), for display and telemetry only.
            pub fn as_f32(self) -> f32 {
                self.0 as f32 / 10u32.pow(Self::DECIMALS) as f32
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_fixed(f, self.0 as i64, Self::DECIMALS)?;
                f.write_str(" ")?;
                f.write_str(Self::UNIT)
            }
        }
    };
}

quantity!(
    /// Pack (high-voltage) voltage in 0.1 V.
    DeciVolts(u16), "V", 1
);
quantity!(
    /// Cell voltage in 1 mV.
    MilliVolts(u16), "V", 3
);
quantity!(
    /// Current in 0.1 A; positive charges the pack, negative discharges it.
    DeciAmps(i32), "A", 1
);
quantity!(
    /// Power in W; positive charges the pack, negative discharges it. Limits are never negative.
    Watts(i32), "W", 0
);
quantity!(
    /// Temperature in 0.1 °C.
    DeciCelsius(i16), "°C", 1
);
quantity!(
    /// A fraction in 0.01 % (10 000 = 100.00 %): state of charge and state of health.
    BasisPoints(u16), "%", 2
);
quantity!(
    /// Energy in Wh.
    WattHours(u32), "Wh", 0
);

impl BasisPoints {
    pub const FULL: BasisPoints = BasisPoints(10_000);

    /// Clamps to 0..=100 %, so a BMS that reports 101 % cannot push a scaled value out of range.
    pub fn clamped(self) -> Self {
        BasisPoints(self.0.min(10_000))
    }

    /// `value × self`, rounding down; used to scale energies by SOC or SOH.
    pub fn of(self, value: u32) -> u32 {
        (value as u64 * self.clamped().0 as u64 / 10_000) as u32
    }
}

impl DeciAmps {
    /// Magnitude, saturating (limits are carried as non-negative values).
    pub fn abs(self) -> DeciAmps {
        DeciAmps(self.0.saturating_abs())
    }
}

/// Power from voltage and current, in W, with the current's sign.
pub fn power(voltage: DeciVolts, current: DeciAmps) -> Watts {
    let w = voltage.0 as i64 * current.0 as i64 / 100;
    Watts(w.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
}

/// The current that `power` draws at `voltage`, rounding toward zero; 0 A when the voltage is unknown or zero
/// (a limit we cannot convert must not become an unlimited one).
pub fn current_for_power(power: Watts, voltage: DeciVolts) -> DeciAmps {
    if voltage.0 == 0 {
        return DeciAmps(0);
    }
    let da = power.0 as i64 * 100 / voltage.0 as i64;
    DeciAmps(da.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
}

fn write_fixed(f: &mut fmt::Formatter<'_>, raw: i64, decimals: u32) -> fmt::Result {
    if decimals == 0 {
        return write!(f, "{raw}");
    }
    let div = 10i64.pow(decimals);
    let sign = if raw < 0 { "-" } else { "" };
    let abs = raw.unsigned_abs();
    write!(f, "{sign}{}.{:0width$}", abs / div as u64, abs % div as u64, width = decimals as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_scale_and_sign() {
        assert_eq!(DeciVolts(3984).to_string(), "398.4 V");
        assert_eq!(MilliVolts(4105).to_string(), "4.105 V");
        assert_eq!(DeciAmps(-5).to_string(), "-0.5 A");
        assert_eq!(BasisPoints(5012).to_string(), "50.12 %");
        assert_eq!(DeciCelsius(-123).to_string(), "-12.3 °C");
    }

    #[test]
    fn power_and_current_convert_both_ways() {
        // 400.0 V × -12.5 A = -5000 W
        assert_eq!(power(DeciVolts(4000), DeciAmps(-125)), Watts(-5000));
        assert_eq!(current_for_power(Watts(5000), DeciVolts(4000)), DeciAmps(125));
        assert_eq!(current_for_power(Watts(5000), DeciVolts(0)), DeciAmps(0));
    }

    #[test]
    fn basis_points_scale_energy() {
        assert_eq!(BasisPoints(5000).of(40_000), 20_000);
        assert_eq!(BasisPoints(12_000).of(40_000), 40_000);
    }
}
