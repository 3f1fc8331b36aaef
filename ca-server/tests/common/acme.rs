//! ACME test environment: a real `ca-server` with ACME on port 0, Debian's
//! `pebble-challtestsrv` as the challenge responder and DNS server (as instant-acme's own
//! tests use it against Pebble), and instant-acme as the client.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};

use super::{Server, http_request};

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `pebble-challtestsrv` on loopback ports of its own: DNS (A/AAAA answer loopback for
/// every name), http-01 and tls-alpn-01 responders, and its management API.
pub struct ChallSrv {
    child: Child,
    pub management: u16,
    pub dns: u16,
    pub http01: u16,
    pub tlsalpn01: u16,
}

pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

impl ChallSrv {
    pub fn start() -> ChallSrv {
        assert!(
            Path::new(CHALLTESTSRV).exists(),
            "{CHALLTESTSRV} is missing: install Debian's `pebble` package (scripts/test.sh does)"
        );
        let (management, dns, http01, tlsalpn01) = (free_port(), free_port(), free_port(), free_port());
        let child = Command::new(CHALLTESTSRV)
            .args(["-management", &format!("127.0.0.1:{management}")])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", &format!("127.0.0.1:{http01}")])
            .args(["-tlsalpn01", &format!("127.0.0.1:{tlsalpn01}")])
            .args(["-https01", ""])
            .args(["-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble-challtestsrv");
        let s = ChallSrv { child, management, dns, http01, tlsalpn01 };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", management)).is_ok() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pebble-challtestsrv did not start");
    }

    /// POST a management command (`add-http01`, `set-txt`, `add-tlsalpn01`, ...).
    pub fn command(&self, path: &str, body: serde_json::Value) {
        let body = body.to_string();
        let (status, _, resp) = http_request(
            &format!("127.0.0.1:{}", self.management),
            "POST",
            &format!("/{path}"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "challtestsrv {path}: {}", String::from_utf8_lossy(&resp));
    }

    /// The ca-server flags that point validation at this responder.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--acme-http-port".into(),
            self.http01.to_string(),
            "--acme-tls-port".into(),
            self.tlsalpn01.to_string(),
            "--acme-dns-resolver".into(),
            format!("127.0.0.1:{}", self.dns),
            "--acme-allow-loopback".into(),
        ]
    }
}

impl Drop for ChallSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ca-server with ACME validated against a `ChallSrv`.
pub struct AcmeEnv {
    pub chall: ChallSrv,
    pub server: Server,
    pub dir: tempfile::TempDir,
}

pub const RETRY: RetryPolicy =
    RetryPolicy::new().initial_delay(Duration::from_millis(50)).timeout(Duration::from_secs(20));

