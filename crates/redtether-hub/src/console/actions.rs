//! The console's forms, each turned into the API request a script would make (`Api::call`):
//! the API decides and records; the console only says what came of it. After a change the
//! browser is sent back to the page (303, so a reload does not send the form again) with
//! `done=` naming it; a refusal is answered with the API's status and a page saying why; a
//! secret the API made (a token, a setup code, an enrollment line, recovery codes) is shown on
//! the answer itself, once, and never put in a URL.

use super::device::{Shown, Tab};
use super::layout::{self, Notice};
use super::people::{AccountShown, Secret};
use super::route::Action;
use super::{Form, Query, seg};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

/// What a `done=` word says on the page.
pub fn describe_done(word: &str) -> String {
    match word {
        "restarted" => "Node-RED restarted.",
        "policy" => "The new policy is on its way to the device.",
        "revoked" => "Revoked.",
        "snapshot" => "Snapshot taken.",
        "deployed" => "The deployment is on its way to the device.",
        "sbom" => "The device sent a new SBOM.",
        "role" => "Role changed; their sessions ended.",
        "removed" => "Removed.",
        "group" => "Group made.",
        "members" => "The group's devices changed; those that joined get its policy.",
        "rollout" => "Rollout started.",
        "pause" => "Rollout paused: no more devices move until it is resumed.",
        "resume" => "Rollout resumed.",
        "abort" => "Rollout aborted: no more devices move.",
        _ => "Done.",
    }
    .to_string()
}

/// What an API error code says on the refusal page. A code this list does not know is shown
/// as it is only when it looks like a code (a device's answer could carry any text), and
/// always as text.
pub fn describe_failure(word: &str) -> String {
    let known = match word {
        "forbidden" => "Your role does not allow this.",
        "device_offline" => "The device is offline; try again when it is connected.",
        "device_timeout" => "The device did not answer in time.",
        "connection_lost" => "The connection to the device ended before it answered.",
        "unknown_device" => "No device has this id.",
        "unknown_snapshot" => "No such snapshot.",
        "unknown_group" => "No group has this name.",
        "group_exists" => "A group with this name exists.",
        "group_not_empty" => "The group still has devices; remove them first.",
        "group_empty" => "The group has no devices to roll out to.",
        "rollout_active" => "This group has a rollout in progress; pause or abort it first.",
        "not_applicable" => "The rollout is not in a state this applies to.",
        "invalid_plan" => "The plan is not valid: waves must increase and end at 100, wait is like 60s.",
        "credentials_not_portable" => "The snapshot's credentials open only on the device it came from.",
        "invalid_policy" => "The policy is not valid (a basic user needs a name and a password).",
        "invalid_password" => "That password is too short or too weak.",
        "invalid_token" | "invalid" => "A value is not valid: check the name, lifetime and scope.",
        "bad_body" => "The flows are not a JSON array of nodes.",
        "conflict" => "That name is taken, or the account does not exist.",
        "cannot_change_yourself" => "You cannot change or remove your own account here.",
        "wrong_password" => "The password is not right.",
        "weak_password" => "That password is too short or too weak.",
        "wrong_totp" => "The code is not right; try the next one your app shows.",
        "no_totp_offered" => "Set up a new authenticator first.",
        "session_required" => "Log in to change your account.",
        "single_sign_on_account" => {
            "This account logs in through single sign-on; its provider keeps its second factor."
        }
        "body_too_large" | "form_too_large" => "That is too large.",
        _ => "",
    };
    if !known.is_empty() {
        known.to_string()
    } else if !word.is_empty() && word.len() <= 48 && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        format!("The hub refused: {word}.")
    } else {
        "The hub refused.".to_string()
    }
}

/// The API's error code in an answer, for the refusal page.
fn code(answer: &Value) -> String {
    answer["error"]
        .as_str()
        .unwrap_or("refused")
        .chars()
        .filter(|c| c.is_ascii_lowercase() || *c == '_')
        .take(48)
        .collect()
}

/// After a change: back to `page` saying `done` (303), or — refused — a page with the API's
/// status saying why, and the way back.
pub(super) fn back(caller: &Caller, page: &str, status: StatusCode, answer: &Value, done: &str) -> Response<ApiBody> {
    if status.is_success() {
        let join = if page.contains('?') { '&' } else { '?' };
        layout::see_other(&format!("{page}{join}done={done}"))
    } else {
        refused(caller, page, status, &code(answer))
    }
}

