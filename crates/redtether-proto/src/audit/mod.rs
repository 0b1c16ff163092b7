//! Audit events as a device records them: what happened ([`AuditKind`], the only way to name an
//! event), who did it ([`Actor`]), the sealed record with its place in the hash chain
//! ([`StoredEvent`], whose canonical encoding is what the hash covers), and the rule a batch
//! delivered to the hub must follow ([`check_batch`]). The journal that keeps them is the
//! agent's; the hub stores what devices deliver.

mod batch;
mod event;
mod kind;
mod record;

pub use batch::{BatchError, Ingested, check_batch, new_events};
pub use event::{Actor, AuditEvent, Level};
pub use kind::{AuditKind, HubEventKind};
pub use record::{GENESIS, MAX_DETAIL, NamedEvent, RecordFault, StoredEvent, hash_from_hex};
