//! Issuing CAs (rotation generations) in their API form.

use ca_core::ca::IssuingCa;

use crate::v1;

/// The API view of one issuer generation; `current` marks the one that signs now.
pub fn issuer_info(ca: &IssuingCa, current: bool) -> v1::IssuerInfo {
    v1::IssuerInfo {
        generation: ca.generation,
        certificate_der: ca.cert_der.clone(),
        chain_pem: ca.chain_pem.clone(),
        subject: ca.subject.clone(),
        not_before_unix: ca.not_before,
        not_after_unix: ca.not_after,
        current,
    }
}
