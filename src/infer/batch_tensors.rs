//! The batched tensors handed to a backend and the batched outputs it returns.

use crate::model::{Manifest, ModelInput, ModelOutput};

/// `size` windows stacked along a leading batch axis: per modality `[size, channels, window_samples]`
/// and `present` `[size, n_modalities]` (1.0 / 0.0), all row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub modalities: Vec<Vec<f32>>,
    pub present: Vec<f32>,
}

impl Batch {
    /// Stacks windows (each already shaped for `manifest`).
    pub fn stack<'a>(
        manifest: &Manifest,
        inputs: impl IntoIterator<Item = &'a ModelInput>,
    ) -> Self {
        let n_mod = manifest.modalities.len();
        let mut batch = Self {
            size: 0,
            modalities: vec![Vec::new(); n_mod],
            present: Vec::new(),
        };
        for input in inputs {
            for (dst, src) in batch.modalities.iter_mut().zip(&input.modalities) {
                dst.extend_from_slice(src);
            }
            batch
                .present
                .extend(input.present.iter().map(|&p| if p { 1.0 } else { 0.0 }));
            batch.size += 1;
        }
        batch
    }
}

/// Outputs of a batch, row-major: `logits`/`probabilities` `[size, classes]`, `embedding`
/// `[size, embedding_size]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutput {
    pub size: usize,
    pub classes: usize,
    pub embedding_size: usize,
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
    pub embedding: Vec<f32>,
}

impl BatchOutput {
    /// Outputs of window `i`.
    pub fn row(&self, i: usize) -> ModelOutput {
        let k = self.classes;
        let e = self.embedding_size;
        ModelOutput {
            logits: self.logits[i * k..(i + 1) * k].to_vec(),
            probabilities: self.probabilities[i * k..(i + 1) * k].to_vec(),
            embedding: self.embedding[i * e..(i + 1) * e].to_vec(),
        }
    }
}
