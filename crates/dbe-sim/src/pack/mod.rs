//! Simulated packs: one shared physical model and one wire mapping per pack family.
//!
//! - [`PackModel`] ([`physics`]) is what every pack has: cells on a chemistry's OCV curve ([`ocv`]), internal
//!   resistance, spread and drift, temperature, the limits its BMS would allow, contactors ([`relays`]) and the
//!   faults a test puts on it ([`faults`]).
//! - A wire mapping (`crate::leaf` for the Nissan LEAF) owns a `PackModel` and speaks the pack's protocol from
//!   it: which frames it broadcasts and when, what it answers, what it needs from the car to stay awake and, for
//!   a CAN-controlled pack, when its BMS closes the contactors ([`PackModel::set_can_request`]). It implements
//!   [`SimPack`].
//! - [`registry`] lists the mappings by the battery driver's name (`nissan-leaf`): `dbe simulate --pack NAME`,
//!   `dbe demo --battery NAME` and a `sim:` battery port build packs from it.
//!
//! Adding a pack: its mapping file (a struct holding a `PackModel` with its family's [`PhysicsParams`], its frame
//! encoders written from the protocol sources, its byte tests) and one line in [`registry::PACKS`]. The tests in
//! this module then run the shared fault checks on it.

pub mod faults;
pub mod ocv;
pub mod physics;
pub mod registry;
pub mod relays;

pub use faults::{Fault, WireFaults};
pub use ocv::OcvCurve;
pub use physics::{BmsLimits, LimitParams, PackModel, PhysicsParams};
pub use registry::{for_battery, PackEntry, UnknownPack, PACKS};
pub use relays::{RelayFault, RelayWiring};

use dbe_core::units::DeciAmps;
use dbe_core::{CanFrame, Instant};

/// What a wire mapping provides, on top of its [`PackModel`]. Sans-IO, like the core's drivers: frames in with
/// `handle_frame(now, ..)`, frames out from `poll_transmit(now)` until `None`, then nothing is due before
/// `poll_timeout()`.
///
/// A mapping honours the model's wire faults itself: while `model().wire.silent` it hears nothing, sends nothing
/// and moves its schedule on (no backlog when it speaks again); with `wire.corrupt` its checksummed frames carry
/// wrong checksums; [`SimPack::set_frozen`] freezes its broadcasts. The shared tests below hold every registered
/// mapping to that.
pub trait SimPack: Send {
    /// The battery driver's name for this pack (`nissan-leaf`), as the registry lists it.
    fn name(&self) -> &'static str;

    fn model(&self) -> &PackModel;

    fn model_mut(&mut self) -> &mut PackModel;

    fn handle_frame(&mut self, now: Instant, frame: &CanFrame);

    #[must_use]
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame>;

    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// Freezes the broadcasts at their present bytes (polls go unanswered), or lets them live again.
    fn set_frozen(&mut self, on: bool);

    /// Whether what the pack needs from the car to stay awake arrives (a LEAF's 0x1D4 keep-alive).
    fn keepalive_ok(&self) -> bool;

    /// Whether any frame the pack sends carries a checksum for [`WireFaults::corrupt`] to spoil. A pack whose
    /// sources give its frames none (a Tesla's BMS) says `false`, and the fault changes nothing on its wire.
    fn checksummed(&self) -> bool {
        true
    }

    // ---- the model, for callers that hold any pack ----

    /// The current flowing from now on (+ = charging), from the inverter through closed contactors.
    fn set_current(&mut self, now: Instant, current: DeciAmps) {
        self.model_mut().set_current(now, current);
    }

    fn contactors_closed(&self) -> bool {
        self.model().contactors_closed()
    }

    /// The relay outputs' drive (hardwired packs; a CAN-controlled pack has no coil wires).
    fn drive_relays(&mut self, now: Instant, negative: bool, positive: bool) {
        self.model_mut().drive_relays(now, negative, positive);
    }

    /// Manual switches in place of driven relays (hardwired packs only).
    fn set_manual_relays(&mut self, now: Instant, closed: Option<bool>) {
        self.model_mut().set_manual_relays(now, closed);
    }

    fn relay_reads(&self, driven: bool) -> bool {
        self.model().relay_reads(driven)
    }

    fn relay_wiring(&self) -> RelayWiring {
        self.model().relays().wiring()
    }

    fn soc_bp(&self) -> u16 {
        self.model().soc_bp()
    }

    fn apply(&mut self, fault: Fault) {
        fault.apply(self);
    }
}

/// Any pack, boxed: every method forwards (a mapping's own version of a provided method included).
impl<P: SimPack + ?Sized> SimPack for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn model(&self) -> &PackModel {
        (**self).model()
    }
    fn model_mut(&mut self) -> &mut PackModel {
        (**self).model_mut()
    }
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) {
        (**self).handle_frame(now, frame)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        (**self).poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn set_frozen(&mut self, on: bool) {
        (**self).set_frozen(on)
    }
    fn keepalive_ok(&self) -> bool {
        (**self).keepalive_ok()
    }
    fn checksummed(&self) -> bool {
        (**self).checksummed()
    }
    fn set_current(&mut self, now: Instant, current: DeciAmps) {
        (**self).set_current(now, current)
    }
    fn contactors_closed(&self) -> bool {
        (**self).contactors_closed()
    }
    fn drive_relays(&mut self, now: Instant, negative: bool, positive: bool) {
        (**self).drive_relays(now, negative, positive)
    }
    fn set_manual_relays(&mut self, now: Instant, closed: Option<bool>) {
        (**self).set_manual_relays(now, closed)
    }
    fn relay_reads(&self, driven: bool) -> bool {
        (**self).relay_reads(driven)
    }
    fn relay_wiring(&self) -> RelayWiring {
        (**self).relay_wiring()
    }
    fn soc_bp(&self) -> u16 {
        (**self).soc_bp()
    }
    fn apply(&mut self, fault: Fault) {
        (**self).apply(fault)
    }
}

#[cfg(test)]
mod tests;
