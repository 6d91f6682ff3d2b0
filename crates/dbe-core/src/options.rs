//! Driver options described once: each driver's options struct lists its settings in a table of
//! [`OptionField`]s (name, help text, kind with range or choices, and how to read and write the typed field).
//!
//! The config layer reads nothing else: the config file's `[battery.<driver>]` / `[inverter.<protocol>]` tables,
//! `dbe config-example`, `dbe check-config`, the Settings page's schema and the HTTP config API are all built from
//! these tables, so a new driver's options appear everywhere once its table is written. The typed struct keeps
//! its units (`Duration`, enums, addresses); the table converts at the edge, the way a wire `Repr` scales only in
//! `parse`/`emit`. Settings that belong to a transport rather than a protocol (the RS485 turnaround, which
//! `[rs485]` sets for every serial protocol) are fields of the struct without an entry in its table.
//!
//! No heap, no serde: the core stays `no_std`, and the config layer does the parsing.

use core::fmt;

/// What a setting holds, with its bounds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OptionKind {
    Bool,
    /// A whole number in `min..=max`; `unit` is for people ("" for a plain count or address).
    Integer {
        min: i64,
        max: i64,
        unit: &'static str,
    },
    /// One of a fixed list of words.
    Choice(&'static [&'static str]),
}

/// A setting's value, as the config file writes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OptionValue<'a> {
    Bool(bool),
    Integer(i64),
    Word(&'a str),
}

impl fmt::Display for OptionValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Integer(i) => write!(f, "{i}"),
            OptionValue::Word(w) => write!(f, "\"{w}\""),
        }
    }
}

/// Why a value was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("no such option")]
    Unknown,
    #[error("expected true or false")]
    NotABool,
    #[error("expected a whole number")]
    NotAnInteger,
    #[error("out of range, expected {min} to {max}")]
    OutOfRange { min: i64, max: i64 },
    #[error("expected one of the words listed")]
    NotAChoice { choices: &'static [&'static str] },
}

impl OptionKind {
    /// Whether `value` is one this setting accepts.
    pub fn check(self, value: OptionValue<'_>) -> Result<(), OptionError> {
        match (self, value) {
            (OptionKind::Bool, OptionValue::Bool(_)) => Ok(()),
            (OptionKind::Bool, _) => Err(OptionError::NotABool),
            (OptionKind::Integer { min, max, .. }, OptionValue::Integer(i)) => {
                if (min..=max).contains(&i) {
                    Ok(())
                } else {
                    Err(OptionError::OutOfRange { min, max })
                }
            }
            (OptionKind::Integer { .. }, _) => Err(OptionError::NotAnInteger),
            (OptionKind::Choice(choices), OptionValue::Word(w)) if choices.contains(&w) => Ok(()),
            (OptionKind::Choice(choices), _) => Err(OptionError::NotAChoice { choices }),
        }
    }
}

/// One setting of a driver's options struct `T`.
pub struct OptionField<T> {
    /// The key in the driver's config table, the same as the struct's field.
    pub name: &'static str,
    /// One or two sentences for people: what it changes and when to change it.
    pub help: &'static str,
    pub kind: OptionKind,
    pub get: fn(&T) -> OptionValue<'static>,
    /// Called only with a value `kind` accepts ([`Options::set`] checks first).
    pub set: fn(&mut T, OptionValue<'_>),
}

/// The name, help and kind of a setting, without its accessors.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OptionInfo {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: OptionKind,
}

/// A driver's options struct with its table of settings.
pub trait DriverOptions: Sized + 'static {
    const FIELDS: &'static [OptionField<Self>];
}

