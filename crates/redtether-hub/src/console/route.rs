//! Which console page or form a request is for: pure, so every path the console answers (and
//! every one it leaves to the API and the editor) is unit-tested.
//!
//! Pages are `GET`; forms post to `/console/…`, apart from the pages, so that no path is both a
//! page and an action and the editor's `/devices/{id}/editor/…` stays the editor's.

use http::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An embedded stylesheet or script, by its file name.
    Asset(String),
    Fleet,
    Devices,
    Device(String),
    /// A device's Node-RED output, followed live.
    DeviceLogs(String),
    Audit,
    Enroll,
    Operators,
    Account,
    Groups,
    Group(String),
    Rollout(String),
    /// The devices' online state as server-sent events.
    Live,
    Action(Action),
}

/// A form of the groups pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAction {
    Create,
    /// Adds and removes devices.
    Devices(String),
    /// Starts a rollout.
    Deploy(String),
    Delete(String),
    /// `pause`, `resume` or `abort` a rollout.
    Steer(String, &'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Logout,
    Restart(String),
    Policy(String),
    /// Adds an editor user to the device's policy, or replaces one of the same name.
    PutUser(String),
    RemoveUser(String, String),
    CreateToken(String),
    RevokeToken(String, String),
    Snapshot(String),
    Deploy(String),
    RefreshSbom(String),
    Enroll,
    AddOperator,
    SetRole(String),
    RemoveOperator(String),
    Reset2fa(String),
    CreateApiToken,
    RevokeApiToken(String),
    ChangePassword,
    OfferTotp,
    ConfirmTotp,
    RenewRecoveryCodes,
    Group(GroupAction),
}

