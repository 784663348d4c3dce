//! [`crate::store::TokenStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

use crate::store::accounts;
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
            owner,
        } = *grant;
        self.with_tx(|tx| {
            // An API token's owner: the named account, else a service account of its name.
            let owner = match device_id {
                Some(_) => None,
                None => {
                    let owner = owner.unwrap_or(name);
                    let existing = super::accounts::load_user(tx, owner)?;
                    if let Some(u) = accounts::token_owner(existing.as_ref(), owner, role, now)? {
                        super::accounts::upsert_user(tx, &u)?;
                    }
                    Some(owner)
                }
            };
            if let Some(expires_at) = expires_at {
                // Session tokens expire; sweep the expired ones as new ones are issued.
                tx.prepare_cached(
                    "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                )?
                .execute([to_sql(now.min(expires_at))])?;
            }
            tx.prepare_cached(
                "INSERT INTO tokens (hash, name, role, device_id, created_at, expires_at, owner) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &hash[..],
                name,
                role.as_str(),
                device_id,
                to_sql(now),
                expires_at.map(to_sql),
                owner
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
                "SELECT t.role, COALESCE(t.owner, t.name), t.device_id, u.roles FROM tokens t \
                 LEFT JOIN devices d ON d.id = t.device_id \
                 LEFT JOIN users u ON u.name = t.owner \
                 WHERE t.hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2) \
                 AND (t.device_id IS NULL OR d.revoked = 0) \
                 AND (t.owner IS NULL OR u.state = 'active')",
            )?
            .query_row(params![&hash[..], to_sql(now)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        Ok(row.and_then(|(role, name, device_id, roles)| {
            let role = Role::parse(&role)?;
            accounts::owner_holds(roles.as_deref(), role).then_some(Principal {
                role,
                name,
                device_id,
            })
        }))
    }

    fn tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, role, created_at, COALESCE(owner, name), expires_at FROM tokens \
             WHERE device_id IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, created_at, owner, expires_at) = row?;
            if let Some(role) = Role::parse(&role) {
                out.push(TokenInfo {
                    id,
                    name,
                    role,
                    created_at: from_sql(created_at),
                    owner,
                    expires_at: expires_at.map(from_sql),
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
