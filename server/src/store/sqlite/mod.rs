//! The SQLite backend: the zero-set-up default, one file in the data directory.
//!
//! The schema lives in `schema/*.sql`, one file per migration, applied in order at start-up;
//! `PRAGMA user_version` records how many ran. Each aggregate's trait is implemented in its own
//! module; the rows and the SQL they share are in `rows`.

mod accounts;
mod approvals;
mod audit;
mod checkins;
mod deployments;
mod devices;
mod encryption;
mod passkeys;
mod records;
mod releases;
mod roots;
mod rows;
mod tokens;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{StoreError, StoreResult};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran. Never edit
/// one that has shipped: add the next file.
const MIGRATIONS: &[&str] = &[
    include_str!("schema/0001_initial.sql"),
    include_str!("schema/0002_audit_checkpoints.sql"),
    include_str!("schema/0003_root_chain.sql"),
    include_str!("schema/0004_accounts.sql"),
    include_str!("schema/0005_account_scopes.sql"),
    include_str!("schema/0006_reports_by_age.sql"),
    include_str!("schema/0007_device_encryption_keys.sql"),
    include_str!("schema/0008_passkeys.sql"),
    include_str!("schema/0009_report_seq.sql"),
];

/// SQLite keeps no bundle bytes: the bundle store beside the database is the only copy.
impl super::BundleBytes for SqliteStore {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error() {
            Some(code) => StoreError::Backend(format!("{e} (SQLite code {})", code.extended_code)),
            None => StoreError::Backend(e.to_string()),
        }
    }
}

/// A schema object: `(type, name, table, SQL)`.
type SchemaObject = (String, String, String, Option<String>);

/// The schema objects of a database, SQLite's own excepted.
fn schema_objects(conn: &Connection) -> StoreResult<Vec<SchemaObject>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQLite backend in WAL mode: one writer connection and `READERS` (4) read-only connections
/// (WAL lets readers run beside the writer), each serialised by a mutex.
///
/// Writes are `synchronous = FULL`: an acknowledged upload, enrolment, deployment change or audit
/// entry survives power loss. Device check-ins commit with `synchronous = NORMAL` (durable
/// against a server crash, fsynced at the next full commit or checkpoint): after a power loss the
/// last moments of device reports may be missing, together with their audit entries, and every
/// device re-reports its state at its next check-in. This keeps one fsync off each check-in.
/// [`crate::store::CheckInStore::check_in_batch`] commits many check-ins in one transaction (the API queues them, see
/// `api::checkin_queue`), each inside its own savepoint; the durability is the same, since a
/// check-in is answered only after the commit that holds it.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    checkpointer: Option<Checkpointer>,
}

/// Checkpoints the WAL from its own connection and thread, so that copying the log into the
/// database (and its fsync) never happens inside a request's commit. The writer keeps a large
/// automatic checkpoint as a backstop should this thread stop.
#[derive(Debug)]
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Read-only connections of a file database. Token lookups (every request) and listings go
/// through them; with one, a lookup that had to wait for the disk held up every request behind
/// it.
const READERS: usize = 4;

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
const BACKSTOP_CHECKPOINT_PAGES: i64 = 20_000;

