//! `sigil keygen`: a new ed25519 key pair.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use ed25519_dalek::SigningKey;
use rand_core::OsRng;

use crate::exit::ExitCode;
use crate::files::{self, FileError, Overwrite};
use crate::hsm::{Hsm, HsmError};
use crate::key::{self, KeyCommandError};
use crate::key_source::Pkcs11Args;
use crate::keyfile::{self, KeyError};
use crate::pkcs11_uri::Pkcs11Uri;

/// Arguments of `sigil keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600). Never overwritten.
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "pkcs11",
        conflicts_with = "pkcs11"
    )]
    pub out: Option<PathBuf>,

    /// Where to write the public key (SPKI PEM) [default: FILE with `.pem` replaced by
    /// `.pub.pem`, or FILE + `.pub`]. Never overwritten.
    #[arg(long, value_name = "FILE")]
    pub public_out: Option<PathBuf>,

    /// Generate the key pair inside a PKCS#11 token instead, e.g.
    /// 'pkcs11:token=release;object=release-1': object= labels the new key (id= is optional).
    /// The private key never leaves the token (sensitive, not extractable); only the public
    /// key is written, to --public-out.
    #[arg(long, value_name = "URI", requires = "public_out")]
    pub pkcs11: Option<Pkcs11Uri>,

    /// Generate an X25519 device encryption key pair instead (RFC 8410 PEM, OID 1.3.101.110,
    /// as `openssl genpkey -algorithm x25519` writes): the private key goes into the device's
    /// protected storage, the public key to the release engineer (`sigil sign --encrypt-to`).
    #[arg(long, conflicts_with = "pkcs11")]
    pub x25519: bool,

    /// How the token is reached (module, PIN) when the URI does not say.
    #[command(flatten)]
    pub pkcs11_options: Pkcs11Args,
}

/// Errors of `sigil keygen`.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// Writing a key file failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Encoding failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A key file exists already; keys are never overwritten.
    #[error("{0} already exists; keys are never overwritten (choose another name)")]
    Exists(PathBuf),
    /// The public key would be written over the private key.
    #[error("the public key path equals the private key path {0}")]
    SamePath(PathBuf),
    /// The token refused to generate the key.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The key was generated in the token but its public key could not be written.
    #[error("the key {uri} was generated in the token, but its public key was not written; export it with `sigil key export`")]
    PublicNotWritten {
        /// The key's URI.
        uri: String,
        /// Why.
        #[source]
        source: KeyCommandError,
    },
    /// Building the command needs --out (clap checks this first).
    #[error("keygen needs --out, or --pkcs11 with --public-out")]
    MissingArguments,
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl KeygenError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        // Bad input documents, keys or files: operational errors, never a verdict on a bundle.
        ExitCode::Failure
    }
}

/// The default public key path beside a private key path.
pub fn default_public_path(private: &Path) -> PathBuf {
    let name = private
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_suffix(".pem") {
        Some(stem) if !stem.is_empty() => private.with_file_name(format!("{stem}.pub.pem")),
        _ => private.with_file_name(format!("{name}.pub")),
    }
}

/// Generates a key pair from the OS random generator and writes both files.
pub fn run(args: &KeygenArgs, out: &mut dyn Write) -> Result<(), KeygenError> {
    if let Some(uri) = &args.pkcs11 {
        return generate_in_token(args, uri, out);
    }
    let Some(private_path) = &args.out else {
        return Err(KeygenError::MissingArguments);
    };
    let public_path = args
        .public_out
        .clone()
        .unwrap_or_else(|| default_public_path(private_path));
    if public_path == *private_path {
        return Err(KeygenError::SamePath(public_path));
    }
    // Refuse before generating anything if either file exists.
    for path in [private_path, &public_path] {
        if path.symlink_metadata().is_ok() {
            return Err(KeygenError::Exists(path.clone()));
        }
    }
    let (private_pem, public_pem, id, what) = if args.x25519 {
        let secret = crate::encrypt::generate_secret();
        let public = sigil_manifests::encryption::DeviceKey::from_secret(*secret).public_key();
        (
            crate::encrypt::private_key_pem(&secret),
            crate::encrypt::public_key_pem(&public),
            hex::encode(sigil_manifests::encryption::recipient_id(&public)),
            "recipient id",
        )
    } else {
        let key = SigningKey::generate(&mut OsRng);
        (
            keyfile::private_key_pem(&key)?,
            keyfile::public_key_pem(&key.verifying_key())?,
            keyfile::key_id_hex(&key.verifying_key().to_bytes()),
            "key id:     ",
        )
    };

    files::write_atomic(
        private_path,
        private_pem.as_bytes(),
        Overwrite::Never,
        files::SECRET_MODE,
    )?;
    if let Err(e) = files::write_atomic(
        &public_path,
        public_pem.as_bytes(),
        Overwrite::Never,
        files::PUBLIC_MODE,
    ) {
        // The private key was never used: remove it rather than leave half a key pair.
        let _ = std::fs::remove_file(private_path);
        return Err(e.into());
    }
    let keep = if args.x25519 {
        "provision it into the device's protected storage, then delete it; mode 0600"
    } else {
        "keep it offline; mode 0600"
    };
    writeln!(out, "private key: {} ({keep})", private_path.display())
        .and_then(|()| writeln!(out, "public key:  {}", public_path.display()))
        .and_then(|()| writeln!(out, "{what} {id}"))
        .map_err(KeygenError::Output)
}

/// Generates the key pair in the token the URI names and writes its public key.
fn generate_in_token(
    args: &KeygenArgs,
    uri: &Pkcs11Uri,
    out: &mut dyn Write,
) -> Result<(), KeygenError> {
    let Some(public_path) = &args.public_out else {
        return Err(KeygenError::MissingArguments);
    };
    if public_path.symlink_metadata().is_ok() {
        return Err(KeygenError::Exists(public_path.clone()));
    }
    let mut hsm = Hsm::new();
    let key = hsm.generate(args.pkcs11_options.target(uri)?)?;
    key::write_public_key(public_path, &key.public_key(), Overwrite::Never).map_err(|source| {
        KeygenError::PublicNotWritten {
            uri: key.uri().to_owned(),
            source,
        }
    })?;
    writeln!(
        out,
        "private key: {} (in the token; it never leaves it)",
        key.uri()
    )
    .and_then(|()| writeln!(out, "public key:  {}", public_path.display()))
    .and_then(|()| {
        writeln!(
            out,
            "key id:      {}",
            keyfile::key_id_hex(&key.public_key())
        )
    })
    .map_err(KeygenError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_path_sits_beside_the_private_key() {
        assert_eq!(
            default_public_path(Path::new("keys/release.pem")),
            Path::new("keys/release.pub.pem")
        );
        assert_eq!(
            default_public_path(Path::new("release")),
            Path::new("release.pub")
        );
        assert_eq!(
            default_public_path(Path::new(".pem")),
            Path::new(".pem.pub")
        );
    }
}
