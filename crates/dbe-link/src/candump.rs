//! candump log lines: the text format `candump -l` writes, `canplayer` and `log2asc` read, and python-can's
//! `CanutilsLogWriter`/`CanutilsLogReader` write and read. `dbe decode` and `dbe replay` read recorded packs
//! through it, and the daemon can write its bus to it.
//!
//! ```text
//! (1436509052.249713) can0 1DB#0123456789ABCDEF
//! (0000000001.000000) can0 00004210#11.22        <- 8 id digits: extended; '.' between bytes is allowed
//! (1436509052.249713) vcan0 123#R4 T             <- remote frame with length 4, sent by us (python-can, candump -x)
//! ```
//!
//! A line is `(SECONDS.FRACTION) INTERFACE FRAME [R|T]`: the timestamp has 6 fraction digits (candump, python-can
//! `%f`) or 9 (candump `-N`, nanoseconds, truncated here to microseconds); fields are separated by spaces (candump
//! pads the interface name with leading spaces when it logs several interfaces of different name lengths); the
//! optional last field is the direction python-can and `candump -x` add. The frame is `ID#DATA`: 3 hex digits for
//! a standard id, 8 for an extended one, 0 to 8 data bytes in hex (either case, optional `.` between bytes),
//! `R` or `R<len>` (len 0-8) for a remote frame, and an optional `_<raw dlc>` (9-F) after 8 data bytes, which is
//! accepted and dropped (a classic frame with DLC 9-15 still carries 8 bytes).
//!
//! Not supported, reported as [`ErrorKind::Unsupported`] so a replay can skip them and say why: CAN FD (`##`),
//! CAN XL (5-digit priority id) and error frames (8-digit id with `CAN_ERR_FLAG` 0x20000000 set; python-can
//! writes `20000080#...` for them).
//!
//! Skipped lines ([`parse_line`] returns `Ok(None)`): blank lines, lines starting with `#` (comments in our own
//! logs and hand-written test files) and candump's `DROPCOUNT: ...` notices (the kernel dropped frames while
//! logging; nothing to replay).
//!
//! Sources (facts only): linux-can/can-utils `lib.h` (frame string layout and examples), `lib.c`
//! (`parse_canframe`, `snprint_canframe`), `candump.c` (`(%010llu.%06llu) %*s ` prefix, ` R`/` T` suffix with
//! `-x`, `DROPCOUNT:` lines), `canplayer.c` (6 or 9 fraction digits, non-`(` lines skipped); hardbyte/python-can
//! `can/io/canutils.py` (`(%f)` timestamps, `R`/`T` direction suffix, `#R` remote frames without a length).

use std::fmt;

use dbe_core::CanFrame;

use crate::hex;

/// One frame of a candump log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Seconds since the Unix epoch (candump) or since the start of the capture (python-can relative logs),
    /// in microseconds.
    pub timestamp_us: u64,
    /// The interface name (`can0`, `vcan0`); never empty and without whitespace, so the line round-trips.
    pub interface: String,
    pub frame: CanFrame,
    /// Whether the logger received or sent the frame, when the log says so (python-can, `candump -x`).
    pub direction: Option<Direction>,
}

/// One frame of a candump log with its interface name borrowed from the line: what [`parse_line_ref`] and
/// [`Decoder::poll_ref`] give, so that reading a log allocates nothing per line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LogLineRef<'a> {
    pub timestamp_us: u64,
    pub interface: &'a str,
    pub frame: CanFrame,
    pub direction: Option<Direction>,
}

impl LogLineRef<'_> {
    pub fn to_owned(&self) -> LogLine {
        LogLine {
            timestamp_us: self.timestamp_us,
            interface: self.interface.to_owned(),
            frame: self.frame,
            direction: self.direction,
        }
    }
}

/// The direction flag after the frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `R`: received from the bus.
    Rx,
    /// `T`: transmitted by the logging host.
    Tx,
}

/// Whether a rejected line was wrong or just describes something DBE does not handle.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not a candump line at all, or a broken one.
    Malformed,
    /// A valid candump line for a frame DBE cannot represent (CAN FD, CAN XL, error frames).
    Unsupported,
}

