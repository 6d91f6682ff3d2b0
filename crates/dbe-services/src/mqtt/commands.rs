//! Remote commands received on `<prefix>/command/<NAME>`, parsed into hub [`Request`]s by pure functions.
//!
//! Payload facts from Battery-Emulator `Software/src/devboard/mqtt/mqtt.cpp` (`mqtt_message_received`): the
//! buttons (`PAUSE`, `RESUME`, `RESTART`, `STOP`, `BMSRESET`) ignore their payload; `SET_LIMITS` is a JSON object
//! `{"max_charge": N, "max_discharge": N, "timeout": s}` with the limits in deci-amps (150 = 15.0 A); a key that is
//! missing (or not an integer) clears the remote limit in that direction, and `timeout` defaults to 30 s.
//!
//! Where DBE differs, on purpose: Battery-Emulator treats any unreadable value as "missing" and so silently
//! *clears* the limit; DBE refuses the whole payload instead (a typo must not lift a limit an automation meant to
//! set), and says why on `<prefix>/command_result`. Also refused: unknown keys, negative or huge values, a timeout
//! outside 1 s..24 h. `null` counts as missing (clear), like Battery-Emulator. A whole number written as a float
//! (`150.0`, what a Home Assistant template often renders) is accepted as that integer.

use dbe_core::command::{Command, MAX_TEMPORARY_LIMIT_TIMEOUT};
use dbe_core::units::{BasisPoints, DeciAmps};
use dbe_core::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::request::Request;

/// The same upper bound the core puts on a remote limit (10 000 A): beyond it a value is a mistake, not a limit.
pub const MAX_REMOTE_LIMIT_DA: i64 = 100_000;
/// Battery-Emulator's default when `timeout` is missing.
pub const DEFAULT_LIMIT_TIMEOUT_S: i64 = 30;

/// A command name as it appears in the topic (`<prefix>/command/<NAME>`) and in the `allowed_commands` setting.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandName {
    #[serde(rename = "PAUSE")]
    Pause,
    #[serde(rename = "RESUME")]
    Resume,
    #[serde(rename = "RESTART")]
    Restart,
    #[serde(rename = "STOP")]
    Stop,
    /// DBE only: the way back from `STOP` (Battery-Emulator has no equivalent topic).
    #[serde(rename = "START")]
    Start,
    #[serde(rename = "BMSRESET")]
    BmsReset,
    #[serde(rename = "SET_LIMITS")]
    SetLimits,
    #[serde(rename = "SET_SOC_WINDOW")]
    SetSocWindow,
}

impl CommandName {
    pub const ALL: &'static [CommandName] = &[
        CommandName::Pause,
        CommandName::Resume,
        CommandName::Restart,
        CommandName::Stop,
        CommandName::Start,
        CommandName::BmsReset,
        CommandName::SetLimits,
        CommandName::SetSocWindow,
    ];

    /// What `allowed_commands` holds by default: the commands that can only make things safer or lower limits
    /// (`SET_LIMITS` can only lower the configured limits; `SET_SOC_WINDOW` stays within the configured bounds).
    /// `START`, `RESTART` and `BMSRESET` can bring current back or act on the pack, so each must be allowed by
    /// name.
    pub const DEFAULT_ALLOWED: &'static [CommandName] = &[
        CommandName::Pause,
        CommandName::Resume,
        CommandName::Stop,
        CommandName::SetLimits,
        CommandName::SetSocWindow,
    ];

    pub fn topic_name(self) -> &'static str {
        match self {
            CommandName::Pause => "PAUSE",
            CommandName::Resume => "RESUME",
            CommandName::Restart => "RESTART",
            CommandName::Stop => "STOP",
            CommandName::Start => "START",
            CommandName::BmsReset => "BMSRESET",
            CommandName::SetLimits => "SET_LIMITS",
            CommandName::SetSocWindow => "SET_SOC_WINDOW",
        }
    }

    /// Case-sensitive, like the topics Battery-Emulator subscribes to.
    pub fn from_topic_name(name: &str) -> Option<CommandName> {
        CommandName::ALL.iter().copied().find(|c| c.topic_name() == name)
    }

    /// True for the commands that take no payload (Home Assistant buttons).
    pub fn is_button(self) -> bool {
        !matches!(self, CommandName::SetLimits | CommandName::SetSocWindow)
    }
}

