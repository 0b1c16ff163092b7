//! The agent's end of the tunnel: enrollment, and keeping a mutually authenticated QUIC
//! connection to the hub up — reconnecting with backoff and full jitter (capped at 30 s, reset
//! after a healthy minute), telling a refused certificate (`auth_failed`, retried only at the
//! cap) from an unreachable hub (a normal state) — and serving the control stream on it.

mod client;
mod dial;
pub mod enroll;
mod forwarded;
mod hubs;
mod logs_stream;
pub mod proxy;
mod renew;
mod session;

pub use client::{ClientConfigError, Tunnel, TunnelHandle, TunnelParts, client_config};
pub use forwarded::Forwarding;

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

pub use redtether_proto::session::TunnelState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub state: TunnelState,
    /// The hub address in use while online; otherwise the one last used, if any.
    pub hub: Option<String>,
    /// The socket address `hub` resolved to and was dialled at.
    #[serde(default)]
    pub hub_addr: Option<String>,
    /// Every hub address the agent tries (`[tunnel] hubs`, else the enrollment's list).
    #[serde(default)]
    pub hubs: Vec<String>,
    pub device_id: Option<String>,
    #[serde(with = "redtether_proto::time::rfc3339")]
    pub since: SystemTime,
    pub last_error: Option<String>,
    /// Successful connections since the agent started.
    pub connects: u64,
    /// `quic` or `tcp` while online.
    #[serde(default)]
    pub transport: Option<String>,
}

impl TunnelStatus {
    pub fn initial() -> Self {
        TunnelStatus {
            state: TunnelState::Offline,
            hub: None,
            hub_addr: None,
            hubs: Vec::new(),
            device_id: None,
            since: SystemTime::now(),
            last_error: None,
            connects: 0,
            transport: None,
        }
    }
}
