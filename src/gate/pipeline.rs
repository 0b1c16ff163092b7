//! One request through the gate: canonicalise, rate-limit, authenticate, decide, audit, and
//! forward the canonical request — or answer it here. Every request passes [`Pipeline::handle`].

use super::auth::{AuthFailure, Authenticator, Presented, Realm, Via, Who, presented};
use super::canon::{self, Canonical, Target, canonicalize, query_has_param};
use super::cors::Cors;
use super::decision::{Decision, Denial, Facts, Local, NodeMode, Upstream, decide, is_read};
use super::headers::upgrade_protocol;
use super::metrics::{GateMetrics, space_label};
use super::proxy::{GateBody, Proxy, WebsocketSpace};
use super::rules::{Consequences, Rules, Security, consequences};
use super::space::{Space, space_of, upstream_target};
use super::{local, responses};
use crate::audit::{Actor, AuditEvent, AuditKind, Auditor};
use crate::config::Role;
use crate::supervisor::{GATE_TOKEN_HEADER, Perm, UpstreamTokens};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use redtether_host::ratelimit::Limiter;
use redtether_proto::assertion::{Assertion, AssertionError};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Methods the gate passes at all; anything else is 405.
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
/// Headers by which a client asks a server to pretend the method was another one.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];
/// The classification key of a deploy (`POST` to it replaces the flows).
const FLOWS_KEY: &str = "/device-editor/flows";
/// Headers the gate sets for Node-RED; a client's copies never pass.
const USER_HEADER: &str = "x-redtether-user";
const AUTH_HEADER: &str = "x-redtether-auth";
/// The largest chunked request body the gate forwards: Node-RED's own limit on the bodies it
/// parses (`apiMaxLength`, default "5mb"). Bodies with a Content-Length stream and have none.
pub const MAX_CHUNKED_BODY: usize = 5 * 1024 * 1024;
/// How many bytes of chunked bodies the gate holds at once, over all requests, so that many slow
/// uploads cannot make it buffer without bound (a small device has little memory).
pub const CHUNKED_BUDGET: usize = 32 * 1024 * 1024;

pub struct Pipeline {
    pub proxy: Proxy,
    pub auth: Authenticator,
    /// The settings in force; swapped whole by [`Pipeline::enforce`].
    rules: RwLock<Arc<Rules>>,
    generation: AtomicU64,
    /// Makes swaps one at a time (each starts from the one before).
    swapping: Mutex<()>,
    pub upstream_tokens: UpstreamTokens,
    /// Per-source failed-authentication limit (always on).
    pub failed_auth: Limiter,
    /// Requests in flight to Node-RED.
    pub upstream_slots: Arc<Semaphore>,
    /// Bytes of chunked bodies being read whole ([`CHUNKED_BUDGET`] permits).
    pub chunked_budget: Arc<Semaphore>,
    pub audit: Auditor,
    /// `http` or `https`, as clients see the gate.
    pub scheme: &'static str,
    /// What the gate counts (served by `[metrics] listen`).
    pub metrics: GateMetrics,
}

/// Who is at the other end of a connection to the gate.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client on the network, authenticated request by request.
    Network(SocketAddr),
    /// An operator through the tunnel (`hub` is the hub's address): the user the hub's verified
    /// assertion names, or why the assertion was refused. Credentials in the requests
    /// themselves are never looked at.
    Platform { hub: SocketAddr, user: Result<Who, AssertionError> },
}

/// The gate's user for a verified platform assertion (`None`: a role the gate does not know).
pub fn platform_user(assertion: &Assertion) -> Option<Who> {
    let role = Role::parse(&assertion.role)?;
    Some(Who::User { name: format!("{}@platform", assertion.user), role, via: Via::Session })
}

/// The parts of a pipeline that do not change with the settings.
pub struct PipelineParts {
    pub proxy: Proxy,
    pub auth: Authenticator,
    pub upstream_tokens: UpstreamTokens,
    pub failed_auth: Limiter,
    pub upstream_slots: Arc<Semaphore>,
    pub chunked_budget: Arc<Semaphore>,
    pub audit: Auditor,
    pub scheme: &'static str,
    pub metrics: GateMetrics,
}

