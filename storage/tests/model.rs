//! Model test: random appends and reopens, compared after every step against an in-memory
//! model (the list of event bytes, their hash chain, and `Inventory`'s pure fold).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use ca_core::Event;
use ca_storage::{Appended, EventStore};
use common::model::{Model, Op, op};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model_across_appends_and_reopens(ops in proptest::collection::vec(op(), 1..10)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(dir.path()).unwrap();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Append(specs) => {
                    let events: Vec<Event> = specs.iter().map(|s| model.event(s)).collect();
                    let expected: Vec<Appended> = events.iter().map(|e| model.push(e)).collect();
                    prop_assert_eq!(store.append_blocking(events).unwrap(), expected);
                }
                Op::Reopen | Op::Resync => {
                    drop(store);
                    store = EventStore::open(dir.path()).unwrap();
                    prop_assert_eq!(store.metrics().replayed_at_open, 0, "current projections are not replayed");
                }
            }
            model.check(&store)?;
        }
    }
}
