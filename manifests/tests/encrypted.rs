//! Encrypted payloads (FORMAT.md §9): golden files under `fixtures/encrypted/` that must keep
//! verifying and opening, and attack-named fixtures under `fixtures/attacks/` (`encrypted-*`)
//! that must be refused with the error naming the attack. Content keys, device keys and
//! ephemeral keys are fixed, so `SIGIL_BLESS=1` regenerates every file byte for byte.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use proptest::prelude::*;
use sigil_manifests::codec::check_prefix;
use sigil_manifests::encryption::{DeviceKey, KeyRecord, PayloadCipher};
use sigil_manifests::manifest::MANIFEST_TAG;
use sigil_manifests::*;
use sigil_test_support::encrypted::{self, content_key, device, installed, record, release_of};
use sigil_test_support::*;

fn fixtures(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// Writes `built` under `SIGIL_BLESS`, then returns the stored file, which must equal it.
fn check(dir: &str, name: &str, built: &[u8]) -> Vec<u8> {
    let path = fixtures(dir).join(name);
    if std::env::var_os("SIGIL_BLESS").is_some() {
        std::fs::create_dir_all(fixtures(dir)).unwrap();
        std::fs::write(&path, built).unwrap();
    }
    let stored = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with SIGIL_BLESS=1 to create)", path.display()));
    assert_eq!(stored, built, "{name}: generator no longer reproduces it");
    stored
}

/// Release 1: the default spec, encrypted under content key 1.
fn release1() -> Vec<u8> {
    encrypted::bundle(&Spec::default(), &content_key(1))
}

/// Release 2: another image of the same size, content key 2.
fn release2() -> Vec<u8> {
    encrypted::bundle(
        &Spec {
            payload: payload(1000, 2),
            ..Spec::release("1.3.0", 6)
        },
        &content_key(2),
    )
}

fn verified<'a>(
    bytes: &'a [u8],
    view: EncryptedPayload,
    buf: &'a mut [u8],
) -> Result<VerifiedBundle<'a>, Error> {
    // The test root lives for the whole test run.
    verify_bundle(
        static_root(),
        policy().with_encrypted_payload(view),
        bytes,
        buf,
    )
}

/// Verifies `bundle` as ciphertext and opens `record` with `device`: the content key's
/// keystream over the payload.
fn open(bundle: &[u8], record: &[u8], device: &DeviceKey) -> Result<PayloadCipher, Error> {
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let v = verified(bundle, EncryptedPayload::Ciphertext, &mut buf)?;
    let key = device.open(record, &v)?;
    let e = v
        .manifest()
        .payload_format
        .encryption()
        .ok_or(Error::NotEncrypted)?;
    key.payload_cipher(e, v.payload_size())
}

/// `bundle` with its manifest's format version byte set to `version`, signed again by
/// release key 11 (its only signer): for manifests no builder would encode. Byte surgery,
/// since the envelope encoder checks what it encodes; every length stays the same.
fn with_manifest_version(bundle: &[u8], version: u8) -> Vec<u8> {
    let parsed = UnverifiedBundle::parse(bundle).unwrap();
    let manifest = parsed.envelope().manifest.to_vec();
    let old_signature = parsed
        .envelope()
        .manifest_signatures
        .iter()
        .next()
        .unwrap()
        .signature;
    let mut patched = manifest.clone();
    patched[8] = version;
    let new_signature = SignatureEntry::sign(&key(11), &patched).signature;
    let mut out = bundle.to_vec();
    let at = out
        .windows(manifest.len())
        .position(|w| w == &manifest[..])
        .unwrap();
    out[at..at + manifest.len()].copy_from_slice(&patched);
    let at = out
        .windows(64)
        .position(|w| w == &old_signature[..])
        .unwrap();
    out[at..at + 64].copy_from_slice(&new_signature);
    out
}

fn payload_of(bundle: &[u8]) -> Vec<u8> {
    let offset = UnverifiedBundle::parse(bundle)
        .unwrap()
        .header()
        .payload_offset as usize;
    bundle[offset..].to_vec()
}

