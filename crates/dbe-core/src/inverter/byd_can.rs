//! BYD Battery-Box Premium HVS over CAN: DBE answers the inverter as a BYD HVS battery tower.
//!
//! Classic 11-bit CAN at 500 kbit/s, every multi-byte value big-endian. The battery stays silent until the inverter
//! has spoken (any of 0x091, 0x0D1, 0x111, 0x151, 0x191): a BYD tower that talks into a sleeping inverter confuses
//! some of them. From the first inverter frame on it sends its identity set once, then its cyclic frames on their
//! own periods; an identify request (0x151 with byte 0 bit 0 set) repeats the identity set. Serves Deye/Sunsynk HV,
//! GoodWe, Solis, Sungrow (outside Australia), Afore and Ingeteam, which all speak the BYD HVS protocol.
//!
//! # Sources
//! - **[BE]** dalathegreat/Battery-Emulator `Software/src/inverter/BYD-CAN.{h,cpp}` (HEAD of 2026-07, and its
//!   history: d7b7d219 "Fix current decoding", ffe4e77d "compute rated/remaining Ah from nominal voltage",
//!   d3dffd5c "Add message 191", 8c58dc6b "Add Deye configuration option", e03215fa "blocking until we see
//!   inverter"): every id, byte position, scale, period and constant below, the silent-until-spoken rule, the
//!   identity set and when it is sent, and the Deye option.
//! - **[BE-wiki]** dalathegreat/Battery-Emulator-Wiki `docs/10-inverters/Deye.md`: why the Deye option exists
//!   (Deye ignores 0 A limits in 0x110 and stops only at 0 % / 100 % SOC or at the voltage limits).
//! - `CAN_STILL_ALIVE` = 60 s in [BE] `devboard/utils/types.h`: the inverter link timeout.
//!
//! # Inverter → battery
//! - `0x091`: b0-1 measured voltage 0.1 V; b2-3 measured current, signed; b4-5 temperature 0.1 °C.
//! - `0x0D1`: b0-1 the inverter's SOC 0.1 %.
//! - `0x111`: b0-3 a timestamp (u32, meaning unknown; kept).
//! - `0x151`: b0 bit 0 set = "identify yourself" (answered with the identity set); otherwise b1-7 are the
//!   inverter's brand in ASCII.
//! - `0x191`: heard, content unknown ([BE] only notes the inverter is alive).
//!
//! # Battery → inverter
//! - Identity set, on the first inverter frame and on every identify request: `0x250` firmware 3.29, b2 0x00,
//!   b3 0x66, b4-5 total capacity 0.1 kWh, b6 0x02, b7 0x09; `0x290` `06 37 10 D9 00 00 00 00`; `0x2D0`
//!   `00 "BYD" 00 00 00 00`; four `0x3D0` frames with b0 = 0..3 and seven ASCII bytes of
//!   "Battery-Box Premium HVS" each. Constants without a stated meaning are [BE]'s captured values.
//! - `0x110` every 2 s (limits): b0-1 charge voltage 0.1 V; b2-3 discharge voltage 0.1 V; b4-5 max discharge
//!   current 0.1 A; b6-7 max charge current 0.1 A.
//! - `0x150` every 10 s (states): b0-1 SOC 0.01 %; b2-3 SOH 0.01 %; b4-5 remaining capacity 0.1 Ah; b6-7 full
//!   capacity 0.1 Ah (energy over the nominal voltage, the middle of the voltage window, as [BE] since ffe4e77d).
//! - `0x1D0` every 10 s (battery info): b0-1 voltage 0.1 V; b2-3 current 0.1 A signed (positive = charging, the
//!   sign of [BE]'s datalayer and of DBE); b4-5 average temperature 0.1 °C; b6-7 `03 08` ([BE] constant).
//! - `0x210` every 10 s (cell info): b0-1 highest, b2-3 lowest temperature 0.1 °C, signed.
//! - `0x190` every 60 s (alarm): [BE]'s constant `00 00 03 00 00 00 00 00`. [BE] has not decoded its bits ("TODO:
//!   BYD Alarms are not implemented yet"), so DBE sends the constant too and signals trouble only through the
//!   limits: no guessed alarm bits.
//!
//! On the first inverter frame every cyclic frame is due at once ([BE]'s timers start at 0), then each on its
//! own period.
//!
//! # What DBE sends where [BE] differs
//! - Limits and voltages come from the supervisor's view: 0x110 carries the supervisor's max charge / min
//!   discharge voltage (BE: design voltage ∓ 2.0 V or the user's voltages; the supervisor's already are the
//!   user's), and both currents are 0 when the view's data is not valid.
//! - An unknown SOH is 99.00 % ([BE]'s datalayer default, as the Pylon CAN module explains); other unknown values
//!   are 0.
//! - **Deye workaround** (option `dangerous_deye_soc_workaround`, off by default, BE's "Deye avoid
//!   over/undercharge fix"): 0x150 reports 100.00 % SOC while charging is forbidden (0 A) and 0 % while
//!   discharging is. It misreports the SOC on purpose; it is the only way [BE-wiki] knows to stop a Deye. When
//!   *both* directions are forbidden [BE] reports 0 % (its discharge check runs last), which invites a Deye to
//!   charge a pack DBE cannot vouch for; DBE reports 100 % instead: overcharge is the fire risk, and a Deye still
//!   stops discharging at its own low-voltage limit (0x110 b2-3).
//!
//! # Measured current scale (unverified)
//! [BE] read 0x091 b2-3 as 0.1 A until 2025-12 and since d7b7d219 as 0.01 A (`dA = raw / 10`, `mA = raw × 10`),
//! without a capture in the commit. DBE follows the newer reading ([`InverterMeasurement::current`] rounds
//! towards 0 to 0.1 A) and only shows it: no rule acts on the inverter's current.
//!
//! # Bus voltage
//! The inverter's measured voltage is the DC bus on its side of the contactors, so [`CanInverter::bus_voltage`]
//! offers it to the contactor sequencer's precharge check (which applies its own freshness bound).

