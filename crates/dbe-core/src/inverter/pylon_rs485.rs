//! Pylontech low-voltage RS485 (the `~...\r` ASCII-hex protocol of US2000/US3000/UP2500 stacks), battery side.
//!
//! The inverter (or a monitoring tool) polls; we answer as a stack of `modules` parallel 48 V modules at
//! addresses `address..address+modules`.
//!
//! Frame (every byte after SOI is an ASCII hex digit, upper or lower case accepted, upper case sent):
//! `~ VER(2) ADR(2) CID1(2) CID2(2) LENGTH(4) INFO(LENID) CHKSUM(4) \r`, CID1 = 0x46 (lithium battery), in a
//! reply CID2 is the return code RTN. LENGTH = LCHKSUM(4 bits) | LENID(12 bits, the number of INFO characters),
//! LCHKSUM = two's complement (mod 16) of the sum of LENID's three nibbles; CHKSUM = two's complement (mod 2^16)
//! of the sum of the ASCII bytes between SOI and CHKSUM. Sources: the "PYLON low voltage Protocol RS485" V3.3
//! (2018-08-21) as implemented by the clients Tomcat42/pylontech-python (PyPI `pylontech`, `pylontech_encode.py`,
//! `pylontech_decode.py`, `pylontech_base.py`), Frankkkkk/python-pylontech and pshirshov/python-pylontech
//! (PyPI `python-pylontech`, `schema.py` construct definitions), and Battery-Emulator
//! `Software/src/inverter/PYLON-LV-RS485.{h,cpp}` (checksum, length, VER 0x20, 9600 baud).
//!
//! Replies (INFO layouts, from the client decoders and the captured replies in Frankkkkk's `tests/test_basic.py`):
//! - 0x4F protocol version: empty INFO, the version is the reply's VER (0x20).
//! - 0x51 manufacturer info: device name (10 ASCII bytes), software version (2 bytes), manufacturer name
//!   (20 ASCII bytes), NUL-padded (Tomcat42 strips NULs).
//! - 0x42 analog values: DATAFLAG(1), then the module address (single module) or the module count (request
//!   INFO 0xFF: all modules), then per module: cell count M(1), M × cell mV (2, signed), K(1) temperatures
//!   × (2, 0.1 K, offset 2731: first the BMS board, then cell groups), current (2, 0.1 A signed, + = charge),
//!   module voltage (2, mV), remaining capacity (2, mAh), user-defined count (1: 2, or 4 when the capacities
//!   need 3 bytes, then the 2-byte fields are 0xFFFF), total capacity (2, mAh), cycles (2),
//!   [remaining (3, mAh), total (3, mAh)]. There is no SOC field: clients and inverters compute SOC as
//!   remaining / total, so we derive remaining from the reported SOC to make that ratio exact.
//! - 0x44 alarm info: DATAFLAG(1), address or count, per module: M(1), M × cell state(1), K(1), K × temperature
//!   state(1), charge-current state(1), module-voltage state(1), discharge-current state(1), status 1..5 (1
//!   each). States: 0 normal, 1 below limit, 2 above limit.
//! - 0x47 system parameters: INFOFLAG(1), cell high, low and under voltage (2 each, mV), charge high and low
//!   temperature (0.1 K), charge current limit (0.1 A), module high, low and under voltage (mV), discharge high
//!   and low temperature (0.1 K), discharge current limit (0.1 A, signed). The temperatures are the bounds the
//!   supervisor enforces ([`InverterView::temperature_limits`], the user's configured ones): charge high and
//!   discharge high = its maximum, charge low = its minimum for charging, discharge low = its minimum for
//!   discharging. (Battery-Emulator's `PYLON-LV-RS485.cpp` does not answer 0x47 at all, so it has no values to
//!   follow; reporting what is enforced is the only truthful choice.)
//! - 0x92 charge/discharge management: module address(1), charge voltage limit (2, mV), discharge voltage limit
//!   (2, mV), charge current limit (2, 0.1 A signed), discharge current limit (2, 0.1 A signed, negative as a
//!   real UP2500 sends it: `FDD5` = -55.5 A), status(1): bit 7 charge enable, bit 6 discharge enable, bit 5
//!   charge immediately 1, bit 4 charge immediately 2, bit 3 full charge request.
//! - 0x93 serial number: module address(1), 16 ASCII bytes.
//! - Return codes: 0x00 normal, 0x01 VER error, 0x02 CHKSUM error, 0x03 LCHKSUM error, 0x04 CID2 invalid, 0x05
//!   command format error, 0x06 invalid data, 0x90 ADR error, 0x91 internal communication error (the table
//!   several independent clients agree on); an error reply has an empty INFO (a real US2000 answered
//!   `~200246020000FDB0` to a bad checksum).
//!
//! Disagreements and choices:
//! - Discharge current limit sign: Battery-Emulator sends it positive, the real UP2500 capture and both client
//!   decoders (signed) give it negative. We send it negative, as the real battery does.
//! - 0x47 current scale: pshirshov 0.1 A, Frankkkkk 0.01 A; we use 0.1 A like every other current here.
//!   Tomcat42's `decodeSystemParameter` reads the 0x47 INFO without skipping INFOFLAG (its own comment notes
//!   the temperatures decode wrong): we follow the protocol layout, so its values come out shifted by a byte.
//! - Battery-Emulator answers 0x42/0x44/0x92 with the V3.5 system-level layouts and also accepts 0x61..0x63;
//!   the clients and real modules use the V3.3 per-module layouts above, which we follow. 0x61..0x63 are
//!   answered "CID2 invalid".
//! - Several modules are parallel modules of one 48 V bus: each reports the pack voltage, `1/modules` of the
//!   current, capacity and current limits (rounded down, so an inverter that adds the modules' limits never
//!   exceeds the pack's, and one that reads only the master is told less, never more), and its share of the
//!   pack's cells (`cells_per_module` each, in order).
//! - Addresses: we answer ADR `address..address+modules`; ADR 0x00 and 0xFF are taken as "whoever is master"
//!   (Frankkkkk's client sends 0x4F/0x51 to ADR 0) and answered by the first module when
//!   `answer_broadcast` is set, never with an error reply. Another ADR or CID1 is another device's frame:
//!   silence. A request INFO naming a module we do not have: ADR error.
//! - A pack voltage that does not fit the protocol's 16-bit millivolts (above 65.535 V: not a low-voltage
//!   pack) cannot be told truthfully. [`check_pack`] refuses such a pack's design up front (the config layer
//!   calls it through [`crate::inverter::InverterKind::check_pack`], so `dbe check-config` names `battery.type`
//!   and `inverter.protocol`); should one run anyway, charge and discharge are disabled with zero limits, as when
//!   the data is not valid.
//! - SOH: the V3.3 layouts above have no SOH field, so an unknown SOH has nothing to be sent as. (Battery-
//!   Emulator's V3.5 0x61 reply carries a constant 100 %; we do not answer 0x61.)
//!
//! Not carried: cycle count (0), the 0x44 status bytes (0: their bit meanings are not in our sources), the
//! force-charge flags (0: the supervisor has no such request).

