//! The signing pool: CPU-heavy work (CSR verification, certificate signing) runs on
//! dedicated threads, one per core, fed by a bounded queue. A full queue is answered at
//! once with RESOURCE_EXHAUSTED instead of growing an unbounded backlog.

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
                    job();
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
        self.submit(move || {
            let _ = done.send(f());
        })?;
        wait.await.map_err(|_| AppError::ShuttingDown)
    }
}
