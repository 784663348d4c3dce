//! [`crate::store::ApprovalStore`] on SQLite.

use rusqlite::{params, Connection};

use super::rows::{append, from_sql, load_deployment, reevaluate, to_sql};
use super::SqliteStore;
use crate::rollout::DeploymentState;
use crate::store::accounts::*;
use crate::store::{AuditEvent, Deployment, StoreError, StoreResult};

fn insert(tx: &Connection, a: &Approval) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO approvals (kind, subject, decision, by_name, reason, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        a.subject.kind(),
        a.subject.id(),
        a.decision.as_str(),
        a.by,
        a.reason,
        to_sql(a.at)
    ])?;
    Ok(())
}

impl ApprovalStore for SqliteStore {
    fn decide_release(&self, approval: &Approval, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            insert(tx, approval)?;
            append(tx, audit, approval.at)?;
            Ok(())
        })
    }

    fn decide_deployment(
        &self,
        id: i64,
        approval: &Approval,
        audit: &AuditEvent,
    ) -> StoreResult<Deployment> {
        self.with_tx(|tx| {
            let mut dep = load_deployment(tx, id)?.ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
            check_deployment_decision(&dep, approval)?;
            insert(tx, approval)?;
            append(tx, audit, approval.at)?;
            if approval.decision == Decision::Approved {
                dep.policy.hold_after_phase = None;
                tx.execute(
                    "UPDATE deployments SET policy = ?2 WHERE id = ?1",
                    params![id, serde_json::to_string(&dep.policy)?],
                )?;
                if dep.state == DeploymentState::Active {
                    // The canary may have passed already: move on now.
                    reevaluate(tx, id, approval.at)?;
                }
            }
            load_deployment(tx, id)?
                .ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn approvals(&self, subject: &ApprovalSubject) -> StoreResult<Vec<Approval>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT decision, by_name, reason, at FROM approvals \
             WHERE kind = ?1 AND subject = ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![subject.kind(), subject.id()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (decision, by, reason, at) = row?;
            out.push(Approval {
                subject: subject.clone(),
                decision: Decision::parse(&decision)
                    .ok_or_else(|| StoreError::Backend(format!("stored decision {decision:?}")))?,
                by,
                reason,
                at: from_sql(at),
            });
        }
        Ok(out)
    }
}
