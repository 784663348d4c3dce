//! [`crate::store::ReleaseStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

use crate::store::*;

impl ReleaseStore for SqliteStore {
    fn insert_release(&self, release: &Release, audit: &AuditEvent) -> StoreResult<bool> {
        self.with_tx(|tx| {
            let n = tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO releases ({RELEASE_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0)"
                ),
                params![
                    release.id,
                    release.vendor,
                    release.device,
                    release.component,
                    release.version,
                    release.security_counter,
                    to_sql(release.payload_size),
                    release.payload_digest,
                    release.key_set_version,
                    to_sql(release.created),
                    release.expires.map(to_sql),
                    to_sql(release.size),
                    to_sql(release.uploaded_at),
                    release.uploaded_by,
                ],
            )?;
            if n == 1 {
                append(tx, audit, release.uploaded_at)?;
            }
            Ok(n == 1)
        })
    }

    fn releases(&self, filter: &ReleaseFilter, page: Page) -> StoreResult<Vec<Release>> {
        filtered_list(
            &*self.reader()?,
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases \
                 WHERE (?3 IS NULL OR vendor = ?3) AND (?4 IS NULL OR device = ?4) \
                   AND (?5 IS NULL OR retired = ?5) \
                 ORDER BY uploaded_at DESC, id LIMIT ?1 OFFSET ?2"
            ),
            page,
            filter.product.as_ref(),
            &[&filter.retired],
            release_row,
        )
    }

    fn release(&self, id: &str) -> StoreResult<Option<Release>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"
            ))?
            .query_row([id], release_row)
            .optional()?;
        Ok(row)
    }

    fn retire_release(&self, id: &str, audit: &AuditEvent) -> StoreResult<Release> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "UPDATE releases SET retired = 1 WHERE id = ?1 AND retired = 0",
                [id],
            )?;
            let release = tx
                .query_row(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = ?1"),
                    [id],
                    release_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "release",
                    id: id.to_owned(),
                })?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "release {id} is already retired"
                )));
            }
            append(tx, audit, now_secs())?;
            Ok(release)
        })
    }

    fn release_ids(&self) -> StoreResult<Vec<String>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached("SELECT id FROM releases")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
