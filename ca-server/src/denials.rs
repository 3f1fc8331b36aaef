//! Authorization denials in the event log, counted: each `[authz] denial_summary_secs`
//! window with at least one denial becomes one `AccessDenials` record (identity, rule,
//! method and count, at most `AccessDenials::MAX_ENTRIES` entries, the rest in `others`).
//! So the audit trail names who was refused what, and a refused caller adds at most one
//! bounded record per window however fast it calls. The window still open is appended at
//! a clean shutdown; a crash loses it (the WARN lines and `ca_authz_denied_total` remain).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ca_core::UnixSeconds;
use ca_core::event::{AccessDenials, DenialCount, Event};

use crate::app::{App, now_unix};

#[derive(Default)]
struct Window {
    start: Option<UnixSeconds>,
    counts: HashMap<(String, String, &'static str), u64>,
    others: u64,
}

/// The denials of the window still open.
#[derive(Default)]
pub struct DenialLedger(Mutex<Window>);

/// `s` cut to at most `AccessDenials::MAX_TEXT` bytes, at a char boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(AccessDenials::MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl DenialLedger {
    pub fn record(&self, identity: &str, rule: &str, method: &'static str) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.start.get_or_insert_with(now_unix);
        let key = (bounded(identity), bounded(rule), method);
        if let Some(n) = w.counts.get_mut(&key) {
            *n += 1;
        } else if w.counts.len() < AccessDenials::MAX_ENTRIES {
            w.counts.insert(key, 1);
        } else {
            w.others += 1;
        }
    }

    /// Close the window: its record, or `None` when nobody was refused.
    pub fn take(&self, now: UnixSeconds) -> Option<AccessDenials> {
        let w = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let start = w.start?;
        let mut entries: Vec<DenialCount> = w
            .counts
            .into_iter()
            .map(|((identity, rule, method), count)| DenialCount {
                identity,
                rule,
                method: method.into(),
                count,
            })
            .collect();
        entries.sort_by(|a, b| (&a.identity, &a.method).cmp(&(&b.identity, &b.method)));
        Some(AccessDenials { window_start: start, window_end: now, entries, others: w.others })
    }
}

/// Append the open window's record, if any. A failed append is logged and dropped: the
/// counts are an audit summary, and retrying them would let them pile up.
pub async fn flush(app: &App) {
    let Some(d) = app.authz.denials().take(now_unix()) else { return };
    let total: u64 = d.entries.iter().map(|e| e.count).sum::<u64>() + d.others;
    if let Err(e) = app.store.append(vec![Event::AccessDenials(d)]).await {
        tracing::warn!(error = %e, denials = total, "could not record the authorization denials summary");
    }
}

/// Flush every `every` until shutdown (the last window is flushed by `Running::shutdown`).
pub fn start(app: Arc<App>, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                _ = tick.tick() => flush(&app).await,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_identity_rule_and_method_and_bounds_the_rest() {
        let l = DenialLedger::default();
        assert!(l.take(10).is_none(), "no denials, no record");
        for _ in 0..1000 {
            l.record("spiffe://corp/w", "default rule", "Revoke");
        }
        for i in 0..100 {
            l.record(&format!("w{i}"), "default rule", "SignCsr");
        }
        l.record(&"x".repeat(10_000), "r", "SignCsr");
        let d = l.take(20).unwrap();
        assert_eq!(d.entries.len(), AccessDenials::MAX_ENTRIES);
        let w = d.entries.iter().find(|e| e.identity == "spiffe://corp/w").unwrap();
        assert_eq!((w.count, w.method.as_str()), (1000, "Revoke"));
        assert_eq!(d.others, 101 - (AccessDenials::MAX_ENTRIES as u64 - 1));
        assert_eq!(d.window_end, 20);
        assert!(l.take(30).is_none(), "the window was closed");
        l.record(&"é".repeat(200), "r", "SignCsr");
        let d = l.take(40).unwrap();
        assert!(d.entries[0].identity.len() <= AccessDenials::MAX_TEXT);
    }
}
