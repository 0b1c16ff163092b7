//! `sd_notify(3)` over the datagram socket named by `NOTIFY_SOCKET`, including abstract
//! (`@name`) sockets.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state changes to the service manager; does nothing when not run by one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`. An unusable value is logged and notifications are disabled.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let value = value.to_string_lossy().into_owned();
        match open(&value) {
            Ok(target) => Notifier { target: Some(target) },
            Err(e) => {
                tracing::warn!(socket = %value, error = %e, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
                Notifier { target: None }
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}\nMAINPID={}", one_line(status), std::process::id()));
    }
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        // Non-blocking: a service manager that stopped reading must not stall the agent.
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

fn open(value: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match value.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None if value.starts_with('/') => SocketAddr::from_pathname(value)?,
        None => {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an absolute path or @name"));
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// Newlines would start new assignments in the notification.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when the watchdog is meant for this
/// process (`WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the systemd watchdog every `interval` while the runtime schedules tasks: a stalled
/// event loop stops the pings and systemd restarts the service.
pub async fn keep_watchdog(
    interval: Duration,
    notifier: std::sync::Arc<Notifier>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => notifier.watchdog(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("redtether-test-{}", crate::state_dir::random_secret(6));
        let receiver = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let (socket, addr) = open(&format!("@{name}")).unwrap();
        let notifier = Notifier { target: Some((socket, addr)) };
        notifier.status("line one\nline two");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=line one line two");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let (socket, addr) = open(path.to_str().unwrap()).unwrap();
        Notifier { target: Some((socket, addr)) }.stopping("bye");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(open("notify.sock").is_err());
    }
}
