//! Faults put on a running `dbe simulate`, one command per line on its standard input, so an end-to-end test or
//! the bench can make the pack or the adapter misbehave at a moment of its choosing and time the reaction at the
//! other end of the wire. The simulated-time tests (`dbe-sim/tests/faults.rs`) reach the same switches directly.
//!
//! ```text
//! cell N MV        cell N (1 to the pack's cell count, 96 on a LEAF, as the events count) at about MV millivolts
//!                  (it follows the pack from there)
//! cell N normal    cell N back to its own voltage
//! silent on|off    the pack sends nothing and hears nothing (a cut wire, a dead BMS)
//! corrupt on|off   the pack's checksummed frames carry wrong checksums
//! frozen on|off    the pack repeats its last frames forever (a hung controller)
//! temperature C    every temperature sensor C °C off (C may be negative or fractional: +35, -2.5)
//! relay stuck-closed|stuck-open|normal
//!                  the contactors stay welded closed, fail to close, or follow what drives them again
//! bus-off on|off   the slcan adapter goes bus-off: BEL to every frame it is asked to send, nothing received,
//!                  error flags in its status; `off` is the controller's automatic recovery
//! ```
//!
//! The faults are the shared pack model's ([`dbe_sim::pack::Fault`]), so every simulated pack takes them.

use std::fmt;
use std::str::FromStr;

use dbe_sim::pack::{Fault, RelayFault};

/// A fault on the simulated pack: the shared model's, which every simulated pack takes.
pub use dbe_sim::pack::Fault as PackFault;

/// One line of input, parsed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Pack(PackFault),
    BusOff(bool),
}

/// Why a line was refused, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlError(String);

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ControlError> {
    Err(ControlError(msg.into()))
}

fn on_off(word: &str, what: &str) -> Result<bool, ControlError> {
    match word {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => err(format!("{what}: expected `on` or `off`, got `{word}`")),
    }
}

/// Lines for a LEAF-sized pack (96 cells in series; a Tesla Model 3's count too).
impl FromStr for Control {
    type Err = ControlError;

    fn from_str(line: &str) -> Result<Self, ControlError> {
        Control::parse_for(line, dbe_sim::leaf::CELLS)
    }
}

impl Control {
    /// One line for a pack of `cells` cells in series.
    pub fn parse_for(line: &str, cells: usize) -> Result<Self, ControlError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let pack = |f| Ok(Control::Pack(f));
        match words.as_slice() {
            ["cell", n, value] => {
                let index = match n.parse::<usize>() {
                    Ok(n) if (1..=cells).contains(&n) => n - 1,
                    _ => return err(format!("cell: expected a cell number 1-{cells}, got `{n}`")),
                };
                let millivolts = match *value {
                    "normal" => None,
                    v => match v.parse::<i32>() {
                        Ok(mv) if (0..=5000).contains(&mv) => Some(mv),
                        _ => return err(format!("cell {n}: expected millivolts 0-5000 or `normal`, got `{v}`")),
                    },
                };
                pack(PackFault::Cell { index, millivolts })
            }
            ["silent", w] => pack(PackFault::Silent(on_off(w, "silent")?)),
            ["corrupt", w] => pack(PackFault::CorruptChecksums(on_off(w, "corrupt")?)),
            ["frozen", w] => pack(PackFault::Frozen(on_off(w, "frozen")?)),
            ["temperature", c] => match c.parse::<f64>() {
                Ok(c) if c.is_finite() && c.abs() <= 100.0 => {
                    pack(PackFault::TemperatureOffset((c * 10.0).round() as i16))
                }
                _ => err(format!("temperature: expected an offset in °C within ±100, got `{c}`")),
            },
            ["relay", w] => pack(Fault::Relay(match *w {
                "stuck-closed" => RelayFault::Stuck(true),
                "stuck-open" => RelayFault::Stuck(false),
                "normal" => RelayFault::None,
                _ => return err(format!("relay: expected `stuck-closed`, `stuck-open` or `normal`, got `{w}`")),
            })),
            ["bus-off", w] => Ok(Control::BusOff(on_off(w, "bus-off")?)),
            [] => err("empty line: expected a command (cell, silent, corrupt, frozen, temperature, relay, bus-off)"),
            [word, ..] => err(format!(
                "`{word}` with {} argument(s): expected `cell N MV|normal`, `silent|corrupt|frozen|bus-off on|off`, \
                 `temperature C` or `relay stuck-closed|stuck-open|normal`",
                words.len() - 1
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses() {
        let cases = [
            ("cell 8 4240", Control::Pack(PackFault::Cell { index: 7, millivolts: Some(4240) })),
            ("  cell 96   normal ", Control::Pack(PackFault::Cell { index: 95, millivolts: None })),
            ("silent on", Control::Pack(PackFault::Silent(true))),
            ("corrupt off", Control::Pack(PackFault::CorruptChecksums(false))),
            ("frozen on", Control::Pack(PackFault::Frozen(true))),
            ("temperature +35", Control::Pack(PackFault::TemperatureOffset(350))),
            ("temperature -2.5", Control::Pack(PackFault::TemperatureOffset(-25))),
            ("bus-off on", Control::BusOff(true)),
            ("bus-off off", Control::BusOff(false)),
            ("relay stuck-closed", Control::Pack(PackFault::Relay(RelayFault::Stuck(true)))),
            ("relay normal", Control::Pack(PackFault::Relay(RelayFault::None))),
        ];
        for (line, want) in cases {
            assert_eq!(line.parse::<Control>(), Ok(want), "{line}");
        }
    }

    #[test]
    fn bad_lines_say_what_was_expected() {
        for (line, says) in [
            ("cell 0 4000", "1-96"),
            ("cell 97 4000", "1-96"),
            ("cell x 4000", "got `x`"),
            ("cell 8 5001", "0-5000"),
            ("cell 8 -1", "0-5000"),
            ("cell 8", "expected `cell N MV|normal`"),
            ("silent yes", "`on` or `off`"),
            ("temperature NaN", "±100"),
            ("temperature 1e9", "±100"),
            ("bus-off", "expected"),
            ("", "empty line"),
            ("reboot now", "`reboot`"),
            ("relay welded", "`stuck-closed`"),
        ] {
            let e = line.parse::<Control>().unwrap_err().to_string();
            assert!(e.contains(says), "{line:?}: {e}");
        }
    }

    #[test]
    fn the_cell_range_is_the_packs() {
        assert!(Control::parse_for("cell 108 4000", 108).is_ok());
        let e = Control::parse_for("cell 109 4000", 108).unwrap_err().to_string();
        assert!(e.contains("1-108"), "{e}");
    }

    #[test]
    fn a_cell_is_set_and_returned() {
        use dbe_sim::leaf::LeafPack;
        let mut pack = LeafPack::new(Default::default(), dbe_core::time::Instant::ZERO);
        let own = pack.cell_voltages()[7];
        PackFault::Cell { index: 7, millivolts: Some(4240) }.apply(&mut pack);
        assert_eq!(pack.cell_voltages()[7].0, 4240);
        PackFault::Cell { index: 7, millivolts: Some(4100) }.apply(&mut pack);
        assert_eq!(pack.cell_voltages()[7].0, 4100, "a second value replaces the first, not adds to it");
        PackFault::Cell { index: 7, millivolts: None }.apply(&mut pack);
        assert_eq!(pack.cell_voltages()[7], own);
    }
}
