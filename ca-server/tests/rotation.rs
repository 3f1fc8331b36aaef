//! Issuing-CA rollover against the real server: `ca-server ca rotate` with the root key in
//! the data dir, and with an offline root (`--csr-out`, signed by `openssl x509 -req`,
//! `--import-signed`). Certificates of both issuers are checked with `openssl verify`,
//! their revocation with `openssl crl` and `openssl ocsp` at the URLs in their own CDP/AIA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::Path;
use std::process::Command;

use ca_proto::v1::*;
use common::acme::{AcmeEnv, openssl_verify};
use common::*;
use instant_acme::{ChallengeType, Identifier};
use x509_parser::prelude::*;

/// `ca-server ca <conn> ARGS`: (success, stdout+stderr).
fn ca_cli(server: &Server, args: &[&str]) -> (bool, String) {
    run(Command::new(BIN).arg("ca").args(server.cli_conn()).args(args))
}

/// (CRL distribution point URL, OCSP URL) of a certificate.
fn urls(der: &[u8]) -> (String, String) {
    let (_, x) = X509Certificate::from_der(der).unwrap();
    let mut crl = String::new();
    let mut ocsp = String::new();
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(d) => {
                for p in d.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                crl = u.to_string();
                            }
                        }
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(a) => {
                for d in a.iter() {
                    if d.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                        && let GeneralName::URI(u) = &d.access_location
                    {
                        ocsp = u.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    assert!(!crl.is_empty() && !ocsp.is_empty(), "CDP and AIA OCSP present");
    (crl, ocsp)
}

/// Path part of `http://host:port/path`.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_string()
}

struct Issued {
    serial: String,
    leaf: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

async fn sign(server: &Server, host: &str) -> Issued {
    let r = server
        .client()
        .await
        .sign_csr(SignCsrRequest { csr: csr_for(&[host]), profile: String::new(), validity_seconds: 0 })
        .await
        .expect("SignCsr")
        .into_inner();
    Issued { serial: r.serial, leaf: r.certificate_der, chain: r.chain_der }
}

/// A client credential of the issuer a rotation just added, presented as its leaf alone
/// (as `openssl s_client -cert` does), is accepted by the running server's gRPC listener.
async fn new_generation_client_leaf_is_accepted(server: &Server) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["worker.example.internal".to_string()]).unwrap();
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    let r = server
        .client()
        .await
        .sign_csr(SignCsrRequest { csr, profile: "client".into(), validity_seconds: 0 })
        .await
        .expect("a client credential")
        .into_inner();
    let leaf = ca_core::ca::der_to_pem(&r.certificate_der);
    let tls = server.ca_only_tls().identity(tonic::transport::Identity::from_pem(leaf, key.serialize_pem()));
    let ch = tonic::transport::Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connect with the leaf alone");
    let got = ca_proto::v1::certificate_authority_client::CertificateAuthorityClient::new(ch)
        .get_certificate(GetCertificateRequest { serial: r.serial })
        .await
        .expect("the new generation's client certificate is trusted without a restart")
        .into_inner();
    assert_eq!(got.certificate.unwrap().requester, "grpc:spiffe://ca-server/admin");
}

fn pem_of(ders: &[Vec<u8>]) -> String {
    ders.iter().map(|d| ca_core::ca::der_to_pem(d)).collect()
}

/// Write the leaf, its issuing CA and its chain under `prefix` in `dir`; `openssl verify`
/// against the root with only the certificate's own chain as untrusted.
fn write_and_verify(dir: &Path, prefix: &str, c: &Issued, root: &Path) {
    std::fs::write(dir.join(format!("{prefix}.pem")), ca_core::ca::der_to_pem(&c.leaf)).unwrap();
    std::fs::write(dir.join(format!("{prefix}-issuer.pem")), ca_core::ca::der_to_pem(&c.chain[0])).unwrap();
    std::fs::write(dir.join(format!("{prefix}-chain.pem")), pem_of(&c.chain)).unwrap();
    let (ok, out) = openssl(
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            &format!("{prefix}-chain.pem"),
            &format!("{prefix}.pem"),
        ],
        dir,
    );
    assert!(ok && out.contains(": OK"), "openssl verify {prefix}: {out}");
}

/// Fetch the CRL at the certificate's own CDP, verify it with its issuing CA, and say
/// whether it lists `serial`.
fn crl_lists(server: &Server, dir: &Path, prefix: &str, c: &Issued, serial: &str) -> bool {
    let (crl_url, _) = urls(&c.leaf);
    let (st, body) = server.http_get(&path_of(&crl_url));
    assert_eq!(st, 200, "GET {crl_url}");
    std::fs::write(dir.join(format!("{prefix}.crl")), body).unwrap();
    let (ok, out) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &format!("{prefix}.crl"),
            "-CAfile",
            &format!("{prefix}-issuer.pem"),
            "-noout",
            "-text",
        ],
        dir,
    );
    assert!(ok && out.contains("verify OK"), "openssl crl {prefix}: {out}");
    out.to_ascii_uppercase().contains(&format!("SERIAL NUMBER: {}", serial.to_ascii_uppercase()))
}

