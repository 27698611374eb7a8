//! The admission queues in front of inference and the batcher actor behind them. Streaming windows and
//! one-shot requests (`/v1/predict`, `/v1/embed`, OIP infer, gRPC `Predict`) are two admission classes with
//! queues of their own, so a flood of one-shot rows can never take a streaming window's place: each class
//! sheds only its own jobs when its queue is full. The actor groups jobs into batches of up to
//! `max_batch_size`, waiting at most `max_batch_delay` after the first; streaming windows fill a batch
//! first, except for a reserved share that one-shot rows get whenever they are waiting (so neither class
//! starves the other). Windows older than the deadline are dropped. Every refusal is counted.
//!
//! On top of the queue, [`ClientLimiter`] caps the one-shot requests a single client (API key, or peer
//! address when auth is off) may have in flight.

mod actor;
mod admission;
mod delivery;
mod queues;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use admission::{ClientKey, ClientLimiter, ClientPermit};

use crate::error::Error;
use crate::infer::InferRequest;
use crate::metrics::Metrics;
use crate::model::{Manifest, ModelInput, ModelOutput};
use crate::store::{PredictionStore, Timings};
use queues::Queues;

/// Where a streaming window's prediction goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTarget {
    pub device_id: String,
    pub window_end_unix_nanos: i64,
}

/// Who gets a job's result.
#[derive(Debug)]
pub enum Reply {
    /// A caller waiting on the answer (one-shot request row).
    Caller(oneshot::Sender<Result<Answer, Error>>),
    /// A streaming window: the prediction goes to the store and its live feed.
    Store(StreamTarget),
}

/// The admission class of a job; each has its own queue and capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Windows closed by the streaming ingest path.
    Streaming,
    /// Rows of one-shot requests whose caller waits for the answer.
    OneShot,
}

impl Class {
    /// Metric label (`crossl_queue_depth{class}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Streaming => "streaming",
            Class::OneShot => "one_shot",
        }
    }
}

impl Reply {
    /// A waiting caller is one-shot; a window bound for the store is streaming.
    pub fn class(&self) -> Class {
        match self {
            Reply::Caller(_) => Class::OneShot,
            Reply::Store(_) => Class::Streaming,
        }
    }
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
    /// When the last data the window needed arrived (streaming) or the request arrived (one-shot):
    /// end-to-end latency counts from here. The deadline counts from entering the queue.
    pub ready_at: Instant,
    /// The submitter's span; batch-side logs for this job are recorded inside it.
    pub span: tracing::Span,
}

/// Batcher settings.
#[derive(Clone, Copy, Debug)]
pub struct BatcherConfig {
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    /// Capacity of the streaming window queue.
    pub queue_capacity: usize,
    /// Capacity of the one-shot queue, in rows (a request is admitted whole or refused whole).
    pub one_shot_queue_capacity: usize,
    pub window_deadline: Duration,
}

impl BatcherConfig {
    /// Batch slots reserved for one-shot rows when any are waiting: a quarter of the batch, at least one.
    pub fn one_shot_share(&self) -> usize {
        (self.max_batch_size.max(1) / 4).max(1)
    }
}

#[derive(Debug)]
struct Shared {
    queues: std::sync::Mutex<Queues>,
    /// Woken on every admission and on close.
    wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// Publishes both queues' depths; called with the queue lock held, after every admission and every
    /// take, so the gauge never lags the queues by more than one operation.
    fn publish_depth(&self, queues: &Queues) {
        for class in [Class::Streaming, Class::OneShot] {
            self.metrics
                .queue_depth
                .with_label_values(&[class.as_str()])
                .set(queues.depth(class) as i64);
        }
    }
}

/// Handle to the batcher actor; cloning is cheap.
#[derive(Clone, Debug)]
pub struct Batcher {
    shared: Arc<Shared>,
}

/// A job and when it entered its queue.
#[derive(Debug)]
struct Queued {
    job: Job,
    enqueued_at: Instant,
}

