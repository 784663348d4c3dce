//! Prepared statements cached per connection, for the check-in path.
//!
//! The `postgres` client parses and plans every query given as text afresh on the server; a
//! check-in runs the same few statements every time, so each connection prepares them
//! (`prepare_typed`) and then only binds and executes, until it prepares them again (below).
//! Named prepared statements belong to the session, not to a transaction: one prepared inside
//! a transaction that rolls back stays valid. The cache goes with its connection when the pool
//! drops a broken one.
//!
//! A prepared statement keeps its plan until the tables' statistics change (an `ANALYZE`,
//! which autovacuum runs only every so often), however much the tables grow meanwhile: a plan
//! made while `reports` was nearly empty, on a fresh database or at a replica's first
//! check-ins, went on scanning the whole table in each group's trim once it held 60,000 rows
//! (2.7 ms a group, most of PostgreSQL's CPU per check-in at the fleet's pace). So a statement
//! is prepared again once it is [`REPLAN_AFTER`] old, and its plan is made for the tables as
//! they are then.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, Row, Socket, Statement};
use r2d2_postgres::PostgresConnectionManager;

/// A pooled client and the statements prepared on it.
pub struct PgConn {
    pub(super) client: Client,
    pub(super) statements: HashMap<String, Prepared>,
}

/// How old a prepared statement gets before it is prepared again (see the module
/// documentation). Preparing costs a round trip and a few planned executions: a few
/// milliseconds of a connection's time per statement per period.
pub const REPLAN_AFTER: Duration = Duration::from_secs(5);

/// A statement prepared on a connection, and when.
pub struct Prepared {
    statement: Statement,
    at: Instant,
}

impl std::ops::Deref for PgConn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// [`PostgresConnectionManager`] handing out [`PgConn`]s.
#[derive(Debug)]
pub struct Manager<T>(pub(super) PostgresConnectionManager<T>);

impl<T> r2d2::ManageConnection for Manager<T>
where
    T: MakeTlsConnect<Socket> + Clone + 'static + Sync + Send,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.0.connect()?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// How a statement reaches the server: prepared per connection (`cache` given), or as
/// typed text (`query_typed`, one round trip, parsed every time) where no cache is at hand.
/// Also carries whether the transaction holds the store's write lock.
pub struct Stmts<'a> {
    cache: Option<&'a mut HashMap<String, Prepared>>,
    /// The transaction holds the write lock (every transaction outside the check-in fast
    /// path does).
    pub(super) locked: bool,
    /// A step found it needs the write lock the transaction does not hold: the caller rolls
    /// back and runs again under the lock.
    pub(super) wants_lock: bool,
}

impl<'a> Stmts<'a> {
    /// Statements prepared and kept in `cache`; `locked` says whether the transaction
    /// holds the write lock.
    pub(super) fn cached(cache: &'a mut HashMap<String, Prepared>, locked: bool) -> Self {
        Stmts {
            cache: Some(cache),
            locked,
            wants_lock: false,
        }
    }

    /// No cache: every statement is sent as typed text (in a transaction under the write
    /// lock).
    pub(super) fn uncached() -> Self {
        Stmts {
            cache: None,
            locked: true,
            wants_lock: false,
        }
    }

    /// Ok when the transaction holds the write lock; otherwise records that it is wanted and
    /// fails, so that the caller rolls back and runs again under the lock.
    pub(super) fn need_lock(&mut self) -> Result<(), crate::store::StoreError> {
        if self.locked {
            return Ok(());
        }
        self.wants_lock = true;
        Err(crate::store::StoreError::Conflict(
            "this write needs the store's write lock".to_owned(),
        ))
    }

    /// Runs `sql` with `params` (each with its type) and returns its rows.
    pub(super) fn query(
        &mut self,
        c: &mut impl GenericClient,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let Some(cache) = self.cache.as_deref_mut() else {
            return c.query_typed(sql, params);
        };
        let statement = match cache.get(sql) {
            Some(p) if p.at.elapsed() < REPLAN_AFTER => p.statement.clone(),
            _ => {
                let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
                let statement = c.prepare_typed(sql, &types)?;
                // The one it replaces is closed on the server when its last clone goes.
                cache.insert(
                    sql.to_owned(),
                    Prepared {
                        statement: statement.clone(),
                        at: Instant::now(),
                    },
                );
                statement
            }
        };
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        c.query(&statement, &values)
    }
}
