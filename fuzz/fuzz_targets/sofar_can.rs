//! The Sofar CAN inquiry parser and broadcast schedule through the bridge: fuzzed inverter frames (0x605/0x705
//! inquiries with fuzzed data, any id, remote and standard frames) while a simulated LEAF keeps the data valid.
#![no_main]
use dbe_fuzz::{run_bridge, Op, Weights};

const WEIGHTS: Weights =
    Weights(&[Op::InverterFrame, Op::InverterFrame, Op::InverterFrame, Op::Tick, Op::Tick, Op::Jump, Op::Command]);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run_bridge(data, dbe_core::inverter::InverterConfig::SofarCan(Default::default()), WEIGHTS);
});