use crate::inverter::{BufferTooSmall, InverterView, PackNotCarried, SerialInverter};
use crate::model::PackDesign;
use crate::options::{self, DriverOptions, OptionField, OptionKind, OptionValue};
use crate::time::{Duration, Instant};
use crate::units::{DeciAmps, DeciCelsius, DeciVolts};

pub const SUPPORTS: &str =
    "48 V inverters and tools polling Pylontech US2000/US3000 modules over RS485 (Pylontech LV protocol V3.3)";
/// Battery-Emulator reports the inverter missing after 60 s without a frame.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BAUD: u32 = 9600;

pub const SOI: u8 = b'~';
pub const EOI: u8 = b'\r';
/// The protocol version we send (and the version every client sends).
pub const PROTOCOL_VERSION: u8 = 0x20;
/// CID1 of a lithium battery.
pub const CID1_BATTERY: u8 = 0x46;
/// The most modules we present (addresses 2..=16, as Tomcat42's stack probe's 15-module limit).
pub const MAX_MODULES: u8 = 15;
/// Longest request we take (real requests carry at most a few INFO bytes).
pub const MAX_REQUEST: usize = 64;
/// Longest possible reply (LENID is 12 bits).
pub const MAX_REPLY: usize = 1 + 12 + 0xFFF + 4 + 1;

/// Character positions in a frame (SOI at 0).
mod field {
    use core::ops::Range;
    pub const VER: Range<usize> = 1..3;
    pub const ADR: Range<usize> = 3..5;
    pub const CID1: Range<usize> = 5..7;
    pub const CID2: Range<usize> = 7..9;
    pub const LENGTH: Range<usize> = 9..13;
    pub const INFO: usize = 13;
    /// SOI + header + CHKSUM + EOI.
    pub const MIN_FRAME: usize = 18;
}

/// Command codes (request CID2).
pub mod cid2 {
    pub const ANALOG_VALUES: u8 = 0x42;
    pub const ALARM_INFO: u8 = 0x44;
    pub const SYSTEM_PARAMETERS: u8 = 0x47;
    pub const PROTOCOL_VERSION: u8 = 0x4F;
    pub const MANUFACTURER_INFO: u8 = 0x51;
    pub const MANAGEMENT_INFO: u8 = 0x92;
    pub const SERIAL_NUMBER: u8 = 0x93;
}

/// Request INFO command value meaning "all modules".
const ALL_MODULES: u8 = 0xFF;

/// Reply return codes (reply CID2), total.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rtn {
    Normal,
    VerError,
    ChksumError,
    LchksumError,
    Cid2Invalid,
    CommandFormatError,
    InvalidData,
    AdrError,
    InternalCommunicationError,
    Unknown(u8),
}

impl Rtn {
    pub fn code(self) -> u8 {
        match self {
            Rtn::Normal => 0x00,
            Rtn::VerError => 0x01,
            Rtn::ChksumError => 0x02,
            Rtn::LchksumError => 0x03,
            Rtn::Cid2Invalid => 0x04,
            Rtn::CommandFormatError => 0x05,
            Rtn::InvalidData => 0x06,
            Rtn::AdrError => 0x90,
            Rtn::InternalCommunicationError => 0x91,
            Rtn::Unknown(c) => c,
        }
    }

    pub fn from_u8(code: u8) -> Self {
        match code {
            0x00 => Rtn::Normal,
            0x01 => Rtn::VerError,
            0x02 => Rtn::ChksumError,
            0x03 => Rtn::LchksumError,
            0x04 => Rtn::Cid2Invalid,
            0x05 => Rtn::CommandFormatError,
            0x06 => Rtn::InvalidData,
            0x90 => Rtn::AdrError,
            0x91 => Rtn::InternalCommunicationError,
            c => Rtn::Unknown(c),
        }
    }
}

/// CHKSUM over the ASCII characters between SOI and CHKSUM.
pub fn checksum(ascii: &[u8]) -> u16 {
    let sum = ascii.iter().fold(0u16, |s, &b| s.wrapping_add(b as u16));
    (!sum).wrapping_add(1)
}

/// The LENGTH field for `lenid` INFO characters (LCHKSUM in the top nibble).
pub fn length_field(lenid: u16) -> u16 {
    let lenid = lenid & 0x0FFF;
    let sum = (lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF);
    let lchksum = (!sum).wrapping_add(1) & 0xF;
    (lchksum << 12) | lenid
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes an even run of ASCII hex digits as a big-endian number (up to 4 digits).
fn hex_value(ascii: &[u8]) -> Option<u16> {
    if ascii.is_empty() || ascii.len() > 4 {
        return None;
    }
    ascii.iter().try_fold(0u16, |v, &c| Some((v << 4) | hex_digit(c)? as u16))
}

/// Why a received frame is not a usable request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header, or header characters that are not hex: not even addressable.
    Malformed,
    BadChksum,
    BadLchksum,
    /// LENID does not match the INFO length, or INFO is not hex.
    BadFormat,
}

/// The header of a received frame (trusted only once [`Header::check`] passes).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub ver: u8,
    pub adr: u8,
    pub cid1: u8,
    /// Command code in a request, RTN in a reply.
    pub cid2: u8,
    pub length: u16,
}

