//! The browser's way through an account's setup: `GET /setup` (the setup code and a new
//! password), `POST /setup` (shows the TOTP secret as an inline SVG QR code and as text, and
//! asks for a code of it), `POST /setup/confirm` (shows the ten recovery codes once). Forms are
//! protected like the login form (CSRF cookie, strict CSP, no-store); everything shown that came
//! from a request or an account is escaped.

use crate::api::{Api, ApiBody, boxed, error};
use crate::identity::totp;
use crate::login::{esc, page, read_form};
use crate::setup::{Offer, SetupRefusal};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::IpAddr;

const SETUP_COOKIE: &str = "redtether_setup";

fn start_form(csrf: &str, code: &str, message: &str) -> String {
    format!(
        "<h1>Set up your account</h1>{message}<form method=\"post\" action=\"/setup\">\
         <p><label>Setup code <input name=\"code\" value=\"{}\" autocomplete=\"off\"></label></p>\
         <p><label>New password (12 characters at least) \
         <input name=\"password\" type=\"password\" autocomplete=\"new-password\"></label></p>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><p><button>Continue</button></p></form>",
        esc(code),
        esc(csrf)
    )
}

fn totp_form(csrf: &str, code: &str, secret: &str, uri: &str, message: &str) -> String {
    // The SVG comes from the QR encoder (rectangles only); the URI inside it is not markup.
    let qr = totp::qr_svg(uri).unwrap_or_default();
    format!(
        "<h1>Two-factor authentication</h1>{message}<p>Scan this with your authenticator app, or type the key.</p>\
         {qr}<p>Key: <code>{}</code></p><form method=\"post\" action=\"/setup/confirm\">\
         <p><label>Code from the app <input name=\"totp\" autocomplete=\"one-time-code\" inputmode=\"numeric\"></label></p>\
         <input type=\"hidden\" name=\"code\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><button>Confirm</button></p></form>",
        esc(secret),
        esc(code),
        esc(csrf)
    )
}

fn alert(refusal: &SetupRefusal) -> String {
    format!("<p role=\"alert\">{}</p>", esc(&refusal.to_string()))
}

impl Api {
    pub(super) async fn setup_page(&self, req: Request<Incoming>, peer: IpAddr) -> Response<ApiBody> {
        let confirm = req.uri().path() == "/setup/confirm";
        match (req.method().clone(), confirm) {
            (http::Method::GET, false) => {
                let code = req
                    .uri()
                    .query()
                    .and_then(|q| {
                        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "code").map(|(_, v)| v.into_owned())
                    })
                    .unwrap_or_default();
                let (csrf, cookie) = self.form_cookie(SETUP_COOKIE, "/setup");
                page(StatusCode::OK, &start_form(&csrf, &code, ""), cookie)
            }
            (http::Method::POST, _) => {
                let fields = match read_form(req, SETUP_COOKIE).await {
                    Ok(f) => f,
                    Err(r) => return *r,
                };
                let field = |name: &str| fields.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
                let (csrf, code) = (field("csrf"), field("code"));
                if confirm {
                    return match self.confirm_totp(code, field("totp"), peer) {
                        Ok((operator, codes)) => {
                            let list: String =
                                codes.iter().map(|c| format!("<li><code>{}</code></li>", esc(c))).collect();
                            let body = format!(
                                "<h1>{} is set up</h1><p>Keep these recovery codes somewhere safe: each opens your \
                                 account once if you lose your authenticator. They are not shown again.</p><ul>{list}</ul>\
                                 <p><a href=\"/login\">Log in</a></p>",
                                esc(&operator)
                            );
                            page(StatusCode::OK, &body, None)
                        }
                        Err(SetupRefusal::WrongTotp) => {
                            match self.store.operator_by_setup_code(code, redtether_proto::time::unix_now()) {
                                Ok(Some(account)) if account.totp_pending.is_some() => {
                                    let secret = account.totp_pending.unwrap_or_default();
                                    let uri = totp::uri(&secret, &account.name).unwrap_or_default();
                                    page(
                                        StatusCode::UNAUTHORIZED,
                                        &totp_form(csrf, code, &secret, &uri, &alert(&SetupRefusal::WrongTotp)),
                                        None,
                                    )
                                }
                                _ => page(
                                    StatusCode::UNAUTHORIZED,
                                    &start_form(csrf, "", &alert(&SetupRefusal::InvalidCode)),
                                    None,
                                ),
                            }
                        }
                        Err(refusal) => self.setup_refused(refusal, csrf),
                    };
                }
                match self.set_password(code, field("password"), peer) {
                    Ok(Offer { totp: Some((secret, uri)), .. }) => {
                        page(StatusCode::OK, &totp_form(csrf, code, &secret, &uri, ""), None)
                    }
                    Ok(Offer { operator, totp: None }) => {
                        let body = format!("<h1>{} is set up</h1><p><a href=\"/login\">Log in</a></p>", esc(&operator));
                        page(StatusCode::OK, &body, None)
                    }
                    Err(refusal) => self.setup_refused(refusal, csrf),
                }
            }
            _ => boxed(error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")),
        }
    }

    fn setup_refused(&self, refusal: SetupRefusal, csrf: &str) -> Response<ApiBody> {
        let status = match &refusal {
            SetupRefusal::Limited(_) => return boxed(refusal.json()),
            SetupRefusal::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SetupRefusal::WeakPassword(_) => StatusCode::BAD_REQUEST,
            SetupRefusal::PasswordFirst => StatusCode::CONFLICT,
            SetupRefusal::InvalidCode | SetupRefusal::WrongTotp => StatusCode::UNAUTHORIZED,
        };
        page(status, &start_form(csrf, "", &alert(&refusal)), None)
    }
}
