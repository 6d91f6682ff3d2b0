//! Sharing one of DBE's CAN ports with other tools: a socketcand server (python-can, any socketcand client), a
//! GVRET server (SavvyCAN over the network) and an slcan adapter on a serial device or pty (`dbe simulate`).
//!
//! Each server serves one port. Every client gets every frame the port receives, from its own subscription to the
//! port, so a slow client loses its oldest frames (counted and logged) and never slows the bridge or the other
//! clients; a client whose socket stays blocked for [`WRITE_TIMEOUT`] is dropped. Frames a client sends are
//! queued on the port like the bridge's own (the port's single writer sends them), and refused, with a message
//! where the protocol has one, when the port is listen-only — which is how `[share]` serves a port unless
//! `allow_transmit` is on (`dbe simulate`'s servers always take frames). A client sending garbage gets an error
//! (socketcand, slcan) or is dropped (GVRET, which has no error message); nothing else changes.
//!
//! Frames a client sends are not echoed to the other clients or the bridge: like a CAN controller without
//! loopback, a port only reports what it received from the bus.

pub mod gvret;
pub mod slcan;
pub mod socketcand;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::Clock;
use crate::ports::PortHandle;

/// A client whose socket accepts nothing for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once per server; more are turned away.
pub const MAX_CLIENTS: usize = 16;
/// Consecutive bad messages after which a client is dropped.
pub const MAX_STRIKES: u32 = 16;
/// Frames encoded into one write when many are waiting.
const BATCH: usize = 256;

/// A listening server; dropping it closes the listener and every client.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The protocols a TCP server can speak.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Socketcand,
    Gvret,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Socketcand => "socketcand",
            Protocol::Gvret => "GVRET",
        }
    }
}

/// Binds `bind` (`HOST:PORT`, or a bare port for loopback) and serves `port` to every client that connects.
pub async fn serve_tcp(protocol: Protocol, bind: &str, port: PortHandle, clock: Clock) -> Result<Server> {
    let addr = dbe_services::config::share_bind_addr(bind).map_err(|e| anyhow::anyhow!(e))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{} server: cannot listen on {addr}", protocol.name()))?;
    let addr = listener.local_addr()?;
    tracing::info!(port = %port.spec.text, "{} server listening on {addr}", protocol.name());
    let task = tokio::spawn(accept_loop(protocol, listener, port, clock));
    Ok(Server { addr, task })
}

async fn accept_loop(protocol: Protocol, listener: TcpListener, port: PortHandle, clock: Clock) {
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, peer) = match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!("{} server: accept failed: {e}", protocol.name());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if clients.len() >= MAX_CLIENTS {
                    tracing::warn!("{} server: turning away {peer}: already {MAX_CLIENTS} clients", protocol.name());
                    continue;
                }
                let _ = stream.set_nodelay(true);
                tracing::info!(port = %port.spec.text, "{} client {peer} connected", protocol.name());
                let port = port.clone();
                clients.spawn(async move {
                    let who = peer.to_string();
                    let result = match protocol {
                        Protocol::Socketcand => socketcand::serve_client(stream, &port, clock, &who).await,
                        Protocol::Gvret => gvret::serve_client(stream, &port, clock, &who).await,
                    };
                    match result {
                        Ok(()) => tracing::info!("{} client {who} disconnected", protocol.name()),
                        Err(e) if hung_up(&e) => tracing::info!("{} client {who} disconnected", protocol.name()),
                        Err(e) => tracing::warn!("{} client {who} dropped: {e:#}", protocol.name()),
                    }
                });
            }
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
}

/// Whether a client's session ended because the client went away (a reset is how most clients close a socket
/// they were still being sent frames on), not because it misbehaved.
fn hung_up(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe))
}

/// Writes `bytes`, failing when the client has not taken them within [`WRITE_TIMEOUT`].
pub async fn write_or_drop<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(bytes)).await {
        Ok(r) => r.context("writing to the client"),
        Err(_) => anyhow::bail!("the client took nothing for {WRITE_TIMEOUT:?} (too slow)"),
    }
}

/// Microseconds since the Unix epoch of a port's receive time (`Received::at_ms`), for protocols that stamp
/// frames with wall-clock time.
#[derive(Copy, Clone, Debug)]
pub struct WallClock {
    offset_us: i128,
}

