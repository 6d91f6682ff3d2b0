//! ISO-TP (ISO 15765-2): diagnostic messages longer than one CAN frame, segmented and reassembled without I/O.
//!
//! One [`IsoTp`] is one connection to one ECU: we send on `tx_id` and listen on `rx_id` (11- or 29-bit ids as
//! [`crate::can::Id`] has them, so an extended 0x7BB never matches a standard one). It reassembles into a fixed
//! buffer of `N` bytes, segments messages of up to [`TX_CAPACITY`] bytes, and keeps its timeouts as deadlines; the
//! caller passes `now` in and drains [`IsoTp::poll_transmit`] (the quinn-proto shape of every DBE driver).
//!
//! Frame layouts (the first byte's high nibble is the frame type, N_PCI):
//! - single frame `0L dd..` with L = 1..=7 data bytes; CAN FD's escaped form `00 LL dd..` with an 8-bit length.
//!   Both are parsed; DBE sends classic frames only, so it emits the 4-bit form.
//! - first frame `1L LL dd..`: a 12-bit total length (8..=4095) and 6 data bytes; the escaped form `10 00 LL LL
//!   LL LL dd..` carries a 32-bit length (for messages over 4095 bytes).
//! - consecutive frame `2S dd..`: S is a 4-bit sequence number, 1 after the first frame, wrapping 15 → 0. Every
//!   consecutive frame but the last fills the frame (as long as the first frame was); a shorter one is refused,
//!   since appending it would shift every later byte of the message.
//! - flow control `3F BS ST`: F is the flow status (0 continue, 1 wait, 2 overflow), BS the block size (consecutive
//!   frames before the next flow control, 0 = all), ST the separation time STmin (0x00-0x7F ms, 0xF1-0xF9
//!   100-900 µs, anything else reserved and read as 127 ms, the longest the standard defines).
//!
//! Timeouts, as ISO 15765-2 names them: N_Bs (a sender waiting for flow control) and N_Cr (a receiver waiting for
//! the next consecutive frame), both 1000 ms in the standard; N_WFTmax, how many flow-control WAIT frames a
//! sender accepts in a row before it gives up. N_As/N_Ar (a frame handed to the bus but never acknowledged) are
//! the CAN port's business: here a frame counts as sent when `poll_transmit` hands it out. STmin is kept in whole
//! milliseconds, the core's resolution: a 100-900 µs STmin waits 1 ms, which is never faster than asked.
//!
//! Sources: the Linux kernel's ISO-TP implementation (`net/can/isotp.c`, `include/uapi/linux/can/isotp.h` and
//! `Documentation/networking/iso15765-2.rst`: N_PCI values, the escaped single and first frames, the short
//! consecutive frame rule, the 0xCC default padding byte); the python-can-isotp documentation (the frame layouts,
//! `stmin`, `blocksize`, `wftmax`, `tx_padding`, `rx_flowcontrol_timeout` = N_Bs and
//! `rx_consecutive_frame_timeout` = N_Cr at 1000 ms); Zephyr's ISO-TP Kconfig (N_Bs and N_Cr "ISO 15765-2:
//! 1000ms", WFTmax); RIOT's `isotp_fc_options` (STmin ranges and reserved values). OVMS v3's poller
//! (`vehicle_poller.cpp`) and Battery-Emulator's LEAF driver show the same layouts on real vehicles.
//!
//! What happens on bad input (ISO 15765-2's rules where it has them): a wrong sequence number, a short
//! consecutive frame or an N_Cr timeout abandons the reception; a new single or first frame during a reception
//! abandons the old one and starts over; a consecutive frame with no reception in progress and a flow control
//! while nothing is being sent are ignored; a first frame longer than the buffer is answered with an overflow
//! flow control. Nothing panics, and every state returns to idle by itself within its timeout.

use crate::can::{CanFrame, Id, StandardId};
use crate::time::{Duration, Instant};

/// The most data bytes [`IsoTp::send`] segments (diagnostic requests are short: a UDS 0x22 for a dozen DIDs fits).
pub const TX_CAPACITY: usize = 64;

/// Data bytes of a classic CAN frame: what DBE sends in.
const CLASSIC: usize = 8;

/// The N_PCI frame types (high nibble of the first byte).
mod pci {
    pub const SINGLE: u8 = 0x0;
    pub const FIRST: u8 = 0x1;
    pub const CONSECUTIVE: u8 = 0x2;
    pub const FLOW_CONTROL: u8 = 0x3;
}

/// Flow status of a flow-control frame. Total: an undefined status is kept, not a parse failure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlowStatus {
    ContinueToSend,
    Wait,
    Overflow,
    Unknown(u8),
}

impl FlowStatus {
    pub fn from_nibble(n: u8) -> Self {
        match n & 0x0F {
            0 => FlowStatus::ContinueToSend,
            1 => FlowStatus::Wait,
            2 => FlowStatus::Overflow,
            n => FlowStatus::Unknown(n),
        }
    }

    pub fn nibble(self) -> u8 {
        match self {
            FlowStatus::ContinueToSend => 0,
            FlowStatus::Wait => 1,
            FlowStatus::Overflow => 2,
            FlowStatus::Unknown(n) => n & 0x0F,
        }
    }
}

/// STmin as it is on the wire (see the module doc for the ranges).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeparationTime(pub u8);

impl SeparationTime {
    pub const ZERO: SeparationTime = SeparationTime(0);

    /// Whole milliseconds, at most 127 (the wire's limit).
    pub const fn from_millis(ms: u8) -> Self {
        SeparationTime(if ms > 0x7F { 0x7F } else { ms })
    }

