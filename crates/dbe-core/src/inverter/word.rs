//! 16-bit fields as the CAN inverter protocols carry them: saturated rather than wrapped, so a value out of a
//! field's range is sent as the nearest one it can hold (a wrapped current or limit would be a different, wrong
//! command).

use core::ops::Range;

/// `v` as an unsigned 16-bit field, saturated at 0 and 65 535.
pub(crate) fn clamp_u16(v: i64) -> u16 {
    v.clamp(0, u16::MAX as i64) as u16
}

/// `v` as a two's-complement 16-bit field, saturated at −32 768 and 32 767.
pub(crate) fn signed(v: i64) -> u16 {
    v.clamp(i16::MIN as i64, i16::MAX as i64) as i16 as u16
}

/// Writes `value` little-endian (Intel) into the two bytes `at`.
pub(crate) fn put_le(buf: &mut [u8; 8], at: Range<usize>, value: u16) {
    buf[at].copy_from_slice(&value.to_le_bytes());
}

/// Writes `value` big-endian (Motorola) into the two bytes `at`.
pub(crate) fn put_be(buf: &mut [u8; 8], at: Range<usize>, value: u16) {
    buf[at].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_saturate_and_keep_their_byte_order() {
        assert_eq!((clamp_u16(-5), clamp_u16(70_000), clamp_u16(1234)), (0, u16::MAX, 1234));
        assert_eq!((signed(-40_000), signed(40_000), signed(-1)), (0x8000, 0x7FFF, 0xFFFF));
        let mut b = [0u8; 8];
        put_le(&mut b, 0..2, 0x1234);
        put_be(&mut b, 2..4, 0x1234);
        assert_eq!(&b[..4], &[0x34, 0x12, 0x12, 0x34]);
    }
}
