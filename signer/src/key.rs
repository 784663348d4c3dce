//! `sigil key export`: the public half of a private key, as the SPKI PEM `keygen` writes.
//!
//! For a key in a PKCS#11 token this is how its public key reaches `root init` and
//! `keyset create`: the token signs a fixed challenge first, and the signature is checked
//! against the exported key, so the file holds the public key of the private key that will
//! sign (not merely of an object with the same label).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use sigil_manifests::PublicKey;

use crate::exit::ExitCode;
use crate::files::{self, FileError, Overwrite};
use crate::hsm::Hsm;
use crate::key_source::{KeySourceError, KeySpec, Pkcs11Args, SignerKey};
use crate::keyfile::{self, KeyError};

/// What the token signs to prove it holds the private half of the exported key.
const PROOF_MESSAGE: &[u8] = b"sigil key export: proof of possession";

/// `sigil key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write the public key of a private key (PEM file or pkcs11: URI) as SPKI PEM.
    ///
    /// The output is the file `sigil keygen` writes beside a private key, so it goes to
    /// `sigil root init` and `sigil keyset create` as is. For an HSM key the token signs a
    /// challenge first and the signature is checked against the exported key.
    Export(KeyExportArgs),
}

/// Arguments of `sigil key export`.
#[derive(Debug, Args)]
pub struct KeyExportArgs {
    /// The private key: a PKCS#8 PEM file or a pkcs11: URI.
    #[arg(value_name = "KEY")]
    pub key: KeySpec,

    /// Where to write the public key (SPKI PEM).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,

    /// How PKCS#11 keys are reached.
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
}

/// Errors of `sigil key`.
#[derive(Debug, thiserror::Error)]
pub enum KeyCommandError {
    /// The key could not be loaded, or the token failed.
    #[error(transparent)]
    Key(#[from] KeySourceError),
    /// Encoding the public key failed.
    #[error(transparent)]
    Encode(#[from] KeyError),
    /// Writing the public key failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl KeyCommandError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        // Bad input documents, keys or files: operational errors, never a verdict on a bundle.
        ExitCode::Failure
    }
}

/// Runs a `sigil key` subcommand.
pub fn run(command: &KeyCommand, out: &mut dyn Write) -> Result<(), KeyCommandError> {
    match command {
        KeyCommand::Export(args) => export(args, out),
    }
}

fn export(args: &KeyExportArgs, out: &mut dyn Write) -> Result<(), KeyCommandError> {
    let mut hsm = Hsm::new();
    let key = args.pkcs11.open(&args.key, &mut hsm)?;
    if let SignerKey::Pkcs11(_) = key {
        // `sign` verifies what the token returns against the public key object.
        key.sign(PROOF_MESSAGE)?;
    }
    write_public_key(
        &args.out,
        &key.public_key(),
        Overwrite::from_force(args.force),
    )?;
    writeln!(out, "public key: {}", args.out.display())
        .and_then(|()| {
            writeln!(
                out,
                "key id:     {}",
                keyfile::key_id_hex(&key.public_key())
            )
        })
        .map_err(KeyCommandError::Output)
}

/// Writes a public key as SPKI PEM (mode 0644), atomically.
pub fn write_public_key(
    path: &Path,
    key: &PublicKey,
    overwrite: Overwrite,
) -> Result<(), KeyCommandError> {
    let verifying = VerifyingKey::from_bytes(key)
        .map_err(|e| KeyError::Encode(format!("not an Ed25519 point: {e}")))?;
    let pem = keyfile::public_key_pem(&verifying)?;
    files::write_atomic(path, pem.as_bytes(), overwrite, files::PUBLIC_MODE)?;
    Ok(())
}
