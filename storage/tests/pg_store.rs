//! The PostgreSQL backend against a real server: the store's model test, the fence that
//! stops a writer which lost its lease, followers, migration from sled and `verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ca_core::Event;
use ca_core::event::RevocationReason;
use ca_storage::{Appended, EventStore, PgOptions, Role, StoreError, StoreOptions, verify_postgres};
use common::model::{EvSpec, Model, Op, op};
use common::pg::Pg;
use proptest::prelude::*;

fn open(dir: &std::path::Path, url: &str, instance: &str, ttl_ms: u64) -> EventStore {
    let pg = PgOptions::new(url, instance).lease_ttl(Duration::from_millis(ttl_ms));
    EventStore::open_postgres(dir, StoreOptions::default().min_free_bytes(0), pg).unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Found by the model test: a full CRL numbered 0 leaves `ca_issuers` at 0, which is also
/// what a row without any full CRL holds; `verify` must not read that as a mismatch.
#[test]
fn verify_accepts_a_full_crl_numbered_zero() {
    let pg = Pg::start();
    let url = pg.database("crl0");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &url, "crl0", 3000);
    let event = Model::default().event(&EvSpec::Crl { number: 0, delta: false });
    store.append_blocking(vec![event]).unwrap();
    assert_eq!(verify_postgres(&url, &mut |_| {}).unwrap().records, 1);
}

#[test]
fn the_postgres_store_matches_the_model_across_appends_reopens_and_resyncs() {
    let pg = Pg::start();
    let case = AtomicU32::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..8), |ops| {
            let url = pg.database(&format!("model{}", case.fetch_add(1, Ordering::Relaxed)));
            let mut dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path(), &url, "model", 3000);
            prop_assert_eq!(store.role(), Role::Writer { epoch: 1 });
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Append(specs) => {
                        let events: Vec<Event> = specs.iter().map(|s| model.event(s)).collect();
                        let expected: Vec<Appended> = events.iter().map(|e| model.push(e)).collect();
                        prop_assert_eq!(store.append_blocking(events).unwrap(), expected);
                    }
                    Op::Reopen => {
                        drop(store);
                        store = open(dir.path(), &url, "model", 3000);
                    }
                    Op::Resync => {
                        drop(store);
                        dir = tempfile::tempdir().unwrap();
                        store = open(dir.path(), &url, "model", 3000);
                    }
                }
                // The same instance name takes its own lease back at once.
                let writes = matches!(store.role(), Role::Writer { .. });
                prop_assert!(writes, "role after reopen: {:?}", store.role());
                model.check(&store)?;
                let report =
                    verify_postgres(&url, &mut |_| {}).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(report.records, store.next_seq());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_follower_serves_the_log_and_a_writer_that_lost_its_lease_is_fenced() {
    let pg = Pg::start();
    let url = pg.database("fence");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A's lease would last a minute and it renews every 20 s: only the fence can stop it.
    let a = open(da.path(), &url, "instance-a", 60_000);
    let b = open(db.path(), &url, "instance-b", 300);
    assert_eq!(a.role(), Role::Writer { epoch: 1 });
    let s1 = common::serial(1);
    a.append_blocking(vec![common::issued(&s1, 4_000_000_000)]).unwrap();

    // B follows: it reads A's record, and refuses writes, naming A.
    wait_for("B to follow A", Duration::from_secs(5), || b.next_seq() == 1);
    assert_eq!(b.cert(&s1).unwrap().unwrap().issued_seq, 0);
    assert_eq!(b.role(), Role::Follower { writer: Some("instance-a".into()) });
    match b.append_blocking(vec![common::issued(&common::serial(2), 4_000_000_000)]) {
        Err(StoreError::NotWriter { writer: Some(w), .. }) => assert_eq!(w, "instance-a"),
        other => panic!("a follower's append: {other:?}"),
    }

    // A goes silent as far as the database can tell (its lease runs out): B takes over.
    pg.sql("fence", "UPDATE ca_lease SET expires_at = '-infinity'");
    wait_for("B to take the lease", Duration::from_secs(5), || b.role() == Role::Writer { epoch: 2 });
    assert_eq!(a.role(), Role::Writer { epoch: 1 }, "A has not noticed yet");

    // A still believes it writes: the database refuses its append, and nothing forks.
    match a.append_blocking(vec![common::issued(&common::serial(3), 4_000_000_000)]) {
        Err(StoreError::NotWriter { writer, why }) => {
            assert_eq!(writer.as_deref(), Some("instance-b"), "{why}");
        }
        other => panic!("a fenced writer's append: {other:?}"),
    }
    assert!(matches!(a.role(), Role::Follower { .. }), "A steps down once fenced");
    let r = b.append_blocking(vec![common::revoked(&s1, RevocationReason::KeyCompromise, 10, None)]).unwrap();
    assert_eq!(r[0].seq, 1);
    wait_for("A to follow B", Duration::from_secs(5), || a.next_seq() == 2);
    assert!(a.is_revoked(&s1).unwrap().is_some());
    assert_eq!(pg.sql("fence", "SELECT count(*) FROM ca_log"), "2");
    assert_eq!(pg.sql("fence", "SELECT string_agg(epoch::text, ',' ORDER BY seq) FROM ca_log"), "1,2");
    let report = verify_postgres(&url, &mut |_| {}).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(Some(report.head), b.head().map(|h| h.hash));
}

