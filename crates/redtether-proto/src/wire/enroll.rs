//! The enrollment stream (ALPN `redtether-enroll/1`): one request from the device, one answer.

use super::frame::Message;
use serde::{Deserialize, Serialize};

/// Device → hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrollRequest {
    Enroll { token: String, csr_pem: String },
}

/// Hub → device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrollResponse {
    /// The certificate for the device, the CA, and the hub's signing key (hex).
    Enrolled {
        device_id: String,
        cert_pem: String,
        ca_pem: String,
        hub_signing_key: String,
    },
    EnrollRefused {
        reason: EnrollRefusal,
    },
}

impl Message for EnrollRequest {
    const OTHER_DIRECTION: &'static [&'static str] = &["enrolled", "enroll_refused"];

    fn kind(&self) -> &'static str {
        "enroll"
    }
}

impl Message for EnrollResponse {
    const OTHER_DIRECTION: &'static [&'static str] = &["enroll"];

    fn kind(&self) -> &'static str {
        match self {
            EnrollResponse::Enrolled { .. } => "enrolled",
            EnrollResponse::EnrollRefused { .. } => "enroll_refused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollRefusal {
    UnknownToken,
    UsedToken,
    ExpiredToken,
    BadCsr,
    /// The hub could not record the enrollment (its store failed); the token is still valid.
    HubError,
}

impl EnrollRefusal {
    pub fn describe(self) -> &'static str {
        match self {
            EnrollRefusal::UnknownToken => "the hub does not know this enrollment token",
            EnrollRefusal::UsedToken => "this enrollment token was already used",
            EnrollRefusal::ExpiredToken => "this enrollment token has expired",
            EnrollRefusal::BadCsr => "the hub could not use the certificate request",
            EnrollRefusal::HubError => {
                "the hub could not record the enrollment (see its log); the token is still valid, try again"
            }
        }
    }
}
