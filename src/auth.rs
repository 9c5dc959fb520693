//! Who may call the API: bearer tokens and their scopes.
//!
//! Two kinds of token:
//! - **admin** tokens, from the configuration (`api_tokens`, `TUTTI_API_TOKENS`): everything;
//! - **composition** tokens, that an admin asks for with `POST /v1/compositions/{id}/tokens`
//!   and hands to a producer: that composition only (read it, change it, its participants
//!   and outputs; the list of compositions shows it alone). They are stateless:
//!   `tc1.{composition}.{expires_unix}.{HMAC-SHA256 of "{composition}.{expires_unix}"}`,
//!   signed with `token_secret` (random per process unless configured, so they die with a
//!   restart unless it is set).
//!
//! Every comparison of a secret is constant-time. With no admin token configured the API
//! is open (the demo on loopback; `Config::check_access` refuses it elsewhere) and every
//! request acts as admin. `/healthz`, the web page and `/hls/...` are always open (HLS
//! players cannot send headers); `/metrics` needs an admin token unless `metrics_public`.
//!
//! The middleware puts the caller's [`Access`] into the request's extensions, so that
//! handlers that list things (compositions, events) show only what it may see.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::api::ApiError;
use crate::config::AccessConfig;
use crate::model::ids::CompositionId;

type HmacSha256 = Hmac<Sha256>;

const COMPOSITION_TOKEN_PREFIX: &str = "tc1";
/// What a 401 advertises (RFC 6750).
const CHALLENGE: &str = "Bearer realm=\"tutti\"";
const CHALLENGE_INVALID: &str = "Bearer realm=\"tutti\", error=\"invalid_token\"";

/// What the caller of a request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Everything (an admin token, or an API without tokens).
    Admin,
    /// One composition, its participants and outputs.
    Composition(CompositionId),
}

impl Access {
    pub fn is_admin(&self) -> bool {
        matches!(self, Access::Admin)
    }

    /// May this caller see and control `composition`?
    pub fn allows(&self, composition: &CompositionId) -> bool {
        match self {
            Access::Admin => true,
            Access::Composition(own) => own == composition,
        }
    }

    /// Names the scope, e.g. for keys remembered per caller.
    pub fn scope(&self) -> String {
        match self {
            Access::Admin => "admin".to_owned(),
            Access::Composition(id) => format!("composition:{id}"),
        }
    }
}

/// What a request needs, decided from its method and path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Open to anyone: health, the web page, HLS, public metrics, unknown routes (404).
    Nothing,
    /// Any valid token; the handler shows only what the token may see.
    AnyToken,
    Admin,
    Composition(CompositionId),
}

/// Scope decisions for every route of the API.
pub fn need(method: &Method, path: &str, metrics_public: bool) -> Need {
    if path == "/metrics" {
        return if metrics_public { Need::Nothing } else { Need::Admin };
    }
    let Some(api_path) = path.strip_prefix("/v1/") else {
        return Need::Nothing;
    };
    let segments: Vec<&str> = api_path.split('/').collect();
    match segments.as_slice() {
        ["compositions"] if method == Method::GET => Need::AnyToken,
        ["events"] => Need::AnyToken,
        ["compositions", _, "tokens"] => Need::Admin,
        ["compositions", id, ..] if !id.is_empty() => Need::Composition(CompositionId::from(id.to_string())),
        _ => Need::Admin,
    }
}

/// Why a request was turned away.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this API needs a token: send Authorization: Bearer TOKEN")]
    NoToken,
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    #[error(transparent)]
    BadToken(#[from] TokenError),
    #[error("this needs an admin token")]
    NotAdmin,
    #[error("this token is for composition {0} only")]
    OtherComposition(CompositionId),
}

