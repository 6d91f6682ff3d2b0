//! The Tesla Model 3/Y battery decoder inside the whole bridge: mostly fuzzed battery frames between ticks of a
//! simulated Tesla pack (which closes its contactors from the driver's car frames), jumps in time and commands, with
//! a Pylon CAN inverter polling; contactors in `can` mode, as the pack needs.
#![no_main]
use dbe_core::battery::BatteryKind;
use dbe_core::contactor::{ContactorMode, ContactorSetup};
use dbe_fuzz::{run_bridge_with, tesla_frame, Op, PackUnderTest, Weights};

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
    let pack = PackUnderTest {
        battery: BatteryKind::TeslaModel3.into(),
        contactors: ContactorSetup::with_mode(ContactorMode::Can),
        new: |now| Box::new(dbe_sim::tesla::TeslaPack::model3_long_range(now)),
        frame: tesla_frame,
    };
    run_bridge_with(data, &pack, dbe_core::inverter::InverterConfig::PylonCan(Default::default()), WEIGHTS);
});
