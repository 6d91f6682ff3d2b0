//! The socketcand TCP protocol: a CAN bus on the network as ASCII messages in angle brackets. DBE is a client
//! when it reaches a pack through a remote socketcand server, and a server when it offers its own bus to tools
//! such as python-can's `socketcand` interface. Both directions share one [`Message`] type (the keywords never
//! collide) and one [`Decoder`] that splits the stream into `< ... >` messages.
//!
//! Only what a raw-mode session needs is typed: `hi`, `open`, `ok`, the mode switches, `send`, `frame`, `error`,
//! `echo`. The broadcast-manager commands (`add`, `update`, `delete`, `filter`, `subscribe`, ...) parse as
//! [`ParseError::UnknownCommand`], which a server answers with `< error unknown command >` as socketcand does.
//!
//! Handshake, as python-can's `SocketCanDaemonBus` performs it (the server side must match it byte for byte):
//! 1. the client connects; the server sends `< hi >`;
//! 2. the client sends `< open CHANNEL >`; the server answers `< ok >`;
//! 3. the client sends `< rawmode >`; the server answers `< ok >`;
//! 4. the server streams received frames as `< frame ID SECS.USECS DATA >`, the client sends
//!    `< send ID LEN B0 B1 ... >`; either may send `< echo >`, which the server returns unchanged.
//!
//! python-can reads each of the three handshake replies with a single `recv(256)` and compares it with the exact
//! text, so the server must send each reply on its own, with no newline, and nothing else may share the read:
//! send no frame before the client has had the `< ok >` for `rawmode` (a short pause, tens of milliseconds,
//! before the first frame). After the handshake it splits its input at `<` and `>` and parses only `< frame `
//! (it expects the frame's data field even when empty, i.e. `< frame 123 1.000000  >` with two spaces) and
//! `< error `; it decides "extended" by an id field longer than 3 characters. It sends standard ids with 3 hex
//! digits, extended with 8, the length in hex and the data bytes in lower-case hex without padding
//! (`< send 1AAAAAAA 2 1 f1 >`); socketcand reads the length as decimal, equal for 0-8.
//!
//! Frames from socketcand carry the id as 3 or 8 upper-case hex digits, the kernel timestamp with 6 fraction
//! digits and the data as upper-case hex without spaces; remote frames are never sent (socketcand leaves them
//! out), and a `send` can express none, so [`Message::encode`] refuses remote frames.
//!
//! Sources (facts only): linux-can/socketcand `doc/protocol.md` (message set and examples), `src/state_raw.c`
//! (`frame` and `error` formats, `send` parsing, extended id by 8-digit field, `echo`, `< error unknown command >`),
//! `src/socketcand.c` (`receive_command`: splitting at `<` and `>`, garbage dropped), `src/state_nobus.c`
//! (`< hi >`, `open`, its error replies); hardbyte/python-can `can/interfaces/socketcand/socketcand.py` (the
//! handshake and formats above).

use dbe_core::CanFrame;

use crate::hex;

/// The socketcand modes a client can switch to after `open`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `rawmode`: every frame of the bus, `send` to transmit (what DBE and python-can use).
    Raw,
    /// `bcmmode`: the broadcast manager (the default after `open`).
    Bcm,
    /// `controlmode`: statistics.
    Control,
    /// `isotpmode`: ISO-TP transport.
    IsoTp,
}

impl Mode {
    fn keyword(self) -> &'static str {
        match self {
            Mode::Raw => "rawmode",
            Mode::Bcm => "bcmmode",
            Mode::Control => "controlmode",
            Mode::IsoTp => "isotpmode",
        }
    }
}

/// One `< ... >` message, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Server greeting on connect.
    Hi,
    /// Client selects a bus (at most 16 characters, no spaces or angle brackets).
    Open(String),
    /// Server accepts `open` or a mode switch.
    Ok,
    /// Client switches mode.
    Mode(Mode),
    /// Client asks the server to transmit a frame.
    Send(CanFrame),
    /// Server reports a received frame, stamped with the server's clock in microseconds since the Unix epoch.
    Frame { frame: CanFrame, timestamp_us: u64 },
    /// Server reports a problem: free text (`could not open bus`, `unknown command`) or, for a bus error, the
    /// error class in hex and a timestamp (`004 1700000000.000000`).
    Error(String),
    /// Either side checks the link; the server returns it unchanged.
    Echo,
}

/// Why a message was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a `< ... >` message")]
    NotBracketed,
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// `field` is the 0-based index of the whitespace-separated field after `<` (0 is the command).
    #[error("`{command}` field {field}: expected {expected}")]
    Field { command: &'static str, field: usize, expected: &'static str },
}

