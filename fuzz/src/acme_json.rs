//! ACME request payloads (the JSON inside a verified JWS), read the way the ca-server
//! handlers read them, through ca-core's pure parsers: newAccount's
//! `externalAccountBinding`, newOrder's `identifiers` ([`Identifier::parse`],
//! [`normalize_dns`]) and times, finalize's `csr`, revokeCert's `certificate` and `reason`,
//! keyChange's inner JWS and `oldKey`, ARI's `replaces` certID, challenge and authz fields.

use ca_core::Serial;
use ca_core::acme::event::Identifier;
use ca_core::acme::model::ChallengeType;
use ca_core::acme::{Jwk, Jws, b64u_decode};
use ca_core::event::RevocationReason;
use ca_core::policy::{SanName, normalize_dns};
use serde_json::Value;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::permissive_policy;

pub fn run(data: &[u8]) {
    let Ok(p) = serde_json::from_slice::<Value>(data) else { return };
    new_account(&p);
    new_order(&p);
    finalize(&p);
    revoke_cert(&p);
    key_change(data, &p);
    if let Some(s) = p.get("status").and_then(Value::as_str) {
        let _ = ChallengeType::parse(s);
    }
    if let Some(s) = p.get("type").and_then(Value::as_str) {
        let _ = ChallengeType::parse(s).map(ChallengeType::as_str);
    }
}

fn new_account(p: &Value) {
    if let Some(b) = p.get("externalAccountBinding") {
        crate::jws::eab(b, None);
    }
}

fn new_order(p: &Value) {
    if let Some(list) = p.get("identifiers").and_then(Value::as_array) {
        for i in list.iter().take(100) {
            let kind = i.get("type").and_then(Value::as_str).unwrap_or("");
            let value = i.get("value").and_then(Value::as_str).unwrap_or("");
            let _ = Identifier::parse(kind, value);
            // As the server does: DNS names normalized, IPs parsed.
            let id = match kind {
                "dns" => normalize_dns(value).map(Identifier::Dns),
                _ => Identifier::parse(kind, value),
            };
            let Ok(id) = id else { continue };
            assert_eq!(Identifier::parse(id.kind(), &id.value()).as_ref().ok(), Some(&id));
            let (base, wildcard) = id.base();
            assert_eq!(wildcard, base != id);
            let _ = id.to_string();
            let san = match &id {
                Identifier::Dns(d) => SanName::Dns(d.clone()),
                Identifier::Ip(ip) => SanName::Ip(*ip),
            };
            let _ = permissive_policy().check_names(&[san]);
        }
    }
    for name in ["notBefore", "notAfter"] {
        if let Some(s) = p.get(name).and_then(Value::as_str) {
            let _ = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.year() > 1).then_some(t.unix_timestamp()));
        }
    }
    // ARI (RFC 9773) certID: base64url(keyIdentifier) "." base64url(serial), leading zero
    // bytes of the serial dropped (acme.sh pads).
    if let Some((k, s)) = p.get("replaces").and_then(Value::as_str).and_then(|id| id.split_once('.')) {
        let _ = b64u_decode(k);
        if let Ok(mut serial) = b64u_decode(s) {
            while serial.len() > 1 && serial[0] == 0 {
                serial.remove(0);
            }
            if let Ok(s) = Serial::from_bytes(&serial) {
                let _ = s.to_hex();
            }
        }
    }
}

fn finalize(p: &Value) {
    let Some(csr) = p.get("csr").and_then(Value::as_str) else { return };
    if let Ok(der) = b64u_decode(csr) {
        crate::csr::check(&der);
    }
}

fn revoke_cert(p: &Value) {
    if let Some(code) = p.get("reason").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok())
        && let Ok(reason) = RevocationReason::from_code(code)
    {
        assert_eq!(reason.code(), code);
    }
    let Some(der) = p.get("certificate").and_then(Value::as_str).and_then(|s| b64u_decode(s).ok()) else {
        return;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else { return };
    if let Ok(s) = Serial::from_bytes(cert.raw_serial()) {
        assert_eq!(Serial::from_bytes(s.as_bytes()).ok().as_ref(), Some(&s));
    }
    // revokeCert signed by the certificate's own key compares the JWS key with its SPKI.
    let spki = cert.public_key().raw;
    if let Ok(jwk) = Jwk::from_json(&p["jwk"]) {
        let _ = jwk.matches_spki(spki);
    }
}

/// keyChange: the payload is itself a JWS (by the new key) over {account, oldKey}.
fn key_change(data: &[u8], p: &Value) {
    if let Some(old) = p.get("oldKey") {
        let _ = Jwk::from_json(old);
    }
    let Ok(inner) = Jws::parse(data) else { return };
    crate::jws::authenticated(&inner);
    if let Ok(payload) = inner.payload_json() {
        let _ = payload.get("account").and_then(Value::as_str);
        if let Some(old) = payload.get("oldKey") {
            let _ = Jwk::from_json(old);
        }
    }
}
