//! `decode_event_index` (the lean decode that replay and rebuild use) against the full
//! decode: for any bytes, it must accept exactly what `decode_event` accepts and return
//! exactly the projection-relevant fields of what `decode_event` returns. Checked on valid
//! events of every kind, on hand-built protobuf that stresses the wire rules (wrong wire
//! types, duplicated and interleaved oneof fields, unknown fields, groups, bad UTF-8,
//! overlong varints, bad lengths), and on random mutations of valid encodings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use ca_core::Event;
use ca_core::Serial;
use ca_core::event::{CaInitialized, CertificateIssued, CertificateRevoked, CrlPublished, RevocationReason};
use ca_core::keys::KeyAlgorithm;
use ca_proto::convert::{IndexEvent, decode_event, decode_event_index, encode_event};
use proptest::prelude::*;

fn same(bytes: &[u8]) -> Result<(), TestCaseError> {
    let full = decode_event(bytes).map(|e| IndexEvent::of(&e));
    let lean = decode_event_index(bytes);
    prop_assert_eq!(
        full.as_ref().ok(),
        lean.as_ref().ok(),
        "bytes {:02x?}: full {:?} lean {:?}",
        bytes,
        full,
        lean
    );
    Ok(())
}

fn serial() -> impl Strategy<Value = Serial> {
    (1u8..=255, proptest::collection::vec(any::<u8>(), 0..19)).prop_map(|(first, mut rest)| {
        rest.insert(0, first);
        Serial::from_bytes(&rest).unwrap()
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9.:-]{1,12}", any::<String>()]
}

fn small_i64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), any::<i64>(), -3i64..3]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            serial(),
            proptest::collection::vec(any::<u8>(), 0..40),
            text(),
            text(),
            small_i64(),
            small_i64(),
            (proptest::collection::vec(text(), 0..3), any::<u32>())
        )
            .prop_map(
                |(serial, der, profile, requester, not_before, not_after, (names, issuer_generation))| {
                    Event::CertificateIssued(CertificateIssued {
                        serial,
                        certificate_der: der,
                        profile,
                        requester,
                        not_before,
                        not_after,
                        names,
                        issuer_generation,
                    })
                }
            ),
        (serial(), 0usize..10, small_i64(), text(), proptest::option::of(small_i64())).prop_map(
            |(serial, r, revoked_at, requester, invalidity_date)| {
                Event::CertificateRevoked(CertificateRevoked {
                    serial,
                    reason: RevocationReason::ALL[r],
                    revoked_at,
                    requester,
                    invalidity_date,
                })
            }
        ),
        (
            any::<u64>(),
            small_i64(),
            small_i64(),
            proptest::option::of(prop_oneof![Just(0u64), any::<u64>()]),
            any::<u32>()
        )
            .prop_map(|(number, this_update, next_update, delta_base, issuer_generation)| {
                Event::CrlPublished(CrlPublished {
                    number,
                    this_update,
                    next_update,
                    delta_base,
                    issuer_generation,
                    der_sha256: None,
                })
            }),
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..20), text()).prop_map(
            |(generation, certificate_der, key_ref)| {
                Event::IssuingCaRotated(ca_core::event::IssuingCaRotated {
                    generation,
                    certificate_der,
                    key_ref,
                })
            }
        ),
        (proptest::collection::vec(any::<u8>(), 0..20), any::<bool>()).prop_map(|(der, imported)| {
            Event::CaInitialized(CaInitialized {
                root_der: der.clone(),
                intermediate_der: der,
                key_algorithm: KeyAlgorithm::EcdsaP256,
                imported,
            })
        }),
        (text(), text(), proptest::collection::vec(text(), 0..2)).prop_map(
            |(account_id, thumbprint, contact)| {
                Event::AccountRegistered(ca_core::event::AccountRegistered {
                    account_id,
                    jwk_json: b"{}".to_vec(),
                    thumbprint,
                    contact,
                    terms_of_service_agreed: false,
                    eab_kid: None,
                    created_at: 0,
                })
            }
        ),
        (text(), serial()).prop_map(|(order_id, serial)| {
            Event::OrderFinalized(ca_core::event::OrderFinalized { order_id, serial })
        }),
    ]
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(tag: u32, wire_type: u8, out: &mut Vec<u8>) {
    varint((u64::from(tag) << 3) | u64::from(wire_type), out);
}

