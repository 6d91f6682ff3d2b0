//! The configuration file: one TOML file, validated whole before anything starts, written atomically.
//!
//! Every error names the key, the line and what was expected, and every error of a file is reported at once,
//! sorted by line, so a user fixes a file in one pass: the file is read into a TOML document, each table and
//! each key is checked on its own (so a wrong type or an unknown key does not hide the next one), and the
//! whole is then range-checked. Defaults are conservative: 30 A / 5 kW each way, a 10-90 % SOC window, and the
//! pack's own design voltages. [`example`] is the complete commented file `dbe config-example` prints; a test
//! checks that it parses to exactly [`Config::default`].
//!
//! Each driver's options sit in a table named after it (`[battery.nissan_leaf]`, `[inverter.pylon_can]`), read
//! through the table of settings the driver declares in the core ([`drivers`]); the flat `[inverter]` keys of
//! the previous release are still read, with a warning naming the new key ([`legacy`]).

pub mod drivers;
pub mod legacy;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use dbe_core::battery::{AnyBattery, Battery, BatteryConfig, BatteryKind};
use dbe_core::inverter::{InverterConfig, InverterKind};
use dbe_core::model::Chemistry;
use dbe_core::options::check_all;
use dbe_core::supervisor::{CellLimits, SocWindow, SupervisorConfig};
use dbe_core::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts, Watts};
use dbe_core::Duration;
use serde::{Deserialize, Serialize};

pub use drivers::DriverTables;

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Dotted key path, e.g. `limits.max_charge_current_a`; empty when the file itself does not parse.
    pub key: String,
    /// 1-based line of the key in the file, when it is there.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Every error found in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Start bridging at boot without waiting for a `Start` command.
    pub autostart: bool,
    pub battery: BatterySection,
    pub inverter: InverterSection,
    pub rs485: Rs485Section,
    pub limits: LimitsSection,
    pub web: WebSection,
    pub record: RecordSection,
    pub mqtt: crate::mqtt::MqttConfig,
    pub share: ShareSection,
    pub contactors: crate::contactors::ContactorsSection,
    pub state: StateSection,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// Where the safety state that must survive a restart is kept (`state.json`); empty: systemd's
    /// `$STATE_DIRECTORY`, else none.
    pub dir: String,
}

// Not `deny_unknown_fields` (serde cannot have it with `flatten`): the driver tables refuse every key that is
// neither the section's own nor a driver's table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatterySection {
    /// A battery driver from `dbe list`; a name that is not one is refused, never replaced by another.
    #[serde(
        rename = "type",
        serialize_with = "drivers::kind_name::serialize",
        deserialize_with = "drivers::kind_name::deserialize_battery"
    )]
    pub kind: BatteryKind,
    /// The CAN port of the pack: `socketcan:can0`, `slcan:/dev/ttyACM0?bitrate=500000`, `socketcand:HOST:PORT/can0`, `sim:`.
    pub port: String,
    /// Every driver's options, one table each (`[battery.nissan_leaf]`); those of `kind` are used.
    #[serde(flatten)]
    pub drivers: DriverTables<BatteryConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InverterSection {
    /// An inverter protocol from `dbe list`; a name that is not one is refused, never replaced by another.
    #[serde(
        serialize_with = "drivers::kind_name::serialize",
        deserialize_with = "drivers::kind_name::deserialize_inverter"
    )]
    pub protocol: InverterKind,
    /// The CAN port of the inverter (CAN protocols); may be the battery's port when both share one bus.
    pub port: String,
    /// Every protocol's options, one table each (`[inverter.pylon_can]`); those of `protocol` are used.
    #[serde(flatten)]
    pub drivers: DriverTables<InverterConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rs485Section {
    /// Serial device of the RS485 adapter (RS485 protocols only).
    pub port: String,
    pub baud: u32,
    /// `none`, `even` or `odd`.
    pub parity: String,
    /// Half-duplex turnaround before answering.
    pub turnaround_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_charge_current_a: f64,
    pub max_discharge_current_a: f64,
    pub max_charge_power_w: u32,
    pub max_discharge_power_w: u32,
    /// Real SOC reported as 0 %.
    pub soc_min_pct: f64,
    /// Real SOC reported as 100 %.
    pub soc_max_pct: f64,
    /// How far a run-time `SET_SOC_WINDOW` may move the window.
    pub soc_window_floor_pct: f64,
    pub soc_window_ceiling_pct: f64,
    /// Pack voltage limits; 0 = the pack's design value.
    pub max_pack_voltage_v: f64,
    pub min_pack_voltage_v: f64,
    /// Cell voltage limits; 0 = the default of the pack's chemistry (always inside the pack's design bounds). Set
    /// alone, the other one is still the chemistry's ([`LimitsSection::cell_limits`]).
    pub max_cell_voltage_mv: u32,
    pub min_cell_voltage_mv: u32,
    pub max_cell_deviation_mv: u32,
    pub max_temperature_c: f64,
    pub derate_temperature_c: f64,
    pub min_charge_temperature_c: f64,
    pub min_discharge_temperature_c: f64,
    /// No valid battery frame for this long → safe state.
    pub battery_stale_timeout_s: f64,
    /// Inverter silent this long → event and 0 A; 0 = the protocol's own timeout.
    pub inverter_timeout_s: f64,
    /// The constant-voltage target per cell the inverter charges to; 0 = 100 mV below the cell maximum.
    pub charge_target_cell_voltage_mv: u32,
    /// A lost inverter that keeps drawing current has the contactors opened after this long anyway.
    pub inverter_lost_open_after_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    pub enabled: bool,
    /// Address to serve the dashboard on; anything but loopback needs `password_hash`.
    pub bind: String,
    /// Argon2 hash from `dbe hash-password`.
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordSection {
    /// Record all CAN traffic to candump files in this folder ("" = off).
    pub dir: String,
    pub max_file_mb: u32,
    pub max_total_mb: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShareSection {
    /// Which CAN port the servers share: `battery` or `inverter`.
    pub port: String,
    /// socketcand server address (`HOST:PORT`, or a bare port for loopback); "" = off.
    pub socketcand_bind: String,
    /// GVRET server address for SavvyCAN (`HOST:PORT`, or a bare port for loopback); "" = off.
    pub gvret_bind: String,
    /// Whether clients may send frames onto the port. Off by default: the servers have no password, and a frame
    /// from the network on a pack's bus can command its contactors, so it needs both binds on loopback.
    pub allow_transmit: bool,
}

impl Default for ShareSection {
    fn default() -> Self {
        ShareSection {
            port: "battery".into(),
            socketcand_bind: String::new(),
            gvret_bind: String::new(),
            allow_transmit: false,
        }
    }
}

/// The address of a `[share]` bind: `HOST:PORT`, or a bare port meaning loopback (these servers have no
/// password, so the short form never exposes the bus).
pub fn share_bind_addr(bind: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = bind.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    bind.parse().map_err(|_| format!("'{bind}' is not an address like 127.0.0.1:29536 or a port number"))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            autostart: true,
            battery: BatterySection::default(),
            inverter: InverterSection::default(),
            rs485: Rs485Section::default(),
            limits: LimitsSection::default(),
            web: WebSection::default(),
            record: RecordSection::default(),
            mqtt: crate::mqtt::MqttConfig::default(),
            share: ShareSection::default(),
            state: StateSection::default(),
            contactors: Default::default(),
        }
    }
}

impl Default for BatterySection {
    fn default() -> Self {
        BatterySection {
            kind: BatteryKind::NissanLeaf,
            port: "socketcan:can0".into(),
            drivers: DriverTables::default(),
        }
    }
}

impl Default for InverterSection {
    fn default() -> Self {
        InverterSection {
            protocol: InverterKind::PylonCan,
            port: "socketcan:can1".into(),
            drivers: DriverTables::default(),
        }
    }
}

