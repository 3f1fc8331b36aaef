//! Issuance policy: which names, keys and lifetimes a caller may get.
//!
//! DNS rules:
//! - `host.example.internal` allows exactly that name;
//! - `.example.internal` allows any name strictly below `example.internal`, any depth;
//! - `*.example.internal` allows exactly one label below `example.internal`.
//!
//! A wildcard request (`*.svc.example.internal`) is allowed only with
//! `allow_wildcard_names` and when its wildcard label is covered by a suffix rule.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A subject's public key type as found in a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKey {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa { bits: usize },
}

impl SubjectKey {
    pub fn family(self) -> &'static str {
        match self {
            SubjectKey::EcdsaP256 => "ecdsa-p256",
            SubjectKey::EcdsaP384 => "ecdsa-p384",
            SubjectKey::Ed25519 => "ed25519",
            SubjectKey::Rsa { .. } => "rsa",
        }
    }
}

impl std::fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectKey::Rsa { bits } => write!(f, "rsa-{bits}"),
            k => f.write_str(k.family()),
        }
    }
}

/// A name a certificate may carry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SanName {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
}

impl std::fmt::Display for SanName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SanName::Dns(d) => f.write_str(d),
            SanName::Ip(ip) => write!(f, "{ip}"),
            SanName::Uri(u) => f.write_str(u),
        }
    }
}

/// An IP network, `addr/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::Config(format!("bad IP range {s:?}: expected ADDR or ADDR/PREFIX"));
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        fn masked_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
            let full = (prefix / 8) as usize;
            let rem = prefix % 8;
            if a[..full] != b[..full] {
                return false;
            }
            if rem == 0 {
                return true;
            }
            let mask = 0xffu8 << (8 - rem);
            a[full] & mask == b[full] & mask
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => masked_eq(&n.octets(), &i.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(i)) => masked_eq(&n.octets(), &i.octets(), self.prefix),
            _ => false,
        }
    }
}

/// The policy as configured (TOML `[policy]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub allowed_dns: Vec<String>,
    pub allowed_ips: Vec<String>,
    /// URI SAN prefixes, e.g. `spiffe://cluster.local/`.
    pub allowed_uri_prefixes: Vec<String>,
    pub allow_wildcard_names: bool,
    /// Subset of `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa`.
    pub allowed_key_types: Vec<String>,
    pub min_rsa_bits: usize,
    pub max_validity_secs: u64,
    pub max_names: usize,
}

impl Default for PolicyConfig {
    /// A dev CA's policy: private-use names and addresses only.
    fn default() -> Self {
        PolicyConfig {
            allowed_dns: [
                "localhost",
                ".localhost",
                ".internal",
                ".local",
                ".test",
                ".example",
                ".example.com",
                ".example.org",
                ".svc",
                ".cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            allowed_ips: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fd00::/8",
            ]
            .map(String::from)
            .to_vec(),
            allowed_uri_prefixes: vec!["spiffe://".into()],
            allow_wildcard_names: false,
            allowed_key_types: ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa"].map(String::from).to_vec(),
            min_rsa_bits: 2048,
            max_validity_secs: 398 * 86_400,
            max_names: 100,
        }
    }
}

impl PolicyConfig {
    /// The policy with this one's DNS and IP rules replaced by narrower ones (an EAB key's, a
    /// caller's rule), to apply on top of this one: a name must pass both. `None` when both
    /// lists are empty (nothing narrows). An empty list beside a non-empty one allows no
    /// names of that kind.
    pub fn narrowed(&self, allowed_dns: &[String], allowed_ips: &[String]) -> Result<Option<Policy>, Error> {
        if allowed_dns.is_empty() && allowed_ips.is_empty() {
            return Ok(None);
        }
        Policy::new(PolicyConfig {
            allowed_dns: allowed_dns.to_vec(),
            allowed_ips: allowed_ips.to_vec(),
            ..self.clone()
        })
        .map(Some)
    }
}

#[derive(Debug, Clone)]
enum DnsRule {
    Exact(String),
    Suffix(String),
    OneLabel(String),
}

/// A checked, ready-to-apply policy.
#[derive(Debug, Clone)]
pub struct Policy {
    dns: Vec<DnsRule>,
    ips: Vec<IpNet>,
    cfg: PolicyConfig,
}

