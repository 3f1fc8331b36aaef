//! Client certificates that this CA revoked are refused at the gRPC TLS handshake, and
//! certificates of every issuing-CA generation are verified, including one added after
//! the start.
//!
//! The chain check stays rustls's (`WebPkiClientVerifier`, anchored at the root and any
//! client-CA bundle); this wrapper gives it the issuing CAs known at each handshake as
//! intermediates (beside whatever the client sent), then adds one look-up
//! in the store after it: a leaf whose serial this CA recorded (the same certificate,
//! byte for byte, so a certificate from a configured client-CA bundle with a colliding
//! serial is not affected) and revoked fails with `certificate_revoked`. The store is the
//! source of truth, so a revocation applies to the next handshake without waiting for a
//! CRL. Connections opened before the revocation keep their session until they close.

use std::sync::Arc;

use ca_core::Serial;
use ca_core::issue::Authority;
use ca_storage::{CertRecord, EventStore, StoreError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

pub struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    store: EventStore,
    authority: Arc<Authority>,
}

/// By hand: neither the store nor the authority is `Debug`; a verifier must be.
impl std::fmt::Debug for RevocationAwareVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationAwareVerifier").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl RevocationAwareVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, store: EventStore, authority: Arc<Authority>) -> Self {
        RevocationAwareVerifier { inner, store, authority }
    }

    /// `Err` when `leaf` is a certificate of ours that is revoked.
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        match recorded(&self.store, leaf) {
            Ok(Some(rec)) if rec.revoked.is_some() => {
                tracing::info!(serial = %rec.issued.serial.to_hex(), "refused a revoked client certificate");
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

/// This CA's record of `leaf`, when it issued exactly this certificate (same serial and
/// the same bytes, so another CA's certificate with a colliding serial is not ours).
pub fn recorded(store: &EventStore, leaf: &[u8]) -> Result<Option<CertRecord>, StoreError> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else { return Ok(None) };
    let Ok(serial) = Serial::from_bytes(cert.raw_serial()) else { return Ok(None) };
    Ok(store.cert(&serial)?.filter(|rec| rec.issued.certificate_der == leaf))
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
        let issuers = self.authority.issuers();
        let mut all: Vec<CertificateDer<'_>> = intermediates.to_vec();
        all.extend(issuers.iter().map(|ca| CertificateDer::from(ca.cert_der.as_slice())));
        let ok = self.inner.verify_client_cert(end_entity, &all, now)?;
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