#[test]
fn golden_encrypted_release_verifies_opens_and_installs() {
    let bundle = check("encrypted", "bundle.sigil", &release1());
    let rec = check(
        "encrypted",
        "device-7.wkey",
        &record(&bundle, &content_key(1), 7, 0x77),
    );
    // The device key of the golden record: the private key file as a provisioning tool
    // would hand it over (32 raw bytes).
    let secret = check("encrypted", "device-7.x25519", &[7u8; 32]);
    let device = DeviceKey::from_secret(secret.try_into().unwrap());
    assert_eq!(&bundle[8..10], &[1, 0], "header version 1: no chain");
    // The manifest is format version 2 with the Encrypted variant.
    let parsed = UnverifiedBundle::parse(&bundle).unwrap();
    assert_eq!(&parsed.envelope().manifest[..10], b"SGL-MNFT\x02\x00");
    assert_eq!(&rec[..10], b"SGL-WKEY\x01\x00");
    assert_eq!(rec.len(), encryption::KEY_RECORD_LEN);
    let record = KeyRecord::decode(&rec).unwrap();
    assert_eq!(record.recipient, device.id());
    assert_eq!(record.release, release_of(&bundle));

    // Anyone verifies the ciphertext bundle without a key (tools, server, mirrors).
    let root = root();
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let v = verify_bundle(&root, DevicePolicy::any_device(), &bundle, &mut buf).unwrap();
    let e = *v.manifest().payload_format.encryption().unwrap();
    assert_eq!(e.cipher, Cipher::ChaCha20);
    assert_eq!(e.plaintext_digest, payload_digest(&Spec::default()));
    assert_ne!(v.manifest().payload_digest, e.plaintext_digest);
    assert_eq!(
        v.manifest().payload_format.to_string(),
        "encrypted (chacha20)"
    );

    // The device opens its record and decrypts to the image.
    let mut image = payload_of(&bundle);
    assert_ne!(image, Spec::default().payload);
    open(&bundle, &rec, &device)
        .unwrap()
        .apply(0, &mut image)
        .unwrap();
    assert_eq!(image, Spec::default().payload);
    // The installed image verifies against the plaintext digest (the boot's check).
    let slot = check("encrypted", "installed.sigil", &installed(&bundle, &image));
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    assert!(verified(&slot, EncryptedPayload::Decrypted, &mut buf).is_ok());
}

#[test]
fn the_v1_golden_files_are_untouched_and_raw_manifests_stay_version_1() {
    let v1 = std::fs::read(fixtures("v1").join("bundle.sigil")).unwrap();
    let parsed = UnverifiedBundle::parse(&v1).unwrap();
    assert_eq!(&parsed.envelope().manifest[..10], b"SGL-MNFT\x01\x00");
    assert_eq!(
        parsed.unverified_manifest().unwrap().payload_format,
        PayloadFormat::Raw
    );
    // A raw payload verifies identically under every view: both digests are payload_digest.
    for view in [
        EncryptedPayload::Ciphertext,
        EncryptedPayload::Decrypted,
        EncryptedPayload::Refused,
    ] {
        assert!(verify(&v1, DevicePolicy::any_device().with_encrypted_payload(view)).is_ok());
    }
}

#[test]
fn a_version_1_only_verifier_refuses_an_encrypted_manifest_as_unsupported() {
    let bundle = release1();
    let parsed = UnverifiedBundle::parse(&bundle).unwrap();
    // `check_prefix` is the version-1-only prefix check every version 1 decoder ran.
    assert_eq!(
        check_prefix(parsed.envelope().manifest, MANIFEST_TAG, Document::Manifest),
        Err(Error::UnsupportedVersion(Document::Manifest, 2))
    );
    let message = Error::UnsupportedVersion(Document::Manifest, 2).to_string();
    assert_eq!(
        message,
        "step 7a: manifest format version 2 is not supported"
    );
}

