//! The ACME frontend against real ACME clients from Debian packages (certbot for now),
//! run as subprocesses on loopback. `pebble-challtestsrv` is the DNS server for the
//! server's validation lookups (it answers A 127.0.0.1 for every name), the clients answer
//! the challenges themselves, and every result is checked with openssl (verify, OCSP, CRL).
//! A missing client or tool fails the test, naming the Debian package.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use common::acme::{ChallSrv, free_port};
use common::interop::*;

const EMAIL: &str = "ops@example.internal";

/// A ca-server whose validation resolves names through `chall`'s DNS and connects to
/// `http_port` / `tls_port` on loopback.
fn start_server(tmp: &Path, chall: &ChallSrv, http_port: u16, tls_port: u16, config: &str) -> Server {
    let cfg = tmp.join("ca.toml");
    std::fs::write(&cfg, config).unwrap();
    let args = [
        "--acme-http-port".to_string(),
        http_port.to_string(),
        "--acme-tls-port".to_string(),
        tls_port.to_string(),
        "--acme-dns-resolver".to_string(),
        format!("127.0.0.1:{}", chall.dns),
        "--acme-allow-loopback".to_string(),
        "--config".to_string(),
        cfg.display().to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&tmp.join("data"), &argv)
}

fn directory(server: &Server) -> String {
    format!("https://{}/acme/directory", server.acme)
}

fn copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    to.to_path_buf()
}

// ---------------------------------------------------------------------------------------
// certbot

struct Certbot {
    bin: PathBuf,
    config: PathBuf,
    work: PathBuf,
    logs: PathBuf,
    root: PathBuf,
    server_url: String,
}

impl Certbot {
    fn new(tmp: &Path, server: &Server) -> Certbot {
        let bin = require_tool("certbot", "certbot");
        let base = tmp.join("certbot");
        let (config, work, logs) = (base.join("config"), base.join("work"), base.join("logs"));
        for d in [&config, &work, &logs] {
            std::fs::create_dir_all(d).unwrap();
        }
        Certbot { bin, config, work, logs, root: server.dir.join("root.pem"), server_url: directory(server) }
    }

    fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(sub)
            .arg("--server")
            .arg(&self.server_url)
            .arg("--config-dir")
            .arg(&self.config)
            .arg("--work-dir")
            .arg(&self.work)
            .arg("--logs-dir")
            .arg(&self.logs)
            .args(["--non-interactive", "-v"])
            .env("REQUESTS_CA_BUNDLE", &self.root);
        c
    }
}

#[test]
fn certbot_http01_issues_then_revokes_and_ocsp_and_crl_say_revoked() {
    require_tool("openssl", "openssl");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let chall = ChallSrv::start();
    let port = free_port();
    let server = start_server(tmp, &chall, port, chall.tlsalpn01, "");
    let certbot = Certbot::new(tmp, &server);
    let name = "certbot.example.internal";

    let mut c = certbot.command("certonly");
    c.args(["--standalone", "--preferred-challenges", "http"])
        .args(["--http-01-port", &port.to_string(), "--http-01-address", "127.0.0.1"])
        .args(["--agree-tos", "-m", EMAIL, "-d", name]);
    let o = run_bounded(&mut c, tmp, "certbot-certonly", CLIENT_TIMEOUT);
    expect_success(&o, &server, &[&certbot.logs]);

    let live = certbot.config.join("live").join(name);
    let cert = copy(&live.join("cert.pem"), &tmp.join("cert.pem"));
    let chain = copy(&live.join("chain.pem"), &tmp.join("chain.pem"));
    verify_chain(tmp, &server.dir.join("root.pem"), &chain, &cert);
    assert!(sans_of(tmp, &cert).contains(&format!("DNS:{name}")));
    let serial = serial_of(tmp, &cert);
    let out = ocsp_check(tmp, &server, &cert);
    assert!(out.contains(&format!("{}: good", cert.display())), "before revocation: {out}");

    let mut c = certbot.command("revoke");
    c.arg("--cert-path").arg(live.join("cert.pem")).args([
        "--reason",
        "keycompromise",
        "--no-delete-after-revoke",
    ]);
    let o = run_bounded(&mut c, tmp, "certbot-revoke", CLIENT_TIMEOUT);
    expect_success(&o, &server, &[&certbot.logs]);

    let out = assert_ocsp_revoked(tmp, &server, &cert);
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    let crl = assert_crl_lists(tmp, &server, &cert, &serial);
    assert!(crl.contains("Key Compromise"), "{crl}");
}
