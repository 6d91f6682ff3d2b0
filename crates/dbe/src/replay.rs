//! `dbe replay`: drive the bridge from a recorded candump log and print what the inverter would have been told,
//! or, with `--compare`, whether DBE would still send what the log says it sent.
//!
//! Frames on interface `battery` go to the battery side, `inverter` to the inverter side, any other interface
//! (a shared bus, a plain `candump -l` capture) to both, as on a shared bus. Only received frames are input: lines
//! marked `R` or unmarked; lines marked `T` are what the recording DBE sent (see the recorder), used by `--compare`
//! and otherwise only to advance time (`--include-sent` feeds them in too, for captures where `T` was another
//! tool's own traffic). The log's timestamps are the bridge's clock, from the first line, so stale-data timeouts
//! and expiring limits happen as they would have; between frames the bridge's own deadlines run. One JSON line is
//! printed whenever the supervisor's decision changes.
//!
//! ## What `--compare` calls a difference
//! DBE's periodic sends are driven by its clock, and the replayed clock starts at the first line rather than
//! where the recording DBE's started, so exact times cannot match; what must match is what DBE said, in order:
//! - Per port and CAN id, the n-th frame DBE sends now is compared with the n-th `T` frame of the log: a different
//!   payload (data, length, remote flag) is a difference. With `--time-tolerance MS` a pair further apart than
//!   that in time is one too.
//! - A frame one side has and the other has not (a missing answer, an id no longer or newly sent) is a
//!   difference, except within [`EDGE`] of the end of the compared span, where the two clocks' offset decides on
//!   which side of the end a frame falls.
//! - The order between different ids is not compared (it depends on how frames of one millisecond interleave).
//! - Commands are not in a log. The last `--tail` seconds (default 3.5: the safe stop of a clean `dbe run`
//!   shutdown, [`crate::run::SHUTDOWN_GRACE`]) are left out of the comparison; a Stop or Pause given from the
//!   dashboard or MQTT during the recording shows as a difference from that moment.
//!
//! The first differences are printed in time order, with the log's time and the id; the exit status is 1 when
//! there is one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Result};
use dbe_core::bridge::{Bridge, BridgeConfig, Port};
use dbe_core::supervisor::Output;
use dbe_core::{CanFrame, Instant};
use dbe_link::candump::Direction;
use dbe_services::status::Status;
use serde_json::json;

/// How far before the log's first sent frame a received one still counts as handled by the recorded bridge. The
/// daemon's bridge ignores frames read before it started and sends its first frames at once (see
/// `run::bridge_loop`), and sent frames are stamped when queued: so that is a frame read in the few µs between.
const START_MARGIN_US: u64 = 50;

/// Near the end of the compared span, a frame on one side only is not a difference (see the module doc).
pub const EDGE: u64 = 200;

/// How `dbe replay` runs.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// At the recorded speed instead of as fast as possible.
    pub realtime: bool,
    /// Feed `T` lines to the bridge as well.
    pub include_sent: bool,
    /// Compare what the bridge sends with the log's `T` lines instead of printing decisions.
    pub compare: Option<CompareOptions>,
}

#[derive(Copy, Clone, Debug)]
pub struct CompareOptions {
    /// Leave out this much of the end of the log (ms).
    pub tail_ms: u64,
    /// Pairs further apart than this (ms) differ; `None`: timing is not compared.
    pub time_tolerance_ms: Option<u64>,
    /// Print at most this many differences.
    pub max_shown: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { tail_ms: 3500, time_tolerance_ms: None, max_shown: 10 }
    }
}

/// What a sent frame is compared by: the interface it went out on (as the log names it) and its id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Shared by every frame of the interface (see [`Interfaces`]), so a key costs no allocation.
    pub interface: Rc<str>,
    pub id: u32,
    pub extended: bool,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.extended {
            write!(f, "{} {:08X}", self.interface, self.id)
        } else {
            write!(f, "{} {:03X}", self.interface, self.id)
        }
    }
}

/// One sent frame: when (ms since the first line) and what.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub at_ms: u64,
    /// The timestamp as the log writes it (µs), for the report: the line's own for a frame of the log.
    pub stamp_us: u64,
    pub frame: CanFrame,
}

