//! The pieces of the failover scenario (tests/pg_failover.rs): a PostgreSQL cluster of the
//! test's own, the instances' addresses, load that follows the writer (gRPC here, ACME in
//! `acme_load.rs`), a WatchEvents subscriber that checks the chain as it goes, and the
//! check of what an instance built from the database holds of everything acknowledged.

mod acme_load;
pub use acme_load::{AcmeLoad, AcmeOrder, acme_losses};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use ca_proto::v1::{
    CertificateStatus, GetCertificateRequest, LogRecord, RevocationReason, RevokeRequest, SignCsrRequest,
    WatchEventsRequest, event,
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::common::{Server, csr_for};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-cluster.sh");
/// A caller gives up on an answer after this long (a paused instance never answers) and
/// counts the request's outcome as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
}

/// scripts/pg-cluster.sh on a directory and two free ports of this test's own; destroyed
/// when dropped, however the test ends.
pub struct Cluster {
    env: Vec<(String, String)>,
    pub url: String,
    ports: (u16, u16),
}

impl Cluster {
    pub fn up(name: &str, args: &[&str]) -> Cluster {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ports = (free(), free());
        let env = vec![
            ("PG_CLUSTER_DIR".into(), format!("/tmp/ca-pg-{name}-{}", std::process::id())),
            ("PG_PRIMARY_PORT".into(), ports.0.to_string()),
            ("PG_STANDBY_PORT".into(), ports.1.to_string()),
        ];
        let mut c = Cluster { env, url: String::new(), ports };
        c.run(&["destroy"]);
        let up: Vec<&str> = std::iter::once("up").chain(args.iter().copied()).collect();
        c.url = c.run(&up).lines().last().unwrap().to_string();
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash").arg(SCRIPT).args(args).envs(self.env.clone()).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "pg-cluster.sh {args:?}: {text}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// One query on the `ca` database of whichever node is the primary now.
    pub fn sql(&self, query: &str) -> String {
        let conn = format!(
            "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/ca?target_session_attrs=read-write",
            self.ports.0, self.ports.1
        );
        let out = Command::new("psql").args([&conn, "-Atqc", query]).output().unwrap();
        assert!(out.status.success(), "psql {query}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(SCRIPT).arg("destroy").envs(self.env.clone()).status();
    }
}

type Addrs = (String, String);

/// The instances' gRPC URLs and ACME addresses by slot (`None` while one is down), shared
/// with the load.
#[derive(Clone)]
pub struct Nodes {
    /// `(gRPC URL, ACME address)` by slot.
    urls: Arc<Mutex<Vec<Option<Addrs>>>>,
    tls: ClientTlsConfig,
    root: PathBuf,
}

impl Nodes {
    pub fn new(first: &Server, slots: usize) -> Nodes {
        let mut urls = vec![None; slots];
        urls[0] = Some((first.grpc.clone(), first.acme.clone()));
        Nodes { urls: Arc::new(Mutex::new(urls)), tls: first.admin_tls(), root: first.dir.join("root.pem") }
    }

    pub fn set(&self, slot: usize, server: &Server) {
        self.urls.lock().unwrap()[slot] = Some((server.grpc.clone(), server.acme.clone()));
    }

    fn slots(&self) -> usize {
        self.urls.lock().unwrap().len()
    }

    fn grpc(&self, slot: usize) -> Option<String> {
        self.urls.lock().unwrap()[slot].as_ref().map(|(g, _)| g.clone())
    }

    fn acme(&self, slot: usize) -> Option<String> {
        self.urls.lock().unwrap()[slot].as_ref().map(|(_, a)| a.clone()).filter(|a| !a.is_empty())
    }

    /// The CA root every instance shares (their listeners' certificates chain to it).
    fn root(&self) -> PathBuf {
        self.root.clone()
    }
}

/// One caller's clients, re-made when a slot's instance is replaced.
struct Clients {
    nodes: Nodes,
    cache: Vec<Option<(String, CertificateAuthorityClient<Channel>)>>,
}

impl Clients {
    fn new(nodes: &Nodes) -> Clients {
        Clients { nodes: nodes.clone(), cache: vec![None; nodes.slots()] }
    }

    fn get(&mut self, slot: usize) -> Option<CertificateAuthorityClient<Channel>> {
        let url = self.nodes.grpc(slot)?;
        if self.cache[slot].as_ref().is_none_or(|(u, _)| *u != url) {
            let ep = Endpoint::from_shared(url.clone()).unwrap().tls_config(self.nodes.tls.clone()).unwrap();
            let ch = ep.connect_timeout(Duration::from_secs(1)).connect_lazy();
            self.cache[slot] = Some((url, CertificateAuthorityClient::new(ch)));
        }
        self.cache[slot].as_ref().map(|(_, c)| c.clone())
    }
}

/// An acknowledged certificate.
#[derive(Clone)]
pub struct Issued {
    pub serial: String,
    pub der_sha256: Vec<u8>,
    pub slot: usize,
    pub sent: Instant,
    pub acked: Instant,
}

/// tonic's status for a connection that broke under a request: made by the client, not
/// an answer from the server (whose refusals are statuses with a code of their own).
fn lost_connection(e: &tonic::Status) -> bool {
    e.code() == tonic::Code::Unknown
        && e.message() == "transport error"
        && std::error::Error::source(e).is_some()
}

/// What the callers were told.
#[derive(Default, Clone)]
pub struct Ledger {
    pub certs: Vec<Issued>,
    /// Acknowledged revocations: serial, when the request was sent.
    pub revoked: Vec<(String, Instant)>,
    pub unavailable: u64,
    /// Requests given up on (outcome unknown).
    pub timeouts: u64,
    /// Requests whose connection broke before any answer (the instance was killed):
    /// outcome unknown, as for a timeout.
    pub dropped: u64,
    /// Every other failure: none is allowed.
    pub errors: Vec<String>,
    /// The pinned callers' answers: (slot, sent, Ok(serial) or the refusal's code).
    pub pinned: Vec<(usize, Instant, Result<String, tonic::Code>)>,
    /// The ACME callers' account, and their finished orders (whose certificates are in
    /// `certs` too).
    pub acme_account: Option<acme_load::Registered>,
    pub acme_orders: Vec<AcmeOrder>,
}

impl Ledger {
    fn failed(&mut self, what: &str, slot: usize, e: &tonic::Status) {
        if e.code() == tonic::Code::Unavailable {
            self.unavailable += 1;
        } else if lost_connection(e) {
            self.dropped += 1;
        } else {
            self.errors.push(format!("{what} at slot {slot}: {:?} {}", e.code(), e.message()));
        }
    }

    /// Acknowledged certificates whose request was sent at or after `t`.
    pub fn sent_since(&self, t: Instant) -> usize {
        self.certs.iter().filter(|c| c.sent >= t).count()
    }

    /// How long after `t` the first request sent at or after `t` was acknowledged.
    pub fn issuing_again_after(&self, t: Instant) -> Option<Duration> {
        self.certs.iter().filter(|c| c.sent >= t).map(|c| c.acked - t).min()
    }

    /// Serials acknowledged more than once.
    pub fn duplicates(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.certs.iter().filter(|c| !seen.insert(&c.serial)).map(|c| c.serial.clone()).collect()
    }
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Callers that issue (and one that revokes) at whichever instance writes until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    nodes: Nodes,
    ledger: SharedLedger,
}

impl Load {
    /// `signers` SignCsr callers and one Revoke caller, starting at `slot`; each moves to
    /// the other instance on UNAVAILABLE or a timeout.
    pub fn start(nodes: &Nodes, ledger: &SharedLedger, slot: usize, signers: usize, tag: &str) -> Load {
        let mut load =
            Load { stop: Default::default(), tasks: vec![], nodes: nodes.clone(), ledger: ledger.clone() };
        for t in 0..signers {
            let (clients, ledger, stop) = (Clients::new(nodes), ledger.clone(), load.stop.clone());
            let name = format!("{tag}{t}");
            load.tasks.push(tokio::spawn(sign_loop(clients, ledger, stop, slot, name, false)));
        }
        let (clients, ledger, stop) = (Clients::new(nodes), ledger.clone(), load.stop.clone());
        load.tasks.push(tokio::spawn(revoke_loop(clients, ledger, stop, slot)));
        load
    }

    /// A caller that stays at `slot` whatever it answers, and waits for every answer.
    pub fn pin(&mut self, slot: usize, tag: &str) {
        let (clients, ledger, stop) = (Clients::new(&self.nodes), self.ledger.clone(), self.stop.clone());
        self.tasks.push(tokio::spawn(sign_loop(clients, ledger, stop, slot, tag.to_string(), true)));
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn sign_loop(
    mut clients: Clients,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
    mut slot: usize,
    name: String,
    pinned: bool,
) {
    let slots = clients.cache.len();
    let timeout = if pinned { Duration::from_secs(30) } else { REQUEST_TIMEOUT };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Some(mut c) = clients.get(slot) else {
            slot = (slot + 1) % slots;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let csr = csr_for(&[&format!("{name}-{i}.example.internal")]);
        let sent = Instant::now();
        let req = SignCsrRequest { csr, profile: String::new(), validity_seconds: 0 };
        let r = tokio::time::timeout(timeout, c.sign_csr(req)).await;
        let failed = !matches!(r, Ok(Ok(_)));
        {
            let mut l = ledger.lock().unwrap();
            match r {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    if pinned {
                        l.pinned.push((slot, sent, Ok(r.serial.clone())));
                    }
                    let (serial, der_sha256) = (r.serial, sha256(&r.certificate_der));
                    l.certs.push(Issued { serial, der_sha256, slot, sent, acked: Instant::now() });
                }
                Ok(Err(e)) => {
                    l.failed("SignCsr", slot, &e);
                    if pinned {
                        l.pinned.push((slot, sent, Err(e.code())));
                    } else {
                        slot = (slot + 1) % slots;
                    }
                }
                Err(_) => {
                    if pinned {
                        l.errors.push(format!("{name}: no answer from slot {slot} within {timeout:?}"));
                    }
                    l.timeouts += 1;
                    slot = (slot + 1) % slots;
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Revokes every third acknowledged certificate, each once (an unknown outcome is never
/// retried, so an "already revoked" answer cannot come up).
async fn revoke_loop(mut clients: Clients, ledger: SharedLedger, stop: Arc<AtomicBool>, mut slot: usize) {
    let slots = clients.cache.len();
    // Only certificates acknowledged from now on: earlier phases revoked theirs.
    let mut next = ledger.lock().unwrap().certs.len();
    while !stop.load(Ordering::Relaxed) {
        let Some(mut c) = clients.get(slot) else {
            slot = (slot + 1) % slots;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Some(serial) = ledger.lock().unwrap().certs.get(next).map(|c| c.serial.clone()) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        next += 3;
        let req = RevokeRequest {
            serial: serial.clone(),
            reason: RevocationReason::KeyCompromise as i32,
            invalidity_date_unix: 0,
        };
        let sent = Instant::now();
        let r = tokio::time::timeout(REQUEST_TIMEOUT, c.revoke(req)).await;
        let mut l = ledger.lock().unwrap();
        match r {
            Ok(Ok(_)) => l.revoked.push((serial, sent)),
            Ok(Err(e)) => {
                l.failed("Revoke", slot, &e);
                slot = (slot + 1) % slots;
            }
            Err(_) => {
                l.timeouts += 1;
                slot = (slot + 1) % slots;
            }
        }
    }
}

/// What a WatchEvents subscriber saw, checked as it came.
#[derive(Default, Clone)]
pub struct Seen {
    /// The hash of each record, by seq.
    pub hashes: Vec<Vec<u8>>,
    /// Issued certificates: serial → SHA-256 of the DER.
    pub issued: HashMap<String, Vec<u8>>,
    pub revoked: HashSet<String>,
    /// Gaps, broken links, serials issued twice.
    pub broken: Vec<String>,
    /// Streams opened (1 + resumptions).
    pub streams: u64,
}

impl Seen {
    fn push(&mut self, rec: LogRecord) {
        let expected = self.hashes.len() as u64;
        let prev = self.hashes.last().cloned().unwrap_or_else(|| vec![0; 32]);
        if rec.seq != expected || rec.prev_hash != prev {
            self.broken.push(format!(
                "record {} came after {} records (prev_hash matches: {})",
                rec.seq,
                expected,
                rec.prev_hash == prev
            ));
        }
        match rec.event.and_then(|e| e.kind) {
            Some(event::Kind::CertificateIssued(i)) => {
                let serial = hex::encode(&i.serial);
                if self.issued.insert(serial.clone(), sha256(&i.certificate_der)).is_some() {
                    self.broken.push(format!("serial {serial} issued twice (again at seq {})", rec.seq));
                }
            }
            Some(event::Kind::CertificateRevoked(r)) => {
                self.revoked.insert(hex::encode(&r.serial));
            }
            _ => {}
        }
        self.hashes.push(rec.hash);
    }

    /// Acknowledged items the subscriber did not see (or saw with another certificate).
    pub fn missing(&self, ledger: &Ledger) -> Vec<String> {
        let certs = ledger.certs.iter().filter(|c| self.issued.get(&c.serial) != Some(&c.der_sha256));
        let revs = ledger.revoked.iter().filter(|(s, _)| !self.revoked.contains(s));
        certs
            .map(|c| format!("certificate {}", c.serial))
            .chain(revs.map(|(s, _)| format!("revocation {s}")))
            .collect()
    }
}

/// A subscriber from seq 0 on the instance in `slot`; when its stream ends, or `slot`
/// changes, it resumes at the next seq (on the instance in `slot` then).
pub struct Subscriber {
    pub seen: Arc<Mutex<Seen>>,
    pub slot: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub fn start(nodes: &Nodes, slot: usize) -> Subscriber {
        let (seen, at, stop) =
            (Arc::<Mutex<Seen>>::default(), Arc::new(AtomicUsize::new(slot)), Arc::<AtomicBool>::default());
        let mut clients = Clients::new(nodes);
        let (s, a, st) = (seen.clone(), at.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let slot = a.load(Ordering::Relaxed);
                let from = s.lock().unwrap().hashes.len() as u64;
                let Some(mut c) = clients.get(slot) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(Ok(stream)) = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    c.watch_events(WatchEventsRequest { from_seq: from }),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut stream = stream.into_inner();
                s.lock().unwrap().streams += 1;
                while !st.load(Ordering::Relaxed) && a.load(Ordering::Relaxed) == slot {
                    match tokio::time::timeout(Duration::from_millis(100), stream.message()).await {
                        Err(_) => {}
                        Ok(Ok(Some(rec))) => s.lock().unwrap().push(rec),
                        Ok(_) => break,
                    }
                }
            }
        });
        Subscriber { seen, slot: at, stop, task }
    }

    /// Wait until the subscriber has seen `head` records.
    pub async fn caught_up(&self, head: u64) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.hashes.len() as u64 >= head {
                return seen;
            }
            assert!(Instant::now() < deadline, "the subscriber saw {} of {head} records", seen.hashes.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

/// What `server` (best: a fresh instance whose replica comes from the database only)
/// lacks of what was acknowledged and what the subscriber saw: one line per lost or
/// altered item. Empty when nothing acknowledged was lost.
pub async fn losses(server: &Server, ledger: &Ledger, seen: &Seen) -> Vec<String> {
    let mut c = server.client().await;
    let mut lost = Vec::new();
    let mut status = HashMap::new();
    for i in &ledger.certs {
        match c.get_certificate(GetCertificateRequest { serial: i.serial.clone() }).await {
            Ok(r) => {
                let info = r.into_inner().certificate.unwrap();
                if sha256(&info.certificate_der) != i.der_sha256 {
                    lost.push(format!("certificate {} is another certificate now", i.serial));
                }
                status.insert(i.serial.clone(), info.status);
            }
            Err(e) if e.code() == tonic::Code::NotFound => {
                lost.push(format!("certificate {} (acknowledged by slot {}) is missing", i.serial, i.slot));
            }
            Err(e) => panic!("GetCertificate {}: {e:?}", i.serial),
        }
    }
    for (serial, _) in &ledger.revoked {
        if status.get(serial).is_some_and(|s| *s != CertificateStatus::Revoked as i32) {
            lost.push(format!("revocation of {serial} is missing"));
        }
    }
    // The log the subscriber saw, record by record, same hashes.
    let mut stream = c.watch_events(WatchEventsRequest { from_seq: 0 }).await.unwrap().into_inner();
    let n = seen.hashes.len();
    for (seq, hash) in seen.hashes.iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(rec))) if rec.hash == *hash => {}
            Ok(Ok(Some(_))) => {
                lost.push(format!("log records {seq}..{n} that the subscriber saw are replaced by others"));
                break;
            }
            _ => {
                lost.push(format!("log records {seq}..{n} that the subscriber saw are missing"));
                break;
            }
        }
    }
    lost
}
