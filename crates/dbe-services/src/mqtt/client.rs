//! The MQTT client task: connection, telemetry, events, discovery and commands (see the parent module for the
//! topics and fields).

use std::collections::VecDeque;
use std::time::Duration;

use dbe_core::model::ExtraDescriptor;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::commands;
use super::config::{ConfigError, MqttConfig};
use super::tls::{self, TlsSetupError};
use super::{discovery, telemetry, topics};
use discovery::{ConfigMessage, Discovery};
use topics::Topics;

use crate::hub::{self, EventMessage, Snapshot};

/// Requests between this task and the MQTT connection; beyond it, telemetry is skipped and the rest waits in
/// our own queues.
const CLIENT_CHANNEL: usize = 128;
/// Events kept while the broker is away; the oldest go first when it overflows.
pub const EVENT_QUEUE: usize = 256;
/// Status, subscriptions and command results waiting for the connection.
const CONTROL_QUEUE: usize = 64;
/// Commands waiting for the bridge loop's answer; more are refused rather than piled up.
const COMMANDS_IN_FLIGHT: usize = 8;
/// Largest packet either way: a 200-cell `spec_data` is ~3 KB, discovery configs ~1 KB.
const MAX_PACKET: usize = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("mqtt TLS setup: {0}")]
    Tls(#[from] TlsSetupError),
}

/// Runs the MQTT client until the returned future is dropped. Returns at once with `Ok` when MQTT is disabled,
/// and with an error only for settings that can never work (invalid values, unreadable TLS files); connection
/// failures, a wrong password included, are logged and retried with backoff.
pub async fn run(config: MqttConfig, handle: hub::Handle, node_id: String) -> Result<(), MqttError> {
    if !config.enabled {
        return Ok(());
    }
    config.validate()?;
    let topics = Topics::new(&config.topic_prefix, &config.discovery_prefix);
    let options = mqtt_options(&config, &topics, &node_id)?;
    let target = format!("{}:{}", config.host, config.port);
    let (client, eventloop) = AsyncClient::new(options, CLIENT_CHANNEL);
    let (notice_tx, notice_rx) = mpsc::channel(64);
    // Subscribed before connecting, so events raised while the broker is unreachable are kept.
    let events = handle.events.subscribe();
    let _driver = AbortOnDrop(tokio::spawn(drive(eventloop, notice_tx, target)));
    let discovery = Discovery::new(topics.clone(), &node_id, config.device_name.as_deref(), config.web_url.as_deref());
    let mut session = Session::new(config, topics, discovery, client, handle);
    session.run(notice_rx, events).await;
    Ok(())
}

fn mqtt_options(config: &MqttConfig, topics: &Topics, node_id: &str) -> Result<MqttOptions, MqttError> {
    let client_id = config.client_id.clone().unwrap_or_else(|| format!("dbe-{}", discovery::node_slug(node_id)));
    let mut o = MqttOptions::new(client_id, config.host.clone(), config.port);
    o.set_keep_alive(Duration::from_secs(config.keep_alive_s.into()))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(&topics.status, "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &config.username {
        o.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
    }
    if config.tls.enabled {
        let tls = tls::tls_client_config(&config.tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(o)
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the connection task tells the session.
#[derive(Debug)]
enum Notice {
    Connected,
    Disconnected,
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// The connection took or acknowledged a request: there may be room for more.
    Progress,
}

/// Exponential backoff with ±25 % jitter, so a fleet restarted together does not hammer the broker in step.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }
}

/// Says what went wrong in words a user can act on.
fn describe(e: &ConnectionError, target: &str) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => {
            format!("the broker at {target} refused the user name or password (check mqtt.username and mqtt.password)")
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            format!("the broker at {target} rejected the client id (set mqtt.client_id)")
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker at {target} refused the connection: {code:?}"),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("nothing accepts connections at {target} (is the broker running?)")
        }
        ConnectionError::Tls(t) => format!("TLS with {target} failed: {t}"),
        ConnectionError::NetworkTimeout => format!("no answer from {target} (timeout)"),
        other => format!("connection to {target} lost: {other}"),
    }
}

