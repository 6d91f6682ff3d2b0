//! Pack-specific values: what a driver decodes that has no place in the common model but that owners want to see
//! (a LEAF's GIDs and Hx, the hundred or so values of a Tesla's "More battery info" page, serial and part numbers).
//!
//! Each driver declares one table of [`ExtraDescriptor`]s — key, label, unit, Home Assistant device and state
//! class, decimals — and names the entries it sets with handles looked up in that table at compile time
//! ([`NumberId::of`], [`TextId::of`], [`FlagId::of`]: a key that is not in the table, or has another kind, does
//! not compile). The model holds one value slot per descriptor ([`Extras`]) and knows the table, so telemetry (the
//! web page's pack panel, MQTT `info`, Home Assistant discovery, `/metrics`) lists names, metadata and values
//! without knowing the driver. Setting a value is a bounds check and a store: no string is compared on the
//! per-frame path, and nothing is allocated (text is a [`ShortText`], a fixed buffer).
//!
//! Nothing here has safety meaning. A pack's requests, faults and warnings are typed in the model
//! ([`crate::model::BmsRequests`], [`crate::model::BmsFaults`], [`crate::model::BmsWarnings`]) and each has a
//! supervisor rule; an extra is for people only, and nothing in the core reads one back to decide anything. A value
//! not known yet has an empty slot, and every consumer leaves it out (never 0).
//!
//! Keys are stable snake_case names: the MQTT/JSON field name, the Home Assistant object id and the `/metrics`
//! label. Where Battery-Emulator publishes the same value on MQTT (`Software/src/devboard/mqtt/mqtt.cpp`,
//! `batterySensorConfigTemplate`: `insulation_resistance`, `leaf_hx`, `dc_dc_voltage`, ...) the key is its field
//! name, so dashboards and automations written for it keep working.
//!
//! Home Assistant's rules (sensor entity docs): `energy` goes only with the `total`/`total_increasing` state
//! classes (a stored amount is `energy_storage`); text has no unit, device class or state class. [`check_table`]
//! enforces them, and each driver's tests run it over its table.

use core::fmt;

use crate::model::Reading;
use crate::time::Instant;

/// How many pack-specific values one model carries: room for a Tesla's ~100 (Battery-Emulator's "More battery
/// info" page for the Model 3/Y) with a margin.
pub const MAX_EXTRAS: usize = 128;

/// The longest text value in bytes (serial numbers, part numbers, a VIN's 17 characters).
pub const TEXT_CAPACITY: usize = 23;

/// What kind of value an extra holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExtraKind {
    /// A fixed-point number: `raw / 10^decimals` in the descriptor's unit.
    Number,
    /// A short word or code (a generation, a serial number).
    Text,
    /// Yes or no.
    Flag,
}

/// Home Assistant's sensor device classes that pack values use (the names are Home Assistant's).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    /// A state of charge in %.
    Battery,
    Current,
    Distance,
    Duration,
    /// An energy total (only with the `total`/`total_increasing` state classes).
    Energy,
    /// Energy stored (a capacity, what is left).
    EnergyStorage,
    Power,
    Temperature,
    Voltage,
}

impl DeviceClass {
    pub const fn name(self) -> &'static str {
        match self {
            DeviceClass::Battery => "battery",
            DeviceClass::Current => "current",
            DeviceClass::Distance => "distance",
            DeviceClass::Duration => "duration",
            DeviceClass::Energy => "energy",
            DeviceClass::EnergyStorage => "energy_storage",
            DeviceClass::Power => "power",
            DeviceClass::Temperature => "temperature",
            DeviceClass::Voltage => "voltage",
        }
    }
}

/// Home Assistant's state classes: whether, and how, it keeps long-term statistics of a value.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum StateClass {
    Measurement,
    Total,
    TotalIncreasing,
}

impl StateClass {
    pub const fn name(self) -> &'static str {
        match self {
            StateClass::Measurement => "measurement",
            StateClass::Total => "total",
            StateClass::TotalIncreasing => "total_increasing",
        }
    }
}

