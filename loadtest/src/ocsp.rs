//! `ocsp`: RFC 6960 OCSP requests, encoded here (SHA-1 or SHA-256 CertID, no nonce, so a
//! responder may serve them from its pre-signed cache), sent over keep-alive HTTP/1.1 as
//! `POST {url}` (`application/ocsp-request`) or `GET {url}/{base64(DER)}`.

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;
use x509_parser::prelude::FromDer;

use crate::cli::{CertIdHash, GetEncoding, OcspMethod};
use crate::driver::{Failure, Scenario};

const OID_SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
pub const REQUEST_CONTENT_TYPE: &str = "application/ocsp-request";
pub const RESPONSE_CONTENT_TYPE: &str = "application/ocsp-response";

/// The parts of the issuing CA certificate a CertID hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// DER of the issuer certificate's subject Name.
    pub name_der: Vec<u8>,
    /// Contents of the subjectPublicKey BIT STRING (without the unused-bits octet).
    pub key_bits: Vec<u8>,
}

impl Issuer {
    /// From the issuing CA certificate, PEM or DER.
    pub fn from_cert(bytes: &[u8]) -> Result<Self, String> {
        let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            pem::parse(bytes).map_err(|e| format!("issuer PEM: {e}"))?.into_contents()
        } else {
            bytes.to_vec()
        };
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| format!("issuer certificate: {e}"))?;
        Ok(Issuer {
            name_der: cert.tbs_certificate.subject.as_raw().to_vec(),
            key_bits: cert.tbs_certificate.subject_pki.subject_public_key.data.to_vec(),
        })
    }
}

/// DER of an `OCSPRequest` with one `Request` for `serial` (big-endian magnitude) issued by `issuer`.
///
/// ```text
/// OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest }
/// TBSRequest  ::= SEQUENCE { requestList SEQUENCE OF Request }   -- version v1 is DEFAULT, omitted
/// Request     ::= SEQUENCE { reqCert CertID }
/// CertID      ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING,
///                            issuerKeyHash OCTET STRING, serialNumber INTEGER }
/// ```
pub fn encode_request(issuer: &Issuer, serial: &[u8], hash: CertIdHash) -> Vec<u8> {
    let (alg, oid) = match hash {
        CertIdHash::Sha1 => (&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, OID_SHA1),
        CertIdHash::Sha256 => (&ring::digest::SHA256, OID_SHA256),
    };
    let name_hash = ring::digest::digest(alg, &issuer.name_der);
    let key_hash = ring::digest::digest(alg, &issuer.key_bits);
    let oid = yasna::models::ObjectIdentifier::from_slice(oid);
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_sequence(|w| {
                                w.next().write_oid(&oid);
                                w.next().write_null();
                            });
                            w.next().write_bytes(name_hash.as_ref());
                            w.next().write_bytes(key_hash.as_ref());
                            w.next().write_bigint_bytes(serial, true);
                        });
                    });
                });
            });
        });
    })
}

/// A serial written as hex (optionally `0x`-prefixed, `:`-separated, any case).
pub fn parse_serial(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let mut h: String = t.chars().filter(|c| *c != ':').collect();
    if h.is_empty() {
        return Err(format!("empty serial {s:?}"));
    }
    if !h.len().is_multiple_of(2) {
        h.insert(0, '0');
    }
    hex::decode(&h).map_err(|e| format!("serial {s:?} is not hex: {e}"))
}

