//! The hub between the bridge loop and everything that watches or commands it (web, MQTT, the terminal).
//!
//! The bridge loop owns the `Bridge` and is the only writer; it publishes a [`Snapshot`] on a watch channel
//! (latest state wins: a slow reader never holds the loop back), every new event occurrence on a broadcast channel
//! (bounded: a reader that falls behind loses the oldest, and is told so), and takes [`Request`]s from a bounded
//! queue, answering each on its own oneshot. Nothing a consumer does can block the bridge.

use std::sync::Arc;

use dbe_core::events::Occurrence;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::status::{CellsStatus, EventStatus, Status};

/// Everything a reader may want, taken at one instant.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub status: Status,
    pub cells: CellsStatus,
    pub events: Vec<EventStatus>,
}

impl Snapshot {
    pub fn of(bridge: &dbe_core::bridge::Bridge, now: dbe_core::Instant) -> Snapshot {
        Snapshot { status: Status::of(bridge, now), cells: CellsStatus::of(bridge), events: EventStatus::all(bridge) }
    }
}

/// One new event occurrence, in the shape Battery-Emulator publishes on MQTT.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EventMessage {
    pub event_type: &'static str,
    pub severity: &'static str,
    pub count: u32,
    pub data: i32,
    pub message: &'static str,
    pub millis: u64,
}

impl From<Occurrence> for EventMessage {
    fn from(o: Occurrence) -> Self {
        EventMessage {
            event_type: o.kind.name(),
            severity: o.kind.level().name(),
            count: o.count,
            data: o.data,
            message: o.kind.message(),
            millis: o.at.as_millis(),
        }
    }
}

pub use crate::request::{Request, RequestError};

/// A request with where it came from and where to send the answer.
#[derive(Debug)]
pub struct Envelope {
    pub request: Request,
    /// `web`, `mqtt`, `cli`: logged with the outcome.
    pub source: &'static str,
    /// The bridge's answer: done, or refused with the core's reason.
    pub reply: oneshot::Sender<Result<(), dbe_core::command::CommandError>>,
}

/// The ends the bridge loop holds.
pub struct LoopEnd {
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub events: broadcast::Sender<EventMessage>,
    pub requests: mpsc::Receiver<Envelope>,
}

/// The ends every consumer clones.
#[derive(Clone)]
pub struct Handle {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub events: broadcast::Sender<EventMessage>,
    requests: mpsc::Sender<Envelope>,
}

/// Requests waiting for the bridge loop; more are refused rather than queued without bound.
const REQUEST_QUEUE: usize = 32;
const EVENT_QUEUE: usize = 256;

pub fn hub() -> (LoopEnd, Handle) {
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (ev_tx, _) = broadcast::channel(EVENT_QUEUE);
    let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE);
    (
        LoopEnd { snapshot: snap_tx, events: ev_tx.clone(), requests: req_rx },
        Handle { snapshot: snap_rx, events: ev_tx, requests: req_tx },
    )
}

impl Handle {
    /// Sends a request and waits for the bridge loop's answer.
    /// Never waits for room: a full queue is [`RequestError::Busy`] at once.
    pub async fn request(&self, request: Request, source: &'static str) -> Result<(), RequestError> {
        use mpsc::error::TrySendError;
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(Envelope { request, source, reply: tx }).map_err(|e| match e {
            TrySendError::Full(_) => RequestError::Busy,
            TrySendError::Closed(_) => RequestError::Gone,
        })?;
        Ok(rx.await.map_err(|_| RequestError::Gone)??)
    }

    pub fn latest(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::command::{Command, CommandError};

    #[tokio::test]
    async fn a_request_is_answered_refused_busy_or_gone() {
        let (mut end, handle) = hub();
        let asking = tokio::spawn({
            let handle = handle.clone();
            async move { handle.request(Request::Core(Command::Start), "test").await }
        });
        let env = end.requests.recv().await.expect("the request arrives");
        let why = CommandError::ConditionPresent { what: "a latched fault" };
        env.reply.send(Err(why)).unwrap();
        let answer = asking.await.unwrap();
        assert_eq!(answer, Err(RequestError::Refused(why)));
        assert_eq!(answer.unwrap_err().to_string(), "refused: a latched fault", "the core's reason, as it says it");

        // Nobody takes requests: the queue fills, then each one more is busy at once (never waits).
        let waiting: Vec<_> = (0..REQUEST_QUEUE)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.request(Request::Restart, "test").await })
            })
            .collect();
        while end.requests.len() < REQUEST_QUEUE {
            tokio::task::yield_now().await;
        }
        assert_eq!(handle.request(Request::Restart, "test").await, Err(RequestError::Busy));

        // The loop goes away with requests queued: they were not carried out, and the next cannot be sent.
        drop(end);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Err(RequestError::Gone));
        }
        assert_eq!(handle.request(Request::Restart, "test").await, Err(RequestError::Gone));
    }
}
