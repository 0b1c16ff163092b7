//! What this hub records. Its own hash-chained journal file (`crate::journal`, in the hub's
//! state directory) stays the trail of record, written first as on the embedded store; each
//! event is then added to `hub_events` under (hub id, seq), where every hub's fleet audit reads
//! it. Events the file has and the table lacks (the hub stopped in between) are added when the
//! store opens.

use super::super::domain::Journal;
use super::super::fleet_audit::journal_event_is_about_a_device;
use super::super::fleet_audit::{now_ms, placed_at};
use super::super::{HubEvent, StoreError, StoreLatency, hub_event_actor};
use super::{PgStore, from_json, to_i64, to_json};
use crate::journal::Durability;
use redtether_proto::audit::{Actor, HubEventKind, StoredEvent};

/// Events before the newest shared that are offered again when the hub starts: more than ever
/// are recorded at once.
const RESHARE: u64 = 4096;

impl PgStore {
    pub(super) async fn insert_hub_event(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        device: Option<&str>,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        client
            .execute(
                "INSERT INTO hub_events (hub, seq, device, at_ms, kind, actor, event)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hub, seq) DO NOTHING",
                &[
                    &self.hub,
                    &to_i64(event.seq),
                    &device,
                    &to_i64(placed_at(&event.ts, now_ms())),
                    &event.kind,
                    &event.actor.to_string(),
                    &to_json(event),
                ],
            )
            .await?;
        Ok(())
    }

    fn journal_and_share(
        &self,
        kind: HubEventKind,
        actor: Actor,
        target: &str,
        device: Option<&str>,
        detail: serde_json::Value,
        durability: Durability,
    ) -> Result<StoredEvent, StoreError> {
        let stored = self.journal.record(kind, actor, target, detail, durability)?;
        // Shared after the file, outside any lock (events recorded at once share at once); an
        // event the hub stopped before sharing is shared when it starts again (`share_journal`).
        self.wait(async {
            let client = match durability {
                Durability::Sync => self.client().await?,
                Durability::Lazy => self.soft_client().await?,
            };
            self.insert_hub_event(&client, device, &stored).await
        })?;
        if self.recorded.receiver_count() > 0 {
            let _ = self.recorded.send(stored.clone());
        }
        Ok(stored)
    }

    /// Adds the journal's events the database lacks: those after the newest this hub has in
    /// `hub_events`, and the last [`RESHARE`] before it again (events are shared concurrently,
    /// so the newest shared is not proof that every earlier one was; adding one twice is a
    /// no-op).
    pub(super) fn share_journal(&self, state_dir: &std::path::Path) -> Result<(), StoreError> {
        let shared: i64 = self
            .wait(async {
                self.client()
                    .await?
                    .query_one("SELECT coalesce(max(seq), 0) FROM hub_events WHERE hub = $1", &[&self.hub])
                    .await
                    .map_err(StoreError::from)
            })?
            .get(0);
        let shared = super::to_u64(shared).saturating_sub(RESHARE);
        if self.journal.last_seq() <= shared {
            return Ok(());
        }
        let text = crate::journal::read(state_dir)?;
        let mut added = 0;
        self.wait(async {
            let client = self.client().await?;
            for event in crate::journal::events(&text).filter(|e| e.seq > shared) {
                let device = journal_event_is_about_a_device(&event.kind, &event.target)
                    .then_some(event.target.as_str())
                    .filter(|d| !d.is_empty());
                self.insert_hub_event(&client, device, &event).await?;
                added += 1;
            }
            Ok::<_, StoreError>(())
        })?;
        tracing::info!(hub = %self.hub, from = shared, added, "hub store: journal events shared");
        Ok(())
    }
}

impl Journal for PgStore {
    fn record(
        &self,
        kind: HubEventKind,
        actor: Actor,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<StoredEvent, StoreError> {
        self.latency.time("record", || self.journal_and_share(kind, actor, target, None, detail, Durability::Sync))
    }

    fn record_event(
        &self,
        device: &str,
        kind: HubEventKind,
        detail: serde_json::Value,
    ) -> Result<HubEvent, StoreError> {
        self.latency.time("record_event", || {
            let actor = hub_event_actor(&detail);
            let stored = self.journal_and_share(kind, actor, device, Some(device), detail.clone(), Durability::Lazy)?;
            Ok(HubEvent { seq: stored.seq, ts: stored.ts, device: device.to_string(), kind: stored.kind, detail })
        })
    }

    fn events(&self, device: &str) -> Result<Vec<HubEvent>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT event FROM hub_events WHERE device = $1 ORDER BY at_ms, hub, seq", &[&device])
                .await
                .map_err(StoreError::from)
        })?;
        rows.into_iter()
            .map(|row| {
                let event: StoredEvent = from_json(row.get(0))?;
                Ok(HubEvent {
                    seq: event.seq,
                    ts: event.ts,
                    device: device.to_string(),
                    kind: event.kind,
                    detail: serde_json::Value::Object(event.detail),
                })
            })
            .collect()
    }

    fn subscribe_recorded(&self) -> tokio::sync::broadcast::Receiver<StoredEvent> {
        self.recorded.subscribe()
    }

    fn journal_failures(&self) -> u64 {
        self.journal.failures()
    }

    fn flush(&self) -> Result<(), StoreError> {
        // The database's writes are durable when committed; the journal file is this hub's.
        self.latency.time("flush", || Ok(self.journal.sync()?))
    }

    fn latency(&self) -> &StoreLatency {
        &self.latency
    }
}
