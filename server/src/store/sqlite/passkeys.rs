//! [`crate::store::PasskeyStore`] on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{append, from_sql, to_sql};
use super::SqliteStore;
use crate::store::accounts::no_account;
use crate::store::passkeys::*;
use crate::store::{AuditEvent, StoreError, StoreResult};

const PASSKEY_COLUMNS: &str =
    "id, user_name, name, transports, static_state, dynamic_state, sign_count, created_at, \
     last_used_at";

fn passkey_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Passkey> {
    Ok(Passkey {
        id: r.get(0)?,
        user_name: r.get(1)?,
        name: r.get(2)?,
        transports: u8::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        static_state: r.get(4)?,
        dynamic_state: r.get(5)?,
        sign_count: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
        created_at: from_sql(r.get(7)?),
        last_used_at: r.get::<_, Option<i64>>(8)?.map(from_sql),
    })
}

fn user_passkeys(conn: &Connection, name: &str) -> StoreResult<Vec<Passkey>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_name = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([name], passkey_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether `name` has a TOTP secret; NotFound if there is no such account.
fn has_totp(tx: &Connection, name: &str) -> StoreResult<bool> {
    tx.query_row(
        "SELECT totp_secret IS NOT NULL FROM users WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| no_account(name))
}

impl PasskeyStore for SqliteStore {
    fn passkey_handle(&self, name: &str, fresh: &[u8; 16]) -> StoreResult<Vec<u8>> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE users SET webauthn_handle = ?2 WHERE name = ?1 AND webauthn_handle IS NULL",
                params![name, &fresh[..]],
            )?;
            tx.query_row(
                "SELECT webauthn_handle FROM users WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| no_account(name))
        })
    }

    fn passkeys(&self, name: &str) -> StoreResult<Vec<Passkey>> {
        user_passkeys(&*self.reader()?, name)
    }

    fn passkey(&self, id: &[u8]) -> StoreResult<Option<Passkey>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE id = ?1"
            ))?
            .query_row([id], passkey_row)
            .optional()?;
        Ok(row)
    }

    fn save_ceremony(&self, c: &Ceremony, now: u64) -> StoreResult<()> {
        self.with_tx(|tx| {
            tx.execute(
                "DELETE FROM webauthn_ceremonies WHERE expires_at <= ?1",
                [to_sql(now)],
            )?;
            tx.execute(
                "INSERT INTO webauthn_ceremonies \
                 (challenge, user_name, purpose, session_hash, state, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &c.challenge[..],
                    c.user_name,
                    c.purpose.as_str(),
                    c.session_hash.as_ref().map(|h| &h[..]),
                    &c.state[..],
                    to_sql(c.expires_at)
                ],
            )?;
            Ok(())
        })
    }

    fn take_ceremony(&self, challenge: &[u8], now: u64) -> StoreResult<Option<Ceremony>> {
        self.with_tx(|tx| {
            let row = tx
                .query_row(
                    "DELETE FROM webauthn_ceremonies WHERE challenge = ?1 \
                     RETURNING user_name, purpose, session_hash, state, expires_at",
                    [challenge],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<Vec<u8>>>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            from_sql(r.get(4)?),
                        ))
                    },
                )
                .optional()?;
            let Some((user_name, purpose, session_hash, state, expires_at)) = row else {
                return Ok(None);
            };
            if expires_at <= now {
                return Ok(None);
            }
            let bad = || StoreError::Backend(format!("stored ceremony purpose {purpose:?}"));
            Ok(Some(Ceremony {
                challenge: challenge.to_vec(),
                user_name,
                purpose: CeremonyPurpose::parse(&purpose).ok_or_else(bad)?,
                session_hash: session_hash
                    .map(|h| <[u8; 32]>::try_from(h.as_slice()))
                    .transpose()
                    .map_err(|_| StoreError::Backend("stored session hash".to_owned()))?,
                state,
                expires_at,
            }))
        })
    }

    fn add_passkey(&self, p: &Passkey, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "INSERT INTO passkeys (id, user_name, name, transports, static_state, dynamic_state, \
                 sign_count, created_at, last_used_at) VALUES (?1, ?2, ?3, ?9, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO NOTHING",
                params![
                    &p.id[..],
                    p.user_name,
                    p.name,
                    &p.static_state[..],
                    &p.dynamic_state[..],
                    i64::from(p.sign_count),
                    to_sql(p.created_at),
                    p.last_used_at.map(to_sql),
                    i64::from(p.transports)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(
                    "this passkey is registered already".to_owned(),
                ));
            }
            append(tx, audit, p.created_at)?;
            Ok(())
        })
    }

    fn remove_passkey(&self, name: &str, id: &[u8], audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let totp = has_totp(tx, name)?;
            let others = user_passkeys(tx, name)?
                .iter()
                .filter(|p| p.id != id)
                .count();
            check_factor_remains(name, totp, others)?;
            let n = tx.execute(
                "DELETE FROM passkeys WHERE id = ?1 AND user_name = ?2",
                params![id, name],
            )?;
            if n == 0 {
                return Err(no_passkey(id));
            }
            append(tx, audit, crate::store::now_secs())?;
            Ok(())
        })
    }

    fn remove_totp(&self, name: &str, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            if !has_totp(tx, name)? {
                return Err(no_totp(name));
            }
            check_factor_remains(name, false, user_passkeys(tx, name)?.len())?;
            tx.execute(
                "UPDATE users SET totp_secret = NULL WHERE name = ?1",
                [name],
            )?;
            append(tx, audit, crate::store::now_secs())?;
            Ok(())
        })
    }
}
