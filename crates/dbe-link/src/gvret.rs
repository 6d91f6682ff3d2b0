//! GVRET, the binary protocol of collin80's GVRET/M2RET firmware that SavvyCAN speaks over serial and TCP (port
//! 23). DBE plays the device so SavvyCAN can watch and inject into its bus; it can also be the host of a real
//! GVRET board. Both directions are here: [`Command`] (host → device) and [`Reply`] (device → host), each with
//! parse and encode, and a [`Decoder`] for either.
//!
//! Every message starts with 0xF1 and a command byte; the length follows from the command (and, for frames,
//! from the length nibble). Bytes outside a message are dropped silently, as the firmware does ("any bytes
//! between checksum and 0xF1 are thrown away"), and counted ([`Decoder::skipped`]). The single byte 0xE7 from
//! the host switches the device to binary mode. Multi-byte numbers are little-endian; a CAN id has bit 31 set
//! for an extended frame. The trailing "checksum" byte of frames is written as 0 by both SavvyCAN and the
//! firmware and checked by neither; we write 0 and ignore it too. GVRET has no remote frames; encoding one
//! fails with [`RemoteFrameUnsupported`].
//!
//! | cmd  | host → device                         | device → host                                          |
//! |------|---------------------------------------|--------------------------------------------------------|
//! | 0x00 | id u32, bus u8, len u8, data, chk     | time µs u32, id u32, len \| bus << 4, data, chk       |
//! | 0x01 | time sync request                     | time µs u32                                            |
//! | 0x02 | get digital inputs                    | bits u8, xor checksum                                  |
//! | 0x03 | get analog inputs                     | 4 × u16, xor checksum                                  |
//! | 0x04 | set digital outputs: bits u8          | —                                                      |
//! | 0x05 | setup CAN: bus0 u32, bus1 u32         | —                                                      |
//! | 0x06 | get CAN params                        | per bus: flags u8, speed u32 (2 buses)                 |
//! | 0x07 | get device info                       | build u16, eeprom u8, file type u8, autolog u8, sw u8  |
//! | 0x08 | set single-wire: 0x10 on, else off    | —                                                      |
//! | 0x09 | keepalive                             | 0xDE 0xAD                                              |
//! | 0x0A | set system type: u8                   | —                                                      |
//! | 0x0B | echo CAN frame (layout of 0x00)       | (the frame, as 0x00)                                   |
//! | 0x0C | get number of buses                   | count u8                                               |
//! | 0x0D | get extended buses                    | per bus: flags u8, speed u32 (SWCAN, LIN1, LIN2)       |
//! | 0x0E | setup extended buses: 3 × u32         | —                                                      |
//!
//! Setup words (0x05, 0x0E): bit 31 says the flags are present, bit 30 enabled, bit 29 listen-only, bit 28
//! single-wire; the low bits are the speed in bit/s; 0 disables the bus (see [`BusSetting`]). Param flag bytes
//! (0x06, 0x0D): bit 0 enabled, bit 4 listen-only, bit 6 single-wire (see [`BusParams`]).
//!
//! SavvyCAN's connect sequence (`GVRetSerial::deviceConnected`, then `procRXChar` and `handleTick`), which a
//! device built on this codec must satisfy:
//! 1. on connect the host sends `E7 E7`, then `F1 0C`, `F1 06`, `F1 07`, `F1 01`, `F1 09` in one write;
//! 2. the device answers `F1 0C n` (the host then asks `F1 0D`, answered with the extended-bus block), `F1 06`
//!    with its bus parameters — this reply is what marks the connection CONNECTED; without it SavvyCAN gives up
//!    after 5 s and retries in the other serial mode —, `F1 07` device info, `F1 01` its clock, `F1 09 DE AD`;
//! 3. every 250 ms the host sends `F1 09`; each device `F1 09` resets a counter of 10 ticks, so the device must
//!    answer keepalives within 2.5 s or SavvyCAN drops the connection;
//! 4. then the device streams `F1 00` frames and the host sends `F1 00` frames to transmit and `F1 05` to
//!    change bus settings (followed by a 0 byte that the firmware ignores).
//!
//! Disagreements and quirks: the firmware's analog-input reply computes its XOR over one byte fewer than it
//! sends; we compute it over all preceding bytes and do not check either reply's checksum. SavvyCAN never
//! leaves its analog-input state, so a device should not send 0x03 unasked. The firmware masks setup speeds to
//! 20 bits, SavvyCAN to 28; we keep 28.
//!
//! Sources (facts only): collin80/GVRET `GVRET.ino` (`loop` command state machine, `sendFrameToUSB`,
//! `checksumCalc`), `GVRET.h` (command numbers); collin80/SavvyCAN `connections/gvretserial.cpp`
//! (`deviceConnected`, `procRXChar`, `piSendFrame`, `piSetBusSettings`, `handleTick`, `sendCommValidation`,
//! TCP port 23).

