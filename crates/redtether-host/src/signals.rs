//! SIGTERM and SIGINT as a stream of stop requests.

use std::fmt;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        })
    }
}

pub struct Signals {
    term: Signal,
    int: Signal,
    received: Option<StopSignal>,
}

impl Signals {
    /// Installs the handlers; from here on these signals no longer kill the process outright.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())?, received: None })
    }

    /// Waits for the next stop signal.
    pub async fn next(&mut self) -> StopSignal {
        let got = tokio::select! {
            _ = self.term.recv() => StopSignal::Term,
            _ = self.int.recv() => StopSignal::Int,
        };
        self.received = Some(got);
        got
    }

    /// The last signal received, if any.
    pub fn received(&self) -> Option<StopSignal> {
        self.received
    }
}
