//! Certificates an instance that does not write (PostgreSQL backend, a follower) needs for
//! itself: its listener certificates and its delegated OCSP signers. Every certificate
//! must be in the log and only the writer appends, so the follower asks the writer for it
//! over gRPC, as the admin (the data dir's `admin.pem`), at the URL the writer recorded in
//! the lease row (`[storage] grpc_url`). The key stays here; the writer signs and logs
//! the CSR like any other.

use std::time::{Duration, Instant};

use ca_proto::v1::ca_admin_client::CaAdminClient;
use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{IssueOcspSignerRequest, SignCsrRequest};
use ca_storage::Role;

use crate::app::App;
use crate::cli::ConnArgs;
use crate::error::AppError;

/// How long to wait for a writer (a takeover in progress) before giving up.
pub(crate) const WAIT_FOR_WRITER: Duration = Duration::from_secs(15);

/// Where the CSR should be signed.
pub enum Signer {
    /// This instance writes (or the store is embedded): sign and log here.
    Here,
    /// Another instance writes, at this gRPC URL.
    Writer(String),
}

/// Who signs now, waiting out a takeover (no writer, or one whose URL is not known yet).
pub async fn signer(app: &App) -> Result<Signer, AppError> {
    let deadline = Instant::now() + WAIT_FOR_WRITER;
    loop {
        match app.store.role() {
            Role::Single | Role::Writer { .. } => return Ok(Signer::Here),
            Role::Follower { writer } => {
                if let Some(url) = app.store.writer_url() {
                    return Ok(Signer::Writer(url));
                }
                if Instant::now() >= deadline {
                    return Err(AppError::Store(ca_storage::StoreError::NotWriter {
                        writer,
                        why: format!(
                            "no writer with a known gRPC URL within {} s to issue this instance's listener certificate",
                            WAIT_FOR_WRITER.as_secs()
                        ),
                    }));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The host of `url` (`https://HOST:PORT`), which the writer's listener certificate names.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_string(),
    }
}

/// A channel to the writer at `url`, as the admin; errors say `what` was being asked for.
async fn writer_channel(
    app: &App,
    url: &str,
    what: &'static str,
) -> Result<(tonic::transport::Channel, impl Fn(String) -> AppError), AppError> {
    let conn = ConnArgs {
        addr: url.to_string(),
        data_dir: app.data_dir.clone(),
        cert: None,
        key: None,
        ca: None,
        server_name: host_of(url),
    };
    let url = url.to_string();
    let unavailable = move |why: String| {
        AppError::Store(ca_storage::StoreError::Unavailable(format!(
            "asking the writer at {url} for {what}: {why}"
        )))
    };
    let channel = crate::client::channel(&conn).await.map_err(|e| unavailable(e.to_string()))?;
    Ok((channel, unavailable))
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Have the writer at `url` sign `csr` with the `server` profile: `(leaf, issuing CA)`.
pub async fn sign_at_writer(app: &App, url: &str, csr: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), AppError> {
    let (channel, unavailable) = writer_channel(app, url, "this instance's listener certificate").await?;
    let r = CertificateAuthorityClient::new(channel)
        .sign_csr(SignCsrRequest { csr, profile: "server".into(), validity_seconds: 0 })
        .await
        .map_err(|s| unavailable(status_text(&s)))?
        .into_inner();
    let issuer =
        r.chain_der.into_iter().next().ok_or_else(|| unavailable("no chain in the answer".into()))?;
    Ok((r.certificate_der, issuer))
}

/// Have the writer at `url` issue a delegated OCSP signer of issuer `generation` for the
/// key of `csr`: the certificate DER.
pub async fn ocsp_signer_at_writer(
    app: &App,
    url: &str,
    csr: Vec<u8>,
    generation: u32,
) -> Result<Vec<u8>, AppError> {
    let (channel, unavailable) = writer_channel(app, url, "a delegated OCSP signer").await?;
    let r = CaAdminClient::new(channel)
        .issue_ocsp_signer(IssueOcspSignerRequest { csr, issuer_generation: generation })
        .await
        .map_err(|s| unavailable(status_text(&s)))?
        .into_inner();
    Ok(r.certificate_der)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_is_what_the_writer_certificate_names() {
        assert_eq!(host_of("https://127.0.0.1:50051"), "127.0.0.1");
        assert_eq!(host_of("https://ca-1.internal:50051/"), "ca-1.internal");
        assert_eq!(host_of("https://[::1]:50051"), "::1");
        assert_eq!(host_of("https://ca-2.internal"), "ca-2.internal");
    }
}
