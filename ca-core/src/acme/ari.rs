//! ACME Renewal Information (RFC 9773): what the log says about one certificate's renewal
//! (an operator's window, the order that replaced it) and the suggested window.

use crate::UnixSeconds;
use crate::event::Event;

/// ARI facts about one certificate (`AcmeKey::Cert`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertAri {
    /// An operator's window, the latest set.
    pub window: Option<(UnixSeconds, UnixSeconds)>,
    /// The first order that named this certificate in `replaces`.
    pub replaced_by: Option<String>,
}

pub fn fold_cert_ari<'a>(events: impl IntoIterator<Item = &'a Event>) -> CertAri {
    let mut ari = CertAri::default();
    for e in events {
        match e {
            Event::RenewalWindowSet(w) => ari.window = Some((w.start, w.end)),
            Event::OrderCreated(o) if ari.replaced_by.is_none() => ari.replaced_by = Some(o.order_id.clone()),
            _ => {}
        }
    }
    ari
}

/// ARI suggested window (RFC 9773 4.2): an operator's window when set; for a revoked
/// certificate a window already past; else the middle third's start ± a twentieth of
/// the lifetime, centred at two thirds of it (as Pebble and Boulder do).
pub fn suggested_window(
    not_before: UnixSeconds,
    not_after: UnixSeconds,
    revoked: bool,
    operator: Option<(UnixSeconds, UnixSeconds)>,
    now: UnixSeconds,
) -> (UnixSeconds, UnixSeconds) {
    if let Some(w) = operator {
        return w;
    }
    if revoked {
        return (now - 2 * 86_400, now - 86_400);
    }
    let life = (not_after - not_before).max(1);
    let centre = not_before + life * 2 / 3;
    let half = (life / 20).max(1);
    (centre - half, centre + half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_window_sits_at_two_thirds() {
        let (s, e) = suggested_window(0, 90 * 86_400, false, None, 0);
        assert!(s < 60 * 86_400 && e > 60 * 86_400 && e > s);
        let (s, e) = suggested_window(0, 90 * 86_400, true, None, 1_000_000);
        assert!(e < 1_000_000 && s < e, "revoked: already past");
        assert_eq!(suggested_window(0, 10, false, Some((3, 4)), 0), (3, 4));
    }
}
