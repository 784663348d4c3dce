//! Runs one operation N times, for `bench/keys.sh` to count its instructions under callgrind:
//! the key check of FORMAT.md §3 against the `verify_strict` it accompanies.
//!
//! ```text
//! key_check_cost OPERATION N
//! ```
//!
//! | operation | what runs N times |
//! |---|---|
//! | `none` | nothing (the set-up's own cost, subtracted by the script) |
//! | `key-check` | `keys::check_public_key` of one key (canonical, decompress, small order, subgroup) |
//! | `decompress` | what the check did before: decompress and the small-order test |
//! | `ct-torsion` | curve25519-dalek's constant-time `is_torsion_free`, the alternative not taken |
//! | `verify-strict` | one `verify_strict` of a 300-byte message |
//! | `boot` | a boot's verification: decode a 1-key trust root (step 0), verify a bundle whose key set has 1 key (steps 1–9) |
// A measurement tool: bad arguments abort it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use sigil_manifests::keys::check_public_key;
use sigil_manifests::{verify_bundle, Document, TrustRoot, MAX_ENVELOPE_LEN};
use sigil_test_support::{bundle, key, policy, public, root_of, Spec};

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().expect("OPERATION");
    let n: u32 = args.next().expect("N").parse().expect("N is a number");

    let pk = public(11);
    let vk = VerifyingKey::from_bytes(&pk).unwrap();
    let message = [0x5a_u8; 300];
    let signature: Signature = key(11).sign(&message);
    let root_bytes = root_of([1], 1).encode().unwrap();
    let one_of_one = bundle(&Spec {
        release_keys: vec![11],
        root_signers: vec![1],
        ..Spec::default()
    });

    let mut ok = 0u32;
    for _ in 0..n {
        let passed = match op.as_str() {
            "none" => true,
            "key-check" => check_public_key(black_box(&pk), Document::KeySet).is_ok(),
            "decompress" => VerifyingKey::from_bytes(black_box(&pk)).is_ok_and(|k| !k.is_weak()),
            "ct-torsion" => black_box(&vk).to_edwards().is_torsion_free(),
            "verify-strict" => black_box(&vk)
                .verify_strict(black_box(&message), &signature)
                .is_ok(),
            "boot" => {
                let root = TrustRoot::decode(black_box(&root_bytes)).unwrap();
                let mut buf = [0u8; MAX_ENVELOPE_LEN];
                let verified = verify_bundle(&root, policy(), black_box(&one_of_one), &mut buf);
                verified.is_ok()
            }
            other => panic!("unknown operation {other}"),
        };
        ok += u32::from(passed);
    }
    assert_eq!(ok, n, "{op} failed");
}