#[test]
fn a_device_that_does_not_decrypt_refuses_at_step_7k() {
    let bundle = release1();
    assert_eq!(
        verify(&bundle, policy()),
        Err(Error::EncryptedPayloadRefused)
    );
    assert!(Error::EncryptedPayloadRefused
        .to_string()
        .starts_with("step 7k:"));
    // The same bundle passes for a device that decrypts and for tools.
    assert!(verify(
        &bundle,
        policy().with_encrypted_payload(EncryptedPayload::Ciphertext)
    )
    .is_ok());
    assert!(verify(&bundle, DevicePolicy::any_device()).is_ok());
}

#[test]
fn ciphertext_installed_without_decrypting_does_not_boot() {
    // A bootloader that copied the ciphertext into the active slot: step 9 over the
    // "installed image" compares the plaintext digest, and the ciphertext fails it.
    let bundle = release1();
    assert_eq!(
        verify(
            &bundle,
            policy().with_encrypted_payload(EncryptedPayload::Decrypted)
        ),
        Err(Error::DigestMismatch)
    );
    // So does a decrypted image with one byte changed.
    let mut image = Spec::default().payload;
    image[500] ^= 1;
    assert_eq!(
        verify(
            &installed(&bundle, &image),
            policy().with_encrypted_payload(EncryptedPayload::Decrypted)
        ),
        Err(Error::DigestMismatch)
    );
}

/// An attack on an encrypted release: a bundle and a key record, opened by device 7.
struct Attack {
    name: &'static str,
    /// The attacker's file: a `.bundle` or a `.wkey`.
    file: &'static str,
    build: fn() -> Vec<u8>,
    expect: Error,
}

fn mutate_record(edit: fn(&mut KeyRecord)) -> Vec<u8> {
    let bundle = release1();
    let mut r = KeyRecord::decode(&record(&bundle, &content_key(1), 7, 0x77)).unwrap();
    edit(&mut r);
    r.encode().to_vec()
}

fn attacks() -> Vec<Attack> {
    vec![
        Attack {
            name: "encrypted-key-record-for-another-device",
            file: "wkey",
            build: || record(&release1(), &content_key(1), 8, 0x78),
            expect: Error::KeyRecordForOtherDevice,
        },
        Attack {
            name: "encrypted-key-record-relabelled-for-this-device",
            file: "wkey",
            build: || {
                let mut r =
                    KeyRecord::decode(&record(&release1(), &content_key(1), 8, 0x78)).unwrap();
                r.recipient = device(7).id();
                r.encode().to_vec()
            },
            expect: Error::WrongContentKey,
        },
        Attack {
            name: "encrypted-key-record-for-another-release",
            file: "wkey",
            build: || record(&release2(), &content_key(2), 7, 0x79),
            expect: Error::KeyRecordForOtherRelease,
        },
        Attack {
            name: "encrypted-key-record-relabelled-for-this-release",
            file: "wkey",
            build: || {
                let mut r =
                    KeyRecord::decode(&record(&release2(), &content_key(2), 7, 0x79)).unwrap();
                r.release = release_of(&release1());
                r.encode().to_vec()
            },
            expect: Error::WrongContentKey,
        },
        Attack {
            name: "encrypted-forged-wrapped-key",
            file: "wkey",
            build: || mutate_record(|r| r.wrapped_key = [0x42; 32]),
            expect: Error::WrongContentKey,
        },
        Attack {
            name: "encrypted-small-order-ephemeral-key",
            file: "wkey",
            build: || {
                // u = 1 is a point of small order on Curve25519: every shared secret is 0.
                mutate_record(|r| {
                    r.ephemeral = [0; 32];
                    r.ephemeral[0] = 1;
                })
            },
            expect: Error::WeakKeyRecord,
        },
        Attack {
            name: "encrypted-truncated-key-record",
            file: "wkey",
            build: || record(&release1(), &content_key(1), 7, 0x77)[..100].to_vec(),
            expect: Error::Malformed(Document::KeyRecord),
        },
        Attack {
            name: "encrypted-ciphertext-swapped-between-releases",
            file: "bundle",
            build: || {
                // Release 1's signed envelope over release 2's ciphertext (same size).
                let mut b = release1();
                let offset = b.len() - 1000;
                b[offset..].copy_from_slice(&payload_of(&release2()));
                b
            },
            expect: Error::DigestMismatch,
        },
        Attack {
            name: "encrypted-truncated-ciphertext",
            file: "bundle",
            build: || {
                let b = release1();
                b[..b.len() - 1].to_vec()
            },
            expect: Error::Truncated,
        },
        Attack {
            name: "encrypted-raw-payload-at-format-version-2",
            file: "bundle",
            build: || {
                // A second encoding of a raw manifest: version 2 with variant 0.
                with_manifest_version(&bundle(&Spec::default()), 2)
            },
            expect: Error::NonCanonical(Document::Manifest),
        },
        Attack {
            name: "encrypted-payload-at-format-version-1",
            file: "bundle",
            build: || with_manifest_version(&release1(), 1),
            expect: Error::Malformed(Document::Manifest),
        },
    ]
}