use super::word::{clamp_u16, put_be as put, signed};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterView};
use crate::options::{self, DriverOptions, OptionField, OptionKind, OptionValue};
use crate::time::{Duration, Instant, Periodic};
use crate::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, WattHours};

/// One line for `dbe list`.
pub const SUPPORTS: &str = "Deye/Sunsynk HV, GoodWe, Solis, Sungrow (outside AU), Afore, Ingeteam: inverters that \
                            expect a BYD Battery-Box Premium HVS on CAN (11-bit, 500 kbit/s)";

/// [BE]'s `CAN_STILL_ALIVE`: 60 s without an inverter frame and the link counts as lost.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);

/// CAN identifiers (all standard).
pub mod id {
    pub const INVERTER_MEASUREMENT: u16 = 0x091;
    pub const INVERTER_SOC: u16 = 0x0D1;
    pub const INVERTER_TIME: u16 = 0x111;
    pub const INVERTER_IDENTITY: u16 = 0x151;
    pub const INVERTER_ALIVE: u16 = 0x191;
    pub const LIMITS: u16 = 0x110;
    pub const STATES: u16 = 0x150;
    pub const ALARM: u16 = 0x190;
    pub const BATTERY_INFO: u16 = 0x1D0;
    pub const CELL_INFO: u16 = 0x210;
    pub const VERSION: u16 = 0x250;
    pub const IDENTITY_290: u16 = 0x290;
    pub const MAKER: u16 = 0x2D0;
    pub const MODEL: u16 = 0x3D0;
}

/// Byte ranges of every field, per message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub mod measurement {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const CURRENT: Field = 2..4;
        pub const TEMPERATURE: Field = 4..6;
    }
    pub mod identity {
        pub const REQUEST_BYTE: usize = 0;
        pub const REQUEST_BIT: u8 = 1 << 0;
        pub const BRAND: core::ops::Range<usize> = 1..8;
    }
    pub mod limits {
        use super::Field;
        pub const CHARGE_VOLTAGE: Field = 0..2;
        pub const DISCHARGE_VOLTAGE: Field = 2..4;
        pub const DISCHARGE_CURRENT: Field = 4..6;
        pub const CHARGE_CURRENT: Field = 6..8;
    }
    pub mod states {
        use super::Field;
        pub const SOC: Field = 0..2;
        pub const SOH: Field = 2..4;
        pub const REMAINING_AH: Field = 4..6;
        pub const FULL_AH: Field = 6..8;
    }
    pub mod battery_info {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const CURRENT: Field = 2..4;
        pub const TEMPERATURE: Field = 4..6;
        pub const TAIL: Field = 6..8;
    }
    pub mod cell_info {
        use super::Field;
        pub const TEMPERATURE_MAX: Field = 0..2;
        pub const TEMPERATURE_MIN: Field = 2..4;
    }
    pub mod version {
        use super::Field;
        pub const CAPACITY: Field = 4..6;
    }
}

