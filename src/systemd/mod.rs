//! Living under systemd: readiness and status notifications (`sd_notify`), the watchdog, and
//! logging to the journal with structured fields.
//!
//! Nothing here changes the process environment: the child-facing variables are removed from
//! Node-RED's environment where it is spawned (see `supervisor::launch`).

mod logging;
mod notify;

pub use logging::{LogSink, init_logging};
pub use notify::{Notifier, keep_watchdog, watchdog_interval};
