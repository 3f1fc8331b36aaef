//! The event log's decoders, as replay, `WatchEvents` and the projections run them:
//! [`decode_event`] (prost, then the domain checks) and [`decode_event_index`] (the lean
//! wire scanner for the hot kinds). The scanner is documented to agree with the full
//! decoder on every input, so any disagreement is a finding; so is an event that does not
//! survive encode then decode.

use ca_core::projection::IndexEvent;
use ca_proto::convert::{decode_event, decode_event_index, encode_event};

pub fn run(data: &[u8]) {
    let full = decode_event(data);
    let index = decode_event_index(data);
    match (&full, &index) {
        (Ok(e), Ok(ix)) => assert_eq!(&IndexEvent::of(e), ix, "lean decoder differs for {e:?}"),
        (Err(_), Err(_)) => {}
        (Ok(e), Err(err)) => panic!("decode_event accepts {e:?}, decode_event_index refuses: {err}"),
        (Err(err), Ok(ix)) => panic!("decode_event refuses ({err}), decode_event_index accepts {ix:?}"),
    }
    if let Ok(e) = full {
        let bytes = encode_event(&e);
        match decode_event(&bytes) {
            Ok(again) => assert_eq!(again, e, "encode/decode does not round-trip"),
            Err(err) => panic!("an encoded event does not decode: {err} ({e:?})"),
        }
        assert_eq!(decode_event_index(&bytes).ok(), Some(IndexEvent::of(&e)));
    }
}
