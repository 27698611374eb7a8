//! The inference worker pool: N dedicated OS threads, each owning one [`Backend`] (an ONNX Runtime
//! session needs `&mut self` to run), fed batches through a small bounded channel so that a busy pool
//! pushes back on the batcher (which then forms bigger batches).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::{Backend, Batch, BatchOutput};
use crate::error::Error;

/// When a batch started running and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct RunTiming {
    pub started: Instant,
    pub compute: Duration,
}

/// A batch and what to do with its result (called on the worker thread, exactly once).
pub struct InferRequest {
    pub batch: Batch,
    pub done: Box<dyn FnOnce(Result<BatchOutput, Error>, RunTiming) + Send>,
}

impl std::fmt::Debug for InferRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferRequest")
            .field("size", &self.batch.size)
            .finish_non_exhaustive()
    }
}

/// What the runtime turned out to be once every worker is warmed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RuntimeInfo {
    /// Execution provider in use ("cpu" or "cuda").
    pub execution_provider: String,
    /// Sessions (= worker threads).
    pub sessions: usize,
    /// What was asked for (`cpu`, `cuda`, `auto`): `auto` with `cpu` in use means CUDA was not usable.
    pub requested_execution_provider: Option<String>,
}

/// Creates the backend of worker `i` (on that worker's thread).
pub type BackendFactory = Arc<dyn Fn(usize) -> anyhow::Result<Box<dyn Backend>> + Send + Sync>;

/// Handle to the worker threads. Dropping every clone of the sender (see [`WorkerPool::close`]) lets the
/// workers finish what is queued and exit.
#[derive(Debug)]
pub struct WorkerPool {
    tx: Option<mpsc::Sender<InferRequest>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `workers` threads. Each creates its backend, runs every warm-up batch, reports, then serves.
    /// The returned future resolves once all have reported: the runtime info, or the first error.
    pub fn start(
        workers: usize,
        factory: BackendFactory,
        warmup: Vec<Batch>,
    ) -> (
        Self,
        impl std::future::Future<Output = anyhow::Result<RuntimeInfo>> + Send + 'static,
    ) {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<InferRequest>(workers);
        let rx = Arc::new(Mutex::new(rx));
        let (report_tx, mut report_rx) = mpsc::unbounded_channel::<anyhow::Result<String>>();
        let warmup = Arc::new(warmup);
        let threads = (0..workers)
            .map(|i| {
                let rx = Arc::clone(&rx);
                let factory = Arc::clone(&factory);
                let warmup = Arc::clone(&warmup);
                let report = report_tx.clone();
                std::thread::Builder::new()
                    .name(format!("crossl-infer-{i}"))
                    .spawn(move || worker_main(i, &*factory, &warmup, &report, &rx))
                    .expect("spawn inference worker thread")
            })
            .collect();
        drop(report_tx);
        let ready = async move {
            let mut provider = None;
            for _ in 0..workers {
                match report_rx.recv().await {
                    Some(Ok(ep)) => provider = Some(ep),
                    Some(Err(e)) => return Err(e),
                    None => anyhow::bail!("an inference worker exited during start-up"),
                }
            }
            Ok(RuntimeInfo {
                execution_provider: provider.unwrap_or_default(),
                sessions: workers,
                requested_execution_provider: None,
            })
        };
        (
            Self {
                tx: Some(tx),
                threads,
            },
            ready,
        )
    }

    /// Sender for batches (the batcher holds one).
    pub fn sender(&self) -> Option<mpsc::Sender<InferRequest>> {
        self.tx.clone()
    }

    /// Drops the pool's own sender; once the batcher drops its clone too, workers drain and exit.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// Waits (blocking) for every worker thread to finish.
    pub fn join(mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("an inference worker thread panicked");
            }
        }
    }
}

fn worker_main(
    index: usize,
    factory: &(dyn Fn(usize) -> anyhow::Result<Box<dyn Backend>> + Send + Sync),
    warmup: &[Batch],
    report: &mpsc::UnboundedSender<anyhow::Result<String>>,
    rx: &Mutex<mpsc::Receiver<InferRequest>>,
) {
    let started = Instant::now();
    let mut backend = match factory(index) {
        Ok(b) => b,
        Err(e) => {
            let _ = report.send(Err(e.context(format!("inference worker {index}"))));
            return;
        }
    };
    for batch in warmup {
        if let Err(e) = backend.run(batch) {
            let _ = report.send(Err(anyhow::anyhow!(
                "inference worker {index}: warm-up run failed: {e}"
            )));
            return;
        }
    }
    tracing::info!(
        worker = index,
        execution_provider = backend.execution_provider(),
        warmup_runs = warmup.len(),
        seconds = started.elapsed().as_secs_f64(),
        "inference worker ready"
    );
    let _ = report.send(Ok(backend.execution_provider().to_string()));
    loop {
        // One worker waits on the channel at a time; the others wait for the lock.
        let request = match rx.lock() {
            Ok(mut guard) => guard.blocking_recv(),
            Err(_) => None,
        };
        let Some(InferRequest { batch, done }) = request else {
            break;
        };
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| backend.run(&batch)))
            .unwrap_or_else(|_| Err(Error::Internal("the inference backend panicked".into())));
        let timing = RunTiming {
            started,
            compute: started.elapsed(),
        };
        done(result, timing);
    }
    tracing::debug!(worker = index, "inference worker stopped");
}
