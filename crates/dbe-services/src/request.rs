//! What a command source (web, MQTT, the terminal) may ask of the bridge loop. Apart from the hub so the parsers
//! that produce requests build without the async runtime.

use dbe_core::command::Command;

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

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Core(c) => c.name(),
            Request::Restart => "RESTART",
            Request::Note { .. } => "NOTE",
        }
    }
}