/// A refusal page: `status`, what `word` means, a link back to `page`.
pub(super) fn refused(caller: &Caller, page: &str, status: StatusCode, word: &str) -> Response<ApiBody> {
    layout::refusal(caller, status, &describe_failure(word), page)
}

/// The document a policy form makes from the policy in force: only the fields the form shows
/// change; users, rate limits and CORS stay as they are.
pub fn policy_from_form(current: &Value, form: &Form) -> Result<Value, &'static str> {
    let mut doc = desired(current);
    doc["protection"] = json!(form.get("protection") == Some("on"));
    let mode = form.text("http_auth");
    doc["http_auth"] = match mode {
        "none" | "users" => json!({ "mode": mode }),
        "basic" => {
            let user = form.text("basic_user");
            let password = form.get("basic_password").unwrap_or_default();
            let same_user = current["desired"]["http_auth"]["user"].as_str() == Some(user);
            let hash = if !password.is_empty() {
                crate::identity::secrets::hash_password(password).map_err(|_| "invalid_password")?
            } else if same_user && let Some(kept) = current["desired"]["http_auth"]["password_hash"].as_str() {
                kept.to_string()
            } else {
                return Err("invalid_policy");
            };
            json!({ "mode": "basic", "user": user, "password_hash": hash })
        }
        _ => return Err("invalid_policy"),
    };
    Ok(doc)
}

/// The policy in force with `user` added, or in place of the user of the same name.
pub fn policy_with_user(current: &Value, form: &Form) -> Result<Value, &'static str> {
    let name = form.text("name");
    let role = form.text("role");
    if !redtether_proto::names::valid_name(name) || !redtether_proto::policy::ROLES.contains(&role) {
        return Err("invalid_policy");
    }
    let hash = crate::identity::secrets::hash_password(form.get("password").unwrap_or_default())
        .map_err(|_| "invalid_password")?;
    let mut doc = desired(current);
    let mut users: Vec<Value> = doc["users"].as_array().cloned().unwrap_or_default();
    users.retain(|u| u["name"] != name);
    users.push(json!({ "name": name, "password_hash": hash, "role": role }));
    doc["users"] = Value::Array(users);
    Ok(doc)
}

/// The policy in force without the user `name`.
pub fn policy_without_user(current: &Value, name: &str) -> Value {
    let mut doc = desired(current);
    if let Some(users) = doc["users"].as_array_mut() {
        users.retain(|u| u["name"] != name);
    }
    doc
}

/// The operator's document of the policy in force (`GET …/policy`), or an empty one.
fn desired(current: &Value) -> Value {
    match current.get("desired") {
        Some(Value::Object(fields)) => Value::Object(fields.clone()),
        _ => json!({}),
    }
}

impl Api {
    /// Changes the device's policy with `change` (given the policy in force) and goes back to
    /// its security tab.
    async fn change_policy_by_form(
        &self,
        caller: &Caller,
        id: &str,
        done: &str,
        change: impl FnOnce(&Value) -> Result<Value, &'static str>,
    ) -> Response<ApiBody> {
        let path = format!("/api/devices/{}/policy", seg(id));
        let page = format!("/devices/{}?tab=security", seg(id));
        let (_, current) = self.call(caller, Method::GET, &path, None).await;
        match change(&current) {
            Ok(doc) => {
                let (status, answer) = self.call(caller, Method::PUT, &path, Some(doc)).await;
                back(caller, &page, status, &answer, done)
            }
            Err(word) => refused(caller, &page, StatusCode::BAD_REQUEST, word),
        }
    }

