//! Append throughput with group commit: N concurrent appenders, each appending one
//! ~700-byte `CertificateIssued` per call and awaiting durability before the next.
//! Every iteration is one durable certificate, so the reported throughput is
//! certificates per second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ca_core::event::CertificateIssued;
use ca_core::{Event, Serial};
use ca_storage::EventStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A realistic leaf: ~560 bytes of DER plus metadata encodes to ~700 bytes.
fn event(n: u64) -> Event {
    let mut serial = [0u8; 16];
    serial[0] = 0x40;
    serial[8..].copy_from_slice(&n.to_be_bytes());
    Event::CertificateIssued(CertificateIssued {
        // The serial is 16 bytes with a non-zero first byte: always valid.
        serial: Serial::from_bytes(&serial).expect("valid serial"),
        certificate_der: vec![0x30; 560],
        profile: "server".into(),
        requester: "grpc:127.0.0.1:54321".into(),
        not_before: 1_700_000_000,
        not_after: 1_700_086_400,
        names: vec![format!("svc-{n}.default.svc.cluster.local"), "svc.internal".into()],
        issuer_generation: 0,
    })
}

fn bench_append(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.warm_up_time(Duration::from_secs(1));
    for appenders in [1u64, 16, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EventStore::open(dir.path()).expect("open store");
        let counter = Arc::new(AtomicU64::new(0));
        g.bench_function(format!("appenders={appenders}"), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(appenders);
                let elapsed = rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..appenders)
                        .map(|_| {
                            let (store, counter) = (store.clone(), counter.clone());
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    let n = counter.fetch_add(1, Ordering::Relaxed);
                                    store.append(vec![event(n)]).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("appender task");
                    }
                    start.elapsed()
                });
                // More appends than asked may have run (rounding up per task): scale back.
                elapsed.mul_f64(iters as f64 / (per_task * appenders) as f64)
            })
        });
        let m = store.metrics();
        eprintln!(
            "appenders={appenders}: {} appends in {} batches (avg {:.1}/batch), {:.3} s flushing",
            m.appends_total,
            m.batches_total,
            m.records_total as f64 / m.batches_total.max(1) as f64,
            m.flush_seconds_total()
        );
    }
    g.finish();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
