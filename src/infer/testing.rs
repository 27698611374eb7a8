//! Deterministic in-process backend for unit tests of the pipeline (no ONNX Runtime).

use std::sync::{Arc, Mutex};

use super::{Backend, Batch, BatchOutput};
use crate::error::Error;

/// Echoes the first value of each window's first modality into its logits and embedding; records batch
/// sizes; a held `gate` blocks every run; a first value of -1 fails the batch.
pub(crate) struct EchoBackend {
    pub(crate) sizes: Arc<Mutex<Vec<usize>>>,
    pub(crate) gate: Option<Arc<Mutex<()>>>,
}

impl Backend for EchoBackend {
    fn run(&mut self, batch: &Batch) -> Result<BatchOutput, Error> {
        let _held = self.gate.as_ref().map(|g| g.lock().expect("gate"));
        self.sizes.lock().expect("sizes").push(batch.size);
        let per = batch.modalities[0].len() / batch.size.max(1);
        let firsts: Vec<f32> = (0..batch.size)
            .map(|i| batch.modalities[0][i * per])
            .collect();
        if firsts.contains(&-1.0) {
            return Err(Error::Internal("poisoned input".into()));
        }
        Ok(BatchOutput {
            size: batch.size,
            classes: 3,
            embedding_size: 4,
            logits: firsts.iter().flat_map(|&v| [v, 0.0, 0.0]).collect(),
            probabilities: firsts.iter().flat_map(|_| [0.2, 0.7, 0.1]).collect(),
            embedding: firsts.iter().flat_map(|&v| [v; 4]).collect(),
        })
    }
    fn execution_provider(&self) -> &str {
        "echo"
    }
}
