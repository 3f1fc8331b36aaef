//! Crash test: `kill -9` under load. Every certificate whose SignCsr reply arrived must be
//! in the log after restart, and the chain must verify.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ca_proto::v1::*;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_certificates_survive_kill_9_under_load() {
    crash_under_load(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_certificates_survive_kill_9_with_fsync_each_batch() {
    crash_under_load(Some("[storage]\nfsync_each_batch = true\n")).await;
}

async fn crash_under_load(config: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, config.unwrap_or("")).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let server = Server::start_with(&dir, &args);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let csrs: Arc<Vec<Vec<u8>>> =
        Arc::new((0..64).map(|i| csr_for(&[&format!("k{i}.example.internal")])).collect());
    let mut tasks = vec![];
    for w in 0..16 {
        let mut c = server.client().await;
        let acked = acked.clone();
        let csrs = csrs.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            loop {
                let r = c
                    .sign_csr(SignCsrRequest {
                        csr: csrs[i % csrs.len()].clone(),
                        profile: String::new(),
                        validity_seconds: 0,
                    })
                    .await;
                match r {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().serial),
                    Err(_) => return,
                }
                i += 16;
            }
        }));
    }
    // Let load build up, then pull the plug mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the load ran ({} acknowledged)", acked.len());

    // Before any restart, the offline audit must not report a log that lacks acknowledged
    // records: either sled happened to hold them all, or it names the commit journal.
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(&dir));
    if ok {
        let records: usize = out
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected audit output: {out}"));
        assert!(records > acked.len(), "audit verified {records} records, {} were acknowledged", acked.len());
    } else {
        assert!(out.contains("commit journal"), "{out}");
        eprintln!("audit before restart: {}", out.lines().last().unwrap_or_default());
    }

    let server = Server::start_with(&dir, &args);
    let mut c = server.client().await;
    for s in &acked {
        let r = c.get_certificate(GetCertificateRequest { serial: s.clone() }).await;
        assert!(r.is_ok(), "acknowledged certificate {s} lost after kill -9: {r:?}");
    }
    let logged = list_all(&mut c, 1000, 0).await.len() as u64;
    assert!(
        logged >= acked.len() as u64,
        "log holds {logged} certificates, {} were acknowledged",
        acked.len()
    );
    assert!(server.stop().success());
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(&dir));
    assert!(ok, "{out}");
    eprintln!("acknowledged {} certificates before kill -9; log holds {logged}", acked.len());
}
