//! Storage faults against the real server: the data dir on a small tmpfs that fills up
//! under concurrent SignCsr callers. Writes after the fault get a clear UNAVAILABLE, every
//! acknowledged certificate stays readable, OCSP, CRLs and `/readyz` tell the truth, and
//! nothing acknowledged is lost across the fault, the recovery and a `kill -9`.
//!
//! Needs root (the tests mount tmpfs); the CI machine runs the tests as root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_proto::v1::*;
use common::*;

/// A tmpfs mounted for the test's life, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let (ok, out) =
            run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at));
        assert!(ok, "mounting a {size} tmpfs at {} failed (these tests need root): {out}", at.display());
        Tmpfs(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let (ok, out) = run(Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0));
        assert!(ok, "remount: {out}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[derive(Default)]
struct Outcome {
    acked: Vec<String>,
    /// (code, message) of each failed SignCsr.
    errors: Vec<(tonic::Code, String)>,
}

/// 8 SignCsr callers until each has seen `stop_after` errors in a row (or 90 s passed).
async fn fill(server: &Server, stop_after: usize) -> Outcome {
    let out = Arc::new(Mutex::new(Outcome::default()));
    let csrs: Arc<Vec<Vec<u8>>> =
        Arc::new((0..32).map(|i| csr_for(&[&format!("fill{i}.example.internal")])).collect());
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut tasks = vec![];
    for w in 0..8 {
        let mut c = server.client().await;
        let (out, csrs) = (out.clone(), csrs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut i, mut failures) = (w, 0);
            while failures < stop_after && Instant::now() < deadline {
                let req = SignCsrRequest {
                    csr: csrs[i % csrs.len()].clone(),
                    profile: String::new(),
                    validity_seconds: 0,
                };
                match c.sign_csr(req).await {
                    Ok(r) => {
                        failures = 0;
                        out.lock().unwrap().acked.push(r.into_inner().serial);
                    }
                    Err(s) => {
                        failures += 1;
                        out.lock().unwrap().errors.push((s.code(), s.message().to_string()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 8;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(out).ok().unwrap().into_inner().unwrap()
}

async fn all_readable(server: &Server, acked: &[String]) -> usize {
    let mut c = server.client().await;
    let mut missing = 0;
    for s in acked {
        if let Err(e) = c.get_certificate(GetCertificateRequest { serial: s.clone() }).await {
            if missing < 3 {
                eprintln!("GetCertificate {s}: {e:?}");
            }
            missing += 1;
        }
    }
    missing
}

/// `openssl ocsp` for the certificate `serial` (written to `work`), verified against the root.
async fn ocsp_good(server: &Server, work: &Path, serial: &str) {
    let mut c = server.client().await;
    let cert = c.get_certificate(GetCertificateRequest { serial: serial.into() }).await.unwrap().into_inner();
    let leaf = work.join("leaf.pem");
    std::fs::write(&leaf, ca_core::ca::der_to_pem(&cert.certificate.unwrap().certificate_der)).unwrap();
    let url = format!("http://{}/ocsp", server.http);
    let (ok, out) = run(Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(server.dir.join("intermediate.pem"))
        .args(["-url", &url, "-CAfile"])
        .arg(server.dir.join("root.pem"))
        .arg("-verify_other")
        .arg(server.dir.join("intermediate.pem"))
        .arg("-cert")
        .arg(&leaf));
    assert!(ok && out.contains("Response verify OK") && out.contains(": good"), "openssl ocsp: {out}");
}

fn audit_verify(dir: &Path) -> String {
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(dir));
    assert!(ok, "audit verify: {out}");
    out
}

/// A 12 MB tmpfs under `tmp` for the data dir, and the server flags that set its reserve.
fn on_tmpfs(tmp: &Path, min_free_mb: u64) -> (Tmpfs, Vec<String>) {
    let fs = Tmpfs::mount(&tmp.join("data"), "12m");
    let cfg = tmp.join("ca.toml");
    std::fs::write(&cfg, format!("[storage]\nmin_free_mb = {min_free_mb}\n")).unwrap();
    (fs, vec!["--config".into(), cfg.display().to_string()])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_with_unavailable_and_keeps_serving_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, args) = on_tmpfs(tmp.path(), 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = fs.0.clone();
    let server = Server::start_with(&dir, &args);

    let o = fill(&server, 3).await;
    eprintln!("acknowledged {} before the disk filled; {} refusals", o.acked.len(), o.errors.len());
    assert!(o.acked.len() > 100, "the load ran ({} acknowledged)", o.acked.len());
    assert!(!o.errors.is_empty(), "the disk never filled");
    for (code, msg) in &o.errors {
        assert_eq!(*code, tonic::Code::Unavailable, "{msg}");
        assert!(msg.contains("free space") || msg.contains("bytes free"), "a clear reason: {msg}");
    }

    // Every acknowledged certificate is readable while the disk is full.
    assert_eq!(all_readable(&server, &o.acked).await, 0, "of {} acknowledged", o.acked.len());
    let (st, head, body) = server.http_request_full("/readyz");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(st, 503, "{head}{body}");
    assert!(body.contains("reserve"), "/readyz names the reason: {body}");
    assert_eq!(server.http_get("/healthz").0, 200, "alive, only not ready");
    let (st, crl) = server.http_get("/crl");
    assert!(st == 200 && !crl.is_empty(), "CRL served: {st}");
    ocsp_good(&server, tmp.path(), &o.acked[0]).await;
    // Revocation is a write too: refused the same way, and the certificate stays good.
    let mut c = server.client().await;
    let r = c.revoke(RevokeRequest { serial: o.acked[1].clone(), reason: 1, invalidity_date_unix: 0 }).await;
    assert_eq!(r.as_ref().err().map(|s| s.code()), Some(tonic::Code::Unavailable), "{r:?}");
    let (_, metrics) = server.http_get("/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("ca_log_writes_refused 1"), "{metrics}");

    // Space is back: readiness returns by itself, and writes resume without a restart.
    fs.resize("64m");
    let mut ready = 0;
    for _ in 0..50 {
        ready = server.http_get("/readyz").0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "/readyz ready again with no write in between");
    let mut resumed = None;
    for _ in 0..100 {
        let req = SignCsrRequest {
            csr: csr_for(&["after.example.internal"]),
            profile: String::new(),
            validity_seconds: 0,
        };
        if let Ok(r) = c.sign_csr(req).await {
            resumed = Some(r.into_inner().serial);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = resumed.expect("SignCsr works again once space is back");
    assert_eq!(server.http_get("/readyz").0, 200);

    // And a kill -9 loses nothing.
    server.kill9();
    let server = Server::start_with(&dir, &args);
    let mut all = o.acked.clone();
    all.push(resumed);
    assert_eq!(all_readable(&server, &all).await, 0);
    assert!(server.stop().success());
    eprintln!("{}", audit_verify(&dir).trim());
}

/// With the reserve off, the disk fills under sled itself: the store fails, writes get
/// UNAVAILABLE naming the failure, and a restart on a bigger disk finds every
/// acknowledged certificate (sled may not serve some of them before that restart, which
/// is what the reserve is for).
#[tokio::test(flavor = "multi_thread")]
async fn with_the_reserve_off_a_full_disk_fails_the_store_and_a_restart_recovers_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, args) = on_tmpfs(tmp.path(), 0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = fs.0.clone();
    let server = Server::start_with(&dir, &args);

    let o = fill(&server, 3).await;
    let unreadable = all_readable(&server, &o.acked).await;
    eprintln!(
        "acknowledged {} before the store failed; {} refusals; {unreadable} unreadable before the restart",
        o.acked.len(),
        o.errors.len()
    );
    assert!(o.acked.len() > 100 && !o.errors.is_empty(), "the disk filled under load");
    for (code, msg) in &o.errors {
        assert_eq!(*code, tonic::Code::Unavailable, "{msg}");
        assert!(msg.contains("restart to recover"), "{msg}");
    }
    let (st, _, body) = server.http_request_full("/readyz");
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));
    server.kill9();

    fs.resize("64m");
    let server = Server::start_with(&dir, &args);
    assert_eq!(all_readable(&server, &o.acked).await, 0, "of {} acknowledged", o.acked.len());
    assert!(server.stop().success());
    eprintln!("{}", audit_verify(&dir).trim());
}

/// Damage found at start stops the server with a message that names the file and what to
/// do: a corrupt commit-journal frame with intact frames after it (acknowledged records),
/// then sled's file truncated behind the journal's checkpoint marker.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_journal_or_a_truncated_log_stops_the_start_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let mut c = server.client().await;
    let mut acked = vec![];
    for i in 0..5 {
        let req = SignCsrRequest {
            csr: csr_for(&[&format!("j{i}.example.internal")]),
            profile: String::new(),
            validity_seconds: 0,
        };
        acked.push(c.sign_csr(req).await.unwrap().into_inner().serial);
    }
    // Before the idle checkpoint (5 s) empties the journal.
    server.kill9();

    let journal = dir.join("log").join("ca-journal");
    let good = std::fs::read(&journal).unwrap();
    let frames: Vec<usize> =
        good.windows(4).enumerate().filter(|(_, w)| w == b"CAJ1").map(|(i, _)| i).collect();
    assert!(frames.len() >= 5, "one journal frame per acknowledged SignCsr: {frames:?}");
    let mut bad = good.clone();
    bad[frames[frames.len() - 3] + 40] ^= 0x55;
    std::fs::write(&journal, &bad).unwrap();
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok, "a damaged journal must stop the start: {out}");
    assert!(out.contains("ca-journal") && out.contains("damaged"), "{out}");
    assert!(out.contains("restore it from a backup") && out.contains("move the journal aside"), "{out}");

    // Undamaged again, it recovers every acknowledged certificate.
    std::fs::write(&journal, &good).unwrap();
    let server = Server::start(&dir);
    assert_eq!(all_readable(&server, &acked).await, 0);
    let more = fill_n(&server, 400).await;
    assert!(server.stop().success());

    // sled's file cut in half under a journal whose checkpoint marker says what it held.
    let db = dir.join("log").join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap();
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok, "a truncated log must stop the start ({} certificates acknowledged): {out}", more);
    assert!(out.contains("restore it from a backup"), "{out}");
    eprintln!("{}", out.lines().rev().find(|l| l.contains("backup")).unwrap_or_default());
}

/// `n` SignCsr calls from 8 callers; how many were acknowledged.
async fn fill_n(server: &Server, n: usize) -> usize {
    let mut tasks = vec![];
    for w in 0..8 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in (w..n).step_by(8) {
                let req = SignCsrRequest {
                    csr: csr_for(&[&format!("n{i}.example.internal")]),
                    profile: String::new(),
                    validity_seconds: 0,
                };
                ok += usize::from(c.sign_csr(req).await.is_ok());
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_data_dir_is_told_why_it_cannot_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir);
    let (ok, out) = serve_expecting_exit(&dir, &[], &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("locked by another process") && out.contains("is another ca-server using this data dir"),
        "{out}"
    );
    assert!(server.stop().success());
}
