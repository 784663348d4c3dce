//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bitwise and table-free: records are
//! 80 bytes, so a 1 KiB table would cost more flash than the loop costs time.

/// CRC-32 of `data` (the common "CRC-32" as used by zlib and Ethernet).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }
}
