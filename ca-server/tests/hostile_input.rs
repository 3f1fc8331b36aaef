//! The hostile-input matrix (issue 12) against the real server: each attack gets a clear
//! answer, and a well-behaved client (GET /healthz plus gRPC GetCaCertificates) keeps being
//! served while it runs. One table line per attack with that client's success rate and p99;
//! the server's peak RSS after the whole matrix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::time::{Duration, Instant};

use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{GetCaCertificatesRequest, SignCsrRequest};
use common::load::{read_until_closed, row};
use common::raw_acme::{EcKey, Raw, b64};
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const BODY_TIMEOUT_SECS: u64 = 2;
const GRPC_CAP: usize = 64;
const GRPC_PATH: &str = "/ca.v1.CertificateAuthority/GetCaCertificates";

fn status_of(reply: &[u8]) -> u16 {
    String::from_utf8_lossy(reply).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn post_head(path: &str, content_length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\nContent-Type: application/jose+json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

const ACME_POSTS: &[&str] = &[
    "/acme/new-account",
    "/acme/new-order",
    "/acme/order/1",
    "/acme/authz/1",
    "/acme/chall/1/http-01",
    "/acme/order/1/finalize",
    "/acme/cert/01",
    "/acme/revoke-cert",
    "/acme/key-change",
    "/acme/acct/1",
];

/// Headers sent, then 10 of 100 body bytes (half the clients trickle one byte a second
/// after that): every one gets 408 within the body read timeout, and is closed.
async fn slow_bodies<S, C, Fut>(connect: C, path: &str, clients: usize) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut s = connect().await;
        let head = post_head(path, 100);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&[b'x'; 10]).await.unwrap();
            if i % 2 == 1 {
                // Trickle: still within the total deadline's reach.
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if s.write_all(b"x").await.is_err() {
                        break;
                    }
                }
            }
            let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
            (status_of(&reply), closed, t.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (status, closed, took) = t.await.unwrap();
        assert_eq!(status, 408, "slow body on {path}: answered {status}");
        assert!(closed, "slow body on {path}: connection left open");
        slowest = slowest.max(took);
    }
    assert!(slowest < Duration::from_secs(BODY_TIMEOUT_SECS + 4), "408 after {slowest:?}");
    format!("{clients}x 408 + close, slowest {:.1}s (timeout {BODY_TIMEOUT_SECS}s)", slowest.as_secs_f64())
}

