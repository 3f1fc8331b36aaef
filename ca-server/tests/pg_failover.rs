//! The PostgreSQL primary dies under load: `kill -9` of the primary, promotion of the
//! synchronous standby (scripts/pg-cluster.sh), and the writer instance reconnects through
//! the multi-host URL and goes on issuing. Every certificate acknowledged before, during
//! and after the failover is there afterwards, and the chain verifies on the new primary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_proto::v1::{GetCertificateRequest, SignCsrRequest};
use common::*;

const CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-cluster.sh");

/// This test's own cluster: a directory and two free ports, so a developer's cluster (the
/// script's defaults) or another run is never touched.
fn env() -> [(String, String); 3] {
    static ENV: std::sync::OnceLock<[(String, String); 3]> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (a, b) = (free(), free());
        [
            ("PG_CLUSTER_DIR".into(), format!("/tmp/ca-pg-failover-{}", std::process::id())),
            ("PG_PRIMARY_PORT".into(), a.to_string()),
            ("PG_STANDBY_PORT".into(), b.to_string()),
        ]
    })
    .clone()
}

fn cluster(args: &[&str]) -> String {
    let out = Command::new("bash").arg(CLUSTER).args(args).envs(env()).output().expect("pg-cluster.sh");
    assert!(
        out.status.success(),
        "pg-cluster.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Destroys the cluster when the test ends, however it ends.
struct Cluster;
impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(CLUSTER).arg("destroy").envs(env()).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_goes_on_after_the_primary_is_killed_and_the_standby_promoted() {
    cluster(&["destroy"]);
    let _cluster = Cluster;
    let url = cluster(&["up"]).lines().last().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[storage]\nlease_ttl_ms = 1000\n").unwrap();
    let server = Server::start_with(
        &tmp.path().join("a"),
        &["--storage-url", &url, "--config", cfg.to_str().unwrap()],
    );

    // Four callers issue until told to stop; each acknowledged serial is kept.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (mut c, acked, refused, stop) =
            (server.client().await, acked.clone(), refused.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let req = SignCsrRequest {
                    csr: csr_for(&[&format!("f{t}-{i}.example.internal")]),
                    profile: String::new(),
                    validity_seconds: 0,
                };
                match c.sign_csr(req).await {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().serial),
                    Err(e) => {
                        assert_eq!(
                            e.code(),
                            tonic::Code::Unavailable,
                            "only UNAVAILABLE while failing over: {e:?}"
                        );
                        *refused.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let count = |a: &Arc<Mutex<Vec<String>>>| a.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = count(&acked);
    assert!(before > 0, "nothing issued before the failover");

    cluster(&["kill-primary"]);
    let killed = Instant::now();
    cluster(&["promote"]);
    let at_promote = count(&acked);
    // The writer must issue again through the promoted standby.
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&acked) < at_promote + 50 {
        assert!(
            Instant::now() < deadline,
            "no issuance after the promotion ({} acknowledged)",
            count(&acked)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{before} acknowledged before the kill, {} in all, {} UNAVAILABLE answers; issuing again {} ms after the kill",
        acked.len(),
        refused.lock().unwrap(),
        killed.elapsed().as_millis()
    );

    let mut c = server.client().await;
    let mut seen = std::collections::HashSet::new();
    for s in &acked {
        assert!(seen.insert(s.clone()), "serial {s} acknowledged twice");
        c.get_certificate(GetCertificateRequest { serial: s.clone() })
            .await
            .unwrap_or_else(|e| panic!("acknowledged {s} is missing after the failover: {e:?}"));
    }
    assert!(server.stop().success());
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--storage-url", &url]));
    assert!(ok && out.contains("ok: "), "audit verify on the promoted primary: {out}");
}
