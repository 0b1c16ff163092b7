//! The access decision: one pure function from what was asked, by whom, under which policy, to
//! forward (and as whom Node-RED should see it), answer locally, or refuse. Deny by default:
//! only the cases written here pass.

use super::auth::tokens::scope_covers;
use super::auth::{Via, Who};
use super::space::{AdminRoute, Space, admin_route, space_of};
use crate::config::Role;
pub use crate::supervisor::Perm;
use http::Method;

/// What the gate enforces, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub node_auth: NodeMode,
    pub protection: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    None,
    Basic,
    Users,
}

/// The facts about a request the decision needs (all from its canonical form and headers).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub method: &'a Method,
    pub key: &'a str,
    pub upgrade: bool,
    /// `X-HTTP-Method-Override` and friends, or `_method` in the query.
    pub method_override: bool,
    /// `access_token` in the query (Node-RED would accept it as a bearer token).
    pub access_token_param: bool,
    /// Origin / Sec-Fetch-Site say another site sent this.
    pub cross_site: bool,
}

/// How Node-RED sees a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// No credential: Node-RED answers only what it serves to anyone.
    Anonymous,
    /// The named user with full rights, or read rights only.
    As { user: String, perm: Perm },
}

/// The gate answers these itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    LoginScheme,
    Login,
    Logout,
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// 401: no or bad credentials.
    Unauthenticated,
    /// 403: authenticated, but the role does not allow it.
    Role,
    /// 403: a bearer token outside its scope, or used in admin space.
    TokenScope,
    /// 403 `{"error":"protection_mode"}`.
    Protection,
    /// 403: a browser on another site is driving ambient credentials.
    CrossSite,
    /// 400: method override, or a credential in the query.
    BadRequest(&'static str),
    /// 405 on a gate endpoint.
    Method,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward(Upstream),
    Local(Local),
    Deny(Denial),
}

/// Reads change nothing: GET, HEAD and OPTIONS (a websocket upgrade is a GET).
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub fn decide(policy: Policy, facts: Facts<'_>, who: &Who) -> Decision {
    match space_of(facts.key) {
        Space::Node => node_space(policy, facts, who),
        Space::Admin(rest) => admin_space(policy, facts, who, admin_route(rest)),
    }
}

fn node_space(policy: Policy, facts: Facts<'_>, who: &Who) -> Decision {
    let pass = Decision::Forward(Upstream::Anonymous);
    match (policy.node_auth, who) {
        (NodeMode::None, _) => pass,
        (NodeMode::Basic, Who::NodeUser { .. }) => pass,
        (NodeMode::Users, Who::User { .. }) => pass,
        (NodeMode::Users, Who::Token { scope, .. }) => match scope {
            Some(scope) if !scope_covers(scope, facts.key) => Decision::Deny(Denial::TokenScope),
            _ => pass,
        },
        _ => Decision::Deny(Denial::Unauthenticated),
    }
}

