//! `slcan:DEVICE?bitrate=N` ports: a USB-CAN adapter speaking slcan (CANable, USBtin) on a serial device, or a
//! pty with a simulated adapter behind it (`dbe simulate --slcan`). DBE is the host: it closes the channel, sets
//! the bitrate, opens it (`L` when listen-only) and then moves frames both ways through the `dbe-link` codec.
//!
//! The adapter answers every command with `\r` (accepted), BEL (refused) or `z\r`/`Z\r` (frame queued). The
//! set-up commands go one at a time, each waiting for its answer: `C` first, to leave a channel an earlier run left
//! open (adapters refuse it when already closed, some do not answer it; neither is an error), then `S<n>`, then
//! `O`. A refused bitrate or open, or no answer within [`OPEN_TIMEOUT`] (a device that is not an slcan adapter),
//! fails the port so it is reopened with backoff. Once open, a refused transmit (adapter buffer full, bus off) is
//! counted as an error.
//!
//! Pty quirks: once the other side of a pty is closed (socat or the simulator gone), reads give EIO or end of
//! file; both fail the port, and reopening by path finds the new pty when socat recreates its link.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use dbe_link::slcan::{self, Command, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_serial::SerialPortBuilderExt;

use super::{LogLimit, PortCounters, PortIo, PortState};

/// How long the adapter may take to confirm the open; a real one answers in milliseconds.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// Serial speed of the host link. USB CDC adapters ignore it; a pty too.
pub const TTY_BAUD: u32 = 115_200;
/// How long to wait for the answer to the initial `C` before going on without it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
/// Opens the serial device and runs the port on it until it fails.
pub async fn run(device: &str, bitrate: u32, io: &mut PortIo, state: &watch::Sender<PortState>) -> Result<()> {
    let code = slcan::bitrate_code(bitrate).ok_or_else(|| anyhow!("slcan has no code for bitrate {bitrate}"))?;
    let cannot_open = |e: &dyn std::fmt::Display| anyhow!("cannot open slcan device {device}: {e}");
    let result = if io.pace.is_on() {
        // Read in batches at the bridge's pace (`ports::pace`).
        let tty = tokio_serial::new(device, TTY_BAUD).open_native().map_err(|e| cannot_open(&e))?;
        super::pace::set_nonblocking(&tty).map_err(|e| cannot_open(&e))?;
        let link = super::pace::PolledLink::new(tty, io.pace.clone());
        run_on(link, code, io, state).await
    } else {
        let port = tokio_serial::new(device, TTY_BAUD).open_native_async().map_err(|e| cannot_open(&e))?;
        run_on(port, code, io, state).await
    };
    result.map_err(|e| anyhow!("slcan {device}: {e:#}"))
}

