//! The run summary: a serializable [`Report`] (the `--json` object) and its human rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::driver::{ErrorStat, PhaseResult};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles { count: 0, min: 0, mean: 0.0, p50: 0, p90: 0, p99: 0, p99_9: 0, max: 0 };
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The machine the generator ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub os: &'static str,
    pub arch: &'static str,
    pub build: &'static str,
}

impl Machine {
    pub fn current() -> Self {
        Machine {
            cores: available_cores(),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
        }
    }
}

pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The measured window of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Successful requests per second over the measured window.
    pub throughput_ok_per_s: f64,
    /// All completed requests (ok + errors) per second.
    pub completed_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// Successful requests only; open loop measures from the scheduled start.
    pub latency_us: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_lag_us: Option<Percentiles>,
    pub errors_by_kind: BTreeMap<String, ErrorStat>,
    pub interrupted: bool,
}

impl Measured {
    pub fn from_phase(r: &PhaseResult, target_rate: Option<f64>) -> Self {
        let errors = r.error_count();
        let secs = r.elapsed.as_secs_f64();
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Measured {
            requests: r.ok + errors,
            ok: r.ok,
            errors,
            elapsed_s: secs,
            throughput_ok_per_s: per_s(r.ok),
            completed_per_s: per_s(r.ok + errors),
            target_rate,
            latency_us: Percentiles::from_histogram(&r.latency),
            schedule_lag_us: r.schedule_lag.as_ref().map(Percentiles::from_histogram),
            errors_by_kind: r.errors.clone(),
            interrupted: r.interrupted,
        }
    }
}

/// The whole report of a load scenario (`--json` prints exactly this object).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub scenario: &'static str,
    pub parameters: serde_json::Value,
    pub machine: Machine,
    /// Seconds of unmeasured warm-up before the window, and what it did.
    pub warmup: Option<WarmupSummary>,
    /// Seconds spent preparing inputs (CSRs, certificates) before any clock started.
    pub setup_s: f64,
    pub measured: Measured,
}

#[derive(Debug, Clone, Serialize)]
pub struct WarmupSummary {
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// One line of percentiles in milliseconds.
pub fn percentile_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.3}, n={})",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p99_9),
        ms(p.max),
        p.mean / 1000.0,
        p.count
    )
}

impl Report {
    /// The human summary printed on stdout.
    pub fn render(&self) -> String {
        let m = &self.measured;
        let mut s = String::new();
        let params = match &self.parameters {
            serde_json::Value::Object(o) => o
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) if s.is_empty() => format!("{k}=\"\""),
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        let _ = writeln!(s, "scenario      {}  ({params})", self.scenario);
        let _ = writeln!(
            s,
            "machine       {} cores, {}/{}, {} build of {}",
            self.machine.cores, self.machine.os, self.machine.arch, self.machine.build, self.tool
        );
        if let Some(w) = &self.warmup {
            let _ = writeln!(
                s,
                "warm-up       {:.1} s, {} ok, {} errors (not counted)",
                w.seconds, w.ok, w.errors
            );
        }
        let _ = writeln!(
            s,
            "requests      {} ok, {} errors, in {:.3} s{}",
            m.ok,
            m.errors,
            m.elapsed_s,
            if m.interrupted { " (interrupted)" } else { "" }
        );
        let target = m.target_rate.map(|r| format!("  (target {r:.1}/s)")).unwrap_or_default();
        let _ = writeln!(s, "throughput    {:.1} ok/s{target}", m.throughput_ok_per_s);
        if m.latency_us.count == 0 {
            let _ = writeln!(s, "latency (ms)  no successful request");
        } else {
            let _ = writeln!(s, "latency (ms)  {}", percentile_line(&m.latency_us));
        }
        if let Some(lag) = &m.schedule_lag_us {
            let _ = writeln!(s, "start lag(ms) {}", percentile_line(lag));
        }
        if m.errors_by_kind.is_empty() {
            let _ = writeln!(s, "errors        none");
        } else {
            let _ = writeln!(s, "errors        by kind:");
            for (kind, e) in &m.errors_by_kind {
                let sample =
                    e.sample.as_deref().map(|x| format!("  e.g. {}", truncate(x, 160))).unwrap_or_default();
                let _ = writeln!(s, "  {:>8}  {kind}{sample}", e.count);
            }
        }
        s
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::new_histogram;
    use std::time::Duration;

    fn known() -> Histogram<u64> {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        h
    }

    #[test]
    fn percentiles_from_a_known_histogram() {
        let p = Percentiles::from_histogram(&known());
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 1);
        assert_eq!(p.p50, 500);
        assert_eq!(p.p90, 900);
        assert_eq!(p.p99, 990);
        assert_eq!(p.p99_9, 999);
        assert_eq!(p.max, 1000);
        assert!((p.mean - 500.5).abs() < 0.01, "{}", p.mean);
        assert_eq!(
            percentile_line(&p),
            "p50 0.500  p90 0.900  p99 0.990  p99.9 0.999  max 1.000  (mean 0.500, n=1000)"
        );
        assert_eq!(Percentiles::from_histogram(&new_histogram()).count, 0);
    }

    #[test]
    fn report_renders_and_serializes() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "grpc RESOURCE_EXHAUSTED".to_string(),
            ErrorStat { count: 7, sample: Some("queue full".into()) },
        );
        let phase = PhaseResult {
            latency: known(),
            schedule_lag: None,
            ok: 1000,
            errors,
            elapsed: Duration::from_millis(500),
            interrupted: false,
        };
        let r = Report {
            tool: "ca-loadtest 0.1.0",
            scenario: "grpc-sign",
            parameters: serde_json::json!({"concurrency": 32, "addr": "http://127.0.0.1:50051", "rate": null, "profile": ""}),
            machine: Machine { cores: 2, os: "linux", arch: "x86_64", build: "release" },
            warmup: None,
            setup_s: 0.1,
            measured: Measured::from_phase(&phase, None),
        };
        assert_eq!(r.measured.requests, 1007);
        assert!((r.measured.throughput_ok_per_s - 2000.0).abs() < 1e-9);
        let text = r.render();
        assert!(
            text.contains(
                "scenario      grpc-sign  (addr=http://127.0.0.1:50051 concurrency=32 profile=\"\")"
            ),
            "{text}"
        );
        assert!(text.contains("requests      1000 ok, 7 errors, in 0.500 s"), "{text}");
        assert!(text.contains("throughput    2000.0 ok/s"), "{text}");
        assert!(
            text.contains("latency (ms)  p50 0.500  p90 0.900  p99 0.990  p99.9 0.999  max 1.000"),
            "{text}"
        );
        assert!(text.contains("       7  grpc RESOURCE_EXHAUSTED  e.g. queue full"), "{text}");

        let failed = PhaseResult { latency: new_histogram(), ok: 0, ..phase.clone() };
        let all_failed = Report { measured: Measured::from_phase(&failed, None), ..r.clone() };
        assert!(all_failed.render().contains("latency (ms)  no successful request"));

        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["scenario"], "grpc-sign");
        assert_eq!(v["machine"]["cores"], 2);
        assert_eq!(v["measured"]["latency_us"]["p99_9"], 999);
        assert_eq!(v["measured"]["errors_by_kind"]["grpc RESOURCE_EXHAUSTED"]["count"], 7);
        assert_eq!(v["parameters"]["concurrency"], 32);
    }
}
