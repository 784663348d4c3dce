//! Encrypted releases (FORMAT.md §9): X25519 device key files, content-key files, key records,
//! and the commands `sigil encrypt add-recipient` and `sigil decrypt`.
//!
//! - Device keys are X25519 key pairs in the files `openssl genpkey -algorithm x25519` and
//!   `openssl pkey -pubout` write (RFC 8410: PKCS#8 v1 private key, SPKI public key, OID
//!   1.3.101.110), so an enrolment station may make them with either tool.
//! - A content-key file (`SGL-CKEY`, mode 0600) holds a release's content key and the SHA-256
//!   of the one image it encrypts: `sigil sign` refuses it for any other image, and
//!   `sigil encrypt add-recipient` wraps the key for devices enrolled after the release.
//! - Key records are written one per device, `<dir>/<recipient id>.wkey`, beside the bundle.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use rand_core::{OsRng, RngCore};
use sigil_manifests::encryption::{recipient_id, ContentKey, DeviceKey};
use sigil_manifests::{
    BundleVerifier, EncryptedPayload, Encryption, Error as FormatError, UnverifiedBundle,
    VERIFY_BUFFER_LEN,
};
use zeroize::Zeroizing;

use crate::bundle_file::{read_full, read_prefix, InvalidBundle, PrefixError};
use crate::exit::ExitCode;
use crate::files::{self, AtomicFile, FileError, Overwrite};
use crate::root::{self, RootError};
use crate::verify::{self, VerifyError, CHUNK};

/// Domain tag of a content-key file.
pub const CONTENT_KEY_TAG: &[u8; 8] = b"SGL-CKEY";
/// Length of a content-key file: tag, version, key, image digest.
const CONTENT_KEY_LEN: usize = 10 + 64;
/// DER of an X25519 PKCS#8 v1 private key before its 32 bytes (RFC 8410 §7).
const PRIVATE_DER_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];
/// DER of an X25519 SubjectPublicKeyInfo before its 32 bytes (RFC 8410 §4).
const PUBLIC_DER_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
];

/// Errors of encryption: key files, content-key files, key records, the two commands.
#[derive(Debug, thiserror::Error)]
pub enum EncryptError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The trust root could not be loaded.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The bundle failed verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The bundle is not a valid bundle.
    #[error(transparent)]
    Bundle(#[from] InvalidBundle),
    /// The file is not an X25519 private key.
    #[error("{0} is not an X25519 private key (PKCS#8 PEM, as `sigil keygen --x25519` or `openssl genpkey -algorithm x25519` write)")]
    NotPrivateKey(PathBuf),
    /// The file holds no X25519 public key, or something else.
    #[error("{0} is not an X25519 public key file (one or more SPKI PEM blocks, as `sigil keygen --x25519` or `openssl pkey -pubout` write)")]
    NotPublicKey(PathBuf),
    /// A recipient key is a small-order point: no secret key belongs to it.
    #[error("recipient key {0} is not usable (a small-order X25519 point)")]
    WeakRecipient(PathBuf),
    /// The same recipient is given twice.
    #[error("recipient key {id} is given twice ({path})")]
    DuplicateRecipient {
        /// The recipient id, hex.
        id: String,
        /// Where it was given the second time.
        path: PathBuf,
    },
    /// Encrypting needs at least one recipient.
    #[error("no recipients: pass --encrypt-to DEVICE.pub.pem or --recipients FILE")]
    NoRecipients,
    /// Encrypting needs a content-key file.
    #[error("encrypting needs --content-key FILE (written if missing; keep it secret: it adds recipients later)")]
    NoContentKeyFile,
    /// The file is not a content-key file.
    #[error("{0} is not a Sigil content-key file (SGL-CKEY)")]
    NotContentKey(PathBuf),
    /// The content-key file was made for another image: using it would reuse a keystream.
    #[error("content-key file {path} encrypts the image with SHA-256 {expected}, not this one ({actual}); a content key encrypts one image only (keystream reuse): pass a new --content-key path")]
    ContentKeyReuse {
        /// The content-key file.
        path: PathBuf,
        /// The image it belongs to.
        expected: String,
        /// The image given.
        actual: String,
    },
    /// The bundle's payload is not encrypted.
    #[error("bundle {0} is not encrypted")]
    NotEncrypted(PathBuf),
    /// The content key does not belong to the bundle.
    #[error("content-key file {key} does not belong to bundle {bundle}")]
    ForeignContentKey {
        /// The content-key file.
        key: PathBuf,
        /// The bundle.
        bundle: PathBuf,
        /// Why (step D4, or the image digest).
        #[source]
        source: FormatError,
    },
    /// The key record cannot be opened with the device key.
    #[error("key record {record} does not open bundle {bundle} with this device key")]
    Record {
        /// The key record file.
        record: PathBuf,
        /// The bundle.
        bundle: PathBuf,
        /// Why (the step of FORMAT.md §9).
        #[source]
        source: FormatError,
    },
    /// The image changed while it was read.
    #[error("image {0} changed while it was read")]
    ImageChanged(PathBuf),
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

impl EncryptError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            EncryptError::Verify(v) => v.exit_code(),
            EncryptError::Bundle(b) => b.exit_code(),
            EncryptError::Record { source, .. }
            | EncryptError::ForeignContentKey { source, .. } => ExitCode::of_error(source),
            _ => ExitCode::Failure,
        }
    }
}

