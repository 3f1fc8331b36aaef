//! TLS pieces the HTTPS listeners share (ACME, gRPC): a certificate the CA issues to
//! itself through the one issuance path (so it is in the log like any other) and renews at
//! two thirds of its lifetime without a restart, behind a swappable resolver.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::app::{App, now_unix};
use crate::error::AppError;

/// TLS handshakes must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider (the only one built in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's current certificate; swapped on renewal.
#[derive(Debug)]
pub struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

impl SwappableCert {
    pub fn new(k: CertifiedKey) -> Self {
        SwappableCert(RwLock::new(Arc::new(k)))
    }

    fn set(&self, k: CertifiedKey) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(k);
    }
}

/// A chain and its key as rustls wants them; `what` names the listener in errors.
pub fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<CertifiedKey, AppError> {
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| AppError::Config(format!("{what} TLS key: {e}")))
}

/// Issue a listener certificate for `names` through the shared issuance path (so it is in
/// the log), recorded with `requester`; returns it and when it should be renewed. An
/// instance that does not write has the writer issue it (`forward.rs`).
async fn self_issue(
    app: &Arc<App>,
    names: &[String],
    requester: &'static str,
) -> Result<(CertifiedKey, i64), AppError> {
    let (key, csr) = ca_core::csr::self_request(names)?;
    // The writer the lease row names may be gone (killed, its lease not yet run out): ask
    // again, whoever writes then, until a takeover had time to happen.
    let deadline = std::time::Instant::now() + crate::forward::WAIT_FOR_WRITER;
    let at_writer = loop {
        let url = match crate::forward::signer(app).await? {
            crate::forward::Signer::Here => break None,
            crate::forward::Signer::Writer(url) => url,
        };
        match crate::forward::sign_at_writer(app, &url, csr.clone()).await {
            Ok(r) => break Some((url, r)),
            Err(AppError::Store(e)) if e.is_unavailable() && std::time::Instant::now() < deadline => {
                tracing::warn!(writer = %url, error = %e, "the writer did not issue the listener certificate; asking again");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if let Some((url, (der, issuer))) = at_writer {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| AppError::Internal(format!("the writer's listener certificate: {e}")))?;
        let (nb, na) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        tracing::info!(listener = requester, writer = %url, "listener certificate issued by the writer");
        let chain = vec![CertificateDer::from(der), CertificateDer::from(issuer)];
        let ck = certified(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)), requester)?;
        return Ok((ck, nb + (na - nb) * 2 / 3));
    }
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
                    requester,
                    now_unix(),
                )?)
            },
            |issued| {
                let ans = (issued.certificate_der.clone(), issued.not_before, issued.not_after);
                (vec![], (ans, issued.issuer_generation))
            },
        )
        .await?;
    let ((der, nb, na), generation) = issued;
    let issuer = app.issuer_of(generation);
    let chain = vec![CertificateDer::from(der), CertificateDer::from(issuer.cert_der.clone())];
    let ck = certified(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)), requester)?;
    Ok((ck, nb + (na - nb) * 2 / 3))
}

/// The TLS names by default: the listener's IP and `localhost`.
pub fn default_names(addr: SocketAddr) -> Vec<String> {
    let mut v = vec!["localhost".to_string()];
    if !addr.ip().is_unspecified() {
        v.insert(0, addr.ip().to_string());
    }
    v
}