/// A message that has no socketcand form.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("socketcand cannot carry remote frames")]
pub struct RemoteFrameUnsupported;

impl Message {
    /// Parses one message including its brackets. Fields are separated by any whitespace.
    pub fn parse(text: &[u8]) -> Result<Message, ParseError> {
        let inner = text
            .strip_prefix(b"<")
            .and_then(|t| t.strip_suffix(b">"))
            .filter(|t| !t.contains(&b'<') && !t.contains(&b'>'))
            .ok_or(ParseError::NotBracketed)?;
        // The fields without allocating: every message DBE takes has at most 11 (`send` with 8 bytes); only a
        // longer one (an error text, or garbage) is collected into a Vec.
        let mut few: [&[u8]; MAX_FIELDS] = [&[]; MAX_FIELDS];
        let mut count = 0;
        let mut many: Vec<&[u8]> = Vec::new();
        for f in inner.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty()) {
            if count < MAX_FIELDS {
                few[count] = f;
            } else {
                if many.is_empty() {
                    many.extend_from_slice(&few);
                }
                many.push(f);
            }
            count += 1;
        }
        let fields: &[&[u8]] = if count > MAX_FIELDS { &many } else { &few[..count] };
        let Some((&command, args)) = fields.split_first() else {
            return Err(ParseError::UnknownCommand(String::new()));
        };
        let bare = |m: Message, command: &'static str| {
            if args.is_empty() {
                Ok(m)
            } else {
                Err(ParseError::Field { command, field: 1, expected: "no arguments" })
            }
        };
        match command {
            b"hi" => bare(Message::Hi, "hi"),
            b"ok" => bare(Message::Ok, "ok"),
            b"echo" => bare(Message::Echo, "echo"),
            b"rawmode" => bare(Message::Mode(Mode::Raw), "rawmode"),
            b"bcmmode" => bare(Message::Mode(Mode::Bcm), "bcmmode"),
            b"controlmode" => bare(Message::Mode(Mode::Control), "controlmode"),
            b"isotpmode" => bare(Message::Mode(Mode::IsoTp), "isotpmode"),
            b"open" => match args {
                [bus] if valid_bus(bus) => Ok(Message::Open(String::from_utf8_lossy(bus).into_owned())),
                _ => Err(ParseError::Field { command: "open", field: 1, expected: "one bus name of 1-16 characters" }),
            },
            b"error" => {
                Ok(Message::Error(args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>().join(" ")))
            }
            b"send" => parse_send(args).map(Message::Send),
            b"frame" => parse_frame(args),
            other => Err(ParseError::UnknownCommand(String::from_utf8_lossy(other).into_owned())),
        }
    }

    /// Appends the message in the canonical form (`< word args >`, single spaces, no newline), written straight
    /// into `out` (no allocation of its own: a sent frame costs only `out`'s growth). Nothing is appended when the
    /// message has no socketcand form.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RemoteFrameUnsupported> {
        use std::io::Write as _;
        if let Message::Send(frame) | Message::Frame { frame, .. } = self {
            if frame.is_remote() {
                return Err(RemoteFrameUnsupported);
            }
        }
        // Writing to a Vec cannot fail.
        out.extend_from_slice(b"< ");
        let _ = match self {
            Message::Hi => write!(out, "hi"),
            Message::Ok => write!(out, "ok"),
            Message::Echo => write!(out, "echo"),
            Message::Mode(m) => write!(out, "{}", m.keyword()),
            Message::Open(bus) => write!(out, "open {bus}"),
            Message::Error(text) if text.is_empty() => write!(out, "error"),
            Message::Error(text) => write!(out, "error {text}"),
            Message::Send(frame) => {
                out.extend_from_slice(b"send ");
                push_id(out, frame);
                let _ = write!(out, " {}", frame.len());
                for b in frame.data() {
                    let _ = write!(out, " {b:02X}");
                }
                Ok(())
            }
            Message::Frame { frame, timestamp_us } => {
                out.extend_from_slice(b"frame ");
                push_id(out, frame);
                let _ = write!(out, " {}.{:06} ", timestamp_us / 1_000_000, timestamp_us % 1_000_000);
                hex::push_upper_bytes(out, frame.data());
                Ok(())
            }
        };
        out.extend_from_slice(b" >");
        Ok(())
    }

    /// The message as text, e.g. `< frame 123 23.424242 1A220344 >`.
    pub fn to_text(&self) -> Result<String, RemoteFrameUnsupported> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        // Only ASCII and the (UTF-8) texts of `open` and `error` are written.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Fields a message is split into without allocating (`send` with 8 data bytes has 11).