/// Why a line was rejected, and where. The caller adds the line number (see [`Decoder`], which does).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: expected {expected}, found {found}{}", if *.kind == ErrorKind::Unsupported { " (not supported)" } else { "" })]
pub struct ParseError {
    /// 1-based byte column in the line.
    pub column: usize,
    /// What the parser wanted at that column.
    pub expected: &'static str,
    /// What it saw there: a quoted character, `end of line`, or a description of an unsupported frame.
    pub found: String,
    pub kind: ErrorKind,
}

/// Parses one log line (without or with its line terminator). `Ok(None)` for lines to skip (blank, `#` comment,
/// `DROPCOUNT:`).
pub fn parse_line(line: &str) -> Result<Option<LogLine>, ParseError> {
    parse_line_bytes(line.as_bytes())
}

/// [`parse_line`] on raw bytes, for input that may not be UTF-8 (only the interface name must be).
pub fn parse_line_bytes(line: &[u8]) -> Result<Option<LogLine>, ParseError> {
    parse_line_ref(line).map(|l| l.map(|l| l.to_owned()))
}

/// [`parse_line_bytes`] without copying the interface name out of the line.
pub fn parse_line_ref(line: &[u8]) -> Result<Option<LogLineRef<'_>>, ParseError> {
    match parse_common(line) {
        Some(l) => Ok(Some(l)),
        None => parse_general(line),
    }
}

/// Every form the module doc lists, with the column and cause of any fault.
fn parse_general(line: &[u8]) -> Result<Option<LogLineRef<'_>>, ParseError> {
    let mut p = Cursor { s: line, pos: 0 };
    p.skip_ws();
    if p.at_end() || p.peek() == Some(b'#') || p.rest().starts_with(b"DROPCOUNT:") {
        return Ok(None);
    }
    p.expect(b'(', "`(` opening the timestamp")?;
    let timestamp_us = p.timestamp()?;
    p.expect(b')', "`)` closing the timestamp")?;
    p.require_ws("a space after the timestamp")?;
    let iface_start = p.pos;
    let iface = p.token();
    if iface.is_empty() {
        return Err(p.error("an interface name", ErrorKind::Malformed));
    }
    let interface = match std::str::from_utf8(iface) {
        Ok(s) => s,
        Err(e) => {
            p.pos = iface_start + e.valid_up_to();
            return Err(p.error("an interface name in UTF-8", ErrorKind::Malformed));
        }
    };
    p.require_ws("a space after the interface name")?;
    let frame_start = p.pos;
    let token = p.token();
    if token.is_empty() {
        return Err(p.error("a frame `ID#DATA`", ErrorKind::Malformed));
    }
    let frame = parse_frame_at(token, frame_start)?;
    p.skip_ws();
    let direction = match p.token() {
        [] => None,
        [b'R' | b'r'] => Some(Direction::Rx),
        [b'T' | b't'] => Some(Direction::Tx),
        _ => {
            p.pos -= p.s[..p.pos].iter().rev().take_while(|b| !is_ws(**b)).count();
            return Err(p.error("end of line or a direction `R`/`T`", ErrorKind::Malformed));
        }
    };
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("end of line", ErrorKind::Malformed));
    }
    Ok(Some(LogLineRef { timestamp_us, interface, frame, direction }))
}