impl Policy {
    pub fn new(cfg: PolicyConfig) -> Result<Self, Error> {
        let mut dns = Vec::new();
        for r in &cfg.allowed_dns {
            let r = r.trim().to_ascii_lowercase();
            let rule = if let Some(s) = r.strip_prefix("*.") {
                DnsRule::OneLabel(s.to_string())
            } else if let Some(s) = r.strip_prefix('.') {
                DnsRule::Suffix(s.to_string())
            } else {
                DnsRule::Exact(r.clone())
            };
            let base = match &rule {
                DnsRule::Exact(s) | DnsRule::Suffix(s) | DnsRule::OneLabel(s) => s,
            };
            check_dns_syntax(base).map_err(|e| Error::Config(format!("policy rule {r:?}: {e}")))?;
            dns.push(rule);
        }
        let ips = cfg.allowed_ips.iter().map(|s| IpNet::parse(s)).collect::<Result<_, _>>()?;
        for k in &cfg.allowed_key_types {
            if !["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa"].contains(&k.as_str()) {
                return Err(Error::Config(format!(
                    "unknown key type {k:?} in policy; known: ecdsa-p256, ecdsa-p384, ed25519, rsa"
                )));
            }
        }
        if cfg.min_rsa_bits < 2048 {
            return Err(Error::Config("min_rsa_bits below 2048 is not allowed".into()));
        }
        Ok(Policy { dns, ips, cfg })
    }

    pub fn max_validity_secs(&self) -> u64 {
        self.cfg.max_validity_secs
    }

    /// The configuration this policy was built from (to derive a narrower one).
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// See [`PolicyConfig::narrowed`].
    pub fn narrowed(&self, allowed_dns: &[String], allowed_ips: &[String]) -> Result<Option<Policy>, Error> {
        self.cfg.narrowed(allowed_dns, allowed_ips)
    }

    /// Reject key types and sizes the policy does not allow.
    pub fn check_key(&self, key: SubjectKey) -> Result<(), Error> {
        if !self.cfg.allowed_key_types.iter().any(|k| k == key.family()) {
            return Err(Error::UnsupportedKey {
                found: key.to_string(),
                allowed: self.cfg.allowed_key_types.join(", "),
            });
        }
        if let SubjectKey::Rsa { bits } = key {
            if bits < self.cfg.min_rsa_bits {
                return Err(Error::WeakKey {
                    found: format!("RSA {bits} bits"),
                    minimum: format!("RSA {} bits", self.cfg.min_rsa_bits),
                });
            }
            if bits > 8192 {
                return Err(Error::UnsupportedKey {
                    found: format!("RSA {bits} bits"),
                    allowed: "RSA up to 8192 bits".into(),
                });
            }
        }
        Ok(())
    }

    /// Check every requested name; the first one outside policy is named in the error.
    pub fn check_names(&self, names: &[SanName]) -> Result<(), Error> {
        if names.is_empty() {
            return Err(Error::BadNames(
                "the CSR names nothing: put DNS names, IP addresses or URIs in its subjectAltName (or a DNS name as CN)".into(),
            ));
        }
        if names.len() > self.cfg.max_names {
            return Err(Error::BadNames(format!(
                "{} names requested; at most {} allowed",
                names.len(),
                self.cfg.max_names
            )));
        }
        for n in names {
            let ok = match n {
                SanName::Dns(d) => self.dns_allowed(d),
                SanName::Ip(ip) => self.ips.iter().any(|net| net.contains(ip)),
                SanName::Uri(u) => self.cfg.allowed_uri_prefixes.iter().any(|p| u.starts_with(p.as_str())),
            };
            if !ok {
                let allowed = match n {
                    SanName::Dns(_) => {
                        let mut s = self.cfg.allowed_dns.join(", ");
                        if !self.cfg.allow_wildcard_names {
                            s.push_str(" (wildcard names not allowed)");
                        }
                        s
                    }
                    SanName::Ip(_) => self.cfg.allowed_ips.join(", "),
                    SanName::Uri(_) => self.cfg.allowed_uri_prefixes.join(", "),
                };
                return Err(Error::NameNotAllowed { name: n.to_string(), allowed });
            }
        }
        Ok(())
    }