impl From<PrefixError> for EncryptError {
    fn from(e: PrefixError) -> Self {
        match e {
            PrefixError::File(e) => EncryptError::File(e),
            PrefixError::Invalid(e) => EncryptError::Bundle(e),
        }
    }
}

/// One PEM block: its label and DER bytes.
type PemBlock = (String, Zeroizing<Vec<u8>>);

/// The PEM blocks of a file.
fn pem_blocks(path: &Path) -> Result<Vec<PemBlock>, EncryptError> {
    let bytes = Zeroizing::new(files::read_document(path)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| EncryptError::NotPublicKey(path.into()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(end_marker) = block.find("-----END ") else {
            break;
        };
        // The END line runs to its closing dashes.
        let after = &block[end_marker + 9..];
        let Some(close) = after.find("-----") else {
            break;
        };
        let len = end_marker + 9 + close + 5;
        let (label, der) = pem::decode_vec(&block.as_bytes()[..len])
            .map_err(|_| EncryptError::NotPublicKey(path.into()))?;
        blocks.push((label.to_owned(), Zeroizing::new(der)));
        rest = &block[len..];
    }
    Ok(blocks)
}

fn key_bytes(der: &[u8], prefix: &[u8]) -> Option<[u8; 32]> {
    der.strip_prefix(prefix)?.try_into().ok()
}

/// Loads a device's X25519 private key (PKCS#8 v1 PEM).
pub fn load_device_key(path: &Path) -> Result<DeviceKey, EncryptError> {
    let not = || EncryptError::NotPrivateKey(path.into());
    let blocks = pem_blocks(path).map_err(|_| not())?;
    match blocks.as_slice() {
        [(label, der)] if label == "PRIVATE KEY" => key_bytes(der, &PRIVATE_DER_PREFIX)
            .map(DeviceKey::from_secret)
            .ok_or_else(not),
        _ => Err(not()),
    }
}

/// Loads the X25519 public keys of a file: one or more SPKI PEM blocks (a recipients file is
/// the device public keys concatenated).
pub fn load_public_keys(path: &Path) -> Result<Vec<[u8; 32]>, EncryptError> {
    let not = || EncryptError::NotPublicKey(path.into());
    let blocks = pem_blocks(path)?;
    if blocks.is_empty() {
        return Err(not());
    }
    blocks
        .iter()
        .map(|(label, der)| match label.as_str() {
            "PUBLIC KEY" => key_bytes(der, &PUBLIC_DER_PREFIX).ok_or_else(not),
            _ => Err(not()),
        })
        .collect()
}

/// Encodes an X25519 private key as PKCS#8 v1 PEM, as OpenSSL does.
pub fn private_key_pem(secret: &[u8; 32]) -> Zeroizing<String> {
    let mut der = Zeroizing::new(PRIVATE_DER_PREFIX.to_vec());
    der.extend_from_slice(secret);
    // PEM encoding of a 48-byte input into a String cannot fail.
    Zeroizing::new(pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).unwrap_or_default())
}

/// Encodes an X25519 public key as SPKI PEM.
pub fn public_key_pem(public: &[u8; 32]) -> String {
    let mut der = PUBLIC_DER_PREFIX.to_vec();
    der.extend_from_slice(public);
    // PEM encoding of a 44-byte input into a String cannot fail.
    pem::encode_string("PUBLIC KEY", LineEnding::LF, &der).unwrap_or_default()
}

/// Generates a device key pair: the 32 random private bytes.
pub fn generate_secret() -> Zeroizing<[u8; 32]> {
    let mut secret = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(secret.as_mut());
    secret
}

