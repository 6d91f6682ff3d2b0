//! The last 24 h of SOC, power and voltage for the Status chart: a ring buffer sampled from the latest snapshot.
//!
//! Samples carry wall-clock time (ms since the Unix epoch) because the chart's axis is the user's clock, while
//! snapshot times count from the bridge's start.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::Shared;
use crate::hub::Snapshot;

const SPAN: Duration = Duration::from_secs(24 * 3600);
const MAX_SAMPLES: usize = 10_000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct Sample {
    pub t_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_real_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_w: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_v: Option<f64>,
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Sample {
    pub fn now(s: &Snapshot) -> Sample {
        let b = &s.status.battery;
        Sample {
            t_ms: wall_ms(),
            soc_pct: s.status.reported.soc_pct,
            soc_real_pct: b.soc_real_pct,
            power_w: b.power_w,
            voltage_v: b.voltage_v,
        }
    }
}

pub(crate) struct History {
    interval: Duration,
    capacity: usize,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new(interval: Duration) -> History {
        let capacity = ((SPAN.as_secs() / interval.as_secs().max(1)) as usize).clamp(1, MAX_SAMPLES);
        History { interval, capacity, samples: Mutex::new(VecDeque::with_capacity(capacity)) }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn push(&self, s: Sample) {
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(s);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

pub(crate) fn spawn_sampler(state: Shared, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let snap = state.handle.latest();
            // Before the first snapshot there is nothing worth drawing.
            if snap.status.time_ms == 0 && snap.status.battery.voltage_v.is_none() {
                continue;
            }
            state.history.push(Sample::now(&snap));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_day() {
        let h = History::new(Duration::from_secs(3600));
        assert_eq!(h.capacity, 24);
        for i in 0..30 {
            h.push(Sample { t_ms: i, soc_pct: None, soc_real_pct: None, power_w: None, voltage_v: None });
        }
        let s = h.samples();
        assert_eq!(s.len(), 24);
        assert_eq!(s[0].t_ms, 6);
        assert_eq!(s[23].t_ms, 29);
    }
}
