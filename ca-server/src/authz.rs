//! Per-caller authorization on gRPC (`[[authz.rules]]`): which profiles and names a caller
//! may get, what it may revoke, whether it may read and whether it may call admin RPCs.
//!
//! Rules are tried in order and the FIRST whose `identity` pattern matches the caller's
//! identity (its client certificate's URI SAN, else first DNS SAN, else CN) decides. When
//! none matches, the built-in defaults apply: the admin identity (`spiffe://ca-server/admin`)
//! may do everything; any other caller may issue within the server policy (any profile),
//! revoke what it requested itself, and read, but not call admin RPCs. With
//! `--insecure-grpc` there is no identity and every caller is treated as the admin.
//!
//! A denial is `PERMISSION_DENIED`, counted in `ca_authz_denied_total{method}`, logged at
//! WARN at most once per identity per [`LOG_EVERY`] (with the number suppressed), and
//! counted into the window's `AccessDenials` record (`denials.rs`): one bounded record per
//! window, never one per denial, so a caller cannot grow the log without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_core::policy::{Policy, PolicyConfig, SanName};
use ca_storage::CertRecord;
use serde::{Deserialize, Serialize};

use crate::credential::ADMIN_IDENTITY;
use crate::error::AppError;
use crate::metrics::Metrics;

/// At most one WARN line per identity per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Identities tracked for rate-limiting; beyond it, stale entries are dropped.
const MAX_TRACKED: usize = 4096;

/// `[authz]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzConfig {
    /// Tried in order; the first whose `identity` matches decides.
    pub rules: Vec<AuthzRule>,
    /// The window of the `AccessDenials` summary records (seconds, at least 1; default 60).
    pub denial_summary_secs: u64,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        AuthzConfig { rules: vec![], denial_summary_secs: 60 }
    }
}

/// What revocations a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeScope {
    None,
    /// Only certificates whose recorded requester is the caller's own `grpc:<identity>`.
    Own,
    Any,
}

/// One `[[authz.rules]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzRule {
    /// An exact identity, or a prefix ending in `*` (`spiffe://corp.internal/ns/payments/*`).
    pub identity: String,
    /// Profiles the caller may request (empty = all).
    pub profiles: Vec<String>,
    /// Name rules (as in `[policy]`) narrowing the server policy; when either list is set,
    /// both replace the server's lists (an empty one then allows no names of its kind).
    /// Both empty = the server policy alone.
    pub allowed_dns: Vec<String>,
    pub allowed_ips: Vec<String>,
    /// Longest validity the caller may get (0 = the profile/policy maximum).
    pub max_validity_secs: u64,
    pub revoke: RevokeScope,
    /// GetCertificate, ListCertificates, WatchEvents.
    pub read: bool,
    /// AcmeAdmin and any other admin RPC.
    pub admin: bool,
    /// SignCsr per minute for each identity this rule matches (0 = unlimited); unset =
    /// `[grpc] max_issuance_per_minute` (or `admin_max_issuance_per_minute` with `admin`).
    pub max_issuance_per_minute: Option<u64>,
}

impl Default for AuthzRule {
    fn default() -> Self {
        AuthzRule {
            identity: String::new(),
            profiles: vec![],
            allowed_dns: vec![],
            allowed_ips: vec![],
            max_validity_secs: 0,
            revoke: RevokeScope::Own,
            read: true,
            admin: false,
            max_issuance_per_minute: None,
        }
    }
}

impl AuthzRule {
    fn matches(&self, identity: &str) -> bool {
        match self.identity.strip_suffix('*') {
            Some(prefix) => identity.starts_with(prefix),
            None => identity == self.identity,
        }
    }
}

/// A rule ready to apply, with its narrowed policy.
#[derive(Debug)]
struct Compiled {
    rule: AuthzRule,
    /// `None`: the server policy alone.
    policy: Option<Policy>,
    /// `rule 0 (spiffe://...)` or `default rule`.
    label: String,
}

