//! Writes the seed corpora that need the project's own code: CSRs from rcgen, JWS bodies
//! and ACME payloads signed like instant-acme/certbot/lego sign them, OCSP requests for a
//! real CA, and events and a commit journal written by the real event store.
//! `gen-corpus.sh` runs it (and adds the openssl-made seeds).
//!
//! Usage: gen-corpus CORPUS_DIR

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_core::acme::{Jwk, b64u};
use ca_core::ca::{self, IssuingCa};
use ca_core::event::*;
use ca_core::keys::{self, KeyAlgorithm};
use ca_core::ocsp::{HashAlgorithm, OcspResponder};
use ca_core::signer::SoftwareSigner;
use ca_core::{Event, Serial};
use ca_fuzz::jws::{EAB_HMAC_KEY, NEW_ACCOUNT_URL};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: gen-corpus CORPUS_DIR")?);
    let pki = ca::generate(KeyAlgorithm::EcdsaP256, "Fuzz Seeds", time::OffsetDateTime::now_utc())?;
    csrs(&out.join("csr"))?;
    let leaf = acme(&out, &pki)?;
    ocsp(&out.join("ocsp_request"), &pki)?;
    store(&out, &pki, &leaf)?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn rcgen_key(alg: KeyAlgorithm) -> Res<rcgen::KeyPair> {
    let k = keys::generate(alg)?;
    Ok(rcgen::KeyPair::try_from(k.der())?)
}

/// CSRs as rcgen (and so instant-acme, cert-manager's Rust peers) writes them.
fn csrs(dir: &Path) -> Res<Vec<u8>> {
    let many: Vec<String> = (0..40).map(|i| format!("svc{i}.ns.svc.cluster.local")).collect();
    let cases: [(&str, KeyAlgorithm, Vec<String>); 6] = [
        (
            "rcgen-p256-dns-ip",
            KeyAlgorithm::EcdsaP256,
            vec!["svc.example.internal".into(), "10.0.0.7".into()],
        ),
        ("rcgen-p384-wildcard", KeyAlgorithm::EcdsaP384, vec!["*.apps.example.internal".into()]),
        ("rcgen-ed25519-ipv6", KeyAlgorithm::Ed25519, vec!["fd00::1".into(), "host.test".into()]),
        ("rcgen-rsa2048", KeyAlgorithm::Rsa2048, vec!["rsa.example.internal".into()]),
        ("rcgen-p256-40-sans", KeyAlgorithm::EcdsaP256, many),
        ("rcgen-p256-none", KeyAlgorithm::EcdsaP256, vec![]),
    ];
    let mut first = Vec::new();
    for (name, alg, sans) in cases {
        let key = rcgen_key(alg)?;
        let mut params = rcgen::CertificateParams::new(sans)?;
        if name.ends_with("none") {
            params.distinguished_name.push(rcgen::DnType::CommonName, "cn-only.example.internal");
        }
        let csr = params.serialize_request(&key)?;
        write(dir, &format!("{name}.der"), csr.der())?;
        if first.is_empty() {
            first = csr.der().to_vec();
            write(dir, "rcgen-p256-dns-ip.pem", csr.pem()?.as_bytes())?;
        }
    }
    // A URI SAN (SPIFFE), as service meshes request.
    let key = rcgen_key(KeyAlgorithm::EcdsaP256)?;
    let mut params = rcgen::CertificateParams::new(vec!["workload.ns.svc".to_string()])?;
    params.subject_alt_names.push(rcgen::SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into()?));
    write(dir, "rcgen-p256-spiffe.der", params.serialize_request(&key)?.der())?;
    Ok(first)
}

/// An ACME account key that signs as the clients do (ES256 by instant-acme and lego,
/// RS256 by certbot, ES384 and EdDSA by others).
struct ClientKey {
    alg: &'static str,
    jwk: Value,
    signer: Signer,
}

