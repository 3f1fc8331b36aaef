//! The common driver: C worker tasks (one per concurrency slot) pull request indices from a shared
//! counter and call [`Scenario::one`]. Closed loop by default; with a target rate the driver is open
//! loop: request `i` is scheduled at `start + i / rate` and its latency is measured from that
//! *scheduled* instant, so a slow server cannot hide its queueing delay (no coordinated omission).
//!
//! Every worker keeps its own HDR histogram and error table (no shared locks on the hot path);
//! they are merged when the phase ends.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Highest latency the histograms track (1 hour, in microseconds); longer values saturate.
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// One failed request, by kind (the key errors are counted under) and an optional sample message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Cow<'static, str>,
    pub detail: Option<String>,
}

impl Failure {
    pub fn new(kind: impl Into<Cow<'static, str>>) -> Self {
        Failure { kind: kind.into(), detail: None }
    }

    pub fn with_detail(kind: impl Into<Cow<'static, str>>, detail: impl std::fmt::Display) -> Self {
        Failure { kind: kind.into(), detail: Some(detail.to_string()) }
    }
}

/// A load scenario: everything it needs (connections, pre-encoded requests) is built before the
/// clock starts; `one` performs request number `i` and says whether it succeeded.
///
/// `slot` is the worker (concurrency slot) running the request, `0..concurrency`; scenarios with
/// connection affinity (HTTP/1.1, one request at a time per connection) use it, others use `i`.
pub trait Scenario: Send + Sync + 'static {
    fn one(&self, slot: usize, i: u64) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests have been started.
    Count(u64),
    /// No request is started (closed loop) or scheduled (open loop) after start + this.
    Duration(Duration),
}

/// Parameters of one phase (warm-up or measurement).
#[derive(Debug, Clone)]
pub struct PhaseConfig {
    pub concurrency: usize,
    pub stop: Stop,
    /// Open-loop target rate in requests per second; `None` is closed loop.
    pub rate: Option<f64>,
    /// Per-request deadline; a request that takes longer counts as a `timeout` error.
    pub timeout: Duration,
    /// Added to the request index passed to the scenario (so a measurement phase does not reuse
    /// the warm-up's first inputs).
    pub index_offset: u64,
    pub progress: bool,
    pub label: &'static str,
}

/// The open-loop schedule: request `i` is due at `start + i / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: Option<f64>,
}

impl Schedule {
    pub fn new(start: Instant, rate: Option<f64>) -> Self {
        Schedule { start, rate: rate.filter(|r| *r > 0.0 && r.is_finite()) }
    }

    /// The instant request `i` is due, or `None` in closed-loop mode (due as soon as a slot is free).
    pub fn due(&self, i: u64) -> Option<Instant> {
        self.rate.map(|r| self.start + Duration::from_secs_f64(i as f64 / r))
    }

    /// Whether request `i` belongs to the phase, given the stop condition; `now` is only
    /// consulted in closed-loop duration mode.
    pub fn admits(&self, i: u64, stop: Stop, now: Instant) -> bool {
        match stop {
            Stop::Count(n) => i < n,
            Stop::Duration(d) => match self.due(i) {
                Some(at) => at < self.start + d,
                None => now < self.start + d,
            },
        }
    }
}

/// Counts and one sample message for one error kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorStat {
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// Latencies of successful requests, in microseconds.
    pub latency: Histogram<u64>,
    /// Open loop only: how late each request started after its scheduled instant, in microseconds
    /// (large values mean the generator, not the server, was short of slots or CPU).
    pub schedule_lag: Option<Histogram<u64>>,
    pub ok: u64,
    pub errors: BTreeMap<String, ErrorStat>,
    /// From the phase start to the last completion.
    pub elapsed: Duration,
    pub interrupted: bool,
}

impl PhaseResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }
}

#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3).expect("static histogram bounds are valid")
}