fn admin_space(policy: Policy, facts: Facts<'_>, who: &Who, route: AdminRoute) -> Decision {
    if facts.method_override {
        return Decision::Deny(Denial::BadRequest("method override is not accepted"));
    }
    if facts.access_token_param {
        return Decision::Deny(Denial::BadRequest("credentials in the query are not accepted"));
    }
    // Node-RED takes a websocket in admin space only at /comms; anywhere else nothing answers
    // the upgrade until Node-RED drops it seconds later, so it is refused here at once.
    if facts.upgrade && route != AdminRoute::Comms {
        return Decision::Deny(Denial::BadRequest("websocket upgrades are accepted only at /comms"));
    }
    let read = is_read(facts.method);
    match route {
        AdminRoute::Login => return local_if(facts.method == Method::GET, Local::LoginScheme),
        AdminRoute::Token => return local_if(facts.method == Method::POST, Local::Login),
        AdminRoute::Revoke => return local_if(facts.method == Method::POST, Local::Logout),
        AdminRoute::Public if read && !facts.upgrade => {
            return Decision::Forward(Upstream::Anonymous);
        }
        // Browsers cannot authenticate a websocket upgrade; Node-RED waits for the auth frame,
        // which it checks with the agent. Only the Origin is the gate's to check here.
        AdminRoute::Comms if facts.cross_site => return Decision::Deny(Denial::CrossSite),
        AdminRoute::Comms if facts.upgrade && *who == Who::Anonymous => {
            return Decision::Forward(Upstream::Anonymous);
        }
        _ => {}
    }

    let (user, role, via) = match who {
        Who::User { name, role, via } => (name, *role, *via),
        Who::Token { .. } => return Decision::Deny(Denial::TokenScope),
        Who::Anonymous | Who::NodeUser { .. } => return Decision::Deny(Denial::Unauthenticated),
    };
    if role == Role::Dashboard {
        return Decision::Deny(Denial::Role);
    }
    if via == Via::Basic && facts.cross_site && !read {
        return Decision::Deny(Denial::CrossSite);
    }
    if route == AdminRoute::TokenApi {
        return match (role, policy.protection) {
            (Role::Owner, false) => Decision::Local(Local::Tokens),
            (Role::Owner, true) => Decision::Deny(Denial::Protection),
            _ => Decision::Deny(Denial::Role),
        };
    }
    if policy.protection {
        let allowed = read && matches!(route, AdminRoute::Public | AdminRoute::EditorRead | AdminRoute::Comms);
        return if allowed {
            Decision::Forward(Upstream::As { user: user.clone(), perm: Perm::Read })
        } else {
            Decision::Deny(Denial::Protection)
        };
    }
    match (role, read) {
        (Role::Viewer, false) => Decision::Deny(Denial::Role),
        (Role::Viewer, true) => Decision::Forward(Upstream::As { user: user.clone(), perm: Perm::Read }),
        _ => Decision::Forward(Upstream::As { user: user.clone(), perm: Perm::Full }),
    }
}

