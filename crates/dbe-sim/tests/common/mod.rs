//! What the simulated-time test files share: the installation they run (a LEAF bridged to Pylon CAN) and a
//! shorthand for seconds. Each test file uses part of it.
#![allow(dead_code)]

use dbe_core::bridge::BridgeConfig;
use dbe_core::contactor::ContactorSetup;
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::SupervisorConfig;
use dbe_core::Duration;

/// A LEAF bridged to a Pylon CAN inverter, with the given contactor control.
pub fn leaf_pylon(contactors: ContactorSetup) -> BridgeConfig {
    BridgeConfig {
        battery: dbe_core::battery::BatteryKind::NissanLeaf.into(),
        inverter: InverterConfig::PylonCan(Default::default()),
        supervisor: SupervisorConfig::default(),
        contactors,
    }
}

/// [`leaf_pylon`] with relay outputs (the LEAF's hardwired relays) and default settings.
pub fn config() -> BridgeConfig {
    leaf_pylon(ContactorSetup::default())
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
