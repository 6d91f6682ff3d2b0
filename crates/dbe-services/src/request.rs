//! What a command source (web, MQTT, the terminal) may ask of the bridge loop. Apart from the hub so the parsers
//! that produce requests build without the async runtime.

use dbe_core::command::{Command, CommandError};

/// What a command source may ask of the bridge loop.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A command for the core (pause, limits, ...).
    Core(Command),
    /// Restart the bridge (new driver state, same config); not the machine.
    Restart,
    /// A condition the shell observed (the recorder failing, a port down), for the core's event log. Only the
    /// daemon's own tasks send this; no outside input maps to it.
    Note { kind: dbe_core::events::EventKind, active: bool, data: i32 },
}

/// Why a request was not carried out. In every case nothing changed; only a refusal comes from the bridge itself.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The bridge heard the request and refused it, with the core's reason (a value out of range, a condition
    /// still present, a command the pack does not support).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// Too many requests are already waiting for the bridge loop.
    #[error("the bridge is busy (too many requests waiting); try again")]
    Busy,
    /// The bridge loop is not running (stopping, or restarting after a settings change) or stopped before it
    /// answered.
    #[error("the bridge is not running (stopped or restarting): the command was not carried out; try again")]
    Gone,
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Core(c) => c.name(),
            Request::Restart => "RESTART",
            Request::Note { .. } => "NOTE",
        }
    }
}
