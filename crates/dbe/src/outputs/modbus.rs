//! Modbus RTU relay boards: the coil and discrete-input requests DBE sends as the master (codec, no I/O), and the
//! device that speaks them over the project's serial layer.
//!
//! Facts and their sources:
//! - Function codes and layouts, Modbus Application Protocol Specification V1.1b3 (modbus.org), §6.1, §6.2,
//!   §6.5, §6.11: 0x01 Read Coils and 0x02 Read Discrete Inputs `address(2) | quantity(2)` (1 to 2000), answered
//!   `byte count | bits`, bits packed least significant first (the first coil is bit 0 of the first byte);
//!   0x05 Write Single Coil `address(2) | value(2)` with 0xFF00 = ON and 0x0000 = OFF (any other value is
//!   illegal), answered by an echo of the request; 0x0F Write Multiple Coils `address(2) | quantity(2) |
//!   byte count(1) | bits` (1 to 1968 coils), answered `address(2) | quantity(2)`; an exception answer is
//!   `function | 0x80, code`.
//! - The RTU framing and CRC are the project's own, shared with the BYD inverter protocol
//!   (`dbe_core::inverter::modbus`: `FrameWriter`, `crc_ok`, `ExceptionCode`).
//! - The cheap DIN-rail relay boards (4/8 channels, RS485) document exactly these frames; the commonly printed
//!   "relay 1 on" frame for slave 1 is `01 05 00 00 FF 00 8C 3A` and "relay 1 off" `01 05 00 00 00 00 CD CA`,
//!   which the tests below reproduce.
//!
//! A coil's read-back is the board's own output register: it proves the board took the command (and shows a
//! board that reset, lost power or opened on its own watchdog), not that the contactor's contacts moved.

use std::time::Duration;

use dbe_core::inverter::modbus::{crc_ok, ExceptionCode, FrameWriter};

use super::{DeviceError, Input, Levels, Output, OutputSet, RelayDevice};
use crate::ports::serial::{SerialHandle, SerialIn};
use crate::ports::PortState;

/// Most coils or inputs in one read (spec limit).
pub const MAX_READ_BITS: u16 = 2000;
/// Most coils in one write-multiple (spec limit).
pub const MAX_WRITE_COILS: u16 = 1968;

const READ_COILS: u8 = 0x01;
const READ_DISCRETE_INPUTS: u8 = 0x02;
const WRITE_SINGLE_COIL: u8 = 0x05;
const WRITE_MULTIPLE_COILS: u8 = 0x0F;
const COIL_ON: u16 = 0xFF00;
const COIL_OFF: u16 = 0x0000;

/// Byte positions in a reply frame.
mod field {
    pub const UNIT: usize = 0;
    pub const FUNCTION: usize = 1;
    pub const BYTE_COUNT: usize = 2;
    pub const BITS: usize = 3;
    pub const ADDRESS: core::ops::Range<usize> = 2..4;
    pub const VALUE: core::ops::Range<usize> = 4..6;
    pub const EXCEPTION_CODE: usize = 2;
}

/// A request to a relay board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    WriteCoil { address: u16, on: bool },
    WriteCoils { address: u16, values: Vec<bool> },
    ReadCoils { address: u16, quantity: u16 },
    ReadDiscreteInputs { address: u16, quantity: u16 },
}

/// A good reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Written,
    /// One value per coil or input asked for, in address order.
    Bits(Vec<bool>),
}

/// Why a reply is not the answer to the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the board answered with exception {0:?}")]
    Exception(ExceptionCode),
    #[error("the reply's CRC is wrong")]
    BadCrc,
    #[error("the reply came from unit {0}")]
    WrongUnit(u8),
    #[error("the reply does not match the request")]
    Mismatch,
}

fn be16(b: &[u8], r: core::ops::Range<usize>) -> Option<u16> {
    b.get(r).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn pack(values: &[bool]) -> impl Iterator<Item = u8> + '_ {
    values.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &v)| b | ((v as u8) << i)))
}

impl Request {
    pub fn function(&self) -> u8 {
        match self {
            Request::WriteCoil { .. } => WRITE_SINGLE_COIL,
            Request::WriteCoils { .. } => WRITE_MULTIPLE_COILS,
            Request::ReadCoils { .. } => READ_COILS,
            Request::ReadDiscreteInputs { .. } => READ_DISCRETE_INPUTS,
        }
    }

