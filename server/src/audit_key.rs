//! The server's audit key, its signed checkpoints, and the start-up integrity check.
//!
//! The audit key is an ed25519 key generated at first start and kept in its own file
//! (`audit_key_file`, default `<data_dir>/keys/audit.key`: the seed as 64 hex digits, mode
//! 0600, in a 0700 directory, written to a temporary file and renamed into place). It is not in
//! the database, so someone who can edit the database cannot sign a checkpoint. Beside it,
//! `audit.checkpoint.json` holds the latest checkpoint the server signed.
//!
//! **Rotation** (`sigil-server audit rotate-key`) writes the new key to `audit.key.next` (or
//! takes the one staged there by `sigil-server audit stage-key` and copied to every replica), then
//! commits, in one transaction, an `audit.key_rotate` entry and a checkpoint signed by the old
//! key that names the new one, then renames `audit.key.next` over `audit.key`. A crash between
//! the commit and the rename is completed at the next signing: the signer always uses the key
//! the latest stored checkpoint hands on to, and takes it from `audit.key.next` when the main
//! file still holds the old one. A running server picks the new key up at its next checkpoint.
//!
//! **At start-up** ([`check_at_start`]) the server refuses a database whose schema differs
//! from the one its migrations create (a guard trigger dropped or altered, the audit table
//! renamed and recreated), whose hash chain does not verify (an entry rewritten, e.g. with
//! `INSERT OR REPLACE` after the triggers were set aside), whose stored checkpoints do not match
//! the chain or are not signed along the rotation chain ending at the key file's key, or that
//! does not contain the latest checkpoint kept beside the key (an older copy of the database put
//! back, or everything after some point rewritten). It does not repair: the operator restores
//! the database from a backup and investigates; the error says what was found.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};

use crate::audit::{ChainSummary, Checkpoint, Trust, Verifier};
use crate::config::ServerConfig;
use crate::store::prelude::*;
use crate::store::{now_secs, AuditEvent, StoreError};

