//! A pack's main contactors as the hardware closes them.
//!
//! Packs come in two kinds (Battery-Emulator's wiki, "Contactor Control via GPIO pins" and each pack's page):
//! - **hardwired** (Nissan LEAF): the car's VCM drives the relay coils with 12 V lines; the BMS has no say on
//!   the wire. The relays follow the outputs driven into them, or a manual switch in their place.
//! - **CAN-controlled** (Tesla Model 3/Y and most later packs): the BMS closes its own contactors, and only while
//!   it hears what it expects from the vehicle. The wire mapping decides that and says so with
//!   [`Relays::set_can_request`]; there are no coil wires to drive or switch by hand.
//!
//! On top of either, a test can make a relay stuck (welded closed, or failing to close).

/// How the contactors are closed (see the module doc).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RelayWiring {
    Hardwired,
    Can,
}

/// A relay's behaviour beyond what drives it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum RelayFault {
    /// Follows what drives it.
    #[default]
    None,
    /// Stays where it is put: `true` welded closed, `false` fails to close.
    Stuck(bool),
}

#[derive(Clone, Debug)]
pub struct Relays {
    wiring: RelayWiring,
    closed: bool,
    /// What the outputs (hardwired) or the BMS (CAN) last asked for.
    driven: bool,
    /// Manual switches in place of driven relays (hardwired packs only): their position.
    manual: Option<bool>,
    fault: RelayFault,
}

impl Relays {
    pub fn new(wiring: RelayWiring) -> Self {
        Relays { wiring, closed: false, driven: false, manual: None, fault: RelayFault::None }
    }

    pub fn wiring(&self) -> RelayWiring {
        self.wiring
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    pub fn fault(&self) -> RelayFault {
        self.fault
    }

    /// A stuck relay does not move from here on; the next drive shows it (it is read at the next change, as a
    /// coil that is energised or not).
    pub fn set_fault(&mut self, fault: RelayFault) {
        self.fault = fault;
    }

    /// What a relay driven to `driven` reads back (a stuck one reads where it is stuck).
    pub fn reads(&self, driven: bool) -> bool {
        match self.fault {
            RelayFault::Stuck(at) => at,
            RelayFault::None => self.manual.unwrap_or(driven),
        }
    }

    /// The relay outputs' drive (hardwired packs): both `negative` and `positive` energised close the circuit,
    /// the precharge relay alone carries no load. Returns the new position if it changed. On a CAN-controlled
    /// pack there are no coil wires: nothing happens.
    pub fn drive(&mut self, negative: bool, positive: bool) -> Option<bool> {
        match self.wiring {
            RelayWiring::Hardwired => self.set_driven(negative && positive),
            RelayWiring::Can => None,
        }
    }

    /// Manual switches instead of driven relays (`None`: back to driven relays, open until driven). Hardwired
    /// packs only; on a CAN-controlled pack nothing happens.
    pub fn set_manual(&mut self, closed: Option<bool>) -> Option<bool> {
        match self.wiring {
            RelayWiring::Hardwired => {
                self.manual = closed;
                self.set_driven(closed.unwrap_or(false))
            }
            RelayWiring::Can => None,
        }
    }

    /// The BMS's own decision (CAN-controlled packs): close or open. On a hardwired pack nothing happens.
    pub fn set_can_request(&mut self, closed: bool) -> Option<bool> {
        match self.wiring {
            RelayWiring::Can => self.set_driven(closed),
            RelayWiring::Hardwired => None,
        }
    }

    fn set_driven(&mut self, driven: bool) -> Option<bool> {
        self.driven = driven;
        let closed = self.reads(driven);
        (closed != self.closed).then(|| {
            self.closed = closed;
            closed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardwired_relays_follow_both_outputs_and_ignore_can() {
        let mut r = Relays::new(RelayWiring::Hardwired);
        assert_eq!(r.drive(true, false), None, "negative alone carries no load");
        assert_eq!(r.drive(true, true), Some(true));
        assert_eq!(r.set_can_request(false), None);
        assert!(r.closed());
        assert_eq!(r.drive(false, true), Some(false));
    }

    #[test]
    fn can_relays_follow_the_bms_and_ignore_wires_and_switches() {
        let mut r = Relays::new(RelayWiring::Can);
        assert_eq!(r.drive(true, true), None);
        assert_eq!(r.set_manual(Some(true)), None);
        assert!(!r.closed());
        assert_eq!(r.set_can_request(true), Some(true));
        assert_eq!(r.set_can_request(false), Some(false));
    }

    #[test]
    fn a_stuck_relay_stays_and_reads_where_it_is_stuck() {
        let mut r = Relays::new(RelayWiring::Hardwired);
        r.drive(true, true);
        r.set_fault(RelayFault::Stuck(true));
        assert_eq!(r.drive(false, false), None, "welded closed");
        assert!(r.closed() && r.reads(false));
        r.set_fault(RelayFault::None);
        assert_eq!(r.drive(false, false), Some(false));
        r.set_fault(RelayFault::Stuck(false));
        assert_eq!(r.drive(true, true), None, "fails to close");
        assert!(!r.reads(true));
    }

    #[test]
    fn manual_switches_replace_the_drive_until_withdrawn() {
        let mut r = Relays::new(RelayWiring::Hardwired);
        assert_eq!(r.set_manual(Some(true)), Some(true));
        assert_eq!(r.drive(false, false), None, "the switch holds it");
        assert_eq!(r.set_manual(None), Some(false), "back to driven relays, open until driven");
    }
}
