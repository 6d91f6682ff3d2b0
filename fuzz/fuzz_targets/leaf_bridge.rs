//! The LEAF battery decoder inside the whole bridge: mostly fuzzed battery frames (with and without a correct
//! CRC) between ticks of a simulated pack, jumps in time and commands, with a Pylon CAN inverter polling.
#![no_main]
use dbe_fuzz::{run_bridge, Op, Weights};

const WEIGHTS: Weights = Weights(&[
    Op::BatteryFrame,
    Op::BatteryFrame,
    Op::BatteryFrame,
    Op::BatteryFrame,
    Op::Tick,
    Op::Tick,
    Op::Jump,
    Op::InverterFrame,
    Op::Command,
]);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run_bridge(data, dbe_core::inverter::InverterConfig::PylonCan(Default::default()), WEIGHTS);
});
