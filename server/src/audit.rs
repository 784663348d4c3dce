//! The hash-chained audit log: entry hashing, signed checkpoints and offline verification.
//!
//! Each entry's hash covers its sequence number, time, actor, action, subject, detail and the
//! previous entry's hash, each length-prefixed under a domain tag, so no two different entries
//! hash alike. The first entry's previous hash is 32 zero bytes. An export is one JSON object per
//! line, in sequence order. [`verify_lines`] finds any edited entry (its hash no longer matches),
//! removed or reordered entry (sequence gap, broken link). Removing entries from the *end* leaves
//! a valid shorter chain: compare the head hash with one recorded earlier (`GET /api/v1/audit/head`).
//!
//! ## Checkpoints
//!
//! Anyone with the database file can append correctly chained entries, or rewrite every entry
//! after some point and re-chain them. So the server signs **checkpoints** with its audit key
//! (ed25519, kept outside the database, see [`crate::audit_key`]): at
//! `audit_checkpoint_secs` intervals when the log has grown, on every export, and on
//! `GET /api/v1/audit/checkpoint`. A checkpoint signs
//!
//! `"SIGIL-AUDIT-CHECKPOINT-V1" ‖ u64le(seq) ‖ head (32 bytes) ‖ u64le(at) ‖ public key (32) ‖
//! 0x00 | 0x01 ‖ next public key (32, present after 0x01)`
//!
//! where `head` is the hash of entry `seq`. A checkpoint with a next public key records a key
//! rotation: from then on only the next key is accepted. An export interleaves the stored
//! checkpoints (`{"checkpoint": {...}}` lines right after the entry they cover) and ends with a
//! fresh one over its last entry.
//!
//! [`verify_lines`] with the server's public key accepts an export only if every checkpoint is
//! signed by the current key of the rotation chain and matches the entry it follows, and the
//! last entry is covered by a checkpoint. Given the latest checkpoint an auditor kept, it also
//! requires the export to contain that exact entry: rewriting or cutting anything up to there is
//! detected. **An auditor keeps the server's audit public key and the latest checkpoint**.
//!
//! Export lines escape U+2028 and U+2029 (`\u2028`, `\u2029`), so that tools which split
//! lines on them read one entry per line; the parsed text, and so the hash, is unchanged.

use std::io::BufRead;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain tag of an audit entry hash.
const AUDIT_TAG: &[u8] = b"SIGIL-AUDIT-V1";

/// Domain tag of a checkpoint signature.
const CHECKPOINT_TAG: &[u8] = b"SIGIL-AUDIT-CHECKPOINT-V1";

/// The previous hash of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit log entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// Who acted: a token name, `device:<id>` or `system`.
    pub actor: String,
    /// What was done, e.g. `release.upload`.
    pub action: String,
    /// What it was done to, e.g. a release id.
    pub subject: String,
    /// Details as JSON text (kept as text so its exact bytes are hashed).
    pub detail: String,
    /// Hash of the previous entry (hex).
    pub prev_hash: String,
    /// Hash of this entry (hex).
    pub hash: String,
}

/// A signed statement that entry `seq` of the log has hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the entry covered (0: the empty log).
    pub seq: u64,
    /// That entry's hash (hex; the genesis hash for the empty log).
    pub head: String,
    /// When it was signed, seconds since the Unix epoch.
    pub at: u64,
    /// The signing key (hex).
    pub public_key: String,
    /// The key that signs from now on (hex), when this checkpoint records a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_public_key: Option<String>,
    /// Ed25519 signature (hex) over the checkpoint message.
    pub signature: String,
}

/// Why a checkpoint cannot be made or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A field is not hex of the right length.
    #[error("checkpoint field {0} is malformed")]
    Malformed(&'static str),
    /// The signature does not verify under the checkpoint's key.
    #[error("checkpoint of entry {0}: signature does not verify")]
    Signature(u64),
}

fn hex32(what: &'static str, text: &str) -> Result<[u8; 32], CheckpointError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| CheckpointError::Malformed(what))?;
    Ok(out)
}

