//! Every single-byte change to the header, envelope or padding of a valid bundle is rejected.
//! Outside the payload nothing is unauthenticated slack: signatures, key ids, lengths, tags,
//! header fields and padding are all either signed, cross-checked or required to be zero.
//! The sweep also holds every rejection's message to citing its FORMAT.md step.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sigil_test_support::*;

#[test]
fn every_flip_before_the_payload_is_rejected() {
    let spec = Spec {
        payload: vec![0x5a; 64],
        ..Spec::default()
    };
    let good = bundle(&spec);
    assert!(verify(&good, policy()).is_ok());
    let offset = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
    let mut trials = 0;
    for i in 0..offset {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            let result = verify(&bad, policy());
            let Err(e) = result else {
                panic!("flip {mask:#04x} at byte {i} was accepted");
            };
            // Every rejection names the FORMAT.md step that made it.
            let message = e.to_string();
            assert!(
                message.starts_with("step "),
                "flip {mask:#04x} at byte {i}: {message:?} cites no step"
            );
            trials += 1;
        }
    }
    println!("{trials} single-byte flips over {offset} bytes, all rejected");
}

#[test]
fn every_flip_in_the_payload_is_rejected() {
    let spec = Spec {
        payload: vec![0xa5; 64],
        ..Spec::default()
    };
    let good = bundle(&spec);
    let offset = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
    for i in offset..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            verify(&bad, policy()),
            Err(sigil_manifests::Error::DigestMismatch),
            "byte {i}"
        );
    }
}
