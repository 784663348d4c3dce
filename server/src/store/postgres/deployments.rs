//! [`crate::store::DeploymentStore`] on PostgreSQL.

use super::devices::{device_where, refs, Arg};
use super::rows::*;
use super::PgStore;
use crate::rollout::{Counts, DeploymentState};
use crate::store::*;

impl DeploymentStore for PgStore {
    fn create_deployment(
        &self,
        new: &NewDeployment,
        now: u64,
        actor: &str,
    ) -> StoreResult<Deployment> {
        self.with_tx(|tx| {
            let release = tx
                .query_opt(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"),
                    &[&new.release_id],
                )?
                .map(|r| release_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "release",
                    id: new.release_id.clone(),
                })?;
            rules::check_deployable(&release, now)?;
            let candidates: Vec<Device> = tx
                .query(
                    &format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices WHERE vendor = $1 AND device = $2 \
                         ORDER BY id"
                    ),
                    &[&release.vendor, &release.device],
                )?
                .iter()
                .map(device_row)
                .collect::<StoreResult<_>>()?;
            let targets = rules::select_targets(&release, &new.target, &candidates)?;
            let count = i64::try_from(targets.len()).unwrap_or(i64::MAX);
            let row = tx.query_one(
                "INSERT INTO deployments (release_id, vendor, device, target, policy, phase, \
                 state, created_at, created_by, device_count) \
                 VALUES ($1, $2, $3, $4, $5, 0, 'active', $6, $7, $8) RETURNING id",
                &[
                    &release.id,
                    &release.vendor,
                    &release.device,
                    &serde_json::to_string(&new.target)?,
                    &serde_json::to_string(&new.policy)?,
                    &to_sql(now),
                    &actor,
                    &count,
                ],
            )?;
            let id: i64 = row.try_get(0)?;
            let (members, open) = rules::rank_members(new, id, &targets);
            let insert = tx.prepare(
                "INSERT INTO members (deployment_id, device_id, rank, bucket, status, updated_at) \
                 VALUES ($1, $2, $3, $4, 'pending', $5)",
            )?;
            for m in &members {
                tx.execute(
                    &insert,
                    &[&id, &m.device_id, &m.rank, &m.bucket, &to_sql(now)],
                )?;
            }
            for (b, n) in open.iter().enumerate() {
                let b = i64::try_from(b).unwrap_or(i64::MAX);
                tx.execute(
                    "INSERT INTO rollout_counts (deployment_id, bucket, confirmed, failures, open) \
                     VALUES ($1, $2, 0, 0, $3)",
                    &[&id, &b, n],
                )?;
            }
            let event = rules::created_event(actor, id, &release, new, members.len());
            append(tx, &event, now)?;
            load_deployment(tx, id, false)?
                .ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn deployments(&self, filter: &DeploymentFilter, page: Page) -> StoreResult<Vec<Deployment>> {
        let (cond, mut args) = deployment_where(filter, 3);
        let mut all: Vec<Arg> = vec![
            Box::new(i64::from(page.limit)),
            Box::new(to_sql(page.offset)),
        ];
        all.append(&mut args);
        let rows = self.conn()?.query(
            &format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE {cond} \
                 ORDER BY d.id DESC LIMIT $1 OFFSET $2"
            ),
            &refs(&all),
        )?;
        rows.iter().map(deployment_row).collect()
    }

