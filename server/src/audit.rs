//! The hash-chained audit log: entry hashing and offline verification.
//!
//! Each entry's hash covers its sequence number, time, actor, action, subject, detail and the
//! previous entry's hash, each length-prefixed under a domain tag, so no two different entries
//! hash alike. The first entry's previous hash is 32 zero bytes. An export is one JSON object per
//! line, in sequence order. [`verify_lines`] finds any edited entry (its hash no longer matches),
//! removed or reordered entry (sequence gap, broken link). Removing entries from the *end* leaves
//! a valid shorter chain: compare the head hash with one recorded earlier (`GET /api/v1/audit/head`).

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain tag of an audit entry hash.
const AUDIT_TAG: &[u8] = b"SIGIL-AUDIT-V1";

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
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A line is not an audit entry.
    #[error("line {line}: not an audit entry: {message}")]
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
    /// Reading the input failed.
    #[error("cannot read the audit export: {0}")]
    Io(String),
}

/// Verifies entries in order.
pub fn verify_entries<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<ChainSummary, ChainError> {
    let mut prev = GENESIS_HASH.to_owned();
    let mut count = 0u64;
    for (i, e) in entries.into_iter().enumerate() {
        let line = (i as u64).saturating_add(1);
        check_entry(e, line, count, &prev)?;
        prev.clone_from(&e.hash);
        count = line;
    }
    Ok(ChainSummary {
        entries: count,
        head: prev,
    })
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
    let hash = entry_hash(
        e.seq,
        e.at,
        &e.actor,
        &e.action,
        &e.subject,
        &e.detail,
        &e.prev_hash,
    );
    if hash != e.hash {
        return Err(ChainError::Edited { seq: e.seq });
    }
    Ok(())
}

/// Verifies a JSON-lines export; if `expected_head` is given, the chain must end there.
pub fn verify_lines(
    input: impl BufRead,
    expected_head: Option<&str>,
) -> Result<ChainSummary, ChainError> {
    let mut prev = GENESIS_HASH.to_owned();
    let mut count = 0u64;
    for (i, line) in input.lines().enumerate() {
        let n = (i as u64).saturating_add(1);
        let line = line.map_err(|e| ChainError::Io(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: AuditEntry = serde_json::from_str(&line).map_err(|err| ChainError::Malformed {
            line: n,
            message: err.to_string(),
        })?;
        check_entry(&e, n, count, &prev)?;
        prev = e.hash;
        count = e.seq;
    }
    if let Some(expected) = expected_head {
        if !prev.eq_ignore_ascii_case(expected) {
            return Err(ChainError::Head {
                found: prev,
                expected: expected.to_owned(),
            });
        }
    }
    Ok(ChainSummary {
        entries: count,
        head: prev,
    })
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

    fn export(entries: &[AuditEntry]) -> String {
        entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let s = verify_lines(export(&c).as_bytes(), Some(&c[4].hash)).unwrap();
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
            verify_lines(export(&c).as_bytes(), None),
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
        assert!(verify_lines(short.as_bytes(), None).is_ok());
        assert!(matches!(
            verify_lines(short.as_bytes(), Some(&head)),
            Err(ChainError::Head { .. })
        ));
    }

    #[test]
    fn garbage_line_is_reported_with_its_number() {
        let mut text = export(&chain(2));
        text.push_str("not json\n");
        assert!(matches!(
            verify_lines(text.as_bytes(), None),
            Err(ChainError::Malformed { line: 3, .. })
        ));
    }
}
