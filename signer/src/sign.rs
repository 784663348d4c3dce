//! `sigil sign`: build a bundle from an image, or add release signatures to an existing one.
//!
//! Building reads the image once: the payload offset depends only on the envelope's length,
//! which does not depend on the digest's value, so the payload is written at its final offset
//! while it is hashed, and the header and envelope are written in front of it at the end.
//! Memory use is one read buffer, whatever the image size.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};
use sigil_manifests::{
    key_id, BundleVerifier, Dependency, DevicePolicy, Envelope, Error as FormatError, KeySet,
    Manifest, PayloadFormat, SignatureEntry, Signed, TrustRoot, UnverifiedBundle,
    VERIFY_BUFFER_LEN,
};

use crate::args::{DependencyArg, DurationArg, IdentArg, ProductArg, TimeArg, VersionArg};
use crate::bundle_file::InvalidBundle;
use crate::bundle_file::{read_full, read_prefix, BundlePrefix, PrefixError};
use crate::encrypt::{self, ContentKeyFile, EncryptError, RecipientArgs};
use crate::exit::ExitCode;
use crate::files::{self, AtomicFile, FileError, Overwrite};
use crate::hsm::Hsm;
use crate::key_source::{KeySourceError, KeySpec, SignerKey, SigningKeyArgs};
use crate::keyfile;
use crate::keyset::{self, KeySetFile, KeysetError, RootStatus};
use crate::report;
use crate::root::{self, RootError};

/// Size of the buffer the image is read through.
pub const READ_BUFFER: usize = 1 << 20;

/// Arguments of `sigil sign`: build a bundle, or (`sigil sign add`) co-sign one.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    group = clap::ArgGroup::new("expiry").multiple(false)
)]
pub struct SignArgs {
    /// `add`: co-sign an existing bundle.
    #[command(subcommand)]
    pub command: Option<SignCommand>,

    /// The image: the exact bytes the device installs.
    #[arg(value_name = "IMAGE", required = true)]
    pub image: Option<PathBuf>,

    /// Release private keys named in the key set: PEM files or keys in an HSM.
    #[command(flatten)]
    pub keys: SigningKeyArgs,

    /// The key set file, signed by the root threshold (`sigil keyset sign`).
    #[arg(long, value_name = "FILE", required = true)]
    pub key_set: Option<PathBuf>,

    /// Trust root: check the key set against it before signing, and report whether the
    /// bundle's release threshold is met. With --root-chain, the root the device was
    /// provisioned with (the chain leads from it to the key set's root).
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,

    /// Root chain (`sigil root rotate`) to carry in the bundle, so devices on older roots
    /// walk to the root the key set is signed under (FORMAT.md §4, steps R1-R3).
    #[arg(long, value_name = "FILE")]
    pub root_chain: Option<PathBuf>,

    /// Product the image is for (VENDOR/DEVICE).
    #[arg(long, value_name = "VENDOR/DEVICE", required = true)]
    pub product: Option<ProductArg>,

    /// Component / slot the image targets, e.g. `app`.
    #[arg(long, value_name = "NAME", required = true)]
    pub component: Option<IdentArg>,

    /// Version (SemVer, e.g. 1.4.0 or 1.4.0-rc.1).
    #[arg(long = "version", value_name = "VERSION", required = true)]
    pub image_version: Option<VersionArg>,

    /// Anti-rollback security counter; raise it when a release fixes a vulnerability.
    #[arg(long, value_name = "N", required = true)]
    pub security_counter: Option<u32>,

    /// Payload alignment in the bundle: a power of two up to 1 MiB, as the device declares
    /// (usually its flash sector size).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub alignment: u32,

    /// Lowest bootloader version able to boot this image.
    #[arg(long, value_name = "N")]
    pub min_bootloader_version: Option<u32>,

    /// A component that must already be installed: COMPONENT>=VERSION (up to 4).
    #[arg(long = "depends", value_name = "DEPENDENCY")]
    pub dependencies: Vec<DependencyArg>,

    /// Release notes file; its SHA-256 goes into the manifest.
    #[arg(long, value_name = "FILE")]
    pub release_notes: Option<PathBuf>,

    /// Software bill of materials file; its SHA-256 goes into the manifest.
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,

    /// Expiry for devices with trusted time: Unix seconds or RFC 3339.
    #[arg(long, value_name = "TIME", group = "expiry")]
    pub expires: Option<TimeArg>,

