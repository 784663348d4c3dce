//! The one error type of the format: every malformed input and every failed check has a variant.

use core::fmt;

/// Which encoded structure an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Document {
    /// The fixed bundle header.
    Header,
    /// The signed envelope that follows the header.
    Envelope,
    /// A trust root file.
    TrustRoot,
    /// The signed bytes of a key set.
    KeySet,
    /// A key set file together with its root signatures.
    SignedKeySet,
    /// The signed bytes of a manifest.
    Manifest,
    /// A device's enrolled public key (FORMAT.md §8).
    DeviceKey,
    /// A root update: trust root N+1 with signatures by roots N and N+1 (FORMAT.md §4).
    RootUpdate,
    /// A root chain: the root updates a bundle or file carries (FORMAT.md §4).
    RootChain,
    /// A per-device key record of an encrypted release (`SGL-WKEY`, FORMAT.md §9).
    KeyRecord,
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Document::Header => "bundle header",
            Document::Envelope => "signed envelope",
            Document::TrustRoot => "trust root",
            Document::KeySet => "key set",
            Document::SignedKeySet => "signed key set",
            Document::Manifest => "manifest",
            Document::DeviceKey => "device key",
            Document::RootUpdate => "root update",
            Document::RootChain => "root chain",
            Document::KeyRecord => "key record",
        })
    }
}

impl Document {
    /// The step of FORMAT.md §6 (or §8) that decodes this document.
    fn decode_step(self) -> &'static str {
        match self {
            Document::TrustRoot => "step 0",
            Document::Header => "step 1",
            // The stand-alone key set file holds the envelope's first two fields (§4).
            Document::Envelope | Document::SignedKeySet => "step 2",
            Document::KeySet => "step 5a",
            Document::Manifest => "step 7a",
            Document::DeviceKey => "step E1",
            Document::RootChain | Document::RootUpdate => "step R1",
            Document::KeyRecord => "step D1",
        }
    }

    /// The step that checks this document's keys, threshold and other field ranges.
    fn field_step(self) -> &'static str {
        match self {
            Document::KeySet => "step 5b",
            other => other.decode_step(),
        }
    }
}

/// Which signature threshold an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signed {
    /// Root keys signing a key set.
    KeySet,
    /// Release keys signing a manifest.
    Manifest,
    /// Root N's keys signing root N+1 (the retiring root vouches for its successor).
    RootUpdateByPrevious,
    /// Root N+1's keys signing root N+1 (the new root's holders accept it).
    RootUpdateByNew,
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signed::KeySet => "key set (root keys)",
            Signed::Manifest => "manifest (release keys)",
            Signed::RootUpdateByPrevious => "root update (previous root's keys)",
            Signed::RootUpdateByNew => "root update (new root's keys)",
        })
    }
}

