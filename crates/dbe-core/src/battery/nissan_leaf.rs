//! Nissan LEAF (placeholder: being written).

use crate::battery::{Battery, ContactorRequest, Unsupported};
use crate::can::{CanFrame, DecodeError, FrameUse};
use crate::model::{BatteryModel, Chemistry, PackDesign};
use crate::time::Instant;
use crate::units::{DeciVolts, MilliVolts};

pub const SUPPORTS: &str = "placeholder";

/// Design facts of the LEAF pack.
pub const DESIGN: PackDesign = PackDesign {
    chemistry: Chemistry::Nmc,
    cells: 96,
    max_pack_voltage: DeciVolts(4040),
    min_pack_voltage: DeciVolts(2600),
    max_cell_voltage: MilliVolts(4250),
    min_cell_voltage: MilliVolts(2700),
    max_cell_deviation: MilliVolts(500),
};

#[derive(Clone, Debug, Default)]
pub struct NissanLeaf {}

impl NissanLeaf {
    pub fn new() -> Self {
        NissanLeaf {}
    }
}

impl Battery for NissanLeaf {
    fn design(&self) -> PackDesign {
        DESIGN
    }
    fn handle_frame(
        &mut self,
        _now: Instant,
        _frame: &CanFrame,
        _model: &mut BatteryModel,
    ) -> Result<FrameUse, DecodeError> {
        Ok(FrameUse::Ignored)
    }
    fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn set_contactors(&mut self, _now: Instant, _request: ContactorRequest) {}
    fn bms_reset(&mut self, _now: Instant) -> Result<(), Unsupported> {
        Err(Unsupported { battery: "Nissan LEAF", what: "BMS reset" })
    }
}
