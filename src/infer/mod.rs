//! Inference: the [`Backend`] trait, the ONNX Runtime backend, and the pool of dedicated OS threads that
//! each own one backend (ONNX Runtime sessions need `&mut` to run).

mod batch_tensors;
pub mod ort_backend;
#[cfg(test)]
pub(crate) mod testing;
pub mod workers;

pub use batch_tensors::{Batch, BatchOutput};
pub use workers::{InferRequest, RuntimeInfo, WorkerPool};

use crate::error::Error;

/// Runs whole batches. Implementations live on one worker thread each.
pub trait Backend: Send {
    fn run(&mut self, batch: &Batch) -> Result<BatchOutput, Error>;
    /// Execution provider actually in use (e.g. "cpu", "cuda").
    fn execution_provider(&self) -> &str;
}