/// Reads until the adapter answers a command (`\r`, BEL, `z`, `Z`); frames and other replies before it are skipped
/// (the channel is not ours yet). `None` when nothing answered within `timeout`.
async fn answer<S: AsyncRead + Unpin>(
    link: &mut S,
    decoder: &mut slcan::Decoder<Reply>,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<Option<Reply>> {
    let wait = async {
        loop {
            while let Some(m) = decoder.poll() {
                if let Ok(r @ (Reply::Ok | Reply::Error | Reply::Sent { .. })) = m {
                    return Ok(r);
                }
            }
            let n = link.read(buf).await.map_err(|e| anyhow!("reading: {e}"))?;
            if n == 0 {
                bail!("the device closed (adapter unplugged or the pty's other side gone)");
            }
            decoder.push(&buf[..n]);
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// The port on any byte stream (a serial device, or a duplex pipe in tests).
pub async fn run_on<S>(mut link: S, code: u8, io: &mut PortIo, state: &watch::Sender<PortState>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut decoder = slcan::Decoder::<Reply>::new();
    let mut buf = vec![0u8; 4096];
    // One command at a time, each waiting for its answer, so no answer can be taken for another's. The answer to
    // `C` is not needed (refused when already closed, missing on some adapters).
    link.write_all(&Command::Close.to_bytes()).await?;
    let _ = answer(&mut link, &mut decoder, &mut buf, CLOSE_TIMEOUT).await?;
    link.write_all(&Command::SetBitrate(code).to_bytes()).await?;
    match answer(&mut link, &mut decoder, &mut buf, OPEN_TIMEOUT).await? {
        Some(Reply::Error) => bail!("the adapter refused bitrate code S{code}"),
        Some(_) => {}
        None => bail!("no answer to S{code} within {OPEN_TIMEOUT:?}: is this an slcan adapter?"),
    }
    let open = if io.listen_only { Command::ListenOnly } else { Command::Open };
    link.write_all(&open.to_bytes()).await?;
    match answer(&mut link, &mut decoder, &mut buf, OPEN_TIMEOUT).await? {
        Some(Reply::Error) => bail!("the adapter refused to open the channel"),
        Some(_) => {}
        None => bail!("no answer to the open command within {OPEN_TIMEOUT:?}: is this an slcan adapter?"),
    }
    let _ = state.send(PortState::Up);
    let mut garbage_log = LogLimit::default();
    let mut refused_log = LogLimit::default();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            r = link.read(&mut buf) => {
                let n = r.map_err(|e| anyhow!("reading: {e}"))?;
                if n == 0 {
                    bail!("the device closed (adapter unplugged or the pty's other side gone)");
                }
                decoder.push(&buf[..n]);
                while let Some(msg) = decoder.poll() {
                    match msg {
                        Ok(Reply::Frame { frame, .. }) => io.deliver(frame),
                        // The answers to transmits: accepted needs nothing.
                        Ok(Reply::Ok | Reply::Sent { .. }) => {}
                        Ok(Reply::Error) => {
                            PortCounters::add(&io.counters.errors);
                            refused_log.warn(&io.spec_text, "the adapter refused a frame (buffer full or bus off?)");
                        }
                        // Version, serial number and status answers are only ever asked for by other tools.
                        Ok(_) => {}
                        Err(e) => {
                            PortCounters::add(&io.counters.errors);
                            garbage_log.warn(&io.spec_text, &e.to_string());
                        }
                    }
                }
            }
            f = io.tx.recv() => {
                let Some(first) = f else {
                    let _ = link.write_all(&Command::Close.to_bytes()).await;
                    return Ok(());
                };
                io.encode_batch(first, &mut out, |frame, out| {
                    Command::Transmit(frame).encode(out);
                    true
                });
                if !out.is_empty() {
                    io.write_batch(&mut link, &out).await.map_err(|e| anyhow!("writing: {e}"))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{test_io, PortCounters};
    use dbe_core::CanFrame;
    use std::sync::atomic::Ordering;

    /// A scripted adapter on the other end of a duplex pipe: records the host's commands, answers as told.
    async fn read_commands(s: &mut tokio::io::DuplexStream, d: &mut slcan::Decoder<Command>, n: usize) -> Vec<Command> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < n {
            while let Some(c) = d.poll() {
                got.push(c.unwrap());
            }
            if got.len() >= n {
                break;
            }
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "host closed the link");
            d.push(&buf[..k]);
        }
        got
    }

    #[tokio::test]
    async fn opens_the_channel_then_moves_frames_both_ways() {
        let (host, mut adapter) = tokio::io::duplex(4096);
        let (mut io, handle, state_tx) = test_io(false);
        let mut rx = handle.subscribe();
        let mut state = handle.state.clone();
        let task = tokio::spawn(async move { run_on(host, 6, &mut io, &state_tx).await });
        let mut d = slcan::Decoder::<Command>::new();
        // Closing a closed channel is refused by real adapters; the port still comes up.
        for (cmd, answer) in [(Command::Close, &b"\x07"[..]), (Command::SetBitrate(6), b"\r"), (Command::Open, b"\r")] {
            assert_eq!(read_commands(&mut adapter, &mut d, 1).await, [cmd]);
            adapter.write_all(answer).await.unwrap();
        }
        state.wait_for(|s| *s == PortState::Up).await.unwrap();
        adapter.write_all(b"t1DB801020304050607AA\rgarbage!\rT12ABCDEF2AA55\r").await.unwrap();
        assert_eq!(rx.recv().await.unwrap().frame, CanFrame::standard(0x1DB, &[1, 2, 3, 4, 5, 6, 7, 0xAA]).unwrap());
        assert_eq!(rx.recv().await.unwrap().frame, CanFrame::extended(0x12AB_CDEF, &[0xAA, 0x55]).unwrap());
        assert_eq!(handle.counters.errors.load(Ordering::Relaxed), 1, "the garbage line is counted");
        let f = CanFrame::standard(0x1D4, &[0x6E, 0x6E]).unwrap();
        assert!(handle.send(f));
        assert_eq!(read_commands(&mut adapter, &mut d, 1).await, [Command::Transmit(f)]);
        adapter.write_all(b"\x07").await.unwrap(); // refused: counted, the port stays up
        drop(adapter);
        let err = task.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("closed"), "{err}");
        assert_eq!(handle.counters.errors.load(Ordering::Relaxed), 2);
        assert_eq!(handle.counters.tx.load(Ordering::Relaxed), 1);
    }

    /// An adapter that stops reading (its buffer full) must not stop the port reading: a write waits at most
    /// WRITE_STALL, the batch is dropped and counted, and the adapter's refusals still arrive.
    #[tokio::test]
    async fn an_adapter_that_reads_nothing_does_not_stop_the_port_reading() {
        let (host, mut adapter) = tokio::io::duplex(64);
        let (mut io, handle, state_tx) = test_io(false);
        let mut state = handle.state.clone();
        let _task = tokio::spawn(async move { run_on(host, 6, &mut io, &state_tx).await });
        let mut d = slcan::Decoder::<Command>::new();
        for cmd in [Command::Close, Command::SetBitrate(6), Command::Open] {
            assert_eq!(read_commands(&mut adapter, &mut d, 1).await, [cmd]);
            adapter.write_all(b"\r").await.unwrap();
        }
        state.wait_for(|s| *s == PortState::Up).await.unwrap();
        // From now on the adapter reads nothing: 64 bytes of pipe hold two or three frames.
        let f = CanFrame::standard(0x1D4, &[0x6E, 0x6E, 0, 4, 0xC7, 0x46, 0xE0, 0x12]).unwrap();
        let dropped = || handle.counters.tx_dropped.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while dropped() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no batch was ever dropped");
            handle.send(f);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(handle.counters.tx_overflow.load(Ordering::Relaxed) >= 1, "a stall counts as an overflow");
        // The adapter refuses something: the refusal is read although the host's writes still stall.
        adapter.write_all(b"\x07\x07\x07").await.unwrap();
        let errors = || handle.counters.errors.load(Ordering::Relaxed);
        while errors() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "the refusals were never read");
            handle.send(f);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A real pty: the adapter (DBE's own, serving a simulated bus) holds the master, the port opens the slave by
    /// a symlink, as it opens the link socat makes. Closing the master (socat killed, adapter unplugged) takes the
    /// port down; a new pty behind the same link brings it back.
    #[tokio::test]
    async fn a_pty_whose_other_side_closes_goes_down_and_comes_back() {
        use tokio_serial::SerialPort as _;
        let dir = std::env::temp_dir().join(format!("dbe-slcan-pty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("tty");
        let buses = crate::ports::sim::Buses::default();
        let clock = crate::clock::Clock::new();
        let served = crate::ports::open(crate::ports::PortSpec::parse("sim:pty").unwrap(), clock, &buses);
        let bus = buses.get("pty");
        let (me, _) = bus.attach();
        let plug_in = |link: &std::path::Path| {
            let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(slave.name().unwrap(), link).unwrap();
            let served = served.clone();
            // The slave handle stays open with the adapter so the master never reads EIO before the port opens.
            tokio::spawn(async move {
                let _slave = slave;
                crate::share::slcan::serve_on(master, &served, "test", &Default::default()).await
            })
        };
        let adapter = plug_in(&link);
        let spec = crate::ports::PortSpec::parse(&format!("slcan:{}", link.display())).unwrap();
        let port = crate::ports::open(spec, clock, &buses);
        let mut state = port.state.clone();
        let mut rx = port.subscribe();
        tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| *s == PortState::Up))
            .await
            .expect("timed out: up")
            .unwrap();
        let f = CanFrame::standard(0x55B, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        bus.send(me, f);
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().frame, f);

        adapter.abort();
        tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| matches!(s, PortState::Down(_))))
            .await
            .expect("timed out: down")
            .unwrap();

        let _adapter = plug_in(&link);
        tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| *s == PortState::Up))
            .await
            .expect("timed out: up again")
            .unwrap();
        assert!(port.counters.reopens.load(Ordering::Relaxed) >= 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn listen_only_opens_with_l_and_sends_nothing() {
        let (host, mut adapter) = tokio::io::duplex(4096);
        let (mut io, handle, state_tx) = test_io(true);
        let mut state = handle.state.clone();
        let _task = tokio::spawn(async move { run_on(host, 5, &mut io, &state_tx).await });
        let mut d = slcan::Decoder::<Command>::new();
        // This adapter does not answer `C` at all; the host goes on after a moment.
        assert_eq!(read_commands(&mut adapter, &mut d, 1).await, [Command::Close]);
        assert_eq!(read_commands(&mut adapter, &mut d, 1).await, [Command::SetBitrate(5)]);
        adapter.write_all(b"\r").await.unwrap();
        assert_eq!(read_commands(&mut adapter, &mut d, 1).await, [Command::ListenOnly]);
        adapter.write_all(b"\r").await.unwrap();
        state.wait_for(|s| *s == PortState::Up).await.unwrap();
        handle.send(CanFrame::standard(0x123, &[]).unwrap());
        let counters: &PortCounters = &handle.counters;
        let dropped = crate::ports::wait_until(|| counters.tx_dropped.load(Ordering::Relaxed) == 1);
        tokio::time::timeout(Duration::from_secs(10), dropped).await.expect("the frame is dropped");
        assert_eq!(handle.counters.tx.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_refused_open_or_a_silent_device_fails_the_port() {
        let (host, mut adapter) = tokio::io::duplex(4096);
        let (mut io, _handle, state_tx) = test_io(false);
        let task = tokio::spawn(async move { run_on(host, 6, &mut io, &state_tx).await });
        let mut d = slcan::Decoder::<Command>::new();
        for answer in [&b"\r"[..], b"\r", b"\x07"] {
            let _ = read_commands(&mut adapter, &mut d, 1).await;
            adapter.write_all(answer).await.unwrap();
        }
        let err = task.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("refused to open"), "{err}");

        tokio::time::pause();
        let (host, _adapter) = tokio::io::duplex(4096);
        let (mut io, _handle, state_tx) = test_io(false);
        let err = run_on(host, 6, &mut io, &state_tx).await.unwrap_err().to_string();
        assert!(err.contains("no answer"), "{err}");
    }
}
