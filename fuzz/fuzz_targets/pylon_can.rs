//! The Pylon CAN request parser through the bridge: fuzzed inverter frames (known ids with fuzzed data, any id,
//! remote and standard frames) while a simulated LEAF keeps the data valid. The first byte picks `pylon-can` or
//! one of its presets (`ferroamp-can`, `solxpow-can`), which share the encoder with other fixed settings.
#![no_main]
use dbe_core::inverter::InverterConfig;
use dbe_fuzz::{run_bridge, Op, Weights};

const WEIGHTS: Weights =
    Weights(&[Op::InverterFrame, Op::InverterFrame, Op::InverterFrame, Op::Tick, Op::Tick, Op::Jump, Op::Command]);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let inverter = match pick % 3 {
        0 => InverterConfig::PylonCan(Default::default()),
        1 => InverterConfig::FerroampCan(Default::default()),
        _ => InverterConfig::SolxpowCan(Default::default()),
    };
    run_bridge(rest, inverter, WEIGHTS);
});
