//! Devices and their certificates, one row each. A change to a device's record reads the row and
//! writes it back only if no one changed it since (its `version`), reading again otherwise: two
//! round trips, no transaction held open, and changes made at once by two hubs both stay.

use super::super::domain::Devices;
use super::super::{DeviceRecord, StoreError};
use super::{PgStore, to_i64, to_u64};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

const COLUMNS: &str = "id, enrolled, cert_serial, cert_not_after, revoked, last_seen, agent_version, status, \
                       previous_serial, audit_acked, audit_duplicates, device_key, sbom_outdated, device_group";

fn from_row(row: &Row) -> Result<DeviceRecord, StoreError> {
    let status: Option<serde_json::Value> = row.get("status");
    Ok(DeviceRecord {
        id: row.get("id"),
        enrolled: to_u64(row.get("enrolled")),
        cert_serial: row.get("cert_serial"),
        cert_not_after: to_u64(row.get("cert_not_after")),
        revoked: row.get("revoked"),
        last_seen: row.get::<_, Option<i64>>("last_seen").map(to_u64),
        agent_version: row.get("agent_version"),
        status: status.map(serde_json::from_value).transpose().map_err(StoreError::Corrupt)?,
        previous_serial: row.get("previous_serial"),
        audit_acked: to_u64(row.get("audit_acked")),
        audit_duplicates: to_u64(row.get("audit_duplicates")),
        device_key: row.get("device_key"),
        sbom_outdated: row.get::<_, Option<i32>>("sbom_outdated").map(|n| n.max(0) as u32),
        group: row.get("device_group"),
    })
}

/// Writes every column of `record` (its id names the row).
pub(super) async fn write(
    client: &impl deadpool_postgres::GenericClient,
    record: &DeviceRecord,
) -> Result<(), StoreError> {
    let status = record.status.as_ref().map(|s| serde_json::to_value(s).expect("a status always encodes"));
    let values: [&(dyn ToSql + Sync); 14] = [
        &record.id,
        &to_i64(record.enrolled),
        &record.cert_serial,
        &to_i64(record.cert_not_after),
        &record.revoked,
        &record.last_seen.map(to_i64),
        &record.agent_version,
        &status,
        &record.previous_serial,
        &to_i64(record.audit_acked),
        &to_i64(record.audit_duplicates),
        &record.device_key,
        &record.sbom_outdated.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        &record.group,
    ];
    client
        .execute(
            &format!(
                "INSERT INTO devices ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (id) DO UPDATE SET enrolled = excluded.enrolled, cert_serial = excluded.cert_serial,
                   cert_not_after = excluded.cert_not_after, revoked = excluded.revoked,
                   last_seen = excluded.last_seen, agent_version = excluded.agent_version,
                   status = excluded.status, previous_serial = excluded.previous_serial,
                   audit_acked = excluded.audit_acked, audit_duplicates = excluded.audit_duplicates,
                   device_key = excluded.device_key, sbom_outdated = excluded.sbom_outdated,
                   device_group = excluded.device_group, version = devices.version + 1"
            ),
            &values,
        )
        .await?;
    Ok(())
}

/// Writes `record` over its row if the row is still at `version`; whether it was.
async fn rewrite(
    client: &impl deadpool_postgres::GenericClient,
    record: &DeviceRecord,
    version: i64,
) -> Result<bool, StoreError> {
    let status = record.status.as_ref().map(|s| serde_json::to_value(s).expect("a status always encodes"));
    let values: [&(dyn ToSql + Sync); 15] = [
        &record.id,
        &version,
        &to_i64(record.enrolled),
        &record.cert_serial,
        &to_i64(record.cert_not_after),
        &record.revoked,
        &record.last_seen.map(to_i64),
        &record.agent_version,
        &status,
        &record.previous_serial,
        &to_i64(record.audit_acked),
        &to_i64(record.audit_duplicates),
        &record.device_key,
        &record.sbom_outdated.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        &record.group,
    ];
    let written = client
        .execute(
            "UPDATE devices SET enrolled = $3, cert_serial = $4, cert_not_after = $5, revoked = $6, last_seen = $7,
               agent_version = $8, status = $9, previous_serial = $10, audit_acked = $11, audit_duplicates = $12,
               device_key = $13, sbom_outdated = $14, device_group = $15, version = version + 1
             WHERE id = $1 AND version = $2",
            &values,
        )
        .await?;
    Ok(written == 1)
}

