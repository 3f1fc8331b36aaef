//! Helpers for the interop tests with real ACME clients (certbot, lego) from Debian
//! packages: required tools, bounded subprocesses that show their output on failure, and
//! result checks with openssl (verify, OCSP, CRL).
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Server, http_get};

/// Every client subprocess is bounded by this.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Fail (never skip) when `bin` is not on PATH, naming the Debian package to install.
pub fn require_tool(bin: &str, debian_package: &str) -> PathBuf {
    let found = if bin.contains('/') {
        Some(PathBuf::from(bin)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(bin)).find(|p| p.is_file()))
    };
    found.unwrap_or_else(|| {
        panic!(
            "`{bin}` is not installed: install the Debian package `{debian_package}` \
             (apt-get install --no-install-recommends {debian_package}; scripts/test.sh does)"
        )
    })
}

/// A child process killed (and reaped) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The outcome of a bounded subprocess: its exit status and everything it printed.
pub struct Outcome {
    pub status: ExitStatus,
    pub output: String,
    pub command: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Run `cmd` with stdout and stderr captured to files under `dir` (no pipe can fill up),
/// killing it after `timeout`. Panics on timeout, showing the output so far and
/// `context` (e.g. the server log).
pub fn run_bounded(cmd: &mut Command, dir: &Path, label: &str, timeout: Duration) -> Outcome {
    let command = format!("{cmd:?}");
    let out_path = dir.join(format!("{label}.out"));
    let out = std::fs::File::create(&out_path).expect("create output file");
    let err = out.try_clone().expect("clone output file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait for client") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            let output = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!("{label} timed out after {timeout:?}\ncommand: {command}\noutput:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    Outcome { status, output, command }
}

/// The server's log (`<datadir>.log`, written by `Server::start_with`).
pub fn server_log(server: &Server) -> String {
    std::fs::read_to_string(server.dir.with_extension("log")).unwrap_or_default()
}

/// Panic unless `o` succeeded, with the client's and the server's output.
pub fn expect_success(o: &Outcome, server: &Server, extra_logs: &[&Path]) {
    if o.ok() {
        return;
    }
    let mut msg = format!("client failed ({})\ncommand: {}\noutput:\n{}\n", o.status, o.command, o.output);
    for p in extra_logs {
        for f in log_files(p) {
            msg.push_str(&format!(
                "--- {} ---\n{}\n",
                f.display(),
                std::fs::read_to_string(&f).unwrap_or_default()
            ));
        }
    }
    msg.push_str(&format!("--- server log ---\n{}", server_log(server)));
    panic!("{msg}");
}

fn log_files(p: &Path) -> Vec<PathBuf> {
    if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        v.sort();
        v
    } else {
        vec![p.to_path_buf()]
    }
}

/// Run `openssl` with `args` in `cwd` (bounded): (success, stdout+stderr).
pub fn openssl_in(cwd: &Path, args: &[&str]) -> (bool, String) {
    require_tool("openssl", "openssl");
    let o = run_bounded(Command::new("openssl").args(args).current_dir(cwd), cwd, "openssl", CLIENT_TIMEOUT);
    (o.ok(), o.output)
}

/// `openssl verify -CAfile root -untrusted chain cert`; panics with openssl's output on failure.
pub fn verify_chain(cwd: &Path, root: &Path, chain: &Path, cert: &Path) {
    let (ok, out) = openssl_in(
        cwd,
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            chain.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains(": OK"), "openssl verify {}: {out}", cert.display());
}

/// The certificate's serial in openssl's spelling (upper-case hex).
pub fn serial_of(cwd: &Path, cert: &Path) -> String {
    let (ok, out) = openssl_in(cwd, &["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()]);
    assert!(ok, "openssl x509 -serial: {out}");
    out.trim().strip_prefix("serial=").unwrap_or_else(|| panic!("serial in {out:?}")).to_uppercase()
}

/// The subjectAltName extension as openssl prints it.
pub fn sans_of(cwd: &Path, cert: &Path) -> String {
    let (ok, out) =
        openssl_in(cwd, &["x509", "-noout", "-ext", "subjectAltName", "-in", cert.to_str().unwrap()]);
    assert!(ok, "openssl x509 -ext subjectAltName: {out}");
    out
}

/// `openssl ocsp` against the server's `/ocsp` (POST); returns the output after checking
/// the response verified against the server's chain.
pub fn ocsp_check(cwd: &Path, server: &Server, cert: &Path) -> String {
    let url = format!("http://{}/ocsp", server.http);
    let issuer = server.dir.join("intermediate.pem");
    let chain = server.dir.join("chain.pem");
    let (ok, out) = openssl_in(
        cwd,
        &[
            "ocsp",
            "-issuer",
            issuer.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-url",
            &url,
            "-CAfile",
            chain.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("Response verify OK"), "openssl ocsp: {out}");
    out
}

/// Assert OCSP answers `revoked` for `cert`.
pub fn assert_ocsp_revoked(cwd: &Path, server: &Server, cert: &Path) -> String {
    let out = ocsp_check(cwd, server, cert);
    assert!(
        out.contains(&format!("{}: revoked", cert.display())),
        "OCSP status of {}: {out}",
        cert.display()
    );
    out
}

/// Fetch `/crl.pem`, check its signature with openssl, assert it lists `serial`, and that
/// `openssl verify -crl_check` refuses `cert` as revoked. Returns the `openssl crl -text`.
pub fn assert_crl_lists(cwd: &Path, server: &Server, cert: &Path, serial: &str) -> String {
    let (st, body) = http_get(&server.http, "/crl.pem");
    assert_eq!(st, 200, "GET /crl.pem: {}", String::from_utf8_lossy(&body));
    let crl = cwd.join("crl.pem");
    std::fs::write(&crl, &body).unwrap();
    let chain = server.dir.join("chain.pem");
    let (ok, text) = openssl_in(
        cwd,
        &["crl", "-in", crl.to_str().unwrap(), "-CAfile", chain.to_str().unwrap(), "-noout", "-text"],
    );
    assert!(ok && text.contains("verify OK"), "openssl crl: {text}");
    assert!(text.contains(&format!("Serial Number: {serial}")), "CRL lists serial {serial}: {text}");
    let (ok, out) = openssl_in(
        cwd,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            server.dir.join("root.pem").to_str().unwrap(),
            "-untrusted",
            server.dir.join("intermediate.pem").to_str().unwrap(),
            "-CRLfile",
            crl.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
    );
    assert!(!ok && out.contains("certificate revoked"), "openssl verify -crl_check: {out}");
    text
}
