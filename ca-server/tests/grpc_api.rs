//! The gRPC API against the real server binary, checked with tools we did not write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::collections::HashSet;
use std::process::Command;

use ca_proto::v1::*;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn issued_certificate_verifies_with_openssl_and_carries_profile_extensions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let mut c = server.client().await;
    let work = tmp.path();

    // A CSR made by openssl itself, as the README's quick start does.
    openssl_p256_csr(
        work,
        "leaf.key",
        "leaf.csr",
        "/CN=svc.example.internal",
        &["-addext", "subjectAltName=DNS:svc.example.internal,DNS:api.example.internal,IP:10.1.2.3"],
    );
    let csr = std::fs::read(work.join("leaf.csr")).unwrap();
    let r = c
        .sign_csr(SignCsrRequest { csr, profile: String::new(), validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.serial.len(), 32, "128-bit serial as lowercase hex: {}", r.serial);
    assert!(r.serial.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(r.chain_der.len(), 2, "issuing CA then root");
    std::fs::write(work.join("leaf.pem"), &r.certificate_pem).unwrap();

    // root.pem written by the server on first start; intermediate from the API.
    let ca = c.get_ca_certificates(GetCaCertificatesRequest {}).await.unwrap().into_inner();
    assert_eq!(ca.root_der, r.chain_der[1]);
    assert_eq!(ca.intermediate_der, r.chain_der[0]);
    std::fs::write(work.join("intermediate.pem"), pem_of(&ca.intermediate_der)).unwrap();
    let root_file = std::fs::read_to_string(dir.join("root.pem")).unwrap();
    assert_eq!(root_file, pem_of(&ca.root_der));
    let (st, body) = server.http_get("/root.pem");
    assert_eq!((st, String::from_utf8(body).unwrap()), (200, root_file.clone()));

    let root = dir.join("root.pem");
    let (ok, out) = openssl(
        &["verify", "-CAfile", root.to_str().unwrap(), "-untrusted", "intermediate.pem", "leaf.pem"],
        work,
    );
    assert!(ok && out.contains("leaf.pem: OK"), "{out}");
    // The leaf is usable for TLS server auth by name.
    let (ok, out) = openssl(
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            "intermediate.pem",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "api.example.internal",
            "leaf.pem",
        ],
        work,
    );
    assert!(ok, "{out}");

    let (ok, text) = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], work);
    assert!(ok, "{text}");
    let base = format!("http://{}", server.http);
    for want in [
        "DNS:svc.example.internal",
        "DNS:api.example.internal",
        "IP Address:10.1.2.3",
        "TLS Web Server Authentication",
        "Digital Signature",
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        &format!("URI:{base}/crl"),
        &format!("OCSP - URI:{base}/ocsp"),
        &format!("CA Issuers - URI:{base}/ca.der"),
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("TLS Web Client Authentication"), "server profile must not grant clientAuth");
    // basicConstraints is critical.
    assert!(text.contains("X509v3 Basic Constraints: critical"), "{text}");

    // The caIssuers URL serves the issuing CA.
    let (st, der) = server.http_get("/ca.der");
    assert_eq!((st, der), (200, ca.intermediate_der.clone()));

    // Client profile and explicit validity.
    let csr = csr_for(&["worker.example.internal"]);
    let r = c
        .sign_csr(SignCsrRequest { csr, profile: "client".into(), validity_seconds: 3600 })
        .await
        .unwrap()
        .into_inner();
    std::fs::write(work.join("client.pem"), &r.certificate_pem).unwrap();
    let (_, text) = openssl(&["x509", "-in", "client.pem", "-noout", "-text", "-dates"], work);
    assert!(
        text.contains("TLS Web Client Authentication") && !text.contains("TLS Web Server Authentication"),
        "{text}"
    );
    let info =
        c.get_certificate(GetCertificateRequest { serial: r.serial.clone() }).await.unwrap().into_inner();
    let info = info.certificate.unwrap();
    assert_eq!(info.not_after_unix - info.not_before_unix, 3600 + 60, "validity plus 60 s backdating");
    assert_eq!(info.profile, "client");
    assert_eq!(info.status, CertificateStatus::Valid as i32);
}