    pub(super) async fn act(&self, caller: &Caller, action: Action, form: &Form) -> Response<ApiBody> {
        let none = Query::parse(None);
        match action {
            Action::Logout => {
                let answer = self.logout(caller);
                let mut r = layout::see_other("/login");
                if let Some(clear) = answer.headers().get(http::header::SET_COOKIE) {
                    r.headers_mut().insert(http::header::SET_COOKIE, clear.clone());
                }
                r
            }
            Action::Restart(id) => {
                let (status, answer) =
                    self.call(caller, Method::POST, &format!("/api/devices/{}/restart", seg(&id)), None).await;
                back(caller, &format!("/devices/{}", seg(&id)), status, &answer, "restarted")
            }
            Action::Policy(id) => {
                self.change_policy_by_form(caller, &id, "policy", |c| policy_from_form(c, form)).await
            }
            Action::PutUser(id) => {
                self.change_policy_by_form(caller, &id, "policy", |c| policy_with_user(c, form)).await
            }
            Action::RemoveUser(id, name) => {
                self.change_policy_by_form(caller, &id, "policy", |c| Ok(policy_without_user(c, &name))).await
            }
            Action::CreateToken(id) => {
                let mut body = json!({ "name": form.text("name"), "expires_in": form.text("expires_in") });
                if !form.text("scope").is_empty() {
                    body["scope"] = json!(form.text("scope"));
                }
                let path = format!("/api/devices/{}/tokens", seg(&id));
                let (status, answer) = self.call(caller, Method::POST, &path, Some(body)).await;
                match answer["token"].as_str() {
                    Some(token) if status.is_success() => {
                        let shown = Shown::Token { name: form.text("name").to_string(), token: token.to_string() };
                        let notice = Some(Notice::Done("Token made; the device gets it with the next policy.".into()));
                        self.device_tab(caller, &id, Tab::Security, notice, Some(shown), &none).await
                    }
                    _ => back(caller, &format!("/devices/{}?tab=security", seg(&id)), status, &answer, ""),
                }
            }
            Action::RevokeToken(id, name) => {
                let path = format!("/api/devices/{}/tokens/{}", seg(&id), seg(&name));
                let (status, answer) = self.call(caller, Method::DELETE, &path, None).await;
                back(caller, &format!("/devices/{}?tab=security", seg(&id)), status, &answer, "revoked")
            }
            Action::Snapshot(id) => {
                let path = format!("/api/devices/{}/snapshot", seg(&id));
                let (status, answer) = self.call(caller, Method::POST, &path, None).await;
                back(caller, &format!("/devices/{}?tab=snapshots", seg(&id)), status, &answer, "snapshot")
            }
            Action::Deploy(id) => {
                let page = format!("/devices/{}?tab=deployments", seg(&id));
                let body = if !form.text("snapshot").is_empty() {
                    json!({ "snapshot": form.text("snapshot") })
                } else {
                    match serde_json::from_str::<Value>(form.text("flows")) {
                        Ok(flows @ Value::Array(_)) => json!({ "flows": flows }),
                        _ => return refused(caller, &page, StatusCode::BAD_REQUEST, "bad_body"),
                    }
                };
                let path = format!("/api/devices/{}/deploy", seg(&id));
                let (status, answer) = self.call(caller, Method::POST, &path, Some(body)).await;
                back(caller, &page, status, &answer, "deployed")
            }
            Action::RefreshSbom(id) => {
                let path = format!("/api/devices/{}/sbom", seg(&id));
                let (status, answer) = self.call(caller, Method::POST, &path, None).await;
                back(caller, &format!("/devices/{}?tab=sbom", seg(&id)), status, &answer, "sbom")
            }
            Action::Enroll => {
                let body = json!({ "device": form.text("device"), "expires_in": form.text("expires_in") });
                let (status, answer) = self.call(caller, Method::POST, "/api/enrollment-tokens", Some(body)).await;
                match answer["command"].as_str() {
                    Some(command) if status.is_success() => {
                        let title = format!(
                            "Enrollment of {} (until {})",
                            form.text("device"),
                            answer["expires"].as_str().unwrap_or("?")
                        );
                        self.enroll_page(caller, &none, Some(Secret { title, value: command.to_string(), link: None }))
                    }
                    _ => back(caller, "/enroll", status, &answer, ""),
                }
            }
            Action::AddOperator => {
                let body = json!({ "name": form.text("name"), "role": form.text("role"), "email": form.text("email") });
                let (status, answer) = self.call(caller, Method::POST, "/api/operators", Some(body)).await;
                self.setup_code_shown(caller, status, &answer, form.text("name")).await
            }
            Action::SetRole(name) => {
                let path = format!("/api/operators/{}", seg(&name));
                let (status, answer) =
                    self.call(caller, Method::PUT, &path, Some(json!({ "role": form.text("role") }))).await;
                back(caller, "/operators", status, &answer, "role")
            }
            Action::RemoveOperator(name) => {
                let path = format!("/api/operators/{}", seg(&name));
                let (status, answer) = self.call(caller, Method::DELETE, &path, None).await;
                back(caller, "/operators", status, &answer, "removed")
            }
            Action::Reset2fa(name) => {
                let path = format!("/api/operators/{}/reset-2fa", seg(&name));
                let (status, answer) = self.call(caller, Method::POST, &path, None).await;
                self.setup_code_shown(caller, status, &answer, &name).await
            }
            Action::CreateApiToken => {
                let body = json!({ "name": form.text("name"), "scope": form.text("scope"), "expires_in": form.text("expires_in") });
                let (status, answer) = self.call(caller, Method::POST, "/api/tokens", Some(body)).await;
                match answer["token"].as_str() {
                    Some(token) if status.is_success() => {
                        let title = format!("API token {}", form.text("name"));
                        let secret = Secret { title, value: token.to_string(), link: None };
                        self.account_page(caller, &none, Some(AccountShown::Token(secret))).await
                    }
                    _ => back(caller, "/account", status, &answer, ""),
                }
            }
            Action::ChangePassword => {
                let body = json!({ "current": form.get("current").unwrap_or_default(), "new": form.get("new").unwrap_or_default() });
                let (status, answer) = self.call(caller, Method::POST, "/api/me/password", Some(body)).await;
                if status.is_success() {
                    // Every session ended with the old password, this one too.
                    layout::see_other("/login?next=%2Faccount")
                } else {
                    back(caller, "/account", status, &answer, "")
                }
            }
            Action::OfferTotp => {
                let body = json!({ "password": form.get("password").unwrap_or_default() });
                let (status, answer) = self.call(caller, Method::POST, "/api/me/totp", Some(body)).await;
                match (answer["totp_secret"].as_str(), answer["otpauth_uri"].as_str()) {
                    (Some(secret), Some(uri)) if status.is_success() => {
                        let shown = AccountShown::TotpOffer { secret: secret.to_string(), uri: uri.to_string() };
                        self.account_page(caller, &none, Some(shown)).await
                    }
                    _ => back(caller, "/account", status, &answer, ""),
                }
            }
            Action::Group(group) => self.group_act(caller, group, form).await,
            Action::ConfirmTotp | Action::RenewRecoveryCodes => {
                let (path, body) = if action == Action::ConfirmTotp {
                    ("/api/me/totp/confirm", json!({ "totp": form.text("totp") }))
                } else {
                    ("/api/me/recovery-codes", json!({ "password": form.get("password").unwrap_or_default() }))
                };
                let (status, answer) = self.call(caller, Method::POST, path, Some(body)).await;
                match answer["recovery_codes"].as_array() {
                    Some(codes) if status.is_success() => {
                        let codes = codes.iter().filter_map(|c| c.as_str().map(str::to_string)).collect();
                        self.account_page(caller, &none, Some(AccountShown::RecoveryCodes(codes))).await
                    }
                    _ => back(caller, "/account", status, &answer, ""),
                }
            }
            Action::RevokeApiToken(name) => {
                let path = format!("/api/tokens/{}", seg(&name));
                let (status, answer) = self.call(caller, Method::DELETE, &path, None).await;
                back(caller, "/account", status, &answer, "revoked")
            }
        }
    }