impl Default for Rs485Section {
    fn default() -> Self {
        Rs485Section { port: String::new(), baud: 9600, parity: "none".into(), turnaround_ms: 5 }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_charge_current_a: 30.0,
            max_discharge_current_a: 30.0,
            max_charge_power_w: 5000,
            max_discharge_power_w: 5000,
            soc_min_pct: 10.0,
            soc_max_pct: 90.0,
            soc_window_floor_pct: 0.0,
            soc_window_ceiling_pct: 100.0,
            max_pack_voltage_v: 0.0,
            min_pack_voltage_v: 0.0,
            max_cell_voltage_mv: 0,
            min_cell_voltage_mv: 0,
            max_cell_deviation_mv: 0,
            max_temperature_c: 50.0,
            derate_temperature_c: 45.0,
            min_charge_temperature_c: 0.0,
            min_discharge_temperature_c: -20.0,
            battery_stale_timeout_s: 10.0,
            inverter_timeout_s: 0.0,
            charge_target_cell_voltage_mv: 0,
            inverter_lost_open_after_s: 60.0,
        }
    }
}

/// The range a set (non-zero) cell limit must lie in: below 1 V no lithium chemistry has a limit (a value there is
/// a typo, such as volts written as millivolts), and above 5 V none is charged.
pub const CELL_LIMIT_RANGE_MV: std::ops::RangeInclusive<u32> = 1000..=5000;
/// The least gap between the cell max and min limits: the supervisor warns 100 mV inside each of them, and the
/// two warnings must not cross.
pub const MIN_CELL_WINDOW_MV: u32 = 200;

impl LimitsSection {
    /// The cell `(max, min)` in mV, an unset (0) one taken from `chemistry`'s defaults, so an LFP pack with only
    /// `min_cell_voltage_mv` set keeps LFP's 3.6 V maximum rather than NMC's 4.2 V.
    pub fn cell_window_mv(&self, chemistry: Chemistry) -> (u32, u32) {
        let base = CellLimits::for_chemistry(chemistry);
        let pick = |set: u32, default: MilliVolts| if set != 0 { set } else { u32::from(default.0) };
        (pick(self.max_cell_voltage_mv, base.max), pick(self.min_cell_voltage_mv, base.min))
    }

    /// The supervisor's cell thresholds for a pack of `chemistry` (the battery driver's design at start), or
    /// `None` when neither limit is set: the supervisor then follows the chemistry the pack's design states, also
    /// when a driver learns it at run time. Never panics, but is only meaningful on a validated config.
    pub fn cell_limits(&self, chemistry: Chemistry) -> Option<CellLimits> {
        if self.max_cell_voltage_mv == 0 && self.min_cell_voltage_mv == 0 {
            return None;
        }
        let (max, min) = self.cell_window_mv(chemistry);
        let (max, min) = (max.min(u32::from(u16::MAX)) as u16, min.min(u32::from(u16::MAX)) as u16);
        Some(CellLimits {
            critical_high: MilliVolts(max.saturating_add(50)),
            max: MilliVolts(max),
            warn_high: MilliVolts(max.saturating_sub(100)),
            warn_low: MilliVolts(min.saturating_add(100)),
            min: MilliVolts(min),
            critical_low: MilliVolts(min.saturating_sub(50)),
        })
    }
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection { enabled: true, bind: "127.0.0.1:8080".into(), password_hash: String::new() }
    }
}

impl Default for RecordSection {
    fn default() -> Self {
        RecordSection { dir: String::new(), max_file_mb: 16, max_total_mb: 256 }
    }
}

/// The hand-written part of the example: every section but the drivers' tables, which are written where the
/// `#@drivers SECTION` lines stand, from the drivers' own tables of settings.
const EXAMPLE_TEMPLATE: &str = include_str!("config_example.toml");

/// The complete commented default configuration (`dbe config-example`).
pub fn example() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let mut out = String::new();
        for line in EXAMPLE_TEMPLATE.split_inclusive('\n') {
            match line.trim_end().strip_prefix("#@drivers ") {
                Some(section) => {
                    out.push_str(drivers::example_tables(section).trim_start_matches('\n'));
                }
                None => out.push_str(line),
            }
        }
        out
    })
}

/// A config file read: the config or every error, and the warnings either way (old key names).
#[derive(Clone, Debug)]
pub struct Parsed {
    pub config: Result<Config, ConfigErrors>,
    pub warnings: Vec<ConfigError>,
}

/// One table or key of the file, checked on its own.
struct Entry {
    /// Where it is read (a renamed key's new place).
    path: Vec<String>,
    /// The dotted key as the file writes it, for messages.
    shown: String,
    line: Option<usize>,
    /// The value; `None` for a table (its keys are entries of their own).
    item: Option<toml_edit::Item>,
}

/// Every table and key under `table`, parents before their children.
fn entries(table: &dyn toml_edit::TableLike, prefix: &[String], src: &str, out: &mut Vec<Entry>) {
    for (key, item) in table.iter() {
        let mut path = prefix.to_vec();
        path.push(key.to_string());
        let line = table.get_key_value(key).and_then(|(k, _)| k.span()).map(|s| line_at(src, s.start));
        let shown = path.join(".");
        match item.as_table_like() {
            Some(t) => {
                out.push(Entry { path: path.clone(), shown, line, item: None });
                entries(t, &path, src, out);
            }
            None => out.push(Entry { path, shown, line, item: Some(item.clone()) }),
        }
    }
}

/// A document holding only `entries`, as text.
fn document_of<'e>(entries: impl IntoIterator<Item = &'e Entry>) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    'entries: for e in entries {
        let Some((last, parents)) = e.path.split_last() else { continue };
        let mut table = doc.as_table_mut();
        for p in parents {
            if !table.contains_key(p) {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                table.insert(p, toml_edit::Item::Table(t));
            }
            match table.get_mut(p).and_then(|i| i.as_table_mut()) {
                Some(t) => table = t,
                None => continue 'entries,
            }
        }
        match &e.item {
            Some(item) => {
                table.insert(last, item.clone());
            }
            None if !table.contains_key(last) => {
                table.insert(last, toml_edit::Item::Table(toml_edit::Table::new()));
            }
            None => {}
        }
    }
    doc.to_string()
}

fn deserialize(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| e.message().to_string())
}

/// Rewrites the renamed keys of `entries` to their new place, with a warning each (an error when the new key is
/// set too).
fn rename_legacy(entries: &mut Vec<Entry>, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigError>) {
    let mut dropped = Vec::new();
    for i in 0..entries.len() {
        let Some(renamed) = legacy::find(&entries[i].shown) else { continue };
        let (key, line) = (entries[i].shown.clone(), entries[i].line);
        warnings.push(ConfigError { key: key.clone(), line, message: renamed.warning() });
        if let Some(new) = entries.iter().find(|e| e.shown == renamed.new) {
            errors.push(ConfigError { key, line, message: renamed.conflict(new.line) });
            dropped.push(i);
            continue;
        }
        let e = &mut entries[i];
        e.path = renamed.new.split('.').map(str::to_string).collect();
        e.item = e.item.as_ref().map(|item| renamed.convert(item));
    }
    for i in dropped.into_iter().rev() {
        entries.remove(i);
    }
}

/// Collects range errors with the line of each key.
struct Checker<'a> {
    doc: Option<toml_edit::Document<&'a str>>,
    src: &'a str,
    errors: Vec<ConfigError>,
    /// Keys already refused while reading (their defaults stand in): checks that depend on them are skipped.
    failed: Vec<String>,
}

