//! Row mapping and the SQL every PostgreSQL write shares; the decisions come from
//! [`crate::store::rules`], as for SQLite.

use std::collections::BTreeMap;

use postgres::types::Type;

use super::Stmts;
use postgres::{GenericClient, Row};

use crate::audit::{AuditEntry, Checkpoint};
use crate::rollout::{Counts, DeviceStatus};
use crate::store::rules::{self, Counter};
use crate::store::{
    Assignment, AuditEvent, CheckIn, CheckInState, Deployment, Device, Product, Release,
    StoreError, StoreResult,
};

/// PostgreSQL integers are signed; values above `i64::MAX` saturate (no time or size gets
/// there).
pub(super) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The inverse of [`to_sql`]; a negative value (never written) reads as 0.
pub(super) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A stored 32-bit value (security counters, key set versions).
pub(super) fn u32_sql(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(super) const RELEASE_COLUMNS: &str =
    "id, vendor, device, component, version, security_counter, payload_size, \
     payload_digest, key_set_version, created, expires, size, uploaded_at, uploaded_by, retired";

pub(super) fn release_row(r: &Row) -> StoreResult<Release> {
    Ok(Release {
        id: r.try_get(0)?,
        vendor: r.try_get(1)?,
        device: r.try_get(2)?,
        component: r.try_get(3)?,
        version: r.try_get(4)?,
        security_counter: u32_sql(r.try_get(5)?),
        payload_size: from_sql(r.try_get(6)?),
        payload_digest: r.try_get(7)?,
        key_set_version: u32_sql(r.try_get(8)?),
        created: from_sql(r.try_get(9)?),
        expires: r.try_get::<_, Option<i64>>(10)?.map(from_sql),
        size: from_sql(r.try_get(11)?),
        uploaded_at: from_sql(r.try_get(12)?),
        uploaded_by: r.try_get(13)?,
        retired: r.try_get(14)?,
    })
}

pub(super) const CHECKPOINT_COLUMNS: &str = "seq, head, at, public_key, next_public_key, signature";

pub(super) fn checkpoint_row(r: &Row) -> StoreResult<Checkpoint> {
    Ok(Checkpoint {
        seq: from_sql(r.try_get(0)?),
        head: r.try_get(1)?,
        at: from_sql(r.try_get(2)?),
        public_key: r.try_get(3)?,
        next_public_key: r.try_get(4)?,
        signature: r.try_get(5)?,
    })
}

pub(super) const DEVICE_COLUMNS: &str =
    "id, vendor, device, public_key, channel, groups::text, labels::text, revoked, \
     enrolled_at, last_seen, version, security_counter, state";

pub(super) fn device_row(r: &Row) -> StoreResult<Device> {
    let groups: String = r.try_get(5)?;
    let labels: String = r.try_get(6)?;
    let state: Option<String> = r.try_get(12)?;
    Ok(Device {
        id: r.try_get(0)?,
        product: Product {
            vendor: r.try_get(1)?,
            device: r.try_get(2)?,
        },
        public_key: r.try_get(3)?,
        channel: r.try_get(4)?,
        groups: serde_json::from_str(&groups)?,
        labels: serde_json::from_str::<BTreeMap<String, String>>(&labels)?,
        revoked: r.try_get(7)?,
        enrolled_at: from_sql(r.try_get(8)?),
        last_seen: r.try_get::<_, Option<i64>>(9)?.map(from_sql),
        version: r.try_get(10)?,
        security_counter: r.try_get::<_, Option<i64>>(11)?.map(u32_sql),
        state: state.as_deref().map(parse_state).transpose()?,
    })
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

pub(super) fn deployment_row(r: &Row) -> StoreResult<Deployment> {
    let target: String = r.try_get(4)?;
    let policy: String = r.try_get(5)?;
    let state: String = r.try_get(7)?;
    Ok(Deployment {
        id: r.try_get(0)?,
        release_id: r.try_get(1)?,
        product: Product {
            vendor: r.try_get(2)?,
            device: r.try_get(3)?,
        },
        target: serde_json::from_str(&target)?,
        policy: serde_json::from_str(&policy)?,
        phase: usize::try_from(r.try_get::<_, i64>(6)?).unwrap_or(0),
        state: crate::rollout::DeploymentState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("unknown deployment state {state}")))?,
        devices: usize::try_from(r.try_get::<_, i64>(10)?).unwrap_or(0),
        created_at: from_sql(r.try_get(8)?),
        created_by: r.try_get(9)?,
    })
}

/// One deployment; `lock` takes its row lock until the transaction ends.
pub(super) fn load_deployment(
    c: &mut impl GenericClient,
    id: i64,
    lock: bool,
) -> StoreResult<Option<Deployment>> {
    load_deployment_st(c, &mut Stmts::uncached(), id, lock)
}

fn load_deployment_st(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    id: i64,
    lock: bool,
) -> StoreResult<Option<Deployment>> {
    let sql = format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE d.id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    st.query(c, &sql, &[(&id, Type::INT8)])?
        .first()
        .map(deployment_row)
        .transpose()
}

