//! [`crate::store::DeploymentStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};

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
        let (cond, mut args) = deployment_where(filter, 3);
        let mut all = vec![
            Value::Integer(page.limit.into()),
            Value::Integer(to_sql(page.offset)),
        ];
        all.append(&mut args);
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE {cond} \
             ORDER BY d.id DESC LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = stmt
            .query_map(params_from_iter(all), deployment_row)?
            .collect::<Result<Vec<_>, _>>()?;
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

    fn deployment_outcomes(&self, id: i64, spans: u32) -> StoreResult<Outcomes> {
        let reader = self.reader()?;
        // One snapshot for the span bounds and the counts (dropped unwritten).
        let conn = reader.unchecked_transaction()?;
        let statuses = rules::OUTCOMES.map(|s| Value::Text(s.as_str().to_owned()));
        let (first, last): (Option<i64>, Option<i64>) = conn
            .prepare_cached(
                "SELECT MIN(updated_at), MAX(updated_at) FROM members \
                 WHERE deployment_id = ?1 AND status IN (?2, ?3, ?4)",
            )?
            .query_row(
                params_from_iter([Value::Integer(id)].into_iter().chain(statuses.clone())),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Outcomes::default());
        };
        let (start, width) = (
            from_sql(first),
            rules::outcome_width(from_sql(first), from_sql(last), spans),
        );
        let mut stmt = conn.prepare_cached(
            "SELECT status, (updated_at - ?5) / ?6 AS span, COUNT(*) FROM members \
             WHERE deployment_id = ?1 AND status IN (?2, ?3, ?4) \
             GROUP BY status, span ORDER BY span, status",
        )?;
        let args = [Value::Integer(id)]
            .into_iter()
            .chain(statuses)
            .chain([Value::Integer(first), Value::Integer(to_sql(width))]);
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, span, n) = row?;
            counts.push((parse_status(&status)?, from_sql(span), from_sql(n)));
        }
        Ok(Outcomes {
            start,
            width,
            counts,
        })
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

/// The `WHERE` condition of `filter` on `deployments d` (`1` when it has none) and its
/// parameters, numbered from `?first` on.
fn deployment_where(filter: &DeploymentFilter, first: usize) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = Vec::new();
    let arg = |v: &str, args: &mut Vec<Value>| {
        args.push(Value::Text(v.to_owned()));
        format!("?{}", first + args.len() - 1)
    };
    let mut parts = Vec::new();
    if let Some(p) = &filter.product {
        let (v, d) = (arg(&p.vendor, &mut args), arg(&p.device, &mut args));
        parts.push(format!("d.vendor = {v} AND d.device = {d}"));
    }
    if let Some(state) = filter.state {
        parts.push(format!("d.state = {}", arg(state.as_str(), &mut args)));
    }
    if let Some(release) = &filter.release {
        parts.push(format!("d.release_id = {}", arg(release, &mut args)));
    }
    if let Some(scope) = filter.scope.as_ref().filter(|s| !s.is_unrestricted()) {
        if !scope.products.is_empty() {
            let each: Vec<String> = scope
                .products
                .iter()
                .map(|p| {
                    let (v, d) = (arg(&p.vendor, &mut args), arg(&p.device, &mut args));
                    format!("(d.vendor = {v} AND d.device = {d})")
                })
                .collect();
            parts.push(format!("({})", each.join(" OR ")));
        }
        let rule = scope.target_rule();
        let mut kinds = Vec::new();
        for (kind, admitted) in [("channel", rule.channels), ("group", rule.groups)] {
            match admitted {
                None => {}
                Some([]) => kinds.push(format!("json_extract(d.target, '$.kind') = '{kind}'")),
                Some(values) => {
                    let list: Vec<String> = values.iter().map(|v| arg(v, &mut args)).collect();
                    kinds.push(format!(
                        "(json_extract(d.target, '$.kind') = '{kind}' \
                         AND json_extract(d.target, '$.value') IN ({}))",
                        list.join(", ")
                    ));
                }
            }
        }
        let devices = DeviceFilter {
            scope: Some(scope.clone()),
            ..DeviceFilter::default()
        };
        let (cond, mut more) = super::devices::device_where(&devices, first + args.len());
        args.append(&mut more);
        kinds.push(format!(
            "(json_extract(d.target, '$.kind') = 'devices' AND NOT EXISTS (\
             SELECT 1 FROM json_each(d.target, '$.value') listed WHERE NOT EXISTS (\
             SELECT 1 FROM devices WHERE devices.id = listed.value AND {cond})))"
        ));
        parts.push(format!("({})", kinds.join(" OR ")));
    }
    let cond = if parts.is_empty() {
        "1".to_owned()
    } else {
        parts.join(" AND ")
    };
    (cond, args)
}
