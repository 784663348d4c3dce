//! [`crate::store::DeploymentStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

use crate::rollout::{Counts, DeploymentState};
use crate::store::*;

impl DeploymentStore for SqliteStore {
    fn create_deployment(
        &self,
        new: &NewDeployment,
        now: u64,
        actor: &str,
    ) -> StoreResult<Deployment> {
        let candidates = self.all_devices()?;
        self.with_tx(|tx| {
            let release = tx
                .query_row(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"),
                    [&new.release_id],
                    release_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound { what: "release", id: new.release_id.clone() })?;
            rules::check_deployable(&release, now)?;
            let targets = rules::select_targets(&release, &new.target, &candidates)?;
            tx.execute(
                "INSERT INTO deployments (release_id, vendor, device, target, policy, phase, state, created_at, \
                 created_by, device_count) VALUES (?1, ?2, ?3, ?4, ?5, 0, 'active', ?6, ?7, ?8)",
                params![
                    release.id,
                    release.vendor,
                    release.device,
                    serde_json::to_string(&new.target)?,
                    serde_json::to_string(&new.policy)?,
                    to_sql(now),
                    actor,
                    targets.len() as i64
                ],
            )?;
            let id = tx.last_insert_rowid();
            let (members, open) = rules::rank_members(new, id, &targets);
            for m in &members {
                tx.prepare_cached(
                    "INSERT INTO members (deployment_id, device_id, rank, bucket, status, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                )?
                .execute(params![id, m.device_id, m.rank, m.bucket, to_sql(now)])?;
            }
            for (b, n) in open.iter().enumerate() {
                tx.prepare_cached(
                    "INSERT INTO rollout_counts (deployment_id, bucket, confirmed, failures, open) \
                     VALUES (?1, ?2, 0, 0, ?3)",
                )?
                .execute(params![id, b as i64, n])?;
            }
            let event = rules::created_event(actor, id, &release, new, members.len());
            append(tx, &event, now)?;
            load_deployment(tx, id)?.ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn deployments(&self, filter: &DeploymentFilter, page: Page) -> StoreResult<Vec<Deployment>> {
        let rows = filtered_list(
            &*self.reader()?,
            &format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d \
                 WHERE (?3 IS NULL OR d.vendor = ?3) AND (?4 IS NULL OR d.device = ?4) \
                   AND (?5 IS NULL OR d.state = ?5) \
                 ORDER BY d.id DESC LIMIT ?1 OFFSET ?2"
            ),
            page,
            filter.product.as_ref(),
            &[&filter.state.map(DeploymentState::as_str)],
            deployment_row,
        )?;
        rows.into_iter().map(finish_deployment).collect()
    }

    fn deployment(&self, id: i64, page: Page) -> StoreResult<Option<DeploymentDetail>> {
        let conn = self.reader()?;
        let Some(dep) = load_deployment(&conn, id)? else {
            return Ok(None);
        };
        let n = rules::admitted_now(&dep);
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, rank, status, updated_at FROM members WHERE deployment_id = ?1 \
             ORDER BY rank LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![id, page.limit, to_sql(page.offset)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (device_id, rank, status, updated_at) = row?;
            let rank = usize::try_from(rank).unwrap_or(usize::MAX);
            members.push(Member {
                device_id,
                rank,
                admitted: rank < n,
                status: parse_status(&status)?,
                updated_at: from_sql(updated_at),
            });
        }
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM members WHERE deployment_id = ?1 GROUP BY status",
        )?;
        let rows = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, n) = row?;
            counts.push((parse_status(&status)?, from_sql(n)));
        }
        Ok(Some(DeploymentDetail {
            deployment: dep,
            counts,
            members,
        }))
    }

    fn act_on_deployment(
        &self,
        id: i64,
        action: DeploymentAction,
        audit: &AuditEvent,
    ) -> StoreResult<Deployment> {
        self.with_tx(|tx| {
            let dep = load_deployment(tx, id)?.ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
            let next = rules::next_state(id, action, dep.state)?;
            tx.execute(
                "UPDATE deployments SET state = ?2 WHERE id = ?1",
                params![id, next.as_str()],
            )?;
            let now = now_secs();
            append(tx, audit, now)?;
            if next == DeploymentState::Active {
                // A resumed rollout may already meet its advance or halt condition.
                reevaluate(tx, id, now)?;
            }
            load_deployment(tx, id)?
                .ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn rollout_summary(&self) -> StoreResult<RolloutSummary> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached("SELECT state, COUNT(*) FROM deployments GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut deployments = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Some(state) = DeploymentState::parse(&state) {
                deployments.push((state, from_sql(n)));
            }
        }
        let (confirmed, failures, open): (i64, i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(c.confirmed), 0), COALESCE(SUM(c.failures), 0), \
                 COALESCE(SUM(c.open), 0) FROM rollout_counts c JOIN deployments d \
                 ON d.id = c.deployment_id WHERE d.state IN ('active', 'paused', 'halted')",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let n = |v: i64| usize::try_from(v).unwrap_or(0);
        Ok(RolloutSummary {
            deployments,
            devices: Counts {
                confirmed: n(confirmed),
                failures: n(failures),
                open: n(open),
            },
        })
    }
}
