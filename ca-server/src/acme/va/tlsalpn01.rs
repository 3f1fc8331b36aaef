//! tls-alpn-01 (RFC 8737): a TLS handshake on the validation port that negotiates ALPN
//! `acme-tls/1` and presents a certificate naming only the identifier, with the critical
//! acmeIdentifier extension holding SHA-256 of the key authorization.
//!
//! The certificate is self-signed by design, so no chain is verified; the handshake signature
//! still is, so the peer must hold the certificate's key.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use x509_parser::extensions::GeneralName;

use super::{Deadline, Identifier, VaError, Validated, Validator};

/// The ALPN protocol of RFC 8737 section 6.2.
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier (RFC 8737 section 6.1).
const ID_PE_ACME_IDENTIFIER: &str = "1.3.6.1.5.5.7.1.31";

/// A TLS 1.2/1.3 client on the ring provider (the process may have no default provider) that
/// accepts any certificate and offers `alpn`.
pub(super) fn client_config(alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // every validation is a fresh look at the target
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

pub(super) mod danger {
    //! Certificate "verification" for validation dials: chain and name are not checked (a
    //! tls-alpn-01 certificate is self-signed; Boulder ignores certificates on http-01's https
    //! redirects too), the handshake signature is.
    //!
    //! The signature is checked against the certificate's public key as a raw SPKI, not through
    //! rustls' `verify_tls1x_signature`: those parse the certificate with webpki, which rejects
    //! the critical acmeIdentifier extension every tls-alpn-01 certificate carries.
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, PeerMisbehaved, SignatureScheme};

    #[derive(Debug)]
    pub(crate) struct AcceptAnyCertificate(pub(crate) Arc<CryptoProvider>);

    impl AcceptAnyCertificate {
        /// TLS 1.3 pins one algorithm per scheme (the first mapped); TLS 1.2 may try each.
        fn verify(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
            tls13: bool,
        ) -> Result<HandshakeSignatureValid, Error> {
            // RFC 8446 4.2.3: PKCS#1 v1.5 and SHA-1 signatures are not for TLS 1.3 handshakes
            let legacy = matches!(
                dss.scheme,
                SignatureScheme::RSA_PKCS1_SHA1
                    | SignatureScheme::ECDSA_SHA1_Legacy
                    | SignatureScheme::RSA_PKCS1_SHA256
                    | SignatureScheme::RSA_PKCS1_SHA384
                    | SignatureScheme::RSA_PKCS1_SHA512
            );
            if tls13 && legacy {
                return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
            }
            let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
                .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
            let spki = SubjectPublicKeyInfoDer::from(parsed.tbs_certificate.subject_pki.raw);
            let key = webpki::RawPublicKeyEntity::try_from(&spki)
                .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
            let algs = &self.0.signature_verification_algorithms;
            let candidates = algs
                .mapping
                .iter()
                .find(|(scheme, _)| *scheme == dss.scheme)
                .map(|(_, a)| *a)
                .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
            let candidates = if tls13 { &candidates[..candidates.len().min(1)] } else { candidates };
            if candidates.iter().any(|alg| key.verify_signature(*alg, message, dss.signature()).is_ok()) {
                Ok(HandshakeSignatureValid::assertion())
            } else {
                Err(Error::InvalidCertificate(CertificateError::BadSignature))
            }
        }
    }

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.verify(message, cert, dss, false)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.verify(message, cert, dss, true)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// The reverse-DNS name RFC 8738 section 6 puts in SNI for an IP identifier.
pub(crate) fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

pub(super) async fn validate(
    va: &Validator,
    deadline: Deadline,
    ident: &Identifier,
    key_authorization: &str,
) -> Result<Validated, VaError> {
    let sni = match ident {
        Identifier::Dns(n) => n.clone(),
        Identifier::Ip(ip) => reverse_name(*ip),
    };
    let name = ServerName::try_from(sni.clone())
        .map_err(|e| VaError::Malformed(format!("{sni:?} is not a usable TLS server name: {e}")))?;
    let addrs = va.targets(deadline, ident, va.cfg.tls_port).await?;
    let tcp = va.dial(deadline, &addrs).await?;
    let addr = tcp
        .peer_addr()
        .map_err(|e| VaError::Connection(format!("connected socket has no peer address: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&va.alpn_tls));
    let tls = deadline
        .run(connector.connect(name, tcp))
        .await
        .map_err(|_| VaError::Connection(format!("TLS handshake with {addr} timed out")))?
        .map_err(|e| VaError::Tls(format!("TLS handshake with {addr} (SNI {sni}): {e}")))?;
    let (_, conn) = tls.get_ref();
    if conn.alpn_protocol() != Some(ACME_TLS_ALPN) {
        return Err(VaError::Tls(format!("{addr} did not negotiate the ALPN protocol acme-tls/1")));
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| VaError::Tls(format!("{addr} presented no certificate")))?;
    check_certificate(leaf.as_ref(), ident, key_authorization)
        .map_err(|why| VaError::IncorrectResponse(format!("the certificate from {addr} {why}")))?;
    Ok(Validated { address: Some(addr) })
}

/// Checks the challenge certificate (RFC 8737 section 3); `Err` completes "the certificate ...".
pub(crate) fn check_certificate(
    der: &[u8],
    ident: &Identifier,
    key_authorization: &str,
) -> Result<(), String> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("has trailing bytes after its DER".into());
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("has an unreadable subjectAltName: {e}"))?
        .ok_or("has no subjectAltName")?;
    let names = &san.value.general_names;
    let wanted = match ident {
        Identifier::Dns(n) => format!("dNSName {n}"),
        Identifier::Ip(ip) => format!("iPAddress {ip}"),
    };
    if names.len() != 1 {
        return Err(format!("has {} subjectAltNames, want exactly one: {wanted}", names.len()));
    }
    let matches = match (&names[0], ident) {
        (GeneralName::DNSName(d), Identifier::Dns(n)) => d.eq_ignore_ascii_case(n),
        (GeneralName::IPAddress(b), Identifier::Ip(IpAddr::V4(v4))) => *b == v4.octets(),
        (GeneralName::IPAddress(b), Identifier::Ip(IpAddr::V6(v6))) => *b == v6.octets(),
        _ => false,
    };
    if !matches {
        return Err(format!("does not name {wanted} as its subjectAltName"));
    }
    let mut found = cert.extensions().iter().filter(|e| e.oid.to_id_string() == ID_PE_ACME_IDENTIFIER);
    let ext = found.next().ok_or("has no acmeIdentifier extension (1.3.6.1.5.5.7.1.31)")?;
    if found.next().is_some() {
        return Err("has more than one acmeIdentifier extension".into());
    }
    if !ext.critical {
        return Err("has an acmeIdentifier extension that is not critical".into());
    }
    // extnValue holds the DER of Authorization ::= OCTET STRING (SIZE (32)): tag, length, digest
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut want = vec![0x04, 0x20];
    want.extend_from_slice(digest.as_ref());
    if ext.value != want.as_slice() {
        return Err("has an acmeIdentifier that is not the SHA-256 digest of the key authorization".into());
    }
    Ok(())
}

#[cfg(test)]
#[path = "tlsalpn01_tests.rs"]
mod tests;
