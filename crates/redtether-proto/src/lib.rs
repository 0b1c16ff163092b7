//! `redtether-proto`: everything the agent and the hub must agree on, and nothing that does I/O.
//!
//! - [`wire`]: ALPNs, the length-prefixed JSON frame codec, the messages typed per direction
//!   (what the agent sends on the control stream, what the hub sends, enrollment, the header of
//!   a forwarded stream), the device's status and the QUIC error codes.
//! - [`audit`]: audit events as the device records and seals them ([`audit::AuditKind`] is the
//!   only way to name one), the hash chain's canonical encoding, and the rule a delivered batch
//!   must follow.
//! - [`assertion`], [`deployment`], [`policy`], [`signed`], [`seal`]: what the hub signs for a
//!   device (operator assertions, deployment envelopes, security policies) and what it seals to a device's key.
//! - [`session`]: both ends of the control stream as state machines — frames, events and
//!   timer ticks in, actions out — plus how a connection's end is classified and when the agent
//!   reconnects. The binaries run them over quinn; the tests here run them on virtual time.
//! - [`backoff`], [`time`], [`names`]: small pure helpers both ends use.
//!
//! No tokio, no quinn, no file or socket in this crate: every function is tested with plain
//! values, and a schema change fails to compile at both ends.

pub mod assertion;
pub mod audit;
pub mod backoff;
pub mod deployment;
pub mod names;
pub mod policy;
pub mod seal;
pub mod session;
pub mod signed;
pub mod time;
pub mod wire;
