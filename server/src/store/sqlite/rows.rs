//! Row mapping and the SQL every SQLite write shares (appending to the audit chain, counting a
//! rollout's phases, recording a check-in); the decisions come from [`crate::store::rules`].

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::audit::{AuditEntry, Checkpoint};
use crate::rollout::{Counts, DeploymentState, DeviceStatus};
use crate::store::rules::{self, Counter};
use crate::store::{
    Assignment, AuditEvent, CheckIn, CheckInState, Deployment, Device, Page, Product, Release,
    StoreError, StoreResult,
};

/// Runs a filtered, paged list query. The statement's first four parameters are always
/// `?1` limit, `?2` offset, `?3` vendor and `?4` device (`NULL` for any product); `more` binds
/// `?5` onwards. An absent condition is a `NULL` parameter, so one cached statement serves
/// every combination of filters.
pub(super) fn filtered_list<T>(
    conn: &Connection,
    sql: &str,
    page: Page,
    product: Option<&Product>,
    more: &[&dyn rusqlite::ToSql],
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let offset = to_sql(page.offset);
    let vendor = product.map(|p| &p.vendor);
    let device = product.map(|p| &p.device);
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&page.limit, &offset, &vendor, &device];
    params.extend_from_slice(more);
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params.as_slice(), row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// SQLite integers are signed; values above `i64::MAX` saturate (no time or size gets there).
pub(super) fn to_sql(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// The inverse of [`to_sql`]; a negative value (never written) reads as 0.
pub(super) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) const RELEASE_COLUMNS: &str =
    "id, vendor, device, component, version, security_counter, payload_size, \
     payload_digest, key_set_version, created, expires, size, uploaded_at, uploaded_by, retired";

pub(super) fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Release> {
    Ok(Release {
        id: r.get(0)?,
        vendor: r.get(1)?,
        device: r.get(2)?,
        component: r.get(3)?,
        version: r.get(4)?,
        security_counter: r.get(5)?,
        payload_size: from_sql(r.get(6)?),
        payload_digest: r.get(7)?,
        key_set_version: r.get(8)?,
        created: from_sql(r.get(9)?),
        expires: r.get::<_, Option<i64>>(10)?.map(from_sql),
        size: from_sql(r.get(11)?),
        uploaded_at: from_sql(r.get(12)?),
        uploaded_by: r.get(13)?,
        retired: r.get(14)?,
    })
}

pub(super) const CHECKPOINT_COLUMNS: &str = "seq, head, at, public_key, next_public_key, signature";

pub(super) fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        seq: from_sql(r.get(0)?),
        head: r.get(1)?,
        at: from_sql(r.get(2)?),
        public_key: r.get(3)?,
        next_public_key: r.get(4)?,
        signature: r.get(5)?,
    })
}

pub(super) const DEVICE_COLUMNS: &str =
    "id, vendor, device, public_key, channel, groups, labels, revoked, \
     enrolled_at, last_seen, version, security_counter, state";

pub(super) type DeviceRow = (Device, String, String, Option<String>);

pub(super) fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok((
        Device {
            id: r.get(0)?,
            product: Product {
                vendor: r.get(1)?,
                device: r.get(2)?,
            },
            public_key: r.get(3)?,
            channel: r.get(4)?,
            groups: Vec::new(),
            labels: BTreeMap::new(),
            revoked: r.get(7)?,
            enrolled_at: from_sql(r.get(8)?),
            last_seen: r.get::<_, Option<i64>>(9)?.map(from_sql),
            version: r.get(10)?,
            security_counter: r.get(11)?,
            state: None,
        },
        r.get(5)?,
        r.get(6)?,
        r.get(12)?,
    ))
}

pub(super) fn finish_device((mut d, groups, labels, state): DeviceRow) -> StoreResult<Device> {
    d.groups = serde_json::from_str(&groups)?;
    d.labels = serde_json::from_str(&labels)?;
    d.state = state.as_deref().map(parse_state).transpose()?;
    Ok(d)
}

/// A stored check-in state.
pub(super) fn parse_state(s: &str) -> StoreResult<CheckInState> {
    CheckInState::parse(s).ok_or_else(|| StoreError::Backend(format!("unknown check-in state {s}")))
}

/// A stored member status.
pub(super) fn parse_status(s: &str) -> StoreResult<DeviceStatus> {
    DeviceStatus::parse(s).ok_or_else(|| StoreError::Backend(format!("unknown device status {s}")))
}

