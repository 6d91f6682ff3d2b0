//! The BYD Modbus RTU request parser through the bridge: raw bytes in any pieces, silences, and requests with a
//! correct CRC and fuzzed fields; every reply must parse as a response from our slave address.
#![no_main]
use dbe_fuzz::{run_bridge, Op, Weights};

const WEIGHTS: Weights = Weights(&[
    Op::InverterBytes,
    Op::InverterBytes,
    Op::InverterRequest,
    Op::InverterRequest,
    Op::Tick,
    Op::Tick,
    Op::Jump,
    Op::BatteryFrame,
    Op::Command,
]);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run_bridge(data, dbe_core::inverter::InverterConfig::BydModbus(Default::default()), WEIGHTS);
});