enum Signer {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl ClientKey {
    fn ec(alg: &'static str, sig: &'static signature::EcdsaSigningAlgorithm, crv: &str) -> Res<ClientKey> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(sig, &rng).map_err(|e| e.to_string())?;
        let kp = EcdsaKeyPair::from_pkcs8(sig, pkcs8.as_ref(), &rng).map_err(|e| e.to_string())?;
        let point = kp.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        let jwk =
            json!({"kty": "EC", "crv": crv, "x": b64u(&point[1..1 + half]), "y": b64u(&point[1 + half..])});
        Ok(ClientKey { alg, jwk, signer: Signer::Ec(kp) })
    }

    fn ed25519() -> Res<ClientKey> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| e.to_string())?;
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64u(kp.public_key())});
        Ok(ClientKey { alg: "EdDSA", jwk, signer: Signer::Ed(kp) })
    }

    fn rs256() -> Res<ClientKey> {
        let k = keys::generate(KeyAlgorithm::Rsa2048)?;
        let kp = RsaKeyPair::from_pkcs8(k.der()).map_err(|e| e.to_string())?;
        let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
        let jwk = json!({"kty": "RSA", "n": b64u(&parts.n), "e": b64u(&parts.e)});
        Ok(ClientKey { alg: "RS256", jwk, signer: Signer::Rsa(kp) })
    }

    fn sign(&self, msg: &[u8]) -> Res<Vec<u8>> {
        let rng = SystemRandom::new();
        Ok(match &self.signer {
            Signer::Ec(kp) => kp.sign(&rng, msg).map_err(|e| e.to_string())?.as_ref().to_vec(),
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(|e| e.to_string())?;
                sig
            }
        })
    }

    /// A flattened JWS over `payload` (empty: POST-as-GET), with `jwk` or with `kid`.
    fn jws(&self, url: &str, kid: Option<&str>, nonce: Option<&str>, payload: &[u8]) -> Res<Vec<u8>> {
        let mut header = json!({"alg": self.alg, "url": url});
        match kid {
            Some(k) => header["kid"] = json!(k),
            None => header["jwk"] = self.jwk.clone(),
        }
        if let Some(n) = nonce {
            header["nonce"] = json!(n);
        }
        let p = b64u(header.to_string());
        let pl = b64u(payload);
        let sig = self.sign(format!("{p}.{pl}").as_bytes())?;
        Ok(json!({"protected": p, "payload": pl, "signature": b64u(sig)}).to_string().into_bytes())
    }
}

/// An External Account Binding over `jwk` with the seeds' HMAC key (RFC 8555 7.3.4).
fn eab(jwk: &Value) -> Value {
    let p = b64u(json!({"alg": "HS256", "kid": "kid-fuzz-1", "url": NEW_ACCOUNT_URL}).to_string());
    let pl = b64u(jwk.to_string());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, EAB_HMAC_KEY);
    let tag = ring::hmac::sign(&key, format!("{p}.{pl}").as_bytes());
    json!({"protected": p, "payload": pl, "signature": b64u(tag.as_ref())})
}

