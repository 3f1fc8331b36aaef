//! The wire scanner behind [`decode_event_index`](super::decode_event_index). It mirrors prost
//! 0.14's decoding of `ca.v1.Event` rule for rule (see `prost::encoding`): a tag is a varint of
//! at most 32 bits with wire type 0..=5 and field number >= 1; a varint is at most 10 bytes,
//! the 10th at most 1; a length must fit in what remains; a known field must have its type's
//! wire type; an unknown field is skipped, groups included, within prost's recursion limit of
//! 100 (99 inside a nested message); a oneof field of the kind already set merges into it,
//! another kind replaces it; for a singular field the last occurrence wins.

use ca_core::Serial;
use ca_core::event::RevocationReason;

use super::IndexEvent;

pub(super) enum WireError {
    Wire(&'static str),
    Domain(ca_core::Error),
}

pub(super) enum Decoded {
    Index(IndexEvent),
    /// The event holds a field this scanner does not parse: decode it in full.
    NotIndexed,
}

type R<T> = Result<T, WireError>;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;
/// prost's `RECURSION_LIMIT`.
const RECURSION_LIMIT: u32 = 100;

fn wire<T>(what: &'static str) -> R<T> {
    Err(WireError::Wire(what))
}

fn varint(b: &mut &[u8]) -> R<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = b.split_first() else {
            return wire("truncated varint");
        };
        *b = rest;
        if i == 9 && byte > 1 {
            return wire("varint longer than 64 bits");
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    wire("varint longer than 10 bytes")
}

fn key(b: &mut &[u8]) -> R<(u32, u8)> {
    let k = varint(b)?;
    let Ok(k) = u32::try_from(k) else {
        return wire("field key wider than 32 bits");
    };
    let wire_type = (k & 7) as u8;
    if wire_type > FIXED32 {
        return wire("invalid wire type");
    }
    if k >> 3 == 0 {
        return wire("field number 0");
    }
    Ok((k >> 3, wire_type))
}

fn take<'a>(b: &mut &'a [u8], len: u64) -> R<&'a [u8]> {
    match usize::try_from(len).ok().filter(|l| *l <= b.len()) {
        Some(l) => {
            let (head, rest) = b.split_at(l);
            *b = rest;
            Ok(head)
        }
        None => wire("length past the end of the buffer"),
    }
}

fn expect(wire_type: u8, expected: u8) -> R<()> {
    if wire_type == expected { Ok(()) } else { wire("unexpected wire type for a known field") }
}

/// A length-delimited field's contents (bytes, string or message).
fn delimited<'a>(wire_type: u8, b: &mut &'a [u8]) -> R<&'a [u8]> {
    expect(wire_type, LEN)?;
    let len = varint(b)?;
    take(b, len)
}

fn string(wire_type: u8, b: &mut &[u8]) -> R<()> {
    match std::str::from_utf8(delimited(wire_type, b)?) {
        Ok(_) => Ok(()),
        Err(_) => wire("string field is not UTF-8"),
    }
}

fn int(wire_type: u8, b: &mut &[u8]) -> R<u64> {
    expect(wire_type, VARINT)?;
    varint(b)
}

/// prost's `skip_field`; `budget` is its `DecodeContext` recursion count.
fn skip(wire_type: u8, tag: u32, b: &mut &[u8], budget: u32) -> R<()> {
    if budget == 0 {
        return wire("recursion limit reached");
    }
    let len = match wire_type {
        VARINT => varint(b).map(|_| 0)?,
        FIXED64 => 8,
        LEN => varint(b)?,
        START_GROUP => loop {
            let (inner_tag, inner_type) = key(b)?;
            if inner_type == END_GROUP {
                if inner_tag != tag {
                    return wire("unexpected end group tag");
                }
                break 0;
            }
            skip(inner_type, inner_tag, b, budget - 1)?;
        },
        FIXED32 => 4,
        _ => return wire("unexpected end group tag"),
    };
    take(b, len).map(|_| ())
}

#[derive(Default)]
struct Issued<'a> {
    serial: &'a [u8],
    not_after: i64,
    issuer: u32,
}

#[derive(Default)]
struct Revoked<'a> {
    serial: &'a [u8],
    reason: u32,
    revoked_at: i64,
    invalidity_date: i64,
}

#[derive(Default)]
struct Crl {
    number: u64,
    delta_base: u64,
    issuer: u32,
    /// Length of `der_sha256` (only checked: the index does not keep it).
    digest_len: usize,
}

