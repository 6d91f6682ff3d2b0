//! The fixed list of events and their log.
//!
//! Same shape as Battery-Emulator's event system (Software/src/devboard/utils/events.{h,cpp}): a fixed
//! enumeration, each with a level, an occurrence count, the time it was first and last raised and a data value
//! (the cell number, the voltage, ... that triggered it). Names follow Battery-Emulator's `EVENT_*` names without
//! the prefix, so users' automations can match them.
//!
//! A *condition* event (cell over-voltage, battery missing) counts one occurrence each time it goes from inactive
//! to active and stays active until cleared; a *one-shot* event (pause begin, contactors closed) counts every time
//! it is raised. Each new occurrence is queued for `poll_event` (the MQTT and web layers drain it); when the queue
//! is full the oldest occurrence is dropped and counted, so a flood of events never blocks the bridge.

use crate::time::Instant;

/// How serious an event is. Ordered: `Info < Warning < Error`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    /// The plain word used in telemetry (`INFO`, `WARNING`, `ERROR`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

macro_rules! events {
    ($($kind:ident => $name:literal, $level:ident, $oneshot:literal, $msg:literal;)*) => {
        /// Every event DBE can raise.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum EventKind { $($kind,)* }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Battery-Emulator style name, e.g. `CAN_BATTERY_MISSING`.
            pub fn name(self) -> &'static str {
                match self { $(EventKind::$kind => $name,)* }
            }
            pub fn level(self) -> Level {
                match self { $(EventKind::$kind => Level::$level,)* }
            }
            /// True for events that count every raise, false for conditions that count transitions.
            pub fn is_one_shot(self) -> bool {
                match self { $(EventKind::$kind => $oneshot,)* }
            }
            /// What happened, for people.
            pub fn message(self) -> &'static str {
                match self { $(EventKind::$kind => $msg,)* }
            }
        }
    };
}

