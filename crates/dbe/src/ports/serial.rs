//! RS485 serial ports: a task that owns the port and moves bytes, with the timing byte-stream protocols need.
//!
//! Received bytes go to the bridge loop with the time they arrived; when the line has been quiet for an
//! inter-frame gap (3.5 character times, the Modbus RTU rule, and never less than 2 ms so a busy Linux box does not
//! split frames) a `Silence` is sent too. Replies come back as whole byte strings and are written in one go. A
//! port that fails (USB adapter unplugged) is reported down and reopened with backoff, like the CAN ports.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_serial::SerialPortBuilderExt;

use super::{PortCounters, PortState};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSpec {
    pub path: String,
    pub baud: u32,
    pub parity: tokio_serial::Parity,
}

impl SerialSpec {
    pub fn new(path: &str, baud: u32, parity: &str) -> Self {
        let parity = match parity {
            "even" => tokio_serial::Parity::Even,
            "odd" => tokio_serial::Parity::Odd,
            _ => tokio_serial::Parity::None,
        };
        SerialSpec { path: path.to_string(), baud, parity }
    }

    /// 3.5 character times of 11 bits, at least 2 ms.
    pub fn gap(&self) -> Duration {
        let us = 3.5 * 11.0 * 1_000_000.0 / self.baud.max(1) as f64;
        Duration::from_micros(us as u64).max(Duration::from_millis(2))
    }
}

/// What the port task hands the bridge loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialIn {
    Bytes(Vec<u8>),
    /// The line has been quiet for an inter-frame gap after the last bytes.
    Silence,
}

pub struct SerialHandle {
    pub rx: mpsc::Receiver<SerialIn>,
    pub tx: mpsc::Sender<Vec<u8>>,
    pub state: watch::Receiver<PortState>,
}

const QUEUE: usize = 64;

pub fn open(spec: SerialSpec) -> SerialHandle {
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let (state_tx, state_rx) = watch::channel(PortState::Opening);
    let counters = Arc::new(PortCounters::default());
    tokio::spawn(keep_open(spec, in_tx, out_rx, state_tx, counters));
    SerialHandle { rx: in_rx, tx: out_tx, state: state_rx }
}

async fn keep_open(
    spec: SerialSpec,
    to_bridge: mpsc::Sender<SerialIn>,
    mut from_bridge: mpsc::Receiver<Vec<u8>>,
    state: watch::Sender<PortState>,
    counters: Arc<PortCounters>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::time::Instant::now();
        let result = run(&spec, &to_bridge, &mut from_bridge, &state, &counters).await;
        let why = match result {
            Ok(()) => return, // the bridge is gone
            Err(e) => e.to_string(),
        };
        if state.send(PortState::Down(why.clone())).is_err() {
            return;
        }
        tracing::warn!(port = %spec.path, "serial port down: {why}; reopening in {backoff:?}");
        PortCounters::add(&counters.reopens);
        tokio::time::sleep(backoff).await;
        while from_bridge.try_recv().is_ok() {
            PortCounters::add(&counters.tx_dropped);
        }
        backoff = if opened.elapsed() > Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            (backoff * 2).min(Duration::from_secs(5))
        };
    }
}

async fn run(
    spec: &SerialSpec,
    to_bridge: &mpsc::Sender<SerialIn>,
    from_bridge: &mut mpsc::Receiver<Vec<u8>>,
    state: &watch::Sender<PortState>,
    counters: &PortCounters,
) -> std::io::Result<()> {
    let mut port = tokio_serial::new(&spec.path, spec.baud)
        .parity(spec.parity)
        .data_bits(tokio_serial::DataBits::Eight)
        .stop_bits(tokio_serial::StopBits::One)
        .open_native_async()
        .map_err(|e| std::io::Error::other(format!("cannot open {}: {e}", spec.path)))?;
    let _ = state.send(PortState::Up);
    let gap = spec.gap();
    let mut buf = [0u8; 512];
    let mut quiet_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = port.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(std::io::Error::other("the serial port closed"));
                }
                counters.rx.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                if to_bridge.send(SerialIn::Bytes(buf[..n].to_vec())).await.is_err() {
                    return Ok(());
                }
                quiet_at = Some(tokio::time::Instant::now() + gap);
            }
            _ = async { match quiet_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                quiet_at = None;
                if to_bridge.send(SerialIn::Silence).await.is_err() {
                    return Ok(());
                }
            }
            out = from_bridge.recv() => {
                let Some(bytes) = out else { return Ok(()) };
                port.write_all(&bytes).await?;
                port.flush().await?;
                PortCounters::add(&counters.tx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inter_frame_gap_follows_the_baud_rate() {
        assert_eq!(SerialSpec::new("/dev/x", 9600, "none").gap(), Duration::from_micros(4010));
        assert_eq!(SerialSpec::new("/dev/x", 115_200, "none").gap(), Duration::from_millis(2));
        assert_eq!(SerialSpec::new("/dev/x", 9600, "even").parity, tokio_serial::Parity::Even);
    }
}
