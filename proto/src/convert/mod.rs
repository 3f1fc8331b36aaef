//! Every conversion between protobuf messages and ca-core domain types lives here.

use ca_core::event::{self as dom, Event};
use ca_core::keys::KeyAlgorithm;
use ca_core::{Error, Serial};
use prost::Message;

use crate::v1;

/// Encode a domain event as the log's bytes (`ca.v1.Event`).
pub fn encode_event(e: &Event) -> Vec<u8> {
    event_to_proto(e).encode_to_vec()
}

/// Decode the log's bytes into a domain event.
pub fn decode_event(bytes: &[u8]) -> Result<Event, Error> {
    let p = v1::Event::decode(bytes).map_err(|e| Error::InvalidEvent(format!("protobuf: {e}")))?;
    event_from_proto(p)
}

pub use ca_core::projection::IndexEvent;

mod acme;
mod issuer;
mod lean;
pub use issuer::issuer_info;

/// Decode only what the projections need from the log's bytes, for replay and rebuild:
/// `decode_event_index(b)` is `decode_event(b).map(|e| IndexEvent::of(&e))`, except that
/// error texts differ. For the three hot kinds (issued, revoked, CRL) it scans the
/// protobuf wire format itself, checking everything prost and [`event_from_proto`] check
/// (wire types, varints, lengths, UTF-8 of every string field, groups and prost's recursion
/// limit in unknown fields, oneof merging, serial and reason validity) but without copying
/// the certificate DER or allocating strings; any other kind goes through [`decode_event`].
pub fn decode_event_index(bytes: &[u8]) -> Result<IndexEvent, Error> {
    match lean::decode(bytes) {
        Ok(lean::Decoded::Index(ix)) => Ok(ix),
        Ok(lean::Decoded::NotIndexed) => decode_event(bytes).map(|e| IndexEvent::of(&e)),
        Err(lean::WireError::Wire(what)) => Err(Error::InvalidEvent(format!("protobuf: {what}"))),
        Err(lean::WireError::Domain(e)) => Err(e),
    }
}

pub fn key_algorithm_to_proto(a: KeyAlgorithm) -> v1::KeyAlgorithm {
    match a {
        KeyAlgorithm::EcdsaP256 => v1::KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384 => v1::KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519 => v1::KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048 => v1::KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072 => v1::KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096 => v1::KeyAlgorithm::Rsa4096,
    }
}

fn key_algorithm_from_proto(v: i32) -> Result<KeyAlgorithm, Error> {
    Ok(match v1::KeyAlgorithm::try_from(v) {
        Ok(v1::KeyAlgorithm::EcdsaP256) => KeyAlgorithm::EcdsaP256,
        Ok(v1::KeyAlgorithm::EcdsaP384) => KeyAlgorithm::EcdsaP384,
        Ok(v1::KeyAlgorithm::Ed25519) => KeyAlgorithm::Ed25519,
        Ok(v1::KeyAlgorithm::Rsa2048) => KeyAlgorithm::Rsa2048,
        Ok(v1::KeyAlgorithm::Rsa3072) => KeyAlgorithm::Rsa3072,
        Ok(v1::KeyAlgorithm::Rsa4096) => KeyAlgorithm::Rsa4096,
        _ => return Err(Error::InvalidEvent(format!("unknown key algorithm {v}"))),
    })
}

/// The API enum value for a domain reason (codes are identical by construction).
pub fn reason_to_proto(r: dom::RevocationReason) -> v1::RevocationReason {
    v1::RevocationReason::try_from(r.code() as i32).unwrap_or(v1::RevocationReason::Unspecified)
}

pub fn reason_from_proto(v: i32) -> Result<dom::RevocationReason, Error> {
    let code = u32::try_from(v).map_err(|_| Error::BadReason(0))?;
    dom::RevocationReason::from_code(code)
}

pub(crate) fn serial(bytes: &[u8]) -> Result<Serial, Error> {
    Serial::from_bytes(bytes).map_err(|_| Error::InvalidEvent("bad serial in event".into()))
}