use std::marker::PhantomData;

use dbe_core::CanFrame;

use crate::hex;

/// First byte of every message.
pub const SYNC: u8 = 0xF1;
/// Host byte that switches the device to binary mode.
pub const BINARY_MODE: u8 = 0xE7;
/// TCP port SavvyCAN connects to.
pub const TCP_PORT: u16 = 23;

/// Command numbers (the byte after 0xF1).
pub mod cmd {
    pub const CAN_FRAME: u8 = 0x00;
    pub const TIME_SYNC: u8 = 0x01;
    pub const DIGITAL_INPUTS: u8 = 0x02;
    pub const ANALOG_INPUTS: u8 = 0x03;
    pub const SET_DIGITAL_OUTPUTS: u8 = 0x04;
    pub const SETUP_CANBUS: u8 = 0x05;
    pub const CANBUS_PARAMS: u8 = 0x06;
    pub const DEVICE_INFO: u8 = 0x07;
    pub const SET_SINGLE_WIRE: u8 = 0x08;
    pub const KEEPALIVE: u8 = 0x09;
    pub const SET_SYSTEM_TYPE: u8 = 0x0A;
    pub const ECHO_CAN_FRAME: u8 = 0x0B;
    pub const NUM_BUSES: u8 = 0x0C;
    pub const EXT_BUSES: u8 = 0x0D;
    pub const SETUP_EXT_BUSES: u8 = 0x0E;
    /// CAN FD frame (M2RET/ESP32RET); not supported.
    pub const FD_FRAME: u8 = 0x14;
}

/// The keepalive reply's payload.
pub const KEEPALIVE_MAGIC: [u8; 2] = [0xDE, 0xAD];
const EXTENDED_BIT: u32 = 1 << 31;
const SINGLE_WIRE_ON: u8 = 0x10;

/// A bus setting word of `0x05`/`0x0E`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BusSetting {
    pub speed: u32,
    pub enabled: bool,
    pub listen_only: bool,
    pub single_wire: bool,
}

impl BusSetting {
    const FLAGS_PRESENT: u32 = 1 << 31;
    const ENABLED: u32 = 1 << 30;
    const LISTEN_ONLY: u32 = 1 << 29;
    const SINGLE_WIRE: u32 = 1 << 28;
    const SPEED_MASK: u32 = 0x0FFF_FFFF;

    /// Reads a word; a non-zero word without the flags bit (older hosts) means "enabled at this speed", 0 means
    /// "disabled".
    pub fn from_wire(w: u32) -> Self {
        if w & Self::FLAGS_PRESENT == 0 {
            return BusSetting { speed: w & Self::SPEED_MASK, enabled: w != 0, listen_only: false, single_wire: false };
        }
        BusSetting {
            speed: w & Self::SPEED_MASK,
            enabled: w & Self::ENABLED != 0,
            listen_only: w & Self::LISTEN_ONLY != 0,
            single_wire: w & Self::SINGLE_WIRE != 0,
        }
    }

    /// Always writes the flags form (as SavvyCAN does); speeds above 28 bits are truncated.
    pub fn to_wire(self) -> u32 {
        Self::FLAGS_PRESENT
            | (self.speed & Self::SPEED_MASK)
            | if self.enabled { Self::ENABLED } else { 0 }
            | if self.listen_only { Self::LISTEN_ONLY } else { 0 }
            | if self.single_wire { Self::SINGLE_WIRE } else { 0 }
    }
}

/// A bus's state in the `0x06`/`0x0D` replies.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BusParams {
    pub enabled: bool,
    pub listen_only: bool,
    pub single_wire: bool,
    pub speed: u32,
}

impl BusParams {
    fn flags(self) -> u8 {
        u8::from(self.enabled) | (u8::from(self.listen_only) << 4) | (u8::from(self.single_wire) << 6)
    }

    fn from_bytes(b: &[u8]) -> Self {
        BusParams {
            enabled: b[0] & 0x0F != 0,
            listen_only: b[0] & 0x10 != 0,
            single_wire: b[0] & 0x40 != 0,
            speed: le32(&b[1..5]),
        }
    }

    fn push(self, out: &mut Vec<u8>) {
        out.push(self.flags());
        out.extend_from_slice(&self.speed.to_le_bytes());
    }
}