/// Everything that can be wrong with a trust root, key set, manifest or bundle.
///
/// Every message starts with the step of `FORMAT.md` that failed (`step 0` to `step 9` of §6,
/// `step E1` of §8, `step D1` to `step D5` of §9), so a field report can be traced to the check that produced it; a test
/// enumerates the variants and holds each to that.
///
/// The type is at most 4 bytes (checked below): every stage of the verifier returns it, and at
/// that size a `Result` travels in registers instead of memory, which keeps about 1.2 KiB of
/// code out of the bootloader. So variants carry no 32-bit values; a caller that wants to
/// print one (a stored minimum, say) has it from its own inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The data does not start with the domain-separation tag of the expected document.
    WrongTag(Document),
    /// The document declares a format version this build does not understand.
    UnsupportedVersion(Document, u16),
    /// The bytes do not decode as the expected document (bad varint, bad enum tag, bad UTF-8,
    /// too many list entries, or the data ends inside a field).
    Malformed(Document),
    /// Bytes follow the end of a document that must stand alone.
    TrailingBytes(Document),
    /// The document decodes but is not in canonical encoding (it would re-encode differently).
    NonCanonical(Document),
    /// The header's reserved bytes are not zero (step 1).
    NonZeroReserved,
    /// The padding between the envelope and the payload is not zero (step 8).
    NonZeroPadding,
    /// A length outside the limits of the format: the header length or envelope length
    /// (step 1), or a zero payload size (step 7a).
    BadLength(Document),
    /// A length sum or offset overflowed.
    LengthOverflow,
    /// The bundle is longer than the slot the device can hold (`max_bundle_len`).
    BundleTooLarge,
    /// The caller's buffer cannot hold the envelope this bundle declares.
    BufferTooSmall,
    /// The header's payload offset lies inside the envelope, or 1 MiB or more past its end
    /// (step 1).
    PayloadOffsetOutOfRange,
    /// The header's payload offset is not the aligned end of the envelope (step 7b).
    BadPayloadOffset,
    /// The header's payload size differs from the signed payload size.
    PayloadSizeMismatch,
    /// A threshold is zero or larger than the number of keys.
    InvalidThreshold(Document),
    /// A list of keys names the same key twice.
    DuplicateKey(Document),
    /// A list holds no keys.
    NoKeys(Document),
    /// Bytes that should be an ed25519 public key are not a valid curve point.
    InvalidPublicKey(Document),
    /// A public key is a curve point in a non-canonical encoding (y not reduced, or the sign
    /// bit set on x = 0): two encodings of one point must never pass as two keys.
    NonCanonicalKey(Document),
    /// A public key has small order (would accept forged signatures).
    WeakPublicKey(Document),
    /// A public key is not in the prime-order subgroup (it has a torsion component): `A` and
    /// `A` plus a point of small order would pass as two keys that one secret signs for.
    KeyOutsideSubgroup(Document),
    /// A signature names a key id that is not among the keys allowed to sign.
    UnknownSigner(Signed),
    /// A signature by an allowed key does not verify (strict ed25519).
    BadSignature(Signed),
    /// Fewer distinct allowed keys signed than the threshold requires.
    ThresholdNotMet {
        /// What was signed.
        what: Signed,
        /// Distinct valid signatures found.
        found: u8,
        /// Distinct valid signatures required.
        required: u8,
    },
    /// The key set version is below the device's stored minimum (a revoked key set).
    ///
    /// Like every variant, it carries no 32-bit values: see [`Error`]. The minimum is the
    /// caller's own policy input, and the bundle's key set version is in its envelope.
    KeySetRolledBack,
    /// The key set names another trust root version than the one it is verified under
    /// (step 5d): signed under a retired root, or a version 1 key set after a rotation.
    KeySetRootMismatch,
    /// A root update's version is not exactly one above the root before it (step R3), or the
    /// updates of a chain are not consecutive (step R1).
    RootVersionSkipped,
    /// The chain's root at the device's root version is not the root the device adopted
    /// (step R2): the same version signed again, with other keys.
    RootMismatch,
    /// The chain does not reach the device's root: it holds no update at the device's root
    /// version, or starts above the next one (step R2).
    RootChainGap,
    /// The newest root the bundle reaches is older than the device's root (step R2): signed
    /// under a root the device has moved on from.
    RootRolledBack,
    /// A root chain holds more updates than one boot applies (step R1).
    RootChainTooLong,
    /// The key set is scoped to another product than the manifest names.
    OutOfKeySetScope,
    /// The manifest names another product than the device.
    WrongProduct,
    /// The manifest targets another component / slot than the device asked for.
    WrongComponent,
    /// The security counter is below the device's stored minimum (rollback). The minimum is
    /// the caller's own policy input, and the bundle's counter is in its manifest.
    CounterRolledBack,
    /// The version is not newer than the one the device runs.
    NotNewer,
    /// The manifest expired before the device's trusted time.
    Expired,
    /// The device's bootloader is older than the manifest requires.
    BootloaderTooOld,
    /// A component the manifest depends on is missing or too old on the device.
    DependencyUnmet,
    /// An identifier (vendor, device, component, pre-release) is empty, too long or uses
    /// characters outside `[A-Za-z0-9._+-]`, in the document named.
    InvalidIdentifier(Document),
    /// The payload alignment is not a power of two within the format's limits.
    InvalidAlignment,
    /// The stream ended before the whole bundle arrived.
    Truncated,
    /// More bytes arrived than the header and manifest declare.
    TrailingData,
    /// The payload's SHA-256 differs from the signed digest.
    DigestMismatch,
    /// Something exceeds a limit of the format (§1) in the document named: more than 8 keys
    /// or signatures, more than 4 dependencies, an envelope over 4096 bytes. Builders return
    /// it; so does the verifier for a trust root or key set built by hand past the limits.
    TooLarge(Document),
    /// The payload is encrypted and the consumer does not accept encrypted payloads
    /// (step 7k): a device that cannot decrypt refuses the release instead of installing
    /// ciphertext.
    EncryptedPayloadRefused,
    /// A key record was opened for a release whose payload is not encrypted (step D2).
    NotEncrypted,
    /// The key record is addressed to another device's key (step D2).
    KeyRecordForOtherDevice,
    /// The key record belongs to another release (step D2).
    KeyRecordForOtherRelease,
    /// The key record's ephemeral key gives an all-zero X25519 shared secret (a small-order
    /// point, step D3).
    WeakKeyRecord,
    /// The content key unwrapped from the key record (or read from a content-key file) does
    /// not match the manifest's key commitment (step D4): a wrong device key or a forged or
    /// foreign record. Nothing has been written.
    WrongContentKey,
    /// The payload is longer than the cipher's keystream (step D5: 256 GiB for ChaCha20).
    PayloadTooLongForCipher,
    /// A keystream transform reaches outside the payload (step D5).
    OutsidePayload,
}

