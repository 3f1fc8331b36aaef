//! A well-behaved client run alongside an attack: its success rate and p99 latency.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ca_proto::v1::GetCaCertificatesRequest;
use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::{Server, http_get};

/// The well-behaved client: one sample per request, (ok, latency).
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(bool, Duration)>>,
}

pub fn start_load(http: String, mut grpc: CertificateAuthorityClient<Channel>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            let t = Instant::now();
            let addr = http.clone();
            let get = tokio::task::spawn_blocking(move || http_get(&addr, "/healthz").0);
            let ok = matches!(tokio::time::timeout(Duration::from_secs(5), get).await, Ok(Ok(200)));
            samples.push((ok, t.elapsed()));
            let t = Instant::now();
            let call = grpc.get_ca_certificates(GetCaCertificatesRequest {});
            let ok = matches!(tokio::time::timeout(Duration::from_secs(5), call).await, Ok(Ok(_)));
            samples.push((ok, t.elapsed()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples
    });
    Load { stop, task }
}

/// Run `attack` under the well-behaved load; print and check the table line.
pub async fn row<F: std::future::Future<Output = String>>(server: &Server, name: &str, attack: F) {
    let load = start_load(server.http.clone(), server.client().await);
    let t = Instant::now();
    let answer = attack.await;
    // At least a second of load, so a short attack still has a sample.
    if let Some(rest) = Duration::from_secs(1).checked_sub(t.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    let mut samples = load.task.await.unwrap();
    let n = samples.len();
    let ok = samples.iter().filter(|s| s.0).count();
    samples.sort_by_key(|s| s.1);
    let p99 = samples[(n * 99 / 100).min(n - 1)].1;
    println!(
        "attack={name} ok={ok}/{n} p99={:.1}ms took={:.1}s answer: {answer}",
        p99.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64()
    );
    assert!(n >= 10 && ok * 100 >= n * 95, "{name}: well-behaved client served {ok}/{n}");
    assert!(p99 < Duration::from_secs(2), "{name}: p99 {p99:?}");
}

/// Read what the peer sends until it closes or `limit` passes: (bytes, closed).
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}
