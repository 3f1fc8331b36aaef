//! The CA keys at rest: permission checks at start, encrypted PKCS#8 with a passphrase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// `serve` on `dir` that is expected to exit (not to become ready): (success, output).
fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn serve_refuses_key_files_readable_by_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ok, out) = run(Command::new(BIN).args(["init", "--data-dir"]).arg(&dir));
    assert!(ok, "{out}");

    let key = dir.join("keys/intermediate.key");
    chmod(&key, 0o644);
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok, "serve must refuse a 0644 key: {out}");
    assert!(out.contains(&key.display().to_string()) && out.contains("0644"), "{out}");
    assert!(out.contains(&format!("chmod 600 {}", key.display())), "{out}");
    chmod(&key, 0o600);

    let root = dir.join("keys/root.key");
    chmod(&root, 0o640);
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok && out.contains(&format!("chmod 600 {}", root.display())), "{out}");
    chmod(&root, 0o600);

    let admin = dir.join("admin.key");
    chmod(&admin, 0o604);
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok && out.contains(&format!("chmod 600 {}", admin.display())), "{out}");
    chmod(&admin, 0o600);

    let keys = dir.join("keys");
    chmod(&keys, 0o755);
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok && out.contains(&format!("chmod 700 {}", keys.display())), "{out}");
    chmod(&keys, 0o700);

    // All fixed: it starts.
    let server = Server::start(&dir);
    assert_eq!(server.http_get("/healthz").0, 200);
}

#[test]
fn keys_encrypted_with_a_passphrase_from_the_environment() {
    const PASS: &str = "s3cret-Passphrase-for-tests";
    const WRONG: &str = "not-the-Passphrase-9";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let config = tmp.path().join("ca.toml");
    std::fs::write(&config, "[ca]\nkey_passphrase_env = \"CA_TEST_KEY_PASS\"\n").unwrap();
    let cfg = config.to_str().unwrap();

    let (ok, out) = run(Command::new(BIN)
        .args(["init", "--config", cfg, "--data-dir"])
        .arg(&dir)
        .env("CA_TEST_KEY_PASS", PASS));
    assert!(ok, "{out}");
    for k in ["keys/intermediate.key", "keys/root.key"] {
        let text = std::fs::read_to_string(dir.join(k)).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "{k}: not encrypted");
        let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{k}");
    }

    // openssl reads what we wrote, with the passphrase and only with it.
    let keys = dir.join("keys");
    let (ok, out) =
        openssl(&["pkey", "-in", "intermediate.key", "-passin", &format!("pass:{PASS}"), "-noout"], &keys);
    assert!(ok, "openssl pkey with the right passphrase: {out}");
    let (ok, out) =
        openssl(&["pkey", "-in", "root.key", "-passin", &format!("pass:{PASS}"), "-noout"], &keys);
    assert!(ok, "openssl pkey root.key: {out}");
    let (ok, _) =
        openssl(&["pkey", "-in", "intermediate.key", "-passin", &format!("pass:{WRONG}"), "-noout"], &keys);
    assert!(!ok, "openssl must fail with a wrong passphrase");

    // A wrong passphrase: refused, naming the key, without the passphrase.
    let (ok, out) = serve_expecting_exit(&dir, &["--config", cfg], &[("CA_TEST_KEY_PASS", WRONG)]);
    assert!(!ok, "{out}");
    assert!(out.contains("wrong passphrase") && out.contains("intermediate.key"), "{out}");
    assert!(!out.contains(WRONG) && !out.contains(PASS), "the passphrase leaked: {out}");
    assert!(out.contains("CA_TEST_KEY_PASS"), "names the setting: {out}");

    // The variable unset: refused, naming it.
    let (ok, out) = serve_expecting_exit(&dir, &["--config", cfg], &[]);
    assert!(!ok && out.contains("CA_TEST_KEY_PASS") && out.contains("not set"), "{out}");

    // No passphrase configured at all: refused, naming the settings.
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok && out.contains("encrypted") && out.contains("key_passphrase_env"), "{out}");

    // The right one: it starts and signs.
    let server = Server::start_with_env(&dir, &["--config", cfg], &[("CA_TEST_KEY_PASS", PASS)]);
    assert_eq!(server.http_get("/healthz").0, 200);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = server.client().await;
        let r = c
            .sign_csr(ca_proto::v1::SignCsrRequest {
                csr: csr_for(&["enc.example.internal"]),
                profile: String::new(),
                validity_seconds: 0,
            })
            .await
            .expect("sign with the decrypted key");
        assert!(!r.into_inner().certificate_der.is_empty());
    });
    drop(server);
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
    assert!(!log.contains(PASS) && !log.contains(WRONG), "the passphrase is in the log");
}

#[test]
fn first_serve_with_a_passphrase_file_writes_encrypted_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let pass_file = tmp.path().join("ca.pass");
    std::fs::write(&pass_file, "file-passphrase-123\n").unwrap();
    let config = tmp.path().join("ca.toml");
    std::fs::write(&config, format!("[ca]\nkey_passphrase_file = {:?}\n", pass_file.to_str().unwrap()))
        .unwrap();
    let cfg = config.to_str().unwrap();

    // A passphrase file others can read is refused.
    chmod(&pass_file, 0o644);
    let (ok, out) = serve_expecting_exit(&dir, &["--config", cfg], &[]);
    assert!(!ok && out.contains("0600 or 0400") && out.contains("chmod 600"), "{out}");
    assert!(!dir.join("keys/intermediate.key").exists(), "nothing written before the check");

    chmod(&pass_file, 0o400);
    let server = Server::start_with(&dir, &["--config", cfg]);
    let text = std::fs::read_to_string(dir.join("keys/intermediate.key")).unwrap();
    assert!(text.contains("ENCRYPTED PRIVATE KEY"), "first serve writes encrypted keys");
    server.stop();
    let (ok, out) = openssl(
        &["pkey", "-in", "intermediate.key", "-passin", "pass:file-passphrase-123", "-noout"],
        &dir.join("keys"),
    );
    assert!(ok, "{out}");
    // And it restarts from the encrypted key.
    let server = Server::start_with(&dir, &["--config", cfg]);
    assert_eq!(server.http_get("/healthz").0, 200);
}
