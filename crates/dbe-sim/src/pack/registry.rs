//! The only place a simulated pack is added: its name (the battery driver's, as `dbe_core::battery::BATTERIES`
//! spells it) and how to build one.

use dbe_core::battery::BatteryKind;
use dbe_core::Instant;

use super::{RelayWiring, SimPack};

/// One simulated pack family.
pub struct PackEntry {
    /// The battery driver's name (`nissan-leaf`).
    pub name: &'static str,
    /// Cells in series (what `cell N` faults count to).
    pub cells: usize,
    /// How its contactors close (what a demo wires up for it).
    pub relays: RelayWiring,
    /// A pack with the family's default parameters, powered from `now`.
    pub new: fn(Instant) -> Box<dyn SimPack>,
}

impl core::fmt::Debug for PackEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("PackEntry");
        d.field("name", &self.name).field("cells", &self.cells).field("relays", &self.relays).finish()
    }
}

/// One line per pack family.
pub const PACKS: &[PackEntry] = &[
    PackEntry {
        name: "nissan-leaf",
        cells: crate::leaf::CELLS,
        relays: RelayWiring::Hardwired,
        new: |now| Box::new(crate::leaf::LeafPack::new(Default::default(), now)),
    },
    PackEntry {
        name: "tesla-model3",
        cells: crate::tesla::CELLS_NCA,
        relays: RelayWiring::Can,
        new: |now| Box::new(crate::tesla::TeslaPack::model3_long_range(now)),
    },
];

/// A name no simulated pack answers to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no simulated pack '{name}', expected one of: {}", known())]
pub struct UnknownPack {
    pub name: String,
}

fn known() -> String {
    PACKS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

impl PackEntry {
    pub fn by_name(name: &str) -> Result<&'static PackEntry, UnknownPack> {
        PACKS.iter().find(|p| p.name == name).ok_or_else(|| UnknownPack { name: name.to_string() })
    }

    pub fn build(&self, now: Instant) -> Box<dyn SimPack> {
        (self.new)(now)
    }
}

/// The simulated pack of a battery driver.
pub fn for_battery(kind: BatteryKind) -> Result<&'static PackEntry, UnknownPack> {
    PackEntry::by_name(kind.info().name)
}
