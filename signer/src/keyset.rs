//! `sigil keyset`: create key sets and add root signatures to them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sigil_manifests::{
    key_id, Error as FormatError, KeySet, PublicKey, Signed, SignedKeySet, TrustRoot,
};

use crate::args::ProductArg;
use crate::exit::ExitCode;
use crate::files::{self, FileError, Overwrite};
use crate::hsm::Hsm;
use crate::key_source::{KeySourceError, KeySpec, SigningKeyArgs};
use crate::keyfile::{self, KeyError};
use crate::root::{self, RootError};

/// `sigil keyset` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysetCommand {
    /// Create an unsigned key set naming the release keys allowed to sign manifests.
    ///
    /// The key set then needs signatures from a threshold of root keys (`sigil keyset sign`),
    /// possibly on several offline machines, before bundles signed under it verify.
    Create(KeysetCreateArgs),
    /// Add root signatures to a key set file, in place (atomically) or into --out.
    ///
    /// Pass one or several root private keys. With --root, each key is checked to belong to
    /// that trust root and the command reports whether the root threshold is now met. A key
    /// that already signed adds nothing: that is reported, the file is left untouched, and the
    /// exit status is 0.
    Sign(KeysetSignArgs),
}

/// Arguments of `sigil keyset create`.
#[derive(Debug, Args)]
pub struct KeysetCreateArgs {
    /// Release public keys (SPKI PEM; a private key file also works).
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<PathBuf>,

    /// How many distinct release keys must sign each manifest.
    #[arg(short = 'm', long, value_name = "M")]
    pub threshold: u8,

    /// Key set version. Devices refuse key sets older than the newest they confirmed, so
    /// raise it to rotate or revoke release keys.
    #[arg(
        long = "key-set-version",
        visible_alias = "set-version",
        value_name = "N"
    )]
    pub version: u32,

    /// Only allow manifests for this product (VENDOR/DEVICE).
    #[arg(long, value_name = "VENDOR/DEVICE")]
    pub product: Option<ProductArg>,

    /// Version of the trust root whose keys sign this key set (FORMAT.md step 5d). After a
    /// root rotation, devices refuse key sets naming a retired root.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub root_version: u32,

    /// Where to write the key set.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `sigil keyset sign`.
#[derive(Debug, Args)]
pub struct KeysetSignArgs {
    /// The key set file to sign.
    #[arg(value_name = "KEYSET")]
    pub key_set: PathBuf,

    /// Root private keys: PEM files or keys in an HSM.
    #[command(flatten)]
    pub keys: SigningKeyArgs,

    /// Check that each key belongs to this trust root and report the threshold.
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,

    /// Write the signed key set here instead of updating KEYSET in place.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// Errors of `sigil keyset`.
#[derive(Debug, thiserror::Error)]
pub enum KeysetError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A signing key could not be loaded, or its HSM failed to sign.
    #[error(transparent)]
    Signer(#[from] KeySourceError),
    /// The trust root could not be loaded.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The arguments do not form a valid key set.
    #[error("invalid key set")]
    Invalid(#[source] FormatError),
    /// A key set file does not decode.
    #[error("{path} is not a valid key set file")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The reason.
        #[source]
        source: FormatError,
    },
    /// A signing key is not one of the trust root's keys.
    #[error("{key} (key id {key_id}) is not a root key of {root}")]
    NotRootKey {
        /// The key file or URI.
        key: KeySpec,
        /// Its key id.
        key_id: String,
        /// The trust root file.
        root: PathBuf,
    },
    /// The key set does not verify under the trust root for another reason than a missing
    /// signature.
    #[error("{path} does not verify under {root}")]
    Rejected {
        /// The key set file.
        path: PathBuf,
        /// The trust root file.
        root: PathBuf,
        /// The reason.
        #[source]
        source: FormatError,
    },
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl KeysetError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        // Bad input documents, keys or files: operational errors, never a verdict on a bundle.
        ExitCode::Failure
    }
}

/// A key set file read from disk; `bytes` owns what the decoded views borrow.
#[derive(Debug)]
pub struct KeySetFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl KeySetFile {
    /// Reads a key set file and checks that it decodes.
    pub fn load(path: &Path) -> Result<Self, KeysetError> {
        let file = KeySetFile {
            path: path.to_owned(),
            bytes: files::read_document(path)?,
        };
        file.signed()?;
        Ok(file)
    }

    /// The signed key set (the key set bytes and root signatures), with the inner key set
    /// checked to decode.
    pub fn signed(&self) -> Result<SignedKeySet<'_>, KeysetError> {
        let decode_err = |source| KeysetError::Decode {
            path: self.path.clone(),
            source,
        };
        let signed = SignedKeySet::decode(&self.bytes).map_err(decode_err)?;
        KeySet::decode(signed.key_set).map_err(decode_err)?;
        Ok(signed)
    }

    /// The key set itself (signatures not checked).
    pub fn key_set(&self) -> Result<KeySet<'_>, KeysetError> {
        let signed = self.signed()?;
        KeySet::decode(signed.key_set).map_err(|source| KeysetError::Decode {
            path: self.path.clone(),
            source,
        })
    }
}

