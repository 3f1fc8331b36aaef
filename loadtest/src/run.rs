//! Wiring: CLI options -> prepared scenario -> warm-up + measured phase -> report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::acme::{self, AcmeSummary};
use crate::cli::{AcmeArgs, CsrMode, GrpcClient, GrpcSignArgs, HandshakeArgs, LoadArgs, OcspArgs};
use crate::driver::{PhaseConfig, Scenario, Stop, run_phase};
use crate::grpc::{self, GrpcSign};
use crate::h2c::H2Channel;
use crate::handshake::Handshake;
use crate::ocsp::{self, Issuer, Ocsp, Target};
use crate::report::{Machine, Measured, Report, WarmupSummary, available_cores, percentile_line};
use crate::{TOOL, csrs};

/// Raise the returned flag on ctrl-c, so an interrupted run still reports what it measured.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            f.store(true, Ordering::Relaxed);
        }
    });
    flag
}

/// Optional warm-up, then the measured phase.
pub async fn measure<S: Scenario>(
    scenario: Arc<S>,
    load: &LoadArgs,
    progress: bool,
) -> (Option<WarmupSummary>, crate::driver::PhaseResult) {
    let stop_flag = stop_on_ctrl_c();
    let concurrency = usize::try_from(load.concurrency).unwrap_or(usize::MAX);
    let mut offset = 0;
    let warmup = if load.warmup.is_zero() {
        None
    } else {
        let cfg = PhaseConfig {
            concurrency,
            stop: Stop::Duration(load.warmup),
            rate: load.rate,
            timeout: load.timeout,
            index_offset: 0,
            progress,
            label: "warmup ",
        };
        let r = run_phase(Arc::clone(&scenario), &cfg, Arc::clone(&stop_flag)).await;
        offset = r.ok + r.error_count();
        Some(WarmupSummary { seconds: r.elapsed.as_secs_f64(), ok: r.ok, errors: r.error_count() })
    };
    let cfg = PhaseConfig {
        concurrency,
        stop: load.stop(),
        rate: load.rate,
        timeout: load.timeout,
        index_offset: offset,
        progress,
        label: "measure",
    };
    let result = run_phase(scenario, &cfg, stop_flag).await;
    (warmup, result)
}

fn params<T: serde::Serialize>(args: &T, extra: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let mut v = serde_json::to_value(args).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(o) = &mut v {
        for (k, x) in extra {
            o.insert((*k).to_string(), x.clone());
        }
    }
    v
}

async fn gen_csrs(count: u64, domain: &str, progress: bool) -> Result<Vec<bytes::Bytes>, String> {
    let count = usize::try_from(count).map_err(|_| "too many CSRs".to_string())?;
    let domain = domain.to_string();
    tokio::task::spawn_blocking(move || csrs::generate(count, &domain, available_cores(), progress))
        .await
        .map_err(|e| format!("CSR generation: {e}"))?
}

fn concurrency(load: &LoadArgs) -> usize {
    usize::try_from(load.concurrency).unwrap_or(usize::MAX)
}

pub async fn grpc_sign(args: &GrpcSignArgs, progress: bool) -> Result<Report, String> {
    let setup = Instant::now();
    let csrs = gen_csrs(args.csrs, &args.domain, progress).await?;
    let k = usize::try_from(args.connections).unwrap_or(1);
    let (profile, validity) = (args.profile.clone(), args.validity.as_secs());
    let tls = args.tls.client(&args.addr)?;
    let scenario = Arc::new(match args.client {
        GrpcClient::Tonic => GrpcSign::new(
            grpc::connect_with(&args.addr, k, concurrency(&args.load), tls.as_ref()).await?,
            csrs,
            profile,
            validity,
        ),
        GrpcClient::H2 => {
            let mut channels = Vec::with_capacity(k);
            for _ in 0..k.max(1) {
                channels.push(H2Channel::connect_with(&args.addr, tls.as_ref()).await?);
            }
            GrpcSign::h2(channels, csrs, profile, validity)?
        }
    });
    let setup_s = setup.elapsed().as_secs_f64();

    let (warmup, result) = measure(scenario, &args.load, progress).await;
    Ok(Report {
        tool: TOOL,
        scenario: "grpc-sign",
        parameters: params(args, &[("stop", stop_json(&args.load))]),
        machine: Machine::current(),
        warmup,
        setup_s,
        measured: Measured::from_phase(&result, args.load.rate),
    })
}

