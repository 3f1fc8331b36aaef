//! `grpc-sign`: `ca.v1.CertificateAuthority/SignCsr` over K HTTP/2 connections, round-robin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{GetCaCertificatesRequest, SignCsrRequest};
use tonic::transport::{Channel, Endpoint};

use crate::driver::{Failure, Scenario};
use crate::h2c::{self, H2Channel};
use crate::tls::ClientTls;

/// Canonical gRPC code names (as in the gRPC spec and `grpc-status` docs).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failed RPC, counted under `grpc <CODE>` with the status message as sample.
pub fn status_failure(s: &tonic::Status) -> Failure {
    let kind = format!("grpc {}", code_name(s.code()));
    Failure::with_detail(kind, format!("{}: {}", code_name(s.code()), s.message()))
}

/// `k` independent plaintext HTTP/2 connections to `addr`, each connected eagerly.
pub async fn connect(addr: &str, k: usize, concurrency: usize) -> Result<Vec<Channel>, String> {
    connect_with(addr, k, concurrency, None).await
}

/// [`connect`], over TLS for an `https://` address with `tls`.
pub async fn connect_with(
    addr: &str,
    k: usize,
    concurrency: usize,
    tls: Option<&ClientTls>,
) -> Result<Vec<Channel>, String> {
    let mut endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("invalid gRPC address {addr:?}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // the channel's request queue must hold every in-flight request
        .buffer_size(concurrency.max(1024));
    if let Some(t) = tls {
        endpoint = endpoint.tls_config(t.tonic()).map_err(|e| format!("TLS settings: {e}"))?;
    }
    let mut channels = Vec::with_capacity(k);
    for _ in 0..k.max(1) {
        channels.push(endpoint.connect().await.map_err(|e| format!("cannot connect to {addr}: {e:?}"))?);
    }
    Ok(channels)
}

const SIGN_CSR_PATH: &str = "/ca.v1.CertificateAuthority/SignCsr";

fn sign_request(csr: &Bytes, profile: &str, validity_seconds: u64) -> SignCsrRequest {
    SignCsrRequest { csr: csr.to_vec(), profile: profile.to_string(), validity_seconds }
}

/// How requests reach the server.
enum Transport {
    /// The generated tonic client (`--client tonic`).
    Tonic(Vec<CertificateAuthorityClient<Channel>>),
    /// The lean h2 client (`--client h2`), with every request encoded before the clock starts.
    H2 { channels: Vec<H2Channel>, uri: http::Uri, bodies: Vec<Bytes> },
}

pub struct GrpcSign {
    transport: Transport,
    csrs: Vec<Bytes>,
    profile: String,
    validity_seconds: u64,
}

impl GrpcSign {
    /// Over tonic `Channel`s.
    pub fn new(channels: Vec<Channel>, csrs: Vec<Bytes>, profile: String, validity_seconds: u64) -> Self {
        assert!(!channels.is_empty() && !csrs.is_empty());
        let clients = channels.into_iter().map(client).collect();
        GrpcSign { transport: Transport::Tonic(clients), csrs, profile, validity_seconds }
    }

    /// Over lean h2 connections ([`crate::h2c`]).
    pub fn h2(
        channels: Vec<H2Channel>,
        csrs: Vec<Bytes>,
        profile: String,
        validity_seconds: u64,
    ) -> Result<Self, String> {
        assert!(!channels.is_empty() && !csrs.is_empty());
        let uri = channels[0].method_uri(SIGN_CSR_PATH)?;
        let bodies =
            csrs.iter().map(|csr| h2c::frame(&sign_request(csr, &profile, validity_seconds))).collect();
        Ok(GrpcSign { transport: Transport::H2 { channels, uri, bodies }, csrs, profile, validity_seconds })
    }

    fn request(&self, i: u64) -> SignCsrRequest {
        sign_request(&self.csrs[(i % self.csrs.len() as u64) as usize], &self.profile, self.validity_seconds)
    }

    /// Request `i` on connection `i % K`; the issued serial on success.
    pub async fn sign(&self, i: u64) -> Result<ca_proto::v1::SignCsrResponse, Failure> {
        let resp = match &self.transport {
            Transport::Tonic(clients) => {
                let mut client = clients[(i % clients.len() as u64) as usize].clone();
                client.sign_csr(self.request(i)).await.map_err(|s| status_failure(&s))?.into_inner()
            }
            Transport::H2 { channels, uri, bodies } => {
                let ch = &channels[(i % channels.len() as u64) as usize];
                let body = bodies[(i % bodies.len() as u64) as usize].clone();
                let msg = ch.unary(uri, body).await?;
                <ca_proto::v1::SignCsrResponse as prost::Message>::decode(msg)
                    .map_err(|e| Failure::with_detail("bad-response", format!("SignCsrResponse: {e}")))?
            }
        };
        if resp.certificate_der.is_empty() || resp.serial.is_empty() {
            return Err(Failure::with_detail(
                "bad-response",
                "SignCsrResponse without certificate or serial",
            ));
        }
        Ok(resp)
    }
}

fn client(ch: Channel) -> CertificateAuthorityClient<Channel> {
    CertificateAuthorityClient::new(ch).max_decoding_message_size(16 << 20)
}

impl Scenario for GrpcSign {
    async fn one(&self, _slot: usize, i: u64) -> Result<(), Failure> {
        self.sign(i).await.map(|_| ())
    }
}

/// The issuing (intermediate) CA certificate, DER, from `GetCaCertificates`.
pub async fn issuing_ca(channel: Channel) -> Result<Vec<u8>, String> {
    let resp = client(channel)
        .get_ca_certificates(GetCaCertificatesRequest {})
        .await
        .map_err(|s| format!("GetCaCertificates: {}: {}", code_name(s.code()), s.message()))?
        .into_inner();
    if resp.intermediate_der.is_empty() {
        return Err("GetCaCertificates returned no intermediate certificate".into());
    }
    Ok(resp.intermediate_der)
}

/// Issue one certificate per CSR (with `concurrency` requests in flight); their serials in order.
/// Used to get real serials for the OCSP scenario. Fails on the first error.
#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub async fn issue_all(
    sign: Arc<GrpcSign>,
    concurrency: usize,
    progress: bool,
) -> Result<Vec<String>, String> {
    let n = sign.csrs.len();
    let bar = if progress {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(n as u64),
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30.green/blue} {pos}/{len} certificates",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        b.set_prefix("issue");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (sign, next, failed, bar) =
            (Arc::clone(&sign), Arc::clone(&next), Arc::clone(&failed), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match sign.sign(i as u64).await {
                    Ok(resp) => got.push((i, resp.serial)),
                    Err(f) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(format!("SignCsr #{i}: {} {}", f.kind, f.detail.unwrap_or_default()));
                    }
                }
                bar.inc(1);
            }
            Ok(got)
        }));
    }
    let mut serials = vec![String::new(); n];
    let mut first_err = None;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(got) => got.into_iter().for_each(|(i, s)| serials[i] = s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    bar.finish_and_clear();
    match first_err {
        Some(e) => Err(e),
        None => Ok(serials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kinds_use_canonical_code_names() {
        let f = status_failure(&tonic::Status::resource_exhausted("signing queue full"));
        assert_eq!(f.kind, "grpc RESOURCE_EXHAUSTED");
        assert_eq!(f.detail.as_deref(), Some("RESOURCE_EXHAUSTED: signing queue full"));
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(status_failure(&tonic::Status::unavailable("x")).kind, "grpc UNAVAILABLE");
    }
}
