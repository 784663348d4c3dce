//! Attack-named fixtures: each file under `fixtures/attacks/` is a bundle built to represent one
//! attack, and must be rejected with the error that names it. The files are checked in so that a
//! format change that silently starts accepting one of them fails here; `SIGIL_BLESS=1`
//! regenerates them (signatures are deterministic, so regeneration is reproducible).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sigil_manifests::*;
use sigil_test_support::*;

/// Adds the group order L to the S half of a signature: same signature mathematically, but a
/// non-canonical encoding that lax verifiers accept (signature malleability).
fn malleate(sig: &mut [u8; 64]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = sig[32 + i] as u16 + L[i] as u16 + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
}

fn with_envelope(spec: &Spec, edit: impl FnOnce(&mut Envelope<'_>)) -> Vec<u8> {
    let b = bundle(spec);
    let parsed = UnverifiedBundle::parse(&b).unwrap();
    let offset = parsed.header().payload_offset as usize;
    let mut env = parsed.into_envelope();
    edit(&mut env);
    let mut out = env.encode_prefix().unwrap();
    out.extend_from_slice(&b[offset..]);
    out
}

/// A key set listing release key 11 and its torsion twin (11 plus a point of order 8),
/// threshold 2, with the manifest signed by the secret of 11 under both: one secret meeting a
/// 2-of-2 threshold unless the twin is refused (step 5b).
fn torsion_twin_bundle() -> Vec<u8> {
    let keys = [public(11), torsion_twin(11)];
    // The twin signs for one manifest in eight: vary the creation time until it does.
    let (spec, manifest, twin_signature) = (0..64)
        .find_map(|i| {
            let spec = Spec {
                key_set_threshold: 2,
                created: 1_700_000_000 + i,
                ..Spec::default()
            };
            let manifest = manifest_for(&spec).encode().unwrap();
            let twin = sign_as_torsion_twin(11, &manifest)?;
            Some((spec, manifest, twin))
        })
        .unwrap();
    let b = bundle_with(&dangerous_key_set_bytes(&spec, &keys), &spec, &manifest);
    let parsed = UnverifiedBundle::parse(&b).unwrap();
    let offset = parsed.header().payload_offset as usize;
    let mut env = parsed.into_envelope();
    env.add_manifest_signature(twin_signature).unwrap();
    let mut out = env.encode_prefix().unwrap();
    out.extend_from_slice(&b[offset..]);
    out
}

struct Attack {
    name: &'static str,
    build: fn() -> Vec<u8>,
    policy: fn() -> DevicePolicy<'static>,
    expect: Error,
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "torsion-twin-release-key",
            build: torsion_twin_bundle,
            policy,
            expect: Error::KeyOutsideSubgroup(Document::KeySet),
        },
        Attack {
            name: "non-canonical-release-key",
            build: || {
                let spec = Spec::default();
                let keys = [public(11), non_canonical_point()];
                let m = manifest_for(&spec).encode().unwrap();
                bundle_with(&dangerous_key_set_bytes(&spec, &keys), &spec, &m)
            },
            policy,
            expect: Error::NonCanonicalKey(Document::KeySet),
        },
        Attack {
            name: "nine-signatures",
            build: || {
                // Postcard list count 8 -> 9 on the manifest signatures of a bundle with
                // eight, so the ninth entry's bytes are where the count says it is.
                let spec = Spec {
                    release_keys: (11..19).collect(),
                    manifest_signers: (11..19).collect(),
                    ..Spec::default()
                };
                let b = bundle(&spec);
                let env_len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
                let count_at = 32 + env_len - 8 * 96 - 1;
                assert_eq!(b[count_at], 8);
                let mut evil = b.clone();
                evil[count_at] = 9;
                evil
            },
            policy,
            expect: Error::Malformed(Document::Envelope),
        },
        Attack {
            name: "tampered-payload",
            build: || {
                let mut b = bundle(&Spec::default());
                let last = b.len() - 1;
                b[last] ^= 0x01;
                b
            },
            policy,
            expect: Error::DigestMismatch,
        },
        Attack {
            name: "tampered-manifest",
            build: || {
                let spec = Spec::default();
                let evil = Spec {
                    counter: 99,
                    ..Spec::default()
                };
                let evil_bytes = manifest_for(&evil).encode().unwrap();
                // Signatures made over the genuine manifest, carried with the edited one.
                with_envelope(&spec, |env| {
                    let sigs = env.manifest_signatures.clone();
                    env.manifest = Box::leak(evil_bytes.into_boxed_slice());
                    env.manifest_signatures = sigs;
                })
            },
            policy,
            expect: Error::BadSignature(Signed::Manifest),
        },
        Attack {
            name: "truncated-bundle",
            build: || {
                let b = bundle(&Spec::default());
                b[..b.len() - 100].to_vec()
            },
            policy,
            expect: Error::Truncated,
        },
        Attack {
            name: "trailing-garbage",
            build: || {
                let mut b = bundle(&Spec::default());
                b.extend_from_slice(b"EVIL");
                b
            },
            policy,
            expect: Error::TrailingData,
        },
        Attack {
            name: "wrong-product",
            build: || {
                bundle(&Spec {
                    product: ProductId::new("acme", "monitor-m1").unwrap(),
                    ..Spec::default()
                })
            },
            policy,
            expect: Error::WrongProduct,
        },
        Attack {
            name: "rolled-back-counter",
            build: || {
                bundle(&Spec {
                    counter: 4,
                    ..Spec::default()
                })
            },
            policy: || policy().with_min_security_counter(5),
            expect: Error::CounterRolledBack,
        },
        Attack {
            name: "signer-not-in-key-set",
            build: || {
                bundle(&Spec {
                    manifest_signers: vec![66],
                    ..Spec::default()
                })
            },
            policy,
            expect: Error::UnknownSigner(Signed::Manifest),
        },
        Attack {
            name: "key-set-below-root-threshold",
            build: || {
                bundle(&Spec {
                    root_signers: vec![1],
                    ..Spec::default()
                })
            },
            policy,
            expect: Error::ThresholdNotMet {
                what: Signed::KeySet,
                found: 1,
                required: 2,
            },
        },
        Attack {
            name: "key-set-signed-by-non-root",
            build: || {
                bundle(&Spec {
                    root_signers: vec![1, 77],
                    ..Spec::default()
                })
            },
            policy,
            expect: Error::UnknownSigner(Signed::KeySet),
        },
        Attack {
            name: "duplicate-signature",
            build: || {
                let spec = Spec {
                    key_set_threshold: 2,
                    ..Spec::default()
                };
                with_envelope(&spec, |env| {
                    let first = env.manifest_signatures[0];
                    env.manifest_signatures.push(first).unwrap();
                })
            },
            policy,
            expect: Error::ThresholdNotMet {
                what: Signed::Manifest,
                found: 1,
                required: 2,
            },
        },
        Attack {
            name: "revoked-key-set",
            build: || {
                bundle(&Spec {
                    key_set_version: 1,
                    ..Spec::default()
                })
            },
            policy: || policy().with_min_key_set_version(2),
            expect: Error::KeySetRolledBack,
        },
        Attack {
            name: "non-canonical-signature",
            build: || {
                with_envelope(&Spec::default(), |env| {
                    malleate(&mut env.manifest_signatures[0].signature)
                })
            },
            policy,
            expect: Error::BadSignature(Signed::Manifest),
        },
        Attack {
            name: "envelope-length-past-end",
            build: || {
                let mut b = bundle(&Spec::default())[..200].to_vec();
                b[12..16].copy_from_slice(&4000u32.to_le_bytes());
                b[16..20].copy_from_slice(&4032u32.to_le_bytes());
                b
            },
            policy,
            expect: Error::Truncated,
        },
        Attack {
            name: "inner-length-past-end",
            build: || {
                let mut b = bundle(&Spec::default());
                // The envelope opens with the key set's byte length: point it far past the end.
                b[32] = 0xff;
                b[33] = 0x7f;
                b
            },
            policy,
            expect: Error::Malformed(Document::Envelope),
        },
        Attack {
            name: "header-size-disagrees-with-manifest",
            build: || {
                let mut b = bundle(&Spec::default());
                let size = u64::from_le_bytes(b[20..28].try_into().unwrap()) + 1;
                b[20..28].copy_from_slice(&size.to_le_bytes());
                b.push(0);
                b
            },
            policy,
            expect: Error::PayloadSizeMismatch,
        },
        Attack {
            name: "endless-payload",
            build: || {
                let mut b = bundle(&Spec::default());
                b[20..28].copy_from_slice(&u64::MAX.saturating_sub(4096).to_le_bytes());
                b
            },
            policy,
            expect: Error::BundleTooLarge,
        },
        Attack {
            name: "data-in-padding",
            build: || {
                let mut b = bundle(&Spec::default());
                let offset = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
                b[offset - 1] = 0x42;
                b
            },
            policy,
            expect: Error::NonZeroPadding,
        },
        Attack {
            name: "out-of-key-set-scope",
            build: || {
                bundle(&Spec {
                    scope: Some(ProductId::new("acme", "monitor-m1").unwrap()),
                    ..Spec::default()
                })
            },
            policy,
            expect: Error::OutOfKeySetScope,
        },
        Attack {
            name: "future-header-version",
            build: || {
                // Version 2 carries a root chain (FORMAT.md §5); 3 is from the future.
                let mut b = bundle(&Spec::default());
                b[8] = 3;
                b
            },
            policy,
            expect: Error::UnsupportedVersion(Document::Header, 3),
        },
    ]
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attacks")
}

