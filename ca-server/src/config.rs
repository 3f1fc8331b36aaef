//! Server configuration: a TOML file (`--config`) overlaid by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ca_core::keys::KeyAlgorithm;
use ca_core::policy::PolicyConfig;
use ca_core::profile::Profiles;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    /// gRPC listen address (loopback by default).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for CA certificates, health and metrics.
    pub http_addr: SocketAddr,
    /// `[http]`: header read timeout and connection cap of the HTTP and ACME listeners.
    pub http: crate::http_conn::HttpLimits,
    /// Base URL written into certificates' CDP and AIA; defaults to `http://<http_addr>`.
    pub public_url: Option<String>,
    pub ca: CaConfig,
    pub signing: SigningConfig,
    pub policy: PolicyConfig,
    pub profiles: Profiles,
    pub revocation: crate::revocation::RevocationConfig,
    pub storage: StorageConfig,
    pub acme: crate::acme::AcmeConfig,
    pub grpc: GrpcConfig,
    /// `[[authz.rules]]`: per-caller authorization on gRPC (`authz.rs`).
    pub authz: crate::authz::AuthzConfig,
}

/// `[grpc]`: how the gRPC listener is secured and bounded, and its per-identity issuance limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Plaintext gRPC with no authentication (`--insecure-grpc`). Off by default: TLS with
    /// client certificates from this CA required.
    pub insecure: bool,
    /// Names in the listener's self-issued certificate [default: the listener's IP and
    /// `localhost`].
    pub tls_names: Vec<String>,
    /// A PEM bundle of other CAs whose client certificates the gRPC listener accepts
    /// besides this CA's (a SPIRE or corporate CA). Their callers get the `[[authz.rules]]`
    /// matching their identity, or the default rule for non-admins: the built-in admin
    /// identity is honoured only on a certificate this CA issued.
    pub client_ca_file: Option<std::path::PathBuf>,
    /// SignCsr per caller identity (a burst of this many, refilled over a minute) for callers
    /// whose rule sets no `max_issuance_per_minute`; 0 = unlimited. Default 600: ten a second
    /// per workload is far above what one service renews, yet one stolen credential
    /// cannot flood the log.
    pub max_issuance_per_minute: u64,
    /// The same for admin callers (the admin identity, rules with `admin = true`, every
    /// caller under `--insecure-grpc`); default 0 = unlimited: the operator's own tools
    /// and the load generator issue in bulk.
    pub admin_max_issuance_per_minute: u64,
    /// Identities tracked by the limit; beyond it the least informative are dropped.
    pub max_tracked_identities: usize,
    /// Open connections (handshaking or established); more are closed at once, like
    /// `[http] max_connections`.
    pub max_connections: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            insecure: false,
            tls_names: vec![],
            client_ca_file: None,
            max_issuance_per_minute: 600,
            admin_max_issuance_per_minute: 0,
            max_tracked_identities: 50_000,
            max_connections: 4096,
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sled` (embedded, the default) or `postgres` (shared by several instances: one
    /// writes, the others serve reads and take over; ARCHITECTURE.md).
    pub backend: Backend,
    /// The PostgreSQL URL (`postgres://user:password@host:port[,host:port]/db?
    /// target_session_attrs=read-write`); also `--storage-url` / `CA_STORAGE_URL`.
    pub url: Option<String>,
    /// How long the writer lease lasts without renewal: another instance takes over this
    /// long after the writer was last heard from (default 3000).
    pub lease_ttl_ms: Option<u64>,
    /// The gRPC URL other instances reach this one at while it writes (they have it issue
    /// their listener certificates); default `https://<bound gRPC address>` (`http://`
    /// with `--insecure-grpc`), so set it when binding 0.0.0.0.
    pub grpc_url: Option<String>,
    /// How other instances name this one when it is the writer (default: host name, pid
    /// and gRPC address). Must differ between instances: the lease treats a row naming
    /// this instance as its own, left by a restart, and takes it back at once.
    pub instance: Option<String>,
    /// Also `fdatasync` the log after each group-commit flush, so acknowledged events survive
    /// power loss, not only a process crash (see ARCHITECTURE.md). Costs one device flush
    /// per batch.
    pub fsync_each_batch: bool,
    /// sled's cache cap in MiB (default 16). sled overshoots it about threefold under
    /// inserts, so this is the main knob on the server's memory besides the log's size.
    pub cache_mb: Option<u64>,
    /// Free space (MiB) the data dir's file system keeps: below it, writes get UNAVAILABLE
    /// (reads, OCSP and CRLs go on) until space is freed (default 64; 0 turns it off, and a
    /// full disk then fails the store until a restart).
    pub min_free_mb: Option<u64>,
}