    /// The pause a sender keeps between consecutive frames, rounded up to whole milliseconds.
    pub fn as_duration(self) -> Duration {
        match self.0 {
            ms @ 0x00..=0x7F => Duration::from_millis(ms as u64),
            0xF1..=0xF9 => Duration::from_millis(1),
            _ => Duration::from_millis(0x7F),
        }
    }
}

/// One ISO-TP frame's meaning (the smoltcp `Repr`): parsed from and emitted into a CAN frame's data.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pci<'a> {
    Single { data: &'a [u8] },
    First { total: u32, data: &'a [u8] },
    Consecutive { seq: u8, data: &'a [u8] },
    FlowControl { status: FlowStatus, block_size: u8, st_min: SeparationTime },
}

/// Why a frame or a transfer failed. Small and specific, so a driver can say what went wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsoTpError {
    #[error("ISO-TP frame with no data")]
    Empty,
    #[error("reserved ISO-TP frame type {0:#x}")]
    Reserved(u8),
    #[error("ISO-TP frame length does not fit its type or announced length")]
    BadLength,
    #[error("consecutive frame {got} where {expected} was expected")]
    Sequence { expected: u8, got: u8 },
    #[error("message of {announced} bytes does not fit the {capacity}-byte buffer")]
    TooLong { announced: u32, capacity: usize },
    #[error("no consecutive frame within N_Cr")]
    ConsecutiveTimeout,
    #[error("no flow control within N_Bs")]
    FlowControlTimeout,
    #[error("more flow-control WAIT frames than N_WFTmax")]
    TooManyWaits,
    #[error("the receiver reported an overflow")]
    Overflow,
    #[error("flow control with undefined flow status {0}")]
    BadFlowStatus(u8),
    #[error("a message is already being sent")]
    Busy,
}

impl<'a> Pci<'a> {
    /// Parses a CAN frame's data (classic or FD). Checks only what the frame itself shows; whether it fits the
    /// transfer in progress is the connection's business.
    pub fn parse(frame: &'a [u8]) -> Result<Self, IsoTpError> {
        let (&b0, rest) = frame.split_first().ok_or(IsoTpError::Empty)?;
        let low = b0 & 0x0F;
        match b0 >> 4 {
            pci::SINGLE => {
                let (len, data) = if low != 0 {
                    (low as usize, rest)
                } else {
                    // CAN FD's escape: the length is in the next byte.
                    let (&len, data) = rest.split_first().ok_or(IsoTpError::BadLength)?;
                    (len as usize, data)
                };
                if len == 0 || len > data.len() {
                    return Err(IsoTpError::BadLength);
                }
                Ok(Pci::Single { data: &data[..len] })
            }
            pci::FIRST => {
                let &b1 = rest.first().ok_or(IsoTpError::BadLength)?;
                let short = (low as u32) << 8 | b1 as u32;
                if short != 0 {
                    return Ok(Pci::First { total: short, data: &rest[1..] });
                }
                // The escaped 32-bit length (messages over 4095 bytes).
                let len: [u8; 4] = rest.get(1..5).and_then(|s| s.try_into().ok()).ok_or(IsoTpError::BadLength)?;
                Ok(Pci::First { total: u32::from_be_bytes(len), data: &rest[5..] })
            }
            pci::CONSECUTIVE => Ok(Pci::Consecutive { seq: low, data: rest }),
            pci::FLOW_CONTROL => {
                let [bs, st, ..] = *rest else { return Err(IsoTpError::BadLength) };
                Ok(Pci::FlowControl {
                    status: FlowStatus::from_nibble(low),
                    block_size: bs,
                    st_min: SeparationTime(st),
                })
            }
            t => Err(IsoTpError::Reserved(t)),
        }
    }

    /// Writes the frame into `buf` and returns how many bytes it takes (before any padding). Single frames of up
    /// to 7 bytes and first frames of up to 4095 use the short forms, longer ones the escaped forms. Fails with
    /// [`IsoTpError::BadLength`] when the frame does not fit `buf` or a length does not fit its field.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, IsoTpError> {
        let mut put = |head: &[u8], data: &[u8]| {
            let n = head.len() + data.len();
            let out = buf.get_mut(..n).ok_or(IsoTpError::BadLength)?;
            out[..head.len()].copy_from_slice(head);
            out[head.len()..].copy_from_slice(data);
            Ok(n)
        };
        match *self {
            Pci::Single { data } => match data.len() {
                0 => Err(IsoTpError::BadLength),
                n @ 1..=7 => put(&[n as u8], data),
                n => put(&[0x00, u8::try_from(n).map_err(|_| IsoTpError::BadLength)?], data),
            },
            Pci::First { total, data } if (1..=0xFFF).contains(&total) => {
                put(&[pci::FIRST << 4 | (total >> 8) as u8, total as u8], data)
            }
            Pci::First { total, data } => {
                let l = total.to_be_bytes();
                put(&[pci::FIRST << 4, 0, l[0], l[1], l[2], l[3]], data)
            }
            Pci::Consecutive { seq, data } => put(&[pci::CONSECUTIVE << 4 | (seq & 0x0F)], data),
            Pci::FlowControl { status, block_size, st_min } => {
                put(&[pci::FLOW_CONTROL << 4 | status.nibble(), block_size, st_min.0], &[])
            }
        }
    }
}

/// What fills a frame after the ISO-TP data.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Frames are as long as their data (many ECUs drop frames shorter than 8 bytes).
    None,
    /// Frames are padded to 8 bytes with this value (ISO 15765-2 suggests 0xCC; many ECUs use 0x00 or 0xFF).
    Byte(u8),
}

