//! Reading a busy port in batches (issue 18). At 4 000 frames a second the daemon's cost is its wake-ups, not its
//! work: a reader woken by the kernel for every few frames that arrive spends far more on waking than on the frames.
//! A paced port is therefore not watched for input at all: its descriptor is registered with the reactor for
//! writing only, and it is read without waiting, each time the bridge is awake anyway (it wakes for its own
//! deadlines, a pack's 10 ms keep-alive for one: [`PaceHandle::kick`]) and at the latest [`READ_PACE`] after the
//! last read. Everything that arrived meanwhile comes in one read, and the read happens in a wake-up the bridge
//! needed anyway.
//!
//! The battery port is paced when it carries nothing else ([`super::Ports`] decides when it opens the ports): a
//! pack's frames feed readings whose deadlines are seconds, so up to 10 ms more cost nothing, and what the bridge
//! sends (the keep-alives) is timer-driven, never paced. An inverter's port is never paced: its requests are
//! answered at once. The kick only helps because the daemon runs on one thread (`run`'s module doc): the bridge
//! waking for a deadline, the paced reader reading, and the bridge taking the frames happen in one wake-up.
//!
//! Byte-stream transports (slcan on a serial device or pty, socketcand over TCP) get a [`PolledLink`]; SocketCAN
//! reads whole frames and uses [`Pacer`] around its own reads instead.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The longest a paced port's input waits to be read.
pub const READ_PACE: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct Shared {
    on: AtomicBool,
    kicked: AtomicBool,
    waiting: Mutex<Option<Waker>>,
}

/// What the port's holders use: pace the port or not (decided before it opens), and tell it the bridge is awake.
#[derive(Clone, Debug, Default)]
pub struct PaceHandle(Arc<Shared>);