impl Header {
    /// Reads the header of `frame` (`~` through `\r`).
    pub fn parse(frame: &[u8]) -> Result<Header, FrameError> {
        if frame.len() < field::MIN_FRAME || frame.first() != Some(&SOI) || frame.last() != Some(&EOI) {
            return Err(FrameError::Malformed);
        }
        let byte = |r: core::ops::Range<usize>| frame.get(r).and_then(hex_value).map(|v| v as u8);
        Ok(Header {
            ver: byte(field::VER).ok_or(FrameError::Malformed)?,
            adr: byte(field::ADR).ok_or(FrameError::Malformed)?,
            cid1: byte(field::CID1).ok_or(FrameError::Malformed)?,
            cid2: byte(field::CID2).ok_or(FrameError::Malformed)?,
            length: frame.get(field::LENGTH).and_then(hex_value).ok_or(FrameError::Malformed)?,
        })
    }

    /// Checks CHKSUM, LCHKSUM and LENID (in that order) and returns the INFO characters.
    pub fn check<'f>(&self, frame: &'f [u8]) -> Result<&'f [u8], FrameError> {
        let end = frame.len().checked_sub(5).ok_or(FrameError::Malformed)?;
        let got = frame.get(end..end + 4).and_then(hex_value).ok_or(FrameError::BadChksum)?;
        if checksum(&frame[1..end]) != got {
            return Err(FrameError::BadChksum);
        }
        if length_field(self.length & 0x0FFF) != self.length {
            return Err(FrameError::BadLchksum);
        }
        let info = frame.get(field::INFO..end).ok_or(FrameError::BadFormat)?;
        if info.len() != (self.length & 0x0FFF) as usize
            || info.len() % 2 != 0
            || info.iter().any(|&c| hex_digit(c).is_none())
        {
            return Err(FrameError::BadFormat);
        }
        Ok(info)
    }
}

/// Decodes ASCII-hex INFO into bytes (the caller has checked it is hex of even length).
fn info_byte(info: &[u8], i: usize) -> Option<u8> {
    info.get(2 * i..2 * i + 2).and_then(hex_value).map(|v| v as u8)
}

/// Writes a frame's characters into a caller's buffer, counting what would not fit.
pub struct FrameWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> FrameWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        FrameWriter { buf, len: 0 }
    }

    fn raw(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
        }
        self.len += 1;
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        self.raw(HEX[(v >> 4) as usize]);
        self.raw(HEX[(v & 0xF) as usize]);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        let [hi, lo] = v.to_be_bytes();
        self.u8(hi).u8(lo)
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.u16(v as u16)
    }

    pub fn u24(&mut self, v: u32) -> &mut Self {
        let [_, a, b, c] = v.min(0xFF_FFFF).to_be_bytes();
        self.u8(a).u8(b).u8(c)
    }

    /// `text` as ASCII bytes, NUL-padded or cut to `width`.
    pub fn ascii(&mut self, text: &str, width: usize) -> &mut Self {
        let b = text.as_bytes();
        for i in 0..width {
            self.u8(b.get(i).copied().unwrap_or(0));
        }
        self
    }

    /// Writes a whole frame: header, the INFO `info` writes, LENGTH, CHKSUM and EOI.
    pub fn frame(
        buf: &'b mut [u8],
        ver: u8,
        adr: u8,
        cid1: u8,
        cid2: u8,
        info: impl FnOnce(&mut FrameWriter<'b>),
    ) -> Result<usize, BufferTooSmall> {
        let mut w = FrameWriter::new(buf);
        w.raw(SOI);
        w.u8(ver).u8(adr).u8(cid1).u8(cid2).u16(0);
        info(&mut w);
        let lenid = w.len - field::INFO;
        let needed = w.len + 5;
        if needed > w.buf.len() || lenid > 0x0FFF {
            return Err(BufferTooSmall { needed, capacity: w.buf.len() });
        }
        let end = w.len;
        w.len = field::LENGTH.start;
        w.u16(length_field(lenid as u16));
        w.len = end;
        let sum = checksum(&w.buf[1..end]);
        w.u16(sum);
        w.raw(EOI);
        Ok(w.len)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PylonRs485Options {
    /// Address of the first (master) module; Pylontech stacks start at 2.
    pub address: u8,
    /// How many parallel modules to present (1..=15).
    pub modules: u8,
    /// How many of the pack's cells each module reports.
    pub cells_per_module: u8,
    /// Half-duplex turnaround: how long after a request ends the reply is released.
    pub turnaround: Duration,
    /// Answer ADR 0x00 / 0xFF as the master module.
    pub answer_broadcast: bool,
}

/// `turnaround` comes from the config's `[rs485]` section (the serial line's, not the protocol's); the
/// broadcast answer is always on.
impl DriverOptions for PylonRs485Options {
    const FIELDS: &'static [OptionField<Self>] = &[
        OptionField {
            name: "address",
            help: "Address of the first (master) module; Pylontech stacks start at 2.",
            kind: OptionKind::Integer { min: 1, max: 254, unit: "" },
            get: |o| OptionValue::Integer(o.address.into()),
            set: |o, v| o.address = options::byte(v),
        },
        OptionField {
            name: "modules",
            help: "How many parallel modules to present.",
            kind: OptionKind::Integer { min: 1, max: 15, unit: "" },
            get: |o| OptionValue::Integer(o.modules.into()),
            set: |o, v| o.modules = options::byte(v),
        },
        OptionField {
            name: "cells_per_module",
            help: "How many of the pack's cells each module reports.",
            kind: OptionKind::Integer { min: 1, max: 32, unit: "" },
            get: |o| OptionValue::Integer(o.cells_per_module.into()),
            set: |o, v| o.cells_per_module = options::byte(v),
        },
    ];
}

impl Default for PylonRs485Options {
    fn default() -> Self {
        PylonRs485Options {
            address: 2,
            modules: 1,
            cells_per_module: 16,
            turnaround: Duration::from_millis(10),
            answer_broadcast: true,
        }
    }
}

/// Which modules a reply describes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Target {
    Module(u8),
    All,
}

/// A reply waiting for the turnaround delay; encoded from the view when released.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Pending {
    adr: u8,
    command: u8,
    rtn: Rtn,
    target: Target,
    at: Instant,
}

