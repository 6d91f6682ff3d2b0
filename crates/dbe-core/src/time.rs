//! Monotonic time as the core sees it: milliseconds handed in by whoever drives the state machines.
//!
//! The core never reads a clock. The daemon passes the milliseconds since it started; the tests pass simulated
//! time. A millisecond is fine enough for every CAN period we drive (the shortest is 10 ms) and a `u64` of them
//! outlasts any deployment.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in monotonic time, in milliseconds since an epoch the caller chooses.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

/// A span of time in milliseconds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, or zero if `earlier` is in the future (never underflows).
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates instead of overflowing: a deadline "at the end of time" is a deadline that never comes.
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_add(rhs.0))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} s", self.0 / 1000, self.0 % 1000)
    }
}

/// The earlier of two optional deadlines; `None` means "no deadline".
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A periodic send or timeout slot: when it is due next, and how far apart its firings are.
///
/// Drivers keep a fixed table of these instead of a scatter of `last_sent_*` fields, so `poll_timeout` is the
/// minimum over the table and a spurious `handle_timeout` call does nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Periodic {
    pub interval: Duration,
    next_at: Option<Instant>,
}

impl Periodic {
    pub const fn new(interval: Duration) -> Self {
        Periodic { interval, next_at: None }
    }

    /// Arms the slot so that it first fires at `at`.
    pub fn start_at(&mut self, at: Instant) {
        self.next_at = Some(at);
    }

    pub fn stop(&mut self) {
        self.next_at = None;
    }

    pub fn is_running(&self) -> bool {
        self.next_at.is_some()
    }

    pub fn next_at(&self) -> Option<Instant> {
        self.next_at
    }

    /// True once per period when due. Keeps the cadence anchored to the schedule rather than to the late call
    /// time (so 10 ms frames stay 10 ms apart on average), but never bursts to catch up after a long stall.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.next_at {
            Some(at) if now >= at => {
                let next = at + self.interval;
                self.next_at = Some(if next <= now { now + self.interval } else { next });
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_keeps_cadence_without_bursting() {
        let mut p = Periodic::new(Duration::from_millis(10));
        assert!(!p.poll(Instant::from_millis(0)));
        p.start_at(Instant::from_millis(0));
        assert!(p.poll(Instant::from_millis(0)));
        assert!(!p.poll(Instant::from_millis(9)));
        // 2 ms late: the next one is still due at 20, not 22.
        assert!(p.poll(Instant::from_millis(12)));
        assert_eq!(p.next_at(), Some(Instant::from_millis(20)));
        // A long stall fires once, then re-anchors.
        assert!(p.poll(Instant::from_millis(100)));
        assert!(!p.poll(Instant::from_millis(100)));
        assert_eq!(p.next_at(), Some(Instant::from_millis(110)));
    }

    #[test]
    fn instants_saturate() {
        let t = Instant::from_millis(u64::MAX - 1) + Duration::from_secs(10);
        assert_eq!(t.as_millis(), u64::MAX);
        assert_eq!(Instant::ZERO - Instant::from_millis(5), Duration::ZERO);
        assert_eq!(earliest(None, Some(Instant::ZERO)), Some(Instant::ZERO));
    }
}