#[test]
fn every_encrypted_attack_fixture_is_refused_with_its_error() {
    let golden_record = record(&release1(), &content_key(1), 7, 0x77);
    for attack in attacks() {
        let stored = check(
            "attacks",
            &format!("{}.{}", attack.name, attack.file),
            &(attack.build)(),
        );
        let got = match attack.file {
            "wkey" => open(&release1(), &stored, &device(7)).map(|_| ()),
            _ => open(&stored, &golden_record, &device(7)).map(|_| ()),
        };
        assert_eq!(got.unwrap_err(), attack.expect, "{}", attack.name);
        assert!(
            attack.expect.to_string().starts_with("step "),
            "{}",
            attack.name
        );
    }
}

#[test]
fn the_encrypted_attacks_are_attacks_of_a_valid_baseline() {
    let golden_record = record(&release1(), &content_key(1), 7, 0x77);
    assert!(open(&release1(), &golden_record, &device(7)).is_ok());
    let r2 = record(&release2(), &content_key(2), 7, 0x79);
    assert!(open(&release2(), &r2, &device(7)).is_ok());
    assert!(open(
        &release1(),
        &record(&release1(), &content_key(1), 8, 0x78),
        &device(8)
    )
    .is_ok());
}

#[test]
fn one_content_key_over_two_images_never_repeats_a_keystream() {
    // What the signer's content-key check prevents, the derivation also holds: the same CEK
    // over another image gives another payload key.
    let key = content_key(1);
    let a = encrypted::encrypted_spec(&Spec::default(), &key).0.payload;
    let other = Spec {
        payload: payload(1000, 9),
        ..Spec::default()
    };
    let b = encrypted::encrypted_spec(&other, &key).0.payload;
    let stream_a: Vec<u8> = a
        .iter()
        .zip(&Spec::default().payload)
        .map(|(c, p)| c ^ p)
        .collect();
    let stream_b: Vec<u8> = b.iter().zip(&other.payload).map(|(c, p)| c ^ p).collect();
    assert_ne!(stream_a, stream_b);
}

proptest! {
    /// Decrypting sector by sector from any split point, in any order, gives the image: what a
    /// resumable swap does after a cut.
    #[test]
    fn decryption_at_any_offset_and_chunking_restores_the_image(
        len in 1usize..5000,
        chunk in 1usize..700,
        start in 0usize..5000,
        salt in any::<u8>(),
    ) {
        let spec = Spec { payload: payload(len, salt), ..Spec::default() };
        let bundle = encrypted::bundle(&spec, &content_key(3));
        let rec = record(&bundle, &content_key(3), 7, 0x70);
        let mut cipher = open(&bundle, &rec, &device(7)).unwrap();
        let mut image = payload_of(&bundle);
        let start = start % len;
        // From `start` to the end, then the beginning: a swap resumed part-way.
        let mut offsets: Vec<usize> = (start..len).step_by(chunk).collect();
        offsets.extend((0..start).step_by(chunk));
        for &o in &offsets {
            let end = if o < start { (o + chunk).min(start) } else { (o + chunk).min(len) };
            cipher.apply(o as u64, &mut image[o..end]).unwrap();
        }
        prop_assert_eq!(&image, &spec.payload);
        let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
        prop_assert!(verified(&installed(&bundle, &image), EncryptedPayload::Decrypted, &mut buf).is_ok());
    }
}
