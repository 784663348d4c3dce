//! Root rotation (FORMAT.md §4 root update and chain, steps R1–R3 and 5d): golden files under
//! `fixtures/rotation/`, attack-named bundles under `fixtures/attacks/`, and walks through three
//! root generations. `SIGIL_BLESS=1` writes the files.
//!
//! Generations come from `sigil_test_support::root_generation`: root 1 is the test root (keys
//! 1–3), root 2 keys 31–33, root 3 keys 41–43, each threshold 2.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use sigil_manifests::rotation::{encode_chain, walk};
use sigil_manifests::*;
use sigil_test_support::*;

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

/// Compares `built` with the checked-in file (writing it under `SIGIL_BLESS=1`).
fn check(sub: &str, name: &str, built: &[u8]) -> Vec<u8> {
    let path = dir(sub).join(name);
    if std::env::var_os("SIGIL_BLESS").is_some() {
        std::fs::create_dir_all(dir(sub)).unwrap();
        std::fs::write(&path, built).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        stored, built,
        "{name}: encoder output changed (format break?)"
    );
    stored
}

fn at_root(n: u32) -> DevicePolicy<'static> {
    policy().with_root_floor(floor_of(n))
}

fn verified_root(
    bytes: &[u8],
    policy: DevicePolicy<'_>,
) -> Result<(u32, Option<RootFloor>), Error> {
    let root = root();
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let v = verify_bundle(&root, policy, bytes, &mut buf)?;
    Ok((v.root_version(), v.root_floor()))
}

#[test]
fn golden_rotation_files_are_stable_and_verify() {
    let update = check("rotation", "root-update-2.sigil", &root_update(2));
    let parsed = RootUpdateView::parse(&update).unwrap();
    assert_eq!(parsed.version(), Ok(2));
    assert_eq!(parsed.by_previous.len(), 2);
    assert_eq!(&update[..10], b"SGL-RUPD\x01\x00");
    let reached = parsed.verify(root().as_ref()).unwrap();
    assert_eq!(reached, root_generation(2).as_ref());

    let chain = check("rotation", "chain-1-3.sigil", &chain(1, 3));
    assert_eq!(&chain[..10], b"SGL-RCHN\x01\x00");
    let (newest, floor) = verify_root_chain(&root(), None, &chain).unwrap();
    assert_eq!(newest, root_generation(3));
    assert_eq!(floor, Some(floor_of(3)));

    let spec = spec_under_root(3);
    let ks = check("rotation", "keyset-v2.sigil", &key_set_bytes(&spec));
    assert_eq!(&ks[..10], b"SGL-KSET\x02\x00");
    assert_eq!(KeySet::decode(&ks).unwrap().root_version, Some(3));

    let b = check("rotation", "bundle-root-3.sigil", &bundle(&spec));
    assert_eq!(
        u16::from_le_bytes([b[8], b[9]]),
        2,
        "header version 2 carries the chain"
    );
    for device in 1..=3 {
        let p = if device == 1 {
            policy()
        } else {
            at_root(device)
        };
        assert_eq!(
            verified_root(&b, p),
            Ok((3, Some(floor_of(3)))),
            "device on root {device}"
        );
    }
}

#[test]
fn version_1_files_verify_unchanged_on_a_device_that_never_rotated() {
    // The back-compatibility half of §7: no chain, version 1 key set, provisioned root.
    let b = bundle(&Spec::default());
    assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1);
    assert_eq!(verified_root(&b, policy()), Ok((1, None)));
}

struct Attack {
    name: &'static str,
    build: fn() -> Vec<u8>,
    policy: fn() -> DevicePolicy<'static>,
    expect: Error,
}

/// A bundle under root generation `n` whose chain is `updates`.
fn under_root_with_chain(n: u32, updates: &[Vec<u8>]) -> Vec<u8> {
    bundle(&Spec {
        root_signers: root_seeds(n)[..2].to_vec(),
        root_version: Some(n),
        chain: Some(dangerous_chain(updates)),
        ..Spec::default()
    })
}