/// A resolver holding a self-issued certificate for `names`, and the task that renews it
/// at two thirds of its lifetime until shutdown. `label` names the listener in logs.
pub async fn self_issued_resolver(
    app: &Arc<App>,
    names: Vec<String>,
    requester: &'static str,
    label: &'static str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Arc<SwappableCert>, AppError> {
    let (ck, renew_at) = self_issue(app, &names, requester).await?;
    let r = Arc::new(SwappableCert::new(ck));
    let (app, r2) = (Arc::clone(app), Arc::clone(&r));
    tokio::spawn(async move {
        let mut renew_at = renew_at;
        loop {
            let wait = Duration::from_secs(u64::try_from(renew_at - now_unix()).unwrap_or(0).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            match self_issue(&app, &names, requester).await {
                Ok((ck, next)) => {
                    r2.set(ck);
                    renew_at = next;
                    tracing::info!(listener = label, "listener certificate renewed");
                }
                Err(e) => {
                    tracing::warn!(listener = label, error = %e, "listener certificate renewal failed; retrying in 60 s");
                    renew_at = now_unix() + 60;
                }
            }
        }
    });
    Ok(r)
}

/// The gRPC listener's TLS config: a self-issued certificate (renewed in the background)
/// and client certificates required, verified against this CA and refused once this CA
/// revoked them. ALPN h2 only.
pub async fn grpc_server_config(
    app: &Arc<App>,
    cfg: &crate::config::GrpcConfig,
    bound: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<rustls::ServerConfig>, AppError> {
    let names = if cfg.tls_names.is_empty() { default_names(bound) } else { cfg.tls_names.clone() };
    let resolver = self_issued_resolver(app, names, "ca-server:grpc-tls", "grpc", shutdown).await?;
    // Trust anchors: this CA's root and the `[grpc] client_ca_file` bundle. The issuing
    // CAs are not anchors: the verifier hands every generation to the chain check as an
    // intermediate at each handshake, so a client that sends only its leaf (`openssl
    // s_client -cert` sends the file's first certificate) is verified, including one whose
    // issuer a `ca rotate` added after the start.
    let root = app.authority.ca().root_der.clone();
    let mut anchors = vec![CertificateDer::from(root)];
    if let Some(path) = &cfg.client_ca_file {
        anchors.extend(client_ca_bundle(path)?);
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in anchors {
        roots.add(der).map_err(|e| AppError::Config(format!("gRPC TLS trust anchor: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| AppError::Config(format!("gRPC TLS client verifier: {e}")))?;
    let verifier = Arc::new(crate::tls_revocation::RevocationAwareVerifier::new(
        verifier,
        app.store.clone(),
        Arc::clone(&app.authority),
    ));
    let mut sc = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::Config(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    sc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(sc))
}

/// The certificates of a PEM bundle, refused (naming the file) when it holds none.
fn client_ca_bundle(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, AppError> {
    let what = |e: String| AppError::Config(format!("[grpc] client_ca_file {}: {e}", path.display()));
    let text = std::fs::read(path).map_err(|e| what(e.to_string()))?;
    let certs: Vec<_> = pem::parse_many(&text)
        .map_err(|e| what(e.to_string()))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(what("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

/// A gRPC connection: TLS over the write-coalescing adapter over TCP (see [`accept_tls`]).
/// It holds its `[grpc] max_connections` slot until closed.
pub type GrpcTlsStream = crate::grpc_conn::Slotted<
    tokio_rustls::server::TlsStream<ca_proto::io::CoalescingIo<tokio::net::TcpStream>>,
>;

/// Accepted, handshaken gRPC connections for tonic's `serve_with_incoming_shutdown`
/// (tonic's `Connected` impl for `TlsStream` puts the peer address and the client's
/// certificate chain into every request's extensions).
///
/// Layering: TLS wraps `CoalescingIo`, which wraps the TCP stream (TCP_NODELAY on). h2
/// writes plaintext frames into rustls; rustls turns them into records and writes those
/// into the coalescing buffer, so the records of one scheduler round still leave in one
/// `write` system call. The other way round, rustls would write each record to the socket
/// as h2 flushed, which is what the adapter exists to avoid.
///
/// Each handshake runs in its own task with [`HANDSHAKE_TIMEOUT`]; a failed or slow one
/// is logged at DEBUG and dropped, and never stops the accept loop.
pub fn accept_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    gate: crate::grpc_conn::GrpcGate,
    mut shutdown: watch::Receiver<bool>,
) -> impl futures::Stream<Item = Result<GrpcTlsStream, std::io::Error>> + Send + 'static {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut tcp = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        loop {
            let next = tokio::select! {
                c = tcp.next() => c,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let stream = match next {
                None => return,
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over the cap: closed at once, before the handshake.
            let Some(slot) = gate.admit() else { continue };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let peer = stream.peer_addr().ok();
                let io = ca_proto::io::CoalescingIo::new(stream);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io).into_fallible()).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(crate::grpc_conn::Slotted::new(s, slot))).await;
                    }
                    Ok(Err((e, mut io))) => {
                        tracing::debug!(?peer, error = %e, "gRPC TLS handshake failed");
                        // rustls wrote its alert (e.g. "certificate required") into the
                        // coalescing buffer: send it before closing, so the client learns why.
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    }
                    Err(_) => tracing::debug!(?peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