/// What a pack-specific value is, for people and for Home Assistant. Built with the `const` constructors, e.g.
/// `ExtraDescriptor::number("leaf_hx", "Hx").decimals(2).unit("%").state_class(StateClass::Measurement)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExtraDescriptor {
    /// Stable snake_case key (see the module doc).
    pub key: &'static str,
    /// What the web page and Home Assistant show, e.g. "Insulation resistance".
    pub label: &'static str,
    pub kind: ExtraKind,
    /// Numbers: the value is `raw / 10^decimals`; also the precision to show it with.
    pub decimals: u8,
    pub unit: Option<&'static str>,
    pub device_class: Option<DeviceClass>,
    pub state_class: Option<StateClass>,
}

impl ExtraDescriptor {
    const fn new(key: &'static str, label: &'static str, kind: ExtraKind) -> Self {
        ExtraDescriptor { key, label, kind, decimals: 0, unit: None, device_class: None, state_class: None }
    }

    /// An integer without unit or class; add them with the builders below.
    pub const fn number(key: &'static str, label: &'static str) -> Self {
        Self::new(key, label, ExtraKind::Number)
    }

    pub const fn text(key: &'static str, label: &'static str) -> Self {
        Self::new(key, label, ExtraKind::Text)
    }

    pub const fn flag(key: &'static str, label: &'static str) -> Self {
        Self::new(key, label, ExtraKind::Flag)
    }

    pub const fn decimals(mut self, decimals: u8) -> Self {
        self.decimals = decimals;
        self
    }

    pub const fn unit(mut self, unit: &'static str) -> Self {
        self.unit = Some(unit);
        self
    }

    pub const fn device_class(mut self, class: DeviceClass) -> Self {
        self.device_class = Some(class);
        self
    }

    pub const fn state_class(mut self, class: StateClass) -> Self {
        self.state_class = Some(class);
        self
    }
}

