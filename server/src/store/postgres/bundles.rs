//! [`crate::store::BundleBytes`] on PostgreSQL: bundle files in `bundle_chunks`, 1 MiB per
//! row, so that any replica can serve any bundle and a lost replica loses none.

use std::io::{Read, Write};

use super::rows::*;
use super::PgStore;
use crate::store::*;

/// Bytes per stored chunk.
pub const BUNDLE_CHUNK: usize = 1 << 20;

/// Bundles without a release are kept this long (an upload between its bytes and its release
/// row on another replica), then pruned.
const ORPHAN_GRACE_SECS: u64 = 3600;

impl BundleBytes for PgStore {
    fn keeps_bundles(&self) -> bool {
        true
    }

    fn put_bundle(&self, id: &str, bundle: &mut dyn Read, now: u64) -> StoreResult<()> {
        let mut conn = self.conn()?;
        if conn
            .query_opt("SELECT 1 FROM bundles WHERE id = $1", &[&id])?
            .is_some()
        {
            return Ok(());
        }
        // No write lock: chunks are keyed by content, and a concurrent upload of the same
        // bundle waits on these rows, then inserts nothing.
        let mut tx = conn.transaction()?;
        let insert = tx.prepare(
            "INSERT INTO bundle_chunks (bundle_id, n, data) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )?;
        let mut buf = vec![0u8; BUNDLE_CHUNK];
        let (mut n, mut size) = (0i64, 0u64);
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let got = bundle
                    .read(buf.get_mut(filled..).unwrap_or_default())
                    .map_err(|e| StoreError::Backend(format!("reading bundle {id}: {e}")))?;
                if got == 0 {
                    break;
                }
                filled = filled.saturating_add(got);
            }
            if filled == 0 {
                break;
            }
            let chunk = buf.get(..filled).unwrap_or_default();
            tx.execute(&insert, &[&id, &n, &chunk])?;
            n = n.saturating_add(1);
            size = size.saturating_add(filled as u64);
            if filled < buf.len() {
                break;
            }
        }
        tx.execute(
            "INSERT INTO bundles (id, size, chunks, stored_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&id, &to_sql(size), &n, &to_sql(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get_bundle(&self, id: &str, out: &mut dyn Write) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        let Some(row) = conn.query_opt("SELECT chunks FROM bundles WHERE id = $1", &[&id])? else {
            return Ok(false);
        };
        let chunks: i64 = row.try_get(0)?;
        // One chunk per query: memory stays at one chunk whatever the bundle's size.
        let select =
            conn.prepare("SELECT data FROM bundle_chunks WHERE bundle_id = $1 AND n = $2")?;
        for n in 0..chunks {
            let row = conn
                .query_opt(&select, &[&id, &n])?
                .ok_or_else(|| StoreError::Backend(format!("bundle {id} lacks its chunk {n}")))?;
            let data: &[u8] = row.try_get(0)?;
            out.write_all(data)
                .map_err(|e| StoreError::Backend(format!("writing bundle {id}: {e}")))?;
        }
        Ok(true)
    }

    fn prune_bundles(&self, now: u64) -> StoreResult<u64> {
        let cutoff = to_sql(now.saturating_sub(ORPHAN_GRACE_SECS));
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM bundle_chunks WHERE bundle_id IN (SELECT b.id FROM bundles b \
             WHERE b.stored_at < $1 AND NOT EXISTS (SELECT 1 FROM releases r WHERE r.id = b.id))",
            &[&cutoff],
        )?;
        let n = tx.execute(
            "DELETE FROM bundles b WHERE b.stored_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM releases r WHERE r.id = b.id)",
            &[&cutoff],
        )?;
        tx.commit()?;
        Ok(n)
    }
}
