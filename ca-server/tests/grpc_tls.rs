//! The gRPC listener's TLS: client certificates from this CA required, the admin
//! credential in the data dir, the caller's identity as the recorded requester, and
//! `--insecure-grpc` for plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{GetCertificateRequest, RevokeRequest, SignCsrRequest};
use common::*;
use tonic::transport::{Endpoint, Identity};

fn sign_request() -> SignCsrRequest {
    SignCsrRequest { csr: csr_for(&["tls.example.internal"]), profile: String::new(), validity_seconds: 0 }
}

/// A client with `tls`; Err if connecting or the first RPC fails.
async fn first_rpc(server: &Server, tls: tonic::transport::ClientTlsConfig) -> Result<(), String> {
    let ch = Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    CertificateAuthorityClient::new(ch)
        .sign_csr(sign_request())
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let before = next_seq(&server);
    let err = first_rpc(&server, server.ca_only_tls()).await.expect_err("no client certificate");
    eprintln!("refused: {err}");
    assert_eq!(next_seq(&server), before, "nothing was issued");
    // The accept loop survived the failed handshake.
    server.client().await.sign_csr(sign_request()).await.expect("admin credential");
}

/// A self-signed CA that is not this server's.
fn foreign_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Some Other CA");
    rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap()
}

/// A client identity (leaf and CA, key) for `san` from `ca`.
fn foreign_identity(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, san: rcgen::SanType) -> Identity {
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![san];
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params.signed_by(&leaf_key, ca).unwrap();
    Identity::from_pem(format!("{}{}", leaf.pem(), ca.pem()), leaf_key.serialize_pem())
}

fn dns(name: &str) -> rcgen::SanType {
    rcgen::SanType::DnsName(name.try_into().unwrap())
}