/// JWS bodies (`jws/`) and their payloads (`acme_json/`) for each request kind. Returns a
/// leaf certificate's DER (for revokeCert and the events).
fn acme(out: &Path, pki: &ca::CaMaterial) -> Res<Vec<u8>> {
    let (jws_dir, json_dir) = (out.join("jws"), out.join("acme_json"));
    let base = "https://ca.example/acme";
    let acct = format!("{base}/acct/Ab3dE");
    let keys = [
        ClientKey::ec("ES256", &signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")?,
        ClientKey::ec("ES384", &signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")?,
        ClientKey::ed25519()?,
        ClientKey::rs256()?,
    ];
    let nonce = Some("oFvnlFP1wIhRlYS2jTaXbA");
    for k in &keys {
        let tag = k.alg.to_ascii_lowercase();
        let payload = json!({"termsOfServiceAgreed": true, "contact": ["mailto:ops@example.internal"]});
        let body = k.jws(NEW_ACCOUNT_URL, None, nonce, payload.to_string().as_bytes())?;
        write(&jws_dir, &format!("new-account-{tag}.json"), &body)?;
    }
    let es256 = &keys[0];

    // Payloads, one per request kind.
    let leaf = leaf_cert(pki)?;
    let csr_der = std::fs::read(out.join("csr").join("rcgen-p256-dns-ip.der"))?;
    let payloads: Vec<(&str, Value)> = vec![
        ("new-account", json!({"termsOfServiceAgreed": true, "contact": ["mailto:ops@example.internal"]})),
        ("new-account-eab", json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab(&es256.jwk)})),
        ("new-account-only-existing", json!({"onlyReturnExisting": true})),
        (
            "new-order",
            json!({"identifiers": [
                {"type": "dns", "value": "svc.example.internal"},
                {"type": "dns", "value": "*.apps.example.internal"},
                {"type": "ip", "value": "10.0.0.7"},
                {"type": "ip", "value": "fd00::7"}
            ]}),
        ),
        (
            "new-order-times-profile-replaces",
            json!({"identifiers": [{"type": "dns", "value": "Svc.Example.Internal."}],
                   "notBefore": "2026-12-01T00:00:00Z", "notAfter": "2026-12-31T23:59:59.5+01:00",
                   "profile": "server", "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"}),
        ),
        ("finalize", json!({"csr": b64u(&csr_der)})),
        ("revoke-cert", json!({"certificate": b64u(&leaf), "reason": 4})),
        ("revoke-cert-by-key", json!({"certificate": b64u(&leaf), "jwk": es256.jwk})),
        ("challenge", json!({})),
        ("authz-deactivate", json!({"status": "deactivated"})),
        ("account-update", json!({"contact": ["mailto:new@example.internal"], "status": "valid"})),
    ];
    for (name, p) in &payloads {
        write(&json_dir, &format!("{name}.json"), p.to_string().as_bytes())?;
        let url = format!("{base}/{name}");
        write(
            &jws_dir,
            &format!("{name}-kid.json"),
            &es256.jws(&url, Some(&acct), nonce, p.to_string().as_bytes())?,
        )?;
    }
    // POST-as-GET, and keyChange: the inner JWS (new key, jwk, no nonce) is the payload.
    write(&jws_dir, "post-as-get.json", &es256.jws(&format!("{base}/order/1"), Some(&acct), nonce, b"")?)?;
    let key_change_url = format!("{base}/key-change");
    let inner_payload = json!({"account": acct, "oldKey": es256.jwk});
    let inner = keys[2].jws(&key_change_url, None, None, inner_payload.to_string().as_bytes())?;
    write(&json_dir, "key-change-inner.json", &inner)?;
    write(&jws_dir, "key-change.json", &es256.jws(&key_change_url, Some(&acct), nonce, &inner)?)?;
    // Bare JWKs and an EAB binding (both also parsed on their own by the jws target).
    write(&jws_dir, "jwk-rsa.json", keys[3].jwk.to_string().as_bytes())?;
    write(&jws_dir, "eab-binding.json", eab(&es256.jwk).to_string().as_bytes())?;
    // Sanity: the keys parse as the server parses them.
    for k in &keys {
        Jwk::from_json(&k.jwk)?;
    }
    Ok(leaf)
}

/// A leaf certificate issued by the seeds' intermediate (what revokeCert carries).
fn leaf_cert(pki: &ca::CaMaterial) -> Res<Vec<u8>> {
    let int_key = pki.intermediate_key.as_ref().ok_or("no software intermediate key")?;
    let issuer_key = rcgen::KeyPair::try_from(int_key.der())?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&pki.intermediate_der.clone().into(), issuer_key)?;
    let key = rcgen_key(KeyAlgorithm::EcdsaP256)?;
    let mut params = rcgen::CertificateParams::new(vec!["svc.example.internal".to_string()])?;
    params.serial_number =
        Some(rcgen::SerialNumber::from_slice(&[0x41, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]));
    Ok(params.signed_by(&key, &issuer)?.der().to_vec())
}

