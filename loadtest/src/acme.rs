//! `acme`: complete RFC 8555 orders with instant-acme, against any ACME server on loopback
//! (ca-server's frontend, Pebble).
//!
//! One account per worker, registered before any clock starts. Each order is timed as a whole
//! and per step:
//!
//! 1. `new-order`: newOrder for one identifier (instant-acme first fetches a fresh nonce with
//!    `HEAD newNonce`: it keeps no nonce across orders),
//! 2. `authz`: POST-as-GET of the order's authorization,
//! 3. `challenge`: the generator publishes the http-01 key authorization on its own responder
//!    ([`ChallengeResponder`], 127.0.0.1:`--http-port`), POSTs the challenge and polls the order
//!    until it is `ready`: the server's validation (it dials the responder) plus poll delay,
//! 4. `finalize`: the finalize POST with a P-256 CSR, then polls until `valid` (Pebble answers
//!    `processing` and issues in the background; ca-server issues inside the request),
//! 5. `download`: POST-as-GET of the certificate chain (checked to be PEM).
//!
//! Polling sleeps first, then refreshes the order (POST-as-GET): `--poll-interval` (20 ms by
//! default), multiplied by `--poll-backoff` after each poll up to `--poll-max`. A server's
//! `Retry-After` is not honoured: the interval bounds latency from below and would otherwise
//! be the server's choice. The poll counts are reported.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::driver::{Failure, Scenario, new_histogram};
use crate::report::Percentiles;

/// The steps of one order, in order.
pub const STEPS: [&str; 5] = ["new-order", "authz", "challenge", "finalize", "download"];

/// What every order asks for: one IP identifier, or a DNS name where `{n}` is the order number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifierTemplate {
    Ip(IpAddr),
    Dns(String),
}

impl IdentifierTemplate {
    /// `ip:ADDR` (loopback only: the server dials it for http-01) or `dns:NAME` (`{n}` is
    /// replaced by the order number; validation needs the server to resolve NAME to loopback).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid identifier {s:?}: expected ip:127.0.0.1 or dns:NAME-{{n}}.example.internal");
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "ip" => {
                let ip: IpAddr = value.parse().map_err(|_| bad())?;
                if !ip.is_loopback() {
                    return Err(format!(
                        "identifier {ip} is not a loopback address: the server would dial it for http-01"
                    ));
                }
                Ok(IdentifierTemplate::Ip(ip))
            }
            "dns" if !value.is_empty() => Ok(IdentifierTemplate::Dns(value.to_string())),
            _ => Err(bad()),
        }
    }

    /// The identifier of order `n`.
    pub fn for_order(&self, n: u64) -> Identifier {
        match self {
            IdentifierTemplate::Ip(ip) => Identifier::Ip(*ip),
            IdentifierTemplate::Dns(t) => Identifier::Dns(t.replace("{n}", &n.to_string())),
        }
    }

    /// The subjectAltName value of order `n`'s CSR.
    pub fn san(&self, n: u64) -> String {
        match self {
            IdentifierTemplate::Ip(ip) => ip.to_string(),
            IdentifierTemplate::Dns(t) => t.replace("{n}", &n.to_string()),
        }
    }

    /// Whether every order names the same identifier (then one CSR serves them all).
    pub fn is_constant(&self) -> bool {
        match self {
            IdentifierTemplate::Ip(_) => true,
            IdentifierTemplate::Dns(t) => !t.contains("{n}"),
        }
    }
}

impl std::fmt::Display for IdentifierTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentifierTemplate::Ip(ip) => write!(f, "ip:{ip}"),
            IdentifierTemplate::Dns(t) => write!(f, "dns:{t}"),
        }
    }
}

/// One DER CSR (fresh P-256 key, empty subject, one SAN) for `san`: an IP address or a name.
pub fn make_csr(san: &str) -> Result<Vec<u8>, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![san.to_string()]).map_err(|e| format!("SAN {san:?}: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| format!("csr: {e}"))?;
    Ok(csr.der().to_vec())
}

/// Refuse a directory that is not on this machine: the generator only loads loopback servers.
pub fn check_loopback_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("--directory {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("--directory {url:?}: ACME needs an https:// URL"));
    }
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { Ok(()) } else { Err(format!("--directory {url:?}: only loopback servers are load-tested")) }
}

/// The http-01 responder: `GET /.well-known/acme-challenge/<token>` answers the key
/// authorization the order in flight published for that token, anything else 404.
pub struct ChallengeResponder {
    tokens: RwLock<HashMap<String, String>>,
    pub served: AtomicU64,
    pub unknown: AtomicU64,
}

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

