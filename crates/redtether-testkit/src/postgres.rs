//! A real PostgreSQL server for the hub's shared-store tests: Debian's `postgresql` package
//! (installed with apt-get when missing; the cluster and service the package sets up are
//! stopped and disabled again). Each instance is a cluster of its own, made with `initdb` in a
//! temporary folder, run by `pg_ctl` on a free loopback port with its socket in that folder,
//! TLS on (a server certificate from a CA of its own, for 127.0.0.1 and localhost), and
//! stopped (`immediate`) and removed when dropped.
//!
//! As root (the test machine) the cluster belongs to the `postgres` user, since PostgreSQL
//! refuses to run as root; as anyone else it runs as that user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

/// The superuser the clusters are made with (no password: `trust` on loopback).
pub const SUPERUSER: &str = "postgres";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    databases: AtomicU32,
}

impl Postgres {
    /// A new, empty cluster, listening.
    pub fn start() -> Postgres {
        install();
        let bin = bin_dir();
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = tempfile::Builder::new().prefix("redtether-pg-").tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let now = SystemTime::now();
        let ca = redtether_pki::Ca::create(now, Duration::from_secs(86400)).unwrap();
        let (cert, key) =
            ca.issue_server(&["127.0.0.1".into(), "localhost".into()], now, Duration::from_secs(86400)).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.crt"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("the postgresql package adds the postgres user");
            for path in [dir.path(), &data, &dir.path().join("server.crt"), &dir.path().join("server.key")] {
                nix::unistd::chown(path, Some(user.uid), Some(user.gid)).unwrap();
            }
        }
        let pg = |program: &str| {
            let mut command = if as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            command.stdin(Stdio::null()).stdout(Stdio::null());
            command
        };
        let initdb = pg("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8", "--locale=C"])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        // Ports are picked by binding and releasing them; should another process take one in
        // between, the server does not start and another is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {dir} -c ssl=on -c ssl_cert_file={dir}/server.crt \
                 -c ssl_key_file={dir}/server.key -c max_connections=200 -c fsync=on -c synchronous_commit=on",
                dir = dir.path().display()
            );
            let started = pg("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "30", "-l"])
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "start"])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if started.success() {
                return Postgres { dir, bin, port, as_postgres, databases: AtomicU32::new(0) };
            }
        }
        panic!(
            "PostgreSQL did not start on any of 5 free ports; its log: {}",
            self::read(&dir.path().join("server.log"))
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; its URL, without TLS (`sslmode=disable`: the client would
    /// otherwise try TLS, offered by the server, and check its certificate).
    pub fn create_database(&self) -> String {
        let name = format!("hub{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, &name])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
        format!("{}?sslmode=disable", self.url(&name))
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The PEM file of the CA that issued the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs one SQL statement with `psql` as the superuser; its output (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-d", database])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("server.log"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The newest installed major version's programs (`/usr/lib/postgresql/<major>/bin`).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect("PostgreSQL's programs under /usr/lib/postgresql/<major>/bin")
}

/// Installs PostgreSQL if missing; the cluster the package starts is stopped and disabled.
fn install() {
    let have = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("bin/initdb").is_file());
    if have {
        return;
    }
    crate::apt::ensure(&crate::apt::Need {
        lock: "postgresql",
        programs: &["/usr/lib/postgresql/15/bin/postgres", "/usr/lib/postgresql/15/bin/initdb"],
        packages: &["postgresql"],
        unwanted_service: Some("postgresql"),
        for_what: "the hub's PostgreSQL store tests",
    });
}
