//! Command line: `ca-loadtest <scenario> [options]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::driver::Stop;
use crate::tls::TlsArgs;

#[derive(Debug, Parser)]
#[command(
    name = "ca-loadtest",
    version,
    about = "Black-box load generator for the CA: gRPC SignCsr, OCSP, and the machine's raw crypto limit",
    long_about = "Black-box load generator for the CA. It talks only to the public interfaces (gRPC, HTTP) \
                  and reports throughput, latency percentiles (HDR histogram) and errors by kind. \
                  `calibrate` measures the raw signing limit of this machine without network or storage."
)]
pub struct Cli {
    /// Print one machine-readable JSON object on stdout instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Issue certificates over gRPC (`ca.v1.CertificateAuthority/SignCsr`) from pre-generated CSRs.
    GrpcSign(GrpcSignArgs),
    /// Query OCSP (RFC 6960) over HTTP GET and/or POST with pre-encoded requests.
    Ocsp(OcspArgs),
    /// Measure the raw crypto limit of this machine: CSR verify + leaf build + P-256 sign per second.
    Calibrate(CalibrateArgs),
    /// Complete ACME (RFC 8555) orders with http-01, answered by the generator itself.
    Acme(AcmeArgs),
    /// A new connection per request: TCP (+ TLS with the client certificate for https://)
    /// + HTTP/2 + one GetCaCertificates, then close. Measures connection setup, not signing.
    Handshake(HandshakeArgs),
}

/// Options shared by every load scenario.
#[derive(Debug, Clone, Args, Serialize)]
pub struct LoadArgs {
    /// Requests in flight at once (one worker task per slot).
    #[arg(long, short = 'c', default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Number of measured requests [default: 10000 unless --duration is given].
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Measure for this long instead of a count (e.g. 30s, 2m, 1500ms).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    #[serde(serialize_with = "ser_opt_secs")]
    pub duration: Option<Duration>,
    /// Open-loop target rate (requests/s): request i starts at start + i/R and its latency is
    /// measured from that scheduled instant (no coordinated omission). Default: closed loop.
    #[arg(long, short = 'r', value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Unmeasured warm-up before the measured window (e.g. 5s); 0 for none.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    #[serde(serialize_with = "ser_secs")]
    pub warmup: Duration,
    /// Per-request deadline; slower requests count as `timeout` errors.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// Tokio worker threads of the load generator [default: half the cores, at least one:
    /// it usually shares the machine with the server, and one thread cost less CPU per
    /// request than two on 2 cores (BENCHMARKS.md)].
    #[arg(long)]
    pub threads: Option<usize>,
}

