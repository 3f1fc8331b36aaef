//! Projections as pure folds over the log. [`IndexEvent::of`] is the one place that says
//! what each event kind contributes to the projections; [`Inventory`] (tests, offline
//! tools, read replicas fed by `WatchEvents`) and the storage crate's persisted trees both
//! fold `IndexEvent`s, so a new event kind is handled once and the compiler pushes it
//! through every projection.

use std::collections::{BTreeMap, BTreeSet};

use crate::acme::index::{AcmeKey, keys_of};
use crate::event::{CaInitialized, Event, RevocationReason};
use crate::{Error, Serial, UnixSeconds};

/// What the projections read from one event, in domain form. The storage crate's lean
/// decoder produces the same values without decoding whole events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEvent {
    /// The CA lives in its record; projections keep its seq.
    CaInitialized,
    CertificateIssued {
        serial: Serial,
        not_after: UnixSeconds,
        issuer: u32,
    },
    CertificateRevoked {
        serial: Serial,
        reason: RevocationReason,
        revoked_at: UnixSeconds,
        invalidity_date: Option<UnixSeconds>,
    },
    CrlPublished {
        number: u64,
        delta_base: Option<u64>,
        issuer: u32,
    },
    /// A new issuing CA; projections keep its record's seq by generation.
    IssuingCaRotated {
        generation: u32,
    },
    /// An ACME event: the objects it belongs to.
    Acme(Vec<AcmeKey>),
    /// An audit record no projection reads.
    Audit,
}

impl IndexEvent {
    /// The projection-relevant part of an event. Exhaustive on purpose.
    pub fn of(e: &Event) -> IndexEvent {
        match e {
            Event::CaInitialized(_) => IndexEvent::CaInitialized,
            Event::CertificateIssued(c) => IndexEvent::CertificateIssued {
                serial: c.serial.clone(),
                not_after: c.not_after,
                issuer: c.issuer_generation,
            },
            Event::CertificateRevoked(r) => IndexEvent::CertificateRevoked {
                serial: r.serial.clone(),
                reason: r.reason,
                revoked_at: r.revoked_at,
                invalidity_date: r.invalidity_date,
            },
            Event::CrlPublished(c) => IndexEvent::CrlPublished {
                number: c.number,
                delta_base: c.delta_base,
                issuer: c.issuer_generation,
            },
            Event::IssuingCaRotated(r) => IndexEvent::IssuingCaRotated { generation: r.generation },
            Event::AccessDenials(_) => IndexEvent::Audit,
            Event::AccountRegistered(_)
            | Event::AccountUpdated(_)
            | Event::AccountKeyChanged(_)
            | Event::AccountDeactivated(_)
            | Event::OrderCreated(_)
            | Event::ChallengeStarted(_)
            | Event::AuthorizationValidated(_)
            | Event::AuthorizationInvalidated(_)
            | Event::AuthorizationDeactivated(_)
            | Event::OrderFinalized(_)
            | Event::EabKeyCreated(_)
            | Event::EabKeyRevoked(_)
            | Event::RenewalWindowSet(_) => IndexEvent::Acme(keys_of(e)),
        }
    }
}

/// What the certificate index holds per serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertEntry {
    /// Sequence number of the `CertificateIssued` record (the certificate lives there).
    pub seq: u64,
    pub not_after: UnixSeconds,
    /// Generation of the issuing CA that signed it (0 for `CaInitialized`'s).
    pub issuer: u32,
}

/// What the revoked set holds per serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedEntry {
    pub seq: u64,
    pub reason: RevocationReason,
    pub revoked_at: UnixSeconds,
    pub invalidity_date: Option<UnixSeconds>,
}

/// The state every projection is derived from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub ca: Option<CaInitialized>,
    pub certs: BTreeMap<Serial, CertEntry>,
    pub revoked: BTreeMap<Serial, RevokedEntry>,
    /// `(not_after, serial)`: lets CRL building skip expired entries and lets a sweeper
    /// find what expires next without scanning every certificate.
    pub expiry: BTreeSet<(UnixSeconds, Serial)>,
    /// Highest full CRL number of generation 0's issuer.
    pub last_crl_number: u64,
    /// Highest full CRL number of each later issuer (generation >= 1).
    pub issuer_crl_numbers: BTreeMap<u32, u64>,
    /// Seq of each `IssuingCaRotated` record, by generation.
    pub issuers: BTreeMap<u32, u64>,
    /// The ACME index: `AcmeKey::entry(seq)` for every (object, record) pair.
    pub acme: BTreeSet<Vec<u8>>,
    /// Sequence number of the last applied record.
    pub applied: Option<u64>,
}

