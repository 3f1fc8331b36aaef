//! Revocation on an instance that does not write (PostgreSQL backend): it serves the
//! writer's CRLs, byte for byte (only the writer signs them), answers OCSP from its
//! replica while that replica is known to be current, and answers `tryLater` (with
//! `/readyz` 503 saying why) while it cannot tell; after a takeover it publishes its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;
#[path = "../../storage/tests/common/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ca_proto::v1::{RevokeRequest, SignCsrRequest};
use common::*;

/// `openssl crl` on DER bytes: its text, after checking the signature against `ca`.
fn crl_text(work: &Path, der: &[u8], ca: &Path) -> String {
    std::fs::write(work.join("got.crl"), der).unwrap();
    let (ok, out) = openssl(
        &["crl", "-inform", "DER", "-in", "got.crl", "-CAfile", ca.to_str().unwrap(), "-noout", "-text"],
        work,
    );
    assert!(ok && out.contains("verify OK"), "openssl crl: {out}");
    out
}

fn crl_number(text: &str) -> u64 {
    let line = text.lines().skip_while(|l| !l.contains("X509v3 CRL Number")).nth(1).unwrap();
    line.trim().parse().unwrap_or_else(|_| panic!("CRL number in {text}"))
}

/// `openssl ocsp` for `leaf.pem` in `work` against `http`: its output, the response's
/// text included (a delegated signer's certificate rides along, CN "... OCSP Responder").
fn ocsp(work: &Path, dir: &Path, http: &str) -> String {
    let (_, out) = openssl(
        &[
            "ocsp",
            "-issuer",
            dir.join("intermediate.pem").to_str().unwrap(),
            "-cert",
            "leaf.pem",
            "-url",
            &format!("http://{http}/ocsp"),
            "-CAfile",
            dir.join("root.pem").to_str().unwrap(),
            "-resp_text",
        ],
        work,
    );
    out
}

/// Signed by a delegated OCSP signer (not the issuing key) and verified by openssl.
fn delegated(out: &str) -> bool {
    out.contains("Response verify OK") && out.contains("OCSP Responder")
}

/// Every time `openssl ocsp -resp_text` prints after `label` ("Next Update:", "Not After :"),
/// as (year, month, day, hour, minute, second), which orders like the times do.
fn openssl_times(out: &str, label: &str) -> Vec<(u32, u32, u32, u32, u32, u32)> {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    out.lines()
        .filter_map(|l| l.trim().strip_prefix(label))
        .map(|t| {
            // "Dec  3 13:20:08 2026 GMT"
            let f: Vec<&str> = t.split_whitespace().collect();
            let month = MONTHS.iter().position(|m| *m == f[0]).unwrap_or_else(|| panic!("month in {t}"));
            let hms: Vec<u32> = f[2].split(':').map(|x| x.parse().unwrap()).collect();
            (f[3].parse().unwrap(), month as u32 + 1, f[1].parse().unwrap(), hms[0], hms[1], hms[2])
        })
        .collect()
}

/// `ca rotate` on the writer `a`: issuer generation 1, its key `keys/issuing-1.key` there.
fn rotate(a: &Server) {
    let (ok, out) = run(Command::new(BIN).arg("ca").args(a.cli_conn()).arg("rotate"));
    assert!(ok, "ca rotate: {out}");
}

