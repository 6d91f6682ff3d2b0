//! `socketcand:HOST:PORT/IFACE` ports: a CAN bus on another machine through a socketcand server (or another
//! DBE's sharing server), as a client in raw mode.
//!
//! Handshake (the server's side is described in `dbe_link::socketcand`): wait for `< hi >`, send
//! `< open IFACE >`, wait for `< ok >`, send `< rawmode >`, wait for `< ok >`; each step within
//! [`HANDSHAKE_TIMEOUT`]. Then frames arrive as `< frame ... >` and are sent as `< send ... >`. A dead peer that
//! never closes the connection (cable pulled, host frozen) is found by sending `< echo >` when nothing has
//! arrived for [`IDLE`] and failing the port when still nothing has arrived after [`DEAD`].

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use dbe_link::socketcand::{Decoder, Message, Mode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::{LogLimit, PortCounters, PortIo, PortState};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Quiet this long: ask the server for an echo.
pub const IDLE: Duration = Duration::from_secs(3);
/// Quiet this long: the server is gone.
pub const DEAD: Duration = Duration::from_secs(10);

pub async fn run(
    host: &str,
    port: u16,
    interface: &str,
    io: &mut PortIo,
    state: &watch::Sender<PortState>,
) -> Result<()> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| anyhow!("connecting to socketcand {host}:{port}: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("connecting to socketcand {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let result = if io.pace.is_on() {
        // Read in batches at the bridge's pace (`ports::pace`): the socket leaves tokio's reactor (it stays
        // non-blocking) for a link that registers it for writing only.
        let std = stream.into_std().map_err(|e| anyhow!("socketcand {host}:{port}: {e}"))?;
        let link = super::pace::PolledLink::new(std, io.pace.clone());
        run_on(link, interface, io, state).await
    } else {
        run_on(stream, interface, io, state).await
    };
    result.map_err(|e| anyhow!("socketcand {host}:{port}: {e:#}"))
}

/// Reads until one whole message has arrived (garbage before it is skipped).
async fn next_message<S: AsyncRead + Unpin>(link: &mut S, decoder: &mut Decoder, buf: &mut [u8]) -> Result<Message> {
    loop {
        while let Some(m) = decoder.poll() {
            if let Ok(m) = m {
                return Ok(m);
            }
        }
        let n = link.read(buf).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        decoder.push(&buf[..n]);
    }
}

async fn expect<S: AsyncRead + Unpin>(
    link: &mut S,
    decoder: &mut Decoder,
    buf: &mut [u8],
    want: Message,
    step: &str,
) -> Result<()> {
    let got = tokio::time::timeout(HANDSHAKE_TIMEOUT, next_message(link, decoder, buf))
        .await
        .map_err(|_| anyhow!("no {step} from the server within {HANDSHAKE_TIMEOUT:?}"))??;
    match got {
        m if m == want => Ok(()),
        Message::Error(why) => bail!("the server refused ({step}): {why}"),
        other => bail!("expected {step}, got {other:?}"),
    }
}

/// The port on any byte stream (a TCP connection, or a duplex pipe in tests).
pub async fn run_on<S>(mut link: S, interface: &str, io: &mut PortIo, state: &watch::Sender<PortState>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 8192];
    let text = |m: Message| m.to_text().unwrap_or_default().into_bytes();
    expect(&mut link, &mut decoder, &mut buf, Message::Hi, "`< hi >`").await?;
    link.write_all(&text(Message::Open(interface.to_string()))).await?;
    expect(&mut link, &mut decoder, &mut buf, Message::Ok, "`< ok >` to open").await?;
    link.write_all(&text(Message::Mode(Mode::Raw))).await?;
    expect(&mut link, &mut decoder, &mut buf, Message::Ok, "`< ok >` to rawmode").await?;
    let _ = state.send(PortState::Up);
    let mut heard_at = tokio::time::Instant::now();
    let mut echo_sent = false;
    let mut error_log = LogLimit::default();
    let mut out = Vec::new();
    loop {
        let idle_at = heard_at + if echo_sent { DEAD } else { IDLE };
        tokio::select! {
            r = link.read(&mut buf) => {
                let n = r.map_err(|e| anyhow!("reading: {e}"))?;
                if n == 0 {
                    bail!("the server closed the connection");
                }
                heard_at = tokio::time::Instant::now();
                echo_sent = false;
                decoder.push(&buf[..n]);
                while let Some(m) = decoder.poll() {
                    match m {
                        Ok(Message::Frame { frame, .. }) => io.deliver(frame),
                        Ok(Message::Echo) => {}
                        Ok(Message::Error(why)) => {
                            PortCounters::add(&io.counters.errors);
                            error_log.warn(&io.spec_text, &format!("socketcand server reports: {why}"));
                        }
                        Ok(other) => {
                            PortCounters::add(&io.counters.errors);
                            error_log.warn(&io.spec_text, &format!("unexpected from the server: {other:?}"));
                        }
                        Err(e) => {
                            PortCounters::add(&io.counters.errors);
                            error_log.warn(&io.spec_text, &e.to_string());
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(idle_at) => {
                if echo_sent {
                    bail!("nothing from the server for {DEAD:?}");
                }
                link.write_all(&text(Message::Echo)).await.map_err(|e| anyhow!("writing: {e}"))?;
                echo_sent = true;
            }
            f = io.tx.recv() => {
                let Some(first) = f else { return Ok(()) };
                // socketcand has no remote frames: those are dropped and counted.
                io.encode_batch(first, &mut out, |frame, out| Message::Send(frame).encode(out).is_ok());
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
    use crate::ports::test_io;

    #[tokio::test]
    async fn a_refused_open_fails_the_port_with_the_servers_reason() {
        let (client, mut server) = tokio::io::duplex(4096);
        let (mut io, _handle, state_tx) = test_io(false);
        let task = tokio::spawn(async move { run_on(client, "can9", &mut io, &state_tx).await });
        server.write_all(b"< hi >").await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"< open can9 >");
        server.write_all(b"< error could not open bus >").await.unwrap();
        let err = task.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("could not open bus"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_asked_for_an_echo_then_dropped() {
        let (client, mut server) = tokio::io::duplex(4096);
        let (mut io, _handle, state_tx) = test_io(false);
        let task = tokio::spawn(async move { run_on(client, "can0", &mut io, &state_tx).await });
        let mut buf = [0u8; 64];
        server.write_all(b"< hi >").await.unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        server.write_all(b"< ok >").await.unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        server.write_all(b"< ok >").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"< echo >");
        let err = task.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("nothing from the server"), "{err}");
    }
}
