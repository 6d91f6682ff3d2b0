//! The GVRET device side over TCP, for SavvyCAN ("Network connection", GVRET, the host and port configured).
//!
//! DBE presents one CAN bus (bus 0) at the served port's bitrate, answers SavvyCAN's connect burst and keepalives
//! (the exchange is described in `dbe_link::gvret`), streams every received frame once the client has switched
//! to binary mode, and queues frames the client sends on bus 0. Requests to change the bus settings are
//! acknowledged by the protocol's silence and ignored: the port's bitrate belongs to DBE's config. GVRET has no
//! error message, so a client whose bytes stop making sense (more than [`MAX_GARBAGE`] bytes dropped since its last
//! good message) is disconnected.

use anyhow::{bail, Result};
use dbe_link::gvret::{self, BusParams, Command, Message as _, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{next_batch, write_or_drop, MAX_STRIKES};
use crate::clock::Clock;
use crate::ports::{LogLimit, PortHandle, PortKind};

/// Bytes dropped since the last good message after which a client is disconnected. SavvyCAN itself sends one
/// stray byte (the 0 after a bus setup).
pub const MAX_GARBAGE: u64 = 64;
/// What `GetDeviceInfo` reports as the firmware build: a recent GVRET, so SavvyCAN enables all it supports.
const BUILD: u16 = 343;

fn bitrate(port: &PortHandle) -> u32 {
    match &port.spec.kind {
        PortKind::Slcan { bitrate, .. } => *bitrate,
        // SocketCAN sets its bitrate outside DBE; every supported pack and inverter bus runs at 500 kbit/s.
        _ => 500_000,
    }
}

/// Serves one client until it leaves, stops making sense, or stops reading.
pub async fn serve_client<S>(stream: S, port: &PortHandle, clock: Clock, who: &str) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut decoder = gvret::Decoder::<Command>::new();
    let mut buf = vec![0u8; 4096];
    let mut rx = None;
    let mut lost = 0u64;
    let mut lost_log = LogLimit::default();
    let mut refused_log = LogLimit::default();
    let mut skipped_at_last_good = 0u64;
    let mut strikes = 0u32;
    let mut out = Vec::new();
    let params =
        BusParams { enabled: true, listen_only: port.spec.listen_only, single_wire: false, speed: bitrate(port) };
    loop {
        tokio::select! {
            r = reader.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                decoder.push(&buf[..n]);
                out.clear();
                while let Some(m) = decoder.poll() {
                    let Ok(cmd) = m else {
                        strikes += 1;
                        if strikes > MAX_STRIKES {
                            bail!("{strikes} bad GVRET messages in a row");
                        }
                        continue;
                    };
                    strikes = 0;
                    skipped_at_last_good = decoder.skipped();
                    let reply = match cmd {
                        Command::EnableBinary => {
                            if rx.is_none() {
                                rx = Some(port.subscribe());
                            }
                            None
                        }
                        Command::SendFrame { bus, frame } => {
                            if bus & 0x03 != 0 {
                                refused_log.warn(who, &format!("GVRET frame for bus {bus} dropped: DBE serves bus 0 only"));
                            } else if port.spec.listen_only {
                                refused_log.warn(who, &format!("refused a frame: {} is listen-only here", port.spec.text));
                            } else if !port.send(frame) {
                                refused_log.warn(who, "GVRET frame dropped: the port's send queue is full");
                            }
                            None
                        }
                        Command::EchoCanFrame { frame, .. } => {
                            Some(Reply::Frame { timestamp_us: micros(clock), bus: 0, frame })
                        }
                        Command::TimeSync => Some(Reply::TimeSync { timestamp_us: micros(clock) }),
                        Command::GetDigitalInputs => Some(Reply::DigitalInputs(0)),
                        Command::GetAnalogInputs => Some(Reply::AnalogInputs([0; 4])),
                        Command::GetCanBusParams => Some(Reply::CanBusParams { can0: params, can1: BusParams::default() }),
                        Command::GetDeviceInfo => Some(Reply::DeviceInfo {
                            build: BUILD,
                            eeprom_version: 0,
                            file_type: 0,
                            auto_log: 0,
                            single_wire: 0,
                        }),
                        Command::KeepAlive => Some(Reply::KeepAlive),
                        Command::GetNumBuses => Some(Reply::NumBuses(1)),
                        Command::GetExtBuses => Some(Reply::ExtBuses {
                            swcan: BusParams::default(),
                            lin1: BusParams::default(),
                            lin2: BusParams::default(),
                        }),
                        Command::SetupCanBus { .. } => {
                            tracing::info!("GVRET client {who} asked to change bus settings; ignored (set in DBE's config)");
                            None
                        }
                        Command::SetDigitalOutputs(_)
                        | Command::SetSingleWire(_)
                        | Command::SetSystemType(_)
                        | Command::SetupExtBuses { .. } => None,
                    };
                    if let Some(r) = reply {
                        // Every reply above is a data frame or has no frame in it, so encoding cannot fail.
                        let _ = r.encode(&mut out);
                    }
                }
                if decoder.skipped() - skipped_at_last_good > MAX_GARBAGE {
                    bail!("{} bytes that are not GVRET", decoder.skipped() - skipped_at_last_good);
                }
                if !out.is_empty() {
                    write_or_drop(&mut writer, &out).await?;
                }
            }
            b = async { next_batch(rx.as_mut().expect("guarded"), &mut lost).await }, if rx.is_some() => {
                let Some(batch) = b else { return Ok(()) };
                out.clear();
                for r in batch {
                    // GVRET has no remote frames; they are left out.
                    let _ = Reply::Frame { timestamp_us: (r.at_ms.wrapping_mul(1000)) as u32, bus: 0, frame: r.frame }
                        .encode(&mut out);
                }
                if lost > 0 {
                    lost_log.warn(who, &format!("GVRET client fell behind and lost {lost} frames"));
                    lost = 0;
                }
                write_or_drop(&mut writer, &out).await?;
            }
        }
    }
}

