//! The bounded window queue in front of inference and the batcher actor behind it. Windows from every
//! device (and one-window predict calls) become [`Job`]s; the actor groups them into batches of up to
//! `max_batch_size`, waiting at most `max_batch_delay` after the first, and hands each batch to the worker
//! pool. A full queue sheds new windows; windows older than the deadline are dropped. Both are counted.

mod actor;
mod delivery;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::Error;
use crate::infer::InferRequest;
use crate::metrics::Metrics;
use crate::model::{Manifest, ModelInput, ModelOutput};
use crate::store::{PredictionStore, Timings};

/// Where a streaming window's prediction goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTarget {
    pub device_id: String,
    pub window_end_unix_nanos: i64,
}

/// Who gets a job's result.
#[derive(Debug)]
pub enum Reply {
    /// A caller waiting on the answer (one-window predict).
    Caller(oneshot::Sender<Result<Answer, Error>>),
    /// A streaming window: the prediction goes to the store and its live feed.
    Store(StreamTarget),
}

/// Result for a waiting caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub output: ModelOutput,
    pub timings: Timings,
}

/// One window waiting for inference.
#[derive(Debug)]
pub struct Job {
    pub input: ModelInput,
    pub reply: Reply,
    /// When the window closed or the request arrived: end-to-end latency and the deadline count from here.
    pub ready_at: Instant,
    /// The submitter's span; batch-side logs for this job are recorded inside it.
    pub span: tracing::Span,
}

/// Batcher settings.
#[derive(Clone, Copy, Debug)]
pub struct BatcherConfig {
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub queue_capacity: usize,
    pub window_deadline: Duration,
}

#[derive(Debug)]
struct Shared {
    closing: AtomicBool,
    close: Notify,
    metrics: Arc<Metrics>,
}

/// Handle to the batcher actor (a `Clone` struct around the queue's sender).
#[derive(Clone, Debug)]
pub struct Batcher {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

/// A job and when it entered the queue.
#[derive(Debug)]
struct Queued {
    job: Job,
    enqueued_at: Instant,
}

impl Batcher {
    /// Spawns the actor on the current tokio runtime. It exits after [`Batcher::close`] once the queue is
    /// drained and every batch is handed to the pool; the returned handle completes then.
    pub fn start(
        config: BatcherConfig,
        manifest: Arc<Manifest>,
        pool: mpsc::Sender<InferRequest>,
        store: PredictionStore,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            close: Notify::new(),
            metrics: Arc::clone(&metrics),
        });
        let sink = delivery::Sink {
            manifest: Arc::clone(&manifest),
            store,
            metrics,
        };
        let task = tokio::spawn(actor::run(
            config,
            manifest,
            rx,
            pool,
            sink,
            Arc::clone(&shared),
        ));
        (Self { tx, shared }, task)
    }

    /// Queues a job without waiting. A full queue or a closing batcher refuses it (counted as shed).
    pub fn submit(&self, job: Job) -> Result<(), Error> {
        if self.shared.closing.load(Ordering::Acquire) {
            self.shared
                .metrics
                .windows_shed
                .with_label_values(&["shutdown"])
                .inc();
            return Err(Error::Unavailable(
                "shutting down: no new windows are accepted".into(),
            ));
        }
        let queued = Queued {
            job,
            enqueued_at: Instant::now(),
        };
        match self.tx.try_send(queued) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared
                    .metrics
                    .windows_shed
                    .with_label_values(&["queue_full"])
                    .inc();
                Err(Error::ResourceExhausted {
                    reason: "queue_full",
                    message: "inference queue is full; retry later".into(),
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared
                    .metrics
                    .windows_shed
                    .with_label_values(&["shutdown"])
                    .inc();
                Err(Error::Unavailable(
                    "shutting down: no new windows are accepted".into(),
                ))
            }
        }
    }

    /// Runs one window through the queue and waits for its outputs.
    pub async fn predict(&self, input: ModelInput, ready_at: Instant) -> Result<Answer, Error> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job {
            input,
            reply: Reply::Caller(reply),
            ready_at,
            span: tracing::Span::current(),
        })?;
        rx.await.unwrap_or_else(|_| {
            Err(Error::Internal(
                "the inference pipeline dropped the request".into(),
            ))
        })
    }

    /// Stops accepting jobs; what is queued still runs.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.close.notify_one();
    }

    /// Whether [`Batcher::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