fn checkpoint_message(
    seq: u64,
    head: &[u8; 32],
    at: u64,
    key: &[u8; 32],
    next: Option<&[u8; 32]>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 120);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&at.to_le_bytes());
    m.extend_from_slice(key);
    match next {
        Some(n) => {
            m.push(1);
            m.extend_from_slice(n);
        }
        None => m.push(0),
    }
    m
}

impl Checkpoint {
    /// Signs `head` at `seq` with `key`, optionally handing over to `next`.
    pub fn sign(
        key: &SigningKey,
        seq: u64,
        head: &str,
        at: u64,
        next: Option<&VerifyingKey>,
    ) -> Result<Checkpoint, CheckpointError> {
        let head_bytes = hex32("head", head)?;
        let public = key.verifying_key().to_bytes();
        let next_bytes = next.map(VerifyingKey::to_bytes);
        let msg = checkpoint_message(seq, &head_bytes, at, &public, next_bytes.as_ref());
        Ok(Checkpoint {
            seq,
            head: head.to_ascii_lowercase(),
            at,
            public_key: hex::encode(public),
            next_public_key: next_bytes.map(hex::encode),
            signature: hex::encode(key.sign(&msg).to_bytes()),
        })
    }

    /// Checks the signature under the checkpoint's own key (strict verification); the caller
    /// decides whether it trusts that key.
    pub fn verify_signature(&self) -> Result<(), CheckpointError> {
        let head = hex32("head", &self.head)?;
        let key = hex32("public_key", &self.public_key)?;
        let next = self
            .next_public_key
            .as_deref()
            .map(|n| hex32("next_public_key", n))
            .transpose()?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig)
            .map_err(|_| CheckpointError::Malformed("signature"))?;
        let vk =
            VerifyingKey::from_bytes(&key).map_err(|_| CheckpointError::Malformed("public_key"))?;
        vk.verify_strict(
            &checkpoint_message(self.seq, &head, self.at, &key, next.as_ref()),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| CheckpointError::Signature(self.seq))
    }
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// A checkpoint of the entry before it.
    Checkpoint {
        /// The checkpoint.
        checkpoint: Checkpoint,
    },
    /// An entry.
    Entry(AuditEntry),
}

/// One export line (with its newline): JSON with U+2028 and U+2029 escaped.
pub fn export_line(line: &ExportLine) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(line)?;
    // Both can only occur inside JSON strings, where `\u2028` means the same character.
    let mut out = text
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    out.push('\n');
    Ok(out)
}

impl AuditEntry {
    /// The hash this entry's fields give (everything but `hash`): what `hash` must be.
    pub fn computed_hash(&self) -> String {
        entry_hash(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            &self.subject,
            &self.detail,
            &self.prev_hash,
        )
    }
}

