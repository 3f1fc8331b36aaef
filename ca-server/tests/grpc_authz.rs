//! Per-caller authorization on gRPC (`[[authz.rules]]`) against the real server, with
//! workload credentials made by `ca-server client issue-credential`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::Path;
use std::process::Command;

use ca_proto::v1::acme_admin_client::AcmeAdminClient;
use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{GetCertificateRequest, ListEabKeysRequest, RevokeRequest, SignCsrRequest};
use common::*;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Identity};

const PAY_ID: &str = "spiffe://corp.internal/ns/payments/api";

const RULES: &str = r#"
[[authz.rules]]
identity = "spiffe://corp.internal/ns/payments/*"
profiles = ["server"]
allowed_dns = [".payments.internal"]
revoke = "own"
read = true
"#;

/// `client issue-credential` as the admin; returns (NAME.pem, NAME.key) contents.
fn issue_credential(server: &Server, out: &Path, name: &str, spiffe: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut cmd = Command::new(BIN);
    cmd.arg("client")
        .args(server.cli_conn())
        .args(["issue-credential", "--name", name, "--out-dir"])
        .arg(out);
    if let Some(s) = spiffe {
        cmd.args(["--spiffe-id", s]);
    }
    let (ok, text) = run(&mut cmd);
    assert!(ok, "issue-credential: {text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(format!("{name}.key"))).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}.key");
    }
    (
        std::fs::read(out.join(format!("{name}.pem"))).unwrap(),
        std::fs::read(out.join(format!("{name}.key"))).unwrap(),
    )
}

async fn channel_as(server: &Server, (cert, key): (Vec<u8>, Vec<u8>)) -> Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(server.dir.join("root.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    Endpoint::from_shared(server.grpc.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

fn sign(names: &[&str], profile: &str) -> SignCsrRequest {
    SignCsrRequest { csr: csr_for(names), profile: profile.into(), validity_seconds: 0 }
}

fn metrics(server: &Server) -> String {
    String::from_utf8(server.http_get("/metrics").1).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_is_held_to_its_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, RULES).unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()]);
    let mut admin = server.client().await;
    let creds = tmp.path().join("creds");
    let pay = issue_credential(&server, &creds, "payments-api", Some(PAY_ID));
    let mut w = CertificateAuthorityClient::new(channel_as(&server, pay).await);

    // Inside the rule: signed, recorded as the workload's identity.
    let mine =
        w.sign_csr(sign(&["api.payments.internal"], "server")).await.expect("inside the rule").into_inner();
    let info = w
        .get_certificate(GetCertificateRequest { serial: mine.serial.clone() })
        .await
        .expect("read = true")
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(info.requester, format!("grpc:{PAY_ID}"));

    // A name outside the rule (inside the server policy): refused before signing, not logged.
    let before = next_seq(&server);
    let err = w.sign_csr(sign(&["api.billing.internal"], "server")).await.expect_err("outside the rule");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let m = err.message();
    assert!(m.contains(PAY_ID) && m.contains("rule 0 (spiffe://corp.internal/ns/payments/*)"), "{m}");
    assert!(m.contains("api.billing.internal"), "{m}");
    assert_eq!(next_seq(&server), before, "a denial appends nothing to the log");

    // A profile outside the rule.
    let err = w.sign_csr(sign(&["api.payments.internal"], "client")).await.expect_err("profile");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("profile \"client\""), "{}", err.message());

    // Revoke: its own certificate yes, the admin's no.
    let theirs = admin.sign_csr(sign(&["web.payments.internal"], "server")).await.unwrap().into_inner();
    let err = w
        .revoke(RevokeRequest { serial: theirs.serial.clone(), reason: 0, invalidity_date_unix: 0 })
        .await
        .expect_err("the admin's certificate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(PAY_ID) && err.message().contains("revoke"), "{}", err.message());
    w.revoke(RevokeRequest { serial: mine.serial.clone(), reason: 0, invalidity_date_unix: 0 })
        .await
        .expect("its own certificate");

    let text = metrics(&server);
    assert!(text.contains("ca_authz_denied_total{method=\"SignCsr\"} 2"), "{text}");
    assert!(text.contains("ca_authz_denied_total{method=\"Revoke\"} 1"), "{text}");
    let log = std::fs::read_to_string(tmp.path().join("data.log")).unwrap();
    let warns = log.lines().filter(|l| l.contains("WARN") && l.contains("authorization denied")).count();
    assert_eq!(warns, 1, "one WARN line per identity per 10 s: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_rule_callers_get_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--acme-addr", "127.0.0.1:0"]);
    let creds = tmp.path().join("creds");
    let other = issue_credential(&server, &creds, "build-bot", None);
    let ch = channel_as(&server, other).await;
    let mut w = CertificateAuthorityClient::new(ch.clone());

    // Admin RPCs: refused to the workload, fine for the admin.
    let err = AcmeAdminClient::new(ch).list_eab_keys(ListEabKeysRequest {}).await.expect_err("not an admin");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let m = err.message();
    assert!(m.contains("build-bot.clients.ca-server.internal") && m.contains("default rule"), "{m}");
    AcmeAdminClient::new(server.channel().await).list_eab_keys(ListEabKeysRequest {}).await.expect("admin");

    // Issue within the server policy, recorded by its DNS identity; read.
    let r = w.sign_csr(sign(&["svc.example.internal"], "")).await.expect("default: issue").into_inner();
    let all = list_all(&mut w, 100, 0).await;
    let rec = all.iter().find(|i| i.serial == r.serial).expect("read = true by default");
    assert_eq!(rec.requester, "grpc:build-bot.clients.ca-server.internal");

    // Not a certificate for the admin identity.
    let before = next_seq(&server);
    let (_, csr) = ca_core::csr::self_request(&["spiffe://ca-server/admin".to_string()]).unwrap();
    let err = w
        .sign_csr(SignCsrRequest { csr, profile: "client".into(), validity_seconds: 0 })
        .await
        .expect_err("impersonating the admin");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(next_seq(&server), before);

    // Revoke only its own.
    let mut admin = server.client().await;
    let theirs = admin.sign_csr(sign(&["a.example.internal"], "")).await.unwrap().into_inner();
    let err = w
        .revoke(RevokeRequest { serial: theirs.serial, reason: 0, invalidity_date_unix: 0 })
        .await
        .expect_err("the admin's certificate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    w.revoke(RevokeRequest { serial: r.serial, reason: 0, invalidity_date_unix: 0 }).await.expect("its own");

    let text = metrics(&server);
    assert!(text.contains("ca_authz_denied_total{method=\"ListEabKeys\"} 1"), "{text}");
}