/// OCSP requests for serials of the seeds' CA, by each hash, with and without a nonce, and
/// several CertIDs in one (openssl-made ones come from gen-corpus.sh).
fn ocsp(dir: &Path, pki: &ca::CaMaterial) -> Res<()> {
    let int_key = pki.intermediate_key.as_ref().ok_or("no software intermediate key")?;
    let signer = Arc::new(SoftwareSigner::from_pkcs8(int_key.der())?);
    let ca = IssuingCa::new(pki.intermediate_der.clone(), pki.root_der.clone(), signer)?;
    let responder = OcspResponder::for_ca(&ca)?;
    let serial = Serial::from_bytes(&[0x41, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08])?;
    let hashes = [HashAlgorithm::Sha1, HashAlgorithm::Sha256];
    for h in hashes {
        let id = responder.cert_id(h, &serial);
        write(dir, &format!("{}-nonce.der", h.name()), &ocsp_request(&[id.der()], Some(&[7; 16])))?;
        write(dir, &format!("{}.der", h.name()), &ocsp_request(&[id.der()], None))?;
    }
    let ids: Vec<_> = hashes.iter().map(|h| responder.cert_id(*h, &serial)).collect();
    let ders: Vec<&[u8]> = ids.iter().map(|i| i.der()).collect();
    write(dir, "two-cert-ids.der", &ocsp_request(&ders, Some(&[9; 32])))?;
    Ok(())
}

fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let b = (n as u32).to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&b[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    der_len(content.len(), &mut v);
    v.extend_from_slice(content);
    v
}

/// OCSPRequest { TBSRequest { requestList SEQUENCE OF Request { CertID }, [2] extensions } }
/// with the RFC 8954 nonce extension when `nonce` is given.
fn ocsp_request(cert_ids: &[&[u8]], nonce: Option<&[u8]>) -> Vec<u8> {
    let list: Vec<u8> = cert_ids.iter().flat_map(|id| tlv(0x30, id)).collect();
    let mut tbs = tlv(0x30, &list);
    if let Some(n) = nonce {
        let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02]);
        let value = tlv(0x04, &tlv(0x04, n));
        tbs.extend(tlv(0xa2, &tlv(0x30, &tlv(0x30, &[oid, value].concat()))));
    }
    tlv(0x30, &tlv(0x30, &tbs))
}