pub fn event_to_proto(e: &Event) -> v1::Event {
    use v1::event::Kind;
    let kind = match e {
        Event::CaInitialized(c) => Kind::CaInitialized(v1::CaInitialized {
            root_der: c.root_der.clone(),
            intermediate_der: c.intermediate_der.clone(),
            key_algorithm: key_algorithm_to_proto(c.key_algorithm) as i32,
            imported: c.imported,
        }),
        Event::CertificateIssued(c) => Kind::CertificateIssued(v1::CertificateIssued {
            serial: c.serial.as_bytes().to_vec(),
            certificate_der: c.certificate_der.clone(),
            profile: c.profile.clone(),
            requester: c.requester.clone(),
            not_before_unix: c.not_before,
            not_after_unix: c.not_after,
            names: c.names.clone(),
            issuer_generation: c.issuer_generation,
        }),
        Event::CertificateRevoked(r) => Kind::CertificateRevoked(v1::CertificateRevoked {
            serial: r.serial.as_bytes().to_vec(),
            reason: r.reason.code(),
            revoked_at_unix: r.revoked_at,
            requester: r.requester.clone(),
            invalidity_date_unix: r.invalidity_date.unwrap_or(0),
        }),
        Event::CrlPublished(c) => Kind::CrlPublished(v1::CrlPublished {
            number: c.number,
            this_update_unix: c.this_update,
            next_update_unix: c.next_update,
            delta_base: c.delta_base.unwrap_or(0),
            issuer_generation: c.issuer_generation,
            der_sha256: c.der_sha256.map(|h| h.to_vec()).unwrap_or_default(),
        }),
        Event::AccountRegistered(x) => Kind::AccountRegistered(x.into()),
        Event::AccountUpdated(x) => Kind::AccountUpdated(x.into()),
        Event::AccountKeyChanged(x) => Kind::AccountKeyChanged(x.into()),
        Event::AccountDeactivated(x) => Kind::AccountDeactivated(x.into()),
        Event::OrderCreated(x) => Kind::OrderCreated(x.into()),
        Event::ChallengeStarted(x) => Kind::ChallengeStarted(x.into()),
        Event::AuthorizationValidated(x) => Kind::AuthorizationValidated(x.into()),
        Event::AuthorizationInvalidated(x) => Kind::AuthorizationInvalidated(x.into()),
        Event::AuthorizationDeactivated(x) => Kind::AuthorizationDeactivated(x.into()),
        Event::OrderFinalized(x) => Kind::OrderFinalized(x.into()),
        Event::EabKeyCreated(x) => Kind::EabKeyCreated(x.into()),
        Event::EabKeyRevoked(x) => Kind::EabKeyRevoked(x.into()),
        Event::RenewalWindowSet(x) => Kind::RenewalWindowSet(x.into()),
        Event::IssuingCaRotated(r) => Kind::IssuingCaRotated(v1::IssuingCaRotated {
            generation: r.generation,
            certificate_der: r.certificate_der.clone(),
            key_ref: r.key_ref.clone(),
        }),
        Event::AccessDenials(d) => Kind::AccessDenials(v1::AccessDenials {
            window_start_unix: d.window_start,
            window_end_unix: d.window_end,
            entries: d
                .entries
                .iter()
                .map(|c| v1::DenialCount {
                    identity: c.identity.clone(),
                    rule: c.rule.clone(),
                    method: c.method.clone(),
                    count: c.count,
                })
                .collect(),
            others: d.others,
        }),
    };
    v1::Event { kind: Some(kind) }
}

