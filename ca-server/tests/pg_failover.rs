//! Issue 13's failover test: two ca-server instances on a PostgreSQL primary with a
//! synchronous standby (scripts/pg-cluster.sh), under concurrent SignCsr, Revoke and ACME
//! orders (instant-acme, http-01) that follow the writer.
//!
//! 1. `kill -9` of the writer instance: the other takes the lease and issues.
//! 2. The killed one restarts as a follower; the writer is paused (SIGSTOP), the other
//!    takes over and issues, the old one resumes (SIGCONT): callers pinned to it get
//!    refusals, never an acknowledgement of a request sent while it was paused.
//! 3. `kill -9` of the PostgreSQL primary and promotion of the standby: the writer
//!    reconnects and issues.
//!
//! After each: every acknowledged certificate and revocation is there with the same DER,
//! every finished ACME order is still `valid` with the same certificate, no serial twice, the log's epochs never go back, `audit verify` passes, and a
//! WatchEvents subscriber (following whichever instance lives) saw a gap-free chain with
//! every acknowledged item. At the end a fresh instance built from the promoted database
//! alone has all of it. The second test shows the check can fail: with an asynchronous,
//! paused standby the same check finds acknowledged certificates lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;
mod failover;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::acme::ChallSrv;
use common::*;
use failover::*;

/// The two tests each run a cluster and instances under load with 1 s leases: one at a
/// time on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SIGNERS: usize = 4;
const ACME_CALLERS: usize = 2;

