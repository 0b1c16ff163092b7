//! A real LDAP directory for the single sign-on tests: OpenLDAP's `slapd` from Debian (with
//! `ldap-utils` for `ldapadd`/`ldapmodify`), installed with apt-get when missing. Each instance
//! runs in the foreground with a generated `slapd.conf` and an mdb database in a temporary
//! folder of its own, listens on free loopback ports (`ldap://`, which also offers StartTLS, and
//! `ldaps://`, both with a certificate from a CA of its own), and is stopped when dropped.
//!
//! The directory, under [`BASE_DN`]:
//! ```text
//! cn=admin,dc=example,dc=test            the rootdn (ADMIN_DN, ADMIN_PASSWORD): seeds and changes
//! cn=hub,ou=services,dc=example,dc=test  a service account that can search (SERVICE_DN, …)
//! uid=<uid>,ou=people,…                  inetOrgPerson, userPassword as {SSHA}, mail
//! cn=<cn>,ou=groups,…                    groupOfNames; `member` DNs (plus a placeholder, since
//!                                        groupOfNames needs one member), and the memberof
//!                                        overlay keeps each user's `memberOf`
//! ```
//! Anonymous clients can only bind; bound users and the service account read everything but
//! passwords. Like Active Directory, the server takes a simple bind with a DN and an empty
//! password as an unauthenticated bind and answers success (`allow bind_anon_dn`): a client
//! that passes an empty password through "logs in".

use base64::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

const SLAPD: &str = "/usr/sbin/slapd";
const LDAPMODIFY: &str = "/usr/bin/ldapmodify";
pub const BASE_DN: &str = "dc=example,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=test";
pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const SERVICE_DN: &str = "cn=hub,ou=services,dc=example,dc=test";
pub const SERVICE_PASSWORD: &str = "service-secret";
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=test";
pub const GROUPS_DN: &str = "ou=groups,dc=example,dc=test";
/// The member every group has, because groupOfNames needs one (no entry has this DN).
const PLACEHOLDER_MEMBER: &str = "cn=nobody,dc=example,dc=test";

/// A person: `uid=<uid>,ou=people,dc=example,dc=test`, with `mail` `<uid>@example.test`.
#[derive(Debug, Clone)]
pub struct LdapUser {
    pub uid: String,
    pub password: String,
}

impl LdapUser {
    pub fn new(uid: &str, password: &str) -> LdapUser {
        LdapUser { uid: uid.into(), password: password.into() }
    }
}

/// A group: `cn=<cn>,ou=groups,dc=example,dc=test` whose members are these uids.
#[derive(Debug, Clone)]
pub struct LdapGroup {
    pub cn: String,
    pub members: Vec<String>,
}

impl LdapGroup {
    pub fn new(cn: &str, members: &[&str]) -> LdapGroup {
        LdapGroup { cn: cn.into(), members: members.iter().map(|m| m.to_string()).collect() }
    }
}

pub struct Slapd {
    url: String,
    ldaps_url: String,
    /// Each group's member uids, as seeded and changed through this handle.
    members: Mutex<BTreeMap<String, BTreeSet<String>>>,
    dir: tempfile::TempDir,
    child: Child,
}

impl Slapd {
    /// A directory with these users and groups (and the service account).
    pub fn start(users: &[LdapUser], groups: &[LdapGroup]) -> Slapd {
        install();
        // Ports are picked by binding and releasing them; should another process take one in
        // between, slapd exits at once and other ports are tried.
        for _ in 0..5 {
            let ports = [free_port(), free_port()];
            if ports[0] != ports[1]
                && let Some(slapd) = Slapd::start_on(ports)
            {
                slapd.seed(users, groups);
                return slapd;
            }
        }
        panic!("slapd did not start on any of 5 pairs of free ports");
    }