pub fn event_from_proto(p: v1::Event) -> Result<Event, Error> {
    use v1::event::Kind;
    let kind = p.kind.ok_or_else(|| Error::InvalidEvent("event without a kind".into()))?;
    Ok(match kind {
        Kind::CaInitialized(c) => Event::CaInitialized(dom::CaInitialized {
            root_der: c.root_der,
            intermediate_der: c.intermediate_der,
            key_algorithm: key_algorithm_from_proto(c.key_algorithm)?,
            imported: c.imported,
        }),
        Kind::CertificateIssued(c) => Event::CertificateIssued(dom::CertificateIssued {
            serial: serial(&c.serial)?,
            certificate_der: c.certificate_der,
            profile: c.profile,
            requester: c.requester,
            not_before: c.not_before_unix,
            not_after: c.not_after_unix,
            names: c.names,
            issuer_generation: c.issuer_generation,
        }),
        Kind::CertificateRevoked(r) => Event::CertificateRevoked(dom::CertificateRevoked {
            serial: serial(&r.serial)?,
            reason: dom::RevocationReason::from_code(r.reason)?,
            revoked_at: r.revoked_at_unix,
            requester: r.requester,
            invalidity_date: (r.invalidity_date_unix != 0).then_some(r.invalidity_date_unix),
        }),
        Kind::CrlPublished(c) => Event::CrlPublished(dom::CrlPublished {
            number: c.number,
            this_update: c.this_update_unix,
            next_update: c.next_update_unix,
            delta_base: (c.delta_base != 0).then_some(c.delta_base),
            issuer_generation: c.issuer_generation,
            der_sha256: match c.der_sha256.len() {
                0 => None,
                _ => Some(
                    <ca_core::chain::Hash>::try_from(c.der_sha256.as_slice())
                        .map_err(|_| Error::InvalidEvent("CRL digest is not 32 bytes".into()))?,
                ),
            },
        }),
        Kind::AccountRegistered(x) => Event::AccountRegistered(x.try_into()?),
        Kind::AccountUpdated(x) => Event::AccountUpdated(x.try_into()?),
        Kind::AccountKeyChanged(x) => Event::AccountKeyChanged(x.try_into()?),
        Kind::AccountDeactivated(x) => Event::AccountDeactivated(x.try_into()?),
        Kind::OrderCreated(x) => Event::OrderCreated(x.try_into()?),
        Kind::ChallengeStarted(x) => Event::ChallengeStarted(x.try_into()?),
        Kind::AuthorizationValidated(x) => Event::AuthorizationValidated(x.try_into()?),
        Kind::AuthorizationInvalidated(x) => Event::AuthorizationInvalidated(x.try_into()?),
        Kind::AuthorizationDeactivated(x) => Event::AuthorizationDeactivated(x.try_into()?),
        Kind::OrderFinalized(x) => Event::OrderFinalized(x.try_into()?),
        Kind::EabKeyCreated(x) => Event::EabKeyCreated(x.try_into()?),
        Kind::EabKeyRevoked(x) => Event::EabKeyRevoked(x.try_into()?),
        Kind::RenewalWindowSet(x) => Event::RenewalWindowSet(x.try_into()?),
        Kind::IssuingCaRotated(r) => Event::IssuingCaRotated(dom::IssuingCaRotated {
            generation: r.generation,
            certificate_der: r.certificate_der,
            key_ref: r.key_ref,
        }),
        Kind::AccessDenials(d) => Event::AccessDenials(dom::AccessDenials {
            window_start: d.window_start_unix,
            window_end: d.window_end_unix,
            entries: d
                .entries
                .into_iter()
                .map(|c| dom::DenialCount {
                    identity: c.identity,
                    rule: c.rule,
                    method: c.method,
                    count: c.count,
                })
                .collect(),
            others: d.others,
        }),
    })
}

/// A certificate's API view: the issuance record plus its revocation, if any.
pub fn certificate_info(
    c: &dom::CertificateIssued,
    revoked: Option<&ca_core::projection::RevokedEntry>,
    now: ca_core::UnixSeconds,
) -> v1::CertificateInfo {
    let status = match revoked {
        Some(_) => v1::CertificateStatus::Revoked,
        None if c.not_after < now => v1::CertificateStatus::Expired,
        None => v1::CertificateStatus::Valid,
    };
    v1::CertificateInfo {
        serial: c.serial.to_hex(),
        certificate_der: c.certificate_der.clone(),
        profile: c.profile.clone(),
        requester: c.requester.clone(),
        not_before_unix: c.not_before,
        not_after_unix: c.not_after,
        status: status as i32,
        revoked_at_unix: revoked.map_or(0, |r| r.revoked_at),
        revocation_reason: revoked.map_or(0, |r| reason_to_proto(r.reason) as i32),
        names: c.names.clone(),
        issuer_generation: c.issuer_generation,
    }
}