#[test]
fn a_replica_holding_history_the_database_lacks_refuses_to_start() {
    let pg = Pg::start();
    let url = pg.database("lost");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &url, "solo", 3000);
    store.append_blocking(vec![common::issued(&common::serial(1), 4_000_000_000)]).unwrap();
    store.append_blocking(vec![common::issued(&common::serial(2), 4_000_000_000)]).unwrap();
    drop(store);
    // The database loses the last acknowledged record (a promoted asynchronous standby).
    pg.sql("lost", "DELETE FROM ca_log WHERE seq = 1; UPDATE ca_lease SET next_seq = 1");
    let pgo = PgOptions::new(&url, "solo");
    match EventStore::open_postgres(dir.path(), StoreOptions::default().min_free_bytes(0), pgo) {
        Err(StoreError::Damaged(msg)) => assert!(msg.contains("record 1"), "{msg}"),
        other => panic!("open over a database that lost a record: {other:?}"),
    }
}

#[test]
fn a_sled_log_migrates_into_postgres_with_its_history_and_projections() {
    let pg = Pg::start();
    let url = pg.database("migrate");
    let sled_dir = tempfile::tempdir().unwrap();
    let sled = EventStore::open(sled_dir.path()).unwrap();
    let mut events = vec![common::ca(1)];
    for n in 0..12_000u64 {
        events.push(common::issued(&common::serial(n), 4_000_000_000 + n as i64));
    }
    events.push(common::revoked(&common::serial(7), RevocationReason::Superseded, 5, None));
    events.push(common::crl(1, None));
    sled.append_blocking(events).unwrap();
    let sled_inventory = sled.inventory().unwrap();
    let sled_head = sled.head();
    drop(sled);

    let mut calls = 0;
    let report = ca_storage::migrate_to_postgres(sled_dir.path(), &url, &mut |_, _| calls += 1).unwrap();
    assert_eq!(report.records, 12_003);
    assert!(calls >= 3, "progress per chunk");
    assert_eq!(verify_postgres(&url, &mut |_| {}).unwrap().head, report.head);
    // A second migration into the same database is refused.
    assert!(ca_storage::migrate_to_postgres(sled_dir.path(), &url, &mut |_, _| {}).is_err());

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &url, "after", 3000);
    assert_eq!(store.head(), sled_head);
    assert_eq!(store.inventory().unwrap(), sled_inventory);
    store.append_blocking(vec![common::issued(&common::serial(99_999), 4_000_000_000)]).unwrap();
    assert_eq!(verify_postgres(&url, &mut |_| {}).unwrap().records, 12_004);
}

