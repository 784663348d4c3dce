//! [`crate::store::CheckInStore`] on PostgreSQL.

use super::rows::*;
use super::{PgStore, Stmts};
use crate::store::rules;
use crate::store::*;

/// Check-in batches one replica commits at once.
const BATCH_WRITERS: usize = 4;

impl CheckInStore for PgStore {
    fn check_in(&self, c: &CheckIn, now: u64, keep: u32) -> StoreResult<Option<Assignment>> {
        self.with_tx_cached(|tx, st| record_check_in(tx, st, c, now, keep))
    }

    fn check_in_batch(
        &self,
        batch: &[CheckIn],
        now: u64,
        keep: u32,
    ) -> StoreResult<Vec<StoreResult<Option<Assignment>>>> {
        // Device rows are locked in one order (by id) in every batch, so that two batches
        // sharing devices cannot deadlock; results go back in the batch's order.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| batch[a].device_id.cmp(&batch[b].device_id));
        let run = |tx: &mut ::postgres::Transaction<'_>, st: &mut Stmts<'_>| {
            record_batch(tx, st, batch, &order, now, keep)
        };
        // A batch of unchanged check-ins (same version and state as before, no report for a
        // rollout) makes no rollout decision and appends no audit entry: it runs without the
        // write lock, only each device's row locked, and commits alongside other replicas'
        // batches. When one of its check-ins turns out to need the lock it rolls back and runs
        // again under it.
        let decides = batch
            .iter()
            .any(|c| c.deployment_id.is_some() && rules::reported_status(c.state).is_some());
        if !decides {
            match self.tx_cached(false, run) {
                Ok(out) => return Ok(out),
                Err((e @ StoreError::Unavailable(_), _)) => return Err(e),
                Err(_) => {}
            }
        }
        // Under the lock, no savepoints: an unknown device is found before anything is
        // written, so it fails alone. Any other failure rolls the batch back and it is run
        // again one check-in at a time with a savepoint each (a few round trips each), where
        // one that fails leaves no trace and does not undo the others.
        match self.with_tx_cached(run) {
            Ok(out) => return Ok(out),
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(_) => {}
        }
        self.with_tx_cached(|tx, st| {
            let mut out: Vec<Option<StoreResult<Option<Assignment>>>> =
                (0..batch.len()).map(|_| None).collect();
            for &i in &order {
                let mut sp = tx.savepoint("check_in")?;
                match record_check_in(&mut sp, st, &batch[i], now, keep) {
                    Ok(a) => {
                        sp.commit()?;
                        out[i] = Some(Ok(a));
                    }
                    Err(e @ StoreError::Unavailable(_)) => return Err(e),
                    Err(e) => {
                        sp.rollback()?;
                        out[i] = Some(Err(e));
                    }
                }
            }
            Ok(out.into_iter().flatten().collect())
        })
    }

    /// Batches from one replica commit side by side (as other replicas' do): while one waits
    /// for its commit, the next is executing. More than a few only adds lock waits.
    fn batch_writers(&self) -> usize {
        BATCH_WRITERS
    }

    fn reports(&self, device_id: &str, limit: u32) -> StoreResult<Vec<Report>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT device_id, at, version, security_counter, state, deployment_id, detail \
             FROM reports WHERE device_id = $1 ORDER BY seq DESC LIMIT $2",
            &[&device_id, &i64::from(limit)],
        )?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(4)?;
                Ok(Report {
                    at: from_sql(r.try_get(1)?),
                    check_in: CheckIn {
                        device_id: r.try_get(0)?,
                        version: r.try_get(2)?,
                        security_counter: u32_sql(r.try_get(3)?),
                        state: parse_state(&state)?,
                        deployment_id: r.try_get(5)?,
                        detail: r.try_get(6)?,
                    },
                })
            })
            .collect()
    }

    fn may_download(&self, device_id: &str, release_id: &str, now: u64) -> StoreResult<bool> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT d.id FROM deployments d JOIN members m ON m.deployment_id = d.id \
             JOIN releases r ON r.id = d.release_id \
             WHERE m.device_id = $1 AND d.release_id = $2 AND d.state = 'active' \
             AND NOT r.retired AND (r.expires IS NULL OR r.expires > $3)",
            &[&device_id, &release_id, &to_sql(now)],
        )?;
        for r in rows {
            let id: i64 = r.try_get(0)?;
            if admitted_member(&mut **c, id, device_id)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