/// Which event store backs the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Postgres,
}

/// By hand: the URL may carry a password, and configs get printed.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("instance", &self.instance)
            .field("grpc_url", &self.grpc_url)
            .field("fsync_each_batch", &self.fsync_each_batch)
            .field("cache_mb", &self.cache_mb)
            .field("min_free_mb", &self.min_free_mb)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("ca-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http: Default::default(),
            public_url: None,
            ca: CaConfig::default(),
            signing: SigningConfig::default(),
            policy: PolicyConfig::default(),
            profiles: Profiles::default(),
            revocation: Default::default(),
            storage: StorageConfig::default(),
            acme: Default::default(),
            grpc: GrpcConfig::default(),
            authz: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// Organization and name prefix of a generated CA.
    pub name: String,
    pub key_algorithm: KeyAlgorithm,
    /// Encrypt the CA keys at rest with the passphrase in this environment variable (the
    /// variable's name, never the passphrase, goes here).
    pub key_passphrase_env: Option<String>,
    /// ... or with the passphrase in this file (mode 0600 or 0400; one trailing newline is
    /// dropped). At most one of the two.
    pub key_passphrase_file: Option<PathBuf>,
    /// Warn (log and metric) when the current issuing CA has less than this fraction of
    /// its lifetime left.
    pub rotation_warning_fraction: f64,
    /// `[ca.pkcs11]`: the issuing key lives in a PKCS#11 token (`pkcs11.rs`).
    pub pkcs11: Option<Pkcs11Config>,
}

/// `[ca.pkcs11]`: where the issuing CA's key is (made by `ca-server init --pkcs11`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the token (slot) holding the key.
    pub token_label: String,
    /// CKA_LABEL of the issuing key pair.
    pub key_label: String,
    /// File with the user PIN (mode 0600 or 0400; one trailing newline is dropped).
    pub pin_file: PathBuf,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            name: "ca-server Dev".into(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            key_passphrase_env: None,
            key_passphrase_file: None,
            rotation_warning_fraction: 0.2,
            pkcs11: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Signing threads; 0 means one per core.
    pub workers: usize,
    /// Requests that may wait for a signing thread; beyond it callers get RESOURCE_EXHAUSTED.
    pub queue_depth: usize,
    /// Async (tokio) threads serving gRPC and HTTP; 0 means half the cores, at least one.
    /// Signing is most of the CPU, so the I/O side needs fewer threads than the signers:
    /// on 2 cores one I/O thread cost 6-16 % less CPU per certificate than two and served
    /// more OCSP answers (BENCHMARKS.md).
    pub io_threads: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig { workers: 0, queue_depth: 4096, io_threads: 0 }
    }
}

