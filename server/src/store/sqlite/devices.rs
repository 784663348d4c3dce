//! [`crate::store::DeviceStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};

use crate::store::*;

impl DeviceStore for SqliteStore {
    fn enrol_device(&self, device: &Device, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO devices (id, vendor, device, public_key, channel, groups, labels, \
                 revoked, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
                params![
                    device.id,
                    device.product.vendor,
                    device.product.device,
                    device.public_key,
                    device.channel,
                    serde_json::to_string(&device.groups)?,
                    serde_json::to_string(&device.labels)?,
                    to_sql(device.enrolled_at)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("device {} is already enrolled", device.id)));
            }
            append(tx, audit, device.enrolled_at)?;
            Ok(())
        })
    }

    fn device(&self, id: &str) -> StoreResult<Option<Device>> {
        let conn = self.reader()?;
        let row = conn
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
            ))?
            .query_row([id], device_row)
            .optional()?;
        row.map(finish_device).transpose()
    }

    fn devices(&self, filter: &DeviceFilter, page: Page) -> StoreResult<Vec<Device>> {
        let (cond, mut args) = device_where(filter, 3);
        args.splice(
            0..0,
            [
                Value::Integer(i64::from(page.limit)),
                Value::Integer(to_sql(page.offset)),
            ],
        );
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE {cond} ORDER BY id LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = stmt
            .query_map(params_from_iter(args), device_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(finish_device).collect()
    }

    fn device_counts(&self, filter: &DeviceFilter) -> StoreResult<DeviceCounts> {
        let (cond, args) = device_where(filter, 1);
        let conn = self.reader()?;
        let per = |column: &str| -> StoreResult<Vec<(Option<String>, u64)>> {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {column}, COUNT(*) FROM devices WHERE {cond} \
                 GROUP BY {column} ORDER BY {column}"
            ))?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, from_sql(r.get(1)?)))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
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
        args.insert(0, Value::Integer(i64::from(limit)));
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE {cond} \
               AND state IN ('failed', 'reverted') \
             ORDER BY last_seen DESC, id LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map(params_from_iter(args), device_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(finish_device).collect()
    }

    fn revoke_device(&self, id: &str, audit: &AuditEvent) -> StoreResult<()> {
        self.with_tx(|tx| {
            let exists: Option<bool> = tx
                .query_row("SELECT revoked FROM devices WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            match exists {
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
            tx.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM tokens WHERE device_id = ?1", [id])?;
            append(tx, audit, now_secs())?;
            Ok(())
        })
    }
}

/// The `WHERE` condition of `filter` (`1` when it has none) and its parameters, numbered
/// from `?first` on.
pub(super) fn device_where(filter: &DeviceFilter, first: usize) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        args.push(v);
        format!("?{}", first + args.len() - 1)
    };
    let text = |vs: &[String], arg: &mut dyn FnMut(Value) -> String| {
        vs.iter()
            .map(|v| arg(Value::Text(v.clone())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let parts: Vec<String> = filter
        .conditions()
        .into_iter()
        .map(|c| match c {
            DeviceCondition::Is(column, v) => format!("{column} = {}", arg(Value::Text(v.into()))),
            DeviceCondition::Revoked(r) => format!("revoked = {}", arg(Value::Integer(r.into()))),
            DeviceCondition::OneOf(column, vs) => format!("{column} IN ({})", text(vs, &mut arg)),
            DeviceCondition::ProductOneOf(ps) => {
                let each: Vec<String> = ps
                    .iter()
                    .map(|p| {
                        let v = arg(Value::Text(p.vendor.clone()));
                        let d = arg(Value::Text(p.device.clone()));
                        format!("(vendor = {v} AND device = {d})")
                    })
                    .collect();
                format!("({})", each.join(" OR "))
            }
            DeviceCondition::InAnyGroup(gs) => format!(
                "EXISTS (SELECT 1 FROM json_each(devices.groups) WHERE value IN ({}))",
                text(gs, &mut arg)
            ),
        })
        .collect();
    let cond = if parts.is_empty() {
        "1".to_owned()
    } else {
        parts.join(" AND ")
    };
    (cond, args)
}
