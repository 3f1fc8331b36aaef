//! `[acme.limits]`: abuse limits of the ACME frontend, per client IP and per account.
//!
//! - new accounts per client IP, new orders per account and per client IP, and failed
//!   validations per (account, identifier) are token buckets (`ratelimit.rs`) counted in
//!   memory: **a restart refills them**;
//! - pending authorizations per account is a cap on what is pending now, read from the
//!   durable ACME state (the account's live orders) the first time an account orders after
//!   a start, then kept here, so it survives restarts.
//!
//! Over a limit: `rateLimited`, HTTP 429, `Retry-After`, and a detail naming the limit and
//! its value. The client IP is the TCP peer of the ACME listener (no `X-Forwarded-For` is
//! trusted); an IPv6 client counts by its /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ca_core::Event;
use ca_core::acme::event::NewAuthorization;
use ca_core::acme::index::AcmeKey;
use ca_core::acme::model::AuthzStatus;
use serde::{Deserialize, Serialize};

use crate::acme::Acme;
use crate::acme::metrics::AcmeMetrics;
use crate::error::AppError;
use crate::ratelimit::{Limit, Limiter, MonoClock};

/// `[acme.limits]`; 0 turns a limit off. The defaults suit an internal CA: a platform with
/// many hosts behind one NAT, or one cert-manager account for a whole cluster, stays far
/// below them, while one client still cannot grow the log without bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeLimits {
    /// newAccount per client IP (IPv6: per /64): a burst of this many, refilled over an
    /// hour. Default 1000 (LE: 10 per 3 h).
    pub new_accounts_per_ip_per_hour: u64,
    /// newOrder per account. Default 10000 (LE: 300 per 3 h).
    pub new_orders_per_account_per_hour: u64,
    /// newOrder per client IP, whatever the account. Default 30000.
    pub new_orders_per_ip_per_hour: u64,
    /// Authorizations an account may have pending at once. Default 1000 (as LE).
    pub pending_authorizations_per_account: u64,
    /// Failed validations per account and identifier; once used up, new authorizations
    /// and challenge requests for that identifier are refused. Default 30 (LE: 5).
    pub failed_validations_per_identifier_per_hour: u64,
    /// Keys each limit tracks (IPs, accounts, identifiers; pending authorizations for the
    /// pending cap); beyond it the least informative are dropped. Default 50000.
    pub max_tracked_keys: usize,
}

impl Default for AcmeLimits {
    fn default() -> Self {
        AcmeLimits {
            new_accounts_per_ip_per_hour: 1000,
            new_orders_per_account_per_hour: 10_000,
            new_orders_per_ip_per_hour: 30_000,
            pending_authorizations_per_account: 1000,
            failed_validations_per_identifier_per_hour: 30,
            max_tracked_keys: 50_000,
        }
    }
}

/// Each limit, as labelled in `ca_acme_rate_limited_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeLimit {
    NewAccountsPerIp,
    NewOrdersPerAccount,
    NewOrdersPerIp,
    FailedValidationsPerIdentifier,
    PendingAuthorizationsPerAccount,
}