/// May `access` do what `need` asks?
pub fn authorize(need: &Need, access: &Access) -> Result<(), Denied> {
    match (need, access) {
        (_, Access::Admin) | (Need::Nothing | Need::AnyToken, _) => Ok(()),
        (Need::Admin, Access::Composition(_)) => Err(Denied::NotAdmin),
        (Need::Composition(wanted), Access::Composition(own)) if wanted == own => Ok(()),
        (Need::Composition(_), Access::Composition(own)) => Err(Denied::OtherComposition(own.clone())),
    }
}

/// Why a composition token is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown token")]
    Unknown,
    #[error("the token expired")]
    Expired,
}

/// Signs and checks composition tokens.
pub struct TokenSigner {
    key: Vec<u8>,
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> TokenSigner {
        TokenSigner { key: secret.to_vec() }
    }

    /// A secret of this process only.
    pub fn random() -> TokenSigner {
        TokenSigner::new(&rand::random::<[u8; 32]>())
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `composition`, valid until `expires_unix` (seconds since 1970).
    pub fn sign(&self, composition: &CompositionId, expires_unix: u64) -> String {
        let payload = format!("{composition}.{expires_unix}");
        let signature = self.mac(&payload).finalize().into_bytes();
        format!("{COMPOSITION_TOKEN_PREFIX}.{payload}.{}", hex(&signature))
    }

    /// The composition `token` gives access to, if it is ours and not expired at `now_unix`.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<CompositionId, TokenError> {
        let rest = token.strip_prefix(COMPOSITION_TOKEN_PREFIX).and_then(|r| r.strip_prefix('.')).ok_or(TokenError::Unknown)?;
        let (payload, signature) = rest.rsplit_once('.').ok_or(TokenError::Unknown)?;
        let signature = unhex(signature).ok_or(TokenError::Unknown)?;
        // Constant-time, and before the payload is believed.
        self.mac(payload).verify_slice(&signature).map_err(|_| TokenError::Unknown)?;
        let (composition, expires) = payload.rsplit_once('.').ok_or(TokenError::Unknown)?;
        let expires: u64 = expires.parse().map_err(|_| TokenError::Unknown)?;
        if now_unix >= expires {
            return Err(TokenError::Expired);
        }
        Ok(CompositionId::from(composition.to_owned()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// How long a composition token lives unless asked otherwise, and at most.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 60 * 60;
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 60 * 60;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("ttl_secs must be within 1..={MAX_TOKEN_TTL_SECS}")]
pub struct InvalidTtl;

/// A composition token, as `POST /v1/compositions/{id}/tokens` answers it.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub composition_id: CompositionId,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The API's tokens and the decisions made with them.
pub struct Auth {
    /// SHA-256 of each admin token: compared in constant time whatever the lengths.
    admin_digests: Vec<[u8; 32]>,
    signer: TokenSigner,
    metrics_public: bool,
}

impl Auth {
    pub fn new(config: &AccessConfig) -> Auth {
        Auth {
            admin_digests: config.api_tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect(),
            signer: config.token_secret.as_ref().map_or_else(TokenSigner::random, |s| TokenSigner::new(s.as_bytes())),
            metrics_public: config.metrics_public,
        }
    }

    /// Without admin tokens, the API is open.
    pub fn required(&self) -> bool {
        !self.admin_digests.is_empty()
    }

    /// A token for `composition` that lives `ttl_secs` (default [`DEFAULT_TOKEN_TTL_SECS`]) from `now_unix`.
    pub fn issue(&self, composition: CompositionId, ttl_secs: Option<u64>, now_unix: u64) -> Result<IssuedToken, InvalidTtl> {
        let ttl_secs = ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(InvalidTtl);
        }
        let expires_unix = now_unix + ttl_secs;
        let expires_at = i64::try_from(expires_unix).ok().and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()).ok_or(InvalidTtl)?;
        Ok(IssuedToken { token: self.signer.sign(&composition, expires_unix), composition_id: composition, expires_at })
    }

    /// Who sends this `Authorization` header, at `now_unix`.
    pub fn identify(&self, authorization: Option<&HeaderValue>, now_unix: u64) -> Result<Access, Denied> {
        if !self.required() {
            return Ok(Access::Admin);
        }
        let value = authorization.ok_or(Denied::NoToken)?.to_str().map_err(|_| Denied::NotBearer)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(Denied::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::NotBearer);
        }
        let token = token.trim();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every admin token is compared, so the time taken says nothing about which matched.
        let admin = self.admin_digests.iter().fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&digest));
        if bool::from(admin) {
            return Ok(Access::Admin);
        }
        Ok(Access::Composition(self.signer.verify(token, now_unix)?))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The middleware: 401 without a valid token, 403 for a token that lacks the scope;
