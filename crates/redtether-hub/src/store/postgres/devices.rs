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

/// A record's columns in [`COLUMNS`] order, as the database takes them.
struct Columns<'a> {
    record: &'a DeviceRecord,
    enrolled: i64,
    cert_not_after: i64,
    last_seen: Option<i64>,
    status: Option<serde_json::Value>,
    audit_acked: i64,
    audit_duplicates: i64,
    sbom_outdated: Option<i32>,
}

impl<'a> Columns<'a> {
    fn of(record: &'a DeviceRecord) -> Columns<'a> {
        Columns {
            record,
            enrolled: to_i64(record.enrolled),
            cert_not_after: to_i64(record.cert_not_after),
            last_seen: record.last_seen.map(to_i64),
            status: record.status.as_ref().map(|s| serde_json::to_value(s).expect("a status always encodes")),
            audit_acked: to_i64(record.audit_acked),
            audit_duplicates: to_i64(record.audit_duplicates),
            sbom_outdated: record.sbom_outdated.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }

    /// $1 … $14.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let r = self.record;
        vec![
            &r.id,
            &self.enrolled,
            &r.cert_serial,
            &self.cert_not_after,
            &r.revoked,
            &self.last_seen,
            &r.agent_version,
            &self.status,
            &r.previous_serial,
            &self.audit_acked,
            &self.audit_duplicates,
            &r.device_key,
            &self.sbom_outdated,
            &r.group,
        ]
    }
}

/// `SET` of every column but the id from $2 … $14, and a new version.
const SET_COLUMNS: &str = "enrolled = $2, cert_serial = $3, cert_not_after = $4, revoked = $5, last_seen = $6,
    agent_version = $7, status = $8, previous_serial = $9, audit_acked = $10, audit_duplicates = $11,
    device_key = $12, sbom_outdated = $13, device_group = $14";

/// Writes every column of `record` (its id names the row).
pub(super) async fn write(
    client: &impl deadpool_postgres::GenericClient,
    record: &DeviceRecord,
) -> Result<(), StoreError> {
    let columns = Columns::of(record);
    let sql = format!(
        "INSERT INTO devices ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET {SET_COLUMNS}, version = devices.version + 1"
    );
    client.execute(&sql, &columns.params()).await?;
    Ok(())
}

/// Writes `record` over its row if the row is still at `version`; whether it was.
async fn rewrite(
    client: &impl deadpool_postgres::GenericClient,
    record: &DeviceRecord,
    version: i64,
) -> Result<bool, StoreError> {
    let columns = Columns::of(record);
    let mut params = columns.params();
    params.push(&version);
    let sql = format!("UPDATE devices SET {SET_COLUMNS}, version = version + 1 WHERE id = $1 AND version = $15");
    Ok(client.execute(&sql, &params).await? == 1)
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
            write(&tx, &DeviceRecord::enrolled(device_id, cert_serial, cert_not_after, device_key, now)).await?;
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
