//! Load for the crash and power-cut tests: threads making failed logins at the gate, each
//! remembering the users whose 401 came back (so their `auth.failed` event was answered for),
//! and a small deterministic random source for when to cut.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One failed HTTP Basic login as `user`; true when its 401 was received.
pub fn failed_login(addr: &str, user: &str) -> bool {
    use base64::Engine;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wrong"));
    let req = format!(
        "GET /device-editor/flows HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head[9..12] == b"401"
}

/// Four threads of failed logins at `addr`, as users `<prefix>-w<thread>-<n>`.
pub struct FailedLogins {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl FailedLogins {
    pub fn start(addr: &str, prefix: &str) -> FailedLogins {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..4)
            .map(|w| {
                let (addr, stop, prefix) = (addr.to_string(), stop.clone(), prefix.to_string());
                std::thread::spawn(move || {
                    let mut answered = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let user = format!("{prefix}-w{w}-{i}");
                        if failed_login(&addr, &user) {
                            answered.push(user);
                        }
                        i += 1;
                    }
                    answered
                })
            })
            .collect();
        FailedLogins { stop, workers }
    }

    /// Stops the threads; the users whose refusal was answered.
    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    }
}

/// xorshift64: the next value of a seeded sequence.
pub fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
