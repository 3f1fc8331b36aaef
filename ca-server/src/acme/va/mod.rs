//! The ACME validation authority: proves control of an identifier by one challenge
//! (RFC 8555 8.3 http-01, 8.4 dns-01, RFC 8737 tls-alpn-01; RFC 8738 for IP identifiers).
//!
//! Self-contained on purpose: the ACME handlers hand it an identifier, a token and the key
//! authorization they computed, and map [`VaError`]'s variants onto ACME problem types. Names
//! are resolved once through our own resolver, every address is checked against the
//! [`target`] policy before it is dialled, and only checked addresses are dialled, so DNS
//! rebinding between check and dial is not possible.

mod dns01;
mod http01;
mod target;
mod tlsalpn01;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::net::TcpStream;
use tokio::time::Instant;

use target::Policy;

/// How the validation authority reaches challenge targets.
#[derive(Debug, Clone)]
pub struct VaConfig {
    /// Port for http-01 (80 outside tests).
    pub http_port: u16,
    /// Port for tls-alpn-01 and https redirects of http-01 (443 outside tests).
    pub tls_port: u16,
    /// DNS server to ask; `None` reads the system configuration (`/etc/resolv.conf`).
    pub dns_resolver: Option<SocketAddr>,
    /// Permit loopback targets (tests and local use); link-local and multicast stay refused.
    pub allow_loopback: bool,
    /// When non-empty, every target must be inside one of these (`10.0.0.0/8`, `2001:db8::/32`).
    pub allowed_cidrs: Vec<String>,
    /// Targets inside these are always refused.
    pub denied_cidrs: Vec<String>,
    /// The CA's own listeners (ip and port): always refused.
    pub own_addrs: Vec<SocketAddr>,
    /// Budget for one whole validation: DNS, dials, TLS, headers and body together.
    pub timeout: Duration,
}

impl Default for VaConfig {
    fn default() -> Self {
        VaConfig {
            http_port: 80,
            tls_port: 443,
            dns_resolver: None,
            allow_loopback: false,
            allowed_cidrs: Vec::new(),
            denied_cidrs: Vec::new(),
            own_addrs: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// An ACME identifier (RFC 8555 `dns`, RFC 8738 `ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    /// A DNS name; for a wildcard authorization the caller passes the base name without `*.`.
    Dns(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    Dns01,
    TlsAlpn01,
}

/// What was validated: the address dialled (None for dns-01), for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub address: Option<SocketAddr>,
}

/// Why a validation failed; each variant is one ACME problem type. Messages are for the ACME
/// client and never carry content fetched from the target.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaError {
    /// `urn:ietf:params:acme:error:connection`
    #[error("{0}")]
    Connection(String),
    /// `urn:ietf:params:acme:error:dns`
    #[error("{0}")]
    Dns(String),
    /// `urn:ietf:params:acme:error:tls`
    #[error("{0}")]
    Tls(String),
    /// `urn:ietf:params:acme:error:incorrectResponse`
    #[error("{0}")]
    IncorrectResponse(String),
    /// `urn:ietf:params:acme:error:unauthorized` (target refused by policy)
    #[error("{0}")]
    Unauthorized(String),
    /// `urn:ietf:params:acme:error:malformed`
    #[error("{0}")]
    Malformed(String),
}

/// Runs challenges. Cheap to share: hold one in an `Arc` for the whole server.
pub struct Validator {
    cfg: VaConfig,
    policy: Policy,
    resolver: TokioResolver,
    /// For http-01's https redirects: any certificate, ALPN http/1.1.
    https_tls: Arc<rustls::ClientConfig>,
    /// For tls-alpn-01: any certificate, ALPN acme-tls/1 only.
    alpn_tls: Arc<rustls::ClientConfig>,
}

impl Validator {
    pub fn new(cfg: VaConfig) -> Result<Validator, String> {
        let policy = Policy::new(&cfg)?;
        let (config, mut opts) = match cfg.dns_resolver {
            Some(addr) => (
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
                ),
                ResolverOpts::default(),
            ),
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("reading the system DNS configuration: {e}"))?,
        };
        // Validation must see what the authoritative servers say now: no cache, no hosts file.
        // (a zero-capacity cache may still hold an entry until its next maintenance: TTLs of 0 too)
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = cfg.timeout.min(Duration::from_secs(5));
        opts.attempts = 2;
        opts.ndots = 0;
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Ok(Validator {
            https_tls: tlsalpn01::client_config(&[b"http/1.1"])?,
            alpn_tls: tlsalpn01::client_config(&[tlsalpn01::ACME_TLS_ALPN])?,
            cfg,
            policy,
            resolver,
        })
    }

    /// `key_authorization` = token + "." + account-key thumbprint (computed by the caller).
    pub async fn validate(
        &self,
        kind: ChallengeKind,
        ident: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<Validated, VaError> {
        check_token(token)?;
        let ident = normalize(ident)?;
        let deadline = Deadline::after(self.cfg.timeout);
        let work = async {
            match kind {
                ChallengeKind::Http01 => {
                    http01::validate(self, deadline, &ident, token, key_authorization).await
                }
                ChallengeKind::Dns01 => dns01::validate(self, deadline, &ident, key_authorization).await,
                ChallengeKind::TlsAlpn01 => {
                    tlsalpn01::validate(self, deadline, &ident, key_authorization).await
                }
            }
        };
        // Each step has its own deadline-bound error; this is the backstop for the rest.
        match tokio::time::timeout_at(deadline.0, work).await {
            Ok(r) => r,
            Err(_) => Err(VaError::Connection(format!("validation timed out after {:?}", self.cfg.timeout))),
        }
    }

    /// The addresses of `ident` on `port`, each checked against the policy, in dial order.
    /// Any refused address refuses the identifier: a name that points at a forbidden address is
    /// not validated through its other addresses either.
    async fn targets(
        &self,
        deadline: Deadline,
        ident: &Identifier,
        port: u16,
    ) -> Result<Vec<SocketAddr>, VaError> {
        let ips = match ident {
            Identifier::Ip(ip) => vec![*ip],
            Identifier::Dns(name) => self.resolve(deadline, name).await?,
        };
        let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
        for a in &addrs {
            self.policy.check(*a)?;
        }
        Ok(addrs)
    }

    /// A and AAAA of `name`, IPv6 first (as Boulder prefers), duplicates dropped.
    async fn resolve(&self, deadline: Deadline, name: &str) -> Result<Vec<IpAddr>, VaError> {
        // RFC 6761 6.3: localhost names are loopback and are not asked of DNS (the
        // target policy then refuses them unless loopback is allowed).
        if name == "localhost" || name.ends_with(".localhost") {
            return Ok(vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ]);
        }
        let fqdn = format!("{name}.");
        let lookup = deadline
            .run(self.resolver.lookup_ip(fqdn.as_str()))
            .await
            .map_err(|_| VaError::Dns(format!("timed out resolving {name}")))?
            .map_err(|e| {
                if e.is_no_records_found() {
                    VaError::Dns(format!("no A or AAAA record for {name}"))
                } else {
                    VaError::Dns(format!("resolving {name}: {e}"))
                }
            })?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ips.sort_by_key(|ip| ip.is_ipv4());
        if ips.is_empty() {
            return Err(VaError::Dns(format!("no A or AAAA record for {name}")));
        }
        Ok(ips)
    }

    /// Dials the checked addresses in order; the first that connects wins.
    async fn dial(&self, deadline: Deadline, addrs: &[SocketAddr]) -> Result<TcpStream, VaError> {
        let mut errors = Vec::new();
        for addr in addrs {
            match deadline.run(TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => {
                    errors.push(format!("{addr}: timed out"));
                    break;
                }
            }
        }
        Err(VaError::Connection(format!("could not connect: {}", errors.join("; "))))
    }
}

