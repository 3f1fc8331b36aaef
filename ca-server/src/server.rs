//! `serve`: bind the listeners, start gRPC and HTTP, run until SIGTERM/ctrl-c, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use ca_proto::v1::certificate_authority_server::CertificateAuthorityServer;
use futures::StreamExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{self, App};
use crate::config::Config;
use crate::error::AppError;
use crate::grpc::CaService;

/// Largest gRPC message accepted; CSRs themselves are capped lower (64 KiB) with a clear error.
const MAX_GRPC_MESSAGE: usize = 1 << 20;

/// HTTP/2 limits of the gRPC listener. tonic leaves concurrent streams unlimited (hyper's
/// own default is 200); one connection could otherwise open streams without bound.
const GRPC_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Largest header block (metadata) accepted per request; larger ones are refused.
const GRPC_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams a client may reset before the server reads them (the HTTP/2 rapid-reset
/// attack, CVE-2023-44487): over it the connection gets GOAWAY.
const GRPC_MAX_PENDING_RESETS: usize = 20;

/// How long SIGTERM waits for in-flight requests before exiting.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A started server.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The ACME listener, when `[acme] enabled`.
    pub acme_addr: Option<SocketAddr>,
    pub acme: Option<Arc<crate::acme::Acme>>,
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), AppError>>>,
}

impl Running {
    /// Stop accepting, let in-flight requests finish, flush the log.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let _ = self.shutdown.send(true);
        // Open WatchEvents streams would hold the drain forever: give in-flight requests a
        // bounded time, then stop regardless. Every acknowledged event is already durable.
        let drain = futures::future::join_all(self.tasks);
        match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
            Ok(results) => {
                for r in results {
                    r.map_err(|e| AppError::Io(e.to_string()))??;
                }
            }
            Err(_) => tracing::warn!(secs = DRAIN_TIMEOUT.as_secs(), "drain timed out; closing open streams"),
        }
        crate::denials::flush(&self.app).await;
        self.app.store.flush()?;
        Ok(())
    }
}