    /// Encodes the request for `unit` into `buf`; the length, or `None` when `buf` is too small or the request
    /// breaks the spec's quantity limits.
    pub fn emit(&self, unit: u8, buf: &mut [u8]) -> Option<usize> {
        let mut w = FrameWriter::new(buf);
        w.u8(unit).u8(self.function());
        match self {
            Request::WriteCoil { address, on } => {
                w.u16(*address).u16(if *on { COIL_ON } else { COIL_OFF });
            }
            Request::WriteCoils { address, values } => {
                let n = u16::try_from(values.len()).ok().filter(|n| (1..=MAX_WRITE_COILS).contains(n))?;
                w.u16(*address).u16(n).u8(values.len().div_ceil(8) as u8);
                for b in pack(values) {
                    w.u8(b);
                }
            }
            Request::ReadCoils { address, quantity } | Request::ReadDiscreteInputs { address, quantity } => {
                if !(1..=MAX_READ_BITS).contains(quantity) {
                    return None;
                }
                w.u16(*address).u16(*quantity);
            }
        }
        w.finish().ok()
    }

    /// Checks a whole reply frame (CRC included) against the request.
    pub fn parse_reply(&self, unit: u8, frame: &[u8]) -> Result<Reply, ReplyError> {
        if frame.len() < 5 || !crc_ok(frame) {
            return Err(ReplyError::BadCrc);
        }
        let body = &frame[..frame.len() - 2];
        if body[field::UNIT] != unit {
            return Err(ReplyError::WrongUnit(body[field::UNIT]));
        }
        let fc = body[field::FUNCTION];
        if fc == self.function() | 0x80 && body.len() == 3 {
            return Err(ReplyError::Exception(ExceptionCode::from_u8(body[field::EXCEPTION_CODE])));
        }
        if fc != self.function() {
            return Err(ReplyError::Mismatch);
        }
        let address = be16(body, field::ADDRESS);
        let value = be16(body, field::VALUE);
        match self {
            Request::WriteCoil { address: a, on } => {
                let v = if *on { COIL_ON } else { COIL_OFF };
                (body.len() == 6 && address == Some(*a) && value == Some(v)).then_some(Reply::Written)
            }
            Request::WriteCoils { address: a, values } => {
                (body.len() == 6 && address == Some(*a) && value == Some(values.len() as u16)).then_some(Reply::Written)
            }
            Request::ReadCoils { quantity, .. } | Request::ReadDiscreteInputs { quantity, .. } => {
                let n = *quantity as usize;
                let count = body[field::BYTE_COUNT] as usize;
                let bits = &body[field::BITS..];
                (count == n.div_ceil(8) && bits.len() == count)
                    .then(|| Reply::Bits((0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect()))
            }
        }
        .ok_or(ReplyError::Mismatch)
    }
}

/// The length of the reply frame that starts `head`, once enough of it is there to tell.
pub fn reply_len(head: &[u8]) -> Option<usize> {
    let fc = *head.get(field::FUNCTION)?;
    match fc {
        _ if fc & 0x80 != 0 => Some(5),
        WRITE_SINGLE_COIL | WRITE_MULTIPLE_COILS => Some(8),
        READ_COILS | READ_DISCRETE_INPUTS => head.get(field::BYTE_COUNT).map(|&n| 5 + n as usize),
        // Not an answer we asked for: taken whole at the next silence, then refused.
        _ => None,
    }
}

/// How long a board has to answer. Cheap boards answer within a few tens of ms; a frame at 9600 baud takes about
/// 10 ms each way.
pub const ANSWER_TIMEOUT: Duration = Duration::from_millis(250);
/// Tries per request before the board is reported as not answering.
pub const ATTEMPTS: u32 = 3;
/// How long the serial port may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// A relay board on its own serial port.
pub struct ModbusBoard {
    port: SerialHandle,
    device: String,
    unit: u8,
    coils: [Option<u16>; Output::COUNT],
    inputs: [Option<u16>; Input::COUNT],
}

impl ModbusBoard {
    pub fn new(
        port: SerialHandle,
        device: &str,
        unit: u8,
        coils: [Option<u16>; Output::COUNT],
        inputs: [Option<u16>; Input::COUNT],
    ) -> Self {
        ModbusBoard { port, device: device.to_string(), unit, coils, inputs }
    }

