//! Checksums shared by drivers and simulators.

/// CRC-8 with polynomial 0x85, initial value 0, no reflection, no final XOR: the checksum in the last byte of
/// the Nissan LEAF's 0x1DB, 0x1DC, 0x55B (pack → car) and 0x1D4 (car → pack) frames. Verified against the four
/// precomputed 0x1D4 checksums Battery-Emulator sends (NISSAN-LEAF-BATTERY.cpp: 0x12, 0xD5, 0x19, 0xDE).
pub const fn crc8_0x85(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    let mut i = 0;
    while i < data.len() {
        crc ^= data[i];
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x85 } else { crc << 1 };
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// Tesla's additive checksum (commaai/opendbc `opendbc/car/tesla/teslacan.py` `tesla_checksum`, and the same sum in
/// `opendbc/safety/modes/tesla.h` `tesla_compute_checksum`): the identifier's low byte plus its high byte plus every
/// data byte except the checksum's own (`checksum_byte`), modulo 256. Battery-Emulator's
/// `generateFrameCounterChecksum` computes the same (`TESLA-BATTERY.cpp`); its frame templates carry these sums.
pub const fn tesla_checksum(id: u16, data: &[u8], checksum_byte: usize) -> u8 {
    let mut sum = (id & 0xFF) as u32 + (id >> 8) as u32;
    let mut i = 0;
    while i < data.len() {
        if i != checksum_byte {
            sum += data[i] as u32;
        }
        i += 1;
    }
    (sum & 0xFF) as u8
}

/// CRC-8 with polynomial 0x2F, initial value 0xFF, no reflection, final XOR 0xFF (AUTOSAR's `Crc_CalculateCRC8H2F`,
/// the CRC of the E2E profile 2). Tesla's 0x229 `SCCM_rightStalkCrc` is this CRC over the frame's bytes after the
/// CRC and then one "data id" chosen by the frame's counter; pinned against Battery-Emulator's sixteen precomputed
/// 0x229 values (`generateTESLA_229`, whose comment gives the data ids found in Model 3 firmware).
pub const fn crc8_h2f(data: &[u8]) -> u8 {
    let mut crc = 0xFFu8;
    let mut i = 0;
    while i < data.len() {
        crc ^= data[i];
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x2F } else { crc << 1 };
            bit += 1;
        }
        i += 1;
    }
    crc ^ 0xFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_battery_emulators_precomputed_0x1d4_checksums() {
        for (b4, crc) in [(0x07, 0x12), (0x47, 0xD5), (0x87, 0x19), (0xC7, 0xDE)] {
            assert_eq!(crc8_0x85(&[0x6E, 0x6E, 0x00, 0x04, b4, 0x46, 0xE0]), crc);
        }
    }
    #[test]
    fn tesla_checksum_reproduces_battery_emulators_templates() {
        // TESLA-BATTERY.h: 0x118 `AB 60 2A 00 00 08 00 00` (checksum byte 0), 0x221 DRIVE mux 0 (byte 7 = 0xD8).
        assert_eq!(tesla_checksum(0x118, &[0xAB, 0x60, 0x2A, 0, 0, 0x08, 0, 0], 0), 0xAB);
        assert_eq!(tesla_checksum(0x221, &[0x60, 0x55, 0x55, 0x15, 0x54, 0x51, 0xF1, 0xD8], 7), 0xD8);
        // 0x213 (2 bytes): 0x13 + 0x02 + byte 0.
        assert_eq!(tesla_checksum(0x213, &[0x30, 0], 1), 0x45);
    }

    #[test]
    fn crc8_h2f_matches_the_autosar_check_value() {
        // AUTOSAR SWS CRC library: CRC8H2F of 00 00 00 00 is 0x12, of F2 01 83 is 0xC2.
        assert_eq!(crc8_h2f(&[0, 0, 0, 0]), 0x12);
        assert_eq!(crc8_h2f(&[0xF2, 0x01, 0x83]), 0xC2);
    }
}
