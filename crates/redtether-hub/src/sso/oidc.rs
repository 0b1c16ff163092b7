//! Logging in through an OpenID provider: the authorization code flow with PKCE, as a
//! confidential client (openidconnect does the protocol; the hub keeps the pending login).
//!
//! 1. [`OidcLogin::begin`] gives the URL to send the browser to, and a [`PendingLogin`] (state,
//!    nonce, PKCE verifier) the hub keeps on its side, e.g. under a random cookie, until the
//!    browser comes back.
//! 2. The provider sends the browser to `<public_url>/auth/oidc/callback?code=…&state=…`.
//! 3. [`OidcLogin::finish`] checks the state, exchanges the code (with the PKCE verifier and
//!    the client secret) for tokens, verifies the ID token (signature against the provider's
//!    published keys, issuer, audience, expiry, nonce, `at_hash`) and reads the roles claim from
//!    it, or from the userinfo answer when the ID token lacks it.
//!
//! The provider's discovery document and keys are fetched at the first use and again when older
//! than five minutes, or at once when an ID token is signed with a key they do not hold (a
//! provider that rotated its key). Nothing here touches the network before the first login, so
//! an unreachable provider never keeps the hub from starting.

use crate::sso::config::OidcSettings;
use crate::sso::http::{HttpClient, HttpError};
use crate::sso::tls::TlsError;
use crate::sso::{Identity, IdentitySource};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, DiscoveryError, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken,
    IdTokenClaims, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse, SubjectIdentifier,
    TokenResponse, UserInfoClaims, UserInfoError,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// How long the discovery document and keys are used before being fetched again.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);
/// An ID token signed with an unknown key makes the keys be fetched again, but not more often
/// than this (a stream of forged tokens must not become a stream of requests to the provider).
const KEY_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How long a browser may take between [`OidcLogin::begin`] and [`OidcLogin::finish`].
pub const PENDING_MAX_AGE: Duration = Duration::from_secs(600);