impl AcmeLimit {
    pub const ALL: [AcmeLimit; 5] = [
        AcmeLimit::NewAccountsPerIp,
        AcmeLimit::NewOrdersPerAccount,
        AcmeLimit::NewOrdersPerIp,
        AcmeLimit::FailedValidationsPerIdentifier,
        AcmeLimit::PendingAuthorizationsPerAccount,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AcmeLimit::NewAccountsPerIp => "new_accounts_per_ip",
            AcmeLimit::NewOrdersPerAccount => "new_orders_per_account",
            AcmeLimit::NewOrdersPerIp => "new_orders_per_ip",
            AcmeLimit::FailedValidationsPerIdentifier => "failed_validations_per_identifier",
            AcmeLimit::PendingAuthorizationsPerAccount => "pending_authorizations_per_account",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The bucket key of a client address: the IPv4 address, or the IPv6 /64 (a host usually
/// holds a whole /64).
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Authorizations of one account that may still be pending: (id, expires).
struct Tracked {
    authzs: Vec<(String, i64)>,
    /// When they were last re-read from the store (monotonic ms).
    refolded_ms: u64,
}

/// The limiters of one ACME frontend.
pub struct Limiters {
    cfg: AcmeLimits,
    clock: MonoClock,
    /// One per bucket limit, indexed by [`AcmeLimit::index`] (the pending cap has none).
    buckets: [Mutex<Limiter>; 4],
    pending: Mutex<HashMap<String, Tracked>>,
    metrics: Arc<AcmeMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Limiters {
    pub fn new(cfg: AcmeLimits, metrics: Arc<AcmeMetrics>) -> Limiters {
        let n = cfg.max_tracked_keys;
        Limiters {
            buckets: std::array::from_fn(|_| Mutex::new(Limiter::new(n))),
            pending: Mutex::new(HashMap::new()),
            clock: MonoClock::default(),
            cfg,
            metrics,
        }
    }

    /// A limit's value and its `[acme.limits]` key (the pending cap is a cap, not a
    /// bucket: only its count is used).
    fn limit(&self, l: AcmeLimit) -> (Limit, &'static str) {
        let c = &self.cfg;
        match l {
            AcmeLimit::NewAccountsPerIp => {
                (Limit::per_hour(c.new_accounts_per_ip_per_hour), "new_accounts_per_ip_per_hour")
            }
            AcmeLimit::NewOrdersPerAccount => {
                (Limit::per_hour(c.new_orders_per_account_per_hour), "new_orders_per_account_per_hour")
            }
            AcmeLimit::NewOrdersPerIp => {
                (Limit::per_hour(c.new_orders_per_ip_per_hour), "new_orders_per_ip_per_hour")
            }
            AcmeLimit::FailedValidationsPerIdentifier => (
                Limit::per_hour(c.failed_validations_per_identifier_per_hour),
                "failed_validations_per_identifier_per_hour",
            ),
            AcmeLimit::PendingAuthorizationsPerAccount => {
                (Limit::per_hour(c.pending_authorizations_per_account), "pending_authorizations_per_account")
            }
        }
    }

    /// Count the refusal and build the error; refusals are logged at DEBUG only (a
    /// limited client would otherwise fill the log).
    fn refuse(&self, l: AcmeLimit, what: String, retry_after: u64) -> AppError {
        self.metrics.rate_limited[l.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(limit = l.name(), retry_after, "ACME rate limited: {what}");
        AppError::RateLimited { what, retry_after }
    }

    fn publish(&self, l: AcmeLimit, keys: usize) {
        self.metrics.limiter_keys[l.index()].store(keys, std::sync::atomic::Ordering::Relaxed);
    }

    /// newAccount from `ip`: take one.
    pub fn new_account(&self, ip: IpAddr) -> Result<(), AppError> {
        let l = AcmeLimit::NewAccountsPerIp;
        let (limit, name) = self.limit(l);
        let mut b = lock(&self.buckets[l.index()]);
        let r = b.take(&ip_key(ip), limit, self.clock.now_ms());
        self.publish(l, b.len());
        drop(b);
        r.map_err(|d| {
            let what =
                format!("too many new accounts from {}: [acme.limits] {name} = {}", ip_key(ip), limit.count);
            self.refuse(l, what, d.retry_after_secs())
        })
    }

    /// newOrder by `account` from `ip`: one from each bucket, or none when either is empty.
    pub fn new_order(&self, account: &str, ip: IpAddr) -> Result<(), AppError> {
        let (la, lip) = (AcmeLimit::NewOrdersPerAccount, AcmeLimit::NewOrdersPerIp);
        let ((acct_limit, acct_name), (ip_limit, ip_name)) = (self.limit(la), self.limit(lip));
        let now = self.clock.now_ms();
        let ipk = ip_key(ip);
        let mut a = lock(&self.buckets[la.index()]);
        let mut i = lock(&self.buckets[lip.index()]);
        let refused = if let Err(d) = a.check(account, acct_limit, now) {
            let what = format!(
                "too many new orders for account {account}: [acme.limits] {acct_name} = {}",
                acct_limit.count
            );
            Some((la, what, d))
        } else if let Err(d) = i.check(&ipk, ip_limit, now) {
            Some((
                lip,
                format!("too many new orders from {ipk}: [acme.limits] {ip_name} = {}", ip_limit.count),
                d,
            ))
        } else {
            // Both checked under both locks: neither take can fail.
            let _ = a.take(account, acct_limit, now);
            let _ = i.take(&ipk, ip_limit, now);
            None
        };
        self.publish(la, a.len());
        self.publish(lip, i.len());
        drop((a, i));
        match refused {
            Some((l, what, d)) => Err(self.refuse(l, what, d.retry_after_secs())),
            None => Ok(()),
        }
    }

    /// May `account` get a new authorization (or start a validation) for `identifier`?
    pub fn check_failed_validations(&self, account: &str, identifier: &str) -> Result<(), AppError> {
        let l = AcmeLimit::FailedValidationsPerIdentifier;
        let (limit, name) = self.limit(l);
        let r = lock(&self.buckets[l.index()]).check(
            &failed_key(account, identifier),
            limit,
            self.clock.now_ms(),
        );
        r.map_err(|d| {
            let what = format!(
                "too many failed validations of {identifier} for account {account}: [acme.limits] {name} = {}",
                limit.count
            );
            self.refuse(l, what, d.retry_after_secs())
        })
    }

    /// A validation of `identifier` for `account` failed.
    pub fn record_failed_validation(&self, account: &str, identifier: &str) {
        let l = AcmeLimit::FailedValidationsPerIdentifier;
        let (limit, _) = self.limit(l);
        let mut b = lock(&self.buckets[l.index()]);
        b.record(&failed_key(account, identifier), limit, self.clock.now_ms());
        self.publish(l, b.len());
    }
}

fn failed_key(account: &str, identifier: &str) -> String {
    format!("{account} {identifier}")
}

/// Orders read back (newest first) to count an account's pending authorizations after a
/// start, at most: older ones are not counted (fail open, bounded work).
const MAX_ORDERS_SCANNED: usize = 10_000;
/// An account at the cap is re-read from the store at most this often.
const REFOLD_EVERY_MS: u64 = 1000;

impl Acme {
    /// Refuse an order whose `adding` new authorizations would take `account` over
    /// `pending_authorizations_per_account`. Called under the account's lock, as is
    /// [`Acme::note_pending`] after the order is recorded.
    pub(crate) fn check_pending(&self, account: &str, adding: usize, now: i64) -> Result<(), AppError> {
        let lim = &self.limits;
        let cap = lim.cfg.pending_authorizations_per_account;
        if cap == 0 || adding == 0 {
            return Ok(());
        }
        let ms = lim.clock.now_ms();
        let cached = {
            let mut p = lock(&lim.pending);
            match p.get_mut(account) {
                None => None,
                Some(t) => {
                    t.authzs.retain(|(_, exp)| *exp > now);
                    // Under the cap counting every tracked one: no store read needed.
                    if (t.authzs.len() + adding) as u64 <= cap {
                        return Ok(());
                    }
                    Some((t.authzs.clone(), t.refolded_ms))
                }
            }
        };
        let authzs = match cached {
            Some((a, at)) if ms < at.saturating_add(REFOLD_EVERY_MS) => a,
            Some((a, _)) => self.still_pending(a, now)?,
            None => self.pending_from_store(account, now)?,
        };
        let count = authzs.len();
        let soonest = authzs.iter().map(|(_, exp)| *exp).min().unwrap_or(now);
        self.store_pending(account, authzs, ms);
        if (count + adding) as u64 <= cap {
            return Ok(());
        }
        let l = AcmeLimit::PendingAuthorizationsPerAccount;
        let what = format!(
            "account {account} has {count} pending authorizations and this order needs {adding} more: \
             [acme.limits] pending_authorizations_per_account = {cap} (validate or deactivate some)"
        );
        Err(lim.refuse(l, what, u64::try_from(soonest - now).unwrap_or(1).max(1)))
    }

    /// The new authorizations of an order just recorded for `account`.
    pub(crate) fn note_pending(&self, account: &str, new: &[NewAuthorization]) {
        if self.limits.cfg.pending_authorizations_per_account == 0 || new.is_empty() {
            return;
        }
        let mut p = lock(&self.limits.pending);
        if let Some(t) = p.get_mut(account) {
            t.authzs.extend(new.iter().map(|a| (a.authz_id.clone(), a.expires)));
        }
    }

    fn store_pending(&self, account: &str, authzs: Vec<(String, i64)>, ms: u64) {
        let max = self.limits.cfg.max_tracked_keys.max(1);
        let mut p = lock(&self.limits.pending);
        let total: usize = p.values().map(|t| t.authzs.len() + 1).sum::<usize>() + authzs.len() + 1;
        if total > max {
            // Dropped accounts are read from the store again when they next order.
            let mut excess = total - max;
            p.retain(|_, t| {
                if excess == 0 {
                    return true;
                }
                excess = excess.saturating_sub(t.authzs.len() + 1);
                false
            });
        }
        p.insert(account.to_string(), Tracked { authzs, refolded_ms: ms });
        let n = p.values().map(|t| t.authzs.len()).sum();
        drop(p);
        self.limits.publish(AcmeLimit::PendingAuthorizationsPerAccount, n);
    }

    /// Those of `authzs` the store still shows pending.
    fn still_pending(&self, authzs: Vec<(String, i64)>, now: i64) -> Result<Vec<(String, i64)>, AppError> {
        let mut out = Vec::with_capacity(authzs.len());
        for (id, exp) in authzs {
            if self.authz(&id)?.is_some_and(|a| a.status(now) == AuthzStatus::Pending) {
                out.push((id, exp));
            }
        }
        Ok(out)
    }

    /// The account's pending authorizations, from its live orders, newest first.
    fn pending_from_store(&self, account: &str, now: i64) -> Result<Vec<(String, i64)>, AppError> {
        let store = &self.app.store;
        let mut candidates = vec![];
        for seq in store.acme_seqs_newest(&AcmeKey::AccountOrders(account.to_string()), MAX_ORDERS_SCANNED)? {
            let Some(rec) = store.read(seq)? else { continue };
            let Event::OrderCreated(o) = rec.event else { continue };
            if o.expires <= now {
                // Older orders expired too (lifetimes are one setting), and with them
                // the authorizations they created.
                break;
            }
            candidates.extend(
                o.new_authorizations
                    .iter()
                    .filter(|a| a.expires > now)
                    .map(|a| (a.authz_id.clone(), a.expires)),
            );
        }
        self.still_pending(candidates, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        assert_eq!(ip_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(ip_key("2001:db8:1:2:bbbb::9".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    #[test]
    fn an_order_takes_from_both_buckets_or_neither() {
        let cfg = AcmeLimits {
            new_orders_per_account_per_hour: 2,
            new_orders_per_ip_per_hour: 3,
            ..Default::default()
        };
        let l = Limiters::new(cfg, Arc::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.new_order("a", ip).unwrap();
        l.new_order("a", ip).unwrap();
        let e = l.new_order("a", ip).unwrap_err().to_string();
        assert!(e.contains("account a") && e.contains("new_orders_per_account_per_hour = 2"), "{e}");
        // The refused order took nothing from the IP's bucket: one is left for account b.
        l.new_order("b", ip).unwrap();
        let e = l.new_order("b", ip).unwrap_err().to_string();
        assert!(e.contains("from 192.0.2.1") && e.contains("retry after 1200 s"), "{e}");
        assert_eq!(
            l.metrics.rate_limited[AcmeLimit::NewOrdersPerIp.index()]
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