/// `handshake`: a new connection per request; "requests" in the report are connections.
pub async fn handshake(args: &HandshakeArgs, progress: bool) -> Result<Report, String> {
    let setup = Instant::now();
    let tls = args.tls.client(&args.addr)?;
    let scenario = Arc::new(Handshake::new(&args.addr, tls).await?);
    let setup_s = setup.elapsed().as_secs_f64();
    let (warmup, result) = measure(scenario, &args.load, progress).await;
    let tls_on = args.addr.starts_with("https://");
    Ok(Report {
        tool: TOOL,
        scenario: "handshake",
        parameters: params(args, &[("stop", stop_json(&args.load)), ("tls", tls_on.into())]),
        machine: Machine::current(),
        warmup,
        setup_s,
        measured: Measured::from_phase(&result, args.load.rate),
    })
}

fn stop_json(load: &LoadArgs) -> serde_json::Value {
    match load.stop() {
        Stop::Count(n) => serde_json::json!({ "count": n }),
        Stop::Duration(d) => serde_json::json!({ "duration_s": d.as_secs_f64() }),
    }
}

pub async fn ocsp(args: &OcspArgs, progress: bool) -> Result<Report, String> {
    let setup = Instant::now();
    let target = Target::resolve(&args.url).await?;
    let issuer_from_file = match &args.issuer {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("--issuer {}: {e}", p.display()))?),
        None => None,
    };

    let (issuer_der, serials) = if let Some(addr) = &args.from_grpc {
        let channels = grpc::connect(addr, 2, 64).await?;
        let issuer_der = match issuer_from_file {
            Some(d) => d,
            None => grpc::issuing_ca(channels[0].clone()).await?,
        };
        let csrs = gen_csrs(args.certs, "ocsp.example.internal", progress).await?;
        let signer = Arc::new(GrpcSign::new(channels, csrs, String::new(), 0));
        let hex = grpc::issue_all(signer, concurrency(&args.load).min(64), progress).await?;
        let serials = hex.iter().map(|s| ocsp::parse_serial(s)).collect::<Result<Vec<_>, _>>()?;
        (issuer_der, serials)
    } else {
        let path =
            args.serials.as_ref().ok_or("give --serials FILE (with --issuer CERT) or --from-grpc ADDR")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("--serials {}: {e}", path.display()))?;
        let serials =
            ocsp::parse_serials_file(&text).map_err(|e| format!("--serials {}: {e}", path.display()))?;
        let issuer = issuer_from_file.ok_or("--serials needs --issuer CERT (the issuing CA, PEM or DER)")?;
        (issuer, serials)
    };
    let issuer = Issuer::from_cert(&issuer_der)?;
    let ders: Vec<Vec<u8>> = serials.iter().map(|s| ocsp::encode_request(&issuer, s, args.hash)).collect();
    let distinct = ders.len();
    let k = args.connections.map_or(concurrency(&args.load), |k| usize::try_from(k).unwrap_or(1));
    let scenario = Arc::new(Ocsp::new(target, args.method, args.get_encoding, ders, k)?);
    scenario.warm_connections().await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let (warmup, result) = measure(scenario, &args.load, progress).await;
    Ok(Report {
        tool: TOOL,
        scenario: "ocsp",
        parameters: params(
            args,
            &[
                ("stop", stop_json(&args.load)),
                ("connections_effective", k.into()),
                ("distinct_requests", distinct.into()),
            ],
        ),
        machine: Machine::current(),
        warmup,
        setup_s,
        measured: Measured::from_phase(&result, args.load.rate),
    })
}

/// The `acme` report: the common one plus the per-step figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AcmeReport {
    #[serde(flatten)]
    pub report: Report,
    pub acme: AcmeSummary,
}

impl AcmeReport {
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = self.report.render();
        let a = &self.acme;
        for step in acme::STEPS {
            if let Some(p) = a.steps_us.get(step) {
                let _ = writeln!(s, "  {step:<11} {}", percentile_line(p));
            }
        }
        if let Some(p) = &a.csr_per_order_us {
            let _ = writeln!(s, "  {:<11} {}", "csr (in finalize)", percentile_line(p));
        }
        let _ = writeln!(
            s,
            "polls/order   {:.2} until ready, {:.2} until valid (first after {:.0} ms, x{} up to {:.0} ms); \
             valid in the finalize answer: {}",
            a.polls_until_ready_per_order,
            a.polls_until_valid_per_order,
            a.poll.interval_ms,
            a.poll.backoff,
            a.poll.max_ms,
            a.finalize_valid_at_once
        );
        let _ = writeln!(
            s,
            "http-01       {} answered, {} unknown/404; authorizations reused: {}; accounts: {}",
            a.http01_served, a.http01_unknown, a.authz_reused, a.accounts
        );
        s
    }
}

