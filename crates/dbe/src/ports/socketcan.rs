//! `socketcan:IFACE` ports: Linux SocketCAN through the `socketcan` crate.
//!
//! The kernel hands every open socket every frame, so other programs (candump, SavvyCAN through socketcand, OVMS
//! tools) share the interface simply by opening their own sockets; this task only serves DBE's own consumers.
//!
//! The socket asks the kernel for error frames (they are off by default), so bus errors, missing ACKs, error-passive
//! and bus-off are counted (the bridge loop turns the count into `CAN_BUS_ERROR`) and logged in words, never mistaken
//! for data. A frame the interface cannot take — its queue full (`ENOBUFS`) or the socket's buffer full (`EAGAIN`),
//! which is what bus-off or a bus with no other node to ACK leads to — is dropped and counted as TX overflow: the
//! port stays up and keeps reading, and the next keep-alive is tried afresh. Any other write error (interface down
//! or removed) fails the port, which is reopened with backoff.
//!
//! Recovery from bus-off is the kernel's: `ip link set can0 type can bitrate 500000 restart-ms 100` restarts the
//! controller by itself (DBE logs the restart); without `restart-ms` the interface stays bus-off until restarted by
//! hand.
//!
//! Source for the error frame layout: Linux `include/uapi/linux/can/error.h` (class bits in the id; data byte 1
//! controller status, byte 2-3 protocol violation, byte 4 transceiver, bytes 6-7 error counters with
//! `CAN_ERR_CNT`).

use dbe_core::CanFrame;
use embedded_can::Frame as _;
use socketcan::SocketOptions as _;
use tokio::sync::watch;

use super::{PortCounters, PortIo, PortState};

/// Converts a kernel frame into the core's; `None` for error frames.
pub fn from_socketcan(frame: &socketcan::CanFrame) -> Option<CanFrame> {
    match frame {
        socketcan::CanFrame::Data(d) => CanFrame::new(d.id(), d.data()).ok(),
        socketcan::CanFrame::Remote(r) => <CanFrame as embedded_can::Frame>::new_remote(r.id(), r.dlc()),
        socketcan::CanFrame::Error(_) => None,
    }
}

/// Converts the core's frame into a kernel frame.
pub fn to_socketcan(frame: &CanFrame) -> Option<socketcan::CanFrame> {
    if frame.is_remote() {
        socketcan::CanFrame::new_remote(frame.id(), frame.len())
    } else {
        socketcan::CanFrame::new(frame.id(), frame.data())
    }
}

/// Error classes in an error frame's id (`CAN_ERR_*` in error.h), with their words for the log.
const ERROR_CLASSES: &[(u32, &str)] = &[
    (0x0001, "TX timeout"),
    (0x0002, "arbitration lost"),
    (0x0004, "controller problem"),
    (0x0008, "protocol violation"),
    (0x0010, "transceiver problem"),
    (0x0020, "no ACK (no other node on the bus?)"),
    (0x0040, "bus-off"),
    (0x0080, "bus error"),
    (0x0100, "controller restarted"),
];
const CAN_ERR_CRTL: u32 = 0x0004;
const CAN_ERR_BUSOFF: u32 = 0x0040;
const CAN_ERR_RESTARTED: u32 = 0x0100;
const CAN_ERR_CNT: u32 = 0x0200;
/// Controller status bits in data byte 1 (`CAN_ERR_CRTL_*`).
const CONTROLLER_STATUS: &[(u8, &str)] = &[
    (0x01, "RX overflow"),
    (0x02, "TX overflow"),
    (0x04, "RX warning"),
    (0x08, "TX warning"),
    (0x10, "RX error-passive"),
    (0x20, "TX error-passive"),
    (0x40, "back to error-active"),
];

/// What a kernel error frame says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    pub bus_off: bool,
    pub restarted: bool,
    /// For the log, e.g. "controller problem (TX error-passive), no ACK (...); TX errors 128, RX errors 0".
    pub text: String,
}

pub fn describe_error(bits: u32, data: &[u8]) -> ErrorReport {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let mut parts = Vec::new();
    for &(bit, name) in ERROR_CLASSES {
        if bits & bit == 0 {
            continue;
        }
        if bit == CAN_ERR_CRTL {
            let status: Vec<&str> =
                CONTROLLER_STATUS.iter().filter(|(b, _)| byte(1) & b != 0).map(|&(_, n)| n).collect();
            if !status.is_empty() {
                parts.push(format!("{name} ({})", status.join(", ")));
                continue;
            }
        }
        parts.push(name.to_string());
    }
    let unknown = bits & !(ERROR_CLASSES.iter().fold(CAN_ERR_CNT, |m, (b, _)| m | b));
    if unknown != 0 {
        parts.push(format!("unknown error class 0x{unknown:X}"));
    }
    let mut text = if parts.is_empty() { "error frame without a class".to_string() } else { parts.join(", ") };
    if bits & CAN_ERR_CNT != 0 {
        text.push_str(&format!("; TX errors {}, RX errors {}", byte(6), byte(7)));
    }
    ErrorReport { bus_off: bits & CAN_ERR_BUSOFF != 0, restarted: bits & CAN_ERR_RESTARTED != 0, text }
}

/// What a failed write means for the port.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The interface's queue or the socket's buffer is full: the bus is not taking frames. Drop and count.
    QueueFull,
    /// The interface is down or gone: reopen the port.
    Fatal,
}

pub fn classify_write_error(e: &std::io::Error) -> WriteFailure {
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => WriteFailure::QueueFull,
        _ if e.kind() == std::io::ErrorKind::WouldBlock => WriteFailure::QueueFull,
        _ => WriteFailure::Fatal,
    }
}

