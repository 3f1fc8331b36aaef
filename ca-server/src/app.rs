//! Wiring: open (or create) the data dir, the event store and the issuing CA, and hold
//! the shared state the gRPC and HTTP front ends use.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ca_core::ca::{self, CaMaterial, IssuingCa, der_to_pem};
use ca_core::event::{CaInitialized, Event};
use ca_core::issue::{Authority, PublicUrls};
use ca_core::policy::Policy;
use ca_core::signer::SoftwareSigner;
use ca_storage::EventStore;

use crate::config::Config;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::signing::SigningPool;

/// Files inside a data dir.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn log(&self) -> PathBuf {
        self.0.join("log")
    }
    /// With the PostgreSQL backend: this instance's local replica of the shared log.
    pub fn replica(&self) -> PathBuf {
        self.0.join("pg-replica")
    }
    pub fn keys(&self) -> PathBuf {
        self.0.join("keys")
    }
    pub fn intermediate_key(&self) -> PathBuf {
        self.keys().join("intermediate.key")
    }
    pub fn root_key(&self) -> PathBuf {
        self.keys().join("root.key")
    }
    pub fn root_pem(&self) -> PathBuf {
        self.0.join("root.pem")
    }
    pub fn intermediate_pem(&self) -> PathBuf {
        self.0.join("intermediate.pem")
    }
    pub fn chain_pem(&self) -> PathBuf {
        self.0.join("chain.pem")
    }
    /// The admin client credential's certificate chain (leaf, issuing CA, root).
    pub fn admin_pem(&self) -> PathBuf {
        self.0.join("admin.pem")
    }
    /// Its PKCS#8 key (mode 0600).
    pub fn admin_key(&self) -> PathBuf {
        self.0.join("admin.key")
    }
}

/// Open the store of a data dir, with an error that says what to do when another process
/// holds it (sled allows one process per database).
pub fn open_store(dir: &Path) -> Result<EventStore, AppError> {
    open_store_with(dir, ca_storage::StoreOptions::default())
}

/// [`open_store`] with explicit options (the server passes `[storage]` from its config).
pub fn open_store_with(dir: &Path, opts: ca_storage::StoreOptions) -> Result<EventStore, AppError> {
    fs::create_dir_all(dir)?;
    EventStore::open_with(&DataDir(dir.to_path_buf()).log(), opts).map_err(|e| open_error(dir, &e))
}

/// Open the event store the config names: the embedded log in the data dir, or a local
/// replica of the shared PostgreSQL log (the data dir keeps the keys either way).
pub fn open_store_for(config: &Config, opts: ca_storage::StoreOptions) -> Result<EventStore, AppError> {
    let dir = &config.data_dir;
    let url = match (config.storage.backend, &config.storage.url) {
        (crate::config::Backend::Sled, _) => return open_store_with(dir, opts),
        (crate::config::Backend::Postgres, Some(url)) => url,
        (crate::config::Backend::Postgres, None) => {
            return Err(AppError::Config(
                "[storage] backend = \"postgres\" needs url (or --storage-url)".into(),
            ));
        }
    };
    fs::create_dir_all(dir)?;
    let instance = config.storage.instance.clone().unwrap_or_else(|| {
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        // The pid keeps two processes of one host and config apart: the lease row treats
        // its own name as a restart of itself, so names must differ between instances.
        format!("{} pid {} (gRPC {})", host.trim(), std::process::id(), config.grpc_addr)
    });
    let scheme = if config.grpc.insecure { "http" } else { "https" };
    let grpc_url =
        config.storage.grpc_url.clone().unwrap_or_else(|| format!("{scheme}://{}", config.grpc_addr));
    let mut pg = ca_storage::PgOptions::new(url.clone(), instance).grpc_url(grpc_url);
    if let Some(ms) = config.storage.lease_ttl_ms {
        pg = pg.lease_ttl(std::time::Duration::from_millis(ms.max(100)));
    }
    EventStore::open_postgres(&DataDir(dir.to_path_buf()).replica(), opts, pg)
        .map_err(|e| AppError::Config(format!("cannot open the event log in PostgreSQL: {e}")))
}