/// Serials from a file: one hex serial per line; blank lines and `#` comments are skipped.
pub fn parse_serials_file(text: &str) -> Result<Vec<Vec<u8>>, String> {
    text.lines()
        .enumerate()
        .map(|(n, l)| (n, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(n, l)| parse_serial(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// The path of a GET request: `{base}/{encoded request}`.
pub fn get_path(base_path: &str, der: &[u8], enc: GetEncoding) -> String {
    let b64 = match enc {
        GetEncoding::UrlSafe => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der),
        GetEncoding::Raw => base64::engine::general_purpose::STANDARD.encode(der),
        GetEncoding::Percent => {
            let std = base64::engine::general_purpose::STANDARD.encode(der);
            let mut out = String::with_capacity(std.len() + 16);
            for c in std.chars() {
                match c {
                    '+' => out.push_str("%2B"),
                    '/' => out.push_str("%2F"),
                    '=' => out.push_str("%3D"),
                    c => out.push(c),
                }
            }
            out
        }
    };
    format!("{}/{b64}", base_path.trim_end_matches('/'))
}

/// OCSPResponseStatus names (RFC 6960 4.2.1).
pub fn response_status_name(v: u8) -> &'static str {
    match v {
        0 => "successful",
        1 => "malformedRequest",
        2 => "internalError",
        3 => "tryLater",
        5 => "sigRequired",
        6 => "unauthorized",
        _ => "unknownStatus",
    }
}

/// The `responseStatus` ENUMERATED at the start of an `OCSPResponse` DER, if it is one.
pub fn response_status(der: &[u8]) -> Option<u8> {
    if *der.first()? != 0x30 {
        return None;
    }
    let len0 = *der.get(1)?;
    let at = if len0 & 0x80 == 0 { 2 } else { 2 + usize::from(len0 & 0x7f) };
    match der.get(at..at + 3)? {
        [0x0a, 0x01, v] => Some(*v),
        _ => None,
    }
}

/// Judge one HTTP response: 200, `application/ocsp-response`, responseStatus successful.
pub fn check_response(
    status: StatusCode,
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<(), Failure> {
    if status != StatusCode::OK {
        let kind = format!("http {}", status.as_u16());
        if body.is_empty() {
            return Err(Failure::new(kind));
        }
        let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(Failure::with_detail(kind, detail));
    }
    let ct = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with(RESPONSE_CONTENT_TYPE) {
        return Err(Failure::with_detail("ocsp wrong content-type", format!("content-type {ct:?}")));
    }
    match response_status(body) {
        Some(0) => Ok(()),
        Some(v) => Err(Failure::new(format!("ocsp {}", response_status_name(v)))),
        None => Err(Failure::with_detail("ocsp unparsable response", format!("{} bytes", body.len()))),
    }
}

/// Where to send: the resolved socket address, the Host header and the POST path.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: HeaderValue,
    pub path: String,
}

impl Target {
    pub async fn resolve(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            other => {
                return Err(format!("URL {url:?}: only http:// is supported (scheme {other:?})"));
            }
        }
        let auth = uri.authority().ok_or_else(|| format!("URL {url:?} has no host"))?;
        let port = auth.port_u16().unwrap_or(80);
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let host = HeaderValue::from_str(auth.as_str()).map_err(|e| format!("host header: {e}"))?;
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Ok(Target { addr, host, path })
    }
}

type Conn = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Conn, Failure> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::with_detail("transport connect", e))?;
    tcp.set_nodelay(true).map_err(|e| Failure::with_detail("transport connect", e))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| Failure::with_detail("transport handshake", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The OCSP load scenario: pre-encoded requests, K keep-alive HTTP/1.1 connections.
pub struct Ocsp {
    target: Target,
    method: OcspMethod,
    post_uri: Uri,
    ders: Vec<Bytes>,
    get_uris: Vec<Uri>,
    conns: Vec<Mutex<Option<Conn>>>,
}

impl Ocsp {
    pub fn new(
        target: Target,
        method: OcspMethod,
        enc: GetEncoding,
        ders: Vec<Vec<u8>>,
        connections: usize,
    ) -> Result<Self, String> {
        if ders.is_empty() {
            return Err("no OCSP requests to send".into());
        }
        let get_uris = ders
            .iter()
            .map(|d| get_path(&target.path, d, enc).parse::<Uri>().map_err(|e| format!("GET path: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Ocsp {
            post_uri: target.path.parse().map_err(|e| format!("POST path: {e}"))?,
            target,
            method,
            ders: ders.into_iter().map(Bytes::from).collect(),
            get_uris,
            conns: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Open every connection before the clock starts (a refused connection is reported here).
    pub async fn warm_connections(&self) -> Result<(), String> {
        for c in &self.conns {
            let conn = connect(self.target.addr)
                .await
                .map_err(|f| format!("{}: {}", f.kind, f.detail.unwrap_or_default()))?;
            *c.lock().await = Some(conn);
        }
        Ok(())
    }

    #[allow(
        clippy::expect_used,
        reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
    )]
    fn request(&self, i: u64) -> (Method, Request<Full<Bytes>>) {
        let idx = (i % self.ders.len() as u64) as usize;
        let get = match self.method {
            OcspMethod::Get => true,
            OcspMethod::Post => false,
            OcspMethod::Mixed => i.is_multiple_of(2),
        };
        let builder = Request::builder().header(HOST, self.target.host.clone());
        let req = if get {
            builder.method(Method::GET).uri(self.get_uris[idx].clone()).body(Full::new(Bytes::new()))
        } else {
            builder
                .method(Method::POST)
                .uri(self.post_uri.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static(REQUEST_CONTENT_TYPE))
                .body(Full::new(self.ders[idx].clone()))
        };
        let req = req.expect("request parts are pre-validated");
        (req.method().clone(), req)
    }
}

fn with_method(method: &Method, mut f: Failure) -> Failure {
    f.kind = format!("{method} {}", f.kind).into();
    f
}

impl Scenario for Ocsp {
    #[allow(
        clippy::expect_used,
        reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
    )]
    async fn one(&self, slot: usize, i: u64) -> Result<(), Failure> {
        let (method, req) = self.request(i);
        let mut guard = self.conns[slot % self.conns.len()].lock().await;
        let reusable = guard.as_ref().is_some_and(|c| !c.is_closed());
        if !reusable {
            *guard = Some(connect(self.target.addr).await?);
        }
        let sender = guard.as_mut().expect("connection set above");
        if let Err(e) = sender.ready().await {
            *guard = None;
            return Err(Failure::with_detail("transport closed", e));
        }
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                *guard = None;
                return Err(with_method(&method, Failure::with_detail("transport send", e)));
            }
        };
        let (parts, body) = resp.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                *guard = None;
                return Err(with_method(&method, Failure::with_detail("transport body", e)));
            }
        };
        drop(guard);
        check_response(parts.status, parts.headers.get(CONTENT_TYPE), &body)
            .map_err(|f| with_method(&method, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ca() -> (Vec<u8>, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Loadtest Issuing CA");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "ca-loadtest");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), cert.pem())
    }

    fn openssl(args: &[&str]) -> String {
        let out = Command::new("openssl").args(args).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn request_der_is_read_by_openssl_and_matches_its_own_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let (der, pem) = ca();
        let issuer = Issuer::from_cert(&der).unwrap();
        assert_eq!(Issuer::from_cert(pem.as_bytes()).unwrap(), issuer);
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, &pem).unwrap();
        let ca_pem = ca_pem.to_str().unwrap();

        // a 128-bit serial with the high bit set (needs a 0x00 pad) and a short one
        for (serial_hex, hash, flag, name) in [
            ("8f1e2d3c4b5a69788796a5b4c3d2e1f0", CertIdHash::Sha1, "-sha1", "sha1"),
            ("0123abcd", CertIdHash::Sha1, "-sha1", "sha1"),
            ("5a69788796a5b4c3d2e1f08f1e2d3c4b", CertIdHash::Sha256, "-sha256", "sha256"),
        ] {
            let ours = encode_request(&issuer, &parse_serial(serial_hex).unwrap(), hash);
            let ours_path = dir.path().join(format!("{serial_hex}.der"));
            std::fs::write(&ours_path, &ours).unwrap();
            let text = openssl(&["ocsp", "-reqin", ours_path.to_str().unwrap(), "-req_text"]);
            assert!(text.contains(&format!("Hash Algorithm: {name}")), "{text}");
            // openssl prints the INTEGER's magnitude octets in uppercase hex
            let want_serial = serial_hex.to_uppercase();
            assert!(text.contains(&format!("Serial Number: {want_serial}")), "{text}");
            assert!(!text.contains("Request Extensions"), "no nonce expected: {text}");

            // openssl's own request for the same CertID, without a nonce, is byte-identical
            let theirs_path = dir.path().join(format!("{serial_hex}.openssl.der"));
            openssl(&[
                "ocsp",
                "-issuer",
                ca_pem,
                flag,
                "-serial",
                &format!("0x{serial_hex}"),
                "-no_nonce",
                "-reqout",
                theirs_path.to_str().unwrap(),
            ]);
            assert_eq!(
                hex::encode(&ours),
                hex::encode(std::fs::read(&theirs_path).unwrap()),
                "{serial_hex} {name}"
            );
        }
    }

    #[test]
    fn serials_parse() {
        assert_eq!(parse_serial("0x0a:0B").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(parse_serial("abc").unwrap(), vec![0x0a, 0xbc]);
        assert!(parse_serial("xyz").is_err());
        assert!(parse_serial("").is_err());
        let list = parse_serials_file("# serials\n01ff\n\n  0x02 # second\n").unwrap();
        assert_eq!(list, vec![vec![0x01, 0xff], vec![0x02]]);
        assert!(parse_serials_file("01\nzz\n").unwrap_err().starts_with("line 2:"));
    }

    #[test]
    fn get_paths() {
        let der = [0xfb, 0xff, 0xbf, 0x00];
        // standard base64 "+/+/AA==" -> percent-encoded
        assert_eq!(get_path("/ocsp", &der, GetEncoding::Percent), "/ocsp/%2B%2F%2B%2FAA%3D%3D");
        assert_eq!(get_path("/ocsp/", &der, GetEncoding::Raw), "/ocsp/+/+/AA==");
        assert_eq!(get_path("/ocsp", &der, GetEncoding::UrlSafe), "/ocsp/-_-_AA");
        for enc in [GetEncoding::Percent, GetEncoding::Raw, GetEncoding::UrlSafe] {
            assert!(get_path("/ocsp", &der, enc).parse::<Uri>().is_ok());
        }
    }

    #[test]
    fn responses_are_judged_by_status_type_and_ocsp_status() {
        let ct = HeaderValue::from_static(RESPONSE_CONTENT_TYPE);
        // OCSPResponse { responseStatus successful, responseBytes ... } (truncated body is fine)
        let ok = [0x30, 0x82, 0x01, 0x00, 0x0a, 0x01, 0x00, 0xa0];
        assert_eq!(check_response(StatusCode::OK, Some(&ct), &ok), Ok(()));
        // the whole response for malformedRequest is 30 03 0a 01 01
        let malformed = [0x30, 0x03, 0x0a, 0x01, 0x01];
        assert_eq!(
            check_response(StatusCode::OK, Some(&ct), &malformed).unwrap_err().kind,
            "ocsp malformedRequest"
        );
        assert_eq!(response_status(&[0x30, 0x03, 0x0a, 0x01, 0x03]), Some(3));
        assert_eq!(check_response(StatusCode::NOT_FOUND, None, b"no route").unwrap_err().kind, "http 404");
        let html = HeaderValue::from_static("text/html");
        assert_eq!(
            check_response(StatusCode::OK, Some(&html), &ok).unwrap_err().kind,
            "ocsp wrong content-type"
        );
        assert_eq!(
            check_response(StatusCode::OK, Some(&ct), b"hello").unwrap_err().kind,
            "ocsp unparsable response"
        );
        assert_eq!(response_status(&[]), None);
        assert_eq!(response_status(&[0x30, 0x84]), None);
    }
}
