//! The PostgreSQL backend: several `sigil-server` replicas share one database.
//!
//! - A pool of blocking connections (`postgres` + `r2d2`); the store's calls already run on the
//!   blocking pool. TLS to the database through rustls, verified against `database_ca_file`.
//! - Migrations (`schema/*.sql`) run at start-up under a session advisory lock: the first
//!   replica applies them, the others wait for the lock and then find nothing to do.
//! - Every write transaction that decides something first takes one transaction-scoped
//!   advisory lock, the store's write lock: those writes from all replicas are serialised as
//!   SQLite's single writer serialises them, so the audit chain stays one chain (the head read
//!   and the append cannot interleave), a rollout's re-evaluation after each status change sees
//!   every earlier change and moves the deployment exactly once, and two uploads of the same
//!   bundle insert one release. Reads take no lock. Check-ins are committed in groups (one
//!   transaction per batch, several batches per replica at once), each written with a few
//!   multi-row statements whatever its size (`rows::record_batch`); a group of unchanged
//!   check-ins (no status change, no audit entry) runs without the write lock under its
//!   devices' row locks, and one that turns out to need the lock rolls back and runs again
//!   under it (`Stmts::need_lock`).
//! - The check-in path's statements and the token lookup are prepared per pooled connection
//!   and prepared again every few seconds, so that their plans follow the tables' growth
//!   (`stmts`).
//! - At start-up [`PgStore::schema_differences`] compares the schema with the one the
//!   migrations make.
//! - Bundle bytes live in the database too (`bundle_chunks`), written before their release
//!   row; each replica keeps a verified copy on its local disk as a cache
//!   ([`crate::bundles::BundleStore::cache_from`]).
//! - A connection refused, lost or shut down is [`StoreError::Unavailable`] (the API answers
//!   503); broken connections are dropped from the pool and replaced on the next call.

mod accounts;
mod approvals;
mod audit;
mod bundles;
mod checkins;
mod deployments;
mod devices;
mod encryption;
mod passkeys;
mod records;
mod releases;
mod roots;
mod rows;
mod stmts;
mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{StoreError, StoreResult};

pub use bundles::BUNDLE_CHUNK;
use stmts::Stmts;

/// Schema migrations, applied in order; `sigil_schema` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("schema/0001_initial.sql"),
    include_str!("schema/0002_bundles.sql"),
    include_str!("schema/0003_root_chain.sql"),
    include_str!("schema/0004_accounts.sql"),
    include_str!("schema/0005_account_scopes.sql"),
    include_str!("schema/0006_reports_by_age.sql"),
    include_str!("schema/0007_device_encryption_keys.sql"),
    include_str!("schema/0008_passkeys.sql"),
    include_str!("schema/0009_report_seq.sql"),
];

/// Advisory lock keys (`pg_advisory_lock`), chosen once: `SGLM` and `SGLW` in ASCII.
const MIGRATION_LOCK: i64 = 0x5347_4c4d;
const WRITE_LOCK: i64 = 0x5347_4c57;

/// The scratch schema [`PgStore::schema_differences`] builds the expected schema in (rolled
/// back, never committed).
const SCRATCH_SCHEMA: &str = "sigil_expected_schema";

/// One object of a schema, described so that two schemas can be compared.
#[derive(Debug, PartialEq, Eq)]
struct SchemaObject {
    /// `table`, `column`, `index`, `constraint`, `trigger` or `function`.
    kind: String,
    /// Its name (`table.column` for columns, `table.name` for constraints and triggers).
    name: String,
    /// The table it belongs to (itself for a table, empty for a function).
    table: String,
    /// Its definition, with the schema's name taken out.
    definition: String,
}

/// The objects of `schema` (the bookkeeping table `sigil_schema` excepted, which `migrate`
/// makes, not a migration).
fn schema_objects(
    c: &mut impl postgres::GenericClient,
    schema: &str,
) -> StoreResult<Vec<SchemaObject>> {
    let rows = c.query(
        "SELECT 'table', c.relname::TEXT, c.relname::TEXT, c.relkind::TEXT \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm') \
         UNION ALL SELECT 'column', c.relname || '.' || a.attname, c.relname::TEXT, \
             format_type(a.atttypid, a.atttypmod) \
             || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
             || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') \
             || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' \
                WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END \
             || ' STORAGE ' || a.attstorage::TEXT || ' POSITION ' || a.attnum \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 \
             AND NOT a.attisdropped \
         UNION ALL SELECT 'index', ci.relname::TEXT, ct.relname::TEXT, \
             pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid \
             JOIN pg_class ct ON ct.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = ct.relnamespace WHERE n.nspname = $1 \
         UNION ALL SELECT 'constraint', c.relname || '.' || k.conname, c.relname::TEXT, \
             pg_get_constraintdef(k.oid) \
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 \
         UNION ALL SELECT 'trigger', c.relname || '.' || t.tgname, c.relname::TEXT, \
             pg_get_triggerdef(t.oid) || ' ENABLED ' || t.tgenabled::TEXT \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND NOT t.tgisinternal \
         UNION ALL SELECT 'function', p.proname::TEXT, '', pg_get_functiondef(p.oid) \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.prokind = 'f'",
        &[&schema],
    )?;
    let qualified = [format!("{schema}."), format!("\"{schema}\".")];
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (kind, name, table): (String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if table == "sigil_schema" {
            continue;
        }
        let mut definition: String = r.try_get(3)?;
        for q in &qualified {
            definition = definition.replace(q.as_str(), "");
        }
        out.push(SchemaObject {
            kind,
            name,
            table,
            definition,
        });
    }
    Ok(out)
}

