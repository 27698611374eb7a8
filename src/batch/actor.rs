//! The batcher actor loop.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::delivery::{JobMeta, Sink};
use super::{BatcherConfig, Queued, Shared};
use crate::error::Error;
use crate::infer::{Batch, InferRequest};
use crate::model::Manifest;

/// Fills `batch` from the queues; returns how many jobs moved and whether the batcher is closed and empty.
fn take(
    shared: &Shared,
    batch: &mut Vec<Queued>,
    one_shot_in_batch: &mut usize,
    max_batch: usize,
    share: usize,
) -> (usize, bool) {
    let mut queues = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
    let moved = queues.take(batch, one_shot_in_batch, max_batch, share);
    shared.publish_depth(&queues);
    (moved, queues.is_closing() && queues.is_empty())
}

pub(super) async fn run(
    config: BatcherConfig,
    manifest: Arc<Manifest>,
    pool: mpsc::Sender<InferRequest>,
    sink: Sink,
    shared: Arc<Shared>,
) {
    let max_batch = config.max_batch_size.max(1);
    let share = config.one_shot_share();
    loop {
        let mut jobs = Vec::with_capacity(max_batch);
        let mut one_shot = 0;
        // Wait for the first job (or for close with nothing left).
        loop {
            let (_, drained) = take(&shared, &mut jobs, &mut one_shot, max_batch, share);
            if !jobs.is_empty() {
                break;
            }
            if drained {
                // Dropping `pool` lets the workers exit once they have run what they hold.
                tracing::debug!("batcher drained");
                return;
            }
            shared.wake.notified().await;
        }
        let deadline = tokio::time::Instant::now() + config.max_batch_delay;
        while jobs.len() < max_batch {
            if tokio::time::timeout_at(deadline, shared.wake.notified())
                .await
                .is_err()
            {
                break;
            }
            take(&shared, &mut jobs, &mut one_shot, max_batch, share);
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
        take(&shared, &mut jobs, &mut one_shot, max_batch, share);
        let now = Instant::now();
        let mut metas = Vec::with_capacity(jobs.len());
        let mut inputs = Vec::with_capacity(jobs.len());
        for Queued { job, enqueued_at } in jobs {
            // The deadline bounds the time in the queue. `ready_at` may lie further back on purpose (a
            // stalled device's window counts its latency from its last chunk's arrival).
            if now.duration_since(enqueued_at) > config.window_deadline {
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
}
