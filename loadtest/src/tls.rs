//! Client TLS for the gRPC scenarios: an `https://` address with the server's root and a
//! client certificate (ca-server requires one by default), for both the lean h2 client
//! and tonic. rustls on the ring provider, as everywhere in the tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;

/// `--tls-*` options of `grpc-sign` and `handshake`.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct TlsArgs {
    /// With an https:// address: take --tls-ca, --tls-cert and --tls-key from a ca-server
    /// data dir (root.pem, admin.pem, admin.key); explicit ones win.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM root(s) the server's certificate must chain to.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM), leaf first.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, PKCS#8 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the server's certificate against [default: the address's host].
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Let new connections resume an earlier TLS session (abbreviated handshake). Off by
    /// default, so every connection of `handshake` pays a full one.
    #[arg(long)]
    pub tls_resume: bool,
}

/// A ready client TLS setup for one server.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The same material as PEM, for tonic's `ClientTlsConfig`.
    pub ca_pem: Vec<u8>,
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key bytes in debug output.
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn read(what: &str, p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

impl TlsArgs {
    /// None for an `http://` address (plaintext); for `https://` the loaded settings.
    pub fn client(&self, addr: &str) -> Result<Option<ClientTls>, String> {
        let uri: http::Uri = addr.parse().map_err(|e| format!("invalid gRPC address {addr:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => return Ok(None),
            Some("https") => {}
            _ => return Err(format!("gRPC address {addr:?}: use http:// (plaintext) or https:// (TLS)")),
        }
        let from_dir = |f: &str| self.data_dir.as_ref().map(|d| d.join(f));
        let ca = self.tls_ca.clone().or_else(|| from_dir("root.pem")).ok_or_else(|| {
            format!("{addr} is https://: give --tls-ca (and --tls-cert/--tls-key) or --data-dir")
        })?;
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => (Some(c.clone()), Some(k.clone())),
            _ => (from_dir("admin.pem"), from_dir("admin.key")),
        };
        let ca_pem = read("--tls-ca", &ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca_pem) {
            let c = c.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_root_certificates(roots);
        let (mut config, identity_pem) = match (cert, key) {
            (Some(cert), Some(key)) => {
                let (cert_pem, key_pem) = (read("--tls-cert", &cert)?, read("--tls-key", &key)?);
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
                // The error names the file only: never anything of the key.
                let pk = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|_| format!("--tls-key {}: no usable PEM private key", key.display()))?;
                let c = builder
                    .with_client_auth_cert(chain, pk)
                    .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
                (c, Some((cert_pem, key_pem)))
            }
            _ => (builder.with_no_client_auth(), None),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        if !self.tls_resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let host = match &self.tls_server_name {
            Some(n) => n.clone(),
            None => uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string(),
        };
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| format!("TLS server name {host:?}: {e}"))?;
        Ok(Some(ClientTls { config: Arc::new(config), server_name, ca_pem, identity_pem }))
    }
}

impl ClientTls {
    /// tonic's equivalent (tonic builds its own rustls config; resumption is its default).
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let name = match &self.server_name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            other => other.to_str().into_owned(),
        };
        let mut c = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .domain_name(name);
        if let Some((cert, key)) = &self.identity_pem {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        c
    }
}
