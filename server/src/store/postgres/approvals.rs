//! [`crate::store::ApprovalStore`] on PostgreSQL.

use postgres::GenericClient;

use super::rows::{append, from_sql, load_deployment, reevaluate, to_sql};
use super::PgStore;
use crate::rollout::DeploymentState;
use crate::store::accounts::*;
use crate::store::{AuditEvent, Deployment, StoreError, StoreResult};

fn insert(c: &mut impl GenericClient, a: &Approval) -> StoreResult<()> {
    c.execute(
        "INSERT INTO approvals (kind, subject, decision, by_name, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &a.subject.kind(),
            &a.subject.id(),
            &a.decision.as_str(),
            &a.by,
            &a.reason,
            &to_sql(a.at),
        ],
    )?;
    Ok(())
}

impl ApprovalStore for PgStore {
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
            let mut dep = load_deployment(tx, id, true)?.ok_or_else(|| StoreError::NotFound {
                what: "deployment",
                id: id.to_string(),
            })?;
            check_deployment_decision(&dep, approval)?;
            insert(tx, approval)?;
            append(tx, audit, approval.at)?;
            if approval.decision == Decision::Approved {
                dep.policy.hold_after_phase = None;
                tx.execute(
                    "UPDATE deployments SET policy = $2 WHERE id = $1",
                    &[&id, &serde_json::to_string(&dep.policy)?],
                )?;
                if dep.state == DeploymentState::Active {
                    // The canary may have passed already: move on now.
                    reevaluate(tx, id, approval.at)?;
                }
            }
            load_deployment(tx, id, false)?
                .ok_or_else(|| StoreError::Backend("deployment vanished".to_owned()))
        })
    }

    fn approvals(&self, subject: &ApprovalSubject) -> StoreResult<Vec<Approval>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT decision, by_name, reason, at FROM approvals \
             WHERE kind = $1 AND subject = $2 ORDER BY id",
            &[&subject.kind(), &subject.id()],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let decision: String = r.try_get(0)?;
            out.push(Approval {
                subject: subject.clone(),
                decision: Decision::parse(&decision)
                    .ok_or_else(|| StoreError::Backend(format!("stored decision {decision:?}")))?,
                by: r.try_get(1)?,
                reason: r.try_get(2)?,
                at: from_sql(r.try_get(3)?),
            });
        }
        Ok(out)
    }
}
