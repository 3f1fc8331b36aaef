//! The ACME frontend against real ACME clients from Debian packages — certbot and lego —
//! run as subprocesses on loopback. `pebble-challtestsrv` is the DNS server for the
//! server's validation lookups (it answers A 127.0.0.1 for every name), the clients answer
//! the challenges themselves, and every result is checked with openssl (verify, OCSP, CRL).
//! A missing client or tool fails the test, naming the Debian package.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

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

// ---------------------------------------------------------------------------------------
// lego

struct Lego {
    bin: PathBuf,
    path: PathBuf,
    root: PathBuf,
    server_url: String,
}

impl Lego {
    fn new(tmp: &Path, server: &Server) -> Lego {
        let bin = require_tool("lego", "lego");
        Lego { bin, path: tmp.join("lego"), root: server.dir.join("root.pem"), server_url: directory(server) }
    }

    /// `lego` with the global flags for `domains`; append the challenge flags and the command.
    fn command(&self, domains: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--server")
            .arg(&self.server_url)
            .args(["--email", EMAIL, "--accept-tos"])
            .arg("--path")
            .arg(&self.path)
            .env("LEGO_CA_CERTIFICATES", &self.root);
        for d in domains {
            c.args(["--domains", d]);
        }
        c
    }

    /// lego's file names: `*` becomes `_`.
    fn cert(&self, first_domain: &str) -> PathBuf {
        self.path.join("certificates").join(format!("{}.crt", first_domain.replace('*', "_")))
    }

    fn issuer(&self, first_domain: &str) -> PathBuf {
        self.path.join("certificates").join(format!("{}.issuer.crt", first_domain.replace('*', "_")))
    }
}

/// Issue with lego (`challenge` = its challenge flags), verify with openssl; returns the
/// leaf (lego's `.crt` is leaf + issuer, which `openssl verify` reads the first of).
fn lego_issue(
    tmp: &Path,
    server: &Server,
    lego: &Lego,
    domains: &[&str],
    challenge: &[&str],
    env: &[(&str, &str)],
) -> PathBuf {
    let mut c = lego.command(domains);
    c.args(challenge).arg("run");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run_bounded(&mut c, tmp, "lego-run", CLIENT_TIMEOUT);
    expect_success(&o, server, &[]);
    let cert = copy(&lego.cert(domains[0]), &tmp.join("lego-cert.pem"));
    let issuer = copy(&lego.issuer(domains[0]), &tmp.join("lego-issuer.pem"));
    verify_chain(tmp, &server.dir.join("root.pem"), &issuer, &cert);
    let sans = sans_of(tmp, &cert);
    for d in domains {
        assert!(sans.contains(&format!("DNS:{d}")), "{d} in {sans}");
    }
    cert
}

#[test]
fn lego_http01_issues_then_revokes_and_ocsp_says_revoked() {
    require_tool("openssl", "openssl");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let chall = ChallSrv::start();
    let port = free_port();
    let server = start_server(tmp, &chall, port, chall.tlsalpn01, "");
    let lego = Lego::new(tmp, &server);
    let name = "lego-http.example.internal";
    let listen = format!("127.0.0.1:{port}");

    let cert = lego_issue(tmp, &server, &lego, &[name], &["--http", "--http.port", &listen], &[]);
    let serial = serial_of(tmp, &cert);
    let out = ocsp_check(tmp, &server, &cert);
    assert!(out.contains(&format!("{}: good", cert.display())), "before revocation: {out}");

    let mut c = lego.command(&[name]);
    c.args(["revoke", "--reason", "1", "--keep"]);
    let o = run_bounded(&mut c, tmp, "lego-revoke", CLIENT_TIMEOUT);
    expect_success(&o, &server, &[]);

    let out = assert_ocsp_revoked(tmp, &server, &cert);
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert_crl_lists(tmp, &server, &cert, &serial);
}

#[test]
fn lego_tls_alpn01_issues_a_chain_openssl_verifies() {
    require_tool("openssl", "openssl");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let chall = ChallSrv::start();
    let port = free_port();
    let server = start_server(tmp, &chall, chall.http01, port, "");
    let lego = Lego::new(tmp, &server);
    let listen = format!("127.0.0.1:{port}");
    lego_issue(tmp, &server, &lego, &["lego-tls.example.internal"], &["--tls", "--tls.port", &listen], &[]);
}

/// The `EXEC_PATH` hook for lego's `exec` DNS provider: `present <fqdn> <value>` sets the
/// TXT record in pebble-challtestsrv through its management API, `cleanup` clears it.
/// python3 (on every Debian) does the HTTP.
fn write_dns_hook(dir: &Path, management: u16) -> PathBuf {
    let script = format!(
        r#"#!/bin/sh
set -eu
case "$1" in
  present) op=set-txt ;;
  cleanup) op=clear-txt ;;
  *) exit 0 ;;
esac
echo "dns hook: $op $2 ${{3:-}}" >&2
exec python3 - "$op" "$2" "${{3:-}}" <<'EOF'
import json, sys, urllib.request
op, host, value = sys.argv[1:4]
body = {{"host": host}} if op == "clear-txt" else {{"host": host, "value": value}}
req = urllib.request.Request(
    "http://127.0.0.1:{management}/" + op,
    data=json.dumps(body).encode(),
    headers={{"Content-Type": "application/json"}},
)
urllib.request.urlopen(req, timeout=10).read()
EOF
"#
    );
    let path = dir.join("dns-hook.sh");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn lego_dns01_exec_issues_a_wildcard_chain_openssl_verifies() {
    require_tool("openssl", "openssl");
    require_tool("python3", "python3");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let chall = ChallSrv::start();
    let server =
        start_server(tmp, &chall, chall.http01, chall.tlsalpn01, "[policy]\nallow_wildcard_names = true\n");
    let lego = Lego::new(tmp, &server);
    let hook = write_dns_hook(tmp, chall.management);
    let resolver = format!("127.0.0.1:{}", chall.dns);
    // Both names share `_acme-challenge.wild.example.internal`; lego's exec provider solves
    // them one after the other and waits EXEC_SEQUENCE_INTERVAL (default 60 s) between.
    lego_issue(
        tmp,
        &server,
        &lego,
        &["*.wild.example.internal", "wild.example.internal"],
        &["--dns", "exec", "--dns.resolvers", &resolver, "--dns.disable-cp"],
        &[
            ("EXEC_PATH", hook.to_str().unwrap()),
            ("EXEC_POLLING_INTERVAL", "1"),
            ("EXEC_PROPAGATION_TIMEOUT", "30"),
            ("EXEC_SEQUENCE_INTERVAL", "1"),
        ],
    );
}