const _: () = assert!(size_of::<Error>() <= 4);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::WrongTag(d) => {
                write!(f, "{}: not a Sigil {d} (wrong domain tag)", d.decode_step())
            }
            Error::UnsupportedVersion(d, v) => write!(
                f,
                "{}: {d} format version {v} is not supported",
                d.decode_step()
            ),
            Error::Malformed(d) => write!(f, "{}: {d} is malformed", d.decode_step()),
            Error::TrailingBytes(d) => write!(f, "{}: {d} has trailing bytes", d.decode_step()),
            Error::NonCanonical(d) => {
                write!(f, "{}: {d} is not canonically encoded", d.decode_step())
            }
            Error::NonZeroReserved => f.write_str("step 1: reserved header bytes are not zero"),
            Error::NonZeroPadding => f.write_str("step 8: padding bytes are not zero"),
            Error::BadLength(Document::Manifest) => {
                f.write_str("step 7a: manifest payload size is zero")
            }
            Error::BadLength(d) => write!(f, "step 1: {d} length is outside the format limits"),
            Error::LengthOverflow => f.write_str("step 1: bundle lengths overflow"),
            Error::BundleTooLarge => f.write_str("step 1: bundle is larger than the slot"),
            Error::BufferTooSmall => {
                f.write_str("step 1: envelope is larger than the verifier's buffer")
            }
            Error::PayloadOffsetOutOfRange => f.write_str(
                "step 1: header payload offset is inside the envelope or 1 MiB or more past it",
            ),
            Error::BadPayloadOffset => {
                f.write_str("step 7b: header payload offset is not the aligned end of the envelope")
            }
            Error::PayloadSizeMismatch => {
                f.write_str("step 7b: header payload size differs from the signed size")
            }
            Error::InvalidThreshold(d) => write!(
                f,
                "{}: {d} threshold is zero or above its key count",
                d.field_step()
            ),
            Error::DuplicateKey(d) => write!(f, "{}: {d} lists the same key twice", d.field_step()),
            Error::NoKeys(d) => write!(f, "{}: {d} lists no keys", d.field_step()),
            Error::InvalidPublicKey(d) => write!(
                f,
                "{}: a {d} public key is not a valid ed25519 point",
                d.field_step()
            ),
            Error::NonCanonicalKey(d) => write!(
                f,
                "{}: a {d} public key is not in canonical encoding",
                d.field_step()
            ),
            Error::WeakPublicKey(d) => {
                write!(f, "{}: a {d} public key has small order", d.field_step())
            }
            Error::KeyOutsideSubgroup(d) => write!(
                f,
                "{}: a {d} public key is not in the prime-order subgroup (it has a torsion \
                 component)",
                d.field_step()
            ),
            Error::UnknownSigner(s) => write!(
                f,
                "{}: {s} signature by a key that may not sign it",
                s.step()
            ),
            Error::BadSignature(s) => write!(f, "{}: {s} signature does not verify", s.step()),
            Error::ThresholdNotMet {
                what,
                found,
                required,
            } => write!(
                f,
                "{}: {what} signed by {found} distinct key(s), threshold is {required}",
                what.step()
            ),
            Error::KeySetRolledBack => {
                f.write_str("step 5c: key set version is below the device minimum (revoked)")
            }
            Error::KeySetRootMismatch => f.write_str(
                "step 5d: key set names another trust root version than the device's current root",
            ),
            Error::RootVersionSkipped => {
                f.write_str("step R3: root update version is not exactly one above the root before it")
            }
            Error::RootMismatch => f.write_str(
                "step R2: the chain's root at the device's root version is not the root the device holds",
            ),
            Error::RootChainGap => {
                f.write_str("step R2: root chain does not reach the device's current root")
            }
            Error::RootRolledBack => f.write_str(
                "step R2: bundle's newest root is older than the device's root (rolled back)",
            ),
            Error::RootChainTooLong => {
                f.write_str("step R1: root chain holds more updates than one boot applies (8)")
            }
            Error::OutOfKeySetScope => {
                f.write_str("step 7c: key set is scoped to another product than the manifest")
            }
            Error::WrongProduct => f.write_str("step 7d: manifest is for another product"),
            Error::WrongComponent => f.write_str("step 7e: manifest targets another component"),
            Error::CounterRolledBack => {
                f.write_str("step 7f: security counter is below the device minimum (rollback)")
            }
            Error::NotNewer => f.write_str("step 7g: version is not newer than the running one"),
            Error::Expired => f.write_str("step 7h: manifest has expired"),
            Error::BootloaderTooOld => f.write_str("step 7i: bootloader is older than required"),
            Error::DependencyUnmet => {
                f.write_str("step 7j: a required component is missing or too old")
            }
            Error::InvalidIdentifier(d) => write!(
                f,
                "{}: a {d} identifier or version is empty, too long or has invalid characters",
                d.field_step()
            ),
            Error::InvalidAlignment => {
                f.write_str("step 7a: payload alignment is not a power of two up to 1 MiB")
            }
            Error::Truncated => {
                f.write_str("step 9: bundle is truncated (the data ends before the bundle does)")
            }
            Error::TrailingData => f.write_str("step 9: data continues past the end of the bundle"),
            Error::DigestMismatch => {
                f.write_str("step 9: payload digest does not match the manifest")
            }
            Error::TooLarge(d) => write!(
                f,
                "{}: {d} exceeds a format limit (8 keys or signatures, 4 dependencies, a \
                 4096-byte envelope)",
                d.field_step()
            ),
            Error::EncryptedPayloadRefused => {
                f.write_str("step 7k: payload is encrypted and this verifier does not decrypt")
            }
            Error::NotEncrypted => f.write_str("step D2: the release's payload is not encrypted"),
            Error::KeyRecordForOtherDevice => {
                f.write_str("step D2: key record is addressed to another device key")
            }
            Error::KeyRecordForOtherRelease => {
                f.write_str("step D2: key record belongs to another release")
            }
            Error::WeakKeyRecord => f.write_str(
                "step D3: the X25519 shared secret is all zero (a small-order key)",
            ),
            Error::WrongContentKey => f.write_str(
                "step D4: content key does not match the manifest's key commitment (wrong \
                 device key, or a forged or foreign key record)",
            ),
            Error::PayloadTooLongForCipher => {
                f.write_str("step D5: payload is longer than the cipher's keystream")
            }
            Error::OutsidePayload => {
                f.write_str("step D5: keystream transform reaches outside the payload")
            }
        }
    }
}