events! {
    BatteryMissing => "CAN_BATTERY_MISSING", Error, false,
        "No valid data from the battery within the stale timeout: charge and discharge stopped.";
    BatteryFrameInvalid => "CAN_BATTERY_FRAME_INVALID", Warning, false,
        "Battery frames are being rejected (wrong length, checksum or counter); cleared by the next valid one.";
    InverterMissing => "CAN_INVERTER_MISSING", Warning, false,
        "The inverter has not polled within its timeout.";
    BatteryOverVoltage => "BATTERY_OVERVOLTAGE", Error, false,
        "Pack voltage above the allowed maximum: charging stopped.";
    BatteryUnderVoltage => "BATTERY_UNDERVOLTAGE", Error, false,
        "Pack voltage below the allowed minimum: discharging stopped.";
    CellOverVoltageWarning => "CELL_OVER_VOLTAGE_WARNING", Warning, false,
        "A cell is close to its maximum voltage: charging derated.";
    CellOverVoltage => "CELL_OVER_VOLTAGE", Error, false,
        "A cell is above its maximum voltage: charging stopped.";
    CellUnderVoltageWarning => "CELL_UNDER_VOLTAGE_WARNING", Warning, false,
        "A cell is close to its minimum voltage: discharging derated.";
    CellUnderVoltage => "CELL_UNDER_VOLTAGE", Error, false,
        "A cell is below its minimum voltage: discharging stopped.";
    CellDeviationHigh => "CELL_DEVIATION_HIGH", Warning, false,
        "The spread between the highest and lowest cell is too large.";
    CellCriticalOverVoltage => "CELL_CRITICAL_OVER_VOLTAGE", Error, false,
        "A cell is far above its maximum voltage: contactors opened.";
    CellCriticalUnderVoltage => "CELL_CRITICAL_UNDER_VOLTAGE", Error, false,
        "A cell is far below its minimum voltage: contactors opened.";
    BatteryOverheat => "BATTERY_OVERHEAT", Error, false,
        "Battery temperature above the allowed maximum: charge and discharge stopped.";
    BatteryTemperatureHighWarning => "BATTERY_TEMPERATURE_HIGH", Warning, false,
        "Battery temperature close to its maximum: power derated.";
    BatteryFrozen => "BATTERY_FROZEN", Error, false,
        "Battery temperature below the allowed minimum for charging: charging stopped.";
    BatteryFault => "BATTERY_FAULT", Error, false,
        "The BMS reports a fault.";
    HvilFailure => "HVIL_FAILURE", Error, false,
        "The high-voltage interlock loop is open.";
    ContactorsClosed => "CONTACTORS_CLOSED", Info, true,
        "The pack reports its contactors closed.";
    ContactorsOpened => "CONTACTORS_OPENED", Info, true,
        "The pack reports its contactors open.";
    SocPlausibilityError => "SOC_PLAUSIBILITY_ERROR", Warning, false,
        "The state of charge reported by the pack is implausible.";
    PauseBegin => "PAUSE_BEGIN", Info, true,
        "Paused: charge and discharge limits held at 0 A.";
    PauseEnd => "PAUSE_END", Info, true,
        "Resumed: limits restored.";
    BridgeStopped => "BRIDGE_STOPPED", Warning, true,
        "The bridge was stopped: contactors opened and the inverter told 0 A.";
    BridgeStarted => "BRIDGE_STARTED", Info, true,
        "The bridge was started.";
    TemporaryLimitsSet => "TEMPORARY_LIMITS_SET", Info, true,
        "Temporary current limits set.";
    TemporaryLimitsExpired => "TEMPORARY_LIMITS_EXPIRED", Info, true,
        "Temporary current limits expired.";
    SocWindowChanged => "SOC_WINDOW_CHANGED", Info, true,
        "The scaled-SOC window was changed.";
    BmsReset => "BMS_RESET", Info, true,
        "A BMS reset was requested.";
    CommandRejected => "COMMAND_REJECTED", Warning, true,
        "A remote command was rejected; nothing was changed.";
    PortDown => "PORT_DOWN", Error, false,
        "A CAN or serial port is down; it is being reopened.";
    CanBusError => "CAN_BUS_ERROR", Warning, true,
        "The CAN controller reported an error (bus error, bus-off or TX overflow).";
    RecordingFailed => "RECORDING_FAILED", Warning, false,
        "Recording CAN traffic stopped (disk full or folder gone); the bridge goes on.";
    StaleValue => "STALE_VALUE", Error, false,
        "A reading the pack must supply is missing or too old: the directions it guards are at 0 A (data: which).";
    BatteryDesignMismatch => "BATTERY_DESIGN_MISMATCH", Error, false,
        "What the pack shows on the bus contradicts its configured design: 0 A and contactors open until Start.";
    BatteryChargeStopRequest => "BATTERY_CHG_STOP_REQ", Error, false,
        "The BMS requests that charging stop: charging stopped.";
    BatteryDischargeStopRequest => "BATTERY_DISCHG_STOP_REQ", Error, false,
        "The BMS requests that discharging stop: discharging stopped.";
    BatteryRelayCutRequest => "BATTERY_RELAY_CUT_REQ", Error, false,
        "The BMS requests its relays opened: charge and discharge stopped, contactors opened.";
    BatteryEmpty => "BATTERY_EMPTY", Info, false,
        "The BMS reports the pack empty: discharging stopped until it says otherwise.";
    BatteryFull => "BATTERY_FULL", Info, false,
        "The BMS reports the pack full: charging stopped until it says otherwise.";
    BatteryCaution => "BATTERY_CAUTION", Warning, false,
        "The BMS raised its caution indicator: inspect the battery.";
    BatteryIsolation => "BATTERY_ISOLATION", Error, false,
        "The BMS reports an insulation fault: charge and discharge stopped, contactors opened.";
    Low12V => "12V_LOW", Error, false,
        "The pack's 12 V supply is too low for its controller to be trusted: charge and discharge stopped.";
    InterlockOpen => "INTERLOCK_OPEN", Warning, false,
        "The high-voltage interlock loop is open (not required on this pack by the configuration).";
    ChargeLimitExceeded => "CHARGE_LIMIT_EXCEEDED", Error, false,
        "The pack is charged with more current than the inverter was allowed: paused until Resume.";
    DischargeLimitExceeded => "DISCHARGE_LIMIT_EXCEEDED", Error, false,
        "The pack is discharged with more current than the inverter was allowed: paused until Resume.";
    CurrentSignImplausible => "CURRENT_SIGN_IMPLAUSIBLE", Warning, false,
        "The measured current's direction contradicts the SOC's movement: check the current sensor and wiring.";
    StateNotSaved => "STATE_NOT_SAVED", Error, false,
        "The latched safety state could not be written to the state file; it would be lost on a restart.";
    ContactorPrechargeFailed => "CONTACTOR_PRECHARGE_FAILED", Error, false,
        "Precharge failed: the DC bus did not reach the pack voltage in time; contactors left open until Start.";
    ContactorNotFollowing => "CONTACTOR_NOT_FOLLOWING", Error, false,
        "A contactor or relay output does not follow its command (data: which output): opened, 0 A until Start.";
    ContactorsNotControlled => "CONTACTORS_NOT_CONTROLLED", Warning, false,
        "contactors.mode = none: DBE cannot open the pack; only a 0 A limit protects it. Fit relays and use relays.";
    ModbusReadOutsideMap => "MODBUS_READ_OUTSIDE_MAP", Info, true,
        "The inverter read Modbus registers outside the BYD map (data: the first address); they were answered 0, as Battery-Emulator does. Raised once.";
}

