//! Exit codes of `sigil`, one per class of failure, so scripts can tell a forged bundle from a
//! missing file.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `verify`, the bundle is valid under the trust root and policy |
//! | 1 | operational error: a file cannot be read or written, an output exists, a key or document given as input is wrong |
//! | 2 | usage error: invalid command line (clap) |
//! | 3 | the bundle is malformed: not a bundle, bad header or envelope, truncated, trailing data |
//! | 4 | signatures: unknown signer, bad signature, threshold not met, key set out of scope |
//! | 5 | device policy: wrong product or component, security counter or key set version below the minimum, too large, expired, dependencies |
//! | 6 | the payload does not match its signed SHA-256 digest |
//! | 7 | decryption: a key record for another device or release, malformed, or yielding a content key the manifest's key commitment refuses |

//!
//! Each command's error type knows its own code (`exit_code()`), and [`crate::run`] builds the
//! [`Failure`] at dispatch, so this module depends on no command: it is a leaf every command
//! may use.

use sigil_manifests::{Document, Error};

/// A failed command: the error to print and the exit code it maps to, built at dispatch.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: ExitCode,
    /// The error, printed with its chain.
    pub error: anyhow::Error,
}

impl std::fmt::Display for Failure {
    /// The error and its causes on one line, as `sigil` prints them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl Failure {
    /// A failure of `error` with the code `code`.
    pub fn new<E>(code: ExitCode, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Failure {
            code,
            error: anyhow::Error::new(error),
        }
    }
}

/// The process exit codes (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Operational error (I/O, existing output, bad input document or key).
    Failure = 1,
    /// Invalid command line.
    Usage = 2,
    /// The bundle is malformed.
    Malformed = 3,
    /// Signatures or thresholds do not hold.
    Signature = 4,
    /// The device policy rejects the bundle.
    Policy = 5,
    /// The payload digest does not match.
    Digest = 6,
    /// An encrypted release cannot be opened with the key record and device key given.
    Decryption = 7,
}

impl ExitCode {
    /// A short name of the class, used in `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            ExitCode::Ok => "ok",
            ExitCode::Failure => "failure",
            ExitCode::Usage => "usage",
            ExitCode::Malformed => "malformed",
            ExitCode::Signature => "signature",
            ExitCode::Policy => "policy",
            ExitCode::Digest => "digest",
            ExitCode::Decryption => "decryption",
        }
    }

    /// The class of a verification error.
    pub fn of_error(error: &Error) -> Self {
        match error {
            Error::UnknownSigner(_)
            | Error::BadSignature(_)
            | Error::ThresholdNotMet { .. }
            | Error::OutOfKeySetScope
            | Error::KeySetRootMismatch
            | Error::RootVersionSkipped => ExitCode::Signature,
            Error::KeySetRolledBack
            | Error::RootRolledBack
            | Error::RootMismatch
            | Error::RootChainGap
            | Error::WrongProduct
            | Error::WrongComponent
            | Error::CounterRolledBack
            | Error::NotNewer
            | Error::Expired
            | Error::BootloaderTooOld
            | Error::DependencyUnmet
            | Error::BundleTooLarge
            | Error::EncryptedPayloadRefused => ExitCode::Policy,
            Error::NotEncrypted
            | Error::KeyRecordForOtherDevice
            | Error::KeyRecordForOtherRelease
            | Error::WeakKeyRecord
            | Error::WrongContentKey
            | Error::PayloadTooLongForCipher
            | Error::OutsidePayload
            | Error::WrongTag(Document::KeyRecord)
            | Error::UnsupportedVersion(Document::KeyRecord, _)
            | Error::Malformed(Document::KeyRecord)
            | Error::TrailingBytes(Document::KeyRecord) => ExitCode::Decryption,
            Error::DigestMismatch => ExitCode::Digest,
            // Everything else is about the structure of the bytes. The enum is non-exhaustive:
            // a future variant is reported as malformed until it is classified here.
            _ => ExitCode::Malformed,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_manifests::Signed;

    #[test]
    fn each_failure_class_has_its_code() {
        let cases = [
            (Error::Truncated, ExitCode::Malformed),
            (Error::TrailingData, ExitCode::Malformed),
            (Error::WrongTag(Document::Header), ExitCode::Malformed),
            (Error::NonCanonical(Document::Manifest), ExitCode::Malformed),
            (Error::BadSignature(Signed::Manifest), ExitCode::Signature),
            (Error::UnknownSigner(Signed::KeySet), ExitCode::Signature),
            (
                Error::ThresholdNotMet {
                    what: Signed::KeySet,
                    found: 1,
                    required: 2,
                },
                ExitCode::Signature,
            ),
            (Error::OutOfKeySetScope, ExitCode::Signature),
            (Error::WrongProduct, ExitCode::Policy),
            (Error::CounterRolledBack, ExitCode::Policy),
            (Error::KeySetRolledBack, ExitCode::Policy),
            (Error::BundleTooLarge, ExitCode::Policy),
            (Error::Expired, ExitCode::Policy),
            (Error::DigestMismatch, ExitCode::Digest),
            (Error::EncryptedPayloadRefused, ExitCode::Policy),
            (Error::WrongContentKey, ExitCode::Decryption),
            (Error::KeyRecordForOtherDevice, ExitCode::Decryption),
            (Error::Malformed(Document::KeyRecord), ExitCode::Decryption),
        ];
        for (error, code) in cases {
            assert_eq!(ExitCode::of_error(&error), code, "{error}");
        }
    }
}
