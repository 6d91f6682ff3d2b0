//! Home Assistant MQTT discovery: one retained config message per entity, under
//! `<discovery>/sensor/<node>/<object>/config` and `<discovery>/button/<node>/<object>/config`.
//!
//! Rules followed (Home Assistant MQTT integration docs, and the 2025.10 change that deprecates `object_id` in
//! favour of `default_entity_id` = `<domain>.<object id>`, to be removed in 2026.4):
//! - every entity has a `unique_id` and a `default_entity_id`, both built from the node id so two DBE instances
//!   on one broker never collide; the `device` block's `identifiers` are unique per instance for the same reason;
//! - `availability` is a list with one entry on `<prefix>/status` (`online`/`offline`, the last will);
//! - device classes with their allowed state classes: `energy` only goes with `total`/`total_increasing`, so the
//!   pack capacities use `energy_storage` with `measurement` (as Battery-Emulator does since it hit the same
//!   rejection); text sensors have no state class and no unit;
//! - a template that renders `None` makes the state "unknown", so fields left out of `info` show as unknown;
//! - entity names do not repeat the device name (HA prefixes it);
//! - an empty retained payload on a config topic removes the entity.
//!
//! Pack-specific values get one sensor each, from the driver's descriptor table (`dbe_core::extras`): its key as
//! the object id, its label, unit, device class, state class and decimals. A key that would shadow a common
//! sensor is skipped, as `info` never lets it replace a common field.

use dbe_core::model::{ExtraDescriptor, ExtraKind};
use serde_json::{json, Map, Value};

use super::commands::CommandName;
use super::telemetry::SOFTWARE_VERSION;
use super::topics::Topics;

/// One `info` field as a Home Assistant sensor.
#[derive(Copy, Clone, Debug)]
pub struct SensorDef {
    /// The `info` JSON key, also the discovery object id (Battery-Emulator's ids, so entity ids look familiar).
    pub key: &'static str,
    pub name: &'static str,
    pub unit: Option<&'static str>,
    pub device_class: Option<&'static str>,
    pub state_class: Option<&'static str>,
    pub diagnostic: bool,
    pub precision: Option<u8>,
    pub icon: Option<&'static str>,
}

const fn num(
    key: &'static str,
    name: &'static str,
    unit: &'static str,
    class: &'static str,
    precision: Option<u8>,
) -> SensorDef {
    SensorDef {
        key,
        name,
        unit: Some(unit),
        device_class: Some(class),
        state_class: Some("measurement"),
        diagnostic: false,
        precision,
        icon: None,
    }
}

const fn text(key: &'static str, name: &'static str, diagnostic: bool, icon: &'static str) -> SensorDef {
    SensorDef {
        key,
        name,
        unit: None,
        device_class: None,
        state_class: None,
        diagnostic,
        precision: None,
        icon: Some(icon),
    }
}