/// A second root of version 2 (keys 61–63) that root 1's holders also signed.
fn rival_root_2() -> Vec<u8> {
    TrustRoot::new(2, 2, &[61, 62, 63].map(public))
        .unwrap()
        .encode()
        .unwrap()
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "root-update-skips-a-version",
            // Root 1 signs root 3 directly.
            build: || {
                let r3 = root_update_of(&root_generation_bytes(3), &[1, 2], &[41, 42]);
                under_root_with_chain(3, &[r3])
            },
            policy,
            expect: Error::RootVersionSkipped,
        },
        Attack {
            name: "root-re-signed-by-other-keys",
            // The device adopted root 2; the holders of root 1 sign another root 2.
            build: || {
                let rival = root_update_of(&rival_root_2(), &[1, 2], &[61, 62]);
                bundle(&Spec {
                    root_signers: vec![61, 62],
                    root_version: Some(2),
                    chain: Some(dangerous_chain(&[rival])),
                    ..Spec::default()
                })
            },
            policy: || at_root(2),
            expect: Error::RootMismatch,
        },
        Attack {
            name: "root-update-only-old-threshold",
            build: || {
                let r2 = root_update_of(&root_generation_bytes(2), &[1, 2], &[]);
                under_root_with_chain(2, &[r2])
            },
            policy,
            expect: Error::ThresholdNotMet {
                what: Signed::RootUpdateByNew,
                found: 0,
                required: 2,
            },
        },
        Attack {
            name: "root-update-only-new-threshold",
            build: || {
                let r2 = root_update_of(&root_generation_bytes(2), &[], &[31, 32]);
                under_root_with_chain(2, &[r2])
            },
            policy,
            expect: Error::ThresholdNotMet {
                what: Signed::RootUpdateByPrevious,
                found: 0,
                required: 2,
            },
        },
        Attack {
            name: "root-update-below-old-threshold",
            build: || {
                let r2 = root_update_of(&root_generation_bytes(2), &[1], &[31, 32]);
                under_root_with_chain(2, &[r2])
            },
            policy,
            expect: Error::ThresholdNotMet {
                what: Signed::RootUpdateByPrevious,
                found: 1,
                required: 2,
            },
        },
        Attack {
            name: "old-root-keys-after-rotation",
            // A release signed under root 1, after the device moved on to root 2.
            build: || bundle(&Spec::default()),
            policy: || at_root(2),
            expect: Error::RootRolledBack,
        },
        Attack {
            name: "old-root-keys-sign-key-set-behind-chain",
            // The chain reaches root 2, but root 1's keys signed the key set.
            build: || {
                bundle(&Spec {
                    root_version: Some(2),
                    chain: Some(chain(1, 2)),
                    ..Spec::default()
                })
            },
            policy: || at_root(2),
            expect: Error::UnknownSigner(Signed::KeySet),
        },
        Attack {
            name: "key-set-names-retired-root",
            // Root 2's keys signed a key set that says it is under root 1.
            build: || {
                bundle(&Spec {
                    root_version: Some(1),
                    ..spec_under_root(2)
                })
            },
            policy,
            expect: Error::KeySetRootMismatch,
        },
        Attack {
            name: "version-1-key-set-after-rotation",
            build: || {
                bundle(&Spec {
                    root_version: None,
                    ..spec_under_root(2)
                })
            },
            policy,
            expect: Error::KeySetRootMismatch,
        },
        Attack {
            name: "older-chain-after-rotation",
            // Signed under root 2 with its chain, on a device that adopted root 3.
            build: || bundle(&spec_under_root(2)),
            policy: || at_root(3),
            expect: Error::RootRolledBack,
        },
        Attack {
            name: "root-chain-gap",
            // The device is on root 2; the chain starts at root 3.
            build: || under_root_with_chain(3, &[root_update(3)]),
            policy: || at_root(2),
            expect: Error::RootChainGap,
        },
        Attack {
            name: "root-chain-not-consecutive",
            build: || under_root_with_chain(4, &[root_update(2), root_update(4)]),
            policy,
            expect: Error::RootVersionSkipped,
        },
        Attack {
            name: "root-chain-longer-than-bound",
            // Nine valid updates: 2 to 10.
            build: || {
                let updates: Vec<_> = (2..=10).map(root_update).collect();
                under_root_with_chain(10, &updates)
            },
            policy,
            expect: Error::RootChainTooLong,
        },
    ]
}

#[test]
fn every_rotation_attack_is_rejected_with_its_error() {
    for attack in attacks() {
        let stored = check(
            "attacks",
            &format!("{}.bundle", attack.name),
            &(attack.build)(),
        );
        let got = verify(&stored, (attack.policy)());
        assert_eq!(got, Err(attack.expect), "{}", attack.name);
        let message = attack.expect.to_string();
        assert!(
            message.starts_with("step R") || message.starts_with("step "),
            "{message}"
        );
    }
}

