//! Which hub holds which device, and the secrets the hubs share. Heartbeats are the database's
//! time (`now()`), so hubs with skewed clocks agree on who is dead; a dead hub's entries go with
//! its row (`ON DELETE CASCADE`).

use super::super::StoreError;
use super::super::domain::{HubEntry, Presence, SharedSecrets};
use super::PgStore;
use std::time::Duration;

impl Presence for PgStore {
    fn join(&self, hub: &HubEntry) -> Result<(), StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO hubs (id, address, heartbeat) VALUES ($1, $2, now())
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address, heartbeat = excluded.heartbeat",
                &[&hub.id, &hub.address],
            )
            .await?;
            tx.execute("DELETE FROM presence WHERE hub = $1", &[&hub.id]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn heartbeat(&self, hub: &str) -> Result<bool, StoreError> {
        self.wait(async {
            Ok(self.soft_client().await?.execute("UPDATE hubs SET heartbeat = now() WHERE id = $1", &[&hub]).await?
                == 1)
        })
    }

    fn hold(&self, device: &str, hub: &str) -> Result<u64, StoreError> {
        self.wait(async {
            let row = self
                .client()
                .await?
                .query_one(
                    "INSERT INTO presence (device, hub, epoch) VALUES ($1, $2, nextval('presence_epoch'))
                     ON CONFLICT (device) DO UPDATE SET hub = excluded.hub, epoch = excluded.epoch
                     RETURNING epoch",
                    &[&device, &hub],
                )
                .await?;
            Ok(super::to_u64(row.get(0)))
        })
    }

    fn let_go(&self, device: &str, epoch: u64) -> Result<bool, StoreError> {
        self.wait(async {
            let removed = self
                .client()
                .await?
                .execute("DELETE FROM presence WHERE device = $1 AND epoch = $2", &[&device, &super::to_i64(epoch)])
                .await?;
            Ok(removed == 1)
        })
    }

    fn holder(&self, device: &str) -> Result<Option<HubEntry>, StoreError> {
        self.wait(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT h.id, h.address FROM presence p JOIN hubs h ON h.id = p.hub WHERE p.device = $1",
                    &[&device],
                )
                .await?;
            Ok(row.map(|r| HubEntry { id: r.get(0), address: r.get(1) }))
        })
    }

    fn reap(&self, dead_after: Duration) -> Result<Vec<String>, StoreError> {
        self.wait(async {
            let millis = dead_after.as_millis().min(i64::MAX as u128) as i64;
            let rows = self
                .client()
                .await?
                .query(
                    "DELETE FROM hubs WHERE heartbeat < now() - $1::float8 * interval '1 millisecond' RETURNING id",
                    &[&(millis as f64)],
                )
                .await?;
            let mut dead: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            dead.sort();
            Ok(dead)
        })
    }

    fn holdings(&self) -> Result<Vec<(String, HubEntry)>, StoreError> {
        let rows = self.wait(async {
            self.soft_client()
                .await?
                .query(
                    "SELECT p.device, h.id, h.address FROM presence p JOIN hubs h ON h.id = p.hub ORDER BY p.device",
                    &[],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok(rows.iter().map(|r| (r.get(0), HubEntry { id: r.get(1), address: r.get(2) })).collect())
    }

    fn drop_holding(&self, device: &str, hub: &str) -> Result<bool, StoreError> {
        let removed = self.wait(async {
            self.soft_client()
                .await?
                .execute("DELETE FROM presence WHERE device = $1 AND hub = $2", &[&device, &hub])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(removed == 1)
    }

    fn leave(&self, hub: &str) -> Result<(), StoreError> {
        self.wait(async {
            self.soft_client().await?.execute("DELETE FROM hubs WHERE id = $1", &[&hub]).await.map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn hubs(&self) -> Result<Vec<HubEntry>, StoreError> {
        self.wait(async {
            let rows = self.client().await?.query("SELECT id, address FROM hubs ORDER BY id", &[]).await?;
            Ok(rows.iter().map(|r| HubEntry { id: r.get(0), address: r.get(1) }).collect())
        })
    }
}

impl SharedSecrets for PgStore {
    fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.wait(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO shared_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, &candidate],
                )
                .await?;
            // A statement of its own: its snapshot sees the row of a hub that won the race.
            Ok(client.query_one("SELECT value FROM shared_secrets WHERE name = $1", &[&name]).await?.get(0))
        })
    }
}