/// A stored log record as streamed by `WatchEvents`: the event is decoded from the exact
/// stored bytes, not re-encoded from the domain form.
pub fn log_record(
    seq: u64,
    prev_hash: &[u8; 32],
    hash: &[u8; 32],
    recorded_at_micros: i64,
    event_bytes: &[u8],
) -> Result<v1::LogRecord, Error> {
    let event =
        v1::Event::decode(event_bytes).map_err(|e| Error::InvalidEvent(format!("record {seq}: {e}")))?;
    Ok(v1::LogRecord {
        seq,
        prev_hash: prev_hash.to_vec(),
        hash: hash.to_vec(),
        recorded_at_unix_micros: recorded_at_micros,
        event: Some(event),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let s = Serial::from_hex("0102").unwrap();
        let events = vec![
            Event::CertificateIssued(dom::CertificateIssued {
                serial: s.clone(),
                certificate_der: vec![1, 2, 3],
                profile: "server".into(),
                requester: "grpc:1.2.3.4".into(),
                not_before: 10,
                not_after: 20,
                names: vec!["a.internal".into()],
                issuer_generation: 2,
            }),
            Event::CertificateRevoked(dom::CertificateRevoked {
                serial: s.clone(),
                reason: dom::RevocationReason::KeyCompromise,
                revoked_at: 30,
                requester: "cli".into(),
                invalidity_date: Some(25),
            }),
            Event::CrlPublished(dom::CrlPublished {
                number: 3,
                this_update: 1,
                next_update: 2,
                delta_base: Some(2),
                issuer_generation: 1,
                der_sha256: Some([7; 32]),
            }),
        ];
        let rotated = Event::IssuingCaRotated(dom::IssuingCaRotated {
            generation: 2,
            certificate_der: vec![0x30, 0],
            key_ref: "issuing-2.key".into(),
        });
        let denials = Event::AccessDenials(dom::AccessDenials {
            window_start: 100,
            window_end: 160,
            entries: vec![dom::DenialCount {
                identity: "spiffe://corp/w".into(),
                rule: "default rule".into(),
                method: "Revoke".into(),
                count: 4,
            }],
            others: 9,
        });
        let events = events.into_iter().chain([rotated, denials]).chain(acme_samples(&s));
        for e in events {
            assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
            // The lean index decoder agrees with the full decode on every kind.
            assert_eq!(decode_event_index(&encode_event(&e)).unwrap(), IndexEvent::of(&e));
        }
        assert!(decode_event(&[0xff, 0xff]).is_err());
        assert!(decode_event(&[]).is_err(), "an empty event has no kind");
    }

    /// One of every ACME event, with every optional field set.
    fn acme_samples(s: &Serial) -> Vec<Event> {
        use dom::Identifier;
        vec![
            Event::AccountRegistered(dom::AccountRegistered {
                account_id: "a".into(),
                jwk_json: br#"{"kty":"OKP"}"#.to_vec(),
                thumbprint: "tp".into(),
                contact: vec!["mailto:x@y.test".into()],
                terms_of_service_agreed: true,
                eab_kid: Some("kid".into()),
                created_at: 5,
            }),
            Event::AccountUpdated(dom::AccountUpdated { account_id: "a".into(), contact: vec![] }),
            Event::AccountKeyChanged(dom::AccountKeyChanged {
                account_id: "a".into(),
                jwk_json: b"{}".to_vec(),
                old_thumbprint: "tp".into(),
                new_thumbprint: "tp2".into(),
            }),
            Event::AccountDeactivated(dom::AccountDeactivated { account_id: "a".into() }),
            Event::OrderCreated(dom::OrderCreated {
                order_id: "o".into(),
                account_id: "a".into(),
                identifiers: vec![Identifier::Dns("*.x.test".into()), Identifier::Ip("::1".parse().unwrap())],
                authz_ids: vec!["z1".into(), "z2".into()],
                new_authorizations: vec![dom::NewAuthorization {
                    authz_id: "z1".into(),
                    identifier: Identifier::Dns("x.test".into()),
                    wildcard: true,
                    expires: 100,
                    token: "tok".into(),
                }],
                expires: 50,
                not_before: Some(1),
                not_after: Some(2),
                profile: "server".into(),
                replaces: Some(s.clone()),
                created_at: 3,
            }),
            Event::ChallengeStarted(dom::ChallengeStarted {
                authz_id: "z1".into(),
                challenge_type: "dns-01".into(),
            }),
            Event::AuthorizationValidated(dom::AuthorizationValidated {
                authz_id: "z1".into(),
                challenge_type: "http-01".into(),
                address: Some("127.0.0.1:80".into()),
                validated_at: 9,
                expires: 99,
            }),
            Event::AuthorizationInvalidated(dom::AuthorizationInvalidated {
                authz_id: "z2".into(),
                challenge_type: "tls-alpn-01".into(),
                error_type: "urn:ietf:params:acme:error:tls".into(),
                detail: "no ALPN".into(),
                at: 10,
            }),
            Event::AuthorizationDeactivated(dom::AuthorizationDeactivated { authz_id: "z1".into() }),
            Event::OrderFinalized(dom::OrderFinalized { order_id: "o".into(), serial: s.clone() }),
            Event::EabKeyCreated(dom::EabKeyCreated {
                kid: "kid".into(),
                name: "team-a".into(),
                allowed_dns: vec![".a.internal".into()],
                allowed_ips: vec!["10.0.0.0/8".into()],
                profiles: vec!["server".into()],
                created_at: 4,
            }),
            Event::EabKeyRevoked(dom::EabKeyRevoked { kid: "kid".into() }),
            Event::RenewalWindowSet(dom::RenewalWindowSet {
                serial: s.clone(),
                start: 1,
                end: 2,
                requester: "cli".into(),
            }),
        ]
    }

    #[test]
    fn the_index_decode_reads_what_the_full_decode_reads() {
        let s = Serial::from_hex("00f1").unwrap();
        let events = vec![
            Event::CaInitialized(dom::CaInitialized {
                root_der: vec![1],
                intermediate_der: vec![2],
                key_algorithm: KeyAlgorithm::Ed25519,
                imported: true,
            }),
            Event::CertificateIssued(dom::CertificateIssued {
                serial: s.clone(),
                certificate_der: vec![0x30; 600],
                profile: "server".into(),
                requester: "grpc:1.2.3.4".into(),
                not_before: -10,
                not_after: -20,
                names: vec!["a.internal".into(), "b.internal".into()],
                issuer_generation: 7,
            }),
            Event::IssuingCaRotated(dom::IssuingCaRotated {
                generation: 7,
                certificate_der: vec![0x30, 1],
                key_ref: "issuing-7.key".into(),
            }),
            // An invalidity date of 0 and a delta base of 0 read back as none.
            Event::CertificateRevoked(dom::CertificateRevoked {
                serial: s.clone(),
                reason: dom::RevocationReason::AaCompromise,
                revoked_at: 30,
                requester: "cli".into(),
                invalidity_date: Some(0),
            }),
            Event::CrlPublished(dom::CrlPublished {
                number: 3,
                this_update: 1,
                next_update: 2,
                delta_base: Some(0),
                issuer_generation: 3,
                der_sha256: None,
            }),
            Event::CrlPublished(dom::CrlPublished {
                number: 4,
                this_update: 1,
                next_update: 2,
                delta_base: Some(3),
                issuer_generation: 0,
                der_sha256: Some(ca_core::chain::sha256(b"crl")),
            }),
        ];
        let events = events.into_iter().chain(acme_samples(&s));
        for e in events {
            let bytes = encode_event(&e);
            let full = IndexEvent::of(&decode_event(&bytes).unwrap());
            assert_eq!(decode_event_index(&bytes).unwrap(), full, "{e:?}");
        }
        let deactivated = Event::AccountDeactivated(dom::AccountDeactivated { account_id: "a".into() });
        assert_eq!(
            decode_event_index(&encode_event(&deactivated)).unwrap(),
            IndexEvent::Acme(vec![ca_core::acme::index::AcmeKey::Account("a".into())])
        );
        for bad in [
            &[][..],
            &[0xff, 0xff],
            &[0x12, 0x00],
            &[0x12, 0x03, 0x0a, 0x01, 0x05],
            &[0x12, 0x02, 0x10, 0x01],
        ] {
            assert_eq!(decode_event_index(bad).is_err(), decode_event(bad).is_err(), "{bad:02x?}");
        }
    }
}