const MAX_FIELDS: usize = 12;

fn valid_bus(bus: &[u8]) -> bool {
    (1..=16).contains(&bus.len()) && bus.iter().all(|b| b.is_ascii_graphic() && *b != b'<' && *b != b'>')
}

/// The id field: 8 upper-case hex digits for an extended id, 3 for a standard one.
fn push_id(out: &mut Vec<u8>, frame: &CanFrame) {
    use std::io::Write as _;
    let _ =
        if frame.is_extended() { write!(out, "{:08X}", frame.raw_id()) } else { write!(out, "{:03X}", frame.raw_id()) };
}

/// An id field: 8 digits is extended (socketcand's rule), 1-3 digits standard.
fn parse_id(field: &[u8]) -> Option<(u32, bool)> {
    let id = hex::parse_u32(field)?;
    match field.len() {
        1..=3 if id <= 0x7FF => Some((id, false)),
        8 if id <= 0x1FFF_FFFF => Some((id, true)),
        _ => None,
    }
}

const ID_EXPECTED: &str = "a CAN id of 1-3 hex digits (at most 7FF) or 8 (extended, at most 1FFFFFFF)";

fn parse_send(args: &[&[u8]]) -> Result<CanFrame, ParseError> {
    let field = |field, expected| ParseError::Field { command: "send", field, expected };
    let (id, extended) = args.first().and_then(|f| parse_id(f)).ok_or(field(1, ID_EXPECTED))?;
    let len = match args.get(1) {
        Some([d @ b'0'..=b'8']) => usize::from(d - b'0'),
        _ => return Err(field(2, "a length 0-8")),
    };
    let bytes = &args[2..];
    if bytes.len() != len {
        return Err(field(2 + len.min(bytes.len()) + 1, "as many data bytes as the length says"));
    }
    let mut data = [0u8; 8];
    for (i, b) in bytes.iter().enumerate() {
        data[i] = match b.len() {
            1 | 2 => hex::parse_u32(b).ok_or(field(3 + i, "a data byte of 1-2 hex digits"))? as u8,
            _ => return Err(field(3 + i, "a data byte of 1-2 hex digits")),
        };
    }
    hex::build_frame(id, extended, None, &data[..len]).ok_or(field(1, ID_EXPECTED))
}

fn parse_frame(args: &[&[u8]]) -> Result<Message, ParseError> {
    let field = |field, expected| ParseError::Field { command: "frame", field, expected };
    let (id, extended) = args.first().and_then(|f| parse_id(f)).ok_or(field(1, ID_EXPECTED))?;
    let timestamp_us = args.get(1).and_then(|t| parse_timestamp(t)).ok_or(field(2, "a timestamp SECS.USECS"))?;
    let data_hex = match args {
        [_, _] => &[][..],
        [_, _, d] => d,
        _ => return Err(field(4, "the end of the frame")),
    };
    if data_hex.len() % 2 != 0 || data_hex.len() > 16 || hex::first_non_hex(data_hex).is_some() {
        return Err(field(3, "0-8 data bytes as hex digits without spaces"));
    }
    let mut data = [0u8; 8];
    for (i, pair) in data_hex.chunks_exact(2).enumerate() {
        data[i] = hex::parse_u32(pair).unwrap_or(0) as u8;
    }
    let frame = hex::build_frame(id, extended, None, &data[..data_hex.len() / 2]).ok_or(field(1, ID_EXPECTED))?;
    Ok(Message::Frame { frame, timestamp_us })
}

/// `SECS.FRACTION` (1-9 fraction digits) in microseconds.
fn parse_timestamp(t: &[u8]) -> Option<u64> {
    let dot = t.iter().position(|&b| b == b'.')?;
    let (secs, frac) = (&t[..dot], &t[dot + 1..]);
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !all_digits(secs) || !all_digits(frac) || frac.len() > 9 || secs.len() > 19 {
        return None;
    }
    let secs: u64 = std::str::from_utf8(secs).ok()?.parse().ok()?;
    let micros = (0..6).fold(0u64, |acc, i| acc * 10 + frac.get(i).map_or(0, |d| u64::from(d - b'0')));
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// Longest message the [`Decoder`] waits for; python-can gives up on an incomplete message at 200 characters.
pub const MAX_MESSAGE: usize = 256;

/// What the [`Decoder`] reports instead of a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Bytes outside `< ... >` other than whitespace, dropped.
    #[error("dropped {skipped} bytes outside `< ... >`")]
    Garbage { skipped: usize },
    /// A bracketed message that did not parse; `text` is what was dropped (lossy UTF-8).
    #[error("rejected socketcand message `{text}`: {source}")]
    Invalid {
        text: String,
        #[source]
        source: ParseError,
    },
}

