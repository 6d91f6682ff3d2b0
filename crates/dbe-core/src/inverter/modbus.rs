//! Modbus RTU framing: CRC, frame splitting by length, request parsing and reply encoding, for the RS485
//! inverter protocols that speak Modbus (BYD emulation for Fronius Gen24).
//!
//! Facts and their sources:
//! - ADU layout `slave(1) | function(1) | data(n) | crc(2, low byte first)`, CRC-16/MODBUS (reflected polynomial
//!   0xA001, initial value 0xFFFF), the function codes 0x03 (read holding registers), 0x04 (read input
//!   registers), 0x06 (write single register), 0x10 (write multiple registers), their request/response layouts,
//!   the quantity limits (1..=125 registers per read, 1..=123 per write) and the exception response
//!   `slave | function|0x80 | code | crc` with codes 0x01 illegal function, 0x02 illegal data address,
//!   0x03 illegal data value, 0x04 server device failure: the Modbus Application Protocol specification and
//!   the Modbus serial-line guide, as summarised by the pymodbus documentation (`pymodbus.pdu`, the RTU framer)
//!   listed in `/work/shared/SOURCES.md`. The write-multiple limits also match Battery-Emulator's
//!   `Software/src/inverter/ModbusInverterProtocol.cpp` (123 registers, byte count must be twice the quantity).
//! - Slave 0 is the broadcast address: writes to it are executed and never answered.
//!
//! Frames are delimited on the wire by 3.5 characters of silence. Detecting that silence is the caller's job
//! (it owns the clock of the serial port) and it then calls [`FrameSplitter::silence`], which takes the buffered
//! bytes as one frame if their CRC matches. On top of that the splitter splits by length, which works on a busy
//! bus and after garbage without any silence: for each function code it knows the possible frame lengths
//! (request or response) and accepts the first whose CRC matches, else it drops one byte and tries again; and
//! while the head of the buffer waits for a frame that may never complete (garbage that looks like the start of
//! a long frame), a complete frame of a known layout ending at the newest byte is taken and what precedes it
//! dropped. A frame of an unknown function code is only delimited by silence. A false CRC match on garbage is
//! possible (1 in 65 536 per candidate), which the callers' checks of each request's fields back up.

use crate::inverter::BufferTooSmall;

/// The longest RTU frame (serial-line ADU limit).
pub const MAX_FRAME: usize = 256;
/// Most registers in one read response (spec limit).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most registers in one write-multiple request (spec limit).
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Slave address 0: broadcast, never answered.
pub const BROADCAST: u8 = 0;

/// Byte positions inside an RTU frame (after the slave address and function code).
mod field {
    pub const SLAVE: usize = 0;
    pub const FUNCTION: usize = 1;
    /// Start address of a request (0x03, 0x04, 0x06, 0x10).
    pub const ADDRESS: core::ops::Range<usize> = 2..4;
    /// Quantity of a read or write-multiple request, or value of a write-single request.
    pub const QUANTITY: core::ops::Range<usize> = 4..6;
    /// Byte count of a write-multiple request.
    pub const WRITE_BYTE_COUNT: usize = 6;
    /// First data byte of a write-multiple request.
    pub const WRITE_DATA: usize = 7;
    /// Byte count of a read response.
    pub const READ_BYTE_COUNT: usize = 2;
    /// First register of a read response.
    pub const READ_DATA: usize = 3;
    /// Exception code of an exception response.
    pub const EXCEPTION_CODE: usize = 2;
}

/// CRC-16/MODBUS of `data` (sent low byte first).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

/// True if the last two bytes of `frame` are the CRC of the rest.
pub fn crc_ok(frame: &[u8]) -> bool {
    frame.len() >= 4 && {
        let (body, crc) = frame.split_at(frame.len() - 2);
        crc16(body) == u16::from_le_bytes([crc[0], crc[1]])
    }
}

/// Modbus function codes, total: an unknown code is kept.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    ReadHoldingRegisters,
    ReadInputRegisters,
    WriteSingleRegister,
    WriteMultipleRegisters,
    Unknown(u8),
}

impl Function {
    pub fn from_u8(code: u8) -> Self {
        match code {
            0x03 => Function::ReadHoldingRegisters,
            0x04 => Function::ReadInputRegisters,
            0x06 => Function::WriteSingleRegister,
            0x10 => Function::WriteMultipleRegisters,
            c => Function::Unknown(c),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Function::ReadHoldingRegisters => 0x03,
            Function::ReadInputRegisters => 0x04,
            Function::WriteSingleRegister => 0x06,
            Function::WriteMultipleRegisters => 0x10,
            Function::Unknown(c) => c,
        }
    }
}

