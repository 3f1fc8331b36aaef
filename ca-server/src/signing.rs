//! The signing pool: CPU-heavy work (CSR verification, certificate signing) runs on
//! dedicated threads, one per core, fed by a bounded queue. A full queue is answered at
//! once with RESOURCE_EXHAUSTED instead of growing an unbounded backlog.
//!
//! A panicking job is a bug, but it must not shrink the pool: the thread catches it, counts
//! it (`ca_signing_panics_total`) and goes on; [`SigningPool::run`] and [`guarded`] turn it
//! into an `INTERNAL` answer for the request that hit it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Sender, TrySendError, bounded};

use crate::error::AppError;
use crate::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct SigningPool {
    tx: Sender<Job>,
    depth: usize,
    metrics: Arc<Metrics>,
}

impl SigningPool {
    pub fn new(workers: usize, depth: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = bounded::<Job>(depth.max(1));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let m = metrics.clone();
            // The pool lives as long as the process; threads end when the sender drops.
            let spawned = std::thread::Builder::new().name(format!("signer-{i}")).spawn(move || {
                for job in rx {
                    m.signing_queue.fetch_sub(1, Ordering::Relaxed);
                    // Jobs that answer a caller wrap their work in `guarded`; this catch is
                    // the backstop that keeps the thread for any other job.
                    if let Err(p) = catch_unwind(AssertUnwindSafe(job)) {
                        note_panic(&m, p.as_ref());
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a signing thread");
            }
        }
        SigningPool { tx, depth, metrics }
    }

    /// Queue `job` for a signing thread without waiting for it; refused at once when the
    /// queue is full. The job reports its own outcome (e.g. through a oneshot it captured).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), AppError> {
        self.metrics.signing_queue.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.signing_queue.fetch_sub(1, Ordering::Relaxed);
                Err(AppError::Busy(self.depth))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.signing_queue.fetch_sub(1, Ordering::Relaxed);
                Err(AppError::ShuttingDown)
            }
        }
    }

    /// Run `f` on a signing thread and await its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let metrics = self.metrics.clone();
        self.submit(move || {
            let _ = done.send(guarded(&metrics, f));
        })?;
        wait.await.map_err(|_| AppError::ShuttingDown)?
    }
}

/// Run `f`, turning a panic into [`AppError::Internal`] (counted and logged).
pub fn guarded<T>(metrics: &Metrics, f: impl FnOnce() -> T) -> Result<T, AppError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        note_panic(metrics, p.as_ref());
        AppError::Internal("a signing job failed".into())
    })
}

fn note_panic(metrics: &Metrics, payload: &(dyn std::any::Any + Send)) {
    metrics.signing_panics.fetch_add(1, Ordering::Relaxed);
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let thread = std::thread::current();
    tracing::error!(thread = thread.name().unwrap_or("?"), panic = what, "a signing job panicked");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One worker: if the panic killed it, the second job would never run.
    #[tokio::test]
    async fn a_panicking_job_answers_internal_and_the_thread_survives() {
        let metrics = Arc::new(Metrics::default());
        let pool = SigningPool::new(1, 4, metrics.clone());
        let r = pool.run(|| -> u32 { panic!("boom") }).await;
        assert!(matches!(r, Err(AppError::Internal(_))), "{r:?}");
        // A job that panics without `guarded` (a bare submit) is caught by the thread.
        pool.submit(|| panic!("bare")).unwrap();
        assert_eq!(pool.run(|| 42).await.unwrap(), 42);
        assert_eq!(metrics.signing_panics.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.signing_queue.load(Ordering::Relaxed), 0);
    }
}
