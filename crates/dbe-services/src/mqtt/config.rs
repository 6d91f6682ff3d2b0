//! The `[mqtt]` settings and their validation (what turns them into a TLS client configuration is in `tls`).
//!
//! Defaults follow Battery-Emulator where it has one (port 1883, publish every 5 s, discovery prefix
//! `homeassistant`, keep-alive 30 s so the broker notices a dead link and sends the last will within ~45 s).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::commands::CommandName;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: TlsConfig,
    /// Defaults to `dbe-<node id>`: two clients with one id knock each other off the broker.
    pub client_id: Option<String>,
    /// Every topic starts with it (`BE/info`, `BE/command/PAUSE`); `BE` keeps Battery-Emulator automations working.
    pub topic_prefix: String,
    pub publish_interval_ms: u64,
    /// Per-cell voltages and balancing flags (`spec_data`, `balancing_data`) and their per-cell HA sensors.
    pub publish_cell_voltages: bool,
    pub ha_discovery: bool,
    pub discovery_prefix: String,
    /// Commands accepted from MQTT; any other is refused and reported on `command_result`. Defaults to
    /// [`CommandName::DEFAULT_ALLOWED`] (the ones that can only make things safer); the rest are enabled by name.
    pub allowed_commands: Vec<CommandName>,
    pub keep_alive_s: u16,
    /// Shown in Home Assistant as the device's configuration URL (the web UI), when there is one.
    pub web_url: Option<String>,
    /// The Home Assistant device name; defaults to `DBE <battery type>` (`dbe run` fills it in from the config).
    pub device_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM file with the CA(s) that signed the broker's certificate; the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, for brokers that authenticate clients by certificate.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Turning this off accepts any certificate: only for a broker on a trusted link with a self-made cert.
    pub verify: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { enabled: false, ca_file: None, client_cert_file: None, client_key_file: None, verify: true }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            host: String::new(),
            port: 1883,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            client_id: None,
            topic_prefix: "BE".into(),
            publish_interval_ms: 5000,
            publish_cell_voltages: false,
            ha_discovery: true,
            discovery_prefix: "homeassistant".into(),
            allowed_commands: CommandName::DEFAULT_ALLOWED.to_vec(),
            keep_alive_s: 30,
            web_url: None,
            device_name: None,
        }
    }
}

pub const MIN_PUBLISH_INTERVAL_MS: u64 = 50;
pub const MAX_PUBLISH_INTERVAL_MS: u64 = 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("mqtt.host is empty: set the broker's name or address")]
    NoHost,
    #[error("mqtt.host {0:?} is not a host name or address")]
    BadHost(String),
    #[error("mqtt.port must not be 0")]
    ZeroPort,
    #[error("mqtt.password is set but mqtt.username is not")]
    PasswordWithoutUser,
    #[error("mqtt.client_id must be 1 to 65535 bytes without spaces at either end")]
    BadClientId,
    #[error("mqtt.{field} {value:?} is not a valid topic prefix: no '+', '#', NUL or empty levels, not starting with '$' or '/'")]
    BadTopicPrefix { field: &'static str, value: String },
    #[error("mqtt.publish_interval_ms is {0}, expected {MIN_PUBLISH_INTERVAL_MS} to {MAX_PUBLISH_INTERVAL_MS}")]
    BadInterval(u64),
    #[error("mqtt.keep_alive_s is {0}, expected 5 to 3600")]
    BadKeepAlive(u16),
    #[error("mqtt.tls.client_cert_file and mqtt.tls.client_key_file must be set together")]
    HalfClientAuth,
    #[error("mqtt.web_url {0:?} must start with http:// or https:// (Home Assistant rejects the device otherwise)")]
    BadWebUrl(String),
    #[error("mqtt.tls.* files are set but mqtt.tls.enabled is false")]
    TlsFilesWithoutTls,
}

fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('$')
        && !p.starts_with('/')
        && !p.contains(['+', '#', '\0'])
        && p.split('/').all(|level| !level.is_empty())
}

