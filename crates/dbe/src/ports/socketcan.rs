//! `socketcan:IFACE` ports: Linux SocketCAN through the `socketcan` crate.
//!
//! The kernel hands every open socket every frame, so other programs (candump, SavvyCAN through socketcand, OVMS
//! tools) share the interface simply by opening their own sockets; this task only serves DBE's own consumers.
//! Error frames (bus errors, bus-off, controller problems) are counted and logged, never mistaken for data.

use dbe_core::CanFrame;
use embedded_can::Frame as _;
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

pub async fn run(interface: &str, io: &mut PortIo, state: &watch::Sender<PortState>) -> anyhow::Result<()> {
    let socket = socketcan::tokio::CanSocket::open(interface)
        .map_err(|e| anyhow::anyhow!("cannot open SocketCAN interface {interface}: {e}"))?;
    let _ = state.send(PortState::Up);
    loop {
        tokio::select! {
            r = socket.read_frame() => {
                let frame = r.map_err(|e| anyhow::anyhow!("reading {interface}: {e}"))?;
                match from_socketcan(&frame) {
                    Some(f) => io.deliver(f),
                    None => {
                        PortCounters::add(&io.counters.errors);
                        tracing::warn!(port = interface, "CAN error frame: {frame:?}");
                    }
                }
            }
            f = io.tx.recv() => {
                let Some(frame) = f else { return Ok(()) };
                if io.listen_only {
                    PortCounters::add(&io.counters.tx_dropped);
                    continue;
                }
                let Some(kf) = to_socketcan(&frame) else { continue };
                socket.write_frame(kf).await.map_err(|e| anyhow::anyhow!("writing {interface}: {e}"))?;
                PortCounters::add(&io.counters.tx);
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
}
