//! Maps the config file's protocol options onto each protocol's option struct.

use dbe_core::battery::nissan_leaf::InterlockPolicy;
use dbe_core::battery::BatteryConfig;
use dbe_core::inverter::byd_modbus::BydModbusOptions;
use dbe_core::inverter::pylon_can::{ByteOrder, PylonCanOptions};
use dbe_core::inverter::pylon_rs485::PylonRs485Options;
use dbe_core::inverter::InverterConfig;
use dbe_core::Duration;
use dbe_services::config::Config;
use dbe_services::config::InverterSection;

pub fn apply_pylon(o: &mut PylonCanOptions, s: &InverterSection) {
    o.byte_order = if s.pylon_little_endian { ByteOrder::LittleEndian } else { ByteOrder::BigEndian };
    o.offset_30k = s.pylon_offset_30k;
    o.address = s.pylon_address;
}

fn apply_pylontech_rs485(o: &mut PylonRs485Options, cfg: &Config) {
    o.address = cfg.inverter.pylontech_address;
    o.modules = cfg.inverter.pylontech_modules;
    o.cells_per_module = cfg.inverter.pylontech_cells_per_module;
    o.turnaround = Duration::from_millis(cfg.rs485.turnaround_ms as u64);
}

fn apply_byd(o: &mut BydModbusOptions, cfg: &Config) {
    o.slave = cfg.inverter.byd_slave;
    o.primo_gen24 = cfg.inverter.byd_primo_gen24;
    o.cold_temperature_workaround = cfg.inverter.byd_cold_temperature_workaround;
    o.turnaround = Duration::from_millis(cfg.rs485.turnaround_ms as u64);
}

/// The inverter protocol with the options the config sets.
pub fn inverter_config(cfg: &Config) -> InverterConfig {
    let mut ic = InverterConfig::default_for(cfg.inverter_kind());
    match &mut ic {
        InverterConfig::PylonCan(o) => apply_pylon(o, &cfg.inverter),
        InverterConfig::PylonRs485(o) => apply_pylontech_rs485(o, cfg),
        InverterConfig::BydModbus(o) => apply_byd(o, cfg),
    }
    ic
}

/// How the pack's contactors are controlled, from `[contactors]` (a validated config holds a known mode; anything
/// else would be refused by `check-config`, and falls back to `none`, which closes nothing). With relay outputs
/// that read back (a Modbus board), every fitted output is checked against its command.
pub fn contactor_setup(cfg: &Config) -> dbe_core::contactor::ContactorSetup {
    use dbe_core::contactor::{ContactorMode, ContactorSetup, OutputSet};
    let c = &cfg.contactors;
    let mode = ContactorMode::from_name(&c.mode).unwrap_or(ContactorMode::None);
    let mut setup = ContactorSetup::with_mode(mode);
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
    }
    setup
}

/// The battery driver with the options the config sets.
pub fn battery_config(cfg: &Config) -> BatteryConfig {
    let mut bc = BatteryConfig::default_for(cfg.battery_kind());
    match &mut bc {
        BatteryConfig::NissanLeaf(o) => {
            // A validated config holds one of the names; anything else keeps the default.
            o.interlock = InterlockPolicy::from_name(&cfg.battery.nissan_leaf.interlock).unwrap_or_default();
        }
    }
    bc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byd_option_of_the_config_reaches_the_protocol() {
        let cfg = Config::from_toml(
            "[inverter]\nprotocol = \"byd-modbus\"\nbyd_slave = 7\nbyd_primo_gen24 = true\n\
             byd_cold_temperature_workaround = true\n[rs485]\nport = \"sim:\"\nturnaround_ms = 9\n",
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
}
