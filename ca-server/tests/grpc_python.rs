//! A non-Rust gRPC client against the real server: Python's grpcio (C core, its own TLS
//! and HTTP/2) with the admin credential issues a certificate that `openssl verify`
//! accepts, recorded under the admin identity; without a client certificate it is refused.
//!
//! grpcio and grpcio-tools come from PyPI at pinned versions, installed once with
//! `python3 -m pip install --target` under the cargo target dir and reused by later runs
//! (scripts/test.sh apt-installs python3 and python3-pip when missing). No skip: a machine
//! that cannot install them fails this test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ca_proto::v1::GetCertificateRequest;
use common::*;

/// Pinned PyPI versions (grpcio-tools bundles protoc; it pins the protobuf runtime range).
const PY_PACKAGES: &[&str] = &["grpcio==1.85.1", "grpcio-tools==1.85.1", "protobuf==7.36.2"];

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ca_client.py");
const PROTO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");

/// The directory holding grpcio (for PYTHONPATH), installing it on first use. One per
/// Python minor version and package set; a marker file says the install completed.
fn grpcio_dir() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (ok, ver) =
        run(Command::new("python3").args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]));
    assert!(ok, "python3 is needed (scripts/test.sh installs it): {ver}");
    let tag = PY_PACKAGES.join("-").replace("==", "-");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("py{}-{tag}", ver.trim()));
    let marker = dir.join(".installed");
    if marker.exists() {
        return dir;
    }
    let (ok, out) = run(Command::new("python3").args(["-m", "pip", "--version"]));
    assert!(ok, "python3 -m pip is needed (scripts/test.sh installs python3-pip): {out}");
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, out) = run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--target"])
        .arg(&dir)
        .args(PY_PACKAGES));
    assert!(ok, "pip install {PY_PACKAGES:?} into {}: {out}", dir.display());
    std::fs::write(&marker, PY_PACKAGES.join("\n")).unwrap();
    dir
}

/// Run ca_client.py against `server`; `with_cert` presents the admin credential.
fn python_client(server: &Server, work: &Path, with_cert: bool) -> (bool, String) {
    let data = &server.dir;
    let target = server.grpc.strip_prefix("https://").expect("a TLS server");
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .args(["--proto-root", PROTO_ROOT, "--target", target, "--root"])
        .arg(data.join("root.pem"))
        .arg("--csr")
        .arg(work.join("req.pem"))
        .arg("--out")
        .arg(work.join("issued.pem"))
        .env("PYTHONPATH", grpcio_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if with_cert {
        cmd.arg("--cert").arg(data.join("admin.pem")).arg("--key").arg(data.join("admin.key"));
    }
    run(&mut cmd)
}

/// `key=value` from the script's output.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_with_the_admin_credential_issues_a_certificate_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let work = tmp.path();
    openssl_p256_csr(
        work,
        "req.key",
        "req.pem",
        "/CN=py.example.internal",
        &["-addext", "subjectAltName=DNS:py.example.internal"],
    );

    let (ok, out) = python_client(&server, work, true);
    assert!(ok, "ca_client.py: {out}");
    eprintln!("{out}");
    assert!(field(&out, "ca_chain_pem_bytes").is_some_and(|n| n.parse::<usize>().unwrap() > 0), "{out}");
    assert_eq!(field(&out, "chain_len"), Some("2"), "issuing CA and root: {out}");
    let serial = field(&out, "serial").expect("serial").to_string();

    // Verified by openssl against the root alone (the PEM carries the issuing CA).
    let issued = work.join("issued.pem");
    let root = server.dir.join("root.pem");
    let (ok, v) = openssl(
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            issued.to_str().unwrap(),
            "-purpose",
            "sslserver",
            issued.to_str().unwrap(),
        ],
        work,
    );
    assert!(ok && v.contains(": OK"), "openssl verify: {v}");
    let (ok, text) =
        openssl(&["x509", "-in", issued.to_str().unwrap(), "-noout", "-ext", "subjectAltName"], work);
    assert!(ok && text.contains("DNS:py.example.internal"), "{text}");

    // The recorded requester is the identity of the certificate grpcio presented.
    let info = server
        .client()
        .await
        .get_certificate(GetCertificateRequest { serial })
        .await
        .expect("GetCertificate")
        .into_inner()
        .certificate
        .expect("certificate");
    assert_eq!(info.requester, "grpc:spiffe://ca-server/admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_without_a_client_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let work = tmp.path();
    openssl_p256_csr(work, "req.key", "req.pem", "/CN=nocert.example.internal", &[]);
    let before = next_seq(&server);

    let (ok, out) = python_client(&server, work, false);
    assert!(!ok, "refused: {out}");
    eprintln!("refused: {out}");
    // The handshake fails, so the very first RPC cannot reach the service.
    assert_eq!(field(&out, "error").map(|e| e.split(' ').next().unwrap()), Some("UNAVAILABLE"), "{out}");
    assert!(field(&out, "ca_chain_pem_bytes").is_none(), "no RPC got through: {out}");
    // grpcio's TLS stack logs the server's alert: the refusal is the missing certificate.
    assert!(out.contains("CERTIFICATE_REQUIRED"), "{out}");
    assert!(!work.join("issued.pem").exists());
    assert_eq!(next_seq(&server), before, "nothing was issued");
}