/// Once the CA revokes a client credential, new connections with it fail the handshake;
/// other callers are not affected.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_credential_is_refused_at_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let creds = tmp.path().join("creds");
    let cred = issue_credential(&server, &creds, "retired-bot", None);
    let mut w = CertificateAuthorityClient::new(channel_as(&server, cred.clone()).await);
    w.sign_csr(sign(&["svc.example.internal"], "")).await.expect("before revocation");

    let (ok, out) = openssl(&["x509", "-in", "retired-bot.pem", "-noout", "-serial"], &creds);
    let serial = out.trim().strip_prefix("serial=").expect("openssl prints serial=HEX").to_string();
    assert!(ok, "{out}");
    let mut admin = server.client().await;
    admin
        .revoke(RevokeRequest { serial, reason: 4, invalidity_date_unix: 0 })
        .await
        .expect("admin revokes it");

    // TLS 1.3: the client may count the handshake done before the server checks its
    // certificate, so the refusal can surface at connect or at the first call.
    let before = next_seq(&server);
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(server.dir.join("root.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(cred.0, cred.1))
        .domain_name("localhost");
    let refused =
        match Endpoint::from_shared(server.grpc.clone()).unwrap().tls_config(tls).unwrap().connect().await {
            Err(e) => format!("connect: {e:?}"),
            Ok(ch) => {
                let r =
                    CertificateAuthorityClient::new(ch).sign_csr(sign(&["svc.example.internal"], "")).await;
                format!("{:?}", r.expect_err("a revoked credential must not be served"))
            }
        };
    eprintln!("refused: {refused}");
    assert_eq!(next_seq(&server), before, "nothing was issued to the revoked credential");
    admin.sign_csr(sign(&["svc.example.internal"], "")).await.expect("the admin still works");
}

/// Denials reach the event log as `AccessDenials` summaries: every denial counted, but at
/// most one record per `[authz] denial_summary_secs` window however many calls were refused.
#[tokio::test(flavor = "multi_thread")]
async fn denials_are_counted_into_one_bounded_record_per_window() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, format!("[authz]\ndenial_summary_secs = 1\n{RULES}")).unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_with(&data, &["--config", cfg.to_str().unwrap()]);
    let creds = tmp.path().join("creds");
    let pay = issue_credential(&server, &creds, "payments-api", Some(PAY_ID));
    let w = CertificateAuthorityClient::new(channel_as(&server, pay).await);

    let started = std::time::Instant::now();
    const REFUSED: usize = 300;
    let calls = (0..REFUSED).map(|_| {
        let mut w = w.clone();
        async move { w.sign_csr(sign(&["api.billing.internal"], "server")).await.unwrap_err().code() }
    });
    let codes = futures::future::join_all(calls).await;
    assert!(codes.iter().all(|c| *c == Code::PermissionDenied), "{codes:?}");
    let theirs = server
        .client()
        .await
        .sign_csr(sign(&["web.payments.internal"], "server"))
        .await
        .unwrap()
        .into_inner();
    let err = w
        .clone()
        .revoke(RevokeRequest { serial: theirs.serial, reason: 0, invalidity_date_unix: 0 })
        .await
        .expect_err("revoke = own, and not its certificate");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let elapsed = started.elapsed().as_secs();
    assert!(server.stop().success());

    let (ok, out) = run(Command::new(BIN).args(["events", "--data-dir"]).arg(&data));
    assert!(ok, "{out}");
    let records: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"]["kind"] == "access_denials")
        .collect();
    assert!(!records.is_empty(), "no access_denials record: {out}");
    assert!(records.len() as u64 <= elapsed + 2, "{} records in {elapsed} s", records.len());
    let mut counted = std::collections::BTreeMap::new();
    for r in &records {
        let entries = r["event"]["entries"].as_array().unwrap();
        assert!(entries.len() <= 32, "{r}");
        for e in entries {
            assert_eq!(e["identity"], PAY_ID, "{e}");
            assert_eq!(e["rule"], "rule 0 (spiffe://corp.internal/ns/payments/*)", "{e}");
            *counted.entry(e["method"].as_str().unwrap().to_string()).or_insert(0) +=
                e["count"].as_u64().unwrap();
        }
    }
    assert_eq!(counted.get("SignCsr"), Some(&(REFUSED as u64)), "{records:?}");
    assert_eq!(counted.get("Revoke"), Some(&1), "{records:?}");
}
