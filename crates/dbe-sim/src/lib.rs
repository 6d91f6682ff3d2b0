//! Simulated packs and inverters for tests and `dbe demo`.
//!
//! They speak the real wire protocols (the same frames a real LEAF pack or Pylontech-speaking inverter puts on
//! the bus) and are written independently of the drivers they test: a simulator encodes from its own physical
//! state with its own byte layout, so a driver bug cannot cancel itself out.
//!
//! Like the core, they are sans-IO state machines driven by `now`.

pub mod byd_inverter;
pub mod foxess_inverter;
pub mod growatt_inverter;
pub mod leaf;
pub mod modbus_master;
pub mod pack;
pub mod pylon_inverter;
pub mod pylon_rs485_master;
pub mod sim_inverter;
pub mod sofar_inverter;
pub mod solax_inverter;
pub mod tesla;
pub mod world;
