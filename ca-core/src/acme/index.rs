//! The ACME projection's index: which objects each ACME event belongs to. The store keeps
//! one entry per (object key, record seq); reading an object is reading its records and
//! folding them (`model`). Entries are only ever added, keyed by the record, so replaying
//! a suffix of the log converges and a rebuild is a set comparison.

use crate::Serial;
use crate::acme::event::Identifier;
use crate::event::Event;

/// An object the ACME frontend looks up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AcmeKey {
    /// An account's registration, updates, key changes and deactivation.
    Account(String),
    /// Key thumbprint -> the registrations and key changes that bound or unbound it.
    AccountKey(String),
    /// The orders an account created (for the orders list).
    AccountOrders(String),
    /// (account, authorization identifier) -> orders that created an authorization for it
    /// (for reuse); the identifier in its order form (`dns:*.x` for a wildcard).
    AccountIdentifier(String, String),
    Order(String),
    Authz(String),
    Eab(String),
    /// ARI facts about an issued certificate: orders replacing it, operator windows.
    Cert(Serial),
}

impl AcmeKey {
    fn tag(&self) -> u8 {
        match self {
            AcmeKey::Account(_) => b'a',
            AcmeKey::AccountKey(_) => b'k',
            AcmeKey::AccountOrders(_) => b'o',
            AcmeKey::AccountIdentifier(..) => b'i',
            AcmeKey::Order(_) => b'r',
            AcmeKey::Authz(_) => b'z',
            AcmeKey::Eab(_) => b'e',
            AcmeKey::Cert(_) => b'c',
        }
    }

    /// Prefix-free encoding (a tag, then length-prefixed parts): the store's key for this
    /// object is `encode() ‖ seq_be`, and a prefix scan over `encode()` finds its records.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag()];
        let mut part = |b: &[u8]| {
            // Parts are ids, thumbprints, identifiers and serials: far below 64 KiB.
            let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&b[..usize::from(len)]);
        };
        match self {
            AcmeKey::Account(s)
            | AcmeKey::AccountKey(s)
            | AcmeKey::AccountOrders(s)
            | AcmeKey::Order(s)
            | AcmeKey::Authz(s)
            | AcmeKey::Eab(s) => part(s.as_bytes()),
            AcmeKey::AccountIdentifier(a, i) => {
                part(a.as_bytes());
                part(i.as_bytes());
            }
            AcmeKey::Cert(s) => part(s.as_bytes()),
        }
        out
    }

    /// The prefix under which every key of one kind lies (e.g. all EAB keys).
    pub fn kind_prefix_eab() -> Vec<u8> {
        vec![b'e']
    }

    /// The store's entry for this object and record.
    pub fn entry(&self, seq: u64) -> Vec<u8> {
        let mut k = self.encode();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }
}

/// The authorization identifier key used for reuse lookups: `dns:*.x` for a wildcard.
pub fn identifier_key(base: &Identifier, wildcard: bool) -> String {
    if wildcard { format!("{}:*.{}", base.kind(), base.value()) } else { base.to_string() }
}

/// The objects an event belongs to; empty for the non-ACME kinds.
pub fn keys_of(event: &Event) -> Vec<AcmeKey> {
    match event {
        Event::CaInitialized(_)
        | Event::CertificateIssued(_)
        | Event::CertificateRevoked(_)
        | Event::CrlPublished(_)
        | Event::IssuingCaRotated(_)
        | Event::AccessDenials(_) => vec![],
        Event::AccountRegistered(a) => {
            vec![AcmeKey::Account(a.account_id.clone()), AcmeKey::AccountKey(a.thumbprint.clone())]
        }
        Event::AccountUpdated(a) => vec![AcmeKey::Account(a.account_id.clone())],
        Event::AccountKeyChanged(a) => vec![
            AcmeKey::Account(a.account_id.clone()),
            AcmeKey::AccountKey(a.old_thumbprint.clone()),
            AcmeKey::AccountKey(a.new_thumbprint.clone()),
        ],
        Event::AccountDeactivated(a) => vec![AcmeKey::Account(a.account_id.clone())],
        Event::OrderCreated(o) => {
            let mut k =
                vec![AcmeKey::Order(o.order_id.clone()), AcmeKey::AccountOrders(o.account_id.clone())];
            for a in &o.new_authorizations {
                k.push(AcmeKey::Authz(a.authz_id.clone()));
                k.push(AcmeKey::AccountIdentifier(
                    o.account_id.clone(),
                    identifier_key(&a.identifier, a.wildcard),
                ));
            }
            if let Some(s) = &o.replaces {
                k.push(AcmeKey::Cert(s.clone()));
            }
            k.sort();
            k.dedup();
            k
        }
        Event::ChallengeStarted(c) => vec![AcmeKey::Authz(c.authz_id.clone())],
        Event::AuthorizationValidated(a) => vec![AcmeKey::Authz(a.authz_id.clone())],
        Event::AuthorizationInvalidated(a) => vec![AcmeKey::Authz(a.authz_id.clone())],
        Event::AuthorizationDeactivated(a) => vec![AcmeKey::Authz(a.authz_id.clone())],
        Event::OrderFinalized(o) => vec![AcmeKey::Order(o.order_id.clone())],
        Event::EabKeyCreated(e) => vec![AcmeKey::Eab(e.kid.clone())],
        Event::EabKeyRevoked(e) => vec![AcmeKey::Eab(e.kid.clone())],
        Event::RenewalWindowSet(r) => vec![AcmeKey::Cert(r.serial.clone())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_prefix_free_between_objects() {
        let a = AcmeKey::Account("ab".into()).encode();
        let b = AcmeKey::Account("abc".into()).encode();
        assert!(!b.starts_with(&a), "one account's key must not prefix another's");
        let i1 = AcmeKey::AccountIdentifier("a".into(), "dns:x".into()).encode();
        let i2 = AcmeKey::AccountIdentifier("a".into(), "dns:xy".into()).encode();
        assert!(!i2.starts_with(&i1));
        assert_ne!(AcmeKey::Order("x".into()).encode(), AcmeKey::Authz("x".into()).encode());
        let e = AcmeKey::Eab("k".into()).entry(7);
        assert!(e.starts_with(&AcmeKey::kind_prefix_eab()));
        assert_eq!(&e[e.len() - 8..], &7u64.to_be_bytes());
    }
}