    /// Expiry relative to the creation time, e.g. 365d.
    #[arg(long, value_name = "DURATION", group = "expiry")]
    pub expires_in: Option<DurationArg>,

    /// Creation time (Unix seconds or RFC 3339) [default: now, or SOURCE_DATE_EPOCH for
    /// reproducible builds].
    #[arg(long, value_name = "TIME", env = "SOURCE_DATE_EPOCH")]
    pub created: Option<TimeArg>,

    /// Encrypt the image for these devices (FORMAT.md §9): the bundle holds the ciphertext,
    /// and one key record per device is written beside it.
    #[command(flatten, next_help_heading = "Encryption")]
    pub encryption: RecipientArgs,

    /// The release's content-key file (secret, mode 0600): created with a new random key if
    /// missing; an existing one is used only for the image it was made for. Keep it to add
    /// recipients later with `sigil encrypt add-recipient`.
    #[arg(long, value_name = "FILE", help_heading = "Encryption")]
    pub content_key: Option<PathBuf>,

    /// Where to write the bundle (required when building one).
    #[arg(short, long, value_name = "FILE", required = true)]
    pub out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `sigil sign` subcommands.
#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Add release signatures to an existing bundle (threshold signing on several machines).
    ///
    /// Updates the bundle in place unless --out is given. A key that already signed the
    /// release adds nothing (ed25519 signatures are deterministic): that is reported per key,
    /// the bundle is left untouched, and the exit status is 0.
    Add(SignAddArgs),
}

/// Arguments of `sigil sign add`.
#[derive(Debug, Args)]
pub struct SignAddArgs {
    /// The bundle to co-sign.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,

    /// Release private keys named in the bundle's key set: PEM files or keys in an HSM.
    #[command(flatten)]
    pub keys: SigningKeyArgs,

    /// Trust root: report whether the release threshold is now met under it.
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,

