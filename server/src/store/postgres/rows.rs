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

/// An audit row, read as `SELECT seq, at, actor, action, subject, detail, prev_hash, hash`.
pub(super) fn audit_entry(r: &Row) -> Result<AuditEntry, postgres::Error> {
    Ok(AuditEntry {
        seq: from_sql(r.try_get(0)?),
        at: from_sql(r.try_get(1)?),
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        subject: r.try_get(4)?,
        detail: r.try_get(5)?,
        prev_hash: r.try_get(6)?,
        hash: r.try_get(7)?,
    })
}

/// A stored 32-bit value (security counters, key set versions).
pub(super) fn u32_sql(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(super) const RELEASE_COLUMNS: &str =
    "id, vendor, device, component, version, security_counter, payload_size, \
     payload_digest, key_set_version, created, expires, size, uploaded_at, uploaded_by, retired";

/// [`RELEASE_COLUMNS`] of the table aliased `r`, for joins.
const RELEASE_COLUMNS_R: &str =
    "r.id, r.vendor, r.device, r.component, r.version, r.security_counter, r.payload_size, \
     r.payload_digest, r.key_set_version, r.created, r.expires, r.size, r.uploaded_at, \
     r.uploaded_by, r.retired";

pub(super) fn release_row(r: &Row) -> StoreResult<Release> {
    release_row_at(r, 0)
}

/// A release from [`RELEASE_COLUMNS`] starting at column `at`.
fn release_row_at(r: &Row, at: usize) -> StoreResult<Release> {
    Ok(Release {
        id: r.try_get(at)?,
        vendor: r.try_get(at + 1)?,
        device: r.try_get(at + 2)?,
        component: r.try_get(at + 3)?,
        version: r.try_get(at + 4)?,
        security_counter: u32_sql(r.try_get(at + 5)?),
        payload_size: from_sql(r.try_get(at + 6)?),
        payload_digest: r.try_get(at + 7)?,
        key_set_version: u32_sql(r.try_get(at + 8)?),
        created: from_sql(r.try_get(at + 9)?),
        expires: r.try_get::<_, Option<i64>>(at + 10)?.map(from_sql),
        size: from_sql(r.try_get(at + 11)?),
        uploaded_at: from_sql(r.try_get(at + 12)?),
        uploaded_by: r.try_get(at + 13)?,
        retired: r.try_get(at + 14)?,
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
    // One round trip (prepared once per connection): the device's previous version, state
    // and report number (its row locked, so that check-ins of one device are ordered), the
    // report (only for an enrolled device) numbered one higher, the trim to the newest `keep`
    // numbers and the device's new state.
    let counter = i64::from(ci.security_counter);
    let keep = i64::from(keep.max(1));
    let now_sql = to_sql(now);
    let state = ci.state.as_str();
    let previous = st.query(
        c,
        "WITH prev AS (SELECT version, state, reports_seq, reports_trimmed, \
             GREATEST(reports_seq + 1 - $8, reports_trimmed) AS cut \
             FROM devices WHERE id = $1 FOR NO KEY UPDATE), \
         ins AS (INSERT INTO reports \
             (device_id, seq, at, version, security_counter, state, deployment_id, detail) \
             SELECT $1, reports_seq + 1, $2, $3, $4, $5, $6, $7 FROM prev), \
         trim AS (DELETE FROM reports r USING prev WHERE r.device_id = $1 \
             AND r.seq > prev.reports_trimmed AND r.seq <= prev.cut), \
         upd AS (UPDATE devices d SET last_seen = $2, version = $3, security_counter = $4, \
             state = $5, reports_seq = d.reports_seq + 1, reports_trimmed = prev.cut \
             FROM prev WHERE d.id = $1) \
         SELECT version, state FROM prev",
        &[
            (&ci.device_id, Type::TEXT),
            (&now_sql, Type::INT8),
            (&ci.version, Type::TEXT),
            (&counter, Type::INT8),
            (&state, Type::TEXT),
            (&ci.deployment_id, Type::INT8),
            (&ci.detail, Type::TEXT),
            (&keep, Type::INT8),
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
    record_status(c, st, ci, now)?;
    assignment(c, st, &ci.device_id, ci.security_counter, now)
}

/// A check-in's report for a rollout: the member's new status, its phase counts, the audit
/// entry and the rollout's re-evaluation (under the write lock).
fn record_status(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    ci: &CheckIn,
    now: u64,
) -> StoreResult<()> {
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
    Ok(())
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
            &format!(
                "SELECT {RELEASE_COLUMNS}, EXISTS (SELECT 1 FROM encrypted_releases e \
                 WHERE e.release_id = releases.id) FROM releases WHERE id = $1"
            ),
            &[(&dep.release_id, Type::TEXT)],
        )?;
        let release = r
            .first()
            .ok_or_else(|| StoreError::Backend(format!("release {} vanished", dep.release_id)))?;
        return Ok(Some(Assignment {
            deployment_id: dep.id,
            encrypted: release.try_get(15)?,
            release: release_row(release)?,
            status,
        }));
    }
    Ok(None)
}

/// The outcome of each check-in of a batch, in the batch's order.
pub(super) type BatchResults = Vec<StoreResult<Option<Assignment>>>;

/// Records a batch of check-ins inside the caller's transaction with a few statements for
/// the whole group instead of a few per check-in (the same rows and decisions as
/// [`record_check_in`] for each, in `order`):
///
/// 1. the devices' previous versions and states, their rows locked in id order (so that two
///    batches sharing devices cannot deadlock, and check-ins of one device are ordered);
/// 2. the reports (each numbered one above its device's last), the trims to the newest `keep`
///    numbers per device and the devices' new state, one multi-row statement over arrays
///    (`unnest`);
/// 3. per check-in that changes something (a version or state change is audited; a report
///    for a rollout moves a member), the audit append and the rollout's step — these need the
///    write lock ([`Stmts::need_lock`]), checked before anything is written;
/// 4. the assignments, one statement (before step 1 when the transaction does not hold the
///    write lock, since then nothing in the round changes them).
///
/// `order` lists the batch's indices sorted by device id. A device that checks in twice in
/// one batch has its later check-ins recorded in a later round of the same steps, after the
/// earlier ones. An unknown device's check-in fails alone (found before anything is written).
pub(super) fn record_batch(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    batch: &[CheckIn],
    order: &[usize],
    now: u64,
    keep: u32,
) -> StoreResult<BatchResults> {
    let mut out: Vec<Option<StoreResult<Option<Assignment>>>> =
        (0..batch.len()).map(|_| None).collect();
    // Round k holds each device's k-th check-in of the batch (still in device id order).
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut k = 0;
    for (n, &i) in order.iter().enumerate() {
        let same = n > 0 && batch[order[n - 1]].device_id == batch[i].device_id;
        k = if same { k + 1 } else { 0 };
        if rounds.len() <= k {
            rounds.push(Vec::new());
        }
        rounds[k].push(i);
    }
    for round in &rounds {
        record_round(c, st, batch, round, now, keep, &mut out)?;
    }
    out.into_iter()
        .map(|r| {
            r.ok_or_else(|| {
                StoreError::Backend("a check-in of the batch went unanswered".to_owned())
            })
        })
        .collect()
}

/// A device's row as a check-in of a batch found it.
struct Previous {
    version: Option<String>,
    state: Option<CheckInState>,
    /// The number of the report the check-in adds (one above the device's last).
    seq: i64,
    /// Every report number up to this one is deleted.
    trimmed: i64,
}

/// One round of [`record_batch`]: each device at most once, in id order.
fn record_round(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    batch: &[CheckIn],
    round: &[usize],
    now: u64,
    keep: u32,
    out: &mut [Option<StoreResult<Option<Assignment>>>],
) -> StoreResult<()> {
    let ids: Vec<&str> = round.iter().map(|&i| batch[i].device_id.as_str()).collect();
    // Without the write lock the round changes no member and no deployment (one that would
    // stops below), so its assignments do not depend on its writes: read them before the
    // devices' rows are locked, which keeps the locks one statement shorter.
    let early = if st.locked {
        None
    } else {
        let counters: Vec<i64> = round
            .iter()
            .map(|&i| i64::from(batch[i].security_counter))
            .collect();
        Some(assignments(c, st, &ids, &counters, now)?)
    };
    let rows = st.query(
        c,
        "SELECT id, version, state, reports_seq, reports_trimmed FROM devices WHERE id = ANY($1) \
         ORDER BY id \
         FOR NO KEY UPDATE",
        &[(&ids, Type::TEXT_ARRAY)],
    )?;
    let mut previous: std::collections::HashMap<String, Previous> =
        std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        let state: Option<String> = r.try_get(2)?;
        let seq: i64 = r.try_get(3)?;
        let trimmed: i64 = r.try_get(4)?;
        previous.insert(
            r.try_get(0)?,
            Previous {
                version: r.try_get(1)?,
                state: state.as_deref().map(parse_state).transpose()?,
                // The number of the report this check-in adds.
                seq: seq.checked_add(1).ok_or_else(|| {
                    StoreError::Backend("a device's report number overflowed".to_owned())
                })?,
                trimmed,
            },
        );
    }
    // What each known device's check-in changes, decided before anything is written: without
    // the write lock, a batch that needs it stops here and runs again under it.
    let mut known = Vec::with_capacity(round.len());
    let mut seqs: Vec<i64> = Vec::with_capacity(round.len());
    // Per device, the trim deletes the numbers in (trimmed, cut]: those `keep` or more below
    // the new report, above the ones deleted before.
    let mut trimmed: Vec<i64> = Vec::with_capacity(round.len());
    let mut cuts: Vec<i64> = Vec::with_capacity(round.len());
    let keep = i64::from(keep.max(1));
    let mut events = Vec::new();
    for &i in round {
        let ci = &batch[i];
        let Some(prev) = previous.get(&ci.device_id) else {
            out[i] = Some(Err(StoreError::NotFound {
                what: "device",
                id: ci.device_id.clone(),
            }));
            continue;
        };
        let event = rules::report_event(ci, prev.version.as_deref(), prev.state);
        let reports_status =
            ci.deployment_id.is_some() && rules::reported_status(ci.state).is_some();
        if event.is_some() || reports_status {
            st.need_lock()?;
            events.push((i, event));
        }
        known.push(i);
        seqs.push(prev.seq);
        trimmed.push(prev.trimmed);
        cuts.push(prev.seq.saturating_sub(keep).max(prev.trimmed));
    }
    if known.is_empty() {
        return Ok(());
    }
    let devices: Vec<&str> = known.iter().map(|&i| batch[i].device_id.as_str()).collect();
    let versions: Vec<&str> = known.iter().map(|&i| batch[i].version.as_str()).collect();
    let counters: Vec<i64> = known
        .iter()
        .map(|&i| i64::from(batch[i].security_counter))
        .collect();
    let states: Vec<&str> = known.iter().map(|&i| batch[i].state.as_str()).collect();
    let deployments: Vec<Option<i64>> = known.iter().map(|&i| batch[i].deployment_id).collect();
    let details: Vec<Option<&str>> = known.iter().map(|&i| batch[i].detail.as_deref()).collect();
    let now_sql = to_sql(now);
    // Each report carries its device's next number; the trim deletes the device's numbers in
    // (trimmed, cut] (one index range per device holding only the rows that go, none deleted
    // before) and the device remembers `cut`. The newest number to go is found per device by
    // a lateral probe of the index: its ORDER BY and LIMIT keep the plan on the index however
    // small the table was when the connection planned the statement (a plain join, planned
    // while `reports` was nearly empty, went on scanning the whole table once it had grown).
    st.query(
        c,
        "WITH i AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], \
             $5::BIGINT[], $6::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[]) \
             AS i (device_id, version, security_counter, state, deployment_id, detail, seq, \
             trimmed, cut)), \
         ins AS (INSERT INTO reports \
             (device_id, seq, at, version, security_counter, state, deployment_id, detail) \
             SELECT device_id, seq, $7, version, security_counter, state, deployment_id, detail \
             FROM i), \
         trim AS (DELETE FROM reports r USING i CROSS JOIN LATERAL (SELECT x.seq FROM reports x \
             WHERE x.device_id = i.device_id AND x.seq > i.trimmed AND x.seq <= i.cut \
             ORDER BY x.seq DESC LIMIT 1) cut \
             WHERE r.device_id = i.device_id AND r.seq > i.trimmed AND r.seq <= cut.seq) \
         UPDATE devices d SET last_seen = $7, version = i.version, \
             security_counter = i.security_counter, state = i.state, reports_seq = i.seq, \
             reports_trimmed = i.cut \
         FROM i WHERE d.id = i.device_id",
        &[
            (&devices, Type::TEXT_ARRAY),
            (&versions, Type::TEXT_ARRAY),
            (&counters, Type::INT8_ARRAY),
            (&states, Type::TEXT_ARRAY),
            (&deployments, Type::INT8_ARRAY),
            (&details, Type::TEXT_ARRAY),
            (&now_sql, Type::INT8),
            (&seqs, Type::INT8_ARRAY),
            (&trimmed, Type::INT8_ARRAY),
            (&cuts, Type::INT8_ARRAY),
        ],
    )?;
    for (i, event) in events {
        if let Some(event) = event {
            append_st(c, st, &event, now)?;
        }
        record_status(c, st, &batch[i], now)?;
    }
    let mut found = match early {
        Some(found) => found,
        None => assignments(c, st, &devices, &counters, now)?,
    };
    for i in known {
        out[i] = Some(Ok(found.remove(batch[i].device_id.as_str())));
    }
    Ok(())
}

/// [`assignment`] for several devices (each at most once) in one statement.
fn assignments(
    c: &mut impl GenericClient,
    st: &mut Stmts<'_>,
    devices: &[&str],
    counters: &[i64],
    now: u64,
) -> StoreResult<std::collections::HashMap<String, Assignment>> {
    let now = to_sql(now);
    let rows = st.query(
        c,
        &format!(
            "SELECT {DEPLOYMENT_COLUMNS}, m.device_id, m.rank, m.status, {RELEASE_COLUMNS_R}, \
             EXISTS (SELECT 1 FROM encrypted_releases e WHERE e.release_id = r.id) \
             FROM unnest($1::TEXT[], $2::BIGINT[]) AS i (device_id, security_counter) \
             JOIN members m ON m.device_id = i.device_id \
             JOIN deployments d ON d.id = m.deployment_id JOIN releases r ON r.id = d.release_id \
             WHERE d.state = 'active' AND NOT r.retired \
             AND (r.expires IS NULL OR r.expires > $3) AND r.security_counter >= i.security_counter \
             AND m.status NOT IN ('confirmed', 'reverted', 'failed') \
             ORDER BY m.device_id, d.id DESC"
        ),
        &[
            (&devices, Type::TEXT_ARRAY),
            (&counters, Type::INT8_ARRAY),
            (&now, Type::INT8),
        ],
    )?;
    let mut out = std::collections::HashMap::new();
    for row in rows {
        let device: String = row.try_get(11)?;
        if out.contains_key(&device) {
            continue;
        }
        let dep = deployment_row(&row)?;
        let rank: i64 = row.try_get(12)?;
        if !rules::is_admitted(&dep, rank) {
            continue;
        }
        let status: String = row.try_get(13)?;
        let Some(status) = DeviceStatus::parse(&status) else {
            continue;
        };
        let release = release_row_at(&row, 14)?;
        out.insert(
            device,
            Assignment {
                deployment_id: dep.id,
                release,
                status,
                encrypted: row.try_get(29)?,
            },
        );
    }
    Ok(out)
}