pub(super) const DEPLOYMENT_COLUMNS: &str =
    "d.id, d.release_id, d.vendor, d.device, d.target, d.policy, d.phase, d.state, d.created_at, \
     d.created_by, d.device_count";

pub(super) type DeploymentRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    String,
    i64,
);

pub(super) fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

pub(super) fn finish_deployment(row: DeploymentRow) -> StoreResult<Deployment> {
    let (id, release_id, vendor, device, target, policy, phase, state, created_at, created_by, n) =
        row;
    Ok(Deployment {
        id,
        release_id,
        product: Product { vendor, device },
        target: serde_json::from_str(&target)?,
        policy: serde_json::from_str(&policy)?,
        phase: usize::try_from(phase).unwrap_or(0),
        state: DeploymentState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("unknown deployment state {state}")))?,
        devices: usize::try_from(n).unwrap_or(0),
        created_at: from_sql(created_at),
        created_by,
    })
}

pub(super) fn load_deployment(tx: &Connection, id: i64) -> StoreResult<Option<Deployment>> {
    let row = tx
        .prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE d.id = ?1"
        ))?
        .query_row([id], deployment_row)
        .optional()?;
    row.map(finish_deployment).transpose()
}

/// An audit row, read as `SELECT seq, at, actor, action, subject, detail, prev_hash, hash`.
pub(super) fn audit_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: from_sql(r.get(0)?),
        at: from_sql(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        detail: r.get(5)?,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

/// Appends an audit entry inside a transaction.
pub(super) fn append(tx: &Connection, event: &AuditEvent, now: u64) -> StoreResult<AuditEntry> {
    let head: Option<(u64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((from_sql(r.get(0)?), r.get(1)?)))
        .optional()?;
    let e = rules::next_entry(head, event, now);
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        to_sql(e.seq),
        to_sql(e.at),
        e.actor,
        e.action,
        e.subject,
        e.detail,
        e.prev_hash,
        e.hash
    ])?;
    Ok(e)
}