/// else the request goes on with its [`Access`] in its extensions.
pub async fn require_token(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    let need = need(request.method(), request.uri().path(), auth.metrics_public);
    let identified = auth.identify(request.headers().get(header::AUTHORIZATION), unix_now());
    let access = match (identified, &need) {
        (Ok(access), _) => access,
        // Open routes stay open to a missing or wrong token.
        (Err(_), Need::Nothing) => return next.run(request).await,
        (Err(denied), _) => return unauthorized(denied),
    };
    if let Err(denied) = authorize(&need, &access) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", denied.to_string()).into_response();
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

fn unauthorized(denied: Denied) -> Response {
    let challenge = match denied {
        Denied::BadToken(_) => CHALLENGE_INVALID,
        _ => CHALLENGE,
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", denied.to_string()).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";

    fn id(s: &str) -> CompositionId {
        CompositionId::from(s.to_owned())
    }

    fn auth() -> Auth {
        Auth::new(&AccessConfig {
            api_tokens: vec![ADMIN.into(), "second-admin-token-xyz".into()],
            token_secret: Some("secret".into()),
            ..AccessConfig::default()
        })
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let signer = TokenSigner::new(b"secret");
        let token = signer.sign(&id("abc123"), 1000);
        assert!(token.starts_with("tc1.abc123.1000."), "{token}");
        assert_eq!(signer.verify(&token, 999), Ok(id("abc123")));
        assert_eq!(signer.verify(&token, 1000), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_altered_or_signed_elsewhere_is_unknown() {
        let signer = TokenSigner::new(b"secret");
        let token = signer.sign(&id("abc123"), 1000);
        assert_eq!(TokenSigner::new(b"other").verify(&token, 0), Err(TokenError::Unknown), "another server's secret");
        let other_composition = token.replace("abc123", "abc124");
        assert_eq!(signer.verify(&other_composition, 0), Err(TokenError::Unknown));
        let later = token.replace(".1000.", ".9999.");
        assert_eq!(signer.verify(&later, 0), Err(TokenError::Unknown), "the expiry is signed too");
        for garbage in ["", "tc1", "tc1.", "tc1.a.b", "tc1.a.1.zz", "xx.abc123.1000.00", "tc1.abc.1.é"] {
            assert_eq!(signer.verify(garbage, 0), Err(TokenError::Unknown), "{garbage:?}");
        }
    }

    #[test]
    fn admin_tokens_and_composition_tokens_identify_their_caller() {
        let auth = auth();
        assert_eq!(auth.identify(Some(&bearer(ADMIN)), 0), Ok(Access::Admin));
        assert_eq!(auth.identify(Some(&bearer("second-admin-token-xyz")), 0), Ok(Access::Admin));
        let lower = HeaderValue::from_str(&format!("bearer {ADMIN}")).unwrap();
        assert_eq!(auth.identify(Some(&lower), 0), Ok(Access::Admin), "the scheme is case-insensitive");
        let token = auth.signer.sign(&id("c1"), 50);
        assert_eq!(auth.identify(Some(&bearer(&token)), 10), Ok(Access::Composition(id("c1"))));
        assert_eq!(auth.identify(Some(&bearer(&token)), 50), Err(Denied::BadToken(TokenError::Expired)));
        assert_eq!(auth.identify(None, 0), Err(Denied::NoToken));
        assert_eq!(auth.identify(Some(&bearer("admin-token-012345678")), 0), Err(Denied::BadToken(TokenError::Unknown)));
        let basic = HeaderValue::from_static("Basic YWRtaW46YWRtaW4=");
        assert_eq!(auth.identify(Some(&basic), 0), Err(Denied::NotBearer));
    }

    #[test]
    fn an_issued_token_lives_its_ttl() {
        let auth = auth();
        let issued = auth.issue(id("c1"), Some(60), 1_000).unwrap();
        assert_eq!(issued.expires_at.unix_timestamp(), 1_060);
        assert_eq!(auth.identify(Some(&bearer(&issued.token)), 1_059), Ok(Access::Composition(id("c1"))));
        assert!(auth.identify(Some(&bearer(&issued.token)), 1_060).is_err());
        let default = auth.issue(id("c1"), None, 0).unwrap();
        assert_eq!(default.expires_at.unix_timestamp(), DEFAULT_TOKEN_TTL_SECS as i64);
        assert_eq!(auth.issue(id("c1"), Some(0), 0).unwrap_err(), InvalidTtl);
        assert_eq!(auth.issue(id("c1"), Some(MAX_TOKEN_TTL_SECS + 1), 0).unwrap_err(), InvalidTtl);
    }

    #[test]
    fn without_admin_tokens_everyone_is_admin() {
        let open = Auth::new(&AccessConfig::default());
        assert!(!open.required());
        assert_eq!(open.identify(None, 0), Ok(Access::Admin));
    }

    #[test]
    fn routes_need_what_their_scope_says() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(need(&get, "/healthz", false), Need::Nothing);
        assert_eq!(need(&get, "/", false), Need::Nothing);
        assert_eq!(need(&get, "/assets/app.js", false), Need::Nothing);
        assert_eq!(need(&get, "/hls/c1/o1/index.m3u8", false), Need::Nothing);
        assert_eq!(need(&get, "/metrics", false), Need::Admin);
        assert_eq!(need(&get, "/metrics", true), Need::Nothing);
        assert_eq!(need(&get, "/v1/compositions", false), Need::AnyToken);
        assert_eq!(need(&post, "/v1/compositions", false), Need::Admin);
        assert_eq!(need(&get, "/v1/events", false), Need::AnyToken);
        assert_eq!(need(&post, "/v1/compositions/c1/tokens", false), Need::Admin);
        assert_eq!(need(&Method::DELETE, "/v1/compositions/c1", false), Need::Composition(id("c1")));
        assert_eq!(need(&post, "/v1/compositions/c1/participants", false), Need::Composition(id("c1")));
        assert_eq!(need(&Method::PATCH, "/v1/compositions/c1/outputs/o1", false), Need::Composition(id("c1")));
        assert_eq!(need(&get, "/v1/compositions/", false), Need::Admin);
        assert_eq!(need(&get, "/v1/anything", false), Need::Admin);
    }

    #[test]
    fn a_composition_token_reaches_its_composition_only() {
        let own = Access::Composition(id("c1"));
        assert_eq!(authorize(&Need::Composition(id("c1")), &own), Ok(()));
        assert_eq!(authorize(&Need::Composition(id("c2")), &own), Err(Denied::OtherComposition(id("c1"))));
        assert_eq!(authorize(&Need::Admin, &own), Err(Denied::NotAdmin));
        assert_eq!(authorize(&Need::AnyToken, &own), Ok(()));
        assert!(own.allows(&id("c1")) && !own.allows(&id("c2")) && !own.is_admin());
        for need in [Need::Nothing, Need::AnyToken, Need::Admin, Need::Composition(id("c2"))] {
            assert_eq!(authorize(&need, &Access::Admin), Ok(()), "{need:?}");
        }
        assert!(Access::Admin.allows(&id("anything")));
    }
}