    /// Write the co-signed bundle here instead of updating BUNDLE in place.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Errors of `sigil sign`.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key could not be loaded, or its HSM failed to sign.
    #[error(transparent)]
    Key(#[from] KeySourceError),
    /// The key set file is unusable.
    #[error(transparent)]
    KeySet(#[from] KeysetError),
    /// The trust root could not be loaded.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The existing bundle is not a valid bundle.
    #[error(transparent)]
    Bundle(#[from] InvalidBundle),
    /// The existing bundle cannot be read.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// The image cannot be read.
    #[error("cannot read image {path}")]
    Image {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The image is empty (the format requires a payload).
    #[error("image {0} is empty")]
    EmptyImage(PathBuf),
    /// The image changed size while it was read.
    #[error("image {path} changed while it was read ({expected} bytes expected, {read} read)")]
    ImageChanged {
        /// The image.
        path: PathBuf,
        /// Size at the start.
        expected: u64,
        /// Bytes read.
        read: u64,
    },
    /// A key is not a release key of the key set.
    #[error("{key} (key id {key_id}) is not a release key of the key set")]
    NotReleaseKey {
        /// The key file or URI.
        key: KeySpec,
        /// Its key id.
        key_id: String,
    },
    /// The same key was passed twice.
    #[error("{0} is given twice (a key counts once toward the threshold)")]
    DuplicateKey(KeySpec),
    /// The key set does not verify under the given root.
    #[error("key set {key_set} is not valid under trust root {root}")]
    KeySetRejected {
        /// The key set file.
        key_set: PathBuf,
        /// The root file.
        root: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// The key set is scoped to another product.
    #[error("key set is limited to product {scope}, not {product}")]
    OutOfScope {
        /// The key set's scope.
        scope: String,
        /// The requested product.
        product: String,
    },
    /// Too many dependencies.
    #[error(
        "at most {} dependencies fit in a manifest",
        sigil_manifests::MAX_DEPENDENCIES
    )]
    TooManyDependencies,
    /// Expiry not after creation.
    #[error("expiry {expires} is not after creation {created}")]
    ExpiresBeforeCreated {
        /// Creation time.
        created: u64,
        /// Expiry time.
        expires: u64,
    },
    /// The metadata does not form a valid manifest or bundle.
    #[error("cannot build the bundle")]
    Build(#[source] FormatError),
    /// Building a bundle needs the image and its metadata (clap checks this first).
    #[error("building a bundle needs IMAGE, --key-set, --product, --component, --version, --security-counter and --out")]
    MissingArguments,
    /// The system clock is before 1970.
    #[error("the system clock is before 1970; pass --created")]
    Clock,
    /// Encryption failed: recipients, the content-key file, key records.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

impl SignError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SignError::Bundle(b) => b.exit_code(),
            SignError::Prefix(p) => p.exit_code(),
            SignError::Encrypt(e) => e.exit_code(),
            _ => ExitCode::Failure,
        }
    }
}

/// How far a bundle's envelope is from verifying under a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStatus {
    /// Root → key set → manifest signatures all hold.
    Verified,
    /// Valid release signatures, fewer than the key set's threshold.
    Incomplete {
        /// Distinct valid release signatures.
        found: u8,
        /// The key set's threshold.
        required: u8,
    },
}

/// Runs the verifier over the bundle prefix (header, envelope, padding): steps 1–8 of the
/// format's one verification sequence, before the payload.
pub fn envelope_status(root: &TrustRoot, prefix: &[u8]) -> Result<ReleaseStatus, FormatError> {
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let mut verifier = BundleVerifier::new(root, DevicePolicy::any_device(), &mut buf);
    match verifier.feed(prefix) {
        Ok(()) if verifier.authenticated_manifest().is_some() => Ok(ReleaseStatus::Verified),
        Ok(()) => Err(FormatError::Truncated),
        Err(FormatError::ThresholdNotMet {
            what: Signed::Manifest,
            found,
            required,
        }) => Ok(ReleaseStatus::Incomplete { found, required }),
        Err(e) => Err(e),
    }
}

/// Runs `sigil sign`.
pub fn run(args: &SignArgs, out: &mut dyn Write) -> Result<(), SignError> {
    match &args.command {
        Some(SignCommand::Add(add_args)) => add(add_args, out),
        None => build(args, out),
    }
}

/// Loads the release keys, refusing duplicates and keys the key set does not name.
fn load_release_keys(
    args: &SigningKeyArgs,
    hsm: &mut Hsm,
    key_set: &KeySet<'_>,
) -> Result<Vec<SignerKey>, SignError> {
    let mut keys: Vec<SignerKey> = Vec::new();
    for loaded in args.load(hsm)? {
        let public = loaded.key.public_key();
        if !keyset::is_release_key(key_set, &public) {
            return Err(SignError::NotReleaseKey {
                key: loaded.spec,
                key_id: keyfile::key_id_hex(&public),
            });
        }
        if keys.iter().any(|k| k.public_key() == public) {
            return Err(SignError::DuplicateKey(loaded.spec));
        }
        keys.push(loaded.key);
    }
    Ok(keys)
}

/// SHA-256 of a small side file (release notes, SBOM), streamed.
fn hash_file(path: &Path) -> Result<[u8; 32], SignError> {
    let err = |source| SignError::Image {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(err)?;
    Ok(hasher.finalize().into())
}

fn now() -> Result<u64, SignError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| SignError::Clock)
}

