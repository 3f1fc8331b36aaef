//! Delegated OCSP signers (RFC 6960 4.2.2.2): a short-lived OCSP-signing certificate per
//! issuer, so the issuing key signs no OCSP answers. The writer issues its own (with
//! `ocsp_delegated_signer`) and, over `CaAdmin.IssueOcspSigner`, one for each instance
//! that does not write (PostgreSQL backend): those sign OCSP answers only with a
//! delegated signer, never with the issuing key, and answer `tryLater` while they hold
//! none. Every signer certificate is logged like any issuance.

use std::sync::Arc;

use ca_core::Serial;
use ca_core::csr::CheckedCsr;
use ca_core::event::{CertificateIssued, Event};
use ca_core::keys::KeyAlgorithm;
use ca_core::ocsp::{OcspResponder, SubjectKey};
use ca_core::signer::{Signer, SoftwareSigner};

use super::{Revocation, write};
use crate::app::now_unix;
use crate::error::AppError;

/// The profile name signer certificates are logged under.
const PROFILE: &str = "ocsp-signing";

impl Revocation {
    /// A delegated signer is held and has not expired.
    pub(super) fn holds_signer(&self) -> bool {
        self.responder().delegated_not_after().is_some_and(|na| na > now_unix())
    }

    /// The held delegated signer is past half its lifetime (the lifetime its certificate
    /// has: on a follower, the writer's `ocsp_signer_validity_secs`).
    pub(super) fn signer_needs_rotation(&self) -> bool {
        self.responder().delegated_halfway().is_some_and(|t| now_unix() >= t)
    }

    /// This instance does not write and needs a delegated signer from the writer: it holds
    /// none, or the one it holds is due for rotation (an expired issuer needs none).
    pub fn wants_signer_from_writer(&self) -> bool {
        !self.writes()
            && now_unix() < self.ca.not_after
            && (!self.holds_signer() || self.signer_needs_rotation())
    }

    /// Issue a fresh delegated signer here (logged like any issuance) and switch to it.
    pub(super) async fn rotate_ocsp_signer(&self) -> Result<(), AppError> {
        let key = ca_core::keys::generate(KeyAlgorithm::EcdsaP256)?;
        let signer: Arc<dyn Signer> = Arc::new(SoftwareSigner::from_pkcs8(key.der())?);
        let der = ca_core::ocsp::ocsp_signer_cert(
            &self.ca,
            &SubjectKey(signer.as_ref()),
            now_unix(),
            self.cfg.ocsp_signer_validity_secs,
        )?;
        self.log_signer(&der, "ca-server").await?;
        self.install_signer(der, signer)
    }

    /// On the writer: issue and log a delegated signer certificate for another instance's
    /// key (`CaAdmin.IssueOcspSigner`), recording `requester`. Refused (UNAVAILABLE, naming
    /// the writer) on an instance that does not write.
    pub async fn issue_signer_for(&self, csr: &CheckedCsr, requester: &str) -> Result<Vec<u8>, AppError> {
        if let ca_storage::Role::Follower { writer } = self.store.role() {
            return Err(AppError::Store(ca_storage::StoreError::NotWriter {
                writer,
                why: "only the writer issues delegated OCSP signers".into(),
            }));
        }
        let der =
            ca_core::ocsp::ocsp_signer_cert(&self.ca, csr, now_unix(), self.cfg.ocsp_signer_validity_secs)?;
        self.log_signer(&der, requester).await?;
        Ok(der)
    }

    async fn log_signer(&self, der: &[u8], requester: &str) -> Result<(), AppError> {
        let (serial, not_before, not_after) = cert_facts(der)?;
        self.store
            .append(vec![Event::CertificateIssued(CertificateIssued {
                serial,
                certificate_der: der.to_vec(),
                profile: PROFILE.into(),
                requester: requester.into(),
                not_before,
                not_after,
                names: vec![],
                issuer_generation: self.ca.generation,
            })])
            .await?;
        Ok(())
    }

    /// Answer OCSP with `signer` and its certificate `der` from now on (checked: issued by
    /// this issuer for this key, with the OCSP-signing EKU).
    pub fn install_signer(&self, der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<(), AppError> {
        let responder = OcspResponder::delegated(&self.ca, der, signer)?;
        let not_after = responder.delegated_not_after();
        *write(&self.responder) = Arc::new(responder);
        // Answers the old signer signed are re-signed on request: the old one expires
        // before they would otherwise refresh when its lifetime is short.
        write(&self.cache).clear();
        tracing::info!(issuer = self.ca.generation, not_after, "delegated OCSP signer installed");
        Ok(())
    }
}

/// Serial and validity of a certificate we just built.
fn cert_facts(der: &[u8]) -> Result<(Serial, i64, i64), AppError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, x) =
        X509Certificate::from_der(der).map_err(|e| AppError::Io(format!("parsing own certificate: {e}")))?;
    let serial = Serial::from_bytes(x.raw_serial())?;
    Ok((serial, x.validity().not_before.timestamp(), x.validity().not_after.timestamp()))
}
