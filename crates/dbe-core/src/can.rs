//! The CAN frame every port, driver and simulator exchanges.
//!
//! Identifiers come from `embedded-can` so an invalid one cannot be built, and the frame implements
//! `embedded_can::Frame` so a microcontroller's CAN peripheral driver can feed the core directly. Classic CAN
//! carries at most 8 data bytes; CAN FD would add a separate frame type with a 64-byte buffer rather than make
//! every classic frame eight times larger.

use core::fmt;
pub use embedded_can::{ExtendedId, Id, StandardId};

/// The most data bytes a classic CAN frame carries.
pub const MAX_DLC: usize = 8;

/// A classic CAN 2.0 frame: standard or extended identifier, data or remote, 0 to 8 data bytes.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct CanFrame {
    id: Id,
    len: u8,
    remote: bool,
    data: [u8; MAX_DLC],
}

/// Why a frame could not be built.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("CAN identifier {0:#x} is out of range (standard ids are 11 bits, extended 29)")]
    BadId(u32),
    #[error("CAN data is {0} bytes long; a classic frame holds at most 8")]
    TooLong(usize),
}

impl CanFrame {
    /// A data frame; fails on more than 8 bytes.
    pub fn new(id: impl Into<Id>, data: &[u8]) -> Result<Self, FrameError> {
        if data.len() > MAX_DLC {
            return Err(FrameError::TooLong(data.len()));
        }
        let mut buf = [0u8; MAX_DLC];
        buf[..data.len()].copy_from_slice(data);
        Ok(CanFrame { id: id.into(), len: data.len() as u8, remote: false, data: buf })
    }

    /// A remote (RTR) frame asking for `len` bytes.
    pub fn remote(id: impl Into<Id>, len: usize) -> Result<Self, FrameError> {
        if len > MAX_DLC {
            return Err(FrameError::TooLong(len));
        }
        Ok(CanFrame { id: id.into(), len: len as u8, remote: true, data: [0; MAX_DLC] })
    }

    /// A data frame with a standard 11-bit id. For ids written as constants in drivers.
    pub fn standard(id: u16, data: &[u8]) -> Result<Self, FrameError> {
        let sid = StandardId::new(id).ok_or(FrameError::BadId(id as u32))?;
        Self::new(sid, data)
    }

    /// A data frame with an extended 29-bit id.
    pub fn extended(id: u32, data: &[u8]) -> Result<Self, FrameError> {
        let eid = ExtendedId::new(id).ok_or(FrameError::BadId(id))?;
        Self::new(eid, data)
    }

    /// A full 8-byte standard frame from a constant id; the id is checked at compile time when `ID` is a const.
    pub const fn std8(id: u16, data: [u8; 8]) -> Self {
        let sid = match StandardId::new(id) {
            Some(s) => s,
            None => panic!("standard CAN id out of range"),
        };
        CanFrame { id: Id::Standard(sid), len: 8, remote: false, data }
    }

    /// A full 8-byte extended frame from a constant id.
    pub const fn ext8(id: u32, data: [u8; 8]) -> Self {
        let eid = match ExtendedId::new(id) {
            Some(e) => e,
            None => panic!("extended CAN id out of range"),
        };
        CanFrame { id: Id::Extended(eid), len: 8, remote: false, data }
    }

    pub fn id(&self) -> Id {
        self.id
    }

    /// The identifier as a raw number (11 or 29 bits); check [`CanFrame::is_extended`] to tell them apart.
    pub fn raw_id(&self) -> u32 {
        match self.id {
            Id::Standard(s) => s.as_raw() as u32,
            Id::Extended(e) => e.as_raw(),
        }
    }

    /// The standard id, or `None` for extended frames (so a driver matching on 11-bit ids never confuses an
    /// extended 0x1DB with the standard one).
    pub fn standard_id(&self) -> Option<u16> {
        match self.id {
            Id::Standard(s) => Some(s.as_raw()),
            Id::Extended(_) => None,
        }
    }

    /// The extended id, or `None` for standard frames.
    pub fn extended_id(&self) -> Option<u32> {
        match self.id {
            Id::Standard(_) => None,
            Id::Extended(e) => Some(e.as_raw()),
        }
    }