/// Modbus exception codes, total.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    IllegalFunction,
    IllegalDataAddress,
    IllegalDataValue,
    ServerDeviceFailure,
    Unknown(u8),
}

impl ExceptionCode {
    pub fn from_u8(code: u8) -> Self {
        match code {
            0x01 => ExceptionCode::IllegalFunction,
            0x02 => ExceptionCode::IllegalDataAddress,
            0x03 => ExceptionCode::IllegalDataValue,
            0x04 => ExceptionCode::ServerDeviceFailure,
            c => ExceptionCode::Unknown(c),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            ExceptionCode::IllegalFunction => 0x01,
            ExceptionCode::IllegalDataAddress => 0x02,
            ExceptionCode::IllegalDataValue => 0x03,
            ExceptionCode::ServerDeviceFailure => 0x04,
            ExceptionCode::Unknown(c) => c,
        }
    }
}

/// What a request asks, once its CRC has been checked.
// No heap in the core: the write payload is inline, and a protocol holds at most one request.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestPdu {
    Read {
        function: Function,
        address: u16,
        quantity: u16,
    },
    WriteSingle {
        address: u16,
        value: u16,
    },
    WriteMultiple {
        address: u16,
        values: heapless::Vec<u16, { MAX_WRITE_REGISTERS as usize }>,
    },
    /// A function we do not serve (answered with an exception), or a known one whose fields are malformed
    /// (`malformed` set: answered with "illegal data value").
    Unsupported {
        function: Function,
        malformed: bool,
    },
}

/// A request from the master (the inverter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub slave: u8,
    pub pdu: RequestPdu,
}

fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    match b.get(r) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

impl Request {
    /// Parses a whole frame (CRC included). `None` if the CRC is wrong or the frame is too short to name a
    /// function; a request with bad fields parses as `Unsupported { malformed: true }` so it can be answered.
    pub fn parse(frame: &[u8]) -> Option<Request> {
        if frame.len() < 4 || !crc_ok(frame) {
            return None;
        }
        let body = &frame[..frame.len() - 2];
        let slave = body[field::SLAVE];
        let function = Function::from_u8(body[field::FUNCTION]);
        let malformed = RequestPdu::Unsupported { function, malformed: true };
        let pdu = match function {
            Function::ReadHoldingRegisters | Function::ReadInputRegisters => {
                if body.len() != 6 {
                    malformed
                } else {
                    let quantity = be16(body, field::QUANTITY);
                    if quantity == 0 || quantity > MAX_READ_REGISTERS {
                        malformed
                    } else {
                        RequestPdu::Read { function, address: be16(body, field::ADDRESS), quantity }
                    }
                }
            }
            Function::WriteSingleRegister => {
                if body.len() != 6 {
                    malformed
                } else {
                    RequestPdu::WriteSingle { address: be16(body, field::ADDRESS), value: be16(body, field::QUANTITY) }
                }
            }
            Function::WriteMultipleRegisters => {
                let quantity = be16(body, field::QUANTITY);
                let count = body.get(field::WRITE_BYTE_COUNT).copied().unwrap_or(0) as usize;
                let data = body.get(field::WRITE_DATA..).unwrap_or(&[]);
                if quantity == 0
                    || quantity > MAX_WRITE_REGISTERS
                    || count != quantity as usize * 2
                    || data.len() != count
                {
                    malformed
                } else {
                    let mut values = heapless::Vec::new();
                    for pair in data.chunks_exact(2) {
                        // Cannot fail: quantity <= MAX_WRITE_REGISTERS was checked above.
                        let _ = values.push(u16::from_be_bytes([pair[0], pair[1]]));
                    }
                    RequestPdu::WriteMultiple { address: be16(body, field::ADDRESS), values }
                }
            }
            Function::Unknown(_) => RequestPdu::Unsupported { function, malformed: false },
        };
        Some(Request { slave, pdu })
    }
}