/// The hint about a second process only where it can be the cause: sled's file lock.
fn open_error(dir: &Path, e: &ca_storage::StoreError) -> AppError {
    let locked = matches!(e, ca_storage::StoreError::Locked(_));
    let hint = if locked { " (is another ca-server using this data dir?)" } else { "" };
    AppError::Config(format!("cannot open the event log in {}: {e}{hint}", dir.display()))
}

/// Open an existing data dir for inspection only (no projection catch-up, no appends).
pub fn open_store_read_only(dir: &Path) -> Result<EventStore, AppError> {
    let log = DataDir(dir.to_path_buf()).log();
    if !log.exists() {
        return Err(AppError::Config(format!("{} holds no event log", dir.display())));
    }
    EventStore::open_with(&log, ca_storage::StoreOptions::default().read_only(true))
        .map_err(|e| open_error(dir, &e))
}

/// Make sure the store holds a CA: reuse the one recorded, or generate a dev CA (or take
/// `import`) and record it. Returns every issuing CA ready to sign, oldest generation first
/// (the last one issues), and whether the CA was created now. With `offline_root`, a
/// generated root's key (and a copy of root.pem) goes to that directory instead of the
/// data dir.
pub fn ensure_ca(
    store: &EventStore,
    dir: &Path,
    config: &Config,
    import: Option<CaMaterial>,
    offline_root: Option<&Path>,
) -> Result<(Vec<Arc<IssuingCa>>, bool), AppError> {
    let dd = DataDir(dir.to_path_buf());
    if let Some(ca) = store.ca()? {
        if import.is_some() {
            return Err(AppError::Config(format!(
                "{} already holds a CA; import into an empty data dir",
                dir.display()
            )));
        }
        crate::keyfiles::check_permissions(&dd)?;
        let signer = crate::pkcs11::issuing_signer(config, &dd)?;
        let gen0 = IssuingCa::new(ca.intermediate_der.clone(), ca.root_der.clone(), signer).map_err(|e| {
            match &config.ca.pkcs11 {
                Some(p) => AppError::Config(format!(
                    "{} does not match the issuing CA certificate recorded in {}: {e}",
                    crate::pkcs11::describe(p),
                    dir.display()
                )),
                None => e.into(),
            }
        })?;
        let mut issuers = vec![Arc::new(gen0)];
        // With a shared store another instance may have rotated while this one was down: a
        // key not copied here yet is waited for (`issuer_follow.rs`; nothing is issued
        // meanwhile if it is the newest), as it is when the rotation happens while running.
        // Embedded, nobody else can bring it: the start fails, naming the key.
        let shared = store.role() != ca_storage::Role::Single;
        for r in store.issuers()? {
            let signer = match crate::issuer_keys::open_issuing_key(&dd, config, &r.key_ref) {
                Ok(s) => s,
                Err(e) if shared => {
                    tracing::warn!(
                        generation = r.generation,
                        key_ref = %r.key_ref,
                        error = %e,
                        "a recorded issuer's key is not on this instance; waiting for it"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ica =
                IssuingCa::new(r.certificate_der, ca.root_der.clone(), signer)?.with_generation(r.generation);
            issuers.push(Arc::new(ica));
        }
        if let Some(current) = issuers.last() {
            write_public_files(&dd, &current.root_der, &current.cert_der)?;
        }
        return Ok((issuers, false));
    }

    let material = match import {
        Some(m) => m,
        // An HSM key is made only on purpose, by `init --pkcs11`, never by a first `serve`.
        None if config.ca.pkcs11.is_some() => {
            return Err(AppError::Config(format!(
                "{} holds no CA and [ca.pkcs11] is set: create it with `ca-server init --pkcs11 --config FILE`",
                dir.display()
            )));
        }
        None => {
            tracing::info!(algorithm = %config.ca.key_algorithm, "initializing a new dev CA");
            ca::generate(config.ca.key_algorithm, &config.ca.name, time::OffsetDateTime::now_utc())?
        }
    };
    // Keys first: a CaInitialized event must never point at a key we failed to keep.
    // Encrypted PKCS#8 when `[ca] key_passphrase_*` is set (the passphrase is read first, so
    // a missing one fails before anything is written).
    let pass = crate::keyfiles::passphrase(&config.ca)?;
    fs::create_dir_all(dd.keys())?;
    set_mode(&dd.keys(), 0o700)?;
    if let Some(ik) = &material.intermediate_key {
        write_secret(&dd.intermediate_key(), crate::keyfiles::encode_key(ik, pass.as_ref())?.as_bytes())?;
    }
    if let Some(rk) = &material.root_key {
        let root_file = crate::keyfiles::encode_key(rk, pass.as_ref())?;
        match offline_root {
            Some(out) => write_offline_root(out, root_file.as_bytes(), &material.root_der)?,
            None => write_secret(&dd.root_key(), root_file.as_bytes())?,
        }
    }
    if let Some(p) = &pass {
        tracing::info!(setting = p.source(), "CA keys written encrypted (PKCS#8, PBES2)");
    }
    drop(pass);
    let signer: Arc<dyn ca_core::signer::Signer> = match &material.intermediate_key {
        Some(ik) => Arc::new(SoftwareSigner::from_pkcs8(ik.der())?),
        // No key in the material: it is in the token (`init --pkcs11` just made it).
        None => crate::pkcs11::issuing_signer(config, &dd)?,
    };
    let ica = IssuingCa::new(material.intermediate_der.clone(), material.root_der.clone(), signer)?;
    store.append_blocking(vec![Event::CaInitialized(CaInitialized {
        root_der: material.root_der.clone(),
        intermediate_der: material.intermediate_der.clone(),
        key_algorithm: material.algorithm,
        imported: material.imported,
    })])?;
    write_public_files(&dd, &material.root_der, &material.intermediate_der)?;
    Ok((vec![Arc::new(ica)], true))
}

/// `init --offline-root DIR`: the root key (0600) and a copy of root.pem into DIR (0700),
/// for the operator to take off the server.
fn write_offline_root(out: &Path, key_file: &[u8], root_der: &[u8]) -> Result<(), AppError> {
    fs::create_dir_all(out)
        .map_err(|e| AppError::Config(format!("creating the offline root dir {}: {e}", out.display())))?;
    set_mode(out, 0o700)?;
    let key = out.join("root.key");
    if key.exists() {
        return Err(AppError::Config(format!("{} already exists; give an empty directory", key.display())));
    }
    write_secret(&key, key_file)?;
    write_atomic(&out.join("root.pem"), der_to_pem(root_der).as_bytes(), 0o644)?;
    tracing::info!(dir = %out.display(), "root key written to the offline root directory; none is kept in the data dir");
    Ok(())
}

/// `root.pem`, `intermediate.pem` and `chain.pem` of the current issuer.
pub(crate) fn write_public_files(dd: &DataDir, root: &[u8], int: &[u8]) -> Result<(), AppError> {
    write_atomic(&dd.root_pem(), der_to_pem(root).as_bytes(), 0o644)?;
    write_atomic(&dd.intermediate_pem(), der_to_pem(int).as_bytes(), 0o644)?;
    let mut chain = der_to_pem(int);
    if int != root {
        chain.push_str(&der_to_pem(root));
    }
    write_atomic(&dd.chain_pem(), chain.as_bytes(), 0o644)
}

/// Private keys: created with mode 0600 from the start (never briefly world-readable).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), AppError> {
    write_atomic(path, bytes, 0o600)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AppError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    set_mode(path, mode)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), AppError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    let _ = (path, mode);
    Ok(())
}

/// Shared state of a running server.
pub struct App {
    pub store: EventStore,
    pub authority: Arc<Authority>,
    pub pool: SigningPool,
    pub metrics: Arc<Metrics>,
    /// Serializes revocations: check-then-append must not race with itself.
    pub revoke_lock: tokio::sync::Mutex<()>,
    /// Serializes issuer rotations: two cannot both take the next generation.
    pub rotate_lock: tokio::sync::Mutex<()>,
    /// Issuers the log records whose keys this instance lacks (generation, key_ref):
    /// `issuer_follow.rs` installs them once the key is here; `/readyz` names them.
    pub issuers_waiting: std::sync::Mutex<Vec<(u32, String)>>,
    pub started: Instant,
    pub public_url: String,
    /// Every issuer's CRLs and OCSP answers.
    pub revocation: Arc<crate::revocation::Registry>,
    /// The data dir (key files, EAB secrets).
    pub data_dir: PathBuf,
    /// The configuration it started with (`[ca]` name, key passphrase, rotation warning
    /// and `[ca.pkcs11]` are what rotation needs).
    pub config: Config,
    /// The ACME frontend's counters (rendered with the rest at `/metrics`).
    pub acme_metrics: Arc<crate::acme::metrics::AcmeMetrics>,
    /// Per-caller authorization on gRPC (`[[authz.rules]]`).
    pub authz: Arc<crate::authz::Authz>,
    /// SignCsr per caller identity (`[grpc] max_issuance_per_minute`).
    pub issuance_limits: crate::grpc_limits::IssuanceLimiter,
}

impl App {
    /// `issuers`: every issuing CA, oldest generation first; the last one issues.
    pub fn new(
        config: &Config,
        store: EventStore,
        issuers: Vec<Arc<IssuingCa>>,
        public_url: String,
    ) -> Result<Self, AppError> {
        let policy = Policy::new(config.policy.clone())?;
        let urls = PublicUrls::from_base(&public_url)?;
        let (first, rest) = issuers
            .split_first()
            .ok_or_else(|| AppError::Config("the data dir holds no issuing CA".into()))?;
        let authority = Arc::new(Authority::new(first.clone(), policy, config.profiles.clone(), &urls)?);
        for ca in rest {
            authority.install(ca.clone(), true)?;
        }
        let metrics = Arc::new(Metrics::default());
        let revocation = crate::revocation::Registry::new(
            store.clone(),
            &issuers,
            config.revocation.clone(),
            &public_url,
            metrics.clone(),
        )?;
        // Before any request: a recorded issuer without its key here blocks issuance from
        // the start, not only once `issuer_follow` has looked.
        let waiting = store
            .issuers()?
            .into_iter()
            .filter(|r| issuers.iter().all(|c| c.generation != r.generation))
            .map(|r| (r.generation, r.key_ref))
            .collect();
        let authz = Arc::new(crate::authz::Authz::new(
            &config.authz,
            &config.policy,
            config.grpc.insecure,
            metrics.clone(),
        )?);
        Ok(App {
            issuance_limits: crate::grpc_limits::IssuanceLimiter::new(&config.grpc, metrics.clone()),
            authz,
            revocation,
            pool: SigningPool::new(config.workers(), config.signing.queue_depth, metrics.clone()),
            store,
            authority,
            metrics,
            revoke_lock: tokio::sync::Mutex::new(()),
            rotate_lock: tokio::sync::Mutex::new(()),
            issuers_waiting: std::sync::Mutex::new(waiting),
            started: Instant::now(),
            public_url,
            data_dir: config.data_dir.clone(),
            config: config.clone(),
            acme_metrics: Arc::default(),
        })
    }

    /// Why this instance must not issue now, if it must not: the log records an issuer newer
    /// than its current one whose key is not here (a takeover before the operator copied
    /// the key after a `ca rotate`). Issuing from the older issuer would undo the rotation.
    pub fn newer_issuer_missing(&self) -> Option<String> {
        let current = self.authority.ca().generation;
        let waiting = self.issuers_waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.iter().filter(|(g, _)| *g > current).max_by_key(|(g, _)| *g).map(|(g, key_ref)| {
            format!(
                "issuer generation {g} is in the log but its key ({key_ref}) is not on this instance; \
                 it issues again once the key is copied here"
            )
        })
    }

    /// Issuer `generation` (whose chain goes with its certificates); the current one if the
    /// generation is unknown, which no recorded certificate can name.
    pub fn issuer_of(&self, generation: u32) -> Arc<IssuingCa> {
        self.authority.issuer(generation).unwrap_or_else(|| self.authority.ca())
    }
}

/// Now, in unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