/// The Pylontech LV RS485 battery side. See the module doc.
#[derive(Clone, Debug)]
pub struct PylonRs485 {
    options: PylonRs485Options,
    rx: heapless::Vec<u8, MAX_REQUEST>,
    /// True between a `~` and its `\r` (bytes outside a frame are dropped).
    in_frame: bool,
    pending: Option<Pending>,
    last_heard: Option<Instant>,
}

const KELVIN_OFFSET_DK: i32 = 2731;
const DEVICE_NAME: &str = "US2000C";
const MANUFACTURER: &str = "PYLON";
const SOFTWARE_VERSION: u16 = 0x0100;
const TEMPERATURES: u8 = 5;

/// The highest design pack voltage the protocol carries: 65.535 V in 16-bit mV, i.e. 65.5 V in the core's 0.1 V.
pub const MAX_DESIGN_VOLTAGE: DeciVolts = DeciVolts(u16::MAX / 100);

/// Refuses a pack whose design maximum voltage does not fit the protocol's 16-bit millivolts (module voltage,
/// charge voltage limit): such a pack could only ever be answered "charge and discharge disabled".
pub fn check_pack(design: &PackDesign) -> Result<(), PackNotCarried> {
    if design.max_pack_voltage <= MAX_DESIGN_VOLTAGE {
        Ok(())
    } else {
        Err(PackNotCarried {
            protocol: "pylontech-rs485",
            design_max: design.max_pack_voltage,
            limit: MAX_DESIGN_VOLTAGE,
        })
    }
}

fn deci_kelvin(t: Option<DeciCelsius>) -> u16 {
    (t.map_or(0, |t| t.0 as i32) + KELVIN_OFFSET_DK).clamp(0, u16::MAX as i32) as u16
}

fn millivolts(v: DeciVolts) -> u16 {
    (v.0 as u32 * 100).min(u16::MAX as u32) as u16
}

fn deciamps_i16(a: i32) -> i16 {
    a.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// The values one module reports, derived from the view.
struct ModuleValues<'v> {
    cells: &'v [crate::units::MilliVolts],
    voltage_mv: u16,
    current: i16,
    remaining_mah: u32,
    total_mah: u32,
    charge_limit: i16,
    discharge_limit: i16,
    charge_enable: bool,
    discharge_enable: bool,
}

impl PylonRs485 {
    pub fn new(options: PylonRs485Options) -> Self {
        let mut options = options;
        options.modules = options.modules.clamp(1, MAX_MODULES);
        options.cells_per_module = options.cells_per_module.max(1);
        options.address = options.address.clamp(1, 0xFE - options.modules);
        PylonRs485 { options, rx: heapless::Vec::new(), in_frame: false, pending: None, last_heard: None }
    }

    pub fn options(&self) -> &PylonRs485Options {
        &self.options
    }

    /// The module index at `adr`, if it is one of ours.
    fn module_at(&self, adr: u8) -> Option<u8> {
        let o = &self.options;
        (adr >= o.address && adr < o.address + o.modules).then(|| adr - o.address)
    }

    fn handle_frame(&mut self, now: Instant) {
        let frame = &self.rx[..];
        let Ok(header) = Header::parse(frame) else { return };
        let broadcast = header.adr == 0x00 || header.adr == 0xFF;
        let module = match self.module_at(header.adr) {
            Some(m) => m,
            None if broadcast && self.options.answer_broadcast => 0,
            None => return,
        };
        if header.cid1 != CID1_BATTERY {
            return;
        }
        let reply_adr = self.options.address + module;
        let mut pending = Pending {
            adr: reply_adr,
            command: header.cid2,
            rtn: Rtn::Normal,
            target: Target::Module(module),
            at: now + self.options.turnaround,
        };
        match header.check(frame) {
            Err(_) if broadcast => return,
            Err(FrameError::Malformed) => return,
            Err(FrameError::BadChksum) => pending.rtn = Rtn::ChksumError,
            Err(FrameError::BadLchksum) => pending.rtn = Rtn::LchksumError,
            Err(FrameError::BadFormat) => pending.rtn = Rtn::CommandFormatError,
            Ok(info) => {
                self.last_heard = Some(now);
                match header.cid2 {
                    cid2::PROTOCOL_VERSION | cid2::MANUFACTURER_INFO => {}
                    cid2::ANALOG_VALUES
                    | cid2::ALARM_INFO
                    | cid2::SYSTEM_PARAMETERS
                    | cid2::MANAGEMENT_INFO
                    | cid2::SERIAL_NUMBER => {
                        let all_allowed = matches!(header.cid2, cid2::ANALOG_VALUES | cid2::ALARM_INFO);
                        match info_byte(info, 0) {
                            None => {}
                            Some(ALL_MODULES) if all_allowed => pending.target = Target::All,
                            Some(ALL_MODULES) => {}
                            Some(adr) => match self.module_at(adr) {
                                Some(m) => pending.target = Target::Module(m),
                                None => pending.rtn = Rtn::AdrError,
                            },
                        }
                    }
                    _ => pending.rtn = Rtn::Cid2Invalid,
                }
            }
        }
        self.pending = Some(pending);
    }

