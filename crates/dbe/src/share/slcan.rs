//! The slcan adapter side: a DBE port served as if it were a USB-CAN adapter on a serial device, so any slcan
//! host (python-can's `slcan` interface, Linux `slcand`, DBE's own `slcan:` port) can use it. `dbe simulate`
//! puts its simulated bus behind a pty this way.
//!
//! It answers as a Lawicel adapter does (table in `dbe_link::slcan`): `S`/`s`/`Z` only while closed, `O`/`L`
//! only while closed, `C` only while open, frames only while open with `O`; BEL for everything else and for
//! lines that do not parse. The bitrate is accepted and ignored: the served port's bitrate is DBE's. Frames
//! received by the port go to the host while the channel is open, from the moment it was opened.
//!
//! A [`BusOff`] switch makes the adapter behave as one whose controller went bus-off: every frame the host asks
//! it to send is refused with BEL, nothing is received, and `F` reports bus error and error passive; switching it
//! off is the controller's automatic recovery (frames flow again, from that moment).
//!
//! The device is reopened with backoff when it fails (a pty whose other side closed gives EIO), so restarting
//! socat or replugging a serial cable needs no restart here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use dbe_link::slcan::{self, Command, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_serial::SerialPortBuilderExt;

use super::{next_batch, write_or_drop};
use crate::ports::{LogLimit, PortHandle};

/// What `V` answers: hardware 1, software 0 (no real firmware to report).
const VERSION: Reply = Reply::Version { hardware: 1, software: 0 };
const SERIAL: Reply = Reply::SerialNumber(*b"DBE0");

/// `F` flags while bus-off: bus error (bit 7) and error passive (bit 5), as a Lawicel adapter reports them.
const BUS_OFF_FLAGS: u8 = 0xA0;

/// Whether the adapter's controller is bus-off; shared with whoever injects the fault.
#[derive(Clone, Debug, Default)]
pub struct BusOff(Arc<AtomicBool>);

impl BusOff {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `port` on the serial device at `path` forever, reopening it when it fails.
pub async fn serve_device(path: String, port: PortHandle, bus_off: BusOff) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::time::Instant::now();
        let result = match tokio_serial::new(&path, crate::ports::slcan::TTY_BAUD).open_native_async() {
            Ok(dev) => serve_on(dev, &port, &path, &bus_off).await,
            Err(e) => Err(anyhow!("cannot open {path}: {e}")),
        };
        if let Err(e) = result {
            tracing::warn!("slcan adapter on {path}: {e:#}; reopening in {backoff:?}");
        }
        backoff = if opened.elapsed() > Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            (backoff * 2).min(Duration::from_secs(2))
        };
        tokio::time::sleep(backoff).await;
    }
}