/// The console's route for `method` and `path`; `None` for everything else (the API, the
/// editor, login and setup).
pub fn route(method: &Method, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if *method == Method::GET || *method == Method::HEAD {
        return Some(match segments.as_slice() {
            [""] => Route::Fleet,
            ["devices"] | ["devices", ""] => Route::Devices,
            ["devices", id] if !id.is_empty() => Route::Device(id.to_string()),
            ["devices", id, "logs"] if !id.is_empty() => Route::DeviceLogs(id.to_string()),
            ["audit"] => Route::Audit,
            ["enroll"] => Route::Enroll,
            ["operators"] => Route::Operators,
            ["account"] => Route::Account,
            ["groups"] | ["groups", ""] => Route::Groups,
            ["groups", name] => Route::Group(name.to_string()),
            ["rollouts", id] if !id.is_empty() => Route::Rollout(id.to_string()),
            ["console", "live"] => Route::Live,
            ["assets", name] if !name.is_empty() => Route::Asset(name.to_string()),
            _ => return None,
        });
    }
    if *method != Method::POST {
        return None;
    }
    let own = |s: &&str| s.to_string();
    let action = match segments.as_slice() {
        ["console", "logout"] => Action::Logout,
        ["console", "devices", id, "restart"] => Action::Restart(own(id)),
        ["console", "devices", id, "policy"] => Action::Policy(own(id)),
        ["console", "devices", id, "users"] => Action::PutUser(own(id)),
        ["console", "devices", id, "users", name, "remove"] => Action::RemoveUser(own(id), own(name)),
        ["console", "devices", id, "tokens"] => Action::CreateToken(own(id)),
        ["console", "devices", id, "tokens", name, "revoke"] => Action::RevokeToken(own(id), own(name)),
        ["console", "devices", id, "snapshot"] => Action::Snapshot(own(id)),
        ["console", "devices", id, "deploy"] => Action::Deploy(own(id)),
        ["console", "devices", id, "sbom"] => Action::RefreshSbom(own(id)),
        ["console", "enroll"] => Action::Enroll,
        ["console", "operators"] => Action::AddOperator,
        ["console", "operators", name, "role"] => Action::SetRole(own(name)),
        ["console", "operators", name, "remove"] => Action::RemoveOperator(own(name)),
        ["console", "operators", name, "reset-2fa"] => Action::Reset2fa(own(name)),
        ["console", "account", "tokens"] => Action::CreateApiToken,
        ["console", "account", "password"] => Action::ChangePassword,
        ["console", "account", "totp"] => Action::OfferTotp,
        ["console", "account", "totp", "confirm"] => Action::ConfirmTotp,
        ["console", "account", "recovery-codes"] => Action::RenewRecoveryCodes,
        ["console", "account", "tokens", name, "revoke"] => Action::RevokeApiToken(own(name)),
        ["console", "groups"] => Action::Group(GroupAction::Create),
        ["console", "groups", name, "devices"] => Action::Group(GroupAction::Devices(own(name))),
        ["console", "groups", name, "deploy"] => Action::Group(GroupAction::Deploy(own(name))),
        ["console", "groups", name, "delete"] => Action::Group(GroupAction::Delete(own(name))),
        ["console", "rollouts", id, verb @ ("pause" | "resume" | "abort")] => {
            let verb = match *verb {
                "pause" => "pause",
                "resume" => "resume",
                _ => "abort",
            };
            Action::Group(GroupAction::Steer(own(id), verb))
        }
        _ => return None,
    };
    // An empty id or name is no resource; the API would answer 404 for it anyway.
    let named = |s: &str| !s.is_empty();
    let ok = match &action {
        Action::RevokeToken(a, b) | Action::RemoveUser(a, b) => named(a) && named(b),
        Action::Restart(a)
        | Action::Policy(a)
        | Action::PutUser(a)
        | Action::CreateToken(a)
        | Action::Snapshot(a)
        | Action::Deploy(a)
        | Action::RefreshSbom(a)
        | Action::SetRole(a)
        | Action::RemoveOperator(a)
        | Action::Reset2fa(a)
        | Action::RevokeApiToken(a)
        | Action::Group(
            GroupAction::Devices(a) | GroupAction::Deploy(a) | GroupAction::Delete(a) | GroupAction::Steer(a, _),
        ) => named(a),
        Action::Logout
        | Action::Enroll
        | Action::AddOperator
        | Action::CreateApiToken
        | Action::ChangePassword
        | Action::OfferTotp
        | Action::ConfirmTotp
        | Action::RenewRecoveryCodes
        | Action::Group(GroupAction::Create) => true,
    };
    ok.then_some(Route::Action(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_gets_of_their_own_paths() {
        let get = |p: &str| route(&Method::GET, p);
        assert_eq!(get("/"), Some(Route::Fleet));
        assert_eq!(get("/devices"), Some(Route::Devices));
        assert_eq!(get("/devices/"), Some(Route::Devices));
        assert_eq!(get("/devices/pump-1"), Some(Route::Device("pump-1".into())));
        assert_eq!(get("/devices/pump-1/logs"), Some(Route::DeviceLogs("pump-1".into())));
        assert_eq!(get("/devices//logs"), None);
        assert_eq!(get("/audit"), Some(Route::Audit));
        assert_eq!(get("/assets/console.css"), Some(Route::Asset("console.css".into())));
        assert_eq!(get("/console/live"), Some(Route::Live));
        assert_eq!(get("/groups"), Some(Route::Groups));
        assert_eq!(get("/groups/prod"), Some(Route::Group("prod".into())));
        assert_eq!(get("/rollouts/r1"), Some(Route::Rollout("r1".into())));
        assert_eq!(get("/rollouts/"), None);
    }

    #[test]
    fn group_forms_name_their_group_or_rollout() {
        let post = |p: &str| route(&Method::POST, p);
        assert_eq!(post("/console/groups"), Some(Route::Action(Action::Group(GroupAction::Create))));
        assert_eq!(
            post("/console/groups/prod/deploy"),
            Some(Route::Action(Action::Group(GroupAction::Deploy("prod".into()))))
        );
        assert_eq!(
            post("/console/rollouts/r1/abort"),
            Some(Route::Action(Action::Group(GroupAction::Steer("r1".into(), "abort"))))
        );
        assert_eq!(post("/console/rollouts/r1/restart"), None);
        assert_eq!(post("/console/groups//devices"), None);
        assert_eq!(post("/groups/prod"), None);
    }

    #[test]
    fn the_api_the_editor_login_and_setup_are_not_the_consoles() {
        for path in [
            "/api/devices",
            "/devices/pump-1/editor/",
            "/devices/pump-1/http/ui",
            "/login",
            "/setup",
            "/auth/oidc/login",
            "/assets/",
            "",
        ] {
            assert_eq!(route(&Method::GET, path), None, "{path}");
        }
        // A page is never an action, and an action never a page.
        assert_eq!(route(&Method::POST, "/devices/pump-1"), None);
        assert_eq!(route(&Method::GET, "/console/devices/pump-1/restart"), None);
        assert_eq!(route(&Method::DELETE, "/console/logout"), None);
        assert_eq!(route(&Method::PUT, "/devices"), None);
    }

    #[test]
    fn actions_name_their_device_or_operator_and_refuse_empty_names() {
        let post = |p: &str| route(&Method::POST, p);
        assert_eq!(post("/console/devices/d1/restart"), Some(Route::Action(Action::Restart("d1".into()))));
        assert_eq!(
            post("/console/devices/d1/tokens/ci/revoke"),
            Some(Route::Action(Action::RevokeToken("d1".into(), "ci".into())))
        );
        assert_eq!(post("/console/operators/bo/role"), Some(Route::Action(Action::SetRole("bo".into()))));
        assert_eq!(post("/console/devices//restart"), None);
        assert_eq!(post("/console/devices/d1/tokens//revoke"), None);
        assert_eq!(post("/console/devices/d1/reboot"), None);
    }
}
