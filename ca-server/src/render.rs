//! JSON rendering of log records for `ca-server events` and `client watch`.

use ca_core::Event;
use serde_json::{Value, json};

pub fn event_json(e: &Event) -> Value {
    match e {
        Event::CaInitialized(c) => json!({
            "kind": e.kind(),
            "key_algorithm": c.key_algorithm.name(),
            "imported": c.imported,
            "root_sha256": sha256_hex(&c.root_der),
            "intermediate_sha256": sha256_hex(&c.intermediate_der),
        }),
        Event::CertificateIssued(c) => json!({
            "kind": e.kind(),
            "serial": c.serial.to_hex(),
            "profile": c.profile,
            "requester": c.requester,
            "not_before": c.not_before,
            "not_after": c.not_after,
            "names": c.names,
            "issuer_generation": c.issuer_generation,
            "certificate_sha256": sha256_hex(&c.certificate_der),
        }),
        Event::CertificateRevoked(r) => json!({
            "kind": e.kind(),
            "serial": r.serial.to_hex(),
            "reason": r.reason.name(),
            "revoked_at": r.revoked_at,
            "requester": r.requester,
            "invalidity_date": r.invalidity_date,
        }),
        Event::CrlPublished(c) => json!({
            "kind": e.kind(),
            "number": c.number,
            "this_update": c.this_update,
            "next_update": c.next_update,
            "delta_base": c.delta_base,
            "issuer_generation": c.issuer_generation,
            "der_sha256": c.der_sha256.map(hex::encode),
        }),
        Event::AccountRegistered(a) => json!({
            "kind": e.kind(),
            "account": a.account_id,
            "thumbprint": a.thumbprint,
            "contact": a.contact,
            "terms_of_service_agreed": a.terms_of_service_agreed,
            "eab_kid": a.eab_kid,
            "created_at": a.created_at,
        }),
        Event::AccountUpdated(a) => {
            json!({ "kind": e.kind(), "account": a.account_id, "contact": a.contact })
        }
        Event::AccountKeyChanged(a) => json!({
            "kind": e.kind(),
            "account": a.account_id,
            "old_thumbprint": a.old_thumbprint,
            "new_thumbprint": a.new_thumbprint,
        }),
        Event::AccountDeactivated(a) => json!({ "kind": e.kind(), "account": a.account_id }),
        Event::OrderCreated(o) => json!({
            "kind": e.kind(),
            "order": o.order_id,
            "account": o.account_id,
            "identifiers": o.identifiers.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            "authorizations": o.authz_ids,
            "new_authorizations": o.new_authorizations.iter().map(|a| a.authz_id.clone()).collect::<Vec<_>>(),
            "expires": o.expires,
            "not_before": o.not_before,
            "not_after": o.not_after,
            "profile": o.profile,
            "replaces": o.replaces.as_ref().map(|s| s.to_hex()),
        }),
        Event::ChallengeStarted(c) => {
            json!({ "kind": e.kind(), "authz": c.authz_id, "challenge": c.challenge_type })
        }
        Event::AuthorizationValidated(a) => json!({
            "kind": e.kind(),
            "authz": a.authz_id,
            "challenge": a.challenge_type,
            "address": a.address,
            "validated_at": a.validated_at,
            "expires": a.expires,
        }),
        Event::AuthorizationInvalidated(a) => json!({
            "kind": e.kind(),
            "authz": a.authz_id,
            "challenge": a.challenge_type,
            "error": a.error_type,
            "detail": a.detail,
        }),
        Event::AuthorizationDeactivated(a) => json!({ "kind": e.kind(), "authz": a.authz_id }),
        Event::OrderFinalized(o) => {
            json!({ "kind": e.kind(), "order": o.order_id, "serial": o.serial.to_hex() })
        }
        Event::EabKeyCreated(k) => json!({
            "kind": e.kind(),
            "kid": k.kid,
            "name": k.name,
            "allowed_dns": k.allowed_dns,
            "allowed_ips": k.allowed_ips,
            "profiles": k.profiles,
            "created_at": k.created_at,
        }),
        Event::EabKeyRevoked(k) => json!({ "kind": e.kind(), "kid": k.kid }),
        Event::RenewalWindowSet(r) => json!({
            "kind": e.kind(),
            "serial": r.serial.to_hex(),
            "start": r.start,
            "end": r.end,
            "requester": r.requester,
        }),
        Event::IssuingCaRotated(r) => json!({
            "kind": e.kind(),
            "generation": r.generation,
            "key_ref": r.key_ref,
            "certificate_sha256": sha256_hex(&r.certificate_der),
        }),
        Event::AccessDenials(d) => json!({
            "kind": e.kind(),
            "window_start": d.window_start,
            "window_end": d.window_end,
            "entries": d.entries.iter().map(|c| json!({
                "identity": c.identity,
                "rule": c.rule,
                "method": c.method,
                "count": c.count,
            })).collect::<Vec<_>>(),
            "others": d.others,
        }),
    }
}

pub fn record_json(seq: u64, prev_hash: &[u8], hash: &[u8], recorded_at_micros: i64, e: &Event) -> Value {
    json!({
        "seq": seq,
        "prev_hash": hex::encode(prev_hash),
        "hash": hex::encode(hash),
        "recorded_at_micros": recorded_at_micros,
        "event": event_json(e),
    })
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ca_core::chain::sha256(b))
}
