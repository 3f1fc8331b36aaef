//! Client certificates that this CA revoked are refused at the gRPC TLS handshake.
//!
//! The chain check stays rustls's (`WebPkiClientVerifier`); this wrapper adds one look-up
//! in the store after it: a leaf whose serial this CA recorded (the same certificate,
//! byte for byte, so a certificate from a configured client-CA bundle with a colliding
//! serial is not affected) and revoked fails with `certificate_revoked`. The store is the
//! source of truth, so a revocation applies to the next handshake without waiting for a
//! CRL. Connections opened before the revocation keep their session until they close.

use std::sync::Arc;

use ca_core::Serial;
use ca_storage::EventStore;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

#[derive(Debug)]
pub struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    store: StoreHandle,
}

/// `EventStore` is not `Debug`; the verifier must be.
struct StoreHandle(EventStore);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventStore")
    }
}

impl RevocationAwareVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, store: EventStore) -> Self {
        RevocationAwareVerifier { inner, store: StoreHandle(store) }
    }

    /// `Err` when `leaf` is a certificate of ours that is revoked.
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
            return Ok(()); // the chain check already accepted it; nothing of ours to look up
        };
        let Ok(serial) = Serial::from_bytes(cert.raw_serial()) else { return Ok(()) };
        match self.store.0.cert(&serial) {
            Ok(Some(rec)) if rec.issued.certificate_der == leaf.as_ref() && rec.revoked.is_some() => {
                tracing::info!(serial = %serial.to_hex(), "refused a revoked client certificate");
                Err(Error::InvalidCertificate(CertificateError::Revoked))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                // Fail closed: a caller must not get in because the store could not answer.
                tracing::error!(error = %e, "client certificate revocation check failed");
                Err(Error::General("revocation status unavailable".into()))
            }
        }
    }
}

impl ClientCertVerifier for RevocationAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
