//! http-01 against a hand-written HTTP/1.1 responder on 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::testutil::{Zone, validator};
use super::super::{ChallengeKind, Identifier, VaConfig, VaError, Validator};

const TOKEN: &str = "tok_EN-1";
const KA: &str = "tok_EN-1.thumbprint";
const PATH: &str = "/.well-known/acme-challenge/tok_EN-1";

#[derive(Clone)]
enum Reply {
    Body(u16, &'static str),
    Redirect(String),
    /// Accept and read the request, never answer.
    Hang,
}

/// What the responder saw: connections accepted, and each request's Host and User-Agent.
struct Server {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
}

impl Server {
    /// Adds a route after binding, for replies that need the server's own port.
    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }
}

async fn serve(routes: Vec<(&str, Reply)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let routes: Arc<Mutex<HashMap<String, Reply>>> =
        Arc::new(Mutex::new(routes.into_iter().map(|(p, r)| (p.to_string(), r)).collect()));
    let conns = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (c, q, r) = (Arc::clone(&conns), Arc::clone(&requests), Arc::clone(&routes));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (routes, q) = (Arc::clone(&r), Arc::clone(&q));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let mut lines = text.split("\r\n");
                let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
                let header = |name: &str| {
                    text.split("\r\n")
                        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
                        .map(|(_, v)| v.trim().to_string())
                        .unwrap_or_default()
                };
                q.lock().unwrap().push((path.clone(), header("host"), header("user-agent")));
                let reply = routes.lock().unwrap().get(&path).cloned();
                let resp = match reply.unwrap_or(Reply::Body(404, "nope")) {
                    Reply::Body(code, body) => format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    Reply::Redirect(to) => format!(
                        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    Reply::Hang => {
                        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                        return;
                    }
                };
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server { addr, conns, requests, routes }
}

fn va_for(srv: &Server, f: impl FnOnce(&mut VaConfig)) -> Validator {
    let port = srv.addr.port();
    validator(|c| {
        c.http_port = port;
        f(c)
    })
}

fn localhost() -> Identifier {
    Identifier::Ip("127.0.0.1".parse().unwrap())
}

async fn run(va: &Validator, ident: &Identifier) -> Result<Option<SocketAddr>, VaError> {
    va.validate(ChallengeKind::Http01, ident, TOKEN, KA).await.map(|v| v.address)
}

#[tokio::test]
async fn http01_right_body_is_accepted() {
    // trailing whitespace after the key authorization is allowed (RFC 8555 8.3)
    let srv = serve(vec![(PATH, Reply::Body(200, "tok_EN-1.thumbprint \r\n"))]).await;
    let va = va_for(&srv, |_| {});
    assert_eq!(run(&va, &localhost()).await.expect("valid"), Some(srv.addr));
    let reqs = srv.requests.lock().unwrap().clone();
    assert_eq!(reqs, vec![(PATH.to_string(), "127.0.0.1".to_string(), "ca-server-va".to_string())]);
}

#[tokio::test]
async fn http01_dns_identifier_is_resolved_through_the_resolver() {
    let srv = serve(vec![(PATH, Reply::Body(200, KA))]).await;
    let mut zone = Zone::default();
    zone.ip("www.example.test", "127.0.0.1".parse().unwrap());
    let dns = zone.serve().await;
    let va = va_for(&srv, |c| c.dns_resolver = Some(dns));
    let ident = Identifier::Dns("WWW.example.test".into());
    assert_eq!(run(&va, &ident).await.expect("valid"), Some(srv.addr));
    assert_eq!(srv.requests.lock().unwrap()[0].1, "www.example.test");
    // a name without an address is a DNS problem, not a connection one
    let e = run(&va, &Identifier::Dns("missing.example.test".into())).await.unwrap_err();
    assert!(matches!(e, VaError::Dns(_)), "{e:?}");
}

#[tokio::test]
async fn http01_wrong_body_is_incorrect_and_not_echoed() {
    let secret = "internal-secret-page-content";
    let srv = serve(vec![(PATH, Reply::Body(200, secret))]).await;
    let va = va_for(&srv, |_| {});
    match run(&va, &localhost()).await.unwrap_err() {
        VaError::IncorrectResponse(m) => {
            assert!(!m.contains(secret), "{m}");
            assert!(m.contains(KA), "names what was expected: {m}");
            assert!(m.contains(&format!("{} bytes", secret.len())), "{m}");
        }
        other => panic!("want IncorrectResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn http01_not_found_is_incorrect_response() {
    let srv = serve(vec![]).await;
    let va = va_for(&srv, |_| {});
    match run(&va, &localhost()).await.unwrap_err() {
        VaError::IncorrectResponse(m) => assert!(m.contains("404"), "{m}"),
        other => panic!("want IncorrectResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn http01_nothing_listening_is_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let va = validator(|c| c.http_port = port);
    match run(&va, &localhost()).await.unwrap_err() {
        VaError::Connection(m) => assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}"),
        other => panic!("want Connection, got {other:?}"),
    }
}

#[tokio::test]
async fn http01_silent_server_times_out() {
    let srv = serve(vec![(PATH, Reply::Hang)]).await;
    let va = va_for(&srv, |c| c.timeout = std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let e = run(&va, &localhost()).await.unwrap_err();
    assert!(matches!(e, VaError::Connection(ref m) if m.contains("timed out")), "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn http01_follows_a_redirect_chain() {
    let srv =
        serve(vec![(PATH, Reply::Redirect("/step2?x=1#frag".into())), ("/final", Reply::Body(200, KA))])
            .await;
    let port = srv.addr.port();
    // the absolute hop names a host that is resolved (and checked) again
    srv.route("/step2?x=1", Reply::Redirect(format!("http://hop.example.test:{port}/final")));
    let mut zone = Zone::default();
    zone.ip("hop.example.test", "127.0.0.1".parse().unwrap());
    let dns = zone.serve().await;
    let va = va_for(&srv, |c| c.dns_resolver = Some(dns));
    assert_eq!(run(&va, &localhost()).await.expect("valid"), Some(srv.addr));
    let reqs = srv.requests.lock().unwrap().clone();
    let paths: Vec<&str> = reqs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(paths, vec![PATH, "/step2?x=1", "/final"]);
    assert_eq!(reqs[2].1, format!("hop.example.test:{port}"));
}

#[tokio::test]
async fn http01_redirect_to_another_port_is_refused() {
    let other = serve(vec![("/x", Reply::Body(200, KA))]).await;
    let srv = serve(vec![(PATH, Reply::Redirect(format!("http://127.0.0.1:{}/x", other.addr.port())))]).await;
    let va = va_for(&srv, |_| {});
    match run(&va, &localhost()).await.unwrap_err() {
        VaError::Connection(m) => assert!(m.contains("port"), "{m}"),
        other => panic!("want Connection, got {other:?}"),
    }
    assert_eq!(other.conns.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http01_redirects_to_other_schemes_or_relative_paths_are_refused() {
    for to in [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "relative/path",
        "//127.0.0.1/x",
        "http://user:pw@127.0.0.1/x",
    ] {
        let srv = serve(vec![(PATH, Reply::Redirect(to.into()))]).await;
        let va = va_for(&srv, |_| {});
        let e = run(&va, &localhost()).await.unwrap_err();
        assert!(matches!(e, VaError::Connection(_)), "{to}: {e:?}");
    }
}

#[tokio::test]
async fn http01_redirect_to_a_refused_address_is_unauthorized() {
    let srv = serve(vec![]).await;
    let port = srv.addr.port();
    srv.route(PATH, Reply::Redirect(format!("http://169.254.169.254:{port}/latest/meta-data/")));
    let va = va_for(&srv, |_| {});
    let e = run(&va, &localhost()).await.unwrap_err();
    assert!(matches!(e, VaError::Unauthorized(ref m) if m.contains("169.254.169.254")), "{e:?}");
}

/// `/r{n}` redirects to `/r{n+1}` up to `/r{last}`, which serves the key authorization.
async fn chain(last: usize) -> Server {
    let mut routes = vec![(PATH, Reply::Redirect("/r1".into()))];
    let names: Vec<String> = (1..=last).map(|i| format!("/r{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let reply =
            if i + 1 == last { Reply::Body(200, KA) } else { Reply::Redirect(format!("/r{}", i + 2)) };
        routes.push((name.as_str(), reply));
    }
    serve(routes).await
}

#[tokio::test]
async fn http01_ten_redirects_are_followed_eleven_are_not() {
    let srv = chain(10).await;
    run(&va_for(&srv, |_| {}), &localhost()).await.expect("10 redirects are within the limit");
    let srv = chain(11).await;
    match run(&va_for(&srv, |_| {}), &localhost()).await.unwrap_err() {
        VaError::Connection(m) => assert!(m.contains("too many redirects"), "{m}"),
        other => panic!("want Connection, got {other:?}"),
    }
    assert_eq!(srv.conns.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn http01_loopback_refused_before_connecting() {
    let srv = serve(vec![(PATH, Reply::Body(200, KA))]).await;
    let va = va_for(&srv, |c| c.allow_loopback = false);
    let e = run(&va, &localhost()).await.unwrap_err();
    assert!(matches!(e, VaError::Unauthorized(_)), "{e:?}");
    // and through DNS: the resolved address is checked before it is dialled
    let mut zone = Zone::default();
    zone.ip("evil.example.test", "127.0.0.1".parse().unwrap());
    let dns = zone.serve().await;
    let va = va_for(&srv, |c| {
        c.allow_loopback = false;
        c.dns_resolver = Some(dns);
    });
    let e = run(&va, &Identifier::Dns("evil.example.test".into())).await.unwrap_err();
    assert!(matches!(e, VaError::Unauthorized(_)), "{e:?}");
    assert_eq!(srv.conns.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http01_metadata_address_refused() {
    let va = validator(|_| {});
    let e = run(&va, &Identifier::Ip("169.254.169.254".parse().unwrap())).await.unwrap_err();
    assert!(matches!(e, VaError::Unauthorized(ref m) if m.contains("link-local")), "{e:?}");
}

#[tokio::test]
async fn http01_own_listener_refused() {
    let srv = serve(vec![(PATH, Reply::Body(200, KA))]).await;
    let va = va_for(&srv, |c| c.own_addrs = vec![srv.addr]);
    let e = run(&va, &localhost()).await.unwrap_err();
    assert!(matches!(e, VaError::Unauthorized(ref m) if m.contains("own")), "{e:?}");
    assert_eq!(srv.conns.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http01_oversized_body_is_incorrect_response() {
    let big: &'static str = Box::leak("x".repeat(super::MAX_BODY + 1).into_boxed_str());
    let srv = serve(vec![(PATH, Reply::Body(200, big))]).await;
    let e = run(&va_for(&srv, |_| {}), &localhost()).await.unwrap_err();
    assert!(matches!(e, VaError::IncorrectResponse(ref m) if m.contains("longer")), "{e:?}");
}

#[tokio::test]
async fn http01_bad_tokens_are_malformed() {
    let va = validator(|_| {});
    let e = va.validate(ChallengeKind::Http01, &localhost(), "../../x", KA).await.unwrap_err();
    assert!(matches!(e, VaError::Malformed(_)), "{e:?}");
}
