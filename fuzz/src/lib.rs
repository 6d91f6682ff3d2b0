//! Helpers shared by the fuzz targets: a reader that turns the fuzzer's bytes into steps, and the bridge
//! invariants every bridge target checks after each step.
//!
//! The invariants are the safety promises of the supervisor, checked from outside: whatever arrives on either
//! port, the limits it hands out never exceed the configured maximums, are zero while the battery data is not
//! valid, and the contactors are never asked closed without valid data.

use dbe_core::battery::{BatteryKind, ContactorRequest};
use dbe_core::bridge::{Bridge, BridgeConfig};
use dbe_core::command::Command;
use dbe_core::inverter::InverterConfig;
use dbe_core::supervisor::{CellLimits, SupervisorConfig};
use dbe_core::units::{BasisPoints, DeciAmps};
use dbe_core::{CanFrame, Duration};

/// Reads the fuzzer's bytes front to back; past the end every read is 0 / empty (so any input is a program).
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

/// The configured limits the targets run with (small numbers so a violation is not hidden by a BMS limit).
pub fn supervisor_config() -> SupervisorConfig {
    SupervisorConfig {
        max_charge_current: DeciAmps(250),
        max_discharge_current: DeciAmps(300),
        inverter_timeout: None,
        ..SupervisorConfig::default()
    }
}

pub fn bridge(inverter: InverterConfig) -> Bridge {
    bridge_for(BatteryKind::NissanLeaf.into(), Default::default(), inverter)
}

pub fn bridge_for(
    battery: dbe_core::battery::BatteryConfig,
    contactors: dbe_core::contactor::ContactorSetup,
    inverter: InverterConfig,
) -> Bridge {
    Bridge::new(BridgeConfig { battery, inverter, supervisor: supervisor_config(), contactors })
}

/// A command from two input bytes: every kind, with values in and out of range.
pub fn command(input: &mut Input<'_>) -> Command {
    let v = input.u16();
    match input.u8() % 8 {
        0 => Command::Pause,
        1 => Command::Resume,
        2 => Command::Stop,
        3 => Command::Start,
        4 => Command::BmsReset,
        5 => Command::SetTemporaryLimits {
            charge: Some(DeciAmps(v as i16 as i32 * 7)),
            discharge: (v & 1 == 0).then_some(DeciAmps(v as i32)),
            timeout: Duration::from_secs((v % 700) as u64),
        },
        6 => Command::ClearTemporaryLimits,
        _ => Command::SetSocWindow { min: BasisPoints(v >> 4), max: BasisPoints(v.rotate_left(3) >> 2) },
    }
}

/// Checks the supervisor's promises on the bridge's present output.
pub fn check_bridge(b: &Bridge) {
    let cfg = supervisor_config();
    let out = b.output();
    let (c, d) = (out.charge_current_limit, out.discharge_current_limit);
    assert!(
        c >= DeciAmps(0) && c <= cfg.max_charge_current,
        "charge limit {c:?} outside 0..={:?}",
        cfg.max_charge_current
    );
    assert!(
        d >= DeciAmps(0) && d <= cfg.max_discharge_current,
        "discharge limit {d:?} outside 0..={:?}",
        cfg.max_discharge_current
    );
    if !out.data_valid {
        assert_eq!((c, d), (DeciAmps(0), DeciAmps(0)), "limits while the data is not valid");
        // Closed contactors with invalid data only while opening waits for the current to stop (at 0 A, for at
        // most the open ceiling): the supervisor's "pause first, then open" under load.
        if !out.contactors_open_pending {
            assert_ne!(out.contactors, Some(ContactorRequest::Closed), "contactors closed without valid data");
        }
    }
    if out.paused || out.stopped {
        assert_eq!((c, d), (DeciAmps(0), DeciAmps(0)), "limits while paused or stopped");
    }
    let model = b.model();
    let limits = CellLimits::for_chemistry(model.design.chemistry);
    if let Some((_, max)) = model.cells.max() {
        if max > limits.max.min(model.design.max_cell_voltage) {
            assert_eq!(c, DeciAmps(0), "charging allowed with a cell at {max:?}");
        }
    }
    if let Some((_, min)) = model.cells.min() {
        if min < limits.min.max(model.design.min_cell_voltage) {
            assert_eq!(d, DeciAmps(0), "discharging allowed with a cell at {min:?}");
        }
    }
    if model.temperature_max.is_some_and(|t| t.value > cfg.max_temperature) {
        assert_eq!((c, d), (DeciAmps(0), DeciAmps(0)), "limits above the maximum temperature");
    }
}

