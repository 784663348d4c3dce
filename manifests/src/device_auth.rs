//! The message a device signs to open a session with the update server (FORMAT.md §8).
//!
//! Defined here, beside the other signed formats, so that the server that checks it and the
//! agent that signs it cannot drift apart.

/// Domain-separation tag that opens every device authentication message.
pub const DEVICE_AUTH_TAG: &[u8; 20] = b"SIGIL-DEVICE-AUTH-V1";

/// `DEVICE_AUTH_TAG || u64 LE length of the id || id || 32-byte server nonce`.
///
/// The id is length-prefixed so that no (id, nonce) pair can be read as another; the tag keeps
/// the signature from ever being valid as a key set or manifest signature.
#[cfg(feature = "alloc")]
pub fn message(device_id: &str, nonce: &[u8; 32]) -> alloc::vec::Vec<u8> {
    let id = device_id.as_bytes();
    let mut m = alloc::vec::Vec::with_capacity(
        DEVICE_AUTH_TAG
            .len()
            .saturating_add(40)
            .saturating_add(id.len()),
    );
    m.extend_from_slice(DEVICE_AUTH_TAG);
    m.extend_from_slice(&(id.len() as u64).to_le_bytes());
    m.extend_from_slice(id);
    m.extend_from_slice(nonce);
    m
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    #[test]
    fn layout_is_stable() {
        let m = super::message("pump-7", &[0xab; 32]);
        assert_eq!(&m[..20], b"SIGIL-DEVICE-AUTH-V1");
        assert_eq!(&m[20..28], &6u64.to_le_bytes());
        assert_eq!(&m[28..34], b"pump-7");
        assert_eq!(&m[34..], &[0xab; 32]);
    }
}
