//! The ACME listener: HTTPS with a certificate the CA issues to itself (logged like any
//! other, renewed at two thirds of its lifetime without a restart), or a certificate and
//! key from the config. HTTP/1.1 and HTTP/2 by ALPN.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::error::AppError;
use crate::tls::{HANDSHAKE_TIMEOUT, SwappableCert, certified, default_names, self_issued_resolver};

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, AppError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| AppError::Config(format!("[acme] tls_cert {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| AppError::Config(format!("[acme] tls_key {}: {e}", key.display())))?;
    certified(chain, key, "ACME")
}

/// The server's TLS config and, for a self-issued certificate, the renewal task.
pub async fn tls_config(
    app: &Arc<App>,
    cfg: &crate::acme::AcmeConfig,
    bound: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<rustls::ServerConfig>, AppError> {
    let resolver: Arc<SwappableCert> = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Arc::new(SwappableCert::new(load_pair(c, k)?)),
        (None, None) => {
            let names = if cfg.tls_names.is_empty() { default_names(bound) } else { cfg.tls_names.clone() };
            self_issued_resolver(app, names, "ca-server:acme-tls", "acme", shutdown).await?
        }
        _ => return Err(AppError::Config("[acme] tls_cert and tls_key go together".into())),
    };
    let mut sc = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// Accept TLS connections and serve `router` until shutdown, within `gate`'s limits
/// (connection cap, header read timeout: `http_conn.rs`).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    gate: crate::http_conn::ConnGate,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AppError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "ACME accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        // Over the cap: closed at once, before the TLS handshake.
        let Some(slot) = gate.admit() else { continue };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, gate) = (acceptor.clone(), router.clone(), gate.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                return;
            };
            gate.serve(stream, peer, router, slot).await;
        });
    }
}
