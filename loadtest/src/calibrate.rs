//! `calibrate`: the machine's raw signing limit, in-process, no network and no storage.
//!
//! Every figure is measured on 1 thread and then on N threads (std threads, N = available
//! parallelism by default) for the same number of seconds:
//! - raw crypto: ring ECDSA P-256 sign and verify; and the rcgen pipeline per certificate
//!   (parse the CSR and verify its P-256 signature, build a leaf, P-256-sign it);
//! - the signing core: `ca_core::issue::Authority::issue` (CSR checks, policy, profile,
//!   the production leaf with SKI/AKI/CDP/AIA, signature), exactly what the server runs per request.
//!
//! Then the partial-load penalty: the mean time of one `issue` call on one thread when
//! every call follows a busy-waited pause of 0, 100, 300 and 1,000 us (see [`paced`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ca_core::ca::IssuingCa;
use ca_core::issue::{Authority, IssueRequest, PublicUrls};
use ca_core::keys::KeyAlgorithm;
use ca_core::policy::{Policy, PolicyConfig};
use ca_core::profile::Profiles;
use ca_core::signer::SoftwareSigner;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::Serialize;

use crate::cli::CalibrateArgs;
use crate::report::Machine;

/// Operations per second of one operation on 1 and on N threads.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub group: &'static str,
    pub name: &'static str,
    pub one_thread_per_s: f64,
    pub all_threads_per_s: f64,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrateReport {
    pub tool: &'static str,
    pub scenario: &'static str,
    pub parameters: CalibrateArgs,
    pub machine: Machine,
    pub threads: usize,
    pub results: Vec<Row>,
    /// `ca_core::Authority::issue` on all threads: the ceiling for durable issuance on this machine.
    pub signing_core_all_threads_per_s: f64,
    /// `issue` on one thread with a pause before every call: what partial load costs here.
    pub paced: Vec<Paced>,
}

/// Mean time of one `Authority::issue` call when every call follows a pause.
#[derive(Debug, Clone, Serialize)]
pub struct Paced {
    pub pause_us: u64,
    pub issue_us: f64,
}

/// Pauses before each paced call: back to back, then gaps like those between requests on
/// one signing thread at partial load (at 5,000/s over two threads a thread waits ~250 us).
const PAUSES_US: [u64; 4] = [0, 100, 300, 1000];

/// Mean duration of `op` on this thread when each call follows a busy-waited `pause`.
///
/// Why: at partial load every server thread works in short bursts between pauses, and on
/// a shared VM the same work then costs more than back to back (it behaves like caches
/// cooling while the core waits). The pause spins rather than sleeps, so no wake-up or
/// idle state is involved; the clock runs around `op` alone.
pub fn paced(pause: Duration, secs: f64, op: &dyn Fn()) -> f64 {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut calls, mut busy) = (0u32, Duration::ZERO);
    while calls == 0 || Instant::now() < end {
        let t = Instant::now();
        while t.elapsed() < pause {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        op();
        busy += t.elapsed();
        calls += 1;
    }
    busy.as_secs_f64() * 1e6 / f64::from(calls)
}

/// Run `op` in a loop on `threads` threads for `secs`; total operations per second.
#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub fn measure(threads: usize, secs: f64, op: &(dyn Fn() + Sync)) -> f64 {
    let threads = threads.max(1);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (total, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let total: u64 = handles.into_iter().map(|h| h.join().expect("calibration thread panicked")).sum();
        (total, t0.elapsed())
    });
    total as f64 / elapsed.as_secs_f64()
}

struct Fixture {
    ring_key: EcdsaKeyPair,
    rng: SystemRandom,
    message: Vec<u8>,
    signature: Vec<u8>,
    csr: Vec<u8>,
    rcgen_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    authority: Authority,
}

