//! The `ca.v1.CertificateAuthority` gRPC service. Handlers decode the wire message, call
//! the core or the store, and map errors through `AppError` once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ca_core::Serial;
use ca_proto::convert;
use ca_proto::v1::certificate_authority_server::CertificateAuthority;
use ca_proto::v1::*;
use ca_storage::StatusFilter;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::app::{App, now_unix};
use crate::authz::{Caller, Grant};
use crate::error::AppError;

pub struct CaService {
    pub app: Arc<App>,
}

/// Largest `page_size` honoured by ListCertificates.
const MAX_PAGE: u32 = 1000;

/// Who made a request, as recorded in the log: `grpc:<identity>` from the client
/// certificate (its URI SAN, else its first DNS SAN, else its CN), or `grpc:<peer ip>` on a
/// plaintext (`--insecure-grpc`) listener.
pub fn requester<T>(req: &Request<T>) -> String {
    caller(req).requester
}

/// The caller's identity (from its client certificate) and requester, for authorization.
/// `issued_here` stays false: only [`grant`] looks the certificate up.
pub fn caller<T>(req: &Request<T>) -> Caller {
    if let Some(id) = req.peer_certs().and_then(|chain| chain.first().and_then(|leaf| cert_identity(leaf))) {
        return Caller { requester: format!("grpc:{id}"), identity: Some(id), issued_here: false };
    }
    let requester =
        req.remote_addr().map_or_else(|| "grpc:unknown".to_string(), |a| format!("grpc:{}", a.ip()));
    Caller { identity: None, requester, issued_here: false }
}

/// The rule that applies to the caller of `req`. A certificate naming the admin identity
/// is looked up in the store (one read, admin calls only): it must be this CA's own.
pub fn grant<T>(app: &App, req: &Request<T>) -> (Grant, String) {
    let mut c = caller(req);
    if c.identity.as_deref() == Some(crate::credential::ADMIN_IDENTITY) {
        let leaf = req.peer_certs().and_then(|chain| chain.first().cloned());
        c.issued_here =
            leaf.is_some_and(|l| matches!(crate::tls_revocation::recorded(&app.store, &l), Ok(Some(_))));
    }
    (app.authz.grant(&c), c.requester)
}

/// A certificate's identity: its URI SAN, else its first DNS SAN, else its CN.
fn cert_identity(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let uri = names.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        });
        let dns = || {
            names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
        };
        if let Some(id) = uri.or_else(dns) {
            return Some(id);
        }
    }
    cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string)
}

/// Log every call with its method, outcome and duration: failures at INFO, successes at
/// DEBUG (at thousands of issuances per second a line per success costs a few percent of
/// the server's CPU; `ca_certificates_issued_total`, `ca_sign_duration_seconds` and the
/// `ca_sign_*_total` counters count and time them instead).
fn finish<T>(method: &'static str, started: Instant, r: Result<T, AppError>) -> Result<Response<T>, Status> {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match r {
        Ok(v) => {
            tracing::debug!(method, outcome = "ok", duration_ms = ms, "grpc");
            Ok(Response::new(v))
        }
        Err(e) => {
            let st = Status::from(e);
            tracing::info!(method, outcome = ?st.code(), duration_ms = ms, message = st.message(), "grpc");
            Err(st)
        }
    }
}

impl CaService {
    /// The hot path: the shared issuance path with the gRPC answer built on the signing
    /// thread and released by the log writer once the certificate's event is durable.
    /// The caller's rule is checked on the signing thread, after the server policy and
    /// before anything is signed.
    async fn sign(
        &self,
        grant: Grant,
        requester: String,
        req: SignCsrRequest,
    ) -> Result<SignCsrResponse, AppError> {
        let now = now_unix();
        let authz = Arc::clone(&self.app.authz);
        self.app
            .issue_with(
                move |authority| {
                    let (profile_name, profile) = authority.profiles().get(&req.profile)?;
                    let validity =
                        profile.validity(req.validity_seconds, authority.policy().max_validity_secs())?;
                    let csr = ca_core::csr::check(&req.csr, authority.policy())?;
                    authority.policy().check_names(&csr.names)?;
                    let validity =
                        authz.check_sign(&grant, profile_name, &csr.names, req.validity_seconds, validity)?;
                    Ok(authority.sign_checked(&csr, profile_name, validity, &requester, now)?)
                },
                {
                    let app = Arc::clone(&self.app);
                    move |issued| {
                        // The issuer that signed it: a rotation may have switched since.
                        let ca = app.issuer_of(issued.issuer_generation);
                        let mut pem = ca_core::ca::der_to_pem(&issued.certificate_der);
                        pem.push_str(&ca.chain_pem);
                        let response = SignCsrResponse {
                            serial: issued.serial.to_hex(),
                            certificate_der: issued.certificate_der.clone(),
                            chain_der: ca.chain_der(),
                            certificate_pem: pem,
                        };
                        (vec![], response)
                    }
                },
            )
            .await
    }