impl Devices for PgStore {
    fn enroll_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO revoked_certificates (serial, device)
                 SELECT cert_serial, id FROM devices WHERE id = $1
                 ON CONFLICT (serial) DO NOTHING",
                &[&device_id],
            )
            .await?;
            let record = DeviceRecord {
                id: device_id.to_string(),
                enrolled: now,
                cert_serial: cert_serial.to_string(),
                cert_not_after,
                revoked: false,
                last_seen: None,
                agent_version: None,
                status: None,
                previous_serial: None,
                audit_acked: 0,
                audit_duplicates: 0,
                device_key: Some(device_key.to_string()),
                sbom_outdated: None,
                group: None,
            };
            write(&tx, &record).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn renew_device(
        &self,
        device_id: &str,
        cert_serial: &str,
        cert_not_after: u64,
        device_key: &str,
    ) -> Result<(), StoreError> {
        self.wait(async {
            self.client()
                .await?
                .execute(
                    "UPDATE devices SET previous_serial = cert_serial, cert_serial = $2, cert_not_after = $3,
                       device_key = $4, version = version + 1
                     WHERE id = $1",
                    &[&device_id, &cert_serial, &to_i64(cert_not_after), &device_key],
                )
                .await?;
            Ok(())
        })
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.wait(async {
            let row =
                self.client().await?.query_opt(&format!("SELECT {COLUMNS} FROM devices WHERE id = $1"), &[&id]).await?;
            row.as_ref().map(from_row).transpose()
        })
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.wait(async {
            let rows = self.client().await?.query(&format!("SELECT {COLUMNS} FROM devices ORDER BY id"), &[]).await?;
            rows.iter().map(from_row).collect()
        })
    }

    fn modify_device(
        &self,
        id: &str,
        change: &(dyn for<'r> Fn(&'r mut DeviceRecord) + Send + Sync),
    ) -> Result<Option<DeviceRecord>, StoreError> {
        self.wait(async {
            let client = self.soft_client().await?;
            loop {
                let Some(row) =
                    client.query_opt(&format!("SELECT {COLUMNS}, version FROM devices WHERE id = $1"), &[&id]).await?
                else {
                    return Ok(None);
                };
                let version: i64 = row.get("version");
                let mut record = from_row(&row)?;
                change(&mut record);
                // The row is the one read, whatever the change did to the id.
                record.id = id.to_string();
                if rewrite(&client, &record, version).await? {
                    return Ok(Some(record));
                }
            }
        })
    }

    fn revoke_device(&self, id: &str) -> Result<String, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "UPDATE devices SET revoked = true, version = version + 1 WHERE id = $1 RETURNING cert_serial",
                    &[&id],
                )
                .await?
            else {
                return Err(StoreError::Conflict(format!("no device {id:?}")));
            };
            let serial: String = row.get(0);
            tx.execute(
                "INSERT INTO revoked_certificates (serial, device) VALUES ($1, $2) ON CONFLICT (serial) DO NOTHING",
                &[&serial, &id],
            )
            .await?;
            tx.commit().await?;
            Ok(serial)
        })
    }

    fn revoked_serials(&self) -> Result<Vec<String>, StoreError> {
        self.wait(async {
            let rows =
                self.client().await?.query("SELECT serial FROM revoked_certificates ORDER BY serial", &[]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}