    fn dns_allowed(&self, name: &str) -> bool {
        let (wild, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if wild && !self.cfg.allow_wildcard_names {
            return false;
        }
        self.dns.iter().any(|r| match r {
            // `*.x` requested: the wildcard stands for labels, so only a suffix rule
            // covering `x` itself or above allows it.
            DnsRule::Exact(e) => !wild && name == e,
            DnsRule::Suffix(s) => (wild && name == s) || is_strictly_below(name, s),
            DnsRule::OneLabel(s) => {
                if wild {
                    false
                } else {
                    name.strip_suffix(s.as_str())
                        .and_then(|p| p.strip_suffix('.'))
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                }
            }
        })
    }
}

fn is_strictly_below(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// Validate and normalize a DNS name (lowercase, LDH labels, optional leading `*.`).
pub fn normalize_dns(name: &str) -> Result<String, Error> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    check_dns_syntax(body).map_err(|e| Error::BadNames(format!("DNS name {name:?}: {e}")))?;
    Ok(lower)
}

fn check_dns_syntax(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1..=253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1..=63 characters".into());
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("labels may hold only letters, digits and '-'".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dns: &[&str], wild: bool) -> Policy {
        Policy::new(PolicyConfig {
            allowed_dns: dns.iter().map(|s| s.to_string()).collect(),
            allow_wildcard_names: wild,
            ..PolicyConfig::default()
        })
        .unwrap()
    }

    fn dns(s: &str) -> SanName {
        SanName::Dns(s.into())
    }

    #[test]
    fn narrowed_replaces_the_name_rules_and_keeps_the_rest() {
        let server = policy(&[".internal"], false);
        assert!(server.narrowed(&[], &[]).unwrap().is_none(), "nothing to narrow");
        let team = server.narrowed(&[".team-a.internal".into()], &[]).unwrap().unwrap();
        assert!(team.check_names(&[dns("svc.team-a.internal")]).is_ok());
        assert!(team.check_names(&[dns("svc.team-b.internal")]).is_err());
        let ip = SanName::Ip("10.1.2.3".parse().unwrap());
        assert!(server.check_names(std::slice::from_ref(&ip)).is_ok());
        assert!(team.check_names(&[ip]).is_err(), "an empty IP list beside DNS rules allows no IPs");
        assert_eq!(team.max_validity_secs(), server.max_validity_secs());
        assert!(server.narrowed(&["bad name!".into()], &[]).is_err());
    }

    #[test]
    fn dns_rules() {
        let p = policy(&["api.corp", ".example.internal", "*.svc.corp"], false);
        assert!(p.check_names(&[dns("api.corp")]).is_ok());
        assert!(p.check_names(&[dns("x.api.corp")]).is_err());
        assert!(p.check_names(&[dns("a.b.example.internal")]).is_ok());
        assert!(p.check_names(&[dns("example.internal")]).is_err());
        assert!(p.check_names(&[dns("evilexample.internal")]).is_err());
        assert!(p.check_names(&[dns("a.svc.corp")]).is_ok());
        assert!(p.check_names(&[dns("a.b.svc.corp")]).is_err());
        assert!(p.check_names(&[dns("*.x.example.internal")]).is_err());
        let err = p.check_names(&[dns("a.example.internal"), dns("evil.com")]).unwrap_err();
        assert!(err.to_string().contains("evil.com"), "{err}");
        assert!(err.to_string().contains(".example.internal"), "{err}");

        let w = policy(&[".example.internal"], true);
        assert!(w.check_names(&[dns("*.x.example.internal")]).is_ok());
        assert!(w.check_names(&[dns("*.example.internal")]).is_ok());
        assert!(w.check_names(&[dns("*.internal")]).is_err());
    }

    #[test]
    fn ip_and_uri_rules() {
        let p = Policy::new(PolicyConfig::default()).unwrap();
        assert!(p.check_names(&[SanName::Ip("10.1.2.3".parse().unwrap())]).is_ok());
        assert!(p.check_names(&[SanName::Ip("172.32.0.1".parse().unwrap())]).is_err());
        assert!(p.check_names(&[SanName::Ip("8.8.8.8".parse().unwrap())]).is_err());
        assert!(p.check_names(&[SanName::Ip("::1".parse().unwrap())]).is_ok());
        assert!(p.check_names(&[SanName::Uri("spiffe://cluster.local/ns/a".into())]).is_ok());
        assert!(p.check_names(&[SanName::Uri("https://x".into())]).is_err());
        assert!(p.check_names(&[]).is_err());
    }

    #[test]
    fn keys() {
        let p = Policy::new(PolicyConfig::default()).unwrap();
        assert!(p.check_key(SubjectKey::EcdsaP256).is_ok());
        assert!(p.check_key(SubjectKey::Rsa { bits: 2048 }).is_ok());
        let e = p.check_key(SubjectKey::Rsa { bits: 1024 }).unwrap_err();
        assert!(matches!(e, Error::WeakKey { .. }), "{e}");
        let strict = Policy::new(PolicyConfig {
            allowed_key_types: vec!["ecdsa-p256".into()],
            ..PolicyConfig::default()
        })
        .unwrap();
        assert!(matches!(strict.check_key(SubjectKey::Ed25519), Err(Error::UnsupportedKey { .. })));
    }

    #[test]
    fn dns_normalization() {
        assert_eq!(normalize_dns("API.Example.Internal.").unwrap(), "api.example.internal");
        assert!(normalize_dns("bad_name.internal").is_err());
        assert!(normalize_dns("-x.internal").is_err());
        assert!(normalize_dns("").is_err());
    }
}
