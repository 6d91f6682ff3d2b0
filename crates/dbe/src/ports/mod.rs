//! CAN ports and the manager that shares each one.
//!
//! A port is named by one URL-like string (`socketcan:can0`, `slcan:/dev/ttyACM0?bitrate=500000`,
//! `socketcand:HOST:PORT/can0`, `sim:NAME`). Each open port has exactly one task that owns the transport: it reads
//! frames and hands every one to every subscriber (the bridge, the recorder, the GVRET and socketcand servers, the
//! web view), and it is the only writer, fed by a bounded queue. When the transport fails (adapter unplugged, TCP
//! dropped) the task reports the port down, drops what is queued (stale keep-alives must not burst out later) and
//! reopens it with backoff.
//!
//! Besides received frames, each port task publishes its traffic in both directions ([`PortHandle::subscribe_traffic`]):
//! every frame it read (`Rx`) and every frame the transport accepted for sending (`Tx`), in the order the task
//! handled them, for the recorder and the dashboard's CAN view. A frame is published as sent only once the
//! transport took it (the socket write succeeded, the bytes were written to the adapter or server, the simulated
//! bus carried it): a frame refused because the queue was full, dropped while the port was down or on a
//! listen-only port never appears as sent. The bridge loop only queues frames; this costs it nothing.
//!
//! A port DBE does not own (a car's bus) is opened listen-only (`?listen-only`): frames queued for it are dropped
//! and counted, never sent. Plugging a second talker into a live LEAF bus is known to fault the car (OVMS #980).

mod configured;
pub mod pace;
pub mod serial;
pub mod sim;
pub mod slcan;
pub mod socketcan;
pub mod socketcand;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbe_core::CanFrame;
pub use dbe_link::candump::Direction;
use tokio::sync::{broadcast, mpsc, watch};

/// Frames a subscriber may fall behind by before it loses the oldest: a second of a fully loaded 1 Mbit/s bus.
pub const RX_CAPACITY: usize = 8192;
/// The most queued frames written in one go by byte-stream transports.
pub const WRITE_BATCH: usize = 64;
/// Frames waiting to be written; more are refused (and counted) rather than queued without bound.
pub const TX_CAPACITY: usize = 1024;
/// The longest a byte-stream transport's write may wait for room before its batch is dropped (a working adapter
/// or server takes a batch at once; the pack's keep-alives come every 10 ms).
pub const WRITE_STALL: Duration = Duration::from_millis(50);

pub use configured::{open_ports, Ports};
pub use dbe_link::port::{PortKind, PortSpec};

/// A received frame with the time the port task read it (on the daemon's monotonic clock; the same reading the
/// recorder writes, so the bridge can take frames of two ports in the order the recording shows them).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub frame: CanFrame,
    pub at_ms: u64,
    pub at_us: u64,
}

/// A frame queued for sending, stamped when it was queued: that is when the bridge decided it, before anything
/// the other side answers to it, so a recording never shows the answer before the request (stamping it when the
/// transport took it did, under load, and `dbe replay --compare` then replayed an answer before its poll).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub frame: CanFrame,
    pub at_us: u64,
}

/// A frame in either direction as the port task handled it, for the recorder and the CAN view.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PortFrame {
    pub frame: CanFrame,
    /// `Rx`: read from the bus; `Tx`: accepted by the transport for sending.
    pub direction: Direction,
    /// When, in µs on the daemon's monotonic clock ([`crate::clock::Clock::now_us`]).
    pub at_us: u64,
}

/// Whether a port is usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortState {
    Opening,
    Up,
    /// Down, with why; it is being reopened.
    Down(String),
}

/// Counters of one port, shared with the web view and `/metrics`.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    /// Frames that could not be queued or were dropped while the port was down or listen-only.
    pub tx_dropped: AtomicU64,
    /// Of those, frames refused because the queue was full: the transport cannot keep up (TX overflow).
    pub tx_overflow: AtomicU64,
    pub errors: AtomicU64,
    pub reopens: AtomicU64,
}

impl PortCounters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What everybody else holds of a port.
#[derive(Clone)]
pub struct PortHandle {
    pub spec: PortSpec,
    rx: broadcast::Sender<Received>,
    traffic: broadcast::Sender<PortFrame>,
    tx: mpsc::Sender<Outgoing>,
    clock: crate::clock::Clock,
    pub state: watch::Receiver<PortState>,
    pub counters: Arc<PortCounters>,
    /// Batched reading of a busy port ([`pace`]).
    pub pace: pace::PaceHandle,
}

impl PortHandle {
    pub fn subscribe(&self) -> broadcast::Receiver<Received> {
        self.rx.subscribe()
    }