impl ChallengeResponder {
    /// Bind `addr` and serve until the process ends.
    pub async fn start(addr: SocketAddr) -> Result<Arc<Self>, String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("http-01 responder: bind {addr}: {e}"))?;
        let me = Arc::new(ChallengeResponder {
            tokens: RwLock::new(HashMap::new()),
            served: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        });
        let r = Arc::clone(&me);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let r = Arc::clone(&r);
                        async move { Ok::<_, Infallible>(r.answer(&req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(me)
    }

    fn answer<B>(&self, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
        let found = req.uri().path().strip_prefix(CHALLENGE_PREFIX).and_then(|t| {
            self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(t).cloned()
        });
        let (status, body) = match found {
            Some(ka) if req.method() == http::Method::GET => {
                self.served.fetch_add(1, Ordering::Relaxed);
                (http::StatusCode::OK, Bytes::from(ka))
            }
            _ => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                (http::StatusCode::NOT_FOUND, Bytes::from_static(b"no such token\n"))
            }
        };
        let mut resp = http::Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
        resp
    }

    /// Publish `key_authorization` for `token` until the returned guard drops.
    pub fn publish(&self, token: &str, key_authorization: &str) -> TokenGuard<'_> {
        self.tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_string(), key_authorization.to_string());
        TokenGuard { responder: self, token: token.to_string() }
    }
}

/// Withdraws its token when dropped (also when an order fails or times out).
pub struct TokenGuard<'a> {
    responder: &'a ChallengeResponder,
    token: String,
}

impl Drop for TokenGuard<'_> {
    fn drop(&mut self) {
        self.responder.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.token);
    }
}

/// Where finalize CSRs come from.
pub enum Csrs {
    /// Generated before the clock starts; order `i` uses `csrs[i % len]` (with a
    /// `{n}`-templated DNS identifier, order `i` then names `i % len` too).
    Upfront(Vec<Bytes>),
    /// A fresh key and CSR inside each order (timed on its own, as `csr`, and inside `finalize`).
    PerOrder,
}

/// The polling policy.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Poll {
    pub interval_ms: f64,
    pub backoff: f64,
    pub max_ms: f64,
}

impl Poll {
    fn first(&self) -> Duration {
        Duration::from_secs_f64(self.interval_ms / 1000.0)
    }

    fn next(&self, d: Duration) -> Duration {
        d.mul_f64(self.backoff.max(1.0))
            .min(Duration::from_secs_f64(self.max_ms.max(self.interval_ms) / 1000.0))
    }
}

/// Per-step latency histograms and counters.
struct Steps {
    hist: Vec<Histogram<u64>>,
    csr: Histogram<u64>,
}

/// The `acme` scenario.
pub struct Acme {
    accounts: Vec<Account>,
    identifier: IdentifierTemplate,
    csrs: Csrs,
    responder: Arc<ChallengeResponder>,
    poll: Poll,
    steps: Mutex<Steps>,
    polls_ready: AtomicU64,
    polls_valid: AtomicU64,
    authz_reused: AtomicU64,
    finalize_valid_at_once: AtomicU64,
    /// Orders finished (ok or not) and failed, for the progress line.
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// The HTTP client of every account: hyper-util's pooled client over rustls (ring) trusting
/// `ca_bundle`, like instant-acme's own `builder_with_root` client but with TCP_NODELAY. The
/// stock client leaves Nagle on, and a JWS POST written as more than one TLS record then waits
/// for the server's delayed ACK: ~40 ms per request on loopback (measured: 44 ms per step
/// against both ca-server and Pebble), which hides the servers' own cost entirely.
pub fn nodelay_client(ca_bundle: &std::path::Path) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_bundle)
        .map_err(|e| format!("--ca-bundle {}: {e}", ca_bundle.display()))?
    {
        let cert = cert.map_err(|e| format!("--ca-bundle {}: {e}", ca_bundle.display()))?;
        roots.add(cert).map_err(|e| format!("--ca-bundle {}: {e}", ca_bundle.display()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

/// Register `count` accounts on `directory`, at most 8 at once, each with an HTTP client (and
/// so connections) of its own. `stock`: instant-acme's own client (Nagle on; without
/// `ca_bundle` the platform's trust store). Returns the accounts and the seconds it took.
pub async fn create_accounts(
    directory: &str,
    ca_bundle: Option<&PathBuf>,
    stock: bool,
    count: usize,
) -> Result<(Vec<Account>, f64), String> {
    if !stock && ca_bundle.is_none() {
        return Err("give --ca-bundle FILE (or --stock-client for instant-acme's client and the platform trust store)".into());
    }
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (directory, ca_bundle, sem) = (directory.to_string(), ca_bundle.cloned(), Arc::clone(&sem));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.map_err(|e| e.to_string())?;
            let builder = match (&ca_bundle, stock) {
                (Some(p), false) => Account::builder_with_http(nodelay_client(p)?),
                (Some(p), true) => {
                    Account::builder_with_root(p).map_err(|e| format!("--ca-bundle {}: {e}", p.display()))?
                }
                (None, _) => Account::builder().map_err(|e| format!("ACME HTTP client: {e}"))?,
            };
            let new = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
            builder
                .create(&new, directory.clone(), None)
                .await
                .map(|(a, _)| a)
                .map_err(|e| format!("newAccount at {directory}: {e}"))
        }));
    }
    let mut accounts = Vec::with_capacity(count);
    for t in tasks {
        accounts.push(t.await.map_err(|e| format!("account task: {e}"))??);
    }
    Ok((accounts, t0.elapsed().as_secs_f64()))
}

