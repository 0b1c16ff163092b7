//! Node-RED's recent output for the platform: every line the supervisor reads from Node-RED's
//! stdout and stderr also goes into a bounded ring (`[logs] buffer_lines`, 2000 by default)
//! that the tunnel serves on `logs` streams (the last N lines, or those after a `seq`, and then
//! new ones as they come). journald keeps receiving every line too; the ring is only what the
//! hub can fetch without a shell on the device.
//!
//! Lines are kept as Node-RED wrote them: nothing is filtered or redacted. The agent's own
//! secrets never pass through here — they are written to Node-RED's settings file (0600), never
//! printed — but a flow that prints a secret puts it in the ring like in journald.
//!
//! Followers do not get their own queue: they hold a cursor (the last `seq` sent) and read the
//! ring after it when the newest `seq` (a `watch`) moves. A slow reader therefore costs no
//! memory; if it falls more than the ring's length behind, it is told how many lines it missed.

mod ring;

pub use ring::Ring;

use redtether_proto::wire::{LogItem, LogLine, LogStream};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// The shared ring and the newest `seq`; cheap to clone.
#[derive(Clone)]
pub struct LogBuffer {
    ring: Arc<Mutex<Ring>>,
    newest: Arc<watch::Sender<u64>>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> LogBuffer {
        LogBuffer { ring: Arc::new(Mutex::new(Ring::new(capacity))), newest: Arc::new(watch::channel(0).0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves the ring consistent (each step is one push).
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one line Node-RED wrote, stamped now.
    pub fn push(&self, stream: LogStream, text: &str) {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let seq = self.lock().push(stream, text.to_string(), time);
        self.newest.send_replace(seq);
    }

    pub fn capacity(&self) -> usize {
        self.lock().capacity()
    }

    /// The newest `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<LogLine> {
        self.lock().last(n)
    }

    /// The newest `n` lines and the `seq` to follow on from (see [`Ring::tail`]).
    pub fn tail(&self, n: usize) -> (Vec<LogLine>, u64) {
        self.lock().tail(n)
    }

    /// Up to `max` items after line `seq` (see [`Ring::after`]).
    pub fn after(&self, seq: u64, max: usize) -> Vec<LogItem> {
        self.lock().after(seq, max)
    }

    /// Changes whenever a line is added; holds the newest `seq`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}
