//! Where the agent's logs go: the journal (native protocol, structured fields) when systemd
//! connected stderr to it, plain text on stderr otherwise.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    Journald,
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init_logging(level: &str) -> LogSink {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directives(level)));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                // Journal priorities as syslog means them (info is 6, not tracing-journald's 5),
                // and event fields under their own names (`journalctl GATE=...`).
                let priorities = tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                };
                let journald = journald
                    .with_syslog_identifier("redtether".to_string())
                    .with_field_prefix(None)
                    .with_priority_mappings(priorities);
                if tracing_subscriber::registry().with(filter).with(journald).try_init().is_ok() {
                    return LogSink::Journald;
                }
                return LogSink::Stderr;
            }
            Err(e) => eprintln!("redtether: journald is not reachable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    LogSink::Stderr
}

/// Our level for our own targets; the HTTP libraries only speak up for warnings.
fn default_directives(level: &str) -> String {
    format!("{level},hyper=warn,hyper_util=warn,reqwest=warn")
}

/// systemd sets `JOURNAL_STREAM=dev:inode` of the stream it connected; it counts only if that is
/// still our stderr (a child of a journald-logged shell inherits the variable but not the fd).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}