/// Computes an entry's hash from its fields (everything but `hash`).
pub fn entry_hash(
    seq: u64,
    at: u64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(AUDIT_TAG);
    h.update(seq.to_le_bytes());
    h.update(at.to_le_bytes());
    for field in [actor, action, subject, detail, prev_hash] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// Number of entries.
    pub entries: u64,
    /// Hash of the last entry (the genesis hash for an empty log).
    pub head: String,
    /// Checkpoints read.
    pub checkpoints: u64,
    /// The entry the last checkpoint read covers (0: none, or the empty log's).
    pub covered: u64,
    /// Whether the checkpoint signatures were checked against trusted keys.
    pub signed: bool,
    /// The audit key of the last checkpoint (hex), after any rotation it records.
    pub current_key: Option<String>,
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A line is not an audit entry.
    #[error("line {line}: not an audit entry or checkpoint: {message}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// Parser message.
        message: String,
    },
    /// A sequence number is missing or out of order (an entry was removed or moved).
    #[error("line {line}: expected entry {expected}, found {found} (entry removed or reordered)")]
    Sequence {
        /// 1-based line number.
        line: u64,
        /// The sequence number that should be here.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The previous-hash link does not match the previous entry.
    #[error("entry {seq}: previous hash does not match entry {prev} (chain broken)", prev = seq.saturating_sub(1))]
    BrokenLink {
        /// Sequence number.
        seq: u64,
    },
    /// The entry's content does not match its hash.
    #[error("entry {seq}: content does not match its hash (entry edited)")]
    Edited {
        /// Sequence number.
        seq: u64,
    },
    /// The head differs from the expected (previously recorded) head.
    #[error("head is {found}, expected {expected} (entries removed from the end?)")]
    Head {
        /// Head found.
        found: String,
        /// Head expected.
        expected: String,
    },
    /// A checkpoint does not match the entry it follows (the chain was rewritten).
    #[error("line {line}: the checkpoint of entry {seq} does not match the chain (entries rewritten, removed or moved)")]
    CheckpointMismatch {
        /// 1-based line number.
        line: u64,
        /// The entry the checkpoint names.
        seq: u64,
    },
    /// A checkpoint is malformed or its signature does not verify.
    #[error("line {line}: {source}")]
    CheckpointInvalid {
        /// 1-based line number.
        line: u64,
        /// Why.
        source: CheckpointError,
    },
    /// A checkpoint is signed by a key that is not (or no longer) the server's audit key.
    #[error("line {line}: the checkpoint of entry {seq} is signed by {key}, which is not the server's current audit key")]
    UntrustedKey {
        /// 1-based line number.
        line: u64,
        /// The entry the checkpoint names.
        seq: u64,
        /// The signing key (hex).
        key: String,
    },
    /// Entries after the last signed checkpoint.
    #[error("entries {from} to {to} are not covered by a signed checkpoint (appended without the server's audit key?)")]
    Uncovered {
        /// First uncovered entry.
        from: u64,
        /// Last entry.
        to: u64,
    },
    /// The export disagrees with the checkpoint the auditor kept.
    #[error("{0}")]
    Kept(String),
    /// Reading the input failed.
    #[error("cannot read the audit export: {0}")]
    Io(String),
}

/// What an auditor brings to a verification.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The server's audit public keys the auditor trusts. Empty: checkpoint signatures are
    /// checked only for consistency, and nothing is said about who signed them.
    pub keys: Vec<[u8; 32]>,
    /// Take the first checkpoint's key as trusted (the server's own start-up check, which then
    /// compares the resulting current key with its key file).
    pub trust_first_key: bool,
    /// The latest checkpoint the auditor kept: the chain must contain its entry, unchanged.
    pub kept: Option<Checkpoint>,
    /// A head hash recorded earlier: the chain must end there.
    pub head: Option<String>,
    /// Every entry must be covered by a signed checkpoint (true for exports, which end with one).
    pub require_coverage: bool,
}

/// Checks entries and checkpoints one at a time, in export order.
#[derive(Debug)]
pub struct Verifier {
    trust: Trust,
    trusted: Vec<[u8; 32]>,
    count: u64,
    prev: String,
    checkpoints: u64,
    covered: u64,
    current_key: Option<[u8; 32]>,
}

impl Verifier {
    /// A verifier of a chain from its first entry.
    pub fn new(trust: Trust) -> Result<Self, ChainError> {
        if let Some(kept) = &trust.kept {
            kept.verify_signature()
                .map_err(|e| ChainError::Kept(format!("the kept checkpoint: {e}")))?;
            if !trust.keys.is_empty() {
                let key = hex32("public_key", &kept.public_key)
                    .map_err(|e| ChainError::Kept(format!("the kept checkpoint: {e}")))?;
                if !trust.keys.contains(&key) {
                    return Err(ChainError::Kept(format!(
                        "the kept checkpoint is signed by {}, which is not among the given public keys",
                        kept.public_key
                    )));
                }
            }
        }
        Ok(Verifier {
            trusted: trust.keys.clone(),
            trust,
            count: 0,
            prev: GENESIS_HASH.to_owned(),
            checkpoints: 0,
            covered: 0,
            current_key: None,
        })
    }

    /// The next entry.
    pub fn entry(&mut self, line: u64, e: &AuditEntry) -> Result<(), ChainError> {
        check_entry(e, line, self.count, &self.prev)?;
        self.prev.clone_from(&e.hash);
        self.count = e.seq;
        if let Some(kept) = &self.trust.kept {
            if kept.seq == e.seq && !kept.head.eq_ignore_ascii_case(&e.hash) {
                return Err(ChainError::Kept(format!(
                    "entry {} differs from the checkpoint you kept (entries up to it were rewritten)",
                    e.seq
                )));
            }
        }
        Ok(())
    }