/// The recipients of an encrypted release on the command line.
#[derive(Debug, Args, Default, Clone)]
pub struct RecipientArgs {
    /// Encrypt for this device's X25519 public key (SPKI PEM; `sigil keygen --x25519`).
    /// Repeat for more devices.
    #[arg(long = "encrypt-to", value_name = "DEVICE.pub.pem")]
    pub encrypt_to: Vec<PathBuf>,

    /// Encrypt for every X25519 public key in this file (SPKI PEM blocks, concatenated).
    #[arg(long, value_name = "FILE")]
    pub recipients: Vec<PathBuf>,

    /// Where to write one key record per device, `<recipient id>.wkey` [default: the bundle
    /// path + `.wkeys`]. The server hands each device its record with the check-in.
    #[arg(long, value_name = "DIR")]
    pub key_records: Option<PathBuf>,
}

/// One recipient: its public key and where it came from.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The X25519 public key.
    pub public: [u8; 32],
    /// The file it was read from.
    pub path: PathBuf,
}

impl RecipientArgs {
    /// Whether any recipient is given (the release is to be encrypted).
    pub fn any(&self) -> bool {
        !self.encrypt_to.is_empty() || !self.recipients.is_empty()
    }

    /// The recipients, each once.
    pub fn load(&self) -> Result<Vec<Recipient>, EncryptError> {
        let mut all: Vec<Recipient> = Vec::new();
        for path in self.encrypt_to.iter().chain(&self.recipients) {
            for public in load_public_keys(path)? {
                if all.iter().any(|r| r.public == public) {
                    return Err(EncryptError::DuplicateRecipient {
                        id: hex::encode(recipient_id(&public)),
                        path: path.clone(),
                    });
                }
                all.push(Recipient {
                    public,
                    path: path.clone(),
                });
            }
        }
        if all.is_empty() {
            return Err(EncryptError::NoRecipients);
        }
        Ok(all)
    }

    /// The key record directory for a bundle at `bundle`.
    pub fn records_dir(&self, bundle: &Path) -> PathBuf {
        self.key_records.clone().unwrap_or_else(|| {
            let mut name = bundle.as_os_str().to_owned();
            name.push(".wkeys");
            PathBuf::from(name)
        })
    }
}

/// A content-key file: the key and the SHA-256 of the image it encrypts.
pub struct ContentKeyFile {
    /// The content key.
    pub key: ContentKey,
    /// SHA-256 of the one image it encrypts.
    pub plaintext_digest: [u8; 32],
}

impl ContentKeyFile {
    /// Reads and strictly decodes a content-key file.
    pub fn load(path: &Path) -> Result<Self, EncryptError> {
        let bytes = Zeroizing::new(files::read_document(path)?);
        let not = || EncryptError::NotContentKey(path.into());
        let body = bytes
            .strip_prefix(&CONTENT_KEY_TAG[..])
            .and_then(|b| b.strip_prefix(&1u16.to_le_bytes()[..]))
            .filter(|b| b.len() == 64)
            .ok_or_else(not)?;
        let (key, digest) = body.split_at(32);
        Ok(ContentKeyFile {
            key: ContentKey::from_bytes(key.try_into().map_err(|_| not())?),
            plaintext_digest: digest.try_into().map_err(|_| not())?,
        })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(CONTENT_KEY_LEN));
        out.extend_from_slice(CONTENT_KEY_TAG);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&self.key.to_bytes());
        out.extend_from_slice(&self.plaintext_digest);
        out
    }

    /// The content key for the image with SHA-256 `plaintext_digest`: the one in `path` if the
    /// file exists (refused if it was made for another image), else a new random key written
    /// there (mode 0600). Returns the key and whether it was created.
    pub fn for_image(
        path: &Path,
        plaintext_digest: [u8; 32],
    ) -> Result<(Self, bool), EncryptError> {
        if path.symlink_metadata().is_ok() {
            let file = Self::load(path)?;
            if file.plaintext_digest != plaintext_digest {
                return Err(EncryptError::ContentKeyReuse {
                    path: path.to_owned(),
                    expected: hex::encode(file.plaintext_digest),
                    actual: hex::encode(plaintext_digest),
                });
            }
            return Ok((file, false));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        let file = ContentKeyFile {
            key: ContentKey::from_bytes(*key),
            plaintext_digest,
        };
        files::write_atomic(path, &file.encode(), Overwrite::Never, files::SECRET_MODE)?;
        Ok((file, true))
    }
}