/// Reserves disk space for the whole bundle up front: the kernel then allocates blocks once
/// instead of on every write, which is most of the cost of writing a large file.
fn preallocate(file: &File, len: u64) {
    #[cfg(target_os = "linux")]
    {
        // An optimisation only: file systems without fallocate still get the data.
        let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
}

fn build(args: &SignArgs, out: &mut dyn Write) -> Result<(), SignError> {
    // clap enforces these without a subcommand (`required = true`).
    let (
        Some(image_path),
        Some(key_set_path),
        Some(product),
        Some(component),
        Some(version),
        Some(counter),
        Some(dest),
    ) = (
        &args.image,
        &args.key_set,
        &args.product,
        &args.component,
        &args.image_version,
        args.security_counter,
        &args.out,
    )
    else {
        return Err(SignError::MissingArguments);
    };

    // Inputs first: every mistake is reported before the image is read.
    let key_set_file = KeySetFile::load(key_set_path)?;
    let signed_key_set = key_set_file.signed()?;
    let key_set = key_set_file.key_set()?;
    let root = args.root.as_deref().map(root::load).transpose()?;
    let chain = args
        .root_chain
        .as_deref()
        .map(root::load_chain)
        .transpose()?;
    // The root the key set must verify under: the chain's newest, walked from --root.
    let newest = match (&root, &chain) {
        (Some(root), Some(chain)) => Some(root::newest_root(root, chain)?),
        (root, _) => root.clone(),
    };
    if let (Some(root), Some(root_path)) = (&newest, &args.root) {
        let status = keyset::root_status(&signed_key_set, root);
        match status {
            Ok(RootStatus::Verified) => {}
            Ok(RootStatus::Incomplete { found, required }) => {
                return Err(SignError::KeySetRejected {
                    key_set: key_set_path.clone(),
                    root: root_path.clone(),
                    source: FormatError::ThresholdNotMet {
                        what: Signed::KeySet,
                        found,
                        required,
                    },
                })
            }
            Err(source) => {
                return Err(SignError::KeySetRejected {
                    key_set: key_set_path.clone(),
                    root: root_path.clone(),
                    source,
                })
            }
        }
    }
    if let Some(scope) = &key_set.product_scope {
        if *scope != product.id() {
            return Err(SignError::OutOfScope {
                scope: scope.to_string(),
                product: product.to_string(),
            });
        }
    }
    let keys = load_release_keys(&args.keys, &mut Hsm::new(), &key_set)?;
    let recipients = if args.encryption.any() {
        if args.content_key.is_none() {
            return Err(EncryptError::NoContentKeyFile.into());
        }
        Some(args.encryption.load()?)
    } else if args.content_key.is_some() || args.encryption.key_records.is_some() {
        // Encryption options without a recipient would be silently ignored: refuse them.
        return Err(EncryptError::NoRecipients.into());
    } else {
        None
    };

    let mut dependencies =
        heapless::Vec::<Dependency<'_>, { sigil_manifests::MAX_DEPENDENCIES }>::new();
    for d in &args.dependencies {
        dependencies
            .push(Dependency {
                component: &d.component.0,
                min_version: d.min_version.version(),
            })
            .map_err(|_| SignError::TooManyDependencies)?;
    }
    let created = match args.created {
        Some(t) => t.0,
        None => now()?,
    };
    let expires = match (args.expires, args.expires_in) {
        (Some(t), _) => Some(t.0),
        (None, Some(d)) => Some(created.saturating_add(d.0.as_secs())),
        (None, None) => None,
    };
    if let Some(expires) = expires {
        if expires <= created {
            return Err(SignError::ExpiresBeforeCreated { created, expires });
        }
    }
    let release_notes_digest = args.release_notes.as_deref().map(hash_file).transpose()?;
    let sbom_digest = args.sbom.as_deref().map(hash_file).transpose()?;

    let image_err = |source| SignError::Image {
        path: image_path.clone(),
        source,
    };
    let mut image = File::open(image_path).map_err(image_err)?;
    let payload_size = image.metadata().map_err(image_err)?.len();
    if payload_size == 0 {
        return Err(SignError::EmptyImage(image_path.clone()));
    }
    // Encrypting: the payload key depends on the image's digest, so the image is hashed in a
    // first pass (and again as it is encrypted, to catch a change in between).
    let content_key = match (&recipients, &args.content_key) {
        (Some(_), Some(path)) => {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; READ_BUFFER];
            let mut first = (&mut image).take(payload_size);
            loop {
                let n = read_full(&mut first, &mut buf).map_err(image_err)?;
                let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                    break;
                };
                hasher.update(chunk);
            }
            image.seek(SeekFrom::Start(0)).map_err(image_err)?;
            Some(ContentKeyFile::for_image(path, hasher.finalize().into())?)
        }
        _ => None,
    };
    let encryption = content_key
        .as_ref()
        .map(|(file, _)| file.key.encryption(file.plaintext_digest));
    let mut cipher = match (&content_key, &encryption) {
        (Some((file, _)), Some(e)) => Some(
            file.key
                .payload_cipher(e, payload_size)
                .map_err(SignError::Build)?,
        ),
        _ => None,
    };

    let mut manifest = Manifest {
        product: product.id(),
        component: &component.0,
        version: version.version(),
        security_counter: counter,
        payload_size,
        payload_digest: [0; 32],
        payload_format: encryption.map_or(PayloadFormat::Raw, PayloadFormat::Encrypted),
        payload_alignment: args.alignment,
        min_bootloader_version: args.min_bootloader_version,
        dependencies,
        created,
        expires,
        release_notes_digest,
        sbom_digest,
    };

    // The envelope's length (and so the payload offset) does not depend on the digest or on
    // the signature values: lay it out with placeholders, then write the payload in place.
    let placeholder_manifest = manifest.encode().map_err(SignError::Build)?;
    let mut placeholder = Envelope {
        signed_key_set: signed_key_set.clone(),
        manifest: &placeholder_manifest,
        manifest_signatures: Default::default(),
    };
    for key in &keys {
        let entry = SignatureEntry {
            key_id: key_id(&key.public_key()),
            signature: [0; 64],
        };
        placeholder
            .add_manifest_signature(entry)
            .map_err(SignError::Build)?;
    }
    let chain_bytes = chain.as_ref().map(|c| c.bytes.as_slice());
    let payload_offset = placeholder
        .encode_prefix_with_chain(chain_bytes)
        .map_err(SignError::Build)?
        .len() as u64;
    let total_len = payload_offset
        .checked_add(payload_size)
        .ok_or(SignError::Build(FormatError::LengthOverflow))?;

    let mut bundle =
        AtomicFile::create(dest, Overwrite::from_force(args.force), files::PUBLIC_MODE)?;
    preallocate(bundle.file(), total_len);
    bundle
        .file()
        .seek(SeekFrom::Start(payload_offset))
        .map_err(|e| bundle.error(e))?;
    let mut hasher = Sha256::new();
    let mut plain_hasher = Sha256::new();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut read: u64 = 0;
    loop {
        let n = read_full(&mut image, &mut buf).map_err(image_err)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        if let Some(cipher) = &mut cipher {
            plain_hasher.update(&*chunk);
            // Within the payload: `read + n` is at most the size checked below, or the loop
            // has already ended with an ImageChanged error.
            if cipher.apply(read, chunk).is_err() {
                return Err(SignError::ImageChanged {
                    path: image_path.clone(),
                    expected: payload_size,
                    read: read.saturating_add(n as u64),
                });
            }
        }
        hasher.update(&*chunk);
        bundle
            .file()
            .write_all(chunk)
            .map_err(|e| bundle.error(e))?;
        read = read.saturating_add(n as u64);
        if read > payload_size {
            break;
        }
    }
    if read != payload_size {
        return Err(SignError::ImageChanged {
            path: image_path.clone(),
            expected: payload_size,
            read,
        });
    }
    if let Some((file, _)) = &content_key {
        let plain: [u8; 32] = plain_hasher.finalize().into();
        if plain != file.plaintext_digest {
            return Err(EncryptError::ImageChanged(image_path.clone()).into());
        }
    }
    manifest.payload_digest = hasher.finalize().into();

    let manifest_bytes = manifest.encode().map_err(SignError::Build)?;
    let mut envelope = Envelope {
        signed_key_set,
        manifest: &manifest_bytes,
        manifest_signatures: Default::default(),
    };
    for key in &keys {
        envelope
            .add_manifest_signature(key.sign(&manifest_bytes)?)
            .map_err(SignError::Build)?;
    }
    let prefix = envelope
        .encode_prefix_with_chain(chain_bytes)
        .map_err(SignError::Build)?;
    if prefix.len() as u64 != payload_offset {
        // The format guarantees a digest-independent length; refuse rather than write a
        // bundle whose payload sits at the wrong offset.
        return Err(SignError::Build(FormatError::BadPayloadOffset));
    }
    let release_status = root
        .as_ref()
        .map(|r| envelope_status(r, &prefix))
        .transpose()
        .map_err(|source| {
            SignError::Bundle(InvalidBundle {
                path: dest.clone(),
                source,
            })
        })?;
    bundle
        .file()
        .seek(SeekFrom::Start(0))
        .map_err(|e| bundle.error(e))?;
    bundle
        .file()
        .write_all(&prefix)
        .map_err(|e| bundle.error(e))?;
    bundle.commit()?;
    // One key record per device, for the release as signed (its manifest digest).
    let records = match (&content_key, &recipients) {
        (Some((file, _)), Some(recipients)) => {
            let dir = args.encryption.records_dir(dest);
            let release = sigil_manifests::manifest_digest(&manifest_bytes);
            let paths = encrypt::write_records(&file.key, recipients, release, &dir)?;
            Some((dir, paths))
        }
        _ => None,
    };

    let mut report = || -> io::Result<()> {
        writeln!(
            out,
            "bundle {}: {total_len} bytes, payload at offset {payload_offset}",
            dest.display()
        )?;
        if let (Some((dir, paths)), Some((_, created)), Some(path)) =
            (&records, &content_key, &args.content_key)
        {
            writeln!(
                out,
                "encrypted (chacha20) for {} device(s): key records in {}",
                paths.len(),
                dir.display()
            )?;
            let how = if *created {
                "new"
            } else {
                "reused, same image"
            };
            writeln!(
                out,
                "content key: {} ({how}; secret, mode 0600: keep it to add recipients)",
                path.display()
            )?;
        }
        write!(out, "{}", report::manifest_text(&manifest))?;
        write_signature_status(
            out,
            envelope.manifest_signatures.len(),
            key_set.threshold,
            release_status,
        )
    };
    report().map_err(SignError::Output)
}