/// Where the replay and the log part ways, for one id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The `index`-th frame of the id carries other data now.
    Payload { key: Key, index: usize, log: Sent, replay: Sent },
    /// The `index`-th frame of the id is sent further from its recorded time than the tolerance.
    Timing { key: Key, index: usize, log: Sent, replay: Sent },
    /// The log has this frame; DBE does not send it now.
    Missing { key: Key, index: usize, log: Sent },
    /// DBE sends this frame now; the log does not have it.
    Extra { key: Key, index: usize, replay: Sent },
}

impl Difference {
    /// When it happened (the log's time where there is one), ms since the first line.
    pub fn at_ms(&self) -> u64 {
        match self {
            Difference::Payload { log, .. } | Difference::Timing { log, .. } | Difference::Missing { log, .. } => {
                log.at_ms
            }
            Difference::Extra { replay, .. } => replay.at_ms,
        }
    }

    /// One line for the report, starting with the log's own timestamp and the time since the first line.
    pub fn describe(&self) -> String {
        let data = |f: &CanFrame| dbe_link::candump::format_frame(f);
        let at = |s: &Sent| {
            let (us, ms) = (s.stamp_us, s.at_ms);
            format!("({}.{:06}) +{}.{:03} s", us / 1_000_000, us % 1_000_000, ms / 1000, ms % 1000)
        };
        match self {
            Difference::Payload { key, index, log, replay } => format!(
                "{} {key} frame #{}: the log has {}, DBE sends {} now",
                at(log),
                index + 1,
                data(&log.frame),
                data(&replay.frame)
            ),
            Difference::Timing { key, index, log, replay } => format!(
                "{} {key} frame #{}: sent at +{} ms in the log, at +{} ms now",
                at(log),
                index + 1,
                log.at_ms,
                replay.at_ms
            ),
            Difference::Missing { key, index, log } => {
                format!(
                    "{} {key} frame #{}: the log has {}, DBE does not send it now",
                    at(log),
                    index + 1,
                    data(&log.frame)
                )
            }
            Difference::Extra { key, index, replay } => format!(
                "{} {key} frame #{}: DBE sends {} now, the log does not have it",
                at(replay),
                index + 1,
                data(&replay.frame)
            ),
        }
    }
}

/// Compares the frames DBE sends now with those the log says it sent, over `[0, end_ms]` (the rule is in the
/// module doc). Both lists are in time order. Returns every difference, in time order.
pub fn compare(log: &[(Key, Sent)], replay: &[(Key, Sent)], end_ms: u64, tolerance_ms: Option<u64>) -> Vec<Difference> {
    let mut by_key: BTreeMap<&Key, (Vec<Sent>, Vec<Sent>)> = BTreeMap::new();
    for (k, s) in log.iter().filter(|(_, s)| s.at_ms <= end_ms) {
        by_key.entry(k).or_default().0.push(*s);
    }
    for (k, s) in replay.iter().filter(|(_, s)| s.at_ms <= end_ms) {
        by_key.entry(k).or_default().1.push(*s);
    }
    let near_end = |s: &Sent| s.at_ms + EDGE > end_ms;
    let mut out = Vec::new();
    for (key, (l, r)) in by_key {
        for (index, (a, b)) in l.iter().zip(&r).enumerate() {
            let key = key.clone();
            if a.frame != b.frame {
                out.push(Difference::Payload { key, index, log: *a, replay: *b });
            } else if tolerance_ms.is_some_and(|t| a.at_ms.abs_diff(b.at_ms) > t) {
                out.push(Difference::Timing { key, index, log: *a, replay: *b });
            }
        }
        let n = l.len().min(r.len());
        for (i, a) in l.iter().enumerate().skip(n).filter(|(_, a)| !near_end(a)) {
            out.push(Difference::Missing { key: key.clone(), index: i, log: *a });
        }
        for (i, b) in r.iter().enumerate().skip(n).filter(|(_, b)| !near_end(b)) {
            out.push(Difference::Extra { key: key.clone(), index: i, replay: *b });
        }
    }
    out.sort_by_key(|d| d.at_ms());
    out
}