/// One hand-built field: its number, a wire type (not always the right one) and contents.
#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    /// A varint written with `pad` redundant continuation bytes (or an over-long one).
    Overlong(u32, u64, u8),
    Fixed32(u32),
    Fixed64(u32),
    Bytes(u32, Vec<u8>),
    /// A length-delimited field holding nested fields.
    Message(u32, Vec<Field>),
    Group(u32, Vec<Field>),
    /// A 10-byte varint whose last byte is `last` (only 0 and 1 are valid).
    TenBytes(u32, u8),
    /// A length prefix larger than what follows.
    BadLength(u32),
    /// A raw byte (possibly a truncated or invalid tag).
    Raw(u8),
}

fn encode_fields(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        match f {
            Field::Varint(t, v) => {
                key(*t, 0, out);
                varint(*v, out);
            }
            Field::Overlong(t, v, pad) => {
                key(*t, 0, out);
                let mut b = Vec::new();
                varint(*v, &mut b);
                let last = b.pop().unwrap();
                out.extend(b);
                out.push(last | 0x80);
                for _ in 1..*pad {
                    out.push(0x80);
                }
                out.push(0);
            }
            Field::Fixed32(t) => {
                key(*t, 5, out);
                out.extend([1, 2, 3, 4]);
            }
            Field::Fixed64(t) => {
                key(*t, 1, out);
                out.extend([1, 2, 3, 4, 5, 6, 7, 8]);
            }
            Field::Bytes(t, b) => {
                key(*t, 2, out);
                varint(b.len() as u64, out);
                out.extend(b);
            }
            Field::Message(t, inner) => {
                let mut b = Vec::new();
                encode_fields(inner, &mut b);
                key(*t, 2, out);
                varint(b.len() as u64, out);
                out.extend(b);
            }
            Field::Group(t, inner) => {
                key(*t, 3, out);
                encode_fields(inner, out);
                key(*t, 4, out);
            }
            Field::TenBytes(t, last) => {
                key(*t, 0, out);
                out.extend([0xff; 9]);
                out.push(*last);
            }
            Field::BadLength(t) => {
                key(*t, 2, out);
                varint(1_000, out);
                out.extend([1, 2]);
            }
            Field::Raw(b) => out.push(*b),
        }
    }
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Serial-like and string-like contents, valid UTF-8 or not.
        proptest::collection::vec(any::<u8>(), 0..24),
        "[a-z]{0,6}".prop_map(String::into_bytes),
        Just(vec![0x00, 0x01]),
        Just(vec![0xc3, 0x28]),
        Just(vec![0xff]),
    ]
}

