//! [`crate::store::AuditStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::audit::{AuditEntry, Checkpoint, GENESIS_HASH};
use crate::store::*;

impl AuditStore for PgStore {
    fn append_audit(&self, event: &AuditEvent, now: u64) -> StoreResult<AuditEntry> {
        self.with_tx(|tx| append(tx, event, now))
    }

    fn audit_entries(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&to_sql(after), &i64::from(limit)],
        )?;
        Ok(rows.iter().map(audit_entry).collect::<Result<_, _>>()?)
    }

    fn audit_head(&self) -> StoreResult<(u64, String)> {
        let mut c = self.conn()?;
        Ok(audit_head(&mut **c)?.unwrap_or((0, GENESIS_HASH.to_owned())))
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
            let (seq, head) = audit_head(tx)?.unwrap_or((0, GENESIS_HASH.to_owned()));
            let latest = tx
                .query_opt(
                    &format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
                    ),
                    &[],
                )?
                .map(|r| checkpoint_row(&r))
                .transpose()?;
            let draft = match rules::checkpoint_step(seq, head, now, latest, audit.is_some()) {
                rules::CheckpointStep::Current(cp) => return Ok(cp),
                rules::CheckpointStep::Sign(draft) => draft,
            };
            let cp = sign(&draft).map_err(StoreError::Backend)?;
            tx.execute(
                &format!(
                    "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[
                    &to_sql(cp.seq),
                    &cp.head,
                    &to_sql(cp.at),
                    &cp.public_key,
                    &cp.next_public_key,
                    &cp.signature,
                ],
            )?;
            Ok(cp)
        })
    }

    fn checkpoints(&self, up_to_seq: u64) -> StoreResult<Vec<Checkpoint>> {
        let mut c = self.conn()?;
        let rows = c.query(
            &format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq <= $1 ORDER BY id"
            ),
            &[&to_sql(up_to_seq)],
        )?;
        rows.iter().map(checkpoint_row).collect()
    }
}