    fn module_values<'v>(&self, view: &InverterView<'v>, module: u8) -> ModuleValues<'v> {
        let n = self.options.modules as i32;
        let cpm = self.options.cells_per_module as usize;
        let all = view.cell_voltages();
        let start = (module as usize * cpm).min(all.len());
        let cells = &all[start..(start + cpm).min(all.len())];
        let max_charge = view.max_charge_voltage();
        let fits = max_charge.0 as u32 * 100 <= u16::MAX as u32
            && view.voltage().is_none_or(|v| v.0 as u32 * 100 <= u16::MAX as u32);
        let usable = fits && view.data_valid();
        // A stable voltage to turn energy into charge: the middle of the allowed window, else the measured one.
        let nominal = (max_charge.0 as u32 + view.min_discharge_voltage().0 as u32) / 2;
        let nominal = if nominal > 0 { nominal } else { view.voltage().map_or(0, |v| v.0 as u32) };
        let total_mah = match (view.total_energy(), nominal) {
            (Some(wh), dv) if dv > 0 => (wh.0 as u64 * 10_000 / dv as u64 / n as u64).min(u32::MAX as u64) as u32,
            _ => 0,
        };
        let remaining_mah = view.soc().map_or(0, |soc| soc.of(total_mah));
        let limit = |a: DeciAmps| if usable { deciamps_i16(a.0.max(0) / n) } else { 0 };
        let charge_limit = limit(view.charge_current_limit());
        let discharge_limit = limit(view.discharge_current_limit());
        ModuleValues {
            cells,
            voltage_mv: view.voltage().map_or(0, millivolts),
            current: deciamps_i16(view.current().map_or(0, |c| c.0) / n),
            remaining_mah,
            total_mah,
            charge_limit,
            discharge_limit: -discharge_limit,
            charge_enable: charge_limit > 0,
            discharge_enable: discharge_limit > 0,
        }
    }

    fn targets(&self, target: Target) -> core::ops::Range<u8> {
        match target {
            Target::Module(m) => m..m + 1,
            Target::All => 0..self.options.modules,
        }
    }

    fn encode(&self, p: &Pending, view: &InverterView<'_>, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        if p.rtn != Rtn::Normal {
            return FrameWriter::frame(buf, PROTOCOL_VERSION, p.adr, CID1_BATTERY, p.rtn.code(), |_| {});
        }
        let address = self.options.address;
        let head = |w: &mut FrameWriter<'_>| match p.target {
            Target::Module(m) => {
                w.u8(address + m);
            }
            Target::All => {
                w.u8(self.options.modules);
            }
        };
        let module = match p.target {
            Target::Module(m) => m,
            Target::All => 0,
        };
        let (tmin, tmax) = (view.temperature_min(), view.temperature_max());
        FrameWriter::frame(buf, PROTOCOL_VERSION, p.adr, CID1_BATTERY, Rtn::Normal.code(), |w| match p.command {
            cid2::MANUFACTURER_INFO => {
                w.ascii(DEVICE_NAME, 10).u16(SOFTWARE_VERSION).ascii(MANUFACTURER, 20);
            }
            cid2::ANALOG_VALUES => {
                w.u8(0); // DATAFLAG: nothing changed since the last read
                head(w);
                for m in self.targets(p.target) {
                    let v = self.module_values(view, m);
                    w.u8(v.cells.len() as u8);
                    for c in v.cells {
                        w.u16(c.0);
                    }
                    // BMS board, then four cell groups: the extremes land on groups 1 and 2.
                    w.u8(TEMPERATURES).u16(deci_kelvin(tmax)).u16(deci_kelvin(tmin));
                    for _ in 2..TEMPERATURES {
                        w.u16(deci_kelvin(tmax));
                    }
                    w.i16(v.current).u16(v.voltage_mv);
                    if v.total_mah <= u16::MAX as u32 {
                        w.u16(v.remaining_mah as u16).u8(2).u16(v.total_mah as u16).u16(0);
                    } else {
                        w.u16(0xFFFF).u8(4).u16(0xFFFF).u16(0).u24(v.remaining_mah).u24(v.total_mah);
                    }
                }
            }
            cid2::ALARM_INFO => {
                w.u8(0);
                head(w);
                let alarms = view.alarms();
                let cell_min = view.cell_min().map(|(i, _)| i);
                let cell_max = view.cell_max().map(|(i, _)| i);
                use crate::supervisor::Alarms as A;
                let state = |below: bool, above: bool| {
                    if above {
                        2
                    } else if below {
                        1
                    } else {
                        0
                    }
                };
                for m in self.targets(p.target) {
                    let v = self.module_values(view, m);
                    let first = m as usize * self.options.cells_per_module as usize;
                    w.u8(v.cells.len() as u8);
                    for i in first..first + v.cells.len() {
                        w.u8(state(
                            alarms.contains(A::CELL_UNDER_VOLTAGE) && Some(i) == cell_min,
                            alarms.contains(A::CELL_OVER_VOLTAGE) && Some(i) == cell_max,
                        ));
                    }
                    let hot = alarms.contains(A::OVER_TEMPERATURE);
                    let cold = alarms.contains(A::UNDER_TEMPERATURE);
                    w.u8(TEMPERATURES).u8(state(false, hot)).u8(state(cold, false));
                    for _ in 2..TEMPERATURES {
                        w.u8(state(false, hot));
                    }
                    w.u8(0)
                        .u8(state(alarms.contains(A::PACK_UNDER_VOLTAGE), alarms.contains(A::PACK_OVER_VOLTAGE)))
                        .u8(0);
                    for _ in 0..5 {
                        w.u8(0);
                    }
                }
            }
            cid2::SYSTEM_PARAMETERS => {
                let v = self.module_values(view, module);
                let cells = match view.cells_in_series() {
                    0 => self.options.cells_per_module as u32,
                    c => c as u32,
                };
                let per_cell = |dv: DeciVolts| (dv.0 as u32 * 100 / cells).min(u16::MAX as u32) as u16;
                let (hi, lo) = (view.max_charge_voltage(), view.min_discharge_voltage());
                let t = view.temperature_limits();
                w.u8(0)
                    .u16(per_cell(hi))
                    .u16(per_cell(lo))
                    .u16(per_cell(lo))
                    .u16(deci_kelvin(Some(t.max)))
                    .u16(deci_kelvin(Some(t.min_charge)))
                    .i16(v.charge_limit)
                    .u16(millivolts(hi))
                    .u16(millivolts(lo))
                    .u16(millivolts(lo))
                    .u16(deci_kelvin(Some(t.max)))
                    .u16(deci_kelvin(Some(t.min_discharge)))
                    .i16(v.discharge_limit);
            }
            cid2::MANAGEMENT_INFO => {
                let v = self.module_values(view, module);
                let status = (v.charge_enable as u8) << 7 | (v.discharge_enable as u8) << 6;
                head(w);
                w.u16(millivolts(view.max_charge_voltage()))
                    .u16(millivolts(view.min_discharge_voltage()))
                    .i16(v.charge_limit)
                    .i16(v.discharge_limit)
                    .u8(status);
            }
            cid2::SERIAL_NUMBER => {
                head(w);
                let mut serial = *b"DBE-PYLON-EMU-00";
                serial[14] = b'0' + (module + 1) / 10;
                serial[15] = b'0' + (module + 1) % 10;
                for c in serial {
                    w.u8(c);
                }
            }
            // 0x4F: the version is in VER; INFO is empty.
            _ => {}
        })
    }
}