/// Wraps `key` for every recipient of the release with manifest digest `release` and writes
/// the records into `dir` (created if missing; a record of the same device is replaced).
/// Returns the record paths.
pub fn write_records(
    key: &ContentKey,
    recipients: &[Recipient],
    release: [u8; 32],
    dir: &Path,
) -> Result<Vec<PathBuf>, EncryptError> {
    std::fs::create_dir_all(dir).map_err(|source| FileError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for r in recipients {
        let mut ephemeral = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(ephemeral.as_mut());
        let record = key
            .wrap(&r.public, *ephemeral, release)
            .map_err(|_| EncryptError::WeakRecipient(r.path.clone()))?;
        let path = dir.join(format!("{}.wkey", hex::encode(record.recipient)));
        files::write_atomic(
            &path,
            &record.encode(),
            Overwrite::Replace,
            files::PUBLIC_MODE,
        )?;
        paths.push(path);
    }
    Ok(paths)
}

/// `sigil encrypt` subcommands.
#[derive(Debug, Subcommand)]
pub enum EncryptCommand {
    /// Wrap a signed encrypted release's content key for more devices (newly enrolled ones),
    /// without re-encrypting or re-signing anything.
    AddRecipient(AddRecipientArgs),
}

/// Arguments of `sigil encrypt add-recipient`.
#[derive(Debug, Args)]
pub struct AddRecipientArgs {
    /// The encrypted bundle.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,

    /// The release's content-key file (`sigil sign --content-key`).
    #[arg(long, value_name = "FILE")]
    pub content_key: PathBuf,

    /// The new recipients.
    #[command(flatten)]
    pub recipients: RecipientArgs,
}

/// Runs `sigil encrypt`.
pub fn run(command: &EncryptCommand, out: &mut dyn Write) -> Result<(), EncryptError> {
    match command {
        EncryptCommand::AddRecipient(args) => add_recipient(args, out),
    }
}

/// The release identity and encryption parameters of a bundle file, read without a key.
fn bundle_encryption(path: &Path) -> Result<([u8; 32], Encryption), EncryptError> {
    let prefix = read_prefix(path)?;
    let invalid = |source| InvalidBundle {
        path: path.to_owned(),
        source,
    };
    let parsed = UnverifiedBundle::parse(&prefix.bytes).map_err(invalid)?;
    let manifest = parsed.unverified_manifest().map_err(invalid)?;
    let encryption = *manifest
        .payload_format
        .encryption()
        .ok_or_else(|| EncryptError::NotEncrypted(path.to_owned()))?;
    Ok((
        sigil_manifests::manifest_digest(parsed.envelope().manifest),
        encryption,
    ))
}

fn add_recipient(args: &AddRecipientArgs, out: &mut dyn Write) -> Result<(), EncryptError> {
    let recipients = args.recipients.load()?;
    let (release, encryption) = bundle_encryption(&args.bundle)?;
    let file = ContentKeyFile::load(&args.content_key)?;
    let foreign = |source| EncryptError::ForeignContentKey {
        key: args.content_key.clone(),
        bundle: args.bundle.clone(),
        source,
    };
    if file.plaintext_digest != encryption.plaintext_digest {
        return Err(foreign(FormatError::WrongContentKey));
    }
    file.key.check(&encryption).map_err(foreign)?;
    let dir = args.recipients.records_dir(&args.bundle);
    let paths = write_records(&file.key, &recipients, release, &dir)?;
    let mut report = || -> io::Result<()> {
        writeln!(
            out,
            "{} key record(s) for {} in {}",
            paths.len(),
            args.bundle.display(),
            dir.display()
        )?;
        for (r, p) in recipients.iter().zip(&paths) {
            writeln!(out, "  {} ({})", p.display(), r.path.display())?;
        }
        Ok(())
    };
    report().map_err(EncryptError::Output)
}

/// Arguments of `sigil decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The encrypted bundle.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,

    /// The trust root: the bundle is verified (as ciphertext) before anything is decrypted.
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,

    /// The device's X25519 private key (PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    pub device_key: PathBuf,

    /// The device's key record of this release.
    #[arg(long, value_name = "FILE")]
    pub key_record: PathBuf,

    /// Where to write the decrypted image (mode 0600); written only if it verifies against
    /// the manifest's plaintext digest.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Runs `sigil decrypt`: what a device does, on the host. Verifies the bundle as ciphertext,
/// opens the key record (steps D1–D4), then runs the verification sequence again over the
/// bundle with the payload decrypted (step 9 against the plaintext digest) while the image is
/// written.
pub fn decrypt(args: &DecryptArgs, out: &mut dyn Write) -> Result<(), EncryptError> {
    let root = root::load(&args.root)?;
    let device = load_device_key(&args.device_key)?;
    let record = files::read_document(&args.key_record)?;
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let verified = verify::verify_file(
        &args.bundle,
        &root,
        sigil_manifests::DevicePolicy::any_device(),
        &mut buf,
    )?;
    let record_err = |source| EncryptError::Record {
        record: args.key_record.clone(),
        bundle: args.bundle.clone(),
        source,
    };
    let key = device.open(&record, &verified).map_err(record_err)?;
    let encryption = *verified
        .manifest()
        .payload_format
        .encryption()
        .ok_or_else(|| EncryptError::NotEncrypted(args.bundle.clone()))?;
    let payload_offset = verified.payload_offset();
    let payload_size = verified.payload_size();
    let mut cipher = key
        .payload_cipher(&encryption, payload_size)
        .map_err(record_err)?;
    drop(verified);

    // The second pass: the same sequence over the decrypted image.
    let read_err = |source| FileError::Read {
        path: args.bundle.clone(),
        source,
    };
    let invalid = |source| InvalidBundle {
        path: args.bundle.clone(),
        source,
    };
    let mut file = File::open(&args.bundle).map_err(read_err)?;
    let mut envelope = vec![0u8; VERIFY_BUFFER_LEN];
    let policy = sigil_manifests::DevicePolicy::any_device()
        .with_encrypted_payload(EncryptedPayload::Decrypted);
    let mut verifier = BundleVerifier::new(&root, policy, &mut envelope);
    let mut prefix = vec![0u8; usize::try_from(payload_offset).unwrap_or(usize::MAX)];
    if read_full(&mut file, &mut prefix).map_err(read_err)? != prefix.len() {
        return Err(EncryptError::Bundle(invalid(FormatError::Truncated)));
    }
    verifier.feed(&prefix).map_err(invalid)?;
    let mut image = AtomicFile::create(
        &args.out,
        Overwrite::from_force(args.force),
        files::SECRET_MODE,
    )?;
    file.seek(SeekFrom::Start(payload_offset))
        .map_err(read_err)?;
    let mut chunk = vec![0u8; CHUNK];
    let mut offset = 0u64;
    let mut payload = (&mut file).take(payload_size);
    loop {
        let n = read_full(&mut payload, &mut chunk).map_err(read_err)?;
        if n == 0 {
            break;
        }
        let data = &mut chunk[..n];
        cipher.apply(offset, data).map_err(record_err)?;
        verifier.feed(data).map_err(invalid)?;
        image.file().write_all(data).map_err(|e| image.error(e))?;
        offset = offset.saturating_add(n as u64);
    }
    let verified = verifier.finish().map_err(invalid)?;
    image.commit()?;
    let m = verified.manifest();
    writeln!(
        out,
        "decrypted {}: {} {} {} ({} bytes, sha256 {}) into {}",
        args.bundle.display(),
        m.product,
        m.component,
        m.version,
        m.payload_size,
        hex::encode(encryption.plaintext_digest),
        args.out.display()
    )
    .map_err(EncryptError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let secret = [5u8; 32];
        let key = DeviceKey::from_secret(secret);
        let private = dir.path().join("d.pem");
        std::fs::write(&private, private_key_pem(&secret).as_bytes()).unwrap();
        assert_eq!(load_device_key(&private).unwrap().id(), key.id());
        let public = dir.path().join("d.pub.pem");
        let two = format!(
            "{}{}",
            public_key_pem(&key.public_key()),
            public_key_pem(&[9; 32])
        );
        std::fs::write(&public, two).unwrap();
        assert_eq!(
            load_public_keys(&public).unwrap(),
            vec![key.public_key(), [9; 32]]
        );
        assert!(matches!(
            load_device_key(&public),
            Err(EncryptError::NotPrivateKey(_))
        ));
        assert!(matches!(
            load_public_keys(&private),
            Err(EncryptError::NotPublicKey(_))
        ));
    }

    #[test]
    fn content_key_file_is_refused_for_another_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck");
        let (first, created) = ContentKeyFile::for_image(&path, [1; 32]).unwrap();
        assert!(created);
        let (again, created) = ContentKeyFile::for_image(&path, [1; 32]).unwrap();
        assert!(!created);
        assert_eq!(again.key.to_bytes(), first.key.to_bytes());
        assert!(matches!(
            ContentKeyFile::for_image(&path, [2; 32]),
            Err(EncryptError::ContentKeyReuse { .. })
        ));
    }
}
