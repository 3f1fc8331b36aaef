//! tls-alpn-01 against a tokio-rustls server on 127.0.0.1 with rcgen-made challenge
//! certificates; also http-01's https redirect hop, which needs the same server.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::testutil::{Zone, validator};
use super::super::{ChallengeKind, Identifier, VaError};
use super::{ACME_TLS_ALPN, check_certificate, reverse_name};

const KA: &str = "tokTLS.thumbprint";
const ACME_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 31];

fn sha256(s: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().to_vec()
}

fn dns_san(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("ia5 name"))
}

/// A self-signed certificate with `sans` and `ext` (if any), and its key.
fn cert(
    sans: Vec<SanType>,
    ext: Option<CustomExtension>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.custom_extensions = ext.into_iter().collect();
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()).into())
}

fn challenge_cert(san: SanType, ka: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    cert(vec![san], Some(CustomExtension::new_acme_identifier(&sha256(ka))))
}

/// Presents one certificate whatever the ClientHello says.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Serves TLS with `alpn`; records each handshake's SNI; answers one HTTP request with
/// `http_body` when given.
async fn tls_server(
    (chain, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
    alpn: &[&[u8]],
    http_body: Option<&'static str>,
) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    tls_server_with(chain, key, rustls::DEFAULT_VERSIONS, alpn, http_body).await
}

/// [`tls_server`] with the protocol versions chosen, and `key` free to differ from the one
/// the certificate names.
async fn tls_server_with(
    chain: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
    http_body: Option<&'static str>,
) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // not with_single_cert: it runs webpki over the certificate, which refuses the critical
    // acmeIdentifier extension it does not know (and it would refuse a mismatched key)
    let signer = provider.key_provider.load_private_key(key).expect("signing key");
    let certified = Arc::new(CertifiedKey::new(vec![chain], signer));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(certified)));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let snis = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&snis);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                seen.lock().unwrap().push(tls.get_ref().1.server_name().map(str::to_string));
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                if let Some(body) = http_body {
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, snis)
}

