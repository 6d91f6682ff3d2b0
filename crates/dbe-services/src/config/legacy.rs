//! Keys of earlier releases, still read for one release with a warning that names the new key.
//!
//! Until the per-driver tables, the inverter protocols' options were flat keys of `[inverter]` with a protocol
//! prefix (`pylon_address`, `byd_slave`, ...). Each is read as its new key; setting both the old and the new one
//! is an error (which one was meant is not knowable). The Settings page rewrites them to the new place when it
//! saves ([`migrate`]).

use toml_edit::{DocumentMut, Item, Value};

/// An old key and where it went.
pub struct Renamed {
    pub old: &'static str,
    pub new: &'static str,
    /// The old value as the new key takes it (most are unchanged).
    convert: fn(&Value) -> Value,
}

fn same(v: &Value) -> Value {
    v.clone()
}

/// `pylon_little_endian = true` → `byte_order = "little-endian"`; anything but a bool is passed on, so the new
/// key's check names what is wrong with it.
fn byte_order(v: &Value) -> Value {
    match v.as_bool() {
        Some(true) => "little-endian".into(),
        Some(false) => "big-endian".into(),
        None => v.clone(),
    }
}

/// Every renamed key (0.1's flat `[inverter]` options).
pub const RENAMED: &[Renamed] = &[
    Renamed { old: "inverter.pylon_little_endian", new: "inverter.pylon_can.byte_order", convert: byte_order },
    Renamed { old: "inverter.pylon_offset_30k", new: "inverter.pylon_can.offset_30k", convert: same },
    Renamed { old: "inverter.pylon_address", new: "inverter.pylon_can.address", convert: same },
    Renamed { old: "inverter.pylontech_address", new: "inverter.pylontech_rs485.address", convert: same },
    Renamed { old: "inverter.pylontech_modules", new: "inverter.pylontech_rs485.modules", convert: same },
    Renamed {
        old: "inverter.pylontech_cells_per_module",
        new: "inverter.pylontech_rs485.cells_per_module",
        convert: same,
    },
    Renamed { old: "inverter.byd_slave", new: "inverter.byd_modbus.slave", convert: same },
    Renamed { old: "inverter.byd_primo_gen24", new: "inverter.byd_modbus.primo_gen24", convert: same },
    Renamed {
        old: "inverter.byd_cold_temperature_workaround",
        new: "inverter.byd_modbus.cold_temperature_workaround",
        convert: same,
    },
];

/// The entry for an old dotted key.
pub fn find(old: &str) -> Option<&'static Renamed> {
    RENAMED.iter().find(|r| r.old == old)
}

impl Renamed {
    /// The value the new key gets; an item that is not a plain value (a table) is passed on unchanged.
    pub fn convert(&self, item: &Item) -> Item {
        match item.as_value() {
            Some(v) => Item::Value((self.convert)(v)),
            None => item.clone(),
        }
    }

    /// The deprecation warning.
    pub fn warning(&self) -> String {
        let (table, key) = self.new.rsplit_once('.').unwrap_or(("", self.new));
        format!(
            "deprecated, write it as {} (`{key}` in [{table}]); the old name is read for this release only",
            self.new
        )
    }

    /// The error when the old and the new key are both set.
    pub fn conflict(&self, new_line: Option<usize>) -> String {
        let at = new_line.map(|l| format!(" (line {l})")).unwrap_or_default();
        format!("is the old name of {}, which is also set{at}: remove one of them", self.new)
    }
}

/// Moves every old key of `doc` to its new place (an old key whose new one is set is dropped: the file would
/// not load otherwise, and the new one is what a later release reads).
pub fn migrate(doc: &mut DocumentMut) {
    for r in RENAMED {
        let (table, key) = r.old.rsplit_once('.').unwrap_or(("", r.old));
        let Some(t) = doc.get_mut(table).and_then(|i| i.as_table_like_mut()) else { continue };
        let Some(old) = t.remove(key) else { continue };
        let (new_table, new_key) = r.new.rsplit_once('.').unwrap_or(("", r.new));
        let (section, driver) = new_table.split_once('.').unwrap_or((new_table, ""));
        let Some(s) = doc.get_mut(section).and_then(|i| i.as_table_like_mut()) else { continue };
        if !s.contains_key(driver) {
            s.insert(driver, Item::Table(toml_edit::Table::new()));
        }
        let Some(d) = s.get_mut(driver).and_then(|i| i.as_table_like_mut()) else { continue };
        if !d.contains_key(new_key) {
            d.insert(new_key, r.convert(&old));
        }
    }
}