fn decision(o: &Output) -> (i32, i32, Option<u16>, u32, u32, bool) {
    (
        o.charge_current_limit.0,
        o.discharge_current_limit.0,
        o.soc.map(|s| s.0),
        o.alarms.bits(),
        o.warnings.bits(),
        o.contactors == Some(dbe_core::battery::ContactorRequest::Closed),
    )
}

fn print_decision(out: &mut impl std::io::Write, bridge: &Bridge, now: Instant, sent_to_inverter: u64) -> Result<()> {
    let s = Status::of(bridge, now);
    writeln!(
        out,
        "{}",
        json!({
            "time_ms": now.as_millis(),
            "soc_pct": s.reported.soc_pct,
            "charge_current_a": s.limits.charge_current_a,
            "discharge_current_a": s.limits.discharge_current_a,
            "charge_limited_by": s.limits.charge_limited_by,
            "discharge_limited_by": s.limits.discharge_limited_by,
            "max_charge_voltage_v": s.limits.max_charge_voltage_v,
            "min_discharge_voltage_v": s.limits.min_discharge_voltage_v,
            "alarms": s.alarms,
            "warnings": s.warnings,
            "contactor_request": s.contactor_request,
            "frames_to_inverter": sent_to_inverter,
        })
    )?;
    Ok(())
}

/// Which log interface carries each bridge port: `battery` and `inverter` when the log names them, else the
/// first other interface (a shared bus, `bus`, or a plain capture's `can0`), which carries both. Every name the
/// log uses is kept once; keys share it.
#[derive(Default)]
struct Interfaces {
    battery: Option<Rc<str>>,
    inverter: Option<Rc<str>>,
    other: Option<Rc<str>>,
    /// Every name seen, in order (a log has a handful at most).
    names: Vec<Rc<str>>,
}

impl Interfaces {
    /// The shared name, noted the first time it is seen.
    fn note(&mut self, name: &str) -> Rc<str> {
        if let Some(known) = self.names.iter().find(|n| &***n == name) {
            return known.clone();
        }
        let rc: Rc<str> = name.into();
        self.names.push(rc.clone());
        match name {
            "battery" => self.battery.get_or_insert_with(|| rc.clone()),
            "inverter" => self.inverter.get_or_insert_with(|| rc.clone()),
            _ => self.other.get_or_insert_with(|| rc.clone()),
        };
        rc
    }

    fn of(&self, port: Port) -> Rc<str> {
        let named = match port {
            Port::Battery => &self.battery,
            Port::Inverter => &self.inverter,
        };
        named.clone().or_else(|| self.other.clone()).unwrap_or_else(|| port.name().into())
    }
}

