//! [`crate::store::EncryptionStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::store::*;

impl EncryptionStore for PgStore {
    fn set_encryption_key(
        &self,
        device_id: &str,
        key: Option<&EncryptionKey>,
        now: u64,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            if tx
                .query_opt("SELECT 1 FROM devices WHERE id = $1", &[&device_id])?
                .is_none()
            {
                return Err(StoreError::NotFound {
                    what: "device",
                    id: device_id.to_owned(),
                });
            }
            match key {
                Some(k) => {
                    if let Some(row) = tx.query_opt(
                        "SELECT device_id FROM device_encryption_keys \
                         WHERE recipient = $1 AND device_id <> $2",
                        &[&k.recipient, &device_id],
                    )? {
                        let other: String = row.try_get(0)?;
                        return Err(StoreError::Conflict(format!(
                            "device {other} is already enrolled with that encryption key"
                        )));
                    }
                    tx.execute(
                        "INSERT INTO device_encryption_keys (device_id, public_key, recipient, set_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE SET \
                         public_key = excluded.public_key, recipient = excluded.recipient, \
                         set_at = excluded.set_at",
                        &[&device_id, &k.public_key, &k.recipient, &to_sql(now)],
                    )?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM device_encryption_keys WHERE device_id = $1",
                        &[&device_id],
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
        let mut c = self.conn()?;
        c.query_opt(
            "SELECT public_key, recipient FROM device_encryption_keys WHERE device_id = $1",
            &[&device_id],
        )?
        .map(|r| {
            Ok(EncryptionKey {
                public_key: r.try_get(0)?,
                recipient: r.try_get(1)?,
            })
        })
        .transpose()
    }

    fn recipient_device(&self, recipient: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn()?;
        c.query_opt(
            "SELECT device_id FROM device_encryption_keys WHERE recipient = $1",
            &[&recipient],
        )?
        .map(|r| Ok(r.try_get(0)?))
        .transpose()
    }

    fn mark_encrypted(&self, release_id: &str, manifest_digest: &str) -> StoreResult<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO encrypted_releases (release_id, manifest_digest) VALUES ($1, $2) \
                 ON CONFLICT (release_id) DO NOTHING",
                &[&release_id, &manifest_digest],
            )?;
            Ok(())
        })
    }

    fn encrypted_release(&self, release_id: &str) -> StoreResult<Option<String>> {
        let mut c = self.conn()?;
        c.query_opt(
            "SELECT manifest_digest FROM encrypted_releases WHERE release_id = $1",
            &[&release_id],
        )?
        .map(|r| Ok(r.try_get(0)?))
        .transpose()
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
                     VALUES ($1, $2, $3, $4) ON CONFLICT (release_id, recipient) DO UPDATE SET \
                     record = excluded.record, uploaded_at = excluded.uploaded_at",
                    &[&release_id, recipient, record, &to_sql(now)],
                )?;
            }
            append(tx, audit, now)?;
            Ok(())
        })
    }

    fn key_record(&self, release_id: &str, device_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut c = self.conn()?;
        c.query_opt(
            "SELECT k.record FROM key_records k JOIN device_encryption_keys d \
             ON d.recipient = k.recipient WHERE k.release_id = $1 AND d.device_id = $2",
            &[&release_id, &device_id],
        )?
        .map(|r| Ok(r.try_get(0)?))
        .transpose()
    }

    fn withheld(
        &self,
        deployment_id: i64,
        admitted: usize,
        page: Page,
    ) -> StoreResult<(u64, Vec<WithheldMember>)> {
        let mut c = self.conn()?;
        let admitted = i64::try_from(admitted).unwrap_or(i64::MAX);
        let from = encryption::withheld_from_where("$1", "$2");
        // One snapshot for the count and the page.
        let mut tx = c
            .build_transaction()
            .read_only(true)
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .start()?;
        let count: i64 = tx
            .query_one(
                &format!("SELECT COUNT(*) {from}"),
                &[&deployment_id, &admitted],
            )?
            .try_get(0)?;
        let rows = tx.query(
            &format!(
                "SELECT m.device_id, m.rank, m.status, dk.device_id IS NULL {from} \
                 ORDER BY m.rank LIMIT $3 OFFSET $4"
            ),
            &[
                &deployment_id,
                &admitted,
                &i64::from(page.limit),
                &to_sql(page.offset),
            ],
        )?;
        let mut members = Vec::with_capacity(rows.len());
        for r in rows {
            let status: String = r.try_get(2)?;
            let no_key: bool = r.try_get(3)?;
            members.push(WithheldMember {
                device_id: r.try_get(0)?,
                rank: usize::try_from(r.try_get::<_, i64>(1)?).unwrap_or(usize::MAX),
                status: parse_status(&status)?,
                reason: WithheldReason::of(no_key),
            });
        }
        tx.commit()?;
        Ok((from_sql(count), members))
    }
}