fn leaf(tags: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = Field> {
    let t = move || tags.clone();
    prop_oneof![
        // Small values, anything, and values whose low 32 bits are small (uint32 truncates).
        4 => (t(), prop_oneof![0u64..12, any::<u64>(), (0u64..12).prop_map(|v| (1 << 32) | v)])
            .prop_map(|(t, v)| Field::Varint(t, v)),
        1 => (t(), prop_oneof![0u8..3, Just(0x7f), Just(0x80)]).prop_map(|(t, l)| Field::TenBytes(t, l)),
        1 => (t(), 0u64..300, 1u8..11).prop_map(|(t, v, p)| Field::Overlong(t, v, p)),
        1 => t().prop_map(Field::Fixed32),
        1 => t().prop_map(Field::Fixed64),
        4 => (t(), payload()).prop_map(|(t, b)| Field::Bytes(t, b)),
        1 => t().prop_map(Field::BadLength),
        1 => any::<u8>().prop_map(Field::Raw),
    ]
}

/// Fields of a nested message (numbers 1..=9 cover every known field and some unknown).
fn inner_fields() -> impl Strategy<Value = Vec<Field>> {
    let field = leaf(1..=9).prop_recursive(3, 12, 4, |inner| {
        (1u32..=9, proptest::collection::vec(inner, 0..3)).prop_map(|(t, f)| Field::Group(t, f))
    });
    proptest::collection::vec(field, 0..6)
}

/// Top-level fields: mostly the indexed kinds (2, 3, 4), some other kinds and unknowns.
fn event_fields() -> impl Strategy<Value = Vec<Field>> {
    let field = prop_oneof![
        6 => (2u32..=4, inner_fields()).prop_map(|(t, f)| Field::Message(t, f)),
        1 => (prop_oneof![Just(1u32), 5u32..=11], inner_fields()).prop_map(|(t, f)| Field::Message(t, f)),
        1 => (12u32..=40, inner_fields()).prop_map(|(t, f)| Field::Group(t, f)),
        2 => leaf(1..=14),
    ];
    proptest::collection::vec(field, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn valid_events_index_like_their_full_decode(e in event()) {
        let bytes = encode_event(&e);
        same(&bytes)?;
        prop_assert_eq!(decode_event_index(&bytes).unwrap(), IndexEvent::of(&decode_event(&bytes).unwrap()));
    }

    #[test]
    fn hand_built_protobuf_decodes_alike(fields in event_fields()) {
        let mut bytes = Vec::new();
        encode_fields(&fields, &mut bytes);
        same(&bytes)?;
    }

    #[test]
    fn concatenated_and_partial_events_merge_alike(
        parts in proptest::collection::vec(prop_oneof![
            event().prop_map(|e| encode_event(&e)),
            // A kind with a few valid fields only: merged into the kind before it, if the same.
            (2u32..=4, proptest::collection::vec((1u32..=7, prop_oneof![0u64..12, any::<u64>(), (0u64..12).prop_map(|v| (1 << 32) | v)]), 0..3))
                .prop_map(|(t, fs)| {
                    let inner: Vec<Field> = fs.into_iter().map(|(f, v)| if f == 1 {
                        Field::Bytes(1, vec![1 + (v as u8 % 200)])
                    } else if (t == 2 && matches!(f, 3 | 4 | 7)) || (t == 3 && f == 4) {
                        Field::Bytes(f, b"x".to_vec())
                    } else if t == 2 && f == 2 {
                        Field::Bytes(2, vec![0x30])
                    } else {
                        Field::Varint(f, v)
                    }).collect();
                    let mut b = Vec::new();
                    encode_fields(&[Field::Message(t, inner)], &mut b);
                    b
                }),
        ], 1..5),
    ) {
        same(&parts.concat())?;
    }

    #[test]
    fn mutated_events_decode_alike(
        events in proptest::collection::vec(event(), 1..3),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
    ) {
        // Concatenated encodings merge (or replace) oneof kinds, as the wire format says.
        let mut bytes: Vec<u8> = events.iter().flat_map(encode_event).collect();
        for (at, op, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] ^= byte | 1,
                1 => bytes.truncate(i),
                2 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        same(&bytes)?;
    }
}

#[test]
fn recursion_limit_in_unknown_groups_matches_prost() {
    // Unknown groups nested `depth` deep, at the top level and inside an issuance.
    fn groups(depth: u32) -> Vec<Field> {
        let mut f = Vec::new();
        for _ in 0..depth {
            f = vec![Field::Group(20, f)];
        }
        f
    }
    let issued = encode_event(&common::issued(&common::serial(1), 5));
    for depth in [98, 99, 100, 101] {
        let mut top = issued.clone();
        encode_fields(&groups(depth), &mut top);
        same(&top).unwrap();
        let mut nested = Vec::new();
        encode_fields(
            &[Field::Message(2, [vec![Field::Bytes(1, vec![7])], groups(depth)].concat())],
            &mut nested,
        );
        same(&nested).unwrap();
    }
}

#[test]
fn known_edge_cases() {
    let issued = encode_event(&common::issued(&common::serial(1), 5));
    for bytes in [
        vec![],                                         // no kind
        vec![0x12, 0x00],                               // an issuance without a serial: invalid serial
        vec![0x1a, 0x03, 0x0a, 0x01, 0x05],             // a revocation with reason 0 and serial 05
        vec![0x1a, 0x05, 0x0a, 0x01, 0x05, 0x10, 0x07], // reason 7 is not a reason
        vec![0x22, 0x02, 0x20, 0x00],                   // a CRL with delta_base 0: a full CRL
        vec![0x10, 0x01],                               // field 2 as a varint
        vec![0x12, 0x02, 0x10, 0x01],                   // certificate_der as a varint
    ] {
        same(&bytes).unwrap();
    }
    // Issued then revoked then issued again: the last kind wins, fresh (prost semantics).
    let revoked = encode_event(&common::revoked(&common::serial(2), RevocationReason::Superseded, 9, None));
    same(&[issued.clone(), revoked.clone(), issued.clone()].concat()).unwrap();
    same(&[revoked, issued.clone()].concat()).unwrap();
    // A CaInitialized anywhere falls back to the full decode.
    same(&[encode_event(&common::ca(1)), issued].concat()).unwrap();
}
