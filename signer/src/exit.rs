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

use std::path::PathBuf;

use sigil_manifests::Error;

/// A bundle failed verification (steps of FORMAT.md §6). Carries the path and the format
/// error; its [`ExitCode`] follows from the error.
#[derive(Debug, thiserror::Error)]
#[error("{} rejected", path.display())]
pub struct InvalidBundle {
    /// The bundle file.
    pub path: PathBuf,
    /// Why verification failed.
    #[source]
    pub source: Error,
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
        }
    }

    /// The class of a verification error.
    pub fn of_error(error: &Error) -> Self {
        match error {
            Error::UnknownSigner(_)
            | Error::BadSignature(_)
            | Error::ThresholdNotMet { .. }
            | Error::OutOfKeySetScope => ExitCode::Signature,
            Error::KeySetRolledBack
            | Error::WrongProduct
            | Error::WrongComponent
            | Error::CounterRolledBack
            | Error::NotNewer
            | Error::Expired
            | Error::BootloaderTooOld
            | Error::DependencyUnmet
            | Error::BundleTooLarge => ExitCode::Policy,
            Error::DigestMismatch => ExitCode::Digest,
            // Everything else is about the structure of the bytes. The enum is non-exhaustive:
            // a future variant is reported as malformed until it is classified here.
            _ => ExitCode::Malformed,
        }
    }

    /// The exit code for an error returned by [`crate::run`]: the class of a rejected
    /// bundle, otherwise [`ExitCode::Failure`].
    pub fn of(error: &anyhow::Error) -> Self {
        rejection(error).map_or(ExitCode::Failure, |b| ExitCode::of_error(&b.source))
    }
}

/// The rejected bundle behind an error of a subcommand, if that is what failed.
///
/// Module errors wrap [`InvalidBundle`] transparently (so it is printed once), which hides it
/// from `anyhow`'s source chain; each module error is asked instead.
pub fn rejection(error: &anyhow::Error) -> Option<&InvalidBundle> {
    use crate::bundle_file::PrefixError;
    use crate::inspect::InspectError;
    use crate::sign::SignError;
    use crate::verify::VerifyError;

    fn of_prefix(e: &PrefixError) -> Option<&InvalidBundle> {
        match e {
            PrefixError::Invalid(b) => Some(b),
            PrefixError::File(_) => None,
        }
    }
    fn of_verify(e: &VerifyError) -> Option<&InvalidBundle> {
        match e {
            VerifyError::Invalid(b) => Some(b),
            _ => None,
        }
    }
    if let Some(b) = error.downcast_ref::<InvalidBundle>() {
        return Some(b);
    }
    if let Some(e) = error.downcast_ref::<VerifyError>() {
        return of_verify(e);
    }
    if let Some(e) = error.downcast_ref::<SignError>() {
        return match e {
            SignError::Bundle(b) => Some(b),
            SignError::Prefix(p) => of_prefix(p),
            _ => None,
        };
    }
    if let Some(e) = error.downcast_ref::<InspectError>() {
        return match e {
            InspectError::Bundle(b) => Some(b),
            InspectError::Verify(v) => of_verify(v),
            _ => None,
        };
    }
    None
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_manifests::{Document, Signed};

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
        ];
        for (error, code) in cases {
            assert_eq!(ExitCode::of_error(&error), code, "{error}");
        }
    }

    #[test]
    fn only_rejected_bundles_get_a_verification_code() {
        let rejected = anyhow::Error::new(crate::verify::VerifyError::Invalid(InvalidBundle {
            path: "b.sgl".into(),
            source: Error::DigestMismatch,
        }));
        assert_eq!(ExitCode::of(&rejected), ExitCode::Digest);
        // A malformed trust root is the operator's input, not the bundle's fault.
        let root = anyhow::Error::new(crate::root::RootError::Decode {
            path: "root.sgl".into(),
            source: Error::Malformed(Document::TrustRoot),
        });
        assert_eq!(ExitCode::of(&root), ExitCode::Failure);
        assert_eq!(
            ExitCode::of(&anyhow::anyhow!("anything else")),
            ExitCode::Failure
        );
    }
}