    async fn wait_up(&mut self) -> Result<(), DeviceError> {
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        loop {
            match self.port.state.borrow_and_update().clone() {
                PortState::Up => return Ok(()),
                PortState::Down(why) => return Err(DeviceError::Port(why)),
                PortState::Opening => {}
            }
            match tokio::time::timeout_at(deadline, self.port.state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(DeviceError::Port("the serial port task ended".into())),
                Err(_) => return Err(DeviceError::Port(format!("{} did not open", self.device))),
            }
        }
    }

    /// One request and its answer, with retries; an exception answer is not retried (the board said no).
    pub async fn exchange(&mut self, req: &Request) -> Result<Reply, DeviceError> {
        let mut frame = [0u8; 300];
        let n = req.emit(self.unit, &mut frame).ok_or(DeviceError::Invalid("request out of the spec's limits"))?;
        let mut last = DeviceError::NoAnswer { device: self.device.clone(), unit: self.unit };
        for _ in 0..ATTEMPTS {
            self.wait_up().await?;
            // A late answer to an earlier request must not be taken for this one.
            while self.port.rx.try_recv().is_ok() {}
            if self.port.tx.send(frame[..n].to_vec()).await.is_err() {
                return Err(DeviceError::Port("the serial port task ended".into()));
            }
            match tokio::time::timeout(ANSWER_TIMEOUT, self.read_reply(req)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(ReplyError::Exception(code))) => {
                    return Err(DeviceError::Exception { function: req.function(), code })
                }
                Ok(Err(e)) => last = DeviceError::BadReply(e.to_string()),
                Err(_) => {}
            }
        }
        Err(last)
    }

    async fn read_reply(&mut self, req: &Request) -> Result<Reply, ReplyError> {
        let mut got: Vec<u8> = Vec::new();
        loop {
            match self.port.rx.recv().await {
                Some(SerialIn::Bytes(b)) => {
                    got.extend_from_slice(&b);
                    if let Some(len) = reply_len(&got).filter(|&l| got.len() >= l) {
                        return req.parse_reply(self.unit, &got[..len]);
                    }
                }
                Some(SerialIn::Silence) if !got.is_empty() => return req.parse_reply(self.unit, &got),
                Some(SerialIn::Silence) => {}
                None => return Err(ReplyError::Mismatch),
            }
        }
    }

    /// Reads the bits at `addresses` (some unset): one request over their span, or one each when the span is
    /// longer than a read may be.
    async fn read_bits<const N: usize>(
        &mut self,
        addresses: [Option<u16>; N],
        discrete: bool,
    ) -> Result<[Option<bool>; N], DeviceError> {
        let set = addresses.iter().flatten();
        let (Some(&lo), Some(&hi)) = (set.clone().min(), set.max()) else { return Ok([None; N]) };
        let spans: Vec<(u16, u16)> = if hi - lo < MAX_READ_BITS {
            vec![(lo, hi - lo + 1)]
        } else {
            addresses.iter().flatten().map(|&a| (a, 1)).collect()
        };
        let mut out = [None; N];
        for (address, quantity) in spans {
            let req = if discrete {
                Request::ReadDiscreteInputs { address, quantity }
            } else {
                Request::ReadCoils { address, quantity }
            };
            let Reply::Bits(bits) = self.exchange(&req).await? else {
                return Err(DeviceError::BadReply("no bits".into()));
            };
            for (slot, a) in out.iter_mut().zip(addresses) {
                if let Some(a) = a.filter(|&a| a >= address && a - address < quantity) {
                    *slot = Some(bits[(a - address) as usize]);
                }
            }
        }
        Ok(out)
    }

    /// The configured coils as one contiguous run in address order, if they form one.
    fn contiguous(&self) -> Option<(u16, usize)> {
        let mut set: Vec<u16> = self.coils.iter().flatten().copied().collect();
        set.sort_unstable();
        let first = *set.first()?;
        set.iter().enumerate().all(|(i, &a)| a as usize == first as usize + i).then_some((first, set.len()))
    }
}

impl RelayDevice for ModbusBoard {
    fn outputs(&self) -> OutputSet {
        OutputSet::from_fn(|o| self.coils[o.index()].is_some())
    }

    fn inputs(&self) -> [bool; Input::COUNT] {
        self.inputs.map(|i| i.is_some())
    }

    fn can_read_back(&self) -> bool {
        true
    }

    async fn set(&mut self, output: Output, on: bool) -> Result<(), DeviceError> {
        let Some(address) = self.coils[output.index()] else { return Ok(()) };
        self.exchange(&Request::WriteCoil { address, on }).await.map(|_| ())
    }

