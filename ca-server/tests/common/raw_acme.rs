//! A hand-rolled ACME client for what instant-acme will not send: broken JWS, replayed
//! nonces, wrong URLs, JWS signed by a certificate's key, racing requests. HTTP/1.1 over
//! rustls, one request per connection, ES256 keys from ring.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The problem type's last part (`badNonce`).
    pub fn problem(&self) -> String {
        self.json()["type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("urn:ietf:params:acme:error:")
            .to_string()
    }
}

pub struct Raw {
    pub addr: String,
    tls: Arc<rustls::ClientConfig>,
}

/// An ES256 account (or certificate) key.
pub struct EcKey {
    pub pair: EcdsaKeyPair,
}

impl EcKey {
    pub fn generate() -> EcKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcKey::from_pkcs8(pkcs8.as_ref())
    }

    pub fn from_pkcs8(der: &[u8]) -> EcKey {
        EcKey {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .unwrap(),
        }
    }

    pub fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"crv": "P-256", "kty": "EC", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
    }

    /// A flattened JWS over `payload` (None: POST-as-GET) with `protected`.
    pub fn jws(&self, protected: &Value, payload: Option<&Value>) -> Vec<u8> {
        let p = b64(protected.to_string());
        let body = payload.map(|v| b64(v.to_string())).unwrap_or_default();
        let sig = self.sign(format!("{p}.{body}").as_bytes());
        json!({"protected": p, "payload": body, "signature": b64(sig)}).to_string().into_bytes()
    }
}

impl Raw {
    pub fn new(addr: &str, root_pem: &Path) -> Raw {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(root_pem).unwrap()).unwrap();
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        Raw { addr: addr.to_string(), tls: Arc::new(tls) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}/acme/{path}", self.addr)
    }

    /// A TLS connection to the ACME listener, for requests written by hand.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let ip: std::net::IpAddr = self.addr.rsplit_once(':').unwrap().0.parse().unwrap();
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await
            .unwrap()
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let ip: std::net::IpAddr = self.addr.rsplit_once(':').unwrap().0.parse().unwrap();
        let mut s = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await
            .unwrap();
        let mut req = format!(
            "{method} /acme/{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        // A server that refuses a huge body may answer and close before reading it all.
        let _ = s.write_all(body).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP response head");
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = out[split + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Response { status, head, body }
    }

    pub async fn nonce(&self) -> String {
        self.request("HEAD", "new-nonce", None, &[]).await.header("replay-nonce").expect("Replay-Nonce")
    }

    /// POST a JWS signed by `key` to `path` with `kid` (None: the jwk).
    pub async fn post(
        &self,
        key: &EcKey,
        kid: Option<&str>,
        path: &str,
        payload: Option<&Value>,
    ) -> Response {
        let nonce = self.nonce().await;
        let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": self.url(path)});
        match kid {
            Some(k) => protected["kid"] = json!(k),
            None => protected["jwk"] = key.jwk(),
        }
        self.post_raw(path, &key.jws(&protected, payload)).await
    }

    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, Some("application/jose+json"), body).await
    }

    /// newAccount: the account URL (kid).
    pub async fn new_account(&self, key: &EcKey) -> String {
        let r = self.post(key, None, "new-account", Some(&json!({"termsOfServiceAgreed": true}))).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.header("location").unwrap()
    }
}

/// The path part after `/acme/` of one of our URLs.
pub fn path_of(url: &str) -> String {
    url.split_once("/acme/").unwrap().1.to_string()
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}