/// Open the data dir (creating a dev CA on first start), bind and serve.
pub async fn start(config: Config) -> Result<Running, AppError> {
    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| AppError::Config(format!("cannot bind gRPC on {}: {e}", config.grpc_addr)))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| AppError::Config(format!("cannot bind HTTP on {}: {e}", config.http_addr)))?;
    let acme_listener = if config.acme.enabled {
        Some(
            TcpListener::bind(config.acme.addr)
                .await
                .map_err(|e| AppError::Config(format!("cannot bind ACME on {}: {e}", config.acme.addr)))?,
        )
    } else {
        None
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let public_url = config.public_url(http_addr);

    let dir = config.data_dir.clone();
    // The bound address, so the default instance name (PostgreSQL's lease holder, named in
    // other instances' UNAVAILABLE answers) says where this instance listens.
    let cfg = Config { grpc_addr, ..config.clone() };
    let (store, issuers, created) = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let opts = ca_storage::StoreOptions::default()
            .fsync_each_batch(cfg.storage.fsync_each_batch)
            .cache_bytes(cfg.storage.cache_mb.map(|mb| mb << 20))
            .min_free_bytes(
                cfg.storage
                    .min_free_mb
                    .map_or(ca_storage::DEFAULT_MIN_FREE_BYTES, |mb| mb.saturating_mul(1 << 20)),
            );
        let store = app::open_store_for(&cfg, opts)?;
        let (issuers, created) = app::ensure_ca(&store, &dir, &cfg, None, None)?;
        Ok((store, issuers, created))
    })
    .await
    .map_err(|e| AppError::Io(e.to_string()))??;
    if created {
        tracing::info!(root = %config.data_dir.join("root.pem").display(), "created a new CA");
    }
    let app = Arc::new(App::new(&config, store, issuers, public_url.clone())?);
    match crate::credential::ensure(&app).await {
        Ok(true) => tracing::info!(
            cert = %config.data_dir.join("admin.pem").display(),
            identity = crate::credential::ADMIN_IDENTITY,
            "issued the admin client credential"
        ),
        Ok(false) => {}
        // Plaintext gRPC does not need it; TLS without it would lock every client out.
        Err(e) if config.grpc.insecure => tracing::warn!(error = %e, "no admin client credential"),
        Err(e) => return Err(e),
    }

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    app.revocation.start(app.pool.clone(), rx.clone()).await?;
    crate::issuer_life::start(app.clone(), rx.clone());
    let window = std::time::Duration::from_secs(config.authz.denial_summary_secs.max(1));
    crate::denials::start(app.clone(), window, rx.clone());
    crate::issuer_follow::start(app.clone(), rx.clone());
    crate::ocsp_follow::start(app.clone(), rx.clone());

    let (acme_addr, acme) = match acme_listener {
        Some(l) => {
            let (addr, acme) = start_acme(&app, &config, l, &rx, &mut tasks, [grpc_addr, http_addr]).await?;
            (Some(addr), Some(acme))
        }
        None => (None, None),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CertificateAuthorityServer<CaService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ca_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| AppError::Config(format!("reflection: {e}")))?;
    let svc = CertificateAuthorityServer::new(CaService { app: app.clone() })
        .max_decoding_message_size(MAX_GRPC_MESSAGE);
    let admin = ca_proto::v1::acme_admin_server::AcmeAdminServer::new(crate::acme::admin::AcmeAdminService {
        acme: acme.clone(),
        app: app.clone(),
    });
    let grpc_tls = if config.grpc.insecure {
        tracing::warn!(
            %grpc_addr,
            "gRPC is plaintext and unauthenticated (--insecure-grpc): every caller is treated as the admin and [[authz.rules]] do not apply; anyone who can reach it can issue, revoke and manage EAB keys"
        );
        None
    } else {
        Some(crate::tls::grpc_server_config(&app, &config.grpc, grpc_addr, rx.clone()).await?)
    };
    let ca_admin = ca_proto::v1::ca_admin_server::CaAdminServer::new(crate::ca_admin::CaAdminService {
        app: app.clone(),
    });
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(GRPC_MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(GRPC_MAX_HEADER_LIST)
        .http2_max_pending_accept_reset_streams(Some(GRPC_MAX_PENDING_RESETS))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(svc)
        .add_service(admin)
        .add_service(ca_admin);
    let mut grpc_rx = rx.clone();
    let accept_rx = rx.clone();
    let grpc_gate = crate::grpc_conn::GrpcGate::new(config.grpc.max_connections);
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = grpc_rx.wait_for(|s| *s).await;
        };
        let served = match grpc_tls {
            // TCP_NODELAY: without it Nagle adds tens of milliseconds to small unary replies.
            // CoalescingIo: one write per scheduler round instead of about two per response.
            None => {
                let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener)
                    .with_nodelay(Some(true))
                    .filter_map(move |conn| {
                        let gate = grpc_gate.clone();
                        async move {
                            match conn {
                                Ok(c) => gate.admit().map(|slot| {
                                    Ok(crate::grpc_conn::Slotted::new(
                                        ca_proto::io::CoalescingIo::new(c),
                                        slot,
                                    ))
                                }),
                                Err(e) => Some(Err(e)),
                            }
                        }
                    });
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            Some(tls) => {
                let incoming = crate::tls::accept_tls(grpc_listener, tls, grpc_gate, accept_rx);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        served.map_err(|e| AppError::Io(format!("gRPC server: {e}")))
    }));

    let mut http_rx = rx.clone();
    let gate = crate::http_conn::ConnGate::new(&config.http, app.metrics.http_connections_refused.clone());
    let router = gate.wrap(crate::http::router(app.clone()));
    tasks.push(tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = http_listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { let _ = http_rx.wait_for(|s| *s).await; } => return Ok(()),
            };
            // Over the cap: closed at once (dropped), before any byte is read.
            let Some(slot) = gate.admit() else { continue };
            let _ = tcp.set_nodelay(true);
            let (gate, router) = (gate.clone(), router.clone());
            tokio::spawn(async move { gate.serve(tcp, peer, router, slot).await });
        }
    }));

    let grpc_security = if config.grpc.insecure { "plaintext" } else { "mtls" };
    tracing::info!(%grpc_addr, grpc_security, %http_addr, ?acme_addr, %public_url, "ca-server listening");
    Ok(Running { grpc_addr, http_addr, acme_addr, acme, app, shutdown, tasks })
}

/// The ACME frontend: its TLS certificate, validation authority and HTTPS listener.
async fn start_acme(
    app: &Arc<App>,
    config: &Config,
    listener: TcpListener,
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<Result<(), AppError>>>,
    other_listeners: [SocketAddr; 2],
) -> Result<(SocketAddr, Arc<crate::acme::Acme>), AppError> {
    let addr = listener.local_addr()?;
    let cfg = &config.acme;
    let base = cfg.base_url(addr);
    let mut own_addrs = vec![addr];
    own_addrs.extend(other_listeners);
    let va = crate::acme::va::Validator::new(crate::acme::va::VaConfig {
        http_port: cfg.http_port,
        tls_port: cfg.tls_port,
        dns_resolver: cfg.dns_resolver,
        allow_loopback: cfg.allow_loopback,
        allowed_cidrs: cfg.allowed_cidrs.clone(),
        denied_cidrs: cfg.denied_cidrs.clone(),
        own_addrs,
        timeout: std::time::Duration::from_secs(cfg.validation_timeout_secs.max(1)),
    })
    .map_err(|e| AppError::Config(format!("[acme] validation: {e}")))?;
    let acme = crate::acme::Acme::new(app.clone(), cfg.clone(), base.clone(), va)?;
    let tls = crate::acme::tls::tls_config(app, cfg, addr, rx.clone()).await?;
    let gate = crate::http_conn::ConnGate::new(&config.http, app.metrics.http_connections_refused.clone());
    let router = gate.wrap(crate::acme::router(acme.clone()));
    tasks.push(tokio::spawn(crate::acme::tls::serve(listener, tls, router, gate, rx.clone())));
    tracing::info!(%addr, directory = %format!("{base}/acme/directory"), "ACME listening");
    if cfg.allow_loopback {
        tracing::warn!(
            "ACME validation may dial loopback addresses (--acme-allow-loopback): for tests and local use only"
        );
    }
    Ok((addr, acme))
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
