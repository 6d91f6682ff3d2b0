//! `--record DIR`: every CAN frame of every port, received and sent, into candump log files, rotated by size,
//! never filling the disk.
//!
//! Files are named `dbe-<unix seconds>-<n>.log` in the candump `-l` format with the direction suffix that python-can
//! and `candump -x` write (`(secs.usecs) iface ID#DATA R|T`): `R` is a frame DBE received, `T` a frame DBE sent
//! (the port's transport accepted it; a frame refused by a full queue, dropped while the port was down or on a
//! listen-only port is not written). can-utils, python-can, SavvyCAN and `dbe decode`/`dbe replay` read them.
//!
//! Lines are in time order across ports and directions: a received frame is stamped when its port task read it, a
//! sent one when the bridge queued it (written only once the transport took it), on the daemon's monotonic
//! clock (written as wall-clock time from the clock's origin, taken when a file is opened), and the recorder works
//! in batches: every [`BATCH`] it takes what the ports published, sorts it by time and writes what is older than
//! [`HOLD`] (a frame stamped just before the batch may still be on its way from another port). So recording costs
//! the bridge loop nothing: it never sees the recorder, and the port tasks only copy each frame into a broadcast.
//!
//! A file is closed at `max_file` bytes; the oldest files are deleted to keep the folder under `max_total`. A write
//! error (disk full, folder removed) stops recording with an error event; it never stops or slows the bridge.
//! Lines are written whole: a crash leaves at most one partial last line, which the log readers report and skip.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, watch};

use crate::clock::Clock;
use crate::ports::{Direction, PortFrame};

/// How often the recorder takes the ports' frames.
pub const BATCH: Duration = Duration::from_millis(50);
/// Frames younger than this stay for the next batch, so a frame from a slower port is not written after a later
/// one from a faster port. Sent frames are stamped when the bridge queued them and published when the transport
/// took them, so this also covers the time a frame waits in the port's queue on a loaded machine.
pub const HOLD: Duration = Duration::from_millis(100);
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bytes gathered before a write: a full bus (about 250 kB/s of log lines) costs a few writes a second.
const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct RecorderConfig {
    pub dir: PathBuf,
    pub max_file: u64,
    pub max_total: u64,
}

/// What the recorder is doing, for the web view and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecorderState {
    Recording { file: PathBuf },
    Stopped,
    Failed(String),
}

/// One port to record, with the interface name written into the log.
pub struct Source {
    pub name: String,
    pub rx: broadcast::Receiver<PortFrame>,
}

fn log_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let name = p.file_name()?.to_str()?.to_string();
            if !(name.starts_with("dbe-") && name.ends_with(".log")) {
                return None;
            }
            Some((p.clone(), e.metadata().ok()?.len()))
        })
        .collect();
    files.sort();
    files
}

/// Deletes the oldest logs until the folder holds at most `budget` bytes (the current file excluded).
fn enforce_budget(dir: &Path, budget: u64, current: &Path) -> std::io::Result<()> {
    let files = log_files(dir);
    let mut total: u64 = files.iter().map(|(_, n)| n).sum();
    for (p, n) in files {
        if total <= budget {
            break;
        }
        if p != current {
            fs::remove_file(&p)?;
            total -= n;
        }
    }
    Ok(())
}

struct Writer {
    cfg: RecorderConfig,
    file: BufWriter<File>,
    path: PathBuf,
    written: u64,
    seq: u32,
    /// Unix µs of the daemon clock's zero when this file was opened (see [`Clock::unix_origin_us`]).
    origin_us: u64,
}

impl Writer {
    fn open(cfg: RecorderConfig, seq: u32, clock: Clock) -> std::io::Result<Writer> {
        fs::create_dir_all(&cfg.dir)?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let path = cfg.dir.join(format!("dbe-{secs:010}-{seq:04}.log"));
        let file = BufWriter::with_capacity(WRITE_BUFFER, File::options().create(true).append(true).open(&path)?);
        enforce_budget(&cfg.dir, cfg.max_total.saturating_sub(cfg.max_file), &path)?;
        Ok(Writer { cfg, file, path, written: 0, seq, origin_us: clock.unix_origin_us() })
    }

    /// Writes one line (a newline is added); opens the next file first when this one would grow past its size.
    fn write(&mut self, line: &str, clock: Clock) -> std::io::Result<()> {
        if self.written + line.len() as u64 + 1 > self.cfg.max_file {
            self.file.flush()?;
            *self = Writer::open(self.cfg.clone(), self.seq + 1, clock)?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }
}

/// One frame waiting in a batch: `order` keeps each port's own order among frames stamped in the same µs.
#[derive(Copy, Clone, Debug)]
struct Pending {
    at_us: u64,
    order: u64,
    source: usize,
    frame: dbe_core::CanFrame,
    direction: Direction,
}

/// The frames taken from the ports and not yet written, sorted by time before each write.
#[derive(Default)]
struct Batch {
    pending: Vec<Pending>,
    next_order: u64,
}

impl Batch {
    fn push(&mut self, source: usize, f: PortFrame) {
        self.pending.push(Pending {
            at_us: f.at_us,
            order: self.next_order,
            source,
            frame: f.frame,
            direction: f.direction,
        });
        self.next_order += 1;
    }

