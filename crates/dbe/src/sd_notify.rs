//! systemd's readiness and watchdog notifications, without libsystemd: one datagram per message.
//!
//! Facts and their sources: `sd_notify(3)` and `systemd.service(5)`: the service manager passes the socket in
//! `$NOTIFY_SOCKET`, an `AF_UNIX` datagram socket named by a file path or, when the value starts with `@`, by a
//! name in the abstract namespace (the `@` standing for the leading NUL byte); a message is newline-separated
//! `KEY=VALUE` assignments; `READY=1` ends start-up of a `Type=notify` unit; `WATCHDOG=1` is the keep-alive of
//! `WatchdogSec=`, whose period the manager passes in `$WATCHDOG_USEC` (with `$WATCHDOG_PID`, the process meant
//! to send it); `sd_watchdog_enabled(3)` advises sending it at half that period.
//!
//! The keep-alives come from the bridge loop itself ([`Systemd::tick`], called on the loop's publish timer), not
//! from a thread of their own: a loop that hangs stops them, systemd kills DBE, and `ExecStopPost=` opens the
//! contactors (`dist/dbe.service`). Sending never blocks (a non-blocking socket; a full queue drops the message).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// A connection to the service manager's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket `NOTIFY_SOCKET` names: a path, or `@name` in the abstract namespace.
    pub fn new(notify_socket: &OsStr) -> io::Result<Notifier> {
        let bytes = notify_socket.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(notify_socket)?,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is neither a path nor @name")),
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, addr })
    }

    pub fn notify(&self, message: &str) -> io::Result<()> {
        self.socket.send_to_addr(message.as_bytes(), &self.addr).map(|_| ())
    }
}

/// The watchdog period, when the manager asked for keep-alives from this process.
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(us))
}

/// What the bridge loop holds: nothing at all when DBE does not run under systemd.
#[derive(Default)]
pub struct Systemd {
    notifier: Option<Notifier>,
    /// Half the watchdog period.
    keep_alive_every: Option<Duration>,
    ready_sent: bool,
    last_keep_alive: Option<Instant>,
}

impl Systemd {
    /// From the environment the service manager set (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Systemd {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Systemd::default() };
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        match Notifier::new(&path) {
            Ok(n) => Systemd::with(n, watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id())),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={}: {e}; systemd will not hear from DBE", path.to_string_lossy());
                Systemd::default()
            }
        }
    }

    pub fn with(notifier: Notifier, watchdog: Option<Duration>) -> Systemd {
        Systemd { notifier: Some(notifier), keep_alive_every: watchdog.map(|w| w / 2), ..Systemd::default() }
    }

    /// Called from the bridge loop at every turn of its publish timer: `READY=1` the first time (the loop runs),
    /// then `WATCHDOG=1` every half watchdog period.
    pub fn tick(&mut self, now: Instant) {
        let Some(n) = &self.notifier else { return };
        if !self.ready_sent {
            self.ready_sent = true;
            if let Err(e) = n.notify("READY=1") {
                tracing::warn!("telling systemd DBE is ready failed: {e}");
            }
        }
        let Some(every) = self.keep_alive_every else { return };
        if self.last_keep_alive.is_none_or(|t| now.duration_since(t) >= every) {
            self.last_keep_alive = Some(now);
            if let Err(e) = n.notify("WATCHDOG=1") {
                tracing::warn!("systemd watchdog keep-alive failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(s: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn ready_then_keep_alives_at_half_the_period_to_a_path_socket() {
        let dir = tempfile_dir();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let mut sd = Systemd::with(Notifier::new(path.as_os_str()).unwrap(), Some(Duration::from_secs(10)));
        let t0 = Instant::now();
        sd.tick(t0);
        assert_eq!(recv_all(&server), ["READY=1", "WATCHDOG=1"]);
        sd.tick(t0 + Duration::from_secs(4));
        assert_eq!(recv_all(&server), Vec::<String>::new(), "not yet half the period");
        sd.tick(t0 + Duration::from_secs(5));
        assert_eq!(recv_all(&server), ["WATCHDOG=1"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_abstract_socket_is_reached_by_its_at_name() {
        let name = format!("dbe-test-notify-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        server.set_nonblocking(true).unwrap();
        let mut sd = Systemd::with(Notifier::new(OsStr::new(&format!("@{name}"))).unwrap(), None);
        sd.tick(Instant::now());
        sd.tick(Instant::now());
        assert_eq!(recv_all(&server), ["READY=1"], "ready once, and no keep-alives without a watchdog");
    }

    #[test]
    fn the_watchdog_is_for_this_process_only() {
        assert_eq!(watchdog_period(Some("10000000"), None, 7), Some(Duration::from_secs(10)));
        assert_eq!(watchdog_period(Some("10000000"), Some("7"), 7), Some(Duration::from_secs(10)));
        assert_eq!(watchdog_period(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
        assert!(Notifier::new(OsStr::new("relative/path")).is_err());
        // No socket: ticking does nothing and never fails.
        Systemd::default().tick(Instant::now());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dbe-sd-notify-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
