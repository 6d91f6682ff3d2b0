//! A whole simulated installation on an in-process bus: a simulated pack (a LEAF unless told otherwise), the DBE
//! bridge, a simulated inverter of the
//! bridge's protocol (CAN or RS485) and a
//! household that asks the inverter for power through the day.
//!
//! The world is event-driven in simulated time: it jumps straight to the earliest deadline of any participant,
//! so a simulated day costs only the frames that day carries. `dbe demo` runs one against a wall clock; the
//! scenario, soak and fault tests run them as fast as the CPU allows.

use dbe_core::bridge::{Bridge, BridgeConfig, Port};
use dbe_core::time::earliest;
use dbe_core::units::{DeciAmps, DeciVolts, Watts};
use dbe_core::{CanFrame, Duration, Instant};

use crate::leaf::{LeafPack, LeafPackParams};
use crate::pack::{RelayWiring, SimPack};
use crate::sim_inverter::SimInverter;

/// How often the physical coupling (inverter current into the pack, household demand) is refreshed.
pub const PHYSICS_STEP: Duration = Duration::from_millis(100);

/// The bus's time constant through the precharge resistor: a 47 Ω resistor into about 6 mF of inverter input
/// capacitance (an assumption for simulation, of the order of hybrid inverters' DC links), so a 360 V pack's bus
/// is within 20 V after about 0.8 s.
pub const PRECHARGE_TAU_S: f64 = 0.28;
/// How fast the bus bleeds down through the inverter's discharge resistors once disconnected (an assumption).
pub const BLEED_TAU_S: f64 = 5.0;

/// What the household asks of the inverter over a day: charge from solar around noon, discharge in the evening
/// and at night. `+` charges the battery.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Demand {
    /// The same demand all the time.
    Constant(Watts),
    /// A typical day with solar, scaled by `peak`.
    Daily { peak: Watts },
}

impl Demand {
    pub fn at(&self, now: Instant) -> Watts {
        match *self {
            Demand::Constant(w) => w,
            Demand::Daily { peak } => {
                let hour = (now.as_millis() / 3_600_000) % 24;
                let share: i32 = match hour {
                    0..=5 => -25,
                    6..=8 => -40,
                    9..=15 => 100,
                    16..=17 => 20,
                    18..=21 => -80,
                    _ => -40,
                };
                Watts(peak.0 / 100 * share)
            }
        }
    }
}

/// Wires cut by a test: a cut side neither sends nor receives.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    pub battery: bool,
    pub inverter: bool,
}

/// Frame counts, for tests and the demo's status line.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub pack_to_bridge: u64,
    pub bridge_to_pack: u64,
    pub inverter_to_bridge: u64,
    pub bridge_to_inverter: u64,
}

/// A world around any pack, chosen at run time (`dbe demo --battery NAME`).
pub type AnyWorld = World<Box<dyn SimPack>>;

pub struct World<P: SimPack = LeafPack> {
    now: Instant,
    pub bridge: Bridge,
    pub pack: P,
    pub inverter: SimInverter,
    pub demand: Demand,
    pub cuts: Cuts,
    /// A current the inverter pushes into the pack whatever it was told (+ charges): an inverter that ignores
    /// the limits. `None`: the simulated inverter's own, limit-respecting current.
    pub forced_current: Option<DeciAmps>,
    /// The precharge path is broken (a blown resistor, a precharge relay that does not close): the bus stays
    /// down while the sequence precharges.
    pub precharge_broken: bool,
    /// The inverter's DC bus (its input capacitors), in volts.
    bus_v: f64,
    traffic: Traffic,
    next_physics_at: Instant,
    /// In `none` mode the pack's manual switches have been closed once (a user who switched them on).
    manual_set: bool,
    /// The BMS power output is off (a BMS power cycle): the pack was made silent by that, not by a test.
    bms_unpowered: bool,
    /// Scratch for serial bytes, kept here: zeroing 8 KiB on the stack for every exchange was an eighth of a
    /// simulated week's time.
    serial_buf: Box<[u8; 8192]>,
    /// Every frame the bridge sent to the inverter, for tests that look at the wire (cleared by the caller).
    pub inverter_wire: Option<Vec<(Instant, CanFrame)>>,
    /// Every frame on either bus, for the demo's CAN view; the caller drains it, and the oldest are dropped beyond
    /// [`TAP_LIMIT`].
    pub tap: Option<std::collections::VecDeque<Tapped>>,
}

/// One frame on a simulated bus, as the demo's CAN view shows it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tapped {
    /// `battery` or `inverter`.
    pub bus: &'static str,
    /// The bridge sent it (otherwise the pack or the inverter did, and the bridge received it).
    pub sent_by_bridge: bool,
    pub frame: CanFrame,
}

