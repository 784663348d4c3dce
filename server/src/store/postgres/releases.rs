//! [`crate::store::ReleaseStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::store::*;

impl ReleaseStore for PgStore {
    fn insert_release(&self, release: &Release, audit: &AuditEvent) -> StoreResult<bool> {
        self.with_tx(|tx| {
            let n = tx.execute(
                &format!(
                    "INSERT INTO releases ({RELEASE_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, FALSE) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &release.id,
                    &release.vendor,
                    &release.device,
                    &release.component,
                    &release.version,
                    &i64::from(release.security_counter),
                    &to_sql(release.payload_size),
                    &release.payload_digest,
                    &i64::from(release.key_set_version),
                    &to_sql(release.created),
                    &release.expires.map(to_sql),
                    &to_sql(release.size),
                    &to_sql(release.uploaded_at),
                    &release.uploaded_by,
                ],
            )?;
            if n == 1 {
                append(tx, audit, release.uploaded_at)?;
            }
            Ok(n == 1)
        })
    }

    fn releases(&self, filter: &ReleaseFilter, page: Page) -> StoreResult<Vec<Release>> {
        let mut c = self.conn()?;
        let vendor = filter.product.as_ref().map(|p| p.vendor.as_str());
        let device = filter.product.as_ref().map(|p| p.device.as_str());
        let rows = c.query(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases \
                 WHERE ($3::TEXT IS NULL OR vendor = $3) AND ($4::TEXT IS NULL OR device = $4) \
                   AND ($5::BOOLEAN IS NULL OR retired = $5) \
                 ORDER BY uploaded_at DESC, id LIMIT $1 OFFSET $2"
            ),
            &[
                &i64::from(page.limit),
                &to_sql(page.offset),
                &vendor,
                &device,
                &filter.retired,
            ],
        )?;
        rows.iter().map(release_row).collect()
    }

    fn release(&self, id: &str) -> StoreResult<Option<Release>> {
        let mut c = self.conn()?;
        c.query_opt(
            &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"),
            &[&id],
        )?
        .map(|r| release_row(&r))
        .transpose()
    }

    fn retire_release(&self, id: &str, audit: &AuditEvent) -> StoreResult<Release> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "UPDATE releases SET retired = TRUE WHERE id = $1 AND NOT retired",
                &[&id],
            )?;
            let release = tx
                .query_opt(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"),
                    &[&id],
                )?
                .map(|r| release_row(&r))
                .transpose()?
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
        let mut c = self.conn()?;
        let rows = c.query("SELECT id FROM releases", &[])?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