/// The lines candump and DBE's recorder write, read in one pass with no error bookkeeping: `(S.UUUUUU) IFACE
/// ID#DATA[ R| T]`, 1-13 digits of seconds, 6 of fraction, single spaces, an ASCII interface name, a 3- or 8-digit
/// id and whole data bytes, an optional `\r`. Anything else (and anything wrong) gives `None` and goes to the
/// general parser, which accepts every line this does with the same result (a property test holds them to it)
/// and says where a bad one goes wrong.
fn parse_common(line: &[u8]) -> Option<LogLineRef<'_>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"(")?;
    let dot = rest.iter().take(14).position(|&b| b == b'.')?;
    let (secs, rest) = (&rest[..dot], &rest[dot + 1..]);
    if secs.is_empty() || rest.len() < 8 || rest[6] != b')' || rest[7] != b' ' {
        return None;
    }
    let mut timestamp_us = 0u64;
    for &d in secs.iter().chain(&rest[..6]) {
        if !d.is_ascii_digit() {
            return None;
        }
        // At most 13 + 6 digits: below 10^19, inside u64.
        timestamp_us = timestamp_us * 10 + u64::from(d - b'0');
    }
    let rest = &rest[8..];
    let space = rest.iter().take(33).position(|&b| b == b' ')?;
    let (iface, rest) = (&rest[..space], &rest[space + 1..]);
    if iface.is_empty() || !iface.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    // ASCII graphic bytes are UTF-8.
    let interface = std::str::from_utf8(iface).ok()?;
    let id_len = match rest.get(3) {
        Some(b'#') => 3,
        _ if rest.get(8) == Some(&b'#') => 8,
        _ => return None,
    };
    let id = rest[..id_len].iter().try_fold(0u32, |acc, &b| Some((acc << 4) | u32::from(hex::nibble(b)?)))?;
    let extended = id_len == 8;
    if id > if extended { 0x1FFF_FFFF } else { 0x7FF } {
        return None;
    }
    let rest = &rest[id_len + 1..];
    let data_len = rest.iter().take(17).position(|&b| b == b' ').unwrap_or(rest.len());
    let (hex_data, rest) = rest.split_at(data_len);
    if hex_data.len() % 2 != 0 || hex_data.len() > 16 {
        return None;
    }
    let mut data = [0u8; 8];
    for (byte, pair) in data.iter_mut().zip(hex_data.chunks_exact(2)) {
        *byte = (hex::nibble(pair[0])? << 4) | hex::nibble(pair[1])?;
    }
    let direction = match rest {
        [] => None,
        b" R" => Some(Direction::Rx),
        b" T" => Some(Direction::Tx),
        _ => return None,
    };
    let frame = hex::build_frame(id, extended, None, &data[..hex_data.len() / 2])?;
    Some(LogLineRef { timestamp_us, interface, frame, direction })
}

/// Parses the frame part alone (`1DB#0011`, `123#R`), with columns counted from its first character.
pub fn parse_frame(text: &str) -> Result<CanFrame, ParseError> {
    parse_frame_at(text.as_bytes(), 0)
}

/// Formats a frame as candump does: upper-case hex, 3 or 8 id digits, `R` or `R<len>` for remote frames.
/// Unlike `CanFrame`'s `Display`, this keeps a remote frame's length.
pub fn format_frame(frame: &CanFrame) -> String {
    let mut out = String::with_capacity(26);
    push_frame(&mut out, frame);
    out
}

fn push_frame(out: &mut String, frame: &CanFrame) {
    use fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = if frame.is_extended() {
        write!(out, "{:08X}#", frame.raw_id())
    } else {
        write!(out, "{:03X}#", frame.raw_id())
    };
    if frame.is_remote() {
        out.push('R');
        if !frame.is_empty() {
            let _ = write!(out, "{}", frame.len());
        }
    } else {
        hex::push_upper(out, frame.data());
    }
}

/// Appends one line as candump writes it, without the line terminator: `(SSSSSSSSSS.UUUUUU) IFACE FRAME[ R|T]`.
/// The same text as [`LogLine`]'s `Display`, for writers that keep one buffer for every line (the recorder).
pub fn push_line(out: &mut String, timestamp_us: u64, interface: &str, frame: &CanFrame, direction: Option<Direction>) {
    use fmt::Write as _;
    let secs = timestamp_us / 1_000_000;
    let micros = timestamp_us % 1_000_000;
    // Writing to a String cannot fail.
    let _ = write!(out, "({secs:010}.{micros:06}) {interface} ");
    push_frame(out, frame);
    out.push_str(match direction {
        None => "",
        Some(Direction::Rx) => " R",
        Some(Direction::Tx) => " T",
    });
}

/// The line as candump writes it, without the line terminator: `(SSSSSSSSSS.UUUUUU) IFACE FRAME[ R|T]`.
impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(48);
        push_line(&mut s, self.timestamp_us, &self.interface, &self.frame, self.direction);
        f.write_str(&s)
    }
}

/// Longest line the [`Decoder`] buffers; a CAN XL line may reach 4 KiB of hex, anything longer is not candump.
pub const MAX_LINE: usize = 8192;

/// A line that the [`Decoder`] could not turn into a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line {line}, {source}")]
    Parse {
        /// 1-based line number.
        line: u64,
        #[source]
        source: ParseError,
    },
    #[error("line {line}: longer than {limit} bytes without a line end; skipped")]
    TooLong { line: u64, limit: usize },
}

