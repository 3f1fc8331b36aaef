//! The ACME (RFC 8555) frontend: HTTPS listener, one file per resource, shared plumbing,
//! and the validation authority (`va`). State changes are events in the same log as every
//! other; each answer leaves only after its event is durable. Objects are read back from
//! the store's ACME index and folded by `ca_core::acme::model`.

pub mod account;
pub mod admin;
pub mod ari;
pub mod authz;
pub mod cert;
pub mod config;
pub mod directory;
pub mod eab;
pub mod finalize;
pub mod limits;
pub mod metrics;
pub mod nonce;
pub mod order;
pub mod plumbing;
pub mod tls;
pub mod va;
mod validation;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use ca_core::Event;
use ca_core::acme::b64u;
use ca_core::acme::index::AcmeKey;
use ca_core::acme::model::{self, Account, Authz, Order};
use ring::rand::{SecureRandom, SystemRandom};

use crate::app::App;
use crate::error::AppError;
pub use config::AcmeConfig;

/// The ACME frontend's shared state.
pub struct Acme {
    pub app: Arc<App>,
    pub cfg: AcmeConfig,
    /// Base URL (no trailing slash); every resource is under `{base}/acme/`.
    pub base: String,
    pub nonces: nonce::NonceStore,
    pub va: va::Validator,
    pub metrics: Arc<metrics::AcmeMetrics>,
    pub eab: eab::EabSecrets,
    /// `[acme.limits]`.
    pub limits: limits::Limiters,
    /// Profiles ACME orders may name.
    pub profiles: Vec<String>,
    pub default_profile: String,
    rng: SystemRandom,
    /// Authorizations whose validation runs in this process.
    validating: Mutex<HashSet<String>>,
    /// Orders whose finalize is issuing in this process.
    finalizing: Mutex<HashSet<String>>,
    /// Check-then-append sections, sharded by object id (accounts by key thumbprint).
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Acme {
    pub fn new(
        app: Arc<App>,
        cfg: AcmeConfig,
        base: String,
        va: va::Validator,
    ) -> Result<Arc<Self>, AppError> {
        let known: Vec<String> = app.authority.profiles().names().map(str::to_string).collect();
        let profiles = if cfg.profiles.is_empty() { known.clone() } else { cfg.profiles.clone() };
        if let Some(p) = profiles.iter().find(|p| !known.contains(p)) {
            return Err(AppError::Config(format!(
                "[acme] profiles names {p:?}, which is not a configured profile"
            )));
        }
        let default_profile = match &cfg.default_profile {
            Some(p) => p.clone(),
            None => app.authority.profiles().get("")?.0.to_string(),
        };
        if !profiles.contains(&default_profile) {
            return Err(AppError::Config(format!(
                "[acme] default profile {default_profile:?} is not among the ACME profiles {profiles:?}"
            )));
        }
        let eab = eab::EabSecrets::new(app.data_dir.join("acme-eab"));
        Ok(Arc::new(Acme {
            limits: limits::Limiters::new(cfg.limits.clone(), app.acme_metrics.clone()),
            metrics: app.acme_metrics.clone(),
            app,
            cfg,
            base,
            nonces: nonce::NonceStore::default(),
            va,
            eab,
            profiles,
            default_profile,
            rng: SystemRandom::new(),
            validating: Mutex::new(HashSet::new()),
            finalizing: Mutex::new(HashSet::new()),
            locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        }))
    }

    /// `{base}/acme/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/acme/{path}", self.base)
    }

    /// A new object id: 128 random bits, unpadded base64url.
    pub fn new_id(&self) -> String {
        let mut b = [0u8; 16];
        // The OS RNG failing is not recoverable; a zero id would collide and be refused.
        let _ = self.rng.fill(&mut b);
        b64u(b)
    }