/// Why a login through the OpenID provider did not give an identity.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The TLS trust settings (`ca_file`) cannot be used.
    #[error("[auth.oidc]: {0}")]
    Tls(#[from] TlsError),
    /// A setting that validation accepted is still unusable here (cannot happen for settings
    /// from `validate_oidc`).
    #[error("[auth.oidc] {key}: {reason}")]
    BadSetting { key: &'static str, reason: String },
    /// No HTTP client could be made.
    #[error("cannot make an HTTP client for the OpenID provider: {0}")]
    HttpClient(#[source] HttpError),
    /// The provider could not be reached, or did not answer in time.
    #[error("the OpenID provider is unreachable ({step}): {source}")]
    Unreachable {
        step: &'static str,
        #[source]
        source: HttpError,
    },
    /// The provider answered something unusable: a discovery document for another issuer, an
    /// error status, a malformed document.
    #[error("the OpenID provider's {step} answer is unusable: {reason}")]
    BadAnswer { step: &'static str, reason: String },
    /// The `state` the browser came back with is not the pending login's: a forged or crossed
    /// callback.
    #[error("the login's state does not match: the callback was not for this login")]
    StateMismatch,
    /// The browser came back too late (see [`PENDING_MAX_AGE`]).
    #[error("the login took too long ({} s): start again", age.as_secs())]
    Expired { age: Duration },
    /// The token endpoint refused the code (used, expired, or for another client), or the
    /// client's credentials.
    #[error("the OpenID provider refused the code: {reason}")]
    CodeRefused { reason: String },
    /// The token answer had no ID token (the provider did not treat the request as OpenID).
    #[error("the OpenID provider's token answer has no ID token")]
    NoIdToken,
    /// The ID token failed verification: signature, issuer, audience, expiry, nonce or
    /// `at_hash`.
    #[error("the ID token was refused: {0}")]
    IdTokenRejected(#[source] ClaimsVerificationError),
    /// Neither the ID token nor the userinfo answer has the roles claim: the provider does not
    /// release it to this client (a missing scope or mapper), or the claim's name is wrong.
    #[error("the ID token and the userinfo answer have no {claim:?} claim")]
    NoRolesClaim { claim: String },
    /// The roles claim is neither a string nor an array of strings.
    #[error("the {claim:?} claim is neither a string nor an array of strings")]
    RolesClaimNotStrings { claim: String },
}

/// What the hub keeps between [`OidcLogin::begin`] and [`OidcLogin::finish`], on its side
/// only: the state is also in the authorization URL, the nonce and the verifier are secrets.
/// Serializable so that the hub can store it where it likes; `Debug` shows no secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingLogin {
    pub csrf_state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub created: SystemTime,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin").field("created", &self.created).finish_non_exhaustive()
    }
}

/// The claims other than the standard ones, whole: the roles claim's name is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type OurIdTokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OurTokenResponse = StandardTokenResponse<OurIdTokenFields, CoreTokenType>;
type OurIdToken = IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type OurClaims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
/// A client made from the discovery document: authorization endpoint set, token and userinfo
/// endpoints as the document says.
type OurClient = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    OurTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The signature algorithms accepted on ID tokens: public-key ones only, checked against the
/// provider's published keys (no HMAC with the client secret, never `none`).
const ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Logins through one OpenID provider. Cheap to make (no network); share one per provider.
pub struct OidcLogin {
    settings: OidcSettings,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: HttpClient,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

impl OidcLogin {
    /// Reads the trust settings (`ca_file`) and makes the HTTP client; no request yet.
    pub fn new(settings: OidcSettings) -> Result<OidcLogin, OidcError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| OidcError::BadSetting { key: "issuer", reason: e.to_string() })?;
        let redirect = RedirectUrl::new(settings.redirect_url.clone())
            .map_err(|e| OidcError::BadSetting { key: "public_url", reason: e.to_string() })?;
        let tls = crate::sso::tls::client_config(&settings.trust)?;
        let http = HttpClient::new(tls, settings.timeout).map_err(OidcError::HttpClient)?;
        Ok(OidcLogin { settings, issuer, redirect, http, metadata: tokio::sync::Mutex::new(None) })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Starts a login: the provider's authorization URL for the browser (with state, nonce and
    /// the PKCE challenge), and what to keep until the browser comes back.
    pub async fn begin(&self) -> Result<(String, PendingLogin), OidcError> {
        let client = self.client(&self.metadata(METADATA_MAX_AGE).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        let pending = PendingLogin {
            csrf_state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            created: SystemTime::now(),
        };
        Ok((url.into(), pending))
    }

    /// Finishes the login `pending` started, with the `code` and `state` of the callback.
    pub async fn finish(&self, pending: &PendingLogin, code: &str, state: &str) -> Result<Identity, OidcError> {
        // The state first: a forged callback must not make the hub spend the code.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(state.as_bytes(), pending.csrf_state.as_bytes())) {
            return Err(OidcError::StateMismatch);
        }
        let age = SystemTime::now().duration_since(pending.created).unwrap_or_default();
        if age > PENDING_MAX_AGE {
            return Err(OidcError::Expired { age });
        }
        let client = self.client(&self.metadata(METADATA_MAX_AGE).await?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            // The discovery document may lack a token endpoint (an implicit-flow-only provider).
            .map_err(|e| OidcError::BadAnswer { step: "discovery", reason: format!("no token endpoint: {e}") })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = tokens.id_token().ok_or(OidcError::NoIdToken)?;
        let claims = self.verify(id_token, &pending.nonce, Some(tokens.access_token())).await?;
        self.identity(&claims, Some(tokens.access_token())).await
    }

    /// Verifies `id_token` as [`finish`](Self::finish) does (against `nonce`, without an access
    /// token to check `at_hash` against) and reads the identity from it alone. For ID tokens that
    /// arrive by another way than this client's own code exchange, and for tests.
    pub async fn identity_from_id_token(&self, id_token: &str, nonce: &str) -> Result<Identity, OidcError> {
        let id_token: OurIdToken = id_token.parse().map_err(|e: serde_json::Error| {
            OidcError::IdTokenRejected(ClaimsVerificationError::Other(e.to_string()))
        })?;
        let claims = self.verify(&id_token, nonce, None).await?;
        self.identity(&claims, None).await
    }

    /// The ID token's claims, verified; with the keys fetched again if the token is signed with
    /// one they lack.
    async fn verify(
        &self,
        id_token: &OurIdToken,
        nonce: &str,
        access_token: Option<&AccessToken>,
    ) -> Result<OurClaims, OidcError> {
        let nonce = Nonce::new(nonce.to_string());
        let first = self.verify_with(&self.metadata(METADATA_MAX_AGE).await?, id_token, &nonce, access_token);
        match first {
            Err(OidcError::IdTokenRejected(ClaimsVerificationError::SignatureVerification(_))) => {
                let fresh = self.metadata(KEY_REFRESH_MIN_INTERVAL).await?;
                self.verify_with(&fresh, id_token, &nonce, access_token)
            }
            other => other,
        }
    }

    fn verify_with(
        &self,
        metadata: &CoreProviderMetadata,
        id_token: &OurIdToken,
        nonce: &Nonce,
        access_token: Option<&AccessToken>,
    ) -> Result<OurClaims, OidcError> {
        let client = self.client(metadata);
        let verifier = client.id_token_verifier().set_allowed_algs(ALGORITHMS);
        let claims = id_token.claims(&verifier, nonce).map_err(OidcError::IdTokenRejected)?;
        // at_hash binds the access token (used for userinfo) to this ID token.
        if let (Some(expected), Some(access_token)) = (claims.access_token_hash(), access_token) {
            let rejected = |reason: String| OidcError::IdTokenRejected(ClaimsVerificationError::Other(reason));
            let alg = id_token.signing_alg().map_err(|e| rejected(e.to_string()))?;
            let key = id_token.signing_key(&verifier).map_err(|e| rejected(e.to_string()))?;
            let actual = AccessTokenHash::from_token(access_token, alg, key).map_err(|e| rejected(e.to_string()))?;
            if actual != *expected {
                return Err(rejected("the access token does not match the ID token's at_hash".into()));
            }
        }
        Ok(claims.clone())
    }

    /// The identity in verified `claims`; the roles claim (and a missing name or email) from
    /// userinfo when the ID token lacks it and an access token is at hand.
    async fn identity(&self, claims: &OurClaims, access_token: Option<&AccessToken>) -> Result<Identity, OidcError> {
        let claim = &self.settings.roles_claim;
        let mut name = claims.preferred_username().map(|n| n.as_str().to_string());
        let mut email = claims.email().map(|e| e.as_str().to_string());
        let mut groups = claims.additional_claims().claims.get(claim).map(|v| strings(v, claim)).transpose()?;
        if groups.is_none()
            && let Some(access_token) = access_token
            && let Some(info) = self.user_info(access_token, claims.subject()).await?
        {
            groups = info.additional_claims().claims.get(claim).map(|v| strings(v, claim)).transpose()?;
            name = name.or_else(|| info.preferred_username().map(|n| n.as_str().to_string()));
            email = email.or_else(|| info.email().map(|e| e.as_str().to_string()));
        }
        let groups = groups.ok_or_else(|| OidcError::NoRolesClaim { claim: claim.clone() })?;
        Ok(Identity {
            name: name.unwrap_or_else(|| claims.subject().as_str().to_string()),
            subject: claims.subject().as_str().to_string(),
            groups,
            email,
            source: IdentitySource::Oidc,
        })
    }

    /// The userinfo answer for `subject` (checked to be theirs), or `None` when the provider
    /// has no userinfo endpoint.
    async fn user_info(
        &self,
        access_token: &AccessToken,
        subject: &SubjectIdentifier,
    ) -> Result<Option<UserInfoClaims<OtherClaims, CoreGenderClaim>>, OidcError> {
        let client = self.client(&self.metadata(METADATA_MAX_AGE).await?);
        let Ok(request) = client.user_info(access_token.clone(), Some(subject.clone())) else {
            return Ok(None);
        };
        request.request_async(&self.http).await.map(Some).map_err(|e| match e {
            UserInfoError::Request(source) if source.is_unreachable() => {
                OidcError::Unreachable { step: "userinfo", source }
            }
            other => OidcError::BadAnswer { step: "userinfo", reason: chain(&other) },
        })
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> OurClient {
        OurClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.expose().to_string())),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// The discovery document (and keys), fetched when missing or older than `max_age`.
    async fn metadata(&self, max_age: Duration) -> Result<CoreProviderMetadata, OidcError> {
        let mut cache = self.metadata.lock().await;
        if let Some((metadata, fetched)) = cache.as_ref()
            && fetched.elapsed() < max_age
        {
            return Ok(metadata.clone());
        }
        let metadata =
            CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await.map_err(|e| match e {
                DiscoveryError::Request(source) if source.is_unreachable() => {
                    OidcError::Unreachable { step: "discovery", source }
                }
                other => OidcError::BadAnswer { step: "discovery", reason: chain(&other) },
            })?;
        *cache = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }
}

fn token_error(e: RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(answer) => OidcError::CodeRefused { reason: answer.to_string() },
        RequestTokenError::Request(source) if source.is_unreachable() => {
            OidcError::Unreachable { step: "token", source }
        }
        other => OidcError::BadAnswer { step: "token", reason: chain(&other) },
    }
}

/// The roles claim's values: an array of strings, or one string.
fn strings(value: &serde_json::Value, claim: &str) -> Result<Vec<String>, OidcError> {
    let not_strings = || OidcError::RolesClaimNotStrings { claim: claim.to_string() };
    match value {
        serde_json::Value::String(one) => Ok(vec![one.clone()]),
        serde_json::Value::Array(items) => {
            items.iter().map(|item| item.as_str().map(str::to_string).ok_or_else(not_strings)).collect()
        }
        _ => Err(not_strings()),
    }
}

/// An error with its sources, for messages: openidconnect's errors often say "Request failed"
/// and keep the reason in their source.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roles_claim_is_strings() {
        let claim = "groups";
        assert_eq!(strings(&serde_json::json!(["a", "b"]), claim).unwrap(), ["a", "b"]);
        assert_eq!(strings(&serde_json::json!("a"), claim).unwrap(), ["a"]);
        assert!(strings(&serde_json::json!([]), claim).unwrap().is_empty());
        assert!(matches!(strings(&serde_json::json!(["a", 1]), claim), Err(OidcError::RolesClaimNotStrings { .. })));
        assert!(matches!(strings(&serde_json::json!({"a": 1}), claim), Err(OidcError::RolesClaimNotStrings { .. })));
    }

    #[test]
    fn a_pending_login_keeps_its_secrets_out_of_debug_and_round_trips() {
        let pending = PendingLogin {
            csrf_state: "state-1".into(),
            nonce: "nonce-1".into(),
            pkce_verifier: "verifier-1".into(),
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let shown = format!("{pending:?}");
        assert!(!shown.contains("nonce-1") && !shown.contains("verifier-1"), "{shown}");
        let json = serde_json::to_string(&pending).unwrap();
        assert_eq!(serde_json::from_str::<PendingLogin>(&json).unwrap(), pending);
    }
}
