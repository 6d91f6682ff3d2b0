//! The drivers' option tables in the config file: `[battery.nissan_leaf]`, `[inverter.pylon_can]`, ... one table
//! per registered driver, named after it (`-` written `_`), read into the driver's own options struct through the
//! table of settings it declares ([`dbe_core::options`]).
//!
//! Nothing here names a driver: the registries (`BATTERIES`, `INVERTERS`) and each driver's `FIELDS` are the
//! only lists, so a new driver's options are read, checked, written, shown in `dbe config-example` and on the
//! Settings page without an edit here.

use std::fmt;
use std::marker::PhantomData;

use dbe_core::battery::{BatteryConfig, BatteryKind, BATTERIES};
use dbe_core::inverter::{InverterConfig, InverterKind, INVERTERS};
use dbe_core::options::{infos, OptionError, OptionInfo, OptionKind, OptionValue, Options};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A registry's driver configs, as the config layer handles them (implemented for the battery and the inverter
/// side; neither impl lists a driver).
pub trait Driver: Copy + PartialEq + fmt::Debug + 'static {
    type Kind: Copy + PartialEq + fmt::Debug;
    /// The section the tables sit in.
    const SECTION: &'static str;
    /// The section's own keys, besides the driver tables.
    const KEYS: &'static [&'static str];
    /// Every registered driver with its default options, in registry order.
    fn all() -> Vec<Self>;
    fn default_for(kind: Self::Kind) -> Self;
    fn kind(&self) -> Self::Kind;
    /// The registry name (`nissan-leaf`).
    fn name(&self) -> &'static str;
    fn title(&self) -> &'static str;
    fn options(&self) -> &dyn Options;
    fn options_mut(&mut self) -> &mut dyn Options;

    /// The name of the driver's table in its section: the registry name with `_` for `-`.
    fn table(&self) -> String {
        table_name(self.name())
    }
}

/// `nissan-leaf` → `nissan_leaf`: TOML bare keys may hold `-`, but `_` matches every other key of the file.
pub fn table_name(driver: &str) -> String {
    driver.replace('-', "_")
}

impl Driver for BatteryConfig {
    type Kind = BatteryKind;
    const SECTION: &'static str = "battery";
    const KEYS: &'static [&'static str] = &["type", "port"];
    fn all() -> Vec<Self> {
        BATTERIES.iter().map(|b| BatteryConfig::default_for(b.kind)).collect()
    }
    fn default_for(kind: BatteryKind) -> Self {
        BatteryConfig::default_for(kind)
    }
    fn kind(&self) -> BatteryKind {
        BatteryConfig::kind(self)
    }
    fn name(&self) -> &'static str {
        BatteryConfig::kind(self).info().name
    }
    fn title(&self) -> &'static str {
        BatteryConfig::kind(self).info().title
    }
    fn options(&self) -> &dyn Options {
        BatteryConfig::options(self)
    }
    fn options_mut(&mut self) -> &mut dyn Options {
        BatteryConfig::options_mut(self)
    }
}

impl Driver for InverterConfig {
    type Kind = InverterKind;
    const SECTION: &'static str = "inverter";
    const KEYS: &'static [&'static str] = &["protocol", "port"];
    fn all() -> Vec<Self> {
        INVERTERS.iter().map(|i| InverterConfig::default_for(i.kind)).collect()
    }
    fn default_for(kind: InverterKind) -> Self {
        InverterConfig::default_for(kind)
    }
    fn kind(&self) -> InverterKind {
        InverterConfig::kind(self)
    }
    fn name(&self) -> &'static str {
        InverterConfig::kind(self).info().name
    }
    fn title(&self) -> &'static str {
        InverterConfig::kind(self).info().title
    }
    fn options(&self) -> &dyn Options {
        InverterConfig::options(self)
    }
    fn options_mut(&mut self) -> &mut dyn Options {
        InverterConfig::options_mut(self)
    }
}

/// The options of every driver of one registry: the file may set those of drivers it does not use (switching
/// `type` back keeps them), and only the chosen driver's are handed to the core.
#[derive(Clone, Debug, PartialEq)]
pub struct DriverTables<D: Driver>(Vec<D>);

impl<D: Driver> Default for DriverTables<D> {
    fn default() -> Self {
        DriverTables(D::all())
    }
}