    /// Sorts by time and returns how many of the first frames are due: stamped at or before `until_us`.
    fn due(&mut self, until_us: u64) -> usize {
        self.pending.sort_unstable_by_key(|p| (p.at_us, p.order));
        self.pending.partition_point(|p| p.at_us <= until_us)
    }
}

/// How long the recorder waits before trying again after a write error (the disk may have been cleared).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Records until `stop` changes to true or every source closes. Flushes before returning. After a write error
/// the recorder reports `Failed`, drops frames (counted in the log) and tries a new file every [`RETRY_AFTER`]:
/// what was written before stays on disk whole, except at most the last line.
/// Runs the recorder on a thread of its own, so a write that blocks (a slow SD card under writeback) never delays
/// the daemon's single thread. It ends when `stop` says so or every source is gone.
pub fn spawn_thread(
    cfg: RecorderConfig,
    clock: Clock,
    sources: Vec<Source>,
    state: watch::Sender<RecorderState>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    std::thread::Builder::new()
        .name("dbe-recorder".into())
        .spawn(move || rt.block_on(run(cfg, clock, sources, state, stop)))
}

pub async fn run(
    cfg: RecorderConfig,
    clock: Clock,
    sources: Vec<Source>,
    state: watch::Sender<RecorderState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seq = 0;
    let mut w = match Writer::open(cfg.clone(), seq, clock) {
        Ok(w) => {
            let _ = state.send(RecorderState::Recording { file: w.path.clone() });
            Some(w)
        }
        Err(e) => {
            let _ = state.send(RecorderState::Failed(format!("cannot start recording in {}: {e}", cfg.dir.display())));
            None
        }
    };
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let mut rxs: Vec<Option<broadcast::Receiver<PortFrame>>> = sources.into_iter().map(|s| Some(s.rx)).collect();
    let mut retry_at = tokio::time::Instant::now() + RETRY_AFTER;
    let mut flush_at = tokio::time::Instant::now() + FLUSH_EVERY;
    let mut dropped: u64 = 0;
    let mut batch = Batch::default();
    let mut line = String::with_capacity(64);
    let mut tick = tokio::time::interval(BATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => *stop.borrow(),
        };
        for (i, slot) in rxs.iter_mut().enumerate() {
            let Some(rx) = slot else { continue };
            loop {
                match rx.try_recv() {
                    Ok(f) => batch.push(i, f),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(n)) => tracing::warn!(port = %names[i], "recorder lost {n} frames"),
                    Err(TryRecvError::Closed) => {
                        *slot = None;
                        break;
                    }
                }
            }
        }
        let finished = stopping || rxs.iter().all(Option::is_none);
        let until = if finished { u64::MAX } else { clock.now_us().saturating_sub(HOLD.as_micros() as u64) };
        let n = batch.due(until);
        let mut failure = None;
        match w.as_mut() {
            None => dropped += n as u64,
            Some(writer) => {
                for (k, p) in batch.pending[..n].iter().enumerate() {
                    line.clear();
                    let at = writer.origin_us + p.at_us;
                    dbe_link::candump::push_line(&mut line, at, &names[p.source], &p.frame, Some(p.direction));
                    if let Err(e) = writer.write(&line, clock) {
                        failure = Some(e.to_string());
                        dropped += (n - k) as u64;
                        break;
                    }
                }
                if failure.is_none() && tokio::time::Instant::now() >= flush_at {
                    flush_at = tokio::time::Instant::now() + FLUSH_EVERY;
                    if let Err(e) = writer.file.flush() {
                        failure = Some(e.to_string());
                    }
                }
                if let Some(why) = &failure {
                    seq = writer.seq + 1;
                    let _ = state.send(RecorderState::Failed(format!(
                        "recording stopped: {why}; trying again every {} s",
                        RETRY_AFTER.as_secs()
                    )));
                }
            }
        }
        batch.pending.drain(..n);
        if failure.is_some() {
            w = None;
            retry_at = tokio::time::Instant::now() + RETRY_AFTER;
        }
        if w.is_none() && failure.is_none() && !finished && tokio::time::Instant::now() >= retry_at {
            match Writer::open(cfg.clone(), seq, clock) {
                Ok(writer) => {
                    tracing::warn!("recording again; {dropped} frames were not recorded meanwhile");
                    dropped = 0;
                    let _ = state.send(RecorderState::Recording { file: writer.path.clone() });
                    w = Some(writer);
                }
                Err(_) => retry_at = tokio::time::Instant::now() + RETRY_AFTER,
            }
        }
        if let Some(writer) = &w {
            let now = RecorderState::Recording { file: writer.path.clone() };
            state.send_if_modified(|s| {
                if *s != now {
                    *s = now;
                    true
                } else {
                    false
                }
            });
        }
        if finished {
            break;
        }
    }
    if let Some(mut writer) = w {
        let _ = writer.file.flush();
    }
    let _ = state.send(RecorderState::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_line(at_us: u64, frame: &dbe_core::CanFrame, dir: Direction) -> String {
        let mut s = String::new();
        dbe_link::candump::push_line(&mut s, at_us, "can0", frame, Some(dir));
        s
    }

    #[test]
    fn rotation_keeps_the_folder_under_budget() {
        let dir = std::env::temp_dir().join(format!("dbe-rec-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let cfg = RecorderConfig { dir: dir.clone(), max_file: 1000, max_total: 3500 };
        let clock = Clock::new();
        let mut w = Writer::open(cfg, 0, clock).unwrap();
        let f = dbe_core::CanFrame::standard(0x1DB, &[0xAA; 8]).unwrap();
        for i in 0..500u64 {
            w.write(&frame_line(1_700_000_000_000_000 + i, &f, Direction::Rx), clock).unwrap();
        }
        w.file.flush().unwrap();
        let files = log_files(&dir);
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        assert!(files.len() >= 3, "rotated: {files:?}");
        assert!(total <= 3500, "{total} bytes kept");
        assert!(files.iter().all(|(_, n)| *n <= 1000));
        let text = fs::read_to_string(&files.last().unwrap().0).unwrap();
        assert!(text.lines().all(|l| l.starts_with('(') && l.ends_with("can0 1DB#AAAAAAAAAAAAAAAA R")));
        assert!(text.lines().all(|l| dbe_link::candump::parse_line(l).unwrap().is_some()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_batch_is_written_in_time_order_and_holds_back_the_youngest() {
        let f = |id| dbe_core::CanFrame::standard(id, &[]).unwrap();
        let pf = |id, at_us, direction| PortFrame { frame: f(id), direction, at_us };
        let mut b = Batch::default();
        // The inverter port's frames reach the recorder after the battery port's, though some are older.
        b.push(0, pf(0x1, 100, Direction::Rx));
        b.push(0, pf(0x2, 300, Direction::Tx));
        b.push(0, pf(0x3, 300, Direction::Rx));
        b.push(1, pf(0x4, 200, Direction::Rx));
        b.push(1, pf(0x5, 900, Direction::Tx));
        let n = b.due(500);
        let ids: Vec<u32> = b.pending.iter().map(|p| p.frame.raw_id()).collect();
        assert_eq!(n, 4, "the frame at 900 µs waits for the next batch");
        assert_eq!(ids, [0x1, 0x4, 0x2, 0x3, 0x5], "by time; a port's own order kept within one µs");
    }

    #[tokio::test]
    async fn writes_both_directions_of_every_port_in_time_order() {
        let dir = std::env::temp_dir().join(format!("dbe-rec-dir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let cfg = RecorderConfig { dir: dir.clone(), max_file: 1 << 20, max_total: 1 << 22 };
        let clock = Clock::new();
        let (bat, _) = broadcast::channel(64);
        let (inv, _) = broadcast::channel(64);
        let sources = vec![
            Source { name: "battery".into(), rx: bat.subscribe() },
            Source { name: "inverter".into(), rx: inv.subscribe() },
        ];
        let (state_tx, mut state_rx) = watch::channel(RecorderState::Stopped);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(cfg, clock, sources, state_tx, stop_rx));
        let f = |id| dbe_core::CanFrame::standard(id, &[id as u8]).unwrap();
        let t = clock.now_us();
        inv.send(PortFrame { frame: f(0x42), direction: Direction::Rx, at_us: t + 2 }).unwrap();
        inv.send(PortFrame { frame: f(0x43), direction: Direction::Tx, at_us: t + 3 }).unwrap();
        bat.send(PortFrame { frame: f(0x1D), direction: Direction::Tx, at_us: t + 1 }).unwrap();
        bat.send(PortFrame { frame: f(0x1E), direction: Direction::Rx, at_us: t + 4 }).unwrap();
        state_rx.wait_for(|s| matches!(s, RecorderState::Recording { .. })).await.unwrap();
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
        let files = log_files(&dir);
        let text = fs::read_to_string(&files[0].0).unwrap();
        let got: Vec<(String, u32, Option<Direction>)> = text
            .lines()
            .map(|l| dbe_link::candump::parse_line(l).unwrap().unwrap())
            .map(|l| (l.interface, l.frame.raw_id(), l.direction))
            .collect();
        let want = [
            ("battery", 0x1D, Direction::Tx),
            ("inverter", 0x42, Direction::Rx),
            ("inverter", 0x43, Direction::Tx),
            ("battery", 0x1E, Direction::Rx),
        ]
        .map(|(n, id, d)| (n.to_string(), id, Some(d)));
        assert_eq!(got, want);
        fs::remove_dir_all(&dir).unwrap();
    }
}