impl LoadArgs {
    pub fn stop(&self) -> Stop {
        match (self.count, self.duration) {
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Count(10_000),
        }
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct GrpcSignArgs {
    /// gRPC endpoint of the CA: http:// for plaintext (a ca-server started with
    /// --insecure-grpc), https:// for TLS with the --tls-* / --data-dir settings.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: TlsArgs,
    /// gRPC client: `h2` (lean, straight on the h2 crate: the generator takes less of the
    /// CPU it shares with the server) or `tonic` (the generated client).
    #[arg(long, value_enum, default_value_t = GrpcClient::H2)]
    pub client: GrpcClient,
    /// HTTP/2 connections; requests go round-robin over them.
    #[arg(long, short = 'k', default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections: u64,
    /// Distinct pre-generated P-256 CSRs (names lt-<i>.<domain>), generated before the clock starts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub csrs: u64,
    /// DNS suffix of the CSRs' names.
    #[arg(long, default_value = "example.internal")]
    pub domain: String,
    /// Issuance profile (empty: the server's default).
    #[arg(long, default_value = "")]
    pub profile: String,
    /// Requested validity (e.g. 24h); 0 means the profile default.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    #[serde(serialize_with = "ser_secs")]
    pub validity: Duration,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct HandshakeArgs {
    /// gRPC endpoint: https:// (TLS, with --tls-* / --data-dir) or http:// (the plaintext baseline).
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcClient {
    H2,
    Tonic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OcspMethod {
    /// `GET {url}/{base64(request)}`
    Get,
    /// `POST {url}` with `application/ocsp-request`
    Post,
    /// Alternate GET and POST.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertIdHash {
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GetEncoding {
    /// Standard base64 with `+`, `/`, `=` percent-encoded (RFC 6960 appendix A.1).
    Percent,
    /// Standard base64 as is (`/` inside the path: what many real clients send).
    Raw,
    /// URL-safe base64 alphabet without padding.
    UrlSafe,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct OcspArgs {
    /// OCSP responder URL (POST goes here; GET appends /{base64 request}).
    #[arg(long, default_value = "http://127.0.0.1:8080/ocsp")]
    pub url: String,
    /// HTTP method of the OCSP requests.
    #[arg(long, value_enum, default_value_t = OcspMethod::Post)]
    pub method: OcspMethod,
    /// How GET encodes the request in the path.
    #[arg(long, value_enum, default_value_t = GetEncoding::Percent)]
    pub get_encoding: GetEncoding,
    /// Keep-alive HTTP/1.1 connections [default: --concurrency]; slot s uses connection s % K.
    #[arg(long, short = 'k', value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub connections: Option<u64>,
    /// File of certificate serials to query, hex, one per line ('#' comments allowed).
    #[arg(long, conflicts_with = "certs")]
    pub serials: Option<PathBuf>,
    /// The issuing CA certificate (PEM or DER) the serials belong to; with --from-grpc it is
    /// fetched with GetCaCertificates instead.
    #[arg(long)]
    pub issuer: Option<PathBuf>,
    /// Issue --certs certificates over gRPC at this address first and query their real serials.
    #[arg(long, value_name = "ADDR")]
    pub from_grpc: Option<String>,
    /// How many certificates to issue with --from-grpc.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub certs: u64,
    /// CertID hash algorithm.
    #[arg(long, value_enum, default_value_t = CertIdHash::Sha1)]
    pub hash: CertIdHash,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsrMode {
    /// Generate the CSRs before the clock starts (one per order with -n, else --csrs of them).
    Upfront,
    /// A fresh P-256 key and CSR inside each order (its cost is reported on its own).
    PerOrder,
}

/// `acme`: per order newOrder -> authz -> http-01 (served by the generator on
/// 127.0.0.1:--http-port) -> poll until ready -> finalize -> poll until valid -> download.
#[derive(Debug, Clone, Args, Serialize)]
pub struct AcmeArgs {
    /// The ACME directory URL (https, loopback only).
    #[arg(long, default_value = "https://127.0.0.1:8443/acme/directory")]
    pub directory: String,
    /// Port of the generator's http-01 responder on 127.0.0.1: the port the server dials
    /// (ca-server `--acme-http-port`, Pebble's `httpPort`).
    #[arg(long)]
    pub http_port: u16,
    /// PEM root to trust for the server's TLS certificate (ca-server: DATA_DIR/root.pem)
    /// [default: the platform's trust store].
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
    /// Use instant-acme's own HTTP client instead of the generator's (the same hyper-rustls
    /// client with TCP_NODELAY): it leaves Nagle on, which adds ~40 ms to every request on
    /// loopback (delayed ACK); for comparison only.
    #[arg(long)]
    pub stock_client: bool,
    /// What each order asks for: `ip:127.0.0.1` (validated by dialling it, no DNS), or
    /// `dns:NAME` where `{n}` is the order number (the server needs a resolver that answers
    /// loopback for NAME, e.g. pebble-challtestsrv).
    #[arg(long, default_value = "ip:127.0.0.1")]
    pub identifier: String,
    /// Where finalize CSRs (P-256, rcgen) come from.
    #[arg(long, value_enum, default_value_t = CsrMode::Upfront)]
    pub csr: CsrMode,
    /// With `--csr upfront`: how many distinct CSRs [default: -n, else 1000]; order i uses
    /// CSR i mod this (and, with a `{n}` identifier, names i mod this).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub csrs: Option<u64>,
    /// Accounts, registered before the clock starts; worker s uses account s mod this
    /// [default: one per worker, i.e. --concurrency].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub accounts: Option<u64>,
    /// First delay before refreshing an order that is not ready/valid yet.
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    #[serde(serialize_with = "ser_secs")]
    pub poll_interval: Duration,
    /// Each further delay is the previous one times this (1 = a fixed interval).
    #[arg(long, default_value_t = 1.0)]
    pub poll_backoff: f64,
    /// Longest delay between two polls.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    #[serde(serialize_with = "ser_secs")]
    pub poll_max: Duration,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct CalibrateArgs {
    /// Seconds per measurement (each figure is measured on 1 thread, then on all threads).
    #[arg(long, short = 's', default_value = "3", value_parser = parse_positive_secs)]
    pub seconds: f64,
    /// Threads for the all-core figures [default: available parallelism].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Parse `30s`, `1500ms`, `2m`, `1h`, `1.5s`, `250us`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid duration {s:?}: expected a number with a unit, e.g. 30s, 500ms, 2m"));
    }
    let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}: {num:?} is not a number"))?;
    let secs_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        u => {
            return Err(format!("invalid duration {s:?}: unknown unit {u:?} (use us, ms, s, m, h, d)"));
        }
    };
    Duration::try_from_secs_f64(v * secs_per_unit).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("invalid rate {s:?}: expected requests per second > 0")),
    }
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    let d = parse_duration(s)?;
    if d.is_zero() { Err("must be more than 0".into()) } else { Ok(d.as_secs_f64()) }
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in ["", "s", "abc", "10 parsecs", "1.2.3s", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn grpc_sign_flags() {
        let cli = Cli::try_parse_from([
            "ca-loadtest",
            "grpc-sign",
            "--duration",
            "30s",
            "--warmup",
            "5s",
            "-c",
            "64",
            "-k",
            "2",
            "--rate",
            "2500",
            "--validity",
            "24h",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::GrpcSign(a) = cli.command else { panic!("wrong subcommand") };
        assert_eq!(a.load.stop(), Stop::Duration(Duration::from_secs(30)));
        assert_eq!(a.load.warmup, Duration::from_secs(5));
        assert_eq!(a.load.concurrency, 64);
        assert_eq!(a.connections, 2);
        assert_eq!(a.load.rate, Some(2500.0));
        assert_eq!(a.validity, Duration::from_secs(86_400));
        assert_eq!(a.addr, "http://127.0.0.1:50051");
        let params = serde_json::to_value(&a).unwrap();
        assert_eq!(params["duration"], 30.0);
        assert_eq!(params["concurrency"], 64);

        let Command::GrpcSign(d) = Cli::try_parse_from(["ca-loadtest", "grpc-sign"]).unwrap().command else {
            panic!()
        };
        assert_eq!(d.load.stop(), Stop::Count(10_000));
        assert!(
            Cli::try_parse_from(["ca-loadtest", "grpc-sign", "--count", "5", "--duration", "1s"]).is_err()
        );
        assert!(Cli::try_parse_from(["ca-loadtest", "grpc-sign", "--duration", "soon"]).is_err());
        assert!(Cli::try_parse_from(["ca-loadtest", "grpc-sign", "--rate", "0"]).is_err());
    }

    #[test]
    fn tls_flags() {
        let cli = Cli::try_parse_from([
            "ca-loadtest",
            "grpc-sign",
            "--addr",
            "https://127.0.0.1:50051",
            "--data-dir",
            "data",
            "--tls-server-name",
            "localhost",
        ])
        .unwrap();
        let Command::GrpcSign(a) = cli.command else { panic!("wrong subcommand") };
        assert_eq!(a.tls.data_dir.as_deref(), Some(std::path::Path::new("data")));
        assert!(!a.tls.tls_resume);
        let Command::Handshake(h) =
            Cli::try_parse_from(["ca-loadtest", "handshake", "--tls-resume", "-d", "5s"]).unwrap().command
        else {
            panic!("wrong subcommand")
        };
        assert!(h.tls.tls_resume);
        assert_eq!(h.addr, "https://127.0.0.1:50051");
        let no_key = ["ca-loadtest", "handshake", "--tls-cert", "a.pem"];
        assert!(Cli::try_parse_from(no_key).is_err(), "--tls-cert needs --tls-key");
    }

    #[test]
    fn ocsp_flags() {
        let cli = Cli::try_parse_from([
            "ca-loadtest",
            "ocsp",
            "--method",
            "mixed",
            "--from-grpc",
            "http://127.0.0.1:50051",
            "--certs",
            "50",
            "--count",
            "1000",
        ])
        .unwrap();
        let Command::Ocsp(a) = cli.command else { panic!("wrong subcommand") };
        assert_eq!(a.method, OcspMethod::Mixed);
        assert_eq!(a.certs, 50);
        assert_eq!(a.hash, CertIdHash::Sha1);
        assert_eq!(a.load.stop(), Stop::Count(1000));
        assert!(Cli::try_parse_from(["ca-loadtest", "ocsp", "--method", "put"]).is_err());
    }

    #[test]
    fn acme_flags() {
        let cli = Cli::try_parse_from([
            "ca-loadtest",
            "acme",
            "--directory",
            "https://127.0.0.1:14000/dir",
            "--http-port",
            "5002",
            "-n",
            "2000",
            "-c",
            "32",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Acme(a) = cli.command else { panic!("wrong subcommand") };
        assert_eq!(a.http_port, 5002);
        assert_eq!(a.identifier, "ip:127.0.0.1");
        assert_eq!(a.csr, CsrMode::Upfront);
        assert_eq!(a.poll_interval, Duration::from_millis(20));
        assert_eq!(a.load.stop(), Stop::Count(2000));
        assert_eq!(a.load.concurrency, 32);
        let params = serde_json::to_value(&a).unwrap();
        assert_eq!(params["poll_interval"], 0.02);
        assert!(Cli::try_parse_from(["ca-loadtest", "acme"]).is_err(), "--http-port is required");
    }
}