/// The adapter on any byte stream, until the host side closes or fails.
pub async fn serve_on<S>(stream: S, port: &PortHandle, who: &str, bus_off: &BusOff) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut decoder = slcan::Decoder::<Command>::new();
    let mut buf = vec![0u8; 4096];
    // Some(receiver) while the channel is open.
    let mut rx = None;
    let mut listen_only = false;
    let mut timestamps = false;
    let mut lost = 0u64;
    let mut lost_log = LogLimit::default();
    let mut refused_log = LogLimit::default();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            r = reader.read(&mut buf) => {
                let n = r.map_err(|e| anyhow!("reading: {e}"))?;
                if n == 0 {
                    bail!("the host side closed");
                }
                decoder.push(&buf[..n]);
                out.clear();
                while let Some(m) = decoder.poll() {
                    let open = rx.is_some();
                    let reply = match m {
                        Err(_) => Reply::Error,
                        Ok(Command::SetBitrate(_) | Command::SetBtr { .. }) if !open => Reply::Ok,
                        Ok(Command::Timestamps(on)) if !open => {
                            timestamps = on;
                            Reply::Ok
                        }
                        Ok(c @ (Command::Open | Command::ListenOnly)) if !open => {
                            listen_only = c == Command::ListenOnly;
                            rx = Some(port.subscribe());
                            Reply::Ok
                        }
                        Ok(Command::Close) if open => {
                            rx = None;
                            Reply::Ok
                        }
                        Ok(Command::Version) => VERSION,
                        Ok(Command::DetailedVersion) => Reply::DetailedVersion(*b"DBE1"),
                        Ok(Command::SerialNumber) => SERIAL,
                        Ok(Command::Status) => Reply::Status(if bus_off.get() { BUS_OFF_FLAGS } else { 0 }),
                        Ok(Command::Empty) => Reply::Ok,
                        Ok(Command::Transmit(frame)) if open && !listen_only => {
                            if bus_off.get() {
                                Reply::Error
                            } else if port.spec.listen_only {
                                refused_log.warn(who, &format!("refused a frame for listen-only port {}", port.spec.text));
                                Reply::Error
                            } else if port.send(frame) {
                                Reply::Sent { extended: frame.is_extended() }
                            } else {
                                Reply::Error
                            }
                        }
                        Ok(_) => Reply::Error,
                    };
                    reply.encode(&mut out);
                }
                write_or_drop(&mut writer, &out).await?;
            }
            b = async { next_batch(rx.as_mut().expect("guarded"), &mut lost).await }, if rx.is_some() => {
                let Some(batch) = b else { return Ok(()) };
                out.clear();
                for r in batch.into_iter().filter(|_| !bus_off.get()) {
                    let timestamp_ms = timestamps.then_some((r.at_ms % 60_000) as u16);
                    Reply::Frame { frame: r.frame, timestamp_ms }.encode(&mut out);
                }
                if lost > 0 {
                    lost_log.warn(who, &format!("slcan host fell behind and lost {lost} frames"));
                    lost = 0;
                }
                write_or_drop(&mut writer, &out).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{self, PortState};
    use crate::share::tests::{frame, next_from_others, sim_port, within};
    use dbe_core::CanFrame;
    use tokio::io::AsyncWriteExt;

    /// DBE's own slcan host port, up, driving this adapter over an in-process pipe for the simulated bus `name`.
    async fn host_through_adapter(name: &str) -> (ports::PortHandle, crate::ports::sim::Bus) {
        let (served, bus, _clock) = sim_port(name);
        let (host_end, adapter_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move { serve_on(adapter_end, &served, "test", &BusOff::default()).await });
        let (mut io, host, state_tx) = ports::test_io(false);
        tokio::spawn(async move { ports::slcan::run_on(host_end, 6, &mut io, &state_tx).await });
        let mut state = host.state.clone();
        within("host up", state.wait_for(|s| *s == PortState::Up)).await.unwrap();
        (host, bus)
    }

    /// DBE's own slcan host port against this adapter, over an in-process pipe: the two sides of the codec meet.
    #[tokio::test]
    async fn dbes_host_port_drives_the_adapter() {
        let (host, bus) = host_through_adapter("adapter").await;
        let mut rx = host.subscribe();
        let (me, mut bus_rx) = bus.attach();
        for i in 0..100 {
            bus.send(me, frame(i));
        }
        for i in 0..100 {
            assert_eq!(within("frame at the host", rx.recv()).await.unwrap().frame, frame(i));
        }
        let f = CanFrame::extended(0x1FFF_FFFF, &[1]).unwrap();
        assert!(host.send(f));
        let got = next_from_others(&mut bus_rx, me).await;
        assert_eq!(got, f);
        assert_eq!(host.counters.errors.load(std::sync::atomic::Ordering::Relaxed), 0, "every answer matched");
    }

    /// The whole serial path at bus speed: simulated bus → adapter → slcan bytes → DBE's host port → two
    /// subscribers, every frame in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_frame_is_lost_through_slcan_at_the_full_rate_of_a_500k_bus() {
        let total = ports::FULL_500K_RATE * 3;
        let (host, bus) = host_through_adapter("slcan-load").await;
        let counters = ports::count_in_order(&host, 2, total);
        let (me, _) = bus.attach();
        ports::send_at_rate(|f| bus.send(me, f), total, ports::FULL_500K_RATE).await;
        for c in counters {
            let got = tokio::time::timeout(Duration::from_secs(30), c).await.expect("subscriber finished").unwrap();
            assert_eq!(got, total);
        }
        assert_eq!(host.counters.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    async fn expect(host: &mut tokio::io::DuplexStream, send: &[u8], want: &[u8]) {
        host.write_all(send).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < want.len() {
            let n = within("an answer", host.read(&mut buf)).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want), "answer to {send:?}");
    }

    #[tokio::test]
    async fn answers_like_a_lawicel_adapter() {
        let (served, _bus, _clock) = sim_port("lawicel");
        let (mut host, adapter_end) = tokio::io::duplex(4096);
        tokio::spawn(async move { serve_on(adapter_end, &served, "test", &BusOff::default()).await });
        // python-can's startup: C (refused, closed), S6, empty, O; then V and N.
        expect(&mut host, b"C\rS6\r\rO\r", b"\x07\r\r\r").await;
        expect(&mut host, b"V\rN\r", b"V0100\rNDBE0\r").await;
        expect(&mut host, b"S5\r", b"\x07").await; // no bitrate change while open
        expect(&mut host, b"t1DB1AA\rT000000012BBCC\r", b"z\rZ\r").await;
        expect(&mut host, b"hello\rt12\r", b"\x07\x07").await;
        expect(&mut host, b"C\rt1DB1AA\r", b"\r\x07").await; // closed: no frames
        expect(&mut host, b"L\rt1DB1AA\r", b"\r\x07").await; // listen-only: no frames
    }

    /// Bus-off: the host's frames are refused (BEL), nothing arrives, `F` says bus error; recovery resumes both.
    #[tokio::test]
    async fn bus_off_refuses_and_hides_until_recovery() {
        let (served, bus, _clock) = sim_port("bus-off");
        let (mut host, adapter_end) = tokio::io::duplex(4096);
        let bus_off = BusOff::default();
        let switch = bus_off.clone();
        let served_counters = served.counters.clone();
        tokio::spawn(async move { serve_on(adapter_end, &served, "test", &bus_off).await });
        expect(&mut host, b"S6\rO\rF\r", b"\r\rF00\r").await;
        switch.set(true);
        expect(&mut host, b"t1DB1AA\rF\r", b"\x07FA0\r").await;
        let (me, mut bus_rx) = bus.attach();
        bus.send(me, frame(1));
        within("the frame at the adapter's port", async {
            while served_counters.rx.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        // One more exchange: on this single-threaded runtime the adapter takes the waiting frame (and drops it,
        // bus-off) in the same turn as it answers, before the switch below.
        expect(&mut host, b"F\r", b"FA0\r").await;
        switch.set(false);
        bus.send(me, frame(2));
        // Only the frame sent after recovery arrives; the host's frame now reaches the bus.
        let mut want = Vec::new();
        Reply::Frame { frame: frame(2), timestamp_ms: None }.encode(&mut want);
        expect(&mut host, b"", &want).await;
        expect(&mut host, b"t1DB1AA\r", b"z\r").await;
        let got = next_from_others(&mut bus_rx, me).await;
        assert_eq!(got, CanFrame::standard(0x1DB, &[0xAA]).unwrap());
    }
}
