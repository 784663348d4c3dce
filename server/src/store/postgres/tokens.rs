//! [`crate::store::TokenStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::store::accounts;
use crate::store::*;

impl TokenStore for PgStore {
    fn has_admin_token(&self) -> StoreResult<bool> {
        let mut c = self.conn()?;
        let r = c.query_one(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin')",
            &[],
        )?;
        Ok(r.try_get(0)?)
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
                    let existing = super::accounts::load_user(tx, owner, true)?;
                    if let Some(u) = accounts::token_owner(existing.as_ref(), owner, role, now)? {
                        super::accounts::upsert_user(tx, &u)?;
                    }
                    Some(owner)
                }
            };
            if let Some(expires_at) = expires_at {
                // Session tokens expire; sweep the expired ones as new ones are issued.
                tx.execute(
                    "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
                    &[&to_sql(now.min(expires_at))],
                )?;
            }
            let row = tx.query_one(
                "INSERT INTO tokens (hash, name, role, device_id, created_at, expires_at, owner) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &&hash[..],
                    &name,
                    &role.as_str(),
                    &device_id,
                    &to_sql(now),
                    &expires_at.map(to_sql),
                    &owner,
                ],
            )?;
            let id: i64 = row.try_get(0)?;
            if let Some(event) = audit {
                append(tx, event, now)?;
            }
            Ok(id)
        })
    }

    fn principal(&self, hash: &[u8; 32], now: u64) -> StoreResult<Option<Principal>> {
        Ok(self.principals(&[*hash], now)?.pop().flatten())
    }

    fn principals(&self, hashes: &[[u8; 32]], now: u64) -> StoreResult<Vec<Option<Principal>>> {
        // Every authenticated request runs this (grouped with the lookups of the requests
        // that arrived meanwhile): prepared once per connection. Each hash is looked up on its
        // own in the unique index (the lateral subquery with its LIMIT is not flattened into
        // a join): a join of the unnested hashes with the tables was planned, for the 10
        // hashes a generic plan assumes, as a scan of all tokens and all devices, which on a
        // few thousand rows cost more than the rest of a check-in.
        let list: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
        let rows = self.query_cached(
            "SELECT i.n, t.role, t.name, t.device_id, t.roles \
             FROM unnest($1::BYTEA[]) WITH ORDINALITY AS i (hash, n) \
             CROSS JOIN LATERAL (SELECT t.role, COALESCE(t.owner, t.name) AS name, \
                 t.device_id, u.roles FROM tokens t \
                 LEFT JOIN devices d ON d.id = t.device_id \
                 LEFT JOIN users u ON u.name = t.owner \
                 WHERE t.hash = i.hash \
                 AND (t.expires_at IS NULL OR t.expires_at > $2) \
                 AND (t.device_id IS NULL OR NOT d.revoked) \
                 AND (t.owner IS NULL OR u.state = 'active') LIMIT 1) t",
            &[
                (&list, ::postgres::types::Type::BYTEA_ARRAY),
                (&to_sql(now), ::postgres::types::Type::INT8),
            ],
        )?;
        let mut out: Vec<Option<Principal>> = hashes.iter().map(|_| None).collect();
        for row in rows {
            // WITH ORDINALITY counts from 1.
            let n: i64 = row.try_get(0)?;
            let Some(slot) = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| out.get_mut(i))
            else {
                return Err(StoreError::Backend(format!("token lookup: no hash {n}")));
            };
            let role: String = row.try_get(1)?;
            let roles: Option<String> = row.try_get(4)?;
            let Some(role) = Role::parse(&role) else {
                continue;
            };
            if !accounts::owner_holds(roles.as_deref(), role) {
                continue;
            }
            *slot = Some(Principal {
                role,
                name: row.try_get(2)?,
                device_id: row.try_get(3)?,
            });
        }
        Ok(out)
    }

    fn tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let mut c = self.conn()?;
        let rows = c.query(
            "SELECT id, name, role, created_at, COALESCE(owner, name), expires_at FROM tokens \
             WHERE device_id IS NULL ORDER BY id",
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let role: String = r.try_get(2)?;
            if let Some(role) = Role::parse(&role) {
                out.push(TokenInfo {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    role,
                    created_at: from_sql(r.try_get(3)?),
                    owner: r.try_get(4)?,
                    expires_at: r.try_get::<_, Option<i64>>(5)?.map(from_sql),
                });
            }
        }
        Ok(out)
    }

    fn revoke_token(&self, id: i64, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM tokens WHERE id = $1 AND device_id IS NULL",
                &[&id],
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
