//! A hub's first start: with no operator at all, nobody could log in to it, so it makes the
//! first owner (`first_owner`, `admin` with the built-in defaults) exactly as
//! `redtether-hub operator add --role owner` would — an account with a one-time setup code,
//! recorded as `operator.added` — and says where to use the code. Every later start finds an
//! operator and only says where the console is.

use crate::control::{RequestError, add_operator};
use crate::identity::OperatorRole;
use crate::store::{AccountSource, HubStore, OperatorRecord};
use redtether_proto::audit::Actor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The account a first start made.
#[derive(Debug)]
pub struct Made {
    pub name: String,
    /// One-time, valid for `[auth] setup_code_lifetime`.
    pub setup_code: String,
}

/// Makes `name` an owner with a setup code if the hub has no operator at all (local or from
/// single sign-on); `None` if it has one. The state directory's lock is held, so no
/// `operator add` on a stopped hub runs at the same time.
pub fn ensure(store: &HubStore, name: &str, setup_secs: u64, now: u64) -> Result<Option<Made>, RequestError> {
    if !store.operators()?.is_empty() {
        return Ok(None);
    }
    let record = OperatorRecord::new(name, OperatorRole::Owner, None, AccountSource::Local, now);
    let setup_code = add_operator(store, record, false, setup_secs, Actor::System)?;
    Ok(Some(Made { name: name.to_string(), setup_code }))
}

/// Where a browser on this machine reaches the console: the API's address, with a wildcard
/// listen address replaced by loopback.
pub fn console_url(api: SocketAddr, tls: bool) -> String {
    let ip = match api.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/", SocketAddr::new(ip, api.port()))
}

/// The browser's setup page with the code filled in.
pub fn setup_url(console: &str, code: &str) -> String {
    // Setup codes are URL-safe base64 after their prefix: nothing to escape.
    format!("{console}setup?code={code}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use crate::store::{AccountSource, OperatorRecord};
    use redtether_proto::audit::HubEventKind;

    #[test]
    fn a_hub_without_operators_gets_one_owner_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let made = ensure(&store, "admin", 60, 1000).unwrap().expect("no operator yet");
        let record = store.operator_by_setup_code(&made.setup_code, 1059).unwrap().expect("the code sets it up");
        assert_eq!((record.name.as_str(), record.role), ("admin", OperatorRole::Owner));
        assert!(store.operator_by_setup_code(&made.setup_code, 1060).unwrap().is_none(), "it expires");
        assert!(ensure(&store, "admin", 60, 1000).unwrap().is_none(), "the second start makes nothing");
        let text = crate::journal::read(dir.path()).unwrap();
        let added: Vec<_> =
            crate::journal::events(&text).filter(|e| e.kind == HubEventKind::OperatorAdded.as_str()).collect();
        assert_eq!(added.len(), 1, "recorded as operator add records it");
        assert_eq!(added[0].target, "operator:admin");
    }

    #[test]
    fn any_operator_means_no_first_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let sso = OperatorRecord::new("ann", OperatorRole::Viewer, None, AccountSource::Oidc, 1);
        store.add_operator(sso, 60).unwrap();
        assert!(ensure(&store, "admin", 60, 1000).unwrap().is_none());
        assert!(store.operator("admin").unwrap().is_none());
    }

    #[test]
    fn the_console_is_reached_on_loopback() {
        assert_eq!(console_url("127.0.0.1:8443".parse().unwrap(), false), "http://127.0.0.1:8443/");
        assert_eq!(console_url("0.0.0.0:8443".parse().unwrap(), true), "https://127.0.0.1:8443/");
        assert_eq!(console_url("[::]:9000".parse().unwrap(), false), "http://[::1]:9000/");
        assert_eq!(console_url("10.0.0.5:8443".parse().unwrap(), true), "https://10.0.0.5:8443/");
        assert_eq!(setup_url("http://127.0.0.1:8443/", "rtsetup_x-y"), "http://127.0.0.1:8443/setup?code=rtsetup_x-y");
    }
}
