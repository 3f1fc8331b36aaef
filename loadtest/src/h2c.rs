//! A lean gRPC unary client straight on the `h2` crate, for `grpc-sign --client h2` and
//! `handshake`; plaintext (`http://`) or TLS (`https://`, [`crate::tls`]).
//!
//! Why: the load generator shares the machine with the server it measures, so every
//! microsecond it spends per request is taken from the server. tonic's `Channel` routes
//! each call through a `tower::Buffer` task and hyper's dispatcher before h2 sees it; here
//! the request task talks to h2 itself, the request bytes are encoded once per CSR before
//! the clock starts, and nothing but the response message is decoded. Status handling
//! follows the gRPC HTTP/2 protocol: `grpc-status` in the trailers, or in the headers of a
//! trailers-only response; a missing status is an error, never a success.

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, Uri};

use crate::driver::Failure;
use crate::grpc::code_name;
use crate::tls::ClientTls;

/// Per-stream and per-connection receive windows: big enough that a few hundred responses
/// in flight never stall on WINDOW_UPDATE round trips.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// Refuse responses bigger than this (a certificate and its chain are a few KB).
const MAX_RESPONSE: usize = 16 << 20;

/// One HTTP/2 connection; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct H2Channel {
    send: SendRequest<Bytes>,
    base: String,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel").field("base", &self.base).finish_non_exhaustive()
    }
}

impl H2Channel {
    /// Connect to `addr` (`http://host:port`), prior-knowledge HTTP/2 over TCP, and drive the
    /// connection on a spawned task.
    pub async fn connect(addr: &str) -> Result<Self, String> {
        Self::connect_with(addr, None).await
    }

    /// [`H2Channel::connect`], or over TLS (ALPN h2) for an `https://` address with `tls`.
    /// TLS wraps the write-coalescing adapter over TCP, as on the server: the records of
    /// one scheduler round leave in one write.
    pub async fn connect_with(addr: &str, tls: Option<&ClientTls>) -> Result<Self, String> {
        let uri: Uri = addr.parse().map_err(|e| format!("invalid gRPC address {addr:?}: {e}"))?;
        let (scheme, default_port) = match (uri.scheme_str(), tls) {
            (Some("http"), None) => ("http", 80),
            (Some("https"), Some(_)) => ("https", 443),
            (Some("https"), None) => {
                return Err(format!(
                    "{addr:?} is https://: TLS settings are needed (--tls-ca or --data-dir)"
                ));
            }
            _ => {
                return Err(format!(
                    "--client h2 speaks plaintext HTTP/2 to http:// or HTTP/2 over TLS to https://, not {addr:?}"
                ));
            }
        };
        let authority = uri.authority().ok_or_else(|| format!("no host:port in {addr:?}"))?.clone();
        let host_port = if authority.port_u16().is_some() {
            authority.to_string()
        } else {
            format!("{}:{default_port}", authority.host())
        };
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(&host_port),
        )
        .await
        .map_err(|_| format!("cannot connect to {addr}: timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let io = ca_proto::io::CoalescingIo::new(tcp);
        let send = match tls {
            None => handshake(io, addr).await?,
            Some(t) => {
                let stream = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    tokio_rustls::TlsConnector::from(t.config.clone()).connect(t.server_name.clone(), io),
                )
                .await
                .map_err(|_| format!("TLS handshake with {addr}: timed out"))?
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                handshake(stream, addr).await?
            }
        };
        Ok(H2Channel { send, base: format!("{scheme}://{authority}") })
    }

    /// The URI for a full method name such as `/ca.v1.CertificateAuthority/SignCsr`.
    pub fn method_uri(&self, path: &str) -> Result<Uri, String> {
        format!("{}{path}", self.base).parse().map_err(|e| format!("bad method path {path:?}: {e}"))
    }

    /// One unary call: `body` must already carry gRPC's 5-byte message prefix ([`frame`]).
    /// Returns the response message (without its prefix).
    pub async fn unary(&self, uri: &Uri, body: Bytes) -> Result<Bytes, Failure> {
        let mut send = self.send.clone().ready().await.map_err(transport)?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| Failure::with_detail("request", e))?;
        let (response, mut stream) = send.send_request(req, false).map_err(transport)?;
        stream.send_data(body, true).map_err(transport)?;
        let (parts, mut recv) = response.await.map_err(transport)?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Failure::with_detail(
                format!("http {}", parts.status.as_u16()),
                format!("HTTP status {} for a gRPC call", parts.status),
            ));
        }
        // Trailers-only response: the status is in the headers and there is no body.
        if parts.headers.contains_key("grpc-status") {
            check_status(&parts.headers)?;
            return Err(Failure::with_detail("bad-response", "grpc-status OK without a message"));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if buf.len() + chunk.len() > MAX_RESPONSE {
                return Err(Failure::with_detail("bad-response", "response larger than 16 MiB"));
            }
            buf.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(transport)?.ok_or_else(|| {
            Failure::with_detail("bad-response", "response ended without trailers (no grpc-status)")
        })?;
        check_status(&trailers)?;
        unframe(buf.freeze())
    }
}