/// Host → device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The single byte 0xE7.
    EnableBinary,
    /// `0x00`: transmit on `bus` (the firmware uses the low 2 bits).
    SendFrame {
        bus: u8,
        frame: CanFrame,
    },
    TimeSync,
    GetDigitalInputs,
    GetAnalogInputs,
    SetDigitalOutputs(u8),
    SetupCanBus {
        can0: BusSetting,
        can1: BusSetting,
    },
    GetCanBusParams,
    GetDeviceInfo,
    SetSingleWire(bool),
    KeepAlive,
    SetSystemType(u8),
    /// `0x0B`: the device sends this frame back as if received (the firmware uses the low bit of `bus`).
    EchoCanFrame {
        bus: u8,
        frame: CanFrame,
    },
    GetNumBuses,
    GetExtBuses,
    SetupExtBuses {
        swcan: BusSetting,
        lin1: BusSetting,
        lin2: BusSetting,
    },
}

/// Device → host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `0x00`: a frame received on `bus` (0-15) at the device's microsecond clock (wraps every 71 minutes).
    Frame {
        timestamp_us: u32,
        bus: u8,
        frame: CanFrame,
    },
    TimeSync {
        timestamp_us: u32,
    },
    DigitalInputs(u8),
    AnalogInputs([u16; 4]),
    CanBusParams {
        can0: BusParams,
        can1: BusParams,
    },
    DeviceInfo {
        build: u16,
        eeprom_version: u8,
        file_type: u8,
        auto_log: u8,
        single_wire: u8,
    },
    KeepAlive,
    NumBuses(u8),
    ExtBuses {
        swcan: BusParams,
        lin1: BusParams,
        lin2: BusParams,
    },
}

/// Why bytes after 0xF1 were not a message. The decoder drops the 0xF1 and looks for the next one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown GVRET command {0:#04x}")]
    UnknownCommand(u8),
    #[error("GVRET command {0:#04x} (CAN FD frame) is not supported")]
    Unsupported(u8),
    #[error("GVRET frame length {0} is more than 8")]
    BadLength(u8),
    #[error("GVRET frame id {0:#x} is out of range")]
    BadId(u32),
    #[error("GVRET keepalive reply {0:02x?} is not DE AD")]
    BadKeepAlive([u8; 2]),
}

/// GVRET cannot carry remote frames.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("GVRET cannot carry remote frames")]
pub struct RemoteFrameUnsupported;

/// The outcome of trying to parse a message at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<M> {
    /// A message and how many bytes it took.
    Message(M, usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a message at this position.
    Invalid(ParseError),
}