/// [BE]'s constants (captured from a BYD tower; meanings unknown where not named).
mod constant {
    /// 0x250 with capacity bytes 4-5 still 0: firmware 3.29, then 00 66 .. .. 02 09.
    pub const VERSION: [u8; 8] = [0x03, 0x29, 0x00, 0x66, 0x00, 0x00, 0x02, 0x09];
    pub const IDENTITY_290: [u8; 8] = [0x06, 0x37, 0x10, 0xD9, 0x00, 0x00, 0x00, 0x00];
    pub const MAKER: [u8; 8] = [0x00, b'B', b'Y', b'D', 0x00, 0x00, 0x00, 0x00];
    /// "Battery-Box Premium HVS", seven characters per 0x3D0 frame after its index.
    pub const MODEL: &[u8] = b"Battery-Box Premium HVS";
    pub const ALARM: [u8; 8] = [0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00];
    pub const BATTERY_INFO_TAIL: [u8; 2] = [0x03, 0x08];
}

const LIMITS_INTERVAL: Duration = Duration::from_secs(2);
const STATES_INTERVAL: Duration = Duration::from_secs(10);
const ALARM_INTERVAL: Duration = Duration::from_secs(60);
/// An unknown SOH: [BE]'s datalayer default (see the module doc).
const UNKNOWN_SOH: BasisPoints = BasisPoints(9900);

/// Options; every default is Battery-Emulator's.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BydCanOptions {
    /// Report 100 % / 0 % SOC when charging / discharging is forbidden (see the module doc). Safety-relevant.
    pub dangerous_deye_soc_workaround: bool,
}

impl DriverOptions for BydCanOptions {
    const FIELDS: &'static [OptionField<Self>] = &[OptionField {
        name: "dangerous_deye_soc_workaround",
        help: "SAFETY-RELEVANT, off by default. Deye (and some Solis) inverters ignore a 0 A limit; with this on \
               DBE reports 100 % SOC whenever charging is forbidden and 0 % whenever discharging is (100 % when \
               both are), the only signal those inverters obey. The SOC they show is then false. Turn it on only \
               for such an inverter (Battery-Emulator's \"Deye avoid over/undercharge fix\").",
        kind: OptionKind::Bool,
        get: |o| OptionValue::Bool(o.dangerous_deye_soc_workaround),
        set: |o, v| o.dangerous_deye_soc_workaround = options::boolean(v),
    }];
}

/// What the inverter says it measures on its battery port (0x091).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct InverterMeasurement {
    pub voltage: DeciVolts,
    /// The raw current in 0.01 A (see the module doc: unverified scale, sign as the inverter sends it).
    pub current_centiamps: i16,
    pub temperature: DeciCelsius,
    /// When it arrived.
    pub at: Instant,
}

impl InverterMeasurement {
    /// Decodes 0x091 (needs 6 bytes).
    pub fn parse(frame: &CanFrame, at: Instant) -> Result<Self, DecodeError> {
        use field::measurement::*;
        let d = require_len(frame, TEMPERATURE.end)?;
        Ok(InverterMeasurement {
            voltage: DeciVolts(be_u16(d, VOLTAGE)),
            current_centiamps: be_u16(d, CURRENT) as i16,
            temperature: DeciCelsius(be_u16(d, TEMPERATURE) as i16),
            at,
        })
    }

    /// The current in 0.1 A, rounded towards 0.
    pub fn current(&self) -> DeciAmps {
        DeciAmps(self.current_centiamps as i32 / 10)
    }
}

fn be_u16(d: &[u8; 8], at: field::Field) -> u16 {
    u16::from_be_bytes([d[at.start], d[at.start + 1]])
}

/// One frame the battery owes the inverter.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Frame {
    Version,
    Identity290,
    Maker,
    Model(u8),
    Limits,
    States,
    BatteryInfo,
    CellInfo,
    Alarm,
}

const IDENTITY: [Frame; 7] = [
    Frame::Version,
    Frame::Identity290,
    Frame::Maker,
    Frame::Model(0),
    Frame::Model(1),
    Frame::Model(2),
    Frame::Model(3),
];
/// Every frame at most once: 7 identity + 5 cyclic.
const QUEUE_LEN: usize = 12;

/// The cyclic timers, one slot per period.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Timer {
    Limits,
    States,
    Alarm,
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::Limits, Timer::States, Timer::Alarm];

    fn interval(self) -> Duration {
        match self {
            Timer::Limits => LIMITS_INTERVAL,
            Timer::States => STATES_INTERVAL,
            Timer::Alarm => ALARM_INTERVAL,
        }
    }

    fn frames(self) -> &'static [Frame] {
        match self {
            Timer::Limits => &[Frame::Limits],
            Timer::States => &[Frame::States, Frame::BatteryInfo, Frame::CellInfo],
            Timer::Alarm => &[Frame::Alarm],
        }
    }
}