/// What the bridge told a Pylon CAN inverter in a 0x4220 frame (default options: big-endian words, no offset).
pub fn pylon_told_limits(f: &CanFrame) -> Option<(i32, i32)> {
    if f.extended_id() != Some(0x4220) || f.len() != 8 {
        return None;
    }
    let d = f.data();
    let w = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]) as i16 as i32;
    Some((w(4), w(6)))
}

/// Ids the LEAF driver decodes, so the fuzzer reaches them without guessing 11 bits.
pub const LEAF_IDS: [u16; 14] =
    [0x1DB, 0x1DC, 0x55B, 0x5BC, 0x5C0, 0x59E, 0x380, 0x5EB, 0x5BF, 0x1ED, 0x1C2, 0x79B, 0x7BB, 0x1D4];

/// A LEAF frame from the input: a known id (or any 11-bit id), a length, data, and optionally a correct CRC in
/// byte 7 so the fuzzer gets past the checksum of the CRC-protected messages.
pub fn leaf_frame(input: &mut Input<'_>) -> CanFrame {
    let sel = input.u8();
    let id = if sel & 0x80 == 0 { LEAF_IDS[(sel as usize) % LEAF_IDS.len()] } else { input.u16() & 0x7FF };
    let len = (input.u8() % 9) as usize;
    let mut data = [0u8; 8];
    data[..len].copy_from_slice(&pad8(input.bytes(len))[..len]);
    if sel & 0x40 != 0 && len == 8 {
        data[7] = dbe_core::crc::crc8_0x85(&data[..7]);
    }
    CanFrame::standard(id, &data[..len]).expect("11-bit id, at most 8 bytes")
}

pub const TESLA_IDS: [u16; 16] =
    [0x132, 0x292, 0x332, 0x401, 0x2D2, 0x252, 0x212, 0x20A, 0x352, 0x3D2, 0x320, 0x7AA, 0x118, 0x221, 0x3A1, 0x1CF];

/// A Tesla Model 3/Y frame from the input: a known id (or any 11-bit id), a length and data; 0x401 with one of
/// its known status bytes and a multiplex in range half the time, so the fuzzer reaches the cell scan.
pub fn tesla_frame(input: &mut Input<'_>) -> CanFrame {
    let sel = input.u8();
    let id = if sel & 0x80 == 0 { TESLA_IDS[(sel as usize) % TESLA_IDS.len()] } else { input.u16() & 0x7FF };
    let len = (input.u8() % 9) as usize;
    let mut data = [0u8; 8];
    data[..len].copy_from_slice(&pad8(input.bytes(len))[..len]);
    if id == 0x401 && sel & 0x40 != 0 && len == 8 {
        data[0] %= 40;
        data[1] = [0x2A, 0x0A, 0x02][data[1] as usize % 3];
    }
    CanFrame::standard(id, &data[..len]).expect("11-bit id, at most 8 bytes")
}