impl<D: Driver> DriverTables<D> {
    /// The options of `kind` (its defaults if it were somehow missing).
    pub fn of(&self, kind: D::Kind) -> D {
        self.0.iter().find(|d| d.kind() == kind).copied().unwrap_or_else(|| D::default_for(kind))
    }

    /// The options of `kind`, to change in code.
    pub fn of_mut(&mut self, kind: D::Kind) -> &mut D {
        if let Some(i) = self.0.iter().position(|d| d.kind() == kind) {
            return &mut self.0[i];
        }
        self.0.push(D::default_for(kind));
        self.0.last_mut().expect("just pushed")
    }

    pub fn iter(&self) -> impl Iterator<Item = &D> {
        self.0.iter()
    }
}

/// One option of one driver, for the schema, the example and the checks.
#[derive(Clone, Debug)]
pub struct DriverField {
    /// `inverter.pylon_can.address`.
    pub key: String,
    /// `pylon-can`.
    pub driver: &'static str,
    pub info: OptionInfo,
    pub default: OptionValue<'static>,
}

/// Every option of every driver of both registries, in registry and table order.
pub fn fields() -> Vec<DriverField> {
    fn of<D: Driver>(out: &mut Vec<DriverField>) {
        for d in D::all() {
            for info in infos(d.options()) {
                let Some(default) = d.options().get(info.name) else { continue };
                let key = format!("{}.{}.{}", D::SECTION, d.table(), info.name);
                out.push(DriverField { key, driver: d.name(), info, default });
            }
        }
    }
    let mut out = Vec::new();
    of::<BatteryConfig>(&mut out);
    of::<InverterConfig>(&mut out);
    out
}

/// The bounds of a setting in words: `0 to 15`, `one of: auto, required, warn`.
pub fn bounds(kind: OptionKind) -> String {
    match kind {
        OptionKind::Bool => "true or false".into(),
        OptionKind::Integer { min, max, unit: "" } => format!("{min} to {max}"),
        OptionKind::Integer { min, max, unit } => format!("{min} to {max} {unit}"),
        OptionKind::Choice(words) => format!("one of: {}", words.join(", ")),
    }
}

/// The error for a value of another kind than `kind` (a float, a table, a list).
fn wrong_kind(kind: OptionKind) -> OptionError {
    match kind {
        OptionKind::Bool => OptionError::NotABool,
        OptionKind::Integer { .. } => OptionError::NotAnInteger,
        OptionKind::Choice(choices) => OptionError::NotAChoice { choices },
    }
}

/// The message for a refused value.
pub fn refusal(value: &dyn fmt::Display, kind: OptionKind, e: OptionError) -> String {
    match e {
        OptionError::Unknown => format!("{value}: no such option"),
        OptionError::OutOfRange { .. } => format!("{value} is out of range, expected {}", bounds(kind)),
        OptionError::NotAnInteger => format!("{value} is not a whole number, expected {}", bounds(kind)),
        OptionError::NotABool | OptionError::NotAChoice { .. } => format!("{value} is not {}", bounds(kind)),
    }
}

/// The commented TOML of `section`'s driver tables, for `dbe config-example`: each table with the driver's
/// title, each option with its help and bounds and its default value.
pub fn example_tables(section: &str) -> String {
    fn of<D: Driver>(out: &mut String) {
        for d in D::all() {
            if d.options().is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n# {}: used when {} = \"{}\".\n[{}.{}]\n",
                d.title(),
                D::KEYS[0],
                d.name(),
                D::SECTION,
                d.table()
            ));
            for info in infos(d.options()) {
                let Some(value) = d.options().get(info.name) else { continue };
                let text = format!("{} ({}).", info.help.trim_end_matches('.'), bounds(info.kind));
                for line in wrap(&text, 98) {
                    out.push_str(&format!("# {line}\n"));
                }
                out.push_str(&format!("{} = {value}\n", info.name));
            }
        }
    }
    let mut out = String::new();
    match section {
        "battery" => of::<BatteryConfig>(&mut out),
        "inverter" => of::<InverterConfig>(&mut out),
        _ => {}
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ---------- serde: the tables as TOML (and as JSON for the HTTP API) ----------

struct OptionsSer<'a>(&'a dyn Options);