impl AcmeEnv {
    /// Start with `config` (TOML, may be empty) and extra flags.
    pub fn start(config: &str, extra: &[&str]) -> AcmeEnv {
        let dir = tempfile::tempdir().unwrap();
        let chall = ChallSrv::start();
        let cfg = dir.path().join("ca.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut args: Vec<String> = chall.server_args();
        args.push("--config".into());
        args.push(cfg.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_with(&dir.path().join("data"), &argv);
        AcmeEnv { chall, server, dir }
    }

    /// Restart the server on the same data dir and ports after a kill -9.
    pub fn restart_after_kill(self, config_extra: &[&str]) -> AcmeEnv {
        self.kill9().restart(config_extra)
    }

    /// `kill -9` the server, keeping what a restart needs; in between, the caller can wait
    /// for its clients to give up, so none of them reaches the restarted server.
    pub fn kill9(self) -> KilledAcmeEnv {
        let AcmeEnv { chall, server, dir } = self;
        let acme = server.acme.clone();
        server.kill9();
        KilledAcmeEnv { chall, dir, acme }
    }
}

/// An [`AcmeEnv`] whose server was killed: the challenge server, the data dir and the ACME
/// address, kept for [`KilledAcmeEnv::restart`].
pub struct KilledAcmeEnv {
    pub chall: ChallSrv,
    pub dir: tempfile::TempDir,
    acme: String,
}

impl KilledAcmeEnv {
    /// Start the server again on the same data dir, config and ports.
    pub fn restart(self, config_extra: &[&str]) -> AcmeEnv {
        let KilledAcmeEnv { chall, dir, acme } = self;
        let cfg = dir.path().join("ca.toml");
        let mut args: Vec<String> = chall.server_args();
        args.extend(["--config".to_string(), cfg.display().to_string()]);
        args.extend(config_extra.iter().map(|s| s.to_string()));
        // The same ACME address, so account and order URLs stay valid.
        let argv: Vec<String> = args;
        let mut argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        argv.extend(["--acme-addr", acme.as_str()]);
        let server = Server::start_with(&dir.path().join("data"), &argv);
        AcmeEnv { chall, server, dir }
    }
}

impl AcmeEnv {
    pub fn directory(&self) -> String {
        format!("https://{}/acme/directory", self.server.acme)
    }

    pub fn root_pem(&self) -> PathBuf {
        self.server.dir.join("root.pem")
    }

    pub async fn account(&self) -> Account {
        self.account_with(None).await.0
    }

    pub async fn account_with(&self, eab: Option<&ExternalAccountKey>) -> (Account, AccountCredentials) {
        Account::builder_with_root(self.root_pem())
            .unwrap()
            .create(
                &NewAccount {
                    contact: &["mailto:ops@example.internal"],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory(),
                eab,
            )
            .await
            .expect("create ACME account")
    }

    /// Answer every pending authorization of `order` with `kind` through the challenge
    /// server, ask for validation, and wait for the order to become ready.
    pub async fn authorize(&self, order: &mut Order, kind: ChallengeType) -> OrderStatus {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.expect("authorization");
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut ch = a.challenge(kind.clone()).unwrap_or_else(|| panic!("no {kind:?} challenge offered"));
            let ka = ch.key_authorization();
            let ident = ch.identifier().identifier.clone();
            match kind {
                ChallengeType::Http01 => self
                    .chall
                    .command("add-http01", serde_json::json!({"token": ch.token, "content": ka.as_str()})),
                ChallengeType::Dns01 => {
                    let Identifier::Dns(d) = ident else { panic!("dns-01 for {ident:?}") };
                    self.chall.command(
                        "set-txt",
                        serde_json::json!({"host": format!("_acme-challenge.{d}."), "value": ka.dns_value()}),
                    )
                }
                ChallengeType::TlsAlpn01 => {
                    let host = match ident {
                        Identifier::Dns(d) => d,
                        Identifier::Ip(ip) => ip.to_string(),
                        other => panic!("tls-alpn-01 for {other:?}"),
                    };
                    self.chall
                        .command("add-tlsalpn01", serde_json::json!({"host": host, "content": ka.as_str()}))
                }
                other => panic!("unsupported {other:?}"),
            }
            ch.set_ready().await.expect("challenge ready");
        }
        order.poll_ready(&RETRY).await.expect("poll order")
    }

    /// The whole flow: order, authorize, finalize, download. Returns the PEM chain.
    pub async fn issue(
        &self,
        account: &Account,
        idents: &[Identifier],
        kind: ChallengeType,
    ) -> (Order, String) {
        let mut order = account.new_order(&NewOrder::new(idents)).await.expect("new order");
        assert_eq!(self.authorize(&mut order, kind).await, OrderStatus::Ready);
        order.finalize().await.expect("finalize");
        let pem = order.poll_certificate(&RETRY).await.expect("certificate");
        (order, pem)
    }
}

/// `openssl verify` of a PEM chain (leaf first) against the server's root.
pub fn openssl_verify(root: &Path, chain_pem: &str, dir: &Path) {
    let chain = dir.join(format!("chain-{}.pem", std::process::id()));
    std::fs::write(&chain, chain_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(&chain)
        .arg(&chain)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The problem type an instant-acme error carries (`urn:...:malformed` -> `malformed`).
pub fn problem_type(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            p.r#type.as_deref().unwrap_or("").trim_start_matches("urn:ietf:params:acme:error:").to_string()
        }
        other => format!("not an ACME problem: {other}"),
    }
}

/// Run `ca-server acme ...` against the env's gRPC listener; stdout.
pub fn acme_cli(env: &AcmeEnv, args: &[&str]) -> String {
    let out = Command::new(super::BIN)
        .arg("acme")
        .args(env.server.cli_conn())
        .args(args)
        .output()
        .expect("run ca-server acme");
    assert!(out.status.success(), "ca-server acme {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `acme eab add`: (kid, HMAC key bytes).
pub fn eab_add(env: &AcmeEnv, args: &[&str]) -> (String, Vec<u8>) {
    let mut a = vec!["eab", "add"];
    a.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(acme_cli(env, &a).trim()).unwrap();
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        v["hmac_key"].as_str().unwrap(),
    )
    .unwrap();
    (v["kid"].as_str().unwrap().to_string(), key)
}

/// The leaf of a PEM chain, DER.
pub fn leaf_der(pem_chain: &str) -> Vec<u8> {
    pem::parse_many(pem_chain).unwrap()[0].contents().to_vec()
}