impl<'a> Checker<'a> {
    /// The line of `key`, or of the nearest enclosing table header when the key itself is not in the file.
    fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table: &toml_edit::Table = doc.as_table();
        let mut found = None;
        for part in key.split('.') {
            if let Some(span) = table.key(part).and_then(|k| k.span()) {
                found = Some(line_at(self.src, span.start));
            }
            match table.get(part).and_then(|i| i.as_table()) {
                Some(t) => table = t,
                None => break,
            }
        }
        found
    }

    fn fail(&mut self, key: &str, message: String) {
        let line = self.line_of(key);
        self.errors.push(ConfigError { key: key.to_string(), line, message });
    }

    fn range(&mut self, key: &str, value: f64, min: f64, max: f64, unit: &str) {
        if !(value.is_finite() && (min..=max).contains(&value)) {
            self.fail(key, format!("{value} is out of range, expected {min} to {max} {unit}"));
        }
    }

    /// Every driver's options against its own table of settings (a config built in code gets the file's bounds).
    fn drivers<D: drivers::Driver>(&mut self, tables: &DriverTables<D>) {
        for d in tables.iter() {
            if let Err((name, e)) = check_all(d.options()) {
                let key = format!("{}.{}.{name}", D::SECTION, d.table());
                let value = d.options().get(name).map(|v| v.to_string()).unwrap_or_default();
                let kind = dbe_core::options::infos(d.options()).find(|i| i.name == name).map(|i| i.kind);
                match kind {
                    Some(kind) => self.fail(&key, drivers::refusal(&value, kind, e)),
                    None => self.fail(&key, e.to_string()),
                }
            }
        }
    }

    fn one_of(&mut self, key: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.fail(key, format!("'{value}' is not one of: {}", allowed.join(", ")));
        }
    }
}