/// Print a progress line on stderr every second until aborted: orders done, errors, rate.
fn acme_progress(scenario: Arc<acme::Acme>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let done = scenario.done.load(Ordering::Relaxed);
            let failed = scenario.failed.load(Ordering::Relaxed);
            let now = Instant::now();
            let dt = now.duration_since(last.0).as_secs_f64();
            let rate = if dt > 0.0 { (done - last.1) as f64 / dt } else { 0.0 };
            last = (now, done);
            eprintln!(
                "acme [{:>4.0} s] orders {done} done, {failed} errors, {rate:.0}/s",
                start.elapsed().as_secs_f64()
            );
        }
    })
}

pub async fn acme(args: &AcmeArgs, progress: bool) -> Result<AcmeReport, String> {
    acme::check_loopback_url(&args.directory)?;
    let identifier = acme::IdentifierTemplate::parse(&args.identifier)?;
    let setup = Instant::now();
    let responder =
        acme::ChallengeResponder::start(std::net::SocketAddr::from(([127, 0, 0, 1], args.http_port))).await?;

    // CSRs before the clock: P-256 keys and signatures on all cores.
    let (csrs, csr_gen) = match args.csr {
        CsrMode::PerOrder => (acme::Csrs::PerOrder, None),
        CsrMode::Upfront => {
            let count = args.csrs.or(args.load.count).unwrap_or(1000);
            let count = usize::try_from(count).map_err(|_| "too many CSRs".to_string())?;
            let t = Instant::now();
            let ident = identifier.clone();
            let csrs = tokio::task::spawn_blocking(move || -> Result<Vec<bytes::Bytes>, String> {
                let threads = available_cores().clamp(1, count.max(1));
                let parts: Vec<Result<Vec<(usize, bytes::Bytes)>, String>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads)
                        .map(|k| {
                            let ident = &ident;
                            scope.spawn(move || {
                                (k..count)
                                    .step_by(threads)
                                    .map(|i| {
                                        Ok((i, bytes::Bytes::from(acme::make_csr(&ident.san(i as u64))?)))
                                    })
                                    .collect()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|_| Err("CSR thread panicked".into())))
                        .collect()
                });
                let mut all = vec![bytes::Bytes::new(); count];
                for part in parts {
                    for (i, c) in part? {
                        all[i] = c;
                    }
                }
                Ok(all)
            })
            .await
            .map_err(|e| format!("CSR generation: {e}"))??;
            let secs = t.elapsed().as_secs_f64();
            (acme::Csrs::Upfront(csrs), Some((count, secs)))
        }
    };

    let accounts = usize::try_from(args.accounts.unwrap_or(args.load.concurrency)).unwrap_or(1);
    let (accounts, accounts_s) =
        acme::create_accounts(&args.directory, args.ca_bundle.as_ref(), args.stock_client, accounts).await?;
    let poll = acme::Poll {
        interval_ms: args.poll_interval.as_secs_f64() * 1000.0,
        backoff: args.poll_backoff,
        max_ms: args.poll_max.as_secs_f64() * 1000.0,
    };
    let scenario = Arc::new(acme::Acme::new(accounts, identifier, csrs, responder, poll));
    let setup_s = setup.elapsed().as_secs_f64();

    let ticker = progress.then(|| acme_progress(Arc::clone(&scenario)));
    let (warmup, result) = measure(Arc::clone(&scenario), &args.load, false).await;
    if let Some(t) = ticker {
        t.abort();
    }
    let measured = Measured::from_phase(&result, args.load.rate);
    let summary = scenario.summary(measured.ok, measured.requests);
    let mut extra = vec![("stop", stop_json(&args.load)), ("accounts_setup_s", accounts_s.into())];
    if let Some((count, secs)) = csr_gen {
        extra.push(("csrs_generated", count.into()));
        extra.push(("csr_upfront_us_each_all_cores", (secs * 1e6 / count.max(1) as f64).into()));
    }
    Ok(AcmeReport {
        report: Report {
            tool: TOOL,
            scenario: "acme",
            parameters: params(args, &extra),
            machine: Machine::current(),
            warmup,
            setup_s,
            measured,
        },
        acme: summary,
    })
}
