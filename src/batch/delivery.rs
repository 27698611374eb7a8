//! Fans a batch's outputs back out: to waiting callers, or into the prediction store and its feed.

use std::sync::Arc;
use std::time::Instant;

use super::{Answer, Reply};
use crate::error::Error;
use crate::infer::BatchOutput;
use crate::infer::workers::RunTiming;
use crate::metrics::Metrics;
use crate::model::Manifest;
use crate::store::{Prediction, PredictionStore, Timings};

/// Per-job bookkeeping carried alongside a batch.
#[derive(Debug)]
pub(super) struct JobMeta {
    pub(super) reply: Reply,
    pub(super) present: Vec<bool>,
    pub(super) ready_at: Instant,
    pub(super) enqueued_at: Instant,
    pub(super) span: tracing::Span,
}

#[derive(Clone, Debug)]
pub(super) struct Sink {
    pub(super) manifest: Arc<Manifest>,
    pub(super) store: PredictionStore,
    pub(super) metrics: Arc<Metrics>,
    pub(super) present_names: PresentNames,
}

/// One shared list of modality names per present set: a prediction's `present_modalities` points at it
/// instead of owning 15 strings (≈ 560 of a stored prediction's 964 bytes). Bounded: past `MAX_SETS`
/// distinct sets (2^15 exist for 15 modalities) a set gets its own list, as before.
#[derive(Clone, Debug, Default)]
pub(super) struct PresentNames {
    sets: Arc<dashmap::DashMap<Vec<bool>, Arc<[String]>>>,
}

impl PresentNames {
    const MAX_SETS: usize = 1024;

    pub(super) fn get(&self, manifest: &Manifest, present: &[bool]) -> Arc<[String]> {
        if let Some(names) = self.sets.get(present) {
            return Arc::clone(&names);
        }
        let names: Arc<[String]> = manifest
            .modalities
            .iter()
            .zip(present)
            .filter(|(_, p)| **p)
            .map(|(spec, _)| spec.name.clone())
            .collect();
        if self.sets.len() < Self::MAX_SETS {
            self.sets.insert(present.to_vec(), Arc::clone(&names));
        }
        names
    }
}

impl Sink {
    /// A job that will not run: tell the caller (its request counts the refusal in
    /// `predict_rejected`), or count the dropped streaming window.
    pub(super) fn fail(&self, reply: Reply, error: Error, shed_reason: &'static str) {
        match reply {
            Reply::Caller(tx) => {
                let _ = tx.send(Err(error));
            }
            Reply::Store(_) => self
                .metrics
                .windows_shed
                .with_label_values(&[shed_reason])
                .inc(),
        }
    }

    /// The class label of a prediction: the manifest's class name, or `unknown` for an index the model's
    /// class list does not name (keeps the label set bounded by the manifest).
    fn class_label(&self, index: usize) -> String {
        match self.manifest.class_name(index) {
            name if name.is_empty() => "unknown".to_string(),
            name => name,
        }
    }

    /// Runs on the worker thread after a batch.
    pub(super) fn deliver(
        &self,
        metas: Vec<JobMeta>,
        result: Result<BatchOutput, Error>,
        timing: RunTiming,
    ) {
        let m = &self.metrics;
        m.batch_size.observe(metas.len() as f64);
        m.inference_seconds.observe(timing.compute.as_secs_f64());
        let output = match result {
            Ok(o) => o,
            Err(e) => {
                m.inference_errors.inc();
                tracing::error!(error = %e, batch_size = metas.len(), "inference failed");
                for meta in metas {
                    self.fail(
                        meta.reply,
                        Error::Internal(format!("inference failed: {e}")),
                        "inference_error",
                    );
                }
                return;
            }
        };
        let now = Instant::now();
        for (i, meta) in metas.into_iter().enumerate() {
            let _g = meta.span.enter();
            let row = output.row(i);
            let timings = Timings {
                queue_seconds: timing
                    .started
                    .saturating_duration_since(meta.enqueued_at)
                    .as_secs_f64(),
                compute_seconds: timing.compute.as_secs_f64(),
                end_to_end_seconds: now.saturating_duration_since(meta.ready_at).as_secs_f64(),
                batch_size: output.size,
            };
            m.queue_wait_seconds.observe(timings.queue_seconds);
            m.predictions.inc();
            m.predictions_by_class
                .with_label_values(&[&self.class_label(row.class_index())])
                .inc();
            match meta.reply {
                Reply::Caller(tx) => {
                    m.end_to_end_latency_seconds
                        .with_label_values(&["predict"])
                        .observe(timings.end_to_end_seconds);
                    let _ = tx.send(Ok(Answer {
                        output: row,
                        timings,
                    }));
                }
                Reply::Store(target) => {
                    m.end_to_end_latency_seconds
                        .with_label_values(&["stream"])
                        .observe(timings.end_to_end_seconds);
                    let class_index = row.class_index();
                    let prediction = Prediction {
                        device_id: target.device_id,
                        window_end_unix_nanos: target.window_end_unix_nanos,
                        label: self.manifest.class_name(class_index),
                        class_index,
                        probabilities: row.probabilities,
                        embedding: row.embedding,
                        present_modalities: self.present_names.get(&self.manifest, &meta.present),
                        timings,
                        personalized: false,
                        general: None,
                    };
                    tracing::debug!(device_id = %prediction.device_id, label = %prediction.label, "prediction stored");
                    self.store.insert(prediction);
                }
            }
        }
    }
}
