//! The crash campaign (issue 12): gRPC SignCsr and Revoke and whole ACME flows run at once,
//! and the server is `kill -9`ed at a random moment, 20 times, each time restarted on the
//! same data dir. After every restart, everything a client was told succeeded must be there,
//! exactly once; after the last, the log must verify offline.
//!
//! The seed is printed; `CRASH_SEED=N` replays a campaign's choices (kill delays, OCSP
//! samples, challenge types), `CRASH_ROUNDS=N` changes the number of kills (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

#[path = "common/campaign/check.rs"]
mod check;
mod common;
#[path = "common/campaign/load.rs"]
mod load;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::acme::AcmeEnv;
use common::{BIN, csr_for, run};
use load::{AcmeTarget, Ledger, Shared, acme_worker, revoker, signer};

/// SignCsr tasks, each in a closed loop.
const SIGNERS: usize = 3;
/// ACME tasks, each a new account per round and orders one after another.
const ACME_WORKERS: usize = 2;
/// The load runs this long (ms, uniformly) before the kill.
const LOAD_MS: (u64, u64) = (150, 900);
/// A restart must report ready within this.
const READY_BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn twenty_kills_under_mixed_load_lose_nothing_acknowledged() {
    campaign("default", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_kills_under_mixed_load_with_fsync_each_batch() {
    campaign("fsync", "[storage]\nfsync_each_batch = true\n").await;
}

/// splitmix64: small, seedable, enough to replay a campaign.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(12),
    }
}

