//! `sigil inspect`: show a bundle, key set, trust root or key file.
//!
//! The file type is recognised by its domain tag (`SGL-BNDL`, `SGL-SKEY`, `SGL-ROOT`) or PEM
//! armour. Bundle contents are shown as UNVERIFIED unless `--root` is given and the whole
//! bundle passes verification.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};
use sigil_manifests::bundle::BUNDLE_MAGIC;
use sigil_manifests::encryption::{recipient_id, KeyRecord, KEY_RECORD_TAG};
use sigil_manifests::keyset::SIGNED_KEY_SET_TAG;
use sigil_manifests::root::TRUST_ROOT_TAG;
use sigil_manifests::rotation::ROOT_CHAIN_TAG;
use sigil_manifests::{
    DevicePolicy, Error as FormatError, TrustRoot, UnverifiedBundle, VERIFY_BUFFER_LEN,
};

use crate::bundle_file::InvalidBundle;
use crate::bundle_file::{read_full, read_prefix, PrefixError};
use crate::encrypt::{self, ContentKeyFile, EncryptError, CONTENT_KEY_TAG};
use crate::exit::ExitCode;
use crate::files::FileError;
use crate::keyfile::{self, KeyError};
use crate::keyset::{self, KeySetFile, KeysetError, RootStatus};
use crate::report;
use crate::root::{self, RootError};
use crate::verify::{self, error_chain, VerifyError};