impl SerialInverter for PylonRs485 {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        for &b in bytes {
            if b == SOI {
                // A new frame always restarts the parser, whatever came before.
                self.rx.clear();
                self.in_frame = true;
            } else if !self.in_frame {
                continue;
            }
            if self.rx.push(b).is_err() {
                // Too long to be a request: drop it and wait for the next SOI.
                self.rx.clear();
                self.in_frame = false;
                continue;
            }
            if b == EOI {
                self.handle_frame(now);
                self.rx.clear();
                self.in_frame = false;
            }
        }
    }

    fn poll_transmit(
        &mut self,
        now: Instant,
        view: &InverterView<'_>,
        buf: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        match self.pending {
            Some(p) if now >= p.at => {
                let n = self.encode(&p, view, buf)?;
                self.pending = None;
                Ok(n)
            }
            _ => Ok(0),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|p| p.at)
    }

    fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatteryModel, Chemistry, PackDesign, Reading};
    use crate::supervisor::{Output, TemperatureLimits};
    use crate::units::*;
    use std::vec::Vec;

    // Requests exactly as the PyPI `pylontech` client (Tomcat42) encodes them (printed by its PylontechEncode).
    pub(crate) const REQ_ANALOG_0: &[u8] = b"~20024642C0040201FCD2\r";
    pub(crate) const REQ_ANALOG_1: &[u8] = b"~20034642C0040302FCCF\r";
    pub(crate) const REQ_ANALOG_ALL: &[u8] = b"~20024642C00402ffFC67\r";
    pub(crate) const REQ_VERSION: &[u8] = b"~2002464F0000FD98\r";
    pub(crate) const REQ_MANUFACTURER: &[u8] = b"~200246510000FDAC\r";
    pub(crate) const REQ_ALARM_0: &[u8] = b"~20024644C0040201FCD0\r";
    pub(crate) const REQ_SYSTEM_PARAMETERS: &[u8] = b"~200246470000FDA7\r";
    pub(crate) const REQ_MANAGEMENT_0: &[u8] = b"~20024692C0040201FCCD\r";
    pub(crate) const REQ_SERIAL_0: &[u8] = b"~20024693C0040201FCCC\r";

    /// A real UP2500's 0x92 reply (Frankkkkk/python-pylontech tests): 28.4 V / 23.2 V, +55.5 A / -55.5 A,
    /// charge and discharge enabled.
    const UP2500_MANAGEMENT: &[u8] = b"~20024600B014026EF05AA0022BFDD5C0F915\r";
    /// A real module's reply to a request with a bad checksum (quoted in mikaabra/pylontech-bms-mqtt).
    const REAL_CHKSUM_ERROR: &[u8] = b"~200246020000FDB0\r";

    fn lv_model() -> BatteryModel {
        let mut m = BatteryModel::new(PackDesign {
            chemistry: Chemistry::Lfp,
            cells: 16,
            max_pack_voltage: DeciVolts(576),
            min_pack_voltage: DeciVolts(400),
            max_cell_voltage: MilliVolts(3650),
            min_cell_voltage: MilliVolts(2500),
            max_cell_deviation: MilliVolts(300),
        });
        let t = Instant::ZERO;
        m.pack_voltage = Some(Reading::new(DeciVolts(528), t));
        m.current = Some(Reading::new(DeciAmps(-125), t));
        m.temperature_min = Some(Reading::new(DeciCelsius(150), t));
        m.temperature_max = Some(Reading::new(DeciCelsius(255), t));
        let cells: Vec<MilliVolts> = (0..16).map(|i| MilliVolts(3300 + i)).collect();
        m.cells.set_voltages(t, &cells);
        m
    }

    fn lv_output() -> Output {
        Output {
            soc: Some(BasisPoints(5123)),
            total_energy: Some(WattHours(5120)),
            remaining_energy: Some(WattHours(2623)),
            charge_current_limit: DeciAmps(500),
            discharge_current_limit: DeciAmps(1000),
            max_charge_voltage: DeciVolts(560),
            min_discharge_voltage: DeciVolts(448),
            // The supervisor's defaults (50 °C, 0 °C for charging, -20 °C for discharging).
            temperature_limits: TemperatureLimits {
                max: DeciCelsius(500),
                min_charge: DeciCelsius(0),
                min_discharge: DeciCelsius(-200),
            },
            data_valid: true,
            ..Output::default()
        }
    }

    /// Sends `request` and returns the reply released after the turnaround delay (empty: silence).
    fn ask(p: &mut PylonRs485, request: &[u8], view: &InverterView<'_>) -> Vec<u8> {
        let now = Instant::from_millis(5000);
        p.handle_bytes(now, request);
        let mut buf = [0u8; 2048];
        let Some(at) = p.poll_timeout() else { return Vec::new() };
        assert_eq!(p.poll_transmit(now, view, &mut buf), Ok(0), "released before the turnaround");
        assert_eq!(at, now + Duration::from_millis(10));
        let n = p.poll_transmit(at, view, &mut buf).unwrap();
        assert_eq!(p.poll_timeout(), None);
        buf[..n].to_vec()
    }

    fn with_view<R>(f: impl FnOnce(&InverterView<'_>) -> R) -> R {
        let (m, o) = (lv_model(), lv_output());
        f(&InverterView::new(&m, &o))
    }

    #[test]
    fn checksums_match_documented_frames() {
        for frame in [UP2500_MANAGEMENT, REAL_CHKSUM_ERROR, REQ_ANALOG_0, REQ_ANALOG_ALL, REQ_VERSION] {
            let h = Header::parse(frame).unwrap();
            assert!(h.check(frame).is_ok(), "{}", core::str::from_utf8(frame).unwrap());
        }
        // Tomcat42's docstring example.
        let doc = b"~2002464FC0048520FCB2\r";
        assert!(Header::parse(doc).unwrap().check(doc).is_ok());
        assert_eq!(length_field(0), 0x0000);
        assert_eq!(length_field(4), 0xC004);
        assert_eq!(length_field(18), 0xD012);
        assert_eq!(length_field(20), 0xB014);
    }

    #[test]
    fn management_info_reproduces_a_real_up2500_reply() {
        let mut m = lv_model();
        m.pack_voltage = Some(Reading::new(DeciVolts(266), Instant::ZERO));
        let o = Output {
            charge_current_limit: DeciAmps(555),
            discharge_current_limit: DeciAmps(555),
            max_charge_voltage: DeciVolts(284),
            min_discharge_voltage: DeciVolts(232),
            ..lv_output()
        };
        let view = InverterView::new(&m, &o);
        let mut p = PylonRs485::new(PylonRs485Options::default());
        assert_eq!(ask(&mut p, REQ_MANAGEMENT_0, &view), UP2500_MANAGEMENT);
    }

    #[test]
    fn checksum_error_reply_matches_a_real_module() {
        with_view(|view| {
            let mut p = PylonRs485::new(PylonRs485Options::default());
            let mut bad = REQ_ANALOG_0.to_vec();
            bad[17] = b'0'; // corrupt CHKSUM
            assert_eq!(ask(&mut p, &bad, view), REAL_CHKSUM_ERROR);
        })
    }

    /// Replies pinned after decoding them with the PyPI `pylontech` client (see `print_replies_for_python`).
    #[test]
    fn replies_are_pinned() {
        with_view(|view| {
            let mut p = PylonRs485::new(PylonRs485Options::default());
            for (req, reply) in PINNED {
                assert_eq!(
                    core::str::from_utf8(&ask(&mut p, req, view)).unwrap(),
                    core::str::from_utf8(reply).unwrap()
                );
            }
        })
    }

    /// Replies of one module to the client's requests, for `lv_model`/`lv_output`; each was fed to the PyPI
    /// `pylontech` client (`PylontechRS485.receive` on a `loop://` port, then `PylontechDecode`) and decoded to
    /// the view's values: 16 cells 3.300..3.315 V, temperatures 25.5/15.0 °C, -12.5 A, 52.8 V, 52.043 of
    /// 101.587 Ah (51.23 %), limits 56.0/44.8 V, +50.0/-100.0 A, charge and discharge enabled, serial
    /// `DBE-PYLON-EMU-01`, name `US2000C`, manufacturer `PYLON`.
    const PINNED: &[(&[u8], &[u8])] = &[
        (REQ_ANALOG_0, b"~20024600B07E0002100CE40CE50CE60CE70CE80CE90CEA0CEB0CEC0CED0CEE0CEF0CF00CF10CF20CF3050BAA0B410BAA0BAA0BAAFF83CE40FFFF04FFFF000000CB4B018CD3E04A\r"),
        (REQ_ANALOG_1, b""),
        (REQ_ANALOG_ALL, b"~20024600B07E0002100CE40CE50CE60CE70CE80CE90CEA0CEB0CEC0CED0CEE0CEF0CF00CF10CF20CF3050BAA0B410BAA0BAA0BAAFF83CE40FFFF04FFFF000000CB4B018CD3E04A\r"),
        (REQ_VERSION, b"~200246000000FDB2\r"),
        (REQ_MANUFACTURER, b"~20024600C04055533230303043000000010050594C4F4E000000000000000000000000000000F116\r"),
        (REQ_ALARM_0, b"~20024600A042000210000000000000000000000000000000000500000000000000000000000000F133\r"),
        (REQ_SYSTEM_PARAMETERS, b"~20024600B032000DAC0AF00AF00C9F0AAB01F4DAC0AF00AF000C9F09E3FC18F229\r"),
        (REQ_MANAGEMENT_0, b"~20024600B01402DAC0AF0001F4FC18C0F91A\r"),
        (REQ_SERIAL_0, b"~20024600C022024442452D50594C4F4E2D454D552D3031F651\r"),
    ];

    #[test]
    fn errors_and_silence() {
        with_view(|view| {
            let mut p = PylonRs485::new(PylonRs485Options::default());
            let frame = |adr: u8, cid1: u8, cid2: u8, info: &[u8]| {
                let mut buf = [0u8; 64];
                let n = FrameWriter::frame(&mut buf, 0x20, adr, cid1, cid2, |w| {
                    for &b in info {
                        w.u8(b);
                    }
                })
                .unwrap();
                buf[..n].to_vec()
            };
            let rtn = |reply: Vec<u8>| Header::parse(&reply).map(|h| h.cid2).ok();
            // Unknown command, and a V3.5 system command.
            assert_eq!(rtn(ask(&mut p, &frame(2, 0x46, 0x99, &[]), view)), Some(0x04));
            assert_eq!(rtn(ask(&mut p, &frame(2, 0x46, 0x61, &[]), view)), Some(0x04));
            // A module we do not have named in INFO.
            assert_eq!(rtn(ask(&mut p, &frame(2, 0x46, 0x42, &[0x05]), view)), Some(0x90));
            // LCHKSUM wrong (LENGTH 0004 with a valid CHKSUM).
            let mut bad = b"~200246420004".to_vec();
            bad.extend_from_slice(b"0201");
            let sum = checksum(&bad[1..]);
            let mut w = [0u8; 4];
            FrameWriter::new(&mut w).u16(sum);
            bad.extend_from_slice(&w);
            bad.push(b'\r');
            assert_eq!(rtn(ask(&mut p, &bad, view)), Some(0x03));
            // Another address, another device type, a broadcast with a bad checksum, garbage: silence.
            assert!(ask(&mut p, &frame(5, 0x46, 0x42, &[5]), view).is_empty());
            assert!(ask(&mut p, &frame(2, 0x4A, 0x42, &[2]), view).is_empty());
            let mut b = frame(0xFF, 0x46, 0x4F, &[]);
            b[14] = b'0';
            assert!(ask(&mut p, &b, view).is_empty());
            assert!(ask(&mut p, b"~zz\r", view).is_empty());
            // A broadcast is answered by the master.
            let reply = ask(&mut p, &frame(0, 0x46, 0x4F, &[]), view);
            assert_eq!(Header::parse(&reply).unwrap().adr, 2);
        })
    }

    #[test]
    fn interrupted_frame_does_not_eat_the_next_one() {
        with_view(|view| {
            let mut p = PylonRs485::new(PylonRs485Options::default());
            let mut stream = b"~2002464".to_vec(); // cut short
            stream.extend_from_slice(b"\x00\xffjunk\r");
            stream.extend_from_slice(&REQ_VERSION[..5]);
            stream.extend_from_slice(REQ_SERIAL_0);
            let reply = ask(&mut p, &stream, view);
            assert_eq!(Header::parse(&reply).unwrap().cid2, 0);
            assert!(core::str::from_utf8(&reply).unwrap().contains(
                // "DBE-PYLON-EMU-01" in hex
                "4442452D50594C4F4E2D454D552D3031"
            ));
        })
    }

    /// 0x47 reports the temperature bounds the supervisor enforces (the user's configured ones), in 0.1 K.
    #[test]
    fn system_parameters_carry_the_configured_temperature_limits() {
        let m = lv_model();
        let o = Output {
            temperature_limits: TemperatureLimits {
                max: DeciCelsius(450),
                min_charge: DeciCelsius(50),
                min_discharge: DeciCelsius(-150),
            },
            ..lv_output()
        };
        let view = InverterView::new(&m, &o);
        let mut p = PylonRs485::new(PylonRs485Options::default());
        let reply = ask(&mut p, REQ_SYSTEM_PARAMETERS, &view);
        let info = &core::str::from_utf8(&reply).unwrap()[13..];
        // 45.0 °C = 3181 dK, 5.0 °C = 2781 dK, -15.0 °C = 2581 dK.
        assert_eq!((&info[14..18], &info[18..22]), ("0C6D", "0ADD"), "charge high/low temperature");
        assert_eq!((&info[38..42], &info[42..46]), ("0C6D", "0A15"), "discharge high/low temperature");
    }

    /// 65.5 V fits 16-bit millivolts (65 500 mV); 65.6 V (65 600 mV) does not; a 403.2 V LEAF certainly not.
    #[test]
    fn check_pack_refuses_designs_above_16_bit_millivolts() {
        let design = |dv| PackDesign { max_pack_voltage: DeciVolts(dv), ..lv_model().design };
        assert_eq!(check_pack(&design(576)), Ok(()));
        assert_eq!(check_pack(&design(655)), Ok(()));
        let e = check_pack(&design(656)).unwrap_err();
        assert_eq!(
            e,
            PackNotCarried { protocol: "pylontech-rs485", design_max: DeciVolts(656), limit: DeciVolts(655) }
        );
        let leaf = crate::battery::AnyBattery::new(crate::battery::BatteryKind::NissanLeaf.into());
        let leaf = crate::battery::Battery::design(&leaf);
        let e = crate::inverter::InverterKind::PylonRs485.check_pack(&leaf).unwrap_err();
        assert_eq!(e.design_max, leaf.max_pack_voltage);
        assert_eq!(
            std::string::ToString::to_string(&e),
            std::format!(
                "pylontech-rs485 carries pack voltages only up to 65.5 V (16-bit millivolts); this pack's design \
                 maximum is {}",
                leaf.max_pack_voltage
            )
        );
        // The other protocols carry 0.1 V in 16 bits.
        assert_eq!(crate::inverter::InverterKind::BydModbus.check_pack(&leaf), Ok(()));
        assert_eq!(crate::inverter::InverterKind::PylonCan.check_pack(&leaf), Ok(()));
    }

    #[test]
    fn high_voltage_pack_is_not_offered() {
        let m = lv_model();
        let o = Output { max_charge_voltage: DeciVolts(4000), ..lv_output() };
        let view = InverterView::new(&m, &o);
        let mut p = PylonRs485::new(PylonRs485Options::default());
        let reply = ask(&mut p, REQ_MANAGEMENT_0, &view);
        let text = core::str::from_utf8(&reply).unwrap();
        // Limits 0 and status 0 (no charge, no discharge).
        assert_eq!(&text[13 + 10..13 + 20], "0000000000");
    }

    #[test]
    fn buffer_too_small_keeps_the_reply() {
        with_view(|view| {
            let mut p = PylonRs485::new(PylonRs485Options::default());
            p.handle_bytes(Instant::ZERO, REQ_ANALOG_0);
            let at = p.poll_timeout().unwrap();
            let mut small = [0u8; 20];
            assert!(matches!(p.poll_transmit(at, view, &mut small), Err(BufferTooSmall { capacity: 20, .. })));
            let mut buf = [0u8; 512];
            assert!(p.poll_transmit(at, view, &mut buf).unwrap() > 0);
        })
    }

    /// `cargo test -p dbe-core print_replies_for_python -- --ignored --nocapture` prints one reply per line
    /// for the Python cross-check.
    #[test]
    #[ignore]
    fn print_replies_for_python() {
        with_view(|view| {
            for modules in [1, 2] {
                let mut p = PylonRs485::new(PylonRs485Options { modules, ..Default::default() });
                for req in [
                    REQ_ANALOG_0,
                    REQ_ANALOG_1,
                    REQ_ANALOG_ALL,
                    REQ_VERSION,
                    REQ_MANUFACTURER,
                    REQ_ALARM_0,
                    REQ_SYSTEM_PARAMETERS,
                    REQ_MANAGEMENT_0,
                    REQ_SERIAL_0,
                ] {
                    let r = ask(&mut p, req, view);
                    std::println!(
                        "{modules} {} {}",
                        core::str::from_utf8(&req[..req.len() - 1]).unwrap(),
                        core::str::from_utf8(&r[..r.len().saturating_sub(1)]).unwrap()
                    );
                }
            }
        })
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics_and_the_next_good_request_is_answered(
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            split in 0usize..22,
        ) {
            let (m, o) = (lv_model(), lv_output());
            let view = InverterView::new(&m, &o);
            let mut p = PylonRs485::new(PylonRs485Options { modules: 3, ..Default::default() });
            p.handle_bytes(Instant::ZERO, &garbage);
            let mut buf = [0u8; 2048];
            let _ = p.poll_transmit(Instant::from_millis(100), &view, &mut buf);
            let expected = ask(&mut PylonRs485::new(PylonRs485Options { modules: 3, ..Default::default() }), REQ_MANAGEMENT_0, &view);
            let (a, b) = REQ_MANAGEMENT_0.split_at(split.min(REQ_MANAGEMENT_0.len()));
            p.handle_bytes(Instant::from_millis(4000), a);
            proptest::prop_assert_eq!(ask(&mut p, b, &view), expected);
        }
    }
}