/// The BYD HVS tower as the inverter sees it.
#[derive(Clone, Debug)]
pub struct BydCan {
    options: BydCanOptions,
    queue: heapless::Deque<Frame, QUEUE_LEN>,
    queued_at: Option<Instant>,
    timers: [Periodic; 3],
    last_heard: Option<Instant>,
    measurement: Option<InverterMeasurement>,
    inverter_soc_permille: Option<u16>,
    inverter_time: Option<u32>,
    brand: Option<[u8; 7]>,
}

impl BydCan {
    pub fn new(options: BydCanOptions) -> Self {
        BydCan {
            options,
            queue: heapless::Deque::new(),
            queued_at: None,
            timers: Timer::ALL.map(|t| Periodic::new(t.interval())),
            last_heard: None,
            measurement: None,
            inverter_soc_permille: None,
            inverter_time: None,
            brand: None,
        }
    }

    pub fn options(&self) -> BydCanOptions {
        self.options
    }

    /// The inverter's last 0x091.
    pub fn measurement(&self) -> Option<InverterMeasurement> {
        self.measurement
    }

    /// The inverter's own SOC (0x0D1), in 0.1 %.
    pub fn inverter_soc_permille(&self) -> Option<u16> {
        self.inverter_soc_permille
    }

    /// The inverter's 0x111 value.
    pub fn inverter_time(&self) -> Option<u32> {
        self.inverter_time
    }

    /// The brand the inverter announced in 0x151 (ASCII, zero-padded).
    pub fn brand(&self) -> Option<[u8; 7]> {
        self.brand
    }

    fn enqueue(&mut self, now: Instant, frames: &[Frame]) {
        for &f in frames {
            if !self.queue.iter().any(|&q| q == f) {
                // Cannot fail: each frame is queued at most once and QUEUE_LEN covers them all.
                let _ = self.queue.push_back(f);
            }
        }
        if self.queued_at.is_none() && !self.queue.is_empty() {
            self.queued_at = Some(now);
        }
    }

    fn started(&self) -> bool {
        self.last_heard.is_some()
    }

    fn encode(&self, frame: Frame, view: &InverterView<'_>) -> CanFrame {
        let mut buf = [0u8; 8];
        let id = match frame {
            Frame::Version => {
                buf = constant::VERSION;
                let kwh_tenths = view.total_energy().map_or(0, |wh| wh.0 / 100);
                put(&mut buf, field::version::CAPACITY, clamp_u16(kwh_tenths as i64));
                id::VERSION
            }
            Frame::Identity290 => {
                buf = constant::IDENTITY_290;
                id::IDENTITY_290
            }
            Frame::Maker => {
                buf = constant::MAKER;
                id::MAKER
            }
            Frame::Model(i) => {
                buf[0] = i;
                let start = i as usize * 7;
                let part = constant::MODEL.get(start..).unwrap_or(&[]);
                let n = part.len().min(7);
                buf[1..1 + n].copy_from_slice(&part[..n]);
                id::MODEL
            }
            Frame::Limits => {
                use field::limits::*;
                let (charge, discharge) = limits(view);
                put(&mut buf, CHARGE_VOLTAGE, view.max_charge_voltage().0);
                put(&mut buf, DISCHARGE_VOLTAGE, view.min_discharge_voltage().0);
                put(&mut buf, DISCHARGE_CURRENT, discharge);
                put(&mut buf, CHARGE_CURRENT, charge);
                id::LIMITS
            }
            Frame::States => {
                use field::states::*;
                put(&mut buf, SOC, self.reported_soc(view).0);
                put(&mut buf, SOH, view.soh().unwrap_or(UNKNOWN_SOH).clamped().0);
                let nominal = nominal_dv(view);
                put(&mut buf, REMAINING_AH, amp_hours_tenths(view.remaining_energy(), nominal));
                put(&mut buf, FULL_AH, amp_hours_tenths(view.total_energy(), nominal));
                id::STATES
            }
            Frame::BatteryInfo => {
                use field::battery_info::*;
                put(&mut buf, VOLTAGE, view.voltage().map_or(0, |v| v.0));
                put(&mut buf, CURRENT, signed(view.current().map_or(0, |c| c.0 as i64)));
                let avg = match (view.temperature_max(), view.temperature_min()) {
                    (Some(a), Some(b)) => (a.0 as i32 + b.0 as i32) / 2,
                    _ => 0,
                };
                put(&mut buf, TEMPERATURE, avg as i16 as u16);
                buf[TAIL].copy_from_slice(&constant::BATTERY_INFO_TAIL);
                id::BATTERY_INFO
            }
            Frame::CellInfo => {
                use field::cell_info::*;
                put(&mut buf, TEMPERATURE_MAX, view.temperature_max().map_or(0, |t| t.0) as u16);
                put(&mut buf, TEMPERATURE_MIN, view.temperature_min().map_or(0, |t| t.0) as u16);
                id::CELL_INFO
            }
            Frame::Alarm => {
                buf = constant::ALARM;
                id::ALARM
            }
        };
        CanFrame::std8(id, buf)
    }