async fn campaign(mode: &str, config: &str) {
    let seed = seed();
    let rounds: usize = std::env::var("CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    eprintln!("[{mode}] CRASH_SEED={seed} rounds={rounds}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let csrs: Arc<Vec<Vec<u8>>> =
        Arc::new((0..32).map(|i| csr_for(&[&format!("c{i}.campaign.example.internal")])).collect());
    let shared =
        Shared { ledger: Arc::new(Mutex::new(Ledger::default())), killed: Arc::new(AtomicBool::new(false)) };
    let mut env = AcmeEnv::start(config, &[]);
    let mut before = (0, 0, 0, 0, 0);
    let mut slowest_ready = Duration::ZERO;
    let mut report = check::Report::default();
    for round in 0..rounds {
        // Load, then the kill at a random moment.
        shared.killed.store(false, Ordering::SeqCst);
        let mut tasks = vec![];
        for _ in 0..SIGNERS {
            let c = env.server.client().await;
            tasks.push(tokio::spawn(signer(c, csrs.clone(), rng.below(csrs.len()), shared.clone())));
        }
        tasks.push(tokio::spawn(revoker(env.server.client().await, shared.clone())));
        let target = AcmeTarget {
            directory: env.directory(),
            root: env.root_pem(),
            chall_management: env.chall.management,
        };
        for a in 0..ACME_WORKERS {
            let tag = format!("{mode}-r{round}a{a}");
            tasks.push(tokio::spawn(acme_worker(target.clone(), tag, rng.below(2) == 0, shared.clone())));
        }
        let load_ms = rng.between(LOAD_MS.0, LOAD_MS.1);
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        shared.killed.store(true, Ordering::SeqCst);
        let killed = env.kill9();
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(15), t).await.is_err() {
                eprintln!("[{mode}] round {round}: a client still waited 15 s after the kill; aborted");
                abort.abort();
            }
        }

        // Offline, before the restart: the chain verifies, or the audit says the commit
        // journal holds records sled lacks (the restart writes them back).
        let data = killed.dir.path().join("data");
        let (ok, out) = run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(&data));
        assert!(
            ok || out.contains("commit journal"),
            "[{mode}] CRASH_SEED={seed} round {round}: audit after kill: {out}"
        );
        let audit = if ok { "chain ok" } else { "journal ahead of sled" };

        let t = Instant::now();
        env = killed.restart(&[]);
        let ready = t.elapsed();
        slowest_ready = slowest_ready.max(ready);
        assert!(ready < READY_BOUND, "[{mode}] CRASH_SEED={seed} round {round}: ready after {ready:?}");

        // Everything acknowledged so far, against the restarted server.
        let t = Instant::now();
        let ledger = std::mem::take(&mut *shared.lock());
        let checked = check::check(&env, &ledger, &mut |n| rng.below(n)).await;
        let early = ledger.early_errors.clone();
        let now = (
            ledger.certs.len(),
            ledger.revoked.len(),
            ledger.accounts.len(),
            ledger.orders.len(),
            ledger.orders.iter().filter(|o| o.pem.is_some()).count(),
        );
        *shared.lock() = ledger;
        report = checked.unwrap_or_else(|e| panic!("[{mode}] CRASH_SEED={seed} round {round}: {e}"));
        eprintln!(
            "[{mode}] round {round:2}: load {load_ms} ms: +{} certs, +{} revocations, +{} accounts, +{} orders \
             (+{} valid); audit after kill: {audit}; ready in {} ms; checked {} records in {} ms",
            now.0 - before.0,
            now.1 - before.1,
            now.2 - before.2,
            now.3 - before.3,
            now.4 - before.4,
            ready.as_millis(),
            report.records,
            t.elapsed().as_millis()
        );
        before = now;
        assert!(
            early.is_empty(),
            "[{mode}] CRASH_SEED={seed} round {round}: failed while the server ran: {early:#?}"
        );
        for (kind, tally) in tally_lines(&report) {
            assert!(
                tally.ok(),
                "[{mode}] CRASH_SEED={seed} round {round}: {}: {:#?}",
                tally.line(kind),
                tally.missing
            );
        }
    }

    for (kind, tally) in tally_lines(&report) {
        eprintln!("[{mode}] {}", tally.line(kind));
    }
    eprintln!("[{mode}] ACME orders acknowledged valid: {}", report.valid_orders);
    // The load reached every path, or the campaign proved little.
    assert!(report.certificates.acknowledged >= 100, "{:?}", report.certificates);
    assert!(report.revocations.acknowledged >= 20, "{:?}", report.revocations);
    assert!(report.accounts.acknowledged >= rounds / 2, "{:?}", report.accounts);
    assert!(report.valid_orders >= 3, "only {} ACME orders reached valid", report.valid_orders);

    let AcmeEnv { server, dir, chall: _chall } = env;
    assert!(server.stop().success(), "graceful stop after the campaign");
    let (ok, out) =
        run(Command::new(BIN).args(["audit", "verify", "--data-dir"]).arg(dir.path().join("data")));
    assert!(ok, "[{mode}] CRASH_SEED={seed}: audit verify after the campaign: {out}");
    // Every start ran in the mode under test (the store says so when it opens).
    let log = std::fs::read_to_string(dir.path().join("data.log")).unwrap_or_default();
    let fsync = !config.is_empty();
    let opened = log.lines().filter(|l| l.contains("event store opened") && !l.contains("read_only=true"));
    let in_mode = opened.clone().filter(|l| l.contains(&format!("fsync_each_batch={fsync}"))).count();
    assert_eq!((opened.count(), in_mode), (rounds + 1, rounds + 1), "[{mode}] starts in the mode under test");
    eprintln!(
        "[{mode}] audit: {}; slowest restart {} ms; campaign {:.1} s",
        out.lines().find(|l| l.starts_with("ok:")).unwrap_or_default(),
        slowest_ready.as_millis(),
        started.elapsed().as_secs_f64()
    );
}

fn tally_lines(r: &check::Report) -> [(&'static str, &check::Tally); 4] {
    [
        ("certificates", &r.certificates),
        ("revocations", &r.revocations),
        ("ACME accounts", &r.accounts),
        ("ACME orders", &r.orders),
    ]
}
