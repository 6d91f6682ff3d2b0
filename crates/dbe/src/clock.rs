//! The daemon's one monotonic clock: milliseconds since start, the `now` every core call gets.

use std::time::Instant as StdInstant;

#[derive(Copy, Clone, Debug)]
pub struct Clock {
    start: StdInstant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { start: StdInstant::now() }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Microseconds since start, for recording timestamps finer than the core's milliseconds.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The Unix time in µs of this clock's zero, as the wall clock says now: `unix_origin_us() + now_us()` is a
    /// wall-clock time that never goes backwards between two calls of this function.
    pub fn unix_origin_us(&self) -> u64 {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        unix.saturating_sub(self.now_us())
    }

    pub fn now(&self) -> dbe_core::Instant {
        dbe_core::Instant::from_millis(self.now_ms())
    }

    /// The wall-clock instant of a core instant, for sleeping until a deadline.
    pub fn deadline(&self, at: dbe_core::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + std::time::Duration::from_millis(at.as_millis()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Sleeps until `at`, or for ever when there is no deadline: for `select!` arms over an optional deadline.
pub async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
