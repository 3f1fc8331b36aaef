//! Issuance profiles: what a certificate is for (key usages, EKUs) and how long it lives.

use std::collections::BTreeMap;

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

use crate::Error;

/// An extended key usage a profile may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    ServerAuth,
    ClientAuth,
}

/// One profile, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub usages: Vec<Usage>,
    /// Validity when the request asks for none (seconds).
    pub default_validity_secs: u64,
    /// Upper bound on the validity a request may ask for (seconds).
    pub max_validity_secs: u64,
    /// What ACME clients are told about it (`meta.profiles`); derived when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

const DAY: u64 = 86_400;

impl Profile {
    fn new(usages: Vec<Usage>) -> Self {
        Profile { usages, default_validity_secs: 7 * DAY, max_validity_secs: 90 * DAY, description: None }
    }

    /// The configured description, or one derived from usages and lifetimes.
    pub fn describe(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        let usages: Vec<&str> = self
            .usages
            .iter()
            .map(|u| match u {
                Usage::ServerAuth => "TLS server",
                Usage::ClientAuth => "TLS client",
            })
            .collect();
        let days = |s: u64| s.div_ceil(DAY);
        format!(
            "{} certificates, {} days by default, at most {} days",
            usages.join(" and "),
            days(self.default_validity_secs),
            days(self.max_validity_secs)
        )
    }

    pub fn extended_key_usages(&self) -> Vec<ExtendedKeyUsagePurpose> {
        self.usages
            .iter()
            .map(|u| match u {
                Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
                Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect()
    }

    /// digitalSignature for every key; keyEncipherment in addition for RSA keys used in
    /// TLS server auth (RSA key exchange), as RFC 5280 / CA/B profiles expect.
    pub fn key_usages(&self, rsa_subject_key: bool) -> Vec<KeyUsagePurpose> {
        let mut ku = vec![KeyUsagePurpose::DigitalSignature];
        if rsa_subject_key && self.usages.contains(&Usage::ServerAuth) {
            ku.push(KeyUsagePurpose::KeyEncipherment);
        }
        ku
    }

    /// The validity to use for a request (0 = profile default), checked against the
    /// profile maximum and an outer (policy) maximum.
    pub fn validity(&self, requested_secs: u64, policy_max_secs: u64) -> Result<u64, Error> {
        let v = if requested_secs == 0 { self.default_validity_secs } else { requested_secs };
        let max = self.max_validity_secs.min(policy_max_secs);
        if v > max {
            return Err(Error::ValidityTooLong { requested_secs: v, max_secs: max });
        }
        Ok(v)
    }
}

/// The set of profiles by name, with the default used for an empty profile name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// No `deny_unknown_fields` here: serde does not support it beside a flattened map (every
// `[profiles.NAME]` table was refused as an unknown field); each `Profile` still denies
// unknown keys, and any other key is a profile name.
pub struct Profiles {
    #[serde(default = "default_profile_name")]
    pub default: String,
    #[serde(flatten)]
    pub by_name: BTreeMap<String, Profile>,
}

fn default_profile_name() -> String {
    "server".into()
}

impl Default for Profiles {
    fn default() -> Self {
        let mut by_name = BTreeMap::new();
        by_name.insert("server".into(), Profile::new(vec![Usage::ServerAuth]));
        by_name.insert("client".into(), Profile::new(vec![Usage::ClientAuth]));
        by_name.insert("server-client".into(), Profile::new(vec![Usage::ServerAuth, Usage::ClientAuth]));
        Profiles { default: default_profile_name(), by_name }
    }
}

impl Profiles {
    /// Every profile's name, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// A profile's description for ACME clients (`meta.profiles`).
    pub fn describe(&self, name: &str) -> Option<String> {
        self.by_name.get(name).map(|p| p.describe())
    }

    /// Look a profile up; "" means the default.
    pub fn get(&self, name: &str) -> Result<(&str, &Profile), Error> {
        let name = if name.is_empty() { self.default.as_str() } else { name };
        self.by_name.get_key_value(name).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| Error::UnknownProfile {
            name: name.to_string(),
            known: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.get(&self.default)?;
        for (name, p) in &self.by_name {
            if p.usages.is_empty() {
                return Err(Error::Config(format!("profile {name}: usages must not be empty")));
            }
            if p.default_validity_secs == 0 || p.default_validity_secs > p.max_validity_secs {
                return Err(Error::Config(format!(
                    "profile {name}: default validity must be >0 and <= max validity"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        let p = Profiles::default();
        p.validate().unwrap();
        let (name, server) = p.get("").unwrap();
        assert_eq!(name, "server");
        assert_eq!(server.validity(0, u64::MAX).unwrap(), 7 * DAY);
        assert!(matches!(
            server.validity(91 * DAY, u64::MAX),
            Err(Error::ValidityTooLong { max_secs, .. }) if max_secs == 90 * DAY
        ));
        assert!(matches!(server.validity(3600, 1800), Err(Error::ValidityTooLong { .. })));
        assert!(matches!(p.get("nope"), Err(Error::UnknownProfile { .. })));
        assert_eq!(p.get("server-client").unwrap().1.extended_key_usages().len(), 2);
    }
}
