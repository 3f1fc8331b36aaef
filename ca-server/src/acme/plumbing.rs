//! Everything every ACME handler shares, so each handler is only its logic: problem
//! documents (the one mapping from `AppError`), JSON and PEM responses, `Replay-Nonce` and
//! `Link: rel="index"` on every response, body limits, content types, and the JWS checks
//! (nonce, `url`, `jwk`/`kid`, signature) that turn a POST into a [`Signed`] request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_core::Error as CoreError;
use ca_core::acme::model::{Account, AccountStatus};
use ca_core::acme::problem::Problem;
use ca_core::acme::{Jwk, Jws};
use serde_json::{Value, json};

use crate::acme::Acme;
use crate::error::AppError;

/// Largest JWS body accepted (a CSR with many names fits easily).
pub const MAX_BODY: usize = 64 * 1024;

/// Retry-After of a 503 while the event store is unavailable (no writer, a takeover, a
/// lost database connection).
const STORE_RETRY_AFTER_SECS: u64 = 3;

/// An ACME error on its way to the wire: RFC 7807 problem document.
#[derive(Debug)]
pub struct AcmeError {
    pub problem: Problem,
    pub detail: String,
    pub subproblems: Vec<Value>,
    pub retry_after: Option<u64>,
    /// HTTP status override (404 for unknown resources, 405, 413, 415).
    pub status: Option<StatusCode>,
}

pub type AcmeResult<T = Response> = Result<T, AcmeError>;

impl AcmeError {
    pub fn new(problem: Problem, detail: impl Into<String>) -> Self {
        AcmeError { problem, detail: detail.into(), subproblems: vec![], retry_after: None, status: None }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        AcmeError::new(Problem::Malformed, what).with_status(StatusCode::NOT_FOUND)
    }
}

/// The HTTP status of each problem type (RFC 8555 6.7 and what Boulder answers).
fn status_of(p: Problem) -> StatusCode {
    match p {
        Problem::Unauthorized | Problem::OrderNotReady => StatusCode::FORBIDDEN,
        Problem::AlreadyReplaced => StatusCode::CONFLICT,
        Problem::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Problem::ServerInternal => StatusCode::INTERNAL_SERVER_ERROR,
        Problem::ExternalAccountRequired => StatusCode::UNAUTHORIZED,
        Problem::AccountDoesNotExist
        | Problem::AlreadyRevoked
        | Problem::BadCsr
        | Problem::BadNonce
        | Problem::BadPublicKey
        | Problem::BadRevocationReason
        | Problem::BadSignatureAlgorithm
        | Problem::Connection
        | Problem::Dns
        | Problem::IncorrectResponse
        | Problem::InvalidContact
        | Problem::InvalidProfile
        | Problem::Malformed
        | Problem::RejectedIdentifier
        | Problem::Tls
        | Problem::UnsupportedContact
        | Problem::UnsupportedIdentifier => StatusCode::BAD_REQUEST,
    }
}

/// The one mapping from the server's error type to ACME problems.
impl From<AppError> for AcmeError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Core(c) => match c {
                CoreError::Acme { problem, detail } => AcmeError::new(problem, detail),
                CoreError::MalformedCsr(_)
                | CoreError::BadCsrSignature(_)
                | CoreError::UnsupportedKey { .. }
                | CoreError::WeakKey { .. }
                | CoreError::BadNames(_) => AcmeError::new(Problem::BadCsr, c.to_string()),
                CoreError::NameNotAllowed { .. } => {
                    AcmeError::new(Problem::RejectedIdentifier, c.to_string())
                }
                CoreError::UnknownProfile { .. } => AcmeError::new(Problem::InvalidProfile, c.to_string()),
                CoreError::ValidityTooLong { .. } | CoreError::BadSerial(_) | CoreError::Config(_) => {
                    AcmeError::new(Problem::Malformed, c.to_string())
                }
                CoreError::BadReason(_) => AcmeError::new(Problem::BadRevocationReason, c.to_string()),
                CoreError::AlreadyRevoked(_) => AcmeError::new(Problem::AlreadyRevoked, c.to_string()),
                other => internal(&AppError::Core(other)),
            },
            AppError::NotFound(m) => AcmeError::not_found(m),
            AppError::InvalidArgument(m) => AcmeError::new(Problem::Malformed, m),
            AppError::PermissionDenied(m) => AcmeError::new(Problem::Unauthorized, m),
            AppError::FailedPrecondition(m) => AcmeError::new(Problem::Malformed, m),
            AppError::Busy(_) => {
                let mut p = AcmeError::new(Problem::RateLimited, e.to_string())
                    .with_status(StatusCode::SERVICE_UNAVAILABLE);
                p.retry_after = Some(1);
                p
            }
            AppError::RateLimited { retry_after, .. } => {
                let mut p = AcmeError::new(Problem::RateLimited, e.to_string());
                p.retry_after = Some(retry_after);
                p
            }
            AppError::ShuttingDown => AcmeError::new(Problem::ServerInternal, "shutting down")
                .with_status(StatusCode::SERVICE_UNAVAILABLE),
            AppError::Unavailable(m) => {
                let mut p =
                    AcmeError::new(Problem::ServerInternal, m).with_status(StatusCode::SERVICE_UNAVAILABLE);
                p.retry_after = Some(STORE_RETRY_AFTER_SECS);
                p
            }
            AppError::Store(s) if s.is_unavailable() => {
                let mut p = AcmeError::new(Problem::ServerInternal, s.to_string())
                    .with_status(StatusCode::SERVICE_UNAVAILABLE);
                // About one takeover (`lease_ttl_ms`, 3 s by default) or a reconnect.
                p.retry_after = Some(STORE_RETRY_AFTER_SECS);
                p
            }
            AppError::Store(_) | AppError::Config(_) | AppError::Io(_) | AppError::Internal(_) => {
                internal(&e)
            }
        }
    }
}