/// The failure kind of an instant-acme error in `step`: the problem type for ACME problems.
pub fn failure(step: &'static str, e: &instant_acme::Error) -> Failure {
    let kind = match e {
        instant_acme::Error::Api(p) => {
            let t = p.r#type.as_deref().unwrap_or("problem without type");
            format!("{step}: {}", t.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(t))
        }
        instant_acme::Error::Hyper(_) | instant_acme::Error::Http(_) => format!("{step}: http"),
        instant_acme::Error::Json(_) => format!("{step}: json"),
        instant_acme::Error::Timeout(_) => format!("{step}: timeout"),
        _ => format!("{step}: other"),
    };
    Failure::with_detail(kind, e)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Acme {
    pub fn new(
        accounts: Vec<Account>,
        identifier: IdentifierTemplate,
        csrs: Csrs,
        responder: Arc<ChallengeResponder>,
        poll: Poll,
    ) -> Self {
        Acme {
            accounts,
            identifier,
            csrs,
            responder,
            poll,
            steps: Mutex::new(Steps {
                hist: STEPS.iter().map(|_| new_histogram()).collect(),
                csr: new_histogram(),
            }),
            polls_ready: AtomicU64::new(0),
            polls_valid: AtomicU64::new(0),
            authz_reused: AtomicU64::new(0),
            finalize_valid_at_once: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Sleep, refresh the order, until `done(status)`; an `invalid` order is a failure of `step`.
    async fn poll_until(
        &self,
        order: &mut Order,
        step: &'static str,
        done: fn(OrderStatus) -> bool,
        counter: &AtomicU64,
    ) -> Result<(), Failure> {
        let mut delay = self.poll.first();
        loop {
            tokio::time::sleep(delay).await;
            counter.fetch_add(1, Ordering::Relaxed);
            let state = order.refresh().await.map_err(|e| failure(step, &e))?;
            if done(state.status) {
                return Ok(());
            }
            if state.status == OrderStatus::Invalid {
                return Err(self.invalid(order, step).await);
            }
            delay = self.poll.next(delay);
        }
    }

    /// Explain an invalid order: its error, else its first challenge's error.
    async fn invalid(&self, order: &mut Order, step: &'static str) -> Failure {
        let kind = format!("{step}: order invalid");
        if let Some(p) = &order.state().error {
            return Failure::with_detail(kind, p);
        }
        let mut authzs = order.authorizations();
        let detail = match authzs.next().await {
            Some(Ok(a)) => a
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref().map(|p| format!("{:?} {}", c.r#type, p)))
                .unwrap_or_else(|| format!("authorization {:?}, no challenge error", a.status)),
            Some(Err(e)) => format!("authorization fetch failed: {e}"),
            None => "no authorization".into(),
        };
        Failure::with_detail(kind, detail)
    }

    fn csr_for(&self, i: u64) -> Result<(Bytes, Option<Duration>), Failure> {
        match &self.csrs {
            Csrs::Upfront(v) => Ok((v[usize::try_from(i).unwrap_or(0) % v.len()].clone(), None)),
            Csrs::PerOrder => {
                let t = Instant::now();
                let der = make_csr(&self.identifier.san(i)).map_err(|e| Failure::with_detail("csr", e))?;
                Ok((Bytes::from(der), Some(t.elapsed())))
            }
        }
    }

    /// The order number `i` maps to (the CSR's and the identifier's).
    fn order_number(&self, i: u64) -> u64 {
        match &self.csrs {
            Csrs::Upfront(v) => i % v.len() as u64,
            Csrs::PerOrder => i,
        }
    }

    /// What was counted, for the report.
    pub fn summary(&self, orders_ok: u64, orders_total: u64) -> AcmeSummary {
        let steps = self.steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let per = |n: u64| if orders_total > 0 { n as f64 / orders_total as f64 } else { 0.0 };
        AcmeSummary {
            steps_us: STEPS
                .iter()
                .zip(&steps.hist)
                .map(|(s, h)| ((*s).to_string(), Percentiles::from_histogram(h)))
                .collect(),
            csr_per_order_us: (!steps.csr.is_empty()).then(|| Percentiles::from_histogram(&steps.csr)),
            polls_until_ready_per_order: per(self.polls_ready.load(Ordering::Relaxed)),
            polls_until_valid_per_order: per(self.polls_valid.load(Ordering::Relaxed)),
            authz_reused: self.authz_reused.load(Ordering::Relaxed),
            finalize_valid_at_once: self.finalize_valid_at_once.load(Ordering::Relaxed),
            http01_served: self.responder.served.load(Ordering::Relaxed),
            http01_unknown: self.responder.unknown.load(Ordering::Relaxed),
            orders_ok,
            poll: self.poll,
            accounts: self.accounts.len(),
        }
    }
}

impl Scenario for Acme {
    async fn one(&self, slot: usize, i: u64) -> Result<(), Failure> {
        let r = self.order(slot, i).await;
        self.done.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Acme {
    /// One complete order (see the module comment for the steps).
    async fn order(&self, slot: usize, i: u64) -> Result<(), Failure> {
        let account = &self.accounts[slot % self.accounts.len()];
        let n = self.order_number(i);
        let ident = self.identifier.for_order(n);
        let t0 = Instant::now();
        let mut order = account
            .new_order(&NewOrder::new(std::slice::from_ref(&ident)))
            .await
            .map_err(|e| failure("new-order", &e))?;
        let t1 = Instant::now();

        // authz, then the http-01 challenge (unless the server reused a valid authorization)
        let (t2, guard) = {
            let mut authzs = order.authorizations();
            let mut authz = match authzs.next().await {
                Some(r) => r.map_err(|e| failure("authz", &e))?,
                None => return Err(Failure::new("authz: order has no authorization")),
            };
            let t2 = Instant::now();
            match authz.status {
                AuthorizationStatus::Valid => (t2, None),
                AuthorizationStatus::Pending => {
                    let mut ch = authz
                        .challenge(ChallengeType::Http01)
                        .ok_or_else(|| Failure::new("authz: no http-01 challenge"))?;
                    let ka = ch.key_authorization();
                    let guard = self.responder.publish(&ch.token, ka.as_str());
                    ch.set_ready().await.map_err(|e| failure("challenge", &e))?;
                    (t2, Some(guard))
                }
                s => return Err(Failure::with_detail("authz: not pending", format!("{s:?}"))),
            }
        };
        match guard {
            None => {
                self.authz_reused.fetch_add(1, Ordering::Relaxed);
                if order.state().status != OrderStatus::Ready {
                    self.poll_until(&mut order, "challenge", |s| s == OrderStatus::Ready, &self.polls_ready)
                        .await?;
                }
            }
            Some(g) => {
                self.poll_until(&mut order, "challenge", |s| s == OrderStatus::Ready, &self.polls_ready)
                    .await?;
                drop(g);
            }
        }
        let t3 = Instant::now();

        let (csr, csr_time) = self.csr_for(n)?;
        order.finalize_csr(&csr).await.map_err(|e| failure("finalize", &e))?;
        match order.state().status {
            OrderStatus::Valid => {
                self.finalize_valid_at_once.fetch_add(1, Ordering::Relaxed);
            }
            OrderStatus::Processing | OrderStatus::Ready => {
                self.poll_until(&mut order, "finalize", |s| s == OrderStatus::Valid, &self.polls_valid)
                    .await?;
            }
            OrderStatus::Invalid => return Err(self.invalid(&mut order, "finalize").await),
            OrderStatus::Pending => return Err(Failure::new("finalize: order pending after finalize")),
        }
        let t4 = Instant::now();

        let chain = order
            .certificate()
            .await
            .map_err(|e| failure("download", &e))?
            .ok_or_else(|| Failure::new("download: order still processing"))?;
        if !chain.starts_with("-----BEGIN CERTIFICATE-----") {
            return Err(Failure::with_detail(
                "download: not a PEM chain",
                chain.chars().take(80).collect::<String>(),
            ));
        }
        let t5 = Instant::now();

        let mut steps = self.steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (h, (a, b)) in steps.hist.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]) {
            h.saturating_record(micros(b.saturating_duration_since(a)));
        }
        if let Some(d) = csr_time {
            steps.csr.saturating_record(micros(d));
        }
        Ok(())
    }
}

/// The ACME-specific part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct AcmeSummary {
    /// Latency of each step of successful orders, microseconds (an order that failed in a
    /// step still counts in the steps before it only if it got past all of them: steps are
    /// recorded for successful orders only, so they add up to the whole-order figure).
    pub steps_us: BTreeMap<String, Percentiles>,
    /// With `--csr per-order`: the key generation and CSR signature inside each order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csr_per_order_us: Option<Percentiles>,
    pub polls_until_ready_per_order: f64,
    pub polls_until_valid_per_order: f64,
    /// Orders whose authorization was already valid (the server reused an earlier one).
    pub authz_reused: u64,
    /// Orders that were `valid` in the finalize response itself (no polling).
    pub finalize_valid_at_once: u64,
    /// http-01 requests answered with a key authorization, and with 404.
    pub http01_served: u64,
    pub http01_unknown: u64,
    pub orders_ok: u64,
    pub poll: Poll,
    pub accounts: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn identifiers() {
        let ip = IdentifierTemplate::parse("ip:127.0.0.1").unwrap();
        assert_eq!(ip.for_order(7), Identifier::Ip("127.0.0.1".parse().unwrap()));
        assert!(ip.is_constant());
        let dns = IdentifierTemplate::parse("dns:lt-{n}.example.internal").unwrap();
        assert_eq!(dns.for_order(42), Identifier::Dns("lt-42.example.internal".into()));
        assert_eq!(dns.san(3), "lt-3.example.internal");
        assert!(!dns.is_constant());
        assert_eq!(dns.to_string(), "dns:lt-{n}.example.internal");
        for bad in ["127.0.0.1", "ip:10.0.0.1", "ip:nope", "dns:", "uri:x"] {
            assert!(IdentifierTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_directories() {
        assert!(check_loopback_url("https://127.0.0.1:14000/dir").is_ok());
        assert!(check_loopback_url("https://localhost:8443/acme/directory").is_ok());
        assert!(check_loopback_url("https://[::1]:8443/acme/directory").is_ok());
        assert!(check_loopback_url("https://10.1.2.3/dir").is_err());
        assert!(check_loopback_url("https://acme.example.com/dir").is_err());
        assert!(check_loopback_url("http://127.0.0.1:14000/dir").is_err());
    }

    #[test]
    fn csrs_carry_the_identifier() {
        for san in ["127.0.0.1", "lt-1.example.internal"] {
            let der = make_csr(san).unwrap();
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
            req.verify_signature().unwrap();
            let exts = req.requested_extensions().unwrap().collect::<Vec<_>>();
            let text = format!("{exts:?}");
            assert!(text.contains(if san.starts_with("127") { "IPAddress" } else { san }), "{text}");
        }
    }

    #[test]
    fn polling_backs_off_to_its_cap() {
        let p = Poll { interval_ms: 20.0, backoff: 2.0, max_ms: 50.0 };
        assert_eq!(p.first(), Duration::from_millis(20));
        assert_eq!(p.next(Duration::from_millis(20)), Duration::from_millis(40));
        assert_eq!(p.next(Duration::from_millis(40)), Duration::from_millis(50));
        let fixed = Poll { interval_ms: 20.0, backoff: 1.0, max_ms: 0.0 };
        assert_eq!(fixed.next(fixed.first()), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn responder_serves_published_tokens_only() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = ChallengeResponder::start(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        {
            let _g = r.publish("tok", "tok.thumb");
            let ok = get("/.well-known/acme-challenge/tok").await;
            assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("tok.thumb"), "{ok}");
        }
        let gone = get("/.well-known/acme-challenge/tok").await;
        assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
        assert_eq!(r.served.load(Ordering::Relaxed), 1);
        assert_eq!(r.unknown.load(Ordering::Relaxed), 1);
    }
}