    async fn revoke(
        &self,
        grant: Grant,
        requester: String,
        req: RevokeRequest,
    ) -> Result<RevokeResponse, AppError> {
        let serial = Serial::from_hex(&req.serial)?;
        let reason = convert::reason_from_proto(req.reason)?;
        let invalidity_date = (req.invalidity_date_unix != 0).then_some(req.invalidity_date_unix);
        let revoked_at_unix = self
            .app
            .revoke(
                crate::revoke::RevokeRequest {
                    serial: &serial,
                    reason,
                    invalidity_date,
                    requester: &requester,
                },
                |rec| self.app.authz.check_revoke(&grant, rec),
            )
            .await?;
        Ok(RevokeResponse { revoked_at_unix })
    }

    /// The caller's rule allows reads.
    fn read<T>(&self, method: &'static str, req: &Request<T>) -> Result<(), AppError> {
        let (g, _) = grant(&self.app, req);
        self.app.authz.check_read(method, &g)
    }

    fn get(&self, req: GetCertificateRequest) -> Result<GetCertificateResponse, AppError> {
        let serial = Serial::from_hex(&req.serial)?;
        let rec = self
            .app
            .store
            .cert(&serial)?
            .ok_or_else(|| AppError::NotFound(format!("no certificate with serial {serial}")))?;
        Ok(GetCertificateResponse {
            certificate: Some(convert::certificate_info(&rec.issued, rec.revoked.as_ref(), now_unix())),
            chain_der: self.app.issuer_of(rec.issued.issuer_generation).chain_der(),
        })
    }

    fn list(&self, req: ListCertificatesRequest) -> Result<ListCertificatesResponse, AppError> {
        let size = match req.page_size {
            0 => 100,
            n => n.min(MAX_PAGE),
        } as usize;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(
                Serial::from_hex(&req.page_token)
                    .map_err(|_| AppError::InvalidArgument("bad page_token".into()))?,
            )
        };
        let filter = match CertificateStatus::try_from(req.status) {
            Ok(CertificateStatus::Unspecified) => StatusFilter::Any,
            Ok(CertificateStatus::Valid) => StatusFilter::Valid,
            Ok(CertificateStatus::Revoked) => StatusFilter::Revoked,
            Ok(CertificateStatus::Expired) => StatusFilter::Expired,
            Err(_) => return Err(AppError::InvalidArgument(format!("unknown status filter {}", req.status))),
        };
        let now = now_unix();
        let (recs, next) = self.app.store.list_certs(after.as_ref(), size, filter, now)?;
        Ok(ListCertificatesResponse {
            certificates: recs
                .iter()
                .map(|r| convert::certificate_info(&r.issued, r.revoked.as_ref(), now))
                .collect(),
            next_page_token: next.map(|s| s.to_hex()).unwrap_or_default(),
        })
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<LogRecord, Status>> + Send>>;

#[tonic::async_trait]
impl CertificateAuthority for CaService {
    async fn sign_csr(&self, request: Request<SignCsrRequest>) -> Result<Response<SignCsrResponse>, Status> {
        let t = Instant::now();
        let (grant, who) = grant(&self.app, &request);
        let r = match self.app.issuance_limits.take(&grant) {
            Ok(()) => self.sign(grant, who, request.into_inner()).await,
            Err(e) => Err(e),
        };
        finish("SignCsr", t, r)
    }

    async fn revoke(&self, request: Request<RevokeRequest>) -> Result<Response<RevokeResponse>, Status> {
        let t = Instant::now();
        let (grant, who) = grant(&self.app, &request);
        finish("Revoke", t, CaService::revoke(self, grant, who, request.into_inner()).await)
    }

    async fn get_certificate(
        &self,
        request: Request<GetCertificateRequest>,
    ) -> Result<Response<GetCertificateResponse>, Status> {
        let t = Instant::now();
        let r = self.read("GetCertificate", &request).and_then(|()| self.get(request.into_inner()));
        finish("GetCertificate", t, r)
    }

    async fn list_certificates(
        &self,
        request: Request<ListCertificatesRequest>,
    ) -> Result<Response<ListCertificatesResponse>, Status> {
        let t = Instant::now();
        let r = self.read("ListCertificates", &request).and_then(|()| self.list(request.into_inner()));
        finish("ListCertificates", t, r)
    }

    type WatchEventsStream = RecordStream;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        if let Err(e) = self.read("WatchEvents", &request) {
            return finish("WatchEvents", Instant::now(), Err(e));
        }
        let from = request.into_inner().from_seq;
        tracing::info!(method = "WatchEvents", from, "grpc stream opened");
        let stream = self.app.store.watch(from).map(|r| match r {
            Ok(rec) => convert::log_record(
                rec.seq,
                &rec.prev_hash,
                &rec.hash,
                rec.recorded_at_micros,
                &rec.event_bytes,
            )
            .map_err(|e| Status::from(AppError::from(e))),
            Err(e) => Err(Status::from(AppError::from(e))),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_ca_certificates(
        &self,
        _request: Request<GetCaCertificatesRequest>,
    ) -> Result<Response<GetCaCertificatesResponse>, Status> {
        let ca = self.app.authority.ca();
        let issuers = self
            .app
            .authority
            .issuers()
            .iter()
            .map(|i| convert::issuer_info(i, i.generation == ca.generation))
            .collect();
        finish(
            "GetCaCertificates",
            Instant::now(),
            Ok(GetCaCertificatesResponse {
                root_der: ca.root_der.clone(),
                intermediate_der: ca.cert_der.clone(),
                chain_pem: ca.chain_pem.clone(),
                generation: ca.generation,
                issuers,
            }),
        )
    }
}
