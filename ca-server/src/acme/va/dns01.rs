//! dns-01 (RFC 8555 8.4): a TXT record at `_acme-challenge.<name>` holding the unpadded
//! base64url SHA-256 digest of the key authorization.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Deadline, Identifier, VaError, Validated, Validator};

/// The TXT value dns-01 expects for `key_authorization`.
pub(crate) fn expected_txt(key_authorization: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

pub(super) async fn validate(
    va: &Validator,
    deadline: Deadline,
    ident: &Identifier,
    key_authorization: &str,
) -> Result<Validated, VaError> {
    let name = match ident {
        Identifier::Dns(name) => name,
        Identifier::Ip(ip) => {
            return Err(VaError::Malformed(format!(
                "dns-01 cannot validate the IP identifier {ip} (RFC 8738 section 7)"
            )));
        }
    };
    let query = format!("_acme-challenge.{name}");
    // The resolver follows CNAMEs (bounded by its own chain limit) and hands back only the TXT
    // records at the end of the chain.
    let lookup = deadline
        .run(va.resolver.txt_lookup(format!("{query}.")))
        .await
        .map_err(|_| VaError::Dns(format!("timed out looking up TXT at {query}")))?;
    let lookup = match lookup {
        Ok(l) => l,
        Err(e) if e.is_no_records_found() => {
            return Err(VaError::Dns(format!("no TXT record at {query}")));
        }
        Err(e) => return Err(VaError::Dns(format!("looking up TXT at {query}: {e}"))),
    };
    let want = expected_txt(key_authorization);
    let mut seen = 0usize;
    for txt in lookup.iter() {
        seen += 1;
        // One record may be split into several character-strings (RFC 7208 3.3 style): join.
        let value: Vec<u8> = txt.txt_data().iter().flat_map(|s| s.iter().copied()).collect();
        if value == want.as_bytes() {
            return Ok(Validated { address: None });
        }
    }
    if seen == 0 {
        return Err(VaError::Dns(format!("no TXT record at {query}")));
    }
    Err(VaError::IncorrectResponse(format!(
        "none of the {seen} TXT record(s) at {query} is the expected {want:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Zone, validator};
    use super::super::{ChallengeKind, Identifier, VaError};
    use super::*;

    const KA: &str = "tok123.thumbprint";

    #[test]
    fn expected_value_is_unpadded_base64url_sha256() {
        // RFC 8555 8.4 defines the value; this pins the encoding (43 chars, no '=')
        let v = expected_txt("a.b");
        assert_eq!(v.len(), 43);
        assert!(!v.contains('=') && !v.contains('+') && !v.contains('/'));
    }

    #[tokio::test]
    async fn dns01_right_txt_is_accepted() {
        let mut zone = Zone::default();
        let want = expected_txt(KA);
        // split into two character-strings: they are joined before comparing
        zone.txt("_acme-challenge.ok.test", vec![want[..10].into(), want[10..].into()]);
        zone.txt("_acme-challenge.ok.test", vec!["unrelated".into()]);
        let dns = zone.serve().await;
        let va = validator(|c| c.dns_resolver = Some(dns));
        let r = va.validate(ChallengeKind::Dns01, &Identifier::Dns("OK.test.".into()), "tok123", KA).await;
        assert_eq!(r.expect("valid").address, None);
    }

    #[tokio::test]
    async fn dns01_follows_cname() {
        let mut zone = Zone::default();
        zone.cname("_acme-challenge.alias.test", "delegated.other.test");
        zone.txt("delegated.other.test", vec![expected_txt(KA)]);
        let dns = zone.serve().await;
        let va = validator(|c| c.dns_resolver = Some(dns));
        va.validate(ChallengeKind::Dns01, &Identifier::Dns("alias.test".into()), "tok123", KA)
            .await
            .expect("valid through the CNAME");
    }

    #[tokio::test]
    async fn dns01_wrong_txt_is_incorrect_response() {
        let mut zone = Zone::default();
        zone.txt("_acme-challenge.wrong.test", vec!["not-the-digest".into()]);
        let dns = zone.serve().await;
        let va = validator(|c| c.dns_resolver = Some(dns));
        let e = va
            .validate(ChallengeKind::Dns01, &Identifier::Dns("wrong.test".into()), "tok123", KA)
            .await
            .unwrap_err();
        match e {
            VaError::IncorrectResponse(m) => {
                assert!(m.contains("1 TXT record"), "{m}");
                assert!(m.contains(&expected_txt(KA)), "{m}");
            }
            other => panic!("want IncorrectResponse, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dns01_missing_record_is_dns_error() {
        let dns = Zone::default().serve().await;
        let va = validator(|c| c.dns_resolver = Some(dns));
        let e = va
            .validate(ChallengeKind::Dns01, &Identifier::Dns("none.test".into()), "tok123", KA)
            .await
            .unwrap_err();
        match e {
            VaError::Dns(m) => assert_eq!(m, "no TXT record at _acme-challenge.none.test"),
            other => panic!("want Dns, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dns01_refuses_ip_identifiers() {
        let dns = Zone::default().serve().await;
        let va = validator(|c| c.dns_resolver = Some(dns));
        let e = va
            .validate(ChallengeKind::Dns01, &Identifier::Ip("192.0.2.1".parse().unwrap()), "t", KA)
            .await
            .unwrap_err();
        assert!(matches!(e, VaError::Malformed(_)), "{e:?}");
    }
}