#[test]
fn every_attack_fixture_is_rejected_with_its_error() {
    let bless = std::env::var_os("SIGIL_BLESS").is_some();
    for attack in attacks() {
        let path = fixture_dir().join(format!("{}.bundle", attack.name));
        let built = (attack.build)();
        if bless {
            std::fs::create_dir_all(fixture_dir()).unwrap();
            std::fs::write(&path, &built).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with SIGIL_BLESS=1 to create)", path.display())
        });
        assert_eq!(
            stored, built,
            "{}: generator no longer reproduces the fixture",
            attack.name
        );
        let got = verify(&stored, (attack.policy)());
        assert_eq!(got, Err(attack.expect), "{}", attack.name);
        let message = attack.expect.to_string();
        assert!(message.starts_with("step "), "{}: {message}", attack.name);
    }
}

#[test]
fn a_torsion_twin_is_refused_in_a_trust_root_at_step_0() {
    let twin_root = TrustRoot {
        root_version: 1,
        threshold: 2,
        keys: heapless::Vec::from_slice(&[public(1), torsion_twin(1)]).unwrap(),
    };
    let bytes = twin_root.encode().unwrap();
    let err = TrustRoot::decode(&bytes).unwrap_err();
    assert_eq!(err, Error::KeyOutsideSubgroup(Document::TrustRoot));
    assert!(err.to_string().starts_with("step 0:"), "{err}");
    assert!(err.to_string().contains("prime-order subgroup"), "{err}");
    assert_eq!(
        TrustRoot::new(1, 2, &[public(1), torsion_twin(1)]),
        Err(Error::KeyOutsideSubgroup(Document::TrustRoot))
    );
}