    /// The SOC 0x150 carries: the view's, or with the Deye workaround the one that makes a Deye stop.
    fn reported_soc(&self, view: &InverterView<'_>) -> BasisPoints {
        let soc = view.soc().unwrap_or(BasisPoints::ZERO).clamped();
        if !self.options.dangerous_deye_soc_workaround {
            return soc;
        }
        let (charge, discharge) = limits(view);
        if charge == 0 {
            BasisPoints::FULL
        } else if discharge == 0 {
            BasisPoints::ZERO
        } else {
            soc
        }
    }
}

/// The (charge, discharge) limits in 0.1 A as sent: 0 when the view's data is not valid, never negative.
fn limits(view: &InverterView<'_>) -> (u16, u16) {
    if !view.data_valid() {
        return (0, 0);
    }
    let mag = |l: DeciAmps| clamp_u16(l.0 as i64);
    (mag(view.charge_current_limit()), mag(view.discharge_current_limit()))
}

/// The middle of the voltage window (0.1 V), the nominal voltage capacities are converted with.
fn nominal_dv(view: &InverterView<'_>) -> u32 {
    (view.max_charge_voltage().0 as u32 + view.min_discharge_voltage().0 as u32) / 2
}

/// Energy as charge at the nominal voltage, in 0.1 Ah: Wh × 100 / dV.
fn amp_hours_tenths(energy: Option<WattHours>, nominal_dv: u32) -> u16 {
    match energy {
        Some(wh) if nominal_dv > 0 => clamp_u16((wh.0 as i64 * 100) / nominal_dv as i64),
        _ => 0,
    }
}

impl CanInverter for BydCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.is_remote() {
            return Ok(FrameUse::Ignored);
        }
        let Some(raw) = frame.standard_id() else {
            return Ok(FrameUse::Ignored);
        };
        let mut identify = false;
        match raw {
            id::INVERTER_MEASUREMENT => self.measurement = Some(InverterMeasurement::parse(frame, now)?),
            id::INVERTER_SOC => {
                let d = require_len(frame, 2)?;
                self.inverter_soc_permille = Some(u16::from_be_bytes([d[0], d[1]]));
            }
            id::INVERTER_TIME => {
                let d = require_len(frame, 4)?;
                self.inverter_time = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
            }
            id::INVERTER_IDENTITY => {
                use field::identity::*;
                let d = require_len(frame, 1)?;
                if d[REQUEST_BYTE] & REQUEST_BIT != 0 {
                    identify = true;
                } else {
                    let mut brand = [0u8; 7];
                    let n = frame.len().saturating_sub(BRAND.start).min(brand.len());
                    for (b, &c) in brand.iter_mut().zip(&frame.data()[BRAND.start..BRAND.start + n]) {
                        *b = if c.is_ascii_graphic() || c == b' ' { c } else { 0 };
                    }
                    self.brand = Some(brand);
                }
            }
            id::INVERTER_ALIVE => {}
            _ => return Ok(FrameUse::Ignored),
        }
        if !self.started() {
            // The first word from the inverter: identity once, every cyclic frame due now.
            identify = true;
            for t in &mut self.timers {
                t.start_at(now);
            }
        }
        self.last_heard = Some(now);
        if identify {
            self.enqueue(now, &IDENTITY);
        }
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, now: Instant, view: &InverterView<'_>) -> Option<CanFrame> {
        for (i, t) in Timer::ALL.into_iter().enumerate() {
            if self.timers[i].poll(now) {
                self.enqueue(now, t.frames());
            }
        }
        let frame = self.queue.pop_front()?;
        if self.queue.is_empty() {
            self.queued_at = None;
        }
        Some(self.encode(frame, view))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.iter().filter_map(|t| t.next_at()).min();
        crate::time::earliest(self.queued_at, timers)
    }

    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    fn bus_voltage(&self) -> Option<(Instant, DeciVolts)> {
        self.measurement.map(|m| (m.at, m.voltage))
    }
}

#[cfg(test)]
mod tests {
    //! The view is made up; the expected bytes are worked out by hand from the layout in the module doc ([BE]
    //! BYD-CAN.{h,cpp} at HEAD), field by field, so a wrong scale shows up as a wrong byte.
    use super::*;
    use crate::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use crate::supervisor::Output;
    use crate::units::MilliVolts;

    const T0: Instant = Instant::ZERO;

