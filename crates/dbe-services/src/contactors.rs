//! The `[contactors]` section: who opens and closes the pack's main relays, and, when DBE does, where its relay
//! outputs and inputs are.
//!
//! Three modes (issue 13): `relays` (DBE drives relay outputs through a precharge sequence), `can` (the pack
//! closes its own contactors on CAN commands) and `none` (the user wired manual switches: DBE cannot open the pack,
//! and says so). The default is `none` because it is the only mode that needs no wiring; it is also the one where a
//! "contactors open" decision opens nothing, which the status reports plainly.
//!
//! The outputs device is one string, like the CAN ports:
//! - `sim:` (or `sim:NAME`): in-process simulated relays, for the demo and the tests.
//! - `gpio:/dev/gpiochip0` (or `gpio:gpiochip0`): lines of a GPIO chip through the Linux GPIO character device;
//!   each line by offset (`17`) or by name (`"GPIO17"`).
//! - `modbus:/dev/ttyUSB1?baud=9600&unit=1&parity=none`: a Modbus RTU relay board on its own serial port; outputs
//!   are coil addresses as sent on the wire (relay 1 is usually coil 0), inputs discrete-input addresses.
//!   `baud` (default 9600), `unit` (the board's slave address, default 1) and `parity` (default none) may be left
//!   out.
//!
//! The line keys accept a number or a string, so `negative = 0` and `negative = "GPIO5"` both work.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The accepted values of `contactors.mode`.
pub const MODES: &[&str] = &["none", "relays", "can"];

/// Standard serial rates a relay board may be set to.
const BAUDS: &[u32] = &[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactorsSection {
    /// `none`, `relays` or `can`.
    pub mode: String,
    /// The relay outputs device: `sim:`, `gpio:/dev/gpiochip0`, `modbus:/dev/ttyUSB1?baud=9600&unit=1`; "" = none.
    pub outputs: String,
    /// Negative main contactor: GPIO line (offset or name) or Modbus coil.
    #[serde(deserialize_with = "line")]
    pub negative: String,
    /// Precharge relay ("" = none: the pack or the inverter precharges).
    #[serde(deserialize_with = "line")]
    pub precharge: String,
    /// Positive main contactor.
    #[serde(deserialize_with = "line")]
    pub positive: String,
    /// Optional output powering the BMS (on = powered), for `BMSRESET` power cycles.
    #[serde(deserialize_with = "line")]
    pub bms_power: String,
    /// GPIO outputs: the relay is energised by a low line (many relay modules). Off = active-high.
    pub active_low: bool,
    /// Optional equipment-stop input, wired normally closed: an open circuit (pressed, or a broken wire) stops.
    #[serde(deserialize_with = "line")]
    pub equipment_stop: String,
    /// Equipment stop latches until a `START` (like `stop`); off: it clears when the circuit closes again.
    pub equipment_stop_latching: bool,
    /// Optional input from the inverter allowing the contactors to close (closed circuit = allowed).
    #[serde(deserialize_with = "line")]
    pub inverter_enable: String,
    /// GPIO inputs: a closed circuit pulls the line low (switch to ground, the line pulled up). Off: a closed
    /// circuit drives it high (the line pulled down).
    pub inputs_active_low: bool,
    /// The precharge check: the positive closes only once the inverter's bus is within this many volts of the
    /// pack (0 = off). Needs a protocol that reports the bus voltage (`byd-can`).
    pub precharge_check_v: u16,
}

impl Default for ContactorsSection {
    fn default() -> Self {
        ContactorsSection {
            mode: "none".into(),
            outputs: String::new(),
            negative: String::new(),
            precharge: String::new(),
            positive: String::new(),
            bms_power: String::new(),
            active_low: false,
            equipment_stop: String::new(),
            equipment_stop_latching: true,
            inverter_enable: String::new(),
            inputs_active_low: false,
            precharge_check_v: 0,
        }
    }
}

/// A parsed `contactors.outputs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputsSpec {
    Sim { name: String },
    Gpio { chip: String },
    Modbus { device: String, baud: u32, parity: String, unit: u8 },
}