impl Batcher {
    /// Spawns the actor on the current tokio runtime. It exits after [`Batcher::close`] once both queues
    /// are drained and every batch is handed to the pool; the returned handle completes then.
    pub fn start(
        config: BatcherConfig,
        manifest: Arc<Manifest>,
        pool: tokio::sync::mpsc::Sender<InferRequest>,
        store: PredictionStore,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let shared = Arc::new(Shared {
            queues: std::sync::Mutex::new(Queues::new(
                config.queue_capacity.max(1),
                config.one_shot_queue_capacity.max(1),
            )),
            wake: tokio::sync::Notify::new(),
            metrics: Arc::clone(&metrics),
        });
        metrics.preregister_classes(&manifest.classes);
        let sink = delivery::Sink {
            manifest: Arc::clone(&manifest),
            store,
            metrics,
            present_names: delivery::PresentNames::default(),
        };
        let task = tokio::spawn(actor::run(
            config,
            manifest,
            pool,
            sink,
            Arc::clone(&shared),
        ));
        (Self { shared }, task)
    }

    /// Queues one job without waiting. A full queue of the job's class or a closing batcher refuses it
    /// (counted: streaming windows in `windows_shed`, one-shot requests in `requests_shed`).
    pub fn submit(&self, job: Job) -> Result<(), Error> {
        let class = job.reply.class();
        self.submit_all(class, vec![job])
    }

    /// Queues jobs of one class all together or not at all (a one-shot request's rows are admitted whole,
    /// so a refused request leaves nothing behind in the queue).
    fn submit_all(&self, class: Class, jobs: Vec<Job>) -> Result<(), Error> {
        let n = jobs.len();
        let admitted = {
            let mut queues = self.shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            let admitted = queues.admit(class, jobs, Instant::now());
            self.shared.publish_depth(&queues);
            admitted
        };
        match admitted {
            Ok(()) => {
                self.shared.wake.notify_one();
                Ok(())
            }
            Err(refusal) => {
                let reason = refusal.reason();
                match class {
                    Class::Streaming => self
                        .shared
                        .metrics
                        .windows_shed
                        .with_label_values(&[reason])
                        .inc_by(n as u64),
                    Class::OneShot => self
                        .shared
                        .metrics
                        .requests_shed
                        .with_label_values(&[reason])
                        .inc(),
                }
                Err(refusal.into_error(class, n))
            }
        }
    }

    /// Runs one window through the one-shot queue and waits for its outputs.
    pub async fn predict(&self, input: ModelInput, ready_at: Instant) -> Result<Answer, Error> {
        let mut answers = self.predict_rows(vec![input], ready_at).await?;
        answers
            .pop()
            .ok_or_else(|| Error::Internal("the inference pipeline lost a row".into()))
    }

    /// Runs the rows of one one-shot request (admitted together or refused together) and waits for every
    /// answer, in row order. The first failed row fails the request.
    pub async fn predict_rows(
        &self,
        inputs: Vec<ModelInput>,
        ready_at: Instant,
    ) -> Result<Vec<Answer>, Error> {
        let span = tracing::Span::current();
        let mut receivers = Vec::with_capacity(inputs.len());
        let jobs = inputs
            .into_iter()
            .map(|input| {
                let (reply, rx) = oneshot::channel();
                receivers.push(rx);
                Job {
                    input,
                    reply: Reply::Caller(reply),
                    ready_at,
                    span: span.clone(),
                }
            })
            .collect();
        self.submit_all(Class::OneShot, jobs)?;
        let mut answers = Vec::with_capacity(receivers.len());
        for rx in receivers {
            let answer = rx.await.unwrap_or_else(|_| {
                Err(Error::Internal(
                    "the inference pipeline dropped the request".into(),
                ))
            })?;
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Stops accepting jobs; what is queued still runs.
    pub fn close(&self) {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close();
        self.shared.wake.notify_one();
    }

    /// Whether [`Batcher::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_closing()
    }

    /// Jobs waiting in the queues (both classes).
    pub fn queued(&self) -> usize {
        self.shared
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