/// The audit head: sequence number and hash of the last entry.
pub(super) fn audit_head(c: &mut impl GenericClient) -> StoreResult<Option<(u64, String)>> {
    audit_head_st(c, &mut Stmts::uncached())
}

fn audit_head_st(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
) -> StoreResult<Option<(u64, String)>> {
    st.query(
        c,
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        &[],
    )?
    .first()
    .map(|r| Ok::<_, StoreError>((from_sql(r.try_get(0)?), r.try_get(1)?)))
    .transpose()
}

/// Appends an audit entry inside a write transaction (which holds the write lock, so the head
/// cannot move between the read and the insert).
pub(super) fn append(
    c: &mut impl GenericClient,
    event: &AuditEvent,
    now: u64,
) -> StoreResult<AuditEntry> {
    append_st(c, &mut Stmts::uncached(), event, now)
}

fn append_st(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    event: &AuditEvent,
    now: u64,
) -> StoreResult<AuditEntry> {
    let e = rules::next_entry(audit_head_st(c, st)?, event, now);
    let (seq, at) = (to_sql(e.seq), to_sql(e.at));
    st.query(
        c,
        "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            (&seq, Type::INT8),
            (&at, Type::INT8),
            (&e.actor, Type::TEXT),
            (&e.action, Type::TEXT),
            (&e.subject, Type::TEXT),
            (&e.detail, Type::TEXT),
            (&e.prev_hash, Type::TEXT),
            (&e.hash, Type::TEXT),
        ],
    )?;
    Ok(e)
}

/// Status counts over the devices admitted up to `phase`.
pub(super) fn phase_counts(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    id: i64,
    phase: usize,
) -> StoreResult<Counts> {
    let phase = i64::try_from(phase).unwrap_or(i64::MAX);
    let rows = st.query(
        c,
        "SELECT COALESCE(SUM(confirmed), 0)::BIGINT, COALESCE(SUM(failures), 0)::BIGINT, \
         COALESCE(SUM(open), 0)::BIGINT FROM rollout_counts WHERE deployment_id = $1 AND bucket <= $2",
        &[(&id, Type::INT8), (&phase, Type::INT8)],
    )?;
    let r = rows
        .first()
        .ok_or_else(|| StoreError::Backend("rollout counts: no row".to_owned()))?;
    let n = |v: i64| usize::try_from(v).unwrap_or(0);
    Ok(Counts {
        confirmed: n(r.try_get(0)?),
        failures: n(r.try_get(1)?),
        open: n(r.try_get(2)?),
    })
}

/// Re-evaluates an active rollout after a status change and records what changed.
pub(super) fn reevaluate(c: &mut impl GenericClient, id: i64, now: u64) -> StoreResult<()> {
    reevaluate_st(c, &mut Stmts::uncached(), id, now)
}

fn reevaluate_st(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    id: i64,
    now: u64,
) -> StoreResult<()> {
    let Some(dep) = load_deployment_st(c, st, id, true)? else {
        return Ok(());
    };
    let Some(t) = rules::reevaluate(&dep, |p| phase_counts(c, st, id, p))? else {
        return Ok(());
    };
    let phase = i64::try_from(t.phase).unwrap_or(i64::MAX);
    c.execute(
        "UPDATE deployments SET phase = $2, state = $3 WHERE id = $1",
        &[&id, &phase, &t.state.as_str()],
    )?;
    let counts = phase_counts(c, st, id, t.phase)?;
    append_st(c, st, &rules::transition_event(id, &t, counts), now)?;
    Ok(())
}

