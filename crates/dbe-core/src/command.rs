//! Commands from the outside world (web UI, MQTT, command line), as the core understands them.
//!
//! Every command source parses its own input into a [`Command`] and hands it to the bridge; the core checks the
//! values once more, so a command that reaches the core from a new source cannot bypass the ranges.

use crate::battery::Unsupported;
use crate::time::Duration;
use crate::units::{BasisPoints, DeciAmps};

/// Longest temporary limit a remote command may set (a forgotten automation must not pin limits forever).
pub const MAX_TEMPORARY_LIMIT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Hold both current limits at 0 A (contactors stay as they are).
    Pause,
    Resume,
    /// Tell the inverter 0 A, open the contactors and stop bridging until `Start`.
    Stop,
    /// Start bridging again after `Stop`; also clears latched critical faults.
    Start,
    /// Ask the BMS to reset, where the pack supports it.
    BmsReset,
    /// Lower the current limits for `timeout`; `None` in a direction means no remote limit there.
    /// A remote limit can only lower the configured limit, never raise it.
    SetTemporaryLimits {
        charge: Option<DeciAmps>,
        discharge: Option<DeciAmps>,
        timeout: Duration,
    },
    ClearTemporaryLimits,
    /// Change the scaled-SOC window (within the configured bounds).
    SetSocWindow {
        min: BasisPoints,
        max: BasisPoints,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause => "PAUSE",
            Command::Resume => "RESUME",
            Command::Stop => "STOP",
            Command::Start => "START",
            Command::BmsReset => "BMSRESET",
            Command::SetTemporaryLimits { .. } => "SET_LIMITS",
            Command::ClearTemporaryLimits => "CLEAR_LIMITS",
            Command::SetSocWindow { .. } => "SET_SOC_WINDOW",
        }
    }
}

/// Why a command was refused. Nothing changes when a command is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{what} is {value}, expected {min} to {max}")]
    OutOfRange { what: &'static str, value: i64, min: i64, max: i64 },
    #[error("SOC window minimum {min} must be below its maximum {max}")]
    EmptySocWindow { min: BasisPoints, max: BasisPoints },
    #[error("refused: {what}")]
    ConditionPresent { what: &'static str },
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

pub(crate) fn check_range(what: &'static str, value: i64, min: i64, max: i64) -> Result<(), CommandError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(CommandError::OutOfRange { what, value, min, max })
    }
}