/// Runs the replay; with `--compare`, returns whether DBE still sends what the log holds (no difference).
pub fn run(cfg: BridgeConfig, opts: &ReplayOptions, path: &Path) -> Result<bool> {
    let mut bridge = Bridge::new(cfg);
    let mut first_us = None;
    let mut now = Instant::ZERO;
    let mut last = None;
    let mut sent = 0u64;
    let mut malformed = 0u64;
    let stdout = std::io::stdout();
    let mut st = State {
        compare: opts.compare.is_some(),
        out: std::io::BufWriter::new(stdout.lock()),
        origin_us: 0,
        ifaces: Interfaces::default(),
        sent: Vec::new(),
    };
    let mut recorded: Vec<(Key, Sent)> = Vec::new();
    // Compared, the replay starts where the recorded bridge did: at its first sent frame (its first turn). The
    // recorder may have heard a few frames before the bridge ran; feeding those would answer a poll the recorded
    // bridge never saw.
    let mut start_us = None;
    if opts.compare.is_some() {
        crate::decode::read_log(path, |_, item| {
            if let Ok(p) = item {
                if p.direction == Some(Direction::Tx) && start_us.is_none() {
                    start_us = Some(p.timestamp_us);
                }
            }
            Ok(())
        })?;
    }
    let wall0 = std::time::Instant::now();
    crate::decode::read_log(path, |_, item| {
        let parsed = match item {
            Ok(p) => p,
            Err(e) => {
                malformed += 1;
                eprintln!("{}", crate::decode::skipped(path, &e));
                return Ok(());
            }
        };
        // A frame read before the recorded bridge started was not heard by it.
        if start_us.is_some_and(|s| parsed.timestamp_us + START_MARGIN_US < s) {
            return Ok(());
        }
        let interface = st.ifaces.note(parsed.interface);
        let t0 = match first_us {
            Some(t0) => t0,
            None => {
                // The daemon's bridge takes its first turn as it starts, before any frame, and anchors its periodic
                // sends there; the recording starts with that turn's frames.
                first_us = Some(parsed.timestamp_us);
                st.origin_us = parsed.timestamp_us;
                drain(&mut bridge, now, &mut sent, &mut last, &mut st)?;
                parsed.timestamp_us
            }
        };
        // Rounded up to the bridge's next millisecond: a frame logged after DBE's send is never replayed before
        // the deadline that made it (an answer before its poll would be ignored); the cost is that a frame up to
        // 1 ms before a deadline may be handled just after it, which only reorders unrelated events.
        let at = Instant::from_millis(parsed.timestamp_us.saturating_sub(t0).div_ceil(1000)).max(now);
        // Let the bridge's own deadlines pass up to this frame.
        while let Some(d) = bridge.poll_timeout().filter(|&d| d <= at) {
            now = d.max(now);
            bridge.handle_timeout(now);
            drain(&mut bridge, now, &mut sent, &mut last, &mut st)?;
            if d < now {
                break;
            }
        }
        now = at;
        if opts.realtime {
            st.out.flush()?;
            let due = wall0 + std::time::Duration::from_millis(now.as_millis());
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if parsed.direction == Some(Direction::Tx) {
            if st.compare {
                let key = Key { interface, id: parsed.frame.raw_id(), extended: parsed.frame.is_extended() };
                let frame = parsed.frame;
                recorded.push((key, Sent { at_ms: now.as_millis(), stamp_us: parsed.timestamp_us, frame }));
            }
            if !opts.include_sent {
                return Ok(());
            }
        }
        let ports: &[Port] = match parsed.interface {
            "battery" => &[Port::Battery],
            "inverter" => &[Port::Inverter],
            _ => &[Port::Battery, Port::Inverter],
        };
        for &port in ports {
            let _ = bridge.handle_frame(now, port, &parsed.frame);
        }
        drain(&mut bridge, now, &mut sent, &mut last, &mut st)
    })?;
    if malformed > 0 {
        eprintln!("{malformed} malformed line(s) skipped");
    }
    let Some(c) = opts.compare else {
        print_decision(&mut st.out, &bridge, now, sent)?;
        st.out.flush()?;
        return Ok(true);
    };
    st.out.flush()?;
    drop(st.out);
    if recorded.is_empty() {
        bail!("{} holds no frames marked T (sent by DBE): nothing to compare", path.display());
    }
    let end_ms = now.as_millis().saturating_sub(c.tail_ms);
    let diffs = compare(&recorded, &st.sent, end_ms, c.time_tolerance_ms);
    let in_span = |v: &[(Key, Sent)]| v.iter().filter(|(_, s)| s.at_ms <= end_ms).count();
    println!(
        "compared {} sent frames in the log with {} DBE sends now, over +0.000 to +{}.{:03} s (the last {}.{:03} s left out)",
        in_span(&recorded),
        in_span(&st.sent),
        end_ms / 1000,
        end_ms % 1000,
        c.tail_ms / 1000,
        c.tail_ms % 1000
    );
    for d in diffs.iter().take(c.max_shown) {
        println!("{}", d.describe());
    }
    match diffs.len() {
        0 => println!("no difference"),
        n if n > c.max_shown => println!("{n} differences ({} shown)", c.max_shown),
        n => println!("{n} difference(s)"),
    }
    Ok(diffs.is_empty())
}

/// What the replay keeps between lines apart from the bridge.
struct State<W> {
    compare: bool,
    /// Decisions go out through one buffer (flushed at the end, and before each wait with `--realtime`).
    out: W,
    /// The first line's timestamp (µs): the replayed clock's zero.
    origin_us: u64,
    ifaces: Interfaces,
    /// Every frame the bridge sent, keyed as the log would name it (with `--compare`).
    sent: Vec<(Key, Sent)>,
}

type Decision = (i32, i32, Option<u16>, u32, u32, bool);

fn drain<W: std::io::Write>(
    bridge: &mut Bridge,
    now: Instant,
    sent: &mut u64,
    last: &mut Option<Decision>,
    st: &mut State<W>,
) -> Result<()> {
    while let Some((port, frame)) = bridge.poll_transmit(now) {
        if port == Port::Inverter {
            *sent += 1;
        }
        if st.compare {
            let key = Key { interface: st.ifaces.of(port), id: frame.raw_id(), extended: frame.is_extended() };
            let at_ms = now.as_millis();
            st.sent.push((key, Sent { at_ms, stamp_us: st.origin_us + at_ms * 1000, frame }));
        }
    }
    let d = decision(bridge.output());
    if *last != Some(d) {
        *last = Some(d);
        if !st.compare {
            print_decision(&mut st.out, bridge, now, *sent)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> Key {
        Key { interface: "bus".into(), id, extended: false }
    }

    fn sent(id: u32, at_ms: u64, data: &[u8]) -> (Key, Sent) {
        let stamp_us = 1_700_000_000_000_000 + at_ms * 1000 + 7;
        (key(id), Sent { at_ms, stamp_us, frame: CanFrame::standard(id as u16, data).unwrap() })
    }

    /// A keep-alive every 10 ms with a 2-bit counter, from `start` ms, up to `until`.
    fn keepalive(start: u64, until: u64) -> Vec<(Key, Sent)> {
        (0..)
            .map(|i| (i, start + i * 10))
            .take_while(|(_, t)| *t <= until)
            .map(|(i, t)| sent(0x1D4, t, &[i as u8 & 3]))
            .collect()
    }

    #[test]
    fn the_same_frames_a_few_ms_apart_are_no_difference() {
        let log = keepalive(3, 2000);
        let now = keepalive(0, 2000);
        assert_eq!(compare(&log, &now, 1500, None), []);
        assert_eq!(compare(&log, &now, 1500, Some(5)), []);
    }

    #[test]
    fn an_altered_payload_is_reported_with_its_place() {
        let mut log = keepalive(0, 2000);
        log[37].1.frame = CanFrame::standard(0x1D4, &[9]).unwrap();
        let d = compare(&log, &keepalive(0, 2000), 1500, None);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(matches!(&d[0], Difference::Payload { index: 37, log, .. } if log.at_ms == 370));
        let text = d[0].describe();
        assert!(text.starts_with("(1700000000.370007) +0.370 s bus 1D4 frame #38"), "{text}");
        assert!(text.contains("1D4#09") && text.contains("1D4#01"), "{text}");
    }

    #[test]
    fn a_missing_answer_an_extra_one_and_late_timing_are_differences() {
        let log = vec![sent(0x421, 100, &[1]), sent(0x421, 1100, &[2])];
        let now = vec![sent(0x421, 100, &[1])];
        assert!(matches!(&compare(&log, &now, 1500, None)[..], [Difference::Missing { index: 1, .. }]));
        assert!(matches!(&compare(&now, &log, 1500, None)[..], [Difference::Extra { index: 1, .. }]));
        let late = vec![sent(0x421, 100, &[1]), sent(0x421, 1300, &[2])];
        assert_eq!(compare(&log, &late, 1500, None), [], "timing is not compared by default");
        assert!(matches!(&compare(&log, &late, 1500, Some(50))[..], [Difference::Timing { index: 1, .. }]));
    }

    #[test]
    fn one_side_only_near_the_end_or_after_it_is_no_difference() {
        let log = vec![sent(0x421, 100, &[1]), sent(0x421, 1450, &[2]), sent(0x421, 1700, &[3])];
        let now = vec![sent(0x421, 101, &[1])];
        assert_eq!(compare(&log, &now, 1500, None), []);
    }

    #[test]
    fn differences_come_in_time_order_across_ids() {
        let log = vec![sent(0x421, 500, &[1]), sent(0x1D4, 300, &[1])];
        let now = vec![sent(0x421, 500, &[2]), sent(0x1D4, 300, &[2])];
        let d = compare(&log, &now, 1500, None);
        assert_eq!(d.iter().map(Difference::at_ms).collect::<Vec<_>>(), [300, 500]);
    }
}