/// The most frames [`World::tap`] holds.
pub const TAP_LIMIT: usize = 8192;

fn tap(t: &mut Option<std::collections::VecDeque<Tapped>>, bus: &'static str, sent_by_bridge: bool, f: &CanFrame) {
    if let Some(t) = t {
        if t.len() >= TAP_LIMIT {
            t.pop_front();
        }
        t.push_back(Tapped { bus, sent_by_bridge, frame: *f });
    }
}

impl World<LeafPack> {
    pub fn new(cfg: BridgeConfig, pack: LeafPackParams, start: Instant) -> Self {
        World::with_pack(cfg, LeafPack::new(pack, start), start)
    }

    /// A LEAF world with default pack parameters, talking to a simulator of the bridge's inverter protocol.
    pub fn leaf(cfg: BridgeConfig) -> Self {
        World::new(cfg, LeafPackParams::default(), Instant::ZERO)
    }
}

impl<P: SimPack> World<P> {
    /// A world around `pack`, built to start at `start`.
    pub fn with_pack(cfg: BridgeConfig, pack: P, start: Instant) -> Self {
        World {
            now: start,
            bridge: Bridge::new(cfg),
            pack,
            inverter: SimInverter::for_config(&cfg.inverter, start),
            demand: Demand::Constant(Watts(0)),
            cuts: Cuts::default(),
            forced_current: None,
            precharge_broken: false,
            bus_v: 0.0,
            traffic: Traffic::default(),
            next_physics_at: start,
            manual_set: false,
            bms_unpowered: false,
            serial_buf: Box::new([0; 8192]),
            inverter_wire: None,
            tap: None,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Runs until `until`, processing every deadline on the way.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            self.exchange();
            let next = self.next_deadline();
            match next {
                Some(t) if t <= until => self.now = t.max(self.now),
                _ => {
                    self.now = until.max(self.now);
                    self.exchange();
                    return;
                }
            }
        }
    }