/// Why a command payload was refused before it reached the bridge.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload must be a JSON object, e.g. {example}")]
    NotAnObject { example: &'static str },
    #[error("unknown key \"{key}\" (expected {expected})")]
    UnknownKey { key: String, expected: &'static str },
    #[error("\"{key}\" must be {expected}, got {got}")]
    WrongType { key: &'static str, expected: &'static str, got: String },
    #[error("\"{key}\" is {value}, expected {min} to {max}")]
    OutOfRange { key: &'static str, value: String, min: String, max: String },
    #[error("\"{key}\" is missing")]
    Missing { key: &'static str },
    #[error("SOC window minimum {min} % must be below its maximum {max} %")]
    EmptyWindow { min: f64, max: f64 },
}

/// The request a message on `command/<name>` stands for.
pub fn parse_command(name: CommandName, payload: &[u8]) -> Result<Request, PayloadError> {
    Ok(match name {
        CommandName::Pause => Request::Core(Command::Pause),
        CommandName::Resume => Request::Core(Command::Resume),
        CommandName::Restart => Request::Restart,
        CommandName::Stop => Request::Core(Command::Stop),
        CommandName::Start => Request::Core(Command::Start),
        CommandName::BmsReset => Request::Core(Command::BmsReset),
        CommandName::SetLimits => Request::Core(parse_set_limits(payload)?),
        CommandName::SetSocWindow => Request::Core(parse_soc_window(payload)?),
    })
}

const LIMITS_EXAMPLE: &str = r#"{"max_charge": 150, "max_discharge": 150, "timeout": 60}"#;
const LIMITS_KEYS: &str = "max_charge, max_discharge, timeout";
const WINDOW_EXAMPLE: &str = r#"{"min": 10, "max": 90}"#;
const WINDOW_KEYS: &str = "min, max";

/// `{"max_charge": dA, "max_discharge": dA, "timeout": s}`; a missing (or `null`) limit means no remote limit
/// in that direction.
pub fn parse_set_limits(payload: &[u8]) -> Result<Command, PayloadError> {
    let obj = object(payload, LIMITS_EXAMPLE)?;
    only_keys(&obj, &["max_charge", "max_discharge", "timeout"], LIMITS_KEYS)?;
    let charge = integer(&obj, "max_charge", 0, MAX_REMOTE_LIMIT_DA)?;
    let discharge = integer(&obj, "max_discharge", 0, MAX_REMOTE_LIMIT_DA)?;
    let max_timeout = MAX_TEMPORARY_LIMIT_TIMEOUT.as_secs() as i64;
    let timeout = integer(&obj, "timeout", 1, max_timeout)?.unwrap_or(DEFAULT_LIMIT_TIMEOUT_S);
    Ok(Command::SetTemporaryLimits {
        charge: charge.map(|v| DeciAmps(v as i32)),
        discharge: discharge.map(|v| DeciAmps(v as i32)),
        timeout: Duration::from_secs(timeout as u64),
    })
}

/// `{"min": %, "max": %}`, both required, in percent with up to two decimals. The core checks the configured
/// bounds; this only checks that the numbers are percentages in the right order.
pub fn parse_soc_window(payload: &[u8]) -> Result<Command, PayloadError> {
    let obj = object(payload, WINDOW_EXAMPLE)?;
    only_keys(&obj, &["min", "max"], WINDOW_KEYS)?;
    let min = percent(&obj, "min")?;
    let max = percent(&obj, "max")?;
    let bp = |p: f64| BasisPoints((p * 100.0).round() as u16);
    // Compared after rounding to 0.01 %: 0.001 and 0.004 are in order but both become 0.
    if bp(min) >= bp(max) {
        return Err(PayloadError::EmptyWindow { min, max });
    }
    Ok(Command::SetSocWindow { min: bp(min), max: bp(max) })
}

fn object(payload: &[u8], example: &'static str) -> Result<Map<String, Value>, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(PayloadError::NotAnObject { example }),
        Err(e) => Err(PayloadError::NotJson(e.to_string())),
    }
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], expected: &'static str) -> Result<(), PayloadError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(PayloadError::UnknownKey { key: k.clone(), expected }),
        None => Ok(()),
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the text {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A whole number in `min..=max`, or `None` when the key is missing or `null`.
fn integer(obj: &Map<String, Value>, key: &'static str, min: i64, max: i64) -> Result<Option<i64>, PayloadError> {
    let out_of_range =
        |value: String| PayloadError::OutOfRange { key, value, min: min.to_string(), max: max.to_string() };
    let n = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(other) => return Err(PayloadError::WrongType { key, expected: "a whole number", got: kind(other) }),
    };
    let value = if let Some(i) = n.as_i64() {
        i
    } else if n.as_u64().is_some() {
        return Err(out_of_range(n.to_string()));
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f.fract() != 0.0 || !f.is_finite() {
            return Err(PayloadError::WrongType { key, expected: "a whole number", got: n.to_string() });
        }
        if f < min as f64 || f > max as f64 {
            return Err(out_of_range(n.to_string()));
        }
        f as i64
    };
    if (min..=max).contains(&value) {
        Ok(Some(value))
    } else {
        Err(out_of_range(value.to_string()))
    }
}

fn percent(obj: &Map<String, Value>, key: &'static str) -> Result<f64, PayloadError> {
    let v = match obj.get(key) {
        None | Some(Value::Null) => return Err(PayloadError::Missing { key }),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(other) => return Err(PayloadError::WrongType { key, expected: "a number of percent", got: kind(other) }),
    };
    if !(0.0..=100.0).contains(&v) {
        return Err(PayloadError::OutOfRange { key, value: v.to_string(), min: "0".into(), max: "100".into() });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(c: Option<i32>, d: Option<i32>, t: u64) -> Command {
        Command::SetTemporaryLimits {
            charge: c.map(DeciAmps),
            discharge: d.map(DeciAmps),
            timeout: Duration::from_secs(t),
        }
    }

    #[test]
    fn set_limits_reads_battery_emulator_payloads() {
        let p = |s: &str| parse_set_limits(s.as_bytes());
        assert_eq!(p(r#"{"max_charge":150,"max_discharge":200,"timeout":60}"#), Ok(limits(Some(150), Some(200), 60)));
        // Missing timeout: 30 s.
        assert_eq!(p(r#"{"max_charge":150,"max_discharge":200}"#), Ok(limits(Some(150), Some(200), 30)));
        // Missing direction (or null): no remote limit there.
        assert_eq!(p(r#"{"max_charge":0,"timeout":5}"#), Ok(limits(Some(0), None, 5)));
        assert_eq!(p(r#"{"max_charge":null,"max_discharge":7}"#), Ok(limits(None, Some(7), 30)));
        assert_eq!(p("{}"), Ok(limits(None, None, 30)));
        // Whole numbers written as floats, as HA templates render them.
        assert_eq!(p(r#"{"max_charge":150.0,"timeout":60.0}"#), Ok(limits(Some(150), None, 60)));
        // Edges.
        assert_eq!(p(r#"{"max_charge":100000,"timeout":86400}"#), Ok(limits(Some(100_000), None, 86_400)));
    }

    #[test]
    fn set_limits_refuses_every_bad_payload() {
        let bad = |s: &[u8]| parse_set_limits(s).unwrap_err();
        assert!(matches!(bad(b"max_charge=150"), PayloadError::NotJson(_)));
        assert!(matches!(bad(b""), PayloadError::NotJson(_)));
        assert!(matches!(bad(b"{\"max_charge\":150"), PayloadError::NotJson(_)));
        assert_eq!(bad(&[0xff, 0xfe]), PayloadError::NotUtf8);
        assert!(matches!(bad(b"150"), PayloadError::NotAnObject { .. }));
        assert!(matches!(bad(b"[150]"), PayloadError::NotAnObject { .. }));
        assert!(matches!(bad(b"null"), PayloadError::NotAnObject { .. }));
        // Negative.
        assert!(matches!(bad(br#"{"max_charge":-1}"#), PayloadError::OutOfRange { key: "max_charge", .. }));
        assert!(matches!(bad(br#"{"max_discharge":-150}"#), PayloadError::OutOfRange { key: "max_discharge", .. }));
        assert!(matches!(bad(br#"{"timeout":-5}"#), PayloadError::OutOfRange { key: "timeout", .. }));
        // Huge.
        assert!(matches!(bad(br#"{"max_charge":100001}"#), PayloadError::OutOfRange { .. }));
        assert!(matches!(bad(br#"{"max_charge":18446744073709551615}"#), PayloadError::OutOfRange { .. }));
        assert!(matches!(bad(br#"{"max_charge":1e300}"#), PayloadError::OutOfRange { .. }));
        assert!(matches!(bad(br#"{"max_charge":1e999}"#), PayloadError::NotJson(_)));
        assert!(matches!(bad(br#"{"timeout":86401}"#), PayloadError::OutOfRange { key: "timeout", .. }));
        assert!(matches!(bad(br#"{"max_charge":10,"timeout":0}"#), PayloadError::OutOfRange { key: "timeout", .. }));
        // Wrong types.
        assert!(matches!(bad(br#"{"max_charge":"150"}"#), PayloadError::WrongType { key: "max_charge", .. }));
        assert!(matches!(bad(br#"{"max_charge":15.5}"#), PayloadError::WrongType { .. }));
        assert!(matches!(bad(br#"{"max_discharge":true}"#), PayloadError::WrongType { .. }));
        assert!(matches!(bad(br#"{"max_discharge":[1]}"#), PayloadError::WrongType { .. }));
        assert!(matches!(bad(br#"{"timeout":{"s":1}}"#), PayloadError::WrongType { key: "timeout", .. }));
        // Extra keys (a typo must not clear a limit).
        assert!(matches!(bad(br#"{"max_charg":150}"#), PayloadError::UnknownKey { .. }));
    }

    #[test]
    fn errors_read_well() {
        let e = parse_set_limits(br#"{"max_charge":-1}"#).unwrap_err();
        assert_eq!(e.to_string(), "\"max_charge\" is -1, expected 0 to 100000");
        let e = parse_set_limits(br#"{"max_charge":"150"}"#).unwrap_err();
        assert_eq!(e.to_string(), "\"max_charge\" must be a whole number, got the text \"150\"");
    }

    #[test]
    fn soc_window() {
        let p = |s: &str| parse_soc_window(s.as_bytes());
        assert_eq!(
            p(r#"{"min":10,"max":90}"#),
            Ok(Command::SetSocWindow { min: BasisPoints(1000), max: BasisPoints(9000) })
        );
        assert_eq!(
            p(r#"{"min":5.25,"max":100}"#),
            Ok(Command::SetSocWindow { min: BasisPoints(525), max: BasisPoints(10_000) })
        );
        assert!(matches!(p(r#"{"min":90,"max":10}"#), Err(PayloadError::EmptyWindow { .. })));
        assert!(matches!(p(r#"{"min":10,"max":10}"#), Err(PayloadError::EmptyWindow { .. })));
        // Found by the mqtt_command fuzz invariant: in order as written, empty once rounded to 0.01 %.
        assert!(matches!(p(r#"{"min":0.001,"max":0.004}"#), Err(PayloadError::EmptyWindow { .. })));
        assert!(matches!(p(r#"{"min":-1,"max":10}"#), Err(PayloadError::OutOfRange { .. })));
        assert!(matches!(p(r#"{"min":1,"max":101}"#), Err(PayloadError::OutOfRange { .. })));
        assert!(matches!(p(r#"{"min":1}"#), Err(PayloadError::Missing { key: "max" })));
        assert!(matches!(p(r#"{"min":"1","max":2}"#), Err(PayloadError::WrongType { .. })));
        assert!(matches!(p(r#"{"min":1,"max":2,"x":3}"#), Err(PayloadError::UnknownKey { .. })));
        assert!(matches!(p("ten to ninety"), Err(PayloadError::NotJson(_))));
    }

    #[test]
    fn buttons_ignore_their_payload() {
        assert_eq!(parse_command(CommandName::Pause, b"PRESS"), Ok(Request::Core(Command::Pause)));
        assert_eq!(parse_command(CommandName::Restart, b""), Ok(Request::Restart));
        assert_eq!(parse_command(CommandName::Stop, &[0xff]), Ok(Request::Core(Command::Stop)));
        assert_eq!(parse_command(CommandName::BmsReset, b"x"), Ok(Request::Core(Command::BmsReset)));
    }

    #[test]
    fn names_round_trip() {
        for &c in CommandName::ALL {
            assert_eq!(CommandName::from_topic_name(c.topic_name()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), Value::from(c.topic_name()));
        }
        assert_eq!(CommandName::from_topic_name("pause"), None);
    }
}
