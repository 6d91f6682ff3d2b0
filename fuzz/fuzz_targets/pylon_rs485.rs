//! The Pylontech RS485 request parser through the bridge: raw bytes in any pieces and well-formed requests with
//! fuzzed fields; every reply must be a well-formed frame.
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
    run_bridge(data, dbe_core::inverter::InverterConfig::PylonRs485(Default::default()), WEIGHTS);
});
