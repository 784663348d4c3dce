//! `sigil verify`: the format's one verification sequence over a bundle file, streamed.
//!
//! Nothing is checked here that `sigil_manifests::BundleVerifier` does not check: this module
//! builds the device policy from the command line, streams the file through the verifier and
//! reports the result.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use sigil_manifests::{BundleVerifier, DevicePolicy, TrustRoot, VerifiedBundle, VERIFY_BUFFER_LEN};

use crate::args::{IdentArg, ProductArg, SizeArg, TimeArg};
use crate::bundle_file::InvalidBundle;
use crate::exit::ExitCode;
use crate::files::FileError;
use crate::report;
use crate::root::{self, RootError};

/// Size of the chunks the bundle is read and fed in.
pub const CHUNK: usize = 1 << 20;

/// Arguments of `sigil verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle to verify (`-` reads it from standard input).
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,

    /// The trust root the device has.
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,

    /// Print the result as JSON on stdout (also on failure).
    #[arg(long)]
    pub json: bool,

    /// The device policy to apply.
    #[command(flatten, next_help_heading = "Device policy")]
    pub policy: PolicyArgs,
}

/// The device policy on the command line; every check is off unless given.
#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// Require this product (VENDOR/DEVICE).
    #[arg(long, value_name = "VENDOR/DEVICE")]
    pub product: Option<ProductArg>,

    /// Require this component / slot.
    #[arg(long, value_name = "NAME")]
    pub component: Option<IdentArg>,

    /// The device's stored minimum security counter (anti-rollback).
    #[arg(long, value_name = "N")]
    pub min_security_counter: Option<u32>,

    /// The device's stored minimum key set version (revoked key sets).
    #[arg(long, value_name = "N")]
    pub min_key_set_version: Option<u32>,

    /// The largest bundle the device's slot holds, e.g. 4M.
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<SizeArg>,

    /// Check expiry as of this trusted time (Unix seconds, RFC 3339, or `now`).
    #[arg(long, value_name = "TIME")]
    pub at: Option<TimeArg>,

    /// The device's bootloader version (checks the manifest's minimum).
    #[arg(long, value_name = "N")]
    pub bootloader_version: Option<u32>,
}

impl PolicyArgs {
    /// The verifier's policy.
    pub fn policy(&self) -> DevicePolicy<'_> {
        let mut p = DevicePolicy::any_device();
        if let Some(product) = &self.product {
            p = p.with_product(product.id());
        }
        if let Some(component) = &self.component {
            p = p.with_component(&component.0);
        }
        if let Some(n) = self.min_security_counter {
            p = p.with_min_security_counter(n);
        }
        if let Some(n) = self.min_key_set_version {
            p = p.with_min_key_set_version(n);
        }
        if let Some(n) = self.max_size {
            p = p.with_max_bundle_len(n.0);
        }
        if let Some(t) = self.at {
            p = p.with_trusted_time(t.0);
        }
        if let Some(n) = self.bootloader_version {
            p = p.with_bootloader_version(n);
        }
        p
    }
}

/// Errors of `sigil verify`.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The trust root could not be loaded.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The bundle could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The bundle failed verification.
    #[error(transparent)]
    Invalid(#[from] InvalidBundle),
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

impl VerifyError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            VerifyError::Invalid(b) => b.exit_code(),
            _ => ExitCode::Failure,
        }
    }
}

/// Streams `path` through the verifier.
pub fn verify_file<'a>(
    path: &Path,
    root: &'a TrustRoot,
    policy: DevicePolicy<'a>,
    envelope_buf: &'a mut [u8],
) -> Result<VerifiedBundle<'a>, VerifyError> {
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |source| InvalidBundle {
        path: path.to_owned(),
        source,
    };
    // `-` is standard input, so a download can be verified as it streams in.
    let mut file: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(read_err)?)
    };
    let mut verifier = BundleVerifier::new(root, policy, envelope_buf);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e).into()),
        };
        // The verifier stops at the first failure: a forged bundle is refused before its
        // payload is read.
        verifier.feed(&buf[..n]).map_err(invalid)?;
    }
    Ok(verifier.finish().map_err(invalid)?)
}

/// The error and its causes on one line, as `anyhow`'s `{:#}` prints them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Runs `sigil verify`.
pub fn run(args: &VerifyArgs, out: &mut dyn Write) -> Result<(), VerifyError> {
    let result = verify_and_report(args, out);
    if let (true, Err(e)) = (args.json, &result) {
        let code = e.exit_code();
        let value = json!({
            "valid": false,
            "path": args.bundle.display().to_string(),
            "exit_code": code as u8,
            "class": code.name(),
            "error": error_chain(e),
        });
        writeln!(out, "{value:#}").map_err(VerifyError::Output)?;
    }
    result
}

fn verify_and_report(args: &VerifyArgs, out: &mut dyn Write) -> Result<(), VerifyError> {
    let root = root::load(&args.root)?;
    let mut envelope_buf = vec![0u8; VERIFY_BUFFER_LEN];
    let verified = verify_file(&args.bundle, &root, args.policy.policy(), &mut envelope_buf)?;
    let m = verified.manifest();
    let written = if args.json {
        let value = json!({
            "valid": true,
            "path": args.bundle.display().to_string(),
            "bundle_size": verified.total_len(),
            "payload_offset": verified.payload_offset(),
            "key_set": report::key_set_json(verified.key_set()),
            "manifest": report::manifest_json(m),
        });
        writeln!(out, "{value:#}")
    } else {
        writeln!(
            out,
            "OK {}: {} {} {} (security counter {}, key set version {}, {} payload bytes)",
            args.bundle.display(),
            m.product,
            m.component,
            m.version,
            m.security_counter,
            verified.key_set_version(),
            m.payload_size
        )
    };
    written.map_err(VerifyError::Output)
}