/// Any driver's options, as the config layer sees them (object-safe, so a registry enum can hand out one).
pub trait Options {
    /// How many settings the table has.
    fn len(&self) -> usize;
    /// The `i`-th setting, in the table's order.
    fn info(&self, i: usize) -> Option<OptionInfo>;
    /// The current value of the setting called `name`.
    fn get(&self, name: &str) -> Option<OptionValue<'static>>;
    /// Sets `name` after checking `value` against its kind; a refused value changes nothing.
    fn set(&mut self, name: &str, value: OptionValue<'_>) -> Result<(), OptionError>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: DriverOptions> Options for T {
    fn len(&self) -> usize {
        T::FIELDS.len()
    }

    fn info(&self, i: usize) -> Option<OptionInfo> {
        T::FIELDS.get(i).map(|f| OptionInfo { name: f.name, help: f.help, kind: f.kind })
    }

    fn get(&self, name: &str) -> Option<OptionValue<'static>> {
        T::FIELDS.iter().find(|f| f.name == name).map(|f| (f.get)(self))
    }

    fn set(&mut self, name: &str, value: OptionValue<'_>) -> Result<(), OptionError> {
        let field = T::FIELDS.iter().find(|f| f.name == name).ok_or(OptionError::Unknown)?;
        field.kind.check(value)?;
        (field.set)(self, value);
        Ok(())
    }
}

/// Every setting of `options`, in order.
pub fn infos(options: &dyn Options) -> impl Iterator<Item = OptionInfo> + '_ {
    (0..options.len()).filter_map(move |i| options.info(i))
}

/// Checks every current value against its kind: a struct built in code (not from a file) gets the same bounds.
pub fn check_all(options: &dyn Options) -> Result<(), (&'static str, OptionError)> {
    for info in infos(options) {
        if let Some(v) = options.get(info.name) {
            info.kind.check(v).map_err(|e| (info.name, e))?;
        }
    }
    Ok(())
}

/// The integer of a checked value, for `set` functions (a value of another kind never reaches them).
pub fn integer(value: OptionValue<'_>) -> i64 {
    match value {
        OptionValue::Integer(i) => i,
        _ => 0,
    }
}

/// The bool of a checked value, for `set` functions.
pub fn boolean(value: OptionValue<'_>) -> bool {
    matches!(value, OptionValue::Bool(true))
}

/// The word of a checked value, for `set` functions.
pub fn word(value: OptionValue<'_>) -> &str {
    match value {
        OptionValue::Word(w) => w,
        _ => "",
    }
}

/// A `u8` from a value already checked against a range inside `0..=255`.
pub fn byte(value: OptionValue<'_>) -> u8 {
    u8::try_from(integer(value)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Copy, Clone, Debug, Default, PartialEq)]
    struct Demo {
        on: bool,
        n: u8,
    }

    impl DriverOptions for Demo {
        const FIELDS: &'static [OptionField<Self>] = &[
            OptionField {
                name: "on",
                help: "",
                kind: OptionKind::Bool,
                get: |o| OptionValue::Bool(o.on),
                set: |o, v| o.on = boolean(v),
            },
            OptionField {
                name: "n",
                help: "",
                kind: OptionKind::Integer { min: 1, max: 9, unit: "" },
                get: |o| OptionValue::Integer(o.n.into()),
                set: |o, v| o.n = byte(v),
            },
        ];
    }

    #[test]
    fn a_refused_value_changes_nothing() {
        let mut d = Demo::default();
        assert_eq!(d.set("n", OptionValue::Integer(10)), Err(OptionError::OutOfRange { min: 1, max: 9 }));
        assert_eq!(d.set("n", OptionValue::Word("x")), Err(OptionError::NotAnInteger));
        assert_eq!(d.set("on", OptionValue::Integer(1)), Err(OptionError::NotABool));
        assert_eq!(d.set("off", OptionValue::Bool(true)), Err(OptionError::Unknown));
        assert_eq!(d, Demo::default());
        d.set("n", OptionValue::Integer(9)).unwrap();
        d.set("on", OptionValue::Bool(true)).unwrap();
        assert_eq!(d, Demo { on: true, n: 9 });
        assert_eq!(d.get("n"), Some(OptionValue::Integer(9)));
        assert_eq!(infos(&d).map(|i| i.name).collect::<Vec<_>>(), ["on", "n"]);
        // Out of range in code is caught by the same bounds.
        assert_eq!(check_all(&Demo { on: false, n: 0 }), Err(("n", OptionError::OutOfRange { min: 1, max: 9 })));
    }
}
