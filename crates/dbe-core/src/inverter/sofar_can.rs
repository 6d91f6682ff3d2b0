//! Sofar BMS (extended) via CAN: DBE presents itself to a Sofar HYD hybrid as battery number `battery_id` of up to
//! sixteen parallel batteries on one CAN bus.
//!
//! Classic CAN with 29-bit ids at 500 kbit/s, little-endian words. Every frame the battery sends carries its battery
//! ID in the id: battery `n` sends `0x351` as `0x351 + n × 0x1000` (`0x1351` for battery 1, `0xF351` for battery 15).
//! The battery broadcasts its set once a second from the start, whether or not the inverter has spoken. The inverter
//! may also ask (`0x605` real-time and `0x705` history inquiries, addressed by byte 0 to one battery); the addressed
//! battery answers each inquiry it knows with one frame.
//!
//! # Sources
//! - **[BE]** dalathegreat/Battery-Emulator `Software/src/inverter/SOFAR-CAN.{h,cpp}` (HEAD of 2026-08 and its
//!   history: bc07bb24 "Make SOFAR CAN operational", 920cd835 "configurable Sofar ID", 1625e34e "Reduced CAN sending
//!   rate, improved inverter response", 8dc0f7b1 / efba2dc7 (the inverter timeout, below), 45342706 and its revert
//!   e7a10932 (the 99 % SOC cap)): every id, the battery-ID offset (`id << 12`), byte positions, scales, the 1 s
//!   period, the 0x30F enable bits, the inquiry formats and which inquiry is answered by which frame.
//! - **[BE-settings]** [BE] `datalayer/datalayer.h` ("Sofar CAN Battery ID (0-15)") and
//!   `devboard/webserver/settings_html.cpp` ("Sofar Battery ID (0-15)"): the range of the battery ID option.
//! - **[BE-wiki]** dalathegreat/Battery-Emulator-Wiki `docs/10-inverters/Sofar.md`: the inverters served (HYD 5-20KTL),
//!   the inverter settings (battery type "GENERAL", its battery address equal to the battery ID, each battery on its
//!   own CAN channel), and that Sofar CAN is the protocol to prefer over Pylon for them.
//!   Sofar's own document ("BMS CAN protocol, extended, V1.0.001 20201106", [BE] PR #77) is not public: no field
//!   below is taken from it directly.
//!
//! # Battery → inverter, every second (all 8 bytes; id = base + `battery_id` × 0x1000)
//! - `0x351` limits: w0 max charge voltage 0.1 V, w1 max charge current 0.1 A, w2 max discharge current 0.1 A, w3 min
//!   discharge voltage 0.1 V.
//! - `0x355`: b0 SOC 1 %, b2 SOH 1 % (b1, b3..7 zero).
//! - `0x356`: w0 pack voltage 0.1 V, w1 current 0.1 A signed (positive = charging: [BE]'s datalayer sign and DBE's),
//!   w2 highest temperature 0.1 °C signed.
//! - `0x359` pack configuration ([BE]'s reading): b0 packs in parallel, b1 modules in series, b2 CAN protocol
//!   version (1), b3 cells in series.
//! - `0x35E`: the manufacturer name, ASCII, zero-padded.
//! - `0x35F`: b0 battery type (1 = Li-ion), b1..3 BMS version 1.0.0, w2 (b4-5) nominal capacity 1 Ah.
//! - `0x30F` remote command / enable: b0 command (0 = normal), b1 enable flags: bit 0 discharge allowed, bit 1 charge
//!   allowed.
//! - `0x35A` ([BE]'s alarm/warning frame, layout not decoded): eight zero bytes, once, when the schedule starts.
//!   [BE] sends it only when its content changes, and it never fills it, so it goes out once at boot.
//!
//! # Inquiries (inverter → battery) and answers
//! - `0x605` (real-time): b0 target battery ID, b1 inquiry, b2 sub-target. Inquiry `0x00` → `0x670`, `0x01` →
//!   `0x671`, `0x02` → `0x680`, `0x03` → `0x681`, `0x0A` → `0x690`, `0x0B` → `0x691`, `0x0C` → `0x6A0`, `0x0D` →
//!   `0x6B0`, `0x0E` → `0x6C0`.
//! - `0x705` (history/faults): b0 target, b1 inquiry, b2 record, b3 sub-target. Inquiry `0x00`..`0x03` → `0x770`..
//!   `0x773`, `0x04`..`0x08` → `0x780`..`0x784`.
//! - The answer (id with the battery-ID offset) is b0 battery ID, b1 the inquiry's sub-target, b2 its record (0 for
//!   `0x605`), the rest zero: exactly what [BE] sends. The payload layouts of these answers are in Sofar's document,
//!   which [BE] has not decoded (its header's example bytes are overwritten with zeros before anything is sent), so
//!   DBE puts no pack values into them either: no unverified scale reaches the inverter.
//! - Inquiries for another battery ID, and inquiry codes outside the table, are not answered. The inquiry ids carry
//!   no battery offset; [BE] does not look at the frame format, so DBE takes both 11- and 29-bit `0x605`/`0x705`.
//!
//! # Link timeout: none by default (a DBE decision)
//! A Sofar inverter does not speak regularly in this protocol: [BE] first refreshed its inverter-alive counter on
//! each `0x605`/`0x705` with twice the usual 60 s (8dc0f7b1), then the same day refreshed it unconditionally every
//! cycle because "Sofar CAN seems to not send much towards the battery, it only listens periodically" (efba2dc7).
//! No source gives the inquiry cadence, and a deadline on frames that may not come for minutes would stop a healthy
//! system. So `sofar-can` is registered as broadcast-only (`link_timeout` None, no `CAN_INVERTER_MISSING` from
//! silence). [`CanInverter::last_heard`] still reports the last inquiry (addressed to any battery), so a user whose
//! inverter does poll can set `limits.inverter_timeout_s`: the supervisor then raises `CAN_INVERTER_MISSING` and
//! gives 0 A when the inquiries stop for that long, and recovers when they return.
//!
//! # What DBE sends where [BE] differs
//! - Limits, voltages, SOC and temperature come from the supervisor's view: `0x351` carries the supervisor's max
//!   charge / min discharge voltage ([BE]: the design voltages).
//! - `0x30F` follows the limits: the discharge bit is set only when the supervisor allows a discharge current above
//!   0 A and its data is valid, the charge bit likewise ([BE] derives them from the SOC alone: charge only at ≤ 1 %,
//!   discharge only at ≥ 100 %). With the data invalid both bits are clear and both currents 0 A. DBE sends `0x30F`
//!   every second even with both bits clear: [BE] skips it when it is all zeros, which would leave the inverter with
//!   the last "allowed" it heard.
//! - The SOC is the supervisor's reported SOC, 100 % included. [BE] caps it at 99 % (an attempt to lift the cap,
//!   45342706, was reverted without a stated reason, e7a10932); a misreported SOC is not something DBE does unasked,
//!   and the stop at full is carried by the 0 A limit and the cleared charge bit.
//! - `0x359` reports 1 pack in parallel and the pack's own cell count (saturated at 255); [BE] hard-codes 2 and 79.
//!   One is the truth for one DBE, and an inverter that multiplied limits by the pack count would get no more than
//!   it is told.
//! - `0x35E` is "DBE" ([BE]: "BATxEMU"; it was "AMASS" before, so the inverter does not check the name).
//! - `0x35F`'s capacity is the usable energy over the max charge voltage, as [BE] computes it (energy over the design
//!   maximum: the smaller, conservative Ah figure).
//! - Unknown values are sent as 0, except an unknown SOH (99 %, as the Pylon CAN module explains).

