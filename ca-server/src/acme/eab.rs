//! External Account Binding keys (RFC 8555 7.3.4): the public part (kid, name, the name
//! policy and profiles the key narrows accounts to) is an event; the HMAC secret lives
//! only in `DATA_DIR/acme-eab/<kid>` (mode 0600), written before the event, shown once.

use std::path::PathBuf;

use ca_core::Event;
use ca_core::acme::eab::{EabKey, fold_eab};
use ca_core::acme::index::AcmeKey;
use ca_core::acme::{b64u, b64u_decode};
use ca_core::event::{EabKeyCreated, EabKeyRevoked};
use ca_core::policy::IpNet;
use ring::rand::{SecureRandom, SystemRandom};

use crate::acme::Acme;
use crate::app::{now_unix, set_mode, write_secret};
use crate::error::AppError;

/// The secrets' directory.
pub struct EabSecrets {
    dir: PathBuf,
}

impl EabSecrets {
    pub fn new(dir: PathBuf) -> Self {
        EabSecrets { dir }
    }

    fn path(&self, kid: &str) -> Result<PathBuf, AppError> {
        // Kids are ours (base64url); refuse anything that could name another file.
        if kid.is_empty() || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(AppError::InvalidArgument(format!("EAB kid {kid:?} is not a key id of this CA")));
        }
        Ok(self.dir.join(kid))
    }

    pub fn secret(&self, kid: &str) -> Result<Vec<u8>, AppError> {
        let text = std::fs::read_to_string(self.path(kid)?)?;
        b64u_decode(text.trim()).map_err(|e| AppError::Config(format!("EAB secret file for {kid}: {e}")))
    }

    fn store(&self, kid: &str, secret: &[u8]) -> Result<(), AppError> {
        std::fs::create_dir_all(&self.dir)?;
        set_mode(&self.dir, 0o700)?;
        write_secret(&self.path(kid)?, b64u(secret).as_bytes())
    }

    fn remove(&self, kid: &str) -> Result<(), AppError> {
        match std::fs::remove_file(self.path(kid)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// What an operator asks for when creating a key.
#[derive(Debug, Clone, Default)]
pub struct NewEabKey {
    pub name: String,
    pub allowed_dns: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub profiles: Vec<String>,
}

impl Acme {
    pub fn eab_key(&self, kid: &str) -> Result<Option<EabKey>, AppError> {
        Ok(fold_eab(&self.events_of(&AcmeKey::Eab(kid.to_string()))?))
    }

    /// Every EAB key, revoked ones included, in kid order.
    pub fn eab_keys(&self) -> Result<Vec<EabKey>, AppError> {
        let events = self.app.store.acme_events_under(&AcmeKey::kind_prefix_eab())?;
        let mut by_kid: std::collections::BTreeMap<String, Vec<Event>> = Default::default();
        for (_, e) in events {
            let kid = match &e {
                Event::EabKeyCreated(c) => c.kid.clone(),
                Event::EabKeyRevoked(r) => r.kid.clone(),
                _ => continue,
            };
            by_kid.entry(kid).or_default().push(e);
        }
        Ok(by_kid.values().filter_map(fold_eab).collect())
    }

    /// Create a key: check its policy, keep the secret, record the key. Returns (kid, secret).
    pub async fn create_eab_key(&self, req: NewEabKey) -> Result<(String, Vec<u8>), AppError> {
        if req.name.trim().is_empty() {
            return Err(AppError::InvalidArgument(
                "an EAB key needs a name (the team or workload it is for)".into(),
            ));
        }
        for ip in &req.allowed_ips {
            IpNet::parse(ip)?;
        }
        // The key's rules must parse (the same narrowing newOrder applies).
        self.app.authority.policy().narrowed(&req.allowed_dns, &req.allowed_ips)?;
        if let Some(p) = req.profiles.iter().find(|p| !self.profiles.contains(p)) {
            return Err(AppError::InvalidArgument(format!(
                "profile {p:?} is not an ACME profile; ACME profiles: {}",
                self.profiles.join(", ")
            )));
        }
        let kid = self.new_id();
        let mut secret = vec![0u8; 32];
        SystemRandom::new().fill(&mut secret).map_err(|_| AppError::Io("the OS RNG failed".into()))?;
        // The secret first: a recorded key must never lack its secret.
        self.eab.store(&kid, &secret)?;
        self.record(vec![Event::EabKeyCreated(EabKeyCreated {
            kid: kid.clone(),
            name: req.name,
            allowed_dns: req.allowed_dns,
            allowed_ips: req.allowed_ips,
            profiles: req.profiles,
            created_at: now_unix(),
        })])
        .await?;
        tracing::info!(%kid, "EAB key created");
        Ok((kid, secret))
    }

    pub async fn revoke_eab_key(&self, kid: &str) -> Result<(), AppError> {
        let key = self.eab_key(kid)?.ok_or_else(|| AppError::NotFound(format!("no EAB key {kid:?}")))?;
        if !key.revoked {
            self.record(vec![Event::EabKeyRevoked(EabKeyRevoked { kid: kid.to_string() })]).await?;
        }
        self.eab.remove(kid)?;
        tracing::info!(%kid, "EAB key revoked");
        Ok(())
    }
}
