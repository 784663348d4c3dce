//! The content-addressed bundle store: `<data_dir>/bundles/<sha256 of the bundle file>`.
//!
//! An upload streams into `<data_dir>/tmp/` while `sigil-manifests` verifies it; only a bundle
//! that passed every step is fsynced and renamed into place (then the directory is fsynced), so
//! a crash never leaves a partial bundle under a content address. The release row is written
//! after the rename; [`BundleStore::reconcile`] removes, at start-up, temporary files and bundles
//! that no release names (a crash between the rename and the database commit).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use sigil_manifests::{BundleVerifier, DevicePolicy, RootFloor, TrustRoot, VERIFY_BUFFER_LEN};
use tokio::sync::mpsc::Receiver;

/// One message of an upload stream.
#[derive(Debug)]
pub enum UploadChunk {
    /// The next body bytes.
    Data(bytes::Bytes),
    /// The body ended normally.
    End,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The bundle failed verification.
    #[error("bundle rejected: {0}")]
    Invalid(sigil_manifests::Error),
    /// The upload exceeds the configured limit.
    #[error("bundle is larger than the upload limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The bundle verifies, but not under the newest root the server holds (root rotation).
    #[error(
        "bundle is signed under trust root {bundle}, not under the server's newest root \
         {server}{hint}"
    )]
    WrongRoot {
        /// The root version the bundle's chain leads to.
        bundle: u32,
        /// The newest root version of the server's chain.
        server: u32,
        /// What to do about it.
        hint: &'static str,
    },
    /// The client stopped sending before the body was complete.
    #[error("the upload ended before the request body was complete")]
    Aborted,
    /// The store could not be written.
    #[error("bundle store I/O at {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Facts about a stored, verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// SHA-256 of the bundle file (hex).
    pub id: String,
    /// Bundle length.
    pub size: u64,
    /// Product vendor.
    pub vendor: String,
    /// Product device class.
    pub device: String,
    /// Component.
    pub component: String,
    /// Version.
    pub version: String,
    /// Security counter.
    pub security_counter: u32,
    /// Payload size.
    pub payload_size: u64,
    /// Payload digest (hex).
    pub payload_digest: String,
    /// Key set version.
    pub key_set_version: u32,
    /// Manifest creation time.
    pub created: u64,
    /// Manifest expiry.
    pub expires: Option<u64>,
    /// For an encrypted payload (FORMAT.md §9): the SHA-256 of the signed manifest (hex), the
    /// `release` its key records must name.
    pub encrypted: Option<String>,
}

/// What start-up reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Temporary files removed (interrupted uploads).
    pub removed_temporary: usize,
    /// Bundles no release names, removed.
    pub removed_orphans: usize,
    /// Releases whose bundle file is missing.
    pub missing: Vec<String>,
}

/// The bundle directory and its temporary directory.
#[derive(Debug, Clone)]
pub struct BundleStore {
    bundles: PathBuf,
    tmp: PathBuf,
}

/// Whether `id` is a lowercase hex SHA-256.
pub fn is_bundle_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
    move |source| IngestError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Removes the temporary file unless the upload was stored.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary upload");
            }
        }
    }
}

