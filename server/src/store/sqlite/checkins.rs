//! [`crate::store::CheckInStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::params;

use crate::store::*;

impl CheckInStore for SqliteStore {
    fn check_in(&self, c: &CheckIn, now: u64, keep: u32) -> StoreResult<Option<Assignment>> {
        self.with_relaxed_tx(|tx| record_check_in(tx, c, now, keep))
    }

    fn check_in_batch(
        &self,
        batch: &[CheckIn],
        now: u64,
        keep: u32,
    ) -> StoreResult<Vec<StoreResult<Option<Assignment>>>> {
        self.with_relaxed_tx(|tx| {
            let mut out = Vec::with_capacity(batch.len());
            for c in batch {
                // A savepoint per check-in: one that fails leaves no trace and does not undo
                // the others in the batch.
                tx.prepare_cached("SAVEPOINT check_in")?.execute([])?;
                match record_check_in(tx, c, now, keep) {
                    Ok(a) => {
                        tx.prepare_cached("RELEASE check_in")?.execute([])?;
                        out.push(Ok(a));
                    }
                    Err(e) => {
                        tx.execute_batch("ROLLBACK TO check_in; RELEASE check_in")?;
                        out.push(Err(e));
                    }
                }
            }
            Ok(out)
        })
    }

    fn reports(&self, device_id: &str, limit: u32) -> StoreResult<Vec<Report>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, at, version, security_counter, state, deployment_id, detail FROM reports \
             WHERE device_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![device_id, limit], |r| {
            Ok((
                Report {
                    at: from_sql(r.get(1)?),
                    check_in: CheckIn {
                        device_id: r.get(0)?,
                        version: r.get(2)?,
                        security_counter: r.get(3)?,
                        state: CheckInState::Idle,
                        deployment_id: r.get(5)?,
                        detail: r.get(6)?,
                    },
                },
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (mut report, state) = row?;
            report.check_in.state = parse_state(&state)?;
            Ok(report)
        })
        .collect()
    }

    fn may_download(&self, device_id: &str, release_id: &str, now: u64) -> StoreResult<bool> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT d.id FROM deployments d JOIN members m ON m.deployment_id = d.id \
             JOIN releases r ON r.id = d.release_id \
             WHERE m.device_id = ?1 AND d.release_id = ?2 AND d.state = 'active' \
             AND r.retired = 0 AND (r.expires IS NULL OR r.expires > ?3)",
        )?;
        let ids: Vec<i64> = stmt
            .query_map(params![device_id, release_id, to_sql(now)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            if admitted_member(&conn, id, device_id)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
