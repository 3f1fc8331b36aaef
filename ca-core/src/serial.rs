//! Certificate serial numbers.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// A positive certificate serial number as its big-endian magnitude bytes (no leading zero
/// octet). Printed and parsed as lowercase hex, which is the API's and the CLI's form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial with 126 bits of entropy: 16 bytes, top bit clear so the
    /// INTEGER is positive without a padding octet, first byte non-zero so the encoding
    /// stays 16 bytes (CA/B requires at least 64 bits of CSPRNG output).
    pub fn random(rng: &SystemRandom) -> Result<Self, Error> {
        let mut b = [0u8; 16];
        rng.fill(&mut b).map_err(|_| Error::Key("system random source failed".into()))?;
        b[0] &= 0x7f;
        if b[0] == 0 {
            b[0] = 1;
        }
        Ok(Serial(b.to_vec()))
    }

    /// From big-endian bytes as found in a certificate. Every leading 0x00 is dropped (the
    /// DER sign octet, a client's padding) so that one number has one `Serial`; zero is a
    /// single 0x00 byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
        let trimmed = &bytes[first..];
        if trimmed.is_empty() || trimmed.len() > 20 {
            return Err(Error::BadSerial(hex::encode(bytes)));
        }
        Ok(Serial(trimmed.to_vec()))
    }

    /// Parse lowercase or uppercase hex, with or without `:` separators.
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let cleaned: String = s.trim().chars().filter(|c| *c != ':').collect();
        let cleaned = if cleaned.len() % 2 == 1 { format!("0{cleaned}") } else { cleaned };
        let bytes = hex::decode(&cleaned).map_err(|_| Error::BadSerial(s.to_string()))?;
        Self::from_bytes(&bytes).map_err(|_| Error::BadSerial(s.to_string()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_16_bytes_and_distinct() {
        let rng = SystemRandom::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = Serial::random(&rng).unwrap();
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] != 0 && s.as_bytes()[0] & 0x80 == 0);
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn hex_round_trip_and_sign_octet() {
        let s = Serial::from_hex("7f:01:AB").unwrap();
        assert_eq!(s.to_hex(), "7f01ab");
        assert_eq!(Serial::from_bytes(&[0, 0x80]).unwrap().to_hex(), "80");
        assert!(Serial::from_hex("zz").is_err());
        assert!(Serial::from_hex("").is_err());
        assert!(Serial::from_hex(&"ab".repeat(21)).is_err());
    }

    /// Fuzzing regression (fuzz target `event`): a serial with two leading zero bytes kept
    /// one of them, so the same number had two `Serial`s.
    #[test]
    fn leading_zero_bytes_all_drop_and_zero_stays_zero() {
        let one = Serial::from_bytes(&[1, 0, 5]).unwrap();
        assert_eq!(Serial::from_bytes(&[0, 0, 1, 0, 5]).unwrap(), one);
        assert_eq!(Serial::from_bytes(&[0, 0, 0, 1, 0, 5]).unwrap().as_bytes(), &[1, 0, 5]);
        assert_eq!(Serial::from_hex("0000010005").unwrap(), one);
        assert_eq!(Serial::from_bytes(&[0, 0]).unwrap().as_bytes(), &[0]);
        assert_eq!(Serial::from_bytes(&[0]).unwrap().as_bytes(), &[0]);
        assert!(Serial::from_bytes(&[]).is_err());
        let mut padded = vec![0u8; 3];
        padded.extend([0x7f; 20]);
        assert_eq!(Serial::from_bytes(&padded).unwrap().as_bytes(), &[0x7f; 20]);
        assert!(Serial::from_bytes(&[0x7f; 21]).is_err());
    }
}