/// How far a key set is from verifying under a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootStatus {
    /// The root threshold signed it.
    Verified,
    /// Valid signatures so far, fewer than the threshold.
    Incomplete {
        /// Distinct valid root signatures.
        found: u8,
        /// The root threshold.
        required: u8,
    },
}

/// Checks a signed key set under a root with the format's own verification (steps 4–5).
pub fn root_status(signed: &SignedKeySet<'_>, root: &TrustRoot) -> Result<RootStatus, FormatError> {
    match signed.verify(root) {
        Ok(_) => Ok(RootStatus::Verified),
        Err(FormatError::ThresholdNotMet {
            what: Signed::KeySet,
            found,
            required,
        }) => Ok(RootStatus::Incomplete { found, required }),
        Err(e) => Err(e),
    }
}

/// Runs a `sigil keyset` subcommand.
pub fn run(command: &KeysetCommand, out: &mut dyn Write) -> Result<(), KeysetError> {
    match command {
        KeysetCommand::Create(args) => create(args, out),
        KeysetCommand::Sign(args) => sign(args, out),
    }
}

fn create(args: &KeysetCreateArgs, out: &mut dyn Write) -> Result<(), KeysetError> {
    let keys = args
        .keys
        .iter()
        .map(|p| keyfile::load_public_key(p))
        .collect::<Result<Vec<PublicKey>, _>>()?;
    let scope = args.product.as_ref().map(ProductArg::id);
    let key_set = KeySet::new(args.version, args.threshold, scope, &keys)
        .map_err(KeysetError::Invalid)?
        .with_root_version(args.root_version);
    let key_set_bytes = key_set.encode().map_err(KeysetError::Invalid)?;
    let signed = SignedKeySet {
        key_set: &key_set_bytes,
        signatures: Default::default(),
    };
    let bytes = signed.encode().map_err(KeysetError::Invalid)?;
    files::write_atomic(
        &args.out,
        &bytes,
        Overwrite::from_force(args.force),
        files::PUBLIC_MODE,
    )?;
    let mut report = || -> std::io::Result<()> {
        writeln!(
            out,
            "key set {} (version {}): {} of {} release keys must sign a manifest{}",
            args.out.display(),
            key_set.version,
            key_set.threshold,
            key_set.keys.len(),
            match &args.product {
                Some(p) => format!("; only for {p}"),
                None => String::new(),
            }
        )?;
        for key in key_set.keys {
            writeln!(out, "  release key {}", keyfile::key_id_hex(key))?;
        }
        writeln!(
            out,
            "next: sign it with root keys: sigil keyset sign {} --key ROOT.pem",
            args.out.display()
        )
    };
    report().map_err(KeysetError::Output)
}

fn sign(args: &KeysetSignArgs, out: &mut dyn Write) -> Result<(), KeysetError> {
    let file = KeySetFile::load(&args.key_set)?;
    let mut signed = file.signed()?;
    let root = args.root.as_deref().map(root::load).transpose()?;
    let mut additions = crate::report::Additions::default();
    for loaded in args.keys.load(&mut Hsm::new())? {
        let public = loaded.key.public_key();
        if let (Some(root), Some(root_path)) = (&root, &args.root) {
            if !root.keys.contains(&public) {
                return Err(KeysetError::NotRootKey {
                    key: loaded.spec,
                    key_id: keyfile::key_id_hex(&public),
                    root: root_path.clone(),
                });
            }
        }
        let outcome = signed
            .add_signature(loaded.key.sign(signed.key_set)?)
            .map_err(|source| KeysetError::Decode {
                path: file.path.clone(),
                source,
            })?;
        additions.record(keyfile::key_id_hex(&public), outcome);
    }
    let status =
        match (&root, &args.root) {
            (Some(root), Some(root_path)) => Some(root_status(&signed, root).map_err(
                |source| KeysetError::Rejected {
                    path: file.path.clone(),
                    root: root_path.clone(),
                    source,
                },
            )?),
            _ => None,
        };
    let bytes = signed.encode().map_err(KeysetError::Invalid)?;
    let (dest, write) = files::save_signed(
        args.out.as_deref(),
        args.force,
        &file.path,
        &bytes,
        additions.changed(),
    )?;

    let mut report = || -> std::io::Result<()> {
        let what = format!("key set {}", dest.display());
        write!(
            out,
            "{}",
            additions.summary(&what, "root", "this key set", write)
        )?;
        writeln!(out, "root signatures: {}", signed.signatures.len())?;
        for entry in &signed.signatures {
            writeln!(out, "  signed by {}", hex::encode(entry.key_id))?;
        }
        match status {
            Some(RootStatus::Verified) => writeln!(out, "root threshold met: the key set verifies under the trust root"),
            Some(RootStatus::Incomplete { found, required }) => writeln!(
                out,
                "root threshold not met yet: {found} of {required}; add {} more with `sigil keyset sign`",
                required.saturating_sub(found)
            ),
            None => writeln!(out, "pass --root to check the threshold"),
        }
    };
    report().map_err(KeysetError::Output)
}

/// Whether `public` is one of the key set's release keys (by key id, as signatures name keys).
pub fn is_release_key(key_set: &KeySet<'_>, public: &PublicKey) -> bool {
    let id = key_id(public);
    key_set.keys.iter().any(|k| key_id(k) == id)
}