/// A response as the master sees it, borrowed from the frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// Register values of a 0x03/0x04 response, big-endian pairs.
    Registers {
        slave: u8,
        function: Function,
        data: &'a [u8],
    },
    /// Echo of a 0x06 write or the (address, quantity) acknowledgement of a 0x10 write.
    WriteAck {
        slave: u8,
        function: Function,
        address: u16,
        value_or_quantity: u16,
    },
    Exception {
        slave: u8,
        function: Function,
        code: ExceptionCode,
    },
}

impl<'a> Response<'a> {
    /// Parses a whole response frame (CRC included); `None` on bad CRC or a layout that fits no response.
    pub fn parse(frame: &'a [u8]) -> Option<Response<'a>> {
        if frame.len() < 5 || !crc_ok(frame) {
            return None;
        }
        let body = &frame[..frame.len() - 2];
        let slave = body[field::SLAVE];
        let fc = body[field::FUNCTION];
        if fc & 0x80 != 0 {
            if body.len() != 3 {
                return None;
            }
            return Some(Response::Exception {
                slave,
                function: Function::from_u8(fc & 0x7F),
                code: ExceptionCode::from_u8(body[field::EXCEPTION_CODE]),
            });
        }
        let function = Function::from_u8(fc);
        match function {
            Function::ReadHoldingRegisters | Function::ReadInputRegisters => {
                let count = body[field::READ_BYTE_COUNT] as usize;
                let data = body.get(field::READ_DATA..)?;
                (data.len() == count && count.is_multiple_of(2)).then_some(Response::Registers {
                    slave,
                    function,
                    data,
                })
            }
            Function::WriteSingleRegister | Function::WriteMultipleRegisters => {
                (body.len() == 6).then(|| Response::WriteAck {
                    slave,
                    function,
                    address: be16(body, field::ADDRESS),
                    value_or_quantity: be16(body, field::QUANTITY),
                })
            }
            Function::Unknown(_) => None,
        }
    }
}

/// Writes RTU frames into a caller's buffer, appending the CRC.
pub struct FrameWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    needed: usize,
}

impl<'b> FrameWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        FrameWriter { buf, len: 0, needed: 0 }
    }

    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.needed += 1;
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        let [hi, lo] = v.to_be_bytes();
        self.u8(hi).u8(lo)
    }

    /// Appends the CRC and returns the frame length, or how much room the frame needed.
    pub fn finish(&mut self) -> Result<usize, BufferTooSmall> {
        let needed = self.needed + 2;
        if needed > self.buf.len() {
            return Err(BufferTooSmall { needed, capacity: self.buf.len() });
        }
        let crc = crc16(&self.buf[..self.len]);
        let [lo, hi] = crc.to_le_bytes();
        self.u8(lo).u8(hi);
        Ok(self.len)
    }
}

/// Encodes an exception response.
pub fn emit_exception(
    slave: u8,
    function: Function,
    code: ExceptionCode,
    buf: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    FrameWriter::new(buf).u8(slave).u8(function.code() | 0x80).u8(code.code()).finish()
}

/// Encodes a read request (0x03 / 0x04).
pub fn emit_read_request(
    slave: u8,
    function: Function,
    address: u16,
    quantity: u16,
    buf: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    FrameWriter::new(buf).u8(slave).u8(function.code()).u16(address).u16(quantity).finish()
}

/// Encodes a write-single request (0x06); its normal response is the same frame echoed.
pub fn emit_write_single(slave: u8, address: u16, value: u16, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
    FrameWriter::new(buf).u8(slave).u8(0x06).u16(address).u16(value).finish()
}

/// Encodes the response to a write-multiple request (0x10).
pub fn emit_write_multiple_ack(
    slave: u8,
    address: u16,
    quantity: u16,
    buf: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    FrameWriter::new(buf).u8(slave).u8(0x10).u16(address).u16(quantity).finish()
}

/// Encodes a read response with `quantity` registers from `register(i)` (i from 0).
pub fn emit_read_response(
    slave: u8,
    function: Function,
    quantity: u16,
    mut register: impl FnMut(u16) -> u16,
    buf: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let quantity = quantity.min(MAX_READ_REGISTERS);
    let mut w = FrameWriter::new(buf);
    w.u8(slave).u8(function.code()).u8((quantity * 2) as u8);
    for i in 0..quantity {
        w.u16(register(i));
    }
    w.finish()
}

/// Reassembles RTU frames from a byte stream by their length (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct FrameSplitter {
    buf: heapless::Vec<u8, MAX_FRAME>,
}

