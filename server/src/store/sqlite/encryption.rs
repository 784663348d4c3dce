//! [`crate::store::EncryptionStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

use crate::store::*;

impl EncryptionStore for SqliteStore {
    fn set_encryption_key(
        &self,
        device_id: &str,
        key: Option<&EncryptionKey>,
        now: u64,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            let exists = tx
                .query_row("SELECT 1 FROM devices WHERE id = ?1", [device_id], |_| Ok(()))
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    what: "device",
                    id: device_id.to_owned(),
                });
            }
            match key {
                Some(k) => {
                    let other: Option<String> = tx
                        .query_row(
                            "SELECT device_id FROM device_encryption_keys \
                             WHERE recipient = ?1 AND device_id <> ?2",
                            [&k.recipient, device_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(other) = other {
                        return Err(StoreError::Conflict(format!(
                            "device {other} is already enrolled with that encryption key"
                        )));
                    }
                    tx.execute(
                        "INSERT INTO device_encryption_keys (device_id, public_key, recipient, set_at) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device_id) DO UPDATE SET \
                         public_key = excluded.public_key, recipient = excluded.recipient, \
                         set_at = excluded.set_at",
                        params![device_id, k.public_key, k.recipient, to_sql(now)],
                    )?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM device_encryption_keys WHERE device_id = ?1",
                        [device_id],
                    )?;
                }
            }
            if let Some(audit) = audit {
                append(tx, audit, now)?;
            }
            Ok(())
        })
    }

    fn encryption_key(&self, device_id: &str) -> StoreResult<Option<EncryptionKey>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(
                "SELECT public_key, recipient FROM device_encryption_keys WHERE device_id = ?1",
            )?
            .query_row([device_id], |r| {
                Ok(EncryptionKey {
                    public_key: r.get(0)?,
                    recipient: r.get(1)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    fn recipient_device(&self, recipient: &str) -> StoreResult<Option<String>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached("SELECT device_id FROM device_encryption_keys WHERE recipient = ?1")?
            .query_row([recipient], |r| r.get(0))
            .optional()?;
        Ok(row)
    }

    fn mark_encrypted(&self, release_id: &str, manifest_digest: &str) -> StoreResult<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO encrypted_releases (release_id, manifest_digest) \
                 VALUES (?1, ?2)",
                [release_id, manifest_digest],
            )?;
            Ok(())
        })
    }

    fn encrypted_release(&self, release_id: &str) -> StoreResult<Option<String>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached("SELECT manifest_digest FROM encrypted_releases WHERE release_id = ?1")?
            .query_row([release_id], |r| r.get(0))
            .optional()?;
        Ok(row)
    }

    fn put_key_records(
        &self,
        release_id: &str,
        records: &[(String, Vec<u8>)],
        now: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            for (recipient, record) in records {
                tx.execute(
                    "INSERT INTO key_records (release_id, recipient, record, uploaded_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (release_id, recipient) DO UPDATE SET \
                     record = excluded.record, uploaded_at = excluded.uploaded_at",
                    params![release_id, recipient, record, to_sql(now)],
                )?;
            }
            append(tx, audit, now)?;
            Ok(())
        })
    }

    fn key_record(&self, release_id: &str, device_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(
                "SELECT k.record FROM key_records k JOIN device_encryption_keys d \
                 ON d.recipient = k.recipient WHERE k.release_id = ?1 AND d.device_id = ?2",
            )?
            .query_row([release_id, device_id], |r| r.get(0))
            .optional()?;
        Ok(row)
    }

    fn withheld(
        &self,
        deployment_id: i64,
        admitted: usize,
        page: Page,
    ) -> StoreResult<(u64, Vec<WithheldMember>)> {
        let conn = self.reader()?;
        let admitted = i64::try_from(admitted).unwrap_or(i64::MAX);
        let from = encryption::withheld_from_where("?1", "?2");
        let count: i64 = conn
            .prepare_cached(&format!("SELECT COUNT(*) {from}"))?
            .query_row(params![deployment_id, admitted], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT m.device_id, m.rank, m.status, dk.device_id IS NULL {from} \
             ORDER BY m.rank LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(
            params![deployment_id, admitted, page.limit, to_sql(page.offset)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            },
        )?;
        let mut members = Vec::new();
        for row in rows {
            let (device_id, rank, status, no_key) = row?;
            members.push(WithheldMember {
                device_id,
                rank: usize::try_from(rank).unwrap_or(usize::MAX),
                status: parse_status(&status)?,
                reason: WithheldReason::of(no_key),
            });
        }
        Ok((from_sql(count), members))
    }
}