    /// One 0x0F frame opens every configured coil at once when they are contiguous (the usual wiring: relays 1
    /// to 4), the fewest round trips on a slow bus; a board that refuses 0x0F gets one 0x05 per coil.
    async fn open_all(&mut self) -> Result<(), DeviceError> {
        if let Some((address, n)) = self.contiguous().filter(|&(_, n)| n > 1) {
            match self.exchange(&Request::WriteCoils { address, values: vec![false; n] }).await {
                Ok(_) => return Ok(()),
                Err(DeviceError::Exception { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut result = Ok(());
        for o in Output::OPENING_ORDER {
            if let Err(e) = self.set(o, false).await {
                result = Err(e);
            }
        }
        result
    }

    async fn read_back(&mut self) -> Result<Levels, DeviceError> {
        self.read_bits(self.coils, false).await
    }

    async fn read_inputs(&mut self) -> Result<[Option<bool>; Input::COUNT], DeviceError> {
        self.read_bits(self.inputs, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbe_core::inverter::modbus::crc16;

    fn frame(req: &Request, unit: u8) -> Vec<u8> {
        let mut buf = [0u8; 300];
        let n = req.emit(unit, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut f = body.to_vec();
        f.extend_from_slice(&crc16(body).to_le_bytes());
        f
    }

    /// The frames relay-board manuals print for relay 1 of slave 1.
    static RELAY1_ON: [u8; 8] = [0x01, 0x05, 0x00, 0x00, 0xFF, 0x00, 0x8C, 0x3A];
    static RELAY1_OFF: [u8; 8] = [0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0xCD, 0xCA];

    #[test]
    fn write_single_coil_frames_match_the_boards_manuals_and_their_echo_is_accepted() {
        let on = Request::WriteCoil { address: 0, on: true };
        let off = Request::WriteCoil { address: 0, on: false };
        assert_eq!(frame(&on, 1), RELAY1_ON);
        assert_eq!(frame(&off, 1), RELAY1_OFF);
        assert_eq!(on.parse_reply(1, &RELAY1_ON), Ok(Reply::Written));
        // The echo of the other value is not an acknowledgement of this one.
        assert_eq!(on.parse_reply(1, &RELAY1_OFF), Err(ReplyError::Mismatch));
        assert_eq!(on.parse_reply(2, &RELAY1_ON), Err(ReplyError::WrongUnit(1)));
        let mut bad = RELAY1_ON;
        bad[7] ^= 1;
        assert_eq!(on.parse_reply(1, &bad), Err(ReplyError::BadCrc));
    }

    #[test]
    fn write_multiple_coils_packs_bits_least_significant_first() {
        // The spec's example (§6.11): coils 20..29 (address 0x13) set to CD 01.
        let bits = [true, false, true, true, false, false, true, true, true, false];
        let req = Request::WriteCoils { address: 0x13, values: bits.to_vec() };
        assert_eq!(frame(&req, 1), with_crc(&[0x01, 0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01]));
        assert_eq!(req.parse_reply(1, &with_crc(&[0x01, 0x0F, 0x00, 0x13, 0x00, 0x0A])), Ok(Reply::Written));
        assert_eq!(req.parse_reply(1, &with_crc(&[0x01, 0x0F, 0x00, 0x13, 0x00, 0x09])), Err(ReplyError::Mismatch));
        let all_off = Request::WriteCoils { address: 0, values: vec![false; 4] };
        assert_eq!(frame(&all_off, 1), with_crc(&[0x01, 0x0F, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00]));
        assert_eq!(Request::WriteCoils { address: 0, values: vec![] }.emit(1, &mut [0u8; 300]), None);
    }

    #[test]
    fn read_coils_and_inputs_unpack_the_answer() {
        // The spec's example (§6.1): coils 20..38 read as CD 6B 05.
        let req = Request::ReadCoils { address: 0x13, quantity: 19 };
        assert_eq!(frame(&req, 1), with_crc(&[0x01, 0x01, 0x00, 0x13, 0x00, 0x13]));
        let Ok(Reply::Bits(bits)) = req.parse_reply(1, &with_crc(&[0x01, 0x01, 0x03, 0xCD, 0x6B, 0x05])) else {
            panic!()
        };
        assert_eq!(bits.len(), 19);
        assert_eq!(&bits[..8], &[true, false, true, true, false, false, true, true]); // 0xCD
        assert_eq!(&bits[16..], &[true, false, true]); // 0x05, 3 bits
                                                       // A byte count that does not fit the quantity asked for.
        assert_eq!(req.parse_reply(1, &with_crc(&[0x01, 0x01, 0x02, 0xCD, 0x6B])), Err(ReplyError::Mismatch));
        let di = Request::ReadDiscreteInputs { address: 0, quantity: 2 };
        assert_eq!(frame(&di, 7), with_crc(&[0x07, 0x02, 0x00, 0x00, 0x00, 0x02]));
        assert_eq!(di.parse_reply(7, &with_crc(&[0x07, 0x02, 0x01, 0x02])), Ok(Reply::Bits(vec![false, true])));
        // A coil answer to an input request.
        assert_eq!(di.parse_reply(7, &with_crc(&[0x07, 0x01, 0x01, 0x02])), Err(ReplyError::Mismatch));
        assert_eq!(Request::ReadCoils { address: 0, quantity: 0 }.emit(1, &mut [0u8; 16]), None);
        assert_eq!(Request::ReadCoils { address: 0, quantity: 2001 }.emit(1, &mut [0u8; 16]), None);
    }

    #[test]
    fn exception_answers_are_reported_with_their_code() {
        let req = Request::WriteCoil { address: 9, on: false };
        assert_eq!(
            req.parse_reply(1, &with_crc(&[0x01, 0x85, 0x02])),
            Err(ReplyError::Exception(ExceptionCode::IllegalDataAddress))
        );
        // An exception for another function is not this request's answer.
        assert_eq!(req.parse_reply(1, &with_crc(&[0x01, 0x81, 0x02])), Err(ReplyError::Mismatch));
        assert_eq!(reply_len(&[0x01, 0x85]), Some(5));
    }

    #[test]
    fn reply_lengths_come_from_the_function_and_byte_count() {
        assert_eq!(reply_len(&[0x01]), None);
        assert_eq!(reply_len(&[0x01, 0x05]), Some(8));
        assert_eq!(reply_len(&[0x01, 0x0F]), Some(8));
        assert_eq!(reply_len(&[0x01, 0x01]), None);
        assert_eq!(reply_len(&[0x01, 0x01, 0x03]), Some(8));
        assert_eq!(reply_len(&[0x01, 0x03, 0x02]), None);
    }

    /// A board on the far end of an in-memory serial port: answers each request with `answer(frame)`.
    fn board(
        coils: [Option<u16>; Output::COUNT],
        mut answer: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> (ModbusBoard, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(16);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let (_state_tx, state_rx) = tokio::sync::watch::channel(PortState::Up);
        let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _keep = _state_tx;
            while let Some(req) = out_rx.recv().await {
                let _ = seen_tx.send(req.clone());
                if let Some(reply) = answer(&req) {
                    let (a, b) = reply.split_at(reply.len() / 2);
                    let _ = in_tx.send(SerialIn::Bytes(a.to_vec())).await;
                    let _ = in_tx.send(SerialIn::Bytes(b.to_vec())).await;
                    let _ = in_tx.send(SerialIn::Silence).await;
                }
            }
        });
        let port = SerialHandle { rx: in_rx, tx: out_tx, state: state_rx };
        (ModbusBoard::new(port, "/dev/test", 1, coils, [None, None]), seen_rx)
    }

    /// The coils a board holds, answering 0x01, 0x05 and 0x0F as the spec says.
    fn coil_board(coils: std::sync::Arc<std::sync::Mutex<[bool; 8]>>) -> impl FnMut(&[u8]) -> Option<Vec<u8>> {
        move |req: &[u8]| {
            let addr = u16::from_be_bytes([req[2], req[3]]) as usize;
            let mut c = coils.lock().unwrap();
            match req[1] {
                0x05 => {
                    c[addr] = req[4] == 0xFF;
                    Some(req.to_vec())
                }
                0x0F => {
                    let n = u16::from_be_bytes([req[4], req[5]]) as usize;
                    for i in 0..n {
                        c[addr + i] = req[7 + i / 8] & (1 << (i % 8)) != 0;
                    }
                    Some(with_crc(&req[..6]))
                }
                0x01 => {
                    let n = u16::from_be_bytes([req[4], req[5]]) as usize;
                    let bits: Vec<bool> = (0..n).map(|i| c[addr + i]).collect();
                    let mut body = vec![req[0], 0x01, n.div_ceil(8) as u8];
                    body.extend(pack(&bits));
                    Some(with_crc(&body))
                }
                _ => Some(with_crc(&[req[0], req[1] | 0x80, 0x01])),
            }
        }
    }

    const COILS: [Option<u16>; Output::COUNT] = [Some(0), Some(1), Some(2), None];

    #[tokio::test]
    async fn a_board_writes_and_reads_back_its_coils() {
        let coils = std::sync::Arc::new(std::sync::Mutex::new([false; 8]));
        let (mut b, _) = board(COILS, coil_board(coils.clone()));
        b.set(Output::Positive, true).await.unwrap();
        assert_eq!(coils.lock().unwrap()[..3], [false, false, true]);
        assert_eq!(b.read_back().await.unwrap(), [Some(false), Some(false), Some(true), None]);
    }

    #[tokio::test]
    async fn coils_too_far_apart_for_one_read_are_read_one_by_one() {
        let mut inner = coil_board(std::sync::Arc::new(std::sync::Mutex::new([true; 8])));
        // Coil 4000 answers as the board's coil 3.
        let (mut b, mut seen) = board([Some(0), None, Some(4000), None], move |req| {
            let mut r = req.to_vec();
            if r[2..4] == [0x0F, 0xA0] {
                r[2..4].copy_from_slice(&[0, 3]);
            }
            inner(&with_crc(&r[..r.len() - 2]))
        });
        assert_eq!(b.read_back().await.unwrap(), [Some(true), None, Some(true), None]);
        let reads: Vec<(u16, u16)> = std::iter::from_fn(|| seen.try_recv().ok())
            .map(|r| (u16::from_be_bytes([r[2], r[3]]), u16::from_be_bytes([r[4], r[5]])))
            .collect();
        assert_eq!(reads, [(0, 1), (4000, 1)]);
    }

    #[tokio::test]
    async fn opening_all_contiguous_coils_is_one_write_multiple() {
        let coils = std::sync::Arc::new(std::sync::Mutex::new([true; 8]));
        let (mut b, mut seen) = board(COILS, coil_board(coils.clone()));
        b.open_all().await.unwrap();
        assert_eq!(*coils.lock().unwrap(), [false, false, false, true, true, true, true, true], "only coils 0..3");
        let req = seen.try_recv().unwrap();
        assert_eq!(req[1], 0x0F);
        assert!(seen.try_recv().is_err(), "one frame");
    }

    #[tokio::test]
    async fn a_board_that_refuses_write_multiple_gets_single_writes_positive_first() {
        let coils = std::sync::Arc::new(std::sync::Mutex::new([true; 8]));
        let mut inner = coil_board(coils.clone());
        let (mut b, mut seen) =
            board(COILS, move |req| if req[1] == 0x0F { Some(with_crc(&[1, 0x8F, 0x01])) } else { inner(req) });
        b.open_all().await.unwrap();
        assert_eq!(coils.lock().unwrap()[..3], [false, false, false]);
        let order: Vec<(u8, u8)> = std::iter::from_fn(|| seen.try_recv().ok()).map(|r| (r[1], r[3])).collect();
        assert_eq!(order, [(0x0F, 0), (0x05, 2), (0x05, 1), (0x05, 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_board_that_does_not_answer_is_named_after_every_attempt() {
        let (mut b, mut seen) = board(COILS, |_| None);
        let e = b.set(Output::Negative, false).await.unwrap_err();
        assert_eq!(e, DeviceError::NoAnswer { device: "/dev/test".into(), unit: 1 });
        assert!(e.to_string().contains("did not answer"), "{e}");
        assert_eq!(std::iter::from_fn(|| seen.try_recv().ok()).count(), ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exception_is_not_retried_and_garbage_is() {
        let (mut b, mut seen) = board(COILS, |req| Some(with_crc(&[1, req[1] | 0x80, 0x04])));
        let e = b.set(Output::Negative, true).await.unwrap_err();
        assert_eq!(e, DeviceError::Exception { function: 0x05, code: ExceptionCode::ServerDeviceFailure });
        assert_eq!(std::iter::from_fn(|| seen.try_recv().ok()).count(), 1);
        let (mut b, mut seen) = board(COILS, |_| Some(vec![0x55, 0xAA, 0x01]));
        assert!(matches!(b.set(Output::Negative, true).await, Err(DeviceError::BadReply(_))));
        assert_eq!(std::iter::from_fn(|| seen.try_recv().ok()).count(), ATTEMPTS as usize);
    }
}