    /// Every frame received and every frame sent on this port from now on, in the order the port task handled
    /// them (see the module doc for when a frame counts as sent).
    pub fn subscribe_traffic(&self) -> broadcast::Receiver<PortFrame> {
        self.traffic.subscribe()
    }

    /// Queues a frame for sending; never waits. False when the queue is full (counted).
    pub fn send(&self, frame: CanFrame) -> bool {
        match self.tx.try_send(Outgoing { frame, at_us: self.clock.now_us() }) {
            Ok(()) => true,
            Err(e) => {
                PortCounters::add(&self.counters.tx_dropped);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    PortCounters::add(&self.counters.tx_overflow);
                }
                false
            }
        }
    }
}

/// What a transport task gets to work with.
pub struct PortIo {
    pub rx: broadcast::Sender<Received>,
    pub traffic: broadcast::Sender<PortFrame>,
    pub tx: mpsc::Receiver<Outgoing>,
    pub counters: Arc<PortCounters>,
    pub clock: crate::clock::Clock,
    pub listen_only: bool,
    /// The port's name, for logs.
    pub spec_text: String,
    /// The frames of the last [`encode_batch`](Self::encode_batch), until [`batch_written`](Self::batch_written)
    /// (reused: no allocation per batch).
    batch: Vec<Outgoing>,
    pub pace: pace::PaceHandle,
    stall_log: LogLimit,
}

impl PortIo {
    /// Hands a received frame to every subscriber (a subscriber that has fallen behind loses its oldest frames).
    pub fn deliver(&self, frame: CanFrame) {
        PortCounters::add(&self.counters.rx);
        let at_us = self.clock.now_us();
        let _ = self.rx.send(Received { frame, at_ms: at_us / 1000, at_us });
        if self.traffic.receiver_count() > 0 {
            let _ = self.traffic.send(PortFrame { frame, direction: Direction::Rx, at_us });
        }
    }

    /// Counts a frame the transport accepted and publishes it as sent (stamped when it was queued).
    pub fn sent(&self, out: Outgoing) {
        PortCounters::add(&self.counters.tx);
        if self.traffic.receiver_count() > 0 {
            let _ = self.traffic.send(PortFrame { frame: out.frame, direction: Direction::Tx, at_us: out.at_us });
        }
    }

    /// Marks the frames of the last [`encode_batch`](Self::encode_batch) sent, once their bytes were written.
    pub fn batch_written(&mut self) {
        self.counters.tx.fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        if self.traffic.receiver_count() > 0 {
            for &out in &self.batch {
                let _ = self.traffic.send(PortFrame { frame: out.frame, direction: Direction::Tx, at_us: out.at_us });
            }
        }
        self.batch.clear();
    }

    /// Counts the frames of the last [`encode_batch`](Self::encode_batch) dropped: the transport did not take
    /// their bytes within [`WRITE_STALL`] (counted as an overflow too, which the bridge reports as a bus error).
    pub fn batch_stalled(&mut self) {
        self.counters.tx_dropped.fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        PortCounters::add(&self.counters.tx_overflow);
        self.batch.clear();
    }

    /// Writes `out` (one encoded batch) to a byte-stream transport, waiting at most [`WRITE_STALL`]: a device or
    /// server that stops taking bytes must not stop the port from reading, which is where its refusals, its errors
    /// and every received frame come from. On a stall the batch counts as dropped and the port goes on (bytes of
    /// a command cut short are refused by the other side, and counted there). `Err` only for a failed transport.
    pub async fn write_batch<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        link: &mut W,
        out: &[u8],
    ) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match tokio::time::timeout(WRITE_STALL, link.write_all(out)).await {
            Ok(Ok(())) => {
                self.batch_written();
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.batch_stalled();
                self.stall_log.warn(&self.spec_text, "the other side takes no bytes: frames dropped while it stays so");
                Ok(())
            }
        }
    }

    /// Encodes `first` and whatever else is queued (up to [`WRITE_BATCH`] frames) into `out` for one write, so a
    /// burst costs one system call. Frames are dropped (counted) on a listen-only port or when `encode` cannot
    /// carry them (returns false). Returns how many were encoded; call [`batch_written`](Self::batch_written) once
    /// `out` is written, so they count (and are recorded) as sent.
    pub fn encode_batch(
        &mut self,
        first: Outgoing,
        out: &mut Vec<u8>,
        mut encode: impl FnMut(CanFrame, &mut Vec<u8>) -> bool,
    ) -> u64 {
        out.clear();
        self.batch.clear();
        let mut next = Some(first);
        let mut count = 0u64;
        let mut batch = 0;
        while let Some(queued) = next.take() {
            batch += 1;
            if self.listen_only || !encode(queued.frame, out) {
                PortCounters::add(&self.counters.tx_dropped);
            } else {
                self.batch.push(queued);
                count += 1;
            }
            if batch < WRITE_BATCH {
                next = self.tx.try_recv().ok();
            }
        }
        count
    }

    /// Drops everything queued for sending (used while down).
    pub fn drain_tx(&mut self) {
        while self.tx.try_recv().is_ok() {
            PortCounters::add(&self.counters.tx_dropped);
        }
    }
}

