//! The fleet audit and the fleet's figures on PostgreSQL. A page is one keyset query over the
//! devices' and hubs' events (newest first, by placement, source, device, seq and id — the
//! order of the embedded store's index), with the filters the database can check in SQL and the
//! rest (a group's members) checked here; like the embedded store, one request examines at most
//! `MAX_EXAMINED` rows before answering `partial`.

use super::super::census::deploy_state_name;
use super::super::domain::{FleetAudit, FleetFigures};
use super::super::fleet_audit::{device_row, hub_event_row};
use super::super::{
    AuditFilter, AuditPage, AuditRow, Census, Cursor, FleetAuditError, MAX_EXAMINED, MAX_LIMIT, PresenceSample,
    RowHead, Source, StoreError,
};
use super::{PgStore, from_json, to_i64, to_u64};
use redtether_proto::audit::StoredEvent;
use redtether_proto::wire::{DeployState, PolicyState};

/// Rows fetched per query while paging or exporting.
const BATCH: i64 = 500;
/// Presence samples older than this are dropped (as the embedded store does).
const KEEP_PRESENCE_SECS: u64 = 7 * 86400;

const PAGE_SQL: &str = "
SELECT at_ms, source, device, seq, id, kind, actor, event FROM (
    SELECT at_ms, 'd'::text AS source, device, seq, id, kind, actor, event FROM device_audit
    UNION ALL
    SELECT at_ms, 'h'::text, coalesce(device, ''), seq, hub, kind, actor, event FROM hub_events
) rows
WHERE at_ms >= $1
  AND ($2::bigint IS NULL OR at_ms < $2)
  AND ($3::text IS NULL OR device = $3)
  AND ($4::text IS NULL OR source = $4)
  AND ($5::text IS NULL OR actor = $5)
  AND ($6::text IS NULL OR kind = $6 OR starts_with(kind, $6 || '.'))
  AND ($7::bigint IS NULL OR (at_ms, source, device, seq, id) < ($7, $8, $9, $10, $11))
ORDER BY at_ms DESC, source DESC, device DESC, seq DESC, id DESC
LIMIT $12";

/// One row as fetched, with its position.
struct Fetched {
    cursor: Cursor,
    at_ms: u64,
    source: Source,
    device: String,
    kind: String,
    actor: String,
    event: serde_json::Value,
}

impl PgStore {
    /// The next `BATCH` rows older than `before` that SQL can tell match `filter`.
    fn fetch(&self, filter: &AuditFilter, before: Option<&Cursor>) -> Result<Vec<Fetched>, StoreError> {
        let position = before.and_then(Cursor::position);
        let source = |s: Source| match s {
            Source::Device => "d",
            Source::Hub => "h",
        };
        let kind = filter.kind.as_deref().map(|k| k.strip_suffix('.').unwrap_or(k));
        let rows = self.wait(async {
            self.client()
                .await?
                .query(
                    PAGE_SQL,
                    &[
                        &to_i64(filter.since_ms()),
                        &filter.until_ms().map(to_i64),
                        &filter.device,
                        &filter.source.map(source),
                        &filter.actor,
                        &kind,
                        &position.map(|p| to_i64(p.0)),
                        &position.map(|p| source(p.1)),
                        &position.map(|p| p.2),
                        &position.map(|p| to_i64(p.3)),
                        &position.map(|p| p.4),
                        &BATCH,
                    ],
                )
                .await
                .map_err(StoreError::from)
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let (at_ms, device, seq, id) =
                    (to_u64(row.get(0)), row.get::<_, String>(2), to_u64(row.get(3)), row.get::<_, String>(4));
                let source = if row.get::<_, &str>(1) == "d" { Source::Device } else { Source::Hub };
                Fetched {
                    cursor: Cursor::at(at_ms, source, &device, seq, &id),
                    at_ms,
                    source,
                    device,
                    kind: row.get(5),
                    actor: row.get(6),
                    event: row.get(7),
                }
            })
            .collect())
    }

    /// Walks the matching rows newest first, `examine` seeing each fetched row's position and
    /// row (if the filter keeps it) until it says stop; returns whether rows were left.
    fn walk<E: From<StoreError>>(
        &self,
        filter: &AuditFilter,
        before: Option<&Cursor>,
        mut examine: impl FnMut(&Cursor, u64, Option<AuditRow>) -> Result<bool, E>,
    ) -> Result<bool, E> {
        let mut before = before.cloned();
        loop {
            let batch = self.fetch(filter, before.as_ref())?;
            let full = batch.len() as i64 == BATCH;
            for fetched in batch {
                let device = (!fetched.device.is_empty()).then_some(fetched.device.as_str());
                let head = RowHead {
                    source: fetched.source,
                    device,
                    at_ms: fetched.at_ms,
                    kind: &fetched.kind,
                    actor: &fetched.actor,
                };
                let row = if filter.matches(&head) {
                    let event: StoredEvent = from_json(fetched.event)?;
                    let row = match fetched.source {
                        Source::Device => device_row(&fetched.device, event),
                        Source::Hub => hub_event_row(device, event),
                    };
                    Some(row).filter(|r| filter.wants(r))
                } else {
                    None
                };
                if !examine(&fetched.cursor, fetched.at_ms, row)? {
                    return Ok(true);
                }
                before = Some(fetched.cursor);
            }
            if !full {
                return Ok(false);
            }
        }
    }
}