#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
fn fixture() -> Result<Fixture, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|e| e.to_string())?;
    let ring_key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| e.to_string())?;
    // about the size of a leaf's TBSCertificate
    let message = vec![0x5a; 600];
    let signature = ring_key.sign(&rng, &message).map_err(|e| e.to_string())?.as_ref().to_vec();
    let csr = crate::csrs::make_csr("calibrate.example.internal")?;

    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Calibrate Issuing CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let rcgen_issuer = rcgen::Issuer::new(ca_params, ca_key);

    let now = time::OffsetDateTime::now_utc();
    let m = ca_core::ca::generate(KeyAlgorithm::EcdsaP256, "Calibrate", now).map_err(|e| e.to_string())?;
    let signer = Arc::new(
        SoftwareSigner::from_pkcs8(m.intermediate_key.as_ref().expect("software key").der())
            .map_err(|e| e.to_string())?,
    );
    let ica = Arc::new(IssuingCa::new(m.intermediate_der, m.root_der, signer).map_err(|e| e.to_string())?);
    let authority = Authority::new(
        ica,
        Policy::new(PolicyConfig::default()).map_err(|e| e.to_string())?,
        Profiles::default(),
        &PublicUrls::from_base("http://127.0.0.1:8080").map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let f = Fixture { ring_key, rng, message, signature, csr, rcgen_issuer, authority };
    // every operation must succeed once before it is timed
    ring_sign(&f);
    ring_verify(&f);
    rcgen_pipeline(&f).map_err(|e| format!("rcgen pipeline: {e}"))?;
    core_issue(&f).map_err(|e| format!("ca_core issue: {e}"))?;
    Ok(f)
}

#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
fn ring_sign(f: &Fixture) {
    let sig = f.ring_key.sign(&f.rng, &f.message).expect("P-256 sign");
    std::hint::black_box(sig);
}

#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
fn ring_verify(f: &Fixture) {
    let pk = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        f.ring_key.public_key().as_ref(),
    );
    pk.verify(&f.message, &f.signature).expect("P-256 verify");
}

/// Parse + verify the CSR, build a leaf from it, sign it with the issuer's P-256 key.
fn rcgen_pipeline(f: &Fixture) -> Result<usize, String> {
    let req = rcgen::CertificateSigningRequestParams::from_der(&f.csr.as_slice().into())
        .map_err(|e| e.to_string())?;
    let mut serial = [0u8; 16];
    f.rng.fill(&mut serial).map_err(|e| e.to_string())?;
    serial[0] &= 0x7f;
    let now = time::OffsetDateTime::now_utc();
    let mut params = req.params;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(7);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&req.public_key, &f.rcgen_issuer).map_err(|e| e.to_string())?;
    Ok(cert.der().len())
}

fn core_issue(f: &Fixture) -> Result<usize, String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ev = f
        .authority
        .issue(IssueRequest { csr: &f.csr, profile: "", validity_secs: 0, requester: "calibrate", now })
        .map_err(|e| e.to_string())?;
    Ok(std::hint::black_box(ev).serial.as_bytes().len())
}