/// Splits a byte stream into log lines as it arrives, in any pieces; `\n` or `\r\n` ends a line.
///
/// Feed bytes with [`push`](Self::push) (or read them straight into [`spare`](Self::spare) and
/// [`commit`](Self::commit) them, which saves the copy), drain with [`poll`](Self::poll) or
/// [`poll_ref`](Self::poll_ref) until it returns `None`, and call [`finish`](Self::finish) at the end of the input
/// so a last line without a line end is parsed too. A bad line yields one error and never affects the next line.
/// `poll_ref` allocates nothing: reading a log costs one pass over its bytes and the parse of each line.
#[derive(Debug, Default)]
pub struct Decoder {
    /// `buf[start..end]` is unread input; `buf[end..]` is room for [`spare`](Self::spare).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line: u64,
    /// Inside an over-long line: drop bytes until its end.
    discarding: bool,
    finished: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the unread bytes to the front once at least half the buffer has been read, so the buffer never
    /// grows with the input and each byte moves at most once on average.
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.end / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// At least `n` bytes of room after the unread input, to read into; [`commit`](Self::commit) then says how
    /// many were written.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        if self.buf.len() - self.end < n {
            self.buf.resize(self.end + n, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Takes the first `n` bytes written into [`spare`](Self::spare) as input.
    ///
    /// # Panics
    /// If `n` is more than the room `spare` gave.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "committed more than the spare room");
        self.end += n;
    }

    /// Marks the end of input: the remaining bytes form the last line.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Lines ended so far, skipped ones (blank, comments) included: the number of the last line polled.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// The next parsed line or error; `None` when more bytes are needed. Skipped lines are not reported.
    #[must_use]
    pub fn poll(&mut self) -> Option<Result<LogLine, LineError>> {
        self.poll_ref().map(|(_, r)| r.map(|l| l.to_owned()))
    }

    /// [`poll`](Self::poll) with the line's number (1-based), and the interface name borrowed from the buffer:
    /// nothing is allocated.
    #[must_use]
    pub fn poll_ref(&mut self) -> Option<(u64, Result<LogLineRef<'_>, LineError>)> {
        loop {
            let pending = &self.buf[self.start..self.end];
            let (line_len, consumed) = match pending.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1),
                None if self.finished && !pending.is_empty() => (pending.len(), pending.len()),
                None => {
                    if !self.discarding && pending.len() > MAX_LINE {
                        self.discarding = true;
                        self.line += 1;
                        self.start = self.end;
                        return Some((self.line, Err(LineError::TooLong { line: self.line, limit: MAX_LINE })));
                    }
                    if self.discarding {
                        self.start = self.end;
                    }
                    return None;
                }
            };
            let line_start = self.start;
            self.start += consumed;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            self.line += 1;
            let line = self.line;
            if line_len > MAX_LINE {
                return Some((line, Err(LineError::TooLong { line, limit: MAX_LINE })));
            }
            match parse_line_ref(&self.buf[line_start..line_start + line_len]) {
                Ok(None) => continue,
                Ok(Some(l)) => return Some((line, Ok(l))),
                Err(source) => return Some((line, Err(LineError::Parse { line, source }))),
            }
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.pos..).unwrap_or(&[])
    }

    fn error(&self, expected: &'static str, kind: ErrorKind) -> ParseError {
        ParseError { column: self.pos + 1, expected, found: describe(self.peek()), kind }
    }

    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), ParseError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected, ErrorKind::Malformed))
        }
    }

    fn skip_ws(&mut self) -> usize {
        let n = self.rest().iter().take_while(|b| is_ws(**b)).count();
        self.pos += n;
        n
    }

    fn require_ws(&mut self, expected: &'static str) -> Result<(), ParseError> {
        match self.peek() {
            Some(b' ' | b'\t') => {
                self.skip_ws();
                Ok(())
            }
            _ => Err(self.error(expected, ErrorKind::Malformed)),
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let n = rest.iter().take_while(|b| !is_ws(**b)).count();
        self.pos += n;
        &rest[..n]
    }

    fn digits(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        self.pos += n;
        &rest[..n]
    }

    /// `SECONDS.FRACTION` in microseconds.
    fn timestamp(&mut self) -> Result<u64, ParseError> {
        let secs_start = self.pos;
        let secs = self.digits();
        let secs = decimal(secs).ok_or_else(|| {
            let mut e = self.error("the seconds of the timestamp (decimal digits)", ErrorKind::Malformed);
            if !secs.is_empty() {
                e.column = secs_start + 1;
                e.expected = "seconds small enough for a 64-bit microsecond count";
                e.found = format!("`{}`", String::from_utf8_lossy(secs));
            }
            e
        })?;
        self.expect(b'.', "`.` between the seconds and their fraction")?;
        let frac_start = self.pos;
        let frac = self.digits();
        if frac.is_empty() || frac.len() > 9 {
            self.pos = frac_start + frac.len().min(9);
            return Err(self.error("1 to 9 fraction digits (6: microseconds, 9: nanoseconds)", ErrorKind::Malformed));
        }
        let mut micros = 0u64;
        for i in 0..6 {
            micros = micros * 10 + frac.get(i).map_or(0, |d| u64::from(d - b'0'));
        }
        secs.checked_mul(1_000_000).and_then(|us| us.checked_add(micros)).ok_or_else(|| ParseError {
            column: secs_start + 1,
            expected: "seconds small enough for a 64-bit microsecond count",
            found: format!("{secs}"),
            kind: ErrorKind::Malformed,
        })
    }
}

fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

fn describe(b: Option<u8>) -> String {
    match b {
        None => "end of line".to_owned(),
        Some(b) if b.is_ascii_graphic() || b == b' ' => format!("`{}`", b as char),
        Some(b) => format!("byte {b:#04x}"),
    }
}

/// Parses `ID#DATA`; `base` is the 0-based byte offset of `text` in its line, for error columns.
fn parse_frame_at(text: &[u8], base: usize) -> Result<CanFrame, ParseError> {
    let at = |pos: usize, expected: &'static str, kind: ErrorKind| ParseError {
        column: base + pos + 1,
        expected,
        found: describe(text.get(pos).copied()),
        kind,
    };
    let unsupported = |pos: usize, what: &str| ParseError {
        column: base + pos + 1,
        expected: "a classic CAN data or remote frame",
        found: what.to_owned(),
        kind: ErrorKind::Unsupported,
    };
    let id_len = hex::first_non_hex(text).unwrap_or(text.len());
    if text.get(id_len) != Some(&b'#') {
        return Err(at(id_len, "a hex digit or the `#` after the CAN id", ErrorKind::Malformed));
    }
    let id = hex::parse_u32(&text[..id_len]);
    let (id, extended) = match (id_len, id) {
        (3, Some(id)) if id <= 0x7FF => (id, false),
        (3, _) => return Err(at(0, "a standard id of at most 7FF", ErrorKind::Malformed)),
        (5, _) => return Err(unsupported(0, "a CAN XL frame (5-digit priority id)")),
        (8, Some(id)) if id & 0x2000_0000 != 0 => {
            return Err(unsupported(0, "an error frame (CAN_ERR_FLAG 0x20000000 set in the id)"))
        }
        (8, Some(id)) if id <= 0x1FFF_FFFF => (id, true),
        (8, _) => return Err(at(0, "an extended id of at most 1FFFFFFF", ErrorKind::Malformed)),
        _ => return Err(at(0, "a CAN id of 3 (standard) or 8 (extended) hex digits", ErrorKind::Malformed)),
    };
    let mut pos = id_len + 1;
    let build = |remote: Option<usize>, data: &[u8]| {
        // Ids were range-checked above and lengths are at most 8, so this cannot fail.
        hex::build_frame(id, extended, remote, data).ok_or_else(|| at(0, "a valid CAN frame", ErrorKind::Malformed))
    };
    match text.get(pos) {
        Some(b'R' | b'r') => {
            pos += 1;
            let mut dlc = 0;
            if let Some(&d) = text.get(pos) {
                if !(b'0'..=b'8').contains(&d) {
                    return Err(at(pos, "a remote frame length 0-8 or the end of the frame", ErrorKind::Malformed));
                }
                dlc = usize::from(d - b'0');
                pos += 1;
                if dlc == 8 {
                    pos =
                        raw_dlc_suffix(text, pos).map_err(|p| at(p, "a raw DLC `_9` to `_F`", ErrorKind::Malformed))?;
                }
            }
            if pos < text.len() {
                return Err(at(pos, "the end of the frame after the remote length", ErrorKind::Malformed));
            }
            build(Some(dlc), &[])
        }
        Some(b'#') => Err(unsupported(pos - 1, "a CAN FD frame (`##`)")),
        _ => {
            let mut data = [0u8; 8];
            let mut len = 0;
            while pos < text.len() {
                if text[pos] == b'.' {
                    pos += 1;
                    continue;
                }
                if len == 8 {
                    if text[pos] == b'_' {
                        pos = raw_dlc_suffix(text, pos)
                            .map_err(|p| at(p, "a raw DLC `_9` to `_F`", ErrorKind::Malformed))?;
                        if pos < text.len() {
                            return Err(at(pos, "the end of the frame", ErrorKind::Malformed));
                        }
                        break;
                    }
                    return Err(at(
                        pos,
                        "the end of the frame (a classic frame has at most 8 data bytes)",
                        ErrorKind::Malformed,
                    ));
                }
                // Errors are built only when there is one: a `ParseError` carries a formatted `found`.
                let hi = hex::nibble(text[pos]).ok_or_else(|| at(pos, "a hex data digit", ErrorKind::Malformed))?;
                let lo = text
                    .get(pos + 1)
                    .and_then(|&b| hex::nibble(b))
                    .ok_or_else(|| at(pos + 1, "the second hex digit of a data byte", ErrorKind::Malformed))?;
                data[len] = (hi << 4) | lo;
                len += 1;
                pos += 2;
            }
            build(None, &data[..len])
        }
    }
}