fn pem_of(der: &[u8]) -> String {
    ca_core::ca::der_to_pem(der)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_leaves_the_log_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let mut c = server.client().await;
    let before = next_seq(&server);

    let mut broken = csr_for(&["svc.example.internal"]);
    let n = broken.len();
    broken[n - 5] ^= 0x55; // inside the signature value

    // RSA-1024 CSR from openssl.
    let (ok, out) = openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "weak.key",
            "-out",
            "weak.csr",
            "-subj",
            "/CN=weak.example.internal",
        ],
        tmp.path(),
    );
    assert!(ok, "{out}");
    let weak = std::fs::read(tmp.path().join("weak.csr")).unwrap();

    let cases: Vec<(&str, SignCsrRequest, Code, &str)> = vec![
        ("garbage", req(b"this is not a CSR".to_vec()), Code::InvalidArgument, "malformed CSR"),
        ("empty", req(vec![]), Code::InvalidArgument, "malformed CSR"),
        (
            "bad PEM",
            req(b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n".to_vec()),
            Code::InvalidArgument,
            "malformed CSR",
        ),
        ("broken signature", req(broken), Code::InvalidArgument, "signature"),
        ("name outside policy", req(csr_for(&["www.evil.com"])), Code::PermissionDenied, "www.evil.com"),
        ("IP outside policy", req(csr_for(&["8.8.8.8"])), Code::PermissionDenied, "8.8.8.8"),
        (
            "validity above max",
            SignCsrRequest {
                csr: csr_for(&["a.example.internal"]),
                profile: String::new(),
                validity_seconds: 400 * 86400,
            },
            Code::PermissionDenied,
            "exceeds the maximum",
        ),
        (
            "unknown profile",
            SignCsrRequest {
                csr: csr_for(&["a.example.internal"]),
                profile: "root-ca".into(),
                validity_seconds: 0,
            },
            Code::InvalidArgument,
            "known profiles: client, server, server-client",
        ),
        ("RSA-1024", req(weak), Code::InvalidArgument, "RSA 1024 bits; minimum: RSA 2048"),
        ("oversized CSR", req(vec![0x30; 100 * 1024]), Code::InvalidArgument, "at most 65536"),
    ];
    for (what, r, code, msg) in cases {
        let e = c.sign_csr(r).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {}", e.message());
        assert!(e.message().contains(msg), "{what}: message {:?} should contain {msg:?}", e.message());
    }
    // A message beyond the transport limit is refused by the transport, not buffered.
    let e = c.sign_csr(req(vec![0u8; 2 << 20])).await.expect_err("2 MiB");
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument), "{e:?}");

    // Revoke / Get with bad or unknown serials.
    let e = c
        .revoke(RevokeRequest { serial: "zz".into(), reason: 1, invalidity_date_unix: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .revoke(RevokeRequest { serial: "0123abcd".into(), reason: 1, invalidity_date_unix: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c.get_certificate(GetCertificateRequest { serial: "0123abcd".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    assert_eq!(next_seq(&server), before, "rejected requests must not touch the log");
    // The server is still healthy and serving.
    let ok = c.sign_csr(req(csr_for(&["fine.example.internal"]))).await;
    let serial = ok.expect("a good request still succeeds").into_inner().serial;
    assert_eq!(next_seq(&server), before + 1);
    // An invalidity date in the future is refused.
    let e =
        c.revoke(RevokeRequest { serial, reason: 1, invalidity_date_unix: 4_000_000_000 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(next_seq(&server), before + 1);
}

fn req(csr: Vec<u8>) -> SignCsrRequest {
    SignCsrRequest { csr, profile: String::new(), validity_seconds: 0 }
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_kill_9_and_the_chain_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let mut c = server.client().await;
    let a = c.sign_csr(req(csr_for(&["a.example.internal"]))).await.unwrap().into_inner();
    let b = c.sign_csr(req(csr_for(&["b.example.internal"]))).await.unwrap().into_inner();
    c.revoke(RevokeRequest {
        serial: a.serial.clone(),
        reason: RevocationReason::KeyCompromise as i32,
        invalidity_date_unix: 0,
    })
    .await
    .unwrap();
    let e = c
        .revoke(RevokeRequest { serial: a.serial.clone(), reason: 1, invalidity_date_unix: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "double revocation: {e:?}");
    server.kill9();

    let server = Server::start(&dir);
    let mut c = server.client().await;
    let got =
        c.get_certificate(GetCertificateRequest { serial: a.serial.clone() }).await.unwrap().into_inner();
    let got = got.certificate.unwrap();
    assert_eq!(got.certificate_der, a.certificate_der);
    assert_eq!(got.status, CertificateStatus::Revoked as i32);
    assert_eq!(got.revocation_reason, RevocationReason::KeyCompromise as i32);
    assert!(got.revoked_at_unix > 0);
    let got_b =
        c.get_certificate(GetCertificateRequest { serial: b.serial.clone() }).await.unwrap().into_inner();
    assert_eq!(got_b.certificate.unwrap().status, CertificateStatus::Valid as i32);

    // WatchEvents from 0: every event, in order, hash-chained (CRL publications are
    // interleaved; the facts that matter come in the order they happened).
    let head = next_seq(&server);
    let mut stream = c.watch_events(WatchEventsRequest { from_seq: 0 }).await.unwrap().into_inner();
    let mut kinds = vec![];
    let mut prev = vec![0u8; 32];
    for seq in 0..head {
        let rec = stream.message().await.unwrap().unwrap();
        assert_eq!(rec.seq, seq);
        assert_eq!(rec.prev_hash, prev);
        prev = rec.hash.clone();
        match rec.event.unwrap().kind.unwrap() {
            event::Kind::CaInitialized(_) => kinds.push("ca".to_string()),
            // The CA's own: the admin credential and each start's gRPC listener certificate.
            event::Kind::CertificateIssued(i) if i.requester.starts_with("ca-server:") => {
                kinds.push(i.requester)
            }
            event::Kind::CertificateIssued(i) => kinds.push(format!("issued:{}", hex::encode(i.serial))),
            event::Kind::CertificateRevoked(r) => {
                kinds.push(format!("revoked:{}:{}", hex::encode(r.serial), r.reason))
            }
            event::Kind::CrlPublished(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        kinds,
        vec![
            "ca".into(),
            "ca-server:admin-credential".into(),
            "ca-server:grpc-tls".into(),
            format!("issued:{}", a.serial),
            format!("issued:{}", b.serial),
            format!("revoked:{}:1", a.serial),
            "ca-server:grpc-tls".into(),
        ]
    );
    // A live event arrives on the same stream.
    let live = c.sign_csr(req(csr_for(&["c.example.internal"]))).await.unwrap().into_inner();
    loop {
        let rec = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(rec.seq >= head);
        match rec.event.unwrap().kind.unwrap() {
            event::Kind::CertificateIssued(i) => {
                assert_eq!(hex::encode(i.serial), live.serial);
                break;
            }
            event::Kind::CrlPublished(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(stream);
    assert!(server.stop().success(), "graceful SIGTERM exit");

    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(&dir));
    assert!(ok && out.contains("ok: ") && out.contains("head hash"), "{out}");
    let out = Command::new(BIN).args(["events", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let revs: Vec<_> = lines.iter().filter(|l| l["event"]["kind"] == "certificate_revoked").collect();
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0]["event"]["reason"], "keyCompromise");
    assert_eq!(revs[0]["event"]["serial"], a.serial.as_str());
    // a, b and the live one, plus the admin credential and two starts' listener certificates.
    assert_eq!(lines.iter().filter(|l| l["event"]["kind"] == "certificate_issued").count(), 6);
    let tamper_seq = lines
        .iter()
        .find(|l| l["event"]["kind"] == "certificate_issued")
        .and_then(|l| l["seq"].as_u64())
        .unwrap();

    // Flip one byte of the first issuance record (inside its event bytes): audit must fail and name it.
    {
        let store = ca_storage::EventStore::open(&dir.join("log")).unwrap();
        store.danger_flip_byte(tamper_seq, 80).unwrap();
    }
    let out = Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "tampered log must fail audit: {text}");
    assert!(text.contains(&format!("record {tamper_seq}")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_signing_gives_distinct_serials_and_one_event_each() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let before = next_seq(&server);
    let csrs: Vec<Vec<u8>> = (0..200).map(|i| csr_for(&[&format!("n{i}.example.internal")])).collect();
    let mut clients = vec![];
    for _ in 0..4 {
        clients.push(server.client().await);
    }
    let mut tasks = vec![];
    for (i, csr) in csrs.into_iter().enumerate() {
        let mut c = clients[i % 4].clone();
        tasks.push(tokio::spawn(async move { c.sign_csr(req(csr)).await.map(|r| r.into_inner().serial) }));
    }
    let mut serials = HashSet::new();
    for t in tasks {
        assert!(serials.insert(t.await.unwrap().unwrap()), "duplicate serial");
    }
    assert_eq!(serials.len(), 200);

    let mut c = server.client().await;
    let mut stream = c.watch_events(WatchEventsRequest { from_seq: before }).await.unwrap().into_inner();
    let mut logged = HashSet::new();
    for _ in 0..200 {
        match stream.message().await.unwrap().unwrap().event.unwrap().kind.unwrap() {
            event::Kind::CertificateIssued(i) => assert!(logged.insert(hex::encode(i.serial))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(logged, serials, "exactly one CertificateIssued per acknowledged certificate");
    assert_eq!(next_seq(&server), before + 200);

    // Paginated listing sees all of them exactly once.
    let mut listed = HashSet::new();
    for i in list_all(&mut c, 37, 0).await {
        assert!(listed.insert(i.serial));
    }
    // The CA's own two (admin credential, gRPC listener) are listed too.
    assert_eq!(listed.len(), serials.len() + 2);
    listed.retain(|s| serials.contains(s));
    assert_eq!(listed, serials);
    let revoked = c
        .list_certificates(ListCertificatesRequest {
            page_size: 10,
            page_token: String::new(),
            status: CertificateStatus::Revoked as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.certificates.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_signing_queue_answers_resource_exhausted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[signing]\nworkers = 1\nqueue_depth = 1\n").unwrap();
    let server = Server::start_with(&dir, &["--config", cfg.to_str().unwrap()]);
    let before = next_seq(&server);
    let c = server.client().await;
    let mut tasks = vec![];
    for i in 0..64 {
        let mut c = c.clone();
        let csr = csr_for(&[&format!("q{i}.example.internal")]);
        tasks.push(tokio::spawn(async move { c.sign_csr(req(csr)).await }));
    }
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => busy += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(busy > 0, "64 simultaneous requests into a queue of 1 must shed load");
    assert!(ok > 0);
    assert_eq!(next_seq(&server), before + ok as u64, "only acknowledged certificates are logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reflection_and_metrics_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let ch = server.channel().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest { service: "ca.v1.CertificateAuthority".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let (st, body) = server.http_get("/healthz");
    assert_eq!((st, body.as_slice()), (200, b"ok\n".as_slice()));
    // Ready: the store takes writes, the issuing key signs, the CRL is current.
    let (st, body) = server.http_get("/readyz");
    assert_eq!((st, body.as_slice()), (200, b"ready\n".as_slice()), "{}", String::from_utf8_lossy(&body));
    let (st, body) = server.http_get("/metrics");
    assert_eq!(st, 200);
    let text = String::from_utf8(body).unwrap();
    for m in [
        // The CA's own: the admin credential and the gRPC listener's certificate.
        "ca_certificates_issued_total 2",
        "ca_log_batches_total",
        "ca_sign_duration_seconds_bucket",
        "ca_signing_queue_depth 0",
    ] {
        assert!(text.contains(m), "{m} missing from /metrics:\n{text}");
    }
    let (st, _) = server.http_get("/no-such-path");
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_even_with_an_open_watch_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let mut c = server.client().await;
    let mut stream = c.watch_events(WatchEventsRequest { from_seq: 0 }).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().seq, 0);
    let t = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "took {:?}", t.elapsed());
}

/// A watcher on an otherwise idle connection gets each new event at once: the server's
/// `CoalescingIo` postpones flushes to the connection's next poll, and nothing but its own
/// wake-up brings that poll here (no other stream, no reads from the client).
#[tokio::test(flavor = "multi_thread")]
async fn a_live_watch_on_an_idle_connection_gets_each_event_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let mut watcher = server.client().await;
    let mut signer = server.client().await;
    let head = next_seq(&server);
    let mut stream = watcher.watch_events(WatchEventsRequest { from_seq: head }).await.unwrap().into_inner();
    for i in 0..5 {
        // Let both connections go quiet between events.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let serial = signer
            .sign_csr(req(csr_for(&[&format!("live{i}.example.internal")])))
            .await
            .unwrap()
            .into_inner()
            .serial;
        let issued = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            loop {
                match stream.message().await.unwrap().unwrap().event.unwrap().kind.unwrap() {
                    event::Kind::CertificateIssued(issued) => break hex::encode(issued.serial),
                    event::Kind::CrlPublished(_) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await
        .expect("the event reached the watcher within 2 s");
        assert_eq!(issued, serial);
    }
}