/// One GPIO line, Modbus coil or discrete input as the config names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LineRef {
    Offset(u32),
    Name(String),
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineRef::Offset(n) => write!(f, "{n}"),
            LineRef::Name(s) => write!(f, "\"{s}\""),
        }
    }
}

/// `""` is unset; digits are an offset or address, anything else a line name.
pub fn parse_line(text: &str) -> Option<LineRef> {
    let t = text.trim();
    if t.is_empty() {
        None
    } else if let Ok(n) = t.parse::<u32>() {
        Some(LineRef::Offset(n))
    } else {
        Some(LineRef::Name(t.to_string()))
    }
}

impl OutputsSpec {
    /// Parses `contactors.outputs`; `Ok(None)` when it is empty (no device).
    pub fn parse(text: &str) -> Result<Option<OutputsSpec>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let (main, query) = text.split_once('?').unwrap_or((text, ""));
        let Some((scheme, rest)) = main.split_once(':') else {
            return Err(format!(
                "'{text}' is not an outputs device like sim:, gpio:/dev/gpiochip0 or modbus:/dev/ttyUSB1?baud=9600&unit=1"
            ));
        };
        let params: Vec<(&str, &str)> =
            query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
        let no_params = |kind: &str| match params.first() {
            Some((k, _)) => Err(format!("'{text}': {kind} takes no option '{k}'")),
            None => Ok(()),
        };
        match scheme {
            "sim" => {
                no_params("sim:")?;
                Ok(Some(OutputsSpec::Sim { name: rest.to_string() }))
            }
            "gpio" => {
                no_params("gpio:")?;
                if rest.is_empty() {
                    return Err(format!("'{text}': gpio needs a chip, e.g. gpio:/dev/gpiochip0"));
                }
                let chip = if rest.contains('/') { rest.to_string() } else { format!("/dev/{rest}") };
                Ok(Some(OutputsSpec::Gpio { chip }))
            }
            "modbus" => {
                if rest.is_empty() {
                    return Err(format!("'{text}': modbus needs a serial device, e.g. modbus:/dev/ttyUSB1"));
                }
                let (mut baud, mut parity, mut unit) = (9600u32, "none".to_string(), 1u8);
                for (k, v) in params {
                    match k {
                        "baud" => {
                            baud = v.parse().ok().filter(|b| BAUDS.contains(b)).ok_or_else(|| {
                                format!("'{text}': baud '{v}' is not a standard rate (1200 to 115200)")
                            })?
                        }
                        "unit" => {
                            unit = v
                                .parse()
                                .ok()
                                .filter(|u| (1..=247).contains(u))
                                .ok_or_else(|| format!("'{text}': unit '{v}' is not a slave address 1 to 247"))?
                        }
                        "parity" if ["none", "even", "odd"].contains(&v) => parity = v.to_string(),
                        "parity" => return Err(format!("'{text}': parity '{v}' is not none, even or odd")),
                        _ => return Err(format!("'{text}': unknown option '{k}', expected baud, unit or parity")),
                    }
                }
                Ok(Some(OutputsSpec::Modbus { device: rest.to_string(), baud, parity, unit }))
            }
            _ => Err(format!("'{scheme}' is not an outputs device kind, expected sim, gpio or modbus")),
        }
    }
}