/// Consumes an optional `_X` (X = 9..F) at `pos`; returns the position after it, or the column of the fault.
fn raw_dlc_suffix(text: &[u8], pos: usize) -> Result<usize, usize> {
    if text.get(pos) != Some(&b'_') {
        return Ok(pos);
    }
    match text.get(pos + 1).and_then(|&b| hex::nibble(b)) {
        Some(9..=15) => Ok(pos + 2),
        _ => Err(pos + 1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use embedded_can::{Frame as _, StandardId};
    use proptest::prelude::*;

    fn line(s: &str) -> LogLine {
        parse_line(s).unwrap().unwrap()
    }

    #[test]
    fn parses_the_candump_example() {
        let l = line("(1436509052.249713) can0 1DB#0123456789ABCDEF");
        assert_eq!(l.timestamp_us, 1_436_509_052_249_713);
        assert_eq!(l.interface, "can0");
        assert_eq!(l.frame, CanFrame::standard(0x1DB, &[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]).unwrap());
        assert_eq!(l.direction, None);
        assert_eq!(l.to_string(), "(1436509052.249713) can0 1DB#0123456789ABCDEF");
    }

    #[test]
    fn parses_extended_remote_empty_and_separated_frames() {
        assert_eq!(line("(0.000000) vcan0 00004210#11.22").frame, CanFrame::extended(0x4210, &[0x11, 0x22]).unwrap());
        assert_eq!(parse_frame("123#").unwrap(), CanFrame::standard(0x123, &[]).unwrap());
        assert_eq!(parse_frame("7a1#r").unwrap(), CanFrame::new_remote(StandardId::new(0x7A1).unwrap(), 0).unwrap());
        let r4 = parse_frame("123#R4").unwrap();
        assert!(r4.is_remote());
        assert_eq!(r4.len(), 4);
        assert_eq!(format_frame(&r4), "123#R4");
        assert_eq!(parse_frame("123#11.2233.44556677.88").unwrap(), parse_frame("123#1122334455667788").unwrap());
        assert_eq!(parse_frame("123#1122334455667788_E").unwrap(), parse_frame("123#1122334455667788").unwrap());
        assert_eq!(parse_frame("123#R8_9").unwrap().len(), 8);
        assert_eq!(parse_frame("12345678#").unwrap(), CanFrame::extended(0x1234_5678, &[]).unwrap());
    }

    #[test]
    fn reads_python_can_and_candump_x_direction_and_nanoseconds() {
        let l = line("(1700000000.123456) can1 00000123#R T");
        assert_eq!(l.direction, Some(Direction::Tx));
        assert!(l.frame.is_extended() && l.frame.is_remote());
        assert_eq!(l.to_string(), "(1700000000.123456) can1 00000123#R T");
        let n = line("(1700000000.123456789)  can0 123#00 R\r\n");
        assert_eq!(n.timestamp_us, 1_700_000_000_123_456);
        assert_eq!(n.direction, Some(Direction::Rx));
    }

    #[test]
    fn direction_round_trips_in_python_cans_form() {
        // python-can 4.6 CanutilsLogWriter: `(%f) channel ID#DATA R|T`, remote frames as `ID#R R|T`.
        for (text, dir) in [
            ("(1700000000.000100) bus 1D4#6E6E000407460E12 T", Some(Direction::Tx)),
            ("(1700000000.000200) bus 00004200#00 R", Some(Direction::Rx)),
            ("(1700000000.000300) bus 7BB#R R", Some(Direction::Rx)),
            ("(1700000000.000400) bus 1DB#01", None),
        ] {
            let l = line(text);
            assert_eq!(l.direction, dir, "{text}");
            assert_eq!(l.to_string(), text);
            let mut s = String::from("x");
            push_line(&mut s, l.timestamp_us, &l.interface, &l.frame, l.direction);
            assert_eq!(&s[1..], text, "push_line writes what Display writes");
        }
    }

    #[test]
    fn skips_blank_comment_and_dropcount_lines() {
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   \r\n"), Ok(None));
        assert_eq!(parse_line("# recorded on the bench"), Ok(None));
        assert_eq!(parse_line("DROPCOUNT: dropped 3 CAN frames on 'can0' socket (total drops 3)"), Ok(None));
    }

    #[test]
    fn says_where_and_what() {
        let e = parse_line("(1436509052.249713) can0 1DB#01G3").unwrap_err();
        assert_eq!((e.column, e.expected, e.kind), (32, "a hex data digit", ErrorKind::Malformed));
        assert_eq!(e.to_string(), "column 32: expected a hex data digit, found `G`");
        assert_eq!(parse_line("(1.000000) can0 1DB#0").unwrap_err().expected, "the second hex digit of a data byte");
        let fd = parse_line("(1436509052.249713) can0 123##1112233").unwrap_err();
        assert_eq!((fd.column, fd.kind), (29, ErrorKind::Unsupported));
        assert!(fd.to_string().contains("CAN FD"), "{fd}");
        let err = parse_line("(1.000000) can0 20000080#0000000000000000").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
        assert_eq!(parse_line("(1.000000) can0 800#").unwrap_err().column, 17);
        assert_eq!(parse_line("1.000000 can0 123#").unwrap_err().column, 1);
        assert_eq!(parse_line("(1.000000) can0 123#112233445566778899").unwrap_err().column, 37);
        assert_eq!(
            parse_line("(1.000000) can0 1234#").unwrap_err().expected,
            "a CAN id of 3 (standard) or 8 (extended) hex digits"
        );
        assert_eq!(parse_line("(1.000000) can0 123#R9").unwrap_err().column, 22);
        assert_eq!(parse_line("(1.000000) can0 123#12 X").unwrap_err().column, 24);
        assert_eq!(parse_line("(1.000000)can0 123#").unwrap_err().column, 11);
        assert_eq!(parse_line("(99999999999999999999.0) can0 123#").unwrap_err().column, 2);
    }

    #[test]
    fn decoder_numbers_lines_and_survives_bad_ones() {
        let mut d = Decoder::new();
        d.push(b"# header\n(1.000000) can0 123#01\nnonsense\r\n(2.000000) can0 124#");
        assert_eq!(d.poll().unwrap().unwrap().frame, CanFrame::standard(0x123, &[1]).unwrap());
        assert!(matches!(d.poll(), Some(Err(LineError::Parse { line: 3, .. }))));
        assert_eq!(d.poll(), None);
        d.push(b"02");
        assert_eq!(d.poll(), None);
        d.finish();
        assert_eq!(d.poll().unwrap().unwrap().frame, CanFrame::standard(0x124, &[2]).unwrap());
        assert_eq!(d.poll(), None);
    }

    #[test]
    fn decoder_skips_an_overlong_line_and_keeps_the_next() {
        let mut d = Decoder::new();
        d.push(&vec![b'x'; MAX_LINE + 1]);
        assert_eq!(d.poll(), Some(Err(LineError::TooLong { line: 1, limit: MAX_LINE })));
        d.push(b"yyy\n(1.000000) can0 123#01\n");
        assert_eq!(d.poll().unwrap().unwrap().frame, CanFrame::standard(0x123, &[1]).unwrap());
    }

    pub(crate) fn arb_frame() -> impl Strategy<Value = CanFrame> {
        (any::<bool>(), any::<bool>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=8)).prop_map(
            |(ext, remote, id, data)| {
                let id = if ext { id & 0x1FFF_FFFF } else { id & 0x7FF };
                crate::hex::build_frame(id, ext, remote.then_some(data.len()), &data).unwrap()
            },
        )
    }

    proptest! {
        #[test]
        fn round_trips(ts in 0u64..=u64::MAX, iface in "[a-z][a-z0-9_.-]{0,14}", frame in arb_frame(),
                       dir in proptest::option::of(prop_oneof![Just(Direction::Rx), Just(Direction::Tx)])) {
            let l = LogLine { timestamp_us: ts, interface: iface, frame, direction: dir };
            prop_assert_eq!(parse_line(&l.to_string()), Ok(Some(l.clone())));
            prop_assert_eq!(parse_frame(&format_frame(&frame)), Ok(frame));
        }

        #[test]
        fn the_common_form_parses_as_the_general_parser_does(
            secs in 0u64..10_000_000_000_000, micros in 0u64..1_000_000, iface in "[ -~]{0,34}",
            frame in arb_frame(), tail in "( R| T| r| X| R |  T|)(\r|)", sep in "( |  |\t)",
        ) {
            let text = format!("({secs}.{micros:06}) {iface}{sep}{}{tail}", format_frame(&frame));
            if let Some(l) = parse_common(text.as_bytes()) {
                prop_assert_eq!(Ok(Some(l)), parse_general(text.as_bytes()), "{}", text);
            }
        }

        #[test]
        fn the_fast_path_takes_what_dbe_writes(ts in 0u64..10_000_000_000_000_000_000, iface in "[a-z][a-z0-9_.-]{0,14}",
                                               frame in arb_frame(),
                                               dir in proptest::option::of(prop_oneof![Just(Direction::Rx), Just(Direction::Tx)])) {
            prop_assume!(!frame.is_remote());
            let mut text = String::new();
            push_line(&mut text, ts, &iface, &frame, dir);
            let l = parse_common(text.as_bytes());
            prop_assert!(l.is_some(), "{}", text);
            prop_assert_eq!(l.unwrap().to_owned(), LogLine { timestamp_us: ts, interface: iface, frame, direction: dir });
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line_bytes(&bytes);
        }

        #[test]
        fn never_panics_on_near_misses(s in "\\(?[0-9]{0,12}\\.?[0-9]{0,10}\\)? ?[a-z0-9]{0,5} ?[0-9A-Fa-fRr#._]{0,24} ?[RTX]?") {
            if let Err(e) = parse_line(&s) {
                prop_assert!(e.column >= 1 && e.column <= s.len() + 1);
            }
        }

        #[test]
        fn decoder_is_split_invariant(frames in proptest::collection::vec(arb_frame(), 0..8),
                                      garbage in proptest::collection::vec(any::<u8>(), 0..40),
                                      cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let mut text = Vec::new();
            text.extend(garbage.iter().filter(|b| **b != b'\n'));
            text.push(b'\n');
            for (i, f) in frames.iter().enumerate() {
                let l = LogLine { timestamp_us: i as u64, interface: "can0".into(), frame: *f, direction: None };
                text.extend_from_slice(l.to_string().as_bytes());
                text.push(b'\n');
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort();
            let mut d = Decoder::new();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([text.len()]) {
                d.push(&text[last..c]);
                last = c;
                while let Some(item) = d.poll() {
                    if let Ok(l) = item { got.push(l.frame); }
                }
            }
            d.finish();
            while let Some(item) = d.poll() {
                if let Ok(l) = item { got.push(l.frame); }
            }
            // The garbage line may itself parse as a frame only by an astronomically unlikely accident.
            let tail = &got[got.len().saturating_sub(frames.len())..];
            prop_assert_eq!(tail, &frames[..]);
        }
    }
}