/// Why a descriptor table cannot be published as it is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{len} extras, at most {MAX_EXTRAS} fit in the model")]
    TooMany { len: usize },
    #[error("extra key {0:?} is not snake_case (a-z, 0-9, _)")]
    BadKey(&'static str),
    #[error("extra key {0:?} appears twice")]
    DuplicateKey(&'static str),
    #[error("extra {0:?} has no label")]
    NoLabel(&'static str),
    #[error("extra {0:?} is not a number but has a unit, device class, state class or decimals")]
    NotANumber(&'static str),
    #[error("extra {0:?} has more than 6 decimals")]
    TooManyDecimals(&'static str),
    #[error("extra {0:?}: device class energy needs state class total or total_increasing (use energy_storage)")]
    EnergyAsMeasurement(&'static str),
}

/// Checks a driver's table against the rules in the module doc (each driver's tests call it).
pub fn check_table(table: &[ExtraDescriptor]) -> Result<(), TableError> {
    if table.len() > MAX_EXTRAS {
        return Err(TableError::TooMany { len: table.len() });
    }
    for (i, d) in table.iter().enumerate() {
        let snake = d.key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if d.key.is_empty() || !snake || d.key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(TableError::BadKey(d.key));
        }
        if table[..i].iter().any(|e| e.key == d.key) {
            return Err(TableError::DuplicateKey(d.key));
        }
        if d.label.trim().is_empty() {
            return Err(TableError::NoLabel(d.key));
        }
        let has_number_parts =
            d.unit.is_some() || d.device_class.is_some() || d.state_class.is_some() || d.decimals != 0;
        if d.kind != ExtraKind::Number && has_number_parts {
            return Err(TableError::NotANumber(d.key));
        }
        if d.decimals > 6 {
            return Err(TableError::TooManyDecimals(d.key));
        }
        if d.device_class == Some(DeviceClass::Energy) && d.state_class == Some(StateClass::Measurement) {
            return Err(TableError::EnergyAsMeasurement(d.key));
        }
    }
    Ok(())
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The slot of `key` in `table`; used in `const` items only, where a panic is a compile error.
const fn slot_of(table: &[ExtraDescriptor], key: &str, kind: ExtraKind) -> u8 {
    let mut i = 0;
    while i < table.len() {
        if str_eq(table[i].key, key) {
            assert!(table[i].kind as u8 == kind as u8, "the extra has another kind than its handle");
            assert!(i < MAX_EXTRAS, "the extra is past MAX_EXTRAS");
            return i as u8;
        }
        i += 1;
    }
    panic!("no extra with this key in the table")
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(u8);

        impl $name {
            /// The handle of `key` in `table`. Meant for `const` items (`const GIDS: NumberId =
            /// NumberId::of(EXTRAS, "gids");`): a key missing from the table, or of another kind, fails to compile.
            pub const fn of(table: &[ExtraDescriptor], key: &str) -> Self {
                $name(slot_of(table, key, $kind))
            }

            /// The position of the descriptor in its table.
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

handle!(
    /// A number slot of a driver's table.
    NumberId,
    ExtraKind::Number
);
handle!(
    /// A text slot of a driver's table.
    TextId,
    ExtraKind::Text
);
handle!(
    /// A flag slot of a driver's table.
    FlagId,
    ExtraKind::Flag
);

/// A short text owned by the model (no heap): at most [`TEXT_CAPACITY`] bytes of UTF-8.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct ShortText {
    len: u8,
    bytes: [u8; TEXT_CAPACITY],
}

impl ShortText {
    /// `s`, cut at the last character boundary that fits.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(TEXT_CAPACITY);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; TEXT_CAPACITY];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        ShortText { len: end as u8, bytes }
    }

    /// Text as packs send it (serial and part numbers): the bytes up to the first NUL, anything but printable
    /// ASCII shown as `?`, surrounding spaces trimmed.
    pub fn from_ascii(raw: &[u8]) -> Self {
        let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
        let mut bytes = [0; TEXT_CAPACITY];
        let mut len = 0;
        for &b in raw.iter().take(TEXT_CAPACITY) {
            bytes[len] = if b.is_ascii_graphic() || b == b' ' { b } else { b'?' };
            len += 1;
        }
        let text = ShortText { len: len as u8, bytes };
        ShortText::new(text.as_str().trim())
    }

    pub fn as_str(&self) -> &str {
        // Always valid: built from a `&str` cut at a character boundary, or from ASCII.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of one extra; its meaning (unit, decimals) is in its descriptor.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExtraValue {
    /// `raw / 10^decimals` in the descriptor's unit.
    Number(i64),
    Text(ShortText),
    Flag(bool),
}

impl ExtraValue {
    pub fn kind(&self) -> ExtraKind {
        match self {
            ExtraValue::Number(_) => ExtraKind::Number,
            ExtraValue::Text(_) => ExtraKind::Text,
            ExtraValue::Flag(_) => ExtraKind::Flag,
        }
    }
}

/// One known value with its descriptor, as [`Extras::iter`] yields it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    pub descriptor: &'static ExtraDescriptor,
    pub value: ExtraValue,
    pub at: Instant,
}

impl Extra {
    pub fn key(&self) -> &'static str {
        self.descriptor.key
    }
}

/// The pack-specific values of one model: the driver's table and a slot per descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extras {
    table: &'static [ExtraDescriptor],
    values: [Option<Reading<ExtraValue>>; MAX_EXTRAS],
}

impl Default for Extras {
    fn default() -> Self {
        Extras::new(&[])
    }
}

impl Extras {
    /// Empty slots for `table` (descriptors past [`MAX_EXTRAS`] have no slot; [`check_table`] refuses them).
    pub const fn new(table: &'static [ExtraDescriptor]) -> Self {
        Extras { table, values: [None; MAX_EXTRAS] }
    }

    /// Every value the driver can report, known or not (Home Assistant discovery announces them all).
    pub fn descriptors(&self) -> &'static [ExtraDescriptor] {
        let n = self.table.len().min(MAX_EXTRAS);
        &self.table[..n]
    }

    /// A handle of another table (a slot this table does not have, or of another kind) changes nothing.
    fn put(&mut self, now: Instant, index: usize, value: ExtraValue) {
        if self.table.get(index).is_some_and(|d| d.kind == value.kind()) {
            if let Some(slot) = self.values.get_mut(index) {
                *slot = Some(Reading::new(value, now));
            }
        }
    }

    pub fn set_number(&mut self, now: Instant, id: NumberId, raw: i64) {
        self.put(now, id.index(), ExtraValue::Number(raw));
    }

    /// Text longer than [`TEXT_CAPACITY`] bytes is cut at a character boundary.
    pub fn set_text(&mut self, now: Instant, id: TextId, text: &str) {
        self.put(now, id.index(), ExtraValue::Text(ShortText::new(text)));
    }

    /// Text as the pack sent it (see [`ShortText::from_ascii`]).
    pub fn set_ascii(&mut self, now: Instant, id: TextId, raw: &[u8]) {
        self.put(now, id.index(), ExtraValue::Text(ShortText::from_ascii(raw)));
    }

    pub fn set_flag(&mut self, now: Instant, id: FlagId, on: bool) {
        self.put(now, id.index(), ExtraValue::Flag(on));
    }

    fn value(&self, index: usize) -> Option<ExtraValue> {
        self.values.get(index).copied().flatten().map(|r| r.value)
    }

    pub fn number(&self, id: NumberId) -> Option<i64> {
        match self.value(id.index())? {
            ExtraValue::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn text(&self, id: TextId) -> Option<&str> {
        match self.values.get(id.index())? {
            Some(Reading { value: ExtraValue::Text(t), .. }) => Some(t.as_str()),
            _ => None,
        }
    }

    pub fn flag(&self, id: FlagId) -> Option<bool> {
        match self.value(id.index())? {
            ExtraValue::Flag(b) => Some(b),
            _ => None,
        }
    }

    /// The known values, in the table's order.
    pub fn iter(&self) -> impl Iterator<Item = Extra> + '_ {
        self.descriptors()
            .iter()
            .zip(self.values.iter())
            .filter_map(|(descriptor, v)| v.map(|r| Extra { descriptor, value: r.value, at: r.at }))
    }

    /// The known value of `key` (a string search: for tests and tools, not the per-frame path).
    pub fn get(&self, key: &str) -> Option<Extra> {
        self.iter().find(|e| e.key() == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[ExtraDescriptor] = &[
        ExtraDescriptor::number("gids", "GIDs").state_class(StateClass::Measurement),
        ExtraDescriptor::number("leaf_hx", "Hx").decimals(2).unit("%").state_class(StateClass::Measurement),
        ExtraDescriptor::text("serial", "Serial number"),
        ExtraDescriptor::flag("interlock", "Interlock seated"),
    ];
    const GIDS: NumberId = NumberId::of(TABLE, "gids");
    const HX: NumberId = NumberId::of(TABLE, "leaf_hx");
    const SERIAL: TextId = TextId::of(TABLE, "serial");
    const INTERLOCK: FlagId = FlagId::of(TABLE, "interlock");

    #[test]
    fn handles_are_the_table_positions() {
        assert_eq!([GIDS.index(), HX.index(), SERIAL.index(), INTERLOCK.index()], [0, 1, 2, 3]);
        assert_eq!(check_table(TABLE), Ok(()));
    }

    #[test]
    fn unknown_values_are_absent_and_known_ones_come_in_table_order() {
        let mut e = Extras::new(TABLE);
        assert_eq!(e.iter().count(), 0);
        assert_eq!(e.number(GIDS), None);
        e.set_flag(Instant::from_millis(1), INTERLOCK, true);
        e.set_number(Instant::from_millis(2), GIDS, 200);
        e.set_number(Instant::from_millis(3), GIDS, 201);
        let keys: Vec<_> = e.iter().map(|x| x.key()).collect();
        assert_eq!(keys, ["gids", "interlock"]);
        let gids = e.get("gids").unwrap();
        assert_eq!(
            (gids.value, gids.at, gids.descriptor.label),
            (ExtraValue::Number(201), Instant::from_millis(3), "GIDs")
        );
        assert_eq!(e.number(GIDS), Some(201));
        assert_eq!(e.flag(INTERLOCK), Some(true));
        assert_eq!(e.get("leaf_hx"), None, "never set, so not known");
    }

    #[test]
    fn a_model_without_the_table_ignores_handles() {
        let mut e = Extras::default();
        e.set_number(Instant::ZERO, GIDS, 1);
        e.set_text(Instant::ZERO, SERIAL, "x");
        assert_eq!(e.iter().count(), 0);
        // A handle of the right index but another kind (a table that is not the driver's) is ignored too.
        const OTHER: &[ExtraDescriptor] = &[ExtraDescriptor::text("gen", "Generation")];
        let mut e = Extras::new(OTHER);
        e.set_number(Instant::ZERO, GIDS, 1);
        assert_eq!(e.iter().count(), 0);
    }

    #[test]
    fn room_for_a_tesla() {
        const MANY: &[ExtraDescriptor] = &[ExtraDescriptor::number("v", "V"); MAX_EXTRAS];
        let mut e = Extras::new(MANY);
        let last = NumberId(MAX_EXTRAS as u8 - 1);
        e.set_number(Instant::ZERO, last, 7);
        assert_eq!(e.number(last), Some(7));
        assert_eq!(e.descriptors().len(), MAX_EXTRAS);
        const TOO_MANY: &[ExtraDescriptor] = &[ExtraDescriptor::number("v", "V"); MAX_EXTRAS + 1];
        assert_eq!(check_table(TOO_MANY), Err(TableError::TooMany { len: MAX_EXTRAS + 1 }));
        assert_eq!(Extras::new(TOO_MANY).descriptors().len(), MAX_EXTRAS);
    }

    #[test]
    fn text_is_owned_and_cut_at_a_character_boundary() {
        let mut e = Extras::new(TABLE);
        let long = "ÅÅÅÅÅÅÅÅÅÅÅÅ"; // 24 bytes: 11 characters fit in 23
        e.set_text(Instant::ZERO, SERIAL, long);
        assert_eq!(e.text(SERIAL), Some("ÅÅÅÅÅÅÅÅÅÅÅ"));
        assert_eq!(ShortText::from_ascii(b" 295A0 5AA0\x01B\0garbage").as_str(), "295A0 5AA0?B");
        assert_eq!(ShortText::from_ascii(b"\0").as_str(), "");
        assert_eq!(ShortText::from_ascii(&[b'A'; 40]).as_str().len(), TEXT_CAPACITY);
        e.set_ascii(Instant::ZERO, SERIAL, b"AZE0-123\xFF");
        assert_eq!(e.text(SERIAL), Some("AZE0-123?"));
    }

    #[test]
    fn tables_that_break_the_rules_are_refused() {
        let bad = |d: ExtraDescriptor| check_table(&[d]);
        assert_eq!(bad(ExtraDescriptor::number("Gids", "GIDs")), Err(TableError::BadKey("Gids")));
        assert_eq!(bad(ExtraDescriptor::number("1x", "x")), Err(TableError::BadKey("1x")));
        assert_eq!(bad(ExtraDescriptor::number("x", " ")), Err(TableError::NoLabel("x")));
        assert_eq!(bad(ExtraDescriptor::flag("x", "X").unit("V")), Err(TableError::NotANumber("x")));
        assert_eq!(bad(ExtraDescriptor::text("x", "X").decimals(1)), Err(TableError::NotANumber("x")));
        assert_eq!(bad(ExtraDescriptor::number("x", "X").decimals(7)), Err(TableError::TooManyDecimals("x")));
        let energy = ExtraDescriptor::number("x", "X").unit("kWh").device_class(DeviceClass::Energy);
        assert_eq!(bad(energy.state_class(StateClass::Measurement)), Err(TableError::EnergyAsMeasurement("x")));
        assert_eq!(bad(energy.state_class(StateClass::TotalIncreasing)), Ok(()));
        let twice = [ExtraDescriptor::number("x", "X"), ExtraDescriptor::flag("x", "Y")];
        assert_eq!(check_table(&twice), Err(TableError::DuplicateKey("x")));
    }
}
