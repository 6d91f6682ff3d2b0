//! slcan (Lawicel ASCII) serial-line CAN: what USB-CAN adapters such as CANable and USBtin speak over their
//! serial port. DBE is the host when it drives a real adapter, and the adapter when the simulated pack sits
//! behind a pty for python-can's slcan interface; so both directions are here, each with parse and encode:
//! [`Command`] (host → adapter) and [`Reply`] (adapter → host), and a [`Decoder`] for either.
//!
//! Every message is ASCII ended by `\r`; the adapter answers a command it accepted with a bare `\r` and one it
//! refused with BEL (`\x07`). Frames are `<type><id><dlc><data>`: `t` standard data, `T` extended data,
//! `r` standard remote, `R` extended remote; the id is 3 or 8 upper-case hex digits, the DLC one digit 0-8, the
//! data two hex digits per byte (none for remote frames). With timestamps on (`Z1`), the adapter appends 4 hex
//! digits of milliseconds (0-EA5F, wrapping each minute) to each received frame.
//!
//! | host sends        | meaning                                   | adapter answers          |
//! |-------------------|-------------------------------------------|--------------------------|
//! | `S0`..`S8`        | bitrate (table [`BITRATES`])              | `\r`                     |
//! | `sXXYY`           | SJA1000 BTR0/BTR1 registers               | `\r`                     |
//! | `O` / `L` / `C`   | open / open listen-only / close channel   | `\r`                     |
//! | `V`               | hardware and software version             | `Vhhss\r`                |
//! | `v`               | detailed firmware version                 | `v...\r`                 |
//! | `N`               | serial number                             | `Nxxxx\r`                |
//! | `F`               | status flags                              | `Fxx\r`                  |
//! | `Z0` / `Z1`       | receive timestamps off / on               | `\r`                     |
//! | `t` `T` `r` `R`   | transmit a frame                          | `z\r` (t, r) `Z\r` (T, R)|
//! | anything refused  |                                           | `\x07`                   |
//!
//! What python-can's `slcanBus` sends (so our adapter side accepts it): on construction, after waiting 2 s
//! for the port, `C\r`, `S<n>\r`, then an empty command `\r` (its data-bitrate command is empty for classic
//! CAN), then `O\r` (or `L\r` when listen-only); `sXXYY\r` instead of `S<n>` for a custom bit timing; `C\r` on
//! shutdown; `V\r` and `N\r` for `get_version` / `get_serial_number`. It splits the input at `\r` and BEL,
//! ignores `\r`, `z\r`, `Z\r` and anything it does not recognise, and reads frames from `t` `T` `r` `R`
//! (and `x` for CANdapter, and the CAN FD `d` `D` `b` `B`, which DBE does not support and refuses with BEL).
//! The empty command [`Command::Empty`] is therefore answered with `\r` like any accepted command.
//!
//! Resynchronisation: BEL and `\r` always end a message. A chunk that does not parse is retried from each later
//! byte that can only start a message (a letter that is not a hex digit, such as `t` or `T`), so garbage glued
//! to the front of a good message (a lost `\r`, line noise at connect) costs only the garbage.
//!
//! Sources (facts only): hardbyte/python-can `can/interfaces/slcan.py` (bitrate table including `S9` = 83.3
//! kbit/s, commands it sends, reply handling, `V`/`N` reply layout); the Linux kernel's slcan driver
//! `drivers/net/can/slcan/slcan-core.c` (frame encapsulation and examples `t4563112233`, `T12ABCDEF2AA55`,
//! `r1230`; bitrate table; maximum message with timestamp `T1111222281122334455667788EA5F`; `C\rS<n>\r`,
//! `F\r`, `O\r` on open). Where they disagree on `S7`, python-can says 750 kbit/s and the kernel (and the
//! Lawicel table it follows) 800 kbit/s; we use 800 kbit/s.

use std::marker::PhantomData;

use dbe_core::CanFrame;

use crate::hex;

/// Bitrates in bit/s for `S0`..`S9`, indexed by the digit. `S9` (83.3 kbit/s) is python-can's addition; the
/// kernel and the Lawicel table stop at `S8`.
pub const BITRATES: [u32; 10] =
    [10_000, 20_000, 50_000, 100_000, 125_000, 250_000, 500_000, 800_000, 1_000_000, 83_300];

