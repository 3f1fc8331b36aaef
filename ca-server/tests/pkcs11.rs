//! The issuing key in a PKCS#11 token: SoftHSM2 (Debian `softhsm2`, installed by
//! scripts/test.sh), a fresh token per test in its own token directory. Everything the
//! server signs with it is checked by `openssl`; the key object's attributes through
//! cryptoki.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::Path;
use std::process::Command;

use ca_proto::v1::*;
use common::acme::{AcmeEnv, ChallSrv, openssl_verify};
use common::hsm::{Hsm, KEY_LABEL, MODULE, PIN, write_secret};
use common::*;
use instant_acme::{ChallengeType, Identifier};

/// Issue a leaf over gRPC (admin credential over mTLS); writes it to `dir/name`; its serial.
async fn issue_grpc(server: &Server, host: &str, dir: &Path, name: &str) -> String {
    let mut c = server.client().await;
    let r = c
        .sign_csr(SignCsrRequest { csr: csr_for(&[host]), profile: String::new(), validity_seconds: 0 })
        .await
        .expect("SignCsr")
        .into_inner();
    std::fs::write(dir.join(name), ca_core::ca::der_to_pem(&r.certificate_der)).unwrap();
    r.serial
}

/// `openssl verify -CAfile root.pem -untrusted intermediate.pem LEAF`.
fn verify_leaf(data: &Path, leaf: &Path) {
    let (ok, out) = run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(data.join("root.pem"))
        .arg("-untrusted")
        .arg(data.join("intermediate.pem"))
        .arg(leaf));
    assert!(ok && out.contains(": OK"), "openssl verify: {out}");
}

/// `openssl ocsp` for `leaf` against the server, verified against the root; its output.
fn ocsp(server: &Server, data: &Path, leaf: &Path) -> String {
    let url = format!("http://{}/ocsp", server.http);
    let (ok, out) = run(Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(data.join("intermediate.pem"))
        .args(["-url", &url, "-CAfile"])
        .arg(data.join("root.pem"))
        .arg("-verify_other")
        .arg(data.join("intermediate.pem"))
        .arg("-cert")
        .arg(leaf));
    assert!(ok && out.contains("Response verify OK"), "openssl ocsp: {out}");
    out
}

/// Fetch `/crl`, check its signature with `openssl crl -verify` against the issuing CA (and
/// the chain to the root), and that it lists `serial`.
fn crl_lists(server: &Server, data: &Path, work: &Path, serial: &str) {
    let (st, der) = server.http_get("/crl");
    assert_eq!(st, 200);
    std::fs::write(work.join("crl.der"), der).unwrap();
    let (ok, out) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-CAfile",
            data.join("chain.pem").to_str().unwrap(),
            "-verify",
            "-noout",
            "-text",
        ],
        work,
    );
    assert!(ok && out.contains("verify OK"), "openssl crl: {out}");
    assert!(
        out.to_ascii_uppercase().contains(&serial.trim_start_matches('0').to_ascii_uppercase()),
        "{serial} not in {out}"
    );
}

/// A fresh token `token` under `dir`, its config (`ca.toml`) and `init --pkcs11 EXTRA` into
/// `dir/data`: (token, config file, data dir, init's output).
fn init_token_ca(
    dir: &Path,
    token: &str,
    extra: &[&str],
) -> (Hsm, std::path::PathBuf, std::path::PathBuf, String) {
    let hsm = Hsm::new(dir, token);
    let cfg = hsm.config(&dir.join("ca.toml"), KEY_LABEL, &hsm.pin_file, "");
    let data = dir.join("data");
    let (ok, out) = hsm.init(&data, &cfg, extra);
    assert!(ok, "init --pkcs11 {extra:?}: {out}");
    (hsm, cfg, data, out)
}

