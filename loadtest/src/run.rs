//! Wiring: CLI options -> prepared scenario -> warm-up + measured phase -> report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::cli::{GrpcClient, GrpcSignArgs, LoadArgs, OcspArgs};
use crate::driver::{PhaseConfig, Scenario, Stop, run_phase};
use crate::grpc::{self, GrpcSign};
use crate::h2c::H2Channel;
use crate::ocsp::{self, Issuer, Ocsp, Target};
use crate::report::{Machine, Measured, Report, WarmupSummary, available_cores};
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
    let scenario = Arc::new(match args.client {
        GrpcClient::Tonic => GrpcSign::new(
            grpc::connect(&args.addr, k, concurrency(&args.load)).await?,
            csrs,
            profile,
            validity,
        ),
        GrpcClient::H2 => {
            let mut channels = Vec::with_capacity(k);
            for _ in 0..k.max(1) {
                channels.push(H2Channel::connect(&args.addr).await?);
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
