//! Which addresses the validation authority may dial.
//!
//! Every address is checked here before a socket is opened, for the identifier's own addresses
//! and for every redirect hop alike, so that an ACME client cannot point the CA at its own
//! listeners, at cloud metadata (169.254.169.254) or at anything the operator has fenced off.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{VaConfig, VaError};

/// An IP network, `addr/prefix` (a bare address is a host route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| format!("CIDR {s:?}: {addr:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("CIDR {s:?}: prefix {p:?} is not 0..={max}"))?,
        };
        Ok(Cidr { net: canonical(net), prefix })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

/// True when the first `prefix` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address it carries: checked as such, so the
/// mapped form cannot slip a refused IPv4 address past the rules.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The address rules of one [`VaConfig`], parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    allow_loopback: bool,
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
    own: Vec<SocketAddr>,
}

impl Policy {
    pub(crate) fn new(cfg: &VaConfig) -> Result<Policy, String> {
        let parse_all = |list: &[String], what: &str| -> Result<Vec<Cidr>, String> {
            list.iter().map(|s| Cidr::parse(s).map_err(|e| format!("{what}: {e}"))).collect()
        };
        Ok(Policy {
            allow_loopback: cfg.allow_loopback,
            allowed: parse_all(&cfg.allowed_cidrs, "allowed_cidrs")?,
            denied: parse_all(&cfg.denied_cidrs, "denied_cidrs")?,
            own: cfg.own_addrs.clone(),
        })
    }

    /// May `addr` be dialled? `Unauthorized` naming the address and the rule when not.
    pub(crate) fn check(&self, addr: SocketAddr) -> Result<(), VaError> {
        let ip = canonical(addr.ip());
        let refuse = |why: &str| Err(VaError::Unauthorized(format!("refusing to dial {addr}: {why}")));
        if self.is_own(ip, addr.port()) {
            return refuse("it is one of the CA's own listeners");
        }
        if let Some(why) = special(ip)
            && !(why == "loopback" && self.allow_loopback)
        {
            return refuse(&format!("{why} address"));
        }
        if self.denied.iter().any(|c| c.contains(ip)) {
            return refuse("inside denied_cidrs");
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|c| c.contains(ip)) {
            return refuse("outside allowed_cidrs");
        }
        Ok(())
    }

    /// A listener bound to the unspecified address (`0.0.0.0:443`) answers on every local
    /// address; loopback is the local address an ACME client can name, so it counts as own too.
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == port
                && (own_ip == ip || (own_ip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }
}

/// The kind of special-purpose address `ip` is, if it is one a validation must not reach.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if o[0] == 0 {
        // 0.0.0.0/8 "this network": 0.0.0.0 itself reaches the local host on Linux
        Some("unspecified")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg0 = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if seg0 & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.to_ipv4().is_some() && seg0 == 0 {
        // deprecated IPv4-compatible ::a.b.c.d: no route should need it
        Some("IPv4-compatible")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(f: impl FnOnce(&mut VaConfig)) -> Policy {
        let mut cfg = VaConfig::default();
        f(&mut cfg);
        Policy::new(&cfg).expect("policy")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let c = Cidr::parse("2001:db8::/33").unwrap();
        assert!(c.contains("2001:db8:7fff::1".parse().unwrap()));
        assert!(!c.contains("2001:db8:8000::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("192.0.2.1").unwrap().contains("192.0.2.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nope/8", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn special_addresses_are_refused() {
        let p = policy(|_| {});
        for a in [
            "127.0.0.1:80",
            "[::1]:80",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "[ff02::1]:80",
            "255.255.255.255:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
        ] {
            assert!(matches!(p.check(sa(a)), Err(VaError::Unauthorized(_))), "{a}");
        }
        assert!(p.check(sa("192.0.2.10:80")).is_ok());
        assert!(p.check(sa("[2001:db8::1]:80")).is_ok());
    }

    #[test]
    fn allow_loopback_permits_loopback_only() {
        let p = policy(|c| c.allow_loopback = true);
        assert!(p.check(sa("127.0.0.1:80")).is_ok());
        assert!(p.check(sa("[::1]:80")).is_ok());
        assert!(p.check(sa("169.254.169.254:80")).is_err());
        assert!(p.check(sa("[fe80::1]:80")).is_err());
        assert!(p.check(sa("224.0.0.1:80")).is_err());
    }

    #[test]
    fn cidr_lists_and_own_addresses() {
        let p = policy(|c| {
            c.allow_loopback = true;
            c.allowed_cidrs = vec!["192.0.2.0/24".into(), "127.0.0.0/8".into()];
            c.denied_cidrs = vec!["192.0.2.128/25".into()];
            c.own_addrs = vec![sa("127.0.0.1:8443"), sa("0.0.0.0:9000")];
        });
        assert!(p.check(sa("192.0.2.1:80")).is_ok());
        assert!(p.check(sa("192.0.2.200:80")).is_err());
        assert!(p.check(sa("198.51.100.1:80")).is_err());
        assert!(p.check(sa("127.0.0.1:8443")).is_err());
        assert!(p.check(sa("127.0.0.1:8444")).is_ok());
        assert!(p.check(sa("127.0.0.2:9000")).is_err());
        assert!(Policy::new(&VaConfig { denied_cidrs: vec!["x".into()], ..VaConfig::default() }).is_err());
    }
}
