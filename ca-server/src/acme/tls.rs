//! The ACME listener: HTTPS with a certificate the CA issues to itself (logged like any
//! other, renewed at two thirds of its lifetime without a restart), or a certificate and
//! key from the config. HTTP/1.1 and HTTP/2 by ALPN.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, now_unix};
use crate::error::AppError;

/// TLS handshakes must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's current certificate; swapped on renewal.
#[derive(Debug)]
pub struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

impl SwappableCert {
    fn set(&self, k: CertifiedKey) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(k);
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, AppError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| AppError::Config(format!("ACME TLS key: {e}")))
}

/// Issue the listener a certificate through the shared issuance path (so it is in the
/// log), returning it and when it should be renewed.
async fn self_issue(app: &Arc<App>, names: &[String]) -> Result<(CertifiedKey, i64), AppError> {
    let (key, csr) = ca_core::csr::self_request(names)?;
    let issued = app
        .issue_with(
            move |authority| {
                let checked = ca_core::csr::check(&csr, authority.policy())?;
                // The `server` profile when configured, else the default one.
                let (profile, p) =
                    authority.profiles().get("server").or_else(|_| authority.profiles().get(""))?;
                Ok(authority.sign_checked(
                    &checked,
                    profile,
                    p.default_validity_secs,
                    "ca-server:acme-tls",
                    now_unix(),
                )?)
            },
            |issued| (vec![], (issued.certificate_der.clone(), issued.not_before, issued.not_after)),
        )
        .await?;
    let (der, nb, na) = issued;
    let chain = vec![CertificateDer::from(der), CertificateDer::from(app.authority.ca().cert_der.clone())];
    let ck = certified(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))?;
    Ok((ck, nb + (na - nb) * 2 / 3))
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, AppError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| AppError::Config(format!("[acme] tls_cert {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| AppError::Config(format!("[acme] tls_key {}: {e}", key.display())))?;
    certified(chain, key)
}

/// The TLS names by default: the listener's IP and `localhost`.
pub fn default_names(addr: SocketAddr) -> Vec<String> {
    let mut v = vec!["localhost".to_string()];
    if !addr.ip().is_unspecified() {
        v.insert(0, addr.ip().to_string());
    }
    v
}

/// The server's TLS config and, for a self-issued certificate, the renewal task.
pub async fn tls_config(
    app: &Arc<App>,
    cfg: &crate::acme::AcmeConfig,
    bound: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Arc<rustls::ServerConfig>, AppError> {
    let resolver = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Arc::new(SwappableCert(RwLock::new(Arc::new(load_pair(c, k)?)))),
        (None, None) => {
            let names = if cfg.tls_names.is_empty() { default_names(bound) } else { cfg.tls_names.clone() };
            let (ck, renew_at) = self_issue(app, &names).await?;
            let r = Arc::new(SwappableCert(RwLock::new(Arc::new(ck))));
            let (app, r2) = (Arc::clone(app), Arc::clone(&r));
            tokio::spawn(async move {
                let mut renew_at = renew_at;
                loop {
                    let wait = Duration::from_secs(u64::try_from(renew_at - now_unix()).unwrap_or(0).max(1));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                    match self_issue(&app, &names).await {
                        Ok((ck, next)) => {
                            r2.set(ck);
                            renew_at = next;
                            tracing::info!("ACME listener certificate renewed");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "ACME listener certificate renewal failed; retrying in 60 s");
                            renew_at = now_unix() + 60;
                        }
                    }
                }
            });
            r
        }
        _ => return Err(AppError::Config("[acme] tls_cert and tls_key go together".into())),
    };
    let mut sc =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AppError::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// Accept TLS connections and serve `router` until shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AppError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _peer) = tokio::select! {
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
        let _ = tcp.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                return;
            };
            let svc = TowerToHyperService::new(router);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