impl Config {
    /// Load `path` if given, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, AppError> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::Config(format!("reading {}: {e}", path.display())))?;
        let cfg: Config =
            toml::from_str(&text).map_err(|e| AppError::Config(format!("{}: {e}", path.display())))?;
        if cfg.storage.cache_mb == Some(0) {
            return Err(AppError::Config(format!(
                "{}: [storage] cache_mb must be at least 1",
                path.display()
            )));
        }
        if cfg.ca.key_passphrase_env.is_some() && cfg.ca.key_passphrase_file.is_some() {
            return Err(AppError::Config(format!(
                "{}: [ca] key_passphrase_env and key_passphrase_file are both set; set only one",
                path.display()
            )));
        }
        Ok(cfg)
    }

    pub fn public_url(&self, bound_http: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{bound_http}"))
    }

    pub fn workers(&self) -> usize {
        if self.signing.workers > 0 { self.signing.workers } else { cores() }
    }

    /// tokio worker threads for the server's runtime (see [`SigningConfig::io_threads`]).
    pub fn io_threads(&self) -> usize {
        if self.signing.io_threads > 0 { self.signing.io_threads } else { (cores() / 2).max(1) }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, AppError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    }

    #[test]
    fn storage_cache_size_is_read_and_zero_is_refused() {
        let cfg = load_text("[storage]\ncache_mb = 48\n").unwrap();
        assert_eq!(cfg.storage.cache_mb, Some(48));
        assert_eq!(load_text("").unwrap().storage.cache_mb, None);
        let err = load_text("[storage]\ncache_mb = 0\n").unwrap_err().to_string();
        assert!(err.contains("cache_mb must be at least 1"), "{err}");
    }

    #[test]
    fn a_profiles_table_loads_as_the_readme_shows_it() {
        let cfg = load_text(
            "[profiles]\ndefault = \"server\"\n[profiles.server]\nusages = [\"server-auth\"]\n\
             default_validity_secs = 604800\nmax_validity_secs = 7776000\n\
             [profiles.short]\nusages = [\"client-auth\"]\ndefault_validity_secs = 3600\n\
             max_validity_secs = 86400\ndescription = \"one-hour client certificates\"\n",
        )
        .unwrap();
        assert_eq!(cfg.profiles.names().collect::<Vec<_>>(), ["server", "short"]);
        assert_eq!(cfg.profiles.describe("short").as_deref(), Some("one-hour client certificates"));
        let err =
            load_text("[profiles.server]\nusages = [\"server-auth\"]\nbogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn grpc_section_is_read_and_tls_is_the_default() {
        let cfg =
            load_text("[grpc]\ninsecure = true\ntls_names = [\"ca.internal\", \"10.0.0.5\"]\n").unwrap();
        assert!(cfg.grpc.insecure);
        assert_eq!(cfg.grpc.tls_names, ["ca.internal", "10.0.0.5"]);
        let default = load_text("").unwrap();
        assert!(!default.grpc.insecure && default.grpc.tls_names.is_empty());
        assert!(load_text("[grpc]\nplaintext = true\n").is_err(), "unknown keys are refused");
        assert_eq!(
            (default.grpc.max_issuance_per_minute, default.grpc.admin_max_issuance_per_minute),
            (600, 0)
        );
        assert_eq!(default.grpc.max_connections, 4096);
        assert_eq!(default.http.body_read_timeout_secs, 30);
        let cfg = load_text("[grpc]\nmax_connections = 7\n[http]\nbody_read_timeout_secs = 3\n").unwrap();
        assert_eq!((cfg.grpc.max_connections, cfg.http.body_read_timeout_secs), (7, 3));
    }

    #[test]
    fn acme_limits_are_read_with_defaults_and_strict() {
        let cfg = load_text("[acme.limits]\nnew_accounts_per_ip_per_hour = 3\n").unwrap();
        assert_eq!(cfg.acme.limits.new_accounts_per_ip_per_hour, 3);
        assert_eq!(cfg.acme.limits.pending_authorizations_per_account, 1000);
        assert!(load_text("[acme.limits]\nnew_accounts_per_hour = 3\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn key_passphrase_settings_are_read_and_exclusive() {
        let cfg = load_text("[ca]\nkey_passphrase_env = \"CA_KEY_PASS\"\n").unwrap();
        assert_eq!(cfg.ca.key_passphrase_env.as_deref(), Some("CA_KEY_PASS"));
        let cfg = load_text("[ca]\nkey_passphrase_file = \"/run/secrets/ca\"\n").unwrap();
        assert_eq!(cfg.ca.key_passphrase_file.as_deref(), Some(Path::new("/run/secrets/ca")));
        let err = load_text("[ca]\nkey_passphrase_env = \"A\"\nkey_passphrase_file = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("set only one"), "{err}");
    }

    #[test]
    fn pkcs11_section_is_read_and_strict() {
        let cfg = load_text(
            "[ca.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"ca\"\n\
             key_label = \"issuing\"\npin_file = \"/run/secrets/pin\"\n",
        )
        .unwrap();
        let p = cfg.ca.pkcs11.expect("[ca.pkcs11]");
        assert_eq!((p.token_label.as_str(), p.key_label.as_str()), ("ca", "issuing"));
        assert_eq!(p.pin_file, Path::new("/run/secrets/pin"));
        assert!(load_text("").unwrap().ca.pkcs11.is_none());
        let err = load_text("[ca.pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\nkey_label = \"k\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pin_file"), "{err}");
        assert!(
            load_text(
                "[ca.pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\nkey_label = \"k\"\n\
                 pin_file = \"/p\"\npin = \"1234\"\n"
            )
            .is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn io_threads_default_to_half_the_cores() {
        let cfg = load_text("[signing]\nio_threads = 3\n").unwrap();
        assert_eq!(cfg.io_threads(), 3);
        let default = Config::default().io_threads();
        assert_eq!(default, (cores() / 2).max(1));
        assert!(default >= 1);
    }
}
