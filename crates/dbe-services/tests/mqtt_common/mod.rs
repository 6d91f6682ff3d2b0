//! Test harness: a private `mosquitto` per test, `mosquitto_sub` as the independent observer, and a fake bridge
//! loop on the hub's loop end that records requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbe_core::command::CommandError;
use dbe_services::hub::{self, Handle, Request};
use tempfile::TempDir;
use tokio::sync::mpsc;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or the deadline passes (the pause between polls is not synchronisation: the
/// condition is).
pub fn wait_until<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn wait_until_async<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Broker {
    pub port: u16,
    pub dir: TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// `extra` is added to the listener's configuration (TLS files, password file...).
    pub fn start(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: TempDir, extra: &str) -> Broker {
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let anonymous = if extra.contains("password_file") { "false" } else { "true" };
        std::fs::write(
            &conf,
            format!("user root\npersistence false\nlistener {port} 127.0.0.1\nallow_anonymous {anonymous}\n{extra}\n"),
        )
        .unwrap();
        let mut b = Broker { port, dir, conf, child: None };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", DEADLINE, || TcpStream::connect(("127.0.0.1", port)).ok());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message as `mosquitto_sub -F '%r %t %p'` prints it.
#[derive(Clone, Debug, PartialEq)]
pub struct Msg {
    pub retained: bool,
    pub topic: String,
    pub payload: String,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.payload))
    }
}

/// A `mosquitto_sub` running in the background; everything it prints is collected.
pub struct Sub {
    child: Child,
    pub lines: Arc<Mutex<Vec<Msg>>>,
}

impl Sub {
    pub fn start(port: u16, topics: &[&str], extra: &[&str]) -> Sub {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-F", "%r %t %p", "-t", "dbe-test/ready"]);
        for t in topics {
            cmd.args(["-t", t]);
        }
        cmd.args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(3, ' ');
                let retained = parts.next() == Some("1");
                let topic = parts.next().unwrap_or_default().to_string();
                let payload = parts.next().unwrap_or_default().to_string();
                sink.lock().unwrap().push(Msg { retained, topic, payload });
            }
        });
        let sub = Sub { child, lines };
        // Ready once it sees its own marker: from then on it misses nothing.
        wait_until("mosquitto_sub to subscribe", DEADLINE, || {
            publish(port, "dbe-test/ready", "1", &extra_auth(extra));
            sub.find(|m| m.topic == "dbe-test/ready").map(|_| ())
        });
        sub
    }

    pub fn all(&self) -> Vec<Msg> {
        self.lines.lock().unwrap().clone()
    }

    pub fn find(&self, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        self.lines.lock().unwrap().iter().find(|m| pred(m)).cloned()
    }

    pub fn count(&self, pred: impl Fn(&Msg) -> bool) -> usize {
        self.lines.lock().unwrap().iter().filter(|m| pred(m)).count()
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Messages after the first `skip`.
    pub fn since(&self, skip: usize) -> Vec<Msg> {
        self.lines.lock().unwrap()[skip..].to_vec()
    }

    pub async fn wait(&self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        wait_until_async(what, DEADLINE, || self.find(&pred)).await
    }

    pub async fn wait_since(&self, what: &str, skip: usize, pred: impl Fn(&Msg) -> bool) -> Msg {
        wait_until_async(what, DEADLINE, || self.since(skip).into_iter().find(&pred)).await
    }
}

/// The TLS/auth arguments of a `mosquitto_sub` argument list, reused for `mosquitto_pub`.
fn extra_auth(extra: &[&str]) -> Vec<String> {
    extra.iter().map(|s| s.to_string()).collect()
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn publish(port: u16, topic: &str, payload: &str, extra: &[String]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic, "-m", payload])
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub to {topic} failed");
}

pub fn publish_retained(port: u16, topic: &str, payload: &str) {
    publish(port, topic, payload, &["-r".to_string()]);
}

/// Every `--retained-only` message under `filter` now on the broker.
pub fn retained(port: u16, filter: &str) -> Vec<Msg> {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-F",
            "%r %t %p",
            "-t",
            filter,
            "--retained-only",
            "-W",
            "1",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            Msg {
                retained: parts.next() == Some("1"),
                topic: parts.next().unwrap_or_default().to_string(),
                payload: parts.next().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// The test's side of the hub: it plays the bridge loop, answering every request and recording it.
pub struct FakeBridge {
    pub loop_end_snapshot: tokio::sync::watch::Sender<Arc<hub::Snapshot>>,
    pub events: tokio::sync::broadcast::Sender<hub::EventMessage>,
    pub requests: mpsc::UnboundedReceiver<(Request, &'static str)>,
}

/// `refuse` decides the bridge's answer for a request (the core's own checks).
pub fn fake_bridge(refuse: fn(&Request) -> Option<CommandError>) -> (FakeBridge, Handle) {
    let (end, handle) = hub::hub();
    let hub::LoopEnd { snapshot, events, mut requests } = end;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(env) = requests.recv().await {
            let _ = tx.send((env.request, env.source));
            let answer = match refuse(&env.request) {
                Some(e) => Err(e),
                None => Ok(()),
            };
            let _ = env.reply.send(answer);
        }
    });
    (FakeBridge { loop_end_snapshot: snapshot, events, requests: rx }, handle)
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Collects log lines so a test can check what the user would read.
pub struct Capture;
pub static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOGGER: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGS.lock().unwrap().push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

pub fn capture_logs() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

pub fn logs_containing(s: &str) -> Vec<String> {
    LOGS.lock().unwrap().iter().filter(|l| l.contains(s)).cloned().collect()
}
