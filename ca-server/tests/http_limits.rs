//! The HTTP listener's limits (`[http]`) against the real server: a client that sends
//! partial headers is dropped after `header_read_timeout_secs`, and connections over
//! `max_connections` are closed at once while the others are served; once the slow ones
//! are dropped, everyone is served again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test or bench fails loudly")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const LIMITS: &str = "[http]\nheader_read_timeout_secs = 1\nmax_connections = 3\n";

fn start(tmp: &std::path::Path) -> Server {
    let cfg = tmp.join("ca.toml");
    std::fs::write(&cfg, LIMITS).unwrap();
    Server::start_with(&tmp.join("data"), &["--config", cfg.to_str().unwrap()])
}

/// A connection that sent half a request and waits.
fn partial(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(&server.http).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ca\r\n").unwrap();
    s
}

/// Read until the server closes (Ok) or `limit` passes (Err); what it sent.
fn until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(got),
            Err(e) => return Err(format!("still open after {limit:?}: {e}")),
        }
    }
}

fn healthz_raw(server: &Server) -> Vec<u8> {
    let mut s = TcpStream::connect(&server.http).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n").unwrap();
    until_closed(&mut s, Duration::from_secs(5)).unwrap()
}

#[test]
fn partial_headers_are_dropped_after_the_header_read_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let mut slow = partial(&server);
    let t = Instant::now();
    until_closed(&mut slow, Duration::from_secs(6)).expect("the slow client is dropped");
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(4), "dropped after {waited:?}, timeout is 1 s");
    assert!(String::from_utf8_lossy(&healthz_raw(&server)).starts_with("HTTP/1.1 200"));
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_served_again_later() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let held: Vec<TcpStream> = (0..3).map(|_| partial(&server)).collect();
    std::thread::sleep(Duration::from_millis(200)); // all three accepted
    let refused = healthz_raw(&server);
    assert!(
        refused.is_empty(),
        "over the cap: closed without an answer, got {:?}",
        String::from_utf8_lossy(&refused)
    );

    // The held ones time out and free their slots; then everyone is served.
    let t = Instant::now();
    loop {
        let answer = healthz_raw(&server);
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no slot came free");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    let (st, body) = server.http_get("/metrics");
    assert_eq!(st, 200);
    let text = String::from_utf8(body).unwrap();
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ca_http_connections_refused_total ")?.trim().parse().ok())
        .expect("ca_http_connections_refused_total");
    assert!(n >= 1, "{n}");
}
