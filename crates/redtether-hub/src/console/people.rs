//! The pages about who reaches the hub: `/enroll` (an enrollment token and the exact
//! `redtether enroll` line to copy), `/operators` (owners add, change, reset and remove
//! accounts; a new account's setup code is shown once) and `/account` (the caller's account
//! and API tokens).

use super::device::text;
use super::layout::{self, Nav, Notice, csrf_field};
use super::{Query, seg};
use crate::api::{Api, ApiBody};
use crate::caller::Caller;
use crate::store::OperatorRole;
use http::{Method, Response, StatusCode};
use maud::{Markup, html};
use serde_json::Value;

/// What the account page shows once, after one of its forms.
pub enum AccountShown {
    /// A new API token.
    Token(Secret),
    /// A new authenticator's secret, to confirm with a code.
    TotpOffer { secret: String, uri: String },
    /// New recovery codes.
    RecoveryCodes(Vec<String>),
}

/// A secret made by the form just sent, shown once with a copy button.
pub struct Secret {
    pub title: String,
    pub value: String,
    /// A link that uses it (the setup page for a setup code).
    pub link: Option<String>,
}

fn secret(s: &Secret) -> Markup {
    html! {
        div.secret #secret role="status" {
            span { (s.title) " — copy it now, it is not shown again:" }
            code #secret-value { (s.value) }
            button type="button" data-copy="secret-value" hidden { "Copy" }
            @if let Some(link) = &s.link { a href=(link) { "Open" } }
        }
    }
}

fn owners_only(caller: &Caller) -> Option<Response<ApiBody>> {
    (caller.operator.role != OperatorRole::Owner).then(|| {
        layout::message(
            Some(caller),
            StatusCode::FORBIDDEN,
            "Owners only",
            "Only owners enroll devices and manage operators.",
        )
    })
}

