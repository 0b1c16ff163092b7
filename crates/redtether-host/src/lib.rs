//! `redtether-host`: what both daemons need from the machine they run on, written once.
//!
//! - [`config_file`]: reading a TOML configuration with errors that name file, line and key.
//! - [`state_dir`]: the state directory's lock and private (0600, atomic) files.
//! - [`sled_open`]: opening a sled database and making its writes durable.
//! - [`control`]: the control socket's server and client.
//! - [`tls_server`]: HTTPS for an HTTP listener (certificate files or a self-signed pair).
//! - [`notify`], [`logging`]: living under systemd (sd_notify, watchdog, journald fields).
//! - [`signals`], [`exit`], [`heap`]: stop signals, exit codes, the allocator's settings.
//! - [`code_pages`]: giving back the program's code pages only the start used.
//! - [`deadline`]: waiting for a state machine's next deadline.
//! - [`manpage`]: man pages from the clap definitions.
//! - [`ratelimit`]: token buckets per source address (the gate's and the hub API's limits).
//! - [`metrics_server`]: a listener that answers Prometheus scrapes, and the text encoding.
//! - [`proc_stat`]: a process's CPU time and memory, the machine's load and a filesystem's free
//!   space, read from `/proc` and `statvfs`.
//!
//! It knows nothing of Node-RED, devices or the tunnel's protocol.

pub mod code_pages;
pub mod config_file;
pub mod control;
pub mod deadline;
pub mod exit;
pub mod heap;
pub mod logging;
pub mod manpage;
pub mod metrics_server;
pub mod notify;
pub mod proc_stat;
pub mod ratelimit;
pub mod signals;
pub mod sled_open;
pub mod state_dir;
pub mod tls_server;
pub mod udp;

/// A whole error chain on one line (`a: b: c`), for messages at the binaries' edge.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers that print their source's text already need it only once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn chains_are_joined_without_repeats() {
        let e = Outer(Inner(std::io::Error::other("disk full")));
        assert_eq!(super::error_chain(&e), "outer: inner: disk full");
    }
}