    /// The lock for object `id`'s check-then-append sections.
    pub async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let h = id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        self.locks[(h % self.locks.len() as u64) as usize].lock().await
    }

    /// The durable events of one ACME object, in log order.
    pub(crate) fn events_of(&self, key: &AcmeKey) -> Result<Vec<Event>, AppError> {
        Ok(self.app.store.acme_events(key)?.into_iter().map(|(_, e)| e).collect())
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>, AppError> {
        Ok(model::fold_account(&self.events_of(&AcmeKey::Account(id.to_string()))?))
    }

    pub fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, AppError> {
        let events = self.events_of(&AcmeKey::AccountKey(thumbprint.to_string()))?;
        match model::account_for_thumbprint(thumbprint, &events) {
            Some(id) => self.account(&id),
            None => Ok(None),
        }
    }

    pub fn order(&self, id: &str) -> Result<Option<Order>, AppError> {
        Ok(model::fold_order(&self.events_of(&AcmeKey::Order(id.to_string()))?))
    }

    pub fn authz(&self, id: &str) -> Result<Option<Authz>, AppError> {
        Ok(model::fold_authz(id, &self.events_of(&AcmeKey::Authz(id.to_string()))?))
    }

    /// An order's authorizations, in its order.
    pub fn order_authzs(&self, order: &Order) -> Result<Vec<Authz>, AppError> {
        let mut out = Vec::with_capacity(order.authz_ids.len());
        for id in &order.authz_ids {
            if let Some(a) = self.authz(id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Record ACME events durably; returns once they are.
    pub async fn record(&self, events: Vec<Event>) -> Result<(), AppError> {
        self.app.store.append(events).await?;
        Ok(())
    }
}

/// The resource a path names, for metrics (a fixed set: ids never become labels).
pub fn resource_name(path: &str) -> &'static str {
    let rest = path.strip_prefix("/acme/").unwrap_or("");
    let first = rest.split('/').next().unwrap_or("");
    match first {
        "directory" => "directory",
        "new-nonce" => "new-nonce",
        "new-account" => "new-account",
        "acct" if rest.ends_with("/orders") => "orders",
        "acct" => "account",
        "key-change" => "key-change",
        "new-order" => "new-order",
        "order" if rest.ends_with("/finalize") => "finalize",
        "order" => "order",
        "authz" => "authz",
        "chall" => "challenge",
        "cert" => "certificate",
        "revoke-cert" => "revoke-cert",
        "renewal-info" => "renewal-info",
        _ => "other",
    }
}

/// Every ACME route, with the shared decoration.
pub fn router(acme: Arc<Acme>) -> Router {
    use plumbing::method_not_allowed as nope;
    Router::new()
        .route("/acme/directory", get(directory::directory).post(nope))
        .route("/acme/new-nonce", get(directory::new_nonce_get).head(directory::new_nonce_head).post(nope))
        .route("/acme/new-account", post(account::new_account).get(nope))
        .route("/acme/acct/{id}", post(account::account).get(nope))
        .route("/acme/acct/{id}/orders", post(account::orders).get(nope))
        .route("/acme/key-change", post(account::key_change).get(nope))
        .route("/acme/new-order", post(order::new_order).get(nope))
        .route("/acme/order/{id}", post(order::order).get(nope))
        .route("/acme/order/{id}/finalize", post(finalize::finalize).get(nope))
        .route("/acme/authz/{id}", post(authz::authz).get(nope))
        .route("/acme/chall/{id}/{kind}", post(authz::challenge).get(nope))
        .route("/acme/cert/{serial}", post(cert::certificate).get(nope))
        .route("/acme/revoke-cert", post(cert::revoke_cert).get(nope))
        .route("/acme/renewal-info/{cert_id}", get(ari::renewal_info).post(nope))
        .fallback(|| async { plumbing::AcmeError::not_found("no such ACME resource") })
        .layer(axum::middleware::from_fn_with_state(acme.clone(), plumbing::decorate))
        .layer(axum::extract::DefaultBodyLimit::max(plumbing::MAX_BODY + 1))
        .with_state(acme)
}
