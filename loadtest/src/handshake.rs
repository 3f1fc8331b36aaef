//! `handshake`: the cost of a new connection. Each request opens one (TCP, then TLS with
//! the client certificate for `https://`, then the HTTP/2 preface), makes one cheap RPC
//! (`GetCaCertificates`: no signing, no storage) so the server has really accepted the
//! caller, and closes it. Against an `http://` server the same loop gives the plaintext
//! baseline, so the difference is the TLS handshake.

use bytes::Bytes;
use ca_proto::v1::{GetCaCertificatesRequest, GetCaCertificatesResponse};

use crate::driver::{Failure, Scenario};
use crate::h2c::{self, H2Channel};
use crate::tls::ClientTls;

const GET_CA_PATH: &str = "/ca.v1.CertificateAuthority/GetCaCertificates";

pub struct Handshake {
    addr: String,
    tls: Option<ClientTls>,
    uri: http::Uri,
    body: Bytes,
}

impl Handshake {
    /// Checks once that a connection and the RPC work, so a misconfiguration is an error
    /// up front rather than a run of identical failures.
    pub async fn new(addr: &str, tls: Option<ClientTls>) -> Result<Self, String> {
        let ch = H2Channel::connect_with(addr, tls.as_ref()).await?;
        let h = Handshake {
            addr: addr.to_string(),
            uri: ch.method_uri(GET_CA_PATH)?,
            body: h2c::frame(&GetCaCertificatesRequest {}),
            tls,
        };
        h.call(&ch)
            .await
            .map_err(|f| format!("GetCaCertificates: {} {}", f.kind, f.detail.unwrap_or_default()))?;
        Ok(h)
    }

    async fn call(&self, ch: &H2Channel) -> Result<(), Failure> {
        let msg = ch.unary(&self.uri, self.body.clone()).await?;
        let resp = <GetCaCertificatesResponse as prost::Message>::decode(msg)
            .map_err(|e| Failure::with_detail("bad-response", format!("GetCaCertificatesResponse: {e}")))?;
        if resp.intermediate_der.is_empty() {
            return Err(Failure::with_detail("bad-response", "no intermediate certificate"));
        }
        Ok(())
    }
}

impl Scenario for Handshake {
    async fn one(&self, _slot: usize, _i: u64) -> Result<(), Failure> {
        let ch = H2Channel::connect_with(&self.addr, self.tls.as_ref()).await.map_err(|e| {
            let kind = if e.starts_with("TLS") { "tls-handshake" } else { "connect" };
            Failure::with_detail(kind, e)
        })?;
        // Dropping the last handle closes the connection (GOAWAY, then FIN).
        self.call(&ch).await
    }
}