/// The HTTP/2 preface over `io`; the connection is driven on a spawned task.
async fn handshake<T>(io: T, addr: &str) -> Result<SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        // The connection ends when every sender is dropped or the peer goes away; a
        // request in flight then fails with the reason, so nothing to report here.
        let _ = conn.await;
    });
    Ok(send)
}

/// gRPC length-prefixed message: flag 0 (not compressed), u32 big-endian length, bytes.
#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub fn frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&u32::try_from(len).expect("request under 4 GiB").to_be_bytes());
    msg.encode(&mut b).expect("buffer has the encoded length");
    b.freeze()
}

/// The single message of a unary response body.
fn unframe(mut body: Bytes) -> Result<Bytes, Failure> {
    if body.len() < 5 {
        return Err(Failure::with_detail("bad-response", format!("{}-byte response body", body.len())));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(Failure::with_detail("bad-response", "compressed message (none was offered)"));
    }
    if len != body.len() {
        return Err(Failure::with_detail(
            "bad-response",
            format!("message prefix says {len} bytes, body holds {}", body.len()),
        ));
    }
    Ok(body)
}

/// `grpc-status` (and `grpc-message`) from trailers or trailers-only headers.
fn check_status(h: &HeaderMap) -> Result<(), Failure> {
    let raw = h.get("grpc-status").ok_or_else(|| Failure::with_detail("bad-response", "no grpc-status"))?;
    let n: i32 = raw
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::with_detail("bad-response", format!("grpc-status {raw:?}")))?;
    let code = tonic::Code::from_i32(n);
    if code == tonic::Code::Ok {
        return Ok(());
    }
    let message = h.get("grpc-message").and_then(|v| v.to_str().ok()).map(percent_decode).unwrap_or_default();
    let name = code_name(code);
    Err(Failure::with_detail(format!("grpc {name}"), format!("{name}: {message}")))
}

/// gRPC's `grpc-message` is percent-encoded (RFC 3986 style) UTF-8; invalid escapes stay as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex_digit(b[i + 1]), hex_digit(b[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Connection-level failures are counted like tonic's: `grpc UNAVAILABLE` when the
/// connection broke, `grpc CANCELLED`/`RESOURCE_EXHAUSTED` for RST_STREAM reasons.
fn transport(e: h2::Error) -> Failure {
    let kind = match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) | None => "grpc UNAVAILABLE",
        Some(h2::Reason::CANCEL) => "grpc CANCELLED",
        Some(h2::Reason::ENHANCE_YOUR_CALM) => "grpc RESOURCE_EXHAUSTED",
        Some(_) => "grpc INTERNAL",
    };
    Failure::with_detail(kind, format!("HTTP/2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_prefixes_are_errors() {
        let msg =
            ca_proto::v1::SignCsrRequest { csr: vec![1, 2, 3], profile: "p".into(), validity_seconds: 9 };
        let framed = frame(&msg);
        assert_eq!(framed[0], 0);
        assert_eq!(u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize, framed.len() - 5);
        let body = unframe(framed.clone()).unwrap();
        assert_eq!(<ca_proto::v1::SignCsrRequest as prost::Message>::decode(body).unwrap(), msg);

        assert!(unframe(Bytes::from_static(&[0, 0, 0])).is_err());
        let mut long = framed.to_vec();
        long.push(0);
        assert!(unframe(Bytes::from(long)).unwrap_err().detail.unwrap().contains("prefix says"));
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert!(unframe(Bytes::from(compressed)).is_err());
    }

    #[test]
    fn statuses_map_to_canonical_kinds() {
        let mut h = HeaderMap::new();
        assert!(check_status(&h).is_err(), "a missing status is not success");
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status(&h).is_ok());
        h.insert("grpc-status", "8".parse().unwrap());
        h.insert("grpc-message", "signing%20queue%20full".parse().unwrap());
        let f = check_status(&h).unwrap_err();
        assert_eq!(f.kind, "grpc RESOURCE_EXHAUSTED");
        assert_eq!(f.detail.as_deref(), Some("RESOURCE_EXHAUSTED: signing queue full"));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(check_status(&h).unwrap_err().kind, "bad-response");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%\u{e9}x%zz"), "%\u{e9}x%zz");
        assert_eq!(percent_decode("%E2%9C%93 ok"), "\u{2713} ok");
    }
}
