//! `sigil root`: trust roots.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sigil_manifests::rotation::{encode_chain, RootChainView, RootUpdate, MAX_ROOT_CHAIN};
use sigil_manifests::{verify_root_chain, PublicKey, Signed, TrustRoot, TrustRootRef};

use crate::exit::ExitCode;
use crate::files::{self, FileError, Overwrite};
use crate::hsm::Hsm;
use crate::key_source::{KeySourceError, KeySpec, SigningKeyArgs};
use crate::keyfile::{self, KeyError};
use crate::report::Additions;

/// `sigil root` subcommands.
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Create a trust root from N root public keys and a threshold M.
    ///
    /// The trust root is provisioned into the bootloader and the agent; a key set is valid
    /// only when M distinct root keys signed it. Keep the root private keys offline.
    Init(RootInitArgs),
    /// Start a rotation: build root N+1 from root N and new public keys, as an unsigned root
    /// update.
    ///
    /// Root N+1 has version N+1. It takes effect on a device only once a threshold of root
    /// N's keys and a threshold of its own keys have signed it (`sigil root sign`, on each
    /// holder's machine), and the update is in the chain a bundle carries (`sigil root chain`,
    /// `sigil sign --root-chain`).
    Rotate(RootRotateArgs),
    /// Add a holder's signatures to a root update (threshold ceremonies across machines).
    ///
    /// A key of root N signs as the retiring root, a key of root N+1 as the new root, a key of
    /// both as both. The update is changed in place unless --out is given.
    Sign(RootSignArgs),
    /// Build a root chain from the provisioned root through signed root updates.
    ///
    /// Every update is verified (FORMAT.md steps R1-R3): exactly one version above the one
    /// before, signed by both thresholds. The chain is what `sigil sign --root-chain` puts in
    /// bundles and what the server hands to agents.
    Chain(RootChainArgs),
}

/// Arguments of `sigil root rotate`.
#[derive(Debug, Args)]
pub struct RootRotateArgs {
    /// Root N: the current trust root.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,

    /// Root public keys of root N+1 (SPKI PEM; keys of root N may be kept).
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<PathBuf>,

    /// How many distinct keys of root N+1 must sign.
    #[arg(short = 'm', long, value_name = "M")]
    pub threshold: u8,

    /// Where to write the unsigned root update.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// Also write root N+1 as a trust root file (to provision new devices).
    #[arg(long, value_name = "FILE")]
    pub root_out: Option<PathBuf>,

    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `sigil root sign`.
#[derive(Debug, Args)]
pub struct RootSignArgs {
    /// The root update to sign.
    #[arg(value_name = "UPDATE")]
    pub update: PathBuf,

    /// Root N, the root the update replaces.
    #[arg(long, value_name = "FILE")]
    pub previous: PathBuf,

    /// Private keys of root N or root N+1: PEM files or keys in an HSM.
    #[command(flatten)]
    pub keys: SigningKeyArgs,

    /// Write the signed update here instead of changing UPDATE in place.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `sigil root chain`.
#[derive(Debug, Args)]
pub struct RootChainArgs {
    /// The provisioned trust root the chain starts from.
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,

    /// Signed root updates, oldest first (versions 2, 3, ... of the provisioned root's line).
    #[arg(required = true, value_name = "UPDATE")]
    pub updates: Vec<PathBuf>,

    /// Where to write the chain.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
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

