//! A simulated Fronius Gen24 polling a BYD Battery-Box over Modbus RTU: reads holding registers 300..=323
//! (live values) and 200..=212 (capacity and voltage window) of slave 21, and writes its heartbeat to register
//! 401 once a minute, alternating 0x00FF / 0xFF00.
//!
//! Written independently of `dbe_core::inverter::modbus` and `byd_modbus`: its own CRC-16/MODBUS (table-driven,
//! not the bitwise loop of the core) and its own register decoding, from the register list in Battery-Emulator's
//! `Software/src/inverter/BYD-MODBUS.{h,cpp}` (commit 62532e9, facts only): 303 SOC in 0.01 %, 304/305 capacity
//! and remaining Wh, 306/307 max discharge/charge power in W, 308/310 voltage in 0.1 V (308 only while active),
//! 309/311 battery power in W with charging *negative* (309 only while active), 312/313 min/max temperature in
//! 0.1 °C, 316/317 and 320/321 total charged and discharged Wh (high word first), 322 device temperature in
//! 0.1 °C, 323 SOH in 0.01 %, 302 status bits (bit 7 normal, bit 0 charging, bit 1 discharging: BE's
//! `BYD_MODE_IDLE/CHARGING/DISCHARGING` = 128/129/130), 205/206 max/min voltage in 0.1 V.
//!
//! The map has no current register: `Told::current` is `None`, and the current limits are the power limits
//! divided by the voltage (rounded toward zero).

use dbe_core::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, WattHours, Watts};
use dbe_core::{Duration, Instant};

/// Register 302 as the inverter reads it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    Idle,
    Charging,
    Discharging,
    /// Anything but 128/129/130.
    Other(u16),
}

impl Flow {
    fn from_register(r: u16) -> Flow {
        const NORMAL: u16 = 0x80;
        const CHARGING: u16 = 0x01;
        const DISCHARGING: u16 = 0x02;
        match r {
            NORMAL => Flow::Idle,
            r if r == NORMAL | CHARGING => Flow::Charging,
            r if r == NORMAL | DISCHARGING => Flow::Discharging,
            r => Flow::Other(r),
        }
    }
}

/// What the inverter was told, decoded by this simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Told {
    pub voltage: DeciVolts,
    /// Not carried by the BYD map.
    pub current: Option<DeciAmps>,
    pub soc: BasisPoints,
    /// Derived from the power limits at `voltage`.
    pub charge_limit: DeciAmps,
    pub discharge_limit: DeciAmps,
    pub charge_power_limit: Watts,
    pub discharge_power_limit: Watts,
    pub max_voltage: DeciVolts,
    pub min_voltage: DeciVolts,
    pub total_energy: WattHours,
    pub remaining_energy: WattHours,
    pub temperature_min: DeciCelsius,
    pub temperature_max: DeciCelsius,
    /// Register 300 (BE's system status: 3 active, 4 fault).
    pub status: u16,
    pub flow: Flow,
    /// 311 in DBE's sign (+ = charging).
    pub power: Watts,
    /// 309 (after the contactors; 0 unless active) in DBE's sign.
    pub power_active: Watts,
    pub charged_energy: WattHours,
    pub discharged_energy: WattHours,
    pub device_temperature: DeciCelsius,
    pub soh: BasisPoints,
    pub at: Instant,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    Waiting,
    Running,
    /// A request went unanswered (or was answered with an exception) within the answer timeout.
    Faulted,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Step {
    Live,
    Window,
    Heartbeat,
}

#[derive(Clone, Debug)]
pub struct ModbusMaster {
    slave: u8,
    pub poll_interval: Duration,
    pub answer_timeout: Duration,
    pub heartbeat_interval: Duration,
    step: Step,
    next_at: Instant,
    heartbeat_at: Instant,
    heartbeat_value: u16,
    awaiting: Option<(Step, Instant, usize)>,
    rx: Vec<u8>,
    live: Option<Vec<u16>>,
    told: Option<Told>,
    state: State,
    silent: bool,
}

fn crc_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    for (i, slot) in t.iter_mut().enumerate() {
        let mut c = i as u16;
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xA001 } else { c >> 1 };
        }
        *slot = c;
    }
    t
}

fn crc(data: &[u8]) -> u16 {
    let table = crc_table();
    data.iter().fold(0xFFFF, |c: u16, &b| (c >> 8) ^ table[((c ^ b as u16) & 0xFF) as usize])
}

impl ModbusMaster {
    pub fn new(slave: u8) -> Self {
        ModbusMaster {
            slave,
            poll_interval: Duration::from_millis(1000),
            answer_timeout: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(60),
            step: Step::Live,
            next_at: Instant::ZERO,
            heartbeat_at: Instant::ZERO,
            heartbeat_value: 0x00FF,
            awaiting: None,
            rx: Vec::new(),
            live: None,
            told: None,
            state: State::Waiting,
            silent: false,
        }
    }