    pub fn is_extended(&self) -> bool {
        matches!(self.id, Id::Extended(_))
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }

    pub fn data(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    /// The data padded to 8 bytes with zeros; only meaningful after a length check.
    pub fn data8(&self) -> &[u8; 8] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl embedded_can::Frame for CanFrame {
    fn new(id: impl Into<Id>, data: &[u8]) -> Option<Self> {
        CanFrame::new(id, data).ok()
    }

    fn new_remote(id: impl Into<Id>, dlc: usize) -> Option<Self> {
        CanFrame::remote(id, dlc).ok()
    }

    fn is_extended(&self) -> bool {
        CanFrame::is_extended(self)
    }

    fn is_remote_frame(&self) -> bool {
        self.remote
    }

    fn id(&self) -> Id {
        self.id
    }

    fn dlc(&self) -> usize {
        self.len as usize
    }

    fn data(&self) -> &[u8] {
        CanFrame::data(self)
    }
}

/// candump-style `ID#DATA` (`1DB#0011223344556677`, extended ids with 8 hex digits, `R` for remote).
impl fmt::Display for CanFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Id::Standard(s) => write!(f, "{:03X}#", s.as_raw())?,
            Id::Extended(e) => write!(f, "{:08X}#", e.as_raw())?,
        }
        if self.remote {
            return f.write_str("R");
        }
        for b in self.data() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CanFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanFrame({self})")
    }
}

/// Fails a decode when the frame is shorter than the message needs, naming the id, so a truncated frame is an
/// error rather than zeros read past its end.
pub fn require_len(frame: &CanFrame, expected: usize) -> Result<&[u8; 8], DecodeError> {
    if frame.len() < expected {
        return Err(DecodeError::WrongLength { id: frame.raw_id(), expected: expected as u8, got: frame.len() as u8 });
    }
    Ok(frame.data8())
}

/// Why a received frame was rejected. Small and specific, so the events and logs can say what was wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame {id:#x}: {got} data bytes, expected at least {expected}")]
    WrongLength { id: u32, expected: u8, got: u8 },
    #[error("frame {id:#x}: checksum mismatch (got {got:#04x}, computed {computed:#04x})")]
    BadChecksum { id: u32, got: u8, computed: u8 },
    #[error("frame {id:#x}: message counter {got} where {expected} was expected")]
    BadCounter { id: u32, expected: u8, got: u8 },
    #[error("frame {id:#x}: value out of its documented range")]
    OutOfRange { id: u32 },
    #[error("frame {id:#x}: multi-frame response out of sequence")]
    BadSequence { id: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_displays_like_candump() {
        let f = CanFrame::standard(0x1DB, &[0x01, 0xAB]).unwrap();
        assert_eq!(f.to_string(), "1DB#01AB");
        assert_eq!(f.standard_id(), Some(0x1DB));
        assert_eq!(f.extended_id(), None);
        let e = CanFrame::extended(0x4210, &[]).unwrap();
        assert_eq!(e.to_string(), "00004210#");
        assert_eq!(e.standard_id(), None);
    }

    #[test]
    fn rejects_bad_ids_and_lengths() {
        assert_eq!(CanFrame::standard(0x800, &[]), Err(FrameError::BadId(0x800)));
        assert_eq!(CanFrame::extended(0x2000_0000, &[]), Err(FrameError::BadId(0x2000_0000)));
        assert_eq!(CanFrame::standard(1, &[0; 9]), Err(FrameError::TooLong(9)));
    }

    #[test]
    fn require_len_names_the_frame() {
        let f = CanFrame::standard(0x55B, &[1, 2, 3]).unwrap();
        assert_eq!(require_len(&f, 8), Err(DecodeError::WrongLength { id: 0x55B, expected: 8, got: 3 }));
    }
}

/// What a driver did with a received frame that was not an error.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FrameUse {
    /// The frame belongs to this protocol and was decoded.
    Used,
    /// Not a frame this driver listens to (another device on a shared bus).
    Ignored,
}
