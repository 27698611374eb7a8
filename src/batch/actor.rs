//! The batcher actor loop.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::delivery::{JobMeta, Sink};
use super::{BatcherConfig, Queued, Shared};
use crate::error::Error;
use crate::infer::{Batch, InferRequest};
use crate::model::Manifest;

pub(super) async fn run(
    config: BatcherConfig,
    manifest: Arc<Manifest>,
    mut rx: mpsc::Receiver<Queued>,
    pool: mpsc::Sender<InferRequest>,
    sink: Sink,
    shared: Arc<Shared>,
) {
    let max_batch = config.max_batch_size.max(1);
    let mut closing = false;
    loop {
        let first = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                job = rx.recv() => job,
                () = shared.close.notified() => {
                    // Refuse new sends, keep what is queued.
                    closing = true;
                    rx.close();
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + config.max_batch_delay;
        while jobs.len() < max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        // Wait for room at the workers; whatever queued meanwhile joins this batch.
        let permit = match pool.reserve().await {
            Ok(p) => p,
            Err(_) => {
                for q in jobs {
                    sink.fail(
                        q.job.reply,
                        Error::Unavailable("inference workers have stopped".into()),
                        "shutdown",
                    );
                }
                continue;
            }
        };
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut metas = Vec::with_capacity(jobs.len());
        let mut inputs = Vec::with_capacity(jobs.len());
        for Queued { job, enqueued_at } in jobs {
            if now.duration_since(job.ready_at) > config.window_deadline {
                let _g = job.span.enter();
                tracing::debug!("window dropped: past its deadline before its batch ran");
                sink.fail(
                    job.reply,
                    Error::DeadlineExceeded(format!(
                        "the window waited longer than the {} ms deadline",
                        config.window_deadline.as_millis()
                    )),
                    "deadline",
                );
                continue;
            }
            metas.push(JobMeta {
                reply: job.reply,
                present: job.input.present.clone(),
                ready_at: job.ready_at,
                enqueued_at,
                span: job.span,
            });
            inputs.push(job.input);
        }
        if metas.is_empty() {
            continue;
        }
        let batch = Batch::stack(&manifest, &inputs);
        let sink = sink.clone();
        permit.send(InferRequest {
            batch,
            done: Box::new(move |result, timing| sink.deliver(metas, result, timing)),
        });
    }
    // Dropping `pool` here lets the workers exit once they have run what they hold.
    tracing::debug!("batcher drained");
}
