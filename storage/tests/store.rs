//! Behaviour of the event store against its contract: projections equal the fold, the
//! chain catches tampering, group commit batches, watch never gaps, recovery catches up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use ca_core::chain::{GENESIS, record_hash};
use ca_core::event::RevocationReason;
use ca_core::{Event, Serial};
use ca_proto::convert::encode_event;
use ca_storage::{EventStore, StatusFilter, StoreError, StoreOptions};
use common::*;
use futures::StreamExt;

/// sled directly, bypassing the store; retries while a just-dropped store handle still
/// holds the file lock (its writer thread finishes a final flush first).
fn raw_sled(dir: &tempfile::TempDir) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(dir.path()) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open sled: {e}"),
        }
    }
}

fn open(dir: &tempfile::TempDir) -> EventStore {
    EventStore::open(dir.path()).unwrap()
}

#[test]
fn given_mixed_history_when_rebuilding_then_projections_equal_incremental_and_fold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let events = mixed_events(300);
    // Several appends of different sizes, so batches differ.
    for chunk in events.chunks(37) {
        store.append_blocking(chunk.to_vec()).unwrap();
    }
    assert_eq!(store.next_seq(), 300);

    let incremental = store.inventory().unwrap();
    assert!(
        !incremental.revoked.is_empty() && incremental.last_crl_number > 0,
        "history exercises every projection"
    );
    assert_eq!(incremental, fold(&store), "incrementally maintained projections equal the pure fold");

    assert_eq!(store.rebuild_projections().unwrap(), 300);
    assert_eq!(store.inventory().unwrap(), incremental, "rebuild equals incremental");
    assert_eq!(store.ca().unwrap(), incremental.ca);
    assert_eq!(store.last_crl_number().unwrap(), incremental.last_crl_number);

    // Appends keep working on rebuilt projections, and a reopen keeps them.
    store.append_blocking(vec![issued(&serial(9_999), 5)]).unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.metrics().replayed_at_open, 0);
    assert_eq!(store.inventory().unwrap(), fold(&store));
}

#[test]
fn given_a_flipped_byte_when_verifying_then_exactly_that_record_is_reported() {
    // (offset into the stored value, what it hits)
    for (offset, what) in [(72 + 3, "event bytes"), (40, "stored hash"), (5, "prev_hash")] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..20 {
            store.append_blocking(vec![issued(&serial(i), 100)]).unwrap();
        }
        let ok = store.verify_chain().unwrap();
        assert_eq!((ok.records, ok.head), (20, store.head().unwrap().hash));

        store.danger_flip_byte(10, offset).unwrap();
        let err = store.verify_chain().unwrap_err();
        assert_eq!(err.seq, 10, "flip in {what}: {err}");
    }
}

#[test]
fn given_a_tampered_last_record_then_open_refuses_and_read_only_open_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        store.append_blocking(vec![issued(&serial(i), 100)]).unwrap();
    }
    store.danger_flip_byte(4, 80).unwrap();
    assert!(store.danger_flip_byte(4, 10_000).is_err(), "offset past the value is rejected");
    assert!(matches!(store.danger_flip_byte(99, 0), Err(StoreError::NoSuchRecord(99))));
    drop(store);

    assert!(matches!(EventStore::open(dir.path()), Err(StoreError::Corrupt { seq: 4, .. })));
    let ro = EventStore::open_with(dir.path(), StoreOptions::default().read_only(true)).unwrap();
    assert_eq!(ro.verify_chain().unwrap_err().seq, 4);
    assert!(matches!(ro.append_blocking(vec![crl(1, None)]), Err(StoreError::ReadOnly)));
}