/// `openssl ocsp` at `path` on the server (default: the path of the certificate's own AIA
/// URL; the port changes across restarts); the status line.
fn ocsp_status(server: &Server, dir: &Path, prefix: &str, c: &Issued, path: Option<&str>) -> String {
    let (_, own) = urls(&c.leaf);
    let url = format!("http://{}{}", server.http, path.map_or_else(|| path_of(&own), str::to_string));
    let (ok, out) = openssl(
        &[
            "ocsp",
            "-issuer",
            &format!("{prefix}-issuer.pem"),
            "-cert",
            &format!("{prefix}.pem"),
            "-url",
            &url,
            "-CAfile",
            &format!("{prefix}-chain.pem"),
        ],
        dir,
    );
    assert!(ok && out.contains("Response verify OK"), "openssl ocsp {prefix} at {url}: {out}");
    out.lines().find(|l| l.starts_with(&format!("{prefix}.pem:"))).unwrap_or_default().to_string()
}

async fn own_chain(server: &Server, serial: &str) -> Vec<Vec<u8>> {
    server
        .client()
        .await
        .get_certificate(GetCertificateRequest { serial: serial.into() })
        .await
        .expect("GetCertificate")
        .into_inner()
        .chain_der
}

/// Everything that must hold after the rotation, before and after a restart.
async fn check_both_issuers(env: &AcmeEnv, work: &Path, old: &Issued, new: &Issued) {
    let server = &env.server;
    let root = server.dir.join("root.pem");
    write_and_verify(work, "old", old, &root);
    write_and_verify(work, "new", new, &root);
    assert!(crl_lists(server, work, "old", old, &old.serial), "the old issuer's CRL lists the revoked cert");
    assert!(!crl_lists(server, work, "new", new, &old.serial), "the new issuer's CRL lists only its own");
    assert!(ocsp_status(server, work, "old", old, None).contains("revoked"));
    assert!(ocsp_status(server, work, "new", new, None).contains("good"));
    // The new issuer does not vouch for the old issuer's serials (a CertID with the new
    // issuer's hashes and the old certificate's serial).
    let url = format!("http://{}/issuers/1/ocsp", server.http);
    let serial = format!("0x{}", old.serial);
    let (ok, out) = openssl(
        &["ocsp", "-issuer", "new-issuer.pem", "-serial", &serial, "-url", &url, "-CAfile", "new-chain.pem"],
        work,
    );
    assert!(ok && out.contains(&format!("{serial}: unknown")), "{out}");
    // The top-level /ocsp answers for the new issuer too (matched by issuer hashes).
    assert!(ocsp_status(server, work, "new", new, Some("/ocsp")).contains("good"));
    assert_eq!(own_chain(server, &old.serial).await, old.chain, "GetCertificate: the old issuer's chain");
    assert_eq!(own_chain(server, &new.serial).await, new.chain, "GetCertificate: the new issuer's chain");

    // Current issuer: /chain.pem, GetCaCertificates, the data dir's files.
    let (_, chain) = server.http_get("/chain.pem");
    assert_eq!(String::from_utf8(chain).unwrap(), pem_of(&new.chain));
    let ca =
        server.client().await.get_ca_certificates(GetCaCertificatesRequest {}).await.unwrap().into_inner();
    assert_eq!((ca.generation, ca.intermediate_der.clone()), (1, new.chain[0].clone()));
    assert_eq!(ca.issuers.len(), 2);
    assert!(ca.issuers[1].current && !ca.issuers[0].current);
    let int = std::fs::read_to_string(server.dir.join("intermediate.pem")).unwrap();
    assert_eq!(int, ca_core::ca::der_to_pem(&new.chain[0]));

    // An ACME certificate chains to the new issuer.
    let account = env.account().await;
    let (_, pem) = env
        .issue(&account, &[Identifier::Dns("after-rotation.example.internal".into())], ChallengeType::Http01)
        .await;
    let certs = ::pem::parse_many(&pem).unwrap();
    assert_eq!(certs[1].contents(), new.chain[0].as_slice(), "ACME chain is the new issuer's");
    openssl_verify(&root, &pem, work);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_with_the_root_key_on_the_server() {
    let env = AcmeEnv::start("", &[]);
    let work = env.dir.path().to_path_buf();
    let old = sign(&env.server, "before.example.internal").await;
    assert_eq!(old.chain.len(), 2);

    let (ok, out) = ca_cli(&env.server, &["rotate"]);
    assert!(ok, "ca rotate: {out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((v["generation"].as_u64(), v["current"].as_bool()), (Some(1), Some(true)), "{out}");
    assert!(v["subject"].as_str().unwrap().contains("Intermediate CA G2"), "{out}");
    let (ok, out) = ca_cli(&env.server, &["issuers"]);
    assert!(ok && out.lines().count() == 2, "ca issuers: {out}");

    let new = sign(&env.server, "after.example.internal").await;
    assert_ne!(new.chain[0], old.chain[0], "a new issuing CA signed it");
    new_generation_client_leaf_is_accepted(&env.server).await;
    assert_eq!(new.chain[1], old.chain[1], "same root");
    let (old_crl, old_ocsp) = urls(&old.leaf);
    let (new_crl, new_ocsp) = urls(&new.leaf);
    assert!(old_crl.ends_with("/crl") && old_ocsp.ends_with("/ocsp"), "{old_crl} {old_ocsp}");
    assert!(
        new_crl.ends_with("/issuers/1/crl") && new_ocsp.ends_with("/issuers/1/ocsp"),
        "{new_crl} {new_ocsp}"
    );
    let (st, der) = env.server.http_get("/issuers/1/ca.der");
    assert_eq!((st, der), (200, new.chain[0].clone()), "caIssuers of the new issuer");
    let (st, der) = env.server.http_get("/ca.der");
    assert_eq!((st, der), (200, old.chain[0].clone()), "generation 0 keeps /ca.der");

    env.server
        .client()
        .await
        .revoke(RevokeRequest {
            serial: old.serial.clone(),
            reason: RevocationReason::KeyCompromise as i32,
            invalidity_date_unix: 0,
        })
        .await
        .expect("revoke the old issuer's certificate");
    check_both_issuers(&env, &work, &old, &new).await;

    // After a restart (kill -9) all of it still holds.
    let env = env.restart_after_kill(&[]);
    check_both_issuers(&env, &work, &old, &new).await;
    let data = env.server.dir.clone();
    env.server.stop();

    let (ok, out) = run(Command::new(BIN).args(["events", "--data-dir"]).arg(&data));
    assert!(ok, "{out}");
    let rotated: Vec<&str> = out.lines().filter(|l| l.contains("\"issuing_ca_rotated\"")).collect();
    assert_eq!(rotated.len(), 1, "{out}");
    assert!(rotated[0].contains("\"key_ref\":\"issuing-1.key\""), "{}", rotated[0]);
    assert!(out.lines().any(|l| l.contains("\"crl_published\"") && l.contains("\"issuer_generation\":1")));
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(&data));
    assert!(ok && out.starts_with("ok:"), "audit verify: {out}");
    assert!(data.join("keys/issuing-1.key").exists());

    // Embedded, nobody else can bring a recorded issuer's key back: without it the server
    // refuses to start, naming it (a PostgreSQL instance waits for it instead).
    std::fs::rename(data.join("keys/issuing-1.key"), work.join("issuing-1.key")).unwrap();
    let (ok, out) = run(Command::new("timeout").args(["60", BIN, "serve", "--data-dir"]).arg(&data).args([
        "--insecure-grpc",
        "--no-acme",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]));
    assert!(!ok && out.contains("issuing-1.key"), "serve without a recorded issuer's key: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_rotations_are_serialized_and_keys_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[ca]\nkey_passphrase_env = \"ROTATION_TEST_PASS\"\n").unwrap();
    let pass = "correct horse battery staple";
    let env = [("ROTATION_TEST_PASS", pass)];
    let args = ["--config", cfg.to_str().unwrap()];
    let dir = tmp.path().join("data");
    let server = Server::start_with_env(&dir, &args, &env);
    let conn = server.cli_conn();
    let spawn = || Command::new(BIN).arg("ca").args(&conn).arg("rotate").output().unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success());
    let generation = |o: &std::process::Output| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["generation"].as_u64().unwrap()
    };
    let mut g = [generation(&a), generation(&b)];
    g.sort();
    assert_eq!(g, [1, 2], "each rotation got its own generation");
    let c = sign(&server, "x.example.internal").await;
    let ca =
        server.client().await.get_ca_certificates(GetCaCertificatesRequest {}).await.unwrap().into_inner();
    assert_eq!(ca.generation, 2);
    assert_eq!(c.chain[0], ca.intermediate_der);

    // The new keys are encrypted PKCS#8 that openssl opens with the passphrase, mode 0600.
    for g in [1, 2] {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join(format!("keys/issuing-{g}.key"));
        assert!(std::fs::read_to_string(&key).unwrap().starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let (ok, out) = run(Command::new("openssl")
            .args(["pkey", "-noout", "-passin", "env:ROTATION_TEST_PASS", "-in"])
            .arg(&key)
            .env("ROTATION_TEST_PASS", pass));
        assert!(ok, "openssl pkey {}: {out}", key.display());
    }
    server.stop();
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(!log.contains(pass), "the passphrase is not logged");
    // A restart decrypts every generation's key and keeps issuing with the last one.
    let server = Server::start_with_env(&dir, &args, &env);
    let d = sign(&server, "y.example.internal").await;
    assert_eq!(d.chain[0], ca.intermediate_der);
}

