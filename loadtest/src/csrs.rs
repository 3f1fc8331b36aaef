//! Pre-generated CSRs: P-256 keys and PKCS#10 requests made on all cores before any clock starts.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The name of CSR `i`.
pub fn csr_name(i: usize, domain: &str) -> String {
    format!("lt-{i}.{domain}")
}

/// One DER CSR for `name` with a fresh P-256 key.
pub fn make_csr(name: &str) -> Result<Vec<u8>, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| format!("name {name:?}: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).map_err(|e| format!("csr: {e}"))?;
    Ok(csr.der().to_vec())
}

/// `count` distinct DER CSRs, named `lt-<i>.<domain>`, generated on `threads` threads.
#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub fn generate(count: usize, domain: &str, threads: usize, progress: bool) -> Result<Vec<Bytes>, String> {
    let bar = if progress {
        let b = ProgressBar::with_draw_target(Some(count as u64), ProgressDrawTarget::stderr_with_hz(4));
        b.set_style(
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30.green/blue} {pos}/{len} CSRs")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix("csrs");
        b
    } else {
        ProgressBar::hidden()
    };
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, count.max(1));
    let mut parts: Vec<Result<Vec<(usize, Bytes)>, String>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (next, bar) = (&next, &bar);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(out);
                        }
                        out.push((i, Bytes::from(make_csr(&csr_name(i, domain))?)));
                        bar.inc(1);
                    }
                })
            })
            .collect();
        parts = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("CSR thread panicked".into())))
            .collect();
    });
    bar.finish_and_clear();
    let mut all = vec![Bytes::new(); count];
    for part in parts {
        for (i, csr) in part? {
            all[i] = csr;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn csrs_are_distinct_valid_p256_requests() {
        let csrs = generate(6, "example.internal", 3, false).unwrap();
        assert_eq!(csrs.len(), 6);
        for (i, der) in csrs.iter().enumerate() {
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap();
            req.verify_signature().unwrap();
            let cn = req.certification_request_info.subject.iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), format!("lt-{i}.example.internal"));
        }
        let mut unique = csrs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 6);
    }
}