/// A message type the [`Decoder`] can split out of a stream: [`Command`] or [`Reply`].
pub trait Message: Sized {
    /// Parses a message at the start of `buf`, which begins with 0xF1 (or 0xE7 for commands).
    fn parse(buf: &[u8]) -> Parsed<Self>;
    /// Appends the message.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), RemoteFrameUnsupported>;
    /// Whether `b` can start a message.
    fn starts_message(b: u8) -> bool {
        b == SYNC
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// The 32-bit id word, bit 31 for extended.
fn id_word(frame: &CanFrame) -> u32 {
    frame.raw_id() | if frame.is_extended() { EXTENDED_BIT } else { 0 }
}

fn frame_from(word: u32, data: &[u8]) -> Result<CanFrame, ParseError> {
    let extended = word & EXTENDED_BIT != 0;
    hex::build_frame(word & !EXTENDED_BIT, extended, None, data).ok_or(ParseError::BadId(word))
}

/// `buf[..n]` if present, else `Incomplete`.
macro_rules! need {
    ($buf:expr, $n:expr) => {
        match $buf.get(..$n) {
            Some(b) => b,
            None => return Parsed::Incomplete,
        }
    };
}

/// Host → device frame body after `F1 cmd`: id u32, bus u8, len u8, data, checksum.
fn parse_host_frame(buf: &[u8]) -> Parsed<(u8, CanFrame)> {
    let head = need!(buf, 8);
    let len = head[7];
    if len > 8 {
        return Parsed::Invalid(ParseError::BadLength(len));
    }
    let total = 8 + usize::from(len) + 1;
    let all = need!(buf, total);
    match frame_from(le32(&head[2..6]), &all[8..8 + usize::from(len)]) {
        Ok(frame) => Parsed::Message((head[6], frame), total),
        Err(e) => Parsed::Invalid(e),
    }
}

fn push_host_frame(out: &mut Vec<u8>, command: u8, bus: u8, frame: &CanFrame) -> Result<(), RemoteFrameUnsupported> {
    if frame.is_remote() {
        return Err(RemoteFrameUnsupported);
    }
    out.extend_from_slice(&[SYNC, command]);
    out.extend_from_slice(&id_word(frame).to_le_bytes());
    out.push(bus);
    out.push(frame.len() as u8);
    out.extend_from_slice(frame.data());
    out.push(0);
    Ok(())
}

impl Message for Command {
    fn parse(buf: &[u8]) -> Parsed<Self> {
        if buf.first() == Some(&BINARY_MODE) {
            return Parsed::Message(Command::EnableBinary, 1);
        }
        let head = need!(buf, 2);
        let simple = |c| Parsed::Message(c, 2);
        let with_byte = |f: fn(u8) -> Command| match buf.get(2) {
            Some(&b) => Parsed::Message(f(b), 3),
            None => Parsed::Incomplete,
        };
        match head[1] {
            cmd::CAN_FRAME | cmd::ECHO_CAN_FRAME => match parse_host_frame(buf) {
                Parsed::Message((bus, frame), n) => Parsed::Message(
                    if head[1] == cmd::CAN_FRAME {
                        Command::SendFrame { bus, frame }
                    } else {
                        Command::EchoCanFrame { bus, frame }
                    },
                    n,
                ),
                Parsed::Incomplete => Parsed::Incomplete,
                Parsed::Invalid(e) => Parsed::Invalid(e),
            },
            cmd::TIME_SYNC => simple(Command::TimeSync),
            cmd::DIGITAL_INPUTS => simple(Command::GetDigitalInputs),
            cmd::ANALOG_INPUTS => simple(Command::GetAnalogInputs),
            cmd::SET_DIGITAL_OUTPUTS => with_byte(Command::SetDigitalOutputs),
            cmd::SETUP_CANBUS => {
                let b = need!(buf, 10);
                Parsed::Message(
                    Command::SetupCanBus {
                        can0: BusSetting::from_wire(le32(&b[2..6])),
                        can1: BusSetting::from_wire(le32(&b[6..10])),
                    },
                    10,
                )
            }
            cmd::CANBUS_PARAMS => simple(Command::GetCanBusParams),
            cmd::DEVICE_INFO => simple(Command::GetDeviceInfo),
            cmd::SET_SINGLE_WIRE => with_byte(|b| Command::SetSingleWire(b == SINGLE_WIRE_ON)),
            cmd::KEEPALIVE => simple(Command::KeepAlive),
            cmd::SET_SYSTEM_TYPE => with_byte(Command::SetSystemType),
            cmd::NUM_BUSES => simple(Command::GetNumBuses),
            cmd::EXT_BUSES => simple(Command::GetExtBuses),
            cmd::SETUP_EXT_BUSES => {
                let b = need!(buf, 14);
                Parsed::Message(
                    Command::SetupExtBuses {
                        swcan: BusSetting::from_wire(le32(&b[2..6])),
                        lin1: BusSetting::from_wire(le32(&b[6..10])),
                        lin2: BusSetting::from_wire(le32(&b[10..14])),
                    },
                    14,
                )
            }
            cmd::FD_FRAME => Parsed::Invalid(ParseError::Unsupported(head[1])),
            other => Parsed::Invalid(ParseError::UnknownCommand(other)),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), RemoteFrameUnsupported> {
        let mut simple = |c: u8| out.extend_from_slice(&[SYNC, c]);
        match self {
            Command::EnableBinary => out.push(BINARY_MODE),
            Command::SendFrame { bus, frame } => push_host_frame(out, cmd::CAN_FRAME, *bus, frame)?,
            Command::EchoCanFrame { bus, frame } => push_host_frame(out, cmd::ECHO_CAN_FRAME, *bus, frame)?,
            Command::TimeSync => simple(cmd::TIME_SYNC),
            Command::GetDigitalInputs => simple(cmd::DIGITAL_INPUTS),
            Command::GetAnalogInputs => simple(cmd::ANALOG_INPUTS),
            Command::SetDigitalOutputs(b) => out.extend_from_slice(&[SYNC, cmd::SET_DIGITAL_OUTPUTS, *b]),
            Command::SetupCanBus { can0, can1 } => {
                out.extend_from_slice(&[SYNC, cmd::SETUP_CANBUS]);
                out.extend_from_slice(&can0.to_wire().to_le_bytes());
                out.extend_from_slice(&can1.to_wire().to_le_bytes());
            }
            Command::GetCanBusParams => simple(cmd::CANBUS_PARAMS),
            Command::GetDeviceInfo => simple(cmd::DEVICE_INFO),
            Command::SetSingleWire(on) => {
                out.extend_from_slice(&[SYNC, cmd::SET_SINGLE_WIRE, if *on { SINGLE_WIRE_ON } else { 0xFF }])
            }
            Command::KeepAlive => simple(cmd::KEEPALIVE),
            Command::SetSystemType(t) => out.extend_from_slice(&[SYNC, cmd::SET_SYSTEM_TYPE, *t]),
            Command::GetNumBuses => simple(cmd::NUM_BUSES),
            Command::GetExtBuses => simple(cmd::EXT_BUSES),
            Command::SetupExtBuses { swcan, lin1, lin2 } => {
                out.extend_from_slice(&[SYNC, cmd::SETUP_EXT_BUSES]);
                for s in [swcan, lin1, lin2] {
                    out.extend_from_slice(&s.to_wire().to_le_bytes());
                }
            }
        }
        Ok(())
    }

    fn starts_message(b: u8) -> bool {
        b == SYNC || b == BINARY_MODE
    }
}

impl Message for Reply {
    fn parse(buf: &[u8]) -> Parsed<Self> {
        let head = need!(buf, 2);
        match head[1] {
            cmd::CAN_FRAME => {
                let b = need!(buf, 11);
                let len = b[10] & 0x0F;
                if len > 8 {
                    return Parsed::Invalid(ParseError::BadLength(len));
                }
                let total = 11 + usize::from(len) + 1;
                let all = need!(buf, total);
                match frame_from(le32(&b[6..10]), &all[11..11 + usize::from(len)]) {
                    Ok(frame) => {
                        Parsed::Message(Reply::Frame { timestamp_us: le32(&b[2..6]), bus: b[10] >> 4, frame }, total)
                    }
                    Err(e) => Parsed::Invalid(e),
                }
            }
            cmd::TIME_SYNC => {
                let b = need!(buf, 6);
                Parsed::Message(Reply::TimeSync { timestamp_us: le32(&b[2..6]) }, 6)
            }
            cmd::DIGITAL_INPUTS => {
                let b = need!(buf, 4);
                Parsed::Message(Reply::DigitalInputs(b[2]), 4)
            }
            cmd::ANALOG_INPUTS => {
                let b = need!(buf, 11);
                let a = |i: usize| le16(&b[2 + 2 * i..]);
                Parsed::Message(Reply::AnalogInputs([a(0), a(1), a(2), a(3)]), 11)
            }
            cmd::CANBUS_PARAMS => {
                let b = need!(buf, 12);
                Parsed::Message(
                    Reply::CanBusParams {
                        can0: BusParams::from_bytes(&b[2..7]),
                        can1: BusParams::from_bytes(&b[7..12]),
                    },
                    12,
                )
            }
            cmd::DEVICE_INFO => {
                let b = need!(buf, 8);
                Parsed::Message(
                    Reply::DeviceInfo {
                        build: le16(&b[2..4]),
                        eeprom_version: b[4],
                        file_type: b[5],
                        auto_log: b[6],
                        single_wire: b[7],
                    },
                    8,
                )
            }
            cmd::KEEPALIVE => {
                let b = need!(buf, 4);
                if b[2..4] == KEEPALIVE_MAGIC {
                    Parsed::Message(Reply::KeepAlive, 4)
                } else {
                    Parsed::Invalid(ParseError::BadKeepAlive([b[2], b[3]]))
                }
            }
            cmd::NUM_BUSES => {
                let b = need!(buf, 3);
                Parsed::Message(Reply::NumBuses(b[2]), 3)
            }
            cmd::EXT_BUSES => {
                let b = need!(buf, 17);
                Parsed::Message(
                    Reply::ExtBuses {
                        swcan: BusParams::from_bytes(&b[2..7]),
                        lin1: BusParams::from_bytes(&b[7..12]),
                        lin2: BusParams::from_bytes(&b[12..17]),
                    },
                    17,
                )
            }
            cmd::FD_FRAME => Parsed::Invalid(ParseError::Unsupported(head[1])),
            other => Parsed::Invalid(ParseError::UnknownCommand(other)),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), RemoteFrameUnsupported> {
        let start = out.len();
        match self {
            Reply::Frame { timestamp_us, bus, frame } => {
                if frame.is_remote() {
                    return Err(RemoteFrameUnsupported);
                }
                out.extend_from_slice(&[SYNC, cmd::CAN_FRAME]);
                out.extend_from_slice(&timestamp_us.to_le_bytes());
                out.extend_from_slice(&id_word(frame).to_le_bytes());
                out.push(frame.len() as u8 | ((bus & 0x0F) << 4));
                out.extend_from_slice(frame.data());
                out.push(0);
            }
            Reply::TimeSync { timestamp_us } => {
                out.extend_from_slice(&[SYNC, cmd::TIME_SYNC]);
                out.extend_from_slice(&timestamp_us.to_le_bytes());
            }
            Reply::DigitalInputs(bits) => {
                out.extend_from_slice(&[SYNC, cmd::DIGITAL_INPUTS, *bits]);
                out.push(xor(&out[start..]));
            }
            Reply::AnalogInputs(values) => {
                out.extend_from_slice(&[SYNC, cmd::ANALOG_INPUTS]);
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.push(xor(&out[start..]));
            }
            Reply::CanBusParams { can0, can1 } => {
                out.extend_from_slice(&[SYNC, cmd::CANBUS_PARAMS]);
                can0.push(out);
                can1.push(out);
            }
            Reply::DeviceInfo { build, eeprom_version, file_type, auto_log, single_wire } => {
                out.extend_from_slice(&[SYNC, cmd::DEVICE_INFO]);
                out.extend_from_slice(&build.to_le_bytes());
                out.extend_from_slice(&[*eeprom_version, *file_type, *auto_log, *single_wire]);
            }
            Reply::KeepAlive => out.extend_from_slice(&[SYNC, cmd::KEEPALIVE, KEEPALIVE_MAGIC[0], KEEPALIVE_MAGIC[1]]),
            Reply::NumBuses(n) => out.extend_from_slice(&[SYNC, cmd::NUM_BUSES, *n]),
            Reply::ExtBuses { swcan, lin1, lin2 } => {
                out.extend_from_slice(&[SYNC, cmd::EXT_BUSES]);
                for p in [swcan, lin1, lin2] {
                    p.push(out);
                }
            }
        }
        Ok(())
    }
}

/// What the [`Decoder`] reports instead of a message.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dropped a GVRET message start: {0}")]
pub struct DecodeError(#[source] pub ParseError);

/// Splits a GVRET byte stream into messages: `Decoder<Command>` on the device, `Decoder<Reply>` on the host.
///
/// Feed bytes with [`push`](Self::push) in any pieces and drain [`poll`](Self::poll) until `None`. Bytes before
/// a 0xF1 are dropped silently (the protocol's own rule) and counted in [`skipped`](Self::skipped). After an
/// invalid message only its 0xF1 is dropped, so a good message that starts inside it is still found.
/// GVRET has no length field or real checksum: a stray `F1 xx` that looks like the start of a valid message
/// can swallow the bytes of the next one. Nothing here can prevent that; a connection-level check (keepalive
/// replies) catches a stream that stays out of step.
#[derive(Debug)]
pub struct Decoder<M> {
    buf: Vec<u8>,
    skipped: u64,
    _kind: PhantomData<M>,
}

impl<M> Default for Decoder<M> {
    fn default() -> Self {
        Decoder { buf: Vec::new(), skipped: 0, _kind: PhantomData }
    }
}

impl<M: Message> Decoder<M> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes dropped outside messages so far (including the 0xF1 of invalid messages).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next message or error; `None` when more bytes are needed.
    #[must_use]
    pub fn poll(&mut self) -> Option<Result<M, DecodeError>> {
        let start = self.buf.iter().position(|&b| M::starts_message(b)).unwrap_or(self.buf.len());
        if start > 0 {
            self.skipped += start as u64;
            self.buf.drain(..start);
        }
        if self.buf.is_empty() {
            return None;
        }
        match M::parse(&self.buf) {
            Parsed::Message(m, n) => {
                self.buf.drain(..n);
                Some(Ok(m))
            }
            Parsed::Incomplete => None,
            Parsed::Invalid(e) => {
                self.skipped += 1;
                self.buf.drain(..1);
                Some(Err(DecodeError(e)))
            }
        }
    }
}

/// Encodes a message into a new vector.
pub fn to_bytes<M: Message>(m: &M) -> Result<Vec<u8>, RemoteFrameUnsupported> {
    let mut v = Vec::new();
    m.encode(&mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candump::tests::arb_frame;
    use proptest::prelude::*;

    fn decode_all<M: Message>(bytes: &[u8]) -> Vec<Result<M, DecodeError>> {
        let mut d = Decoder::<M>::new();
        d.push(bytes);
        std::iter::from_fn(|| d.poll()).collect()
    }

    #[test]
    fn savvycan_connect_burst() {
        let burst = [0xE7, 0xE7, 0xF1, 0x0C, 0xF1, 0x06, 0xF1, 0x07, 0xF1, 0x01, 0xF1, 0x09];
        let got: Vec<Command> = decode_all::<Command>(&burst).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                Command::EnableBinary,
                Command::EnableBinary,
                Command::GetNumBuses,
                Command::GetCanBusParams,
                Command::GetDeviceInfo,
                Command::TimeSync,
                Command::KeepAlive
            ]
        );
    }

    #[test]
    fn savvycan_send_frame_bytes() {
        // piSendFrame: F1 00, id LE with bit 31 for extended, bus & 3, length, data, 0.
        let frame = CanFrame::extended(0x18FF_50E5, &[0x11, 0x22]).unwrap();
        let bytes = [0xF1, 0x00, 0xE5, 0x50, 0xFF, 0x98, 0x01, 0x02, 0x11, 0x22, 0x00];
        assert_eq!(decode_all::<Command>(&bytes), [Ok(Command::SendFrame { bus: 1, frame })]);
        assert_eq!(to_bytes(&Command::SendFrame { bus: 1, frame }).unwrap(), bytes);
        // piSetBusSettings: 500 kbit/s enabled on bus 0, bus 1 disabled, then a 0 the firmware ignores.
        let setup = [0xF1, 0x05, 0x20, 0xA1, 0x07, 0xC0, 0x00, 0x00, 0x00, 0x80, 0x00];
        let mut d = Decoder::<Command>::new();
        d.push(&setup);
        assert_eq!(
            d.poll(),
            Some(Ok(Command::SetupCanBus {
                can0: BusSetting { speed: 500_000, enabled: true, listen_only: false, single_wire: false },
                can1: BusSetting::default(),
            }))
        );
        assert_eq!(d.poll(), None);
        assert_eq!(d.skipped(), 1);
    }

    #[test]
    fn firmware_reply_bytes() {
        // sendFrameToUSB: F1 00, micros LE, id LE, len | bus << 4, data, 0.
        let frame = CanFrame::standard(0x1DB, &[0xAA]).unwrap();
        let bytes = [0xF1, 0x00, 0x78, 0x56, 0x34, 0x12, 0xDB, 0x01, 0x00, 0x00, 0x11, 0xAA, 0x00];
        let reply = Reply::Frame { timestamp_us: 0x1234_5678, bus: 1, frame };
        assert_eq!(decode_all::<Reply>(&bytes), [Ok(reply.clone())]);
        assert_eq!(to_bytes(&reply).unwrap(), bytes);
        assert_eq!(to_bytes(&Reply::KeepAlive).unwrap(), [0xF1, 0x09, 0xDE, 0xAD]);
        assert_eq!(to_bytes(&Reply::NumBuses(3)).unwrap(), [0xF1, 0x0C, 0x03]);
        assert_eq!(to_bytes(&Reply::DigitalInputs(0x05)).unwrap(), [0xF1, 0x02, 0x05, 0xF1 ^ 0x02 ^ 0x05]);
        let params = Reply::CanBusParams {
            can0: BusParams { enabled: true, listen_only: false, single_wire: false, speed: 500_000 },
            can1: BusParams { enabled: false, listen_only: true, single_wire: true, speed: 250_000 },
        };
        assert_eq!(
            to_bytes(&params).unwrap(),
            [0xF1, 0x06, 0x01, 0x20, 0xA1, 0x07, 0x00, 0x50, 0x90, 0xD0, 0x03, 0x00]
        );
    }

    #[test]
    fn resyncs_after_a_bad_start() {
        let good = to_bytes(&Reply::NumBuses(2)).unwrap();
        let mut bytes = vec![0x00, 0x55, 0xF1, 0x7F, 0xF1, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x0F];
        bytes.extend(&good);
        let got = decode_all::<Reply>(&bytes);
        assert_eq!(got[0], Err(DecodeError(ParseError::UnknownCommand(0x7F))));
        assert_eq!(got[1], Err(DecodeError(ParseError::BadLength(15))));
        assert_eq!(got[2], Ok(Reply::NumBuses(2)));
        let remote = embedded_can::Frame::new_remote(dbe_core::can::StandardId::new(1).unwrap(), 0).unwrap();
        assert_eq!(to_bytes(&Command::SendFrame { bus: 0, frame: remote }), Err(RemoteFrameUnsupported));
    }

    fn arb_data_frame() -> impl Strategy<Value = CanFrame> {
        arb_frame().prop_filter("no remote frames in GVRET", |f| !f.is_remote())
    }

    fn arb_setting() -> impl Strategy<Value = BusSetting> {
        (0u32..0x1000_0000, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(speed, enabled, listen_only, single_wire)| BusSetting { speed, enabled, listen_only, single_wire },
        )
    }

    fn arb_params() -> impl Strategy<Value = BusParams> {
        (any::<u32>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(speed, enabled, listen_only, single_wire)| BusParams { speed, enabled, listen_only, single_wire },
        )
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::EnableBinary),
            (any::<u8>(), arb_data_frame()).prop_map(|(bus, frame)| Command::SendFrame { bus, frame }),
            (any::<u8>(), arb_data_frame()).prop_map(|(bus, frame)| Command::EchoCanFrame { bus, frame }),
            Just(Command::TimeSync),
            Just(Command::GetDigitalInputs),
            Just(Command::GetAnalogInputs),
            any::<u8>().prop_map(Command::SetDigitalOutputs),
            (arb_setting(), arb_setting()).prop_map(|(can0, can1)| Command::SetupCanBus { can0, can1 }),
            Just(Command::GetCanBusParams),
            Just(Command::GetDeviceInfo),
            any::<bool>().prop_map(Command::SetSingleWire),
            Just(Command::KeepAlive),
            any::<u8>().prop_map(Command::SetSystemType),
            Just(Command::GetNumBuses),
            Just(Command::GetExtBuses),
            (arb_setting(), arb_setting(), arb_setting()).prop_map(|(swcan, lin1, lin2)| Command::SetupExtBuses {
                swcan,
                lin1,
                lin2
            }),
        ]
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            (any::<u32>(), 0u8..16, arb_data_frame()).prop_map(|(timestamp_us, bus, frame)| Reply::Frame {
                timestamp_us,
                bus,
                frame
            }),
            any::<u32>().prop_map(|timestamp_us| Reply::TimeSync { timestamp_us }),
            any::<u8>().prop_map(Reply::DigitalInputs),
            any::<[u16; 4]>().prop_map(Reply::AnalogInputs),
            (arb_params(), arb_params()).prop_map(|(can0, can1)| Reply::CanBusParams { can0, can1 }),
            (any::<u16>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(
                |(build, eeprom_version, file_type, auto_log, single_wire)| Reply::DeviceInfo {
                    build,
                    eeprom_version,
                    file_type,
                    auto_log,
                    single_wire
                }
            ),
            Just(Reply::KeepAlive),
            any::<u8>().prop_map(Reply::NumBuses),
            (arb_params(), arb_params(), arb_params()).prop_map(|(swcan, lin1, lin2)| Reply::ExtBuses {
                swcan,
                lin1,
                lin2
            }),
        ]
    }

    fn feed<M: Message>(bytes: &[u8], cuts: &[usize]) -> Vec<Result<M, DecodeError>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort();
        let mut d = Decoder::<M>::new();
        let mut out = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            d.push(&bytes[last..c]);
            last = c;
            out.extend(std::iter::from_fn(|| d.poll()));
        }
        out
    }

    proptest! {
        #[test]
        fn commands_round_trip_in_any_pieces(msgs in proptest::collection::vec(arb_command(), 0..10),
                                             cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let bytes: Vec<u8> = msgs.iter().flat_map(|m| to_bytes(m).unwrap()).collect();
            prop_assert_eq!(feed::<Command>(&bytes, &cuts), msgs.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn replies_round_trip_in_any_pieces(msgs in proptest::collection::vec(arb_reply(), 0..10),
                                            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let bytes: Vec<u8> = msgs.iter().flat_map(|m| to_bytes(m).unwrap()).collect();
            prop_assert_eq!(feed::<Reply>(&bytes, &cuts), msgs.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let _ = feed::<Reply>(&bytes, &cuts);
            let _ = feed::<Command>(&bytes, &cuts);
        }

        /// Garbage without a 0xF1 (or 0xE7 on the device side) never costs the next message; see the Decoder
        /// doc for why a stray 0xF1 can.
        #[test]
        fn message_after_garbage_survives(garbage in proptest::collection::vec(any::<u8>(), 0..100),
                                          reply in arb_reply(), command in arb_command(),
                                          cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let mut bytes: Vec<u8> = garbage.iter().copied().filter(|&b| b != SYNC).collect();
            bytes.extend(to_bytes(&reply).unwrap());
            let got = feed::<Reply>(&bytes, &cuts);
            prop_assert_eq!(got, vec![Ok(reply)]);
            let mut bytes: Vec<u8> = garbage.iter().copied().filter(|&b| b != SYNC && b != BINARY_MODE).collect();
            bytes.extend(to_bytes(&command).unwrap());
            let got = feed::<Command>(&bytes, &cuts);
            prop_assert_eq!(got, vec![Ok(command)]);
        }
    }
}