/// Drives the connection; reconnects with backoff after every error.
async fn drive(mut eventloop: EventLoop, tx: mpsc::Sender<Notice>, target: String) {
    let mut backoff = Backoff::new();
    let mut connected = false;
    let mut failures: u32 = 0;
    loop {
        let notice = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                connected = true;
                if failures > 0 {
                    log::info!("mqtt: connected to {target} after {failures} failed attempt(s)");
                } else {
                    log::info!("mqtt: connected to {target}");
                }
                failures = 0;
                Notice::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                Notice::Message { topic: p.topic, payload: p.payload.to_vec(), retain: p.retain }
            }
            Ok(_) => Notice::Progress,
            Err(e) => {
                let delay = backoff.next_delay();
                failures = failures.saturating_add(1);
                log::warn!("mqtt: {}; retrying in {:.1} s", describe(&e, &target), delay.as_secs_f64());
                if connected {
                    connected = false;
                    if tx.send(Notice::Disconnected).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        if tx.send(notice).await.is_err() {
            return;
        }
    }
}

/// One message waiting for room in the connection.
#[derive(Clone, Debug)]
enum Out {
    Publish { topic: String, payload: Vec<u8>, retain: bool, qos: QoS },
    Subscribe(String),
}

impl Out {
    fn publish(topic: &str, payload: impl Into<Vec<u8>>, retain: bool) -> Out {
        Out::Publish { topic: topic.to_string(), payload: payload.into(), retain, qos: QoS::AtLeastOnce }
    }
}

impl From<ConfigMessage> for Out {
    fn from(m: ConfigMessage) -> Out {
        Out::Publish { topic: m.topic, payload: m.payload, retain: true, qos: QoS::AtLeastOnce }
    }
}

struct Session {
    config: MqttConfig,
    topics: Topics,
    discovery: Discovery,
    client: AsyncClient,
    handle: hub::Handle,
    connected: bool,
    /// Status, subscriptions, command results: small, sent first.
    control: VecDeque<Out>,
    /// Discovery configs: replaced by each announcement, so it never holds more than one round.
    configs: VecDeque<Out>,
    events: VecDeque<Out>,
    events_dropped: u64,
    /// The cell count whose per-cell configs have been announced (or removed) on this connection.
    cells_handled: usize,
    /// The driver table whose pack-value sensors have been announced (or removed) on this connection.
    extras_handled: &'static [ExtraDescriptor],
    commands: JoinSet<(&'static str, Result<(), hub::RequestError>)>,
}

impl Session {
    fn new(
        config: MqttConfig,
        topics: Topics,
        discovery: Discovery,
        client: AsyncClient,
        handle: hub::Handle,
    ) -> Session {
        Session {
            config,
            topics,
            discovery,
            client,
            handle,
            connected: false,
            control: VecDeque::new(),
            configs: VecDeque::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            cells_handled: 0,
            extras_handled: &[],
            commands: JoinSet::new(),
        }
    }

    async fn run(&mut self, mut notices: mpsc::Receiver<Notice>, mut events: broadcast::Receiver<EventMessage>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.publish_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.flush();
            tokio::select! {
                notice = notices.recv() => match notice {
                    None => return,
                    Some(Notice::Connected) => {
                        self.on_connect();
                        tick.reset();
                    }
                    Some(Notice::Disconnected) => self.connected = false,
                    Some(Notice::Message { topic, payload, retain }) => self.on_message(&topic, &payload, retain),
                    Some(Notice::Progress) => {}
                },
                _ = tick.tick() => {
                    if self.connected {
                        self.publish_telemetry();
                    }
                }
                event = events.recv() => match event {
                    Ok(e) => self.queue_event(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.events_dropped += n;
                        log::warn!("mqtt: {n} events were lost before they could be queued");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(done) = self.commands.join_next(), if !self.commands.is_empty() => {
                    if let Ok((name, result)) = done {
                        match &result {
                            Ok(()) => {}
                            Err(e @ hub::RequestError::Refused(_)) => {
                                log::warn!("mqtt: command {name} refused by the bridge: {e}")
                            }
                            Err(e) => log::warn!("mqtt: command {name} not carried out: {e}"),
                        }
                        self.push_result(name, result.as_ref().map(|_| ()).map_err(|e| e as _));
                    }
                }
            }
        }
    }

    fn on_connect(&mut self) {
        self.connected = true;
        // Whatever was waiting from the last connection is stale: status and subscriptions are redone below.
        self.control.retain(|o| matches!(o, Out::Publish { topic, .. } if *topic == self.topics.command_result));
        let mut first =
            vec![Out::publish(&self.topics.status, "online", true), Out::Subscribe(self.topics.command_filter.clone())];
        if self.config.ha_discovery {
            first.push(Out::Subscribe(self.topics.ha_status.clone()));
        }
        for o in first.into_iter().rev() {
            self.control.push_front(o);
        }
        self.cells_handled = 0;
        self.queue_discovery();
        // `online` and the subscriptions go ahead of the first telemetry.
        self.flush();
        self.publish_telemetry();
    }

    /// (Re)announces every entity, or removes them all when discovery is off.
    fn queue_discovery(&mut self) {
        let snap = self.handle.latest();
        let (cells, extras) = (snap.cells.voltages_mv.len(), snap.status.battery.extra_table);
        let msgs = if self.config.ha_discovery {
            let mut m = self.discovery.announce(&self.config.allowed_commands, extras);
            if self.config.publish_cell_voltages {
                m.extend((1..=cells).map(|n| self.discovery.cell(n)));
            } else {
                m.extend((1..=cells).map(|n| self.discovery.remove_cell(n)));
            }
            m
        } else {
            self.discovery.remove_all(cells, extras)
        };
        self.configs = msgs.into_iter().map(Out::from).collect();
        self.cells_handled = cells;
        self.extras_handled = extras;
    }

    /// Announces the pack-value sensors when the driver's table becomes known (the first snapshot) or changes (a
    /// restart with another pack), and removes those the new table does not have.
    fn update_extra_discovery(&mut self, extras: &'static [ExtraDescriptor]) {
        if extras == self.extras_handled {
            return;
        }
        for old in discovery::extra_sensors(self.extras_handled) {
            if !extras.iter().any(|d| d.key == old.key) {
                self.configs.push_back(self.discovery.remove_sensor(old.key).into());
            }
        }
        for def in discovery::extra_sensors(extras) {
            let m = if self.config.ha_discovery {
                self.discovery.sensor(&def)
            } else {
                self.discovery.remove_sensor(def.key)
            };
            self.configs.push_back(m.into());
        }
        self.extras_handled = extras;
    }

    /// Announces (or removes) per-cell sensors when the cell count becomes known or changes.
    fn update_cell_discovery(&mut self, cells: usize) {
        if cells == self.cells_handled {
            return;
        }
        let announce = self.config.ha_discovery && self.config.publish_cell_voltages;
        for n in 1..=cells {
            let m = if announce { self.discovery.cell(n) } else { self.discovery.remove_cell(n) };
            self.configs.push_back(m.into());
        }
        for n in cells + 1..=self.cells_handled {
            self.configs.push_back(self.discovery.remove_cell(n).into());
        }
        self.cells_handled = cells;
    }

    fn publish_telemetry(&mut self) {
        let snap: std::sync::Arc<Snapshot> = self.handle.latest();
        if snap.status.battery.kind.is_empty() {
            // The bridge loop has not published its first snapshot yet: there is nothing true to say.
            return;
        }
        self.update_cell_discovery(snap.cells.voltages_mv.len());
        self.update_extra_discovery(snap.status.battery.extra_table);
        let mut msgs = vec![(&self.topics.info, telemetry::info(&snap))];
        if self.config.publish_cell_voltages {
            if let Some(v) = telemetry::spec_data(&snap) {
                msgs.push((&self.topics.spec_data, v));
            }
            if let Some(v) = telemetry::balancing_data(&snap) {
                msgs.push((&self.topics.balancing_data, v));
            }
        }
        for (topic, value) in msgs {
            // Telemetry is never queued: if the connection has no room now, the next tick brings fresher values.
            if self.client.try_publish(topic.as_str(), QoS::AtMostOnce, false, value.to_string()).is_err() {
                log::debug!("mqtt: connection busy, {topic} skipped this round");
                break;
            }
        }
    }

    fn queue_event(&mut self, e: &EventMessage) {
        if self.events.len() >= EVENT_QUEUE {
            self.events.pop_front();
            self.events_dropped += 1;
            if self.events_dropped.is_power_of_two() {
                log::warn!("mqtt: event queue full, {} oldest events dropped so far", self.events_dropped);
            }
        }
        self.events.push_back(Out::publish(&self.topics.events, telemetry::event(e).to_string(), false));
    }

    fn push_result(&mut self, command: &str, result: Result<(), &dyn std::fmt::Display>) {
        if self.control.len() >= CONTROL_QUEUE {
            self.control.pop_front();
        }
        let payload = telemetry::command_result(command, result).to_string();
        self.control.push_back(Out::publish(&self.topics.command_result, payload, false));
    }

    fn refuse(&mut self, command: &str, why: String) {
        log::warn!("mqtt: command {command} refused: {why}");
        self.push_result(command, Err(&why));
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) {
        if topic == self.topics.ha_status {
            if payload == b"online" && self.config.ha_discovery {
                log::info!("mqtt: Home Assistant is back online, announcing entities again");
                self.queue_discovery();
            }
            return;
        }
        let name = match self.topics.parse_command(topic) {
            None => return,
            Some(Err(unknown)) => {
                let unknown = unknown.to_string();
                return self.refuse(&unknown, format!("unknown command {unknown:?}"));
            }
            Some(Ok(name)) => name,
        };
        let label = name.topic_name();
        if retain {
            return self.refuse(label, "ignored a retained command; publish commands without the retain flag".into());
        }
        if !self.config.allows(name) {
            return self.refuse(label, format!("{label} is not in mqtt.allowed_commands"));
        }
        let request = match commands::parse_command(name, payload) {
            Ok(r) => r,
            Err(e) => return self.refuse(label, e.to_string()),
        };
        if self.commands.len() >= COMMANDS_IN_FLIGHT {
            return self.refuse(label, "too many commands waiting for the bridge; try again".into());
        }
        log::info!("mqtt: command {label}: {request:?}");
        let handle = self.handle.clone();
        self.commands.spawn(async move { (label, handle.request(request, "mqtt").await) });
    }

    /// Moves queued messages into the connection while it has room: control first, then discovery, then events.
    fn flush(&mut self) {
        if !self.connected {
            return;
        }
        for queue in [&mut self.control, &mut self.configs, &mut self.events] {
            while let Some(out) = queue.front() {
                let sent = match out {
                    Out::Publish { topic, payload, retain, qos } => {
                        if !rumqttc::valid_topic(topic) {
                            log::error!("mqtt: not a valid topic, dropped: {topic:?}");
                            queue.pop_front();
                            continue;
                        }
                        self.client.try_publish(topic.clone(), *qos, *retain, payload.clone())
                    }
                    Out::Subscribe(filter) => self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce),
                };
                if sent.is_err() {
                    return;
                }
                queue.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= BACKOFF_MIN.mul_f64(0.75) && first <= BACKOFF_MIN.mul_f64(1.25));
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_MAX.mul_f64(1.25));
        }
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN.mul_f64(1.25));
    }

    #[test]
    fn errors_tell_the_user_what_to_fix() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(describe(&e, "h:1883").contains("mqtt.password"));
        let e = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(describe(&e, "h:1883").contains("h:1883"));
    }
}