    async fn setup_code_shown(
        &self,
        caller: &Caller,
        status: StatusCode,
        answer: &Value,
        name: &str,
    ) -> Response<ApiBody> {
        match answer["setup_code"].as_str() {
            Some(code) if status.is_success() => {
                let link = format!("/setup?code={}", seg(code));
                let title = format!("Setup code for {name}: send them the link or the code");
                let shown = Secret { title, value: code.to_string(), link: Some(link) };
                self.operators_page(caller, &Query::parse(None), Some(shown)).await
            }
            _ => back(caller, "/operators", status, answer, ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn a_policy_form_changes_only_its_own_fields() {
        let current = json!({ "desired": {
            "protection": false, "http_auth": { "mode": "users" },
            "users": [{ "name": "ann", "password_hash": "$argon2id$x", "role": "owner" }],
            "rate_limit": { "requests_per_second": 5.0, "burst": 10 }, "cors_origins": ["https://a.example"] } });
        let doc = policy_from_form(&current, &form(&[("protection", "on"), ("http_auth", "none")])).unwrap();
        assert_eq!(doc["protection"], true);
        assert_eq!(doc["http_auth"], json!({ "mode": "none" }));
        assert_eq!(doc["users"], current["desired"]["users"]);
        assert_eq!(doc["rate_limit"], current["desired"]["rate_limit"]);
        assert_eq!(doc["cors_origins"], current["desired"]["cors_origins"]);
        // No policy yet: the form's fields alone.
        let first = policy_from_form(&json!({ "error": "no_policy" }), &form(&[("http_auth", "users")])).unwrap();
        assert_eq!(first, json!({ "protection": false, "http_auth": { "mode": "users" } }));
    }

    #[test]
    fn basic_auth_needs_a_password_unless_the_same_user_keeps_theirs() {
        let current = json!({ "desired": { "http_auth": { "mode": "basic", "user": "hmi", "password_hash": "$argon2id$kept" } } });
        let kept = policy_from_form(&current, &form(&[("http_auth", "basic"), ("basic_user", "hmi")])).unwrap();
        assert_eq!(kept["http_auth"]["password_hash"], "$argon2id$kept");
        assert_eq!(
            policy_from_form(&current, &form(&[("http_auth", "basic"), ("basic_user", "other")])),
            Err("invalid_policy"),
            "another user does not inherit the password"
        );
        let fresh = policy_from_form(
            &json!({}),
            &form(&[("http_auth", "basic"), ("basic_user", "hmi"), ("basic_password", "long-enough-password-1")]),
        )
        .unwrap();
        assert!(fresh["http_auth"]["password_hash"].as_str().unwrap().starts_with("$argon2"));
        assert_eq!(policy_from_form(&json!({}), &form(&[("http_auth", "<script>")])), Err("invalid_policy"));
    }

    #[test]
    fn users_are_added_replaced_by_name_and_removed_with_the_rest_kept() {
        let current = json!({ "desired": { "protection": true,
            "users": [{ "name": "ann", "password_hash": "$argon2id$a", "role": "owner" }] } });
        let add = form(&[("name", "hmi"), ("password", "long-enough-password-1"), ("role", "dashboard")]);
        let doc = policy_with_user(&current, &add).unwrap();
        assert_eq!(doc["protection"], true);
        let names: Vec<&str> = doc["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["ann", "hmi"]);
        // The same name again replaces the user (with the new password and role).
        let again = form(&[("name", "ann"), ("password", "another-long-password-2"), ("role", "viewer")]);
        let doc2 = policy_with_user(&json!({ "desired": doc }), &again).unwrap();
        let ann: Vec<&Value> = doc2["users"].as_array().unwrap().iter().filter(|u| u["name"] == "ann").collect();
        assert_eq!((ann.len(), ann[0]["role"].as_str()), (1, Some("viewer")));
        assert_eq!(policy_without_user(&json!({ "desired": doc2 }), "ann")["users"].as_array().unwrap().len(), 1);
        for bad in [
            [("name", "a b"), ("password", "long-enough-password-1"), ("role", "owner")],
            [("name", "x"), ("password", "long-enough-password-1"), ("role", "root")],
        ] {
            assert_eq!(policy_with_user(&current, &form(&bad)), Err("invalid_policy"));
        }
        assert_eq!(
            policy_with_user(&current, &form(&[("name", "x"), ("password", "1"), ("role", "viewer")])),
            Err("invalid_password")
        );
    }

    #[test]
    fn unknown_error_codes_are_shown_only_when_they_look_like_codes() {
        assert_eq!(describe_failure("forbidden"), "Your role does not allow this.");
        assert_eq!(describe_failure("rate_limited"), "The hub refused: rate_limited.");
        assert_eq!(describe_failure("Call 555-0100, your account is locked"), "The hub refused.");
        assert_eq!(code(&json!({ "error": "device_offline" })), "device_offline");
        assert_eq!(code(&json!({ "error": "a<b>c" })), "abc");
    }
}