/// Content-Length larger than sent, then the write side closed: a 4xx (or a close), never a
/// 5xx or a hang. Over the body limit: 413 / ACME malformed.
async fn truncated_and_oversized(server: &Server, raw: &Raw) -> String {
    let mut answers = Vec::new();
    let mut check = |route: &str, what: &str, reply: &[u8], closed: bool, want_malformed: bool| {
        let st = status_of(reply);
        assert!(closed, "{what} {route}: no answer and not closed");
        assert!(st == 0 || (400..500).contains(&st), "{what} {route}: {st}");
        if want_malformed {
            let text = String::from_utf8_lossy(reply);
            assert!(text.contains("urn:ietf:params:acme:error:malformed"), "{what} {route}: {text}");
        }
        answers.push(st);
    };
    let big = vec![b'a'; 70 * 1024];
    for route in ["/ocsp"] {
        let mut s = TcpStream::connect(&server.http).await.unwrap();
        s.write_all(format!("{}0123456789", post_head(route, 1000)).as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        check(route, "truncated", &reply, closed, false);
        let mut s = TcpStream::connect(&server.http).await.unwrap();
        s.write_all(post_head(route, big.len()).as_bytes()).await.unwrap();
        let _ = s.write_all(&big).await;
        let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert_eq!(status_of(&reply), 413, "oversized {route}");
        check(route, "oversized", &reply, closed, false);
    }
    for route in ACME_POSTS {
        let mut s = raw.connect().await;
        s.write_all(format!("{}0123456789", post_head(route, 1000)).as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        check(route, "truncated", &reply, closed, false);
        let mut s = raw.connect().await;
        s.write_all(post_head(route, big.len()).as_bytes()).await.unwrap();
        let _ = s.write_all(&big).await;
        let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        check(route, "oversized", &reply, closed, true);
    }
    format!("{} routes x (truncated, oversized): statuses {answers:?}", 1 + ACME_POSTS.len())
}

/// A JWS over raw payload bytes, signed by `key` as account `kid`.
async fn post_payload(raw: &Raw, key: &EcKey, kid: &str, path: &str, payload: &[u8]) -> (u16, String) {
    let nonce = raw.nonce().await;
    let protected =
        b64(json!({"alg": "ES256", "nonce": nonce, "url": raw.url(path), "kid": kid}).to_string());
    let body = b64(payload);
    let sig = key.sign(format!("{protected}.{body}").as_bytes());
    let jws = json!({"protected": protected, "payload": body, "signature": b64(sig)}).to_string();
    let r = raw.post_raw(path, jws.as_bytes()).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Hostile JSON payloads in newOrder: malformed (or rejectedIdentifier for names outside
/// policy), no 5xx, and nothing appended to the log.
async fn acme_json(server: &Server, raw: &Raw) -> String {
    let key = EcKey::generate();
    let kid = raw.new_account(&key).await;
    let seq = next_seq(server);
    let ids = r#""identifiers":[{"type":"dns","value":"a.example.internal"}]"#;
    let mut nested = vec![b'['; 40_000];
    nested.extend(vec![b']'; 40_000]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nested-40k", nested),
        ("huge-number", format!("{{{ids},\"notAfter\":1e999999999}}").into_bytes()),
        ("duplicate-keys", format!("{{{ids},{ids},\"identifiers\":7}}").into_bytes()),
        ("non-utf8", [b"{\"identifiers\":[{\"type\":\"dns\",\"value\":\"\xff\xfe\"}]}".as_slice()].concat()),
        ("just-over-limit", format!("{{{ids},\"pad\":\"{}\"}}", "a".repeat(48 * 1024)).into_bytes()),
        // Years 0 and 1 read as "not given" (Go clients send the zero time); 100 is refused.
        ("year-100", format!("{{{ids},\"notBefore\":\"0100-01-01T00:00:00Z\"}}").into_bytes()),
        ("notAfter-number", format!("{{{ids},\"notAfter\":1893456000}}").into_bytes()),
        ("notBefore-object", format!("{{{ids},\"notBefore\":{{\"y\":1}}}}").into_bytes()),
        ("leap-9999", format!("{{{ids},\"notAfter\":\"9999-12-31T23:59:60Z\"}}").into_bytes()),
        ("negative", format!("{{{ids},\"notBefore\":\"-0001-01-01T00:00:00Z\"}}").into_bytes()),
        ("not-rfc3339", format!("{{{ids},\"notAfter\":\"next tuesday\"}}").into_bytes()),
        (
            "after-before-before",
            format!("{{{ids},\"notBefore\":\"2030-01-02T00:00:00Z\",\"notAfter\":\"2030-01-01T00:00:00Z\"}}")
                .into_bytes(),
        ),
    ];
    let mut answers = Vec::new();
    for (name, payload) in &cases {
        let (st, body) = post_payload(raw, &key, &kid, "new-order", payload).await;
        assert!((400..500).contains(&st), "{name}: {st} {body}");
        assert!(body.contains("urn:ietf:params:acme:error:malformed"), "{name}: {body}");
        answers.push(format!("{name}={st}"));
    }
    assert_eq!(next_seq(server), seq, "rejected payloads appended events");
    format!("malformed, log unchanged: {}", answers.join(" "))
}

/// Idle TCP connections (no bytes, no TLS ClientHello) to the gRPC port: the ones over
/// `[grpc] max_connections` are closed at once; afterwards new clients connect again.
async fn grpc_conn_flood(server: &Server) -> String {
    let addr = server.grpc.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..(GRPC_CAP * 3) {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in &mut held {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await {
            closed += 1;
        }
    }
    // The load's connection holds one slot.
    assert!(closed >= held.len() - GRPC_CAP, "only {closed}/{} closed over a cap of {GRPC_CAP}", held.len());
    let n = held.len();
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.client().await.get_ca_certificates(GetCaCertificatesRequest {}).await.expect("after the flood");
    format!("{closed}/{n} idle connections closed at once (cap {GRPC_CAP}); a new client served after")
}

async fn h2c(
    server: &Server,
) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(server.grpc.trim_start_matches("http://")).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

fn grpc_request(extra: Option<(&str, String)>) -> http::Request<()> {
    let mut b = http::Request::post(format!("http://ca{GRPC_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some((k, v)) = extra {
        b = b.header(k, v);
    }
    b.body(()).unwrap()
}

/// Open and reset thousands of streams (CVE-2023-44487): the server sends GOAWAY once the
/// client is over its pending-reset budget.
async fn rapid_reset(server: &Server) -> String {
    let (mut send, conn) = h2c(server).await;
    let mut sent = 0;
    for _ in 0..10_000 {
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), send.clone().ready()).await else {
            break;
        };
        send = s;
        let Ok((_resp, mut stream)) = send.send_request(grpc_request(None), false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    drop(send);
    let end = tokio::time::timeout(Duration::from_secs(5), conn).await;
    // GOAWAY(ENHANCE_YOUR_CALM), or the close after it if the client was mid-write.
    assert!(sent < 10_000 && matches!(end, Ok(Ok(Err(_)))), "rapid reset not stopped: {sent} sent, {end:?}");
    format!("{sent} streams opened+reset; connection ended: {end:?}")
}

/// SETTINGS_MAX_CONCURRENT_STREAMS is explicit (200; tonic's default is unlimited): a client
/// that opens streams and never finishes them holds at most 200 on the server, the rest wait
/// in the client.
async fn max_streams(server: &Server) -> String {
    let (mut send, _conn) = h2c(server).await;
    // One full exchange so the server's SETTINGS are in.
    let (resp, _) = send.send_request(grpc_request(None), true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), resp).await.expect("an answer");
    let max = send.current_max_send_streams();
    assert_eq!(max, 200, "server SETTINGS_MAX_CONCURRENT_STREAMS");
    let mut open = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), send.clone().ready()).await {
            Ok(Ok(s)) => send = s,
            _ => break,
        }
        let Ok(pair) = send.send_request(grpc_request(None), false) else { break };
        open.push(pair);
        if open.len() >= 300 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    format!("max_concurrent_streams={max}; {} half-open streams asked, {max} reach the server", open.len())
}

/// A 1 MiB header (sent as HEADERS + CONTINUATION frames) and 64 KiB gRPC metadata: refused,
/// over the 16 KiB header list limit.
async fn header_flood(server: &Server) -> String {
    let (mut send, conn) = h2c(server).await;
    let big = "a".repeat(1 << 20);
    let h2_answer = match send.send_request(grpc_request(Some(("x-junk", big))), true) {
        Err(e) => format!("refused: {e}"),
        Ok((resp, _)) => match tokio::time::timeout(Duration::from_secs(5), resp).await {
            Ok(Ok(r)) => {
                assert_ne!(r.headers().get("grpc-status").map(|v| v.as_bytes()), Some(b"0".as_slice()));
                format!("status {}", r.status())
            }
            Ok(Err(e)) => format!("refused: {e}"),
            Err(_) => panic!("no answer to a 1 MiB header block"),
        },
    };
    drop(send);
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
    let mut c = server.client().await;
    let mut req = tonic::Request::new(GetCaCertificatesRequest {});
    req.metadata_mut().insert("x-junk", "b".repeat(64 * 1024).parse().unwrap());
    let st = c.get_ca_certificates(req).await.expect_err("64 KiB metadata refused");
    format!("1MiB header: {h2_answer}; 64KiB metadata: {:?} {}", st.code(), st.message())
}

/// A gRPC message over the server's decoding limit (1 MiB): OUT_OF_RANGE naming the limit.
async fn oversized_message(server: &Server) -> String {
    let mut c = server.client().await;
    let req = SignCsrRequest { csr: vec![0u8; 2 << 20], profile: String::new(), validity_seconds: 0 };
    let st = c.sign_csr(req).await.expect_err("2 MiB message refused");
    assert!(matches!(st.code(), Code::OutOfRange | Code::ResourceExhausted), "{st:?}");
    assert!(st.message().contains("too large"), "{st:?}");
    c.get_ca_certificates(GetCaCertificatesRequest {}).await.expect("the same client goes on");
    format!("{:?}: {}", st.code(), st.message())
}

fn csr_with_extension(name: &str, ext_len: usize) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x41; ext_len]));
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// Hostile CSRs and validities over SignCsr: INVALID_ARGUMENT or PERMISSION_DENIED, each
/// with a message, and nothing appended to the log.
async fn hostile_csrs(server: &Server) -> String {
    let mut c = server.client().await;
    let seq = next_seq(server);
    let many: Vec<String> = (0..5000).map(|i| format!("h{i}.example.internal")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let some: Vec<String> = (0..1000).map(|i| format!("h{i}.example.internal")).collect();
    let some: Vec<&str> = some.iter().map(String::as_str).collect();
    let long_label = format!("{}.example.internal", "a".repeat(64));
    let long_name = format!("{}example.internal", "abcdefghi.".repeat(26));
    let ok_csr = csr_for(&["ok.example.internal"]);
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("5000-sans", csr_for(&many), 0),
        ("1000-sans", csr_for(&some), 0),
        ("900KiB-extension", csr_with_extension("ext.example.internal", 900 * 1024), 0),
        ("label-64", csr_for(&[&long_label]), 0),
        ("name-over-253", csr_for(&[&long_name]), 0),
        ("xn--garbage", csr_for(&["xn--zz--zz-.example.internal"]), 0),
        ("wildcard-inside", csr_for(&["a.*.example.internal"]), 0),
        ("double-wildcard", csr_for(&["*.*.example.internal"]), 0),
        ("validity-u64-max", ok_csr.clone(), u64::MAX),
        ("validity-i64-max", ok_csr.clone(), i64::MAX as u64),
        ("validity-i64-max+1", ok_csr.clone(), i64::MAX as u64 + 1),
    ];
    let mut answers = Vec::new();
    for (name, csr, validity_seconds) in cases {
        let st = c
            .sign_csr(SignCsrRequest { csr, profile: String::new(), validity_seconds })
            .await
            .expect_err(name);
        assert!(matches!(st.code(), Code::InvalidArgument | Code::PermissionDenied), "{name}: {st:?}");
        assert!(!st.message().is_empty(), "{name}");
        answers.push(format!("{name}={:?}", st.code()));
    }
    assert_eq!(next_seq(server), seq, "refused CSRs appended events");
    // validity 0 is the profile default, not an error.
    c.sign_csr(SignCsrRequest { csr: ok_csr, profile: String::new(), validity_seconds: 0 })
        .await
        .expect("validity 0");
    answers.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_matrix() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(
        &cfg,
        format!(
            "[http]\nbody_read_timeout_secs = {BODY_TIMEOUT_SECS}\n[grpc]\nmax_connections = {GRPC_CAP}\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_with(
        &data,
        &["--config", cfg.to_str().unwrap(), "--insecure-grpc", "--acme-addr", "127.0.0.1:0"],
    );
    let raw = Raw::new(&server.acme, &data.join("root.pem"));

    let http = server.http.clone();
    let connect_http = || {
        let addr = http.clone();
        async move { TcpStream::connect(addr).await.unwrap() }
    };
    row(&server, "slow-body-ocsp", slow_bodies(connect_http, "/ocsp", 20)).await;
    row(&server, "slow-body-acme", slow_bodies(|| raw.connect(), "/acme/new-account", 10)).await;
    row(&server, "truncated+oversized-bodies", truncated_and_oversized(&server, &raw)).await;
    row(&server, "acme-hostile-json", acme_json(&server, &raw)).await;
    row(&server, "grpc-conn-flood", grpc_conn_flood(&server)).await;
    row(&server, "h2-rapid-reset", rapid_reset(&server)).await;
    row(&server, "h2-max-streams", max_streams(&server)).await;
    row(&server, "h2-header-flood", header_flood(&server)).await;
    row(&server, "grpc-oversized-message", oversized_message(&server)).await;
    row(&server, "hostile-csr+validity", hostile_csrs(&server)).await;

    let rss = server.peak_rss_kib();
    println!("peak_rss={:.1}MiB matrix_took={:.1}s", rss as f64 / 1024.0, started.elapsed().as_secs_f64());
    assert!(rss < 1 << 20, "peak RSS {rss} KiB");
}

/// Slow-loris on the mTLS gRPC port: TCP connections that never send a ClientHello. Over
/// `[grpc] max_connections` they are closed at once; the others hold a slot until the 10 s
/// TLS handshake timeout, then new clients connect again. Established clients go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_tls_slowloris_is_bounded_by_the_cap_and_the_handshake_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[grpc]\nmax_connections = 8\n").unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--config", cfg.to_str().unwrap()]);
    let addr = server.grpc.trim_start_matches("https://").to_string();
    row(&server, "grpc-tls-slowloris", async {
        // The load's connection holds one slot; 7 are left for the silent ones.
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(TcpStream::connect(&addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut closed = 0;
        for s in &mut silent {
            let mut b = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
            {
                closed += 1;
            }
        }
        assert_eq!(closed, 13, "20 silent connections, 7 free slots");
        let t = Instant::now();
        let mut c = loop {
            let ep = tonic::transport::Endpoint::from_shared(server.grpc.clone()).unwrap();
            if let Ok(Ok(ch)) = tokio::time::timeout(
                Duration::from_secs(2),
                ep.tls_config(server.admin_tls()).unwrap().connect(),
            )
            .await
            {
                break CertificateAuthorityClient::new(ch);
            }
            assert!(t.elapsed() < Duration::from_secs(15), "no slot came free");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        c.get_ca_certificates(GetCaCertificatesRequest {}).await.expect("a new client after the timeout");
        format!(
            "{closed}/20 closed at once (7 free slots); a new client connected after {:.1}s",
            t.elapsed().as_secs_f64()
        )
    })
    .await;
}
