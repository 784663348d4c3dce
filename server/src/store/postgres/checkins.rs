//! [`crate::store::CheckInStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::store::*;

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
        // Fast path, no savepoints: an unknown device is found before anything is written, so
        // it fails alone. Any other failure rolls the batch back and it is run again with a
        // savepoint per check-in (two round trips more each), where one that fails leaves no
        // trace and does not undo the others.
        let fast = self.with_tx_cached(|tx, st| {
            let mut out = Vec::with_capacity(batch.len());
            for c in batch {
                match record_check_in(tx, st, c, now, keep) {
                    Ok(a) => out.push(Ok(a)),
                    Err(e @ StoreError::NotFound { .. }) => out.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        });
        match fast {
            Ok(out) => return Ok(out),
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(_) => {}
        }
        self.with_tx_cached(|tx, st| {
            let mut out = Vec::with_capacity(batch.len());
            for c in batch {
                let mut sp = tx.savepoint("check_in")?;
                match record_check_in(&mut sp, st, c, now, keep) {
                    Ok(a) => {
                        sp.commit()?;
                        out.push(Ok(a));
                    }
                    Err(e @ StoreError::Unavailable(_)) => return Err(e),
                    Err(e) => {
                        sp.rollback()?;
                        out.push(Err(e));
                    }
                }
            }
            Ok(out)
        })
    }

    fn reports(&self, device_id: &str, limit: u32) -> StoreResult<Vec<Report>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT device_id, at, version, security_counter, state, deployment_id, detail \
             FROM reports WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
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
