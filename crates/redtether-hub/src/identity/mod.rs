//! Who an operator is and what they may do, decided without I/O: roles and token scopes
//! (`role`), TOTP codes (`totp`), passwords, recovery codes and other secrets (`secrets`),
//! session lifetimes (`session`). The store keeps the records (`store::operators`); the API's
//! account routes (`accounts_api`) put the two together.

pub mod role;
pub mod secrets;
pub mod session;
pub mod totp;

pub use role::{OperatorRole, TokenScope};
