//! `redtether-hub migrate-store --from <state dir> --to postgres://…`: moves a stopped hub's
//! embedded store into an empty PostgreSQL database, then checks the copy. The hub is then run
//! with `[store] url` and the same state directory (its keys and journal stay there): devices
//! reconnect with their certificates, operators log in with their passwords and tokens.

use crate::store::domain::{DeviceAudit, Devices, Operators};
use crate::store::postgres::{PgOptions, PgSetupError, PgStore};
use crate::store::transfer::Record;
use crate::store::{SledStore, StoreError};
use redtether_host::state_dir::{StateDir, StateDirError};
use std::collections::BTreeMap;
use std::path::Path;

/// Records written per transaction.
const BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("{}: no embedded store here (no db folder)", .0.display())]
    NoStore(std::path::PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Target(#[from] PgSetupError),
    #[error("the target database already holds hub records: migrate into an empty database")]
    TargetNotEmpty,
    #[error("the copy differs from the original: {0}")]
    Mismatch(String),
}

/// Moves everything; returns how many records of each kind were written.
pub fn migrate(from: &Path, to: &PgOptions, hub_id: &str) -> Result<BTreeMap<&'static str, u64>, MigrateError> {
    if !from.join("db").is_dir() {
        return Err(MigrateError::NoStore(from.to_path_buf()));
    }
    let dir = StateDir::new(from).owned_by("redtether hub");
    // Held throughout: a running hub (which holds it) would change the records under us.
    let _lock = dir.lock()?;
    let source = SledStore::open(from)?;
    let target = PgStore::open(to, from, hub_id)?;
    if !target.is_empty()? {
        return Err(MigrateError::TargetNotEmpty);
    }
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    source.export(from, &mut |record: Record| {
        *counts.entry(record.kind()).or_default() += 1;
        batch.push(record);
        if batch.len() == BATCH {
            target.import(&std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    target.import(&batch)?;
    check(&source, &target)?;
    Ok(counts)
}

/// Reads back what matters through the store's own interface: the devices as they were, the
/// accounts, and each device's audit trail event for event.
fn check(source: &SledStore, target: &PgStore) -> Result<(), MigrateError> {
    let before = Devices::devices(source)?;
    if before != Devices::devices(target)? {
        return Err(MigrateError::Mismatch("the devices".into()));
    }
    if Operators::operators(source)? != Operators::operators(target)? {
        return Err(MigrateError::Mismatch("the operators".into()));
    }
    for device in &before {
        if DeviceAudit::device_audit(source, &device.id, 0)? != DeviceAudit::device_audit(target, &device.id, 0)? {
            return Err(MigrateError::Mismatch(format!("the audit trail of {}", device.id)));
        }
    }
    Ok(())
}