#[test]
fn given_a_malformed_stored_record_then_reads_fail_with_corrupt_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        store.append_blocking(vec![issued(&serial(i), 100)]).unwrap();
    }
    drop(store);
    {
        let db = raw_sled(&dir);
        db.open_tree("log").unwrap().insert(2u64.to_be_bytes(), &[1u8, 2, 3][..]).unwrap();
        db.flush().unwrap();
    }
    let store = open(&dir);
    assert!(matches!(store.read(2), Err(StoreError::Corrupt { seq: 2, .. })));
    assert!(matches!(store.cert(&serial(2)), Err(StoreError::Corrupt { seq: 2, .. })));
    assert!(store.read(3).unwrap().is_some());
    assert_eq!(store.verify_chain().unwrap_err().seq, 2);
    let results: Vec<_> = store.range(0).collect();
    assert_eq!(results.len(), 5);
    assert!(results[2].is_err() && results[3].is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_64_concurrent_appenders_then_seqs_are_distinct_consecutive_and_batched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50u64 {
                    let a = store.append(vec![issued(&serial(t * 1000 + i), 10)]).await.unwrap();
                    assert_eq!(a.len(), 1);
                    // Durable and readable as soon as append returns.
                    assert_eq!(store.read(a[0].seq).unwrap().unwrap().hash, a[0].hash);
                    seqs.push(a[0].seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one appender's events keep their order");
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (0..3200).collect::<Vec<_>>());
    assert_eq!(store.verify_chain().unwrap().records, 3200);
    let m = store.metrics();
    assert_eq!((m.appends_total, m.records_total), (3200, 3200));
    assert!(m.batches_total < m.appends_total, "group commit batched: {m:?}");
    assert_eq!(store.inventory().unwrap().certs.len(), 3200);
}

#[tokio::test]
async fn a_multi_event_append_gets_consecutive_seqs_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(store.append(vec![]).await.unwrap().is_empty());
    store.append(vec![ca(1)]).await.unwrap();
    let a = store
        .append(vec![
            issued(&serial(1), 9),
            crl(4, None),
            revoked(&serial(1), RevocationReason::Superseded, 5, None),
        ])
        .await
        .unwrap();
    assert_eq!(a.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let recs = all_records(&store);
    assert_eq!(recs[2].prev_hash, a[0].hash);
    assert_eq!(recs[3].hash, a[2].hash);
    assert_eq!(store.head().unwrap(), a[2]);
    // Every record of one append shares its batch's timestamp.
    assert!(recs[1..].iter().all(|r| r.recorded_at_micros == recs[1].recorded_at_micros));
    assert_eq!(recs[0].prev_hash, GENESIS);
    assert_eq!(recs[0].hash, record_hash(&GENESIS, 0, &encode_event(&ca(1))));
}

async fn next_n(
    stream: &mut (
             impl futures::Stream<Item = Result<std::sync::Arc<ca_storage::StoredRecord>, StoreError>> + Unpin
         ),
    n: usize,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("watch stalled");
        seqs.push(r.expect("stream ended").expect("watch error").seq);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_history_then_live_appends_when_watching_then_every_record_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        store.append(vec![issued(&serial(i), 10)]).await.unwrap();
    }
    let mut w = Box::pin(store.watch(0));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 10..20 {
                store.append(vec![issued(&serial(i), 10)]).await.unwrap();
            }
        })
    };
    let seqs = next_n(&mut w, 20).await;
    writer.await.unwrap();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    assert!(tokio::time::timeout(Duration::from_millis(200), w.next()).await.is_err(), "no extra record");

    let mut mid = Box::pin(store.watch(15));
    assert_eq!(next_n(&mut mid, 5).await, (15..20).collect::<Vec<_>>());
    let mut future = Box::pin(store.watch(25));
    for i in 20..26 {
        store.append(vec![issued(&serial(i), 10)]).await.unwrap();
    }
    assert_eq!(next_n(&mut future, 1).await, vec![25], "a watch from a future seq starts there");

    // Store shutdown ends the stream with Closed.
    drop(store);
    drop(w);
    drop(mid);
    let end = tokio::time::timeout(Duration::from_secs(10), future.next()).await.unwrap();
    assert!(matches!(end, Some(Err(StoreError::Closed))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_consumer_lagging_past_the_live_channel_then_it_falls_back_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Subscribed now, polled only after 5000 records (more than the channel holds) committed.
    let mut w = Box::pin(store.watch(0));
    for chunk in 0..10u64 {
        store.append((0..500).map(|i| crl(chunk * 500 + i, Some(1))).collect()).await.unwrap();
    }
    let seqs = next_n(&mut w, 5000).await;
    assert_eq!(seqs, (0..5000).collect::<Vec<_>>());
    store.append(vec![crl(1, None)]).await.unwrap();
    assert_eq!(next_n(&mut w, 1).await, vec![5000], "back on the live channel afterwards");
}

#[test]
fn given_log_records_without_projections_when_reopening_then_projections_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.append_blocking(vec![ca(1), issued(&serial(0), 50), issued(&serial(1), 60)]).unwrap();
    let head = store.head().unwrap();
    drop(store);

    // Simulate a crash after the log batch reached disk but before projections and meta:
    // append chained records straight into the `log` tree, and project only part of one.
    let tail = [
        issued(&serial(2), 70),
        revoked(&serial(0), RevocationReason::KeyCompromise, 55, Some(40)),
        crl(7, None),
        ca(2),
        issued(&serial(3), -5),
    ];
    {
        let db = raw_sled(&dir);
        let log = db.open_tree("log").unwrap();
        let mut prev = head.hash;
        for (i, e) in tail.iter().enumerate() {
            let seq = head.seq + 1 + i as u64;
            let bytes = encode_event(e);
            let hash = record_hash(&prev, seq, &bytes);
            let mut v = Vec::new();
            v.extend_from_slice(&prev);
            v.extend_from_slice(&hash);
            v.extend_from_slice(&0i64.to_be_bytes());
            v.extend_from_slice(&bytes);
            log.insert(seq.to_be_bytes(), v).unwrap();
            prev = hash;
        }
        // A partially applied projection (certs entry for seq 3) must converge too.
        let mut cv = 3u64.to_be_bytes().to_vec();
        cv.extend_from_slice(&70i64.to_be_bytes());
        db.open_tree("certs").unwrap().insert(serial(2).as_bytes(), cv).unwrap();
        db.flush().unwrap();
    }

    let store = open(&dir);
    assert_eq!(store.metrics().replayed_at_open, 5);
    assert_eq!(store.next_seq(), 8);
    assert_eq!(store.inventory().unwrap(), fold(&store));
    assert_eq!(store.inventory().unwrap().applied, Some(7));
    assert_eq!(store.cert(&serial(3)).unwrap().unwrap().issued_seq, 7);
    assert_eq!(store.is_revoked(&serial(0)).unwrap().unwrap().invalidity_date, Some(40));
    assert_eq!(store.last_crl_number().unwrap(), 7);
    assert_eq!(store.ca().unwrap().unwrap().root_der, vec![0x30, 2, 1], "the latest CaInitialized wins");
    store.verify_chain().unwrap();

    // The next append chains from the recovered head; a clean reopen replays nothing.
    store.append_blocking(vec![crl(8, None)]).unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.metrics().replayed_at_open, 0);
    assert_eq!(store.verify_chain().unwrap().records, 9);
}

