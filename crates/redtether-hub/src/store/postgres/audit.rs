//! Delivered device audit: a batch is one transaction of one multi-row
//! `INSERT … ON CONFLICT DO NOTHING` (the events any hub already stored are skipped by the
//! database, and counted as duplicates) and the device's acknowledgement counters, committed
//! before the caller acknowledges.

use super::super::StoreError;
use super::super::domain::DeviceAudit;
use super::{PgStore, to_i64};
use redtether_proto::audit::{Ingested, StoredEvent, check_batch};

impl DeviceAudit for PgStore {
    fn ingest_audit(&self, device: &str, events: &[StoredEvent]) -> Result<Ingested, StoreError> {
        self.wait(async {
            check_batch(events)?;
            let Some(last) = events.last() else { return Ok(Ingested { stored: 0, duplicates: 0, ack: 0 }) };
            let mut seqs = Vec::with_capacity(events.len());
            let mut ids = Vec::with_capacity(events.len());
            let mut times = Vec::with_capacity(events.len());
            let mut kinds = Vec::with_capacity(events.len());
            let mut bodies = Vec::with_capacity(events.len());
            for event in events {
                seqs.push(to_i64(event.seq));
                ids.push(event.id.as_str());
                times.push(event.ts.as_str());
                kinds.push(event.kind.as_str());
                bodies.push(serde_json::to_value(event).expect("an event always encodes"));
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let stored = tx
                .execute(
                    "INSERT INTO device_audit (device, seq, id, ts, kind, event)
                     SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
                     ON CONFLICT (device, seq, id) DO NOTHING",
                    &[&device, &seqs, &ids, &times, &kinds, &bodies],
                )
                .await? as usize;
            let duplicates = events.len() - stored;
            tx.execute(
                "UPDATE devices SET audit_acked = greatest(audit_acked, $2), audit_duplicates = audit_duplicates + $3
                 WHERE id = $1",
                &[&device, &to_i64(last.seq), &(duplicates as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(Ingested { stored, duplicates, ack: last.seq })
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