use super::word::{clamp_u16, put_le as put, signed};
use crate::can::{require_len, CanFrame, DecodeError, FrameUse};
use crate::inverter::{CanInverter, InverterView};
use crate::options::{self, DriverOptions, OptionField, OptionKind, OptionValue};
use crate::time::{Duration, Instant, Periodic};
use crate::units::{BasisPoints, DeciAmps};

/// One line for `dbe list`.
pub const SUPPORTS: &str = "Sofar HYD 5-20KTL hybrids (Sofar BMS extended protocol, 29-bit, 500 kbit/s, on its own \
                            CAN port): set the inverter's battery type to GENERAL and its battery address to \
                            [inverter.sofar_can] battery_id (0-15, one id per parallel battery)";

/// The period of every cyclic frame ([BE]'s `INTERVAL_1_S`).
pub const CYCLE_INTERVAL: Duration = Duration::from_secs(1);

/// CAN identifiers (all extended). The battery's are bases: [`with_battery_id`] adds the offset.
pub mod id {
    pub const LIMITS: u32 = 0x351;
    pub const SOC_SOH: u32 = 0x355;
    pub const PACK: u32 = 0x356;
    pub const CONFIG: u32 = 0x359;
    pub const ALARMS: u32 = 0x35A;
    pub const NAME: u32 = 0x35E;
    pub const TYPE_CAPACITY: u32 = 0x35F;
    pub const ENABLE: u32 = 0x30F;
    /// Real-time inquiries from the inverter (no battery offset).
    pub const INQUIRY: u32 = 0x605;
    /// History/fault inquiries from the inverter (no battery offset).
    pub const HISTORY_INQUIRY: u32 = 0x705;
    /// Each 0x605 inquiry code with the base id of its answer ([BE]).
    pub const INQUIRY_ANSWERS: [(u8, u32); 9] = [
        (0x00, 0x670),
        (0x01, 0x671),
        (0x02, 0x680),
        (0x03, 0x681),
        (0x0A, 0x690),
        (0x0B, 0x691),
        (0x0C, 0x6A0),
        (0x0D, 0x6B0),
        (0x0E, 0x6C0),
    ];
    /// Each 0x705 inquiry code with the base id of its answer ([BE]).
    pub const HISTORY_ANSWERS: [(u8, u32); 9] = [
        (0x00, 0x770),
        (0x01, 0x771),
        (0x02, 0x772),
        (0x03, 0x773),
        (0x04, 0x780),
        (0x05, 0x781),
        (0x06, 0x782),
        (0x07, 0x783),
        (0x08, 0x784),
    ];
}