/// Who is calling, as derived from the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client certificate's identity; `None` on a plaintext listener (or a certificate
    /// that names nothing).
    pub identity: Option<String>,
    /// What the log records: `grpc:<identity>` or `grpc:<peer ip>`.
    pub requester: String,
    /// The client certificate is one this CA issued and recorded. The built-in admin
    /// default needs it, so a `[grpc] client_ca_file` CA cannot mint the admin identity.
    pub issued_here: bool,
}

/// The rule that applies to one caller.
#[derive(Clone, Debug)]
pub struct Grant {
    rule: Arc<Compiled>,
    /// The identity named in denials.
    who: String,
    requester: String,
}

impl Grant {
    pub fn label(&self) -> &str {
        &self.rule.label
    }

    /// The identity (or, without one, the requester) that limits and denials name.
    pub fn who(&self) -> &str {
        &self.who
    }

    pub fn is_admin(&self) -> bool {
        self.rule.rule.admin
    }

    /// The rule's own `max_issuance_per_minute`, if it sets one.
    pub fn max_issuance_per_minute(&self) -> Option<u64> {
        self.rule.rule.max_issuance_per_minute
    }
}

#[derive(Default)]
struct LogState {
    last: Option<Instant>,
    suppressed: u64,
}

pub struct Authz {
    rules: Vec<Arc<Compiled>>,
    admin_default: Arc<Compiled>,
    other_default: Arc<Compiled>,
    insecure: Arc<Compiled>,
    insecure_grpc: bool,
    metrics: Arc<Metrics>,
    log: Mutex<HashMap<String, LogState>>,
    denials: crate::denials::DenialLedger,
}

