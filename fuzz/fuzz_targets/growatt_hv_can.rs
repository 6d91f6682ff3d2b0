//! The Growatt HV CAN protocol through the bridge: fuzzed inverter frames (its 0x3010 heartbeat among the known
//! ids with fuzzed data, any id including 0x3020/0x3030, remote and standard frames) while a simulated LEAF keeps
//! the data valid; the 1 s set of 20 frames keeps going out between them.
#![no_main]
use dbe_fuzz::{run_bridge, Op, Weights};

const WEIGHTS: Weights =
    Weights(&[Op::InverterFrame, Op::InverterFrame, Op::InverterFrame, Op::Tick, Op::Tick, Op::Jump, Op::Command]);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run_bridge(data, dbe_core::inverter::InverterConfig::GrowattHvCan(Default::default()), WEIGHTS);
});