fn write_signature_status(
    out: &mut dyn Write,
    signatures: usize,
    threshold: u8,
    status: Option<ReleaseStatus>,
) -> io::Result<()> {
    writeln!(
        out,
        "release signatures: {signatures} (key set threshold {threshold})"
    )?;
    match status {
        Some(ReleaseStatus::Verified) => {
            writeln!(out, "signatures verify under the trust root; check the whole bundle with `sigil verify`")
        }
        Some(ReleaseStatus::Incomplete { found, required }) => writeln!(
            out,
            "release threshold not met yet: {found} of {required}; add signatures with `sigil sign add BUNDLE --key KEY`"
        ),
        None if signatures < usize::from(threshold) => writeln!(
            out,
            "release threshold not met yet; add signatures with `sigil sign add BUNDLE --key KEY`"
        ),
        None => writeln!(out, "not checked against a trust root: pass --root, or run `sigil verify`"),
    }
}

fn add(args: &SignAddArgs, out: &mut dyn Write) -> Result<(), SignError> {
    let bundle_path = args.bundle.as_path();
    let invalid = |source| {
        SignError::Bundle(InvalidBundle {
            path: bundle_path.to_owned(),
            source,
        })
    };
    let BundlePrefix {
        mut file,
        file_len,
        header,
        bytes: old_prefix,
    } = read_prefix(bundle_path)?;
    let total = header.total_len().map_err(invalid)?;
    if file_len < total {
        return Err(invalid(FormatError::Truncated));
    }
    if file_len > total {
        return Err(invalid(FormatError::TrailingData));
    }
    let parsed = UnverifiedBundle::parse(&old_prefix).map_err(invalid)?;
    let key_set = parsed.unverified_key_set().map_err(invalid)?;
    let manifest = parsed.unverified_manifest().map_err(invalid)?;
    let keys = load_release_keys(&args.keys, &mut Hsm::new(), &key_set)?;
    let root = args.root.as_deref().map(root::load).transpose()?;

    let mut envelope = parsed.clone().into_envelope();
    let mut additions = report::Additions::default();
    for key in &keys {
        let entry = key.sign(envelope.manifest)?;
        let outcome = envelope
            .add_manifest_signature(entry)
            .map_err(SignError::Build)?;
        additions.record(keyfile::key_id_hex(&key.public_key()), outcome);
    }
    // The root chain the bundle carries stays as it is.
    let prefix = envelope
        .encode_prefix_with_chain(parsed.chain())
        .map_err(SignError::Build)?;
    let dest = args.out.as_deref().unwrap_or(bundle_path);
    let release_status = root
        .as_ref()
        .map(|r| envelope_status(r, &prefix))
        .transpose()
        .map_err(|source| {
            SignError::Bundle(InvalidBundle {
                path: dest.to_owned(),
                source,
            })
        })?;

    // Every key given had already signed (ed25519 is deterministic: the same entry again):
    // nothing to write in place. With --out the copy is still written, as asked.
    let write = additions.changed() || args.out.is_some();
    let report = |out: &mut dyn Write| -> io::Result<()> {
        let what = format!("bundle {}", dest.display());
        write!(
            out,
            "{}",
            additions.summary(&what, "release", "this release", write)
        )?;
        write!(out, "{}", report::manifest_text(&manifest))?;
        write_signature_status(
            out,
            envelope.manifest_signatures.len(),
            key_set.threshold,
            release_status,
        )
    };
    if !write {
        return report(out).map_err(SignError::Output);
    }
    let overwrite = if args.out.is_some() {
        Overwrite::from_force(args.force)
    } else {
        Overwrite::Replace
    };
    let mut bundle = AtomicFile::create(dest, overwrite, files::PUBLIC_MODE)?;
    let new_total = (prefix.len() as u64).saturating_add(header.payload_size);
    preallocate(bundle.file(), new_total);
    bundle
        .file()
        .write_all(&prefix)
        .map_err(|e| bundle.error(e))?;
    // `read_prefix` left the file at the payload.
    // The payload is copied unchanged (in the kernel where the platform allows).
    let copied = io::copy(&mut (&mut file).take(header.payload_size), bundle.file())
        .map_err(|e| bundle.error(e))?;
    if copied != header.payload_size {
        return Err(invalid(FormatError::Truncated));
    }
    bundle.commit()?;
    report(out).map_err(SignError::Output)
}