impl Checkpointer {
    fn start(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // PASSIVE: copies what it can without waiting for, or blocking, the writer.
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut store = Self::init(Connection::open(path)?)?;
        for _ in 0..READERS {
            let reader =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            store.readers.push(Mutex::new(reader));
        }
        store
            .conn()?
            .pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)?;
        store.checkpointer = Some(Checkpointer::start(path)?);
        Ok(store)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let done = usize::try_from(version).unwrap_or(0);
        if done > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {done} is newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i.saturating_add(1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            checkpointer: None,
        })
    }

    /// A read-only connection (the writer for an in-memory database).
    fn reader(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        let poisoned = || StoreError::Backend("database lock poisoned".to_owned());
        let n = self.readers.len();
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A free connection if there is one, so that a read waiting on the disk does not hold
        // up the others; else wait for one.
        for i in 0..n {
            if let Some(r) = self.readers.get(start.wrapping_add(i) % n) {
                match r.try_lock() {
                    Ok(guard) => return Ok(guard),
                    Err(std::sync::TryLockError::WouldBlock) => {}
                    Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
                }
            }
        }
        match self.readers.get(start % n.max(1)) {
            Some(r) => r.lock().map_err(|_| poisoned()),
            None => self.conn(),
        }
    }

    /// A transaction committed with `synchronous = NORMAL` (see the type's documentation).
    fn with_relaxed_tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn()?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        conn.pragma_update(None, "synchronous", "FULL")?;
        out
    }

    fn conn(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("database lock poisoned".to_owned()))
    }

    /// A write transaction. `IMMEDIATE` takes the write lock at `BEGIN`, where the busy timeout
    /// applies, instead of upgrading a read snapshot later, which can fail at once.
    fn with_tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn all_devices(&self) -> StoreResult<Vec<crate::store::Device>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM devices ORDER BY id",
            rows::DEVICE_COLUMNS
        ))?;
        let found = stmt.query_map([], rows::device_row)?;
        found.map(|r| rows::finish_device(r?)).collect()
    }

    /// How the schema differs from the one this server's migrations create: a dropped or
    /// altered trigger, a renamed or recreated table, anything added. Empty when intact.
    ///
    /// This catches a database edited with the guard triggers out of the way and left so; a
    /// careful editor can restore the schema, which the hash chain and the signed checkpoints
    /// then catch (`audit_key::check_at_start`).
    pub fn schema_differences(&self) -> StoreResult<Vec<String>> {
        let expected = {
            let conn = Connection::open_in_memory()?;
            for sql in MIGRATIONS {
                conn.execute_batch(sql)?;
            }
            schema_objects(&conn)?
        };
        let actual = schema_objects(&*self.conn()?)?;
        let mut out = Vec::new();
        for e in &expected {
            match actual.iter().find(|a| a.0 == e.0 && a.1 == e.1) {
                None => out.push(format!("{} {} is missing", e.0, e.1)),
                Some(a) if a.2 != e.2 => out.push(format!(
                    "{} {} was moved to table {} (was {} renamed?)",
                    e.0, e.1, a.2, e.2
                )),
                Some(a) if a != e => out.push(format!("{} {} was altered", e.0, e.1)),
                Some(_) => {}
            }
        }
        for a in &actual {
            if !expected.iter().any(|e| e.0 == a.0 && e.1 == a.1) {
                out.push(format!("unexpected {} {} (on table {})", a.0, a.1, a.2));
            }
        }
        Ok(out)
    }

    /// Direct access for tests that tamper with the database.
    #[doc(hidden)]
    pub fn dangerous_raw_connection(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify_entries;
    use crate::store::{
        AuditAction, AuditEvent, AuditStore, Device, DeviceStore, Role, TokenGrant, TokenStore,
    };

    fn event(n: u32) -> AuditEvent {
        AuditEvent::new(
            "ops",
            AuditAction::TokenCreate,
            &n.to_string(),
            serde_json::json!({ "n": n }),
        )
    }

    #[test]
    fn migrations_are_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.append_audit(&event(1), 1).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.audit_entries(0, u32::MAX).unwrap().len(), 1);
    }

    #[test]
    fn session_tokens_expire_and_api_tokens_do_not() {
        let s = SqliteStore::in_memory().unwrap();
        let device = Device::example("pump-1");
        s.enrol_device(&device, &event(1)).unwrap();
        let session = TokenGrant {
            hash: &[1; 32],
            name: "device:pump-1",
            role: Role::Device,
            device_id: Some("pump-1"),
            expires_at: Some(100),
            owner: None,
        };
        let api = TokenGrant {
            hash: &[2; 32],
            name: "ops",
            role: Role::Operator,
            device_id: None,
            expires_at: None,
            owner: None,
        };
        s.create_token(&session, 10, None).unwrap();
        s.create_token(&api, 10, None).unwrap();
        let p = s.principal(&[1; 32], 99).unwrap().unwrap();
        assert_eq!(
            (p.role, p.device_id.as_deref()),
            (Role::Device, Some("pump-1"))
        );
        assert_eq!(s.principal(&[1; 32], 100).unwrap(), None, "expired");
        assert!(s.principal(&[2; 32], u64::MAX >> 2).unwrap().is_some());
        assert_eq!(s.principal(&[3; 32], 10).unwrap(), None, "unknown");
        // Listing shows API tokens only, never hashes.
        let listed = s.tokens().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "ops");
    }

    #[test]
    fn audit_log_refuses_inserts_that_are_not_the_next_chained_entry() {
        let s = SqliteStore::in_memory().unwrap();
        s.append_audit(&event(1), 1).unwrap();
        s.append_audit(&event(2), 2).unwrap();
        let conn = s.dangerous_raw_connection().unwrap();
        for sql in [
            // Rewrites entry 1 (REPLACE deletes without firing the delete trigger).
            "INSERT OR REPLACE INTO audit SELECT 1, at, 'mallory', action, subject, detail, prev_hash, hash FROM audit WHERE seq = 1",
            // A gap.
            "INSERT INTO audit SELECT 4, at, actor, action, subject, detail, hash, hash FROM audit WHERE seq = 2",
            // The next number, not chained to the head.
            "INSERT INTO audit SELECT 3, at, actor, action, subject, detail, prev_hash, hash FROM audit WHERE seq = 2",
        ] {
            let e = conn.execute(sql, []).unwrap_err();
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
    }

    #[test]
    fn schema_differences_name_dropped_triggers_and_renamed_tables() {
        let s = SqliteStore::in_memory().unwrap();
        assert_eq!(s.schema_differences().unwrap(), Vec::<String>::new());
        s.dangerous_raw_connection()
            .unwrap()
            .execute_batch(
                "DROP TRIGGER audit_no_delete; ALTER TABLE audit_checkpoints RENAME TO cp;",
            )
            .unwrap();
        let d = s.schema_differences().unwrap().join("\n");
        assert!(d.contains("trigger audit_no_delete is missing"), "{d}");
        assert!(d.contains("table audit_checkpoints is missing"), "{d}");
        assert!(d.contains("unexpected table cp"), "{d}");
    }

    #[test]
    fn audit_log_refuses_updates_and_deletes() {
        let s = SqliteStore::in_memory().unwrap();
        s.append_audit(&event(1), 1).unwrap();
        let conn = s.dangerous_raw_connection().unwrap();
        assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM audit", []).is_err());
    }

    #[test]
    fn tampering_with_a_stored_entry_is_detected() {
        for tamper in [
            "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
            "UPDATE audit SET detail = '{\"n\":7}' WHERE seq = 3",
            "DELETE FROM audit WHERE seq = 2",
            "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; \
             UPDATE audit SET seq = 3 WHERE seq = 100;",
        ] {
            let s = SqliteStore::in_memory().unwrap();
            for n in 1..=4 {
                s.append_audit(&event(n), u64::from(n)).unwrap();
            }
            assert!(verify_entries(&s.audit_entries(0, u32::MAX).unwrap()).is_ok());
            {
                let conn = s.dangerous_raw_connection().unwrap();
                // An attacker with write access to the file drops the guard triggers first.
                conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
                    .unwrap();
                conn.execute_batch(tamper).unwrap();
            }
            assert!(
                verify_entries(&s.audit_entries(0, u32::MAX).unwrap()).is_err(),
                "undetected: {tamper}"
            );
        }
    }
}