impl ContactorsSection {
    /// The configured outputs as `(key, line)`, in the order they are opened in (positive first).
    pub fn outputs_by_key(&self) -> [(&'static str, Option<LineRef>); 4] {
        [
            ("positive", parse_line(&self.positive)),
            ("precharge", parse_line(&self.precharge)),
            ("negative", parse_line(&self.negative)),
            ("bms_power", parse_line(&self.bms_power)),
        ]
    }

    /// The configured inputs as `(key, line)`.
    pub fn inputs_by_key(&self) -> [(&'static str, Option<LineRef>); 2] {
        [("equipment_stop", parse_line(&self.equipment_stop)), ("inverter_enable", parse_line(&self.inverter_enable))]
    }

    /// Everything wrong with the section, as `(key, message)` with keys under `contactors.`. `rs485_port` is the
    /// inverter's serial port when its protocol talks RS485: a relay board needs a bus of its own.
    pub fn problems(&self, rs485_port: Option<&str>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut fail = |key: &str, msg: String| out.push((format!("contactors.{key}"), msg));
        if !MODES.contains(&self.mode.as_str()) {
            fail("mode", format!("'{}' is not one of: {}", self.mode, MODES.join(", ")));
        }
        let spec = match OutputsSpec::parse(&self.outputs) {
            Ok(s) => s,
            Err(e) => {
                fail("outputs", e);
                return out;
            }
        };
        let lines: Vec<(&str, LineRef)> = self
            .outputs_by_key()
            .into_iter()
            .chain(self.inputs_by_key())
            .filter_map(|(k, l)| l.map(|l| (k, l)))
            .collect();
        if self.mode == "relays" {
            if spec.is_none() {
                fail("outputs", "mode = \"relays\" needs an outputs device (sim:, gpio:... or modbus:...)".into());
            }
            for key in ["negative", "positive"] {
                if !lines.iter().any(|(k, _)| *k == key) {
                    fail(key, format!("mode = \"relays\" needs the {key} contactor's output"));
                }
            }
        }
        let Some(spec) = spec else {
            if let Some((key, _)) = lines.first() {
                fail(key, "set contactors.outputs to the device this line is on".into());
            }
            return out;
        };
        if let OutputsSpec::Modbus { device, .. } = &spec {
            for (key, line) in &lines {
                match line {
                    LineRef::Offset(n) if *n <= u16::MAX as u32 => {}
                    _ => fail(key, format!("{line} is not a Modbus address (0 to 65535)")),
                }
            }
            if rs485_port == Some(device.as_str()) {
                fail(
                    "outputs",
                    format!("{device} is the inverter's RS485 port: the relay board needs a serial port of its own"),
                );
            }
        }
        // One line per function. On a Modbus board the inputs are a separate address space from the coils.
        let modbus = matches!(spec, OutputsSpec::Modbus { .. });
        let is_input = |k: &str| k == "equipment_stop" || k == "inverter_enable";
        for (i, (key, line)) in lines.iter().enumerate() {
            if let Some((other, _)) =
                lines[..i].iter().find(|(k, l)| l == line && (!modbus || is_input(k) == is_input(key)))
            {
                fail(key, format!("{line} is already contactors.{other}"));
            }
        }
        out
    }
}

/// The contactors section alone, from a whole file that may be invalid elsewhere: `dbe contactors open` must
/// still open the outputs when a bad edit broke another section.
pub fn section_from_toml(src: &str) -> Result<ContactorsSection, String> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        contactors: ContactorsSection,
    }
    let doc: toml::Table = toml::from_str(src).map_err(|e| e.message().to_string())?;
    let only = match doc.get("contactors") {
        Some(t) => toml::Table::from_iter([("contactors".to_string(), t.clone())]),
        None => toml::Table::new(),
    };
    let Only { contactors } = only.try_into().map_err(|e: toml::de::Error| e.message().to_string())?;
    Ok(contactors)
}

