//! ACME (RFC 8555) as pure code: the events it records (`event`), the index its projection
//! keeps (`index`), accounts, orders and authorizations folded from those events
//! (`model`), the problem types (`problem`), and request authentication.
//!
//! ACME requests are flattened JSON JWS objects (RFC 7515 7.2.2) signed by the account key.
//! This module parses and verifies them ([`Jws`]), handles the public keys they carry
//! ([`Jwk`], RFC 7517/7518/7638/8037) and checks External Account Bindings ([`EabBinding`],
//! RFC 8555 7.3.4). It does no I/O: nonces, account lookup and body size limits belong to
//! the HTTP layer, which maps [`JwsError`] to ACME problem types.

pub mod ari;
pub mod eab;
pub mod event;
pub mod index;
pub mod jwk;
pub mod jws;
pub mod model;
pub mod problem;

#[cfg(test)]
mod testutil;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

pub use eab::EabBinding;
pub use jwk::{EcCurve, Jwk};
pub use jws::{Jws, JwsError, Protected, SUPPORTED_ALGS};

/// base64url that decodes with or without `=` padding (some clients pad, RFC 7515 says
/// not to) but never emits it.
const B64U: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Unpadded base64url (RFC 7515 section 2 "Base64url Encoding").
pub fn b64u(bytes: impl AsRef<[u8]>) -> String {
    B64U.encode(bytes)
}

/// Decode base64url, padded or unpadded. The standard alphabet (`+`, `/`) and whitespace
/// are rejected.
pub fn b64u_decode(s: &str) -> Result<Vec<u8>, JwsError> {
    B64U.decode(s).map_err(|e| JwsError::Malformed(format!("invalid base64url: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64u_round_trips_and_accepts_padding() {
        assert_eq!(b64u([0xfb, 0xff]), "-_8");
        assert_eq!(b64u_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64u_decode("-_8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64u_decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn b64u_rejects_standard_alphabet_and_junk() {
        for bad in ["+/8", "a b", "A", "-_8==", "*"] {
            assert!(matches!(b64u_decode(bad), Err(JwsError::Malformed(_))), "{bad:?}");
        }
    }
}
