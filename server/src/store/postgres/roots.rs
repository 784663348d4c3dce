//! [`RootChainStore`] on PostgreSQL: one row of the `root_chain` table, written under the
//! store's write lock, compared with the chain the caller checked against first, so two
//! replicas given chains at once store one of them and refuse the other.

use super::rows::{append, to_sql};
use super::PgStore;
use crate::roots::{chain_changed, RootChainStore};
use crate::store::{now_secs, AuditEvent, StoreResult};

impl RootChainStore for PgStore {
    fn root_chain(&self) -> StoreResult<Option<Vec<u8>>> {
        let mut c = self.conn()?;
        let row = c.query_opt("SELECT chain FROM root_chain WHERE id = 1", &[])?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    fn put_root_chain(
        &self,
        chain: &[u8],
        newest: u32,
        previous: Option<&[u8]>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let now = now_secs();
        self.with_tx(|tx| {
            let stored: Option<Vec<u8>> = tx
                .query_opt("SELECT chain FROM root_chain WHERE id = 1", &[])?
                .map(|r| r.try_get(0))
                .transpose()?;
            if stored.as_deref() != previous {
                return Err(chain_changed());
            }
            tx.execute(
                "INSERT INTO root_chain (id, chain, newest_version, updated_at) \
                 VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET chain = excluded.chain, \
                 newest_version = excluded.newest_version, updated_at = excluded.updated_at",
                &[&chain, &i64::from(newest), &to_sql(now)],
            )?;
            append(tx, audit, now)?;
            Ok(())
        })
    }
}
