//! [`crate::store::DeviceStore`] on PostgreSQL.

use super::rows::*;
use super::PgStore;
use crate::store::*;

impl DeviceStore for PgStore {
    fn enrol_device(&self, device: &Device, audit: &AuditEvent) -> StoreResult<()> {
        let groups = serde_json::to_string(&device.groups)?;
        let labels = serde_json::to_string(&device.labels)?;
        self.with_tx(|tx| {
            let n = tx.execute(
                "INSERT INTO devices (id, vendor, device, public_key, channel, groups, labels, \
                 revoked, enrolled_at) VALUES ($1, $2, $3, $4, $5, $6::TEXT::JSONB, \
                 $7::TEXT::JSONB, FALSE, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &device.id,
                    &device.product.vendor,
                    &device.product.device,
                    &device.public_key,
                    &device.channel,
                    &groups,
                    &labels,
                    &to_sql(device.enrolled_at),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "device {} is already enrolled",
                    device.id
                )));
            }
            append(tx, audit, device.enrolled_at)?;
            Ok(())
        })
    }

    fn device(&self, id: &str) -> StoreResult<Option<Device>> {
        let mut c = self.conn()?;
        c.query_opt(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"),
            &[&id],
        )?
        .map(|r| device_row(&r))
        .transpose()
    }

    fn devices(&self, filter: &DeviceFilter, page: Page) -> StoreResult<Vec<Device>> {
        let (cond, mut args) = device_where(filter, 3);
        args.splice(
            0..0,
            [
                Box::new(i64::from(page.limit)) as Arg,
                Box::new(to_sql(page.offset)),
            ],
        );
        let mut c = self.conn()?;
        let rows = c.query(
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE {cond} ORDER BY id LIMIT $1 OFFSET $2"
            ),
            &refs(&args),
        )?;
        rows.iter().map(device_row).collect()
    }

    fn device_counts(&self, filter: &DeviceFilter) -> StoreResult<DeviceCounts> {
        let (cond, args) = device_where(filter, 1);
        let mut c = self.conn()?;
        let mut per = |column: &str| -> StoreResult<Vec<(Option<String>, u64)>> {
            let rows = c.query(
                &format!(
                    "SELECT {column}, COUNT(*) FROM devices WHERE {cond} \
                     GROUP BY {column} ORDER BY {column}"
                ),
                &refs(&args),
            )?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, from_sql(r.try_get(1)?))))
                .collect()
        };
        let by_state = per("state")?
            .into_iter()
            .map(|(s, n)| Ok((s.as_deref().map(parse_state).transpose()?, n)))
            .collect::<StoreResult<Vec<_>>>()?;
        let by_version = per("version")?;
        Ok(DeviceCounts {
            total: by_state.iter().map(|(_, n)| n).sum(),
            by_state,
            by_version,
        })
    }

    fn recent_failures(&self, filter: &DeviceFilter, limit: u32) -> StoreResult<Vec<Device>> {
        let (cond, mut args) = device_where(filter, 2);
        args.insert(0, Box::new(i64::from(limit)));
        let mut c = self.conn()?;
        let rows = c.query(
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE {cond} \
                   AND state IN ('failed', 'reverted') \
                 ORDER BY last_seen DESC NULLS LAST, id LIMIT $1"
            ),
            &refs(&args),
        )?;
        rows.iter().map(device_row).collect()
    }

    fn revoke_device(&self, id: &str, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let revoked: Option<bool> = tx
                .query_opt("SELECT revoked FROM devices WHERE id = $1", &[&id])?
                .map(|r| r.try_get(0))
                .transpose()?;
            match revoked {
                None => {
                    return Err(StoreError::NotFound {
                        what: "device",
                        id: id.to_owned(),
                    })
                }
                Some(true) => {
                    return Err(StoreError::Conflict(format!(
                        "device {id} is already revoked"
                    )))
                }
                Some(false) => {}
            }
            tx.execute("UPDATE devices SET revoked = TRUE WHERE id = $1", &[&id])?;
            tx.execute("DELETE FROM tokens WHERE device_id = $1", &[&id])?;
            append(tx, audit, now_secs())?;
            Ok(())
        })
    }
}

pub(super) type Arg = Box<dyn ::postgres::types::ToSql + Sync>;

pub(super) fn refs(args: &[Arg]) -> Vec<&(dyn ::postgres::types::ToSql + Sync)> {
    args.iter().map(|a| &**a).collect()
}

/// The `WHERE` condition of `filter` (`TRUE` when it has none) and its parameters, numbered
/// from `$first` on.
pub(super) fn device_where(filter: &DeviceFilter, first: usize) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut arg = |v: Arg| {
        args.push(v);
        format!("${}", first + args.len() - 1)
    };
    let parts: Vec<String> = filter
        .conditions()
        .into_iter()
        .map(|c| match c {
            DeviceCondition::Is(column, v) => {
                format!("{column} = {}::TEXT", arg(Box::new(v.to_owned())))
            }
            DeviceCondition::Revoked(r) => format!("revoked = {}", arg(Box::new(r))),
            DeviceCondition::OneOf(column, vs) => {
                format!("{column} = ANY({}::TEXT[])", arg(Box::new(vs.to_vec())))
            }
            DeviceCondition::ProductOneOf(ps) => {
                let each: Vec<String> = ps
                    .iter()
                    .map(|p| {
                        let v = arg(Box::new(p.vendor.clone()));
                        let d = arg(Box::new(p.device.clone()));
                        format!("(vendor = {v}::TEXT AND device = {d}::TEXT)")
                    })
                    .collect();
                format!("({})", each.join(" OR "))
            }
            DeviceCondition::InAnyGroup(gs) => {
                format!("groups ?| {}::TEXT[]", arg(Box::new(gs.to_vec())))
            }
        })
        .collect();
    let cond = if parts.is_empty() {
        "TRUE".to_owned()
    } else {
        parts.join(" AND ")
    };
    (cond, args)
}