/// The end of a validation's time budget, shared by all of its steps.
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// `fut`, or `Err(Elapsed)` at the deadline.
    async fn run<F: std::future::Future>(&self, fut: F) -> Result<F::Output, tokio::time::error::Elapsed> {
        tokio::time::timeout_at(self.0, fut).await
    }
}

/// Tokens go into a URL path: RFC 8555 8.1 makes them base64url, so anything else is refused.
fn check_token(token: &str) -> Result<(), VaError> {
    if token.is_empty()
        || token.len() > 256
        || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(VaError::Malformed("challenge token is not 1..=256 base64url characters".into()));
    }
    Ok(())
}

/// A DNS identifier lower-cased and without a trailing dot, or `Malformed` naming the fault;
/// an IP identifier as is (IPv4-mapped IPv6 is its IPv4 address).
fn normalize(ident: &Identifier) -> Result<Identifier, VaError> {
    match ident {
        Identifier::Ip(ip) => Ok(Identifier::Ip(target::canonical(*ip))),
        Identifier::Dns(name) => {
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            let bad = |why: &str| Err(VaError::Malformed(format!("identifier {name:?}: {why}")));
            if name.is_empty() || name.len() > 253 {
                return bad("not 1..=253 characters");
            }
            if name.parse::<IpAddr>().is_ok() {
                return bad("an IP address given as a DNS identifier");
            }
            for label in name.split('.') {
                if label.is_empty() || label.len() > 63 {
                    return bad("a label is not 1..=63 characters");
                }
                if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return bad(
                        "only letters, digits, '-' and '_' may appear (a wildcard's base name is validated without \"*.\")",
                    );
                }
                if label.starts_with('-') || label.ends_with('-') {
                    return bad("a label starts or ends with '-'");
                }
            }
            Ok(Identifier::Dns(name))
        }
    }
}

/// Shared test fixtures: a one-zone UDP DNS server and a validator aimed at it.
#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_normalized_or_refused() {
        let n = |s: &str| normalize(&Identifier::Dns(s.into()));
        assert_eq!(n("Example.COM.").unwrap(), Identifier::Dns("example.com".into()));
        let long = "a".repeat(64);
        for bad in ["", "*.example.com", "a..b", "-a.b", "a b", "1.2.3.4", long.as_str(), "é.com"] {
            assert!(matches!(n(bad), Err(VaError::Malformed(_))), "{bad:?}");
        }
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(normalize(&Identifier::Ip(mapped)).unwrap(), Identifier::Ip("192.0.2.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn validate_future_is_send() {
        // the ACME handlers run it on a multi-threaded runtime
        fn is_send<T: Send>(_: &T) {}
        let va = testutil::validator(|_| {});
        let ident = Identifier::Dns("a.test".into());
        is_send(&va.validate(ChallengeKind::Http01, &ident, "t", "t.k"));
    }

    #[test]
    fn tokens_must_be_base64url() {
        assert!(check_token("abc-_XYZ09").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a b", "a%2f"] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
    }
}