#[test]
fn the_torsion_twin_attack_meets_the_threshold_but_for_the_key_check() {
    // The fixture is the attack: its manifest carries two signatures, both by the secret of
    // key 11, under two distinct key ids, and both verify strictly.
    let b = torsion_twin_bundle();
    let parsed = UnverifiedBundle::parse(&b).unwrap();
    let env = parsed.envelope();
    let ids: Vec<_> = env.manifest_signatures.iter().map(|s| s.key_id).collect();
    assert_eq!(ids, [key_id(&public(11)), key_id(&torsion_twin(11))]);
    for (entry, key) in env
        .manifest_signatures
        .iter()
        .zip([public(11), torsion_twin(11)])
    {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
        assert!(vk
            .verify_strict(
                env.manifest,
                &ed25519_dalek::Signature::from_bytes(&entry.signature)
            )
            .is_ok());
    }
    let err = verify(&b, policy()).unwrap_err();
    assert!(err.to_string().starts_with("step 5b:"), "{err}");
}

#[test]
fn the_attacks_are_attacks_of_a_valid_baseline() {
    // Guards against a fixture that fails for an unrelated reason: the untouched baseline with
    // each attack's policy verifies (except the policies that exist to reject it).
    let b = bundle(&Spec::default());
    assert!(verify(&b, policy()).is_ok());
    assert!(
        verify(&b, policy().with_min_security_counter(5)).is_ok(),
        "equal counter is allowed"
    );
    let ks2 = bundle(&Spec {
        key_set_version: 2,
        ..Spec::default()
    });
    assert!(verify(&ks2, policy().with_min_key_set_version(2)).is_ok());
    let dup_ok = bundle(&Spec {
        key_set_threshold: 2,
        manifest_signers: vec![11, 12],
        ..Spec::default()
    });
    assert!(
        verify(&dup_ok, policy()).is_ok(),
        "two distinct keys meet a threshold of two"
    );
}

#[test]
fn malleated_signature_differs_only_in_s_and_is_refused() {
    // The non-canonical fixture is the malleability attack: R unchanged, S + L encodes the same
    // scalar mod L. Only the canonical encoding verifies.
    let spec = Spec::default();
    let m = manifest_for(&spec).encode().unwrap();
    let good = SignatureEntry::sign(&key(11), &m).signature;
    let mut evil = good;
    malleate(&mut evil);
    assert_eq!(good[..32], evil[..32]);
    assert_ne!(good[32..], evil[32..]);
    let vk = key(11).verifying_key();
    assert!(vk
        .verify_strict(&m, &ed25519_dalek::Signature::from_bytes(&good))
        .is_ok());
    assert!(vk
        .verify_strict(&m, &ed25519_dalek::Signature::from_bytes(&evil))
        .is_err());
}
