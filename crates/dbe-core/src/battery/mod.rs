//! Battery drivers: one per pack family, each in its own file, all behind one trait, all listed in one registry.
//!
//! A driver decodes the pack's frames into the shared [`BatteryModel`] and produces the frames the pack needs
//! from "the car" to stay awake and keep its contactors closed. It never talks to an inverter protocol: the
//! bridge passes the model through the supervisor to the inverter side.

pub mod nissan_leaf;
pub mod tesla;

use crate::can::{CanFrame, DecodeError, FrameUse};
use crate::contactor::{check_mode, ContactorMode, UnsupportedMode};
use crate::model::{BatteryModel, ExtraDescriptor, PackDesign, Requirement};
use crate::options::Options;
use crate::time::Instant;

/// Whether the pack's contactors may be closed. The supervisor decides; the driver turns it into whatever the
/// pack understands (for most packs: send, or stop sending, the car's "ready" messages).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ContactorRequest {
    Open,
    Closed,
}

/// A BMS command that the pack family does not support.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{battery} does not support {what}")]
pub struct Unsupported {
    pub battery: &'static str,
    pub what: &'static str,
}

/// The contract every battery driver keeps.
///
/// Calls are cheap and never block; the caller drives time. After any input, callers drain `poll_transmit`
/// until it returns `None`, then sleep until `poll_timeout`.
pub trait Battery {
    /// The pack's fixed design facts (chemistry, cell count, voltage bounds).
    fn design(&self) -> PackDesign;

    /// The readings this pack must supply fresh before any current flows, with their maximum ages (from the
    /// sources' periods). May change at run time (a LEAF's temperature source depends on its generation).
    fn requirements(&self) -> &'static [Requirement];

    /// The pack-specific values this driver reports (its descriptor table, see [`crate::extras`]): one table per
    /// driver, fixed for its lifetime, so the model's slots and telemetry's list never change under a running
    /// driver. Informational only: nothing with safety meaning goes there.
    fn extras(&self) -> &'static [ExtraDescriptor];

    /// Decodes one frame from the pack into `model`. Frames that are not the pack's are `Ok(Ignored)`; frames that
    /// are but do not check out (length, checksum, counter) are an error and leave `model` unchanged.
    fn handle_frame(
        &mut self,
        now: Instant,
        frame: &CanFrame,
        model: &mut BatteryModel,
    ) -> Result<FrameUse, DecodeError>;

    /// The next frame to send to the pack at `now`, if any is due.
    #[must_use]
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame>;

    /// When `poll_transmit` next has something to send.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// Whether the pack's contactors may be closed from now on.
    fn set_contactors(&mut self, now: Instant, request: ContactorRequest);

    /// Asks the BMS to reset (power-cycle or clear its faults), where the pack family supports it.
    fn bms_reset(&mut self, now: Instant) -> Result<(), Unsupported>;

    /// The ways this pack's contactors can be controlled (`[contactors] mode`). No default: each driver must say
    /// whether its pack closes its contactors on CAN or only on hardwired signals.
    fn contactor_modes(&self) -> &'static [ContactorMode];
}

/// The registry: one line per battery driver (variant, driver type, options type, config name, title, what it
/// supports). It expands into `BatteryKind`, `BATTERIES`, `BatteryConfig` and `AnyBattery` with their dispatch, so
/// adding a pack is its driver file and one line here (`docs/adding-a-battery.md`).
macro_rules! batteries {
    ($($variant:ident => $driver:ty, $options:ty, $name:literal, $title:literal, $supports:expr;)+) => {
        /// The stable identifier of each battery driver (used in configs and on the command line).
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum BatteryKind {
            $($variant,)+
        }

        /// The only place a battery driver is added.
        pub const BATTERIES: &[BatteryInfo] = &[
            $(BatteryInfo { kind: BatteryKind::$variant, name: $name, title: $title, supports: $supports },)+
        ];

        /// A battery driver with its options, as chosen in the config (the battery side's `InverterConfig`).
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        pub enum BatteryConfig {
            $($variant($options),)+
        }

        impl BatteryConfig {
            /// The driver with its default options.
            pub fn default_for(kind: BatteryKind) -> Self {
                match kind {
                    $(BatteryKind::$variant => BatteryConfig::$variant(Default::default()),)+
                }
            }

            pub fn kind(&self) -> BatteryKind {
                match self {
                    $(BatteryConfig::$variant(_) => BatteryKind::$variant,)+
                }
            }

            /// The driver's options with their table of settings (`[battery.<driver>]` in the config file).
            pub fn options(&self) -> &dyn Options {
                match self {
                    $(BatteryConfig::$variant(o) => o,)+
                }
            }

            pub fn options_mut(&mut self) -> &mut dyn Options {
                match self {
                    $(BatteryConfig::$variant(o) => o,)+
                }
            }
        }

        /// Any battery driver, chosen at run time (enum dispatch keeps the core free of the heap).
        #[derive(Clone, Debug)]
        pub enum AnyBattery {
            $($variant($driver),)+
        }

        impl AnyBattery {
            pub fn new(config: BatteryConfig) -> Self {
                match config {
                    $(BatteryConfig::$variant(o) => AnyBattery::$variant(<$driver>::with_options(o)),)+
                }
            }

            pub fn kind(&self) -> BatteryKind {
                match self {
                    $(AnyBattery::$variant(_) => BatteryKind::$variant,)+
                }
            }

            fn inner(&self) -> &dyn Battery {
                match self {
                    $(AnyBattery::$variant(b) => b,)+
                }
            }

            fn inner_mut(&mut self) -> &mut dyn Battery {
                match self {
                    $(AnyBattery::$variant(b) => b,)+
                }
            }
        }
    };
}

