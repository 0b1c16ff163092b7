//! The schema's versions, applied in order when a hub starts. Hubs starting together take turns
//! (a transaction-scoped advisory lock), each version is applied whole or not at all (one
//! transaction), and a database written by a newer hub is refused rather than misread.

use super::PgSetupError;
use deadpool_postgres::GenericClient;

/// Every version of the schema, oldest first; a version once released never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "shared registry", include_str!("migrations/0001_shared_registry.sql")),
    (2, "hub records", include_str!("migrations/0002_hub_records.sql")),
];

/// The advisory lock the migrating hub holds ("rtmg" as a number): one hub migrates at a time.
const LOCK: i64 = 0x7274_6d67;

/// The newest version this hub knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the schema to [`latest`]; returns the versions applied now.
pub async fn migrate(client: &mut deadpool_postgres::Client) -> Result<Vec<i32>, PgSetupError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await?.get(0);
    if current > latest() {
        return Err(PgSetupError::SchemaTooNew { found: current, known: latest() });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        applied.push(*version);
    }
    tx.commit().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, version = latest(), "hub store: PostgreSQL schema migrated");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_one_by_one_from_one() {
        for (index, (version, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, index as i32 + 1);
            assert!(!sql.trim().is_empty());
        }
    }
}