impl WallClock {
    pub fn new(clock: Clock) -> Self {
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i128)
            .unwrap_or(0);
        WallClock { offset_us: unix_us - i128::from(clock.now_ms()) * 1000 }
    }

    pub fn unix_us(&self, at_ms: u64) -> u64 {
        (self.offset_us + i128::from(at_ms) * 1000).max(0) as u64
    }
}

/// Whether the `[share]` section asks for any server.
pub fn wanted(cfg: &dbe_services::config::ShareSection) -> bool {
    !cfg.socketcand_bind.is_empty() || !cfg.gvret_bind.is_empty()
}

/// Starts the servers the `[share]` section asks for, serving `port` (the one `share.port` names); they run until
/// dropped.
pub async fn start(
    cfg: &dbe_services::config::ShareSection,
    mut port: PortHandle,
    clock: Clock,
) -> Result<Vec<Server>> {
    let mut servers = Vec::new();
    if !wanted(cfg) {
        return Ok(servers);
    }
    // The servers refuse client frames on a listen-only port; without `allow_transmit` they see it as one.
    if !cfg.allow_transmit {
        port.spec.listen_only = true;
    }
    for bind in [&cfg.socketcand_bind, &cfg.gvret_bind].into_iter().filter(|b| !b.is_empty()) {
        let addr = dbe_services::config::share_bind_addr(bind).map_err(|e| anyhow::anyhow!(e))?;
        if !addr.ip().is_loopback() {
            // The config check refuses this combination already; the servers never rely on it alone.
            anyhow::ensure!(
                !cfg.allow_transmit,
                "share: {addr} is not loopback and allow_transmit is on: anyone on the network could send frames"
            );
            tracing::warn!(
                "share: {addr} is not loopback: anyone who can reach it reads {} (no password)",
                port.spec.text
            );
        }
    }
    if !cfg.socketcand_bind.is_empty() {
        let s = serve_tcp(Protocol::Socketcand, &cfg.socketcand_bind, port.clone(), clock).await?;
        eprintln!("dbe: socketcand server for {} on {}", port.spec.text, s.addr);
        servers.push(s);
    }
    if !cfg.gvret_bind.is_empty() {
        let s = serve_tcp(Protocol::Gvret, &cfg.gvret_bind, port.clone(), clock).await?;
        eprintln!("dbe: GVRET server for {} on {}", port.spec.text, s.addr);
        servers.push(s);
    }
    Ok(servers)
}

/// Receives the next batch of frames for a client: at least one (waits for it), then whatever else is already
/// waiting, up to [`BATCH`]. Lost frames (the client fell behind) are added to `lost`. `None` when the port is
/// gone.
pub async fn next_batch(
    rx: &mut tokio::sync::broadcast::Receiver<crate::ports::Received>,
    lost: &mut u64,
) -> Option<Vec<crate::ports::Received>> {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut batch = Vec::new();
    loop {
        match rx.recv().await {
            Ok(r) => {
                batch.push(r);
                break;
            }
            Err(RecvError::Lagged(n)) => *lost += n,
            Err(RecvError::Closed) => return None,
        }
    }
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(TryRecvError::Lagged(n)) => *lost += n,
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ports::{self, sim, PortSpec};
    use dbe_core::CanFrame;

    /// A `sim:` port with a test attachment on its bus: what a share server serves in these tests.
    pub fn sim_port(name: &str) -> (PortHandle, sim::Bus, Clock) {
        let buses = sim::Buses::default();
        let clock = Clock::new();
        let port = ports::open(PortSpec::parse(&format!("sim:{name}")).unwrap(), clock, &buses);
        (port, buses.get(name), clock)
    }

    pub fn frame(i: u32) -> CanFrame {
        CanFrame::standard(0x100 + (i % 0x600) as u16, &i.to_le_bytes()).unwrap()
    }

    pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    /// The next frame on the bus that the attachment `me` did not send: what a client put there.
    pub async fn next_from_others(rx: &mut tokio::sync::broadcast::Receiver<sim::BusFrame>, me: u64) -> CanFrame {
        within("a client's frame on the bus", async {
            loop {
                let f = rx.recv().await.unwrap();
                if f.sender != me {
                    return f.frame;
                }
            }
        })
        .await
    }

    #[test]
    fn wall_clock_follows_the_port_clock() {
        let clock = Clock::new();
        let w = WallClock::new(clock);
        assert_eq!(w.unix_us(1500) - w.unix_us(500), 1_000_000);
        assert!(w.unix_us(0) > 1_600_000_000_000_000);
    }
}