/// Connections per replica.
const POOL_SIZE: u32 = 16;
/// How long a call waits for a connection before it is answered 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Pool = r2d2::Pool<stmts::Manager<MakeRustlsConnect>>;
/// A pooled connection.
pub(super) type Conn = r2d2::PooledConnection<stmts::Manager<MakeRustlsConnect>>;

/// The PostgreSQL store (see the module documentation).
pub struct PgStore {
    /// Always `Some` but in `drop`.
    pool: Option<Pool>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing a blocking client runs its own small runtime, which must not happen on a
        // thread that drives async tasks: close the connections on a thread of their own.
        if let Some(pool) = self.pool.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(pool)).join();
            }
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("state", &self.pool.as_ref().map(|p| p.state()))
            .finish()
    }
}

/// Maps a client error: connection-level failures are [`StoreError::Unavailable`].
pub(super) fn pg(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P01-03: admin/crash shutdown, cannot connect now.
        if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
            return StoreError::Unavailable(db.message().to_owned());
        }
        return StoreError::Backend(format!("{} (PostgreSQL code {code})", db.message()));
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        return StoreError::Unavailable(e.to_string());
    }
    StoreError::Backend(e.to_string())
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        pg(e)
    }
}

/// The rustls connector: roots from `ca_file` when given, none otherwise (then only a server
/// that offers no TLS, or `sslmode=disable`, can be reached).
fn tls(ca_file: Option<&Path>) -> StoreResult<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot read database_ca_file {}: {e}",
                path.display()
            ))
        })?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| {
                StoreError::Backend(format!("database_ca_file {}: {e}", path.display()))
            })?;
            roots.add(cert).map_err(|e| {
                StoreError::Backend(format!("database_ca_file {}: {e}", path.display()))
            })?;
        }
        if roots.is_empty() {
            return Err(StoreError::Backend(format!(
                "database_ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connects to `url`, waits for or runs the migrations, and returns the store.
    pub fn open(url: &str, ca_file: Option<&Path>) -> StoreResult<Self> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| StoreError::Backend(format!("database_url: {e}")))?;
        match (config.get_ssl_mode(), ca_file) {
            // A CA file means TLS is wanted: never fall back to plain text.
            (SslMode::Prefer, Some(_)) => {
                config.ssl_mode(SslMode::Require);
            }
            (SslMode::Require, None) => {
                return Err(StoreError::Backend(
                    "sslmode=require needs database_ca_file (the CA that signed the \
                     PostgreSQL server's certificate)"
                        .to_owned(),
                ))
            }
            _ => {}
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("sigil-server");
        let manager = stmts::Manager(PostgresConnectionManager::new(config, tls(ca_file)?));
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // A broken connection is noticed on use (and dropped); no round trip per checkout.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let store = PgStore { pool: Some(pool) };
        store.migrate()?;
        Ok(store)
    }

    /// A pooled connection, or [`StoreError::Unavailable`].
    pub(super) fn conn(&self) -> StoreResult<Conn> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".to_owned()))?
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no PostgreSQL connection: {e}")))
    }

    /// Runs one statement outside a transaction, prepared per pooled connection (for
    /// the reads every request makes, such as the token lookup).
    pub(super) fn query_cached(
        &self,
        sql: &str,
        params: &[(&(dyn postgres::types::ToSql + Sync), postgres::types::Type)],
    ) -> StoreResult<Vec<postgres::Row>> {
        let mut conn = self.conn()?;
        let stmts::PgConn { client, statements } = &mut *conn;
        Ok(Stmts::cached(statements, false).query(client, sql, params)?)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        // A session lock: replicas starting together queue here, one migrates.
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let out = (|| -> StoreResult<()> {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS sigil_schema (version BIGINT NOT NULL); \
                 INSERT INTO sigil_schema (version) \
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM sigil_schema)",
            )?;
            let done: i64 = conn
                .query_one("SELECT version FROM sigil_schema", &[])?
                .get(0);
            let done = usize::try_from(done).unwrap_or(0);
            if done > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "database schema version {done} is newer than this server ({})",
                    MIGRATIONS.len()
                )));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
                let mut tx = conn.transaction()?;
                tx.batch_execute(sql)?;
                let v = i64::try_from(i.saturating_add(1)).unwrap_or(i64::MAX);
                tx.execute("UPDATE sigil_schema SET version = $1", &[&v])?;
                tx.commit()?;
                tracing::info!(version = v, "PostgreSQL schema migrated");
            }
            Ok(())
        })();
        let unlock = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        out?;
        unlock?;
        Ok(())
    }

    /// How the schema differs from the one this server's migrations create: a table, column,
    /// index, constraint, trigger or function of Sigil's missing or altered, a trigger
    /// disabled, anything added to Sigil's tables. Empty when intact. Objects the operator
    /// adds beside Sigil's tables (an extension's views, other applications' tables) are not
    /// Sigil's and are not compared.
    ///
    /// The expected schema is made by running the migrations into a scratch schema inside a
    /// transaction that is rolled back, so it is always this server's own; that needs the
    /// `CREATE` privilege on the database (which the migrations' owner has).
    pub fn schema_differences(&self) -> StoreResult<Vec<String>> {
        let mut conn = self.conn()?;
        let schema: String = conn.query_one("SELECT current_schema()::TEXT", &[])?.get(0);
        let mut tx = conn.transaction()?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA {SCRATCH_SCHEMA}; SET LOCAL search_path TO {SCRATCH_SCHEMA}"
        ))?;
        for sql in MIGRATIONS {
            tx.batch_execute(sql)?;
        }
        let expected = schema_objects(&mut tx, SCRATCH_SCHEMA)?;
        let actual = schema_objects(&mut tx, &schema)?;
        tx.rollback()?;
        let tables: std::collections::HashSet<&str> = expected
            .iter()
            .filter(|o| o.kind == "table")
            .map(|o| o.table.as_str())
            .collect();
        let mut out = Vec::new();
        for e in &expected {
            match actual.iter().find(|a| a.kind == e.kind && a.name == e.name) {
                None => out.push(format!("{} {} is missing", e.kind, e.name)),
                Some(a) if a.definition != e.definition => out.push(format!(
                    "{} {} was altered (now `{}`, expected `{}`)",
                    e.kind, e.name, a.definition, e.definition
                )),
                Some(_) => {}
            }
        }
        for a in &actual {
            let ours = tables.contains(a.table.as_str())
                || a.kind == "function" && a.name.starts_with("sigil_");
            if ours
                && !expected
                    .iter()
                    .any(|e| e.kind == a.kind && e.name == a.name)
            {
                out.push(format!(
                    "unexpected {} {} (on table {})",
                    a.kind, a.name, a.table
                ));
            }
        }
        Ok(out)
    }

    /// A write transaction under the store's write lock (see the module documentation).
    pub(super) fn with_tx<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.with_tx_cached(|tx, _| f(tx))
    }

    /// [`Self::with_tx`] with the connection's prepared statements at hand.
    pub(super) fn with_tx_cached<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>, &mut Stmts<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.tx_cached(true, f).map_err(|(e, _)| e)
    }

    /// A transaction with the connection's prepared statements, under the write lock when
    /// `lock`. A failed one says whether it failed for want of the write lock
    /// ([`Stmts::need_lock`]).
    pub(super) fn tx_cached<T>(
        &self,
        lock: bool,
        f: impl FnOnce(&mut postgres::Transaction<'_>, &mut Stmts<'_>) -> StoreResult<T>,
    ) -> Result<T, (StoreError, bool)> {
        let mut conn = self.conn().map_err(|e| (e, false))?;
        let stmts::PgConn { client, statements } = &mut *conn;
        let mut st = Stmts::cached(statements, lock);
        let out = (|| {
            let mut tx = client.transaction()?;
            if lock {
                st.query(
                    &mut tx,
                    "SELECT pg_advisory_xact_lock($1)",
                    &[(&WRITE_LOCK, postgres::types::Type::INT8)],
                )?;
            }
            let out = f(&mut tx, &mut st)?;
            tx.commit()?;
            Ok(out)
        })();
        out.map_err(|e| (e, st.wants_lock))
    }

    /// Everything, for tests that start from an empty database: drops every table the
    /// migrations made.
    #[doc(hidden)]
    pub fn dangerous_reset(url: &str) -> StoreResult<()> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT ALL ON SCHEMA public TO public",
        )?;
        Ok(())
    }
}
