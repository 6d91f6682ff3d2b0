//! `dbe decode`: run a battery driver over a candump log and print what it decoded.
//!
//! Useful to check a driver against a capture from a real pack before wiring anything. The log's own timestamps
//! drive the driver's clock, so multi-frame polls and freshness behave as they did on the bus. Only frames the
//! logger received are decoded (marked `R`, or unmarked); frames marked `T` were sent by the logger (in DBE's
//! recordings: its own keep-alives and polls) and are counted and skipped unless `include_sent`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use dbe_core::battery::{AnyBattery, Battery, BatteryKind};
use dbe_core::can::FrameUse;
use dbe_core::model::BatteryModel;
use dbe_core::Instant;
use dbe_link::candump::{Decoder, LineError, LogLineRef};
use serde_json::json;

use dbe_services::status::{BatteryStatus, CellsStatus};

/// Counts of what the log held, printed with the result so a mostly-unreadable log is not mistaken for a quiet one.
#[derive(Default)]
struct Counts {
    lines: u64,
    frames: u64,
    used: u64,
    malformed: u64,
    rejected: u64,
    /// Frames marked `T` left out.
    sent_skipped: u64,
}

fn state_json(kind: BatteryKind, model: &BatteryModel, counts: &Counts, at_ms: u64) -> serde_json::Value {
    json!({
        "time_ms": at_ms,
        "battery": BatteryStatus::of(kind.info().name, model),
        "cells": CellsStatus::of_model(model),
        "lines": counts.lines,
        "frames": counts.frames,
        "frames_decoded": counts.used,
        "lines_malformed": counts.malformed,
        "frames_rejected": counts.rejected,
        "frames_sent_skipped": counts.sent_skipped,
    })
}

/// How much of a log is read per system call: large enough that reading costs nothing next to parsing.
pub(crate) const READ_SIZE: usize = 1 << 20;

/// Reads a candump log in [`READ_SIZE`] blocks through the [`Decoder`] and hands every line that is a frame or an
/// error to `each` with its line number, allocating nothing per line. Returns the number of lines, skipped ones
/// (blank, comments) included.
pub(crate) fn read_log(
    path: &Path,
    mut each: impl FnMut(u64, Result<LogLineRef<'_>, LineError>) -> Result<()>,
) -> Result<u64> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = Decoder::new();
    loop {
        let n = match file.read(decoder.spare(READ_SIZE)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("{}:{}: reading", path.display(), decoder.lines() + 1)),
        };
        if n == 0 {
            decoder.finish();
        } else {
            decoder.commit(n);
        }
        while let Some((line, item)) = decoder.poll_ref() {
            each(line, item)?;
        }
        if n == 0 {
            return Ok(decoder.lines());
        }
    }
}

/// A bad line as `dbe decode` and `dbe replay` report it: `FILE:LINE: skipped: WHY`.
pub(crate) fn skipped(path: &Path, e: &LineError) -> String {
    match e {
        LineError::Parse { line, source } => format!("{}:{line}: skipped: {source}", path.display()),
        LineError::TooLong { line, limit } => {
            format!("{}:{line}: skipped: longer than {limit} bytes without a line end", path.display())
        }
    }
}

pub fn run(kind: BatteryKind, each: bool, include_sent: bool, path: &Path) -> Result<()> {
    let mut battery = AnyBattery::new(kind.into());
    let mut model = BatteryModel::new(battery.design()).with_extras(battery.extras());
    let mut counts = Counts::default();
    let mut first_us = None;
    let mut last_ms = 0;
    // Only what is asked for goes out, through one lock and one buffer.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    counts.lines = read_log(path, |lineno, item| {
        counts.lines = lineno;
        let parsed = match item {
            Ok(p) => p,
            Err(e) => {
                counts.malformed += 1;
                eprintln!("{}", skipped(path, &e));
                return Ok(());
            }
        };
        counts.frames += 1;
        let t0 = *first_us.get_or_insert(parsed.timestamp_us);
        // Time runs from the first frame; a timestamp that goes backwards keeps the clock where it was.
        let now_ms = (parsed.timestamp_us.saturating_sub(t0) / 1000).max(last_ms);
        last_ms = now_ms;
        if parsed.direction == Some(dbe_link::candump::Direction::Tx) && !include_sent {
            counts.sent_skipped += 1;
            return Ok(());
        }
        let now = Instant::from_millis(now_ms);
        let before = each.then(|| model.clone());
        match battery.handle_frame(now, &parsed.frame, &mut model) {
            Ok(FrameUse::Used) => {
                counts.used += 1;
                model.last_valid_frame_at = Some(now);
                if let Some(before) = before {
                    if !same_values(&before, &model) {
                        writeln!(out, "{}", state_json(kind, &model, &counts, now_ms))?;
                    }
                }
            }
            Ok(FrameUse::Ignored) => {}
            Err(e) => {
                counts.rejected += 1;
                eprintln!("{}:{lineno}: rejected: {e}", path.display());
            }
        }
        // The driver's own polls would go to the pack; in a replay nobody answers them.
        while battery.poll_transmit(now).is_some() {}
        Ok(())
    })?;
    writeln!(out, "{}", state_json(kind, &model, &counts, last_ms))?;
    out.flush()?;
    Ok(())
}

/// Equal apart from freshness stamps: a frame that repeats the same values changed nothing an owner would see.
fn same_values(a: &BatteryModel, b: &BatteryModel) -> bool {
    a.pack_voltage.map(|r| r.value) == b.pack_voltage.map(|r| r.value)
        && a.current.map(|r| r.value) == b.current.map(|r| r.value)
        && a.soc.map(|r| r.value) == b.soc.map(|r| r.value)
        && a.soh.map(|r| r.value) == b.soh.map(|r| r.value)
        && a.temperature_min.map(|r| r.value) == b.temperature_min.map(|r| r.value)
        && a.temperature_max.map(|r| r.value) == b.temperature_max.map(|r| r.value)
        && a.total_energy.map(|r| r.value) == b.total_energy.map(|r| r.value)
        && a.remaining_energy.map(|r| r.value) == b.remaining_energy.map(|r| r.value)
        && a.max_charge_power.map(|r| r.value) == b.max_charge_power.map(|r| r.value)
        && a.max_discharge_power.map(|r| r.value) == b.max_discharge_power.map(|r| r.value)
        && a.cells.voltages() == b.cells.voltages()
        && a.cells.balancing_count() == b.cells.balancing_count()
        && a.contactors == b.contactors
        && a.bms_status == b.bms_status
        && a.faults == b.faults
        && a.extras.iter().map(|e| (e.key(), e.value)).eq(b.extras.iter().map(|e| (e.key(), e.value)))
}
