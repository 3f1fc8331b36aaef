//! http-01 (RFC 8555 8.3): `GET http://<identifier>/.well-known/acme-challenge/<token>` must
//! return the key authorization.
//!
//! Redirects are followed by hand (at most [`MAX_REDIRECTS`]) so that each hop's host is
//! resolved and checked like the first, and only to http/https on the validation ports. The
//! fetched body is never quoted back: an ACME client must not be able to use the CA to read
//! pages off hosts it can reach.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Deadline, Identifier, VaError, Validated, Validator, normalize};

/// Redirects followed before giving up (Boulder's limit too).
pub(crate) const MAX_REDIRECTS: usize = 10;
/// Longest body read; a key authorization is ~87 bytes, the rest is slack for whitespace.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// One request target: where to dial and what to ask for.
#[derive(Debug, Clone)]
struct Target {
    https: bool,
    host: Identifier,
    port: u16,
    /// The Host header: the identifier, or a redirect's authority as written.
    authority: String,
    /// Origin-form path and query.
    path: String,
}

impl Target {
    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

fn host_header(ident: &Identifier) -> String {
    match ident {
        Identifier::Dns(n) => n.clone(),
        Identifier::Ip(IpAddr::V4(v4)) => v4.to_string(),
        Identifier::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
    }
}

pub(super) async fn validate(
    va: &Validator,
    deadline: Deadline,
    ident: &Identifier,
    token: &str,
    key_authorization: &str,
) -> Result<Validated, VaError> {
    let mut target = Target {
        https: false,
        host: ident.clone(),
        port: va.cfg.http_port,
        authority: host_header(ident),
        path: format!("/.well-known/acme-challenge/{token}"),
    };
    let mut redirects = 0;
    loop {
        let addrs = va.targets(deadline, &target.host, target.port).await?;
        // `_driver` keeps the connection running until the body is read or dropped.
        let (addr, resp, _driver) = fetch(va, deadline, &addrs, &target).await?;
        let status = resp.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            if redirects == MAX_REDIRECTS {
                return Err(VaError::Connection(format!(
                    "too many redirects: more than {MAX_REDIRECTS} (last from {})",
                    target.url()
                )));
            }
            let location =
                resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                    VaError::Connection(format!(
                        "{} answered {status} without a usable Location header",
                        target.url()
                    ))
                })?;
            target = redirect(va, &target, location)?;
            redirects += 1;
            continue;
        }
        if status != StatusCode::OK {
            return Err(VaError::IncorrectResponse(format!(
                "{} (dialled {addr}) answered {status}, want 200 with the key authorization",
                target.url()
            )));
        }
        let body = read_body(deadline, resp, addr).await?;
        // RFC 8555 8.3: trailing whitespace after the key authorization is allowed
        if body.trim_ascii_end() == key_authorization.as_bytes() {
            return Ok(Validated { address: Some(addr) });
        }
        return Err(VaError::IncorrectResponse(format!(
            "{} (dialled {addr}) did not return the key authorization {key_authorization:?}: \
             received {} bytes that differ",
            target.url(),
            body.len()
        )));
    }
}

/// The next target after `from` answered with `location`, or why it may not be followed.
fn redirect(va: &Validator, from: &Target, location: &str) -> Result<Target, VaError> {
    let bad =
        |why: &str| Err(VaError::Connection(format!("{} redirected to {location:?}: {why}", from.url())));
    let location = location.split('#').next().unwrap_or_default();
    if location.starts_with('/') && !location.starts_with("//") {
        return match location.parse::<http::uri::PathAndQuery>() {
            Ok(_) => Ok(Target { path: location.to_string(), ..from.clone() }),
            Err(_) => bad("not a valid path"),
        };
    }
    let Ok(uri) = location.parse::<Uri>() else {
        return bad("not a valid URL");
    };
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => return bad("only http and https redirects are followed"),
        None => return bad("only absolute URLs and absolute paths are followed"),
    };
    let Some(authority) = uri.authority() else {
        return bad("no host");
    };
    if authority.as_str().contains('@') {
        return bad("credentials in a redirect are refused");
    }
    let (default, configured) = if https { (443, va.cfg.tls_port) } else { (80, va.cfg.http_port) };
    let port = match uri.port_u16() {
        None => configured,
        Some(p) if p == default || p == configured => p,
        Some(p) => {
            return bad(&format!("port {p} is not {default} or {configured}"));
        }
    };
    let host = authority.host();
    let host =
        match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse::<IpAddr>() {
            Ok(ip) => normalize(&Identifier::Ip(ip))?,
            Err(_) => match normalize(&Identifier::Dns(host.to_string())) {
                Ok(h) => h,
                Err(e) => return bad(&e.to_string()),
            },
        };
    let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/");
    Ok(Target { https, host, port, authority: authority.as_str().to_string(), path: path.to_string() })
}

/// Dials the first reachable address and sends one request; https accepts any certificate.
async fn fetch(
    va: &Validator,
    deadline: Deadline,
    addrs: &[SocketAddr],
    target: &Target,
) -> Result<(SocketAddr, hyper::Response<Incoming>, AbortOnDrop), VaError> {
    let tcp = va.dial(deadline, addrs).await?;
    let addr = tcp
        .peer_addr()
        .map_err(|e| VaError::Connection(format!("connected socket has no peer address: {e}")))?;
    let (resp, driver) = if target.https {
        let name = match &target.host {
            Identifier::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Identifier::Dns(n) => ServerName::try_from(n.clone())
                .map_err(|e| VaError::Connection(format!("{n:?} as a TLS server name: {e}")))?,
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&va.https_tls));
        let tls = deadline
            .run(connector.connect(name, tcp))
            .await
            .map_err(|_| VaError::Connection(format!("TLS handshake with {addr} timed out")))?
            .map_err(|e| VaError::Tls(format!("TLS handshake with {addr}: {e}")))?;
        exchange(deadline, tls, target, addr).await?
    } else {
        exchange(deadline, tcp, target, addr).await?
    };
    Ok((addr, resp, driver))
}

/// Aborts the spawned connection driver when the exchange is over, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<S>(
    deadline: Deadline,
    io: S,
    target: &Target,
    addr: SocketAddr,
) -> Result<(hyper::Response<Incoming>, AbortOnDrop), VaError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn_err = |e: &dyn std::fmt::Display| VaError::Connection(format!("{}: {e}", target.url()));
    let req = Request::get(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::USER_AGENT, "ca-server-va")
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| conn_err(&e))?;
    let (mut sender, conn) = deadline
        .run(hyper::client::conn::http1::handshake(TokioIo::new(io)))
        .await
        .map_err(|_| conn_err(&format!("timed out talking to {addr}")))?
        .map_err(|e| conn_err(&e))?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = deadline
        .run(sender.send_request(req))
        .await
        .map_err(|_| conn_err(&format!("timed out waiting for the response headers from {addr}")))?
        .map_err(|e| conn_err(&format!("{e} (dialled {addr})")))?;
    Ok((resp, driver))
}

async fn read_body(
    deadline: Deadline,
    resp: hyper::Response<Incoming>,
    addr: SocketAddr,
) -> Result<Bytes, VaError> {
    let collected = deadline
        .run(Limited::new(resp.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| VaError::Connection(format!("timed out reading the body from {addr}")))?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(VaError::IncorrectResponse(format!("the body from {addr} is longer than {MAX_BODY} bytes")))
        }
        Err(e) => Err(VaError::Connection(format!("reading the body from {addr}: {e}"))),
    }
}

#[cfg(test)]
#[path = "http01_tests.rs"]
mod tests;
