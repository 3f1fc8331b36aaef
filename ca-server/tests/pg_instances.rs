//! Two ca-server instances on one PostgreSQL database (issue 13's first failover step):
//! the writer issues, the follower serves reads, OCSP and WatchEvents and answers SignCsr
//! with UNAVAILABLE naming the writer; after a `kill -9` of the writer the follower takes
//! the lease and issues, every acknowledged certificate is there, the subscriber saw a
//! gap-free chain and `audit verify` on the database passes. mTLS gRPC as by default: the
//! follower's listener certificate is issued (and logged) by the writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;
#[path = "../../storage/tests/common/pg.rs"]
mod pg;

use std::process::Command;
use std::time::{Duration, Instant};

use ca_proto::v1::{GetCertificateRequest, SignCsrRequest, WatchEventsRequest};
use common::*;

fn sign_request(host: &str) -> SignCsrRequest {
    SignCsrRequest { csr: csr_for(&[host]), profile: String::new(), validity_seconds: 0 }
}

fn addr_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, a)| a)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_follower_serves_reads_refuses_writes_naming_the_writer_and_takes_over_after_kill9() {
    let db = pg::Pg::start();
    let url = db.database("ca");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[storage]\nlease_ttl_ms = 1000\n").unwrap();
    let args = ["--storage-url", url.as_str(), "--config", cfg.to_str().unwrap()];
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = Server::start_with(&dir_a, &args);
    copy_keys(&dir_a, &dir_b);
    let b = Server::start_with(&dir_b, &args);
    assert!(!dir_b.join("log").exists(), "the follower keeps no sled log of its own");

    // A subscriber on the follower, from the start of the log.
    let mut watch =
        b.client().await.watch_events(WatchEventsRequest { from_seq: 0 }).await.unwrap().into_inner();

    // The writer issues; the follower refuses, naming it.
    let mut ca = a.client().await;
    let mut acked = Vec::new();
    for i in 0..50 {
        acked.push(ca.sign_csr(sign_request(&format!("w{i}.example.internal"))).await.unwrap().into_inner());
    }
    let mut fb = b.client().await;
    let err = fb.sign_csr(sign_request("refused.example.internal")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let a_addr = addr_of(&a.grpc);
    assert!(err.message().contains("not the writer") && err.message().contains(a_addr), "{err:?}");

    // Both listener certificates are in the log: the writer's own, and the follower's,
    // which the writer issued for it over gRPC as the admin.
    let all = list_all(&mut ca, 100, 0).await;
    let listeners: Vec<_> = all.iter().filter(|c| c.names.iter().any(|n| n == "localhost")).collect();
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert!(listeners.iter().any(|c| c.requester == "ca-server:grpc-tls"), "{listeners:?}");
    assert!(listeners.iter().any(|c| c.requester == "grpc:spiffe://ca-server/admin"), "{listeners:?}");

    // The follower serves what the writer acknowledged, and OCSP for it.
    let last = acked.last().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fb.get_certificate(GetCertificateRequest { serial: last.serial.clone() }).await.is_err() {
        assert!(Instant::now() < deadline, "the follower never saw the writer's last certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ready (so answering OCSP) once the writer issued it a delegated OCSP signer.
    while b.http_get("/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            String::from_utf8_lossy(&b.http_get("/readyz").1)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A load balancer sends writes to the one instance ready to write.
    let (st, body) = a.http_get("/readyz/writer");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let (st, body) = b.http_get("/readyz/writer");
    let body = String::from_utf8_lossy(&body);
    assert!(st == 503 && body.contains("does not write; the writer is") && body.contains(a_addr), "{body}");
    let work = tmp.path();
    std::fs::write(work.join("leaf.pem"), &last.certificate_pem).unwrap();
    let (ok, out) = openssl(
        &[
            "ocsp",
            "-issuer",
            dir_a.join("intermediate.pem").to_str().unwrap(),
            "-cert",
            "leaf.pem",
            "-url",
            &format!("http://{}/ocsp", b.http),
            "-CAfile",
            dir_a.join("root.pem").to_str().unwrap(),
        ],
        work,
    );
    assert!(ok && out.contains("leaf.pem: good"), "OCSP from the follower: {out}");

    // kill -9 the writer: the follower takes the lease and issues.
    a.kill9();
    let killed = Instant::now();
    let taken = loop {
        match fb.sign_csr(sign_request("after.example.internal")).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(killed.elapsed() < Duration::from_secs(15), "no takeover: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    eprintln!("takeover: the follower issued {} ms after the kill -9", killed.elapsed().as_millis());
    wait_for("the new writer is ready to write", Duration::from_secs(5), || {
        b.http_get("/readyz/writer").0 == 200
    });
    // The lease row names the follower now, under a later epoch.
    let lease = db.sql("ca", "SELECT epoch, holder FROM ca_lease WHERE id = 1");
    let (epoch, holder) = lease.split_once('|').unwrap();
    assert!(epoch.parse::<u64>().unwrap() >= 2, "{lease}");
    assert!(holder.contains(addr_of(&b.grpc)), "{lease}");
    acked.push(taken);
    for r in &acked {
        let got = fb
            .get_certificate(GetCertificateRequest { serial: r.serial.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.certificate.unwrap().serial, r.serial);
    }

    // The subscriber saw every record once, in order, each naming its predecessor's hash.
    let head = next_seq(&b);
    let mut prev = vec![0u8; 32];
    for seq in 0..head {
        let rec =
            tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        assert_eq!((rec.seq, &rec.prev_hash), (seq, &prev), "gap-free and chained");
        prev = rec.hash;
    }

    // The first instance restarts as a follower and names the new writer.
    let a = Server::start_with(&dir_a, &args);
    let err = a.client().await.sign_csr(sign_request("refused2.example.internal")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains(addr_of(&b.grpc)), "{err:?}");
    assert!(a.stop().success());
    assert!(b.stop().success());

    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--storage-url", &url]));
    // The restarted instance's listener certificate (and any CRL the new writer published)
    // came after `head`.
    let records: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("ok: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("audit verify: {out}"));
    assert!(ok && records > head, "audit verify: {out} (head was {head})");
}
