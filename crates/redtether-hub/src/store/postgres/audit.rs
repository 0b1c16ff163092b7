//! Delivered device audit: a batch is one transaction of one multi-row
//! `INSERT … ON CONFLICT DO NOTHING` (the events any hub already stored are skipped by the
//! database, and counted as duplicates) and the device's acknowledgement counters, committed
//! before the caller acknowledges.

use super::super::StoreError;
use super::super::domain::DeviceAudit;
use super::super::fleet_audit::{now_ms, placed_at};
use super::{PgStore, to_i64};
use redtether_proto::audit::{Ingested, StoredEvent, check_batch};

impl DeviceAudit for PgStore {
    fn ingest_audit(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError> {
        check_batch(events)?;
        let Some(last) = events.last() else { return Ok(Ingested { stored: 0, duplicates: 0, ack: 0 }) };
        let now = now_ms();
        let seqs: Vec<i64> = events.iter().map(|e| to_i64(e.seq)).collect();
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let placed: Vec<i64> = events.iter().map(|e| to_i64(placed_at(&e.ts, now))).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let actors: Vec<String> = events.iter().map(|e| e.actor.to_string()).collect();
        let bodies: Vec<serde_json::Value> =
            events.iter().map(|e| serde_json::to_value(e).expect("an event always encodes")).collect();
        self.latency.time("ingest_audit", || {
            self.wait(async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let stored = tx
                    .execute(
                        "INSERT INTO device_audit (device, seq, id, at_ms, kind, actor, event)
                         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                                                  $7::jsonb[])
                         ON CONFLICT (device, seq, id) DO NOTHING",
                        &[&device, &seqs, &ids, &placed, &kinds, &actors, &bodies],
                    )
                    .await? as usize;
                let duplicates = events.len() - stored;
                tx.execute(
                    "UPDATE devices SET audit_acked = greatest(audit_acked, $2),
                       audit_duplicates = audit_duplicates + $3, version = version + 1
                     WHERE id = $1",
                    &[&device, &to_i64(last.seq), &(duplicates as i64)],
                )
                .await?;
                tx.commit().await?;
                Ok(Ingested { stored, duplicates, ack: last.seq })
            })
        })
    }

    fn device_audit(&self, device: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        self.wait(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT event FROM device_audit WHERE device = $1 AND seq > $2 ORDER BY seq, id",
                    &[&device, &to_i64(after)],
                )
                .await?;
            rows.iter().map(|row| serde_json::from_value(row.get(0)).map_err(StoreError::Corrupt)).collect()
        })
    }
}