    fn model() -> BatteryModel {
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96,
            max_pack_voltage: DeciVolts(4040),
            min_pack_voltage: DeciVolts(2600),
            max_cell_voltage: MilliVolts(4250),
            min_cell_voltage: MilliVolts(2700),
            max_cell_deviation: MilliVolts(500),
        });
        m.pack_voltage = Some(Reading::new(DeciVolts(3984), T0)); // 0x0F90
        m.current = Some(Reading::new(DeciAmps(-125), T0)); // 0xFF83
        m.soh = Some(Reading::new(BasisPoints(9876), T0)); // 0x2694
        m.temperature_min = Some(Reading::new(DeciCelsius(-52), T0)); // 0xFFCC
        m.temperature_max = Some(Reading::new(DeciCelsius(231), T0)); // 0x00E7; average (231 - 52) / 2 = 89 = 0x59
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(5012)),              // 0x1394
            total_energy: Some(WattHours(24_000)),     // 240 = 0x00F0 tenths of kWh; 24000 × 100 / 3500 = 685 = 0x02AD
            remaining_energy: Some(WattHours(12_000)), // 12000 × 100 / 3500 = 342 = 0x0156
            charge_current_limit: DeciAmps(250),       // 0x00FA
            discharge_current_limit: DeciAmps(300),    // 0x012C
            max_charge_voltage: DeciVolts(4000),       // 0x0FA0
            min_discharge_voltage: DeciVolts(3000),    // 0x0BB8; nominal 3500
            data_valid: true,
            ..Output::default()
        }
    }

    fn std(id: u16, data: &[u8]) -> CanFrame {
        CanFrame::standard(id, data).unwrap()
    }

    fn drain(b: &mut BydCan, now: Instant, m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
        let view = InverterView::new(m, out);
        core::iter::from_fn(|| b.poll_transmit(now, &view)).collect()
    }

    fn ids(frames: &[CanFrame]) -> Vec<u16> {
        frames.iter().map(|f| f.standard_id().unwrap()).collect()
    }

    fn find(frames: &[CanFrame], id: u16) -> [u8; 8] {
        *frames.iter().find(|f| f.standard_id() == Some(id)).expect("frame present").data8()
    }

    fn started(o: BydCanOptions, m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
        let mut b = BydCan::new(o);
        b.handle_frame(T0, &std(id::INVERTER_ALIVE, &[0; 8])).unwrap();
        drain(&mut b, T0, m, out)
    }

    #[test]
    fn silent_until_the_inverter_speaks() {
        let (m, out) = (model(), output());
        let mut b = BydCan::new(BydCanOptions::default());
        assert_eq!(b.poll_timeout(), None);
        assert!(drain(&mut b, Instant::from_millis(100000), &m, &out).is_empty());
        // Another device's frame does not wake it.
        assert_eq!(b.handle_frame(T0, &std(0x1DB, &[0; 8])), Ok(FrameUse::Ignored));
        assert!(drain(&mut b, Instant::from_millis(100000), &m, &out).is_empty());
        for first in [id::INVERTER_MEASUREMENT, id::INVERTER_SOC, id::INVERTER_TIME, id::INVERTER_IDENTITY, 0x191] {
            let mut b = BydCan::new(BydCanOptions::default());
            assert_eq!(b.handle_frame(T0, &std(first, &[0; 8])), Ok(FrameUse::Used), "{first:#x}");
            assert_eq!(b.poll_timeout(), Some(T0));
            let f = drain(&mut b, T0, &m, &out);
            assert_eq!(
                ids(&f),
                [0x250, 0x290, 0x2D0, 0x3D0, 0x3D0, 0x3D0, 0x3D0, 0x110, 0x150, 0x1D0, 0x210, 0x190],
                "{first:#x}"
            );
        }
    }

    #[test]
    fn identity_frames() {
        let f = started(BydCanOptions::default(), &model(), &output());
        // firmware 3.29, 00 66, 24 kWh = 240 tenths, 02 09
        assert_eq!(f[0].data8(), &[0x03, 0x29, 0x00, 0x66, 0x00, 0xF0, 0x02, 0x09]);
        assert_eq!(f[1].data8(), &[0x06, 0x37, 0x10, 0xD9, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(f[2].data8(), &[0x00, 0x42, 0x59, 0x44, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(f[3].data8(), &[0x00, 0x42, 0x61, 0x74, 0x74, 0x65, 0x72, 0x79]); // Battery
        assert_eq!(f[4].data8(), &[0x01, 0x2D, 0x42, 0x6F, 0x78, 0x20, 0x50, 0x72]); // -Box Pr
        assert_eq!(f[5].data8(), &[0x02, 0x65, 0x6D, 0x69, 0x75, 0x6D, 0x20, 0x48]); // emium H
        assert_eq!(f[6].data8(), &[0x03, 0x56, 0x53, 0x00, 0x00, 0x00, 0x00, 0x00]);
        // VS
    }

    #[test]
    fn cyclic_frames() {
        let f = started(BydCanOptions::default(), &model(), &output());
        // charge voltage, discharge voltage, discharge limit, charge limit
        assert_eq!(find(&f, 0x110), [0x0F, 0xA0, 0x0B, 0xB8, 0x01, 0x2C, 0x00, 0xFA]);
        // SOC 50.12 %, SOH 98.76 %, 34.2 Ah remaining, 68.5 Ah full
        assert_eq!(find(&f, 0x150), [0x13, 0x94, 0x26, 0x94, 0x01, 0x56, 0x02, 0xAD]);
        // 398.4 V, -12.5 A, 8.9 °C average, 03 08
        assert_eq!(find(&f, 0x1D0), [0x0F, 0x90, 0xFF, 0x83, 0x00, 0x59, 0x03, 0x08]);
        // 23.1 °C, -5.2 °C
        assert_eq!(find(&f, 0x210), [0x00, 0xE7, 0xFF, 0xCC, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(find(&f, 0x190), [0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn periods_and_identify_requests() {
        let (m, out) = (model(), output());
        let mut b = BydCan::new(BydCanOptions::default());
        b.handle_frame(T0, &std(0x091, &[0; 8])).unwrap();
        assert_eq!(drain(&mut b, T0, &m, &out).len(), 12);
        let mut sent = Vec::new();
        let mut now = T0;
        while let Some(t) = b.poll_timeout() {
            if t > Instant::from_millis(60000) {
                break;
            }
            now = t;
            for f in drain(&mut b, now, &m, &out) {
                sent.push((now.as_millis(), f.standard_id().unwrap()));
            }
        }
        let at = |id: u16| sent.iter().filter(|s| s.1 == id).map(|s| s.0).collect::<Vec<_>>();
        assert_eq!(at(0x110), (1..=30).map(|i| i * 2000).collect::<Vec<u64>>());
        for id in [0x150, 0x1D0, 0x210] {
            assert_eq!(at(id), (1..=6).map(|i| i * 10_000).collect::<Vec<u64>>());
        }
        assert_eq!(at(0x190), [60_000]);
        assert!(at(0x250).is_empty(), "identity only on request");
        // A brand announcement is not a request; bit 0 of byte 0 is.
        let t = Instant::from_millis(now.as_millis() + 1);
        b.handle_frame(t, &std(0x151, &[0x00, b'D', b'E', b'Y', b'E', 0, 0, 0])).unwrap();
        assert_eq!(b.brand(), Some(*b"DEYE\0\0\0"));
        assert!(drain(&mut b, t, &m, &out).is_empty());
        b.handle_frame(t, &std(0x151, &[0x01, 0, 0, 0, 0, 0, 0, 0])).unwrap();
        assert_eq!(ids(&drain(&mut b, t, &m, &out)), [0x250, 0x290, 0x2D0, 0x3D0, 0x3D0, 0x3D0, 0x3D0]);
    }

    #[test]
    fn inverter_frames_are_decoded() {
        let mut b = BydCan::new(BydCanOptions::default());
        let t = Instant::from_millis(5);
        // 385.2 V = 0x0F0C, -12.34 A = -1234 = 0xFB2E, 31.5 °C = 0x013B
        b.handle_frame(t, &std(0x091, &[0x0F, 0x0C, 0xFB, 0x2E, 0x01, 0x3B, 0, 0])).unwrap();
        let m = b.measurement().unwrap();
        assert_eq!(
            m,
            InverterMeasurement {
                voltage: DeciVolts(3852),
                current_centiamps: -1234,
                temperature: DeciCelsius(315),
                at: t
            }
        );
        assert_eq!(m.current(), DeciAmps(-123));
        assert_eq!(b.bus_voltage(), Some((t, DeciVolts(3852))));
        b.handle_frame(t, &std(0x0D1, &[0x01, 0xF4])).unwrap(); // 50.0 %
        assert_eq!(b.inverter_soc_permille(), Some(500));
        b.handle_frame(t, &std(0x111, &[0x12, 0x34, 0x56, 0x78])).unwrap();
        assert_eq!(b.inverter_time(), Some(0x1234_5678));
        assert_eq!(b.last_heard(), Some(t));
    }

    #[test]
    fn zero_limits_and_invalid_data() {
        let m = model();
        let out = Output { charge_current_limit: DeciAmps(0), ..output() };
        assert_eq!(find(&started(BydCanOptions::default(), &m, &out), 0x110)[4..8], [0x01, 0x2C, 0x00, 0x00]);
        // Invalid data sends no current in either direction, whatever the limits say.
        let out = Output { data_valid: false, ..output() };
        assert_eq!(find(&started(BydCanOptions::default(), &m, &out), 0x110)[4..8], [0, 0, 0, 0]);
        // Negative limits (a broken contract) are sent as 0.
        let out = Output { charge_current_limit: DeciAmps(-5), discharge_current_limit: DeciAmps(-1), ..output() };
        assert_eq!(find(&started(BydCanOptions::default(), &m, &out), 0x110)[4..8], [0, 0, 0, 0]);
    }

    #[test]
    fn deye_workaround_reports_the_soc_that_stops_a_deye() {
        let m = model();
        let deye = BydCanOptions { dangerous_deye_soc_workaround: true };
        let soc = |o: BydCanOptions, out: &Output| find(&started(o, &m, out), 0x150)[0..2].to_vec();
        // Off (the default): the real SOC even with 0 A.
        let out = Output { charge_current_limit: DeciAmps(0), ..output() };
        assert_eq!(soc(BydCanOptions::default(), &out), [0x13, 0x94]);
        // On: 100.00 % when charging must stop, 0 % when discharging must, the real SOC otherwise.
        assert_eq!(soc(deye, &out), [0x27, 0x10]);
        let out = Output { discharge_current_limit: DeciAmps(0), ..output() };
        assert_eq!(soc(deye, &out), [0x00, 0x00]);
        assert_eq!(soc(deye, &output()), [0x13, 0x94]);
        // Both forbidden (stale data): 100 %, so the inverter does not charge (see the module doc).
        let out = Output { data_valid: false, ..output() };
        assert_eq!(soc(deye, &out), [0x27, 0x10]);
    }

    #[test]
    fn unknown_values() {
        let m = BatteryModel::new(model().design);
        let out = Output { data_valid: false, ..Output::default() };
        let f = started(BydCanOptions::default(), &m, &out);
        assert_eq!(find(&f, 0x150), [0x00, 0x00, 0x26, 0xAC, 0, 0, 0, 0]); // SOH 99.00 %
        assert_eq!(find(&f, 0x1D0), [0, 0, 0, 0, 0, 0, 0x03, 0x08]);
        assert_eq!(find(&f, 0x250)[4..6], [0, 0]);
    }

    #[test]
    fn short_frames_are_rejected_without_effect() {
        let mut b = BydCan::new(BydCanOptions::default());
        let t = Instant::from_millis(1);
        assert_eq!(
            b.handle_frame(t, &std(0x091, &[1, 2, 3, 4, 5])),
            Err(DecodeError::WrongLength { id: 0x091, expected: 6, got: 5 })
        );
        assert_eq!(
            b.handle_frame(t, &std(0x151, &[])),
            Err(DecodeError::WrongLength { id: 0x151, expected: 1, got: 0 })
        );
        assert_eq!(
            b.handle_frame(t, &std(0x111, &[1])),
            Err(DecodeError::WrongLength { id: 0x111, expected: 4, got: 1 })
        );
        assert_eq!(b.last_heard(), None);
        assert_eq!(b.poll_timeout(), None);
        // Extended ids and remote frames are someone else's.
        assert_eq!(b.handle_frame(t, &CanFrame::extended(0x091, &[0; 8]).unwrap()), Ok(FrameUse::Ignored));
        let remote = CanFrame::remote(embedded_can::StandardId::new(0x151).unwrap(), 1).unwrap();
        assert_eq!(b.handle_frame(t, &remote), Ok(FrameUse::Ignored));
        assert_eq!(b.last_heard(), None);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_frame_is_handled_without_panic(
            raw in prop_oneof![0u32..0x800, 0x080u32..0x200],
            extended in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..=8),
            deye in any::<bool>(),
            at in 0u64..200_000,
        ) {
            let mut b = BydCan::new(BydCanOptions { dangerous_deye_soc_workaround: deye });
            let frame = if extended { CanFrame::extended(raw, &data) } else { CanFrame::standard(raw as u16, &data) };
            let frame = frame.unwrap();
            let now = Instant::from_millis(at);
            match b.handle_frame(now, &frame) {
                Ok(FrameUse::Used) => prop_assert_eq!(b.last_heard(), Some(now)),
                _ => prop_assert_eq!(b.last_heard(), None),
            }
            let (m, out) = (model(), output());
            let view = InverterView::new(&m, &out);
            let mut n = 0;
            while b.poll_transmit(now, &view).is_some() {
                n += 1;
                prop_assert!(n <= QUEUE_LEN);
            }
        }
    }
}