#[test]
fn the_rotation_attacks_are_attacks_of_valid_baselines() {
    // Each attack changes one thing of a bundle that verifies.
    for n in 2..=4 {
        assert!(
            verify(&bundle(&spec_under_root(n)), policy()).is_ok(),
            "root {n}"
        );
    }
    let eight: Vec<_> = (2..=9).map(root_update).collect();
    assert!(
        verify(&under_root_with_chain(9, &eight), policy()).is_ok(),
        "eight updates"
    );
    assert!(verify(&bundle(&spec_under_root(3)), at_root(2)).is_ok());
    assert!(verify(&bundle(&spec_under_root(2)), at_root(2)).is_ok());
}

#[test]
fn three_generations_one_at_a_time() {
    // A device walks 1 -> 2 -> 3, adopting each root it confirms; each bundle verifies on the
    // root it reaches and every older bundle is refused afterwards.
    let bundles: Vec<Vec<u8>> = (1..=3).map(|n| bundle(&spec_under_root(n))).collect();
    let mut floor: Option<RootFloor> = None;
    for n in 1..=3u32 {
        let p = floor.map_or(policy(), |f| policy().with_root_floor(f));
        let (version, reached) = verified_root(&bundles[n as usize - 1], p).unwrap();
        assert_eq!(version, n);
        floor = reached.or(floor);
        let p = floor.map_or(policy(), |f| policy().with_root_floor(f));
        for older in 1..n {
            assert_eq!(
                verify(&bundles[older as usize - 1], p),
                Err(Error::RootRolledBack),
                "root {older} bundle on a device at root {n}"
            );
        }
    }
    assert_eq!(floor, Some(floor_of(3)));
}

#[test]
fn a_floor_below_the_provisioned_root_is_the_provisioned_root() {
    let stale = RootFloor {
        version: 0,
        digest: [0; 32],
    };
    assert!(verify(&bundle(&Spec::default()), policy().with_root_floor(stale)).is_ok());
}

#[test]
fn walk_applies_only_updates_above_the_device_root() {
    let chain = chain(1, 3);
    let r1 = root();
    // A corrupt signature on update 2 does not matter to a device already on root 2 (it was
    // checked when adopted), and does to one on root 1.
    let mut updates: Vec<Vec<u8>> = (2..=3).map(root_update).collect();
    let last = updates[0].len() - 1;
    updates[0][last] ^= 1;
    let tampered = dangerous_chain(&updates);
    assert!(walk(r1.as_ref(), Some(floor_of(2)), Some(&tampered)).is_ok());
    assert_eq!(
        walk(r1.as_ref(), None, Some(&tampered)).map(|_| ()),
        Err(Error::BadSignature(Signed::RootUpdateByNew))
    );
    let reached = walk(r1.as_ref(), None, Some(&chain)).unwrap();
    assert_eq!(reached.root.root_version, 3);
    assert_eq!(reached.floor(), Some(floor_of(3)));
    assert!(encode_chain(&[]).is_err(), "an empty chain is malformed");
}

/// The bundle verified in place (the whole chain in memory, `walk`) and through a copying
/// verifier with the smallest buffer that accepts every bundle (the chain streamed one update
/// at a time), fed in chunks of `chunk` bytes: the root reached and the manifest, or the error.
type Outcome = Result<(u32, Option<RootFloor>, [u8; 32]), Error>;

fn in_place(bytes: &[u8], policy: DevicePolicy<'_>) -> Outcome {
    let root = root();
    let v = verify_in_place(&root, policy, bytes)?;
    Ok((v.root_version(), v.root_floor(), v.manifest_digest()))
}

fn streamed(bytes: &[u8], policy: DevicePolicy<'_>, chunk: usize, buf_len: usize) -> Outcome {
    let root = root();
    let mut buf = vec![0u8; buf_len];
    let mut v = BundleVerifier::new(&root, policy, &mut buf);
    for piece in bytes.chunks(chunk) {
        v.feed(piece)?;
    }
    let v = v.finish()?;
    Ok((v.root_version(), v.root_floor(), v.manifest_digest()))
}

/// The chain region of `bundle` (after the 64-byte header), as the header gives it.
fn chain_range(bundle: &[u8]) -> std::ops::Range<usize> {
    let header = *UnverifiedBundle::parse(bundle).unwrap().header();
    HEADER_LEN..HEADER_LEN + header.chain_len as usize
}

