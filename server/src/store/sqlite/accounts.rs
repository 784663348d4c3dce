//! [`crate::store::AccountStore`] on SQLite.

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{append, from_sql, to_sql};
use super::SqliteStore;
use crate::store::accounts::*;
use crate::store::passkeys::{counter_did_not_advance, SecondFactorUse};
use crate::store::{AuditEvent, StoreError, StoreResult};

const USER_COLUMNS: &str = "name, kind, roles, state, created_at, passphrase_hash, totp_secret, \
                            totp_last_step, failed_logins, locked_until, scope";

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        roles: r.get(2)?,
        state: r.get(3)?,
        created_at: r.get(4)?,
        passphrase_hash: r.get(5)?,
        totp_secret: r.get(6)?,
        totp_last_step: r.get(7)?,
        failed_logins: r.get(8)?,
        locked_until: r.get(9)?,
        scope: r.get(10)?,
    })
}

/// An `users` row as read.
struct AccountRow {
    name: String,
    kind: String,
    roles: String,
    state: String,
    created_at: i64,
    passphrase_hash: Option<String>,
    totp_secret: Option<Vec<u8>>,
    totp_last_step: Option<i64>,
    failed_logins: i64,
    locked_until: Option<i64>,
    scope: Option<String>,
}

impl AccountRow {
    fn finish(self) -> StoreResult<Account> {
        let bad = |what: &str, v: &str| StoreError::Backend(format!("stored {what} {v:?}"));
        Ok(Account {
            user: User {
                kind: AccountKind::parse(&self.kind).ok_or_else(|| bad("kind", &self.kind))?,
                roles: roles_from_text(&self.roles)?,
                state: AccountState::parse(&self.state).ok_or_else(|| bad("state", &self.state))?,
                created_at: from_sql(self.created_at),
                name: self.name,
                scope: self
                    .scope
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()?,
            },
            credentials: Credentials {
                passphrase_hash: self.passphrase_hash,
                totp_secret: self.totp_secret,
                totp_last_step: self.totp_last_step.map(from_sql),
                failed_logins: u32::try_from(self.failed_logins).unwrap_or(u32::MAX),
                locked_until: self.locked_until.map(from_sql),
            },
        })
    }
}

/// One account (inside a transaction or on a reader).
pub(super) fn load_account(conn: &Connection, name: &str) -> StoreResult<Option<Account>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))?
        .query_row([name], account_row)
        .optional()?
        .map(AccountRow::finish)
        .transpose()
}

/// One account without its credentials.
pub(super) fn load_user(conn: &Connection, name: &str) -> StoreResult<Option<User>> {
    Ok(load_account(conn, name)?.map(|a| a.user))
}

/// Writes an account's listed fields (kind, roles, state), creating it if missing.
pub(super) fn upsert_user(conn: &Connection, u: &User) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO users (name, kind, roles, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (name) DO UPDATE SET kind = ?2, roles = ?3, state = ?4",
    )?
    .execute(params![
        u.name,
        u.kind.as_str(),
        roles_to_text(&u.roles),
        u.state.as_str(),
        to_sql(u.created_at)
    ])?;
    Ok(())
}

/// Marks TOTP `step` used by `name`: Conflict if it, or a later one, was used already.
fn spend_step(tx: &Connection, name: &str, step: u64) -> StoreResult<()> {
    let n = tx.execute(
        "UPDATE users SET totp_last_step = ?2 \
         WHERE name = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
        params![name, to_sql(step)],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(
            "this code was used already; wait for the next one".to_owned(),
        ));
    }
    Ok(())
}

/// Spends the second factor of a login or re-authentication.
fn spend_factor(
    tx: &Connection,
    name: &str,
    factor: &SecondFactorUse,
    now: u64,
) -> StoreResult<()> {
    match factor {
        SecondFactorUse::Totp(step) => spend_step(tx, name, *step),
        SecondFactorUse::Passkey {
            id,
            dynamic_state,
            sign_count,
        } => {
            let n = tx.execute(
                "UPDATE passkeys SET dynamic_state = ?3, sign_count = ?4, last_used_at = ?5 \
                 WHERE id = ?1 AND user_name = ?2 AND (sign_count < ?4 OR (sign_count = 0 AND ?4 = 0))",
                params![&id[..], name, &dynamic_state[..], i64::from(*sign_count), to_sql(now)],
            )?;
            if n == 0 {
                return Err(counter_did_not_advance());
            }
            Ok(())
        }
    }
}

fn session_user(tx: &Connection, hash: &[u8; 32]) -> StoreResult<String> {
    tx.query_row(
        "SELECT user_name FROM sessions WHERE hash = ?1",
        [&hash[..]],
        |r| r.get(0),
    )
    .optional()?
    .ok_or(StoreError::NotFound {
        what: "session",
        id: "(cookie)".to_owned(),
    })
}

