//! Command-line interface (the names here are part of the public contract).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ca-server", version, about = "Event-sourced private certificate authority")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct DirArgs {
    /// Data directory (event log, CA keys, root.pem) [default: the config's, else ./ca-data].
    #[arg(long, env = "CA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keep the event log in this PostgreSQL database (as `[storage] backend = "postgres"`
    /// with this `url`); the data dir then holds the keys and a local replica.
    #[arg(long, env = "CA_STORAGE_URL", hide_env_values = true)]
    pub storage_url: Option<String>,
}

impl DirArgs {
    /// Load the config file (or defaults) and apply `--data-dir` over it.
    pub fn resolve(&self) -> Result<crate::config::Config, crate::error::AppError> {
        let mut c = crate::config::Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(url) = &self.storage_url {
            c.storage.backend = crate::config::Backend::Postgres;
            c.storage.url = Some(url.clone());
        }
        if c.storage.backend == crate::config::Backend::Postgres && c.storage.url.is_none() {
            return Err(crate::error::AppError::Config(
                "[storage] backend = \"postgres\" needs url (or --storage-url / CA_STORAGE_URL)".into(),
            ));
        }
        Ok(c)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the CA: gRPC API and HTTP (CA certificates, health, metrics).
    Serve {
        #[command(flatten)]
        dir: DirArgs,
        /// gRPC listen address [default: 127.0.0.1:50051]
        #[arg(long)]
        grpc_addr: Option<SocketAddr>,
        /// HTTP listen address [default: 127.0.0.1:8080]
        #[arg(long)]
        http_addr: Option<SocketAddr>,
        /// Base URL written into certificates' CRL and OCSP/caIssuers URLs [default: http://HTTP_ADDR]
        #[arg(long)]
        public_url: Option<String>,
        /// Serve gRPC in plaintext with no authentication (as `[grpc] insecure = true`);
        /// the default is TLS with client certificates from this CA required.
        #[arg(long)]
        insecure_grpc: bool,
        #[command(flatten)]
        acme: AcmeArgs,
    },
    /// Create the CA in an empty data dir (generated, or imported with --import-cert/--import-key).
    Init {
        #[command(flatten)]
        dir: DirArgs,
        /// Key algorithm for a generated CA: ecdsa-p256, ecdsa-p384, ed25519, rsa2048, rsa3072, rsa4096.
        #[arg(long)]
        key_algorithm: Option<String>,
        /// Existing issuing CA certificate (PEM) to import.
        #[arg(long, requires = "import_key")]
        import_cert: Option<PathBuf>,
        /// Its PKCS#8 private key (PEM).
        #[arg(long, requires = "import_cert")]
        import_key: Option<PathBuf>,
        /// The chain above the imported CA (PEM, ending with the root); omit for a self-signed CA.
        #[arg(long, requires = "import_cert")]
        import_chain: Option<PathBuf>,
        /// Write the generated root's key (and a copy of root.pem) into this directory
        /// (created 0700) instead of the data dir, for the operator to take offline.
        #[arg(long, conflicts_with = "import_cert")]
        offline_root: Option<PathBuf>,
        /// Generate the issuing key inside the PKCS#11 token of `[ca.pkcs11]` (in the
        /// --config file); the root stays a software key in the data dir and signs it.
        #[arg(long, conflicts_with = "import_cert")]
        pkcs11: bool,
    },
    /// Offline checks of the event log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Event store operations.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Print the event log as JSON lines.
    Events {
        #[command(flatten)]
        dir: DirArgs,
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// ACME operator commands (EAB keys, ARI renewal windows), over gRPC to a running server.
    Acme {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: AcmeCommand,
    },
    /// Issuing-CA operator commands (rotation, issuers), over gRPC to a running server.
    Ca {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// A gRPC client for people.
    Client {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: ClientCommand,
    },
}

/// How `ca-server client` and `ca-server acme` reach the gRPC listener.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Server gRPC address: `https://` for TLS with a client certificate (the default),
    /// `http://` for a server started with --insecure-grpc.
    #[arg(long, global = true, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// Data directory holding admin.pem, admin.key and root.pem.
    #[arg(long, global = true, env = "CA_DATA_DIR", default_value = "ca-data")]
    pub data_dir: PathBuf,
    /// Client certificate chain (PEM) [default: DATA_DIR/admin.pem]
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM) [default: DATA_DIR/admin.key]
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// CA certificate(s) to verify the server with (PEM) [default: DATA_DIR/root.pem]
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Name the server's certificate must carry.
    #[arg(long, global = true, default_value = "localhost")]
    pub server_name: String,
}

#[derive(Subcommand, Debug)]
pub enum AcmeCommand {
    /// External Account Binding keys.
    Eab {
        #[command(subcommand)]
        command: EabCommand,
    },
    /// Move a certificate's ARI suggested renewal window (asks its ACME client to renew
    /// in that window; a past window means "now"). Times: RFC 3339 or unix seconds.
    RenewalWindow {
        #[arg(long)]
        serial: String,
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Switch issuance to a new issuing CA. With the root key in the data dir, the server
    /// makes and signs it; with an offline root, `--csr-out` then `--import-signed`.
    /// Certificates of older issuers stay verifiable and revocable.
    Rotate {
        /// Offline root, step 1: write the next issuing CA's CSR (PEM) here.
        #[arg(long, conflicts_with = "import_signed")]
        csr_out: Option<PathBuf>,
        /// Offline root, step 2: the certificate the root signed for that CSR (PEM or DER).
        #[arg(long)]
        import_signed: Option<PathBuf>,
    },
    /// List issuing CAs (JSON lines): generation, subject, notAfter, current.
    Issuers,
}

#[derive(Subcommand, Debug)]
pub enum EabCommand {
    /// Create a key; prints its kid and HMAC key once (JSON).
    Add {
        /// Who it is for (a team, a cluster).
        #[arg(long)]
        name: String,
        /// Name rules narrowing the server policy for accounts bound with this key
        /// (`.team.internal`, `*.svc.team.internal`, `api.team.internal`); repeatable.
        #[arg(long = "allowed-dns")]
        allowed_dns: Vec<String>,
        /// IP ranges (CIDR) such accounts may get; repeatable.
        #[arg(long = "allowed-ips")]
        allowed_ips: Vec<String>,
        /// Profiles such accounts may order, comma separated (default: every ACME profile).
        #[arg(long, value_delimiter = ',')]
        profiles: Vec<String>,
    },
    /// List keys (JSON lines, without secrets).
    List,
    /// Revoke a key: accounts can no longer register with it.
    Revoke {
        /// The key id; base64url ids may begin with `-`, so it is never read as a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

/// ACME flags of `serve` (each overrides its `[acme]` setting).
#[derive(Args, Debug, Default)]
pub struct AcmeArgs {
    /// ACME HTTPS listen address [default: 127.0.0.1:8443]
    #[arg(long)]
    pub acme_addr: Option<SocketAddr>,
    /// Base URL written into the ACME directory [default: https://ACME_ADDR]
    #[arg(long)]
    pub acme_url: Option<String>,
    /// Port dialled for http-01 validation [default: 80]
    #[arg(long)]
    pub acme_http_port: Option<u16>,
    /// Port dialled for tls-alpn-01 validation [default: 443]
    #[arg(long)]
    pub acme_tls_port: Option<u16>,
    /// DNS server (ADDR:PORT) for every validation lookup [default: the system resolver]
    #[arg(long)]
    pub acme_dns_resolver: Option<SocketAddr>,
    /// Let validation dial loopback addresses (tests and local use only)
    #[arg(long)]
    pub acme_allow_loopback: bool,
    /// Do not serve ACME
    #[arg(long)]
    pub no_acme: bool,
}

impl AcmeArgs {
    pub fn apply(self, cfg: &mut crate::acme::AcmeConfig) {
        if let Some(a) = self.acme_addr {
            cfg.addr = a;
        }
        if self.acme_url.is_some() {
            cfg.base_url = self.acme_url;
        }
        if let Some(p) = self.acme_http_port {
            cfg.http_port = p;
        }
        if let Some(p) = self.acme_tls_port {
            cfg.tls_port = p;
        }
        if self.acme_dns_resolver.is_some() {
            cfg.dns_resolver = self.acme_dns_resolver;
        }
        if self.acme_allow_loopback {
            cfg.allow_loopback = true;
        }
        if self.no_acme {
            cfg.enabled = false;
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Copy the data dir's embedded (sled) log into an empty PostgreSQL database, verifying
    /// the chain as it goes; then run the server with `--storage-url` (or `[storage]`).
    Migrate {
        #[command(flatten)]
        dir: DirArgs,
        /// The database to copy into (`postgres://...`).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 0 with the head hash, or non-zero naming the first bad record.
    Verify {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Drop the projections (certificate index, revoked set, expiry index) and refold them
    /// from the log; prints how many records were replayed and the rate.
    Rebuild {
        #[command(flatten)]
        dir: DirArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Sign a CSR (PEM or DER); writes the certificate and its chain as PEM.
    Sign {
        #[arg(long)]
        csr: PathBuf,
        #[arg(long, default_value = "")]
        profile: String,
        /// Validity in seconds (0 = the profile default).
        #[arg(long, default_value_t = 0)]
        validity: u64,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate by serial (hex).
    Revoke {
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason name (keyCompromise, superseded, ...) or code.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Show one certificate and its status.
    Get {
        #[arg(long)]
        serial: String,
        /// Print the certificate PEM instead of the summary.
        #[arg(long)]
        pem: bool,
    },
    /// List certificates (all pages).
    List {
        /// valid, revoked, expired (default: all).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Issue a client credential for a workload (run as the admin): the key is generated
    /// here, the CSR is signed with the `client` profile; writes NAME.pem (leaf and chain)
    /// and NAME.key (0600). The identity is --spiffe-id, else the DNS name
    /// NAME.clients.ca-server.internal.
    IssueCredential {
        /// The workload's name (letters, digits, `-`): the file names, and the DNS identity
        /// when --spiffe-id is not given.
        #[arg(long)]
        name: String,
        /// A URI identity such as spiffe://corp.internal/ns/payments/api.
        #[arg(long)]
        spiffe_id: Option<String>,
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Validity in seconds (0 = the profile default).
        #[arg(long, default_value_t = 0)]
        validity: u64,
    },
    /// Stream log records from a sequence number, then live (JSON lines).
    Watch {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI once drew an EAB kid beginning with `-`; clap read it as a flag and the revoke failed.
    #[test]
    fn an_eab_kid_beginning_with_a_dash_is_a_value() {
        let cli = Cli::try_parse_from(["ca-server", "acme", "eab", "revoke", "-iknigntIEFYHJItKXe1aQ"])
            .map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Acme { command: AcmeCommand::Eab { command: EabCommand::Revoke { kid } }, .. },
        }) = cli
        else {
            panic!("not parsed as eab revoke: {cli:?}");
        };
        assert_eq!(kid, "-iknigntIEFYHJItKXe1aQ");
    }
}