/// The `S<n>` digit for a bitrate, or `None` if no slcan code has it.
pub fn bitrate_code(bitrate: u32) -> Option<u8> {
    BITRATES.iter().position(|&b| b == bitrate).map(|i| i as u8)
}

/// The bitrate of an `S<n>` digit.
pub fn code_bitrate(code: u8) -> Option<u32> {
    BITRATES.get(usize::from(code)).copied()
}

/// Carriage return: ends every message; alone it is the adapter's "OK".
pub const CR: u8 = b'\r';
/// BEL: the adapter's "error".
pub const BEL: u8 = 0x07;

/// Host → adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `S<n>`: one of the [`BITRATES`] by index (0-9).
    SetBitrate(u8),
    /// `sXXYY`: SJA1000 bus timing registers for an 8 MHz clock.
    SetBtr { btr0: u8, btr1: u8 },
    /// `O`
    Open,
    /// `L`
    ListenOnly,
    /// `C`
    Close,
    /// `V`
    Version,
    /// `v`
    DetailedVersion,
    /// `N`
    SerialNumber,
    /// `F`
    Status,
    /// `Z0` / `Z1`
    Timestamps(bool),
    /// `t` `T` `r` `R`
    Transmit(CanFrame),
    /// A bare `\r` (python-can sends one when it has no data bitrate to set).
    Empty,
}

/// Adapter → host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `\r`: command accepted.
    Ok,
    /// BEL: command refused.
    Error,
    /// `z\r` / `Z\r`: a standard / extended frame was queued for transmission.
    Sent { extended: bool },
    /// A frame received from the bus, with the adapter's millisecond timestamp when `Z1` is on.
    Frame { frame: CanFrame, timestamp_ms: Option<u16> },
    /// `Vhhss`: hardware and software version, two decimal digits each (0-99).
    Version { hardware: u8, software: u8 },
    /// `vxxxx`: detailed firmware version, 4 ASCII letters or digits.
    DetailedVersion([u8; 4]),
    /// `Nxxxx`: serial number, 4 ASCII letters or digits.
    SerialNumber([u8; 4]),
    /// `Fxx`: status flags (Lawicel: bit 0 RX FIFO full, 1 TX FIFO full, 2 error warning, 3 data overrun,
    /// 5 error passive, 6 arbitration lost, 7 bus error).
    Status(u8),
}

/// Why a message was rejected: the byte offset in the message and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: expected {expected}")]
pub struct ParseError {
    pub offset: usize,
    pub expected: &'static str,
}

fn err<T>(offset: usize, expected: &'static str) -> Result<T, ParseError> {
    Err(ParseError { offset, expected })
}

/// What the [`Decoder`] reports instead of a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A terminated message that did not parse. `text` is what was dropped (lossy UTF-8).
    #[error("rejected slcan message `{text}`: {source}")]
    Invalid {
        text: String,
        #[source]
        source: ParseError,
    },
    /// Bytes without a terminator beyond the longest valid message; dropped.
    #[error("dropped {skipped} bytes of unterminated slcan input")]
    Overlong { skipped: usize },
}

/// A message type the [`Decoder`] can split out of a stream: [`Command`] or [`Reply`].
pub trait Message: Sized {
    /// Parses one message without its terminator (`\r`, or BEL for [`Reply::Error`]).
    fn parse(text: &[u8], terminator: u8) -> Result<Self, ParseError>;
    /// Appends the message with its terminator.
    fn encode(&self, out: &mut Vec<u8>);
    /// Whether `b` can start a message and never occurs inside one (resynchronisation points).
    fn starts_message(b: u8) -> bool;
}