/// The id battery `battery_id` sends `base` on: [BE]'s `base + (id << 12)`.
pub const fn with_battery_id(base: u32, battery_id: u8) -> u32 {
    base + ((battery_id as u32) << 12)
}

/// Byte ranges of every field, per message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub mod limits {
        use super::Field;
        pub const MAX_CHARGE_VOLTAGE: Field = 0..2;
        pub const CHARGE_CURRENT: Field = 2..4;
        pub const DISCHARGE_CURRENT: Field = 4..6;
        pub const MIN_DISCHARGE_VOLTAGE: Field = 6..8;
    }
    pub mod soc_soh {
        pub const SOC: usize = 0;
        pub const SOH: usize = 2;
    }
    pub mod pack {
        use super::Field;
        pub const VOLTAGE: Field = 0..2;
        pub const CURRENT: Field = 2..4;
        pub const TEMPERATURE_MAX: Field = 4..6;
    }
    pub mod config {
        pub const PACKS_IN_PARALLEL: usize = 0;
        pub const MODULES_IN_SERIES: usize = 1;
        pub const CAN_VERSION: usize = 2;
        pub const CELLS_IN_SERIES: usize = 3;
    }
    pub mod type_capacity {
        use super::Field;
        pub const BATTERY_TYPE: usize = 0;
        pub const VERSION: Field = 1..4;
        pub const CAPACITY_AH: Field = 4..6;
    }
    pub mod enable {
        pub const COMMAND: usize = 0;
        pub const FLAGS: usize = 1;
        pub const DISCHARGE_ALLOWED: u8 = 1 << 0;
        pub const CHARGE_ALLOWED: u8 = 1 << 1;
    }
    pub mod inquiry {
        pub const TARGET: usize = 0;
        pub const CODE: usize = 1;
        /// 0x605: b2 is the sub-target.
        pub const SUB_TARGET: usize = 2;
        pub const LEN: usize = 3;
    }
    pub mod history_inquiry {
        pub const RECORD: usize = 2;
        pub const SUB_TARGET: usize = 3;
        pub const LEN: usize = 4;
    }
    pub mod answer {
        pub const BATTERY_ID: usize = 0;
        pub const SUB_TARGET: usize = 1;
        pub const RECORD: usize = 2;
    }
}

/// DBE's constants where [BE]'s are hard-coded (see the module doc).
mod constant {
    pub const NAME: [u8; 8] = *b"DBE\0\0\0\0\0";
    pub const PACKS_IN_PARALLEL: u8 = 1;
    pub const MODULES_IN_SERIES: u8 = 1;
    pub const CAN_VERSION: u8 = 1;
    /// Li-ion.
    pub const BATTERY_TYPE: u8 = 0x01;
    pub const BMS_VERSION: [u8; 3] = [1, 0, 0];
}

/// An unknown SOH, in 1 %: [BE]'s datalayer default.
const UNKNOWN_SOH_PERCENT: u8 = 99;

/// Options.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SofarCanOptions {
    /// Which of the inverter's parallel batteries DBE is (0-15): the offset in every id and the address it answers.
    pub battery_id: u8,
}

impl SofarCanOptions {
    /// [BE-settings]: 16 batteries, 0-15.
    pub const MAX_BATTERY_ID: u8 = 15;
}

impl DriverOptions for SofarCanOptions {
    const FIELDS: &'static [OptionField<Self>] = &[OptionField {
        name: "battery_id",
        help: "Which battery DBE is on the Sofar's CAN bus (0-15); set the same number as the battery address on \
               the inverter. Every frame's id carries it (0x351 + id × 0x1000) and DBE answers only inquiries \
               addressed to it.",
        kind: OptionKind::Integer { min: 0, max: SofarCanOptions::MAX_BATTERY_ID as i64, unit: "" },
        get: |o| OptionValue::Integer(o.battery_id.into()),
        set: |o, v| o.battery_id = options::byte(v),
    }];
}

