//! Everything of the binary that simulates: the simulators the daemon puts on `sim:` ports ([`simulators`]),
//! `dbe simulate` ([`simulate`]: simulators behind a real wire) with the faults its standard input takes
//! ([`control`]), and `dbe demo` ([`demo`]: pack, bridge and inverter in simulated time). The simulators
//! themselves live in `dbe-sim`; these modules only wire them to ports, clocks and terminals.
//!
//! The production bridge loop (`run.rs`) imports nothing from here: a `sim:` port is one more port kind, which
//! [`crate::ports::open_ports`] opens with a simulator behind it.

pub mod control;
pub mod demo;
pub mod simulate;
pub mod simulators;