/// Open-loop pacer: every millisecond, release one ticket per request that has come due
/// (request `i` is due at `start + i / rate`). When the phase's last request has been
/// released, or on ctrl-c, release one more ticket per worker so each of them wakes,
/// finds the phase over and exits.
async fn pace(
    schedule: Schedule,
    stop: Stop,
    tickets: Arc<Semaphore>,
    stop_flag: Arc<AtomicBool>,
    workers: usize,
) {
    let Some(rate) = schedule.rate else { return };
    let last = match stop {
        Stop::Count(n) => n,
        // Requests due before the end of the phase: i / rate < d.
        Stop::Duration(d) => (d.as_secs_f64() * rate).ceil() as u64,
    };
    let mut released = 0u64;
    let mut tick = tokio::time::interval(PACER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while released < last && !stop_flag.load(Ordering::Relaxed) {
        tick.tick().await;
        let elapsed = Instant::now().saturating_duration_since(schedule.start).as_secs_f64();
        // Request i is due once i <= elapsed * rate: that makes floor(elapsed * rate) + 1 due.
        let due = ((elapsed * rate).floor() as u64 + 1).min(last);
        if due > released {
            tickets.add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
            released = due;
        }
    }
    tickets.add_permits(workers);
}

/// How often the open-loop pacer releases due requests (tokio's timer resolution).
const PACER_TICK: Duration = Duration::from_millis(1);

impl Shared {
    fn hists(&self) -> std::sync::MutexGuard<'_, Hists> {
        // A worker that panicked while holding the lock left whole values behind
        // (a record is one call): keep measuring.
        self.hist.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    /// One pair of histograms for the whole phase, not one per worker: a histogram
    /// spanning 1 us..1 h at 3 significant digits is ~190 KiB, so per-worker copies cost
    /// 400 MB and ~100,000 page faults at 1,024 workers, which stalled the generator's own
    /// timers (schedule lag p99.9 50-70 ms) and inflated the open-loop tail it reports.
    /// An uncontended mutex per request is noise next to a gRPC round trip.
    hist: Mutex<Hists>,
}

struct Hists {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
}

struct WorkerOut {
    ok: u64,
    errors: BTreeMap<String, ErrorStat>,
    last_done: Instant,
}

/// Run one phase of `scenario` to completion (or until `stop_flag` is raised, e.g. by ctrl-c).
#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
pub async fn run_phase<S: Scenario>(
    scenario: Arc<S>,
    cfg: &PhaseConfig,
    stop_flag: Arc<AtomicBool>,
) -> PhaseResult {
    let concurrency = cfg.concurrency.max(1);
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        hist: Mutex::new(Hists { latency: new_histogram(), lag: new_histogram() }),
    });
    let start = Instant::now();
    let schedule = Schedule::new(start, cfg.rate);
    // Open loop: one pacer hands out a ticket per due request, once per millisecond,
    // instead of every worker sleeping on its own timer (a timer per request cost the
    // generator, which shares the machine with the server, 77 instead of 72 us of CPU per
    // request at 5,000/s). Latency is still measured from each request's own due instant,
    // so the tick's granularity shows up in the lag histogram, never hidden.
    let tickets = schedule.rate.map(|_| Arc::new(Semaphore::new(0)));
    let pacer = tickets.as_ref().map(|tickets| {
        let (tickets, stop_flag, stop) = (Arc::clone(tickets), Arc::clone(&stop_flag), cfg.stop);
        tokio::spawn(pace(schedule, stop, tickets, stop_flag, concurrency))
    });

    let mut workers = Vec::with_capacity(concurrency);
    for slot in 0..concurrency {
        let scenario = Arc::clone(&scenario);
        let shared = Arc::clone(&shared);
        let stop_flag = Arc::clone(&stop_flag);
        let tickets = tickets.clone();
        let (stop, timeout, offset) = (cfg.stop, cfg.timeout, cfg.index_offset);
        workers.push(tokio::spawn(async move {
            let mut out = WorkerOut { ok: 0, errors: BTreeMap::new(), last_done: start };
            loop {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(t) = &tickets {
                    match t.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if !schedule.admits(i, stop, Instant::now()) {
                    break;
                }
                // Tickets are only handed out for due requests; a request that waited for
                // a free worker starts late and its lag says so.
                let (t0, lag) = match schedule.due(i) {
                    Some(at) => (at, Some(micros(Instant::now().saturating_duration_since(at)))),
                    None => (Instant::now(), None),
                };
                let result = match tokio::time::timeout(timeout, scenario.one(slot, offset + i)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::new("timeout")),
                };
                let now = Instant::now();
                out.last_done = now;
                // One lock per request for both histograms.
                let latency = result.is_ok().then(|| micros(now.saturating_duration_since(t0)).max(1));
                if lag.is_some() || latency.is_some() {
                    let mut h = shared.hists();
                    if let Some(us) = lag {
                        h.lag.saturating_record(us);
                    }
                    if let Some(us) = latency {
                        h.latency.saturating_record(us);
                    }
                }
                match result {
                    Ok(()) => {
                        out.ok += 1;
                    }
                    Err(f) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        let e = out.errors.entry(f.kind.into_owned()).or_default();
                        e.count += 1;
                        if e.sample.is_none() {
                            e.sample = f.detail;
                        }
                    }
                }
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }

    let bar = cfg.progress.then(|| progress_bar(cfg));
    let ticker = bar.clone().map(|bar| {
        let shared = Arc::clone(&shared);
        let stop = cfg.stop;
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let done = shared.done.load(Ordering::Relaxed);
                let failed = shared.failed.load(Ordering::Relaxed);
                let dt = now.duration_since(last.0).as_secs_f64();
                let rate = if dt > 0.0 { (done - last.1) as f64 / dt } else { 0.0 };
                last = (now, done);
                match stop {
                    Stop::Count(_) => bar.set_position(done),
                    Stop::Duration(d) => {
                        bar.set_position(micros(now.duration_since(start).min(d)) / 1000);
                    }
                }
                bar.set_message(format!("done {done}  errors {failed}  {rate:.0}/s"));
            }
        })
    });

    let mut result = PhaseResult {
        latency: new_histogram(),
        schedule_lag: cfg.rate.map(|_| new_histogram()),
        ok: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        interrupted: false,
    };
    let mut last_done = start;
    for w in workers {
        let out = match w.await {
            Ok(out) => out,
            Err(e) => {
                let entry = result.errors.entry("worker-panic".into()).or_default();
                entry.count += 1;
                entry.sample.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        result.ok += out.ok;
        for (k, v) in out.errors {
            let e = result.errors.entry(k).or_default();
            e.count += v.count;
            if e.sample.is_none() {
                e.sample = v.sample;
            }
        }
        last_done = last_done.max(out.last_done);
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(p) = pacer {
        p.abort();
    }
    let hists = shared.hists();
    result.latency.add(&hists.latency).expect("histograms share bounds");
    if let Some(lag) = result.schedule_lag.as_mut() {
        lag.add(&hists.lag).expect("histograms share bounds");
    }
    drop(hists);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.elapsed = last_done.duration_since(start);
    result.interrupted = stop_flag.load(Ordering::Relaxed);
    result
}

#[allow(
    clippy::expect_used,
    reason = "each expect states an invariant of this load generator; a broken one should stop the run loudly"
)]
fn progress_bar(cfg: &PhaseConfig) -> ProgressBar {
    let (len, template) = match cfg.stop {
        Stop::Count(n) => (n, "{prefix} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg}"),
        Stop::Duration(d) => (
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            "{prefix} [{elapsed_precise}] {bar:30.cyan/blue} {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(ProgressStyle::with_template(template).expect("static template").progress_chars("=> "));
    bar.set_prefix(cfg.label);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_spaces_requests_by_one_over_rate() {
        let start = Instant::now();
        let s = Schedule::new(start, Some(1000.0));
        assert_eq!(s.due(0), Some(start));
        assert_eq!(s.due(1), Some(start + Duration::from_millis(1)));
        assert_eq!(s.due(1500), Some(start + Duration::from_millis(1500)));
        // 2 s at 1000/s admits exactly requests 0..2000, whatever the wall clock says.
        let stop = Stop::Duration(Duration::from_secs(2));
        let late = start + Duration::from_secs(3600);
        assert!(s.admits(0, stop, late));
        assert!(s.admits(1999, stop, late));
        assert!(!s.admits(2000, stop, start));
        // a count bound is a count bound in both modes
        assert!(s.admits(9, Stop::Count(10), late));
        assert!(!s.admits(10, Stop::Count(10), start));
    }

    #[test]
    fn fractional_rate_schedule() {
        let start = Instant::now();
        let s = Schedule::new(start, Some(2.5));
        assert_eq!(s.due(5), Some(start + Duration::from_secs(2)));
        assert_eq!(s.due(1), Some(start + Duration::from_millis(400)));
    }

    #[test]
    fn closed_loop_has_no_schedule_and_stops_on_the_clock() {
        let start = Instant::now();
        let s = Schedule::new(start, None);
        assert_eq!(s.due(42), None);
        let stop = Stop::Duration(Duration::from_secs(1));
        assert!(s.admits(1_000_000, stop, start + Duration::from_millis(999)));
        assert!(!s.admits(0, stop, start + Duration::from_secs(1)));
        // a zero or non-finite rate is closed loop, not a division by zero
        assert_eq!(Schedule::new(start, Some(0.0)).due(1), None);
        assert_eq!(Schedule::new(start, Some(f64::INFINITY)).due(1), None);
    }

    struct Every3rdFails;
    impl Scenario for Every3rdFails {
        async fn one(&self, _slot: usize, i: u64) -> Result<(), Failure> {
            tokio::time::sleep(Duration::from_micros(200)).await;
            if i % 3 == 2 { Err(Failure::with_detail("boom", format!("request {i}"))) } else { Ok(()) }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn driver_counts_every_request_once() {
        let cfg = PhaseConfig {
            concurrency: 8,
            stop: Stop::Count(300),
            rate: None,
            timeout: Duration::from_secs(5),
            index_offset: 0,
            progress: false,
            label: "test",
        };
        let r = run_phase(Arc::new(Every3rdFails), &cfg, Arc::new(AtomicBool::new(false))).await;
        assert_eq!(r.ok, 200);
        assert_eq!(r.error_count(), 100);
        assert_eq!(r.latency.len(), 200);
        assert!(r.latency.min() >= 200, "latency recorded in microseconds: {}", r.latency.min());
        assert!(r.errors["boom"].sample.as_deref().is_some_and(|s| s.starts_with("request ")));
        assert!(r.schedule_lag.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_rate_paces_the_phase() {
        let cfg = PhaseConfig {
            concurrency: 4,
            stop: Stop::Count(50),
            rate: Some(500.0),
            timeout: Duration::from_secs(5),
            index_offset: 0,
            progress: false,
            label: "test",
        };
        let r = run_phase(Arc::new(Every3rdFails), &cfg, Arc::new(AtomicBool::new(false))).await;
        assert_eq!(r.ok + r.error_count(), 50);
        // request 49 is due at 98 ms: the phase cannot finish before that
        assert!(r.elapsed >= Duration::from_millis(98), "{:?}", r.elapsed);
        assert_eq!(r.schedule_lag.map(|h| h.len()), Some(50));
    }
}
