//! Each device's newest policy and its tokens. A change takes the device's advisory lock
//! (transaction-scoped, so any hub making a policy for the device waits its turn) from reading
//! the newest policy to storing the next: numbers stay distinct and increasing across hubs.

use super::super::domain::Policies;
use super::super::policy::{apply_report, prepare};
use super::super::{HubTokenRecord, MadePolicy, PolicyChange, PolicyError, PolicyRecord, PolicyUpdate, StoreError};
use super::{PgStore, from_json, to_i64, to_json};
use redtether_proto::policy::Policy;
use redtether_proto::wire::PolicyReport;

/// The advisory lock of one device's policies.
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended('policy:' || $1, 0))";

async fn newest(
    client: &impl deadpool_postgres::GenericClient,
    device: &str,
) -> Result<Option<PolicyRecord>, StoreError> {
    let row = client.query_opt("SELECT record FROM policies WHERE device = $1", &[&device]).await?;
    row.map(|r| from_json(r.get(0))).transpose()
}

async fn tokens(
    client: &impl deadpool_postgres::GenericClient,
    device: &str,
) -> Result<Vec<HubTokenRecord>, StoreError> {
    let rows = client.query("SELECT record FROM policy_tokens WHERE device = $1 ORDER BY name", &[&device]).await?;
    rows.into_iter().map(|r| from_json(r.get(0))).collect()
}

async fn write(tx: &deadpool_postgres::Transaction<'_>, record: &PolicyRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO policies (device, number, state, record) VALUES ($1, $2, $3, $4)
         ON CONFLICT (device) DO UPDATE SET number = excluded.number, state = excluded.state, record = excluded.record",
        &[&record.device, &to_i64(record.number), &record.state.as_str(), &to_json(record)],
    )
    .await?;
    Ok(())
}

impl Policies for PgStore {
    fn policy(&self, device: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.wait(async { newest(&self.client().await?, device).await })
    }

    fn policy_tokens(&self, device: &str) -> Result<Vec<HubTokenRecord>, StoreError> {
        self.wait(async { tokens(&self.client().await?, device).await })
    }

    fn make_policy(
        &self,
        device: &str,
        change: PolicyChange,
        operator: &str,
        now: u64,
        sign: Box<dyn FnOnce(&Policy) -> String + Send + '_>,
    ) -> Result<MadePolicy, PolicyError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            tx.execute(LOCK_SQL, &[&device]).await.map_err(StoreError::from)?;
            let newest = newest(&tx, device).await?;
            let tokens = tokens(&tx, device).await?;
            let made = prepare(device, newest.as_ref(), tokens, &change, operator, now, sign)?;
            write(&tx, &made.record).await?;
            match &change {
                PolicyChange::Document(_) | PolicyChange::Group { .. } => {}
                PolicyChange::TokenAdded(token) => {
                    tx.execute(
                        "INSERT INTO policy_tokens (device, name, record) VALUES ($1, $2, $3)",
                        &[&device, &token.name, &to_json(token)],
                    )
                    .await
                    .map_err(StoreError::from)?;
                }
                PolicyChange::TokenRevoked(name) => {
                    tx.execute("DELETE FROM policy_tokens WHERE device = $1 AND name = $2", &[&device, name])
                        .await
                        .map_err(StoreError::from)?;
                }
            }
            tx.commit().await.map_err(StoreError::from)?;
            Ok(made)
        })
    }

    fn update_policy(&self, device: &str, report: &PolicyReport, now: u64) -> Result<PolicyUpdate, StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(LOCK_SQL, &[&device]).await?;
            let Some(newest) = newest(&tx, device).await? else { return Ok(PolicyUpdate::NotNewest(None)) };
            if newest.number != report.number {
                return Ok(PolicyUpdate::NotNewest(Some(newest.number)));
            }
            let Some(next) = apply_report(&newest, report, now) else { return Ok(PolicyUpdate::Unchanged) };
            write(&tx, &next).await?;
            tx.commit().await?;
            Ok(PolicyUpdate::Changed(Box::new(next)))
        })
    }
}
