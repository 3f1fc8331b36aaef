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
        }),
        other => json!({ "kind": other.kind() }),
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