/// The device clock GVRET stamps frames with: microseconds, wrapping every 71 minutes.
fn micros(clock: Clock) -> u32 {
    clock.now_ms().wrapping_mul(1000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::tests::{frame, next_from_others, sim_port, within};
    use crate::share::{serve_tcp, Protocol};
    use dbe_link::gvret::{to_bytes, Decoder};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    async fn replies(s: &mut TcpStream, d: &mut Decoder<Reply>, n: usize) -> Vec<Reply> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(r) = d.poll() {
                got.push(r.unwrap());
            }
            if got.len() >= n {
                return got;
            }
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "server closed after {got:?}");
            d.push(&buf[..k]);
        }
    }

    #[tokio::test]
    async fn savvycan_connects_watches_and_sends() {
        let (served, bus, clock) = sim_port("gvret");
        let server = serve_tcp(Protocol::Gvret, "127.0.0.1:0", served.clone(), clock).await.unwrap();
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        c.write_all(&[0xE7, 0xE7, 0xF1, 0x0C, 0xF1, 0x06, 0xF1, 0x07, 0xF1, 0x01, 0xF1, 0x09]).await.unwrap();
        let mut d = Decoder::<Reply>::new();
        let got = within("connect replies", replies(&mut c, &mut d, 5)).await;
        assert_eq!(got[0], Reply::NumBuses(1));
        assert!(matches!(got[1], Reply::CanBusParams { can0: BusParams { enabled: true, speed: 500_000, .. }, .. }));
        assert!(matches!(got[2], Reply::DeviceInfo { build: BUILD, .. }));
        assert!(matches!(got[3], Reply::TimeSync { .. }));
        assert_eq!(got[4], Reply::KeepAlive);
        let (me, mut bus_rx) = bus.attach();
        let streamed = within("a streamed frame", async {
            loop {
                bus.send(me, frame(3));
                let mut buf = [0u8; 4096];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await {
                    d.push(&buf[..n]);
                    if let Some(Ok(r)) = d.poll() {
                        return r;
                    }
                }
            }
        })
        .await;
        assert!(matches!(streamed, Reply::Frame { bus: 0, frame: f, .. } if f == frame(3)), "{streamed:?}");
        let sent = dbe_core::CanFrame::extended(0x18FF_50E5, &[0x11, 0x22]).unwrap();
        c.write_all(&to_bytes(&Command::SendFrame { bus: 0, frame: sent }).unwrap()).await.unwrap();
        let on_bus = next_from_others(&mut bus_rx, me).await;
        assert_eq!(on_bus, sent);
    }

    #[tokio::test]
    async fn a_client_sending_garbage_is_disconnected_and_others_carry_on() {
        let (served, _bus, clock) = sim_port("gvret-garbage");
        let server = serve_tcp(Protocol::Gvret, "127.0.0.1:0", served.clone(), clock).await.unwrap();
        let mut good = TcpStream::connect(server.addr).await.unwrap();
        let mut bad = TcpStream::connect(server.addr).await.unwrap();
        bad.write_all(&[0x55; 200]).await.unwrap();
        within("bad client dropped", async {
            let mut buf = [0u8; 4096];
            while bad.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        good.write_all(&[0xF1, 0x09]).await.unwrap();
        let mut d = Decoder::<Reply>::new();
        assert_eq!(within("keepalive", replies(&mut good, &mut d, 1)).await, [Reply::KeepAlive]);
        assert_eq!(served.counters.tx.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
