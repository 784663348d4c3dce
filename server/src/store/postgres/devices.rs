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
        let mut c = self.conn()?;
        let vendor = filter.product.as_ref().map(|p| p.vendor.as_str());
        let device = filter.product.as_ref().map(|p| p.device.as_str());
        let state = filter.state.map(CheckInState::as_str);
        let rows = c.query(
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices \
                 WHERE ($3::TEXT IS NULL OR vendor = $3) AND ($4::TEXT IS NULL OR device = $4) \
                   AND ($5::TEXT IS NULL OR channel = $5) \
                   AND ($6::TEXT IS NULL OR groups ? $6) \
                   AND ($7::TEXT IS NULL OR state = $7) \
                   AND ($8::BOOLEAN IS NULL OR revoked = $8) \
                 ORDER BY id LIMIT $1 OFFSET $2"
            ),
            &[
                &i64::from(page.limit),
                &to_sql(page.offset),
                &vendor,
                &device,
                &filter.channel,
                &filter.group,
                &state,
                &filter.revoked,
            ],
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