impl Pipeline {
    pub fn new(parts: PipelineParts, security: Security) -> Pipeline {
        Pipeline {
            proxy: parts.proxy,
            auth: parts.auth,
            rules: RwLock::new(Arc::new(Rules::new(security, 1, None))),
            generation: AtomicU64::new(1),
            swapping: Mutex::new(()),
            upstream_tokens: parts.upstream_tokens,
            failed_auth: parts.failed_auth,
            upstream_slots: parts.upstream_slots,
            chunked_budget: parts.chunked_budget,
            audit: parts.audit,
            scheme: parts.scheme,
            metrics: parts.metrics,
        }
    }

    /// The settings in force now. A request takes them once and keeps them to its end.
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Enforces `security` from the next request on, and ends at once what it no longer allows:
    /// the editor sessions of removed or changed users, and the websockets whose access changed
    /// (see [`consequences`]). Returns what was ended.
    pub fn enforce(&self, security: Security) -> Consequences {
        let _one_at_a_time = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.rules();
        let ended = consequences(&old.security, &security);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let next = Arc::new(Rules::new(security, generation, Some(&old)));
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.auth.forget_verified();
        if !ended.end_sessions_of.is_empty() {
            let count = self.auth.sessions.end_sessions_of(&ended.end_sessions_of);
            tracing::info!(users = ?ended.end_sessions_of, sessions = count, "gate: ended the editor sessions of changed users");
        }
        if ended.close_editor_websockets {
            self.proxy.close_websockets(WebsocketSpace::Editor);
        }
        if ended.close_node_websockets {
            self.proxy.close_websockets(WebsocketSpace::Node);
        }
        ended
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        caller: Caller,
    ) -> Result<Response<GateBody>, Infallible> {
        let switching = req.headers().contains_key(header::UPGRADE) || req.method() == Method::CONNECT;
        let space = space_label(req.uri().path());
        let tunnel = matches!(caller, Caller::Platform { .. });
        let mut response = match caller {
            Caller::Network(peer) => self.serve(req, peer, None).await,
            Caller::Platform { hub, user } => self.serve(req, hub, Some(&user)).await,
        };
        self.metrics.request(space, tunnel, response.status().as_u16());
        // The framing guard stops following a connection at a request that asks to switch
        // protocols, as it cannot know whether the switch happens. When it does not, the
        // connection ends with this answer, so nothing after it is read unjudged.
        if switching && response.status() != StatusCode::SWITCHING_PROTOCOLS {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        platform: Option<&Result<Who, AssertionError>>,
    ) -> Response<GateBody> {
        // Which host is meant comes first: a request that names it twice, or not at all, is
        // refused before it is routed or authenticated by any reading of it.
        let hosts: Vec<&[u8]> = req.headers().get_all(header::HOST).iter().map(HeaderValue::as_bytes).collect();
        let host = match canon::host(&hosts, req.version() >= Version::HTTP_11) {
            Ok(host) => host,
            Err(e) => return responses::bad_request(&e.to_string()),
        };
        let method = req.method().clone();
        if !matches!(
            method,
            Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE | Method::PATCH | Method::OPTIONS
        ) {
            return responses::method_not_allowed(ALLOW);
        }
        let canonical = match canonicalize(Target {
            path: req.uri().path(),
            query: req.uri().query(),
            authority: req.uri().authority().map(|a| a.as_str()),
            host_header: host,
        }) {
            Ok(c) => c,
            Err(e) => return responses::bad_request(&e.to_string()),
        };
        let rules = self.rules();
        let ip = peer.ip();
        if let Some(limiter) = &rules.requests
            && let Err(wait) = limiter.take(ip, Instant::now())
        {
            self.metrics.rate_limited("requests");
            return responses::too_many(wait);
        }
        if Cors::is_preflight(&method, req.headers()) {
            return match rules.cors.allowed(req.headers()) {
                Some(origin) => {
                    let mut r = responses::json(StatusCode::NO_CONTENT, &serde_json::Value::Null);
                    *r.body_mut() = http_body_util::Either::Right(http_body_util::Full::new(bytes::Bytes::new()));
                    r.headers_mut().extend(Cors::preflight_headers(origin));
                    r
                }
                None => responses::error(StatusCode::FORBIDDEN, "cors_origin_not_allowed"),
            };
        }

        let headers = req.headers();
        let facts = Facts {
            method: &method,
            key: &canonical.key,
            upgrade: upgrade_protocol(headers).is_some(),
            method_override: METHOD_OVERRIDE_HEADERS.iter().any(|h| headers.contains_key(*h))
                || query_has_param(canonical.query.as_deref(), "_method"),
            access_token_param: query_has_param(canonical.query.as_deref(), "access_token"),
            cross_site: rules.cors.is_cross_site(headers, self.scheme),
        };
        let space = space_of(&canonical.key);
        let realm = match (space, rules.policy.node_auth) {
            (Space::Admin(_), _) => Realm::Admin,
            (Space::Node, NodeMode::Basic) => Realm::NodeBasic,
            (Space::Node, _) => Realm::NodeUsers,
        };

        // What needs no identity (editor assets, the login endpoints, open node space) is not
        // authenticated at all: no hashing, no failures to count.
        let anonymous = decide(rules.policy, facts, &Who::Anonymous);
        let needs_identity = !matches!(anonymous, Decision::Forward(Upstream::Anonymous) | Decision::Local(_));
        let (who, decision) = if let Some(platform) = platform {
            match platform {
                Ok(who) => (who.clone(), decide(rules.policy, facts, who)),
                Err(refusal) => return self.refuse_platform(*refusal, ip, &method, &canonical).await,
            }
        } else if needs_identity {
            match self.identify(&rules, &presented(headers), realm, ip, &method, &canonical).await {
                Ok(who) => {
                    let decision = decide(rules.policy, facts, &who);
                    (who, decision)
                }
                Err(response) => return response,
            }
        } else {
            (Who::Anonymous, anonymous)
        };

        match decision {
            Decision::Deny(denial) => self.deny(denial, &who, ip, &method, &canonical, space).await,
            // Through the tunnel the hub has already said who this is: the editor is told that
            // no login is needed, so it does not ask for one.
            Decision::Local(Local::LoginScheme) if platform.is_some() => {
                responses::json(StatusCode::OK, &serde_json::json!({}))
            }
            Decision::Local(endpoint) => local::serve(self, endpoint, req, &who, ip).await,
            Decision::Forward(upstream) => self.forward(&rules, req, &canonical, space, &who, upstream, peer).await,
        }
    }

    /// Authenticates, behind the failed-authentication limiter. `Err` is the response to send.
    async fn identify(
        &self,
        rules: &Rules,
        presented: &Presented,
        realm: Realm,
        ip: std::net::IpAddr,
        method: &Method,
        canonical: &Canonical,
    ) -> Result<Who, Response<GateBody>> {
        if let Some(who) = self.auth.cached(&rules.credentials, presented, realm) {
            return Ok(who);
        }
        if *presented != Presented::Nothing
            && let Err(wait) = self.failed_auth.check(ip, Instant::now())
        {
            self.metrics.rate_limited("failed_auth");
            return Err(responses::too_many(wait));
        }
        match self.auth.authenticate(&rules.credentials, presented, realm, SystemTime::now()).await {
            Ok(who) => Ok(who),
            Err(failure) => {
                self.metrics.auth_failed(failure.reason);
                self.failed_auth.charge(ip, Instant::now());
                self.audit_auth_failure(&failure, ip, method, &canonical.path).await?;
                Err(responses::unauthorized(realm != Realm::Admin))
            }
        }
    }

    /// A tunnelled request whose assertion was refused: 401 (none, malformed, forged, expired)
    /// or 403 (another device's), audited either way.
    async fn refuse_platform(
        &self,
        refusal: AssertionError,
        ip: std::net::IpAddr,
        method: &Method,
        canonical: &Canonical,
    ) -> Response<GateBody> {
        let (kind, status) = match refusal {
            AssertionError::OtherDevice => (AuditKind::AccessDenied, StatusCode::FORBIDDEN),
            _ => (AuditKind::AuthFailed, StatusCode::UNAUTHORIZED),
        };
        self.metrics.denied(refusal.reason());
        let event = AuditEvent::new(kind, Actor::anonymous(ip), canonical.path.as_str())
            .with("reason", refusal.reason())
            .with("method", method.as_str())
            .with("via", "tunnel")
            .with("addr", ip.to_string());
        if let Err(refused) = self.audited(event).await {
            return refused;
        }
        responses::error(status, refusal.reason())
    }

    /// Before an action that must leave an event of `kind`: the 503 to answer instead while the
    /// journal cannot persist (`on_failure = "deny"`), if so.
    pub(super) fn unaudited(&self, kind: AuditKind) -> Option<Response<GateBody>> {
        self.audit.admit(kind).err().map(|_| responses::audit_unavailable())
    }

    /// Records the event a response waits for: `Err` is the 503 to answer instead of it when the
    /// event could not be made durable (`on_failure = "deny"`).
    pub(super) async fn audited(&self, event: AuditEvent) -> Result<(), Response<GateBody>> {
        self.audit.record_or_refuse(event).await.map_err(|_| responses::audit_unavailable())
    }

    /// `auth.failed`; `Err` is the 503 to answer instead of the 401.
    pub(super) async fn audit_auth_failure(
        &self,
        failure: &AuthFailure,
        ip: std::net::IpAddr,
        method: &Method,
        path: &str,
    ) -> Result<(), Response<GateBody>> {
        let mut event = AuditEvent::new(AuditKind::AuthFailed, Actor::anonymous(ip), path)
            .with("reason", failure.reason)
            .with("method", method.as_str())
            .with("addr", ip.to_string());
        if let Some(claimed) = &failure.claimed {
            event = event.with("claimed", claimed.as_str());
        }
        self.audited(event).await
    }

    async fn deny(
        &self,
        denial: Denial,
        who: &Who,
        ip: std::net::IpAddr,
        method: &Method,
        canonical: &Canonical,
        space: Space<'_>,
    ) -> Response<GateBody> {
        let (status, code, reason) = match denial {
            Denial::Unauthenticated => {
                return responses::unauthorized(!matches!(space, Space::Admin(_)));
            }
            Denial::BadRequest(detail) => return responses::bad_request(detail),
            Denial::Method => return responses::method_not_allowed("GET, POST"),
            Denial::Role => (StatusCode::FORBIDDEN, "forbidden", "role"),
            Denial::TokenScope => (StatusCode::FORBIDDEN, "forbidden", "token_scope"),
            Denial::CrossSite => (StatusCode::FORBIDDEN, "cross_site_request", "cross_site"),
            Denial::Protection => (StatusCode::FORBIDDEN, "protection_mode", "protection_mode"),
        };
        self.metrics.denied(reason);
        let mut event = AuditEvent::new(AuditKind::AccessDenied, actor_of(who, ip), canonical.path.as_str())
            .with("reason", reason)
            .with("method", method.as_str())
            .with("addr", ip.to_string());
        if let Who::User { role, .. } = who {
            event = event.with("role", role.as_str());
        }
        if let Err(refused) = self.audited(event).await {
            return refused;
        }
        responses::error(status, code)
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        rules: &Rules,
        req: Request<Incoming>,
        canonical: &Canonical,
        space: Space<'_>,
        who: &Who,
        upstream: Upstream,
        peer: SocketAddr,
    ) -> Response<GateBody> {
        let method = req.method().clone();
        let admin_write = matches!(space, Space::Admin(_)) && !is_read(&method);
        // A write whose admin.write could not be recorded is not made at all; reads and node
        // space go on whatever the journal says (the plant keeps running).
        if admin_write && let Some(refused) = self.unaudited(AuditKind::AdminWrite) {
            return refused;
        }
        let Ok(_slot) = Arc::clone(&self.upstream_slots).try_acquire_owned() else {
            self.metrics.rate_limited("upstream_slots");
            return responses::unavailable("gate_busy", 1);
        };
        let (mut req, _held) = match self.whole_chunked_body(req).await {
            Ok(whole) => whole,
            Err(refusal) => return refusal,
        };
        let request_origin = req.headers().get(header::ORIGIN).cloned();
        self.prepare_headers(rules, req.headers_mut(), space, who, &upstream, peer);

        let deploy = admin_write && method == Method::POST && canonical.key == FLOWS_KEY;
        let rev_before = if deploy { self.flows_revision().await } else { None };

        let websockets = match space {
            Space::Admin(_) => WebsocketSpace::Editor,
            Space::Node => WebsocketSpace::Node,
        };
        let sent = Instant::now();
        let mut response = self.proxy.forward(req, &upstream_target(canonical), peer, websockets).await;
        let space_name = match space {
            Space::Admin(_) => "editor",
            Space::Node => "node",
        };
        self.metrics.upstream_answered(space_name, sent.elapsed());

        if admin_write && response.status().is_success() {
            let mut event = AuditEvent::new(AuditKind::AdminWrite, actor_of(who, peer.ip()), canonical.path.as_str())
                .with("method", method.as_str())
                .with("status", response.status().as_u16());
            if deploy {
                event = event.with("rev_before", rev_before).with("rev_after", self.flows_revision().await);
            }
            // Node-RED has made the write; if the journal failed meanwhile it is still not
            // answered as done (the audit.gap event counts it as unrecorded).
            if let Err(refused) = self.audited(event).await {
                return refused;
            }
        }
        rules.cors.apply(request_origin.as_ref(), response.headers_mut());
        response
    }

    /// A chunked body is read whole, and checked, before anything of its request goes to
    /// Node-RED, which then gets it with a Content-Length (and without trailers, which Node-RED
    /// does not read). Streamed instead, a body whose framing breaks halfway (the framing guard
    /// cuts it there) would reach Node-RED as a request cut short, and its client would get 503
    /// instead of 400. Bodies with a Content-Length cannot break that way and stream as they
    /// come. Returns the request to forward and the budget its body holds.
    async fn whole_chunked_body(
        &self,
        req: Request<Incoming>,
    ) -> Result<(Request<GateBody>, Option<OwnedSemaphorePermit>), Response<GateBody>> {
        if !req.headers().contains_key(header::TRANSFER_ENCODING) {
            return Ok((req.map(Either::Left), None));
        }
        let (mut parts, mut body) = req.into_parts();
        let mut whole = bytes::BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(responses::bad_request("malformed chunked body"));
            };
            let Ok(data) = frame.into_data() else { continue };
            if whole.len() + data.len() > MAX_CHUNKED_BODY {
                return Err(responses::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
            }
            let Ok(more) = Arc::clone(&self.chunked_budget).try_acquire_many_owned(data.len() as u32) else {
                return Err(responses::unavailable("gate_busy", 1));
            };
            match held.as_mut() {
                Some(permit) => permit.merge(more),
                None => held = Some(more),
            }
            whole.extend_from_slice(&data);
        }
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(whole.len()));
        Ok((Request::from_parts(parts, Either::Right(Full::new(whole.freeze()))), held))
    }

    /// Makes the headers what Node-RED is to see: the client's credentials and look-alikes of
    /// the gate's own headers removed, the gate's credential and the requester added.
    fn prepare_headers(
        &self,
        rules: &Rules,
        headers: &mut HeaderMap,
        space: Space<'_>,
        who: &Who,
        upstream: &Upstream,
        peer: SocketAddr,
    ) {
        headers.remove(GATE_TOKEN_HEADER);
        headers.remove(USER_HEADER);
        headers.remove(AUTH_HEADER);
        headers.remove("x-forwarded-for");
        headers.remove("x-forwarded-proto");
        headers.remove("x-forwarded-host");
        headers.remove("forwarded");
        if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static(self.scheme));
        match space {
            Space::Admin(_) => {
                headers.remove(header::AUTHORIZATION);
                headers.remove(header::COOKIE);
                if let Upstream::As { user, perm } = upstream
                    && let Ok(mut v) = HeaderValue::from_str(&self.upstream_tokens.token(user, *perm))
                {
                    v.set_sensitive(true);
                    headers.insert(HeaderName::from_static(GATE_TOKEN_HEADER), v);
                }
            }
            Space::Node => {
                // With node-space auth the credential was the gate's to check; without it, it
                // belongs to the flows.
                if rules.policy.node_auth != NodeMode::None {
                    headers.remove(header::AUTHORIZATION);
                }
                let (user, via) = match who {
                    Who::User { name, via: Via::Basic, .. } => (Some(name.as_str()), "basic"),
                    Who::User { name, via: Via::Session, .. } => (Some(name.as_str()), "session"),
                    Who::NodeUser { name } => (Some(name.as_str()), "basic"),
                    Who::Token { name, .. } => (Some(name.as_str()), "token"),
                    Who::Anonymous => (None, "none"),
                };
                if let Some(user) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
                    headers.insert(USER_HEADER, user);
                    headers.insert(AUTH_HEADER, HeaderValue::from_static(via));
                }
            }
        }
    }

    /// The flows' revision as Node-RED reports it, read as the agent.
    async fn flows_revision(&self) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert("node-red-api-version", HeaderValue::from_static("v2"));
        headers.insert(
            HeaderName::from_static(GATE_TOKEN_HEADER),
            HeaderValue::from_str(&self.upstream_tokens.token("redtether", Perm::Read)).ok()?,
        );
        let (status, body) = self.proxy.fetch(FLOWS_KEY, headers).await?;
        if !status.is_success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
        json.get("rev")?.as_str().map(str::to_string)
    }
}

pub(super) fn actor_of(who: &Who, ip: std::net::IpAddr) -> Actor {
    match who {
        Who::User { name, .. } | Who::NodeUser { name } => Actor::user(name.as_str()),
        Who::Token { name, .. } => Actor::Token { name: name.clone() },
        Who::Anonymous => Actor::anonymous(ip),
    }
}