    pub fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    /// Runs until `cond` holds or `limit` of simulated time passes; true if it held. The condition is checked
    /// after every deadline, so the returned time is the first moment it held (to within one step).
    pub fn run_until_cond(&mut self, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.exchange();
            if cond(self) {
                return true;
            }
            match self.next_deadline() {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => {
                    self.now = end;
                    self.exchange();
                    return cond(self);
                }
            }
        }
    }

    /// The earliest deadline of any participant. Everything due at `now` has just been exchanged, so a deadline
    /// at or before `now` would be a participant forgetting to move its own on: it is debug-asserted against (the
    /// tests catch such a bug) and stepped over by a millisecond in release so a world never stalls.
    fn next_deadline(&self) -> Option<Instant> {
        let a = earliest(self.bridge.poll_timeout(), self.pack.poll_timeout());
        let b = earliest(self.inverter.poll_timeout(), Some(self.next_physics_at));
        let next = earliest(a, b)?;
        debug_assert!(
            next > self.now,
            "stale deadline {next:?} at {:?}: bridge {:?} pack {:?} inverter {:?}",
            self.now,
            self.bridge.poll_timeout(),
            self.pack.poll_timeout(),
            self.inverter.poll_timeout()
        );
        Some(next.max(self.now + Duration::from_millis(1)))
    }

    /// Moves every frame that is due at `now` until nobody has anything more to say.
    /// The inverter's terminals over one physics step: the pack's voltage with the contactors closed; charging
    /// towards it through the precharge resistor while the negative and the precharge relay are closed
    /// ([`PRECHARGE_TAU_S`]); bleeding down otherwise ([`BLEED_TAU_S`]).
    /// The inverter's DC bus voltage now (V).
    pub fn bus_voltage(&self) -> f64 {
        self.bus_v
    }

    fn step_bus(&mut self) -> f64 {
        let pack_v = self.pack.model().pack_mv().max(0) as f64 / 1000.0;
        let dt = PHYSICS_STEP.as_millis() as f64 / 1000.0;
        let precharging = !self.precharge_broken
            && self.bridge.relay_outputs().is_some_and(|o| o.negative && o.precharge && self.pack.relay_reads(true));
        self.bus_v = if self.pack.contactors_closed() {
            pack_v
        } else if precharging {
            pack_v + (self.bus_v - pack_v) * (-dt / PRECHARGE_TAU_S).exp()
        } else {
            self.bus_v * (-dt / BLEED_TAU_S).exp()
        };
        self.bus_v
    }

    fn exchange(&mut self) {
        let now = self.now;
        if now >= self.next_physics_at {
            self.inverter.set_demand(now, self.demand.at(now));
            let current = match self.forced_current {
                _ if self.cuts.inverter => DeciAmps(0),
                Some(forced) => forced,
                None => self.inverter.current(),
            };
            self.pack.set_current(now, current);
            let bus = DeciVolts((self.step_bus() * 10.0).round().clamp(0.0, u16::MAX as f64) as u16);
            self.inverter.set_bus(bus, current);
            self.next_physics_at = now + PHYSICS_STEP;
        }
        if self.bridge.poll_timeout().is_some_and(|t| t <= now) {
            self.bridge.handle_timeout(now);
        }
        if self.inverter.poll_timeout().is_some_and(|t| t <= now) {
            self.inverter.handle_timeout(now);
        }
        let buf = &mut self.serial_buf;
        loop {
            let mut moved = false;
            while let Some(f) = self.pack.poll_transmit(now) {
                moved = true;
                if !self.cuts.battery {
                    tap(&mut self.tap, "battery", false, &f);
                    self.traffic.pack_to_bridge += 1;
                    let _ = self.bridge.handle_frame(now, Port::Battery, &f);
                }
            }
            while let Some(f) = self.inverter.poll_frame(now) {
                moved = true;
                if !self.cuts.inverter {
                    tap(&mut self.tap, "inverter", false, &f);
                    self.traffic.inverter_to_bridge += 1;
                    let _ = self.bridge.handle_frame(now, Port::Inverter, &f);
                }
            }
            // A serial request arrives whole here, so the line is quiet right after it.
            let n = self.inverter.poll_bytes(now, &mut buf[..]);
            if n > 0 {
                moved = true;
                if !self.cuts.inverter {
                    self.traffic.inverter_to_bridge += 1;
                    self.bridge.handle_inverter_bytes(now, &buf[..n]);
                    self.bridge.handle_inverter_silence(now);
                }
            }
            if let Ok(n) = self.bridge.poll_inverter_bytes(now, &mut buf[..]) {
                if n > 0 {
                    moved = true;
                    if !self.cuts.inverter {
                        self.traffic.bridge_to_inverter += 1;
                        self.inverter.handle_bytes(now, &buf[..n]);
                    }
                }
            }
            while let Some((port, f)) = self.bridge.poll_transmit(now) {
                moved = true;
                match port {
                    Port::Battery if !self.cuts.battery => {
                        tap(&mut self.tap, "battery", true, &f);
                        self.traffic.bridge_to_pack += 1;
                        self.pack.handle_frame(now, &f);
                    }
                    Port::Inverter if !self.cuts.inverter => {
                        tap(&mut self.tap, "inverter", true, &f);
                        self.traffic.bridge_to_inverter += 1;
                        if let Some(w) = self.inverter_wire.as_mut() {
                            w.push((now, f));
                        }
                        self.inverter.handle_frame(now, &f);
                    }
                    _ => {}
                }
            }
            // The relay outputs are wires, not frames: the pack's relays follow them at once, and read back.
            drive_relays(now, &mut self.bridge, &mut self.pack, &mut self.manual_set);
            // A BMS fed from DBE's BMS power output is dead while it is off: it sends and hears nothing.
            let powered = self.bridge.relay_outputs().is_none_or(|o| o.bms_power);
            if powered == self.bms_unpowered {
                self.bms_unpowered = !powered;
                self.pack.model_mut().wire.silent = !powered;
            }
            if !moved {
                break;
            }
        }
    }
}

/// Wires the bridge's relay outputs to the simulated pack's relays, and their state back (what a relay
/// board that reads back reports; the bridge ignores outputs it was not told can be read back). Without
/// relay outputs (`none` mode) a hardwired pack has manual switches, closed; a CAN-controlled pack closes its
/// own contactors (its wire mapping decides from what it hears) and has nothing to switch.
fn drive_relays<P: SimPack>(now: Instant, bridge: &mut Bridge, pack: &mut P, manual_set: &mut bool) {
    use dbe_core::contactor::Output;
    match bridge.relay_outputs() {
        Some(o) => {
            pack.drive_relays(now, o.negative, o.positive);
            for (output, driven) in
                [(Output::Negative, o.negative), (Output::Positive, o.positive), (Output::Precharge, o.precharge)]
            {
                bridge.handle_relay_feedback(now, output, pack.relay_reads(driven));
            }
        }
        None => {
            if pack.relay_wiring() == RelayWiring::Hardwired && !pack.contactors_closed() && !*manual_set {
                pack.set_manual_relays(now, Some(true));
                *manual_set = true;
            }
        }
    }
}