impl PaceHandle {
    pub fn set(&self, on: bool) {
        self.0.on.store(on, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.0.on.load(Ordering::Relaxed)
    }

    /// The bridge is awake: a paced port waiting for its next read reads now.
    pub fn kick(&self) {
        self.0.kicked.store(true, Ordering::Relaxed);
        let waker = self.0.waiting.lock().map(|mut w| w.take()).unwrap_or(None);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// For a transport that reads whole frames itself (SocketCAN).
    pub fn pacer(&self) -> Pacer {
        Pacer { hold: Hold::new(self.clone()), holding: false }
    }
}

/// A wait until the next read: the kick or [`READ_PACE`], whichever is first. Reused: no allocation per wait.
#[derive(Debug)]
struct Hold {
    pace: PaceHandle,
    sleep: Pin<Box<Sleep>>,
}

impl Hold {
    fn new(pace: PaceHandle) -> Self {
        Hold { pace, sleep: Box::pin(tokio::time::sleep(Duration::ZERO)) }
    }

    fn start(&mut self) {
        self.pace.0.kicked.store(false, Ordering::Relaxed);
        self.sleep.as_mut().reset(Instant::now() + READ_PACE);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Ok(mut w) = self.pace.0.waiting.lock() {
            *w = Some(cx.waker().clone());
        }
        // After registering, so a kick in between is not lost.
        if self.pace.0.kicked.swap(false, Ordering::Relaxed) {
            return Poll::Ready(());
        }
        std::future::Future::poll(self.sleep.as_mut(), cx)
    }
}

/// Pacing around a transport's own reads (SocketCAN): [`Pacer::wait`] before each read, [`Pacer::delivered`] after.
#[derive(Debug)]
pub struct Pacer {
    hold: Hold,
    holding: bool,
}

impl Pacer {
    /// Returns when the next read may go ahead: at once unless the last read delivered on a paced port. Safe to
    /// cancel (a `select!` branch that lost): the wait goes on where it was.
    pub async fn wait(&mut self) {
        if self.holding {
            std::future::poll_fn(|cx| self.hold.poll(cx)).await;
            self.holding = false;
        }
    }

    /// After a read: `frames` is how many it delivered.
    pub fn delivered(&mut self, frames: usize) {
        if frames > 0 && self.hold.pace.is_on() {
            self.hold.start();
            self.holding = true;
        }
    }
}

/// A non-blocking descriptor (a tty, a TCP socket) read by polling at the bridge's pace and written directly. It
/// is in the reactor only while a write has to wait for room (rare: a pty or socket buffer holds seconds of
/// frames), so neither arriving input nor the other side draining what was written wakes the daemon.
pub struct PolledLink<T: AsRawFd> {
    fd: Link<T>,
    hold: Hold,
    holding: bool,
}

enum Link<T: AsRawFd> {
    Plain(T),
    /// Registered for writing, until the write that had to wait went through.
    Waiting(AsyncFd<T>),
    /// Only while moving between the two.
    Gone,
}

impl<T: AsRawFd> Link<T> {
    fn raw(&self) -> io::Result<&T> {
        match self {
            Link::Plain(t) => Ok(t),
            Link::Waiting(fd) => Ok(fd.get_ref()),
            Link::Gone => Err(io::Error::other("the link was lost while registering it")),
        }
    }
}

impl<T: AsRawFd> PolledLink<T> {
    /// `inner` must already be in non-blocking mode.
    pub fn new(inner: T, pace: PaceHandle) -> Self {
        PolledLink { fd: Link::Plain(inner), hold: Hold::new(pace), holding: false }
    }
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn raw_read(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn raw_write(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl<T: AsRawFd + Unpin> AsyncRead for PolledLink<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.holding {
                std::task::ready!(this.hold.poll(cx));
                this.holding = false;
            }
            match raw_read(this.fd.raw()?, buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    // n == 0 is the end of the stream: handed on as such.
                    if n > 0 {
                        this.hold.start();
                        this.holding = true;
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    this.hold.start();
                    this.holding = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: AsRawFd + Unpin> AsyncWrite for PolledLink<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.fd, Link::Gone) {
                Link::Plain(t) => match raw_write(&t, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // SAFETY: `t` owns its descriptor (a TTY port, a TCP stream) and keeps it open,
                        // unreplaced, for as long as the `AsyncFd` holds it.
                        this.fd = Link::Waiting(unsafe { AsyncFd::register_with_interest(t, Interest::WRITABLE)? });
                    }
                    r => {
                        this.fd = Link::Plain(t);
                        return Poll::Ready(r);
                    }
                },
                Link::Waiting(fd) => {
                    let ready = fd.poll_write_ready(cx).map_ok(|mut g| g.clear_ready());
                    let pending = ready.is_pending();
                    if let Poll::Ready(Err(e)) = ready {
                        this.fd = Link::Waiting(fd);
                        return Poll::Ready(Err(e));
                    }
                    if pending {
                        this.fd = Link::Waiting(fd);
                        return Poll::Pending;
                    }
                    // Room again: back out of the reactor, then write.
                    this.fd = Link::Plain(fd.into_inner());
                }
                Link::Gone => return Poll::Ready(Err(io::Error::other("the link was lost while registering it"))),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_paced_read_waits_for_the_kick_or_the_pace_and_a_quiet_one_not_at_all() {
        let handle = PaceHandle::default();
        let mut p = handle.pacer();
        let t0 = Instant::now();
        p.wait().await;
        assert_eq!(Instant::now(), t0, "nothing delivered yet: no wait");
        p.delivered(5);
        p.wait().await;
        assert_eq!(Instant::now(), t0, "off: delivering does not hold the next read");
        handle.set(true);
        p.delivered(5);
        p.wait().await;
        assert_eq!(Instant::now(), t0 + READ_PACE, "on, no kick: the whole pace");
        p.delivered(1);
        let at = Instant::now();
        let waiting = tokio::spawn(async move {
            p.wait().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(3)).await;
        handle.kick();
        assert_eq!(waiting.await.unwrap(), at + Duration::from_millis(3), "the kick ends the wait");
        let mut p = handle.pacer();
        p.delivered(0);
        let at = Instant::now();
        p.wait().await;
        assert_eq!(Instant::now(), at, "a read that delivered nothing does not hold the next");
    }

    #[tokio::test]
    async fn a_polled_link_reads_what_arrived_at_the_kick_and_writes_through_the_reactor() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        set_nonblocking(&ours).unwrap();
        let pace = PaceHandle::default();
        pace.set(true);
        let mut link = PolledLink::new(ours, pace.clone());
        theirs.write_all(b"T1230\r").unwrap();
        let mut buf = [0u8; 64];
        let n = link.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"T1230\r", "input already there is read at once");
        // Two pieces while the link holds: both come in one read, at the kick.
        theirs.write_all(b"T4560\r").unwrap();
        theirs.write_all(b"T7890\r").unwrap();
        let reader = tokio::spawn(async move {
            let n = link.read(&mut buf).await.unwrap();
            (link, buf[..n].to_vec())
        });
        tokio::task::yield_now().await;
        pace.kick();
        let (mut link, got) = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
        assert_eq!(got, b"T4560\rT7890\r");
        link.write_all(b"t1D40\r").await.unwrap();
        let mut back = [0u8; 16];
        let n = theirs.read(&mut back).unwrap();
        assert_eq!(&back[..n], b"t1D40\r");
        // The other side gone: the end of the stream, after at most one pace.
        drop(theirs);
        let n = tokio::time::timeout(Duration::from_secs(5), link.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(n, 0);
    }
}
