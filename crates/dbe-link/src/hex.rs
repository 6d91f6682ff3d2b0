//! ASCII hex helpers shared by the text protocols (candump, slcan, socketcand).

use dbe_core::CanFrame;
use embedded_can::{ExtendedId, Frame as _, StandardId};

/// The value of one ASCII hex digit, either case.
pub(crate) fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Parses a run of hex digits as a number; `None` when empty, too long for `u32` or not hex.
pub(crate) fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| Some((acc << 4) | u32::from(nibble(b)?)))
}

/// Index of the first byte in `digits` that is not a hex digit.
pub(crate) fn first_non_hex(digits: &[u8]) -> Option<usize> {
    digits.iter().position(|&b| nibble(b).is_none())
}

/// Appends `bytes` as upper-case hex, two digits each.
pub(crate) fn push_upper_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xF)]);
    }
}

pub(crate) fn push_upper(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xF)] as char);
    }
}

/// A data or remote frame from a raw id, checked against the 11- or 29-bit range. Remote frames keep `dlc`
/// as their length; data frames take their length from `data`.
pub(crate) fn build_frame(id: u32, extended: bool, remote: Option<usize>, data: &[u8]) -> Option<CanFrame> {
    if extended {
        let eid = ExtendedId::new(id)?;
        match remote {
            Some(dlc) => CanFrame::new_remote(eid, dlc),
            None => CanFrame::new(eid, data).ok(),
        }
    } else {
        let sid = StandardId::new(u16::try_from(id).ok()?)?;
        match remote {
            Some(dlc) => CanFrame::new_remote(sid, dlc),
            None => CanFrame::new(sid, data).ok(),
        }
    }
}