impl Signed {
    /// The step of FORMAT.md §6 that checks these signatures.
    fn step(self) -> &'static str {
        match self {
            Signed::KeySet => "step 4",
            Signed::Manifest => "step 6",
            Signed::RootUpdateByPrevious | Signed::RootUpdateByNew => "step R3",
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::*;

    const DOCUMENTS: [Document; 10] = [
        Document::Header,
        Document::Envelope,
        Document::TrustRoot,
        Document::KeySet,
        Document::SignedKeySet,
        Document::Manifest,
        Document::DeviceKey,
        Document::RootUpdate,
        Document::RootChain,
        Document::KeyRecord,
    ];

    /// Every variant with every field value that changes its message.
    fn every_error() -> Vec<Error> {
        let mut all = Vec::new();
        for d in DOCUMENTS {
            all.extend([
                Error::WrongTag(d),
                Error::UnsupportedVersion(d, 2),
                Error::Malformed(d),
                Error::TrailingBytes(d),
                Error::NonCanonical(d),
                Error::BadLength(d),
                Error::InvalidThreshold(d),
                Error::DuplicateKey(d),
                Error::NoKeys(d),
                Error::InvalidPublicKey(d),
                Error::NonCanonicalKey(d),
                Error::WeakPublicKey(d),
                Error::KeyOutsideSubgroup(d),
                Error::InvalidIdentifier(d),
                Error::TooLarge(d),
            ]);
        }
        for s in [
            Signed::KeySet,
            Signed::Manifest,
            Signed::RootUpdateByPrevious,
            Signed::RootUpdateByNew,
        ] {
            all.extend([
                Error::UnknownSigner(s),
                Error::BadSignature(s),
                Error::ThresholdNotMet {
                    what: s,
                    found: 1,
                    required: 2,
                },
            ]);
        }
        all.extend([
            Error::NonZeroReserved,
            Error::NonZeroPadding,
            Error::LengthOverflow,
            Error::BundleTooLarge,
            Error::BufferTooSmall,
            Error::PayloadOffsetOutOfRange,
            Error::BadPayloadOffset,
            Error::PayloadSizeMismatch,
            Error::KeySetRolledBack,
            Error::KeySetRootMismatch,
            Error::RootVersionSkipped,
            Error::RootMismatch,
            Error::RootChainGap,
            Error::RootRolledBack,
            Error::RootChainTooLong,
            Error::OutOfKeySetScope,
            Error::WrongProduct,
            Error::WrongComponent,
            Error::CounterRolledBack,
            Error::NotNewer,
            Error::Expired,
            Error::BootloaderTooOld,
            Error::DependencyUnmet,
            Error::InvalidAlignment,
            Error::Truncated,
            Error::TrailingData,
            Error::DigestMismatch,
            Error::EncryptedPayloadRefused,
            Error::NotEncrypted,
            Error::KeyRecordForOtherDevice,
            Error::KeyRecordForOtherRelease,
            Error::WeakKeyRecord,
            Error::WrongContentKey,
            Error::PayloadTooLongForCipher,
            Error::OutsidePayload,
        ]);
        for e in &all {
            listed(*e);
        }
        all
    }

    /// No wildcard: a new variant does not compile until it is added to `every_error`.
    fn listed(e: Error) {
        match e {
            Error::WrongTag(_)
            | Error::UnsupportedVersion(..)
            | Error::Malformed(_)
            | Error::TrailingBytes(_)
            | Error::NonCanonical(_)
            | Error::NonZeroReserved
            | Error::NonZeroPadding
            | Error::BadLength(_)
            | Error::LengthOverflow
            | Error::BundleTooLarge
            | Error::BufferTooSmall
            | Error::PayloadOffsetOutOfRange
            | Error::BadPayloadOffset
            | Error::PayloadSizeMismatch
            | Error::InvalidThreshold(_)
            | Error::DuplicateKey(_)
            | Error::NoKeys(_)
            | Error::InvalidPublicKey(_)
            | Error::NonCanonicalKey(_)
            | Error::WeakPublicKey(_)
            | Error::KeyOutsideSubgroup(_)
            | Error::UnknownSigner(_)
            | Error::BadSignature(_)
            | Error::ThresholdNotMet { .. }
            | Error::KeySetRolledBack
            | Error::KeySetRootMismatch
            | Error::RootVersionSkipped
            | Error::RootMismatch
            | Error::RootChainGap
            | Error::RootRolledBack
            | Error::RootChainTooLong
            | Error::OutOfKeySetScope
            | Error::WrongProduct
            | Error::WrongComponent
            | Error::CounterRolledBack
            | Error::NotNewer
            | Error::Expired
            | Error::BootloaderTooOld
            | Error::DependencyUnmet
            | Error::InvalidIdentifier(_)
            | Error::InvalidAlignment
            | Error::Truncated
            | Error::TrailingData
            | Error::DigestMismatch
            | Error::TooLarge(_)
            | Error::EncryptedPayloadRefused
            | Error::NotEncrypted
            | Error::KeyRecordForOtherDevice
            | Error::KeyRecordForOtherRelease
            | Error::WeakKeyRecord
            | Error::WrongContentKey
            | Error::PayloadTooLongForCipher
            | Error::OutsidePayload => {}
        }
    }

    /// The steps FORMAT.md defines: `0.`–`9.` of §6 with their lettered parts `(a)`…, and
    /// `E1` of §8.
    fn defined_steps() -> Vec<String> {
        let format = include_str!("../FORMAT.md");
        let mut steps = Vec::new();
        let mut current = None;
        for line in format.lines() {
            let trimmed = line.trim_start();
            if let Some((n, _)) = trimmed.split_once(". **") {
                let root_step = n.len() == 2 && n.starts_with('R');
                if root_step || (n.len() == 1 && n.as_bytes()[0].is_ascii_digit()) {
                    current = Some(n.to_string());
                    steps.push(n.to_string());
                }
            }
            if let Some(n) = &current {
                for part in line.split('(').skip(1) {
                    if let Some((letter, _)) = part.split_once(')') {
                        if letter.len() == 1 && letter.as_bytes()[0].is_ascii_lowercase() {
                            steps.push(std::format!("{n}{letter}"));
                        }
                    }
                }
            }
            if line.starts_with("## 7.") {
                current = None;
            }
            // §8 and §9 define their steps as `**Step E1.**`, `**Step D1.**`, ….
            for part in line.split("**Step ").skip(1) {
                if let Some((step, _)) = part.split_once(".**") {
                    steps.push(step.to_string());
                }
            }
        }
        steps
    }

    #[test]
    fn format_md_defines_the_steps_this_test_reads() {
        let steps = defined_steps();
        for s in [
            "0", "1", "2", "R1", "R2", "R3", "4", "5a", "5b", "5c", "5d", "6", "7a", "7j", "8",
            "9", "E1", "7k", "D1", "D2", "D3", "D4", "D5",
        ] {
            assert!(steps.iter().any(|d| d == s), "{s} not in {steps:?}");
        }
    }

    #[test]
    fn every_message_starts_with_a_step_that_format_md_defines() {
        let steps = defined_steps();
        let all = every_error();
        assert!(all.len() > 120, "{}", all.len());
        for e in all {
            let message = e.to_string();
            let cited = message
                .strip_prefix("step ")
                .and_then(|rest| rest.split_once(':'))
                .map(|(step, _)| step)
                .unwrap_or_else(|| panic!("{e:?}: {message:?} does not start with a step"));
            assert!(
                steps.iter().any(|s| s == cited),
                "{e:?}: {message:?} cites step {cited}, which FORMAT.md does not define"
            );
        }
    }

    #[test]
    fn checks_cite_the_step_that_performs_them() {
        let cases = [
            (Error::NonZeroReserved, "step 1:"),
            (Error::NonZeroPadding, "step 8:"),
            (Error::PayloadOffsetOutOfRange, "step 1:"),
            (Error::BadPayloadOffset, "step 7b:"),
            (Error::BadLength(Document::Manifest), "step 7a:"),
            (Error::BadLength(Document::Envelope), "step 1:"),
            (Error::Malformed(Document::Envelope), "step 2:"),
            (Error::Malformed(Document::TrustRoot), "step 0:"),
            (Error::Malformed(Document::KeySet), "step 5a:"),
            (Error::DuplicateKey(Document::KeySet), "step 5b:"),
            (Error::KeyOutsideSubgroup(Document::TrustRoot), "step 0:"),
            (Error::KeyOutsideSubgroup(Document::DeviceKey), "step E1:"),
            (Error::UnknownSigner(Signed::KeySet), "step 4:"),
            (Error::BadSignature(Signed::Manifest), "step 6:"),
            (Error::CounterRolledBack, "step 7f:"),
            (Error::Malformed(Document::RootUpdate), "step R1:"),
            (
                Error::ThresholdNotMet {
                    what: Signed::RootUpdateByNew,
                    found: 0,
                    required: 1,
                },
                "step R3:",
            ),
            (Error::KeySetRootMismatch, "step 5d:"),
            (Error::Malformed(Document::KeyRecord), "step D1:"),
            (Error::EncryptedPayloadRefused, "step 7k:"),
            (Error::WrongContentKey, "step D4:"),
        ];
        for (e, step) in cases {
            assert!(e.to_string().starts_with(step), "{e}");
        }
    }
}