/// Arguments of `sigil inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A bundle, key set, trust root or PEM key file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Verify against this trust root (bundles and key sets); without it, bundle contents are
    /// shown as UNVERIFIED.
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,

    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `sigil inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The trust root could not be loaded.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The key set file is invalid.
    #[error(transparent)]
    KeySet(#[from] KeysetError),
    /// A key file is invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The bundle is invalid.
    #[error(transparent)]
    Bundle(#[from] InvalidBundle),
    /// Verification failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// An encryption file (key record, content-key file, X25519 key) is invalid.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// A key record does not decode.
    #[error("{path} is not a valid key record")]
    KeyRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// The file is of no known type.
    #[error(
        "{0} is not a Sigil bundle, key set, trust root, key record, content-key file or PEM key"
    )]
    Unrecognised(PathBuf),
    /// The key set does not verify under the root.
    #[error("key set {path} does not verify under the trust root")]
    KeySetRejected {
        /// The key set file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// Writing the report failed.
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

impl InspectError {
    /// The exit code of this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            InspectError::Bundle(b) => b.exit_code(),
            InspectError::Verify(v) => v.exit_code(),
            InspectError::KeyRecord { source, .. } => ExitCode::of_error(source),
            _ => ExitCode::Failure,
        }
    }
}

impl From<PrefixError> for InspectError {
    fn from(e: PrefixError) -> Self {
        match e {
            PrefixError::File(e) => InspectError::File(e),
            PrefixError::Invalid(e) => InspectError::Bundle(e),
        }
    }
}

/// Runs `sigil inspect`.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<(), InspectError> {
    let path = args.file.as_path();
    let mut magic = [0u8; 11];
    let mut f = std::fs::File::open(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let n = read_full(&mut f, &mut magic).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let magic = &magic[..n];
    let root = args.root.as_deref().map(root::load).transpose()?;
    if magic.starts_with(BUNDLE_MAGIC) {
        bundle(args, root.as_ref(), out)
    } else if magic.starts_with(SIGNED_KEY_SET_TAG) {
        key_set(args, root.as_ref(), out)
    } else if magic.starts_with(TRUST_ROOT_TAG) {
        trust_root(args, out)
    } else if magic.starts_with(ROOT_CHAIN_TAG) {
        root_chain(args, root.as_ref(), out)
    } else if magic.starts_with(KEY_RECORD_TAG) {
        key_record(args, out)
    } else if magic.starts_with(CONTENT_KEY_TAG) {
        content_key(args, out)
    } else if magic.starts_with(b"-----BEGIN ") {
        pem_key(args, out)
    } else {
        Err(InspectError::Unrecognised(path.to_owned()))
    }
}

fn emit(
    out: &mut dyn Write,
    args: &InspectArgs,
    value: &Value,
    text: &str,
) -> Result<(), InspectError> {
    let written = if args.json {
        writeln!(out, "{value:#}")
    } else {
        write!(out, "{text}")
    };
    written.map_err(InspectError::Output)
}

fn bundle(
    args: &InspectArgs,
    root: Option<&TrustRoot>,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let path = &args.file;
    let invalid = |source| InvalidBundle {
        path: path.clone(),
        source,
    };
    let prefix = read_prefix(path)?;
    let parsed = UnverifiedBundle::parse(&prefix.bytes).map_err(invalid)?;
    let key_set = parsed.unverified_key_set().map_err(invalid)?;
    let manifest = parsed.unverified_manifest().map_err(invalid)?;
    let envelope = parsed.envelope();
    let header = parsed.header();
    let declared = header.total_len().map_err(invalid)?;

    // Verification, when asked, is the full streamed sequence over the whole file.
    let mut buf = vec![0u8; VERIFY_BUFFER_LEN];
    let verdict: Option<Result<(), InvalidBundle>> = match root {
        None => None,
        Some(root) => match verify::verify_file(path, root, DevicePolicy::any_device(), &mut buf) {
            Ok(_) => Some(Ok(())),
            Err(VerifyError::Invalid(e)) => Some(Err(e)),
            Err(other) => return Err(other.into()),
        },
    };
    let (status, label) = match &verdict {
        None => (
            "unverified",
            "UNVERIFIED (pass --root to verify)".to_owned(),
        ),
        Some(Ok(())) => ("verified", "VERIFIED under the trust root".to_owned()),
        Some(Err(e)) => ("invalid", format!("INVALID: {}", error_chain(&e.source))),
    };
    let tag = if status == "verified" {
        ""
    } else {
        " (UNVERIFIED)"
    };

    let mut key_set_value = report::key_set_json(&key_set);
    key_set_value["signatures"] = report::signatures_json(&envelope.signed_key_set.signatures);
    let mut manifest_value = report::manifest_json(&manifest);
    manifest_value["signatures"] = report::signatures_json(&envelope.manifest_signatures);
    let value = json!({
        "type": "bundle",
        "path": path.display().to_string(),
        "status": status,
        "verified": status == "verified",
        "error": verdict.as_ref().and_then(|v| v.as_ref().err()).map(|e| e.source.to_string()),
        "file_size": prefix.file_len,
        "header": {
            "envelope_len": header.envelope_len,
            "payload_offset": header.payload_offset,
            "payload_size": header.payload_size,
            "total_len": declared,
        },
        "root_chain": parsed.chain().map(report::chain_json),
        "key_set": key_set_value,
        "manifest": manifest_value,
    });

    let mut text = format!("bundle {}: {label}\n", path.display());
    text.push_str(&format!(
        "  size:               {} bytes (header declares {declared}), payload at offset {}\n",
        prefix.file_len, header.payload_offset
    ));
    if prefix.file_len != declared {
        text.push_str(
            "  warning:            the file size differs from what the header declares\n",
        );
    }
    if let Some(chain) = parsed.chain() {
        text.push_str(&format!("root chain{tag}:\n"));
        text.push_str(&report::chain_text(chain));
    }
    text.push_str(&format!("key set{tag}:\n"));
    text.push_str(&report::key_set_text(&key_set));
    for s in &envelope.signed_key_set.signatures {
        text.push_str(&format!(
            "  root signature:     {}\n",
            hex::encode(s.key_id)
        ));
    }
    text.push_str(&format!("manifest{tag}:\n"));
    text.push_str(&report::manifest_text(&manifest));
    for s in &envelope.manifest_signatures {
        text.push_str(&format!(
            "  release signature:  {}\n",
            hex::encode(s.key_id)
        ));
    }
    emit(out, args, &value, &text)?;
    match verdict {
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

fn key_set(
    args: &InspectArgs,
    root: Option<&TrustRoot>,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let file = KeySetFile::load(&args.file)?;
    let signed = file.signed()?;
    let set = file.key_set()?;
    let status = root.map(|r| keyset::root_status(&signed, r));
    let (status_name, label) = match &status {
        None => (
            "unverified",
            "root signatures UNVERIFIED (pass --root to check)".to_owned(),
        ),
        Some(Ok(RootStatus::Verified)) => (
            "verified",
            "VERIFIED: the root threshold signed it".to_owned(),
        ),
        Some(Ok(RootStatus::Incomplete { found, required })) => (
            "incomplete",
            format!("INCOMPLETE: {found} of {required} root signatures"),
        ),
        Some(Err(e)) => ("invalid", format!("INVALID: {e}")),
    };
    let mut set_value = report::key_set_json(&set);
    set_value["signatures"] = report::signatures_json(&signed.signatures);
    let value = json!({
        "type": "key_set",
        "path": args.file.display().to_string(),
        "status": status_name,
        "key_set": set_value,
    });
    let mut text = format!("key set {}: {label}\n", args.file.display());
    text.push_str(&report::key_set_text(&set));
    for s in &signed.signatures {
        text.push_str(&format!(
            "  root signature:     {}\n",
            hex::encode(s.key_id)
        ));
    }
    emit(out, args, &value, &text)?;
    match status {
        Some(Err(source)) => Err(InspectError::KeySetRejected {
            path: args.file.clone(),
            source,
        }),
        _ => Ok(()),
    }
}

fn root_chain(
    args: &InspectArgs,
    root: Option<&TrustRoot>,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let chain = root::load_chain(&args.file)?;
    let verdict = root.map(|r| root::newest_root(r, &chain));
    let (status, label) = match &verdict {
        None => (
            "unverified",
            "UNVERIFIED (pass --root to verify)".to_owned(),
        ),
        Some(Ok(newest)) => (
            "verified",
            format!(
                "VERIFIED from the trust root to root {}",
                newest.root_version
            ),
        ),
        Some(Err(e)) => ("invalid", format!("INVALID: {}", error_chain(e))),
    };
    let value = json!({
        "type": "root_chain",
        "path": args.file.display().to_string(),
        "status": status,
        "updates": report::chain_json(&chain.bytes),
    });
    let mut text = format!("root chain {}: {label}\n", args.file.display());
    text.push_str(&report::chain_text(&chain.bytes));
    emit(out, args, &value, &text)?;
    match verdict {
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

fn trust_root(args: &InspectArgs, out: &mut dyn Write) -> Result<(), InspectError> {
    let root = root::load(&args.file)?;
    let value = json!({
        "type": "trust_root",
        "path": args.file.display().to_string(),
        "root": report::root_json(&root),
    });
    let mut text = format!("trust root {}:\n", args.file.display());
    text.push_str(&format!("  version:            {}\n", root.root_version));
    text.push_str(&format!(
        "  threshold:          {} of {} root keys\n",
        root.threshold,
        root.keys.len()
    ));
    for key in &root.keys {
        text.push_str(&format!(
            "  root key:           {}\n",
            keyfile::key_id_hex(key)
        ));
    }
    emit(out, args, &value, &text)
}

fn pem_key(args: &InspectArgs, out: &mut dyn Write) -> Result<(), InspectError> {
    let path: &Path = &args.file;
    let mut head = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_string(&mut head))
        .map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
    let kind = if head.contains("PRIVATE KEY") {
        "private_key"
    } else {
        "public_key"
    };
    let public = match keyfile::load_public_key(path) {
        Ok(public) => public,
        Err(e) => return x25519_key(args, kind, out).map_err(|_| e.into()),
    };
    let value = json!({
        "type": kind,
        "path": path.display().to_string(),
        "algorithm": "ed25519",
        "key_id": keyfile::key_id_hex(&public),
        "public_key": hex::encode(public),
    });
    let text = format!(
        "{} {}: ed25519\n  key id:             {}\n  public key:         {}\n",
        kind.replace('_', " "),
        path.display(),
        keyfile::key_id_hex(&public),
        hex::encode(public)
    );
    emit(out, args, &value, &text)
}

/// A key record (`SGL-WKEY`): who and which release it is for; nothing is decrypted.
fn key_record(args: &InspectArgs, out: &mut dyn Write) -> Result<(), InspectError> {
    let path: &Path = &args.file;
    let bytes = crate::files::read_document(path)?;
    let record = KeyRecord::decode(&bytes).map_err(|source| InspectError::KeyRecord {
        path: path.to_owned(),
        source,
    })?;
    let value = json!({
        "type": "key_record",
        "path": path.display().to_string(),
        "recipient_id": hex::encode(record.recipient),
        "release_manifest_sha256": hex::encode(record.release),
        "ephemeral_key": hex::encode(record.ephemeral),
    });
    let text = format!(
        "key record {} (encrypted release, not signed: a forged record fails the key commitment)\n  recipient id:       {}\n  release (manifest): {}\n  ephemeral key:      {}\n",
        path.display(),
        hex::encode(record.recipient),
        hex::encode(record.release),
        hex::encode(record.ephemeral),
    );
    emit(out, args, &value, &text)
}

/// A content-key file: which image it encrypts; the key itself is never shown.
fn content_key(args: &InspectArgs, out: &mut dyn Write) -> Result<(), InspectError> {
    let path: &Path = &args.file;
    let file = ContentKeyFile::load(path)?;
    let value = json!({
        "type": "content_key",
        "path": path.display().to_string(),
        "secret": true,
        "plaintext_sha256": hex::encode(file.plaintext_digest),
    });
    let text = format!(
        "content-key file {} (SECRET: keep it offline)\n  encrypts the image: {}\n",
        path.display(),
        hex::encode(file.plaintext_digest),
    );
    emit(out, args, &value, &text)
}

/// An X25519 device key (PEM): its recipient id.
fn x25519_key(args: &InspectArgs, kind: &str, out: &mut dyn Write) -> Result<(), InspectError> {
    let path: &Path = &args.file;
    let publics = match encrypt::load_device_key(path) {
        Ok(key) => vec![key.public_key()],
        Err(_) => encrypt::load_public_keys(path)?,
    };
    let keys: Vec<_> = publics
        .iter()
        .map(|p| json!({ "recipient_id": hex::encode(recipient_id(p)), "public_key": hex::encode(p) }))
        .collect();
    let value = json!({
        "type": kind,
        "path": path.display().to_string(),
        "algorithm": "x25519",
        "keys": keys,
    });
    let mut text = format!(
        "{} {}: x25519 (device encryption key)\n",
        kind.replace('_', " "),
        path.display()
    );
    for p in &publics {
        text.push_str(&format!(
            "  recipient id:       {}\n  public key:         {}\n",
            hex::encode(recipient_id(p)),
            hex::encode(p)
        ));
    }
    emit(out, args, &value, &text)
}