impl Serialize for OptionsSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for info in infos(self.0) {
            match self.0.get(info.name) {
                Some(OptionValue::Bool(b)) => map.serialize_entry(info.name, &b)?,
                Some(OptionValue::Integer(i)) => map.serialize_entry(info.name, &i)?,
                Some(OptionValue::Word(w)) => map.serialize_entry(info.name, w)?,
                None => {}
            }
        }
        map.end()
    }
}

impl<D: Driver> Serialize for DriverTables<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for d in self.0.iter().filter(|d| !d.options().is_empty()) {
            map.serialize_entry(&d.table(), &OptionsSer(d.options()))?;
        }
        map.end()
    }
}

/// A value as written in the file, before it is checked against the setting's kind.
enum Scalar {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    /// A table, array or anything else: named for the message.
    Other(&'static str),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Integer(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(t) => write!(f, "\"{t}\""),
            Scalar::Other(what) => write!(f, "{what}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Integer(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Integer))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a table"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a list"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Scalar {
    fn as_value(&self) -> Option<OptionValue<'_>> {
        match self {
            Scalar::Bool(b) => Some(OptionValue::Bool(*b)),
            Scalar::Integer(i) => Some(OptionValue::Integer(*i)),
            Scalar::Text(t) => Some(OptionValue::Word(t)),
            Scalar::Float(_) | Scalar::Other(_) => None,
        }
    }
}

/// Reads one driver's table into its options.
struct OptionsSeed<'a, D: Driver>(&'a mut D);

impl<'de, D: Driver> DeserializeSeed<'de> for OptionsSeed<'_, D> {
    type Value = ();
    fn deserialize<De: Deserializer<'de>>(self, d: De) -> Result<(), De::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, D: Driver> Visitor<'de> for OptionsSeed<'_, D> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table of {} options", self.0.name())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let value: Scalar = map.next_value()?;
            let Some(info) = infos(self.0.options()).find(|i| i.name == key) else {
                let names: Vec<&str> = infos(self.0.options()).map(|i| i.name).collect();
                return Err(de::Error::custom(format!(
                    "unknown option `{key}` of {}, expected one of: {}",
                    self.0.name(),
                    names.join(", ")
                )));
            };
            let result = match value.as_value() {
                Some(v) => self.0.options_mut().set(&key, v),
                None => Err(wrong_kind(info.kind)),
            };
            if let Err(e) = result {
                return Err(de::Error::custom(refusal(&value, info.kind, e)));
            }
        }
        Ok(())
    }
}

impl<'de, D: Driver> Deserialize<'de> for DriverTables<D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        struct V<D>(PhantomData<D>);
        impl<'de, D: Driver> Visitor<'de> for V<D> {
            type Value = DriverTables<D>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the [{}] section", D::SECTION)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut tables = DriverTables::<D>::default();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(driver) = tables.0.iter_mut().find(|d| d.table() == key && !d.options().is_empty()) else {
                        let mut expected: Vec<String> = D::KEYS.iter().map(|k| k.to_string()).collect();
                        expected.extend(D::all().iter().filter(|d| !d.options().is_empty()).map(|d| d.table()));
                        return Err(de::Error::custom(format!(
                            "unknown field `{key}`, expected one of: {} (a driver's options are a table named after it)",
                            expected.join(", ")
                        )));
                    };
                    map.next_value_seed(OptionsSeed(driver))?;
                }
                Ok(tables)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `battery.type` / `inverter.protocol` as the registry's name: a name not in the registry is refused with the
/// names that are, never replaced by another driver.
pub mod kind_name {
    use super::*;

    /// The registry names of `D`.
    fn names<D: Driver>() -> String {
        D::all().iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
    }

    pub fn serialize<K: fmt::Display, S: Serializer>(kind: &K, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(kind)
    }

    pub fn deserialize_battery<'de, De: Deserializer<'de>>(d: De) -> Result<BatteryKind, De::Error> {
        let name = String::deserialize(d)?;
        BatteryKind::from_name(&name).ok_or_else(|| {
            de::Error::custom(format!(
                "'{name}' is not a battery driver, expected one of: {}",
                names::<BatteryConfig>()
            ))
        })
    }

    pub fn deserialize_inverter<'de, De: Deserializer<'de>>(d: De) -> Result<InverterKind, De::Error> {
        let name = String::deserialize(d)?;
        InverterKind::from_name(&name).ok_or_else(|| {
            de::Error::custom(format!(
                "'{name}' is not an inverter protocol, expected one of: {}",
                names::<InverterConfig>()
            ))
        })
    }
}
