//! Byte layouts of every sled key and value this crate writes (documented in the crate
//! docs). Decoders check lengths and return `StoreError::Corrupt` instead of panicking.

use ca_core::Serial;
use ca_core::chain::Hash;
use ca_core::event::RevocationReason;
use ca_core::projection::{CertEntry, RevokedEntry};

use crate::StoreError;

/// Bytes before the event in a `log` value: prev_hash(32) || hash(32) || recorded_at(8).
pub(crate) const LOG_HEADER_LEN: usize = 72;

/// Bumped when a layout below changes incompatibly; kept in `meta` under [`META_FORMAT`].
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_PROJECTED_THROUGH: &[u8] = b"projected_through";
pub(crate) const META_CA_SEQ: &[u8] = b"ca_seq";
pub(crate) const META_LAST_CRL: &[u8] = b"last_crl_number";

/// Sentinel for "no invalidity date" in a `revoked` value. The wire format (`ca.v1`) maps
/// 0 to "absent" as well, so no decoded event can carry `Some(0)`: the sentinel is exact.
const NO_INVALIDITY: i64 = 0;

pub(crate) fn log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// `expected` names the record in errors (the key itself is what failed to parse).
pub(crate) fn parse_log_key(key: &[u8], expected: u64) -> Result<u64, StoreError> {
    be_u64(key).ok_or_else(|| StoreError::Corrupt {
        seq: expected,
        detail: format!("log key has {} bytes, expected 8", key.len()),
    })
}

pub(crate) fn log_value(prev: &Hash, hash: &Hash, recorded_at_micros: i64, event: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(LOG_HEADER_LEN + event.len());
    v.extend_from_slice(prev);
    v.extend_from_slice(hash);
    v.extend_from_slice(&recorded_at_micros.to_be_bytes());
    v.extend_from_slice(event);
    v
}

/// A `log` value split into its parts (borrowing the event bytes).
pub(crate) struct LogValue<'a> {
    pub prev_hash: Hash,
    pub hash: Hash,
    pub recorded_at_micros: i64,
    pub event: &'a [u8],
}

pub(crate) fn parse_log_value(seq: u64, v: &[u8]) -> Result<LogValue<'_>, StoreError> {
    if v.len() < LOG_HEADER_LEN {
        return Err(StoreError::Corrupt {
            seq,
            detail: format!("log value has {} bytes, shorter than its {LOG_HEADER_LEN}-byte header", v.len()),
        });
    }
    let (prev, rest) = v.split_at(32);
    let (hash, rest) = rest.split_at(32);
    let (at, event) = rest.split_at(8);
    Ok(LogValue {
        prev_hash: hash32(prev),
        hash: hash32(hash),
        // Lengths were checked above, so these conversions cannot fail; 0 is unreachable.
        recorded_at_micros: be_i64(at).unwrap_or(0),
        event,
    })
}

/// `certs` value: issued seq u64 BE || not_after i64 BE, then the issuer generation u32 BE
/// when it is not 0 (so values written before rotation existed read as generation 0, and
/// generation 0's entries keep their 16 bytes).
pub(crate) fn cert_value(e: &CertEntry) -> CertValue {
    let mut v = [0u8; 20];
    v[..8].copy_from_slice(&e.seq.to_be_bytes());
    v[8..16].copy_from_slice(&e.not_after.to_be_bytes());
    v[16..].copy_from_slice(&e.issuer.to_be_bytes());
    CertValue { bytes: v, len: if e.issuer == 0 { 16 } else { 20 } }
}

/// An encoded `certs` value (16 or 20 bytes).
pub(crate) struct CertValue {
    bytes: [u8; 20],
    len: usize,
}