/// A line key: a number (offset, coil) or a string (a GPIO line name, or a number written as text).
fn line<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Line;
    impl Visitor<'_> for Line {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a line offset or coil number (17) or a GPIO line name (\"GPIO17\")")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            if v < 0 {
                return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
            }
            Ok(v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_devices_parse() {
        assert_eq!(OutputsSpec::parse(""), Ok(None));
        assert_eq!(OutputsSpec::parse("sim:"), Ok(Some(OutputsSpec::Sim { name: String::new() })));
        assert_eq!(OutputsSpec::parse("gpio:gpiochip0"), Ok(Some(OutputsSpec::Gpio { chip: "/dev/gpiochip0".into() })));
        assert_eq!(
            OutputsSpec::parse("modbus:/dev/ttyUSB1?baud=19200&unit=3&parity=even"),
            Ok(Some(OutputsSpec::Modbus {
                device: "/dev/ttyUSB1".into(),
                baud: 19200,
                parity: "even".into(),
                unit: 3
            }))
        );
        assert_eq!(
            OutputsSpec::parse("modbus:/dev/ttyUSB1"),
            Ok(Some(OutputsSpec::Modbus { device: "/dev/ttyUSB1".into(), baud: 9600, parity: "none".into(), unit: 1 }))
        );
        for bad in ["relay:1", "gpio:", "modbus:", "modbus:/dev/x?unit=0", "modbus:/dev/x?baud=1234", "gpio:x?y=1", "x"]
        {
            assert!(OutputsSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relays_need_a_device_and_both_main_contactors() {
        let s = ContactorsSection { mode: "relays".into(), ..Default::default() };
        let keys: Vec<String> = s.problems(None).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["contactors.outputs", "contactors.negative", "contactors.positive"]);
        let s = ContactorsSection {
            mode: "relays".into(),
            outputs: "sim:".into(),
            negative: "1".into(),
            positive: "2".into(),
            ..Default::default()
        };
        assert_eq!(s.problems(None), vec![]);
    }

    #[test]
    fn lines_are_one_per_function_and_numbers_on_a_modbus_board() {
        let s = ContactorsSection {
            outputs: "modbus:/dev/ttyUSB1".into(),
            negative: "0".into(),
            positive: "0".into(),
            precharge: "GPIO5".into(),
            equipment_stop: "0".into(),
            ..Default::default()
        };
        let p = s.problems(Some("/dev/ttyUSB1"));
        let find = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, m)| m.clone()).unwrap_or_default();
        assert!(find("contactors.precharge").contains("not a Modbus address"), "{p:?}");
        assert!(find("contactors.negative").contains("already contactors.positive"), "{p:?}");
        assert!(find("contactors.outputs").contains("serial port of its own"), "{p:?}");
        // Discrete input 0 and coil 0 are different things on a board.
        assert_eq!(find("contactors.equipment_stop"), "");
        let gpio = ContactorsSection { outputs: "gpio:/dev/gpiochip0".into(), ..s };
        let p = gpio.problems(None);
        assert!(p.iter().any(|(k, m)| k == "contactors.equipment_stop" && m.contains("already")), "{p:?}");
    }

    #[test]
    fn a_line_without_a_device_is_refused() {
        let s = ContactorsSection { bms_power: "4".into(), ..Default::default() };
        assert_eq!(s.problems(None)[0].0, "contactors.bms_power");
    }

    #[test]
    fn the_section_is_read_from_a_file_broken_elsewhere() {
        let src = "[limits]\nmax_charge_current_a = \"lots\"\n[contactors]\nmode = \"relays\"\noutputs = \"sim:\"\nnegative = 3\npositive = \"GPIO4\"\n";
        let s = section_from_toml(src).unwrap();
        assert_eq!((s.negative.as_str(), s.positive.as_str()), ("3", "GPIO4"));
        assert_eq!(section_from_toml("x = 1\n").unwrap(), ContactorsSection::default());
        assert!(section_from_toml("[contactors]\nnegative = -1\n").is_err());
        assert!(section_from_toml("[contactors\n").is_err());
    }

    #[test]
    fn config_errors_name_the_key_and_line() {
        let src = "[contactors]\nmode = \"relay\"\noutputs = \"usb:/dev/x\"\n";
        let e = crate::config::Config::from_toml(src).unwrap_err().0;
        let find = |k: &str| e.iter().find(|x| x.key == k).unwrap_or_else(|| panic!("no error for {k}: {e:?}"));
        assert_eq!(find("contactors.mode").line, Some(2));
        assert_eq!(find("contactors.outputs").line, Some(3));
        assert!(find("contactors.outputs").message.contains("'usb' is not an outputs device kind"));
        let e =
            crate::config::Config::from_toml("[contactors]\nmode = \"relays\"\noutputs = \"sim:\"\n").unwrap_err().0;
        assert_eq!(
            e.iter().map(|x| (x.key.as_str(), x.line)).collect::<Vec<_>>(),
            [("contactors.negative", Some(1)), ("contactors.positive", Some(1))]
        );
        let e = crate::config::Config::from_toml("[contactors]\nnegative = -3\n").unwrap_err().0;
        assert_eq!(e[0].line, Some(2));
        let ok = crate::config::Config::from_toml(
            "[contactors]\nmode = \"relays\"\noutputs = \"gpio:gpiochip0\"\nnegative = 5\nprecharge = 6\npositive = \"GPIO13\"\n",
        )
        .unwrap();
        assert_eq!(ok.contactors.negative, "5");
    }
}