/// One connection's settings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where we send (requests, our flow control).
    pub tx_id: Id,
    /// Where the ECU answers (responses, its flow control).
    pub rx_id: Id,
    /// Padding of the single, first and consecutive frames we send.
    pub padding: Padding,
    /// Padding of the flow-control frames we send (some ECUs' testers pad them differently).
    pub fc_padding: Padding,
    /// The block size we ask for when receiving (0 = the sender sends everything after one flow control).
    pub block_size: u8,
    /// The separation time we ask for when receiving.
    pub st_min: SeparationTime,
    /// N_Bs: how long we wait for the ECU's flow control when sending.
    pub fc_timeout: Duration,
    /// N_Cr: how long we wait for the ECU's next consecutive frame when receiving.
    pub cf_timeout: Duration,
    /// N_WFTmax: flow-control WAIT frames accepted in a row before the send is abandoned.
    pub max_waits: u8,
}

impl Config {
    /// A connection on standard ids with the standard's timeouts, 0xCC padding, block size 0 and STmin 0.
    pub const fn standard(tx_id: u16, rx_id: u16) -> Self {
        let (Some(tx), Some(rx)) = (StandardId::new(tx_id), StandardId::new(rx_id)) else {
            panic!("standard CAN id out of range");
        };
        Self::new(Id::Standard(tx), Id::Standard(rx))
    }

    pub const fn new(tx_id: Id, rx_id: Id) -> Self {
        Config {
            tx_id,
            rx_id,
            padding: Padding::Byte(0xCC),
            fc_padding: Padding::Byte(0xCC),
            block_size: 0,
            st_min: SeparationTime::ZERO,
            fc_timeout: Duration::from_millis(1000),
            cf_timeout: Duration::from_millis(1000),
            max_waits: 10,
        }
    }
}

