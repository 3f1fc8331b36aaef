//! The command-line client and offline commands, as a person would use them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::process::Command;

use common::*;

#[test]
fn cli_client_signs_gets_revokes_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let work = tmp.path();
    openssl_p256_csr(work, "k.pem", "r.csr", "/CN=cli.example.internal", &[]);
    let client = |args: &[&str]| {
        run(Command::new(BIN).arg("client").args(server.cli_conn()).args(args).current_dir(work))
    };

    let (ok, out) = client(&["sign", "--csr", "r.csr", "--profile", "server-client", "--out", "cert.pem"]);
    assert!(ok, "{out}");
    let serial = out.lines().find_map(|l| l.strip_prefix("serial ")).expect("serial line").trim().to_string();
    let (ok, out) =
        openssl(&["x509", "-in", "cert.pem", "-noout", "-ext", "extendedKeyUsage,subjectAltName"], work);
    assert!(
        ok && out.contains("TLS Web Server Authentication, TLS Web Client Authentication")
            && out.contains("DNS:cli.example.internal"),
        "{out}"
    );

    let (ok, out) = client(&["get", "--serial", &serial]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "valid");
    assert_eq!(v["profile"], "server-client");

    let (ok, out) = client(&["revoke", "--serial", &serial, "--reason", "superseded"]);
    assert!(ok, "{out}");
    let (ok, out) = client(&["get", "--serial", &serial]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["revocation_reason"].as_str()),
        (Some("revoked"), Some("superseded"))
    );

    let (ok, out) = client(&["list", "--status", "revoked"]);
    assert!(ok && out.lines().count() == 1 && out.contains(&serial), "{out}");
    let (ok, out) = client(&["revoke", "--serial", &serial, "--reason", "bogus"]);
    assert!(!ok && out.contains("unknown revocation reason"), "{out}");
    let (ok, out) = client(&["get", "--serial", "00ff"]);
    assert!(!ok && out.contains("no certificate"), "{out}");
}

#[test]
fn init_creates_keys_0600_and_refuses_a_second_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ok, out) =
        run(Command::new(BIN).args(["init", "--key-algorithm", "ecdsa-p384", "--data-dir"]).arg(&dir));
    assert!(ok, "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in ["keys/intermediate.key", "keys/root.key"] {
            let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{k}");
        }
    }
    let (ok, out) = openssl(&["x509", "-in", "root.pem", "-noout", "-text"], &dir);
    assert!(ok && out.contains("NIST CURVE: P-384") && out.contains("CA:TRUE"), "{out}");
    let (ok, out) = run(Command::new(BIN).args(["init", "--data-dir"]).arg(&dir));
    assert!(!ok && out.contains("already holds a CA"), "{out}");

    // Import: the generated intermediate + key into a fresh dir.
    let dir2 = tmp.path().join("imported");
    let (ok, out) = run(Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&dir2)
        .arg("--import-cert")
        .arg(dir.join("intermediate.pem"))
        .arg("--import-key")
        .arg(dir.join("keys/intermediate.key"))
        .arg("--import-chain")
        .arg(dir.join("root.pem")));
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(dir2.join("root.pem")).unwrap(), std::fs::read(dir.join("root.pem")).unwrap());
    assert!(!dir2.join("keys/root.key").exists(), "an imported CA has no root key here");
    let (ok, out) = run(Command::new(BIN).args(["events", "--data-dir"]).arg(&dir2));
    assert!(ok && out.contains("\"imported\":true") && out.contains("ecdsa-p384"), "{out}");
    let (ok, out) = run(Command::new(BIN).args(["audit", "rebuild", "--data-dir"]).arg(&dir2));
    assert!(ok && out.contains("rebuilt projections from 2 records"), "{out}");
}
