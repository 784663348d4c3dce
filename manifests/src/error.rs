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
        })
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
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signed::KeySet => "key set (root keys)",
            Signed::Manifest => "manifest (release keys)",
        })
    }
}

/// Everything that can be wrong with a trust root, key set, manifest or bundle.
///
/// Messages cite the step of `FORMAT.md` that failed, so a field report can be traced to the
/// check that produced it.
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
    /// A header field that must be zero, or padding that must be zero, is not.
    NonZeroPadding,
    /// The header declares a length outside the limits of the format.
    BadLength(Document),
    /// A length sum or offset overflowed.
    LengthOverflow,
    /// The bundle is longer than the slot the device can hold (`max_bundle_len`).
    BundleTooLarge,
    /// The caller's buffer cannot hold the envelope this bundle declares.
    BufferTooSmall,
    /// The header's payload offset is not the aligned end of the envelope.
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
    InvalidPublicKey,
    /// A public key has small order (would accept forged signatures).
    WeakPublicKey,
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
    /// characters outside `[A-Za-z0-9._+-]`.
    InvalidIdentifier,
    /// The payload alignment is not a power of two within the format's limits.
    InvalidAlignment,
    /// The stream ended before the whole bundle arrived.
    Truncated,
    /// More bytes arrived than the header and manifest declare.
    TrailingData,
    /// The payload's SHA-256 differs from the signed digest.
    DigestMismatch,
    /// A builder was asked to encode something that exceeds a format limit.
    TooLarge,
}

const _: () = assert!(size_of::<Error>() <= 4);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongTag(d) => write!(f, "not a Sigil {d} (wrong domain tag)"),
            Error::UnsupportedVersion(d, v) => write!(f, "{d} format version {v} is not supported"),
            Error::Malformed(d) => write!(f, "{d} is malformed"),
            Error::TrailingBytes(d) => write!(f, "{d} has trailing bytes"),
            Error::NonCanonical(d) => write!(f, "{d} is not canonically encoded"),
            Error::NonZeroPadding => f.write_str("step 8: padding or reserved bytes are not zero"),
            Error::BadLength(d) => write!(f, "step 1: {d} length is outside the format limits"),
            Error::LengthOverflow => f.write_str("step 1: bundle lengths overflow"),
            Error::BundleTooLarge => f.write_str("step 1: bundle is larger than the slot"),
            Error::BufferTooSmall => {
                f.write_str("step 1: envelope is larger than the verifier's buffer")
            }
            Error::BadPayloadOffset => {
                f.write_str("step 7: header payload offset is not the aligned end of the envelope")
            }
            Error::PayloadSizeMismatch => {
                f.write_str("step 7: header payload size differs from the signed size")
            }
            Error::InvalidThreshold(d) => write!(f, "{d} threshold is zero or above its key count"),
            Error::DuplicateKey(d) => write!(f, "{d} lists the same key twice"),
            Error::NoKeys(d) => write!(f, "{d} lists no keys"),
            Error::InvalidPublicKey => f.write_str("a public key is not a valid ed25519 point"),
            Error::WeakPublicKey => f.write_str("a public key has small order"),
            Error::UnknownSigner(s) => write!(
                f,
                "{} signature by a key that may not sign it",
                step_of(*s, s)
            ),
            Error::BadSignature(s) => write!(f, "{} signature does not verify", step_of(*s, s)),
            Error::ThresholdNotMet {
                what,
                found,
                required,
            } => write!(
                f,
                "{} signed by {found} distinct key(s), threshold is {required}",
                step_of(*what, what)
            ),
            Error::KeySetRolledBack => {
                f.write_str("step 5: key set version is below the device minimum (revoked)")
            }
            Error::OutOfKeySetScope => {
                f.write_str("step 7: key set is scoped to another product than the manifest")
            }
            Error::WrongProduct => f.write_str("step 7: manifest is for another product"),
            Error::WrongComponent => f.write_str("step 7: manifest targets another component"),
            Error::CounterRolledBack => {
                f.write_str("step 7: security counter is below the device minimum (rollback)")
            }
            Error::NotNewer => f.write_str("step 7: version is not newer than the running one"),
            Error::Expired => f.write_str("step 7: manifest has expired"),
            Error::BootloaderTooOld => f.write_str("step 7: bootloader is older than required"),
            Error::DependencyUnmet => {
                f.write_str("step 7: a required component is missing or too old")
            }
            Error::InvalidIdentifier => {
                f.write_str("an identifier is empty, too long or has invalid characters")
            }
            Error::InvalidAlignment => {
                f.write_str("payload alignment is not a power of two up to 1 MiB")
            }
            Error::Truncated => f.write_str("step 9: bundle is truncated"),
            Error::TrailingData => f.write_str("step 9: data continues past the end of the bundle"),
            Error::DigestMismatch => {
                f.write_str("step 9: payload digest does not match the manifest")
            }
            Error::TooLarge => f.write_str("value exceeds a format limit"),
        }
    }
}

fn step_of(s: Signed, what: &Signed) -> impl fmt::Display + '_ {
    struct Step<'a>(&'static str, &'a Signed);
    impl fmt::Display for Step<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}: {}", self.0, self.1)
        }
    }
    Step(
        match s {
            Signed::KeySet => "step 4",
            Signed::Manifest => "step 6",
        },
        what,
    )
}

impl core::error::Error for Error {}
