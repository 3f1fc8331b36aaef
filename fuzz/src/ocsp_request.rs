//! OCSP request intake (RFC 6960 4.1), GET and POST alike: [`ocsp::parse_request`], then
//! what the responder does with a parsed request: match each CertID against the issuer
//! and sign an answer echoing the CertIDs and the nonce, which must be well-formed DER.

use std::sync::{Arc, OnceLock};

use ca_core::ca::{self, IssuingCa};
use ca_core::keys::KeyAlgorithm;
use ca_core::ocsp::{self, CertStatus, MAX_CERT_IDS, MAX_NONCE_LEN, OcspResponder, SingleAnswer};
use ca_core::signer::SoftwareSigner;
use ocsp_der::Decode;

const NOW: i64 = 1_800_000_000;

/// One CA per process (AFL's persistent mode runs many inputs in one process).
fn responder() -> &'static OcspResponder {
    static RESPONDER: OnceLock<OcspResponder> = OnceLock::new();
    RESPONDER.get_or_init(|| {
        let made = (|| -> Result<OcspResponder, ca_core::Error> {
            let m = ca::generate(KeyAlgorithm::EcdsaP256, "Fuzz", time::OffsetDateTime::now_utc())?;
            let key = m.intermediate_key.as_ref().ok_or(ca_core::Error::Key("no software key".into()))?;
            let ca = IssuingCa::new(
                m.intermediate_der,
                m.root_der,
                Arc::new(SoftwareSigner::from_pkcs8(key.der())?),
            )?;
            OcspResponder::for_ca(&ca)
        })();
        match made {
            Ok(r) => r,
            Err(e) => panic!("the fuzz CA must build: {e}"),
        }
    })
}

pub fn run(data: &[u8]) {
    let Ok(req) = ocsp::parse_request(data) else { return };
    assert!((1..=MAX_CERT_IDS).contains(&req.cert_ids.len()));
    assert!(req.nonce.as_ref().is_none_or(|n| n.len() <= MAX_NONCE_LEN));
    let responder = responder();
    let mut answers = Vec::with_capacity(req.cert_ids.len());
    for id in &req.cert_ids {
        let _ = id.hash.name();
        assert!(!id.der().is_empty());
        let status = if responder.matches_issuer(id) { CertStatus::Good } else { CertStatus::Unknown };
        answers.push(SingleAnswer { cert_id: id, status, this_update: NOW, next_update: NOW + 3_600 });
    }
    match ocsp::build_response(responder, &answers, NOW, req.nonce.as_deref()) {
        Ok(der) => {
            if let Err(e) = x509_ocsp::OcspResponse::from_der(&der) {
                panic!("the signed response is not a DER OCSPResponse: {e}");
            }
        }
        Err(e) => panic!("a parsed request must be answerable: {e}"),
    }
}
