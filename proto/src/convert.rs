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

fn serial(bytes: &[u8]) -> Result<Serial, Error> {
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
        }),
        Event::AccountRegistered { account_id, jwk_json, contact } => {
            Kind::AccountRegistered(v1::AccountRegistered {
                account_id: account_id.clone(),
                jwk_json: jwk_json.clone(),
                contact: contact.clone(),
            })
        }
        Event::AccountKeyChanged { account_id, jwk_json } => Kind::AccountKeyChanged(v1::AccountKeyChanged {
            account_id: account_id.clone(),
            jwk_json: jwk_json.clone(),
        }),
        Event::AccountDeactivated { account_id } => {
            Kind::AccountDeactivated(v1::AccountDeactivated { account_id: account_id.clone() })
        }
        Event::OrderCreated { order_id, account_id, identifiers } => Kind::OrderCreated(v1::OrderCreated {
            order_id: order_id.clone(),
            account_id: account_id.clone(),
            identifiers: identifiers.clone(),
        }),
        Event::AuthorizationValidated { authz_id, challenge_type } => {
            Kind::AuthorizationValidated(v1::AuthorizationValidated {
                authz_id: authz_id.clone(),
                challenge_type: challenge_type.clone(),
            })
        }
        Event::AuthorizationInvalidated { authz_id, detail } => {
            Kind::AuthorizationInvalidated(v1::AuthorizationInvalidated {
                authz_id: authz_id.clone(),
                detail: detail.clone(),
            })
        }
        Event::OrderFinalized { order_id, serial } => Kind::OrderFinalized(v1::OrderFinalized {
            order_id: order_id.clone(),
            serial: serial.as_bytes().to_vec(),
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
        }),
        Kind::AccountRegistered(a) => {
            Event::AccountRegistered { account_id: a.account_id, jwk_json: a.jwk_json, contact: a.contact }
        }
        Kind::AccountKeyChanged(a) => {
            Event::AccountKeyChanged { account_id: a.account_id, jwk_json: a.jwk_json }
        }
        Kind::AccountDeactivated(a) => Event::AccountDeactivated { account_id: a.account_id },
        Kind::OrderCreated(o) => {
            Event::OrderCreated { order_id: o.order_id, account_id: o.account_id, identifiers: o.identifiers }
        }
        Kind::AuthorizationValidated(a) => {
            Event::AuthorizationValidated { authz_id: a.authz_id, challenge_type: a.challenge_type }
        }
        Kind::AuthorizationInvalidated(a) => {
            Event::AuthorizationInvalidated { authz_id: a.authz_id, detail: a.detail }
        }
        Kind::OrderFinalized(o) => Event::OrderFinalized { order_id: o.order_id, serial: serial(&o.serial)? },
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
            }),
            Event::OrderFinalized { order_id: "o".into(), serial: s },
        ];
        for e in events {
            assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
        }
        assert!(decode_event(&[0xff, 0xff]).is_err());
        assert!(decode_event(&[]).is_err(), "an empty event has no kind");
    }
}