fn line_at(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl Config {
    /// Parses and validates a whole file.
    pub fn from_toml(src: &str) -> Result<Config, ConfigErrors> {
        Config::parse(src).config
    }

    /// Parses and validates a whole file, with every error sorted by line, and the warnings.
    pub fn parse(src: &str) -> Parsed {
        let doc = match toml_edit::Document::parse(src) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map(|s| line_at(src, s.start));
                let error = ConfigError { key: String::new(), line, message: e.message().to_string() };
                return Parsed { config: Err(ConfigErrors(vec![error])), warnings: Vec::new() };
            }
        };
        let mut all = Vec::new();
        entries(doc.as_table(), &[], src, &mut all);
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        rename_legacy(&mut all, &mut errors, &mut warnings);
        // Each table alone, then each key alone: whatever serde refuses is refused at its own key, and the
        // rest is read without it. A refused table's keys are not looked at.
        let mut refused_tables: Vec<Vec<String>> = Vec::new();
        let mut kept = Vec::new();
        for e in &all {
            if refused_tables.iter().any(|t| e.path.starts_with(t)) {
                continue;
            }
            match deserialize(&document_of([e])) {
                Ok(_) => kept.push(e),
                Err(message) => {
                    errors.push(ConfigError { key: e.shown.clone(), line: e.line, message });
                    if e.item.is_none() {
                        refused_tables.push(e.path.clone());
                    }
                }
            }
        }
        let failed = errors.iter().map(|e| e.key.clone()).collect();
        let config = match deserialize(&document_of(kept)) {
            Ok(cfg) => {
                let mut c = Checker { doc: Some(doc), src, errors: Vec::new(), failed };
                cfg.check(&mut c);
                errors.extend(c.errors);
                Some(cfg)
            }
            // Keys that read alone but not together: not expected, but never a silent default.
            Err(message) => {
                errors.push(ConfigError { key: String::new(), line: None, message });
                None
            }
        };
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        let config = match config {
            Some(cfg) if errors.is_empty() => Ok(cfg),
            _ => Err(ConfigErrors(errors)),
        };
        Parsed { config, warnings }
    }

    /// Validates a config that did not come from a file (e.g. from the web UI).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut c = Checker { doc: None, src: "", errors: Vec::new(), failed: Vec::new() };
        self.check(&mut c);
        if c.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(c.errors))
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_warnings(path).config
    }

    /// Reads and validates a file, keeping the warnings (old key names) for the caller to show or log.
    pub fn load_with_warnings(path: &Path) -> Parsed {
        match std::fs::read_to_string(path) {
            Ok(src) => Config::parse(&src),
            Err(e) => Parsed {
                config: Err(ConfigErrors(vec![ConfigError {
                    key: String::new(),
                    line: None,
                    message: format!("cannot read {}: {e}", path.display()),
                }])),
                warnings: Vec::new(),
            },
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn check(&self, c: &mut Checker<'_>) {
        let battery = self.battery.kind;
        if self.inverter.protocol == InverterKind::PylonRs485 && !c.failed.iter().any(|k| k == "battery.type") {
            if let Err(why) = pylontech_rs485_fits(battery) {
                // From a file: the battery type's line, or that it is the default; from the web UI or the demo
                // there is no file to point at.
                let in_file = c.doc.as_ref().map(|d| {
                    d.as_table().get("battery").and_then(|b| b.as_table_like()).is_some_and(|b| b.contains_key("type"))
                });
                let at = match (in_file, c.line_of("battery.type")) {
                    (Some(true), Some(l)) => format!(" (line {l})"),
                    (Some(_), _) => " (the default)".to_string(),
                    (None, _) => String::new(),
                };
                c.fail(
                    "inverter.protocol",
                    format!("pylontech-rs485 cannot carry this pack: battery.type = \"{battery}\"{at}: {why}"),
                );
            }
        }
        if self.inverter.protocol == InverterKind::SolaxCan && !c.failed.iter().any(|k| k == "battery.type") {
            if let InverterConfig::SolaxCan(o) = self.inverter.drivers.of(InverterKind::SolaxCan) {
                let design = AnyBattery::new(battery.into()).design();
                if let Err(why) = dbe_core::inverter::solax_can::check_pack(&o, &design) {
                    c.fail("inverter.solax_can.battery_type", format!("{why} (battery.type = \"{battery}\")"));
                }
            }
        }
        if self.inverter.protocol == InverterKind::FoxessCan && !c.failed.iter().any(|k| k == "battery.type") {
            if let InverterConfig::FoxessCan(o) = self.inverter.drivers.of(InverterKind::FoxessCan) {
                let design = AnyBattery::new(battery.into()).design();
                if let Err(why) = dbe_core::inverter::foxess_can::check_pack(&o, &design) {
                    c.fail("inverter.foxess_can.modules", format!("{why} (battery.type = \"{battery}\")"));
                }
            }
        }
        if let Err(e) = check_port(&self.battery.port) {
            c.fail("battery.port", e);
        }
        c.drivers(&self.battery.drivers);
        c.drivers(&self.inverter.drivers);
        let serial = self.inverter.protocol.info().transport == dbe_core::inverter::Transport::Serial;
        if serial {
            if self.rs485.port.is_empty() {
                c.fail(
                    "rs485.port",
                    format!("{} talks RS485: set the serial device (e.g. /dev/ttyUSB0)", self.inverter.protocol),
                );
            }
        } else if let Err(e) = check_port(&self.inverter.port) {
            c.fail("inverter.port", e);
        }
        c.one_of("rs485.parity", &self.rs485.parity, &["none", "even", "odd"]);
        if ![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&self.rs485.baud) {
            c.fail("rs485.baud", format!("{} is not a standard baud rate (1200 to 115200)", self.rs485.baud));
        }
        c.range("rs485.turnaround_ms", self.rs485.turnaround_ms as f64, 0.0, 1000.0, "ms");
        let l = &self.limits;
        c.range("limits.max_charge_current_a", l.max_charge_current_a, 0.0, 1000.0, "A");
        c.range("limits.max_discharge_current_a", l.max_discharge_current_a, 0.0, 1000.0, "A");
        c.range("limits.max_charge_power_w", l.max_charge_power_w as f64, 0.0, 500_000.0, "W");
        c.range("limits.max_discharge_power_w", l.max_discharge_power_w as f64, 0.0, 500_000.0, "W");
        for key in ["soc_min_pct", "soc_max_pct", "soc_window_floor_pct", "soc_window_ceiling_pct"] {
            let v = match key {
                "soc_min_pct" => l.soc_min_pct,
                "soc_max_pct" => l.soc_max_pct,
                "soc_window_floor_pct" => l.soc_window_floor_pct,
                _ => l.soc_window_ceiling_pct,
            };
            c.range(&format!("limits.{key}"), v, 0.0, 100.0, "%");
        }
        if l.soc_min_pct >= l.soc_max_pct {
            c.fail("limits.soc_max_pct", format!("{} must be above soc_min_pct ({})", l.soc_max_pct, l.soc_min_pct));
        }
        if l.soc_min_pct < l.soc_window_floor_pct {
            c.fail("limits.soc_min_pct", "must not be below soc_window_floor_pct".into());
        }
        if l.soc_max_pct > l.soc_window_ceiling_pct {
            c.fail("limits.soc_max_pct", "must not be above soc_window_ceiling_pct".into());
        }
        c.range("limits.max_pack_voltage_v", l.max_pack_voltage_v, 0.0, 1000.0, "V (0 = pack default)");
        c.range("limits.min_pack_voltage_v", l.min_pack_voltage_v, 0.0, 1000.0, "V (0 = pack default)");
        let mut cells_in_range = true;
        for (key, v) in [
            ("limits.max_cell_voltage_mv", l.max_cell_voltage_mv),
            ("limits.min_cell_voltage_mv", l.min_cell_voltage_mv),
        ] {
            if v != 0 && !CELL_LIMIT_RANGE_MV.contains(&v) {
                cells_in_range = false;
                c.fail(
                    key,
                    format!(
                        "{v} is out of range, expected 0 (the chemistry's default) or {} to {} mV",
                        CELL_LIMIT_RANGE_MV.start(),
                        CELL_LIMIT_RANGE_MV.end()
                    ),
                );
            }
        }
        if cells_in_range {
            let chemistry = AnyBattery::new(battery.into()).design().chemistry;
            let (max, min) = l.cell_window_mv(chemistry);
            if min + MIN_CELL_WINDOW_MV > max {
                let default = |set: u32| if set == 0 { format!(" ({chemistry:?} default)") } else { String::new() };
                let key = if l.min_cell_voltage_mv != 0 {
                    "limits.min_cell_voltage_mv"
                } else {
                    "limits.max_cell_voltage_mv"
                };
                c.fail(
                    key,
                    format!(
                        "max_cell_voltage_mv {max}{} must be at least {MIN_CELL_WINDOW_MV} mV above min_cell_voltage_mv {min}{}",
                        default(l.max_cell_voltage_mv),
                        default(l.min_cell_voltage_mv)
                    ),
                );
            }
        }
        c.range("limits.max_cell_deviation_mv", l.max_cell_deviation_mv as f64, 0.0, 2000.0, "mV (0 = pack default)");
        c.range("limits.max_temperature_c", l.max_temperature_c, 0.0, 80.0, "°C");
        c.range("limits.derate_temperature_c", l.derate_temperature_c, 0.0, 80.0, "°C");
        if l.derate_temperature_c > l.max_temperature_c {
            c.fail("limits.derate_temperature_c", "must not be above max_temperature_c".into());
        }
        c.range("limits.min_charge_temperature_c", l.min_charge_temperature_c, -40.0, 40.0, "°C");
        c.range("limits.min_discharge_temperature_c", l.min_discharge_temperature_c, -40.0, 40.0, "°C");
        c.range("limits.battery_stale_timeout_s", l.battery_stale_timeout_s, 1.0, 60.0, "s");
        c.range("limits.inverter_timeout_s", l.inverter_timeout_s, 0.0, 600.0, "s (0 = protocol default)");
        c.range(
            "limits.charge_target_cell_voltage_mv",
            l.charge_target_cell_voltage_mv as f64,
            0.0,
            5000.0,
            "mV (0 = 100 mV below the cell maximum)",
        );
        c.range("limits.inverter_lost_open_after_s", l.inverter_lost_open_after_s, 1.0, 600.0, "s");
        if self.web.bind.parse::<std::net::SocketAddr>().is_err() {
            c.fail("web.bind", format!("'{}' is not an address like 127.0.0.1:8080", self.web.bind));
        } else if self.web.enabled
            && !self.web.bind.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
            && self.web.password_hash.is_empty()
        {
            c.fail(
                "web.password_hash",
                "binding to a non-loopback address needs a password (dbe hash-password)".into(),
            );
        }
        if let Err(e) = self.mqtt.validate() {
            let key = e
                .to_string()
                .split_whitespace()
                .next()
                .filter(|k| k.starts_with("mqtt."))
                .unwrap_or("mqtt")
                .to_string();
            c.fail(&key, e.to_string());
        }
        c.one_of("share.port", &self.share.port, &["battery", "inverter"]);
        if serial && self.share.port == "inverter" {
            c.fail(
                "share.port",
                format!("{} talks RS485: only the battery's CAN port can be shared", self.inverter.protocol),
            );
        }
        for (key, bind) in
            [("share.socketcand_bind", &self.share.socketcand_bind), ("share.gvret_bind", &self.share.gvret_bind)]
        {
            if bind.is_empty() {
                continue;
            }
            match share_bind_addr(bind) {
                Err(e) => c.fail(key, e),
                // As the web server without a password: a server that lets anyone on the network put frames on
                // the pack's bus (which can command its contactors) is refused; reading off loopback is allowed.
                Ok(addr) if self.share.allow_transmit && !addr.ip().is_loopback() => c.fail(
                    key,
                    format!(
                        "'{bind}' is not loopback while share.allow_transmit is on: these servers have no password, \
                         so anyone on the network could send frames onto the {} bus (and command the pack's \
                         contactors); bind to loopback (a bare port) or turn allow_transmit off",
                        self.share.port
                    ),
                ),
                Ok(_) => {}
            }
        }
        if !self.share.socketcand_bind.is_empty() && self.share.socketcand_bind == self.share.gvret_bind {
            c.fail("share.gvret_bind", "must differ from socketcand_bind".into());
        }
        for (key, message) in self.contactors.problems(serial.then_some(self.rs485.port.as_str())) {
            c.fail(&key, message);
        }
        if let Some(mode) = dbe_core::contactor::ContactorMode::from_name(&self.contactors.mode) {
            if let Err(e) = self.battery_kind().check_contactor_mode(mode) {
                c.fail("contactors.mode", e.to_string());
            }
        }
        let check = self.contactors.precharge_check_v;
        if check > 0 {
            c.range("contactors.precharge_check_v", check as f64, 1.0, 100.0, "V");
            if self.contactors.mode != "relays" {
                c.fail("contactors.precharge_check_v", "needs mode = \"relays\" (DBE's own precharge sequence)".into());
            } else if !self.inverter_kind().reports_bus_voltage() {
                c.fail(
                    "contactors.precharge_check_v",
                    format!(
                        "the inverter protocol {} does not report its bus voltage (byd-can does): set 0, or the \
                         sequence would never close",
                        self.inverter_kind()
                    ),
                );
            }
        }
        c.range("record.max_file_mb", self.record.max_file_mb as f64, 1.0, 4096.0, "MiB");
        c.range("record.max_total_mb", self.record.max_total_mb as f64, 1.0, 1_048_576.0, "MiB");
    }

    pub fn battery_kind(&self) -> BatteryKind {
        self.battery.kind
    }

    pub fn inverter_kind(&self) -> InverterKind {
        self.inverter.protocol
    }

    /// The battery driver with the options the config sets for it.
    pub fn battery_config(&self) -> BatteryConfig {
        self.battery.drivers.of(self.battery.kind)
    }

    /// The inverter protocol with the options the config sets for it (a serial protocol's turnaround from
    /// `[rs485]`).
    pub fn inverter_config(&self) -> InverterConfig {
        let mut config = self.inverter.drivers.of(self.inverter.protocol);
        config.set_turnaround(Duration::from_millis(u64::from(self.rs485.turnaround_ms)));
        config
    }

    /// The chemistry of the configured pack, as its driver's design states it at start.
    pub fn chemistry(&self) -> Chemistry {
        AnyBattery::new(self.battery_kind().into()).design().chemistry
    }

    /// The supervisor's settings, in the core's units (call only on a validated config).
    pub fn supervisor(&self) -> SupervisorConfig {
        let l = &self.limits;
        let bp = |pct: f64| BasisPoints((pct * 100.0).round() as u16);
        let da = |a: f64| DeciAmps((a * 10.0).round() as i32);
        let dc = |c: f64| DeciCelsius((c * 10.0).round() as i16);
        let dv = |v: f64| (v > 0.0).then(|| DeciVolts((v * 10.0).round() as u16));
        let cell_limits = l.cell_limits(self.chemistry());
        SupervisorConfig {
            max_charge_current: da(l.max_charge_current_a),
            max_discharge_current: da(l.max_discharge_current_a),
            max_charge_power: Watts(l.max_charge_power_w as i32),
            max_discharge_power: Watts(l.max_discharge_power_w as i32),
            soc_window: SocWindow { min: bp(l.soc_min_pct), max: bp(l.soc_max_pct) },
            soc_window_bounds: SocWindow { min: bp(l.soc_window_floor_pct), max: bp(l.soc_window_ceiling_pct) },
            soc_taper: BasisPoints(500),
            max_pack_voltage: dv(l.max_pack_voltage_v),
            min_pack_voltage: dv(l.min_pack_voltage_v),
            cell_limits,
            max_cell_deviation: (l.max_cell_deviation_mv != 0).then_some(MilliVolts(l.max_cell_deviation_mv as u16)),
            max_temperature: dc(l.max_temperature_c),
            derate_temperature: dc(l.derate_temperature_c),
            min_charge_temperature: dc(l.min_charge_temperature_c),
            min_discharge_temperature: dc(l.min_discharge_temperature_c),
            stale_timeout: Duration::from_millis((l.battery_stale_timeout_s * 1000.0).round() as u64),
            inverter_timeout: (l.inverter_timeout_s > 0.0)
                .then(|| Duration::from_millis((l.inverter_timeout_s * 1000.0).round() as u64)),
            charge_target_cell_voltage: (l.charge_target_cell_voltage_mv != 0)
                .then_some(MilliVolts(l.charge_target_cell_voltage_mv as u16)),
            inverter_lost_open_ceiling: Duration::from_millis((l.inverter_lost_open_after_s * 1000.0).round() as u64),
            ..SupervisorConfig::default()
        }
    }
}

/// Whether Pylontech RS485, a protocol for 48 V stacks, can tell the truth about `battery`'s pack (the core's
/// rule, `InverterKind::check_pack`: its 16-bit millivolts end at 65.5 V). A pack that does not fit would only
/// ever be answered with charge and discharge disabled, so the config refuses it instead.
pub fn pylontech_rs485_fits(battery: BatteryKind) -> Result<(), String> {
    InverterKind::PylonRs485
        .check_pack(&AnyBattery::new(battery.into()).design())
        .map_err(|e| format!("{e} (65.535 V at most); choose pylon-can or byd-modbus"))
}

/// Checks a CAN port string as the daemon parses it when it opens the port (its options included: an slcan
/// bitrate no code sets is refused here, not only at start).
pub fn check_port(port: &str) -> Result<(), String> {
    dbe_link::port::PortSpec::parse(port).map(|_| ()).map_err(|e| e.to_string())
}

/// Writes `cfg` to `path` atomically: a temporary file in the same folder, fsync, the old file kept as
/// `<path>.bak`, then rename over. A crash at any point leaves either the old or the new file whole.
pub fn save_atomic(path: &Path, cfg: &Config) -> std::io::Result<()> {
    cfg.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    write_atomic(path, &cfg.to_toml())
}

/// Writes already-validated config text to `path` the same way as [`save_atomic`].
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp: PathBuf = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    if path.exists() {
        let bak = dir.join(format!("{}.bak", name.to_string_lossy()));
        std::fs::copy(path, &bak)?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::options::OptionValue;
    use drivers::Driver;

    fn errors(src: &str) -> Vec<ConfigError> {
        Config::from_toml(src).unwrap_err().0
    }

    #[test]
    fn the_precharge_check_needs_relays_and_a_protocol_that_reports_the_bus() {
        let relays = "[contactors]\nmode = \"relays\"\noutputs = \"sim:\"\nnegative = 0\npositive = 1\nprecharge = 2\n\
                      precharge_check_v = 20\n";
        let e = errors(&format!("[battery]\ntype = \"nissan-leaf\"\n[inverter]\nprotocol = \"pylon-can\"\n{relays}"));
        assert_eq!(e[0].key, "contactors.precharge_check_v");
        assert!(e[0].message.contains("does not report its bus voltage"), "{}", e[0].message);
        let ok = format!("[battery]\ntype = \"nissan-leaf\"\n[inverter]\nprotocol = \"byd-can\"\n{relays}");
        assert_eq!(Config::from_toml(&ok).unwrap().contactors.precharge_check_v, 20);
        let none = errors("[contactors]\nmode = \"none\"\nprecharge_check_v = 20\n");
        assert!(none[0].message.contains("needs mode"), "{}", none[0].message);
    }

    #[test]
    fn the_example_is_the_default() {
        assert_eq!(Config::from_toml(example()).unwrap(), Config::default());
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = errors("autostart = true\n[limits]\nmax_charge_curent_a = 10\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].message.contains("max_charge_curent_a"), "{}", e[0].message);
        assert!(e[0].message.contains("expected"), "{}", e[0].message);
    }

    #[test]
    fn wrong_types_are_named_with_their_line() {
        let e = errors("[limits]\nmax_charge_current_a = 10.0\nsoc_min_pct = \"ten\"\n");
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].message.contains("string") || e[0].message.contains("float"), "{}", e[0].message);
    }

    #[test]
    fn every_range_error_is_reported_with_key_and_line() {
        let src = "[battery]\ntype = \"tesla-roadster\"\nport = \"can0\"\n[limits]\nmax_charge_current_a = -5\nsoc_max_pct = 120\n[rs485]\nbaud = 12345\n";
        let e = errors(src);
        let find = |k: &str| e.iter().find(|x| x.key == k).unwrap_or_else(|| panic!("no error for {k}: {e:?}"));
        assert_eq!(find("battery.type").line, Some(2));
        assert!(find("battery.type").message.contains("nissan-leaf"));
        assert_eq!(find("battery.port").line, Some(3));
        assert_eq!(find("limits.max_charge_current_a").line, Some(5));
        assert!(find("limits.max_charge_current_a").message.contains("expected 0 to 1000 A"));
        assert_eq!(find("limits.soc_max_pct").line, Some(6));
        assert_eq!(find("rs485.baud").line, Some(8));
        assert!(e.iter().all(|x| x.to_string().starts_with("line ")));
    }

    #[test]
    fn exposing_the_web_ui_needs_a_password() {
        let e = errors("[web]\nbind = \"0.0.0.0:8080\"\n");
        assert_eq!(e[0].key, "web.password_hash");
        assert!(Config::from_toml("[web]\nbind = \"0.0.0.0:8080\"\npassword_hash = \"$argon2id$x\"\n").is_ok());
    }

    #[test]
    fn mqtt_settings_are_validated_with_the_rest() {
        let e = errors("[mqtt]\nenabled = true\nport = 1884\n");
        assert_eq!(e[0].key, "mqtt.host");
        assert_eq!(e[0].line, Some(1));
        let e = errors("[mqtt]\nallowed_commands = [\"REBOOT\"]\n");
        assert_eq!(e[0].line, Some(2));
    }

    #[test]
    fn rs485_protocols_need_a_serial_port() {
        let e = errors("[inverter]\nprotocol = \"byd-modbus\"\n");
        assert_eq!(e[0].key, "rs485.port");
        assert!(Config::from_toml(
            "[inverter]\nprotocol = \"byd-modbus\"\nport = \"\"\n[rs485]\nport = \"/dev/ttyUSB0\"\n"
        )
        .is_ok());
    }

    #[test]
    fn share_servers_are_validated_with_key_and_line() {
        let e =
            errors("[share]\nport = \"charger\"\nsocketcand_bind = \"localhost\"\ngvret_bind = \"1.2.3.4:99999\"\n");
        let find = |k: &str| e.iter().find(|x| x.key == k).unwrap_or_else(|| panic!("no error for {k}: {e:?}"));
        assert_eq!(find("share.port").line, Some(2));
        assert_eq!(find("share.socketcand_bind").line, Some(3));
        assert_eq!(find("share.gvret_bind").line, Some(4));
        let e = errors(
            "[inverter]\nprotocol = \"byd-modbus\"\n[rs485]\nport = \"/dev/ttyUSB0\"\n[share]\nport = \"inverter\"\n",
        );
        assert_eq!(e[0].key, "share.port");
        assert_eq!(e[0].line, Some(6));
        let ok = Config::from_toml("[share]\nsocketcand_bind = \"29536\"\ngvret_bind = \"0.0.0.0:2323\"\n").unwrap();
        assert_eq!(share_bind_addr(&ok.share.socketcand_bind).unwrap().to_string(), "127.0.0.1:29536");
    }

    #[test]
    fn the_tesla_options_are_read_from_their_table() {
        use dbe_core::battery::tesla::{TeslaChemistry, TeslaModel3Options};
        let cfg = Config::from_toml(
            "[battery]\ntype = \"tesla-model3\"\n[battery.tesla_model3]\nchemistry = \"lfp\"\ndigital_hvil = true\n\
             [contactors]\nmode = \"can\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.battery_config(),
            BatteryConfig::TeslaModel3(TeslaModel3Options { chemistry: TeslaChemistry::Lfp, digital_hvil: true })
        );
        let e = errors("[battery]\ntype = \"tesla-model3\"\n[battery.tesla_model3]\nchemistry = \"nmc\"\n");
        assert!(e.iter().any(|e| e.key == "battery.tesla_model3.chemistry"), "{e:?}");
        // Its contactors are CAN-controlled: the default `relays` is refused with what it supports.
        let e = errors("[battery]\ntype = \"tesla-model3\"\n");
        assert!(e.iter().any(|e| e.key == "contactors.mode" && e.message.contains("supports: can")), "{e:?}");
    }

    #[test]
    fn the_leaf_interlock_policy_is_one_of_three_words() {
        use dbe_core::battery::nissan_leaf::{InterlockPolicy, NissanLeafOptions};
        let leaf = |cfg: &Config| match cfg.battery_config() {
            BatteryConfig::NissanLeaf(NissanLeafOptions { interlock }) => interlock,
            other => panic!("not the LEAF: {other:?}"),
        };
        assert_eq!(leaf(&Config::default()), InterlockPolicy::Auto);
        let ok = Config::from_toml("[battery.nissan_leaf]\ninterlock = \"warn\"\n").unwrap();
        assert_eq!(leaf(&ok), InterlockPolicy::WarnOnly);
        let e = errors("[battery]\ntype = \"nissan-leaf\"\n[battery.nissan_leaf]\ninterlock = \"off\"\n");
        assert_eq!(e[0].key, "battery.nissan_leaf.interlock");
        assert_eq!(e[0].line, Some(4));
        assert!(e[0].message.contains("auto, required, warn"), "{}", e[0].message);
    }

    #[test]
    fn unset_cell_limits_come_from_the_packs_chemistry() {
        let only_min = LimitsSection { min_cell_voltage_mv: 3000, ..LimitsSection::default() };
        // An LFP pack with only the minimum set keeps LFP's 3.6 V maximum, not NMC's 4.2 V.
        let lfp = only_min.cell_limits(Chemistry::Lfp).unwrap();
        assert_eq!((lfp.max, lfp.min), (MilliVolts(3600), MilliVolts(3000)));
        assert_eq!(
            (lfp.critical_high, lfp.warn_high, lfp.warn_low),
            (MilliVolts(3650), MilliVolts(3500), MilliVolts(3100))
        );
        let nmc = only_min.cell_limits(Chemistry::Nmc).unwrap();
        assert_eq!((nmc.max, nmc.min), (MilliVolts(4200), MilliVolts(3000)));
        let only_max = LimitsSection { max_cell_voltage_mv: 3500, ..LimitsSection::default() };
        assert_eq!(only_max.cell_limits(Chemistry::Lfp).unwrap().min, MilliVolts(2800));
        // Neither set: the supervisor follows the design's chemistry itself (also when it changes at run time).
        assert_eq!(LimitsSection::default().cell_limits(Chemistry::Lfp), None);
        // The LEAF is NMC: the daemon's settings use that.
        let cfg = Config::from_toml("[limits]\nmax_cell_voltage_mv = 4100\n").unwrap();
        let cl = cfg.supervisor().cell_limits.unwrap();
        assert_eq!((cl.max, cl.min, cl.critical_low), (MilliVolts(4100), MilliVolts(3000), MilliVolts(2950)));
    }

    #[test]
    fn cell_limits_out_of_range_or_too_close_are_config_errors() {
        // Below 1 V is a typo (volts written as millivolts), and `max - 100` used to underflow on it.
        for v in [1, 99, 150, 999, 5001] {
            let e = errors(&format!("[limits]\nmax_cell_voltage_mv = {v}\n"));
            assert_eq!((e[0].key.as_str(), e[0].line), ("limits.max_cell_voltage_mv", Some(2)), "{v}: {e:?}");
            assert!(e[0].message.contains("1000 to 5000 mV"), "{}", e[0].message);
            let e = errors(&format!("[limits]\n\nmin_cell_voltage_mv = {v}\n"));
            assert_eq!((e[0].key.as_str(), e[0].line), ("limits.min_cell_voltage_mv", Some(3)), "{v}: {e:?}");
        }
        // max >= min + 200, an unset one taken from the chemistry (NMC for the LEAF: 3000-4200).
        let e = errors("[limits]\nmin_cell_voltage_mv = 4100\n");
        assert_eq!((e[0].key.as_str(), e[0].line), ("limits.min_cell_voltage_mv", Some(2)), "{e:?}");
        assert!(e[0].message.contains("4200 (Nmc default)"), "{}", e[0].message);
        let e = errors("[limits]\nmax_cell_voltage_mv = 3100\n");
        assert_eq!((e[0].key.as_str(), e[0].line), ("limits.max_cell_voltage_mv", Some(2)), "{e:?}");
        let e = errors("[limits]\nmax_cell_voltage_mv = 3700\nmin_cell_voltage_mv = 3600\n");
        assert_eq!((e[0].key.as_str(), e[0].line), ("limits.min_cell_voltage_mv", Some(3)), "{e:?}");
        assert!(Config::from_toml("[limits]\nmax_cell_voltage_mv = 3800\nmin_cell_voltage_mv = 3600\n").is_ok());
        assert!(Config::from_toml("[limits]\nmin_cell_voltage_mv = 4000\n").is_ok());
        // A config from the web UI gets the same checks.
        let mut cfg = Config::default();
        cfg.limits.max_cell_voltage_mv = 50;
        assert_eq!(cfg.validate().unwrap_err().0[0].key, "limits.max_cell_voltage_mv");
    }

    #[test]
    fn pylontech_rs485_is_refused_for_a_pack_above_its_16_bit_millivolts() {
        let src = "[battery]\ntype = \"nissan-leaf\"\nport = \"sim:\"\n[inverter]\nprotocol = \"pylontech-rs485\"\n\
                   [rs485]\nport = \"/dev/ttyUSB0\"\n";
        let e = errors(src);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), ("inverter.protocol", Some(5)));
        let m = e[0].to_string();
        for part in ["inverter.protocol", "battery.type = \"nissan-leaf\" (line 2)", "405.5 V", "65.535 V"] {
            assert!(m.contains(part), "{part} not in {m}");
        }
        // The battery type left at its default is still named.
        for src in [
            "[inverter]\nprotocol = \"pylontech-rs485\"\n[rs485]\nport = \"sim:\"\n",
            "[battery]\nport = \"sim:\"\n[inverter]\nprotocol = \"pylontech-rs485\"\n[rs485]\nport = \"sim:\"\n",
        ] {
            let e = errors(src);
            assert!(e[0].message.contains("battery.type = \"nissan-leaf\" (the default):"), "{}", e[0].message);
        }
        let mut cfg = Config::default();
        cfg.inverter.protocol = InverterKind::PylonRs485;
        cfg.rs485.port = "sim:".into();
        let e = cfg.validate().unwrap_err().0;
        assert_eq!(e[0].key, "inverter.protocol");
        assert!(
            e[0].message.contains("battery.type = \"nissan-leaf\": pylontech-rs485 carries pack voltages only up to"),
            "{}",
            e[0].message
        );
        assert!(pylontech_rs485_fits(BatteryKind::NissanLeaf).is_err());
        // The other RS485 protocol carries the LEAF.
        assert!(Config::from_toml("[inverter]\nprotocol = \"byd-modbus\"\n[rs485]\nport = \"sim:\"\n").is_ok());
    }

    #[test]
    fn solax_battery_type_must_fit_the_pack() {
        // The defaults (type 131, 7 modules: 313.6..408.8 V) carry a LEAF.
        assert!(Config::from_toml("[inverter]\nprotocol = \"solax-can\"\n").is_ok());
        // 8 modules start at 358.4 V, above the LEAF's nominal voltage; type 81 has no published range.
        for (table, want) in [("modules = 8", "accepts 358.4 V..467.2 V"), ("battery_type = 81", "no published")] {
            let e = errors(&format!("[inverter]\nprotocol = \"solax-can\"\n[inverter.solax_can]\n{table}\n"));
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].key, "inverter.solax_can.battery_type");
            assert!(e[0].message.contains(want) && e[0].message.contains("nissan-leaf"), "{}", e[0].message);
        }
        // The options of a protocol not chosen are not checked against the pack.
        assert!(Config::from_toml("[inverter.solax_can]\nbattery_type = 81\n").is_ok());
        // BYD CAN's Deye workaround is reachable and off by default.
        let deye = |cfg: &Config| match cfg.inverter.drivers.of(InverterKind::BydCan) {
            InverterConfig::BydCan(o) => o.dangerous_deye_soc_workaround,
            other => panic!("{other:?}"),
        };
        assert!(!deye(&Config::default()));
        assert!(deye(&Config::from_toml("[inverter.byd_can]\ndangerous_deye_soc_workaround = true\n").unwrap()));
    }

    #[test]
    fn foxess_module_count_must_fit_the_pack() {
        // The default 8 modules carry a LEAF (405.5 V / 8 = 50.7 V per module).
        assert!(Config::from_toml("[inverter]\nprotocol = \"foxess-can\"\n").is_ok());
        let e = errors("[inverter]\nprotocol = \"foxess-can\"\n[inverter.foxess_can]\nmodules = 6\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "inverter.foxess_can.modules");
        assert!(
            e[0].message.contains("at least 7 modules") && e[0].message.contains("nissan-leaf"),
            "{}",
            e[0].message
        );
        // Out of the option's own range.
        assert!(!errors("[inverter]\nprotocol = \"foxess-can\"\n[inverter.foxess_can]\nmodules = 9\n").is_empty());
    }

    #[test]
    fn sharing_with_transmit_needs_loopback() {
        for key in ["socketcand_bind", "gvret_bind"] {
            for bind in ["0.0.0.0:2323", "192.168.1.5:2323", "[::]:2323"] {
                let e = errors(&format!("[share]\nallow_transmit = true\n{key} = \"{bind}\"\n"));
                assert_eq!(e.len(), 1, "{e:?}");
                assert_eq!((e[0].key.clone(), e[0].line), (format!("share.{key}"), Some(3)), "{bind}");
                assert!(e[0].message.contains("allow_transmit"), "{}", e[0].message);
            }
            // Reading off loopback stays allowed; transmitting on loopback too.
            assert!(Config::from_toml(&format!("[share]\n{key} = \"0.0.0.0:2323\"\n")).is_ok());
            for bind in ["2323", "127.0.0.1:2323", "[::1]:2323"] {
                assert!(Config::from_toml(&format!("[share]\nallow_transmit = true\n{key} = \"{bind}\"\n")).is_ok());
            }
        }
        let mut cfg = Config::default();
        cfg.share.allow_transmit = true;
        cfg.share.gvret_bind = "0.0.0.0:23".into();
        assert_eq!(cfg.validate().unwrap_err().0[0].key, "share.gvret_bind");
    }

    #[test]
    fn protocol_options_documented_and_reachable() {
        let byd = |cfg: &Config| match cfg.inverter.drivers.of(InverterKind::BydModbus) {
            InverterConfig::BydModbus(o) => o.cold_temperature_workaround,
            other => panic!("{other:?}"),
        };
        let cfg = Config::from_toml("[inverter.byd_modbus]\ncold_temperature_workaround = true\n").unwrap();
        assert!(byd(&cfg));
        assert!(!byd(&Config::default()));
        // The 30k offset's text says what it offsets: the currents, not the temperatures.
        let offset = drivers::fields().into_iter().find(|f| f.key == "inverter.pylon_can.offset_30k").unwrap();
        assert!(offset.info.help.contains("0x4220 max charge/discharge currents"));
        assert!(!example().contains("currents and temperatures"));
    }

    /// A valid value other than the default, for each kind of setting.
    fn other_value(kind: dbe_core::options::OptionKind, default: OptionValue<'static>) -> toml_edit::Value {
        use dbe_core::options::OptionKind;
        match (kind, default) {
            (OptionKind::Bool, OptionValue::Bool(b)) => (!b).into(),
            (OptionKind::Integer { min, max, .. }, OptionValue::Integer(i)) => {
                (if i == max { min } else { max }).into()
            }
            (OptionKind::Choice(words), OptionValue::Word(w)) => {
                (*words.iter().find(|x| **x != w).expect("a choice of one word")).into()
            }
            other => panic!("default of another kind: {other:?}"),
        }
    }

    #[test]
    fn every_drivers_options_round_trip_through_the_example() {
        let fields = drivers::fields();
        // Every registered driver with options has its table in the example, every option its key.
        for f in &fields {
            let (table, key) = f.key.rsplit_once('.').unwrap();
            assert!(example().contains(&format!("[{table}]")), "{table} not in the example");
            assert!(example().contains(&format!("\n{key} = {}", f.default)), "{} not in the example", f.key);
        }
        assert!(fields.iter().any(|f| f.key == "battery.nissan_leaf.interlock"));
        assert!(fields.iter().any(|f| f.key == "inverter.byd_modbus.slave"));
        // Each option set to another value in the example reaches the driver's struct, and survives a save.
        for f in &fields {
            let mut doc: toml_edit::DocumentMut = example().parse().unwrap();
            let path: Vec<&str> = f.key.split('.').collect();
            let value = other_value(f.info.kind, f.default);
            doc[path[0]][path[1]][path[2]] = toml_edit::value(value.clone());
            let cfg = Config::from_toml(&doc.to_string()).unwrap_or_else(|e| panic!("{}: {e}", f.key));
            let got = match path[0] {
                "battery" => cfg.battery.drivers.iter().find(|d| d.table() == path[1]).unwrap().options().get(path[2]),
                _ => cfg.inverter.drivers.iter().find(|d| d.table() == path[1]).unwrap().options().get(path[2]),
            };
            assert_ne!(got, Some(f.default), "{}", f.key);
            assert_eq!(got.map(|v| v.to_string()), Some(value.to_string().trim().to_string()), "{}", f.key);
            assert_eq!(Config::from_toml(&cfg.to_toml()).unwrap(), cfg, "{} lost in a save", f.key);
        }
    }

    #[test]
    fn a_drivers_option_out_of_bounds_is_an_error_at_its_key_and_line() {
        let e = errors(
            "[inverter]\nprotocol = \"pylon-can\"\n[inverter.pylon_can]\naddress = 16\nbyte_order = \"middle\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), ("inverter.pylon_can.address", Some(4)));
        assert!(e[0].message.contains("16 is out of range, expected 0 to 15"), "{}", e[0].message);
        assert_eq!((e[1].key.as_str(), e[1].line), ("inverter.pylon_can.byte_order", Some(5)));
        assert!(e[1].message.contains("big-endian, little-endian"), "{}", e[1].message);
        let e = errors("[inverter.byd_modbus]\nslave = 2.5\nprimo_gen24 = \"yes\"\nbaud = 9600\n");
        let keys: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            [
                ("inverter.byd_modbus.slave", Some(2)),
                ("inverter.byd_modbus.primo_gen24", Some(3)),
                ("inverter.byd_modbus.baud", Some(4))
            ]
        );
        assert!(e[0].message.contains("not a whole number"), "{}", e[0].message);
        assert!(
            e[2].message.contains("unknown option `baud` of byd-modbus, expected one of: slave"),
            "{}",
            e[2].message
        );
        // A table for a driver that does not exist: refused at its header, its keys not looked at.
        let e = errors("[battery]\ntype = \"nissan-leaf\"\n\n[battery.renault_zoe]\nx = 1\ny = 2\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), ("battery.renault_zoe", Some(4)));
        assert!(e[0].message.contains("nissan_leaf"), "{}", e[0].message);
        // Built in code (the web UI, the demo), the same bounds apply.
        let mut cfg = Config::default();
        if let InverterConfig::PylonCan(o) = cfg.inverter.drivers.of_mut(InverterKind::PylonCan) {
            o.address = 200;
        }
        assert_eq!(cfg.validate().unwrap_err().0[0].key, "inverter.pylon_can.address");
    }

    #[test]
    fn unknown_battery_and_protocol_names_are_errors_never_a_fall_back() {
        let e = errors("[battery]\ntype = \"tesla-roadster\"\n[inverter]\nprotocol = \"sma-can\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), ("battery.type", Some(2)));
        assert!(e[0].message.contains("'tesla-roadster' is not a battery driver, expected one of: nissan-leaf"));
        assert_eq!((e[1].key.as_str(), e[1].line), ("inverter.protocol", Some(4)));
        assert!(e[1].message.contains("pylon-can, pylontech-rs485, byd-modbus"), "{}", e[1].message);
        // Not "pylontech-rs485 cannot carry the LEAF" for a battery type that was refused anyway.
        let e =
            errors("[battery]\ntype = \"zoe\"\n[inverter]\nprotocol = \"pylontech-rs485\"\n[rs485]\nport = \"sim:\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "battery.type");
    }

    #[test]
    fn every_error_of_a_file_is_reported_in_one_pass_sorted_by_line() {
        let src = "[limits]\n\
                   max_charge_current_a = 5000\n\
                   soc_min_pct = \"ten\"\n\
                   [battery]\n\
                   port = \"slcan:/dev/ttyACM0?bitrate=12345\"\n\
                   colour = \"blue\"\n\
                   [inverter]\n\
                   port = \"socketcan:can1?fast\"\n\
                   [mqtt]\n\
                   port = \"many\"\n";
        let e = errors(src);
        let got: Vec<(&str, Option<usize>)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            got,
            [
                ("limits.max_charge_current_a", Some(2)),
                ("limits.soc_min_pct", Some(3)),
                ("battery.port", Some(5)),
                ("battery.colour", Some(6)),
                ("inverter.port", Some(8)),
                ("mqtt.port", Some(10)),
            ],
            "{e:?}"
        );
        assert!(e[2].message.contains("slcan cannot set bitrate 12345"), "{}", e[2].message);
        assert!(e[3].message.contains("unknown field `colour`"), "{}", e[3].message);
        assert!(e[4].message.contains("unknown option 'fast'"), "{}", e[4].message);
        // The port options the daemon refuses at open are refused here, with the daemon's words.
        for bad in ["socketcand:host/can0", "slcan:/dev/x?bitrate=fast", "sim:a?x=1"] {
            let e = errors(&format!("[battery]\nport = \"{bad}\"\n"));
            assert_eq!((e[0].key.as_str(), e[0].line), ("battery.port", Some(2)), "{bad}");
            assert_eq!(e[0].message, dbe_link::port::PortSpec::parse(bad).unwrap_err().to_string());
        }
    }

    #[test]
    fn an_old_flat_file_still_loads_and_warns_naming_the_new_key() {
        let src = "[inverter]\n\
                   protocol = \"byd-modbus\"\n\
                   pylon_little_endian = true\n\
                   pylon_offset_30k = true\n\
                   pylon_address = 1\n\
                   pylontech_address = 3\n\
                   pylontech_modules = 4\n\
                   pylontech_cells_per_module = 15\n\
                   byd_slave = 7\n\
                   byd_primo_gen24 = true\n\
                   byd_cold_temperature_workaround = true\n\
                   [rs485]\n\
                   port = \"sim:\"\n";
        let parsed = Config::parse(src);
        let cfg = parsed.config.unwrap();
        assert_eq!(parsed.warnings.len(), legacy::RENAMED.len());
        for (i, (w, r)) in parsed.warnings.iter().zip(legacy::RENAMED).enumerate() {
            assert_eq!((w.key.as_str(), w.line), (r.old, Some(i + 3)));
            assert!(w.message.contains(r.new), "{w}");
            assert!(w.to_string().starts_with(&format!("line {}: {}: deprecated", i + 3, r.old)), "{w}");
        }
        use dbe_core::inverter::pylon_can::{ByteOrder, PylonCanOptions};
        assert_eq!(
            cfg.inverter.drivers.of(InverterKind::PylonCan),
            InverterConfig::PylonCan(PylonCanOptions {
                byte_order: ByteOrder::LittleEndian,
                offset_30k: true,
                address: 1
            })
        );
        let InverterConfig::PylonRs485(p) = cfg.inverter.drivers.of(InverterKind::PylonRs485) else { panic!() };
        assert_eq!((p.address, p.modules, p.cells_per_module), (3, 4, 15));
        let InverterConfig::BydModbus(b) = cfg.inverter_config() else { panic!() };
        assert_eq!((b.slave, b.primo_gen24, b.cold_temperature_workaround), (7, true, true));
        // Saved, it is in the new layout and reads back the same, without warnings.
        let saved = Config::parse(&cfg.to_toml());
        assert!(saved.warnings.is_empty(), "{:?}", saved.warnings);
        assert_eq!(saved.config.unwrap(), cfg);
        // An old key out of range is refused at its own name and line.
        let e = errors("[inverter]\n\npylon_address = 99\n");
        assert_eq!((e[0].key.as_str(), e[0].line), ("inverter.pylon_address", Some(3)));
        assert!(e[0].message.contains("expected 0 to 15"), "{}", e[0].message);
        // Old and new both set: which one was meant is not knowable.
        let e = errors("[inverter]\nbyd_slave = 7\n[inverter.byd_modbus]\nslave = 8\n");
        assert_eq!((e[0].key.as_str(), e[0].line), ("inverter.byd_slave", Some(2)));
        assert!(e[0].message.contains("inverter.byd_modbus.slave, which is also set (line 4)"), "{}", e[0].message);
    }

    #[test]
    fn every_renamed_key_points_at_a_drivers_option() {
        let fields = drivers::fields();
        for r in legacy::RENAMED {
            assert!(fields.iter().any(|f| f.key == r.new), "{} -> {} is no option", r.old, r.new);
        }
    }

    #[test]
    fn a_broken_file_is_an_error_with_a_line() {
        let e = errors("[limits\nx = 1\n");
        assert_eq!(e[0].line, Some(1));
    }

    #[test]
    fn supervisor_settings_are_converted_to_core_units() {
        let s = Config::default().supervisor();
        assert_eq!(s.max_charge_current, DeciAmps(300));
        assert_eq!(s.soc_window, SocWindow { min: BasisPoints(1000), max: BasisPoints(9000) });
        assert_eq!(s.stale_timeout, Duration::from_secs(10));
        assert_eq!(s.inverter_timeout, None);
        assert_eq!(s.max_pack_voltage, None);
    }

    #[test]
    fn saving_is_atomic_and_keeps_a_backup() {
        let dir = std::env::temp_dir().join(format!("dbe-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dbe.toml");
        std::fs::write(&path, example()).unwrap();
        let mut cfg = Config::default();
        cfg.limits.max_charge_current_a = 12.5;
        save_atomic(&path, &cfg).unwrap();
        assert_eq!(Config::load(&path).unwrap(), cfg);
        assert_eq!(std::fs::read_to_string(dir.join("dbe.toml.bak")).unwrap(), example());
        cfg.limits.soc_max_pct = 500.0;
        assert!(save_atomic(&path, &cfg).is_err());
        assert_eq!(Config::load(&path).unwrap().limits.max_charge_current_a, 12.5, "refused write left the file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
