//! Fleet rollouts: a snapshot deployed to a group's devices stage by stage (a canary, then
//! waves), each stage waiting until its devices applied it and stayed healthy, halting by
//! itself when more devices fail than the plan allows and then rolling back what it moved.
//!
//! - [`plan`]: the plan, checked, and its stages.
//! - [`machine`]: the rollout as a pure state machine on passed-in time, and its durable record.
//! - [`driver`]: the task that observes devices, steps every active rollout, stores it, and
//!   carries out what it decided (snapshots of devices before they move, deployments, events);
//!   it picks up rollouts left active by a previous run of the hub.

pub mod driver;
pub mod machine;
pub mod plan;

pub use driver::{Command, CommandError, Rollouts};
pub use machine::{DeviceState, Entry, Rollout, State};
pub use plan::{Plan, PlanError, RawPlan};
