//! [`RootChainStore`] over SQLite: one row of the `root_chain` table.

use rusqlite::{OptionalExtension, TransactionBehavior};

use super::rows::{append, to_sql};
use super::SqliteStore;
use crate::roots::{chain_changed, RootChainStore};
use crate::store::{now_secs, AuditEvent, StoreResult};

impl RootChainStore for SqliteStore {
    fn root_chain(&self) -> StoreResult<Option<Vec<u8>>> {
        let conn = self.reader()?;
        Ok(conn
            .query_row("SELECT chain FROM root_chain WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn put_root_chain(
        &self,
        chain: &[u8],
        newest: u32,
        previous: Option<&[u8]>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let now = now_secs();
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<Vec<u8>> = tx
            .query_row("SELECT chain FROM root_chain WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        if stored.as_deref() != previous {
            return Err(chain_changed());
        }
        tx.execute(
            "INSERT INTO root_chain (id, chain, newest_version, updated_at) VALUES (1, ?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET chain = excluded.chain, \
             newest_version = excluded.newest_version, updated_at = excluded.updated_at",
            rusqlite::params![chain, i64::from(newest), to_sql(now)],
        )?;
        append(&tx, audit, now)?;
        tx.commit()?;
        Ok(())
    }
}