/// One cyclic frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Frame {
    Limits,
    SocSoh,
    Pack,
    Config,
    Name,
    TypeCapacity,
    Enable,
    Alarms,
}

/// [BE]'s order: the 1 s group, then 0x30F.
const CYCLE: [Frame; 7] =
    [Frame::Limits, Frame::SocSoh, Frame::Pack, Frame::Config, Frame::Name, Frame::TypeCapacity, Frame::Enable];

/// An answer owed to an inquiry: its base id and the identifiers echoed back.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
struct Answer {
    base: u32,
    sub_target: u8,
    record: u8,
}

/// At most one pending answer per answer id.
const ANSWERS_LEN: usize = id::INQUIRY_ANSWERS.len() + id::HISTORY_ANSWERS.len();
const FRAMES_LEN: usize = CYCLE.len() + 1;

/// The Sofar battery as the inverter sees it.
#[derive(Clone, Debug)]
pub struct SofarCan {
    options: SofarCanOptions,
    cycle: Periodic,
    frames: heapless::Deque<Frame, FRAMES_LEN>,
    answers: heapless::Deque<Answer, ANSWERS_LEN>,
    queued_at: Option<Instant>,
    last_heard: Option<Instant>,
    inquiries: u32,
}

impl SofarCan {
    pub fn new(options: SofarCanOptions) -> Self {
        // An id out of range cannot come through the options' check; clamp rather than build a foreign id.
        let options = SofarCanOptions { battery_id: options.battery_id.min(SofarCanOptions::MAX_BATTERY_ID) };
        SofarCan {
            options,
            cycle: Periodic::new(CYCLE_INTERVAL),
            frames: heapless::Deque::new(),
            answers: heapless::Deque::new(),
            queued_at: None,
            last_heard: None,
            inquiries: 0,
        }
    }

    pub fn options(&self) -> SofarCanOptions {
        self.options
    }

    /// Inquiries addressed to this battery so far (for telemetry and tests).
    pub fn inquiries(&self) -> u32 {
        self.inquiries
    }

    fn id(&self, base: u32) -> u32 {
        with_battery_id(base, self.options.battery_id)
    }

    fn note_queued(&mut self, now: Instant) {
        if self.queued_at.is_none() {
            self.queued_at = Some(now);
        }
    }

    fn enqueue(&mut self, now: Instant, frames: &[Frame]) {
        for &f in frames {
            if !self.frames.iter().any(|&q| q == f) {
                // Cannot fail: each frame at most once and FRAMES_LEN counts them all.
                let _ = self.frames.push_back(f);
            }
        }
        self.note_queued(now);
    }

    fn handle_inquiry(&mut self, now: Instant, history: bool, d: &[u8; 8]) {
        use field::{history_inquiry, inquiry};
        if d[inquiry::TARGET] != self.options.battery_id {
            return;
        }
        self.inquiries = self.inquiries.saturating_add(1);
        let (table, sub_target, record) = if history {
            (&id::HISTORY_ANSWERS, d[history_inquiry::SUB_TARGET], d[history_inquiry::RECORD])
        } else {
            (&id::INQUIRY_ANSWERS, d[inquiry::SUB_TARGET], 0)
        };
        let Some(&(_, base)) = table.iter().find(|(code, _)| *code == d[inquiry::CODE]) else {
            return;
        };
        let answer = Answer { base, sub_target, record };
        if let Some(pending) = self.answers.iter_mut().find(|a| a.base == base) {
            // One answer per id: the latest inquiry's identifiers.
            *pending = answer;
        } else {
            // Cannot fail: one entry per answer id and ANSWERS_LEN counts them all.
            let _ = self.answers.push_back(answer);
        }
        self.note_queued(now);
    }

