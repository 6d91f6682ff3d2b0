//! A simulated 48 V inverter polling a Pylontech LV stack over RS485: sends 0x42 (analog values) and 0x92
//! (charge/discharge management) to each module in turn and keeps what it was told.
//!
//! Written independently of `dbe_core::inverter::pylon_rs485`: its own encoder and decoder, built from the
//! same public descriptions (the PyPI `pylontech` client's `PylontechEncode`/`PylontechDecode`, and the
//! captured replies in Frankkkkk/python-pylontech's tests): `~` VER ADR 46 CID2 LENGTH INFO CHKSUM `\r`, all
//! ASCII hex; CHKSUM = two's complement of the byte sum, LCHKSUM = two's complement of LENID's nibble sum.
//! Request INFO is the module address (as the client sends it, lower-case hex of "address, index+1").
//!
//! The stack is treated as parallel modules: voltage from the first module, currents, limits and capacities
//! summed, SOC = remaining / total.

use dbe_core::units::{BasisPoints, DeciAmps, DeciCelsius, DeciVolts, MilliVolts};
use dbe_core::{Duration, Instant};

/// What the inverter was told, decoded by this simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Told {
    pub voltage: DeciVolts,
    /// Positive = charging.
    pub current: DeciAmps,
    pub soc: BasisPoints,
    pub charge_limit: DeciAmps,
    /// Magnitude (the wire carries it negative).
    pub discharge_limit: DeciAmps,
    pub charge_voltage: DeciVolts,
    pub discharge_voltage: DeciVolts,
    pub charge_enabled: bool,
    pub discharge_enabled: bool,
    pub cells: Vec<MilliVolts>,
    pub temperatures: Vec<DeciCelsius>,
    /// Remaining and total capacity in mAh, summed over modules.
    pub remaining_mah: u32,
    pub total_mah: u32,
    pub at: Instant,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// No complete answer yet.
    Waiting,
    /// Answers arrive.
    Running,
    /// A request went unanswered within the answer timeout (cleared by the next complete round).
    Faulted,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Step {
    Analog,
    Management,
}

#[derive(Clone, Debug, Default)]
struct Round {
    voltage_mv: Option<u16>,
    current_da: i32,
    cells: Vec<MilliVolts>,
    temperatures: Vec<DeciCelsius>,
    remaining_mah: u32,
    total_mah: u32,
    charge_da: i32,
    discharge_da: i32,
    charge_mv: u16,
    discharge_mv: u16,
    charge_enabled: bool,
    discharge_enabled: bool,
}

#[derive(Clone, Debug)]
pub struct PylonRs485Master {
    address: u8,
    modules: u8,
    pub poll_interval: Duration,
    pub answer_timeout: Duration,
    module: u8,
    step: Step,
    next_at: Instant,
    awaiting: Option<(u8, Instant)>,
    rx: Vec<u8>,
    round: Round,
    told: Option<Told>,
    state: State,
    silent: bool,
}

fn checksum(ascii: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for &b in ascii {
        sum += b as u32;
    }
    ((!sum).wrapping_add(1) & 0xFFFF) as u16
}

