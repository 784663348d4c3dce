//! [`crate::store::DeviceStore`] on SQLite.

use super::rows::*;
use super::SqliteStore;
use rusqlite::{params, OptionalExtension};

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
        let rows = filtered_list(
            &*self.reader()?,
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices \
                 WHERE (?3 IS NULL OR vendor = ?3) AND (?4 IS NULL OR device = ?4) \
                   AND (?5 IS NULL OR channel = ?5) \
                   AND (?6 IS NULL OR EXISTS \
                        (SELECT 1 FROM json_each(devices.groups) WHERE value = ?6)) \
                   AND (?7 IS NULL OR state = ?7) AND (?8 IS NULL OR revoked = ?8) \
                 ORDER BY id LIMIT ?1 OFFSET ?2"
            ),
            page,
            filter.product.as_ref(),
            &[
                &filter.channel,
                &filter.group,
                &filter.state.map(CheckInState::as_str),
                &filter.revoked,
            ],
            device_row,
        )?;
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
