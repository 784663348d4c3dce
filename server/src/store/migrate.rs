//! `sigil-server migrate`: moves an SQLite installation (database and bundle store) into an
//! empty PostgreSQL database, audit chain and checkpoints included, then verifies the copy.
//!
//! Rows are copied verbatim (ids included) in one transaction, in the order the audit
//! trigger accepts (the PostgreSQL schema re-checks every entry's chaining on insert); bundle
//! bytes are stored first (idempotent), so a failed run can simply be run again on the emptied
//! database. Verification: every table's row count, the audit chain recomputed from the copy
//! and its head equal to the source's, the checkpoints equal, every release's bundle read
//! back from PostgreSQL hashing to its address.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{AuditStore, BundleBytes, ReleaseStore, StoreError, StoreResult};
use crate::audit::verify_entries;

/// How a column is carried over.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Text,
    Blob,
    Bool,
    Json,
}
use Kind::*;

/// The tables in copy order (references first), with their columns.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "users",
        &[
            ("name", Text),
            ("kind", Text),
            ("roles", Text),
            ("state", Text),
            ("created_at", Int),
            ("passphrase_hash", Text),
            ("totp_secret", Blob),
            ("totp_last_step", Int),
            ("failed_logins", Int),
            ("locked_until", Int),
            ("scope", Text),
            ("webauthn_handle", Blob),
        ],
    ),
    (
        "passkeys",
        &[
            ("id", Blob),
            ("user_name", Text),
            ("name", Text),
            ("transports", Int),
            ("static_state", Blob),
            ("dynamic_state", Blob),
            ("sign_count", Int),
            ("created_at", Int),
            ("last_used_at", Int),
        ],
    ),
    (
        "enrolments",
        &[
            ("hash", Blob),
            ("user_name", Text),
            ("expires_at", Int),
            ("started", Bool),
        ],
    ),
    (
        "tokens",
        &[
            ("id", Int),
            ("hash", Blob),
            ("name", Text),
            ("role", Text),
            ("device_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("owner", Text),
        ],
    ),
    (
        "releases",
        &[
            ("id", Text),
            ("vendor", Text),
            ("device", Text),
            ("component", Text),
            ("version", Text),
            ("security_counter", Int),
            ("payload_size", Int),
            ("payload_digest", Text),
            ("key_set_version", Int),
            ("created", Int),
            ("expires", Int),
            ("size", Int),
            ("uploaded_at", Int),
            ("uploaded_by", Text),
            ("retired", Bool),
        ],
    ),
    (
        "devices",
        &[
            ("id", Text),
            ("vendor", Text),
            ("device", Text),
            ("public_key", Text),
            ("channel", Text),
            ("groups", Json),
            ("labels", Json),
            ("revoked", Bool),
            ("enrolled_at", Int),
            ("last_seen", Int),
            ("version", Text),
            ("security_counter", Int),
            ("state", Text),
            ("reports_seq", Int),
        ],
    ),
    (
        "reports",
        &[
            ("id", Int),
            ("device_id", Text),
            ("seq", Int),
            ("at", Int),
            ("version", Text),
            ("security_counter", Int),
            ("state", Text),
            ("deployment_id", Int),
            ("detail", Text),
        ],
    ),
    (
        "deployments",
        &[
            ("id", Int),
            ("release_id", Text),
            ("vendor", Text),
            ("device", Text),
            ("target", Text),
            ("policy", Text),
            ("phase", Int),
            ("state", Text),
            ("created_at", Int),
            ("created_by", Text),
            ("device_count", Int),
        ],
    ),
    (
        "members",
        &[
            ("deployment_id", Int),
            ("device_id", Text),
            ("rank", Int),
            ("bucket", Int),
            ("status", Text),
            ("updated_at", Int),
        ],
    ),
    (
        "rollout_counts",
        &[
            ("deployment_id", Int),
            ("bucket", Int),
            ("confirmed", Int),
            ("failures", Int),
            ("open", Int),
        ],
    ),
    (
        "audit",
        &[
            ("seq", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("subject", Text),
            ("detail", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
    ),
    (
        "audit_checkpoints",
        &[
            ("id", Int),
            ("seq", Int),
            ("head", Text),
            ("at", Int),
            ("public_key", Text),
            ("next_public_key", Text),
            ("signature", Text),
        ],
    ),
    (
        "root_chain",
        &[
            ("id", Int),
            ("chain", Blob),
            ("newest_version", Int),
            ("updated_at", Int),
        ],
    ),
    // Console sessions and outstanding passkey challenges are not carried over: people log
    // in again.
    (
        "approvals",
        &[
            ("id", Int),
            ("kind", Text),
            ("subject", Text),
            ("decision", Text),
            ("by_name", Text),
            ("reason", Text),
            ("at", Int),
        ],
    ),
];

/// Tables whose `id` is a generated identity: its sequence continues after the copied ids.
const IDENTITIES: &[&str] = &[
    "tokens",
    "reports",
    "deployments",
    "audit_checkpoints",
    "approvals",
];

/// What a migration moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Rows per table.
    pub rows: Vec<(&'static str, u64)>,
    /// Bundles stored.
    pub bundles: usize,
    /// Audit entries (verified).
    pub audit_entries: u64,
    /// The audit head hash, equal on both sides.
    pub audit_head: String,
}

fn column_value(
    row: &rusqlite::Row<'_>,
    i: usize,
    kind: Kind,
) -> StoreResult<Box<dyn ::postgres::types::ToSql + Sync>> {
    Ok(match kind {
        Int => Box::new(row.get::<_, Option<i64>>(i)?),
        Text | Json => Box::new(row.get::<_, Option<String>>(i)?),
        Blob => Box::new(row.get::<_, Option<Vec<u8>>>(i)?),
        Bool => Box::new(row.get::<_, Option<i64>>(i)?.map(|v| v != 0)),
    })
}

/// Moves the installation in `data_dir` (its `sigil.db` and `bundles/`) into `pg`, which must
/// be empty, and verifies the result.
pub fn sqlite_to_postgres(data_dir: &Path, pg: &PgStore) -> StoreResult<Migrated> {
    let db = data_dir.join("sigil.db");
    if !db.is_file() {
        return Err(StoreError::Invalid(format!(
            "{} does not exist: --from names the data directory of an SQLite installation",
            db.display()
        )));
    }
    let sqlite = SqliteStore::open(&db)?;
    let differences = sqlite.schema_differences()?;
    if !differences.is_empty() {
        return Err(StoreError::Invalid(format!(
            "the source database's schema differs from this server's: {}",
            differences.join("; ")
        )));
    }
    let source_entries = sqlite.audit_entries(0, u32::MAX)?;
    verify_entries(&source_entries)
        .map_err(|e| StoreError::Invalid(format!("the source audit trail does not verify: {e}")))?;
    let source_head = sqlite.audit_head()?;

    let mut conn = pg.conn()?;
    for table in ["users", "tokens", "releases", "devices", "audit"] {
        let n: i64 = conn
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
            .try_get(0)?;
        if n > 0 {
            return Err(StoreError::Conflict(format!(
                "the target database is not empty ({table} has {n} rows): migrate into a new one"
            )));
        }
    }

    // Bundle bytes first: a release row must never exist without them.
    let bundles = crate::bundles::BundleStore::open(data_dir)
        .map_err(|e| StoreError::Backend(format!("bundle store: {e}")))?;
    let ids = sqlite.release_ids()?;
    for id in &ids {
        let path = bundles
            .path(id)
            .ok_or_else(|| StoreError::Invalid(format!("release {id} is not a bundle address")))?;
        let mut file = std::fs::File::open(&path).map_err(|e| {
            StoreError::Invalid(format!(
                "the bundle of release {id} ({}): {e}",
                path.display()
            ))
        })?;
        pg.put_bundle(id, &mut file, super::now_secs())?;
    }

    let mut rows = Vec::new();
    {
        let src = sqlite.dangerous_raw_connection()?;
        let mut tx = conn.transaction()?;
        for (table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let params: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (_, k))| match k {
                    Json => format!("${}::TEXT::JSONB", i + 1),
                    _ => format!("${}", i + 1),
                })
                .collect();
            let insert = tx.prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            ))?;
            let order = if *table == "audit" { "seq" } else { "rowid" };
            let mut stmt = src.prepare(&format!(
                "SELECT {} FROM {table} ORDER BY {order}",
                names.join(", ")
            ))?;
            let mut q = stmt.query([])?;
            let mut n = 0u64;
            while let Some(row) = q.next()? {
                let values = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, k))| column_value(row, i, *k))
                    .collect::<StoreResult<Vec<_>>>()?;
                let refs: Vec<&(dyn ::postgres::types::ToSql + Sync)> =
                    values.iter().map(|v| v.as_ref()).collect();
                tx.execute(&insert, &refs)?;
                n = n.saturating_add(1);
            }
            rows.push((*table, n));
        }
        for table in IDENTITIES {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                ),
                &[],
            )?;
        }
        tx.commit()?;
    }

    // Verification, reading the copy back.
    for (table, n) in &rows {
        let copied: i64 = conn
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
            .try_get(0)?;
        if u64::try_from(copied).ok() != Some(*n) {
            return Err(StoreError::Backend(format!(
                "verification: {table} has {copied} rows in PostgreSQL, {n} in SQLite"
            )));
        }
    }
    let entries = pg.audit_entries(0, u32::MAX)?;
    let summary = verify_entries(&entries)
        .map_err(|e| StoreError::Backend(format!("verification: the copied audit trail: {e}")))?;
    if pg.audit_head()? != source_head || entries != source_entries {
        return Err(StoreError::Backend(
            "verification: the copied audit trail differs from the source".to_owned(),
        ));
    }
    if pg.checkpoints(u64::MAX)? != sqlite.checkpoints(u64::MAX)? {
        return Err(StoreError::Backend(
            "verification: the copied audit checkpoints differ from the source".to_owned(),
        ));
    }
    for id in &ids {
        let mut h = HashWriter(Sha256::new());
        if !pg.get_bundle(id, &mut h)? || hex::encode(h.0.finalize()) != *id {
            return Err(StoreError::Backend(format!(
                "verification: bundle {id} does not read back intact"
            )));
        }
    }
    Ok(Migrated {
        rows,
        bundles: ids.len(),
        audit_entries: summary.entries,
        audit_head: source_head.1,
    })
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
