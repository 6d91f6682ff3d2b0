//! The config file behind the Settings page: every key of [`Config`], read and changed through the web's
//! [`ConfigStore`] seam with the same validation as `dbe check-config`.
//!
//! A change is applied to the file's own TOML document (so the user's comments and layout survive), the whole
//! result is validated as if it were loaded from disk, and only then written atomically (temporary file, fsync,
//! previous file kept as `.bak`, rename). Nothing is written when any key is refused. Subscribers (the daemon's
//! bridge loop) get the new config through a watch channel and restart the bridge with it.
//!
//! The schema is derived from [`Config::default`] (each key's type) and from the commented example file (each
//! key's help text), so a new config key shows up on the Settings page without being listed twice; a driver's
//! options (`inverter.pylon_can.address`) take their type, bounds, choices and help from the driver's own table
//! of settings, the one the config file is read with. A file with the previous release's flat keys is saved in
//! the new layout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use toml_edit::DocumentMut;

use crate::config::{example, write_atomic, Config, ConfigError};
use crate::web::{ConfigStore, FieldError};

/// Keys whose value is a secret: shown empty, and an empty value keeps the current one.
const SECRETS: &[&str] = &["web.password_hash", "mqtt.password"];

/// What a setting holds, as the Settings page edits it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    Number,
    Text,
    /// An optional text (`None` in the config): empty means unset.
    OptionalText,
    /// A list of words, edited as comma-separated text.
    List,
}

/// The config file (or, for the demo, a config held in memory) as the web UI edits it.
pub struct ConfigFile {
    path: Option<PathBuf>,
    state: Mutex<State>,
    changes: watch::Sender<Arc<Config>>,
}

struct State {
    config: Config,
    /// The file's text as last read or written (the default config's TOML when there is no file).
    text: String,
}

