//! `[acme]`: the ACME frontend's listener, the URLs it announces, its validation network
//! its account and order rules, and its abuse limits (`[acme.limits]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Serve ACME at all (on by default).
    pub enabled: bool,
    /// HTTPS listen address (loopback by default).
    pub addr: SocketAddr,
    /// Base URL written into the directory and checked against every JWS `url`;
    /// default `https://<addr>`.
    pub base_url: Option<String>,
    /// Names of the listener's certificate, which the CA issues to itself; default the
    /// listener's IP and `localhost`.
    pub tls_names: Vec<String>,
    /// A certificate chain and key (PEM) to serve instead of a self-issued certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Port dialled for http-01 (default 80) and tls-alpn-01 (default 443).
    pub http_port: u16,
    pub tls_port: u16,
    /// DNS server for every validation lookup (`ADDR:PORT`); default the system resolver.
    pub dns_resolver: Option<SocketAddr>,
    /// Let validation dial loopback targets (tests and local use only).
    pub allow_loopback: bool,
    /// When not empty, validation targets must lie in one of these ranges.
    pub allowed_cidrs: Vec<String>,
    /// Validation targets always refused.
    pub denied_cidrs: Vec<String>,
    /// Whole-validation timeout.
    pub validation_timeout_secs: u64,
    /// newAccount requires an External Account Binding.
    pub eab_required: bool,
    pub terms_of_service: Option<String>,
    pub website: Option<String>,
    pub caa_identities: Vec<String>,
    /// Profiles ACME clients may ask for; empty = every configured profile.
    pub profiles: Vec<String>,
    /// The profile an order without `profile` gets; default the server's default profile.
    pub default_profile: Option<String>,
    /// How long a new order and its pending authorizations live.
    pub order_lifetime_secs: u64,
    /// How long a valid authorization is reused for the same account and identifier.
    pub authz_lifetime_secs: u64,
    /// Reuse valid authorizations (RFC 8555 7.1.3 allows it; certbot and lego expect it).
    pub reuse_authorizations: bool,
    /// Identifiers per order.
    pub max_identifiers: usize,
    /// `[acme.limits]`: per-IP and per-account abuse limits (`limits.rs`).
    pub limits: crate::acme::limits::AcmeLimits,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            base_url: None,
            tls_names: vec![],
            tls_cert: None,
            tls_key: None,
            http_port: 80,
            tls_port: 443,
            dns_resolver: None,
            allow_loopback: false,
            allowed_cidrs: vec![],
            denied_cidrs: vec![],
            validation_timeout_secs: 10,
            eab_required: false,
            terms_of_service: None,
            website: None,
            caa_identities: vec![],
            profiles: vec![],
            default_profile: None,
            order_lifetime_secs: 7 * 86_400,
            authz_lifetime_secs: 30 * 86_400,
            reuse_authorizations: true,
            max_identifiers: 100,
            limits: Default::default(),
        }
    }
}

impl AcmeConfig {
    /// The base URL for a listener bound at `bound`.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.base_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{bound}"),
        }
    }
}