impl Inventory {
    /// Fold one record in. Records must come in sequence order.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), Error> {
        let expected = self.applied.map_or(0, |a| a + 1);
        if seq != expected {
            return Err(Error::InvalidEvent(format!("record {seq} applied, expected {expected}")));
        }
        if let Event::CaInitialized(ca) = event {
            // The fold keeps the CA itself; the persisted projection keeps its seq.
            self.ca = Some(ca.clone());
        }
        self.apply_index(seq, IndexEvent::of(event));
        self.applied = Some(seq);
        Ok(())
    }

    fn apply_index(&mut self, seq: u64, ix: IndexEvent) {
        match ix {
            IndexEvent::CaInitialized | IndexEvent::Audit => {}
            IndexEvent::CertificateIssued { serial, not_after, issuer } => {
                self.certs.insert(serial.clone(), CertEntry { seq, not_after, issuer });
                self.expiry.insert((not_after, serial));
            }
            IndexEvent::CertificateRevoked { serial, reason, revoked_at, invalidity_date } => {
                self.revoked.insert(serial, RevokedEntry { seq, reason, revoked_at, invalidity_date });
            }
            IndexEvent::CrlPublished { number, delta_base: None, issuer: 0 } => {
                self.last_crl_number = self.last_crl_number.max(number);
            }
            IndexEvent::CrlPublished { number, delta_base: None, issuer } => {
                let n = self.issuer_crl_numbers.entry(issuer).or_default();
                *n = (*n).max(number);
            }
            IndexEvent::CrlPublished { delta_base: Some(_), .. } => {}
            IndexEvent::IssuingCaRotated { generation } => {
                self.issuers.insert(generation, seq);
            }
            IndexEvent::Acme(keys) => self.acme.extend(keys.iter().map(|k| k.entry(seq))),
        }
    }

    /// Revoked certificates that have not yet expired at `now` (what a CRL must list).
    pub fn unexpired_revoked(&self, now: UnixSeconds) -> impl Iterator<Item = (&Serial, &RevokedEntry)> {
        self.revoked.iter().filter(move |(s, _)| self.certs.get(*s).is_some_and(|c| c.not_after >= now))
    }
}

/// Decide whether a revocation may be recorded: the certificate must exist and not be
/// revoked already. Pure: the caller supplies the current state and the time.
pub fn decide_revoke(
    serial: &Serial,
    cert: Option<&CertEntry>,
    revoked: Option<&RevokedEntry>,
    reason: RevocationReason,
    invalidity_date: Option<UnixSeconds>,
    now: UnixSeconds,
    requester: &str,
) -> Result<Option<Event>, Error> {
    if cert.is_none() {
        return Ok(None);
    }
    if revoked.is_some() {
        return Err(Error::AlreadyRevoked(serial.to_hex()));
    }
    if reason == RevocationReason::RemoveFromCrl {
        return Err(Error::Config(
            "removeFromCRL is only meaningful in delta CRLs and cannot be requested".into(),
        ));
    }
    Ok(Some(Event::CertificateRevoked(crate::event::CertificateRevoked {
        serial: serial.clone(),
        reason,
        revoked_at: now,
        requester: requester.to_string(),
        invalidity_date,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CertificateIssued, CertificateRevoked};

    fn issued(serial: u8, not_after: i64) -> Event {
        Event::CertificateIssued(CertificateIssued {
            serial: Serial::from_bytes(&[serial]).unwrap(),
            certificate_der: vec![],
            profile: "server".into(),
            requester: "t".into(),
            not_before: 0,
            not_after,
            names: vec![],
            issuer_generation: 0,
        })
    }

    #[test]
    fn given_issued_and_revoked_then_crl_lists_unexpired_only() {
        let mut inv = Inventory::default();
        inv.apply(0, &issued(1, 100)).unwrap();
        inv.apply(1, &issued(2, 1000)).unwrap();
        for (seq, s) in [(2, 1u8), (3, 2u8)] {
            inv.apply(
                seq,
                &Event::CertificateRevoked(CertificateRevoked {
                    serial: Serial::from_bytes(&[s]).unwrap(),
                    reason: RevocationReason::KeyCompromise,
                    revoked_at: 50,
                    requester: "t".into(),
                    invalidity_date: None,
                }),
            )
            .unwrap();
        }
        let listed: Vec<_> = inv.unexpired_revoked(500).map(|(s, _)| s.to_hex()).collect();
        assert_eq!(listed, vec!["02"]);
        assert!(inv.apply(7, &issued(3, 1)).is_err(), "gaps are rejected");
    }

    #[test]
    fn crl_numbers_and_rotations_are_kept_per_issuer() {
        let crl = |number, issuer_generation| {
            Event::CrlPublished(crate::event::CrlPublished {
                number,
                this_update: 0,
                next_update: 1,
                delta_base: None,
                issuer_generation,
                der_sha256: None,
            })
        };
        let mut inv = Inventory::default();
        inv.apply(0, &crl(5, 0)).unwrap();
        inv.apply(
            1,
            &Event::IssuingCaRotated(crate::event::IssuingCaRotated {
                generation: 1,
                certificate_der: vec![],
                key_ref: "issuing-1.key".into(),
            }),
        )
        .unwrap();
        inv.apply(2, &crl(1, 1)).unwrap();
        inv.apply(3, &crl(3, 1)).unwrap();
        let mut issued_by_1 = issued(4, 10);
        if let Event::CertificateIssued(c) = &mut issued_by_1 {
            c.issuer_generation = 1;
        }
        inv.apply(4, &issued_by_1).unwrap();
        assert_eq!(inv.last_crl_number, 5);
        assert_eq!(inv.issuer_crl_numbers.get(&1), Some(&3));
        assert_eq!(inv.issuers.get(&1), Some(&1));
        assert_eq!(inv.certs.values().next().map(|c| c.issuer), Some(1));
    }

    #[test]
    fn revoke_decisions() {
        let s = Serial::from_bytes(&[9]).unwrap();
        let c = CertEntry { seq: 0, not_after: 10, issuer: 0 };
        assert!(
            decide_revoke(&s, None, None, RevocationReason::Unspecified, None, 1, "t").unwrap().is_none()
        );
        assert!(
            decide_revoke(&s, Some(&c), None, RevocationReason::Superseded, None, 1, "t").unwrap().is_some()
        );
        let r = RevokedEntry {
            seq: 1,
            reason: RevocationReason::Superseded,
            revoked_at: 1,
            invalidity_date: None,
        };
        assert!(matches!(
            decide_revoke(&s, Some(&c), Some(&r), RevocationReason::Superseded, None, 1, "t"),
            Err(Error::AlreadyRevoked(_))
        ));
    }
}
