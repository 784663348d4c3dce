//! [`crate::store::RecordStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::audit::AuditEntry;
use crate::store::records::{json_needle, prune_event, Membership, PrunedBatch};
use crate::store::*;

impl RecordStore for PgStore {
    fn prune_reports_batch(
        &self,
        before: u64,
        limit: u32,
        audit: &AuditEvent,
        now: u64,
    ) -> StoreResult<PrunedBatch> {
        self.with_tx(|tx| {
            // The figures come from the rows actually deleted (`RETURNING`): a check-in's trim
            // that runs beside this (without the write lock) may delete some of them first.
            let r = tx.query_one(
                "WITH gone AS (DELETE FROM reports WHERE id IN \
                     (SELECT id FROM reports WHERE at < $1 ORDER BY at, id LIMIT $2) \
                     RETURNING device_id, at) \
                 SELECT COUNT(*), COUNT(DISTINCT device_id), COALESCE(MIN(at), 0), \
                 COALESCE(MAX(at), 0) FROM gone",
                &[&to_sql(before), &i64::from(limit)],
            )?;
            let batch = PrunedBatch {
                reports: from_sql(r.try_get(0)?),
                devices: from_sql(r.try_get(1)?),
                oldest: from_sql(r.try_get(2)?),
                newest: from_sql(r.try_get(3)?),
            };
            if batch.reports > 0 {
                append(tx, &prune_event(audit, &batch), now)?;
            }
            Ok(batch)
        })
    }

    fn reports_older_than(&self, before: u64) -> StoreResult<u64> {
        let mut c = self.conn()?;
        let r = c.query_one(
            "SELECT COUNT(*) FROM reports WHERE at < $1",
            &[&to_sql(before)],
        )?;
        Ok(from_sql(r.try_get(0)?))
    }

    fn memberships(&self, device_id: &str) -> StoreResult<Vec<Membership>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT m.deployment_id, d.release_id, d.state, m.status, m.rank, m.bucket, \
             m.updated_at FROM members m JOIN deployments d ON d.id = m.deployment_id \
             WHERE m.device_id = $1 ORDER BY m.deployment_id",
            &[&device_id],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Membership {
                    deployment_id: r.try_get(0)?,
                    release_id: r.try_get(1)?,
                    deployment_state: r.try_get(2)?,
                    status: r.try_get(3)?,
                    rank: r.try_get(4)?,
                    bucket: r.try_get(5)?,
                    updated_at: from_sql(r.try_get(6)?),
                })
            })
            .collect()
    }

    fn device_tokens(&self, device_id: &str) -> StoreResult<Vec<TokenInfo>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT id, name, role, created_at, COALESCE(owner, name), expires_at FROM tokens \
             WHERE device_id = $1 ORDER BY id",
            &[&device_id],
        )?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let role: String = r.try_get(2)?;
                let role = Role::parse(&role).ok_or_else(|| {
                    StoreError::Backend(format!("token {id}: unknown role {role}"))
                })?;
                Ok(TokenInfo {
                    id,
                    name: r.try_get(1)?,
                    role,
                    created_at: from_sql(r.try_get(3)?),
                    owner: r.try_get(4)?,
                    expires_at: r.try_get::<_, Option<i64>>(5)?.map(from_sql),
                })
            })
            .collect()
    }

    fn audit_naming(&self, id: &str) -> StoreResult<Vec<AuditEntry>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit \
             WHERE subject = $1 OR strpos(detail, $2) > 0 ORDER BY seq",
            &[&id, &json_needle(id)],
        )?;
        Ok(rows.iter().map(audit_entry).collect::<Result<_, _>>()?)
    }
}