/// Opens a port and keeps it open: returns at once; the port comes up (and comes back) in the background.
pub fn open(spec: PortSpec, clock: crate::clock::Clock, sims: &sim::Buses) -> PortHandle {
    open_with(spec, clock, sims, false)
}

/// [`open`], read in batches at the bridge's pace when `paced` ([`pace`]).
pub fn open_with(spec: PortSpec, clock: crate::clock::Clock, sims: &sim::Buses, paced: bool) -> PortHandle {
    let (handle, io, state_tx) = channels(spec.clone(), clock);
    handle.pace.set(paced);
    let sims = sims.clone();
    tokio::spawn(keep_open(spec, io, state_tx, sims));
    handle
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const STABLE: Duration = Duration::from_secs(10);

async fn keep_open(spec: PortSpec, mut io: PortIo, state: watch::Sender<PortState>, sims: sim::Buses) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let opened_at = tokio::time::Instant::now();
        let result = match &spec.kind {
            PortKind::Sim { bus } => {
                let _ = state.send(PortState::Up);
                sim::run(sims.get(bus), &mut io).await
            }
            PortKind::SocketCan { interface } => socketcan::run(interface, &mut io, &state).await,
            PortKind::Slcan { device, bitrate } => slcan::run(device, *bitrate, &mut io, &state).await,
            PortKind::Socketcand { host, port, interface } => {
                socketcand::run(host, *port, interface, &mut io, &state).await
            }
        };
        let reason = match result {
            Ok(()) => "closed by the other side".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if state.send(PortState::Down(reason.clone())).is_err() {
            return; // nobody holds the port any more
        }
        tracing::warn!(port = %spec.text, "port down: {reason}; reopening in {backoff:?}");
        PortCounters::add(&io.counters.reopens);
        let deadline = tokio::time::Instant::now() + backoff;
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = io.tx.recv() => PortCounters::add(&io.counters.tx_dropped),
            }
        }
        io.drain_tx();
        // A port that stayed up a while starts its backoff afresh; one that fails at once backs off further.
        backoff = if opened_at.elapsed() > STABLE { BACKOFF_MIN } else { (backoff * 2).min(BACKOFF_MAX) };
    }
}

/// Logs a repeated warning at most once per [`LogLimit::EVERY`], with how many were left out, so a port or client
/// sending garbage at line rate cannot flood the journal.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub const EVERY: Duration = Duration::from_secs(10);

    pub fn warn(&mut self, who: &str, what: &str) {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            tracing::warn!(port = %who, "{what} ({} similar messages left out)", self.suppressed);
        } else {
            tracing::warn!(port = %who, "{what}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Both ends of a port: what everybody holds and what its transport task works with.
fn channels(spec: PortSpec, clock: crate::clock::Clock) -> (PortHandle, PortIo, watch::Sender<PortState>) {
    let (rx_tx, _) = broadcast::channel(RX_CAPACITY);
    let (traffic, _) = broadcast::channel(RX_CAPACITY);
    let (tx_tx, tx_rx) = mpsc::channel(TX_CAPACITY);
    let (state_tx, state_rx) = watch::channel(PortState::Opening);
    let counters = Arc::new(PortCounters::default());
    let pace = pace::PaceHandle::default();
    let io = PortIo {
        rx: rx_tx.clone(),
        traffic: traffic.clone(),
        tx: tx_rx,
        counters: counters.clone(),
        clock,
        listen_only: spec.listen_only,
        spec_text: spec.text.clone(),
        batch: Vec::with_capacity(WRITE_BATCH),
        pace: pace.clone(),
        stall_log: LogLimit::default(),
    };
    let handle = PortHandle { spec, rx: rx_tx, traffic, tx: tx_tx, clock, state: state_rx, counters, pace };
    (handle, io, state_tx)
}

/// A transport's end of a port without a task behind it, for testing transports directly.
#[cfg(test)]
pub fn test_io(listen_only: bool) -> (PortIo, PortHandle, watch::Sender<PortState>) {
    let spec = PortSpec { kind: PortKind::Sim { bus: "test".into() }, listen_only, text: "test".into() };
    let (handle, io, state_tx) = channels(spec, crate::clock::Clock::new());
    (io, handle, state_tx)
}

/// Waits until `cond` holds, yielding to other tasks; tests put their own deadline around it.
#[cfg(test)]
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Subscribers that each count `total` frames carrying sequence numbers 0, 1, 2... in their data, in order.
#[cfg(test)]
pub fn count_in_order(port: &PortHandle, subscribers: usize, total: u64) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..subscribers)
        .map(|_| {
            let mut rx = port.subscribe();
            tokio::spawn(async move {
                let mut next = 0u64;
                while next < total {
                    let r = rx.recv().await.expect("no frame lost and the port still open");
                    let seq = u64::from_le_bytes(r.frame.data().try_into().expect("8 data bytes"));
                    assert_eq!(seq, next, "frames in order");
                    next += 1;
                }
                next
            })
        })
        .collect()
}

