//! Faults every simulated pack takes, whatever its wire: one vocabulary for the simulated-time tests,
//! `dbe simulate`'s standard input and the demo.
//!
//! The physical ones (a cell at a voltage, a temperature offset, a stuck relay) act on [`super::PackModel`]; the
//! wire ones (silent, corrupt, frozen) are flags each wire mapping honours in its own frames ([`super::SimPack`]
//! says how).

use super::relays::RelayFault;
use super::SimPack;

/// Faults of the wire, honoured by the mapping.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct WireFaults {
    /// The pack sends nothing and hears nothing (a cut wire, a dead BMS).
    pub silent: bool,
    /// Checksummed frames carry wrong checksums.
    pub corrupt: bool,
}

/// One fault, put on (or taken off) a pack.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cell `index` (from 0) at about `millivolts`, following the pack from there; `None` returns it to its own
    /// voltage.
    Cell {
        index: usize,
        millivolts: Option<i32>,
    },
    Silent(bool),
    CorruptChecksums(bool),
    /// The broadcasts repeat the bytes they had at this moment and polls go unanswered (a hung controller whose
    /// CAN controller keeps resending its last buffers).
    Frozen(bool),
    /// Every temperature sensor this far off, 0.1 °C.
    TemperatureOffset(i16),
    /// The contactors stop following what drives them (welded, or failing to close), or follow again.
    Relay(RelayFault),
}

impl Fault {
    pub fn apply<P: SimPack + ?Sized>(self, pack: &mut P) {
        match self {
            Fault::Cell { index, millivolts } => pack.model_mut().set_cell_at(index, millivolts),
            Fault::Silent(on) => pack.model_mut().wire.silent = on,
            Fault::CorruptChecksums(on) => pack.model_mut().wire.corrupt = on,
            Fault::Frozen(on) => pack.set_frozen(on),
            Fault::TemperatureOffset(dc) => pack.model_mut().set_temperature_offset(dc),
            Fault::Relay(f) => pack.model_mut().set_relay_fault(f),
        }
    }
}