/// Splits a socketcand byte stream into messages as it arrives, in any pieces.
///
/// A message runs from the last `<` before a `>` to that `>`, so an unterminated fragment in front of a good
/// message costs only the fragment. Whitespace between messages is ignored.
///
/// It reads through its buffer with an offset and moves what is left to the front once per [`Decoder::push`], so
/// a read of many messages costs one copy, not one per message, and a message is parsed where it lies.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    at: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Drops the first `n` unread bytes.
    fn skip(&mut self, n: usize) {
        self.at += n;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
    }

    /// The next message or error; `None` when more bytes are needed.
    #[must_use]
    pub fn poll(&mut self) -> Option<Result<Message, DecodeError>> {
        loop {
            let ws = self.rest().iter().take_while(|b| b.is_ascii_whitespace()).count();
            self.skip(ws);
            let rest = self.rest();
            if rest.is_empty() {
                return None;
            }
            let Some(start) = rest.iter().position(|&b| b == b'<') else {
                if rest.len() > MAX_MESSAGE {
                    let skipped = rest.len();
                    self.skip(skipped);
                    return Some(Err(DecodeError::Garbage { skipped }));
                }
                // Wait: the rest may still be whitespace before a `<`, or more garbage.
                if rest.contains(&b'>') {
                    let skipped = rest.iter().rposition(|&b| b == b'>').map_or(0, |i| i + 1);
                    self.skip(skipped);
                    return Some(Err(DecodeError::Garbage { skipped }));
                }
                return None;
            };
            if start > 0 {
                let junk = rest[..start].iter().filter(|b| !b.is_ascii_whitespace()).count();
                self.skip(start);
                if junk > 0 {
                    return Some(Err(DecodeError::Garbage { skipped: start }));
                }
                continue;
            }
            let Some(end) = rest.iter().position(|&b| b == b'>') else {
                if rest.len() > MAX_MESSAGE {
                    // Keep a message that may be starting at the last `<`.
                    let last = rest.iter().rposition(|&b| b == b'<').unwrap_or(0);
                    let skipped = if last > 0 && rest.len() - last <= MAX_MESSAGE { last } else { rest.len() };
                    self.skip(skipped);
                    return Some(Err(DecodeError::Garbage { skipped }));
                }
                return None;
            };
            // The message starts at the last `<` before the `>`.
            let msg_start = rest[..end].iter().rposition(|&b| b == b'<').unwrap_or(0);
            if msg_start > 0 {
                self.skip(msg_start);
                return Some(Err(DecodeError::Garbage { skipped: msg_start }));
            }
            let text = &rest[..=end];
            let parsed = Message::parse(text)
                .map_err(|source| DecodeError::Invalid { text: String::from_utf8_lossy(text).into_owned(), source });
            self.skip(end + 1);
            return Some(parsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candump::tests::arb_frame;
    use proptest::prelude::*;

    fn text(m: &Message) -> String {
        m.to_text().unwrap()
    }

    #[test]
    fn handshake_bytes_are_exact() {
        assert_eq!(text(&Message::Hi), "< hi >");
        assert_eq!(text(&Message::Open("can0".into())), "< open can0 >");
        assert_eq!(text(&Message::Ok), "< ok >");
        assert_eq!(text(&Message::Mode(Mode::Raw)), "< rawmode >");
        assert_eq!(text(&Message::Echo), "< echo >");
        assert_eq!(Message::parse(b"< open can0 >"), Ok(Message::Open("can0".into())));
        assert_eq!(Message::parse(b"< rawmode >"), Ok(Message::Mode(Mode::Raw)));
    }

    #[test]
    fn frame_examples_from_the_protocol_doc() {
        let frame = CanFrame::standard(0x123, &[0x1A, 0x22, 0x03, 0x44]).unwrap();
        let m = Message::Frame { frame, timestamp_us: 23_424_242 };
        assert_eq!(Message::parse(b"< frame 123 23.424242 1A220344 >"), Ok(m.clone()));
        assert_eq!(text(&m), "< frame 123 23.424242 1A220344 >");
        // Empty data keeps the field python-can expects: two spaces before `>`.
        let empty = Message::Frame { frame: CanFrame::extended(0x4210, &[]).unwrap(), timestamp_us: 1_000_000 };
        assert_eq!(text(&empty), "< frame 00004210 1.000000  >");
        assert_eq!(Message::parse(b"< frame 00004210 1.000000  >"), Ok(empty));
    }

    #[test]
    fn send_examples_from_the_protocol_doc_and_python_can() {
        assert_eq!(Message::parse(b"< send 123 0 >"), Ok(Message::Send(CanFrame::standard(0x123, &[]).unwrap())));
        let f = CanFrame::extended(0x1AAA_AAAA, &[0x01, 0xF1]).unwrap();
        assert_eq!(Message::parse(b"< send 1AAAAAAA 2 1 f1 >"), Ok(Message::Send(f)));
        assert_eq!(text(&Message::Send(f)), "< send 1AAAAAAA 2 01 F1 >");
        assert_eq!(
            Message::parse(b"< send 123 3 11 22 >"),
            Err(ParseError::Field { command: "send", field: 5, expected: "as many data bytes as the length says" })
        );
        assert_eq!(
            Message::parse(b"< send 800 0 >").unwrap_err().to_string(),
            format!("`send` field 1: expected {ID_EXPECTED}")
        );
    }

    #[test]
    fn errors_and_unknown_commands() {
        assert_eq!(Message::parse(b"< error unknown command >"), Ok(Message::Error("unknown command".into())));
        assert_eq!(Message::parse(b"< subscribe 0 0 123 >"), Err(ParseError::UnknownCommand("subscribe".into())));
        assert_eq!(Message::parse(b"hi >"), Err(ParseError::NotBracketed));
        let remote = embedded_can::Frame::new_remote(dbe_core::can::StandardId::new(1).unwrap(), 2).unwrap();
        assert_eq!(Message::Send(remote).to_text(), Err(RemoteFrameUnsupported));
    }

    #[test]
    fn decoder_splits_and_resyncs() {
        let mut d = Decoder::new();
        d.push(b"< hi >< ok >\n  junk< ok");
        assert_eq!(d.poll(), Some(Ok(Message::Hi)));
        assert_eq!(d.poll(), Some(Ok(Message::Ok)));
        assert_eq!(d.poll(), Some(Err(DecodeError::Garbage { skipped: 4 })));
        assert_eq!(d.poll(), None);
        d.push(b" >< broken < echo >");
        assert_eq!(d.poll(), Some(Ok(Message::Ok)));
        assert_eq!(d.poll(), Some(Err(DecodeError::Garbage { skipped: 9 })));
        assert_eq!(d.poll(), Some(Ok(Message::Echo)));
        assert_eq!(d.poll(), None);
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let data_frame = || arb_frame().prop_filter("socketcand has no remote frames", |f| !f.is_remote());
        prop_oneof![
            Just(Message::Hi),
            Just(Message::Ok),
            Just(Message::Echo),
            prop_oneof![Just(Mode::Raw), Just(Mode::Bcm), Just(Mode::Control), Just(Mode::IsoTp)]
                .prop_map(Message::Mode),
            "[a-z][a-z0-9]{0,15}".prop_map(Message::Open),
            "[a-z0-9]{1,8}( [a-z0-9.]{1,10}){0,3}".prop_map(Message::Error),
            data_frame().prop_map(Message::Send),
            (data_frame(), 0u64..=u64::MAX).prop_map(|(frame, timestamp_us)| Message::Frame { frame, timestamp_us }),
        ]
    }

    fn feed(bytes: &[u8], cuts: &[usize]) -> Vec<Result<Message, DecodeError>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort();
        let mut d = Decoder::new();
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
        fn round_trips_in_any_pieces(msgs in proptest::collection::vec(arb_message(), 0..10),
                                     cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.to_text().unwrap().into_bytes()).collect::<Vec<u8>>();
            prop_assert_eq!(feed(&bytes, &cuts), msgs.into_iter().map(Ok).collect::<Vec<_>>());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let _ = feed(&bytes, &cuts);
            let _ = Message::parse(&bytes);
        }

        #[test]
        fn message_after_garbage_survives(garbage in proptest::collection::vec(any::<u8>(), 0..300),
                                          msg in arb_message(),
                                          cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let mut bytes = garbage;
            bytes.extend(msg.to_text().unwrap().into_bytes());
            let got = feed(&bytes, &cuts);
            prop_assert_eq!(got.last(), Some(&Ok(msg)));
        }
    }
}