impl Command {
    /// Parses one command without its `\r`.
    pub fn parse(text: &[u8]) -> Result<Self, ParseError> {
        let Some((&kind, rest)) = text.split_first() else {
            return Ok(Command::Empty);
        };
        let bare = |c: Command| if rest.is_empty() { Ok(c) } else { err(1, "the end of the command") };
        match kind {
            b'S' => match rest {
                [d @ b'0'..=b'9'] => Ok(Command::SetBitrate(d - b'0')),
                _ => err(1, "one bitrate digit 0-9"),
            },
            b's' => {
                if rest.len() != 4 {
                    return err(1, "four hex digits BTR0 BTR1");
                }
                let v = hex::parse_u32(rest).ok_or(ParseError { offset: 1, expected: "four hex digits BTR0 BTR1" })?;
                Ok(Command::SetBtr { btr0: (v >> 8) as u8, btr1: v as u8 })
            }
            b'O' => bare(Command::Open),
            b'L' => bare(Command::ListenOnly),
            b'C' => bare(Command::Close),
            b'V' => bare(Command::Version),
            b'v' => bare(Command::DetailedVersion),
            b'N' => bare(Command::SerialNumber),
            b'F' => bare(Command::Status),
            b'Z' => match rest {
                b"0" => Ok(Command::Timestamps(false)),
                b"1" => Ok(Command::Timestamps(true)),
                _ => err(1, "`0` or `1`"),
            },
            b't' | b'T' | b'r' | b'R' => match parse_frame(text)? {
                (frame, None) => Ok(Command::Transmit(frame)),
                (_, Some(_)) => err(text.len() - 4, "the end of the frame (no timestamp on transmit)"),
            },
            b'd' | b'D' | b'b' | b'B' => err(0, "a classic CAN frame (CAN FD frames are not supported)"),
            _ => err(0, "an slcan command letter"),
        }
    }

    /// Appends the command and its `\r`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Command::SetBitrate(n) => out.extend_from_slice(&[b'S', b'0' + (n % 10)]),
            Command::SetBtr { btr0, btr1 } => {
                let mut s = String::from("s");
                hex::push_upper(&mut s, &[*btr0, *btr1]);
                out.extend_from_slice(s.as_bytes());
            }
            Command::Open => out.push(b'O'),
            Command::ListenOnly => out.push(b'L'),
            Command::Close => out.push(b'C'),
            Command::Version => out.push(b'V'),
            Command::DetailedVersion => out.push(b'v'),
            Command::SerialNumber => out.push(b'N'),
            Command::Status => out.push(b'F'),
            Command::Timestamps(on) => out.extend_from_slice(if *on { b"Z1" } else { b"Z0" }),
            Command::Transmit(frame) => encode_frame(frame, None, out),
            Command::Empty => {}
        }
        out.push(CR);
    }

    /// The command as bytes, with its `\r`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

impl Message for Command {
    fn parse(text: &[u8], terminator: u8) -> Result<Self, ParseError> {
        if terminator == BEL {
            return err(text.len(), "`\\r` (BEL does not end a command)");
        }
        Command::parse(text)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        Command::encode(self, out)
    }
    fn starts_message(b: u8) -> bool {
        // `C` and `F` are hex digits and may be the tail of a broken frame, so they are not trusted here.
        matches!(b, b'S' | b's' | b'O' | b'L' | b'V' | b'v' | b'N' | b'Z' | b't' | b'T' | b'r' | b'R')
    }
}

impl Reply {
    /// Parses one reply without its terminator; an empty text is [`Reply::Ok`].
    pub fn parse(text: &[u8]) -> Result<Self, ParseError> {
        let Some((&kind, rest)) = text.split_first() else {
            return Ok(Reply::Ok);
        };
        match kind {
            b'z' | b'Z' if rest.is_empty() => Ok(Reply::Sent { extended: kind == b'Z' }),
            b'z' | b'Z' => err(1, "the end of the transmit acknowledgement"),
            b't' | b'T' | b'r' | b'R' => {
                let (frame, timestamp_ms) = parse_frame(text)?;
                Ok(Reply::Frame { frame, timestamp_ms })
            }
            b'V' => match rest {
                [a, b, c, d] if rest.iter().all(u8::is_ascii_digit) => Ok(Reply::Version {
                    hardware: (a - b'0') * 10 + (b - b'0'),
                    software: (c - b'0') * 10 + (d - b'0'),
                }),
                _ => err(1, "four decimal digits hhss"),
            },
            b'v' | b'N' => {
                if let Some(i) = rest.iter().position(|b| !b.is_ascii_alphanumeric()) {
                    return err(1 + i, "an ASCII letter or digit");
                }
                let text: [u8; 4] = rest.try_into().or(err(1 + rest.len(), "exactly 4 letters or digits"))?;
                Ok(if kind == b'v' { Reply::DetailedVersion(text) } else { Reply::SerialNumber(text) })
            }
            b'F' => match (rest.len(), hex::parse_u32(rest)) {
                (2, Some(v)) => Ok(Reply::Status(v as u8)),
                _ => err(1, "two hex digits of status flags"),
            },
            b'd' | b'D' | b'b' | b'B' => err(0, "a classic CAN frame (CAN FD frames are not supported)"),
            _ => err(0, "an slcan reply (`\\r`, `z`, `Z`, a frame, `V`, `v`, `N` or `F`)"),
        }
    }