    fn encode(&self, frame: Frame, view: &InverterView<'_>) -> CanFrame {
        let mut buf = [0u8; 8];
        let base = match frame {
            Frame::Limits => {
                use field::limits::*;
                let (charge, discharge) = limits(view);
                put(&mut buf, MAX_CHARGE_VOLTAGE, view.max_charge_voltage().0);
                put(&mut buf, CHARGE_CURRENT, charge);
                put(&mut buf, DISCHARGE_CURRENT, discharge);
                put(&mut buf, MIN_DISCHARGE_VOLTAGE, view.min_discharge_voltage().0);
                id::LIMITS
            }
            Frame::SocSoh => {
                use field::soc_soh::*;
                buf[SOC] = percent(view.soc().unwrap_or(BasisPoints::ZERO));
                buf[SOH] = view.soh().map_or(UNKNOWN_SOH_PERCENT, percent);
                id::SOC_SOH
            }
            Frame::Pack => {
                use field::pack::*;
                put(&mut buf, VOLTAGE, view.voltage().map_or(0, |v| v.0));
                put(&mut buf, CURRENT, signed(view.current().map_or(0, |c| c.0 as i64)));
                put(&mut buf, TEMPERATURE_MAX, view.temperature_max().map_or(0, |t| t.0) as u16);
                id::PACK
            }
            Frame::Config => {
                use field::config::*;
                buf[PACKS_IN_PARALLEL] = constant::PACKS_IN_PARALLEL;
                buf[MODULES_IN_SERIES] = constant::MODULES_IN_SERIES;
                buf[CAN_VERSION] = constant::CAN_VERSION;
                buf[CELLS_IN_SERIES] = view.cells_in_series().min(u8::MAX as u16) as u8;
                id::CONFIG
            }
            Frame::Name => {
                buf = constant::NAME;
                id::NAME
            }
            Frame::TypeCapacity => {
                use field::type_capacity::*;
                buf[BATTERY_TYPE] = constant::BATTERY_TYPE;
                buf[VERSION].copy_from_slice(&constant::BMS_VERSION);
                let max_dv = view.max_charge_voltage().0 as i64;
                let ah = match view.total_energy() {
                    // Wh / V = Wh × 10 / dV.
                    Some(wh) if max_dv > 0 => clamp_u16(wh.0 as i64 * 10 / max_dv),
                    _ => 0,
                };
                put(&mut buf, CAPACITY_AH, ah);
                id::TYPE_CAPACITY
            }
            Frame::Enable => {
                use field::enable::*;
                let (charge, discharge) = limits(view);
                buf[COMMAND] = 0;
                buf[FLAGS] =
                    if discharge > 0 { DISCHARGE_ALLOWED } else { 0 } | if charge > 0 { CHARGE_ALLOWED } else { 0 };
                id::ENABLE
            }
            Frame::Alarms => id::ALARMS,
        };
        CanFrame::ext8(self.id(base), buf)
    }

    fn encode_answer(&self, a: Answer) -> CanFrame {
        use field::answer::*;
        let mut buf = [0u8; 8];
        buf[BATTERY_ID] = self.options.battery_id;
        buf[SUB_TARGET] = a.sub_target;
        buf[RECORD] = a.record;
        CanFrame::ext8(self.id(a.base), buf)
    }
}

/// A basis-point value in whole percent, 0..=100.
fn percent(bp: BasisPoints) -> u8 {
    (bp.clamped().0 / 100) as u8
}

/// The (charge, discharge) limits in 0.1 A as sent: 0 when the view's data is not valid, never negative.
fn limits(view: &InverterView<'_>) -> (u16, u16) {
    if !view.data_valid() {
        return (0, 0);
    }
    let mag = |l: DeciAmps| clamp_u16(l.0 as i64);
    (mag(view.charge_current_limit()), mag(view.discharge_current_limit()))
}

impl CanInverter for SofarCan {
    fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<FrameUse, DecodeError> {
        if frame.is_remote() {
            return Ok(FrameUse::Ignored);
        }
        let history = match frame.raw_id() {
            id::INQUIRY => false,
            id::HISTORY_INQUIRY => true,
            _ => return Ok(FrameUse::Ignored),
        };
        let len = if history { field::history_inquiry::LEN } else { field::inquiry::LEN };
        let d = *require_len(frame, len)?;
        // Any inquiry shows the inverter alive, whichever battery it addresses.
        self.last_heard = Some(now);
        self.handle_inquiry(now, history, &d);
        Ok(FrameUse::Used)
    }

    fn poll_transmit(&mut self, now: Instant, view: &InverterView<'_>) -> Option<CanFrame> {
        if !self.cycle.is_running() {
            // The schedule starts on the first call: the whole set at once, and 0x35A its only time.
            self.cycle.start_at(now);
            self.enqueue(now, &[Frame::Alarms]);
        }
        if self.cycle.poll(now) {
            self.enqueue(now, &CYCLE);
        }
        let out = if let Some(a) = self.answers.pop_front() {
            self.encode_answer(a)
        } else {
            let f = self.frames.pop_front()?;
            self.encode(f, view)
        };
        if self.answers.is_empty() && self.frames.is_empty() {
            self.queued_at = None;
        }
        Some(out)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.cycle.is_running() {
            // Due at once: the battery broadcasts from the start.
            return Some(Instant::ZERO);
        }
        crate::time::earliest(self.queued_at, self.cycle.next_at())
    }

    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }
}

