//! The port string that names a CAN port in the config file and on the command line (`socketcan:can0`,
//! `slcan:/dev/ttyACM0?bitrate=500000`, `socketcand:HOST:PORT/can0`, `sim:NAME`, each with `?listen-only`).
//!
//! Parsed here, apart from the daemon that opens the ports, so that `dbe check-config` refuses a bad port string
//! (an slcan bitrate no `S<n>` code sets, an unknown option) with the same words the daemon would use when it
//! opens the port, and nothing is checked twice.

/// A parsed port string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub kind: PortKind,
    /// Frames queued for the port are dropped, never sent (a bus DBE does not own).
    pub listen_only: bool,
    /// The string as the user wrote it (used as the port's name in logs, events and the web view).
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    SocketCan { interface: String },
    Slcan { device: String, bitrate: u32 },
    Socketcand { host: String, port: u16, interface: String },
    Sim { bus: String },
}

/// What is wrong with a port string; each names the string as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    #[error("'{0}' is not a port like socketcan:can0, slcan:/dev/ttyACM0, socketcand:HOST:PORT/can0 or sim:")]
    NotAPort(String),
    #[error("'{text}': unknown option '{option}', expected bitrate=N or listen-only")]
    UnknownOption { text: String, option: String },
    #[error("'{text}': bitrate '{value}' is not a number")]
    BadBitrate { text: String, value: String },
    #[error("'{text}': slcan cannot set bitrate {bitrate}, expected one of {}", known_bitrates())]
    UnsupportedBitrate { text: String, bitrate: u32 },
    #[error("'{0}': expected socketcand:HOST:PORT/INTERFACE")]
    BadSocketcand(String),
    #[error("'{text}': '{port}' is not a TCP port")]
    BadTcpPort { text: String, port: String },
    #[error("'{text}': unknown or incomplete port kind '{scheme}', expected socketcan, slcan, socketcand or sim")]
    UnknownKind { text: String, scheme: String },
}

fn known_bitrates() -> String {
    crate::slcan::BITRATES.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
}

/// The bitrate an slcan port opens at when the string does not say.
pub const DEFAULT_BITRATE: u32 = 500_000;

impl PortSpec {
    pub fn parse(text: &str) -> Result<PortSpec, PortSpecError> {
        let (main, query) = text.split_once('?').unwrap_or((text, ""));
        let mut listen_only = false;
        let mut bitrate = DEFAULT_BITRATE;
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                None if param == "listen-only" => listen_only = true,
                Some(("bitrate", v)) => {
                    bitrate = v
                        .parse()
                        .map_err(|_| PortSpecError::BadBitrate { text: text.to_string(), value: v.to_string() })?
                }
                _ => return Err(PortSpecError::UnknownOption { text: text.to_string(), option: param.to_string() }),
            }
        }
        let Some((scheme, rest)) = main.split_once(':') else {
            return Err(PortSpecError::NotAPort(text.to_string()));
        };
        let kind = match scheme {
            "socketcan" if !rest.is_empty() => PortKind::SocketCan { interface: rest.to_string() },
            "slcan" if !rest.is_empty() => {
                if crate::slcan::bitrate_code(bitrate).is_none() {
                    return Err(PortSpecError::UnsupportedBitrate { text: text.to_string(), bitrate });
                }
                PortKind::Slcan { device: rest.to_string(), bitrate }
            }
            "socketcand" => {
                let bad = || PortSpecError::BadSocketcand(text.to_string());
                let (addr, interface) = rest.rsplit_once('/').ok_or_else(bad)?;
                let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
                let port = port
                    .parse()
                    .map_err(|_| PortSpecError::BadTcpPort { text: text.to_string(), port: port.to_string() })?;
                PortKind::Socketcand { host: host.to_string(), port, interface: interface.to_string() }
            }
            "sim" => PortKind::Sim { bus: if rest.is_empty() { "default".into() } else { rest.to_string() } },
            _ => return Err(PortSpecError::UnknownKind { text: text.to_string(), scheme: scheme.to_string() }),
        };
        Ok(PortSpec { kind, listen_only, text: text.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_strings_parse_or_say_what_is_wrong() {
        assert_eq!(
            PortSpec::parse("slcan:/dev/ttyACM0?bitrate=250000").unwrap().kind,
            PortKind::Slcan { device: "/dev/ttyACM0".into(), bitrate: 250_000 }
        );
        assert_eq!(
            PortSpec::parse("slcan:/dev/ttyACM0").unwrap().kind,
            PortKind::Slcan { device: "/dev/ttyACM0".into(), bitrate: DEFAULT_BITRATE }
        );
        assert_eq!(
            PortSpec::parse("socketcand:127.0.0.1:29536/can0").unwrap().kind,
            PortKind::Socketcand { host: "127.0.0.1".into(), port: 29536, interface: "can0".into() }
        );
        let p = PortSpec::parse("socketcan:can1?listen-only").unwrap();
        assert!(p.listen_only);
        assert_eq!(PortSpec::parse("sim:").unwrap().kind, PortKind::Sim { bus: "default".into() });
        for bad in [
            "can0",
            "socketcan:",
            "slcan:/dev/x?bitrate=300000",
            "usb:x",
            "slcan:/dev/x?bitrate=fast",
            "socketcand:host/can0",
            "socketcand:host:99999/can0",
            "sim:a?x=1",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
        let e = PortSpec::parse("slcan:/dev/ttyACM0?bitrate=12345").unwrap_err();
        assert_eq!(
            e,
            PortSpecError::UnsupportedBitrate { text: "slcan:/dev/ttyACM0?bitrate=12345".into(), bitrate: 12345 }
        );
        assert!(e.to_string().contains("cannot set bitrate 12345, expected one of 10000, 20000"), "{e}");
    }
}