enum Kind<'a> {
    Issued(Issued<'a>),
    Revoked(Revoked<'a>),
    Crl(Crl),
}

/// Fields of a nested message, with prost's recursion count for inside it.
fn fields<'a>(mut b: &'a [u8], mut field: impl FnMut(u32, u8, &mut &'a [u8]) -> R<()>) -> R<()> {
    while !b.is_empty() {
        let (tag, wire_type) = key(&mut b)?;
        field(tag, wire_type, &mut b)?;
    }
    Ok(())
}

const NESTED: u32 = RECURSION_LIMIT - 1;

// `ca.v1.CertificateIssued`: serial 1, certificate_der 2, profile 3, requester 4,
// not_before_unix 5, not_after_unix 6, names 7 (repeated), issuer_generation 8.
fn issued<'a>(body: &'a [u8], m: &mut Issued<'a>) -> R<()> {
    fields(body, |tag, wt, b| {
        match tag {
            1 => m.serial = delimited(wt, b)?,
            2 => {
                delimited(wt, b)?;
            }
            3 | 4 | 7 => string(wt, b)?,
            5 => {
                int(wt, b)?;
            }
            6 => m.not_after = int(wt, b)? as i64,
            // prost decodes a uint32 as the varint truncated to 32 bits.
            8 => m.issuer = int(wt, b)? as u32,
            _ => skip(wt, tag, b, NESTED)?,
        }
        Ok(())
    })
}

// `ca.v1.CertificateRevoked`: serial 1, reason 2 (uint32), revoked_at_unix 3,
// requester 4, invalidity_date_unix 5.
fn revoked<'a>(body: &'a [u8], m: &mut Revoked<'a>) -> R<()> {
    fields(body, |tag, wt, b| {
        match tag {
            1 => m.serial = delimited(wt, b)?,
            // prost decodes a uint32 as the varint truncated to 32 bits.
            2 => m.reason = int(wt, b)? as u32,
            3 => m.revoked_at = int(wt, b)? as i64,
            4 => string(wt, b)?,
            5 => m.invalidity_date = int(wt, b)? as i64,
            _ => skip(wt, tag, b, NESTED)?,
        }
        Ok(())
    })
}

// `ca.v1.CrlPublished`: number 1, this_update_unix 2, next_update_unix 3, delta_base 4,
// issuer_generation 5, der_sha256 6.
fn crl(body: &[u8], m: &mut Crl) -> R<()> {
    fields(body, |tag, wt, b| {
        match tag {
            1 => m.number = int(wt, b)?,
            2 | 3 => {
                int(wt, b)?;
            }
            4 => m.delta_base = int(wt, b)?,
            5 => m.issuer = int(wt, b)? as u32,
            6 => m.digest_len = delimited(wt, b)?.len(),
            _ => skip(wt, tag, b, NESTED)?,
        }
        Ok(())
    })
}

fn serial(bytes: &[u8]) -> R<Serial> {
    // The same check and message as `convert::serial`.
    Serial::from_bytes(bytes)
        .map_err(|_| WireError::Domain(ca_core::Error::InvalidEvent("bad serial in event".into())))
}

pub(super) fn decode<'a>(mut b: &'a [u8]) -> R<Decoded> {
    let mut kind: Option<Kind<'a>> = None;
    while !b.is_empty() {
        let (tag, wt) = key(&mut b)?;
        match tag {
            2 => {
                let body = delimited(wt, &mut b)?;
                match &mut kind {
                    Some(Kind::Issued(m)) => issued(body, m)?,
                    _ => {
                        let mut m = Issued::default();
                        issued(body, &mut m)?;
                        kind = Some(Kind::Issued(m));
                    }
                }
            }
            3 => {
                let body = delimited(wt, &mut b)?;
                match &mut kind {
                    Some(Kind::Revoked(m)) => revoked(body, m)?,
                    _ => {
                        let mut m = Revoked::default();
                        revoked(body, &mut m)?;
                        kind = Some(Kind::Revoked(m));
                    }
                }
            }
            4 => {
                let body = delimited(wt, &mut b)?;
                match &mut kind {
                    Some(Kind::Crl(m)) => crl(body, m)?,
                    _ => {
                        let mut m = Crl::default();
                        crl(body, &mut m)?;
                        kind = Some(Kind::Crl(m));
                    }
                }
            }
            // Any other field (CaInitialized, the ACME kinds, a field this scanner does
            // not know): the full decode is authoritative, so a new kind needs no edit here.
            _ => return Ok(Decoded::NotIndexed),
        }
    }
    let ix = match kind {
        None => {
            return Err(WireError::Domain(ca_core::Error::InvalidEvent("event without a kind".into())));
        }
        Some(Kind::Issued(m)) => IndexEvent::CertificateIssued {
            serial: serial(m.serial)?,
            not_after: m.not_after,
            issuer: m.issuer,
        },
        Some(Kind::Revoked(m)) => IndexEvent::CertificateRevoked {
            serial: serial(m.serial)?,
            reason: RevocationReason::from_code(m.reason).map_err(WireError::Domain)?,
            revoked_at: m.revoked_at,
            invalidity_date: (m.invalidity_date != 0).then_some(m.invalidity_date),
        },
        // The same check and message as the full decode.
        Some(Kind::Crl(m)) if !matches!(m.digest_len, 0 | 32) => {
            return Err(WireError::Domain(ca_core::Error::InvalidEvent("CRL digest is not 32 bytes".into())));
        }
        Some(Kind::Crl(m)) => IndexEvent::CrlPublished {
            number: m.number,
            delta_base: (m.delta_base != 0).then_some(m.delta_base),
            issuer: m.issuer,
        },
    };
    Ok(Decoded::Index(ix))
}