/// The most frames taken from the socket in one wake-up.
const READ_BATCH: usize = 256;

/// `fut`'s output if it is ready on its first poll, else `None` (the future is dropped: a read not yet possible
/// is simply not made).
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

pub async fn run(interface: &str, io: &mut PortIo, state: &watch::Sender<PortState>) -> anyhow::Result<()> {
    let socket = socketcan::tokio::CanSocket::open(interface)
        .map_err(|e| anyhow::anyhow!("cannot open SocketCAN interface {interface}: {e}"))?;
    if let Err(e) = socket.set_error_filter_accept_all() {
        tracing::warn!(port = interface, "cannot ask for error frames ({e}): bus-off will only show as silence");
    }
    let _ = state.send(PortState::Up);
    let mut bus_off = false;
    let mut overflow_log = super::LogLimit::default();
    // A bus with a broken wire can send thousands of error frames a second.
    let mut error_log = super::LogLimit::default();
    let mut pacer = io.pace.pacer();
    let mut batch: Vec<socketcan::CanFrame> = Vec::with_capacity(READ_BATCH);
    loop {
        tokio::select! {
            r = async { pacer.wait().await; socket.read_frame().await } => {
                batch.clear();
                batch.push(r.map_err(|e| anyhow::anyhow!("reading {interface}: {e}"))?);
                // Whatever else the socket already holds, without waiting (one wake-up per batch).
                while batch.len() < READ_BATCH {
                    match ready_now(socket.read_frame()) {
                        Some(r) => batch.push(r.map_err(|e| anyhow::anyhow!("reading {interface}: {e}"))?),
                        None => break,
                    }
                }
                pacer.delivered(batch.len());
                for frame in &batch {
                match (frame, from_socketcan(frame)) {
                    (_, Some(f)) => io.deliver(f),
                    (socketcan::CanFrame::Error(e), None) => {
                        PortCounters::add(&io.counters.errors);
                        let report = describe_error(e.error_bits(), e.data());
                        if report.bus_off && !bus_off {
                            tracing::error!(port = interface, "CAN bus-off: {}", report.text);
                        } else if report.restarted {
                            tracing::info!(port = interface, "CAN controller restarted after bus-off: {}", report.text);
                        } else {
                            error_log.warn(interface, &format!("CAN error: {}", report.text));
                        }
                        bus_off = (bus_off || report.bus_off) && !report.restarted;
                    }
                    (_, None) => PortCounters::add(&io.counters.errors),
                }
                }
            }
            f = io.tx.recv() => {
                let Some(out) = f else { return Ok(()) };
                let frame = out.frame;
                if io.listen_only {
                    PortCounters::add(&io.counters.tx_dropped);
                    continue;
                }
                let Some(kf) = to_socketcan(&frame) else { continue };
                // Never wait for room: a bus that takes nothing must not stop this task from reading.
                match socket.try_write_frame(kf) {
                    Ok(()) => io.sent(out),
                    Err(e) if classify_write_error(&e) == WriteFailure::QueueFull => {
                        PortCounters::add(&io.counters.tx_dropped);
                        PortCounters::add(&io.counters.tx_overflow);
                        overflow_log.warn(interface, &format!("frame dropped, the interface takes nothing ({e})"));
                    }
                    Err(e) => anyhow::bail!("writing {interface}: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_convert_both_ways() {
        for f in [
            CanFrame::standard(0x1DB, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
            CanFrame::extended(0x4210, &[0xAA]).unwrap(),
            CanFrame::standard(0x7BB, &[]).unwrap(),
            <CanFrame as embedded_can::Frame>::new_remote(embedded_can::StandardId::new(0x123).unwrap(), 4).unwrap(),
        ] {
            let k = to_socketcan(&f).unwrap();
            assert_eq!(from_socketcan(&k), Some(f));
        }
    }

    #[test]
    fn error_frames_are_not_data() {
        let e = socketcan::CanFrame::Error(socketcan::CanErrorFrame::new_error(0x004, &[0; 8]).unwrap());
        assert_eq!(from_socketcan(&e), None);
    }

    #[test]
    fn error_frames_are_described_in_words() {
        let r = describe_error(0x0040, &[0; 8]);
        assert!(r.bus_off && !r.restarted);
        assert_eq!(r.text, "bus-off");
        let r = describe_error(0x0004 | 0x0020 | 0x0200, &[0, 0x30, 0, 0, 0, 0, 136, 0]);
        assert!(!r.bus_off);
        assert_eq!(
            r.text,
            "controller problem (RX error-passive, TX error-passive), no ACK (no other node on the bus?); \
             TX errors 136, RX errors 0"
        );
        let r = describe_error(0x0100, &[0; 8]);
        assert!(r.restarted && !r.bus_off);
        assert_eq!(describe_error(0x0004, &[0; 8]).text, "controller problem");
        assert_eq!(describe_error(0x8000, &[]).text, "unknown error class 0x8000", "short data does not panic");
        assert_eq!(describe_error(0, &[]).text, "error frame without a class");
    }

    #[test]
    fn a_full_queue_drops_the_frame_but_a_missing_interface_fails_the_port() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(classify_write_error(&e(libc::ENOBUFS)), WriteFailure::QueueFull);
        assert_eq!(classify_write_error(&e(libc::EAGAIN)), WriteFailure::QueueFull);
        assert_eq!(classify_write_error(&e(libc::ENETDOWN)), WriteFailure::Fatal);
        assert_eq!(classify_write_error(&e(libc::ENODEV)), WriteFailure::Fatal);
    }
}