impl AccountStore for SqliteStore {
    fn set_user_scope(
        &self,
        name: &str,
        scope: Option<&Scope>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let text = scope.map(serde_json::to_string).transpose()?;
        self.with_tx(|tx| {
            let n = tx.execute(
                "UPDATE users SET scope = ?2 WHERE name = ?1",
                params![name, text],
            )?;
            if n == 0 {
                return Err(no_account(name));
            }
            append(tx, audit, crate::store::now_secs())?;
            Ok(())
        })
    }

    fn create_user(
        &self,
        user: &User,
        enrolment: Option<(&[u8; 32], u64)>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            if load_user(tx, &user.name)?.is_some() {
                return Err(account_exists(&user.name));
            }
            upsert_user(tx, user)?;
            if let Some((hash, expires_at)) = enrolment {
                tx.execute(
                    "INSERT INTO enrolments (hash, user_name, expires_at) VALUES (?1, ?2, ?3)",
                    params![&hash[..], user.name, to_sql(expires_at)],
                )?;
            }
            append(tx, audit, user.created_at)?;
            Ok(())
        })
    }

    fn users(&self) -> StoreResult<Vec<User>> {
        let conn = self.reader()?;
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
        let rows = stmt.query_map([], account_row)?;
        rows.map(|r| Ok(r?.finish()?.user)).collect()
    }

    fn account(&self, name: &str) -> StoreResult<Option<Account>> {
        load_account(&*self.reader()?, name)
    }

    fn reissue_enrolment(
        &self,
        name: &str,
        hash: &[u8; 32],
        expires_at: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            let user = load_user(tx, name)?.ok_or_else(|| no_account(name))?;
            check_enrols(&user)?;
            tx.execute("DELETE FROM enrolments WHERE user_name = ?1", [name])?;
            tx.execute("DELETE FROM sessions WHERE user_name = ?1", [name])?;
            tx.execute(
                "DELETE FROM webauthn_ceremonies WHERE user_name = ?1",
                [name],
            )?;
            tx.execute("DELETE FROM passkeys WHERE user_name = ?1", [name])?;
            tx.execute(
                "UPDATE users SET state = 'enrolling', passphrase_hash = NULL, totp_secret = NULL, \
                 failed_logins = 0, locked_until = NULL WHERE name = ?1",
                [name],
            )?;
            tx.execute(
                "INSERT INTO enrolments (hash, user_name, expires_at) VALUES (?1, ?2, ?3)",
                params![&hash[..], name, to_sql(expires_at)],
            )?;
            append(tx, audit, crate::store::now_secs())?;
            Ok(())
        })
    }

    fn enrolment(&self, hash: &[u8; 32], now: u64) -> StoreResult<Option<Enrolment>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(
                "SELECT user_name, started, expires_at FROM enrolments \
                 WHERE hash = ?1 AND expires_at > ?2",
            )?
            .query_row(params![&hash[..], to_sql(now)], |r| {
                Ok(Enrolment {
                    user_name: r.get(0)?,
                    started: r.get::<_, i64>(1)? != 0,
                    expires_at: from_sql(r.get(2)?),
                })
            })
            .optional()?;
        Ok(row)
    }

    fn start_enrolment(
        &self,
        hash: &[u8; 32],
        passphrase_hash: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            let user: Option<String> = tx
                .query_row(
                    "UPDATE enrolments SET started = 1 \
                     WHERE hash = ?1 AND expires_at > ?2 AND started = 0 RETURNING user_name",
                    params![&hash[..], to_sql(now)],
                    |r| r.get(0),
                )
                .optional()?;
            let user = user.ok_or_else(|| {
                StoreError::Conflict(
                    "this enrolment code is unknown, expired or already used".to_owned(),
                )
            })?;
            tx.execute(
                "UPDATE users SET passphrase_hash = ?2, totp_secret = ?3 WHERE name = ?1",
                params![user, passphrase_hash, totp_secret],
            )?;
            Ok(())
        })
    }

    fn finish_enrolment(
        &self,
        hash: &[u8; 32],
        step: u64,
        now: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            let user: Option<String> = tx
                .query_row(
                    "DELETE FROM enrolments WHERE hash = ?1 AND expires_at > ?2 AND started = 1 \
                     RETURNING user_name",
                    params![&hash[..], to_sql(now)],
                    |r| r.get(0),
                )
                .optional()?;
            let user = user.ok_or_else(|| {
                StoreError::Conflict(
                    "this enrolment code is unknown, expired, used, or its passphrase is not set"
                        .to_owned(),
                )
            })?;
            spend_step(tx, &user, step)?;
            tx.execute("UPDATE users SET state = 'active' WHERE name = ?1", [&user])?;
            append(tx, audit, now)?;
            Ok(())
        })
    }

    fn record_login_failure(
        &self,
        name: &str,
        reason: &str,
        now: u64,
        policy: &LockoutPolicy,
    ) -> StoreResult<FailureOutcome> {
        self.with_tx(|tx| {
            let failures: i64 = tx.query_row(
                "UPDATE users SET failed_logins = failed_logins + 1 WHERE name = ?1 \
                 RETURNING failed_logins",
                [name],
                |r| r.get(0),
            )?;
            let outcome = after_failure(u32::try_from(failures).unwrap_or(u32::MAX), now, policy);
            tx.execute(
                "UPDATE users SET locked_until = ?2 WHERE name = ?1",
                params![name, to_sql(outcome.locked_until)],
            )?;
            for event in failure_events(name, reason, &outcome) {
                append(tx, &event, now)?;
            }
            Ok(outcome)
        })
    }

    fn open_session(
        &self,
        hash: &[u8; 32],
        session: &Session,
        factor: &SecondFactorUse,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            spend_factor(tx, &session.user_name, factor, session.created_at)?;
            tx.execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE name = ?1",
                [&session.user_name],
            )?;
            tx.execute(
                "INSERT INTO sessions (hash, user_name, csrf_token, created_at, last_seen, reauth_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &hash[..],
                    session.user_name,
                    session.csrf_token,
                    to_sql(session.created_at),
                    to_sql(session.last_seen),
                    to_sql(session.reauth_at)
                ],
            )?;
            append(tx, audit, session.created_at)?;
            Ok(())
        })
    }

    fn session(&self, hash: &[u8; 32]) -> StoreResult<Option<Session>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(
                "SELECT user_name, csrf_token, created_at, last_seen, reauth_at FROM sessions \
                 WHERE hash = ?1",
            )?
            .query_row([&hash[..]], |r| {
                Ok(Session {
                    user_name: r.get(0)?,
                    csrf_token: r.get(1)?,
                    created_at: from_sql(r.get(2)?),
                    last_seen: from_sql(r.get(3)?),
                    reauth_at: from_sql(r.get(4)?),
                })
            })
            .optional()?;
        Ok(row)
    }

    fn touch_session(&self, hash: &[u8; 32], now: u64) -> StoreResult<()> {
        // A lost last-request time costs nothing after a power loss: no fsync of its own.
        self.with_relaxed_tx(|tx| {
            tx.execute(
                "UPDATE sessions SET last_seen = ?2 WHERE hash = ?1 AND last_seen < ?2",
                params![&hash[..], to_sql(now)],
            )?;
            Ok(())
        })
    }

    fn reauthenticate(
        &self,
        hash: &[u8; 32],
        factor: &SecondFactorUse,
        now: u64,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            let user = session_user(tx, hash)?;
            spend_factor(tx, &user, factor, now)?;
            tx.execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE name = ?1",
                [&user],
            )?;
            tx.execute(
                "UPDATE sessions SET reauth_at = ?2, last_seen = ?2 WHERE hash = ?1",
                params![&hash[..], to_sql(now)],
            )?;
            append(tx, audit, now)?;
            Ok(())
        })
    }

    fn close_session(&self, hash: &[u8; 32], audit: &AuditEvent) -> StoreResult<bool> {
        self.with_tx(|tx| {
            let n = tx.execute("DELETE FROM sessions WHERE hash = ?1", [&hash[..]])?;
            if n > 0 {
                append(tx, audit, crate::store::now_secs())?;
            }
            Ok(n > 0)
        })
    }

    fn sweep_sessions(
        &self,
        idle_before: u64,
        absolute_before: u64,
        limit: u32,
    ) -> StoreResult<u64> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM sessions WHERE hash IN (SELECT hash FROM sessions \
                 WHERE last_seen < ?1 OR created_at < ?2 LIMIT ?3)",
                params![to_sql(idle_before), to_sql(absolute_before), limit],
            )?;
            Ok(n as u64)
        })
    }

    fn set_user_state(
        &self,
        name: &str,
        state: AccountState,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            let mut user = load_user(tx, name)?.ok_or_else(|| no_account(name))?;
            if user.state == AccountState::Enrolling && state == AccountState::Active {
                return Err(StoreError::Conflict(format!(
                    "{name} has not finished enrolment"
                )));
            }
            user.state = state;
            upsert_user(tx, &user)?;
            if state == AccountState::Disabled {
                tx.execute("DELETE FROM sessions WHERE user_name = ?1", [name])?;
                tx.execute("DELETE FROM enrolments WHERE user_name = ?1", [name])?;
                tx.execute(
                    "DELETE FROM webauthn_ceremonies WHERE user_name = ?1",
                    [name],
                )?;
            }
            append(tx, audit, crate::store::now_secs())?;
            Ok(())
        })
    }
}
