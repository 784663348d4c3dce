//! [`crate::store::RecordStore`] on SQLite.

use rusqlite::params;

use super::rows::*;
use super::SqliteStore;
use crate::audit::AuditEntry;
use crate::store::records::{json_needle, prune_event, Membership, PrunedBatch};
use crate::store::*;

impl RecordStore for SqliteStore {
    fn prune_reports_batch(
        &self,
        before: u64,
        limit: u32,
        audit: &AuditEvent,
        now: u64,
    ) -> StoreResult<PrunedBatch> {
        // The batch is the same subquery twice in one write transaction (nothing else writes
        // in between): its figures, then its deletion.
        const BATCH: &str = "SELECT id FROM reports WHERE at < ?1 ORDER BY at, id LIMIT ?2";
        self.with_tx(|tx| {
            let batch = tx.query_row(
                &format!(
                    "SELECT COUNT(*), COUNT(DISTINCT device_id), COALESCE(MIN(at), 0), \
                     COALESCE(MAX(at), 0) FROM reports WHERE id IN ({BATCH})"
                ),
                params![to_sql(before), limit],
                |r| {
                    Ok(PrunedBatch {
                        reports: from_sql(r.get(0)?),
                        devices: from_sql(r.get(1)?),
                        oldest: from_sql(r.get(2)?),
                        newest: from_sql(r.get(3)?),
                    })
                },
            )?;
            if batch.reports > 0 {
                tx.execute(
                    &format!("DELETE FROM reports WHERE id IN ({BATCH})"),
                    params![to_sql(before), limit],
                )?;
                append(tx, &prune_event(audit, &batch), now)?;
            }
            Ok(batch)
        })
    }

    fn reports_older_than(&self, before: u64) -> StoreResult<u64> {
        let conn = self.reader()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM reports WHERE at < ?1",
            params![to_sql(before)],
            |r| r.get(0),
        )?;
        Ok(from_sql(n))
    }

    fn memberships(&self, device_id: &str) -> StoreResult<Vec<Membership>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT m.deployment_id, d.release_id, d.state, m.status, m.rank, m.bucket, \
             m.updated_at FROM members m JOIN deployments d ON d.id = m.deployment_id \
             WHERE m.device_id = ?1 ORDER BY m.deployment_id",
        )?;
        let rows = stmt.query_map(params![device_id], |r| {
            Ok(Membership {
                deployment_id: r.get(0)?,
                release_id: r.get(1)?,
                deployment_state: r.get(2)?,
                status: r.get(3)?,
                rank: r.get(4)?,
                bucket: r.get(5)?,
                updated_at: from_sql(r.get(6)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn device_tokens(&self, device_id: &str) -> StoreResult<Vec<TokenInfo>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, role, created_at, COALESCE(owner, name), expires_at FROM tokens \
             WHERE device_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![device_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created_at, owner, expires_at) = row?;
            let role = Role::parse(&role)
                .ok_or_else(|| StoreError::Backend(format!("token {id}: unknown role {role}")))?;
            out.push(TokenInfo {
                id,
                name,
                role,
                created_at: from_sql(created_at),
                owner,
                expires_at: expires_at.map(from_sql),
            });
        }
        Ok(out)
    }

    fn audit_naming(&self, id: &str) -> StoreResult<Vec<AuditEntry>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit \
             WHERE subject = ?1 OR instr(detail, ?2) > 0 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id, json_needle(id)], audit_entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
