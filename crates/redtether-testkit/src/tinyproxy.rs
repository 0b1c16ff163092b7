//! A real forward HTTP proxy for the tests of clients that must use the proxy the environment
//! names: Debian's tinyproxy (`tinyproxy-bin`, the program without the system service),
//! installed with apt-get when it is missing. Each instance runs in the foreground on a free
//! loopback port, with its configuration and log in a temporary folder of its own, and is
//! stopped when dropped. [`TinyproxyOptions`] adds Basic proxy authentication (`BasicAuth`: a
//! request without the right `Proxy-Authorization` gets 407) and limits the ports `CONNECT` may
//! reach (`ConnectPort`: any other port gets 403).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROGRAM: &str = "/usr/bin/tinyproxy";
/// The name the proxy gives itself in the `Via` header of what it forwards.
pub const VIA_NAME: &str = "redtether-test-proxy";

/// What [`Tinyproxy::start_with`] configures beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct TinyproxyOptions {
    /// `BasicAuth user password` (letters and digits only: tinyproxy's parser takes no quoting).
    pub basic_auth: Option<(String, String)>,
    /// `ConnectPort` lines: `CONNECT` only to these ports. Empty: to any port.
    pub connect_ports: Vec<u16>,
}

pub struct Tinyproxy {
    /// `http://127.0.0.1:PORT`, as `HTTP_PROXY` and `HTTPS_PROXY` take it.
    pub url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Tinyproxy {
    /// A proxy with no authentication that tunnels to any port.
    pub fn start() -> Tinyproxy {
        Tinyproxy::start_with(&TinyproxyOptions::default())
    }

    pub fn start_with(options: &TinyproxyOptions) -> Tinyproxy {
        install();
        // The port is picked by binding and releasing it; should another process take it in
        // between, tinyproxy exits at once and another port is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(proxy) = Tinyproxy::start_on(port, options) {
                return proxy;
            }
        }
        panic!("tinyproxy did not start on any of 5 free ports");
    }

    fn start_on(port: u16, options: &TinyproxyOptions) -> Option<Tinyproxy> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tinyproxy.conf");
        let log = dir.path().join("tinyproxy.log");
        let mut file = std::fs::File::create(&config).unwrap();
        // LogLevel Connect logs each request line (and each CONNECT), which is what the tests
        // read to see what the proxy carried.
        write!(
            file,
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 64\n\
             Allow 127.0.0.1\nViaProxyName \"{VIA_NAME}\"\n",
            log.display()
        )
        .unwrap();
        if let Some((user, password)) = &options.basic_auth {
            writeln!(file, "BasicAuth {user} {password}").unwrap();
        }
        for port in &options.connect_ports {
            writeln!(file, "ConnectPort {port}").unwrap();
        }
        drop(file);
        let mut child = Command::new(PROGRAM)
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Tinyproxy { url: format!("http://127.0.0.1:{port}"), dir, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tinyproxy did not listen on 127.0.0.1:{port} within 10 s; its log: {}", read(&log));
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.url.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("the url ends in a port")
    }

    /// The proxy's log so far, for failure messages.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("tinyproxy.log"))
    }

    /// The request lines the proxy received so far, in order, as its log has them:
    /// `GET http://host:port/path HTTP/1.1` for a forwarded request, `CONNECT host:port HTTP/1.1`
    /// for a tunnel.
    pub fn requests(&self) -> Vec<String> {
        read(&self.dir.path().join("tinyproxy.log"))
            .lines()
            .filter_map(|line| line.split_once("Request (file descriptor ")?.1.split_once("): "))
            .map(|(_, request)| request.trim().to_string())
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Installs `tinyproxy-bin` if it is missing.
fn install() {
    crate::apt::ensure(&crate::apt::Need {
        lock: "tinyproxy.lock",
        programs: &[PROGRAM],
        packages: &["tinyproxy-bin"],
        unwanted_service: None,
        for_what: "the proxy tests",
    });
}