    pub fn told(&self) -> Option<&Told> {
        self.told.as_ref()
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.awaiting {
            Some((_, deadline, _)) => Some(deadline),
            None if self.silent => None,
            None => Some(self.next_at),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, deadline, _)) = self.awaiting {
            if now >= deadline {
                self.fault(now);
            }
        }
    }

    fn fault(&mut self, now: Instant) {
        self.awaiting = None;
        self.rx.clear();
        self.state = State::Faulted;
        self.step = Step::Live;
        self.next_at = now + self.poll_interval;
    }

    /// Writes the next request into `buf` (0: nothing to send now, or `buf` shorter than 16 bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        self.handle_timeout(now);
        if self.silent || self.awaiting.is_some() || now < self.next_at || buf.len() < 16 {
            return 0;
        }
        let (fc, address, arg, expect) = match self.step {
            Step::Live => (0x03u8, 300u16, 24u16, 5 + 48),
            Step::Window => (0x03, 200, 13, 5 + 26),
            Step::Heartbeat => (0x06, 401, self.heartbeat_value, 8),
        };
        let mut frame = vec![self.slave, fc];
        frame.extend_from_slice(&address.to_be_bytes());
        frame.extend_from_slice(&arg.to_be_bytes());
        let c = crc(&frame);
        frame.extend_from_slice(&c.to_le_bytes());
        buf[..frame.len()].copy_from_slice(&frame);
        self.rx.clear();
        self.awaiting = Some((self.step, now + self.answer_timeout, expect));
        frame.len()
    }

    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        let Some((step, _, expect)) = self.awaiting else { return };
        self.rx.extend_from_slice(bytes);
        // An exception reply is 5 bytes: slave, function | 0x80, code, CRC.
        if self.rx.len() >= 5 && self.rx[1] & 0x80 != 0 {
            self.fault(now);
            return;
        }
        if self.rx.len() < expect {
            return;
        }
        let frame = std::mem::take(&mut self.rx);
        let (body, tail) = frame.split_at(expect - 2);
        if crc(body).to_le_bytes() != [tail[0], tail[1]] || body[0] != self.slave {
            self.fault(now);
            return;
        }
        self.awaiting = None;
        let regs: Vec<u16> =
            body.get(3..).unwrap_or(&[]).chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
        match step {
            Step::Live => {
                self.live = Some(regs);
                self.step = Step::Window;
                self.next_at = now;
            }
            Step::Window => {
                if let Some(live) = self.live.take() {
                    self.decode(now, &live, &regs);
                }
                if now >= self.heartbeat_at {
                    self.step = Step::Heartbeat;
                    self.next_at = now;
                } else {
                    self.step = Step::Live;
                    self.next_at = now + self.poll_interval;
                }
            }
            Step::Heartbeat => {
                self.heartbeat_value = if self.heartbeat_value == 0x00FF { 0xFF00 } else { 0x00FF };
                self.heartbeat_at = now + self.heartbeat_interval;
                self.step = Step::Live;
                self.next_at = now + self.poll_interval;
            }
        }
    }

    /// `live` holds 300..=323, `window` 200..=212.
    fn decode(&mut self, now: Instant, live: &[u16], window: &[u16]) {
        let r = |i: usize| live.get(i).copied().unwrap_or(0);
        let w = |i: usize| window.get(i).copied().unwrap_or(0);
        let voltage = DeciVolts(r(10));
        let amps = |watts: u16| {
            if voltage.0 == 0 {
                DeciAmps(0)
            } else {
                DeciAmps((watts as i64 * 100 / voltage.0 as i64) as i32)
            }
        };
        self.told = Some(Told {
            voltage,
            current: None,
            soc: BasisPoints(r(3)),
            charge_limit: amps(r(7)),
            discharge_limit: amps(r(6)),
            charge_power_limit: Watts(r(7) as i32),
            discharge_power_limit: Watts(r(6) as i32),
            max_voltage: DeciVolts(w(5)),
            min_voltage: DeciVolts(w(6)),
            total_energy: WattHours(r(4) as u32),
            remaining_energy: WattHours(r(5) as u32),
            temperature_min: DeciCelsius(r(12) as i16),
            temperature_max: DeciCelsius(r(13) as i16),
            status: r(0),
            flow: Flow::from_register(r(2)),
            power: Watts(-(r(11) as i16 as i32)),
            power_active: Watts(-(r(9) as i16 as i32)),
            charged_energy: WattHours((r(16) as u32) << 16 | r(17) as u32),
            discharged_energy: WattHours((r(20) as u32) << 16 | r(21) as u32),
            device_temperature: DeciCelsius(r(22) as i16),
            soh: BasisPoints(r(23)),
            at: now,
        });
        self.state = State::Running;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::energy::EnergyCounters;
    use dbe_core::inverter::byd_modbus::{BydModbus, BydModbusOptions};
    use dbe_core::inverter::{InverterView, SerialInverter};
    use dbe_core::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use dbe_core::supervisor::Output;
    use dbe_core::time::earliest;
    use dbe_core::units::*;

    fn model() -> BatteryModel {
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Nmc,
            cells: 96,
            max_pack_voltage: DeciVolts(4032),
            min_pack_voltage: DeciVolts(2600),
            max_cell_voltage: MilliVolts(4200),
            min_cell_voltage: MilliVolts(2700),
            max_cell_deviation: MilliVolts(500),
        });
        m.pack_voltage = Some(Reading::new(DeciVolts(3702), Instant::ZERO));
        m.current = Some(Reading::new(DeciAmps(84), Instant::ZERO));
        m.soh = Some(Reading::new(BasisPoints(9100), Instant::ZERO));
        m.temperature_min = Some(Reading::new(DeciCelsius(-31), Instant::ZERO));
        m.temperature_max = Some(Reading::new(DeciCelsius(287), Instant::ZERO));
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(6789)),
            total_energy: Some(WattHours(38_000)),
            remaining_energy: Some(WattHours(25_798)),
            charge_current_limit: DeciAmps(250),
            discharge_current_limit: DeciAmps(400),
            charge_power_limit: Watts(9255),
            discharge_power_limit: Watts(14_808),
            max_charge_voltage: DeciVolts(4000),
            min_discharge_voltage: DeciVolts(2900),
            data_valid: true,
            ..Output::default()
        }
    }

    fn run(battery: &mut BydModbus, master: &mut ModbusMaster, view: &InverterView<'_>, until: Instant) {
        let mut now = Instant::ZERO;
        let mut buf = vec![0u8; 256];
        while now <= until {
            let n = master.poll_transmit(now, &mut buf);
            battery.handle_bytes(now, &buf[..n]);
            let n = battery.poll_transmit(now, view, &mut buf).unwrap();
            master.handle_bytes(now, &buf[..n]);
            master.handle_timeout(now);
            now = match earliest(master.poll_timeout(), battery.poll_timeout()) {
                Some(t) if t > now => t,
                _ => now + Duration::from_millis(1),
            };
        }
    }

    #[test]
    fn crc_matches_the_spec_example() {
        assert_eq!(crc(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]), 0x8776);
    }

    #[test]
    fn master_decodes_the_view_within_one_lsb() {
        let (m, o) = (model(), output());
        let counters = EnergyCounters::restored(WattHours(100_000), WattHours(65_537));
        let view = InverterView::new(&m, &o).with_energy(&counters);
        let mut battery = BydModbus::new(BydModbusOptions::default());
        let mut master = ModbusMaster::new(21);
        run(&mut battery, &mut master, &view, Instant::from_millis(65_000));
        assert_eq!(master.state(), State::Running);
        let t = master.told().unwrap();
        assert_eq!(t.voltage, DeciVolts(3702));
        assert_eq!(t.soc, BasisPoints(6789));
        assert_eq!((t.charge_power_limit, t.discharge_power_limit), (Watts(9255), Watts(14_808)));
        assert!((t.charge_limit.0 - 250).abs() <= 1, "{:?}", t.charge_limit);
        assert!((t.discharge_limit.0 - 400).abs() <= 1, "{:?}", t.discharge_limit);
        assert_eq!((t.max_voltage, t.min_voltage), (DeciVolts(4000), DeciVolts(2900)));
        assert_eq!((t.temperature_min, t.temperature_max), (DeciCelsius(-31), DeciCelsius(287)));
        assert_eq!((t.status, t.flow), (3, Flow::Charging));
        // 370.2 V × 8.4 A = 3109 W into the pack, before and after the contactors.
        assert_eq!((t.power, t.power_active), (Watts(3109), Watts(3109)));
        assert_eq!(t.device_temperature, DeciCelsius(287));
        assert_eq!(t.soh, BasisPoints(9100));
        assert_eq!((t.charged_energy, t.discharged_energy), (WattHours(100_000), WattHours(65_537)));
        assert_eq!((t.total_energy, t.remaining_energy), (WattHours(38_000), WattHours(25_798)));
        // Two heartbeats (at 0 s and 60 s) were written and acknowledged; the battery heard the inverter.
        assert_eq!(master.heartbeat_value, 0x00FF);
        assert!(battery.last_heard().unwrap() >= Instant::from_millis(64_000));
    }

    #[test]
    fn wrong_slave_faults_the_master() {
        let (m, o) = (model(), output());
        let view = InverterView::new(&m, &o);
        let mut battery = BydModbus::new(BydModbusOptions::default());
        let mut master = ModbusMaster::new(22);
        run(&mut battery, &mut master, &view, Instant::from_millis(3000));
        assert_eq!(master.state(), State::Faulted);
        assert!(battery.last_heard().is_none());
    }
}
