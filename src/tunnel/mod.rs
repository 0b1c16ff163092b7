//! The agent's end of the tunnel: enrollment, and keeping a mutually authenticated QUIC
//! connection to the hub up — reconnecting with backoff and full jitter (capped at 30 s, reset
//! after a healthy minute), telling a refused certificate (`auth_failed`, retried only at the
//! cap) from an unreachable hub (a normal state) — and serving the control stream on it.

mod client;
pub mod enroll;
mod forwarded;
mod renew;
mod session;

pub use client::{Tunnel, TunnelHandle, TunnelParts, client_config};
pub use forwarded::Forwarding;

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// Not enrolled: no tunnel to keep.
    Offline,
    Connecting,
    Online,
    /// The hub refused the device's certificate (revoked, expired, another CA): re-enroll.
    AuthFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub state: TunnelState,
    pub hub: Option<String>,
    pub device_id: Option<String>,
    #[serde(with = "crate::rfc3339")]
    pub since: SystemTime,
    pub last_error: Option<String>,
    /// Successful connections since the agent started.
    pub connects: u64,
}

impl TunnelStatus {
    pub fn initial() -> Self {
        TunnelStatus {
            state: TunnelState::Offline,
            hub: None,
            device_id: None,
            since: SystemTime::now(),
            last_error: None,
            connects: 0,
        }
    }
}