#[test]
fn a_shared_crl_is_served_only_as_the_log_names_it() {
    use ca_core::event::CrlPublished;
    let pg = Pg::start();
    let url = pg.database("crls");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), &url, "instance-a", 60_000);
    let b = open(db.path(), &url, "instance-b", 60_000);
    let crl = |number: u64, der: &[u8]| {
        Event::CrlPublished(CrlPublished {
            number,
            this_update: 10,
            next_update: 20,
            delta_base: None,
            issuer_generation: 0,
            der_sha256: Some(ca_core::chain::sha256(der)),
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let share = |seq: u64, der: &[u8]| rt.block_on(a.share_crl(0, false, seq, der.to_vec())).unwrap();
    let served = |s: &EventStore| rt.block_on(s.shared_crl(0, false));

    let at = a.append_blocking(vec![crl(1, b"first crl"), crl(3, b"second crl")]).unwrap();
    share(at[0].seq, b"first crl");
    wait_for("B to follow A", Duration::from_secs(5), || b.next_seq() == 2);
    let (c, der) = served(&b).unwrap().unwrap();
    assert_eq!((c.number, der.as_slice()), (1, &b"first crl"[..]));
    share(at[1].seq, b"second crl");
    // An older publication shared late does not replace a newer one.
    share(at[0].seq, b"first crl");
    assert_eq!(served(&b).unwrap().unwrap().0.number, 3);
    assert!(rt.block_on(b.shared_crl(0, true)).unwrap().is_none(), "no delta was shared");

    // Bytes the log does not name are never served.
    pg.sql("crls", "UPDATE ca_crl SET der = 'forged'::bytea");
    match served(&b) {
        Err(StoreError::Damaged(why)) => assert!(why.contains("not the ones the log names"), "{why}"),
        other => panic!("forged CRL bytes: {other:?}"),
    }
    // A row naming a record the replica does not hold yet waits for it.
    pg.sql("crls", "UPDATE ca_crl SET seq = 99");
    assert!(served(&b).unwrap().is_none());
}

/// A CA and a certificate for 127.0.0.1 signed by it, with `openssl`, in `dir`: the CA's
/// path.
fn tls_files(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (ca_key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &ca_key]);
    run(&["req", "-x509", "-new", "-key", &ca_key, "-subj", "/CN=pg test CA", "-days", "2", "-out", &ca]);
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key"]);
    run(&["req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1", "-out", "server.csr"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    dir.join(ca)
}

#[test]
fn the_store_talks_tls_to_postgres_verified_against_the_urls_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = tls_files(certs.path(), "good");
    let other = tempfile::tempdir().unwrap();
    let other_ca = tls_files(other.path(), "other");
    let pg = Pg::start_with(|dir| {
        for f in ["server.pem", "server.key"] {
            std::fs::copy(certs.path().join(f), dir.join(f)).unwrap();
        }
        // TLS only, from anywhere but the local socket.
        std::fs::write(dir.join("hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
            .unwrap();
        let _ = std::process::Command::new("chown").args(["-R", "postgres"]).arg(dir).status();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let at = |f: &str| dir.join(f).display().to_string();
        vec![
            "-c ssl=on".into(),
            format!("-c ssl_cert_file={}", at("server.pem")),
            format!("-c ssl_key_file={}", at("server.key")),
            format!("-c hba_file={}", at("hba.conf")),
        ]
    });
    let url = pg.database("tls");
    let dir = tempfile::tempdir().unwrap();
    let opts = || StoreOptions::default().min_free_bytes(0);

    // Plaintext is refused by this server; an unverifiable certificate is refused by us.
    let plain = EventStore::open_postgres(dir.path(), opts(), PgOptions::new(url.as_str(), "a"));
    assert!(matches!(plain, Err(StoreError::Unavailable(_))), "plaintext: {:?}", plain.err());
    let wrong = format!("{url}?sslmode=verify-full&sslrootcert={}", other_ca.display());
    match EventStore::open_postgres(dir.path(), opts(), PgOptions::new(wrong, "a")) {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("a server certificate from another CA: {:?}", other.err()),
    }
    let unverified = format!("{url}?sslmode=require");
    match EventStore::open_postgres(dir.path(), opts(), PgOptions::new(unverified, "a")) {
        Err(StoreError::InvalidArgument(why)) => assert!(why.contains("sslrootcert"), "{why}"),
        other => panic!("sslmode=require without a CA: {:?}", other.err()),
    }

    // With the right CA the store works, and every connection it holds is TLS.
    let good = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let store = EventStore::open_postgres(dir.path(), opts(), PgOptions::new(good.as_str(), "a")).unwrap();
    store.append_blocking(vec![common::issued(&common::serial(1), 4_000_000_000)]).unwrap();
    let conns = "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'ca-server'";
    let counts = pg.sql("tls", conns);
    let (all, tls) = counts.split_once('|').unwrap();
    assert!(all.parse::<u32>().unwrap() >= 2 && all == tls, "ca-server connections, TLS ones: {counts}");
    assert_eq!(verify_postgres(&good, &mut |_| {}).unwrap().records, 1);
}

#[test]
fn a_writer_whose_database_lost_acknowledged_records_stops_writing() {
    let pg = Pg::start();
    let url = pg.database("lost");
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), &url, "instance-a", 60_000);
    a.append_blocking(vec![common::issued(&common::serial(1), 4_000_000_000)]).unwrap();
    a.append_blocking(vec![common::issued(&common::serial(2), 4_000_000_000)]).unwrap();
    // What a promoted asynchronous standby looks like: the last record gone, the lease
    // row (same epoch) back at the head before it.
    pg.sql(
        "lost",
        "BEGIN; DELETE FROM ca_log WHERE seq = 1; \
         UPDATE ca_lease SET next_seq = 1, head = (SELECT hash FROM ca_log WHERE seq = 0); COMMIT;",
    );
    match a.append_blocking(vec![common::issued(&common::serial(3), 4_000_000_000)]) {
        Err(StoreError::Failed(why)) => assert!(why.contains("lost records"), "{why}"),
        other => panic!("appending over lost records: {other:?}"),
    }
    assert!(a.write_failure().is_some_and(|w| w.contains("lost records")), "{:?}", a.write_failure());
    assert!(
        a.append_blocking(vec![common::issued(&common::serial(4), 4_000_000_000)]).is_err(),
        "it stays stopped"
    );
    assert_eq!(pg.sql("lost", "SELECT count(*) FROM ca_log"), "1", "nothing was written over the gap");
    assert_eq!(a.role(), Role::Writer { epoch: 1 }, "it keeps the lease, so no one else writes over the gap");
}

#[test]
fn verify_reads_one_snapshot_while_the_writer_appends() {
    let pg = Pg::start();
    let url = pg.database("live");
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), &url, "instance-a", 60_000);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Certificates, revocations and CRL numbers: every projection table moves.
                let serial = common::serial(i);
                let mut batch = vec![common::issued(&serial, 4_000_000_000)];
                if i.is_multiple_of(3) {
                    batch.push(common::revoked(&serial, RevocationReason::KeyCompromise, 10, None));
                    batch.push(Event::CrlPublished(ca_core::event::CrlPublished {
                        number: i,
                        this_update: 10,
                        next_update: 20,
                        delta_base: None,
                        issuer_generation: (i % 2) as u32,
                        der_sha256: None,
                    }));
                }
                a.append_blocking(batch).unwrap();
            }
        });
        let failures: Vec<_> = (0..15).filter_map(|_| verify_postgres(&url, &mut |_| {}).err()).collect();
        stop.store(true, Ordering::Relaxed);
        assert!(failures.is_empty(), "verify under appends: {failures:?}");
    });
}
