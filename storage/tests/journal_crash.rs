//! The commit journal carries acknowledged appends across a crash that loses sled's
//! unflushed state. The test re-runs its own binary as a child that appends and then
//! aborts (no destructors, no final flush: what `kill -9` leaves behind), and the parent
//! reopens the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::process::Command;

use ca_storage::{EventStore, StoreError, StoreOptions};
use common::*;

const CHILD_ENV: &str = "CA_STORAGE_JOURNAL_CHILD";
const TEST_NAME: &str = "acknowledged_appends_survive_an_abort_between_checkpoints";

/// Child: append one event per call (each its own batch and journal frame), print each
/// acknowledged seq (the first shares a line with the test harness's own output), then
/// abort.
fn child(dir: &str, n: u64) -> ! {
    let store = EventStore::open(std::path::Path::new(dir)).unwrap();
    for i in 0..n {
        let appended = store.append_blocking(vec![issued(&serial(i + 1), 1_900_000_000)]).unwrap();
        println!("acked {}", appended[0].seq);
    }
    std::process::abort();
}

fn run_child(dir: &std::path::Path, n: u64) -> Vec<u64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}:{n}", dir.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must abort");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("acked ").nth(1).map(|s| s.trim().parse().unwrap()))
        .collect()
}

#[test]
fn acknowledged_appends_survive_an_abort_between_checkpoints() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, n) = spec.rsplit_once(':').unwrap();
        child(dir, n.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child(dir.path(), 300);
    assert_eq!(acked, (0..300).collect::<Vec<_>>(), "the child acknowledged every append");

    // A read-only open (what `audit verify` uses) must not pretend the log is complete.
    // (300 small records stay in sled's unwritten buffer: without the journal they are gone.)
    match EventStore::open_with(dir.path(), StoreOptions::default().read_only(true)) {
        Err(StoreError::Unrecovered(n)) => assert!(n > 0, "{n}"),
        other => panic!("read-only open must report the unrecovered journal, got {other:?}"),
    }

    let store = EventStore::open(dir.path()).unwrap();
    assert_eq!(store.next_seq(), 300, "every acknowledged record is in the log after reopening");
    assert!(store.metrics().journal_recovered_at_open > 0, "the journal was needed");
    let report = store.verify_chain().unwrap();
    assert_eq!(report.records, 300);
    for i in 0..300u64 {
        let rec = store.cert(&serial(i + 1)).unwrap();
        assert_eq!(rec.map(|r| r.issued_seq), Some(i), "projection of serial {}", i + 1);
    }
    // The journal was folded into sled and emptied: a second crash-free reopen and a
    // read-only open both see the same log.
    drop(store);
    let ro = EventStore::open_with(dir.path(), StoreOptions::default().read_only(true)).unwrap();
    assert_eq!(ro.next_seq(), 300);
    drop(ro);

    // Appends continue the chain after recovery, and survive a second abort.
    let more = run_child(dir.path(), 50);
    assert_eq!(more, (300..350).collect::<Vec<_>>());
    let store = EventStore::open(dir.path()).unwrap();
    assert_eq!(store.verify_chain().unwrap().records, 350);
}

#[test]
fn a_journal_that_disagrees_with_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let acked = run_child(dir.path(), 20);
    assert_eq!(acked.len(), 20);
    // Recover once so the log holds every record, then forge a journal frame for seq 0
    // with different content: the store must refuse it rather than pick one.
    drop(EventStore::open(dir.path()).unwrap());
    let journal = dir.path().join("ca-journal");
    let mut value = vec![0u8; 72];
    value.extend_from_slice(b"not the event that was logged");
    let mut body = Vec::new();
    body.extend_from_slice(&0u64.to_be_bytes());
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(&value);
    let mut frame = b"CAJ1".to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32(&body).to_be_bytes());
    frame.extend_from_slice(&body);
    std::fs::write(&journal, frame).unwrap();
    match EventStore::open(dir.path()) {
        Err(StoreError::Corrupt { seq: 0, detail }) => assert!(detail.contains("journal"), "{detail}"),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// CRC-32 (IEEE), bitwise: the test's own, independent of the store's implementation.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn an_idle_store_checkpoints_and_empties_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    store.append_blocking(vec![issued(&serial(1), 1_900_000_000)]).unwrap();
    let journal = dir.path().join("ca-journal");
    assert!(std::fs::metadata(&journal).unwrap().len() > 0, "the append went through the journal");
    let before = store.metrics().checkpoints_total;
    // The writer checkpoints after 5 s without appends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while store.metrics().checkpoints_total == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(store.metrics().checkpoints_total > before, "no idle checkpoint within 15 s");
    // What is left is the checkpoint marker alone: one 12-byte frame header, next_seq, head.
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 12 + 8 + 32, "the checkpoint emptied the journal");
}