impl MqttConfig {
    /// Checks everything that can be checked without touching the network or the files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.host.trim().is_empty() {
            return Err(ConfigError::NoHost);
        }
        if self.host.contains(char::is_whitespace) || self.host.contains(['/', '?', '#']) {
            return Err(ConfigError::BadHost(self.host.clone()));
        }
        if self.port == 0 {
            return Err(ConfigError::ZeroPort);
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::PasswordWithoutUser);
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65535 || id.trim() != id {
                return Err(ConfigError::BadClientId);
            }
        }
        for (field, value) in [("topic_prefix", &self.topic_prefix), ("discovery_prefix", &self.discovery_prefix)] {
            if !valid_prefix(value) {
                return Err(ConfigError::BadTopicPrefix { field, value: value.clone() });
            }
        }
        if !(MIN_PUBLISH_INTERVAL_MS..=MAX_PUBLISH_INTERVAL_MS).contains(&self.publish_interval_ms) {
            return Err(ConfigError::BadInterval(self.publish_interval_ms));
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            return Err(ConfigError::BadKeepAlive(self.keep_alive_s));
        }
        if let Some(url) = &self.web_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::BadWebUrl(url.clone()));
            }
        }
        let t = &self.tls;
        if t.client_cert_file.is_some() != t.client_key_file.is_some() {
            return Err(ConfigError::HalfClientAuth);
        }
        if !t.enabled && (t.ca_file.is_some() || t.client_cert_file.is_some()) {
            return Err(ConfigError::TlsFilesWithoutTls);
        }
        Ok(())
    }

    pub fn allows(&self, c: CommandName) -> bool {
        self.allowed_commands.contains(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> MqttConfig {
        MqttConfig { enabled: true, host: "broker.local".into(), ..MqttConfig::default() }
    }

    #[test]
    fn defaults_are_battery_emulators() {
        let c = MqttConfig::default();
        assert_eq!((c.port, c.publish_interval_ms, c.topic_prefix.as_str()), (1883, 5000, "BE"));
        assert_eq!(c.discovery_prefix, "homeassistant");
        assert!(c.tls.verify);
        // Only what can make things safer; START, RESTART and BMSRESET must be allowed by name.
        assert_eq!(
            c.allowed_commands,
            [
                CommandName::Pause,
                CommandName::Resume,
                CommandName::Stop,
                CommandName::SetLimits,
                CommandName::SetSocWindow
            ]
        );
        for c in [CommandName::Start, CommandName::Restart, CommandName::BmsReset] {
            assert!(!MqttConfig::default().allows(c), "{c:?}");
        }
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(on().validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_named() {
        let check = |f: &dyn Fn(&mut MqttConfig)| {
            let mut c = on();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(check(&|c| c.host.clear()), ConfigError::NoHost);
        assert_eq!(check(&|c| c.host = "mqtt://x".into()), ConfigError::BadHost("mqtt://x".into()));
        assert_eq!(check(&|c| c.port = 0), ConfigError::ZeroPort);
        assert_eq!(check(&|c| c.password = Some("p".into())), ConfigError::PasswordWithoutUser);
        assert_eq!(check(&|c| c.client_id = Some(String::new())), ConfigError::BadClientId);
        assert_eq!(check(&|c| c.client_id = Some(" a".into())), ConfigError::BadClientId);
        for bad in ["", "BE/", "/BE", "B+E", "BE/#", "$SYS", "a//b"] {
            assert!(matches!(check(&|c| c.topic_prefix = bad.into()), ConfigError::BadTopicPrefix { .. }), "{bad}");
        }
        assert!(matches!(check(&|c| c.discovery_prefix = "ha/+".into()), ConfigError::BadTopicPrefix { .. }));
        assert_eq!(check(&|c| c.publish_interval_ms = 10), ConfigError::BadInterval(10));
        assert_eq!(check(&|c| c.web_url = Some("dbe.local".into())), ConfigError::BadWebUrl("dbe.local".into()));
        assert_eq!(check(&|c| c.keep_alive_s = 0), ConfigError::BadKeepAlive(0));
        assert_eq!(check(&|c| c.tls.client_cert_file = Some("c.pem".into())), ConfigError::HalfClientAuth);
        assert_eq!(check(&|c| c.tls.ca_file = Some("ca.pem".into())), ConfigError::TlsFilesWithoutTls);
        let e = check(&|c| c.topic_prefix = "a/#".into()).to_string();
        assert!(e.contains("mqtt.topic_prefix \"a/#\""), "{e}");
    }

    #[test]
    fn reads_from_toml_like_json_with_defaults() {
        let c: MqttConfig = serde_json::from_str(
            r#"{"enabled":true,"host":"h","allowed_commands":["PAUSE","SET_LIMITS"],"tls":{"enabled":true}}"#,
        )
        .unwrap();
        assert_eq!(c.allowed_commands, [CommandName::Pause, CommandName::SetLimits]);
        assert!(c.tls.verify && c.tls.enabled);
        assert_eq!(c.port, 1883);
        assert!(serde_json::from_str::<MqttConfig>(r#"{"allowed_commands":["REBOOT"]}"#).is_err());
        assert!(serde_json::from_str::<MqttConfig>(r#"{"hots":"x"}"#).is_err());
    }
}