    /// Appends the reply and its terminator (BEL for [`Reply::Error`], `\r` otherwise). Version numbers above 99
    /// are written modulo 100; characters other than ASCII letters and digits in `v`/`N` replies as `0`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => {}
            Reply::Error => {
                out.push(BEL);
                return;
            }
            Reply::Sent { extended } => out.push(if *extended { b'Z' } else { b'z' }),
            Reply::Frame { frame, timestamp_ms } => encode_frame(frame, *timestamp_ms, out),
            Reply::Version { hardware, software } => {
                out.extend_from_slice(format!("V{:02}{:02}", hardware % 100, software % 100).as_bytes())
            }
            Reply::DetailedVersion(text) | Reply::SerialNumber(text) => {
                out.push(if matches!(self, Reply::DetailedVersion(_)) { b'v' } else { b'N' });
                out.extend(text.iter().map(|&b| if b.is_ascii_alphanumeric() { b } else { b'0' }));
            }
            Reply::Status(flags) => {
                let mut s = String::from("F");
                hex::push_upper(&mut s, &[*flags]);
                out.extend_from_slice(s.as_bytes());
            }
        }
        out.push(CR);
    }

    /// The reply as bytes, with its terminator.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

impl Message for Reply {
    fn parse(text: &[u8], terminator: u8) -> Result<Self, ParseError> {
        if terminator == BEL {
            return if text.is_empty() { Ok(Reply::Error) } else { err(0, "nothing before BEL") };
        }
        Reply::parse(text)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        Reply::encode(self, out)
    }
    fn starts_message(b: u8) -> bool {
        // `F` is a hex digit and may be the tail of a broken frame, so it is not trusted here.
        matches!(b, b'z' | b'Z' | b't' | b'T' | b'r' | b'R' | b'V' | b'v' | b'N')
    }
}

/// `t`/`T`/`r`/`R` + id + dlc + data [+ 4-digit timestamp].
fn parse_frame(text: &[u8]) -> Result<(CanFrame, Option<u16>), ParseError> {
    let (extended, remote) = match text.first() {
        Some(b't') => (false, false),
        Some(b'T') => (true, false),
        Some(b'r') => (false, true),
        Some(b'R') => (true, true),
        _ => return err(0, "`t`, `T`, `r` or `R`"),
    };
    let id_len = if extended { 8 } else { 3 };
    let id_digits = text.get(1..1 + id_len).ok_or(ParseError { offset: text.len(), expected: "more CAN id digits" })?;
    if let Some(i) = hex::first_non_hex(id_digits) {
        return err(1 + i, "a hex digit of the CAN id");
    }
    let id = hex::parse_u32(id_digits).unwrap_or(u32::MAX);
    let dlc_at = 1 + id_len;
    let dlc = match text.get(dlc_at) {
        Some(d @ b'0'..=b'8') => usize::from(d - b'0'),
        _ => return err(dlc_at, "a length digit 0-8"),
    };
    let data_at = dlc_at + 1;
    let data_len = if remote { 0 } else { 2 * dlc };
    let tail = text.get(data_at..).unwrap_or(&[]);
    if let Some(i) = hex::first_non_hex(tail) {
        return err(data_at + i, "a hex digit");
    }
    let timestamp_ms = match tail.len().checked_sub(data_len) {
        Some(0) => None,
        Some(4) => Some(hex::parse_u32(&tail[data_len..]).unwrap_or(0) as u16),
        Some(_) => return err(data_at + data_len, "the end of the frame or a 4-digit timestamp"),
        None => return err(text.len(), "more data digits for the length given"),
    };
    let mut data = [0u8; 8];
    for (i, pair) in tail[..data_len].chunks_exact(2).enumerate() {
        data[i] = (hex::nibble(pair[0]).unwrap_or(0) << 4) | hex::nibble(pair[1]).unwrap_or(0);
    }
    let frame = hex::build_frame(id, extended, remote.then_some(dlc), &data[..data_len / 2]).ok_or(ParseError {
        offset: 1,
        expected: "a standard id of at most 7FF or an extended one of at most 1FFFFFFF",
    })?;
    Ok((frame, timestamp_ms))
}