    /// A checkpoint, which must cover the entry just read.
    pub fn checkpoint(&mut self, line: u64, cp: &Checkpoint) -> Result<(), ChainError> {
        if cp.seq != self.count || !cp.head.eq_ignore_ascii_case(&self.prev) {
            return Err(ChainError::CheckpointMismatch { line, seq: cp.seq });
        }
        cp.verify_signature()
            .map_err(|source| ChainError::CheckpointInvalid { line, source })?;
        let invalid = |source| ChainError::CheckpointInvalid { line, source };
        let key = hex32("public_key", &cp.public_key).map_err(invalid)?;
        let next = cp
            .next_public_key
            .as_deref()
            .map(|n| hex32("next_public_key", n))
            .transpose()
            .map_err(invalid)?;
        let checking = !self.trust.keys.is_empty() || self.trust.trust_first_key;
        if checking {
            if self.trusted.is_empty() && self.trust.trust_first_key {
                self.trusted.push(key);
            }
            if !self.trusted.contains(&key) {
                return Err(ChainError::UntrustedKey {
                    line,
                    seq: cp.seq,
                    key: cp.public_key.clone(),
                });
            }
            if let Some(next) = next {
                // A rotation: the old key signs nothing after it.
                self.trusted.retain(|k| *k != key);
                self.trusted.push(next);
            }
        }
        self.current_key = Some(next.unwrap_or(key));
        self.checkpoints = self.checkpoints.saturating_add(1);
        self.covered = cp.seq;
        Ok(())
    }

    /// Ends the chain.
    pub fn finish(self) -> Result<ChainSummary, ChainError> {
        let signed = !self.trust.keys.is_empty() || self.trust.trust_first_key;
        if let Some(kept) = &self.trust.kept {
            if self.count < kept.seq {
                return Err(ChainError::Kept(format!(
                    "the chain ends at entry {}, before entry {} of the checkpoint you kept (entries removed)",
                    self.count, kept.seq
                )));
            }
        }
        if self.trust.require_coverage && signed && self.covered < self.count {
            return Err(ChainError::Uncovered {
                from: self.covered.saturating_add(1),
                to: self.count,
            });
        }
        if let Some(expected) = &self.trust.head {
            if !self.prev.eq_ignore_ascii_case(expected) {
                return Err(ChainError::Head {
                    found: self.prev,
                    expected: expected.clone(),
                });
            }
        }
        Ok(ChainSummary {
            entries: self.count,
            head: self.prev,
            checkpoints: self.checkpoints,
            covered: self.covered,
            signed,
            current_key: self.current_key.map(hex::encode),
        })
    }
}

/// Verifies entries in order (no checkpoints).
pub fn verify_entries<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<ChainSummary, ChainError> {
    let mut v = Verifier::new(Trust::default())?;
    for (i, e) in entries.into_iter().enumerate() {
        v.entry((i as u64).saturating_add(1), e)?;
    }
    v.finish()
}

fn check_entry(e: &AuditEntry, line: u64, count: u64, prev: &str) -> Result<(), ChainError> {
    let expected = count.saturating_add(1);
    if e.seq != expected {
        return Err(ChainError::Sequence {
            line,
            expected,
            found: e.seq,
        });
    }
    if e.prev_hash != prev {
        return Err(ChainError::BrokenLink { seq: e.seq });
    }
    let hash = e.computed_hash();
    if hash != e.hash {
        return Err(ChainError::Edited { seq: e.seq });
    }
    Ok(())
}

