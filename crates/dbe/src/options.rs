//! The drivers' options as the config sets them. The config layer reads each driver's table into the driver's
//! own options struct (`dbe_services::config::drivers`); these are the daemon's names for the two lookups.

use dbe_core::battery::BatteryConfig;
use dbe_core::bridge::BridgeConfig;
use dbe_core::inverter::InverterConfig;
use dbe_services::config::Config;

/// The bridge's whole config: both drivers' options, the supervisor's limits, the contactors.
pub fn bridge_config(cfg: &Config) -> BridgeConfig {
    BridgeConfig {
        battery: crate::options::battery_config(cfg),
        inverter: crate::options::inverter_config(cfg),
        supervisor: cfg.supervisor(),
        contactors: crate::options::contactor_setup(cfg),
    }
}

/// The inverter protocol with the options the config sets.
pub fn inverter_config(cfg: &Config) -> InverterConfig {
    cfg.inverter_config()
}

/// How the pack's contactors are controlled, from `[contactors]` (a validated config holds a known mode; anything
/// else would be refused by `check-config`, and falls back to `none`, which closes nothing). With relay outputs
/// that read back (a Modbus board), every fitted output is checked against its command.
pub fn contactor_setup(cfg: &Config) -> dbe_core::contactor::ContactorSetup {
    use dbe_core::contactor::{ContactorMode, ContactorSetup, OutputSet};
    let c = &cfg.contactors;
    let mode = ContactorMode::from_name(&c.mode).unwrap_or(ContactorMode::None);
    let mut setup = ContactorSetup::with_mode(mode);
    // A BMS power output makes `BMSRESET` a power cycle (Battery-Emulator's timings, the core's defaults).
    if c.outputs_by_key().into_iter().any(|(key, line)| key == "bms_power" && line.is_some()) {
        setup.sequence.bms_power = Some(dbe_core::contactor::BmsPowerConfig::default());
    }
    if c.precharge_check_v > 0 {
        setup.sequence.precharge_check = Some(dbe_core::contactor::PrechargeCheck {
            margin: dbe_core::units::DeciVolts(c.precharge_check_v.saturating_mul(10)),
            ..Default::default()
        });
    }
    if c.outputs.starts_with("modbus:") {
        let mut feedback = OutputSet::empty();
        for (key, line) in c.outputs_by_key() {
            if line.is_some() {
                feedback |= match key {
                    "negative" => OutputSet::NEGATIVE,
                    "precharge" => OutputSet::PRECHARGE,
                    "positive" => OutputSet::POSITIVE,
                    _ => OutputSet::BMS_POWER,
                };
            }
        }
        setup.sequence.feedback = feedback;
        // A board at 9600 baud polled every 200 ms (its writes, then its read-backs) on a busy gateway answers in
        // hundreds of ms: a relay counts as not following only after 2 s.
        setup.sequence.feedback_timeout = dbe_core::Duration::from_secs(2);
    }
    setup
}

/// The battery driver with the options the config sets.
pub fn battery_config(cfg: &Config) -> BatteryConfig {
    cfg.battery_config()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::battery::nissan_leaf::{InterlockPolicy, NissanLeafOptions};
    use dbe_core::inverter::byd_modbus::BydModbusOptions;
    use dbe_core::inverter::pylon_can::{ByteOrder, PylonCanOptions};
    use dbe_core::Duration;

    #[test]
    fn a_bms_power_output_makes_bmsreset_a_power_cycle() {
        let with = Config::from_toml(
            "[contactors]\nmode = \"relays\"\noutputs = \"sim:\"\nnegative = 0\npositive = 1\nbms_power = 3\n",
        )
        .unwrap();
        assert!(contactor_setup(&with).sequence.bms_power.is_some());
        let without =
            Config::from_toml("[contactors]\nmode = \"relays\"\noutputs = \"sim:\"\nnegative = 0\npositive = 1\n")
                .unwrap();
        assert!(contactor_setup(&without).sequence.bms_power.is_none());
    }

    #[test]
    fn every_byd_option_of_the_config_reaches_the_protocol() {
        let cfg = Config::from_toml(
            "[inverter]\nprotocol = \"byd-modbus\"\n[inverter.byd_modbus]\nslave = 7\nprimo_gen24 = true\n\
             cold_temperature_workaround = true\n[rs485]\nport = \"sim:\"\nturnaround_ms = 9\n",
        )
        .unwrap();
        let InverterConfig::BydModbus(o) = inverter_config(&cfg) else { panic!("not BYD Modbus") };
        assert_eq!(
            o,
            BydModbusOptions {
                slave: 7,
                turnaround: Duration::from_millis(9),
                primo_gen24: true,
                cold_temperature_workaround: true,
            }
        );
        let cfg = Config::from_toml("[inverter]\nprotocol = \"byd-modbus\"\n[rs485]\nport = \"sim:\"\n").unwrap();
        let InverterConfig::BydModbus(o) = inverter_config(&cfg) else { panic!("not BYD Modbus") };
        assert!(!o.cold_temperature_workaround, "off by default");
    }

    #[test]
    fn an_old_flat_file_reaches_the_protocol_as_before() {
        let cfg = Config::from_toml(
            "[inverter]\nprotocol = \"pylon-can\"\npylon_little_endian = true\npylon_offset_30k = true\n\
             pylon_address = 1\n",
        )
        .unwrap();
        assert_eq!(
            inverter_config(&cfg),
            InverterConfig::PylonCan(PylonCanOptions {
                byte_order: ByteOrder::LittleEndian,
                offset_30k: true,
                address: 1
            })
        );
        let cfg = Config::from_toml("[battery.nissan_leaf]\ninterlock = \"required\"\n").unwrap();
        assert_eq!(
            battery_config(&cfg),
            BatteryConfig::NissanLeaf(NissanLeafOptions { interlock: InterlockPolicy::Required })
        );
    }
}
