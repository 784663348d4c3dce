//! `sigil root`: trust roots.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sigil_manifests::{PublicKey, TrustRoot};

use crate::files::{self, FileError, Overwrite};
use crate::keyfile::{self, KeyError};

/// `sigil root` subcommands.
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Create a trust root from N root public keys and a threshold M.
    ///
    /// The trust root is provisioned into the bootloader and the agent; a key set is valid
    /// only when M distinct root keys signed it. Keep the root private keys offline.
    Init(RootInitArgs),
}

/// Arguments of `sigil root init`.
#[derive(Debug, Args)]
pub struct RootInitArgs {
    /// Root public keys (SPKI PEM; a private key file also works, its public half is used).
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<PathBuf>,

    /// How many distinct root keys must sign a key set (1..=number of keys).
    #[arg(short = 'm', long, value_name = "M")]
    pub threshold: u8,

    /// Version of this trust root (room for root rotation).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub root_version: u32,

    /// Where to write the trust root.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// Errors of `sigil root` and of loading a trust root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The keys and threshold do not form a valid trust root.
    #[error("invalid trust root")]
    Invalid(#[source] sigil_manifests::Error),
    /// A trust root file does not decode.
    #[error("{path} is not a valid trust root")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The reason.
        #[source]
        source: sigil_manifests::Error,
    },
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

/// Loads and validates a trust root file.
pub fn load(path: &Path) -> Result<TrustRoot, RootError> {
    let bytes = files::read_document(path)?;
    TrustRoot::decode(&bytes).map_err(|source| RootError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Runs a `sigil root` subcommand.
pub fn run(command: &RootCommand, out: &mut dyn Write) -> Result<(), RootError> {
    match command {
        RootCommand::Init(args) => init(args, out),
    }
}

fn init(args: &RootInitArgs, out: &mut dyn Write) -> Result<(), RootError> {
    let keys = args
        .keys
        .iter()
        .map(|p| keyfile::load_public_key(p))
        .collect::<Result<Vec<PublicKey>, _>>()?;
    let root =
        TrustRoot::new(args.root_version, args.threshold, &keys).map_err(RootError::Invalid)?;
    let bytes = root.encode().map_err(RootError::Invalid)?;
    files::write_atomic(
        &args.out,
        &bytes,
        Overwrite::from_force(args.force),
        files::PUBLIC_MODE,
    )?;
    let mut report = || -> std::io::Result<()> {
        writeln!(
            out,
            "trust root {} (version {}): {} of {} root keys must sign a key set",
            args.out.display(),
            root.root_version,
            root.threshold,
            root.keys.len()
        )?;
        for key in &root.keys {
            writeln!(out, "  root key {}", keyfile::key_id_hex(key))?;
        }
        Ok(())
    };
    report().map_err(RootError::Output)
}