/// Verifies a JSON-lines export (entries and checkpoints) against what the auditor trusts.
pub fn verify_lines(input: impl BufRead, trust: Trust) -> Result<ChainSummary, ChainError> {
    let mut v = Verifier::new(trust)?;
    for (i, line) in input.lines().enumerate() {
        let n = (i as u64).saturating_add(1);
        let line = line.map_err(|e| ChainError::Io(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine =
            serde_json::from_str(&line).map_err(|err| ChainError::Malformed {
                line: n,
                message: err.to_string(),
            })?;
        match parsed {
            ExportLine::Entry(e) => v.entry(n, &e)?,
            ExportLine::Checkpoint { checkpoint } => v.checkpoint(n, &checkpoint)?,
        }
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let detail = format!("{{\"n\":{seq}}}");
                let hash = entry_hash(
                    seq,
                    1000 + seq,
                    "ops",
                    "device.enrol",
                    "pump-1",
                    &detail,
                    &prev,
                );
                let e = AuditEntry {
                    seq,
                    at: 1000 + seq,
                    actor: "ops".into(),
                    action: "device.enrol".into(),
                    subject: "pump-1".into(),
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn head(h: &str) -> Trust {
        Trust {
            head: Some(h.to_owned()),
            ..Trust::default()
        }
    }

    fn export(entries: &[AuditEntry]) -> String {
        entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let s = verify_lines(export(&c).as_bytes(), head(&c[4].hash)).unwrap();
        assert_eq!(s.entries, 5);
        assert_eq!(verify_entries(&c).unwrap(), s);
    }

    #[test]
    fn edited_entry_is_detected() {
        let mut c = chain(5);
        c[2].actor = "mallory".into();
        assert_eq!(verify_entries(&c), Err(ChainError::Edited { seq: 3 }));
        let mut c = chain(5);
        c[2].detail = "{\"n\":99}".into();
        assert_eq!(
            verify_lines(export(&c).as_bytes(), Trust::default()),
            Err(ChainError::Edited { seq: 3 })
        );
    }

    #[test]
    fn edited_entry_with_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].subject = "pump-2".into();
        c[2].hash = entry_hash(
            3,
            c[2].at,
            "ops",
            "device.enrol",
            "pump-2",
            &c[2].detail,
            &c[2].prev_hash,
        );
        assert_eq!(verify_entries(&c), Err(ChainError::BrokenLink { seq: 4 }));
    }

    #[test]
    fn removed_entry_is_detected() {
        let mut c = chain(5);
        c.remove(1);
        assert!(matches!(
            verify_entries(&c),
            Err(ChainError::Sequence {
                expected: 2,
                found: 3,
                ..
            })
        ));
    }

    #[test]
    fn reordered_entries_are_detected() {
        let mut c = chain(5);
        c.swap(1, 2);
        assert!(matches!(
            verify_entries(&c),
            Err(ChainError::Sequence { .. })
        ));
    }

    #[test]
    fn truncated_tail_is_detected_against_a_recorded_head() {
        let c = chain(5);
        let head = c[4].hash.clone();
        let short = export(&c[..4]);
        assert!(verify_lines(short.as_bytes(), Trust::default()).is_ok());
        assert!(matches!(
            verify_lines(short.as_bytes(), self::head(&head)),
            Err(ChainError::Head { .. })
        ));
    }

    #[test]
    fn garbage_line_is_reported_with_its_number() {
        let mut text = export(&chain(2));
        text.push_str("not json\n");
        assert!(matches!(
            verify_lines(text.as_bytes(), Trust::default()),
            Err(ChainError::Malformed { line: 3, .. })
        ));
    }

    fn signed_export(c: &[AuditEntry], key: &SigningKey, at: &[usize]) -> String {
        let mut out = String::new();
        for (i, e) in c.iter().enumerate() {
            out.push_str(&export_line(&ExportLine::Entry(e.clone())).unwrap());
            if at.contains(&i) {
                let checkpoint = Checkpoint::sign(key, e.seq, &e.hash, 5000, None).unwrap();
                out.push_str(&export_line(&ExportLine::Checkpoint { checkpoint }).unwrap());
            }
        }
        out
    }

    fn trusting(key: &SigningKey) -> Trust {
        Trust {
            keys: vec![key.verifying_key().to_bytes()],
            require_coverage: true,
            ..Trust::default()
        }
    }

    #[test]
    fn signed_checkpoints_verify_and_cover_the_chain() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let c = chain(5);
        let text = signed_export(&c, &k, &[1, 4]);
        let s = verify_lines(text.as_bytes(), trusting(&k)).unwrap();
        assert_eq!((s.entries, s.checkpoints, s.signed), (5, 2, true));
        // Under another key: refused.
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(matches!(
            verify_lines(text.as_bytes(), trusting(&other)),
            Err(ChainError::UntrustedKey { seq: 2, .. })
        ));
        // Entries appended after the last checkpoint are not covered.
        let text = signed_export(&c, &k, &[1, 3]);
        assert_eq!(
            verify_lines(text.as_bytes(), trusting(&k)),
            Err(ChainError::Uncovered { from: 5, to: 5 })
        );
    }

    #[test]
    fn a_rewritten_and_rechained_log_fails_against_a_checkpoint() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let c = chain(4);
        let kept = Checkpoint::sign(&k, 3, &c[2].hash, 5000, None).unwrap();
        // Rewrite entry 2 and re-chain everything after it, as anyone with the file can.
        let mut forged = c.clone();
        forged[1].subject = "pump-9".into();
        for i in 1..forged.len() {
            let prev = forged[i - 1].hash.clone();
            let e = &mut forged[i];
            e.prev_hash = prev;
            e.hash = e.computed_hash();
        }
        let plain = export(&forged);
        assert!(
            verify_lines(plain.as_bytes(), Trust::default()).is_ok(),
            "the chain alone passes"
        );
        let mut t = trusting(&k);
        t.require_coverage = false;
        t.kept = Some(kept.clone());
        assert!(matches!(
            verify_lines(plain.as_bytes(), t.clone()),
            Err(ChainError::Kept(m)) if m.contains("rewritten")
        ));
        // Cut before the kept entry: refused too.
        assert!(matches!(
            verify_lines(export(&c[..2]).as_bytes(), t),
            Err(ChainError::Kept(m)) if m.contains("removed")
        ));
        // A stored checkpoint line that no longer matches: refused.
        let mut text = export(&forged[..3]);
        text.push_str(&export_line(&ExportLine::Checkpoint { checkpoint: kept }).unwrap());
        assert!(matches!(
            verify_lines(text.as_bytes(), trusting(&k)),
            Err(ChainError::CheckpointMismatch { seq: 3, .. })
        ));
    }

    #[test]
    fn a_rotation_hands_over_to_the_next_key_and_retires_the_old_one() {
        let (k1, k2) = (
            SigningKey::from_bytes(&[7; 32]),
            SigningKey::from_bytes(&[9; 32]),
        );
        let c = chain(3);
        let line = |e: &AuditEntry| export_line(&ExportLine::Entry(e.clone())).unwrap();
        let cp = |k: &SigningKey, e: &AuditEntry, next: Option<&SigningKey>| {
            let checkpoint = Checkpoint::sign(
                k,
                e.seq,
                &e.hash,
                1,
                next.map(|n| n.verifying_key()).as_ref(),
            )
            .unwrap();
            export_line(&ExportLine::Checkpoint { checkpoint }).unwrap()
        };
        let good = [
            line(&c[0]),
            cp(&k1, &c[0], Some(&k2)),
            line(&c[1]),
            line(&c[2]),
            cp(&k2, &c[2], None),
        ]
        .concat();
        let s = verify_lines(good.as_bytes(), trusting(&k1)).unwrap();
        assert_eq!(
            s.current_key,
            Some(hex::encode(k2.verifying_key().to_bytes()))
        );
        let stale = [
            line(&c[0]),
            cp(&k1, &c[0], Some(&k2)),
            line(&c[1]),
            line(&c[2]),
            cp(&k1, &c[2], None),
        ]
        .concat();
        assert!(matches!(
            verify_lines(stale.as_bytes(), trusting(&k1)),
            Err(ChainError::UntrustedKey { seq: 3, .. })
        ));
    }

    #[test]
    fn export_lines_escape_the_unicode_line_separators() {
        let mut c = chain(1);
        c[0].detail = "{\"note\":\"a\u{2028}b\u{2029}c\"}".into();
        let e = &mut c[0];
        e.hash = e.computed_hash();
        let text = export_line(&ExportLine::Entry(c[0].clone())).unwrap();
        assert!(!text.contains('\u{2028}') && !text.contains('\u{2029}'));
        assert!(text.contains("\\u2028") && text.contains("\\u2029"));
        assert_eq!(text.lines().count(), 1);
        assert!(verify_lines(text.as_bytes(), Trust::default()).is_ok());
    }
}