fn encode_frame(frame: &CanFrame, timestamp_ms: Option<u16>, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(30);
    s.push(match (frame.is_extended(), frame.is_remote()) {
        (false, false) => 't',
        (true, false) => 'T',
        (false, true) => 'r',
        (true, true) => 'R',
    });
    let id = frame.raw_id().to_be_bytes();
    if frame.is_extended() {
        hex::push_upper(&mut s, &id);
    } else {
        let mut two = String::new();
        hex::push_upper(&mut two, &id[2..]);
        s.push_str(&two[1..]);
    }
    s.push((b'0' + frame.len() as u8) as char);
    if !frame.is_remote() {
        hex::push_upper(&mut s, frame.data());
    }
    if let Some(ts) = timestamp_ms {
        hex::push_upper(&mut s, &ts.to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Longer than any valid message (the longest is an extended frame with timestamp, 30 bytes); a bigger
/// unterminated run is garbage.
pub const MAX_MESSAGE: usize = 64;

/// Splits an slcan byte stream into messages: `Decoder<Reply>` on the host, `Decoder<Command>` on the adapter.
///
/// Feed bytes with [`push`](Self::push) in any pieces and drain [`poll`](Self::poll) until `None`.
#[derive(Debug)]
pub struct Decoder<M> {
    buf: Vec<u8>,
    /// A message found behind garbage in the same chunk, reported after the garbage.
    pending: Option<M>,
    _kind: PhantomData<M>,
}

impl<M> Default for Decoder<M> {
    fn default() -> Self {
        Decoder { buf: Vec::new(), pending: None, _kind: PhantomData }
    }
}

impl<M: Message> Decoder<M> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next message or error; `None` when more bytes are needed.
    #[must_use]
    pub fn poll(&mut self) -> Option<Result<M, DecodeError>> {
        if let Some(m) = self.pending.take() {
            return Some(Ok(m));
        }
        let Some(end) = self.buf.iter().position(|&b| b == CR || b == BEL) else {
            if self.buf.len() <= MAX_MESSAGE {
                return None;
            }
            // Keep a message that may be starting near the end; drop the rest.
            let keep_from = (1..self.buf.len())
                .rev()
                .find(|&i| M::starts_message(self.buf[i]) && self.buf.len() - i <= MAX_MESSAGE)
                .unwrap_or(self.buf.len());
            self.buf.drain(..keep_from);
            return Some(Err(DecodeError::Overlong { skipped: keep_from }));
        };
        let terminator = self.buf[end];
        let chunk: Vec<u8> = self.buf[..end].to_vec();
        // A reply chunk before BEL is a fragment; BEL stays for the next poll, where it is `Reply::Error`.
        let keep_bel = terminator == BEL && !chunk.is_empty();
        self.buf.drain(..if keep_bel { end } else { end + 1 });
        let terminator = if keep_bel { CR } else { terminator };
        let first_error = match M::parse(&chunk, terminator) {
            Ok(m) if !keep_bel => return Some(Ok(m)),
            Ok(_) => ParseError { offset: chunk.len(), expected: "`\\r` (message cut short by BEL)" },
            Err(e) => e,
        };
        for i in 1..chunk.len() {
            if M::starts_message(chunk[i]) {
                if let Ok(m) = M::parse(&chunk[i..], terminator) {
                    if !keep_bel {
                        self.pending = Some(m);
                    }
                    let source = M::parse(&chunk[..i], terminator)
                        .err()
                        .unwrap_or(ParseError { offset: i, expected: "`\\r` before the next message" });
                    return Some(Err(DecodeError::Invalid { text: lossy(&chunk[..i]), source }));
                }
            }
        }
        Some(Err(DecodeError::Invalid { text: lossy(&chunk), source: first_error }))
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candump::tests::arb_frame;
    use embedded_can::{ExtendedId, Frame as _};
    use proptest::prelude::*;

    fn decode_all<M: Message>(bytes: &[u8]) -> Vec<Result<M, DecodeError>> {
        let mut d = Decoder::<M>::new();
        d.push(bytes);
        std::iter::from_fn(|| d.poll()).collect()
    }

    #[test]
    fn kernel_examples() {
        let f = |s: &[u8]| match Reply::parse(s).unwrap() {
            Reply::Frame { frame, timestamp_ms: None } => frame,
            other => panic!("{other:?}"),
        };
        assert_eq!(f(b"t1230"), CanFrame::standard(0x123, &[]).unwrap());
        assert_eq!(f(b"t4563112233"), CanFrame::standard(0x456, &[0x11, 0x22, 0x33]).unwrap());
        assert_eq!(f(b"T12ABCDEF2AA55"), CanFrame::extended(0x12AB_CDEF, &[0xAA, 0x55]).unwrap());
        let r = f(b"r1230");
        assert!(r.is_remote() && r.raw_id() == 0x123 && r.is_empty());
        let ts = Reply::parse(b"T1111222281122334455667788EA5F").unwrap();
        let frame = CanFrame::extended(0x1111_2222, &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]).unwrap();
        assert_eq!(ts, Reply::Frame { frame, timestamp_ms: Some(0xEA5F) });
        assert_eq!(ts.to_bytes(), b"T1111222281122334455667788EA5F\r");
    }

    #[test]
    fn encodes_like_python_can_sends() {
        let f = CanFrame::standard(0x1DB, &[0x01, 0xAB]).unwrap();
        assert_eq!(Command::Transmit(f).to_bytes(), b"t1DB201AB\r");
        let r = CanFrame::new_remote(ExtendedId::new(0x4210).unwrap(), 3).unwrap();
        assert_eq!(Command::Transmit(r).to_bytes(), b"R000042103\r");
        assert_eq!(Command::SetBitrate(bitrate_code(500_000).unwrap()).to_bytes(), b"S6\r");
        assert_eq!(Command::SetBtr { btr0: 0x03, btr1: 0x1C }.to_bytes(), b"s031C\r");
        assert_eq!(Command::Timestamps(true).to_bytes(), b"Z1\r");
        assert_eq!(code_bitrate(7), Some(800_000));
        assert_eq!(code_bitrate(10), None);
    }

    #[test]
    fn adapter_side_reads_python_can_startup() {
        let got: Vec<Command> =
            decode_all::<Command>(b"C\rS6\r\rO\rt1DB201AB\rV\rN\r").into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                Command::Close,
                Command::SetBitrate(6),
                Command::Empty,
                Command::Open,
                Command::Transmit(CanFrame::standard(0x1DB, &[0x01, 0xAB]).unwrap()),
                Command::Version,
                Command::SerialNumber,
            ]
        );
        assert!(Command::parse(b"d1230").unwrap_err().expected.contains("CAN FD"));
    }

    #[test]
    fn host_side_reads_replies() {
        let got: Vec<Reply> =
            decode_all::<Reply>(b"\r\x07z\rZ\rV1013\rNA123\rF00\rt1230\r").into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                Reply::Ok,
                Reply::Error,
                Reply::Sent { extended: false },
                Reply::Sent { extended: true },
                Reply::Version { hardware: 10, software: 13 },
                Reply::SerialNumber(*b"A123"),
                Reply::Status(0),
                Reply::Frame { frame: CanFrame::standard(0x123, &[]).unwrap(), timestamp_ms: None },
            ]
        );
    }

    #[test]
    fn resyncs_after_garbage() {
        let good = Reply::Frame { frame: CanFrame::standard(0x456, &[0x11]).unwrap(), timestamp_ms: None };
        let got = decode_all::<Reply>(b"\xff\x00xx12t456111\r");
        assert!(matches!(&got[0], Err(DecodeError::Invalid { .. })), "{got:?}");
        assert_eq!(got[1], Ok(good.clone()));
        assert_eq!(got.len(), 2);
        // A fragment cut short by BEL is an error, and the BEL is still an Error reply.
        let got = decode_all::<Reply>(b"t45\x07t456111\r");
        assert!(got[0].is_err());
        assert_eq!(got[1..], [Ok(Reply::Error), Ok(good.clone())]);
        // An endless run of noise is dropped in bounded pieces, and a frame arriving after it survives.
        let mut d = Decoder::<Reply>::new();
        d.push(&[b'5'; 200]);
        assert!(matches!(d.poll(), Some(Err(DecodeError::Overlong { skipped: 200 }))));
        d.push(b"t456111\r");
        assert_eq!(d.poll(), Some(Ok(good)));
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(Reply::parse(b"t12G0"), Err(ParseError { offset: 3, expected: "a hex digit of the CAN id" }));
        assert_eq!(Reply::parse(b"t1239"), Err(ParseError { offset: 4, expected: "a length digit 0-8" }));
        assert_eq!(
            Reply::parse(b"t12321"),
            Err(ParseError { offset: 6, expected: "more data digits for the length given" })
        );
        assert_eq!(Reply::parse(b"t8000").unwrap_err().offset, 1);
        assert_eq!(Command::parse(b"S").unwrap_err().expected, "one bitrate digit 0-9");
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (0u8..10).prop_map(Command::SetBitrate),
            (any::<u8>(), any::<u8>()).prop_map(|(btr0, btr1)| Command::SetBtr { btr0, btr1 }),
            Just(Command::Open),
            Just(Command::ListenOnly),
            Just(Command::Close),
            Just(Command::Version),
            Just(Command::DetailedVersion),
            Just(Command::SerialNumber),
            Just(Command::Status),
            any::<bool>().prop_map(Command::Timestamps),
            arb_frame().prop_map(Command::Transmit),
            Just(Command::Empty),
        ]
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            Just(Reply::Ok),
            Just(Reply::Error),
            any::<bool>().prop_map(|extended| Reply::Sent { extended }),
            (arb_frame(), proptest::option::of(any::<u16>()))
                .prop_map(|(frame, timestamp_ms)| Reply::Frame { frame, timestamp_ms }),
            (0u8..100, 0u8..100).prop_map(|(hardware, software)| Reply::Version { hardware, software }),
            "[A-Za-z0-9]{4}".prop_map(|s| Reply::DetailedVersion(s.as_bytes().try_into().unwrap())),
            "[A-Za-z0-9]{4}".prop_map(|s| Reply::SerialNumber(s.as_bytes().try_into().unwrap())),
            any::<u8>().prop_map(Reply::Status),
        ]
    }

    /// Feeds `bytes` cut at `cuts` and collects every result.
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
        fn commands_round_trip_in_any_pieces(cmds in proptest::collection::vec(arb_command(), 0..10),
                                             cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let bytes: Vec<u8> = cmds.iter().flat_map(Command::to_bytes).collect();
            let got: Vec<_> = feed::<Command>(&bytes, &cuts);
            prop_assert_eq!(got, cmds.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn replies_round_trip_in_any_pieces(replies in proptest::collection::vec(arb_reply(), 0..10),
                                            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let bytes: Vec<u8> = replies.iter().flat_map(Reply::to_bytes).collect();
            prop_assert_eq!(feed::<Reply>(&bytes, &cuts), replies.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let _ = feed::<Reply>(&bytes, &cuts);
            let _ = feed::<Command>(&bytes, &cuts);
        }

        #[test]
        fn frame_after_garbage_survives(garbage in proptest::collection::vec(any::<u8>(), 0..100),
                                        frame in arb_frame(),
                                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let reply = Reply::Frame { frame, timestamp_ms: None };
            let mut bytes = garbage.clone();
            bytes.extend(reply.to_bytes());
            let got = feed::<Reply>(&bytes, &cuts);
            prop_assert_eq!(got.last(), Some(&Ok(reply)));
            let cmd = Command::Transmit(frame);
            let mut bytes = garbage;
            bytes.extend(cmd.to_bytes());
            let got = feed::<Command>(&bytes, &cuts);
            prop_assert_eq!(got.last(), Some(&Ok(cmd)));
        }
    }
}