impl ConfigFile {
    /// A store for the file `cfg` was loaded from; changes are written back to it.
    pub fn open(path: &Path, cfg: Config) -> std::io::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::with(Some(path.to_path_buf()), cfg, text))
    }

    /// A store with no file behind it (the demo): changes are validated and applied, never saved.
    pub fn in_memory(cfg: Config) -> ConfigFile {
        let text = cfg.to_toml();
        Self::with(None, cfg, text)
    }

    fn with(path: Option<PathBuf>, config: Config, text: String) -> ConfigFile {
        let (changes, _) = watch::channel(Arc::new(config.clone()));
        ConfigFile { path, state: Mutex::new(State { config, text }), changes }
    }

    /// Every accepted change, as the whole new config.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.changes.subscribe()
    }

    pub fn current(&self) -> Config {
        self.lock().config.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `changes` (flat `section.key -> value`), validates the whole result and saves it.
    pub fn apply(&self, changes: &Map<String, Value>) -> Result<Config, Vec<FieldError>> {
        let mut state = self.lock();
        let mut doc: DocumentMut = state.text.parse().map_err(|e| {
            vec![FieldError { key: String::new(), message: format!("the config file no longer parses: {e}") }]
        })?;
        crate::config::legacy::migrate(&mut doc);
        let kinds = kinds();
        let mut errors = Vec::new();
        for (key, value) in changes {
            let Some(kind) = kinds.iter().find(|(k, _)| k == key).map(|(_, kind)| *kind) else {
                errors.push(FieldError { key: key.clone(), message: "unknown setting".into() });
                continue;
            };
            if SECRETS.contains(&key.as_str()) && value.as_str() == Some("") {
                continue; // shown empty; empty keeps the secret
            }
            match to_toml(kind, value) {
                Ok(v) => set(&mut doc, key, v),
                Err(message) => errors.push(FieldError { key: key.clone(), message }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let text = doc.to_string();
        let config = Config::from_toml(&text)
            .map_err(|e| e.0.into_iter().map(|e| field_error(e, changes)).collect::<Vec<_>>())?;
        if let Some(path) = &self.path {
            write_atomic(path, &text).map_err(|e| {
                vec![FieldError { key: String::new(), message: format!("cannot save {}: {e}", path.display()) }]
            })?;
        }
        state.config = config.clone();
        state.text = text;
        drop(state);
        self.changes.send_replace(Arc::new(config.clone()));
        Ok(config)
    }
}

/// A config error as the Settings page shows it: next to its field, or (a whole-file error) next to the only
/// changed field, else at the top.
fn field_error(e: ConfigError, changes: &Map<String, Value>) -> FieldError {
    let key =
        if e.key.is_empty() && changes.len() == 1 { changes.keys().next().cloned().unwrap_or_default() } else { e.key };
    FieldError { key, message: e.message }
}

impl ConfigStore for ConfigFile {
    fn get(&self) -> Value {
        let cfg = self.current();
        let mut flat = Map::new();
        flatten("", &serde_json::to_value(&cfg).unwrap_or_default(), &mut flat);
        for (key, value) in flat.iter_mut() {
            let kind = kinds().into_iter().find(|(k, _)| k == key).map(|(_, k)| k);
            if SECRETS.contains(&key.as_str()) {
                *value = json!("");
            } else if kind == Some(Kind::List) {
                let words: Vec<String> =
                    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
                *value = json!(words.join(", "));
            } else if value.is_null() {
                *value = json!("");
            }
        }
        Value::Object(flat)
    }

    fn schema(&self) -> Value {
        let help = example_help();
        let driver_fields = crate::config::drivers::fields();
        let fields: Vec<Value> = kinds()
            .into_iter()
            .map(|(key, kind)| {
                if let Some(d) = driver_fields.iter().find(|d| d.key == key) {
                    return driver_field(d);
                }
                let leaf = key.rsplit('.').next().unwrap_or(&key);
                let (label, unit) = label_and_unit(leaf);
                let group = key.rsplit_once('.').map_or("general", |(g, _)| g);
                let mut f = json!({ "key": key, "label": label, "group": group });
                f["type"] = json!(match kind {
                    Kind::Bool => "bool",
                    Kind::Integer => "integer",
                    Kind::Number => "number",
                    Kind::Text | Kind::OptionalText | Kind::List => "string",
                });
                if let Some(options) = options(&key) {
                    f["type"] = json!("enum");
                    f["options"] = json!(options);
                }
                if let Some(u) = unit {
                    f["unit"] = json!(u);
                }
                let mut text = help
                    .iter()
                    .filter(|(k, _)| *k == key)
                    .map(|(_, h)| h.as_str())
                    .find(|h| !h.is_empty())
                    .unwrap_or("")
                    .to_string();
                if SECRETS.contains(&key.as_str()) {
                    text = format!("{text} Shown empty; leave it empty to keep the current one.").trim().to_string();
                }
                if kind == Kind::List {
                    text = format!("{text} Comma-separated.").trim().to_string();
                }
                if !text.is_empty() {
                    f["help"] = json!(text);
                }
                f
            })
            .collect();
        Value::Array(fields)
    }

    fn update(&self, values: Value) -> Result<(), Vec<FieldError>> {
        let Value::Object(changes) = values else {
            return Err(vec![FieldError { key: String::new(), message: "expected an object of settings".into() }]);
        };
        self.apply(&changes).map(|_| ())
    }
}

/// A driver's option as the Settings page shows it, all from the driver's table of settings.
fn driver_field(d: &crate::config::drivers::DriverField) -> Value {
    use dbe_core::options::OptionKind;
    let (section, _) = d.key.rsplit_once('.').unwrap_or(("general", ""));
    let (label, _) = label_and_unit(d.info.name);
    let mut f = json!({ "key": d.key, "label": label, "group": section, "driver": d.driver, "help": d.info.help });
    match d.info.kind {
        OptionKind::Bool => f["type"] = json!("bool"),
        OptionKind::Integer { min, max, unit } => {
            f["type"] = json!("integer");
            f["min"] = json!(min);
            f["max"] = json!(max);
            if !unit.is_empty() {
                f["unit"] = json!(unit);
            }
        }
        OptionKind::Choice(words) => {
            f["type"] = json!("enum");
            f["options"] = json!(words);
        }
    }
    f
}

fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// Every key of the config with its kind, in file order (from the default config's own serialisation).
fn kinds() -> Vec<(String, Kind)> {
    let mut flat = Map::new();
    flatten("", &serde_json::to_value(Config::default()).unwrap_or_default(), &mut flat);
    let mut out: Vec<(String, Kind)> = flat
        .into_iter()
        .map(|(k, v)| {
            let kind = match v {
                Value::Bool(_) => Kind::Bool,
                Value::Number(n) if n.is_f64() => Kind::Number,
                Value::Number(_) => Kind::Integer,
                Value::Array(_) => Kind::List,
                Value::Null => Kind::OptionalText,
                _ => Kind::Text,
            };
            (k, kind)
        })
        .collect();
    // serde_json's map is sorted; show the keys in the order the example file has them.
    let order: Vec<String> = example_help().into_iter().map(|(k, _)| k).collect();
    let section = |k: &str| k.rsplit_once('.').map_or(String::new(), |(s, _)| s.to_string());
    out.sort_by_key(|(k, _)| {
        let first_of_section = order.iter().position(|o| section(o) == section(k)).unwrap_or(order.len());
        (first_of_section, order.iter().position(|o| o == k).unwrap_or(order.len()))
    });
    out
}

fn options(key: &str) -> Option<Vec<&'static str>> {
    match key {
        "battery.type" => Some(dbe_core::battery::BATTERIES.iter().map(|b| b.name).collect()),
        "inverter.protocol" => Some(dbe_core::inverter::INVERTERS.iter().map(|i| i.name).collect()),
        "rs485.parity" => Some(vec!["none", "even", "odd"]),
        "contactors.mode" => Some(crate::contactors::MODES.to_vec()),
        _ => None,
    }
}

/// `max_charge_current_a` → ("Max charge current", "A").
fn label_and_unit(leaf: &str) -> (String, Option<&'static str>) {
    const UNITS: &[(&str, &str)] = &[
        ("_mv", "mV"),
        ("_ms", "ms"),
        ("_mb", "MiB"),
        ("_pct", "%"),
        ("_a", "A"),
        ("_w", "W"),
        ("_v", "V"),
        ("_c", "°C"),
        ("_s", "s"),
    ];
    let (stem, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| leaf.strip_suffix(suffix).map(|s| (s, Some(*unit))))
        .unwrap_or((leaf, None));
    let mut label = stem.replace('_', " ");
    if let Some(first) = label.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    (label, unit)
}

/// What the example file says of each key, in the file's order: the comment above it (a comment above a run
/// of keys, such as "Pack voltage limits", helps each of them), or for an optional key shown there only as a
/// commented-out line (`# client_id = "dbe-gateway"   (default: ...)`), that line as an example.
fn example_help() -> Vec<(String, String)> {
    let Ok(doc) = example().parse::<DocumentMut>() else { return Vec::new() };
    let mut out = Vec::new();
    collect_help("", doc.as_table(), &mut out);
    out
}

fn collect_help(prefix: &str, table: &toml_edit::Table, out: &mut Vec<(String, String)>) {
    let full = |key: &str| if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
    let mut pending = String::new();
    let commented_out = |decor: &str, out: &mut Vec<(String, String)>| {
        let mut prose = Vec::new();
        for line in decor.lines().map(str::trim).filter_map(|l| l.strip_prefix('#')).map(str::trim) {
            match line.split_once(" = ") {
                Some((key, example)) if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                    out.push((full(key), format!("For example {}", example.trim())));
                }
                _ => prose.push(line),
            }
        }
        prose.join(" ")
    };
    for (key, item) in table.iter() {
        let decor = table.key(key).and_then(|k| k.leaf_decor().prefix()).and_then(|p| p.as_str()).unwrap_or("");
        if let Some(t) = item.as_table() {
            let _ = commented_out(decor, out);
            collect_help(&full(key), t, out);
            continue;
        }
        let has_comment = decor.lines().any(|l| l.trim().starts_with('#'));
        if has_comment {
            pending = commented_out(decor, out);
        }
        if !pending.is_empty() {
            out.push((full(key), pending.clone()));
        } else {
            out.push((full(key), String::new()));
        }
    }
    // Commented-out keys after the last key of the table.
    let trailing = table.decor().suffix().and_then(|s| s.as_str()).unwrap_or("");
    let _ = commented_out(trailing, out);
}

fn to_toml(kind: Kind, v: &Value) -> Result<Option<toml_edit::Value>, String> {
    let wrong = |what: &str| format!("expected {what}, got {v}");
    Ok(Some(match kind {
        Kind::Bool => v.as_bool().ok_or_else(|| wrong("true or false"))?.into(),
        Kind::Integer => match v.as_i64() {
            Some(i) => i.into(),
            None => match v.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).into(),
                _ => return Err(wrong("a whole number")),
            },
        },
        Kind::Number => v.as_f64().ok_or_else(|| wrong("a number"))?.into(),
        Kind::Text => v.as_str().ok_or_else(|| wrong("text"))?.into(),
        Kind::OptionalText => match v.as_str().ok_or_else(|| wrong("text"))? {
            "" => return Ok(None),
            s => s.into(),
        },
        Kind::List => {
            let s = v.as_str().ok_or_else(|| wrong("comma-separated words"))?;
            let mut a = toml_edit::Array::new();
            for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                a.push(w);
            }
            toml_edit::Value::Array(a)
        }
    }))
}