/// The member's status if the deployment's current phase admits the device.
pub(super) fn admitted_member(
    c: &mut impl GenericClient,
    deployment: i64,
    device_id: &str,
) -> StoreResult<Option<DeviceStatus>> {
    let Some(dep) = load_deployment(c, deployment, false)? else {
        return Ok(None);
    };
    let row = c.query_opt(
        "SELECT rank, status FROM members WHERE deployment_id = $1 AND device_id = $2",
        &[&deployment, &device_id],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (rank, status): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
    Ok(rules::is_admitted(&dep, rank)
        .then(|| DeviceStatus::parse(&status))
        .flatten())
}

/// Records one check-in inside the caller's write transaction (see
/// [`crate::store::CheckInStore::check_in`]).
pub(super) fn record_check_in(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    ci: &CheckIn,
    now: u64,
    keep: u32,
) -> StoreResult<Option<Assignment>> {
    // One round trip (prepared once per connection): the device's previous version and state
    // (its row locked, so that check-ins of one device are ordered), the report
    // (only for an enrolled device), the trim to the last `keep` reports (the new row is not
    // visible to the trim, so it keeps `keep - 1` older ones) and the device's new state.
    let counter = i64::from(ci.security_counter);
    let older = i64::from(keep.saturating_sub(1));
    let now_sql = to_sql(now);
    let state = ci.state.as_str();
    let previous = st.query(
        c,
        "WITH prev AS (SELECT version, state FROM devices WHERE id = $1 FOR NO KEY UPDATE), \
         ins AS (INSERT INTO reports \
             (device_id, at, version, security_counter, state, deployment_id, detail) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM prev)), \
         trim AS (DELETE FROM reports WHERE device_id = $1 AND id <= \
             (SELECT id FROM reports WHERE device_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $8)), \
         upd AS (UPDATE devices SET last_seen = $2, version = $3, security_counter = $4, \
             state = $5 WHERE id = $1) \
         SELECT version, state FROM prev",
        &[
            (&ci.device_id, Type::TEXT),
            (&now_sql, Type::INT8),
            (&ci.version, Type::TEXT),
            (&counter, Type::INT8),
            (&state, Type::TEXT),
            (&ci.deployment_id, Type::INT8),
            (&ci.detail, Type::TEXT),
            (&older, Type::INT8),
        ],
    )?;
    let Some(previous) = previous.first() else {
        return Err(StoreError::NotFound {
            what: "device",
            id: ci.device_id.clone(),
        });
    };
    let prev_version: Option<String> = previous.try_get(0)?;
    let prev_state: Option<String> = previous.try_get(1)?;
    let prev_state = prev_state.as_deref().map(parse_state).transpose()?;
    if let Some(event) = rules::report_event(ci, prev_version.as_deref(), prev_state) {
        st.need_lock()?;
        append_st(c, st, &event, now)?;
    }
    if let (Some(dep), Some(status)) = (ci.deployment_id, rules::reported_status(ci.state)) {
        st.need_lock()?;
        // Only a device its phase admitted reports for a deployment that is still open. The
        // deployment's row lock orders status changes of one rollout across replicas.
        let current = st.query(
            c,
            "SELECT m.status, m.bucket FROM members m JOIN deployments d ON d.id = m.deployment_id \
             WHERE m.deployment_id = $1 AND m.device_id = $2 AND m.bucket <= d.phase \
             AND d.state IN ('active', 'paused', 'halted') FOR UPDATE OF d, m",
            &[(&dep, Type::INT8), (&ci.device_id, Type::TEXT)],
        )?;
        if let Some(row) = current.first() {
            let (current, bucket): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            if current != status.as_str() {
                c.execute(
                    "UPDATE members SET status = $3, updated_at = $4 \
                     WHERE deployment_id = $1 AND device_id = $2",
                    &[&dep, &ci.device_id, &status.as_str(), &to_sql(now)],
                )?;
                let from = parse_status(&current)?;
                let (dec, inc) = (Counter::of(from).column(), Counter::of(status).column());
                if dec != inc {
                    // Column names come from `Counter`, never from input.
                    c.execute(
                        &format!(
                            "UPDATE rollout_counts SET {dec} = {dec} - 1, {inc} = {inc} + 1 \
                             WHERE deployment_id = $1 AND bucket = $2"
                        ),
                        &[&dep, &bucket],
                    )?;
                }
                append_st(
                    c,
                    st,
                    &rules::status_event(&ci.device_id, dep, from, status),
                    now,
                )?;
                reevaluate_st(c, st, dep, now)?;
            }
        }
    }
    assignment(c, st, &ci.device_id, ci.security_counter, now)
}

/// The newest active deployment that admits the device and that it has not finished (the same
/// rule as SQLite's).
pub(super) fn assignment(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    device_id: &str,
    security_counter: u32,
    now: u64,
) -> StoreResult<Option<Assignment>> {
    let counter = i64::from(security_counter);
    let now = to_sql(now);
    // One round trip: the candidates with the member's rank and status and the deployment.
    let rows = st.query(
        c,
        &format!(
            "SELECT {DEPLOYMENT_COLUMNS}, m.rank, m.status FROM deployments d \
             JOIN members m ON m.deployment_id = d.id JOIN releases r ON r.id = d.release_id \
             WHERE m.device_id = $1 AND d.state = 'active' AND NOT r.retired \
             AND (r.expires IS NULL OR r.expires > $3) AND r.security_counter >= $2 \
             AND m.status NOT IN ('confirmed', 'reverted', 'failed') ORDER BY d.id DESC"
        ),
        &[
            (&device_id, Type::TEXT),
            (&counter, Type::INT8),
            (&now, Type::INT8),
        ],
    )?;
    for row in rows {
        let dep = deployment_row(&row)?;
        let rank: i64 = row.try_get(11)?;
        let status: String = row.try_get(12)?;
        if !rules::is_admitted(&dep, rank) {
            continue;
        }
        let Some(status) = DeviceStatus::parse(&status) else {
            continue;
        };
        let r = st.query(
            c,
            &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"),
            &[(&dep.release_id, Type::TEXT)],
        )?;
        let release = r
            .first()
            .ok_or_else(|| StoreError::Backend(format!("release {} vanished", dep.release_id)))?;
        return Ok(Some(Assignment {
            deployment_id: dep.id,
            release: release_row(release)?,
            status,
        }));
    }
    Ok(None)
}