batteries! {
    NissanLeaf => nissan_leaf::NissanLeaf, nissan_leaf::NissanLeafOptions, "nissan-leaf",
        "Nissan LEAF 24/30/40/62 kWh (ZE0 2011-13, AZE0 2013-17, ZE1 2018+)", nissan_leaf::SUPPORTS;
    TeslaModel3 => tesla::TeslaModel3, tesla::TeslaModel3Options, "tesla-model3",
        "Tesla Model 3 / Model Y (NCA/NCM 96s, LFP 102-108s)", tesla::SUPPORTS;
}

impl core::fmt::Display for BatteryKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.info().name)
    }
}

/// What `dbe list` and the config layer know about a driver.
#[derive(Copy, Clone, Debug)]
pub struct BatteryInfo {
    pub kind: BatteryKind,
    /// The name used in configs and on the command line, e.g. `nissan-leaf`.
    pub name: &'static str,
    pub title: &'static str,
    /// What the driver decodes and controls, for people.
    pub supports: &'static str,
}

impl BatteryKind {
    pub fn info(self) -> &'static BatteryInfo {
        BATTERIES.iter().find(|b| b.kind == self).expect("every kind is in BATTERIES")
    }

    pub fn from_name(name: &str) -> Option<BatteryKind> {
        BATTERIES.iter().find(|b| b.name == name).map(|b| b.kind)
    }

    /// The contactor modes the driver states for this pack family.
    pub fn contactor_modes(self) -> &'static [ContactorMode] {
        AnyBattery::new(self.into()).contactor_modes()
    }

    /// The config layer's check of `[contactors] mode` against the pack, with an error that names what it supports.
    pub fn check_contactor_mode(self, mode: ContactorMode) -> Result<(), UnsupportedMode> {
        check_mode(self.info().name, self.contactor_modes(), mode)
    }
}

impl From<BatteryKind> for BatteryConfig {
    fn from(kind: BatteryKind) -> Self {
        BatteryConfig::default_for(kind)
    }
}

impl Battery for AnyBattery {
    fn design(&self) -> PackDesign {
        self.inner().design()
    }
    fn requirements(&self) -> &'static [Requirement] {
        self.inner().requirements()
    }
    fn extras(&self) -> &'static [ExtraDescriptor] {
        self.inner().extras()
    }
    fn handle_frame(
        &mut self,
        now: Instant,
        frame: &CanFrame,
        model: &mut BatteryModel,
    ) -> Result<FrameUse, DecodeError> {
        self.inner_mut().handle_frame(now, frame, model)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.inner_mut().poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner().poll_timeout()
    }
    fn set_contactors(&mut self, now: Instant, request: ContactorRequest) {
        self.inner_mut().set_contactors(now, request)
    }
    fn bms_reset(&mut self, now: Instant) -> Result<(), Unsupported> {
        self.inner_mut().bms_reset(now)
    }
    fn contactor_modes(&self) -> &'static [ContactorMode] {
        self.inner().contactor_modes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_each_kind_once_with_unique_names() {
        for (i, a) in BATTERIES.iter().enumerate() {
            assert_eq!(BatteryKind::from_name(a.name), Some(a.kind));
            for b in &BATTERIES[i + 1..] {
                assert_ne!(a.kind, b.kind);
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(AnyBattery::new(BatteryKind::NissanLeaf.into()).kind(), BatteryKind::NissanLeaf);
        assert_eq!(BatteryConfig::default_for(BatteryKind::NissanLeaf).kind(), BatteryKind::NissanLeaf);
    }

    #[test]
    fn every_pack_declares_a_valid_extras_table_and_the_bridge_gives_it_to_the_model() {
        for b in BATTERIES {
            let battery = AnyBattery::new(b.kind.into());
            assert_eq!(crate::extras::check_table(battery.extras()), Ok(()), "{}", b.name);
            let bridge = crate::bridge::Bridge::new(crate::bridge::BridgeConfig {
                battery: b.kind.into(),
                inverter: crate::inverter::InverterConfig::default_for(crate::inverter::InverterKind::PylonCan),
                supervisor: Default::default(),
                contactors: Default::default(),
            });
            assert_eq!(bridge.model().extras.descriptors(), battery.extras(), "{}", b.name);
        }
    }

    #[test]
    fn every_drivers_defaults_pass_its_own_option_table() {
        for b in BATTERIES {
            let config = BatteryConfig::default_for(b.kind);
            assert_eq!(crate::options::check_all(config.options()), Ok(()), "{}", b.name);
            let names: std::vec::Vec<_> = crate::options::infos(config.options()).map(|i| i.name).collect();
            for (i, n) in names.iter().enumerate() {
                assert!(!names[i + 1..].contains(n), "{}: {n} twice", b.name);
            }
        }
    }

    #[test]
    fn every_pack_states_its_contactor_modes_and_the_leaf_cannot_use_can() {
        for b in BATTERIES {
            assert!(!b.kind.contactor_modes().is_empty(), "{} states no contactor mode", b.name);
        }
        let leaf = BatteryKind::NissanLeaf;
        assert_eq!(leaf.contactor_modes(), [ContactorMode::Relays, ContactorMode::None]);
        assert_eq!(leaf.check_contactor_mode(ContactorMode::Relays), Ok(()));
        assert_eq!(leaf.check_contactor_mode(ContactorMode::None), Ok(()));
        let err = leaf.check_contactor_mode(ContactorMode::Can).unwrap_err();
        assert_eq!(
            err.to_string(),
            "contactor mode `can` is not supported by pack `nissan-leaf`; it supports: relays, none"
        );
    }
}