fn metric(server: &Server, name: &str) -> u64 {
    let (_, body) = server.http_get("/metrics");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

#[tokio::test]
async fn hsm_key_signs_grpc_and_acme_certificates_crls_and_ocsp_and_survives_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let (hsm, cfg, data, out) = init_token_ca(tmp.path(), "ca-hsm", &[]);
    assert!(!data.join("keys/intermediate.key").exists(), "no issuing key file with an HSM key");
    assert!(data.join("keys/root.key").exists(), "the root stays a software key");
    assert!(!out.contains(PIN), "{out}");
    let (ok, text) = openssl(&["x509", "-in", "intermediate.pem", "-noout", "-text"], &data);
    assert!(ok && text.contains("NIST CURVE: P-256") && text.contains("CA:TRUE"), "{text}");

    // The key object in the token: sensitive, never extractable, its value unreadable.
    inspect_key_in_child(&hsm, KEY_LABEL);

    // Serve with ACME validated against pebble-challtestsrv.
    let chall = ChallSrv::start();
    let mut args = chall.server_args();
    args.extend(["--config".to_string(), cfg.display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_env(&data, &argv, &hsm.env());
    let work = tmp.path().to_path_buf();

    let revoked = issue_grpc(&server, "revoked.example.internal", &work, "revoked.pem").await;
    verify_leaf(&data, &work.join("revoked.pem"));

    let env = AcmeEnv { chall, server, dir: tempfile::tempdir().unwrap() };
    let account = env.account().await;
    let (_, pem) =
        env.issue(&account, &[Identifier::Dns("acme.example.internal".into())], ChallengeType::Http01).await;
    openssl_verify(&data.join("root.pem"), &pem, &work);
    std::fs::write(work.join("acme.pem"), &pem).unwrap();
    let AcmeEnv { chall: _chall, server, .. } = env;

    let mut c = server.client().await;
    c.revoke(RevokeRequest {
        serial: revoked.clone(),
        reason: RevocationReason::KeyCompromise as i32,
        invalidity_date_unix: 0,
    })
    .await
    .expect("Revoke");
    crl_lists(&server, &data, &work, &revoked);
    let out = ocsp(&server, &data, &work.join("revoked.pem"));
    assert!(out.contains(": revoked"), "{out}");
    let out = ocsp(&server, &data, &work.join("acme.pem"));
    assert!(out.contains(": good"), "{out}");
    assert!(
        metric(&server, "ca_hsm_sign_total") >= 6,
        "certificates, CRLs and OCSP answers went through the token"
    );
    assert_eq!(metric(&server, "ca_hsm_sign_errors_total"), 0);
    let (st, body) = server.http_get("/readyz");
    assert_eq!(st, 200, "ready with the token key: {}", String::from_utf8_lossy(&body));

    // kill -9 and restart: the server opens the token key again and keeps issuing.
    server.kill9();
    let server = Server::start_with_env(&data, &["--config", cfg.to_str().unwrap()], &hsm.env());
    issue_grpc(&server, "after-restart.example.internal", &work, "after.pem").await;
    verify_leaf(&data, &work.join("after.pem"));
    let out = ocsp(&server, &data, &work.join("revoked.pem"));
    assert!(out.contains(": revoked"), "{out}");
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(!log.contains(PIN), "the PIN is in the server log");
}

#[tokio::test]
async fn delegated_ocsp_signer_is_certified_by_the_hsm_key() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::new(tmp.path(), "ca-hsm-ocsp");
    let cfg = hsm.config(
        &tmp.path().join("ca.toml"),
        KEY_LABEL,
        &hsm.pin_file,
        "[revocation]\nocsp_delegated_signer = true\n",
    );
    let data = tmp.path().join("data");
    let (ok, out) = hsm.init(&data, &cfg, &[]);
    assert!(ok, "init --pkcs11: {out}");
    let server = Server::start_with_env(&data, &["--config", cfg.to_str().unwrap()], &hsm.env());
    let work = tmp.path().to_path_buf();
    let good = issue_grpc(&server, "good.example.internal", &work, "good.pem").await;
    let bad = issue_grpc(&server, "bad.example.internal", &work, "bad.pem").await;
    assert_ne!(good, bad);
    let mut c = server.client().await;
    c.revoke(RevokeRequest {
        serial: bad,
        reason: RevocationReason::Superseded as i32,
        invalidity_date_unix: 0,
    })
    .await
    .expect("Revoke");
    let out = ocsp(&server, &data, &work.join("bad.pem"));
    assert!(out.contains(": revoked"), "{out}");
    let out = ocsp(&server, &data, &work.join("good.pem"));
    assert!(out.contains(": good"), "{out}");
    // The answer was signed by the delegated responder, not the issuing CA.
    let url = format!("http://{}/ocsp", server.http);
    let (ok, text) = openssl(
        &[
            "ocsp",
            "-issuer",
            data.join("intermediate.pem").to_str().unwrap(),
            "-url",
            &url,
            "-cert",
            "good.pem",
            "-noverify",
            "-resp_text",
        ],
        &work,
    );
    assert!(ok && text.contains("OCSP Signing"), "{text}");
}

#[tokio::test]
async fn p384_and_rsa_keys_in_the_token() {
    for (alg, curve_or_bits) in [("ecdsa-p384", "NIST CURVE: P-384"), ("rsa2048", "Public-Key: (2048 bit)")] {
        let tmp = tempfile::tempdir().unwrap();
        let (hsm, cfg, data, _) = init_token_ca(tmp.path(), &format!("ca-{alg}"), &["--key-algorithm", alg]);
        let (ok, text) = openssl(&["x509", "-in", "intermediate.pem", "-noout", "-text"], &data);
        assert!(ok && text.contains(curve_or_bits), "{alg}: {text}");
        let server = Server::start_with_env(&data, &["--config", cfg.to_str().unwrap()], &hsm.env());
        let work = tmp.path().to_path_buf();
        let serial = issue_grpc(&server, "leaf.example.internal", &work, "leaf.pem").await;
        verify_leaf(&data, &work.join("leaf.pem"));
        let mut c = server.client().await;
        c.revoke(RevokeRequest { serial: serial.clone(), reason: 0, invalidity_date_unix: 0 })
            .await
            .expect("Revoke");
        crl_lists(&server, &data, &work, &serial);
        let out = ocsp(&server, &data, &work.join("leaf.pem"));
        assert!(out.contains(": revoked"), "{alg}: {out}");
    }
}

#[test]
fn wrong_pin_missing_label_loose_pin_file_and_a_second_init_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::new(tmp.path(), "ca-hsm-errors");
    let cfg = hsm.config(&tmp.path().join("ca.toml"), KEY_LABEL, &hsm.pin_file, "");
    let data = tmp.path().join("data");
    let (ok, out) = hsm.init(&data, &cfg, &[]);
    assert!(ok, "init --pkcs11: {out}");

    // A second init with the same label (into another data dir) refuses, naming both.
    let (ok, out) = hsm.init(&tmp.path().join("data2"), &cfg, &[]);
    assert!(
        !ok && out.contains("already holds an object labelled") && out.contains("\"ca-hsm-errors\""),
        "{out}"
    );
    assert!(out.contains(KEY_LABEL), "{out}");
    // ed25519 is refused before the token is touched.
    let other = hsm.config(&tmp.path().join("ed.toml"), "ed-key", &hsm.pin_file, "");
    let (ok, out) = hsm.init(&tmp.path().join("data3"), &other, &["--key-algorithm", "ed25519"]);
    assert!(!ok && out.contains("ed25519 is not supported"), "{out}");

    let conf = hsm.conf.to_str().unwrap().to_string();
    let serve = |config: &Path| {
        serve_expecting_exit(&data, &["--config", config.to_str().unwrap()], &[("SOFTHSM2_CONF", &conf)])
    };
    let bad_pin = tmp.path().join("bad-pin");
    write_secret(&bad_pin, "not-the-pin\n");
    let (ok, out) = serve(&hsm.config(&tmp.path().join("bad-pin.toml"), KEY_LABEL, &bad_pin, ""));
    assert!(!ok && out.contains("refused the user PIN") && out.contains("bad-pin"), "{out}");
    assert!(!out.contains("not-the-pin"), "the PIN leaked: {out}");

    let (ok, out) = serve(&hsm.config(&tmp.path().join("no-key.toml"), "no-such-key", &hsm.pin_file, ""));
    assert!(!ok && out.contains("holds no private key labelled \"no-such-key\""), "{out}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hsm.pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, out) = serve(&cfg);
        assert!(!ok && out.contains("has mode 0644") && out.contains("chmod 600"), "{out}");
    }

    // And the same data dir with the right settings still starts.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hsm.pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let server = Server::start_with_env(&data, &["--config", cfg.to_str().unwrap()], &hsm.env());
    assert_eq!(server.http_get("/healthz").0, 200);
}

