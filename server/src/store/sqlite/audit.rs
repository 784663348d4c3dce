//! [`crate::store::AuditStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

use crate::audit::{AuditEntry, Checkpoint, GENESIS_HASH};
use crate::store::*;

impl AuditStore for SqliteStore {
    fn append_audit(&self, event: &AuditEvent, now: u64) -> StoreResult<AuditEntry> {
        self.with_tx(|tx| append(tx, event, now))
    }

    fn audit_entries(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![to_sql(after), limit], audit_entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_head(&self) -> StoreResult<(u64, String)> {
        let conn = self.reader()?;
        let head = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((from_sql(r.get(0)?), r.get(1)?)),
            )
            .optional()?;
        Ok(head.unwrap_or((0, GENESIS_HASH.to_owned())))
    }

    fn checkpoint(
        &self,
        now: u64,
        audit: Option<&AuditEvent>,
        sign: &mut dyn FnMut(&CheckpointDraft) -> Result<Checkpoint, String>,
    ) -> StoreResult<Checkpoint> {
        self.with_tx(|tx| {
            if let Some(event) = audit {
                append(tx, event, now)?;
            }
            let (seq, head): (u64, String) = tx
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((from_sql(r.get(0)?), r.get(1)?)),
                )
                .optional()?
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            let latest = tx
                .query_row(
                    &format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
                    ),
                    [],
                    checkpoint_row,
                )
                .optional()?;
            let draft = match rules::checkpoint_step(seq, head, now, latest, audit.is_some()) {
                rules::CheckpointStep::Current(cp) => return Ok(cp),
                rules::CheckpointStep::Sign(draft) => draft,
            };
            let cp = sign(&draft).map_err(StoreError::Backend)?;
            tx.execute(
                &format!(
                    "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![
                    to_sql(cp.seq),
                    cp.head,
                    to_sql(cp.at),
                    cp.public_key,
                    cp.next_public_key,
                    cp.signature
                ],
            )?;
            Ok(cp)
        })
    }

    fn checkpoints(&self, up_to_seq: u64) -> StoreResult<Vec<Checkpoint>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq <= ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([to_sql(up_to_seq)], checkpoint_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