impl AsRef<[u8]> for CertValue {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::ops::Deref for CertValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

pub(crate) fn parse_cert_value(serial: &[u8], v: &[u8]) -> Result<CertEntry, StoreError> {
    let issuer = match v.len() {
        16 => Some(0),
        20 => v.get(16..).and_then(be_u32).filter(|g| *g != 0),
        _ => None,
    };
    match (issuer, v.get(..8).and_then(be_u64), v.get(8..16).and_then(be_i64)) {
        (Some(issuer), Some(seq), Some(not_after)) => Ok(CertEntry { seq, not_after, issuer }),
        _ => Err(index_corrupt("certs", serial, v.len())),
    }
}

/// `issuers` tree key of generation `g`'s rotation record (value: its seq u64 BE).
pub(crate) fn issuer_seq_key(g: u32) -> [u8; 5] {
    let mut k = [b'r'; 5];
    k[1..].copy_from_slice(&g.to_be_bytes());
    k
}

/// `issuers` tree key of generation `g`'s highest full CRL number (value: u64 BE); only
/// for g >= 1 (generation 0's lives in `meta`, where it always did).
pub(crate) fn issuer_crl_key(g: u32) -> [u8; 5] {
    let mut k = [b'c'; 5];
    k[1..].copy_from_slice(&g.to_be_bytes());
    k
}

/// `(kind, generation)` of an `issuers` key.
pub(crate) fn parse_issuer_key(k: &[u8]) -> Result<(u8, u32), StoreError> {
    match (k.first(), k.get(1..).and_then(be_u32)) {
        (Some(&kind @ (b'r' | b'c')), Some(g)) => Ok((kind, g)),
        _ => {
            Err(StoreError::Corrupt { seq: 0, detail: format!("issuers index key {} is malformed", hex(k)) })
        }
    }
}

/// `revoked` value: seq u64 BE || reason code u8 || revoked_at i64 BE || invalidity i64 BE
/// (0 = none).
pub(crate) fn revoked_value(e: &RevokedEntry) -> [u8; 25] {
    let mut v = [0u8; 25];
    v[..8].copy_from_slice(&e.seq.to_be_bytes());
    // RFC 5280 reason codes are 0..=10, so the cast is lossless.
    v[8] = e.reason.code() as u8;
    v[9..17].copy_from_slice(&e.revoked_at.to_be_bytes());
    v[17..].copy_from_slice(&e.invalidity_date.unwrap_or(NO_INVALIDITY).to_be_bytes());
    v
}

pub(crate) fn parse_revoked_value(serial: &[u8], v: &[u8]) -> Result<RevokedEntry, StoreError> {
    let fields = (
        v.len(),
        v.get(..8).and_then(be_u64),
        v.get(8),
        v.get(9..17).and_then(be_i64),
        v.get(17..).and_then(be_i64),
    );
    let (25, Some(seq), Some(&code), Some(revoked_at), Some(inv)) = fields else {
        return Err(index_corrupt("revoked", serial, v.len()));
    };
    let reason = RevocationReason::from_code(u32::from(code)).map_err(|_| StoreError::Corrupt {
        seq,
        detail: format!("revoked entry for serial {} has unknown reason code {code}", hex(serial)),
    })?;
    Ok(RevokedEntry { seq, reason, revoked_at, invalidity_date: (inv != NO_INVALIDITY).then_some(inv) })
}

/// `expiry` key: not_after with its sign bit flipped, u64 BE (so byte order is numeric
/// order, negatives first) || serial bytes. Sorts exactly like `(UnixSeconds, Serial)`.
pub(crate) fn expiry_key(not_after: i64, serial: &Serial) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + serial.as_bytes().len());
    k.extend_from_slice(&((not_after as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(serial.as_bytes());
    k
}

pub(crate) fn parse_expiry_key(k: &[u8]) -> Result<(i64, Serial), StoreError> {
    let corrupt =
        || StoreError::Corrupt { seq: 0, detail: format!("expiry index key {} is malformed", hex(k)) };
    let not_after = k.get(..8).and_then(be_u64).ok_or_else(corrupt)?;
    let serial = parse_serial(k.get(8..).unwrap_or_default()).map_err(|_| corrupt())?;
    Ok(((not_after ^ (1 << 63)) as i64, serial))
}

/// A serial stored as an index key. Keys were written from valid serials, so anything
/// else means the tree was damaged.
pub(crate) fn parse_serial(bytes: &[u8]) -> Result<Serial, StoreError> {
    match Serial::from_bytes(bytes) {
        Ok(s) if s.as_bytes() == bytes => Ok(s),
        _ => Err(StoreError::Corrupt {
            seq: 0,
            detail: format!("index key {} is not a stored serial", hex(bytes)),
        }),
    }
}

pub(crate) fn be_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

pub(crate) fn be_i64(b: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(b).ok().map(i64::from_be_bytes)
}

pub(crate) fn be_u32(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_be_bytes)
}

fn hash32(b: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(b);
    h
}

fn index_corrupt(tree: &str, serial: &[u8], len: usize) -> StoreError {
    StoreError::Corrupt {
        seq: 0,
        detail: format!("{tree} entry for serial {} has a malformed {len}-byte value", hex(serial)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serial_strategy() -> impl Strategy<Value = Serial> {
        (1u8..=255, proptest::collection::vec(any::<u8>(), 0..19)).prop_map(|(first, rest)| {
            let mut b = vec![first];
            b.extend(rest);
            Serial::from_bytes(&b).expect("1..=20 bytes with a non-zero first byte is a valid serial")
        })
    }

    proptest! {
        #[test]
        fn expiry_keys_sort_like_the_tuple(a in any::<i64>(), sa in serial_strategy(), b in any::<i64>(), sb in serial_strategy()) {
            let (ka, kb) = (expiry_key(a, &sa), expiry_key(b, &sb));
            prop_assert_eq!(ka.cmp(&kb), (a, &sa).cmp(&(b, &sb)));
            prop_assert_eq!(parse_expiry_key(&ka).unwrap(), (a, sa));
        }

        #[test]
        fn index_values_round_trip(seq in any::<u64>(), t in any::<i64>(), inv in proptest::option::of(any::<i64>().prop_filter("0 is the sentinel", |v| *v != 0)), r in 0usize..10) {
            let c = CertEntry { seq, not_after: t, issuer: r as u32 };
            prop_assert_eq!(parse_cert_value(b"s", &cert_value(&c)).unwrap(), c);
            let e = RevokedEntry { seq, reason: RevocationReason::ALL[r], revoked_at: t, invalidity_date: inv };
            prop_assert_eq!(parse_revoked_value(b"s", &revoked_value(&e)).unwrap(), e);
        }

        #[test]
        fn malformed_values_are_errors_not_panics(v in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = parse_log_value(1, &v);
            let _ = parse_log_key(&v, 1);
            let _ = parse_cert_value(b"s", &v);
            let _ = parse_revoked_value(b"s", &v);
            let _ = parse_expiry_key(&v);
        }
    }

    #[test]
    fn short_log_value_is_corrupt() {
        assert!(matches!(parse_log_value(7, &[0u8; 71]), Err(StoreError::Corrupt { seq: 7, .. })));
        let v = log_value(&[1; 32], &[2; 32], -5, b"ev");
        let p = parse_log_value(0, &v).unwrap();
        assert_eq!((p.prev_hash, p.hash, p.recorded_at_micros, p.event), ([1; 32], [2; 32], -5, &b"ev"[..]));
    }

    #[test]
    fn bad_reason_code_is_corrupt() {
        let mut v = revoked_value(&RevokedEntry {
            seq: 3,
            reason: RevocationReason::Superseded,
            revoked_at: 1,
            invalidity_date: None,
        });
        v[8] = 7;
        assert!(matches!(parse_revoked_value(b"s", &v), Err(StoreError::Corrupt { seq: 3, .. })));
    }
}
