//! The revocation read side against the real server, checked with `openssl ocsp`,
//! `openssl crl` and `openssl verify -crl_check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::Path;

use base64::Engine;
use ca_proto::v1::*;
use common::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    server: Server,
    work: std::path::PathBuf,
}

async fn setup(config: Option<&str>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = match config {
        Some(c) => {
            let p = tmp.path().join("ca.toml");
            std::fs::write(&p, c).unwrap();
            Server::start_with(&dir, &["--config", p.to_str().unwrap()])
        }
        None => Server::start(&dir),
    };
    let work = tmp.path().to_path_buf();
    std::fs::copy(dir.join("intermediate.pem"), work.join("intermediate.pem")).unwrap();
    std::fs::copy(dir.join("chain.pem"), work.join("chain.pem")).unwrap();
    std::fs::copy(dir.join("root.pem"), work.join("root.pem")).unwrap();
    Fixture { _tmp: tmp, server, work }
}

/// Issue a leaf and write it (leaf only) to `name`; returns its serial.
async fn issue(f: &Fixture, host: &str, name: &str) -> String {
    let mut c = f.server.client().await;
    let r = c
        .sign_csr(SignCsrRequest { csr: csr_for(&[host]), profile: String::new(), validity_seconds: 0 })
        .await
        .unwrap()
        .into_inner();
    std::fs::write(f.work.join(name), ca_core::ca::der_to_pem(&r.certificate_der)).unwrap();
    r.serial
}

async fn revoke(f: &Fixture, serial: &str, reason: RevocationReason) {
    let mut c = f.server.client().await;
    c.revoke(RevokeRequest { serial: serial.into(), reason: reason as i32, invalidity_date_unix: 0 })
        .await
        .unwrap();
}

fn ocsp_via_openssl(f: &Fixture, cert_args: &[&str], extra: &[&str]) -> String {
    let url = format!("http://{}/ocsp", f.server.http);
    let mut args = vec!["ocsp", "-issuer", "intermediate.pem", "-url", &url, "-CAfile", "chain.pem"];
    // openssl wants the digest option before -cert/-serial.
    args.extend_from_slice(extra);
    args.extend_from_slice(cert_args);
    let (ok, out) = openssl(&args, &f.work);
    assert!(ok, "openssl ocsp failed: {out}");
    assert!(out.contains("Response verify OK"), "{out}");
    out
}