    fn start_on([port, tls_port]: [u16; 2]) -> Option<Slapd> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("db")).unwrap();
        let now = SystemTime::now();
        let ca = redtether_pki::Ca::create(now, Duration::from_secs(86400)).unwrap();
        let (cert, key) =
            ca.issue_server(&["127.0.0.1".into(), "localhost".into()], now, Duration::from_secs(86400)).unwrap();
        std::fs::write(path.join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(path.join("server.pem"), cert).unwrap();
        std::fs::write(path.join("server.key"), key).unwrap();
        std::fs::write(path.join("slapd.conf"), config(path)).unwrap();
        let url = format!("ldap://127.0.0.1:{port}");
        let ldaps_url = format!("ldaps://127.0.0.1:{tls_port}");
        // -d: stay in the foreground; 256 (stats) logs each connection and operation to stderr.
        let mut child = Command::new(SLAPD)
            .arg("-f")
            .arg(path.join("slapd.conf"))
            .arg("-h")
            .arg(format!("{url}/ {ldaps_url}/"))
            .args(["-d", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("slapd.log")).unwrap())
            .spawn()
            .expect("slapd runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            let listening = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if listening(port) && listening(tls_port) {
                return Some(Slapd { url, ldaps_url, members: Mutex::default(), dir, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "slapd did not listen on ports {port} and {tls_port} within 10 s; its log: {}",
            read(&path.join("slapd.log"))
        );
    }

    /// Adds the tree, the service account, the users and the groups, online (the memberof
    /// overlay fills in `memberOf` only for changes it sees).
    fn seed(&self, users: &[LdapUser], groups: &[LdapGroup]) {
        let mut ldif = String::new();
        entry(
            &mut ldif,
            BASE_DN,
            &[("objectClass", "dcObject"), ("objectClass", "organization"), ("dc", "example"), ("o", "example")],
        );
        for ou in ["people", "groups", "services"] {
            entry(&mut ldif, &format!("ou={ou},{BASE_DN}"), &[("objectClass", "organizationalUnit"), ("ou", ou)]);
        }
        let service_hash = ssha(SERVICE_PASSWORD);
        entry(
            &mut ldif,
            SERVICE_DN,
            &[
                ("objectClass", "applicationProcess"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "hub"),
                ("userPassword", &service_hash),
            ],
        );
        for user in users {
            let (hash, mail) = (ssha(&user.password), format!("{}@example.test", user.uid));
            entry(
                &mut ldif,
                &user_dn(&user.uid),
                &[
                    ("objectClass", "inetOrgPerson"),
                    ("uid", &user.uid),
                    ("cn", &user.uid),
                    ("sn", &user.uid),
                    ("mail", &mail),
                    ("userPassword", &hash),
                ],
            );
        }
        for group in groups {
            self.members.lock().unwrap().insert(group.cn.clone(), group.members.iter().cloned().collect());
            let members: Vec<String> = group.members.iter().map(|uid| user_dn(uid)).collect();
            let mut attrs =
                vec![("objectClass", "groupOfNames"), ("cn", group.cn.as_str()), ("member", PLACEHOLDER_MEMBER)];
            attrs.extend(members.iter().map(|m| ("member", m.as_str())));
            entry(&mut ldif, &group_dn(&group.cn), &attrs);
        }
        self.modify(&["-a"], &ldif);
    }

    /// `ldap://127.0.0.1:PORT` (StartTLS offered).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn ldaps_url(&self) -> &str {
        &self.ldaps_url
    }

    /// The PEM file of the CA that issued the server's certificate (for 127.0.0.1 and
    /// localhost).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn base_dn(&self) -> &str {
        BASE_DN
    }

    pub fn service_dn(&self) -> &str {
        SERVICE_DN
    }

    pub fn service_password(&self) -> &str {
        SERVICE_PASSWORD
    }

    /// Makes `uid` a member of group `cn`.
    pub fn add_member(&self, cn: &str, uid: &str) {
        self.change_members(&[("add", cn)], uid);
    }

    /// Takes `uid` out of group `cn`.
    pub fn remove_member(&self, cn: &str, uid: &str) {
        self.change_members(&[("delete", cn)], uid);
    }

    /// Makes `uid` a member of exactly the groups `cns` (of those the directory was started
    /// with), in one ldapmodify run.
    pub fn set_groups(&self, uid: &str, cns: &[&str]) {
        let changes: Vec<(&str, String)> = {
            let members = self.members.lock().unwrap();
            if let Some(unknown) = cns.iter().find(|cn| !members.contains_key(**cn)) {
                panic!("no group {unknown:?} in this directory");
            }
            members
                .iter()
                .filter_map(|(cn, uids)| match (uids.contains(uid), cns.contains(&cn.as_str())) {
                    (false, true) => Some(("add", cn.clone())),
                    (true, false) => Some(("delete", cn.clone())),
                    _ => None,
                })
                .collect()
        };
        let changes: Vec<(&str, &str)> = changes.iter().map(|(how, cn)| (*how, cn.as_str())).collect();
        self.change_members(&changes, uid);
    }

    /// Adds `uid` to or deletes it from the `member` of each group: `(how, cn)`.
    fn change_members(&self, changes: &[(&str, &str)], uid: &str) {
        if changes.is_empty() {
            return;
        }
        let mut ldif = String::new();
        for (how, cn) in changes {
            ldif.push_str(&format!("dn:: {}\nchangetype: modify\n{how}: member\n", b64(&group_dn(cn))));
            ldif.push_str(&format!("member:: {}\n-\n\n", b64(&user_dn(uid))));
        }
        self.modify(&[], &ldif);
        let mut members = self.members.lock().unwrap();
        for (how, cn) in changes {
            let uids = members.entry(cn.to_string()).or_default();
            if *how == "add" {
                uids.insert(uid.to_string());
            } else {
                uids.remove(uid);
            }
        }
    }

    /// Runs ldapmodify as the rootdn with `ldif` on stdin.
    fn modify(&self, extra: &[&str], ldif: &str) {
        let mut child = Command::new(LDAPMODIFY)
            .args(["-x", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify runs");
        child.stdin.take().unwrap().write_all(ldif.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify failed ({}): {}\nLDIF:\n{ldif}\nslapd's log: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// slapd's log so far, for failure messages.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("slapd.log"))
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `uid=<uid>,ou=people,dc=example,dc=test`, the value escaped as RFC 4514 says.
pub fn user_dn(uid: &str) -> String {
    format!("uid={},{PEOPLE_DN}", escape_dn_value(uid))
}

/// `cn=<cn>,ou=groups,dc=example,dc=test`.
pub fn group_dn(cn: &str) -> String {
    format!("cn={},{GROUPS_DN}", escape_dn_value(cn))
}

/// RFC 4514 section 2.4, so that test users may have commas, plus signs and such in their
/// names.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let leading = i == 0 && (c == ' ' || c == '#');
        let trailing = i == last && c == ' ';
        if leading || trailing || matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=') {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         moduleload memberof\n\
         pidfile {d}/slapd.pid\n\
         argsfile {d}/slapd.args\n\
         TLSCACertificateFile {d}/ca.pem\n\
         TLSCertificateFile {d}/server.pem\n\
         TLSCertificateKeyFile {d}/server.key\n\
         allow bind_anon_dn\n\
         \n\
         database mdb\n\
         maxsize 16777216\n\
         suffix \"{BASE_DN}\"\n\
         rootdn \"{ADMIN_DN}\"\n\
         rootpw {ADMIN_PASSWORD}\n\
         directory {d}/db\n\
         index objectClass eq\n\
         index uid eq\n\
         index member eq\n\
         \n\
         overlay memberof\n\
         memberof-group-oc groupOfNames\n\
         memberof-member-ad member\n\
         memberof-memberof-ad memberOf\n\
         memberof-refint true\n\
         \n\
         access to attrs=userPassword\n  by anonymous auth\n  by * none\n\
         access to *\n  by users read\n  by * none\n"
    )
}

/// Appends an LDIF record; every value base64 (`attr:: …`), so any character is safe.
fn entry(ldif: &mut String, dn: &str, attrs: &[(&str, &str)]) {
    ldif.push_str(&format!("dn:: {}\n", b64(dn)));
    for (name, value) in attrs {
        ldif.push_str(&format!("{name}:: {}\n", b64(value)));
    }
    ldif.push('\n');
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `{SSHA}`: SHA-1 of the password and an 8-byte salt, then the salt, base64 — what
/// `slappasswd` makes.
fn ssha(password: &str) -> String {
    let mut salt = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(password.as_bytes());
    ctx.update(&salt);
    let mut hashed = ctx.finish().as_ref().to_vec();
    hashed.extend_from_slice(&salt);
    format!("{{SSHA}}{}", b64_bytes(&hashed))
}

fn b64_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Installs slapd and ldap-utils if missing; the system's own slapd the package starts (on
/// port 389, with a database of the package's making) is stopped and kept from starting at
/// boot, as the tests need only the program.
fn install() {
    crate::apt::ensure(&crate::apt::Need {
        lock: "slapd.lock",
        programs: &[SLAPD, LDAPMODIFY],
        packages: &["slapd", "ldap-utils"],
        unwanted_service: Some("slapd"),
        for_what: "the LDAP tests",
    });
}