impl FrameSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The inter-frame silence (3.5 characters) was seen: what is buffered is one whole frame, taken if its
    /// CRC matches (the only way a frame of an unknown function code is delimited), else dropped.
    pub fn silence(&mut self, on_frame: impl FnOnce(&[u8])) {
        if self.buf.len() >= 4 && crc_ok(&self.buf) {
            on_frame(&self.buf);
        }
        self.buf.clear();
    }

    /// Feeds bytes; `on_frame` is called with every complete frame whose CRC matches, in order.
    pub fn push(&mut self, bytes: &[u8], mut on_frame: impl FnMut(&[u8])) {
        for &b in bytes {
            if self.buf.is_full() {
                self.drop_front(1);
            }
            // Cannot fail: room was made above.
            let _ = self.buf.push(b);
            while let Some(n) = self.scan() {
                match n {
                    Scan::Frame(len) => {
                        on_frame(&self.buf[..len]);
                        self.drop_front(len);
                    }
                    Scan::Drop(n) => self.drop_front(n),
                }
            }
        }
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        let rest = self.buf.len() - n;
        self.buf.copy_within(n.., 0);
        self.buf.truncate(rest);
    }

    /// Looks at the buffer: a complete frame at the head, bytes to drop, or `None` to wait for more bytes.
    fn scan(&self) -> Option<Scan> {
        let b = &self.buf[..];
        if b.len() < 4 {
            return None;
        }
        let mut waiting = false;
        match frame_lengths(b) {
            Lengths::Known(candidates) => {
                for &len in &candidates {
                    if b.len() >= len {
                        if crc_ok(&b[..len]) {
                            return Some(Scan::Frame(len));
                        }
                    } else {
                        waiting = true;
                    }
                }
            }
            Lengths::NeedMore => waiting = true,
            // No known length: only the silence after it delimits such a frame (guessing by CRC would let garbage
            // swallow the next good frame).
            Lengths::Unknown => waiting = b.len() < MAX_FRAME,
        }
        if !waiting {
            return Some(Scan::Drop(1));
        }
        // The head may be the start of a frame that will never complete (garbage that looks like a long
        // frame): if a complete frame of a known layout ends exactly here, take it and drop what precedes it.
        (1..b.len().saturating_sub(3)).find_map(|start| {
            let tail = &b[start..];
            match frame_lengths(tail) {
                Lengths::Known(c) if c.contains(&tail.len()) && crc_ok(tail) => Some(Scan::Drop(start)),
                _ => None,
            }
        })
    }
}

enum Lengths {
    /// The possible total lengths (request or response layout).
    Known(heapless::Vec<usize, 2>),
    /// The length depends on a byte not received yet.
    NeedMore,
    /// A function code whose layout we do not know.
    Unknown,
}

/// The lengths a frame starting at `b[0]` may have, from its function code (and byte count).
fn frame_lengths(b: &[u8]) -> Lengths {
    let Some(&fc) = b.get(field::FUNCTION) else { return Lengths::NeedMore };
    let mut c: heapless::Vec<usize, 2> = heapless::Vec::new();
    if fc & 0x80 != 0 {
        let _ = c.push(5);
        return Lengths::Known(c);
    }
    match Function::from_u8(fc) {
        Function::ReadHoldingRegisters | Function::ReadInputRegisters => {
            let _ = c.push(8); // request
            match b.get(field::READ_BYTE_COUNT) {
                Some(&count) => {
                    let _ = c.push(5 + count as usize); // response
                }
                None => return Lengths::NeedMore,
            }
        }
        Function::WriteSingleRegister => {
            let _ = c.push(8);
        }
        Function::WriteMultipleRegisters => {
            let _ = c.push(8); // response
            match b.get(field::WRITE_BYTE_COUNT) {
                Some(&count) => {
                    let _ = c.push(9 + count as usize); // request
                }
                None => return Lengths::NeedMore,
            }
        }
        Function::Unknown(_) => return Lengths::Unknown,
    }
    Lengths::Known(c)
}