#[test]
fn given_issued_and_revoked_certs_then_queries_and_pages_match_the_fold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let events = mixed_events(400);
    store.append_blocking(events).unwrap();
    let inv = fold(&store);
    let now = 1_000_000;

    let status = |s: &Serial| -> StatusFilter {
        let c = inv.certs[s];
        if inv.revoked.contains_key(s) {
            StatusFilter::Revoked
        } else if c.not_after < now {
            StatusFilter::Expired
        } else {
            StatusFilter::Valid
        }
    };
    for filter in [StatusFilter::Any, StatusFilter::Valid, StatusFilter::Revoked, StatusFilter::Expired] {
        let expected: Vec<Serial> = inv
            .certs
            .keys()
            .filter(|s| filter == StatusFilter::Any || status(s) == filter)
            .cloned()
            .collect();
        assert!(!expected.is_empty(), "{filter:?} has members");
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store.list_certs(after.as_ref(), 7, filter, now).unwrap();
            assert!(page.len() <= 7);
            got.extend(page.into_iter().map(|r| {
                assert_eq!(r.issued_seq, inv.certs[&r.issued.serial].seq);
                assert_eq!(r.revoked, inv.revoked.get(&r.issued.serial).copied());
                r.issued.serial
            }));
            match next {
                Some(s) => after = Some(s),
                None => break,
            }
        }
        assert_eq!(got, expected, "{filter:?}");
    }

    let crl_view: BTreeMap<_, _> =
        store.revoked().unwrap().into_iter().map(|(s, r, na)| (s, (r, na))).collect();
    assert_eq!(crl_view.len(), inv.revoked.len());
    for (s, r) in &inv.revoked {
        assert_eq!(crl_view[s], (*r, inv.certs[s].not_after));
        assert_eq!(store.is_revoked(s).unwrap(), Some(*r));
        assert_eq!(store.cert(s).unwrap().unwrap().revoked, Some(*r));
    }
    assert!(store.cert(&serial(123_456)).unwrap().is_none());
    assert!(store.is_revoked(&serial(123_456)).unwrap().is_none());
    assert_eq!(store.list_certs(None, 0, StatusFilter::Any, now).unwrap(), (vec![], None));
}

#[test]
fn reads_are_bounded_and_an_invalidity_date_of_zero_is_stored_canonically() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(store.head().is_none() && store.read(0).unwrap().is_none() && store.ca().unwrap().is_none());
    assert_eq!(store.verify_chain().unwrap().head, GENESIS);
    store
        .append_blocking(vec![
            issued(&serial(1), 9),
            revoked(&serial(1), RevocationReason::Unspecified, 3, Some(0)),
        ])
        .unwrap();
    assert!(store.read(2).unwrap().is_none());
    assert_eq!(store.range(5).count(), 0);
    assert_eq!(store.range_raw(1).count(), 1);
    // The wire maps 0 to "absent"; the store folds what reads back, so both views agree.
    assert_eq!(store.is_revoked(&serial(1)).unwrap().unwrap().invalidity_date, None);
    match &store.read(1).unwrap().unwrap().event {
        Event::CertificateRevoked(r) => assert_eq!(r.invalidity_date, None),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.inventory().unwrap(), fold(&store));
}

#[tokio::test]
async fn append_blocking_inside_a_runtime_does_not_panic_and_fsync_mode_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open_with(dir.path(), StoreOptions::default().fsync_each_batch(true)).unwrap();
    store.append_blocking(vec![ca(1)]).unwrap();
    store.append(vec![crl(1, None)]).await.unwrap();
    store.flush().unwrap();
    assert_eq!(store.verify_chain().unwrap().records, 2);
    assert!(store.metrics().flush_seconds_total() > 0.0);
}
