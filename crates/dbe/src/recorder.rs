//! `--record DIR`: every CAN frame of every port into candump log files, rotated by size, never filling the disk.
//!
//! Files are named `dbe-<unix seconds>-<n>.log` in the candump `-l` format (`(secs.usecs) iface ID#DATA`), so
//! can-utils, python-can, SavvyCAN and `dbe decode`/`dbe replay` read them. A file is closed at `max_file` bytes;
//! the oldest files are deleted to keep the folder under `max_total`. A write error (disk full, folder removed)
//! stops recording with an error event; it never stops or slows the bridge. Lines are written whole: a crash
//! leaves at most one partial last line, which the log readers report and skip.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::ports::Received;

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
    pub rx: broadcast::Receiver<Received>,
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
}

impl Writer {
    fn open(cfg: RecorderConfig, seq: u32) -> std::io::Result<Writer> {
        fs::create_dir_all(&cfg.dir)?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let path = cfg.dir.join(format!("dbe-{secs:010}-{seq:04}.log"));
        let file = BufWriter::new(File::options().create(true).append(true).open(&path)?);
        enforce_budget(&cfg.dir, cfg.max_total.saturating_sub(cfg.max_file), &path)?;
        Ok(Writer { cfg, file, path, written: 0, seq })
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.written + line.len() as u64 + 1 > self.cfg.max_file {
            self.file.flush()?;
            *self = Writer::open(self.cfg.clone(), self.seq + 1)?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }
}

/// One candump line (the link crate's format, so every reader of DBE's logs agrees on it).
fn format_line(unix_us: u64, iface: &str, frame: &dbe_core::CanFrame) -> String {
    dbe_link::candump::LogLine { timestamp_us: unix_us, interface: iface.to_string(), frame: *frame, direction: None }
        .to_string()
}

/// How long the recorder waits before trying again after a write error (the disk may have been cleared).
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Records until `stop` changes to true or every source closes. Flushes before returning. After a write error
/// the recorder reports `Failed`, drops frames (counted in the log) and tries a new file every [`RETRY_AFTER`]:
/// what was written before stays on disk whole, except at most the last line.
pub async fn run(
    cfg: RecorderConfig,
    sources: Vec<Source>,
    state: watch::Sender<RecorderState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seq = 0;
    let mut w = match Writer::open(cfg.clone(), seq) {
        Ok(w) => {
            let _ = state.send(RecorderState::Recording { file: w.path.clone() });
            Some(w)
        }
        Err(e) => {
            let _ = state.send(RecorderState::Failed(format!("cannot start recording in {}: {e}", cfg.dir.display())));
            None
        }
    };
    let mut retry_at = tokio::time::Instant::now() + RETRY_AFTER;
    let mut dropped: u64 = 0;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Received)>(crate::ports::RX_CAPACITY);
    for mut s in sources {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match s.rx.recv().await {
                    Ok(r) => {
                        if tx.send((s.name.clone(), r)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::warn!(port = %s.name, "recorder lost {n} frames"),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
    drop(tx);
    let mut flush = tokio::time::interval(std::time::Duration::from_secs(1));
    let fail = |w: &mut Option<Writer>, why: String, retry_at: &mut tokio::time::Instant| {
        *w = None;
        *retry_at = tokio::time::Instant::now() + RETRY_AFTER;
        let _ = state.send(RecorderState::Failed(format!("recording stopped: {why}; trying again every 5 s")));
    };
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some((iface, r)) = m else { break };
                let Some(writer) = w.as_mut() else {
                    dropped += 1;
                    continue;
                };
                let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
                if let Err(e) = writer.write(&format_line(us, &iface, &r.frame)) {
                    seq = writer.seq + 1;
                    fail(&mut w, e.to_string(), &mut retry_at);
                }
            }
            _ = flush.tick() => {
                match w.as_mut() {
                    Some(writer) => {
                        if let Err(e) = writer.file.flush() {
                            seq = writer.seq + 1;
                            fail(&mut w, e.to_string(), &mut retry_at);
                        }
                    }
                    None if tokio::time::Instant::now() >= retry_at => match Writer::open(cfg.clone(), seq) {
                        Ok(writer) => {
                            tracing::warn!("recording again; {dropped} frames were not recorded meanwhile");
                            dropped = 0;
                            let _ = state.send(RecorderState::Recording { file: writer.path.clone() });
                            w = Some(writer);
                        }
                        Err(_) => retry_at = tokio::time::Instant::now() + RETRY_AFTER,
                    },
                    None => {}
                }
                if let Some(writer) = &w {
                    let now = RecorderState::Recording { file: writer.path.clone() };
                    state.send_if_modified(|s| if *s != now { *s = now; true } else { false });
                }
            }
            _ = stop.changed() => if *stop.borrow() { break },
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

    #[test]
    fn rotation_keeps_the_folder_under_budget() {
        let dir = std::env::temp_dir().join(format!("dbe-rec-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let cfg = RecorderConfig { dir: dir.clone(), max_file: 1000, max_total: 3500 };
        let mut w = Writer::open(cfg, 0).unwrap();
        let f = dbe_core::CanFrame::standard(0x1DB, &[0xAA; 8]).unwrap();
        for i in 0..500u64 {
            w.write(&format_line(1_700_000_000_000_000 + i, "can0", &f)).unwrap();
        }
        w.file.flush().unwrap();
        let files = log_files(&dir);
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        assert!(files.len() >= 3, "rotated: {files:?}");
        assert!(total <= 3500, "{total} bytes kept");
        assert!(files.iter().all(|(_, n)| *n <= 1000));
        let text = fs::read_to_string(&files.last().unwrap().0).unwrap();
        assert!(text.lines().all(|l| l.starts_with('(') && l.ends_with("can0 1DB#AAAAAAAAAAAAAAAA")));
        assert!(text.lines().all(|l| dbe_link::candump::parse_line(l).unwrap().is_some()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