/// The test process cannot set `SOFTHSM2_CONF` for itself (no `unsafe` here), so checks
/// that talk to the token from this process run in a child: this same test binary, running
/// only `test` with the variable set and `spec` (lines) in `CA_TEST_PKCS11_CHILD`.
fn run_in_child(test: &str, hsm: &Hsm, spec: &[&str]) -> String {
    let (ok, out) = run(Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("CA_TEST_PKCS11_CHILD", spec.join("\n")));
    assert!(ok, "child {test}: {out}");
    out
}

fn inspect_key_in_child(hsm: &Hsm, label: &str) {
    let out = run_in_child("token_key_attributes", hsm, &[&hsm.token, hsm.pin_file.to_str().unwrap(), label]);
    assert!(out.contains("key attributes checked"), "{out}");
}

/// A session the token stops honouring (here: another session of the process logs the
/// user out, so every session loses its login) is reopened and the signature retried once;
/// the signature verifies. Run alone, it makes its token and key, then runs itself in a child.
#[test]
fn lost_sessions_are_reopened_and_the_signature_retried() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use std::sync::atomic::Ordering;

    let Ok(spec) = std::env::var("CA_TEST_PKCS11_CHILD") else {
        let tmp = tempfile::tempdir().unwrap();
        let hsm = Hsm::new(tmp.path(), "ca-hsm-reopen");
        let cfg =
            hsm.config(&tmp.path().join("ca.toml"), KEY_LABEL, &hsm.pin_file, "[signing]\nworkers = 2\n");
        let (ok, out) = hsm.init(&tmp.path().join("data"), &cfg, &[]);
        assert!(ok, "init --pkcs11: {out}");
        let out = run_in_child(
            "lost_sessions_are_reopened_and_the_signature_retried",
            &hsm,
            &[cfg.to_str().unwrap()],
        );
        assert!(out.contains("reopened and verified"), "{out}");
        return;
    };
    let config = ca_server::config::Config::load(Some(Path::new(spec.trim()))).unwrap();
    let signer = ca_server::pkcs11::open_key(&config, KEY_LABEL).unwrap();
    let verify = |sig: &[u8]| {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            signer.public_key_raw(),
        )
        .verify(b"to be signed", sig)
        .is_ok()
    };
    assert!(verify(&signer.sign(b"to be signed").unwrap()));
    assert_eq!(ca_server::pkcs11::SESSION_REOPENS.load(Ordering::Relaxed), 0);

    // The same module (dlopen gives this process's one instance): log the user out.
    let ctx = Pkcs11::new(config.ca.pkcs11.as_ref().unwrap().module.clone()).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "ca-hsm-reopen")
        .unwrap();
    ctx.open_ro_session(slot).unwrap().logout().unwrap();

    // Every pooled session is now without a login; each signature reopens its session.
    for _ in 0..4 {
        assert!(verify(&signer.sign(b"to be signed").unwrap()));
    }
    assert!(ca_server::pkcs11::SESSION_REOPENS.load(Ordering::Relaxed) >= 1);
    assert_eq!(ca_server::pkcs11::SIGN_ERRORS.load(Ordering::Relaxed), 0);
    println!("reopened and verified");
}