/// One occurrence, as queued for telemetry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub kind: EventKind,
    pub at: Instant,
    pub data: i32,
    /// The event's count including this occurrence.
    pub count: u32,
}

/// The running record of one event kind.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EventRecord {
    pub count: u32,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    pub data: i32,
    pub active: bool,
}

const QUEUE: usize = 64;

/// All events' records plus the queue of occurrences not yet polled.
#[derive(Clone, Debug)]
pub struct EventLog {
    records: [EventRecord; EventKind::COUNT],
    queue: heapless::Deque<Occurrence, QUEUE>,
    dropped: u32,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog { records: [EventRecord::default(); EventKind::COUNT], queue: heapless::Deque::new(), dropped: 0 }
    }
}

impl EventLog {
    /// Raises `kind` with its triggering value. Returns true when this counted as a new occurrence.
    pub fn raise(&mut self, now: Instant, kind: EventKind, data: i32) -> bool {
        let rec = &mut self.records[kind as usize];
        rec.data = data;
        if rec.active && !kind.is_one_shot() {
            rec.last_at = Some(now);
            return false;
        }
        rec.active = !kind.is_one_shot();
        rec.count = rec.count.saturating_add(1);
        rec.first_at.get_or_insert(now);
        rec.last_at = Some(now);
        let occ = Occurrence { kind, at: now, data, count: rec.count };
        if self.queue.is_full() {
            self.queue.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        let _ = self.queue.push_back(occ);
        true
    }

    /// Marks a condition event inactive (it counts again next time it is raised).
    pub fn clear(&mut self, kind: EventKind) {
        self.records[kind as usize].active = false;
    }

    /// Raises or clears a condition event in one call.
    pub fn set_condition(&mut self, now: Instant, kind: EventKind, active: bool, data: i32) {
        if active {
            self.raise(now, kind, data);
        } else {
            self.clear(kind);
        }
    }

    pub fn record(&self, kind: EventKind) -> &EventRecord {
        &self.records[kind as usize]
    }

    pub fn is_active(&self, kind: EventKind) -> bool {
        self.records[kind as usize].active
    }

    /// Every kind with its record, in the fixed order.
    pub fn records(&self) -> impl Iterator<Item = (EventKind, &EventRecord)> {
        EventKind::ALL.iter().map(move |&k| (k, &self.records[k as usize]))
    }

    /// The highest level among active conditions, or `Info` if none is active.
    pub fn level(&self) -> Level {
        self.records().filter(|(_, r)| r.active).map(|(k, _)| k.level()).max().unwrap_or(Level::Info)
    }

    /// The next occurrence not yet handed out, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Occurrence> {
        self.queue.pop_front()
    }

    /// Occurrences lost because nobody polled them in time.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_count_transitions_one_shots_count_raises() {
        let mut log = EventLog::default();
        let t = Instant::from_millis;
        assert!(log.raise(t(1), EventKind::CellOverVoltage, 4300));
        assert!(!log.raise(t(2), EventKind::CellOverVoltage, 4310));
        log.clear(EventKind::CellOverVoltage);
        assert!(log.raise(t(3), EventKind::CellOverVoltage, 4305));
        let r = log.record(EventKind::CellOverVoltage);
        assert_eq!((r.count, r.first_at, r.last_at, r.data, r.active), (2, Some(t(1)), Some(t(3)), 4305, true));

        assert!(log.raise(t(4), EventKind::PauseBegin, 0));
        assert!(log.raise(t(5), EventKind::PauseBegin, 0));
        assert_eq!(log.record(EventKind::PauseBegin).count, 2);
        assert!(!log.is_active(EventKind::PauseBegin));
        assert_eq!(log.level(), Level::Error);

        let kinds: Vec<_> = core::iter::from_fn(|| log.poll_event()).map(|o| (o.kind, o.count)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::CellOverVoltage, 1),
                (EventKind::CellOverVoltage, 2),
                (EventKind::PauseBegin, 1),
                (EventKind::PauseBegin, 2)
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let mut log = EventLog::default();
        for i in 0..(QUEUE as u64 + 3) {
            log.raise(Instant::from_millis(i), EventKind::PauseBegin, i as i32);
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(log.poll_event().unwrap().data, 3);
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in EventKind::ALL.iter().enumerate() {
            for b in &EventKind::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