/// The SNIs recorded so far, after waiting (up to 2 s) for the first: the server side of a
/// handshake may finish after the client side has returned.
async fn seen(snis: &Mutex<Vec<Option<String>>>) -> Vec<Option<String>> {
    for _ in 0..200 {
        if !snis.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    snis.lock().unwrap().clone()
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[tokio::test]
async fn tlsalpn01_ip_identifier_is_accepted_with_reverse_dns_sni() {
    let (addr, snis) =
        tls_server(challenge_cert(SanType::IpAddress(loopback()), KA), &[ACME_TLS_ALPN], None).await;
    let va = validator(|c| c.tls_port = addr.port());
    let v = va
        .validate(ChallengeKind::TlsAlpn01, &Identifier::Ip(loopback()), "tokTLS", KA)
        .await
        .expect("valid");
    assert_eq!(v.address, Some(addr));
    assert_eq!(seen(&snis).await, vec![Some("1.0.0.127.in-addr.arpa".to_string())]);
}

#[tokio::test]
async fn tlsalpn01_dns_identifier_is_accepted() {
    let name = "alpn.example.test";
    let (addr, snis) = tls_server(challenge_cert(dns_san(name), KA), &[ACME_TLS_ALPN], None).await;
    let mut zone = Zone::default();
    zone.ip(name, loopback());
    let dns = zone.serve().await;
    let va = validator(|c| {
        c.tls_port = addr.port();
        c.dns_resolver = Some(dns);
    });
    let v = va
        .validate(ChallengeKind::TlsAlpn01, &Identifier::Dns(name.into()), "tokTLS", KA)
        .await
        .expect("valid");
    assert_eq!(v.address, Some(addr));
    assert_eq!(seen(&snis).await, vec![Some(name.to_string())]);
}

#[tokio::test]
async fn tlsalpn01_wrong_digest_is_incorrect_response() {
    let (addr, _) =
        tls_server(challenge_cert(SanType::IpAddress(loopback()), "other.ka"), &[ACME_TLS_ALPN], None).await;
    let va = validator(|c| c.tls_port = addr.port());
    let e =
        va.validate(ChallengeKind::TlsAlpn01, &Identifier::Ip(loopback()), "tokTLS", KA).await.unwrap_err();
    assert!(matches!(e, VaError::IncorrectResponse(ref m) if m.contains("SHA-256")), "{e:?}");
}

#[tokio::test]
async fn tlsalpn01_server_without_the_alpn_is_tls_error() {
    for alpn in [&[][..], &[&b"h2"[..]][..]] {
        let (addr, _) = tls_server(challenge_cert(SanType::IpAddress(loopback()), KA), alpn, None).await;
        let va = validator(|c| c.tls_port = addr.port());
        let e = va
            .validate(ChallengeKind::TlsAlpn01, &Identifier::Ip(loopback()), "tokTLS", KA)
            .await
            .unwrap_err();
        assert!(matches!(e, VaError::Tls(_)), "{alpn:?}: {e:?}");
    }
}

#[tokio::test]
async fn tlsalpn01_loopback_refused_without_allow() {
    let (addr, snis) =
        tls_server(challenge_cert(SanType::IpAddress(loopback()), KA), &[ACME_TLS_ALPN], None).await;
    let va = validator(|c| {
        c.tls_port = addr.port();
        c.allow_loopback = false;
    });
    let e =
        va.validate(ChallengeKind::TlsAlpn01, &Identifier::Ip(loopback()), "tokTLS", KA).await.unwrap_err();
    assert!(matches!(e, VaError::Unauthorized(_)), "{e:?}");
    assert!(snis.lock().unwrap().is_empty());
}

#[tokio::test]
async fn tlsalpn01_over_tls12_is_accepted() {
    // TLS 1.2 takes the other signature path of the verifier
    let (chain, key) = challenge_cert(SanType::IpAddress(loopback()), KA);
    let (addr, _) = tls_server_with(chain, key, &[&rustls::version::TLS12], &[ACME_TLS_ALPN], None).await;
    let va = validator(|c| c.tls_port = addr.port());
    va.validate(ChallengeKind::TlsAlpn01, &Identifier::Ip(loopback()), "tokTLS", KA)
        .await
        .expect("valid over TLS 1.2");
}

#[tokio::test]
async fn tlsalpn01_handshake_signed_by_another_key_is_tls_error() {
    // the right certificate, but the server does not hold its key: chain checks are off, the
    // handshake signature check is not
    let (chain, _) = challenge_cert(SanType::IpAddress(loopback()), KA);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (_, other_key) = challenge_cert(SanType::IpAddress(loopback()), KA);
        let (addr, _) = tls_server_with(chain.clone(), other_key, &[version], &[ACME_TLS_ALPN], None).await;
        let va = validator(|c| c.tls_port = addr.port());
        let e = va
            .validate(ChallengeKind::TlsAlpn01, &Identifier::Ip(loopback()), "tokTLS", KA)
            .await
            .unwrap_err();
        assert!(matches!(e, VaError::Tls(ref m) if m.contains("BadSignature")), "{version:?}: {e:?}");
    }
}

#[test]
fn certificate_checks_name_what_is_wrong() {
    let ip = Identifier::Ip(loopback());
    let good = CustomExtension::new_acme_identifier(&sha256(KA));
    let check = |sans, ext| check_certificate(cert(sans, ext).0.as_ref(), &ip, KA);
    assert_eq!(check(vec![SanType::IpAddress(loopback())], Some(good.clone())), Ok(()));
    let e = check(vec![SanType::IpAddress(loopback()), dns_san("x.test")], Some(good.clone())).unwrap_err();
    assert!(e.contains("2 subjectAltNames"), "{e}");
    let e = check(vec![SanType::IpAddress("127.0.0.2".parse().unwrap())], Some(good.clone())).unwrap_err();
    assert!(e.contains("does not name iPAddress 127.0.0.1"), "{e}");
    let e = check(vec![dns_san("1.0.0.127.in-addr.arpa")], Some(good.clone())).unwrap_err();
    assert!(e.contains("does not name"), "{e}");
    let e = check(vec![SanType::IpAddress(loopback())], None).unwrap_err();
    assert!(e.contains("no acmeIdentifier"), "{e}");

    let mut value = vec![0x04, 0x20];
    value.extend(sha256(KA));
    let mut lax = CustomExtension::from_oid_content(ACME_OID, value.clone());
    lax.set_criticality(false);
    let e = check(vec![SanType::IpAddress(loopback())], Some(lax)).unwrap_err();
    assert!(e.contains("not critical"), "{e}");
    let mut trailing = value.clone();
    trailing.push(0);
    let mut ext = CustomExtension::from_oid_content(ACME_OID, trailing);
    ext.set_criticality(true);
    assert!(check(vec![SanType::IpAddress(loopback())], Some(ext)).is_err());
    // the bare digest without its OCTET STRING header is not the RFC 8737 encoding
    let mut ext = CustomExtension::from_oid_content(ACME_OID, sha256(KA));
    ext.set_criticality(true);
    assert!(check(vec![SanType::IpAddress(loopback())], Some(ext)).is_err());

    let dns = Identifier::Dns("a.example.test".into());
    let (der, _) = cert(vec![dns_san("A.Example.Test")], Some(good));
    assert_eq!(check_certificate(der.as_ref(), &dns, KA), Ok(()));
    assert!(check_certificate(b"\x30\x03garbage", &dns, KA).is_err());
    assert!(check_certificate(b"", &dns, KA).is_err());
}

#[test]
fn reverse_names_follow_rfc_8738() {
    assert_eq!(reverse_name("192.0.2.10".parse().unwrap()), "10.2.0.192.in-addr.arpa");
    let v6 = reverse_name("2001:db8::1".parse().unwrap());
    assert_eq!(v6, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
}

#[tokio::test]
async fn http01_follows_an_https_redirect_with_any_certificate() {
    // a certificate for some other name: https hops of http-01 do not verify certificates
    let (tls_addr, snis) =
        tls_server(cert(vec![dns_san("unrelated.test")], None), &[b"http/1.1"], Some(KA)).await;
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = plain.local_addr().unwrap();
    let location = format!("https://hop.example.test:{}/x", tls_addr.port());
    tokio::spawn(async move {
        let Ok((mut s, _)) = plain.accept().await else { return };
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        let resp = format!("HTTP/1.1 301 Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
        let _ = s.write_all(resp.as_bytes()).await;
    });
    let mut zone = Zone::default();
    zone.ip("hop.example.test", loopback());
    let dns = zone.serve().await;
    let va = validator(|c| {
        c.http_port = http_addr.port();
        c.tls_port = tls_addr.port();
        c.dns_resolver = Some(dns);
    });
    let v = va
        .validate(ChallengeKind::Http01, &Identifier::Ip(loopback()), "tokTLS", KA)
        .await
        .expect("valid through the https hop");
    assert_eq!(v.address, Some(tls_addr));
    assert_eq!(seen(&snis).await, vec![Some("hop.example.test".to_string())]);
}