/// Sends `total` 8-byte frames with sequence numbers at `per_second`, as evenly as the timer allows.
#[cfg(test)]
pub async fn send_at_rate(mut send: impl FnMut(CanFrame), total: u64, per_second: u64) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = (start.elapsed().as_micros() as u64 * per_second / 1_000_000).min(total);
        while sent < due {
            send(CanFrame::extended(0x1FFF_FFF0, &sent.to_le_bytes()).expect("valid id"));
            sent += 1;
        }
    }
}

/// About the frame rate of a fully loaded 500 kbit/s bus with 8-byte frames (125 bits each with stuffing).
#[cfg(test)]
pub const FULL_500K_RATE: u64 = 4000;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_frame_is_lost_at_the_full_rate_of_a_500k_bus() {
        let total = FULL_500K_RATE * 3;
        let buses = sim::Buses::default();
        let port = open(PortSpec::parse("sim:load").unwrap(), crate::clock::Clock::new(), &buses);
        let mut state = port.state.clone();
        state.wait_for(|s| *s == PortState::Up).await.unwrap();
        let counters = count_in_order(&port, 2, total);
        let bus = buses.get("load");
        let (me, _) = bus.attach();
        send_at_rate(|f| bus.send(me, f), total, FULL_500K_RATE).await;
        for c in counters {
            let got = tokio::time::timeout(Duration::from_secs(30), c).await.expect("subscriber finished").unwrap();
            assert_eq!(got, total);
        }
        assert_eq!(port.counters.rx.load(Ordering::Relaxed), total);
        assert_eq!(port.counters.errors.load(Ordering::Relaxed), 0, "the port never fell behind the bus");
    }

    /// The next `n` frames of a traffic subscription, by id.
    async fn next_n(rx: &mut broadcast::Receiver<PortFrame>, n: usize) -> Vec<(u32, Direction)> {
        let mut got = Vec::new();
        while got.len() < n {
            let p = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").unwrap();
            got.push((p.frame.raw_id(), p.direction));
        }
        got.sort_by_key(|g| g.0);
        got
    }

    #[tokio::test]
    async fn traffic_holds_what_was_received_and_sent_but_not_what_was_dropped() {
        let buses = sim::Buses::default();
        let clock = crate::clock::Clock::new();
        let port = open(PortSpec::parse("sim:t").unwrap(), clock, &buses);
        let quiet = open(PortSpec::parse("sim:t?listen-only").unwrap(), clock, &buses);
        for p in [&port, &quiet] {
            p.state.clone().wait_for(|s| *s == PortState::Up).await.unwrap();
        }
        let (mut traffic, mut quiet_traffic) = (port.subscribe_traffic(), quiet.subscribe_traffic());
        let bus = buses.get("t");
        let (me, _) = bus.attach();
        let f = |id| CanFrame::standard(id, &[id as u8]).unwrap();
        assert!(quiet.send(f(0x1)), "queued, then dropped by the listen-only transport");
        assert!(port.send(f(0x2)));
        bus.send(me, f(0x3));
        assert_eq!(next_n(&mut traffic, 2).await, [(0x2, Direction::Tx), (0x3, Direction::Rx)]);
        let quiet_saw = next_n(&mut quiet_traffic, 2).await;
        assert_eq!(quiet_saw, [(0x2, Direction::Rx), (0x3, Direction::Rx)], "the dropped 0x1 is not shown as sent");
        let dropped = wait_until(|| quiet.counters.tx_dropped.load(Ordering::Relaxed) == 1);
        tokio::time::timeout(Duration::from_secs(10), dropped).await.expect("the listen-only port counts the drop");
        assert_eq!(quiet.counters.tx.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_is_counted_as_tx_overflow() {
        let (_io, handle, _state) = test_io(false);
        let f = CanFrame::standard(0x1D4, &[0; 8]).unwrap();
        for _ in 0..TX_CAPACITY {
            assert!(handle.send(f));
        }
        assert!(!handle.send(f), "the transport is not draining: the queue refuses");
        assert_eq!(handle.counters.tx_overflow.load(Ordering::Relaxed), 1);
        assert_eq!(handle.counters.tx_dropped.load(Ordering::Relaxed), 1);
    }
}