#[cfg(test)]
mod tests {
    //! The view is made up; the expected bytes are worked out by hand from the layout in the module doc ([BE]
    //! SOFAR-CAN.{h,cpp} at HEAD), field by field, so a wrong scale or offset shows up as a wrong byte.
    use super::*;
    use crate::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use crate::supervisor::Output;
    use crate::units::{DeciCelsius, DeciVolts, MilliVolts, WattHours};

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
        m.soh = Some(Reading::new(BasisPoints(9876), T0)); // 98 %
        m.temperature_min = Some(Reading::new(DeciCelsius(-52), T0));
        m.temperature_max = Some(Reading::new(DeciCelsius(231), T0)); // 0x00E7
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(5012)),           // 50 %
            total_energy: Some(WattHours(24_000)),  // 24000 × 10 / 4000 = 60 Ah = 0x003C
            charge_current_limit: DeciAmps(250),    // 0x00FA
            discharge_current_limit: DeciAmps(300), // 0x012C
            max_charge_voltage: DeciVolts(4000),    // 0x0FA0
            min_discharge_voltage: DeciVolts(3000), // 0x0BB8
            data_valid: true,
            ..Output::default()
        }
    }

    fn drain(s: &mut SofarCan, now: Instant, m: &BatteryModel, out: &Output) -> Vec<CanFrame> {
        let view = InverterView::new(m, out);
        core::iter::from_fn(|| s.poll_transmit(now, &view)).collect()
    }

    fn ids(frames: &[CanFrame]) -> Vec<u32> {
        frames.iter().map(|f| f.extended_id().expect("29-bit")).collect()
    }

    fn find(frames: &[CanFrame], id: u32) -> [u8; 8] {
        *frames.iter().find(|f| f.extended_id() == Some(id)).expect("frame present").data8()
    }

    fn ext(id: u32, data: &[u8]) -> CanFrame {
        CanFrame::extended(id, data).unwrap()
    }

    #[test]
    fn cyclic_set_bytes() {
        let mut s = SofarCan::new(SofarCanOptions::default());
        assert_eq!(s.poll_timeout(), Some(T0), "broadcasts from the start");
        let f = drain(&mut s, T0, &model(), &output());
        assert_eq!(ids(&f), [0x35A, 0x351, 0x355, 0x356, 0x359, 0x35E, 0x35F, 0x30F]);
        assert_eq!(find(&f, 0x35A), [0; 8], "BE's alarm frame, never filled");
        // 400.0 V, charge 25.0 A, discharge 30.0 A, 300.0 V
        assert_eq!(find(&f, 0x351), [0xA0, 0x0F, 0xFA, 0x00, 0x2C, 0x01, 0xB8, 0x0B]);
        // SOC 50 %, SOH 98 %
        assert_eq!(find(&f, 0x355), [50, 0, 98, 0, 0, 0, 0, 0]);
        // 398.4 V, -12.5 A, 23.1 °C
        assert_eq!(find(&f, 0x356), [0x90, 0x0F, 0x83, 0xFF, 0xE7, 0x00, 0, 0]);
        // 1 pack, 1 module, CAN version 1, 96 cells
        assert_eq!(find(&f, 0x359), [1, 1, 1, 96, 0, 0, 0, 0]);
        assert_eq!(&find(&f, 0x35E), b"DBE\0\0\0\0\0");
        // Li-ion, BMS 1.0.0, 60 Ah
        assert_eq!(find(&f, 0x35F), [0x01, 1, 0, 0, 0x3C, 0x00, 0, 0]);
        // Normal mode, discharge (bit 0) and charge (bit 1) allowed
        assert_eq!(find(&f, 0x30F), [0x00, 0x03, 0, 0, 0, 0, 0, 0]);
        assert!(f.iter().all(|f| f.len() == 8));
    }

    #[test]
    fn the_set_repeats_every_second_and_0x35a_goes_out_once() {
        let (m, out) = (model(), output());
        let mut s = SofarCan::new(SofarCanOptions::default());
        let mut sent = Vec::new();
        for ms in (0..=3000).step_by(100) {
            let now = Instant::from_millis(ms);
            for f in drain(&mut s, now, &m, &out) {
                sent.push((ms, f.extended_id().unwrap()));
            }
            assert!(s.poll_timeout().is_some_and(|t| t > now), "no stale deadline at {ms}");
        }
        let at = |id: u32| sent.iter().filter(|(_, i)| *i == id).map(|(t, _)| *t).collect::<Vec<_>>();
        assert_eq!(at(0x351), [0, 1000, 2000, 3000]);
        assert_eq!(at(0x30F), [0, 1000, 2000, 3000]);
        assert_eq!(at(0x35A), [0]);
        assert_eq!(s.poll_timeout(), Some(Instant::from_millis(4000)));
    }

    #[test]
    fn the_battery_id_moves_every_id() {
        let (m, out) = (model(), output());
        let mut s = SofarCan::new(SofarCanOptions { battery_id: 15 });
        let f = drain(&mut s, T0, &m, &out);
        assert_eq!(ids(&f), [0xF35A, 0xF351, 0xF355, 0xF356, 0xF359, 0xF35E, 0xF35F, 0xF30F]);
        let mut s = SofarCan::new(SofarCanOptions { battery_id: 1 });
        assert_eq!(ids(&drain(&mut s, T0, &m, &out))[1], 0x1351);
        // Answers too.
        s.handle_frame(T0, &ext(0x605, &[1, 0x02, 0, 0, 0, 0, 0, 0])).unwrap();
        assert_eq!(ids(&drain(&mut s, T0, &m, &out)), [0x1680]);
    }

    #[test]
    fn zero_limits_clear_their_enable_bits_and_invalid_data_clears_both() {
        let m = model();
        let mut s = SofarCan::new(SofarCanOptions::default());
        let frames = |s: &mut SofarCan, out: Output| {
            s.frames.clear();
            s.cycle = Periodic::new(CYCLE_INTERVAL);
            let f = drain(s, T0, &m, &out);
            (find(&f, 0x351), find(&f, 0x30F)[1])
        };
        let (l, flags) = frames(&mut s, Output { charge_current_limit: DeciAmps(0), ..output() });
        assert_eq!((l[2..6].to_vec(), flags), (vec![0, 0, 0x2C, 0x01], 0x01), "only discharging allowed");
        let (l, flags) = frames(&mut s, Output { discharge_current_limit: DeciAmps(0), ..output() });
        assert_eq!((l[2..6].to_vec(), flags), (vec![0xFA, 0x00, 0, 0], 0x02), "only charging allowed");
        let (l, flags) = frames(&mut s, Output { data_valid: false, ..output() });
        assert_eq!((l[2..6].to_vec(), flags), (vec![0, 0, 0, 0], 0x00), "not ready: both forbidden");
        let (l, flags) = frames(&mut s, Output { charge_current_limit: DeciAmps(-3), ..output() });
        assert_eq!((l[2..4].to_vec(), flags), (vec![0, 0], 0x01), "a negative limit is 0");
    }

    #[test]
    fn unknown_values_and_a_full_pack() {
        let m = BatteryModel::new(model().design);
        let mut s = SofarCan::new(SofarCanOptions::default());
        let out = Output { soc: Some(BasisPoints(10_000)), total_energy: None, ..output() };
        let f = drain(&mut s, T0, &m, &out);
        assert_eq!(find(&f, 0x355)[..3], [100, 0, 99], "100 % SOC as told, unknown SOH 99 %");
        assert_eq!(find(&f, 0x356), [0; 8], "unknown voltage, current and temperature");
        assert_eq!(find(&f, 0x35F)[4..6], [0, 0], "unknown capacity");
    }

    #[test]
    fn inquiries_are_answered_with_their_identifiers() {
        let (m, out) = (model(), output());
        let mut s = SofarCan::new(SofarCanOptions::default());
        drain(&mut s, T0, &m, &out);
        let t = Instant::from_millis(300);
        // Every 0x605 code in BE's table, sub-target 7.
        for (code, _) in id::INQUIRY_ANSWERS {
            assert_eq!(s.handle_frame(t, &ext(0x605, &[0, code, 7, 0, 0, 0, 0, 0])), Ok(FrameUse::Used));
        }
        let f = drain(&mut s, t, &m, &out);
        assert_eq!(ids(&f), [0x670, 0x671, 0x680, 0x681, 0x690, 0x691, 0x6A0, 0x6B0, 0x6C0]);
        assert!(f.iter().all(|f| f.data8() == &[0, 7, 0, 0, 0, 0, 0, 0]), "{f:?}");
        // Every 0x705 code: record 5, sub-target 9.
        for (code, _) in id::HISTORY_ANSWERS {
            s.handle_frame(t, &ext(0x705, &[0, code, 5, 9, 0, 0, 0, 0])).unwrap();
        }
        let f = drain(&mut s, t, &m, &out);
        assert_eq!(ids(&f), [0x770, 0x771, 0x772, 0x773, 0x780, 0x781, 0x782, 0x783, 0x784]);
        assert!(f.iter().all(|f| f.data8() == &[0, 9, 5, 0, 0, 0, 0, 0]), "{f:?}");
        assert_eq!(s.inquiries(), 18);
        assert_eq!(s.last_heard(), Some(t));
        // Answers go before a cyclic set that is due at the same moment.
        let t = Instant::from_millis(1000);
        s.handle_frame(t, &CanFrame::standard(0x605, &[0, 0x0A, 0]).unwrap()).unwrap();
        let f = drain(&mut s, t, &m, &out);
        assert_eq!(ids(&f)[..2], [0x690, 0x351], "an 11-bit inquiry is taken too");
    }

    #[test]
    fn inquiries_for_others_unknown_codes_and_short_frames() {
        let (m, out) = (model(), output());
        let mut s = SofarCan::new(SofarCanOptions { battery_id: 2 });
        drain(&mut s, T0, &m, &out);
        let t = Instant::from_millis(10);
        // Addressed to battery 0: heard, not answered.
        assert_eq!(s.handle_frame(t, &ext(0x605, &[0, 0x00, 0])), Ok(FrameUse::Used));
        assert_eq!(s.last_heard(), Some(t));
        // Unknown codes: not answered.
        s.handle_frame(t, &ext(0x605, &[2, 0x04, 0])).unwrap();
        s.handle_frame(t, &ext(0x705, &[2, 0x09, 0, 0])).unwrap();
        assert!(drain(&mut s, t, &m, &out).is_empty());
        assert_eq!(s.inquiries(), 2);
        // The same inquiry twice before it is answered: one answer, with the latest identifiers.
        s.handle_frame(t, &ext(0x705, &[2, 0x00, 1, 1])).unwrap();
        s.handle_frame(t, &ext(0x705, &[2, 0x00, 3, 4])).unwrap();
        let f = drain(&mut s, t, &m, &out);
        assert_eq!(ids(&f), [0x2770]);
        assert_eq!(f[0].data8(), &[2, 4, 3, 0, 0, 0, 0, 0]);
        // Too short: an error, nothing heard.
        let t2 = Instant::from_millis(20);
        assert_eq!(
            s.handle_frame(t2, &ext(0x605, &[2, 0])),
            Err(DecodeError::WrongLength { id: 0x605, expected: 3, got: 2 })
        );
        assert_eq!(
            s.handle_frame(t2, &ext(0x705, &[2, 0, 0])),
            Err(DecodeError::WrongLength { id: 0x705, expected: 4, got: 3 })
        );
        assert_eq!(s.last_heard(), Some(t));
        // Other ids (its own broadcasts echoed, the offset inquiry ids) and remote frames are ignored.
        assert_eq!(s.handle_frame(t2, &ext(0x2351, &[0; 8])), Ok(FrameUse::Ignored));
        assert_eq!(s.handle_frame(t2, &ext(0x2605, &[2, 0, 0])), Ok(FrameUse::Ignored));
        let remote = CanFrame::remote(embedded_can::ExtendedId::new(0x605).unwrap(), 3).unwrap();
        assert_eq!(s.handle_frame(t2, &remote), Ok(FrameUse::Ignored));
        assert_eq!(s.last_heard(), Some(t));
    }

    #[test]
    fn the_battery_id_option_is_range_checked() {
        let mut o = SofarCanOptions::default();
        assert_eq!(options::Options::get(&o, "battery_id"), Some(OptionValue::Integer(0)));
        assert!(options::Options::set(&mut o, "battery_id", OptionValue::Integer(16)).is_err());
        assert!(options::Options::set(&mut o, "battery_id", OptionValue::Integer(-1)).is_err());
        options::Options::set(&mut o, "battery_id", OptionValue::Integer(15)).unwrap();
        assert_eq!(o.battery_id, 15);
        // Built directly with an id out of range, the driver stays on battery 15's ids.
        assert_eq!(SofarCan::new(SofarCanOptions { battery_id: 200 }).options().battery_id, 15);
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_frame_is_handled_without_panic(
            raw in prop_oneof![Just(0x605u32), Just(0x705u32), 0x300u32..0x800, 0u32..0x2000_0000],
            extended in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..=8),
            battery_id in 0u8..=15,
            steps in proptest::collection::vec(0u64..3000, 1..8),
        ) {
            let mut s = SofarCan::new(SofarCanOptions { battery_id });
            let frame = if extended { CanFrame::extended(raw, &data) } else { CanFrame::standard((raw & 0x7FF) as u16, &data) };
            let frame = frame.unwrap();
            let (m, out) = (model(), output());
            let view = InverterView::new(&m, &out);
            let mut now = T0;
            for step in steps {
                now += Duration::from_millis(step);
                let _ = s.handle_frame(now, &frame);
                let mut n = 0;
                while let Some(f) = s.poll_transmit(now, &view) {
                    n += 1;
                    prop_assert!(n <= FRAMES_LEN + ANSWERS_LEN);
                    // Every frame carries this battery's offset, and nothing else above it.
                    prop_assert_eq!(f.extended_id().map(|id| id >> 12), Some(battery_id as u32));
                }
                prop_assert!(s.poll_timeout().is_some_and(|t| t > now));
            }
        }
    }
}