impl From<CoreError> for AcmeError {
    fn from(e: CoreError) -> Self {
        AppError::Core(e).into()
    }
}

impl From<ca_storage::StoreError> for AcmeError {
    fn from(e: ca_storage::StoreError) -> Self {
        AppError::Store(e).into()
    }
}

impl From<ca_core::acme::JwsError> for AcmeError {
    fn from(e: ca_core::acme::JwsError) -> Self {
        CoreError::from(e).into()
    }
}

fn internal(e: &AppError) -> AcmeError {
    tracing::error!(error = %e, "internal error in the ACME frontend");
    AcmeError::new(Problem::ServerInternal, "internal error; see server logs")
}

impl IntoResponse for AcmeError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| status_of(self.problem));
        let mut body = json!({
            "type": self.problem.urn(),
            "detail": self.detail,
            "status": status.as_u16(),
        });
        if !self.subproblems.is_empty() {
            body["subproblems"] = Value::Array(self.subproblems);
        }
        if self.problem == Problem::BadSignatureAlgorithm {
            body["algorithms"] = json!(ca_core::acme::SUPPORTED_ALGS);
        }
        let mut resp = (status, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A JSON resource (`application/json`, compact).
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Add a `Location` header.
pub fn with_location(mut resp: Response, url: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Append one `Link: <url>;rel="rel"` header (one header per link: acme.sh and dehydrated
/// grep for them one by one).
pub fn with_link(mut resp: Response, url: &str, rel: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("<{url}>;rel=\"{rel}\"")) {
        resp.headers_mut().append(header::LINK, v);
    }
    resp
}

pub fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// Middleware body: a fresh nonce and the directory link on every ACME response,
/// errors included (certbot, uacme and acmez rely on both).
pub async fn decorate(
    axum::extract::State(acme): axum::extract::State<Arc<Acme>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument as _;
    let resource = crate::acme::resource_name(req.uri().path());
    let started = std::time::Instant::now();
    // Handlers fill in the account (on authentication) and the order they touch.
    let span = tracing::info_span!(
        "acme_request",
        resource,
        method = %req.method(),
        account = tracing::field::Empty,
        order = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    // Refusals made before a handler runs (axum's body limit, an unrouted method) become
    // problem documents too.
    let is_problem =
        resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json");
    if (resp.status().is_client_error() || resp.status().is_server_error()) && !is_problem {
        let status = resp.status();
        let detail = match status {
            StatusCode::PAYLOAD_TOO_LARGE => format!("request body over {MAX_BODY} bytes"),
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this ACME resource".to_string(),
            s => format!("request refused: {}", s.canonical_reason().unwrap_or("error")),
        };
        let problem = if status.is_server_error() { Problem::ServerInternal } else { Problem::Malformed };
        resp = AcmeError::new(problem, detail).with_status(status).into_response();
    }
    span.record("status", resp.status().as_u16());
    if resp.status().is_client_error() || resp.status().is_server_error() {
        tracing::debug!(parent: &span, took_ms = started.elapsed().as_secs_f64() * 1e3, "ACME request refused");
    }
    acme.metrics.observe(resource, resp.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::from_str(&acme.nonces.issue()) {
        resp.headers_mut().insert("replay-nonce", v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let index = format!("<{}>;rel=\"index\"", acme.url("directory"));
    if let Ok(v) = HeaderValue::from_str(&index) {
        resp.headers_mut().append(header::LINK, v);
    }
    resp
}

/// A POST whose JWS checked out: the key it was signed with, and the account for `kid`.
pub struct Signed {
    pub jws: Jws,
    pub key: Jwk,
    /// The account, for `kid` requests (already checked to be valid).
    pub account: Option<Account>,
}

impl Signed {
    /// The account of a `kid` request; a `jwk` request here is malformed (RFC 8555 6.2).
    pub fn account(&self) -> AcmeResult<&Account> {
        self.account.as_ref().ok_or_else(|| {
            AcmeError::new(
                Problem::Malformed,
                "this resource requires a kid (account URL) in the JWS header, not a jwk",
            )
        })
    }

    pub fn payload(&self) -> AcmeResult<Value> {
        Ok(self.jws.payload_json()?)
    }
}

/// What key a resource accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// `kid` only (most resources).
    Kid,
    /// `jwk` only (newAccount).
    Jwk,
    /// Either (revokeCert: the account key or the certificate's key).
    Either,
}

impl Acme {
    /// The checks of RFC 8555 6.2-6.5 for a POST to `path` (relative to `/acme/`), in the
    /// order Boulder applies them: content type, size, JWS syntax, nonce, url, key.
    pub fn authenticate(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
        rule: KeyRule,
    ) -> AcmeResult<Signed> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if ct.split(';').next().map(str::trim) != Some("application/jose+json") {
            return Err(AcmeError::new(
                Problem::Malformed,
                format!("Content-Type must be application/jose+json, not {ct:?}"),
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        if body.len() > MAX_BODY {
            return Err(AcmeError::new(Problem::Malformed, format!("request body over {MAX_BODY} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let jws = Jws::parse(body)?;
        let nonce = jws
            .protected
            .nonce
            .as_deref()
            .ok_or_else(|| AcmeError::new(Problem::BadNonce, "JWS has no anti-replay nonce"))?;
        if !self.nonces.redeem(nonce) {
            self.metrics.bad_nonces.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(AcmeError::new(
                Problem::BadNonce,
                "JWS has an invalid anti-replay nonce: unknown, expired or already used",
            ));
        }
        let expected = self.url(path);
        if jws.protected.url != expected {
            return Err(AcmeError::new(
                Problem::Unauthorized,
                format!("JWS url {:?} does not match the request URL {expected:?}", jws.protected.url),
            ));
        }
        let (key, account) = match (&jws.protected.jwk, &jws.protected.kid, rule) {
            (Some(_), _, KeyRule::Kid) => {
                return Err(AcmeError::new(Problem::Malformed, "this resource requires a kid, not a jwk"));
            }
            (_, Some(_), KeyRule::Jwk) => {
                return Err(AcmeError::new(
                    Problem::Malformed,
                    "newAccount must be signed with a jwk, not a kid",
                ));
            }
            (Some(jwk), None, _) => (jwk.clone(), None),
            (None, Some(kid), _) => {
                let id =
                    kid.strip_prefix(&self.url("acct/")).filter(|id| !id.contains('/')).ok_or_else(|| {
                        AcmeError::new(
                            Problem::AccountDoesNotExist,
                            format!("kid {kid:?} is not an account URL of this server"),
                        )
                    })?;
                let acct = self.account(id)?.ok_or_else(|| {
                    AcmeError::new(Problem::AccountDoesNotExist, format!("no account {kid}"))
                })?;
                if acct.status != AccountStatus::Valid {
                    return Err(AcmeError::new(
                        Problem::Unauthorized,
                        format!("account {kid} is {}", acct.status.as_str()),
                    ));
                }
                let key =
                    Jwk::from_json(&serde_json::from_slice::<Value>(&acct.jwk_json).map_err(|_| {
                        AcmeError::new(Problem::ServerInternal, "stored account key does not parse")
                    })?)?;
                (key, Some(acct))
            }
            // Jws::parse guarantees exactly one of jwk and kid.
            (_, _, _) => {
                return Err(AcmeError::new(Problem::Malformed, "JWS needs exactly one of jwk and kid"));
            }
        };
        jws.verify(&key)?;
        if let Some(a) = &account {
            tracing::Span::current().record("account", a.id.as_str());
        }
        Ok(Signed { jws, key, account })
    }
}

/// 405 for a method a resource does not serve (ACME resources are POST, bar a few GETs).
pub async fn method_not_allowed() -> AcmeError {
    AcmeError::new(Problem::Malformed, "method not allowed for this ACME resource; use POST (or POST-as-GET)")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// RFC 3339 in UTC, as ACME writes times.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Parse an RFC 3339 time; `0001-01-01T00:00:00Z` (Go's zero time, which the step CLI
/// sends for "unset") means absent.
pub fn parse_time(field: &str, s: &str) -> AcmeResult<Option<i64>> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
        AcmeError::new(Problem::Malformed, format!("{field} {s:?} is not an RFC 3339 time: {e}"))
    })?;
    Ok((t.year() > 1).then_some(t.unix_timestamp()))
}