#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub fn run(args: &CalibrateArgs, progress: bool) -> Result<CalibrateReport, String> {
    let threads = args.threads.unwrap_or_else(crate::report::available_cores).max(1);
    let f = fixture()?;
    type Op<'a> = Box<dyn Fn() + Sync + 'a>;
    let ops: Vec<(&'static str, &'static str, Op<'_>)> = vec![
        ("raw crypto", "ring ECDSA P-256 sign", Box::new(|| ring_sign(&f))),
        ("raw crypto", "ring ECDSA P-256 verify", Box::new(|| ring_verify(&f))),
        (
            "raw crypto",
            "CSR parse+verify, leaf build, P-256 sign (rcgen)",
            Box::new(|| {
                std::hint::black_box(rcgen_pipeline(&f).expect("checked in fixture"));
            }),
        ),
        (
            "signing core",
            "ca_core::Authority::issue (CSR check, policy, build, sign)",
            Box::new(|| {
                std::hint::black_box(core_issue(&f).expect("checked in fixture"));
            }),
        ),
    ];
    let bar = if progress {
        let b =
            ProgressBar::with_draw_target(Some(ops.len() as u64 * 2), ProgressDrawTarget::stderr_with_hz(4));
        b.set_style(
            ProgressStyle::with_template("calibrate [{elapsed_precise}] {bar:20} {pos}/{len} {msg}")
                .expect("static template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut results = Vec::new();
    for (group, name, op) in &ops {
        bar.set_message(format!("{name}, 1 thread"));
        let one = measure(1, args.seconds, op.as_ref());
        bar.inc(1);
        bar.set_message(format!("{name}, {threads} threads"));
        let all = measure(threads, args.seconds, op.as_ref());
        bar.inc(1);
        results.push(Row { group, name, one_thread_per_s: one, all_threads_per_s: all, threads });
    }
    let issue = || {
        std::hint::black_box(core_issue(&f).expect("checked in fixture"));
    };
    let mut paced_rows = Vec::new();
    for pause_us in PAUSES_US {
        bar.set_message(format!("issue after {pause_us} us pauses"));
        let issue_us = paced(Duration::from_micros(pause_us), args.seconds / 2.0, &issue);
        paced_rows.push(Paced { pause_us, issue_us });
    }
    bar.finish_and_clear();
    let core = results.last().map_or(0.0, |r| r.all_threads_per_s);
    Ok(CalibrateReport {
        tool: crate::TOOL,
        scenario: "calibrate",
        parameters: args.clone(),
        machine: Machine::current(),
        threads,
        results,
        signing_core_all_threads_per_s: core,
        paced: paced_rows,
    })
}

impl CalibrateReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "calibrate     {} s per figure; {} cores, {}/{}, {} build of {}",
            self.parameters.seconds,
            self.machine.cores,
            self.machine.os,
            self.machine.arch,
            self.machine.build,
            self.tool
        );
        let _ = writeln!(
            s,
            "{:<62} {:>12} {:>14} {:>8}",
            "operation",
            "1 thread/s",
            format!("{} threads/s", self.threads),
            "scaling"
        );
        let mut group = "";
        for r in &self.results {
            if r.group != group {
                group = r.group;
                let _ = writeln!(s, "{group}:");
            }
            let scaling =
                if r.one_thread_per_s > 0.0 { r.all_threads_per_s / r.one_thread_per_s } else { 0.0 };
            let _ = writeln!(
                s,
                "  {:<60} {:>12.0} {:>14.0} {:>7.2}x",
                r.name, r.one_thread_per_s, r.all_threads_per_s, scaling
            );
        }
        let _ = writeln!(
            s,
            "ceiling       {:.0} issuances/s on {} threads (signing core, no network, no storage)",
            self.signing_core_all_threads_per_s, self.threads
        );
        let _ = writeln!(
            s,
            "partial load  ca_core::Authority::issue on 1 thread, each call after a busy-waited pause:"
        );
        for p in &self.paced {
            let _ = writeln!(s, "  after {:>5} us pauses {:>8.1} us per call", p.pause_us, p.issue_us);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_calibrated_operation_works_and_is_counted() {
        let f = fixture().unwrap();
        assert!(rcgen_pipeline(&f).unwrap() > 300);
        assert!((16..=17).contains(&core_issue(&f).unwrap()));
        let rate = measure(2, 0.05, &|| ring_verify(&f));
        assert!(rate > 0.0);
    }

    #[test]
    fn paced_times_the_call_not_the_pause() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let op = || {
            calls.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
        };
        let us = paced(Duration::from_millis(5), 0.02, &op);
        let n = calls.load(Ordering::Relaxed);
        assert!(n >= 1, "at least one call");
        // Each call takes ~2 ms; the 5 ms pause before it is not counted.
        assert!((2000.0..5000.0).contains(&us), "{us} us per call over {n} calls");
    }

    #[test]
    fn rcgen_pipeline_output_verifies_against_its_issuer() {
        use x509_parser::prelude::FromDer;
        let f = fixture().unwrap();
        let req = rcgen::CertificateSigningRequestParams::from_der(&f.csr.as_slice().into()).unwrap();
        let cert = req.params.signed_by(&req.public_key, &f.rcgen_issuer).unwrap();
        let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(cert.der()).unwrap();
        let issuer_spki = rcgen::PublicKeyData::subject_public_key_info(f.rcgen_issuer.key());
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&issuer_spki).unwrap();
        leaf.verify_signature(Some(&spki)).unwrap();
    }
}
