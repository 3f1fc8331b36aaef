//! Test harness: runs the real `ca-server` binary on port 0 and talks to it with real
//! clients (tonic, openssl, the CLI).
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

pub mod acme;
pub mod hsm;
pub mod interop;
pub mod load;
pub mod raw_acme;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ca_proto::v1::certificate_authority_client::CertificateAuthorityClient;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_ca-server");

pub struct Server {
    child: Child,
    pub grpc: String,
    pub http: String,
    /// The ACME listener's address (`IP:PORT`); empty when ACME is off.
    pub acme: String,
    pub dir: PathBuf,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(dir, extra, &[])
    }

    /// [`Server::start_with`] with environment variables set for the server process.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("server log file");
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            // ACME (whose listener certificate is itself an issuance) only for the tests
            // that use it; a restart passes the address it had, so ACME URLs stay valid.
            .args(if !extra.iter().any(|a| a.starts_with("--acme")) {
                &["--no-acme"][..]
            } else if extra.contains(&"--acme-addr") {
                &[][..]
            } else {
                &["--acme-addr", "127.0.0.1:0"][..]
            })
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ca-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                panic!("server did not report ready; log:\n{log}");
            }
        };
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in ready line {line:?}"))
                .to_string()
        };
        let scheme = if extra.contains(&"--insecure-grpc") { "http" } else { "https" };
        Server {
            grpc: format!("{scheme}://{}", field("grpc=")),
            http: field("http="),
            acme: line.split_whitespace().find_map(|w| w.strip_prefix("acme=")).unwrap_or("").to_string(),
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// A tonic client: over TLS with the admin credential from the data dir, or plaintext
    /// for a server started with `--insecure-grpc`.
    pub async fn client(&self) -> CertificateAuthorityClient<Channel> {
        CertificateAuthorityClient::new(self.channel().await)
    }

    /// A channel as [`Server::client`] uses.
    pub async fn channel(&self) -> Channel {
        let mut ep = tonic::transport::Endpoint::from_shared(self.grpc.clone()).expect("gRPC address");
        if self.grpc.starts_with("https://") {
            ep = ep.tls_config(self.admin_tls()).expect("TLS config");
        }
        ep.connect().await.expect("connect gRPC")
    }

    /// TLS client settings with the server's admin credential and root.
    pub fn admin_tls(&self) -> tonic::transport::ClientTlsConfig {
        self.ca_only_tls().identity(tonic::transport::Identity::from_pem(
            std::fs::read(self.dir.join("admin.pem")).expect("admin.pem"),
            std::fs::read(self.dir.join("admin.key")).expect("admin.key"),
        ))
    }

    /// TLS client settings that trust the server's root but present no certificate.
    pub fn ca_only_tls(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(self.dir.join("root.pem")).expect("root.pem"),
            ))
            .domain_name("localhost")
    }

    /// `--addr ADDR --data-dir DIR`, for `ca-server client` and `ca-server acme`.
    pub fn cli_conn(&self) -> Vec<String> {
        vec!["--addr".into(), self.grpc.clone(), "--data-dir".into(), self.dir.display().to_string()]
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) of the server process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// SIGKILL: no shutdown hooks, no final flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for the graceful exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        self.child.wait().expect("wait")
    }

    /// A plain HTTP/1.1 GET on the HTTP listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(&self.http, path)
    }

    /// GET with the response head: (status, head, body).
    pub fn http_request_full(&self, path: &str) -> (u16, String, Vec<u8>) {
        http_request(&self.http, "GET", path, &[], &[])
    }
}

/// `ca-server serve` on `dir` for a start that must fail: (exited successfully, output).
/// A server that did start would hang the test, so callers only use it where it exits.
pub fn serve_expecting_exit(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    run(Command::new(BIN)
        .args([
            "serve",
            "--no-acme",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .envs(env.iter().copied()))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let (st, _, body) = http_request(addr, "GET", path, &[], &[]);
    (st, body)
}

/// A minimal HTTP/1.1 client (one request per connection): (status, head, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect HTTP");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write head");
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head") + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).expect("status").parse().expect("status code");
    let mut body = buf[head_end..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// A fresh P-256 CSR (DER) for `names` (DNS names or IP addresses).
pub fn csr_for(names: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("keygen");
    let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    params.serialize_request(&key).expect("csr").der().to_vec()
}

/// A P-256 key and CSR made by the `openssl` CLI in `dir` (as the README's quick start
/// does); `extra` adds e.g. `-addext subjectAltName=...`.
pub fn openssl_p256_csr(dir: &Path, key: &str, csr: &str, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    let (ok, out) = openssl(&args, dir);
    assert!(ok, "openssl req: {out}");
}

/// Every certificate ListCertificates returns, following page tokens.
pub async fn list_all(
    c: &mut CertificateAuthorityClient<Channel>,
    page_size: u32,
    status: i32,
) -> Vec<ca_proto::v1::CertificateInfo> {
    let mut token = String::new();
    let mut all = Vec::new();
    loop {
        let r = c
            .list_certificates(ca_proto::v1::ListCertificatesRequest { page_size, page_token: token, status })
            .await
            .expect("ListCertificates")
            .into_inner();
        all.extend(r.certificates);
        if r.next_page_token.is_empty() {
            return all;
        }
        token = r.next_page_token;
    }
}

/// Another instance's data dir (PostgreSQL backend): the keys and certificates of `from`,
/// no log.
pub fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).expect("keys dir");
    for e in std::fs::read_dir(from.join("keys")).expect("read keys dir") {
        let e = e.expect("keys dir entry");
        std::fs::copy(e.path(), to.join("keys").join(e.file_name())).expect("copy key");
    }
    for f in ["root.pem", "intermediate.pem", "chain.pem", "admin.pem", "admin.key"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).expect("copy certificate");
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to.join("keys"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod keys");
    }
}

/// Run a command, returning (success, stdout+stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run command");
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

pub fn openssl(args: &[&str], cwd: &Path) -> (bool, String) {
    run(Command::new("openssl").args(args).current_dir(cwd))
}

/// Parse `ca_log_next_seq N` from /metrics.
pub fn next_seq(server: &Server) -> u64 {
    let (st, body) = server.http_get("/metrics");
    assert_eq!(st, 200);
    let text = String::from_utf8(body).expect("utf8");
    text.lines()
        .find_map(|l| l.strip_prefix("ca_log_next_seq "))
        .expect("ca_log_next_seq in /metrics")
        .trim()
        .parse()
        .expect("number")
}

/// Poll `f` every 50 ms until it holds; panic naming `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