/// Every `info` field DBE announces, in the order Home Assistant lists them.
pub const SENSORS: &[SensorDef] = &[
    num("SOC", "SOC (scaled)", "%", "battery", Some(1)),
    num("SOC_real", "SOC (real)", "%", "battery", Some(1)),
    SensorDef {
        key: "state_of_health",
        name: "State of health",
        unit: Some("%"),
        device_class: None,
        state_class: Some("measurement"),
        diagnostic: false,
        precision: Some(1),
        icon: Some("mdi:battery-heart-variant"),
    },
    num("temperature_min", "Temperature min", "°C", "temperature", Some(1)),
    num("temperature_max", "Temperature max", "°C", "temperature", Some(1)),
    num("stat_batt_power", "Battery power", "W", "power", Some(0)),
    num("battery_current", "Battery current", "A", "current", Some(1)),
    num("battery_voltage", "Battery voltage", "V", "voltage", Some(1)),
    num("cell_max_voltage", "Cell max voltage", "V", "voltage", Some(3)),
    num("cell_min_voltage", "Cell min voltage", "V", "voltage", Some(3)),
    num("cell_voltage_delta", "Cell voltage delta", "mV", "voltage", Some(0)),
    num("total_capacity", "Total capacity", "Wh", "energy_storage", Some(0)),
    num("remaining_capacity", "Remaining capacity (scaled)", "Wh", "energy_storage", Some(0)),
    num("remaining_capacity_real", "Remaining capacity (real)", "Wh", "energy_storage", Some(0)),
    num("max_charge_power", "Max charge power", "W", "power", Some(0)),
    num("max_discharge_power", "Max discharge power", "W", "power", Some(0)),
    text("bms_status", "BMS status", false, "mdi:information-box-outline"),
    text("pause_status", "Pause status", false, "mdi:battery-outline"),
    text("event_level", "Event level", true, "mdi:information-outline"),
    text("emulator_status", "Emulator status", true, "mdi:information-outline"),
    SensorDef {
        key: "emulator_uptime",
        name: "Uptime",
        unit: Some("s"),
        device_class: Some("duration"),
        state_class: None,
        diagnostic: true,
        precision: Some(0),
        icon: None,
    },
    SensorDef {
        key: "balancing_active_cells",
        name: "Balancing cells",
        unit: None,
        device_class: None,
        state_class: Some("measurement"),
        diagnostic: false,
        precision: Some(0),
        icon: Some("mdi:fuel-cell"),
    },
    text("balancing_status", "Balancing status", false, "mdi:fuel-cell"),
    text("charging_state", "Charging state", false, "mdi:home-battery"),
    text("limiting_factor", "Limiting factor", false, "mdi:home-battery-outline"),
    text("software_version", "Software version", true, "mdi:tag-outline"),
    text("contactor_control", "Contactor control", true, "mdi:electric-switch"),
];

/// A pack-specific value as a sensor. Only numbers carry a unit, classes and a precision: Home Assistant rejects a
/// text sensor with a unit or a state class.
pub fn extra_sensor(d: &'static ExtraDescriptor) -> SensorDef {
    let number = d.kind == ExtraKind::Number;
    SensorDef {
        key: d.key,
        name: d.label,
        unit: d.unit.filter(|_| number),
        device_class: d.device_class.map(|c| c.name()).filter(|_| number),
        state_class: d.state_class.map(|c| c.name()).filter(|_| number),
        diagnostic: false,
        precision: number.then_some(d.decimals),
        icon: None,
    }
}

/// The sensors of a driver's table, without the keys that a common sensor or the event sensor already has.
pub fn extra_sensors(table: &'static [ExtraDescriptor]) -> impl Iterator<Item = SensorDef> {
    table.iter().filter(|d| d.key != EVENT_OBJECT && !SENSORS.iter().any(|s| s.key == d.key)).map(extra_sensor)
}

/// The event sensor's object id (its state is the last event's type, its attributes the whole event).
pub const EVENT_OBJECT: &str = "event";

/// The id of this DBE instance in Home Assistant: `dbe_` and the node's slug, the prefix once (a node id that
/// already starts with `dbe_` is not prefixed again, so no entity comes out as `sensor.dbe_dbe_...`). It is the
/// discovery topics' node, the device identifier and the start of every unique id and entity id.
pub fn instance_id(node_id: &str) -> String {
    let node = node_slug(node_id);
    if node == "dbe" || node.starts_with("dbe_") {
        node
    } else {
        format!("dbe_{node}")
    }
}

/// The device name Home Assistant shows when `mqtt.device_name` is not set: "DBE" and the battery type, as a
/// person would name it (the driver's title up to its details in brackets, e.g. "DBE Nissan LEAF 24/30/40/62
/// kWh").
pub fn default_device_name(battery: dbe_core::battery::BatteryKind) -> String {
    let title = battery.info().title;
    let short = title.split(" (").next().unwrap_or(title).trim();
    format!("DBE {}", if short.is_empty() { battery.info().name } else { short })
}