#[tokio::test(flavor = "multi_thread")]
async fn end_of_life_warning_metric_and_log() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[ca]\nrotation_warning_fraction = 1.0\n").unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with(&dir, &["--config", cfg.to_str().unwrap()]);
    let (_, body) = server.http_get("/metrics");
    let text = String::from_utf8(body).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let ratio = value("ca_issuing_ca_remaining_life_ratio{generation=\"0\"}");
    assert!(ratio > 0.99 && ratio <= 1.0, "a fresh issuing CA has ~all its life left: {ratio}");
    let not_after = value("ca_issuing_ca_not_after_seconds{generation=\"0\"}");
    let der = ::pem::parse(std::fs::read(dir.join("intermediate.pem")).unwrap()).unwrap().into_contents();
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(not_after as i64, x.validity().not_after.timestamp());
    // Fraction 1.0: any issuer is "near its end"; the warning is logged at start.
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(
        log.contains("WARN") && log.contains("near the end of its life") && log.contains("ca rotate"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_root_rotation_through_csr_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let offline = tmp.path().join("offline-root");
    let work = tmp.path().to_path_buf();
    let (ok, out) =
        run(Command::new(BIN).args(["init", "--data-dir"]).arg(&dir).arg("--offline-root").arg(&offline));
    assert!(ok, "init --offline-root: {out}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&offline), 0o700);
        assert_eq!(mode(&offline.join("root.key")), 0o600);
    }
    assert_eq!(
        std::fs::read(offline.join("root.pem")).unwrap(),
        std::fs::read(dir.join("root.pem")).unwrap()
    );
    let (ok, out) = run(Command::new("find").arg(&dir).args(["-name", "root.key"]));
    assert!(ok && out.trim().is_empty(), "no root key anywhere in the data dir: {out}");

    let server = Server::start(&dir);
    let before = sign(&server, "before.offline.internal").await;
    let (ok, out) = ca_cli(&server, &["rotate"]);
    // FAILED_PRECONDITION (tonic prints its description), saying what to do instead.
    assert!(
        !ok && out.contains("not in a state required")
            && out.contains("root key is not on this server")
            && out.contains("--csr-out"),
        "plain rotate: {out}"
    );

    let csr = work.join("g1.csr");
    let (ok, out) = ca_cli(&server, &["rotate", "--csr-out", csr.to_str().unwrap()]);
    assert!(ok, "rotate --csr-out: {out}");
    let (ok, out) = openssl(&["req", "-in", "g1.csr", "-noout", "-verify", "-subject"], &work);
    assert!(ok && out.contains("Intermediate CA G2"), "{out}");

    // The operator signs it where the root lives.
    std::fs::write(
        work.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\n\
         keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let root_key = offline.join("root.key");
    let root_pem = offline.join("root.pem");
    let (ok, out) = openssl(
        &[
            "x509",
            "-req",
            "-in",
            "g1.csr",
            "-CA",
            root_pem.to_str().unwrap(),
            "-CAkey",
            root_key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            "ext.cnf",
            "-out",
            "g1.pem",
        ],
        &work,
    );
    assert!(ok, "openssl x509 -req: {out}");

    // A certificate for another key is refused; the signed one is installed.
    let (ok, out) =
        ca_cli(&server, &["rotate", "--import-signed", dir.join("intermediate.pem").to_str().unwrap()]);
    assert!(!ok && out.contains("pending key"), "import of a wrong certificate: {out}");
    let signed = work.join("g1.pem");
    let (ok, out) = ca_cli(&server, &["rotate", "--import-signed", signed.to_str().unwrap()]);
    assert!(ok, "rotate --import-signed: {out}");
    assert!(out.contains("\"generation\":1"), "{out}");

    let after = sign(&server, "after.offline.internal").await;
    let g1 = ::pem::parse(std::fs::read(work.join("g1.pem")).unwrap()).unwrap().into_contents();
    assert_eq!(after.chain[0], g1, "issued by the imported issuing CA");
    let root = dir.join("root.pem");
    write_and_verify(&work, "before", &before, &root);
    write_and_verify(&work, "after", &after, &root);
    assert!(ocsp_status(&server, &work, "after", &after, None).contains("good"));
    assert!(!crl_lists(&server, &work, "after", &after, &after.serial));
    let (ok, out) = run(Command::new("find").arg(&dir).args(["-name", "root.key"]));
    assert!(ok && out.trim().is_empty(), "still no root key in the data dir: {out}");
}