enum Scan {
    Frame(usize),
    Drop(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read 2 holding registers from 0x006B of slave 0x11, the example of the Modbus specification; the CRC is
    /// the widely quoted 0x8776 (sent 76 87).
    static READ_REQUEST: [u8; 8] = [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87];

    #[test]
    fn crc_matches_known_vectors() {
        assert_eq!(crc16(&READ_REQUEST[..6]), 0x8776);
        // CRC-16/MODBUS check value over "123456789".
        assert_eq!(crc16(b"123456789"), 0x4B37);
        assert!(crc_ok(&READ_REQUEST));
    }

    #[test]
    fn read_request_round_trips() {
        let r = Request::parse(&READ_REQUEST).unwrap();
        assert_eq!(r.slave, 0x11);
        assert_eq!(r.pdu, RequestPdu::Read { function: Function::ReadHoldingRegisters, address: 0x6B, quantity: 3 });
        let mut buf = [0u8; 8];
        assert_eq!(emit_read_request(0x11, Function::ReadHoldingRegisters, 0x6B, 3, &mut buf), Ok(8));
        assert_eq!(buf, READ_REQUEST);
    }

    #[test]
    fn bad_crc_is_not_a_request() {
        let mut f = READ_REQUEST;
        f[7] ^= 1;
        assert_eq!(Request::parse(&f), None);
    }

    #[test]
    fn write_multiple_parses_and_rejects_bad_counts() {
        let mut buf = [0u8; 32];
        let n =
            FrameWriter::new(&mut buf).u8(21).u8(0x10).u16(401).u16(2).u8(4).u16(0x00FF).u16(0xFF00).finish().unwrap();
        let r = Request::parse(&buf[..n]).unwrap();
        match r.pdu {
            RequestPdu::WriteMultiple { address, values } => {
                assert_eq!(address, 401);
                assert_eq!(&values[..], &[0x00FF, 0xFF00]);
            }
            other => panic!("{other:?}"),
        }
        let n = FrameWriter::new(&mut buf).u8(21).u8(0x10).u16(401).u16(2).u8(3).u16(0x00FF).u8(0).finish().unwrap();
        assert_eq!(
            Request::parse(&buf[..n]).unwrap().pdu,
            RequestPdu::Unsupported { function: Function::WriteMultipleRegisters, malformed: true }
        );
    }

    #[test]
    fn exception_and_read_responses_encode_and_parse() {
        let mut buf = [0u8; 16];
        let n =
            emit_exception(21, Function::ReadHoldingRegisters, ExceptionCode::IllegalDataAddress, &mut buf).unwrap();
        assert_eq!(&buf[..3], &[21, 0x83, 0x02]);
        assert_eq!(
            Response::parse(&buf[..n]),
            Some(Response::Exception {
                slave: 21,
                function: Function::ReadHoldingRegisters,
                code: ExceptionCode::IllegalDataAddress
            })
        );
        let n = emit_read_response(21, Function::ReadHoldingRegisters, 2, |i| 0x1234 + i, &mut buf).unwrap();
        assert_eq!(&buf[..7], &[21, 0x03, 4, 0x12, 0x34, 0x12, 0x35]);
        assert!(matches!(
            Response::parse(&buf[..n]),
            Some(Response::Registers { data: &[0x12, 0x34, 0x12, 0x35], .. })
        ));
        assert_eq!(
            emit_read_response(21, Function::ReadHoldingRegisters, 2, |_| 0, &mut buf[..8]),
            Err(BufferTooSmall { needed: 9, capacity: 8 })
        );
    }

    #[test]
    fn splitter_resyncs_after_garbage_and_splits_back_to_back_frames() {
        let mut s = FrameSplitter::new();
        let mut got = std::vec::Vec::new();
        let mut stream = std::vec![0x03, 0xFF, 0x11, 0x00];
        stream.extend_from_slice(&READ_REQUEST);
        stream.extend_from_slice(&READ_REQUEST);
        for chunk in stream.chunks(3) {
            s.push(chunk, |f| got.push(f.to_vec()));
        }
        assert_eq!(got, std::vec![READ_REQUEST.to_vec(), READ_REQUEST.to_vec()]);
    }

    #[test]
    fn splitter_passes_responses_of_other_slaves() {
        let mut buf = [0u8; 16];
        let n = emit_read_response(7, Function::ReadHoldingRegisters, 2, |i| i, &mut buf).unwrap();
        let mut s = FrameSplitter::new();
        let mut got = std::vec::Vec::new();
        s.push(&buf[..n], |f| got.push(f.to_vec()));
        s.push(&READ_REQUEST, |f| got.push(f.to_vec()));
        assert_eq!(got, std::vec![buf[..n].to_vec(), READ_REQUEST.to_vec()]);
    }
}
