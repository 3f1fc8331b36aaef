//! Inputs the fuzz targets (`fuzz/`, target `event`) found, as bytes: each must decode the
//! same through both decoders and survive encode then decode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use ca_core::projection::IndexEvent;
use ca_proto::convert::{decode_event, decode_event_index, encode_event};

fn round_trips(bytes: &[u8]) -> ca_core::Event {
    let e = decode_event(bytes).unwrap();
    assert_eq!(decode_event_index(bytes).unwrap(), IndexEvent::of(&e));
    let again = encode_event(&e);
    assert_eq!(decode_event(&again).unwrap(), e);
    assert_eq!(decode_event_index(&again).unwrap(), IndexEvent::of(&e));
    e
}

/// `OrderFinalized` with serial `00 00 00 04 05 06 07 08`: `Serial::from_bytes` dropped one
/// zero byte per decode, so each re-encode changed the serial.
#[test]
fn a_serial_with_leading_zero_bytes_is_one_number() {
    let bytes = [
        0x5a, 0x10, 0x0a, 0x04, 0x6f, 0x72, 0x64, 0x31, 0x12, 0x08, 0x00, 0x00, 0x00, 0x04, 0x05, 0x06, 0x07,
        0x08,
    ];
    match round_trips(&bytes) {
        ca_core::Event::OrderFinalized(f) => assert_eq!(f.serial.as_bytes(), &[4, 5, 6, 7, 8]),
        other => panic!("expected OrderFinalized, got {other:?}"),
    }
}

/// `CertificateRevoked` (a hot kind: the lean decoder's path) with serial `00 00 7f ff ...`.
#[test]
fn a_revoked_serial_with_leading_zero_bytes_round_trips() {
    let bytes = [
        0x1a, 0x36, 0x0a, 0x08, 0x00, 0x00, 0x7f, 0xff, 0x05, 0x06, 0x07, 0x08, 0x10, 0x01, 0x18, 0xa0, 0x84,
        0xcb, 0xd5, 0x06, 0x22, 0x1c, 0x61, 0x63, 0x6d, 0x65, 0x3a, 0x61, 0x63, 0x22, 0x0f, 0x61, 0x63, 0x6d,
        0x65, 0x3a, 0x61, 0x63, 0x63, 0x74, 0x3a, 0x41, 0x63, 0x74, 0x3a, 0x41, 0x62, 0x33, 0x64, 0x45, 0x28,
        0xd0, 0xfd, 0xc7, 0xd5, 0x06,
    ];
    match round_trips(&bytes) {
        ca_core::Event::CertificateRevoked(r) => assert_eq!(r.serial.to_hex(), "7fff05060708"),
        other => panic!("expected CertificateRevoked, got {other:?}"),
    }
}
