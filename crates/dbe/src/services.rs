//! Starts the consumers of the hub that the config switches on (MQTT, web), for `dbe run` and `dbe demo` alike.

use anyhow::{Context, Result};
use dbe_services::config::Config;
use dbe_services::hub::Handle;
use std::sync::Arc;

use dbe_services::web::{ConfigStore, Extras, FrameRecord, TapDirection, WebConfig};
use tokio::task::JoinHandle;

/// A stable id for this DBE instance, for MQTT client ids and Home Assistant device identifiers: derived from the
/// machine id (so it survives reinstalls of DBE and differs between gateways), else the host name. It carries no
/// `dbe` prefix: its users add theirs once (`dbe-<id>` as client id, `dbe_<id>` in Home Assistant).
pub fn node_id() -> String {
    node_id_from(std::fs::read_to_string("/etc/machine-id").ok(), std::fs::read_to_string("/etc/hostname").ok())
}

fn node_id_from(machine_id: Option<String>, hostname: Option<String>) -> String {
    let raw = machine_id
        .map(|s| s.trim().chars().take(12).collect::<String>())
        .filter(|s| !s.is_empty())
        .or_else(|| hostname.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "dbe".to_string());
    raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// The running consumers; dropping this stops them (MQTT then leaves its last will on the broker).
pub struct Services {
    tasks: Vec<JoinHandle<()>>,
    /// Where every frame received or sent on a port goes, for the web's CAN view (`None` without web; see
    /// [`tap_ports`]).
    pub frames: Option<tokio::sync::broadcast::Sender<FrameRecord>>,
    /// The dashboard's address, once it listens.
    pub web_url: Option<String>,
}

/// Frames the CAN view may fall behind by.
const FRAME_QUEUE: usize = 4096;

/// Wall-clock ms for frame records (the web shows them in the user's time).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A frame as the web's CAN view wants it (by value: nothing allocated per frame).
pub fn frame_record(
    port: &'static str,
    frame: dbe_core::CanFrame,
    direction: TapDirection,
    time_ms: u64,
) -> FrameRecord {
    FrameRecord { port, time_ms, frame, direction }
}

/// How often the CAN view's feed takes what the ports published.
pub const TAP_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Feeds the web's CAN view from the ports' own traffic (both directions, see [`crate::ports::PortFrame`]), one
/// task per port: the bridge loop never builds a record, and a slow view loses frames (counted by the view), it
/// never slows a port.
pub fn tap_ports(
    tap: &tokio::sync::broadcast::Sender<FrameRecord>,
    ports: Vec<(&'static str, tokio::sync::broadcast::Receiver<crate::ports::PortFrame>)>,
    clock: crate::clock::Clock,
) -> Vec<JoinHandle<()>> {
    use tokio::sync::broadcast::error::TryRecvError;
    ports
        .into_iter()
        .map(|(name, mut rx)| {
            let tap = tap.clone();
            tokio::spawn(async move {
                // At the page's pace, not the bus's: one wake-up per TAP_EVERY takes what the port published
                // meanwhile, and nothing is copied while no page (or page recording) is listening.
                let mut every = tokio::time::interval(TAP_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    every.tick().await;
                    // Once per batch (the wall clock may be set meanwhile): each frame's own µs on top of it.
                    let origin_us = clock.unix_origin_us();
                    loop {
                        match rx.try_recv() {
                            Ok(f) if tap.receiver_count() > 0 => {
                                let dir = match f.direction {
                                    crate::ports::Direction::Rx => TapDirection::Rx,
                                    crate::ports::Direction::Tx => TapDirection::Tx,
                                };
                                let _ = tap.send(frame_record(name, f.frame, dir, (origin_us + f.at_us) / 1000));
                            }
                            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => return,
                        }
                    }
                }
            })
        })
        .collect()
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts MQTT and the web server as `cfg` says; `settings` backs the Settings page (none: no Settings page).
pub async fn start(
    cfg: &Config,
    handle: Handle,
    settings: Option<Arc<dbe_services::config_store::ConfigFile>>,
) -> Result<Services> {
    let mut tasks = Vec::new();
    if cfg.mqtt.enabled {
        let mut mqtt = cfg.mqtt.clone();
        mqtt.validate().context("mqtt settings")?;
        if mqtt.device_name.is_none() {
            mqtt.device_name = Some(dbe_services::mqtt::discovery::default_device_name(cfg.battery_kind()));
        }
        let h = handle.clone();
        let id = node_id();
        tracing::info!(host = %mqtt.host, port = mqtt.port, "MQTT enabled");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = dbe_services::mqtt::run(mqtt, h, id).await {
                tracing::error!("MQTT stopped: {e}");
            }
        }));
    }
    let mut frames = None;
    let mut web_url = None;
    if cfg.web.enabled {
        let bind: std::net::SocketAddr =
            cfg.web.bind.parse().with_context(|| format!("web.bind '{}' is not an address", cfg.web.bind))?;
        let wc = WebConfig {
            bind,
            password_hash: (!cfg.web.password_hash.is_empty()).then(|| cfg.web.password_hash.clone()),
            ..WebConfig::default()
        };
        let (tx, _) = tokio::sync::broadcast::channel(FRAME_QUEUE);
        let running = dbe_services::web::serve(
            wc,
            handle.clone(),
            Extras { config: settings.map(|s| s as Arc<dyn ConfigStore>), frames: Some(tx.clone()) },
        )
        .await
        .context("starting the web dashboard")?;
        tracing::info!("dashboard on {}", running.url());
        web_url = Some(running.url());
        frames = Some(tx);
        tasks.push(running.task);
    }
    Ok(Services { tasks, frames, web_url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_has_no_prefix_of_its_own() {
        // Discovery and the client id add `dbe`; a node id that carried it too gave `sensor.dbe_dbe_...`.
        let id = node_id_from(Some("3d1219c7c4c5aaaabbbbccccddddeeee\n".into()), Some("gw".into()));
        assert_eq!(id, "3d1219c7c4c5");
        let d = dbe_services::mqtt::discovery::Discovery::new(
            dbe_services::mqtt::topics::Topics::new("BE", "homeassistant"),
            &id,
            None,
            None,
        );
        assert_eq!(d.node(), "dbe_3d1219c7c4c5");
        assert_eq!(node_id_from(None, Some("Garage-GW\n".into())), "garage_gw");
        assert_eq!(node_id_from(Some("\n".into()), None), "dbe");
    }
}
