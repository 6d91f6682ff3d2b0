//! The socketcand server side: one session per client, raw mode only (what python-can and DBE's own client use).
//!
//! python-can reads each handshake reply with one `recv` and compares the whole text, so each reply is written
//! on its own and frames start only [`FIRST_FRAME_DELAY`] after the `< ok >` to `rawmode` (see
//! `dbe_link::socketcand`). Any bus name is accepted in `open`: the server serves exactly one port.

use std::time::Duration;

use anyhow::{bail, Result};
use dbe_link::socketcand::{DecodeError, Decoder, Message, Mode, ParseError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{next_batch, write_or_drop, WallClock, MAX_STRIKES};
use crate::clock::Clock;
use crate::ports::{LogLimit, PortHandle};

/// Pause between the `rawmode` answer and the first frame, so the answer arrives alone.
pub const FIRST_FRAME_DELAY: Duration = Duration::from_millis(50);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Session {
    /// Sent `< hi >`, waiting for `< open BUS >`.
    Greeted,
    /// Bus open, waiting for a mode.
    Open,
    /// Streaming frames from this instant on.
    Raw { from: tokio::time::Instant },
}

fn text(m: &Message) -> Vec<u8> {
    m.to_text().unwrap_or_default().into_bytes()
}

fn error(why: &str) -> Vec<u8> {
    text(&Message::Error(why.to_string()))
}

/// Serves one client until it leaves, misbehaves past [`MAX_STRIKES`], or stops reading.
pub async fn serve_client<S>(stream: S, port: &PortHandle, clock: Clock, who: &str) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let wall = WallClock::new(clock);
    write_or_drop(&mut writer, &text(&Message::Hi)).await?;
    let mut session = Session::Greeted;
    let mut rx = None;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096];
    let mut strikes = 0u32;
    let mut lost = 0u64;
    let mut lost_log = LogLimit::default();
    let mut refused_log = LogLimit::default();
    let mut out = Vec::new();
    loop {
        let start_at = match session {
            Session::Raw { from } if rx.is_none() => Some(from),
            _ => None,
        };
        tokio::select! {
            r = reader.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                decoder.push(&buf[..n]);
                while let Some(m) = decoder.poll() {
                    let reply = match (m, session) {
                        (Ok(Message::Open(_)), Session::Greeted) => {
                            session = Session::Open;
                            text(&Message::Ok)
                        }
                        (Ok(Message::Mode(Mode::Raw)), Session::Open) => {
                            session = Session::Raw { from: tokio::time::Instant::now() + FIRST_FRAME_DELAY };
                            text(&Message::Ok)
                        }
                        (Ok(Message::Mode(_)), Session::Open) => error("only rawmode is supported"),
                        (Ok(Message::Echo), _) => text(&Message::Echo),
                        (Ok(Message::Send(frame)), Session::Raw { .. }) => {
                            if port.spec.listen_only {
                                refused_log.warn(who, &format!("refused a frame: {} is listen-only here", port.spec.text));
                                error("the port is listen-only (or share.allow_transmit is off)")
                            } else if port.send(frame) {
                                Vec::new()
                            } else {
                                error("the port's send queue is full")
                            }
                        }
                        (Ok(Message::Open(_)), _) => error("the bus is already open"),
                        (Ok(m), Session::Greeted) => error(&format!("open a bus first, not {}", keyword(&m))),
                        (Ok(m), _) => error(&format!("unexpected {}", keyword(&m))),
                        (Err(DecodeError::Invalid { source: ParseError::UnknownCommand(_), .. }), _) => {
                            error("unknown command")
                        }
                        (Err(DecodeError::Invalid { source, .. }), _) => error(&source.to_string()),
                        // The text goes inside `< error ... >`, so it must not contain brackets itself.
                        (Err(e), _) => error(&e.to_string().replace(['<', '>'], "")),
                    };
                    let bad = reply.starts_with(b"< error");
                    strikes = if bad { strikes + 1 } else { 0 };
                    if !reply.is_empty() {
                        write_or_drop(&mut writer, &reply).await?;
                    }
                    if strikes > MAX_STRIKES {
                        bail!("{strikes} bad messages in a row");
                    }
                }
            }
            _ = crate::clock::sleep_until_opt(start_at) => rx = Some(port.subscribe()),
            b = async { next_batch(rx.as_mut().expect("guarded"), &mut lost).await }, if rx.is_some() => {
                let Some(batch) = b else { return Ok(()) };
                out.clear();
                for r in batch {
                    // socketcand has no remote frames; they are left out, as socketcand itself does.
                    let _ = Message::Frame { frame: r.frame, timestamp_us: wall.unix_us(r.at_ms) }.encode(&mut out);
                }
                if lost > 0 {
                    lost_log.warn(who, &format!("socketcand client fell behind and lost {lost} frames"));
                    lost = 0;
                }
                write_or_drop(&mut writer, &out).await?;
            }
        }
    }
}