/// Why the audit key or the audit trail cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    /// A key or checkpoint file could not be read or written.
    #[error("audit key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable or writable by others than its owner.
    #[error("audit key file {path} has mode {mode:o}; it must be 600 (chmod 600 it)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a key.
    #[error("audit key file {path} does not hold a 32-byte hex seed")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The key file is missing while the database holds checkpoints.
    #[error("audit key file {path} is missing, but the database holds checkpoints signed by {key}: restore the key file")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key the latest checkpoint expects.
        key: String,
    },
    /// The key file holds another key than the latest checkpoint hands on to.
    #[error(
        "audit key file {path} holds key {found}, but the latest checkpoint expects {expected}"
    )]
    WrongKey {
        /// The file.
        path: PathBuf,
        /// The key expected.
        expected: String,
        /// The key found.
        found: String,
    },
    /// The database was tampered with.
    #[error(
        "the database {path} was tampered with and is refused (restore it from a backup): {why}"
    )]
    Tampered {
        /// The database file.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The audit key file and its companions.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> AuditKeyError + '_ {
    move |source| AuditKeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn new_key() -> SigningKey {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

fn public_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file in the same directory, fsynced,
/// renamed into place, the directory fsynced.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AuditKeyError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_at(dir))?;
    tmp.write_all(bytes).map_err(io_at(path))?;
    tmp.as_file().sync_all().map_err(io_at(path))?;
    tmp.persist(path).map_err(|e| io_at(path)(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

impl KeyFile {
    /// The key file of `config`.
    pub fn of(config: &ServerConfig) -> Self {
        KeyFile {
            path: config.audit_key_path(),
        }
    }

    /// The key file at `path`.
    pub fn at(path: &Path) -> Self {
        KeyFile {
            path: path.to_owned(),
        }
    }

    fn next_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".next");
        PathBuf::from(p)
    }

    /// `audit.checkpoint.json` beside the key.
    pub fn latest_checkpoint_path(&self) -> PathBuf {
        self.path.with_file_name("audit.checkpoint.json")
    }

    fn read(path: &Path) -> Result<Option<SigningKey>, AuditKeyError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuditKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| AuditKeyError::Malformed {
            path: path.to_owned(),
        })?;
        Ok(Some(SigningKey::from_bytes(&seed)))
    }

    fn write(path: &Path, key: &SigningKey) -> Result<(), AuditKeyError> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_at(dir))?;
            }
        }
        let text = format!("{}\n", hex::encode(key.to_bytes()));
        write_atomic(path, text.as_bytes())
    }

    /// The key in the file, if there is one.
    pub fn load(&self) -> Result<Option<SigningKey>, AuditKeyError> {
        Self::read(&self.path)
    }

    /// The key the checkpoint after one expecting `expected` must be signed with: the key
    /// file's, or a pending rotation's (which this then completes). Creates the key when there
    /// is none and nothing expects one.
    pub fn key_for(&self, expected: Option<&str>) -> Result<SigningKey, AuditKeyError> {
        let current = self.load()?;
        match (current, expected) {
            (Some(k), None) => Ok(k),
            (Some(k), Some(e)) if public_hex(&k) == e => Ok(k),
            (current, Some(e)) => match Self::read(&self.next_path())? {
                Some(next) if public_hex(&next) == e => {
                    // The rotation committed but its rename did not happen: finish it.
                    std::fs::rename(self.next_path(), &self.path).map_err(io_at(&self.path))?;
                    tracing::warn!(key = e, "completed an interrupted audit key rotation");
                    Ok(next)
                }
                _ => Err(match current {
                    Some(k) => AuditKeyError::WrongKey {
                        path: self.path.clone(),
                        expected: e.to_owned(),
                        found: public_hex(&k),
                    },
                    None => AuditKeyError::Missing {
                        path: self.path.clone(),
                        key: e.to_owned(),
                    },
                }),
            },
            (None, None) => {
                let key = new_key();
                Self::write(&self.path, &key)?;
                tracing::info!(
                    path = %self.path.display(),
                    public_key = public_hex(&key),
                    "generated the audit key"
                );
                Ok(key)
            }
        }
    }

    /// Whether the key file, or a rotation's pending `.next` file, holds the key `public`
    /// (hex): the key a verified rotation chain must end at.
    pub fn holds(&self, public: &str) -> Result<bool, AuditKeyError> {
        for path in [self.path.clone(), self.next_path()] {
            if Self::read(&path)?.is_some_and(|k| public_hex(&k) == public) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The latest checkpoint written beside the key, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditKeyError> {
        let path = self.latest_checkpoint_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| AuditKeyError::Malformed { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn keep_latest(&self, cp: &Checkpoint) -> Result<(), AuditKeyError> {
        let text = serde_json::to_vec(cp).map_err(|e| io_at(&self.path)(e.into()))?;
        write_atomic(&self.latest_checkpoint_path(), &text)
    }
}

/// Signs (or reuses) a checkpoint of the head, appending `audit` first if given, and keeps it
/// beside the key. `rotate_to` makes it a rotation checkpoint naming that key.
pub fn checkpoint(
    store: &dyn Store,
    keys: &KeyFile,
    audit: Option<&AuditEvent>,
    rotate_to: Option<&SigningKey>,
) -> Result<Checkpoint, AuditKeyError> {
    let mut failure = None;
    let next = rotate_to.map(SigningKey::verifying_key);
    let result = store.checkpoint(now_secs(), audit, &mut |draft| {
        let key = keys.key_for(draft.expected_key.as_deref()).map_err(|e| {
            let m = e.to_string();
            failure = Some(e);
            m
        })?;
        Checkpoint::sign(&key, draft.seq, &draft.head, draft.at, next.as_ref())
            .map_err(|e| e.to_string())
    });
    let cp = match (result, failure) {
        (Ok(cp), _) => cp,
        (Err(_), Some(e)) => return Err(e),
        (Err(e), None) => return Err(e.into()),
    };
    keys.keep_latest(&cp)?;
    Ok(cp)
}

/// Rotates the audit key (see the module documentation); returns the new public key (hex).
pub fn rotate(store: &dyn Store, keys: &KeyFile, actor: &str) -> Result<String, AuditKeyError> {
    let old = keys.load()?.ok_or_else(|| AuditKeyError::Missing {
        path: keys.path.clone(),
        key: "(none yet: start the server once first)".to_owned(),
    })?;
    // A key staged on every replica beforehand (`stage_next`) is the one handed over to, so
    // that each replica finds it at its next signing; otherwise a fresh one.
    let new = match KeyFile::read(&keys.next_path())? {
        Some(staged) if public_hex(&staged) != public_hex(&old) => staged,
        _ => {
            let new = new_key();
            KeyFile::write(&keys.next_path(), &new)?;
            new
        }
    };
    let event = AuditEvent::new(
        actor,
        crate::store::AuditAction::AuditKeyRotate,
        &public_hex(&new),
        serde_json::json!({ "old": public_hex(&old), "new": public_hex(&new) }),
    );
    checkpoint(store, keys, Some(&event), Some(&new))?;
    std::fs::rename(keys.next_path(), &keys.path).map_err(io_at(&keys.path))?;
    if let Some(dir) = keys.path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
    }
    Ok(public_hex(&new))
}

/// Stages the next audit key for a rotation across replicas: writes a fresh key to
/// `<audit_key_file>.next` (or keeps the one staged there) and returns its path and public
/// key. Copied to every replica's `<audit_key_file>.next`, it is what the next
/// [`rotate`] on any replica hands over to, and each replica switches to it by itself at its
/// next signing ([`KeyFile::key_for`] completes the hand-over).
pub fn stage_next(keys: &KeyFile) -> Result<(PathBuf, String), AuditKeyError> {
    let path = keys.next_path();
    if let Some(staged) = KeyFile::read(&path)? {
        return Ok((path, public_hex(&staged)));
    }
    let new = new_key();
    KeyFile::write(&path, &new)?;
    Ok((path, public_hex(&new)))
}

/// Audit entries read per step of the start-up verification.
const VERIFY_PAGE: u32 = 5000;

/// The path (or redacted URL) of the database a [`AuditKeyError::Tampered`] names.
pub fn database_name(config: &ServerConfig) -> PathBuf {
    config
        .database()
        .map(|d| PathBuf::from(d.redacted()))
        .unwrap_or_else(|_| config.data_dir.join("sigil.db"))
}

/// Verifies the stored trail as the start-up check does, signing nothing: the hash chain, each
/// stored checkpoint against the entry it covers and along the rotation chain from the first
/// checkpoint's key, no checkpoint beyond the head, and the latest checkpoint kept beside the
/// key among the stored ones. `each` sees every stored entry in order, also after a failure
/// (so a page can still list them). [`AuditKeyError::Tampered`] (naming `db_path`) says what
/// does not verify. Whether the rotation chain ends at the key file's key is the caller's to
/// check ([`KeyFile::holds`], or [`KeyFile::key_for`] at start-up).
pub fn verify_stored(
    store: &dyn Store,
    keys: &KeyFile,
    db_path: &Path,
    each: &mut dyn FnMut(&crate::audit::AuditEntry),
) -> Result<ChainSummary, AuditKeyError> {
    let tampered = |why: String| AuditKeyError::Tampered {
        path: db_path.to_owned(),
        why,
    };
    let kept = keys.latest_checkpoint()?;
    // All of them: one beyond the head means entries were cut from the end.
    let checkpoints = store.checkpoints(u64::MAX)?;
    let mut v = Verifier::new(Trust {
        trust_first_key: true,
        kept: kept.clone(),
        ..Trust::default()
    })
    .map_err(|e| tampered(e.to_string()))?;
    let mut pending = checkpoints.iter().peekable();
    let mut failure: Option<String> = None;
    let mut feed = |v: &mut Verifier, seq: u64, line: u64| -> Result<(), String> {
        while let Some(cp) = pending.next_if(|cp| cp.seq == seq) {
            v.checkpoint(line, cp).map_err(|e| format!("stored {e}"))?;
        }
        Ok(())
    };
    failure = failure.or(feed(&mut v, 0, 0).err());
    let mut line = 0u64;
    let mut after = 0;
    loop {
        let page = store.audit_entries(after, VERIFY_PAGE)?;
        for e in &page {
            each(e);
            line = line.saturating_add(1);
            if failure.is_none() {
                failure = v
                    .entry(line, e)
                    .map_err(|err| format!("audit {err}"))
                    .and_then(|()| feed(&mut v, e.seq, line))
                    .err();
            }
        }
        match page.last() {
            Some(last) if page.len() >= VERIFY_PAGE as usize => after = last.seq,
            _ => break,
        }
    }
    if let Some(why) = failure {
        return Err(tampered(why));
    }
    if let Some(cp) = pending.next() {
        return Err(tampered(format!(
            "a stored checkpoint names entry {}, which the chain does not have",
            cp.seq
        )));
    }
    let summary = v.finish().map_err(|e| tampered(e.to_string()))?;
    if let Some(kept) = &kept {
        let found = checkpoints
            .iter()
            .any(|c| c.seq == kept.seq && c.signature == kept.signature);
        if !found {
            return Err(tampered(format!(
                "the checkpoint of entry {} kept in {} is not among the stored checkpoints",
                kept.seq,
                keys.latest_checkpoint_path().display()
            )));
        }
    }
    Ok(summary)
}

/// Refuses a tampered database (see the module documentation), creates the audit key at first
/// start, and signs a checkpoint of the head. Returns the audit public key (hex).
///
/// `differences` are the backend's schema differences (see `SqliteStore::schema_differences`).
pub fn check_at_start(
    store: &dyn Store,
    differences: &[String],
    config: &ServerConfig,
) -> Result<String, AuditKeyError> {
    let db_path = database_name(config);
    if !differences.is_empty() {
        return Err(AuditKeyError::Tampered {
            path: db_path,
            why: format!(
                "its schema differs from this server's: {}",
                differences.join("; ")
            ),
        });
    }
    let keys = KeyFile::of(config);
    let summary = verify_stored(store, &keys, &db_path, &mut |_| {})?;
    // The key file must hold the key the rotation chain ends at (or create it, first start).
    keys.key_for(summary.current_key.as_deref())?;
    let cp = checkpoint(store, &keys, None, None)?;
    tracing::info!(
        entries = summary.entries,
        checkpoints = summary.checkpoints,
        public_key = cp.public_key,
        "audit trail verified"
    );
    Ok(cp.public_key)
}

/// Signs checkpoints every `audit_checkpoint_secs` while the log grows (run on the runtime).
pub async fn checkpoint_loop(store: crate::api::Db, config: ServerConfig) {
    let keys = KeyFile::of(&config);
    let mut every =
        tokio::time::interval(std::time::Duration::from_secs(config.audit_checkpoint_secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let k = keys.clone();
        let r = store
            .run(move |s| {
                checkpoint(s, &k, None, None).map_err(|e| StoreError::Backend(e.to_string()))
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot sign an audit checkpoint");
        }
    }
}