#[test]
fn a_streamed_chain_gives_the_in_place_answers() {
    let policies: [fn() -> DevicePolicy<'static>; 3] = [policy, || at_root(2), || at_root(3)];
    let eight: Vec<_> = (2..=9).map(root_update).collect();
    let mut cases: Vec<Vec<u8>> = attacks().iter().map(|a| (a.build)()).collect();
    cases.extend((1..=4).map(|n| bundle(&spec_under_root(n))));
    cases.push(under_root_with_chain(9, &eight));
    let mut accepted = 0;
    for bytes in &cases {
        for p in policies {
            let want = in_place(bytes, p());
            accepted += usize::from(want.is_ok());
            for chunk in [1, 7, 256, bytes.len()] {
                assert_eq!(
                    streamed(bytes, p(), chunk, MIN_VERIFY_BUFFER_LEN),
                    want,
                    "chunk {chunk}"
                );
            }
            assert_eq!(streamed(bytes, p(), 256, VERIFY_BUFFER_LEN), want);
        }
    }
    assert!(accepted >= 8, "{accepted}");
}

#[test]
fn a_damaged_streamed_chain_fails_as_in_place() {
    // Root 3's bundle with the chain 1 -> 2 -> 3: every chain byte flipped in turn (a stride,
    // to keep the signature checks few), and the chain cut short at every 97th byte.
    let good = bundle(&spec_under_root(3));
    let range = chain_range(&good);
    let chain = good[range.clone()].to_vec();
    let mut checked = 0;
    // On root 1 every byte of the chain is checked: each flip fails.
    for at in (0..chain.len()).step_by(13) {
        let mut bad = chain.clone();
        bad[at] ^= 0x41;
        assert!(
            in_place(&with_chain(&good, &bad), policy()).is_err(),
            "byte {at}"
        );
    }
    for at in (0..chain.len()).step_by(13) {
        let mut bad = chain.clone();
        bad[at] ^= 0x41;
        let bytes = with_chain(&good, &bad);
        for p in [policy(), at_root(2)] {
            let want = in_place(&bytes, p);
            assert_eq!(
                streamed(&bytes, p, 64, MIN_VERIFY_BUFFER_LEN),
                want,
                "byte {at}"
            );
            checked += 1;
        }
    }
    for cut in (1..chain.len()).step_by(97) {
        let bytes = with_chain(&good, &chain[..cut]);
        let want = in_place(&bytes, policy());
        assert!(want.is_err(), "cut {cut}");
        assert_eq!(
            streamed(&bytes, policy(), 100, MIN_VERIFY_BUFFER_LEN),
            want,
            "cut {cut}"
        );
        checked += 1;
    }
    // A whole bundle cut inside its chain: a truncated stream either way.
    for cut in [HEADER_LEN + 1, range.start + chain.len() / 2, range.end - 1] {
        let want = in_place(&good[..cut], policy());
        assert_eq!(want, Err(Error::Truncated), "cut {cut}");
        assert_eq!(
            streamed(&good[..cut], policy(), 256, MIN_VERIFY_BUFFER_LEN),
            want
        );
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn a_buffer_smaller_than_one_update_is_too_small() {
    let good = bundle(&spec_under_root(3));
    let update = root_update(2).len();
    // Room for a root and the chain's first bytes, not for its first update.
    assert_eq!(
        streamed(&good, policy(), 256, update),
        Err(Error::BufferTooSmall)
    );
    // One update at a time fits where the whole chain does not.
    let chain = chain_range(&good).len();
    let envelope = UnverifiedBundle::parse(&good)
        .unwrap()
        .header()
        .envelope_len as usize;
    let small = MAX_ROOT_LEN + envelope.max(update + 8);
    assert!(small < chain + envelope, "{small} {chain}");
    assert!(streamed(&good, policy(), 256, small).is_ok());
}

#[test]
fn the_largest_root_and_update_fit_the_minimum_buffer() {
    // A root of eight keys at the largest version, and its update with sixteen signatures.
    let seeds: Vec<u8> = (70..78).collect();
    let root = TrustRoot::new(
        u32::MAX,
        8,
        &seeds.iter().map(|&s| public(s)).collect::<Vec<_>>(),
    )
    .unwrap()
    .encode()
    .unwrap();
    assert_eq!(root.len(), MAX_ROOT_LEN);
    let old: Vec<u8> = (80..88).collect();
    let update = root_update_of(&root, &old, &seeds);
    // The update and its length prefix, behind the held root, with room to spare.
    assert!(
        MAX_ROOT_LEN + update.len() + 5 <= MIN_VERIFY_BUFFER_LEN,
        "{}",
        update.len()
    );
    assert!(update.len() + 5 <= MAX_ENVELOPE_LEN);
}