fn keyword(m: &Message) -> &'static str {
    match m {
        Message::Hi => "hi",
        Message::Open(_) => "open",
        Message::Ok => "ok",
        Message::Mode(_) => "a mode switch",
        Message::Send(_) => "send",
        Message::Frame { .. } => "frame",
        Message::Error(_) => "error",
        Message::Echo => "echo",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{self, PortSpec, PortState};
    use crate::share::tests::{frame, next_from_others, sim_port, within};
    use crate::share::{serve_tcp, Protocol};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    async fn read_until(s: &mut TcpStream, want: &str) -> String {
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while !got.contains(want) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed; got {got:?}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        got
    }

    #[tokio::test]
    async fn dbes_client_port_talks_to_its_server() {
        let (served, bus, clock) = sim_port("sc");
        let server = serve_tcp(Protocol::Socketcand, "127.0.0.1:0", served.clone(), clock).await.unwrap();
        let spec = PortSpec::parse(&format!("socketcand:127.0.0.1:{}/can0", server.addr.port())).unwrap();
        let client = ports::open(spec, clock, &ports::sim::Buses::default());
        let mut state = client.state.clone();
        within("client up", state.wait_for(|s| *s == PortState::Up)).await.unwrap();
        let mut rx = client.subscribe();
        let (me, mut bus_rx) = bus.attach();
        // Frames on the served bus reach the client port; the first ones may precede its subscription.
        within("frames at the client", async {
            let mut i = 0;
            loop {
                bus.send(me, frame(i));
                i += 1;
                if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                    assert_eq!(r.frame.raw_id() & 0xF00, 0x100);
                    break;
                }
            }
        })
        .await;
        let sent = dbe_core::CanFrame::extended(0x1234_5678, &[9, 8, 7]).unwrap();
        assert!(client.send(sent));
        let got = next_from_others(&mut bus_rx, me).await;
        assert_eq!(got, sent);
        // The server going away takes the client port down; it keeps trying to reopen.
        drop(server);
        within("client down", state.wait_for(|s| matches!(s, PortState::Down(_)))).await.unwrap();
    }

    #[tokio::test]
    async fn garbage_gets_errors_and_other_clients_carry_on() {
        let (served, bus, clock) = sim_port("garbage");
        let server = serve_tcp(Protocol::Socketcand, "127.0.0.1:0", served.clone(), clock).await.unwrap();
        let mut good = TcpStream::connect(server.addr).await.unwrap();
        read_until(&mut good, "< hi >").await;
        good.write_all(b"< open can0 >").await.unwrap();
        read_until(&mut good, "< ok >").await;
        good.write_all(b"< rawmode >").await.unwrap();
        read_until(&mut good, "< ok >").await;

        let mut bad = TcpStream::connect(server.addr).await.unwrap();
        read_until(&mut bad, "< hi >").await;
        bad.write_all(b"< rawmode >").await.unwrap();
        assert!(read_until(&mut bad, ">").await.starts_with("< error open a bus first"));
        bad.write_all(b"< open can0 >< rawmode >< subscribe 0 0 123 >").await.unwrap();
        read_until(&mut bad, "< error unknown command >").await;
        bad.write_all(b"< send 800 1 00 >").await.unwrap();
        read_until(&mut bad, "< error `send` field 1").await;
        bad.write_all(b"< echo >").await.unwrap();
        read_until(&mut bad, "< echo >").await;
        // Nothing bad reached the bus; the good client still gets frames.
        let (me, _) = bus.attach();
        let got = within("frames at the good client", async {
            loop {
                bus.send(me, frame(7));
                let mut buf = [0u8; 4096];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), good.read(&mut buf)).await {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        })
        .await;
        assert!(got.starts_with("< frame 107 "), "{got}");
        assert_eq!(served.counters.tx.load(std::sync::atomic::Ordering::Relaxed), 0);
        // A client that only sends garbage is dropped.
        for _ in 0..=MAX_STRIKES {
            if bad.write_all(b"<>").await.is_err() {
                break;
            }
        }
        within("bad client dropped", async {
            let mut buf = [0u8; 4096];
            while bad.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
    }

    /// A client that stops reading loses frames (or is dropped) while the bridge's own subscription, on the same
    /// port, gets every frame at the full rate of a 500 kbit/s bus.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_client_never_slows_the_bridge() {
        let total = ports::FULL_500K_RATE * 3;
        let (served, bus, clock) = sim_port("stuck");
        // A tiny pipe stands for a socket whose reader has stopped.
        let (mut client, server_end) = tokio::io::duplex(1024);
        let served2 = served.clone();
        tokio::spawn(async move { serve_client(server_end, &served2, clock, "stuck").await });
        let mut buf = vec![0u8; 64 * 1024];
        for step in [&b"< open can0 >"[..], b"< rawmode >"] {
            let _ = client.read(&mut buf).await.unwrap();
            client.write_all(step).await.unwrap();
        }
        let _ = client.read(&mut buf).await.unwrap(); // `< ok >` to rawmode; then the client stops reading
                                                      // The server subscribes a moment after `< ok >`; frames before that are simply not this client's, and the
                                                      // check below looks for a gap after the first frame it got, so a late start cannot pass for a loss.
        let bridge = ports::count_in_order(&served, 1, total);
        let (me, _) = bus.attach();
        ports::send_at_rate(|f| bus.send(me, f), total, ports::FULL_500K_RATE).await;
        for c in bridge {
            assert_eq!(within("the bridge's frames", c).await.unwrap(), total);
        }
        // Now read what the stuck client was given: the frames run out of order (some lost) or it was dropped.
        let mut decoder = Decoder::new();
        let mut last: Option<u64> = None;
        let lost_or_dropped = within("a gap or the end", async {
            loop {
                let n = client.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return true;
                }
                decoder.push(&buf[..n]);
                while let Some(m) = decoder.poll() {
                    if let Ok(Message::Frame { frame, .. }) = m {
                        let seq = u64::from_le_bytes(frame.data().try_into().unwrap());
                        if last.is_some_and(|l| seq != l + 1) {
                            return true;
                        }
                        last = Some(seq);
                        if seq + 1 == total {
                            return false;
                        }
                    }
                }
            }
        })
        .await;
        assert!(lost_or_dropped, "a client that read nothing for 3 s cannot have been given every frame");
    }

    #[tokio::test]
    async fn a_listen_only_port_refuses_frames_from_clients() {
        let buses = ports::sim::Buses::default();
        let clock = Clock::new();
        let port = ports::open(PortSpec::parse("sim:lo?listen-only").unwrap(), clock, &buses);
        let server = serve_tcp(Protocol::Socketcand, "127.0.0.1:0", port.clone(), clock).await.unwrap();
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        read_until(&mut c, "< hi >").await;
        c.write_all(b"< open can0 >").await.unwrap();
        read_until(&mut c, "< ok >").await;
        c.write_all(b"< rawmode >").await.unwrap();
        read_until(&mut c, "< ok >").await;
        c.write_all(b"< send 123 1 AA >").await.unwrap();
        read_until(&mut c, "< error the port is listen-only (or share.allow_transmit is off) >").await;
        assert_eq!(port.counters.tx_dropped.load(std::sync::atomic::Ordering::Relaxed), 0, "never even queued");
    }
}