fn local_if(method_ok: bool, local: Local) -> Decision {
    if method_ok { Decision::Local(local) } else { Decision::Deny(Denial::Method) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Policy = Policy { node_auth: NodeMode::Users, protection: false };
    const PROTECTED: Policy = Policy { node_auth: NodeMode::Users, protection: true };

    fn facts<'a>(method: &'a Method, key: &'a str) -> Facts<'a> {
        Facts { method, key, upgrade: false, method_override: false, access_token_param: false, cross_site: false }
    }

    fn user(role: Role) -> Who {
        Who::User { name: "ann".into(), role, via: Via::Session }
    }

    fn full() -> Decision {
        Decision::Forward(Upstream::As { user: "ann".into(), perm: Perm::Full })
    }
    fn read() -> Decision {
        Decision::Forward(Upstream::As { user: "ann".into(), perm: Perm::Read })
    }

    #[test]
    fn roles_in_admin_space() {
        let (get, post) = (Method::GET, Method::POST);
        let flows = "/device-editor/flows";
        assert_eq!(decide(OPEN, facts(&post, flows), &user(Role::Owner)), full());
        assert_eq!(decide(OPEN, facts(&post, flows), &user(Role::Member)), full());
        assert_eq!(decide(OPEN, facts(&get, flows), &user(Role::Viewer)), read());
        assert_eq!(decide(OPEN, facts(&post, flows), &user(Role::Viewer)), Decision::Deny(Denial::Role));
        assert_eq!(decide(OPEN, facts(&get, flows), &user(Role::Dashboard)), Decision::Deny(Denial::Role));
        assert_eq!(decide(OPEN, facts(&get, flows), &Who::Anonymous), Decision::Deny(Denial::Unauthenticated));
        assert_eq!(decide(OPEN, facts(&get, "/device-editor/context/global"), &user(Role::Viewer)), read());
    }

    #[test]
    fn tokens_are_for_node_space_within_their_scope() {
        let get = Method::GET;
        let scoped = Who::Token { name: "t".into(), scope: Some("/api".into()) };
        assert_eq!(decide(OPEN, facts(&get, "/api/x"), &scoped), Decision::Forward(Upstream::Anonymous));
        assert_eq!(decide(OPEN, facts(&get, "/apix"), &scoped), Decision::Deny(Denial::TokenScope));
        assert_eq!(decide(OPEN, facts(&get, "/device-editor/flows"), &scoped), Decision::Deny(Denial::TokenScope));
        let unscoped = Who::Token { name: "t".into(), scope: None };
        assert_eq!(decide(OPEN, facts(&get, "/device-editor/settings"), &unscoped), Decision::Deny(Denial::TokenScope));
    }

    #[test]
    fn node_space_modes() {
        let get = Method::GET;
        let none = Policy { node_auth: NodeMode::None, protection: false };
        let basic = Policy { node_auth: NodeMode::Basic, protection: false };
        assert_eq!(decide(none, facts(&get, "/x"), &Who::Anonymous), Decision::Forward(Upstream::Anonymous));
        assert_eq!(decide(basic, facts(&get, "/x"), &Who::Anonymous), Decision::Deny(Denial::Unauthenticated));
        assert_eq!(
            decide(basic, facts(&get, "/x"), &Who::NodeUser { name: "n".into() }),
            Decision::Forward(Upstream::Anonymous)
        );
        assert_eq!(
            decide(basic, facts(&get, "/x"), &user(Role::Owner)),
            Decision::Deny(Denial::Unauthenticated),
            "basic mode takes only its user"
        );
        assert_eq!(decide(OPEN, facts(&get, "/x"), &user(Role::Dashboard)), Decision::Forward(Upstream::Anonymous));
        assert_eq!(decide(OPEN, facts(&get, "/x"), &Who::Anonymous), Decision::Deny(Denial::Unauthenticated));
    }

    #[test]
    fn protection_mode_is_read_only_for_everyone() {
        let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
        let owner = user(Role::Owner);
        assert_eq!(decide(PROTECTED, facts(&get, "/device-editor/flows"), &owner), read());
        assert_eq!(decide(PROTECTED, facts(&post, "/device-editor/flows"), &owner), Decision::Deny(Denial::Protection));
        assert_eq!(
            decide(PROTECTED, facts(&put, "/device-editor/nodes/x"), &owner),
            Decision::Deny(Denial::Protection)
        );
        assert_eq!(
            decide(PROTECTED, facts(&delete, "/device-editor/context/global/x"), &owner),
            Decision::Deny(Denial::Protection)
        );
        assert_eq!(
            decide(PROTECTED, facts(&post, "/device-editor/inject/abc"), &owner),
            Decision::Deny(Denial::Protection)
        );
        assert_eq!(
            decide(PROTECTED, facts(&get, "/device-editor/diagnostics"), &owner),
            Decision::Deny(Denial::Protection)
        );
        assert_eq!(
            decide(PROTECTED, facts(&get, "/device-editor/red/main.js"), &Who::Anonymous),
            Decision::Forward(Upstream::Anonymous)
        );
        assert_eq!(
            decide(PROTECTED, facts(&post, "/device-editor/red/main.js"), &owner),
            Decision::Deny(Denial::Protection)
        );
        assert_eq!(
            decide(PROTECTED, facts(&post, "/device-editor/redtether/tokens"), &owner),
            Decision::Deny(Denial::Protection)
        );
        // Node space is untouched by protection mode.
        assert_eq!(decide(PROTECTED, facts(&post, "/api/x"), &owner), Decision::Forward(Upstream::Anonymous));
    }

    #[test]
    fn overrides_and_query_credentials_are_refused_in_admin_space() {
        let get = Method::GET;
        let mut f = facts(&get, "/device-editor/flows");
        f.method_override = true;
        assert!(matches!(decide(OPEN, f, &user(Role::Owner)), Decision::Deny(Denial::BadRequest(_))));
        let mut f = facts(&get, "/device-editor/flows");
        f.access_token_param = true;
        assert!(matches!(decide(OPEN, f, &user(Role::Owner)), Decision::Deny(Denial::BadRequest(_))));
    }

    #[test]
    fn cross_site_basic_writes_and_websockets_are_refused() {
        let (get, post) = (Method::GET, Method::POST);
        let basic = Who::User { name: "ann".into(), role: Role::Owner, via: Via::Basic };
        let mut f = facts(&post, "/device-editor/flows");
        f.cross_site = true;
        assert_eq!(decide(OPEN, f, &basic), Decision::Deny(Denial::CrossSite));
        assert_eq!(decide(OPEN, f, &user(Role::Owner)), full(), "a session token is never sent by another site");
        let mut ws = facts(&get, "/device-editor/comms");
        ws.upgrade = true;
        assert_eq!(decide(OPEN, ws, &Who::Anonymous), Decision::Forward(Upstream::Anonymous));
        ws.cross_site = true;
        assert_eq!(decide(OPEN, ws, &Who::Anonymous), Decision::Deny(Denial::CrossSite));
    }

    #[test]
    fn websockets_in_admin_space_only_at_comms() {
        let get = Method::GET;
        for key in ["/device-editor/flows", "/device-editor", "/device-editor/comms/x", "/device-editor/red/main.js"] {
            let mut f = facts(&get, key);
            f.upgrade = true;
            for who in [Who::Anonymous, user(Role::Owner)] {
                assert!(matches!(decide(OPEN, f, &who), Decision::Deny(Denial::BadRequest(_))), "{key} {who:?}");
            }
        }
        let mut comms = facts(&get, "/device-editor/comms");
        comms.upgrade = true;
        assert_eq!(decide(OPEN, comms, &Who::Anonymous), Decision::Forward(Upstream::Anonymous));
    }

    #[test]
    fn gate_endpoints_take_their_method_only() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(
            decide(OPEN, facts(&get, "/device-editor/auth/login"), &Who::Anonymous),
            Decision::Local(Local::LoginScheme)
        );
        assert_eq!(
            decide(OPEN, facts(&post, "/device-editor/auth/token"), &Who::Anonymous),
            Decision::Local(Local::Login)
        );
        assert_eq!(
            decide(OPEN, facts(&get, "/device-editor/auth/token"), &Who::Anonymous),
            Decision::Deny(Denial::Method)
        );
        assert_eq!(
            decide(OPEN, facts(&get, "/device-editor/redtether/tokens"), &user(Role::Member)),
            Decision::Deny(Denial::Role)
        );
        assert_eq!(
            decide(OPEN, facts(&get, "/device-editor/redtether/tokens"), &user(Role::Owner)),
            Decision::Local(Local::Tokens)
        );
    }

    mod properties {
        use super::*;
        use crate::gate::canon::{Target, canonicalize};
        use proptest::prelude::*;

        fn target() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_string()),
                Just("//".to_string()),
                Just("./".to_string()),
                Just("../".to_string()),
                Just("device-editor".to_string()),
                Just("DEVICE-EDITOR".to_string()),
                Just("Device-Editor".to_string()),
                Just("%64evice-editor".to_string()),
                Just("flows".to_string()),
                Just("FLOWS".to_string()),
                Just("nodes".to_string()),
                Just("inject".to_string()),
                Just("context".to_string()),
                Just("red".to_string()),
                Just("vendor".to_string()),
                Just("comms".to_string()),
                Just("%2e".to_string()),
                Just("%2f".to_string()),
                "[a-z0-9._~-]{1,6}",
            ];
            proptest::collection::vec(piece, 1..10).prop_map(|p| format!("/{}", p.concat()))
        }

        fn method() -> impl Strategy<Value = Method> {
            prop_oneof![Just(Method::POST), Just(Method::PUT), Just(Method::DELETE), Just(Method::PATCH)]
        }

        proptest! {
            /// Whatever the spelling, a write that lands in admin space is refused in protection
            /// mode, for every role.
            #[test]
            fn protection_refuses_every_admin_write(path in target(), method in method(), role in prop_oneof![Just(Role::Owner), Just(Role::Member), Just(Role::Viewer), Just(Role::Dashboard)]) {
                let Ok(canonical) = canonicalize(Target { path: &path, query: None, authority: None, host_header: None }) else { return Ok(()) };
                if matches!(space_of(&canonical.key), Space::Admin(_)) {
                    let who = Who::User { name: "x".into(), role, via: Via::Session };
                    let decision = decide(PROTECTED, facts(&method, &canonical.key), &who);
                    prop_assert!(matches!(decision, Decision::Deny(_)), "{path} -> {} : {decision:?}", canonical.key);
                }
            }

            /// Reads that protection mode lets through reach Node-RED with read rights only.
            #[test]
            fn protection_forwards_reads_with_read_rights_only(path in target()) {
                let Ok(canonical) = canonicalize(Target { path: &path, query: None, authority: None, host_header: None }) else { return Ok(()) };
                if matches!(space_of(&canonical.key), Space::Admin(_)) {
                    let decision = decide(PROTECTED, facts(&Method::GET, &canonical.key), &user(Role::Owner));
                    let full = Decision::Forward(Upstream::As { user: "ann".into(), perm: Perm::Full });
                    prop_assert_ne!(decision, full);
                }
            }
        }
    }
}