    fn deployment(&self, id: i64, page: Page) -> StoreResult<Option<DeploymentDetail>> {
        let mut c = self.conn()?;
        // One snapshot for the deployment, its counts and its members.
        let mut tx = snapshot(&mut c)?;
        let Some(dep) = load_deployment(&mut tx, id, false)? else {
            return Ok(None);
        };
        let n = rules::admitted_now(&dep);
        let rows = tx.query(
            "SELECT device_id, rank, status, updated_at FROM members WHERE deployment_id = $1 \
             ORDER BY rank LIMIT $2 OFFSET $3",
            &[&id, &i64::from(page.limit), &to_sql(page.offset)],
        )?;
        let mut members = Vec::with_capacity(rows.len());
        for r in rows {
            let rank = usize::try_from(r.try_get::<_, i64>(1)?).unwrap_or(usize::MAX);
            let status: String = r.try_get(2)?;
            members.push(Member {
                device_id: r.try_get(0)?,
                rank,
                admitted: rank < n,
                status: parse_status(&status)?,
                updated_at: from_sql(r.try_get(3)?),
            });
        }
        let rows = tx.query(
            "SELECT status, COUNT(*) FROM members WHERE deployment_id = $1 GROUP BY status",
            &[&id],
        )?;
        let mut counts = Vec::new();
        for r in rows {
            let status: String = r.try_get(0)?;
            counts.push((parse_status(&status)?, from_sql(r.try_get(1)?)));
        }
        // The same order as SQLite's (by status name).
        counts.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        tx.commit()?;
        Ok(Some(DeploymentDetail {
            deployment: dep,
            counts,
            members,
        }))
    }

    fn deployment_outcomes(&self, id: i64, spans: u32) -> StoreResult<Outcomes> {
        let mut c = self.conn()?;
        // One snapshot for the span bounds and the counts.
        let mut tx = snapshot(&mut c)?;
        let statuses: Vec<String> = rules::OUTCOMES
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let bounds = tx.query_one(
            "SELECT MIN(updated_at), MAX(updated_at) FROM members \
             WHERE deployment_id = $1 AND status = ANY($2::TEXT[])",
            &[&id, &statuses],
        )?;
        let (Some(first), Some(last)) = (
            bounds.try_get::<_, Option<i64>>(0)?,
            bounds.try_get::<_, Option<i64>>(1)?,
        ) else {
            return Ok(Outcomes::default());
        };
        let (start, width) = (
            from_sql(first),
            rules::outcome_width(from_sql(first), from_sql(last), spans),
        );
        let rows = tx.query(
            "SELECT status, (updated_at - $3) / $4 AS span, COUNT(*) FROM members \
             WHERE deployment_id = $1 AND status = ANY($2::TEXT[]) \
             GROUP BY status, span ORDER BY span, status",
            &[&id, &statuses, &first, &to_sql(width)],
        )?;
        let mut counts = Vec::with_capacity(rows.len());
        for r in rows {
            let status: String = r.try_get(0)?;
            counts.push((
                parse_status(&status)?,
                from_sql(r.try_get(1)?),
                from_sql(r.try_get(2)?),
            ));
        }
        tx.commit()?;
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
            let dep = load_deployment(tx, id, true)?.ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
            let next = rules::next_state(id, action, dep.state)?;
            tx.execute(
                "UPDATE deployments SET state = $2 WHERE id = $1",
                &[&id, &next.as_str()],
            )?;
            let now = now_secs();
            append(tx, audit, now)?;
            if next == DeploymentState::Active {
                // A resumed rollout may already meet its advance or halt condition.
                reevaluate(tx, id, now)?;
            }
            load_deployment(tx, id, false)?
                .ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn rollout_summary(&self) -> StoreResult<RolloutSummary> {
        let mut c = self.conn()?;
        let mut deployments = Vec::new();
        for r in c.query(
            "SELECT state, COUNT(*) FROM deployments GROUP BY state ORDER BY state",
            &[],
        )? {
            let state: String = r.try_get(0)?;
            if let Some(state) = DeploymentState::parse(&state) {
                deployments.push((state, from_sql(r.try_get(1)?)));
            }
        }
        let r = c.query_one(
            "SELECT COALESCE(SUM(c.confirmed), 0)::BIGINT, COALESCE(SUM(c.failures), 0)::BIGINT, \
             COALESCE(SUM(c.open), 0)::BIGINT FROM rollout_counts c JOIN deployments d \
             ON d.id = c.deployment_id WHERE d.state IN ('active', 'paused', 'halted')",
            &[],
        )?;
        let n = |v: i64| usize::try_from(v).unwrap_or(0);
        Ok(RolloutSummary {
            deployments,
            devices: Counts {
                confirmed: n(r.try_get(0)?),
                failures: n(r.try_get(1)?),
                open: n(r.try_get(2)?),
            },
        })
    }
}

/// A read-only transaction on one snapshot, so that the answers it reads agree.
fn snapshot(c: &mut ::postgres::Client) -> StoreResult<::postgres::Transaction<'_>> {
    Ok(c.build_transaction()
        .read_only(true)
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .start()?)
}