impl Authz {
    pub fn new(
        cfg: &AuthzConfig,
        server_policy: &PolicyConfig,
        insecure_grpc: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AppError> {
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.iter().enumerate() {
            if r.identity.is_empty() {
                return Err(AppError::Config(format!("[[authz.rules]] #{i}: `identity` is required")));
            }
            if r.identity[..r.identity.len() - 1].contains('*') {
                return Err(AppError::Config(format!(
                    "[[authz.rules]] #{i}: `*` may only end an identity pattern: {:?}",
                    r.identity
                )));
            }
            let policy = server_policy
                .narrowed(&r.allowed_dns, &r.allowed_ips)
                .map_err(|e| AppError::Config(format!("[[authz.rules]] #{i} ({}): {e}", r.identity)))?;
            rules.push(Arc::new(Compiled {
                rule: r.clone(),
                policy,
                label: format!("rule {i} ({})", r.identity),
            }));
        }
        let all = AuthzRule {
            identity: ADMIN_IDENTITY.into(),
            revoke: RevokeScope::Any,
            read: true,
            admin: true,
            ..AuthzRule::default()
        };
        let admin_default =
            Arc::new(Compiled { rule: all.clone(), policy: None, label: "default rule (admin)".into() });
        let insecure =
            Arc::new(Compiled { rule: all, policy: None, label: "--insecure-grpc (admin)".into() });
        let other_default = Arc::new(Compiled {
            rule: AuthzRule { identity: "*".into(), ..AuthzRule::default() },
            policy: None,
            label: "default rule".into(),
        });
        Ok(Authz {
            rules,
            admin_default,
            other_default,
            insecure,
            insecure_grpc,
            metrics,
            log: Mutex::new(HashMap::new()),
            denials: crate::denials::DenialLedger::default(),
        })
    }

    fn rule_for_identity(&self, identity: &str) -> &Arc<Compiled> {
        self.rules.iter().find(|r| r.rule.matches(identity)).unwrap_or(if identity == ADMIN_IDENTITY {
            &self.admin_default
        } else {
            &self.other_default
        })
    }

    /// The denials of the open summary window.
    pub fn denials(&self) -> &crate::denials::DenialLedger {
        &self.denials
    }

    /// The rule that applies to `caller`.
    pub fn grant(&self, caller: &Caller) -> Grant {
        let rule = match &caller.identity {
            None if self.insecure_grpc => &self.insecure,
            // A certificate naming nothing: the default rule for non-admins.
            None => &self.other_default,
            Some(id) => match self.rule_for_identity(id) {
                r if Arc::ptr_eq(r, &self.admin_default) && !caller.issued_here => &self.other_default,
                r => r,
            },
        };
        Grant {
            rule: Arc::clone(rule),
            who: caller.identity.clone().unwrap_or_else(|| caller.requester.clone()),
            requester: caller.requester.clone(),
        }
    }

    /// Count, log (rate-limited) and build the `PERMISSION_DENIED` error.
    fn deny(&self, method: &'static str, g: &Grant, what: String) -> AppError {
        let message = format!("{} ({}) may not {what}", g.who, g.rule.label);
        self.metrics.authz_denied(method);
        self.denials.record(&g.who, &g.rule.label, method);
        let now = Instant::now();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= MAX_TRACKED && !log.contains_key(&g.who) {
            log.retain(|_, s| s.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY));
        }
        if log.len() < MAX_TRACKED || log.contains_key(&g.who) {
            let s = log.entry(g.who.clone()).or_default();
            if s.last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                let suppressed = std::mem::take(&mut s.suppressed);
                s.last = Some(now);
                drop(log);
                tracing::warn!(method, identity = %g.who, rule = %g.rule.label, suppressed, "authorization denied: {message}");
            } else {
                s.suppressed += 1;
            }
        }
        AppError::PermissionDenied(message)
    }

    /// SignCsr: the profile, the names and the validity against the caller's rule (after
    /// the server policy has accepted them). `requested_secs` is the caller's (0 = default),
    /// `validity` what the profile gave; returns the validity to sign for.
    pub fn check_sign(
        &self,
        g: &Grant,
        profile: &str,
        names: &[SanName],
        requested_secs: u64,
        validity: u64,
    ) -> Result<u64, AppError> {
        let r = &g.rule.rule;
        if !r.profiles.is_empty() && !r.profiles.iter().any(|p| p == profile) {
            return Err(self.deny(
                "SignCsr",
                g,
                format!("use profile {profile:?} (allowed: {})", r.profiles.join(", ")),
            ));
        }
        if let Some(p) = &g.rule.policy
            && let Err(e) = p.check_names(names)
        {
            return Err(self.deny("SignCsr", g, format!("get these names: {e}")));
        }
        // A certificate naming an identity with admin rights would make its holder an admin.
        if !r.admin
            && let Some(n) = names.iter().find(|n| self.rule_for_identity(&n.to_string()).rule.admin)
        {
            return Err(self.deny(
                "SignCsr",
                g,
                format!("get a certificate for {n}: that identity has admin rights"),
            ));
        }
        let max = r.max_validity_secs;
        if max > 0 && validity > max {
            if requested_secs == 0 {
                return Ok(max);
            }
            return Err(self.deny("SignCsr", g, format!("get a validity of {validity} s (at most {max} s)")));
        }
        Ok(validity)
    }

    /// Revoke: through `App::revoke`'s `authorize` closure.
    pub fn check_revoke(&self, g: &Grant, rec: &CertRecord) -> Result<(), AppError> {
        let serial = &rec.issued.serial;
        match g.rule.rule.revoke {
            RevokeScope::Any => Ok(()),
            RevokeScope::Own if rec.issued.requester == g.requester => Ok(()),
            RevokeScope::Own => Err(self.deny(
                "Revoke",
                g,
                format!("revoke {serial}: it may revoke only certificates it requested ({})", g.requester),
            )),
            RevokeScope::None => Err(self.deny("Revoke", g, format!("revoke {serial}: revoke = \"none\""))),
        }
    }

    /// GetCertificate, ListCertificates, WatchEvents.
    pub fn check_read(&self, method: &'static str, g: &Grant) -> Result<(), AppError> {
        if g.rule.rule.read {
            Ok(())
        } else {
            Err(self.deny(method, g, format!("call {method} (read = false)")))
        }
    }

    /// AcmeAdmin and other admin RPCs.
    pub fn check_admin(&self, method: &'static str, g: &Grant) -> Result<(), AppError> {
        if g.rule.rule.admin {
            Ok(())
        } else {
            Err(self.deny(method, g, format!("call {method} (admin = false)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(toml_text: &str) -> Authz {
        #[derive(Deserialize)]
        struct W {
            authz: AuthzConfig,
        }
        let w: W = toml::from_str(toml_text).unwrap();
        Authz::new(&w.authz, &PolicyConfig::default(), false, Arc::default()).unwrap()
    }

    fn caller(id: &str) -> Caller {
        Caller { identity: Some(id.into()), requester: format!("grpc:{id}"), issued_here: true }
    }

    #[test]
    fn first_matching_rule_wins_and_defaults_apply_otherwise() {
        let a = authz(
            "[[authz.rules]]\nidentity = \"spiffe://corp/ns/pay/*\"\nprofiles = [\"server\"]\n\
             allowed_dns = [\".pay.internal\"]\nrevoke = \"none\"\nread = false\n\
             [[authz.rules]]\nidentity = \"spiffe://corp/*\"\nadmin = true\n",
        );
        let pay = a.grant(&caller("spiffe://corp/ns/pay/api"));
        assert_eq!(pay.label(), "rule 0 (spiffe://corp/ns/pay/*)");
        assert_eq!(a.grant(&caller("spiffe://corp/ops")).label(), "rule 1 (spiffe://corp/*)");
        assert_eq!(a.grant(&caller("other.internal")).label(), "default rule");
        assert_eq!(a.grant(&caller(ADMIN_IDENTITY)).label(), "default rule (admin)");
        // The admin identity on a certificate of another (client_ca_file) CA is no admin.
        let foreign = Caller { issued_here: false, ..caller(ADMIN_IDENTITY) };
        assert_eq!(a.grant(&foreign).label(), "default rule");
        let dns = |s: &str| SanName::Dns(s.into());
        assert!(a.check_sign(&pay, "server", &[dns("a.pay.internal")], 0, 100).is_ok());
        let e = a.check_sign(&pay, "server", &[dns("a.other.internal")], 0, 100).unwrap_err().to_string();
        assert!(e.contains("spiffe://corp/ns/pay/api") && e.contains("rule 0"), "{e}");
        assert!(a.check_sign(&pay, "client", &[dns("a.pay.internal")], 0, 100).is_err());
        assert!(a.check_read("ListCertificates", &pay).is_err());
        assert!(a.check_admin("ListEabKeys", &a.grant(&caller("spiffe://corp/ops"))).is_ok());
        // Nobody without admin gets a certificate for an admin identity.
        let other = a.grant(&caller("other.internal"));
        let e = a.check_sign(&other, "client", &[SanName::Uri("spiffe://corp/x".into())], 0, 1).unwrap_err();
        assert!(e.to_string().contains("admin rights"), "{e}");
        assert!(a.check_admin("ListEabKeys", &other).is_err());
        assert!(a.check_read("GetCertificate", &other).is_ok());
    }

    #[test]
    fn validity_is_capped_when_defaulted_and_refused_when_asked() {
        let a = authz("[[authz.rules]]\nidentity = \"w\"\nmax_validity_secs = 3600\n");
        let g = a.grant(&caller("w"));
        let n = [SanName::Dns("w.internal".into())];
        assert_eq!(a.check_sign(&g, "server", &n, 0, 86_400).unwrap(), 3600);
        assert!(a.check_sign(&g, "server", &n, 86_400, 86_400).is_err());
        assert_eq!(a.check_sign(&g, "server", &n, 60, 60).unwrap(), 60);
    }

    #[test]
    fn insecure_grpc_callers_are_the_admin() {
        let a = Authz::new(&AuthzConfig::default(), &PolicyConfig::default(), true, Arc::default()).unwrap();
        let g = a.grant(&Caller { identity: None, requester: "grpc:127.0.0.1".into(), issued_here: false });
        assert!(a.check_admin("ListEabKeys", &g).is_ok());
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = |t: &str| {
            let w: AuthzConfig = toml::from_str(t).unwrap();
            Authz::new(&w, &PolicyConfig::default(), false, Arc::default()).is_err()
        };
        assert!(bad("[[rules]]\nprofiles = []\n"));
        assert!(bad("[[rules]]\nidentity = \"a*b\"\n"));
        assert!(bad("[[rules]]\nidentity = \"a\"\nallowed_dns = [\"bad name!\"]\n"));
        assert!(toml::from_str::<AuthzConfig>("[[rules]]\nidentity = \"a\"\nrevoke = \"some\"\n").is_err());
    }
}