impl Api {
    pub(super) fn enroll_page(&self, caller: &Caller, q: &Query, shown: Option<Secret>) -> Response<ApiBody> {
        if let Some(refusal) = owners_only(caller) {
            return refusal;
        }
        let content = html! {
            p { "Make a one-time token for a device, then run the line below on it (as root) before "
                code { "redtether run" } "." }
            @if let Some(s) = &shown { (secret(s)) }
            form.row #enroll-form method="post" action="/console/enroll" {
                (csrf_field(caller))
                label { "Device id" input name="device" required pattern="[A-Za-z0-9._@-]{1,64}" autocomplete="off"; }
                label { "Token valid for" input name="expires_in" value="1h" required; }
                button.primary { "Make enrollment token" }
            }
        };
        let notice = q.notice();
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Enroll, "Enroll a device", notice.as_ref(), content))
    }

    pub(super) async fn operators_page(&self, caller: &Caller, q: &Query, shown: Option<Secret>) -> Response<ApiBody> {
        if let Some(refusal) = owners_only(caller) {
            return refusal;
        }
        let (_, operators) = self.call(caller, Method::GET, "/api/operators", None).await;
        let operators = operators.as_array().cloned().unwrap_or_default();
        let me = caller.operator.name.as_str();
        let roles = ["owner", "member", "viewer", "dashboard"];
        let content = html! {
            @if let Some(s) = &shown { (secret(s)) }
            table #operators {
                thead { tr { th { "Name" } th { "Role" } th { "Login" } th { "Second factor" } th { "E-mail" } th { span.muted { "Actions" } } } }
                tbody {
                    @for o in &operators {
                        @let name = o["name"].as_str().unwrap_or_default();
                        @let base = format!("/console/operators/{}", seg(name));
                        tr {
                            td { (name) }
                            td {
                                @if name == me { (text(&o["role"])) } @else {
                                    form.inline method="post" action={ (base) "/role" } {
                                        (csrf_field(caller))
                                        select name="role" aria-label={ "Role of " (name) } {
                                            @for r in roles { option value=(r) selected[o["role"] == r] { (r) } }
                                        }
                                        " " button { "Change" }
                                    }
                                }
                            }
                            td { (text(&o["source"])) @if o["setup_pending"] == true { " · setup pending" } }
                            td { @if o["totp_enrolled"] == true { "TOTP, " (text(&o["recovery_codes_left"])) " recovery codes left" } @else { "—" } }
                            td { (text(&o["email"])) }
                            td {
                                @if name != me {
                                    @if o["source"] == "local" {
                                        form.inline method="post" action={ (base) "/reset-2fa" } data-confirm={ "Reset the second factor of " (name) "? They set it up again with a new setup code." } {
                                            (csrf_field(caller)) button { "Reset 2FA" }
                                        }
                                        " "
                                    }
                                    form.inline method="post" action={ (base) "/remove" } data-confirm={ "Remove " (name) "? Their sessions and API tokens end at once." } {
                                        (csrf_field(caller)) button.danger { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Add an operator" }
            form.row #add-operator method="post" action="/console/operators" {
                (csrf_field(caller))
                label { "Name" input name="name" required pattern="[A-Za-z0-9._@-]{1,64}" autocomplete="off"; }
                label { "Role" select name="role" { @for r in roles { option value=(r) selected[r == "viewer"] { (r) } } } }
                label { "E-mail (optional)" input type="email" name="email"; }
                button.primary { "Add" }
            }
        };
        let notice = q.notice();
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Operators, "Operators", notice.as_ref(), content))
    }

    pub(super) async fn account_page(
        &self,
        caller: &Caller,
        q: &Query,
        shown: Option<AccountShown>,
    ) -> Response<ApiBody> {
        let (_, me) = self.call(caller, Method::GET, "/api/me", None).await;
        let (_, tokens) = self.call(caller, Method::GET, "/api/tokens", None).await;
        let tokens = tokens.as_array().cloned().unwrap_or_default();
        let content = html! {
            dl.facts {
                dt { "Name" } dd { (text(&me["name"])) }
                dt { "Role" } dd { (text(&me["role"])) }
                dt { "Login" } dd { (text(&me["source"])) }
                dt { "E-mail" } dd { (text(&me["email"])) }
                dt { "Second factor" } dd { @if me["totp_enrolled"] == true { "TOTP, " (text(&me["recovery_codes_left"])) " recovery codes left" } @else { "none" } }
            }
            @if me["source"] == "local" {
                @match &shown {
                    Some(AccountShown::TotpOffer { secret, uri }) => {
                        h2 { "New authenticator" }
                        p { "Scan the code with your authenticator app, or type the key, then confirm with a code from it." }
                        @if let Some(svg) = crate::identity::totp::qr_svg(uri) { div.qr { (maud::PreEscaped(svg)) } }
                        p { "Key: " code #totp-key { (secret) } }
                        form.row #totp-confirm method="post" action="/console/account/totp/confirm" {
                            (csrf_field(caller))
                            label { "Code" input name="totp" inputmode="numeric" autocomplete="one-time-code" required; }
                            button.primary { "Confirm" }
                        }
                    }
                    Some(AccountShown::RecoveryCodes(codes)) => {
                        h2 { "Recovery codes" }
                        div.secret #recovery-codes role="status" {
                            p { "Keep these somewhere safe; each works once, instead of a code, and they are not shown again." }
                            ul { @for c in codes { li { code { (c) } } } }
                        }
                    }
                    _ => {}
                }
                h2 { "Password" }
                form.row #password-form method="post" action="/console/account/password" {
                    (csrf_field(caller))
                    label { "Current password" input type="password" name="current" autocomplete="current-password" required; }
                    label { "New password" input type="password" name="new" autocomplete="new-password" required minlength="12"; }
                    button { "Change password" }
                }
                p.muted { "Changing it ends every session of your account; you log in again with the new one." }
                h2 { "Second factor" }
                form.row #totp-form method="post" action="/console/account/totp" {
                    (csrf_field(caller))
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button { "Set up a new authenticator" }
                }
                form.row #recovery-form method="post" action="/console/account/recovery-codes" {
                    (csrf_field(caller))
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button { "Make new recovery codes" }
                }
            } @else {
                p.muted { "Your account logs in through single sign-on: your password and second factor are your provider's." }
            }
            h2 { "API tokens" }
            @if let Some(AccountShown::Token(s)) = &shown { (secret(s)) }
            @if tokens.is_empty() { p.muted { "No API tokens." } } @else {
                table #api-tokens {
                    thead { tr { th { "Name" } th { "Scope" } th { "Expires" } th { span.muted { "Revoke" } } } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { (text(&t["name"])) } td { (text(&t["scope"])) }
                                td { (text(&t["expires"])) @if t["expired"] == true { " " span.state-bad { "expired" } } }
                                td { form.inline method="post" action={ "/console/account/tokens/" (seg(t["name"].as_str().unwrap_or_default())) "/revoke" } {
                                    (csrf_field(caller)) button.danger { "Revoke" } } }
                            }
                        }
                    }
                }
            }
            form.row #api-token-form method="post" action="/console/account/tokens" {
                (csrf_field(caller))
                label { "Name" input name="name" required; }
                label { "Scope" select name="scope" { @for s in ["read", "operate", "admin"] { option value=(s) { (s) } } } }
                label { "Expires in" input name="expires_in" value="30d" required; }
                button { "Make an API token" }
            }
        };
        let notice = q.notice().or(me.get("error").map(|e| Notice::Failed(describe(e))));
        layout::respond(StatusCode::OK, layout::frame(caller, Nav::Account, "My account", notice.as_ref(), content))
    }
}

fn describe(v: &Value) -> String {
    format!("The hub refused: {}", text(v))
}