fn hex(text: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

impl PylonRs485Master {
    /// Polls `modules` modules from `address` (2 for a Pylontech stack), once per second.
    pub fn new(address: u8, modules: u8) -> Self {
        PylonRs485Master {
            address,
            modules: modules.max(1),
            poll_interval: Duration::from_millis(1000),
            answer_timeout: Duration::from_millis(500),
            module: 0,
            step: Step::Analog,
            next_at: Instant::ZERO,
            awaiting: None,
            rx: Vec::new(),
            round: Round::default(),
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

    /// A silent master stops polling (an inverter switched off or unplugged).
    pub fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.awaiting {
            Some((_, deadline)) => Some(deadline),
            None if self.silent => None,
            None => Some(self.next_at),
        }
    }

    /// Notices an unanswered request.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, deadline)) = self.awaiting {
            if now >= deadline {
                self.awaiting = None;
                self.state = State::Faulted;
                self.module = 0;
                self.step = Step::Analog;
                self.round = Round::default();
                self.next_at = now + self.poll_interval;
            }
        }
    }

    /// Writes the next request into `buf` (0: nothing to send now, or `buf` shorter than 32 bytes).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        self.handle_timeout(now);
        if self.silent || self.awaiting.is_some() || now < self.next_at || buf.len() < 32 {
            return 0;
        }
        let adr = self.address + self.module;
        let cid2 = match self.step {
            Step::Analog => 0x42,
            Step::Management => 0x92,
        };
        let info = format!("{:02x}{:02x}", adr, self.module + 1);
        let lenid = info.len() as u16;
        let nibbles = (lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF);
        let lchk = ((!nibbles) + 1) & 0xF;
        let body = format!("20{adr:02X}46{cid2:02X}{:04X}{info}", (lchk << 12) | lenid);
        let frame = format!("~{body}{:04X}\r", checksum(body.as_bytes()));
        buf[..frame.len()].copy_from_slice(frame.as_bytes());
        self.awaiting = Some((cid2, now + self.answer_timeout));
        frame.len()
    }

    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        for &b in bytes {
            if b == b'~' {
                self.rx.clear();
            }
            if self.rx.first() == Some(&b'~') || b == b'~' {
                self.rx.push(b);
            }
            if self.rx.len() > 8192 {
                self.rx.clear();
            }
            if b == b'\r' && !self.rx.is_empty() {
                let frame = std::mem::take(&mut self.rx);
                self.handle_reply(now, &frame);
            }
        }
    }

    fn handle_reply(&mut self, now: Instant, frame: &[u8]) {
        let Some((cid2, _)) = self.awaiting else { return };
        let Some(info) = Self::check(frame, self.address + self.module) else { return };
        let ok = match cid2 {
            0x42 => self.take_analog(&info),
            _ => self.take_management(&info),
        };
        if ok.is_none() {
            return;
        }
        self.awaiting = None;
        match self.step {
            Step::Analog => self.step = Step::Management,
            Step::Management => {
                self.step = Step::Analog;
                self.module += 1;
                if self.module == self.modules {
                    self.module = 0;
                    self.finish_round(now);
                }
            }
        }
    }

    /// INFO bytes of a well-formed, normal (RTN 0) reply from `adr`.
    fn check(frame: &[u8], adr: u8) -> Option<Vec<u8>> {
        if frame.len() < 18 {
            return None;
        }
        let body = &frame[1..frame.len() - 5];
        let sum = hex(&frame[frame.len() - 5..frame.len() - 1])? as u16;
        if checksum(body) != sum || hex(&body[2..4])? as u8 != adr || hex(&body[6..8])? != 0 {
            return None;
        }
        let lenid = (hex(&body[8..12])? & 0x0FFF) as usize;
        let info = body.get(12..)?;
        if info.len() != lenid || !lenid.is_multiple_of(2) {
            return None;
        }
        (0..lenid / 2).map(|i| hex(&info[2 * i..2 * i + 2]).map(|v| v as u8)).collect()
    }

    fn take_analog(&mut self, info: &[u8]) -> Option<()> {
        let mut r = Reader { b: info, i: 2 }; // DATAFLAG, module address
        let cells = r.u8()?;
        for _ in 0..cells {
            self.round.cells.push(MilliVolts(r.u16()?));
        }
        let temps = r.u8()?;
        for _ in 0..temps {
            self.round.temperatures.push(DeciCelsius((r.u16()? as i32 - 2731) as i16));
        }
        self.round.current_da += r.u16()? as i16 as i32;
        let voltage = r.u16()?;
        self.round.voltage_mv.get_or_insert(voltage);
        let mut remaining = r.u16()? as u32;
        let user = r.u8()?;
        let mut total = r.u16()? as u32;
        let _cycles = r.u16()?;
        if user == 4 {
            remaining = r.u24()?;
            total = r.u24()?;
        }
        self.round.remaining_mah += remaining;
        self.round.total_mah += total;
        Some(())
    }

    fn take_management(&mut self, info: &[u8]) -> Option<()> {
        if info.len() != 10 {
            return None;
        }
        let mut r = Reader { b: info, i: 1 };
        let (cv, dv) = (r.u16()?, r.u16()?);
        let (cc, dc) = (r.u16()? as i16 as i32, r.u16()? as i16 as i32);
        let status = r.u8()?;
        let round = &mut self.round;
        round.charge_mv = if round.charge_mv == 0 { cv } else { round.charge_mv.min(cv) };
        round.discharge_mv = round.discharge_mv.max(dv);
        round.charge_da += cc;
        round.discharge_da += dc.abs();
        let first = self.module == 0;
        round.charge_enabled = status & 0x80 != 0 && (first || round.charge_enabled);
        round.discharge_enabled = status & 0x40 != 0 && (first || round.discharge_enabled);
        Some(())
    }

    fn finish_round(&mut self, now: Instant) {
        let r = std::mem::take(&mut self.round);
        let soc = if r.total_mah > 0 { (r.remaining_mah as u64 * 10_000 / r.total_mah as u64) as u16 } else { 0 };
        let dv = |mv: u16| DeciVolts(((mv as u32 + 50) / 100) as u16);
        self.told = Some(Told {
            voltage: dv(r.voltage_mv.unwrap_or(0)),
            current: DeciAmps(r.current_da),
            soc: BasisPoints(soc),
            charge_limit: DeciAmps(r.charge_da),
            discharge_limit: DeciAmps(r.discharge_da),
            charge_voltage: dv(r.charge_mv),
            discharge_voltage: dv(r.discharge_mv),
            charge_enabled: r.charge_enabled,
            discharge_enabled: r.discharge_enabled,
            cells: r.cells,
            temperatures: r.temperatures,
            remaining_mah: r.remaining_mah,
            total_mah: r.total_mah,
            at: now,
        });
        self.state = State::Running;
        self.next_at = now + self.poll_interval;
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.i)?;
        self.i += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(((self.u8()? as u16) << 8) | self.u8()? as u16)
    }
    fn u24(&mut self) -> Option<u32> {
        Some(((self.u8()? as u32) << 16) | ((self.u8()? as u32) << 8) | self.u8()? as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::inverter::pylon_rs485::{PylonRs485, PylonRs485Options};
    use dbe_core::inverter::{InverterView, SerialInverter};
    use dbe_core::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use dbe_core::supervisor::Output;
    use dbe_core::time::earliest;
    use dbe_core::units::*;

    fn model() -> BatteryModel {
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Lfp,
            cells: 16,
            max_pack_voltage: DeciVolts(576),
            min_pack_voltage: DeciVolts(400),
            max_cell_voltage: MilliVolts(3650),
            min_cell_voltage: MilliVolts(2500),
            max_cell_deviation: MilliVolts(300),
        });
        m.pack_voltage = Some(Reading::new(DeciVolts(531), Instant::ZERO));
        m.current = Some(Reading::new(DeciAmps(-377), Instant::ZERO));
        m.temperature_min = Some(Reading::new(DeciCelsius(-55), Instant::ZERO));
        m.temperature_max = Some(Reading::new(DeciCelsius(312), Instant::ZERO));
        let cells: Vec<MilliVolts> = (0..16).map(|i| MilliVolts(3310 + i * 3)).collect();
        m.cells.set_voltages(Instant::ZERO, &cells);
        m
    }

    fn output() -> Output {
        Output {
            soc: Some(BasisPoints(7345)),
            total_energy: Some(WattHours(14_336)),
            remaining_energy: Some(WattHours(10_529)),
            charge_current_limit: DeciAmps(1203),
            discharge_current_limit: DeciAmps(2001),
            max_charge_voltage: DeciVolts(568),
            min_discharge_voltage: DeciVolts(448),
            data_valid: true,
            ..Output::default()
        }
    }

    /// Runs battery and master against each other in simulated time until `until`.
    fn run(battery: &mut PylonRs485, master: &mut PylonRs485Master, view: &InverterView<'_>, until: Instant) {
        let mut now = Instant::ZERO;
        let mut buf = vec![0u8; 4200];
        while now <= until {
            let n = master.poll_transmit(now, &mut buf);
            battery.handle_bytes(now, &buf[..n]);
            let n = battery.poll_transmit(now, view, &mut buf).unwrap();
            master.handle_bytes(now, &buf[..n]);
            master.handle_timeout(now);
            let next = earliest(master.poll_timeout(), battery.poll_timeout());
            now = match next {
                Some(t) if t > now => t,
                _ => now + Duration::from_millis(1),
            };
        }
    }

    #[test]
    fn master_decodes_the_view_within_one_lsb() {
        for modules in [1u8, 2, 4] {
            let (m, o) = (model(), output());
            let view = InverterView::new(&m, &o);
            let mut battery =
                PylonRs485::new(PylonRs485Options { modules, cells_per_module: 16 / modules, ..Default::default() });
            let mut master = PylonRs485Master::new(2, modules);
            assert_eq!(master.state(), State::Waiting);
            run(&mut battery, &mut master, &view, Instant::from_millis(5000));
            assert_eq!(master.state(), State::Running);
            let t = master.told().unwrap();
            assert_eq!(t.voltage, DeciVolts(531));
            // Per-module shares are rounded down: the sum is within one LSB per module, never above.
            assert!((-377 - t.current.0).abs() < modules as i32, "{:?}", t.current);
            assert!(t.charge_limit.0 <= 1203 && 1203 - t.charge_limit.0 < modules as i32);
            assert!(t.discharge_limit.0 <= 2001 && 2001 - t.discharge_limit.0 < modules as i32);
            assert!((t.soc.0 as i32 - 7345).abs() <= 1, "{:?}", t.soc);
            assert_eq!((t.charge_voltage, t.discharge_voltage), (DeciVolts(568), DeciVolts(448)));
            assert!(t.charge_enabled && t.discharge_enabled);
            assert_eq!(t.cells, m.cells.voltages());
            assert!(t.temperatures.contains(&DeciCelsius(-55)) && t.temperatures.contains(&DeciCelsius(312)));
        }
    }

    #[test]
    fn unanswered_requests_fault_the_master() {
        let (m, o) = (model(), output());
        let view = InverterView::new(&m, &o);
        // The battery presents address 2; the master polls address 6.
        let mut battery = PylonRs485::new(PylonRs485Options::default());
        let mut master = PylonRs485Master::new(6, 1);
        run(&mut battery, &mut master, &view, Instant::from_millis(3000));
        assert_eq!(master.state(), State::Faulted);
        assert!(master.told().is_none());
        master.set_silent(true);
        let mut buf = [0u8; 64];
        assert_eq!(master.poll_transmit(Instant::from_millis(10_000), &mut buf), 0);
    }
}
