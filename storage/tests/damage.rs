//! Damage to a data dir is reported when the store opens, with what to do, never served as
//! a shorter log; and a file system below the free-space reserve stops writes, not reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::path::Path;

use ca_storage::{EventStore, StoreError, StoreOptions};
use common::*;

fn append_n(dir: &Path, from: u64, n: u64) {
    let store = EventStore::open(dir).unwrap();
    for i in from..from + n {
        store.append_blocking(vec![issued(&serial(i + 1), 1_900_000_000)]).unwrap();
    }
    // Dropping the last handle checkpoints: sled flushed, the journal reduced to its marker.
}

/// Copy sled's files (everything but the journal) from `from` to `to`.
fn copy_sled(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "ca-journal" {
            continue;
        }
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_sled(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn an_older_copy_of_the_log_behind_the_last_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    append_n(dir.path(), 0, 5);
    copy_sled(dir.path(), old.path());
    append_n(dir.path(), 5, 5);
    // Put the older sled files back under the newer journal (a restore of part of a data
    // dir, or a file system that lost sled's last writes).
    copy_sled(old.path(), dir.path());
    for opts in [StoreOptions::default(), StoreOptions::default().read_only(true)] {
        match EventStore::open_with(dir.path(), opts) {
            Err(StoreError::Damaged(msg)) => {
                assert!(msg.contains("ends after 5 records, but its last checkpoint held 10"), "{msg}");
                assert!(msg.contains("restore it from a backup"), "{msg}");
            }
            other => panic!("expected the damage to be reported, got {other:?}"),
        }
    }
}

#[test]
fn a_truncated_sled_file_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    append_n(dir.path(), 0, 3000);
    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    match EventStore::open(dir.path()) {
        Err(e) => {
            let msg = e.to_string();
            eprintln!("open after truncating db from {len} to {} bytes: {msg}", len / 2);
            assert!(msg.contains("restore") || msg.contains("backup"), "the error says what to do: {msg}");
        }
        Ok(store) => panic!("a truncated db opened with {} records of 3000", store.next_seq()),
    }
}

#[test]
fn below_the_free_space_reserve_writes_are_refused_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    append_n(dir.path(), 0, 3);
    // A reserve no disk can meet.
    let store =
        EventStore::open_with(dir.path(), StoreOptions::default().min_free_bytes(u64::MAX / 2)).unwrap();
    for _ in 0..2 {
        match store.append_blocking(vec![issued(&serial(100), 1_900_000_000)]) {
            Err(e @ StoreError::LowSpace { .. }) => {
                assert!(e.is_unavailable());
                assert!(e.to_string().contains("min_free_bytes"), "{e}");
            }
            other => panic!("expected LowSpace, got {other:?}"),
        }
    }
    assert!(store.write_failure().unwrap_or_default().contains("reserve"), "{:?}", store.write_failure());
    assert_eq!(store.metrics().low_space_refusals_total, 2);
    assert_eq!(store.next_seq(), 3);
    assert!(store.cert(&serial(2)).unwrap().is_some(), "reads go on");
    drop(store);
    // Not a failure of the store: with room, it takes writes again.
    let store = EventStore::open(dir.path()).unwrap();
    store.append_blocking(vec![issued(&serial(100), 1_900_000_000)]).unwrap();
    assert!(store.write_failure().is_none());
    assert!(store.verify_chain().is_ok());
}

#[test]
fn a_store_held_by_another_handle_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let held = EventStore::open(dir.path()).unwrap();
    match EventStore::open(dir.path()) {
        Err(StoreError::Locked(d)) => assert_eq!(d, dir.path().display().to_string()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(held);
    EventStore::open(dir.path()).unwrap();
}