fn metric_value(f: &Fixture, name: &str) -> u64 {
    let (_, body) = f.server.http_get("/metrics");
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// A full OCSP cache evicts to make room: the newest serial's answer is cached and served
/// from the cache, rather than signed live on every request once the cache filled up.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_ocsp_cache_evicts_and_keeps_caching() {
    let f = setup(Some("[revocation]\nocsp_cache_entries = 2\n")).await;
    for i in 0..3 {
        issue(&f, &format!("c{i}.example.internal"), &format!("c{i}.pem")).await;
    }
    for i in 0..3 {
        let out = ocsp_via_openssl(&f, &["-cert", &format!("c{i}.pem")], &["-no_nonce"]);
        assert!(out.contains(": good"), "{out}");
    }
    assert!(metric_value(&f, "ca_ocsp_cache_evictions_total") >= 1, "the third answer needed room");
    let hits = metric_value(&f, "ca_ocsp_cache_hits_total");
    let out = ocsp_via_openssl(&f, &["-cert", "c2.pem"], &["-no_nonce"]);
    assert!(out.contains("c2.pem: good"), "{out}");
    assert_eq!(metric_value(&f, "ca_ocsp_cache_hits_total"), hits + 1, "the newest answer was cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn ocsp_good_then_revoked_then_unknown_over_post_and_get() {
    let f = setup(None).await;
    let serial = issue(&f, "ocsp.example.internal", "leaf.pem").await;

    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &[]);
    assert!(out.contains("leaf.pem: good"), "{out}");
    // SHA-256 CertIDs too.
    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &["-sha256"]);
    assert!(out.contains("leaf.pem: good"), "{out}");

    revoke(&f, &serial, RevocationReason::KeyCompromise).await;
    // Read-your-writes: the very next answer says revoked.
    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &[]);
    assert!(out.contains("leaf.pem: revoked") && out.contains("Reason: keyCompromise"), "{out}");
    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &["-no_nonce"]);
    assert!(out.contains("leaf.pem: revoked"), "{out}");

    // The log follower pre-signed the revoked answers: a nonce-less query is a cache hit.
    let metric = |name: &str| -> u64 {
        let (_, body) = f.server.http_get("/metrics");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap()
    };
    let t = std::time::Instant::now();
    while metric("ca_ocsp_presigned_total ") < 2 {
        assert!(t.elapsed().as_secs() < 10, "revoked answers were not pre-signed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hits = metric("ca_ocsp_cache_hits_total ");
    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &["-no_nonce", "-sha256"]);
    assert!(out.contains("leaf.pem: revoked"), "{out}");
    assert_eq!(metric("ca_ocsp_cache_hits_total "), hits + 1, "served from the pre-signed cache");

    // A serial this CA never issued.
    let out = ocsp_via_openssl(&f, &["-serial", "0x0123456789abcdef"], &[]);
    assert!(out.contains(": unknown"), "{out}");

    // GET: the request DER base64- and URL-encoded in the path.
    let (ok, out) = openssl(
        &["ocsp", "-issuer", "intermediate.pem", "-cert", "leaf.pem", "-no_nonce", "-reqout", "req.der"],
        &f.work,
    );
    assert!(ok, "{out}");
    let req = std::fs::read(f.work.join("req.der")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
    let path = format!("/ocsp/{}", b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
    let (st, head, body) = http_request(&f.server.http, "GET", &path, &[], &[]);
    assert_eq!(st, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/ocsp-response"), "{head}");
    std::fs::write(f.work.join("resp.der"), &body).unwrap();
    let (ok, out) = openssl(
        &[
            "ocsp",
            "-respin",
            "resp.der",
            "-issuer",
            "intermediate.pem",
            "-cert",
            "leaf.pem",
            "-CAfile",
            "chain.pem",
            "-resp_text",
        ],
        &f.work,
    );
    assert!(ok && out.contains("Response verify OK") && out.contains("leaf.pem: revoked"), "{out}");
    // The same via URL-safe base64 without escaping.
    let path = format!("/ocsp/{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&req));
    let (st, _, body2) = http_request(&f.server.http, "GET", &path, &[], &[]);
    assert_eq!(st, 200);
    assert_eq!(body2[..5], body[..5], "successful response status in both");
}

/// OCSPResponse with only a responseStatus: SEQUENCE { ENUMERATED n }.
fn ocsp_error_status(body: &[u8]) -> Option<u8> {
    match body {
        [0x30, 0x03, 0x0a, 0x01, n] => Some(*n),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ocsp_requests_get_ocsp_errors_not_panics() {
    let f = setup(None).await;
    let http = &f.server.http;
    let post = |body: &[u8]| {
        http_request(http, "POST", "/ocsp", &[("Content-Type", "application/ocsp-request")], body)
    };
    let (st, _, body) = post(b"garbage");
    assert_eq!((st, ocsp_error_status(&body)), (200, Some(1)), "malformedRequest");
    let (st, _, body) = post(&[]);
    assert_eq!((st, ocsp_error_status(&body)), (200, Some(1)));

    // Truncations of a real request.
    issue(&f, "t.example.internal", "t.pem").await;
    let (ok, out) =
        openssl(&["ocsp", "-issuer", "intermediate.pem", "-cert", "t.pem", "-reqout", "req.der"], &f.work);
    assert!(ok, "{out}");
    let req = std::fs::read(f.work.join("req.der")).unwrap();
    for cut in [1, 2, 10, req.len() / 2, req.len() - 1] {
        let (st, _, body) = post(&req[..cut]);
        assert_eq!((st, ocsp_error_status(&body)), (200, Some(1)), "truncated at {cut}");
    }
    let (st, _, body) = post(&req);
    assert_eq!(st, 200);
    assert_eq!(ocsp_error_status(&body), None, "the whole request is answered");

    // Oversized: refused before parsing.
    let (st, _, _) = post(&vec![0x30; 64 * 1024]);
    assert_eq!(st, 413);
    // GET with something that is not base64.
    let (st, _, body) = http_request(http, "GET", "/ocsp/%%%not-base64%%%", &[], &[]);
    assert!(st == 400 || ocsp_error_status(&body) == Some(1), "status {st}");
    let (st, _, body) = http_request(http, "GET", "/ocsp/AAAA", &[], &[]);
    assert_eq!((st, ocsp_error_status(&body)), (200, Some(1)));
    // The server is still fine.
    let (st, _) = f.server.http_get("/healthz");
    assert_eq!(st, 200);
}

fn verify_with_crl(work: &Path, leaf: &str) -> (bool, String) {
    openssl(
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-CRLfile",
            "crl.pem",
            leaf,
        ],
        work,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_and_delta_crl_list_revocations_and_openssl_enforces_them() {
    let f = setup(None).await;
    let bad = issue(&f, "bad.example.internal", "bad.pem").await;
    issue(&f, "good.example.internal", "good.pem").await;

    let (st, head, der) = f.server.http_request_full("/crl");
    assert_eq!(st, 200);
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/pkix-crl")
            && lower.contains("cache-control:")
            && lower.contains("etag:"),
        "{head}"
    );
    std::fs::write(f.work.join("crl.der"), &der).unwrap();
    let (ok, out) =
        openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "chain.pem", "-noout"], &f.work);
    assert!(ok && out.contains("verify OK"), "{out}");

    revoke(&f, &bad, RevocationReason::Superseded).await;
    // Read-your-writes: the next CRL fetched lists it.
    let (st, body) = f.server.http_get("/crl.pem");
    assert_eq!(st, 200);
    std::fs::write(f.work.join("crl.pem"), &body).unwrap();
    let (ok, out) = openssl(&["crl", "-in", "crl.pem", "-CAfile", "chain.pem", "-noout", "-text"], &f.work);
    assert!(ok && out.contains("verify OK"), "{out}");
    assert!(out.contains(&bad.to_uppercase()), "serial {bad} listed: {out}");
    assert!(
        out.contains("Superseded") && out.contains("X509v3 CRL Number") && out.contains("Freshest CRL"),
        "{out}"
    );

    let (ok, out) = verify_with_crl(&f.work, "bad.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify_with_crl(&f.work, "good.pem");
    assert!(ok, "{out}");

    // The delta names its base and lists the new revocation.
    let (st, body) = f.server.http_get("/crl/delta");
    assert_eq!(st, 200);
    std::fs::write(f.work.join("delta.der"), &body).unwrap();
    let (ok, out) = openssl(
        &["crl", "-inform", "DER", "-in", "delta.der", "-CAfile", "chain.pem", "-noout", "-text"],
        &f.work,
    );
    assert!(ok && out.contains("verify OK") && out.contains("Delta CRL Indicator: critical"), "{out}");
    assert!(out.contains("Superseded"), "the delta lists the revocation since its base: {out}");

    // Conditional GET.
    let (_, head, _) = f.server.http_request_full("/crl");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
        .expect("etag")
        .trim()
        .to_string();
    let (st, _, _) = http_request(&f.server.http, "GET", "/crl", &[("If-None-Match", &etag)], &[]);
    assert_eq!(st, 304);
}

#[tokio::test(flavor = "multi_thread")]
async fn delegated_ocsp_signer_answers_verify() {
    let f = setup(Some("[revocation]\nocsp_delegated_signer = true\n")).await;
    let serial = issue(&f, "d.example.internal", "leaf.pem").await;
    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &["-resp_text"]);
    assert!(
        out.contains("leaf.pem: good") && out.contains("OCSP Signing") && out.contains("OCSP No Check"),
        "{out}"
    );
    revoke(&f, &serial, RevocationReason::CessationOfOperation).await;
    let out = ocsp_via_openssl(&f, &["-cert", "leaf.pem"], &[]);
    assert!(out.contains("leaf.pem: revoked") && out.contains("cessationOfOperation"), "{out}");
    // The signer certificate is in the inventory like any other issuance.
    let mut c = f.server.client().await;
    let list = c
        .list_certificates(ListCertificatesRequest { page_size: 100, page_token: String::new(), status: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(list.certificates.iter().any(|i| i.profile == "ocsp-signing"));
}
