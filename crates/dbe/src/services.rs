//! Starts the consumers of the hub that the config switches on (MQTT, web), for `dbe run` and `dbe demo` alike.

use anyhow::{Context, Result};
use dbe_services::config::Config;
use dbe_services::hub::Handle;
use tokio::task::JoinHandle;

/// A stable id for this DBE instance, for MQTT client ids and Home Assistant device identifiers: derived from the
/// machine id (so it survives reinstalls of DBE and differs between gateways), else the host name.
pub fn node_id() -> String {
    let raw = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().chars().take(12).collect::<String>())
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "dbe".to_string());
    let clean: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    format!("dbe_{clean}")
}

/// The running consumers; dropping this stops them (MQTT then leaves its last will on the broker).
pub struct Services {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn start(cfg: &Config, handle: Handle) -> Result<Services> {
    let mut tasks = Vec::new();
    if cfg.mqtt.enabled {
        let mqtt = cfg.mqtt.clone();
        mqtt.validate().context("mqtt settings")?;
        let h = handle.clone();
        let id = node_id();
        tracing::info!(host = %mqtt.host, port = mqtt.port, "MQTT enabled");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = dbe_services::mqtt::run(mqtt, h, id).await {
                tracing::error!("MQTT stopped: {e}");
            }
        }));
    }
    Ok(Services { tasks })
}