/// Every event kind through the real store: their log bytes (`event/`) and the commit
/// journal the store wrote for them (`journal/`), copied while the store is open (a
/// checkpoint empties it).
fn store(out: &Path, pki: &ca::CaMaterial, leaf: &[u8]) -> Res<()> {
    let s = |b: &[u8]| Serial::from_bytes(b);
    let serial = s(&[0x41, 2, 3, 4, 5, 6, 7, 8])?;
    let ident = |d: &str| Identifier::Dns(d.to_string());
    let events = vec![
        Event::CaInitialized(CaInitialized {
            root_der: pki.root_der.clone(),
            intermediate_der: pki.intermediate_der.clone(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            imported: false,
        }),
        Event::CertificateIssued(CertificateIssued {
            serial: serial.clone(),
            certificate_der: leaf.to_vec(),
            profile: "server".into(),
            requester: "grpc:spiffe://ca-server/admin".into(),
            not_before: 1_790_000_000,
            not_after: 1_797_776_000,
            names: vec!["svc.example.internal".into(), "10.0.0.7".into()],
            issuer_generation: 0,
        }),
        Event::CertificateRevoked(CertificateRevoked {
            serial: serial.clone(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: 1_790_100_000,
            requester: "acme:acct:Ab3dE".into(),
            invalidity_date: Some(1_790_050_000),
        }),
        Event::CrlPublished(CrlPublished {
            number: 7,
            this_update: 1_790_100_000,
            next_update: 1_790_186_400,
            delta_base: Some(6),
            issuer_generation: 1,
            der_sha256: Some([0x5a; 32]),
        }),
        Event::AccountRegistered(AccountRegistered {
            account_id: "Ab3dE".into(),
            jwk_json: br#"{"crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}"#.to_vec(),
            thumbprint: "tp-1".into(),
            contact: vec!["mailto:ops@example.internal".into()],
            terms_of_service_agreed: true,
            eab_kid: Some("kid-fuzz-1".into()),
            created_at: 1_790_000_000,
        }),
        Event::AccountUpdated(AccountUpdated { account_id: "Ab3dE".into(), contact: vec![] }),
        Event::AccountKeyChanged(AccountKeyChanged {
            account_id: "Ab3dE".into(),
            jwk_json: b"{}".to_vec(),
            old_thumbprint: "tp-1".into(),
            new_thumbprint: "tp-2".into(),
        }),
        Event::OrderCreated(OrderCreated {
            order_id: "ord1".into(),
            account_id: "Ab3dE".into(),
            identifiers: vec![ident("*.apps.example.internal"), Identifier::Ip("10.0.0.7".parse()?)],
            authz_ids: vec!["az1".into(), "az2".into()],
            new_authorizations: vec![NewAuthorization {
                authz_id: "az1".into(),
                identifier: ident("apps.example.internal"),
                wildcard: true,
                expires: 1_790_600_000,
                token: "tok".into(),
            }],
            expires: 1_790_600_000,
            not_before: Some(1_790_000_000),
            not_after: None,
            profile: "server".into(),
            replaces: Some(serial.clone()),
            created_at: 1_790_000_000,
        }),
        Event::ChallengeStarted(ChallengeStarted { authz_id: "az1".into(), challenge_type: "dns-01".into() }),
        Event::AuthorizationValidated(AuthorizationValidated {
            authz_id: "az1".into(),
            challenge_type: "dns-01".into(),
            address: Some("127.0.0.1".into()),
            validated_at: 1_790_000_100,
            expires: 1_792_000_000,
        }),
        Event::AuthorizationInvalidated(AuthorizationInvalidated {
            authz_id: "az2".into(),
            challenge_type: "http-01".into(),
            error_type: "urn:ietf:params:acme:error:connection".into(),
            detail: "connection refused".into(),
            at: 1_790_000_100,
        }),
        Event::AuthorizationDeactivated(AuthorizationDeactivated { authz_id: "az2".into() }),
        Event::OrderFinalized(OrderFinalized { order_id: "ord1".into(), serial: serial.clone() }),
        Event::AccountDeactivated(AccountDeactivated { account_id: "Ab3dE".into() }),
        Event::EabKeyCreated(EabKeyCreated {
            kid: "kid-fuzz-1".into(),
            name: "team a".into(),
            allowed_dns: vec![".example.internal".into()],
            allowed_ips: vec!["10.0.0.0/8".into()],
            profiles: vec!["server".into()],
            created_at: 1_790_000_000,
        }),
        Event::EabKeyRevoked(EabKeyRevoked { kid: "kid-fuzz-1".into() }),
        Event::RenewalWindowSet(RenewalWindowSet {
            serial: serial.clone(),
            start: 1_791_000_000,
            end: 1_791_086_400,
            requester: "grpc:admin".into(),
        }),
        Event::IssuingCaRotated(IssuingCaRotated {
            generation: 1,
            certificate_der: pki.intermediate_der.clone(),
            key_ref: "issuing-1.key".into(),
        }),
        Event::AccessDenials(AccessDenials {
            window_start: 1_791_000_000,
            window_end: 1_791_000_060,
            entries: vec![DenialCount {
                identity: "spiffe://corp/ns/pay/api".into(),
                rule: "rule 0 (spiffe://corp/ns/pay/*)".into(),
                method: "SignCsr".into(),
                count: 3,
            }],
            others: 1,
        }),
    ];
    let dir = tempfile::tempdir()?;
    let st = ca_storage::EventStore::open(dir.path())?;
    // Batches of 1, 2 and the rest: one journal frame each.
    st.append_blocking(events[..1].to_vec())?;
    st.append_blocking(events[1..3].to_vec())?;
    let journal_small = std::fs::read(dir.path().join("ca-journal"))?;
    st.append_blocking(events[3..].to_vec())?;
    let journal_all = std::fs::read(dir.path().join("ca-journal"))?;
    let jdir = out.join("journal");
    write(&jdir, "two-frames.bin", &journal_small)?;
    write(&jdir, "three-frames.bin", &journal_all)?;
    // A torn tail, as a crash mid-write leaves it.
    write(&jdir, "torn-tail.bin", &journal_all[..journal_all.len() - 5])?;
    let edir = out.join("event");
    for r in st.range(0) {
        let r = r?;
        write(&edir, &format!("{:02}-{}.pb", r.seq, r.event.kind()), &r.event_bytes)?;
    }
    Ok(())
}
