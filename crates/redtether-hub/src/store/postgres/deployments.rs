//! Deployments, snapshots and SBOMs. A device's next deployment number comes from the upsert of
//! its `deploy_numbers` row, whose lock (held to commit) orders two deployments made at once;
//! the pending ones it supersedes are changed in the same transaction.

use super::super::census::deploy_state_name;
use super::super::domain::{Deployments, Devices};
use super::super::{DeploymentRecord, SnapshotRecord, StoreError};
use super::{PgStore, from_json, to_i64, to_json};
use redtether_proto::wire::DeployState;

impl Deployments for PgStore {
    fn create_deployment(
        &self,
        device: &str,
        make: Box<dyn FnOnce(u64) -> DeploymentRecord + Send + '_>,
    ) -> Result<DeploymentRecord, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let number: i64 = tx
                .query_one(
                    "INSERT INTO deploy_numbers (device, last) VALUES ($1, 1)
                     ON CONFLICT (device) DO UPDATE SET last = deploy_numbers.last + 1
                     RETURNING last",
                    &[&device],
                )
                .await?
                .get(0);
            let record = make(super::to_u64(number));
            let pending = tx
                .query(
                    "SELECT record FROM deployments WHERE device = $1 AND state = $2 FOR UPDATE",
                    &[&device, &deploy_state_name(DeployState::Pending)],
                )
                .await?;
            for row in pending {
                let mut older: DeploymentRecord = from_json(row.get(0))?;
                older.supersede(&record.id, record.created);
                write(&tx, &older).await?;
            }
            write(&tx, &record).await?;
            tx.commit().await?;
            Ok(record)
        })
    }

    fn deployments(&self, device: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT record FROM deployments WHERE device = $1 ORDER BY number", &[&device])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn deployment(&self, device: &str, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM deployments WHERE device = $1 AND id = $2", &[&device, &id])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn deployment_to_send(&self, device: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM deployments WHERE device = $1 ORDER BY number DESC LIMIT 1", &[&device])
                .await
                .map_err(StoreError::from)
        })?;
        let newest: Option<DeploymentRecord> = row.map(|r| from_json(r.get(0))).transpose()?;
        Ok(newest.filter(|d| !d.state.is_final()))
    }

    fn update_deployment(
        &self,
        device: &str,
        id: &str,
        state: DeployState,
        detail: serde_json::Value,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt("SELECT record FROM deployments WHERE device = $1 AND id = $2 FOR UPDATE", &[&device, &id])
                .await?
            else {
                return Ok(false);
            };
            let mut record: DeploymentRecord = from_json(row.get(0))?;
            if !record.report(state, detail, now) {
                return Ok(false);
            }
            write(&tx, &record).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn add_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO snapshots (id, device, created, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET device = excluded.device, created = excluded.created,
                       record = excluded.record",
                    &[&record.id, &record.device, &to_i64(record.created), &to_json(record)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn snapshot_by_id(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM snapshots WHERE id = $1", &[&id])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn snapshots(&self, device: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT record FROM snapshots WHERE device = $1 ORDER BY created, id", &[&device])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn snapshot(&self, device: &str, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        Ok(self.snapshot_by_id(id)?.filter(|s| s.device == device))
    }

    fn put_sbom(&self, device: &str, sbom: &serde_json::Value) -> Result<(), StoreError> {
        self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO sboms (device, sbom) VALUES ($1, $2)
                     ON CONFLICT (device) DO UPDATE SET sbom = excluded.sbom",
                    &[&device, sbom],
                )
                .await
                .map_err(StoreError::from)
        })?;
        // Kept with the device, so the fleet's lists need not read every SBOM.
        let outdated = crate::sbom_view::outdated_count(sbom);
        self.modify_device(device, &|d| d.sbom_outdated = Some(outdated))?;
        Ok(())
    }

    fn sbom(&self, device: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT sbom FROM sboms WHERE device = $1", &[&device])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(row.map(|r| r.get(0)))
    }
}

async fn write(tx: &deadpool_postgres::Transaction<'_>, record: &DeploymentRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO deployments (device, number, id, state, record) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device, number) DO UPDATE SET id = excluded.id, state = excluded.state, record = excluded.record",
        &[&record.device, &to_i64(record.number), &record.id, &deploy_state_name(record.state), &to_json(record)],
    )
    .await?;
    Ok(())
}