impl BundleStore {
    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let store = BundleStore {
            bundles: data_dir.join("bundles"),
            tmp: data_dir.join("tmp"),
        };
        fs::create_dir_all(&store.bundles)?;
        fs::create_dir_all(&store.tmp)?;
        Ok(store)
    }

    /// The file of a bundle id, if the id is well-formed.
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        is_bundle_id(id).then(|| self.bundles.join(id))
    }

    /// Removes interrupted uploads and bundles that no release names; reports missing bundles.
    pub fn reconcile(&self, releases: &HashSet<String>) -> io::Result<Reconciled> {
        let mut out = Reconciled::default();
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            fs::remove_file(entry.path())?;
            out.removed_temporary = out.removed_temporary.saturating_add(1);
        }
        let mut present = HashSet::new();
        for entry in fs::read_dir(&self.bundles)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if releases.contains(&name) {
                present.insert(name);
            } else {
                fs::remove_file(entry.path())?;
                out.removed_orphans = out.removed_orphans.saturating_add(1);
            }
        }
        out.missing = releases
            .iter()
            .filter(|id| !present.contains(*id))
            .cloned()
            .collect();
        out.missing.sort();
        Ok(out)
    }

    /// Receives an upload, verifies it against `root` and stores it. Blocking: run it on the
    /// blocking pool while the request body is forwarded through `chunks`.
    ///
    /// `root` is the provisioned root: the bundle's root chain is walked from it in full, as a
    /// device that never rotated walks it, so no fleet device refuses what the server accepted.
    /// The root it leads to must then be `newest` (version and digest; `None`: the provisioned
    /// root), the newest root of the server's chain.
    pub fn ingest(
        &self,
        mut chunks: Receiver<UploadChunk>,
        root: &TrustRoot,
        newest: (u32, Option<RootFloor>),
        limit: u64,
    ) -> Result<Ingested, IngestError> {
        let mut name = [0u8; 16];
        OsRng.fill_bytes(&mut name);
        let tmp_path = self.tmp.join(format!("upload-{}.part", hex::encode(name)));
        let file = File::create_new(&tmp_path).map_err(io_at(&tmp_path))?;
        let mut guard = TempFile(Some(tmp_path.clone()));
        let mut out = BufWriter::with_capacity(256 << 10, file);

        // Heap, not stack: room for a root chain and the envelope.
        let mut envelope = vec![0u8; VERIFY_BUFFER_LEN];
        // With the server's clock as trusted time, an expired manifest is refused (step 7h)
        // before anything is stored.
        let policy = DevicePolicy::any_device()
            .with_max_bundle_len(limit)
            .with_trusted_time(crate::store::now_secs());
        let mut verifier = BundleVerifier::new(root, policy, &mut envelope);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let invalid = |e: sigil_manifests::Error| match e {
            sigil_manifests::Error::BundleTooLarge => IngestError::TooLarge { limit },
            e => IngestError::Invalid(e),
        };
        loop {
            match chunks.blocking_recv() {
                Some(UploadChunk::Data(data)) => {
                    size = size.saturating_add(data.len() as u64);
                    if size > limit {
                        return Err(IngestError::TooLarge { limit });
                    }
                    verifier.feed(&data).map_err(invalid)?;
                    hasher.update(&data);
                    out.write_all(&data).map_err(io_at(&tmp_path))?;
                }
                Some(UploadChunk::End) => break,
                None => return Err(IngestError::Aborted),
            }
        }
        let verified = verifier.finish().map_err(invalid)?;
        if verified.root_floor() != newest.1 {
            let bundle = verified.root_version();
            let hint = if bundle > newest.0 {
                "; give the server the root chain first (PUT /api/v1/root-chain)"
            } else if bundle < newest.0 {
                "; sign the release under the newest root (sigil sign --root-chain)"
            } else {
                ": its chain holds another root of that version than the server's chain"
            };
            return Err(IngestError::WrongRoot {
                bundle,
                server: newest.0,
                hint,
            });
        }
        let file = out
            .into_inner()
            .map_err(|e| io_at(&tmp_path)(e.into_error()))?;
        file.sync_all().map_err(io_at(&tmp_path))?;
        drop(file);

        let m = verified.manifest();
        let id = hex::encode(hasher.finalize());
        let ingested = Ingested {
            id: id.clone(),
            size,
            vendor: m.product.vendor.to_owned(),
            device: m.product.device.to_owned(),
            component: m.component.to_owned(),
            version: m.version.to_string(),
            security_counter: m.security_counter,
            payload_size: m.payload_size,
            payload_digest: hex::encode(m.payload_digest),
            key_set_version: verified.key_set_version(),
            created: m.created,
            expires: m.expires,
            encrypted: m
                .payload_format
                .encryption()
                .map(|_| hex::encode(verified.manifest_digest())),
        };
        let dest = self.bundles.join(&id);
        // Same bytes, same name: renaming over an existing copy replaces it with identical bytes.
        fs::rename(&tmp_path, &dest).map_err(io_at(&dest))?;
        guard.0 = None;
        File::open(&self.bundles)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.bundles))?;
        Ok(ingested)
    }

    /// Makes a verified local copy of bundle `id` from `fetch` (which writes the bytes the
    /// database keeps, `Ok(false)` if it has none): written to a temporary file, its SHA-256
    /// checked against `id`, fsynced, then renamed into place. Returns whether the bundle is
    /// now present. Bytes that do not match their address are refused and nothing is kept.
    pub fn cache_from(
        &self,
        id: &str,
        fetch: impl FnOnce(&mut dyn Write) -> crate::store::StoreResult<bool>,
    ) -> crate::store::StoreResult<bool> {
        use crate::store::StoreError;
        let Some(dest) = self.path(id) else {
            return Ok(false);
        };
        let io = |what: &Path, e: io::Error| {
            StoreError::Backend(format!("bundle cache {}: {e}", what.display()))
        };
        let mut name = [0u8; 16];
        OsRng.fill_bytes(&mut name);
        let tmp_path = self.tmp.join(format!("cache-{}.part", hex::encode(name)));
        let file = File::create_new(&tmp_path).map_err(|e| io(&tmp_path, e))?;
        let mut guard = TempFile(Some(tmp_path.clone()));
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(256 << 10, file),
            hasher: Sha256::new(),
        };
        if !fetch(&mut out)? {
            return Ok(false);
        }
        let digest = hex::encode(out.hasher.finalize());
        if digest != id {
            return Err(StoreError::Backend(format!(
                "the database's bytes of bundle {id} hash to {digest}: not cached"
            )));
        }
        let file = out
            .inner
            .into_inner()
            .map_err(|e| io(&tmp_path, e.into_error()))?;
        file.sync_all().map_err(|e| io(&tmp_path, e))?;
        drop(file);
        fs::rename(&tmp_path, &dest).map_err(|e| io(&dest, e))?;
        guard.0 = None;
        File::open(&self.bundles)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.bundles, e))?;
        Ok(true)
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
