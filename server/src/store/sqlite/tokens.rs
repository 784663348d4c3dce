//! [`crate::store::TokenStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

use crate::store::*;

impl TokenStore for SqliteStore {
    fn has_admin_token(&self) -> StoreResult<bool> {
        let conn = self.reader()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM tokens WHERE role = 'admin'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn create_token(
        &self,
        grant: &TokenGrant<'_>,
        now: u64,
        audit: Option<&AuditEvent>,
    ) -> StoreResult<i64> {
        let TokenGrant {
            hash,
            name,
            role,
            device_id,
            expires_at,
        } = *grant;
        self.with_tx(|tx| {
            if let Some(expires_at) = expires_at {
                // Session tokens expire; sweep the expired ones as new ones are issued.
                tx.prepare_cached(
                    "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                )?
                .execute([to_sql(now.min(expires_at))])?;
            }
            tx.prepare_cached(
                "INSERT INTO tokens (hash, name, role, device_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &hash[..],
                name,
                role.as_str(),
                device_id,
                to_sql(now),
                expires_at.map(to_sql)
            ])?;
            let id = tx.last_insert_rowid();
            if let Some(event) = audit {
                append(tx, event, now)?;
            }
            Ok(id)
        })
    }

    fn principal(&self, hash: &[u8; 32], now: u64) -> StoreResult<Option<Principal>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(
                "SELECT t.role, t.name, t.device_id FROM tokens t \
                 LEFT JOIN devices d ON d.id = t.device_id \
                 WHERE t.hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2) \
                 AND (t.device_id IS NULL OR d.revoked = 0)",
            )?
            .query_row(params![&hash[..], to_sql(now)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()?;
        Ok(row.and_then(|(role, name, device_id)| {
            Role::parse(&role).map(|role| Principal {
                role,
                name,
                device_id,
            })
        }))
    }

    fn tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, role, created_at FROM tokens WHERE device_id IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created_at) = row?;
            if let Some(role) = Role::parse(&role) {
                out.push(TokenInfo {
                    id,
                    name,
                    role,
                    created_at: from_sql(created_at),
                });
            }
        }
        Ok(out)
    }

    fn revoke_token(&self, id: i64, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM tokens WHERE id = ?1 AND device_id IS NULL",
                [id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "token",
                    id: id.to_string(),
                });
            }
            append(tx, audit, now_secs())?;
            Ok(())
        })
    }
}
