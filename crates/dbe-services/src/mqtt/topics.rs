//! Every topic DBE publishes or subscribes to, built once from the prefixes.

use super::commands::CommandName;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
    /// `online`/`offline`, retained; `offline` is the last will.
    pub status: String,
    pub info: String,
    pub spec_data: String,
    pub balancing_data: String,
    pub events: String,
    pub command_result: String,
    /// `<prefix>/command/+`
    pub command_filter: String,
    command_base: String,
    /// Home Assistant's birth/will topic (`homeassistant/status`).
    pub ha_status: String,
    pub discovery_prefix: String,
}

impl Topics {
    pub fn new(prefix: &str, discovery_prefix: &str) -> Topics {
        let t = |s: &str| format!("{prefix}/{s}");
        Topics {
            prefix: prefix.to_string(),
            status: t("status"),
            info: t("info"),
            spec_data: t("spec_data"),
            balancing_data: t("balancing_data"),
            events: t("events"),
            command_result: t("command_result"),
            command_filter: t("command/+"),
            command_base: t("command/"),
            ha_status: format!("{discovery_prefix}/status"),
            discovery_prefix: discovery_prefix.to_string(),
        }
    }

    pub fn command(&self, c: CommandName) -> String {
        format!("{}{}", self.command_base, c.topic_name())
    }

    /// The command a topic names, `Err(name)` for a topic under `command/` that names no command, `None` for
    /// any other topic.
    pub fn parse_command<'a>(&self, topic: &'a str) -> Option<Result<CommandName, &'a str>> {
        let name = topic.strip_prefix(&self.command_base)?;
        Some(CommandName::from_topic_name(name).ok_or(name))
    }

    /// `<discovery>/<component>/<node>/<object>/config`
    pub fn discovery(&self, component: &str, node: &str, object: &str) -> String {
        format!("{}/{component}/{node}/{object}/config", self.discovery_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let t = Topics::new("BE", "homeassistant");
        assert_eq!(t.info, "BE/info");
        assert_eq!(t.command(CommandName::SetLimits), "BE/command/SET_LIMITS");
        assert_eq!(t.parse_command("BE/command/PAUSE"), Some(Ok(CommandName::Pause)));
        assert_eq!(t.parse_command("BE/command/REBOOT"), Some(Err("REBOOT")));
        assert_eq!(t.parse_command("BE/info"), None);
        assert_eq!(t.discovery("sensor", "n1", "SOC"), "homeassistant/sensor/n1/SOC/config");
    }
}