/// Sets (or, for `None`, removes) a dotted key in the document, creating its table when the file lacks it.
fn set(doc: &mut DocumentMut, key: &str, value: Option<toml_edit::Value>) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().unwrap_or(key);
    let mut table = doc.as_table_mut();
    for p in parts {
        if !table.contains_table(p) {
            table.insert(p, toml_edit::Item::Table(toml_edit::Table::new()));
        }
        let Some(t) = table.get_mut(p).and_then(|i| i.as_table_mut()) else { return };
        table = t;
    }
    match value {
        Some(v) => {
            // Keep the key's comment and position when it is already in the file.
            if let Some(item) = table.get_mut(leaf).and_then(|i| i.as_value_mut()) {
                let decor = item.decor().clone();
                *item = v;
                *item.decor_mut() = decor;
            } else {
                table.insert(leaf, toml_edit::value(v));
            }
        }
        None => {
            table.remove(leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(text: &str) -> (tempdir::Dir, ConfigFile) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("dbe.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::from_toml(text).unwrap();
        let s = ConfigFile::open(&path, cfg).unwrap();
        (dir, s)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "dbe-config-store-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn changes(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_key_is_in_the_schema_with_a_type_and_the_example_help() {
        let s = ConfigFile::in_memory(Config::default());
        let schema = s.schema();
        let fields = schema.as_array().unwrap();
        let values = s.get();
        for f in fields {
            let key = f["key"].as_str().unwrap();
            assert!(values.get(key).is_some(), "{key} has no value");
        }
        let find = |k: &str| fields.iter().find(|f| f["key"] == k).unwrap().clone();
        assert_eq!(find("limits.max_charge_current_a")["type"], "number");
        assert_eq!(find("limits.max_charge_current_a")["unit"], "A");
        assert_eq!(find("limits.max_charge_power_w")["type"], "integer");
        assert_eq!(find("battery.type")["type"], "enum");
        assert_eq!(find("mqtt.enabled")["type"], "bool");
        assert!(find("limits.max_charge_current_a")["help"].as_str().unwrap().contains("Never more"));
        assert_eq!(fields[0]["key"], "autostart");
        assert_eq!(find("limits.max_charge_power_w")["group"], "limits");
        assert!(find("mqtt.client_id")["help"].as_str().unwrap().contains("dbe-gateway"));
        assert!(!find("mqtt.topic_prefix").get("help").is_some_and(|h| h.as_str().unwrap().contains("username")));
        let keys: Vec<&str> = fields.iter().map(|f| f["key"].as_str().unwrap()).collect();
        let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
        assert!(pos("battery.type") < pos("battery.port"), "example order: {keys:?}");
        assert!(
            pos("battery.port") < pos("inverter.protocol") && pos("limits.inverter_timeout_s") < pos("web.enabled")
        );
        assert!(fields.len() > 50, "{}", fields.len());
        assert_eq!(values["web.password_hash"], "");
    }

    #[test]
    fn every_drivers_options_are_in_the_schema_from_the_drivers_table() {
        let s = ConfigFile::in_memory(Config::default());
        let schema = s.schema();
        let fields = schema.as_array().unwrap();
        let values = s.get();
        for d in crate::config::drivers::fields() {
            let f = fields.iter().find(|f| f["key"] == d.key.as_str()).unwrap_or_else(|| panic!("{} missing", d.key));
            assert_eq!(f["help"], d.info.help, "{}", d.key);
            assert_eq!(f["driver"], d.driver);
            assert_eq!(values[&d.key].to_string(), d.default.to_string(), "{}", d.key);
        }
        let find = |k: &str| fields.iter().find(|f| f["key"] == k).unwrap().clone();
        let address = find("inverter.pylon_can.address");
        assert_eq!(
            (address["type"].as_str(), address["min"].as_i64(), address["max"].as_i64()),
            (Some("integer"), Some(0), Some(15))
        );
        assert_eq!(address["group"], "inverter.pylon_can");
        assert_eq!(find("inverter.pylon_can.byte_order")["options"], json!(["big-endian", "little-endian"]));
        assert_eq!(find("battery.nissan_leaf.interlock")["options"], json!(["auto", "required", "warn"]));
        assert_eq!(find("inverter.byd_modbus.primo_gen24")["type"], "bool");
    }

    #[test]
    fn a_drivers_option_is_changed_and_checked_through_the_api() {
        let (dir, s) = store("[inverter]\nprotocol = \"pylon-can\"\n");
        let e = s.apply(&changes(json!({"inverter.pylon_can.address": 16}))).unwrap_err();
        assert_eq!(e[0].key, "inverter.pylon_can.address", "{e:?}");
        assert!(e[0].message.contains("expected 0 to 15"), "{}", e[0].message);
        s.apply(&changes(json!({"inverter.pylon_can.address": 1, "inverter.pylon_can.byte_order": "little-endian"})))
            .unwrap();
        let saved = std::fs::read_to_string(dir.0.join("dbe.toml")).unwrap();
        assert!(saved.contains("[inverter.pylon_can]"), "{saved}");
        assert_eq!(s.get()["inverter.pylon_can.byte_order"], "little-endian");
        assert_eq!(s.get()["inverter.pylon_can.address"], 1);
    }

    #[test]
    fn an_old_flat_file_is_saved_in_the_new_layout() {
        let (dir, s) =
            store("# mine\n[inverter]\nprotocol = \"pylon-can\"\npylon_address = 1\npylon_little_endian = true\n");
        assert_eq!(s.get()["inverter.pylon_can.address"], 1);
        s.apply(&changes(json!({"inverter.pylon_can.offset_30k": true}))).unwrap();
        let saved = std::fs::read_to_string(dir.0.join("dbe.toml")).unwrap();
        assert!(!saved.contains("pylon_address"), "{saved}");
        let parsed = Config::parse(&saved);
        assert!(parsed.warnings.is_empty(), "{saved}");
        let cfg = parsed.config.unwrap();
        use dbe_core::inverter::pylon_can::{ByteOrder, PylonCanOptions};
        assert_eq!(
            cfg.inverter_config(),
            dbe_core::inverter::InverterConfig::PylonCan(PylonCanOptions {
                byte_order: ByteOrder::LittleEndian,
                offset_30k: true,
                address: 1
            })
        );
        assert!(saved.starts_with("# mine"));
    }

    #[test]
    fn a_good_change_is_saved_with_the_comments_kept_and_a_backup() {
        let text = "# my pack\n[limits]\n# be gentle\nmax_charge_current_a = 20.0\n";
        let (dir, s) = store(text);
        let mut rx = s.subscribe();
        s.apply(&changes(json!({"limits.max_charge_current_a": 15, "mqtt.enabled": false}))).unwrap();
        let saved = std::fs::read_to_string(dir.0.join("dbe.toml")).unwrap();
        assert!(saved.contains("# be gentle\nmax_charge_current_a = 15"), "{saved}");
        assert!(saved.contains("# my pack"));
        assert_eq!(std::fs::read_to_string(dir.0.join("dbe.toml.bak")).unwrap(), text);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().limits.max_charge_current_a, 15.0);
        assert_eq!(s.get()["limits.max_charge_current_a"], json!(15.0));
    }

    #[test]
    fn a_bad_change_names_its_key_and_saves_nothing() {
        let text = "[limits]\nmax_charge_current_a = 20.0\n";
        let (dir, s) = store(text);
        let rx = s.subscribe();
        let e = s
            .apply(&changes(json!({"limits.max_charge_current_a": 5000, "limits.max_discharge_current_a": 10})))
            .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "limits.max_charge_current_a");
        assert!(e[0].message.contains("5000"), "{}", e[0].message);
        for bad in [
            json!({"limits.max_charge_current_a": "lots"}),
            json!({"limits.max_charge_power_w": 1.5}),
            json!({"no.such_key": 1}),
            json!({"battery.type": "tesla-roadster"}),
            json!({"mqtt.enabled": "yes"}),
        ] {
            let e = s.apply(&changes(bad.clone())).unwrap_err();
            let key = bad.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(e[0].key, key, "{bad}: {e:?}");
        }
        assert_eq!(std::fs::read_to_string(dir.0.join("dbe.toml")).unwrap(), text);
        assert!(!dir.0.join("dbe.toml.bak").exists());
        assert!(!rx.has_changed().unwrap());
        assert_eq!(s.current().limits.max_charge_current_a, 20.0);
    }

    #[test]
    fn secrets_are_never_shown_and_empty_keeps_them() {
        let (_dir, s) = store("[mqtt]\npassword = \"hunter2\"\n");
        assert_eq!(s.get()["mqtt.password"], "");
        s.apply(&changes(json!({"mqtt.password": "", "mqtt.port": 1884}))).unwrap();
        assert_eq!(s.current().mqtt.password.as_deref(), Some("hunter2"));
        s.apply(&changes(json!({"mqtt.password": "new"}))).unwrap();
        assert_eq!(s.current().mqtt.password.as_deref(), Some("new"));
    }

    #[test]
    fn optional_and_list_values_round_trip_as_text() {
        let (_dir, s) = store("");
        s.apply(&changes(json!({"mqtt.client_id": "gw1", "mqtt.allowed_commands": "PAUSE, RESUME"}))).unwrap();
        assert_eq!(s.current().mqtt.client_id.as_deref(), Some("gw1"));
        assert_eq!(s.get()["mqtt.allowed_commands"], "PAUSE, RESUME");
        s.apply(&changes(json!({"mqtt.client_id": ""}))).unwrap();
        assert_eq!(s.current().mqtt.client_id, None);
        let e = s.apply(&changes(json!({"mqtt.allowed_commands": "PAUSE, SELF_DESTRUCT"}))).unwrap_err();
        assert_eq!(e[0].key, "mqtt.allowed_commands", "{e:?}");
    }
}