/// Through cryptoki: the private key object is sensitive (and always was), not extractable
/// (and never was), and C_GetAttributeValue refuses CKA_VALUE. Run by
/// [`inspect_key_in_child`]; run alone, it makes its own token and key first.
#[test]
fn token_key_attributes() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let Ok(spec) = std::env::var("CA_TEST_PKCS11_CHILD") else {
        let tmp = tempfile::tempdir().unwrap();
        let hsm = Hsm::new(tmp.path(), "ca-hsm-inspect");
        let cfg = hsm.config(&tmp.path().join("ca.toml"), KEY_LABEL, &hsm.pin_file, "");
        let (ok, out) = hsm.init(&tmp.path().join("data"), &cfg, &["--key-algorithm", "ecdsa-p384"]);
        assert!(ok, "init --pkcs11: {out}");
        inspect_key_in_child(&hsm, KEY_LABEL);
        return;
    };
    let mut parts = spec.lines();
    let (token, pin_file, label) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let pin = std::fs::read_to_string(pin_file).unwrap();
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token)
        .expect("the token");
    let session = ctx.open_ro_session(slot).unwrap();
    session.login(UserType::User, Some(&AuthPin::new(pin.trim_end().into()))).unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1, "one private key labelled {label}");
    let attrs = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sign,
            ],
        )
        .unwrap();
    for want in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
    ] {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
    let info = session.get_attribute_info(keys[0], &[AttributeType::Value]).unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "CKA_VALUE is {:?}", info[0]);
    let value = session.get_attributes(keys[0], &[AttributeType::Value]).unwrap();
    assert!(value.iter().all(|a| !matches!(a, Attribute::Value(_))), "CKA_VALUE was returned");
    println!("key attributes checked");
}