    /// Version of this trust root (later roots come from `sigil root rotate`).
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
    /// A signing key could not be loaded, or its HSM failed to sign.
    #[error(transparent)]
    Signer(#[from] KeySourceError),
    /// A root update or chain file does not decode or verify.
    #[error("{path} is not a valid root {what}")]
    Rotation {
        /// The file.
        path: PathBuf,
        /// "update" or "chain".
        what: &'static str,
        /// The reason.
        #[source]
        source: sigil_manifests::Error,
    },
    /// A signing key belongs to neither root of the update.
    #[error("{key} (key id {key_id}) is a key of neither root {previous} nor root {next}")]
    NotRootKey {
        /// The key file or URI.
        key: KeySpec,
        /// Its key id.
        key_id: String,
        /// Root N's version.
        previous: u32,
        /// Root N+1's version.
        next: u32,
    },
    /// The update is not for the root given as previous.
    #[error("the update is for root {update}, not for the root after {previous} (version {next})", next = previous.saturating_add(1))]
    NotNextRoot {
        /// The update's root version.
        update: u32,
        /// The previous root's version.
        previous: u32,
    },
    /// More updates than one chain carries.
    #[error("{0} updates: a chain carries at most {MAX_ROOT_CHAIN}; devices further behind need an intermediate release")]
    ChainTooLong(usize),
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

/// A root chain file, decoded (step R1), with its bytes.
#[derive(Debug, Clone)]
pub struct ChainFile {
    /// The file.
    pub path: PathBuf,
    /// Its exact bytes (what bundles carry).
    pub bytes: Vec<u8>,
}

/// Loads a root chain file (step R1: strict decode, consecutive versions).
pub fn load_chain(path: &Path) -> Result<ChainFile, RootError> {
    let bytes = files::read_document(path)?;
    RootChainView::parse(&bytes).map_err(|source| RootError::Rotation {
        path: path.to_owned(),
        what: "chain",
        source,
    })?;
    Ok(ChainFile {
        path: path.to_owned(),
        bytes,
    })
}

/// The newest root `chain` reaches from the provisioned `root` (steps R1-R3).
pub fn newest_root(root: &TrustRoot, chain: &ChainFile) -> Result<TrustRoot, RootError> {
    verify_root_chain(root, None, &chain.bytes)
        .map(|(root, _)| root)
        .map_err(|source| RootError::Rotation {
            path: chain.path.clone(),
            what: "chain",
            source,
        })
}

impl RootError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        // Bad input documents, keys or files: operational errors, never a verdict on a bundle.
        ExitCode::Failure
    }
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
        RootCommand::Rotate(args) => rotate(args, out),
        RootCommand::Sign(args) => sign(args, out),
        RootCommand::Chain(args) => chain(args, out),
    }
}

fn load_public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, RootError> {
    Ok(paths
        .iter()
        .map(|p| keyfile::load_public_key(p))
        .collect::<Result<Vec<PublicKey>, _>>()?)
}

fn rotate(args: &RootRotateArgs, out: &mut dyn Write) -> Result<(), RootError> {
    let previous = load(&args.from)?;
    let keys = load_public_keys(&args.keys)?;
    let version = previous
        .root_version
        .checked_add(1)
        .ok_or(RootError::Invalid(
            sigil_manifests::Error::RootVersionSkipped,
        ))?;
    let next = TrustRoot::new(version, args.threshold, &keys).map_err(RootError::Invalid)?;
    let root_bytes = next.encode().map_err(RootError::Invalid)?;
    let update = RootUpdate::new(&root_bytes)
        .encode()
        .map_err(RootError::Invalid)?;
    let overwrite = Overwrite::from_force(args.force);
    if let Some(path) = &args.root_out {
        files::write_atomic(path, &root_bytes, overwrite, files::PUBLIC_MODE)?;
    }
    files::write_atomic(&args.out, &update, overwrite, files::PUBLIC_MODE)?;
    let mut report = || -> std::io::Result<()> {
        writeln!(
            out,
            "root update {}: root {} -> {}, {} of {} new root keys must sign",
            args.out.display(),
            previous.root_version,
            next.root_version,
            next.threshold,
            next.keys.len()
        )?;
        for key in &next.keys {
            let kept = if previous.keys.contains(key) {
                " (kept)"
            } else {
                ""
            };
            writeln!(out, "  root key {}{kept}", keyfile::key_id_hex(key))?;
        }
        writeln!(
            out,
            "unsigned: {} key(s) of root {} and {} of root {} sign it with `sigil root sign`",
            previous.threshold, previous.root_version, next.threshold, next.root_version
        )
    };
    report().map_err(RootError::Output)
}

fn sign(args: &RootSignArgs, out: &mut dyn Write) -> Result<(), RootError> {
    let previous = load(&args.previous)?;
    let bytes = files::read_document(&args.update)?;
    let invalid = |source| RootError::Rotation {
        path: args.update.clone(),
        what: "update",
        source,
    };
    let mut update = RootUpdate::decode(&bytes).map_err(invalid)?;
    let next = TrustRootRef::decode(update.root).map_err(invalid)?;
    if previous.root_version.checked_add(1) != Some(next.root_version) {
        return Err(RootError::NotNextRoot {
            update: next.root_version,
            previous: previous.root_version,
        });
    }
    let mut additions = Additions::default();
    for loaded in args.keys.load(&mut Hsm::new())? {
        let public = loaded.key.public_key();
        let (in_previous, in_next) = (previous.keys.contains(&public), next.keys.contains(&public));
        if !in_previous && !in_next {
            return Err(RootError::NotRootKey {
                key: loaded.spec,
                key_id: keyfile::key_id_hex(&public),
                previous: previous.root_version,
                next: next.root_version,
            });
        }
        let entry = loaded.key.sign(update.root)?;
        // A key of both roots signs as both; its outcome is that of its first list.
        let mut outcome = None;
        if in_previous {
            outcome = Some(update.add_by_previous(entry).map_err(invalid)?);
        }
        if in_next {
            let added = update.add_by_new(entry).map_err(invalid)?;
            outcome.get_or_insert(added);
        }
        if let Some(outcome) = outcome {
            additions.record(keyfile::key_id_hex(&public), outcome);
        }
    }
    let status =
        |keys: &TrustRootRef<'_>, sigs: &[sigil_manifests::SignatureEntry], what| match keys
            .verify_signed(update.root, sigs.iter().copied(), what)
        {
            Ok(()) => "met".to_owned(),
            Err(sigil_manifests::Error::ThresholdNotMet {
                found, required, ..
            }) => format!("{found} of {required}"),
            Err(e) => format!("invalid: {e}"),
        };
    let by_previous = status(
        &previous.as_ref(),
        &update.by_previous,
        Signed::RootUpdateByPrevious,
    );
    let by_new = status(&next, &update.by_new, Signed::RootUpdateByNew);
    let encoded = update.encode().map_err(RootError::Invalid)?;
    let (dest, write) = files::save_signed(
        args.out.as_deref(),
        args.force,
        &args.update,
        &encoded,
        additions.changed(),
    )?;
    let mut report = || -> std::io::Result<()> {
        let what = format!("root update {}", dest.display());
        write!(
            out,
            "{}",
            additions.summary(&what, "root", "this root update", write)
        )?;
        writeln!(
            out,
            "root {} threshold: {by_previous}; root {} threshold: {by_new}",
            previous.root_version, next.root_version
        )
    };
    report().map_err(RootError::Output)
}

fn chain(args: &RootChainArgs, out: &mut dyn Write) -> Result<(), RootError> {
    let root = load(&args.root)?;
    if args.updates.len() > MAX_ROOT_CHAIN {
        return Err(RootError::ChainTooLong(args.updates.len()));
    }
    let updates = args
        .updates
        .iter()
        .map(|p| files::read_document(p).map_err(RootError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let invalid = |source| RootError::Rotation {
        path: args.out.clone(),
        what: "chain",
        source,
    };
    let bytes = encode_chain(&updates).map_err(invalid)?;
    let (newest, _) = verify_root_chain(&root, None, &bytes).map_err(invalid)?;
    files::write_atomic(
        &args.out,
        &bytes,
        Overwrite::from_force(args.force),
        files::PUBLIC_MODE,
    )?;
    writeln!(
        out,
        "root chain {}: root {} -> {} ({} update(s)), every update verified",
        args.out.display(),
        root.root_version,
        newest.root_version,
        updates.len()
    )
    .map_err(RootError::Output)
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