/// What a received frame did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// Not on our receive id, or a frame ISO-TP ignores in the current state.
    Ignored,
    /// Taken: part of a message being received, or a flow control for the message being sent.
    Progress,
    /// A whole message, borrowed from the reassembly buffer (valid until the next frame is handled).
    Message(&'a [u8]),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum RxState {
    Idle,
    Receiving {
        total: usize,
        got: usize,
        next_seq: u8,
        /// The first frame's length: every consecutive frame but the last is this long.
        frame_len: usize,
        /// Consecutive frames left before we send the next flow control (0 with block size 0: no more).
        block_left: u8,
        deadline: Instant,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TxState {
    Idle,
    /// The single frame is waiting to go out.
    Single,
    /// The first frame is waiting to go out.
    First,
    /// Waiting for the ECU's flow control (N_Bs), with the WAIT frames seen since the last one.
    AwaitFlowControl {
        deadline: Instant,
        waits: u8,
    },
    /// Sending consecutive frames; `block_left` 0 means no limit.
    Consecutive {
        next_at: Instant,
        block_left: u8,
        unlimited: bool,
        st_min: Duration,
    },
}

/// One ISO-TP connection with an `N`-byte reassembly buffer.
#[derive(Clone, Debug)]
pub struct IsoTp<const N: usize> {
    config: Config,
    rx: RxState,
    rx_buf: [u8; N],
    /// Length of the last complete message in `rx_buf`, until the next reception starts.
    rx_done: Option<usize>,
    /// A flow control to send (ours, as a receiver).
    fc_out: Option<FlowStatus>,
    tx: TxState,
    tx_buf: [u8; TX_CAPACITY],
    tx_len: usize,
    tx_sent: usize,
    tx_seq: u8,
}

impl<const N: usize> IsoTp<N> {
    pub fn new(config: Config) -> Self {
        IsoTp {
            config,
            rx: RxState::Idle,
            rx_buf: [0; N],
            rx_done: None,
            fc_out: None,
            tx: TxState::Idle,
            tx_buf: [0; TX_CAPACITY],
            tx_len: 0,
            tx_sent: 0,
            tx_seq: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Drops whatever is being sent or received (another tester took over, or the caller gave up).
    pub fn reset(&mut self) {
        self.rx = RxState::Idle;
        self.rx_done = None;
        self.fc_out = None;
        self.tx = TxState::Idle;
    }

    pub fn is_idle(&self) -> bool {
        self.rx == RxState::Idle && self.tx == TxState::Idle && self.fc_out.is_none()
    }

    /// A message is being received (a first frame came, the last consecutive frame not yet).
    pub fn is_receiving(&self) -> bool {
        self.rx != RxState::Idle
    }

    /// A message is being sent (not all of its frames have been handed out yet).
    pub fn is_sending(&self) -> bool {
        self.tx != TxState::Idle
    }

    /// The last complete message, until the next single or first frame arrives.
    pub fn message(&self) -> Option<&[u8]> {
        self.rx_done.map(|n| &self.rx_buf[..n])
    }

    /// Starts sending `payload`; its frames come out of [`IsoTp::poll_transmit`].
    pub fn send(&mut self, payload: &[u8]) -> Result<(), IsoTpError> {
        if self.tx != TxState::Idle {
            return Err(IsoTpError::Busy);
        }
        if payload.is_empty() {
            return Err(IsoTpError::BadLength);
        }
        if payload.len() > TX_CAPACITY {
            return Err(IsoTpError::TooLong { announced: payload.len() as u32, capacity: TX_CAPACITY });
        }
        self.tx_buf[..payload.len()].copy_from_slice(payload);
        self.tx_len = payload.len();
        self.tx_sent = 0;
        self.tx_seq = 1;
        self.tx = if payload.len() < CLASSIC { TxState::Single } else { TxState::First };
        Ok(())
    }

    /// Takes one received frame. Frames on other ids, remote frames and frames ISO-TP ignores in the current state
    /// are `Ok(Ignored)`; a frame that breaks the transfer in progress abandons it and is an error.
    pub fn handle_frame(&mut self, now: Instant, frame: &CanFrame) -> Result<Received<'_>, IsoTpError> {
        if frame.id() != self.config.rx_id || frame.is_remote() {
            return Ok(Received::Ignored);
        }
        let data = frame.data();
        // A frame that does not parse changes nothing (ISO 15765-2 ignores unknown and malformed N_PDUs); only
        // consecutive frames carry a reception on, and they always parse.
        match Pci::parse(data)? {
            Pci::Single { data: d } => {
                self.rx = RxState::Idle;
                if d.len() > N {
                    self.rx_done = None;
                    return Err(IsoTpError::TooLong { announced: d.len() as u32, capacity: N });
                }
                self.rx_buf[..d.len()].copy_from_slice(d);
                self.rx_done = Some(d.len());
                Ok(Received::Message(&self.rx_buf[..d.len()]))
            }
            Pci::First { total, data: d } => {
                self.rx = RxState::Idle;
                self.rx_done = None;
                // The first frame fills its frame, which is at least a classic one, and announces more than a
                // single frame of that size could carry.
                let min_total = if data.len() <= CLASSIC { CLASSIC } else { data.len() - 1 };
                if data.len() < CLASSIC || (total as usize) < min_total || d.len() >= total as usize {
                    return Err(IsoTpError::BadLength);
                }
                if total as usize > N {
                    self.fc_out = Some(FlowStatus::Overflow);
                    return Err(IsoTpError::TooLong { announced: total, capacity: N });
                }
                self.rx_buf[..d.len()].copy_from_slice(d);
                self.rx = RxState::Receiving {
                    total: total as usize,
                    got: d.len(),
                    next_seq: 1,
                    frame_len: data.len(),
                    block_left: self.config.block_size,
                    deadline: now + self.config.cf_timeout,
                };
                self.fc_out = Some(FlowStatus::ContinueToSend);
                Ok(Received::Progress)
            }
            Pci::Consecutive { seq, data: d } => {
                let RxState::Receiving { total, got, next_seq, frame_len, block_left, .. } = self.rx else {
                    return Ok(Received::Ignored);
                };
                let left = total - got;
                // Longer than the first frame, or short before the end: the bytes would land in the wrong place.
                if data.len() > frame_len || (d.len() < left && data.len() < frame_len) {
                    self.rx = RxState::Idle;
                    return Err(IsoTpError::BadLength);
                }
                if seq != next_seq {
                    self.rx = RxState::Idle;
                    return Err(IsoTpError::Sequence { expected: next_seq, got: seq });
                }
                let n = d.len().min(left);
                self.rx_buf[got..got + n].copy_from_slice(&d[..n]);
                let got = got + n;
                if got >= total {
                    self.rx = RxState::Idle;
                    self.rx_done = Some(total);
                    return Ok(Received::Message(&self.rx_buf[..total]));
                }
                let mut block_left = block_left;
                if self.config.block_size != 0 {
                    block_left -= 1;
                    if block_left == 0 {
                        self.fc_out = Some(FlowStatus::ContinueToSend);
                        block_left = self.config.block_size;
                    }
                }
                self.rx = RxState::Receiving {
                    total,
                    got,
                    next_seq: (next_seq + 1) & 0x0F,
                    frame_len,
                    block_left,
                    deadline: now + self.config.cf_timeout,
                };
                Ok(Received::Progress)
            }
            Pci::FlowControl { status, block_size, st_min } => {
                let TxState::AwaitFlowControl { waits, .. } = self.tx else {
                    return Ok(Received::Ignored);
                };
                match status {
                    FlowStatus::ContinueToSend => {
                        self.tx = TxState::Consecutive {
                            next_at: now,
                            block_left: block_size,
                            unlimited: block_size == 0,
                            st_min: st_min.as_duration(),
                        };
                    }
                    FlowStatus::Wait if waits < self.config.max_waits => {
                        self.tx =
                            TxState::AwaitFlowControl { deadline: now + self.config.fc_timeout, waits: waits + 1 };
                    }
                    FlowStatus::Wait => {
                        self.tx = TxState::Idle;
                        return Err(IsoTpError::TooManyWaits);
                    }
                    FlowStatus::Overflow => {
                        self.tx = TxState::Idle;
                        return Err(IsoTpError::Overflow);
                    }
                    FlowStatus::Unknown(n) => {
                        self.tx = TxState::Idle;
                        return Err(IsoTpError::BadFlowStatus(n));
                    }
                }
                Ok(Received::Progress)
            }
        }
    }

    /// Abandons a transfer whose deadline has passed. When both directions time out at once, the reception's
    /// error is the one reported (both are abandoned). Extra calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<IsoTpError> {
        let mut err = None;
        if let TxState::AwaitFlowControl { deadline, .. } = self.tx {
            if now >= deadline {
                self.tx = TxState::Idle;
                err = Some(IsoTpError::FlowControlTimeout);
            }
        }
        if let RxState::Receiving { deadline, .. } = self.rx {
            if now >= deadline {
                self.rx = RxState::Idle;
                err = Some(IsoTpError::ConsecutiveTimeout);
            }
        }
        err
    }

    fn frame(&self, id: Id, pci: Pci<'_>, padding: Padding) -> CanFrame {
        let mut buf = [0u8; CLASSIC];
        // Every frame built here fits a classic frame by construction (at most 7 data bytes after the N_PCI).
        let n = pci.emit(&mut buf).unwrap_or(CLASSIC);
        let len = match padding {
            Padding::None => n,
            Padding::Byte(b) => {
                buf[n..].fill(b);
                CLASSIC
            }
        };
        CanFrame::new(id, &buf[..len]).expect("at most 8 bytes")
    }

    /// The next frame to send at `now`: our flow control first, then the message being sent, paced by the
    /// ECU's block size and STmin.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        if let Some(status) = self.fc_out.take() {
            let c = &self.config;
            let fc = Pci::FlowControl { status, block_size: c.block_size, st_min: c.st_min };
            return Some(self.frame(c.tx_id, fc, c.fc_padding));
        }
        let (id, pad) = (self.config.tx_id, self.config.padding);
        match self.tx {
            TxState::Idle | TxState::AwaitFlowControl { .. } => None,
            TxState::Single => {
                self.tx = TxState::Idle;
                Some(self.frame(id, Pci::Single { data: &self.tx_buf[..self.tx_len] }, pad))
            }
            TxState::First => {
                let n = CLASSIC - 2;
                let f = self.frame(id, Pci::First { total: self.tx_len as u32, data: &self.tx_buf[..n] }, pad);
                self.tx_sent = n;
                self.tx = TxState::AwaitFlowControl { deadline: now + self.config.fc_timeout, waits: 0 };
                Some(f)
            }
            TxState::Consecutive { next_at, block_left, unlimited, st_min } => {
                if now < next_at {
                    return None;
                }
                let n = (self.tx_len - self.tx_sent).min(CLASSIC - 1);
                let data = &self.tx_buf[self.tx_sent..self.tx_sent + n];
                let f = self.frame(id, Pci::Consecutive { seq: self.tx_seq, data }, pad);
                self.tx_sent += n;
                self.tx_seq = (self.tx_seq + 1) & 0x0F;
                let block_left = block_left.saturating_sub(1);
                self.tx = if self.tx_sent >= self.tx_len {
                    TxState::Idle
                } else if !unlimited && block_left == 0 {
                    TxState::AwaitFlowControl { deadline: now + self.config.fc_timeout, waits: 0 }
                } else {
                    TxState::Consecutive { next_at: now + st_min, block_left, unlimited, st_min }
                };
                Some(f)
            }
        }
    }

    /// When this connection next needs `poll_transmit` or `handle_timeout`: at once when a frame is ready.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.fc_out.is_some() {
            return Some(Instant::ZERO);
        }
        let tx = match self.tx {
            TxState::Idle => None,
            TxState::Single | TxState::First => Some(Instant::ZERO),
            TxState::AwaitFlowControl { deadline, .. } => Some(deadline),
            TxState::Consecutive { next_at, .. } => Some(next_at),
        };
        let rx = match self.rx {
            RxState::Idle => None,
            RxState::Receiving { deadline, .. } => Some(deadline),
        };
        crate::time::earliest(tx, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A connection like the LEAF's LBC: 0x79B out, 0x7BB in.
    fn leaf_like() -> IsoTp<64> {
        let mut c = Config::standard(0x79B, 0x7BB);
        c.padding = Padding::Byte(0x00);
        c.fc_padding = Padding::Byte(0xFF);
        c.block_size = 1;
        IsoTp::new(c)
    }

    fn rx(data: &[u8]) -> CanFrame {
        CanFrame::standard(0x7BB, data).unwrap()
    }

    fn drain(tp: &mut IsoTp<64>, now: Instant) -> Vec<Vec<u8>> {
        core::iter::from_fn(|| tp.poll_transmit(now)).map(|f| f.data().to_vec()).collect()
    }

    #[test]
    fn parses_and_emits_every_frame_type() {
        // (bytes, meaning): short and escaped single frames, 12-bit and 32-bit first frames, CF, FC.
        let cases: [(&[u8], Pci<'_>); 6] = [
            (&[0x03, 0x22, 0xF1, 0x90], Pci::Single { data: &[0x22, 0xF1, 0x90] }),
            (&[0x00, 0x03, 0x62, 0x01, 0x02], Pci::Single { data: &[0x62, 0x01, 0x02] }),
            (&[0x10, 0x0A, 1, 2, 3, 4, 5, 6], Pci::First { total: 10, data: &[1, 2, 3, 4, 5, 6] }),
            (&[0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0xAA, 0xBB], Pci::First { total: 4096, data: &[0xAA, 0xBB] }),
            (&[0x2F, 9, 8], Pci::Consecutive { seq: 15, data: &[9, 8] }),
            (
                &[0x31, 0x08, 0xF3],
                Pci::FlowControl { status: FlowStatus::Wait, block_size: 8, st_min: SeparationTime(0xF3) },
            ),
        ];
        for (bytes, pci) in cases {
            assert_eq!(Pci::parse(bytes), Ok(pci), "{bytes:02x?}");
            let mut buf = [0u8; 8];
            let n = pci.emit(&mut buf).unwrap();
            // The escaped single frame is CAN FD's form: DBE emits the 4-bit one for 3 bytes.
            if bytes[0] != 0x00 {
                assert_eq!(&buf[..n], bytes);
            } else {
                assert_eq!(&buf[..n], &[0x03, 0x62, 0x01, 0x02]);
            }
        }
    }

    #[test]
    fn refuses_frames_that_do_not_add_up() {
        assert_eq!(Pci::parse(&[]), Err(IsoTpError::Empty));
        assert_eq!(Pci::parse(&[0x05, 1, 2]), Err(IsoTpError::BadLength), "SF_DL past the frame");
        assert_eq!(Pci::parse(&[0x00]), Err(IsoTpError::BadLength), "escape without its length");
        assert_eq!(Pci::parse(&[0x00, 0x00, 1]), Err(IsoTpError::BadLength), "SF_DL 0");
        assert_eq!(Pci::parse(&[0x10]), Err(IsoTpError::BadLength));
        assert_eq!(Pci::parse(&[0x10, 0x00, 0, 0]), Err(IsoTpError::BadLength), "escape without 32 bits");
        assert_eq!(Pci::parse(&[0x30, 0x00]), Err(IsoTpError::BadLength));
        assert_eq!(Pci::parse(&[0x45, 0, 0]), Err(IsoTpError::Reserved(4)));
        assert_eq!(
            Pci::parse(&[0x37, 0, 0]).unwrap(),
            Pci::FlowControl { status: FlowStatus::Unknown(7), block_size: 0, st_min: SeparationTime(0) }
        );
        // A first frame that a single frame could have carried, and one shorter than a classic frame.
        let mut tp = leaf_like();
        assert_eq!(tp.handle_frame(t(0), &rx(&[0x10, 0x07, 1, 2, 3, 4, 5, 6])), Err(IsoTpError::BadLength));
        assert_eq!(tp.handle_frame(t(0), &rx(&[0x10, 0x0A, 1, 2, 3])), Err(IsoTpError::BadLength));
        assert!(tp.is_idle());
    }

    #[test]
    fn separation_times_round_up_and_reserved_values_are_the_longest() {
        assert_eq!(SeparationTime(0x00).as_duration(), Duration::ZERO);
        assert_eq!(SeparationTime(0x7F).as_duration(), Duration::from_millis(127));
        assert_eq!(SeparationTime(0xF1).as_duration(), Duration::from_millis(1));
        assert_eq!(SeparationTime(0xF9).as_duration(), Duration::from_millis(1));
        for reserved in [0x80, 0xF0, 0xFA, 0xFF] {
            assert_eq!(SeparationTime(reserved).as_duration(), Duration::from_millis(127));
        }
        assert_eq!(SeparationTime::from_millis(200), SeparationTime(0x7F));
    }

    #[test]
    fn reassembles_a_multi_frame_reply_with_block_size_one() {
        let mut tp = leaf_like();
        assert_eq!(tp.handle_frame(t(0), &rx(&[0x10, 0x10, 0x61, 0x01, 1, 2, 3, 4])), Ok(Received::Progress));
        // Our flow control: continue, block size 1, STmin 0, padded with 0xFF.
        assert_eq!(drain(&mut tp, t(0)), vec![vec![0x30, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]]);
        assert_eq!(tp.handle_frame(t(5), &rx(&[0x21, 5, 6, 7, 8, 9, 10, 11])), Ok(Received::Progress));
        assert_eq!(drain(&mut tp, t(5)).len(), 1, "block size 1: a flow control after every consecutive frame");
        let last = tp.handle_frame(t(9), &rx(&[0x22, 12, 13, 14, 0xFF, 0xFF, 0xFF, 0xFF]));
        assert_eq!(last, Ok(Received::Message(&[0x61, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])));
        assert!(drain(&mut tp, t(9)).is_empty(), "no flow control after the last frame");
        assert_eq!(tp.message().map(<[u8]>::len), Some(16));
        assert!(tp.is_idle());
    }

    #[test]
    fn sequence_numbers_wrap_and_block_size_zero_asks_once() {
        let mut c = Config::standard(0x7E0, 0x7E8);
        c.padding = Padding::None;
        c.fc_padding = Padding::None;
        let mut tp = IsoTp::<256>::new(c);
        let payload: Vec<u8> = (0..=255u8).take(6 + 7 * 17).collect();
        let f = |d: &[u8]| CanFrame::standard(0x7E8, d).unwrap();
        let mut first = vec![0x10, payload.len() as u8];
        first.extend(&payload[..6]);
        tp.handle_frame(t(0), &f(&first)).unwrap();
        let fcs: Vec<_> = core::iter::from_fn(|| tp.poll_transmit(t(0))).collect();
        assert_eq!(fcs.len(), 1);
        assert_eq!(fcs[0].data(), &[0x30, 0x00, 0x00], "unpadded, as long as its data");
        let mut got = None;
        for (i, chunk) in payload[6..].chunks(7).enumerate() {
            let mut cf = vec![0x20 | ((i + 1) & 0x0F) as u8];
            cf.extend(chunk);
            if let Received::Message(m) = tp.handle_frame(t(1), &f(&cf)).unwrap() {
                got = Some(m.to_vec());
            }
            assert!(tp.poll_transmit(t(1)).is_none(), "block size 0: no more flow control");
        }
        assert_eq!(got.as_deref(), Some(&payload[..]));
    }

    #[test]
    fn a_wrong_sequence_number_abandons_the_message() {
        let mut tp = leaf_like();
        tp.handle_frame(t(0), &rx(&[0x10, 0x14, 1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(
            tp.handle_frame(t(1), &rx(&[0x22, 7, 8, 9, 10, 11, 12, 13])),
            Err(IsoTpError::Sequence { expected: 1, got: 2 })
        );
        assert!(!tp.is_receiving());
        // The rest of the old message is ignored, not appended to anything.
        assert_eq!(tp.handle_frame(t(2), &rx(&[0x23, 0, 0, 0, 0, 0, 0, 0])), Ok(Received::Ignored));
        assert_eq!(tp.message(), None);
    }

    #[test]
    fn a_lost_consecutive_frame_times_out_after_n_cr() {
        let mut tp = leaf_like();
        tp.handle_frame(t(100), &rx(&[0x10, 0x14, 1, 2, 3, 4, 5, 6])).unwrap();
        let _ = drain(&mut tp, t(100));
        assert_eq!(tp.poll_timeout(), Some(t(1100)));
        assert_eq!(tp.handle_timeout(t(1099)), None);
        assert!(tp.is_receiving());
        assert_eq!(tp.handle_timeout(t(1100)), Some(IsoTpError::ConsecutiveTimeout));
        assert!(tp.is_idle());
        assert_eq!(tp.poll_timeout(), None);
        assert_eq!(tp.handle_timeout(t(5000)), None, "a second call does nothing");
    }

    #[test]
    fn a_short_consecutive_frame_before_the_end_is_refused() {
        let mut tp = leaf_like();
        tp.handle_frame(t(0), &rx(&[0x10, 0x14, 1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(tp.handle_frame(t(1), &rx(&[0x21, 7, 8, 9])), Err(IsoTpError::BadLength));
        assert!(!tp.is_receiving());
        // The last frame may be short (unpadded).
        tp.handle_frame(t(2), &rx(&[0x10, 0x08, 1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(tp.handle_frame(t(3), &rx(&[0x21, 7, 8])), Ok(Received::Message(&[1, 2, 3, 4, 5, 6, 7, 8])));
    }

    #[test]
    fn a_message_longer_than_the_buffer_gets_an_overflow_flow_control() {
        let mut tp = leaf_like();
        assert_eq!(
            tp.handle_frame(t(0), &rx(&[0x10, 0x41, 1, 2, 3, 4, 5, 6])),
            Err(IsoTpError::TooLong { announced: 65, capacity: 64 })
        );
        assert_eq!(drain(&mut tp, t(0)), vec![vec![0x32, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]]);
        assert!(tp.is_idle());
        // An escaped first frame announcing 4 GB is refused the same way.
        assert!(matches!(
            tp.handle_frame(t(0), &rx(&[0x10, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2])),
            Err(IsoTpError::TooLong { .. })
        ));
    }

    #[test]
    fn a_new_first_frame_replaces_the_reception_in_progress() {
        let mut tp = leaf_like();
        tp.handle_frame(t(0), &rx(&[0x10, 0x14, 1, 2, 3, 4, 5, 6])).unwrap();
        tp.handle_frame(t(1), &rx(&[0x10, 0x08, 9, 9, 9, 9, 9, 9])).unwrap();
        let m = tp.handle_frame(t(2), &rx(&[0x21, 8, 7, 0, 0, 0, 0, 0]));
        assert_eq!(m, Ok(Received::Message(&[9, 9, 9, 9, 9, 9, 8, 7])));
        // A single frame does the same, and a malformed frame changes nothing.
        tp.handle_frame(t(3), &rx(&[0x10, 0x08, 1, 1, 1, 1, 1, 1])).unwrap();
        assert_eq!(tp.handle_frame(t(4), &rx(&[0x05, 1])), Err(IsoTpError::BadLength));
        assert!(tp.is_receiving());
        assert_eq!(tp.handle_frame(t(5), &rx(&[0x01, 0x42])), Ok(Received::Message(&[0x42])));
        assert!(!tp.is_receiving());
    }

    #[test]
    fn other_ids_extended_ids_and_remote_frames_are_not_ours() {
        let mut tp = leaf_like();
        let ext = CanFrame::extended(0x7BB, &[0x02, 0x61, 0x01]).unwrap();
        assert_eq!(tp.handle_frame(t(0), &ext), Ok(Received::Ignored), "extended 0x7BB is another id");
        let other = CanFrame::standard(0x7BC, &[0x02, 0x61, 0x01]).unwrap();
        assert_eq!(tp.handle_frame(t(0), &other), Ok(Received::Ignored));
        let remote = CanFrame::remote(StandardId::new(0x7BB).unwrap(), 8).unwrap();
        assert_eq!(tp.handle_frame(t(0), &remote), Ok(Received::Ignored));
        // A 29-bit connection (the "normal fixed" addressing of ISO 15765-4, 0x18DA F1 xx).
        let ext_id = |raw| Id::Extended(crate::can::ExtendedId::new(raw).unwrap());
        let mut ext_tp = IsoTp::<16>::new(Config::new(ext_id(0x18DA_10F1), ext_id(0x18DA_F110)));
        let answer = CanFrame::extended(0x18DA_F110, &[0x03, 0x62, 0xF1, 0x90]).unwrap();
        assert_eq!(ext_tp.handle_frame(t(0), &answer), Ok(Received::Message(&[0x62, 0xF1, 0x90])));
        ext_tp.send(&[0x22, 0xF1, 0x90]).unwrap();
        let req = ext_tp.poll_transmit(t(0)).unwrap();
        assert_eq!(req.extended_id(), Some(0x18DA_10F1));
        assert_eq!(req.data(), &[0x03, 0x22, 0xF1, 0x90, 0xCC, 0xCC, 0xCC, 0xCC], "0xCC padding by default");
    }

    #[test]
    fn sends_a_single_frame_padded_or_not() {
        let mut tp = leaf_like();
        tp.send(&[0x21, 0x02]).unwrap();
        assert_eq!(tp.send(&[0x21, 0x02]), Err(IsoTpError::Busy));
        assert_eq!(tp.poll_timeout(), Some(Instant::ZERO));
        assert_eq!(drain(&mut tp, t(0)), vec![vec![0x02, 0x21, 0x02, 0, 0, 0, 0, 0]]);
        assert!(!tp.is_sending());
        let mut c = *tp.config();
        c.padding = Padding::None;
        let mut bare = IsoTp::<64>::new(c);
        bare.send(&[0x22, 0xF1, 0x90]).unwrap();
        assert_eq!(drain(&mut bare, t(0)), vec![vec![0x03, 0x22, 0xF1, 0x90]]);
        assert_eq!(bare.send(&[]), Err(IsoTpError::BadLength));
        assert!(matches!(bare.send(&[0; TX_CAPACITY + 1]), Err(IsoTpError::TooLong { .. })));
    }

    /// A 20-byte request: the first frame, then consecutive frames as the ECU's flow control allows.
    fn start_long_send(tp: &mut IsoTp<64>) -> Vec<u8> {
        let payload: Vec<u8> = (1..=20).collect();
        tp.send(&payload).unwrap();
        assert_eq!(drain(tp, t(0)), vec![vec![0x10, 20, 1, 2, 3, 4, 5, 6]]);
        assert!(tp.is_sending());
        payload
    }

    #[test]
    fn sending_honours_block_size_and_st_min() {
        let mut tp = leaf_like();
        start_long_send(&mut tp);
        assert_eq!(tp.poll_timeout(), Some(t(1000)), "N_Bs");
        // Continue, block size 1, STmin 10 ms.
        assert_eq!(tp.handle_frame(t(3), &rx(&[0x30, 0x01, 0x0A])), Ok(Received::Progress));
        assert_eq!(drain(&mut tp, t(3)), vec![vec![0x21, 7, 8, 9, 10, 11, 12, 13]]);
        assert!(drain(&mut tp, t(50)).is_empty(), "block of 1 done: wait for the next flow control");
        // Continue, block size 0 (everything), STmin 10 ms: one frame now, the next 10 ms later, not before.
        tp.handle_frame(t(60), &rx(&[0x30, 0x00, 0x0A])).unwrap();
        assert_eq!(drain(&mut tp, t(60)), vec![vec![0x22, 14, 15, 16, 17, 18, 19, 20]]);
        assert!(!tp.is_sending(), "20 bytes: 6 + 7 + 7");
    }

    #[test]
    fn st_min_spaces_the_consecutive_frames() {
        let mut tp = leaf_like();
        let payload: Vec<u8> = (1..=30).collect();
        tp.send(&payload).unwrap();
        let _ = drain(&mut tp, t(0));
        tp.handle_frame(t(0), &rx(&[0x30, 0x00, 0x14])).unwrap();
        // A simulated-time loop: jump to each deadline and send what is due; 1 ms before it, nothing is.
        let mut sent_at = vec![];
        while let Some(at) = tp.poll_timeout() {
            assert!(at.as_millis() == 0 || tp.poll_transmit(Instant::from_millis(at.as_millis() - 1)).is_none());
            let f = tp.poll_transmit(at).expect("due at its deadline");
            sent_at.push((at.as_millis(), f.data()[0]));
        }
        assert_eq!(sent_at, vec![(0, 0x21), (20, 0x22), (40, 0x23), (60, 0x24)]);
    }

    #[test]
    fn flow_control_wait_frames_are_counted_against_n_wftmax() {
        let mut tp = leaf_like();
        tp.config.max_waits = 2;
        start_long_send(&mut tp);
        tp.handle_frame(t(500), &rx(&[0x31, 0, 0])).unwrap();
        assert_eq!(tp.poll_timeout(), Some(t(1500)), "a WAIT restarts N_Bs");
        tp.handle_frame(t(900), &rx(&[0x31, 0, 0])).unwrap();
        assert_eq!(tp.handle_frame(t(1000), &rx(&[0x31, 0, 0])), Err(IsoTpError::TooManyWaits));
        assert!(tp.is_idle());
        // Two waits, then continue: the send goes on.
        start_long_send(&mut tp);
        tp.handle_frame(t(1), &rx(&[0x31, 0, 0])).unwrap();
        tp.handle_frame(t(2), &rx(&[0x31, 0, 0])).unwrap();
        tp.handle_frame(t(3), &rx(&[0x30, 0, 0])).unwrap();
        assert_eq!(drain(&mut tp, t(3)).len(), 2);
        assert!(!tp.is_sending());
    }

    #[test]
    fn a_flow_control_that_never_comes_times_out_after_n_bs() {
        let mut tp = leaf_like();
        start_long_send(&mut tp);
        assert_eq!(tp.handle_timeout(t(999)), None);
        assert_eq!(tp.handle_timeout(t(1000)), Some(IsoTpError::FlowControlTimeout));
        assert!(tp.is_idle());
        // Overflow and undefined statuses end the send at once.
        start_long_send(&mut tp);
        assert_eq!(tp.handle_frame(t(1), &rx(&[0x32, 0, 0])), Err(IsoTpError::Overflow));
        start_long_send(&mut tp);
        assert_eq!(tp.handle_frame(t(1), &rx(&[0x35, 0, 0])), Err(IsoTpError::BadFlowStatus(5)));
        assert!(tp.is_idle());
        // A flow control while nothing is sent is ignored.
        assert_eq!(tp.handle_frame(t(2), &rx(&[0x30, 0, 0])), Ok(Received::Ignored));
    }

    proptest! {
        /// Whatever arrives, nothing panics, and once the frames stop the connection is idle within its longest
        /// timeout (it never stays stuck waiting).
        #[test]
        fn no_frame_sequence_panics_or_leaves_it_stuck(
            frames in proptest::collection::vec(
                (0u64..1500, 0usize..=8, proptest::array::uniform8(any::<u8>()), any::<bool>(), any::<bool>()),
                0..40,
            ),
        ) {
            let mut tp = leaf_like();
            let mut now = t(0);
            for (dt, len, mut data, ours, send) in frames {
                now += Duration::from_millis(dt);
                if send {
                    let _ = tp.send(&data[..len.max(1)]);
                }
                if ours && len > 0 {
                    // Bias towards valid N_PCI types.
                    data[0] &= 0x3F;
                }
                let id = if ours { 0x7BB } else { 0x79B };
                let _ = tp.handle_frame(now, &CanFrame::standard(id, &data[..len]).unwrap());
                let _ = tp.handle_timeout(now);
                while tp.poll_transmit(now).is_some() {}
                if let Some(at) = tp.poll_timeout() {
                    prop_assert!(at <= now + Duration::from_millis(1000), "a deadline past the longest timeout");
                }
            }
            // Silence from here: each next deadline is in the future (nothing spins) and within the longest
            // timeout, and once they have passed everything is idle.
            while let Some(at) = tp.poll_timeout() {
                prop_assert!(at <= now + Duration::from_millis(1000), "a deadline past the longest timeout");
                now = now.max(at);
                let _ = tp.handle_timeout(now);
                while tp.poll_transmit(now).is_some() {}
                prop_assert!(tp.poll_timeout().is_none_or(|next| next > now), "spins at {now:?}");
            }
            prop_assert!(tp.is_idle(), "stuck: {:?} / {:?}", tp.rx, tp.tx);
        }
    }
}