/// `ca rotate` with the issuing key in the token: the new issuing key is made in the token
/// too (`<key_label>-g1`, with the same attributes), certificates of both generations verify
/// against the root, and a kill -9 and restart opens both keys again.
#[tokio::test]
async fn rotation_makes_the_next_issuing_key_in_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (hsm, cfg, data, _) = init_token_ca(tmp.path(), "ca-hsm", &[]);
    let work = tmp.path().to_path_buf();
    let server = Server::start_with_env(&data, &["--config", cfg.to_str().unwrap()], &hsm.env());
    let old_serial = issue_grpc(&server, "old.example.internal", &work, "old.pem").await;
    std::fs::copy(data.join("intermediate.pem"), work.join("old-int.pem")).unwrap();

    let (ok, out) = run(Command::new(BIN).arg("ca").args(server.cli_conn()).arg("rotate"));
    assert!(ok, "ca rotate: {out}");
    assert!(!data.join("keys/issuing-1.key").exists(), "no key file for a token key: {out}");
    inspect_key_in_child(&hsm, &format!("{KEY_LABEL}-g1"));
    issue_grpc(&server, "new.example.internal", &work, "new.pem").await;
    verify_leaf(&data, &work.join("new.pem"));
    let (ok, text) = openssl(&["x509", "-in", "intermediate.pem", "-noout", "-subject"], &data);
    assert!(
        ok && text.contains("Intermediate CA G2"),
        "the data dir's intermediate.pem is the new issuer: {text}"
    );
    let (ok, v) = run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(data.join("root.pem"))
        .arg("-untrusted")
        .arg(work.join("old-int.pem"))
        .arg(work.join("old.pem")));
    assert!(ok && v.contains(": OK"), "a certificate of generation 0 still verifies: {v}");

    server.kill9();
    let server = Server::start_with_env(&data, &["--config", cfg.to_str().unwrap()], &hsm.env());
    issue_grpc(&server, "after.example.internal", &work, "after.pem").await;
    verify_leaf(&data, &work.join("after.pem"));
    // Generation 0's key still signs its CRL and OCSP answers after the restart.
    let mut c = server.client().await;
    c.revoke(RevokeRequest { serial: old_serial, reason: 0, invalidity_date_unix: 0 }).await.expect("Revoke");
    let (ok, out) = run(Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(work.join("old-int.pem"))
        .args(["-url", &format!("http://{}/ocsp", server.http), "-CAfile"])
        .arg(data.join("root.pem"))
        .arg("-verify_other")
        .arg(work.join("old-int.pem"))
        .arg("-cert")
        .arg(work.join("old.pem")));
    assert!(ok && out.contains("Response verify OK") && out.contains(": revoked"), "openssl ocsp: {out}");
    assert_eq!(metric(&server, "ca_hsm_sign_errors_total"), 0);
}
