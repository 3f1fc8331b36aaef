//! ca-loadtest's two gRPC clients against the real server: the lean h2 client (its default)
//! must get exactly what the generated tonic client gets, successes and failures alike, or
//! the load figures would measure something other than SignCsr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use bytes::Bytes;
use ca_loadtest::grpc::{self, GrpcSign};
use ca_loadtest::h2c::H2Channel;
use ca_proto::v1::GetCertificateRequest;
use common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_h2_client_gets_what_tonic_gets() {
    let dir = tempfile::tempdir().unwrap();
    // The lean client speaks plaintext h2 only.
    let srv = Server::start_with(&dir.path().join("data"), &["--insecure-grpc"]);
    let csrs = ca_loadtest::csrs::generate(24, "example.internal", 2, false).unwrap();

    let channels =
        vec![H2Channel::connect(&srv.grpc).await.unwrap(), H2Channel::connect(&srv.grpc).await.unwrap()];
    let lean = std::sync::Arc::new(GrpcSign::h2(channels, csrs.clone(), String::new(), 0).unwrap());
    // Concurrent calls over two connections, as in a load run.
    let calls = (0..24u64).map(|i| {
        let lean = lean.clone();
        tokio::spawn(async move { lean.sign(i).await })
    });
    let mut serials = std::collections::BTreeSet::new();
    let mut tonic_client = srv.client().await;
    for call in calls {
        let resp = call.await.unwrap().unwrap_or_else(|f| panic!("{} {:?}", f.kind, f.detail));
        // What the h2 client decoded is the certificate the server stored.
        let info = tonic_client
            .get_certificate(GetCertificateRequest { serial: resp.serial.clone() })
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        assert_eq!(info.certificate_der, resp.certificate_der);
        assert_eq!(resp.chain_der.len(), 2, "issuing CA and root");
        assert!(resp.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        serials.insert(resp.serial);
    }
    assert_eq!(serials.len(), 24, "distinct serials");

    let tonic = GrpcSign::new(grpc::connect(&srv.grpc, 1, 8).await.unwrap(), csrs.clone(), String::new(), 0);
    let by_tonic = tonic.sign(0).await.unwrap_or_else(|f| panic!("{} {:?}", f.kind, f.detail));
    assert!(!serials.contains(&by_tonic.serial));

    // A rejected request is counted under the same kind by both clients.
    let garbage = vec![Bytes::from_static(b"not a CSR")];
    let lean_bad =
        GrpcSign::h2(vec![H2Channel::connect(&srv.grpc).await.unwrap()], garbage.clone(), String::new(), 0)
            .unwrap()
            .sign(0)
            .await
            .unwrap_err();
    let tonic_bad = GrpcSign::new(grpc::connect(&srv.grpc, 1, 8).await.unwrap(), garbage, String::new(), 0)
        .sign(0)
        .await
        .unwrap_err();
    assert_eq!(lean_bad.kind, "grpc INVALID_ARGUMENT");
    assert_eq!(lean_bad.kind, tonic_bad.kind);
    assert_eq!(lean_bad.detail, tonic_bad.detail, "grpc-message decoded the same way");

    // An unknown profile: its message survives grpc-message's percent-encoding unchanged.
    let lean_unknown = GrpcSign::h2(
        vec![H2Channel::connect(&srv.grpc).await.unwrap()],
        csrs.clone(),
        "no-such-profile".into(),
        0,
    )
    .unwrap()
    .sign(1)
    .await
    .unwrap_err();
    let tonic_unknown =
        GrpcSign::new(grpc::connect(&srv.grpc, 1, 8).await.unwrap(), csrs, "no-such-profile".into(), 0)
            .sign(1)
            .await
            .unwrap_err();
    assert!(lean_unknown.detail.as_deref().unwrap_or("").contains("no-such-profile"), "{lean_unknown:?}");
    assert_eq!(lean_unknown.kind, tonic_unknown.kind);
    assert_eq!(lean_unknown.detail, tonic_unknown.detail);

    // Nothing listens: a connect error, not a hang or a panic.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(H2Channel::connect(&format!("http://127.0.0.1:{port}")).await.is_err());
    assert!(H2Channel::connect("https://127.0.0.1:1").await.unwrap_err().contains("TLS settings"));
}

/// `--addr https://… --data-dir DIR`: both clients and `handshake` over mTLS with the
/// admin credential, against a server with its default TLS listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_and_handshake_speak_mtls_with_the_admin_credential() {
    use ca_loadtest::driver::Scenario;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::start(&data);
    assert!(srv.grpc.starts_with("https://"));
    let args = ca_loadtest::tls::TlsArgs { data_dir: Some(data.clone()), ..Default::default() };
    let tls = args.client(&srv.grpc).unwrap().expect("https: TLS settings");
    let csrs = ca_loadtest::csrs::generate(4, "example.internal", 2, false).unwrap();

    let lean = GrpcSign::h2(
        vec![H2Channel::connect_with(&srv.grpc, Some(&tls)).await.unwrap()],
        csrs.clone(),
        String::new(),
        0,
    )
    .unwrap();
    let tonic =
        GrpcSign::new(grpc::connect_with(&srv.grpc, 1, 8, Some(&tls)).await.unwrap(), csrs, String::new(), 0);
    let mut admin = srv.client().await;
    for resp in [lean.sign(0).await, tonic.sign(1).await] {
        let resp = resp.unwrap_or_else(|f| panic!("{} {:?}", f.kind, f.detail));
        let info = admin
            .get_certificate(GetCertificateRequest { serial: resp.serial })
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        assert_eq!(info.requester, "grpc:spiffe://ca-server/admin", "issued to the presented identity");
    }

    let hs = ca_loadtest::handshake::Handshake::new(&srv.grpc, Some(tls.clone())).await.unwrap();
    for i in 0..3 {
        hs.one(0, i).await.unwrap_or_else(|f| panic!("{} {:?}", f.kind, f.detail));
    }

    // Without a client certificate the server refuses the connection's first request.
    let root_only = ca_loadtest::tls::TlsArgs { tls_ca: Some(data.join("root.pem")), ..Default::default() };
    let err = ca_loadtest::handshake::Handshake::new(&srv.grpc, root_only.client(&srv.grpc).unwrap())
        .await
        .err()
        .expect("no client certificate");
    eprintln!("refused: {err}");
    // TLS 1.3: the client counts its handshake done before the server checks the (missing)
    // certificate; it then reads either the server's alert or, when the close wins the race,
    // a connection that ends under its first request. Either way no request is served.
    assert!(
        err.contains("CertificateRequired") || err.contains("UNAVAILABLE"),
        "refused by the server's alert or the closed connection: {err}"
    );
}
