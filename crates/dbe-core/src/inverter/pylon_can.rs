//! Pylontech high-voltage CAN (placeholder: being written).

use crate::can::{CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterView};
use crate::time::{Duration, Instant};

pub const SUPPORTS: &str = "placeholder";
/// How long the inverter may stay silent before the link counts as lost.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// Options real inverters need (placeholder).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PylonCanOptions {}

#[derive(Clone, Debug)]
pub struct PylonCan {
    #[allow(dead_code)]
    options: PylonCanOptions,
    last_heard: Option<Instant>,
}

impl PylonCan {
    pub fn new(options: PylonCanOptions) -> Self {
        PylonCan { options, last_heard: None }
    }
}

impl CanInverter for PylonCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.extended_id() == Some(0x4200) {
            self.last_heard = Some(now);
            return Ok(FrameUse::Used);
        }
        Ok(FrameUse::Ignored)
    }
    fn poll_transmit(&mut self, _now: Instant, _view: &InverterView<'_>) -> Option<CanFrame> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }
}