/// The `WHERE` condition of `filter` on `deployments d` (`TRUE` when it has none) and its
/// parameters, numbered from `$first` on.
fn deployment_where(filter: &DeploymentFilter, first: usize) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let arg = |v: Arg, args: &mut Vec<Arg>| {
        args.push(v);
        format!("${}", first + args.len() - 1)
    };
    let mut parts = Vec::new();
    if let Some(p) = &filter.product {
        let v = arg(Box::new(p.vendor.clone()), &mut args);
        let d = arg(Box::new(p.device.clone()), &mut args);
        parts.push(format!("d.vendor = {v}::TEXT AND d.device = {d}::TEXT"));
    }
    if let Some(state) = filter.state {
        let s = arg(Box::new(state.as_str().to_owned()), &mut args);
        parts.push(format!("d.state = {s}::TEXT"));
    }
    if let Some(release) = &filter.release {
        let r = arg(Box::new(release.clone()), &mut args);
        parts.push(format!("d.release_id = {r}::TEXT"));
    }
    if let Some(scope) = filter.scope.as_ref().filter(|s| !s.is_unrestricted()) {
        if !scope.products.is_empty() {
            let each: Vec<String> = scope
                .products
                .iter()
                .map(|p| {
                    let v = arg(Box::new(p.vendor.clone()), &mut args);
                    let d = arg(Box::new(p.device.clone()), &mut args);
                    format!("(d.vendor = {v}::TEXT AND d.device = {d}::TEXT)")
                })
                .collect();
            parts.push(format!("({})", each.join(" OR ")));
        }
        let rule = scope.target_rule();
        let mut kinds = Vec::new();
        for (kind, admitted) in [("channel", rule.channels), ("group", rule.groups)] {
            match admitted {
                None => {}
                Some([]) => kinds.push(format!("(d.target::jsonb ->> 'kind') = '{kind}'")),
                Some(values) => {
                    let list = arg(Box::new(values.to_vec()), &mut args);
                    kinds.push(format!(
                        "((d.target::jsonb ->> 'kind') = '{kind}' \
                         AND (d.target::jsonb ->> 'value') = ANY({list}::TEXT[]))"
                    ));
                }
            }
        }
        let devices = DeviceFilter {
            scope: Some(scope.clone()),
            ..DeviceFilter::default()
        };
        let (cond, mut more) = device_where(&devices, first + args.len());
        args.append(&mut more);
        // PostgreSQL may evaluate the subquery before the kind test: other kinds read as an
        // empty list rather than an error on their text value.
        kinds.push(format!(
            "((d.target::jsonb ->> 'kind') = 'devices' AND NOT EXISTS (\
             SELECT 1 FROM jsonb_array_elements_text(CASE WHEN (d.target::jsonb ->> 'kind') = \
             'devices' THEN d.target::jsonb -> 'value' ELSE '[]'::jsonb END) AS listed(id) \
             WHERE NOT EXISTS (SELECT 1 FROM devices WHERE devices.id = listed.id AND {cond})))"
        ));
        parts.push(format!("({})", kinds.join(" OR ")));
    }
    let cond = if parts.is_empty() {
        "TRUE".to_owned()
    } else {
        parts.join(" AND ")
    };
    (cond, args)
}