/// Status counts over the devices admitted up to `phase`.
pub(super) fn phase_counts(tx: &Connection, id: i64, phase: usize) -> StoreResult<Counts> {
    let (confirmed, failures, open): (i64, i64, i64) = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(confirmed), 0), COALESCE(SUM(failures), 0), COALESCE(SUM(open), 0) \
             FROM rollout_counts WHERE deployment_id = ?1 AND bucket <= ?2",
        )?
        .query_row(params![id, phase as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let n = |v: i64| usize::try_from(v).unwrap_or(0);
    Ok(Counts {
        confirmed: n(confirmed),
        failures: n(failures),
        open: n(open),
    })
}

/// Re-evaluates an active rollout after a status change and records what changed.
pub(super) fn reevaluate(tx: &Connection, id: i64, now: u64) -> StoreResult<()> {
    let Some(dep) = load_deployment(tx, id)? else {
        return Ok(());
    };
    let Some(t) = rules::reevaluate(&dep, |p| phase_counts(tx, id, p))? else {
        return Ok(());
    };
    tx.prepare_cached("UPDATE deployments SET phase = ?2, state = ?3 WHERE id = ?1")?
        .execute(params![id, to_sql(t.phase as u64), t.state.as_str()])?;
    let c = phase_counts(tx, id, t.phase)?;
    append(tx, &rules::transition_event(id, &t, c), now)?;
    Ok(())
}

/// The member's status if the deployment's current phase admits the device.
pub(super) fn admitted_member(
    conn: &Connection,
    deployment: i64,
    device_id: &str,
) -> StoreResult<Option<DeviceStatus>> {
    let Some(dep) = load_deployment(conn, deployment)? else {
        return Ok(None);
    };
    let row: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT rank, status FROM members WHERE deployment_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![deployment, device_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(row.and_then(|(rank, status)| {
        rules::is_admitted(&dep, rank)
            .then(|| DeviceStatus::parse(&status))
            .flatten()
    }))
}

/// Records one check-in inside the caller's write transaction (see [`crate::store::CheckInStore::check_in`]).
pub(super) fn record_check_in(
    tx: &Connection,
    c: &CheckIn,
    now: u64,
    keep: u32,
) -> StoreResult<Option<Assignment>> {
    let previous: Option<(Option<String>, Option<String>, i64)> = tx
        .prepare_cached("SELECT version, state, reports_seq FROM devices WHERE id = ?1")?
        .query_row([&c.device_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((prev_version, prev_state, prev_seq)) = previous else {
        return Err(StoreError::NotFound {
            what: "device",
            id: c.device_id.clone(),
        });
    };
    // The report gets its device's next number; the trim deletes the numbers `keep` or more
    // below it (one index range, only the rows that go).
    let seq = prev_seq
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend("a device's report number overflowed".to_owned()))?;
    tx.prepare_cached(
        "INSERT INTO reports \
         (device_id, seq, at, version, security_counter, state, deployment_id, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        c.device_id,
        seq,
        to_sql(now),
        c.version,
        c.security_counter,
        c.state.as_str(),
        c.deployment_id,
        c.detail
    ])?;
    tx.prepare_cached("DELETE FROM reports WHERE device_id = ?1 AND seq <= ?2")?
        .execute(params![
            c.device_id,
            seq.saturating_sub(i64::from(keep.max(1)))
        ])?;
    tx.prepare_cached(
        "UPDATE devices SET last_seen = ?2, version = ?3, security_counter = ?4, state = ?5, \
         reports_seq = ?6 WHERE id = ?1",
    )?
    .execute(params![
        c.device_id,
        to_sql(now),
        c.version,
        c.security_counter,
        c.state.as_str(),
        seq
    ])?;
    let prev_state = prev_state.as_deref().map(parse_state).transpose()?;
    if let Some(event) = rules::report_event(c, prev_version.as_deref(), prev_state) {
        append(tx, &event, now)?;
    }
    if let (Some(dep), Some(status)) = (c.deployment_id, rules::reported_status(c.state)) {
        // Only a device its phase admitted reports for a deployment that is still open.
        let current: Option<(String, i64)> = tx
            .prepare_cached(
                "SELECT m.status, m.bucket FROM members m JOIN deployments d ON d.id = m.deployment_id \
                 WHERE m.deployment_id = ?1 AND m.device_id = ?2 AND m.bucket <= d.phase \
                 AND d.state IN ('active', 'paused', 'halted')",
            )?
            .query_row(params![dep, c.device_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((current, bucket)) = current {
            if current != status.as_str() {
                tx.prepare_cached(
                    "UPDATE members SET status = ?3, updated_at = ?4 WHERE deployment_id = ?1 AND device_id = ?2",
                )?
                .execute(params![dep, c.device_id, status.as_str(), to_sql(now)])?;
                let from = parse_status(&current)?;
                let (dec, inc) = (Counter::of(from).column(), Counter::of(status).column());
                if dec != inc {
                    // Column names come from `Counter`, never from input.
                    tx.prepare_cached(&format!(
                        "UPDATE rollout_counts SET {dec} = {dec} - 1, {inc} = {inc} + 1 \
                         WHERE deployment_id = ?1 AND bucket = ?2"
                    ))?
                    .execute(params![dep, bucket])?;
                }
                append(
                    tx,
                    &rules::status_event(&c.device_id, dep, from, status),
                    now,
                )?;
                reevaluate(tx, dep, now)?;
            }
        }
    }
    assignment(tx, &c.device_id, c.security_counter, now)
}

/// The newest active deployment that admits the device and that it has not finished.
///
/// A release below the security counter the device reports is never offered: the device would
/// refuse it as a rollback anyway (FORMAT.md step 7), so offering it only wastes a download.
/// Nor is a retired release, or one whose manifest has expired (at `now`).
pub(super) fn assignment(
    conn: &Connection,
    device_id: &str,
    security_counter: u32,
    now: u64,
) -> StoreResult<Option<Assignment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.release_id FROM deployments d JOIN members m ON m.deployment_id = d.id \
         JOIN releases r ON r.id = d.release_id \
         WHERE m.device_id = ?1 AND d.state = 'active' AND r.retired = 0 \
         AND (r.expires IS NULL OR r.expires > ?3) AND r.security_counter >= ?2 \
         AND m.status NOT IN ('confirmed', 'reverted', 'failed') ORDER BY d.id DESC",
    )?;
    let candidates: Vec<(i64, String)> = stmt
        .query_map(params![device_id, security_counter, to_sql(now)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, release_id) in candidates {
        if let Some(status) = admitted_member(conn, id, device_id)? {
            let (release, encrypted) = conn
                .prepare_cached(&format!(
                    "SELECT {RELEASE_COLUMNS}, EXISTS (SELECT 1 FROM encrypted_releases e \
                     WHERE e.release_id = releases.id) FROM releases WHERE id = ?1"
                ))?
                .query_row([&release_id], |r| Ok((release_row(r)?, r.get(15)?)))?;
            return Ok(Some(Assignment {
                deployment_id: id,
                release,
                status,
                encrypted,
            }));
        }
    }
    Ok(None)
}