fn pad8(b: &[u8]) -> [u8; 8] {
    let mut d = [0u8; 8];
    d[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    d
}

/// Runs the whole bridge (LEAF driver, supervisor, `inverter`) against a program read from `data`: a simulated
/// LEAF pack in the background (so the data is valid and the limits are non-trivial), fuzzed battery frames,
/// fuzzed inverter frames or bytes, commands and jumps in time. After every step the bridge's outputs are drained
/// and every invariant is checked.
pub fn run_bridge(data: &[u8], inverter: InverterConfig, weights: Weights) {
    let pack = PackUnderTest {
        battery: BatteryKind::NissanLeaf.into(),
        contactors: Default::default(),
        new: |now| Box::new(dbe_sim::leaf::LeafPack::new(Default::default(), now)),
        frame: leaf_frame,
    };
    run_bridge_with(data, &pack, inverter, weights)
}

/// The pack a bridge run is built around: its driver's config, the contactor setup, its simulator and the fuzzed
/// frames of its protocol.
pub struct PackUnderTest {
    pub battery: dbe_core::battery::BatteryConfig,
    pub contactors: dbe_core::contactor::ContactorSetup,
    pub new: fn(dbe_core::Instant) -> Box<dyn dbe_sim::pack::SimPack>,
    pub frame: fn(&mut Input<'_>) -> CanFrame,
}

/// [`run_bridge`] around any simulated pack.
pub fn run_bridge_with(data: &[u8], put: &PackUnderTest, inverter: InverterConfig, weights: Weights) {
    use dbe_core::bridge::Port;
    use dbe_core::Instant;
    use dbe_sim::pack::SimPack;

    let cfg = supervisor_config();
    let mut b = bridge_for(put.battery, put.contactors, inverter);
    let mut pack = (put.new)(Instant::ZERO);
    let mut input = Input::new(data);
    let mut now = Instant::ZERO;
    let mut steps = 0;
    while !input.is_empty() && steps < 4096 {
        steps += 1;
        let op = input.u8();
        match weights.pick(op) {
            Op::Tick => {
                now += Duration::from_millis(1 + (op as u64 & 0x3F) * 5);
                while let Some(f) = pack.poll_transmit(now) {
                    let _ = b.handle_frame(now, Port::Battery, &f);
                }
            }
            Op::Jump => {
                // The pack is silent across the jump (stale data, expiring limits, link timeouts).
                now += Duration::from_millis(input.u16() as u64 * 4);
                pack = (put.new)(now);
            }
            Op::BatteryFrame => {
                let f = (put.frame)(&mut input);
                let _ = b.handle_frame(now, Port::Battery, &f);
            }
            Op::InverterFrame => {
                let f = pylon_frame(&mut input);
                let _ = b.handle_frame(now, Port::Inverter, &f);
            }
            Op::InverterBytes => {
                let n = input.u8() as usize % 80;
                let bytes = input.bytes(n);
                check_request_round_trip(bytes);
                b.handle_inverter_bytes(now, bytes);
                if op & 0x80 != 0 {
                    b.handle_inverter_silence(now);
                }
            }
            Op::InverterRequest => {
                let mut buf = [0u8; 300];
                let n = serial_request(&mut input, &inverter, &mut buf);
                check_request_round_trip(&buf[..n]);
                b.handle_inverter_bytes(now, &buf[..n]);
                b.handle_inverter_silence(now);
                // Let the turnaround pass so the reply is released.
                now += Duration::from_millis(20);
            }
            Op::Command => {
                let cmd = command(&mut input);
                let _ = b.handle_command(now, cmd);
            }
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        let mut sent = 0;
        while let Some((port, f)) = b.poll_transmit(now) {
            sent += 1;
            assert!(sent < 10_000, "poll_transmit never drains");
            match port {
                Port::Battery => pack.handle_frame(now, &f),
                Port::Inverter => {
                    if let Some((c, d)) = pylon_told_limits(&f) {
                        assert!(c >= 0 && c <= cfg.max_charge_current.0, "told charge {c} dA");
                        assert!(d >= 0 && d <= cfg.max_discharge_current.0, "told discharge {d} dA");
                        if !b.output().data_valid {
                            assert_eq!((c, d), (0, 0), "told non-zero limits while the data is not valid");
                        }
                    }
                }
            }
        }
        let mut buf = [0u8; 1024];
        if let Ok(n) = b.poll_inverter_bytes(now, &mut buf) {
            if n > 0 {
                check_reply(&inverter, &buf[..n]);
            }
        }
        check_bridge(&b);
        let fresh = b.model().last_valid_frame_at.is_some_and(|t| now.saturating_since(t) <= cfg.stale_timeout);
        if !fresh {
            let out = b.output();
            assert_eq!(
                (out.charge_current_limit, out.discharge_current_limit),
                (DeciAmps(0), DeciAmps(0)),
                "limits non-zero with stale data at {now:?}"
            );
        }
    }
}

#[derive(Copy, Clone, Debug)]
pub enum Op {
    Tick,
    Jump,
    BatteryFrame,
    InverterFrame,
    InverterBytes,
    InverterRequest,
    Command,
}

/// How often each step appears, as a table the op byte indexes.
#[derive(Copy, Clone, Debug)]
pub struct Weights(pub &'static [Op]);

impl Weights {
    fn pick(self, op: u8) -> Op {
        self.0[(op >> 1) as usize % self.0.len()]
    }
}

/// Ids a Pylon CAN inverter sends, plus a few neighbours, the SolaX/FoxESS poll 0x1871 and the BYD HVS inverter's
/// 11-bit frames (0x091, 0x0D1, 0x111, 0x151, 0x191); or any id.
pub fn pylon_frame(input: &mut Input<'_>) -> CanFrame {
    const IDS: [u32; 10] = [0x4200, 0x4201, 0x8200, 0x8210, 0x8240, 0x8201, 0x3010, 0x4210, 0x7310, 0x1871];
    const BYD: [u16; 5] = [0x091, 0x0D1, 0x111, 0x151, 0x191];
    let sel = input.u8();
    let len = (input.u8() % 9) as usize;
    let data = pad8(input.bytes(len));
    if sel & 0xC0 == 0x40 {
        return CanFrame::standard(BYD[sel as usize % BYD.len()], &data[..len]).expect("valid");
    }
    if sel & 0x80 != 0 {
        let raw = input.u16() as u32 | (input.u8() as u32) << 16;
        if sel & 0x40 != 0 {
            return CanFrame::standard(raw as u16 & 0x7FF, &data[..len]).expect("valid");
        }
        if sel & 0x20 != 0 {
            return CanFrame::remote(embedded_can::ExtendedId::new(raw).expect("24 bits"), len).expect("valid");
        }
        return CanFrame::extended(raw, &data[..len]).expect("valid");
    }
    CanFrame::extended(IDS[sel as usize % IDS.len()], &data[..len]).expect("valid")
}

/// A well-formed request of the serial protocol (right checksum, fuzzed fields) so the fuzzer reaches the
/// request handling behind the checksum.
pub fn serial_request(input: &mut Input<'_>, inverter: &InverterConfig, buf: &mut [u8]) -> usize {
    match inverter {
        InverterConfig::PylonRs485(o) => {
            use dbe_core::inverter::pylon_rs485::FrameWriter;
            const CID2: [u8; 10] = [0x42, 0x44, 0x47, 0x4F, 0x51, 0x60, 0x61, 0x62, 0x63, 0x92];
            let sel = input.u8();
            let ver = if sel & 1 == 0 { 0x20 } else { input.u8() };
            let adr = if sel & 2 == 0 { o.address.wrapping_add(input.u8() % 3) } else { input.u8() };
            let cid1 = if sel & 4 == 0 { 0x46 } else { input.u8() };
            let cid2 = if sel & 8 == 0 { CID2[input.u8() as usize % CID2.len()] } else { input.u8() };
            let n = input.u8() as usize % 8;
            let info = input.bytes(n);
            FrameWriter::frame(buf, ver, adr, cid1, cid2, |w| {
                for &b in info {
                    w.u8(b);
                }
            })
            .unwrap_or(0)
        }
        InverterConfig::BydModbus(o) => {
            let sel = input.u8();
            let slave = if sel & 1 == 0 { o.slave } else { input.u8() };
            let function = [0x03, 0x04, 0x06, 0x10, input.u8()][(sel >> 1) as usize % 5];
            let n = input.u8() as usize % 40;
            let body = input.bytes(n);
            let len = (2 + body.len()).min(buf.len() - 2);
            buf[0] = slave;
            buf[1] = function;
            buf[2..len].copy_from_slice(&body[..len - 2]);
            let crc = dbe_core::inverter::modbus::crc16(&buf[..len]);
            buf[len..len + 2].copy_from_slice(&crc.to_le_bytes());
            len + 2
        }
        InverterConfig::PylonCan(_)
        | InverterConfig::BydCan(_)
        | InverterConfig::SolaxCan(_)
        | InverterConfig::FoxessCan(_)
        | InverterConfig::GrowattHvCan(_) => 0,
    }
}

/// A request either serial protocol accepts re-encodes to one it parses the same.
pub fn check_request_round_trip(bytes: &[u8]) {
    use dbe_core::inverter::modbus::{self, Request, RequestPdu};
    if let Some(req) = Request::parse(bytes) {
        let mut buf = [0u8; 300];
        let n = match req.pdu {
            RequestPdu::Read { function, address, quantity } => {
                modbus::emit_read_request(req.slave, function, address, quantity, &mut buf).expect("fits")
            }
            RequestPdu::WriteSingle { address, value } => {
                modbus::emit_write_single(req.slave, address, value, &mut buf).expect("fits")
            }
            _ => 0,
        };
        if n > 0 {
            assert_eq!(Request::parse(&buf[..n]), Some(req.clone()), "modbus request re-encoded differently");
        }
    }
    use dbe_core::inverter::pylon_rs485::{FrameWriter, Header};
    if let Ok(h) = Header::parse(bytes) {
        if let Ok(info) = h.check(bytes) {
            let decoded: Vec<u8> = info
                .chunks(2)
                .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("hex checked"), 16).expect("hex checked"))
                .collect();
            let mut buf = [0u8; 600];
            let n = FrameWriter::frame(&mut buf, h.ver, h.adr, h.cid1, h.cid2, |w| {
                for &b in &decoded {
                    w.u8(b);
                }
            })
            .expect("fits");
            let h2 = Header::parse(&buf[..n]).expect("re-encoded header parses");
            let info2 = h2.check(&buf[..n]).expect("re-encoded frame checks");
            assert_eq!((h2.ver, h2.adr, h2.cid1, h2.cid2, h2.length), (h.ver, h.adr, h.cid1, h.cid2, h.length));
            assert!(info2.eq_ignore_ascii_case(info), "pylontech INFO re-encoded differently");
        }
    }
}

/// Every reply the bridge writes is a well-formed frame of its protocol, from the configured address.
pub fn check_reply(inverter: &InverterConfig, reply: &[u8]) {
    match inverter {
        InverterConfig::PylonRs485(_) => {
            use dbe_core::inverter::pylon_rs485::Header;
            let h = Header::parse(reply).unwrap_or_else(|e| panic!("reply header {e:?}: {reply:x?}"));
            h.check(reply).unwrap_or_else(|e| panic!("reply {e:?}: {:?}", String::from_utf8_lossy(reply)));
        }
        InverterConfig::BydModbus(o) => {
            use dbe_core::inverter::modbus::Response;
            let r = Response::parse(reply).unwrap_or_else(|| panic!("reply does not parse: {reply:x?}"));
            let slave = match r {
                Response::Registers { slave, .. }
                | Response::WriteAck { slave, .. }
                | Response::Exception { slave, .. } => slave,
            };
            assert_eq!(slave, o.slave, "reply from another slave address");
        }
        InverterConfig::PylonCan(_)
        | InverterConfig::BydCan(_)
        | InverterConfig::SolaxCan(_)
        | InverterConfig::FoxessCan(_)
        | InverterConfig::GrowattHvCan(_) => {
            panic!("a CAN protocol wrote serial bytes")
        }
    }
}

pub mod services;