/// What an operator does after a rotation: copy the new issuing key (mode 0600).
fn copy_issuing_key_1(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let key = to.join("keys/issuing-1.key");
    std::fs::copy(from.join("keys/issuing-1.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Two instances on the database at `url` with a 1 s lease and `config` besides, the
/// second with the first's keys: `(their scratch dir, the writer, the follower)`.
fn two_instances(url: &str, config: &str) -> (tempfile::TempDir, Server, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, format!("[storage]\nlease_ttl_ms = 1000\n{config}")).unwrap();
    let args = ["--storage-url", url, "--config", cfg.to_str().unwrap()];
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = Server::start_with(&dir_a, &args);
    copy_keys(&dir_a, &dir_b);
    let b = Server::start_with(&dir_b, &args);
    (tmp, a, b)
}

/// A certificate for `name` from the default profile.
async fn issue(
    ca: &mut ca_proto::v1::certificate_authority_client::CertificateAuthorityClient<
        tonic::transport::Channel,
    >,
    name: &str,
) -> ca_proto::v1::SignCsrResponse {
    let req = SignCsrRequest { csr: csr_for(&[name]), profile: String::new(), validity_seconds: 0 };
    ca.sign_csr(req).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_serves_the_writers_crls_and_refuses_ocsp_from_a_stale_replica() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    let (tmp, a, b) = two_instances(&url, "");
    let work = tmp.path();
    let dir_a = a.dir.clone();
    let intermediate = dir_a.join("intermediate.pem");

    // The follower serves the writer's first CRL as it is.
    let (st, first) = b.http_get("/crl");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&first));
    assert_eq!(first, a.http_get("/crl").1, "the follower's CRL is the writer's");
    let first_number = crl_number(&crl_text(work, &first, &intermediate));
    // Ready once the writer issued it a delegated OCSP signer (it never signs OCSP with
    // the issuing key).
    wait_for("the follower is ready", Duration::from_secs(5), || b.http_get("/readyz").0 == 200);

    // The follower's metrics say it does not write and how current its replica is.
    let metric = |srv: &Server, name: &str| -> f64 {
        let body = String::from_utf8(srv.http_get("/metrics").1).unwrap();
        let line =
            body.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(metric(&b, "ca_storage_lease_epoch"), 0.0);
    assert_eq!(metric(&a, "ca_storage_lease_epoch"), 1.0);
    assert!(metric(&b, "ca_storage_replica_lag_seconds") < 1.0);

    // A revocation on the writer reaches the follower's CRL, its delta and its OCSP.
    let mut ca = a.client().await;
    let leaf = issue(&mut ca, "revoked.example.internal").await;
    std::fs::write(work.join("leaf.pem"), &leaf.certificate_pem).unwrap();
    ca.revoke(RevokeRequest { serial: leaf.serial.clone(), reason: 1, invalidity_date_unix: 0 })
        .await
        .unwrap();
    let listed =
        |der: &[u8]| crl_text(work, der, &intermediate).to_lowercase().contains(&leaf.serial.to_lowercase());
    let revoked_at = Instant::now();
    wait_for("the follower's CRL lists the revocation", Duration::from_secs(5), || {
        listed(&b.http_get("/crl").1)
    });
    eprintln!(
        "the follower's CRL listed the revocation {} ms after Revoke",
        revoked_at.elapsed().as_millis()
    );
    let (_, full) = b.http_get("/crl");
    assert_eq!(full, a.http_get("/crl").1, "same bytes as the writer's");
    assert!(listed(&b.http_get("/crl/delta").1), "the follower's delta CRL lists it too");
    wait_for("the follower's OCSP says revoked", Duration::from_secs(5), || {
        ocsp(work, &dir_a, &b.http).contains("leaf.pem: revoked")
    });
    let (from_b, from_a) = (ocsp(work, &dir_a, &b.http), ocsp(work, &dir_a, &a.http));
    assert!(delegated(&from_b), "the follower signs with a delegated signer: {from_b}");
    assert!(
        from_a.contains("Response verify OK") && !from_a.contains("OCSP Responder"),
        "the writer signs with the issuing key: {from_a}"
    );

    // Hold the log table locked: the follower cannot confirm its replica is current, so after
    // follower_max_lag_ms (1 s) it answers tryLater and is not ready; then it recovers.
    std::thread::scope(|s| {
        let locker = s.spawn(|| {
            db.sql("ca", "BEGIN; LOCK TABLE ca_log IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;")
        });
        wait_for("tryLater from the follower's stale replica", Duration::from_secs(4), || {
            ocsp(work, &dir_a, &b.http).contains("trylater")
        });
        let (st, body) = b.http_get("/readyz");
        let body = String::from_utf8_lossy(&body).to_string();
        assert!(st == 503 && body.contains("behind the database"), "{st} {body}");
        // The writer, whose replica holds everything it committed, answers on.
        assert!(ocsp(work, &dir_a, &a.http).contains("leaf.pem: revoked"));
        locker.join().unwrap();
    });
    wait_for("the follower answers again", Duration::from_secs(5), || {
        ocsp(work, &dir_a, &b.http).contains("leaf.pem: revoked")
    });
    wait_for("the follower is ready again", Duration::from_secs(5), || b.http_get("/readyz").0 == 200);

    // kill -9 the writer: the follower takes over and publishes a CRL of its own, still
    // listing the revocation, with a higher number.
    let served = crl_number(&crl_text(work, &b.http_get("/crl").1, &intermediate));
    assert!(served > first_number);
    a.kill9();
    let mut cb = b.client().await;
    let killed = Instant::now();
    loop {
        let req = SignCsrRequest {
            csr: csr_for(&["after.example.internal"]),
            profile: String::new(),
            validity_seconds: 0,
        };
        match cb.sign_csr(req).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(killed.elapsed() < Duration::from_secs(15), "no takeover: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    wait_for("the new writer publishes its own CRL", Duration::from_secs(5), || {
        let text = crl_text(work, &b.http_get("/crl").1, &intermediate);
        crl_number(&text) > served && text.to_lowercase().contains(&leaf.serial.to_lowercase())
    });
    // Writing now (no `ocsp_delegated_signer`): its fresh answers are the issuing key's.
    let out = ocsp(work, &dir_a, &b.http);
    assert!(out.contains("leaf.pem: revoked") && !out.contains("OCSP Responder"), "{out}");
    assert!(metric(&b, "ca_storage_lease_epoch") >= 2.0);
    assert_eq!(metric(&b, "ca_storage_takeovers_total"), 1.0);
    assert!(b.stop().success());
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--storage-url", &url]));
    assert!(ok && out.contains("ok: "), "audit verify: {out}");
    let records: usize =
        out.split("ok: ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();

    // `events` reads the database's log, and each CRL record names its bytes' digest.
    let events = Command::new(BIN).args(["events", "--storage-url", &url]).output().unwrap();
    assert!(events.status.success(), "{}", String::from_utf8_lossy(&events.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(events.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), records);
    assert!(lines.iter().enumerate().all(|(i, l)| l["seq"] == i as u64));
    let crls: Vec<_> = lines.iter().map(|l| &l["event"]).filter(|e| e["kind"] == "crl_published").collect();
    assert!(crls.len() >= 6 && crls.iter().all(|l| l["der_sha256"].as_str().is_some_and(|h| h.len() == 64)));
    let tail = Command::new(BIN).args(["events", "--storage-url", &url, "--from", "3"]).output().unwrap();
    assert_eq!(String::from_utf8(tail.stdout).unwrap().lines().count(), records - 3);
    let (ok, out) = run(Command::new(BIN).args(["audit", "rebuild", "--storage-url", &url]));
    assert!(!ok && out.contains("audit verify --storage-url"), "audit rebuild on PostgreSQL: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_rotated_on_the_writer_is_installed_on_the_follower_once_its_key_is_there() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    let (_tmp, a, b) = two_instances(&url, "");
    let (dir_a, dir_b) = (a.dir.clone(), b.dir.clone());

    rotate(&a);
    let ready = |srv: &Server| {
        let (st, body) = srv.http_get("/readyz");
        (st, String::from_utf8_lossy(&body).to_string())
    };
    wait_for("the follower to name the key it lacks", Duration::from_secs(5), || {
        let (st, body) = ready(&b);
        st == 503 && body.contains("generation 1") && body.contains("issuing-1.key")
    });

    // The key arrives (as an operator copies it): installed without a restart.
    copy_issuing_key_1(&dir_a, &dir_b);
    wait_for("the follower to be ready", Duration::from_secs(10), || ready(&b).0 == 200);
    let new_intermediate = std::fs::read_to_string(dir_a.join("intermediate.pem")).unwrap();
    assert_eq!(std::fs::read_to_string(dir_b.join("intermediate.pem")).unwrap(), new_intermediate);
    wait_for("the follower to serve the new issuer's CRL", Duration::from_secs(5), || {
        let (st, crl) = b.http_get("/issuers/1/crl");
        st == 200 && crl == a.http_get("/issuers/1/crl").1
    });

    // After a takeover the follower issues from the new issuer, not the old one.
    a.kill9();
    let mut cb = b.client().await;
    let killed = Instant::now();
    let issued = loop {
        let req = SignCsrRequest {
            csr: csr_for(&["after.example.internal"]),
            profile: String::new(),
            validity_seconds: 0,
        };
        match cb.sign_csr(req).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(killed.elapsed() < Duration::from_secs(15), "no takeover: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        ca_core::ca::der_to_pem(&issued.chain_der[0]),
        new_intermediate,
        "issued by the rotated issuer"
    );
    assert!(b.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_renews_its_delegated_ocsp_signer_half_way_through_the_lifetime_the_writer_gives() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    // Signers live 8 s: the follower asks for a new one about every 4 s.
    let (tmp, a, b) = two_instances(&url, "[revocation]\nocsp_signer_validity_secs = 8\n");
    let (work, dir_a) = (tmp.path(), a.dir.clone());
    wait_for("the follower is ready", Duration::from_secs(5), || b.http_get("/readyz").0 == 200);
    let started = Instant::now();
    let mut ca = a.client().await;
    let leaf = issue(&mut ca, "svc.example.internal").await;
    std::fs::write(work.join("leaf.pem"), &leaf.certificate_pem).unwrap();
    // Answers stay verifiable across renewals (each renewal installs a valid signer).
    while started.elapsed() < Duration::from_secs(10) {
        let out = ocsp(work, &dir_a, &b.http);
        assert!(delegated(&out) && out.contains("leaf.pem: good"), "{out}");
        // The answer is not said to hold past its signer's certificate (8 s here, while
        // ocsp_validity_secs stays at its 4 h default).
        let (next, signer_ends) = (openssl_times(&out, "Next Update:"), openssl_times(&out, "Not After :"));
        assert!(signer_ends.len() == 1 && !next.is_empty(), "{out}");
        assert!(next.iter().all(|n| *n <= signer_ends[0]), "{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let signers: Vec<_> =
        list_all(&mut ca, 100, 0).await.into_iter().filter(|c| c.profile == "ocsp-signing").collect();
    assert!(
        signers.iter().all(|c| c.requester == "grpc:spiffe://ca-server/admin" && c.names.is_empty()),
        "{signers:?}"
    );
    eprintln!(
        "{} delegated signers issued to the follower in {} ms",
        signers.len(),
        started.elapsed().as_millis()
    );
    // The first at start, then one about every 4 s: not one per second.
    assert!((3..=5).contains(&signers.len()), "{} signers in about 11 s: {signers:?}", signers.len());
    assert!(
        signers.iter().all(|c| c.not_after_unix - c.not_before_unix == 68),
        "8 s, notBefore backdated 60 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_writer_without_the_newest_issuers_key_issues_nothing_until_the_key_is_there() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    let (_tmp, a, b) = two_instances(&url, "");
    let (dir_a, dir_b) = (a.dir.clone(), b.dir.clone());
    rotate(&a);
    wait_for("the follower to name the key it lacks", Duration::from_secs(5), || {
        let (st, body) = b.http_get("/readyz");
        st == 503 && String::from_utf8_lossy(&body).contains("issuing-1.key")
    });

    // The writer dies before the operator copied the new key: the follower takes over but
    // refuses to issue from the old issuer, saying which key it needs.
    a.kill9();
    let mut cb = b.client().await;
    let killed = Instant::now();
    let sign = || SignCsrRequest {
        csr: csr_for(&["after.example.internal"]),
        profile: String::new(),
        validity_seconds: 0,
    };
    loop {
        let e = match cb.sign_csr(sign()).await {
            Ok(r) => panic!("issued from the old issuer: {}", r.into_inner().certificate_pem),
            Err(e) => e,
        };
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        if e.message().contains("issuer generation 1 is in the log but its key (issuing-1.key)") {
            break;
        }
        assert!(e.message().contains("not the writer"), "{e:?}");
        assert!(killed.elapsed() < Duration::from_secs(15), "no takeover: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.http_get("/readyz/writer").0, 503);

    // The key arrives: the new writer installs it and issues from the new issuer.
    copy_issuing_key_1(&dir_a, &dir_b);
    let issued = loop {
        match cb.sign_csr(sign()).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(e.message().contains("issuing-1.key"), "{e:?}");
                assert!(killed.elapsed() < Duration::from_secs(20), "never issued: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let new_intermediate = std::fs::read_to_string(dir_a.join("intermediate.pem")).unwrap();
    assert_eq!(ca_core::ca::der_to_pem(&issued.chain_der[0]), new_intermediate, "issued by the new issuer");
    wait_for("the new writer to be ready to write", Duration::from_secs(5), || {
        b.http_get("/readyz/writer").0 == 200
    });
    assert!(b.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_restarted_without_a_rotated_issuers_key_starts_and_waits_for_it() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    let (tmp, a, b) = two_instances(&url, "");
    let (dir_a, dir_b) = (a.dir.clone(), b.dir.clone());
    // The follower is down while the writer rotates; it comes back without the new key.
    assert!(b.stop().success());
    rotate(&a);
    let cfg = tmp.path().join("ca.toml");
    let b = Server::start_with(&dir_b, &["--storage-url", &url, "--config", cfg.to_str().unwrap()]);
    let (st, body) = b.http_get("/readyz");
    let body = String::from_utf8_lossy(&body);
    assert!(st == 503 && body.contains("generation 1") && body.contains("issuing-1.key"), "{body}");

    copy_issuing_key_1(&dir_a, &dir_b);
    wait_for("the follower to be ready", Duration::from_secs(10), || b.http_get("/readyz").0 == 200);
    assert_eq!(
        std::fs::read_to_string(dir_b.join("intermediate.pem")).unwrap(),
        std::fs::read_to_string(dir_a.join("intermediate.pem")).unwrap()
    );
    wait_for("the follower to serve the new issuer's CRL", Duration::from_secs(5), || {
        let (st, crl) = b.http_get("/issuers/1/crl");
        st == 200 && crl == a.http_get("/issuers/1/crl").1
    });
    assert!(b.stop().success());
    assert!(a.stop().success());
}