/// Lower-case letters, digits and `_` only: the node id goes into topics, unique ids and entity ids.
pub fn node_slug(node_id: &str) -> String {
    let s: String =
        node_id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() {
        "dbe".into()
    } else {
        s
    }
}

fn button_name(c: CommandName) -> &'static str {
    match c {
        CommandName::Pause => "Pause charge/discharge",
        CommandName::Resume => "Resume charge/discharge",
        CommandName::Restart => "Restart bridge",
        CommandName::Stop => "Stop (open contactors)",
        CommandName::Start => "Start bridge",
        CommandName::BmsReset => "Reset BMS",
        CommandName::SetLimits | CommandName::SetSocWindow => "",
    }
}

fn button_icon(c: CommandName) -> &'static str {
    match c {
        CommandName::Pause => "mdi:battery-minus-outline",
        CommandName::Resume => "mdi:battery-sync-outline",
        CommandName::Restart => "mdi:restart",
        CommandName::Stop => "mdi:battery-remove-outline",
        CommandName::Start => "mdi:battery-arrow-up-outline",
        CommandName::BmsReset => "mdi:star-four-points-box-outline",
        CommandName::SetLimits | CommandName::SetSocWindow => "mdi:help",
    }
}

/// One retained config message (an empty payload removes the entity).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigMessage {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What every config message shares, built once per run.
#[derive(Clone, Debug)]
pub struct Discovery {
    topics: Topics,
    node: String,
    device: Value,
}

