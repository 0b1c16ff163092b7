//! Device groups, rollouts and pipelines. Membership is the device's `device_group` column;
//! group changes take one advisory lock (transaction-scoped, shared by every hub), as the
//! embedded store takes one mutex: a device cannot be moved into a group being deleted.

use super::super::domain::Groups;
use super::super::groups::membership_change;
use super::super::{GroupRecord, MembershipChange, PipelineRecord, StoreError};
use super::{PgStore, from_json, to_json};
use crate::rollout::Rollout;

/// The advisory lock of group membership and existence ("rtgr" as a number).
const GROUP_LOCK: i64 = 0x7274_6772;

impl PgStore {
    async fn read_group(
        client: &impl deadpool_postgres::GenericClient,
        name: &str,
    ) -> Result<Option<GroupRecord>, StoreError> {
        let row = client.query_opt("SELECT record FROM device_groups WHERE name = $1", &[&name]).await?;
        row.map(|r| from_json(r.get(0))).transpose()
    }
}

impl Groups for PgStore {
    fn create_group(&self, record: &GroupRecord) -> Result<(), StoreError> {
        let made = self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO device_groups (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&record.name, &to_json(record)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        if made == 0 {
            return Err(StoreError::Conflict(format!("a group named {:?} exists", record.name)));
        }
        Ok(())
    }

    fn group(&self, name: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.wait(async { Self::read_group(&self.client().await?, name).await })
    }

    fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT record FROM device_groups ORDER BY name", &[])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn modify_group(
        &self,
        name: &str,
        change: &mut (dyn for<'r> FnMut(&'r mut GroupRecord) + Send),
    ) -> Result<Option<GroupRecord>, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(row) =
                tx.query_opt("SELECT record FROM device_groups WHERE name = $1 FOR UPDATE", &[&name]).await?
            else {
                return Ok(None);
            };
            let mut record: GroupRecord = from_json(row.get(0))?;
            change(&mut record);
            record.name = name.to_string();
            tx.execute("UPDATE device_groups SET record = $2 WHERE name = $1", &[&name, &to_json(&record)]).await?;
            tx.commit().await?;
            Ok(Some(record))
        })
    }

    fn group_members(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT id FROM devices WHERE device_group = $1 ORDER BY id", &[&name])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GROUP_LOCK]).await?;
            if Self::read_group(&tx, name).await?.is_none() {
                return Ok(false);
            }
            let members: i64 =
                tx.query_one("SELECT count(*) FROM devices WHERE device_group = $1", &[&name]).await?.get(0);
            if members > 0 {
                return Err(StoreError::Conflict(format!("group {name:?} has devices; move them out first")));
            }
            tx.execute("DELETE FROM device_groups WHERE name = $1", &[&name]).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn change_group_devices(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<MembershipChange, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GROUP_LOCK]).await?;
            if Self::read_group(&tx, name).await?.is_none() {
                return Err(StoreError::Conflict(format!("no group named {name:?}")));
            }
            let mut records = Vec::new();
            for id in add.iter().chain(remove) {
                let row = tx.query_opt("SELECT id, device_group FROM devices WHERE id = $1 FOR UPDATE", &[id]).await?;
                let Some(row) = row else { return Err(StoreError::Conflict(format!("no device {id:?}"))) };
                records.push((row.get(0), row.get(1)));
            }
            let (change, moves) = membership_change(name, &records, add);
            for (id, group) in moves {
                tx.execute("UPDATE devices SET device_group = $2, version = version + 1 WHERE id = $1", &[&id, &group])
                    .await?;
            }
            tx.commit().await?;
            Ok(change)
        })
    }

    fn put_rollout(&self, rollout: &Rollout) -> Result<(), StoreError> {
        self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO rollouts (id, record) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                    &[&rollout.id, &to_json(rollout)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM rollouts WHERE id = $1", &[&id])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let rows = self.wait(async {
            self.client().await?.query("SELECT record FROM rollouts ORDER BY id", &[]).await.map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn create_pipeline(&self, record: &PipelineRecord) -> Result<(), StoreError> {
        let made = self.wait(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO pipelines (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&record.name, &to_json(record)],
                )
                .await
                .map_err(StoreError::from)
        })?;
        if made == 0 {
            return Err(StoreError::Conflict(format!("a pipeline named {:?} exists", record.name)));
        }
        Ok(())
    }

    fn pipeline(&self, name: &str) -> Result<Option<PipelineRecord>, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM pipelines WHERE name = $1", &[&name])
                .await
                .map_err(StoreError::from)
        })?;
        row.map(|r| from_json(r.get(0))).transpose()
    }

    fn pipelines(&self) -> Result<Vec<PipelineRecord>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT record FROM pipelines ORDER BY name", &[])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter().map(|r| from_json(r.get(0))).collect()
    }

    fn delete_pipeline(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self.wait(async {
            self.client()
                .await?
                .execute("DELETE FROM pipelines WHERE name = $1", &[&name])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(removed > 0)
    }
}