fn uri(u: &str) -> rcgen::SanType {
    rcgen::SanType::URI(u.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let other_ca = foreign_ca();
    let before = next_seq(&server);
    let tls = server.ca_only_tls().identity(foreign_identity(&other_ca, dns("admin.ca-server.internal")));
    let err = first_rpc(&server, tls).await.expect_err("a foreign client certificate");
    eprintln!("refused: {err}");
    assert_eq!(next_seq(&server), before, "nothing was issued");
}

/// `[grpc] client_ca_file`: that CA's callers get in under their identity's rule, but the
/// admin identity on one of its certificates is not the admin.
#[tokio::test(flavor = "multi_thread")]
async fn a_configured_client_ca_is_trusted_but_cannot_mint_the_admin() {
    use ca_proto::v1::ca_admin_client::CaAdminClient;
    use ca_proto::v1::{IssueOcspSignerRequest, ListIssuersRequest};
    let tmp = tempfile::tempdir().unwrap();
    let other_ca = foreign_ca();
    let bundle = tmp.path().join("client-cas.pem");
    std::fs::write(&bundle, other_ca.pem()).unwrap();
    let config = tmp.path().join("ca.toml");
    std::fs::write(&config, format!("[grpc]\nclient_ca_file = {:?}\n", bundle.display().to_string()))
        .unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--config", config.to_str().unwrap()]);
    let connect = async |id: Identity| {
        Endpoint::from_shared(server.grpc.clone())
            .unwrap()
            .tls_config(server.ca_only_tls().identity(id))
            .unwrap()
            .connect()
            .await
            .expect("the bundle's CA is trusted")
    };

    let ch = connect(foreign_identity(&other_ca, uri("spiffe://corp/build"))).await;
    let mut build = CertificateAuthorityClient::new(ch.clone());
    let r = build.sign_csr(sign_request()).await.expect("the default rule").into_inner();
    let info = build.get_certificate(GetCertificateRequest { serial: r.serial }).await.unwrap().into_inner();
    assert_eq!(info.certificate.unwrap().requester, "grpc:spiffe://corp/build");
    let denied = CaAdminClient::new(ch.clone()).list_issuers(ListIssuersRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    // Nor can it mint itself an OCSP responder.
    let (_, csr) = ca_core::csr::self_request(&[]).unwrap();
    let signer_req = IssueOcspSignerRequest { csr, issuer_generation: 0 };
    let denied = CaAdminClient::new(ch).issue_ocsp_signer(signer_req.clone()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // The admin's own identity, minted by the other CA.
    let ch = connect(foreign_identity(&other_ca, uri("spiffe://ca-server/admin"))).await;
    let denied = CaAdminClient::new(ch).list_issuers(ListIssuersRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("spiffe://ca-server/admin (default rule)"), "{denied:?}");
    // ...while the real admin credential is the admin.
    let ch = server.channel().await;
    CaAdminClient::new(ch.clone()).list_issuers(ListIssuersRequest {}).await.expect("the admin credential");
    // The admin gets a delegated OCSP signer, logged as an issuance under its name.
    let der = CaAdminClient::new(ch.clone())
        .issue_ocsp_signer(signer_req)
        .await
        .expect("the admin credential")
        .into_inner()
        .certificate_der;
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(x.extended_key_usage().unwrap().unwrap().value.ocsp_signing);
    let serial = ca_core::Serial::from_bytes(x.raw_serial()).unwrap().to_hex();
    let info = CertificateAuthorityClient::new(ch)
        .get_certificate(GetCertificateRequest { serial })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(
        (info.profile.as_str(), info.requester.as_str()),
        ("ocsp-signing", "grpc:spiffe://ca-server/admin")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_credential_works_and_names_the_requester() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("admin.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.key");
    }
    let (ok, out) =
        openssl(&["x509", "-in", "admin.pem", "-noout", "-ext", "extendedKeyUsage,subjectAltName"], &dir);
    assert!(
        ok && out.contains("TLS Web Client Authentication") && out.contains("URI:spiffe://ca-server/admin"),
        "{out}"
    );

    let mut c = server.client().await;
    let r = c.sign_csr(sign_request()).await.unwrap().into_inner();
    let info = c
        .get_certificate(GetCertificateRequest { serial: r.serial.clone() })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(info.requester, "grpc:spiffe://ca-server/admin");
    c.revoke(RevokeRequest { serial: r.serial.clone(), reason: 0, invalidity_date_unix: 0 }).await.unwrap();

    // The CA's own certificates are in the log like any other.
    let all = list_all(&mut c, 100, 0).await;
    let by = |who: &str| all.iter().filter(|i| i.requester == who).count();
    assert_eq!(by("ca-server:admin-credential"), 1, "{all:?}");
    assert_eq!(by("ca-server:grpc-tls"), 1, "{all:?}");
    let admin = all.iter().find(|i| i.requester == "ca-server:admin-credential").unwrap();
    assert_eq!(admin.profile, "client");
    assert_eq!(admin.names, vec!["spiffe://ca-server/admin".to_string()]);
    assert_eq!(admin.not_after_unix - admin.not_before_unix, 90 * 86_400 + 60, "90 days (+ the backdate)");

    assert!(server.stop().success());
    let (ok, out) = run(Command::new(BIN).args(["events", "--data-dir"]).arg(&dir));
    // Offline, after the stop (the server holds the store): the revocation's requester too.
    let revoked = out.lines().find(|l| l.contains("certificate_revoked")).unwrap_or_default();
    assert!(ok && revoked.contains("grpc:spiffe://ca-server/admin"), "{out}");
}

/// s_client sending one byte and waiting for the server to close: (exit ok, output).
fn s_client(dir: &std::path::Path, port: &str, with_cert: bool) -> (bool, String) {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-CAfile".into(),
        "root.pem".into(),
        "-alpn".into(),
        "h2".into(),
        "-servername".into(),
        "localhost".into(),
        "-ign_eof".into(),
    ];
    if with_cert {
        args.extend(["-cert", "admin.pem", "-key", "admin.key"].map(String::from));
    }
    let mut child = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    // One byte after the handshake: TLS 1.3 reports a refused client certificate only then.
    child.stdin.take().unwrap().write_all(b"x").unwrap();
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

#[test]
fn openssl_s_client_with_and_without_the_admin_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let port = server.grpc.rsplit(':').next().unwrap().to_string();

    let (_, out) = s_client(&dir, &port, true);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(!out.contains("alert"), "the admin certificate is accepted: {out}");

    let (ok, out) = s_client(&dir, &port, false);
    assert!(!ok, "exit status: {out}");
    assert!(out.contains("alert certificate required"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_grpc_serves_plaintext_and_records_the_peer_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with(&dir, &["--insecure-grpc"]);
    assert!(server.grpc.starts_with("http://"));
    let mut c = server.client().await;
    let r = c.sign_csr(sign_request()).await.unwrap().into_inner();
    let info = c
        .get_certificate(GetCertificateRequest { serial: r.serial })
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(info.requester, "grpc:127.0.0.1");
    // No listener certificate for plaintext gRPC, but the admin credential is ready for later.
    let all = list_all(&mut c, 100, 0).await;
    assert!(!all.iter().any(|i| i.requester == "ca-server:grpc-tls"), "{all:?}");
    assert!(dir.join("admin.pem").exists() && dir.join("admin.key").exists());
    // The CLI speaks plaintext to an http:// address.
    let (ok, out) = run(Command::new(BIN).args(["client", "--addr", &server.grpc, "list"]));
    assert!(ok && out.contains("ca-server:admin-credential"), "{out}");
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    assert!(log.contains("WARN") && log.contains("unauthenticated"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_the_credential_and_serve_reissues_a_missing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ok, out) = run(Command::new(BIN).args(["init", "--data-dir"]).arg(&dir));
    assert!(ok && out.contains("admin.pem"), "{out}");
    let issued_by_init = std::fs::read(dir.join("admin.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("admin.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.key");
    }
    let (ok, out) = run(Command::new(BIN).args(["events", "--data-dir"]).arg(&dir));
    assert!(ok && out.contains("ca-server:admin-credential"), "init logged it: {out}");

    let server = Server::start(&dir);
    assert_eq!(std::fs::read(dir.join("admin.pem")).unwrap(), issued_by_init, "still current: kept");
    let mut c = server.client().await;
    c.sign_csr(sign_request()).await.expect("init's credential works");
    assert!(server.stop().success());

    std::fs::remove_file(dir.join("admin.pem")).unwrap();
    let server = Server::start(&dir);
    let reissued = std::fs::read(dir.join("admin.pem")).unwrap();
    assert_ne!(reissued, issued_by_init);
    let mut c = server.client().await;
    c.sign_csr(sign_request()).await.expect("the re-issued credential works");
    let all = list_all(&mut c, 100, 0).await;
    assert_eq!(all.iter().filter(|i| i.requester == "ca-server:admin-credential").count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reissues_an_expired_admin_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    server.client().await.sign_csr(sign_request()).await.expect("the first credential works");
    assert!(server.stop().success());

    // Stand-in for a credential past its 90 days: a certificate that expired yesterday.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["expired.internal".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(91);
    params.not_after = now - time::Duration::days(1);
    let expired = params.self_signed(&key).unwrap().pem();
    std::fs::write(dir.join("admin.pem"), &expired).unwrap();

    let server = Server::start(&dir);
    let reissued = std::fs::read_to_string(dir.join("admin.pem")).unwrap();
    assert_ne!(reissued, expired, "expired: re-issued at start");
    let mut c = server.client().await;
    let all = list_all(&mut c, 100, 0).await;
    assert_eq!(all.iter().filter(|i| i.requester == "ca-server:admin-credential").count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_client_certificate_of_this_ca_names_its_dns_identity_and_server_only_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let mut admin = server.client().await;
    // (key PEM, chain PEM) for `name` from `profile`, issued over gRPC with the admin credential.
    let mut issue = async |name: &str, profile: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let csr = params.serialize_request(&key).unwrap().der().to_vec();
        let r = admin
            .sign_csr(SignCsrRequest { csr, profile: profile.into(), validity_seconds: 0 })
            .await
            .unwrap()
            .into_inner();
        (key.serialize_pem(), r.certificate_pem)
    };

    let (key, chain) = issue("svc.example.internal", "client").await;
    let ch = Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .tls_config(server.ca_only_tls().identity(Identity::from_pem(chain, key)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut svc = CertificateAuthorityClient::new(ch);
    let r = svc.sign_csr(sign_request()).await.unwrap().into_inner();
    let info = svc.get_certificate(GetCertificateRequest { serial: r.serial }).await.unwrap().into_inner();
    assert_eq!(info.certificate.unwrap().requester, "grpc:svc.example.internal", "the first DNS SAN");

    // serverAuth only: not a client certificate.
    let (key, chain) = issue("web.example.internal", "server").await;
    let err = first_rpc(&server, server.ca_only_tls().identity(Identity::from_pem(chain, key)))
        .await
        .expect_err("a server-only certificate");
    eprintln!("refused: {err}");
}