impl Discovery {
    /// `device_name`: the configured name, else [`default_device_name`] of the pack (the caller knows it); "DBE"
    /// alone when neither is given. Never the node id: Home Assistant shows this name to people.
    pub fn new(topics: Topics, node_id: &str, device_name: Option<&str>, web_url: Option<&str>) -> Discovery {
        let node = instance_id(node_id);
        let mut device = json!({
            "identifiers": [node.clone()],
            "name": device_name.filter(|n| !n.trim().is_empty()).unwrap_or("DBE"),
            "model": "DBE battery-emulator bridge",
            "manufacturer": "DBE project",
            "sw_version": SOFTWARE_VERSION,
        });
        if let Some(url) = web_url {
            device["configuration_url"] = Value::from(url);
        }
        Discovery { topics, node, device }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn common(&self, object: &str, domain: &str, name: String) -> Map<String, Value> {
        let id = format!("{}_{}", self.node, object.to_ascii_lowercase());
        let mut m = Map::new();
        m.insert("name".into(), name.into());
        m.insert("unique_id".into(), id.clone().into());
        m.insert("default_entity_id".into(), format!("{domain}.{id}").into());
        m.insert("device".into(), self.device.clone());
        m.insert("origin".into(), json!({ "name": "DBE", "sw_version": SOFTWARE_VERSION }));
        m.insert(
            "availability".into(),
            json!([{ "topic": self.topics.status, "payload_available": "online", "payload_not_available": "offline" }]),
        );
        m
    }

    fn message(&self, component: &str, object: &str, config: Option<Map<String, Value>>) -> ConfigMessage {
        ConfigMessage {
            topic: self.topics.discovery(component, &self.node, object),
            payload: config.map(|c| Value::Object(c).to_string().into_bytes()).unwrap_or_default(),
        }
    }

    pub fn sensor(&self, def: &SensorDef) -> ConfigMessage {
        let mut m = self.common(def.key, "sensor", def.name.to_string());
        m.insert("state_topic".into(), self.topics.info.clone().into());
        m.insert("value_template".into(), format!("{{{{ value_json.{} | default(none) }}}}", def.key).into());
        let mut opt = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        opt("unit_of_measurement", def.unit.map(Value::from));
        opt("device_class", def.device_class.map(Value::from));
        opt("state_class", def.state_class.map(Value::from));
        opt("suggested_display_precision", def.precision.map(Value::from));
        opt("icon", def.icon.map(Value::from));
        opt("entity_category", def.diagnostic.then(|| Value::from("diagnostic")));
        self.message("sensor", def.key, Some(m))
    }

    pub fn event_sensor(&self) -> ConfigMessage {
        let mut m = self.common(EVENT_OBJECT, "sensor", "Last event".into());
        m.insert("state_topic".into(), self.topics.events.clone().into());
        m.insert("value_template".into(), "{{ value_json.event_type }}".into());
        m.insert("json_attributes_topic".into(), self.topics.events.clone().into());
        m.insert("icon".into(), "mdi:information-outline".into());
        m.insert("entity_category".into(), "diagnostic".into());
        self.message("sensor", EVENT_OBJECT, Some(m))
    }

    /// `None` for the commands that take a payload (no button for them).
    pub fn button(&self, c: CommandName) -> Option<ConfigMessage> {
        if !c.is_button() {
            return None;
        }
        let object = c.topic_name();
        let mut m = self.common(object, "button", button_name(c).into());
        m.insert("command_topic".into(), self.topics.command(c).into());
        m.insert("payload_press".into(), "PRESS".into());
        m.insert("icon".into(), button_icon(c).into());
        if matches!(c, CommandName::Restart | CommandName::BmsReset) {
            m.insert("entity_category".into(), "config".into());
        }
        Some(self.message("button", object, Some(m)))
    }

    fn cell_object(n: usize) -> String {
        format!("cell_voltage{n}")
    }

    /// Cell `n` counts from 1, as on the pack's labels.
    pub fn cell(&self, n: usize) -> ConfigMessage {
        let object = Self::cell_object(n);
        let mut m = self.common(&object, "sensor", format!("Cell voltage {n}"));
        m.insert("state_topic".into(), self.topics.spec_data.clone().into());
        m.insert(
            "value_template".into(),
            format!("{{{{ value_json.cell_voltages[{}] if value_json.cell_voltages is defined else none }}}}", n - 1)
                .into(),
        );
        m.insert("unit_of_measurement".into(), "V".into());
        m.insert("device_class".into(), "voltage".into());
        m.insert("state_class".into(), "measurement".into());
        m.insert("suggested_display_precision".into(), 3.into());
        m.insert("entity_category".into(), "diagnostic".into());
        m.insert("enabled_by_default".into(), false.into());
        self.message("sensor", &object, Some(m))
    }

    pub fn remove_cell(&self, n: usize) -> ConfigMessage {
        self.message("sensor", &Self::cell_object(n), None)
    }

    /// Removes the sensor of a pack-specific value (the driver changed).
    pub fn remove_sensor(&self, key: &str) -> ConfigMessage {
        self.message("sensor", key, None)
    }

    /// The sensors (the common ones and one per value of the driver's table `extras`), the event sensor and a
    /// button per allowed command; the buttons of commands that are not allowed are removed (a button that can
    /// only be refused is noise).
    pub fn announce(&self, allowed: &[CommandName], extras: &'static [ExtraDescriptor]) -> Vec<ConfigMessage> {
        let mut out: Vec<_> = SENSORS.iter().map(|d| self.sensor(d)).collect();
        out.extend(extra_sensors(extras).map(|d| self.sensor(&d)));
        out.push(self.event_sensor());
        for &c in CommandName::ALL.iter().filter(|c| c.is_button()) {
            if allowed.contains(&c) {
                out.extend(self.button(c));
            } else {
                out.push(self.message("button", c.topic_name(), None));
            }
        }
        out
    }

    /// Empty retained configs for every entity `announce` makes (and cells `1..=cells`).
    pub fn remove_all(&self, cells: usize, extras: &'static [ExtraDescriptor]) -> Vec<ConfigMessage> {
        let mut out: Vec<_> = SENSORS.iter().map(|d| self.message("sensor", d.key, None)).collect();
        out.extend(extra_sensors(extras).map(|d| self.remove_sensor(d.key)));
        out.push(self.message("sensor", EVENT_OBJECT, None));
        for &c in CommandName::ALL.iter().filter(|c| c.is_button()) {
            out.push(self.message("button", c.topic_name(), None));
        }
        out.extend((1..=cells).map(|n| self.remove_cell(n)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Discovery {
        Discovery::new(Topics::new("BE", "homeassistant"), "Garage DBE!", None, Some("http://dbe.local:8080"))
    }

    fn parse(m: &ConfigMessage) -> Value {
        serde_json::from_slice(&m.payload).unwrap()
    }

    #[test]
    fn node_ids_are_slugs() {
        assert_eq!(node_slug("Garage DBE!"), "garage_dbe");
        assert_eq!(node_slug("--"), "dbe");
    }

    #[test]
    fn sensor_configs_carry_what_ha_requires() {
        let d = d();
        for def in SENSORS {
            let m = d.sensor(def);
            assert_eq!(m.topic, format!("homeassistant/sensor/dbe_garage_dbe/{}/config", def.key));
            let v = parse(&m);
            assert_eq!(v["unique_id"], format!("dbe_garage_dbe_{}", def.key.to_ascii_lowercase()));
            assert_eq!(v["default_entity_id"], format!("sensor.dbe_garage_dbe_{}", def.key.to_ascii_lowercase()));
            assert!(v.get("object_id").is_none());
            assert_eq!(v["state_topic"], "BE/info");
            assert_eq!(v["availability"][0]["topic"], "BE/status");
            assert_eq!(v["device"]["identifiers"][0], "dbe_garage_dbe");
            assert_eq!(v["device"]["configuration_url"], "http://dbe.local:8080");
            // HA rejects energy with measurement.
            if v["device_class"] == "energy" {
                assert_ne!(v["state_class"], "measurement", "{}", def.key);
            }
            // A text sensor with a unit or state class is rejected too.
            if def.unit.is_none() && def.state_class.is_none() {
                assert!(v.get("device_class").is_none());
            }
        }
        let cap = parse(&d.sensor(SENSORS.iter().find(|s| s.key == "total_capacity").unwrap()));
        assert_eq!(
            (cap["device_class"].as_str(), cap["state_class"].as_str()),
            (Some("energy_storage"), Some("measurement"))
        );
    }

    #[test]
    fn buttons_only_for_allowed_commands() {
        let d = d();
        let msgs = d.announce(&[CommandName::Pause], &[]);
        let pause = msgs.iter().find(|m| m.topic == "homeassistant/button/dbe_garage_dbe/PAUSE/config").unwrap();
        assert_eq!(parse(pause)["command_topic"], "BE/command/PAUSE");
        let stop = msgs.iter().find(|m| m.topic == "homeassistant/button/dbe_garage_dbe/STOP/config").unwrap();
        assert!(stop.payload.is_empty());
        assert!(!msgs.iter().any(|m| m.topic.contains("SET_LIMITS")));
    }

    #[test]
    fn one_dbe_prefix_and_a_name_a_person_would_choose() {
        // The daemon's node id is the machine id; one that already starts with `dbe_` is not prefixed again.
        for node_id in ["3d1219c7c4c5", "dbe_3d1219c7c4c5"] {
            let d = Discovery::new(Topics::new("BE", "homeassistant"), node_id, None, None);
            let soc = d.sensor(&SENSORS[0]);
            assert_eq!(soc.topic, "homeassistant/sensor/dbe_3d1219c7c4c5/SOC/config", "{node_id}");
            let v = parse(&soc);
            assert_eq!(v["unique_id"], "dbe_3d1219c7c4c5_soc", "{node_id}");
            assert_eq!(v["default_entity_id"], "sensor.dbe_3d1219c7c4c5_soc", "{node_id}");
            assert_eq!(v["device"]["identifiers"][0], "dbe_3d1219c7c4c5", "{node_id}");
            assert_eq!(v["device"]["name"], "DBE", "no node id in a name people read");
        }
        let leaf = default_device_name(dbe_core::battery::BatteryKind::NissanLeaf);
        assert_eq!(leaf, "DBE Nissan LEAF 24/30/40/62 kWh");
        let d = Discovery::new(Topics::new("BE", "homeassistant"), "3d1219c7c4c5", Some(&leaf), None);
        assert_eq!(parse(&d.sensor(&SENSORS[0]))["device"]["name"], leaf);
        let d = Discovery::new(Topics::new("BE", "homeassistant"), "x", Some("Garage battery"), None);
        assert_eq!(parse(&d.event_sensor())["device"]["name"], "Garage battery");
    }

    #[test]
    fn default_commands_announce_only_the_safe_buttons() {
        let msgs = d().announce(&crate::mqtt::MqttConfig::default().allowed_commands, &[]);
        let button = |name: &str| {
            msgs.iter().find(|m| m.topic == format!("homeassistant/button/dbe_garage_dbe/{name}/config")).unwrap()
        };
        for name in ["PAUSE", "RESUME", "STOP"] {
            assert_eq!(parse(button(name))["command_topic"], format!("BE/command/{name}"));
        }
        // Not allowed by default: their (retained, maybe from an older DBE) buttons are removed.
        for name in ["START", "RESTART", "BMSRESET"] {
            assert!(button(name).payload.is_empty(), "{name} is announced");
        }
    }

    #[test]
    fn cells_are_disabled_by_default() {
        let v = parse(&d().cell(3));
        assert_eq!(v["enabled_by_default"], false);
        assert_eq!(v["state_topic"], "BE/spec_data");
        assert!(v["value_template"].as_str().unwrap().contains("cell_voltages[2]"));
        assert_eq!(d().remove_all(2, &[]).len(), SENSORS.len() + 1 + 6 + 2);
    }

    #[test]
    fn one_sensor_per_pack_value_with_its_metadata() {
        use dbe_core::battery::nissan_leaf::EXTRAS;
        let msgs = d().announce(&[], EXTRAS);
        let find = |key: &str| {
            let topic = format!("homeassistant/sensor/dbe_garage_dbe/{key}/config");
            parse(msgs.iter().find(|m| m.topic == topic).unwrap_or_else(|| panic!("no sensor for {key}")))
        };
        let hx = find("leaf_hx");
        assert_eq!(hx["name"], "Hx");
        assert_eq!(hx["unit_of_measurement"], "%");
        assert_eq!(hx["state_class"], "measurement");
        assert_eq!(hx["suggested_display_precision"], 2);
        assert_eq!(hx["value_template"], "{{ value_json.leaf_hx | default(none) }}");
        assert_eq!(hx["unique_id"], "dbe_garage_dbe_leaf_hx");
        assert_eq!(find("insulation_resistance")["unit_of_measurement"], "kΩ");
        let generation = find("generation");
        assert_eq!(generation["name"], "LEAF generation");
        for k in ["unit_of_measurement", "state_class", "device_class", "suggested_display_precision"] {
            assert!(generation.get(k).is_none(), "a text sensor with {k}");
        }
        assert_eq!(msgs.len(), d().announce(&[], &[]).len() + EXTRAS.len());
        let removed = d().remove_all(0, EXTRAS);
        assert!(removed.iter().any(|m| m.topic.ends_with("/leaf_hx/config") && m.payload.is_empty()));
    }

    #[test]
    fn a_pack_value_never_shadows_a_common_sensor() {
        const CLASH: &[ExtraDescriptor] = &[
            ExtraDescriptor::number("SOC", "Pack SOC"),
            ExtraDescriptor::text("event", "Event"),
            ExtraDescriptor::number("gids", "GIDs"),
        ];
        let keys: Vec<_> = extra_sensors(CLASH).map(|s| s.key).collect();
        assert_eq!(keys, ["gids"]);
        // No registered driver has such a key.
        for b in dbe_core::battery::BATTERIES {
            use dbe_core::battery::Battery;
            let table = dbe_core::battery::AnyBattery::new(b.kind.into()).extras();
            assert_eq!(extra_sensors(table).count(), table.len(), "{}", b.name);
        }
    }
}