impl FleetAudit for PgStore {
    fn audit_page(&self, filter: &AuditFilter, before: Option<&Cursor>, limit: usize) -> Result<AuditPage, StoreError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let mut rows = Vec::new();
        let (mut examined, mut last, mut stopped_at) = (0, None, None);
        let more = self.walk(filter, before, |cursor, at_ms, row| {
            // A full page looks one row further, to know whether older ones remain.
            if rows.len() == limit {
                return Ok(false);
            }
            examined += 1;
            rows.extend(row);
            last = Some(cursor.clone());
            if examined >= MAX_EXAMINED && rows.len() < limit {
                stopped_at = Some(at_ms);
                return Ok(false);
            }
            Ok::<_, StoreError>(true)
        })?;
        if let Some(at_ms) = stopped_at {
            let scanned_to = Some(redtether_proto::time::format_unix(at_ms / 1000));
            return Ok(AuditPage { rows, next: last, partial: true, scanned_to });
        }
        Ok(AuditPage { rows, next: if more { last } else { None }, partial: false, scanned_to: None })
    }

    fn audit_export(
        &self,
        filter: &AuditFilter,
        write: &mut (dyn FnMut(&AuditRow) -> std::io::Result<()> + Send),
    ) -> Result<u64, FleetAuditError> {
        let mut written = 0;
        self.walk(filter, None, |_, _, row| {
            if let Some(row) = row {
                write(&row).map_err(FleetAuditError::Write)?;
                written += 1;
            }
            Ok::<_, FleetAuditError>(true)
        })?;
        Ok(written)
    }
}

const DEPLOY_STATES: [DeployState; 6] = [
    DeployState::Pending,
    DeployState::Sent,
    DeployState::Applying,
    DeployState::Applied,
    DeployState::RolledBack,
    DeployState::Failed,
];
const POLICY_STATES: [PolicyState; 3] = [PolicyState::Pending, PolicyState::Applied, PolicyState::Refused];

impl FleetFigures for PgStore {
    fn census(&self) -> Result<Census, StoreError> {
        let (totals, deployments, policies) = self.wait(async {
            let client = self.client().await?;
            let totals = client.query_one("SELECT count(*), count(*) FILTER (WHERE revoked) FROM devices", &[]).await?;
            let deployments = client
                .query(
                    "SELECT newest.state, count(*) FROM (
                         SELECT DISTINCT ON (device) device, state FROM deployments ORDER BY device, number DESC
                     ) newest JOIN devices ON devices.id = newest.device GROUP BY newest.state",
                    &[],
                )
                .await?;
            let policies = client
                .query(
                    "SELECT p.state, count(*) FROM policies p JOIN devices ON devices.id = p.device GROUP BY p.state",
                    &[],
                )
                .await?;
            Ok::<_, StoreError>((totals, deployments, policies))
        })?;
        let mut census = Census { devices: to_u64(totals.get(0)), revoked: to_u64(totals.get(1)), ..Census::default() };
        for row in deployments {
            let name: &str = row.get(0);
            if let Some(state) = DEPLOY_STATES.iter().map(|s| deploy_state_name(*s)).find(|s| *s == name) {
                census.deployments.insert(state, to_u64(row.get(1)));
            }
        }
        for row in policies {
            let name: &str = row.get(0);
            if let Some(state) = POLICY_STATES.iter().map(|s| s.as_str()).find(|s| *s == name) {
                census.policies.insert(state, to_u64(row.get(1)));
            }
        }
        Ok(census)
    }

    fn record_presence(&self, sample: PresenceSample) -> Result<(), StoreError> {
        let cutoff = to_i64(sample.at.saturating_sub(KEEP_PRESENCE_SECS));
        self.wait(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO presence_samples (at, online, total) VALUES ($1, $2, $3)
                     ON CONFLICT (at) DO UPDATE SET online = excluded.online, total = excluded.total",
                    &[&to_i64(sample.at), &(sample.online as i32), &(sample.total as i32)],
                )
                .await?;
            client.execute("DELETE FROM presence_samples WHERE at < $1", &[&cutoff]).await?;
            Ok(())
        })
    }

    fn presence_since(&self, since: u64) -> Result<Vec<PresenceSample>, StoreError> {
        let rows = self.wait(async {
            self.client()
                .await?
                .query("SELECT at, online, total FROM presence_samples WHERE at >= $1 ORDER BY at", &[&to_i64(since)])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(rows
            .iter()
            .map(|r| PresenceSample {
                at: to_u64(r.get(0)),
                online: r.get::<_, i32>(1).max(0) as u32,
                total: r.get::<_, i32>(2).max(0) as u32,
            })
            .collect())
    }
}
