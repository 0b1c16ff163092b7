//! Writes records moved from the embedded store (`super::super::transfer`), as they were kept:
//! digests stay digests, numbers and states stay as they were. Into an empty database only, in
//! one transaction per batch.

use super::super::StoreError;
use super::super::census::deploy_state_name;
use super::super::fleet_audit::{now_ms, placed_at};
use super::super::transfer::Record;
use super::{PgStore, to_i64, to_json};

impl PgStore {
    /// Whether the database holds no hub records yet (devices, operators, device audit); the
    /// hub's own journal is shared when the store opens, so its events do not count.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let row = self.wait(async {
            self.client()
                .await?
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM devices) AND NOT EXISTS (SELECT 1 FROM operators)
                       AND NOT EXISTS (SELECT 1 FROM device_audit)",
                    &[],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok(row.get(0))
    }

    /// Writes `records` in one transaction, as hub `self.hub` for hub events.
    pub fn import(&self, records: &[Record]) -> Result<(), StoreError> {
        self.wait(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            for record in records {
                self.import_one(&tx, record).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn import_one(&self, tx: &deadpool_postgres::Transaction<'_>, record: &Record) -> Result<(), StoreError> {
        match record {
            Record::Device(d) => super::devices::write(tx, d).await?,
            Record::Revoked { serial, device } => {
                tx.execute(
                    "INSERT INTO revoked_certificates (serial, device) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[serial, device],
                )
                .await?;
            }
            Record::EnrollToken { digest, device, created, expires, used, group } => {
                tx.execute(
                    "INSERT INTO enroll_tokens (digest, device_id, created, expires, used_at, device_group)
                     VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END, $6)",
                    &[digest, device, &to_i64(*created), &to_i64(*expires), used, group],
                )
                .await?;
            }
            Record::Operator(o) => {
                let setup = o.setup.as_ref().map(|s| s.sha256.as_str());
                tx.execute(
                    "INSERT INTO operators (name, setup_sha256, record) VALUES ($1, $2, $3)",
                    &[&o.name, &setup, &to_json(o)],
                )
                .await?;
            }
            Record::ApiToken { digest, record } => {
                tx.execute(
                    "INSERT INTO api_tokens (digest, operator, name, record) VALUES ($1, $2, $3, $4)",
                    &[digest, &record.operator, &record.name, &to_json(record)],
                )
                .await?;
            }
            Record::Session { digest, record } => {
                tx.execute(
                    "INSERT INTO sessions (digest, operator, record) VALUES ($1, $2, $3)",
                    &[digest, &record.operator, &to_json(record)],
                )
                .await?;
            }
            Record::DeployNumber { device, last } => {
                tx.execute("INSERT INTO deploy_numbers (device, last) VALUES ($1, $2)", &[device, &to_i64(*last)])
                    .await?;
            }
            Record::Deployment(d) => {
                tx.execute(
                    "INSERT INTO deployments (device, number, id, state, record) VALUES ($1, $2, $3, $4, $5)",
                    &[&d.device, &to_i64(d.number), &d.id, &deploy_state_name(d.state), &to_json(d)],
                )
                .await?;
            }
            Record::Snapshot(s) => {
                tx.execute(
                    "INSERT INTO snapshots (id, device, created, record) VALUES ($1, $2, $3, $4)",
                    &[&s.id, &s.device, &to_i64(s.created), &to_json(s)],
                )
                .await?;
            }
            Record::Sbom { device, sbom } => {
                tx.execute("INSERT INTO sboms (device, sbom) VALUES ($1, $2)", &[device, sbom]).await?;
            }
            Record::Policy(p) => {
                tx.execute(
                    "INSERT INTO policies (device, number, state, record) VALUES ($1, $2, $3, $4)",
                    &[&p.device, &to_i64(p.number), &p.state.as_str(), &to_json(p)],
                )
                .await?;
            }
            Record::PolicyToken { device, record } => {
                tx.execute(
                    "INSERT INTO policy_tokens (device, name, record) VALUES ($1, $2, $3)",
                    &[device, &record.name, &to_json(record)],
                )
                .await?;
            }
            Record::Group(g) => {
                tx.execute("INSERT INTO device_groups (name, record) VALUES ($1, $2)", &[&g.name, &to_json(g)]).await?;
            }
            Record::Rollout(r) => {
                tx.execute("INSERT INTO rollouts (id, record) VALUES ($1, $2)", &[&r.id, &to_json(r)]).await?;
            }
            Record::Pipeline(p) => {
                tx.execute("INSERT INTO pipelines (name, record) VALUES ($1, $2)", &[&p.name, &to_json(p)]).await?;
            }
            Record::DeviceAudit { device, event } => {
                tx.execute(
                    "INSERT INTO device_audit (device, seq, id, at_ms, kind, actor, event)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        device,
                        &to_i64(event.seq),
                        &event.id,
                        &to_i64(placed_at(&event.ts, now_ms())),
                        &event.kind,
                        &event.actor.to_string(),
                        &to_json(event),
                    ],
                )
                .await?;
            }
            Record::HubEvent { device, event } => self.insert_hub_event(tx, device.as_deref(), event).await?,
            Record::Presence(sample) => {
                tx.execute(
                    "INSERT INTO presence_samples (at, online, total) VALUES ($1, $2, $3)",
                    &[&to_i64(sample.at), &(sample.online as i32), &(sample.total as i32)],
                )
                .await?;
            }
            Record::SharedSecret { name, value } => {
                tx.execute("INSERT INTO shared_secrets (name, value) VALUES ($1, $2)", &[name, value]).await?;
            }
        }
        Ok(())
    }
}