/// An instance on `url`, with ACME validated against `chall` when given.
fn serve(dir: &Path, url: &str, cfg: &Path, chall: Option<&ChallSrv>) -> Server {
    let mut args: Vec<String> = chall.map(ChallSrv::server_args).unwrap_or_default();
    args.extend(["--storage-url".into(), url.into(), "--config".into(), cfg.display().to_string()]);
    Server::start_with(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn signal(server: &Server, sig: &str) {
    assert!(Command::new("kill").args([sig, &server.pid().to_string()]).status().unwrap().success());
}

/// Poll until `n` certificates sent at or after `t` are acknowledged.
async fn acked_since(ledger: &SharedLedger, t: Instant, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let l = ledger.lock().unwrap();
            if l.sent_since(t) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} acknowledged since, {} UNAVAILABLE, {} timeouts, errors {:?}",
                l.sent_since(t),
                l.unavailable,
                l.timeouts,
                l.errors
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll until an ACME order sent at or after `t` finished (the ACME callers followed the
/// writer).
async fn acme_orders_since(ledger: &SharedLedger, t: Instant, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let l = ledger.lock().unwrap();
            let acme: HashSet<&str> = l.acme_orders.iter().map(|o| o.serial.as_str()).collect();
            if l.certs.iter().any(|c| c.sent >= t && acme.contains(c.serial.as_str())) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: none finished; errors {:?}", l.errors);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ledger's counters now, to report each phase's share.
fn counts(ledger: &SharedLedger) -> [u64; 6] {
    let l = ledger.lock().unwrap();
    [
        l.certs.len() as u64,
        l.revoked.len() as u64,
        l.acme_orders.len() as u64,
        l.unavailable,
        l.timeouts,
        l.dropped,
    ]
}

fn report(phase: &str, ledger: &SharedLedger, before: [u64; 6], fault: Instant) {
    let now = counts(ledger);
    let d: Vec<u64> = now.iter().zip(before).map(|(n, b)| n - b).collect();
    let again = ledger.lock().unwrap().issuing_again_after(fault).unwrap();
    eprintln!(
        "{phase}: {} certificates ({} of them by ACME orders) and {} revocations acknowledged ({}, {} and {} in all), \
         {} UNAVAILABLE (or ACME 503), {} timeouts, {} connections lost; issuing again {} ms after the fault",
        d[0],
        d[2],
        d[1],
        now[0],
        now[2],
        now[1],
        d[3],
        d[4],
        d[5],
        again.as_millis()
    );
}

/// Everything checked after each phase, `server` (in `slot` of `nodes`) being the
/// instance that writes now.
async fn check(
    phase: &str,
    cluster: &Cluster,
    ledger: &SharedLedger,
    sub: &Subscriber,
    (nodes, slot, server): (&Nodes, usize, &Server),
) {
    let seen = sub.caught_up(next_seq(server)).await;
    let l = ledger.lock().unwrap().clone();
    assert!(l.errors.is_empty(), "{phase}: only UNAVAILABLE may fail: {:?}", l.errors);
    assert_eq!(l.duplicates(), Vec::<String>::new(), "{phase}: serials acknowledged twice");
    assert_eq!(seen.broken, Vec::<String>::new(), "{phase}: the subscriber's chain");
    assert_eq!(
        seen.missing(&l),
        Vec::<String>::new(),
        "{phase}: acknowledged but not seen by the subscriber"
    );
    assert_eq!(losses(server, &l, &seen).await, Vec::<String>::new(), "{phase}: acknowledged and lost");
    assert_eq!(acme_losses(nodes, slot, &l).await, Vec::<String>::new(), "{phase}: finished ACME orders");
    let back = "SELECT count(*) FROM (SELECT epoch < max(epoch) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS back FROM ca_log) t WHERE back";
    assert_eq!(cluster.sql(back), "0", "{phase}: a record of an older epoch after a newer one");
    let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--storage-url", &cluster.url]));
    assert!(ok && out.contains("ok: "), "{phase}: audit verify: {out}");
    eprintln!(
        "{phase}: checked: {} records watched ({} streams), {}",
        seen.hashes.len(),
        seen.streams,
        out.trim()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_work_survives_writer_kill9_pause_and_primary_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let cluster = Cluster::up("failover", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[storage]\nlease_ttl_ms = 1000\n").unwrap();
    let chall = Arc::new(ChallSrv::start());
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = serve(&dir_a, &cluster.url, &cfg, Some(&chall));
    copy_keys(&dir_a, &dir_b);
    let b = serve(&dir_b, &cluster.url, &cfg, Some(&chall));
    let nodes = Nodes::new(&a, 2);
    nodes.set(1, &b);
    let ledger = SharedLedger::default();
    let sub = Subscriber::start(&nodes, 1);

    // 1. kill -9 the writer instance (A): B takes over and issues.
    let before = counts(&ledger);
    let load = Load::start(&nodes, &ledger, 0, SIGNERS, "p1-");
    let acme = AcmeLoad::start(&nodes, &chall, &ledger, 0, ACME_CALLERS, "p1-").await;
    acked_since(&ledger, started, 100, "issuing on A").await;
    a.kill9();
    let fault = Instant::now();
    acked_since(&ledger, fault, 50, "B taking over after A's kill -9").await;
    acme_orders_since(&ledger, fault, "ACME orders on B after A's kill -9").await;
    load.stop().await;
    acme.stop().await;
    report("writer kill -9", &ledger, before, fault);
    check("writer kill -9", &cluster, &ledger, &sub, (&nodes, 1, &b)).await;

    // 2. A restarts as a follower; B (the writer) is paused, A takes over, B resumes.
    let a = serve(&dir_a, &cluster.url, &cfg, Some(&chall));
    nodes.set(0, &a);
    sub.slot.store(0, std::sync::atomic::Ordering::Relaxed);
    let before = counts(&ledger);
    let mut load = Load::start(&nodes, &ledger, 1, SIGNERS, "p2-");
    let acme = AcmeLoad::start(&nodes, &chall, &ledger, 1, ACME_CALLERS, "p2-").await;
    load.pin(1, "pinned-before");
    acked_since(&ledger, Instant::now(), 100, "issuing on B").await;
    signal(&b, "-STOP");
    let fault = Instant::now();
    // Requests sent to B while it is paused: B may only refuse them once it resumes.
    load.pin(1, "pinned-paused");
    acked_since(&ledger, fault, 50, "A taking over from the paused B").await;
    acme_orders_since(&ledger, fault, "ACME orders on A while B is paused").await;
    signal(&b, "-CONT");
    let resumed = Instant::now();
    // The resumed B answers what was sent to it while paused, and what comes after.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (during, after) = {
            let l = ledger.lock().unwrap();
            let n = |f: &dyn Fn(Instant) -> bool| l.pinned.iter().filter(|p| f(p.1)).count();
            (n(&|t| t >= fault && t < resumed), n(&|t| t >= resumed))
        };
        if during >= 1 && after >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed B answered {during} requests of its pause, {after} after"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.stop().await;
    acme.stop().await;
    {
        let l = ledger.lock().unwrap();
        let paused: Vec<_> = l.pinned.iter().filter(|p| p.1 >= fault).collect();
        let acked: Vec<_> = paused.iter().filter(|p| p.2.is_ok()).collect();
        assert!(
            acked.is_empty(),
            "the paused old writer acknowledged requests sent after its pause: {acked:?}"
        );
        assert!(paused.iter().all(|p| p.2 == Err(tonic::Code::Unavailable)), "{paused:?}");
        assert!(l.certs.iter().filter(|c| c.sent >= fault).all(|c| c.slot == 0));
        eprintln!(
            "writer paused: the resumed old writer refused {} requests sent to it after the pause \
             ({} pinned answers in all)",
            paused.len(),
            l.pinned.len()
        );
    }
    report("writer paused", &ledger, before, fault);
    check("writer paused", &cluster, &ledger, &sub, (&nodes, 0, &a)).await;

    // 3. kill -9 the PostgreSQL primary, promote the standby: the writer reconnects.
    sub.slot.store(1, std::sync::atomic::Ordering::Relaxed);
    let before = counts(&ledger);
    let load = Load::start(&nodes, &ledger, 0, SIGNERS, "p3-");
    let acme = AcmeLoad::start(&nodes, &chall, &ledger, 0, ACME_CALLERS, "p3-").await;
    acked_since(&ledger, Instant::now(), 100, "issuing on A").await;
    cluster.run(&["kill-primary"]);
    let fault = Instant::now();
    cluster.run(&["promote"]);
    let promoted = Instant::now();
    acked_since(&ledger, promoted, 50, "issuing after the promotion").await;
    acme_orders_since(&ledger, promoted, "ACME orders after the promotion").await;
    load.stop().await;
    acme.stop().await;
    report("primary kill -9 + promote", &ledger, before, fault);
    eprintln!(
        "promote took {} ms; issuing again {} ms after it",
        (promoted - fault).as_millis(),
        ledger.lock().unwrap().issuing_again_after(promoted).unwrap().as_millis()
    );
    let slot = ledger.lock().unwrap().certs.last().unwrap().slot;
    let writer = if slot == 0 { &a } else { &b };
    check("primary kill -9 + promote", &cluster, &ledger, &sub, (&nodes, slot, writer)).await;
    let seen = sub.seen.lock().unwrap().clone();
    sub.stop().await;

    // A fresh instance built from the promoted database alone has all of it.
    assert!(a.stop().success());
    assert!(b.stop().success());
    let dir_c = tmp.path().join("c");
    copy_keys(&dir_a, &dir_c);
    let c = serve(&dir_c, &cluster.url, &cfg, Some(&chall));
    let l = ledger.lock().unwrap().clone();
    let lost = losses(&c, &l, &seen).await;
    assert_eq!(lost, Vec::<String>::new(), "acknowledged and lost on the promoted database");
    nodes.set(0, &c);
    let lost = acme_losses(&nodes, 0, &l).await;
    assert_eq!(lost, Vec::<String>::new(), "finished ACME orders on the promoted database");
    eprintln!("{} finished ACME orders served as valid, same certificates", l.acme_orders.len());
    assert!(c.stop().success());
    eprintln!("the whole scenario took {} ms", started.elapsed().as_millis());
}

/// The same primary failover with an asynchronous standby paused before the kill: the
/// acknowledgements after the pause never reached it, and the check must say so.
#[tokio::test(flavor = "multi_thread")]
async fn the_check_detects_acknowledged_loss_with_an_asynchronous_paused_standby() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let cluster = Cluster::up("failover-async", &["--async"]);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[storage]\nlease_ttl_ms = 1000\n").unwrap();
    let dir_a = tmp.path().join("a");
    let a = serve(&dir_a, &cluster.url, &cfg, None);
    let nodes = Nodes::new(&a, 1);
    let ledger = SharedLedger::default();
    let sub = Subscriber::start(&nodes, 0);
    let load = Load::start(&nodes, &ledger, 0, SIGNERS, "async-");
    acked_since(&ledger, started, 100, "issuing on A").await;
    cluster.run(&["pause-standby"]);
    let paused = Instant::now();
    acked_since(&ledger, paused, 50, "issuing with the standby paused").await;
    // The precondition of the loss: the standby lags behind what was acknowledged.
    let status = cluster.run(&["status"]);
    let lag: u64 =
        status.split(" lag ").nth(1).and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    assert!(lag > 0, "the paused asynchronous standby does not lag: {status}");
    cluster.run(&["kill-primary"]);
    cluster.run(&["promote"]);
    load.stop().await;
    let seen = sub.caught_up(next_seq(&a)).await;
    sub.stop().await;
    a.kill9();

    let dir_c = tmp.path().join("c");
    copy_keys(&dir_a, &dir_c);
    let c = serve(&dir_c, &cluster.url, &cfg, None);
    let l = ledger.lock().unwrap().clone();
    let lost = losses(&c, &l, &seen).await;
    let certs = lost.iter().filter(|m| m.starts_with("certificate")).count();
    eprintln!(
        "asynchronous standby: {} of {} acknowledged certificates lost ({} since the pause; {} UNAVAILABLE, \
         {} timeouts, other errors {:?}), {} lines in all: {:?}",
        certs,
        l.certs.len(),
        l.sent_since(paused),
        l.unavailable,
        l.timeouts,
        l.errors,
        lost.len(),
        lost.iter().filter(|m| !m.starts_with("certificate")).collect::<Vec<_>>()
    );
    assert!(
        certs > 0,
        "the check found no loss after failing over to a paused asynchronous standby: {lost:?}"
    );
    assert!(c.stop().success());
}
