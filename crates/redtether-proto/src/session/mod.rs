//! The control stream's two ends as sans-IO state machines, and the agent's reconnect
//! decisions.
//!
//! - [`agent::AgentSession`] and [`hub::HubSession`]: one control stream each. Frames, outside
//!   events and timer ticks go in (`on_frame`, `on_event`, `on_tick(now)`); actions come out
//!   (`poll_action`: send this frame, close with this code, record this, ask for that), and
//!   `next_deadline` says when to tick next. They never touch a socket, a file or a clock.
//! - [`ending`]: how a connection's end is classified (refused vs lost vs hub restarted).
//! - [`link`]: what the agent's reconnect loop does after each attempt.
//! - [`renewal`]: when a certificate is renewed and retried.
//! - [`clock`]: the virtual monotonic time they all run on.
//!
//! The tests in this module run both machines against each other through the real codec on
//! virtual time, with a model journal and a model hub store.

pub mod agent;
pub mod clock;
pub mod ending;
pub mod hub;
pub mod link;
pub mod renewal;

pub use agent::{AgentAction, AgentConfig, AgentEvent, AgentSession};
pub use clock::Instant;
pub use ending::{Closed, Ending, classify};
pub use hub::{HubAction, HubEvent, HubSession, WaitingDeployment, WaitingPolicy};
pub use link::{Decision, Link, Outcome, TunnelState};

use crate::wire::{FrameDecoder, FrameError, Message};

/// One end of a control stream, as its I/O shell drives it.
pub trait ControlEnd {
    /// What arrives on the stream.
    type Incoming: Message;
    fn on_frame(&mut self, frame: Self::Incoming, now: Instant);
    /// A frame that could not be decoded: the stream is closed with the error's code.
    fn on_frame_error(&mut self, error: &FrameError);
}

/// Hands the next whole frame waiting in `decoder` (or the error it is) to `end`; whether there
/// was one. Shells call it until it says no, then wait for more bytes.
pub fn feed<E: ControlEnd>(decoder: &mut FrameDecoder, end: &mut E, now: Instant) -> bool {
    match decoder.next_message::<E::Incoming>() {
        Ok(Some(frame)) => end.on_frame(frame, now),
        Ok(None) => return false,
        Err(e) => end.on_frame_error(&e),
    }
    true
}

#[cfg(test)]
mod tests;
